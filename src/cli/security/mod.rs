//! `portcullis security`: security events, two-factor authentication and
//! address blocks.

mod events;
mod ip;
mod mfa;

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
    /// Address blocks: list, block, unblock, import.
    #[command(subcommand)]
    Ip(ip::IpCmd),
}

pub(super) async fn run(core: Core, cmd: SecurityCmd) -> anyhow::Result<i32> {
    match cmd {
        SecurityCmd::Events(args) => events::run(core, args).await,
        SecurityCmd::Mfa(cmd) => mfa::run(core, cmd).await,
        SecurityCmd::Ip(cmd) => ip::run(core, cmd).await,
    }
}
