//! AVIF and HEIC/HEIF sources, decoded by the system's libheif (Debian's `libheif1`, with
//! libde265 for HEVC and dav1d/libaom for AV1). Built only with the `heif` feature, since it
//! needs `libheif-dev` to link; without it these formats are recognised and answered 415.
//!
//! The size in the container is checked against the limits before decoding, and a decoded
//! image of another size is refused. libheif and its codecs allocate their own buffers from the
//! coded stream while decoding, outside our allocation budget.
//!
//! The primary image is decoded to 8-bit RGB(A). libheif applies the container's rotation
//! and mirror properties itself, so the size it reports is the oriented size and any EXIF
//! orientation inside the file is not applied a second time (HEIF writers keep the two in
//! agreement, and the container's properties are what viewers follow). The ICC profile and
//! the EXIF block are kept, as for JPEG.

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage, RgbaImage};
use libheif_rs::{color_profile_types, ColorProfile, ColorSpace, HeifContext, ItemId, RgbChroma};

use super::decode::{check_dimensions, Purpose, Source};
use super::format::SourceFormat;
use crate::render::error::{RenderError, Result};
use crate::render::limits::Limits;

/// Decodes the primary image of an AVIF or HEIC file, after checking its size against
/// `limits`.
pub(crate) fn read(
    bytes: &[u8],
    format: SourceFormat,
    limits: &Limits,
    _purpose: Purpose,
) -> Result<Source> {
    let name = format.name();
    let broken = |e: libheif_rs::HeifError| {
        RenderError::Unprocessable(format!("the {name} data is corrupt: {}", e.message))
    };
    let context = HeifContext::read_from_bytes(bytes).map_err(broken)?;
    let handle = context.primary_image_handle().map_err(broken)?;
    let (width, height) = (handle.width(), handle.height());
    check_dimensions(width, height, limits)?;
    let alpha = handle.has_alpha_channel();
    let chroma = if alpha {
        RgbChroma::Rgba
    } else {
        RgbChroma::Rgb
    };
    // Interleaved RGB(A) is 8 bits per channel: libheif converts deeper images to it.
    let decoded = handle
        .decode(ColorSpace::Rgb(chroma), None)
        .map_err(broken)?;
    let planes = decoded.planes();
    let plane = planes.interleaved.ok_or_else(|| {
        RenderError::Unprocessable(format!("the {name} image has no pixels libheif can read"))
    })?;
    // The coded stream may disagree with the container's size; what the header promised is
    // what the limits were checked against, so anything else is refused.
    if (plane.width, plane.height) != (width, height) {
        return Err(RenderError::Unprocessable(format!(
            "the {name} image decodes to {}x{} pixels but its header says {width}x{height}",
            plane.width, plane.height
        )));
    }
    let channels = if alpha { 4 } else { 3 };
    let row = plane.width as usize * channels;
    let mut pixels = Vec::with_capacity(row * plane.height as usize);
    for y in 0..plane.height as usize {
        let start = y * plane.stride;
        let line = plane.data.get(start..start + row).ok_or_else(|| {
            RenderError::Unprocessable(format!("the {name} image is shorter than its size"))
        })?;
        pixels.extend_from_slice(line);
    }
    let short = || RenderError::Unprocessable(format!("the {name} image is shorter than its size"));
    let image = if alpha {
        DynamicImage::ImageRgba8(
            RgbaImage::from_raw(plane.width, plane.height, pixels).ok_or_else(short)?,
        )
    } else {
        DynamicImage::ImageRgb8(
            RgbImage::from_raw(plane.width, plane.height, pixels).ok_or_else(short)?,
        )
    };
    let opaque = match &image {
        DynamicImage::ImageRgba8(rgba) => rgba.pixels().all(|p| p.0[3] == 255),
        _ => true,
    };
    let image = if opaque && alpha {
        DynamicImage::ImageRgb8(image.to_rgb8())
    } else {
        image
    };
    let icc = handle
        .color_profile_raw()
        .filter(|p| {
            let kind = p.profile_type();
            kind == color_profile_types::PROF || kind == color_profile_types::R_ICC
        })
        .map(|p| p.data);
    Ok(Source {
        format,
        width: image.width(),
        height: image.height(),
        orientation: Orientation::NoTransforms,
        exif: exif_block(&handle),
        icc,
        image,
        opaque,
        scaled: false,
    })
}

/// The EXIF block (a TIFF structure) of the image: HEIF stores it after a 4-byte offset to
/// the TIFF header.
fn exif_block(handle: &libheif_rs::ImageHandle) -> Option<Vec<u8>> {
    let mut ids: [ItemId; 1] = [0];
    // The metadata type filter is a FourCC; libheif-rs names that type only through its
    // colour-profile constants.
    let mut exif = color_profile_types::NCLX;
    exif.0 = *b"Exif";
    if handle.metadata_block_ids(&mut ids, exif) == 0 {
        return None;
    }
    let block = handle.metadata(ids[0]).ok()?;
    let offset = u32::from_be_bytes(block.get(0..4)?.try_into().ok()?) as usize;
    block.get(4usize.checked_add(offset)?..).map(<[u8]>::to_vec)
}
