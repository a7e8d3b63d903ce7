//! The embedded dashboard: its files come from the binary with their types, a strict
//! Content-Security-Policy and an ETag the client can revalidate; unknown names are the JSON
//! 404; and the page refers to exactly the files that are served.

use crate::helpers::*;
use std::collections::BTreeSet;

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

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
