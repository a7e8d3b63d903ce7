//! The stack options that shape the output file rather than the picture: `interlacing.mode`,
//! `transparency.color`, and the JPEG transparency switches (`jpg.transparency.autoformat`,
//! `jpg.transparency.convert`). Each works or is refused with a message naming it; none is
//! silently ignored. The quality options are read where the encoders are configured
//! (`pipeline`), and the `optim.*` options have nothing to change: a render is encoded once,
//! at its final quality, and never optimised again later, so one URL always answers the same
//! bytes.

use image::DynamicImage;
use serde_json::{Map, Value};

use crate::render::codecs::OutputFormat;
use crate::render::error::{RenderError, Result};
use crate::render::ops::parse_hex_color;

/// Whether `interlacing.mode` asks for an interlaced (progressive) file.
pub fn interlaced(options: &Map<String, Value>) -> bool {
    options
        .get("interlacing.mode")
        .and_then(Value::as_str)
        .is_some_and(|mode| mode != "none")
}

/// Refuses an interlaced PNG or GIF asked for explicitly (`explicit` lists the stack options a
/// stack, the URL or an expression set): their encoders here write non-interlaced files only.
/// The default (`plane`, rokka's) gives progressive JPEG and leaves PNG and GIF plain; WebP,
/// AVIF and BlurHash have no interlacing.
pub fn check(
    options: &Map<String, Value>,
    explicit: &[String],
    format: OutputFormat,
) -> Result<()> {
    let asked = explicit.iter().any(|name| name == "interlacing.mode");
    if asked && interlaced(options) && matches!(format, OutputFormat::Png | OutputFormat::Gif) {
        return Err(RenderError::Invalid(format!(
            "interlacing.mode: interlaced {} output is not supported; use none (JPEG output is \
             progressive with line, plane or partition)",
            format.ext()
        )));
    }
    Ok(())
}

/// `transparency.color`: when set, every output is flattened onto it (rokka: "always flatten
/// transparency onto this colour"), not only the formats without alpha.
pub fn flatten_if_asked(image: DynamicImage, options: &Map<String, Value>) -> DynamicImage {
    let colour = options
        .get("transparency.color")
        .and_then(Value::as_str)
        .and_then(parse_hex_color);
    match (colour, &image) {
        (Some(background), DynamicImage::ImageRgba8(rgba)) => {
            let mut out = image::RgbImage::new(rgba.width(), rgba.height());
            for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
                let a = u32::from(src.0[3]);
                for ((d, &c), bg) in dst.0.iter_mut().zip(&src.0).zip(background) {
                    *d = ((u32::from(c) * a + u32::from(bg) * (255 - a) + 127) / 255) as u8;
                }
            }
            DynamicImage::ImageRgb8(out)
        }
        _ => image,
    }
}

/// Whether some pixel of `image` is not fully opaque.
pub fn has_visible_alpha(image: &DynamicImage) -> bool {
    match image {
        DynamicImage::ImageRgba8(rgba) => rgba.pixels().any(|p| p.0[3] < 255),
        other if other.color().has_alpha() => other.to_rgba8().pixels().any(|p| p.0[3] < 255),
        _ => false,
    }
}

/// The format a render is written in: a JPEG render with visible transparency becomes
/// `alpha_format` when the request asked for one (`jpg.transparency.autoformat` or
/// `.convert`, decided with the format from `Accept`).
pub fn final_format(
    image: &DynamicImage,
    format: OutputFormat,
    alpha_format: Option<OutputFormat>,
) -> OutputFormat {
    match alpha_format {
        Some(other) if format == OutputFormat::Jpeg && has_visible_alpha(image) => other,
        _ => format,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgba, RgbaImage};
    use serde_json::json;

    fn options(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn half_clear() -> DynamicImage {
        DynamicImage::ImageRgba8(RgbaImage::from_fn(4, 2, |x, _| {
            Rgba([0, 0, 255, if x < 2 { 255 } else { 0 }])
        }))
    }

    #[test]
    fn transparency_color_flattens_onto_the_colour() {
        let flat = flatten_if_asked(
            half_clear(),
            &options(json!({"transparency.color": "FF0000"})),
        );
        let kept = flatten_if_asked(half_clear(), &options(json!({})));

        let rgb = flat.as_rgb8().expect("flattened to RGB");
        assert_eq!(
            (rgb.get_pixel(0, 0).0, rgb.get_pixel(3, 1).0),
            ([0, 0, 255], [255, 0, 0])
        );
        assert!(has_visible_alpha(&kept));
    }

    #[test]
    fn only_a_jpeg_with_visible_alpha_changes_format() {
        let opaque = DynamicImage::ImageRgba8(RgbaImage::from_pixel(2, 2, Rgba([1, 2, 3, 255])));
        let png = Some(OutputFormat::Png);

        assert_eq!(
            final_format(&half_clear(), OutputFormat::Jpeg, png),
            OutputFormat::Png
        );
        assert_eq!(
            final_format(&opaque, OutputFormat::Jpeg, png),
            OutputFormat::Jpeg
        );
        assert_eq!(
            final_format(&half_clear(), OutputFormat::Jpeg, None),
            OutputFormat::Jpeg
        );
        assert_eq!(
            final_format(&half_clear(), OutputFormat::Webp, png),
            OutputFormat::Webp
        );
    }

    #[test]
    fn an_explicit_interlaced_png_or_gif_is_refused_and_the_default_is_not() {
        let plane = options(json!({"interlacing.mode": "plane"}));
        let none = options(json!({"interlacing.mode": "none"}));
        let explicit = vec!["interlacing.mode".to_owned()];

        assert!(check(&plane, &explicit, OutputFormat::Png).is_err());
        assert!(check(&plane, &explicit, OutputFormat::Gif).is_err());
        assert!(check(&plane, &explicit, OutputFormat::Jpeg).is_ok());
        assert!(check(&plane, &[], OutputFormat::Png).is_ok());
        assert!(check(&none, &explicit, OutputFormat::Png).is_ok());
        assert!(interlaced(&plane) && !interlaced(&none));
    }
}
