//! What a render will cost, worked out from the image record and the resolved operations
//! before a single byte of the source is decoded: the size of every canvas the pipeline
//! makes, the size of the result, an estimate of the peak memory and of the CPU work.
//!
//! Render URLs are public, so their option values are hostile until checked: a dynamic
//! `resize-width-10000-height-10000-mode-absolute` to AVIF would otherwise decode, allocate
//! 400 MB of canvas and keep a core busy for minutes before any limit could say no. The plan
//! follows the same geometry as the operations (`ops/`), conservatively where an operation's
//! result depends on pixel content (`trim`, the `smart` crop): then the input size is the
//! upper bound. The operations keep their own checks at run time; the plan only refuses
//! early and tells the scheduler which renders are heavy.

use crate::render::codecs::{DecodeHint, OutputFormat};
use crate::render::error::{RenderError, Result};
use crate::render::limits::Limits;
use crate::render::ops::crop::CropMode;
use crate::render::ops::Operation;

/// Bytes per pixel of the widest buffer layout the operations use (RGBA8).
const RGBA: u64 = 4;

/// Work, in megapixel-equivalents, above which a render counts as heavy for scheduling: about
/// a full-size decode of a 12-MP photo, an operation over it and its encode.
pub const HEAVY_WORK: f64 = 40.0;

/// What the planner needs to know about the source, all of it from the image record.
#[derive(Debug, Clone, Copy)]
pub struct SourceShape {
    /// Size after EXIF orientation.
    pub oriented: (u32, u32),
    /// Whether the source is a JPEG (the only format decoded at reduced size).
    pub jpeg: bool,
    /// Size of the encoded source, which is held in memory during the render.
    pub bytes: u64,
    /// Frames of the source (1 for a still image); an animated output renders each.
    pub frames: u64,
}

/// The cost of one render.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Size of the decoded source (after DCT scaling for JPEG).
    pub decoded: (u64, u64),
    /// Size of the result.
    pub output: (u64, u64),
    /// Largest canvas any step makes, in pixels.
    pub largest_canvas: u64,
    /// Estimated peak memory, in bytes.
    pub peak_bytes: u64,
    /// Estimated CPU work, in megapixel-equivalents (one pass over one megapixel ≈ 1).
    pub work: f64,
    /// Frames rendered: the source's frames for an animated output, else 1.
    pub frames: u64,
}

impl Plan {
    /// Whether the scheduler should keep a thread free for others while this runs.
    pub fn is_heavy(&self) -> bool {
        self.work > HEAVY_WORK
    }

    /// Refuses a render whose result or memory would exceed `limits`, naming the figure.
    pub fn check(&self, limits: &Limits, format: OutputFormat) -> Result<()> {
        if self.frames > 1 {
            let side = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            crate::render::codecs::animation::check_frames(
                side(self.decoded.0),
                side(self.decoded.1),
                self.frames,
                limits,
            )?;
        }
        let (w, h) = self.output;
        let pixels = w.saturating_mul(h);
        let (max, what) = match format {
            OutputFormat::Avif => (
                limits.max_avif_output_pixels.min(limits.max_output_pixels),
                "an AVIF render",
            ),
            _ => (limits.max_output_pixels, "a render"),
        };
        if pixels > max {
            return Err(RenderError::TooLarge(format!(
                "the result would be {w}×{h} pixels ({pixels}), more than the limit of {max} for {what}"
            )));
        }
        if self.largest_canvas > limits.max_pixels {
            return Err(RenderError::TooLarge(format!(
                "an operation would make a canvas of {} pixels, more than the limit of {}",
                self.largest_canvas, limits.max_pixels
            )));
        }
        if self.peak_bytes > limits.max_render_memory {
            return Err(RenderError::TooLarge(format!(
                "the render would need about {} MiB of memory, more than the limit of {} MiB",
                self.peak_bytes.div_ceil(1 << 20),
                limits.max_render_memory >> 20
            )));
        }
        Ok(())
    }
}

/// Plans `operations` on `source`. `hint` is the reduced-size decode the pipeline will ask
/// for; `secondary` gives the oriented size of another image of the organization by hash.
pub fn plan(
    operations: &[Operation],
    source: SourceShape,
    hint: Option<DecodeHint>,
    dpr: f64,
    format: OutputFormat,
    secondary: &dyn Fn(&str) -> Option<(u32, u32)>,
) -> Plan {
    let (sw, sh) = source.oriented;
    let decoded = match hint {
        // The decoder picks its DCT scale the same way (oriented sizes on both sides here).
        Some(h) if source.jpeg && h.min_width > 0 && h.min_height > 0 => {
            match crate::render::codecs::scale_denominator(sw, sh, h.min_width, h.min_height) {
                Some(d) => (u64::from(sw.div_ceil(d)), u64::from(sh.div_ceil(d))),
                None => (u64::from(sw), u64::from(sh)),
            }
        }
        _ => (u64::from(sw), u64::from(sh)),
    };
    let full = u64::from(sw) * u64::from(sh);
    let decoded_px = decoded.0.saturating_mul(decoded.1);
    // The encoded source and the decoded buffer (a full-size one while DCT scaling runs in
    // libjpeg is not needed: it decodes into the scaled buffer directly).
    let mut peak = source.bytes.saturating_add(decoded_px.saturating_mul(RGBA));
    // Entropy decoding reads every coefficient even when scaled.
    let mut work = mp(full) * 0.5 + mp(decoded_px);
    let mut largest = decoded_px;
    let mut size = decoded;
    for op in operations {
        let step = step(op, size, dpr, secondary);
        let (in_px, out_px) = (px(size), px(step.output));
        largest = largest.max(out_px).max(step.extra_pixels);
        // The input and the output canvas live at the same time, plus any layer.
        let live = source
            .bytes
            .saturating_add(in_px.saturating_add(out_px).saturating_mul(RGBA))
            .saturating_add(step.extra_pixels.saturating_mul(RGBA));
        peak = peak.max(live);
        work += step.passes * mp(in_px.max(out_px)) + mp(step.extra_pixels);
        size = step.output;
    }
    let out_px = px(size);
    let (memory_per_pixel, work_per_mp) = encoder_cost(format);
    peak = peak.max(
        source
            .bytes
            .saturating_add(out_px.saturating_mul(RGBA + memory_per_pixel)),
    );
    work += work_per_mp * mp(out_px);
    // An animation is streamed: every frame costs the work above, but memory holds one frame
    // at a time plus the canvases the decoder composes onto and the encoder compares with.
    let frames = match format {
        OutputFormat::Gif | OutputFormat::Webp => source.frames.max(1),
        _ => 1,
    };
    if frames > 1 {
        work *= frames as f64;
        peak = peak
            .saturating_add(decoded_px.saturating_mul(2 * RGBA))
            .saturating_add(out_px.saturating_mul(3 * RGBA));
    }
    Plan {
        decoded,
        output: size,
        largest_canvas: largest,
        peak_bytes: peak,
        work,
        frames,
    }
}

/// One planned operation: its result size, any extra layer it allocates (composition), and
/// how many passes over its pixels it makes.
struct Step {
    output: (u64, u64),
    extra_pixels: u64,
    passes: f64,
}

fn step(
    op: &Operation,
    (w, h): (u64, u64),
    dpr: f64,
    secondary: &dyn Fn(&str) -> Option<(u32, u32)>,
) -> Step {
    let same = |passes: f64| Step {
        output: (w, h),
        extra_pixels: 0,
        passes,
    };
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    match op {
        Operation::Resize(r) => Step {
            output: r.target_size(clamp(w), clamp(h), dpr),
            extra_pixels: 0,
            passes: 1.0,
        },
        Operation::Crop(c) => {
            // An absolute crop keeps at most its box; the other modes keep at most the image.
            let output = match c.mode {
                CropMode::Absolute => {
                    let s = (c.scale / 100.0).clamp(0.0, 1.0);
                    let cw = ((f64::from(c.width) * s).ceil() as u64).clamp(1, w.max(1));
                    let ch = ((f64::from(c.height) * s).ceil() as u64).clamp(1, h.max(1));
                    (cw, ch)
                }
                _ => (w, h),
            };
            Step {
                output,
                extra_pixels: 0,
                passes: 0.2,
            }
        }
        Operation::Rotate(r) => {
            let a = r.angle.rem_euclid(360.0);
            let quarter = (a / 90.0).round();
            if (a - quarter * 90.0).abs() < 1e-9 {
                let swapped = quarter as i64 % 2 == 1;
                Step {
                    output: if swapped { (h, w) } else { (w, h) },
                    extra_pixels: 0,
                    passes: if quarter as i64 % 4 == 0 { 0.0 } else { 1.0 },
                }
            } else {
                let (c, s) = (a.to_radians().cos(), a.to_radians().sin());
                Step {
                    output: crate::render::ops::rotate::rotated_size(clamp(w), clamp(h), c, s),
                    extra_pixels: 0,
                    passes: 3.0,
                }
            }
        }
        // A quarter turn at most: the pixel count stays.
        Operation::Autorotate(_) => same(1.0),
        Operation::Dropshadow(d) => {
            let side = |v: u64| i64::try_from(v).unwrap_or(i64::MAX / 4);
            let (_, _, cw, ch) = d.canvas(side(w), side(h));
            let output = (cw, ch);
            Step {
                output,
                extra_pixels: px(output),
                passes: 2.0 + f64::from(d.sigma).min(10.0),
            }
        }
        Operation::Composition(c) => {
            let layer = if c.resize_to_primary {
                (w, h)
            } else if let Some(source) = c.layer_source() {
                let natural = secondary(&source).unwrap_or((1, 1));
                if c.width.is_some() || c.height.is_some() {
                    crate::render::ops::resize::Resize {
                        width: c.width,
                        height: c.height,
                        mode: c.resize_mode,
                        upscale: true,
                        upscale_dpr: true,
                        sharpen: false,
                    }
                    .target_size(natural.0, natural.1, 1.0)
                } else {
                    (u64::from(natural.0), u64::from(natural.1))
                }
            } else {
                (c.width.map_or(w, u64::from), c.height.map_or(h, u64::from))
            };
            let output = (w.max(layer.0), h.max(layer.1));
            Step {
                output,
                // The layer, and the secondary as decoded (at most the limits allow).
                extra_pixels: px(layer).saturating_mul(2),
                passes: 3.0,
            }
        }
        Operation::Blur { sigma } => same(2.0 + f64::from(*sigma).min(20.0) / 2.0),
        Operation::Sharpen(_) => same(4.0),
        Operation::Trim { .. } => same(1.0),
        Operation::Grayscale
        | Operation::Sepia
        | Operation::Alpha { .. }
        | Operation::Modulate { .. }
        | Operation::Multiply { .. }
        | Operation::Circlemask => same(1.0),
        // The text block is a layer of its own, as large as its box, or assumed as large as
        // the image when the font decides (the operation checks the real size against the
        // limits before drawing).
        Operation::Text(t) => Step {
            output: (w, h),
            extra_pixels: px(t.block_size(dpr).unwrap_or((w, h))).saturating_mul(2),
            passes: 2.0,
        },
    }
}

/// Extra memory per output pixel of the encoder, and its work per megapixel.
fn encoder_cost(format: OutputFormat) -> (u64, f64) {
    match format {
        OutputFormat::Jpeg => (2, 1.0),
        OutputFormat::Png => (4, 3.0),
        OutputFormat::Gif => (8, 4.0),
        OutputFormat::Webp => (8, 6.0),
        // rav1e keeps several planes and reference buffers per pixel and is by far the slowest.
        OutputFormat::Avif => (12, 40.0),
        // BlurHash makes the result opaque RGB (a copy when it has alpha) and a 16-bit linear
        // copy of that, reduces it to at most 128 px and encodes the tiny sample.
        OutputFormat::Blur => (9, 2.0),
    }
}

fn px((w, h): (u64, u64)) -> u64 {
    w.saturating_mul(h)
}

fn mp(pixels: u64) -> f64 {
    pixels as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::resolved::ResolvedOp;
    use serde_json::json;

    fn ops(list: serde_json::Value) -> Vec<Operation> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let op = ResolvedOp {
                    name: o["name"].as_str().unwrap().to_string(),
                    options: o["options"].as_object().cloned().unwrap_or_default(),
                };
                Operation::from_resolved(&op).unwrap()
            })
            .collect()
    }

    fn photo(w: u32, h: u32) -> SourceShape {
        SourceShape {
            oriented: (w, h),
            jpeg: true,
            bytes: 5_000_000,
            frames: 1,
        }
    }

    fn animation(w: u32, h: u32, frames: u64) -> SourceShape {
        SourceShape {
            oriented: (w, h),
            jpeg: false,
            bytes: 1_000_000,
            frames,
        }
    }

    fn none(_: &str) -> Option<(u32, u32)> {
        None
    }

    #[test]
    fn a_huge_absolute_resize_to_avif_is_refused_before_decoding() {
        let o = ops(
            json!([{"name":"resize","options":{"width":10000,"height":10000,"mode":"absolute"}}]),
        );
        let p = plan(&o, photo(400, 300), None, 1.0, OutputFormat::Avif, &none);
        assert_eq!(p.output, (10_000, 10_000));
        let err = p.check(&Limits::default(), OutputFormat::Avif).unwrap_err();
        assert!(
            matches!(err, RenderError::TooLarge(ref m) if m.contains("10000×10000")),
            "{err}"
        );
    }

    #[test]
    fn a_blur_of_a_result_beyond_the_output_limit_is_refused_like_an_image() {
        let o = ops(
            json!([{"name":"resize","options":{"width":10000,"height":10000,"mode":"absolute"}}]),
        );

        let p = plan(&o, photo(400, 300), None, 1.0, OutputFormat::Blur, &none);

        assert_eq!(p.output, (10_000, 10_000));
        let err = p.check(&Limits::default(), OutputFormat::Blur).unwrap_err();
        assert!(matches!(err, RenderError::TooLarge(_)), "{err}");
    }

    #[test]
    fn a_thumbnail_of_a_large_photo_is_light_and_within_the_limits() {
        let o = ops(json!([{"name":"resize","options":{"width":300}}]));
        let hint = Some(DecodeHint {
            min_width: 300,
            min_height: 225,
        });
        let p = plan(&o, photo(4000, 3000), hint, 1.0, OutputFormat::Jpeg, &none);
        assert_eq!(p.decoded, (500, 375));
        assert_eq!(p.output, (300, 225));
        assert!(!p.is_heavy(), "{p:?}");
        p.check(&Limits::default(), OutputFormat::Jpeg).unwrap();
    }

    #[test]
    fn rotating_a_100_mp_photo_before_resizing_is_estimated_at_two_full_canvases() {
        let o = ops(json!([
            {"name":"rotate","options":{"angle":90}},
            {"name":"resize","options":{"width":2000}}
        ]));
        let p = plan(
            &o,
            photo(12_000, 8_000),
            None,
            1.0,
            OutputFormat::Jpeg,
            &none,
        );
        let canvas = 12_000u64 * 8_000 * 4;
        assert!(p.peak_bytes >= 2 * canvas, "{p:?}");
        assert!(p.is_heavy());
        let tight = Limits {
            max_render_memory: 512 << 20,
            ..Limits::default()
        };
        let err = p.check(&tight, OutputFormat::Jpeg).unwrap_err();
        assert!(err.to_string().contains("MiB of memory"), "{err}");
    }

    #[test]
    fn an_animated_output_counts_every_frame_and_a_still_one_the_first() {
        let o = ops(json!([{"name":"resize","options":{"width":100}}]));
        let gif = plan(
            &o,
            animation(400, 300, 50),
            None,
            1.0,
            OutputFormat::Gif,
            &none,
        );
        let jpeg = plan(
            &o,
            animation(400, 300, 50),
            None,
            1.0,
            OutputFormat::Jpeg,
            &none,
        );

        assert_eq!((gif.frames, jpeg.frames), (50, 1));
        assert!(gif.work > 40.0 * jpeg.work, "{gif:?} {jpeg:?}");
        gif.check(&Limits::default(), OutputFormat::Gif).unwrap();
    }

    #[test]
    fn too_many_frames_or_pixels_over_all_frames_are_refused_before_decoding() {
        let o = ops(json!([{"name":"resize","options":{"width":100}}]));
        let limits = Limits {
            max_frames: 100,
            max_animation_pixels: 10_000_000,
            ..Limits::default()
        };
        let many = plan(
            &o,
            animation(10, 10, 101),
            None,
            1.0,
            OutputFormat::Webp,
            &none,
        );
        let large = plan(
            &o,
            animation(1000, 1000, 11),
            None,
            1.0,
            OutputFormat::Gif,
            &none,
        );
        let still = plan(
            &o,
            animation(1000, 1000, 11),
            None,
            1.0,
            OutputFormat::Png,
            &none,
        );

        let err = many.check(&limits, OutputFormat::Webp).unwrap_err();
        assert!(
            matches!(err, RenderError::TooLarge(ref m) if m.contains("101 frames")),
            "{err}"
        );
        let err = large.check(&limits, OutputFormat::Gif).unwrap_err();
        assert!(
            matches!(err, RenderError::TooLarge(ref m) if m.contains("11000000")),
            "{err}"
        );
        still.check(&limits, OutputFormat::Png).unwrap();
    }

    #[test]
    fn a_composition_canvas_follows_the_secondary_image() {
        let o = ops(
            json!([{"name":"composition","options":{"secondary_image":"abcdef","mode":"background"}}]),
        );
        let big = |_: &str| Some((20_000, 20_000));
        let p = plan(&o, photo(100, 100), None, 1.0, OutputFormat::Png, &big);
        assert_eq!(p.output, (20_000, 20_000));
        assert!(p.check(&Limits::default(), OutputFormat::Png).is_err());
    }

    #[test]
    fn an_absolute_crop_bounds_the_canvases_after_it() {
        let o = ops(json!([
            {"name":"crop","options":{"width":100,"height":50}},
            {"name":"rotate","options":{"angle":45}}
        ]));
        let p = plan(
            &o,
            photo(10_000, 8_000),
            None,
            1.0,
            OutputFormat::Png,
            &none,
        );
        assert!(p.output.0 < 200 && p.output.1 < 200, "{p:?}");
    }
}
