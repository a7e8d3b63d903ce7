//! The generation held in memory ([`super::lease`]) between two stores over one schema, as
//! two nodes have them: a change through one is in the other's memory once it returned; a
//! node without its connection reads the generation; a node that died holds writers back only
//! until its lease ends. And the render cache follows the generation.

use super::{testing, PgStore};
use crate::storage::fixtures::{org, path};
use crate::storage::renders::RenderMeta;
use crate::storage::{Accounts, RenderRecords};
use std::time::{Duration, Instant};

/// The generation the database holds.
fn committed(store: &PgStore) -> u64 {
    let rows = store
        .query("SELECT value FROM generation", Vec::new())
        .unwrap();
    super::to_u64(rows[0].get(0))
}

/// Waits until `store` trusts the generation it holds (its first beat).
fn until_trusted(store: &PgStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.watch.trusted().is_none() {
        assert!(
            Instant::now() < deadline,
            "the node never trusted its lease"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the lease of node `id` has ended, by the database's clock.
fn lease_ended(store: &PgStore, id: &str) -> bool {
    store
        .query(
            "SELECT lease_until <= now() FROM nodes WHERE id = $1",
            vec![Box::new(id.to_string())],
        )
        .unwrap()
        .first()
        .is_none_or(|r| r.get(0))
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn a_change_through_one_node_is_in_the_others_memory_once_it_returned() {
    let Some((one, open_other)) = testing::pair("lease_push") else {
        return;
    };
    let other = open_other();
    until_trusted(&one);
    until_trusted(&other);
    let mut from_memory = 0;
    for i in 0..30 {
        let mut record = org("acme");
        record.display_name = format!("acme {i}");
        one.put_org(&record).unwrap();
        let g = committed(&one);
        // Nothing in between: the other node holds it already, or reads it.
        if let Some(held) = other.watch.trusted() {
            assert!(
                held >= g,
                "change {i}: the other node holds {held}, {g} returned"
            );
            from_memory += 1;
        }
        assert_eq!(other.generation().unwrap(), g);
        assert_eq!(
            one.generation().unwrap(),
            g,
            "the writing node holds its own change"
        );
    }
    // A beat late on a loaded machine ends trust for a moment; most answers are from memory.
    assert!(from_memory >= 15, "{from_memory} of 30 from memory");
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn a_node_whose_connection_is_gone_reads_the_generation_from_the_records() {
    let Some((one, open_other)) = testing::pair("lease_lost") else {
        return;
    };
    let other = open_other();
    until_trusted(&other);
    // The node's own connection is killed, and it stays away for the test.
    other.watch.reconnect_after(Duration::from_secs(600));
    let killed = one
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            vec![Box::new(format!("darkroom watch {}", other.watch.id))],
        )
        .unwrap();
    assert_eq!(killed.len(), 1, "one connection watches for the node");
    let deadline = Instant::now() + Duration::from_secs(10);
    while other.watch.trusted().is_some() {
        assert!(
            Instant::now() < deadline,
            "still trusted without its connection"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // It gives its lease up, so a writer does not wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lease_ended(&one, &other.watch.id) {
        assert!(Instant::now() < deadline, "the lease was not given up");
        std::thread::sleep(Duration::from_millis(10));
    }
    one.put_org(&org("acme")).unwrap();
    let g = committed(&one);
    let queries = other.watch.fallbacks();
    assert_eq!(other.generation().unwrap(), g);
    assert_eq!(
        other.watch.fallbacks(),
        queries + 1,
        "read from the records"
    );
    assert!(other.watch.trusted().is_none());
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn a_dead_nodes_lease_holds_writers_back_only_until_it_ends() {
    let Some((one, open_other)) = testing::pair("lease_dead") else {
        return;
    };
    let other = open_other();
    until_trusted(&one);
    until_trusted(&other);
    // A live node acknowledges: its lease stays, and it has seen the change when it returns.
    one.put_org(&org("acme")).unwrap();
    let g = committed(&one);
    let seen = one
        .query(
            "SELECT seen FROM nodes WHERE id = $1 AND lease_until > now()",
            vec![Box::new(other.watch.id.clone())],
        )
        .unwrap();
    assert!(super::to_u64(seen[0].get(0)) >= g);
    // What a node killed right after a beat leaves: a fresh lease that acknowledges nothing.
    one.execute(
        "INSERT INTO nodes (id, seen, lease_until) VALUES ('gone', 0, now() + interval '2 s')",
        Vec::new(),
    )
    .unwrap();
    let started = Instant::now();
    one.put_org(&org("acme")).unwrap();
    assert!(
        lease_ended(&one, "gone"),
        "the change returned before the dead node's lease ended"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the lease: {:?}",
        started.elapsed()
    );
    // Ended leases hold nobody back.
    let started = Instant::now();
    one.put_org(&org("acme")).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
#[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
fn a_cached_render_is_not_answered_once_another_node_removed_it() {
    let Some((one, open_other)) = testing::pair("lease_cache") else {
        return;
    };
    let other = open_other();
    until_trusted(&one);
    until_trusted(&other);
    one.put_org(&org("acme")).unwrap();
    let meta = RenderMeta {
        content_type: "image/png".into(),
        etag: "\"e\"".into(),
        organization: "acme".into(),
        image: "img".into(),
        stacks: Vec::new(),
    };
    // Stored as an orphan (no image record): restore keeps it without the reachability check.
    one.restore_render(&[7; 32], &meta, b"png", &[path("/p")])
        .unwrap();
    assert!(other.get_render(&[7; 32]).unwrap().is_some());
    let cached = other.cache.as_ref().map_or(0, |c| c.len());
    assert!(
        cached == 1 || other.watch.trusted().is_none(),
        "kept while trusted"
    );
    assert_eq!(one.remove_render(&[7; 32]).unwrap(), 3);
    assert!(
        other.get_render(&[7; 32]).unwrap().is_none(),
        "the removal returned: no node answers it"
    );
    assert!(one.get_render(&[7; 32]).unwrap().is_none());
    // Disabled, nothing is kept.
    let other = open_other().with_render_cache(0);
    assert!(other.cache.is_none());
    assert_eq!(other.generation().unwrap(), committed(&one));
}
