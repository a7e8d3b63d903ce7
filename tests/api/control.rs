//! `darkroom admin` while the service runs: every command goes through the control socket in
//! the data folder and prints what it prints on a stopped folder; the socket is its owner's
//! and root's alone.

use crate::helpers::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `darkroom admin …` on `data` (waiting for it off this thread, which serves the
/// appliance); `uid` runs it as another user.
async fn admin(data: &Path, args: &[&str], uid: Option<u32>) -> Output {
    let data: PathBuf = data.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_darkroom"));
        command
            .arg("admin")
            .args(&args)
            .envs(storage_env(&data))
            .env("DARKROOM__STORAGE__MIN_FREE_MB", "8")
            .env("DARKROOM__LOG__LEVEL", "warn")
            .current_dir(&data);
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        command.output().expect("darkroom runs")
    })
    .await
    .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    stdout(out)
}

async fn with_token(app: &TestApp, token: &str) -> u16 {
    let bearer = format!("Bearer {token}");
    app.send(
        "GET",
        "/organizations/acme",
        None,
        &[("Authorization", bearer.as_str())],
        None,
    )
    .await
    .status
}

#[actix_rt::test]
async fn every_admin_command_works_through_the_socket_of_a_running_service() {
    let app = spawn_app().await;
    let data = app.data.clone();
    let socket = data.join(darkroom::cli::control::SOCKET);
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let created = ok(&admin(&data, &["org", "create", "acme"], None).await);
    assert!(
        created.starts_with("created organization acme ("),
        "{created}"
    );
    let key = ok(&admin(&data, &["key", "create", "acme", "--roles", "admin"], None).await);
    let key = key.trim();
    assert_eq!(key.len(), 64, "{key}");
    assert_eq!(app.get("/organizations/acme", key).await.status, 200);
    app.upload_one("acme", key, "a.jpg", &jpeg(30, 20, 1)).await;
    let token = app.get("/user/apikeys/token", key).await.json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(with_token(&app, &token).await, 200);
    let rotated = ok(&admin(&data, &["token", "rotate-secret"], None).await);
    assert!(rotated.starts_with("token secret replaced"), "{rotated}");
    assert_ne!(
        with_token(&app, &token).await,
        200,
        "old tokens die with the secret"
    );

    assert!(ok(&admin(&data, &["gc"], None).await).starts_with("gc: "));
    assert_eq!(ok(&admin(&data, &["verify"], None).await), "verify: ok\n");

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("live.backup");
    let exported = ok(&admin(&data, &["export", "--to", file.to_str().unwrap()], None).await);
    assert!(exported.contains("from the running service"), "{exported}");
    assert!(exported.contains("1 images"), "{exported}");

    let compact = admin(&data, &["compact"], None).await;
    assert!(!compact.status.success());
    // The embedded database is compacted offline; PostgreSQL has nothing to compact here.
    let why = if test_database_url(&data).is_some() {
        "the records are in PostgreSQL"
    } else {
        "stop the service first"
    };
    assert!(stderr(&compact).contains(why), "{}", stderr(&compact));
    let into_full = admin(&data, &["import", "--from", file.to_str().unwrap()], None).await;
    assert!(!into_full.status.success());
    assert!(
        stderr(&into_full).contains("not empty"),
        "{}",
        stderr(&into_full)
    );

    // Into another running service, empty: the backup arrives through its socket.
    let other = spawn_app().await;
    let imported = ok(&admin(
        &other.data,
        &["import", "--from", file.to_str().unwrap()],
        None,
    )
    .await);
    assert!(
        imported.contains("1 images") && imported.contains("verify: ok"),
        "{imported}"
    );
    assert_eq!(other.get("/organizations/acme", key).await.status, 200);
    assert_eq!(
        other.get("/sourceimages/acme", key).await.json()["total"],
        serde_json::json!(1)
    );
}

#[actix_rt::test]
async fn a_command_prints_the_same_through_the_socket_as_on_a_stopped_folder() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    app.upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(30, 20, 1))
        .await;
    let data = app.data.clone();
    let mut live = Vec::new();
    for args in [&["gc"][..], &["verify"], &["key", "create", "nowhere"]] {
        live.push(admin(&data, args, None).await);
    }
    let kept = app.stop().await;
    for (args, live) in [&["gc"][..], &["verify"], &["key", "create", "nowhere"]]
        .iter()
        .zip(&live)
    {
        let mut offline = admin(&data, args, None).await;
        for _ in 0..50 {
            if !stderr(&offline).contains("could not acquire lock") {
                break;
            }
            actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
            offline = admin(&data, args, None).await;
        }
        assert_eq!(live.status.success(), offline.status.success(), "{args:?}");
        assert_eq!(stdout(live), stdout(&offline), "{args:?}");
        assert_eq!(stderr(live), stderr(&offline), "{args:?}");
    }
    drop(kept);
}

#[actix_rt::test]
async fn the_socket_refuses_other_users() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: checking another user's refusal needs root (as in CI)");
        return;
    }
    let app = spawn_app().await;
    let data = app.data.clone();
    let socket = data.join(darkroom::cli::control::SOCKET);
    // As shipped, another user cannot even open the socket file.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let closed = admin(&data, &["verify"], Some(65534)).await;
    assert!(!closed.status.success());
    assert!(
        stderr(&closed).contains("not open to this user"),
        "{}",
        stderr(&closed)
    );
    // Opened up by mistake, the service still checks who is calling.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = admin(&data, &["verify"], Some(65534)).await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("refuses uid 65534"),
        "{}",
        stderr(&refused)
    );
}
