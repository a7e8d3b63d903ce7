//! The `trim` operation: removes the borders that have the top-left pixel's colour.
//!
//! A pixel belongs to the border when every channel (alpha included) is within `fuzzy` % of
//! 255 of the reference pixel. The kept region is the bounding box of all other pixels; an
//! image that is border everywhere is returned unchanged rather than trimmed to nothing.

use image::DynamicImage;

use super::OpContext;

/// The region to keep as (x, y, width, height), or `None` when nothing differs from the
/// top-left pixel.
pub fn bounds(img: &DynamicImage, fuzzy: f32) -> Option<(u32, u32, u32, u32)> {
    let rgba = img.to_rgba8();
    let reference = rgba.get_pixel_checked(0, 0)?.0;
    let tolerance = (f32::clamp(fuzzy, 0.0, 100.0) / 100.0 * 255.0).round() as i16;
    let mut found: Option<(u32, u32, u32, u32)> = None;
    for (x, y, p) in rgba.enumerate_pixels() {
        let differs =
            p.0.iter()
                .zip(reference.iter())
                .any(|(a, b)| (i16::from(*a) - i16::from(*b)).abs() > tolerance);
        if differs {
            found = Some(match found {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            });
        }
    }
    found.map(|(x0, y0, x1, y1)| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// Trims `img` and moves the areas of `ctx` along. Trimming never enlarges, so no limit check.
pub fn apply(img: DynamicImage, fuzzy: f32, ctx: &mut OpContext) -> DynamicImage {
    match bounds(&img, fuzzy) {
        Some((x, y, w, h)) if (w, h) != (img.width(), img.height()) => {
            ctx.crop_areas(x, y, w, h);
            img.crop_imm(x, y, w, h)
        }
        _ => img,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::ops::tests::{context, op, quadrants, rgb_at};
    use crate::render::ops::Area;
    use image::{Rgb, RgbImage};
    use serde_json::json;

    fn framed(border: [u8; 3], inner: [u8; 3]) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(40, 30, |x, y| {
            if (5..25).contains(&x) && (8..20).contains(&y) {
                Rgb(inner)
            } else {
                Rgb(border)
            }
        }))
    }

    #[test]
    fn trim_removes_a_uniform_border() {
        let mut ctx = context(1.0);
        ctx.subject_area = Some(Area::new(10.0, 10.0, 2.0, 2.0));

        let out = op("trim", json!({})).apply(framed([255, 255, 255], [0, 0, 0]), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.width(), out.height()), (20, 12));
        assert_eq!(rgb_at(&out, 0, 0), [0, 0, 0]);
        assert_eq!(ctx.subject_area, Some(Area::new(5.0, 2.0, 2.0, 2.0)));
    }

    #[test]
    fn fuzzy_tolerates_a_near_border_colour() {
        let img = framed([250, 250, 250], [245, 245, 245]);

        assert_eq!(bounds(&img, 0.0), Some((5, 8, 20, 12)));
        assert_eq!(bounds(&img, 5.0), None);
    }

    #[test]
    fn a_uniform_image_is_never_trimmed_to_nothing() {
        let mut ctx = context(1.0);
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, Rgb([1, 2, 3])));

        let out = op("trim", json!({"fuzzy": 10})).apply(img, &mut ctx);

        assert!(matches!(out, Ok(ref i) if (i.width(), i.height()) == (8, 8)));
    }

    #[test]
    fn an_image_without_border_is_unchanged() {
        assert_eq!(bounds(&quadrants(40, 30), 0.0), Some((0, 0, 40, 30)));
    }
}
