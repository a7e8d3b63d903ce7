//! Aliases in the embedded records ([`AliasRecords`] of [`SledStore`]): keyed `org \0 alias`
//! in the `aliases` tree, with the URL paths each alias was served under beside it
//! (`alias_paths`, bounded by [`MAX_PATHS_PER_ALIAS`]). Every change moves the change
//! generation; re-pointing or deleting one queues its served paths for the edge and forgets
//! them in the same sled transaction as the change.

use super::{decode, prefix, tx_decode, tx_result, SledStore, TxError};
use crate::storage::aliases::{AliasPut, AliasRecords, StoredAlias, MAX_PATHS_PER_ALIAS};
use crate::storage::records::*;
use crate::storage::{encode, key2, Result, ServedPath};
use sled::transaction::TransactionalTree;
use sled::Transactional;

/// Takes (removes) the served paths of an alias inside the transaction that changes it, so
/// that a path noted by a concurrent request is either queued with the rest or noted after
/// the change; returns those to queue (none when the edge is off).
fn tx_take_paths(
    alias_paths: &TransactionalTree,
    k: &[u8],
    edge: bool,
) -> std::result::Result<Vec<ServedPath>, TxError> {
    match alias_paths.remove(k)? {
        Some(v) if edge => tx_decode("alias_paths", &v),
        _ => Ok(Vec::new()),
    }
}

impl AliasRecords for SledStore {
    fn get_alias(&self, org: &str, alias: &str) -> Result<Option<StoredAlias>> {
        self.aliases
            .get(key2(org, alias))?
            .map(|v| decode("aliases", &v))
            .transpose()
    }

    fn put_alias(&self, alias: &StoredAlias, overwrite: bool) -> Result<AliasPut> {
        self.space.check()?;
        let k = key2(&alias.organization, &alias.alias);
        let image_key = key2(&alias.organization, &alias.hash);
        let edge = self.edge_enabled();
        let result = tx_result(
            (
                &self.aliases,
                &self.alias_paths,
                &self.images,
                &self.edge_queue,
            )
                .transaction(|(aliases, alias_paths, images, queue)| {
                    if images.get(&image_key)?.is_none() {
                        return Ok(AliasPut::NoImage);
                    }
                    let Some(old) = aliases.get(&k)? else {
                        aliases.insert(k.as_slice(), encode(alias))?;
                        alias_paths.remove(k.as_slice())?;
                        return Ok(AliasPut::Created);
                    };
                    let previous: StoredAlias = tx_decode("aliases", &old)?;
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
                    aliases.insert(k.as_slice(), encode(&kept))?;
                    let refreshed = tx_take_paths(alias_paths, &k, edge)?;
                    super::edge::tx_enqueue(queue, &refreshed)?;
                    Ok::<_, TxError>(AliasPut::Replaced {
                        previous,
                        refreshed,
                    })
                }),
        );
        self.changed();
        if matches!(&result, Ok(AliasPut::Replaced { refreshed, .. }) if !refreshed.is_empty()) {
            self.edge_notify.notify_one();
        }
        result
    }

    fn delete_alias(
        &self,
        org: &str,
        alias: &str,
    ) -> Result<Option<(StoredAlias, Vec<ServedPath>)>> {
        let k = key2(org, alias);
        let edge = self.edge_enabled();
        let result = tx_result(
            (&self.aliases, &self.alias_paths, &self.edge_queue).transaction(
                |(aliases, alias_paths, queue)| {
                    let Some(old) = aliases.remove(k.as_slice())? else {
                        return Ok(None);
                    };
                    let queued = tx_take_paths(alias_paths, &k, edge)?;
                    super::edge::tx_enqueue(queue, &queued)?;
                    Ok::<_, TxError>(Some((tx_decode("aliases", &old)?, queued)))
                },
            ),
        );
        self.changed();
        if matches!(&result, Ok(Some((_, paths))) if !paths.is_empty()) {
            self.edge_notify.notify_one();
        }
        result
    }

    fn delete_aliases_of(&self, org: &str, hash: &str) -> Result<usize> {
        let edge = self.edge_enabled();
        let mut removed = 0;
        for alias in self.list_aliases(org)? {
            if alias.hash != hash {
                continue;
            }
            // Checked again inside the removal: the alias may have been re-pointed meanwhile.
            let k = key2(org, &alias.alias);
            let gone = tx_result(
                (&self.aliases, &self.alias_paths, &self.edge_queue).transaction(
                    |(aliases, alias_paths, queue)| {
                        let Some(v) = aliases.get(k.as_slice())? else {
                            return Ok(false);
                        };
                        let current: StoredAlias = tx_decode("aliases", &v)?;
                        if current.hash != hash {
                            return Ok(false);
                        }
                        aliases.remove(k.as_slice())?;
                        let queued = tx_take_paths(alias_paths, &k, edge)?;
                        super::edge::tx_enqueue(queue, &queued)?;
                        Ok::<_, TxError>(true)
                    },
                ),
            )?;
            if gone {
                removed += 1;
            }
        }
        if removed > 0 {
            self.changed();
            self.edge_notify.notify_one();
        }
        Ok(removed)
    }

    fn list_aliases(&self, org: &str) -> Result<Vec<StoredAlias>> {
        self.aliases
            .scan_prefix(prefix(org))
            .values()
            .map(|v| decode("aliases", &v?))
            .collect()
    }

    fn note_alias_path(&self, org: &str, alias: &str, served: &ServedPath) -> Result<()> {
        let k = key2(org, alias);
        let known: Vec<ServedPath> = match self.alias_paths.get(&k)? {
            Some(v) => decode("alias_paths", &v)?,
            None => Vec::new(),
        };
        if known.len() >= MAX_PATHS_PER_ALIAS || known.contains(served) {
            return Ok(());
        }
        // Only while the alias exists, so that a path noted by a request that raced a delete
        // does not outlive the alias.
        tx_result(
            (&self.aliases, &self.alias_paths).transaction(|(aliases, alias_paths)| {
                if aliases.get(k.as_slice())?.is_none() {
                    return Ok(());
                }
                let mut next: Vec<ServedPath> = match alias_paths.get(k.as_slice())? {
                    Some(v) => tx_decode("alias_paths", &v)?,
                    None => Vec::new(),
                };
                if next.len() < MAX_PATHS_PER_ALIAS && !next.contains(served) {
                    next.push(served.clone());
                    alias_paths.insert(k.as_slice(), encode(&next))?;
                }
                Ok::<_, TxError>(())
            }),
        )
    }

    fn alias_paths(&self, org: &str, alias: &str) -> Result<Vec<ServedPath>> {
        match self.alias_paths.get(key2(org, alias))? {
            Some(v) => decode("alias_paths", &v),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::image::ImageRecord;
    use crate::storage::fixtures::path;

    fn image(hash: char) -> ImageRecord {
        ImageRecord {
            blob: "c".repeat(64),
            created: "2024-01-01T00:00:00+00:00".into(),
            created_ns: 1,
            ..crate::storage::fixtures::image(&hash.to_string().repeat(40), "")
        }
    }

    fn alias(name: &str, hash: char) -> StoredAlias {
        StoredAlias {
            organization: "acme".into(),
            alias: name.into(),
            hash: hash.to_string().repeat(40),
            created: "2024-01-01T00:00:00+00:00".into(),
        }
    }

    #[test]
    fn an_alias_needs_its_image_and_an_overwrite_to_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        assert_eq!(
            store.put_alias(&alias("hero", 'a'), false).unwrap(),
            AliasPut::NoImage
        );
        store.insert_image(&image('a')).unwrap();
        store.insert_image(&image('d')).unwrap();
        assert_eq!(
            store.put_alias(&alias("hero", 'a'), false).unwrap(),
            AliasPut::Created
        );
        assert!(matches!(
            store.put_alias(&alias("hero", 'd'), false).unwrap(),
            AliasPut::Exists(_)
        ));
        assert!(matches!(
            store.put_alias(&alias("hero", 'd'), true).unwrap(),
            AliasPut::Replaced { .. }
        ));
        let got = store.get_alias("acme", "hero").unwrap().unwrap();
        assert_eq!(got.hash, "d".repeat(40));
        assert_eq!(store.list_aliases("acme").unwrap(), vec![got]);
    }

    #[test]
    fn every_alias_change_moves_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        store.insert_image(&image('a')).unwrap();
        store.insert_image(&image('d')).unwrap();
        let mut last = store.generation().unwrap();
        let mut moved = |what: &str| {
            let now = store.generation().unwrap();
            assert!(now > last, "{what} left the generation at {now}");
            last = now;
        };
        store.put_alias(&alias("hero", 'a'), false).unwrap();
        moved("create");
        store.put_alias(&alias("hero", 'd'), true).unwrap();
        moved("overwrite");
        store.delete_alias("acme", "hero").unwrap();
        moved("delete");
        store.put_alias(&alias("hero", 'd'), false).unwrap();
        store.delete_aliases_of("acme", &"d".repeat(40)).unwrap();
        moved("removal with its image");
    }

    #[test]
    fn re_pointing_or_deleting_an_alias_queues_and_forgets_its_served_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        store.enable_edge(true);
        store.insert_image(&image('a')).unwrap();
        store.insert_image(&image('d')).unwrap();
        store.put_alias(&alias("hero", 'a'), false).unwrap();
        for _ in 0..2 {
            store.note_alias_path("acme", "hero", &path("/a")).unwrap();
        }
        store.note_alias_path("acme", "hero", &path("/b")).unwrap();
        assert_eq!(store.alias_paths("acme", "hero").unwrap().len(), 2);

        let AliasPut::Replaced { refreshed, .. } =
            store.put_alias(&alias("hero", 'd'), true).unwrap()
        else {
            panic!("not replaced");
        };
        assert_eq!(refreshed, [path("/a"), path("/b")]);
        assert_eq!(store.edge_pending(), 2);
        assert!(store.alias_paths("acme", "hero").unwrap().is_empty());

        store.note_alias_path("acme", "hero", &path("/c")).unwrap();
        let (_, paths) = store.delete_alias("acme", "hero").unwrap().unwrap();
        assert_eq!(paths, [path("/c")]);
        assert_eq!(store.edge_pending(), 3);
        store.note_alias_path("acme", "hero", &path("/d")).unwrap();
        assert!(
            store.alias_paths("acme", "hero").unwrap().is_empty(),
            "a deleted alias remembers nothing"
        );
    }

    #[test]
    fn removing_an_image_for_good_removes_its_aliases_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        store.insert_image(&image('a')).unwrap();
        store.insert_image(&image('d')).unwrap();
        store.put_alias(&alias("hero", 'a'), false).unwrap();
        store.put_alias(&alias("other", 'd'), false).unwrap();
        store.remove_image("acme", &"a".repeat(40)).unwrap();
        assert_eq!(store.get_alias("acme", "hero").unwrap(), None);
        assert!(store.get_alias("acme", "other").unwrap().is_some());
        let problems = store.check_records(&mut |_| {}).unwrap();
        assert!(
            !problems
                .iter()
                .any(|p| p.contains("points to") || p.contains("missing alias")),
            "{problems:?}"
        );
    }

    #[test]
    fn served_paths_of_an_alias_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        store.insert_image(&image('a')).unwrap();
        store.put_alias(&alias("hero", 'a'), false).unwrap();
        for i in 0..MAX_PATHS_PER_ALIAS + 5 {
            store
                .note_alias_path("acme", "hero", &path(&format!("/{i}")))
                .unwrap();
        }
        assert_eq!(
            store.alias_paths("acme", "hero").unwrap().len(),
            MAX_PATHS_PER_ALIAS
        );
    }
}
