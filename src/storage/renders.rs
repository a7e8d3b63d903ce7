//! Rendered outputs, keyed by render key (BLAKE3 over the resolved request). A value is
//! `[u32 header length][JSON header][encoded bytes]`, so a hit is one lookup and the bytes are
//! served straight from sled's buffer without a copy.

use super::{encode, Result, StorageError, Store};
use serde::{Deserialize, Serialize};

/// What a render is and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderMeta {
    pub content_type: String,
    pub etag: String,
    pub organization: String,
    pub image: String,
    /// The named stack, if any, and its revision when rendered.
    #[serde(default)]
    pub stack: Option<String>,
    #[serde(default)]
    pub revision: u64,
}

/// A stored render: its header and its bytes (shared with the store's buffer).
#[derive(Debug, Clone)]
pub struct StoredRender {
    pub meta: RenderMeta,
    raw: sled::IVec,
    body_start: usize,
}

impl StoredRender {
    /// The encoded image.
    pub fn bytes(&self) -> &[u8] {
        self.raw.get(self.body_start..).unwrap_or_default()
    }

    /// The whole stored value and where the image starts in it, for zero-copy responses.
    pub fn into_parts(self) -> (sled::IVec, usize) {
        (self.raw, self.body_start)
    }

    fn parse(raw: sled::IVec) -> Result<StoredRender> {
        let corrupt = |m: &str| StorageError::Corrupt {
            tree: "renders",
            message: m.to_string(),
        };
        let len_bytes: [u8; 4] = raw
            .get(0..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("short value"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let header = raw.get(4..4 + len).ok_or_else(|| corrupt("short header"))?;
        let meta: RenderMeta =
            serde_json::from_slice(header).map_err(|e| corrupt(&e.to_string()))?;
        Ok(StoredRender {
            meta,
            raw,
            body_start: 4 + len,
        })
    }
}

impl Store {
    /// Looks a render up by key.
    pub fn get_render(&self, key: &[u8]) -> Result<Option<StoredRender>> {
        self.renders.get(key)?.map(StoredRender::parse).transpose()
    }

    /// Stores a render.
    pub fn put_render(&self, key: &[u8], meta: &RenderMeta, bytes: &[u8]) -> Result<()> {
        let header = encode(meta);
        let mut value = Vec::with_capacity(4 + header.len() + bytes.len());
        value.extend_from_slice(&(header.len() as u32).to_be_bytes());
        value.extend_from_slice(&header);
        value.extend_from_slice(bytes);
        self.renders.insert(key, value)?;
        Ok(())
    }

    /// Number of stored renders.
    pub fn render_count(&self) -> usize {
        self.renders.len()
    }
}
