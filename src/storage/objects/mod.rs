//! Source bytes and the bodies of large renders in S3-compatible object storage
//! ([`ObjectBytes`]), for several nodes over one bucket.
//!
//! Objects are laid out as the embedded files are: content-addressed blobs under
//! `blobs/ab/cd/<blake3>` and render bodies under `renders/ab/cd/<key in hex>`, below an
//! optional prefix. Uploads are still received into a temporary file of the local data folder
//! by [`FileBytes`] (hashed while written, checked, refused below the free-space headroom),
//! and [`Bytes::commit`] puts the object into the bucket before any record refers to it: a
//! single PUT for small blobs, a multipart upload for large ones.
//!
//! The `object_store` client is asynchronous while the bytes interface is mostly blocking, so
//! every request runs on a [`Driver`] of its own (as the PostgreSQL records do). Downloads are
//! pumped from the response body through a small bounded channel: the whole object is never
//! held in memory, and a slow client slows the download instead of filling memory.
//!
//! What a cold render reads from the bucket every time, its source blob and its mezzanine,
//! is also kept as node-local copies within a byte budget ([`cache::LocalCopies`]): both are
//! immutable under their names, so a copy is always what the bucket would answer.

pub mod cache;

use super::blobs::{BlobUpload, BlobWriter, ByteStream, Bytes, FileBytes, ReceivedBlob};
use super::driver::Driver;
use super::renders::INLINE_MAX;
use super::space::Space;
use cache::Kind;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig, WriteMultipart};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

/// Blobs larger than this are sent as a multipart upload.
const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// The part size of a multipart upload.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one multipart upload sent at the same time.
const PART_CONCURRENCY: usize = 2;
/// Chunks of a download buffered between the bucket and the reader.
const DOWNLOAD_CHUNKS: usize = 4;

/// Where the objects are and how to reach them (`[storage]` in `appliance.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectSettings {
    /// The bucket's name (`s3://BUCKET`).
    pub bucket: String,
    /// The service's URL (`http://127.0.0.1:3900`); empty for AWS itself.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Keys below this folder of the bucket (no leading or trailing `/`); empty for the root.
    pub prefix: String,
    /// Bytes of node-local copies of source blobs and mezzanines kept under the data folder
    /// (`cache/objects`); 0 = none.
    pub cache_bytes: u64,
}

/// Source blobs and render bodies in one bucket; uploads received in the local data folder.
pub struct ObjectBytes {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// The upload half (temporary files, the free-space watch of the data folder).
    local: FileBytes,
    driver: Driver,
    /// Node-local copies of source blobs and mezzanines; `None` with a zero budget.
    copies: Option<cache::LocalCopies>,
}

/// A failure of the object store as an I/O error; a missing object is `NotFound`.
fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        e => io::Error::other(format!("object storage: {e}")),
    }
}

fn stopped() -> io::Error {
    io::Error::other("object storage: the client's runtime stopped")
}

impl ObjectBytes {
    /// A client of the bucket in `settings`, receiving uploads through `local` (the data
    /// folder's blob files, whose temporary folder and free-space watch it keeps using).
    /// Makes no request: a bucket that cannot be reached shows in the readiness probe.
    pub fn open(local: FileBytes, settings: &ObjectSettings) -> io::Result<ObjectBytes> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    // A download is streamed to a client that may be slow: the whole request
                    // may take long, its parts do not.
                    .with_timeout(Duration::from_secs(600))
                    .with_allow_http(settings.endpoint.starts_with("http://")),
            )
            // A few quick retries of a failed request, not the client's three minutes: a
            // request path waits for them, and a probe must answer.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
                ..RetryConfig::default()
            });
        if !settings.region.is_empty() {
            builder = builder.with_region(&settings.region);
        }
        if !settings.endpoint.is_empty() {
            // Self-hosted services (Garage, MinIO) answer on one host: path-style requests.
            builder = builder
                .with_endpoint(&settings.endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if !settings.access_key_id.is_empty() {
            builder = builder
                .with_access_key_id(&settings.access_key_id)
                .with_secret_access_key(&settings.secret_access_key);
        }
        let store = builder
            .build()
            .map_err(|e| io::Error::other(format!("object storage: {e}")))?;
        let prefix = match settings.prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let copies = cache::LocalCopies::open(
            &local.data_folder().join("cache").join("objects"),
            settings.cache_bytes,
            local.space_watch(),
        )?;
        Ok(ObjectBytes {
            store: Arc::new(store),
            prefix,
            local,
            driver: Driver::start("object-store")?,
            copies,
        })
    }

    /// What the node-local copies hold and how often they answered (zero without copies).
    pub fn cache_figures(&self) -> cache::CacheFigures {
        self.copies
            .as_ref()
            .map(cache::LocalCopies::figures)
            .unwrap_or_default()
    }

    /// Where the blob with this id lives.
    fn blob_path(&self, id: &str) -> ObjectPath {
        let a = id.get(0..2).unwrap_or("00");
        let b = id.get(2..4).unwrap_or("00");
        ObjectPath::from(format!("{}blobs/{a}/{b}/{id}", self.prefix))
    }

    /// Where the body of a large render lives.
    fn render_path(&self, key: &[u8]) -> ObjectPath {
        let name = hex::encode(key);
        let a = name.get(0..2).unwrap_or("00");
        let b = name.get(2..4).unwrap_or("00");
        ObjectPath::from(format!("{}renders/{a}/{b}/{name}", self.prefix))
    }

    /// Runs one request on the driver and waits for it.
    fn run<T, Fut>(&self, work: impl FnOnce(Arc<dyn ObjectStore>) -> Fut) -> io::Result<T>
    where
        Fut: std::future::Future<Output = object_store::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.driver
            .block_on(work(self.store.clone()))
            .ok_or_else(stopped)?
            .map_err(io_error)
    }

    /// The metadata of an object; `None` when it is missing.
    fn head(&self, path: ObjectPath) -> io::Result<Option<object_store::ObjectMeta>> {
        match self.run(|s| async move { s.head(&path).await }) {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores `size` bytes read from `source` under `path`: one PUT up to the multipart
    /// threshold, else parts of [`PART_SIZE`] read and sent one after the other (at most
    /// [`PART_CONCURRENCY`] in flight). The reads happen on the calling thread, the requests
    /// on the driver.
    fn put_from(&self, path: ObjectPath, size: u64, source: &mut dyn Read) -> io::Result<()> {
        if size <= MULTIPART_THRESHOLD {
            let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            source.read_to_end(&mut body)?;
            let payload = PutPayload::from(body);
            return self.run(|s| async move { s.put(&path, payload).await.map(|_| ()) });
        }
        let mut writer = self.run(|s| async move {
            let upload = s.put_multipart(&path).await?;
            Ok(WriteMultipart::new_with_chunk_size(upload, PART_SIZE))
        })?;
        let mut chunk = vec![0u8; PART_SIZE];
        loop {
            let n = match read_full(source, &mut chunk) {
                Ok(n) => n,
                Err(e) => {
                    let _ = self.driver.block_on(writer.abort());
                    return Err(e);
                }
            };
            if n == 0 {
                break;
            }
            let part = bytes::Bytes::copy_from_slice(chunk.get(..n).unwrap_or_default());
            let sent = self.driver.block_on(async move {
                // Waits for a part to finish before starting a third.
                match writer.wait_for_capacity(PART_CONCURRENCY).await {
                    Ok(()) => {
                        writer.put(part);
                        Ok(writer)
                    }
                    Err(e) => {
                        let _ = writer.abort().await;
                        Err(e)
                    }
                }
            });
            writer = sent.ok_or_else(stopped)?.map_err(io_error)?;
        }
        self.driver
            .block_on(async move {
                // A failed part aborts the upload here, so the bucket keeps no parts of it.
                if let Err(e) = writer.wait_for_capacity(0).await {
                    let _ = writer.abort().await;
                    return Err(e);
                }
                writer.finish().await.map(|_| ())
            })
            .ok_or_else(stopped)?
            .map_err(io_error)
    }

    /// Starts a GET on the driver; its body is pumped into a bounded channel by a task of the
    /// driver. Returns the object's size and the receiving end.
    async fn open_download(
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
    ) -> object_store::Result<(u64, tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>)> {
        let got = store.get(&path).await?;
        let size = got.meta.size;
        let mut body = got.into_stream();
        let (tx, rx) = tokio::sync::mpsc::channel(DOWNLOAD_CHUNKS);
        tokio::spawn(async move {
            while let Some(chunk) = body.next().await {
                let failed = chunk.is_err();
                // A reader that went away stops the download.
                if tx.send(chunk.map_err(io_error)).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok((size, rx))
    }
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn read_full(source: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match source.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A blocking reader over a download's channel (backups).
struct DownloadReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Read for DownloadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        let head = self.current.split_to(n);
        buf.get_mut(..n)
            .ok_or_else(|| io::Error::other("short buffer"))?
            .copy_from_slice(&head);
        Ok(n)
    }
}

impl Bytes for ObjectBytes {
    fn begin(&self) -> BoxFuture<'_, io::Result<BlobUpload>> {
        self.local.begin()
    }

    fn stage(&self) -> io::Result<BlobWriter> {
        self.local.stage()
    }

    /// The object is written once: content addressing makes a second PUT of the same id
    /// pointless. Taking over an existing blob is safe from GC because the caller holds the
    /// blob removal lock up to its record's commit.
    fn commit(&self, received: &ReceivedBlob) -> io::Result<()> {
        let path = self.blob_path(&received.id);
        let result = match self.head(path.clone()) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => std::fs::File::open(received.temp_path())
                .and_then(|mut file| self.put_from(path, received.size, &mut file)),
            Err(e) => Err(e),
        };
        received.discard();
        result
    }

    /// From the node-local copy when there is one; else from the bucket, keeping a copy.
    fn read(&self, id: &str) -> io::Result<Vec<u8>> {
        if let Some(copy) = self.copies.as_ref().and_then(|c| c.get(Kind::Blob, id)) {
            return Ok(copy);
        }
        let path = self.blob_path(id);
        let body = self.run(|s| async move { Ok(s.get(&path).await?.bytes().await?.to_vec()) })?;
        if let Some(copies) = &self.copies {
            copies.put(Kind::Blob, id, &body);
        }
        Ok(body)
    }

    fn stream(&self, id: &str) -> BoxFuture<'_, io::Result<ByteStream>> {
        let opened = self
            .driver
            .handle
            .spawn(Self::open_download(self.store.clone(), self.blob_path(id)));
        Box::pin(async move {
            let (_, rx) = opened.await.map_err(|_| stopped())?.map_err(io_error)?;
            let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk, rx))
            });
            Ok(Box::pin(chunks) as ByteStream)
        })
    }

    fn reader(&self, id: &str) -> io::Result<Option<(u64, Box<dyn Read + Send>)>> {
        let path = self.blob_path(id);
        match self.run(|s| Self::open_download(s, path)) {
            Ok((size, rx)) => Ok(Some((
                size,
                Box::new(DownloadReader {
                    rx,
                    current: bytes::Bytes::new(),
                }),
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn size(&self, id: &str) -> io::Result<Option<u64>> {
        Ok(self.head(self.blob_path(id))?.map(|meta| meta.size))
    }

    fn exists(&self, id: &str) -> bool {
        matches!(self.head(self.blob_path(id)), Ok(Some(_)))
    }

    fn older_than(&self, id: &str, age: Duration) -> bool {
        let Ok(Some(meta)) = self.head(self.blob_path(id)) else {
            return false;
        };
        let written = std::time::SystemTime::from(meta.last_modified);
        written.elapsed().unwrap_or_default() >= age
    }

    fn remove(&self, id: &str) -> io::Result<()> {
        if let Some(copies) = &self.copies {
            copies.remove(Kind::Blob, id);
        }
        let path = self.blob_path(id);
        match self.run(|s| async move { s.delete(&path).await }) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn list_shard(&self, shard: u8) -> io::Result<Vec<String>> {
        let prefix = ObjectPath::from(format!("{}blobs/{shard:02x}", self.prefix));
        let metas = self.run(|s| async move {
            s.list(Some(&prefix))
                .map_ok(|meta| meta.location.filename().map(str::to_string))
                .try_collect::<Vec<_>>()
                .await
        })?;
        Ok(metas.into_iter().flatten().collect())
    }

    fn space(&self) -> &Space {
        self.local.space()
    }

    /// One HEAD of a fixed key: answered (found or not) means the bucket can be reached with
    /// these credentials.
    fn probe_ready(&self) -> io::Result<()> {
        self.local.probe_ready()?;
        self.head(ObjectPath::from(format!("{}blobs/ready", self.prefix)))
            .map(|_| ())
    }

    /// A PUT replaces an object whole, so a reader never sees half a body.
    fn put_render_body(&self, key: &[u8], body: &[u8]) -> io::Result<()> {
        let mut source = body;
        self.put_from(self.render_path(key), body.len() as u64, &mut source)
    }

    fn render_body(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let path = self.render_path(key);
        match self.run(|s| async move { Ok(s.get(&path).await?.bytes().await?.to_vec()) }) {
            Ok(body) => Ok(Some(body)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn remove_render_body(&self, key: &[u8]) -> io::Result<()> {
        if let Some(copies) = &self.copies {
            copies.remove(Kind::Mezzanine, &hex::encode(key));
        }
        let path = self.render_path(key);
        match self.run(|s| async move { s.delete(&path).await }) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn sweep_render_bodies(
        &self,
        shard: u8,
        grace: Duration,
        referenced: &dyn Fn(&[u8]) -> io::Result<bool>,
    ) -> io::Result<(u64, u64)> {
        let prefix = ObjectPath::from(format!("{}renders/{shard:02x}", self.prefix));
        let metas =
            self.run(|s| async move { s.list(Some(&prefix)).try_collect::<Vec<_>>().await })?;
        let now = std::time::SystemTime::now();
        let (mut removed, mut bytes) = (0, 0);
        for meta in metas {
            let written = std::time::SystemTime::from(meta.last_modified);
            if now.duration_since(written).unwrap_or_default() < grace {
                continue;
            }
            let keep = match meta.location.filename().map(hex::decode) {
                Some(Ok(key)) => referenced(&key)?,
                // Not a body this appliance wrote.
                _ => true,
            };
            if !keep {
                let location = meta.location.clone();
                match self.run(|s| async move { s.delete(&location).await }) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                removed += 1;
                bytes += meta.size;
            }
        }
        Ok((removed, bytes))
    }

    fn mezzanine_copy(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.copies
            .as_ref()?
            .get(Kind::Mezzanine, &hex::encode(key))
    }

    /// Only of a body that lives in the bucket: a smaller one is read with its record, and
    /// a copy of it would outlive its removal.
    fn keep_mezzanine_copy(&self, key: &[u8], body: &[u8]) {
        if body.len() <= INLINE_MAX {
            return;
        }
        if let Some(copies) = &self.copies {
            copies.put(Kind::Mezzanine, &hex::encode(key), body);
        }
    }
}

#[cfg(test)]
mod tests;
