//! The operation layer: turns a [`ResolvedOp`] (an operation name plus its filled-in options)
//! into a typed [`Operation`] and applies it to a decoded image.
//!
//! Geometric operations (resize, crop, rotate, autorotate, trim, dropshadow, composition) live in
//! one file each and keep the focus areas of [`OpContext`] (subject area, crop area, named areas)
//! in the coordinates of the image they produce, so that a crop later in the stack still finds
//! the subject. Colour and filter operations delegate to `filter`, `color` and `alpha` and never
//! change the geometry. Every operation that allocates a larger canvas checks the result size
//! against [`Limits`] first, because option values come from request URLs.

pub mod alpha;
pub mod color;
pub mod compose;
pub mod crop;
pub mod filter;
pub mod resize;
pub mod rotate;
pub mod text;
pub mod trim;

use std::collections::BTreeMap;
use std::fmt;

use image::DynamicImage;
use serde_json::{Map, Value};

use crate::model::resolved::ResolvedOp;
use crate::render::error::{RenderError, Result};
use crate::render::limits::Limits;

use self::alpha::AlphaMode;
use self::filter::SharpenParams;

/// A rectangle in pixel coordinates of the current image (fractional values allowed, so that
/// repeated scaling does not accumulate rounding errors).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl Area {
    /// An area with its top-left corner at (`x`, `y`).
    pub fn new(x: f64, y: f64, width: f64, height: f64) -> Area {
        Area {
            x,
            y,
            width,
            height,
        }
    }

    /// The centre point.
    pub fn center(&self) -> (f64, f64) {
        (self.x + self.width / 2.0, self.y + self.height / 2.0)
    }

    /// The same area after the image was scaled by `sx` horizontally and `sy` vertically.
    pub fn scaled(&self, sx: f64, sy: f64) -> Area {
        Area::new(self.x * sx, self.y * sy, self.width * sx, self.height * sy)
    }

    /// The area moved by (`dx`, `dy`) and clipped to an image of `width` × `height`;
    /// `None` when nothing of it is left inside.
    pub fn translated_clipped(&self, dx: f64, dy: f64, width: f64, height: f64) -> Option<Area> {
        let x0 = (self.x + dx).max(0.0);
        let y0 = (self.y + dy).max(0.0);
        let x1 = (self.x + dx + self.width).min(width);
        let y1 = (self.y + dy + self.height).min(height);
        if x1 > x0 && y1 > y0 && x0.is_finite() && y0.is_finite() {
            Some(Area::new(x0, y0, x1 - x0, y1 - y0))
        } else {
            None
        }
    }
}

/// What an operation may read and update besides the pixels.
pub struct OpContext<'a> {
    /// Device pixel ratio of the render (stack option `dpr`); multiplies resize targets.
    pub dpr: f64,
    /// Upper bounds for every canvas an operation allocates.
    pub limits: Limits,
    /// The source image's subject area, in current-image pixels.
    pub subject_area: Option<Area>,
    /// The source image's crop area, in current-image pixels.
    pub crop_area: Option<Area>,
    /// Named areas (`multi_areas` metadata) selectable by crop's `area` option.
    pub multi_areas: BTreeMap<String, Area>,
    /// Loads another source image of the same organisation by hash (composition).
    pub secondary: &'a dyn Fn(&str) -> Result<DynamicImage>,
    /// Loads the bytes of a font of the same organisation by hash (text).
    pub font: &'a dyn Fn(&str) -> Result<Vec<u8>>,
}

impl OpContext<'_> {
    /// Replaces every area by `f(area)`, dropping those for which it returns `None`.
    pub fn map_areas(&mut self, f: impl Fn(&Area) -> Option<Area>) {
        self.subject_area = self.subject_area.as_ref().and_then(&f);
        self.crop_area = self.crop_area.as_ref().and_then(&f);
        let names: Vec<String> = self.multi_areas.keys().cloned().collect();
        for name in names {
            let mapped = self.multi_areas.get(&name).and_then(&f);
            match mapped {
                Some(area) => {
                    self.multi_areas.insert(name, area);
                }
                None => {
                    self.multi_areas.remove(&name);
                }
            }
        }
    }

    /// Keeps the areas consistent after the image was cut to the `width` × `height` region
    /// whose top-left corner was at (`x`, `y`).
    pub fn crop_areas(&mut self, x: u32, y: u32, width: u32, height: u32) {
        let (dx, dy) = (-f64::from(x), -f64::from(y));
        let (w, h) = (f64::from(width), f64::from(height));
        self.map_areas(|a| a.translated_clipped(dx, dy, w, h));
    }

    /// Keeps the areas consistent after the image was placed at (`x`, `y`) on a larger canvas.
    pub fn offset_areas(&mut self, x: u32, y: u32) {
        let (dx, dy) = (f64::from(x), f64::from(y));
        self.map_areas(|a| Some(Area::new(a.x + dx, a.y + dy, a.width, a.height)));
    }
}

/// One typed operation, ready to run.
pub enum Operation {
    Resize(resize::Resize),
    Crop(crop::Crop),
    Rotate(rotate::Rotate),
    Autorotate(rotate::Autorotate),
    /// Gaussian blur (`radius`, deprecated in rokka, is accepted and ignored).
    Blur {
        sigma: f32,
    },
    Dropshadow(compose::Dropshadow),
    /// Removes borders of the top-left pixel's colour; `fuzzy` is a tolerance in percent.
    Trim {
        fuzzy: f32,
    },
    Grayscale,
    Sepia,
    /// `opacity` is the rokka percentage (0–100), used by `AlphaMode::Apply`.
    Alpha {
        mode: AlphaMode,
        opacity: u8,
    },
    Composition(compose::Composition),
    /// Brightness and saturation in percent (100 = unchanged), hue shift in degrees.
    Modulate {
        brightness: f32,
        saturation: f32,
        hue: f32,
    },
    /// `color` (from `factor_color`) wins over `factor` when present.
    Multiply {
        factor: f32,
        color: Option<[u8; 3]>,
    },
    Sharpen(SharpenParams),
    Circlemask,
    Text(text::Text),
}

/// rokka operations this server knows by name but does not render.
const NOT_SUPPORTED: &[&str] = &[
    "primitive",
    "glitch",
    "face",
    "svg2bitmap",
    "svgdynamic",
    "addframes",
    "noop",
];

impl Operation {
    /// Reads the typed options of `op`. Missing options take the rokka default; a value of the
    /// wrong type or out of range is `Invalid` with a message naming `operation.option`.
    pub fn from_resolved(op: &ResolvedOp) -> Result<Operation> {
        let o = Opts {
            op: &op.name,
            map: &op.options,
        };
        let operation = match op.name.as_str() {
            "resize" => Operation::Resize(resize::Resize::from_options(&o)?),
            "crop" => Operation::Crop(crop::Crop::from_options(&o)?),
            "rotate" => Operation::Rotate(rotate::Rotate::from_options(&o)?),
            "autorotate" => Operation::Autorotate(rotate::Autorotate::from_options(&o)?),
            "blur" => {
                // Validated although unused, so a typo'd stack fails loudly.
                o.f64_in("radius", 0.0, 0.0, 500.0)?;
                Operation::Blur {
                    sigma: o.f64_in("sigma", 4.0, 0.0, 100.0)? as f32,
                }
            }
            "dropshadow" => Operation::Dropshadow(compose::Dropshadow::from_options(&o)?),
            "trim" => Operation::Trim {
                fuzzy: o.f64_in("fuzzy", 0.0, 0.0, 100.0)? as f32,
            },
            "grayscale" => Operation::Grayscale,
            "sepia" => Operation::Sepia,
            "alpha" => {
                let mode = match o.str_or("mode", "mask")? {
                    "mask" => AlphaMode::Mask,
                    "extract" => AlphaMode::Extract,
                    "remove" => AlphaMode::Remove,
                    "apply" => AlphaMode::Apply,
                    _ => {
                        return Err(o.invalid("mode", "must be one of mask, extract, remove, apply"))
                    }
                };
                Operation::Alpha {
                    mode,
                    opacity: o.percent_or("opacity", 50)?,
                }
            }
            "composition" => Operation::Composition(compose::Composition::from_options(&o)?),
            "modulate" => Operation::Modulate {
                brightness: o.f64_in("brightness", 100.0, 0.0, 500.0)? as f32,
                saturation: o.f64_in("saturation", 100.0, 0.0, 500.0)? as f32,
                hue: o.f64_in("hue", 0.0, 0.0, 360.0)? as f32,
            },
            "multiply" => Operation::Multiply {
                factor: o.f64_in("factor", 0.96, 0.0, 1.0)? as f32,
                color: o.color_opt("factor_color")?,
            },
            "sharpen" => Operation::Sharpen(SharpenParams {
                sigma: o.f64_in("sigma", 0.7, 0.0, 100.0)? as f32,
                x1: o.f64_in("x1", 2.0, 0.0, 1_000_000.0)? as f32,
                y2: o.f64_in("y2", 10.0, 0.0, 1_000_000.0)? as f32,
                y3: o.f64_in("y3", 20.0, 0.0, 1_000_000.0)? as f32,
                m1: o.f64_in("m1", 0.4, 0.0, 1_000_000.0)? as f32,
                m2: o.f64_in("m2", 0.8, 0.0, 1_000_000.0)? as f32,
            }),
            "circlemask" => Operation::Circlemask,
            "text" => Operation::Text(text::Text::from_options(&o)?),
            name if NOT_SUPPORTED.contains(&name) => {
                return Err(RenderError::Invalid(format!(
                    "operation `{name}` is not supported by this server"
                )))
            }
            name => return Err(RenderError::Invalid(format!("unknown operation `{name}`"))),
        };
        Ok(operation)
    }

    /// The rokka name of the operation.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Resize(_) => "resize",
            Operation::Crop(_) => "crop",
            Operation::Rotate(_) => "rotate",
            Operation::Autorotate(_) => "autorotate",
            Operation::Blur { .. } => "blur",
            Operation::Dropshadow(_) => "dropshadow",
            Operation::Trim { .. } => "trim",
            Operation::Grayscale => "grayscale",
            Operation::Sepia => "sepia",
            Operation::Alpha { .. } => "alpha",
            Operation::Composition(_) => "composition",
            Operation::Modulate { .. } => "modulate",
            Operation::Multiply { .. } => "multiply",
            Operation::Sharpen(_) => "sharpen",
            Operation::Circlemask => "circlemask",
            Operation::Text(_) => "text",
        }
    }

    /// [`Operation::apply`] to an image it does not own: a resize reads an RGB8 or RGBA8
    /// image in place (nothing to normalize), everything else works on a copy. The result is
    /// the same.
    pub fn apply_to(&self, img: &DynamicImage, ctx: &mut OpContext) -> Result<DynamicImage> {
        match (self, img) {
            (Operation::Resize(r), DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_)) => {
                r.apply(img, ctx)
            }
            _ => self.apply(img.clone(), ctx),
        }
    }

    /// Runs the operation. The result is `ImageRgb8` or `ImageRgba8`; geometric operations
    /// update the areas in `ctx` to the new image's coordinates.
    pub fn apply(&self, img: DynamicImage, ctx: &mut OpContext) -> Result<DynamicImage> {
        let img = normalize(img);
        match self {
            Operation::Resize(r) => r.apply(&img, ctx),
            Operation::Crop(c) => c.apply(img, ctx),
            Operation::Rotate(r) => r.apply(img, ctx),
            Operation::Autorotate(a) => a.apply(img, ctx),
            Operation::Blur { sigma } => Ok(filter::blur(&img, *sigma)),
            Operation::Dropshadow(d) => d.apply(img, ctx),
            Operation::Trim { fuzzy } => Ok(trim::apply(img, *fuzzy, ctx)),
            Operation::Grayscale => Ok(color::grayscale(&img)),
            Operation::Sepia => Ok(color::sepia(&img)),
            Operation::Alpha { mode, opacity } => {
                Ok(alpha::alpha(&img, copy_alpha_mode(mode), *opacity))
            }
            Operation::Composition(c) => c.apply(img, ctx),
            Operation::Modulate {
                brightness,
                saturation,
                hue,
            } => Ok(color::modulate(&img, *brightness, *saturation, *hue)),
            Operation::Multiply { factor, color } => Ok(color::multiply(&img, *factor, *color)),
            Operation::Sharpen(p) => Ok(filter::sharpen(&img, p)),
            Operation::Circlemask => Ok(compose::circlemask(&img)),
            Operation::Text(t) => t.apply(img, ctx),
        }
    }
}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Operation({})", self.name())
    }
}

/// `AlphaMode` is passed by value; this rebuilds it from a reference without requiring
/// `Clone` on the type.
fn copy_alpha_mode(mode: &AlphaMode) -> AlphaMode {
    match mode {
        AlphaMode::Mask => AlphaMode::Mask,
        AlphaMode::Extract => AlphaMode::Extract,
        AlphaMode::Remove => AlphaMode::Remove,
        AlphaMode::Apply => AlphaMode::Apply,
    }
}

/// The sharpen parameters rokka uses when `resize` has `sharpen: true` (the sharpen
/// operation's defaults).
pub fn default_sharpen_params() -> SharpenParams {
    SharpenParams {
        sigma: 0.7,
        x1: 2.0,
        y2: 10.0,
        y3: 20.0,
        m1: 0.4,
        m2: 0.8,
    }
}

/// Decoders hand over RGB8 or RGBA8; anything else (16-bit, gray) is converted here so the
/// operations only deal with those two layouts.
fn normalize(img: DynamicImage) -> DynamicImage {
    match img {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => img,
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.to_rgba8()),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

/// Refuses a result canvas that would exceed `limits`, before it is allocated.
pub fn check_output(limits: &Limits, op: &str, width: u64, height: u64) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(RenderError::Invalid(format!("{op}: result would be empty")));
    }
    let max = u64::from(limits.max_dimension);
    if width > max || height > max || width.saturating_mul(height) > limits.max_pixels {
        return Err(RenderError::Invalid(format!(
            "{op}: result would be {width}×{height} pixels, above the limit"
        )));
    }
    Ok(())
}

/// Typed access to one operation's options, with errors naming `operation.option`.
struct Opts<'a> {
    op: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Opts<'a> {
    fn invalid(&self, field: &str, what: &str) -> RenderError {
        RenderError::Invalid(format!("{}.{} {}", self.op, field, what))
    }

    /// The value of `key`; a JSON null counts as absent (an option without default).
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A number; numeric strings are accepted because URL options arrive as text.
    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        let value = match self.get(key) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        match value {
            Some(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(self.invalid(key, "must be a number")),
        }
    }

    fn f64_in(&self, key: &str, default: f64, min: f64, max: f64) -> Result<f64> {
        let v = self.f64_opt(key)?.unwrap_or(default);
        if v < min || v > max {
            return Err(self.invalid(key, &format!("must be between {min} and {max}")));
        }
        Ok(v)
    }

    fn u32_opt_in(&self, key: &str, min: u32, max: u32) -> Result<Option<u32>> {
        match self.f64_opt(key)? {
            None => Ok(None),
            Some(v) if v.fract() != 0.0 => Err(self.invalid(key, "must be an integer")),
            Some(v) if v < f64::from(min) || v > f64::from(max) => {
                Err(self.invalid(key, &format!("must be between {min} and {max}")))
            }
            Some(v) => Ok(Some(v as u32)),
        }
    }

    fn i32_in(&self, key: &str, default: i32, min: i32, max: i32) -> Result<i32> {
        match self.int_opt(key)? {
            None => Ok(default),
            Some(v) if v < f64::from(min) || v > f64::from(max) => {
                Err(self.invalid(key, &format!("must be between {min} and {max}")))
            }
            Some(v) => Ok(v as i32),
        }
    }

    fn int_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.f64_opt(key)? {
            Some(v) if v.fract() != 0.0 => Err(self.invalid(key, "must be an integer")),
            other => Ok(other),
        }
    }

    /// A percentage 0–100 (fractions are rounded).
    fn percent_or(&self, key: &str, default: u8) -> Result<u8> {
        Ok(self.f64_in(key, f64::from(default), 0.0, 100.0)?.round() as u8)
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" || s == "1" => Ok(true),
            Some(Value::String(s)) if s == "false" || s == "0" => Ok(false),
            Some(Value::Number(n)) if n.as_f64() == Some(1.0) => Ok(true),
            Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(false),
            Some(_) => Err(self.invalid(key, "must be true or false")),
        }
    }

    /// A string; an empty string counts as absent.
    fn str_opt(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(self.invalid(key, "must be a string")),
        }
    }

    fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        Ok(self.str_opt(key)?.unwrap_or(default))
    }

    /// A colour as six (or three) hex digits, with or without a leading `#`.
    fn color_opt(&self, key: &str) -> Result<Option<[u8; 3]>> {
        match self.str_opt(key)? {
            None => Ok(None),
            Some(s) => parse_hex_color(s)
                .map(Some)
                .ok_or_else(|| self.invalid(key, "must be a hex colour like FFFFFF")),
        }
    }

    fn color_or(&self, key: &str, default: [u8; 3]) -> Result<[u8; 3]> {
        Ok(self.color_opt(key)?.unwrap_or(default))
    }
}

/// Parses `RRGGBB` or `RGB` hex digits (optional `#`).
pub fn parse_hex_color(s: &str) -> Option<[u8; 3]> {
    let s = s.strip_prefix('#').unwrap_or(s);
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let digit = |i: usize| s.get(i..i + 1).and_then(|d| u8::from_str_radix(d, 16).ok());
    match s.len() {
        6 => {
            let byte = |i: usize| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok());
            Some([byte(0)?, byte(2)?, byte(4)?])
        }
        3 => Some([digit(0)? * 17, digit(1)? * 17, digit(2)? * 17]),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};
    use serde_json::json;

    pub const RED: [u8; 3] = [255, 0, 0];
    pub const GREEN: [u8; 3] = [0, 255, 0];
    pub const BLUE: [u8; 3] = [0, 0, 255];
    pub const WHITE: [u8; 3] = [255, 255, 255];

    /// A `width` × `height` RGB image with red, green, blue, white quadrants
    /// (top-left, top-right, bottom-left, bottom-right).
    pub fn quadrants(width: u32, height: u32) -> DynamicImage {
        let img = RgbImage::from_fn(width, height, |x, y| {
            let c = match (x < width / 2, y < height / 2) {
                (true, true) => RED,
                (false, true) => GREEN,
                (true, false) => BLUE,
                (false, false) => WHITE,
            };
            Rgb(c)
        });
        DynamicImage::ImageRgb8(img)
    }

    pub fn solid_rgba(width: u32, height: u32, px: [u8; 4]) -> DynamicImage {
        DynamicImage::ImageRgba8(RgbaImage::from_pixel(width, height, Rgba(px)))
    }

    pub fn rgb_at(img: &DynamicImage, x: u32, y: u32) -> [u8; 3] {
        img.to_rgb8().get_pixel(x, y).0
    }

    pub fn rgba_at(img: &DynamicImage, x: u32, y: u32) -> [u8; 4] {
        img.to_rgba8().get_pixel(x, y).0
    }

    pub fn no_secondary(_: &str) -> Result<DynamicImage> {
        Err(RenderError::Invalid("no secondary image".into()))
    }

    pub fn no_font(_: &str) -> Result<Vec<u8>> {
        Err(RenderError::Invalid("no font".into()))
    }

    pub fn context(dpr: f64) -> OpContext<'static> {
        OpContext {
            dpr,
            limits: Limits::default(),
            subject_area: None,
            crop_area: None,
            multi_areas: BTreeMap::new(),
            secondary: &no_secondary,
            font: &no_font,
        }
    }

    pub fn op(name: &str, options: Value) -> Operation {
        let options = match options {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        match Operation::from_resolved(&ResolvedOp {
            name: name.into(),
            options,
        }) {
            Ok(op) => op,
            Err(e) => panic!("{name}: {e}"),
        }
    }

    fn parse_error(name: &str, options: Value) -> String {
        let options = match options {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        match Operation::from_resolved(&ResolvedOp {
            name: name.into(),
            options,
        }) {
            Ok(op) => panic!("{op:?} parsed"),
            Err(RenderError::Invalid(msg)) => msg,
            Err(other) => panic!("unexpected error kind: {other:?}"),
        }
    }

    #[test]
    fn from_resolved_reads_typed_options_and_defaults() {
        let parsed = op("resize", json!({"width": 200, "mode": "fill"}));

        match parsed {
            Operation::Resize(r) => {
                assert_eq!(r.width, Some(200));
                assert_eq!(r.height, None);
                assert_eq!(r.mode, resize::ResizeMode::Fill);
                assert!(r.upscale && r.upscale_dpr && !r.sharpen);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_operation_on_a_borrowed_image_gives_what_it_gives_on_its_own() {
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_fn(64, 48, |x, y| {
            image::Luma([(x * 3 + y * 5) as u8])
        }));
        let images = [
            quadrants(64, 48),
            solid_rgba(64, 48, [10, 20, 30, 128]),
            gray,
        ];
        for (name, options) in [
            ("resize", json!({"width": 20, "sharpen": true})),
            ("resize", json!({"width": 64})),
            (
                "resize",
                json!({"width": 100, "height": 30, "mode": "fill"}),
            ),
            ("blur", json!({"sigma": 2})),
        ] {
            let op = op(name, options.clone());
            for (img, dpr) in images.iter().flat_map(|i| [(i, 1.0), (i, 2.0)]) {
                let (mut borrowed_ctx, mut owned_ctx) = (context(dpr), context(dpr));
                let borrowed = op.apply_to(img, &mut borrowed_ctx).unwrap();
                let owned = op.apply(img.clone(), &mut owned_ctx).unwrap();
                let what = format!("{name} {options} at dpr {dpr} on {:?}", img.color());
                assert_eq!(borrowed.color(), owned.color(), "{what}");
                assert_eq!(
                    (borrowed.width(), borrowed.height()),
                    (owned.width(), owned.height()),
                    "{what}"
                );
                assert_eq!(borrowed.as_bytes(), owned.as_bytes(), "{what}");
            }
        }
    }

    #[test]
    fn from_resolved_accepts_numbers_given_as_url_text() {
        let parsed = op("blur", json!({"sigma": "2.5"}));

        assert!(matches!(parsed, Operation::Blur { sigma } if sigma == 2.5));
    }

    #[test]
    fn from_resolved_names_the_field_of_a_wrongly_typed_option() {
        let msg = parse_error("resize", json!({"width": "wide"}));

        assert!(msg.contains("resize.width"), "{msg}");
    }

    #[test]
    fn from_resolved_rejects_out_of_range_values() {
        let msg = parse_error("rotate", json!({"angle": 45, "background_opacity": 101}));

        assert!(msg.contains("rotate.background_opacity"), "{msg}");
    }

    #[test]
    fn from_resolved_rejects_a_bad_colour() {
        let msg = parse_error("multiply", json!({"factor_color": "zzzzzz"}));

        assert!(msg.contains("multiply.factor_color"), "{msg}");
    }

    #[test]
    fn from_resolved_rejects_an_unknown_operation() {
        let msg = parse_error("explode", json!({}));

        assert!(msg.contains("explode"), "{msg}");
    }

    #[test]
    fn from_resolved_rejects_a_known_but_unsupported_operation() {
        let msg = parse_error("glitch", json!({}));

        assert!(msg.contains("not supported"), "{msg}");
    }

    #[test]
    fn from_resolved_requires_a_resize_dimension() {
        let msg = parse_error("resize", json!({"mode": "box"}));

        assert!(msg.contains("resize.width"), "{msg}");
    }

    #[test]
    fn from_resolved_reads_alpha_mode_and_sharpen_defaults() {
        let alpha = op("alpha", json!({"mode": "apply"}));
        let sharpen = op("sharpen", json!({"m2": 1.5}));

        assert!(matches!(
            alpha,
            Operation::Alpha {
                mode: AlphaMode::Apply,
                opacity: 50
            }
        ));
        match sharpen {
            Operation::Sharpen(p) => {
                assert_eq!(
                    (p.sigma, p.m1, p.m2, p.x1, p.y2, p.y3),
                    (0.7, 0.4, 1.5, 2.0, 10.0, 20.0)
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn null_options_take_the_default() {
        let parsed = op("multiply", json!({"factor": null, "factor_color": null}));

        assert!(matches!(parsed, Operation::Multiply { factor, color: None } if factor == 0.96));
    }

    #[test]
    fn hex_colours_parse_in_long_and_short_form() {
        assert_eq!(parse_hex_color("FF8000"), Some([255, 128, 0]));
        assert_eq!(parse_hex_color("#fff"), Some([255, 255, 255]));
        assert_eq!(parse_hex_color("12345"), None);
        assert_eq!(parse_hex_color("ééé"), None);
    }

    #[test]
    fn the_limits_guard_refuses_an_oversized_result_before_allocating() {
        let mut ctx = context(1.0);
        ctx.limits = Limits {
            max_dimension: 1000,
            max_pixels: 10_000,
            ..Limits::default()
        };
        let resize = op(
            "resize",
            json!({"width": 500, "height": 500, "mode": "absolute"}),
        );

        let result = resize.apply(quadrants(40, 30), &mut ctx);

        match result {
            Err(RenderError::Invalid(msg)) => {
                assert!(msg.contains("500×500 pixels, above the limit"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn areas_are_scaled_by_resize() {
        let mut ctx = context(1.0);
        ctx.subject_area = Some(Area::new(10.0, 10.0, 10.0, 10.0));
        ctx.multi_areas
            .insert("a".into(), Area::new(0.0, 0.0, 20.0, 15.0));

        let out = op("resize", json!({"width": 80})).apply(quadrants(40, 30), &mut ctx);

        assert!(out.is_ok());
        assert_eq!(ctx.subject_area, Some(Area::new(20.0, 20.0, 20.0, 20.0)));
        assert_eq!(
            ctx.multi_areas.get("a"),
            Some(&Area::new(0.0, 0.0, 40.0, 30.0))
        );
    }

    #[test]
    fn colour_operations_keep_the_size() {
        let mut ctx = context(1.0);
        for (name, options) in [
            ("blur", json!({})),
            ("grayscale", json!({})),
            ("sepia", json!({})),
            ("modulate", json!({"hue": 90})),
            ("multiply", json!({})),
            ("sharpen", json!({})),
            ("alpha", json!({"mode": "remove"})),
        ] {
            let out = op(name, options).apply(quadrants(40, 30), &mut ctx);

            assert!(
                matches!(out, Ok(ref img) if img.width() == 40 && img.height() == 30),
                "{name}"
            );
        }
    }

    #[test]
    fn sixteen_bit_input_is_normalised_to_eight_bit() {
        let img =
            DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(4, 4, Rgb([65535u16, 0, 0])));
        let mut ctx = context(1.0);

        let out = op("trim", json!({})).apply(img, &mut ctx);

        assert!(matches!(out, Ok(DynamicImage::ImageRgb8(_))));
    }
}
