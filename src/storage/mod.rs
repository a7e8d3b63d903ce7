//! Where everything is kept, behind two interfaces: the records ([`Records`], in
//! [`records`]) and the bytes ([`Bytes`], in [`blobs`]). The rest of the appliance holds them
//! as [`Storage`] and never sees a backend's types.
//!
//! Layout: the files directly here hold the interfaces, the types they share and the code
//! that works over the interfaces on every backend (checks, backups, the listing-index keys,
//! free space). Each backend has a folder of its own: [`sled`] the embedded records (one sled
//! database in the data folder, [`SledStore`]), [`postgres`] the records shared by several
//! processes, [`objects`] the bytes in an object storage; [`blobs`] the bytes in
//! content-addressed files in the data folder ([`FileBytes`]).
//!
//! Key layout: composite keys join their parts with a zero byte (`org \0 hash`, `key2`),
//! which sorts by the first part and allows prefix scans per organization; backups write
//! their frames' keys the same way.

pub mod aliases;
pub mod backup;
pub mod blobs;
pub mod check;
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
pub mod sled;
pub mod space;
pub mod stacks;

use crate::model::image::ImageRecord;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use aliases::{AliasPut, AliasRecords, StoredAlias};
pub use blobs::{BlobUpload, BlobWriter, ByteStream, Bytes, FileBytes, ReceivedBlob};
pub use check::RenderStatus;
pub use edge::{EdgeJob, QueuedEdgeJob};
pub use objects::{ObjectBytes, ObjectSettings};
pub use records::{
    Accounts, EdgeQueue, ImageIndex, ImageRecords, Records, RecordsLock, RenderRecords,
    StackRecords,
};

pub use self::sled::{compact, SledStore};
pub use renders::{Purged, RenderMeta, StackRevision, StoredRender, MEZZANINE_CONTENT_TYPE};
pub use space::Space;
pub use stacks::StoredStack;

/// Where a long task over the storage says how far it got: what it counts, how many so far,
/// and the total when it is known (`darkroom admin` shows it).
pub type Progress<'a> = &'a mut dyn FnMut(&'static str, u64, Option<u64>);

/// Version of the data layout. Opening a store written by a newer version fails.
/// 2: the listing indexes (`img_index`, `img_counts`) replace the creation-time index.
/// 3: settled listing entries are packed in runs (`img_runs`, `img_gone`); an older binary
/// would not see them.
/// 4: the embedded records keep the binary-hash lookup in the listing index and the live
/// references per organization in each blob's references (no `img_binary`, no `org_blobs`).
pub const SCHEMA_VERSION: u32 = 4;

/// Storage failures. Callers treat them as internal errors.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Db(#[from] ::sled::Error),
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
            StorageError::Io(e) | StorageError::Db(::sled::Error::Io(e)) => space::is_no_space(e),
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

/// A URL a render was served under: the `Host` it was asked for and the path with its query.
/// The default (an empty path) stands for a render asked where no edge cache can hold it (the
/// API listener's previews): it is recorded nowhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedPath {
    pub host: String,
    pub path: String,
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

pub(crate) fn key2(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain records to JSON cannot fail (no maps with non-string keys).
    serde_json::to_vec(v).unwrap_or_default()
}
