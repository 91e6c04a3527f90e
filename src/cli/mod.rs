//! The command line: parses arguments (clap), resolves them into settings,
//! and calls `core`. Exit codes: 0 ok, 1 error, 2 usage.

mod output;
mod password_input;

use crate::config::{self, Settings};
use crate::core::accounts::Actor;
use crate::core::{Core, EventSink};
use crate::model::{escape_control, EventType, Millis, Secret, Severity, FOREVER};
use crate::store::events::EventFilter;
use crate::store::Store;
use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};
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
    Config(ConfigCmd),
    /// Database migrations.
    #[command(subcommand)]
    Migrate(MigrateCmd),
    /// Accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Self-service account commands.
    #[command(subcommand)]
    Auth(AuthCmd),
    /// Security events, two-factor authentication and more.
    #[command(subcommand)]
    Security(SecurityCmd),
    /// The outgoing mail queue.
    #[command(subcommand)]
    Mail(MailCmd),
}

#[derive(Subcommand, Debug)]
enum MailCmd {
    /// Mail waiting to be sent (with --all: also the last sent).
    Queue {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make every waiting mail due now (the running gate sends it).
    Retry,
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Load everything `serve` would and report every problem.
    Check,
}

#[derive(Subcommand, Debug)]
enum MigrateCmd {
    /// Apply pending migrations (up to NAME when given).
    Run { name: Option<String> },
    /// List migrations and when they were applied.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    /// Create an account.
    Add {
        name: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one account.
    Show {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Set a new password.
    Passwd {
        user: String,
        #[arg(long)]
        password_stdin: bool,
        /// A temporary password: the user must change it at the next login.
        #[arg(long)]
        must_reset: bool,
    },
    /// Lock an account (until unlocked, or for a duration).
    Lock {
        user: String,
        /// How long, e.g. "30m", "2h", "7d".
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        #[arg(long, default_value = "locked by sysop")]
        reason: String,
    },
    /// Unlock an account.
    Unlock { user: String },
    /// Group membership.
    #[command(subcommand)]
    Group(GroupCmd),
    /// SSH public keys.
    #[command(subcommand)]
    Key(KeyCmd),
}

#[derive(Subcommand, Debug)]
enum GroupCmd {
    Add { user: String, group: String },
    Remove { user: String, group: String },
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Register a key: the whole "ssh-ed25519 AAAA... comment" line.
    Add { user: String, key: String },
    List {
        user: String,
        #[arg(long)]
        json: bool,
    },
    Remove { id: i64 },
}

#[derive(Subcommand, Debug)]
enum AuthCmd {
    /// Create an account from an email address (username = local part).
    Signup {
        email: String,
        /// The password (visible to other local users in the process list;
        /// prefer `user add --password-stdin`).
        #[arg(long)]
        password: String,
    },
}

#[derive(Subcommand, Debug)]
enum SecurityCmd {
    /// Security events, newest first (with --follow: oldest first, then new
    /// ones as they arrive).
    Events(EventsArgs),
    /// Two-factor authentication with one-time codes.
    #[command(subcommand)]
    Mfa(MfaCmd),
}

#[derive(Subcommand, Debug)]
enum MfaCmd {
    /// Mail the user a single-use link to enroll an authenticator.
    Enable {
        #[arg(long, value_parser = ["totp", "hotp"], default_value = "totp")]
        method: String,
        #[arg(long)]
        user: String,
    },
    /// Turn two-factor authentication off for a user (a high-severity event).
    Disable {
        #[arg(long)]
        user: String,
    },
    /// Show a user's two-factor state.
    Status {
        #[arg(long)]
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Replace a user's backup codes and print the new ones once.
    BackupCodes {
        #[arg(long)]
        user: String,
    },
}

#[derive(Args, Debug)]
struct EventsArgs {
    /// Only this user's events (username or id). A lone number that names
    /// no user is taken as LIMIT.
    user: Option<String>,
    /// How many events (default 50).
    limit: Option<usize>,
    /// How many events (same as LIMIT).
    #[arg(long = "limit", value_name = "N", conflicts_with = "limit")]
    limit_flag: Option<usize>,
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// This severity or worse: info, low, medium, high, critical.
    #[arg(long)]
    severity: Option<String>,
    /// A duration back from now ("15m", "2h") or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    json: bool,
    /// Keep printing new events as they arrive.
    #[arg(long)]
    follow: bool,
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
    config::load(path).map_err(|problems| anyhow::anyhow!("invalid configuration:\n  {}", problems.join("\n  ")))
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
        Command::Config(ConfigCmd::Check) => match config::load(path).and_then(|s| {
            let (problems, warnings) = crate::daemon::check_all(&s);
            for w in &warnings {
                eprintln!("warning: {}", escape_control(w));
            }
            if problems.is_empty() { Ok(s) } else { Err(problems) }
        }) {
            Ok(s) => {
                println!("config ok: {}", s.source);
                Ok(0)
            }
            Err(problems) => {
                for p in &problems {
                    eprintln!("{}", escape_control(p));
                }
                eprintln!("{} problem{} found", problems.len(), if problems.len() == 1 { "" } else { "s" });
                Ok(1)
            }
        },
        Command::Migrate(cmd) => {
            let settings = load_settings(path)?;
            crate::daemon::ensure_data_dir(&settings.data_dir)?;
            let store = Store::open(&crate::daemon::database_path(&settings))?;
            match cmd {
                MigrateCmd::Run { name } => {
                    let applied = store.migrate(name.as_deref())?;
                    if applied.is_empty() {
                        println!("nothing to apply");
                    }
                    for a in applied {
                        println!("applied {a}");
                    }
                }
                MigrateCmd::Status { json } => output::migrations(&store.migration_status()?, json)?,
            }
            Ok(0)
        }
        Command::User(cmd) => user(open_core(load_settings(path)?)?, cmd).await,
        Command::Auth(AuthCmd::Signup { email, password }) => {
            let core = open_core(load_settings(path)?)?;
            let local = email.split('@').next().unwrap_or("");
            eprintln!("warning: a password given on the command line can be seen by other local users");
            let user = core.add_user(local, Some(&email), &Secret::new(password), &[], &Actor::cli(), Millis::now()).await?;
            println!("created user {} (id {})", user.username, user.id);
            Ok(0)
        }
        Command::Security(SecurityCmd::Events(args)) => events(open_core(load_settings(path)?)?, args).await,
        Command::Security(SecurityCmd::Mfa(cmd)) => mfa(open_core(load_settings(path)?)?, cmd).await,
        Command::Mail(cmd) => {
            let core = open_core(load_settings(path)?)?;
            match cmd {
                MailCmd::Queue { all, json } => output::mail_queue(&core.mail_queue(all)?, json)?,
                MailCmd::Retry => println!("{} mail(s) due now", core.retry_mail(Millis::now())?),
            }
            Ok(0)
        }
    }
}

fn read_password(from_stdin: bool) -> anyhow::Result<Secret<String>> {
    if from_stdin {
        password_input::from_stdin()
    } else {
        password_input::from_terminal("New password: ", "Repeat it: ")
    }
}

async fn user(core: Core, cmd: UserCmd) -> anyhow::Result<i32> {
    let now = Millis::now();
    let actor = Actor::cli();
    match cmd {
        UserCmd::Add { name, email, groups, password_stdin } => {
            let password = read_password(password_stdin)?;
            let u = core.add_user(&name, email.as_deref(), &password, &groups, &actor, now).await?;
            println!("created user {} (id {})", u.username, u.id);
        }
        UserCmd::List { json } => output::users(&core.list_users()?, json, now)?,
        UserCmd::Show { user, json } => output::user(&core.find_user(&user)?, json, now)?,
        UserCmd::Passwd { user, password_stdin, must_reset } => {
            let u = core.find_user(&user)?;
            let password = read_password(password_stdin)?;
            if must_reset {
                core.reset_password(&u, &password, &actor, now).await?;
                println!("password of {} set; it must be changed at the next login", u.username);
            } else {
                core.change_password(&u, &password, &actor, now).await?;
                println!("password of {} changed", u.username);
            }
        }
        UserCmd::Lock { user, duration, reason } => {
            let u = core.find_user(&user)?;
            let until = match duration {
                Some(d) => now.plus(crate::model::parse_duration(&d).map_err(|e| anyhow::anyhow!("--for: {e}"))?),
                None => FOREVER,
            };
            core.lock_user(&u, until, &reason, &actor, now).await?;
            if until == FOREVER {
                println!("locked {} until unlocked", u.username);
            } else {
                println!("locked {} until {}", u.username, until.rfc3339());
            }
        }
        UserCmd::Unlock { user } => {
            let u = core.find_user(&user)?;
            core.unlock_user(&u, &actor, now).await?;
            println!("unlocked {}", u.username);
        }
        UserCmd::Group(GroupCmd::Add { user, group }) => {
            let u = core.find_user(&user)?;
            let changed = core.set_group(&u, &group, true, &actor, now).await?;
            println!("{} {} group {group}", u.username, if changed { "added to" } else { "was already in" });
        }
        UserCmd::Group(GroupCmd::Remove { user, group }) => {
            let u = core.find_user(&user)?;
            let changed = core.set_group(&u, &group, false, &actor, now).await?;
            println!("{} {} group {group}", u.username, if changed { "removed from" } else { "was not in" });
        }
        UserCmd::Key(KeyCmd::Add { user, key }) => {
            let u = core.find_user(&user)?;
            let k = core.add_ssh_key(&u, &key, &actor, now).await?;
            println!("added key {} ({}) for {}", k.id, k.fingerprint, u.username);
        }
        UserCmd::Key(KeyCmd::List { user, json }) => output::keys(&core.ssh_keys(&core.find_user(&user)?)?, json)?,
        UserCmd::Key(KeyCmd::Remove { id }) => {
            let fp = core.remove_ssh_key(id, &actor, now).await?;
            println!("removed key {id} ({fp})");
        }
    }
    Ok(0)
}

async fn mfa(core: Core, cmd: MfaCmd) -> anyhow::Result<i32> {
    let now = Millis::now();
    let actor = Actor::cli();
    match cmd {
        MfaCmd::Enable { method, user } => {
            let u = core.find_user(&user)?;
            let m = crate::core::mfa::Method::parse(&method).context("--method: use totp or hotp")?;
            let to = core.start_otp_enrollment(&u, m, &actor, now).await?;
            println!(
                "an enrollment link for {} ({}) was queued for {}; it is valid for {} (`portcullis mail queue` shows it)",
                u.username,
                m.as_str(),
                escape_control(&to),
                crate::core::mail::humanize(core.settings().mfa.link_ttl)
            );
        }
        MfaCmd::Disable { user } => {
            let u = core.find_user(&user)?;
            if core.disable_otp(&u, &actor, now).await? {
                println!("two-factor authentication disabled for {}", u.username);
            } else {
                println!("two-factor authentication was not enabled for {} (any pending enrollment was cancelled)", u.username);
            }
        }
        MfaCmd::Status { user, json } => output::mfa_status(&core.mfa_status(&core.find_user(&user)?, now)?, json)?,
        MfaCmd::BackupCodes { user } => {
            let u = core.find_user(&user)?;
            let codes = core.regenerate_backup_codes(&u, &actor, now).await?;
            println!("new backup codes for {} (each works once; the old ones no longer work):", u.username);
            for c in codes {
                println!("  {c}");
            }
        }
    }
    Ok(0)
}

async fn events(core: Core, args: EventsArgs) -> anyhow::Result<i32> {
    let now = Millis::now();
    let mut limit = args.limit.or(args.limit_flag);
    let user_id = match &args.user {
        Some(u) => match core.find_user(u) {
            Ok(user) => Some(user.id),
            Err(crate::core::Error::NoSuchUser(_)) if limit.is_none() && u.parse::<usize>().is_ok() => {
                limit = u.parse().ok();
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let event_type = match &args.event_type {
        Some(t) => Some(EventType::parse(t).with_context(|| {
            format!("--type: unknown event type {:?} (one of: {})", escape_control(t), EventType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "))
        })?),
        None => None,
    };
    let min_severity = match &args.severity {
        Some(s) => Some(Severity::parse(s).with_context(|| format!("--severity: unknown severity {:?} (one of: info, low, medium, high, critical)", escape_control(s)))?),
        None => None,
    };
    let since = match &args.since {
        Some(s) => Some(match Millis::parse_rfc3339(s) {
            Some(t) => t,
            None => now.minus(crate::model::parse_duration(s).map_err(|e| anyhow::anyhow!("--since: {e} (or give an RFC 3339 time)"))?),
        }),
        None => None,
    };
    let mut filter = EventFilter { user_id, event_type, min_severity, since, after_id: None, limit: limit.unwrap_or(50) };
    let mut shown = core.events(&filter)?;
    if args.follow {
        shown.reverse(); // a log that grows at the bottom
    }
    let mut last = shown.iter().map(|e| e.id).max().unwrap_or(0);
    if args.follow && last == 0 {
        last = core.last_event_id()?;
    }
    output::events(&shown, args.json, !args.follow)?;
    if !args.follow {
        return Ok(0);
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        filter.after_id = Some(last);
        filter.limit = 1000;
        let new = core.events(&filter)?;
        if let Some(max) = new.iter().map(|e| e.id).max() {
            last = max;
            output::events(&new, args.json, false)?;
        }
    }
}
