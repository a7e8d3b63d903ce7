//! Rendered outputs as every backend keeps them: what a render is ([`RenderMeta`], with the
//! [`StackRevision`]s of its chain), a stored render ([`StoredRender`]), what an invalidation
//! removed ([`Purged`]), and the limits they share ([`INLINE_MAX`], [`MAX_PATHS_PER_RENDER`]).
//!
//! A render as one value is `[u32 header length][JSON header][encoded bytes]`
//! (`inline_value`, read by `parse_stored`): the layout of the embedded records and of the
//! render frames of backups. A value of the embedded records that holds only its header (the
//! length word has `EXTERNAL` set, and the body's length follows the header) stands for a
//! body kept beside the records. The embedded records' render tree and its indexes are in
//! `sled/renders.rs`.

use super::{encode, Result, ServedPath, StorageError};
use serde::{Deserialize, Serialize};

/// Largest render kept inside sled; larger ones live in files.
pub const INLINE_MAX: usize = 128 * 1024;
/// Set in a value's length word when the body lives in a file.
pub(super) const EXTERNAL: u32 = 0x8000_0000;

/// Most URL paths remembered per render (for edge purges).
pub const MAX_PATHS_PER_RENDER: usize = 16;

/// A stack a render went through, and the revision it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRevision {
    pub name: String,
    pub revision: u64,
}

/// The content type of a mezzanine (a decoded source shared by the renders of an image),
/// stored beside renders; no render URL produces it.
pub const MEZZANINE_CONTENT_TYPE: &str = "application/x-darkroom-mezzanine";

/// What a render is and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderMeta {
    pub content_type: String,
    pub etag: String,
    pub organization: String,
    pub image: String,
    /// The named stack and its basestacks, each with the revision it had when rendered.
    #[serde(default)]
    pub stacks: Vec<StackRevision>,
}

/// A stored render: its header and its bytes (shared with the store's buffer).
#[derive(Debug, Clone)]
pub struct StoredRender {
    pub meta: RenderMeta,
    pub(super) raw: bytes::Bytes,
    pub(super) body_start: usize,
    /// The body's length when it lives in a file and `raw` holds only the header.
    pub(super) external: Option<u64>,
}

/// What an invalidation removed (or, in a dry run, would remove): renders, and apart from
/// them the mezzanines that went with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    pub renders: u64,
    pub bytes: u64,
    pub paths: Vec<ServedPath>,
    pub mezzanines: u64,
    pub mezzanine_bytes: u64,
}

impl Purged {
    pub(super) fn add(&mut self, other: Purged) {
        self.renders += other.renders;
        self.bytes += other.bytes;
        self.paths.extend(other.paths);
        self.mezzanines += other.mezzanines;
        self.mezzanine_bytes += other.mezzanine_bytes;
    }

    /// Entries removed, renders and mezzanines.
    pub fn entries(&self) -> u64 {
        self.renders + self.mezzanines
    }

    /// Bytes freed in the render store, renders and mezzanines.
    pub fn store_bytes(&self) -> u64 {
        self.bytes + self.mezzanine_bytes
    }
}

impl RenderMeta {
    /// Whether this entry is a mezzanine rather than a render.
    pub fn is_mezzanine(&self) -> bool {
        self.content_type == MEZZANINE_CONTENT_TYPE
    }
}

impl StoredRender {
    /// A render whose bytes are at hand (a shared backend reads them from its row or from the
    /// [`super::Bytes`]).
    pub(crate) fn with_body(meta: RenderMeta, body: bytes::Bytes) -> StoredRender {
        StoredRender {
            meta,
            raw: body,
            body_start: 0,
            external: None,
        }
    }

    /// The encoded image.
    pub fn bytes(&self) -> &[u8] {
        self.raw.get(self.body_start..).unwrap_or_default()
    }

    /// The encoded image, sharing the store's buffer (zero-copy responses).
    pub fn into_body(self) -> bytes::Bytes {
        self.raw.slice(self.body_start.min(self.raw.len())..)
    }

    /// The size of the encoded image, wherever it lives.
    pub fn size(&self) -> u64 {
        self.external.unwrap_or_else(|| self.bytes().len() as u64)
    }

    /// The bytes of a stored value without decoding its header; `None` when they live in a
    /// file.
    pub(super) fn inline_body(
        raw: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<Option<bytes::Bytes>> {
        let raw = bytes::Bytes::from_owner(raw);
        let (external, header_end) = split(&raw)?;
        Ok((!external).then(|| raw.slice(header_end..)))
    }

    pub(super) fn parse(raw: impl AsRef<[u8]> + Send + 'static) -> Result<StoredRender> {
        let raw = bytes::Bytes::from_owner(raw);
        let (external, header_end) = split(&raw)?;
        let header = raw.get(4..header_end).unwrap_or_default();
        let meta: RenderMeta =
            serde_json::from_slice(header).map_err(|e| corrupt(&e.to_string()))?;
        let external = if external {
            let size: [u8; 8] = raw
                .get(header_end..header_end + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| corrupt("short external length"))?;
            Some(u64::from_be_bytes(size))
        } else {
            None
        };
        let body_start = if external.is_some() {
            raw.len()
        } else {
            header_end
        };
        Ok(StoredRender {
            meta,
            raw,
            body_start,
            external,
        })
    }
}

/// A stored value's length word: whether its bytes live in a file, and where its header ends.
fn split(raw: &[u8]) -> Result<(bool, usize)> {
    let word = raw
        .get(0..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| corrupt("short value"))?;
    let header_end = 4 + (word & !EXTERNAL) as usize;
    if header_end > raw.len() {
        return Err(corrupt("short header"));
    }
    Ok((word & EXTERNAL != 0, header_end))
}

fn corrupt(message: &str) -> StorageError {
    StorageError::Corrupt {
        tree: "renders",
        message: message.to_string(),
    }
}

/// Parses a stored render value.
pub(crate) fn parse_stored(raw: impl AsRef<[u8]> + Send + 'static) -> Result<StoredRender> {
    StoredRender::parse(raw)
}

/// A render as one value with its bytes inline: a `u32` header length, the JSON header, the
/// bytes. The layout of small renders in sled, and of render frames in backups.
pub(crate) fn inline_value(meta: &RenderMeta, body: &[u8]) -> Vec<u8> {
    let header = encode(meta);
    let mut value = Vec::with_capacity(4 + header.len() + body.len());
    value.extend_from_slice(&(header.len() as u32).to_be_bytes());
    value.extend_from_slice(&header);
    value.extend_from_slice(body);
    value
}
