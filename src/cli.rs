//! The command line: `darkroom [serve]` runs the appliance; `darkroom admin …` does operator
//! tasks directly on the data folder (stop the service first: sled allows one process).

use crate::app::Application;
use crate::config::Config;
use crate::model::ids::OrgName;
use crate::service::accounts;
use crate::storage::Store;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Version and the codecs compiled in, for `darkroom --version`.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ndecode: jpeg (DCT-scaled shrink-on-load), png, gif, webp, tiff, bmp",
    "\nencode: jpeg (4:2:0), png, gif, webp (libwebp, lossy and lossless), avif (rav1e)"
);

/// Darkroom image rendering appliance.
#[derive(Debug, Parser)]
#[command(name = "darkroom", version, long_version = LONG_VERSION, about)]
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
}

#[derive(Debug, Subcommand)]
pub enum Admin {
    /// Organizations.
    #[command(subcommand)]
    Org(OrgCmd),
    /// API keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Run one garbage-collection pass now.
    Gc,
    /// Recompute every counter and reference; exit non-zero if anything disagrees.
    Verify,
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
    let config = Config::load(cli.config.as_deref())?;
    init_logging(&config);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Admin(cmd) => admin(config, cmd),
    }
}

fn init_logging(config: &Config) {
    let env = env_logger::Env::default().default_filter_or(config.log.level.clone());
    let _ = env_logger::Builder::from_env(env).try_init();
}

fn serve(config: Config) -> Result<(), String> {
    let runtime = actix_rt::System::new();
    runtime.block_on(async move {
        let app = Application::build(config.clone())?;
        log::info!(
            "darkroom {} serving the API on {}:{} and renders on {}:{} from {}",
            env!("CARGO_PKG_VERSION"),
            config.server.api_bind.ip(),
            app.api_port(),
            config.server.render_bind.ip(),
            app.render_port(),
            config.storage.path.display()
        );
        app.run_until_stopped().await.map_err(|e| e.to_string())
    })
}

fn admin(config: Config, cmd: Admin) -> Result<(), String> {
    let store =
        Store::open(&config.storage.path, config.storage.cache_mb).map_err(|e| e.to_string())?;
    match cmd {
        Admin::Org(OrgCmd::Create {
            name,
            email,
            display_name,
        }) => {
            let name = OrgName::parse(&name)?;
            let org = accounts::create_org(&store, &name, &email, &display_name)
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
                accounts::create_member(&store, &org, roles, comment).map_err(|e| e.to_string())?;
            println!("{}", member.api_key);
        }
        Admin::Gc => {
            let report = crate::gc::run_once(
                &store,
                crate::model::time::now_unix(),
                &config.gc_settings(),
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
            let problems = store
                .verify(crate::gc::BLOB_GRACE)
                .map_err(|e| e.to_string())?;
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("{p}");
                }
                return Err(format!("verify: {} problem(s) found", problems.len()));
            }
            println!("verify: ok");
        }
    }
    store.flush_blocking().map_err(|e| e.to_string())
}
