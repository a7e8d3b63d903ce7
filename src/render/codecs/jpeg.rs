//! JPEG specifics the generic decoder does not cover: a marker walk that detects truncated files
//! (the default decoder fills missing scan data with grey and reports success), and
//! shrink-on-load, which decodes the DCT coefficients at 1/2, 1/4 or 1/8 size when the pipeline
//! needs far fewer pixels than the source has.

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use std::io::Cursor;

/// What a walk over a JPEG's marker structure found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Layout {
    /// The walk reached the end-of-image marker.
    pub complete: bool,
    /// A sequential (non-progressive) frame codes some component in a scan of its own. zune-jpeg
    /// 0.5.15, behind `image`, silently decodes such files with subsampled chroma to wrong
    /// colours (zune-image issue #422), while jpeg-decoder handles them.
    pub non_interleaved_sequential: bool,
}

/// Walks the marker segments and entropy-coded data of a JPEG. Segment lengths are followed
/// rather than searching for `FF D9`, so an embedded EXIF thumbnail cannot make a truncated
/// file look complete.
pub(crate) fn layout(bytes: &[u8]) -> Layout {
    let mut found = Layout::default();
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return found;
    }
    // Whether the frame is sequential, and its component count, from the SOF segment.
    let mut sequential_components: Option<u8> = None;
    let mut pos = 2usize;
    loop {
        // Find the next marker: libjpeg tolerates stray bytes between segments, so do we.
        while bytes.get(pos).is_some_and(|&b| b != 0xFF) {
            pos += 1;
        }
        // Any number of 0xFF fill bytes may precede the marker code.
        while bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos + 1) else {
            return found;
        };
        match marker {
            0xD9 => {
                found.complete = true;
                return found;
            }
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD8 => pos += 2,
            _ => {
                let len = match bytes.get(pos + 2..pos + 4) {
                    Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]) as usize,
                    _ => return found,
                };
                if len < 2 || pos + 2 + len > bytes.len() {
                    return found;
                }
                // SOF0/SOF1: baseline and extended sequential Huffman frames; the component
                // count follows precision (1 byte), height and width (2 bytes each).
                if matches!(marker, 0xC0 | 0xC1) {
                    sequential_components = bytes.get(pos + 9).copied();
                }
                if marker == 0xDA {
                    let scan_components = bytes.get(pos + 4).copied();
                    if let (Some(frame), Some(scan)) = (sequential_components, scan_components) {
                        if scan < frame {
                            found.non_interleaved_sequential = true;
                        }
                    }
                }
                pos += 2 + len;
                if marker == 0xDA {
                    pos = skip_entropy_coded_data(bytes, pos);
                }
            }
        }
    }
}

/// Returns the position of the first marker after a scan's entropy-coded data: stuffed
/// `FF 00` bytes and restart markers belong to the scan.
fn skip_entropy_coded_data(bytes: &[u8], mut pos: usize) -> usize {
    // A scan is megabytes long for a camera photo; memchr jumps from one 0xFF to the next.
    while let Some(ff) = bytes.get(pos..).and_then(|rest| memchr::memchr(0xFF, rest)) {
        pos += ff;
        match bytes.get(pos + 1) {
            // A stuffed 0xFF data byte or a restart marker: still the scan.
            Some(0x00) | Some(0xD0..=0xD7) => pos += 2,
            // A fill byte before a marker.
            Some(0xFF) => pos += 1,
            _ => return pos,
        }
    }
    bytes.len()
}

/// The stored width and height of a JPEG and its EXIF orientation, from its headers: the
/// values `image`'s decoder gives (it reads them with the same decoder), without the copy of
/// the whole file that decoder makes first. `None` when the headers cannot be read.
pub(crate) fn header(bytes: &[u8]) -> Option<(u32, u32, Orientation)> {
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    decoder.decode_headers().ok()?;
    let (width, height) = decoder.dimensions()?;
    let orientation = decoder
        .exif()
        .and_then(|exif| Orientation::from_exif_chunk(exif))
        .unwrap_or(Orientation::NoTransforms);
    Some((
        u32::try_from(width).ok()?,
        u32::try_from(height).ok()?,
        orientation,
    ))
}

/// Whether the linked libjpeg has its SIMD kernels (IDCT, colour conversion, upsampling) and
/// this CPU runs them. They are assembled only when `nasm` is present at build time; without
/// it libjpeg is plain C, correct but slower.
pub fn libjpeg_simd() -> bool {
    extern "C" {
        // libjpeg-turbo's dispatch query (jsimd.h); the plain-C build links a version that
        // always answers 0.
        fn jsimd_can_idct_islow() -> std::os::raw::c_int;
    }
    // SAFETY: a query without arguments or side effects beyond a one-time CPU feature check.
    unsafe { jsimd_can_idct_islow() != 0 }
}

/// The DCT scale denominator (2, 4 or 8) giving the smallest decode that still covers
/// `need_w`×`need_h`, or `None` when only a full-size decode does.
pub(crate) fn scale_denominator(width: u32, height: u32, need_w: u32, need_h: u32) -> Option<u32> {
    [8u32, 4, 2]
        .into_iter()
        .find(|&d| width.div_ceil(d) >= need_w && height.div_ceil(d) >= need_h)
}

/// Decodes a JPEG with jpeg-decoder, at 1/`denominator` size through DCT scaling (1 = full
/// size). `None` whenever that decoder cannot help (unusual pixel formats, errors): the caller
/// then uses the default decoder, which also produces the proper error for broken files.
/// Decodes a JPEG with libjpeg (mozjpeg) at 1/`denominator` size (1, 2, 4 or 8), as RGB: about
/// twice as fast as jpeg-decoder at 1/8 for a 12-MP photo. libjpeg reports damaged data as
/// warnings and goes on with grey, so this serves renders of sources that passed the upload
/// check, never the check itself. `None` when libjpeg cannot do it (e.g. CMYK), and the
/// caller falls back.
pub(crate) fn decode_with_libjpeg(
    bytes: &[u8],
    width: u32,
    height: u32,
    denominator: u32,
) -> Option<DynamicImage> {
    let numerator = match denominator {
        1 => 8,
        2 => 4,
        4 => 2,
        8 => 1,
        _ => return None,
    };
    let mut decompress = mozjpeg::Decompress::new_mem(bytes).ok()?;
    // libjpeg converts only these to RGB; asking for more is a fatal error (a panic).
    use mozjpeg::ColorSpace;
    if !matches!(
        decompress.color_space(),
        ColorSpace::JCS_YCbCr | ColorSpace::JCS_GRAYSCALE | ColorSpace::JCS_RGB
    ) {
        return None;
    }
    decompress.scale(numerator);
    let mut started = decompress.rgb().ok()?;
    let w = u32::try_from(started.width()).ok()?;
    let h = u32::try_from(started.height()).ok()?;
    if (w, h) != (width.div_ceil(denominator), height.div_ceil(denominator)) {
        return None;
    }
    let pixels: Vec<u8> = started.read_scanlines().ok()?;
    started.finish().ok()?;
    RgbImage::from_raw(w, h, pixels).map(Into::into)
}

pub(crate) fn decode_with_jpeg_decoder(
    bytes: &[u8],
    width: u32,
    height: u32,
    denominator: u32,
    max_buffer: usize,
) -> Option<DynamicImage> {
    let want_w = u16::try_from(width.div_ceil(denominator)).ok()?;
    let want_h = u16::try_from(height.div_ceil(denominator)).ok()?;
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(max_buffer);
    let (w, h) = if denominator > 1 {
        decoder.scale(want_w, want_h).ok()?
    } else {
        decoder.read_info().ok()?;
        decoder.info().map(|i| (i.width, i.height))?
    };
    if (w, h) != (want_w, want_h) {
        return None;
    }
    let pixels = decoder.decode().ok()?;
    let info = decoder.info()?;
    let (w, h) = (u32::from(w), u32::from(h));
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => RgbImage::from_raw(w, h, pixels).map(Into::into),
        jpeg_decoder::PixelFormat::L8 => GrayImage::from_raw(w, h, pixels).map(Into::into),
        jpeg_decoder::PixelFormat::CMYK32 => {
            RgbImage::from_raw(w, h, cmyk_ink_to_rgb(&pixels)).map(Into::into)
        }
        jpeg_decoder::PixelFormat::L16 => None,
    }
}

/// jpeg-decoder returns CMYK as ink amounts (it undoes Adobe's inverted storage for both CMYK
/// and YCCK files); this is the naive conversion every browser without colour management uses.
fn cmyk_ink_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        if let &[c, m, y, k] = px {
            let white = 255 - u32::from(k);
            for ink in [c, m, y] {
                let v = (255 - u32::from(ink)) * white;
                rgb.push(((v + 127) / 255) as u8);
            }
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jpeg_reaching_its_end_marker_is_complete() {
        // SOI, an APP0 of length 4, SOS of length 3 with some scan bytes, EOI.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xDA, 0x00, 0x03, 0x01, 0x12,
            0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xD9,
        ];
        assert!(layout(&jpeg).complete);
        assert!(!layout(&jpeg[..jpeg.len() - 2]).complete);
        // Fill bytes may precede the end marker; a lone 0xFF at the very end is no marker.
        let mut filled = jpeg[..jpeg.len() - 2].to_vec();
        filled.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xD9]);
        assert!(layout(&filled).complete);
        assert!(!layout(&filled[..filled.len() - 1]).complete);
    }

    #[test]
    fn an_end_marker_inside_a_segment_does_not_count() {
        // APP1 that contains FF D9 (as an embedded thumbnail would), then nothing.
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD8, 0xFF, 0xD9];
        assert!(!layout(&jpeg).complete);
    }

    #[test]
    fn libjpeg_and_jpeg_decoder_agree_at_every_scale() {
        for progressive in [false, true] {
            let bytes = crate::render::codecs::testdata::jpeg(203, 117, progressive, None);
            for denominator in [1, 2, 4, 8] {
                let fast = decode_with_libjpeg(&bytes, 203, 117, denominator)
                    .expect("libjpeg decodes it")
                    .to_rgb8();
                let reference = decode_with_jpeg_decoder(&bytes, 203, 117, denominator, 1 << 26)
                    .expect("jpeg-decoder decodes it")
                    .to_rgb8();
                assert_eq!(fast.dimensions(), reference.dimensions(), "1/{denominator}");
                let diff: u64 = fast
                    .as_raw()
                    .iter()
                    .zip(reference.as_raw())
                    .map(|(a, b)| u64::from(a.abs_diff(*b)))
                    .sum();
                let mean = diff as f64 / fast.as_raw().len() as f64;
                assert!(mean < 3.0, "1/{denominator}: mean difference {mean}");
            }
        }
    }

    #[test]
    fn libjpeg_declines_what_it_cannot_do() {
        // libjpeg's fatal errors arrive as panics; the caller catches them.
        let garbage = std::panic::catch_unwind(|| decode_with_libjpeg(b"not a jpeg", 10, 10, 1));
        assert!(garbage.map_or(true, |d| d.is_none()));
        let bytes = crate::render::codecs::testdata::jpeg(64, 64, false, None);
        assert!(
            decode_with_libjpeg(&bytes, 64, 64, 3).is_none(),
            "no 1/3 scale"
        );
        assert!(
            decode_with_libjpeg(&bytes, 65, 64, 1).is_none(),
            "size mismatch"
        );
        let cmyk = crate::render::codecs::testdata::cmyk_jpeg(32, 32, [255, 0, 0, 0], false);
        assert!(decode_with_libjpeg(&cmyk, 32, 32, 1).is_none(), "CMYK");
    }

    #[test]
    fn the_header_gives_what_the_image_decoder_gives() {
        use crate::render::codecs::testdata;
        use image::ImageDecoder;
        for orientation in 1..=8 {
            for progressive in [false, true] {
                let exif = testdata::exif_block(orientation, "Cam");
                let bytes = testdata::jpeg(203, 117, progressive, Some(&exif));
                let reader =
                    image::ImageReader::with_format(Cursor::new(&bytes), image::ImageFormat::Jpeg);
                let mut decoder = reader.into_decoder().unwrap();
                let (w, h) = decoder.dimensions();
                let expected = (w, h, decoder.orientation().unwrap());
                assert_eq!(header(&bytes), Some(expected), "orientation {orientation}");
                assert_eq!(
                    expected.2,
                    Orientation::from_exif(orientation as u8).unwrap()
                );
            }
        }
        let plain = testdata::jpeg(64, 32, false, None);
        assert_eq!(header(&plain), Some((64, 32, Orientation::NoTransforms)));
        assert_eq!(header(&plain[..20]), None);
        assert_eq!(header(b"not a jpeg"), None);
    }

    #[test]
    fn the_scale_denominator_is_the_largest_that_still_covers_the_need() {
        assert_eq!(scale_denominator(2000, 1500, 300, 225), Some(4));
        assert_eq!(scale_denominator(2000, 1500, 250, 100), Some(8));
        assert_eq!(scale_denominator(2000, 1500, 1200, 10), None);
    }

    #[test]
    fn cmyk_ink_converts_to_rgb() {
        assert_eq!(
            cmyk_ink_to_rgb(&[255, 0, 0, 0, 0, 0, 0, 255]),
            vec![0, 255, 255, 0, 0, 0]
        );
    }
}
