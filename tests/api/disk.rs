//! A full disk (issue 11, part 3), on a small tmpfs mounted for the test: below
//! `storage.min_free_mb` writes answer 507 and `/readyz` 503 while reads, downloads and stored
//! renders keep working; writes come back without a restart once space is freed; and the
//! appliance starts on a full disk (after clearing the temporary files that filled it).
//! Mounting needs root: these tests are ignored by a plain `cargo test` and run by `.ci/run`.

use crate::helpers::*;
use darkroom::storage::space::available_bytes;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1024 * 1024;

/// A tmpfs mounted on a temporary folder, unmounted when dropped (also when a test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mb: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs")
            .success();
        assert!(ok, "a tmpfs is mounted (needs root)");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the appliance's runtime may still hold files open while the test unwinds.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes a filler file until at most `leave` bytes are free (0: until the disk is full).
/// The headroom guards the embedded database, which lives on the data folder's disk: with the
/// records in PostgreSQL these tests have nothing to guard (uploads are still refused, by the
/// same watch, as the object storage tests show).
fn records_elsewhere() -> bool {
    let elsewhere = std::env::var("DARKROOM_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty());
    if elsewhere {
        eprintln!("skipped: the records are in PostgreSQL, not on the data folder's disk");
    }
    elsewhere
}

fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 256 * 1024];
    loop {
        let free = available_bytes(dir).unwrap();
        if free <= leave {
            break;
        }
        let n = (free - leave).min(chunk.len() as u64) as usize;
        if f.write_all(&chunk[..n]).is_err() {
            break; // ENOSPC: full
        }
    }
    let _ = f.sync_all();
    path
}

fn config_in(mount: &Path) -> darkroom::config::Config {
    let mut config = test_config(&mount.join("data"));
    config.storage.min_free_mb = 8;
    config.storage.cache_mb = 4;
    config
}

fn assert_507(a: &Answer, what: &str) {
    assert_eq!(a.status, 507, "{what}: {}", a.text());
    assert_eq!(a.json()["error"]["code"], 507, "{what}");
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
}

async fn put_stack(app: &TestApp, name: &str, width: u32) -> Answer {
    app.json(
        "PUT",
        &format!("/stacks/acme/{name}?overwrite=true"),
        ROOT_KEY,
        &serde_json::json!([{"name": "resize", "options": {"width": width}}]),
    )
    .await
}

#[actix_rt::test]
#[ignore = "needs root: mounts a tmpfs"]
async fn below_the_headroom_writes_answer_507_reads_work_and_writes_resume_when_space_is_back() {
    if records_elsewhere() {
        return;
    }
    let mount = Tmpfs::mount(40);
    let app = start(config_in(mount.path())).await;
    let photo = jpeg(400, 300, 7);
    let hash = app.acme_with_thumb(&photo, 50).await;
    let cached = app.render(&format!("/thumb/{hash}.jpg")).await;
    assert_eq!(cached.status, 200);
    let ready = app.get("/readyz", ROOT_KEY).await;
    assert_eq!(ready.status, 200, "{}", ready.text());

    // Above the headroom, but an upload that would cross it is refused while it streams.
    let filler = fill(mount.path(), 11 * MIB);
    let big: Vec<u8> = (0..6 * MIB).map(|i| (i * 7919 % 251) as u8).collect();
    let up = app
        .upload("acme", ROOT_KEY, &[("filedata", "big.bin", &big)], &[])
        .await;
    assert_507(&up, "an upload that would cross the headroom");
    assert!(
        std::fs::read_dir(app.data.join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "a refused upload leaves no temporary file"
    );
    std::fs::remove_file(filler).unwrap();

    let filler = fill(mount.path(), 2 * MIB);
    // Nothing asks for a fresh look here: the background watch finds the disk low by itself.
    let mut refused = false;
    for _ in 0..100 {
        if put_stack(&app, "probe", 70).await.status == 507 {
            refused = true;
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(refused, "the background watch saw the disk fill");
    let reserve = app.data.join("reserve");
    assert!(
        eventually(|| !reserve.exists()).await,
        "the reserve file is given back on a nearly full disk"
    );
    let ready = app.get("/readyz", ROOT_KEY).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("disk space"), "{}", ready.text());

    let up = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "b.jpg", &jpeg(64, 48, 2))],
            &[],
        )
        .await;
    assert_507(&up, "an upload");
    assert_507(&put_stack(&app, "thumb", 60).await, "a stack overwrite");
    assert_507(&put_stack(&app, "other", 60).await, "a new stack");
    assert_507(
        &app.render(&format!("/dynamic/resize-width-33/{hash}.jpg"))
            .await,
        "a cold render",
    );
    assert!(
        std::fs::read_dir(app.data.join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "a refused upload leaves no temporary file"
    );

    let image = app
        .get(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
        .await;
    assert_eq!(image.status, 200, "{}", image.text());
    let download = app
        .get(&format!("/sourceimages/acme/{hash}/download"), ROOT_KEY)
        .await;
    assert_eq!(download.status, 200);
    assert_eq!(download.body, photo);
    let again = app.render(&format!("/thumb/{hash}.jpg")).await;
    assert_eq!(again.status, 200, "a stored render is still served");
    assert_eq!(again.body, cached.body);
    assert_eq!(app.get("/sourceimages/acme", ROOT_KEY).await.status, 200);

    std::fs::remove_file(filler).unwrap();
    let ready = app.get("/readyz", ROOT_KEY).await;
    assert_eq!(ready.status, 200, "ready again: {}", ready.text());
    let up = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "b.jpg", &jpeg(64, 48, 2))],
            &[],
        )
        .await;
    assert_eq!(up.status, 200, "uploads work again: {}", up.text());
    assert!(put_stack(&app, "thumb", 60).await.status < 300);
    let cold = app
        .render(&format!("/dynamic/resize-width-33/{hash}.jpg"))
        .await;
    assert_eq!(cold.status, 200, "cold renders work again");
    assert!(
        eventually(|| reserve.exists()).await,
        "the reserve file is written again once there is room"
    );
    app.stop().await;
}

/// Whether `condition` holds within a few seconds (background work the test cannot await).
async fn eventually(condition: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if condition() {
            return true;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[actix_rt::test]
#[ignore = "needs root: mounts a tmpfs"]
async fn the_appliance_starts_on_a_disk_filled_by_leftover_uploads_and_serves_reads() {
    if records_elsewhere() {
        return;
    }
    let mount = Tmpfs::mount(40);
    let config = config_in(mount.path());
    let app = start(config.clone()).await;
    let photo = jpeg(400, 300, 4);
    let hash = app.acme_with_thumb(&photo, 50).await;
    assert_eq!(app.render(&format!("/thumb/{hash}.jpg")).await.status, 200);
    app.stop().await;

    // Uploads that never ended left their temporary files, and the rest of the disk is full.
    let tmp = config.storage.path.join("tmp");
    std::fs::write(tmp.join("up-leftover"), vec![1u8; 2 * MIB as usize]).unwrap();
    let filler = fill(mount.path(), 0);
    assert!(available_bytes(mount.path()).unwrap() < MIB);

    let app = start(config.clone()).await;
    assert!(
        std::fs::read_dir(&tmp).unwrap().next().is_none(),
        "start-up cleared the temporary files"
    );
    let ready = app.get("/readyz", ROOT_KEY).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    let image = app
        .get(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
        .await;
    assert_eq!(image.status, 200, "{}", image.text());
    assert_eq!(app.render(&format!("/thumb/{hash}.jpg")).await.status, 200);
    let up = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "c.jpg", &jpeg(64, 48, 3))],
            &[],
        )
        .await;
    assert_507(&up, "an upload on a full disk");

    std::fs::remove_file(filler).unwrap();
    assert_eq!(app.get("/readyz", ROOT_KEY).await.status, 200);
    let up = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "c.jpg", &jpeg(64, 48, 3))],
            &[],
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.text());
    app.stop().await;
}

#[actix_rt::test]
#[ignore = "needs root: mounts a tmpfs"]
async fn the_appliance_starts_on_a_disk_with_no_byte_free_and_serves_reads() {
    if records_elsewhere() {
        return;
    }
    let mount = Tmpfs::mount(40);
    let config = config_in(mount.path());
    let app = start(config.clone()).await;
    let photo = jpeg(400, 300, 6);
    let hash = app.acme_with_thumb(&photo, 50).await;
    let cached = app.render(&format!("/thumb/{hash}.jpg")).await;
    assert_eq!(cached.status, 200);
    app.stop().await;

    let filler = fill(mount.path(), 0);
    assert_eq!(available_bytes(mount.path()).unwrap(), 0);
    let app = start(config.clone()).await;
    assert_eq!(app.get("/readyz", ROOT_KEY).await.status, 503);
    let download = app
        .get(&format!("/sourceimages/acme/{hash}/download"), ROOT_KEY)
        .await;
    assert_eq!(download.body, photo);
    let again = app.render(&format!("/thumb/{hash}.jpg")).await;
    assert_eq!(again.body, cached.body);
    assert_507(&put_stack(&app, "thumb", 80).await, "a stack write");

    std::fs::remove_file(filler).unwrap();
    assert_eq!(app.get("/readyz", ROOT_KEY).await.status, 200);
    assert!(put_stack(&app, "thumb", 80).await.status < 300);
    app.stop().await;
}
