//! The control socket: `darkroom admin …` while the service runs.
//!
//! sled lets one process open the data folder, so while the service runs it does the work of
//! an admin command itself. It listens on `control.sock` in the data folder: a Unix socket of
//! mode 0600, so only its owner (the service's user) and root can connect, and each peer's
//! credentials are checked again on accept. No network port and no key are involved.
//!
//! The exchange is a few frames, each a kind byte, a big-endian `u32` length and the payload:
//! - client → service: `C` the command (the parsed `Admin` as JSON); for `import`, the backup
//!   as `D` frames closed by an empty `E`;
//! - service → client: `O` a line for stdout, `R` a line for stderr, `P` progress (JSON
//!   `[step, done, total]`), `D` backup bytes (for `export`), `K` an operator key (for
//!   `import-rokka`), and last `X`, empty on success or the error message.
//!
//! `import-rokka` copies through the service's own API: the service mints an operator key
//! that works as the root key until the client's connection closes.

use super::{execute, Admin, Console};
use crate::config::Config;
use crate::service::Services;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The socket's file name in the data folder.
pub const SOCKET: &str = "control.sock";

/// Largest frame either side sends.
const MAX_FRAME: usize = 4 << 20;

/// Admin commands served at once; more are refused with a message.
const MAX_CLIENTS: usize = 4;

fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    w.write_all(&[kind])?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(payload)
}

/// The next frame, or `None` at a clean end of the stream.
fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..])?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control frame too large",
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

// ---- the service's side -------------------------------------------------------------------

/// The listening control socket; [`Control::stop`] (or dropping it) closes it and removes
/// the socket file, so the listener lets go of the store.
pub struct Control {
    path: std::path::PathBuf,
    stopping: Arc<AtomicBool>,
    /// The listening socket the thread accepts on (a second handle), shut down to wake it.
    listener: UnixListener,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Control {
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept, which then fails, and the listener sees the flag and ends. A
        // connection by the socket's path would wake it too, unless the file was removed
        // (with the data folder, say): then the join below would wait forever and the service
        // would never stop.
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown only changes the state of a socket this struct owns; the
        // descriptor stays open until the struct is dropped.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = thread.join();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Listens on the data folder's control socket, one thread per client. A socket file left by
/// a service that died is replaced: this process holds the data folder's lock.
pub fn listen(services: Arc<Services>, api_port: u16) -> io::Result<Control> {
    let path = services.config.storage.path.join(SOCKET);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Created with no access for anyone else; the mode is then exactly 0600.
    // SAFETY: umask only changes this process's file-creation mask.
    let previous = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(&path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(previous) };
    let listener = bound?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let waker = listener.try_clone()?;
    let clients = Arc::new(AtomicUsize::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let services = services.clone();
                let clients = clients.clone();
                let spawned = std::thread::Builder::new()
                    .name("control client".into())
                    .spawn(move || {
                        let busy = clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS;
                        if let Err(e) = serve_client(stream, &services, api_port, busy) {
                            log::warn!("control socket: {e}");
                        }
                        clients.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    log::warn!("control socket: cannot start a client thread: {e}");
                }
            }
        })?;
    Ok(Control {
        path,
        stopping,
        listener: waker,
        thread: Some(thread),
    })
}

/// The uid of the process at the other end of `stream`.
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Whether a peer of `uid` may run admin commands: root, or the service's own user.
pub fn peer_allowed(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// Sends `O`/`R`/`P` frames for the lines and progress of a command run in the service.
struct Remote<'a, W: Write> {
    out: &'a mut W,
    failed: Option<io::Error>,
    /// When progress was last sent: at most a few frames a second.
    last_progress: Option<std::time::Instant>,
}

impl<'a, W: Write> Remote<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Remote {
            out,
            failed: None,
            last_progress: None,
        }
    }
}

impl<W: Write> Remote<'_, W> {
    fn line(&mut self, kind: u8, line: &str) {
        if self.failed.is_none() {
            if let Err(e) = write_frame(self.out, kind, line.as_bytes()) {
                self.failed = Some(e);
            }
        }
    }
}

impl<W: Write> Console for Remote<'_, W> {
    fn out(&mut self, line: &str) {
        self.line(b'O', line);
    }

    fn err(&mut self, line: &str) {
        self.line(b'R', line);
    }

    fn progress(&mut self, step: &str, done: u64, total: Option<u64>) {
        let last = total == Some(done);
        if !last
            && self
                .last_progress
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(200))
        {
            return;
        }
        self.last_progress = Some(std::time::Instant::now());
        let frame = serde_json::json!([step, done, total]).to_string();
        self.line(b'P', &frame);
        if self.failed.is_none() {
            if let Err(e) = self.out.flush() {
                self.failed = Some(e);
            }
        }
    }
}

/// Backup bytes as `D` frames.
struct DataFrames<'a, W: Write>(&'a mut W);

impl<W: Write> Write for DataFrames<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_FRAME);
        write_frame(self.0, b'D', &data[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn serve_client(
    stream: UnixStream,
    services: &Services,
    api_port: u16,
    busy: bool,
) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream.try_clone()?);
    let finish = |w: &mut BufWriter<UnixStream>, outcome: Result<(), String>| {
        let message = outcome.err().unwrap_or_default();
        write_frame(w, b'X', message.as_bytes())?;
        w.flush()
    };
    let uid = peer_uid(&stream)?;
    if !peer_allowed(uid) {
        log::warn!("control socket: refused a client of uid {uid}");
        return finish(
            &mut writer,
            Err(format!(
                "the control socket refuses uid {uid}: run darkroom admin as root or as the service's user"
            )),
        );
    }
    if busy {
        return finish(
            &mut writer,
            Err(format!(
                "the service runs {MAX_CLIENTS} admin commands already; try again shortly"
            )),
        );
    }
    let cmd = match read_frame(&mut reader)? {
        Some((b'C', json)) => serde_json::from_slice::<Admin>(&json)
            .map_err(|e| format!("a command this service does not understand: {e}")),
        _ => Err("expected a command".to_string()),
    };
    let cmd = match cmd {
        Ok(cmd) => cmd,
        Err(e) => return finish(&mut writer, Err(e)),
    };
    log::info!("control socket: admin {}", command_name(&cmd));
    let config: &Config = &services.config;
    let outcome = match cmd {
        Admin::Export { renders, .. } => {
            // Bytes served so far belong in the day figures the backup carries.
            let flushed = services
                .traffic
                .flush(&*services.store)
                .map_err(|e| e.to_string());
            flushed.and_then(|_| {
                services
                    .export(&mut DataFrames(&mut writer), renders)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        }
        Admin::Import { .. } => receive_import(&mut reader, &mut writer, services),
        Admin::Compact => Err(
            "compact rewrites the whole database: stop the service first (systemctl stop darkroom)"
                .into(),
        ),
        Admin::ImportRokka { .. } => {
            let key = services.operator_keys.mint().map_err(|e| e.to_string());
            match key {
                Ok(key) => {
                    let grant = serde_json::json!({
                        "api": format!("127.0.0.1:{api_port}"),
                        "key": key,
                    });
                    write_frame(&mut writer, b'K', grant.to_string().as_bytes())?;
                    writer.flush()?;
                    // The key lives until the client closes the connection.
                    let mut rest = Vec::new();
                    let _ = reader.read_to_end(&mut rest);
                    services.operator_keys.revoke(&key);
                    return Ok(());
                }
                Err(e) => Err(e),
            }
        }
        other => {
            let mut console = Remote::new(&mut writer);
            let done = execute(
                other,
                config,
                &*services.store,
                &*services.blobs,
                &mut console,
            );
            match console.failed {
                Some(e) => return Err(e),
                None => done,
            }
        }
    };
    finish(&mut writer, outcome)
}

fn command_name(cmd: &Admin) -> &'static str {
    match cmd {
        Admin::Org(_) => "org",
        Admin::Key(_) => "key",
        Admin::Token(_) => "token",
        Admin::Gc => "gc",
        Admin::Verify => "verify",
        Admin::Compact => "compact",
        Admin::Export { .. } => "export",
        Admin::Import { .. } => "import",
        Admin::ImportRokka { .. } => "import-rokka",
    }
}

/// `import` through the socket: the backup arrives as `D` frames into a temporary file in
/// the data folder, and is restored from there like a local file.
fn receive_import(
    reader: &mut impl Read,
    writer: &mut impl Write,
    services: &Services,
) -> Result<(), String> {
    // tmp/ is emptied at every start, so a file left by a crash does not stay.
    let id = crate::service::accounts::generate_id().map_err(|e| e.to_string())?;
    let path = services
        .config
        .storage
        .path
        .join("tmp")
        .join(format!("import-{id}.backup"));
    let received = (|| -> Result<(), String> {
        let file = std::fs::File::create(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut out = BufWriter::new(file);
        loop {
            match read_frame(reader).map_err(|e| e.to_string())? {
                Some((b'D', data)) => out.write_all(&data).map_err(|e| e.to_string())?,
                Some((b'E', _)) => break,
                _ => return Err("the backup ended early".into()),
            }
        }
        out.flush().map_err(|e| e.to_string())
    })();
    let mut console = Remote::new(writer);
    let imported = received
        .and_then(|_| super::import(&*services.store, &*services.blobs, &path, &mut console));
    let _ = std::fs::remove_file(&path);
    console.out(&imported?);
    console.failed.map_or(Ok(()), |e| Err(e.to_string()))
}

// ---- the command line's side --------------------------------------------------------------

/// A connection to the running service's control socket.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connects to the service that runs on `data`, or `None` when none does (no socket, or a
    /// socket nobody listens on any more).
    pub fn connect(data: &Path) -> Result<Option<Client>, String> {
        let path = data.join(SOCKET);
        match UnixStream::connect(&path) {
            Ok(stream) => Ok(Some(Client { stream })),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(format!(
                "the service runs but its control socket {} is not open to this user: run darkroom admin as root or as the service's user",
                path.display()
            )),
            Err(e) => Err(format!("cannot reach the service at {}: {e}", path.display())),
        }
    }

    /// Runs `cmd` in the service and prints what it answers, as the command would have
    /// printed it run here.
    pub fn run(self, config: &Config, cmd: Admin) -> Result<(), String> {
        let failed = |e: io::Error| format!("the control socket broke off: {e}");
        let mut reader = BufReader::new(self.stream.try_clone().map_err(failed)?);
        let mut writer = BufWriter::new(self.stream.try_clone().map_err(failed)?);
        let json = serde_json::to_vec(&cmd).map_err(|e| e.to_string())?;
        let sent = write_frame(&mut writer, b'C', &json).and_then(|()| writer.flush());
        if let Err(e) = sent {
            // A service that refuses this caller answers and closes before reading anything:
            // its verdict says why.
            return match read_frame(&mut reader) {
                Ok(Some((b'X', message))) if !message.is_empty() => {
                    Err(String::from_utf8_lossy(&message).into_owned())
                }
                _ => Err(failed(e)),
            };
        }
        match cmd {
            Admin::Export { to, .. } => super::export(&to, |file| {
                let mut out = BufWriter::new(file);
                let done = relay(&mut reader, &mut super::Terminal::default(), Some(&mut out));
                out.flush().map_err(|e| e.to_string())?;
                done.map(|_| {
                    format!(
                        "the running service ({})",
                        config.storage.path.join(SOCKET).display()
                    )
                })
            }),
            Admin::Import { from } => {
                let mut file = std::fs::File::open(&from)
                    .map_err(|e| format!("cannot read {}: {e}", from.display()))?;
                let size = file.metadata().map(|m| m.len()).ok();
                let mut terminal = super::Terminal::default();
                let mut chunk = vec![0u8; 1 << 20];
                let mut sent = 0u64;
                loop {
                    let n = file.read(&mut chunk).map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    write_frame(&mut writer, b'D', &chunk[..n]).map_err(failed)?;
                    sent += n as u64;
                    terminal.progress("bytes sent", sent, size);
                }
                write_frame(&mut writer, b'E', &[]).map_err(failed)?;
                writer.flush().map_err(failed)?;
                relay(&mut reader, &mut terminal, None)
            }
            Admin::ImportRokka {
                api_host,
                api_key,
                organization,
                into,
                aliases,
            } => {
                let grant = match read_frame(&mut reader).map_err(failed)? {
                    Some((b'K', json)) => serde_json::from_slice::<serde_json::Value>(&json)
                        .map_err(|e| e.to_string())?,
                    Some((b'X', message)) => {
                        return Err(String::from_utf8_lossy(&message).into_owned())
                    }
                    _ => return Err("the service answered no operator key".into()),
                };
                let api = grant["api"].as_str().unwrap_or_default().to_string();
                let key = grant["key"].as_str().unwrap_or_default().to_string();
                // The key dies with this connection, held open until the import is done.
                let outcome = super::import_rokka::run(
                    config,
                    Some((api, key)),
                    super::import_rokka::Request {
                        api_host,
                        api_key: super::rokka_key(api_key)?,
                        organization,
                        into,
                        aliases,
                    },
                );
                drop(writer);
                drop(self.stream);
                outcome
            }
            _ => relay(&mut reader, &mut super::Terminal::default(), None),
        }
    }
}

/// Prints the service's lines (and writes its backup bytes to `data`) up to its verdict.
fn relay(
    reader: &mut impl Read,
    console: &mut dyn Console,
    mut data: Option<&mut dyn Write>,
) -> Result<(), String> {
    let mut written = 0u64;
    loop {
        let frame = read_frame(reader).map_err(|e| format!("the control socket broke off: {e}"))?;
        match frame {
            Some((b'O', line)) => console.out(&String::from_utf8_lossy(&line)),
            Some((b'R', line)) => console.err(&String::from_utf8_lossy(&line)),
            Some((b'P', json)) => {
                if let Ok((step, done, total)) =
                    serde_json::from_slice::<(String, u64, Option<u64>)>(&json)
                {
                    console.progress(&step, done, total);
                }
            }
            Some((b'D', bytes)) => match data.as_mut() {
                Some(out) => {
                    out.write_all(&bytes).map_err(|e| e.to_string())?;
                    written += bytes.len() as u64;
                    console.progress("bytes written", written, None);
                }
                None => return Err("the service sent data nobody asked for".into()),
            },
            Some((b'X', message)) if message.is_empty() => return Ok(()),
            Some((b'X', message)) => return Err(String::from_utf8_lossy(&message).into_owned()),
            Some((kind, _)) => {
                return Err(format!(
                    "the service sent an unknown frame '{}'",
                    kind as char
                ))
            }
            None => return Err("the service closed the control socket without a verdict".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b'O', b"hello").unwrap();
        write_frame(&mut buf, b'X', b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).unwrap(), Some((b'O', b"hello".to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), Some((b'X', Vec::new())));
        assert_eq!(read_frame(&mut r).unwrap(), None);

        let mut huge = vec![b'D'];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(read_frame(&mut &huge[..]).is_err());
    }

    #[test]
    fn only_root_and_the_services_own_user_are_let_in() {
        assert!(peer_allowed(0));
        // SAFETY: geteuid has no preconditions.
        assert!(peer_allowed(unsafe { libc::geteuid() }));
        let other = if unsafe { libc::geteuid() } == 65534 {
            65533
        } else {
            65534
        };
        assert!(!peer_allowed(other));
    }

    #[test]
    fn a_command_travels_as_json() {
        let cmd = Admin::Export {
            to: "/tmp/x.backup".into(),
            renders: true,
        };
        let json = serde_json::to_vec(&cmd).unwrap();
        assert!(matches!(
            serde_json::from_slice::<Admin>(&json).unwrap(),
            Admin::Export { renders: true, .. }
        ));
    }
}
