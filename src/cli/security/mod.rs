//! `portcullis security`: security events, two-factor authentication, sessions.

mod events;
mod mfa;
mod sessions;

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
    /// Sessions: list them, end them.
    #[command(subcommand)]
    Sessions(sessions::SessionsCmd),
}

pub(super) async fn run(core: Core, cmd: SecurityCmd) -> anyhow::Result<i32> {
    match cmd {
        SecurityCmd::Events(args) => events::run(core, args).await,
        SecurityCmd::Mfa(cmd) => mfa::run(core, cmd).await,
        SecurityCmd::Sessions(cmd) => sessions::run(core, cmd).await,
    }
}
