//! Crash consistency of the real binary: rounds of uploads, deletes, stack overwrites and
//! renders with a garbage-collection pass every second and no retention, each round ended by
//! `kill -9`. After every kill `darkroom admin verify` must pass (a record never refers to a
//! missing file), and every acknowledged upload that was not deleted is still there.

use crate::helpers::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The appliance as a child process on port 0, with GC every second and retention 0.
struct Process {
    child: Child,
    api: String,
    render: String,
}

impl Process {
    fn start(data: &Path) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_darkroom"))
            .envs(storage_env(data))
            .env("DARKROOM__SERVER__API_BIND", "127.0.0.1:0")
            .env("DARKROOM__SERVER__RENDER_BIND", "127.0.0.1:0")
            .env("DARKROOM__SERVER__WORKERS", "1")
            .env("DARKROOM__AUTH__ROOT_KEY", ROOT_KEY)
            .env("DARKROOM__GC__INTERVAL_SECS", "1")
            .env("DARKROOM__IMAGES__RETENTION_DAYS", "0")
            .env("DARKROOM__RENDER__THREADS", "1")
            .env("RUST_LOG", "info")
            .current_dir(data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("darkroom starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let (api, render) = loop {
            let line = lines
                .next()
                .expect("the appliance logs its ports before anything else")
                .expect("stderr is readable");
            if let Some(rest) = line.split(" serving the API on ").nth(1) {
                let mut words = rest.split(' ');
                let api = words.next().expect("an address").to_string();
                let render = rest
                    .split(" and renders on ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .expect("a render address")
                    .to_string();
                break (api, render);
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Process { child, api, render }
    }

    /// `kill -9`: no flush, no shutdown.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL is sent");
        self.child.wait().expect("the child is reaped");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One blocking HTTP/1.1 exchange with the root key.
fn http(addr: &str, method: &str, path: &str, ctype: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nApi-Key: {ROOT_KEY}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = String::from_utf8_lossy(&raw[..end])
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, raw[end + 4..].to_vec()))
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

fn upload(p: &Process, bytes: &[u8]) -> Option<String> {
    let (ctype, body) = multipart(&[("filedata", "a.jpg", bytes)], &[]);
    let (status, answer) = http(&p.api, "POST", "/sourceimages/acme", &ctype, &body)?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let v: serde_json::Value = serde_json::from_slice(&answer).ok()?;
    v["items"][0]["hash"].as_str().map(str::to_string)
}

fn put_stack(p: &Process, width: u32) {
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

fn live_hashes(p: &Process) -> BTreeSet<String> {
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
        let p = Process::start(data);
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
