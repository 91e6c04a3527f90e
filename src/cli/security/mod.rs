//! `portcullis security`: security events and two-factor authentication.

mod events;
mod mfa;
mod scan;

use crate::core::Core;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(super) enum SecurityCmd {
    /// Security events, newest first (with --follow: oldest first, then new
    /// ones as they arrive).
    Events(events::EventsArgs),
    /// Two-factor authentication with one-time codes.
    #[command(subcommand)]
    Mfa(mfa::MfaCmd),
    /// Scans: `suspicious` runs the detection rules over history.
    #[command(subcommand)]
    Scan(scan::ScanCmd),
}

pub(super) async fn run(core: Core, cmd: SecurityCmd) -> anyhow::Result<i32> {
    match cmd {
        SecurityCmd::Events(args) => events::run(core, args).await,
        SecurityCmd::Mfa(cmd) => mfa::run(core, cmd).await,
        SecurityCmd::Scan(cmd) => scan::run(core, cmd).await,
    }
}
