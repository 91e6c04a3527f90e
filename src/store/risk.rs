//! What the risk score of a login reads (`core::risk`): each a point or
//! short range lookup on an index, bounded by a LIMIT, so scoring a login
//! costs a few index probes whatever the size of the tables.

use super::{Context, Result, Store};
use crate::model::Millis;
use rusqlite::{params, OptionalExtension};

impl Store {
    /// The addresses (`known_addresses.ip_key`) where `user_id` completed
    /// a full login, the most recent first, at most `limit`.
    pub fn known_address_keys(&self, user_id: i64, limit: usize) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT ip_key FROM known_addresses WHERE user_id = ?1 ORDER BY last_full_login_at DESC LIMIT ?2")
            .doing("reading an account's known addresses")?;
        let rows = st.query_map(params![user_id, limit as i64], |r| r.get(0)).doing("reading an account's known addresses")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading an account's known addresses")
    }

    /// Failed logins and codes of `user_id` since `since`, counted up to
    /// `cap` (the scan stops there: an account under attack costs no more).
    pub fn recent_account_failures(&self, user_id: i64, since: Millis, cap: u32) -> Result<u32> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM security_events
                     WHERE user_id = ?1 AND created_at >= ?2 AND (event_type = 'login_failed' OR event_type = 'otp_failed') LIMIT ?3)",
            )
            .doing("counting an account's recent failures")?;
        st.query_row(params![user_id, since.0, i64::from(cap)], |r| r.get(0)).doing("counting an account's recent failures")
    }

    /// The addresses of the newest suspicious events since `since`, at
    /// most `limit` (the partial index on suspicious events, newest first).
    pub fn recent_suspicious_addresses(&self, since: Millis, limit: usize) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT ip FROM security_events WHERE is_suspicious = 1 AND created_at >= ?1 AND ip IS NOT NULL
                 ORDER BY created_at DESC LIMIT ?2",
            )
            .doing("reading recent suspicious events")?;
        let rows = st.query_map(params![since.0, limit as i64], |r| r.get(0)).doing("reading recent suspicious events")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading recent suspicious events")
    }

    /// Whether an event from exactly `ip` (as events keep it) since
    /// `since` is suspicious: a range on the events' address index, the
    /// first hit ends it. Unlike `recent_suspicious_addresses` no flood of
    /// suspicious events from elsewhere can push it out.
    pub fn suspicious_event_from(&self, ip: &str, since: Millis) -> Result<bool> {
        self.conn()
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM security_events WHERE ip = ?1 AND created_at >= ?2 AND is_suspicious = 1 LIMIT 1)")
            .doing("finding a suspicious event from an address")?
            .query_row(params![ip, since.0], |r| r.get(0))
            .doing("finding a suspicious event from an address")
    }

    /// The newest incident about `subject_key` that is not resolved, or
    /// was resolved at or after `resolved_since`: its id.
    pub fn incident_about(&self, subject_key: &str, resolved_since: Millis) -> Result<Option<i64>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT id FROM incidents WHERE subject_key = ?1 AND (status <> 'resolved' OR resolved_at >= ?2)
                 ORDER BY created_at DESC LIMIT 1",
            )
            .doing("reading the incidents about an address")?;
        st.query_row(params![subject_key, resolved_since.0], |r| r.get(0)).optional().doing("reading the incidents about an address")
    }

    /// When `user_id`'s latest logins (sessions) were authenticated, the
    /// newest first, at most `limit`.
    pub fn recent_login_times(&self, user_id: i64, limit: usize) -> Result<Vec<Millis>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT authenticated_at FROM sessions WHERE user_id = ?1 ORDER BY started_at DESC LIMIT ?2")
            .doing("reading an account's login times")?;
        let rows = st.query_map(params![user_id, limit as i64], |r| Ok(Millis(r.get(0)?))).doing("reading an account's login times")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading an account's login times")
    }

    /// Whether the account has a device recorded before HASSH (migration
    /// 0010) that a login with this version string takes over.
    pub fn legacy_device_exists(&self, user_id: i64, legacy_fingerprint: &str, client_version: &str) -> Result<bool> {
        self.conn()
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM devices WHERE user_id = ?1 AND fingerprint = ?2 AND client_version = ?3 AND fingerprint_version = 1 AND is_trusted = 0)",
            )
            .doing("finding a device recorded before HASSH")?
            .query_row(params![user_id, legacy_fingerprint, client_version], |r| r.get(0))
            .doing("finding a device recorded before HASSH")
    }

    /// Keeps the score of a refused login on the account's device with
    /// this fingerprint, if it has one (a refusal makes no device).
    pub fn set_device_risk(&self, user_id: i64, fingerprint: &str, score: u8) -> Result<()> {
        self.conn()
            .execute("UPDATE devices SET risk_score = ?3 WHERE user_id = ?1 AND fingerprint = ?2", params![user_id, fingerprint, score])
            .doing("keeping a device's risk score")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The planner answers each lookup from an index (no full scan of the
    /// events, incidents or sessions).
    #[test]
    fn every_lookup_uses_an_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        store.migrate(None).expect("migrate");
        let conn = store.conn();
        let plan = |sql: &str| -> String {
            let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("plan");
            let rows = st.query_map([], |r| r.get::<_, String>(3)).expect("plan");
            rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
        };
        let cases = [
            ("SELECT ip_key FROM known_addresses WHERE user_id = 1 ORDER BY last_full_login_at DESC LIMIT 5", "PRIMARY KEY"),
            ("SELECT COUNT(*) FROM (SELECT 1 FROM security_events WHERE user_id = 1 AND created_at >= 0 AND (event_type = 'login_failed' OR event_type = 'otp_failed') LIMIT 3)", "security_events_user"),
            ("SELECT ip FROM security_events WHERE is_suspicious = 1 AND created_at >= 0 AND ip IS NOT NULL ORDER BY created_at DESC LIMIT 5", "security_events_suspicious"),
            ("SELECT EXISTS(SELECT 1 FROM security_events WHERE ip = '192.0.2.7' AND created_at >= 0 AND is_suspicious = 1 LIMIT 1)", "security_events_ip"),
            ("SELECT id FROM incidents WHERE subject_key = 'address:192.0.2.7' AND (status <> 'resolved' OR resolved_at >= 0) ORDER BY created_at DESC LIMIT 1", "incidents_subject"),
            ("SELECT authenticated_at FROM sessions WHERE user_id = 1 ORDER BY started_at DESC LIMIT 5", "sessions_user"),
        ];
        for (sql, index) in cases {
            let p = plan(sql);
            assert!(p.contains(index), "{sql}: {p}");
        }
    }
}
