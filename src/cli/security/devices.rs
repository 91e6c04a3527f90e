//! `portcullis security devices`: an account's devices (what its logins
//! came from), trusting, untrusting and removing one. Each change is an
//! event with the sysop as its actor; removing a device ends its sessions
//! (the running daemon cuts them within a second).

use crate::cli::output;
use crate::core::Core;
use crate::model::{escape_control, Millis};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(in crate::cli) enum DevicesCmd {
    /// A user's devices, the most recently seen first.
    List {
        /// The user (username or id).
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Trust a device: with its key, it opens a rule's lock for its owner
    /// (who still passes every factor).
    Trust {
        /// The device's id (`security devices list`).
        id: i64,
    },
    /// Stop trusting a device.
    Untrust {
        /// The device's id.
        id: i64,
    },
    /// Remove a device and end its open sessions; its next login is a new
    /// device again (and its owner is mailed about it).
    Remove {
        /// The device's id.
        id: i64,
    },
}

pub(super) async fn run(core: Core, cmd: DevicesCmd) -> anyhow::Result<i32> {
    let now = Millis::now();
    let actor = crate::cli::actor();
    match cmd {
        DevicesCmd::List { user, json } => {
            let u = core.find_user(&user)?;
            let mut list = Vec::new();
            for d in core.devices_of(u.id)? {
                let addresses = core.device_addresses(d.id)?;
                list.push((d, addresses));
            }
            output::devices(&list, json)?;
        }
        DevicesCmd::Trust { id } | DevicesCmd::Untrust { id } => {
            let trust = matches!(cmd, DevicesCmd::Trust { .. });
            let c = core.set_device_trusted(id, trust, None, &actor, now).await?;
            let d = &c.device;
            let name = escape_control(&d.device_name);
            let user = escape_control(&d.username);
            match (trust, c.changed) {
                (true, true) => println!("device {id} of {user} is trusted: {name}"),
                (true, false) => println!("device {id} of {user} was already trusted: {name}"),
                (false, true) => println!("device {id} of {user} is no longer trusted: {name}"),
                (false, false) => println!("device {id} of {user} was not trusted: {name}"),
            }
            if trust && d.key_fingerprint.is_none() {
                println!("note: it logged in without a key, so it does not open a rule's lock (only a trusted device with its key does)");
            }
        }
        DevicesCmd::Remove { id } => {
            let r = core.remove_device(id, None, &actor, now).await?;
            let d = &r.device;
            println!("removed device {id} of {}: {} ({} ended)", escape_control(&d.username), escape_control(&d.device_name), crate::flow::pager::count(r.sessions_ended as u64, "session", "sessions"));
        }
    }
    Ok(0)
}
