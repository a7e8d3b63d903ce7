//! Aliases, one row per (organization, alias), and the URL paths each was served under, one
//! row per path in the order they were first seen (bounded like the embedded store's list).
//!
//! As in the embedded store, re-pointing or deleting an alias takes its served paths in the
//! same transaction, queues them for the edge when it is on ([`super::edge::enqueue`]) and moves
//! the change generation. Noting a path locks the alias row first, so a path noted by a request
//! that raced a deletion is either taken by the deletion or not noted at all.

use super::edge::enqueue;
use super::{bump_generation, from_row, to_json, PgStore};
use crate::storage::aliases::MAX_PATHS_PER_ALIAS;
use crate::storage::{AliasPut, AliasRecords, Result, ServedPath, StorageError, StoredAlias};
use std::sync::atomic::Ordering;
use tokio_postgres::Transaction;

/// Attempts of [`AliasRecords::put_alias`] to either create an alias or lock the one that
/// exists, while other writers create and delete it.
const MAX_TURNS: usize = 8;

/// Removes the served paths of aliases of an organization in the caller's transaction and
/// queues them for the edge when it is on; returns those queued, in the order first seen.
async fn take_paths(
    tx: &Transaction<'_>,
    org: &str,
    aliases: &[String],
    edge: bool,
) -> Result<Vec<ServedPath>> {
    let rows = tx
        .query(
            "DELETE FROM alias_paths WHERE org = $1 AND alias = ANY($2) RETURNING added, path",
            &[&org, &aliases],
        )
        .await?;
    if !edge {
        return Ok(Vec::new());
    }
    let mut taken = rows
        .iter()
        .map(|r| Ok((r.try_get::<_, i64>(0)?, from_row("alias_paths", r, 1)?)))
        .collect::<Result<Vec<(i64, ServedPath)>>>()?;
    taken.sort_by_key(|(added, _)| *added);
    let paths: Vec<ServedPath> = taken.into_iter().map(|(_, p)| p).collect();
    enqueue(tx, &paths).await?;
    Ok(paths)
}

/// Deletes every alias of an organization that points to `hash`, with its served paths (queued
/// for the edge when it is on), in the caller's transaction; returns how many.
pub(super) async fn delete_aliases_of_tx(
    tx: &Transaction<'_>,
    org: &str,
    hash: &str,
    edge: bool,
) -> Result<usize> {
    let removed: Vec<String> = tx
        .query(
            "DELETE FROM aliases WHERE org = $1 AND hash = $2 RETURNING alias",
            &[&org, &hash],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    if !removed.is_empty() {
        take_paths(tx, org, &removed, edge).await?;
    }
    Ok(removed.len())
}

impl PgStore {
    fn edge(&self) -> bool {
        self.edge_on.load(Ordering::SeqCst)
    }
}

impl AliasRecords for PgStore {
    fn get_alias(&self, org: &str, alias: &str) -> Result<Option<StoredAlias>> {
        let rows = self.query(
            "SELECT record FROM aliases WHERE org = $1 AND alias = $2",
            vec![Box::new(org.to_string()), Box::new(alias.to_string())],
        )?;
        rows.first().map(|r| from_row("aliases", r, 0)).transpose()
    }

    fn put_alias(&self, alias: &StoredAlias, overwrite: bool) -> Result<AliasPut> {
        let alias = alias.clone();
        let record = to_json(&alias)?;
        let edge = self.edge();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let (org, name) = (&alias.organization, &alias.alias);
            // The image row stays while this transaction runs: a removal for good waits, then
            // removes the alias made here with it.
            let image = tx
                .query_opt(
                    "SELECT 1 FROM images WHERE org = $1 AND hash = $2 FOR KEY SHARE",
                    &[org, &alias.hash],
                )
                .await?;
            if image.is_none() {
                return Ok(AliasPut::NoImage);
            }
            // An alias deleted between the insert and the read is created on the next turn.
            let mut existing = None;
            for _ in 0..MAX_TURNS {
                let created = tx
                    .execute(
                        "INSERT INTO aliases (org, alias, hash, record) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (org, alias) DO NOTHING",
                        &[org, name, &alias.hash, &record],
                    )
                    .await?;
                if created == 1 {
                    tx.execute(
                        "DELETE FROM alias_paths WHERE org = $1 AND alias = $2",
                        &[org, name],
                    )
                    .await?;
                    bump_generation(&tx).await?;
                    tx.commit().await?;
                    return Ok(AliasPut::Created);
                }
                existing = tx
                    .query_opt(
                        "SELECT record FROM aliases WHERE org = $1 AND alias = $2 FOR UPDATE",
                        &[org, name],
                    )
                    .await?;
                if existing.is_some() {
                    break;
                }
            }
            let row = existing.ok_or_else(|| {
                StorageError::Sql(format!("alias {name} kept changing while it was written"))
            })?;
            let previous: StoredAlias = from_row("aliases", &row, 0)?;
            if !overwrite {
                return Ok(AliasPut::Exists(previous));
            }
            if previous.hash == alias.hash {
                return Ok(AliasPut::Replaced {
                    previous,
                    refreshed: Vec::new(),
                });
            }
            let kept = StoredAlias {
                created: previous.created.clone(),
                ..alias.clone()
            };
            tx.execute(
                "UPDATE aliases SET hash = $3, record = $4 WHERE org = $1 AND alias = $2",
                &[org, name, &kept.hash, &to_json(&kept)?],
            )
            .await?;
            let refreshed = take_paths(&tx, org, std::slice::from_ref(name), edge).await?;
            bump_generation(&tx).await?;
            tx.commit().await?;
            Ok(AliasPut::Replaced {
                previous,
                refreshed,
            })
        })
    }

    fn delete_alias(
        &self,
        org: &str,
        alias: &str,
    ) -> Result<Option<(StoredAlias, Vec<ServedPath>)>> {
        let org = org.to_string();
        let alias = alias.to_string();
        let edge = self.edge();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    "DELETE FROM aliases WHERE org = $1 AND alias = $2 RETURNING record",
                    &[&org, &alias],
                )
                .await?
            else {
                return Ok(None);
            };
            let old: StoredAlias = from_row("aliases", &row, 0)?;
            let queued = take_paths(&tx, &org, std::slice::from_ref(&alias), edge).await?;
            bump_generation(&tx).await?;
            tx.commit().await?;
            Ok(Some((old, queued)))
        })
    }

    fn delete_aliases_of(&self, org: &str, hash: &str) -> Result<usize> {
        let org = org.to_string();
        let hash = hash.to_string();
        let edge = self.edge();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let removed = delete_aliases_of_tx(&tx, &org, &hash, edge).await?;
            if removed > 0 {
                bump_generation(&tx).await?;
            }
            tx.commit().await?;
            Ok(removed)
        })
    }

    fn list_aliases(&self, org: &str) -> Result<Vec<StoredAlias>> {
        self.query(
            "SELECT record FROM aliases WHERE org = $1 ORDER BY alias",
            vec![Box::new(org.to_string())],
        )?
        .iter()
        .map(|r| from_row("aliases", r, 0))
        .collect()
    }

    fn note_alias_path(&self, org: &str, alias: &str, served: &ServedPath) -> Result<()> {
        let known = self.alias_paths(org, alias)?;
        if known.len() >= MAX_PATHS_PER_ALIAS || known.contains(served) {
            return Ok(());
        }
        let org = org.to_string();
        let alias = alias.to_string();
        let path = to_json(served)?;
        let max = MAX_PATHS_PER_ALIAS as i64;
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            // Only while the alias exists; its lock orders this with a change that takes the
            // paths, and with other notes (the bound holds).
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM aliases WHERE org = $1 AND alias = $2 FOR UPDATE",
                    &[&org, &alias],
                )
                .await?;
            if exists.is_some() {
                tx.execute(
                    "INSERT INTO alias_paths (org, alias, path) SELECT $1, $2, $3 \
                     WHERE (SELECT count(*) FROM alias_paths WHERE org = $1 AND alias = $2) < $4 \
                     ON CONFLICT DO NOTHING",
                    &[&org, &alias, &path, &max],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn alias_paths(&self, org: &str, alias: &str) -> Result<Vec<ServedPath>> {
        self.query(
            "SELECT path FROM alias_paths WHERE org = $1 AND alias = $2 ORDER BY added",
            vec![Box::new(org.to_string()), Box::new(alias.to_string())],
        )?
        .iter()
        .map(|r| from_row("alias_paths", r, 0))
        .collect()
    }
}
