//! The WebP encoder: libwebp, called directly so that a cancelled render stops it. libwebp
//! calls a progress hook many times while it encodes; ours answers "stop" once the render
//! running on this thread was cancelled ([`crate::render::cancel::stop_requested`]), and
//! libwebp then returns at once with `VP8_ENC_ERROR_USER_ABORT`. The `webp` crate's
//! `encode_advanced` makes the same calls without the hook, so the bytes are the same.

use crate::render::error::{RenderError, Result};
use libwebp_sys as ffi;
use std::ffi::c_int;

/// Pixels to encode: 8-bit RGB or RGBA rows without padding.
pub enum Layout {
    Rgb,
    Rgba,
}

/// Encodes `pixels` (`width`×`height`, `layout`) with `config`, stopping early when the
/// render on this thread is cancelled.
pub fn encode(
    pixels: &[u8],
    layout: Layout,
    width: u32,
    height: u32,
    config: &ffi::WebPConfig,
) -> Result<Vec<u8>> {
    let channels = match layout {
        Layout::Rgb => 3,
        Layout::Rgba => 4,
    };
    let expected = (width as usize)
        .saturating_mul(height as usize)
        .saturating_mul(channels);
    let (Ok(w), Ok(h), Ok(stride)) = (
        c_int::try_from(width),
        c_int::try_from(height),
        c_int::try_from(width as usize * channels),
    ) else {
        return Err(internal("the image is too large for libwebp"));
    };
    if pixels.len() < expected || width == 0 || height == 0 {
        return Err(internal("the pixel buffer does not match the image size"));
    }
    // SAFETY: `config` is a valid configuration; the picture and the memory writer are
    // initialised by libwebp before use and freed by the guards below on every path; the
    // import reads `height` rows of `stride` bytes from `pixels`, which holds at least that
    // many (checked above); `custom_ptr` points to the writer, which outlives `WebPEncode`.
    unsafe {
        if ffi::WebPValidateConfig(config) == 0 {
            return Err(internal("invalid libwebp configuration"));
        }
        let mut picture =
            Picture(ffi::WebPPicture::new().map_err(|()| internal("libwebp picture"))?);
        picture.0.use_argb = 1;
        picture.0.width = w;
        picture.0.height = h;
        let imported = match layout {
            Layout::Rgb => ffi::WebPPictureImportRGB(&mut picture.0, pixels.as_ptr(), stride),
            Layout::Rgba => ffi::WebPPictureImportRGBA(&mut picture.0, pixels.as_ptr(), stride),
        };
        if imported == 0 {
            return Err(internal(
                "libwebp could not take the pixels (out of memory)",
            ));
        }
        let mut writer = Writer(std::mem::zeroed());
        ffi::WebPMemoryWriterInit(&mut writer.0);
        picture.0.writer = Some(ffi::WebPMemoryWrite);
        picture.0.custom_ptr = (&mut writer.0 as *mut ffi::WebPMemoryWriter).cast();
        picture.0.progress_hook = Some(progress);
        if ffi::WebPEncode(config, &mut picture.0) == 0 {
            if crate::render::cancel::stop_requested() {
                return Err(RenderError::Cancelled);
            }
            return Err(internal(format!(
                "libwebp failed: {:?}",
                picture.0.error_code
            )));
        }
        if writer.0.mem.is_null() {
            return Ok(Vec::new());
        }
        Ok(std::slice::from_raw_parts(writer.0.mem, writer.0.size).to_vec())
    }
}

/// libwebp's progress hook: 0 stops the encode. It must not unwind into C, and
/// `stop_requested` cannot panic.
pub(super) unsafe extern "C" fn progress(
    _percent: c_int,
    _picture: *const ffi::WebPPicture,
) -> c_int {
    c_int::from(!crate::render::cancel::stop_requested())
}

/// Frees the picture's buffers whatever happens.
pub(super) struct Picture(pub(super) ffi::WebPPicture);

impl Drop for Picture {
    fn drop(&mut self) {
        // SAFETY: the picture was initialised by `WebPPicture::new`; freeing it twice or
        // freeing an empty one is allowed by libwebp.
        unsafe { ffi::WebPPictureFree(&mut self.0) }
    }
}

/// Frees the encoded bytes whatever happens (they are copied out first).
struct Writer(ffi::WebPMemoryWriter);

impl Drop for Writer {
    fn drop(&mut self) {
        // SAFETY: the writer was initialised by `WebPMemoryWriterInit` before any use; a
        // zeroed one (an early return before that) holds a null pointer, which it frees as
        // a no-op.
        unsafe { ffi::WebPMemoryWriterClear(&mut self.0) }
    }
}

fn internal(m: impl Into<String>) -> RenderError {
    RenderError::Internal(format!("the webp encoder: {}", m.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::codecs::testdata;

    /// The `webp` crate's `encode_advanced`: the same calls without the progress hook.
    fn reference(pixels: &[u8], rgba: bool, w: u32, h: u32, config: &ffi::WebPConfig) -> Vec<u8> {
        let encoder = if rgba {
            webp::Encoder::from_rgba(pixels, w, h)
        } else {
            webp::Encoder::from_rgb(pixels, w, h)
        };
        encoder.encode_advanced(config).unwrap().to_vec()
    }

    #[test]
    fn the_bytes_equal_those_of_the_encoder_without_the_hook() {
        let rgba = testdata::translucent(96, 64);
        let rgb = image::DynamicImage::ImageRgba8(rgba.clone()).to_rgb8();
        for lossless in [false, true] {
            let mut config = ffi::WebPConfig::new().unwrap();
            config.lossless = i32::from(lossless);
            config.quality = 75.0;
            config.thread_level = 0;
            let ours = encode(rgba.as_raw(), Layout::Rgba, 96, 64, &config).unwrap();
            assert_eq!(ours, reference(rgba.as_raw(), true, 96, 64, &config));
            let ours = encode(rgb.as_raw(), Layout::Rgb, 96, 64, &config).unwrap();
            assert_eq!(ours, reference(rgb.as_raw(), false, 96, 64, &config));
        }
    }

    #[test]
    fn a_short_pixel_buffer_is_refused_not_read_past() {
        let config = ffi::WebPConfig::new().unwrap();
        assert!(encode(&[0; 11], Layout::Rgb, 2, 2, &config).is_err());
        assert!(encode(&[], Layout::Rgba, 0, 0, &config).is_err());
    }
}
