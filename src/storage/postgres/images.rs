//! Image records, one row per (organization, hash), with their listing index entries and
//! counters ([`super::index`]), the organization's usage and today's figures and the change
//! generation moved in the transaction of the record, as the embedded store does in one sled
//! transaction.
//!
//! Billable space counts each blob once per organization while a live image refers to it.
//! Rather than keep a reference-count table beside the records, a change counts the other live
//! images of that organization and blob (an index lookup) under a transaction lock on the blob,
//! which also orders "is the blob still referred to?" of removals of every organization.
//!
//! Image writes of one organization also wait for each other on its image counter row (the
//! exact totals the listings read), from the index step to the commit: the price of counters
//! that never drift, which the embedded store pays with its one writer per key.

use super::aliases::delete_aliases_of_tx;
use super::{bump_generation, from_row, to_i64, to_json, to_u64, PgStore};
use crate::model::ids::SHORTEST_PREFIX;
use crate::model::image::ImageRecord;
use crate::storage::index;
use crate::storage::{ImageRecords, Inserted, Result};
use deadpool_postgres::Transaction;
use std::collections::VecDeque;

/// Advisory lock class of the per-blob transaction locks ("blob"); the lock key within it is
/// a hash of the blob id (two-key advisory locks never meet the one-key locks of the store).
const BLOB_LOCK_CLASS: i32 = 0x626c_6f62;

/// Advisory lock class of the inserts whose hashes share their shortest prefix ("pfix"), so
/// that of two such inserts the later one sees the other ([`ImageRecords::insert_image`]).
const PREFIX_LOCK_CLASS: i32 = 0x7066_6978;

/// Records read per query by [`ImageRecords::all_images`].
const ALL_IMAGES_BATCH: i64 = 500;

/// Orders every change of the records of one blob until the transaction ends.
async fn lock_blob(tx: &Transaction<'_>, blob: &str) -> Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&BLOB_LOCK_CLASS, &blob],
    )
    .await?;
    Ok(())
}

/// Adds or removes listing entries and counter keys of one organization and flag.
async fn change_index(
    tx: &Transaction<'_>,
    org: &str,
    deleted: bool,
    entries: &[Vec<u8>],
    counters: &[Vec<u8>],
    add: bool,
) -> Result<()> {
    // Counter rows in key order, so that concurrent changes lock them in one order.
    let mut counters = counters.to_vec();
    counters.sort();
    if add {
        if !entries.is_empty() {
            let st = tx
                .prepare_cached(
                    "INSERT INTO image_index (org, deleted, entry) \
                     SELECT $1, $2, unnest($3::bytea[]) ON CONFLICT DO NOTHING",
                )
                .await?;
            tx.execute(&st, &[&org, &deleted, &entries]).await?;
        }
        if !counters.is_empty() {
            let st = tx
                .prepare_cached(
                    "INSERT INTO image_counts (org, deleted, key, n) \
                     SELECT $1, $2, k, 1 FROM unnest($3::bytea[]) AS k \
                     ON CONFLICT (org, deleted, key) DO UPDATE SET n = image_counts.n + 1",
                )
                .await?;
            tx.execute(&st, &[&org, &deleted, &counters]).await?;
        }
    } else {
        if !entries.is_empty() {
            let st = tx
                .prepare_cached(
                    "DELETE FROM image_index WHERE org = $1 AND deleted = $2 AND entry = ANY($3)",
                )
                .await?;
            tx.execute(&st, &[&org, &deleted, &entries]).await?;
        }
        if !counters.is_empty() {
            let st = tx
                .prepare_cached(
                    "UPDATE image_counts SET n = n - 1 \
                     WHERE org = $1 AND deleted = $2 AND key = ANY($3)",
                )
                .await?;
            tx.execute(&st, &[&org, &deleted, &counters]).await?;
            let st = tx
                .prepare_cached(
                    "DELETE FROM image_counts \
                     WHERE org = $1 AND deleted = $2 AND key = ANY($3) AND n <= 0",
                )
                .await?;
            tx.execute(&st, &[&org, &deleted, &counters]).await?;
        }
    }
    Ok(())
}

/// Adds (`add`) or removes a whole record's listing entries and counters.
async fn index_record(tx: &Transaction<'_>, rec: &ImageRecord, add: bool) -> Result<()> {
    let (entries, counters) = index::record_entries(rec);
    change_index(tx, &rec.organization, rec.deleted, &entries, &counters, add).await
}

/// Moves a record's listing entries from `old` to `new`: only what differs is written.
async fn reindex(tx: &Transaction<'_>, old: &ImageRecord, new: &ImageRecord) -> Result<()> {
    if old.deleted != new.deleted || old.organization != new.organization {
        index_record(tx, old, false).await?;
        return index_record(tx, new, true).await;
    }
    let (old_entries, old_counters) = index::record_entries(old);
    let (new_entries, new_counters) = index::record_entries(new);
    let minus = |a: &[Vec<u8>], b: &[Vec<u8>]| -> Vec<Vec<u8>> {
        a.iter().filter(|k| !b.contains(k)).cloned().collect()
    };
    let org = &new.organization;
    change_index(
        tx,
        org,
        new.deleted,
        &minus(&old_entries, &new_entries),
        &minus(&old_counters, &new_counters),
        false,
    )
    .await?;
    change_index(
        tx,
        org,
        new.deleted,
        &minus(&new_entries, &old_entries),
        &minus(&new_counters, &old_counters),
        true,
    )
    .await
}

/// Adds `files` and `space`, and the render store's entries (`stored`: renders, their bytes,
/// mezzanines, their bytes) to an organization's usage and writes today's figures from it, as
/// the embedded store's `store_usage` does.
pub(super) async fn adjust_usage(
    tx: &Transaction<'_>,
    org: &str,
    files: i64,
    space: i64,
    stored: [i64; 4],
) -> Result<()> {
    let [renders, render_bytes, mezzanines, mezzanine_bytes] = stored;
    let st = tx
        .prepare_cached(
            "INSERT INTO org_usage (org, space_in_bytes, number_of_files, renders, render_bytes, \
                 mezzanines, mezzanine_bytes) \
             VALUES ($1, greatest($2::bigint, 0), greatest($3::bigint, 0), \
                 greatest($4::bigint, 0), greatest($5::bigint, 0), greatest($6::bigint, 0), \
                 greatest($7::bigint, 0)) \
             ON CONFLICT (org) DO UPDATE SET \
                 space_in_bytes = greatest(org_usage.space_in_bytes + $2, 0), \
                 number_of_files = greatest(org_usage.number_of_files + $3, 0), \
                 renders = greatest(org_usage.renders + $4, 0), \
                 render_bytes = greatest(org_usage.render_bytes + $5, 0), \
                 mezzanines = greatest(org_usage.mezzanines + $6, 0), \
                 mezzanine_bytes = greatest(org_usage.mezzanine_bytes + $7, 0) \
             RETURNING space_in_bytes, number_of_files, renders, render_bytes",
        )
        .await?;
    let usage = tx
        .query_one(
            &st,
            &[
                &org,
                &space,
                &files,
                &renders,
                &render_bytes,
                &mezzanines,
                &mezzanine_bytes,
            ],
        )
        .await?;
    let day = crate::model::time::day_of(crate::model::time::now_unix());
    let st = tx
        .prepare_cached(
            "INSERT INTO day_stats (org, day, space_in_bytes, number_of_files, renders, \
                 render_bytes) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (org, day) DO UPDATE SET space_in_bytes = EXCLUDED.space_in_bytes, \
                 number_of_files = EXCLUDED.number_of_files, renders = EXCLUDED.renders, \
                 render_bytes = EXCLUDED.render_bytes",
        )
        .await?;
    let col = |i: usize| usage.try_get::<_, i64>(i);
    tx.execute(&st, &[&org, &day, &col(0)?, &col(1)?, &col(2)?, &col(3)?])
        .await?;
    Ok(())
}

/// One live image of an organization starts (`delta` 1) or stops (-1) referring to its blob:
/// the file count moves, and the blob's size when no other live image of the organization
/// refers to it. The caller holds the blob's lock.
async fn adjust_org_blob(tx: &Transaction<'_>, rec: &ImageRecord, delta: i64) -> Result<()> {
    let st = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM images \
             WHERE org = $1 AND blob = $2 AND NOT deleted AND hash <> $3)",
        )
        .await?;
    let shared: bool = tx
        .query_one(&st, &[&rec.organization, &rec.blob, &rec.hash])
        .await?
        .try_get(0)?;
    let space = if shared { 0 } else { delta * to_i64(rec.size) };
    adjust_usage(tx, &rec.organization, delta, space, [0; 4]).await
}

/// The row columns of a record.
struct Columns {
    org: String,
    hash: String,
    binary_hash: String,
    blob: String,
    deleted: bool,
    deleted_at: Option<i64>,
    record: serde_json::Value,
}

impl Columns {
    fn of(rec: &ImageRecord) -> Result<Columns> {
        Ok(Columns {
            org: rec.organization.clone(),
            hash: rec.hash.clone(),
            binary_hash: rec.binary_hash.clone(),
            blob: rec.blob.clone(),
            deleted: rec.deleted,
            deleted_at: rec.deleted_at,
            record: to_json(rec)?,
        })
    }

    /// `$1`…`$7` of the statements that write an image row: org, hash, binary hash, blob,
    /// deleted, deleted at, record.
    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
        [
            &self.org,
            &self.hash,
            &self.binary_hash,
            &self.blob,
            &self.deleted,
            &self.deleted_at,
            &self.record,
        ]
    }
}

/// The shortest prefix of `hash`, at least 6 characters, that neither neighbour in hash order
/// shares (so no other hash does).
fn unique_prefix(hash: &str, neighbours: &[Option<String>]) -> String {
    let shared = neighbours
        .iter()
        .flatten()
        .map(|n| {
            n.bytes()
                .zip(hash.bytes())
                .take_while(|(a, b)| a == b)
                .count()
        })
        .max()
        .unwrap_or(0);
    let len = (shared + 1).max(6);
    if len >= hash.len() {
        return hash.to_string();
    }
    hash.get(..len).unwrap_or(hash).to_string()
}

/// The smallest string greater than every string that starts with `p`, in code point order
/// (`COLLATE "C"` over UTF-8); `None` when there is none.
fn after_prefix(p: &str) -> Option<String> {
    let mut chars: Vec<char> = p.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=0x10_ffff).find_map(char::from_u32);
        if let Some(c) = next {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl ImageRecords for PgStore {
    fn get_image(&self, org: &str, hash: &str) -> Result<Option<ImageRecord>> {
        // Taken before the read: an entry is tagged with a generation it was true at.
        let trusted = self.watch.trusted();
        if let Some(rec) = trusted.and_then(|g| self.records.image(org, hash, g)) {
            return Ok(Some(rec));
        }
        let rows = self.query(
            "SELECT record FROM images WHERE org = $1 AND hash = $2",
            vec![Box::new(org.to_string()), Box::new(hash.to_string())],
        )?;
        let found: Option<ImageRecord> =
            rows.first().map(|r| from_row("images", r, 0)).transpose()?;
        if let (Some(g), Some(rec)) = (trusted, &found) {
            self.records.put_image(g, org, hash, rec);
        }
        Ok(found)
    }

    /// One query: the hashes as an array joined to the table, each answer placed back at its
    /// hash's position.
    fn get_images(&self, org: &str, hashes: &[String]) -> Result<Vec<Option<ImageRecord>>> {
        let mut out: Vec<Option<ImageRecord>> = hashes.iter().map(|_| None).collect();
        if hashes.is_empty() {
            return Ok(out);
        }
        let rows = self.query(
            "SELECT h.n, i.record FROM unnest($2::text[]) WITH ORDINALITY AS h(hash, n) \
             JOIN images i ON i.org = $1 AND i.hash = h.hash",
            vec![Box::new(org.to_string()), Box::new(hashes.to_vec())],
        )?;
        for row in &rows {
            let n: i64 = row.try_get(0)?;
            let at = usize::try_from(n - 1).ok().and_then(|at| out.get_mut(at));
            if let Some(slot) = at {
                *slot = Some(from_row("images", row, 1)?);
            }
        }
        Ok(out)
    }

    fn hashes_with_prefix(&self, org: &str, prefix: &str, max: usize) -> Result<Vec<String>> {
        let max = to_i64(max as u64);
        let rows = match after_prefix(prefix) {
            Some(end) => self.query(
                "SELECT hash FROM images WHERE org = $1 AND hash >= $2 AND hash < $3 \
                 ORDER BY hash LIMIT $4",
                vec![
                    Box::new(org.to_string()),
                    Box::new(prefix.to_string()),
                    Box::new(end),
                    Box::new(max),
                ],
            )?,
            None => self.query(
                "SELECT hash FROM images WHERE org = $1 AND hash >= $2 ORDER BY hash LIMIT $3",
                vec![
                    Box::new(org.to_string()),
                    Box::new(prefix.to_string()),
                    Box::new(max),
                ],
            )?,
        };
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    fn short_hash(&self, org: &str, hash: &str) -> Result<String> {
        // The hashes just before and after in order share the longest prefixes with it.
        let rows = self.query(
            "SELECT EXISTS (SELECT 1 FROM images WHERE org = $1 AND hash = $2), \
                 (SELECT hash FROM images WHERE org = $1 AND hash < $2 \
                  ORDER BY hash DESC LIMIT 1), \
                 (SELECT hash FROM images WHERE org = $1 AND hash > $2 ORDER BY hash LIMIT 1)",
            vec![Box::new(org.to_string()), Box::new(hash.to_string())],
        )?;
        let Some(row) = rows.first() else {
            return Ok(hash.to_string());
        };
        if row.try_get::<_, bool>(0)? {
            let neighbours = [row.try_get(1)?, row.try_get(2)?];
            return Ok(unique_prefix(hash, &neighbours));
        }
        // Not stored: the embedded store's answer, prefix by prefix.
        for len in 6..hash.len() {
            let p = hash.get(..len).unwrap_or(hash);
            if self.hashes_with_prefix(org, p, 2)?.len() <= 1 {
                return Ok(p.to_string());
            }
        }
        Ok(hash.to_string())
    }

    /// One query for the stored ones (each with its neighbours in hash order, as
    /// [`ImageRecords::short_hash`] reads them); the others, rare, one by one.
    fn short_hashes(&self, org: &str, hashes: &[String]) -> Result<Vec<String>> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.query(
            "SELECT h.n, \
                 EXISTS (SELECT 1 FROM images WHERE org = $1 AND hash = h.hash), \
                 (SELECT hash FROM images WHERE org = $1 AND hash < h.hash \
                  ORDER BY hash DESC LIMIT 1), \
                 (SELECT hash FROM images WHERE org = $1 AND hash > h.hash \
                  ORDER BY hash LIMIT 1) \
             FROM unnest($2::text[]) WITH ORDINALITY AS h(hash, n)",
            vec![Box::new(org.to_string()), Box::new(hashes.to_vec())],
        )?;
        let mut out: Vec<Option<String>> = hashes.iter().map(|_| None).collect();
        for row in &rows {
            let n: i64 = row.try_get(0)?;
            let at = usize::try_from(n - 1).ok();
            let (Some(slot), Some(hash)) = (
                at.and_then(|at| out.get_mut(at)),
                at.and_then(|at| hashes.get(at)),
            ) else {
                continue;
            };
            if row.try_get::<_, bool>(1)? {
                let neighbours = [row.try_get(2)?, row.try_get(3)?];
                *slot = Some(unique_prefix(hash, &neighbours));
            }
        }
        out.into_iter()
            .zip(hashes)
            .map(|(found, hash)| match found {
                Some(short) => Ok(short),
                None => self.short_hash(org, hash),
            })
            .collect()
    }

    fn images_by_binary(&self, org: &str, binary_hash: &str) -> Result<Vec<ImageRecord>> {
        self.query(
            "SELECT record FROM images WHERE org = $1 AND binary_hash = $2 ORDER BY hash",
            vec![Box::new(org.to_string()), Box::new(binary_hash.to_string())],
        )?
        .iter()
        .map(|r| from_row("images", r, 0))
        .collect()
    }

    fn insert_image(&self, rec: &ImageRecord) -> Result<Inserted> {
        let c = Columns::of(rec)?;
        let rec = rec.clone();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            lock_blob(&tx, &c.blob).await?;
            let st = tx
                .prepare_cached(
                    "INSERT INTO images (org, hash, binary_hash, blob, deleted, deleted_at, \
                     record) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (org, hash) DO NOTHING",
                )
                .await?;
            let inserted = tx.execute(&st, &c.params()).await?;
            if inserted == 0 {
                let row = tx
                    .query_one(
                        "SELECT record FROM images WHERE org = $1 AND hash = $2",
                        &[&c.org, &c.hash],
                    )
                    .await?;
                return Ok(Inserted::Exists(Box::new(from_row("images", &row, 0)?)));
            }
            index_record(&tx, &rec, true).await?;
            if !rec.deleted {
                adjust_org_blob(&tx, &rec, 1).await?;
            }
            // An image that shares the shortest prefix moves the generation with the insert
            // (`Records::generation`), so no crash can come in between. Inserts of one prefix
            // take turns here, so of two at once the later one sees the other committed.
            let prefix = rec.hash.get(..SHORTEST_PREFIX).unwrap_or(&rec.hash);
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2 || '/' || $3))",
                &[&PREFIX_LOCK_CLASS, &c.org, &prefix],
            )
            .await?;
            // Hashes are hex, so every one that starts with `prefix` sorts below `prefix` + "g".
            let end = format!("{prefix}g");
            let shared: i64 = tx
                .query_one(
                    "SELECT count(*) FROM (SELECT 1 FROM images WHERE org = $1 \
                     AND hash >= $2 AND hash < $3 LIMIT 2) AS s",
                    &[&c.org, &prefix, &end],
                )
                .await?
                .try_get(0)?;
            if shared > 1 {
                bump_generation(&tx).await?;
            }
            tx.commit().await?;
            Ok(Inserted::Created)
        })
    }

    fn update_image(&self, rec: &ImageRecord) -> Result<bool> {
        let c = Columns::of(rec)?;
        let rec = rec.clone();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            lock_blob(&tx, &c.blob).await?;
            let Some(row) = tx
                .query_opt(
                    "SELECT record FROM images WHERE org = $1 AND hash = $2 FOR UPDATE",
                    &[&c.org, &c.hash],
                )
                .await?
            else {
                return Ok(false);
            };
            let old: ImageRecord = from_row("images", &row, 0)?;
            reindex(&tx, &old, &rec).await?;
            if old.deleted != rec.deleted {
                adjust_org_blob(&tx, &rec, if rec.deleted { -1 } else { 1 }).await?;
            }
            tx.execute(
                "UPDATE images SET binary_hash = $3, blob = $4, deleted = $5, deleted_at = $6, \
                 record = $7 WHERE org = $1 AND hash = $2",
                &c.params(),
            )
            .await?;
            bump_generation(&tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn remove_image(&self, org: &str, hash: &str) -> Result<Option<String>> {
        self.remove_image_where(org, hash, None)
    }

    fn remove_expired_image(&self, org: &str, hash: &str, cutoff: i64) -> Result<Option<String>> {
        self.remove_image_where(org, hash, Some(cutoff))
    }

    fn blob_refs(&self, blob: &str) -> Result<u64> {
        let rows = self.query(
            "SELECT count(*) FROM images WHERE blob = $1",
            vec![Box::new(blob.to_string())],
        )?;
        let n: i64 = rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
        Ok(to_u64(n))
    }

    fn all_images(&self) -> Box<dyn Iterator<Item = Result<ImageRecord>> + '_> {
        Box::new(AllImages {
            store: self,
            after: None,
            batch: VecDeque::new(),
            done: false,
        })
    }

    fn expired_images(&self, cutoff: i64, limit: usize) -> Result<Vec<(String, String)>> {
        self.query(
            // In the index's order, so that the limit bounds the rows read.
            "SELECT org, hash FROM images WHERE deleted AND deleted_at < $1 \
             ORDER BY deleted_at LIMIT $2",
            vec![Box::new(cutoff), Box::new(to_i64(limit as u64))],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }
}

/// Every image record in (organization, hash) order, read in keyset batches.
struct AllImages<'a> {
    store: &'a PgStore,
    after: Option<(String, String)>,
    batch: VecDeque<ImageRecord>,
    done: bool,
}

impl AllImages<'_> {
    fn fetch(&mut self) -> Result<()> {
        let rows = match &self.after {
            None => self.store.query(
                "SELECT record FROM images ORDER BY org, hash LIMIT $1",
                vec![Box::new(ALL_IMAGES_BATCH)],
            )?,
            Some((org, hash)) => self.store.query(
                "SELECT record FROM images WHERE (org, hash) > ($1, $2) \
                 ORDER BY org, hash LIMIT $3",
                vec![
                    Box::new(org.clone()),
                    Box::new(hash.clone()),
                    Box::new(ALL_IMAGES_BATCH),
                ],
            )?,
        };
        self.done = (rows.len() as i64) < ALL_IMAGES_BATCH;
        for row in &rows {
            self.batch.push_back(from_row("images", row, 0)?);
        }
        if let Some(last) = self.batch.back() {
            self.after = Some((last.organization.clone(), last.hash.clone()));
        }
        Ok(())
    }
}

impl Iterator for AllImages<'_> {
    type Item = Result<ImageRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.batch.is_empty() && !self.done {
            if let Err(e) = self.fetch() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.batch.pop_front().map(Ok)
    }
}

impl PgStore {
    /// Removes an image record for good, with `expired_before`: only if it is still
    /// soft-deleted and was deleted before that time ([`ImageRecords::remove_expired_image`]).
    fn remove_image_where(
        &self,
        org: &str,
        hash: &str,
        expired_before: Option<i64>,
    ) -> Result<Option<String>> {
        let org = org.to_string();
        let hash = hash.to_string();
        let edge = self.edge_on.load(std::sync::atomic::Ordering::SeqCst);
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            // The blob is known only from the row; its lock comes before the row's removal.
            let Some(row) = tx
                .query_opt(
                    "SELECT blob FROM images WHERE org = $1 AND hash = $2",
                    &[&org, &hash],
                )
                .await?
            else {
                return Ok(None);
            };
            let blob: String = row.try_get(0)?;
            lock_blob(&tx, &blob).await?;
            let Some(row) = tx
                .query_opt(
                    "DELETE FROM images WHERE org = $1 AND hash = $2 \
                     AND ($3::bigint IS NULL OR (deleted AND deleted_at < $3)) RETURNING record",
                    &[&org, &hash, &expired_before],
                )
                .await?
            else {
                return Ok(None);
            };
            let rec: ImageRecord = from_row("images", &row, 0)?;
            index_record(&tx, &rec, false).await?;
            if !rec.deleted {
                adjust_org_blob(&tx, &rec, -1).await?;
            }
            let referred: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM images WHERE blob = $1)",
                    &[&rec.blob],
                )
                .await?
                .try_get(0)?;
            // An alias never names an image that is gone for good.
            delete_aliases_of_tx(&tx, &org, &hash, edge).await?;
            bump_generation(&tx).await?;
            tx.commit().await?;
            Ok((!referred).then_some(rec.blob))
        })
    }
}
