//! Image formats: the source formats recognised from magic bytes, the output formats a render
//! can be encoded to (the image formats, and `blur`, the BlurHash text of the rendered image),
//! and their file extensions and MIME types. Sniffing looks at the bytes only, never at a file
//! name, so a text file named `.jpg` is still rejected.

/// A source image format recognised by [`sniff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    /// JPEG / JFIF / EXIF.
    Jpeg,
    /// PNG, including APNG.
    Png,
    /// GIF 87a / 89a, static or animated.
    Gif,
    /// WebP, lossy, lossless or animated.
    Webp,
    /// TIFF, classic or BigTIFF.
    Tiff,
    /// Windows bitmap.
    Bmp,
    /// AVIF: decoded by libheif with the `heif` feature, otherwise recognised and refused.
    Avif,
    /// HEIC/HEIF: decoded by libheif with the `heif` feature, otherwise recognised and refused.
    Heic,
    /// SVG, rasterised at the size a render needs.
    Svg,
    /// TrueType font: stored for the `text` operation, never rendered itself.
    Ttf,
    /// OpenType font with CFF outlines: stored for the `text` operation, never rendered itself.
    Otf,
}

impl SourceFormat {
    /// The canonical file extension, as used in API responses (`"jpg"`, `"png"`, …).
    pub fn ext(&self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "jpg",
            SourceFormat::Png => "png",
            SourceFormat::Gif => "gif",
            SourceFormat::Webp => "webp",
            SourceFormat::Tiff => "tiff",
            SourceFormat::Bmp => "bmp",
            SourceFormat::Avif => "avif",
            SourceFormat::Heic => "heic",
            SourceFormat::Svg => "svg",
            SourceFormat::Ttf => "ttf",
            SourceFormat::Otf => "otf",
        }
    }

    /// The MIME type of the format.
    pub fn mime(&self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "image/jpeg",
            SourceFormat::Png => "image/png",
            SourceFormat::Gif => "image/gif",
            SourceFormat::Webp => "image/webp",
            SourceFormat::Tiff => "image/tiff",
            SourceFormat::Bmp => "image/bmp",
            SourceFormat::Avif => "image/avif",
            SourceFormat::Heic => "image/heic",
            SourceFormat::Svg => "image/svg+xml",
            SourceFormat::Ttf => "font/ttf",
            SourceFormat::Otf => "font/otf",
        }
    }

    /// A human-readable name for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "JPEG",
            SourceFormat::Png => "PNG",
            SourceFormat::Gif => "GIF",
            SourceFormat::Webp => "WebP",
            SourceFormat::Tiff => "TIFF",
            SourceFormat::Bmp => "BMP",
            SourceFormat::Avif => "AVIF",
            SourceFormat::Heic => "HEIC",
            SourceFormat::Svg => "SVG",
            SourceFormat::Ttf => "TrueType font",
            SourceFormat::Otf => "OpenType font",
        }
    }

    /// The matching `image` crate format, for the formats this build can decode.
    pub(crate) fn image_format(&self) -> Option<image::ImageFormat> {
        match self {
            SourceFormat::Jpeg => Some(image::ImageFormat::Jpeg),
            SourceFormat::Png => Some(image::ImageFormat::Png),
            SourceFormat::Gif => Some(image::ImageFormat::Gif),
            SourceFormat::Webp => Some(image::ImageFormat::WebP),
            SourceFormat::Tiff => Some(image::ImageFormat::Tiff),
            SourceFormat::Bmp => Some(image::ImageFormat::Bmp),
            SourceFormat::Avif
            | SourceFormat::Heic
            | SourceFormat::Svg
            | SourceFormat::Ttf
            | SourceFormat::Otf => None,
        }
    }

    /// Whether this build can decode (or, for fonts, use) the format.
    pub fn is_decodable(&self) -> bool {
        cfg!(feature = "heif") || !matches!(self, SourceFormat::Avif | SourceFormat::Heic)
    }

    /// Whether the source is a font (stored for the `text` operation, not an image).
    pub fn is_font(&self) -> bool {
        matches!(self, SourceFormat::Ttf | SourceFormat::Otf)
    }
}

/// Recognises a source format from its leading magic bytes; `None` for anything else.
pub fn sniff(bytes: &[u8]) -> Option<SourceFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(SourceFormat::Jpeg);
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(SourceFormat::Png);
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return Some(SourceFormat::Gif);
    }
    if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP".as_slice()) {
        return Some(SourceFormat::Webp);
    }
    // Classic TIFF has version 42, BigTIFF 43, in the byte order the first two bytes name.
    if bytes.starts_with(b"II*\0")
        || bytes.starts_with(b"MM\0*")
        || bytes.starts_with(b"II+\0")
        || bytes.starts_with(b"MM\0+")
    {
        return Some(SourceFormat::Tiff);
    }
    if is_bmp(bytes) {
        return Some(SourceFormat::Bmp);
    }
    if is_avif(bytes) {
        return Some(SourceFormat::Avif);
    }
    if has_brand(
        bytes,
        &[
            b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1",
        ],
    ) {
        return Some(SourceFormat::Heic);
    }
    // TrueType (version 1.0 or Apple's `true`) and OpenType with CFF outlines, followed by a
    // table count no font exceeds.
    let tables = bytes.get(4..6).map(|n| u16::from_be_bytes([n[0], n[1]]));
    if tables.is_some_and(|n| (1..=256).contains(&n)) {
        if bytes.starts_with(&[0, 1, 0, 0]) || bytes.starts_with(b"true") {
            return Some(SourceFormat::Ttf);
        }
        if bytes.starts_with(b"OTTO") {
            return Some(SourceFormat::Otf);
        }
    }
    if is_svg(bytes) {
        return Some(SourceFormat::Svg);
    }
    None
}

/// An XML document whose root element is `svg`: after an optional byte-order mark, the XML
/// declaration, comments, processing instructions and a DOCTYPE, the first element must be
/// `<svg`. Looks at the first 64 KiB only.
fn is_svg(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64 * 1024)];
    let mut rest = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    loop {
        let start = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[start..];
        let skip_past = |rest: &[u8], end: &[u8]| -> Option<usize> {
            memchr::memmem::find(rest, end).map(|i| i + end.len())
        };
        let next = if rest.starts_with(b"<?") {
            skip_past(rest, b"?>")
        } else if rest.starts_with(b"<!--") {
            skip_past(rest, b"-->")
        } else if rest.starts_with(b"<!DOCTYPE") {
            // An internal subset in brackets may contain `>`.
            match (memchr::memchr(b'[', rest), memchr::memchr(b'>', rest)) {
                (Some(open), Some(close)) if open < close => {
                    skip_past(rest, b"]>").or_else(|| skip_past(rest, b"]"))
                }
                (_, Some(close)) => Some(close + 1),
                _ => None,
            }
        } else {
            return rest.starts_with(b"<svg")
                && rest
                    .get(4)
                    .is_some_and(|b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/');
        };
        match next {
            Some(n) => rest = &rest[n..],
            None => return false,
        }
    }
}

/// An ISO-BMFF `ftyp` box whose major brand is one of `brands`.
fn has_brand(bytes: &[u8], brands: &[&[u8; 4]]) -> bool {
    bytes.get(4..8) == Some(b"ftyp".as_slice())
        && bytes
            .get(8..12)
            .is_some_and(|major| brands.iter().any(|b| b.as_slice() == major))
}

/// "BM" alone would match ordinary text, so the DIB header size must also be one of the
/// sizes the BMP variants define.
fn is_bmp(bytes: &[u8]) -> bool {
    if !bytes.starts_with(b"BM") {
        return false;
    }
    match bytes.get(14..18) {
        Some(&[a, b, c, d]) => {
            matches!(
                u32::from_le_bytes([a, b, c, d]),
                12 | 16 | 40 | 52 | 56 | 64 | 108 | 124
            )
        }
        _ => false,
    }
}

/// An ISO-BMFF `ftyp` box whose major or compatible brands include `avif` or `avis`.
fn is_avif(bytes: &[u8]) -> bool {
    if bytes.get(4..8) != Some(b"ftyp".as_slice()) {
        return false;
    }
    let size = match bytes.get(0..4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]) as usize,
        _ => return false,
    };
    // Brands: the major brand at 8..12, the minor version at 12..16, compatible brands after.
    let end = size.min(bytes.len()).min(256);
    let Some(major) = bytes.get(8..12) else {
        return false;
    };
    let is_avif_brand = |brand: &[u8]| brand == b"avif" || brand == b"avis";
    if is_avif_brand(major) {
        return true;
    }
    bytes
        .get(16..end)
        .map(|brands| brands.chunks_exact(4).any(is_avif_brand))
        .unwrap_or(false)
}

/// An output format a render can be encoded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// Baseline JPEG (4:2:0 below quality 90, optimised Huffman tables).
    Jpeg,
    /// PNG, 8 bits per channel, RGB or RGBA.
    Png,
    /// GIF with a quantised palette per frame; animated when the source is.
    Gif,
    /// WebP, lossy or lossless; animated when the source is.
    Webp,
    /// AVIF (AV1 still image).
    Avif,
    /// The BlurHash string of the rendered image (rokka's `.blur`): text, not an image.
    Blur,
}

impl OutputFormat {
    /// Parses a render-URL extension (`jpg`, `jpeg`, `png`, `gif`, `webp`, `avif`, `blur`;
    /// any case).
    pub fn from_ext(ext: &str) -> Option<Self> {
        let ext = ext.to_ascii_lowercase();
        match ext.as_str() {
            "jpg" | "jpeg" => Some(OutputFormat::Jpeg),
            "png" => Some(OutputFormat::Png),
            "gif" => Some(OutputFormat::Gif),
            "webp" => Some(OutputFormat::Webp),
            "avif" => Some(OutputFormat::Avif),
            "blur" => Some(OutputFormat::Blur),
            _ => None,
        }
    }

    /// The MIME type for the `Content-Type` of a render.
    pub fn mime(&self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Gif => "image/gif",
            OutputFormat::Webp => "image/webp",
            OutputFormat::Avif => "image/avif",
            OutputFormat::Blur => "text/plain; charset=utf-8",
        }
    }

    /// Whether the output is an image file; `false` for the BlurHash text.
    pub fn is_image(&self) -> bool {
        !matches!(self, OutputFormat::Blur)
    }

    /// The canonical extension (`"jpg"` for JPEG).
    pub fn ext(&self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Gif => "gif",
            OutputFormat::Webp => "webp",
            OutputFormat::Avif => "avif",
            OutputFormat::Blur => "blur",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_recognises_each_magic() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Some(SourceFormat::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some(SourceFormat::Png));
        assert_eq!(sniff(b"GIF89a...."), Some(SourceFormat::Gif));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(SourceFormat::Webp));
        assert_eq!(sniff(b"II*\0\x08\0\0\0"), Some(SourceFormat::Tiff));
        assert_eq!(sniff(b"MM\0*\0\0\0\x08"), Some(SourceFormat::Tiff));
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0; 12]);
        bmp.extend_from_slice(&40u32.to_le_bytes());
        assert_eq!(sniff(&bmp), Some(SourceFormat::Bmp));
        assert_eq!(
            sniff(b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf"),
            Some(SourceFormat::Avif)
        );
        assert_eq!(
            sniff(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"),
            Some(SourceFormat::Heic)
        );
        assert_eq!(sniff(b"\0\x01\0\0\0\x0c\0\x80"), Some(SourceFormat::Ttf));
        assert_eq!(sniff(b"OTTO\0\x0b\0\x80"), Some(SourceFormat::Otf));
    }

    #[test]
    fn svg_is_recognised_by_its_root_element() {
        for svg in [
            &b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"[..],
            b"\xEF\xBB\xBF<?xml version=\"1.0\"?>\n<!-- logo -->\n<svg width=\"1\">",
            b"<?xml version=\"1.0\"?><!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \"x.dtd\"><svg>",
            b"<!DOCTYPE svg [<!ENTITY ns \"http://www.w3.org/2000/svg\">]>\n<svg\n>",
        ] {
            assert_eq!(sniff(svg), Some(SourceFormat::Svg), "{:?}", String::from_utf8_lossy(svg));
        }
        for other in [
            &b"<html><svg></svg></html>"[..],
            b"<svgfoo>",
            b"<?xml version=\"1.0\"?><rss/>",
            b"<!-- unterminated",
        ] {
            assert_eq!(sniff(other), None, "{:?}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn sniff_rejects_text_and_empty_input() {
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"BMW is a car maker, not a bitmap"), None);
        assert_eq!(sniff(b"<html>not an image</html>"), None);
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom"), None);
    }

    #[test]
    fn output_formats_parse_from_extensions_in_any_case() {
        assert_eq!(OutputFormat::from_ext("jpeg"), Some(OutputFormat::Jpeg));
        assert_eq!(OutputFormat::from_ext("JPG"), Some(OutputFormat::Jpeg));
        assert_eq!(OutputFormat::from_ext("avif"), Some(OutputFormat::Avif));
        assert_eq!(OutputFormat::from_ext("tiff"), None);
        assert_eq!(OutputFormat::Webp.mime(), "image/webp");
        assert_eq!(OutputFormat::Jpeg.ext(), "jpg");
    }

    #[test]
    fn blur_is_an_output_format_answered_as_text() {
        assert_eq!(OutputFormat::from_ext("BLUR"), Some(OutputFormat::Blur));
        assert_eq!(OutputFormat::Blur.ext(), "blur");
        assert_eq!(OutputFormat::Blur.mime(), "text/plain; charset=utf-8");
        assert!(!OutputFormat::Blur.is_image());
        assert!(OutputFormat::Png.is_image());
    }
}
