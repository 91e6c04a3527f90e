//! `portcullis security sessions`: list sessions and revoke them. A
//! revocation made here reaches the running daemon within a second: the
//! user's connection is closed with a message that says why.

use crate::cli::{output, usage};
use crate::core::Core;
use crate::model::{escape_control, Millis};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(in crate::cli) enum SessionsCmd {
    /// Sessions, newest first: the open ones (all with --all), of one user or everyone.
    List {
        /// Only this user's sessions (username or id).
        user: Option<String>,
        /// Ended sessions too.
        #[arg(long)]
        all: bool,
        /// How many at most (default 100).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// End one session (by id), or every open session of a user (--user).
    Revoke {
        /// The session's id (`security sessions list`).
        id: Option<i64>,
        /// Every open session of this user (username or id).
        #[arg(long, value_name = "USER", conflicts_with = "id")]
        user: Option<String>,
        /// Shown to the user and recorded.
        #[arg(long, default_value = "revoked by the sysop")]
        reason: String,
    },
}

pub(super) async fn run(core: Core, cmd: SessionsCmd) -> anyhow::Result<i32> {
    let now = Millis::now();
    let actor = crate::cli::actor();
    match cmd {
        SessionsCmd::List { user, all, limit, json } => {
            let user_id = match &user {
                Some(u) => Some(core.find_user(u)?.id),
                None => None,
            };
            output::sessions(&core.list_sessions(user_id, all, limit)?, json, all)?;
        }
        SessionsCmd::Revoke { id: Some(id), reason, .. } => {
            let reason = checked_reason(&reason)?;
            if core.revoke_session(id, reason, &actor, None, now).await? {
                let user = core.session(id)?.map(|s| s.username).unwrap_or_default();
                println!("revoked session {id} of {user}");
            } else {
                let s = core.session(id)?;
                let (at, why) = s.map(|s| (s.ended_at.unwrap_or_default(), s.end_reason.unwrap_or_default())).unwrap_or_default();
                anyhow::bail!("session {id} has already ended (at {at}: {})", escape_control(&why));
            }
        }
        SessionsCmd::Revoke { id: None, user: Some(user), reason } => {
            let reason = checked_reason(&reason)?;
            let u = core.find_user(&user)?;
            match core.revoke_user_sessions(&u, reason, &actor, None, now).await? {
                0 => println!("{} has no open sessions", u.username),
                n => println!("revoked {} of {}", crate::flow::pager::count(n as u64, "session", "sessions"), u.username),
            }
        }
        SessionsCmd::Revoke { id: None, user: None, .. } => return Err(usage("revoke: give a session ID or --user=USER")),
    }
    Ok(0)
}

/// A reason the user will read: one line, not empty, bounded.
fn checked_reason(reason: &str) -> anyhow::Result<&str> {
    let r = reason.trim();
    if r.is_empty() || r.chars().count() > 200 || r.chars().any(char::is_control) {
        return Err(usage("--reason: give one line of at most 200 characters"));
    }
    Ok(r)
}
