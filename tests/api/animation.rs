//! Animated sources (GIF, WebP, APNG): rendered to animated `gif` and `webp` with every frame
//! through the same operations and one geometry, delays, disposal and loop count kept; other
//! outputs get the first frame; frame bombs and damaged animations answered 4xx.

use crate::helpers::*;
use image::codecs::gif::GifDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::LoopCount;
use image::{AnimationDecoder, Rgba, RgbaImage};
use serde_json::json;
use std::borrow::Cow;
use std::io::Cursor;

const RED: [u8; 4] = [230, 20, 20, 255];
const GREEN: [u8; 4] = [20, 200, 40, 255];
const BLUE: [u8; 4] = [20, 40, 230, 255];
const WHITE: [u8; 4] = [255, 255, 255, 255];
const BLACK: [u8; 4] = [0, 0, 0, 255];

/// An animated GIF of whole-canvas RGBA frames with these delays (hundredths of a second).
fn gif_of(frames: &[RgbaImage], delays_cs: &[u16], repeat: Option<gif::Repeat>) -> Vec<u8> {
    let (w, h) = frames[0].dimensions();
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, w as u16, h as u16, &[]).unwrap();
        if let Some(repeat) = repeat {
            enc.set_repeat(repeat).unwrap();
        }
        for (img, delay) in frames.iter().zip(delays_cs) {
            let mut raw = img.as_raw().clone();
            let mut frame = gif::Frame::from_rgba_speed(w as u16, h as u16, &mut raw, 10);
            frame.delay = *delay;
            enc.write_frame(&frame).unwrap();
        }
    }
    out
}

fn solid(w: u32, h: u32, colour: [u8; 4]) -> RgbaImage {
    RgbaImage::from_pixel(w, h, Rgba(colour))
}

/// A decoded animation: composed frames, their delays in ms, and how often it plays
/// (`None` = forever).
struct Decoded {
    frames: Vec<RgbaImage>,
    delays_ms: Vec<u32>,
    plays: Option<u32>,
}

fn delay_ms(frame: &image::Frame) -> u32 {
    let (n, d) = frame.delay().numer_denom_ms();
    (n + d / 2) / d
}

fn decode_gif(bytes: &[u8]) -> Decoded {
    // The loop count as written, read with the gif crate: a GIF without a loop extension
    // plays once, NETSCAPE n repeats n times after the first play.
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut raw = options.read_info(Cursor::new(bytes)).unwrap();
    let (cw, ch) = (raw.width(), raw.height());
    while let Some(frame) = raw.read_next_frame().unwrap() {
        // Every frame of our output covers the whole canvas.
        assert_eq!((frame.left, frame.top), (0, 0));
        assert_eq!((frame.width, frame.height), (cw, ch));
    }
    let plays = match raw.repeat() {
        gif::Repeat::Infinite => None,
        gif::Repeat::Finite(n) => Some(u32::from(n) + 1),
    };
    let decoder = GifDecoder::new(Cursor::new(bytes)).unwrap();
    let frames = decoder.into_frames().collect_frames().unwrap();
    Decoded {
        delays_ms: frames.iter().map(delay_ms).collect(),
        frames: frames.into_iter().map(|f| f.into_buffer()).collect(),
        plays,
    }
}

fn decode_webp(bytes: &[u8]) -> Decoded {
    let mut decoder = WebPDecoder::new(Cursor::new(bytes)).unwrap();
    assert!(decoder.has_animation());
    // Disposed frames clear to transparent, as in browsers.
    decoder.set_background_color(Rgba([0, 0, 0, 0])).unwrap();
    let plays = match decoder.loop_count() {
        LoopCount::Infinite => None,
        LoopCount::Finite(n) => Some(n.get()),
    };
    let frames = decoder.into_frames().collect_frames().unwrap();
    Decoded {
        delays_ms: frames.iter().map(delay_ms).collect(),
        frames: frames.into_iter().map(|f| f.into_buffer()).collect(),
        plays,
    }
}

fn near(actual: &Rgba<u8>, expected: [u8; 4], tolerance: u8) -> bool {
    actual
        .0
        .iter()
        .zip(expected)
        .all(|(a, e)| a.abs_diff(e) <= tolerance)
}

fn assert_colour(img: &RgbaImage, x: u32, y: u32, expected: [u8; 4], what: &str) {
    let px = img.get_pixel(x, y);
    assert!(
        near(px, expected, 24),
        "{what}: pixel ({x},{y}) is {px:?}, expected {expected:?}"
    );
}

async fn acme_with(app: &TestApp, name: &str, bytes: &[u8]) -> String {
    app.create_org("acme").await;
    let img = app.upload_one("acme", ROOT_KEY, name, bytes).await;
    img["hash"].as_str().unwrap().to_string()
}

/// Three frames of 60×40 in red, green and blue, shown 0.1, 0.2 and 0.3 s, looping twice
/// after the first play.
fn three_colours() -> Vec<u8> {
    gif_of(
        &[
            solid(60, 40, RED),
            solid(60, 40, GREEN),
            solid(60, 40, BLUE),
        ],
        &[10, 20, 30],
        Some(gif::Repeat::Finite(2)),
    )
}

#[actix_rt::test]
async fn an_animated_gif_renders_to_an_animated_gif_with_every_frame_resized() {
    let app = spawn_app().await;
    let hash = acme_with(&app, "anim.gif", &three_colours()).await;

    let a = app
        .render(&format!("/dynamic/resize-width-30/{hash}.gif"))
        .await;

    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type").as_deref(), Some("image/gif"));
    let out = decode_gif(&a.body);
    assert_eq!(out.frames.len(), 3);
    assert_eq!(out.delays_ms, vec![100, 200, 300]);
    assert_eq!(out.plays, Some(3));
    for (frame, colour) in out.frames.iter().zip([RED, GREEN, BLUE]) {
        assert_eq!(frame.dimensions(), (30, 20));
        assert_colour(frame, 15, 10, colour, "frame");
    }
}

#[actix_rt::test]
async fn an_animated_gif_renders_to_an_animated_webp_with_its_delays_and_loop_count() {
    let app = spawn_app().await;
    let hash = acme_with(&app, "anim.gif", &three_colours()).await;

    let a = app
        .render(&format!("/dynamic/resize-width-30/{hash}.webp"))
        .await;

    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type").as_deref(), Some("image/webp"));
    let out = decode_webp(&a.body);
    assert_eq!(out.frames.len(), 3);
    assert_eq!(out.delays_ms, vec![100, 200, 300]);
    assert_eq!(out.plays, Some(3));
    for (frame, colour) in out.frames.iter().zip([RED, GREEN, BLUE]) {
        assert_eq!(frame.dimensions(), (30, 20));
        assert_colour(frame, 15, 10, colour, "frame");
    }
}

#[actix_rt::test]
async fn an_animated_webp_and_an_apng_render_to_animations_too() {
    let app = spawn_app().await;
    let gif = acme_with(&app, "anim.gif", &three_colours()).await;
    // A WebP animation made by the appliance itself becomes a source.
    let webp = app
        .render(&format!("/dynamic/resize-width-30/{gif}.webp"))
        .await
        .body;
    let webp = app.upload_one("acme", ROOT_KEY, "anim.webp", &webp).await;
    assert_eq!(webp["animated"], json!(true));
    // An APNG that plays forever: red then blue, 0.25 s each.
    let mut apng = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut apng, 16, 12);
        enc.set_color(png::ColorType::Rgba);
        enc.set_animated(2, 0).unwrap();
        enc.set_frame_delay(1, 4).unwrap();
        let mut writer = enc.write_header().unwrap();
        for colour in [RED, BLUE] {
            writer
                .write_image_data(solid(16, 12, colour).as_raw())
                .unwrap();
        }
        writer.finish().unwrap();
    }
    let apng = app.upload_one("acme", ROOT_KEY, "anim.png", &apng).await;
    assert_eq!(apng["animated"], json!(true));

    let from_webp = app
        .render(&format!(
            "/dynamic/resize-width-20/{}.gif",
            webp["hash"].as_str().unwrap()
        ))
        .await;
    let from_apng = app
        .render(&format!(
            "/dynamic/resize-width-8/{}.webp",
            apng["hash"].as_str().unwrap()
        ))
        .await;

    assert_eq!(from_webp.status, 200, "{}", from_webp.text());
    let out = decode_gif(&from_webp.body);
    assert_eq!(out.delays_ms, vec![100, 200, 300]);
    assert_eq!(out.plays, Some(3));
    for (frame, colour) in out.frames.iter().zip([RED, GREEN, BLUE]) {
        assert_eq!(frame.dimensions(), (20, 13));
        assert_colour(frame, 10, 6, colour, "frame from WebP");
    }
    assert_eq!(from_apng.status, 200, "{}", from_apng.text());
    let out = decode_webp(&from_apng.body);
    assert_eq!(out.delays_ms, vec![250, 250]);
    assert_eq!(out.plays, None);
    for (frame, colour) in out.frames.iter().zip([RED, BLUE]) {
        assert_eq!(frame.dimensions(), (8, 6));
        assert_colour(frame, 4, 3, colour, "frame from APNG");
    }
}

#[actix_rt::test]
async fn other_outputs_get_the_first_frame_and_expressions_see_an_animation() {
    let app = spawn_app().await;
    let hash = acme_with(&app, "anim.gif", &three_colours()).await;
    let still = app
        .upload_one("acme", ROOT_KEY, "still.png", &png(60, 40))
        .await;
    app.stack(
        "animated-half",
        json!({
            "operations": [{"name": "resize", "expressions": {"width": "$w"}}],
            "variables": {"w": 60},
            "expressions": [
                {"expression": "image.isAnimated", "overrides": {"variables": {"w": 30}}}
            ]
        }),
    )
    .await;

    for ext in ["jpg", "png"] {
        let a = app
            .render(&format!("/dynamic/resize-width-30/{hash}.{ext}"))
            .await;
        assert_eq!(a.status, 200, "{ext}: {}", a.text());
        let img = image::load_from_memory(&a.body).unwrap().to_rgba8();
        assert_eq!(img.dimensions(), (30, 20), "{ext}");
        assert_colour(&img, 15, 10, RED, ext);
    }
    let animated = app.render(&format!("/animated-half/{hash}.png")).await;
    let not = app
        .render(&format!(
            "/animated-half/{}.png",
            still["hash"].as_str().unwrap()
        ))
        .await;
    let width = |a: &Answer| image::load_from_memory(&a.body).unwrap().width();
    assert_eq!((width(&animated), width(&not)), (30, 60));
}

/// Frames whose detail moves: frame 0 is busy on its left half, frame 1 on its right half.
fn moving_detail() -> Vec<u8> {
    let busy_left = RgbaImage::from_fn(80, 40, |x, y| {
        if x < 40 && (x / 4 + y / 4) % 2 == 0 {
            Rgba(BLACK)
        } else {
            Rgba(WHITE)
        }
    });
    let busy_right = RgbaImage::from_fn(80, 40, |x, y| {
        if x >= 40 && (x / 4 + y / 4) % 2 == 0 {
            Rgba(BLACK)
        } else {
            Rgba(WHITE)
        }
    });
    gif_of(&[busy_left, busy_right], &[10, 10], None)
}

#[actix_rt::test]
async fn a_smart_crop_is_decided_on_the_first_frame_and_applied_to_every_frame() {
    let app = spawn_app().await;
    let hash = acme_with(&app, "moving.gif", &moving_detail()).await;

    let a = app
        .render(&format!(
            "/dynamic/crop-width-40-height-40-anchor-smart/{hash}.gif"
        ))
        .await;

    assert_eq!(a.status, 200, "{}", a.text());
    let out = decode_gif(&a.body);
    assert_eq!(out.frames.len(), 2);
    assert_eq!(
        out.plays,
        Some(1),
        "a GIF without a loop extension plays once"
    );
    for frame in &out.frames {
        assert_eq!(frame.dimensions(), (40, 40));
    }
    // The first frame's detail is on the left, so both frames show the left half: the
    // checkerboard, then plain white (not the second frame's checkerboard).
    let blacks = |f: &RgbaImage| f.pixels().filter(|p| p.0[0] < 128).count();
    assert!(blacks(&out.frames[0]) > 600, "{}", blacks(&out.frames[0]));
    assert_eq!(blacks(&out.frames[1]), 0);
}

/// A GIF built like real-world ones: a global palette, partial frames at offsets and every
/// disposal method, on a 20×20 canvas whose quadrants end up coloured differently.
fn disposal_gif() -> Vec<u8> {
    // White, red, blue, green, black.
    let palette = [
        255, 255, 255, 230, 20, 20, 20, 40, 230, 20, 200, 40, 0, 0, 0,
    ];
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, 20, 20, &palette).unwrap();
        enc.set_repeat(gif::Repeat::Infinite).unwrap();
        let frame = |left: u16, top: u16, size: u16, index: u8, dispose| {
            let mut buffer = vec![index; usize::from(size) * usize::from(size)];
            if index == 0 {
                // The full first frame: red top-left quadrant on white.
                for y in 0..10 {
                    for x in 0..10 {
                        buffer[y * 20 + x] = 1;
                    }
                }
            }
            gif::Frame {
                left,
                top,
                width: size,
                height: size,
                delay: 5,
                dispose,
                buffer: Cow::Owned(buffer),
                ..gif::Frame::default()
            }
        };
        use gif::DisposalMethod::{Background, Keep, Previous};
        for f in [
            frame(0, 0, 20, 0, Keep),
            // Blue bottom-right, cleared after its time.
            frame(10, 10, 10, 2, Background),
            // Green bottom-left, restored to what was before it after its time.
            frame(0, 10, 10, 3, Previous),
            // Black top-right, kept.
            frame(10, 0, 10, 4, Keep),
        ] {
            enc.write_frame(&f).unwrap();
        }
    }
    out
}

#[actix_rt::test]
async fn gif_disposal_is_composed_before_the_operations_and_kept_in_every_output() {
    let app = spawn_app().await;
    let hash = acme_with(&app, "disposal.gif", &disposal_gif()).await;
    const CLEAR: [u8; 4] = [0, 0, 0, 0];
    // Centres of the top-left, top-right, bottom-left and bottom-right quadrants.
    let expected = [
        [RED, WHITE, WHITE, WHITE],
        [RED, WHITE, WHITE, BLUE],
        [RED, WHITE, GREEN, CLEAR],
        [RED, BLACK, WHITE, CLEAR],
    ];

    // The WebP written here is a source too: its frames are composed the same way.
    let webp = app
        .render(&format!("/dynamic/rotate-angle-180/{hash}.webp"))
        .await;
    let webp = app
        .upload_one("acme", ROOT_KEY, "turned.webp", &webp.body)
        .await;
    let webp_url = format!(
        "/dynamic/rotate-angle-360/{}.gif",
        webp["hash"].as_str().unwrap()
    );

    for (ext, url) in [
        ("gif", format!("/dynamic/rotate-angle-180/{hash}.gif")),
        ("webp", format!("/dynamic/rotate-angle-180/{hash}.webp")),
        ("gif from webp", webp_url),
    ] {
        let a = app.render(&url).await;
        assert_eq!(a.status, 200, "{ext}: {}", a.text());
        let out = if ext == "webp" {
            decode_webp(&a.body)
        } else {
            decode_gif(&a.body)
        };
        assert_eq!(out.frames.len(), 4, "{ext}");
        assert_eq!(out.delays_ms, vec![50; 4], "{ext}");
        assert_eq!(out.plays, None, "{ext}");
        for (i, (frame, quadrants)) in out.frames.iter().zip(expected).enumerate() {
            assert_eq!(frame.dimensions(), (20, 20));
            // Turned half round: top-left is now bottom-right, and so on.
            for ((x, y), colour) in [(15, 15), (5, 15), (15, 5), (5, 5)]
                .into_iter()
                .zip(quadrants)
            {
                let px = frame.get_pixel(x, y);
                let ok = if colour == CLEAR {
                    px.0[3] == 0
                } else {
                    near(px, colour, 24)
                };
                assert!(
                    ok,
                    "{ext} frame {i} at ({x},{y}): {px:?}, expected {colour:?}"
                );
            }
        }
    }
}

#[actix_rt::test]
async fn frame_bombs_are_refused_before_decoding_and_still_render_their_first_frame() {
    let app = spawn_app_with(|c| {
        c.limits.max_frames = 50;
        c.limits.max_animation_pixels = 1_000_000;
    })
    .await;
    app.create_org("acme").await;
    let many = gif_of(
        &vec![solid(4, 4, RED); 51],
        &[2; 51],
        Some(gif::Repeat::Infinite),
    );
    // A 400×400 canvas of ten 1×1 frames: tiny file, 1.6 million pixels to compose.
    let mut wide = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut wide, 400, 400, &[0, 0, 0, 255, 0, 0]).unwrap();
        for _ in 0..10 {
            let frame = gif::Frame {
                width: 1,
                height: 1,
                buffer: Cow::Owned(vec![1]),
                ..gif::Frame::default()
            };
            enc.write_frame(&frame).unwrap();
        }
    }

    for (name, bytes, figure) in [
        ("many.gif", many, "51 frames"),
        ("wide.gif", wide, "1600000"),
    ] {
        let img = app.upload_one("acme", ROOT_KEY, name, &bytes).await;
        let hash = img["hash"].as_str().unwrap();
        for ext in ["gif", "webp"] {
            let a = app
                .render(&format!("/dynamic/resize-width-2/{hash}.{ext}"))
                .await;
            assert_eq!(a.status, 422, "{name} {ext}: {}", a.text());
            let message = a.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(message.contains(figure), "{name}: {message}");
        }
        let first = app
            .render(&format!("/dynamic/resize-width-2/{hash}.png"))
            .await;
        assert_eq!(first.status, 200, "{name}: {}", first.text());
    }
}

#[actix_rt::test]
async fn damaged_animations_are_answered_4xx_never_5xx() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let gif = three_colours();
    // Cut inside the last frame's image data.
    let truncated_gif = gif[..gif.len() - 6].to_vec();
    let webp = {
        let hash = app.upload_one("acme", ROOT_KEY, "a.gif", &gif).await;
        app.render(&format!(
            "/dynamic/resize-width-30/{}.webp",
            hash["hash"].as_str().unwrap()
        ))
        .await
        .body
    };
    // Garbage over the second half of the WebP, where the later frames are.
    let mut scrambled_webp = webp.clone();
    let half = scrambled_webp.len() / 2;
    for (i, b) in scrambled_webp[half..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ 0x5a;
    }
    let truncated_webp = webp[..webp.len() * 3 / 4].to_vec();

    let mut rendered = 0;
    for (name, bytes) in [
        ("truncated.gif", truncated_gif),
        ("scrambled.webp", scrambled_webp),
        ("truncated.webp", truncated_webp),
    ] {
        let up = app
            .upload("acme", ROOT_KEY, &[("filedata", name, &bytes)], &[])
            .await;
        if up.status != 200 {
            assert!((400..500).contains(&up.status), "{name}: {}", up.text());
            continue;
        }
        let hash = up.json()["items"][0]["hash"].as_str().unwrap().to_string();
        rendered += 1;
        for ext in ["gif", "webp", "jpg"] {
            let a = app
                .render(&format!("/dynamic/resize-width-20/{hash}.{ext}"))
                .await;
            assert!(
                a.status == 200 || (400..500).contains(&a.status),
                "{name} {ext}: {} {}",
                a.status,
                a.text()
            );
            if ext != "jpg" {
                assert_ne!(a.status, 200, "{name} {ext}: a damaged animation rendered");
            }
        }
    }
    // The upload check reads the first frame only: damage further on reaches the renders.
    assert!(rendered >= 2, "{rendered}");
}
