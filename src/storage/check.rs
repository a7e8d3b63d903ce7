//! Consistency checks and garbage candidates: recomputes every counter and reference from the
//! records themselves and compares them with what is stored (design §7). Used by
//! `darkroom admin verify`, by the tests after every data change, and by the garbage collector
//! to find orphans.
//!
//! [`verify`] and [`orphan_blobs`] work over the interfaces, so they hold on every backend;
//! each backend adds the checks of its own indexes and counters ([`Records::verify_records`],
//! here for sled).

use super::records::*;
use super::Progress;
use super::{decode, key2, BlobRef, Bytes, OrgUsage, Records, Result, SledStore};
use crate::model::image::ImageRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Whether a render's image, organization and stack revisions still exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderStatus {
    Live,
    /// Its image is gone or deleted, its organization is gone, or one of its stacks was
    /// deleted or overwritten since.
    Orphan,
}

/// Blob files of one shard (`00`..`ff`, the first two hex digits of their id) that no image
/// refers to and that are older than `grace` (younger ones may belong to an upload whose record
/// is being committed). The collector visits one shard per pass.
pub fn orphan_blobs(
    records: &dyn Records,
    bytes: &dyn Bytes,
    shard: u8,
    grace: Duration,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for id in bytes.list_shard(shard)? {
        if records.blob_refs(&id)? == 0 && bytes.older_than(&id, grace) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Removes the render bodies of one shard that no stored render refers to and that were
/// written at least `grace` ago (a crash between a body's write and its record's commit, or
/// between a removal's commit and the body's removal); returns the bodies and bytes removed.
pub fn sweep_render_bodies(
    records: &dyn Records,
    bytes: &dyn Bytes,
    shard: u8,
    grace: Duration,
) -> Result<(u64, u64)> {
    let referenced = |key: &[u8]| {
        records
            .external_render(key)
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    Ok(bytes.sweep_render_bodies(shard, grace, &referenced)?)
}

/// Checks every invariant (design §7) and lists what breaks: the backend's own indexes and
/// counters, every image's bytes present, and no blob older than `grace` left unreferenced.
pub fn verify(
    records: &dyn Records,
    bytes: &dyn Bytes,
    grace: Duration,
    progress: Progress<'_>,
) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    let mut seen = 0u64;
    let mut problems = records.verify_records(&mut |rec| {
        if !bytes.exists(&rec.blob) {
            missing.push(format!(
                "image {}/{} refers to a missing blob file {}",
                rec.organization, rec.hash, rec.blob
            ));
        }
        seen += 1;
        if seen % 1024 == 0 {
            progress("images checked", seen, None);
        }
    })?;
    progress("images checked", seen, Some(seen));
    problems.append(&mut missing);
    // Removing an image for good removes its aliases; a soft-deleted image keeps them.
    for org in records.list_orgs()? {
        for alias in records.list_aliases(&org.name)? {
            if records.get_image(&org.name, &alias.hash)?.is_none() {
                problems.push(format!(
                    "alias {}/{} points to a missing image {}",
                    org.name, alias.alias, alias.hash
                ));
            }
        }
    }
    for shard in 0..=255u8 {
        for id in orphan_blobs(records, bytes, shard, grace)? {
            problems.push(format!("blob file {id} is not referenced by any image"));
        }
        progress("blob shards checked", u64::from(shard) + 1, Some(256));
    }
    Ok(problems)
}

impl SledStore {
    /// Recomputes every counter, index entry and reference of the sled trees and lists what
    /// disagrees ([`Records::verify_records`]).
    pub(crate) fn check_records(
        &self,
        each_image: &mut dyn FnMut(&ImageRecord),
    ) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let mut refs: HashMap<String, (u64, u64)> = HashMap::new();
        let mut live_blobs: BTreeMap<String, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
        let mut files: BTreeMap<String, u64> = BTreeMap::new();
        let mut index_entries = 0usize;
        let mut index_counts: HashMap<Vec<u8>, u64> = HashMap::new();
        let orgs: BTreeSet<String> = self.list_orgs()?.into_iter().map(|o| o.name).collect();
        for v in self.images.iter().values() {
            let rec: ImageRecord = decode("images", &v?)?;
            each_image(&rec);
            let entry = refs.entry(rec.blob.clone()).or_insert((rec.size, 0));
            entry.1 += 1;
            if !orgs.contains(&rec.organization) {
                problems.push(format!(
                    "image {}/{} belongs to no organization",
                    rec.organization, rec.hash
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
        // Renders and their indexes.
        // Per organization: renders, their bytes, mezzanines, their bytes.
        let mut render_usage: BTreeMap<String, [u64; 4]> = BTreeMap::new();
        for item in self.renders.iter() {
            let (k, v) = item?;
            let render = super::renders::parse_stored(v)?;
            let meta = &render.meta;
            let u = render_usage.entry(meta.organization.clone()).or_default();
            let at = if meta.is_mezzanine() { 2 } else { 0 };
            u[at] += 1;
            u[at + 1] += render.size();
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
        // Aliases: each of an organization, served paths only of aliases that exist.
        for item in self.aliases.iter() {
            let (k, v) = item?;
            let alias: super::StoredAlias = decode("aliases", &v)?;
            if key2(&alias.organization, &alias.alias) != k.as_ref() {
                problems.push(format!(
                    "alias {}/{} is stored under another key",
                    alias.organization, alias.alias
                ));
            }
            if !orgs.contains(&alias.organization) {
                problems.push(format!(
                    "alias {}/{} belongs to no organization",
                    alias.organization, alias.alias
                ));
            }
        }
        for k in self.alias_paths.iter().keys() {
            let k = k?;
            if !self.aliases.contains_key(&k)? {
                problems.push(format!(
                    "served paths kept for a missing alias {}",
                    String::from_utf8_lossy(&k).replace('\0', "/")
                ));
            }
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
                renders: render_usage.get(&org).map_or(0, |r| r[0]),
                render_bytes: render_usage.get(&org).map_or(0, |r| r[1]),
                mezzanines: render_usage.get(&org).map_or(0, |r| r[2]),
                mezzanine_bytes: render_usage.get(&org).map_or(0, |r| r[3]),
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
