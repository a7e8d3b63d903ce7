//! The checks of the embedded records' own indexes and counters ([`Records::verify_records`]
//! of [`SledStore`]): every counter, index entry and reference of the sled trees recomputed
//! from the records and compared with what is stored. The checks over the interfaces are in
//! [`crate::storage::check`].

use super::{decode, BlobRef, SledStore};
use crate::model::image::ImageRecord;
use crate::storage::check::RenderStatus;
use crate::storage::records::*;
use crate::storage::{key2, OrgUsage, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};

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
        let mut index_counts: HashMap<Vec<u8>, u64> = HashMap::new();
        // What the records call for, as multiset digests: comparing them with digests of
        // sequential scans costs no lookup per entry; only a mismatch pays for the lookups
        // that say which entries are wrong.
        let mut expected_index = Digest::default();
        let orgs: BTreeSet<String> = self.list_orgs()?.into_iter().map(|o| o.name).collect();
        // The listing index is digested on a thread of its own while the records are read.
        let joined = |tree: &'static str, h: std::thread::ScopedJoinHandle<'_, Result<Digest>>| {
            h.join().unwrap_or_else(|_| {
                Err(crate::storage::StorageError::Corrupt {
                    tree,
                    message: "the scan of the index stopped".into(),
                })
            })
        };
        let index_digest = || -> Result<Digest> {
            let mut d = Digest::default();
            for k in self.index_entries(Vec::new(), None, false) {
                d.add(&k?);
            }
            Ok(d)
        };
        let stored_index = std::thread::scope(|scope| -> Result<_> {
            let index_scan = scope.spawn(index_digest);
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
                let (entries, counters) = crate::storage::index::embedded_keys(&rec);
                for k in &entries {
                    expected_index.add(k);
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
            joined("img_index", index_scan)
        })?;
        if stored_index != expected_index {
            self.explain_listing_index(&mut problems, stored_index.count, expected_index.count)?;
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
        // What the live references come to per organization, for the usage below.
        let live_space: BTreeMap<String, u64> = live_blobs
            .iter()
            .map(|(org, blobs)| (org.clone(), blobs.values().map(|(size, _)| size).sum()))
            .collect();
        // Blob references: of every record, and of the live ones per organization.
        for item in self.blob_refs.iter() {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(&k).to_string();
            let stored: BlobRef = decode("blob_refs", &v)?;
            for (org, n) in &stored.live {
                let counted = live_blobs
                    .get_mut(org)
                    .and_then(|blobs| blobs.remove(&id))
                    .map_or(0, |(_, n)| n);
                if *n != counted {
                    problems.push(format!(
                        "organization {org}, blob {id}: {n} live references stored, {counted} counted"
                    ));
                }
            }
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
            let render = crate::storage::renders::parse_stored(v)?;
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
            let alias: crate::storage::StoredAlias = decode("aliases", &v)?;
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
            if k.len() != 16 || decode::<crate::storage::EdgeJob>("edge_queue", &v).is_err() {
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
        all_orgs.extend(live_space.keys().cloned());
        all_orgs.extend(render_usage.keys().cloned());
        for org in all_orgs {
            let stored = self.org_usage(&org)?;
            let expected = OrgUsage {
                space_in_bytes: live_space.get(&org).copied().unwrap_or(0),
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
        }
        // Live references counted but not stored.
        for (org, blobs) in live_blobs {
            for (blob, (_, n)) in blobs {
                problems.push(format!(
                    "organization {org}, blob {blob}: 0 live references stored, {n} counted"
                ));
            }
        }
        Ok(problems)
    }

    /// Names the images whose listing-index entries are missing, and says how many entries
    /// the index holds against how many the records call for (called when the digests
    /// disagree).
    fn explain_listing_index(
        &self,
        problems: &mut Vec<String>,
        stored: u64,
        expected: u64,
    ) -> Result<()> {
        for v in self.images.iter().values() {
            let rec: ImageRecord = decode("images", &v?)?;
            let (entries, _) = crate::storage::index::embedded_keys(&rec);
            let mut missing = 0;
            for k in &entries {
                if !self.index_contains(k)? {
                    missing += 1;
                }
            }
            if missing > 0 {
                problems.push(format!(
                    "image {}/{} is missing from the listing index ({missing} of {} entries)",
                    rec.organization,
                    rec.hash,
                    entries.len()
                ));
            }
        }
        problems.push(if stored == expected {
            format!("the listing index has {stored} entries as expected, but not the expected ones")
        } else {
            format!("the listing index has {stored} entries for {expected} expected")
        });
        Ok(())
    }
}

/// An order-independent digest of a multiset of keys: equal digests mean equal multisets
/// (up to a 2^-128 chance), so a stored index can be checked against the records with one
/// sequential scan of each.
#[derive(Default, PartialEq, Eq)]
struct Digest {
    sum: u128,
    count: u64,
}

impl Digest {
    fn add(&mut self, key: &[u8]) {
        let hash = blake3::hash(key);
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash.as_bytes()[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{encode, fixtures};

    fn image(i: usize) -> ImageRecord {
        serde_json::from_value(serde_json::json!({
            "organization": "acme", "hash": format!("{i:040x}"), "binary_hash": format!("{i:040}"),
            "blob": format!("{i:064x}"), "name": format!("photo-{i}.jpg"), "format": "jpg",
            "mimetype": "image/jpeg", "size": 1000 + i, "width": 640, "height": 480,
            "created": "2024-01-01T00:00:00+00:00", "created_ns": 1_700_000_000_000_000_000_i128 + i as i128,
            "user_metadata": {"tag": format!("t{}", i % 3), "array:labels": ["a", "b"]},
            "opaque": true, "animated": false
        }))
        .unwrap()
    }

    /// A store of three images with nothing wrong in its records.
    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        store.create_org(&fixtures::org("acme")).unwrap();
        for i in 1..=3 {
            store.insert_image(&image(i)).unwrap();
        }
        assert!(store.check_records(&mut |_| {}).unwrap().is_empty());
        (dir, store)
    }

    fn problems(store: &SledStore) -> String {
        store.check_records(&mut |_| {}).unwrap().join("\n")
    }

    #[test]
    fn a_missing_or_stray_listing_entry_is_named() {
        let (_dir, store) = store();
        let (entries, _) = crate::storage::index::record_keys(&image(2));
        store.img_index.remove(&entries[0]).unwrap();
        let found = problems(&store);
        assert!(
            found.contains(&format!(
                "image acme/{} is missing from the listing index (1 of",
                image(2).hash
            )),
            "{found}"
        );

        // Same count, wrong entry: the digest still tells.
        let mut stray = entries[0].clone();
        stray.push(b'x');
        store.img_index.insert(stray, &[]).unwrap();
        let found = problems(&store);
        assert!(found.contains("not the expected ones"), "{found}");
    }

    #[test]
    fn an_entry_missing_from_a_run_is_named() {
        let (_dir, store) = store();
        store.pack_index(true).unwrap();
        assert!(problems(&store).is_empty());
        let (entries, _) = crate::storage::index::record_keys(&image(3));
        store.img_gone.insert(&entries[1], &[]).unwrap();
        let found = problems(&store);
        assert!(
            found.contains(&format!(
                "image acme/{} is missing from the listing index (1 of",
                image(3).hash
            )),
            "{found}"
        );
    }

    #[test]
    fn binary_hash_entries_are_checked_with_the_listing_index() {
        let (_dir, store) = store();
        let rec = image(1);
        store
            .img_index
            .remove(crate::storage::index::binary_entry(&rec))
            .unwrap();
        let found = problems(&store);
        assert!(
            found.contains(&format!(
                "image acme/{} is missing from the listing index (1 of",
                rec.hash
            )),
            "{found}"
        );
        assert!(store
            .images_by_binary("acme", &rec.binary_hash)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn live_references_per_organization_are_checked_both_ways() {
        let (_dir, store) = store();
        let blob = image(1).blob;
        let mut r: BlobRef =
            decode("blob_refs", &store.blob_refs.get(&blob).unwrap().unwrap()).unwrap();
        r.live.clear();
        store.blob_refs.insert(blob.as_bytes(), encode(&r)).unwrap();
        let mut stray = BlobRef {
            size: 5,
            refs: 0,
            ..BlobRef::default()
        };
        stray.live.insert("acme".into(), 1);
        store.blob_refs.insert("beef", encode(&stray)).unwrap();
        let found = problems(&store);
        assert!(
            found.contains(&format!(
                "organization acme, blob {blob}: 0 live references stored, 1 counted"
            )),
            "{found}"
        );
        assert!(
            found.contains("organization acme, blob beef: 1 live references stored, 0 counted"),
            "{found}"
        );
    }
}
