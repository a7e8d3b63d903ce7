//! The durable edge queue: URL paths whose cached copies at the edge (nginx in front of the
//! render listener) must be refreshed or purged. Jobs are written in the same transaction as
//! the invalidation that causes them, so neither a crash nor an edge outage loses one.
//!
//! Paths of a deleted image are also kept (bounded by [`MAX_RESTORE_PATHS`]) so that restoring
//! the image refreshes them again: the edge holds the short-lived 404 of the deletion until
//! then.
//!
//! Here the jobs ([`EdgeJob`], [`QueuedEdgeJob`]) as every backend passes them; the queues
//! themselves are in `sled/edge.rs` (the embedded records) and `postgres/edge.rs`.

use serde::{Deserialize, Serialize};

/// Most paths of a deleted image kept for its restore.
pub const MAX_RESTORE_PATHS: usize = 1024;

/// One URL path to send to the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeJob {
    pub host: String,
    pub path: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the job was first queued (ms since the epoch).
    pub queued_ms: u64,
}

/// A job with its place in the queue.
#[derive(Debug, Clone)]
pub struct QueuedEdgeJob {
    pub(super) key: Vec<u8>,
    pub job: EdgeJob,
}

impl QueuedEdgeJob {
    /// A job at its place in a shared backend's queue (an opaque key the backend reads back).
    pub(crate) fn at(key: Vec<u8>, job: EdgeJob) -> QueuedEdgeJob {
        QueuedEdgeJob { key, job }
    }

    /// The job's place in the queue, as its backend wrote it.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
