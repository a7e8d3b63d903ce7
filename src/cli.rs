//! The command line: `darkroom [serve]` runs the appliance; `darkroom admin …` does operator
//! tasks directly on the data folder (stop the service first: sled allows one process). The
//! exception is `admin export`, which asks the running service for the backup over its API
//! (with the root key) and opens the data folder itself only when nothing listens.

use crate::app::Application;
use crate::config::Config;
use crate::model::ids::OrgName;
use crate::service::accounts;
use crate::storage::backup::{self, BackupCounts};
use crate::storage::Storage;
use clap::{Parser, Subcommand};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Version and the codecs compiled in, for `darkroom --version`.
pub fn long_version() -> String {
    let simd = if crate::render::codecs::libjpeg_simd() {
        "with SIMD"
    } else {
        "plain C: built without nasm"
    };
    use crate::render::codecs::{decodes, SourceFormat};
    let missing: Vec<&str> = [SourceFormat::Avif, SourceFormat::Heic]
        .into_iter()
        .filter(|f| !decodes(*f))
        .map(|f| f.ext())
        .collect();
    let heif = if missing.is_empty() {
        ", avif, heic (libheif)".to_owned()
    } else {
        format!(
            "\nnot in this build: {} sources (answered 415; build with --features heif and libheif)",
            missing.join(", ")
        )
    };
    format!(
        "{}\ndecode: jpeg (renders: libjpeg/mozjpeg {simd}, DCT-scaled shrink-on-load; upload check: jpeg-decoder), png, gif, webp, tiff (first page), bmp, svg (resvg, drawn at the rendered size){heif}\nfonts: ttf, otf (stored for the text operation)\nencode: jpeg (4:2:0), png, gif, webp (libwebp, lossy and lossless), avif (rav1e)",
        env!("CARGO_PKG_VERSION")
    )
}

/// Parses the command line; `--version` names the fast paths this binary has.
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    // Once per process, so the leak is bounded.
    let version: &'static str = Box::leak(long_version().into_boxed_str());
    let matches = Cli::command().long_version(version).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Darkroom image rendering appliance.
#[derive(Debug, Parser)]
#[command(name = "darkroom", version, about)]
pub struct Cli {
    /// Configuration file (default: ./appliance.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance (the default).
    Serve,
    /// Operator tasks on the data folder.
    #[command(subcommand)]
    Admin(Admin),
    /// Encodes one AVIF image from stdin to stdout: the child process that lets the service
    /// stop an AVIF encode (see `render::codecs::avif`).
    #[command(hide = true)]
    EncodeAvif,
}

#[derive(Debug, Subcommand)]
pub enum Admin {
    /// Organizations.
    #[command(subcommand)]
    Org(OrgCmd),
    /// API keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Run one garbage-collection pass now.
    Gc,
    /// Recompute every counter and reference; exit non-zero if anything disagrees.
    Verify,
    /// Rewrite the database into a fresh file, giving back the space of deleted records (the
    /// service stopped).
    Compact,
    /// Write a backup to FILE: from the running service (at server.api_bind, with
    /// auth.root_key) when it answers, else from the data folder.
    Export {
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Include the stored renders (otherwise they are rendered again on demand).
        #[arg(long)]
        renders: bool,
    },
    /// Restore a backup into an empty data folder (the service stopped).
    Import {
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCmd {
    /// Create an organization.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        email: String,
        #[arg(long, default_value = "")]
        display_name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Replace the secret that signs API tokens: every token issued so far stops working.
    RotateSecret,
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create a new user with one API key and a membership on ORG; prints the key.
    Create {
        org: String,
        /// Comma-separated roles: read, write, upload, admin.
        #[arg(long, default_value = "admin")]
        roles: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

/// Runs the parsed command line; the error text is printed by `main`.
pub fn run(cli: Cli) -> Result<(), String> {
    if matches!(cli.command, Some(Command::EncodeAvif)) {
        return crate::render::codecs::avif_child_main();
    }
    let config = Config::load(cli.config.as_deref())?;
    init_logging(&config);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Admin(cmd) => admin(config, cmd),
        Command::EncodeAvif => crate::render::codecs::avif_child_main(),
    }
}

fn init_logging(config: &Config) {
    crate::logging::init(&config.log.level, config.log.format);
}

fn serve(config: Config) -> Result<(), String> {
    // AVIF encodes run in a child process of this binary, so that a cancelled render stops.
    match std::env::current_exe() {
        Ok(exe) => crate::render::codecs::use_avif_helper(exe),
        Err(e) => log::warn!("AVIF encodes run in this process and cannot be stopped: {e}"),
    }
    let runtime = actix_rt::System::new();
    runtime.block_on(async move {
        let app = Application::build(config.clone())?;
        let status = format!(
            "serving the API on {}:{} and renders on {}:{} from {}",
            config.server.api_bind.ip(),
            app.api_port(),
            config.server.render_bind.ip(),
            app.render_port(),
            config.storage.path.display()
        );
        log::info!("darkroom {} {status}", env!("CARGO_PKG_VERSION"));
        // Both listeners are bound and the store is open: systemd may send traffic now.
        crate::jobs::systemd::ready(&status);
        app.run_until_stopped().await.map_err(|e| e.to_string())
    })
}

fn admin(config: Config, cmd: Admin) -> Result<(), String> {
    let cmd =
        match cmd {
            Admin::Export { to, renders } => return export(&config, &to, renders),
            Admin::Import { from } => return import(&config, &from),
            Admin::Compact => {
                let (before, after) = crate::storage::compact::compact(&config.storage.path)
                    .map_err(|e| match e.to_string() {
                        m if m.contains("lock") => format!("{m}: stop the service first"),
                        m => m,
                    })?;
                println!(
                    "compact: the database went from {} to {} bytes",
                    before, after
                );
                return Ok(());
            }
            other => other,
        };
    let storage = open_storage(&config)?;
    let store = &*storage.records;
    match cmd {
        Admin::Org(OrgCmd::Create {
            name,
            email,
            display_name,
        }) => {
            let name = OrgName::parse(&name)?;
            let org = accounts::create_org(store, &name, &email, &display_name)
                .map_err(|e| e.to_string())?;
            println!("created organization {} ({})", org.name, org.id);
        }
        Admin::Key(KeyCmd::Create {
            org,
            roles,
            comment,
        }) => {
            let org = OrgName::parse(&org)?;
            let raw: Vec<String> = roles
                .split(',')
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect();
            let roles = accounts::parse_roles(&raw).map_err(|e| e.to_string())?;
            let member =
                accounts::create_member(store, &accounts::Principal::Root, &org, roles, comment)
                    .map_err(|e| e.to_string())?;
            println!("{}", member.api_key);
        }
        Admin::Token(TokenCmd::RotateSecret) => {
            store.rotate_token_secret().map_err(|e| e.to_string())?;
            println!("token secret replaced: tokens issued before now are no longer valid");
        }
        Admin::Gc => {
            let report = crate::gc::run_once(
                store,
                &*storage.bytes,
                crate::model::time::now_unix(),
                &crate::gc::GcSettings {
                    full_sweep: true,
                    ..crate::gc::GcSettings::from_config(&config)
                },
            )
            .map_err(|e| e.to_string())?;
            println!(
                "gc: {} expired images, {} blobs removed, {} orphan renders, {} bytes freed{}",
                report.expired_images,
                report.blobs_removed,
                report.orphan_renders,
                report.bytes_freed,
                if report.incomplete {
                    " (work bound reached; run again)"
                } else {
                    ""
                }
            );
        }
        Admin::Verify => {
            let problems =
                crate::storage::check::verify(store, &*storage.bytes, crate::gc::BLOB_GRACE)
                    .map_err(|e| e.to_string())?;
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("{p}");
                }
                return Err(format!("verify: {} problem(s) found", problems.len()));
            }
            println!("verify: ok");
        }
        // Handled above: they decide themselves whether to open the data folder.
        Admin::Export { .. } | Admin::Import { .. } | Admin::Compact => {}
    }
    store.flush_blocking().map_err(|e| e.to_string())
}

/// The configured storage, opened by this process (the service must not be running).
fn open_storage(config: &Config) -> Result<Storage, String> {
    Storage::open_embedded(&config.storage.path, config.storage.cache_mb, 0)
        .map_err(|e| e.to_string())
}

/// The address where the service's API would answer, when it listens on a fixed port.
fn api_address(config: &Config) -> Option<SocketAddr> {
    let mut addr = config.server.api_bind;
    if addr.port() == 0 {
        return None;
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Some(addr)
}

/// `admin export`: writes `FILE.tmp`, checks it completely, fsyncs it and renames it to
/// FILE, so FILE is never a partial backup.
fn export(config: &Config, to: &Path, renders: bool) -> Result<(), String> {
    let started = Instant::now();
    let mut tmp_name = to.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = to.with_file_name(tmp_name);
    let written = (|| -> Result<(BackupCounts, String), String> {
        let mut file = std::fs::File::create(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        let running = match api_address(config) {
            Some(addr) => match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            {
                Ok(_) => Some(addr),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => None,
                Err(e) => return Err(format!("cannot reach the service at {addr}: {e}")),
            },
            None => None,
        };
        let source = match running {
            Some(addr) => {
                export_from_service(config, addr, renders, &mut file)?;
                format!("the running service at {addr}")
            }
            None => {
                let storage = open_storage(config).map_err(|e| {
                    format!("{e} (no service answered at server.api_bind, so the export opened the data folder itself)")
                })?;
                backup::export(&*storage.records, &*storage.bytes, &mut file, renders)
                    .map_err(|e| e.to_string())?;
                format!("the data folder {}", config.storage.path.display())
            }
        };
        file.sync_all().map_err(|e| e.to_string())?;
        let counts = backup::check_file(&tmp).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, to).map_err(|e| format!("cannot rename to {}: {e}", to.display()))?;
        // The rename is durable only once the directory entry is.
        let dir = to.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::File::open(dir.unwrap_or(Path::new(".")))
            .and_then(|d| d.sync_all())
            .map_err(|e| e.to_string())?;
        Ok((counts, source))
    })();
    let (counts, source) = written.inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    let size = std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    println!(
        "exported {counts} from {source} to {} ({size} bytes) in {:.2}s",
        to.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Streams `GET /admin/export` of the running service into `file`.
fn export_from_service(
    config: &Config,
    addr: SocketAddr,
    renders: bool,
    file: &mut std::fs::File,
) -> Result<(), String> {
    use futures_util::StreamExt;
    use std::io::Write;
    if config.auth.root_key.is_empty() {
        return Err(format!(
            "the service at {addr} is running and auth.root_key is not set: set it (config or DARKROOM__AUTH__ROOT_KEY) so the export can ask the service"
        ));
    }
    let url = format!(
        "http://{addr}/admin/export{}",
        if renders { "?renders=true" } else { "" }
    );
    actix_rt::System::new().block_on(async {
        // The timeout covers the answer's head; the body streams as long as it takes.
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        let mut resp = client
            .get(&url)
            .insert_header(("Api-Key", config.auth.root_key.as_str()))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            let body = resp.body().await.unwrap_or_default();
            return Err(format!(
                "{url} answered {}: {}",
                resp.status(),
                String::from_utf8_lossy(&body)
            ));
        }
        let mut out = std::io::BufWriter::new(file);
        while let Some(chunk) = resp.next().await {
            let chunk = chunk.map_err(|e| format!("the export from {url} broke off: {e}"))?;
            out.write_all(&chunk).map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())
    })
}

/// `admin import`: restores a backup into the (empty) configured data folder.
fn import(config: &Config, from: &Path) -> Result<(), String> {
    let started = Instant::now();
    let storage = open_storage(config)?;
    let done = backup::import(&*storage.records, &*storage.bytes, from)
        .map_err(|e| format!("{e} (data folder {})", config.storage.path.display()))?;
    println!(
        "imported {} into {} in {:.2}s{}; verify: ok",
        done.counts,
        config.storage.path.display(),
        started.elapsed().as_secs_f64(),
        if done.skipped_renders > 0 {
            format!(
                " ({} renders left out: not reachable)",
                done.skipped_renders
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
