//! The listing index of the embedded records, in two tiers. sled 0.34 keeps a page-table
//! entry in memory for every node of at most 16 entries, whether the node is cached or not:
//! about 40 bytes per entry after an open, so a million images with a dozen listing entries
//! each would hold half a gigabyte before any is read, and an open reads them all.
//!
//! A record's transaction writes its entries one per key (`img_index`, the singles). A
//! background pass ([`SledStore::pack_index`]) moves settled entries into sorted runs of about
//! [`RUN`] entries, one sled value each (`img_runs`, keyed by the run's first entry), so a
//! million images' entries take a few hundred thousand keys instead of millions. Runs never
//! overlap: every entry between one run's key and the next run's key belongs to the first. An
//! entry removed from a run is marked in `img_gone` until a pass rewrites its run, since a
//! transaction can only reach keys it names. Every entry is a single or in a run, never
//! both, and only entries of runs are marked. A walk merges the singles with the entries of
//! the runs, less the marked ones.
//!
//! Walks, point lookups and the records' transactions hold [`SledStore::index_lock`] shared.
//! A pass takes it alone for each step (one transaction), and only when nobody holds it
//! (`try_write`): a walk never sees an entry move between tiers, and no reader ever waits
//! behind a pass that is waiting.

use super::{SledStore, TxError};
use crate::storage::{Result, StorageError};
use sled::transaction::TransactionalTree;
use sled::{IVec, Transactional, Tree};
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::{PoisonError, RwLockReadGuard, RwLockWriteGuard, TryLockError};
use std::time::{Duration, Instant};

/// Entries per run that a pass aims for.
const RUN: usize = 64;
/// A merged run up to this many entries stays one run.
const RUN_MAX: usize = 96;
/// Singles (and marks) a pass moves per step: one transaction with the lock held alone.
const STEP: usize = 512;
/// A pass is due once this many entries changed since the last one...
const PACK_MIN: u64 = 4096;
/// ...and at least one in this many of the packed entries (so the runs are rewritten about
/// that many times over as the index grows, not once per new entry).
const PACK_SHARE: u64 = 8;
/// How long a step waits for the readers to let go before the pass gives up its turn.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Where the number of entries held in runs is kept (tree `meta`).
pub(super) const PACKED_KEY: &[u8] = b"index_packed";

/// Adds a listing entry inside a record's transaction: an entry of a run marked gone comes
/// back, any other becomes a single.
pub(super) fn tx_add(
    singles: &TransactionalTree,
    gone: &TransactionalTree,
    key: &[u8],
) -> std::result::Result<(), TxError> {
    // Read first: the removal of an absent key would still be written.
    if gone.get(key)?.is_some() {
        gone.remove(key)?;
    } else {
        singles.insert(key, &[])?;
    }
    Ok(())
}

/// Removes a listing entry inside a record's transaction: a single goes, an entry of a run is
/// marked gone.
pub(super) fn tx_remove(
    singles: &TransactionalTree,
    gone: &TransactionalTree,
    key: &[u8],
) -> std::result::Result<(), TxError> {
    if singles.get(key)?.is_some() {
        singles.remove(key)?;
    } else {
        gone.insert(key, &[])?;
    }
    Ok(())
}

/// A run's entries in order, each as the length it shares with the entry before, the length
/// of the rest (both LEB128) and the rest.
fn encode_run(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 24);
    let mut before: &[u8] = &[];
    for e in entries {
        let shared = before.iter().zip(e).take_while(|(a, b)| a == b).count();
        let rest = e.get(shared..).unwrap_or_default();
        put_len(&mut out, shared);
        put_len(&mut out, rest.len());
        out.extend_from_slice(rest);
        before = e;
    }
    out
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn take_len(bytes: &[u8], at: &mut usize) -> Option<usize> {
    let mut n = 0usize;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        n |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// Reads a run's entries in order, rebuilt one after the other in one buffer, until `each`
/// returns `false`.
fn read_run(bytes: &[u8], mut each: impl FnMut(&[u8]) -> bool) -> Result<()> {
    let corrupt = || StorageError::Corrupt {
        tree: "img_runs",
        message: "unreadable run".into(),
    };
    let mut entry: Vec<u8> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let shared = take_len(bytes, &mut at).ok_or_else(corrupt)?;
        let len = take_len(bytes, &mut at).ok_or_else(corrupt)?;
        let rest = bytes.get(at..at + len).ok_or_else(corrupt)?;
        at += len;
        if shared > entry.len() {
            return Err(corrupt());
        }
        entry.truncate(shared);
        entry.extend_from_slice(rest);
        if !each(&entry) {
            break;
        }
    }
    Ok(())
}

fn decode_run(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    read_run(bytes, |e| {
        out.push(e.to_vec());
        true
    })?;
    Ok(out)
}

/// Whether a run holds `key`, read in place (its entries are sorted).
fn run_contains(bytes: &[u8], key: &[u8]) -> Result<bool> {
    let mut found = false;
    read_run(bytes, |e| {
        found = e == key;
        e < key
    })?;
    Ok(found)
}

/// The number of packed entries as kept in tree `meta`.
fn packed_count(value: Option<IVec>) -> u64 {
    value
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0)
}

/// Whether `a` comes before `b` in the walk's direction.
fn before(a: &[u8], b: &[u8], reverse: bool) -> bool {
    if reverse {
        a > b
    } else {
        a < b
    }
}

type Keys<'a> = Box<dyn Iterator<Item = Result<Vec<u8>>> + 'a>;

/// The keys of a range of a tree, in the walk's direction.
fn keys<'a>(iter: sled::Iter, reverse: bool) -> Keys<'a> {
    let keys = iter.keys().map(|k| Ok(k?.to_vec()));
    if reverse {
        Box::new(keys.rev())
    } else {
        Box::new(keys)
    }
}

/// One source of a walk with its next key read ahead.
struct Head<'a> {
    iter: Keys<'a>,
    next: Option<Vec<u8>>,
    /// The source ended: it is not asked again.
    done: bool,
}

impl<'a> Head<'a> {
    fn new(iter: Keys<'a>) -> Head<'a> {
        Head {
            iter,
            next: None,
            done: false,
        }
    }

    fn peek(&mut self) -> Result<Option<&Vec<u8>>> {
        if self.next.is_none() && !self.done {
            self.next = self.iter.next().transpose()?;
            self.done = self.next.is_none();
        }
        Ok(self.next.as_ref())
    }
}

/// The entries of the runs within `[from, to)`, in the walk's direction.
struct RunEntries<'a> {
    runs: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>> + 'a>,
    from: Vec<u8>,
    to: Option<Vec<u8>>,
    reverse: bool,
    current: std::vec::IntoIter<Vec<u8>>,
    /// Walking in reverse, a run at or before `from` was the last one that can hold entries.
    done: bool,
}

impl<'a> RunEntries<'a> {
    fn new(runs: &'a Tree, from: Vec<u8>, to: Option<Vec<u8>>, reverse: bool) -> RunEntries<'a> {
        let end = to.clone().map_or(Bound::Unbounded, Bound::Excluded);
        let iter: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>> + 'a> = if reverse {
            Box::new(runs.range((Bound::Unbounded, end)).rev())
        } else {
            // The run that starts at or before `from` may hold entries of the span.
            let first = runs.range(..=from.clone()).next_back();
            let rest = runs.range((Bound::Excluded(from.clone()), end));
            Box::new(first.into_iter().chain(rest))
        };
        RunEntries {
            runs: iter,
            from,
            to,
            reverse,
            current: Vec::new().into_iter(),
            done: false,
        }
    }
}

impl Iterator for RunEntries<'_> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Result<Vec<u8>>> {
        loop {
            if let Some(e) = self.current.next() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            let (key, value) = match self.runs.next()? {
                Ok(run) => run,
                Err(e) => return Some(Err(e.into())),
            };
            if self.reverse && key.as_ref() <= self.from.as_slice() {
                self.done = true;
            }
            let entries = match decode_run(&value) {
                Ok(entries) => entries,
                Err(e) => return Some(Err(e)),
            };
            let mut within: Vec<Vec<u8>> = entries
                .into_iter()
                .filter(|e| {
                    e.as_slice() >= self.from.as_slice()
                        && self.to.as_ref().is_none_or(|t| e.as_slice() < t.as_slice())
                })
                .collect();
            if self.reverse {
                within.reverse();
            }
            self.current = within.into_iter();
        }
    }
}

/// A walk over both tiers, holding the index lock shared while it lives.
struct Walk<'a> {
    _guard: RwLockReadGuard<'a, ()>,
    singles: Head<'a>,
    runs: Head<'a>,
    gone: Head<'a>,
    reverse: bool,
}

impl Walk<'_> {
    fn step(&mut self) -> Result<Option<Vec<u8>>> {
        let reverse = self.reverse;
        // Skip the run entries marked gone (the marks are entries of runs, in the same order).
        while let Some(e) = self.runs.peek()? {
            let mut marked = false;
            while let Some(g) = self.gone.peek()? {
                if g == e {
                    marked = true;
                    break;
                }
                if !before(g, e, reverse) {
                    break;
                }
                self.gone.next = None;
            }
            if !marked {
                break;
            }
            self.runs.next = None;
            self.gone.next = None;
        }
        let single_first = match (self.singles.peek()?, self.runs.peek()?) {
            (None, None) => return Ok(None),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(s), Some(r)) => before(s, r, reverse),
        };
        Ok(if single_first {
            self.singles.next.take()
        } else {
            self.runs.next.take()
        })
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Result<Vec<u8>>> {
        self.step().transpose()
    }
}

/// What one step of a pass found and where the next one starts.
struct Step {
    moved: u64,
    next: Option<Vec<u8>>,
}

impl SledStore {
    /// The index lock, shared.
    pub(super) fn index_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.index_lock
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The index lock alone, once nobody holds it; `None` after [`LOCK_WAIT`].
    fn index_alone(&self) -> Option<RwLockWriteGuard<'_, ()>> {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match self.index_lock.try_write() {
                Ok(guard) => return Some(guard),
                Err(TryLockError::Poisoned(e)) => return Some(e.into_inner()),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TryLockError::WouldBlock) => return None,
            }
        }
    }

    /// Every listing entry in `[from, to)` (`to` `None`: to the end), in key order or in
    /// reverse.
    pub(super) fn index_entries<'a>(
        &'a self,
        from: Vec<u8>,
        to: Option<Vec<u8>>,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = Result<Vec<u8>>> + 'a> {
        if to.as_ref().is_some_and(|t| *t <= from) {
            return Box::new(std::iter::empty());
        }
        let guard = self.index_shared();
        let range = || {
            (
                Bound::Included(from.clone()),
                to.clone().map_or(Bound::Unbounded, Bound::Excluded),
            )
        };
        let singles = keys(self.img_index.range(range()), reverse);
        let gone = keys(self.img_gone.range(range()), reverse);
        let runs = RunEntries::new(&self.img_runs, from.clone(), to.clone(), reverse);
        Box::new(Walk {
            _guard: guard,
            singles: Head::new(singles),
            runs: Head::new(Box::new(runs)),
            gone: Head::new(gone),
            reverse,
        })
    }

    /// Whether the listing index holds `key`.
    pub(super) fn index_contains(&self, key: &[u8]) -> Result<bool> {
        let _guard = self.index_shared();
        if self.img_index.contains_key(key)? {
            return Ok(true);
        }
        let Some((_, run)) = self
            .img_runs
            .range(..=key.to_vec())
            .next_back()
            .transpose()?
        else {
            return Ok(false);
        };
        Ok(run_contains(&run, key)? && !self.img_gone.contains_key(key)?)
    }

    /// Notes that a committed change wrote `n` listing entries or marks.
    pub(super) fn index_changed(&self, n: usize) {
        self.index_changes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Entries held in runs.
    fn packed_entries(&self) -> Result<u64> {
        Ok(packed_count(self.meta.get(PACKED_KEY)?))
    }

    /// Moves the singles and the marks of the listing index into its runs, when enough of
    /// them have gathered since the last pass (or every one, with `all`). Returns the number
    /// of singles and marks moved. A pass that cannot take the lock for a step stops there;
    /// the next one goes on.
    pub(crate) fn pack_index(&self, all: bool) -> Result<u64> {
        if !all {
            if !self.index_counted.swap(true, Ordering::AcqRel) {
                // Since the open: what the store held unpacked then counts too.
                let before = (self.img_index.len() + self.img_gone.len()) as u64;
                self.index_changes.fetch_add(before, Ordering::Relaxed);
            }
            let due = PACK_MIN.max(self.packed_entries()? / PACK_SHARE);
            if self.index_changes.load(Ordering::Relaxed) < due {
                return Ok(0);
            }
        }
        self.index_changes.store(0, Ordering::Relaxed);
        let mut cursor = Vec::new();
        let mut moved = 0;
        loop {
            let Some(_alone) = self.index_alone() else {
                log::info!("listing index: readers held the lock; the pass goes on later");
                self.index_changes.fetch_add(PACK_MIN, Ordering::Relaxed);
                return Ok(moved);
            };
            let step = self.pack_step(&cursor)?;
            moved += step.moved;
            match step.next {
                Some(next) => cursor = next,
                None => return Ok(moved),
            }
        }
    }

    /// Moves the singles and marks at or after `cursor` that belong to one run (at most
    /// [`STEP`] of them) into it, splitting it when it grows past [`RUN_MAX`]. The caller holds
    /// the index lock alone.
    fn pack_step(&self, cursor: &[u8]) -> Result<Step> {
        let first = |tree: &Tree| -> Result<Option<IVec>> {
            Ok(tree.range(cursor.to_vec()..).keys().next().transpose()?)
        };
        let k = match (first(&self.img_index)?, first(&self.img_gone)?) {
            (None, None) => {
                return Ok(Step {
                    moved: 0,
                    next: None,
                })
            }
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
        };
        // The run `k` belongs to: the last one starting at or before it, else the first one
        // (which then starts earlier). Its entries end where the next run starts.
        let run = match self.img_runs.range(..=k.to_vec()).next_back().transpose()? {
            Some(run) => Some(run),
            None => self.img_runs.iter().next().transpose()?,
        };
        let end = match &run {
            Some((key, _)) => self
                .img_runs
                .range((Bound::Excluded(key.to_vec()), Bound::Unbounded))
                .keys()
                .next()
                .transpose()?,
            None => None,
        };
        let range = || {
            (
                Bound::Included(k.to_vec()),
                end.as_ref()
                    .map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec())),
            )
        };
        let collect = |tree: &Tree| -> Result<Vec<IVec>> {
            Ok(tree
                .range(range())
                .keys()
                .take(STEP)
                .collect::<sled::Result<Vec<_>>>()?)
        };
        let mut singles = collect(&self.img_index)?;
        let mut marks = collect(&self.img_gone)?;
        // A full batch ends the step's share of the run's span at its last key.
        let mut next = end.as_ref().map(|e| e.to_vec());
        let mut bound: Option<IVec> = None;
        for batch in [&singles, &marks] {
            if batch.len() == STEP {
                if let Some(last) = batch.last() {
                    if bound.as_ref().is_none_or(|b| last < b) {
                        bound = Some(last.clone());
                    }
                }
            }
        }
        if let Some(b) = &bound {
            singles.retain(|s| s <= b);
            marks.retain(|m| m <= b);
            let mut after = b.to_vec();
            after.push(0);
            next = Some(after);
        }
        let mut entries: BTreeSet<Vec<u8>> = match &run {
            Some((_, value)) => decode_run(value)?.into_iter().collect(),
            None => BTreeSet::new(),
        };
        let mut unmarked = 0u64;
        for m in &marks {
            if entries.remove(m.as_ref()) {
                unmarked += 1;
            }
        }
        for s in &singles {
            entries.insert(s.to_vec());
        }
        let entries: Vec<Vec<u8>> = entries.into_iter().collect();
        let chunks = match entries.len() {
            0 => 0,
            n if n <= RUN_MAX => 1,
            n => n.div_ceil(RUN),
        };
        let mut runs: Vec<&[Vec<u8>]> = Vec::with_capacity(chunks);
        let mut at = 0;
        for i in 0..chunks {
            let upto = entries.len() * (i + 1) / chunks;
            runs.push(entries.get(at..upto).unwrap_or_default());
            at = upto;
        }
        let old_key = run.as_ref().map(|(key, _)| key.clone());
        let added = singles.len() as u64;
        let result: std::result::Result<(), sled::transaction::TransactionError<StorageError>> =
            (&self.img_index, &self.img_gone, &self.img_runs, &self.meta).transaction(
                |(index, gone, stored_runs, meta)| {
                    for s in &singles {
                        index.remove(s)?;
                    }
                    for m in &marks {
                        gone.remove(m)?;
                    }
                    if let Some(key) = &old_key {
                        stored_runs.remove(key)?;
                    }
                    for r in &runs {
                        if let Some(first) = r.first() {
                            stored_runs.insert(first.as_slice(), encode_run(r))?;
                        }
                    }
                    let packed = packed_count(meta.get(PACKED_KEY)?);
                    let packed = (packed + added).saturating_sub(unmarked);
                    meta.insert(PACKED_KEY, &packed.to_be_bytes())?;
                    Ok(())
                },
            );
        super::tx_result(result)?;
        Ok(Step {
            moved: added + marks.len() as u64,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sled::SledStore;

    fn key(rng: &mut fastrand::Rng) -> Vec<u8> {
        // Few distinct first bytes, so that keys share prefixes and cluster.
        let len = rng.usize(1..12);
        (0..len).map(|_| b"abcz"[rng.usize(..4)]).collect()
    }

    fn add(store: &SledStore, k: &[u8]) {
        let _shared = store.index_shared();
        (&store.img_index, &store.img_gone)
            .transaction(|(singles, gone)| tx_add(singles, gone, k))
            .unwrap();
    }

    fn remove(store: &SledStore, k: &[u8]) {
        let _shared = store.index_shared();
        (&store.img_index, &store.img_gone)
            .transaction(|(singles, gone)| tx_remove(singles, gone, k))
            .unwrap();
    }

    fn walk(store: &SledStore, from: &[u8], to: Option<&[u8]>, reverse: bool) -> Vec<Vec<u8>> {
        store
            .index_entries(from.to_vec(), to.map(<[u8]>::to_vec), reverse)
            .collect::<Result<_>>()
            .unwrap()
    }

    #[test]
    fn runs_encode_and_decode_back() {
        let entries = vec![
            vec![7; 300],
            b"acme\0lc1".to_vec(),
            b"acme\0lc2".to_vec(),
            b"acme\0ls".to_vec(),
        ];
        let run = encode_run(&entries);
        assert_eq!(decode_run(&run).unwrap(), entries);
        for e in &entries {
            assert!(run_contains(&run, e).unwrap());
        }
        assert!(!run_contains(&run, b"acme\0lc").unwrap());
        assert!(!run_contains(&run, b"acme\0lc3").unwrap());
        assert!(!run_contains(&run, &[8]).unwrap());
        assert!(decode_run(&[5, 1, b'x']).is_err());
        assert!(decode_run(&[0, 9, b'x']).is_err());
    }

    /// Random additions, removals and passes against a set: every walk (any span, either
    /// direction) and every lookup gives the set's answer, whatever sits in which tier.
    #[test]
    fn both_tiers_together_answer_like_one_ordered_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut model: BTreeSet<Vec<u8>> = BTreeSet::new();
        for round in 0..60 {
            for _ in 0..rng.usize(1..300) {
                let k = key(&mut rng);
                if model.contains(&k) {
                    if rng.bool() {
                        remove(&store, &k);
                        model.remove(&k);
                    }
                } else {
                    add(&store, &k);
                    model.insert(k);
                }
            }
            if round % 3 != 2 {
                store.pack_index(true).unwrap();
                assert_eq!(store.img_index.len() + store.img_gone.len(), 0);
                assert_eq!(store.packed_entries().unwrap(), model.len() as u64);
            }
            let all: Vec<Vec<u8>> = model.iter().cloned().collect();
            assert_eq!(walk(&store, b"", None, false), all);
            let mut back = all.clone();
            back.reverse();
            assert_eq!(walk(&store, b"", None, true), back);
            for _ in 0..20 {
                let (a, b) = (key(&mut rng), key(&mut rng));
                let (from, to) = if a <= b { (a, b) } else { (b, a) };
                let want: Vec<Vec<u8>> = model.range(from.clone()..to.clone()).cloned().collect();
                assert_eq!(walk(&store, &from, Some(&to), false), want);
                let mut back = want;
                back.reverse();
                assert_eq!(walk(&store, &from, Some(&to), true), back);
                let open: Vec<Vec<u8>> = model.range(from.clone()..).cloned().collect();
                assert_eq!(walk(&store, &from, None, false), open);
                assert_eq!(store.index_contains(&from).unwrap(), model.contains(&from));
            }
        }
        // The runs stay near their size and never overlap.
        let runs: Vec<(IVec, Vec<Vec<u8>>)> = store
            .img_runs
            .iter()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k, decode_run(&v).unwrap())
            })
            .collect();
        assert!(runs.len() > 3);
        for pair in runs.windows(2) {
            let (k, entries) = &pair[0];
            assert_eq!(k.as_ref(), entries[0].as_slice());
            assert!(entries.len() <= RUN_MAX);
            assert!(entries.last().unwrap() < &pair[1].1[0]);
        }
    }

    /// A pass is due only once enough has changed; a walk holds the pass off.
    #[test]
    fn a_pass_waits_for_enough_changes_and_for_the_readers() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        for i in 0..100u32 {
            add(&store, &i.to_be_bytes());
        }
        store.index_changed(100);
        assert_eq!(store.pack_index(false).unwrap(), 0);
        store.index_changed(PACK_MIN as usize);
        let walk = store.index_entries(Vec::new(), None, false);
        assert!(store.index_lock.try_write().is_err());
        drop(walk);
        assert_eq!(store.pack_index(false).unwrap(), 100);
        assert_eq!(store.img_index.len(), 0);
    }
}
