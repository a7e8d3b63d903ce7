//! A small runtime on a thread of its own, for the clients of shared backends that are
//! asynchronous (PostgreSQL, object storage) behind interfaces that are synchronous.
//!
//! The record and bytes traits block (the embedded store answers from memory-mapped pages and
//! local files), so a shared backend's trait method sends its work to this runtime and waits
//! for the answer on a channel. Nothing depends on the caller's runtime: a blocking client
//! would start a runtime inside the web server's (which panics), and a connection driven by
//! one web worker would stall whenever that worker blocks.

use std::future::Future;
use std::io;

/// The runtime that drives a backend's connections, on a thread of its own; stopped and
/// joined when dropped.
pub(crate) struct Driver {
    pub(crate) handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Driver {
    /// Starts the runtime on a thread named `name`.
    pub(crate) fn start(name: &str) -> io::Result<Driver> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Driver {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `work` on the driver thread and waits for its answer; `None` when the driver
    /// stopped before answering.
    pub(crate) fn block_on<T, Fut>(&self, work: Fut) -> Option<T>
    where
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().ok()
    }
}
