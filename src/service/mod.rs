//! Use cases shared by the HTTP API, the command line and background jobs. Each function takes
//! typed input (parsed at the boundary), checks rights, and works through `storage` and the
//! CPU `pool`; none of them knows about HTTP.

pub mod accounts;
pub mod aliases;
pub mod archive;
pub mod images;
pub mod listing;
pub mod mezzanine;
pub mod purge;
pub mod renders;
pub mod stacks;
pub mod stats;
pub mod tokens;

use crate::config::Config;
use crate::error::Error;
use crate::pool::CpuPool;
use crate::render::error::RenderError;
use crate::render::limits::Limits;
use crate::storage::{Bytes, Records, Storage};
use std::sync::Arc;

/// Counters of the edge sender (`jobs::edge`), read by the metrics.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Paths answered by the edge.
    pub sent: std::sync::atomic::AtomicU64,
    /// Failed attempts that were queued again.
    pub retried: std::sync::atomic::AtomicU64,
    /// Paths given up after `edge.max_attempts`.
    pub failed: std::sync::atomic::AtomicU64,
}

/// Everything a use case needs, shared by all HTTP workers.
pub struct Services {
    pub config: Arc<Config>,
    /// The records (organizations, images, stacks, renders, …).
    pub store: Arc<dyn Records>,
    /// The source bytes.
    pub blobs: Arc<dyn Bytes>,
    pub pool: Arc<CpuPool>,
    /// Single-flight and failure memory of the render path.
    pub renders: Arc<renders::RenderState>,
    /// Bytes served, counted in memory and written in batches.
    pub traffic: stats::Traffic,
    /// Counters of the edge sender.
    pub edge: Arc<EdgeStats>,
    /// Request, render, GC and eviction counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Uploads in flight per API key, for the per-key limits.
    pub uploads: images::UploadSlots,
    /// Keys minted for admin commands over the control socket.
    pub operator_keys: accounts::OperatorKeys,
}

impl Services {
    /// The services over opened storage and a started pool, with empty counters.
    pub fn new(config: Config, storage: Storage, pool: CpuPool) -> Services {
        Services {
            config: Arc::new(config),
            store: storage.records,
            blobs: storage.bytes,
            pool: Arc::new(pool),
            renders: Default::default(),
            traffic: Default::default(),
            edge: Default::default(),
            metrics: Default::default(),
            uploads: Default::default(),
            operator_keys: Default::default(),
        }
    }

    /// Checks every invariant over the records and the bytes (`darkroom admin verify`).
    pub fn verify(&self, grace: std::time::Duration) -> crate::storage::Result<Vec<String>> {
        crate::storage::check::verify(&*self.store, &*self.blobs, grace, &mut |_, _, _| {})
    }

    /// For readiness probes, in constant work: the records can be written and read, the
    /// free-space headroom holds, and the bytes can be reached.
    pub fn ready(&self) -> crate::storage::Result<()> {
        self.store.probe_ready()?;
        Ok(self.blobs.probe_ready()?)
    }

    /// Writes a backup of everything to `out` (`darkroom admin export` and `GET /backup`).
    pub fn export(
        &self,
        out: &mut dyn std::io::Write,
        renders: bool,
    ) -> crate::storage::Result<crate::storage::backup::Exported> {
        crate::storage::backup::export(&*self.store, &*self.blobs, out, renders)
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> crate::error::Result<()> {
        Ok(self.store.flush().await?)
    }

    /// Decoding limits from the configuration.
    pub fn limits(&self) -> Limits {
        Limits {
            max_dimension: self.config.limits.max_dimension,
            max_pixels: self.config.limits.max_pixels,
            max_output_pixels: self.config.limits.max_output_pixels,
            max_avif_output_pixels: self.config.limits.max_avif_output_pixels,
            max_render_memory: self
                .config
                .limits
                .max_render_memory_mb
                .saturating_mul(1024 * 1024),
            max_frames: self.config.limits.max_frames,
            max_animation_pixels: self.config.limits.max_animation_pixels,
        }
    }
}

impl From<RenderError> for Error {
    fn from(e: RenderError) -> Error {
        match e {
            RenderError::Invalid(m) => Error::Invalid(m),
            RenderError::Unsupported(m) => Error::Unsupported(m),
            RenderError::Unprocessable(m) | RenderError::TooLarge(m) => Error::Unprocessable(m),
            RenderError::Cancelled => Error::Busy {
                message: "the render was stopped before it finished; retry later".into(),
                retry_after_secs: 5,
            },
            RenderError::Internal(m) => Error::Internal(m),
        }
    }
}

/// The answer to a purge: rokka's `{"items": [paths]}`, plus the counts; a dry run says so and
/// changes nothing.
pub fn purged_json(p: &crate::storage::Purged, dry_run: bool) -> serde_json::Value {
    // One item per path, in the order they were found (a path served under several hosts
    // appears once).
    let mut seen = std::collections::HashSet::with_capacity(p.paths.len());
    let items: Vec<&str> = p
        .paths
        .iter()
        .map(|s| s.path.as_str())
        .filter(|path| seen.insert(*path))
        .collect();
    let mut v = serde_json::json!({ "status": "ok", "items": items, "renders": p.renders, "bytes": p.bytes, "paths": items.len() });
    if dry_run {
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("dry_run".into(), serde_json::Value::Bool(true));
        }
    }
    v
}
