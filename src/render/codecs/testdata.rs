//! Test inputs built in memory, each named by what it exercises. Files the available encoders
//! cannot write (palette and interlaced PNG, absurd headers) are assembled chunk by chunk with
//! uncompressed deflate blocks.

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use std::io::Cursor;

/// A smooth, deterministic RGB gradient with some texture.
pub fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let r = (x * 255 / width.max(1)) as u8;
        let g = (y * 255 / height.max(1)) as u8;
        let b = ((x * 7 + y * 13) % 256) as u8;
        Rgb([r, g, b])
    })
}

/// The gradient with alpha falling from opaque on the left to transparent on the right.
pub fn translucent(width: u32, height: u32) -> RgbaImage {
    let rgb = gradient(width, height);
    RgbaImage::from_fn(width, height, |x, y| {
        let Rgb([r, g, b]) = *rgb.get_pixel(x, y);
        Rgba([r, g, b, 255 - (x * 255 / width.max(1)) as u8])
    })
}

/// Encodes with the `image` crate's encoder for `format`.
pub fn with_image(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A baseline (or progressive) JPEG from jpeg-encoder, with optional extra EXIF block.
pub fn jpeg(width: u32, height: u32, progressive: bool, exif: Option<&[u8]>) -> Vec<u8> {
    let img = gradient(width, height);
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
    enc.set_progressive(progressive);
    if let Some(exif) = exif {
        enc.add_exif_metadata(exif).unwrap();
    }
    enc.encode(
        img.as_raw(),
        width as u16,
        height as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .unwrap();
    out
}

/// A CMYK JPEG (Adobe APP14, inverted storage as Photoshop writes it) filled with one ink mix;
/// `ycck` stores it in the YCCK transform instead of plain CMYK.
pub fn cmyk_jpeg(width: u32, height: u32, ink: [u8; 4], ycck: bool) -> Vec<u8> {
    let pixels: Vec<u8> = (0..width * height).flat_map(|_| ink).collect();
    let color = if ycck {
        jpeg_encoder::ColorType::CmykAsYcck
    } else {
        jpeg_encoder::ColorType::Cmyk
    };
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 95)
        .encode(&pixels, width as u16, height as u16, color)
        .unwrap();
    out
}

/// A big-endian EXIF block (TIFF structure) with Make and Orientation.
pub fn exif_block(orientation: u16, make: &str) -> Vec<u8> {
    let mut make_bytes = make.as_bytes().to_vec();
    make_bytes.push(0);
    let mut out = b"MM\0*".to_vec();
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(&2u16.to_be_bytes());
    // Make (0x010F), ASCII, stored after the IFD at offset 8 + 2 + 2*12 + 4 = 38.
    out.extend_from_slice(&0x010Fu16.to_be_bytes());
    out.extend_from_slice(&2u16.to_be_bytes());
    out.extend_from_slice(&(make_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&38u32.to_be_bytes());
    // Orientation (0x0112), SHORT, inline.
    out.extend_from_slice(&0x0112u16.to_be_bytes());
    out.extend_from_slice(&3u16.to_be_bytes());
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&orientation.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&make_bytes);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A zlib stream of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = data.chunks(65535).collect();
    if chunks.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG from raw (already filtered) scanline data; `extra` chunks go before IDAT.
pub fn raw_png(
    width: u32,
    height: u32,
    color_type: u8,
    interlace: u8,
    extra: &[(&[u8; 4], Vec<u8>)],
    scanlines: &[u8],
) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, color_type, 0, 0, interlace]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    for (kind, data) in extra {
        png_chunk(&mut out, kind, data);
    }
    png_chunk(&mut out, b"IDAT", &zlib_stored(scanlines));
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A 4x4 palette PNG: two colours, the second fully transparent through tRNS when `trns`.
pub fn palette_png(trns: bool) -> Vec<u8> {
    let mut scanlines = Vec::new();
    for y in 0..4u8 {
        scanlines.push(0);
        scanlines.extend((0..4u8).map(|x| (x + y) % 2));
    }
    let mut extra: Vec<(&[u8; 4], Vec<u8>)> = vec![(b"PLTE", vec![255, 0, 0, 0, 0, 255])];
    if trns {
        extra.push((b"tRNS", vec![255, 0]));
    }
    raw_png(4, 4, 3, 0, &extra, &scanlines)
}

/// An Adam7-interlaced 8-bit RGB PNG of the gradient.
pub fn interlaced_png(width: u32, height: u32) -> Vec<u8> {
    let img = gradient(width, height);
    // (x start, y start, x step, y step) of the seven passes.
    let passes = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ];
    let mut scanlines = Vec::new();
    for (x0, y0, dx, dy) in passes {
        if x0 >= width || y0 >= height {
            continue;
        }
        for y in (y0..height).step_by(dy) {
            scanlines.push(0);
            for x in (x0..width).step_by(dx) {
                scanlines.extend_from_slice(&img.get_pixel(x, y).0);
            }
        }
    }
    raw_png(width, height, 2, 1, &[], &scanlines)
}

/// A PNG whose header claims `width`×`height` with a tiny, useless IDAT.
pub fn huge_png_header(width: u32, height: u32) -> Vec<u8> {
    raw_png(width, height, 2, 0, &[], &[0, 0, 0, 0])
}

/// A GIF of the gradient; with `frames` > 1 an animation of that many frames.
pub fn gif(width: u32, height: u32, frames: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new_with_speed(&mut out, 10);
        let img = DynamicImage::ImageRgb8(gradient(width, height)).to_rgba8();
        let all = (0..frames).map(|_| image::Frame::new(img.clone()));
        enc.encode_frames(all).unwrap();
    }
    out
}

/// A WebP from libwebp, lossy or lossless, optionally with alpha.
pub fn webp(width: u32, height: u32, lossless: bool, alpha: bool) -> Vec<u8> {
    let memory = if alpha {
        let img = translucent(width, height);
        let enc = webp::Encoder::from_rgba(img.as_raw(), width, height);
        if lossless {
            enc.encode_lossless()
        } else {
            enc.encode(80.0)
        }
    } else {
        let img = gradient(width, height);
        let enc = webp::Encoder::from_rgb(img.as_raw(), width, height);
        if lossless {
            enc.encode_lossless()
        } else {
            enc.encode(80.0)
        }
    };
    memory.to_vec()
}

/// A two-frame animated WebP assembled from two lossless libwebp frames.
pub fn animated_webp(width: u32, height: u32) -> Vec<u8> {
    let frame = webp(width, height, true, false);
    // The simple-format file is RIFF header (12 bytes) + one VP8L chunk.
    let vp8l = &frame[12..];
    let dims = |v: u32| (v - 1).to_le_bytes()[..3].to_vec();
    let mut body = b"WEBP".to_vec();
    body.extend_from_slice(b"VP8X");
    body.extend_from_slice(&10u32.to_le_bytes());
    body.extend_from_slice(&[0x02, 0, 0, 0]);
    body.extend(dims(width));
    body.extend(dims(height));
    body.extend_from_slice(b"ANIM");
    body.extend_from_slice(&6u32.to_le_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    for _ in 0..2 {
        let mut anmf = vec![0u8; 6];
        anmf.extend(dims(width));
        anmf.extend(dims(height));
        anmf.extend_from_slice(&[100, 0, 0, 0]);
        anmf.extend_from_slice(vp8l);
        body.extend_from_slice(b"ANMF");
        body.extend_from_slice(&(anmf.len() as u32).to_le_bytes());
        body.extend_from_slice(&anmf);
        if anmf.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}
