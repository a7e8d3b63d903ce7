//! Encoding rendered pixels into the output formats. Every encoder here is deterministic (the
//! same pixels and options give byte-identical files, which the render cache and ETags rely
//! on) and writes no metadata except an ICC profile when one is given and the format can carry
//! it. JPEG goes through jpeg-encoder (chroma subsampling below quality 90, several times
//! faster than `image`'s), lossy WebP through libwebp, the BlurHash text through [`super::blur`],
//! the rest through `image`.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::codecs::gif::GifEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ExtendedColorType, ImageEncoder, RgbImage, RgbaImage};

use super::container;
use super::format::OutputFormat;
use crate::render::error::{RenderError, Result};
use crate::render::limits::Limits;

/// Optimised Huffman tables save about 4% of a JPEG, but jpeg-encoder then writes one scan per
/// component, and zune-jpeg 0.5.15 (the decoder behind `image` 0.25.10, widely used by other
/// Rust services) decodes such 4:2:0 files to wrong colours without an error (zune-image issue
/// #422). Standard interleaved scans decode correctly everywhere.
const JPEG_OPTIMIZED_HUFFMAN: bool = false;

/// WebP cannot describe a side longer than this.
pub(super) const WEBP_MAX_SIDE: u32 = 16_383;

/// The output buffer of the encoders that write as they go (JPEG, PNG, GIF): a write fails
/// once the render running on this thread was cancelled, which stops the encoder.
pub(super) struct Output(pub(super) Vec<u8>);

impl std::io::Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if crate::render::cancel::stop_requested() {
            return Err(std::io::Error::other("the render was cancelled"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How to encode a render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions<'a> {
    /// The output format.
    pub format: OutputFormat,
    /// 1..=100 for JPEG, WebP, AVIF and GIF (palette effort); out-of-range values are clamped.
    pub quality: u8,
    /// Lossless WebP instead of lossy.
    pub lossless: bool,
    /// PNG deflate level 0..=9 (0 = stored); larger values are treated as 9.
    pub png_compression: u8,
    /// Colour that transparency is flattened onto for JPEG and BlurHash.
    pub background: [u8; 3],
    /// ICC profile to embed (JPEG, PNG, WebP); ignored by GIF, AVIF and BlurHash.
    pub icc: Option<&'a [u8]>,
    /// Progressive JPEG (`interlacing.mode` other than `none`); ignored by other formats.
    pub progressive: bool,
}

/// Encodes `img` as `opts.format`.
///
/// Errors: `Invalid` when the image is empty, larger than `Limits::default()` allows, or larger
/// than the format can describe; `Internal` when an encoder fails.
pub fn encode(img: &DynamicImage, opts: &EncodeOptions) -> Result<Vec<u8>> {
    check_output_size(img.width(), img.height())?;
    let outcome = catch_unwind(AssertUnwindSafe(|| match opts.format {
        OutputFormat::Jpeg => encode_jpeg(img, opts),
        OutputFormat::Png => encode_png(img, opts),
        OutputFormat::Gif => encode_gif(img, opts),
        OutputFormat::Webp => encode_webp(img, opts),
        OutputFormat::Avif => encode_avif(img, opts),
        OutputFormat::Blur => super::blur::encode(img, opts.background),
    }));
    outcome.unwrap_or_else(|_| {
        Err(RenderError::Internal(format!(
            "the {} encoder panicked",
            opts.format.ext()
        )))
    })
}

/// Renders are bounded like sources, so a request cannot make the service build an absurd file.
fn check_output_size(width: u32, height: u32) -> Result<()> {
    let limits = Limits::default();
    if width == 0 || height == 0 {
        return Err(RenderError::Invalid(format!(
            "the output image would be empty ({width}x{height})"
        )));
    }
    let pixels = u64::from(width) * u64::from(height);
    if width > limits.max_dimension || height > limits.max_dimension || pixels > limits.max_pixels {
        return Err(RenderError::Invalid(format!(
            "the output image would be {width}x{height} pixels; the limit is {} pixels per side \
             and {} pixels in total",
            limits.max_dimension, limits.max_pixels
        )));
    }
    Ok(())
}

/// The pixels as 8-bit RGB or RGBA, borrowed when they already are.
enum Pixels<'a> {
    Rgb(Cow<'a, RgbImage>),
    Rgba(Cow<'a, RgbaImage>),
}

impl Pixels<'_> {
    fn of(img: &DynamicImage) -> Pixels<'_> {
        match img {
            DynamicImage::ImageRgb8(buffer) => Pixels::Rgb(Cow::Borrowed(buffer)),
            DynamicImage::ImageRgba8(buffer) => Pixels::Rgba(Cow::Borrowed(buffer)),
            other if other.color().has_alpha() => Pixels::Rgba(Cow::Owned(other.to_rgba8())),
            other => Pixels::Rgb(Cow::Owned(other.to_rgb8())),
        }
    }

    fn raw(&self) -> &[u8] {
        match self {
            Pixels::Rgb(buffer) => buffer.as_raw(),
            Pixels::Rgba(buffer) => buffer.as_raw(),
        }
    }

    fn color_type(&self) -> ExtendedColorType {
        match self {
            Pixels::Rgb(_) => ExtendedColorType::Rgb8,
            Pixels::Rgba(_) => ExtendedColorType::Rgba8,
        }
    }

    fn has_alpha(&self) -> bool {
        matches!(self, Pixels::Rgba(_))
    }
}

/// Composites RGBA onto an opaque background colour.
fn flatten(rgba: &RgbaImage, background: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.as_raw().len() / 4 * 3);
    for px in rgba.as_raw().chunks_exact(4) {
        if let &[r, g, b, a] = px {
            let a = u32::from(a);
            for (c, bg) in [r, g, b].into_iter().zip(background) {
                out.push(((u32::from(c) * a + u32::from(bg) * (255 - a) + 127) / 255) as u8);
            }
        }
    }
    out
}

pub(super) fn encoder_error(format: OutputFormat, error: impl std::fmt::Display) -> RenderError {
    if crate::render::cancel::stop_requested() {
        return RenderError::Cancelled;
    }
    RenderError::Internal(format!("the {} encoder failed: {error}", format.ext()))
}

fn encode_jpeg(img: &DynamicImage, opts: &EncodeOptions) -> Result<Vec<u8>> {
    let (width, height) = (u16::try_from(img.width()), u16::try_from(img.height()));
    let (Ok(width), Ok(height)) = (width, height) else {
        return Err(RenderError::Invalid(
            "JPEG images cannot be larger than 65535 pixels per side".to_owned(),
        ));
    };
    let pixels = Pixels::of(img);
    let flattened;
    let rgb: &[u8] = match &pixels {
        Pixels::Rgb(buffer) => buffer.as_raw(),
        Pixels::Rgba(buffer) => {
            flattened = flatten(buffer, opts.background);
            &flattened
        }
    };
    let mut out = Output(Vec::new());
    // `new` picks 4:2:0 below quality 90 and 4:4:4 from 90 up.
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, opts.quality.clamp(1, 100));
    encoder.set_optimized_huffman_tables(JPEG_OPTIMIZED_HUFFMAN);
    encoder.set_progressive(opts.progressive);
    if let Some(icc) = opts.icc {
        // Only profiles beyond 16 MB fail; the pixels are still right without one.
        let _ = encoder.add_icc_profile(icc);
    }
    encoder
        .encode(rgb, width, height, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| encoder_error(OutputFormat::Jpeg, e))?;
    Ok(out.0)
}

fn encode_png(img: &DynamicImage, opts: &EncodeOptions) -> Result<Vec<u8>> {
    let compression = match opts.png_compression {
        0 => CompressionType::Uncompressed,
        level => CompressionType::Level(level.min(9)),
    };
    let pixels = Pixels::of(img);
    let mut out = Output(Vec::new());
    let mut encoder = PngEncoder::new_with_quality(&mut out, compression, FilterType::Adaptive);
    if let Some(icc) = opts.icc {
        // PNG always accepts a profile; an error here would only mean a missing iCCP chunk.
        let _ = encoder.set_icc_profile(icc.to_vec());
    }
    encoder
        .write_image(pixels.raw(), img.width(), img.height(), pixels.color_type())
        .map_err(|e| encoder_error(OutputFormat::Png, e))?;
    Ok(out.0)
}

fn encode_gif(img: &DynamicImage, opts: &EncodeOptions) -> Result<Vec<u8>> {
    if img.width() > u32::from(u16::MAX) || img.height() > u32::from(u16::MAX) {
        return Err(RenderError::Invalid(
            "GIF images cannot be larger than 65535 pixels per side".to_owned(),
        ));
    }
    // NeuQuant's sampling factor: 1 examines every pixel (best palette), 30 every 30th.
    // Quality 100 maps to 1 and quality 1 to 30.
    let quality = i32::from(opts.quality.clamp(1, 100));
    let speed = 30 - (quality - 1) * 29 / 99;
    let pixels = Pixels::of(img);
    let mut out = Output(Vec::new());
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, speed.clamp(1, 30));
        encoder
            .encode(pixels.raw(), img.width(), img.height(), pixels.color_type())
            .map_err(|e| encoder_error(OutputFormat::Gif, e))?;
    }
    Ok(out.0)
}

fn encode_webp(img: &DynamicImage, opts: &EncodeOptions) -> Result<Vec<u8>> {
    let (width, height) = (img.width(), img.height());
    if width > WEBP_MAX_SIDE || height > WEBP_MAX_SIDE {
        return Err(RenderError::Invalid(format!(
            "WebP images cannot be larger than {WEBP_MAX_SIDE} pixels per side"
        )));
    }
    let pixels = Pixels::of(img);
    let mut config = libwebp_sys::WebPConfig::new()
        .map_err(|()| encoder_error(OutputFormat::Webp, "libwebp configuration"))?;
    if opts.lossless {
        config.lossless = 1;
        // For lossless, `quality` is compression effort; libwebp's default balances size and time.
        config.quality = 75.0;
    } else {
        config.lossless = 0;
        config.quality = f32::from(opts.quality.clamp(1, 100));
        config.alpha_compression = 1;
    }
    // Multi-threaded encoding in libwebp is deterministic too, but one thread per render is
    // what the render pool expects.
    config.thread_level = 0;
    let memory = match &pixels {
        Pixels::Rgb(buffer) => super::webp::encode(
            buffer.as_raw(),
            super::webp::Layout::Rgb,
            width,
            height,
            &config,
        ),
        Pixels::Rgba(buffer) => super::webp::encode(
            buffer.as_raw(),
            super::webp::Layout::Rgba,
            width,
            height,
            &config,
        ),
    }?;
    let webp_bytes: &[u8] = &memory;
    match opts.icc {
        Some(icc) => {
            Ok(
                container::webp_with_icc(webp_bytes, icc, width, height, pixels.has_alpha())
                    .unwrap_or_else(|| webp_bytes.to_vec()),
            )
        }
        None => Ok(webp_bytes.to_vec()),
    }
}

fn encode_avif(img: &DynamicImage, opts: &EncodeOptions) -> Result<Vec<u8>> {
    let pixels = Pixels::of(img);
    let channels = if pixels.has_alpha() { 4 } else { 3 };
    super::avif::encode(
        pixels.raw(),
        img.width(),
        img.height(),
        channels,
        opts.quality.clamp(1, 100),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::codecs::{decode, sniff, testdata, SourceFormat};
    use crate::render::probe::probe;
    use image::{GenericImageView, Rgba};

    fn options(format: OutputFormat) -> EncodeOptions<'static> {
        EncodeOptions {
            format,
            quality: 80,
            lossless: false,
            png_compression: 7,
            background: [255, 255, 255],
            icc: None,
            progressive: false,
        }
    }

    fn rgb(width: u32, height: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(testdata::gradient(width, height))
    }

    fn rgba(width: u32, height: u32) -> DynamicImage {
        DynamicImage::ImageRgba8(testdata::translucent(width, height))
    }

    #[test]
    fn a_cancelled_render_stops_the_encoders_that_write_as_they_go() {
        let cancel = crate::render::cancel::Cancel::new();
        cancel.cancel();
        let formats = [
            (OutputFormat::Jpeg, false),
            (OutputFormat::Png, false),
            (OutputFormat::Gif, false),
            (OutputFormat::Webp, false),
            (OutputFormat::Webp, true),
        ];
        for (format, lossless) in formats {
            let opts = EncodeOptions {
                lossless,
                ..options(format)
            };
            let r = crate::render::cancel::scope(&cancel, || encode(&rgba(64, 64), &opts));
            assert!(
                matches!(r, Err(RenderError::Cancelled)),
                "{format:?}: {r:?}"
            );
        }
        // Outside the cancelled render's scope, the same encode works.
        encode_ok(&rgba(64, 64), &options(OutputFormat::Png));
    }

    fn encode_ok(img: &DynamicImage, opts: &EncodeOptions) -> Vec<u8> {
        match encode(img, opts) {
            Ok(bytes) => bytes,
            Err(e) => panic!("encode failed: {e:?}"),
        }
    }

    const ALL: [OutputFormat; 6] = [
        OutputFormat::Jpeg,
        OutputFormat::Png,
        OutputFormat::Gif,
        OutputFormat::Webp,
        OutputFormat::Avif,
        OutputFormat::Blur,
    ];

    #[test]
    fn every_encoder_is_deterministic() {
        for format in ALL {
            for img in [rgb(48, 32), rgba(48, 32)] {
                for lossless in [false, true] {
                    let opts = EncodeOptions {
                        lossless,
                        ..options(format)
                    };

                    let first = encode_ok(&img, &opts);
                    let second = encode_ok(&img, &opts);

                    assert!(
                        first == second,
                        "{format:?} lossless={lossless} differs between runs"
                    );
                }
            }
        }
    }

    #[test]
    fn encoded_files_probe_as_their_format_and_size() {
        let expected = [
            (OutputFormat::Jpeg, SourceFormat::Jpeg),
            (OutputFormat::Png, SourceFormat::Png),
            (OutputFormat::Gif, SourceFormat::Gif),
            (OutputFormat::Webp, SourceFormat::Webp),
        ];
        for (output, source) in expected {
            for img in [rgb(37, 21), rgba(37, 21)] {
                let bytes = encode_ok(&img, &options(output));

                let info = probe(&bytes, &Limits::default());

                let info = info.unwrap_or_else(|e| panic!("{output:?}: {e:?}"));
                assert_eq!(
                    (info.format, info.width, info.height),
                    (source, 37, 21),
                    "{output:?}"
                );
                assert!(!info.animated);
            }
        }
    }

    #[test]
    fn avif_output_is_recognised_as_avif() {
        let bytes = encode_ok(&rgba(37, 21), &options(OutputFormat::Avif));

        assert_eq!(sniff(&bytes), Some(SourceFormat::Avif));
    }

    #[test]
    fn jpeg_at_quality_80_is_smaller_than_at_95() {
        let img = rgb(256, 192);

        let q80 = encode_ok(
            &img,
            &EncodeOptions {
                quality: 80,
                ..options(OutputFormat::Jpeg)
            },
        );
        let q95 = encode_ok(
            &img,
            &EncodeOptions {
                quality: 95,
                ..options(OutputFormat::Jpeg)
            },
        );

        assert!(q80.len() < q95.len(), "{} vs {}", q80.len(), q95.len());
    }

    #[test]
    fn png_compression_9_is_no_larger_than_1() {
        let img = rgb(256, 192);

        let level9 = encode_ok(
            &img,
            &EncodeOptions {
                png_compression: 9,
                ..options(OutputFormat::Png)
            },
        );
        let level1 = encode_ok(
            &img,
            &EncodeOptions {
                png_compression: 1,
                ..options(OutputFormat::Png)
            },
        );
        let level0 = encode_ok(
            &img,
            &EncodeOptions {
                png_compression: 0,
                ..options(OutputFormat::Png)
            },
        );

        assert!(
            level9.len() <= level1.len(),
            "{} vs {}",
            level9.len(),
            level1.len()
        );
        assert!(level1.len() < level0.len());
    }

    #[test]
    fn png_and_lossless_webp_keep_pixels_exactly() {
        for (format, lossless) in [(OutputFormat::Png, false), (OutputFormat::Webp, true)] {
            for img in [rgb(19, 7), rgba(19, 7)] {
                let bytes = encode_ok(
                    &img,
                    &EncodeOptions {
                        lossless,
                        ..options(format)
                    },
                );

                let decoded = decode(&bytes, &Limits::default(), None).unwrap();

                assert_eq!(decoded.image, img, "{format:?}");
            }
        }
    }

    #[test]
    fn progressive_jpegs_have_a_progressive_frame_and_decode_to_the_same_size() {
        let img = rgb(64, 48);
        let baseline = encode_ok(&img, &options(OutputFormat::Jpeg));
        let progressive = encode_ok(
            &img,
            &EncodeOptions {
                progressive: true,
                ..options(OutputFormat::Jpeg)
            },
        );

        // SOF0 marks a baseline frame, SOF2 a progressive one.
        let has = |bytes: &[u8], marker: u8| bytes.windows(2).any(|w| w == [0xFF, marker]);
        assert!(has(&baseline, 0xC0) && !has(&baseline, 0xC2));
        assert!(has(&progressive, 0xC2) && !has(&progressive, 0xC0));
        let decoded = decode(&progressive, &Limits::default(), None).unwrap();
        assert_eq!(decoded.image.dimensions(), (64, 48));
    }

    #[test]
    fn jpeg_flattens_transparency_onto_the_background() {
        let clear = DynamicImage::ImageRgba8(RgbaImage::from_pixel(16, 16, Rgba([0, 0, 0, 0])));
        let opts = EncodeOptions {
            background: [255, 0, 0],
            ..options(OutputFormat::Jpeg)
        };

        let bytes = encode_ok(&clear, &opts);

        let decoded = decode(&bytes, &Limits::default(), None).unwrap();
        let px = decoded.image.to_rgb8().get_pixel(8, 8).0;
        assert!(px[0] > 240 && px[1] < 15 && px[2] < 15, "{px:?}");
    }

    #[test]
    fn icc_profiles_are_embedded_in_jpeg_png_and_webp() {
        // Not a valid profile, but decoders pass the bytes through unchecked.
        let icc: Vec<u8> = (0..=255u8).cycle().take(601).collect();
        for (format, lossless, img) in [
            (OutputFormat::Jpeg, false, rgb(20, 10)),
            (OutputFormat::Png, false, rgba(20, 10)),
            (OutputFormat::Webp, false, rgb(20, 10)),
            (OutputFormat::Webp, false, rgba(20, 10)),
            (OutputFormat::Webp, true, rgba(20, 10)),
        ] {
            let opts = EncodeOptions {
                lossless,
                icc: Some(&icc),
                ..options(format)
            };

            let bytes = encode_ok(&img, &opts);

            let decoded = decode(&bytes, &Limits::default(), None)
                .unwrap_or_else(|e| panic!("{format:?} lossless={lossless}: {e:?}"));
            assert_eq!(
                decoded.icc.as_deref(),
                Some(icc.as_slice()),
                "{format:?} lossless={lossless}"
            );
            assert_eq!(decoded.image.dimensions(), (20, 10));
        }
    }

    #[test]
    fn outputs_beyond_the_limits_are_invalid() {
        let too_wide = DynamicImage::new_rgb8(Limits::default().max_dimension + 1, 1);
        let empty = DynamicImage::new_rgb8(0, 0);

        for img in [too_wide, empty] {
            let result = encode(&img, &options(OutputFormat::Png));

            assert!(matches!(result, Err(RenderError::Invalid(_))), "{result:?}");
        }
    }
}
