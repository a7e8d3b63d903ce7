//! Stats: billable storage counts distinct source bytes of live images; renders and traffic are
//! reported beside it.

use crate::helpers::*;
use serde_json::{json, Value};

fn today(v: &Value, series: &str) -> u64 {
    v[series][0]["value"]
        .as_u64()
        .unwrap_or_else(|| panic!("{series}: {v}"))
}

#[actix_rt::test]
async fn storage_is_billed_on_distinct_source_bytes_of_live_images_only() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let a = jpeg(60, 40, 1);
    let b = jpeg(50, 40, 2);
    let img = app.upload_one("acme", ROOT_KEY, "a.jpg", &a).await;
    let hash = img["hash"].as_str().unwrap();
    // A dynamic-metadata variant shares the blob: it must not count twice.
    app.json(
        "PUT",
        &format!("/sourceimages/acme/{hash}/meta/dynamic/version"),
        ROOT_KEY,
        &json!({"text": "2"}),
    )
    .await;
    let other = app.upload_one("acme", ROOT_KEY, "b.jpg", &b).await;
    let s = app.get("/stats/acme?from&to", ROOT_KEY).await;
    assert_eq!(s.status, 200, "{}", s.text());
    let s = s.json();
    assert_eq!(today(&s, "space_in_bytes"), (a.len() + b.len()) as u64);
    assert_eq!(today(&s, "number_of_files"), 3);
    assert_eq!(s["space_in_bytes"][0]["unit"], "Bytes");
    assert!(s["space_in_bytes"][0]["timestamp"]
        .as_str()
        .unwrap()
        .ends_with("T00:00:00+00:00"));
    assert_eq!(
        s["space_in_bytes"].as_array().unwrap().len(),
        30,
        "the last 30 days by default"
    );
    // Renders are reported, never billed.
    let r = app
        .send(
            "GET",
            &format!("{}/acme/dynamic/resize-width-20/{hash}.png", app.render),
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let dl = app
        .get(
            &format!(
                "/sourceimages/acme/{}/download",
                other["hash"].as_str().unwrap()
            ),
            ROOT_KEY,
        )
        .await;
    let s = app.get("/stats/acme", ROOT_KEY).await.json();
    assert_eq!(today(&s, "renders"), 1);
    assert_eq!(today(&s, "render_cache_bytes"), r.body.len() as u64);
    assert_eq!(today(&s, "space_in_bytes"), (a.len() + b.len()) as u64);
    assert_eq!(
        today(&s, "bytes_downloaded"),
        (r.body.len() + dl.body.len()) as u64
    );
    // Deleting stops the charge for bytes no live image refers to.
    app.delete(
        &format!("/sourceimages/acme/{}", other["hash"].as_str().unwrap()),
        ROOT_KEY,
    )
    .await;
    let s = app.get("/stats/acme", ROOT_KEY).await.json();
    assert_eq!(today(&s, "space_in_bytes"), a.len() as u64);
    assert_eq!(today(&s, "number_of_files"), 2);
}

#[actix_rt::test]
async fn stats_accept_date_ranges_and_refuse_bad_ones() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let s = app
        .get("/stats/acme?from=2024-01-01&to=2024-01-03", ROOT_KEY)
        .await
        .json();
    let days: Vec<&str> = s["number_of_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["timestamp"].as_str().unwrap())
        .collect();
    assert_eq!(
        days,
        [
            "2024-01-03T00:00:00+00:00",
            "2024-01-02T00:00:00+00:00",
            "2024-01-01T00:00:00+00:00"
        ]
    );
    assert_eq!(
        app.get("/stats/acme?from=yesterday", ROOT_KEY).await.status,
        400
    );
    assert_eq!(
        app.get("/stats/acme?from=2024-02-01&to=2024-01-01", ROOT_KEY)
            .await
            .status,
        400
    );
    let upload = app.create_key("acme", &["upload"]).await;
    assert_eq!(app.get("/stats/acme", &upload).await.status, 403);
}

#[actix_rt::test]
async fn billing_reports_the_months_units_to_billing_readers() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let photo = jpeg(64, 48, 9);
    app.upload_one("acme", ROOT_KEY, "a.jpg", &photo).await;
    let billing = app.create_key("acme", &["billing:read"]).await;
    let reader = app.create_key("acme", &["read"]).await;
    let a = app.get("/billing/acme", &billing).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let body = a.json();
    let months = body["acme"].as_object().unwrap();
    assert_eq!(months.len(), 1, "{body}");
    let (month, figures) = months.iter().next().unwrap();
    assert_eq!(month.len(), 7, "YYYY-MM: {month}");
    let storage = &figures["combined"]["storage"]["total"];
    assert_eq!(storage["unit"], "GB");
    assert!(
        storage["units_consumed"].as_f64().unwrap() > 0.0,
        "{figures}"
    );
    assert_eq!(figures["organizations"]["acme"], figures["combined"]);
    assert_eq!(figures["combined"]["total"]["price_in_chf"], 0);
    // Whole months between the two dates.
    let a = app
        .get("/billing/acme?from=2024-01-15&to=2024-03-02", &billing)
        .await;
    let body = a.json();
    let keys: Vec<&String> = body["acme"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["2024-01", "2024-02", "2024-03"]);
    // billing:read sees billing and nothing else; read does not see billing.
    assert_eq!(app.get("/billing/acme", &reader).await.status, 403);
    assert_eq!(app.get("/stats/acme", &billing).await.status, 403);
    assert_eq!(app.get("/sourceimages/acme", &billing).await.status, 403);
    assert_eq!(
        app.get("/billing/acme?from=2024-02-01&to=2024-01-01", &billing)
            .await
            .status,
        400
    );
}
