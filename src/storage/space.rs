//! Free space of the data folder and the headroom kept below the database (design §7). sled
//! 0.34 can stay broken after a single ENOSPC, so the database must never be the one that
//! finds the disk full: every write that grows the data folder (uploads, image and stack
//! records, stored renders) is refused with [`StorageError::NoSpace`] while the free space is
//! below `storage.min_free_mb`, and the service answers 507 for it. Reads never look here.
//!
//! The figure comes from `statvfs` of the data folder, refreshed every second by a background
//! task (see `app`), whenever an estimate says a write would cross the headroom, and by the
//! readiness probe. Between refreshes the bytes that writers announce are subtracted from the
//! last figure, and every MiB announced brings a fresh look, so a fast upload cannot run far
//! past the headroom between two looks.
//!
//! sled writes a snapshot when it opens, so it cannot open on a disk with no byte free (say,
//! filled by another program). A reserve file (`reserve` in the data folder, a quarter of the
//! headroom, at most 16 MiB) is kept while there is room and removed at start-up, or by the
//! background watch, when the disk is nearly full: the appliance always opens (read-only
//! until there is room), and sled keeps room for the small writes under way.

use super::StorageError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The reserve file in the data folder.
pub const RESERVE_FILE: &str = "reserve";

/// Below this much free space at start-up the reserve file is given back to the database.
const RELEASE_RESERVE_BELOW: u64 = 16 * 1024 * 1024;

/// Largest reserve file.
const MAX_RESERVE: u64 = 16 * 1024 * 1024;

/// Gives the reserve file back when the disk holding `data` is nearly full, so that the
/// database can open (or go on with the writes under way); returns whether it did.
pub fn release_reserve_if_full(data: &Path) -> std::io::Result<bool> {
    let reserve = data.join(RESERVE_FILE);
    if !reserve.exists() || available_bytes(data)? >= RELEASE_RESERVE_BELOW {
        return Ok(false);
    }
    std::fs::remove_file(&reserve)?;
    log::warn!(
        "the disk of {} is nearly full: removed the reserve file so the database can open",
        data.display()
    );
    Ok(true)
}

/// Announced bytes after which a writer looks at the real figure again, since other
/// processes may have filled the disk since the last look.
const LOOK_AGAIN_AFTER: u64 = 1024 * 1024;

/// The free-space watch of one data folder.
#[derive(Debug)]
pub struct Space {
    path: PathBuf,
    /// Headroom in bytes; 0 turns the watch off.
    min_free: u64,
    /// Bytes available to this process at the last look.
    free: AtomicU64,
    /// Bytes announced by writers since the last look.
    announced: AtomicU64,
    low: AtomicBool,
}

/// Whether an I/O error means the disk (or the quota) is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// The error a refused write gives to code that speaks `io::Error` (blob files).
pub(crate) fn io_refusal(e: StorageError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::StorageFull, e.to_string())
}

/// Bytes available to an unprivileged writer on the file system holding `path`.
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` points to writable memory
    // of the right type; statvfs writes only into it.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the structure.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

impl Space {
    /// [`release_reserve_if_full`] for the watched folder.
    pub fn release_reserve_if_full(&self) -> std::io::Result<bool> {
        release_reserve_if_full(&self.path)
    }

    /// Watches the file system of `path`, keeping `min_free` bytes free (0 = no watch). Takes
    /// a first look at once.
    pub fn new(path: &Path, min_free: u64) -> Space {
        let space = Space {
            path: path.to_path_buf(),
            min_free,
            free: AtomicU64::new(u64::MAX),
            announced: AtomicU64::new(0),
            low: AtomicBool::new(false),
        };
        space.refresh();
        space
    }

    /// Looks at the free space again and returns whether it is below the headroom. A failed
    /// look keeps the previous figure.
    pub fn refresh(&self) -> bool {
        if self.min_free == 0 {
            return false;
        }
        match available_bytes(&self.path) {
            Ok(free) => {
                self.free.store(free, Ordering::Release);
                self.announced.store(0, Ordering::Release);
                let low = free < self.min_free;
                let was = self.low.swap(low, Ordering::AcqRel);
                if low && !was {
                    log::warn!(
                        "the data folder has {} MiB free, below storage.min_free_mb ({} MiB): writes are refused until there is room",
                        free / (1024 * 1024),
                        self.min_free / (1024 * 1024)
                    );
                } else if was && !low {
                    log::info!(
                        "the data folder has {} MiB free again: writes are accepted",
                        free / (1024 * 1024)
                    );
                }
                low
            }
            Err(e) => {
                log::warn!("cannot read the free space of {}: {e}", self.path.display());
                self.is_low()
            }
        }
    }

    /// Whether the last look found less free space than the headroom.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Acquire)
    }

    /// The headroom in bytes.
    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// Size of the reserve file kept with this headroom (0 without a headroom).
    fn reserve_size(&self) -> u64 {
        (self.min_free / 4).min(MAX_RESERVE)
    }

    /// Writes the reserve file if it is missing and there is room for it above the headroom.
    /// Blocking (it writes up to 16 MiB): called at start-up and from a blocking task.
    pub fn keep_reserve(&self) {
        let size = self.reserve_size();
        let path = self.path.join(RESERVE_FILE);
        if size == 0 || path.exists() {
            return;
        }
        let room = available_bytes(&self.path).unwrap_or(0);
        if room < self.min_free.saturating_add(size) {
            return;
        }
        let temp = self.path.join(format!("{RESERVE_FILE}.tmp"));
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&temp)?;
            // Real zeros, not a hole: the blocks must be allocated to be worth anything.
            let chunk = vec![0u8; 1024 * 1024];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()?;
            std::fs::rename(&temp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            log::warn!("the reserve file was not written: {e}");
        }
        self.refresh();
    }

    /// Fails while the free space is below the headroom.
    pub fn check(&self) -> Result<(), StorageError> {
        if self.is_low() {
            return Err(self.refusal());
        }
        Ok(())
    }

    /// Announces `bytes` about to be written; fails when they would leave less than the
    /// headroom free. The estimate is checked against a fresh look before refusing.
    pub fn reserve(&self, bytes: u64) -> Result<(), StorageError> {
        if self.min_free == 0 {
            return Ok(());
        }
        self.check()?;
        let announced = self.announced.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let free = self.free.load(Ordering::Acquire);
        if free.saturating_sub(announced) >= self.min_free && announced < LOOK_AGAIN_AFTER {
            return Ok(());
        }
        if self.refresh() {
            return Err(self.refusal());
        }
        let announced = self.announced.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if self.free.load(Ordering::Acquire).saturating_sub(announced) >= self.min_free {
            Ok(())
        } else {
            Err(self.refusal())
        }
    }

    fn refusal(&self) -> StorageError {
        StorageError::NoSpace(format!(
            "the appliance is low on disk space (less than {} MiB free); retry when space was freed",
            self.min_free / (1024 * 1024)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_space_of_a_folder_can_be_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available_bytes(dir.path()).unwrap() > 0);
    }

    #[test]
    fn a_headroom_larger_than_the_disk_refuses_writes_and_zero_turns_the_watch_off() {
        let dir = tempfile::tempdir().unwrap();
        let huge = Space::new(dir.path(), u64::MAX / 2);
        assert!(huge.is_low());
        assert!(matches!(huge.check(), Err(StorageError::NoSpace(_))));
        assert!(matches!(huge.reserve(1), Err(StorageError::NoSpace(_))));
        let off = Space::new(dir.path(), 0);
        assert!(!off.is_low());
        assert!(off.reserve(u64::MAX / 2).is_ok());
    }

    #[test]
    fn announced_bytes_that_would_cross_the_headroom_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space::new(dir.path(), 1024 * 1024);
        assert!(!space.is_low());
        assert!(space.reserve(4096).is_ok());
        let free = available_bytes(dir.path()).unwrap();
        assert!(matches!(space.reserve(free), Err(StorageError::NoSpace(_))));
        assert!(!space.is_low(), "a refused write leaves the others alone");
    }
}
