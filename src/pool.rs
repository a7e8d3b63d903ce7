//! The one bridge from the async HTTP side to CPU work. Decoding, resizing and encoding run on a
//! dedicated rayon pool sized to the cores; admission is bounded (running + waiting jobs), so a
//! burst is answered 503 with `Retry-After` instead of piling up frame buffers. A panic in a
//! job is caught and reported as an error for that request only.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

/// Why a job did not produce a value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("the render queue is full, retry shortly")]
    Busy,
    #[error("the job took longer than {0} ms")]
    Timeout(u64),
    #[error("the job panicked: {0}")]
    Panicked(String),
}

impl From<PoolError> for crate::error::Error {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Busy => crate::error::Error::Busy {
                message: e.to_string(),
                retry_after_secs: 1,
            },
            PoolError::Timeout(_) => crate::error::Error::Busy {
                message: "rendering took too long; retry later".into(),
                retry_after_secs: 5,
            },
            PoolError::Panicked(_) => crate::error::Error::Internal(e.to_string()),
        }
    }
}

/// A bounded CPU pool.
pub struct CpuPool {
    pool: rayon::ThreadPool,
    permits: Arc<Semaphore>,
    threads: usize,
    capacity: usize,
    timeout: Duration,
    /// Jobs refused because the pool and its queue were full.
    rejected: std::sync::atomic::AtomicU64,
}

impl CpuPool {
    /// `threads` workers; at most `threads + queue` jobs admitted at once; each caller waits at
    /// most `timeout` for its result.
    pub fn new(threads: usize, queue: usize, timeout: Duration) -> Result<CpuPool, String> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("darkroom-cpu-{i}"))
            .build()
            .map_err(|e| format!("cannot start the render pool: {e}"))?;
        let capacity = threads.max(1) + queue;
        Ok(CpuPool {
            pool,
            permits: Arc::new(Semaphore::new(capacity)),
            threads: threads.max(1),
            capacity,
            timeout,
            rejected: Default::default(),
        })
    }

    /// Jobs admitted and not finished (running or waiting for a thread).
    pub fn in_flight(&self) -> usize {
        self.capacity
            .saturating_sub(self.permits.available_permits())
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.in_flight().saturating_sub(self.threads)
    }

    /// Jobs refused so far because the pool was full.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `job` on the pool and waits for its result.
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            self.rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            PoolError::Busy
        })?;
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(job));
            // The permit is held until the job is done, even if the caller gave up waiting:
            // memory in use is what the bound protects.
            drop(permit);
            let _ = tx.send(result.map_err(|p| panic_message(p.as_ref())));
        });
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(PoolError::Timeout(self.timeout.as_millis() as u64)),
            Ok(Err(_)) => Err(PoolError::Panicked("the job was dropped".into())),
            Ok(Ok(Err(msg))) => {
                log::error!("job panicked: {msg}");
                Err(PoolError::Panicked(msg))
            }
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_job_returns_its_value() {
        let pool = CpuPool::new(1, 1, Duration::from_secs(5)).unwrap();
        assert_eq!(pool.run(|| 6 * 7).await, Ok(42));
    }

    #[actix_rt::test]
    async fn a_panicking_job_becomes_an_error() {
        let pool = CpuPool::new(1, 1, Duration::from_secs(5)).unwrap();
        let r: Result<(), _> = pool.run(|| panic!("boom")).await;
        assert_eq!(r, Err(PoolError::Panicked("boom".into())));
        assert_eq!(pool.run(|| 1).await, Ok(1));
    }

    #[actix_rt::test]
    async fn jobs_beyond_the_queue_are_refused() {
        let pool = Arc::new(CpuPool::new(1, 0, Duration::from_secs(5)).unwrap());
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let p = pool.clone();
        let first = tokio::spawn(async move { p.run(move || release_rx.recv().is_ok()).await });
        // Wait until the first job holds the only permit.
        while pool.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.run(|| ()).await, Err(PoolError::Busy));
        release_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(true));
    }

    #[actix_rt::test]
    async fn a_slow_job_times_out() {
        let pool = CpuPool::new(1, 1, Duration::from_millis(20)).unwrap();
        let r = pool
            .run(|| std::thread::sleep(Duration::from_millis(200)))
            .await;
        assert_eq!(r, Err(PoolError::Timeout(20)));
    }
}
