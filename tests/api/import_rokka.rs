//! `darkroom admin import-rokka`: a second appliance plays the rokka host. The import copies
//! an organization into a stopped data folder, keeps hashes, metadata, flags, stacks and
//! aliases, resumes without copying twice, and the copy then renders the same URLs.

use crate::helpers::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

/// Runs the importer on `data` (no service there) against the appliance at `api_host`.
async fn import(data: &Path, api_host: &str, extra: &[&str]) -> Output {
    import_into(data, "127.0.0.1:0", api_host, extra).await
}

/// Runs the importer with `server.api_bind` = `api_bind`: a service listening there is the
/// target.
async fn import_into(data: &Path, api_bind: &str, api_host: &str, extra: &[&str]) -> Output {
    let (data, api_bind) = (data.to_path_buf(), api_bind.to_string());
    let mut args: Vec<String> = [
        "admin",
        "import-rokka",
        "--api-host",
        api_host,
        "--organization",
        "acme",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    // The source appliance runs on this test's thread: wait for the importer elsewhere.
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_darkroom"))
            .args(&args)
            .envs(storage_env(&data))
            .env("DARKROOM__SERVER__API_BIND", &api_bind)
            .env("DARKROOM__SERVER__RENDER_BIND", "127.0.0.1:0")
            .env("DARKROOM__STORAGE__MIN_FREE_MB", "8")
            .env("DARKROOM__LOG__LEVEL", "warn")
            .env("DARKROOM__AUTH__ROOT_KEY", ROOT_KEY)
            .env("ROKKA_API_KEY", ROOT_KEY)
            .current_dir(&data)
            .output()
            .expect("darkroom runs")
    })
    .await
    .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The source organization: three images (user metadata, a subject area, protected, locked),
/// a basestack, a stack on it with variables and expressions, and an alias.
async fn source(app: &TestApp) -> Vec<String> {
    app.create_org("acme").await;
    let plain = app
        .upload_one("acme", ROOT_KEY, "plain.jpg", &jpeg(90, 60, 1))
        .await;
    let described = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "described.png", &png(40, 30))],
            &[
                (
                    "meta_user[0]",
                    r#"{"title":"Sunset","array:tags":["sea","red"],"int:n":3}"#,
                ),
                (
                    "meta_dynamic[0]",
                    r#"{"subject_area":{"x":5,"y":4,"width":10,"height":8}}"#,
                ),
            ],
        )
        .await;
    assert_eq!(described.status, 200, "{}", described.text());
    let described = described.json()["items"][0].clone();
    let protected = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "secret.jpg", &jpeg(64, 64, 2))],
            &[("options[0]", r#"{"protected":true}"#)],
        )
        .await;
    assert_eq!(protected.status, 200, "{}", protected.text());
    let protected = protected.json()["items"][0].clone();
    let hashes: Vec<String> = [&plain, &described, &protected]
        .iter()
        .map(|i| i["hash"].as_str().unwrap().to_string())
        .collect();
    let locked = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{}/options/locked", hashes[0]),
            ROOT_KEY,
            &json!(true),
        )
        .await;
    assert_eq!(locked.status, 200, "{}", locked.text());
    app.stack(
        "base",
        json!([{"name": "resize", "options": {"width": 50}}]),
    )
    .await;
    app.stack(
        "card",
        json!({
            "operations": [{"name": "resize", "options": {"width": 30},
                            "expressions": {"width": "$w * 2"}}],
            "options": {"basestack": "base", "jpg.quality": 70},
            "variables": {"w": 12},
            "expressions": [{"expression": "image.width > 60", "overrides": {"options": {"jpg.quality": 50}}}]
        }),
    )
    .await;
    let alias = app
        .json(
            "PUT",
            "/sourceimages/acme/alias/hero",
            ROOT_KEY,
            &json!({ "hash": hashes[1] }),
        )
        .await;
    assert_eq!(alias.status, 201, "{}", alias.text());
    hashes
}

/// The fields of an image that an import must keep.
fn kept(image: &Value) -> Value {
    json!({
        "hash": image["hash"], "short_hash": image["short_hash"],
        "binary_hash": image["binary_hash"], "name": image["name"], "size": image["size"],
        "width": image["width"], "height": image["height"], "format": image["format"],
        "created": image["created"], "protected": image["protected"], "locked": image["locked"],
        "user_metadata": image["user_metadata"], "dynamic_metadata": image["dynamic_metadata"],
    })
}

async fn listing(app: &TestApp) -> Vec<Value> {
    let mut items: Vec<Value> = app
        .get("/sourceimages/acme?limit=100", ROOT_KEY)
        .await
        .json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(kept)
        .collect();
    items.sort_by_key(|i| i["hash"].as_str().unwrap().to_string());
    items
}

async fn stacks(app: &TestApp) -> Vec<Value> {
    let mut items: Vec<Value> = app.get("/stacks/acme", ROOT_KEY).await.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.as_object_mut().unwrap().remove("created");
            s
        })
        .collect();
    items.sort_by_key(|s| s["name"].as_str().unwrap().to_string());
    items
}

#[actix_rt::test]
async fn an_organization_moves_in_with_its_hashes_and_a_second_run_copies_nothing() {
    let host = spawn_app().await;
    let hashes = source(&host).await;
    let here = tempfile::tempdir().unwrap();

    let first = import(here.path(), &host.api, &[]).await;
    assert!(first.status.success(), "{}", text(&first));
    let said = text(&first);
    assert!(said.contains("images 3 copied"), "{said}");
    assert!(said.contains("stacks 2 copied"), "{said}");
    assert!(said.contains("aliases 1 copied"), "{said}");
    assert!(said.contains("verify: ok"), "{said}");

    let again = import(here.path(), &host.api, &[]).await;
    let said = text(&again);
    assert!(again.status.success(), "{said}");
    assert!(said.contains("images 0 copied"), "{said}");
    assert!(
        said.contains("3 already here, 0 brought up to date"),
        "{said}"
    );
    assert!(said.contains("stacks 0 copied, 2 unchanged"), "{said}");
    assert!(said.contains("aliases 0 copied, 1 unchanged"), "{said}");

    let mut config = test_config(here.path());
    config.storage.min_free_mb = 8;
    let copy = start(config).await;
    assert_eq!(listing(&copy).await, listing(&host).await);
    assert_eq!(stacks(&copy).await, stacks(&host).await);
    let alias = copy.get("/sourceimages/acme/alias/hero", ROOT_KEY).await;
    assert_eq!(alias.json()["hash"], json!(hashes[1]));

    // The render URLs a site already uses give the same pictures.
    for path in [
        format!("/card/{}.png", hashes[1]),
        format!("/base/{}.jpg", hashes[0]),
        "/card/-_hero_-.png".to_string(),
    ] {
        let (a, b) = (host.render(&path).await, copy.render(&path).await);
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        assert_eq!(b.status, 200, "{path}: {}", b.text());
        assert_eq!(a.body, b.body, "{path}");
    }
    // The protected image stays protected: an unsigned URL is refused on both.
    let unsigned = format!("/base/{}.jpg", hashes[2]);
    assert_eq!(host.render(&unsigned).await.status, 403);
    assert_eq!(copy.render(&unsigned).await.status, 403);
    drop(copy.stop().await);
}

#[actix_rt::test]
async fn an_import_goes_into_the_running_service() {
    let host = spawn_app().await;
    source(&host).await;
    let here = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let service = Killed(start_binary(
        here.path(),
        &[("DARKROOM__SERVER__API_BIND", std::ffi::OsStr::new(&bind))],
    ));
    for _ in 0..200 {
        if get_status(&bind, "/healthz") == 200 {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let out = import_into(here.path(), &bind, &host.api, &[]).await;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("images 3 copied"), "{said}");
    assert!(said.contains("into the running service"), "{said}");
    assert!(said.contains("verify: ok"), "{said}");
    let listed = get_over_tcp(&bind, "/sourceimages/acme?limit=10");
    assert!(listed.contains("\"total\":3"), "{listed}");
    drop(service);
}

/// A GET with the root key over plain TCP; the body.
fn get_over_tcp(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nApi-Key: {ROOT_KEY}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[actix_rt::test]
async fn a_resumed_import_brings_changed_metadata_in_line_and_names_what_failed() {
    let host = spawn_app().await;
    let hashes = source(&host).await;
    let here = tempfile::tempdir().unwrap();
    let first = import(here.path(), &host.api, &[]).await;
    assert!(first.status.success(), "{}", text(&first));

    // Changed at the source meanwhile: user metadata and the lock.
    let meta = host
        .json(
            "PUT",
            &format!("/sourceimages/acme/{}/meta/user", hashes[1]),
            ROOT_KEY,
            &json!({"title": "Dawn"}),
        )
        .await;
    assert!(meta.status < 300, "{}", meta.text());
    let unlock = host
        .json(
            "PUT",
            &format!("/sourceimages/acme/{}/options/locked", hashes[0]),
            ROOT_KEY,
            &json!(false),
        )
        .await;
    assert!(unlock.status < 300, "{}", unlock.text());

    let again = import(here.path(), &host.api, &[]).await;
    let said = text(&again);
    assert!(again.status.success(), "{said}");
    assert!(said.contains("images 0 copied"), "{said}");
    assert!(said.contains("2 brought up to date"), "{said}");

    // A wrong key is a clear failure, and nothing is claimed copied.
    let out = tokio::task::spawn_blocking({
        let (data, api) = (here.path().to_path_buf(), host.api.clone());
        move || {
            Command::new(env!("CARGO_BIN_EXE_darkroom"))
                .args(["admin", "import-rokka", "--api-host", &api])
                .args(["--api-key", "wrong", "--organization", "acme"])
                .envs(storage_env(&data))
                .env("DARKROOM__SERVER__API_BIND", "127.0.0.1:0")
                .env("DARKROOM__SERVER__RENDER_BIND", "127.0.0.1:0")
                .env("DARKROOM__STORAGE__MIN_FREE_MB", "8")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cannot read organization 'acme'"),
        "{}",
        text(&out)
    );

    let copy = start(test_config(here.path())).await;
    assert_eq!(listing(&copy).await, listing(&host).await);
    drop(copy.stop().await);
}

#[actix_rt::test]
async fn only_the_root_key_may_keep_a_hash_or_a_creation_time() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let key = app.create_key("acme", &["write", "upload"]).await;
    let hash = "0123456789abcdef0123456789abcdef01234567";
    let options = format!(r#"{{"hash":"{hash}"}}"#);
    let refused = app
        .upload(
            "acme",
            &key,
            &[("filedata", "a.jpg", &jpeg(20, 20, 3))],
            &[("options[0]", &options)],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text());

    let kept = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "a.jpg", &jpeg(20, 20, 3))],
            &[(
                "options[0]",
                &format!(r#"{{"hash":"{hash}","created":"2019-03-04T05:06:07+00:00"}}"#),
            )],
        )
        .await;
    assert_eq!(kept.status, 200, "{}", kept.text());
    assert_eq!(kept.json()["items"][0]["hash"], json!(hash));
    assert!(kept.json()["items"][0]["created"]
        .as_str()
        .unwrap()
        .starts_with("2019-03-04T05:06:07"));

    // The same hash cannot name other bytes.
    let other = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "b.jpg", &jpeg(20, 20, 4))],
            &[("options[0]", &options)],
        )
        .await;
    assert_eq!(other.status, 409, "{}", other.text());

    for bad in [r#"{"hash":"XYZ"}"#, r#"{"created":"yesterday"}"#] {
        let a = app
            .upload(
                "acme",
                ROOT_KEY,
                &[("filedata", "c.jpg", &jpeg(20, 20, 5))],
                &[("options[0]", bad)],
            )
            .await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text());
    }
}

#[actix_rt::test]
async fn aliases_are_listed_for_their_readers() {
    let app = spawn_app().await;
    let hashes = source(&app).await;
    let listed = app.get("/sourceimages/acme/alias", ROOT_KEY).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(
        listed.json()["items"],
        json!([{"organization": "acme", "alias": "hero", "hash": hashes[1]}])
    );
    let wrong = app.get("/sourceimages/acme/alias", "nope").await.status;
    assert_eq!(wrong, app.get("/sourceimages/acme", "nope").await.status);
    assert!((400..500).contains(&wrong));
}
