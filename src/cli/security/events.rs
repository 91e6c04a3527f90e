//! `portcullis security events`: the security event log.

use crate::cli::output;
use crate::core::Core;
use crate::model::{escape_control, EventType, Millis, Severity};
use crate::store::events::EventFilter;
use crate::cli::usage;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(in crate::cli) struct EventsArgs {
    #[command(subcommand)]
    command: Option<EventsCmd>,
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

#[derive(Subcommand, Debug)]
pub(in crate::cli) enum EventsCmd {
    /// Check the event log's hash chain, every event in id order: prints
    /// "event log verified" or names the first altered or missing event
    /// (exit 1). (A user named "verify": give their id to list events.)
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub(in crate::cli) struct VerifyArgs {
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(core: Core, args: EventsArgs) -> anyhow::Result<i32> {
    if let Some(EventsCmd::Verify(v)) = args.command {
        // A bar on stderr when it is a terminal (10M events take seconds).
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template("verifying [{bar:40}] {pos}/{len} events") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        let report = core.verify_event_chain(&mut |done, total| {
            if let Some(b) = &bar {
                b.set_length(total);
                b.set_position(done);
            }
        });
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        let report = report?;
        output::event_chain(&report, v.json)?;
        return Ok(if report.problem.is_none() { 0 } else { 1 });
    }
    let now = Millis::now();
    let mut limit = args.limit.or(args.limit_flag);
    let user_id = match &args.user {
        Some(u) => match core.find_user(u) {
            Ok(user) => Some(user.id),
            Err(crate::core::Error::NoSuchUser(_)) if limit.is_none() && u.parse::<usize>().is_ok() => {
                limit = u.parse().ok();
                None
            }
            // A deleted account's events stay under its former id.
            Err(e @ crate::core::Error::NoSuchUser(_)) => match core.deleted_user_id(u)? {
                Some(id) => Some(id),
                None => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let event_type = match &args.event_type {
        Some(t) => Some(EventType::parse(t).ok_or_else(|| {
            usage(format!("--type: unknown event type {:?} (one of: {})", escape_control(t), EventType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")))
        })?),
        None => None,
    };
    let min_severity = match &args.severity {
        Some(s) => Some(Severity::parse(s).ok_or_else(|| usage(format!("--severity: unknown severity {:?} (one of: info, low, medium, high, critical)", escape_control(s))))?),
        None => None,
    };
    let since = match &args.since {
        Some(s) => Some(match Millis::parse_rfc3339(s) {
            Some(t) => t,
            None => now.minus(crate::model::parse_duration(s).map_err(|e| usage(format!("--since: {e} (or give an RFC 3339 time)")))?),
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
