//! The `rotate` and `autorotate` operations.
//!
//! Quarter turns are exact pixel permutations (lossless). Other angles sample the source
//! bilinearly, in premultiplied alpha, onto a canvas just large enough for the rotated
//! rectangle, filled with the background colour; pixels outside the source blend with that
//! background, which antialiases the edges. A background opacity below 100 makes the result
//! RGBA. Areas are carried along as the bounding box of their rotated corners (exact for
//! quarter turns, a superset otherwise).
//!
//! EXIF orientation is applied when decoding, so `autorotate` without a box has nothing to do;
//! with a box it turns the image a quarter when its orientation (portrait/landscape) differs
//! from the box's.

use image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};

use super::{check_output, Area, OpContext, Opts};
use crate::render::error::Result;
use crate::render::limits::Limits;

/// The `rotate` operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotate {
    /// Degrees clockwise (negative: counter-clockwise).
    pub angle: f64,
    pub background_color: [u8; 3],
    /// Percent: 0 transparent, 100 opaque.
    pub background_opacity: u8,
}

impl Rotate {
    pub(super) fn from_options(o: &Opts) -> Result<Rotate> {
        let angle = o
            .f64_opt("angle")?
            .ok_or_else(|| o.invalid("angle", "is required"))?;
        if !(-360.0..=360.0).contains(&angle) {
            return Err(o.invalid("angle", "must be between -360 and 360"));
        }
        Ok(Rotate {
            angle,
            background_color: o.color_or("background_color", [255, 255, 255])?,
            background_opacity: o.percent_or("background_opacity", 0)?,
        })
    }

    pub(super) fn apply(&self, img: DynamicImage, ctx: &mut OpContext) -> Result<DynamicImage> {
        let [r, g, b] = self.background_color;
        let alpha = percent_to_u8(self.background_opacity);
        rotate(img, self.angle, Rgba([r, g, b, alpha]), ctx)
    }
}

/// Direction of autorotate's quarter turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationDirection {
    Clockwise,
    Counterclockwise,
}

/// The `autorotate` operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Autorotate {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub direction: RotationDirection,
}

impl Autorotate {
    pub(super) fn from_options(o: &Opts) -> Result<Autorotate> {
        let direction = match o.str_or("rotation_direction", "clockwise")? {
            "clockwise" => RotationDirection::Clockwise,
            "counterclockwise" => RotationDirection::Counterclockwise,
            _ => {
                return Err(o.invalid(
                    "rotation_direction",
                    "must be clockwise or counterclockwise",
                ))
            }
        };
        Ok(Autorotate {
            width: o.u32_opt_in("width", 1, 10_000)?,
            height: o.u32_opt_in("height", 1, 10_000)?,
            direction,
        })
    }

    pub(super) fn apply(&self, img: DynamicImage, ctx: &mut OpContext) -> Result<DynamicImage> {
        let (Some(bw), Some(bh)) = (self.width, self.height) else {
            return Ok(img);
        };
        let (iw, ih) = (img.width(), img.height());
        // A square box or a square image has no orientation to match.
        if bw == bh || iw == ih || (bw > bh) == (iw > ih) {
            return Ok(img);
        }
        let angle = match self.direction {
            RotationDirection::Clockwise => 90.0,
            RotationDirection::Counterclockwise => 270.0,
        };
        rotate(img, angle, Rgba([255, 255, 255, 0]), ctx)
    }
}

fn percent_to_u8(percent: u8) -> u8 {
    ((f64::from(percent.min(100)) * 255.0 / 100.0).round()) as u8
}

/// Rotates `img` clockwise by `angle` degrees, filling uncovered corners with `background`
/// (straight alpha), and carries the areas of `ctx` along.
pub fn rotate(
    img: DynamicImage,
    angle: f64,
    background: Rgba<u8>,
    ctx: &mut OpContext,
) -> Result<DynamicImage> {
    let (iw, ih) = (img.width(), img.height());
    let a = angle.rem_euclid(360.0);
    let quarter = (a / 90.0).round();
    let out = if (a - quarter * 90.0).abs() < 1e-9 {
        let (c, s) = match quarter as i64 % 4 {
            1 => (0.0, 1.0),
            2 => (-1.0, 0.0),
            3 => (0.0, -1.0),
            _ => return Ok(img),
        };
        let out = match quarter as i64 % 4 {
            1 => img.rotate90(),
            2 => img.rotate180(),
            _ => img.rotate270(),
        };
        transform_areas(ctx, (iw, ih), (out.width(), out.height()), c, s);
        out
    } else {
        let (c, s) = (a.to_radians().cos(), a.to_radians().sin());
        let out = rotate_any(&img, c, s, background, &ctx.limits)?;
        transform_areas(ctx, (iw, ih), (out.width(), out.height()), c, s);
        out
    };
    Ok(out)
}

/// Size of the canvas holding a `w` × `h` rectangle rotated by (cos `c`, sin `s`). The small
/// tolerance keeps float noise from adding a pixel row.
pub(crate) fn rotated_size(w: u32, h: u32, c: f64, s: f64) -> (u64, u64) {
    let (w, h) = (f64::from(w), f64::from(h));
    let nw = (w * c.abs() + h * s.abs() - 1e-6).ceil().max(1.0);
    let nh = (w * s.abs() + h * c.abs() - 1e-6).ceil().max(1.0);
    (nw as u64, nh as u64)
}

/// Bilinear rotation onto an expanded canvas, premultiplied so that transparent source pixels
/// and the background mix without colour fringes.
fn rotate_any(
    img: &DynamicImage,
    c: f64,
    s: f64,
    background: Rgba<u8>,
    limits: &Limits,
) -> Result<DynamicImage> {
    let (iw, ih) = (img.width(), img.height());
    let (nw, nh) = rotated_size(iw, ih, c, s);
    check_output(limits, "rotate", nw, nh)?;
    let (nw, nh) = (nw as u32, nh as u32);
    let keep_alpha = matches!(img, DynamicImage::ImageRgba8(_)) || background.0[3] < 255;
    let src = img.to_rgba8();

    let premul = |p: [u8; 4]| {
        let a = f64::from(p[3]) / 255.0;
        [
            f64::from(p[0]) * a,
            f64::from(p[1]) * a,
            f64::from(p[2]) * a,
            f64::from(p[3]),
        ]
    };
    let bg = premul(background.0);
    let sample = |x: i64, y: i64| -> [f64; 4] {
        if x < 0 || y < 0 || x >= i64::from(iw) || y >= i64::from(ih) {
            return bg;
        }
        src.get_pixel_checked(x as u32, y as u32)
            .map_or(bg, |p| premul(p.0))
    };
    let (half_w, half_h) = (f64::from(iw) / 2.0, f64::from(ih) / 2.0);
    let (new_half_w, new_half_h) = (f64::from(nw) / 2.0, f64::from(nh) / 2.0);

    // A cancelled render skips the remaining pixels; the pipeline drops the result.
    let stopped = std::cell::Cell::new(false);
    let out = RgbaImage::from_fn(nw, nh, |i, j| {
        if i == 0 && j % 32 == 0 && crate::render::cancel::stop_requested() {
            stopped.set(true);
        }
        if stopped.get() {
            return Rgba([0, 0, 0, 0]);
        }
        let px = f64::from(i) + 0.5 - new_half_w;
        let py = f64::from(j) + 0.5 - new_half_h;
        // Inverse of the clockwise rotation (y axis points down).
        let ux = px * c + py * s + half_w - 0.5;
        let uy = -px * s + py * c + half_h - 0.5;
        let (x0, y0) = (ux.floor(), uy.floor());
        let (fx, fy) = (ux - x0, uy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let (p00, p10, p01, p11) = (
            sample(x0, y0),
            sample(x0 + 1, y0),
            sample(x0, y0 + 1),
            sample(x0 + 1, y0 + 1),
        );
        let mut acc = [0.0; 4];
        for (k, v) in acc.iter_mut().enumerate() {
            let at = |p: &[f64; 4]| p.get(k).copied().unwrap_or(0.0);
            let top = at(&p00) * (1.0 - fx) + at(&p10) * fx;
            let bottom = at(&p01) * (1.0 - fx) + at(&p11) * fx;
            *v = top * (1.0 - fy) + bottom * fy;
        }
        let [r, g, b, a] = acc;
        if a <= 0.0 {
            return Rgba([0, 0, 0, 0]);
        }
        let un = |v: f64| (v * 255.0 / a).round().clamp(0.0, 255.0) as u8;
        Rgba([un(r), un(g), un(b), a.round().clamp(0.0, 255.0) as u8])
    });
    if keep_alpha {
        return Ok(DynamicImage::ImageRgba8(out));
    }
    let rgb = RgbImage::from_fn(nw, nh, |x, y| {
        let p = out.get_pixel(x, y).0;
        Rgb([p[0], p[1], p[2]])
    });
    Ok(DynamicImage::ImageRgb8(rgb))
}

/// Moves every area to the rotated image: the bounding box of its rotated corners, clipped.
fn transform_areas(
    ctx: &mut OpContext,
    (iw, ih): (u32, u32),
    (nw, nh): (u32, u32),
    c: f64,
    s: f64,
) {
    let (half_w, half_h) = (f64::from(iw) / 2.0, f64::from(ih) / 2.0);
    let (new_half_w, new_half_h) = (f64::from(nw) / 2.0, f64::from(nh) / 2.0);
    let forward = move |x: f64, y: f64| {
        let (dx, dy) = (x - half_w, y - half_h);
        (dx * c - dy * s + new_half_w, dx * s + dy * c + new_half_h)
    };
    ctx.map_areas(|a| {
        let corners = [
            forward(a.x, a.y),
            forward(a.x + a.width, a.y),
            forward(a.x, a.y + a.height),
            forward(a.x + a.width, a.y + a.height),
        ];
        let min_x = corners.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let max_x = corners
            .iter()
            .map(|p| p.0)
            .fold(f64::NEG_INFINITY, f64::max);
        let min_y = corners.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let max_y = corners
            .iter()
            .map(|p| p.1)
            .fold(f64::NEG_INFINITY, f64::max);
        Area::new(min_x, min_y, max_x - min_x, max_y - min_y).translated_clipped(
            0.0,
            0.0,
            f64::from(nw),
            f64::from(nh),
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::ops::tests::{
        context, op, quadrants, rgb_at, rgba_at, BLUE, GREEN, RED, WHITE,
    };
    use serde_json::json;

    #[test]
    fn a_quarter_turn_clockwise_is_exact() {
        let mut ctx = context(1.0);
        ctx.subject_area = Some(Area::new(0.0, 0.0, 10.0, 5.0));

        let out = op("rotate", json!({"angle": 90})).apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.width(), out.height()), (30, 40));
        assert_eq!(rgb_at(&out, 29, 0), RED);
        assert_eq!(rgb_at(&out, 0, 0), BLUE);
        assert_eq!(rgb_at(&out, 29, 39), GREEN);
        assert!(matches!(out, DynamicImage::ImageRgb8(_)));
        assert_eq!(ctx.subject_area, Some(Area::new(25.0, 0.0, 5.0, 10.0)));
    }

    #[test]
    fn negative_angles_rotate_counter_clockwise() {
        let mut ctx = context(1.0);

        let out = op("rotate", json!({"angle": -90})).apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rgb_at(&out, 0, 39), RED);
        assert_eq!(rgb_at(&out, 29, 39), BLUE);
    }

    #[test]
    fn a_half_turn_swaps_opposite_corners() {
        let mut ctx = context(1.0);

        let out = op("rotate", json!({"angle": 180})).apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.width(), out.height()), (40, 30));
        assert_eq!(rgb_at(&out, 0, 0), WHITE);
        assert_eq!(rgb_at(&out, 39, 29), RED);
    }

    #[test]
    fn a_free_angle_expands_the_canvas_with_a_transparent_background() {
        let mut ctx = context(1.0);

        let out = op("rotate", json!({"angle": 45})).apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.width(), out.height()), (50, 50));
        assert!(matches!(out, DynamicImage::ImageRgba8(_)));
        assert_eq!(rgba_at(&out, 0, 0)[3], 0);
        assert_eq!(rgba_at(&out, 25, 25)[3], 255);
    }

    #[test]
    fn an_opaque_background_keeps_rgb() {
        let mut ctx = context(1.0);

        let out = op(
            "rotate",
            json!({"angle": 30, "background_color": "00FF00", "background_opacity": 100}),
        )
        .apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(out, DynamicImage::ImageRgb8(_)));
        assert_eq!(rgb_at(&out, 0, 0), [0, 255, 0]);
    }

    #[test]
    fn a_free_angle_rotation_is_checked_against_the_limits() {
        let mut ctx = context(1.0);
        ctx.limits = Limits {
            max_dimension: 45,
            max_pixels: 10_000,
            ..Limits::default()
        };

        let out = op("rotate", json!({"angle": 45})).apply(quadrants(40, 30), &mut ctx);

        assert!(out.is_err());
    }

    #[test]
    fn autorotate_turns_a_landscape_image_for_a_portrait_box() {
        let mut ctx = context(1.0);

        let cw =
            op("autorotate", json!({"width": 10, "height": 20})).apply(quadrants(40, 30), &mut ctx);
        let ccw = op(
            "autorotate",
            json!({"width": 10, "height": 20, "rotation_direction": "counterclockwise"}),
        )
        .apply(quadrants(40, 30), &mut ctx);

        let (cw, ccw) = (
            cw.unwrap_or_else(|e| panic!("{e}")),
            ccw.unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!((cw.width(), cw.height()), (30, 40));
        assert_eq!(rgb_at(&cw, 29, 0), RED);
        assert_eq!(rgb_at(&ccw, 0, 39), RED);
    }

    #[test]
    fn autorotate_leaves_matching_or_boxless_images_alone() {
        let mut ctx = context(1.0);

        let same =
            op("autorotate", json!({"width": 20, "height": 10})).apply(quadrants(40, 30), &mut ctx);
        let boxless = op("autorotate", json!({})).apply(quadrants(40, 30), &mut ctx);

        assert!(matches!(same, Ok(ref i) if i.width() == 40));
        assert!(matches!(boxless, Ok(ref i) if i.width() == 40));
    }
}
