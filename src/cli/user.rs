//! `portcullis user`: accounts, their groups and SSH keys.

use super::{output, read_password};
use crate::core::Core;
use crate::model::{escape_control, Millis, FOREVER};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(super) enum UserCmd {
    /// Create an account.
    Add {
        name: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Accept groups the configuration does not define.
        #[arg(long)]
        new_group: bool,
    },
    /// Change an account: its email address.
    Edit {
        user: String,
        #[arg(long)]
        email: String,
    },
    /// Delete an account: its sessions end, its password, secrets, keys and
    /// links go; its security events stay, marked as a deleted account's.
    Delete { user: String },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one account.
    Show {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Set a new password.
    Passwd {
        user: String,
        #[arg(long)]
        password_stdin: bool,
        /// A temporary password: the user must change it at the next login.
        #[arg(long)]
        must_reset: bool,
    },
    /// Lock an account (until unlocked, or for a duration): a sysop's lock
    /// is absolute and ends the account's open sessions.
    Lock {
        user: String,
        /// How long, e.g. "30m", "2h", "7d" (at most 365d); without it, until unlocked.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        #[arg(long, default_value = "locked by sysop")]
        reason: String,
    },
    /// Unlock an account (a sysop's lock or a rule's).
    Unlock { user: String },
    /// Group membership.
    #[command(subcommand)]
    Group(GroupCmd),
    /// SSH public keys.
    #[command(subcommand)]
    Key(KeyCmd),
}

#[derive(Subcommand, Debug)]
pub(super) enum GroupCmd {
    Add {
        user: String,
        group: String,
        /// Accept a group the configuration does not define.
        #[arg(long)]
        new_group: bool,
    },
    Remove { user: String, group: String },
}

#[derive(Subcommand, Debug)]
pub(super) enum KeyCmd {
    /// Register a key: the whole "ssh-ed25519 AAAA... comment" line.
    Add { user: String, key: String },
    List {
        user: String,
        #[arg(long)]
        json: bool,
    },
    Remove { id: i64 },
}

pub(super) async fn run(core: Core, cmd: UserCmd) -> anyhow::Result<i32> {
    let now = Millis::now();
    let actor = crate::cli::actor();
    match cmd {
        UserCmd::Add { name, email, groups, password_stdin, new_group } => {
            if !new_group {
                for g in &groups {
                    known_group(&core, g)?;
                }
            }
            let password = read_password(password_stdin)?;
            let u = core.add_user(&name, email.as_deref(), &password, &groups, &actor, now).await?;
            println!("created user {} (id {})", u.username, u.id);
        }
        UserCmd::Edit { user, email } => {
            let u = core.find_user(&user)?;
            let voided = core.set_email(&u, &email, &actor, now).await?;
            println!("email address of {} set to {}", u.username, escape_control(&email));
            if voided > 0 {
                println!("{} mailed to the old address no longer {}", crate::flow::pager::count(voided as u64, "link", "links"), if voided == 1 { "works" } else { "work" });
            }
        }
        UserCmd::Delete { user } => {
            let u = core.find_user(&user)?;
            let d = core.delete_user(&u, &actor, now).await?;
            println!(
                "deleted user {} (id {}): {} ended, {} removed; its events stay (`portcullis security events {}`)",
                u.username,
                u.id,
                crate::flow::pager::count(d.sessions_ended as u64, "open session", "open sessions"),
                crate::flow::pager::count(d.keys_removed as u64, "SSH key", "SSH keys"),
                u.username
            );
        }
        UserCmd::List { json } => output::users(&core.list_users()?, json, now)?,
        UserCmd::Show { user, json } => output::user(&core.find_user(&user)?, json, now)?,
        UserCmd::Passwd { user, password_stdin, must_reset } => {
            let u = core.find_user(&user)?;
            let password = read_password(password_stdin)?;
            if must_reset {
                core.reset_password(&u, &password, &actor, now).await?;
                println!("password of {} set; it must be changed at the next login", u.username);
            } else {
                core.change_password(&u, &password, &actor, now).await?;
                core.mail_password_reset(&u, "", now);
                println!("password of {} changed", u.username);
            }
        }
        UserCmd::Lock { user, duration, reason } => {
            let u = core.find_user(&user)?;
            let until = match duration {
                Some(d) => {
                    let d = crate::model::parse_duration(&d).map_err(|e| crate::cli::usage(format!("--for: {e}")))?;
                    if d.is_zero() || d > crate::core::locks::MAX_SYSOP_DURATION {
                        return Err(crate::cli::usage("--for: give a duration between 1s and 365d, or leave --for out to lock until unlocked"));
                    }
                    now.plus(d)
                }
                None => FOREVER,
            };
            let ended = core.lock_user(&u, until, &reason, &actor, now).await?;
            if until == FOREVER {
                println!("locked {} until unlocked; {} ended", u.username, crate::flow::pager::count(ended as u64, "open session", "open sessions"));
            } else {
                println!("locked {} until {}; {} ended", u.username, super::output::at(until), crate::flow::pager::count(ended as u64, "open session", "open sessions"));
            }
        }
        UserCmd::Unlock { user } => {
            let u = core.find_user(&user)?;
            if core.unlock_user(&u, &actor, now).await? {
                println!("unlocked {}", u.username);
            } else {
                println!("{} was not locked", u.username);
            }
        }
        UserCmd::Group(GroupCmd::Add { user, group, new_group }) => {
            let u = core.find_user(&user)?;
            if !new_group {
                known_group(&core, &group)?;
            }
            let changed = core.set_group(&u, &group, true, &actor, now).await?;
            println!("{} {} group {group}", u.username, if changed { "added to" } else { "was already in" });
        }
        UserCmd::Group(GroupCmd::Remove { user, group }) => {
            let u = core.find_user(&user)?;
            let changed = core.set_group(&u, &group, false, &actor, now).await?;
            println!("{} {} group {group}", u.username, if changed { "removed from" } else { "was not in" });
        }
        UserCmd::Key(KeyCmd::Add { user, key }) => {
            let u = core.find_user(&user)?;
            let k = core.add_ssh_key(&u, &key, &actor, now).await?;
            println!("added key {} ({}) for {}", k.id, k.fingerprint, u.username);
        }
        UserCmd::Key(KeyCmd::List { user, json }) => output::keys(&core.ssh_keys(&core.find_user(&user)?)?, json)?,
        UserCmd::Key(KeyCmd::Remove { id }) => {
            let fp = core.remove_ssh_key(id, &actor, now).await?;
            println!("removed key {id} ({fp})");
        }
    }
    Ok(0)
}

/// Refuses a group the configuration does not define (`--new-group` to
/// insist).
fn known_group(core: &Core, group: &str) -> anyhow::Result<()> {
    core.check_known_group(group).map_err(|e| anyhow::anyhow!("{e}; give --new-group to use it anyway"))
}
