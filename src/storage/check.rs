//! Consistency checks and garbage candidates: recomputes every counter and reference from the
//! records themselves and compares them with what is stored (design §7). Used by
//! `darkroom admin verify`, by the tests after every data change, and by the garbage collector
//! to find orphans.

use super::renders::RenderMeta;
use super::{decode, key2, BlobRef, OrgUsage, Result, Store};
use crate::model::image::ImageRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

/// Whether a render's image, organization and stack revisions still exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderStatus {
    Live,
    /// Its image is gone or deleted, its organization is gone, or one of its stacks was
    /// deleted or overwritten since.
    Orphan,
}

impl Store {
    /// Every render key with its header, in key order, starting after `after` (at most
    /// `limit`), for passes that must be bounded and resumable.
    pub fn render_headers(
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
            let render = super::renders::parse_stored(v)?;
            out.push((k.to_vec(), render.meta));
        }
        Ok(out)
    }

    /// Whether a render is still reachable.
    pub fn render_status(&self, meta: &RenderMeta) -> Result<RenderStatus> {
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

    /// Removes one render (GC of an orphan); returns the bytes freed.
    pub fn remove_render(&self, key: &[u8]) -> Result<u64> {
        Ok(self.purge_render_by_key(key)?.bytes)
    }

    /// Soft-deleted images whose retention ended before `cutoff` (Unix seconds).
    pub fn expired_images(&self, cutoff: i64, limit: usize) -> Result<Vec<(String, String)>> {
        // The deletion-time index of every organization, up to the cutoff: work in proportion
        // to what has expired.
        let field = super::index::IndexField::DeletedAt;
        let mut upto = vec![0x01];
        upto.extend_from_slice(&super::index::ordered_f64(cutoff as f64));
        let span = super::query::Span {
            from: vec![0x01],
            to: Some(upto),
        };
        let mut out = Vec::new();
        for org in self.list_orgs()? {
            for p in self.index_walk(&org.name, true, &field, &span, false) {
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push((org.name.clone(), p?.hash));
            }
        }
        Ok(out)
    }

    /// Blob files of one shard (`00`..`ff`, the first two hex digits of their name) that no
    /// image refers to and that are older than `grace` (younger ones may belong to an upload
    /// whose metadata is being committed). The collector visits one shard per pass.
    pub fn orphan_blobs(&self, shard: u8, grace: Duration) -> Result<Vec<String>> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for id in self.blobs.list_shard(shard)? {
            if self.blob_refs.get(id.as_bytes())?.is_some() {
                continue;
            }
            let old_enough = std::fs::metadata(self.blobs.path(&id))
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() >= grace)
                .unwrap_or(false);
            if old_enough {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Where the collector's rolling sweeps stand (renders after this key; the next blob
    /// shard), kept in the store so that they survive restarts.
    pub fn sweep_position(&self) -> Result<(Option<Vec<u8>>, u8)> {
        let renders = self.meta.get("gc_render_sweep")?.map(|v| v.to_vec());
        let shard = self
            .meta
            .get("gc_blob_sweep")?
            .and_then(|v| v.first().copied())
            .unwrap_or(0);
        Ok((renders, shard))
    }

    pub fn set_sweep_position(&self, renders: Option<&[u8]>, shard: u8) -> Result<()> {
        match renders {
            Some(k) => self.meta.insert("gc_render_sweep", k)?,
            None => self.meta.remove("gc_render_sweep")?,
        };
        self.meta.insert("gc_blob_sweep", &[shard])?;
        Ok(())
    }

    /// Recomputes every counter and reference and lists what disagrees. `grace` is how old an
    /// unreferenced blob file may be before it counts as a leak.
    pub fn verify(&self, grace: Duration) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let mut refs: HashMap<String, (u64, u64)> = HashMap::new();
        let mut live_blobs: BTreeMap<String, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
        let mut files: BTreeMap<String, u64> = BTreeMap::new();
        let mut index_entries = 0usize;
        let mut index_counts: HashMap<Vec<u8>, u64> = HashMap::new();
        let orgs: BTreeSet<String> = self.list_orgs()?.into_iter().map(|o| o.name).collect();
        for v in self.images.iter().values() {
            let rec: ImageRecord = decode("images", &v?)?;
            let entry = refs.entry(rec.blob.clone()).or_insert((rec.size, 0));
            entry.1 += 1;
            if !orgs.contains(&rec.organization) {
                problems.push(format!(
                    "image {}/{} belongs to no organization",
                    rec.organization, rec.hash
                ));
            }
            if !self.blobs.exists(&rec.blob) {
                problems.push(format!(
                    "image {}/{} refers to a missing blob file {}",
                    rec.organization, rec.hash, rec.blob
                ));
            }
            let idx = super::key3(&rec.organization, &rec.binary_hash, &rec.hash);
            if self.img_binary.get(idx)?.is_none() {
                problems.push(format!(
                    "image {}/{} is missing from the binary-hash index",
                    rec.organization, rec.hash
                ));
            }
            let (entries, counters) = super::index::record_keys(&rec);
            index_entries += entries.len();
            if let Some(missing) = entries
                .iter()
                .map(|k| self.img_index.contains_key(k))
                .collect::<std::result::Result<Vec<bool>, _>>()?
                .iter()
                .position(|found| !found)
            {
                problems.push(format!(
                    "image {}/{} is missing from the listing index ({} of {} entries)",
                    rec.organization,
                    rec.hash,
                    missing + 1,
                    entries.len()
                ));
            }
            for k in counters {
                *index_counts.entry(k).or_insert(0u64) += 1;
            }
            if !rec.deleted {
                *files.entry(rec.organization.clone()).or_default() += 1;
                let per_org = live_blobs.entry(rec.organization.clone()).or_default();
                per_org.entry(rec.blob.clone()).or_insert((rec.size, 0)).1 += 1;
            }
        }
        for item in self.img_binary.iter().keys() {
            let k = item?;
            let parts: Vec<&[u8]> = k.split(|b| *b == 0).collect();
            if let [org, _, hash] = parts.as_slice() {
                let (org, hash) = (String::from_utf8_lossy(org), String::from_utf8_lossy(hash));
                if self.get_image(&org, &hash)?.is_none() {
                    problems.push(format!(
                        "binary-hash index entry for {org}/{hash} has no image"
                    ));
                }
            }
        }
        let stored_entries = self.img_index.iter().keys().count();
        if stored_entries != index_entries {
            problems.push(format!(
                "the listing index has {stored_entries} entries for {index_entries} expected"
            ));
        }
        for item in self.img_counts.iter() {
            let (k, v) = item?;
            let stored = u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
            let counted = index_counts.remove(k.as_ref()).unwrap_or(0);
            if stored != counted {
                problems.push(format!(
                    "listing counter {}: {stored} stored, {counted} counted",
                    String::from_utf8_lossy(&k).replace('\0', "/")
                ));
            }
        }
        for k in index_counts.keys() {
            problems.push(format!(
                "listing counter {} is missing",
                String::from_utf8_lossy(k).replace('\0', "/")
            ));
        }
        // Blob reference counts.
        for item in self.blob_refs.iter() {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(&k).to_string();
            let stored: BlobRef = decode("blob_refs", &v)?;
            match refs.remove(&id) {
                Some((_, n)) if n == stored.refs => {}
                Some((_, n)) => problems.push(format!(
                    "blob {id}: {} references stored, {n} counted",
                    stored.refs
                )),
                None => problems.push(format!(
                    "blob {id}: {} references stored, none counted",
                    stored.refs
                )),
            }
        }
        for (id, (_, n)) in refs {
            problems.push(format!("blob {id}: {n} references counted, none stored"));
        }
        for id in (0..=255u8)
            .map(|s| self.orphan_blobs(s, grace))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
        {
            problems.push(format!("blob file {id} is not referenced by any image"));
        }
        // Renders and their indexes.
        let mut render_usage: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for item in self.renders.iter() {
            let (k, v) = item?;
            let render = super::renders::parse_stored(v)?;
            let meta = &render.meta;
            let u = render_usage.entry(meta.organization.clone()).or_default();
            u.0 += 1;
            u.1 += render.size();
            if self.render_status(meta)? == RenderStatus::Orphan {
                problems.push(format!(
                    "render {} of {}/{} is an orphan",
                    hex::encode(&k),
                    meta.organization,
                    meta.image
                ));
            }
            let mut idx = key2(&meta.organization, &meta.image);
            idx.push(0);
            idx.extend_from_slice(hex::encode(&k).as_bytes());
            if self.render_by_image.get(&idx)?.is_none() {
                problems.push(format!(
                    "render {} is missing from the image index",
                    hex::encode(&k)
                ));
            }
        }
        for item in self.render_by_image.iter().keys() {
            let k = item?;
            let start = k.iter().rposition(|b| *b == 0).map_or(0, |p| p + 1);
            let key = hex::decode(k.get(start..).unwrap_or_default()).unwrap_or_default();
            if self.renders.get(&key)?.is_none() {
                problems.push(format!(
                    "image index entry {} has no render",
                    String::from_utf8_lossy(&k)
                ));
            }
        }
        // Recency: one access time and one index entry per render, and nothing else.
        for item in self.render_atime.iter() {
            let (k, v) = item?;
            if self.renders.get(&k)?.is_none() {
                problems.push(format!(
                    "access time of a missing render {}",
                    hex::encode(&k)
                ));
            }
            let mut lru = v.to_vec();
            lru.extend_from_slice(&k);
            if self.render_lru.get(&lru)?.is_none() {
                problems.push(format!(
                    "render {} is missing from the recency index",
                    hex::encode(&k)
                ));
            }
        }
        let (renders, atimes, lrus) = (
            self.renders.len(),
            self.render_atime.len(),
            self.render_lru.len(),
        );
        if renders != atimes || atimes != lrus {
            problems.push(format!(
                "{renders} renders, {atimes} access times, {lrus} recency entries"
            ));
        }
        // Edge: queued jobs readable, restore paths only for deleted images.
        for item in self.edge_queue.iter() {
            let (k, v) = item?;
            if k.len() != 16 || decode::<super::EdgeJob>("edge_queue", &v).is_err() {
                problems.push(format!("edge queue entry {} is malformed", hex::encode(&k)));
            }
        }
        for (org, hash) in self.stale_restore_paths()? {
            problems.push(format!(
                "restore paths kept for {org}/{hash}, which is not a deleted image"
            ));
        }
        // Usage counters against the recomputed values.
        let mut all_orgs: BTreeSet<String> = orgs.clone();
        all_orgs.extend(live_blobs.keys().cloned());
        all_orgs.extend(render_usage.keys().cloned());
        for org in all_orgs {
            let stored = self.org_usage(&org)?;
            let blobs = live_blobs.get(&org);
            let expected = OrgUsage {
                space_in_bytes: blobs.map_or(0, |b| b.values().map(|(size, _)| size).sum()),
                number_of_files: files.get(&org).copied().unwrap_or(0),
                renders: render_usage.get(&org).map_or(0, |r| r.0),
                render_bytes: render_usage.get(&org).map_or(0, |r| r.1),
            };
            if stored != expected {
                problems.push(format!(
                    "usage of {org}: stored {stored:?}, recomputed {expected:?}"
                ));
            }
            for (blob, (_, n)) in blobs.into_iter().flatten() {
                let stored_n = self
                    .org_blobs
                    .get(key2(&org, blob))?
                    .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
                    .unwrap_or(0);
                if stored_n != *n {
                    problems.push(format!("organization {org}, blob {blob}: {stored_n} live references stored, {n} counted"));
                }
            }
        }
        Ok(problems)
    }
}
