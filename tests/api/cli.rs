//! The `darkroom admin` commands, run as an operator would, on a data folder.

use crate::helpers::*;
use std::process::Command;

fn darkroom(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .args(args)
        .envs(storage_env(data))
        .env("DARKROOM__LOG__LEVEL", "warn")
        .current_dir(data)
        .output()
        .expect("darkroom runs")
}

/// Runs a command on a folder an appliance just released: sled lets go of its lock shortly
/// after the appliance stops.
async fn darkroom_after_stop(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut out = darkroom(data, args);
    for _ in 0..50 {
        if !String::from_utf8_lossy(&out.stderr).contains("could not acquire lock") {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
        out = darkroom(data, args);
    }
    out
}

#[actix_rt::test]
async fn admin_commands_create_an_organization_and_a_working_key_offline() {
    let dir = tempfile::tempdir().unwrap();
    let org = darkroom(dir.path(), &["admin", "org", "create", "acme"]);
    assert!(
        org.status.success(),
        "{}",
        String::from_utf8_lossy(&org.stderr)
    );
    let key = darkroom(
        dir.path(),
        &["admin", "key", "create", "acme", "--roles", "admin"],
    );
    assert!(
        key.status.success(),
        "{}",
        String::from_utf8_lossy(&key.stderr)
    );
    let key = String::from_utf8(key.stdout).unwrap().trim().to_string();
    assert_eq!(key.len(), 64);
    let verify = darkroom(dir.path(), &["admin", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let gc = darkroom(dir.path(), &["admin", "gc"]);
    assert!(gc.status.success());
    let mut config = test_config(dir.path());
    config.storage.path = dir.path().to_path_buf();
    let app = start(config).await;
    assert_eq!(app.get("/organizations/acme", &key).await.status, 200);
    app.upload_one("acme", &key, "a.jpg", &jpeg(10, 10, 1))
        .await;
    app.stop().await;
    let verify = darkroom_after_stop(dir.path(), &["admin", "verify"]).await;
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[actix_rt::test]
async fn invalid_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .args(["admin", "verify"])
        .envs(storage_env(dir.path()))
        .env("DARKROOM__SERVER__API_BIND", "not-an-address")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.api_bind"));
    let bad_key = darkroom(dir.path(), &["admin", "key", "create", "nowhere"]);
    assert!(!bad_key.status.success());
    let bad_bucket = Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .args(["admin", "verify"])
        .env("DARKROOM__STORAGE__PATH", dir.path())
        .env("DARKROOM__STORAGE__OBJECT_STORE_URL", "https://bucket")
        .output()
        .unwrap();
    assert!(!bad_bucket.status.success());
    let said = String::from_utf8_lossy(&bad_bucket.stderr);
    assert!(said.contains("storage.object_store_url"), "{said}");
}

#[actix_rt::test]
async fn verify_fails_when_a_blob_file_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.storage.path = dir.path().to_path_buf();
    let app = start(config).await;
    app.create_org("acme").await;
    app.upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(10, 10, 4))
        .await;
    app.stop().await;
    // Break the storage on purpose, as a careless operator might: a blob goes, wherever the
    // bytes are kept.
    let storage = open_test_storage(dir.path()).await;
    let blob = (0..=255u8)
        .flat_map(|shard| storage.bytes.list_shard(shard).unwrap())
        .next()
        .expect("the upload's blob");
    storage.bytes.remove(&blob).unwrap();
    drop(storage);
    let out = darkroom_after_stop(dir.path(), &["admin", "verify"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing blob"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[actix_rt::test]
async fn logs_carry_one_line_per_request_and_no_keys_or_signatures() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .envs(storage_env(dir.path()))
        .env("DARKROOM__SERVER__API_BIND", "127.0.0.1:0")
        .env("DARKROOM__SERVER__RENDER_BIND", "127.0.0.1:0")
        .env("DARKROOM__AUTH__ROOT_KEY", "root-secret-never-logged")
        .env("RUST_LOG", "info")
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // "… serving the API on 127.0.0.1:PORT and renders on 127.0.0.1:PORT from …"
    let started = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.contains("serving the API"))
        .unwrap();
    let ports: Vec<&str> = started
        .split("127.0.0.1:")
        .skip(1)
        .map(|s| s.split_whitespace().next().unwrap())
        .collect();
    let (api, render) = (
        format!("http://127.0.0.1:{}", ports[0]),
        format!("http://127.0.0.1:{}", ports[1]),
    );
    let client = awc::Client::default();
    let r = client
        .get(format!("{api}/user"))
        .insert_header(("Api-Key", "root-secret-never-logged"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client
        .get(format!(
            "{render}/acme/dynamic/noop/abcdef.jpg?sig=feedc0ffee123456"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // SIGTERM, as systemd sends it.
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let _ = child.wait();
    let log: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let requests: Vec<&String> = log.iter().filter(|l| l.contains(" GET /")).collect();
    assert_eq!(requests.len(), 2, "{log:#?}");
    assert!(
        requests
            .iter()
            .any(|l| l.contains("api 200") && l.contains("GET /user")),
        "{log:#?}"
    );
    for line in &log {
        assert!(!line.contains("root-secret-never-logged"), "{line}");
        assert!(!line.contains("feedc0ffee123456"), "{line}");
    }
}
