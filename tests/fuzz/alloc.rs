//! The test binary's allocator: the system one, plus a count of the bytes each thread holds,
//! so the engine can tell an input that made the code under test allocate far beyond what the
//! fuzzing limits allow (a decoder trusting a header field) from one that was merely refused.
//! Bytes freed on another thread than the one that allocated them are not subtracted there; the
//! peak is therefore an estimate, good enough to catch allocations that are off by orders of
//! magnitude.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Most bytes one thread may hold while it runs one fuzz input. The harnesses decode under
/// limits of at most 1,048,576 pixels (4 MiB as RGBA), so a few copies of that fit easily.
pub const THREAD_CAP: u64 = 256 * 1024 * 1024;

thread_local! {
    static LIVE: Cell<u64> = const { Cell::new(0) };
    static PEAK: Cell<u64> = const { Cell::new(0) };
    static BASE: Cell<u64> = const { Cell::new(0) };
}

/// Starts measuring this thread's peak from what it holds now.
pub fn reset_peak() {
    let live = LIVE.with(Cell::get);
    BASE.with(|b| b.set(live));
    PEAK.with(|p| p.set(live));
}

/// Largest number of bytes this thread held since [`reset_peak`], above what it held then.
pub fn peak() -> u64 {
    PEAK.with(Cell::get).saturating_sub(BASE.with(Cell::get))
}

fn grew(bytes: usize) {
    // `try_with`: the allocator is also called while thread-locals are being torn down.
    let _ = LIVE.try_with(|l| {
        let now = l.get().saturating_add(bytes as u64);
        l.set(now);
        let _ = PEAK.try_with(|p| {
            if now > p.get() {
                p.set(now);
            }
        });
    });
}

fn shrank(bytes: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(bytes as u64)));
}

/// The counting allocator.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; the counters only read sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        new
    }
}
