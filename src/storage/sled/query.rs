//! Reads of the listing indexes ([`crate::storage::index`]) in the embedded records
//! ([`ImageIndex`] of [`SledStore`]): ordered walks over one field, bounded counts, counters
//! and facets; and the migration that builds the indexes for old stores.

use super::{decode, BlobRef, SledStore};
use crate::model::image::ImageRecord;
use crate::storage::index::{self, IndexField, Position};
use crate::storage::query::{next_prefix, Span};
use crate::storage::records::*;
use crate::storage::{encode, Result, SCHEMA_VERSION};

fn counter(v: Option<sled::IVec>) -> u64 {
    v.map_or(0, |v| {
        u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))
    })
}

impl ImageIndex for SledStore {
    /// Number of live (or soft-deleted) images of an organization.
    fn image_count(&self, org: &str, deleted: bool) -> Result<u64> {
        Ok(counter(
            self.img_counts.get(index::total_key(org, deleted))?,
        ))
    }

    /// Number of images with this value of a counted field ([`IndexField::counted`]).
    fn value_count(
        &self,
        org: &str,
        deleted: bool,
        field: &IndexField,
        value: &[u8],
    ) -> Result<u64> {
        let mut k = index::field_prefix(org, deleted, field);
        k.extend_from_slice(value);
        Ok(counter(self.img_counts.get(k)?))
    }

    /// The positions of one field's entries within `span`, in order or in reverse.
    fn index_walk<'a>(
        &'a self,
        org: &str,
        deleted: bool,
        field: &'a IndexField,
        span: &Span,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = Result<Position>> + 'a> {
        let prefix = index::field_prefix(org, deleted, field);
        let mut from = prefix.clone();
        from.extend_from_slice(&span.from);
        let to = match &span.to {
            Some(t) => {
                let mut k = prefix.clone();
                k.extend_from_slice(t);
                Some(k)
            }
            None => next_prefix(&prefix),
        };
        let plen = prefix.len();
        Box::new(self.index_entries(from, to, reverse).map(move |item| {
            let k = item?;
            Position::parse(field, k.get(plen..).unwrap_or_default()).ok_or_else(|| {
                crate::storage::StorageError::Corrupt {
                    tree: "img_index",
                    message: format!("unreadable entry {}", hex::encode(&k)),
                }
            })
        }))
    }

    /// Number of entries in `span`, counting at most `cap`.
    fn index_count(
        &self,
        org: &str,
        deleted: bool,
        field: &IndexField,
        span: &Span,
        cap: usize,
    ) -> Result<usize> {
        let mut n = 0;
        for p in self.index_walk(org, deleted, field, span, false) {
            p?;
            n += 1;
            if n >= cap {
                break;
            }
        }
        Ok(n)
    }

    /// Which of these entries of one field exist: a lookup each.
    fn index_has(
        &self,
        org: &str,
        deleted: bool,
        field: &IndexField,
        suffixes: &[Vec<u8>],
    ) -> Result<Vec<bool>> {
        let prefix = index::field_prefix(org, deleted, field);
        suffixes
            .iter()
            .map(|suffix| {
                let mut k = prefix.clone();
                k.extend_from_slice(suffix);
                self.index_contains(&k)
            })
            .collect()
    }

    /// The string values of a counted field with their image counts, most frequent first, at
    /// most `max` (reading at most `scan` distinct values).
    fn facet_values(
        &self,
        org: &str,
        deleted: bool,
        field: &IndexField,
        max: usize,
        scan: usize,
    ) -> Result<Vec<(String, u64)>> {
        let prefix = index::field_prefix(org, deleted, field);
        let mut out = Vec::new();
        for item in self.img_counts.scan_prefix(&prefix).take(scan) {
            let (k, v) = item?;
            if let Some(s) = index::decode_str(k.get(prefix.len()..).unwrap_or_default()) {
                out.push((s, counter(Some(v))));
            }
        }
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.truncate(max);
        Ok(out)
    }
}

impl SledStore {
    /// Brings a store written with an older layout up to [`SCHEMA_VERSION`], in place.
    pub(crate) fn migrate(&self, found: u32) -> Result<()> {
        if found < 2 {
            // Schema 1 kept only a creation-time index; build the listing indexes.
            log::info!(
                "building the listing indexes of {} image records",
                self.images.len()
            );
            self.img_index.clear()?;
            self.img_runs.clear()?;
            self.img_gone.clear()?;
            self.meta.remove(super::runs::PACKED_KEY)?;
            self.img_counts.clear()?;
            for v in self.images.iter().values() {
                let rec: ImageRecord = decode("images", &v?)?;
                let (entries, counters) = index::embedded_keys(&rec);
                for k in entries {
                    self.img_index.insert(k, &[])?;
                }
                for k in counters {
                    let n = counter(self.img_counts.get(&k)?) + 1;
                    self.img_counts.insert(k, &n.to_be_bytes())?;
                }
            }
            self.db.drop_tree("img_created")?;
        }
        if found < 4 {
            // Schema 3 kept the binary-hash lookup and the live references per organization
            // and blob in trees of their own, one key per image each.
            log::info!(
                "moving the binary-hash lookup of {} image records into the listing index, \
                 and the live references per organization into the blob references",
                self.images.len()
            );
            for v in self.images.iter().values() {
                let rec: ImageRecord = decode("images", &v?)?;
                self.img_index.insert(index::binary_entry(&rec), &[])?;
            }
            let org_blobs = self.db.open_tree("org_blobs")?;
            for item in org_blobs.iter() {
                let (k, v) = item?;
                let Some(split) = k.iter().position(|b| *b == 0) else {
                    continue;
                };
                let (org, rest) = k.split_at(split);
                let blob = rest.get(1..).unwrap_or_default();
                let Some(stored) = self.blob_refs.get(blob)? else {
                    continue;
                };
                let mut r: BlobRef = decode("blob_refs", &stored)?;
                r.live
                    .insert(String::from_utf8_lossy(org).to_string(), counter(Some(v)));
                self.blob_refs.insert(blob, encode(&r))?;
            }
            self.db.drop_tree("img_binary")?;
            self.db.drop_tree("org_blobs")?;
        }
        self.flush_blocking()?;
        self.meta
            .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
        self.flush_blocking()?;
        Ok(())
    }
}
