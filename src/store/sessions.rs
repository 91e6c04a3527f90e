//! Session rows: one per authenticated connection, from accept to end.

use super::{Context, Result, Store};
use crate::model::Millis;
use rusqlite::params;

pub struct NewSession<'a> {
    pub user_id: i64,
    pub device_id: Option<i64>,
    pub protocol: &'a str,
    pub ip: &'a str,
    pub client_version: &'a str,
    pub auth_method: &'a str,
    pub factors: u8,
    pub connected_at: Millis,
    pub now: Millis,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub device_id: Option<i64>,
    pub protocol: String,
    pub ip: String,
    pub client_version: String,
    pub auth_method: String,
    pub factors: u8,
    pub started_at: String,
    pub last_activity_at: String,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
}

impl Store {
    pub fn start_session(&self, s: &NewSession<'_>) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            // The id is past every deleted account's sessions (retired_ids).
            "INSERT INTO sessions (id, user_id, device_id, protocol, ip, client_version, auth_method, factors,
                                   started_at, authenticated_at, last_activity_at)
             VALUES (MAX(COALESCE((SELECT MAX(id) FROM sessions), 0), COALESCE((SELECT max_id FROM retired_ids WHERE tbl = 'sessions'), 0)) + 1,
                     ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
            params![s.user_id, s.device_id, s.protocol, s.ip, s.client_version, s.auth_method, s.factors, s.connected_at.0, s.now.0],
        )
        .doing("starting a session")?;
        Ok(conn.last_insert_rowid())
    }

    pub fn end_session(&self, id: i64, reason: &str, now: Millis) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE sessions SET ended_at = ?2, end_reason = ?3, last_activity_at = MAX(last_activity_at, ?2) WHERE id = ?1 AND ended_at IS NULL",
                params![id, now.0, reason],
            )
            .doing("ending a session")?;
        Ok(())
    }

    pub fn set_session_factors(&self, id: i64, factors: u8) -> Result<()> {
        self.conn().execute("UPDATE sessions SET factors = MAX(factors, ?2) WHERE id = ?1", params![id, factors]).doing("recording a passed factor")?;
        Ok(())
    }

    pub fn touch_session(&self, id: i64, now: Millis) -> Result<()> {
        self.conn().execute("UPDATE sessions SET last_activity_at = ?2 WHERE id = ?1", params![id, now.0]).doing("touching a session")?;
        Ok(())
    }

    /// Sessions left open by a daemon that died: closed at start.
    /// Their end is set to their last sign of life.
    pub fn end_orphaned_sessions(&self, reason: &str) -> Result<usize> {
        self.conn()
            .execute("UPDATE sessions SET ended_at = MAX(last_activity_at, started_at), end_reason = ?1 WHERE ended_at IS NULL", params![reason])
            .doing("closing orphaned sessions")
    }

    pub fn sessions(&self, user_id: Option<i64>, limit: usize) -> Result<Vec<SessionRow>> {
        self.list_sessions(user_id, false, limit)
    }

    /// Sessions, newest first: of one account or all, open ones only or all.
    pub fn list_sessions(&self, user_id: Option<i64>, open_only: bool, limit: usize) -> Result<Vec<SessionRow>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "{SESSION_SELECT} WHERE (?1 IS NULL OR s.user_id = ?1) AND (NOT ?2 OR s.ended_at IS NULL) ORDER BY s.id DESC LIMIT ?3"
            ))
            .doing("listing sessions")?;
        let rows = st.query_map(params![user_id, open_only, limit as i64], session_from_row).doing("listing sessions")?;
        rows.collect::<rusqlite::Result<_>>().doing("listing sessions")
    }

    /// One session by id.
    pub fn session(&self, id: i64) -> Result<Option<SessionRow>> {
        use rusqlite::OptionalExtension;
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("{SESSION_SELECT} WHERE s.id = ?1")).doing("reading a session")?;
        st.query_row([id], session_from_row).optional().doing("reading a session")
    }
}

const SESSION_SELECT: &str = "SELECT s.id, s.user_id, u.username, s.device_id, s.protocol, s.ip, s.client_version, s.auth_method, s.factors,
                                     s.started_at, s.last_activity_at, s.ended_at, s.end_reason
                              FROM sessions s JOIN users u ON u.id = s.user_id";

fn session_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        username: r.get(2)?,
        device_id: r.get(3)?,
        protocol: r.get(4)?,
        ip: r.get(5)?,
        client_version: r.get(6)?,
        auth_method: r.get(7)?,
        factors: r.get(8)?,
        started_at: Millis(r.get(9)?).rfc3339(),
        last_activity_at: Millis(r.get(10)?).rfc3339(),
        ended_at: r.get::<_, Option<i64>>(11)?.map(|t| Millis(t).rfc3339()),
        end_reason: r.get(12)?,
    })
}

/// Counts for `/metrics`.
pub struct Gauges {
    pub users: i64,
    pub mfa_enabled: i64,
    pub sessions_open: i64,
    pub mail_pending: i64,
    pub events: i64,
}

impl Store {
    pub fn gauges(&self) -> Result<Gauges> {
        let conn = self.conn();
        let one = |sql: &str| -> Result<i64> { conn.query_row(sql, [], |r| r.get(0)).doing("reading metrics") };
        Ok(Gauges {
            users: one("SELECT COUNT(*) FROM users")?,
            mfa_enabled: one("SELECT COUNT(*) FROM otp_secrets WHERE enabled = 1")?,
            sessions_open: one("SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL")?,
            mail_pending: one("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND body_sealed IS NOT NULL")?,
            // The largest id: a count(*) would scan the table.
            events: one("SELECT COALESCE(MAX(id), 0) FROM security_events")?,
        })
    }
}
