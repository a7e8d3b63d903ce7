//! Hostile upload bodies (issue 11, part 4), sent over raw sockets: a multipart body without
//! its closing boundary, a huge declared length, a stalled body, a trickling body, a client
//! that goes away, and one key holding too many uploads. Each is answered (or dropped) at once
//! with a JSON error, and no temporary file stays behind.

use crate::helpers::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn addr(app: &TestApp) -> String {
    app.api.trim_start_matches("http://").to_string()
}

/// Sends the head of an upload to `acme` with `length` as Content-Length, then `body`.
fn send_upload(addr: &str, ctype: &str, length: usize, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("the API accepts");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /sourceimages/acme HTTP/1.1\r\nHost: {addr}\r\nApi-Key: {ROOT_KEY}\r\nContent-Type: {ctype}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s.flush().unwrap();
    s
}

/// Reads the answer on a blocking socket: status, headers and the JSON body.
fn answer(s: &mut TcpStream) -> (u16, String, serde_json::Value) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the head and the whole body (by Content-Length) are in.
    loop {
        let n = s.read(&mut buf).expect("an answer before the read timeout");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| raw.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_slice(&raw[end + 4..]).unwrap_or(serde_json::Value::Null);
    (status, head, body)
}

fn temp_files(app: &TestApp) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(app.data.join("tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Waits (bounded) until the server removed its temporary files; they go when the request
/// ends, which the test cannot observe otherwise.
async fn no_temp_files_remain(app: &TestApp) {
    for _ in 0..200 {
        if temp_files(app).is_empty() {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("temporary files remain: {:?}", temp_files(app));
}

fn photo_body() -> (String, Vec<u8>) {
    multipart(&[("filedata", "a.jpg", &jpeg(300, 200, 3))], &[])
}

/// Runs blocking socket work off the test's runtime, so the server keeps running.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    actix_rt::task::spawn_blocking(f).await.unwrap()
}

#[actix_rt::test]
async fn a_multipart_body_without_its_closing_boundary_is_answered_400_at_once() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let (ctype, body) = photo_body();
    // Everything but the closing boundary, with an exact Content-Length.
    let closing = b"------darkroomtestboundary7MA4YWxkTrZu0gW--\r\n".len();
    let truncated = body[..body.len() - closing].to_vec();
    let a = addr(&app);
    let (status, _, json) = blocking(move || {
        let mut s = send_upload(&a, &ctype, truncated.len(), &truncated);
        answer(&mut s)
    })
    .await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["code"], 400);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("boundary"),
        "{json}"
    );
    no_temp_files_remain(&app).await;
    let list = app.get("/sourceimages/acme", ROOT_KEY).await.json();
    assert_eq!(list["total"], 0);
}

#[actix_rt::test]
async fn a_body_cut_inside_the_file_is_answered_400_at_once() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let (ctype, body) = photo_body();
    let cut = body[..body.len() / 2].to_vec();
    let a = addr(&app);
    let (status, _, json) = blocking(move || {
        let mut s = send_upload(&a, &ctype, cut.len(), &cut);
        answer(&mut s)
    })
    .await;
    assert_eq!(status, 400, "{json}");
    no_temp_files_remain(&app).await;
}

#[actix_rt::test]
async fn a_declared_length_over_the_limit_is_answered_413_before_the_body_is_read() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let a = addr(&app);
    let (status, _, json) = blocking(move || {
        let mut s = send_upload(
            &a,
            "multipart/form-data; boundary=x",
            1_000_000_000,
            b"--x\r\n",
        );
        answer(&mut s)
    })
    .await;
    assert_eq!(status, 413, "{json}");
    assert_eq!(json["error"]["code"], 413);
    no_temp_files_remain(&app).await;
}

#[actix_rt::test]
async fn after_an_early_413_the_connection_is_closed_not_kept_reading() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let a = addr(&app);
    let closed = blocking(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // No `Connection: close`: the server must not wait for the declared gigabyte.
        let head = format!(
            "POST /sourceimages/acme HTTP/1.1\r\nHost: {a}\r\nApi-Key: {ROOT_KEY}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000000\r\n\r\n--x\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let (status, _, _) = answer(&mut s);
        assert_eq!(status, 413);
        let mut rest = [0u8; 64];
        match s.read(&mut rest) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    })
    .await;
    assert!(closed, "the connection is closed after the answer");
}

#[actix_rt::test]
async fn a_body_that_stalls_is_answered_408_and_leaves_no_file() {
    let app = spawn_app_with(|c| c.server.body_timeout_secs = 1).await;
    app.create_org("acme").await;
    let (ctype, body) = photo_body();
    let a = addr(&app);
    let (status, _, json) = blocking(move || {
        let mut s = send_upload(&a, &ctype, body.len(), &body[..body.len() / 2]);
        answer(&mut s)
    })
    .await;
    assert_eq!(status, 408, "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stalled"),
        "{json}"
    );
    no_temp_files_remain(&app).await;
}

#[actix_rt::test]
async fn a_body_that_trickles_below_the_minimum_rate_is_answered_408() {
    let app = spawn_app_with(|c| {
        c.server.body_timeout_secs = 1;
        c.server.min_body_rate_bytes_per_sec = 100_000;
    })
    .await;
    app.create_org("acme").await;
    let (ctype, body) = photo_body();
    let a = addr(&app);
    let (status, _, json) = blocking(move || {
        let mut s = send_upload(&a, &ctype, body.len(), &body[..200]);
        // A few bytes now and then: never a stall, always far too slow. The server answers
        // and closes; later writes may fail, which is the point.
        for piece in body[200..].chunks(20).take(40) {
            std::thread::sleep(Duration::from_millis(100));
            if s.write_all(piece).is_err() {
                break;
            }
        }
        answer(&mut s)
    })
    .await;
    assert_eq!(status, 408, "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("slowly"),
        "{json}"
    );
    no_temp_files_remain(&app).await;
}

#[actix_rt::test]
async fn a_client_that_goes_away_mid_upload_leaves_no_file() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let (ctype, body) = multipart(&[("filedata", "a.jpg", &jpeg(1200, 900, 5))], &[]);
    let a = addr(&app);
    blocking(move || {
        let s = send_upload(&a, &ctype, body.len(), &body[..body.len() / 2]);
        std::thread::sleep(Duration::from_millis(200));
        drop(s);
    })
    .await;
    no_temp_files_remain(&app).await;
}

#[actix_rt::test]
async fn one_key_past_its_concurrent_uploads_is_answered_429_with_retry_after() {
    let app = spawn_app_with(|c| c.limits.max_concurrent_uploads_per_key = 1).await;
    app.create_org("acme").await;
    let (ctype, body) = photo_body();
    let a = addr(&app);
    let (first_ctype, first_body, first_addr) = (ctype.clone(), body.clone(), a.clone());
    let held = blocking(move || {
        send_upload(
            &first_addr,
            &first_ctype,
            first_body.len(),
            &first_body[..first_body.len() / 2],
        )
    })
    .await;
    // The first upload is in the server once its temporary file exists.
    for _ in 0..200 {
        if !temp_files(&app).is_empty() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let (second_ctype, second_body) = (ctype.clone(), body.clone());
    let (status, head, json) = blocking(move || {
        let mut s = send_upload(&a, &second_ctype, second_body.len(), &second_body);
        answer(&mut s)
    })
    .await;
    assert_eq!(status, 429, "{json}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    let (status, _, json) = blocking(move || {
        let mut s = held;
        s.write_all(&body[body.len() / 2..]).unwrap();
        answer(&mut s)
    })
    .await;
    assert_eq!(status, 200, "the held upload finishes: {json}");
    let again = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "b.jpg", &jpeg(30, 20, 8))],
            &[],
        )
        .await;
    assert_eq!(
        again.status,
        200,
        "the slot is given back: {}",
        again.text()
    );
}

#[actix_rt::test]
async fn a_json_body_that_stalls_is_answered_408_too() {
    let app = spawn_app_with(|c| c.server.body_timeout_secs = 1).await;
    app.create_org("acme").await;
    let a = addr(&app);
    let (status, _, json) = blocking(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "PUT /stacks/acme/thumb HTTP/1.1\r\nHost: {a}\r\nApi-Key: {ROOT_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n[{{\"name\":"
        );
        s.write_all(head.as_bytes()).unwrap();
        answer(&mut s)
    })
    .await;
    assert_eq!(status, 408, "{json}");
    assert_eq!(json["error"]["code"], 408);
    assert_eq!(app.get("/stacks/acme/thumb", ROOT_KEY).await.status, 404);
}
