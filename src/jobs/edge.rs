//! The edge sender (design §4, Edge): takes due jobs from the durable queue in the store and
//! sends each URL path to the cache in front of the render listener — `GET {path}` with
//! `X-Darkroom-Refresh: 1` and the original `Host` (the cache fetches and stores the fresh
//! answer), or `PURGE {path}`. A failed request is retried with exponential backoff (up to five
//! minutes apart) until `edge.max_attempts`, then given up, logged and counted. Jobs stay in
//! the queue until answered, so an edge outage or a restart loses none.

use crate::config::{EdgeConfig, EdgeMode};
pub use crate::service::EdgeStats;
use crate::storage::edge::now_ms;
use crate::storage::{EdgeJob, QueuedEdgeJob, Records};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Requests in flight to the edge at once.
const CONCURRENCY: usize = 8;
/// Jobs taken from the queue per round.
const BATCH: usize = 256;
/// Longest wait between retries of one path.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why a request to the edge did not count as done.
#[derive(Debug)]
struct Failure(String);

/// Backoff before attempt number `attempts + 1`: 1 s, 2 s, 4 s, … up to [`MAX_BACKOFF`].
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(16)).min(MAX_BACKOFF)
}

async fn send(
    client: &awc::Client,
    config: &EdgeConfig,
    job: &EdgeJob,
) -> std::result::Result<(), Failure> {
    let url = format!("{}{}", config.url.trim_end_matches('/'), job.path);
    let mut req = match config.mode {
        EdgeMode::Refresh => client.get(&url).insert_header(("X-Darkroom-Refresh", "1")),
        EdgeMode::Purge => {
            let method = awc::http::Method::from_bytes(b"PURGE")
                .map_err(|e| Failure(format!("PURGE method: {e}")))?;
            client.request(method, &url)
        }
    };
    if !job.host.is_empty() {
        req = req.insert_header((awc::http::header::HOST, job.host.as_str()));
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| Failure(format!("{url}: {e}")))?;
    // Read the answer so that the connection can be reused; its content does not matter.
    let _ = resp.body().limit(64 * 1024 * 1024).await;
    let status = resp.status();
    let done = match config.mode {
        // The cache stored what the appliance answered (a render or a 404); a 5xx means it
        // could not reach the appliance, and the stale copy may still be there.
        EdgeMode::Refresh => !status.is_server_error(),
        // Purged, or nothing was cached under that path.
        EdgeMode::Purge => status.is_success() || status == awc::http::StatusCode::NOT_FOUND,
    };
    if done {
        Ok(())
    } else {
        Err(Failure(format!("{url}: the edge answered {status}")))
    }
}

/// Sends one round of due jobs; returns how many were due.
async fn round(
    store: &dyn Records,
    client: &awc::Client,
    config: &EdgeConfig,
    stats: &EdgeStats,
) -> crate::storage::Result<usize> {
    let due = store.due_edge_jobs(now_ms(), BATCH)?;
    let n = due.len();
    let outcomes: Vec<(QueuedEdgeJob, std::result::Result<(), Failure>)> = {
        use futures_util::StreamExt;
        futures_util::stream::iter(due)
            .map(|q| async move {
                let r = send(client, config, &q.job).await;
                (q, r)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await
    };
    for (q, outcome) in outcomes {
        match outcome {
            Ok(()) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
                store.finish_edge_job(&q)?;
            }
            Err(Failure(why)) if q.job.attempts + 1 >= config.max_attempts => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "edge: gave up on {} (host {:?}) after {} attempts: {why}",
                    q.job.path,
                    q.job.host,
                    q.job.attempts + 1
                );
                store.finish_edge_job(&q)?;
            }
            Err(Failure(why)) => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                let wait = backoff(q.job.attempts);
                if q.job.attempts == 0 {
                    log::warn!("edge: {why}; retrying in {}s", wait.as_secs());
                } else {
                    log::debug!("edge: {why}; retrying in {}s", wait.as_secs());
                }
                store.retry_edge_job(&q, now_ms() + wait.as_millis() as u64)?;
            }
        }
    }
    Ok(n)
}

/// Runs the sender until the returned task is aborted. It wakes when jobs are queued, when
/// the next retry is due, and at least every second.
pub fn spawn(
    store: Arc<dyn Records>,
    config: EdgeConfig,
    stats: Arc<EdgeStats>,
) -> actix_rt::task::JoinHandle<()> {
    actix_rt::spawn(async move {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .finish();
        loop {
            let sent = match round(&*store, &client, &config, &stats).await {
                Ok(n) => n,
                Err(e) => {
                    log::warn!("edge: the queue could not be read: {e}");
                    0
                }
            };
            if sent > 0 {
                continue;
            }
            let wait = match store.next_edge_due() {
                Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms())),
                _ => Duration::from_secs(1),
            }
            .min(Duration::from_secs(1));
            tokio::select! {
                _ = store.edge_queued() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(9), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
