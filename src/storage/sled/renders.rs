//! Rendered outputs in the embedded records ([`RenderRecords`] of [`SledStore`]), keyed by
//! render key (BLAKE3 over the resolved request). A value is
//! `[u32 header length][JSON header][encoded bytes]`, so a hit is one lookup and the bytes are
//! served straight from sled's buffer without a copy. Renders larger than [`INLINE_MAX`] keep
//! only their header in sled (the length word has [`EXTERNAL`] set, and the body's length
//! follows the header) and their bytes in a file `renders/ab/cd/<key>` beside it: sled 0.34's
//! memory follows the size of its data, whatever its cache setting, so a few thousand large
//! renders would otherwise hold gigabytes. The file is written before the record and removed
//! after it; a missing file is a miss, and the render is made again.
//!
//! Indexes, written in the same transaction as the render itself, make every render findable
//! without scanning the store: by image (`org \0 hash \0 key`, which also serves the whole
//! organization by prefix), by every stack of its chain and that stack's revision
//! (`org \0 stack \0 revision \0 key`), and the URL paths it was served under (bounded).

use super::{decode, key3, prefix, tx_decode, tx_result, SledStore, TxError};
use crate::storage::check::RenderStatus;
use crate::storage::records::*;
use crate::storage::renders::{
    inline_value, Purged, RenderMeta, StoredRender, EXTERNAL, INLINE_MAX, MAX_PATHS_PER_RENDER,
};
use crate::storage::{encode, key2, OrgUsage, Result, ServedPath, StoredStack};
use sled::transaction::TransactionalTree;
use sled::Transactional;

/// Whether a render's organization, image (not deleted) and stack revisions still exist, read
/// inside the transaction that would store it; the same rule as `SledStore::render_status`.
fn tx_live(
    orgs: &TransactionalTree,
    images: &TransactionalTree,
    stacks: &TransactionalTree,
    meta: &RenderMeta,
) -> std::result::Result<bool, TxError> {
    let org = meta.organization.as_str();
    if orgs.get(org.as_bytes())?.is_none() {
        return Ok(false);
    }
    let image = match images.get(key2(org, &meta.image))? {
        Some(v) => tx_decode::<crate::model::image::ImageRecord>("images", &v)?,
        None => return Ok(false),
    };
    if image.deleted {
        return Ok(false);
    }
    for s in &meta.stacks {
        match stacks.get(key2(org, &s.name))? {
            Some(v) if tx_decode::<StoredStack>("stacks", &v)?.revision == s.revision => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

fn revision_key(org: &str, stack: &str, revision: u64, key: &[u8]) -> Vec<u8> {
    let mut k = key3(org, stack, &format!("{revision:016x}"));
    k.push(0);
    k.extend_from_slice(hex::encode(key).as_bytes());
    k
}

fn image_key(org: &str, image: &str, key: &[u8]) -> Vec<u8> {
    key3(org, image, &hex::encode(key))
}

/// The render key at the end of an index key (after the last zero byte).
fn trailing_key(index_key: &[u8]) -> Option<Vec<u8>> {
    let start = index_key.iter().rposition(|b| *b == 0)? + 1;
    hex::decode(index_key.get(start..)?).ok()
}

/// Key of the recency index: `last access (ms since the epoch, u64 BE) ++ render key`, so a scan
/// from the start meets the least recently used render first.
fn lru_key(ms: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&ms.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn be_u64(v: &[u8]) -> u64 {
    v.try_into().map_or(0, u64::from_be_bytes)
}

/// Records the last access of a render in both recency trees.
fn tx_set_atime(
    atime: &TransactionalTree,
    lru: &TransactionalTree,
    key: &[u8],
    ms: u64,
) -> std::result::Result<(), TxError> {
    if let Some(old) = atime.insert(key, &ms.to_be_bytes())? {
        lru.remove(lru_key(be_u64(&old), key))?;
    }
    lru.insert(lru_key(ms, key), &[])?;
    Ok(())
}

fn tx_clear_atime(
    atime: &TransactionalTree,
    lru: &TransactionalTree,
    key: &[u8],
) -> std::result::Result<(), TxError> {
    if let Some(old) = atime.remove(key)? {
        lru.remove(lru_key(be_u64(&old), key))?;
    }
    Ok(())
}

/// Adds `entries` and `bytes` (negative when removed) to the renders of `meta`'s
/// organization, or to its mezzanines when `meta` is one.
fn adjust_usage(
    usage: &TransactionalTree,
    meta: &RenderMeta,
    entries: i64,
    bytes: i64,
) -> std::result::Result<(), TxError> {
    let org = meta.organization.as_str();
    let mut u: OrgUsage = match usage.get(org.as_bytes())? {
        Some(v) => tx_decode("org_usage", &v)?,
        None => OrgUsage::default(),
    };
    let (count, total) = if meta.is_mezzanine() {
        (&mut u.mezzanines, &mut u.mezzanine_bytes)
    } else {
        (&mut u.renders, &mut u.render_bytes)
    };
    *count = count.saturating_add_signed(entries);
    *total = total.saturating_add_signed(bytes);
    super::store_usage(usage, org, &u)
}

impl RenderRecords for SledStore {
    /// Looks a render up by key; one whose file is gone is not found (it is made again).
    fn get_render(&self, key: &[u8]) -> Result<Option<StoredRender>> {
        let Some(raw) = self.renders.get(key)? else {
            return Ok(None);
        };
        let stored = StoredRender::parse(raw)?;
        if stored.external.is_none() {
            return Ok(Some(stored));
        }
        Ok(self
            .render_bodies
            .render_body(key)?
            .map(|body| StoredRender {
                meta: stored.meta,
                raw: bytes::Bytes::from(body),
                body_start: 0,
                external: None,
            }))
    }

    /// The value's bytes without its JSON header; a body in a file is read from it.
    fn get_render_body(&self, key: &[u8]) -> Result<Option<bytes::Bytes>> {
        let Some(raw) = self.renders.get(key)? else {
            return Ok(None);
        };
        if let Some(body) = StoredRender::inline_body(raw)? {
            return Ok(Some(body));
        }
        Ok(self.render_bodies.render_body(key)?.map(bytes::Bytes::from))
    }

    fn external_render(&self, key: &[u8]) -> Result<bool> {
        Ok(match self.renders.get(key)? {
            Some(v) => StoredRender::parse(v)?.external.is_some(),
            None => false,
        })
    }

    /// Stores a render with its indexes, its first served path and the usage counters, in one
    /// transaction — unless, by the time it is stored, its image was deleted or one of its
    /// stacks changed (a render that raced the change): an orphan is never stored, so a crash
    /// cannot leave one behind for `verify` to find. The render is returned either way, for
    /// the request that made it.
    fn put_render(
        &self,
        key: &[u8],
        meta: &RenderMeta,
        bytes: bytes::Bytes,
        served: &ServedPath,
    ) -> Result<StoredRender> {
        self.store_render(key, meta, bytes, served, true)
    }

    /// Remembers another URL path a render was served under (at most
    /// [`MAX_PATHS_PER_RENDER`]); a no-op for a path already known.
    fn note_served_path(&self, key: &[u8], served: &ServedPath) -> Result<()> {
        if served.path.is_empty() {
            return Ok(());
        }
        let known: Vec<ServedPath> = match self.render_paths.get(key)? {
            Some(v) => decode("render_paths", &v)?,
            None => return Ok(()),
        };
        if known.len() >= MAX_PATHS_PER_RENDER || known.contains(served) {
            return Ok(());
        }
        let mut next = known;
        next.push(served.clone());
        self.render_paths.insert(key, encode(&next))?;
        Ok(())
    }

    fn served_paths(&self, key: &[u8]) -> Result<Vec<ServedPath>> {
        match self.render_paths.get(key)? {
            Some(v) => decode("render_paths", &v),
            None => Ok(Vec::new()),
        }
    }

    fn restore_render(
        &self,
        key: &[u8],
        meta: &RenderMeta,
        bytes: &[u8],
        paths: &[ServedPath],
    ) -> Result<()> {
        let first = paths.first().cloned().unwrap_or(ServedPath {
            host: String::new(),
            path: String::new(),
        });
        self.put_render_unchecked(key, meta, bytes, &first)?;
        self.render_paths.insert(key, encode(&paths))?;
        Ok(())
    }

    /// Removes every render of an image.
    fn purge_image_renders(&self, org: &str, image: &str, dry_run: bool) -> Result<Purged> {
        let mut p = key2(org, image);
        p.push(0);
        self.purge_index(&self.render_by_image, p, dry_run)
    }

    /// Removes every render made through a stack (as the named stack or a basestack): all
    /// revisions, or only those below `below_revision`.
    fn purge_stack_renders(
        &self,
        org: &str,
        stack: &str,
        below_revision: Option<u64>,
        dry_run: bool,
    ) -> Result<Purged> {
        let mut p = key2(org, stack);
        p.push(0);
        match below_revision {
            None => self.purge_index(&self.render_by_stack, p, dry_run),
            Some(current) => {
                let mut total = Purged::default();
                for rev in self.stack_revisions(org, stack)? {
                    if rev < current {
                        let mut rp = key3(org, stack, &format!("{rev:016x}"));
                        rp.push(0);
                        total.add(self.purge_index(&self.render_by_stack, rp, dry_run)?);
                    }
                }
                Ok(total)
            }
        }
    }

    /// Removes every render of an organization.
    fn purge_org_renders(&self, org: &str, dry_run: bool) -> Result<Purged> {
        self.purge_index(&self.render_by_image, prefix(org), dry_run)
    }

    /// Records when renders were last served (ms since the epoch), batched by the caller: one
    /// call per interval, never one write per hit. Renders gone meanwhile are skipped.
    fn touch_renders(&self, accessed: &[([u8; 32], u64)]) -> Result<()> {
        for (key, ms) in accessed {
            tx_result(
                (&self.renders, &self.render_atime, &self.render_lru).transaction(
                    |(renders, atime, lru)| {
                        if renders.get(key)?.is_none() {
                            return Ok(());
                        }
                        let known = atime.get(key)?.map_or(0, |v| be_u64(&v));
                        if known < *ms {
                            tx_set_atime(atime, lru, key, *ms)?;
                        }
                        Ok(())
                    },
                ),
            )?;
        }
        Ok(())
    }

    /// Bytes of all stored renders and mezzanines (the sum of the organizations' counters):
    /// what the render-store budget bounds.
    fn render_bytes(&self) -> Result<u64> {
        Ok(self
            .usage_by_org()?
            .iter()
            .map(|(_, u)| u.render_bytes + u.mezzanine_bytes)
            .sum())
    }

    /// Evicts least recently used renders and mezzanines until they fit in `max_bytes`, at
    /// most `limit` of them. Evicted renders are not sent to the edge: they come back
    /// byte-identical when next requested.
    fn evict_renders(&self, max_bytes: u64, limit: usize) -> Result<Purged> {
        let mut total = self.render_bytes()?;
        let mut evicted = Purged::default();
        while total > max_bytes && (evicted.entries() as usize) < limit {
            let batch: Vec<sled::IVec> = self
                .render_lru
                .iter()
                .keys()
                .take(64)
                .collect::<std::result::Result<_, _>>()?;
            if batch.is_empty() {
                break;
            }
            for lru in batch {
                if total <= max_bytes || evicted.entries() as usize >= limit {
                    break;
                }
                let key = lru.get(8..).unwrap_or_default();
                let p = self.purge_render(key, false, false)?;
                if p.entries() == 0 {
                    // A recency entry without its render: drop it.
                    self.render_lru.remove(&lru)?;
                    self.render_atime.remove(key)?;
                }
                total = total.saturating_sub(p.store_bytes());
                evicted.add(p);
            }
        }
        Ok(evicted)
    }

    /// Number of stored renders.
    fn render_count(&self) -> usize {
        self.renders.len()
    }

    /// Every render key with its header, in key order, starting after `after` (at most
    /// `limit`), for passes that must be bounded and resumable.
    fn render_headers(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, RenderMeta)>> {
        let iter = match after {
            Some(a) => self
                .renders
                .range::<&[u8], _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.renders.iter(),
        };
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (k, v) = item?;
            let render = crate::storage::renders::parse_stored(v)?;
            out.push((k.to_vec(), render.meta));
        }
        Ok(out)
    }

    /// Whether a render is still reachable.
    fn render_status(&self, meta: &RenderMeta) -> Result<RenderStatus> {
        if self.get_org(&meta.organization)?.is_none() {
            return Ok(RenderStatus::Orphan);
        }
        match self.get_image(&meta.organization, &meta.image)? {
            Some(img) if !img.deleted => {}
            _ => return Ok(RenderStatus::Orphan),
        }
        for s in &meta.stacks {
            match self.get_stack(&meta.organization, &s.name)? {
                Some(stack) if stack.revision == s.revision => {}
                _ => return Ok(RenderStatus::Orphan),
            }
        }
        Ok(RenderStatus::Live)
    }

    /// Removes one render or mezzanine (GC of an orphan); returns the bytes freed.
    fn remove_render(&self, key: &[u8]) -> Result<u64> {
        Ok(self.purge_render_by_key(key)?.store_bytes())
    }
}

impl SledStore {
    /// [`SledStore::put_render`] without the reachability check (imports, tests of orphans).
    pub(crate) fn put_render_unchecked(
        &self,
        key: &[u8],
        meta: &RenderMeta,
        bytes: &[u8],
        served: &ServedPath,
    ) -> Result<StoredRender> {
        let bytes = bytes::Bytes::copy_from_slice(bytes);
        self.store_render(key, meta, bytes, served, false)
    }

    fn store_render(
        &self,
        key: &[u8],
        meta: &RenderMeta,
        bytes: bytes::Bytes,
        served: &ServedPath,
        only_if_live: bool,
    ) -> Result<StoredRender> {
        let external = bytes.len() > INLINE_MAX;
        // A large body announces its own bytes when it is written beside the records.
        self.space
            .reserve(if external { 0 } else { bytes.len() as u64 })?;
        let header = encode(meta);
        let value = if external {
            self.render_bodies.put_render_body(key, &bytes)?;
            let mut value = Vec::with_capacity(4 + header.len() + 8);
            value.extend_from_slice(&(header.len() as u32 | EXTERNAL).to_be_bytes());
            value.extend_from_slice(&header);
            value.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            value
        } else {
            inline_value(meta, &bytes)
        };
        // One buffer serves both the store and the response of the request that rendered it.
        let value = sled::IVec::from(value);
        let org = meta.organization.as_str();
        let paths = encode(&if served.path.is_empty() {
            Vec::new()
        } else {
            vec![served.clone()]
        });
        let now = crate::storage::edge::now_ms();
        let stored = tx_result(
            (
                &self.renders,
                &self.render_by_image,
                &self.render_by_stack,
                &self.render_paths,
                &self.org_usage,
                &self.render_atime,
                &self.render_lru,
                &self.orgs,
                &self.images,
                &self.stacks,
            )
                .transaction(
                    |(
                        renders,
                        by_image,
                        by_stack,
                        render_paths,
                        usage,
                        atime,
                        lru,
                        orgs,
                        images,
                        stacks,
                    )| {
                        if only_if_live && !tx_live(orgs, images, stacks, meta)? {
                            return Ok(false);
                        }
                        let replaced = renders.insert(key, value.clone())?;
                        tx_set_atime(atime, lru, key, now)?;
                        by_image.insert(image_key(org, &meta.image, key), &[])?;
                        for s in &meta.stacks {
                            by_stack.insert(revision_key(org, &s.name, s.revision, key), &[])?;
                        }
                        if replaced.is_none() {
                            render_paths.insert(key, paths.as_slice())?;
                            adjust_usage(usage, meta, 1, bytes.len() as i64)?;
                        }
                        Ok(true)
                    },
                ),
        );
        if !external {
            stored?;
            return StoredRender::parse(value);
        }
        match stored {
            Ok(true) => {}
            // Not stored (a render that raced a change) or failed: its file must not linger.
            Ok(false) | Err(_) => {
                let _ = self.render_bodies.remove_render_body(key);
                stored?;
            }
        }
        Ok(StoredRender {
            meta: meta.clone(),
            raw: bytes,
            body_start: 0,
            external: None,
        })
    }

    /// Removes one render with its indexes (an orphan found by GC); returns what it freed.
    /// Its served paths are sent to the edge.
    pub(crate) fn purge_render_by_key(&self, key: &[u8]) -> Result<Purged> {
        self.purge_render(key, false, true)
    }

    /// Removes one render with its indexes; returns what it freed. With `dry_run`, only
    /// reports it. With `edge`, its served paths are queued for the edge in the same
    /// transaction (an eviction does not: the render comes back byte-identical).
    fn purge_render(&self, key: &[u8], dry_run: bool, edge: bool) -> Result<Purged> {
        // The header is enough: a large render's file is not read to be removed.
        let Some(render) = self
            .renders
            .get(key)?
            .map(StoredRender::parse)
            .transpose()?
        else {
            return Ok(Purged::default());
        };
        let external = render.external.is_some();
        let paths: Vec<ServedPath> = match self.render_paths.get(key)? {
            Some(v) => decode("render_paths", &v)?,
            None => Vec::new(),
        };
        let size = render.size();
        let out = if render.meta.is_mezzanine() {
            Purged {
                mezzanines: 1,
                mezzanine_bytes: size,
                ..Purged::default()
            }
        } else {
            Purged {
                renders: 1,
                bytes: size,
                paths,
                ..Purged::default()
            }
        };
        if dry_run {
            return Ok(out);
        }
        let meta = render.meta;
        let org = meta.organization.as_str();
        let queue_paths = if edge && self.edge_enabled() {
            out.paths.as_slice()
        } else {
            &[]
        };
        let result = tx_result(
            (
                &self.renders,
                &self.render_by_image,
                &self.render_by_stack,
                &self.render_paths,
                &self.org_usage,
                &self.edge_queue,
                &self.render_atime,
                &self.render_lru,
            )
                .transaction(
                    |(renders, by_image, by_stack, render_paths, usage, queue, atime, lru)| {
                        if renders.remove(key)?.is_none() {
                            return Ok(());
                        }
                        tx_clear_atime(atime, lru, key)?;
                        by_image.remove(image_key(org, &meta.image, key))?;
                        for s in &meta.stacks {
                            by_stack.remove(revision_key(org, &s.name, s.revision, key))?;
                        }
                        render_paths.remove(key)?;
                        adjust_usage(usage, &meta, -1, -(size as i64))?;
                        super::edge::tx_enqueue(queue, queue_paths)?;
                        Ok(())
                    },
                ),
        );
        self.changed();
        result?;
        if external {
            // After the record: a file without one is never read, a record without its file
            // is a miss.
            let _ = self.render_bodies.remove_render_body(key);
        }
        if !queue_paths.is_empty() {
            self.edge_notify.notify_one();
        }
        Ok(out)
    }

    fn purge_index(
        &self,
        tree: &sled::Tree,
        index_prefix: Vec<u8>,
        dry_run: bool,
    ) -> Result<Purged> {
        let mut total = Purged::default();
        let keys: Vec<Vec<u8>> = tree
            .scan_prefix(index_prefix)
            .keys()
            .map(|k| k.map(|k| k.to_vec()))
            .collect::<std::result::Result<_, _>>()?;
        for index_key in keys {
            match trailing_key(&index_key) {
                Some(key) => {
                    let purged = self.purge_render(&key, dry_run, true)?;
                    if purged.entries() == 0 && !dry_run {
                        // An index entry without its render: drop it.
                        tree.remove(&index_key)?;
                    }
                    total.add(purged);
                }
                None => {
                    if !dry_run {
                        tree.remove(&index_key)?;
                    }
                }
            }
        }
        Ok(total)
    }

    /// Revisions of a stack that have renders.
    fn stack_revisions(&self, org: &str, stack: &str) -> Result<Vec<u64>> {
        let mut p = key2(org, stack);
        p.push(0);
        let mut revs = Vec::new();
        for k in self.render_by_stack.scan_prefix(&p).keys() {
            let k = k?;
            let rest = k.get(p.len()..).unwrap_or_default();
            let hex_rev = rest.split(|b| *b == 0).next().unwrap_or_default();
            if let Some(rev) = std::str::from_utf8(hex_rev)
                .ok()
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            {
                if revs.last() != Some(&rev) {
                    revs.push(rev);
                }
            }
        }
        Ok(revs)
    }

    /// Gives renders stored before the recency index existed an access time of now.
    pub(crate) fn backfill_render_atime(&self) -> Result<()> {
        if self.meta.get("render_atime_v1")?.is_some() {
            return Ok(());
        }
        let now = crate::storage::edge::now_ms();
        for key in self.renders.iter().keys() {
            let key = key?;
            if self.render_atime.get(&key)?.is_none() {
                self.render_atime.insert(&key, &now.to_be_bytes())?;
                self.render_lru.insert(lru_key(now, &key), &[])?;
            }
        }
        self.meta.insert("render_atime_v1", &[1])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fixtures::{meta, path};
    use crate::storage::renders::parse_stored;

    #[test]
    fn the_sweep_removes_render_files_nothing_refers_to_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        let key = [0xab; 32];
        let big = vec![7u8; INLINE_MAX + 1];
        store
            .put_render_unchecked(&key, &meta("img1", &[("thumb", 1)]), &big, &path("/big"))
            .unwrap();
        let kept = store.blobs.render_path(&key);
        assert!(kept.exists());
        let stray = store.blobs.render_path(&[0xab, 0xcd, 1]);
        std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
        std::fs::write(&stray, b"left by a crash").unwrap();
        let temp = stray.parent().unwrap().join(".tmp-0011223344556677");
        std::fs::write(&temp, b"half a write").unwrap();
        let sweep =
            |grace| crate::storage::check::sweep_render_bodies(&store, &store.blobs, 0xab, grace);
        let young = sweep(std::time::Duration::from_secs(3600));
        assert_eq!(
            young.unwrap(),
            (0, 0),
            "young files may be in the middle of a write"
        );
        let (files, bytes) = sweep(std::time::Duration::ZERO).unwrap();
        assert_eq!((files, bytes), (2, 15 + 12));
        assert!(kept.exists() && !stray.exists() && !temp.exists());
        assert_eq!(
            store.get_render(&key).unwrap().unwrap().bytes().len(),
            big.len()
        );
    }

    #[test]
    fn renders_are_found_and_purged_by_image_stack_and_organization() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        store
            .put_render_unchecked(
                &[1; 32],
                &meta("img1", &[("thumb", 1)]),
                b"aaaa",
                &path("/acme/thumb/img1.jpg"),
            )
            .unwrap();
        store
            .put_render_unchecked(
                &[2; 32],
                &meta("img1", &[("big", 3), ("base", 2)]),
                b"bb",
                &path("/acme/big/img1.jpg"),
            )
            .unwrap();
        store
            .put_render_unchecked(
                &[3; 32],
                &meta("img2", &[("thumb", 2)]),
                b"c",
                &path("/acme/thumb/img2.jpg"),
            )
            .unwrap();
        assert_eq!(store.org_usage("acme").unwrap().renders, 3);
        assert_eq!(store.org_usage("acme").unwrap().render_bytes, 7);

        let dry = store.purge_image_renders("acme", "img1", true).unwrap();
        assert_eq!((dry.renders, dry.bytes), (2, 6));
        assert_eq!(store.render_count(), 3, "a dry run changes nothing");

        let old = store
            .purge_stack_renders("acme", "thumb", Some(2), false)
            .unwrap();
        assert_eq!(old.renders, 1);
        assert_eq!(old.paths, vec![path("/acme/thumb/img1.jpg")]);
        assert!(store.get_render(&[1; 32]).unwrap().is_none());
        assert!(
            store.get_render(&[3; 32]).unwrap().is_some(),
            "the current revision stays"
        );

        let base = store
            .purge_stack_renders("acme", "base", None, false)
            .unwrap();
        assert_eq!(
            base.renders, 1,
            "basestack renders are found through the basestack"
        );

        let all = store.purge_org_renders("acme", false).unwrap();
        assert_eq!(all.renders, 1);
        assert_eq!(store.render_count(), 0);
        assert_eq!(store.org_usage("acme").unwrap().renders, 0);
        assert_eq!(store.org_usage("acme").unwrap().render_bytes, 0);
    }

    #[test]
    fn a_large_render_lives_in_a_file_and_goes_with_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        let big: Vec<u8> = (0..INLINE_MAX + 10).map(|i| (i % 251) as u8).collect();
        let key = [7u8; 32];
        let answered = store
            .put_render_unchecked(&key, &meta("img1", &[("thumb", 1)]), &big, &path("/big"))
            .unwrap();
        assert_eq!(answered.bytes(), big.as_slice());
        // sled keeps the header only; the bytes are in the file.
        let raw = store.renders.get(key).unwrap().unwrap();
        assert!(raw.len() < 1024, "{} bytes in sled", raw.len());
        let file = store.blobs.render_path(&key);
        assert_eq!(std::fs::read(&file).unwrap(), big);
        let hit = store.get_render(&key).unwrap().unwrap();
        assert_eq!(hit.bytes(), big.as_slice());
        assert_eq!(hit.meta.image, "img1");
        assert_eq!(
            store.org_usage("acme").unwrap().render_bytes,
            big.len() as u64
        );
        // A backup carries the bytes inline.
        let inline = inline_value(&hit.meta, hit.bytes());
        assert_eq!(parse_stored(inline).unwrap().bytes(), big.as_slice());
        // A lost file is a miss, not an error.
        std::fs::rename(&file, dir.path().join("aside")).unwrap();
        assert!(store.get_render(&key).unwrap().is_none());
        std::fs::rename(dir.path().join("aside"), &file).unwrap();
        // Removing the render removes its file.
        let purged = store.purge_org_renders("acme", false).unwrap();
        assert_eq!((purged.renders, purged.bytes), (1, big.len() as u64));
        assert!(!file.exists());
        assert_eq!(store.org_usage("acme").unwrap().render_bytes, 0);
    }

    #[test]
    fn the_bytes_of_a_render_read_without_its_header_are_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        let small = b"a small render".to_vec();
        let big: Vec<u8> = (0..INLINE_MAX + 10).map(|i| (i % 251) as u8).collect();
        for (key, bytes) in [([1u8; 32], &small), ([2u8; 32], &big)] {
            store
                .put_render_unchecked(&key, &meta("img1", &[("thumb", 1)]), bytes, &path("/p"))
                .unwrap();
            let body = store.get_render_body(&key).unwrap().unwrap();
            assert_eq!(body.as_ref(), bytes.as_slice());
            assert_eq!(
                body.as_ref(),
                store.get_render(&key).unwrap().unwrap().bytes()
            );
        }
        assert!(store.get_render_body(&[3u8; 32]).unwrap().is_none());
        // A lost file is a miss here too.
        std::fs::remove_file(store.blobs.render_path(&[2u8; 32])).unwrap();
        assert!(store.get_render_body(&[2u8; 32]).unwrap().is_none());
    }

    #[test]
    fn a_render_that_raced_a_stack_change_or_an_image_delete_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        store
            .put_org(
                &serde_json::from_value(serde_json::json!({
                    "id": "id-acme", "name": "acme", "display_name": "", "billing_email": "",
                    "created": "2024-01-01", "master_organization": "", "signing_keys": []
                }))
                .unwrap(),
            )
            .unwrap();
        let mut rec: crate::model::image::ImageRecord = serde_json::from_value(serde_json::json!({
            "organization": "acme", "hash": "img", "binary_hash": "b".repeat(40),
            "blob": "c".repeat(64), "name": "a.jpg", "format": "jpg", "mimetype": "image/jpeg",
            "size": 1, "width": 1, "height": 1, "created": "2024-01-01T00:00:00+00:00",
            "created_ns": 1_700_000_000_000_000_000_i128, "deleted": false,
            "user_metadata": {}, "opaque": true, "animated": false
        }))
        .unwrap();
        store.insert_image(&rec).unwrap();
        let mut stack = crate::storage::StoredStack {
            organization: "acme".into(),
            name: "thumb".into(),
            created: "2024-01-01".into(),
            revision: 1,
            definition: Default::default(),
        };
        store.create_stack(&stack).unwrap();
        let live = store
            .put_render(
                &[1; 32],
                &meta("img", &[("thumb", 1)]),
                bytes::Bytes::from_static(b"a"),
                &path("/a"),
            )
            .unwrap();
        assert_eq!(live.bytes(), b"a");
        assert!(store.get_render(&[1; 32]).unwrap().is_some());

        stack.revision = 2;
        store.put_stack(&stack).unwrap();
        let raced = store
            .put_render(
                &[2; 32],
                &meta("img", &[("thumb", 1)]),
                bytes::Bytes::from_static(b"b"),
                &path("/b"),
            )
            .unwrap();
        assert_eq!(
            raced.bytes(),
            b"b",
            "the request that made it still gets it"
        );
        assert!(store.get_render(&[2; 32]).unwrap().is_none());

        rec.deleted = true;
        store.update_image(&rec).unwrap();
        store
            .put_render(
                &[3; 32],
                &meta("img", &[("thumb", 2)]),
                bytes::Bytes::from_static(b"c"),
                &path("/c"),
            )
            .unwrap();
        assert!(store.get_render(&[3; 32]).unwrap().is_none());
        assert_eq!(store.org_usage("acme").unwrap().renders, 1);
    }

    #[test]
    fn served_paths_are_recorded_once_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        store
            .put_render_unchecked(&[9; 32], &meta("img", &[]), b"x", &path("/a"))
            .unwrap();
        store.note_served_path(&[9; 32], &path("/a")).unwrap();
        store.note_served_path(&[9; 32], &path("/b")).unwrap();
        for i in 0..40 {
            store
                .note_served_path(&[9; 32], &path(&format!("/p{i}")))
                .unwrap();
        }
        let purged = store.purge_image_renders("acme", "img", false).unwrap();
        assert_eq!(purged.paths.len(), MAX_PATHS_PER_RENDER);
        assert_eq!(purged.paths[..2], [path("/a"), path("/b")]);
    }
}
