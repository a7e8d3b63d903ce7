//! Backups: `GET /admin/export` and `darkroom admin export` while the appliance runs,
//! `darkroom admin import` into an empty data folder, and a restored appliance that answers
//! exactly as the original did.

use crate::helpers::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// Writes an `appliance.toml` for the command line: this data folder, this API address.
fn config_file(dir: &Path, data: &Path, api_bind: &str) -> PathBuf {
    let path = dir.join("appliance.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\napi_bind = \"{api_bind}\"\n\n[storage]\npath = \"{}\"\n{}\n[auth]\nroot_key = \"{ROOT_KEY}\"\n",
            data.display(),
            storage_toml(data),
        ),
    )
    .unwrap();
    path
}

/// Runs `darkroom --config FILE …` off the test's thread (the appliance under test may have
/// to answer it). sled lets go of a folder's lock shortly after an appliance on it stopped:
/// a command that meets the lock is tried again for a few seconds.
async fn darkroom(config: &Path, args: &[&str]) -> Output {
    for _ in 0..50 {
        let config = config.to_path_buf();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let output = actix_rt::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_darkroom"))
                .arg("--config")
                .arg(&config)
                .args(&args)
                .env("DARKROOM__LOG__LEVEL", "warn")
                .output()
                .expect("darkroom runs")
        })
        .await
        .unwrap();
        if !String::from_utf8_lossy(&output.stderr).contains("could not acquire lock") {
            return output;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the data folder stayed locked")
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn api_bind(app: &TestApp) -> String {
    app.api.trim_start_matches("http://").to_string()
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { files_under(&p) } else { 1 })
            .sum()
    })
}

/// Everything a client reads through the API about the appliance's data, to compare an
/// original with its restored copy.
async fn views(app: &TestApp, user_key: &str, images: &[(String, String)]) -> Vec<(String, Value)> {
    let mut paths: Vec<String> = [
        "/organizations/acme",
        "/organizations/beta",
        "/organizations/acme/memberships",
        "/organizations/beta/memberships",
        "/sourceimages/acme",
        "/sourceimages/acme?deleted=true",
        "/sourceimages/beta",
        "/stacks/acme",
        "/stats/acme",
        "/stats/beta",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    for (org, hash) in images {
        paths.push(format!("/sourceimages/{org}/{hash}?deleted=true"));
        paths.push(format!("/sourceimages/{org}/{hash}/meta/user"));
    }
    let mut out = Vec::new();
    for p in paths {
        let a = app.get(&p, ROOT_KEY).await;
        out.push((format!("{p} {}", a.status), a.json()));
    }
    for p in ["/user", "/user/apikeys", "/user/memberships"] {
        let a = app.get(p, user_key).await;
        out.push((format!("{p} {}", a.status), a.json()));
    }
    out
}

#[actix_rt::test]
async fn a_backup_of_a_running_appliance_restores_into_an_empty_folder_with_identical_answers() {
    // Arrange: two organizations, members, images (user and dynamic metadata, a deleted one,
    // a copy sharing its blob), an overwritten stack and a few renders.
    let app = spawn_app().await;
    app.create_org("acme").await;
    app.create_org("beta").await;
    let member = app
        .json(
            "POST",
            "/organizations/acme/memberships",
            ROOT_KEY,
            &json!({"roles": ["admin"], "comment": "ops"}),
        )
        .await
        .json();
    let user_key = member["api_key"].as_str().unwrap().to_string();
    let user_id = member["user_id"].as_str().unwrap().to_string();
    let put = app
        .json(
            "PUT",
            &format!("/organizations/beta/memberships/{user_id}"),
            ROOT_KEY,
            &json!({"roles": ["read"]}),
        )
        .await;
    assert!(put.status == 200 || put.status == 201, "{}", put.text());
    let beta_key = app.create_key("beta", &["write"]).await;

    let a = app
        .upload_one("acme", &user_key, "a.jpg", &jpeg(40, 30, 1))
        .await;
    let with_meta = app
        .upload(
            "acme",
            &user_key,
            &[
                ("filedata", "b.png", &png(20, 20)),
                ("f", "c.jpg", &jpeg(30, 30, 2)),
            ],
            &[
                ("meta_user[0]", r#"{"title":"second","int:rank":3}"#),
                ("meta_dynamic[1][subject_area]", r#"{"x":1,"y":2}"#),
            ],
        )
        .await;
    assert_eq!(with_meta.status, 200, "{}", with_meta.text());
    let d = app
        .upload_one("acme", &user_key, "d.jpg", &jpeg(20, 20, 3))
        .await;
    let hash = |v: &Value| v["hash"].as_str().unwrap().to_string();
    let (a, b, c, d) = (
        hash(&a),
        hash(&with_meta.json()["items"][0]),
        hash(&with_meta.json()["items"][1]),
        hash(&d),
    );
    assert_eq!(
        app.delete(&format!("/sourceimages/acme/{d}"), &user_key)
            .await
            .status,
        204
    );
    let copied = app
        .send(
            "COPY",
            &format!("/sourceimages/acme/{a}"),
            Some(ROOT_KEY),
            &[("Destination", "beta")],
            None,
        )
        .await;
    assert_eq!(copied.status, 201, "{}", copied.text());

    let thumb = |w: u32| json!([{"name": "resize", "options": {"width": w}}]);
    assert_eq!(
        app.json("PUT", "/stacks/acme/thumb", ROOT_KEY, &thumb(20))
            .await
            .status,
        201
    );
    assert_eq!(app.render(&format!("/thumb/{a}.jpg")).await.status, 200);
    let over = app
        .json(
            "PUT",
            "/stacks/acme/thumb?overwrite=true",
            ROOT_KEY,
            &thumb(25),
        )
        .await;
    assert_eq!(over.status, 200, "{}", over.text());
    assert_eq!(
        app.json("PUT", "/stacks/acme/small", ROOT_KEY, &thumb(10))
            .await
            .status,
        201
    );
    let render_urls = vec![
        format!("{}/acme/thumb/{a}.jpg", app.render),
        format!("{}/acme/thumb/{b}.png", app.render),
        format!("{}/acme/small/{c}.webp", app.render),
        format!("{}/acme/dynamic/resize-width-15/{c}.png", app.render),
        format!("{}/beta/dynamic/resize-width-12/{a}.jpg", app.render),
    ];
    let mut renders = Vec::new();
    for url in &render_urls {
        let r = app.send("GET", url, None, &[], None).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        renders.push((r.header("etag").unwrap(), r.body));
    }
    let images = vec![
        ("acme".to_string(), a.clone()),
        ("acme".to_string(), b.clone()),
        ("acme".to_string(), c.clone()),
        ("acme".to_string(), d.clone()),
        ("beta".to_string(), a.clone()),
    ];
    let mut downloads = Vec::new();
    for (org, hash) in images.iter().filter(|(_, h)| *h != d) {
        let r = app
            .get(&format!("/sourceimages/{org}/{hash}/download"), ROOT_KEY)
            .await;
        assert_eq!(r.status, 200);
        downloads.push(r.body);
    }
    let before = views(&app, &user_key, &images).await;

    // Act: export through the API and through the command line, while the appliance runs.
    let work = tempfile::tempdir().unwrap();
    for (key, status) in [(Some(user_key.as_str()), 403), (None, 403)] {
        let refused = app.send("GET", "/admin/export", key, &[], None).await;
        assert_eq!(refused.status, status);
        assert!(refused.json()["error"]["message"].is_string());
    }
    let exported = app.get("/admin/export?renders=true", ROOT_KEY).await;
    assert_eq!(exported.status, 200, "{}", exported.text());
    assert_eq!(
        exported.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert!(exported.body.starts_with(b"DRKRMBK\0"));
    let http_backup = work.path().join("http.backup");
    std::fs::write(&http_backup, &exported.body).unwrap();

    let live_config = config_file(work.path(), &app.data, &api_bind(&app));
    let cli_backup = work.path().join("cli.backup");
    let cli = darkroom(
        &live_config,
        &["admin", "export", "--to", cli_backup.to_str().unwrap()],
    )
    .await;
    assert!(cli.status.success(), "{}", out(&cli));
    assert!(
        out(&cli).contains("from the running service"),
        "{}",
        out(&cli)
    );
    assert!(
        out(&cli).contains("5 images") && out(&cli).contains("0 renders"),
        "{}",
        out(&cli)
    );
    assert!(!work.path().join("cli.backup.tmp").exists());
    let _original = app.stop().await;

    // Import each backup into an empty folder.
    let restored_dir = tempfile::tempdir().unwrap();
    let import_config = config_file(work.path(), restored_dir.path(), "127.0.0.1:0");
    let imported = darkroom(
        &import_config,
        &["admin", "import", "--from", http_backup.to_str().unwrap()],
    )
    .await;
    assert!(imported.status.success(), "{}", out(&imported));
    let said = out(&imported);
    assert!(
        said.contains("2 organizations") && said.contains("5 images"),
        "{said}"
    );
    assert!(
        said.contains("4 blobs") && said.contains("5 renders"),
        "{said}"
    );
    assert!(said.contains("verify: ok"), "{said}");

    let without_renders = tempfile::tempdir().unwrap();
    let config = config_file(work.path(), without_renders.path(), "127.0.0.1:0");
    let imported = darkroom(
        &config,
        &["admin", "import", "--from", cli_backup.to_str().unwrap()],
    )
    .await;
    assert!(imported.status.success(), "{}", out(&imported));

    // Assert: the restored appliance answers as the original did.
    let restored = start(test_config(restored_dir.path())).await;
    let after = views(&restored, &user_key, &images).await;
    for (x, y) in before.iter().zip(&after) {
        assert_eq!(x, y);
    }
    assert_eq!(before.len(), after.len());
    for ((org, hash), original) in images.iter().filter(|(_, h)| *h != d).zip(&downloads) {
        let r = restored
            .get(&format!("/sourceimages/{org}/{hash}/download"), ROOT_KEY)
            .await;
        assert_eq!(r.body, *original, "{org}/{hash}");
    }
    for (url, (etag, body)) in render_urls.iter().zip(&renders) {
        let url = url.replace(&app_render(&render_urls[0]), &restored.render);
        let r = restored.send("GET", &url, None, &[], None).await;
        assert_eq!(r.status, 200, "{url}");
        assert_eq!(
            r.header("x-darkroom-render").as_deref(),
            Some("hit"),
            "{url}"
        );
        assert_eq!(r.header("etag").as_ref(), Some(etag), "{url}");
        assert_eq!(&r.body, body, "{url}");
    }
    assert_eq!(
        restored.get("/organizations/beta", &beta_key).await.status,
        200
    );
    assert_eq!(restored.get("/user", "not-a-key").await.status, 403);
}

/// The render origin (`http://127.0.0.1:PORT`) of a render URL.
fn app_render(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    format!("http://{}", rest.split('/').next().unwrap())
}

#[actix_rt::test]
async fn import_refuses_a_folder_with_data_and_a_damaged_backup_and_leaves_the_folder_empty() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let photo = jpeg(64, 48, 9);
    app.upload_one("acme", ROOT_KEY, "a.jpg", &photo).await;
    app.upload_one("acme", ROOT_KEY, "b.png", &png(16, 16))
        .await;
    let backup = app.get("/admin/export", ROOT_KEY).await.body;
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good.backup");
    std::fs::write(&good, &backup).unwrap();
    let truncated = work.path().join("truncated.backup");
    std::fs::write(&truncated, &backup[..backup.len() * 2 / 3]).unwrap();
    let damaged = work.path().join("damaged.backup");
    let at = backup
        .windows(32)
        .position(|w| w == &photo[photo.len() / 2..photo.len() / 2 + 32])
        .unwrap();
    let mut bad = backup.clone();
    bad[at + 7] ^= 0x01;
    std::fs::write(&damaged, &bad).unwrap();
    let data = app.data.clone();
    let stopped_bind = api_bind(&app);
    let _kept = app.stop().await;

    // With the service stopped, nothing answers at its address: the export reads the folder.
    let config = config_file(work.path(), &data, &stopped_bind);
    let offline = work.path().join("offline.backup");
    let exported = darkroom(
        &config,
        &["admin", "export", "--to", offline.to_str().unwrap()],
    )
    .await;
    assert!(exported.status.success(), "{}", out(&exported));
    assert!(
        out(&exported).contains("from the data folder"),
        "{}",
        out(&exported)
    );

    // A folder with data is refused, naming it.
    let config = config_file(work.path(), &data, "127.0.0.1:0");
    let refused = darkroom(
        &config,
        &["admin", "import", "--from", good.to_str().unwrap()],
    )
    .await;
    assert!(!refused.status.success());
    let said = out(&refused);
    assert!(
        said.contains("not empty") && said.contains(&data.display().to_string()),
        "{said}"
    );

    // Damaged files are refused and leave nothing behind.
    let empty = tempfile::tempdir().unwrap();
    let config = config_file(work.path(), empty.path(), "127.0.0.1:0");
    for (file, reason) in [(&truncated, "truncated"), (&damaged, "damaged")] {
        let refused = darkroom(
            &config,
            &["admin", "import", "--from", file.to_str().unwrap()],
        )
        .await;
        assert!(!refused.status.success());
        assert!(out(&refused).contains(reason), "{}", out(&refused));
        assert_eq!(files_under(&empty.path().join("blobs")), 0);
        assert_eq!(files_under(&empty.path().join("tmp")), 0);
        let verify = darkroom(&config, &["admin", "verify"]).await;
        assert!(verify.status.success(), "{}", out(&verify));
    }

    // The folder is still empty and usable: the backup read offline goes in.
    let imported = darkroom(
        &config,
        &["admin", "import", "--from", offline.to_str().unwrap()],
    )
    .await;
    assert!(imported.status.success(), "{}", out(&imported));
    let restored = start(test_config(empty.path())).await;
    let list = restored.get("/sourceimages/acme", ROOT_KEY).await.json();
    assert_eq!(list["total"], 2);
}

/// Timing evidence, not a check: `cargo test --test api backup_of_a_thousand -- --ignored
/// --nocapture` prints export and import times and the file size for 1,000 small images.
#[actix_rt::test]
#[ignore]
async fn backup_of_a_thousand_images_timings() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let started = Instant::now();
    let mut total = 0u64;
    let mut hashes = Vec::new();
    for batch in 0..20u32 {
        let files: Vec<(String, Vec<u8>)> = (0..50u32)
            .map(|i| {
                let n = batch * 50 + i;
                let img = image::RgbImage::from_fn(64, 64, |x, y| {
                    image::Rgb([
                        (x * 4) as u8,
                        (y * 4) as u8,
                        (n % 251) as u8 ^ (n / 251) as u8,
                    ])
                });
                let mut bytes = encode(
                    image::DynamicImage::ImageRgb8(img),
                    image::ImageFormat::Jpeg,
                );
                // Distinct bytes for every image, whatever the encoder does with the pixels.
                bytes.extend_from_slice(&n.to_be_bytes());
                (format!("{n}.jpg"), bytes)
            })
            .collect();
        total += files.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        let parts: Vec<(&str, &str, &[u8])> = files
            .iter()
            .map(|(name, bytes)| ("filedata", name.as_str(), bytes.as_slice()))
            .collect();
        let a = app.upload("acme", ROOT_KEY, &parts, &[]).await;
        assert_eq!(a.status, 200, "{}", a.text());
        for item in a.json()["items"].as_array().unwrap() {
            hashes.push(item["hash"].as_str().unwrap().to_string());
        }
    }
    println!(
        "uploaded 1000 images ({total} bytes) in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    for hash in &hashes {
        let r = app
            .render(&format!("/dynamic/resize-width-32/{hash}.jpg"))
            .await;
        assert_eq!(r.status, 200);
    }
    println!(
        "rendered 1000 thumbnails in {:.2}s",
        t.elapsed().as_secs_f64()
    );

    let work = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let body = app.get("/admin/export", ROOT_KEY).await.body;
    println!(
        "GET /admin/export (without renders): {} bytes in {:.2}s",
        body.len(),
        t.elapsed().as_secs_f64()
    );

    let config = config_file(work.path(), &app.data, &api_bind(&app));
    let file = work.path().join("thousand.backup");
    let t = Instant::now();
    let cli = darkroom(
        &config,
        &[
            "admin",
            "export",
            "--renders",
            "--to",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(cli.status.success(), "{}", out(&cli));
    println!(
        "admin export --renders (running service, incl. check pass, fsync): {:.2}s wall — {}",
        t.elapsed().as_secs_f64(),
        out(&cli).trim()
    );
    let _kept = app.stop().await;

    let fresh = tempfile::tempdir().unwrap();
    let config = config_file(work.path(), fresh.path(), "127.0.0.1:0");
    let t = Instant::now();
    let imported = darkroom(
        &config,
        &["admin", "import", "--from", file.to_str().unwrap()],
    )
    .await;
    assert!(imported.status.success(), "{}", out(&imported));
    println!(
        "admin import (check, write, fsync, verify): {:.2}s wall — {}",
        t.elapsed().as_secs_f64(),
        out(&imported).trim()
    );
    println!(
        "file size: {} bytes",
        std::fs::metadata(&file).unwrap().len()
    );
}
