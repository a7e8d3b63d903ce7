//! Stored renders: one row per render key with its header (`meta`), its body (`NULL` when the
//! body is larger than [`INLINE_MAX`] and lives in the [`crate::storage::Bytes`], as the embedded
//! store keeps it in a file), its size, its last access and the URL paths it was served under
//! (a bounded JSON array). Indexes on the table find renders by image and by recency;
//! `render_stacks` finds them by every stack of their chain and that stack's revision.
//!
//! Counters move in the transaction of the change: the organization's `renders`,
//! `render_bytes`, `mezzanines` and `mezzanine_bytes` in `org_usage`. The totals of the render
//! store are their sums over the organizations, read by an eviction pass or a gauge: a row
//! of totals would be updated by every render of every node, one lock they all queue for.
//! A removal moves the change generation and queues the render's served paths for the edge in
//! the same transaction.

use super::{bump_generation, edge, from_row, to_i64, to_json, to_u64, PgStore};
use crate::storage::check::RenderStatus;
use crate::storage::renders::{Purged, RenderMeta, StoredRender, INLINE_MAX, MAX_PATHS_PER_RENDER};
use crate::storage::{EdgeQueue, RenderRecords, Result, ServedPath};
use tokio_postgres::GenericClient;

/// One statement parameter.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Renders removed per transaction by a purge or an eviction.
const BATCH: i64 = 64;

/// Whether a render's organization, image (not deleted) and stack revisions still exist: the
/// rule of the embedded store (and of [`STORE_NEW`], which checks it while storing).
async fn live<C: GenericClient>(client: &C, meta: &RenderMeta) -> Result<bool> {
    let org = &meta.organization;
    if client
        .query_opt("SELECT 1 FROM orgs WHERE name = $1", &[org])
        .await?
        .is_none()
    {
        return Ok(false);
    }
    let image_sql = "SELECT deleted FROM images WHERE org = $1 AND hash = $2";
    match client.query_opt(image_sql, &[org, &meta.image]).await? {
        Some(row) if !row.try_get::<_, bool>(0)? => {}
        _ => return Ok(false),
    }
    if meta.stacks.is_empty() {
        return Ok(true);
    }
    let names: Vec<&str> = meta.stacks.iter().map(|s| s.name.as_str()).collect();
    let stacks_sql = "SELECT name, (record->>'revision')::bigint FROM stacks \
                      WHERE org = $1 AND name = ANY($2)";
    let found = client.query(stacks_sql, &[org, &names]).await?;
    for s in &meta.stacks {
        let current = found.iter().find_map(|row| {
            let name: &str = row.try_get(0).ok()?;
            (name == s.name).then(|| row.try_get::<_, i64>(1).ok())?
        });
        if current != Some(to_i64(s.revision)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Moves an organization's render store counters (`stored`: renders, their bytes, mezzanines,
/// their bytes; today's figures too), inside the change's transaction.
async fn count(tx: &deadpool_postgres::Transaction<'_>, org: &str, stored: [i64; 4]) -> Result<()> {
    super::images::adjust_usage(tx, org, 0, 0, stored).await
}

/// A new render in one statement, so one round trip and no transaction to hold open: the
/// rows `live` reads (organization, image not deleted, stack revisions) are locked `FOR
/// SHARE` first, the render is stored only when they hold, and when its row is new, its stack
/// entries and the counters of `count` move with it (organization usage, then today's figures,
/// in the order every other change takes them). A row another node stored
/// meanwhile is kept, with this URL added to its served paths (bounded).
const STORE_NEW: &str = "\
WITH o AS (SELECT 1 FROM orgs WHERE name = $2 FOR SHARE), \
i AS (SELECT 1 FROM images WHERE org = $2 AND hash = $3 AND NOT deleted FOR SHARE), \
st AS (SELECT 1 FROM stacks s \
    JOIN unnest($10::text[], $11::bigint[]) AS t(n, r) \
        ON s.name = t.n AND (s.record->>'revision')::bigint = t.r \
    WHERE s.org = $2 FOR SHARE OF s), \
live AS (SELECT EXISTS (SELECT 1 FROM o) AND EXISTS (SELECT 1 FROM i) \
    AND (SELECT count(*) FROM st) = cardinality($10::text[]) AS ok), \
ins AS (INSERT INTO renders (key, org, image, meta, body, size, accessed_ms, paths, mezzanine) \
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM live WHERE ok \
    ON CONFLICT (key) DO UPDATE SET \
    paths = CASE WHEN jsonb_array_length(renders.paths) < $12 \
        AND NOT renders.paths @> EXCLUDED.paths \
        THEN renders.paths || EXCLUDED.paths ELSE renders.paths END \
    RETURNING (xmax = 0) AS new), \
rs AS (INSERT INTO render_stacks (org, stack, revision, key) \
    SELECT $2, n, r, $1 FROM unnest($10::text[], $11::bigint[]) AS t(n, r) \
    WHERE EXISTS (SELECT 1 FROM ins WHERE new) ON CONFLICT DO NOTHING), \
u AS (INSERT INTO org_usage (org, space_in_bytes, number_of_files, renders, render_bytes, \
        mezzanines, mezzanine_bytes) \
    SELECT $2, 0, 0, greatest($13::bigint, 0), greatest($14::bigint, 0), \
        greatest($15::bigint, 0), greatest($16::bigint, 0) FROM ins WHERE new \
    ON CONFLICT (org) DO UPDATE SET \
        renders = greatest(org_usage.renders + $13, 0), \
        render_bytes = greatest(org_usage.render_bytes + $14, 0), \
        mezzanines = greatest(org_usage.mezzanines + $15, 0), \
        mezzanine_bytes = greatest(org_usage.mezzanine_bytes + $16, 0) \
    RETURNING space_in_bytes, number_of_files, renders, render_bytes), \
d AS (INSERT INTO day_stats (org, day, space_in_bytes, number_of_files, renders, render_bytes) \
    SELECT $2, $17, space_in_bytes, number_of_files, renders, render_bytes FROM u \
    ON CONFLICT (org, day) DO UPDATE SET space_in_bytes = EXCLUDED.space_in_bytes, \
        number_of_files = EXCLUDED.number_of_files, renders = EXCLUDED.renders, \
        render_bytes = EXCLUDED.render_bytes \
    RETURNING 1) \
SELECT (SELECT ok FROM live)";

impl PgStore {
    /// The renders and mezzanines of every organization: the render store's count.
    pub(super) fn total_renders(&self) -> Result<i64> {
        let sql = "SELECT COALESCE(sum(renders + mezzanines), 0)::bigint FROM org_usage";
        let rows = self.query(sql, Vec::new())?;
        Ok(rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
    }
}

/// Adds one purge's figures to another's.
fn merge(total: &mut Purged, more: Purged) {
    total.renders += more.renders;
    total.bytes += more.bytes;
    total.paths.extend(more.paths);
    total.mezzanines += more.mezzanines;
    total.mezzanine_bytes += more.mezzanine_bytes;
}

/// Which renders a purge walks.
enum Scope {
    Image {
        org: String,
        image: String,
    },
    Stack {
        org: String,
        stack: String,
        below: i64,
    },
    Org {
        org: String,
    },
}

/// Where a purge's walk stands: (image, revision, key) of the last render seen, as far as the
/// walk orders by them.
type Cursor = (String, i64, Vec<u8>);

/// A render as it is written: the row and its stack entries.
struct Row {
    key: Vec<u8>,
    org: String,
    image: String,
    meta: serde_json::Value,
    body: Option<Vec<u8>>,
    size: i64,
    paths: serde_json::Value,
    stacks: Vec<String>,
    revisions: Vec<i64>,
    /// A mezzanine rather than a render (counted apart).
    mezzanine: bool,
}

impl Row {
    /// Stores a new render with [`STORE_NEW`]; returns whether its organization, image and
    /// stack revisions still held (otherwise nothing was written).
    async fn store_new(&self, client: &deadpool_postgres::Object) -> Result<bool> {
        let max = i32::try_from(MAX_PATHS_PER_RENDER).unwrap_or(i32::MAX);
        let now = to_i64(crate::storage::edge::now_ms());
        let stored = self.stored();
        let day = crate::model::time::day_of(crate::model::time::now_unix());
        let mut params = self.columns(&now).to_vec();
        params.extend_from_slice(&[
            &self.stacks as Param,
            &self.revisions,
            &max,
            &stored[0],
            &stored[1],
            &stored[2],
            &stored[3],
            &day,
        ]);
        let statement = client.prepare_cached(STORE_NEW).await?;
        let row = client.query_one(&statement, &params).await?;
        Ok(row.try_get::<_, Option<bool>>(0)?.unwrap_or(false))
    }

    /// The row's columns in the order both statements name them, `now` as its access time.
    fn columns<'a>(&'a self, now: &'a i64) -> [Param<'a>; 9] {
        [
            &self.key,
            &self.org,
            &self.image,
            &self.meta,
            &self.body,
            &self.size,
            now,
            &self.paths,
            &self.mezzanine,
        ]
    }

    /// How the row moves the counters of `count`: renders, their bytes, mezzanines, theirs.
    fn stored(&self) -> [i64; 4] {
        if self.mezzanine {
            [0, 0, 1, self.size]
        } else {
            [1, self.size, 0, 0]
        }
    }

    fn new(key: &[u8], meta: &RenderMeta, bytes: &[u8], paths: &[ServedPath]) -> Result<Row> {
        Ok(Row {
            key: key.to_vec(),
            org: meta.organization.clone(),
            image: meta.image.clone(),
            meta: to_json(meta)?,
            body: (bytes.len() <= INLINE_MAX).then(|| bytes.to_vec()),
            size: to_i64(bytes.len() as u64),
            paths: to_json(&paths)?,
            stacks: meta.stacks.iter().map(|s| s.name.clone()).collect(),
            revisions: meta.stacks.iter().map(|s| to_i64(s.revision)).collect(),
            mezzanine: meta.is_mezzanine(),
        })
    }

    /// Writes the row over an existing one (a restore) with its stack entries and counters;
    /// returns whether the row is new.
    async fn write(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<bool> {
        let sql = "INSERT INTO renders (key, org, image, meta, body, size, accessed_ms, paths, \
                 mezzanine) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (key) DO UPDATE SET \
             meta = EXCLUDED.meta, body = EXCLUDED.body, size = EXCLUDED.size, \
             paths = EXCLUDED.paths RETURNING (xmax = 0)";
        let now = to_i64(crate::storage::edge::now_ms());
        let row = tx.query_opt(sql, &self.columns(&now)).await?;
        let inserted = match row {
            Some(r) => r.try_get::<_, bool>(0)?,
            None => false,
        };
        if inserted {
            tx.execute(
                "INSERT INTO render_stacks (org, stack, revision, key) \
                 SELECT $1, s, r, $4 FROM unnest($2::text[], $3::bigint[]) AS t(s, r) \
                 ON CONFLICT DO NOTHING",
                &[&self.org, &self.stacks, &self.revisions, &self.key],
            )
            .await?;
            count(tx, &self.org, self.stored()).await?;
        }
        Ok(inserted)
    }
}

impl PgStore {
    /// Stores a render (checked: only while it is still reachable, in the same transaction).
    /// A large body is written to the bytes first and removed again when the row is not kept.
    fn store_render(
        &self,
        key: &[u8],
        meta: &RenderMeta,
        bytes: bytes::Bytes,
        paths: &[ServedPath],
        restore: bool,
    ) -> Result<StoredRender> {
        let row = Row::new(key, meta, &bytes, paths)?;
        let external = row.body.is_none();
        let answer = StoredRender::with_body(meta.clone(), bytes);
        if external {
            let Some(bodies) = self.bodies.get() else {
                return Ok(answer);
            };
            bodies.put_render_body(key, answer.bytes())?;
        }
        let stored = self.run(move |pool| async move {
            let mut client = pool.get().await?;
            if !restore {
                return row.store_new(&client).await;
            }
            let tx = client.transaction().await?;
            row.write(&tx).await?;
            tx.commit().await?;
            Ok(true)
        });
        if external && !matches!(stored, Ok(true)) {
            if let Some(bodies) = self.bodies.get() {
                let _ = bodies.remove_render_body(key);
            }
        }
        stored?;
        Ok(answer)
    }

    /// Removes (or, in a dry run, reports) the renders of `keys` in one transaction, with their
    /// counters, the change generation and (with `edge`, when the edge is on) their served
    /// paths queued for the edge; large bodies go after the commit.
    fn purge_keys(&self, keys: Vec<Vec<u8>>, dry_run: bool, edge: bool) -> Result<Purged> {
        if keys.is_empty() {
            return Ok(Purged::default());
        }
        let queue = edge && self.edge_enabled();
        let (purged, external) = self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let sql = if dry_run {
                "SELECT key, org, size, body IS NULL, paths, mezzanine FROM renders \
                 WHERE key = ANY($1)"
            } else {
                // Rows are locked in key order: two purges over the same renders wait for
                // each other instead of deadlocking.
                "DELETE FROM renders WHERE key IN (SELECT key FROM renders \
                 WHERE key = ANY($1) ORDER BY key FOR UPDATE) \
                 RETURNING key, org, size, body IS NULL, paths, mezzanine"
            };
            let rows = tx.query(sql, &[&keys]).await?;
            let mut purged = Purged::default();
            let mut external = Vec::new();
            let mut by_org: Vec<(String, [i64; 4])> = Vec::new();
            for row in &rows {
                let org: String = row.try_get(1)?;
                let size: i64 = row.try_get(2)?;
                let paths: Vec<ServedPath> = from_row("renders", row, 4)?;
                if row.try_get::<_, bool>(3)? {
                    external.push(row.try_get::<_, Vec<u8>>(0)?);
                }
                let mezzanine: bool = row.try_get(5)?;
                let at = if mezzanine { 2 } else { 0 };
                let index = match by_org.iter().position(|(o, _)| *o == org) {
                    Some(i) => i,
                    None => {
                        by_org.push((org, [0; 4]));
                        by_org.len() - 1
                    }
                };
                by_org[index].1[at] -= 1;
                by_org[index].1[at + 1] -= size;
                if mezzanine {
                    purged.mezzanines += 1;
                    purged.mezzanine_bytes += to_u64(size);
                } else {
                    purged.renders += 1;
                    purged.bytes += to_u64(size);
                }
                purged.paths.extend(paths);
            }
            if !dry_run && !rows.is_empty() {
                for (org, stored) in &by_org {
                    count(&tx, org, *stored).await?;
                }
                if queue {
                    edge::enqueue(&tx, &purged.paths).await?;
                }
                bump_generation(&tx).await?;
                tx.commit().await?;
            }
            Ok((purged, external))
        })?;
        if !dry_run {
            if let Some(bodies) = self.bodies.get() {
                for key in &external {
                    // After the row: a body without one is never read, a row without its body
                    // is a miss.
                    let _ = bodies.remove_render_body(key);
                }
            }
        }
        Ok(purged)
    }

    /// The next page of a purge's walk after `cursor`.
    fn purge_page(&self, scope: &Scope, cursor: &Cursor) -> Result<Vec<Cursor>> {
        let (image, revision, key) = cursor.clone();
        let rows = match scope {
            Scope::Image { org, image } => self.query(
                "SELECT ''::text, 0::bigint, key FROM renders \
                 WHERE org = $1 AND image = $2 AND key > $3 ORDER BY key LIMIT $4",
                vec![
                    Box::new(org.clone()),
                    Box::new(image.clone()),
                    Box::new(key),
                    Box::new(BATCH),
                ],
            )?,
            Scope::Stack { org, stack, below } => self.query(
                "SELECT ''::text, revision, key FROM render_stacks \
                 WHERE org = $1 AND stack = $2 AND revision < $3 AND (revision, key) > ($4, $5) \
                 ORDER BY revision, key LIMIT $6",
                vec![
                    Box::new(org.clone()),
                    Box::new(stack.clone()),
                    Box::new(*below),
                    Box::new(revision),
                    Box::new(key),
                    Box::new(BATCH),
                ],
            )?,
            Scope::Org { org } => self.query(
                "SELECT image, 0::bigint, key FROM renders \
                 WHERE org = $1 AND (image, key) > ($2, $3) ORDER BY image, key LIMIT $4",
                vec![
                    Box::new(org.clone()),
                    Box::new(image),
                    Box::new(key),
                    Box::new(BATCH),
                ],
            )?,
        };
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Purges every render of `scope`, a page (one transaction) at a time.
    fn purge_scope(&self, scope: Scope, dry_run: bool) -> Result<Purged> {
        let mut total = Purged::default();
        let mut cursor: Cursor = (String::new(), i64::MIN, Vec::new());
        loop {
            let page = self.purge_page(&scope, &cursor)?;
            let Some(last) = page.last().cloned() else {
                return Ok(total);
            };
            let keys = page.into_iter().map(|(_, _, key)| key).collect();
            merge(&mut total, self.purge_keys(keys, dry_run, true)?);
            cursor = last;
        }
    }
}

impl PgStore {
    /// A stored render as the records hold it.
    fn read_render(&self, key: &[u8]) -> Result<Option<StoredRender>> {
        let rows = self.query(
            "SELECT meta, body FROM renders WHERE key = $1",
            vec![Box::new(key.to_vec())],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let meta: RenderMeta = from_row("renders", row, 0)?;
        let body = match row.try_get::<_, Option<Vec<u8>>>(1)? {
            Some(body) => body,
            None => match self.bodies.get() {
                Some(bodies) => match bodies.render_body(key)? {
                    Some(body) => body,
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        Ok(Some(StoredRender::with_body(meta, body.into())))
    }
}

impl RenderRecords for PgStore {
    /// From this node's cache while the generation it holds is trusted and the entry was read
    /// at it ([`super::cache`]); else from the records (kept in the cache when trusted).
    fn get_render(&self, key: &[u8]) -> Result<Option<StoredRender>> {
        // Taken before the read: an entry is tagged with a generation it was true at.
        let trusted = self.cache.as_ref().zip(self.watch.trusted());
        if let Some((cache, generation)) = trusted {
            if let Some(hit) = cache.get(key, generation) {
                return Ok(Some(hit));
            }
        }
        let found = self.read_render(key)?;
        if let (Some((cache, generation)), Some(render)) = (trusted, &found) {
            cache.put(key, generation, render);
        }
        Ok(found)
    }

    fn put_render(
        &self,
        key: &[u8],
        meta: &RenderMeta,
        bytes: bytes::Bytes,
        served: &ServedPath,
    ) -> Result<StoredRender> {
        let paths = if served.path.is_empty() {
            Vec::new()
        } else {
            vec![served.clone()]
        };
        self.store_render(key, meta, bytes, &paths, false)
    }

    fn note_served_path(&self, key: &[u8], served: &ServedPath) -> Result<()> {
        if served.path.is_empty() {
            return Ok(());
        }
        let one = to_json(&[served])?;
        let max = i32::try_from(MAX_PATHS_PER_RENDER).unwrap_or(i32::MAX);
        self.execute(
            "UPDATE renders SET paths = paths || $2 WHERE key = $1 \
             AND jsonb_array_length(paths) < $3 AND NOT paths @> $2",
            vec![Box::new(key.to_vec()), Box::new(one), Box::new(max)],
        )?;
        Ok(())
    }

    fn served_paths(&self, key: &[u8]) -> Result<Vec<ServedPath>> {
        let rows = self.query(
            "SELECT paths FROM renders WHERE key = $1",
            vec![Box::new(key.to_vec())],
        )?;
        match rows.first() {
            Some(row) => from_row("renders", row, 0),
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
        let bytes = bytes::Bytes::copy_from_slice(bytes);
        self.store_render(key, meta, bytes, paths, true).map(|_| ())
    }

    fn purge_image_renders(&self, org: &str, image: &str, dry_run: bool) -> Result<Purged> {
        let scope = Scope::Image {
            org: org.to_string(),
            image: image.to_string(),
        };
        self.purge_scope(scope, dry_run)
    }

    fn purge_stack_renders(
        &self,
        org: &str,
        stack: &str,
        below_revision: Option<u64>,
        dry_run: bool,
    ) -> Result<Purged> {
        let scope = Scope::Stack {
            org: org.to_string(),
            stack: stack.to_string(),
            below: below_revision.map_or(i64::MAX, to_i64),
        };
        self.purge_scope(scope, dry_run)
    }

    fn purge_org_renders(&self, org: &str, dry_run: bool) -> Result<Purged> {
        self.purge_scope(
            Scope::Org {
                org: org.to_string(),
            },
            dry_run,
        )
    }

    /// One statement for the whole batch; renders gone meanwhile are skipped, and an access
    /// time never moves back. Rows another transaction holds (a purge removing them) are
    /// skipped rather than waited for.
    fn touch_renders(&self, accessed: &[([u8; 32], u64)]) -> Result<()> {
        if accessed.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = accessed.iter().map(|(k, _)| k.to_vec()).collect();
        let times: Vec<i64> = accessed.iter().map(|(_, ms)| to_i64(*ms)).collect();
        self.execute(
            "UPDATE renders SET accessed_ms = t.ms \
             FROM unnest($1::bytea[], $2::bigint[]) AS t(key, ms) \
             WHERE renders.key = t.key AND renders.accessed_ms < t.ms AND renders.key IN \
             (SELECT key FROM renders WHERE key = ANY($1) FOR UPDATE SKIP LOCKED)",
            vec![Box::new(keys), Box::new(times)],
        )?;
        Ok(())
    }

    fn render_bytes(&self) -> Result<u64> {
        let sql = "SELECT COALESCE(sum(render_bytes + mezzanine_bytes), 0)::bigint FROM org_usage";
        let rows = self.query(sql, Vec::new())?;
        let bytes: i64 = rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
        Ok(to_u64(bytes))
    }

    /// From the organizations' counters; 0 when the database cannot be read (the figure is
    /// for gauges).
    fn render_count(&self) -> usize {
        self.total_renders()
            .map_or(0, |n| usize::try_from(n).unwrap_or(0))
    }

    /// Least recently used first, a batch (one transaction) at a time. Evicted renders are not
    /// sent to the edge: they come back byte-identical when next requested.
    fn evict_renders(&self, max_bytes: u64, limit: usize) -> Result<Purged> {
        let mut total = self.render_bytes()?;
        let mut evicted = Purged::default();
        while total > max_bytes && (evicted.entries() as usize) < limit {
            let room = (limit - evicted.entries() as usize).min(BATCH as usize);
            let rows = self.query(
                "SELECT key, size FROM renders ORDER BY accessed_ms, key LIMIT $1",
                vec![Box::new(to_i64(room as u64))],
            )?;
            let mut keys = Vec::new();
            let mut left = total;
            for row in &rows {
                if left <= max_bytes {
                    break;
                }
                keys.push(row.try_get::<_, Vec<u8>>(0)?);
                left = left.saturating_sub(to_u64(row.try_get(1)?));
            }
            let batch = self.purge_keys(keys, false, false)?;
            if batch.entries() == 0 {
                break;
            }
            total = total.saturating_sub(batch.store_bytes());
            merge(&mut evicted, batch);
        }
        Ok(evicted)
    }

    fn render_headers(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, RenderMeta)>> {
        let rows = self.query(
            "SELECT key, meta FROM renders WHERE key > $1 ORDER BY key LIMIT $2",
            vec![
                Box::new(after.unwrap_or_default().to_vec()),
                Box::new(to_i64(limit as u64)),
            ],
        )?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, from_row("renders", r, 1)?)))
            .collect()
    }

    fn render_status(&self, meta: &RenderMeta) -> Result<RenderStatus> {
        let meta = meta.clone();
        let live = self.run(move |pool| async move {
            let client = pool.get().await?;
            live(&**client, &meta).await
        })?;
        Ok(if live {
            RenderStatus::Live
        } else {
            RenderStatus::Orphan
        })
    }

    fn remove_render(&self, key: &[u8]) -> Result<u64> {
        Ok(self
            .purge_keys(vec![key.to_vec()], false, true)?
            .store_bytes())
    }

    fn external_render(&self, key: &[u8]) -> Result<bool> {
        let rows = self.query(
            "SELECT body IS NULL FROM renders WHERE key = $1",
            vec![Box::new(key.to_vec())],
        )?;
        Ok(match rows.first() {
            Some(row) => row.try_get(0)?,
            None => false,
        })
    }
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
