//! What the live metrics read at each scrape (open incidents, blocks in
//! force, the outbox) and the daily rollups table (`metrics_daily`).

use super::{Context, Result, Store};
use crate::model::Millis;
use rusqlite::{params, OptionalExtension};

/// One UTC day's rollup (a `metrics_daily` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyRollup {
    /// "2026-12-01".
    pub day: String,
    pub day_start: Millis,
    pub logins: i64,
    pub failures: i64,
    pub attacking_addresses: i64,
    pub users: i64,
    pub users_mfa: i64,
    pub events_info: i64,
    pub events_low: i64,
    pub events_medium: i64,
    pub events_high: i64,
    pub events_critical: i64,
    pub incidents_opened: i64,
    pub incidents_resolved: i64,
    pub mttd_ms: Option<i64>,
    pub mttr_ms: Option<i64>,
    pub blocked_addresses: i64,
    pub computed_at: Millis,
}

/// The counts of `[from, to)` read from the events and accounts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DayCounts {
    pub logins: i64,
    pub failures: i64,
    pub attacking_addresses: i64,
    pub users: i64,
    pub users_mfa: i64,
    /// info, low, medium, high, critical.
    pub by_severity: [i64; 5],
    pub blocked_addresses: i64,
}

const COLUMNS: &str = "day, day_start, logins, failures, attacking_addresses, users, users_mfa, events_info, events_low, events_medium, events_high, events_critical, incidents_opened, incidents_resolved, mttd_ms, mttr_ms, blocked_addresses, computed_at";

fn rollup_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DailyRollup> {
    Ok(DailyRollup {
        day: r.get(0)?,
        day_start: Millis(r.get(1)?),
        logins: r.get(2)?,
        failures: r.get(3)?,
        attacking_addresses: r.get(4)?,
        users: r.get(5)?,
        users_mfa: r.get(6)?,
        events_info: r.get(7)?,
        events_low: r.get(8)?,
        events_medium: r.get(9)?,
        events_high: r.get(10)?,
        events_critical: r.get(11)?,
        incidents_opened: r.get(12)?,
        incidents_resolved: r.get(13)?,
        mttd_ms: r.get(14)?,
        mttr_ms: r.get(15)?,
        blocked_addresses: r.get(16)?,
        computed_at: Millis(r.get(17)?),
    })
}

impl Store {
    /// Incidents not resolved, per severity (every severity present, 0 when none).
    pub fn open_incidents_by_severity(&self) -> Result<Vec<(&'static str, i64)>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT severity, COUNT(*) FROM incidents WHERE status <> 'resolved' GROUP BY severity").doing("counting open incidents")?;
        let rows: Vec<(String, i64)> = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).doing("counting open incidents")?.collect::<rusqlite::Result<_>>().doing("counting open incidents")?;
        Ok(["low", "medium", "high", "critical"].into_iter().map(|s| (s, rows.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n))).collect())
    }

    /// Blocks in force at `now` (expired rows not yet removed excluded).
    pub fn blocks_in_force(&self, now: Millis) -> Result<i64> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM ip_blocks WHERE expires_at IS NULL OR expires_at > ?1", [now.0], |r| r.get(0))
            .doing("counting blocks")
    }

    /// When the oldest mail still waiting in the outbox was queued.
    pub fn oldest_pending_mail(&self) -> Result<Option<Millis>> {
        self.conn()
            .query_row("SELECT MIN(created_at) FROM outbox WHERE sent_at IS NULL AND body_sealed IS NOT NULL", [], |r| r.get::<_, Option<i64>>(0))
            .doing("reading the outbox")
            .map(|t| t.map(Millis))
    }

    /// The time of the oldest stored event (where rollups start).
    pub fn first_event_at(&self) -> Result<Option<Millis>> {
        self.conn()
            .query_row("SELECT MIN(created_at) FROM security_events", [], |r| r.get::<_, Option<i64>>(0))
            .doing("reading the first event")
            .map(|t| t.map(Millis))
    }

    /// What a day's rollup counts, over `[from, to)`.
    pub fn day_counts(&self, from: Millis, to: Millis) -> Result<DayCounts> {
        let conn = self.conn();
        let what = "counting a day's events";
        let mut c = DayCounts::default();
        let mut st = conn.prepare_cached("SELECT event_type, severity, COUNT(*) FROM security_events WHERE created_at >= ?1 AND created_at < ?2 GROUP BY event_type, severity").doing(what)?;
        let rows = st.query_map(params![from.0, to.0], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))).doing(what)?;
        for row in rows {
            let (event_type, severity, n) = row.doing(what)?;
            match event_type.as_str() {
                "login_success" => c.logins += n,
                "login_failed" => c.failures += n,
                _ => {}
            }
            let i = ["info", "low", "medium", "high", "critical"].iter().position(|s| *s == severity).unwrap_or(0);
            c.by_severity[i] += n;
        }
        let distinct = |event_type: &str| -> Result<i64> {
            conn.query_row(
                "SELECT COUNT(DISTINCT ip) FROM security_events WHERE event_type = ?1 AND ip IS NOT NULL AND created_at >= ?2 AND created_at < ?3",
                params![event_type, from.0, to.0],
                |r| r.get(0),
            )
            .doing(what)
        };
        c.attacking_addresses = distinct("login_failed")?;
        c.blocked_addresses = distinct("ip_blocked")?;
        c.users = conn.query_row("SELECT COUNT(*) FROM users WHERE created_at < ?1", [to.0], |r| r.get(0)).doing(what)?;
        c.users_mfa = conn
            .query_row("SELECT COUNT(*) FROM users u JOIN otp_secrets o ON o.user_id = u.id WHERE u.created_at < ?1 AND o.enabled = 1 AND o.created_at < ?1", [to.0], |r| r.get(0))
            .doing(what)?;
        Ok(c)
    }

    /// Writes a day's rollup, replacing the row of that day.
    pub fn put_rollup(&self, r: &DailyRollup) -> Result<()> {
        self.conn()
            .execute(
                &format!("INSERT OR REPLACE INTO metrics_daily ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"),
                params![
                    r.day,
                    r.day_start.0,
                    r.logins,
                    r.failures,
                    r.attacking_addresses,
                    r.users,
                    r.users_mfa,
                    r.events_info,
                    r.events_low,
                    r.events_medium,
                    r.events_high,
                    r.events_critical,
                    r.incidents_opened,
                    r.incidents_resolved,
                    r.mttd_ms,
                    r.mttr_ms,
                    r.blocked_addresses,
                    r.computed_at.0
                ],
            )
            .doing("writing a daily rollup")?;
        Ok(())
    }

    /// Rollups of the days starting at or after `from`, oldest first.
    pub fn rollups_since(&self, from: Millis) -> Result<Vec<DailyRollup>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM metrics_daily WHERE day_start >= ?1 ORDER BY day_start")).doing("reading daily rollups")?;
        let rows = st.query_map([from.0], rollup_row).doing("reading daily rollups")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading daily rollups")
    }

    /// The rollup of the day starting at `day_start`, if computed.
    pub fn rollup_of(&self, day_start: Millis) -> Result<Option<DailyRollup>> {
        self.conn()
            .query_row(&format!("SELECT {COLUMNS} FROM metrics_daily WHERE day_start = ?1"), [day_start.0], rollup_row)
            .optional()
            .doing("reading a daily rollup")
    }
}
