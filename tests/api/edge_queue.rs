//! The edge queue against a recording stand-in for the edge: which requests an invalidation
//! sends, in which form, and that they survive an edge outage and a restart. (The real nginx
//! in front is exercised by `edge.rs`.)

use crate::helpers::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use darkroom::config::EdgeMode;
use serde_json::json;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the edge received.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    host: String,
    refresh: Option<String>,
}

/// A stand-in edge that records every request and answers `status`.
struct FakeEdge {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: actix_web::dev::ServerHandle,
}

impl FakeEdge {
    async fn start_on(listener: TcpListener, status: u16) -> FakeEdge {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let server = HttpServer::new(move || {
            let log = log.clone();
            App::new().default_service(web::to(move |req: HttpRequest| {
                let log = log.clone();
                async move {
                    let h = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    log.lock().unwrap().push(Seen {
                        method: req.method().to_string(),
                        path: req
                            .uri()
                            .path_and_query()
                            .map_or(String::new(), |p| p.to_string()),
                        host: h("host").unwrap_or_default(),
                        refresh: h("x-darkroom-refresh"),
                    });
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .finish()
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        FakeEdge {
            url,
            seen,
            server: handle,
        }
    }

    async fn start(status: u16) -> FakeEdge {
        FakeEdge::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), status).await
    }

    /// Waits up to `within` for `n` requests and returns them all.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Seen> {
        let start = Instant::now();
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if seen.len() >= n || start.elapsed() > within {
                return seen;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.server.stop(false).await;
    }
}

async fn setup(app: &TestApp) -> String {
    app.acme_with_thumb(&jpeg(120, 90, 1), 40).await
}

/// Waits up to 5 s for the edge queue to be empty.
async fn drained(app: &TestApp, why: &str) {
    let start = Instant::now();
    while app.services.store.edge_pending() > 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "{why}");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Fetches a render URL with an explicit Host, as nginx forwards it.
async fn render_as(app: &TestApp, host: &str, path: &str) -> u16 {
    app.client
        .get(format!("{}{path}", app.render))
        .insert_header(("Host", host))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[actix_rt::test]
async fn invalidations_refresh_every_served_path_with_its_host_and_restore_refreshes_again() {
    let edge = FakeEdge::start(200).await;
    let url = edge.url.clone();
    let app = spawn_app_with(move |c| c.edge.url = url).await;
    let hash = setup(&app).await;
    let thumb = format!("/acme/thumb/{hash}.jpg");
    let dynamic = format!("/acme/dynamic/resize-width-10/{hash}.png?x=1");
    assert_eq!(render_as(&app, "img.example.com", &thumb).await, 200);
    assert_eq!(render_as(&app, "img.example.com", &dynamic).await, 200);
    assert_eq!(render_as(&app, "cdn.example.com", &thumb).await, 200);

    let started = Instant::now();
    let del = app
        .delete(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
        .await;
    assert_eq!(del.status, 204);
    let mut seen = edge.wait_for(3, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the edge hears of a delete at once"
    );
    seen.sort_by(|a, b| (&a.path, &a.host).cmp(&(&b.path, &b.host)));
    let refresh = |path: &str, host: &str| Seen {
        method: "GET".into(),
        path: path.into(),
        host: host.into(),
        refresh: Some("1".into()),
    };
    assert_eq!(
        seen,
        [
            refresh(&dynamic, "img.example.com"),
            refresh(&thumb, "cdn.example.com"),
            refresh(&thumb, "img.example.com"),
        ]
    );
    // The stand-in records a request before it answers; the job leaves once the answer is in.
    drained(&app, "answered jobs leave").await;

    let restored = app
        .send(
            "POST",
            &format!("/sourceimages/acme/{hash}/restore"),
            Some(ROOT_KEY),
            &[],
            None,
        )
        .await;
    assert_eq!(restored.status, 200, "{}", restored.text());
    let seen = edge.wait_for(6, Duration::from_secs(5)).await;
    assert_eq!(
        seen.len(),
        6,
        "a restore refreshes the same paths: {seen:#?}"
    );
    // Nothing is kept once the restore has queued them.
    let again = app
        .send(
            "POST",
            &format!("/sourceimages/acme/{hash}/restore"),
            Some(ROOT_KEY),
            &[],
            None,
        )
        .await;
    assert_eq!(again.status, 200);
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(edge.seen.lock().unwrap().len(), 6);
    edge.stop().await;
}

#[actix_rt::test]
async fn purge_mode_sends_purge_requests() {
    let edge = FakeEdge::start(404).await;
    let url = edge.url.clone();
    let app = spawn_app_with(move |c| {
        c.edge.url = url;
        c.edge.mode = EdgeMode::Purge;
    })
    .await;
    let hash = setup(&app).await;
    let thumb = format!("/acme/thumb/{hash}.jpg");
    assert_eq!(render_as(&app, "img.example.com", &thumb).await, 200);
    let a = app.delete("/stacks/acme/thumb/cache", ROOT_KEY).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let seen = edge.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(
        seen,
        [Seen {
            method: "PURGE".into(),
            path: thumb,
            host: "img.example.com".into(),
            refresh: None,
        }]
    );
    drained(&app, "404 (nothing cached) counts as done").await;
    edge.stop().await;
}

#[actix_rt::test]
async fn queued_refreshes_survive_an_edge_outage_and_a_restart() {
    // The edge's address is reserved but nothing listens there yet.
    let reserved = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.edge.url = url.clone();
    config.edge.timeout_secs = 1;
    let app = start(config.clone()).await;
    let hash = setup(&app).await;
    let thumb = format!("/acme/thumb/{hash}.jpg");
    assert_eq!(render_as(&app, "img.example.com", &thumb).await, 200);
    let a = app
        .json(
            "PUT",
            "/stacks/acme/thumb?overwrite=true",
            ROOT_KEY,
            &json!([{"name": "resize", "options": {"width": 30}}]),
        )
        .await;
    assert!(a.status < 300, "{}", a.text());
    // The first attempt fails (connection refused) and the job waits for its retry.
    let start_wait = Instant::now();
    while app
        .services
        .edge
        .retried
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            start_wait.elapsed() < Duration::from_secs(5),
            "the failed attempt is counted"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.services.store.edge_pending(), 1);
    app.stop().await;

    // The edge comes back, and so does the appliance: the queued refresh is delivered.
    let edge = FakeEdge::start_on(TcpListener::bind(addr).unwrap(), 200).await;
    let app = start(config).await;
    let seen = edge.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(seen.len(), 1, "delivered after the restart");
    assert_eq!(seen[0].path, thumb);
    assert_eq!(seen[0].host, "img.example.com");
    drained(&app, "the delivered job leaves").await;
    drop(app);
    edge.stop().await;
    drop(dir);
}

#[actix_rt::test]
async fn without_an_edge_nothing_is_queued_and_a_dry_run_queues_nothing() {
    let edge = FakeEdge::start(200).await;
    let url = edge.url.clone();
    let app = spawn_app_with(move |c| c.edge.url = url).await;
    let hash = setup(&app).await;
    assert_eq!(
        render_as(&app, "img.example.com", &format!("/acme/thumb/{hash}.jpg")).await,
        200
    );
    let dry = app
        .delete("/organizations/acme/cache?dry_run=true", ROOT_KEY)
        .await;
    assert_eq!(dry.status, 200);
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert!(
        edge.seen.lock().unwrap().is_empty(),
        "a dry run sends nothing"
    );
    edge.stop().await;

    let plain = spawn_app().await;
    let hash = setup(&plain).await;
    assert_eq!(
        plain.render(&format!("/thumb/{hash}.jpg")).await.status,
        200
    );
    assert_eq!(
        plain
            .delete(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
            .await
            .status,
        204
    );
    assert_eq!(plain.services.store.edge_pending(), 0);
}

#[actix_rt::test]
async fn re_pointing_or_deleting_an_alias_refreshes_the_urls_it_was_served_under() {
    let edge = FakeEdge::start(200).await;
    let url = edge.url.clone();
    let app = spawn_app_with(move |c| c.edge.url = url).await;
    let first = setup(&app).await;
    let second = app
        .upload_one("acme", ROOT_KEY, "second.jpg", &jpeg(60, 80, 2))
        .await["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let put = |hash: &str, overwrite: bool| {
        let query = if overwrite { "?overwrite=true" } else { "" };
        let body = serde_json::json!({ "hash": hash });
        let path = format!("/sourceimages/acme/alias/hero{query}");
        let app = &app;
        async move { app.json("PUT", &path, ROOT_KEY, &body).await.status }
    };
    assert_eq!(put(&first, false).await, 201);
    let thumb = "/acme/thumb/-_hero_-.jpg";
    let dynamic = "/acme/dynamic/resize-width-10/-_hero_-.png";
    assert_eq!(render_as(&app, "img.example.com", thumb).await, 200);
    assert_eq!(render_as(&app, "cdn.example.com", dynamic).await, 200);

    assert_eq!(put(&second, true).await, 200);
    let mut seen = edge.wait_for(2, Duration::from_secs(5)).await;
    seen.sort_by(|a, b| a.path.cmp(&b.path));
    let refresh = |path: &str, host: &str| Seen {
        method: "GET".into(),
        path: path.into(),
        host: host.into(),
        refresh: Some("1".into()),
    };
    assert_eq!(
        seen,
        [
            refresh(dynamic, "cdn.example.com"),
            refresh(thumb, "img.example.com"),
        ]
    );
    drained(&app, "answered jobs leave").await;

    // The stand-in does not fetch the URL as nginx would; asked again, it is known again,
    // and deleting the alias refreshes it (the edge then holds the short-lived 404).
    assert_eq!(render_as(&app, "img.example.com", thumb).await, 200);
    assert_eq!(
        app.delete("/sourceimages/acme/alias/hero", ROOT_KEY)
            .await
            .status,
        204
    );
    let seen = edge.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(seen.get(2), Some(&refresh(thumb, "img.example.com")));
    drained(&app, "answered jobs leave").await;
    assert_eq!(render_as(&app, "img.example.com", thumb).await, 404);
    edge.stop().await;
}
