//! A cancellation signal for CPU work. The service sets it when a render's deadline passes or
//! when no request waits for the render any more; the pipeline checks it between steps and
//! long loops check it between rows, so abandoned work gives its thread back soon instead of
//! running to the end.

use crate::render::error::{RenderError, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
