//! `portcullis security webauthn`: hardware keys (WebAuthn/FIDO2):
//! mailing an enrollment link, listing, renaming and removing keys. Each
//! change is an event with the sysop as its actor.

use crate::cli::output;
use crate::core::Core;
use crate::model::{escape_control, Millis};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(in crate::cli) enum WebauthnCmd {
    /// Mail the user a single-use link to register a hardware key.
    Enroll {
        #[arg(long)]
        user: String,
    },
    /// A user's hardware keys, oldest first.
    List {
        /// The user (username or id).
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Rename a key.
    Rename {
        /// The key's id (`security webauthn list`).
        id: i64,
        /// The new name (1 to 64 characters).
        name: String,
    },
    /// Remove a key (the last key of a user whose policy requires level 3
    /// stays).
    Remove {
        /// The key's id.
        id: i64,
    },
}

pub(super) async fn run(core: Core, cmd: WebauthnCmd) -> anyhow::Result<i32> {
    let now = Millis::now();
    let actor = crate::cli::actor();
    match cmd {
        WebauthnCmd::Enroll { user } => {
            let u = core.find_user(&user)?;
            let sent = core.send_webauthn_enrollment(&u, &actor, now).await?;
            println!(
                "a hardware key enrollment link for {} was queued for {}; it is valid for {} (`portcullis mail queue` shows it)",
                u.username,
                escape_control(&sent.to),
                crate::core::mail::humanize(core.settings().mfa.link_ttl)
            );
            if sent.voided_earlier {
                println!("the link sent earlier no longer works: only this new one does (the mail says so)");
            }
        }
        WebauthnCmd::List { user, json } => {
            let u = core.find_user(&user)?;
            output::webauthn_keys(&core.webauthn_keys(&u)?, json)?;
        }
        WebauthnCmd::Rename { id, name } => {
            let key = core.webauthn_key(id)?;
            let u = core.find_user(&key.user_id.to_string())?;
            core.rename_webauthn_key(&u, id, &name, &actor, now).await?;
            println!("hardware key {id} of {} renamed to {}", u.username, escape_control(name.trim()));
        }
        WebauthnCmd::Remove { id } => {
            let k = core.remove_webauthn_key(id, None, &actor, now).await?;
            println!("removed hardware key {id} ({}) of user {}", escape_control(&k.name), k.user_id);
        }
    }
    Ok(0)
}
