//! The `crop` operation: choosing the region (size by mode, position by anchor, focus areas,
//! smart detail search) and cutting it out. Anchors are also used by `composition`.
//!
//! How the region is chosen:
//! - A *crop area* is cropped exactly (rokka: "an image will always be cropped exactly at the
//!   defined area"). A named area selected with the `area` option counts as a crop area in every
//!   mode except `area`; the image's own crop area is used when no subject area exists and the
//!   anchor is `auto`/`subjectarea` or the mode is `box`/`area` (an explicit position or
//!   `smart` wins over it). Once the image's crop area was used it is consumed, so a later
//!   `auto` crop in the same stack works on the new image instead of repeating a no-op.
//! - `absolute` takes width × height, `ratio` the largest region of aspect width:height;
//!   both are scaled by `scale` % and positioned by the anchor. `auto` and `subjectarea`
//!   centre on the subject area (moved by `movearea_x/y` % of its size), else use `fallback`;
//!   `face` (no face detection here) uses `fallback`; `smart` searches the most detailed window.
//! - `box` crops to the focus area (named, subject or crop area); without one it crops at most
//!   width × height at the anchor.
//! - `area` takes the smallest region of aspect width:height containing the focus area, scaled
//!   by `scale` %, centred on it; without one it behaves like `ratio`.
//!
//! A region larger than the image is clipped to the image.

use image::{DynamicImage, GrayImage};

use super::{check_output, Area, OpContext, Opts};
use crate::render::error::Result;

/// Horizontal anchor: a side, the centre, or the left edge of the crop in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HAnchor {
    Left,
    Center,
    Right,
    Px(u32),
}

/// Vertical anchor: a side, the centre, or the top edge of the crop in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VAnchor {
    Top,
    Center,
    Bottom,
    Px(u32),
}

/// Where a crop (or a composition layer) is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    At(HAnchor, VAnchor),
    Smart,
    SubjectArea,
    Face,
    Auto,
}

impl Anchor {
    /// Parses `{X}_{Y}` / `{X}-{Y}` (X ∈ left, center, right, pixels; Y ∈ top, center, bottom,
    /// pixels; `top_left` order is accepted too) or `smart`, `subjectarea`, `face`, `auto`.
    pub fn parse(s: &str) -> Option<Anchor> {
        match s {
            "smart" => return Some(Anchor::Smart),
            "subjectarea" => return Some(Anchor::SubjectArea),
            "face" => return Some(Anchor::Face),
            "auto" => return Some(Anchor::Auto),
            _ => {}
        }
        let (a, b) = s.split_once(['_', '-'])?;
        match (parse_h(a), parse_v(b)) {
            (Some(h), Some(v)) => Some(Anchor::At(h, v)),
            _ => Some(Anchor::At(parse_h(b)?, parse_v(a)?)),
        }
    }

    pub(super) fn from_options(o: &Opts, key: &str, default: &str) -> Result<Anchor> {
        let text = o.str_or(key, default)?;
        Anchor::parse(text).ok_or_else(|| {
            o.invalid(key, "must be {X}_{Y} (left/center/right/px, top/center/bottom/px), smart, subjectarea, face or auto")
        })
    }

    /// The anchor as a plain position; the content-dependent anchors become centre.
    pub fn position(&self) -> (HAnchor, VAnchor) {
        match self {
            Anchor::At(h, v) => (*h, *v),
            _ => (HAnchor::Center, VAnchor::Center),
        }
    }
}

fn parse_h(s: &str) -> Option<HAnchor> {
    match s {
        "left" => Some(HAnchor::Left),
        "center" => Some(HAnchor::Center),
        "right" => Some(HAnchor::Right),
        px => px.parse().ok().map(HAnchor::Px),
    }
}

fn parse_v(s: &str) -> Option<VAnchor> {
    match s {
        "top" => Some(VAnchor::Top),
        "center" => Some(VAnchor::Center),
        "bottom" => Some(VAnchor::Bottom),
        px => px.parse().ok().map(VAnchor::Px),
    }
}

/// Offset of a span of `inner` pixels inside `outer` pixels for a horizontal anchor.
pub fn offset_h(anchor: HAnchor, outer: u32, inner: u32) -> u32 {
    let free = outer.saturating_sub(inner);
    match anchor {
        HAnchor::Left => 0,
        HAnchor::Center => free / 2,
        HAnchor::Right => free,
        HAnchor::Px(p) => p.min(free),
    }
}

/// Offset of a span of `inner` pixels inside `outer` pixels for a vertical anchor.
pub fn offset_v(anchor: VAnchor, outer: u32, inner: u32) -> u32 {
    let free = outer.saturating_sub(inner);
    match anchor {
        VAnchor::Top => 0,
        VAnchor::Center => free / 2,
        VAnchor::Bottom => free,
        VAnchor::Px(p) => p.min(free),
    }
}

/// How width and height are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropMode {
    Absolute,
    Ratio,
    Box,
    Area,
}

/// The `crop` operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Crop {
    pub width: u32,
    pub height: u32,
    pub mode: CropMode,
    pub anchor: Anchor,
    pub fallback: Anchor,
    /// Percent (0–100) of the computed crop size.
    pub scale: f64,
    /// Shift of the subject-area centre, in percent of the area's width / height.
    pub movearea_x: f64,
    pub movearea_y: f64,
    /// Name of an area of `multi_areas`.
    pub area: Option<String>,
}

/// A pixel region inside the current image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Crop {
    pub(super) fn from_options(o: &Opts) -> Result<Crop> {
        let width = o
            .u32_opt_in("width", 1, 99_999)?
            .ok_or_else(|| o.invalid("width", "is required"))?;
        let height = o
            .u32_opt_in("height", 1, 99_999)?
            .ok_or_else(|| o.invalid("height", "is required"))?;
        let mode = match o.str_or("mode", "absolute")? {
            "absolute" => CropMode::Absolute,
            "ratio" => CropMode::Ratio,
            "box" => CropMode::Box,
            "area" => CropMode::Area,
            _ => return Err(o.invalid("mode", "must be one of absolute, ratio, box, area")),
        };
        let area = o.str_opt("area")?;
        if let Some(name) = area {
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(o.invalid("area", "may only contain letters, digits and underscores"));
            }
        }
        Ok(Crop {
            width,
            height,
            mode,
            anchor: Anchor::from_options(o, "anchor", "auto")?,
            fallback: Anchor::from_options(o, "fallback", "center_center")?,
            scale: o.f64_in("scale", 100.0, 0.0, 100.0)?,
            movearea_x: o.f64_in("movearea_x", 0.0, -100.0, 100.0)?,
            movearea_y: o.f64_in("movearea_y", 0.0, -100.0, 100.0)?,
            area: area.map(str::to_owned),
        })
    }

    pub(super) fn apply(&self, img: DynamicImage, ctx: &mut OpContext) -> Result<DynamicImage> {
        let (rect, used_crop_area) = self.region(&img, ctx);
        check_output(
            &ctx.limits,
            "crop",
            u64::from(rect.width),
            u64::from(rect.height),
        )?;
        let out = if (rect.width, rect.height) == (img.width(), img.height()) {
            img
        } else {
            img.crop_imm(rect.x, rect.y, rect.width, rect.height)
        };
        ctx.crop_areas(rect.x, rect.y, rect.width, rect.height);
        if used_crop_area {
            ctx.crop_area = None;
        }
        Ok(out)
    }

    /// The region to keep, and whether it came from the image's own crop area.
    pub fn region(&self, img: &DynamicImage, ctx: &OpContext) -> (Rect, bool) {
        let (iw, ih) = (img.width(), img.height());
        let clip = |a: &Area| a.translated_clipped(0.0, 0.0, f64::from(iw), f64::from(ih));
        let area_based = matches!(self.anchor, Anchor::Auto | Anchor::SubjectArea)
            || matches!(self.mode, CropMode::Box | CropMode::Area);
        let named = self
            .area
            .as_deref()
            .and_then(|n| ctx.multi_areas.get(n))
            .and_then(clip);
        let subject = ctx.subject_area.as_ref().and_then(clip);
        let own_crop_area = match subject {
            None if area_based => ctx.crop_area.as_ref().and_then(clip),
            _ => None,
        };

        // Exact crops: a named area or the image's crop area (not in `area` mode, which fits
        // the area into a ratio instead).
        if self.mode != CropMode::Area {
            if let Some(a) = named {
                return (exact_rect(&a, iw, ih), false);
            }
            if let Some(a) = own_crop_area {
                return (exact_rect(&a, iw, ih), true);
            }
        }

        match self.mode {
            CropMode::Box => match subject {
                Some(a) => (exact_rect(&a, iw, ih), false),
                None => {
                    let size = (self.width.min(iw), self.height.min(ih));
                    (self.place(img, size, None), false)
                }
            },
            CropMode::Area => {
                let focus = named.map(|a| (a, false)).or(subject.map(|a| (a, false)));
                let focus = focus.or(own_crop_area.map(|a| (a, true)));
                match focus {
                    Some((a, from_crop_area)) => {
                        let size = self.fit_ratio_around(&a, iw, ih);
                        (self.centre_on(&a, size, iw, ih), from_crop_area)
                    }
                    None => (self.place(img, self.ratio_size(iw, ih), subject), false),
                }
            }
            CropMode::Absolute => {
                let size = self.scaled((f64::from(self.width), f64::from(self.height)), iw, ih);
                (self.place(img, size, subject), false)
            }
            CropMode::Ratio => (self.place(img, self.ratio_size(iw, ih), subject), false),
        }
    }

    /// The largest region of aspect width:height inside the image, scaled by `scale`.
    fn ratio_size(&self, iw: u32, ih: u32) -> (u32, u32) {
        let ratio = f64::from(self.width) / f64::from(self.height);
        let (iwf, ihf) = (f64::from(iw), f64::from(ih));
        let size = if iwf / ihf >= ratio {
            (ihf * ratio, ihf)
        } else {
            (iwf, iwf / ratio)
        };
        self.scaled(size, iw, ih)
    }

    /// The smallest region of aspect width:height containing `area`, scaled by `scale`,
    /// shrunk (keeping the aspect) when it would not fit the image.
    fn fit_ratio_around(&self, area: &Area, iw: u32, ih: u32) -> (u32, u32) {
        let ratio = f64::from(self.width) / f64::from(self.height);
        let h = area.height.max(area.width / ratio);
        let (mut w, mut h) = (h * ratio, h);
        let k = (f64::from(iw) / w).min(f64::from(ih) / h).min(1.0);
        w *= k;
        h *= k;
        self.scaled((w, h), iw, ih)
    }

    /// Applies `scale` % and clips to the image; never below one pixel.
    fn scaled(&self, (w, h): (f64, f64), iw: u32, ih: u32) -> (u32, u32) {
        let s = self.scale / 100.0;
        let px = |v: f64, max: u32| ((v * s).round().max(1.0).min(f64::from(max))) as u32;
        (px(w, iw), px(h, ih))
    }

    /// Positions a region of `size` by the anchor (with `fallback` where needed).
    fn place(&self, img: &DynamicImage, size: (u32, u32), subject: Option<Area>) -> Rect {
        let (iw, ih) = (img.width(), img.height());
        let anchor = match (self.anchor, subject) {
            (Anchor::Auto | Anchor::SubjectArea, Some(a)) => {
                return self.centre_on(&a, size, iw, ih)
            }
            (Anchor::Auto | Anchor::SubjectArea | Anchor::Face, _) => match self.fallback {
                Anchor::Smart => Anchor::Smart,
                other => Anchor::At(other.position().0, other.position().1),
            },
            (other, _) => other,
        };
        let (x, y) = match anchor {
            Anchor::Smart => smart_origin(img, size.0, size.1),
            other => {
                let (h, v) = other.position();
                (offset_h(h, iw, size.0), offset_v(v, ih, size.1))
            }
        };
        Rect {
            x,
            y,
            width: size.0,
            height: size.1,
        }
    }

    /// Centres a region of `size` on `area` (moved by `movearea_x/y`), kept inside the image.
    fn centre_on(&self, area: &Area, (w, h): (u32, u32), iw: u32, ih: u32) -> Rect {
        let (cx, cy) = area.center();
        let cx = cx + self.movearea_x / 100.0 * area.width;
        let cy = cy + self.movearea_y / 100.0 * area.height;
        let start = |c: f64, len: u32, max: u32| {
            let free = f64::from(max.saturating_sub(len));
            (c - f64::from(len) / 2.0).round().clamp(0.0, free) as u32
        };
        Rect {
            x: start(cx, w, iw),
            y: start(cy, h, ih),
            width: w,
            height: h,
        }
    }
}

/// The whole pixels covered by `area` (already clipped to the image).
fn exact_rect(area: &Area, iw: u32, ih: u32) -> Rect {
    let x0 = area.x.floor().clamp(0.0, f64::from(iw.saturating_sub(1))) as u32;
    let y0 = area.y.floor().clamp(0.0, f64::from(ih.saturating_sub(1))) as u32;
    let x1 = ((area.x + area.width).ceil().min(f64::from(iw)) as u32).max(x0 + 1);
    let y1 = ((area.y + area.height).ceil().min(f64::from(ih)) as u32).max(y0 + 1);
    Rect {
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
    }
}

/// Long side of the copy the smart search works on: enough to find detail, cheap to scan.
const SMART_SIZE: f64 = 128.0;

/// Top-left corner of the `width` × `height` window with the most edge energy (sum of
/// absolute luma differences to the right and lower neighbour), searched on a downscaled copy
/// like libvips' `interesting=entropy`. Ties go to the window closest to the centre, then to
/// the first in reading order, so the result is deterministic.
pub fn smart_origin(img: &DynamicImage, width: u32, height: u32) -> (u32, u32) {
    let (iw, ih) = (img.width(), img.height());
    if width >= iw && height >= ih {
        return (0, 0);
    }
    let f = (SMART_SIZE / f64::from(iw.max(ih))).min(1.0);
    let tw = ((f64::from(iw) * f).round() as u32).clamp(1, iw);
    let th = ((f64::from(ih) * f).round() as u32).clamp(1, ih);
    let luma: GrayImage = if (tw, th) == (iw, ih) {
        img.to_luma8()
    } else {
        img.thumbnail_exact(tw, th).to_luma8()
    };
    let (tw, th) = (luma.width() as usize, luma.height() as usize);
    let px = |x: usize, y: usize| i64::from(luma.as_raw().get(y * tw + x).copied().unwrap_or(0));

    // Summed-area table of the energy, (tw + 1) × (th + 1), first row and column zero.
    let stride = tw + 1;
    let mut sat = vec![0u64; stride * (th + 1)];
    for y in 0..th {
        let mut row = 0u64;
        for x in 0..tw {
            let here = px(x, y);
            let right = if x + 1 < tw { px(x + 1, y) } else { here };
            let below = if y + 1 < th { px(x, y + 1) } else { here };
            row += ((right - here).abs() + (below - here).abs()) as u64;
            let above = sat.get(y * stride + x + 1).copied().unwrap_or(0);
            if let Some(cell) = sat.get_mut((y + 1) * stride + x + 1) {
                *cell = above + row;
            }
        }
    }
    let at = |x: usize, y: usize| sat.get(y * stride + x).copied().unwrap_or(0);

    let ww = ((f64::from(width) * tw as f64 / f64::from(iw)).round() as usize).clamp(1, tw);
    let wh = ((f64::from(height) * th as f64 / f64::from(ih)).round() as usize).clamp(1, th);
    let (mid_x, mid_y) = ((tw - ww) as f64 / 2.0, (th - wh) as f64 / 2.0);
    let mut best = (0usize, 0usize);
    let mut best_key = (0u64, f64::NEG_INFINITY);
    for oy in 0..=th - wh {
        for ox in 0..=tw - ww {
            let sum = (at(ox + ww, oy + wh) + at(ox, oy))
                .saturating_sub(at(ox + ww, oy) + at(ox, oy + wh));
            let closeness = -((ox as f64 - mid_x).abs() + (oy as f64 - mid_y).abs());
            if sum > best_key.0 || (sum == best_key.0 && closeness > best_key.1) {
                best_key = (sum, closeness);
                best = (ox, oy);
            }
        }
    }
    let back = |o: usize, small: usize, full: u32, len: u32| {
        let v = (o as f64 * f64::from(full) / small as f64).round() as u32;
        v.min(full.saturating_sub(len))
    };
    (back(best.0, tw, iw, width), back(best.1, th, ih, height))
}

/// Shannon entropy (bits) of the luma histogram, computed on a copy of at most 256 px.
pub fn entropy(img: &DynamicImage) -> f64 {
    let luma = if img.width().max(img.height()) > 256 {
        img.thumbnail(256, 256).to_luma8()
    } else {
        img.to_luma8()
    };
    let mut histogram = [0u64; 256];
    for p in luma.as_raw() {
        if let Some(bin) = histogram.get_mut(usize::from(*p)) {
            *bin += 1;
        }
    }
    let total = luma.as_raw().len() as f64;
    if total == 0.0 {
        return 0.0;
    }
    histogram
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| {
            let p = n as f64 / total;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::ops::tests::{context, op, quadrants, rgb_at, BLUE, GREEN, RED, WHITE};
    use crate::render::ops::Operation;
    use image::{Rgb, RgbImage};
    use serde_json::{json, Value};

    fn crop(options: Value) -> Crop {
        match op("crop", options) {
            Operation::Crop(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn region(options: Value, ctx: &OpContext) -> Rect {
        crop(options).region(&quadrants(40, 30), ctx).0
    }

    fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    #[test]
    fn anchors_parse_in_both_separators_and_orders() {
        assert_eq!(
            Anchor::parse("left_top"),
            Some(Anchor::At(HAnchor::Left, VAnchor::Top))
        );
        assert_eq!(
            Anchor::parse("right-bottom"),
            Some(Anchor::At(HAnchor::Right, VAnchor::Bottom))
        );
        assert_eq!(
            Anchor::parse("10_20"),
            Some(Anchor::At(HAnchor::Px(10), VAnchor::Px(20)))
        );
        assert_eq!(
            Anchor::parse("top_left"),
            Some(Anchor::At(HAnchor::Left, VAnchor::Top))
        );
        assert_eq!(Anchor::parse("smart"), Some(Anchor::Smart));
        assert_eq!(Anchor::parse("middle"), None);
        assert_eq!(Anchor::parse("left_left"), None);
    }

    #[test]
    fn absolute_crop_at_side_anchors_picks_the_corner() {
        let ctx = context(1.0);
        let mut ctx2 = context(1.0);

        let top_left = op(
            "crop",
            json!({"width": 10, "height": 10, "anchor": "left_top"}),
        )
        .apply(quadrants(40, 30), &mut ctx2);
        let bottom_right = region(
            json!({"width": 10, "height": 10, "anchor": "right_bottom"}),
            &ctx,
        );

        let top_left = top_left.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((top_left.width(), top_left.height()), (10, 10));
        assert_eq!(rgb_at(&top_left, 9, 9), RED);
        assert_eq!(bottom_right, rect(30, 20, 10, 10));
    }

    #[test]
    fn pixel_anchors_set_the_top_left_corner_and_are_clamped() {
        let ctx = context(1.0);

        assert_eq!(
            region(json!({"width": 10, "height": 10, "anchor": "5-3"}), &ctx),
            rect(5, 3, 10, 10)
        );
        assert_eq!(
            region(
                json!({"width": 10, "height": 10, "anchor": "100_100"}),
                &ctx
            ),
            rect(30, 20, 10, 10)
        );
    }

    #[test]
    fn the_default_anchor_centres_without_a_subject_area() {
        let ctx = context(1.0);

        assert_eq!(
            region(json!({"width": 10, "height": 10}), &ctx),
            rect(15, 10, 10, 10)
        );
    }

    #[test]
    fn a_crop_larger_than_the_image_is_clipped() {
        let ctx = context(1.0);

        assert_eq!(
            region(json!({"width": 100, "height": 10}), &ctx),
            rect(0, 10, 40, 10)
        );
    }

    #[test]
    fn crop_with_ratio_mode_keeps_the_aspect() {
        let ctx = context(1.0);

        assert_eq!(
            region(json!({"width": 1, "height": 1, "mode": "ratio"}), &ctx),
            rect(5, 0, 30, 30)
        );
        assert_eq!(
            region(json!({"width": 4, "height": 1, "mode": "ratio"}), &ctx),
            rect(0, 10, 40, 10)
        );
    }

    #[test]
    fn scale_shrinks_the_ratio_crop() {
        let ctx = context(1.0);

        let r = region(
            json!({"width": 1, "height": 1, "mode": "ratio", "scale": 50}),
            &ctx,
        );

        assert_eq!(r, rect(12, 7, 15, 15));
    }

    #[test]
    fn box_mode_without_an_area_crops_at_most_the_box() {
        let ctx = context(1.0);

        let r = region(
            json!({"width": 50, "height": 20, "mode": "box", "anchor": "left_top"}),
            &ctx,
        );

        assert_eq!(r, rect(0, 0, 40, 20));
    }

    #[test]
    fn auto_anchor_centres_on_the_subject_area() {
        let mut ctx = context(1.0);
        ctx.subject_area = Some(Area::new(30.0, 22.0, 4.0, 4.0));

        let out = op("crop", json!({"width": 10, "height": 10})).apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rgb_at(&out, 9, 9), WHITE);
        assert_eq!(ctx.subject_area, Some(Area::new(3.0, 3.0, 4.0, 4.0)));
    }

    #[test]
    fn movearea_shifts_the_subject_centre() {
        let mut ctx = context(1.0);
        ctx.subject_area = Some(Area::new(10.0, 10.0, 10.0, 10.0));

        let r = region(json!({"width": 10, "height": 10, "movearea_x": 50}), &ctx);

        assert_eq!(r, rect(15, 10, 10, 10));
    }

    #[test]
    fn subjectarea_anchor_falls_back_without_a_subject_area() {
        let ctx = context(1.0);

        let r = region(
            json!({"width": 10, "height": 10, "anchor": "subjectarea", "fallback": "left_bottom"}),
            &ctx,
        );

        assert_eq!(r, rect(0, 20, 10, 10));
    }

    #[test]
    fn face_anchor_uses_the_fallback() {
        let mut ctx = context(1.0);
        ctx.subject_area = Some(Area::new(30.0, 22.0, 4.0, 4.0));

        let r = region(
            json!({"width": 10, "height": 10, "anchor": "face", "fallback": "right_top"}),
            &ctx,
        );

        assert_eq!(r, rect(30, 0, 10, 10));
    }

    #[test]
    fn the_crop_area_is_cropped_exactly_and_consumed() {
        let mut ctx = context(1.0);
        ctx.crop_area = Some(Area::new(22.0, 2.0, 10.0, 8.0));

        let out = op("crop", json!({"width": 5, "height": 5})).apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.width(), out.height()), (10, 8));
        assert_eq!(rgb_at(&out, 0, 0), GREEN);
        assert_eq!(ctx.crop_area, None);
    }

    #[test]
    fn a_subject_area_wins_over_the_crop_area() {
        let mut ctx = context(1.0);
        ctx.crop_area = Some(Area::new(22.0, 2.0, 10.0, 8.0));
        ctx.subject_area = Some(Area::new(0.0, 20.0, 4.0, 4.0));

        let r = region(json!({"width": 10, "height": 10}), &ctx);

        assert_eq!(r, rect(0, 17, 10, 10));
    }

    #[test]
    fn an_explicit_anchor_ignores_the_crop_area() {
        let mut ctx = context(1.0);
        ctx.crop_area = Some(Area::new(22.0, 2.0, 10.0, 8.0));

        let r = region(json!({"width": 5, "height": 5, "anchor": "left_top"}), &ctx);

        assert_eq!(r, rect(0, 0, 5, 5));
    }

    #[test]
    fn a_named_area_is_selected_by_the_area_option() {
        let mut ctx = context(1.0);
        ctx.multi_areas
            .insert("portrait".into(), Area::new(2.0, 16.0, 6.0, 12.0));

        let out = op(
            "crop",
            json!({"width": 1, "height": 2, "mode": "ratio", "area": "portrait"}),
        )
        .apply(quadrants(40, 30), &mut ctx);

        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.width(), out.height()), (6, 12));
        assert_eq!(rgb_at(&out, 3, 6), BLUE);
    }

    #[test]
    fn an_unknown_area_name_falls_back_to_the_standard_crop() {
        let ctx = context(1.0);

        let r = region(
            json!({"width": 1, "height": 1, "mode": "ratio", "area": "missing"}),
            &ctx,
        );

        assert_eq!(r, rect(5, 0, 30, 30));
    }

    #[test]
    fn box_mode_crops_to_the_subject_area() {
        let mut ctx = context(1.0);
        ctx.subject_area = Some(Area::new(4.0, 5.0, 12.0, 7.0));

        let r = region(json!({"width": 1, "height": 1, "mode": "box"}), &ctx);

        assert_eq!(r, rect(4, 5, 12, 7));
    }

    #[test]
    fn area_mode_fits_the_subject_area_into_the_ratio() {
        let mut ctx = context(1.0);
        ctx.subject_area = Some(Area::new(18.0, 13.0, 4.0, 4.0));

        let r = region(json!({"width": 2, "height": 1, "mode": "area"}), &ctx);

        assert_eq!(r, rect(16, 13, 8, 4));
    }

    #[test]
    fn smart_crop_picks_the_detailed_corner() {
        let img = RgbImage::from_fn(60, 40, |x, y| {
            if x >= 45 && y >= 25 && (x + y) % 2 == 0 {
                Rgb([0, 0, 0])
            } else if x >= 45 && y >= 25 {
                Rgb([255, 255, 255])
            } else {
                Rgb([128, 128, 128])
            }
        });
        let c = crop(json!({"width": 20, "height": 20, "anchor": "smart"}));

        let (r, _) = c.region(&DynamicImage::ImageRgb8(img), &context(1.0));

        assert!(r.x >= 40 && r.y >= 20, "{r:?}");
    }

    #[test]
    fn smart_crop_of_a_flat_image_stays_central() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(60, 40, Rgb([9, 9, 9])));

        assert_eq!(smart_origin(&img, 20, 20), (20, 10));
    }

    #[test]
    fn crop_translates_and_clips_the_areas() {
        let mut ctx = context(1.0);
        ctx.subject_area = Some(Area::new(0.0, 0.0, 20.0, 20.0));
        ctx.multi_areas
            .insert("gone".into(), Area::new(0.0, 0.0, 5.0, 5.0));

        let out = op(
            "crop",
            json!({"width": 20, "height": 20, "anchor": "right_bottom"}),
        )
        .apply(quadrants(40, 30), &mut ctx);

        assert!(out.is_ok());
        assert_eq!(ctx.subject_area, None);
        assert!(ctx.multi_areas.is_empty());
    }

    #[test]
    fn crop_requires_width_and_height() {
        let parsed = Operation::from_resolved(&crate::model::resolved::ResolvedOp {
            name: "crop".into(),
            options: serde_json::Map::new(),
        });

        assert!(
            matches!(parsed, Err(crate::render::error::RenderError::Invalid(m)) if m.contains("crop.width"))
        );
    }

    #[test]
    fn entropy_of_a_flat_image_is_zero_and_of_noise_high() {
        let flat = DynamicImage::ImageRgb8(RgbImage::from_pixel(16, 16, Rgb([7, 7, 7])));
        let noise = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| {
            let v = ((x * 7919 + y * 104_729) % 256) as u8;
            Rgb([v, v, v])
        }));

        assert_eq!(entropy(&flat), 0.0);
        assert!(entropy(&noise) > 5.0);
    }
}
