//! The codec layer: recognising source formats from their bytes, decoding them under limits
//! into 8-bit RGB(A) with EXIF orientation applied, and encoding rendered pixels into every
//! output format. It knows nothing of operations or HTTP; the probe (`render::probe`) and the
//! render pipeline are its callers.

pub mod animation;
mod avif;
mod blur;
pub(crate) mod container;
mod decode;
mod encode;
mod exif;
mod font;
mod format;
#[cfg(feature = "heif")]
mod heif;
mod jpeg;
mod svg;
#[cfg(test)]
pub(crate) mod testdata;
mod webp;

pub use avif::{child_main as avif_child_main, use_helper as use_avif_helper};
pub use decode::{dct_denominator, decode, shared_denominator, DecodeHint, Decoded};

/// Whether this build can decode `format` (fonts count: they are parsed for `text`).
pub fn decodes(format: SourceFormat) -> bool {
    format.is_decodable()
}
pub use encode::{encode, EncodeOptions};
pub use font::{parse as parse_font, probe as probe_font};
pub use format::{sniff, OutputFormat, SourceFormat};
pub use jpeg::libjpeg_simd;
pub(crate) use jpeg::scale_denominator;
pub(crate) use svg::raster_size as svg_raster_size;

pub(crate) use decode::{read_source, Purpose};
pub(crate) use exif::summary as exif_summary;
