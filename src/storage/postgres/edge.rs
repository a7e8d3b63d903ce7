//! The edge queue, shared by every node: one `edge_jobs` row per path to send, due at
//! `due_ms`. A node claims due jobs with `FOR UPDATE SKIP LOCKED` and, in the same statement,
//! moves them a lease ([`LEASE_MS`]) later: no other node takes them meanwhile, and a node
//! that dies before finishing leaves them due again once the lease runs out. Enqueueing
//! transactions `NOTIFY` [`super::EDGE_CHANNEL`], which wakes every node's sender.
//!
//! The paths of a deleted image are kept in `edge_restore` (bounded) for its restore.

use super::{from_row, to_i64, to_json, to_u64, PgStore, EDGE_CHANNEL};
use crate::storage::edge::{now_ms, EdgeJob, QueuedEdgeJob, MAX_RESTORE_PATHS};
use crate::storage::{EdgeQueue, Result, ServedPath, StorageError};
use std::sync::atomic::Ordering;

/// How long a claimed job belongs to the node that claimed it.
pub const LEASE_MS: u64 = 60_000;

/// Queues one job per path and announces them, inside the caller's transaction (the
/// notification is delivered when it commits).
pub(super) async fn enqueue(
    tx: &tokio_postgres::Transaction<'_>,
    paths: &[ServedPath],
) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let jobs = paths
        .iter()
        .map(|p| {
            to_json(&EdgeJob {
                host: p.host.clone(),
                path: p.path.clone(),
                attempts: 0,
                queued_ms: now,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    tx.execute(
        "INSERT INTO edge_jobs (due_ms, job) SELECT $1, j FROM unnest($2::jsonb[]) \
         WITH ORDINALITY AS q (j, i) ORDER BY i",
        &[&to_i64(now), &jobs],
    )
    .await?;
    tx.execute(&format!("SELECT pg_notify({EDGE_CHANNEL}, '')"), &[])
        .await?;
    Ok(())
}

/// The row id a job's queue key holds.
fn job_id(queued: &QueuedEdgeJob) -> Result<i64> {
    queued
        .key()
        .try_into()
        .map(i64::from_be_bytes)
        .map_err(|_| StorageError::Sql("an edge job of another store".into()))
}

impl PgStore {
    /// Queues `paths` in a transaction of their own.
    fn enqueue_now(&self, paths: Vec<ServedPath>) -> Result<()> {
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            enqueue(&tx, &paths).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

impl EdgeQueue for PgStore {
    fn enable_edge(&self, on: bool) {
        self.edge_on.store(on, Ordering::Relaxed);
    }

    fn edge_enabled(&self) -> bool {
        self.edge_on.load(Ordering::Relaxed)
    }

    /// Resolves on a notification from any node (or after this node's listening connection
    /// came back, when jobs may have been missed).
    fn edge_queued(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(self.edge_notify.notified())
    }

    fn enqueue_edge(&self, paths: &[ServedPath]) -> Result<()> {
        if paths.is_empty() || !self.edge_enabled() {
            return Ok(());
        }
        self.enqueue_now(paths.to_vec())
    }

    /// Claims the due jobs for this node: each is handed to one node only, and is due again
    /// after [`LEASE_MS`] unless finished or retried by then.
    fn due_edge_jobs(&self, now_ms: u64, limit: usize) -> Result<Vec<QueuedEdgeJob>> {
        let now = to_i64(now_ms);
        let lease = to_i64(now_ms.saturating_add(LEASE_MS));
        let limit = to_i64(limit as u64);
        let rows = self.query(
            "WITH due AS (SELECT id, due_ms FROM edge_jobs WHERE due_ms <= $1 \
             ORDER BY due_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE edge_jobs SET due_ms = $2 FROM due WHERE edge_jobs.id = due.id \
             RETURNING edge_jobs.id, edge_jobs.job, due.due_ms",
            vec![Box::new(now), Box::new(lease), Box::new(limit)],
        )?;
        let mut jobs = rows
            .iter()
            .map(|r| {
                let id: i64 = r.try_get(0)?;
                let due: i64 = r.try_get(2)?;
                let job: EdgeJob = from_row("edge_jobs", r, 1)?;
                Ok((due, id, QueuedEdgeJob::at(id.to_be_bytes().to_vec(), job)))
            })
            .collect::<Result<Vec<_>>>()?;
        jobs.sort_by_key(|(due, id, _)| (*due, *id));
        Ok(jobs.into_iter().map(|(_, _, q)| q).collect())
    }

    fn next_edge_due(&self) -> Result<Option<u64>> {
        let rows = self.query(
            "SELECT due_ms FROM edge_jobs ORDER BY due_ms, id LIMIT 1",
            Vec::new(),
        )?;
        rows.first().map(|r| Ok(to_u64(r.try_get(0)?))).transpose()
    }

    fn finish_edge_job(&self, queued: &QueuedEdgeJob) -> Result<()> {
        self.execute(
            "DELETE FROM edge_jobs WHERE id = $1",
            vec![Box::new(job_id(queued)?)],
        )?;
        Ok(())
    }

    fn retry_edge_job(&self, queued: &QueuedEdgeJob, due_ms: u64) -> Result<()> {
        let mut job = queued.job.clone();
        job.attempts += 1;
        self.execute(
            "UPDATE edge_jobs SET due_ms = $2, job = $3 WHERE id = $1",
            vec![
                Box::new(job_id(queued)?),
                Box::new(to_i64(due_ms)),
                Box::new(to_json(&job)?),
            ],
        )?;
        Ok(())
    }

    /// Counted over the queue (it is drained continuously, so it stays short); 0 when the
    /// database cannot be read (the figure is for gauges).
    fn edge_pending(&self) -> usize {
        self.query("SELECT count(*) FROM edge_jobs", Vec::new())
            .ok()
            .and_then(|rows| rows.first().and_then(|r| r.try_get::<_, i64>(0).ok()))
            .map_or(0, |n| usize::try_from(n).unwrap_or(0))
    }

    fn clear_edge_queue(&self) -> Result<usize> {
        let n = self.execute("DELETE FROM edge_jobs", Vec::new())?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Merged into what is kept, in one transaction with the kept row locked.
    fn keep_restore_paths(&self, org: &str, hash: &str, paths: &[ServedPath]) -> Result<()> {
        if paths.is_empty() || !self.edge_enabled() {
            return Ok(());
        }
        let (org, hash, paths) = (org.to_string(), hash.to_string(), paths.to_vec());
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO edge_restore (org, hash, paths) VALUES ($1, $2, '[]') \
                 ON CONFLICT DO NOTHING",
                &[&org, &hash],
            )
            .await?;
            let row = tx
                .query_one(
                    "SELECT paths FROM edge_restore WHERE org = $1 AND hash = $2 FOR UPDATE",
                    &[&org, &hash],
                )
                .await?;
            let mut kept: Vec<ServedPath> = from_row("edge_restore", &row, 0)?;
            for p in paths {
                if kept.len() >= MAX_RESTORE_PATHS {
                    break;
                }
                if !kept.contains(&p) {
                    kept.push(p);
                }
            }
            tx.execute(
                "UPDATE edge_restore SET paths = $3 WHERE org = $1 AND hash = $2",
                &[&org, &hash, &to_json(&kept)?],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// The kept paths leave `edge_restore` and enter the queue in one transaction.
    fn refresh_restored(&self, org: &str, hash: &str) -> Result<usize> {
        let (org, hash) = (org.to_string(), hash.to_string());
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    "DELETE FROM edge_restore WHERE org = $1 AND hash = $2 RETURNING paths",
                    &[&org, &hash],
                )
                .await?
            else {
                return Ok(0);
            };
            let paths: Vec<ServedPath> = from_row("edge_restore", &row, 0)?;
            enqueue(&tx, &paths).await?;
            tx.commit().await?;
            Ok(paths.len())
        })
    }

    fn drop_restore_paths(&self, org: &str, hash: &str) -> Result<()> {
        self.execute(
            "DELETE FROM edge_restore WHERE org = $1 AND hash = $2",
            vec![Box::new(org.to_string()), Box::new(hash.to_string())],
        )?;
        Ok(())
    }

    /// One walk of the kept rows (as the embedded store walks them), each joined to its image
    /// by primary key.
    fn stale_restore_paths(&self) -> Result<Vec<(String, String)>> {
        let rows = self.query(
            "SELECT r.org, r.hash FROM edge_restore r \
             LEFT JOIN images i ON i.org = r.org AND i.hash = r.hash \
             WHERE i.hash IS NULL OR NOT i.deleted ORDER BY r.org, r.hash",
            Vec::new(),
        )?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;
    use crate::storage::fixtures::path;
    use std::time::Duration;

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn jobs_come_out_when_due_and_retries_move_them_later() {
        let Some(store) = testing::store("edge_due") else {
            return;
        };
        store.enqueue_edge(&[path("/a")]).unwrap();
        assert_eq!(store.edge_pending(), 0, "off: nothing is queued");
        store.enable_edge(true);
        store.enqueue_edge(&[path("/a"), path("/b")]).unwrap();
        let now = now_ms() + 1;
        let due = store.due_edge_jobs(now, 10).unwrap();
        let got: Vec<&str> = due.iter().map(|q| q.job.path.as_str()).collect();
        assert_eq!(got, ["/a", "/b"]);
        store.retry_edge_job(&due[0], now + 5_000).unwrap();
        store.finish_edge_job(&due[1]).unwrap();
        assert!(store.due_edge_jobs(now, 10).unwrap().is_empty());
        assert_eq!(store.next_edge_due().unwrap(), Some(now + 5_000));
        let later = store.due_edge_jobs(now + 5_000, 10).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].job.attempts, 1);
        assert_eq!(store.clear_edge_queue().unwrap(), 1);
        assert_eq!(store.next_edge_due().unwrap(), None);
    }

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn each_job_goes_to_one_node_and_comes_back_after_its_lease() {
        let Some((one, open_other)) = testing::pair("edge_claim") else {
            return;
        };
        let other = open_other();
        one.enable_edge(true);
        let paths: Vec<ServedPath> = (0..200).map(|i| path(&format!("/{i}"))).collect();
        one.enqueue_edge(&paths).unwrap();
        let now = now_ms() + 1;
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                let mut got = Vec::new();
                while let Ok(jobs) = one.due_edge_jobs(now, 7) {
                    if jobs.is_empty() {
                        break;
                    }
                    got.extend(jobs.into_iter().map(|q| q.job.path));
                }
                got
            });
            let b = s.spawn(|| {
                let mut got = Vec::new();
                while let Ok(jobs) = other.due_edge_jobs(now, 7) {
                    if jobs.is_empty() {
                        break;
                    }
                    got.extend(jobs.into_iter().map(|q| q.job.path));
                }
                got
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
        all.sort();
        all.dedup();
        assert_eq!(a.len() + b.len(), 200, "no job is handed out twice");
        assert_eq!(all.len(), 200, "every job is handed out");
        // Claimed but never finished (the node died): due again once the lease runs out.
        assert!(other
            .due_edge_jobs(now + LEASE_MS - 1, 500)
            .unwrap()
            .is_empty());
        let again = other.due_edge_jobs(now + LEASE_MS, 500).unwrap();
        assert_eq!(again.len(), 200);
        for q in &again {
            other.finish_edge_job(q).unwrap();
        }
        assert_eq!(one.edge_pending(), 0);
    }

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn a_job_queued_on_one_node_wakes_the_other() {
        let Some((one, open_other)) = testing::pair("edge_notify") else {
            return;
        };
        let other = open_other();
        one.enable_edge(true);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // The listener wakes once when it connects; wait for that first.
        rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(5), other.edge_queued()).await;
        });
        let woken = rt.block_on(async {
            let waiting = other.edge_queued();
            let quiet = tokio::time::timeout(Duration::from_millis(200), waiting).await;
            assert!(quiet.is_err(), "nothing was queued yet");
            let waiting = other.edge_queued();
            one.enqueue_edge(&[path("/woken")]).unwrap();
            tokio::time::timeout(Duration::from_secs(5), waiting).await
        });
        assert!(woken.is_ok(), "the notification reached the other node");
    }

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn kept_paths_are_merged_bounded_and_queued_on_restore() {
        let Some(store) = testing::store("edge_restore") else {
            return;
        };
        store.enable_edge(true);
        store
            .execute(
                "INSERT INTO images (org, hash, binary_hash, blob, deleted, record) \
                 VALUES ('acme', 'gone', 'b', 'c', true, '{}')",
                Vec::new(),
            )
            .unwrap();
        store
            .keep_restore_paths("acme", "gone", &[path("/a"), path("/b")])
            .unwrap();
        store
            .keep_restore_paths("acme", "gone", &[path("/b"), path("/c")])
            .unwrap();
        store
            .keep_restore_paths("acme", "live", &[path("/x")])
            .unwrap();
        assert_eq!(
            store.stale_restore_paths().unwrap(),
            [("acme".to_string(), "live".to_string())]
        );
        assert_eq!(store.refresh_restored("acme", "gone").unwrap(), 3);
        assert_eq!(store.edge_pending(), 3);
        assert_eq!(store.refresh_restored("acme", "gone").unwrap(), 0);
        store.drop_restore_paths("acme", "live").unwrap();
        assert!(store.stale_restore_paths().unwrap().is_empty());
        let many: Vec<ServedPath> = (0..MAX_RESTORE_PATHS + 5)
            .map(|i| path(&format!("/{i}")))
            .collect();
        store.keep_restore_paths("acme", "gone", &many).unwrap();
        assert_eq!(
            store.refresh_restored("acme", "gone").unwrap(),
            MAX_RESTORE_PATHS
        );
    }
}
