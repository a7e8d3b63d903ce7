//! Crash consistency of the real binary: rounds of uploads, deletes, stack overwrites and
//! renders with a garbage-collection pass every second and no retention, each round ended by
//! `kill -9`. After every kill `darkroom admin verify` must pass (a record never refers to a
//! missing file), and every acknowledged upload that was not deleted is still there.

use crate::helpers::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The appliance as a child process on port 0, with GC every second and retention 0.
fn start(data: &Path) -> Node {
    Node::start(
        data,
        [
            ("DARKROOM__GC__INTERVAL_SECS", "1"),
            ("DARKROOM__IMAGES__RETENTION_DAYS", "0"),
            ("DARKROOM__RENDER__THREADS", "1"),
        ],
    )
}

fn verify(data: &Path, round: usize) {
    let out = Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .args(["admin", "verify"])
        .envs(storage_env(data))
        .env("DARKROOM__LOG__LEVEL", "warn")
        .current_dir(data)
        .output()
        .expect("verify runs");
    assert!(
        out.status.success(),
        "verify after kill {round}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn upload(p: &Node, bytes: &[u8]) -> Option<String> {
    let (ctype, body) = multipart(&[("filedata", "a.jpg", bytes)], &[]);
    let (status, answer) = http(&p.api, "POST", "/sourceimages/acme", &ctype, &body)?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let v: serde_json::Value = serde_json::from_slice(&answer).ok()?;
    v["items"][0]["hash"].as_str().map(str::to_string)
}

fn put_stack(p: &Node, width: u32) {
    let body = serde_json::json!([{"name": "resize", "options": {"width": width}}]).to_string();
    let answer = http(
        &p.api,
        "PUT",
        "/stacks/acme/thumb?overwrite=true",
        "application/json",
        body.as_bytes(),
    );
    if let Some((status, text)) = answer {
        assert!(status < 300, "{status} {}", String::from_utf8_lossy(&text));
    }
}

fn live_hashes(p: &Node) -> BTreeSet<String> {
    let (status, body) = http(
        &p.api,
        "GET",
        "/sourceimages/acme?limit=1000",
        "application/json",
        b"",
    )
    .expect("the list answers");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["hash"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn kill_9_during_deletes_overwrites_and_gc_never_leaves_a_record_without_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // A few distinct photos; each round uploads them again, so a blob that GC is removing is
    // often being referred to again at the same moment.
    let photos: Vec<Vec<u8>> = (0..4).map(|seed| jpeg(64, 48, seed)).collect();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    for round in 0..10 {
        let p = start(data);
        let live = live_hashes(&p);
        assert!(
            kept.is_subset(&live),
            "after kill {round}, acknowledged uploads are all there: missing {:?}",
            kept.difference(&live).collect::<Vec<_>>()
        );
        if round == 0 {
            let (status, _) = http(
                &p.api,
                "PUT",
                "/organizations/acme",
                "application/json",
                b"{}",
            )
            .expect("the API answers");
            assert!(status < 300);
        }
        let started = Instant::now();
        let mut step: usize = 0;
        // Every round runs a little longer than the last, so the kills land at different
        // moments relative to the GC passes and flushes.
        let length = Duration::from_millis(1200 + 150 * round as u64);
        while started.elapsed() < length {
            let bytes = &photos[step % photos.len()];
            let Some(hash) = upload(&p, bytes) else { break };
            kept.insert(hash.clone());
            put_stack(&p, 20 + (step % 7) as u32);
            let _ = http(
                &p.render,
                "GET",
                &format!("/acme/thumb/{hash}.jpg"),
                "text/plain",
                b"",
            );
            if step % 2 == 1 {
                let (status, _) = http(
                    &p.api,
                    "DELETE",
                    &format!("/sourceimages/acme/{hash}"),
                    "application/json",
                    b"",
                )
                .expect("the delete answers");
                assert!(status < 300, "delete answers {status}");
                kept.remove(&hash);
            }
            step += 1;
        }
        p.kill();
        verify(data, round);
    }
}
