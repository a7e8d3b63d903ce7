//! Probing an uploaded source: what it is, how big it is, and whether it can be decoded at all.
//! Uploads are probed once, so a source that is stored can later be rendered; the probe
//! therefore decodes the whole image (first frame) instead of trusting the header alone.

use serde_json::{Map, Value};

use crate::render::codecs::{self, container, SourceFormat};
use crate::render::error::Result;
use crate::render::limits::Limits;

/// What a probe learns about a source image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// The format recognised from the magic bytes.
    pub format: SourceFormat,
    /// Width as stored, before EXIF orientation.
    pub width: u32,
    /// Height as stored, before EXIF orientation.
    pub height: u32,
    /// No pixel has alpha below 255.
    pub opaque: bool,
    /// GIF, WebP or APNG with more than one frame.
    pub animated: bool,
    /// Frames the container declares (1 for a still image).
    pub frames: u64,
    /// EXIF orientation 1..=8 (1 when absent).
    pub orientation: u8,
    /// Small static metadata: `{"exif": {"Orientation", "Make"?, "Model"?,
    /// "DateTimeOriginal"?}}` when the source has EXIF, otherwise empty.
    pub static_metadata: Map<String, Value>,
}

/// Identifies and validates a source image.
///
/// A TrueType or OpenType font is accepted as a source without pixels (width and height 0)
/// when its tables parse; an SVG is checked by drawing it small, after its intrinsic size and
/// the memory its drawing needs at that size were checked against `limits`.
///
/// Errors: `Unsupported` for data that is not a supported image format (and for AVIF and HEIC,
/// which this build cannot decode), `TooLarge` when the header's dimensions exceed `limits`
/// (checked before any pixel is decoded), `Unprocessable` for truncated or corrupt images.
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<ImageInfo> {
    // A font is stored for the `text` operation: no pixels, so no size.
    if codecs::sniff(bytes).is_some_and(|f| f.is_font()) {
        let (format, static_metadata) = codecs::probe_font(bytes)?;
        return Ok(ImageInfo {
            format,
            width: 0,
            height: 0,
            opaque: false,
            animated: false,
            frames: 1,
            orientation: 1,
            static_metadata,
        });
    }
    // Every entropy-coded block is still read (that is what finds truncated and corrupt
    // files), but JPEGs are reconstructed at 1/8 size: the pixels are not kept, and a 12-MP
    // photo is checked in about half the time of a full decode.
    let source = codecs::read_source(bytes, limits, Some((1, 1)), codecs::Purpose::Check)?;
    let orientation = source.orientation.to_exif();
    let mut static_metadata = Map::new();
    if let Some(exif) = &source.exif {
        let summary = codecs::exif_summary(exif, orientation);
        static_metadata.insert("exif".to_owned(), Value::Object(summary));
    }
    Ok(ImageInfo {
        format: source.format,
        width: source.width,
        height: source.height,
        opaque: source.opaque,
        animated: container::is_animated(source.format, bytes),
        frames: container::frame_count(source.format, bytes),
        orientation,
        static_metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::codecs::testdata;
    use crate::render::error::RenderError;
    use image::{DynamicImage, ImageFormat};

    fn limits() -> Limits {
        Limits::default()
    }

    fn probe_ok(bytes: &[u8]) -> ImageInfo {
        match probe(bytes, &limits()) {
            Ok(info) => info,
            Err(e) => panic!("probe failed: {e:?}"),
        }
    }

    #[test]
    fn a_baseline_jpeg_reports_format_and_size() {
        let bytes = testdata::jpeg(64, 48, false, None);

        let info = probe_ok(&bytes);

        assert_eq!(info.format, SourceFormat::Jpeg);
        assert_eq!((info.width, info.height), (64, 48));
        assert!(info.opaque);
        assert!(!info.animated);
        assert_eq!(info.orientation, 1);
        assert!(info.static_metadata.is_empty());
    }

    #[test]
    fn a_progressive_jpeg_is_accepted() {
        let bytes = testdata::jpeg(40, 30, true, None);

        let info = probe_ok(&bytes);

        assert_eq!(
            (info.format, info.width, info.height),
            (SourceFormat::Jpeg, 40, 30)
        );
    }

    #[test]
    fn cmyk_and_ycck_jpegs_are_accepted() {
        for ycck in [false, true] {
            let bytes = testdata::cmyk_jpeg(16, 8, [255, 0, 0, 0], ycck);

            let info = probe_ok(&bytes);

            assert_eq!((info.width, info.height, info.opaque), (16, 8, true));
        }
    }

    #[test]
    fn a_jpeg_with_exif_reports_orientation_and_make() {
        let exif = testdata::exif_block(6, "TestCam");
        let bytes = testdata::jpeg(40, 20, false, Some(&exif));

        let info = probe_ok(&bytes);

        assert_eq!(info.orientation, 6);
        assert_eq!((info.width, info.height), (40, 20));
        let exif = info.static_metadata.get("exif").and_then(Value::as_object);
        assert_eq!(
            exif.and_then(|e| e.get("Orientation")),
            Some(&Value::from(6))
        );
        assert_eq!(
            exif.and_then(|e| e.get("Make")),
            Some(&Value::from("TestCam"))
        );
    }

    #[test]
    fn pngs_of_every_layout_are_accepted() {
        let rgb = DynamicImage::ImageRgb8(testdata::gradient(20, 10));
        let cases = [
            (
                "8-bit RGB",
                testdata::with_image(&rgb, ImageFormat::Png),
                true,
            ),
            (
                "16-bit RGB",
                testdata::with_image(&DynamicImage::ImageRgb16(rgb.to_rgb16()), ImageFormat::Png),
                true,
            ),
            (
                "gray+alpha",
                testdata::with_image(
                    &DynamicImage::ImageLumaA8(
                        DynamicImage::ImageRgba8(testdata::translucent(20, 10)).to_luma_alpha8(),
                    ),
                    ImageFormat::Png,
                ),
                false,
            ),
            (
                "RGBA fully opaque",
                testdata::with_image(&DynamicImage::ImageRgba8(rgb.to_rgba8()), ImageFormat::Png),
                true,
            ),
        ];
        for (name, bytes, opaque) in cases {
            let info = probe_ok(&bytes);
            assert_eq!(
                (info.format, info.width, info.height),
                (SourceFormat::Png, 20, 10),
                "{name}"
            );
            assert_eq!(info.opaque, opaque, "{name}");
        }
    }

    #[test]
    fn palette_pngs_report_transparency_from_trns() {
        assert!(probe_ok(&testdata::palette_png(false)).opaque);
        assert!(!probe_ok(&testdata::palette_png(true)).opaque);
    }

    #[test]
    fn an_adam7_interlaced_png_is_accepted() {
        let info = probe_ok(&testdata::interlaced_png(13, 11));

        assert_eq!((info.width, info.height), (13, 11));
    }

    #[test]
    fn gifs_report_whether_they_are_animated() {
        let still = probe_ok(&testdata::gif(12, 8, 1));
        let animated = probe_ok(&testdata::gif(12, 8, 2));

        assert_eq!(
            (still.format, still.width, still.height),
            (SourceFormat::Gif, 12, 8)
        );
        assert!(!still.animated);
        assert!(animated.animated);
    }

    #[test]
    fn webps_lossy_lossless_and_animated_are_recognised() {
        let lossy = probe_ok(&testdata::webp(30, 20, false, false));
        let lossless = probe_ok(&testdata::webp(30, 20, true, true));
        let animated = probe_ok(&testdata::animated_webp(30, 20));

        assert_eq!(
            (lossy.format, lossy.width, lossy.height),
            (SourceFormat::Webp, 30, 20)
        );
        assert!(lossy.opaque && !lossy.animated);
        assert!(!lossless.opaque);
        assert!(animated.animated);
    }

    #[test]
    fn tiff_and_bmp_are_accepted() {
        let img = DynamicImage::ImageRgb8(testdata::gradient(9, 7));
        let tiff = probe_ok(&testdata::with_image(&img, ImageFormat::Tiff));
        let bmp = probe_ok(&testdata::with_image(&img, ImageFormat::Bmp));

        assert_eq!(
            (tiff.format, tiff.width, tiff.height),
            (SourceFormat::Tiff, 9, 7)
        );
        assert_eq!(
            (bmp.format, bmp.width, bmp.height),
            (SourceFormat::Bmp, 9, 7)
        );
    }

    #[test]
    fn non_images_are_unsupported() {
        let mut random = Vec::new();
        let mut state = 0x1234_5678u32;
        for _ in 0..4096 {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            random.push((state >> 24) as u8);
        }
        for (name, bytes) in [
            ("empty", Vec::new()),
            (
                "text named .jpg",
                b"this is a text file named photo.jpg\n".to_vec(),
            ),
            ("random bytes", random),
        ] {
            let result = probe(&bytes, &limits());
            assert!(
                matches!(&result, Err(RenderError::Unsupported(m)) if m.contains("is not a supported image format")),
                "{name}: {result:?}"
            );
        }
    }

    #[cfg(not(feature = "heif"))]
    #[test]
    fn avif_sources_are_recognised_but_unsupported() {
        let bytes = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miafrest of the file";

        let result = probe(bytes, &limits());

        assert!(
            matches!(&result, Err(RenderError::Unsupported(m)) if m.contains("AVIF")),
            "{result:?}"
        );
    }

    #[test]
    fn an_svg_reports_its_intrinsic_size_and_transparency() {
        let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 300.5 100"><rect width="100" height="100"/></svg>"#;

        let info = probe_ok(svg);

        assert_eq!(
            (info.format, info.width, info.height),
            (SourceFormat::Svg, 301, 100)
        );
        assert!(!info.opaque && !info.animated);
    }

    #[test]
    fn a_font_is_a_source_without_pixels() {
        let font = include_bytes!("../../tests/fixtures/fonts/dejavu-sans-latin.ttf");

        let info = probe_ok(font);

        assert_eq!(
            (info.format, info.width, info.height),
            (SourceFormat::Ttf, 0, 0)
        );
        assert!(info.static_metadata["font"]["glyphs"].as_u64().unwrap() > 100);
        assert!(matches!(
            probe(&font[..100], &limits()),
            Err(RenderError::Unprocessable(_))
        ));
    }

    #[cfg(not(feature = "heif"))]
    #[test]
    fn heic_sources_are_recognised_but_unsupported() {
        let result = probe(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", &limits());

        assert!(
            matches!(&result, Err(RenderError::Unsupported(m)) if m.contains("HEIC")),
            "{result:?}"
        );
    }

    #[test]
    fn a_truncated_jpeg_is_unprocessable() {
        let bytes = testdata::jpeg(64, 64, false, None);

        let result = probe(&bytes[..bytes.len() * 2 / 3], &limits());

        assert!(
            matches!(result, Err(RenderError::Unprocessable(_))),
            "{result:?}"
        );
    }

    #[test]
    fn a_jpeg_missing_only_its_end_marker_is_unprocessable() {
        let bytes = testdata::jpeg(64, 64, true, None);

        let result = probe(&bytes[..bytes.len() - 2], &limits());

        assert!(
            matches!(result, Err(RenderError::Unprocessable(_))),
            "{result:?}"
        );
    }

    #[test]
    fn a_truncated_png_is_unprocessable() {
        let img = DynamicImage::ImageRgb8(testdata::gradient(64, 64));
        let bytes = testdata::with_image(&img, ImageFormat::Png);

        let result = probe(&bytes[..bytes.len() / 2], &limits());

        assert!(
            matches!(result, Err(RenderError::Unprocessable(_))),
            "{result:?}"
        );
    }

    #[test]
    fn a_header_claiming_100000_by_100000_is_too_large_before_decoding() {
        let bytes = testdata::huge_png_header(100_000, 100_000);

        let result = probe(&bytes, &limits());

        assert!(
            matches!(&result, Err(RenderError::TooLarge(m)) if m.contains("100000x100000")),
            "{result:?}"
        );
    }

    #[test]
    fn the_pixel_limit_is_checked_from_the_header() {
        let bytes = testdata::jpeg(200, 100, false, None);
        let tight = Limits {
            max_dimension: 1000,
            max_pixels: 10_000,
            ..Limits::default()
        };

        let result = probe(&bytes, &tight);

        assert!(
            matches!(&result, Err(RenderError::TooLarge(m)) if m.contains("20000") && m.contains("10000")),
            "{result:?}"
        );
    }
}
