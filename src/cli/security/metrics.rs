//! `portcullis security metrics [--days N]`: the daily rollups (SPEC §11)
//! as a table and a small chart of the daily series, or `--json`. Days
//! missing from the table (or computed before they ended) are computed
//! now; today is always computed now.

use crate::cli::{output, usage};
use crate::core::Core;
use crate::model::Millis;
use clap::Args;

#[derive(Args, Debug)]
pub(in crate::cli) struct MetricsArgs {
    /// How many days, today included (1-366).
    #[arg(long, default_value_t = 14)]
    days: u32,
    /// Compute every day shown again, final ones too.
    #[arg(long)]
    recompute: bool,
    /// No chart under the table.
    #[arg(long)]
    no_chart: bool,
    #[arg(long)]
    json: bool,
}

pub(super) fn run(core: Core, args: MetricsArgs) -> anyhow::Result<i32> {
    if !(1..=366).contains(&args.days) {
        return Err(usage(format!("--days: {} is out of range (1-366)", args.days)));
    }
    let now = Millis::now();
    let rows = core.daily_metrics(args.days, args.recompute, now)?;
    if args.recompute {
        if let Some(kept) = core.rollups_kept_before(now)? {
            if rows.first().is_some_and(|r| r.day_start.0 < kept.0) {
                eprintln!("days before {} are shown as stored, not computed again: retention removed their events", crate::cli::output::at(kept));
            }
        }
    }
    output::daily_metrics(&rows, args.json, !args.no_chart)?;
    Ok(0)
}
