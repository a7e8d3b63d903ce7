//! AVIF encodes in the real binary run in a child process (`darkroom encode-avif`), so that a
//! cancelled render stops: the bytes equal those of the encoder in this process, and a render
//! past its deadline leaves no encoder running.

use crate::helpers::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The real binary over `data` with `env`; its render listener's address. The store's lock
/// is let go shortly after the previous appliance stopped, so a start may be tried again.
async fn start(
    data: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> (std::process::Child, String) {
    let mut log = Vec::new();
    for _ in 0..100 {
        let mut child = start_binary(data, env);
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.expect("readable");
            if let Some(rest) = line.split(" and renders on ").nth(1) {
                let render = rest.split(' ').next().expect("an address").to_string();
                std::thread::spawn(move || for _ in lines {});
                return (child, render);
            }
            log.push(line);
        }
        let _ = child.wait();
        // Asynchronously: the appliance that held the folder lets go on this runtime.
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the binary did not start: {log:?}");
}

/// One `GET` with `Connection: close`: status, head and body.
fn fetch(addr: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("the render listener answers");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, raw[end + 4..].to_vec())
}

/// Processes whose parent is `pid` and whose command line names `word`.
fn children_running(pid: u32, word: &str) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid …: the comm may hold spaces, so split after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if ppid == Some(pid) && String::from_utf8_lossy(&cmdline).contains(word) {
            n += 1;
        }
    }
    n
}

#[actix_rt::test]
async fn avif_from_the_child_process_equals_avif_from_this_process_and_stops_with_its_render() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(64, 48, 5))
        .await;
    let hash = img["hash"].as_str().unwrap().to_string();
    let small = format!("/dynamic/resize-width-40/{hash}.avif");
    let here = app.render(&small).await;
    assert_eq!(here.status, 200);
    // Forget the stored render, so the binary encodes it again.
    let purged = app.delete("/organizations/acme/cache", ROOT_KEY).await;
    assert_eq!(purged.status, 200);
    let dir = app.stop().await.expect("the test's own folder");
    let data = dir.path().to_path_buf();

    let (child, render) = start(&data, &[]).await;
    let child = Killed(child);
    let (status, head, body) = fetch(&render, &format!("/acme{small}"));
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("X-Darkroom-Render: miss") || head.contains("x-darkroom-render: miss"),
        "{head}"
    );
    assert_eq!(body, here.body, "the child's bytes equal this process's");
    drop(child);

    // A 16 MP AVIF takes many seconds. Once its encoder runs, the client goes away: nobody
    // waits for the render any more, so it is cancelled, and its encoder is gone soon after.
    let (child, render) = start(
        &data,
        &[("DARKROOM__RENDER__TIMEOUT_MS", "120000".as_ref())],
    )
    .await;
    let child = Killed(child);
    let big = format!("/acme/dynamic/resize-width-4000-height-4000-mode-absolute/{hash}.avif");
    let mut client = TcpStream::connect(&render).unwrap();
    write!(client, "GET {big} HTTP/1.1\r\nHost: {render}\r\n\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while children_running(child.0.id(), "encode-avif") == 0 {
        assert!(
            Instant::now() < deadline,
            "the encode never started in a child process"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    while children_running(child.0.id(), "encode-avif") > 0 {
        assert!(
            Instant::now() < deadline,
            "the encoder of the cancelled render is still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
