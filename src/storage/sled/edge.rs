//! The edge queue of the embedded records ([`EdgeQueue`] of [`SledStore`]), in the
//! `edge_queue` tree; jobs are written in the same sled transaction as the invalidation that
//! causes them.
//!
//! Key: `due (ms since the epoch, u64 BE) ++ id (u64 BE)`, so a scan from the start yields the
//! jobs that are due, oldest first. A retry moves the job to a later key.
//!
//! Paths of a deleted image are also kept (`edge_restore`, bounded) so that restoring the image
//! refreshes them again: the edge holds the short-lived 404 of the deletion until then.

use super::{decode, SledStore, TxError};
use crate::storage::edge::{now_ms, EdgeJob, QueuedEdgeJob, MAX_RESTORE_PATHS};
use crate::storage::records::*;
use crate::storage::{encode, key2, Result, ServedPath};
use sled::transaction::TransactionalTree;

fn job_key(due_ms: u64, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&due_ms.to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Queues one job per path, inside a transaction over the edge queue.
pub(crate) fn tx_enqueue(
    queue: &TransactionalTree,
    paths: &[ServedPath],
) -> std::result::Result<(), TxError> {
    let now = now_ms();
    for p in paths {
        let job = EdgeJob {
            host: p.host.clone(),
            path: p.path.clone(),
            attempts: 0,
            queued_ms: now,
        };
        queue.insert(&job_key(now, queue.generate_id()?), encode(&job))?;
    }
    Ok(())
}

impl EdgeQueue for SledStore {
    /// Turns the edge queue on (with `edge.url` set). Off, invalidations queue nothing.
    fn enable_edge(&self, on: bool) {
        self.edge_on.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether invalidations are queued for the edge.
    fn edge_enabled(&self) -> bool {
        self.edge_on.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One process writes this store, so an in-process notification is enough.
    fn edge_queued(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(self.edge_notify.notified())
    }

    /// Queues paths for the edge (outside any other change).
    fn enqueue_edge(&self, paths: &[ServedPath]) -> Result<()> {
        if paths.is_empty() || !self.edge_enabled() {
            return Ok(());
        }
        super::tx_result(self.edge_queue.transaction(|q| tx_enqueue(q, paths)))?;
        self.edge_notify.notify_one();
        Ok(())
    }

    /// Jobs due at `now_ms`, oldest first, at most `limit`.
    fn due_edge_jobs(&self, now_ms: u64, limit: usize) -> Result<Vec<QueuedEdgeJob>> {
        let mut out = Vec::new();
        for item in self.edge_queue.iter() {
            let (k, v) = item?;
            let due = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            if due > now_ms || out.len() >= limit {
                break;
            }
            out.push(QueuedEdgeJob {
                key: k.to_vec(),
                job: decode("edge_queue", &v)?,
            });
        }
        Ok(out)
    }

    /// When the next job is due (ms since the epoch), if any is queued.
    fn next_edge_due(&self) -> Result<Option<u64>> {
        Ok(self.edge_queue.first()?.and_then(|(k, _)| {
            k.get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        }))
    }

    /// Removes a job that was sent (or given up).
    fn finish_edge_job(&self, queued: &QueuedEdgeJob) -> Result<()> {
        self.edge_queue.remove(&queued.key)?;
        Ok(())
    }

    /// Moves a failed job to `due_ms` with one more attempt counted.
    fn retry_edge_job(&self, queued: &QueuedEdgeJob, due_ms: u64) -> Result<()> {
        let mut job = queued.job.clone();
        job.attempts += 1;
        let next = job_key(due_ms, self.db.generate_id()?);
        let mut batch = sled::Batch::default();
        batch.remove(queued.key.as_slice());
        batch.insert(&next, encode(&job));
        self.edge_queue.apply_batch(batch)?;
        Ok(())
    }

    /// Number of queued edge jobs.
    fn edge_pending(&self) -> usize {
        self.edge_queue.len()
    }

    /// Drops every queued job (the edge was switched off); returns how many there were.
    fn clear_edge_queue(&self) -> Result<usize> {
        let n = self.edge_queue.len();
        self.edge_queue.clear()?;
        Ok(n)
    }

    /// Keeps the paths of a deleted image for its restore (merged, bounded).
    fn keep_restore_paths(&self, org: &str, hash: &str, paths: &[ServedPath]) -> Result<()> {
        if paths.is_empty() || !self.edge_enabled() {
            return Ok(());
        }
        let k = key2(org, hash);
        let mut kept: Vec<ServedPath> = match self.edge_restore.get(&k)? {
            Some(v) => decode("edge_restore", &v)?,
            None => Vec::new(),
        };
        for p in paths {
            if kept.len() >= MAX_RESTORE_PATHS {
                break;
            }
            if !kept.contains(p) {
                kept.push(p.clone());
            }
        }
        self.edge_restore.insert(k, encode(&kept))?;
        Ok(())
    }

    /// Takes the kept paths of a restored image and queues them.
    fn refresh_restored(&self, org: &str, hash: &str) -> Result<usize> {
        let Some(v) = self.edge_restore.remove(key2(org, hash))? else {
            return Ok(0);
        };
        let paths: Vec<ServedPath> = decode("edge_restore", &v)?;
        self.enqueue_edge(&paths)?;
        Ok(paths.len())
    }

    /// Forgets the kept paths of an image removed for good.
    fn drop_restore_paths(&self, org: &str, hash: &str) -> Result<()> {
        self.edge_restore.remove(key2(org, hash))?;
        Ok(())
    }

    /// Kept restore paths whose image is gone or live again (for the verifier and GC).
    fn stale_restore_paths(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for k in self.edge_restore.iter().keys() {
            let k = k?;
            let mut parts = k.splitn(2, |b| *b == 0);
            let org = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
            let hash = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
            match self.get_image(&org, &hash)? {
                Some(rec) if rec.deleted => {}
                _ => out.push((org, hash)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fixtures::path;

    #[test]
    fn jobs_come_out_when_due_and_retries_move_them_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        store.enqueue_edge(&[path("/a")]).unwrap();
        assert_eq!(store.edge_pending(), 0, "off: nothing is queued");

        store.enable_edge(true);
        store.enqueue_edge(&[path("/a"), path("/b")]).unwrap();
        let now = now_ms() + 1;
        let due = store.due_edge_jobs(now, 10).unwrap();
        let got: Vec<&str> = due.iter().map(|q| q.job.path.as_str()).collect();
        assert_eq!(got, ["/a", "/b"]);

        store.retry_edge_job(&due[0], now + 60_000).unwrap();
        store.finish_edge_job(&due[1]).unwrap();
        assert!(store.due_edge_jobs(now, 10).unwrap().is_empty());
        assert_eq!(store.next_edge_due().unwrap(), Some(now + 60_000));
        let later = store.due_edge_jobs(now + 60_000, 10).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].job.attempts, 1);
        assert_eq!(store.clear_edge_queue().unwrap(), 1);
    }

    #[test]
    fn jobs_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 8).unwrap();
            store.enable_edge(true);
            store.enqueue_edge(&[path("/kept")]).unwrap();
            store.flush_blocking().unwrap();
        }
        // sled lets go of its file lock shortly after the last handle is dropped.
        let store = (0..100)
            .find_map(|_| {
                SledStore::open(dir.path(), 8)
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(50)))
                    .ok()
            })
            .unwrap();
        let due = store.due_edge_jobs(now_ms() + 1, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].job.path, "/kept");
    }
}
