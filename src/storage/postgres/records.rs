//! What spans every record ([`crate::storage::Records`]): durability, readiness, the
//! collector's and the renderer's positions in `meta`, what the records hold, clearing them,
//! and the verifier of the indexes and counters kept beside the records.

use super::{from_row, to_u64, PgStore};
use crate::model::image::ImageRecord;
use crate::storage::index::{org_prefix, record_keys};
use crate::storage::{Records, RecordsLock, Result};
use futures_util::future::BoxFuture;
use std::collections::HashMap;

/// Images read per page by the verifier.
const VERIFY_PAGE: i64 = 256;

/// Every table of records (all but `schema_version`, `generation` and `meta`), for
/// [`PgStore::clear`].
const TABLES: &str = "orgs, org_usage, day_stats, users, api_keys, memberships, stacks, images, \
    image_index, image_counts, aliases, alias_paths, edge_jobs, renders, render_stacks, \
    edge_restore";

/// What spans every record: the inherent methods of `mod.rs` (shared with its tests), and the
/// rest here.
impl Records for PgStore {
    fn generation(&self) -> Result<u64> {
        PgStore::generation(self)
    }
    fn blob_removal_lock(&self) -> Result<RecordsLock<'_>> {
        PgStore::blob_removal_lock(self)
    }
    fn exclusive(&self, name: &str) -> Result<Option<RecordsLock<'_>>> {
        PgStore::exclusive(self, name)
    }
    fn schema_version(&self) -> Result<Option<u32>> {
        PgStore::schema_version(self)
    }

    /// Every transaction is durable once committed (PostgreSQL's write-ahead log, with
    /// `synchronous_commit` on as by default): there is nothing left to flush.
    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// As [`Records::flush`]: committed is durable.
    fn flush_blocking(&self) -> Result<()> {
        Ok(())
    }

    /// The database answers (one `SELECT 1`); the free space of the bytes is theirs to probe.
    fn probe_ready(&self) -> Result<()> {
        self.query("SELECT 1", Vec::new())?;
        Ok(())
    }

    /// Where the collector's rolling sweeps stand (renders after this key; the next shard).
    fn sweep_position(&self) -> Result<(Option<Vec<u8>>, u8)> {
        let renders = self.meta_get("gc_render_sweep")?;
        let shard = self
            .meta_get("gc_blob_sweep")?
            .and_then(|v| v.first().copied())
            .unwrap_or(0);
        Ok((renders, shard))
    }

    fn set_sweep_position(&self, renders: Option<&[u8]>, shard: u8) -> Result<()> {
        match renders {
            Some(k) => self.meta_put("gc_render_sweep", k.to_vec())?,
            None => {
                self.execute("DELETE FROM meta WHERE key = 'gc_render_sweep'", Vec::new())?;
            }
        }
        self.meta_put("gc_blob_sweep", vec![shard])
    }

    /// The renderer generation the stored renders were made by (0 when never set).
    fn render_epoch(&self) -> Result<u32> {
        Ok(self
            .meta_get("render_epoch")?
            .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
            .map_or(0, u32::from_be_bytes))
    }

    fn set_render_epoch(&self, epoch: u32) -> Result<()> {
        self.meta_put("render_epoch", epoch.to_be_bytes().to_vec())
    }

    /// What the records hold, as counted phrases; renders from the organizations' counters.
    fn contents(&self) -> Result<Vec<String>> {
        let rows = self.query(
            "SELECT (SELECT count(*) FROM orgs), (SELECT count(*) FROM users), \
             (SELECT count(*) FROM api_keys), (SELECT count(*) FROM images), \
             (SELECT count(*) FROM stacks), (SELECT count(*) FROM aliases)",
            Vec::new(),
        )?;
        let names = [
            "organizations",
            "users",
            "keys",
            "images",
            "stacks",
            "aliases",
        ];
        let mut out = Vec::new();
        if let Some(row) = rows.first() {
            for (i, name) in names.iter().enumerate() {
                let n: Option<i64> = row.try_get(i)?;
                if let Some(n) = n.filter(|n| *n > 0) {
                    out.push(format!("{n} {name}"));
                }
            }
        }
        let renders = self.total_renders()?;
        if renders > 0 {
            out.push(format!("{renders} renders"));
        }
        Ok(out)
    }

    /// Removes every record in one transaction (the layout version and `meta` stay, as in
    /// the embedded store) and moves the change generation on: it never goes back, so nothing
    /// remembered before the clear is taken for true after it.
    fn clear(&self) -> Result<()> {
        self.run(|pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(&format!("TRUNCATE {TABLES}")).await?;
            super::bump_generation(&tx).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Recomputes the listing index entries and counters, the usage figures and the render
    /// counters from the records, and lists what disagrees. Images are read in pages of
    /// [`VERIFY_PAGE`] by primary key; each image's entries ([`record_keys`], stored without
    /// their organization and deleted-flag prefix) are looked up by primary key.
    fn verify_records(&self, each_image: &mut dyn FnMut(&ImageRecord)) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let mut counts: HashMap<(String, bool, Vec<u8>), u64> = HashMap::new();
        let mut expected_entries = 0u64;
        let mut after = (String::new(), String::new());
        loop {
            let rows = self.query(
                "SELECT record FROM images WHERE (org, hash) > ($1, $2) \
                 ORDER BY org, hash LIMIT $3",
                vec![
                    Box::new(after.0.clone()),
                    Box::new(after.1.clone()),
                    Box::new(VERIFY_PAGE),
                ],
            )?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let rec: ImageRecord = from_row("images", row, 0)?;
                each_image(&rec);
                let prefix = org_prefix(&rec.organization, rec.deleted).len();
                let (entries, counters) = record_keys(&rec);
                let entries: Vec<Vec<u8>> = entries
                    .iter()
                    .map(|k| k.get(prefix..).unwrap_or_default().to_vec())
                    .collect();
                expected_entries += entries.len() as u64;
                let found = self.query(
                    "SELECT count(*) FROM image_index \
                     WHERE org = $1 AND deleted = $2 AND entry = ANY($3)",
                    vec![
                        Box::new(rec.organization.clone()),
                        Box::new(rec.deleted),
                        Box::new(entries.clone()),
                    ],
                )?;
                let found: i64 = found
                    .first()
                    .map(|r| r.try_get(0))
                    .transpose()?
                    .unwrap_or(0);
                if to_u64(found) != entries.len() as u64 {
                    problems.push(format!(
                        "image {}/{} has {found} of its {} listing index entries",
                        rec.organization,
                        rec.hash,
                        entries.len()
                    ));
                }
                for k in counters {
                    let key = k.get(prefix..).unwrap_or_default().to_vec();
                    *counts
                        .entry((rec.organization.clone(), rec.deleted, key))
                        .or_insert(0) += 1;
                }
                after = (rec.organization.clone(), rec.hash.clone());
            }
        }
        let stored = self.query("SELECT count(*) FROM image_index", Vec::new())?;
        let stored: i64 = stored
            .first()
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
        if to_u64(stored) != expected_entries {
            problems.push(format!(
                "the listing index has {stored} entries for {expected_entries} expected"
            ));
        }
        self.verify_counts(counts, &mut problems)?;
        self.verify_usage(&mut problems)?;
        Ok(problems)
    }
}

impl PgStore {
    fn meta_get(&self, key: &'static str) -> Result<Option<Vec<u8>>> {
        let rows = self.query("SELECT value FROM meta WHERE key = $1", vec![Box::new(key)])?;
        rows.first().map(|r| Ok(r.try_get(0)?)).transpose()
    }

    fn meta_put(&self, key: &'static str, value: Vec<u8>) -> Result<()> {
        self.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            vec![Box::new(key), Box::new(value)],
        )?;
        Ok(())
    }
    /// Compares the stored listing counters with those counted, a page at a time.
    fn verify_counts(
        &self,
        mut counted: HashMap<(String, bool, Vec<u8>), u64>,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let mut after: (String, bool, Vec<u8>) = (String::new(), false, Vec::new());
        loop {
            let rows = self.query(
                "SELECT org, deleted, key, n FROM image_counts \
                 WHERE (org, deleted, key) > ($1, $2, $3) ORDER BY org, deleted, key LIMIT $4",
                vec![
                    Box::new(after.0.clone()),
                    Box::new(after.1),
                    Box::new(after.2.clone()),
                    Box::new(VERIFY_PAGE),
                ],
            )?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let id: (String, bool, Vec<u8>) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                let stored = to_u64(row.try_get(3)?);
                let expected = counted.remove(&id).unwrap_or(0);
                if stored != expected {
                    problems.push(format!(
                        "listing counter {}/{}: {stored} stored, {expected} counted",
                        id.0,
                        String::from_utf8_lossy(&id.2).replace('\0', "/")
                    ));
                }
                after = id;
            }
        }
        for (org, _, key) in counted.keys() {
            problems.push(format!(
                "listing counter {org}/{} is missing",
                String::from_utf8_lossy(key).replace('\0', "/")
            ));
        }
        Ok(())
    }

    /// Recomputes every organization's files, space, renders and mezzanines in the database
    /// (grouped by its indexes), and compares them with the stored figures. The render store's
    /// totals are the sums of these.
    fn verify_usage(&self, problems: &mut Vec<String>) -> Result<()> {
        let rows = self.query(
            "WITH blobs AS (SELECT org, count(*) AS n, max((record->>'size')::bigint) AS size \
               FROM images WHERE NOT deleted GROUP BY org, blob), \
             files AS (SELECT org, sum(n)::bigint AS files, sum(size)::bigint AS space \
               FROM blobs GROUP BY org), \
             made AS (SELECT org, count(*) FILTER (WHERE NOT mezzanine) AS renders, \
               COALESCE(sum(size) FILTER (WHERE NOT mezzanine), 0)::bigint AS bytes, \
               count(*) FILTER (WHERE mezzanine) AS mezzanines, \
               COALESCE(sum(size) FILTER (WHERE mezzanine), 0)::bigint AS mezzanine_bytes \
               FROM renders GROUP BY org) \
             SELECT o.org, \
               COALESCE(u.number_of_files, 0), COALESCE(f.files, 0), \
               COALESCE(u.space_in_bytes, 0), COALESCE(f.space, 0), \
               COALESCE(u.renders, 0), COALESCE(m.renders, 0), \
               COALESCE(u.render_bytes, 0), COALESCE(m.bytes, 0), \
               COALESCE(u.mezzanines, 0), COALESCE(m.mezzanines, 0), \
               COALESCE(u.mezzanine_bytes, 0), COALESCE(m.mezzanine_bytes, 0) \
             FROM (SELECT org FROM org_usage UNION SELECT org FROM files \
                   UNION SELECT org FROM made) o \
             LEFT JOIN org_usage u ON u.org = o.org \
             LEFT JOIN files f ON f.org = o.org \
             LEFT JOIN made m ON m.org = o.org ORDER BY o.org",
            Vec::new(),
        )?;
        for row in &rows {
            let org: String = row.try_get(0)?;
            for (i, what) in [
                "files",
                "bytes",
                "renders",
                "render bytes",
                "mezzanines",
                "mezzanine bytes",
            ]
            .iter()
            .enumerate()
            {
                let stored: i64 = row.try_get(1 + 2 * i)?;
                let counted: i64 = row.try_get(2 + 2 * i)?;
                if stored != counted {
                    problems.push(format!(
                        "usage of {org}: {stored} {what} stored, {counted} counted"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use crate::storage::renders::RenderMeta;
    use crate::storage::{Accounts, Records, RenderRecords, ServedPath};

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn positions_contents_and_clear() {
        let Some(store) = testing::store("records_meta") else {
            return;
        };
        store.probe_ready().unwrap();
        store.flush_blocking().unwrap();
        assert_eq!(store.sweep_position().unwrap(), (None, 0));
        store.set_sweep_position(Some(&[1, 2, 3]), 7).unwrap();
        assert_eq!(store.sweep_position().unwrap(), (Some(vec![1, 2, 3]), 7));
        store.set_sweep_position(None, 8).unwrap();
        assert_eq!(store.sweep_position().unwrap(), (None, 8));
        assert_eq!(store.render_epoch().unwrap(), 0);
        store.set_render_epoch(3).unwrap();
        assert_eq!(store.render_epoch().unwrap(), 3);

        assert!(store.contents().unwrap().is_empty());
        store
            .put_org(
                &serde_json::from_value(serde_json::json!({
                    "id": "id-acme", "name": "acme", "display_name": "", "billing_email": "",
                    "created": "2024-01-01", "master_organization": "", "signing_keys": []
                }))
                .unwrap(),
            )
            .unwrap();
        let meta = RenderMeta {
            content_type: "image/png".into(),
            etag: "\"e\"".into(),
            organization: "acme".into(),
            image: "img".into(),
            stacks: Vec::new(),
        };
        let served = ServedPath {
            host: String::new(),
            path: "/p".into(),
        };
        store
            .restore_render(&[1; 32], &meta, b"abc", &[served])
            .unwrap();
        assert_eq!(store.contents().unwrap(), ["1 organizations", "1 renders"]);
        let generation = store.generation().unwrap();
        store.clear().unwrap();
        assert!(store.contents().unwrap().is_empty());
        assert_eq!(store.render_count(), 0);
        assert!(store.generation().unwrap() > generation);
        assert_eq!(store.render_epoch().unwrap(), 3, "meta stays");
    }

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn the_verifier_finds_missing_entries_counters_and_usage() {
        let Some(store) = testing::store("records_verify") else {
            return;
        };
        let record = serde_json::json!({
            "organization": "acme", "hash": "img", "binary_hash": "b".repeat(40),
            "blob": "c".repeat(64), "name": "a.jpg", "format": "jpg", "mimetype": "image/jpeg",
            "size": 10, "width": 1, "height": 1, "created": "2024-01-01T00:00:00+00:00",
            "created_ns": 1_700_000_000_000_000_000_i128, "deleted": false,
            "user_metadata": {}, "opaque": true, "animated": false
        });
        store
            .execute(
                "INSERT INTO images (org, hash, binary_hash, blob, deleted, record) \
                 VALUES ('acme', 'img', 'b', 'c', false, $1)",
                vec![Box::new(record)],
            )
            .unwrap();
        store
            .execute(
                "INSERT INTO org_usage (org, space_in_bytes, number_of_files, renders, \
                 render_bytes, mezzanines, mezzanine_bytes) VALUES ('acme', 0, 0, 2, 0, 0, 0)",
                Vec::new(),
            )
            .unwrap();
        let mut seen = Vec::new();
        let problems = store
            .verify_records(&mut |rec| seen.push(rec.hash.clone()))
            .unwrap();
        assert_eq!(seen, ["img"]);
        let all = problems.join("\n");
        assert!(all.contains("image acme/img has 0 of its"), "{all}");
        assert!(all.contains("listing counter acme/"), "{all}");
        assert!(
            all.contains("usage of acme: 0 files stored, 1 counted"),
            "{all}"
        );
        assert!(
            all.contains("usage of acme: 0 bytes stored, 10 counted"),
            "{all}"
        );
        assert!(
            all.contains("usage of acme: 2 renders stored, 0 counted"),
            "{all}"
        );
    }
}
