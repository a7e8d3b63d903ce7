//! Font sources (TrueType and OpenType). A font is stored like an image so that the `text`
//! operation can name it by hash, but it has no pixels: its record has no width or height
//! (both 0), and rendering it is refused. The upload check parses the font tables with the
//! same library that later draws the glyphs, so a stored font can always be used.

use ab_glyph::{Font, FontRef};
use serde_json::{json, Map, Value};

use super::format::{sniff, SourceFormat};
use crate::render::error::{RenderError, Result};

/// Checks that `bytes` are a usable font and returns its format and a small summary for the
/// record's static metadata (`{"font": {"glyphs": n, "units_per_em": n}}`).
///
/// Errors: `Unsupported` when the bytes are not a TrueType or OpenType font, `Unprocessable`
/// when its tables are damaged or it has no glyphs.
pub fn probe(bytes: &[u8]) -> Result<(SourceFormat, Map<String, Value>)> {
    let format = sniff(bytes).filter(SourceFormat::is_font).ok_or_else(|| {
        RenderError::Unsupported("the file is not a TrueType or OpenType font".to_owned())
    })?;
    let font = parse(bytes)?;
    let mut meta = Map::new();
    meta.insert(
        "font".to_owned(),
        json!({
            "glyphs": font.glyph_count(),
            "units_per_em": font.units_per_em().map(f64::from),
        }),
    );
    Ok((format, meta))
}

/// Parses a font for drawing. Errors: `Unprocessable` when the tables are damaged, the font
/// has no glyphs or no usable size.
pub fn parse(bytes: &[u8]) -> Result<FontRef<'_>> {
    let font = FontRef::try_from_slice(bytes)
        .map_err(|e| RenderError::Unprocessable(format!("the font data is damaged: {e}")))?;
    if font.glyph_count() == 0 || font.units_per_em().is_none_or(|u| u <= 0.0) {
        return Err(RenderError::Unprocessable(
            "the font has no glyphs or no valid units per em".to_owned(),
        ));
    }
    Ok(font)
}
