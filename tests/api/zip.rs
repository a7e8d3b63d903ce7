//! ZIP downloads of originals, `GET /sourceimages/{org}/download`: the listing's selection as
//! one streamed archive of the exact bytes under unique, safe names; refused before the first
//! byte past the configured limits, for protected images without the role, and without rights.

use crate::helpers::*;
use serde_json::Value;
use std::io::{Cursor, Read};

/// The entries of an archive, in order: (name, bytes).
fn unzip(body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = ::zip::ZipArchive::new(Cursor::new(body)).expect("a ZIP archive");
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).unwrap();
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).unwrap();
            (file.name().to_string(), bytes)
        })
        .collect()
}

fn names(entries: &[(String, Vec<u8>)]) -> Vec<&str> {
    entries.iter().map(|(n, _)| n.as_str()).collect()
}

async fn download(app: &TestApp, query: &str, key: &str) -> Answer {
    app.get(&format!("/sourceimages/acme/download{query}"), key)
        .await
}

/// Uploads one file with user metadata and returns the image JSON.
async fn upload_tagged(app: &TestApp, name: &str, bytes: &[u8], meta: &str) -> Value {
    let a = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", name, bytes)],
            &[("meta_user[0]", meta)],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["items"][0].clone()
}

fn assert_refused_before_the_archive(a: &Answer, status: u16, says: &[&str]) {
    assert_eq!(a.status, status, "{}", a.text());
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(a.header("content-disposition").is_none());
    let message = a.json()["error"]["message"].as_str().unwrap().to_string();
    for word in says {
        assert!(message.contains(word), "'{word}' missing from: {message}");
    }
}

#[actix_rt::test]
async fn a_zip_of_three_images_holds_their_exact_bytes_under_their_names() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let a = jpeg(40, 30, 1);
    let b = png(20, 10);
    let c = jpeg(1200, 900, 3);
    app.upload_one("acme", ROOT_KEY, "a.jpg", &a).await;
    app.upload_one("acme", ROOT_KEY, "b.png", &b).await;
    app.upload_one("acme", ROOT_KEY, "c.jpg", &c).await;

    let zip = download(&app, "", ROOT_KEY).await;

    assert_eq!(zip.status, 200, "{}", zip.text());
    assert_eq!(
        zip.header("content-type").as_deref(),
        Some("application/zip")
    );
    assert_eq!(
        zip.header("content-disposition").as_deref(),
        Some("attachment; filename=\"acme.zip\"")
    );
    let entries = unzip(&zip.body);
    // The listing's default order: newest first.
    assert_eq!(names(&entries), ["c.jpg", "b.png", "a.jpg"]);
    assert!(entries[0].1 == c, "c.jpg is the uploaded bytes");
    assert!(entries[1].1 == b, "b.png is the uploaded bytes");
    assert!(entries[2].1 == a, "a.jpg is the uploaded bytes");
}

#[actix_rt::test]
async fn the_archive_is_streamed_without_a_length_computed_up_front() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    app.upload_one("acme", ROOT_KEY, "big.jpg", &jpeg(1600, 1200, 7))
        .await;

    let zip = download(&app, "", ROOT_KEY).await;

    assert_eq!(zip.status, 200, "{}", zip.text());
    assert_eq!(zip.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(zip.header("content-length"), None);
    assert_eq!(unzip(&zip.body).len(), 1);
}

#[actix_rt::test]
async fn two_images_with_the_same_name_get_distinct_names() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let older = jpeg(30, 30, 1);
    let newer = jpeg(30, 30, 2);
    let first = app.upload_one("acme", ROOT_KEY, "photo.jpg", &older).await;
    app.upload_one("acme", ROOT_KEY, "photo.jpg", &newer).await;

    let entries = unzip(&download(&app, "", ROOT_KEY).await.body);

    // Newest first: the newer image keeps the name, the older one gets its short hash.
    let short = first["short_hash"].as_str().unwrap();
    assert_eq!(
        names(&entries),
        ["photo.jpg".to_string(), format!("photo-{short}.jpg")]
    );
    assert!(entries[0].1 == newer);
    assert!(entries[1].1 == older);
}

#[actix_rt::test]
async fn names_are_made_safe_to_unpack() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    app.upload_one("acme", ROOT_KEY, "../../etc/evil.jpg", &jpeg(20, 20, 1))
        .await;
    let hash = app
        .upload_one("acme", ROOT_KEY, "b.jpg", &jpeg(20, 20, 2))
        .await["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let renamed = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/name"),
            ROOT_KEY,
            &serde_json::json!("..\\win\\x.jpg"),
        )
        .await;
    assert_eq!(renamed.status, 204, "{}", renamed.text());

    let entries = unzip(&download(&app, "?sort=name", ROOT_KEY).await.body);

    for (name, _) in &entries {
        assert!(!name.contains(['/', '\\']), "{name}");
        assert!(!name.contains(".."), "{name}");
        assert!(!name.starts_with('.'), "{name}");
    }
    assert_eq!(names(&entries), ["_._etc_evil.jpg", "_win_x.jpg"]);
}

#[actix_rt::test]
async fn a_filter_narrows_the_archive_as_it_narrows_the_list() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let x1 = jpeg(20, 20, 1);
    let x2 = jpeg(20, 20, 2);
    upload_tagged(&app, "x1.jpg", &x1, r#"{"tag":"x"}"#).await;
    upload_tagged(&app, "y.jpg", &jpeg(20, 20, 3), r#"{"tag":"y"}"#).await;
    upload_tagged(&app, "x2.jpg", &x2, r#"{"tag":"x"}"#).await;

    let tagged = unzip(
        &download(&app, "?user%3Astr%3Atag=x&sort=name%20asc", ROOT_KEY)
            .await
            .body,
    );
    let by_prefix = unzip(&download(&app, "?name=y*", ROOT_KEY).await.body);
    let first_page = unzip(&download(&app, "?limit=1&sort=name", ROOT_KEY).await.body);
    let second_page = unzip(
        &download(&app, "?limit=1&offset=1&sort=name", ROOT_KEY)
            .await
            .body,
    );

    assert_eq!(names(&tagged), ["x1.jpg", "x2.jpg"]);
    assert!(tagged[0].1 == x1 && tagged[1].1 == x2);
    assert_eq!(names(&by_prefix), ["y.jpg"]);
    assert_eq!(names(&first_page), ["x1.jpg"]);
    assert_eq!(names(&second_page), ["x2.jpg"]);
}

#[actix_rt::test]
async fn deleted_images_are_left_out_unless_the_list_asks_for_them() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    app.upload_one("acme", ROOT_KEY, "kept.jpg", &jpeg(20, 20, 1))
        .await;
    let gone = app
        .upload_one("acme", ROOT_KEY, "gone.jpg", &jpeg(20, 20, 2))
        .await;
    let d = app
        .delete(
            &format!("/sourceimages/acme/{}", gone["hash"].as_str().unwrap()),
            ROOT_KEY,
        )
        .await;
    assert_eq!(d.status, 204);

    let live = unzip(&download(&app, "", ROOT_KEY).await.body);
    let deleted = unzip(&download(&app, "?deleted=true", ROOT_KEY).await.body);

    assert_eq!(names(&live), ["kept.jpg"]);
    assert_eq!(names(&deleted), ["gone.jpg"]);
}

#[actix_rt::test]
async fn bad_query_parameters_get_the_lists_400() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    for query in ["?limit=5000", "?sort=bogus%20desc", "?offset=not-a-cursor!"] {
        let list = app
            .get(&format!("/sourceimages/acme{query}"), ROOT_KEY)
            .await;
        let zip = download(&app, query, ROOT_KEY).await;
        assert_eq!(list.status, 400, "{query}");
        assert_eq!(zip.status, 400, "{query}");
        assert_eq!(zip.json(), list.json(), "{query}");
    }
}

#[actix_rt::test]
async fn past_the_image_count_limit_the_answer_is_413_before_any_archive() {
    let app = spawn_app_with(|c| c.limits.max_zip_images = 2).await;
    app.create_org("acme").await;
    for seed in 1..=3 {
        app.upload_one(
            "acme",
            ROOT_KEY,
            &format!("{seed}.jpg"),
            &jpeg(20, 20, seed),
        )
        .await;
    }

    let refused = download(&app, "", ROOT_KEY).await;
    let narrowed = download(&app, "?limit=2", ROOT_KEY).await;

    assert_refused_before_the_archive(
        &refused,
        413,
        &["limits.max_zip_images", "limit", "filters"],
    );
    assert_eq!(narrowed.status, 200, "{}", narrowed.text());
    assert_eq!(unzip(&narrowed.body).len(), 2);
}

#[actix_rt::test]
async fn past_the_byte_limit_the_answer_is_413_before_any_archive() {
    let small = jpeg(20, 20, 1);
    let large = jpeg(400, 300, 2);
    let max = small.len() as u64 + 10;
    let app = spawn_app_with(move |c| c.limits.max_zip_bytes = max).await;
    app.create_org("acme").await;
    app.upload_one("acme", ROOT_KEY, "small.jpg", &small).await;
    app.upload_one("acme", ROOT_KEY, "large.jpg", &large).await;

    let refused = download(&app, "", ROOT_KEY).await;
    let narrowed = download(&app, "?name=small.jpg", ROOT_KEY).await;

    assert_refused_before_the_archive(&refused, 413, &["limits.max_zip_bytes", "limit", "filters"]);
    assert_eq!(narrowed.status, 200, "{}", narrowed.text());
    assert_eq!(names(&unzip(&narrowed.body)), ["small.jpg"]);
}

#[actix_rt::test]
async fn a_protected_image_needs_the_protected_download_role() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    app.upload_one("acme", ROOT_KEY, "open.jpg", &jpeg(20, 20, 1))
        .await;
    let protected = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "secret.jpg", &jpeg(20, 20, 2))],
            &[("options[0]", r#"{"protected":true}"#)],
        )
        .await
        .json()["items"][0]
        .clone();
    assert_eq!(protected["protected"], true);
    let reader = app.create_key("acme", &["sourceimages:read"]).await;
    let trusted = app
        .create_key(
            "acme",
            &["sourceimages:read", "sourceimages:download:protected"],
        )
        .await;

    let refused = download(&app, "", &reader).await;
    let without_it = download(&app, "?name=open.jpg", &reader).await;
    let allowed = download(&app, "?sort=name", &trusted).await;

    assert_refused_before_the_archive(
        &refused,
        403,
        &[
            protected["hash"].as_str().unwrap(),
            "sourceimages:download:protected",
        ],
    );
    assert_eq!(without_it.status, 200, "{}", without_it.text());
    assert_eq!(names(&unzip(&without_it.body)), ["open.jpg"]);
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(names(&unzip(&allowed.body)), ["open.jpg", "secret.jpg"]);
}

#[actix_rt::test]
async fn an_organization_without_read_rights_is_refused() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    app.create_org("rival").await;
    app.upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(20, 20, 1))
        .await;
    let rival = app.create_key("rival", &["admin"]).await;
    let uploader = app.create_key("acme", &["upload"]).await;

    assert_refused_before_the_archive(&download(&app, "", &rival).await, 403, &["acme"]);
    assert_refused_before_the_archive(&download(&app, "", &uploader).await, 403, &["acme"]);
    let nobody = download(&app, "", "not-a-key").await;
    assert_eq!(nobody.status, 403);
}

#[actix_rt::test]
async fn the_bytes_of_an_archive_count_as_traffic() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    app.upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(200, 100, 1))
        .await;
    app.upload_one("acme", ROOT_KEY, "b.jpg", &jpeg(100, 200, 2))
        .await;

    let zip = download(&app, "", ROOT_KEY).await;
    assert_eq!(zip.status, 200);
    let stats = app.get("/stats/acme", ROOT_KEY).await.json();

    assert_eq!(
        stats["bytes_downloaded"][0]["value"].as_u64(),
        Some(zip.body.len() as u64)
    );
}

#[actix_rt::test]
async fn the_single_download_route_still_serves_one_image() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let bytes = jpeg(20, 20, 1);
    let img = app.upload_one("acme", ROOT_KEY, "a.jpg", &bytes).await;

    let one = app
        .get(
            &format!(
                "/sourceimages/acme/{}/download",
                img["hash"].as_str().unwrap()
            ),
            ROOT_KEY,
        )
        .await;
    let no_such_hash = app
        .get("/sourceimages/acme/download/download", ROOT_KEY)
        .await;

    assert_eq!(one.status, 200);
    assert_eq!(one.body, bytes);
    assert_eq!(no_such_hash.status, 404);
}

#[actix_rt::test]
async fn a_binary_hash_selects_every_live_variant_of_the_bytes() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let bytes = jpeg(30, 20, 1);
    let img = app.upload_one("acme", ROOT_KEY, "a.jpg", &bytes).await;
    app.upload_one("acme", ROOT_KEY, "other.jpg", &jpeg(30, 20, 2))
        .await;
    let variant = app
        .json(
            "PUT",
            &format!(
                "/sourceimages/acme/{}/meta/dynamic/version",
                img["hash"].as_str().unwrap()
            ),
            ROOT_KEY,
            &serde_json::json!({"text": "2"}),
        )
        .await;
    assert_eq!(variant.status, 201, "{}", variant.text());

    let zip = download(&app, &format!("?binaryHash={}", sha1_hex(&bytes)), ROOT_KEY).await;

    assert_eq!(zip.status, 200, "{}", zip.text());
    let entries = unzip(&zip.body);
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|(_, b)| *b == bytes));
    let got = names(&entries);
    assert!(got.contains(&"a.jpg"), "{got:?}");
    assert!(
        got.iter()
            .any(|n| n.starts_with("a-") && n.ends_with(".jpg")),
        "{got:?}"
    );
}
