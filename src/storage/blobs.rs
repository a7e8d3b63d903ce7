//! The bytes interface ([`Bytes`]) and its embedded implementation: source bytes as
//! content-addressed files beside the database, `blobs/ab/cd/<blake3>` ([`FileBytes`]).
//!
//! Every backend receives an upload the same way: into a temporary file of the local data
//! folder ([`BlobUpload`]), hashed while it is written, checked, and only then committed into
//! the backend ([`Bytes::commit`]) before any record refers to it. So a crash leaves at worst
//! an unreferenced blob (which GC removes), never a reference without bytes. Identical bytes
//! are stored once, however many images refer to them.

use super::space::{io_refusal, Space};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sha1::Digest;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// A blob's bytes as a stream of chunks, for downloads.
pub type ByteStream = BoxStream<'static, io::Result<bytes::Bytes>>;

/// Where source bytes live: content-addressed blobs, written once and immutable. Methods that
/// block (file or network I/O) are called from blocking tasks or the CPU pool, except the two
/// that return futures.
pub trait Bytes: Send + Sync {
    /// Starts receiving an upload into a temporary file of the local data folder. Refused
    /// (`ErrorKind::StorageFull`) while the data folder is below its headroom.
    fn begin(&self) -> BoxFuture<'_, io::Result<BlobUpload>>;
    /// A temporary file for bytes written synchronously (imports, tests); hand it to
    /// [`Bytes::commit`] once written.
    fn stage(&self) -> io::Result<BlobWriter>;
    /// Stores a received upload under its id, durably, before any record refers to it.
    /// Returns without writing when the blob exists (and keeps it from being collected as an
    /// orphan meanwhile); the temporary file is removed either way.
    fn commit(&self, received: &ReceivedBlob) -> io::Result<()>;
    /// A whole blob in memory (for decoding).
    fn read(&self, id: &str) -> io::Result<Vec<u8>>;
    /// A blob as a stream of chunks (for downloads).
    fn stream(&self, id: &str) -> BoxFuture<'_, io::Result<ByteStream>>;
    /// A blob's size and a blocking reader of its bytes (backups); `None` when it is missing.
    /// Once open, the bytes stay readable even if the blob is removed meanwhile.
    fn reader(&self, id: &str) -> io::Result<Option<(u64, Box<dyn io::Read + Send>)>>;
    /// The size of a blob; `None` when it is missing.
    fn size(&self, id: &str) -> io::Result<Option<u64>>;
    /// Whether a blob exists.
    fn exists(&self, id: &str) -> bool;
    /// Whether the blob was last written at least `age` ago (false when it is missing).
    fn older_than(&self, id: &str, age: std::time::Duration) -> bool;
    /// Removes a blob; a missing one is not an error (removal is idempotent).
    fn remove(&self, id: &str) -> io::Result<()>;
    /// Every blob id of one shard (of 256: the first two hex digits of the id).
    fn list_shard(&self, shard: u8) -> io::Result<Vec<String>>;
    /// The free-space watch of the local data folder that writes are checked against
    /// (refreshed by a background task). Records kept on the same disk check the same watch.
    fn space(&self) -> &Space;
    /// For readiness probes, in constant work: the blobs can be reached.
    fn probe_ready(&self) -> io::Result<()>;

    /// Stores the bytes of a large render under its key, before the record that refers to it
    /// is committed. Renders are cache: a body lost in a crash is a miss, so this need not be
    /// durable, only never half-written.
    fn put_render_body(&self, key: &[u8], body: &[u8]) -> io::Result<()>;
    /// The bytes of a large render; `None` when they are missing.
    fn render_body(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>>;
    /// Removes the bytes of a render; missing ones are not an error.
    fn remove_render_body(&self, key: &[u8]) -> io::Result<()>;
    /// Removes the render bodies of one shard (of 256: the first byte of the key) written at
    /// least `grace` ago for which `referenced` says no, and whatever is left of writes that
    /// never finished; returns the bodies and bytes removed.
    fn sweep_render_bodies(
        &self,
        shard: u8,
        grace: std::time::Duration,
        referenced: &dyn Fn(&[u8]) -> io::Result<bool>,
    ) -> io::Result<(u64, u64)>;

    /// A node-local copy of the mezzanine body under `key`, when this backend keeps copies of
    /// a shared store (the bucket) and has one; `None` otherwise. A mezzanine is built
    /// deterministically from its source, so a copy is exactly what the shared store holds
    /// or would hold. The embedded files are local already and keep no copies.
    fn mezzanine_copy(&self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }
    /// Keeps a node-local copy of the mezzanine body under `key` (just stored, or just read
    /// from the shared store), when this backend keeps copies; never fails.
    fn keep_mezzanine_copy(&self, _key: &[u8], _body: &[u8]) {}
}

/// The blob files of one data folder (`blobs/ab/cd/<blake3>`), and the bodies of large renders
/// (`renders/ab/cd/<key in hex>`).
#[derive(Debug, Clone)]
pub struct FileBytes {
    root: PathBuf,
    renders: PathBuf,
    tmp: PathBuf,
    /// Uploads announce their bytes here and are refused below the headroom.
    space: Arc<Space>,
}

/// Bytes being received: a temporary file and the digests computed while writing it. Dropped
/// without [`BlobUpload::finish`] (the client went away, the handler was cancelled), it
/// removes its temporary file.
pub struct BlobUpload {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    digests: Digests,
    space: Arc<Space>,
}

/// Bytes written synchronously into a temporary file, hashed as they go (imports, tests).
pub struct BlobWriter {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    digests: Digests,
    space: Arc<Space>,
}

/// The digests of bytes being received.
struct Digests {
    blake3: blake3::Hasher,
    sha1: sha1::Sha1,
    size: u64,
}

impl Digests {
    fn new() -> Digests {
        Digests {
            blake3: blake3::Hasher::new(),
            sha1: sha1::Sha1::new(),
            size: 0,
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        self.blake3.update(chunk);
        self.sha1.update(chunk);
        self.size += chunk.len() as u64;
    }

    fn received(&mut self, temp_path: PathBuf) -> ReceivedBlob {
        ReceivedBlob {
            temp_path,
            id: self.blake3.finalize().to_hex().to_string(),
            sha1: hex::encode(std::mem::take(&mut self.sha1).finalize()),
            size: self.size,
        }
    }
}

/// A fully received upload, not yet in the store: its digests and its temporary file.
#[derive(Debug, Clone)]
pub struct ReceivedBlob {
    temp_path: PathBuf,
    /// BLAKE3 hex: the blob id.
    pub id: String,
    /// SHA-1 hex: rokka's `binary_hash`.
    pub sha1: String,
    pub size: u64,
}

impl FileBytes {
    /// Opens (creating) the blob folders under the data folder.
    pub fn open(data: &Path) -> io::Result<FileBytes> {
        let root = data.join("blobs");
        let tmp = data.join("tmp");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&tmp)?;
        Ok(FileBytes {
            root,
            renders: data.join("renders"),
            tmp,
            space: Arc::new(Space::new(data, 0)),
        })
    }

    /// Opens the blob folders of a data folder for a process that owns it: temporary files
    /// left by an earlier run are removed, the free-space reserve is given back on a full
    /// disk, and uploads are refused below `min_free` bytes of free space.
    pub fn open_with_headroom(data: &Path, min_free: u64) -> io::Result<FileBytes> {
        std::fs::create_dir_all(data)?;
        let mut blobs = FileBytes::open(data)?;
        blobs.clear_tmp()?;
        let _ = std::fs::remove_file(data.join(format!("{}.tmp", super::space::RESERVE_FILE)));
        super::space::release_reserve_if_full(data)?;
        blobs.watch(Arc::new(Space::new(data, min_free)));
        Ok(blobs)
    }

    /// The data folder these blob files are in.
    pub(crate) fn data_folder(&self) -> &Path {
        self.root.parent().unwrap_or(&self.root)
    }

    /// The free-space watch uploads are checked against.
    pub(crate) fn space_watch(&self) -> Arc<Space> {
        self.space.clone()
    }

    /// Makes uploads respect this free-space watch.
    pub(crate) fn watch(&mut self, space: Arc<Space>) {
        self.space = space;
    }

    /// Where the blob with this id lives.
    pub fn path(&self, id: &str) -> PathBuf {
        let a = id.get(0..2).unwrap_or("00");
        let b = id.get(2..4).unwrap_or("00");
        self.root.join(a).join(b).join(id)
    }

    /// Where the bytes of a large render live.
    pub fn render_path(&self, key: &[u8]) -> PathBuf {
        let name = hex::encode(key);
        self.renders
            .join(name.get(0..2).unwrap_or("00"))
            .join(name.get(2..4).unwrap_or("00"))
            .join(name)
    }

    /// A fresh name in the temporary folder.
    fn temp_path(&self) -> io::Result<PathBuf> {
        let mut name = [0u8; 16];
        getrandom::fill(&mut name).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(self.tmp.join(format!("up-{}", hex::encode(name))))
    }

    /// Ids of every blob file (backups of the whole folder, tests).
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for shard in 0..=255u8 {
            out.extend(self.list_shard(shard)?);
        }
        Ok(out)
    }

    /// Removes temporary files left by interrupted uploads.
    pub(crate) fn clear_tmp(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.tmp)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(())
    }
}

impl Bytes for FileBytes {
    fn begin(&self) -> BoxFuture<'_, io::Result<BlobUpload>> {
        Box::pin(async move {
            self.space.check().map_err(io_refusal)?;
            let path = self.temp_path()?;
            let file = tokio::fs::File::create(&path).await?;
            Ok(BlobUpload {
                path,
                file: Some(file),
                digests: Digests::new(),
                space: self.space.clone(),
            })
        })
    }

    fn stage(&self) -> io::Result<BlobWriter> {
        self.space.check().map_err(io_refusal)?;
        let path = self.temp_path()?;
        let file = std::fs::File::create(&path)?;
        Ok(BlobWriter {
            path,
            file: Some(std::io::BufWriter::with_capacity(256 * 1024, file)),
            digests: Digests::new(),
            space: self.space.clone(),
        })
    }

    fn commit(&self, received: &ReceivedBlob) -> io::Result<()> {
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

    fn read(&self, id: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(id))
    }

    fn stream(&self, id: &str) -> BoxFuture<'_, io::Result<ByteStream>> {
        let path = self.path(id);
        Box::pin(async move {
            use tokio::io::AsyncReadExt;
            let file = tokio::fs::File::open(path).await?;
            let chunks = futures_util::stream::unfold(Some(file), |state| async move {
                let mut file = state?;
                let mut buf = vec![0u8; 64 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(bytes::Bytes::from(buf)), Some(file)))
                    }
                    Err(e) => Some((Err(e), None)),
                }
            });
            Ok(Box::pin(chunks) as ByteStream)
        })
    }

    fn reader(&self, id: &str) -> io::Result<Option<(u64, Box<dyn io::Read + Send>)>> {
        match std::fs::File::open(self.path(id)) {
            Ok(file) => Ok(Some((file.metadata()?.len(), Box::new(file)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn size(&self, id: &str) -> io::Result<Option<u64>> {
        match std::fs::metadata(self.path(id)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn exists(&self, id: &str) -> bool {
        self.path(id).is_file()
    }

    fn older_than(&self, id: &str, age: std::time::Duration) -> bool {
        std::fs::metadata(self.path(id))
            .and_then(|m| m.modified())
            .ok()
            .is_some_and(|t| t.elapsed().unwrap_or_default() >= age)
    }

    fn remove(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn list_shard(&self, shard: u8) -> io::Result<Vec<String>> {
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

    fn space(&self) -> &Space {
        &self.space
    }

    fn probe_ready(&self) -> io::Result<()> {
        if self.root.is_dir() && self.tmp.is_dir() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the blob folder is missing",
            ))
        }
    }

    /// A temporary name beside the target, then a rename, so a reader never sees half a
    /// file. Not fsynced: a render is cache.
    fn put_render_body(&self, key: &[u8], body: &[u8]) -> io::Result<()> {
        self.space.reserve(body.len() as u64).map_err(io_refusal)?;
        let target = self.render_path(key);
        let dir = target
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.renders.clone());
        std::fs::create_dir_all(&dir)?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
        let temp = dir.join(format!(".tmp-{}", hex::encode(suffix)));
        std::fs::write(&temp, body)?;
        if let Err(e) = std::fs::rename(&temp, &target) {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        Ok(())
    }

    fn render_body(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.render_path(key)) {
            Ok(body) => Ok(Some(body)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn remove_render_body(&self, key: &[u8]) -> io::Result<()> {
        match std::fs::remove_file(self.render_path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn sweep_render_bodies(
        &self,
        shard: u8,
        grace: std::time::Duration,
        referenced: &dyn Fn(&[u8]) -> io::Result<bool>,
    ) -> io::Result<(u64, u64)> {
        let dir = self.renders.join(format!("{shard:02x}"));
        let (mut files, mut bytes) = (0, 0);
        let Ok(subdirs) = std::fs::read_dir(&dir) else {
            return Ok((0, 0));
        };
        let now = std::time::SystemTime::now();
        for sub in subdirs.flatten() {
            let Ok(entries) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                let young = meta
                    .modified()
                    .map(|t| now.duration_since(t).unwrap_or_default() < grace)
                    .unwrap_or(true);
                if young || !meta.is_file() {
                    continue;
                }
                let name = entry.file_name();
                let keep = match hex::decode(name.to_string_lossy().as_bytes()) {
                    Ok(key) => referenced(&key)?,
                    // A temporary file of a write that never finished.
                    Err(_) => false,
                };
                if !keep {
                    std::fs::remove_file(entry.path())?;
                    files += 1;
                    bytes += meta.len();
                }
            }
        }
        Ok((files, bytes))
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
        self.digests.update(chunk);
        file.write_all(chunk).await
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.digests.size
    }

    /// Finishes receiving and returns the digests.
    pub async fn finish(mut self) -> io::Result<ReceivedBlob> {
        if let Some(file) = self.file.as_mut() {
            file.flush().await?;
        }
        // From here on the temporary file belongs to the `ReceivedBlob`.
        self.file = None;
        Ok(self.digests.received(std::mem::take(&mut self.path)))
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

impl io::Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.space.reserve(buf.len() as u64).map_err(io_refusal)?;
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the blob was already finished"));
        };
        let n = file.write(buf)?;
        self.digests.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWriter {
    /// Finishes writing and returns the digests; commit the result with [`Bytes::commit`].
    pub fn finish(mut self) -> io::Result<ReceivedBlob> {
        if let Some(mut file) = self.file.take() {
            io::Write::flush(&mut file)?;
        }
        Ok(self.digests.received(std::mem::take(&mut self.path)))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() && !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Stores `data` as a blob through the upload path's stage and commit; returns its id.
#[cfg(test)]
pub(crate) fn put_test_blob(bytes: &dyn Bytes, data: &[u8]) -> String {
    use std::io::Write;
    let mut staged = bytes.stage().unwrap();
    staged.write_all(data).unwrap();
    let received = staged.finish().unwrap();
    bytes.commit(&received).unwrap();
    received.id
}

impl ReceivedBlob {
    /// The temporary file holding the received bytes (another backend moves them from there).
    pub(crate) fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// The received bytes, read back from the temporary file (to check them before commit).
    pub fn read(&self) -> io::Result<Vec<u8>> {
        std::fs::read(&self.temp_path)
    }

    /// Removes the temporary file of an upload that will not be stored.
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.temp_path);
    }
}
