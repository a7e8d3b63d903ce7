//! Public render URLs against an adversarial client: images named in operation options keep
//! their protection, absurd sizes and memory are refused before decoding, operation lists are
//! bounded, abandoned or overdue renders give their thread back, and a flood of heavy renders
//! from one URL family leaves room for everyone else.

use crate::helpers::{jpeg, png, spawn_app, spawn_app_with, TestApp, ROOT_KEY};
use darkroom::model::schema::{self, OPERATIONS};
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

/// Organization `acme` with an unprotected photo and a protected logo; returns
/// (photo hash, protected hash, signing key).
async fn acme_with_protected_logo(app: &TestApp) -> (String, String, String) {
    app.create_org("acme").await;
    let photo = app
        .upload_one("acme", ROOT_KEY, "photo.jpg", &jpeg(120, 90, 3))
        .await;
    let logo = app
        .upload_one("acme", ROOT_KEY, "logo.png", &png(60, 40))
        .await;
    let p = app
        .json(
            "PUT",
            &format!(
                "/sourceimages/acme/{}/options/protected",
                logo["hash"].as_str().unwrap()
            ),
            ROOT_KEY,
            &json!(true),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.text());
    let key = app.get("/organizations/acme", ROOT_KEY).await.json()["signing_keys"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    (
        photo["hash"].as_str().unwrap().to_string(),
        p.json()["hash"].as_str().unwrap().to_string(),
        key,
    )
}

/// The rest of a dynamic-URL operation that reads another image through `option`; every
/// operation whose schema names an image needs an entry here.
fn operation_naming_an_image(op: &str, option: &str, hash: &str) -> String {
    match (op, option) {
        ("composition", "secondary_image") => {
            format!("composition-secondary_image-{hash}-mode-background-width-40-height-30")
        }
        ("text", "font") => format!("text-font-{hash}-text-Hello-size-20"),
        _ => panic!(
            "{op}.{option} names an image: add a render URL for it to this test so that its protection is checked"
        ),
    }
}

#[actix_rt::test]
async fn every_option_that_names_an_image_applies_that_images_protection() {
    let app = spawn_app().await;
    let (photo, protected_logo, key) = acme_with_protected_logo(&app).await;
    // `text.font` names a font: a protected one.
    let font = app
        .upload_one("acme", ROOT_KEY, "font.ttf", crate::sources::FONT)
        .await;
    let protected_font = app
        .json(
            "PUT",
            &format!(
                "/sourceimages/acme/{}/options/protected",
                font["hash"].as_str().unwrap()
            ),
            ROOT_KEY,
            &json!(true),
        )
        .await;
    assert_eq!(protected_font.status, 201, "{}", protected_font.text());
    let protected_font = protected_font.json()["hash"].as_str().unwrap().to_string();
    let mut checked = 0;
    for op in OPERATIONS {
        for spec in op.options.iter().filter(|s| schema::names_image(s)) {
            let protected = if (op.name, spec.name) == ("text", "font") {
                protected_font.clone()
            } else {
                protected_logo.clone()
            };
            let ops = operation_naming_an_image(op.name, spec.name, &protected);
            for short in [protected.as_str(), &protected[..8]] {
                let ops = ops.replace(&protected, short);
                let path = format!("/dynamic/{ops}/{photo}.png");
                let refused = app.render(&path).await;
                assert_eq!(refused.status, 403, "{path}: {}", refused.text());
                assert!(refused.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("signature"));
                let wrong = app.render(&format!("{path}?sig=0123456789abcdef")).await;
                assert_eq!(wrong.status, 403, "{path}");
                let sig = darkroom::url::sign(&path, &key);
                let signed = app.render(&format!("{path}?sig={sig}")).await;
                assert_eq!(signed.status, 200, "{path}: {}", signed.text());
                // Asked again without the signature, the stored render is still refused: a
                // URL needing a signature is never remembered as resolved.
                assert_eq!(app.render(&path).await.status, 403, "{path}");
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "the schema names fewer image options than composition and text"
    );
}

#[actix_rt::test]
async fn a_deleted_secondary_image_is_not_shown_any_more() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let photo = app
        .upload_one("acme", ROOT_KEY, "photo.jpg", &jpeg(120, 90, 3))
        .await["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let logo = app
        .upload_one("acme", ROOT_KEY, "logo.png", &png(60, 40))
        .await["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!(
        "/dynamic/composition-secondary_image-{logo}-mode-background-width-40-height-30/{photo}.png"
    );
    assert_eq!(app.render(&path).await.status, 200);
    assert_eq!(
        app.delete(&format!("/sourceimages/acme/{logo}"), ROOT_KEY)
            .await
            .status,
        204
    );
    let gone = app.render(&path).await;
    assert_eq!(gone.status, 400, "{}", gone.text());
    assert!(gone.text().contains("not found"), "{}", gone.text());
}

#[actix_rt::test]
async fn a_huge_dynamic_resize_is_refused_before_any_decoding() {
    let app = spawn_app().await;
    let hash = app.acme_with_thumb(&jpeg(400, 300, 1), 100).await;
    for (path, needle) in [
        (
            format!("/dynamic/resize-width-10000-height-10000-mode-absolute/{hash}.avif"),
            "10000×10000",
        ),
        (
            format!("/dynamic/resize-width-10000-height-10000-mode-absolute/{hash}.png"),
            "10000×10000",
        ),
        (
            format!("/dynamic/resize-width-8000-height-8000-mode-absolute--o-dpr-3/{hash}.jpg"),
            "limit",
        ),
    ] {
        let a = app.render(&path).await;
        assert_eq!(a.status, 422, "{path}: {}", a.text());
        let message = a.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{message}");
    }
    assert_eq!(
        app.services
            .renders
            .rendered
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(app.services.pool.in_flight(), 0);
    // An ordinary render is served at once.
    assert_eq!(app.render(&format!("/thumb/{hash}.jpg")).await.status, 200);
}

#[actix_rt::test]
async fn a_render_above_the_memory_estimate_is_refused() {
    let app = spawn_app_with(|c| c.limits.max_render_memory_mb = 1).await;
    let hash = app.acme_with_thumb(&jpeg(800, 600, 1), 100).await;
    let a = app
        .render(&format!("/dynamic/rotate-angle-45/{hash}.png"))
        .await;
    assert_eq!(a.status, 422, "{}", a.text());
    assert!(a.text().contains("MiB of memory"), "{}", a.text());
}

#[actix_rt::test]
async fn operation_lists_are_bounded_in_stacks_and_urls() {
    let app = spawn_app_with(|c| c.limits.max_operations = 5).await;
    let hash = app.acme_with_thumb(&jpeg(64, 48, 1), 32).await;
    let many: Vec<_> = (0..6).map(|_| json!({"name": "grayscale"})).collect();
    let a = app
        .json("PUT", "/stacks/acme/many", ROOT_KEY, &json!(many))
        .await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("limit of 5"), "{}", a.text());

    let five: Vec<_> = (0..5).map(|_| json!({"name": "grayscale"})).collect();
    let a = app
        .json("PUT", "/stacks/acme/five", ROOT_KEY, &json!(five))
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    // A basestack's operations count too.
    let a = app
        .json(
            "PUT",
            "/stacks/acme/more",
            ROOT_KEY,
            &json!({"operations": [{"name": "sepia"}], "options": {"basestack": "five"}}),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text());

    let url = ["grayscale"; 6].join("--");
    let a = app.render(&format!("/dynamic/{url}/{hash}.jpg")).await;
    assert_eq!(a.status, 400, "{}", a.text());
    let url = ["grayscale"; 1_000].join("--");
    let a = app.render(&format!("/dynamic/{url}/{hash}.jpg")).await;
    assert_eq!(a.status, 400, "{}", a.text());
    let a = app.render(&format!("/five/{hash}.jpg")).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

/// A stack of slow blurs over a large source: heavy, and long enough to be abandoned.
async fn acme_with_slow_stack(app: &TestApp) -> String {
    app.create_org("acme").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "big.jpg", &jpeg(2400, 1800, 7))
        .await;
    let blurs: Vec<_> = (0..40)
        .map(|_| json!({"name": "blur", "options": {"sigma": 100}}))
        .collect();
    let a = app
        .json("PUT", "/stacks/acme/slow", ROOT_KEY, &json!(blurs))
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    let a = app
        .json(
            "PUT",
            "/stacks/acme/thumb",
            ROOT_KEY,
            &json!([{"name": "resize", "options": {"width": 50}}]),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    img["hash"].as_str().unwrap().to_string()
}

/// Waits until the render pool has nothing admitted, at most `within`.
async fn wait_until_idle(app: &TestApp, within: Duration) {
    let started = Instant::now();
    while app.services.pool.in_flight() > 0 {
        assert!(
            started.elapsed() < within,
            "the render pool still runs {} jobs",
            app.services.pool.in_flight()
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `n` renders were counted as cancelled, at most 10 s. The count is taken where
/// the render's outcome is recorded, on the runtime's blocking threads after the pool gave
/// the render's place back, so it can come a moment after the pool is idle.
async fn wait_until_cancelled(app: &TestApp, n: u64) {
    let started = Instant::now();
    loop {
        let cancelled = app
            .services
            .renders
            .cancelled
            .load(std::sync::atomic::Ordering::Relaxed);
        if cancelled == n {
            return;
        }
        assert!(
            cancelled < n && started.elapsed() < Duration::from_secs(10),
            "{cancelled} renders were cancelled, not {n}"
        );
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn a_render_whose_client_went_away_is_cancelled() {
    let app = spawn_app().await;
    let hash = acme_with_slow_stack(&app).await;
    let addr = app.render.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /acme/slow/{hash}.png HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // The render starts, then the client hangs up.
    let started = Instant::now();
    while app.services.pool.in_flight() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the render never started"
        );
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    drop(s);
    wait_until_idle(&app, Duration::from_secs(120)).await;
    // Cancelled, not finished: nothing was rendered or stored.
    wait_until_cancelled(&app, 1).await;
    assert_eq!(
        app.services
            .renders
            .rendered
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(app.services.store.render_count(), 0);
}

#[actix_rt::test]
async fn a_render_past_its_timeout_answers_503_and_stops() {
    let app = spawn_app_with(|c| c.render.timeout_ms = 300).await;
    let hash = acme_with_slow_stack(&app).await;
    let a = app.render(&format!("/slow/{hash}.png")).await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(a.header("retry-after").is_some());
    wait_until_idle(&app, Duration::from_secs(120)).await;
    wait_until_cancelled(&app, 1).await;
    assert_eq!(app.services.store.render_count(), 0);
}

#[actix_rt::test]
async fn heavy_renders_of_one_family_leave_a_thread_for_other_renders() {
    let app = spawn_app_with(|c| {
        c.render.threads = 2;
        c.render.timeout_ms = 600_000;
    })
    .await;
    let hash = acme_with_slow_stack(&app).await;
    // Three heavy renders of distinct URLs (one runs, two wait: a thread stays free).
    let mut heavy = Vec::new();
    for v in 1..=3 {
        let addr = app.render.trim_start_matches("http://").to_string();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /acme/slow/{hash}/v{v}.png HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        heavy.push(s);
    }
    let started = Instant::now();
    while app.services.pool.in_flight() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the heavy renders never started"
        );
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    // A cold render of another stack is served while the heavy ones are still there.
    let a = app.render(&format!("/thumb/{hash}.jpg")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(
        app.services.pool.in_flight() >= 3,
        "the heavy renders finished first"
    );
    // Hanging up cancels them all: the running one stops, the waiting ones never start.
    drop(heavy);
    wait_until_idle(&app, Duration::from_secs(120)).await;
    // Only the thumbnail, and the mezzanine it started from (the big source's 1/8 decode).
    app.mezzanines_stored().await;
    assert_eq!(app.services.store.render_count(), 2);
}
