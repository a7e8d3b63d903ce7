//! The command line: `darkroom [serve]` runs the appliance; `darkroom admin …` does operator
//! tasks. While the service runs, an admin command goes through its control socket
//! ([`control`]: sled allows one process, so the service does the work); otherwise it opens
//! the data folder itself. Both ways run the same code and print the same output.

pub mod control;
mod import_rokka;
mod progress;

use crate::app::Application;
use crate::config::Config;
use crate::model::ids::OrgName;
use crate::service::accounts;
use crate::storage::backup::{self, BackupCounts};
use crate::storage::Storage;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Instant;

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

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
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
    /// Copy an organization from a rokka-compatible API (rokka, or another Darkroom): source
    /// images with their hashes, metadata and flags, stacks and aliases. Into the running
    /// service when it answers (with auth.root_key), else into the data folder. Run it again
    /// to resume; it copies only what is missing or different.
    ImportRokka {
        /// The API to copy from, e.g. https://api.rokka.io.
        #[arg(long, value_name = "URL")]
        api_host: String,
        /// An API key of the source organization with read rights (and
        /// sourceimages:download:protected for protected images); else ROKKA_API_KEY.
        #[arg(long, value_name = "KEY")]
        api_key: Option<String>,
        /// The organization to copy.
        #[arg(long, value_name = "ORG")]
        organization: String,
        /// The organization here (default: the same name); created when missing.
        #[arg(long, value_name = "ORG")]
        into: Option<String>,
        /// An alias to copy, when the source cannot list its aliases (rokka cannot); repeat
        /// for several.
        #[arg(long = "alias", value_name = "NAME")]
        aliases: Vec<String>,
    },
}

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
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

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
pub enum TokenCmd {
    /// Replace the secret that signs API tokens: every token issued so far stops working.
    RotateSecret,
}

#[derive(Debug, Subcommand, serde::Serialize, serde::Deserialize)]
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
        // `darkroom admin` reaches the running service here.
        let control = control::listen(app.services().into_inner(), app.api_port())
            .inspect_err(|e| {
                log::warn!(
                    "cannot open the control socket in {}: {e}; admin commands need the service stopped",
                    config.storage.path.display()
                )
            })
            .ok();
        // Both listeners are bound and the store is open: systemd may send traffic now.
        crate::jobs::systemd::ready(&status);
        let stopped = app.run_until_stopped().await.map_err(|e| e.to_string());
        if let Some(control) = control {
            control.stop();
        }
        stopped
    })
}

/// Where an admin command writes its lines and its progress: the terminal, or a
/// control-socket client.
pub trait Console {
    fn out(&mut self, line: &str);
    fn err(&mut self, line: &str);
    /// `done` units of `step` so far, of `total` when known.
    fn progress(&mut self, step: &str, done: u64, total: Option<u64>);
}

/// The terminal: lines as they come, progress as a bar or periodic lines.
#[derive(Default)]
struct Terminal {
    meter: Option<progress::Meter>,
}

impl Terminal {
    fn end_progress(&mut self) {
        if let Some(meter) = self.meter.take() {
            meter.finish();
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.end_progress();
    }
}

impl Console for Terminal {
    fn out(&mut self, line: &str) {
        self.end_progress();
        println!("{line}");
    }

    fn err(&mut self, line: &str) {
        self.end_progress();
        eprintln!("{line}");
    }

    fn progress(&mut self, step: &str, done: u64, total: Option<u64>) {
        if self.meter.as_ref().is_none_or(|m| m.step() != step) {
            self.end_progress();
            self.meter = Some(progress::Meter::new(step));
        }
        if let Some(meter) = &mut self.meter {
            meter.update(done, total);
        }
    }
}

fn admin(config: Config, cmd: Admin) -> Result<(), String> {
    if matches!(cmd, Admin::Compact) && config.database_settings().is_some() {
        return Err(
            "compact rewrites the embedded database; the records are in PostgreSQL \
             (storage.database_url), which reclaims space with VACUUM"
                .into(),
        );
    }
    if let Some(service) = control::Client::connect(&config.storage.path)? {
        return service.run(&config, cmd);
    }
    match cmd {
        Admin::Export { to, renders } => export(&to, |file| {
            let storage = open_storage(&config)?;
            let mut terminal = Terminal::default();
            let mut note = |n| terminal.progress("bytes written", n, None);
            let out = progress::Counted {
                inner: file,
                done: 0,
                note: &mut note,
            };
            backup::export(&*storage.records, &*storage.bytes, out, renders)
                .map_err(|e| e.to_string())?;
            Ok(format!("the data folder {}", config.storage.path.display()))
        }),
        Admin::Import { from } => {
            let storage = open_storage(&config)?;
            let mut terminal = Terminal::default();
            let line = import(&*storage.records, &*storage.bytes, &from, &mut terminal)
                .map_err(|e| format!("{e} (data folder {})", config.storage.path.display()))?;
            terminal.out(&line);
            Ok(())
        }
        Admin::Compact => {
            let (before, after) =
                crate::storage::compact::compact(&config.storage.path).map_err(|e| {
                    match e.to_string() {
                        m if m.contains("lock") => format!("{m}: stop the service first"),
                        m => m,
                    }
                })?;
            println!("compact: the database went from {before} to {after} bytes");
            Ok(())
        }
        Admin::ImportRokka {
            api_host,
            api_key,
            organization,
            into,
            aliases,
        } => import_rokka::run(
            &config,
            None,
            import_rokka::Request {
                api_host,
                api_key: rokka_key(api_key)?,
                organization,
                into,
                aliases,
            },
        ),
        other => {
            let storage = open_storage(&config)?;
            execute(
                other,
                &config,
                &*storage.records,
                &*storage.bytes,
                &mut Terminal::default(),
            )?;
            storage.records.flush_blocking().map_err(|e| e.to_string())
        }
    }
}

/// The source key of `import-rokka`: the option, or `ROKKA_API_KEY`.
fn rokka_key(given: Option<String>) -> Result<String, String> {
    match given {
        Some(k) => Ok(k),
        None => std::env::var("ROKKA_API_KEY")
            .map_err(|_| "give the source's key with --api-key or ROKKA_API_KEY".to_string()),
    }
}

/// The admin commands that work on the records and bytes alone, wherever they are open: in
/// this process, or in the service for a control-socket client.
pub fn execute(
    cmd: Admin,
    config: &Config,
    store: &dyn crate::storage::Records,
    bytes: &dyn crate::storage::Bytes,
    console: &mut dyn Console,
) -> Result<(), String> {
    match cmd {
        Admin::Org(OrgCmd::Create {
            name,
            email,
            display_name,
        }) => {
            let name = OrgName::parse(&name)?;
            let org = accounts::create_org(store, &name, &email, &display_name)
                .map_err(|e| e.to_string())?;
            console.out(&format!("created organization {} ({})", org.name, org.id));
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
            console.out(&member.api_key);
        }
        Admin::Token(TokenCmd::RotateSecret) => {
            store.rotate_token_secret().map_err(|e| e.to_string())?;
            console.out("token secret replaced: tokens issued before now are no longer valid");
        }
        Admin::Gc => {
            let report = crate::gc::run_once_reporting(
                store,
                bytes,
                crate::model::time::now_unix(),
                &crate::gc::GcSettings {
                    full_sweep: true,
                    ..crate::gc::GcSettings::from_config(config)
                },
                &mut |step, done, total| console.progress(step, done, total),
            )
            .map_err(|e| e.to_string())?;
            if report.busy {
                return Err("gc: another node is collecting now; run again later".into());
            }
            console.out(&format!(
                "gc: {} expired images, {} blobs removed, {} orphan renders, {} orphan mezzanines, {} bytes freed{}",
                report.expired_images,
                report.blobs_removed,
                report.orphan_renders,
                report.orphan_mezzanines,
                report.bytes_freed,
                if report.incomplete {
                    " (work bound reached; run again)"
                } else {
                    ""
                }
            ));
        }
        Admin::Verify => {
            let problems = crate::storage::check::verify(
                store,
                bytes,
                crate::gc::BLOB_GRACE,
                &mut |step, done, total| console.progress(step, done, total),
            )
            .map_err(|e| e.to_string())?;
            if !problems.is_empty() {
                for p in &problems {
                    console.err(p);
                }
                return Err(format!("verify: {} problem(s) found", problems.len()));
            }
            console.out("verify: ok");
        }
        Admin::Export { .. }
        | Admin::Import { .. }
        | Admin::ImportRokka { .. }
        | Admin::Compact => {
            return Err(
                "this command streams or needs the whole data folder; it is run by its own path"
                    .into(),
            )
        }
    }
    store.flush_blocking().map_err(|e| e.to_string())
}

/// The configured storage, opened by this process (the service must not be running).
fn open_storage(config: &Config) -> Result<Storage, String> {
    config.open_storage(0).map_err(|e| e.to_string())
}

/// `admin export`: `write` fills `FILE.tmp` (and names where the backup came from), which is
/// checked completely, fsynced and renamed to FILE, so FILE is never a partial backup.
fn export(
    to: &Path,
    write: impl FnOnce(&mut std::fs::File) -> Result<String, String>,
) -> Result<(), String> {
    let started = Instant::now();
    let mut tmp_name = to.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = to.with_file_name(tmp_name);
    let written = (|| -> Result<(BackupCounts, String), String> {
        let mut file = std::fs::File::create(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        let source = write(&mut file)?;
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

/// `admin import`: restores the backup at `from` into the (empty) store; the summary line.
pub fn import(
    records: &dyn crate::storage::Records,
    bytes: &dyn crate::storage::Bytes,
    from: &Path,
    console: &mut dyn Console,
) -> Result<String, String> {
    let started = Instant::now();
    let done = backup::import(records, bytes, from, &mut |step, n, total| {
        console.progress(step, n, total)
    })
    .map_err(|e| e.to_string())?;
    // Renders in a backup of an earlier renderer would answer other bytes than a render now.
    crate::service::renders::retire_older_renders(records).map_err(|e| e.to_string())?;
    Ok(format!(
        "imported {} in {:.2}s{}; verify: ok",
        done.counts,
        started.elapsed().as_secs_f64(),
        if done.skipped_renders > 0 {
            format!(
                " ({} renders left out: not reachable)",
                done.skipped_renders
            )
        } else {
            String::new()
        }
    ))
}
