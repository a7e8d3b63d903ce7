//! Reads of the listing indexes ([`super::index`]): ordered walks over one field, bounded
//! counts, counters and facets; and the migration that builds the indexes for old stores.

use super::index::{self, IndexField, Position};
use super::records::*;
use super::ImageIndex;
use super::{decode, Result, SledStore};
use crate::model::image::ImageRecord;

/// A range of one field's entries: `from` inclusive, `to` exclusive (both after the field
/// prefix; `None` is open).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub from: Vec<u8>,
    pub to: Option<Vec<u8>>,
}

impl Span {
    /// Every entry whose suffix starts with `p`.
    pub fn prefixed(p: Vec<u8>) -> Span {
        let to = next_prefix(&p);
        Span { from: p, to }
    }

    /// This span narrowed to the positions strictly after (`reverse` false) or before `p`.
    pub fn past(&self, p: &Position, reverse: bool) -> Span {
        let key = p.suffix();
        let mut out = self.clone();
        if reverse {
            if out.to.as_ref().is_none_or(|t| key < *t) {
                out.to = Some(key);
            }
        } else {
            let mut after = key;
            after.push(0);
            if after > out.from {
                out.from = after;
            }
        }
        out
    }
}

/// The smallest key greater than every key starting with `p` (`None`: there is none).
pub fn next_prefix(p: &[u8]) -> Option<Vec<u8>> {
    let mut out = p.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

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
        let iter = match to {
            // sled refuses a range that ends before it starts.
            Some(to) if to <= from => self.img_index.range(from.clone()..from),
            Some(to) => self.img_index.range(from..to),
            None => self.img_index.range(from..),
        };
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if reverse {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        };
        let plen = prefix.len();
        Box::new(iter.map(move |item| {
            let (k, _) = item?;
            Position::parse(field, k.get(plen..).unwrap_or_default()).ok_or_else(|| {
                super::StorageError::Corrupt {
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
    /// Brings a store written with an older layout up to [`super::SCHEMA_VERSION`], in place.
    pub(crate) fn migrate(&self, found: u32) -> Result<()> {
        if found < 2 {
            // Schema 1 kept only a creation-time index; build the listing indexes.
            log::info!(
                "building the listing indexes of {} image records",
                self.images.len()
            );
            self.img_index.clear()?;
            self.img_counts.clear()?;
            for v in self.images.iter().values() {
                let rec: ImageRecord = decode("images", &v?)?;
                let (entries, counters) = index::record_keys(&rec);
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
        self.flush_blocking()?;
        self.meta
            .insert("schema_version", &super::SCHEMA_VERSION.to_be_bytes())?;
        self.flush_blocking()?;
        Ok(())
    }
}
