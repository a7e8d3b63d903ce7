//! The real binary under a stand-in for systemd: a datagram socket named by `NOTIFY_SOCKET`.
//! `READY=1` comes only once the listeners answer, the watchdog is pinged at half its
//! interval when `WATCHDOG_USEC` asks for it, and `STOPPING=1` comes on SIGTERM.

use crate::helpers::ROOT_KEY;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Waits for a datagram containing `wanted`, returning everything received until then.
fn wait_for(socket: &UnixDatagram, wanted: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).to_string();
            let found = message.lines().any(|l| l == wanted);
            seen.push(message);
            if found {
                return seen;
            }
        }
    }
    panic!("no {wanted} within {within:?}; received {seen:?}");
}

fn get_status(addr: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("the listener is bound");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn systemd_is_told_ready_once_the_listeners_answer_and_the_watchdog_is_pinged() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .env("DARKROOM__STORAGE__PATH", &data)
        .env("DARKROOM__SERVER__API_BIND", "127.0.0.1:0")
        .env("DARKROOM__SERVER__RENDER_BIND", "127.0.0.1:0")
        .env("DARKROOM__SERVER__WORKERS", "1")
        .env("DARKROOM__AUTH__ROOT_KEY", ROOT_KEY)
        .env("DARKROOM__GC__INTERVAL_SECS", "0")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("darkroom starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();

    let first = wait_for(&socket, "READY=1", Duration::from_secs(30));
    // The status line names the ports, and they answer at once: readiness came after binding.
    let status = first
        .iter()
        .flat_map(|m| m.lines())
        .find_map(|l| l.strip_prefix("STATUS="))
        .expect("a status line with the readiness")
        .to_string();
    let api = status
        .split("serving the API on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("the API address in the status")
        .to_string();
    assert_eq!(get_status(&api, "/readyz"), 200, "status: {status}");
    std::thread::spawn(move || for _ in lines.by_ref() {});

    // Pinged at half of 400 ms.
    wait_for(&socket, "WATCHDOG=1", Duration::from_secs(3));

    // systemd stops the service with SIGTERM.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for(&socket, "STOPPING=1", Duration::from_secs(10));
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}
