//! Where everything is kept, behind two interfaces: the records ([`Records`], in
//! [`records`]) and the bytes ([`Bytes`], in [`blobs`]). The rest of the appliance holds them
//! as [`Storage`] and never sees a backend's types.
//!
//! The embedded backend is the only place that names sled: small structured data lives in
//! sled trees (organizations, users, keys, memberships, image records and their indexes,
//! counters, stacks, aliases, renders) in [`SledStore`]; source bytes live in content-addressed files beside it
//! ([`FileBytes`]). Changes that touch several trees go in one sled transaction, so indexes and
//! counters never drift from the records they describe.
//!
//! Key layout: composite keys join their parts with a zero byte (`org \0 hash`), which sorts
//! by the first part and allows prefix scans per organization.

pub mod aliases;
pub mod backup;
pub mod blobs;
pub mod check;
pub mod compact;
mod driver;
pub mod edge;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod index;
pub mod objects;
pub mod postgres;
pub mod query;
pub mod records;
pub mod renders;
pub mod space;
pub mod stacks;

use crate::model::account::{ApiKey, Membership, Organization, User};
use crate::model::ids::SHORTEST_PREFIX;
use crate::model::image::ImageRecord;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use std::path::{Path, PathBuf};

pub use aliases::{AliasPut, AliasRecords, StoredAlias};
pub use blobs::{BlobUpload, BlobWriter, ByteStream, Bytes, FileBytes, ReceivedBlob};
pub use check::RenderStatus;
pub use edge::{EdgeJob, QueuedEdgeJob};
pub use objects::{ObjectBytes, ObjectSettings};
pub use records::{
    Accounts, EdgeQueue, ImageIndex, ImageRecords, Records, RecordsLock, RenderRecords,
    StackRecords,
};

pub use renders::{Purged, RenderMeta, StackRevision, StoredRender, MEZZANINE_CONTENT_TYPE};
pub use space::Space;
pub use stacks::StoredStack;

/// Where a long task over the storage says how far it got: what it counts, how many so far,
/// and the total when it is known (`darkroom admin` shows it).
pub type Progress<'a> = &'a mut dyn FnMut(&'static str, u64, Option<u64>);

/// Version of the data layout. Opening a store written by a newer version fails.
/// 2: the listing indexes (`img_index`, `img_counts`) replace the creation-time index.
pub const SCHEMA_VERSION: u32 = 2;

/// Storage failures. Callers treat them as internal errors.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
    /// A PostgreSQL failure (the database, a connection, or the pool).
    #[error("database: {0}")]
    Sql(String),
    #[error("corrupt record in {tree}: {message}")]
    Corrupt { tree: &'static str, message: String },
    #[error("{0}")]
    Schema(String),
    /// A backup file that cannot be read or restored, or a data folder it cannot go into.
    #[error("{0}")]
    Backup(String),
    /// The data folder is below its free-space headroom (`storage.min_free_mb`): the write was
    /// not made. Answered 507; writes succeed again once there is room.
    #[error("{0}")]
    NoSpace(String),
}

impl StorageError {
    /// Whether the write failed for want of disk space: refused by the headroom, or an
    /// ENOSPC/EDQUOT from a file or from sled.
    pub fn is_no_space(&self) -> bool {
        match self {
            StorageError::NoSpace(_) => true,
            StorageError::Io(e) | StorageError::Db(sled::Error::Io(e)) => space::is_no_space(e),
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's message says what failed; the client's own wording says little.
        match e.as_db_error() {
            Some(db) => StorageError::Sql(format!("{}: {}", db.code().code(), db.message())),
            None => match std::error::Error::source(&e) {
                // A parameter the client could not send says why beside which one.
                Some(cause) => StorageError::Sql(format!("{e}: {cause}")),
                None => StorageError::Sql(e.to_string()),
            },
        }
    }
}

impl From<deadpool_postgres::PoolError> for StorageError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StorageError::Sql(format!("connection pool: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// Billable usage of one organization: distinct blobs of its non-deleted images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgUsage {
    pub space_in_bytes: u64,
    pub number_of_files: u64,
    /// Stored renders and their bytes: reported, never billed.
    #[serde(default)]
    pub renders: u64,
    #[serde(default)]
    pub render_bytes: u64,
    /// Stored mezzanines (decoded sources shared by renders) and their bytes: cache in the
    /// render-store budget like renders, but not renders, so counted apart.
    #[serde(default)]
    pub mezzanines: u64,
    #[serde(default)]
    pub mezzanine_bytes: u64,
}

/// One day of an organization's figures: the usage at the end of the day (or at its last
/// change) and the bytes served that day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayStats {
    pub space_in_bytes: u64,
    pub number_of_files: u64,
    pub renders: u64,
    pub render_bytes: u64,
    pub bytes_downloaded: u64,
}

impl DayStats {
    fn with_usage(mut self, u: &OrgUsage) -> DayStats {
        self.space_in_bytes = u.space_in_bytes;
        self.number_of_files = u.number_of_files;
        self.renders = u.renders;
        self.render_bytes = u.render_bytes;
        self
    }
}

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

/// A URL a render was served under: the `Host` it was asked for and the path with its query.
/// The default (an empty path) stands for a render asked where no edge cache can hold it (the
/// API listener's previews): it is recorded nowhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedPath {
    pub host: String,
    pub path: String,
}

/// Reference count of one blob over every image record (deleted or not) of every organization.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlobRef {
    size: u64,
    refs: u64,
}

/// What inserting an image record found.
#[derive(Debug)]
pub enum Inserted {
    Created,
    /// A record with that hash already exists (an expected race, not an error).
    Exists(Box<ImageRecord>),
}

/// The records and the bytes of one installation, as the rest of the appliance holds them.
#[derive(Clone)]
pub struct Storage {
    pub records: std::sync::Arc<dyn Records>,
    pub bytes: std::sync::Arc<dyn Bytes>,
}

impl Storage {
    /// The embedded default over one data folder: sled records and blob files, keeping
    /// `min_free` bytes free under it (see [`SledStore::open_with_headroom`]).
    pub fn open_embedded(path: &Path, cache_mb: u64, min_free: u64) -> Result<Storage> {
        Storage::open_local(path, cache_mb, min_free, None)
    }

    /// The configured backends: the records in PostgreSQL when `database` is given, else in
    /// sled in the data folder; the bytes in the bucket of `objects` when given, else in the
    /// data folder's blob files. Uploads are received in the data folder either way, and
    /// `min_free` bytes are kept free under it.
    pub fn open(
        path: &Path,
        cache_mb: u64,
        min_free: u64,
        objects: Option<&ObjectSettings>,
        database: Option<&DatabaseSettings>,
    ) -> Result<Storage> {
        let Some(database) = database else {
            return Storage::open_local(path, cache_mb, min_free, objects);
        };
        let files = FileBytes::open_with_headroom(path, min_free)?;
        let bytes: std::sync::Arc<dyn Bytes> = match objects {
            Some(settings) => std::sync::Arc::new(ObjectBytes::open(files, settings)?),
            None => std::sync::Arc::new(files),
        };
        let records = postgres::PgStore::open(&database.url, database.connections)?
            .with_render_cache(database.render_cache_bytes);
        // Large render bodies beside the source bytes, where GC sweeps them.
        records.keep_render_bodies_in(bytes.clone());
        Ok(Storage {
            records: std::sync::Arc::new(records),
            bytes,
        })
    }

    /// Sled records in the data folder, and the bytes in the bucket of `objects` when given
    /// (uploads are still received in the data folder), else in its blob files.
    pub fn open_local(
        path: &Path,
        cache_mb: u64,
        min_free: u64,
        objects: Option<&ObjectSettings>,
    ) -> Result<Storage> {
        let mut store = SledStore::open_with_headroom(path, cache_mb, min_free)?;
        if let Some(settings) = objects {
            // Render bodies beside the source bytes, where GC sweeps them.
            store.render_bodies =
                std::sync::Arc::new(ObjectBytes::open(store.blobs.clone(), settings)?);
        }
        let bytes = store.render_bodies.clone();
        Ok(Storage {
            records: std::sync::Arc::new(store),
            bytes,
        })
    }
}

/// Where the records are when they are in PostgreSQL (`storage.database_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Most connections this process opens.
    pub connections: usize,
    /// Stored renders kept in this process's memory, in bytes (0: none).
    pub render_cache_bytes: u64,
}

/// The embedded records: one sled database in the data folder. It keeps a handle on the blob
/// files beside it for the whole-folder operations (backups, readiness).
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    blobs: FileBytes,
    /// Where the bodies of large renders go: the blob files, or the object storage that holds
    /// the source bytes (see [`Storage::open_local`]).
    render_bodies: std::sync::Arc<dyn Bytes>,
    meta: Tree,
    orgs: Tree,
    users: Tree,
    keys: Tree,
    user_keys: Tree,
    members: Tree,
    images: Tree,
    img_binary: Tree,
    img_index: Tree,
    img_counts: Tree,
    blob_refs: Tree,
    org_blobs: Tree,
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
}

pub(crate) fn key2(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
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

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain records to JSON cannot fail (no maps with non-string keys).
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        tree,
        message: e.to_string(),
    })
}

/// Adds (`delta` 1) or removes (`delta` -1) a record's listing-index entries and counters.
pub(crate) fn index_record(
    img_index: &TransactionalTree,
    img_counts: &TransactionalTree,
    rec: &ImageRecord,
    delta: i64,
) -> std::result::Result<(), TxError> {
    let (entries, counters) = index::record_keys(rec);
    for k in entries {
        if delta > 0 {
            img_index.insert(k, &[])?;
        } else {
            img_index.remove(k)?;
        }
    }
    for k in counters {
        let before = match img_counts.get(&k)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        };
        let after = if delta > 0 {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        if after == 0 {
            img_counts.remove(k)?;
        } else {
            img_counts.insert(k, &after.to_be_bytes())?;
        }
    }
    Ok(())
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

/// Adds `delta` (±1) to the organization's reference count of a blob and keeps the usage
/// counter in step: the blob's size counts once per organization while any live image of it
/// refers to it.
fn adjust_org_blob(
    org_blobs: &TransactionalTree,
    org_usage: &TransactionalTree,
    org: &str,
    blob: &str,
    size: u64,
    delta: i64,
) -> std::result::Result<(), TxError> {
    let k = key2(org, blob);
    let before = match org_blobs.get(&k)? {
        Some(v) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])),
        None => 0,
    };
    let after = if delta >= 0 {
        before + delta as u64
    } else {
        before.saturating_sub(delta.unsigned_abs())
    };
    if after == 0 {
        org_blobs.remove(k)?;
    } else {
        org_blobs.insert(k, &after.to_be_bytes())?;
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
            img_binary: db.open_tree("img_binary")?,
            img_index: db.open_tree("img_index")?,
            img_counts: db.open_tree("img_counts")?,
            blob_refs: db.open_tree("blob_refs")?,
            org_blobs: db.open_tree("org_blobs")?,
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

    /// [`check::verify`] over these records and the blob files beside them (tests).
    #[cfg(test)]
    pub fn verify(&self, grace: std::time::Duration) -> Result<Vec<String>> {
        check::verify(self, &self.blobs, grace, &mut |_, _, _| {})
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
            &self.img_binary,
            &self.img_index,
            &self.img_counts,
            &self.blob_refs,
            &self.org_blobs,
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
        self.changed();
        self.flush_blocking()
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

impl Accounts for SledStore {
    // ---- organizations ----

    /// Creates an organization; `false` when the name is taken.
    fn create_org(&self, org: &Organization) -> Result<bool> {
        self.space.check()?;
        let swapped = self.orgs.compare_and_swap(
            org.name.as_bytes(),
            None as Option<&[u8]>,
            Some(encode(org)),
        )?;
        self.changed();
        Ok(swapped.is_ok())
    }

    fn get_org(&self, name: &str) -> Result<Option<Organization>> {
        self.orgs
            .get(name.as_bytes())?
            .map(|v| decode("orgs", &v))
            .transpose()
    }

    fn put_org(&self, org: &Organization) -> Result<()> {
        self.space.check()?;
        self.orgs.insert(org.name.as_bytes(), encode(org))?;
        self.changed();
        Ok(())
    }

    fn list_orgs(&self) -> Result<Vec<Organization>> {
        self.orgs
            .iter()
            .values()
            .map(|v| decode("orgs", &v?))
            .collect()
    }

    /// Adds bytes served for an organization to a day's figures.
    fn add_downloaded(&self, org: &str, day: &str, bytes: u64) -> Result<()> {
        let usage = self.org_usage(org)?;
        let day_key = key2(org, day);
        let mut failure = None;
        self.org_usage.update_and_fetch(&day_key, |old| {
            let current = match old.map(serde_json::from_slice::<DayStats>) {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    failure = Some(e.to_string());
                    return old.map(<[u8]>::to_vec);
                }
                None => DayStats::default().with_usage(&usage),
            };
            let next = DayStats {
                bytes_downloaded: current.bytes_downloaded + bytes,
                ..current
            };
            Some(encode(&next))
        })?;
        match failure {
            Some(message) => Err(StorageError::Corrupt {
                tree: "org_usage",
                message,
            }),
            None => Ok(()),
        }
    }

    /// The daily figures of an organization, oldest first.
    fn day_stats(&self, org: &str) -> Result<Vec<(String, DayStats)>> {
        let p = prefix(org);
        let mut out = Vec::new();
        for item in self.org_usage.scan_prefix(&p) {
            let (k, v) = item?;
            let day = String::from_utf8_lossy(k.get(p.len()..).unwrap_or_default()).to_string();
            out.push((day, decode("org_usage", &v)?));
        }
        Ok(out)
    }

    /// The usage counters of every organization, by name.
    fn usage_by_org(&self) -> Result<Vec<(String, OrgUsage)>> {
        let mut out = Vec::new();
        for item in self.org_usage.iter() {
            let (k, v) = item?;
            // Day figures live under `org \0 day`; the counters under the bare name.
            if !k.contains(&0) {
                out.push((
                    String::from_utf8_lossy(&k).to_string(),
                    decode("org_usage", &v)?,
                ));
            }
        }
        Ok(out)
    }

    /// Billable usage counters of an organization.
    fn org_usage(&self, org: &str) -> Result<OrgUsage> {
        Ok(self
            .org_usage
            .get(org.as_bytes())?
            .map(|v| decode("org_usage", &v))
            .transpose()?
            .unwrap_or_default())
    }

    // ---- users, keys, memberships ----

    fn put_user(&self, user: &User) -> Result<()> {
        self.space.check()?;
        self.users.insert(user.id.as_bytes(), encode(user))?;
        Ok(())
    }

    fn list_users(&self) -> Result<Vec<User>> {
        self.users
            .iter()
            .values()
            .map(|v| decode("users", &v?))
            .collect()
    }

    fn list_keys(&self) -> Result<Vec<(String, ApiKey)>> {
        let mut out = Vec::new();
        for item in self.keys.iter() {
            let (digest, v) = item?;
            out.push((
                String::from_utf8_lossy(&digest).to_string(),
                decode("keys", &v)?,
            ));
        }
        Ok(out)
    }

    fn list_memberships(&self) -> Result<Vec<Membership>> {
        self.members
            .iter()
            .values()
            .map(|v| decode("members", &v?))
            .collect()
    }

    fn put_day_stats(&self, org: &str, day: &str, stats: &DayStats) -> Result<()> {
        self.space.check()?;
        self.org_usage.insert(key2(org, day), encode(stats))?;
        Ok(())
    }

    fn get_user(&self, id: &str) -> Result<Option<User>> {
        self.users
            .get(id.as_bytes())?
            .map(|v| decode("users", &v))
            .transpose()
    }

    /// Stores a key under the digest of its secret.
    fn put_key(&self, digest: &str, key: &ApiKey) -> Result<()> {
        self.space.check()?;
        tx_result(
            (&self.keys, &self.user_keys).transaction(|(keys, user_keys)| {
                keys.insert(digest.as_bytes(), encode(key))?;
                user_keys.insert(key2(&key.user_id, &key.id), digest.as_bytes())?;
                Ok::<_, TxError>(())
            }),
        )
    }

    /// Looks a key up by the digest of its secret.
    fn get_key(&self, digest: &str) -> Result<Option<ApiKey>> {
        self.keys
            .get(digest.as_bytes())?
            .map(|v| decode("keys", &v))
            .transpose()
    }

    /// Keys of a user, oldest first.
    fn user_keys(&self, user_id: &str) -> Result<Vec<(String, ApiKey)>> {
        let mut out = Vec::new();
        for item in self.user_keys.scan_prefix(prefix(user_id)) {
            let (_, digest) = item?;
            let digest = String::from_utf8_lossy(&digest).to_string();
            if let Some(key) = self.get_key(&digest)? {
                out.push((digest, key));
            }
        }
        out.sort_by(|a, b| a.1.created.cmp(&b.1.created));
        Ok(out)
    }

    /// Deletes a key of a user; `false` if there is no such key.
    fn delete_key(&self, user_id: &str, key_id: &str) -> Result<bool> {
        let Some(digest) = self.user_keys.get(key2(user_id, key_id))? else {
            return Ok(false);
        };
        tx_result(
            (&self.keys, &self.user_keys).transaction(|(keys, user_keys)| {
                keys.remove(digest.as_ref())?;
                user_keys.remove(key2(user_id, key_id))?;
                Ok::<_, TxError>(())
            }),
        )?;
        Ok(true)
    }

    fn put_membership(&self, m: &Membership) -> Result<()> {
        self.space.check()?;
        self.members
            .insert(key2(&m.organization, &m.user_id), encode(m))?;
        Ok(())
    }

    fn get_membership(&self, org: &str, user_id: &str) -> Result<Option<Membership>> {
        self.members
            .get(key2(org, user_id))?
            .map(|v| decode("members", &v))
            .transpose()
    }

    fn delete_membership(&self, org: &str, user_id: &str) -> Result<bool> {
        Ok(self.members.remove(key2(org, user_id))?.is_some())
    }

    fn org_memberships(&self, org: &str) -> Result<Vec<Membership>> {
        self.members
            .scan_prefix(prefix(org))
            .values()
            .map(|v| decode("members", &v?))
            .collect()
    }

    fn user_memberships(&self, user_id: &str) -> Result<Vec<Membership>> {
        let mut out = Vec::new();
        for v in self.members.iter().values() {
            let m: Membership = decode("members", &v?)?;
            if m.user_id == user_id {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The secret that signs API tokens, made on first use and kept in the store so that
    /// every process over it (and every restart) agrees on it.
    fn token_secret(&self) -> Result<Vec<u8>> {
        if let Some(v) = self.meta.get("token_secret")? {
            return Ok(v.to_vec());
        }
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| StorageError::Io(std::io::Error::other(e.to_string())))?;
        // Two first uses at once agree on whichever secret was stored first.
        match self
            .meta
            .compare_and_swap("token_secret", None as Option<&[u8]>, Some(&fresh[..]))?
        {
            Ok(()) => Ok(fresh.to_vec()),
            Err(current) => Ok(current
                .current
                .map(|v| v.to_vec())
                .unwrap_or(fresh.to_vec())),
        }
    }

    /// Replaces the token secret: every token issued so far stops working.
    fn rotate_token_secret(&self) -> Result<()> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| StorageError::Io(std::io::Error::other(e.to_string())))?;
        self.meta.insert("token_secret", &fresh[..])?;
        self.db.flush()?;
        Ok(())
    }
}

impl ImageRecords for SledStore {
    // ---- source images ----

    fn get_image(&self, org: &str, hash: &str) -> Result<Option<ImageRecord>> {
        self.images
            .get(key2(org, hash))?
            .map(|v| decode("images", &v))
            .transpose()
    }

    /// Full hashes of the organization's images that start with `prefix` (at most `max`).
    fn hashes_with_prefix(&self, org: &str, hash_prefix: &str, max: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for k in self
            .images
            .scan_prefix(key2(org, hash_prefix))
            .keys()
            .take(max)
        {
            let k = k?;
            let hash = k.get(org.len() + 1..).unwrap_or_default();
            out.push(String::from_utf8_lossy(hash).to_string());
        }
        Ok(out)
    }

    /// The shortest prefix of `hash`, at least 6 characters, that no other image of the
    /// organization shares.
    fn short_hash(&self, org: &str, hash: &str) -> Result<String> {
        for len in 6..hash.len() {
            let p = hash.get(..len).unwrap_or(hash);
            if self.hashes_with_prefix(org, p, 2)?.len() <= 1 {
                return Ok(p.to_string());
            }
        }
        Ok(hash.to_string())
    }

    /// Image records of an organization with this SHA-1.
    fn images_by_binary(&self, org: &str, binary_hash: &str) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        for k in self.img_binary.scan_prefix(key2(org, binary_hash)).keys() {
            let k = k?;
            let hash = k
                .get(org.len() + binary_hash.len() + 2..)
                .unwrap_or_default();
            if let Some(rec) = self.get_image(org, &String::from_utf8_lossy(hash))? {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Inserts a new image record with its indexes, blob reference and usage counters, in one
    /// transaction. An existing record with the same hash is returned instead.
    fn insert_image(&self, rec: &ImageRecord) -> Result<Inserted> {
        self.space.check()?;
        let k = key2(&rec.organization, &rec.hash);
        let result = tx_result(
            (
                &self.images,
                &self.img_binary,
                &self.img_index,
                &self.img_counts,
                &self.blob_refs,
                &self.org_blobs,
                &self.org_usage,
            )
                .transaction(
                    |(
                        images,
                        img_binary,
                        img_index,
                        img_counts,
                        blob_refs,
                        org_blobs,
                        org_usage,
                    )| {
                        if let Some(existing) = images.get(&k)? {
                            return Ok(Inserted::Exists(Box::new(tx_decode("images", &existing)?)));
                        }
                        images.insert(k.as_slice(), encode(rec))?;
                        img_binary
                            .insert(key3(&rec.organization, &rec.binary_hash, &rec.hash), &[])?;
                        index_record(img_index, img_counts, rec, 1)?;
                        let mut r: BlobRef = match blob_refs.get(rec.blob.as_bytes())? {
                            Some(v) => tx_decode("blob_refs", &v)?,
                            None => BlobRef {
                                size: rec.size,
                                refs: 0,
                            },
                        };
                        r.refs += 1;
                        blob_refs.insert(rec.blob.as_bytes(), encode(&r))?;
                        if !rec.deleted {
                            adjust_org_blob(
                                org_blobs,
                                org_usage,
                                &rec.organization,
                                &rec.blob,
                                rec.size,
                                1,
                            )?;
                        }
                        Ok(Inserted::Created)
                    },
                ),
        );
        // Checked after the commit: of two such images inserted at once, the later one to
        // look sees the earlier ([`Records::generation`]).
        let prefix = rec.hash.get(..SHORTEST_PREFIX).unwrap_or(&rec.hash);
        if matches!(result, Ok(Inserted::Created))
            && self.hashes_with_prefix(&rec.organization, prefix, 2)?.len() > 1
        {
            self.changed();
        }
        result
    }

    /// Replaces the record of an existing image whose identity (hash, blob) is unchanged, and
    /// keeps the usage counters in step with its `deleted` flag.
    fn update_image(&self, rec: &ImageRecord) -> Result<bool> {
        self.space.check()?;
        let k = key2(&rec.organization, &rec.hash);
        let result = tx_result(
            (
                &self.images,
                &self.img_index,
                &self.img_counts,
                &self.org_blobs,
                &self.org_usage,
            )
                .transaction(
                    |(images, img_index, img_counts, org_blobs, org_usage)| {
                        let Some(old) = images.get(&k)? else {
                            return Ok(false);
                        };
                        let old: ImageRecord = tx_decode("images", &old)?;
                        index_record(img_index, img_counts, &old, -1)?;
                        index_record(img_index, img_counts, rec, 1)?;
                        if old.deleted != rec.deleted {
                            let delta = if rec.deleted { -1 } else { 1 };
                            adjust_org_blob(
                                org_blobs,
                                org_usage,
                                &rec.organization,
                                &rec.blob,
                                rec.size,
                                delta,
                            )?;
                        }
                        images.insert(k.as_slice(), encode(rec))?;
                        Ok(true)
                    },
                ),
        );
        self.changed();
        result
    }

    /// Removes an image record for good, and the aliases that point to it. Returns the blob id
    /// when no record of any organization refers to it any more, so the caller can remove the
    /// file.
    fn remove_image(&self, org: &str, hash: &str) -> Result<Option<String>> {
        self.remove_image_where(org, hash, |_| true)
    }

    fn remove_expired_image(&self, org: &str, hash: &str, cutoff: i64) -> Result<Option<String>> {
        self.remove_image_where(org, hash, |rec| {
            rec.deleted && rec.deleted_at.is_some_and(|at| at < cutoff)
        })
    }

    /// Number of image records referring to a blob.
    fn blob_refs(&self, blob: &str) -> Result<u64> {
        Ok(self
            .blob_refs
            .get(blob.as_bytes())?
            .map(|v| decode::<BlobRef>("blob_refs", &v))
            .transpose()?
            .map_or(0, |r| r.refs))
    }

    /// Every organization with image records, for background passes.
    fn all_images(&self) -> Box<dyn Iterator<Item = Result<ImageRecord>> + '_> {
        Box::new(self.images.iter().values().map(|v| decode("images", &v?)))
    }

    /// Soft-deleted images whose retention ended before `cutoff` (Unix seconds).
    fn expired_images(&self, cutoff: i64, limit: usize) -> Result<Vec<(String, String)>> {
        // The deletion-time index of every organization, up to the cutoff: work in proportion
        // to what has expired.
        let field = index::IndexField::DeletedAt;
        let mut upto = vec![0x01];
        upto.extend_from_slice(&index::ordered_f64(cutoff as f64));
        let span = query::Span {
            from: vec![0x01],
            to: Some(upto),
        };
        let mut out = Vec::new();
        for org in self.list_orgs()? {
            for p in self.index_walk(&org.name, true, &field, &span, false) {
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push((org.name.clone(), p?.hash));
            }
        }
        Ok(out)
    }
}

impl SledStore {
    /// Removes an image record for good when `remove` says so of it, in one transaction
    /// ([`ImageRecords::remove_image`]).
    fn remove_image_where(
        &self,
        org: &str,
        hash: &str,
        remove: impl Fn(&ImageRecord) -> bool,
    ) -> Result<Option<String>> {
        let k = key2(org, hash);
        let result = tx_result(
            (
                &self.images,
                &self.img_binary,
                &self.img_index,
                &self.img_counts,
                &self.blob_refs,
                &self.org_blobs,
                &self.org_usage,
            )
                .transaction(
                    |(
                        images,
                        img_binary,
                        img_index,
                        img_counts,
                        blob_refs,
                        org_blobs,
                        org_usage,
                    )| {
                        let Some(old) = images.get(k.as_slice())? else {
                            return Ok(None);
                        };
                        let rec: ImageRecord = tx_decode("images", &old)?;
                        if !remove(&rec) {
                            return Ok(None);
                        }
                        images.remove(k.as_slice())?;
                        img_binary.remove(key3(org, &rec.binary_hash, hash))?;
                        index_record(img_index, img_counts, &rec, -1)?;
                        if !rec.deleted {
                            adjust_org_blob(org_blobs, org_usage, org, &rec.blob, rec.size, -1)?;
                        }
                        let mut r: BlobRef = match blob_refs.get(rec.blob.as_bytes())? {
                            Some(v) => tx_decode("blob_refs", &v)?,
                            None => BlobRef {
                                size: rec.size,
                                refs: 1,
                            },
                        };
                        r.refs = r.refs.saturating_sub(1);
                        if r.refs == 0 {
                            blob_refs.remove(rec.blob.as_bytes())?;
                            Ok(Some(rec.blob))
                        } else {
                            blob_refs.insert(rec.blob.as_bytes(), encode(&r))?;
                            Ok(None)
                        }
                    },
                ),
        );
        self.changed();
        // After the record: an alias made meanwhile found no image, so none is left behind.
        if result.is_ok() {
            self.delete_aliases_of(org, hash)?;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
