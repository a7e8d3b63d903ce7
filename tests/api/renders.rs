//! Render URLs end to end: grammar, operations, formats, caching headers, single-flight,
//! determinism, signatures and bad input.

use crate::helpers::*;
use serde_json::json;

/// An app with organization `acme`, a 400×300 JPEG and a 200×200 transparent PNG.
async fn setup() -> (TestApp, String, String) {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let jpg = app
        .upload_one("acme", ROOT_KEY, "photo.jpg", &jpeg(400, 300, 1))
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

fn dims(a: &Answer) -> (u32, u32) {
    let img = image::load_from_memory(&a.body)
        .unwrap_or_else(|e| panic!("not an image ({e}): {}", a.text()));
    (img.width(), img.height())
}

fn pixel(a: &Answer, x: u32, y: u32) -> [u8; 4] {
    image::load_from_memory(&a.body)
        .unwrap()
        .to_rgba8()
        .get_pixel(x, y)
        .0
}

#[actix_rt::test]
async fn a_named_stack_renders_with_immutable_caching_headers() {
    let (app, hash, _) = setup().await;
    app.stack(
        "thumb",
        json!([{"name": "resize", "options": {"width": 100}}]),
    )
    .await;
    let a = app.render(&format!("/thumb/{hash}.jpg")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(dims(&a), (100, 75));
    assert_eq!(a.header("content-type").as_deref(), Some("image/jpeg"));
    assert_eq!(
        a.header("cache-control").as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    let etag = a.header("etag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    assert_eq!(
        a.header("content-length").unwrap(),
        a.body.len().to_string()
    );
    assert_eq!(a.header("x-darkroom-render").as_deref(), Some("miss"));
    let again = app.render(&format!("/thumb/{hash}.jpg")).await;
    assert_eq!(again.header("x-darkroom-render").as_deref(), Some("hit"));
    assert_eq!(again.body, a.body);
    let cond = app
        .send(
            "GET",
            &format!("{}/acme/thumb/{hash}.jpg", app.render),
            None,
            &[("If-None-Match", &etag)],
            None,
        )
        .await;
    assert_eq!(cond.status, 304);
    assert!(cond.body.is_empty());
    let tags = a.header("surrogate-key").unwrap();
    assert!(
        tags.contains("org-acme") && tags.contains(&hash) && tags.contains("stack-acme-thumb"),
        "{tags}"
    );
}

#[actix_rt::test]
async fn urls_that_resolve_to_the_same_pipeline_share_one_render() {
    let (app, hash, _) = setup().await;
    app.stack(
        "thumb",
        json!([{"name": "resize", "options": {"width": 100}}]),
    )
    .await;
    let short = &hash[..6];
    let first = app.render(&format!("/thumb/{hash}.jpg")).await;
    for path in [
        format!("/thumb/{short}.jpg"),
        format!("/thumb/{hash}/some-name.jpg"),
        format!("/dynamic/resize-width-100/{hash}.jpg"),
    ] {
        let a = app.render(&path).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(
            a.header("x-darkroom-render").as_deref(),
            Some("hit"),
            "{path}"
        );
        assert_eq!(a.body, first.body, "{path}");
    }
    let versioned = app.render(&format!("/thumb/{hash}/name-v2.jpg")).await;
    assert_eq!(
        versioned.header("x-darkroom-render").as_deref(),
        Some("miss"),
        "a version suffix is a new URL"
    );
    assert_eq!(versioned.body, first.body, "rendering is deterministic");
}

#[actix_rt::test]
async fn rendering_is_deterministic_across_evictions_of_state() {
    let (app, hash, png) = setup().await;
    let paths = [
        format!("/dynamic/resize-width-120--rotate-angle-33/{hash}.jpg"),
        format!("/dynamic/resize-width-50/{png}.png"),
        format!("/dynamic/resize-width-50/{png}.webp"),
        format!("/dynamic/resize-width-40/{hash}.gif"),
    ];
    let first: Vec<Vec<u8>> = futures_util::future::join_all(paths.iter().map(|p| app.render(p)))
        .await
        .into_iter()
        .map(|a| a.body)
        .collect();
    let dir = app.stop().await.expect("a temporary folder");
    let mut config = test_config(dir.path());
    config.storage.path = dir.path().to_path_buf();
    let app2 = start(config).await;
    for (p, bytes) in paths.iter().zip(first) {
        let a = app2
            .send("GET", &format!("{}/acme{p}", app2.render), None, &[], None)
            .await;
        assert_eq!(a.body, bytes, "{p}");
    }
}

#[actix_rt::test]
async fn url_overrides_options_and_variables_change_the_render() {
    let (app, hash, _) = setup().await;
    app.stack("thumb", json!({"operations": [{"name": "resize", "options": {"width": "$w"}}], "variables": {"w": 80}})).await;
    assert_eq!(
        dims(&app.render(&format!("/thumb/{hash}.jpg")).await),
        (80, 60)
    );
    assert_eq!(
        dims(
            &app.render(&format!("/thumb/resize-width-40/{hash}.jpg"))
                .await
        ),
        (40, 30)
    );
    assert_eq!(
        dims(&app.render(&format!("/thumb/v-w-160/{hash}.jpg")).await),
        (160, 120)
    );
    let q =
        percent_encoding::utf8_percent_encode(r#"{"w":20}"#, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    assert_eq!(
        dims(&app.render(&format!("/thumb/{hash}.jpg?v={q}")).await),
        (20, 15)
    );
    assert_eq!(
        dims(&app.render(&format!("/thumb/o-dpr-2/{hash}.jpg")).await),
        (160, 120)
    );
    let small = app
        .render(&format!("/thumb/o-jpg.quality-10/{hash}.jpg"))
        .await;
    let big = app
        .render(&format!("/thumb/o-jpg.quality-95/{hash}.jpg"))
        .await;
    assert!(small.body.len() < big.body.len());
}

#[actix_rt::test]
async fn a_stack_overwrite_changes_what_a_new_request_renders() {
    let (app, hash, _) = setup().await;
    app.stack("s", json!([{"name": "resize", "options": {"width": 100}}]))
        .await;
    assert_eq!(
        dims(&app.render(&format!("/s/{hash}.jpg")).await),
        (100, 75)
    );
    app.stack("s", json!([{"name": "resize", "options": {"width": 50}}]))
        .await;
    assert_eq!(dims(&app.render(&format!("/s/{hash}.jpg")).await), (50, 38));
    assert_eq!(app.delete("/stacks/acme/s", ROOT_KEY).await.status, 204);
    let gone = app.render(&format!("/s/{hash}.jpg")).await;
    assert_eq!(gone.status, 404);
    assert_eq!(
        gone.header("cache-control").as_deref(),
        Some("public, max-age=60")
    );
}

#[actix_rt::test]
async fn every_output_format_is_produced() {
    let (app, hash, png) = setup().await;
    for (ext, mime) in [
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("png", "image/png"),
        ("gif", "image/gif"),
        ("webp", "image/webp"),
        ("avif", "image/avif"),
    ] {
        let a = app
            .render(&format!("/dynamic/resize-width-32/{hash}.{ext}"))
            .await;
        assert_eq!(a.status, 200, "{ext}: {}", a.text());
        assert_eq!(a.header("content-type").as_deref(), Some(mime), "{ext}");
        if ext != "avif" {
            assert_eq!(dims(&a), (32, 24), "{ext}");
        }
    }
    let flattened = app
        .render(&format!(
            "/dynamic/o-jpg.transparency.color-000000/{png}.jpg"
        ))
        .await;
    assert_eq!(
        pixel(&flattened, 190, 100)[..3],
        [0, 0, 0],
        "transparent half flattened onto black"
    );
    let kept = app.render(&format!("/dynamic/noop/{png}.png")).await;
    assert_eq!(pixel(&kept, 190, 100)[3], 0, "PNG keeps transparency");
    let lossless = app
        .render(&format!("/dynamic/o-webp.quality-100/{png}.webp"))
        .await;
    assert_eq!(pixel(&lossless, 10, 10), [200, 10, 10, 255]);
    assert_eq!(
        app.render(&format!("/dynamic/noop/{hash}.tga"))
            .await
            .status,
        400
    );
}

#[actix_rt::test]
async fn autoformat_follows_accept_and_varies_on_it() {
    let (app, hash, _) = setup().await;
    app.stack("auto", json!({"operations": [{"name": "resize", "options": {"width": 50}}], "options": {"autoformat": true}})).await;
    let url = format!("{}/acme/auto/{hash}.jpg", app.render);
    let webp = app
        .send(
            "GET",
            &url,
            None,
            &[("Accept", "image/avif,image/webp,*/*")],
            None,
        )
        .await;
    assert_eq!(webp.header("content-type").as_deref(), Some("image/webp"));
    assert_eq!(webp.header("vary").as_deref(), Some("Accept"));
    let jpg = app
        .send("GET", &url, None, &[("Accept", "*/*")], None)
        .await;
    assert_eq!(jpg.header("content-type").as_deref(), Some("image/jpeg"));
    assert_eq!(jpg.header("vary").as_deref(), Some("Accept"));
}

#[actix_rt::test]
async fn source_file_and_content_disposition_options_are_honoured() {
    let (app, hash, _) = setup().await;
    app.stack(
        "orig",
        json!({"operations": [], "options": {"source_file": true}}),
    )
    .await;
    let a = app.render(&format!("/orig/{hash}.jpg")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, jpeg(400, 300, 1));
    app.stack("dl", json!({"operations": [{"name": "resize", "options": {"width": 10}}], "options": {"content_disposition": "attachment"}})).await;
    let d = app.render(&format!("/dl/{hash}/holiday.jpg")).await;
    assert_eq!(
        d.header("content-disposition").as_deref(),
        Some("attachment; filename=\"holiday.jpg\"")
    );
}

#[actix_rt::test]
async fn each_operation_renders_through_http() {
    let (app, hash, png) = setup().await;
    let cases: Vec<(String, (u32, u32))> = vec![
        (
            format!("/dynamic/resize-width-100-height-100-mode-fill/{hash}.png"),
            (133, 100),
        ),
        (
            format!("/dynamic/resize-width-100-height-100-mode-absolute/{hash}.png"),
            (100, 100),
        ),
        (
            format!("/dynamic/crop-width-50-height-40/{hash}.png"),
            (50, 40),
        ),
        (
            format!("/dynamic/crop-width-1-height-1-mode-ratio/{hash}.png"),
            (300, 300),
        ),
        (
            format!("/dynamic/crop-width-60-height-60-anchor-smart/{hash}.png"),
            (60, 60),
        ),
        (format!("/dynamic/rotate-angle-90/{hash}.png"), (300, 400)),
        (
            format!("/dynamic/autorotate-width-10-height-20/{hash}.png"),
            (300, 400),
        ),
        (format!("/dynamic/blur-sigma-2/{hash}.png"), (400, 300)),
        (format!("/dynamic/grayscale/{hash}.png"), (400, 300)),
        (format!("/dynamic/sepia/{hash}.png"), (400, 300)),
        (format!("/dynamic/trim/{png}.png"), (100, 200)),
        (format!("/dynamic/alpha-mode-mask/{png}.png"), (200, 200)),
        (
            format!("/dynamic/modulate-brightness-120-saturation-50-hue-30/{hash}.png"),
            (400, 300),
        ),
        (
            format!("/dynamic/multiply-factor-0.5/{hash}.png"),
            (400, 300),
        ),
        (format!("/dynamic/sharpen/{hash}.png"), (400, 300)),
        (format!("/dynamic/circlemask/{hash}.png"), (400, 300)),
        (
            format!("/dynamic/dropshadow-horizontal-5-vertical-5/{png}.png"),
            (205, 205),
        ),
        (
            format!("/dynamic/composition-width-500-height-400-secondary_color-00FF00/{hash}.png"),
            (500, 400),
        ),
        (
            format!("/dynamic/composition-secondary_image-{png}-mode-background/{hash}.png"),
            (400, 300),
        ),
        (format!("/dynamic/noop/{hash}.png"), (400, 300)),
    ];
    for (path, expected) in cases {
        let a = app.render(&path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        let got = dims(&a);
        if path.contains("dropshadow") {
            assert!(got.0 >= 200 && got.1 >= 200, "{path}: {got:?}");
        } else {
            assert_eq!(got, expected, "{path}");
        }
    }
    let gray = app.render(&format!("/dynamic/grayscale/{hash}.png")).await;
    let p = pixel(&gray, 200, 150);
    assert!(p[0] == p[1] && p[1] == p[2], "{p:?}");
    let mask = app.render(&format!("/dynamic/circlemask/{hash}.png")).await;
    assert_eq!(pixel(&mask, 0, 0)[3], 0, "corners are transparent");
    assert_eq!(pixel(&mask, 200, 150)[3], 255);
    let green = app.render(&format!("/dynamic/composition-width-500-height-400-secondary_color-00FF00-mode-foreground/{hash}.png")).await;
    assert_eq!(pixel(&green, 2, 2)[..3], [0, 255, 0]);
}

#[actix_rt::test]
async fn crop_uses_the_subject_area() {
    let (app, hash, _) = setup().await;
    let a = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/meta/dynamic/subject_area"),
            ROOT_KEY,
            &json!({"x": 300, "y": 200, "width": 50, "height": 50}),
        )
        .await;
    let area_hash = a.json()["hash"].as_str().unwrap().to_string();
    let plain = app
        .render(&format!("/dynamic/crop-width-100-height-100/{hash}.png"))
        .await;
    let focused = app
        .render(&format!(
            "/dynamic/crop-width-100-height-100-anchor-subjectarea/{area_hash}.png"
        ))
        .await;
    assert_eq!(dims(&focused), (100, 100));
    assert_ne!(
        plain.body, focused.body,
        "the crop moves to the subject area"
    );
}

#[actix_rt::test]
async fn concurrent_requests_for_a_new_url_render_once() {
    let (app, hash, _) = setup().await;
    let url = format!("/dynamic/resize-width-333--blur-sigma-3/{hash}.webp");
    let answers = futures_util::future::join_all((0..8).map(|_| app.render(&url))).await;
    let misses = answers
        .iter()
        .filter(|a| a.header("x-darkroom-render").as_deref() == Some("miss"))
        .count();
    assert_eq!(
        misses,
        1,
        "{:?}",
        answers
            .iter()
            .map(|a| a.header("x-darkroom-render"))
            .collect::<Vec<_>>()
    );
    assert!(answers
        .iter()
        .all(|a| a.status == 200 && a.body == answers[0].body));
}

#[actix_rt::test]
async fn every_url_of_a_burst_is_recorded_for_invalidation() {
    let (app, hash, _) = setup().await;
    // Eight URLs (slugs) of one render, asked at once: one renders, the others join it.
    let urls: Vec<String> = (0..8)
        .map(|i| format!("/dynamic/resize-width-334--blur-sigma-3/{hash}/name-{i}.webp"))
        .collect();
    let answers = futures_util::future::join_all(urls.iter().map(|u| app.render(u))).await;
    assert!(answers.iter().all(|a| a.status == 200));
    // Asked again, they are answered from what was resolved before.
    for u in &urls {
        assert_eq!(
            app.render(u).await.header("x-darkroom-render").as_deref(),
            Some("hit")
        );
    }
    let dry = app
        .delete(
            &format!("/sourceimages/acme/{hash}/cache?dry_run=true"),
            ROOT_KEY,
        )
        .await;
    assert_eq!(dry.status, 200, "{}", dry.text());
    let mut paths: Vec<String> = dry.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    paths.sort();
    let mut expected: Vec<String> = urls.iter().map(|u| format!("/acme{u}")).collect();
    expected.sort();
    assert_eq!(paths, expected);
}

#[actix_rt::test]
async fn bad_render_urls_get_json_errors() {
    let (app, hash, _) = setup().await;
    app.stack(
        "thumb",
        json!([{"name": "resize", "options": {"width": 100}}]),
    )
    .await;
    let cases: Vec<(String, u16)> = vec![
        (format!("/nostack/{hash}.jpg"), 404),
        ("/thumb/ffffffffffff.jpg".into(), 404),
        (format!("/thumb/{hash}"), 404),
        (format!("/thumb/{hash}.xyz"), 400),
        (format!("/dynamic/explode/{hash}.jpg"), 400),
        (format!("/dynamic/resize-width-10001/{hash}.jpg"), 400),
        (format!("/dynamic/resize-width-abc/{hash}.jpg"), 400),
        (format!("/dynamic/resize-width/{hash}.jpg"), 400),
        (format!("/dynamic/o-dpr-2/{hash}.jpg"), 400),
        (format!("/thumb/crop-width-10/{hash}.jpg"), 400),
        (
            format!("/dynamic/resize-width-[image.nowhere]/{hash}.jpg"),
            400,
        ),
        (
            format!("/dynamic/resize-width-[image.width*]/{hash}.jpg"),
            400,
        ),
        (format!("/thumb/{hash}.jpg?v=notjson"), 400),
    ];
    for (path, status) in cases {
        let a = app.render(&path).await;
        assert_eq!(a.status, status, "{path}: {}", a.text());
        assert!(a.json()["error"]["message"].is_string(), "{path}");
    }
    let other_org = app
        .send(
            "GET",
            &format!("{}/nobody/thumb/{hash}.jpg", app.render),
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(other_org.status, 404);
}

#[actix_rt::test]
async fn stack_expressions_and_variables_decide_the_render() {
    let (app, hash, _) = setup().await;
    app.stack(
        "expr",
        json!({
            "operations": [{"name": "resize", "expressions": {"width": "$w"}}],
            "variables": {"w": "image.width / 4"},
            "expressions": [
                {"expression": "options.dpr >= 2", "overrides": {"variables": {"w": 50}}},
                {"expression": "request.headers.save_data == 'on'", "overrides": {"options": {"jpg.quality": 30}}}
            ]
        }),
    )
    .await;
    let size = |a: &crate::helpers::Answer| {
        let img = image::load_from_memory(&a.body).unwrap();
        (img.width(), img.height())
    };
    let plain = app.render(&format!("/expr/{hash}.jpg")).await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(size(&plain), (100, 75));
    assert_eq!(plain.header("vary").as_deref(), Some("Save-Data"));
    let dpr2 = app.render(&format!("/expr/o-dpr-2/{hash}.jpg")).await;
    assert_eq!(size(&dpr2), (100, 75), "50 px at dpr 2");
    let url_var = app.render(&format!("/expr/v-w-40/{hash}.jpg")).await;
    assert_eq!(size(&url_var), (40, 30));
    let url_expr = app
        .render(&format!("/expr/v-w-%5Bimage.height*0.2%5D/{hash}.jpg"))
        .await;
    assert_eq!(url_expr.status, 200, "{}", url_expr.text());
    assert_eq!(size(&url_expr), (60, 45));

    // Save-Data changes the answer, and a request with it is not answered from the
    // resolution remembered for the same URL without it (and the other way round).
    let saving = app
        .send(
            "GET",
            &format!("{}/acme/expr/{hash}.jpg", app.render),
            None,
            &[("Save-Data", "on")],
            None,
        )
        .await;
    assert_eq!(saving.status, 200);
    assert_ne!(saving.body, plain.body);
    assert!(saving.body.len() < plain.body.len());
    let again = app.render(&format!("/expr/{hash}.jpg")).await;
    assert_eq!(again.body, plain.body);
}

#[actix_rt::test]
async fn broken_expressions_are_refused_when_saved_and_failing_ones_when_rendered() {
    let (app, hash, _) = setup().await;
    let a = app
        .json(
            "PUT",
            "/stacks/acme/broken",
            ROOT_KEY,
            &json!({"operations": [{"name": "resize", "expressions": {"width": "image.width *"}}]}),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text());
    let message = a.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("resize.width") && message.contains("position 13"),
        "{message}"
    );
    let a = app
        .json(
            "PUT",
            "/stacks/acme/broken",
            ROOT_KEY,
            &json!({"operations": [], "expressions": [{"expression": "options.dpr >", "overrides": {}}]}),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text());

    app.stack(
        "divides",
        json!({"operations": [{"name": "resize", "expressions": {"width": "image.width / (image.height - image.height)"}}]}),
    )
    .await;
    let a = app.render(&format!("/divides/{hash}.jpg")).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("division by zero"), "{}", a.text());
}

#[actix_rt::test]
async fn a_broken_source_is_answered_422_without_rendering_again() {
    let (app, hash, _) = setup().await;
    if app.bytes_in_object_storage() {
        eprintln!("skipped: it damages a blob file of the data folder, and the bytes are in object storage");
        return;
    }
    let rec = app
        .get(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
        .await
        .json();
    assert_eq!(rec["size"], jpeg(400, 300, 1).len());
    // Damage the stored file behind the appliance's back.
    let blob = find_blob(&app.data.join("blobs"));
    std::fs::write(&blob, b"garbage").unwrap();
    let a = app
        .render(&format!("/dynamic/resize-width-10/{hash}.jpg"))
        .await;
    assert!(
        a.status == 422 || a.status == 415,
        "{} {}",
        a.status,
        a.text()
    );
    let b = app
        .render(&format!("/dynamic/resize-width-10/{hash}.jpg"))
        .await;
    assert_eq!(b.status, a.status);
}

fn find_blob(dir: &std::path::Path) -> std::path::PathBuf {
    let mut files = Vec::new();
    fn walk(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out)
            } else {
                out.push(e.path())
            }
        }
    }
    walk(dir, &mut files);
    let jpeg_len = jpeg(400, 300, 1).len() as u64;
    files
        .into_iter()
        .find(|f| f.metadata().unwrap().len() == jpeg_len)
        .unwrap()
}

#[actix_rt::test]
async fn protected_images_need_a_valid_signature() {
    let (app, hash, _) = setup().await;
    let p = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/options/protected"),
            ROOT_KEY,
            &json!(true),
        )
        .await;
    let protected = p.json()["hash"].as_str().unwrap().to_string();
    let key = app.get("/organizations/acme", ROOT_KEY).await.json()["signing_keys"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/dynamic/resize-width-20/{protected}.jpg");
    assert_eq!(app.render(&path).await.status, 403);
    assert_eq!(
        app.render(&format!("{path}?sig=0000000000000000"))
            .await
            .status,
        403
    );
    let sig = darkroom::url::sign(&path, &key);
    assert_eq!(app.render(&format!("{path}?sig={sig}")).await.status, 200);
    // A client pointed at http://host/{org} signs the path with the organization in front.
    let with_org = darkroom::url::sign(&format!("/acme{path}"), &key);
    assert_eq!(
        app.render(&format!("{path}?sig={with_org}")).await.status,
        200
    );
    // With a slug, a signature over the path without it verifies too.
    let slugged = format!("/dynamic/resize-width-20/{protected}/nice-name.jpg");
    assert_eq!(
        app.render(&format!("{slugged}?sig={sig}")).await.status,
        200
    );
    // Expired signatures are refused.
    let opts = percent_encoding::utf8_percent_encode(
        r#"{"until":"2001-01-01T00:00:00.000Z"}"#,
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let expired_sig = darkroom::url::sign(&format!("{path}?sigopts={opts}"), &key);
    assert_eq!(
        app.render(&format!("{path}?sigopts={opts}&sig={expired_sig}"))
            .await
            .status,
        403
    );
    // The unprotected original still renders without signature.
    assert_eq!(
        app.render(&format!("/dynamic/resize-width-20/{hash}.jpg"))
            .await
            .status,
        200
    );
}

#[actix_rt::test]
async fn a_signature_is_checked_on_every_request_until_it_expires() {
    let (app, hash, _) = setup().await;
    app.stack("secret", json!({"operations": [{"name": "resize", "options": {"width": 30}}], "options": {"protected": true}})).await;
    let key = app.get("/organizations/acme", ROOT_KEY).await.json()["signing_keys"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let until = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].000Z"
        ))
        .unwrap();
    let opts = percent_encoding::utf8_percent_encode(
        &format!(r#"{{"until":"{until}"}}"#),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let path = format!("/secret/{hash}.jpg");
    let sig = darkroom::url::sign(&format!("{path}?sigopts={opts}"), &key);
    let url = format!("{path}?sigopts={opts}&sig={sig}");
    let first = app.render(&url).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let again = app.render(&url).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-darkroom-render").as_deref(), Some("hit"));
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_eq!(app.render(&url).await.status, 403, "the signature expired");
}

#[actix_rt::test]
async fn protected_stacks_and_the_protected_dynamic_stack_need_signatures() {
    let (app, hash, _) = setup().await;
    app.stack("secret", json!({"operations": [{"name": "resize", "options": {"width": 30}}], "options": {"protected": true}})).await;
    assert_eq!(app.render(&format!("/secret/{hash}.jpg")).await.status, 403);
    assert_eq!(
        app.render(&format!("/secret/o-protected-false/{hash}.jpg"))
            .await
            .status,
        403
    );
    assert_eq!(
        app.render(&format!("/dynamic/resize-width-30/{hash}.jpg"))
            .await
            .status,
        200
    );
    app.json(
        "PUT",
        "/organizations/acme/options/protect_dynamic_stack",
        ROOT_KEY,
        &json!(true),
    )
    .await;
    assert_eq!(
        app.render(&format!("/dynamic/resize-width-31/{hash}.jpg"))
            .await
            .status,
        403
    );
    // A URL answered before the option was set is refused from now on as well.
    assert_eq!(
        app.render(&format!("/dynamic/resize-width-30/{hash}.jpg"))
            .await
            .status,
        403
    );
    let key = app.get("/organizations/acme", ROOT_KEY).await.json()["signing_keys"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/dynamic/resize-width-31/{hash}.jpg");
    assert_eq!(
        app.render(&format!("{path}?sig={}", darkroom::url::sign(&path, &key)))
            .await
            .status,
        200
    );
}

#[actix_rt::test]
async fn deleted_images_do_not_render() {
    let (app, hash, _) = setup().await;
    assert_eq!(
        app.render(&format!("/dynamic/resize-width-10/{hash}.jpg"))
            .await
            .status,
        200
    );
    app.delete(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
        .await;
    assert_eq!(
        app.render(&format!("/dynamic/resize-width-10/{hash}.jpg"))
            .await
            .status,
        404
    );
}

#[actix_rt::test]
async fn the_host_form_takes_the_organization_from_the_host() {
    let app = spawn_app_with(|c| c.render.host_template = "{organization}.img.test".into()).await;
    app.create_org("acme").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(40, 30, 1))
        .await;
    let hash = img["hash"].as_str().unwrap();
    let a = app
        .send(
            "GET",
            &format!("{}/dynamic/resize-width-20/{hash}.jpg", app.render),
            None,
            &[("Host", "acme.img.test")],
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(dims(&a), (20, 15));
}

#[actix_rt::test]
async fn sign_url_signs_render_urls_with_the_organizations_key() {
    let (app, hash, _) = setup().await;
    let p = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/options/protected"),
            ROOT_KEY,
            &json!(true),
        )
        .await;
    let protected = p.json()["hash"].as_str().unwrap().to_string();
    let path = format!("/dynamic/resize-width-20/{protected}.jpg");
    let absolute = format!("{}/acme{path}", app.render);
    assert_eq!(app.render(&path).await.status, 403);

    // rokka.js sends JSON with an absolute URL.
    let a = app
        .json(
            "POST",
            "/utils/acme/sign_url",
            ROOT_KEY,
            &json!({"url": path}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let signed = a.json()["signed_url"].as_str().unwrap().to_string();
    assert_eq!(a.json()["original_url"], json!(path));
    assert!(signed.starts_with(&format!("{path}?sig=")), "{signed}");
    assert_eq!(app.render(&signed).await.status, 200);

    // Until a time, rounded up to 300 s: a signature that still holds now.
    let a = app
        .json(
            "POST",
            "/utils/acme/sign_url",
            ROOT_KEY,
            &json!({"url": absolute, "until": "2099-01-01T00:00:01Z", "round_date_up_to": 300}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let signed = a.json()["signed_url"].as_str().unwrap().to_string();
    assert!(
        signed.starts_with(&absolute) && signed.contains("sigopts="),
        "{signed}"
    );
    assert!(a.json()["until"]
        .as_str()
        .unwrap()
        .starts_with("2099-01-01T00:05:00"));
    let through = app.send("GET", &signed, None, &[], None).await;
    assert_eq!(through.status, 200, "{}", through.text());
    // Expired before it was made: refused when rendered.
    let a = app
        .send(
            "POST",
            &format!(
                "/utils/acme/sign_url?url={}&until=2001-01-01T00:00:00Z",
                percent_encoding::utf8_percent_encode(&path, percent_encoding::NON_ALPHANUMERIC)
            ),
            Some(ROOT_KEY),
            &[],
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let expired = a.json()["signed_url"].as_str().unwrap().to_string();
    assert_eq!(app.render(&expired).await.status, 403);

    // Signing takes what seeing the signing key takes.
    let reader = app.create_key("acme", &["read"]).await;
    let a = app
        .json(
            "POST",
            "/utils/acme/sign_url",
            &reader,
            &json!({"url": path}),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.text());
    let a = app
        .json(
            "POST",
            "/utils/acme/sign_url",
            ROOT_KEY,
            &json!({"nourl": 1}),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text());
}

/// A URL that names its image by a hash prefix is remembered after its first answer; an
/// upload that makes the prefix name two images must end that answer at once (most uploads
/// leave the remembered URLs alone: only one sharing six characters moves the generation),
/// while a whole-hash URL of the same image keeps answering.
#[actix_rt::test]
async fn a_prefix_url_stops_answering_once_an_upload_makes_it_ambiguous() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let bytes = png(6, 4);
    let blob = blake3::hash(&bytes).to_hex().to_string();
    // Two versions of the same bytes (dynamic metadata) whose hashes share six characters.
    let hash_of = |i: u32| {
        let dynamic = json!({"version": {"text": format!("v{i}")}});
        darkroom::model::image::image_hash(&blob, dynamic.as_object().unwrap(), false)
    };
    let mut seen = std::collections::HashMap::new();
    let (first, second) = (0u32..)
        .find_map(|i| {
            let h = hash_of(i);
            seen.insert(h[..6].to_string(), i)
                .map(|earlier| (earlier, i))
        })
        .unwrap();
    let upload = |i: u32| {
        let app = &app;
        let bytes = &bytes;
        async move {
            let text = format!(r#"{{"text":"v{i}"}}"#);
            let a = app
                .upload(
                    "acme",
                    ROOT_KEY,
                    &[("filedata", "a.png", bytes)],
                    &[("meta_dynamic[0][version]", &text)],
                )
                .await;
            assert_eq!(a.status, 200, "{}", a.text());
            a.json()["items"][0]["hash"].as_str().unwrap().to_string()
        }
    };
    let a = upload(first).await;
    assert_eq!(a, hash_of(first), "the test's hash is the appliance's");
    let prefix_url = format!("/dynamic/resize-width-3/{}.png", &a[..6]);
    let whole_url = format!("/dynamic/resize-width-3/{a}.png");
    for url in [&prefix_url, &prefix_url, &whole_url, &whole_url] {
        let r = app.render(url).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text());
    }
    let b = upload(second).await;
    assert_eq!(&b[..6], &a[..6]);
    let ambiguous = app.render(&prefix_url).await;
    assert_eq!(ambiguous.status, 404, "the prefix names two images now");
    assert_eq!(app.render(&whole_url).await.status, 200);
}
