//! The command line: parses arguments (clap), resolves them into settings,
//! and calls `core`. Exit codes: 0 ok, 1 error, 2 usage. One file per
//! command family (`user`, `security/events`, `security/mfa`, `mail`,
//! `migrate`, `config`, `auth`); this file holds the entry point and what
//! they share.

mod auth;
mod config;
mod docs;
mod mail;
mod migrate;
mod output;
mod password_input;
mod security;
mod user;

use crate::core::accounts::Actor;
use crate::core::{Core, EventSink};
use crate::model::{escape_control, Secret};
use crate::config::Settings;
use crate::store::Store;
use anyhow::Context as _;
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
    /// Show times in tables in UTC instead of the configured time zone.
    #[arg(long, global = true)]
    utc: bool,
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
    /// Print a shell completion script (e.g. `portcullis completions bash >
    /// /etc/bash_completion.d/portcullis`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (portcullis.1 and one per subcommand) into
    /// a folder, made if missing.
    Man {
        /// The folder.
        dir: PathBuf,
    },
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
            if e.downcast_ref::<Usage>().is_some() {
                2
            } else {
                1
            }
        }
    }
}

/// A bad value of a flag, found after clap parsed the arguments: a usage
/// error like clap's own (exit code 2).
#[derive(Debug)]
pub(crate) struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// Who runs this command, for the event log: the name of the process's
/// real uid (not `$USER`, which anyone can set or unset), or `uid N` when
/// the uid has no name.
pub(crate) fn actor() -> Actor {
    Actor::Cli(os_user_name())
}

fn os_user_name() -> String {
    // SAFETY: getuid cannot fail; getpwuid_r writes only into `pwd` and
    // `buf`, which outlive the call, and `result` points to `pwd` or is null.
    let uid = unsafe { libc::getuid() };
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned();
        if !name.is_empty() {
            return name;
        }
    }
    format!("uid {uid}")
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

pub(crate) fn load_settings(path: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    let mut s = crate::config::load(path).map_err(|problems| anyhow::anyhow!("invalid configuration:\n  {}", problems.join("\n  ")))?;
    if UTC.load(std::sync::atomic::Ordering::Relaxed) {
        s.clock = crate::config::time::Clock::utc();
    }
    output::set_clock(s.clock.clone());
    Ok(s)
}

/// `--utc`, for `load_settings`.
static UTC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Opens the database for a CLI command the way `serve` does: the data
/// folder and the database are created when missing and pending migrations
/// are applied, so the first command may come before the first `serve`.
fn open_core(settings: Settings) -> anyhow::Result<Core> {
    crate::daemon::ensure_data_dir(&settings.data_dir)?;
    let db = crate::daemon::database_path(&settings);
    let store = Arc::new(Store::open(&db)?);
    let applied = store.migrate(None).context("applying migrations")?;
    for a in applied {
        eprintln!("applied migration {a} to {}", db.display());
    }
    let keyring = crate::core::secrets::Keyring::load_or_create(&settings.data_dir).map_err(anyhow::Error::msg)?;
    Ok(Core::new(store.clone(), settings, EventSink::Direct(store), keyring))
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    UTC.store(cli.utc, std::sync::atomic::Ordering::Relaxed);
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
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(&dir),
    }
}

fn read_password(from_stdin: bool) -> anyhow::Result<Secret<String>> {
    if from_stdin {
        password_input::from_stdin()
    } else {
        password_input::from_terminal("New password: ", "Repeat it: ")
    }
}
