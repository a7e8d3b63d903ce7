//! Rendering an animated source to an animated output (`gif`, `webp`). Frames are streamed:
//! one is decoded (composed onto the canvas by the codec layer), run through the operations
//! and handed to the encoder before the next is read, so memory stays at a few canvases
//! however many frames there are. The geometry is decided once, on the first frame: crop
//! rectangles (anchors, focus areas, smart crops) and trims are computed there and applied
//! unchanged to every later frame, so the picture does not jump between frames. Resizes,
//! rotations and compositions depend only on the frame size, which every frame shares.
//! Delays and the loop count of the source are kept.

use std::cell::RefCell;
use std::collections::HashMap;

use image::DynamicImage;

use crate::render::codecs::animation::{self, Animation, AnimationEncoder};
use crate::render::codecs::OutputFormat;
use crate::render::error::{RenderError, Result};
use crate::render::ops::crop::Rect;
use crate::render::ops::{trim, OpContext, Operation};
use crate::render::pipeline::{self, RenderInput};

/// Whether a render of `source` to `format` is an animated render.
pub fn applies(source: &[u8], format: OutputFormat) -> bool {
    matches!(format, OutputFormat::Gif | OutputFormat::Webp) && animation::is_animation(source)
}

/// A region decided on the first frame.
#[derive(Debug, Clone, Copy)]
struct Cut {
    rect: Rect,
    /// The crop used the image's own crop area, which later crops then no longer see.
    consumed_crop_area: bool,
}

/// Renders every frame of the animated `source` through `operations` and encodes them as
/// `input.format`.
///
/// Errors: `TooLarge` when the animation exceeds the frame limits (before decoding),
/// `Unprocessable` for damaged frames, and whatever an operation or the encoder reports.
pub fn render(
    source: &[u8],
    input: &RenderInput,
    operations: &[Operation],
    dpr: f64,
) -> Result<Vec<u8>> {
    let Some(mut frames) = Animation::open(source, &input.limits)? else {
        return Err(RenderError::Internal(
            "the source is not an animation".to_owned(),
        ));
    };
    input.cancel.check()?;
    // A composition layer is decoded once for the whole animation.
    let layers: RefCell<HashMap<String, DynamicImage>> = RefCell::new(HashMap::new());
    let secondary = |hash: &str| -> Result<DynamicImage> {
        if let Some(layer) = layers.borrow().get(hash) {
            return Ok(layer.clone());
        }
        let layer = (input.secondary)(hash)?;
        layers.borrow_mut().insert(hash.to_owned(), layer.clone());
        Ok(layer)
    };
    let icc = frames.icc.take();
    let opts = pipeline::encode_options(
        &input.pipeline.options,
        input.format,
        input.lossless,
        icc.as_deref(),
    );
    let mut cuts: Vec<Option<Cut>> = vec![None; operations.len()];
    let mut encoder: Option<AnimationEncoder> = None;
    let mut first = true;
    while let Some(frame) = frames.next_frame()? {
        input.cancel.check()?;
        let (w, h) = (frame.image.width(), frame.image.height());
        let meta = input.dynamic_metadata;
        let mut ctx = OpContext {
            dpr,
            limits: input.limits,
            subject_area: pipeline::area(meta.get("subject_area"), 1.0, w, h),
            crop_area: pipeline::area(meta.get("crop_area"), 1.0, w, h),
            multi_areas: pipeline::multi_areas(meta.get("multi_areas"), 1.0, w, h),
            secondary: &secondary,
            font: input.font,
        };
        let mut image = frame.image;
        for (op, cut) in operations.iter().zip(cuts.iter_mut()) {
            input.cancel.check()?;
            image = apply(op, image, &mut ctx, cut, first)?;
        }
        input.cancel.check()?;
        let image = crate::render::output::flatten_if_asked(image, &input.pipeline.options);
        let encoder = match &mut encoder {
            Some(encoder) => encoder,
            None => encoder.insert(AnimationEncoder::new(
                &opts,
                image.width(),
                image.height(),
                frames.plays,
            )?),
        };
        encoder.add(&image, frame.delay_ms)?;
        first = false;
    }
    input.cancel.check()?;
    match encoder {
        Some(encoder) => encoder.finish(),
        None => Err(RenderError::Unprocessable(
            "the animation has no frame that could be decoded".to_owned(),
        )),
    }
}

/// Runs one operation on one frame. Crops and trims record their region on the first frame
/// (`first`) and reuse it on the others; every other operation runs as on a still image.
fn apply(
    op: &Operation,
    image: DynamicImage,
    ctx: &mut OpContext,
    cut: &mut Option<Cut>,
    first: bool,
) -> Result<DynamicImage> {
    let decided = match op {
        Operation::Crop(crop) if first => {
            let (rect, consumed_crop_area) = crop.region(&image, ctx);
            Some(Cut {
                rect,
                consumed_crop_area,
            })
        }
        Operation::Trim { fuzzy } if first => {
            let rect = trim::bounds(&image, *fuzzy).map_or(
                Rect {
                    x: 0,
                    y: 0,
                    width: image.width(),
                    height: image.height(),
                },
                |(x, y, width, height)| Rect {
                    x,
                    y,
                    width,
                    height,
                },
            );
            Some(Cut {
                rect,
                consumed_crop_area: false,
            })
        }
        Operation::Crop(_) | Operation::Trim { .. } => *cut,
        other => return other.apply(image, ctx),
    };
    let Some(decided) = decided else {
        return Err(RenderError::Internal(
            "a crop of the first frame was not recorded".to_owned(),
        ));
    };
    *cut = Some(decided);
    let Rect {
        x,
        y,
        width,
        height,
    } = decided.rect;
    let whole = (x, y, width, height) == (0, 0, image.width(), image.height());
    // A trim that keeps everything leaves the areas alone, as on a still image.
    if whole && matches!(op, Operation::Trim { .. }) {
        return Ok(image);
    }
    let out = if whole {
        image
    } else {
        image.crop_imm(x, y, width, height)
    };
    ctx.crop_areas(x, y, width, height);
    if decided.consumed_crop_area {
        ctx.crop_area = None;
    }
    Ok(out)
}
