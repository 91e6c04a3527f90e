//! `portcullis security scan suspicious`: the detection rules over the
//! event history (SPEC §11). Prints the findings, records a
//! `scan_completed` event with the counts, exits 0.

use crate::cli::{output, usage};
use crate::core::Core;
use crate::model::Millis;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub(in crate::cli) enum ScanCmd {
    /// Run every detection rule over recent history (the rules' longest
    /// window, 7 days by default) and print what they find.
    Suspicious(SuspiciousArgs),
}

#[derive(Args, Debug)]
pub(in crate::cli) struct SuspiciousArgs {
    /// From when: a duration back from now ("24h", "7d") or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(core: Core, cmd: ScanCmd) -> anyhow::Result<i32> {
    match cmd {
        ScanCmd::Suspicious(args) => {
            let now = Millis::now();
            let since = match &args.since {
                Some(s) => Some(match Millis::parse_rfc3339(s) {
                    Some(t) => t,
                    None => now.minus(crate::model::parse_duration(s).map_err(|e| usage(format!("--since: {e} (or give an RFC 3339 time)")))?),
                }),
                None => None,
            };
            let scan = core.scan_suspicious(since, now).await?;
            let summary = scan.summary();
            output::findings(&summary, scan.events_read, scan.since, args.json)?;
            // Findings over history open incidents (or attach to the open
            // ones) but run no playbook: the attack may be long over, and
            // the sysop decides what to do (`security incidents`).
            let (mut opened, mut attached) = (0, 0);
            for f in summary {
                if core.report_finding(f, now)?.created {
                    opened += 1;
                } else {
                    attached += 1;
                }
            }
            if opened + attached > 0 {
                let line = format!("incidents: {opened} opened, {attached} already open (see `security incidents list`)");
                if args.json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
            Ok(0)
        }
    }
}
