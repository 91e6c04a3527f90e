//! Account locks (with who made them), the addresses where an owner
//! completed a full login, ending sessions together with their events, and
//! the rows the daemon checks for its live sessions when the database
//! changed.

use super::{Context, Error, Result, Store};
use crate::model::{Event, LockSource, Millis};
use rusqlite::{params, OptionalExtension};

/// A lock to set.
pub struct NewLock<'a> {
    pub until: Millis,
    pub reason: &'a str,
    pub source: LockSource,
    pub incident_id: Option<i64>,
}

/// An open session that a change ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    pub id: i64,
    pub user_id: i64,
    pub ip: String,
}

/// Which sessions to end.
#[derive(Debug, Clone, Copy)]
pub enum Sessions {
    One(i64),
    OfUser(i64),
    /// The open sessions of one device (the device is being removed).
    OfDevice(i64),
}

/// What the daemon needs to know about one of its live sessions.
#[derive(Debug, Clone)]
pub struct LiveRow {
    pub id: i64,
    pub user_id: i64,
    pub ip: String,
    /// Set when another process ended the row.
    pub end_reason: Option<String>,
    pub ended: bool,
    pub lock_source: Option<LockSource>,
    pub locked_until: Option<Millis>,
    pub lock_reason: Option<String>,
}

/// Ends the open sessions selected by `which` inside `tx`; returns them.
pub(super) fn end_open_sessions(tx: &rusqlite::Transaction<'_>, which: Sessions, reason: &str, now: Millis) -> Result<Vec<EndedSession>> {
    let (sql, arg) = match which {
        Sessions::One(id) => ("SELECT id, user_id, ip FROM sessions WHERE id = ?1 AND ended_at IS NULL", id),
        Sessions::OfUser(user) => ("SELECT id, user_id, ip FROM sessions WHERE user_id = ?1 AND ended_at IS NULL ORDER BY id", user),
        Sessions::OfDevice(device) => ("SELECT id, user_id, ip FROM sessions WHERE device_id = ?1 AND ended_at IS NULL ORDER BY id", device),
    };
    let open: Vec<EndedSession> = {
        let mut st = tx.prepare_cached(sql).doing("reading open sessions")?;
        let rows = st.query_map([arg], |r| Ok(EndedSession { id: r.get(0)?, user_id: r.get(1)?, ip: r.get(2)? })).doing("reading open sessions")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading open sessions")?
    };
    let mut st = tx
        .prepare_cached("UPDATE sessions SET ended_at = ?2, end_reason = ?3, last_activity_at = MAX(last_activity_at, ?2) WHERE id = ?1 AND ended_at IS NULL")
        .doing("ending a session")?;
    for s in &open {
        st.execute(params![s.id, now.0, reason]).doing("ending a session")?;
    }
    Ok(open)
}

impl Store {
    /// Ends open sessions and writes the events `events` makes for them,
    /// in one transaction. Returns the sessions that were open (none when
    /// the selected one had already ended).
    pub fn end_sessions(&self, which: Sessions, reason: &str, now: Millis, events: impl FnOnce(&[EndedSession]) -> Vec<Event>) -> Result<Vec<EndedSession>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to end sessions")?;
        let ended = end_open_sessions(&tx, which, reason, now)?;
        super::events::insert_batch_tx(&tx, &events(&ended))?;
        tx.commit().doing("committing ended sessions")?;
        Ok(ended)
    }

    /// Sets a lock in one transaction with its events. With
    /// `yield_to_stronger`, a lock in force that is the sysop's or lasts at
    /// least as long is left alone (`Ok(None)`, nothing written). With
    /// `end_sessions`, the account's open sessions end with that reason;
    /// `events` gets them and returns the events to write.
    pub fn lock_user(
        &self,
        user_id: i64,
        lock: &NewLock<'_>,
        yield_to_stronger: bool,
        end_sessions: Option<&str>,
        now: Millis,
        events: impl FnOnce(&[EndedSession]) -> Vec<Event>,
    ) -> Result<Option<Vec<EndedSession>>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting a lock")?;
        let exists: bool = tx.query_row("SELECT EXISTS(SELECT 1 FROM users WHERE id = ?1)", [user_id], |r| r.get(0)).doing("reading a user")?;
        if !exists {
            return Err(Error::NotFound(format!("no user with id {user_id}")));
        }
        let n = tx
            .execute(
                "UPDATE users SET locked_until = ?2, lock_reason = ?3, lock_source = ?4, lock_incident_id = ?5
                 WHERE id = ?1 AND NOT (?6 AND COALESCE(locked_until, 0) > ?7 AND (lock_source IS NOT 'rule' OR locked_until >= ?2))",
                params![user_id, lock.until.0, lock.reason, lock.source.as_str(), lock.incident_id, yield_to_stronger, now.0],
            )
            .doing("locking a user")?;
        if n == 0 {
            return Ok(None);
        }
        let ended = match end_sessions {
            Some(reason) => end_open_sessions(&tx, Sessions::OfUser(user_id), reason, now)?,
            None => Vec::new(),
        };
        super::events::insert_batch_tx(&tx, &events(&ended))?;
        tx.commit().doing("committing a lock")?;
        Ok(Some(ended))
    }

    /// Lifts any lock, in one transaction with `events`.
    pub fn unlock_user(&self, user_id: i64, events: &[Event]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting an unlock")?;
        let n = tx
            .execute("UPDATE users SET locked_until = NULL, lock_reason = NULL, lock_source = NULL, lock_incident_id = NULL WHERE id = ?1", [user_id])
            .doing("unlocking a user")?;
        if n == 0 {
            return Err(Error::NotFound(format!("no user with id {user_id}")));
        }
        super::events::insert_batch_tx(&tx, events)?;
        tx.commit().doing("committing an unlock")
    }

    /// Records a full login (every required factor) of `user_id` from the
    /// address `ip_key`.
    pub fn record_known_address(&self, user_id: i64, ip_key: &str, now: Millis) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO known_addresses (user_id, ip_key, first_full_login_at, last_full_login_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (user_id, ip_key) DO UPDATE SET last_full_login_at = MAX(last_full_login_at, excluded.last_full_login_at)",
                params![user_id, ip_key, now.0],
            )
            .doing("recording a known address")?;
        Ok(())
    }

    /// When `user_id` first and last completed a full login from `ip_key`.
    pub fn known_address(&self, user_id: i64, ip_key: &str) -> Result<Option<(Millis, Millis)>> {
        self.conn()
            .prepare_cached("SELECT first_full_login_at, last_full_login_at FROM known_addresses WHERE user_id = ?1 AND ip_key = ?2")
            .doing("reading a known address")?
            .query_row(params![user_id, ip_key], |r| Ok((Millis(r.get(0)?), Millis(r.get(1)?))))
            .optional()
            .doing("reading a known address")
    }

    /// The rows of the sessions `ids` with their account's lock, in one
    /// query. A session whose row is gone (its account was deleted) is
    /// missing from the answer.
    pub fn live_rows(&self, ids: &[i64]) -> Result<Vec<LiveRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(ids).map_err(|e| Error::Conflict(format!("listing session ids: {e}")))?;
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT s.id, s.user_id, s.ip, s.ended_at IS NOT NULL, s.end_reason, u.lock_source, u.locked_until, u.lock_reason
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.id IN (SELECT value FROM json_each(?1))",
            )
            .doing("checking live sessions")?;
        let rows = st
            .query_map([list], |r| {
                Ok(LiveRow {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    ip: r.get(2)?,
                    ended: r.get(3)?,
                    end_reason: r.get(4)?,
                    lock_source: r.get::<_, Option<String>>(5)?.and_then(|s| LockSource::parse(&s)),
                    locked_until: r.get::<_, Option<i64>>(6)?.map(Millis),
                    lock_reason: r.get(7)?,
                })
            })
            .doing("checking live sessions")?;
        rows.collect::<rusqlite::Result<_>>().doing("checking live sessions")
    }
}

/// A connection of its own that tells whether another connection (the CLI,
/// the event writer, the store's own) committed since the last look:
/// `PRAGMA data_version` reads no table.
pub struct ChangeWatch {
    conn: rusqlite::Connection,
    last: i64,
}

impl ChangeWatch {
    pub fn open(path: &std::path::Path) -> Result<ChangeWatch> {
        let conn = super::open_connection(path)?;
        let last = data_version(&conn)?;
        Ok(ChangeWatch { conn, last })
    }

    /// Whether anything was committed since the last call (or the open).
    pub fn changed(&mut self) -> Result<bool> {
        let now = data_version(&self.conn)?;
        let changed = now != self.last;
        self.last = now;
        Ok(changed)
    }
}

fn data_version(conn: &rusqlite::Connection) -> Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0)).doing("reading the data version")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sessions::NewSession;
    use crate::store::users::NewUser;

    fn store(dir: &std::path::Path) -> Store {
        let s = Store::open(&dir.join("t.db")).expect("open");
        s.migrate(None).expect("migrate");
        s
    }

    fn session(s: &Store, user_id: i64, ip: &str) -> i64 {
        s.start_session(&NewSession { user_id, device_id: None, protocol: "ssh", ip, client_version: "v", auth_method: "password", factors: 1, connected_at: Millis(1), now: Millis(1) })
            .expect("session")
    }

    /// Another connection's commit moves the data version; a look with no
    /// commit in between does not; the watcher's own reads never do.
    #[test]
    fn the_watch_sees_commits_of_other_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let mut w = ChangeWatch::open(s.path()).expect("watch");
        assert!(!w.changed().expect("look"));
        let u = s.create_user(&NewUser { username: "alice", email: None, password_hash: "$x", groups: &[], now: Millis(1) }).expect("user");
        assert!(w.changed().expect("look"));
        assert!(!w.changed().expect("look"));
        s.record_known_address(u.id, "192.0.2.1", Millis(5)).expect("known");
        assert!(w.changed().expect("look"));
        assert!(!w.changed().expect("look"));
    }

    /// A rule lock yields to a sysop lock in force and to a longer rule
    /// lock; a sysop lock overrides anything. Ended sessions and events go
    /// in the same transaction.
    #[test]
    fn locks_yield_to_stronger_ones_and_end_sessions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let u = s.create_user(&NewUser { username: "alice", email: None, password_hash: "$x", groups: &[], now: Millis(1) }).expect("user");
        let a = session(&s, u.id, "192.0.2.1");
        let b = session(&s, u.id, "192.0.2.2");
        let now = Millis(1000);
        let rule = |until: i64| NewLock { until: Millis(until), reason: "r", source: LockSource::Rule, incident_id: Some(7) };
        let sysop = NewLock { until: Millis(5000), reason: "s", source: LockSource::Sysop, incident_id: None };
        assert_eq!(s.lock_user(u.id, &rule(3000), true, None, now, |_| vec![]).expect("lock"), Some(vec![]));
        assert_eq!(s.lock_user(u.id, &rule(2000), true, None, now, |_| vec![]).expect("lock"), None, "a shorter rule lock yields");
        assert!(s.lock_user(u.id, &rule(4000), true, None, now, |_| vec![]).expect("lock").is_some(), "a longer one extends");
        let ended = s
            .lock_user(u.id, &sysop, false, Some("account locked"), now, |ended| {
                ended.iter().map(|e| Event::new(crate::model::EventType::SessionRevoked, crate::model::Severity::Medium, "x", now).session(Some(e.id))).collect()
            })
            .expect("lock")
            .expect("set");
        assert_eq!(ended.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(s.lock_user(u.id, &rule(9000), true, None, now, |_| vec![]).expect("lock"), None, "a sysop lock in force stays");
        let user = s.user_by_id(u.id).expect("read").expect("user");
        assert_eq!((user.lock_source, user.locked_until, user.lock_incident_id), (Some(LockSource::Sysop), Some(Millis(5000)), None));
        // Once the sysop lock has run out, a rule lock may be set again.
        assert!(s.lock_user(u.id, &rule(9000), true, None, Millis(6000), |_| vec![]).expect("lock").is_some());
        let rows = s.live_rows(&[a, b, 999]).expect("rows");
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.ended && r.end_reason.as_deref() == Some("account locked") && r.lock_source == Some(LockSource::Rule)), "{rows:?}");
        let revoked = s.events(&crate::store::events::EventFilter { limit: 10, ..Default::default() }).expect("events");
        assert_eq!(revoked.len(), 2);
        s.unlock_user(u.id, &[]).expect("unlock");
        let user = s.user_by_id(u.id).expect("read").expect("user");
        assert_eq!((user.lock_source, user.locked_until, user.lock_reason), (None, None, None));
        // Already ended: nothing to end, no event.
        let again = s.end_sessions(Sessions::One(a), "again", now, |e| {
            assert!(e.is_empty(), "{e:?}");
            vec![]
        });
        assert_eq!(again.expect("end"), vec![]);
    }
}
