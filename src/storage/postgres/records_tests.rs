//! Image records and aliases in PostgreSQL on their own: what each change returns, the
//! counters and usage it keeps, the edge rows it queues and the generation it moves.

use super::{testing, to_u64, PgStore};
use crate::model::image::ImageRecord;
use crate::storage::fixtures::path;
use crate::storage::{
    Accounts, AliasPut, AliasRecords, ImageIndex, ImageRecords, Inserted, StoredAlias,
};
use std::sync::atomic::Ordering;

fn image(org: &str, hash: char, blob: char, size: u64) -> ImageRecord {
    serde_json::from_value(serde_json::json!({
        "organization": org, "hash": hash.to_string().repeat(40),
        "binary_hash": blob.to_string().repeat(40), "blob": blob.to_string().repeat(64),
        "name": "a.jpg", "format": "jpg", "mimetype": "image/jpeg", "size": size, "width": 1,
        "height": 1, "created": "2024-01-01T00:00:00+00:00", "created_ns": 1_i128,
        "deleted": false, "user_metadata": {"b": 1, "a": "x"}, "opaque": true, "animated": false
    }))
    .unwrap()
}

fn alias(name: &str, hash: char) -> StoredAlias {
    StoredAlias {
        organization: "acme".into(),
        alias: name.into(),
        hash: hash.to_string().repeat(40),
        created: "2024-01-01T00:00:00+00:00".into(),
    }
}

/// The paths queued in `edge_jobs`, oldest first.
fn queued(store: &PgStore) -> Vec<String> {
    store
        .query("SELECT job FROM edge_jobs ORDER BY due_ms, id", Vec::new())
        .unwrap()
        .iter()
        .map(|r| {
            let job: crate::storage::EdgeJob = super::from_row("edge_jobs", r, 0).unwrap();
            job.path
        })
        .collect()
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn inserting_twice_returns_the_record_and_keeps_it_as_written() {
    let Some(store) = testing::store("img_insert") else {
        return;
    };
    let rec = image("acme", 'a', 'b', 10);
    assert!(matches!(
        store.insert_image(&rec).unwrap(),
        Inserted::Created
    ));
    let Inserted::Exists(found) = store.insert_image(&rec).unwrap() else {
        panic!("inserted twice");
    };
    assert_eq!(*found, rec);
    let read = store.get_image("acme", &rec.hash).unwrap().unwrap();
    let keys: Vec<&String> = read.user_metadata.keys().collect();
    assert_eq!(keys, ["b", "a"], "user metadata keeps its order");
    assert_eq!(store.image_count("acme", false).unwrap(), 1);
    assert_eq!(store.blob_refs(&rec.blob).unwrap(), 1);
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn billable_space_counts_a_blob_once_per_organization_while_a_live_image_refers_to_it() {
    let Some(store) = testing::store("img_usage") else {
        return;
    };
    let (a, d) = (image("acme", 'a', 'b', 100), image("acme", 'd', 'b', 100));
    let other = image("acme", 'e', 'c', 7);
    for rec in [&a, &d, &other] {
        store.insert_image(rec).unwrap();
    }
    let usage = store.org_usage("acme").unwrap();
    assert_eq!((usage.space_in_bytes, usage.number_of_files), (107, 3));

    let mut gone = a.clone();
    gone.deleted = true;
    gone.deleted_at = Some(1000);
    assert!(store.update_image(&gone).unwrap());
    let usage = store.org_usage("acme").unwrap();
    assert_eq!((usage.space_in_bytes, usage.number_of_files), (107, 2));
    assert_eq!(store.image_count("acme", true).unwrap(), 1);
    assert_eq!(store.image_count("acme", false).unwrap(), 2);

    assert_eq!(
        store.remove_image("acme", &d.hash).unwrap(),
        None,
        "a is left"
    );
    let usage = store.org_usage("acme").unwrap();
    assert_eq!((usage.space_in_bytes, usage.number_of_files), (7, 1));
    let today = store.day_stats("acme").unwrap();
    assert_eq!(today.last().map(|(_, s)| s.space_in_bytes), Some(7));

    // The same blob in another organization keeps the bytes until its last record goes.
    store.insert_image(&image("beta", 'a', 'b', 100)).unwrap();
    assert_eq!(store.remove_image("acme", &a.hash).unwrap(), None);
    assert_eq!(
        store.remove_image("beta", &a.hash).unwrap(),
        Some(a.blob.clone())
    );
    assert_eq!(store.remove_image("beta", &a.hash).unwrap(), None);
    assert_eq!(store.blob_refs(&a.blob).unwrap(), 0);
    assert!(!store.update_image(&a).unwrap(), "no record to update");
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn images_of_one_blob_written_at_once_from_several_connections_count_it_once() {
    let Some(store) = testing::store("img_concurrent") else {
        return;
    };
    let store = std::sync::Arc::new(store);
    let hashes = ['a', 'c', 'd', 'e', 'f', '1', '2', '3'];
    let blob = "b".repeat(64);
    // Races are rare per round: many rounds of writers that start together.
    for round in 0..20 {
        let start = std::sync::Arc::new(std::sync::Barrier::new(hashes.len()));
        let writers: Vec<_> = hashes
            .iter()
            .map(|&h| {
                let (store, start) = (store.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for org in ["acme", "beta"] {
                        store.insert_image(&image(org, h, 'b', 100)).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        for org in ["acme", "beta"] {
            let usage = store.org_usage(org).unwrap();
            assert_eq!(
                (usage.space_in_bytes, usage.number_of_files),
                (100, 8),
                "round {round}"
            );
        }
        let start = std::sync::Arc::new(std::sync::Barrier::new(hashes.len()));
        let removers: Vec<_> = hashes
            .iter()
            .map(|&h| {
                let (store, start) = (store.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    ["acme", "beta"]
                        .iter()
                        .filter_map(|org| {
                            store.remove_image(org, &h.to_string().repeat(40)).unwrap()
                        })
                        .count()
                })
            })
            .collect();
        let freed: usize = removers.into_iter().map(|r| r.join().unwrap()).sum();
        assert_eq!(freed, 1, "round {round}: exactly one removal frees {blob}");
        for org in ["acme", "beta"] {
            assert_eq!(
                store.org_usage(org).unwrap().space_in_bytes,
                0,
                "round {round}"
            );
        }
    }
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn removing_the_last_two_records_of_a_blob_at_once_frees_it_exactly_once() {
    let Some(store) = testing::store("img_last_refs") else {
        return;
    };
    let store = std::sync::Arc::new(store);
    let blob = "b".repeat(64);
    for round in 0..50 {
        for org in ["acme", "beta"] {
            store.insert_image(&image(org, 'a', 'b', 100)).unwrap();
        }
        let start = std::sync::Arc::new(std::sync::Barrier::new(2));
        let removers: Vec<_> = ["acme", "beta"]
            .into_iter()
            .map(|org| {
                let (store, start) = (store.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    store.remove_image(org, &"a".repeat(40)).unwrap()
                })
            })
            .collect();
        let freed: Vec<String> = removers
            .into_iter()
            .filter_map(|r| r.join().unwrap())
            .collect();
        assert_eq!(freed, std::slice::from_ref(&blob), "round {round}");
    }
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn expired_images_are_the_deleted_ones_past_the_cutoff() {
    let Some(store) = testing::store("img_expired") else {
        return;
    };
    for (hash, at) in [('a', Some(100)), ('b', Some(300)), ('c', None)] {
        let mut rec = image("acme", hash, hash, 1);
        rec.deleted = at.is_some();
        rec.deleted_at = at;
        store.insert_image(&rec).unwrap();
    }
    assert!(store.expired_images(100, 10).unwrap().is_empty());
    let a = ("acme".to_string(), "a".repeat(40));
    assert_eq!(
        store.expired_images(101, 10).unwrap(),
        std::slice::from_ref(&a)
    );
    assert_eq!(store.expired_images(1000, 1).unwrap(), [a]);
    assert_eq!(store.expired_images(1000, 10).unwrap().len(), 2);
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn a_short_hash_is_the_shortest_unique_prefix_of_at_least_six() {
    let Some(store) = testing::store("img_short") else {
        return;
    };
    let mut one = image("acme", 'a', 'b', 1);
    one.hash = format!("abcdef12{}", "0".repeat(32));
    let mut two = one.clone();
    two.hash = format!("abcdef13{}", "0".repeat(32));
    let lone = image("acme", 'f', 'b', 1);
    for rec in [&one, &two, &lone] {
        store.insert_image(rec).unwrap();
    }
    assert_eq!(store.short_hash("acme", &one.hash).unwrap(), "abcdef12");
    assert_eq!(store.short_hash("acme", &two.hash).unwrap(), "abcdef13");
    assert_eq!(store.short_hash("acme", &lone.hash).unwrap(), "ffffff");
    assert_eq!(
        store.hashes_with_prefix("acme", "abcdef1", 10).unwrap(),
        [one.hash.clone(), two.hash.clone()]
    );
    assert!(store
        .hashes_with_prefix("other", "abc", 10)
        .unwrap()
        .is_empty());
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn gc_removes_an_image_only_while_it_is_still_expired() {
    let Some(store) = testing::store("img_gc_expired") else {
        return;
    };
    let mut rec = image("acme", 'a', 'b', 1);
    store.insert_image(&rec).unwrap();
    // Live (brought back by an upload after GC picked it): kept.
    assert_eq!(
        store.remove_expired_image("acme", &rec.hash, 100).unwrap(),
        None
    );
    assert!(store.get_image("acme", &rec.hash).unwrap().is_some());
    rec.deleted = true;
    rec.deleted_at = Some(100);
    store.update_image(&rec).unwrap();
    // Deleted again, after the cutoff: kept.
    assert_eq!(
        store.remove_expired_image("acme", &rec.hash, 100).unwrap(),
        None
    );
    assert!(store.get_image("acme", &rec.hash).unwrap().is_some());
    // Deleted before the cutoff: removed, with its blob.
    assert_eq!(
        store.remove_expired_image("acme", &rec.hash, 101).unwrap(),
        Some("b".repeat(64))
    );
    assert!(store.get_image("acme", &rec.hash).unwrap().is_none());
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn every_image_and_alias_change_but_a_new_image_moves_the_generation() {
    let Some(store) = testing::store("img_generation") else {
        return;
    };
    let rec = image("acme", 'a', 'b', 1);
    let before = store.generation().unwrap();
    store.insert_image(&rec).unwrap();
    store.insert_image(&image("acme", 'd', 'b', 1)).unwrap();
    // A new image moves it only when another one shares its first six characters, the
    // shortest prefix a URL may name an image by.
    let mut near = image("acme", 'a', 'b', 1);
    near.hash = format!("aaaaab{}", "c".repeat(34));
    store.insert_image(&near).unwrap();
    assert_eq!(store.generation().unwrap(), before, "insert_image moved it");
    let mut last = before;
    let mut moved = |what: &str| {
        let now = store.generation().unwrap();
        assert!(now > last, "{what} left the generation at {now}");
        last = now;
    };
    let mut shared = image("acme", 'a', 'b', 1);
    shared.hash = format!("aaaaaa{}", "c".repeat(34));
    store.insert_image(&shared).unwrap();
    moved("insert_image of an image sharing six characters");
    store.update_image(&rec).unwrap();
    moved("update_image");
    store.put_alias(&alias("hero", 'a'), false).unwrap();
    moved("create alias");
    store.put_alias(&alias("hero", 'd'), true).unwrap();
    moved("overwrite alias");
    store.delete_alias("acme", "hero").unwrap();
    moved("delete alias");
    store.put_alias(&alias("hero", 'd'), false).unwrap();
    store.delete_aliases_of("acme", &"d".repeat(40)).unwrap();
    moved("removal with its image");
    store.remove_image("acme", &rec.hash).unwrap();
    moved("remove_image");
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn an_alias_needs_its_image_and_an_overwrite_to_change() {
    let Some(store) = testing::store("alias_put") else {
        return;
    };
    assert_eq!(
        store.put_alias(&alias("hero", 'a'), false).unwrap(),
        AliasPut::NoImage
    );
    store.insert_image(&image("acme", 'a', 'b', 1)).unwrap();
    store.insert_image(&image("acme", 'd', 'b', 1)).unwrap();
    assert_eq!(
        store.put_alias(&alias("hero", 'a'), false).unwrap(),
        AliasPut::Created
    );
    assert!(matches!(
        store.put_alias(&alias("hero", 'd'), false).unwrap(),
        AliasPut::Exists(_)
    ));
    let mut later = alias("hero", 'd');
    later.created = "2025-01-01T00:00:00+00:00".into();
    assert!(matches!(
        store.put_alias(&later, true).unwrap(),
        AliasPut::Replaced { .. }
    ));
    let got = store.get_alias("acme", "hero").unwrap().unwrap();
    assert_eq!(got.hash, "d".repeat(40));
    assert_eq!(
        got.created, "2024-01-01T00:00:00+00:00",
        "creation time kept"
    );
    store.put_alias(&alias("Zed", 'a'), false).unwrap();
    let names: Vec<String> = store
        .list_aliases("acme")
        .unwrap()
        .into_iter()
        .map(|a| a.alias)
        .collect();
    assert_eq!(names, ["Zed", "hero"], "byte order, as the embedded store");
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn re_pointing_or_deleting_an_alias_queues_and_forgets_its_served_paths() {
    let Some(store) = testing::store("alias_paths") else {
        return;
    };
    store.edge_on.store(true, Ordering::SeqCst);
    store.insert_image(&image("acme", 'a', 'b', 1)).unwrap();
    store.insert_image(&image("acme", 'd', 'b', 1)).unwrap();
    store.put_alias(&alias("hero", 'a'), false).unwrap();
    for _ in 0..2 {
        store.note_alias_path("acme", "hero", &path("/a")).unwrap();
    }
    store.note_alias_path("acme", "hero", &path("/b")).unwrap();
    assert_eq!(
        store.alias_paths("acme", "hero").unwrap(),
        [path("/a"), path("/b")]
    );

    let AliasPut::Replaced { refreshed, .. } = store.put_alias(&alias("hero", 'd'), true).unwrap()
    else {
        panic!("not replaced");
    };
    assert_eq!(refreshed, [path("/a"), path("/b")]);
    assert_eq!(queued(&store), ["/a", "/b"]);
    assert!(store.alias_paths("acme", "hero").unwrap().is_empty());

    store.note_alias_path("acme", "hero", &path("/c")).unwrap();
    let (_, paths) = store.delete_alias("acme", "hero").unwrap().unwrap();
    assert_eq!(paths, [path("/c")]);
    assert_eq!(queued(&store), ["/a", "/b", "/c"]);
    store.note_alias_path("acme", "hero", &path("/d")).unwrap();
    assert!(
        store.alias_paths("acme", "hero").unwrap().is_empty(),
        "a deleted alias remembers nothing"
    );

    // Removing the image for good takes its aliases and queues their paths.
    store.put_alias(&alias("other", 'a'), false).unwrap();
    store.note_alias_path("acme", "other", &path("/e")).unwrap();
    store.remove_image("acme", &"a".repeat(40)).unwrap();
    assert_eq!(store.get_alias("acme", "other").unwrap(), None);
    assert_eq!(queued(&store), ["/a", "/b", "/c", "/e"]);

    // With the edge off, paths are forgotten and nothing is queued.
    store.edge_on.store(false, Ordering::SeqCst);
    store.put_alias(&alias("off", 'd'), false).unwrap();
    store.note_alias_path("acme", "off", &path("/f")).unwrap();
    let (_, paths) = store.delete_alias("acme", "off").unwrap().unwrap();
    assert!(paths.is_empty());
    assert_eq!(queued(&store).len(), 4);
    let rows = store
        .query("SELECT count(*) FROM alias_paths", Vec::new())
        .unwrap();
    assert_eq!(to_u64(rows[0].get(0)), 0);
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn served_paths_of_an_alias_are_bounded() {
    let Some(store) = testing::store("alias_bound") else {
        return;
    };
    store.insert_image(&image("acme", 'a', 'b', 1)).unwrap();
    store.put_alias(&alias("hero", 'a'), false).unwrap();
    let max = crate::storage::aliases::MAX_PATHS_PER_ALIAS;
    for i in 0..max + 5 {
        store
            .note_alias_path("acme", "hero", &path(&format!("/{i}")))
            .unwrap();
    }
    let paths = store.alias_paths("acme", "hero").unwrap();
    assert_eq!(paths.len(), max);
    assert_eq!(paths.first(), Some(&path("/0")), "oldest first");
}
