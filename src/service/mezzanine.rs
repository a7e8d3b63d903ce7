//! Mezzanines (design §4): the renders of one image that decode its JPEG source at the same
//! reduced (DCT) scale share one decode. The first of them decodes and stores the result
//! losslessly in the render store, under a key of its own beside the image's renders; the
//! others, and every later render at that scale, start from it. Renders that arrive while it
//! is being built wait for that one decode instead of starting their own (single-flight per
//! image and scale, like renders per render key).
//!
//! A mezzanine is cache, kept like a render: indexed by its image (so deleting or purging the
//! image removes it), never billed, counted in the render-store budget and evicted by recency
//! like any render, and rebuilt identically when it is gone. The render that built it does
//! not wait for it to be stored ([`Keeper`]); like a render's, the store is refused once the
//! image is deleted, so a delete that overtakes it leaves no orphan. Its bytes are exactly
//! what the decoder returned ([`crate::render::mezzanine`]), so a URL's bytes never depend on whether
//! a mezzanine existed: a render at that scale starts from the same pixels either way.
//!
//! Where the render store's bodies are shared by several nodes (object storage), each node
//! also keeps local copies of the mezzanines it built or read ([`crate::storage::Bytes::
//! mezzanine_copy`]), so a render does not fetch megabytes of samples from the bucket each
//! time. A copy holds the same bytes as the stored mezzanine, and goes through the same
//! parsing, so it changes nothing but where the bytes come from.
//!
//! Renders that need the full size of a JPEG share its decode too, but in memory only: the
//! samples of a 12 MP photo are 36 MB, too many to store for every image. The latest few stay
//! in memory ([`FULL_SIZE_KEPT_BYTES`]), so the large renders of a responsive set, which
//! follow one another, decode the source once.
//!
//! The latest mezzanines read or built stay in memory as well ([`REDUCED_KEPT_BYTES`]): a
//! stored 1/8 mezzanine is QOI, and decoding it again was about a quarter of the CPU of each
//! later 300 px render. They are the same pixels as the stored ones, so they change nothing
//! but the work; a purge of the image (or of its organization) through this node forgets
//! them, so that its next render builds the mezzanine again as the purge promises.
//!
//! So do the latest source files read for a render ([`SOURCE_KEPT_BYTES`]): a render that
//! starts from a decode in memory still reads its source's headers, and reading a 4.6 MB
//! photo from the file system each time was about 15 % of the CPU of a 300 px render from a
//! mezzanine. Sources are content addressed, so a kept one is always the stored file.

use super::renders::{RenderKey, RenderState, RENDER_EPOCH};
use crate::model::image::ImageRecord;
use crate::render::codecs::Decoded;
use crate::render::error::Result;
use crate::render::mezzanine;
use crate::storage::{RenderMeta, ServedPath};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

/// The content type mezzanines are stored under; no render URL produces it.
pub const CONTENT_TYPE: &str = crate::storage::MEZZANINE_CONTENT_TYPE;

/// Sources smaller than this (in pixels) decode in a few milliseconds even at full size:
/// storing and reading back a mezzanine would cost about as much as it saves, so their
/// renders decode directly. Either way the pixels are the same.
pub const MIN_SOURCE_PIXELS: u64 = 1_000_000;

/// Whether the renders of `image` share its reduced-size decodes.
pub fn applies(image: &ImageRecord) -> bool {
    u64::from(image.width) * u64::from(image.height) >= MIN_SOURCE_PIXELS
}

/// A decode being shared: set once by the render that builds it; `None` when that failed
/// (the others then decode for themselves, and meet the same error).
pub(super) type Building = Arc<OnceLock<Option<Arc<Decoded>>>>;

/// Full-size decodes kept in memory, in all: two 12 MP photos. A decode larger than this is
/// shared only by the renders that wait for it.
pub const FULL_SIZE_KEPT_BYTES: usize = 80 << 20;

/// Reduced-scale decodes (mezzanines) kept in memory, in all: about 57 mezzanines at 1/8 of
/// a 12 MP photo, or three at 1/2.
pub const REDUCED_KEPT_BYTES: usize = 32 << 20;

/// Source files kept in memory, in all: five 12 MP photos.
pub const SOURCE_KEPT_BYTES: usize = 24 << 20;

/// Encoded mezzanines waiting to be stored, at most (a 1/2 mezzanine of a 12 MP photo is
/// 9 MB). Beyond it, a render stores the mezzanine it built before it goes on.
pub const PENDING_KEEP_BYTES: usize = 64 << 20;

/// The DCT scales a mezzanine can have (1 is the full size, kept in memory only).
const DENOMINATORS: [u32; 4] = [1, 2, 4, 8];

/// A decode kept in memory, under its key.
pub(super) type Kept = (RenderKey, Arc<Decoded>);

/// The storage key of `image`'s mezzanine at 1/`denominator` scale. It covers the renderer
/// generation and the stored layout, so a mezzanine of an earlier decoder is never used.
pub fn key(image: &ImageRecord, denominator: u32) -> RenderKey {
    let mut h = blake3::Hasher::new();
    h.update(b"darkroom mezzanine\0");
    h.update(&RENDER_EPOCH.to_le_bytes());
    h.update(&[mezzanine::FORMAT_VERSION]);
    h.update(image.organization.as_bytes());
    h.update(b"\0");
    h.update(image.hash.as_bytes());
    h.update(b"\0");
    h.update(&denominator.to_le_bytes());
    *h.finalize().as_bytes()
}

/// The source of `image` decoded at 1/`denominator` scale: from its stored mezzanine (at
/// full size, denominator 1: from memory), from the decode another render is making right
/// now, or from `decode` (which must be the decoder's answer for that scale), kept then for
/// the renders to come (stored by `keeper`, usually while this render goes on). Storage
/// failures never fail the render: without a stored mezzanine it decodes, as it would anyway.
pub(super) fn decoded(
    keeper: &Keeper,
    state: &Arc<RenderState>,
    image: &ImageRecord,
    denominator: u32,
    decode: &dyn Fn() -> Result<Decoded>,
) -> Result<Arc<Decoded>> {
    let (store, blobs) = (&*keeper.store, &*keeper.blobs);
    let key = key(image, denominator);
    let cell: Building = match state.mezzanines.lock() {
        Ok(mut building) => building.entry(key).or_default().clone(),
        // Without the table, no sharing: still the same pixels.
        Err(_) => Arc::default(),
    };
    let full_size = denominator == 1;
    let mut failure = None;
    let mut built = None;
    let shared = cell.get_or_init(|| {
        let found = kept_in_memory(state, &key, full_size).or_else(|| {
            if full_size {
                return None;
            }
            let decoded = Arc::new(stored(store, blobs, &key)?);
            keep_in_memory(state, key, &decoded, false);
            Some(decoded)
        });
        if found.is_some() {
            if !full_size {
                state.mezzanine_reads.fetch_add(1, Ordering::Relaxed);
            }
            return found;
        }
        match decode() {
            Ok(decoded) => {
                let decoded = Arc::new(decoded);
                if full_size {
                    state.full_size_decodes.fetch_add(1, Ordering::Relaxed);
                } else {
                    state.mezzanine_decodes.fetch_add(1, Ordering::Relaxed);
                }
                // In memory first: the renders waiting for this decode, and the ones after
                // them on this node, need not wait for the stored copy.
                keep_in_memory(state, key, &decoded, full_size);
                if !full_size {
                    built = Some(decoded.clone());
                }
                Some(decoded)
            }
            Err(e) => {
                failure = Some(e);
                None
            }
        }
    });
    // Renders that come later find it in the store.
    if let Ok(mut building) = state.mezzanines.lock() {
        if building.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            building.remove(&key);
        }
    }
    if !full_size {
        super::renders::note_access(state, key);
    }
    // Kept once the renders waiting for this decode have it.
    if let Some(decoded) = built {
        keeper.keep(state, image, key, denominator, &decoded);
    }
    match (shared, failure) {
        (Some(decoded), _) => Ok(decoded.clone()),
        (None, Some(e)) => Err(e),
        (None, None) => decode().map(Arc::new),
    }
}

/// The decodes kept in memory at full size or at reduced scales, and their budget.
fn kept(
    state: &RenderState,
    full_size: bool,
) -> (&std::sync::Mutex<std::collections::VecDeque<Kept>>, usize) {
    if full_size {
        (&state.full_size, FULL_SIZE_KEPT_BYTES)
    } else {
        (&state.reduced, REDUCED_KEPT_BYTES)
    }
}

fn kept_in_memory(state: &RenderState, key: &RenderKey, full_size: bool) -> Option<Arc<Decoded>> {
    recent(kept(state, full_size).0, |k| k == key)
}

/// Keeps `decoded` as the most recent decode of its kind, forgetting the oldest ones beyond
/// the kind's budget ([`FULL_SIZE_KEPT_BYTES`], [`REDUCED_KEPT_BYTES`]).
fn keep_in_memory(state: &RenderState, key: RenderKey, decoded: &Arc<Decoded>, full_size: bool) {
    let (kept, budget) = kept(state, full_size);
    keep_recent(
        kept,
        key,
        decoded.clone(),
        |d| d.image.as_bytes().len(),
        budget,
    );
}

/// Items kept in memory under their keys, most recent first.
type Recent<K, V> = std::sync::Mutex<std::collections::VecDeque<(K, V)>>;

/// The item of `kept` whose key `is` accepts.
fn recent<K, V: Clone>(kept: &Recent<K, V>, is: impl Fn(&K) -> bool) -> Option<V> {
    let kept = kept.lock().ok()?;
    kept.iter().find(|(k, _)| is(k)).map(|(_, v)| v.clone())
}

/// Keeps `value` under `key` as the most recent item of `kept`, forgetting the oldest ones
/// beyond `budget` bytes as `size` counts them; an item larger than the budget is not kept.
fn keep_recent<K: PartialEq, V>(
    kept: &Recent<K, V>,
    key: K,
    value: V,
    size: impl Fn(&V) -> usize,
    budget: usize,
) {
    if size(&value) > budget {
        return;
    }
    let Ok(mut kept) = kept.lock() else {
        return;
    };
    kept.retain(|(k, _)| *k != key);
    kept.push_front((key, value));
    let mut total = 0;
    kept.retain(|(_, v)| {
        total += size(v);
        total <= budget
    });
}

/// Forgets the decodes and the source of `image` kept in memory (a purge of its renders).
pub(super) fn forget_image(state: &RenderState, image: &ImageRecord) {
    let keys: Vec<RenderKey> = DENOMINATORS.iter().map(|d| key(image, *d)).collect();
    for full_size in [true, false] {
        if let Ok(mut kept) = kept(state, full_size).0.lock() {
            kept.retain(|(k, _)| !keys.contains(k));
        }
    }
    if let Ok(mut sources) = state.sources.lock() {
        sources.retain(|(blob, _)| *blob != image.blob);
    }
}

/// Forgets every decode and source kept in memory (a purge of an organization's renders).
pub fn forget_all(state: &RenderState) {
    for full_size in [true, false] {
        if let Ok(mut kept) = kept(state, full_size).0.lock() {
            kept.clear();
        }
    }
    if let Ok(mut sources) = state.sources.lock() {
        sources.clear();
    }
}

/// The bytes of the source file `blob`: kept in memory from an earlier render, or read and
/// then kept as the most recent, forgetting the oldest beyond [`SOURCE_KEPT_BYTES`].
pub(super) fn source(
    state: &RenderState,
    blobs: &dyn crate::storage::Bytes,
    blob: &str,
) -> std::io::Result<Arc<Vec<u8>>> {
    if let Some(bytes) = recent(&state.sources, |b| b == blob) {
        return Ok(bytes);
    }
    let bytes = Arc::new(blobs.read(blob)?);
    keep_recent(
        &state.sources,
        blob.to_string(),
        bytes.clone(),
        |b| b.len(),
        SOURCE_KEPT_BYTES,
    );
    Ok(bytes)
}

/// The stored mezzanine under `key`: the node-local copy when there is one, else the render
/// store's (copied locally for the next time).
fn stored(
    store: &dyn crate::storage::Records,
    blobs: &dyn crate::storage::Bytes,
    key: &RenderKey,
) -> Option<Decoded> {
    if let Some(decoded) = blobs.mezzanine_copy(key).and_then(|c| mezzanine::parse(&c)) {
        return Some(decoded);
    }
    match store.get_render(key) {
        Ok(Some(found)) if found.meta.content_type == CONTENT_TYPE => {
            let decoded = mezzanine::parse(found.bytes())?;
            blobs.keep_mezzanine_copy(key, found.bytes());
            Some(decoded)
        }
        Ok(_) => None,
        Err(e) => {
            log::warn!("reading a mezzanine failed, decoding the source instead: {e}");
            None
        }
    }
}

/// Where a render stores the mezzanine it built: on the runtime's blocking threads while the
/// render goes on (storing 9 MB of samples at 1/2 scale took about 15 ms that a first render
/// waited for), or in place when there is no runtime or [`PENDING_KEEP_BYTES`] are already
/// waiting. The render encodes it itself, before it hands it over: a copy of the samples at
/// 1/2 scale, QOI at 1/4 and 1/8. Large buffers made and dropped on the blocking threads
/// stayed in their allocator arenas: encoded there, first renders of 1920 px JPEGs one at a
/// time peaked at 157–169 MB of RSS, against 134–150 MB. Either way the stored bytes are the
/// same; until they are stored, this node has the pixels in memory and another node decodes
/// them again, identically. A purge of the image's renders that overtakes the store leaves
/// the mezzanine stored: the same pixels, evicted or collected with the image like any other.
pub(super) struct Keeper {
    pub store: Arc<dyn crate::storage::Records>,
    pub blobs: Arc<dyn crate::storage::Bytes>,
    pub runtime: Option<tokio::runtime::Handle>,
}

impl Keeper {
    fn keep(
        &self,
        state: &Arc<RenderState>,
        image: &ImageRecord,
        key: RenderKey,
        denominator: u32,
        decoded: &Arc<Decoded>,
    ) {
        let samples = mezzanine::Samples::for_denominator(denominator);
        let Some(bytes) = mezzanine::encode(decoded, samples) else {
            return;
        };
        let size = bytes.len();
        let pending = &state.mezzanines_pending;
        let later = self.runtime.as_ref().filter(|_| {
            pending
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                    (p + size <= PENDING_KEEP_BYTES).then_some(p + size)
                })
                .is_ok()
        });
        let Some(runtime) = later else {
            return keep(&*self.store, &*self.blobs, image, &key, bytes);
        };
        // Counted down however the store step ends: done, panicked, or dropped unrun by a
        // runtime that is shutting down.
        struct Done(Arc<RenderState>, usize);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0
                    .mezzanines_pending
                    .fetch_sub(self.1, Ordering::AcqRel);
            }
        }
        let done = Done(state.clone(), size);
        let (store, blobs) = (self.store.clone(), self.blobs.clone());
        let image = image.clone();
        drop(runtime.spawn_blocking(move || {
            let _done = done;
            keep(&*store, &*blobs, &image, &key, bytes);
        }));
    }
}

/// Whether mezzanines built on this node are still waiting to be stored ([`Keeper`]).
pub fn storing(state: &RenderState) -> bool {
    state.mezzanines_pending.load(Ordering::Acquire) > 0
}

fn keep(
    store: &dyn crate::storage::Records,
    blobs: &dyn crate::storage::Bytes,
    image: &ImageRecord,
    key: &RenderKey,
    bytes: Vec<u8>,
) {
    let meta = RenderMeta {
        content_type: CONTENT_TYPE.to_owned(),
        etag: String::new(),
        organization: image.organization.clone(),
        image: image.hash.clone(),
        stacks: Vec::new(),
    };
    match store.put_render(key, &meta, bytes.into(), &ServedPath::default()) {
        Ok(stored) => blobs.keep_mezzanine_copy(key, stored.bytes()),
        Err(e) => log::warn!(
            "keeping the mezzanine of {}/{} failed: {e}",
            image.organization,
            image.hash
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{fixtures, Bytes, FileBytes};

    #[test]
    fn a_source_is_read_once_until_its_image_is_purged() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileBytes::open(dir.path()).unwrap();
        let blob = crate::storage::blobs::put_test_blob(&files, b"one");
        let other = crate::storage::blobs::put_test_blob(&files, b"two");
        let state = RenderState::default();
        assert_eq!(&*source(&state, &files, &blob).unwrap(), b"one");
        assert_eq!(&*source(&state, &files, &other).unwrap(), b"two");
        // Kept: the file is not read again.
        files.remove(&blob).unwrap();
        files.remove(&other).unwrap();
        assert_eq!(&*source(&state, &files, &blob).unwrap(), b"one");
        // A purge of the image forgets it, and only it.
        forget_image(&state, &fixtures::image(&"a".repeat(40), &blob));
        assert!(source(&state, &files, &blob).is_err());
        assert_eq!(&*source(&state, &files, &other).unwrap(), b"two");
        forget_all(&state);
        assert!(source(&state, &files, &other).is_err());
    }

    #[test]
    fn a_built_mezzanine_is_stored_while_its_render_goes_on_up_to_a_bound() {
        use crate::storage::{Records, SledStore};
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Records> =
            Arc::new(SledStore::open(&dir.path().join("db"), 16).unwrap());
        let blobs: Arc<dyn Bytes> = Arc::new(FileBytes::open(&dir.path().join("files")).unwrap());
        // One blocking thread, held busy until `release`, so the deferred store waits.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = rt.spawn_blocking(move || held.recv());
        let keeper = Keeper {
            store: store.clone(),
            blobs,
            runtime: Some(rt.handle().clone()),
        };
        let state = Arc::new(RenderState::default());
        let image = fixtures::image(&"a".repeat(40), "blob");
        // A mezzanine, like a render, is stored only while its image exists.
        store
            .create_org(&fixtures::org(&image.organization))
            .unwrap();
        store.insert_image(&image).unwrap();
        let decoded = Arc::new(Decoded {
            image: image::DynamicImage::new_rgb8(200, 150),
            icc: None,
            scale: 0.125,
        });
        let stored = |d| store.get_render(&key(&image, d)).unwrap().is_some();

        keeper.keep(&state, &image, key(&image, 8), 8, &decoded);
        assert!(storing(&state) && !stored(8), "left to the blocking thread");
        // Beyond the bound, the render stores it itself.
        state
            .mezzanines_pending
            .fetch_add(PENDING_KEEP_BYTES, Ordering::AcqRel);
        keeper.keep(&state, &image, key(&image, 4), 4, &decoded);
        assert!(stored(4));
        state
            .mezzanines_pending
            .fetch_sub(PENDING_KEEP_BYTES, Ordering::AcqRel);

        release.send(()).unwrap();
        rt.block_on(async {
            busy.await.unwrap().unwrap();
            while storing(&state) {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
        assert!(stored(8));

        // A runtime that is gone drops the store step unrun: it is not counted as waiting.
        let handle = rt.handle().clone();
        drop(rt);
        let keeper = Keeper {
            runtime: Some(handle),
            ..keeper
        };
        keeper.keep(&state, &image, key(&image, 2), 2, &decoded);
        assert!(!storing(&state));
    }

    #[test]
    fn sources_beyond_the_budget_are_forgotten_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileBytes::open(dir.path()).unwrap();
        let third = SOURCE_KEPT_BYTES / 3 + 1;
        let blobs: Vec<String> = (0..3u8)
            .map(|i| crate::storage::blobs::put_test_blob(&files, &vec![i; third]))
            .collect();
        let state = RenderState::default();
        for blob in &blobs {
            source(&state, &files, blob).unwrap();
        }
        for blob in &blobs {
            files.remove(blob).unwrap();
        }
        // Three thirds and a bit do not fit: the first one read is gone.
        assert!(source(&state, &files, &blobs[0]).is_err());
        assert_eq!(source(&state, &files, &blobs[2]).unwrap().len(), third);
        assert_eq!(source(&state, &files, &blobs[1]).unwrap().len(), third);
    }
}
