//! Rows of the shared edge queue (`edge_jobs`), written inside the transaction of the change
//! that invalidates the paths: a job is queued exactly when its change commits. Each row holds
//! when it is due (ms since the epoch) and the JSON form of an [`EdgeJob`].

use super::{to_i64, to_json};
use crate::storage::edge::now_ms;
use crate::storage::{EdgeJob, Result, ServedPath};

/// Queues `paths` for the edge, due now, in the caller's transaction.
pub(super) async fn queue_edge(
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
    Ok(())
}
