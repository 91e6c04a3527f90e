//! What the scans read and write (SPEC §11): the accounts with what the
//! password and factor scans need, in pages by id; the verdict a login
//! gives a password (never the password, never a hash of it); open
//! sessions that nothing refreshed, closed with their events in one
//! transaction; the daemon's refresh of its live sessions.

use super::{Context, Result, Store};
use crate::model::{Event, Millis};
use rusqlite::params;

/// One account as the password and factor scans see it.
#[derive(Debug, Clone)]
pub struct ScanAccount {
    pub id: i64,
    pub username: String,
    /// The PHC string: only its cost is read.
    pub password_hash: Option<String>,
    pub password_changed_at: Option<Millis>,
    pub created_at: Millis,
    pub imposed_level: u8,
    /// Sorted.
    pub groups: Vec<String>,
    pub otp_enabled: bool,
    /// At least one hardware key is registered.
    pub has_webauthn_key: bool,
    /// The verdict of the last successful login with the password.
    pub password_weak: Option<bool>,
    pub weak_reasons: Vec<String>,
    pub password_checked_at: Option<Millis>,
}

/// An open session that nothing refreshed, as it was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleSession {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub protocol: String,
    pub ip: String,
    pub started_at: Millis,
    pub last_activity_at: Millis,
    /// Its last sign of life.
    pub ended_at: Millis,
}

impl Store {
    /// Accounts with an id above `after`, at most `limit`, in id order.
    pub fn scan_accounts(&self, after: i64, limit: usize) -> Result<Vec<ScanAccount>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT u.id, u.username, u.password_hash, u.password_changed_at, u.created_at, u.imposed_level,
                        (SELECT json_group_array(g.group_name) FROM user_groups g WHERE g.user_id = u.id),
                        EXISTS(SELECT 1 FROM otp_secrets o WHERE o.user_id = u.id AND o.enabled = 1),
                        u.password_weak, u.password_weak_reasons, u.password_checked_at,
                        EXISTS(SELECT 1 FROM webauthn_credentials w WHERE w.user_id = u.id)
                 FROM users u WHERE u.id > ?1 ORDER BY u.id LIMIT ?2",
            )
            .doing("reading accounts to scan")?;
        let rows = st
            .query_map(params![after, limit as i64], |r| {
                let groups: Option<String> = r.get(6)?;
                let reasons: Option<String> = r.get(9)?;
                Ok(ScanAccount {
                    id: r.get(0)?,
                    username: r.get(1)?,
                    password_hash: r.get(2)?,
                    password_changed_at: r.get::<_, Option<i64>>(3)?.map(Millis),
                    created_at: Millis(r.get(4)?),
                    imposed_level: r.get(5)?,
                    groups: groups.as_deref().and_then(|g| serde_json::from_str(g).ok()).unwrap_or_default(),
                    otp_enabled: r.get(7)?,
                    password_weak: r.get(8)?,
                    weak_reasons: reasons.as_deref().and_then(|g| serde_json::from_str(g).ok()).unwrap_or_default(),
                    password_checked_at: r.get::<_, Option<i64>>(10)?.map(Millis),
                    has_webauthn_key: r.get(11)?,
                })
            })
            .doing("reading accounts to scan")?;
        let mut out: Vec<ScanAccount> = rows.collect::<rusqlite::Result<_>>().doing("reading accounts to scan")?;
        for a in &mut out {
            a.groups.sort();
        }
        Ok(out)
    }

    pub fn count_users(&self) -> Result<u64> {
        self.conn().query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0)).doing("counting users").map(|n| n.max(0) as u64)
    }

    /// Stores the verdict a login gave the password that was changed at
    /// `changed_at` (`None`: never changed since creation). Nothing is
    /// written when the password changed in between. True when written.
    pub fn set_password_verdict(&self, user_id: i64, changed_at: Option<Millis>, weak: bool, reasons: &[&str], now: Millis) -> Result<bool> {
        let reasons = serde_json::to_string(reasons).unwrap_or_else(|_| "[]".to_owned());
        let n = self
            .conn()
            .execute(
                "UPDATE users SET password_weak = ?3, password_weak_reasons = ?4, password_checked_at = ?5
                 WHERE id = ?1 AND password_changed_at IS ?2",
                params![user_id, changed_at.map(|t| t.0), weak, reasons, now.0],
            )
            .doing("recording a password's verdict")?;
        Ok(n > 0)
    }

    pub fn count_open_sessions(&self) -> Result<u64> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL", [], |r| r.get::<_, i64>(0))
            .doing("counting open sessions")
            .map(|n| n.max(0) as u64)
    }

    /// Closes the open sessions whose last sign of life is before `before`
    /// (their end is set to it) and writes the events `events` makes for
    /// them, in one transaction. Returns them in id order.
    pub fn end_stale_sessions(&self, before: Millis, reason: &str, events: impl FnOnce(&[StaleSession]) -> Vec<Event>) -> Result<Vec<StaleSession>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to close stale sessions")?;
        let stale: Vec<StaleSession> = {
            let mut st = tx
                .prepare_cached(
                    "SELECT s.id, s.user_id, u.username, s.protocol, s.ip, s.started_at, s.last_activity_at
                     FROM sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.ended_at IS NULL AND MAX(s.last_activity_at, s.started_at) < ?1 ORDER BY s.id",
                )
                .doing("reading stale sessions")?;
            let rows = st
                .query_map([before.0], |r| {
                    let started = Millis(r.get(5)?);
                    let last = Millis(r.get(6)?);
                    Ok(StaleSession {
                        id: r.get(0)?,
                        user_id: r.get(1)?,
                        username: r.get(2)?,
                        protocol: r.get(3)?,
                        ip: r.get(4)?,
                        started_at: started,
                        last_activity_at: last,
                        ended_at: started.max(last),
                    })
                })
                .doing("reading stale sessions")?;
            rows.collect::<rusqlite::Result<_>>().doing("reading stale sessions")?
        };
        {
            let mut st = tx
                .prepare_cached("UPDATE sessions SET ended_at = ?2, end_reason = ?3 WHERE id = ?1 AND ended_at IS NULL")
                .doing("closing a stale session")?;
            for s in &stale {
                st.execute(params![s.id, s.ended_at.0, reason]).doing("closing a stale session")?;
            }
        }
        super::events::insert_batch_tx(&tx, &events(&stale))?;
        tx.commit().doing("committing closed sessions")?;
        Ok(stale)
    }

    /// The daemon's sign of life for its live sessions.
    pub fn touch_sessions(&self, ids: &[i64], now: Millis) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned());
        self.conn()
            .execute(
                "UPDATE sessions SET last_activity_at = MAX(last_activity_at, ?2) WHERE ended_at IS NULL AND id IN (SELECT value FROM json_each(?1))",
                params![list, now.0],
            )
            .doing("refreshing live sessions")?;
        Ok(())
    }
}
