//! `portcullis security mfa`: two-factor authentication with one-time codes.

use crate::cli::output;
use crate::core::Core;
use crate::model::{escape_control, Millis};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(in crate::cli) enum MfaCmd {
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

pub(super) async fn run(core: Core, cmd: MfaCmd) -> anyhow::Result<i32> {
    let now = Millis::now();
    let actor = crate::cli::actor();
    match cmd {
        MfaCmd::Enable { method, user } => {
            let u = core.find_user(&user)?;
            let m = crate::core::mfa::Method::parse(&method).ok_or_else(|| crate::cli::usage("--method: use totp or hotp"))?;
            let sent = core.send_otp_enrollment(&u, m, &actor, now).await?;
            println!(
                "an enrollment link for {} ({}) was queued for {}; it is valid for {} (`portcullis mail queue` shows it)",
                u.username,
                m.as_str(),
                escape_control(&sent.to),
                crate::core::mail::humanize(core.settings().mfa.link_ttl)
            );
            if sent.voided_earlier {
                println!("the enrollment link sent earlier no longer works: only this new one does (the mail says so)");
            }
        }
        MfaCmd::Disable { user } => {
            let u = core.find_user(&user)?;
            core.disable_otp(&u, &actor, now).await?;
            let mailed = if u.email.is_some() { "; the user was mailed about it" } else { "" };
            println!("two-factor authentication disabled for {}{mailed}", u.username);
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
