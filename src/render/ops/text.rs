//! The `text` operation: draws UTF-8 text in an uploaded TrueType/OpenType font onto the image.
//!
//! Layout is done here, rasterisation by ab_glyph: lines are split at `\n`, wrapped at spaces
//! (or inside a word that alone is too wide) when a `width` box is given, pairs of glyphs are
//! kerned from the font's `kern` table, and each line is aligned left, centred or right within
//! the block. The block is drawn into a coverage layer of its own, coloured, made translucent
//! by `opacity`, rotated clockwise by `angle` around its centre, and placed by `anchor` like a
//! composition layer; the image keeps its size, and text beyond its edges is cut off. A
//! `height` box cuts off lines below it, unless `resize_to_box` chooses the largest font size
//! whose text fits the box. Sizes, the box and the spacing are in CSS pixels: they follow the
//! render's `dpr`.

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont};
use image::{DynamicImage, Rgba, RgbaImage};

use super::crop::{Anchor, HAnchor, VAnchor};
use super::{check_output, rotate, OpContext, Opts};
use crate::render::error::{RenderError, Result};

/// Largest font size in pixels (before `dpr`).
pub const MAX_SIZE: f64 = 2000.0;

/// Longest text, in characters: enough for a paragraph, small enough to lay out at once.
const MAX_CHARS: usize = 5000;

/// Horizontal alignment of the lines within the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Centre,
    Right,
}

/// The `text` operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    /// Hash of the font's source image.
    pub font: String,
    pub text: String,
    /// Font size in pixels (the em height).
    pub size: f64,
    pub color: [u8; 3],
    /// Percent, 0 transparent – 100 opaque.
    pub opacity: u8,
    /// Clockwise rotation of the text block in degrees.
    pub angle: f64,
    pub anchor: (HAnchor, VAnchor),
    /// The box the text is wrapped (width) and cut off (height) in.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Extra space between lines, in pixels (negative brings them closer).
    pub spacing: f64,
    pub align: Align,
    /// Choose the font size that makes the text fill the box.
    pub resize_to_box: bool,
}

impl Text {
    pub(super) fn from_options(o: &Opts) -> Result<Text> {
        let font = o
            .str_opt("font")?
            .ok_or_else(|| o.invalid("font", "is required: the hash of an uploaded font"))?;
        let text = o
            .str_opt("text")?
            .ok_or_else(|| o.invalid("text", "is required"))?;
        if text.chars().count() > MAX_CHARS {
            return Err(o.invalid("text", &format!("must be at most {MAX_CHARS} characters")));
        }
        let anchor = match Anchor::from_options(o, "anchor", "center_center")? {
            Anchor::At(h, v) => (h, v),
            _ => {
                return Err(o.invalid(
                    "anchor",
                    "must be a position {X}_{Y} (left/center/right/px, top/center/bottom/px)",
                ))
            }
        };
        let align = match o.str_or("align", "left")? {
            "left" => Align::Left,
            "centre" | "center" => Align::Centre,
            "right" => Align::Right,
            _ => return Err(o.invalid("align", "must be left, centre or right")),
        };
        let width = o.u32_opt_in("width", 1, 10_000)?;
        let height = o.u32_opt_in("height", 1, 10_000)?;
        let resize_to_box = o.bool_or("resize_to_box", false)?;
        if resize_to_box && width.is_none() && height.is_none() {
            return Err(o.invalid("resize_to_box", "needs a width or a height"));
        }
        Ok(Text {
            font: font.to_owned(),
            text: text.to_owned(),
            size: o.f64_in("size", 16.0, 1.0, MAX_SIZE)?,
            color: o.color_or("color", [0, 0, 0])?,
            opacity: o.percent_or("opacity", 100)?,
            angle: o.f64_in("angle", 0.0, -360.0, 360.0)?,
            anchor,
            width,
            height,
            spacing: o.f64_in("spacing", 0.0, -1000.0, 1000.0)?,
            align,
            resize_to_box,
        })
    }

    /// The size of the text block before rotation, in image pixels, when it has a box in both
    /// directions; used by the planner. `None` when it depends on the font.
    pub fn block_size(&self, dpr: f64) -> Option<(u64, u64)> {
        let side = |v: u32| (f64::from(v) * dpr).ceil() as u64;
        Some((side(self.width?), side(self.height?)))
    }

    pub(super) fn apply(&self, img: DynamicImage, ctx: &mut OpContext) -> Result<DynamicImage> {
        let bytes = (ctx.font)(&self.font)?;
        let font = crate::render::codecs::parse_font(&bytes)?;
        let dpr = if ctx.dpr.is_finite() && ctx.dpr > 0.0 {
            ctx.dpr
        } else {
            1.0
        };
        let box_w = self.width.map(|w| f64::from(w) * dpr);
        let box_h = self.height.map(|h| f64::from(h) * dpr);
        let spacing = self.spacing * dpr;
        let text = clean(&self.text);
        let size = if self.resize_to_box {
            fitting_size(&font, &text, box_w, box_h, spacing)
        } else {
            self.size * dpr
        };
        let layout = lay_out(&font, size, &text, box_w, spacing);
        let block_w = box_w.unwrap_or(layout.width).ceil().max(1.0);
        let block_h = box_h.unwrap_or(layout.height).ceil().max(1.0);
        check_output(&ctx.limits, "text", block_w as u64, block_h as u64)?;
        let layer = self.draw(&font, size, &layout, block_w as u32, block_h as u32);
        let layer = if self.angle.rem_euclid(360.0) == 0.0 {
            layer
        } else {
            // The rotation must not move the image's areas, so it runs on a throwaway context.
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
            rotate::rotate(
                DynamicImage::ImageRgba8(layer),
                self.angle,
                Rgba([0, 0, 0, 0]),
                &mut scratch,
            )?
            .into_rgba8()
        };
        let (x, y) = place(self.anchor, (img.width(), img.height()), layer.dimensions());
        Ok(match img {
            DynamicImage::ImageRgb8(mut rgb) => {
                paint(&layer, x, y, rgb.width(), rgb.height(), |px, py, c| {
                    let p = rgb.get_pixel_mut(px, py);
                    for i in 0..3 {
                        p.0[i] = mix(p.0[i], c.0[i], c.0[3]);
                    }
                });
                DynamicImage::ImageRgb8(rgb)
            }
            other => {
                let mut rgba = other.into_rgba8();
                paint(&layer, x, y, rgba.width(), rgba.height(), |px, py, c| {
                    let p = rgba.get_pixel_mut(px, py);
                    *p = over(*p, c);
                });
                DynamicImage::ImageRgba8(rgba)
            }
        })
    }

    /// The block as straight-alpha RGBA in the text colour.
    fn draw(&self, font: &FontRef, size: f64, layout: &Layout, w: u32, h: u32) -> RgbaImage {
        let mut coverage = vec![0f32; w as usize * h as usize];
        let scale = PxScale::from(size as f32);
        for line in &layout.lines {
            let free = f64::from(w) - line.width;
            let shift = match self.align {
                Align::Left => 0.0,
                Align::Centre => free / 2.0,
                Align::Right => free,
            };
            for &(id, x) in &line.glyphs {
                let glyph = id.with_scale_and_position(
                    scale,
                    ab_glyph::point((x + shift) as f32, line.baseline as f32),
                );
                let Some(outlined) = font.outline_glyph(glyph) else {
                    continue;
                };
                let bounds = outlined.px_bounds();
                outlined.draw(|gx, gy, c| {
                    let px = bounds.min.x as i64 + i64::from(gx);
                    let py = bounds.min.y as i64 + i64::from(gy);
                    if px >= 0 && py >= 0 && px < i64::from(w) && py < i64::from(h) {
                        let cell = &mut coverage[py as usize * w as usize + px as usize];
                        *cell = (*cell + c).min(1.0);
                    }
                });
            }
        }
        let opacity = f32::from(self.opacity) / 100.0;
        let [r, g, b] = self.color;
        let pixels = coverage
            .iter()
            .flat_map(|c| [r, g, b, (c * opacity * 255.0).round() as u8])
            .collect();
        RgbaImage::from_raw(w, h, pixels).unwrap_or_else(|| RgbaImage::new(w, h))
    }
}

/// One laid-out line: glyphs with their pen position, its advance width and its baseline.
struct Line {
    glyphs: Vec<(GlyphId, f64)>,
    width: f64,
    baseline: f64,
}

struct Layout {
    lines: Vec<Line>,
    /// Widest line.
    width: f64,
    /// From the top of the first line to the bottom of the last.
    height: f64,
    /// Whether a word too wide for the box was broken between characters.
    broke_word: bool,
}

/// Line breaks become `\n`, tabs spaces, other control characters are dropped.
fn clean(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .filter_map(|c| match c {
            '\n' => Some('\n'),
            '\t' | '\r' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

/// Places the glyphs of `text` at `size` pixels, wrapping at `max_width`.
fn lay_out(font: &FontRef, size: f64, text: &str, max_width: Option<f64>, spacing: f64) -> Layout {
    let scaled = font.as_scaled(PxScale::from(size as f32));
    let ascent = f64::from(scaled.ascent());
    let line_height = f64::from(scaled.height() + scaled.line_gap());
    let advance = |id: GlyphId| f64::from(scaled.h_advance(id));
    let kern = |a: GlyphId, b: GlyphId| f64::from(scaled.kern(a, b));

    // The advance width of `ids` appended to a row of width `w` that ends in `last`.
    let extend = |mut w: f64, mut last: Option<GlyphId>, ids: &[GlyphId]| {
        for &id in ids {
            if let Some(p) = last {
                w += kern(p, id);
            }
            w += advance(id);
            last = Some(id);
        }
        w
    };

    // Each paragraph is wrapped into rows of glyph ids; pen positions come after. Widths are
    // kept as the rows grow, so wrapping is linear in the length of the text.
    let mut rows: Vec<Vec<GlyphId>> = Vec::new();
    let mut broke_word = false;
    let space = font.glyph_id(' ');
    for paragraph in text.split('\n') {
        let Some(max) = max_width else {
            rows.push(paragraph.chars().map(|c| font.glyph_id(c)).collect());
            continue;
        };
        let mut row: Vec<GlyphId> = Vec::new();
        let mut row_width = 0.0;
        for word in paragraph.split(' ') {
            let word: Vec<GlyphId> = word.chars().map(|c| font.glyph_id(c)).collect();
            let separator: &[GlyphId] = if row.is_empty() { &[] } else { &[space] };
            let joined = extend(row_width, row.last().copied(), separator);
            let joined = extend(
                joined,
                separator.last().copied().or(row.last().copied()),
                &word,
            );
            if joined <= max {
                row.extend_from_slice(separator);
                row.extend_from_slice(&word);
                row_width = joined;
                continue;
            }
            if !row.is_empty() {
                rows.push(std::mem::take(&mut row));
                row_width = 0.0;
            }
            // A word wider than the box on its own is broken between characters.
            for id in word {
                let longer = extend(row_width, row.last().copied(), &[id]);
                if !row.is_empty() && longer > max {
                    broke_word = true;
                    rows.push(std::mem::replace(&mut row, vec![id]));
                    row_width = advance(id);
                } else {
                    row.push(id);
                    row_width = longer;
                }
            }
        }
        rows.push(row);
    }

    let mut lines = Vec::with_capacity(rows.len());
    let mut widest: f64 = 0.0;
    for (i, row) in rows.into_iter().enumerate() {
        let mut x = 0.0;
        let mut prev: Option<GlyphId> = None;
        let mut glyphs = Vec::with_capacity(row.len());
        for id in row {
            if let Some(p) = prev {
                x += kern(p, id);
            }
            glyphs.push((id, x));
            x += advance(id);
            prev = Some(id);
        }
        widest = widest.max(x);
        lines.push(Line {
            glyphs,
            width: x,
            baseline: ascent + i as f64 * (line_height + spacing),
        });
    }
    let count = lines.len().max(1) as f64;
    let height = (count * line_height + (count - 1.0) * spacing).max(1.0);
    Layout {
        lines,
        width: widest.max(1.0),
        height,
        broke_word,
    }
}

/// The largest size (to a tenth of a pixel) at which the text fits the box, at least 1.
fn fitting_size(
    font: &FontRef,
    text: &str,
    box_w: Option<f64>,
    box_h: Option<f64>,
    spacing: f64,
) -> f64 {
    let fits = |size: f64| {
        let layout = lay_out(font, size, text, box_w, spacing);
        // Words are not broken to make a larger size fit, and no line may be wider than the
        // box (wrapping cannot make one narrower than its widest glyph).
        !layout.broke_word
            && box_w.is_none_or(|w| layout.width <= w)
            && box_h.is_none_or(|h| layout.height <= h)
    };
    let (mut low, mut high) = (1.0, MAX_SIZE);
    if !fits(low) {
        return low;
    }
    while high - low > 0.1 {
        let mid = (low + high) / 2.0;
        if fits(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    low
}

/// Top-left corner of a `layer` placed in `image` by `anchor`; negative when the layer is
/// larger than the image (it is then cut off on both sides when centred).
fn place(anchor: (HAnchor, VAnchor), image: (u32, u32), layer: (u32, u32)) -> (i64, i64) {
    let free = |outer: u32, inner: u32| i64::from(outer) - i64::from(inner);
    let x = match anchor.0 {
        HAnchor::Left => 0,
        HAnchor::Center => free(image.0, layer.0).div_euclid(2),
        HAnchor::Right => free(image.0, layer.0),
        HAnchor::Px(p) => i64::from(p),
    };
    let y = match anchor.1 {
        VAnchor::Top => 0,
        VAnchor::Center => free(image.1, layer.1).div_euclid(2),
        VAnchor::Bottom => free(image.1, layer.1),
        VAnchor::Px(p) => i64::from(p),
    };
    (x, y)
}

/// Calls `put` for every pixel of `layer` at (`x`, `y`) that lies inside a `w` × `h` image
/// and is not fully transparent.
fn paint(
    layer: &RgbaImage,
    x: i64,
    y: i64,
    w: u32,
    h: u32,
    mut put: impl FnMut(u32, u32, Rgba<u8>),
) {
    for (lx, ly, c) in layer.enumerate_pixels() {
        if c.0[3] == 0 {
            continue;
        }
        let (px, py) = (x + i64::from(lx), y + i64::from(ly));
        if px >= 0 && py >= 0 && px < i64::from(w) && py < i64::from(h) {
            put(px as u32, py as u32, *c);
        }
    }
}

fn mix(dst: u8, src: u8, alpha: u8) -> u8 {
    let a = u32::from(alpha);
    ((u32::from(src) * a + u32::from(dst) * (255 - a) + 127) / 255) as u8
}

/// Straight-alpha "over".
fn over(dst: Rgba<u8>, src: Rgba<u8>) -> Rgba<u8> {
    let sa = f32::from(src.0[3]) / 255.0;
    let da = f32::from(dst.0[3]) / 255.0;
    let out_a = sa + da * (1.0 - sa);
    if out_a <= 0.0 {
        return Rgba([0, 0, 0, 0]);
    }
    let channel = |i: usize| {
        let v = (f32::from(src.0[i]) * sa + f32::from(dst.0[i]) * da * (1.0 - sa)) / out_a;
        v.round().clamp(0.0, 255.0) as u8
    };
    Rgba([
        channel(0),
        channel(1),
        channel(2),
        (out_a * 255.0).round() as u8,
    ])
}

#[cfg(test)]
mod tests {
    use super::super::tests::{context, op, rgb_at};
    use super::*;
    use image::{Rgb, RgbImage};
    use serde_json::json;

    const FONT: &[u8] = include_bytes!("../../../tests/fixtures/fonts/dejavu-sans-latin.ttf");

    fn the_font(_: &str) -> Result<Vec<u8>> {
        Ok(FONT.to_vec())
    }

    fn white(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, Rgb([255, 255, 255])))
    }

    fn draw(img: DynamicImage, options: serde_json::Value) -> Result<DynamicImage> {
        let mut options = options;
        options["font"] = json!("abcdef");
        let mut ctx = context(1.0);
        ctx.font = &the_font;
        op("text", options).apply(img, &mut ctx)
    }

    /// Bounding box (x0, y0, x1, y1) of the pixels that are not white.
    fn ink(img: &DynamicImage) -> Option<(u32, u32, u32, u32)> {
        let rgb = img.to_rgb8();
        let mut b: Option<(u32, u32, u32, u32)> = None;
        for (x, y, p) in rgb.enumerate_pixels() {
            if p.0.iter().any(|&c| c < 200) {
                b = Some(match b {
                    None => (x, y, x, y),
                    Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
                });
            }
        }
        b
    }

    #[test]
    fn text_is_drawn_in_its_colour_centred_by_default() {
        let out = draw(
            white(200, 100),
            json!({"text": "Hello", "size": 30, "color": "FF0000"}),
        )
        .unwrap();

        let (x0, y0, x1, y1) = ink(&out).expect("some text");
        let (cx, cy) = ((x0 + x1) / 2, (y0 + y1) / 2);
        assert!((95..=105).contains(&cx), "{x0}..{x1}");
        assert!((45..=58).contains(&cy), "{y0}..{y1}");
        // Red ink: some pixel is pure red.
        let rgb = out.to_rgb8();
        assert!(rgb.pixels().any(|p| p.0 == [255, 0, 0]));
        assert_eq!((out.width(), out.height()), (200, 100));
    }

    #[test]
    fn the_anchor_places_the_block() {
        let out = draw(
            white(200, 100),
            json!({"text": "Hi", "size": 20, "anchor": "left_top"}),
        )
        .unwrap();

        let (x0, y0, _, _) = ink(&out).unwrap();
        assert!(x0 < 6 && y0 < 10, "{x0},{y0}");
    }

    #[test]
    fn kerning_brings_av_closer_than_the_advances() {
        let font = crate::render::codecs::parse_font(FONT).unwrap();
        let scaled = font.as_scaled(PxScale::from(100.0));
        let (a, v) = (font.glyph_id('A'), font.glyph_id('V'));

        let kerned = lay_out(&font, 100.0, "AV", None, 0.0).width;

        assert!(scaled.kern(a, v) < 0.0);
        assert!(kerned < f64::from(scaled.h_advance(a) + scaled.h_advance(v)));
    }

    #[test]
    fn a_width_box_wraps_and_a_height_box_cuts_off() {
        let font = crate::render::codecs::parse_font(FONT).unwrap();

        let one = lay_out(&font, 20.0, "one two three four", None, 0.0);
        let wrapped = lay_out(&font, 20.0, "one two three four", Some(60.0), 0.0);

        assert_eq!(one.lines.len(), 1);
        assert!(wrapped.lines.len() >= 3, "{}", wrapped.lines.len());
        assert!(wrapped.lines.iter().all(|l| l.width <= 60.0));
        let cut = draw(
            white(300, 300),
            json!({"text": "a\nb\nc\nd\ne\nf", "size": 40, "height": 50, "anchor": "left_top"}),
        )
        .unwrap();
        let (_, _, _, y1) = ink(&cut).unwrap();
        assert!(y1 < 50, "{y1}");
    }

    #[test]
    fn resize_to_box_fills_the_box() {
        let font = crate::render::codecs::parse_font(FONT).unwrap();

        let size = fitting_size(&font, "Darkroom", Some(300.0), Some(200.0), 0.0);

        let layout = lay_out(&font, size, "Darkroom", Some(300.0), 0.0);
        assert_eq!(layout.lines.len(), 1);
        assert!(
            layout.width <= 300.0 && layout.width > 280.0,
            "{}",
            layout.width
        );
    }

    #[test]
    fn opacity_and_alpha_images() {
        let transparent = DynamicImage::ImageRgba8(RgbaImage::new(100, 50));
        let out = draw(
            transparent,
            json!({"text": "MMM", "size": 40, "opacity": 50, "color": "0000FF"}),
        )
        .unwrap();

        let rgba = out.to_rgba8();
        let max_alpha = rgba.pixels().map(|p| p.0[3]).max().unwrap();
        assert!((120..=135).contains(&max_alpha), "{max_alpha}");
    }

    #[test]
    fn rotation_turns_the_block() {
        let flat = draw(white(200, 200), json!({"text": "HHHHHHHH", "size": 20})).unwrap();
        let turned = draw(
            white(200, 200),
            json!({"text": "HHHHHHHH", "size": 20, "angle": 90}),
        )
        .unwrap();

        let (fx0, fy0, fx1, fy1) = ink(&flat).unwrap();
        let (tx0, ty0, tx1, ty1) = ink(&turned).unwrap();
        assert!(fx1 - fx0 > fy1 - fy0);
        assert!(ty1 - ty0 > tx1 - tx0);
    }

    #[test]
    fn options_are_checked() {
        let mut ctx = context(1.0);
        ctx.font = &the_font;
        for (options, field) in [
            (json!({"text": "x"}), "text.font"),
            (json!({"font": "abcdef"}), "text.text"),
            (
                json!({"font": "abcdef", "text": "x", "anchor": "smart"}),
                "text.anchor",
            ),
            (
                json!({"font": "abcdef", "text": "x", "align": "justify"}),
                "text.align",
            ),
            (
                json!({"font": "abcdef", "text": "x", "resize_to_box": true}),
                "text.resize_to_box",
            ),
        ] {
            let resolved = crate::model::resolved::ResolvedOp {
                name: "text".into(),
                options: options.as_object().cloned().unwrap(),
            };
            let err = super::super::Operation::from_resolved(&resolved)
                .err()
                .unwrap();
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn a_damaged_font_is_refused_when_drawing() {
        let broken = |_: &str| -> Result<Vec<u8>> { Ok(FONT[..200].to_vec()) };
        let mut ctx = context(1.0);
        ctx.font = &broken;

        let result =
            op("text", json!({"font": "abcdef", "text": "x"})).apply(white(10, 10), &mut ctx);

        assert!(
            matches!(result, Err(RenderError::Unprocessable(_))),
            "{result:?}"
        );
    }

    #[test]
    fn the_rendering_matches_the_golden_image() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/golden/text-wrapped-centre.png"
        );
        let out = draw(
            white(240, 120),
            json!({
                "text": "Wavy AV Täxt, über alles",
                "size": 28,
                "color": "1A4D80",
                "width": 200,
                "align": "centre",
                "spacing": 4,
                "anchor": "center_center",
            }),
        )
        .unwrap()
        .to_rgb8();
        if std::env::var_os("DARKROOM_BLESS").is_some() {
            out.save(path).unwrap();
        }
        let golden = image::open(path)
            .expect("the golden image exists")
            .to_rgb8();
        assert_eq!(golden.dimensions(), out.dimensions());
        let mut off = 0;
        for (a, b) in golden.pixels().zip(out.pixels()) {
            let worst =
                a.0.iter()
                    .zip(b.0)
                    .map(|(x, y)| x.abs_diff(y))
                    .max()
                    .unwrap_or(0);
            assert!(worst <= 48, "a pixel differs by {worst}");
            if worst > 8 {
                off += 1;
            }
        }
        assert!(off <= 50, "{off} pixels differ by more than 8");
        assert_eq!(rgb_at(&DynamicImage::ImageRgb8(out), 0, 0), [255, 255, 255]);
    }
}
