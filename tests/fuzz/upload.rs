//! The multipart upload path, through the real server: `POST /sourceimages/acme` with mutated
//! multipart bodies over a raw TCP connection, so that malformed framing (no closing boundary,
//! a declared length of 1 GB or one shorter than the body, a connection closed half-way) reaches
//! actix-multipart and the upload handler exactly as a hostile client would send it.
//!
//! The corpus keeps two bodies that once got no answer at all (a closing delimiter without its
//! CRLF, a declared length that ends before the closing boundary).
//!
//! An input is one mode byte and the body. Properties: every request is answered, never with a
//! 5xx other than 503 with `Retry-After` or 507; when the run ends `tmp/` holds no upload files
//! and `verify` finds no broken invariant (no orphan blob, counters equal recomputed values).

use crate::alloc::THREAD_CAP;
use crate::engine::{fuzz, Harness, Outcome, Rng};
use darkroom::app::Application;
use darkroom::config::Config;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use std::io::{Cursor, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

const ROOT_KEY: &str = "fuzz-root-key-0123456789";
const BOUNDARY: &str = "fuzzboundary7MA4YWxkTrZu0gW";

/// Uploads above this many bytes are refused, so that the size limit is part of what is fuzzed.
const MAX_UPLOAD: u64 = 64 * 1024;

/// How long one answer may take before it counts as no answer. Generous: a finding, not a
/// timing threshold.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The appliance under test, running on its own thread and actix system.
struct Server {
    port: u16,
    services: actix_web::web::Data<darkroom::service::Services>,
    handle: darkroom::app::AppHandle,
    data: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let data = tempfile::tempdir().expect("a temporary folder");
        let mut config = Config::default();
        config.server.api_bind = "127.0.0.1:0".parse().expect("an address");
        config.server.render_bind = "127.0.0.1:0".parse().expect("an address");
        config.server.workers = 1;
        config.server.shutdown_timeout_secs = 5;
        config.storage.path = data.path().to_path_buf();
        config.auth.root_key = ROOT_KEY.to_string();
        config.render.threads = 1;
        config.limits.max_upload_bytes = MAX_UPLOAD;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let app = Application::build(config).expect("the appliance starts");
                tx.send((app.api_port(), app.services(), app.handle()))
                    .expect("the harness waits for the port");
                app.run_until_stopped().await.expect("the appliance runs");
            })
        });
        let (port, services, handle) = rx.recv().expect("the appliance reports its port");
        Server {
            port,
            services,
            handle,
            data,
        }
    }

    /// Sends raw request bytes, half-closes, and returns the status line's code and headers.
    fn send(&self, request: &[u8]) -> Result<(u16, String), String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .map_err(|e| format!("cannot connect: {e}"))?;
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(|e| e.to_string())?;
        // The server may answer (and close) before it has read the whole body; a failed
        // write is then expected, and the answer is still read below.
        let _ = stream.write_all(request);
        let _ = stream.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.len() > 1 << 20 {
                        break;
                    }
                }
                Err(e) if answer.is_empty() => return Err(format!("no answer: {e}")),
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("no status line in {:?}", excerpt(&text)))?;
        let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
        Ok((status, head))
    }

    fn tmp_files(&self) -> Vec<String> {
        std::fs::read_dir(self.data.path().join("tmp"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(200).collect()
}

fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| Rgb([x as u8 ^ seed, y as u8, seed]));
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, ImageFormat::Png)
        .expect("a seed image encodes");
    out.into_inner()
}

/// One part of a multipart body.
fn part(name: &str, filename: Option<&str>, content: &[u8]) -> Vec<u8> {
    let mut out = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"");
    if let Some(f) = filename {
        out.push_str(&format!("; filename=\"{f}\""));
    }
    out.push_str("\r\nContent-Type: application/octet-stream\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(content);
    bytes.extend_from_slice(b"\r\n");
    bytes
}

fn closing() -> Vec<u8> {
    format!("--{BOUNDARY}--\r\n").into_bytes()
}

/// How the request frames its body, from the input's first byte.
fn request(input: &[u8]) -> Vec<u8> {
    let (mode, body) = input.split_first().map_or((0, &[][..]), |(m, b)| (*m, b));
    let length = match mode % 4 {
        // A declared length far beyond what is sent: the server must give up at end of input.
        1 => 1_000_000_000,
        // Shorter than the body: the rest is a second, garbage request on the connection.
        2 => body.len() / 2,
        _ => body.len(),
    };
    let content_type = match mode % 7 {
        5 => "multipart/form-data".to_owned(),
        6 => format!("multipart/form-data; boundary=\"{BOUNDARY}\"; charset=utf-8"),
        _ => format!("multipart/form-data; boundary={BOUNDARY}"),
    };
    let chunked = mode % 4 == 3;
    let mut head = format!(
        "POST /sourceimages/acme HTTP/1.1\r\nHost: 127.0.0.1\r\nApi-Key: {ROOT_KEY}\r\n\
         Content-Type: {content_type}\r\nConnection: close\r\n"
    );
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {length}\r\n\r\n"));
    }
    let mut out = head.into_bytes();
    if chunked {
        for chunk in body.chunks(700) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(body);
    }
    out
}

fn seeds() -> Vec<Vec<u8>> {
    let image = png(6, 4, 1);
    let other = png(5, 5, 2);
    let with_mode = |mode: u8, parts: Vec<Vec<u8>>| {
        let mut out = vec![mode];
        parts.into_iter().for_each(|p| out.extend(p));
        out
    };
    vec![
        with_mode(0, vec![part("filedata", Some("a.png"), &image), closing()]),
        with_mode(
            0,
            vec![
                part("meta_user[0]", None, br#"{"title":"x"}"#),
                part(
                    "meta_dynamic[0][subject_area]",
                    None,
                    br#"{"x":1,"y":1,"width":2,"height":2}"#,
                ),
                part("options[0]", None, br#"{"protected":true}"#),
                part("filedata[0]", Some("a.png"), &image),
                part("filedata[1]", Some("b.png"), &other),
                closing(),
            ],
        ),
        // No closing boundary.
        with_mode(0, vec![part("filedata", Some("a.png"), &image)]),
        with_mode(1, vec![part("filedata", Some("a.png"), &image), closing()]),
        with_mode(2, vec![part("filedata", Some("a.png"), &image), closing()]),
        with_mode(3, vec![part("filedata", Some("a.png"), &image), closing()]),
        with_mode(5, vec![part("filedata", Some("a.png"), &image), closing()]),
        with_mode(
            0,
            vec![
                part(
                    "filedata",
                    Some("big.png"),
                    &vec![7u8; MAX_UPLOAD as usize + 10],
                ),
                closing(),
            ],
        ),
        with_mode(
            0,
            vec![
                part("filedata", Some("text.jpg"), b"not an image"),
                closing(),
            ],
        ),
        with_mode(
            0,
            vec![
                part("url", None, b"http://example.invalid/x.jpg"),
                closing(),
            ],
        ),
        with_mode(0, vec![part("meta_user", None, b"{broken json"), closing()]),
    ]
}

/// A body of random parts: images, broken images, metadata fields, odd names.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let fields = [
        "filedata",
        "filedata[0]",
        "meta_user[0]",
        "meta_dynamic[0]",
        "meta_dynamic[1][crop_area]",
        "options[0]",
        "meta_static[0]",
        "optimize_source",
        "url",
        "",
        "meta_dynamic[99999999999999999999][x]",
    ];
    let contents: [&[u8]; 6] = [
        br#"{"a":1}"#,
        br#""{\"protected\":true}""#,
        b"[1,2",
        br#"{"x":-1,"y":1e999,"width":0,"height":2}"#,
        b"",
        b"\xff\xfe\x00",
    ];
    let mut out = vec![rng.u32() as u8];
    for _ in 0..rng.below(4) {
        let name = fields[rng.below(fields.len())];
        if rng.chance(2) {
            let mut image = png(
                1 + rng.below(8) as u32,
                1 + rng.below(8) as u32,
                rng.u32() as u8,
            );
            if rng.chance(3) {
                let at = rng.below(image.len());
                image.truncate(at);
            }
            out.extend(part(name, Some("f.png"), &image));
        } else {
            out.extend(part(name, None, contents[rng.below(contents.len())]));
        }
    }
    if !rng.chance(4) {
        out.extend(closing());
    }
    out
}

fn dictionary() -> Vec<Vec<u8>> {
    [
        format!("--{BOUNDARY}\r\n"),
        format!("--{BOUNDARY}--"),
        "\r\n".to_owned(),
        "\r\n\r\n".to_owned(),
        "Content-Disposition: form-data; name=\"filedata\"; filename=\"x.jpg\"\r\n".to_owned(),
        "Content-Type: image/png\r\n".to_owned(),
        "name=\"".to_owned(),
        "filename*=UTF-8''%e2%82%ac.png".to_owned(),
        "meta_dynamic[0][".to_owned(),
        "\"".to_owned(),
        ";".to_owned(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

#[test]
fn mutated_multipart_uploads_get_no_5xx_and_leave_no_temporary_files() {
    let server = Server::start();
    let body = r#"{"billing_email":"ops@example.com"}"#;
    let org = server
        .send(
            format!(
                "PUT /organizations/acme HTTP/1.1\r\nHost: 127.0.0.1\r\nApi-Key: {ROOT_KEY}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .expect("the organization is created");
    assert_eq!(org.0, 200, "{}", org.1);

    let mut run = |input: &[u8]| -> Outcome {
        let (status, head) = server.send(&request(input))?;
        let busy_with_retry = status == 503 && head.to_ascii_lowercase().contains("retry-after:");
        if status >= 500 && !busy_with_retry && status != 507 {
            return Err(format!("answered {status}: {}", excerpt(&head)));
        }
        Ok(format!("{status}"))
    };
    fuzz(
        Harness {
            name: "upload",
            seeds: seeds(),
            dictionary: dictionary(),
            max_len: 2 * MAX_UPLOAD as usize,
            fixup: None,
            generate: Some(generate),
            alloc_cap: THREAD_CAP,
        },
        &mut run,
    );

    // Every answer has been read, so every upload has finished or been abandoned; removing an
    // abandoned temporary file may still be under way on the server's side for a moment.
    let mut left = server.tmp_files();
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        left = server.tmp_files();
    }
    assert!(left.is_empty(), "tmp/ still holds {left:?}");
    let problems = server
        .services
        .verify(Duration::ZERO)
        .expect("the store can be verified");
    assert!(problems.is_empty(), "verify found problems: {problems:#?}");
    actix_rt::System::new().block_on(server.handle.stop(true));
}
