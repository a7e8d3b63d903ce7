//! The `resize` operation: target-size arithmetic (modes, upscale rules, dpr) and the pixel
//! resampling shared by every operation that scales an image (composition uses it for the
//! secondary image).
//!
//! Resampling is Lanczos3 through `fast_image_resize`; for RGBA its default premultiplies
//! alpha before filtering, so transparent pixels do not bleed their colour into the edges.
//! `fill` follows the rokka documentation: the given dimensions are the *minimum* size of the
//! result (cover), nothing is cropped — a following `crop` does that.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, RgbImage, RgbaImage};

use super::{check_output, crop, default_sharpen_params, filter, OpContext, Opts};
use crate::render::error::{RenderError, Result};

/// How the target box is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// Keep the aspect ratio and fit inside the box (the box is the maximum size).
    Box,
    /// Keep the aspect ratio and cover the box (the box is the minimum size).
    Fill,
    /// Exactly the given dimensions, distorting if needed.
    Absolute,
}

impl ResizeMode {
    pub(super) fn from_options(o: &Opts, key: &str) -> Result<ResizeMode> {
        match o.str_or(key, "box")? {
            "box" => Ok(ResizeMode::Box),
            "fill" => Ok(ResizeMode::Fill),
            "absolute" => Ok(ResizeMode::Absolute),
            _ => Err(o.invalid(key, "must be one of box, fill, absolute")),
        }
    }
}

/// The `resize` operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Resize {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub mode: ResizeMode,
    /// `false`: the result is never larger than the source (before dpr).
    pub upscale: bool,
    /// `false`: dpr may not push the result beyond the source size either.
    pub upscale_dpr: bool,
    /// Sharpen after downsizing when the image looks like a photo (entropy > 5).
    pub sharpen: bool,
}

/// rokka's threshold above which `sharpen: true` applies ("indicating a photo or similar").
const SHARPEN_MIN_ENTROPY: f64 = 5.0;

impl Resize {
    pub(super) fn from_options(o: &Opts) -> Result<Resize> {
        let width = o.u32_opt_in("width", 1, 10_000)?;
        let height = o.u32_opt_in("height", 1, 10_000)?;
        if width.is_none() && height.is_none() {
            return Err(o.invalid("width", "or resize.height is required"));
        }
        Ok(Resize {
            width,
            height,
            mode: ResizeMode::from_options(o, "mode")?,
            upscale: o.bool_or("upscale", true)?,
            upscale_dpr: o.bool_or("upscale_dpr", true)?,
            sharpen: o.bool_or("sharpen", false)?,
        })
    }

    /// The result size for a `src_width` × `src_height` image at device pixel ratio `dpr`.
    ///
    /// The size is first computed for dpr 1 (clamped to the source when `upscale` is false),
    /// then multiplied by dpr. With `upscale_dpr: false` the dpr multiplication may grow the
    /// result only up to the source size (never below the dpr-1 size), so that a dpr-2 render
    /// is never smaller than its dpr-1 sibling. Returned as `u64` so that absurd requests can
    /// be refused by the limits check rather than overflow.
    pub fn target_size(&self, src_width: u32, src_height: u32, dpr: f64) -> (u64, u64) {
        let (sw, sh) = (f64::from(src_width.max(1)), f64::from(src_height.max(1)));
        let fx = self.width.map(|w| f64::from(w) / sw);
        let fy = self.height.map(|h| f64::from(h) / sh);
        let (mut sx, mut sy) = match (fx, fy) {
            (Some(x), None) => (x, x),
            (None, Some(y)) => (y, y),
            (Some(x), Some(y)) => match self.mode {
                ResizeMode::Box => (x.min(y), x.min(y)),
                ResizeMode::Fill => (x.max(y), x.max(y)),
                ResizeMode::Absolute => (x, y),
            },
            (None, None) => (1.0, 1.0),
        };
        if !self.upscale {
            sx = sx.min(1.0);
            sy = sy.min(1.0);
        }
        let dpr = if dpr.is_finite() && dpr > 0.0 {
            dpr
        } else {
            1.0
        };
        let with_dpr = |s: f64| {
            if dpr > 1.0 && !self.upscale_dpr {
                s.max((s * dpr).min(1.0))
            } else {
                s * dpr
            }
        };
        let (sx, sy) = (with_dpr(sx), with_dpr(sy));
        let out = |src: f64, s: f64| ((src * s).round().max(1.0)).min(u64::MAX as f64) as u64;
        (out(sw, sx), out(sh, sy))
    }

    /// Reads `img` in place; the caller gives it RGB8 or RGBA8 (a same-size resize returns a
    /// copy of it as it is).
    pub(super) fn apply(&self, img: &DynamicImage, ctx: &mut OpContext) -> Result<DynamicImage> {
        let (sw, sh) = (img.width(), img.height());
        let (w, h) = self.target_size(sw, sh, ctx.dpr);
        check_output(&ctx.limits, "resize", w, h)?;
        let (w, h) = (to_u32(w)?, to_u32(h)?);
        let mut out = resize_exact(img, w, h)?;
        let (fx, fy) = (f64::from(w) / f64::from(sw), f64::from(h) / f64::from(sh));
        ctx.map_areas(|a| Some(a.scaled(fx, fy)));
        let downsized = u64::from(w) * u64::from(h) < u64::from(sw) * u64::from(sh);
        if self.sharpen && downsized && crop::entropy(&out) > SHARPEN_MIN_ENTROPY {
            out = filter::sharpen(&out, &default_sharpen_params());
        }
        Ok(out)
    }
}

fn to_u32(v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| RenderError::Invalid(format!("size {v} is out of range")))
}

/// Resamples `img` to exactly `width` × `height` (Lanczos3, premultiplied alpha), keeping
/// the RGB8/RGBA8 variant. The caller checks the size against the limits.
pub fn resize_exact(img: &DynamicImage, width: u32, height: u32) -> Result<DynamicImage> {
    if width == 0 || height == 0 {
        return Err(RenderError::Invalid("resize: result would be empty".into()));
    }
    if img.width() == width && img.height() == height {
        return Ok(img.clone());
    }
    match img {
        DynamicImage::ImageRgb8(buf) => {
            let data = resample(
                buf.as_raw(),
                buf.width(),
                buf.height(),
                width,
                height,
                PixelType::U8x3,
            )?;
            RgbImage::from_raw(width, height, data)
                .map(DynamicImage::ImageRgb8)
                .ok_or_else(|| RenderError::Internal("resize: buffer size mismatch".into()))
        }
        DynamicImage::ImageRgba8(buf) => {
            let data = resample(
                buf.as_raw(),
                buf.width(),
                buf.height(),
                width,
                height,
                PixelType::U8x4,
            )?;
            RgbaImage::from_raw(width, height, data)
                .map(DynamicImage::ImageRgba8)
                .ok_or_else(|| RenderError::Internal("resize: buffer size mismatch".into()))
        }
        other if other.color().has_alpha() => {
            resize_exact(&DynamicImage::ImageRgba8(other.to_rgba8()), width, height)
        }
        other => resize_exact(&DynamicImage::ImageRgb8(other.to_rgb8()), width, height),
    }
}

fn resample(
    src: &[u8],
    src_width: u32,
    src_height: u32,
    width: u32,
    height: u32,
    pixel_type: PixelType,
) -> Result<Vec<u8>> {
    let internal = |e: &dyn std::fmt::Display| RenderError::Internal(format!("resize: {e}"));
    let src_view =
        ImageRef::new(src_width, src_height, src, pixel_type).map_err(|e| internal(&e))?;
    let mut dst = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new()
        .resize(&src_view, &mut dst, &options)
        .map_err(|e| internal(&e))?;
    Ok(dst.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::ops::tests::{
        context, op, quadrants, rgb_at, rgba_at, solid_rgba, BLUE, RED,
    };
    use crate::render::ops::Operation;
    use serde_json::json;

    fn resize(options: serde_json::Value) -> Resize {
        match op("resize", options) {
            Operation::Resize(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_dpr_and_upscale_table_of_the_spec_holds() {
        let plain = resize(json!({"width": 200}));
        let no_upscale = resize(json!({"width": 400, "upscale": false}));
        let neither = resize(json!({"width": 400, "upscale": false, "upscale_dpr": false}));

        assert_eq!(plain.target_size(300, 300, 1.0).0, 200);
        assert_eq!(plain.target_size(300, 300, 2.0).0, 400);
        assert_eq!(no_upscale.target_size(300, 300, 1.0).0, 300);
        assert_eq!(no_upscale.target_size(300, 300, 2.0).0, 600);
        assert_eq!(neither.target_size(300, 300, 1.0).0, 300);
        assert_eq!(neither.target_size(300, 300, 2.0).0, 300);
    }

    #[test]
    fn upscale_dpr_false_lets_dpr_grow_a_small_request_up_to_the_source() {
        let r = resize(json!({"width": 60, "upscale": false, "upscale_dpr": false}));

        assert_eq!(r.target_size(100, 100, 2.0), (100, 100));
        assert_eq!(r.target_size(100, 100, 1.0), (60, 60));
    }

    #[test]
    fn box_mode_fits_inside_and_keeps_the_aspect() {
        let r = resize(json!({"width": 20, "height": 20}));

        assert_eq!(r.target_size(40, 30, 1.0), (20, 15));
    }

    #[test]
    fn fill_mode_covers_the_box_without_cropping() {
        let r = resize(json!({"width": 20, "height": 20, "mode": "fill"}));

        assert_eq!(r.target_size(40, 30, 1.0), (27, 20));
    }

    #[test]
    fn absolute_mode_takes_the_exact_size() {
        let r = resize(json!({"width": 10, "height": 50, "mode": "absolute"}));

        assert_eq!(r.target_size(40, 30, 1.0), (10, 50));
    }

    #[test]
    fn only_a_height_keeps_the_aspect() {
        let r = resize(json!({"height": 60, "mode": "absolute"}));

        assert_eq!(r.target_size(40, 30, 1.0), (80, 60));
    }

    #[test]
    fn upscale_false_never_enlarges() {
        let r = resize(json!({"width": 100, "height": 100, "upscale": false}));

        assert_eq!(r.target_size(40, 30, 1.0), (40, 30));
    }

    #[test]
    fn resizing_keeps_quadrant_colours() {
        let mut ctx = context(1.0);

        let out = op("resize", json!({"width": 20})).apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.width(), out.height()), (20, 15));
        assert_eq!(rgb_at(&out, 2, 2), RED);
        assert_eq!(rgb_at(&out, 2, 13), BLUE);
        assert!(matches!(out, DynamicImage::ImageRgb8(_)));
    }

    #[test]
    fn resizing_rgba_keeps_the_variant_and_transparent_colour_does_not_bleed() {
        let mut img = solid_rgba(20, 20, [255, 0, 0, 255]).to_rgba8();
        for y in 0..20 {
            for x in 10..20 {
                img.put_pixel(x, y, image::Rgba([0, 255, 0, 0]));
            }
        }
        let out = resize_exact(&DynamicImage::ImageRgba8(img), 10, 10);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(out, DynamicImage::ImageRgba8(_)));
        let edge = rgba_at(&out, 4, 5);
        assert!(edge[3] > 0 && edge[1] < 10, "{edge:?}");
    }
}
