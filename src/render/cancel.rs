//! A cancellation signal for CPU work. The service sets it when a render's deadline passes or
//! when no request waits for the render any more; the pipeline checks it between steps and
//! long loops check it between rows, so abandoned work gives its thread back soon instead of
//! running to the end.

use crate::render::error::{RenderError, Result};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

thread_local! {
    /// The signal of the render running on this thread, for loops deep inside operations
    /// whose signatures know nothing of renders (a blur inside a drop shadow, say).
    static CURRENT: RefCell<Option<Cancel>> = const { RefCell::new(None) };
}

/// Runs `f` with `cancel` as this thread's current signal (see [`stop_requested`]).
pub fn scope<T>(cancel: &Cancel, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Cancel>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CURRENT.with(|c| c.borrow_mut().replace(cancel.clone()));
    let _reset = Reset(previous);
    f()
}

/// Whether the render running on this thread was cancelled. Long loops call it every few
/// rows and stop early; the pipeline then sees the signal after the operation and gives up,
/// so an interrupted result never reaches an encoder.
pub fn stop_requested() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(Cancel::is_cancelled))
}

/// A shared flag: once cancelled, it stays cancelled.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A signal that is not set.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Sets the signal; every holder sees it.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the signal is set.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// `Err(Cancelled)` once the signal is set: the `?` point of a step or a loop.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(RenderError::Cancelled)
        } else {
            Ok(())
        }
    }
}
