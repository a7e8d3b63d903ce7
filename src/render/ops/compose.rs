//! Operations that combine layers: `circlemask`, `dropshadow` and `composition`.
//!
//! All blending is the straight-alpha "over" operator on RGBA8. `composition` follows the
//! rokka documentation for `mode`, which names where the *initial* (primary) image goes:
//! `foreground` puts the primary in front of the secondary (extending a canvas), `background`
//! puts it behind the secondary (watermarks). The canvas is the larger of both in each
//! dimension, so the result is never smaller than the primary; both layers are placed on it by
//! the anchor. A primary without alpha yields RGB again when the result is fully opaque.

use image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};

use super::crop::{offset_h, offset_v, Anchor};
use super::resize::{resize_exact, Resize, ResizeMode};
use super::{check_output, filter, rotate, OpContext, Opts};
use crate::render::error::{RenderError, Result};

/// Prefix of the layer ids the `secondary` loader gets for `secondary_stack` layers.
pub const STACK_LAYER: &str = "stack:";

/// Makes everything outside the largest centred circle transparent, with a one-pixel
/// antialiased edge. The result is RGBA.
pub fn circlemask(img: &DynamicImage) -> DynamicImage {
    let mut out = img.to_rgba8();
    let (w, h) = (f64::from(out.width()), f64::from(out.height()));
    let (cx, cy, r) = (w / 2.0, h / 2.0, w.min(h) / 2.0);
    for (x, y, p) in out.enumerate_pixels_mut() {
        let dx = f64::from(x) + 0.5 - cx;
        let dy = f64::from(y) + 0.5 - cy;
        let coverage = (r - (dx * dx + dy * dy).sqrt() + 0.5).clamp(0.0, 1.0);
        p.0[3] = (f64::from(p.0[3]) * coverage).round() as u8;
    }
    DynamicImage::ImageRgba8(out)
}

/// The `dropshadow` operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropshadow {
    /// Shadow offset in pixels (positive: right / down).
    pub horizontal: i32,
    pub vertical: i32,
    /// Percent, 0 transparent – 100 opaque.
    pub opacity: u8,
    pub sigma: f32,
    /// Extra room around the shadow; accepted for compatibility, the blur extent comes from
    /// `sigma`.
    pub blur_radius: f32,
    pub color: [u8; 3],
}

impl Dropshadow {
    pub(super) fn from_options(o: &Opts) -> Result<Dropshadow> {
        Ok(Dropshadow {
            horizontal: o.i32_in("horizontal", 0, -100, 100)?,
            vertical: o.i32_in("vertical", 0, -100, 100)?,
            // The API schema's default (100); the prose docs say 0, which would draw nothing.
            opacity: o.percent_or("opacity", 100)?,
            sigma: o.f64_in("sigma", 0.5, 0.0, 100.0)? as f32,
            blur_radius: o.f64_in("blur_radius", 0.0, 0.0, 500.0)? as f32,
            color: o.color_or("color", [0, 0, 0])?,
        })
    }

    /// The canvas for a `w` × `h` image and its shadow: its top-left corner relative to the
    /// image (never positive) and its size. Shared with the render planner.
    pub(crate) fn canvas(&self, w: i64, h: i64) -> (i64, i64, u64, u64) {
        // A gaussian has visibly faded after three sigma: that much room keeps the shadow's
        // blurred edge from being cut off.
        let pad = (f64::from(self.sigma) * 3.0)
            .ceil()
            .max(f64::from(self.blur_radius).ceil()) as i64;
        let (dx, dy) = (i64::from(self.horizontal), i64::from(self.vertical));
        let x0 = 0.min(dx - pad);
        let y0 = 0.min(dy - pad);
        let x1 = w.max(dx + w + pad);
        let y1 = h.max(dy + h + pad);
        (x0, y0, (x1 - x0) as u64, (y1 - y0) as u64)
    }

    pub(super) fn apply(&self, img: DynamicImage, ctx: &mut OpContext) -> Result<DynamicImage> {
        let (w, h) = (i64::from(img.width()), i64::from(img.height()));
        let (dx, dy) = (i64::from(self.horizontal), i64::from(self.vertical));
        let (x0, y0, cw, ch) = self.canvas(w, h);
        check_output(&ctx.limits, "dropshadow", cw, ch)?;
        let (cw, ch) = (cw as u32, ch as u32);
        let (ix, iy) = ((-x0) as u32, (-y0) as u32);
        let (sx, sy) = ((dx - x0) as u32, (dy - y0) as u32);

        let src = img.to_rgba8();
        let [r, g, b] = self.color;
        let mut shadow = RgbaImage::from_pixel(cw, ch, Rgba([r, g, b, 0]));
        let opacity = f64::from(self.opacity.min(100)) / 100.0;
        for (x, y, p) in src.enumerate_pixels() {
            if let Some(q) = shadow.get_pixel_mut_checked(x + sx, y + sy) {
                q.0[3] = (f64::from(p.0[3]) * opacity).round() as u8;
            }
        }
        let mut canvas = filter::blur(&DynamicImage::ImageRgba8(shadow), self.sigma).into_rgba8();
        blend_over(&mut canvas, &src, ix, iy);
        ctx.offset_areas(ix, iy);
        Ok(DynamicImage::ImageRgba8(canvas))
    }
}

/// Which layer the primary (initial) image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompositionMode {
    /// Primary in front of the secondary.
    Foreground,
    /// Primary behind the secondary.
    Background,
}

/// The `composition` operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Composition {
    pub mode: CompositionMode,
    /// Size of the secondary canvas, or the box the secondary image is resized into.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub resize_mode: ResizeMode,
    pub anchor: Anchor,
    pub secondary_color: [u8; 3],
    /// Percent, 0 transparent – 100 opaque; applies to the colour canvas and the image.
    pub secondary_opacity: u8,
    pub resize_to_primary: bool,
    pub secondary_image: Option<String>,
    pub secondary_stack: Option<String>,
    /// Clockwise rotation of the secondary layer in degrees.
    pub angle: f64,
}

impl Composition {
    pub(super) fn from_options(o: &Opts) -> Result<Composition> {
        let mode = match o.str_or("mode", "foreground")? {
            "foreground" => CompositionMode::Foreground,
            "background" => CompositionMode::Background,
            _ => return Err(o.invalid("mode", "must be foreground or background")),
        };
        Ok(Composition {
            mode,
            width: o.u32_opt_in("width", 1, 10_000)?,
            height: o.u32_opt_in("height", 1, 10_000)?,
            resize_mode: ResizeMode::from_options(o, "resize_mode")?,
            anchor: Anchor::from_options(o, "anchor", "center_center")?,
            secondary_color: o.color_or("secondary_color", [0, 0, 0])?,
            secondary_opacity: o.percent_or("secondary_opacity", 100)?,
            resize_to_primary: o.bool_or("resize_to_primary", false)?,
            secondary_image: o.str_opt("secondary_image")?.map(str::to_owned),
            secondary_stack: o.str_opt("secondary_stack")?.map(str::to_owned),
            angle: o.f64_in("angle", 0.0, -360.0, 360.0)?,
        })
    }

    /// What the secondary layer is made of, as the render's `secondary` loader names it: the
    /// output of `secondary_stack` (which the service resolved into a layer id, prefixed with
    /// [`STACK_LAYER`]) on `secondary_image` or the primary image, or `secondary_image` itself.
    pub fn layer_source(&self) -> Option<String> {
        match (&self.secondary_stack, &self.secondary_image) {
            (Some(layer), _) => Some(format!("{STACK_LAYER}{layer}")),
            (None, Some(hash)) => Some(hash.clone()),
            (None, None) => None,
        }
    }

    /// The secondary layer as RGBA, sized and rotated, before the opacity is applied.
    fn secondary(&self, primary: (u32, u32), ctx: &mut OpContext) -> Result<RgbaImage> {
        let (pw, ph) = primary;
        let layer = if let Some(source) = self.layer_source() {
            let loaded = (ctx.secondary)(&source)?;
            let target = if self.resize_to_primary {
                Some((u64::from(pw), u64::from(ph)))
            } else if self.width.is_some() || self.height.is_some() {
                let r = Resize {
                    width: self.width,
                    height: self.height,
                    mode: self.resize_mode,
                    upscale: true,
                    upscale_dpr: true,
                    sharpen: false,
                };
                Some(r.target_size(loaded.width(), loaded.height(), 1.0))
            } else {
                None
            };
            match target {
                Some((w, h)) => {
                    check_output(&ctx.limits, "composition", w, h)?;
                    resize_exact(&loaded, w as u32, h as u32)?.into_rgba8()
                }
                None => loaded.into_rgba8(),
            }
        } else {
            let (w, h) = (self.width.unwrap_or(pw), self.height.unwrap_or(ph));
            check_output(&ctx.limits, "composition", u64::from(w), u64::from(h))?;
            let [r, g, b] = self.secondary_color;
            RgbaImage::from_pixel(w, h, Rgba([r, g, b, 255]))
        };
        if self.angle.rem_euclid(360.0) == 0.0 {
            return Ok(layer);
        }
        // The rotation must not move the primary's areas, so it runs on a throwaway context.
        let no_image = |_: &str| Err(RenderError::Internal("no secondary image here".into()));
        let no_font = |_: &str| Err(RenderError::Internal("no font here".into()));
        let mut scratch = OpContext {
            dpr: 1.0,
            limits: ctx.limits,
            subject_area: None,
            crop_area: None,
            multi_areas: Default::default(),
            secondary: &no_image,
            font: &no_font,
        };
        let rotated = rotate::rotate(
            DynamicImage::ImageRgba8(layer),
            self.angle,
            Rgba([0, 0, 0, 0]),
            &mut scratch,
        )?;
        Ok(rotated.into_rgba8())
    }

    pub(super) fn apply(&self, img: DynamicImage, ctx: &mut OpContext) -> Result<DynamicImage> {
        let primary_has_alpha = matches!(img, DynamicImage::ImageRgba8(_));
        let primary = img.into_rgba8();
        let (pw, ph) = primary.dimensions();
        let mut secondary = self.secondary((pw, ph), ctx)?;
        if self.secondary_opacity < 100 {
            let opacity = f64::from(self.secondary_opacity) / 100.0;
            for p in secondary.pixels_mut() {
                p.0[3] = (f64::from(p.0[3]) * opacity).round() as u8;
            }
        }
        let (sw, sh) = secondary.dimensions();
        let (cw, ch) = (pw.max(sw), ph.max(sh));
        check_output(&ctx.limits, "composition", u64::from(cw), u64::from(ch))?;

        let (ha, va) = self.anchor.position();
        let (px, py) = (offset_h(ha, cw, pw), offset_v(va, ch, ph));
        let (sx, sy) = (offset_h(ha, cw, sw), offset_v(va, ch, sh));
        let mut canvas = RgbaImage::from_pixel(cw, ch, Rgba([0, 0, 0, 0]));
        match self.mode {
            CompositionMode::Foreground => {
                blend_over(&mut canvas, &secondary, sx, sy);
                blend_over(&mut canvas, &primary, px, py);
            }
            CompositionMode::Background => {
                blend_over(&mut canvas, &primary, px, py);
                blend_over(&mut canvas, &secondary, sx, sy);
            }
        }
        ctx.offset_areas(px, py);
        if !primary_has_alpha && canvas.pixels().all(|p| p.0[3] == 255) {
            let rgb = RgbImage::from_fn(cw, ch, |x, y| {
                let p = canvas.get_pixel(x, y).0;
                Rgb([p[0], p[1], p[2]])
            });
            return Ok(DynamicImage::ImageRgb8(rgb));
        }
        Ok(DynamicImage::ImageRgba8(canvas))
    }
}

/// Draws `top` over `dst` with its top-left corner at (`x`, `y`) (straight alpha "over");
/// parts outside `dst` are ignored.
pub fn blend_over(dst: &mut RgbaImage, top: &RgbaImage, x: u32, y: u32) {
    for (tx, ty, p) in top.enumerate_pixels() {
        let (Some(dx), Some(dy)) = (x.checked_add(tx), y.checked_add(ty)) else {
            continue;
        };
        let Some(d) = dst.get_pixel_mut_checked(dx, dy) else {
            continue;
        };
        let sa = f64::from(p.0[3]) / 255.0;
        if sa >= 1.0 {
            *d = *p;
            continue;
        }
        let da = f64::from(d.0[3]) / 255.0;
        let oa = sa + da * (1.0 - sa);
        if oa <= 0.0 {
            *d = Rgba([0, 0, 0, 0]);
            continue;
        }
        let mut out = [0u8; 4];
        for (k, o) in out.iter_mut().take(3).enumerate() {
            let s = f64::from(p.0.get(k).copied().unwrap_or(0));
            let b = f64::from(d.0.get(k).copied().unwrap_or(0));
            *o = ((s * sa + b * da * (1.0 - sa)) / oa)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
        out[3] = (oa * 255.0).round().clamp(0.0, 255.0) as u8;
        *d = Rgba(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::ops::tests::{
        context, op, quadrants, rgb_at, rgba_at, solid_rgba, GREEN, RED, WHITE,
    };
    use crate::render::ops::Area;
    use serde_json::json;

    #[test]
    fn circlemask_clears_the_corners_and_keeps_the_centre() {
        let mut ctx = context(1.0);

        let out = op("circlemask", json!({})).apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(out, DynamicImage::ImageRgba8(_)));
        assert_eq!(rgba_at(&out, 0, 0)[3], 0);
        assert_eq!(rgba_at(&out, 39, 29)[3], 0);
        assert_eq!(rgba_at(&out, 20, 15)[3], 255);
        assert_eq!(rgba_at(&out, 3, 15)[3], 0);
        let edge = rgba_at(&out, 20, 0)[3];
        assert!(edge > 0, "{edge}");
    }

    #[test]
    fn dropshadow_grows_the_canvas_and_draws_the_offset_shape() {
        let mut ctx = context(1.0);
        ctx.subject_area = Some(Area::new(0.0, 0.0, 1.0, 1.0));
        let img = solid_rgba(20, 20, [255, 0, 0, 255]);

        let out = op(
            "dropshadow",
            json!({"horizontal": 10, "vertical": 5, "sigma": 0, "color": "0000FF", "opacity": 100}),
        )
        .apply(img, &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.width(), out.height()), (30, 25));
        assert_eq!(rgba_at(&out, 5, 5), [255, 0, 0, 255]);
        assert_eq!(rgba_at(&out, 25, 20), [0, 0, 255, 255]);
        assert_eq!(rgba_at(&out, 25, 2)[3], 0);
        assert_eq!(ctx.subject_area, Some(Area::new(0.0, 0.0, 1.0, 1.0)));
    }

    #[test]
    fn dropshadow_to_the_upper_left_moves_the_image_and_its_areas() {
        let mut ctx = context(1.0);
        ctx.subject_area = Some(Area::new(0.0, 0.0, 1.0, 1.0));

        let out = op(
            "dropshadow",
            json!({"horizontal": -4, "vertical": -2, "sigma": 1, "opacity": 50}),
        )
        .apply(solid_rgba(10, 10, [0, 255, 0, 255]), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        // Three sigma of room around the shadow: x from -7 to 10, y from -5 to 11.
        assert_eq!((out.width(), out.height()), (17, 16));
        assert_eq!(rgba_at(&out, 12, 10), [0, 255, 0, 255]);
        assert_eq!(ctx.subject_area, Some(Area::new(7.0, 5.0, 1.0, 1.0)));
    }

    #[test]
    fn composition_foreground_extends_the_canvas_behind_the_primary() {
        let mut ctx = context(1.0);

        let out = op("composition", json!({"mode": "foreground", "width": 60, "height": 30, "secondary_color": "FFFFFF", "anchor": "left_top"}))
            .apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(out, DynamicImage::ImageRgb8(_)));
        assert_eq!((out.width(), out.height()), (60, 30));
        assert_eq!(rgb_at(&out, 0, 0), RED);
        assert_eq!(rgb_at(&out, 50, 5), WHITE);
    }

    #[test]
    fn composition_is_never_smaller_than_the_primary() {
        let mut ctx = context(1.0);

        let out = op(
            "composition",
            json!({"mode": "foreground", "width": 10, "height": 10}),
        )
        .apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.width(), out.height()), (40, 30));
        assert_eq!(rgb_at(&out, 0, 0), RED);
    }

    #[test]
    fn composition_background_puts_the_secondary_image_on_top_at_the_anchor() {
        let watermark = |hash: &str| -> Result<DynamicImage> {
            assert_eq!(hash, "abc123");
            Ok(solid_rgba(20, 20, [0, 255, 0, 255]))
        };
        let mut ctx = context(1.0);
        ctx.secondary = &watermark;
        ctx.subject_area = Some(Area::new(1.0, 1.0, 2.0, 2.0));

        let out = op("composition", json!({"mode": "background", "secondary_image": "abc123", "width": 10, "height": 10, "anchor": "right_bottom"}))
            .apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.width(), out.height()), (40, 30));
        assert_eq!(rgb_at(&out, 35, 25), GREEN);
        assert_eq!(rgb_at(&out, 29, 25), WHITE);
        assert_eq!(rgb_at(&out, 0, 0), RED);
        assert_eq!(ctx.subject_area, Some(Area::new(1.0, 1.0, 2.0, 2.0)));
    }

    #[test]
    fn a_transparent_secondary_canvas_yields_rgba() {
        let mut ctx = context(1.0);

        let out = op(
            "composition",
            json!({"mode": "foreground", "width": 50, "height": 40, "secondary_opacity": 0}),
        )
        .apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(out, DynamicImage::ImageRgba8(_)));
        assert_eq!(rgba_at(&out, 0, 0)[3], 0);
        assert_eq!(rgba_at(&out, 5, 5), [255, 0, 0, 255]);
    }

    #[test]
    fn a_secondary_stack_layer_comes_from_the_loader_under_its_layer_id() {
        let mut ctx = context(1.0);
        let loader = |id: &str| {
            if id == "stack:logo#1" {
                Ok(DynamicImage::ImageRgba8(RgbaImage::from_pixel(
                    10,
                    10,
                    Rgba([0, 255, 0, 255]),
                )))
            } else {
                Err(RenderError::Internal(format!("unexpected layer {id}")))
            }
        };
        ctx.secondary = &loader;

        let out = op(
            "composition",
            json!({"mode": "background", "secondary_stack": "logo#1", "secondary_image": "abc"}),
        )
        .apply(quadrants(40, 30), &mut ctx)
        .unwrap_or_else(|e| panic!("{e}"));

        assert_eq!((out.width(), out.height()), (40, 30));
        assert_eq!(rgba_at(&out, 20, 15), [0, 255, 0, 255]);
    }

    #[test]
    fn composition_canvas_is_checked_against_the_limits() {
        let mut ctx = context(1.0);
        ctx.limits.max_dimension = 100;

        let out = op(
            "composition",
            json!({"mode": "foreground", "width": 5000, "height": 10}),
        )
        .apply(quadrants(40, 30), &mut ctx);

        assert!(matches!(out, Err(RenderError::Invalid(m)) if m.contains("above the limit")));
    }

    #[test]
    fn blending_half_transparent_over_opaque_mixes_colours() {
        let mut dst = RgbaImage::from_pixel(1, 1, Rgba([0, 0, 0, 255]));
        let top = RgbaImage::from_pixel(1, 1, Rgba([255, 255, 255, 128]));

        blend_over(&mut dst, &top, 0, 0);

        assert_eq!(dst.get_pixel(0, 0).0, [128, 128, 128, 255]);
    }
}
