//! Mezzanines: the renders of one image that decode its JPEG source at the same reduced
//! scale share one decode, kept in the render store. A URL's bytes never depend on whether a
//! mezzanine existed, was evicted or is switched off.

use crate::helpers::*;
use darkroom::service::mezzanine;
use std::sync::atomic::Ordering;

/// Widths of a 1600×1200 source that all decode at 1/8 (200×150).
const WIDTHS: [u32; 6] = [40, 50, 60, 70, 80, 90];

async fn setup(app: &TestApp) -> String {
    app.create_org("acme").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "photo.jpg", &jpeg(1600, 1200, 7))
        .await;
    img["hash"].as_str().unwrap().to_string()
}

fn url(hash: &str, width: u32, format: &str) -> String {
    format!("/dynamic/resize-width-{width}/{hash}.{format}")
}

fn decodes(app: &TestApp) -> u64 {
    app.services
        .renders
        .mezzanine_decodes
        .load(Ordering::Relaxed)
}

fn mezzanine_key(app: &TestApp, hash: &str) -> [u8; 32] {
    let rec = app.services.store.get_image("acme", hash).unwrap().unwrap();
    mezzanine::key(&rec, 8)
}

/// Renders every URL one after the other: (body, ETag) of each.
async fn render_all(app: &TestApp, urls: &[String]) -> Vec<(Vec<u8>, Option<String>)> {
    let mut out = Vec::new();
    for u in urls {
        let a = app.render(u).await;
        assert_eq!(a.status, 200, "{u}: {}", a.text());
        out.push((a.body.to_vec(), a.header("etag")));
    }
    out
}

#[actix_rt::test]
async fn a_url_gives_the_same_bytes_with_without_and_after_evicting_its_mezzanine() {
    let urls: Vec<String> = ["jpg", "webp", "png"]
        .iter()
        .flat_map(|f| [url("{h}", 90, f), url("{h}", 50, f)])
        .collect();
    let with = spawn_app().await;
    let hash = setup(&with).await;
    let urls: Vec<String> = urls.iter().map(|u| u.replace("{h}", &hash)).collect();
    // The first render decodes and keeps the mezzanine, the others start from the stored one.
    let first = render_all(&with, &urls).await;
    with.mezzanines_stored().await;
    assert_eq!(decodes(&with), 1);
    assert_eq!(
        with.services
            .renders
            .mezzanine_reads
            .load(Ordering::Relaxed),
        urls.len() as u64 - 1
    );

    // Evicted (with the renders): rebuilt identically, in the other order.
    let purged = with
        .delete(&format!("/sourceimages/acme/{hash}/cache"), ROOT_KEY)
        .await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    let mut reversed = urls.clone();
    reversed.reverse();
    let mut again = render_all(&with, &reversed).await;
    with.mezzanines_stored().await;
    again.reverse();
    assert_eq!(decodes(&with), 2);
    assert!(
        first == again,
        "the same bytes after evicting the mezzanine"
    );

    // Only the mezzanine evicted: renders of new URLs match those made from it.
    let key = mezzanine_key(&with, &hash);
    assert!(with.services.store.remove_render(&key).unwrap() > 0);
    // This node still has its pixels in memory; without them it builds it again.
    mezzanine::forget_all(&with.services.renders);
    let more: Vec<String> = [60, 70].iter().map(|w| url(&hash, *w, "jpg")).collect();
    let from_fresh = render_all(&with, &more).await;
    assert_eq!(decodes(&with), 3);

    let without = spawn_app_with(|c| c.render.mezzanine = false).await;
    assert_eq!(setup(&without).await, hash);
    assert!(
        first == render_all(&without, &urls).await,
        "the same bytes without mezzanines"
    );
    assert!(from_fresh == render_all(&without, &more).await);
    assert_eq!(decodes(&without), 0);
    assert!(without.services.store.get_render(&key).unwrap().is_none());
}

#[actix_rt::test]
async fn a_burst_of_different_widths_of_a_new_image_decodes_once() {
    let app = spawn_app_with(|c| {
        c.metrics.enabled = true;
        c.metrics.token = "scrape".into();
    })
    .await;
    let hash = setup(&app).await;
    let urls: Vec<String> = WIDTHS
        .iter()
        .flat_map(|w| [url(&hash, *w, "jpg"), url(&hash, *w, "webp")])
        .collect();

    let answers = futures_util::future::join_all(urls.iter().map(|u| app.render(u))).await;

    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.text());
    }
    assert_eq!(decodes(&app), 1, "one decode for {} renders", urls.len());
    let metrics = app
        .send(
            "GET",
            "/metrics",
            None,
            &[("Authorization", "Bearer scrape")],
            None,
        )
        .await;
    assert!(
        metrics
            .text()
            .contains("darkroom_mezzanine_decodes_total 1\n"),
        "{}",
        metrics.text()
    );
}

#[actix_rt::test]
async fn deleting_an_image_removes_its_mezzanines() {
    let app = spawn_app().await;
    let hash = setup(&app).await;
    assert_eq!(app.render(&url(&hash, 90, "jpg")).await.status, 200);
    app.mezzanines_stored().await;
    let key = mezzanine_key(&app, &hash);
    assert!(app.services.store.get_render(&key).unwrap().is_some());

    let deleted = app
        .delete(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
        .await;

    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert!(app.services.store.get_render(&key).unwrap().is_none());
    assert_eq!(app.services.store.render_count(), 0);
}

#[actix_rt::test]
async fn a_mezzanine_counts_in_the_render_store_budget() {
    let app = spawn_app_with(|c| c.render_cache.max_bytes = u64::MAX / 2).await;
    let hash = setup(&app).await;
    let a = app.render(&url(&hash, 90, "jpg")).await;
    assert_eq!(a.status, 200);
    app.mezzanines_stored().await;
    let store = &app.services.store;
    let stored = store
        .get_render(&mezzanine_key(&app, &hash))
        .unwrap()
        .unwrap();
    // The source decoded at 1/8, 200×150, losslessly compressed.
    let kept = darkroom::render::mezzanine::parse(stored.bytes()).unwrap();
    assert_eq!((kept.image.width(), kept.image.height()), (200, 150));

    assert_eq!(
        store.render_bytes().unwrap(),
        a.body.len() as u64 + stored.bytes().len() as u64
    );
    let evicted = store.evict_renders(a.body.len() as u64, 100).unwrap();
    assert!(evicted.entries() >= 1 && evicted.store_bytes() >= stored.bytes().len() as u64);
    assert!(store.render_bytes().unwrap() <= a.body.len() as u64);
}

#[actix_rt::test]
async fn a_small_source_renders_without_a_mezzanine() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "small.jpg", &jpeg(400, 300, 7))
        .await;
    let hash = img["hash"].as_str().unwrap();

    assert_eq!(app.render(&url(hash, 40, "jpg")).await.status, 200);

    assert_eq!(decodes(&app), 0);
    assert_eq!(app.services.store.render_count(), 1);
}

#[actix_rt::test]
async fn purges_stats_and_metrics_count_mezzanines_apart_from_renders() {
    let app = spawn_app_with(|c| {
        c.metrics.enabled = true;
        c.metrics.token = "scrape".into();
    })
    .await;
    let hash = setup(&app).await;
    let urls = [url(&hash, 90, "jpg"), url(&hash, 50, "jpg")];
    let answers = render_all(&app, &urls).await;
    app.mezzanines_stored().await;
    let render_bytes: u64 = answers.iter().map(|(b, _)| b.len() as u64).sum();
    let mezzanine = app
        .services
        .store
        .get_render(&mezzanine_key(&app, &hash))
        .unwrap()
        .unwrap()
        .size();

    let usage = app.services.store.org_usage("acme").unwrap();
    assert_eq!((usage.renders, usage.render_bytes), (2, render_bytes));
    assert_eq!((usage.mezzanines, usage.mezzanine_bytes), (1, mezzanine));
    assert_eq!(
        app.services.store.render_bytes().unwrap(),
        render_bytes + mezzanine,
        "both in the budget"
    );
    let metrics = app
        .send(
            "GET",
            "/metrics",
            None,
            &[("Authorization", "Bearer scrape")],
            None,
        )
        .await
        .text();
    for line in [
        "darkroom_renders_stored 2\n".to_string(),
        format!("darkroom_render_bytes_stored {render_bytes}\n"),
        "darkroom_mezzanines_stored 1\n".to_string(),
        format!("darkroom_mezzanine_bytes_stored {mezzanine}\n"),
    ] {
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    let stats = app.get("/stats/acme", ROOT_KEY).await.json();
    // Today comes first.
    assert_eq!(stats["renders"][0]["value"], 2, "{stats}");
    assert_eq!(stats["render_cache_bytes"][0]["value"], render_bytes);

    let purged = app.delete("/organizations/acme/cache", ROOT_KEY).await;

    assert_eq!(purged.status, 200, "{}", purged.text());
    let purged = purged.json();
    assert_eq!(purged["renders"], 2, "{purged}");
    assert_eq!(purged["bytes"], render_bytes);
    let usage = app.services.store.org_usage("acme").unwrap();
    assert_eq!(
        (usage.renders, usage.mezzanines, usage.mezzanine_bytes),
        (0, 0, 0)
    );
    assert_eq!(
        app.services.store.render_count(),
        0,
        "the mezzanine went too"
    );
}

/// The names of the node-local copies an appliance keeps of bucket objects.
fn local_copies(app: &TestApp) -> Vec<String> {
    match std::fs::read_dir(app.data.join("cache").join("objects")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn mezzanine_reads(app: &TestApp) -> u64 {
    app.services.renders.mezzanine_reads.load(Ordering::Relaxed)
}

/// Two nodes over one database and one bucket: each keeps local copies of the source and of
/// the large mezzanines it reads, renders from them after the shared mezzanine is gone, and
/// gives the same bytes as a node that keeps no copies and an appliance without mezzanines.
#[actix_rt::test]
async fn a_node_renders_from_its_local_copies_with_the_same_bytes() {
    let a = spawn_app().await;
    let shared = a.services.config.storage.clone();
    if shared.database_url.is_empty() || !a.bytes_in_object_storage() {
        eprintln!("skipped: needs DARKROOM_TEST_DATABASE_URL and DARKROOM_TEST_S3_*");
        return;
    }
    let b = spawn_app_with(|c| {
        c.storage.database_url = shared.database_url.clone();
        c.storage.s3_prefix = shared.s3_prefix.clone();
    })
    .await;
    let hash = setup(&a).await;
    // 1600×1200 to these widths decodes at 1/2: an 800×600 mezzanine, stored in the bucket.
    let urls: Vec<String> = [700, 650, 600, 500]
        .iter()
        .map(|w| url(&hash, *w, "jpg"))
        .collect();
    let key = hex::encode(mezzanine::key(
        &a.services.store.get_image("acme", &hash).unwrap().unwrap(),
        2,
    ));
    let blob = a
        .services
        .store
        .get_image("acme", &hash)
        .unwrap()
        .unwrap()
        .blob;

    let first = render_all(&a, &urls[..1]).await;
    a.mezzanines_stored().await;
    assert_eq!(decodes(&a), 1);
    let on_a = local_copies(&a);
    assert!(on_a.contains(&format!("m-{key}")), "{on_a:?}");
    assert!(on_a.contains(&format!("b-{blob}")), "{on_a:?}");

    // B reads the mezzanine A stored, from the bucket, and keeps a copy of it.
    let second = render_all(&b, &urls[1..2]).await;
    assert_eq!((decodes(&b), mezzanine_reads(&b)), (0, 1));
    assert!(local_copies(&b).contains(&format!("m-{key}")));

    // Purged through A: the shared mezzanine and A's copy are gone, B still has its own.
    let purged = a
        .delete(&format!("/sourceimages/acme/{hash}/cache"), ROOT_KEY)
        .await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert!(!local_copies(&a).contains(&format!("m-{key}")));
    let third = render_all(&b, &urls[2..]).await;
    assert_eq!(
        (decodes(&b), mezzanine_reads(&b)),
        (0, 3),
        "B rendered both from its copy"
    );
    // A, without a copy, decodes again (B's renders of those URLs are shared hits).
    let fresh = render_all(&a, &[url(&hash, 550, "jpg")]).await;
    a.mezzanines_stored().await;
    assert_eq!(decodes(&a), 2, "A decoded again");

    let plain = spawn_app_with(|c| {
        c.render.mezzanine = false;
        c.storage.object_cache_mb = 0;
    })
    .await;
    assert_eq!(setup(&plain).await, hash);
    let all: Vec<_> = first
        .into_iter()
        .chain(second)
        .chain(third)
        .chain(fresh)
        .collect();
    let mut urls = urls;
    urls.push(url(&hash, 550, "jpg"));
    assert!(
        all == render_all(&plain, &urls).await,
        "the same bytes without mezzanines and copies"
    );
    assert!(local_copies(&plain).is_empty());
}

fn full_size_decodes(app: &TestApp) -> u64 {
    app.services
        .renders
        .full_size_decodes
        .load(Ordering::Relaxed)
}

#[actix_rt::test]
async fn renders_at_full_size_share_one_decode_with_the_same_bytes() {
    // More than half of 1600×1200: each of these decodes the source at full size.
    let paths = [
        "resize-width-900",
        "resize-width-1000--options-dpr-1.5",
        "resize-width-500--options-dpr-2",
        "crop-width-700-height-500",
    ];
    let with = spawn_app().await;
    let hash = setup(&with).await;
    let urls: Vec<String> = paths
        .iter()
        .flat_map(|p| ["jpg", "webp"].map(|f| format!("/dynamic/{p}/{hash}.{f}")))
        .collect();

    let first = render_all(&with, &urls).await;
    assert_eq!(
        full_size_decodes(&with),
        1,
        "one decode for {} renders",
        urls.len()
    );
    assert_eq!(decodes(&with), 0, "nothing stored at full size");

    // A burst of new URLs of the same image finds the decode still in memory.
    let more: Vec<String> = [1100, 1300, 1500]
        .iter()
        .map(|w| format!("/dynamic/resize-width-{w}/{hash}.jpg"))
        .collect();
    let answers = futures_util::future::join_all(more.iter().map(|u| with.render(u))).await;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.text());
    }
    assert_eq!(full_size_decodes(&with), 1);

    let without = spawn_app_with(|c| c.render.mezzanine = false).await;
    assert_eq!(setup(&without).await, hash);
    assert!(
        first == render_all(&without, &urls).await,
        "the same bytes without shared decodes"
    );
    let alone = render_all(&without, &more).await;
    let shared: Vec<(Vec<u8>, Option<String>)> = answers
        .iter()
        .map(|a| (a.body.to_vec(), a.header("etag")))
        .collect();
    assert!(shared == alone, "the same bytes from the shared decode");
    assert_eq!(full_size_decodes(&without), 0);
}
