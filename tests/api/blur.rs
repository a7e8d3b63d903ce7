//! The `.blur` output: the BlurHash string of the rendered image, answered as text through
//! every render-URL form and cached, keyed and invalidated like any render.

use crate::helpers::*;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use serde_json::json;

const TEXT: &str = "text/plain; charset=utf-8";
const RED: [u8; 3] = [220, 30, 30];
const BLUE: [u8; 3] = [30, 60, 220];

/// A PNG of one colour (PNG keeps it exactly).
fn solid_png(width: u32, height: u32, colour: [u8; 3]) -> Vec<u8> {
    encode(
        DynamicImage::ImageRgb8(RgbImage::from_pixel(width, height, Rgb(colour))),
        ImageFormat::Png,
    )
}

/// A PNG whose left half is red and right half blue.
fn red_blue_png(width: u32, height: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, _| {
        Rgb(if x < width / 2 { RED } else { BLUE })
    });
    encode(DynamicImage::ImageRgb8(img), ImageFormat::Png)
}

/// Organization `acme` with `bytes` uploaded; returns the image hash.
async fn acme_with(app: &TestApp, bytes: &[u8]) -> String {
    app.create_org("acme").await;
    let img = app.upload_one("acme", ROOT_KEY, "image.png", bytes).await;
    img["hash"].as_str().unwrap().to_string()
}

/// Checks that `a` is a `.blur` answer and returns its BlurHash.
fn blurhash_of(a: &Answer) -> String {
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type").as_deref(), Some(TEXT));
    let text = String::from_utf8(a.body.clone()).expect("the body is UTF-8");
    // 4×3 components: size flag, maximum, 4 characters of DC, 2 for each of 11 AC components.
    assert_eq!(text.len(), 28, "{text:?}");
    text
}

/// The mean colour of `hash` decoded by the same crate at 32×32.
fn decoded_mean(hash: &str) -> [f64; 3] {
    let pixels = blurhash::decode(hash, 32, 32, 1.0)
        .unwrap_or_else(|e| panic!("{hash:?} does not decode: {e}"));
    let mut sum = [0.0; 3];
    for px in pixels.chunks_exact(4) {
        for (s, &c) in sum.iter_mut().zip(px) {
            *s += f64::from(c);
        }
    }
    sum.map(|s| s / 1024.0)
}

fn assert_near(actual: [f64; 3], expected: [u8; 3], tolerance: f64) {
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a - f64::from(e)).abs() <= tolerance,
            "{actual:?} is not within {tolerance} of {expected:?}"
        );
    }
}

#[actix_rt::test]
async fn a_blur_of_a_dynamic_resize_is_the_blurhash_of_the_image_as_text() {
    let app = spawn_app().await;
    let hash = acme_with(&app, &solid_png(240, 160, [40, 130, 210])).await;

    let a = app
        .render(&format!("/dynamic/resize-width-60/{hash}.blur"))
        .await;

    let blur = blurhash_of(&a);
    assert_near(decoded_mean(&blur), [40, 130, 210], 3.0);
    assert_eq!(
        a.header("cache-control").as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    let etag = a.header("etag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(a.header("x-darkroom-render").as_deref(), Some("miss"));
    assert_eq!(a.header("vary"), None);
}

#[actix_rt::test]
async fn a_blur_follows_the_operations_of_the_url() {
    let app = spawn_app().await;
    let hash = acme_with(&app, &red_blue_png(160, 80)).await;

    let left = app
        .render(&format!(
            "/dynamic/crop-width-80-height-80-anchor-left_top/{hash}.blur"
        ))
        .await;
    let right = app
        .render(&format!(
            "/dynamic/crop-width-80-height-80-anchor-right_top/{hash}.blur"
        ))
        .await;
    let whole = app.render(&format!("/dynamic/noop/{hash}.blur")).await;

    assert_near(decoded_mean(&blurhash_of(&left)), RED, 3.0);
    assert_near(decoded_mean(&blurhash_of(&right)), BLUE, 3.0);
    // The whole image decodes red on the left and blue on the right.
    let pixels = blurhash::decode(&blurhash_of(&whole), 32, 32, 1.0).unwrap();
    let at = |x: usize, y: usize| &pixels[(y * 32 + x) * 4..][..3];
    assert!(at(2, 16)[0] > at(2, 16)[2], "left {:?}", at(2, 16));
    assert!(at(29, 16)[2] > at(29, 16)[0], "right {:?}", at(29, 16));
}

#[actix_rt::test]
async fn a_named_stack_blur_is_stored_once_and_answered_with_the_same_bytes_and_etag() {
    let app = spawn_app().await;
    let hash = acme_with(&app, &red_blue_png(160, 80)).await;
    app.stack(
        "thumb",
        json!([{"name": "resize", "options": {"width": 40}}]),
    )
    .await;
    let url = format!("/thumb/{hash}.blur");

    let first = app.render(&url).await;
    let second = app.render(&url).await;

    let blur = blurhash_of(&first);
    assert_eq!(first.header("x-darkroom-render").as_deref(), Some("miss"));
    assert_eq!(second.header("x-darkroom-render").as_deref(), Some("hit"));
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag"), first.header("etag"));
    let etag = first.header("etag").unwrap();
    let cond = app
        .send(
            "GET",
            &format!("{}/acme{url}", app.render),
            None,
            &[("If-None-Match", &etag)],
            None,
        )
        .await;
    assert_eq!(cond.status, 304);
    assert!(cond.body.is_empty());
    assert_eq!(cond.header("etag").as_deref(), Some(etag.as_str()));
    let tags = first.header("surrogate-key").unwrap();
    assert!(tags.contains("stack-acme-thumb"), "{tags}");
    // A purge and a fresh render give the very same string and ETag.
    let purge = app.delete("/organizations/acme/cache", ROOT_KEY).await;
    assert_eq!(purge.status, 200, "{}", purge.text());
    let again = app.render(&url).await;
    assert_eq!(again.header("x-darkroom-render").as_deref(), Some("miss"));
    assert_eq!(blurhash_of(&again), blur);
    assert_eq!(again.header("etag"), first.header("etag"));
    // The image and the text of one URL are two renders with two keys.
    let png = app.render(&format!("/thumb/{hash}.png")).await;
    assert_eq!(png.header("content-type").as_deref(), Some("image/png"));
    assert_ne!(png.header("etag"), first.header("etag"));
    assert_eq!(app.stored_renders().await, 2);
}

#[actix_rt::test]
async fn every_render_url_form_answers_blur() {
    let app = spawn_app().await;
    let hash = acme_with(&app, &red_blue_png(160, 80)).await;
    let sized = json!({
        "operations": [{"name": "resize", "options": {"width": "$w"}}],
        "variables": {"w": 40},
    });
    app.stack("sized", sized).await;
    let short = &hash[..6];
    let plain = blurhash_of(&app.render(&format!("/sized/{hash}.blur")).await);

    // (path, whether it resolves to the same pipeline as the plain URL)
    for (path, same) in [
        (format!("/sized/{short}.blur"), true),
        (format!("/sized/{hash}/a-nice-name.blur"), true),
        (format!("/sized/{hash}/a-nice-name-v3.blur"), true),
        (format!("/sized/{hash}.BLUR"), true),
        (format!("/sized/resize-width-30/{hash}.blur"), false),
        (format!("/sized/v-w-20/{hash}.blur"), false),
        (format!("/sized/o-dpr-2/{hash}.blur"), false),
        (format!("/sized/{hash}.blur?v=%7B%22w%22%3A24%7D"), false),
    ] {
        let blur = blurhash_of(&app.render(&path).await);

        if same {
            assert_eq!(blur, plain, "{path}");
        }
        // Every size keeps the two halves: red on the left of row 16, not blue.
        let pixels = blurhash::decode(&blur, 32, 32, 1.0).unwrap();
        let left = &pixels[16 * 32 * 4..][..3];
        assert!(left[0] > left[2], "{path}: {blur} {left:?}");
    }
}

#[actix_rt::test]
async fn signed_blur_urls_are_checked_like_image_urls() {
    let app = spawn_app().await;
    let hash = acme_with(&app, &solid_png(64, 48, RED)).await;
    app.stack("secret", json!({"operations": [{"name": "resize", "options": {"width": 30}}], "options": {"protected": true}})).await;
    let key = app.get("/organizations/acme", ROOT_KEY).await.json()["signing_keys"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/secret/{hash}.blur");

    let unsigned = app.render(&path).await;
    let signed = app
        .render(&format!("{path}?sig={}", darkroom::url::sign(&path, &key)))
        .await;

    assert_eq!(unsigned.status, 403, "{}", unsigned.text());
    assert_near(decoded_mean(&blurhash_of(&signed)), RED, 3.0);
}

#[actix_rt::test]
async fn autoformat_and_accept_never_turn_a_blur_into_an_image() {
    let app = spawn_app().await;
    let hash = acme_with(&app, &solid_png(64, 48, BLUE)).await;
    app.stack("auto", json!({"operations": [{"name": "resize", "options": {"width": 30}}], "options": {"autoformat": true, "autoformat.include": "avif"}})).await;
    app.stack(
        "original",
        json!({"operations": [], "options": {"source_file": true}}),
    )
    .await;
    let url = format!("{}/acme/auto/{hash}.blur", app.render);

    let browser = app
        .send(
            "GET",
            &url,
            None,
            &[("Accept", "image/avif,image/webp,image/*,*/*;q=0.8")],
            None,
        )
        .await;
    let original = app.render(&format!("/original/{hash}.blur")).await;

    assert_near(decoded_mean(&blurhash_of(&browser)), BLUE, 3.0);
    assert_eq!(
        browser.header("vary"),
        None,
        "the answer does not depend on Accept"
    );
    assert_near(decoded_mean(&blurhash_of(&original)), BLUE, 3.0);
}

#[actix_rt::test]
async fn transparency_is_composited_over_white_or_the_stack_colour() {
    let app = spawn_app().await;
    let clear = encode(
        DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            50,
            50,
            image::Rgba([255, 0, 0, 0]),
        )),
        ImageFormat::Png,
    );
    let hash = acme_with(&app, &clear).await;

    let white = app.render(&format!("/dynamic/noop/{hash}.blur")).await;
    let black = app
        .render(&format!("/dynamic/o-transparency.color-000000/{hash}.blur"))
        .await;

    assert_near(decoded_mean(&blurhash_of(&white)), [255, 255, 255], 3.0);
    assert_near(decoded_mean(&blurhash_of(&black)), [0, 0, 0], 3.0);
}

#[actix_rt::test]
async fn deleting_the_image_makes_its_blur_url_404() {
    let app = spawn_app().await;
    let hash = acme_with(&app, &solid_png(64, 48, RED)).await;
    let url = format!("/dynamic/resize-width-20/{hash}.blur");
    blurhash_of(&app.render(&url).await);
    assert_eq!(app.stored_renders().await, 1);

    let deleted = app
        .delete(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
        .await;

    assert_eq!(deleted.status, 204);
    assert_eq!(app.stored_renders().await, 0);
    let gone = app.render(&url).await;
    assert_eq!(gone.status, 404, "{}", gone.text());
    assert!(gone.json()["error"]["message"].is_string());
}

#[actix_rt::test]
async fn overwriting_a_stack_collects_its_old_blur_and_renders_a_new_one() {
    let app = spawn_app().await;
    let hash = acme_with(&app, &red_blue_png(160, 80)).await;
    app.stack(
        "half",
        json!([{"name": "crop", "options": {"width": 80, "height": 80, "anchor": "left_top"}}]),
    )
    .await;
    let url = format!("/half/{hash}.blur");
    let before = app.render(&url).await;
    assert_near(decoded_mean(&blurhash_of(&before)), RED, 3.0);
    assert_eq!(app.stored_renders().await, 1);

    app.stack(
        "half",
        json!([{"name": "crop", "options": {"width": 80, "height": 80, "anchor": "right_top"}}]),
    )
    .await;

    assert_eq!(
        app.stored_renders().await,
        0,
        "the old definition's render is purged"
    );
    let after = app.render(&url).await;
    assert_eq!(after.header("x-darkroom-render").as_deref(), Some("miss"));
    assert_near(decoded_mean(&blurhash_of(&after)), BLUE, 3.0);
    assert_ne!(after.header("etag"), before.header("etag"));
}

#[actix_rt::test]
async fn a_blur_passes_the_render_limits_and_unknown_formats_stay_refused() {
    let app = spawn_app().await;
    let hash = acme_with(&app, &solid_png(64, 48, RED)).await;

    let huge = app
        .render(&format!(
            "/dynamic/resize-width-10000-height-10000-mode-absolute/{hash}.blur"
        ))
        .await;
    let unknown = app.render(&format!("/dynamic/noop/{hash}.blr")).await;

    assert_eq!(huge.status, 422, "{}", huge.text());
    assert!(huge.text().contains("10000×10000"), "{}", huge.text());
    assert_eq!(unknown.status, 400, "{}", unknown.text());
    assert!(
        unknown.text().contains("unsupported output format"),
        "{}",
        unknown.text()
    );
    assert_eq!(app.stored_renders().await, 0);
}

#[actix_rt::test]
async fn a_blur_past_the_render_timeout_answers_503_and_is_not_stored() {
    let app = spawn_app_with(|c| c.render.timeout_ms = 300).await;
    app.create_org("acme").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "big.jpg", &jpeg(2400, 1800, 7))
        .await;
    let hash = img["hash"].as_str().unwrap();
    let blurs: Vec<_> = (0..40)
        .map(|_| json!({"name": "blur", "options": {"sigma": 100}}))
        .collect();
    app.stack("slow", json!(blurs)).await;

    let a = app.render(&format!("/slow/{hash}.blur")).await;

    assert_eq!(a.status, 503, "{}", a.text());
    assert!(a.header("retry-after").is_some());
    let started = std::time::Instant::now();
    while app.services.pool.in_flight() > 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(120));
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.services.store.render_count(), 0);
}
