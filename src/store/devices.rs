//! Devices: what a login came from, as the client described itself.

use super::{Context, Result, Store};
use crate::model::Millis;
use rusqlite::{params, OptionalExtension};

pub struct SeenDevice<'a> {
    pub user_id: i64,
    pub fingerprint: &'a str,
    pub device_name: &'a str,
    pub device_type: &'a str,
    pub client_version: &'a str,
    pub ip: &'a str,
    pub success: bool,
    /// Only a first factor has passed (the code is still to come): the
    /// device is seen but counted neither way yet (see `count_device_login`).
    pub pending: bool,
    pub now: Millis,
}

impl Store {
    /// Records a login (or failure) from a device; returns its id and
    /// whether it was seen for the first time.
    pub fn see_device(&self, d: &SeenDevice<'_>) -> Result<(i64, bool)> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting a device update")?;
        let existing: Option<i64> = tx
            .query_row("SELECT id FROM devices WHERE user_id = ?1 AND fingerprint = ?2", params![d.user_id, d.fingerprint], |r| r.get(0))
            .optional()
            .doing("finding a device")?;
        let (logins, failures) = if d.pending { (0, 0) } else if d.success { (1, 0) } else { (0, 1) };
        let (id, new) = match existing {
            Some(id) => {
                tx.execute(
                    "UPDATE devices SET last_seen_at = ?2, last_ip = ?3, login_count = login_count + ?4, failure_count = failure_count + ?5 WHERE id = ?1",
                    params![id, d.now.0, d.ip, logins, failures],
                )
                .doing("updating a device")?;
                (id, false)
            }
            None => {
                tx.execute(
                    // The id is past every deleted account's devices (retired_ids).
                    "INSERT INTO devices (id, user_id, fingerprint, device_name, device_type, client_version, first_seen_at, last_seen_at, last_ip, login_count, failure_count)
                     VALUES (MAX(COALESCE((SELECT MAX(id) FROM devices), 0), COALESCE((SELECT max_id FROM retired_ids WHERE tbl = 'devices'), 0)) + 1,
                             ?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9)",
                    params![d.user_id, d.fingerprint, d.device_name, d.device_type, d.client_version, d.now.0, d.ip, logins, failures],
                )
                .doing("recording a device")?;
                (tx.last_insert_rowid(), true)
            }
        };
        tx.execute(
            "INSERT INTO device_ips (device_id, ip, first_seen_at, last_seen_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (device_id, ip) DO UPDATE SET last_seen_at = excluded.last_seen_at",
            params![id, d.ip, d.now.0],
        )
        .doing("recording a device address")?;
        tx.commit().doing("committing a device update")?;
        Ok((id, new))
    }
}

impl Store {
    /// Counts a login of a device once every factor has passed.
    pub fn count_device_login(&self, device_id: i64, now: Millis) -> Result<()> {
        self.conn()
            .execute("UPDATE devices SET login_count = login_count + 1, last_seen_at = ?2 WHERE id = ?1", params![device_id, now.0])
            .doing("counting a device login")?;
        Ok(())
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceRow {
    pub id: i64,
    pub device_name: String,
    pub device_type: String,
    pub is_trusted: bool,
    pub risk_score: u8,
    pub last_seen_at: String,
    pub last_ip: String,
    pub login_count: i64,
}

impl Store {
    pub fn devices_of(&self, user_id: i64) -> Result<Vec<DeviceRow>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT id, device_name, device_type, is_trusted, risk_score, last_seen_at, COALESCE(last_ip, ''), login_count FROM devices WHERE user_id = ?1 ORDER BY last_seen_at DESC")
            .doing("listing devices")?;
        let rows = st
            .query_map([user_id], |r| {
                Ok(DeviceRow {
                    id: r.get(0)?,
                    device_name: r.get(1)?,
                    device_type: r.get(2)?,
                    is_trusted: r.get(3)?,
                    risk_score: r.get(4)?,
                    last_seen_at: Millis(r.get(5)?).rfc3339(),
                    last_ip: r.get(6)?,
                    login_count: r.get(7)?,
                })
            })
            .doing("listing devices")?;
        rows.collect::<rusqlite::Result<_>>().doing("listing devices")
    }
}
