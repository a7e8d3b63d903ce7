//! Byte-level walks over container structures that the pixel decoders do not expose: whether a
//! GIF, APNG or WebP holds more than one frame, and how to add an ICC profile chunk to a WebP
//! produced by libwebp. Each walk reads only lengths and tags, never pixels, and stops at the
//! first inconsistency instead of trusting a length that runs past the end of the data.

use super::format::SourceFormat;

/// Whether the image holds more than one frame (animated GIF, APNG or animated WebP).
pub(crate) fn is_animated(format: SourceFormat, bytes: &[u8]) -> bool {
    match format {
        SourceFormat::Gif => gif_frame_count(bytes, 2) >= 2,
        SourceFormat::Png => apng_frame_count(bytes) > 1,
        SourceFormat::Webp => webp_frame_count(bytes, 2) >= 2,
        _ => false,
    }
}

/// How many frames the container declares or holds: GIF image descriptors, the APNG `acTL`
/// frame count, WebP `ANMF` chunks; 1 for every other source. Read before any pixel is
/// decoded, so that an animation with too many frames is refused first.
pub(crate) fn frame_count(format: SourceFormat, bytes: &[u8]) -> u64 {
    let count = match format {
        SourceFormat::Gif => gif_frame_count(bytes, usize::MAX) as u64,
        SourceFormat::Png => u64::from(apng_frame_count(bytes)),
        SourceFormat::Webp => webp_anmf_count(bytes),
        _ => 1,
    };
    count.max(1)
}

/// The loop count of a GIF's `NETSCAPE2.0` application extension: `None` when the file has
/// none (the animation plays once), `Some(0)` for forever, `Some(n)` for n repetitions after
/// the first play.
pub(crate) fn gif_repeat(bytes: &[u8]) -> Option<u16> {
    let &packed = bytes.get(10)?;
    let mut pos = 13usize;
    if packed & 0x80 != 0 {
        pos += 3 << ((packed & 0x07) + 1);
    }
    // The extension comes before the first image descriptor in every file that has one.
    while bytes.get(pos) == Some(&0x21) {
        let label = *bytes.get(pos + 1)?;
        let first = pos + 2;
        if label == 0xFF
            && bytes.get(first) == Some(&11)
            && bytes.get(first + 1..first + 12) == Some(b"NETSCAPE2.0".as_slice())
            && bytes.get(first + 12) == Some(&3)
            && bytes.get(first + 13) == Some(&1)
        {
            let lo = *bytes.get(first + 14)?;
            let hi = *bytes.get(first + 15)?;
            return Some(u16::from_le_bytes([lo, hi]));
        }
        // Skip this extension's sub-blocks.
        let mut at = first;
        loop {
            let len = *bytes.get(at)? as usize;
            at += 1;
            if len == 0 {
                break;
            }
            at += len;
        }
        pos = at;
    }
    None
}

/// Whether every `ANMF` frame's bitstream (`VP8 ` or `VP8L`) declares the size of its frame.
/// image-webp decodes a frame's bitstream at the size the bitstream declares and compares it
/// with the frame afterwards, so a frame of a few pixels whose bitstream claims 16383×16383
/// would allocate hundreds of megabytes first; such a file is refused before decoding.
pub(crate) fn webp_frames_consistent(bytes: &[u8]) -> bool {
    let mut pos = 12usize;
    while let (Some(tag), Some(len)) = (bytes.get(pos..pos + 4), le_u32(bytes, pos + 4)) {
        let start = pos + 8;
        let Some(end) = start.checked_add(len as usize) else {
            return true;
        };
        if tag == b"ANMF" {
            let payload = &bytes[start.min(bytes.len())..end.min(bytes.len())];
            if !anmf_consistent(payload) {
                return false;
            }
        }
        match end.checked_add(len as usize & 1) {
            Some(next) if next <= bytes.len() => pos = next,
            _ => break,
        }
    }
    true
}

/// Checks one `ANMF` payload as image-webp reads it: 16 bytes of frame header, then either a
/// `VP8 ` or `VP8L` chunk, or an `ALPH` chunk followed by a chunk it decodes as `VP8 `
/// whatever its tag says. A payload too short to tell, or a bitstream without its signature,
/// is left to the decoder, which refuses it before allocating.
fn anmf_consistent(payload: &[u8]) -> bool {
    let u24 = |at: usize| -> Option<u32> {
        let b = payload.get(at..at + 3)?;
        Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
    };
    let (Some(w), Some(h)) = (u24(6), u24(9)) else {
        return true;
    };
    let frame = (w + 1, h + 1);
    let vp8 = |data: usize| match payload.get(data + 3..data + 10) {
        Some(&[0x9d, 0x01, 0x2a, w0, w1, h0, h1]) => {
            let side = |lo, hi| u32::from(u16::from_le_bytes([lo, hi]) & 0x3fff);
            (side(w0, w1), side(h0, h1)) == frame
        }
        _ => true,
    };
    let (Some(tag), Some(len)) = (payload.get(16..20), le_u32(payload, 20)) else {
        return true;
    };
    match tag {
        b"VP8 " => vp8(24),
        b"VP8L" => match payload.get(24..29) {
            Some(&[0x2f, a, b, c, d]) => {
                let bits = u32::from_le_bytes([a, b, c, d]);
                ((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1) == frame
            }
            _ => true,
        },
        b"ALPH" => {
            let padded = (len as usize).saturating_add(len as usize & 1);
            match 24usize.checked_add(padded).and_then(|p| p.checked_add(8)) {
                Some(data) => vp8(data),
                None => true,
            }
        }
        _ => true,
    }
}

/// Counts `ANMF` chunks without collecting the chunk list (a hostile file may hold millions).
fn webp_anmf_count(bytes: &[u8]) -> u64 {
    let mut count = 0u64;
    let mut pos = 12usize;
    while let (Some(tag), Some(len)) = (bytes.get(pos..pos + 4), le_u32(bytes, pos + 4)) {
        if tag == b"ANMF" {
            count += 1;
        }
        let padded = (len as usize).saturating_add(len as usize & 1);
        match pos.checked_add(8).and_then(|p| p.checked_add(padded)) {
            Some(end) if end <= bytes.len() => pos = end,
            _ => break,
        }
    }
    count
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    match bytes.get(at..at.checked_add(4)?) {
        Some(&[a, b, c, d]) => Some(u32::from_be_bytes([a, b, c, d])),
        _ => None,
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    match bytes.get(at..at.checked_add(4)?) {
        Some(&[a, b, c, d]) => Some(u32::from_le_bytes([a, b, c, d])),
        _ => None,
    }
}

/// Counts GIF image descriptors, stopping once `stop_at` have been seen.
fn gif_frame_count(bytes: &[u8], stop_at: usize) -> usize {
    // Header (6) + logical screen descriptor (7), then the optional global colour table.
    let Some(&packed) = bytes.get(10) else {
        return 0;
    };
    let mut pos = 13usize;
    if packed & 0x80 != 0 {
        pos += 3 << ((packed & 0x07) + 1);
    }
    let mut frames = 0;
    // Skips a chain of data sub-blocks (length byte, data), ending at a zero length.
    let skip_sub_blocks = |mut pos: usize| -> Option<usize> {
        loop {
            let len = *bytes.get(pos)? as usize;
            pos += 1;
            if len == 0 {
                return Some(pos);
            }
            pos += len;
        }
    };
    while frames < stop_at {
        match bytes.get(pos) {
            Some(0x21) => {
                // Extension: introducer, label, sub-blocks.
                match skip_sub_blocks(pos + 2) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
            Some(0x2C) => {
                frames += 1;
                let Some(&packed) = bytes.get(pos + 9) else {
                    break;
                };
                pos += 10;
                if packed & 0x80 != 0 {
                    pos += 3 << ((packed & 0x07) + 1);
                }
                // LZW minimum code size, then the image data sub-blocks.
                match skip_sub_blocks(pos + 1) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
            _ => break,
        }
    }
    frames
}

/// The frame count an APNG declares in its `acTL` chunk (1 for a plain PNG).
fn apng_frame_count(bytes: &[u8]) -> u32 {
    let mut pos = 8usize;
    while let Some(len) = be_u32(bytes, pos) {
        let Some(kind) = bytes.get(pos + 4..pos + 8) else {
            break;
        };
        match kind {
            b"acTL" => return be_u32(bytes, pos + 8).unwrap_or(1),
            // The animation control chunk must precede the image data.
            b"IDAT" | b"IEND" => break,
            _ => {}
        }
        pos = match pos
            .checked_add(12)
            .and_then(|p| p.checked_add(len as usize))
        {
            Some(next) => next,
            None => break,
        };
    }
    1
}

/// One RIFF chunk of a WebP file: its tag and the byte range of its whole chunk (header,
/// payload and padding).
struct RiffChunk {
    tag: [u8; 4],
    start: usize,
    end: usize,
}

/// The chunks after the `RIFF....WEBP` header; stops at the first chunk that overruns.
fn riff_chunks(bytes: &[u8]) -> Vec<RiffChunk> {
    let mut chunks = Vec::new();
    let mut pos = 12usize;
    while let (Some(tag), Some(len)) = (bytes.get(pos..pos + 4), le_u32(bytes, pos + 4)) {
        let padded = (len as usize).saturating_add(len as usize & 1);
        let Some(end) = pos.checked_add(8).and_then(|p| p.checked_add(padded)) else {
            break;
        };
        let mut name = [0u8; 4];
        name.copy_from_slice(tag);
        // A final chunk may lack its pad byte; libwebp accepts that, so do we.
        chunks.push(RiffChunk {
            tag: name,
            start: pos,
            end: end.min(bytes.len()),
        });
        if end > bytes.len() {
            break;
        }
        pos = end;
    }
    chunks
}

/// Counts `ANMF` (animation frame) chunks, stopping once `stop_at` have been seen.
fn webp_frame_count(bytes: &[u8], stop_at: usize) -> usize {
    riff_chunks(bytes)
        .iter()
        .filter(|c| &c.tag == b"ANMF")
        .take(stop_at)
        .count()
}

/// Adds an `ICCP` chunk to a WebP file as written by libwebp, converting a simple-format file
/// (a lone `VP8 ` or `VP8L` chunk) to the extended format first. `None` if the input does not
/// have the expected structure.
pub(crate) fn webp_with_icc(
    webp: &[u8],
    icc: &[u8],
    width: u32,
    height: u32,
    has_alpha: bool,
) -> Option<Vec<u8>> {
    if !webp.starts_with(b"RIFF") || webp.get(8..12) != Some(b"WEBP".as_slice()) {
        return None;
    }
    let icc_len = u32::try_from(icc.len()).ok()?;
    let chunks = riff_chunks(webp);
    let first = chunks.first()?;

    let mut body: Vec<u8> = Vec::with_capacity(webp.len() + icc.len() + 40);
    body.extend_from_slice(b"WEBP");
    let rest_start = if &first.tag == b"VP8X" {
        let mut vp8x = webp.get(first.start..first.end)?.to_vec();
        // Byte 8 of the chunk (first payload byte) holds the feature flags; 0x20 = ICC.
        *vp8x.get_mut(8)? |= 0x20;
        body.extend_from_slice(&vp8x);
        first.end
    } else {
        let w = width.checked_sub(1)?;
        let h = height.checked_sub(1)?;
        if w >= 1 << 24 || h >= 1 << 24 {
            return None;
        }
        body.extend_from_slice(b"VP8X");
        body.extend_from_slice(&10u32.to_le_bytes());
        body.push(0x20 | if has_alpha { 0x10 } else { 0 });
        body.extend_from_slice(&[0, 0, 0]);
        body.extend_from_slice(&w.to_le_bytes()[..3]);
        body.extend_from_slice(&h.to_le_bytes()[..3]);
        first.start
    };
    // The ICC chunk must come right after VP8X, before any image data.
    body.extend_from_slice(b"ICCP");
    body.extend_from_slice(&icc_len.to_le_bytes());
    body.extend_from_slice(icc);
    if icc.len() % 2 == 1 {
        body.push(0);
    }
    body.extend_from_slice(webp.get(rest_start..)?);

    let riff_len = u32::try_from(body.len()).ok()?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&riff_len.to_le_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gif_frame_count_stops_at_a_truncated_block() {
        // A header and screen descriptor with no global table, then an image descriptor whose
        // data sub-blocks run past the end.
        let mut gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00".to_vec();
        gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 50]);
        assert_eq!(gif_frame_count(&gif, 5), 1);
    }

    #[test]
    fn a_png_without_an_animation_chunk_has_one_frame() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR";
        assert_eq!(apng_frame_count(png), 1);
    }

    #[test]
    fn frame_counts_come_from_the_container() {
        let gif = crate::render::codecs::testdata::gif(6, 4, 5);
        let webp = crate::render::codecs::testdata::animated_webp(6, 4);

        assert_eq!(frame_count(SourceFormat::Gif, &gif), 5);
        assert_eq!(frame_count(SourceFormat::Webp, &webp), 2);
        assert_eq!(frame_count(SourceFormat::Jpeg, b"anything"), 1);
    }

    #[test]
    fn the_gif_loop_count_is_read_from_the_netscape_extension() {
        let mut looping = Vec::new();
        {
            let mut enc = gif::Encoder::new(&mut looping, 1, 1, &[0, 0, 0, 255, 255, 255]).unwrap();
            enc.set_repeat(gif::Repeat::Finite(3)).unwrap();
            enc.write_frame(&gif::Frame::default()).unwrap();
        }
        let mut once = Vec::new();
        {
            let mut enc = gif::Encoder::new(&mut once, 1, 1, &[0, 0, 0, 255, 255, 255]).unwrap();
            enc.write_frame(&gif::Frame::default()).unwrap();
        }

        assert_eq!(gif_repeat(&looping), Some(3));
        assert_eq!(gif_repeat(&once), None);
    }

    #[test]
    fn a_webp_frame_whose_bitstream_claims_another_size_is_inconsistent() {
        let good = crate::render::codecs::testdata::animated_webp(6, 4);
        assert!(webp_frames_consistent(&good));
        // The first frame's VP8L header: signature, then 14 bits of width - 1.
        let at = good
            .windows(4)
            .position(|w| w == b"VP8L")
            .expect("a VP8L chunk")
            + 8;
        let mut bad = good.clone();
        bad[at + 1] = 0xff;
        bad[at + 2] |= 0x3f;
        assert!(!webp_frames_consistent(&bad));
    }

    #[test]
    fn webp_with_icc_rejects_non_webp_data() {
        assert!(webp_with_icc(b"not a webp file", b"icc", 1, 1, false).is_none());
    }
}
