//! Node-local copies of immutable objects ([`LocalCopies`]): the bytes a cold render reads
//! from the bucket every time (its source blob and the mezzanine it starts from), kept as
//! files under the data folder (`cache/objects/`) within a byte budget
//! (`storage.object_cache_mb`), least recently used first out.
//!
//! Only objects whose bytes never change under their name are kept: source blobs are named by
//! the BLAKE3 of their bytes, and a mezzanine by its image and scale, from which it is built
//! deterministically (design §4). So a copy is either absent or identical to what the bucket
//! would answer, and a URL's bytes never depend on whether a copy existed. The bucket stays
//! the truth: a copy is made only after the object is in the bucket (or read from it), and a
//! missing or unreadable copy is a miss, never an error.
//!
//! Copies are written to a temporary name and renamed into place, so a reader never sees half
//! a file. They are not fsynced: the folder is emptied at every start, so a copy torn by a
//! crash is never read.

use super::super::space::Space;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Which kind of object a copy is of: the two share one budget but not one name space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A source blob, by its id.
    Blob,
    /// A mezzanine's render body, by its key.
    Mezzanine,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Blob => "b-",
            Kind::Mezzanine => "m-",
        }
    }
}

/// What the copies hold and how often they answered (for tests and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheFigures {
    /// Copies kept now.
    pub copies: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Reads answered by a copy.
    pub hits: u64,
    /// Reads that found no copy.
    pub misses: u64,
}

/// The files and their recency. The recency is a counter: the copy with the smallest tick is
/// the least recently used.
#[derive(Default)]
struct Index {
    /// File name → (size, tick).
    entries: HashMap<String, (u64, u64)>,
    /// Tick → file name.
    order: BTreeMap<u64, String>,
    bytes: u64,
    tick: u64,
}

impl Index {
    fn touch(&mut self, name: &str) -> bool {
        self.tick += 1;
        let tick = self.tick;
        let Some(entry) = self.entries.get_mut(name) else {
            return false;
        };
        self.order.remove(&entry.1);
        entry.1 = tick;
        self.order.insert(tick, name.to_string());
        true
    }

    fn remove(&mut self, name: &str) -> bool {
        match self.entries.remove(name) {
            Some((size, tick)) => {
                self.order.remove(&tick);
                self.bytes -= size;
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, name: String, size: u64) {
        self.remove(&name);
        self.tick += 1;
        self.entries.insert(name.clone(), (size, self.tick));
        self.order.insert(self.tick, name);
        self.bytes += size;
    }

    /// The least recently used names to remove until the copies fit in `budget`.
    fn over(&mut self, budget: u64) -> Vec<String> {
        let mut out = Vec::new();
        while self.bytes > budget {
            let Some((_, name)) = self.order.pop_first() else {
                break;
            };
            if let Some((size, _)) = self.entries.remove(&name) {
                self.bytes -= size;
            }
            out.push(name);
        }
        out
    }
}

/// Copies of immutable objects in one folder of the data folder, within `budget` bytes.
pub struct LocalCopies {
    dir: PathBuf,
    budget: u64,
    /// The data folder's free-space watch: no copy is written below its headroom.
    space: Arc<Space>,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Names of temporary files.
    serial: AtomicU64,
}

impl LocalCopies {
    /// Empties (creating) `dir` and keeps at most `budget` bytes of copies in it; `None` when
    /// the budget is 0 (no copies at all).
    pub fn open(dir: &Path, budget: u64, space: Arc<Space>) -> io::Result<Option<LocalCopies>> {
        if budget == 0 {
            // Copies of an earlier run with a budget would never be read nor removed.
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            return Ok(None);
        }
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(dir)?;
        Ok(Some(LocalCopies {
            dir: dir.to_path_buf(),
            budget,
            space,
            index: Mutex::new(Index::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            serial: AtomicU64::new(0),
        }))
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // The index holds no invariant a panicking holder could break half-way that matters
        // more than a few bytes of budget: keep using it.
        match self.index.lock() {
            Ok(index) => index,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn name(kind: Kind, id: &str) -> String {
        format!("{}{id}", kind.prefix())
    }

    /// The copy of `id`, or `None` (not kept, or unreadable).
    pub fn get(&self, kind: Kind, id: &str) -> Option<Vec<u8>> {
        let name = Self::name(kind, id);
        if !self.index().touch(&name) {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match std::fs::read(self.dir.join(&name)) {
            Ok(bytes) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(bytes)
            }
            Err(e) => {
                // Removed meanwhile by an eviction, or the folder was tampered with.
                if e.kind() != io::ErrorKind::NotFound {
                    log::warn!("reading the local copy {name} failed: {e}");
                }
                self.index().remove(&name);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps a copy of `bytes` under `id`, evicting the least recently used copies beyond the
    /// budget. Failures only mean no copy: they are logged, never returned.
    pub fn put(&self, kind: Kind, id: &str, bytes: &[u8]) {
        let size = bytes.len() as u64;
        // A copy larger than a quarter of the budget would push out too much for its worth.
        if size > self.budget / 4 || self.space.reserve(size).is_err() {
            return;
        }
        let name = Self::name(kind, id);
        if self.index().touch(&name) {
            return;
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!("tmp-{serial}"));
        let path = self.dir.join(&name);
        if let Err(e) = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, &path)) {
            let _ = std::fs::remove_file(&temp);
            log::warn!("keeping a local copy of {name} failed: {e}");
            return;
        }
        let evicted = {
            let mut index = self.index();
            index.insert(name, size);
            index.over(self.budget)
        };
        for old in evicted {
            let _ = std::fs::remove_file(self.dir.join(old));
        }
    }

    /// Drops the copy of `id` (its object is being removed from the bucket).
    pub fn remove(&self, kind: Kind, id: &str) {
        let name = Self::name(kind, id);
        if self.index().remove(&name) {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    /// What is kept now and how often it answered.
    pub fn figures(&self) -> CacheFigures {
        let index = self.index();
        CacheFigures {
            copies: index.entries.len() as u64,
            bytes: index.bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(budget: u64) -> (tempfile::TempDir, LocalCopies) {
        let dir = tempfile::tempdir().unwrap();
        let space = Arc::new(Space::new(dir.path(), 0));
        let copies = LocalCopies::open(&dir.path().join("cache"), budget, space)
            .unwrap()
            .unwrap();
        (dir, copies)
    }

    #[test]
    fn a_kept_copy_reads_back_the_same_bytes() {
        let (_dir, copies) = open(1000);
        assert_eq!(copies.get(Kind::Blob, "ab"), None);
        copies.put(Kind::Blob, "ab", b"hello");
        assert_eq!(copies.get(Kind::Blob, "ab").as_deref(), Some(&b"hello"[..]));
        // Kinds do not share names.
        assert_eq!(copies.get(Kind::Mezzanine, "ab"), None);
        let f = copies.figures();
        assert_eq!((f.copies, f.bytes, f.hits, f.misses), (1, 5, 1, 2));
    }

    #[test]
    fn the_least_recently_used_copies_leave_first_within_the_budget() {
        let (_dir, copies) = open(400);
        copies.put(Kind::Blob, "a", &[1; 100]);
        copies.put(Kind::Blob, "b", &[2; 100]);
        copies.put(Kind::Mezzanine, "c", &[3; 100]);
        // "a" is used again, so "b" is now the oldest.
        assert!(copies.get(Kind::Blob, "a").is_some());
        copies.put(Kind::Mezzanine, "d", &[4; 100]);
        copies.put(Kind::Mezzanine, "e", &[5; 100]);
        assert!(copies.get(Kind::Blob, "b").is_none());
        for (kind, id) in [
            (Kind::Blob, "a"),
            (Kind::Mezzanine, "c"),
            (Kind::Mezzanine, "d"),
            (Kind::Mezzanine, "e"),
        ] {
            assert!(copies.get(kind, id).is_some(), "{id} is kept");
        }
        assert_eq!(copies.figures().bytes, 400);
        let files = std::fs::read_dir(&copies.dir).unwrap().count();
        assert_eq!(files, 4, "evicted copies leave the folder");
    }

    #[test]
    fn a_copy_too_large_for_the_budget_is_not_kept() {
        let (_dir, copies) = open(400);
        copies.put(Kind::Blob, "big", &[0; 101]);
        assert_eq!(copies.get(Kind::Blob, "big"), None);
        assert_eq!(copies.figures().copies, 0);
    }

    #[test]
    fn a_removed_or_vanished_copy_is_a_miss() {
        let (_dir, copies) = open(1000);
        copies.put(Kind::Blob, "a", b"x");
        copies.put(Kind::Blob, "b", b"y");
        copies.remove(Kind::Blob, "a");
        assert_eq!(copies.get(Kind::Blob, "a"), None);
        std::fs::remove_file(copies.dir.join("b-b")).unwrap();
        assert_eq!(copies.get(Kind::Blob, "b"), None);
        assert_eq!(copies.figures().copies, 0);
    }

    #[test]
    fn copies_of_an_earlier_run_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let space = Arc::new(Space::new(dir.path(), 0));
        let folder = dir.path().join("cache");
        let first = LocalCopies::open(&folder, 1000, space.clone())
            .unwrap()
            .unwrap();
        first.put(Kind::Blob, "a", b"x");
        drop(first);
        let second = LocalCopies::open(&folder, 1000, space.clone())
            .unwrap()
            .unwrap();
        assert_eq!(second.get(Kind::Blob, "a"), None);
        assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
        assert!(LocalCopies::open(&folder, 0, space).unwrap().is_none());
        assert!(!folder.exists(), "a zero budget keeps no folder");
    }
}
