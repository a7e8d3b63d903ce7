//! Decoding a source image under limits. The order matters: sniff the magic bytes, read the
//! dimensions from the header, check them against [`Limits`] before any pixel buffer exists,
//! and only then decode, inside `catch_unwind` because the `image` decoders document that
//! hostile input can make them panic. Pixels come out normalised to 8-bit RGB, or RGBA when
//! the image really has transparency, since every later step is faster on three channels.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageReader};

use super::format::{sniff, SourceFormat};
use super::jpeg;
use crate::render::error::{RenderError, Result};
use crate::render::limits::Limits;

/// The smallest size, in oriented pixels, the pipeline needs from the source. A zero in
/// either field means the full size is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeHint {
    /// Smallest width needed after EXIF orientation; 0 = full size.
    pub min_width: u32,
    /// Smallest height needed after EXIF orientation; 0 = full size.
    pub min_height: u32,
}

/// A decoded source image ready for the render pipeline.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Always `ImageRgb8` (opaque) or `ImageRgba8`, with EXIF orientation already applied.
    pub image: DynamicImage,
    /// The ICC profile embedded in the source, if any.
    pub icc: Option<Vec<u8>>,
    /// Decoded size divided by the oriented source size: 1.0 unless the JPEG was decoded
    /// DCT-scaled, then 1/2, 1/4 or 1/8 (rounded up to whole pixels).
    pub scale: f64,
}

/// Decodes `bytes` for rendering. With a `hint` far below the source size, JPEGs are decoded
/// at 1/2, 1/4 or 1/8 size, never below the hint; an SVG is drawn at the size that covers the
/// hint, above or below its intrinsic size; other formats always decode at full size.
/// Animated GIF and WebP yield their first frame.
///
/// Errors: `Unsupported` for unknown formats and for AVIF and HEIC (no decoder in this build),
/// `Invalid` for fonts (they are not images), `TooLarge` when the header (or an SVG's drawing)
/// exceeds `limits`, `Unprocessable` for truncated or corrupt data.
pub fn decode(bytes: &[u8], limits: &Limits, hint: Option<DecodeHint>) -> Result<Decoded> {
    let need = need_of(hint);
    let source = read_source(bytes, limits, need, Purpose::Render)?;
    let oriented_width = if swaps_axes(source.orientation) {
        source.height
    } else {
        source.width
    };
    let mut image = source.image;
    image.apply_orientation(source.orientation);
    let scale = if source.scaled && oriented_width > 0 {
        f64::from(image.width()) / f64::from(oriented_width)
    } else {
        1.0
    };
    Ok(Decoded {
        image,
        icc: source.icc,
        scale,
    })
}

/// The DCT scale denominator (2, 4 or 8) at which [`decode`] decodes `bytes` for `hint`,
/// read from the header alone; `None` when it decodes at full size (no hint, a hint too
/// large, a source that is not a JPEG, or a header it cannot read). Renders that share a
/// denominator share the same decoded pixels: for a JPEG, the hint matters to [`decode`]
/// only through this number.
pub fn dct_denominator(bytes: &[u8], hint: Option<DecodeHint>) -> Option<u32> {
    let need = need_of(hint)?;
    if sniff(bytes)? != SourceFormat::Jpeg {
        return None;
    }
    catch_unwind(AssertUnwindSafe(|| {
        let (width, height, orientation) = jpeg::header(bytes)?;
        jpeg_denominator(width, height, orientation, need)
    }))
    .ok()
    .flatten()
    .filter(|&d| d > 1)
}

/// The scale denominator at which the renders of `bytes` share one decode: the DCT scale
/// [`dct_denominator`] gives, or 1 for a JPEG decoded at full size. For a JPEG the hint
/// matters to [`decode`] only through the DCT scale, so every full-size decode of it gives the
/// same pixels too. `None` for other formats.
pub fn shared_denominator(bytes: &[u8], hint: Option<DecodeHint>) -> Option<u32> {
    if sniff(bytes)? != SourceFormat::Jpeg {
        return None;
    }
    Some(dct_denominator(bytes, hint).unwrap_or(1))
}

fn need_of(hint: Option<DecodeHint>) -> Option<(u32, u32)> {
    hint.filter(|h| h.min_width > 0 && h.min_height > 0)
        .map(|h| (h.min_width, h.min_height))
}

/// The DCT scale for a JPEG stored `width`×`height` with `orientation`, when `need` (in
/// oriented pixels) is the smallest useful size.
fn jpeg_denominator(
    width: u32,
    height: u32,
    orientation: Orientation,
    (need_w, need_h): (u32, u32),
) -> Option<u32> {
    let (need_w, need_h) = if swaps_axes(orientation) {
        (need_h, need_w)
    } else {
        (need_w, need_h)
    };
    jpeg::scale_denominator(width, height, need_w, need_h)
}

/// A source decoded once, with what its header said; shared by [`decode`] and the probe.
pub(crate) struct Source {
    pub format: SourceFormat,
    /// Width as stored, before orientation.
    pub width: u32,
    /// Height as stored, before orientation.
    pub height: u32,
    pub orientation: Orientation,
    /// The raw EXIF block (TIFF structure), if the source has one.
    pub exif: Option<Vec<u8>>,
    pub icc: Option<Vec<u8>>,
    /// Normalised to `ImageRgb8`/`ImageRgba8`, not yet oriented.
    pub image: DynamicImage,
    /// No pixel has alpha below 255.
    pub opaque: bool,
    /// Whether the pixels were decoded DCT-scaled (smaller than `width`×`height`).
    pub scaled: bool,
}

/// Why a source is decoded: the upload check must find damaged data; a render of a checked
/// source may use the fastest decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Check,
    Render,
}

/// Sniffs, checks limits, and decodes once. `need` is the smallest useful size in oriented
/// pixels; only JPEGs make use of it.
pub(crate) fn read_source(
    bytes: &[u8],
    limits: &Limits,
    need: Option<(u32, u32)>,
    purpose: Purpose,
) -> Result<Source> {
    let format = sniff(bytes).ok_or_else(|| {
        RenderError::Unsupported("the uploaded file is not a supported image format".to_owned())
    })?;
    if format.is_font() {
        return Err(RenderError::Invalid(format!(
            "the source is a {}: fonts are used by the text operation and cannot be rendered as an image",
            format.name()
        )));
    }
    if format == SourceFormat::Svg {
        return catch_unwind(AssertUnwindSafe(|| {
            super::svg::read(bytes, limits, need, purpose)
        }))
        .unwrap_or_else(|_| {
            Err(RenderError::Unprocessable(
                "the SVG data is corrupt and could not be drawn".to_owned(),
            ))
        });
    }
    #[cfg(feature = "heif")]
    if matches!(format, SourceFormat::Avif | SourceFormat::Heic) {
        return catch_unwind(AssertUnwindSafe(|| {
            super::heif::read(bytes, format, limits, purpose)
        }))
        .unwrap_or_else(|_| {
            Err(RenderError::Unprocessable(format!(
                "the {} data is corrupt and could not be decoded",
                format.name()
            )))
        });
    }
    let Some(image_format) = format.image_format() else {
        return Err(RenderError::Unsupported(format!(
            "{} sources cannot be decoded: this binary has no {} decoder (`darkroom --version` lists the inputs it accepts)",
            format.name(),
            format.name()
        )));
    };
    let jpeg_layout = if format == SourceFormat::Jpeg {
        jpeg::layout(bytes)
    } else {
        jpeg::Layout::default()
    };
    // The default JPEG decoder fills a missing tail with grey and reports success.
    if format == SourceFormat::Jpeg && !jpeg_layout.complete {
        return Err(RenderError::Unprocessable(
            "the JPEG data is truncated (it has no end-of-image marker)".to_owned(),
        ));
    }
    // image-webp sizes a frame's buffer from its bitstream before checking it against the
    // frame: an animated WebP's first frame could make it allocate far beyond the limits.
    if format == SourceFormat::Webp && !super::container::webp_frames_consistent(bytes) {
        return Err(super::animation::inconsistent_webp());
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        decode_guarded(
            bytes,
            format,
            image_format,
            limits,
            need,
            jpeg_layout,
            purpose,
        )
    }));
    match outcome {
        Ok(result) => result,
        Err(_) => Err(RenderError::Unprocessable(format!(
            "the {} data is corrupt and could not be decoded",
            format.name()
        ))),
    }
}

fn decode_guarded(
    bytes: &[u8],
    format: SourceFormat,
    image_format: image::ImageFormat,
    limits: &Limits,
    need: Option<(u32, u32)>,
    jpeg_layout: jpeg::Layout,
    purpose: Purpose,
) -> Result<Source> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format);
    // Only the allocation budget at first: the dimension check below gives a better message
    // than the decoder's own limit error.
    reader.limits(image_limits(limits, false));
    let mut decoder = reader.into_decoder().map_err(|e| map_error(format, e))?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    decoder
        .set_limits(image_limits(limits, true))
        .map_err(|e| map_error(format, e))?;

    // Metadata is read before the pixels because decoding consumes the decoder. Broken
    // metadata does not make the image unusable, so its errors are ignored.
    let exif = decoder.exif_metadata().ok().flatten();
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let icc = decoder.icc_profile().ok().flatten();

    // jpeg-decoder takes over from the default decoder for shrink-on-load, and for the file
    // layout the default decoder gets wrong.
    let mut denominator = None;
    if format == SourceFormat::Jpeg {
        denominator = need.and_then(|need| jpeg_denominator(width, height, orientation, need));
        if denominator.is_none() && jpeg_layout.non_interleaved_sequential {
            denominator = Some(1);
        }
    }
    let alternative = denominator.and_then(|denominator| {
        let budget = usize::try_from(limits.max_pixels.saturating_mul(4)).unwrap_or(usize::MAX);
        // A panic in an alternative decoder only means falling back to the next one, and
        // finally to the default one. libjpeg is the fastest but lenient with damaged data, so
        // the upload check does not use it.
        let guarded = |decode: &dyn Fn() -> Option<DynamicImage>| {
            catch_unwind(AssertUnwindSafe(decode)).ok().flatten()
        };
        let libjpeg = || jpeg::decode_with_libjpeg(bytes, width, height, denominator);
        let jpeg_decoder =
            || jpeg::decode_with_jpeg_decoder(bytes, width, height, denominator, budget);
        match purpose {
            Purpose::Render => guarded(&libjpeg).or_else(|| guarded(&jpeg_decoder)),
            Purpose::Check => guarded(&jpeg_decoder),
        }
    });
    let scaled = alternative.is_some() && denominator.is_some_and(|d| d > 1);
    let image = match alternative {
        Some(image) => image,
        None => match DynamicImage::from_decoder(decoder) {
            Ok(image) => image,
            // The upload check accepted this JPEG with jpeg-decoder; the default decoder is
            // stricter with some damaged files. A render takes what the check accepted, with
            // the same decoder, so that an accepted upload renders at every size.
            Err(e) if format == SourceFormat::Jpeg && purpose == Purpose::Render => {
                let budget =
                    usize::try_from(limits.max_pixels.saturating_mul(4)).unwrap_or(usize::MAX);
                catch_unwind(AssertUnwindSafe(|| {
                    jpeg::decode_with_jpeg_decoder(bytes, width, height, 1, budget)
                }))
                .ok()
                .flatten()
                .ok_or_else(|| map_error(format, e))?
            }
            Err(e) => return Err(map_error(format, e)),
        },
    };
    let (image, opaque) = normalise(image);
    Ok(Source {
        format,
        width,
        height,
        orientation,
        exif,
        icc,
        image,
        opaque,
        scaled,
    })
}

/// Rejects empty images and images beyond `limits`, from header dimensions alone.
pub(crate) fn check_dimensions(width: u32, height: u32, limits: &Limits) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(RenderError::Unprocessable(format!(
            "the image has no pixels ({width}x{height})"
        )));
    }
    if width > limits.max_dimension || height > limits.max_dimension {
        return Err(RenderError::TooLarge(format!(
            "the image is {width}x{height} pixels; the largest accepted side is {} pixels",
            limits.max_dimension
        )));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(RenderError::TooLarge(format!(
            "the image is {width}x{height} = {pixels} pixels; at most {} pixels are accepted",
            limits.max_pixels
        )));
    }
    Ok(())
}

/// The `image` crate's limits derived from ours. The allocation budget allows the largest
/// accepted image at 16 bits per RGBA channel plus room for metadata.
fn image_limits(limits: &Limits, with_dimensions: bool) -> image::Limits {
    let mut out = image::Limits::default();
    out.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    if with_dimensions {
        out.max_image_width = Some(limits.max_dimension);
        out.max_image_height = Some(limits.max_dimension);
    }
    out
}

pub(super) fn map_error(format: SourceFormat, error: ImageError) -> RenderError {
    let name = format.name();
    match error {
        ImageError::Limits(e) => {
            RenderError::TooLarge(format!("the {name} image exceeds the decoding limits: {e}"))
        }
        ImageError::Unsupported(e) => {
            RenderError::Unsupported(format!("this kind of {name} image is not supported: {e}"))
        }
        ImageError::IoError(e) => {
            RenderError::Unprocessable(format!("the {name} data is truncated or corrupt: {e}"))
        }
        other => RenderError::Unprocessable(format!("the {name} data is corrupt: {other}")),
    }
}

/// Whether an EXIF orientation exchanges width and height.
pub(crate) fn swaps_axes(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Converts any decoded layout to 8-bit RGB, or RGBA when some pixel is not fully opaque.
/// Returns the image and whether it is opaque.
fn normalise(image: DynamicImage) -> (DynamicImage, bool) {
    let rgba = match image {
        DynamicImage::ImageRgb8(_) => return (image, true),
        DynamicImage::ImageRgba8(buffer) => buffer,
        other if !other.color().has_alpha() => {
            return (DynamicImage::ImageRgb8(other.to_rgb8()), true)
        }
        other => other.to_rgba8(),
    };
    let opaque = rgba
        .as_raw()
        .chunks_exact(4)
        .all(|px| px.get(3) == Some(&255));
    let rgba = DynamicImage::ImageRgba8(rgba);
    if opaque {
        (DynamicImage::ImageRgb8(rgba.to_rgb8()), true)
    } else {
        (rgba, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::codecs::testdata;
    use image::{DynamicImage, GenericImageView, ImageFormat, Rgb, RgbImage};

    fn decode_ok(bytes: &[u8], hint: Option<DecodeHint>) -> Decoded {
        match decode(bytes, &Limits::default(), hint) {
            Ok(decoded) => decoded,
            Err(e) => panic!("decode failed: {e:?}"),
        }
    }

    fn close(a: [u8; 3], b: [u8; 3]) -> bool {
        a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 6)
    }

    #[test]
    fn a_16_bit_png_decodes_to_rgb8() {
        let img =
            DynamicImage::ImageRgb16(DynamicImage::ImageRgb8(testdata::gradient(8, 4)).to_rgb16());
        let bytes = testdata::with_image(&img, ImageFormat::Png);

        let decoded = decode_ok(&bytes, None);

        assert_eq!(decoded.image.as_rgb8(), Some(&testdata::gradient(8, 4)));
        assert_eq!(decoded.scale, 1.0);
    }

    #[test]
    fn an_opaque_rgba_png_decodes_to_rgb8_and_a_translucent_one_keeps_alpha() {
        let opaque =
            DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(testdata::gradient(8, 4)).to_rgba8());
        let translucent = DynamicImage::ImageRgba8(testdata::translucent(8, 4));

        let opaque = decode_ok(&testdata::with_image(&opaque, ImageFormat::Png), None);
        let translucent = decode_ok(&testdata::with_image(&translucent, ImageFormat::Png), None);

        assert!(matches!(opaque.image, DynamicImage::ImageRgb8(_)));
        assert_eq!(
            translucent.image.as_rgba8(),
            Some(&testdata::translucent(8, 4))
        );
    }

    #[test]
    fn a_palette_png_with_transparency_decodes_to_rgba8() {
        let decoded = decode_ok(&testdata::palette_png(true), None);

        let rgba = decoded
            .image
            .as_rgba8()
            .map(|b| (b.get_pixel(0, 0).0, b.get_pixel(1, 0).0));
        assert_eq!(rgba, Some(([255, 0, 0, 255], [0, 0, 255, 0])));
    }

    #[test]
    fn an_interlaced_png_decodes_to_the_same_pixels() {
        let decoded = decode_ok(&testdata::interlaced_png(13, 11), None);

        assert_eq!(decoded.image.as_rgb8(), Some(&testdata::gradient(13, 11)));
    }

    #[test]
    fn a_gray_jpeg_decodes_to_rgb8() {
        let gray = DynamicImage::ImageRgb8(testdata::gradient(16, 16)).to_luma8();
        let bytes = testdata::with_image(&DynamicImage::ImageLuma8(gray), ImageFormat::Jpeg);

        let decoded = decode_ok(&bytes, None);

        assert!(matches!(decoded.image, DynamicImage::ImageRgb8(_)));
    }

    #[test]
    fn cmyk_jpegs_decode_to_the_right_rgb() {
        // Full cyan ink is (0, 255, 255); 50% black on white is mid grey.
        for ycck in [false, true] {
            for (ink, expected) in [
                ([255, 0, 0, 0], [0, 255, 255]),
                ([0, 0, 0, 128], [127, 127, 127]),
            ] {
                let bytes = testdata::cmyk_jpeg(16, 16, ink, ycck);

                let full = decode_ok(&bytes, None);
                let scaled = decode_ok(
                    &bytes,
                    Some(DecodeHint {
                        min_width: 2,
                        min_height: 2,
                    }),
                );

                for decoded in [full, scaled] {
                    let px = decoded.image.as_rgb8().map(|b| b.get_pixel(1, 1).0);
                    assert!(
                        px.is_some_and(|px| close(px, expected)),
                        "{ink:?} ycck={ycck}: {px:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn orientation_6_swaps_the_dimensions() {
        let exif = testdata::exif_block(6, "TestCam");
        let bytes = testdata::jpeg(40, 20, false, Some(&exif));

        let decoded = decode_ok(&bytes, None);

        assert_eq!(decoded.image.dimensions(), (20, 40));
    }

    #[test]
    fn a_jpeg_with_one_scan_per_component_decodes_to_the_right_colours() {
        // jpeg-encoder writes non-interleaved scans when optimising Huffman tables.
        let red: Vec<u8> = (0..64 * 64).flat_map(|_| [255u8, 0, 0]).collect();
        let mut bytes = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 80);
        enc.set_optimized_huffman_tables(true);
        enc.encode(&red, 64, 64, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        assert!(jpeg::layout(&bytes).non_interleaved_sequential);

        let decoded = decode_ok(&bytes, None);

        let rgb = decoded.image.as_rgb8().unwrap();
        assert!(
            close(rgb.get_pixel(40, 40).0, [255, 0, 0]),
            "{:?}",
            rgb.get_pixel(40, 40)
        );
    }

    #[test]
    fn a_progressive_jpeg_decodes_to_the_right_colours() {
        let red: Vec<u8> = (0..64 * 48).flat_map(|_| [255u8, 0, 0]).collect();
        let mut bytes = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 80);
        enc.set_progressive(true);
        enc.encode(&red, 64, 48, jpeg_encoder::ColorType::Rgb)
            .unwrap();

        let full = decode_ok(&bytes, None);
        let scaled = decode_ok(
            &bytes,
            Some(DecodeHint {
                min_width: 16,
                min_height: 12,
            }),
        );

        for decoded in [full, scaled] {
            let rgb = decoded.image.as_rgb8().unwrap();
            assert!(
                close(rgb.get_pixel(10, 10).0, [255, 0, 0]),
                "{:?}",
                rgb.get_pixel(10, 10)
            );
        }
    }

    #[test]
    fn orientation_6_rotates_clockwise() {
        // Left half black, right half white; a quarter turn clockwise brings the left to the top.
        let img = RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                Rgb([0, 0, 0])
            } else {
                Rgb([255; 3])
            }
        });
        let exif = testdata::exif_block(6, "TestCam");
        let mut bytes = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 95);
        enc.add_exif_metadata(&exif).unwrap();
        enc.encode(img.as_raw(), 32, 16, jpeg_encoder::ColorType::Rgb)
            .unwrap();

        let decoded = decode_ok(&bytes, None);

        let rgb = decoded.image.as_rgb8().unwrap();
        assert!(close(rgb.get_pixel(8, 4).0, [0; 3]));
        assert!(close(rgb.get_pixel(8, 28).0, [255; 3]));
    }

    #[test]
    fn a_large_jpeg_with_a_small_hint_decodes_dct_scaled() {
        let bytes = testdata::jpeg(2000, 1500, false, None);

        let decoded = decode_ok(
            &bytes,
            Some(DecodeHint {
                min_width: 300,
                min_height: 225,
            }),
        );

        let (w, h) = decoded.image.dimensions();
        assert!(w >= 300 && h >= 225, "{w}x{h}");
        assert!(decoded.scale < 1.0);
        assert_eq!((w, h, decoded.scale), (500, 375, 0.25));
    }

    #[test]
    fn dct_scaling_accounts_for_orientation() {
        // Stored 2000x1500, shown 1500x2000 after a quarter turn.
        let exif = testdata::exif_block(6, "TestCam");
        let bytes = testdata::jpeg(2000, 1500, false, Some(&exif));

        let decoded = decode_ok(
            &bytes,
            Some(DecodeHint {
                min_width: 300,
                min_height: 500,
            }),
        );

        assert_eq!(decoded.image.dimensions(), (375, 500));
        assert_eq!(decoded.scale, 0.25);
    }

    #[test]
    fn a_hint_near_the_source_size_decodes_at_full_size() {
        let bytes = testdata::jpeg(200, 100, false, None);

        let decoded = decode_ok(
            &bytes,
            Some(DecodeHint {
                min_width: 150,
                min_height: 10,
            }),
        );

        assert_eq!(
            (decoded.image.dimensions(), decoded.scale),
            ((200, 100), 1.0)
        );
    }

    #[test]
    fn a_progressive_jpeg_decodes_dct_scaled() {
        let bytes = testdata::jpeg(400, 200, true, None);

        let decoded = decode_ok(
            &bytes,
            Some(DecodeHint {
                min_width: 100,
                min_height: 50,
            }),
        );

        assert_eq!(
            (decoded.image.dimensions(), decoded.scale),
            ((100, 50), 0.25)
        );
    }

    #[test]
    fn an_animated_gif_decodes_its_first_frame() {
        let decoded = decode_ok(&testdata::gif(12, 8, 2), None);

        assert_eq!(decoded.image.dimensions(), (12, 8));
        assert!(matches!(decoded.image, DynamicImage::ImageRgb8(_)));
    }

    #[test]
    fn an_animated_webp_decodes_its_first_frame() {
        let decoded = decode_ok(&testdata::animated_webp(30, 20), None);

        // Frames are composited onto the canvas, which may round each channel by one.
        let expected = testdata::gradient(30, 20);
        let rgb = decoded.image.as_rgb8().unwrap();
        assert_eq!(rgb.dimensions(), (30, 20));
        assert!(rgb
            .as_raw()
            .iter()
            .zip(expected.as_raw())
            .all(|(a, b)| a.abs_diff(*b) <= 1));
    }

    #[test]
    fn a_webp_with_alpha_decodes_to_rgba8() {
        let decoded = decode_ok(&testdata::webp(30, 20, true, true), None);

        assert_eq!(
            decoded.image.as_rgba8(),
            Some(&testdata::translucent(30, 20))
        );
    }

    #[test]
    fn a_jpeg_the_upload_check_accepts_renders_at_full_size_too() {
        // Found by the decode-jpeg fuzz harness: damaged in a way jpeg-decoder tolerates and
        // the default decoder does not.
        let bytes =
            include_bytes!("../../../tests/fuzz/corpus/decode-jpeg/probe-accepts-render-refuses");
        let limits = Limits::default();
        crate::render::probe::probe(bytes, &limits).expect("the upload check accepts it");
        decode(bytes, &limits, None).expect("a full-size render decodes it");
    }

    #[test]
    fn decode_checks_limits_before_decoding() {
        let bytes = testdata::jpeg(200, 100, false, None);
        let tight = Limits {
            max_dimension: 150,
            max_pixels: 1_000_000,
            ..Limits::default()
        };

        let result = decode(&bytes, &tight, None);

        assert!(
            matches!(&result, Err(RenderError::TooLarge(m)) if m.contains("200x100")),
            "{result:?}"
        );
    }

    /// A 400×240 JPEG, plain and rotated a quarter turn by its EXIF orientation.
    fn upright_and_rotated_jpegs() -> [Vec<u8>; 2] {
        let exif = testdata::exif_block(6, "Test");
        [
            testdata::jpeg(400, 240, false, None),
            testdata::jpeg(400, 240, true, Some(&exif)),
        ]
    }

    /// A decode hint of at least `w`×`h` oriented pixels.
    fn hint(w: u32, h: u32) -> Option<DecodeHint> {
        Some(DecodeHint {
            min_width: w,
            min_height: h,
        })
    }

    #[test]
    fn renders_that_share_a_dct_scale_share_the_decoded_pixels() {
        // Rotated a quarter turn: the hint is in oriented pixels, the scale in stored ones.
        for bytes in upright_and_rotated_jpegs() {
            let (wide, narrow) = (hint(50, 50), hint(20, 20));
            let denominator = dct_denominator(&bytes, wide);

            assert_eq!(denominator, Some(4));
            assert_eq!(dct_denominator(&bytes, narrow), Some(8));
            assert_eq!(dct_denominator(&bytes, hint(30, 28)), Some(8));
            assert_eq!(dct_denominator(&bytes, hint(390, 10)), None);
            assert_eq!(dct_denominator(&bytes, None), None);
            let a = decode_ok(&bytes, narrow);
            let b = decode_ok(&bytes, hint(30, 28));
            assert_eq!((a.image.clone(), a.icc.clone()), (b.image, b.icc));
            assert_eq!(a.scale.to_bits(), b.scale.to_bits());
            assert_eq!(a.scale, 0.125);
        }
        assert_eq!(
            dct_denominator(
                &testdata::with_image(
                    &DynamicImage::ImageRgb8(testdata::gradient(400, 240)),
                    ImageFormat::Png
                ),
                Some(DecodeHint {
                    min_width: 20,
                    min_height: 20
                })
            ),
            None,
            "only JPEGs decode at reduced scale"
        );
    }

    #[test]
    fn every_full_size_decode_of_a_jpeg_gives_the_same_pixels() {
        for bytes in upright_and_rotated_jpegs() {
            assert_eq!(shared_denominator(&bytes, hint(20, 20)), Some(8));
            let full = [None, hint(390, 10), hint(240, 400), hint(1000, 1000)];
            let first = decode_ok(&bytes, None);
            for h in full {
                assert_eq!(shared_denominator(&bytes, h), Some(1), "{h:?}");
                let d = decode_ok(&bytes, h);
                assert_eq!((&d.image, &d.icc), (&first.image, &first.icc), "{h:?}");
                assert_eq!(d.scale.to_bits(), 1.0f64.to_bits());
            }
        }
        let png = testdata::with_image(
            &DynamicImage::ImageRgb8(testdata::gradient(40, 24)),
            ImageFormat::Png,
        );
        assert_eq!(shared_denominator(&png, None), None);
    }
}
