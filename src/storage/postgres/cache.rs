//! Stored renders kept in this node's memory, so that a warm hit reads no row; and the
//! organization and image records read lately ([`RecordCache`]), so that a cold render reads
//! only its render row before storing the render.
//!
//! A render is immutable under its key (rendering is deterministic), and every removal of a
//! render moves the change generation. So an entry read while the node trusted generation `g`
//! ([`super::lease`]) is still the stored render while the trusted generation is `g`: each
//! entry carries the generation it was read at, and one of another generation is read again.
//! Nothing is cached or answered from here while the generation is not trusted.
//!
//! Bounded by bytes (`storage.render_cache_mb`); the eviction is `quick_cache`'s (a
//! scan-resistant clock), so a burst of one-off renders does not flush the popular ones. The
//! embedded store needs none of this: sled's page cache serves its hits from memory.

use crate::model::account::Organization;
use crate::model::image::ImageRecord;
use crate::storage::renders::StoredRender;

/// The default bound, 64 MiB (the setting's default).
pub(crate) const DEFAULT_BYTES: u64 = 64 * 1024 * 1024;

/// What an entry costs beyond its body: its key, header and the cache's own bookkeeping.
const ENTRY_OVERHEAD: u64 = 256;

/// The weight of an entry, in bytes.
#[derive(Clone)]
struct Size;

impl quick_cache::Weighter<Vec<u8>, (u64, StoredRender)> for Size {
    fn weight(&self, _key: &Vec<u8>, value: &(u64, StoredRender)) -> u64 {
        value.1.size() + ENTRY_OVERHEAD
    }
}

/// Stored renders by key, each with the generation it was read at.
pub(crate) struct RenderCache {
    entries: quick_cache::sync::Cache<Vec<u8>, (u64, StoredRender), Size>,
    /// Larger renders are not kept: one would push out many small ones.
    largest: u64,
}

impl RenderCache {
    /// A cache of at most `bytes`; `None` for 0.
    pub(crate) fn new(bytes: u64) -> Option<RenderCache> {
        if bytes == 0 {
            return None;
        }
        // The estimate sizes the table only; renders are typically some tens of KB.
        let items = usize::try_from(bytes / 16384).unwrap_or(usize::MAX).max(16);
        Some(RenderCache {
            entries: quick_cache::sync::Cache::with_weighter(items, bytes, Size),
            largest: bytes / 8,
        })
    }

    /// The render stored under `key`, if it was read at `generation`.
    pub(crate) fn get(&self, key: &[u8], generation: u64) -> Option<StoredRender> {
        match self.entries.get(key) {
            Some((at, render)) if at == generation => Some(render),
            _ => None,
        }
    }

    /// Keeps `render`, read from the records at `generation` (trusted before the read).
    pub(crate) fn put(&self, key: &[u8], generation: u64, render: &StoredRender) {
        if render.size() + ENTRY_OVERHEAD <= self.largest {
            self.entries
                .insert(key.to_vec(), (generation, render.clone()));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Organization and image records (an image by its full hash) by name, each with the
/// generation it was read at, under the rule of [`RenderCache`]: every write of an
/// organization's or an image's record moves the change generation in its transaction (an
/// insert of a new image need not: nothing absent is kept here), so an entry read while the
/// node trusted generation `g` is the stored record while the trusted generation is `g`.
pub(crate) struct RecordCache {
    orgs: quick_cache::sync::Cache<String, (u64, Organization)>,
    images: quick_cache::sync::Cache<String, (u64, ImageRecord)>,
}

/// Records kept of each kind: a record is some hundreds of bytes to a few KB.
const RECORDS_KEPT: usize = 4096;

impl RecordCache {
    pub(crate) fn new() -> RecordCache {
        RecordCache {
            orgs: quick_cache::sync::Cache::new(RECORDS_KEPT),
            images: quick_cache::sync::Cache::new(RECORDS_KEPT),
        }
    }

    fn image_key(org: &str, hash: &str) -> String {
        format!("{org}/{hash}")
    }

    /// The organization `name`, if it was read at `generation`.
    pub(crate) fn org(&self, name: &str, generation: u64) -> Option<Organization> {
        self.orgs
            .get(name)
            .and_then(|(at, org)| (at == generation).then_some(org))
    }

    /// Keeps `org`, read at `generation` (trusted before the read).
    pub(crate) fn put_org(&self, generation: u64, org: &Organization) {
        self.orgs
            .insert(org.name.clone(), (generation, org.clone()));
    }

    /// The image `hash` of `org`, if it was read at `generation`.
    pub(crate) fn image(&self, org: &str, hash: &str, generation: u64) -> Option<ImageRecord> {
        self.images
            .get(&Self::image_key(org, hash))
            .and_then(|(at, rec)| (at == generation).then_some(rec))
    }

    /// Keeps `rec`, read at `generation` (trusted before the read).
    pub(crate) fn put_image(&self, generation: u64, org: &str, hash: &str, rec: &ImageRecord) {
        self.images
            .insert(Self::image_key(org, hash), (generation, rec.clone()));
    }
}
