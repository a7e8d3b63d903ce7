//! A small summary of a source's EXIF block for the image's static metadata: the orientation
//! and the few descriptive tags clients commonly show. The full block is deliberately not kept:
//! it can hold maker notes of many kilobytes and personal data such as GPS positions.

use serde_json::{Map, Value};

/// Longest text kept for a descriptive tag; longer values are cut.
const MAX_TEXT: usize = 64;

/// Builds `{"Orientation": n, "Make"?, "Model"?, "DateTimeOriginal"?}` from a raw EXIF block
/// (TIFF structure, without the `Exif\0\0` prefix). Unreadable blocks yield just the orientation.
pub(crate) fn summary(raw: &[u8], orientation: u8) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("Orientation".to_owned(), Value::from(orientation));
    let parsed = match exif::Reader::new().read_raw(raw.to_vec()) {
        Ok(parsed) => parsed,
        Err(exif::Error::PartialResult(partial)) => partial.into_inner().0,
        Err(_) => return map,
    };
    for (tag, name) in [
        (exif::Tag::Make, "Make"),
        (exif::Tag::Model, "Model"),
        (exif::Tag::DateTimeOriginal, "DateTimeOriginal"),
    ] {
        let text = parsed
            .fields()
            .find(|f| f.tag == tag)
            .and_then(|f| match &f.value {
                exif::Value::Ascii(parts) => parts.first().map(|p| clean_text(p)),
                _ => None,
            })
            .filter(|t| !t.is_empty());
        if let Some(text) = text {
            map.insert(name.to_owned(), Value::from(text));
        }
    }
    map
}

/// Decodes lossily, drops control characters and padding, and caps the length.
fn clean_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_block_yields_only_the_orientation() {
        let map = summary(b"garbage", 3);
        assert_eq!(map.len(), 1);
        assert_eq!(map.get("Orientation"), Some(&Value::from(3)));
    }

    #[test]
    fn clean_text_trims_padding_and_controls() {
        assert_eq!(clean_text(b"  Canon\0\x07 "), "Canon");
    }
}
