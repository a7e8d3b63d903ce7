//! The one bridge from the async HTTP side to CPU work. Decoding, resizing and encoding run on a
//! dedicated rayon pool sized to the cores; admission is bounded (running + waiting jobs), so a
//! burst is answered 503 with `Retry-After` instead of piling up frame buffers. A panic in a
//! job is caught and reported as an error for that request only.
//!
//! Jobs wait in one queue per *family* (for renders: an organization's stack, or its dynamic
//! stack) and threads take them round-robin across families, so a burst from one URL family
//! cannot make every other render wait behind it. Jobs the planner marks *heavy* never take
//! the last free thread while there is more than one: cheap renders always have a thread. A
//! family may also hold at most half of the waiting places. Each job carries a [`Cancel`]
//! signal, set when its caller stops waiting; a job cancelled before it starts never runs.

use crate::render::cancel::Cancel;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

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

/// How the scheduler treats a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobClass {
    /// Jobs of one family share one turn of the round-robin.
    pub family: u64,
    /// Heavy jobs leave one thread to the others.
    pub heavy: bool,
}

impl JobClass {
    /// The class of a job of `family` (any bytes naming it).
    pub fn new(family: &[&str], heavy: bool) -> JobClass {
        let mut h = blake3::Hasher::new();
        for part in family {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let b = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&b.as_bytes()[..8]);
        JobClass {
            family: u64::from_be_bytes(id),
            heavy,
        }
    }
}

type Task = Box<dyn FnOnce() + Send>;

struct Queued {
    heavy: bool,
    cancel: Cancel,
    task: Task,
    /// Runs instead of `task` when the job was cancelled before it started.
    skipped: Task,
}

#[derive(Default)]
struct Sched {
    /// Jobs admitted and not finished.
    admitted: usize,
    running: usize,
    running_heavy: usize,
    /// Admitted jobs per family (running or waiting).
    per_family: HashMap<u64, usize>,
    queues: HashMap<u64, VecDeque<Queued>>,
    /// Families with waiting jobs, in the order of their next turn.
    turn: VecDeque<u64>,
}

struct Inner {
    pool: rayon::ThreadPool,
    sched: Mutex<Sched>,
    threads: usize,
    capacity: usize,
    /// Most jobs one family may have admitted at once.
    family_capacity: usize,
    /// Most heavy jobs running at once.
    heavy_threads: usize,
    /// Jobs refused because the pool and its queue were full.
    rejected: AtomicU64,
}

/// A bounded, fair CPU pool.
pub struct CpuPool {
    inner: Arc<Inner>,
    timeout: Duration,
}

impl CpuPool {
    /// `threads` workers; at most `threads + queue` jobs admitted at once; each caller waits at
    /// most `timeout` for its result.
    pub fn new(threads: usize, queue: usize, timeout: Duration) -> Result<CpuPool, String> {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("darkroom-cpu-{i}"))
            .build()
            .map_err(|e| format!("cannot start the render pool: {e}"))?;
        Ok(CpuPool {
            inner: Arc::new(Inner {
                pool,
                sched: Mutex::default(),
                threads,
                capacity: threads + queue,
                family_capacity: threads + (queue / 2).max(1),
                heavy_threads: if threads > 1 { threads - 1 } else { 1 },
                rejected: AtomicU64::new(0),
            }),
            timeout,
        })
    }

    /// How long a caller waits for a job.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn sched(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.inner.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Jobs admitted and not finished (running or waiting for a thread).
    pub fn in_flight(&self) -> usize {
        self.sched().admitted
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        let s = self.sched();
        s.admitted.saturating_sub(s.running)
    }

    /// Jobs refused so far because the pool was full.
    pub fn rejected(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// Admits `job` without waiting for it: it runs when a thread is free and its turn comes,
    /// with `cancel` passed in, and `done` receives its result (or the panic message). A job
    /// whose `cancel` is set before it starts is not run; `done` then gets `None`.
    pub fn submit<T, F, D>(
        &self,
        class: JobClass,
        cancel: Cancel,
        job: F,
        done: D,
    ) -> Result<(), PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel) -> T + Send + 'static,
        D: FnOnce(Option<Result<T, String>>) + Send + 'static,
    {
        let done = Arc::new(Mutex::new(Some(done)));
        let finish = {
            let done = done.clone();
            move |r: Option<Result<T, String>>| {
                let d = done.lock().ok().and_then(|mut d| d.take());
                if let Some(d) = d {
                    d(r);
                }
            }
        };
        let finish_skipped = finish.clone();
        let task_cancel = cancel.clone();
        let task: Task = Box::new(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| job(&task_cancel)))
                .map_err(|p| panic_message(p.as_ref()));
            if let Err(msg) = &result {
                log::error!("job panicked: {msg}");
            }
            finish(Some(result));
        });
        let skipped: Task = Box::new(move || finish_skipped(None));
        {
            let mut s = self.sched();
            let family_admitted = s.per_family.get(&class.family).copied().unwrap_or(0);
            if s.admitted >= self.inner.capacity || family_admitted >= self.inner.family_capacity {
                drop(s);
                self.inner.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(PoolError::Busy);
            }
            s.admitted += 1;
            *s.per_family.entry(class.family).or_default() += 1;
            let queue = s.queues.entry(class.family).or_default();
            let was_empty = queue.is_empty();
            queue.push_back(Queued {
                heavy: class.heavy,
                cancel,
                task,
                skipped,
            });
            if was_empty {
                s.turn.push_back(class.family);
            }
        }
        dispatch(&self.inner);
        Ok(())
    }

    /// Runs `job` on the pool and waits for its result, at most the pool's timeout; when the
    /// caller gives up (timeout, or its future is dropped), the job's signal is set.
    pub async fn run_as<T, F>(&self, class: JobClass, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel) -> T + Send + 'static,
    {
        let cancel = Cancel::new();
        let (tx, rx) = oneshot::channel();
        self.submit(class, cancel.clone(), job, move |r| {
            let _ = tx.send(r);
        })?;
        // Cancels the job when this future ends without its result, for whatever reason.
        struct Abandon(Option<Cancel>);
        impl Drop for Abandon {
            fn drop(&mut self) {
                if let Some(c) = self.0.take() {
                    c.cancel();
                }
            }
        }
        let mut abandon = Abandon(Some(cancel));
        let answer = tokio::time::timeout(self.timeout, rx).await;
        match answer {
            Err(_) => Err(PoolError::Timeout(self.timeout.as_millis() as u64)),
            Ok(Err(_)) | Ok(Ok(None)) => Err(PoolError::Panicked("the job was dropped".into())),
            Ok(Ok(Some(Err(msg)))) => Err(PoolError::Panicked(msg)),
            Ok(Ok(Some(Ok(v)))) => {
                abandon.0 = None;
                Ok(v)
            }
        }
    }

    /// [`CpuPool::run_as`] for a job of no particular family that ignores cancellation.
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_as(JobClass::default(), move |_| job()).await
    }
}

/// Starts waiting jobs while threads are free: the next family in turn whose first job may
/// run (a heavy job waits while the heavy threads are taken; later families go first).
fn dispatch(inner: &Arc<Inner>) {
    loop {
        let picked = {
            let mut s = inner.sched.lock().unwrap_or_else(|p| p.into_inner());
            if s.running >= inner.threads {
                return;
            }
            let heavy_full = s.running_heavy >= inner.heavy_threads;
            let position = s.turn.iter().position(|family| {
                s.queues
                    .get(family)
                    .and_then(VecDeque::front)
                    .is_some_and(|job| !job.heavy || !heavy_full || job.cancel.is_cancelled())
            });
            let Some(position) = position else { return };
            let Some(family) = s.turn.remove(position) else {
                return;
            };
            let Some(queue) = s.queues.get_mut(&family) else {
                return;
            };
            let Some(job) = queue.pop_front() else {
                return;
            };
            if queue.is_empty() {
                s.queues.remove(&family);
            } else {
                s.turn.push_back(family);
            }
            s.running += 1;
            if job.heavy {
                s.running_heavy += 1;
            }
            (family, job)
        };
        let (family, job) = picked;
        let done = inner.clone();
        inner.pool.spawn(move || {
            let heavy = job.heavy;
            if job.cancel.is_cancelled() {
                (job.skipped)();
            } else {
                (job.task)();
            }
            {
                // Memory in use is what the bound protects: the place is given back only
                // when the job is over, even if its caller stopped waiting long ago.
                let mut s = done.sched.lock().unwrap_or_else(|p| p.into_inner());
                s.running -= 1;
                s.admitted -= 1;
                if heavy {
                    s.running_heavy -= 1;
                }
                if let Some(n) = s.per_family.get_mut(&family) {
                    *n -= 1;
                    if *n == 0 {
                        s.per_family.remove(&family);
                    }
                }
            }
            dispatch(&done);
        });
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
    use std::sync::mpsc;

    fn class(family: &str, heavy: bool) -> JobClass {
        JobClass::new(&[family], heavy)
    }

    #[tokio::test]
    async fn a_job_returns_its_value() {
        let pool = CpuPool::new(1, 1, Duration::from_secs(5)).unwrap();
        assert_eq!(pool.run(|| 6 * 7).await, Ok(42));
    }

    #[tokio::test]
    async fn a_panicking_job_becomes_an_error() {
        let pool = CpuPool::new(1, 1, Duration::from_secs(5)).unwrap();
        let r: Result<(), _> = pool.run(|| panic!("boom")).await;
        assert_eq!(r, Err(PoolError::Panicked("boom".into())));
        assert_eq!(pool.run(|| 1).await, Ok(1));
    }

    #[tokio::test]
    async fn jobs_beyond_the_queue_are_refused() {
        let pool = Arc::new(CpuPool::new(1, 0, Duration::from_secs(5)).unwrap());
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let p = pool.clone();
        let first = tokio::spawn(async move { p.run(move || release_rx.recv().is_ok()).await });
        // Wait until the first job holds the only place.
        while pool.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.run(|| ()).await, Err(PoolError::Busy));
        release_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(true));
    }

    #[tokio::test]
    async fn a_slow_job_times_out_and_is_told_to_stop() {
        // Long enough for the job to start on a busy machine: one that never started would
        // not need telling.
        let pool = CpuPool::new(1, 1, Duration::from_millis(250)).unwrap();
        let (seen_tx, seen_rx) = mpsc::channel::<bool>();
        let r = pool
            .run_as(JobClass::default(), move |cancel| {
                let started = std::time::Instant::now();
                while !cancel.is_cancelled() && started.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = seen_tx.send(cancel.is_cancelled());
            })
            .await;
        assert_eq!(r, Err(PoolError::Timeout(250)));
        assert_eq!(seen_rx.recv_timeout(Duration::from_secs(5)), Ok(true));
    }

    /// Holds both threads of a 2-thread pool until released; returns the release senders.
    fn occupy(pool: &CpuPool, family: &str, heavy: bool, n: usize) -> Vec<mpsc::Sender<()>> {
        (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::channel::<()>();
                pool.submit(
                    class(family, heavy),
                    Cancel::new(),
                    move |_| {
                        let _ = rx.recv();
                    },
                    |_| {},
                )
                .unwrap();
                tx
            })
            .collect()
    }

    #[tokio::test]
    async fn heavy_jobs_leave_a_thread_to_the_others() {
        let pool = CpuPool::new(2, 8, Duration::from_secs(5)).unwrap();
        let heavy = occupy(&pool, "acme/dynamic", true, 3);
        // One heavy job runs, the other two wait: a light job of any family still runs.
        assert_eq!(pool.run_as(class("acme/thumb", false), |_| 7).await, Ok(7));
        assert_eq!(pool.queued(), 2);
        drop(heavy);
    }

    #[tokio::test]
    async fn families_take_turns() {
        let pool = CpuPool::new(1, 16, Duration::from_secs(5)).unwrap();
        let blocker = occupy(&pool, "gate", false, 1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let submit = |family: &'static str| {
            let order = order.clone();
            pool.submit(
                class(family, false),
                Cancel::new(),
                move |_| order.lock().unwrap().push(family),
                |_| {},
            )
            .unwrap();
        };
        for _ in 0..3 {
            submit("flood");
        }
        submit("other");
        drop(blocker);
        while pool.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // "other" came last but runs second: after one job of the flood, not after all three.
        assert_eq!(
            *order.lock().unwrap(),
            vec!["flood", "other", "flood", "flood"]
        );
    }

    #[tokio::test]
    async fn one_family_cannot_take_every_waiting_place() {
        let pool = CpuPool::new(1, 4, Duration::from_secs(5)).unwrap();
        // One running and two waiting (half of the queue) fill the family's share.
        let held = occupy(&pool, "flood", false, 3);
        let refused = pool.submit(class("flood", false), Cancel::new(), |_| (), |_| {});
        assert_eq!(refused, Err(PoolError::Busy));
        let other = pool.submit(class("other", false), Cancel::new(), |_| (), |_| {});
        assert_eq!(other, Ok(()));
        drop(held);
    }

    #[tokio::test]
    async fn a_job_cancelled_before_it_starts_does_not_run() {
        let pool = CpuPool::new(1, 4, Duration::from_secs(5)).unwrap();
        let blocker = occupy(&pool, "gate", false, 1);
        let cancel = Cancel::new();
        let (tx, rx) = mpsc::channel();
        pool.submit(
            class("x", false),
            cancel.clone(),
            |_| "ran",
            move |r| {
                let _ = tx.send(r.map(|r| r.unwrap_or_default()));
            },
        )
        .unwrap();
        cancel.cancel();
        drop(blocker);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(None));
    }
}
