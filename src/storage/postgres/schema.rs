//! The database layout, as numbered migrations compiled into the binary. Opening a database
//! applies those it lacks, in one transaction under an advisory lock (nodes starting together
//! apply them once); a database whose version is newer than this binary's is refused.

use super::super::{Result, StorageError};
use deadpool_postgres::Pool;

/// Every migration, in order: `MIGRATIONS[i]` brings the layout from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, usage figures, stacks and the change generation.
    r#"
    CREATE TABLE meta (key text PRIMARY KEY, value bytea NOT NULL);
    CREATE TABLE generation (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        value bigint NOT NULL
    );
    INSERT INTO generation (one, value) VALUES (true, 0);
    CREATE TABLE orgs (name text PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE org_usage (
        org text PRIMARY KEY,
        space_in_bytes bigint NOT NULL DEFAULT 0,
        number_of_files bigint NOT NULL DEFAULT 0,
        renders bigint NOT NULL DEFAULT 0,
        render_bytes bigint NOT NULL DEFAULT 0,
        mezzanines bigint NOT NULL DEFAULT 0,
        mezzanine_bytes bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE day_stats (
        org text NOT NULL,
        day text NOT NULL,
        space_in_bytes bigint NOT NULL DEFAULT 0,
        number_of_files bigint NOT NULL DEFAULT 0,
        renders bigint NOT NULL DEFAULT 0,
        render_bytes bigint NOT NULL DEFAULT 0,
        bytes_downloaded bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (org, day)
    );
    CREATE TABLE users (id text PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE api_keys (
        digest text PRIMARY KEY,
        user_id text NOT NULL,
        key_id text NOT NULL,
        created text NOT NULL,
        record jsonb NOT NULL,
        UNIQUE (user_id, key_id)
    );
    CREATE TABLE memberships (
        org text NOT NULL,
        user_id text NOT NULL,
        record jsonb NOT NULL,
        PRIMARY KEY (org, user_id)
    );
    CREATE INDEX memberships_by_user ON memberships (user_id, org);
    CREATE TABLE stacks (
        org text NOT NULL,
        name text NOT NULL,
        record jsonb NOT NULL,
        PRIMARY KEY (org, name)
    );
    "#,
    // 2: images, their listing index and counters, aliases, the edge queue.
    //
    // Names and hashes compare in byte order (`COLLATE "C"`), as the embedded store keys
    // them: prefix ranges (short hashes) and listings of aliases agree on every backend.
    // Image records are `json`, which keeps the text as written (user metadata keeps its key
    // order, as the API answers it); nothing queries inside them, the listing index does.
    r#"
    CREATE TABLE images (
        org text COLLATE "C" NOT NULL,
        hash text COLLATE "C" NOT NULL,
        binary_hash text NOT NULL,
        blob text NOT NULL,
        deleted boolean NOT NULL,
        deleted_at bigint,
        record json NOT NULL,
        PRIMARY KEY (org, hash)
    );
    CREATE INDEX images_by_binary ON images (org, binary_hash);
    CREATE INDEX images_by_blob ON images (blob);
    CREATE INDEX images_live_by_blob ON images (org, blob) WHERE NOT deleted;
    CREATE INDEX images_expired ON images (deleted_at) WHERE deleted;
    CREATE TABLE image_index (
        org text NOT NULL,
        deleted boolean NOT NULL,
        entry bytea NOT NULL,
        PRIMARY KEY (org, deleted, entry)
    );
    CREATE TABLE image_counts (
        org text NOT NULL,
        deleted boolean NOT NULL,
        key bytea NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (org, deleted, key)
    );
    CREATE TABLE aliases (
        org text COLLATE "C" NOT NULL,
        alias text COLLATE "C" NOT NULL,
        hash text NOT NULL,
        record jsonb NOT NULL,
        PRIMARY KEY (org, alias)
    );
    CREATE INDEX aliases_by_image ON aliases (org, hash);
    CREATE TABLE alias_paths (
        org text NOT NULL,
        alias text NOT NULL,
        path jsonb NOT NULL,
        added bigserial,
        PRIMARY KEY (org, alias, path)
    );
    CREATE TABLE edge_jobs (id bigserial PRIMARY KEY, due_ms bigint NOT NULL, job jsonb NOT NULL);
    CREATE INDEX edge_jobs_due ON edge_jobs (due_ms, id);
    "#,
    // 3: stored renders with their indexes and counters, kept paths of deleted images.
    r#"
    CREATE TABLE renders (
        key bytea PRIMARY KEY,
        org text NOT NULL,
        image text NOT NULL,
        meta jsonb NOT NULL,
        body bytea,
        size bigint NOT NULL,
        accessed_ms bigint NOT NULL,
        paths jsonb NOT NULL,
        mezzanine boolean NOT NULL DEFAULT false
    );
    CREATE INDEX renders_by_image ON renders (org, image, key);
    CREATE INDEX renders_by_recency ON renders (accessed_ms, key);
    CREATE TABLE render_stacks (
        org text NOT NULL,
        stack text NOT NULL,
        revision bigint NOT NULL,
        key bytea NOT NULL REFERENCES renders (key) ON DELETE CASCADE,
        PRIMARY KEY (org, stack, revision, key)
    );
    CREATE INDEX render_stacks_by_key ON render_stacks (key);
    CREATE TABLE render_totals (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        renders bigint NOT NULL,
        bytes bigint NOT NULL
    );
    INSERT INTO render_totals (one, renders, bytes) VALUES (true, 0, 0);
    CREATE TABLE edge_restore (
        org text NOT NULL,
        hash text NOT NULL,
        paths jsonb NOT NULL,
        PRIMARY KEY (org, hash)
    );
    "#,
    // 4: the generation pushed to every node, and the nodes' leases (`super::lease`).
    //
    // Every change of the generation row announces the new value on a channel of this schema
    // when its transaction commits, whichever statement made it. A node's row says until when
    // (database clock) it may trust the generation it holds in memory, and the highest one it
    // has applied: a writer waits for every unexpired lease to reach its change.
    r#"
    CREATE FUNCTION generation_announce() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('darkroom_generation_' || md5(current_schema()), NEW.value::text);
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER generation_announce AFTER UPDATE ON generation
        FOR EACH ROW EXECUTE FUNCTION generation_announce();
    CREATE TABLE nodes (
        id text PRIMARY KEY,
        seen bigint NOT NULL,
        lease_until timestamptz NOT NULL
    );
    "#,
    // 5: vacuum the listing tables after inserts, not only after updates and deletes.
    //
    // Listings are index-only scans of `image_index`; until a vacuum sets the visibility map
    // of the pages an upload wrote, each entry costs a fetch of its table row too (a walk of
    // 4,096 entries: 104 ms before, 1.3 ms after, at 100,000 images). PostgreSQL's defaults
    // vacuum after inserts of a fifth of a table; these do after a hundredth.
    r#"
    ALTER TABLE image_index SET (
        autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_insert_threshold = 1000,
        autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
    ALTER TABLE images SET (
        autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_insert_threshold = 1000,
        autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
    ALTER TABLE image_counts SET (
        autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.01);
    "#,
    // 6: the render store's totals are summed from `org_usage` when read (an eviction pass, a
    // gauge), not kept in a row of their own: every render of every node updated that one row
    // and queued for its lock (the store statement alone, four clients: 4,500 a second with
    // it, 5,240 without).
    r#"
    DROP TABLE render_totals;
    "#,
];

/// The layout version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The advisory lock key under which migrations run (any fixed number; "darkroom").
const MIGRATION_LOCK: i64 = 0x6461_726b_726f_6f6d;

/// The version recorded in the database; `None` for a database Darkroom never wrote.
pub(super) async fn current_version<C: tokio_postgres::GenericClient>(
    client: &C,
) -> Result<Option<u32>> {
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables \
             WHERE schemaname = current_schema() AND tablename = 'schema_version')",
            &[],
        )
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt("SELECT version FROM schema_version", &[])
        .await?;
    Ok(match row {
        Some(r) => Some(u32::try_from(r.try_get::<_, i32>(0)?).unwrap_or(0)),
        None => None,
    })
}

/// Applies the migrations the database lacks; refuses a newer layout.
pub(super) async fn migrate(pool: Pool) -> Result<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        .await?;
    let found = current_version(&*tx).await?.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StorageError::Schema(format!(
            "the database was written by a newer Darkroom (layout version {found}, this one \
             knows {SCHEMA_VERSION}); upgrade Darkroom"
        )));
    }
    for migration in MIGRATIONS.iter().skip(found as usize) {
        tx.batch_execute(migration).await?;
    }
    let version = i32::try_from(SCHEMA_VERSION).unwrap_or(i32::MAX);
    tx.execute("DELETE FROM schema_version", &[]).await?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&version],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::SCHEMA_VERSION;

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn migrations_apply_once_and_a_newer_layout_is_refused() {
        let Some(store) = testing::store("schema") else {
            return;
        };
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        // The listing tables are vacuumed after inserts (layout 5).
        let options = store
            .query(
                "SELECT array_to_string(reloptions, ',') FROM pg_class \
                 WHERE oid = 'image_index'::regclass",
                Vec::new(),
            )
            .unwrap();
        let options: String = options[0].get(0);
        assert!(
            options.contains("autovacuum_vacuum_insert_scale_factor=0.01"),
            "{options}"
        );
        // Opening again applies nothing twice.
        store.run(super::migrate).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        store
            .execute(
                "UPDATE schema_version SET version = version + 1",
                Vec::new(),
            )
            .unwrap();
        let refused = store.run(super::migrate).map(|_| ()).unwrap_err();
        assert!(refused.to_string().contains("newer Darkroom"), "{refused}");
    }
}
