//! The real binary as a service manager and a log collector see it. Under a stand-in for
//! systemd (a datagram socket named by `NOTIFY_SOCKET`), `READY=1` comes only once the
//! listeners answer, the watchdog is pinged at half its interval when `WATCHDOG_USEC` asks for
//! it, and `STOPPING=1` comes on SIGTERM. With `log.format = "json"` every line is one object.

use crate::helpers::{get_status, start_binary, Killed};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
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

#[test]
fn systemd_is_told_ready_once_the_listeners_answer_and_the_watchdog_is_pinged() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut child = Killed(start_binary(
        &dir.path().join("data"),
        &[
            ("NOTIFY_SOCKET", socket_path.as_os_str()),
            ("WATCHDOG_USEC", "400000".as_ref()),
        ],
    ));
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();

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
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for(&socket, "STOPPING=1", Duration::from_secs(10));
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn json_logs_give_one_object_per_line_with_the_access_fields_and_no_query_string() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Killed(start_binary(
        &dir.path().join("data"),
        &[("DARKROOM__LOG__FORMAT", "json".as_ref())],
    ));
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let mut read_json = || -> serde_json::Value {
        let line = lines.next().expect("a log line").expect("readable");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let started = loop {
        let v = read_json();
        if v["msg"]
            .as_str()
            .is_some_and(|m| m.contains("serving the API on"))
        {
            break v;
        }
    };
    let msg = started["msg"].as_str().expect("a message").to_string();
    assert_eq!(started["level"], "INFO");
    assert!(started["ts"].is_string());
    let api = msg
        .split("serving the API on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("the API address")
        .to_string();
    assert_eq!(get_status(&api, "/readyz?signature=secret"), 200);
    let access = loop {
        let v = read_json();
        if v.get("listener").is_some() {
            break v;
        }
    };
    assert_eq!(access["listener"], "api");
    assert_eq!(access["status"], 200);
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/readyz");
    assert!(access["bytes"].as_u64().is_some() && access["ms"].as_f64().is_some());
    assert!(!access.to_string().contains("secret"));
}
