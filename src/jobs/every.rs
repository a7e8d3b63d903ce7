//! The one loop helper of the background passes (collector, render-store budget, free-space
//! watch, traffic counters): each pass is a plain blocking `run_once`-style function, run
//! here off the async workers at a fixed interval.

use std::sync::Arc;
use std::time::Duration;

/// Runs `pass` every `interval` (first after one interval) until the task is aborted. A pass
/// that panics is logged and the loop goes on.
pub fn every(
    name: &'static str,
    interval: Duration,
    pass: impl Fn() + Send + Sync + 'static,
) -> actix_rt::task::JoinHandle<()> {
    let pass = Arc::new(pass);
    actix_rt::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let p = pass.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || p()).await {
                log::warn!("{name} pass panicked: {e}");
            }
        }
    })
}
