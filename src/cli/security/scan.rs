//! `portcullis security scan [passwords|mfa|sessions|suspicious]`: the
//! scans of SPEC §11, all four when no kind is given. Prints a report (or
//! one JSON object with a key per kind), records `scan_completed` with the
//! counts, opens the incidents the findings warrant; a progress bar on
//! stderr when it is a terminal. Exits 0 with findings, 1 only on failure.

use crate::cli::{output, usage};
use crate::core::scans::{Progress, ScanKind};
use crate::core::Core;
use crate::model::Millis;
use clap::{Args, ValueEnum};
use std::io::IsTerminal;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::cli) enum KindArg {
    /// Hashes below the iteration count, old passwords, passwords found
    /// weak at their last login.
    Passwords,
    /// Accounts without a second factor; accounts (sysops) below their
    /// required level.
    Mfa,
    /// Open sessions nothing refreshed: closed, with counts.
    Sessions,
    /// The detection rules over recent history.
    Suspicious,
}

impl KindArg {
    fn kind(self) -> ScanKind {
        match self {
            KindArg::Passwords => ScanKind::Passwords,
            KindArg::Mfa => ScanKind::Mfa,
            KindArg::Sessions => ScanKind::Sessions,
            KindArg::Suspicious => ScanKind::Suspicious,
        }
    }
}

#[derive(Args, Debug)]
pub(in crate::cli) struct ScanArgs {
    /// What to scan; all four when not given.
    #[arg(value_enum)]
    kind: Option<KindArg>,
    /// Where the suspicious scan starts: a duration back from now ("24h",
    /// "7d") or an RFC 3339 time (default: the rules' longest window).
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    json: bool,
}

/// The bar on a terminal (nothing otherwise).
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new() -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len}") {
            bar.set_style(style.progress_chars("=> "));
        }
        Bar(Some(bar))
    }
}

impl Progress for Bar {
    fn start(&self, kind: ScanKind, total: u64) {
        if let Some(b) = &self.0 {
            b.set_message(kind.as_str());
            b.set_position(0);
            b.set_length(total);
        }
    }
    fn advance(&self, steps: u64) {
        if let Some(b) = &self.0 {
            b.inc(steps);
        }
    }
    fn finish(&self, _: ScanKind) {
        if let Some(b) = &self.0 {
            b.set_position(b.length().unwrap_or(0));
        }
    }
}

pub(super) async fn run(core: Core, args: ScanArgs) -> anyhow::Result<i32> {
    let now = Millis::now();
    let since = match &args.since {
        Some(s) => Some(match Millis::parse_rfc3339(s) {
            Some(t) => t,
            None => now.minus(crate::model::parse_duration(s).map_err(|e| usage(format!("--since: {e} (or give an RFC 3339 time)")))?),
        }),
        None => None,
    };
    let kinds: Vec<ScanKind> = match args.kind {
        Some(k) => vec![k.kind()],
        None => ScanKind::ALL.to_vec(),
    };
    let bar = Bar::new();
    // The JSON report is rendered while the incidents are opened.
    let json = args.json;
    let report = core.scan_with(&kinds, since, now, &bar, |r| json.then(|| output::scan_json_draft(r))).await;
    if let Some(b) = &bar.0 {
        b.finish_and_clear();
    }
    let (report, draft) = report?;
    match draft {
        Some(draft) => output::print_json_text(output::scan_json_finish(draft?, report.incidents)?)?,
        None => output::scan_report(&report, false)?,
    }
    // The process ends with this command: a large store's report (hundreds
    // of thousands of findings) is left to the exit, not freed piece by
    // piece (a tenth of the time after the replay, over 10M events).
    std::mem::forget(report);
    Ok(0)
}
