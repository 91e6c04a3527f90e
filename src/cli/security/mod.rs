//! `portcullis security`: security events, incidents, two-factor
//! authentication, hardware keys, webhooks, address blocks, sessions and devices.

mod devices;
mod events;
mod incidents;
mod ip;
mod metrics;
mod mfa;
mod webhooks;
mod sessions;
mod scan;
mod webauthn;

use crate::core::Core;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(super) enum SecurityCmd {
    /// Security events, newest first (with --follow: oldest first, then new
    /// ones as they arrive).
    Events(events::EventsArgs),
    /// Security incidents: list, show, create, assign, note, resolve.
    #[command(subcommand)]
    Incidents(incidents::IncidentsCmd),
    /// Two-factor authentication with one-time codes.
    #[command(subcommand)]
    Mfa(mfa::MfaCmd),
    /// Hardware keys (WebAuthn/FIDO2): enroll by mail, list, rename, remove.
    #[command(subcommand)]
    Webauthn(webauthn::WebauthnCmd),
    /// Webhooks: list them, their delivery queue, a test delivery.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCmd),
    /// Address blocks: list, block, unblock, import.
    #[command(subcommand)]
    Ip(ip::IpCmd),
    /// Sessions: list them, end them.
    #[command(subcommand)]
    Sessions(sessions::SessionsCmd),
    /// Scans: passwords, mfa, sessions, suspicious (all four by default).
    Scan(scan::ScanArgs),
    /// Devices: list a user's, trust, untrust, remove.
    #[command(subcommand)]
    Devices(devices::DevicesCmd),
    /// Daily security metrics: logins, failures, attacking addresses, MFA
    /// adoption, events by severity, incidents, MTTD/MTTR, blocks.
    Metrics(metrics::MetricsArgs),
}

pub(super) async fn run(core: Core, cmd: SecurityCmd) -> anyhow::Result<i32> {
    match cmd {
        SecurityCmd::Events(args) => events::run(core, args).await,
        SecurityCmd::Incidents(cmd) => incidents::run(core, cmd),
        SecurityCmd::Mfa(cmd) => mfa::run(core, cmd).await,
        SecurityCmd::Webauthn(cmd) => webauthn::run(core, cmd).await,
        SecurityCmd::Webhooks(cmd) => webhooks::run(core, cmd),
        SecurityCmd::Ip(cmd) => ip::run(core, cmd).await,
        SecurityCmd::Sessions(cmd) => sessions::run(core, cmd).await,
        SecurityCmd::Scan(args) => scan::run(core, args).await,
        SecurityCmd::Devices(cmd) => devices::run(core, cmd).await,
        SecurityCmd::Metrics(args) => metrics::run(core, args),
    }
}
