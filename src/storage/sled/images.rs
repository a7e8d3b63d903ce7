//! [`ImageRecords`] of the embedded records: image records with their listing index (the
//! binary-hash lookup included), blob references and usage counters, changed together in one
//! sled transaction.

use super::{adjust_live, decode, reindex, tx_blob_ref, tx_decode, tx_result, BlobRef, SledStore};
use crate::model::ids::SHORTEST_PREFIX;
use crate::model::image::ImageRecord;
use crate::storage::index::{IndexField, IndexValue};
use crate::storage::records::*;
use crate::storage::{encode, index, key2, query, AliasRecords, Inserted, Result};
use sled::Transactional;

impl ImageRecords for SledStore {
    // ---- source images ----

    fn get_image(&self, org: &str, hash: &str) -> Result<Option<ImageRecord>> {
        self.images
            .get(key2(org, hash))?
            .map(|v| decode("images", &v))
            .transpose()
    }

    /// Full hashes of the organization's images that start with `prefix` (at most `max`).
    fn hashes_with_prefix(&self, org: &str, hash_prefix: &str, max: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for k in self
            .images
            .scan_prefix(key2(org, hash_prefix))
            .keys()
            .take(max)
        {
            let k = k?;
            let hash = k.get(org.len() + 1..).unwrap_or_default();
            out.push(String::from_utf8_lossy(hash).to_string());
        }
        Ok(out)
    }

    /// The shortest prefix of `hash`, at least 6 characters, that no other image of the
    /// organization shares.
    fn short_hash(&self, org: &str, hash: &str) -> Result<String> {
        for len in 6..hash.len() {
            let p = hash.get(..len).unwrap_or(hash);
            if self.hashes_with_prefix(org, p, 2)?.len() <= 1 {
                return Ok(p.to_string());
            }
        }
        Ok(hash.to_string())
    }

    /// Image records of an organization with this SHA-1, deleted or not, by hash: a walk of
    /// the [`IndexField::BinaryHash`] entries of one value.
    fn images_by_binary(&self, org: &str, binary_hash: &str) -> Result<Vec<ImageRecord>> {
        let field = IndexField::BinaryHash;
        let span = query::Span::prefixed(index::encode_value(&IndexValue::Str(
            binary_hash.to_string(),
        )));
        let mut hashes = Vec::new();
        for deleted in [false, true] {
            for p in self.index_walk(org, deleted, &field, &span, false) {
                hashes.push(p?.hash);
            }
        }
        // An image deleted or restored between the two walks is met twice.
        hashes.sort();
        hashes.dedup();
        let mut out = Vec::new();
        for hash in hashes {
            if let Some(rec) = self.get_image(org, &hash)? {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Inserts a new image record with its indexes, blob reference and usage counters, in one
    /// transaction. An existing record with the same hash is returned instead.
    fn insert_image(&self, rec: &ImageRecord) -> Result<Inserted> {
        self.space.check()?;
        let k = key2(&rec.organization, &rec.hash);
        let shared = self.index_shared();
        let result = tx_result(
            (
                &self.images,
                &self.img_index,
                &self.img_gone,
                &self.img_counts,
                &self.blob_refs,
                &self.org_usage,
            )
                .transaction(
                    |(images, img_index, img_gone, img_counts, blob_refs, org_usage)| {
                        if let Some(existing) = images.get(&k)? {
                            return Ok((
                                Inserted::Exists(Box::new(tx_decode("images", &existing)?)),
                                0,
                            ));
                        }
                        images.insert(k.as_slice(), encode(rec))?;
                        let written = reindex((img_index, img_gone, img_counts), None, Some(rec))?;
                        let mut r = tx_blob_ref(blob_refs, &rec.blob, rec.size)?;
                        r.refs += 1;
                        if !rec.deleted {
                            adjust_live(&mut r, org_usage, &rec.organization, rec.size, 1)?;
                        }
                        blob_refs.insert(rec.blob.as_bytes(), encode(&r))?;
                        Ok((Inserted::Created, written))
                    },
                ),
        )
        .map(|(inserted, written)| {
            self.index_changed(written);
            inserted
        });
        drop(shared);
        // Checked after the commit: of two such images inserted at once, the later one to
        // look sees the earlier ([`Records::generation`]).
        let prefix = rec.hash.get(..SHORTEST_PREFIX).unwrap_or(&rec.hash);
        if matches!(result, Ok(Inserted::Created))
            && self.hashes_with_prefix(&rec.organization, prefix, 2)?.len() > 1
        {
            self.changed();
        }
        result
    }

    /// Replaces the record of an existing image whose identity (hash, blob) is unchanged, and
    /// keeps the usage counters in step with its `deleted` flag.
    fn update_image(&self, rec: &ImageRecord) -> Result<bool> {
        self.space.check()?;
        let k = key2(&rec.organization, &rec.hash);
        let shared = self.index_shared();
        let result = tx_result(
            (
                &self.images,
                &self.img_index,
                &self.img_gone,
                &self.img_counts,
                &self.blob_refs,
                &self.org_usage,
            )
                .transaction(
                    |(images, img_index, img_gone, img_counts, blob_refs, org_usage)| {
                        let Some(old) = images.get(&k)? else {
                            return Ok((false, 0));
                        };
                        let old: ImageRecord = tx_decode("images", &old)?;
                        let written =
                            reindex((img_index, img_gone, img_counts), Some(&old), Some(rec))?;
                        if old.deleted != rec.deleted {
                            let delta = if rec.deleted { -1 } else { 1 };
                            let mut r = tx_blob_ref(blob_refs, &rec.blob, rec.size)?;
                            adjust_live(&mut r, org_usage, &rec.organization, rec.size, delta)?;
                            blob_refs.insert(rec.blob.as_bytes(), encode(&r))?;
                        }
                        images.insert(k.as_slice(), encode(rec))?;
                        Ok((true, written))
                    },
                ),
        )
        .map(|(updated, written)| {
            self.index_changed(written);
            updated
        });
        drop(shared);
        self.changed();
        result
    }

    /// Removes an image record for good, and the aliases that point to it. Returns the blob id
    /// when no record of any organization refers to it any more, so the caller can remove the
    /// file.
    fn remove_image(&self, org: &str, hash: &str) -> Result<Option<String>> {
        self.remove_image_where(org, hash, |_| true)
    }

    fn remove_expired_image(&self, org: &str, hash: &str, cutoff: i64) -> Result<Option<String>> {
        self.remove_image_where(org, hash, |rec| {
            rec.deleted && rec.deleted_at.is_some_and(|at| at < cutoff)
        })
    }

    /// Number of image records referring to a blob.
    fn blob_refs(&self, blob: &str) -> Result<u64> {
        Ok(self
            .blob_refs
            .get(blob.as_bytes())?
            .map(|v| decode::<BlobRef>("blob_refs", &v))
            .transpose()?
            .map_or(0, |r| r.refs))
    }

    /// Every organization with image records, for background passes.
    fn all_images(&self) -> Box<dyn Iterator<Item = Result<ImageRecord>> + '_> {
        Box::new(self.images.iter().values().map(|v| decode("images", &v?)))
    }

    /// Soft-deleted images whose retention ended before `cutoff` (Unix seconds).
    fn expired_images(&self, cutoff: i64, limit: usize) -> Result<Vec<(String, String)>> {
        // The deletion-time index of every organization, up to the cutoff: work in proportion
        // to what has expired.
        let field = index::IndexField::DeletedAt;
        let mut upto = vec![0x01];
        upto.extend_from_slice(&index::ordered_f64(cutoff as f64));
        let span = query::Span {
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
}

impl SledStore {
    /// Removes an image record for good when `remove` says so of it, in one transaction
    /// ([`ImageRecords::remove_image`]).
    fn remove_image_where(
        &self,
        org: &str,
        hash: &str,
        remove: impl Fn(&ImageRecord) -> bool,
    ) -> Result<Option<String>> {
        let k = key2(org, hash);
        let shared = self.index_shared();
        let result = tx_result(
            (
                &self.images,
                &self.img_index,
                &self.img_gone,
                &self.img_counts,
                &self.blob_refs,
                &self.org_usage,
            )
                .transaction(
                    |(images, img_index, img_gone, img_counts, blob_refs, org_usage)| {
                        let Some(old) = images.get(k.as_slice())? else {
                            return Ok((None, 0));
                        };
                        let rec: ImageRecord = tx_decode("images", &old)?;
                        if !remove(&rec) {
                            return Ok((None, 0));
                        }
                        images.remove(k.as_slice())?;
                        let written = reindex((img_index, img_gone, img_counts), Some(&rec), None)?;
                        let mut r = tx_blob_ref(blob_refs, &rec.blob, rec.size)?;
                        if !rec.deleted {
                            adjust_live(&mut r, org_usage, org, rec.size, -1)?;
                        }
                        r.refs = r.refs.saturating_sub(1);
                        if r.refs == 0 {
                            blob_refs.remove(rec.blob.as_bytes())?;
                            Ok((Some(rec.blob), written))
                        } else {
                            blob_refs.insert(rec.blob.as_bytes(), encode(&r))?;
                            Ok((None, written))
                        }
                    },
                ),
        )
        .map(|(blob, written)| {
            self.index_changed(written);
            blob
        });
        drop(shared);
        self.changed();
        // After the record: an alias made meanwhile found no image, so none is left behind.
        if result.is_ok() {
            self.delete_aliases_of(org, hash)?;
        }
        result
    }
}
