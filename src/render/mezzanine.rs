//! The stored form of a mezzanine: a source decoded at a reduced (DCT) scale, kept so that
//! the renders of one image decode it once. It is exactly what [`codecs::decode`] returned
//! (oriented pixels, ICC profile, scale), its 8-bit samples behind a small header, raw or
//! compressed losslessly with QOI, so a render that starts from it sees the same input, bit
//! for bit, as one that decodes the source again. No colour conversion: QOI keeps every
//! sample. Which one is [`Samples::for_denominator`]'s choice, measured (README, "Mezzanines").
//!
//! Layout (integers little-endian): `DRMZ`, format version (1 byte), channels (1 byte: 3 or
//! 4), width (u32), height (u32), scale (f64 bits, u64), ICC flag (1 byte), ICC length (u32),
//! ICC bytes, samples (1 byte: 0 raw, 1 QOI), then width × height × channels samples row by
//! row, or one QOI image of them.
//!
//! [`codecs::decode`]: crate::render::codecs::decode

use crate::render::codecs::Decoded;
use image::{DynamicImage, RgbImage, RgbaImage};

const MAGIC: &[u8; 4] = b"DRMZ";
/// Changes whenever the layout does; part of the storage key too, so an older mezzanine is
/// simply never found.
pub const FORMAT_VERSION: u8 = 3;
/// Header bytes before the ICC profile, and the samples byte after it.
const HEADER: usize = 4 + 1 + 1 + 4 + 4 + 8 + 1 + 4 + 1;

/// How a mezzanine's samples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Samples {
    /// As decoded: the fastest to read back.
    Raw = 0,
    /// QOI: lossless, 0-45 % smaller on photos, read back in 1-6 ms at 1/4 and 1/8 of a 12 MP
    /// source.
    Qoi = 1,
}

impl Samples {
    /// The storage of a mezzanine at 1/`denominator` scale. At 1/2, reading QOI back (13-25 ms
    /// for a 12 MP photo) is a third to a half of the JPEG decode it replaces (50-73 ms), and
    /// ten of the 24 renders of a responsive set start from that scale: it stays raw. At 1/4
    /// and 1/8 the read is at most a seventh of the decode, so the smaller form wins.
    pub fn for_denominator(denominator: u32) -> Samples {
        if denominator >= 4 {
            Samples::Qoi
        } else {
            Samples::Raw
        }
    }
}

/// The stored bytes of `decoded`; `None` for a pixel layout the decoder never produces
/// (anything but 8-bit RGB or RGBA), which is then simply not kept.
pub fn encode(decoded: &Decoded, samples_as: Samples) -> Option<Vec<u8>> {
    let (channels, samples): (u8, &[u8]) = match &decoded.image {
        DynamicImage::ImageRgb8(b) => (3, b.as_raw()),
        DynamicImage::ImageRgba8(b) => (4, b.as_raw()),
        _ => return None,
    };
    let icc = decoded.icc.as_deref();
    let icc_len = u32::try_from(icc.map_or(0, <[u8]>::len)).ok()?;
    let (width, height) = (decoded.image.width(), decoded.image.height());
    let qoi;
    let pixels = match samples_as {
        Samples::Raw => samples,
        Samples::Qoi => {
            qoi = qoi::encode_to_vec(samples, width, height).ok()?;
            qoi.as_slice()
        }
    };
    let mut out = Vec::with_capacity(HEADER + icc_len as usize + pixels.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(channels);
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&decoded.scale.to_bits().to_le_bytes());
    out.push(u8::from(icc.is_some()));
    out.extend_from_slice(&icc_len.to_le_bytes());
    out.extend_from_slice(icc.unwrap_or_default());
    out.push(samples_as as u8);
    out.extend_from_slice(pixels);
    Some(out)
}

/// The decoded image stored in `bytes`; `None` when they are not a whole mezzanine of this
/// format version (the caller then decodes the source again).
pub fn parse(bytes: &[u8]) -> Option<Decoded> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (&version, rest) = rest.split_first()?;
    let (&channels, rest) = rest.split_first()?;
    if version != FORMAT_VERSION {
        return None;
    }
    let (width, rest) = take_u32(rest)?;
    let (height, rest) = take_u32(rest)?;
    let (scale, rest) = rest.split_at_checked(8)?;
    let scale = f64::from_bits(u64::from_le_bytes(scale.try_into().ok()?));
    let (&has_icc, rest) = rest.split_first()?;
    let (icc_len, rest) = take_u32(rest)?;
    let (icc, pixels) = rest.split_at_checked(usize::try_from(icc_len).ok()?)?;
    let icc = (has_icc == 1).then(|| icc.to_vec());
    let (&samples_as, pixels) = pixels.split_first()?;
    let samples = match samples_as {
        0 => {
            let expected = (width as usize)
                .checked_mul(height as usize)?
                .checked_mul(usize::from(channels))?;
            if pixels.len() != expected {
                return None;
            }
            pixels.to_vec()
        }
        1 => {
            let (header, samples) = qoi::decode_to_vec(pixels).ok()?;
            if (header.width, header.height, header.channels.as_u8()) != (width, height, channels) {
                return None;
            }
            samples
        }
        _ => return None,
    };
    let image = match channels {
        3 => DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, samples)?),
        4 => DynamicImage::ImageRgba8(RgbaImage::from_raw(width, height, samples)?),
        _ => return None,
    };
    Some(Decoded { image, icc, scale })
}

fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_at_checked(4)?;
    Some((u32::from_le_bytes(head.try_into().ok()?), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::codecs::testdata;

    fn same(a: &Decoded, b: &Decoded) -> bool {
        a.image == b.image && a.icc == b.icc && a.scale.to_bits() == b.scale.to_bits()
    }

    #[test]
    fn a_mezzanine_gives_back_exactly_what_was_decoded() {
        let rgb = Decoded {
            image: DynamicImage::ImageRgb8(testdata::gradient(13, 7)),
            icc: Some(vec![1, 2, 3]),
            scale: 13.0 / 101.0,
        };
        let rgba = Decoded {
            image: DynamicImage::ImageRgba8(testdata::translucent(5, 9)),
            icc: None,
            scale: 0.25,
        };
        let empty_icc = Decoded {
            icc: Some(Vec::new()),
            ..rgb.clone()
        };

        for decoded in [rgb, rgba, empty_icc] {
            for samples in [Samples::Raw, Samples::Qoi] {
                let parsed = encode(&decoded, samples).and_then(|b| parse(&b));
                assert!(parsed.is_some_and(|p| same(&p, &decoded)), "{samples:?}");
            }
        }
    }

    #[test]
    fn a_damaged_or_foreign_mezzanine_is_not_used() {
        let decoded = Decoded {
            image: DynamicImage::ImageRgb8(testdata::gradient(4, 4)),
            icc: None,
            scale: 0.5,
        };
        for samples in [Samples::Raw, Samples::Qoi] {
            let bytes = encode(&decoded, samples).unwrap_or_default();
            assert!(parse(&bytes[..bytes.len() - 1]).is_none(), "{samples:?}");
        }
        let bytes = encode(&decoded, Samples::Raw).unwrap_or_default();
        assert!(parse(&bytes[..10]).is_none());
        let mut other_version = bytes.clone();
        other_version[4] = FORMAT_VERSION + 1;
        assert!(parse(&other_version).is_none());
        assert!(parse(b"\xff\xd8\xff").is_none());
    }
}
