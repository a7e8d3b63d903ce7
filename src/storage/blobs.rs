//! Source bytes as content-addressed files beside the database: `blobs/ab/cd/<blake3>`.
//! A blob is written to `tmp/`, fsynced and renamed into place before any metadata refers to
//! it, so a crash leaves at worst an unreferenced file (which GC removes), never a reference
//! without a file. Identical bytes are stored once, however many images refer to them.

use super::space::{io_refusal, Space};
use sha1::Digest;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// The blob files of one data folder.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
    /// Uploads announce their bytes here and are refused below the headroom.
    space: Arc<Space>,
    /// Held while GC decides to unlink a file and unlinks it, and while an upload takes over
    /// an existing file and commits its record: see [`BlobStore::removal_lock`].
    removals: Arc<std::sync::Mutex<()>>,
}

/// Bytes being received: a temporary file and the digests computed while writing it. Dropped
/// without [`BlobUpload::finish`] (the client went away, the handler was cancelled), it
/// removes its temporary file.
pub struct BlobUpload {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    blake3: blake3::Hasher,
    sha1: sha1::Sha1,
    size: u64,
    space: Arc<Space>,
}

/// A fully received upload, not yet in the store.
#[derive(Debug, Clone)]
pub struct ReceivedBlob {
    pub temp_path: PathBuf,
    /// BLAKE3 hex: the blob id.
    pub id: String,
    /// SHA-1 hex: rokka's `binary_hash`.
    pub sha1: String,
    pub size: u64,
}

impl BlobStore {
    /// Opens (creating) the blob folders under the data folder.
    pub fn open(data: &Path) -> io::Result<BlobStore> {
        let root = data.join("blobs");
        let tmp = data.join("tmp");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&tmp)?;
        Ok(BlobStore {
            root,
            tmp,
            space: Arc::new(Space::new(data, 0)),
            removals: Arc::default(),
        })
    }

    /// Serialises "is this file still unreferenced? then unlink it" (GC) with "this file
    /// exists, so refer to it" (an upload of bytes already stored): without it, GC could
    /// unlink a file between an upload's check and its record's commit. Both sides hold it
    /// only for synchronous, short steps.
    pub fn removal_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.removals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes uploads respect this free-space watch.
    pub(crate) fn watch(&mut self, space: Arc<Space>) {
        self.space = space;
    }

    /// The folder the blob files live under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this id lives.
    pub fn path(&self, id: &str) -> PathBuf {
        let a = id.get(0..2).unwrap_or("00");
        let b = id.get(2..4).unwrap_or("00");
        self.root.join(a).join(b).join(id)
    }

    /// A fresh name in the temporary folder.
    fn temp_path(&self) -> io::Result<PathBuf> {
        let mut name = [0u8; 16];
        getrandom::fill(&mut name).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(self.tmp.join(format!("up-{}", hex::encode(name))))
    }

    /// Starts receiving bytes into a temporary file.
    /// Refused (`ErrorKind::StorageFull`) while the data folder is below its headroom.
    pub async fn begin(&self) -> io::Result<BlobUpload> {
        self.space.check().map_err(io_refusal)?;
        let path = self.temp_path()?;
        let file = tokio::fs::File::create(&path).await?;
        Ok(BlobUpload {
            path,
            file: Some(file),
            blake3: blake3::Hasher::new(),
            sha1: sha1::Sha1::new(),
            size: 0,
            space: self.space.clone(),
        })
    }

    /// A new temporary file for bytes written synchronously (imports); hand it to
    /// [`BlobStore::commit`] as a [`ReceivedBlob`] once written.
    pub fn create_temp(&self) -> io::Result<(PathBuf, std::fs::File)> {
        self.space.check().map_err(io_refusal)?;
        let path = self.temp_path()?;
        let file = std::fs::File::create(&path)?;
        Ok((path, file))
    }

    /// Moves a received upload into place (fsync + rename). Returns without writing when a
    /// blob with the same id already exists; the temporary file is removed either way.
    pub fn commit(&self, received: &ReceivedBlob) -> io::Result<()> {
        let target = self.path(&received.id);
        if target.exists() {
            let _ = std::fs::remove_file(&received.temp_path);
            // The file may be an orphan about to be collected; a fresh modification time puts
            // it back under the collector's grace period while its new record is committed.
            if let Ok(file) = std::fs::File::options().append(true).open(&target) {
                let _ = file.set_modified(std::time::SystemTime::now());
            }
            return Ok(());
        }
        let dir = target
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        std::fs::create_dir_all(&dir)?;
        std::fs::File::open(&received.temp_path)?.sync_all()?;
        std::fs::rename(&received.temp_path, &target)?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    }

    /// Reads a whole blob into memory (for decoding).
    pub fn read(&self, id: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(id))
    }

    /// Whether the blob file was last modified at least `age` ago (false when it is missing).
    pub fn older_than(&self, id: &str, age: std::time::Duration) -> bool {
        std::fs::metadata(self.path(id))
            .and_then(|m| m.modified())
            .ok()
            .is_some_and(|t| t.elapsed().unwrap_or_default() >= age)
    }

    /// Whether the blob file exists.
    pub fn exists(&self, id: &str) -> bool {
        self.path(id).is_file()
    }

    /// Removes a blob file; a missing file is not an error (removal is idempotent).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Ids of every blob file, for verification and garbage collection.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for a in std::fs::read_dir(&self.root)? {
            let a = a?.path();
            if !a.is_dir() {
                continue;
            }
            for b in std::fs::read_dir(&a)? {
                let b = b?.path();
                if !b.is_dir() {
                    continue;
                }
                for f in std::fs::read_dir(&b)? {
                    if let Some(name) = f?.file_name().to_str() {
                        out.push(name.to_string());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every blob id of one shard: the files under `xx/` where `xx` is `shard` in hex.
    pub fn list_shard(&self, shard: u8) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let a = self.root.join(format!("{shard:02x}"));
        if !a.is_dir() {
            return Ok(out);
        }
        for b in std::fs::read_dir(&a)? {
            let b = b?.path();
            if !b.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&b)? {
                if let Some(name) = f?.file_name().to_str() {
                    out.push(name.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Removes temporary files left by interrupted uploads.
    pub fn clear_tmp(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.tmp)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(())
    }
}

impl BlobUpload {
    /// Appends a chunk. Refused (`ErrorKind::StorageFull`) when it would leave less than the
    /// headroom free.
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.space.reserve(chunk.len() as u64).map_err(io_refusal)?;
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the upload was already finished"));
        };
        self.blake3.update(chunk);
        self.sha1.update(chunk);
        self.size += chunk.len() as u64;
        file.write_all(chunk).await
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Finishes receiving and returns the digests.
    pub async fn finish(mut self) -> io::Result<ReceivedBlob> {
        if let Some(file) = self.file.as_mut() {
            file.flush().await?;
        }
        // From here on the temporary file belongs to the `ReceivedBlob`.
        self.file = None;
        Ok(ReceivedBlob {
            temp_path: std::mem::take(&mut self.path),
            id: self.blake3.finalize().to_hex().to_string(),
            sha1: hex::encode(std::mem::take(&mut self.sha1).finalize()),
            size: self.size,
        })
    }

    /// Gives up on this upload and removes the temporary file.
    pub async fn abort(mut self) {
        self.file = None;
        let _ = tokio::fs::remove_file(std::mem::take(&mut self.path)).await;
    }
}

impl Drop for BlobUpload {
    fn drop(&mut self) {
        if self.file.take().is_some() && !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ReceivedBlob {
    /// Removes the temporary file of an upload that will not be stored.
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.temp_path);
    }
}
