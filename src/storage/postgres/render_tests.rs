//! Stored renders against a real PostgreSQL.

use super::super::testing;
use super::*;
use crate::storage::fixtures::{meta, path};
use crate::storage::{Accounts, Bytes, FileBytes, StackRecords, StoredStack};
use std::sync::Arc;

fn stack(name: &str, revision: u64) -> StoredStack {
    StoredStack {
        organization: "acme".into(),
        name: name.into(),
        created: "2024-01-01".into(),
        revision,
        definition: Default::default(),
    }
}

/// An organization with images `img1` and `img2` and stacks `thumb` (revision 1), `big`
/// (3) and `base` (2).
fn fixture(test: &str) -> Option<PgStore> {
    let store = testing::store(test)?;
    store
        .put_org(
            &serde_json::from_value(serde_json::json!({
                "id": "id-acme", "name": "acme", "display_name": "", "billing_email": "",
                "created": "2024-01-01", "master_organization": "", "signing_keys": []
            }))
            .unwrap(),
        )
        .unwrap();
    for image in ["img1", "img2"] {
        store
            .execute(
                "INSERT INTO images (org, hash, binary_hash, blob, deleted, record) \
                 VALUES ('acme', $1, 'b', 'c', false, '{}')",
                vec![Box::new(image.to_string())],
            )
            .unwrap();
    }
    for (name, revision) in [("thumb", 1), ("big", 3), ("base", 2)] {
        store.put_stack(&stack(name, revision)).unwrap();
    }
    Some(store)
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn renders_are_found_and_purged_by_image_stack_and_organization() {
    let Some(store) = fixture("renders_purge") else {
        return;
    };
    store.enable_edge(true);
    let m1 = meta("img1", &[("thumb", 1)]);
    store
        .put_render(
            &[1; 32],
            &m1,
            bytes::Bytes::from_static(b"aaaa"),
            &path("/t/img1"),
        )
        .unwrap();
    let m2 = meta("img1", &[("big", 3), ("base", 2)]);
    store
        .put_render(
            &[2; 32],
            &m2,
            bytes::Bytes::from_static(b"bb"),
            &path("/b/img1"),
        )
        .unwrap();
    let m3 = meta("img2", &[("thumb", 1)]);
    store
        .put_render(
            &[3; 32],
            &m3,
            bytes::Bytes::from_static(b"c"),
            &path("/t/img2"),
        )
        .unwrap();
    // Another node storing the same render at once changes nothing.
    store
        .put_render(
            &[3; 32],
            &m3,
            bytes::Bytes::from_static(b"c"),
            &path("/t/img2"),
        )
        .unwrap();
    assert_eq!(store.render_count(), 3);
    assert_eq!(store.render_bytes().unwrap(), 7);
    assert_eq!(store.org_usage("acme").unwrap().renders, 3);
    assert_eq!(store.org_usage("acme").unwrap().render_bytes, 7);
    let hit = store.get_render(&[1; 32]).unwrap().unwrap();
    assert_eq!((hit.bytes(), &hit.meta), (&b"aaaa"[..], &m1));
    assert!(!store.external_render(&[1; 32]).unwrap());

    let dry = store.purge_image_renders("acme", "img1", true).unwrap();
    assert_eq!((dry.renders, dry.bytes), (2, 6));
    assert_eq!(store.render_count(), 3, "a dry run changes nothing");
    assert_eq!(store.edge_pending(), 0);

    // The current revision of thumb is 1: "below 2" takes img1's and img2's thumb renders
    // only when both are below.
    store.put_stack(&stack("thumb", 2)).unwrap();
    let generation = store.generation().unwrap();
    let old = store
        .purge_stack_renders("acme", "thumb", Some(2), false)
        .unwrap();
    assert_eq!(old.renders, 2);
    assert!(old.paths.contains(&path("/t/img1")));
    assert!(
        store.generation().unwrap() > generation,
        "a removal moves it"
    );
    assert_eq!(
        store.edge_pending(),
        2,
        "their paths are queued for the edge"
    );
    assert!(store.get_render(&[1; 32]).unwrap().is_none());

    let base = store
        .purge_stack_renders("acme", "base", None, false)
        .unwrap();
    assert_eq!(base.renders, 1, "found through the basestack");
    store
        .put_render(
            &[4; 32],
            &meta("img2", &[]),
            bytes::Bytes::from_static(b"dd"),
            &path("/d"),
        )
        .unwrap();
    let all = store.purge_org_renders("acme", false).unwrap();
    assert_eq!(all.renders, 1);
    assert_eq!(store.render_count(), 0);
    assert_eq!(store.render_bytes().unwrap(), 0);
    assert_eq!(store.org_usage("acme").unwrap().renders, 0);
    assert_eq!(store.org_usage("acme").unwrap().render_bytes, 0);
    let stack_rows = store
        .query("SELECT count(*) FROM render_stacks", Vec::new())
        .unwrap();
    assert_eq!(
        stack_rows[0].get::<_, i64>(0),
        0,
        "stack entries go with the render"
    );
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn a_render_that_raced_a_stack_change_or_an_image_delete_is_not_stored() {
    let Some(store) = fixture("renders_race") else {
        return;
    };
    let answer = store
        .put_render(
            &[1; 32],
            &meta("img1", &[("thumb", 0)]),
            bytes::Bytes::from_static(b"a"),
            &path("/a"),
        )
        .unwrap();
    assert_eq!(
        answer.bytes(),
        b"a",
        "the request that made it still gets it"
    );
    assert!(store.get_render(&[1; 32]).unwrap().is_none());
    assert_eq!(
        store.render_status(&meta("img1", &[("thumb", 0)])).unwrap(),
        RenderStatus::Orphan
    );
    assert_eq!(
        store.render_status(&meta("img1", &[("thumb", 1)])).unwrap(),
        RenderStatus::Live
    );
    store
        .execute(
            "UPDATE images SET deleted = true WHERE hash = 'img1'",
            Vec::new(),
        )
        .unwrap();
    store
        .put_render(
            &[2; 32],
            &meta("img1", &[("thumb", 1)]),
            bytes::Bytes::from_static(b"b"),
            &path("/b"),
        )
        .unwrap();
    store
        .put_render(
            &[3; 32],
            &meta("nope", &[]),
            bytes::Bytes::from_static(b"c"),
            &path("/c"),
        )
        .unwrap();
    assert!(store.get_render(&[2; 32]).unwrap().is_none());
    assert!(store.get_render(&[3; 32]).unwrap().is_none());
    assert_eq!(store.render_count(), 0);
    // A restore is not checked.
    store
        .restore_render(
            &[2; 32],
            &meta("img1", &[]),
            b"b",
            &[path("/x"), path("/y")],
        )
        .unwrap();
    assert_eq!(
        store.served_paths(&[2; 32]).unwrap(),
        [path("/x"), path("/y")]
    );
    assert_eq!(store.render_count(), 1);
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn a_large_render_lives_in_the_bytes_and_goes_with_its_row() {
    let Some(store) = fixture("renders_large") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = FileBytes::open(dir.path()).unwrap();
    store.keep_render_bodies_in(Arc::new(files.clone()));
    let big: Vec<u8> = (0..INLINE_MAX + 10).map(|i| (i % 251) as u8).collect();
    let key = [7u8; 32];
    store
        .put_render(&key, &meta("img1", &[]), big.clone().into(), &path("/big"))
        .unwrap();
    assert!(store.external_render(&key).unwrap());
    assert_eq!(files.render_body(&key).unwrap().unwrap(), big);
    let hit = store.get_render(&key).unwrap().unwrap();
    assert_eq!(hit.bytes(), big.as_slice());
    assert_eq!(store.render_bytes().unwrap(), big.len() as u64);
    // Not kept (the image is gone): its body does not linger.
    let raced = [8u8; 32];
    store
        .put_render(
            &raced,
            &meta("nope", &[]),
            big.clone().into(),
            &path("/raced"),
        )
        .unwrap();
    assert!(files.render_body(&raced).unwrap().is_none());
    let purged = store.purge_image_renders("acme", "img1", false).unwrap();
    assert_eq!((purged.renders, purged.bytes), (1, big.len() as u64));
    assert!(files.render_body(&key).unwrap().is_none());
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn eviction_goes_by_recency_and_headers_page_by_key() {
    let Some(store) = fixture("renders_evict") else {
        return;
    };
    for i in 1..=5u8 {
        store
            .put_render(
                &[i; 32],
                &meta("img1", &[]),
                bytes::Bytes::copy_from_slice(&[i; 10]),
                &path(&format!("/{i}")),
            )
            .unwrap();
    }
    let now = crate::storage::edge::now_ms();
    // 1 and 2 were served lately; 3, 4, 5 are the least recently used.
    store
        .touch_renders(&[
            ([1; 32], now + 10_000),
            ([2; 32], now + 20_000),
            ([9; 32], now),
        ])
        .unwrap();
    let evicted = store.evict_renders(25, 100).unwrap();
    assert_eq!((evicted.renders, evicted.bytes), (3, 30));
    assert!(evicted.paths.is_empty() || store.edge_pending() == 0);
    assert!(store.get_render(&[1; 32]).unwrap().is_some());
    assert!(store.get_render(&[2; 32]).unwrap().is_some());
    assert_eq!(store.render_count(), 2);
    // Bounded: at most `limit` per call.
    assert_eq!(store.evict_renders(0, 1).unwrap().renders, 1);
    assert!(
        store.get_render(&[2; 32]).unwrap().is_some(),
        "the newest stays"
    );

    for i in 10..15u8 {
        store
            .put_render(
                &[i; 32],
                &meta("img2", &[]),
                bytes::Bytes::from_static(b"x"),
                &path("/x"),
            )
            .unwrap();
    }
    let first = store.render_headers(None, 4).unwrap();
    let keys: Vec<u8> = first.iter().map(|(k, _)| k[0]).collect();
    assert_eq!(keys, [2, 10, 11, 12]);
    let rest = store.render_headers(Some(&first[3].0), 4).unwrap();
    let keys: Vec<u8> = rest.iter().map(|(k, _)| k[0]).collect();
    assert_eq!(keys, [13, 14]);
    assert_eq!(rest[0].1.image, "img2");
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn served_paths_are_recorded_once_and_bounded() {
    let Some(store) = fixture("renders_paths") else {
        return;
    };
    store
        .put_render(
            &[9; 32],
            &meta("img1", &[]),
            bytes::Bytes::from_static(b"x"),
            &path("/a"),
        )
        .unwrap();
    store.note_served_path(&[9; 32], &path("/a")).unwrap();
    store.note_served_path(&[9; 32], &path("/b")).unwrap();
    for i in 0..40 {
        store
            .note_served_path(&[9; 32], &path(&format!("/p{i}")))
            .unwrap();
    }
    let paths = store.served_paths(&[9; 32]).unwrap();
    assert_eq!(paths.len(), MAX_PATHS_PER_RENDER);
    assert_eq!(paths[..2], [path("/a"), path("/b")]);
    let purged = store.remove_render(&[9; 32]).unwrap();
    assert_eq!(purged, 1);
    assert!(store.served_paths(&[9; 32]).unwrap().is_empty());
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn two_nodes_storing_the_same_render_at_once_keep_it_once() {
    let Some(one) = fixture("renders_twice") else {
        return;
    };
    // A second node over the same schema.
    let url_schema = one
        .query("SELECT current_schema()", Vec::new())
        .unwrap()
        .first()
        .map(|r| r.get::<_, String>(0))
        .unwrap();
    let url = std::env::var("DATABASE_URL").unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let other = PgStore::open(
        &format!("{url}{sep}options=-csearch_path%3D{url_schema}"),
        4,
    )
    .unwrap();
    std::thread::scope(|s| {
        for store in [&one, &other, &one, &other] {
            s.spawn(move || {
                for i in 0..20u8 {
                    let m = meta("img1", &[("thumb", 1)]);
                    store
                        .put_render(
                            &[i; 32],
                            &m,
                            bytes::Bytes::copy_from_slice(&[i; 3]),
                            &path("/p"),
                        )
                        .unwrap();
                    store.touch_renders(&[([i; 32], 1 << 50)]).unwrap();
                }
            });
        }
    });
    assert_eq!(one.render_count(), 20);
    assert_eq!(other.render_bytes().unwrap(), 60);
    assert_eq!(one.org_usage("acme").unwrap().renders, 20);
    std::thread::scope(|s| {
        s.spawn(|| one.purge_image_renders("acme", "img1", false).unwrap());
        s.spawn(|| {
            other
                .purge_stack_renders("acme", "thumb", None, false)
                .unwrap()
        });
    });
    assert_eq!(one.render_count(), 0);
    assert_eq!(one.org_usage("acme").unwrap().render_bytes, 0);
}
