//! Every source decoder behind the limits: `darkroom::render::probe::probe` (the upload check)
//! and `darkroom::render::codecs::decode` (the render path, with and without a reduced-size
//! hint), one harness per format, each starting from small valid files of that format made
//! here. Any error is fine; a panic, an `Internal` error (a 500) or an allocation far beyond
//! the limits is a finding. One more property: a file the upload probe accepts must decode for
//! rendering, or an accepted upload would answer every render with an error.

use crate::engine::{fuzz, Harness, Outcome};
use darkroom::render::codecs::{decode, DecodeHint};
use darkroom::render::error::RenderError;
use darkroom::render::limits::Limits;
use darkroom::render::probe::probe;
use image::codecs::gif::GifEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, Frame, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use std::io::Cursor;

/// Small limits, so that what passes them is cheap to decode and a header that claims more is
/// refused before any buffer exists.
const LIMITS: Limits = Limits {
    max_dimension: 2048,
    max_pixels: 1 << 20,
    max_output_pixels: 1 << 20,
    max_avif_output_pixels: 1 << 16,
    max_render_memory: 64 << 20,
    max_frames: 64,
    max_animation_pixels: 1 << 22,
};

/// tiff 0.11 reserves a tag's values from the tag's count field, up to its default 256 MiB
/// decoding buffer, while `image` builds the decoder and before any limit of ours applies: a
/// 1 KB TIFF can make one decode hold 256 MiB for a moment (reported, not fixed here). The cap
/// sits just above that ceiling, so growth beyond it is still caught. Every decode harness uses
/// it: formats are sniffed from the bytes, so a mutated PNG or AVIF can become a TIFF (the
/// decode-avif harness found one).
const TIFF_ALLOC_CAP: u64 = 272 << 20;

fn rgb(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 16) as u8, (y * 20) as u8, ((x + y) * 8) as u8])
    }))
}

fn rgba(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, y| {
        Rgba([
            (x * 16) as u8,
            (y * 20) as u8,
            90,
            if x < width / 2 { 255 } else { 40 },
        ])
    }))
}

fn encoded(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format)
        .expect("a seed image encodes");
    out.into_inner()
}

/// A minimal big-endian EXIF block with one Orientation entry.
fn exif_app1(orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0*\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut segment = vec![0xff, 0xe1];
    let body_len = 2 + 6 + tiff.len();
    segment.extend_from_slice(&(body_len as u16).to_be_bytes());
    segment.extend_from_slice(b"Exif\0\0");
    segment.extend_from_slice(&tiff);
    segment
}

fn jpeg_seeds() -> Vec<Vec<u8>> {
    let baseline = encoded(&rgb(16, 12), ImageFormat::Jpeg);
    let gray = encoded(
        &DynamicImage::ImageLuma8(rgb(9, 7).to_luma8()),
        ImageFormat::Jpeg,
    );
    let mut rotated = baseline.clone();
    rotated.splice(2..2, exif_app1(6));
    let mut progressive = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut progressive, 80);
    encoder.set_progressive(true);
    let pixels = rgb(24, 16).to_rgb8();
    encoder
        .encode(pixels.as_raw(), 24, 16, jpeg_encoder::ColorType::Rgb)
        .expect("a progressive seed encodes");
    vec![baseline, gray, rotated, progressive]
}

fn png_seeds() -> Vec<Vec<u8>> {
    vec![
        encoded(&rgb(8, 6), ImageFormat::Png),
        encoded(&rgba(8, 6), ImageFormat::Png),
        encoded(
            &DynamicImage::ImageLuma16(rgb(5, 5).to_luma16()),
            ImageFormat::Png,
        ),
    ]
}

fn gif_seeds() -> Vec<Vec<u8>> {
    let mut animated = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut animated);
        let frames = [rgba(6, 5), rgb(6, 5).into_rgba8().into()]
            .into_iter()
            .map(|f: DynamicImage| Frame::new(f.to_rgba8()));
        encoder
            .encode_frames(frames)
            .expect("an animated seed encodes");
    }
    vec![encoded(&rgb(7, 5), ImageFormat::Gif), animated]
}

fn webp_seeds() -> Vec<Vec<u8>> {
    let mut lossless = Vec::new();
    WebPEncoder::new_lossless(&mut lossless)
        .encode(
            rgba(8, 6).to_rgba8().as_raw(),
            8,
            6,
            image::ExtendedColorType::Rgba8,
        )
        .expect("a lossless seed encodes");
    let pixels = rgb(16, 12).to_rgb8();
    let lossy = webp::Encoder::from_rgb(pixels.as_raw(), 16, 12)
        .encode(60.0)
        .to_vec();
    vec![lossless, lossy]
}

fn tiff_seeds() -> Vec<Vec<u8>> {
    vec![
        encoded(&rgb(6, 4), ImageFormat::Tiff),
        encoded(&rgba(6, 4), ImageFormat::Tiff),
    ]
}

fn bmp_seeds() -> Vec<Vec<u8>> {
    vec![
        encoded(&rgb(6, 4), ImageFormat::Bmp),
        encoded(&rgba(5, 3), ImageFormat::Bmp),
    ]
}

fn avif_seeds() -> Vec<Vec<u8>> {
    vec![encoded(&rgb(8, 8), ImageFormat::Avif)]
}

fn svg_seeds() -> Vec<Vec<u8>> {
    [
        &br#"<svg xmlns="http://www.w3.org/2000/svg" width="12" height="8"><rect width="6" height="8" fill="red"/></svg>"#[..],
        br##"<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY c "#00f">]>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 16 10">
<defs><linearGradient id="g"><stop offset="0" stop-color="&c;"/><stop offset="1" stop-color="#fff" stop-opacity="0.5"/></linearGradient>
<filter id="f"><feGaussianBlur stdDeviation="1"/></filter><path id="p" d="M1 1 L15 9 Q8 0 1 9 Z"/></defs>
<use xlink:href="#p" fill="url(#g)" filter="url(#f)" transform="rotate(10 8 5)"/>
<circle cx="8" cy="5" r="3" stroke="black" stroke-dasharray="1 1" fill="none"/>
<text x="1" y="9">hi</text><image width="4" height="4" href="data:image/png;base64,iVBORw0KGgo="/>
</svg>"##,
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

fn heic_seeds() -> Vec<Vec<u8>> {
    vec![include_bytes!("../fixtures/heic/red-blue-64x48.heic").to_vec()]
}

fn font_seeds() -> Vec<Vec<u8>> {
    vec![include_bytes!("../fixtures/fonts/dejavu-sans-latin.ttf").to_vec()]
}

/// Recomputes every PNG chunk's CRC, so that mutated header and data fields reach the decoder
/// instead of failing the checksum.
fn fix_png(bytes: &mut [u8]) {
    let mut at = 8;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let end = at + 8 + len as usize;
        if end + 4 > bytes.len() {
            break;
        }
        let crc = crc32(&bytes[at + 4..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

/// Sets the RIFF size field of a WebP file to its real length.
fn fix_webp(bytes: &mut [u8]) {
    if bytes.len() >= 12 {
        let size = (bytes.len() - 8) as u32;
        bytes[4..8].copy_from_slice(&size.to_le_bytes());
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

fn dictionary() -> Vec<Vec<u8>> {
    [
        &b"\xff\xd8"[..],
        b"\xff\xd9",
        b"\xff\xc0",
        b"\xff\xc2",
        b"\xff\xc4",
        b"\xff\xda",
        b"\xff\xdb",
        b"\xff\xdd",
        b"\xff\xe1",
        b"\xff\xe2ICC_PROFILE\0",
        b"Exif\0\0",
        b"IHDR",
        b"IDAT",
        b"PLTE",
        b"tRNS",
        b"acTL",
        b"fcTL",
        b"iCCP",
        b"IEND",
        b"NETSCAPE2.0",
        b"!\xf9\x04",
        b"RIFF",
        b"VP8 ",
        b"VP8L",
        b"VP8X",
        b"ANIM",
        b"ANMF",
        b"ALPH",
        b"II*\0",
        b"MM\0*",
        b"BM",
        b"ftypavif",
        b"ftypheic",
        b"hvcC",
        b"irot",
        b"iloc",
        b"ispe",
        b"\x7f\xff\xff\xff",
        b"\0\0\x40\0",
        b"<svg ",
        b"<!DOCTYPE svg [",
        b"<!ENTITY e \"&e;&e;\">",
        b"&e;",
        b" width=\"99999\"",
        b" viewBox=\"0 0 1e9 1\"",
        b"<use xlink:href=\"#p\"/>",
        b" stdDeviation=\"500\"",
        b"<pattern id=\"q\" width=\"0.001\" height=\"0.001\">",
        b"glyf",
        b"cmap",
        b"kern",
        b"loca",
        b"OTTO",
        b"\0\x01\0\0",
    ]
    .iter()
    .map(|t| t.to_vec())
    .collect()
}

fn label(result: &Result<(u32, u32), RenderError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => {
            let kind = match e {
                RenderError::Invalid(_) => "invalid",
                RenderError::Unsupported(_) => "unsupported",
                RenderError::Unprocessable(_) => "unprocessable",
                RenderError::TooLarge(_) => "too large",
                RenderError::Internal(_) => "internal",
                RenderError::Cancelled => "cancelled",
            };
            format!(
                "{kind}: {}",
                e.to_string().chars().take(40).collect::<String>()
            )
        }
    }
}

fn decode_one(input: &[u8]) -> Outcome {
    let probed = probe(input, &LIMITS).map(|info| (info.width, info.height));
    let full = decode(input, &LIMITS, None).map(|d| (d.image.width(), d.image.height()));
    let hint = Some(DecodeHint {
        min_width: 3,
        min_height: 2,
    });
    let reduced = decode(input, &LIMITS, hint).map(|d| (d.image.width(), d.image.height()));
    for (what, result) in [
        ("probe", &probed),
        ("decode", &full),
        ("reduced decode", &reduced),
    ] {
        if let Err(RenderError::Internal(m)) = result {
            return Err(format!("{what} answers an internal error (a 500): {m}"));
        }
    }
    // A font is probed (it is stored for `text`) but never decoded as an image: the text
    // operation must be able to parse what the probe accepted.
    if probed.is_ok() && darkroom::render::codecs::sniff(input).is_some_and(|f| f.is_font()) {
        if !matches!(full, Err(RenderError::Invalid(_))) {
            return Err("a font decodes as an image".into());
        }
        if let Err(e) = darkroom::render::codecs::parse_font(input) {
            return Err(format!(
                "the probe accepts a font that text cannot use: {e}"
            ));
        }
        return Ok("font".into());
    }
    if let Ok((w, h)) = probed {
        if w > LIMITS.max_dimension
            || h > LIMITS.max_dimension
            || u64::from(w) * u64::from(h) > LIMITS.max_pixels
        {
            return Err(format!("the probe accepts {w}x{h}, beyond the limits"));
        }
        if let Err(e) = &full {
            return Err(format!(
                "the probe accepts it but a render cannot decode it: {e}"
            ));
        }
    }
    Ok(format!(
        "{} / {} / {}",
        label(&probed),
        label(&full),
        label(&reduced)
    ))
}

fn run(name: &str, seeds: Vec<Vec<u8>>, fixup: Option<fn(&mut [u8])>, alloc_cap: u64) {
    let max_len = seeds.iter().map(Vec::len).max().unwrap_or(0) * 2 + 256;
    fuzz(
        Harness {
            name,
            seeds,
            dictionary: dictionary(),
            max_len,
            fixup,
            generate: None,
            alloc_cap,
        },
        &mut decode_one,
    );
}

#[test]
fn mutated_jpegs_are_refused_or_decoded_within_the_limits() {
    run("decode-jpeg", jpeg_seeds(), None, TIFF_ALLOC_CAP);
}

#[test]
fn mutated_pngs_are_refused_or_decoded_within_the_limits() {
    run("decode-png", png_seeds(), Some(fix_png), TIFF_ALLOC_CAP);
}

#[test]
fn mutated_gifs_are_refused_or_decoded_within_the_limits() {
    run("decode-gif", gif_seeds(), None, TIFF_ALLOC_CAP);
}

#[test]
fn mutated_webps_are_refused_or_decoded_within_the_limits() {
    run("decode-webp", webp_seeds(), Some(fix_webp), TIFF_ALLOC_CAP);
}

#[test]
fn mutated_tiffs_are_refused_or_decoded_within_the_limits() {
    run("decode-tiff", tiff_seeds(), None, TIFF_ALLOC_CAP);
}

#[test]
fn mutated_bmps_are_refused_or_decoded_within_the_limits() {
    run("decode-bmp", bmp_seeds(), None, TIFF_ALLOC_CAP);
}

#[test]
fn mutated_avifs_are_refused_without_panicking() {
    run("decode-avif", avif_seeds(), None, TIFF_ALLOC_CAP);
}

/// Animations as the animated renders read them: an animated GIF with partial frames and every
/// disposal method, an APNG, and a WebP written by the animation encoder.
fn animation_seeds() -> Vec<Vec<u8>> {
    use darkroom::render::codecs::animation::AnimationEncoder;
    use darkroom::render::codecs::{EncodeOptions, OutputFormat};
    let mut gif = Vec::new();
    {
        let palette = [255, 255, 255, 230, 20, 20, 20, 40, 230];
        let mut encoder = gif::Encoder::new(&mut gif, 8, 6, &palette).expect("a GIF seed");
        encoder
            .set_repeat(gif::Repeat::Finite(2))
            .expect("a GIF seed");
        for (left, size, index, dispose) in [
            (0, 6, 0, gif::DisposalMethod::Keep),
            (2, 3, 1, gif::DisposalMethod::Background),
            (4, 2, 2, gif::DisposalMethod::Previous),
        ] {
            let frame = gif::Frame {
                left,
                top: 0,
                width: size,
                height: size,
                delay: 4,
                dispose,
                transparent: Some(0).filter(|_| index == 2),
                buffer: std::borrow::Cow::Owned(vec![index; usize::from(size * size)]),
                ..gif::Frame::default()
            };
            encoder.write_frame(&frame).expect("a GIF seed");
        }
    }
    let mut apng = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut apng, 5, 4);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_animated(2, 0).expect("an APNG seed");
        let mut writer = encoder.write_header().expect("an APNG seed");
        for f in [rgba(5, 4), rgb(5, 4).into_rgba8().into()] {
            let f: DynamicImage = f;
            writer
                .write_image_data(f.to_rgba8().as_raw())
                .expect("an APNG seed");
        }
        writer.finish().expect("an APNG seed");
    }
    let options = EncodeOptions {
        format: OutputFormat::Webp,
        quality: 60,
        lossless: false,
        png_compression: 6,
        background: [255, 255, 255],
        icc: None,
        progressive: false,
    };
    let mut webp = AnimationEncoder::new(&options, 6, 5, None).expect("a WebP seed");
    for f in [rgba(6, 5), rgb(6, 5)] {
        webp.add(&f, 50).expect("a WebP seed");
    }
    vec![gif, apng, webp.finish().expect("a WebP seed")]
}

/// Opens an animation under the limits, reads every frame and writes them as an animated GIF,
/// as an animated render does.
fn animation_one(input: &[u8]) -> Outcome {
    use darkroom::render::codecs::animation::{Animation, AnimationEncoder};
    use darkroom::render::codecs::{EncodeOptions, OutputFormat};
    let internal = |what: &str, e: &RenderError| match e {
        RenderError::Internal(m) => Err(format!("{what} answers an internal error (a 500): {m}")),
        _ => Ok(()),
    };
    let mut animation = match Animation::open(input, &LIMITS) {
        Ok(Some(a)) => a,
        Ok(None) => return Ok("not an animation".into()),
        Err(e) => {
            internal("open", &e)?;
            return Ok(label(&Err(e)));
        }
    };
    if animation.frames > u64::from(LIMITS.max_frames) {
        return Err(format!(
            "{} frames opened, beyond the limit",
            animation.frames
        ));
    }
    let options = EncodeOptions {
        format: OutputFormat::Gif,
        quality: 50,
        lossless: false,
        png_compression: 6,
        background: [255, 255, 255],
        icc: None,
        progressive: false,
    };
    let mut encoder = None;
    let mut frames = 0u64;
    loop {
        match animation.next_frame() {
            Ok(Some(frame)) => {
                frames += 1;
                let (w, h) = (frame.image.width(), frame.image.height());
                if frames > animation.frames {
                    return Err(format!(
                        "frame {frames} read of {} declared",
                        animation.frames
                    ));
                }
                let encoder = match &mut encoder {
                    Some(e) => e,
                    None => match AnimationEncoder::new(&options, w, h, animation.plays) {
                        Ok(e) => encoder.insert(e),
                        Err(e) => {
                            internal("the encoder", &e)?;
                            return Ok(label(&Err(e)));
                        }
                    },
                };
                if let Err(e) = encoder.add(&frame.image, frame.delay_ms) {
                    internal("a frame's encode", &e)?;
                    return Ok(label(&Err(e)));
                }
            }
            Ok(None) => break,
            Err(e) => {
                internal("a frame's decode", &e)?;
                return Ok(format!("after {frames} frames, {}", label(&Err(e))));
            }
        }
    }
    if let Some(encoder) = encoder {
        if let Err(e) = encoder.finish() {
            internal("the end of the encode", &e)?;
        }
    }
    Ok(format!("{frames} frames"))
}

#[test]
fn mutated_animations_are_refused_or_rendered_frame_by_frame_within_the_limits() {
    let seeds = animation_seeds();
    let max_len = seeds.iter().map(Vec::len).max().unwrap_or(0) * 2 + 256;
    fuzz(
        Harness {
            name: "decode-animation",
            seeds,
            dictionary: dictionary(),
            max_len,
            fixup: None,
            generate: None,
            alloc_cap: 96 << 20,
        },
        &mut animation_one,
    );
}

#[test]
fn mutated_svgs_are_refused_or_drawn_within_the_limits() {
    run("decode-svg", svg_seeds(), None, TIFF_ALLOC_CAP);
}

#[test]
fn mutated_fonts_are_refused_or_usable() {
    run("decode-font", font_seeds(), None, TIFF_ALLOC_CAP);
}

#[test]
fn mutated_heics_are_refused_or_decoded_within_the_limits() {
    run("decode-heic", heic_seeds(), None, TIFF_ALLOC_CAP);
}
