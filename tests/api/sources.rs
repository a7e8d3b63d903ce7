//! Source formats beyond the raster photos: SVG drawn at the size a render needs, TIFF, fonts
//! stored for the `text` operation, and the damaged and hostile variants of each, which must
//! be answered with a clear 4xx.

use crate::helpers::{jpeg, png, spawn_app, TestApp, ROOT_KEY};
use serde_json::json;

pub const FONT: &[u8] = include_bytes!("../fixtures/fonts/dejavu-sans-latin.ttf");

/// A `width` × `height` SVG: a red rectangle over the left half, the rest transparent.
pub fn svg_logo(width: u32, height: u32) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">
  <rect x="0" y="0" width="{}" height="{height}" fill="red"/>
</svg>
"#,
        width / 2
    )
    .into_bytes()
}

/// A little-endian TIFF whose header claims `width` × `height` RGB pixels, with one strip of
/// `data` bytes.
fn tiff_claiming(width: u32, height: u32, data: usize) -> Vec<u8> {
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 2),
        (273, 4, 0), // strip offset, filled in below
        (277, 3, 3),
        (278, 4, height),
        (279, 4, data as u32),
    ];
    let ifd_len = 2 + entries.len() * 12 + 4;
    let strip_at = (8 + ifd_len) as u32;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        let value = if tag == 273 { strip_at } else { value };
        if kind == 3 {
            out.extend_from_slice(&(value as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend(std::iter::repeat_n(0x80u8, data));
    out
}

fn hash(v: &serde_json::Value) -> String {
    v["hash"].as_str().expect("a hash").to_string()
}

async fn acme(app: &TestApp) {
    app.create_org("acme").await;
}

#[actix_rt::test]
async fn an_svg_is_stored_with_its_intrinsic_size_and_drawn_sharp_at_any_size() {
    let app = spawn_app().await;
    acme(&app).await;
    let logo = app
        .upload_one("acme", ROOT_KEY, "logo.svg", &svg_logo(120, 80))
        .await;
    assert_eq!(logo["format"], "svg");
    assert_eq!(logo["mimetype"], "image/svg+xml");
    assert_eq!(
        (logo["width"].as_u64(), logo["height"].as_u64()),
        (Some(120), Some(80))
    );
    assert_eq!(logo["opaque"], false);
    let h = hash(&logo);

    let plain = app.render(&format!("/dynamic/noop/{h}.png")).await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    let plain = image::load_from_memory(&plain.body).unwrap().to_rgba8();
    assert_eq!(plain.dimensions(), (120, 80));

    // Enlarged ten times: drawn at 1200 px, so the edge of the rectangle stays one pixel
    // wide instead of a ten-pixel ramp.
    let big = app
        .render(&format!("/dynamic/resize-width-1200/{h}.png"))
        .await;
    assert_eq!(big.status, 200, "{}", big.text());
    let big = image::load_from_memory(&big.body).unwrap().to_rgba8();
    assert_eq!(big.dimensions(), (1200, 800));
    let ramp = (590..610)
        .filter(|&x| {
            let a = big.get_pixel(x, 400).0[3];
            a > 10 && a < 245
        })
        .count();
    assert!(ramp <= 1, "{ramp} half-transparent pixels across the edge");
    assert_eq!(big.get_pixel(300, 400).0, [255, 0, 0, 255]);

    let small = app
        .render(&format!("/dynamic/resize-width-30/{h}.jpg"))
        .await;
    assert_eq!(small.status, 200, "{}", small.text());
    let small = image::load_from_memory(&small.body).unwrap();
    assert_eq!((small.width(), small.height()), (30, 20));
}

#[actix_rt::test]
async fn hostile_and_damaged_svgs_are_refused_with_a_4xx() {
    let app = spawn_app().await;
    acme(&app).await;
    let mut bomb =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE svg [\n<!ENTITY a \"aaaaaaaaaa\">\n");
    let mut previous = "a".to_string();
    for level in 1..=9 {
        let name = format!("a{level}");
        bomb.push_str(&format!(
            "<!ENTITY {name} \"{}\">\n",
            format!("&{previous};").repeat(10)
        ));
        previous = name;
    }
    bomb.push_str(&format!(
        "]>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"><text>&{previous};</text></svg>"
    ));
    let logo = svg_logo(120, 80);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "huge canvas",
            br#"<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"><rect width="1" height="1"/></svg>"#.to_vec(),
            422,
        ),
        ("entity bomb", bomb.into_bytes(), 422),
        ("truncated", logo[..logo.len() / 2].to_vec(), 422),
        (
            "external entity",
            br#"<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&x;</text></svg>"#.to_vec(),
            422,
        ),
        (
            "not UTF-8",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\">\xff\xfe</svg>".to_vec(),
            422,
        ),
    ];
    for (name, bytes, status) in cases {
        let a = app
            .upload("acme", ROOT_KEY, &[("filedata", "x.svg", &bytes)], &[])
            .await;
        assert_eq!(a.status, status, "{name}: {}", a.text());
        assert!(a.json()["error"]["message"].as_str().is_some(), "{name}");
    }
    // Links to files and URLs are accepted but never followed.
    let linking = br#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="20" height="20"><image width="20" height="20" xlink:href="file:///etc/passwd"/><image width="20" height="20" href="http://127.0.0.1:9/x.png"/><rect width="5" height="5" fill="blue"/></svg>"#;
    let h = hash(&app.upload_one("acme", ROOT_KEY, "links.svg", linking).await);
    let drawn = app.render(&format!("/dynamic/noop/{h}.png")).await;
    assert_eq!(drawn.status, 200, "{}", drawn.text());
    let drawn = image::load_from_memory(&drawn.body).unwrap().to_rgba8();
    assert_eq!(drawn.get_pixel(2, 2).0, [0, 0, 255, 255]);
    assert_eq!(drawn.get_pixel(15, 15).0[3], 0);
}

#[actix_rt::test]
async fn tiff_sources_render_and_damaged_or_huge_ones_are_refused() {
    let app = spawn_app().await;
    acme(&app).await;
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        40,
        30,
        image::Rgb([10, 200, 30]),
    ));
    let tiff = crate::helpers::encode(img, image::ImageFormat::Tiff);
    let stored = app.upload_one("acme", ROOT_KEY, "scan.tif", &tiff).await;
    assert_eq!(stored["format"], "tiff");
    assert_eq!(
        (stored["width"].as_u64(), stored["height"].as_u64()),
        (Some(40), Some(30))
    );
    let r = app
        .render(&format!("/dynamic/resize-width-20/{}.png", hash(&stored)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    for (name, bytes, status) in [
        ("huge header", tiff_claiming(100_000, 100_000, 16), 422),
        ("truncated strip", tiff_claiming(64, 64, 100), 422),
        ("truncated file", tiff[..tiff.len() / 3].to_vec(), 422),
    ] {
        let a = app
            .upload("acme", ROOT_KEY, &[("filedata", "x.tif", &bytes)], &[])
            .await;
        assert_eq!(a.status, status, "{name}: {}", a.text());
    }
}

#[actix_rt::test]
async fn avif_and_heic_sources_render_with_libheif_or_are_refused_with_a_clear_message() {
    use darkroom::render::codecs::{decodes, SourceFormat};
    let app = spawn_app().await;
    acme(&app).await;
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(48, 32, |x, _| {
        if x < 24 {
            image::Rgb([220, 30, 30])
        } else {
            image::Rgb([30, 30, 220])
        }
    }));
    let avif = crate::helpers::encode(img, image::ImageFormat::Avif);
    let garbage_heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic\0\0\0\x08free";
    // Written by libheif's heif-enc (x265): left half red, right half blue.
    let heic: &[u8] = include_bytes!("../fixtures/heic/red-blue-64x48.heic");

    let avif_answer = app
        .upload("acme", ROOT_KEY, &[("filedata", "photo.avif", &avif)], &[])
        .await;
    let heic_answer = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "photo.heic", garbage_heic)],
            &[],
        )
        .await;

    if decodes(SourceFormat::Avif) {
        assert_eq!(avif_answer.status, 200, "{}", avif_answer.text());
        let stored = &avif_answer.json()["items"][0];
        assert_eq!(stored["format"], "avif");
        assert_eq!(
            (stored["width"].as_u64(), stored["height"].as_u64()),
            (Some(48), Some(32))
        );
        let r = app
            .render(&format!("/dynamic/resize-width-24/{}.png", hash(stored)))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let png = image::load_from_memory(&r.body).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (24, 16));
        let left = png.get_pixel(4, 8).0;
        assert!(left[0] > 170 && left[2] < 90, "{left:?}");
        let photo = app
            .upload("acme", ROOT_KEY, &[("filedata", "photo.heic", heic)], &[])
            .await;
        assert_eq!(photo.status, 200, "{}", photo.text());
        let stored = &photo.json()["items"][0];
        assert_eq!(
            (stored["format"].as_str(), stored["mimetype"].as_str()),
            (Some("heic"), Some("image/heic"))
        );
        assert_eq!(
            (stored["width"].as_u64(), stored["height"].as_u64()),
            (Some(64), Some(48))
        );
        let r = app
            .render(&format!("/dynamic/noop/{}.png", hash(stored)))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let png = image::load_from_memory(&r.body).unwrap().to_rgb8();
        let (left, right) = (png.get_pixel(8, 24).0, png.get_pixel(56, 24).0);
        assert!(left[0] > 170 && left[2] < 90, "{left:?}");
        assert!(right[2] > 170 && right[0] < 90, "{right:?}");
        // Damaged: the container is recognised, the data is not.
        assert_eq!(heic_answer.status, 422, "{}", heic_answer.text());
        let cut = app
            .upload(
                "acme",
                ROOT_KEY,
                &[("filedata", "cut.heic", &heic[..heic.len() - 100])],
                &[],
            )
            .await;
        assert_eq!(cut.status, 422, "{}", cut.text());
        let truncated = app
            .upload(
                "acme",
                ROOT_KEY,
                &[("filedata", "cut.avif", &avif[..avif.len() / 2])],
                &[],
            )
            .await;
        assert_eq!(truncated.status, 422, "{}", truncated.text());
    } else {
        let photo = app
            .upload("acme", ROOT_KEY, &[("filedata", "photo.heic", heic)], &[])
            .await;
        for (answer, name) in [
            (&avif_answer, "AVIF"),
            (&heic_answer, "HEIC"),
            (&photo, "HEIC"),
        ] {
            assert_eq!(answer.status, 415, "{}", answer.text());
            assert!(
                answer.text().contains(&format!("no {name} decoder")),
                "{}",
                answer.text()
            );
        }
    }
}

/// Organization `acme` with a photo and a font; returns (photo hash, font hash).
async fn acme_with_font(app: &TestApp) -> (String, String) {
    acme(app).await;
    let photo = app
        .upload_one("acme", ROOT_KEY, "photo.jpg", &jpeg(240, 120, 7))
        .await;
    let font = app
        .upload_one("acme", ROOT_KEY, "DejaVuSans.ttf", FONT)
        .await;
    (hash(&photo), hash(&font))
}

#[actix_rt::test]
async fn a_font_is_stored_listed_and_downloadable_but_not_rendered() {
    let app = spawn_app().await;
    let (_, font) = acme_with_font(&app).await;

    let got = app
        .get(&format!("/sourceimages/acme/{font}"), ROOT_KEY)
        .await;
    assert_eq!(got.status, 200);
    let got = got.json();
    assert_eq!(got["format"], "ttf");
    assert_eq!(got["mimetype"], "font/ttf");
    assert_eq!(
        (got["width"].as_u64(), got["height"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(got["static_metadata"]["font"]["glyphs"].as_u64().unwrap() > 100);

    let listed = app.get("/sourceimages/acme", ROOT_KEY).await.json();
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["hash"] == font.as_str()));
    let download = app
        .get(&format!("/sourceimages/acme/{font}/download"), ROOT_KEY)
        .await;
    assert_eq!(download.status, 200);
    assert_eq!(download.body, FONT);

    let render = app.render(&format!("/dynamic/noop/{font}.png")).await;
    assert_eq!(render.status, 400, "{}", render.text());
    assert!(render.text().contains("font"), "{}", render.text());

    let damaged = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "broken.ttf", &FONT[..300])],
            &[],
        )
        .await;
    assert_eq!(damaged.status, 422, "{}", damaged.text());
}

#[actix_rt::test]
async fn a_text_stack_draws_utf8_text_from_the_stack_and_from_the_url() {
    let app = spawn_app().await;
    let (photo, font) = acme_with_font(&app).await;
    app.stack(
        "caption",
        json!([{"name": "text", "options": {
            "font": font, "text": "Grüße", "size": 40, "color": "FFFFFF", "anchor": "center_bottom"
        }}]),
    )
    .await;

    let plain = app.render(&format!("/dynamic/noop/{photo}.png")).await;
    let captioned = app.render(&format!("/caption/{photo}.png")).await;
    assert_eq!(captioned.status, 200, "{}", captioned.text());
    let (plain, captioned) = (
        image::load_from_memory(&plain.body).unwrap().to_rgb8(),
        image::load_from_memory(&captioned.body).unwrap().to_rgb8(),
    );
    assert_eq!(captioned.dimensions(), (240, 120));
    let changed = |y0: u32, y1: u32| {
        (y0..y1)
            .flat_map(|y| (0..240).map(move |x| (x, y)))
            .filter(|&(x, y)| plain.get_pixel(x, y) != captioned.get_pixel(x, y))
            .count()
    };
    assert!(changed(0, 60) == 0, "the top half is untouched");
    assert!(changed(60, 120) > 200, "the text is in the bottom half");

    // The text from the URL, percent-encoded UTF-8 with a dash, overrides the stack's.
    let other = app
        .render(&format!(
            "/caption/text-text-%C3%A9t%C3%A9%2Dhiver/{photo}.png"
        ))
        .await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert_ne!(
        image::load_from_memory(&other.body).unwrap().to_rgb8(),
        captioned
    );
    let dynamic = app
        .render(&format!(
            "/dynamic/text-font-{}-text-Hi-size-30/{photo}.jpg",
            &font[..8]
        ))
        .await;
    assert_eq!(dynamic.status, 200, "{}", dynamic.text());
}

#[actix_rt::test]
async fn a_text_operation_needs_a_font_of_the_organization() {
    let app = spawn_app().await;
    let (photo, font) = acme_with_font(&app).await;
    let logo = hash(
        &app.upload_one("acme", ROOT_KEY, "logo.png", &png(30, 20))
            .await,
    );

    let missing = app
        .render(&format!(
            "/dynamic/text-font-0123456789abcdef-text-x/{photo}.png"
        ))
        .await;
    assert_eq!(missing.status, 400, "{}", missing.text());
    assert!(missing.text().contains("not found"), "{}", missing.text());

    let not_a_font = app
        .render(&format!("/dynamic/text-font-{logo}-text-x/{photo}.png"))
        .await;
    assert_eq!(not_a_font.status, 400, "{}", not_a_font.text());
    assert!(
        not_a_font.text().contains("not a font"),
        "{}",
        not_a_font.text()
    );

    let font_as_image = app
        .render(&format!(
            "/dynamic/composition-secondary_image-{font}-width-20-height-20/{photo}.png"
        ))
        .await;
    assert_eq!(font_as_image.status, 400, "{}", font_as_image.text());

    let no_text = app
        .json(
            "PUT",
            "/stacks/acme/notext",
            ROOT_KEY,
            &json!([{"name": "text", "options": {"font": font}}]),
        )
        .await;
    assert_eq!(no_text.status, 400, "{}", no_text.text());
    assert!(no_text.text().contains("text"), "{}", no_text.text());

    let path = format!("/dynamic/text-font-{font}-text-x/{photo}.png");
    assert_eq!(app.render(&path).await.status, 200);
    assert_eq!(
        app.delete(&format!("/sourceimages/acme/{font}"), ROOT_KEY)
            .await
            .status,
        204
    );
    let gone = app.render(&path).await;
    assert_eq!(gone.status, 400, "{}", gone.text());
    assert!(gone.text().contains("not found"), "{}", gone.text());
}

#[actix_rt::test]
async fn operations_list_the_text_operation() {
    let app = spawn_app().await;

    let ops = app.get("/operations", ROOT_KEY).await.json();

    let text = &ops["text"];
    assert_eq!(text["required"], json!(["font", "text"]));
    for option in [
        "font",
        "text",
        "size",
        "color",
        "opacity",
        "angle",
        "anchor",
        "width",
        "height",
        "spacing",
        "align",
        "resize_to_box",
    ] {
        assert!(text["properties"][option].is_object(), "{option}");
    }
}
