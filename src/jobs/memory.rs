//! Giving freed memory back to the system. glibc's allocator keeps the pages of freed blocks
//! inside its heaps, and returns them on its own only from the top of a heap. An upload burst
//! frees most of what the embedded store's transactions and the render threads allocated, in
//! the middle of the heaps, so the process stays at its peak until a restart: after 100,000
//! uploads, 238 MB, of which `malloc_trim` gives back 53 MB at once. So the pass asks for it
//! every [`INTERVAL`], off the request path. Other allocators (musl) return freed pages
//! themselves, and the pass does nothing there.

use std::time::{Duration, Instant};

/// How often freed memory is given back. A pass takes each heap's lock in turn: 17–22 ms
/// in all at 100,000 images, 19–53 ms at a million; once a minute keeps that rare.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Gives back the free pages of the allocator's heaps; logs what it did at debug level.
pub fn give_back() {
    let before = resident_bytes();
    let t0 = Instant::now();
    if !trim() {
        return;
    }
    if let (Some(before), Some(after)) = (before, resident_bytes()) {
        log::debug!(
            "memory: gave back {} MB in {:.1} ms ({} MB resident)",
            before.saturating_sub(after) >> 20,
            t0.elapsed().as_secs_f64() * 1e3,
            after >> 20
        );
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointers; it walks the allocator's own heaps under their
    // locks and may be called from any thread at any time.
    unsafe { libc::malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

/// The process's resident set, from `/proc/self/statm` (in pages of 4 KiB).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_freed_in_the_middle_of_the_heap_is_given_back() {
        // 120 MB in blocks of 4 KiB, seven of every eight freed: whole pages in the middle of
        // the heap, which glibc keeps until asked. Far more than the other tests running at
        // the same time allocate in the few milliseconds of the pass.
        let mut blocks: Vec<Vec<u8>> = (0..30_000).map(|i| vec![i as u8; 4096]).collect();
        let mut i = 0;
        blocks.retain(|_| {
            i += 1;
            i % 8 == 0
        });
        let before = resident_bytes();
        give_back();
        let after = resident_bytes();
        drop(blocks);
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            let (Some(before), Some(after)) = (before, after) else {
                panic!("/proc/self/statm unreadable");
            };
            assert!(
                after + (40 << 20) < before,
                "resident {before} -> {after} bytes"
            );
        }
    }
}
