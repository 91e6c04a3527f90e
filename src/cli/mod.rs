//! The command line: parses arguments (clap), resolves them into settings,
//! and calls `core`. Exit codes: 0 ok, 1 error, 2 usage. One file per
//! command family (`user`, `security/events`, `security/mfa`, `mail`,
//! `migrate`, `config`, `auth`); this file holds the entry point and what
//! they share.

mod auth;
mod config;
mod mail;
mod migrate;
mod output;
mod password_input;
mod security;
mod user;

use crate::core::{Core, EventSink};
use crate::model::{escape_control, Secret};
use crate::config::Settings;
use crate::store::Store;
use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(name = "portcullis", version, about = "A security gate for small self-hosted systems", propagate_version = true)]
struct Cli {
    /// Config file (default: config/portcullis.hjson if present, else built-in).
    #[arg(long, global = true, env = "PORTCULLIS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gate.
    Serve,
    /// Configuration.
    #[command(subcommand)]
    Config(config::ConfigCmd),
    /// Database migrations.
    #[command(subcommand)]
    Migrate(migrate::MigrateCmd),
    /// Accounts.
    #[command(subcommand)]
    User(user::UserCmd),
    /// Self-service account commands.
    #[command(subcommand)]
    Auth(auth::AuthCmd),
    /// Security events, two-factor authentication and more.
    #[command(subcommand)]
    Security(security::SecurityCmd),
    /// The outgoing mail queue.
    #[command(subcommand)]
    Mail(mail::MailCmd),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", escape_control(&format!("{e:#}")));
            1
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new("info,russh=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
    };
}

fn load_settings(path: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    crate::config::load(path).map_err(|problems| anyhow::anyhow!("invalid configuration:\n  {}", problems.join("\n  ")))
}

/// Opens the database for a CLI command; it must be migrated already.
fn open_core(settings: Settings) -> anyhow::Result<Core> {
    let db = crate::daemon::database_path(&settings);
    if !db.exists() {
        bail!("no database at {} (start the gate once, or run `portcullis migrate run`)", db.display());
    }
    let store = Arc::new(Store::open(&db)?);
    store.require_migrated()?;
    let keyring = crate::core::secrets::Keyring::load_or_create(&settings.data_dir).map_err(anyhow::Error::msg)?;
    Ok(Core::new(store.clone(), settings, EventSink::Direct(store), keyring))
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let path = cli.config.as_deref();
    match cli.command {
        Command::Serve => {
            let settings = load_settings(path)?;
            crate::daemon::serve(settings, cli.config.clone()).await?;
            Ok(0)
        }
        Command::Config(cmd) => config::run(path, cmd),
        Command::Migrate(cmd) => migrate::run(path, cmd),
        Command::User(cmd) => user::run(open_core(load_settings(path)?)?, cmd).await,
        Command::Auth(cmd) => auth::run(open_core(load_settings(path)?)?, cmd).await,
        Command::Security(cmd) => security::run(open_core(load_settings(path)?)?, cmd).await,
        Command::Mail(cmd) => mail::run(open_core(load_settings(path)?)?, cmd),
    }
}

fn read_password(from_stdin: bool) -> anyhow::Result<Secret<String>> {
    if from_stdin {
        password_input::from_stdin()
    } else {
        password_input::from_terminal("New password: ", "Repeat it: ")
    }
}
