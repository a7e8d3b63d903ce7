//! The render pipeline: decode (shrink-on-load when the first operation is a downscaling
//! resize), run the resolved operations in order, encode. Pure and synchronous; the caller runs
//! it on the CPU pool. Equal inputs give byte-identical outputs.

use crate::model::resolved::ResolvedPipeline;
use crate::render::cancel::Cancel;
use crate::render::codecs::{self, DecodeHint, EncodeOptions, OutputFormat};
use crate::render::error::Result;
use crate::render::limits::Limits;
use crate::render::ops::{Area, OpContext, Operation};
use crate::render::output;
use crate::render::plan::{self, Plan, SourceShape};
use image::DynamicImage;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything a render needs besides the source bytes.
pub struct RenderInput<'a> {
    pub pipeline: &'a ResolvedPipeline,
    pub format: OutputFormat,
    pub lossless: bool,
    /// The format a `format` of JPEG becomes when the result has visible transparency
    /// (`jpg.transparency.autoformat`, `.convert`); `None` keeps JPEG.
    pub alpha_format: Option<OutputFormat>,
    pub limits: Limits,
    /// Source size after EXIF orientation, for planning a reduced-size decode.
    pub oriented_size: (u32, u32),
    /// The image's dynamic metadata (`subject_area`, `crop_area`, `multi_areas`), in
    /// oriented source pixels or percentages.
    pub dynamic_metadata: &'a Map<String, Value>,
    /// Loads another image of the organization by hash (composition).
    pub secondary: &'a dyn Fn(&str) -> Result<DynamicImage>,
    /// Loads the bytes of a font of the organization by hash (text).
    pub font: &'a dyn Fn(&str) -> Result<Vec<u8>>,
    /// Set when nobody waits for the render any more; checked between steps.
    pub cancel: &'a Cancel,
    /// The decode shared by the renders of one image (its mezzanine), for a JPEG: called with
    /// the scale denominator [`codecs::shared_denominator`] gives (1 for full size) and the
    /// hint, it must return exactly what `codecs::decode` returns for them. Every render at
    /// that scale then starts from the same pixels, whether they were decoded just now or
    /// kept before. `None` decodes the source directly. The first operation (a resize, since
    /// there is a hint) reads the shared pixels in place: they are not copied.
    pub shared_decode: Option<&'a SharedDecode<'a>>,
}

/// See [`RenderInput::shared_decode`].
pub type SharedDecode<'a> = dyn Fn(u32, Option<DecodeHint>) -> Result<Arc<codecs::Decoded>> + 'a;

/// Works out what rendering `pipeline` on `source` will cost, before anything is decoded;
/// `secondary` gives the oriented size of another image by hash. Unknown operations and bad
/// options are refused here as they would be by [`render`].
pub fn plan(
    pipeline: &ResolvedPipeline,
    format: OutputFormat,
    source: SourceShape,
    secondary: &dyn Fn(&str) -> Option<(u32, u32)>,
) -> Result<Plan> {
    let operations: Vec<Operation> = pipeline
        .operations
        .iter()
        .map(Operation::from_resolved)
        .collect::<Result<_>>()?;
    output::check(&pipeline.options, &pipeline.explicit_options, format)?;
    let dpr = number(&pipeline.options, "dpr").unwrap_or(1.0);
    let hint = decode_hint(&operations, source.oriented, dpr);
    Ok(plan::plan(
        &operations,
        source,
        hint,
        dpr,
        format,
        secondary,
    ))
}

/// Renders `source` and returns the encoded bytes.
pub fn render(source: &[u8], input: &RenderInput) -> Result<Vec<u8>> {
    render_as(source, input).map(|(bytes, _)| bytes)
}

/// Renders `source` and returns the encoded bytes with their format: `input.format`, or
/// `input.alpha_format` for a JPEG render with visible transparency.
pub fn render_as(source: &[u8], input: &RenderInput) -> Result<(Vec<u8>, OutputFormat)> {
    crate::render::cancel::scope(input.cancel, || render_in_scope(source, input))
}

fn render_in_scope(source: &[u8], input: &RenderInput) -> Result<(Vec<u8>, OutputFormat)> {
    let options = &input.pipeline.options;
    output::check(options, &input.pipeline.explicit_options, input.format)?;
    // Animated sources keep every frame in the formats that can animate.
    if crate::render::animate::applies(source, input.format) {
        let operations = operations(input.pipeline)?;
        let dpr = number(options, "dpr").unwrap_or(1.0);
        return crate::render::animate::render(source, input, &operations, dpr)
            .map(|bytes| (bytes, input.format));
    }
    let (image, icc) = decode_and_apply(source, input)?;
    input.cancel.check()?;
    let image = output::flatten_if_asked(image, options);
    let format = output::final_format(&image, input.format, input.alpha_format);
    let opts = encode_options(options, format, input.lossless, icc.as_deref());
    Ok((codecs::encode(&image, &opts)?, format))
}

/// The pixels of `input`'s pipeline on `source`, not encoded: the layer a composition's
/// `secondary_stack` puts on another image (its first frame, for an animation).
/// `input.format` is not used.
pub fn render_layer(source: &[u8], input: &RenderInput) -> Result<DynamicImage> {
    crate::render::cancel::scope(input.cancel, || {
        decode_and_apply(source, input).map(|(image, _)| image)
    })
}

fn operations(pipeline: &ResolvedPipeline) -> Result<Vec<Operation>> {
    pipeline
        .operations
        .iter()
        .map(Operation::from_resolved)
        .collect()
}

/// Decodes `source` (as small as the first resize allows) and runs every operation; the
/// image and the source's ICC profile.
fn decode_and_apply(source: &[u8], input: &RenderInput) -> Result<(DynamicImage, Option<Vec<u8>>)> {
    let operations = operations(input.pipeline)?;
    let dpr = number(&input.pipeline.options, "dpr").unwrap_or(1.0);
    let hint = decode_hint(&operations, input.oriented_size, dpr);
    input.cancel.check()?;
    let shared = input
        .shared_decode
        .and_then(|shared| Some((shared, codecs::shared_denominator(source, hint)?)));
    let decoded = match shared {
        Some((shared, denominator)) => shared(denominator, hint)?,
        None => Arc::new(codecs::decode(source, &input.limits, hint)?),
    };
    let (w, h) = (decoded.image.width(), decoded.image.height());
    let mut ctx = OpContext {
        dpr,
        limits: input.limits,
        subject_area: area(
            input.dynamic_metadata.get("subject_area"),
            decoded.scale,
            w,
            h,
        ),
        crop_area: area(input.dynamic_metadata.get("crop_area"), decoded.scale, w, h),
        multi_areas: multi_areas(
            input.dynamic_metadata.get("multi_areas"),
            decoded.scale,
            w,
            h,
        ),
        secondary: input.secondary,
        font: input.font,
    };
    let mut operations = operations.iter();
    // Pixels of our own are taken as they are; shared ones are read by the first operation,
    // which makes the image the others work on.
    let (mut image, icc) = match Arc::try_unwrap(decoded) {
        Ok(own) => (own.image, own.icc),
        Err(shared) => {
            input.cancel.check()?;
            let image = match operations.next() {
                Some(first) => first.apply_to(&shared.image, &mut ctx)?,
                None => shared.image.clone(),
            };
            (image, shared.icc.clone())
        }
    };
    for op in operations {
        input.cancel.check()?;
        image = op.apply(image, &mut ctx)?;
    }
    Ok((image, icc))
}

/// A reduced-size decode is safe when the first operation is a resize: nothing before it
/// needs full-resolution pixels. The hint is the resize's own target size.
///
/// An enlarging resize gives a hint too when drawing the source at the target size leaves the
/// resize with nothing to do: only vector sources (SVG) can be drawn larger, and they are then
/// as sharp as the output; every other decoder ignores a hint above the source size.
fn decode_hint(operations: &[Operation], oriented: (u32, u32), dpr: f64) -> Option<DecodeHint> {
    match operations.first() {
        Some(Operation::Resize(r)) => {
            let (tw, th) = r.target_size(oriented.0, oriented.1, dpr);
            let (tw, th) = (u32::try_from(tw).ok()?, u32::try_from(th).ok()?);
            let hint = DecodeHint {
                min_width: tw,
                min_height: th,
            };
            if tw < oriented.0 && th < oriented.1 {
                return Some(hint);
            }
            let drawn = codecs::svg_raster_size(oriented, (tw, th), true);
            let settled = (tw, th) != oriented
                && drawn.0 >= oriented.0
                && drawn.1 >= oriented.1
                && r.target_size(drawn.0, drawn.1, dpr) == (u64::from(tw), u64::from(th));
            settled.then_some(hint)
        }
        _ => None,
    }
}

pub(super) fn number(map: &Map<String, Value>, key: &str) -> Option<f64> {
    map.get(key).and_then(Value::as_f64)
}

/// An area from dynamic metadata in current pixels: absolute areas scale with the decode,
/// percentage areas are relative to the decoded size.
pub(super) fn area(v: Option<&Value>, scale: f64, w: u32, h: u32) -> Option<Area> {
    let obj = v?.as_object()?;
    let get = |k: &str| obj.get(k).and_then(Value::as_f64);
    let (x, y) = (get("x")?, get("y")?);
    let (aw, ah) = (get("width").unwrap_or(1.0), get("height").unwrap_or(1.0));
    if obj.get("percentage") == Some(&Value::Bool(true)) {
        let (fw, fh) = (f64::from(w) / 100.0, f64::from(h) / 100.0);
        Some(Area::new(x * fw, y * fh, aw * fw, ah * fh))
    } else {
        Some(Area::new(
            x * scale,
            y * scale,
            (aw * scale).max(1.0),
            (ah * scale).max(1.0),
        ))
    }
}

pub(super) fn multi_areas(v: Option<&Value>, scale: f64, w: u32, h: u32) -> BTreeMap<String, Area> {
    let mut out = BTreeMap::new();
    if let Some(obj) = v.and_then(Value::as_object) {
        for (name, inner) in obj {
            let a = inner.get("crop_area").or_else(|| inner.get("subject_area"));
            if let Some(a) = area(a, scale, w, h) {
                out.insert(name.clone(), a);
            }
        }
    }
    out
}

fn hex_color(v: Option<&Value>) -> Option<[u8; 3]> {
    crate::render::ops::parse_hex_color(v?.as_str()?)
}

/// Encoder settings from the effective stack options.
pub(super) fn encode_options<'a>(
    options: &Map<String, Value>,
    format: OutputFormat,
    lossless: bool,
    icc: Option<&'a [u8]>,
) -> EncodeOptions<'a> {
    let quality_key = match format {
        OutputFormat::Jpeg => Some("jpg.quality"),
        OutputFormat::Webp => Some("webp.quality"),
        OutputFormat::Avif => Some("avif.quality"),
        OutputFormat::Gif => Some("gif.quality"),
        OutputFormat::Png => Some("pngquant.quality"),
        // A BlurHash has no quality setting: its size and precision are fixed.
        OutputFormat::Blur => None,
    };
    let quality = quality_key
        .and_then(|key| number(options, key))
        .map_or(80, |q| q.clamp(1.0, 100.0) as u8);
    // JPEG and BlurHash flatten transparency onto the same colour, so a `.blur` placeholder
    // looks like the `.jpg` of the same URL.
    let background = hex_color(options.get("transparency.color"))
        .or_else(|| hex_color(options.get("jpg.transparency.color")))
        .unwrap_or([255, 255, 255]);
    EncodeOptions {
        format,
        quality,
        lossless,
        png_compression: number(options, "png.compression_level")
            .map_or(7, |l| l.clamp(0.0, 9.0) as u8),
        background,
        icc,
        progressive: output::interlaced(options),
    }
}
