//! The embedded dashboard: its files come from the binary with their types, a strict
//! Content-Security-Policy and an ETag the client can revalidate; unknown names are the JSON
//! 404; and the page refers to exactly the files that are served. Also the API routes the
//! page relies on besides the rokka API: previews of render URLs behind the key, and the
//! appliance status.

use crate::helpers::*;
use std::collections::BTreeSet;

const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

async fn fetch(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Answer {
    app.send("GET", path, None, headers, None).await
}

fn assert_hardened(a: &Answer) {
    assert_eq!(a.header("content-security-policy").as_deref(), Some(CSP));
    assert_eq!(
        a.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(a.header("referrer-policy").as_deref(), Some("no-referrer"));
    assert_eq!(a.header("cache-control").as_deref(), Some("no-cache"));
}

/// The values of `attr="…"` in `html`.
fn attribute_values(html: &str, attr: &str) -> Vec<String> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| rest[..end].to_string())
        })
        .collect()
}

#[actix_rt::test]
async fn the_page_is_served_as_html_without_a_key_and_with_a_strict_policy() {
    let app = spawn_app().await;

    let a = fetch(&app, "/dashboard", &[]).await;

    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_hardened(&a);
    assert!(a.text().starts_with("<!doctype html>"));
    assert_eq!(a.body, include_bytes!("../../static/index.html"));
}

#[actix_rt::test]
async fn the_script_and_the_style_sheet_are_served_with_their_types() {
    let app = spawn_app().await;

    let js = fetch(&app, "/dashboard/app.js", &[]).await;
    let css = fetch(&app, "/dashboard/style.css", &[]).await;

    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(js.body, include_bytes!("../../static/app.js"));
    assert_hardened(&js);
    assert_eq!(css.status, 200);
    assert_eq!(
        css.header("content-type").as_deref(),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(css.body, include_bytes!("../../static/style.css"));
    assert_hardened(&css);
}

#[actix_rt::test]
async fn a_client_holding_the_current_etag_gets_304_without_a_body() {
    let app = spawn_app().await;
    let first = fetch(&app, "/dashboard/app.js", &[]).await;
    let etag = first.header("etag").expect("an ETag");
    let expected = format!(
        "\"{}\"",
        blake3::hash(include_bytes!("../../static/app.js")).to_hex()
    );
    assert_eq!(etag, expected);

    let again = fetch(&app, "/dashboard/app.js", &[("If-None-Match", &etag)]).await;
    let listed = fetch(
        &app,
        "/dashboard/app.js",
        &[("If-None-Match", &format!("\"old\", W/{etag}"))],
    )
    .await;
    let stale = fetch(&app, "/dashboard/app.js", &[("If-None-Match", "\"old\"")]).await;
    let page = fetch(&app, "/dashboard", &[("If-None-Match", &etag)]).await;

    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.clone()));
    assert_hardened(&again);
    assert_eq!(listed.status, 304);
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, first.body);
    // Each file has its own tag.
    assert_eq!(page.status, 200);
    assert_ne!(page.header("etag"), Some(etag));
}

#[actix_rt::test]
async fn an_unknown_dashboard_file_is_the_json_404() {
    let app = spawn_app().await;

    for path in [
        "/dashboard/secrets.json",
        "/dashboard/..%2FCargo.toml",
        "/dashboard/app.js/x",
    ] {
        let a = fetch(&app, path, &[]).await;

        assert_eq!(a.status, 404, "{path}");
        assert_eq!(
            a.header("content-type").as_deref(),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(a.json()["error"]["code"], 404, "{path}");
    }
}

#[actix_rt::test]
async fn the_page_refers_to_exactly_the_files_that_are_served() {
    let app = spawn_app().await;
    let html = fetch(&app, "/dashboard", &[]).await.text();

    let mut referenced = attribute_values(&html, "src");
    referenced.extend(attribute_values(&html, "href"));
    // Links within the page (`#gallery`) fetch nothing.
    referenced.retain(|url| !url.starts_with('#'));

    // Nothing from another origin: the appliance often runs offline, and the policy forbids it.
    for url in &referenced {
        assert!(
            url.starts_with("/dashboard/") || url.starts_with("data:"),
            "the page refers to {url}"
        );
    }
    let ours: BTreeSet<&str> = referenced
        .iter()
        .filter_map(|u| u.strip_prefix("/dashboard/"))
        .collect();
    assert_eq!(ours, BTreeSet::from(["app.js", "style.css"]));
    for file in ours {
        let a = fetch(&app, &format!("/dashboard/{file}"), &[]).await;
        assert_eq!(a.status, 200, "{file}");
    }
}

#[actix_rt::test]
async fn the_page_answers_with_a_trailing_slash_and_to_head() {
    let app = spawn_app().await;

    let slash = fetch(&app, "/dashboard/", &[]).await;
    let head = app.send("HEAD", "/dashboard", None, &[], None).await;
    let head_js = app.send("HEAD", "/dashboard/app.js", None, &[], None).await;

    assert_eq!(slash.status, 200, "{}", slash.text());
    assert_eq!(slash.body, include_bytes!("../../static/index.html"));
    assert_hardened(&slash);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_hardened(&head);
    assert_eq!(head_js.status, 200);
    assert!(head_js.body.is_empty());
}

#[actix_rt::test]
async fn a_well_formed_key_nobody_holds_is_told_apart_from_a_missing_one() {
    let app = spawn_app().await;
    app.create_org("acme").await;

    let missing = app.send("GET", "/user", None, &[], None).await;
    let malformed = app.get("/user", "short").await;
    let unknown = app.get("/user", &"a".repeat(64)).await;

    for a in [&missing, &malformed, &unknown] {
        assert_eq!(a.status, 403, "{}", a.text());
        assert_eq!(a.json()["invalid_authentication"], true);
    }
    let message = |a: &Answer| a.json()["error"]["message"].as_str().unwrap().to_string();
    assert_eq!(
        message(&missing),
        "Api credentials are not supplied or not a valid format."
    );
    assert_eq!(message(&malformed), message(&missing));
    assert!(
        message(&unknown).contains("not valid here"),
        "{}",
        message(&unknown)
    );
}

#[actix_rt::test]
async fn a_preview_needs_a_key_that_may_read_the_organizations_images() {
    let app = spawn_app().await;
    let hash = app.acme_with_thumb(&jpeg(64, 48, 1), 32).await;
    app.create_org("other").await;
    let reader = app.create_key("acme", &["read"]).await;
    let stranger = app.create_key("other", &["admin"]).await;
    let path = format!("/preview/acme/thumb/{hash}.png");

    let anonymous = app.send("GET", &path, None, &[], None).await;
    let foreign = app.get(&path, &stranger).await;
    let allowed = app.get(&path, &reader).await;

    assert_eq!(anonymous.status, 403, "{}", anonymous.text());
    assert_eq!(foreign.status, 403, "{}", foreign.text());
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(allowed.header("content-type").as_deref(), Some("image/png"));
    assert_eq!(
        allowed.header("cache-control").as_deref(),
        Some("private, no-cache")
    );
    assert!(allowed.header("surrogate-key").is_none());
    let img = image::load_from_memory(&allowed.body).unwrap();
    assert_eq!((img.width(), img.height()), (32, 24));
}

#[actix_rt::test]
async fn a_preview_is_the_stored_render_of_the_public_url_and_records_no_edge_path() {
    let app = spawn_app().await;
    let hash = app.acme_with_thumb(&jpeg(64, 48, 2), 32).await;

    let preview = app
        .get(&format!("/preview/acme/thumb/{hash}.jpg"), ROOT_KEY)
        .await;
    let public = app.render(&format!("/thumb/{hash}.jpg")).await;
    let again = app
        .get(&format!("/preview/acme/thumb/{hash}.jpg"), ROOT_KEY)
        .await;
    let dynamic = app
        .get(
            &format!("/preview/acme/dynamic/resize-width-20/{hash}.png"),
            ROOT_KEY,
        )
        .await;

    assert_eq!(preview.status, 200, "{}", preview.text());
    assert_eq!(preview.header("x-darkroom-render").as_deref(), Some("miss"));
    assert_eq!(public.header("x-darkroom-render").as_deref(), Some("hit"));
    assert_eq!(again.header("x-darkroom-render").as_deref(), Some("hit"));
    assert_eq!(public.body, preview.body);
    assert_eq!(public.header("etag"), preview.header("etag"));
    assert_eq!(dynamic.status, 200, "{}", dynamic.text());
    // Only the public URL is a path an edge cache may hold.
    let report = app
        .delete("/organizations/acme/cache?dry_run=true", ROOT_KEY)
        .await
        .json();
    assert_eq!(report["renders"], 2, "{report}");
    let paths: Vec<&str> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(paths, [format!("/acme/thumb/{hash}.jpg")], "{report}");
}

#[actix_rt::test]
async fn a_protected_image_previews_with_the_key_but_stays_signed_on_the_render_listener() {
    let app = spawn_app().await;
    let hash = app.acme_with_thumb(&jpeg(64, 48, 3), 32).await;
    let a = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/options/protected"),
            ROOT_KEY,
            &serde_json::json!(true),
        )
        .await;
    assert!(a.status < 300, "{}", a.text());
    let location = a.header("location").unwrap();
    let protected = location.rsplit('/').next().unwrap().to_string();
    assert_ne!(protected, hash);

    let preview = app
        .get(&format!("/preview/acme/thumb/{protected}.jpg"), ROOT_KEY)
        .await;
    let public = app.render(&format!("/thumb/{protected}.jpg")).await;

    assert_eq!(preview.status, 200, "{}", preview.text());
    assert_eq!(public.status, 403, "{}", public.text());
}

#[actix_rt::test]
async fn a_preview_of_a_bad_render_path_is_a_json_4xx() {
    let app = spawn_app().await;
    let hash = app.acme_with_thumb(&jpeg(64, 48, 4), 32).await;

    let unknown_stack = app
        .get(&format!("/preview/acme/nosuch/{hash}.jpg"), ROOT_KEY)
        .await;
    let bad_option = app
        .get(
            &format!("/preview/acme/dynamic/resize-width-x/{hash}.jpg"),
            ROOT_KEY,
        )
        .await;
    let no_image = app.get("/preview/acme/thumb", ROOT_KEY).await;

    assert_eq!(unknown_stack.status, 404, "{}", unknown_stack.text());
    assert_eq!(bad_option.status, 400, "{}", bad_option.text());
    assert!((400..500).contains(&no_image.status), "{}", no_image.text());
    assert_eq!(bad_option.json()["error"]["code"], 400);
}

#[actix_rt::test]
async fn the_status_tells_readiness_version_render_queue_store_and_edge_queue() {
    let app = spawn_app().await;
    let hash = app.acme_with_thumb(&jpeg(64, 48, 5), 32).await;
    app.render(&format!("/thumb/{hash}.jpg")).await;
    let reader = app.create_key("acme", &["read"]).await;

    let anonymous = app.send("GET", "/status", None, &[], None).await;
    let a = app.get("/status", &reader).await;

    assert_eq!(anonymous.status, 403);
    assert_eq!(a.status, 200, "{}", a.text());
    let s = a.json();
    assert_eq!(s["ready"], true);
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        s["codecs"][0].as_str().unwrap().starts_with("decode:"),
        "{s}"
    );
    assert_eq!(s["render"]["queued"], 0);
    assert!(s["render"]["threads"].as_u64().unwrap() >= 1);
    assert_eq!(s["render_cache"]["renders"], 1);
    assert!(s["render_cache"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["edge"]["enabled"], false);
    assert_eq!(s["edge"]["pending"], 0);
    assert_eq!(s["edge"]["failed"], 0);
}

#[actix_rt::test]
async fn a_preview_of_the_original_needs_the_right_to_download_originals() {
    let app = spawn_app().await;
    let hash = app.acme_with_thumb(&jpeg(64, 48, 6), 32).await;
    app.stack(
        "original",
        serde_json::json!({"operations": [], "options": {"source_file": true}}),
    )
    .await;
    let images_only = app.create_key("acme", &["sourceimages:read"]).await;
    let reader = app.create_key("acme", &["read"]).await;
    let path = format!("/preview/acme/original/{hash}.jpg");

    let refused = app.get(&path, &images_only).await;
    let thumb = app
        .get(&format!("/preview/acme/thumb/{hash}.jpg"), &images_only)
        .await;
    let allowed = app.get(&path, &reader).await;

    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(thumb.status, 200, "{}", thumb.text());
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(allowed.body, jpeg(64, 48, 6));
}
