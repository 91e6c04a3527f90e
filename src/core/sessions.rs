//! Live sessions and their end: this process's live connections (so a
//! revocation closes them at once, with a message that says why),
//! revoking one session or all of an account's, and what the daemon does
//! when another process changed the database (`on_database_change`).

use super::accounts::Actor;
use super::{Core, Error, Result};
use crate::model::{Event, EventType, LockSource, Millis, Severity, User};
use crate::store::locks::{EndedSession, Sessions};
use crate::store::sessions::SessionRow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One live connection's end, as the connection waits for it.
#[derive(Default)]
pub struct LiveSession {
    notify: tokio::sync::Notify,
    why: Mutex<Option<String>>,
}

impl LiveSession {
    pub fn new() -> Arc<LiveSession> {
        Arc::new(LiveSession::default())
    }

    /// Tells the connection to go; `why` is shown to the user (the first
    /// reason given wins).
    pub fn end(&self, why: &str) {
        {
            let mut w = self.why.lock().unwrap_or_else(|p| p.into_inner());
            if w.is_none() {
                *w = Some(why.to_owned());
            }
        }
        self.notify.notify_one();
    }

    /// Returns once `end` was called (also when it was called before),
    /// with the reason.
    pub async fn ended(&self) -> String {
        self.notify.notified().await;
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_else(|| "ended by the gate".to_owned())
    }
}

/// What a user whose session was cut reads, with `why` escaped.
pub fn end_message(why: &str) -> String {
    format!("Your session was ended: {}", crate::model::escape_control(why))
}

/// The reason recorded and shown when an account's deletion ends its sessions.
pub(crate) const DELETED: &str = "the account was deleted";

/// What one call of `on_database_change` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Live sessions of this process that were told to go.
    pub sessions_cut: usize,
}

impl Core {
    /// Registers a live session; it is told through `live` when it is
    /// revoked. `forget_session` removes it when the connection ends.
    pub fn watch_session(&self, session_id: i64, live: Arc<LiveSession>) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(session_id, live);
    }

    pub fn forget_session(&self, session_id: i64) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&session_id);
    }

    /// Tells the live connections of `ids` in this process to go.
    pub(crate) fn cut_live(&self, ids: impl IntoIterator<Item = i64>, why: &str) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut cut = 0;
        for id in ids {
            if let Some(s) = live.get(&id) {
                s.end(why);
                cut += 1;
            }
        }
        cut
    }

    /// Sessions, newest first, of one account or all; open ones only
    /// unless `all`.
    pub fn list_sessions(&self, user_id: Option<i64>, all: bool, limit: usize) -> Result<Vec<SessionRow>> {
        Ok(self.store.list_sessions(user_id, !all, limit)?)
    }

    /// One session by id.
    pub fn session(&self, session_id: i64) -> Result<Option<SessionRow>> {
        Ok(self.store.session(session_id)?)
    }

    /// A `session_revoked` event for `s`: the cause (actor, reason,
    /// incident) in its details. The event is about the revoked session;
    /// a session that asked is in the details as `by_session`.
    pub(super) fn revoked_event(&self, s: &EndedSession, username: &str, reason: &str, actor: &Actor, incident_id: Option<i64>, now: Millis) -> Event {
        let e = Event::new(EventType::SessionRevoked, Severity::Medium, format!("session {} of {username} revoked: {reason}", s.id), now)
            .user(Some(s.user_id), Some(username))
            .detail("reason", reason)
            .detail("session_ip", s.ip.clone());
        let mut e = actor.stamp(e);
        if let Some(by) = e.session_id.replace(s.id) {
            e = e.detail("by_session", by);
        }
        if e.ip.is_none() {
            e.ip = Some(s.ip.clone());
        }
        if let Some(id) = incident_id {
            e = e.detail("incident_id", id);
        }
        e
    }

    /// Revokes one session: its row is ended with `reason`, `session_revoked`
    /// is recorded (in the same transaction) with the actor, the reason and
    /// the incident, and the live connection is closed with a message that
    /// gives the reason — at once in this process, within a second in the
    /// daemon when another process (the CLI) revoked it. `Ok(false)`: the
    /// session had already ended. An unknown id is an error.
    pub async fn revoke_session(&self, session_id: i64, reason: &str, actor: &Actor, incident_id: Option<i64>, now: Millis) -> Result<bool> {
        let row = self.store.session(session_id)?.ok_or_else(|| Error::Invalid(format!("no session with id {session_id}")))?;
        if row.ended_at.is_some() {
            return Ok(false);
        }
        let reason = reason.trim();
        let ended = self.store.end_sessions(Sessions::One(session_id), reason, now, |ended| {
            ended.iter().map(|s| self.revoked_event(s, &row.username, reason, actor, incident_id, now)).collect()
        })?;
        self.cut_live(ended.iter().map(|s| s.id), reason);
        Ok(!ended.is_empty())
    }

    /// Revokes every open session of `user`, as `revoke_session` does each;
    /// returns how many there were.
    pub async fn revoke_user_sessions(&self, user: &User, reason: &str, actor: &Actor, incident_id: Option<i64>, now: Millis) -> Result<usize> {
        let reason = reason.trim();
        let ended = self.store.end_sessions(Sessions::OfUser(user.id), reason, now, |ended| {
            ended.iter().map(|s| self.revoked_event(s, &user.username, reason, actor, incident_id, now)).collect()
        })?;
        self.cut_live(ended.iter().map(|s| s.id), reason);
        Ok(ended.len())
    }

    /// Ends one of a user's own sessions (from the account menu).
    /// `Ok(false)`: not one of theirs, or already ended.
    pub async fn revoke_own_session(&self, user: &User, session_id: i64, actor: &Actor, now: Millis) -> Result<bool> {
        match self.store.session(session_id)? {
            Some(s) if s.user_id == user.id && s.ended_at.is_none() => self.revoke_session(session_id, "ended from another of your sessions", actor, None, now).await,
            _ => Ok(false),
        }
    }

    /// The daemon calls this when another connection committed (`PRAGMA
    /// data_version` moved: the CLI, but also the daemon's own writer, so
    /// the work here stays small): one query over the rows of this
    /// process's live sessions. A session whose row another process ended
    /// (a revoke, a lock) or removed (the account deleted) is cut with the
    /// recorded reason; a live session of an account under a sysop's lock
    /// that nothing ended yet (a lock made without ending sessions) is
    /// ended and cut here.
    pub async fn on_database_change(&self, now: Millis) -> Result<Changes> {
        let mut changes = Changes::default();
        let live: Vec<(i64, Arc<LiveSession>)> = self.live.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(id, s)| (*id, s.clone())).collect();
        if !live.is_empty() {
            let ids: Vec<i64> = live.iter().map(|(id, _)| *id).collect();
            let rows: HashMap<i64, crate::store::locks::LiveRow> = self.store.live_rows(&ids)?.into_iter().map(|r| (r.id, r)).collect();
            for (id, session) in live {
                match rows.get(&id) {
                    None => {
                        session.end(DELETED);
                        changes.sessions_cut += 1;
                    }
                    Some(r) if r.ended => {
                        session.end(r.end_reason.as_deref().unwrap_or("ended by the sysop"));
                        changes.sessions_cut += 1;
                    }
                    Some(r) if r.lock_source != Some(LockSource::Rule) && r.locked_until.is_some_and(|t| t > now) => {
                        let why = format!("account locked: {}", r.lock_reason.as_deref().unwrap_or("by the sysop"));
                        let username = self.store.user_by_id(r.user_id)?.map(|u| u.username).unwrap_or_default();
                        let ended = self.store.end_sessions(Sessions::One(id), &why, now, |ended| {
                            ended
                                .iter()
                                .map(|s| {
                                    Event::new(EventType::SessionRevoked, Severity::Medium, format!("session {} of {username} revoked: {why}", s.id), now)
                                        .user(Some(s.user_id), Some(&username))
                                        .session(Some(s.id))
                                        .ip(Some(&s.ip))
                                        .detail("reason", why.clone())
                                        .detail("cause", "account_locked")
                                })
                                .collect()
                        })?;
                        if !ended.is_empty() {
                            session.end(&why);
                            changes.sessions_cut += 1;
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        // Other state that another process may change is synced here, each
        // part with its own cheap check (address blocks: `self.sync_blocks(now)`).
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixture::{Fixture, T0};
    use crate::core::login::Outcome;

    /// alice's session from a login at `ip`.
    fn session(f: &Fixture, ip: &str, now: Millis) -> i64 {
        match f.login(ip, None, now) {
            Outcome::Accepted(a) => a.session_id,
            other => panic!("not accepted: {other:?}"),
        }
    }

    /// A revoke made by another process (a second `Core` on the same file,
    /// as the CLI is) reaches this process's live session through
    /// `on_database_change`, with the reason; one made here cuts at once.
    #[test]
    fn revocations_reach_live_sessions_with_their_reason() {
        let f = Fixture::new("", None);
        let (daemon, cli, rt, sysop, alice) = (&f.core, f.other_process(), &f.rt, &f.sysop, &f.alice);
        let now = T0;
        let (a, b) = (session(&f, "192.0.2.1", now), session(&f, "192.0.2.2", now));
        let (live_a, live_b) = (LiveSession::new(), LiveSession::new());
        daemon.watch_session(a, live_a.clone());
        daemon.watch_session(b, live_b.clone());
        assert_eq!(rt.block_on(daemon.on_database_change(now)).expect("sync"), Changes { sessions_cut: 0 });

        assert!(rt.block_on(cli.revoke_session(a, "suspicious activity", sysop, Some(42), now)).expect("revoke"));
        assert!(!rt.block_on(cli.revoke_session(a, "again", sysop, None, now)).expect("revoke"), "already ended");
        let unknown = rt.block_on(cli.revoke_session(9999, "x", sysop, None, now)).expect_err("unknown");
        assert_eq!(unknown.to_string(), "no session with id 9999");
        assert_eq!(rt.block_on(daemon.on_database_change(now)).expect("sync"), Changes { sessions_cut: 1 });
        assert_eq!(rt.block_on(live_a.ended()), "suspicious activity");
        let events = cli.events(&crate::store::events::EventFilter { event_type: Some(EventType::SessionRevoked), limit: 10, ..Default::default() }).expect("events");
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!((e.session_id, e.user_id, e.ip.as_deref()), (Some(a), Some(alice.id), Some("192.0.2.1")));
        assert_eq!(e.details["actor"], "cli:root");
        assert_eq!(e.details["reason"], "suspicious activity");
        assert_eq!(e.details["incident_id"], 42);

        // All of a user's sessions, from this process: cut at once.
        assert_eq!(rt.block_on(daemon.revoke_user_sessions(alice, "password reset", sysop, None, now)).expect("revoke"), 1);
        assert_eq!(rt.block_on(live_b.ended()), "password reset");
        assert_eq!(rt.block_on(daemon.revoke_user_sessions(alice, "again", sysop, None, now)).expect("revoke"), 0);
    }

    /// A sysop lock made from another process ends the account's sessions
    /// there (and cuts them here on the next change); a user deleted by
    /// another process loses its live sessions too.
    #[test]
    fn locks_and_deletions_by_another_process_cut_live_sessions() {
        let f = Fixture::new("", None);
        let (daemon, cli, rt, sysop, alice) = (&f.core, f.other_process(), &f.rt, &f.sysop, &f.alice);
        let now = T0;
        let a = session(&f, "192.0.2.1", now);
        let live = LiveSession::new();
        daemon.watch_session(a, live.clone());
        assert_eq!(rt.block_on(cli.lock_user(alice, crate::model::FOREVER, "investigating", sysop, now)).expect("lock"), 1);
        assert_eq!(rt.block_on(daemon.on_database_change(now)).expect("sync"), Changes { sessions_cut: 1 });
        assert_eq!(rt.block_on(live.ended()), "account locked: investigating");
        daemon.forget_session(a);

        rt.block_on(cli.unlock_user(alice, sysop, now)).expect("unlock");
        let b = session(&f, "192.0.2.1", now);
        let live = LiveSession::new();
        daemon.watch_session(b, live.clone());
        rt.block_on(cli.delete_user(alice, sysop, now)).expect("delete");
        assert_eq!(rt.block_on(daemon.on_database_change(now)).expect("sync"), Changes { sessions_cut: 1 });
        assert_eq!(rt.block_on(live.ended()), DELETED);
    }
}
