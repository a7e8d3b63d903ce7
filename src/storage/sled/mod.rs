//! The embedded records: one sled database in the data folder ([`SledStore`]). Small
//! structured data lives in sled trees (organizations, users, keys, memberships, image records
//! and their indexes, counters, stacks, aliases, renders); the source bytes live in
//! content-addressed files beside it ([`FileBytes`]). Changes that touch several trees go in
//! one sled transaction, so indexes and counters never drift from the records they describe.
//!
//! This folder is the only place that names sled. Here: the store, its opening and migration,
//! [`Records`] and the helpers of its transactions; beside it, one file per interface
//! (`accounts.rs`, `images.rs`, `query.rs`, `stacks.rs`, `aliases.rs`, `renders.rs`,
//! `edge.rs`), the checks of its own indexes and counters (`check.rs`) and the compaction of
//! its file ([`compact`]).
//!
//! Key layout: composite keys join their parts with a zero byte (`org \0 hash`, `key2`,
//! `key3`), which sorts by the first part and allows prefix scans per organization.

mod accounts;
mod aliases;
mod check;
pub mod compact;
mod edge;
mod images;
mod query;
mod renders;
mod runs;
mod stacks;

use super::{
    encode, index, key2, Bytes, DayStats, FileBytes, OrgUsage, Records, RecordsLock, Result, Space,
    StorageError, SCHEMA_VERSION,
};
use crate::model::image::ImageRecord;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Tree;
use std::path::{Path, PathBuf};

/// Writes an organization's usage and, beside it under `org \0 YYYY-MM-DD`, today's snapshot,
/// in the transaction that changed it: the daily series never drifts from the data.
pub(crate) fn store_usage(
    org_usage: &TransactionalTree,
    org: &str,
    usage: &OrgUsage,
) -> std::result::Result<(), TxError> {
    org_usage.insert(org.as_bytes(), encode(usage))?;
    let day_key = key2(
        org,
        &crate::model::time::day_of(crate::model::time::now_unix()),
    );
    let day: DayStats = match org_usage.get(&day_key)? {
        Some(v) => tx_decode("org_usage", &v)?,
        None => DayStats::default(),
    };
    org_usage.insert(day_key, encode(&day.with_usage(usage)))?;
    Ok(())
}

/// The references to one blob: every image record (deleted or not) of every organization
/// that names it, and of those the live ones per organization, since the blob's size counts
/// once in an organization's usage while any live image of it refers to it. Both counts share
/// the blob's one key: sled 0.34 keeps memory for every key after an open ([`runs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlobRef {
    size: u64,
    refs: u64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    live: std::collections::BTreeMap<String, u64>,
}

/// The references to a blob as stored, or none yet.
fn tx_blob_ref(
    blob_refs: &TransactionalTree,
    blob: &str,
    size: u64,
) -> std::result::Result<BlobRef, TxError> {
    Ok(match blob_refs.get(blob.as_bytes())? {
        Some(v) => tx_decode("blob_refs", &v)?,
        None => BlobRef {
            size,
            ..BlobRef::default()
        },
    })
}

/// The embedded records: one sled database in the data folder. It keeps a handle on the blob
/// files beside it for the whole-folder operations (backups, readiness).
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    pub(super) blobs: FileBytes,
    /// Where the bodies of large renders go: the blob files, or the object storage that holds
    /// the source bytes (see [`super::Storage::open_local`]).
    pub(super) render_bodies: std::sync::Arc<dyn Bytes>,
    meta: Tree,
    orgs: Tree,
    users: Tree,
    keys: Tree,
    user_keys: Tree,
    members: Tree,
    pub(super) images: Tree,
    /// The listing index ([`runs`]): entries one per key, runs of settled entries, and the
    /// entries of runs that were removed since their run was written.
    img_index: Tree,
    img_runs: Tree,
    img_gone: Tree,
    img_counts: Tree,
    blob_refs: Tree,
    org_usage: Tree,
    stacks: Tree,
    aliases: Tree,
    alias_paths: Tree,
    renders: Tree,
    render_by_image: Tree,
    render_by_stack: Tree,
    render_paths: Tree,
    render_atime: Tree,
    render_lru: Tree,
    edge_queue: Tree,
    edge_restore: Tree,
    edge_on: std::sync::atomic::AtomicBool,
    edge_notify: tokio::sync::Notify,
    /// Free space of the data folder against `storage.min_free_mb`.
    space: std::sync::Arc<Space>,
    /// Bumped after every change to organizations, images, stacks or aliases and every removal
    /// of a render; see [`SledStore::generation`].
    generation: std::sync::atomic::AtomicU64,
    /// The blob removal lock ([`Records::blob_removal_lock`]): sled opens a folder in one
    /// process only, so a mutex of that process is the whole lock.
    blob_removals: std::sync::Mutex<()>,
    /// Held shared by walks of the listing index and the transactions that write it, alone
    /// by a step of [`SledStore::pack_index`].
    index_lock: std::sync::RwLock<()>,
    /// Listing entries written or marked since the last pass, roughly (for when one is due).
    index_changes: std::sync::atomic::AtomicU64,
    /// Whether the entries left unpacked at the open were counted into `index_changes`.
    index_counted: std::sync::atomic::AtomicBool,
}

pub(crate) fn key3(a: &str, b: &str, c: &str) -> Vec<u8> {
    let mut k = key2(a, b);
    k.push(0);
    k.extend_from_slice(c.as_bytes());
    k
}

pub(crate) fn prefix(a: &str) -> Vec<u8> {
    let mut k = a.as_bytes().to_vec();
    k.push(0);
    k
}

pub(crate) fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        tree,
        message: e.to_string(),
    })
}

/// Moves a record's listing-index entries and counters from what `old` calls for to what
/// `new` calls for (either may be absent), inside the record's transaction; entries both call
/// for stay untouched. Returns the number of entries written or marked. The caller holds
/// [`SledStore::index_shared`].
pub(crate) fn reindex(
    index: (&TransactionalTree, &TransactionalTree, &TransactionalTree),
    old: Option<&ImageRecord>,
    new: Option<&ImageRecord>,
) -> std::result::Result<usize, TxError> {
    let (singles, gone, img_counts) = index;
    let keys = |rec: Option<&ImageRecord>| rec.map(index::embedded_keys);
    let (old_entries, old_counters) = keys(old).unwrap_or_default();
    let (new_entries, new_counters) = keys(new).unwrap_or_default();
    let mut written = 0;
    for k in old_entries.iter().filter(|k| !new_entries.contains(k)) {
        runs::tx_remove(singles, gone, k)?;
        written += 1;
    }
    for k in new_entries.iter().filter(|k| !old_entries.contains(k)) {
        runs::tx_add(singles, gone, k)?;
        written += 1;
    }
    let moves = old_counters
        .iter()
        .map(|k| (k, -1))
        .chain(new_counters.iter().map(|k| (k, 1)));
    for (k, delta) in moves {
        let before = match img_counts.get(k)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        };
        let after = if delta > 0 {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        if after == 0 {
            img_counts.remove(k.as_slice())?;
        } else {
            img_counts.insert(k.as_slice(), &after.to_be_bytes())?;
        }
    }
    Ok(written)
}

/// Aborts a transaction with a storage error (decoding failure inside the closure).
pub(crate) type TxError = ConflictableTransactionError<StorageError>;

pub(crate) fn tx_decode<T: DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> std::result::Result<T, TxError> {
    decode(tree, bytes).map_err(ConflictableTransactionError::Abort)
}

pub(crate) fn tx_result<T>(r: std::result::Result<T, TransactionError<StorageError>>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(StorageError::Db(e)),
    }
}

/// Adds `delta` (±1) to the organization's live references to a blob and keeps the usage
/// counter in step: the blob's size counts once per organization while any live image of it
/// refers to it. The caller writes `blob` back.
fn adjust_live(
    blob: &mut BlobRef,
    org_usage: &TransactionalTree,
    org: &str,
    size: u64,
    delta: i64,
) -> std::result::Result<(), TxError> {
    let before = blob.live.get(org).copied().unwrap_or(0);
    let after = if delta >= 0 {
        before + delta as u64
    } else {
        before.saturating_sub(delta.unsigned_abs())
    };
    if after == 0 {
        blob.live.remove(org);
    } else {
        blob.live.insert(org.to_string(), after);
    }
    let mut usage: OrgUsage = match org_usage.get(org.as_bytes())? {
        Some(v) => tx_decode("org_usage", &v)?,
        None => OrgUsage::default(),
    };
    if before == 0 && after > 0 {
        usage.space_in_bytes += size;
    } else if before > 0 && after == 0 {
        usage.space_in_bytes = usage.space_in_bytes.saturating_sub(size);
    }
    if delta >= 0 {
        usage.number_of_files += delta as u64;
    } else {
        usage.number_of_files = usage.number_of_files.saturating_sub(delta.unsigned_abs());
    }
    store_usage(org_usage, org, &usage)
}

impl SledStore {
    /// Opens the data folder, creating it on first use, with no free-space headroom (the
    /// command line and tests). Fails clearly when the data was written by a newer version.
    pub fn open(path: &Path, cache_mb: u64) -> Result<SledStore> {
        SledStore::open_with_headroom(path, cache_mb, 0)
    }

    /// Opens the data folder keeping `min_free` bytes free under it: writes that would go
    /// below are refused with [`StorageError::NoSpace`]. Temporary files of interrupted
    /// uploads are removed before the database is opened, since they may be what filled the
    /// disk; on a disk below the headroom the store opens without writing anything (reads
    /// work, writes are refused until there is room).
    pub fn open_with_headroom(path: &Path, cache_mb: u64, min_free: u64) -> Result<SledStore> {
        std::fs::create_dir_all(path)?;
        compact::recover(path)?;
        let blobs = FileBytes::open_with_headroom(path, min_free)?;
        let space = blobs.space_watch();
        let db = sled::Config::new()
            .path(path.join("sled"))
            .cache_capacity(cache_mb.max(1) * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()?;
        let meta = db.open_tree("meta")?;
        let mut migrate_from = None;
        match meta.get("schema_version")? {
            Some(v) => {
                let found = u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0xff; 4]));
                if found < SCHEMA_VERSION {
                    migrate_from = Some(found);
                }
                if found > SCHEMA_VERSION {
                    return Err(StorageError::Schema(format!(
                        "the data folder {} was written by a newer Darkroom (schema {found}, this binary reads up to {SCHEMA_VERSION}); upgrade the binary",
                        path.display()
                    )));
                }
            }
            None => {
                space.check()?;
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
            }
        }
        let store = SledStore {
            orgs: db.open_tree("orgs")?,
            users: db.open_tree("users")?,
            keys: db.open_tree("keys")?,
            user_keys: db.open_tree("user_keys")?,
            members: db.open_tree("members")?,
            images: db.open_tree("images")?,
            img_index: db.open_tree("img_index")?,
            img_runs: db.open_tree("img_runs")?,
            img_gone: db.open_tree("img_gone")?,
            img_counts: db.open_tree("img_counts")?,
            blob_refs: db.open_tree("blob_refs")?,
            org_usage: db.open_tree("org_usage")?,
            stacks: db.open_tree("stacks")?,
            aliases: db.open_tree("aliases")?,
            alias_paths: db.open_tree("alias_paths")?,
            renders: db.open_tree("renders")?,
            render_by_image: db.open_tree("render_by_image")?,
            render_by_stack: db.open_tree("render_by_stack")?,
            render_paths: db.open_tree("render_paths")?,
            render_atime: db.open_tree("render_atime")?,
            render_lru: db.open_tree("render_lru")?,
            edge_queue: db.open_tree("edge_queue")?,
            edge_restore: db.open_tree("edge_restore")?,
            edge_on: Default::default(),
            edge_notify: Default::default(),
            generation: Default::default(),
            blob_removals: Default::default(),
            index_lock: Default::default(),
            index_changes: Default::default(),
            index_counted: Default::default(),
            space,
            meta,
            db,
            path: path.to_path_buf(),
            render_bodies: std::sync::Arc::new(blobs.clone()),
            blobs,
        };
        if let Some(found) = migrate_from {
            store.space.check()?;
            store.migrate(found)?;
        }
        // A one-time migration; on a full disk it waits for a start with room.
        if !store.space.is_low() {
            store.backfill_render_atime()?;
            store.space.keep_reserve();
        }
        Ok(store)
    }

    /// The data folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`super::check::verify`] over these records and the blob files beside them (tests).
    #[cfg(test)]
    pub fn verify(&self, grace: std::time::Duration) -> Result<Vec<String>> {
        super::check::verify(self, &self.blobs, grace, &mut |_, _, _| {})
    }

    /// Moves the generation on; called after the change is committed.
    pub(crate) fn changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Records for SledStore {
    /// The free space is above the headroom (looked at afresh), and a marker record can be
    /// written and read.
    fn probe_ready(&self) -> Result<()> {
        self.space.refresh();
        self.space.check()?;
        self.meta
            .insert("ready_probe", &crate::model::time::now_unix().to_be_bytes())?;
        self.meta.get("ready_probe")?;
        Ok(())
    }

    fn flush(&self) -> futures_util::future::BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.db.flush_async().await?;
            Ok(())
        })
    }

    fn flush_blocking(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// A counter that moves after every committed change to an organization, an image, a stack
    /// or an alias, and after every removal of a render. Anything derived from those records while
    /// the counter read `g` (taken *before* the reads) is still true while it reads `g`.
    fn contents(&self) -> Result<Vec<String>> {
        Ok([
            ("organizations", &self.orgs),
            ("users", &self.users),
            ("keys", &self.keys),
            ("images", &self.images),
            ("stacks", &self.stacks),
            ("aliases", &self.aliases),
            ("renders", &self.renders),
        ]
        .into_iter()
        .filter(|(_, tree)| !tree.is_empty())
        .map(|(name, tree)| format!("{} {name}", tree.len()))
        .collect())
    }

    fn clear(&self) -> Result<()> {
        for tree in [
            &self.orgs,
            &self.users,
            &self.keys,
            &self.user_keys,
            &self.members,
            &self.images,
            &self.img_index,
            &self.img_runs,
            &self.img_gone,
            &self.img_counts,
            &self.blob_refs,
            &self.org_usage,
            &self.stacks,
            &self.aliases,
            &self.alias_paths,
            &self.renders,
            &self.render_by_image,
            &self.render_by_stack,
            &self.render_paths,
            &self.render_atime,
            &self.render_lru,
            &self.edge_queue,
            &self.edge_restore,
        ] {
            tree.clear()?;
        }
        self.meta.remove(runs::PACKED_KEY)?;
        self.changed();
        self.flush_blocking()
    }

    fn tidy(&self) -> Result<u64> {
        self.pack_index(false)
    }

    fn verify_records(&self, each_image: &mut dyn FnMut(&ImageRecord)) -> Result<Vec<String>> {
        self.check_records(each_image)
    }

    fn blob_removal_lock(&self) -> Result<RecordsLock<'_>> {
        Ok(RecordsLock::new(
            self.blob_removals
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }

    /// One process opens the folder, so the lock is never contended: always granted.
    fn exclusive(&self, _name: &str) -> Result<Option<RecordsLock<'_>>> {
        Ok(Some(RecordsLock::new(())))
    }

    fn generation(&self) -> Result<u64> {
        Ok(self.generation.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Reads the raw meta tree value (for tests of the schema check).
    fn schema_version(&self) -> Result<Option<u32>> {
        Ok(self
            .meta
            .get("schema_version")?
            .map(|v| u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4]))))
    }

    /// Where the collector's rolling sweeps stand (renders after this key; the next blob
    /// shard), kept in the store so that they survive restarts.
    fn sweep_position(&self) -> Result<(Option<Vec<u8>>, u8)> {
        let renders = self.meta.get("gc_render_sweep")?.map(|v| v.to_vec());
        let shard = self
            .meta
            .get("gc_blob_sweep")?
            .and_then(|v| v.first().copied())
            .unwrap_or(0);
        Ok((renders, shard))
    }

    fn set_sweep_position(&self, renders: Option<&[u8]>, shard: u8) -> Result<()> {
        match renders {
            Some(k) => self.meta.insert("gc_render_sweep", k)?,
            None => self.meta.remove("gc_render_sweep")?,
        };
        self.meta.insert("gc_blob_sweep", &[shard])?;
        Ok(())
    }

    fn render_epoch(&self) -> Result<u32> {
        Ok(self
            .meta
            .get("render_epoch")?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map_or(0, u32::from_be_bytes))
    }

    fn set_render_epoch(&self, epoch: u32) -> Result<()> {
        self.meta.insert("render_epoch", &epoch.to_be_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::account::Organization;
    use crate::storage::records::*;
    use crate::storage::{fixtures, RenderMeta, ServedPath, StoredStack};

    #[test]
    fn a_store_written_by_a_newer_version_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 8).unwrap();
            assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
            store
                .meta
                .insert("schema_version", &(SCHEMA_VERSION + 1).to_be_bytes())
                .unwrap();
            store.flush_blocking().unwrap();
        }
        // sled's background flusher lets go of the dropped database's lock a moment later.
        let mut err = String::new();
        for _ in 0..200 {
            err = SledStore::open(dir.path(), 8)
                .err()
                .expect("refused")
                .to_string();
            if !err.contains("could not acquire lock") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        assert!(err.contains("newer"), "{err}");
    }

    /// Image `aaaa…` of organization `acme`, blob `cccc…`.
    fn acme_image() -> ImageRecord {
        serde_json::from_value(serde_json::json!({
            "organization": "acme", "hash": "a".repeat(40), "binary_hash": "b".repeat(40),
            "blob": "c".repeat(64), "name": "a.jpg", "format": "jpg", "mimetype": "image/jpeg",
            "size": 1, "width": 1, "height": 1, "created": "2024-01-01T00:00:00+00:00",
            "created_ns": 1_700_000_000_000_000_000_i128, "deleted": false,
            "user_metadata": {}, "opaque": true, "animated": false
        }))
        .unwrap()
    }

    /// Opens the folder once the lock of a store dropped a moment ago is free.
    fn reopen(path: &Path) -> SledStore {
        for _ in 0..200 {
            match SledStore::open(path, 8) {
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                other => return other.unwrap(),
            }
        }
        panic!("the folder stayed locked");
    }

    /// A folder of schema 3 kept the binary-hash lookup and the live references per
    /// organization in trees of their own; the open moves both, and the checks find nothing.
    #[test]
    fn a_schema_3_folder_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let live = acme_image();
        let mut deleted = acme_image();
        deleted.hash = "d".repeat(40);
        deleted.deleted = true;
        deleted.deleted_at = Some(100);
        {
            let store = SledStore::open(dir.path(), 8).unwrap();
            store.create_org(&fixtures::org("acme")).unwrap();
            store.insert_image(&live).unwrap();
            store.insert_image(&deleted).unwrap();
            let img_binary = store.db.open_tree("img_binary").unwrap();
            let org_blobs = store.db.open_tree("org_blobs").unwrap();
            for rec in [&live, &deleted] {
                store.img_index.remove(index::binary_entry(rec)).unwrap();
                img_binary
                    .insert(key3("acme", &rec.binary_hash, &rec.hash), &[])
                    .unwrap();
            }
            let stored = store.blob_refs.get(&live.blob).unwrap().unwrap();
            let mut r: BlobRef = decode("blob_refs", &stored).unwrap();
            for (org, n) in std::mem::take(&mut r.live) {
                org_blobs
                    .insert(key2(&org, &live.blob), &n.to_be_bytes())
                    .unwrap();
            }
            store
                .blob_refs
                .insert(live.blob.as_bytes(), encode(&r))
                .unwrap();
            store
                .meta
                .insert("schema_version", &3u32.to_be_bytes())
                .unwrap();
            store.flush_blocking().unwrap();
        }
        let store = reopen(dir.path());
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        let names = store.db.tree_names();
        assert!(!names
            .iter()
            .any(|n| n.as_ref() == b"img_binary" || n.as_ref() == b"org_blobs"));
        assert_eq!(
            store.check_records(&mut |_| {}).unwrap(),
            Vec::<String>::new()
        );
        let found: Vec<String> = store
            .images_by_binary("acme", &live.binary_hash)
            .unwrap()
            .into_iter()
            .map(|rec| rec.hash)
            .collect();
        assert_eq!(found, vec![live.hash.clone(), deleted.hash.clone()]);
        // The live reference moved with its count: removing the live image frees the space,
        // and the deleted image still holds the blob.
        assert_eq!(store.org_usage("acme").unwrap().space_in_bytes, 1);
        assert_eq!(store.remove_image("acme", &live.hash).unwrap(), None);
        assert_eq!(store.org_usage("acme").unwrap().space_in_bytes, 0);
        assert_eq!(store.blob_refs(&live.blob).unwrap(), 1);
        assert_eq!(
            store.check_records(&mut |_| {}).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn gc_removes_an_image_only_while_it_is_still_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        store.create_org(&fixtures::org("acme")).unwrap();
        let mut rec = acme_image();
        store.insert_image(&rec).unwrap();
        // Live (brought back by an upload after GC picked it): kept.
        assert_eq!(
            store.remove_expired_image("acme", &rec.hash, 100).unwrap(),
            None
        );
        assert!(store.get_image("acme", &rec.hash).unwrap().is_some());
        rec.deleted = true;
        rec.deleted_at = Some(100);
        store.update_image(&rec).unwrap();
        // Deleted again, after the cutoff: kept.
        assert_eq!(
            store.remove_expired_image("acme", &rec.hash, 100).unwrap(),
            None
        );
        assert!(store.get_image("acme", &rec.hash).unwrap().is_some());
        // Deleted before the cutoff: removed, with its blob.
        assert_eq!(
            store.remove_expired_image("acme", &rec.hash, 101).unwrap(),
            Some("c".repeat(64))
        );
        assert!(store.get_image("acme", &rec.hash).unwrap().is_none());
    }

    #[test]
    fn every_change_a_render_url_resolves_against_moves_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        let mut last = store.generation().unwrap();
        let mut moved = |what: &str| {
            let now = store.generation().unwrap();
            assert!(now > last, "{what} left the generation at {now}");
            last = now;
        };
        let org: Organization = serde_json::from_value(serde_json::json!({
            "id": "id-acme", "name": "acme", "display_name": "", "billing_email": "",
            "created": "2024-01-01", "master_organization": "", "signing_keys": []
        }))
        .unwrap();
        store.create_org(&org).unwrap();
        moved("create_org");
        store.put_org(&org).unwrap();
        moved("put_org");
        let mut rec = acme_image();
        // A new image moves it only when another one shares its first six characters, the
        // shortest prefix a URL may name an image by.
        let with_hash = |hash: String| ImageRecord {
            hash,
            ..rec.clone()
        };
        let before = store.generation().unwrap();
        store.insert_image(&rec).unwrap();
        store
            .insert_image(&with_hash(format!("aaaaab{}", "c".repeat(34))))
            .unwrap();
        assert_eq!(store.generation().unwrap(), before, "insert_image moved it");
        store
            .insert_image(&with_hash(format!("aaaaaa{}", "c".repeat(34))))
            .unwrap();
        moved("insert_image of an image sharing six characters");
        rec.deleted = true;
        store.update_image(&rec).unwrap();
        moved("update_image");
        let stack = StoredStack {
            organization: "acme".into(),
            name: "thumb".into(),
            created: "2024-01-01".into(),
            revision: 1,
            definition: Default::default(),
        };
        store.create_stack(&stack).unwrap();
        moved("create_stack");
        store.put_stack(&stack).unwrap();
        moved("put_stack");
        let served = ServedPath {
            host: String::new(),
            path: "/acme/thumb/a.jpg".into(),
        };
        let meta = RenderMeta {
            content_type: "image/jpeg".into(),
            etag: "\"x\"".into(),
            organization: "acme".into(),
            image: rec.hash.clone(),
            stacks: Vec::new(),
        };
        store
            .put_render_unchecked(&[7; 32], &meta, b"x", &served)
            .unwrap();
        let before = store.generation().unwrap();
        store.purge_image_renders("acme", &rec.hash, true).unwrap();
        assert_eq!(
            store.generation().unwrap(),
            before,
            "a dry run changes nothing"
        );
        store.purge_image_renders("acme", &rec.hash, false).unwrap();
        moved("a render purge");
        store.delete_stack("acme", "thumb").unwrap();
        moved("delete_stack");
        store.remove_image("acme", &rec.hash).unwrap();
        moved("remove_image");
    }

    #[test]
    fn a_fresh_store_is_ready() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SledStore::open(dir.path(), 8)
            .unwrap()
            .probe_ready()
            .is_ok());
    }
}
