//! `GET /metrics`: off by default, behind a bearer token when one is set, and valid
//! Prometheus text format (checked with a parser of that format) that counts what happened.

use crate::helpers::*;
use prometheus_parse::{Sample, Scrape, Value};

const TOKEN: &str = "scrape-token-42";

async fn scrape(app: &TestApp) -> Scrape {
    let a = app
        .send(
            "GET",
            "/metrics",
            None,
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = a.text();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text format ({e}):\n{text}"))
}

fn find<'a>(s: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> &'a Sample {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {metric} {labels:?}"))
}

fn number(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match &find(s, metric, labels).value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{metric}: not a number: {other:?}"),
    }
}

fn histogram_count(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match &find(s, metric, labels).value {
        Value::Histogram(buckets) => {
            let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
            assert!(
                counts.windows(2).all(|w| w[0] <= w[1]),
                "buckets are cumulative"
            );
            counts.last().copied().unwrap_or(0.0)
        }
        other => panic!("{metric}: not a histogram: {other:?}"),
    }
}

#[actix_rt::test]
async fn metrics_are_off_unless_enabled() {
    let app = spawn_app().await;
    let a = app.send("GET", "/metrics", None, &[], None).await;
    assert_eq!(a.status, 404);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("metrics.enabled"));
}

#[actix_rt::test]
async fn metrics_need_the_token_and_count_requests_renders_and_storage() {
    let app = spawn_app_with(|c| {
        c.metrics.enabled = true;
        c.metrics.token = TOKEN.into();
    })
    .await;
    assert_eq!(
        app.send("GET", "/metrics", None, &[], None).await.status,
        401
    );
    let wrong = app
        .send(
            "GET",
            "/metrics",
            None,
            &[("Authorization", "Bearer nope")],
            None,
        )
        .await;
    assert_eq!(wrong.status, 401);

    let bytes = jpeg(200, 100, 4);
    let hash = app.acme_with_thumb(&bytes, 50).await;
    let first = app.render(&format!("/thumb/{hash}.jpg")).await;
    assert_eq!(first.status, 200);
    assert_eq!(app.render(&format!("/thumb/{hash}.jpg")).await.status, 200);
    assert_eq!(app.render(&format!("/nope/{hash}.jpg")).await.status, 404);

    let s = scrape(&app).await;
    assert!(
        number(
            &s,
            "darkroom_http_requests_total",
            &[
                ("listener", "api"),
                ("route", "/sourceimages/:org"),
                ("status", "200")
            ]
        ) >= 1.0
    );
    assert_eq!(
        number(
            &s,
            "darkroom_http_requests_total",
            &[("listener", "render"), ("status", "200")]
        ),
        2.0
    );
    assert_eq!(
        number(
            &s,
            "darkroom_http_requests_total",
            &[("listener", "render"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        histogram_count(
            &s,
            "darkroom_render_duration_seconds",
            &[("served", "miss")]
        ),
        1.0
    );
    assert_eq!(
        histogram_count(&s, "darkroom_render_duration_seconds", &[("served", "hit")]),
        1.0
    );
    assert_eq!(
        histogram_count(
            &s,
            "darkroom_render_duration_seconds",
            &[("served", "error")]
        ),
        1.0
    );
    assert_eq!(number(&s, "darkroom_render_cache_hits_total", &[]), 1.0);
    assert_eq!(number(&s, "darkroom_render_cache_misses_total", &[]), 1.0);
    assert_eq!(number(&s, "darkroom_renders_stored", &[]), 1.0);
    assert_eq!(
        number(&s, "darkroom_render_bytes_stored", &[]),
        first.body.len() as f64
    );
    assert_eq!(number(&s, "darkroom_render_queue_depth", &[]), 0.0);
    assert_eq!(number(&s, "darkroom_edge_pending", &[]), 0.0);
    assert_eq!(number(&s, "darkroom_edge_failed_total", &[]), 0.0);
    assert_eq!(number(&s, "darkroom_gc_runs_total", &[]), 0.0);
    assert_eq!(
        number(&s, "darkroom_source_bytes", &[("organization", "acme")]),
        bytes.len() as f64
    );
    assert_eq!(
        number(&s, "darkroom_source_images", &[("organization", "acme")]),
        1.0
    );
    // No key or signature ends up in a label.
    assert!(!s
        .samples
        .iter()
        .any(|x| x.labels.values().any(|v| v.contains(ROOT_KEY))));
}
