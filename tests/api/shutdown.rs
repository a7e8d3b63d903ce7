//! Graceful shutdown of the real binary: SIGTERM stops accepting, lets an upload in flight
//! finish (it is there after a restart), refuses one that does not finish within
//! `server.shutdown_timeout_secs` (nothing of it is stored), flushes and exits 0.

use crate::helpers::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The appliance as a child process on port 0; the ports come from its start-up log line.
struct Process {
    child: Child,
    api: String,
}

impl Process {
    fn start(data: &Path, shutdown_timeout_secs: u64) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_darkroom"))
            .envs(storage_env(data))
            .env("DARKROOM__SERVER__API_BIND", "127.0.0.1:0")
            .env("DARKROOM__SERVER__RENDER_BIND", "127.0.0.1:0")
            .env("DARKROOM__SERVER__WORKERS", "1")
            .env(
                "DARKROOM__SERVER__SHUTDOWN_TIMEOUT_SECS",
                shutdown_timeout_secs.to_string(),
            )
            .env("DARKROOM__AUTH__ROOT_KEY", ROOT_KEY)
            .env("DARKROOM__GC__INTERVAL_SECS", "0")
            .env("RUST_LOG", "info")
            .current_dir(data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("darkroom starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let api = loop {
            let line = lines
                .next()
                .expect("the appliance logs its ports before anything else")
                .expect("stderr is readable");
            if let Some(rest) = line.split(" serving the API on ").nth(1) {
                break rest.split(' ').next().expect("an address").to_string();
            }
        };
        // Keep draining the log so that the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Process { child, api }
    }

    fn create_acme(&self) {
        let (status, _) = http(
            &self.api,
            "PUT",
            "/organizations/acme",
            b"{}",
            "application/json",
        )
        .expect("the API answers");
        assert!(status < 300);
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "SIGTERM sent");
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return status;
            }
            assert!(
                start.elapsed() < within,
                "the appliance exits within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The head of a request with the root key, answered once (`Connection: close`).
fn head(addr: &str, method: &str, path: &str, content_type: &str, length: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nApi-Key: {ROOT_KEY}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

/// One blocking HTTP/1.1 exchange; `None` when the connection was closed without an answer.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    content_type: &str,
) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(head(addr, method, path, content_type, body.len()).as_bytes())
        .ok()?;
    s.write_all(body).ok()?;
    read_answer(s)
}

fn read_answer(mut s: TcpStream) -> Option<(u16, Vec<u8>)> {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..text_end]).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, raw[text_end + 4..].to_vec()))
}

/// Starts an upload and sends only the first `sent` bytes of its body.
fn start_upload(addr: &str, content_type: &str, body: &[u8], sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("the API accepts");
    let head = head(addr, "POST", "/sourceimages/acme", content_type, body.len());
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..sent]).unwrap();
    s.flush().unwrap();
    s
}

fn live_images(addr: &str) -> serde_json::Value {
    let (status, body) =
        http(addr, "GET", "/sourceimages/acme", b"", "application/json").expect("the list answers");
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

/// `admin verify` on the stopped appliance's folder.
fn verify(data: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .args(["admin", "verify"])
        .envs(storage_env(data))
        .env("DARKROOM__LOG__LEVEL", "warn")
        .current_dir(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn photo() -> (String, Vec<u8>, Vec<u8>) {
    let bytes = jpeg(1600, 1200, 9);
    let (content_type, body) = multipart(&[("file", "big.jpg", &bytes)], &[]);
    (content_type, body, bytes)
}

#[test]
fn an_upload_in_flight_at_sigterm_completes_and_is_there_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Process::start(dir.path(), 10);
    p.create_acme();
    let (content_type, body, bytes) = photo();
    let half = body.len() / 2;
    let mut upload = start_upload(&p.api, &content_type, &body, half);
    std::thread::sleep(Duration::from_millis(200));

    p.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        TcpStream::connect(&p.api).is_err()
            || http(&p.api, "GET", "/healthz", b"", "text/plain").is_none(),
        "no new requests are taken after SIGTERM"
    );
    upload.write_all(&body[half..]).unwrap();
    let (status, answer) = read_answer(upload).expect("the upload is answered");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let hash = serde_json::from_slice::<serde_json::Value>(&answer).unwrap()["items"][0]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(p.wait_exit(Duration::from_secs(15)).success(), "exit 0");
    drop(p);
    verify(dir.path());

    let p = Process::start(dir.path(), 10);
    let list = live_images(&p.api);
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["hash"], hash.as_str());
    let (status, downloaded) = http(
        &p.api,
        "GET",
        &format!("/sourceimages/acme/{hash}/download"),
        b"",
        "application/json",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(downloaded, bytes, "the whole file, byte for byte");
}

#[test]
fn an_upload_that_outlives_the_shutdown_timeout_is_refused_and_nothing_of_it_stays() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Process::start(dir.path(), 1);
    p.create_acme();
    let (content_type, body, _) = photo();
    let upload = start_upload(&p.api, &content_type, &body, body.len() / 2);
    std::thread::sleep(Duration::from_millis(200));

    p.sigterm();
    // The client never sends the rest: the connection is closed when the timeout ends.
    let status = p.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit 0 after the timeout: {status:?}");
    let answer = read_answer(upload);
    assert!(
        answer.as_ref().is_none_or(|(s, _)| *s >= 400),
        "never a success: {answer:?}"
    );
    drop(p);
    verify(dir.path());

    let p = Process::start(dir.path(), 1);
    assert_eq!(live_images(&p.api)["total"], 0, "nothing half-stored");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "no partial files: {leftovers:?}");
}

#[test]
fn sigterm_stops_the_appliance_even_when_its_control_socket_file_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Process::start(dir.path(), 10);
    p.create_acme();
    // Removed behind the service's back (a data folder cleared while it stops, say): the
    // listener is not reachable by its path any more.
    std::fs::remove_file(dir.path().join(darkroom::cli::control::SOCKET)).unwrap();
    p.sigterm();
    assert!(p.wait_exit(Duration::from_secs(15)).success(), "exit 0");
}
