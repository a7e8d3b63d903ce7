//! The render store budget (`render_cache.max_bytes`): least recently used renders are evicted
//! first, access times are written in batches, and an evicted render comes back
//! byte-identical.

use crate::helpers::*;
use darkroom::service::renders::maintain_cache;
use std::time::{Duration, Instant};

async fn setup(app: &TestApp) -> String {
    app.acme_with_thumb(&jpeg(160, 120, 3), 40).await
}

#[actix_rt::test]
async fn least_recently_used_renders_go_first_and_come_back_identical() {
    // A budget too large to act on its own: the test drives the eviction itself.
    let app = spawn_app_with(|c| c.render_cache.max_bytes = u64::MAX / 2).await;
    let hash = setup(&app).await;
    let urls: Vec<String> = [10, 20, 30]
        .iter()
        .map(|w| format!("/dynamic/resize-width-{w}/{hash}.png"))
        .collect();
    let mut first = Vec::new();
    for u in &urls {
        let a = app.render(u).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-darkroom-render").as_deref(), Some("miss"));
        first.push(a);
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    // The oldest render is served again: it becomes the most recently used once access
    // times are written.
    assert_eq!(
        app.render(&urls[0])
            .await
            .header("x-darkroom-render")
            .as_deref(),
        Some("hit")
    );
    maintain_cache(&app.services).unwrap();
    let store = &app.services.store;
    let total = store.render_bytes().unwrap();
    assert_eq!(
        total,
        first.iter().map(|a| a.body.len() as u64).sum::<u64>()
    );

    // One byte too many: the least recently used render (width 20) goes, and only it.
    let evicted = store.evict_renders(total - 1, 100).unwrap();
    assert_eq!(evicted.renders, 1);
    assert_eq!(evicted.bytes, first[1].body.len() as u64);
    assert_eq!(store.render_count(), 2);
    assert_eq!(
        store.edge_pending(),
        0,
        "an eviction is not an invalidation"
    );
    assert_eq!(
        app.render(&urls[0])
            .await
            .header("x-darkroom-render")
            .as_deref(),
        Some("hit")
    );
    assert_eq!(
        app.render(&urls[2])
            .await
            .header("x-darkroom-render")
            .as_deref(),
        Some("hit")
    );
    let again = app.render(&urls[1]).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-darkroom-render").as_deref(), Some("miss"));
    assert_eq!(again.body, first[1].body, "byte-identical after eviction");
    assert_eq!(again.header("etag"), first[1].header("etag"));
}

#[actix_rt::test]
async fn the_budget_is_enforced_in_the_background() {
    let app = spawn_app_with(|c| c.render_cache.max_bytes = 1).await;
    let hash = setup(&app).await;
    let url = format!("/thumb/{hash}.jpg");
    let before = app.render(&url).await;
    assert_eq!(before.status, 200);
    assert_eq!(app.services.store.render_count(), 1);
    let start = Instant::now();
    while app.services.store.render_count() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the maintenance pass evicts past the budget"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let after = app.render(&url).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.header("x-darkroom-render").as_deref(), Some("miss"));
    assert_eq!(after.body, before.body);
    let stats = app.get("/stats/acme", ROOT_KEY).await;
    assert_eq!(stats.status, 200);
}

#[actix_rt::test]
async fn without_a_budget_nothing_is_evicted() {
    let app = spawn_app().await;
    let hash = setup(&app).await;
    assert_eq!(app.render(&format!("/thumb/{hash}.jpg")).await.status, 200);
    let evicted = maintain_cache(&app.services).unwrap();
    assert_eq!(evicted.renders, 0);
    assert_eq!(app.services.store.render_count(), 1);
}

/// Renders made by an earlier renderer (which may encode the same pipeline to other bytes)
/// are removed at start-up and their URLs queued for the edge; the URL renders again.
#[actix_rt::test]
async fn renders_of_an_earlier_renderer_are_retired_at_start() {
    let app = spawn_app_with(|c| {
        // Nothing listens there: the queued refreshes stay visible.
        c.edge.url = "http://127.0.0.1:9".into();
        c.edge.max_attempts = 1_000;
    })
    .await;
    let hash = app.acme_with_thumb(&jpeg(120, 90, 1), 40).await;
    let path = format!("/thumb/{hash}.jpg");
    let first = app.render(&path).await;
    assert_eq!(first.status, 200);
    assert_eq!(app.stored_renders().await, 1);
    assert_eq!(
        app.services.store.render_epoch().unwrap(),
        darkroom::service::renders::RENDER_EPOCH
    );
    app.services.store.set_render_epoch(0).unwrap();
    let config = {
        let mut c = test_config(&app.data);
        c.edge = app.services.config.edge.clone();
        c
    };
    let dir = app.stop().await;

    let again = start(config).await;
    assert_eq!(again.stored_renders().await, 0);
    assert!(again.services.store.edge_pending() >= 1);
    let second = again.render(&path).await;
    assert_eq!(second.status, 200);
    assert_eq!(
        second.body, first.body,
        "this renderer makes the same bytes"
    );
    drop(again.stop().await);
    drop(dir);
}

/// Two nodes over one PostgreSQL: what node B read of an image and of its organization (and
/// keeps in memory) gives way at once to what node A changed.
#[actix_rt::test]
async fn a_node_sees_another_nodes_image_and_organization_changes_at_once() {
    let a = spawn_app().await;
    let database_url = a.services.config.storage.database_url.clone();
    if database_url.is_empty() {
        eprintln!("skipped: needs DARKROOM_TEST_DATABASE_URL");
        return;
    }
    let prefix = a.services.config.storage.s3_prefix.clone();
    let b = spawn_app_with(|c| {
        c.storage.database_url = database_url;
        c.storage.s3_prefix = prefix;
    })
    .await;
    a.create_org("acme").await;
    let hash = a
        .upload_one("acme", ROOT_KEY, "p.jpg", &jpeg(64, 48, 5))
        .await["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let image = format!("/sourceimages/acme/{hash}");
    let render = |w: u32| format!("/dynamic/resize-width-{w}/{hash}.jpg");
    // B reads both records, twice (the second time from memory).
    for _ in 0..2 {
        assert_eq!(b.get(&image, ROOT_KEY).await.status, 200);
        assert_eq!(b.render(&render(10)).await.status, 200);
    }

    let set = a
        .json(
            "PATCH",
            &format!("{image}/meta/user"),
            ROOT_KEY,
            &serde_json::json!({"caption": "new"}),
        )
        .await;
    assert!(set.status < 300, "{}", set.text());
    assert_eq!(
        b.get(&image, ROOT_KEY).await.json()["user_metadata"]["caption"],
        "new"
    );

    let protect = a
        .json(
            "PUT",
            "/organizations/acme/options/protect_dynamic_stack",
            ROOT_KEY,
            &serde_json::json!(true),
        )
        .await;
    assert_eq!(protect.status, 200, "{}", protect.text());
    assert_eq!(
        b.render(&render(11)).await.status,
        403,
        "B knows the organization protects its dynamic renders"
    );
}
