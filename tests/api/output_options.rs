//! The stack options that shape the output file: `interlacing.mode`, `transparency.color`,
//! `jpg.transparency.autoformat` and `.convert`, `png.compression_level`, and the `optim.*`
//! options, which keep one URL's bytes identical. Each test fails if its option is ignored.

use crate::helpers::*;
use serde_json::json;

/// `acme` with a photo and a PNG whose right half is transparent.
async fn setup() -> (TestApp, String, String) {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let jpg = app
        .upload_one("acme", ROOT_KEY, "photo.jpg", &jpeg(120, 90, 3))
        .await;
    let png = app
        .upload_one("acme", ROOT_KEY, "logo.png", &png_rgba(200, 200))
        .await;
    (
        app,
        jpg["hash"].as_str().unwrap().to_string(),
        png["hash"].as_str().unwrap().to_string(),
    )
}

/// Whether a JPEG has a frame header of this kind (SOF0 baseline, SOF2 progressive).
fn has_marker(bytes: &[u8], marker: u8) -> bool {
    bytes.windows(2).any(|w| w == [0xFF, marker])
}

fn rgba_at(a: &Answer, x: u32, y: u32) -> [u8; 4] {
    image::load_from_memory(&a.body)
        .unwrap()
        .to_rgba8()
        .get_pixel(x, y)
        .0
}

#[actix_rt::test]
async fn interlacing_mode_chooses_progressive_or_baseline_jpeg() {
    let (app, jpg, png) = setup().await;

    let default = app.render(&format!("/dynamic/noop/{jpg}.jpg")).await;
    let plane = app
        .render(&format!("/dynamic/o-interlacing.mode-line/{jpg}.jpg"))
        .await;
    let none = app
        .render(&format!("/dynamic/o-interlacing.mode-none/{jpg}.jpg"))
        .await;

    for (what, a, progressive) in [
        ("default", &default, true),
        ("line", &plane, true),
        ("none", &none, false),
    ] {
        assert_eq!(a.status, 200, "{what}: {}", a.text());
        assert_eq!(has_marker(&a.body, 0xC2), progressive, "{what}");
        assert_eq!(has_marker(&a.body, 0xC0), !progressive, "{what}");
        let img = image::load_from_memory(&a.body).unwrap();
        assert_eq!((img.width(), img.height()), (120, 90), "{what}");
    }
    // PNG and GIF are written without interlacing: asking for it explicitly is refused, the
    // default and `none` are not.
    for ext in ["png", "gif"] {
        let asked = app
            .render(&format!("/dynamic/o-interlacing.mode-plane/{png}.{ext}"))
            .await;
        assert_eq!(asked.status, 400, "{ext}: {}", asked.text());
        let message = asked.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains("interlacing.mode"), "{message}");
        let plain = app.render(&format!("/dynamic/noop/{png}.{ext}")).await;
        assert_eq!(plain.status, 200, "{ext}: {}", plain.text());
        let none = app
            .render(&format!("/dynamic/o-interlacing.mode-none/{png}.{ext}"))
            .await;
        assert_eq!(none.status, 200, "{ext}: {}", none.text());
    }
}

#[actix_rt::test]
async fn transparency_color_flattens_every_output() {
    let (app, _, png) = setup().await;

    for ext in ["png", "webp", "gif", "jpg"] {
        let a = app
            .render(&format!("/dynamic/o-transparency.color-00FF00/{png}.{ext}"))
            .await;
        assert_eq!(a.status, 200, "{ext}: {}", a.text());
        let px = rgba_at(&a, 190, 100);
        assert!(
            px[3] == 255 && px[0] < 40 && px[1] > 200 && px[2] < 40,
            "{ext}: the transparent half is {px:?}"
        );
        let opaque = rgba_at(&a, 10, 100);
        assert!(opaque[0] > 160 && opaque[1] < 60, "{ext}: {opaque:?}");
    }
    let kept = app.render(&format!("/dynamic/noop/{png}.webp")).await;
    assert_eq!(
        rgba_at(&kept, 190, 100)[3],
        0,
        "without the option WebP keeps alpha"
    );
}

#[actix_rt::test]
async fn a_jpeg_render_with_transparency_becomes_webp_or_png_when_asked() {
    let (app, jpg, png) = setup().await;
    let get = |path: String, accept: &'static str| {
        let app = &app;
        async move {
            app.send(
                "GET",
                &format!("{}/acme{path}", app.render),
                None,
                &[("Accept", accept)],
                None,
            )
            .await
        }
    };
    let auto = "o-jpg.transparency.autoformat-true";

    let webp = get(format!("/dynamic/{auto}/{png}.jpg"), "image/webp,*/*").await;
    let png_answer = get(format!("/dynamic/{auto}/{png}.jpg"), "image/png,*/*").await;
    let converted = get(
        format!("/dynamic/o-jpg.transparency.convert-true/{png}.jpg"),
        "image/webp,*/*",
    )
    .await;
    let opaque = get(format!("/dynamic/{auto}/{jpg}.jpg"), "image/webp,*/*").await;
    let plain = get(format!("/dynamic/noop/{png}.jpg"), "image/webp,*/*").await;

    assert_eq!(webp.header("content-type").as_deref(), Some("image/webp"));
    assert_eq!(webp.header("vary").as_deref(), Some("Accept"));
    assert_eq!(
        rgba_at(&webp, 190, 100)[3],
        0,
        "WebP keeps the transparency"
    );
    assert_eq!(
        png_answer.header("content-type").as_deref(),
        Some("image/png")
    );
    assert_eq!(rgba_at(&png_answer, 190, 100)[3], 0);
    assert_eq!(
        converted.header("content-type").as_deref(),
        Some("image/png")
    );
    assert_eq!(rgba_at(&converted, 190, 100)[3], 0);
    // Without visible transparency, or without the options, a JPEG stays a JPEG.
    assert_eq!(opaque.header("content-type").as_deref(), Some("image/jpeg"));
    assert_eq!(plain.header("content-type").as_deref(), Some("image/jpeg"));
    assert_eq!(rgba_at(&plain, 190, 100), [255, 255, 255, 255]);
    let download = get(
        format!("/dynamic/o-jpg.transparency.convert-true-content_disposition-attachment/{png}/logo.jpg"),
        "*/*",
    )
    .await;
    assert_eq!(
        download.header("content-type").as_deref(),
        Some("image/png")
    );
    let disposition = download.header("content-disposition").unwrap_or_default();
    assert!(disposition.contains("logo.png"), "{disposition}");
    // The remembered answer of one Accept is not served to the other.
    let again = get(format!("/dynamic/{auto}/{png}.jpg"), "image/png,*/*").await;
    assert_eq!(again.header("content-type").as_deref(), Some("image/png"));
}

#[actix_rt::test]
async fn png_compression_level_is_the_deflate_level_and_checked() {
    let (app, jpg, _) = setup().await;

    let stored = app
        .render(&format!("/dynamic/o-png.compression_level-0/{jpg}.png"))
        .await;
    let best = app
        .render(&format!("/dynamic/o-png.compression_level-9/{jpg}.png"))
        .await;
    let beyond = app
        .render(&format!("/dynamic/o-png.compression_level-10/{jpg}.png"))
        .await;

    assert_eq!((stored.status, best.status), (200, 200));
    // Level 0 stores the rows: at least the raw RGB bytes.
    assert!(stored.body.len() >= 120 * 90 * 3, "{}", stored.body.len());
    assert!(
        best.body.len() < stored.body.len() / 2,
        "{} vs {}",
        best.body.len(),
        stored.body.len()
    );
    assert_eq!(
        image::load_from_memory(&stored.body).unwrap().to_rgb8(),
        image::load_from_memory(&best.body).unwrap().to_rgb8()
    );
    assert_eq!(beyond.status, 400, "{}", beyond.text());
    assert!(
        beyond.text().contains("png.compression_level"),
        "{}",
        beyond.text()
    );
}

#[actix_rt::test]
async fn optim_options_keep_one_urls_bytes_identical_across_purges() {
    let (app, jpg, _) = setup().await;
    app.stack(
        "optimised",
        json!({
            "operations": [{"name": "resize", "options": {"width": 60}}],
            "options": {"optim.quality": 10, "optim.immediate": true}
        }),
    )
    .await;
    let url = format!("/optimised/o-optim.disable_all-true/{jpg}.jpg");

    let first = app.render(&url).await;
    let purged = app
        .delete(&format!("/sourceimages/acme/{jpg}/cache"), ROOT_KEY)
        .await;
    assert_eq!(
        app.stored_renders().await,
        0,
        "the second answer is a new render"
    );
    let second = app.render(&url).await;

    assert_eq!(first.status, 200, "{}", first.text());
    assert!(purged.status < 300, "{}", purged.text());
    assert_eq!(second.header("etag"), first.header("etag"));
    assert_eq!(second.body, first.body);
}
