//! Animated sources and outputs, one frame at a time. [`Animation`] opens an animated GIF,
//! APNG or WebP, checks its canvas and frame count against [`Limits`] before any pixel is
//! decoded, and hands out each frame composed onto the full canvas as the format specifies
//! (GIF disposal, APNG dispose and blend operations, WebP blending), with its delay. The
//! `image` decoders do that composition and keep only the canvas they compose on, so a long
//! animation never lives in memory at once. [`AnimationEncoder`] writes frames as they come:
//! GIF through the `gif` crate (a local palette per frame), WebP through libwebp's
//! `WebPAnimEncoder`. Both are deterministic and stop when the render is cancelled.

use std::ffi::c_int;
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::codecs::gif::GifDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::{LoopCount, Orientation};
use image::{AnimationDecoder, DynamicImage, Frames, ImageDecoder};
use libwebp_sys as ffi;

use super::container;
use super::decode::{check_dimensions, map_error};
use super::encode::{encoder_error, EncodeOptions, Output, WEBP_MAX_SIDE};
use super::format::{sniff, OutputFormat, SourceFormat};
use crate::render::error::{RenderError, Result};
use crate::render::limits::Limits;

/// How often an animation plays: `None` forever, `Some(n)` n times in all.
pub type Plays = Option<u32>;

/// Whether `bytes` is an animation (GIF, APNG or WebP with at least two frames).
pub fn is_animation(bytes: &[u8]) -> bool {
    // Stops counting at the second frame.
    sniff(bytes).is_some_and(|format| container::is_animated(format, bytes))
}

/// Refuses an animation whose frame count or total pixels exceed `limits`.
pub fn check_frames(width: u32, height: u32, frames: u64, limits: &Limits) -> Result<()> {
    if frames > u64::from(limits.max_frames) {
        return Err(RenderError::TooLarge(format!(
            "the animation has {frames} frames; at most {} are rendered",
            limits.max_frames
        )));
    }
    let total = u64::from(width)
        .saturating_mul(u64::from(height))
        .saturating_mul(frames);
    if total > limits.max_animation_pixels {
        return Err(RenderError::TooLarge(format!(
            "the animation is {frames} frames of {width}x{height} = {total} pixels; at most {} \
             pixels over all frames are rendered",
            limits.max_animation_pixels
        )));
    }
    Ok(())
}

/// An animated source being read frame by frame.
pub struct Animation<'a> {
    pub format: SourceFormat,
    /// The canvas every frame is composed onto, before orientation.
    pub width: u32,
    pub height: u32,
    /// Frames the container declares.
    pub frames: u64,
    pub plays: Plays,
    pub icc: Option<Vec<u8>>,
    orientation: Orientation,
    iter: Frames<'a>,
    read: u64,
}

/// One composed frame: the whole canvas (oriented, RGBA) and how long it shows.
pub struct AnimationFrame {
    pub image: DynamicImage,
    pub delay_ms: u32,
}

impl<'a> Animation<'a> {
    /// Opens `bytes` as an animation; `None` when it is not one. Errors: `TooLarge` beyond
    /// `limits` (checked from the headers), `Unprocessable` for damaged headers.
    pub fn open(bytes: &'a [u8], limits: &Limits) -> Result<Option<Animation<'a>>> {
        let Some(format) = sniff(bytes) else {
            return Ok(None);
        };
        let frames = container::frame_count(format, bytes);
        if frames < 2
            || !matches!(
                format,
                SourceFormat::Gif | SourceFormat::Png | SourceFormat::Webp
            )
        {
            return Ok(None);
        }
        if format == SourceFormat::Webp && !container::webp_frames_consistent(bytes) {
            return Err(inconsistent_webp());
        }
        let opened = catch_unwind(AssertUnwindSafe(|| {
            open_guarded(bytes, format, frames, limits)
        }));
        match opened {
            Ok(result) => result.map(Some),
            Err(_) => Err(corrupt(format)),
        }
    }

    /// The next frame, `None` after the last. Errors: `Unprocessable` for damaged frame data.
    pub fn next_frame(&mut self) -> Result<Option<AnimationFrame>> {
        let format = self.format;
        let next = catch_unwind(AssertUnwindSafe(|| self.iter.next()));
        let frame = match next {
            Err(_) => return Err(corrupt(format)),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(map_error(format, e)),
            Ok(Some(Ok(frame))) => frame,
        };
        self.read += 1;
        // The decoders stop at the count the container declares; this only guards a decoder
        // that would read on.
        if self.read > self.frames {
            return Ok(None);
        }
        let (numer, denom) = frame.delay().numer_denom_ms();
        let delay_ms = if denom == 0 {
            0
        } else {
            (u64::from(numer) + u64::from(denom) / 2) / u64::from(denom)
        };
        let mut image = DynamicImage::ImageRgba8(frame.into_buffer());
        image.apply_orientation(self.orientation);
        Ok(Some(AnimationFrame {
            image,
            delay_ms: u32::try_from(delay_ms).unwrap_or(u32::MAX),
        }))
    }

    /// The canvas size after orientation.
    pub fn oriented_size(&self) -> (u32, u32) {
        if super::decode::swaps_axes(self.orientation) {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// A WebP frame whose bitstream declares another size than the frame.
pub(crate) fn inconsistent_webp() -> RenderError {
    RenderError::Unprocessable(
        "the WebP data is corrupt: a frame's image data does not match the frame's size".to_owned(),
    )
}

fn corrupt(format: SourceFormat) -> RenderError {
    RenderError::Unprocessable(format!(
        "the {} animation is corrupt and could not be decoded",
        format.name()
    ))
}

/// The `image` limits of an animation: its frames and the canvases they are composed onto.
fn image_limits(width: u32, height: u32, limits: &Limits) -> image::Limits {
    let mut out = image::Limits::default();
    out.max_image_width = Some(limits.max_dimension);
    out.max_image_height = Some(limits.max_dimension);
    let canvas = u64::from(width).saturating_mul(u64::from(height));
    out.max_alloc = Some(canvas.saturating_mul(16).saturating_add(16 << 20));
    out
}

fn open_guarded<'a>(
    bytes: &'a [u8],
    format: SourceFormat,
    frames: u64,
    limits: &Limits,
) -> Result<Animation<'a>> {
    let checked = |(width, height): (u32, u32)| -> Result<image::Limits> {
        check_dimensions(width, height, limits)?;
        check_frames(width, height, frames, limits)?;
        Ok(image_limits(width, height, limits))
    };
    let err = |e| map_error(format, e);
    let loops = |count: LoopCount| match count {
        LoopCount::Infinite => None,
        LoopCount::Finite(n) => Some(n.get()),
    };
    let (width, height, plays, icc, orientation, iter) = match format {
        SourceFormat::Gif => {
            let mut decoder = GifDecoder::new(Cursor::new(bytes)).map_err(err)?;
            let (w, h) = decoder.dimensions();
            decoder.set_limits(checked((w, h))?).map_err(err)?;
            // `image` reads a missing loop extension as "forever"; it means "play once".
            let plays = match container::gif_repeat(bytes) {
                None => Some(1),
                Some(0) => None,
                Some(n) => Some(u32::from(n) + 1),
            };
            (
                w,
                h,
                plays,
                None,
                Orientation::NoTransforms,
                decoder.into_frames(),
            )
        }
        SourceFormat::Png => {
            let header = PngDecoder::new(Cursor::new(bytes)).map_err(err)?;
            let (w, h) = header.dimensions();
            let mut decoder =
                PngDecoder::with_limits(Cursor::new(bytes), checked((w, h))?).map_err(err)?;
            let icc = decoder.icc_profile().ok().flatten();
            let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
            let apng = decoder.apng().map_err(err)?;
            let plays = loops(apng.loop_count());
            (w, h, plays, icc, orientation, apng.into_frames())
        }
        _ => {
            let mut decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(err)?;
            // Disposing a frame clears its rectangle to transparent, as libwebp and browsers
            // do; without a colour set, image-webp would not clear it at all.
            decoder
                .set_background_color(image::Rgba([0, 0, 0, 0]))
                .map_err(err)?;
            let (w, h) = decoder.dimensions();
            decoder.set_limits(checked((w, h))?).map_err(err)?;
            let icc = decoder.icc_profile().ok().flatten();
            let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
            let plays = loops(decoder.loop_count());
            (w, h, plays, icc, orientation, decoder.into_frames())
        }
    };
    Ok(Animation {
        format,
        width,
        height,
        frames,
        plays,
        icc,
        orientation,
        iter,
        read: 0,
    })
}

/// Writes an animated GIF or WebP frame by frame. Every frame must have the size given to
/// [`AnimationEncoder::new`].
pub struct AnimationEncoder(Inner);

enum Inner {
    Gif {
        encoder: gif::Encoder<Output>,
        speed: i32,
        width: u16,
        height: u16,
    },
    Webp(WebpAnimation),
}

impl AnimationEncoder {
    /// Starts an animation of `width`×`height` frames that plays `plays` times.
    ///
    /// Errors: `Invalid` when the size is empty or beyond what the format can describe,
    /// `Unsupported` for formats that cannot animate.
    pub fn new(opts: &EncodeOptions, width: u32, height: u32, plays: Plays) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(RenderError::Invalid(format!(
                "the output image would be empty ({width}x{height})"
            )));
        }
        match opts.format {
            OutputFormat::Gif => {
                let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
                    return Err(RenderError::Invalid(
                        "GIF images cannot be larger than 65535 pixels per side".to_owned(),
                    ));
                };
                let mut encoder = gif::Encoder::new(Output(Vec::new()), w, h, &[])
                    .map_err(|e| encoder_error(OutputFormat::Gif, e))?;
                let repeat = match plays {
                    None => Some(gif::Repeat::Infinite),
                    Some(0 | 1) => None,
                    Some(n) => Some(gif::Repeat::Finite(
                        u16::try_from(n - 1).unwrap_or(u16::MAX),
                    )),
                };
                if let Some(repeat) = repeat {
                    encoder
                        .set_repeat(repeat)
                        .map_err(|e| encoder_error(OutputFormat::Gif, e))?;
                }
                // The same palette effort as a still GIF of this quality.
                let quality = i32::from(opts.quality.clamp(1, 100));
                let speed = (30 - (quality - 1) * 29 / 99).clamp(1, 30);
                Ok(AnimationEncoder(Inner::Gif {
                    encoder,
                    speed,
                    width: w,
                    height: h,
                }))
            }
            OutputFormat::Webp => Ok(AnimationEncoder(Inner::Webp(WebpAnimation::new(
                opts, width, height, plays,
            )?))),
            other => Err(RenderError::Unsupported(format!(
                "{} outputs cannot be animated",
                other.ext()
            ))),
        }
    }

    /// Adds one frame shown for `delay_ms`.
    pub fn add(&mut self, frame: &DynamicImage, delay_ms: u32) -> Result<()> {
        match &mut self.0 {
            Inner::Gif {
                encoder,
                speed,
                width,
                height,
            } => {
                if (frame.width(), frame.height()) != (u32::from(*width), u32::from(*height)) {
                    return Err(RenderError::Internal(
                        "an animation frame changed size".to_owned(),
                    ));
                }
                let mut rgba = frame.to_rgba8().into_raw();
                let mut gif_frame = gif::Frame::from_rgba_speed(*width, *height, &mut rgba, *speed);
                // GIF counts in hundredths of a second.
                gif_frame.delay =
                    u16::try_from(delay_ms.saturating_add(5) / 10).unwrap_or(u16::MAX);
                // Every frame is a whole composed canvas: clearing it after its time makes
                // its transparent pixels show the background, not the frame before.
                gif_frame.dispose = gif::DisposalMethod::Background;
                encoder
                    .write_frame(&gif_frame)
                    .map_err(|e| encoder_error(OutputFormat::Gif, e))
            }
            Inner::Webp(webp) => webp.add(frame, delay_ms),
        }
    }

    /// Ends the animation and returns the file.
    pub fn finish(self) -> Result<Vec<u8>> {
        match self.0 {
            Inner::Gif { encoder, .. } => Ok(encoder
                .into_inner()
                .map_err(|e| encoder_error(OutputFormat::Gif, e))?
                .0),
            Inner::Webp(webp) => webp.finish(),
        }
    }
}

/// libwebp's animation encoder, freed whatever happens.
struct WebpAnimation {
    encoder: *mut ffi::WebPAnimEncoder,
    config: ffi::WebPConfig,
    width: u32,
    height: u32,
    timestamp_ms: i64,
    icc: Option<Vec<u8>>,
}

impl WebpAnimation {
    fn new(opts: &EncodeOptions, width: u32, height: u32, plays: Plays) -> Result<Self> {
        if width > WEBP_MAX_SIDE || height > WEBP_MAX_SIDE {
            return Err(RenderError::Invalid(format!(
                "WebP images cannot be larger than {WEBP_MAX_SIDE} pixels per side"
            )));
        }
        let mut config = ffi::WebPConfig::new().map_err(|()| internal("libwebp configuration"))?;
        if opts.lossless {
            config.lossless = 1;
            config.quality = 75.0;
        } else {
            config.lossless = 0;
            config.quality = f32::from(opts.quality.clamp(1, 100));
            config.alpha_compression = 1;
        }
        config.thread_level = 0;
        // SAFETY: the options are initialised by libwebp before use; the sizes fit a c_int
        // (checked above); a null encoder is handled.
        let encoder = unsafe {
            let mut options: ffi::WebPAnimEncoderOptions = std::mem::zeroed();
            if ffi::WebPAnimEncoderOptionsInitInternal(
                &mut options,
                ffi::WEBP_MUX_ABI_VERSION as c_int,
            ) == 0
            {
                return Err(internal("libwebp animation options"));
            }
            // 0 is forever in WebP.
            options.anim_params.loop_count =
                plays.map_or(0, |n| c_int::try_from(n.min(65_535)).unwrap_or(65_535));
            ffi::WebPAnimEncoderNewInternal(
                width as c_int,
                height as c_int,
                &options,
                ffi::WEBP_MUX_ABI_VERSION as c_int,
            )
        };
        if encoder.is_null() {
            return Err(internal(
                "libwebp could not start the animation (out of memory)",
            ));
        }
        Ok(WebpAnimation {
            encoder,
            config,
            width,
            height,
            timestamp_ms: 0,
            icc: opts.icc.map(<[u8]>::to_vec),
        })
    }

    fn add(&mut self, frame: &DynamicImage, delay_ms: u32) -> Result<()> {
        if (frame.width(), frame.height()) != (self.width, self.height) {
            return Err(internal("an animation frame changed size"));
        }
        let rgba = frame.to_rgba8();
        let timestamp = c_int::try_from(self.timestamp_ms)
            .map_err(|_| RenderError::Invalid("the animation is too long for WebP".to_owned()))?;
        // SAFETY: the picture is initialised by libwebp and freed by its guard; the import
        // reads `height` rows of `width * 4` bytes from `rgba`, which holds exactly that; the
        // encoder is valid until drop.
        unsafe {
            let mut picture = super::webp::Picture(
                ffi::WebPPicture::new().map_err(|()| internal("libwebp picture"))?,
            );
            picture.0.use_argb = 1;
            picture.0.width = self.width as c_int;
            picture.0.height = self.height as c_int;
            if ffi::WebPPictureImportRGBA(&mut picture.0, rgba.as_ptr(), (self.width * 4) as c_int)
                == 0
            {
                return Err(internal(
                    "libwebp could not take the pixels (out of memory)",
                ));
            }
            picture.0.progress_hook = Some(super::webp::progress);
            if ffi::WebPAnimEncoderAdd(self.encoder, &mut picture.0, timestamp, &self.config) == 0 {
                return Err(self.failure());
            }
        }
        self.timestamp_ms += i64::from(delay_ms);
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>> {
        let timestamp = c_int::try_from(self.timestamp_ms)
            .map_err(|_| RenderError::Invalid("the animation is too long for WebP".to_owned()))?;
        let mut data = ffi::WebPData::default();
        // SAFETY: the encoder is valid; a null frame marks the end; `data` is filled by
        // libwebp and cleared after its bytes were copied.
        let bytes = unsafe {
            if ffi::WebPAnimEncoderAdd(
                self.encoder,
                std::ptr::null_mut(),
                timestamp,
                std::ptr::null(),
            ) == 0
                || ffi::WebPAnimEncoderAssemble(self.encoder, &mut data) == 0
            {
                return Err(self.failure());
            }
            let bytes = if data.bytes.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(data.bytes, data.size).to_vec()
            };
            ffi::WebPDataClear(&mut data);
            bytes
        };
        match &self.icc {
            Some(icc) => Ok(
                container::webp_with_icc(&bytes, icc, self.width, self.height, true)
                    .unwrap_or(bytes),
            ),
            None => Ok(bytes),
        }
    }

    fn failure(&self) -> RenderError {
        if crate::render::cancel::stop_requested() {
            return RenderError::Cancelled;
        }
        // SAFETY: the encoder is valid; libwebp returns a static or encoder-owned C string.
        let message = unsafe {
            let text = ffi::WebPAnimEncoderGetError(self.encoder);
            if text.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(text)
                    .to_string_lossy()
                    .into_owned()
            }
        };
        internal(format!("libwebp failed: {message}"))
    }
}

impl Drop for WebpAnimation {
    fn drop(&mut self) {
        // SAFETY: the encoder came from `WebPAnimEncoderNewInternal` and is deleted once.
        unsafe { ffi::WebPAnimEncoderDelete(self.encoder) }
    }
}

fn internal(m: impl Into<String>) -> RenderError {
    RenderError::Internal(format!("the webp animation encoder: {}", m.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::cancel::{scope, Cancel};
    use crate::render::codecs::testdata;

    fn options(format: OutputFormat) -> EncodeOptions<'static> {
        EncodeOptions {
            format,
            quality: 80,
            lossless: false,
            png_compression: 7,
            background: [255, 255, 255],
            icc: None,
            progressive: false,
        }
    }

    fn frames() -> Vec<DynamicImage> {
        (0..3u8)
            .map(|i| {
                DynamicImage::ImageRgba8(image::RgbaImage::from_fn(24, 16, |x, y| {
                    image::Rgba([x as u8 * 10, y as u8 * 15, i * 80, 255 - i * 60])
                }))
            })
            .collect()
    }

    fn encode_all(format: OutputFormat) -> Result<Vec<u8>> {
        let mut encoder = AnimationEncoder::new(&options(format), 24, 16, Some(2))?;
        for frame in frames() {
            encoder.add(&frame, 70)?;
        }
        encoder.finish()
    }

    #[test]
    fn the_animation_encoders_are_deterministic() {
        for format in [OutputFormat::Gif, OutputFormat::Webp] {
            let first = encode_all(format).unwrap();
            let second = encode_all(format).unwrap();
            assert!(first == second, "{format:?} differs between runs");
            assert!(is_animation(&first), "{format:?}");
        }
    }

    #[test]
    fn a_cancelled_render_stops_the_animation_encoders() {
        let cancel = Cancel::new();
        cancel.cancel();
        for format in [OutputFormat::Gif, OutputFormat::Webp] {
            let result = scope(&cancel, || encode_all(format));
            assert!(
                matches!(result, Err(RenderError::Cancelled)),
                "{format:?}: {result:?}"
            );
        }
    }

    #[test]
    fn frames_are_counted_and_limited_before_any_is_decoded() {
        let gif = testdata::gif(30, 20, 5);
        let tight = Limits {
            max_frames: 4,
            ..Limits::default()
        };
        let small = Limits {
            max_animation_pixels: 30 * 20 * 4,
            ..Limits::default()
        };

        for limits in [tight, small] {
            let result = Animation::open(&gif, &limits).map(|a| a.is_some());
            assert!(
                matches!(result, Err(RenderError::TooLarge(_))),
                "{result:?}"
            );
        }
        let mut animation = Animation::open(&gif, &Limits::default()).unwrap().unwrap();
        assert_eq!(
            (animation.width, animation.height, animation.frames),
            (30, 20, 5)
        );
        let mut read = 0;
        while let Some(frame) = animation.next_frame().unwrap() {
            assert_eq!((frame.image.width(), frame.image.height()), (30, 20));
            read += 1;
        }
        assert_eq!(read, 5);
    }

    #[test]
    fn still_images_are_not_animations() {
        assert!(!is_animation(&testdata::gif(30, 20, 1)));
        assert!(!is_animation(&testdata::webp(30, 20, false, false)));
        assert!(
            Animation::open(&testdata::gif(30, 20, 1), &Limits::default())
                .unwrap()
                .is_none()
        );
    }
}
