//! The listing index in PostgreSQL: `image_index` holds one row per entry key of
//! [`crate::storage::index`] without its `org \0 flag` start (kept in the `org` and `deleted`
//! columns), and `image_counts` the counters the same way. `bytea` compares like `memcmp`, so
//! entries sort exactly as the embedded store's keys do and a position (a cursor) means the
//! same thing on both backends.
//!
//! Walks read keyset pages from the primary key, lazily: the first of [`WALK_PAGE`] entries,
//! each next one [`WALK_GROWTH`] times larger up to [`WALK_PAGE_MAX`]. A listing that needs
//! one page of answers reads about one page of entries, however large the field, and one that
//! passes over many (an offset, a count) takes a few round trips rather than one per page.

use super::{to_i64, to_u64, PgStore};
use crate::storage::index::{self, IndexField, Position};
use crate::storage::query::{next_prefix, Span};
use crate::storage::{ImageIndex, Result, StorageError};
use std::collections::VecDeque;

/// Entries read by the first query of a walk.
pub(super) const WALK_PAGE: i64 = 64;
/// How much larger each next query of a walk is, up to [`WALK_PAGE_MAX`].
const WALK_GROWTH: i64 = 4;
/// Entries read per query of a walk at most.
const WALK_PAGE_MAX: i64 = 4096;

/// The bounds of one field's entries within a span: `from` inclusive, `to` exclusive.
fn bounds(field: &IndexField, span: &Span) -> (Vec<u8>, Vec<u8>) {
    let tag = field.tag();
    let mut from = tag.clone();
    from.extend_from_slice(&span.from);
    let to = match &span.to {
        Some(t) => {
            let mut k = tag.clone();
            k.extend_from_slice(t);
            k
        }
        // A tag never ends in 0xff bytes only, so there is always a key past it.
        None => next_prefix(&tag).unwrap_or_else(|| vec![0xff; tag.len() + 1]),
    };
    (from, to)
}

/// One field's entries within a span, page by page.
struct Walk<'a> {
    store: &'a PgStore,
    org: String,
    deleted: bool,
    field: &'a IndexField,
    tag_len: usize,
    from: Vec<u8>,
    to: Vec<u8>,
    reverse: bool,
    page: VecDeque<Vec<u8>>,
    /// Entries the next query reads.
    size: i64,
    done: bool,
}

impl Walk<'_> {
    fn fetch(&mut self) -> Result<()> {
        let params: super::Params = vec![
            Box::new(self.org.clone()),
            Box::new(self.deleted),
            Box::new(self.from.clone()),
            Box::new(self.to.clone()),
            Box::new(self.size),
        ];
        let rows = if self.reverse {
            self.store.query(
                "SELECT entry FROM image_index WHERE org = $1 AND deleted = $2 \
                 AND entry >= $3 AND entry < $4 ORDER BY entry DESC LIMIT $5",
                params,
            )?
        } else {
            self.store.query(
                "SELECT entry FROM image_index WHERE org = $1 AND deleted = $2 \
                 AND entry >= $3 AND entry < $4 ORDER BY entry LIMIT $5",
                params,
            )?
        };
        self.done = (rows.len() as i64) < self.size;
        self.size = (self.size * WALK_GROWTH).min(WALK_PAGE_MAX);
        for row in &rows {
            self.page.push_back(row.try_get(0)?);
        }
        if let Some(last) = self.page.back() {
            if self.reverse {
                self.to = last.clone();
            } else {
                // The smallest key after `last`.
                self.from = last.clone();
                self.from.push(0);
            }
        }
        Ok(())
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<Position>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() && !self.done {
            if let Err(e) = self.fetch() {
                self.done = true;
                return Some(Err(e));
            }
        }
        let entry = self.page.pop_front()?;
        Some(
            Position::parse(self.field, entry.get(self.tag_len..).unwrap_or_default()).ok_or_else(
                || StorageError::Corrupt {
                    tree: "image_index",
                    message: format!("unreadable entry {}", hex::encode(&entry)),
                },
            ),
        )
    }
}

impl PgStore {
    /// A counter of `image_counts`, zero when it has no row.
    fn counter(&self, org: &str, deleted: bool, key: Vec<u8>) -> Result<u64> {
        let rows = self.query(
            "SELECT n FROM image_counts WHERE org = $1 AND deleted = $2 AND key = $3",
            vec![Box::new(org.to_string()), Box::new(deleted), Box::new(key)],
        )?;
        let n: i64 = rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
        Ok(to_u64(n))
    }
}

impl ImageIndex for PgStore {
    fn image_count(&self, org: &str, deleted: bool) -> Result<u64> {
        self.counter(org, deleted, index::TOTAL.to_vec())
    }

    fn value_count(
        &self,
        org: &str,
        deleted: bool,
        field: &IndexField,
        value: &[u8],
    ) -> Result<u64> {
        let mut key = field.tag();
        key.extend_from_slice(value);
        self.counter(org, deleted, key)
    }

    fn index_walk<'a>(
        &'a self,
        org: &str,
        deleted: bool,
        field: &'a IndexField,
        span: &Span,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = Result<Position>> + 'a> {
        let (from, to) = bounds(field, span);
        Box::new(Walk {
            store: self,
            org: org.to_string(),
            deleted,
            field,
            tag_len: field.tag().len(),
            done: to <= from,
            from,
            to,
            reverse,
            page: VecDeque::new(),
            size: WALK_PAGE,
        })
    }

    fn index_count(
        &self,
        org: &str,
        deleted: bool,
        field: &IndexField,
        span: &Span,
        cap: usize,
    ) -> Result<usize> {
        let (from, to) = bounds(field, span);
        if to <= from {
            return Ok(0);
        }
        let rows = self.query(
            "SELECT count(*) FROM (SELECT 1 FROM image_index WHERE org = $1 AND deleted = $2 \
             AND entry >= $3 AND entry < $4 LIMIT $5) AS capped",
            vec![
                Box::new(org.to_string()),
                Box::new(deleted),
                Box::new(from),
                Box::new(to),
                Box::new(to_i64(cap as u64)),
            ],
        )?;
        let n: i64 = rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// One query for the whole batch.
    fn index_has(
        &self,
        org: &str,
        deleted: bool,
        field: &IndexField,
        suffixes: &[Vec<u8>],
    ) -> Result<Vec<bool>> {
        let tag = field.tag();
        let entries: Vec<Vec<u8>> = suffixes
            .iter()
            .map(|s| {
                let mut k = tag.clone();
                k.extend_from_slice(s);
                k
            })
            .collect();
        let rows = self.query(
            "SELECT entry FROM image_index WHERE org = $1 AND deleted = $2 AND entry = ANY($3)",
            vec![
                Box::new(org.to_string()),
                Box::new(deleted),
                Box::new(entries.clone()),
            ],
        )?;
        let found: std::collections::HashSet<Vec<u8>> = rows
            .iter()
            .map(|r| r.try_get::<_, Vec<u8>>(0))
            .collect::<std::result::Result<_, _>>()?;
        Ok(entries.iter().map(|e| found.contains(e)).collect())
    }

    fn facet_values(
        &self,
        org: &str,
        deleted: bool,
        field: &IndexField,
        max: usize,
        scan: usize,
    ) -> Result<Vec<(String, u64)>> {
        let (from, to) = bounds(field, &Span::default());
        let tag_len = field.tag().len();
        let rows = self.query(
            "SELECT key, n FROM image_counts WHERE org = $1 AND deleted = $2 \
             AND key >= $3 AND key < $4 ORDER BY key LIMIT $5",
            vec![
                Box::new(org.to_string()),
                Box::new(deleted),
                Box::new(from),
                Box::new(to),
                Box::new(to_i64(scan as u64)),
            ],
        )?;
        let mut out = Vec::new();
        for row in &rows {
            let key: Vec<u8> = row.try_get(0)?;
            if let Some(s) = index::decode_str(key.get(tag_len..).unwrap_or_default()) {
                out.push((s, to_u64(row.try_get(1)?)));
            }
        }
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.truncate(max);
        Ok(out)
    }
}
