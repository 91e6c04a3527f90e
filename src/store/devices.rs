//! Devices: what a login came from (the client's version string, the HASSH
//! of its key-exchange offer, the public key used), the addresses each was
//! seen at, trust, removal.

use super::locks::{end_open_sessions, EndedSession, Sessions};
use super::{Context, Result, Store};
use crate::model::{Event, Millis};
use rusqlite::{params, OptionalExtension};

/// The addresses kept per device: the most recently seen ones.
pub const MAX_ADDRESSES_PER_DEVICE: usize = 50;
/// The devices kept per account: past it, the least recently seen device
/// that is not trusted makes room.
pub const MAX_DEVICES_PER_USER: i64 = 100;

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

/// What identifies a device beyond its version string (fingerprint
/// version 2; see `core::devices`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity<'a> {
    pub hassh: Option<&'a str>,
    pub hassh_algorithms: Option<&'a str>,
    pub key_fingerprint: Option<&'a str>,
    /// The fingerprint a row recorded before migration 0010 has for this
    /// version string: such a row (not trusted) is taken over.
    pub legacy_fingerprint: Option<&'a str>,
    /// The risk score of this login (`core::risk`), kept on the device.
    pub risk_score: Option<u8>,
}

/// What `see_device_as` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub id: i64,
    /// Recorded for the first time now.
    pub new: bool,
    /// The account had no other device before this one.
    pub first_of_account: bool,
    /// The account had no other device of this type (`ssh`, `web`) before
    /// this one: for SSH, the account's first login.
    pub first_of_type: bool,
    /// A row recorded before 0010 was taken over (not new).
    pub adopted: bool,
}

impl Store {
    /// Records a login (or failure) from a device; returns its id and
    /// whether it was seen for the first time.
    pub fn see_device(&self, d: &SeenDevice<'_>) -> Result<(i64, bool)> {
        let s = self.see_device_as(d, &Identity::default())?;
        Ok((s.id, s.new))
    }

    /// `see_device` with the device's full identity.
    pub fn see_device_as(&self, d: &SeenDevice<'_>, who: &Identity<'_>) -> Result<Seen> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting a device update")?;
        let mut existing: Option<i64> = tx
            .query_row("SELECT id FROM devices WHERE user_id = ?1 AND fingerprint = ?2", params![d.user_id, d.fingerprint], |r| r.get(0))
            .optional()
            .doing("finding a device")?;
        let mut adopted = false;
        if existing.is_none() {
            if let Some(legacy) = who.legacy_fingerprint {
                let old: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM devices WHERE user_id = ?1 AND fingerprint = ?2 AND client_version = ?3 AND fingerprint_version = 1 AND is_trusted = 0",
                        params![d.user_id, legacy, d.client_version],
                        |r| r.get(0),
                    )
                    .optional()
                    .doing("finding a device recorded before HASSH")?;
                if let Some(id) = old {
                    tx.execute(
                        "UPDATE devices SET fingerprint = ?2, fingerprint_version = 2, hassh = ?3, hassh_algorithms = ?4, key_fingerprint = ?5, device_name = ?6 WHERE id = ?1",
                        params![id, d.fingerprint, who.hassh, who.hassh_algorithms, who.key_fingerprint, d.device_name],
                    )
                    .doing("taking over a device recorded before HASSH")?;
                    existing = Some(id);
                    adopted = true;
                }
            }
        }
        let (logins, failures) = if d.pending { (0, 0) } else if d.success { (1, 0) } else { (0, 1) };
        let (id, new, first_of_account, first_of_type) = match existing {
            Some(id) => {
                // The name and version string as last seen: a web device's
                // identity leaves the browser's version out, its name shows it.
                tx.execute(
                    "UPDATE devices SET last_seen_at = ?2, last_ip = ?3, login_count = login_count + ?4, failure_count = failure_count + ?5,
                                        device_name = ?6, client_version = ?7, risk_score = COALESCE(?8, risk_score) WHERE id = ?1",
                    params![id, d.now.0, d.ip, logins, failures, d.device_name, d.client_version, who.risk_score],
                )
                .doing("updating a device")?;
                (id, false, false, false)
            }
            None => {
                let (count, of_type): (i64, i64) = tx
                    .query_row("SELECT COUNT(*), COUNT(*) FILTER (WHERE device_type = ?2) FROM devices WHERE user_id = ?1", params![d.user_id, d.device_type], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .doing("counting devices")?;
                if count >= MAX_DEVICES_PER_USER {
                    let oldest: Option<i64> = tx
                        .query_row("SELECT id FROM devices WHERE user_id = ?1 AND is_trusted = 0 ORDER BY last_seen_at, id LIMIT 1", [d.user_id], |r| r.get(0))
                        .optional()
                        .doing("finding the oldest device")?;
                    if let Some(old) = oldest {
                        delete_device(&tx, old)?;
                    }
                }
                tx.execute(
                    // The id is past every deleted account's and removed device (retired_ids).
                    "INSERT INTO devices (id, user_id, fingerprint, device_name, device_type, client_version, first_seen_at, last_seen_at, last_ip, login_count, failure_count,
                                          fingerprint_version, hassh, hassh_algorithms, key_fingerprint, risk_score)
                     VALUES (MAX(COALESCE((SELECT MAX(id) FROM devices), 0), COALESCE((SELECT max_id FROM retired_ids WHERE tbl = 'devices'), 0)) + 1,
                             ?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, 2, ?10, ?11, ?12, COALESCE(?13, 0))",
                    params![d.user_id, d.fingerprint, d.device_name, d.device_type, d.client_version, d.now.0, d.ip, logins, failures, who.hassh, who.hassh_algorithms, who.key_fingerprint, who.risk_score],
                )
                .doing("recording a device")?;
                (tx.last_insert_rowid(), true, count == 0, of_type == 0)
            }
        };
        tx.execute(
            "INSERT INTO device_ips (device_id, ip, first_seen_at, last_seen_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (device_id, ip) DO UPDATE SET last_seen_at = excluded.last_seen_at",
            params![id, d.ip, d.now.0],
        )
        .doing("recording a device address")?;
        tx.execute(
            "DELETE FROM device_ips WHERE device_id = ?1 AND ip NOT IN
                 (SELECT ip FROM device_ips WHERE device_id = ?1 ORDER BY last_seen_at DESC, ip LIMIT ?2)",
            params![id, MAX_ADDRESSES_PER_DEVICE as i64],
        )
        .doing("trimming a device's addresses")?;
        tx.commit().doing("committing a device update")?;
        Ok(Seen { id, new, first_of_account, first_of_type, adopted })
    }

    /// Counts a login of a device once every factor has passed.
    pub fn count_device_login(&self, device_id: i64, now: Millis) -> Result<()> {
        self.conn()
            .execute("UPDATE devices SET login_count = login_count + 1, last_seen_at = ?2 WHERE id = ?1", params![device_id, now.0])
            .doing("counting a device login")?;
        Ok(())
    }

    /// Counts a failed login against the account's device with this
    /// fingerprint, if it has one (failures never create devices). Returns
    /// the device's id.
    pub fn count_device_failure(&self, user_id: i64, fingerprint: &str) -> Result<Option<i64>> {
        self.conn()
            .query_row(
                "UPDATE devices SET failure_count = failure_count + 1 WHERE user_id = ?1 AND fingerprint = ?2 RETURNING id",
                params![user_id, fingerprint],
                |r| r.get(0),
            )
            .optional()
            .doing("counting a device failure")
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub device_name: String,
    pub device_type: String,
    pub is_trusted: bool,
    /// The risk score of the device's latest login that was scored
    /// (`core::risk`; 0 before any).
    pub risk_score: u8,
    pub first_seen_at: String,
    pub last_seen_at: String,
    pub last_ip: String,
    pub login_count: i64,
    pub failure_count: i64,
    pub client_version: String,
    /// `None`: unknown (recorded before HASSH, or the offer was unreadable).
    pub hassh: Option<String>,
    pub hassh_algorithms: Option<String>,
    pub key_fingerprint: Option<String>,
    pub trusted_at: Option<String>,
    pub trusted_by: Option<String>,
    /// A hardware key's approval stands for this device until then
    /// (`webauthn.trust_device_for`).
    #[serde(skip)]
    pub key_trusted_until: Option<Millis>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceAddress {
    pub ip: String,
    pub first_seen_at: String,
    pub last_seen_at: String,
}

const DEVICE_SELECT: &str = "SELECT d.id, d.user_id, u.username, d.device_name, d.device_type, d.is_trusted, d.risk_score, d.first_seen_at, d.last_seen_at,
        COALESCE(d.last_ip, ''), d.login_count, d.failure_count, d.client_version, d.hassh, d.hassh_algorithms, d.key_fingerprint, d.trusted_at, d.trusted_by,
        d.key_trusted_until
    FROM devices d JOIN users u ON u.id = d.user_id";

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        username: r.get(2)?,
        device_name: r.get(3)?,
        device_type: r.get(4)?,
        is_trusted: r.get(5)?,
        risk_score: r.get(6)?,
        first_seen_at: Millis(r.get(7)?).rfc3339(),
        last_seen_at: Millis(r.get(8)?).rfc3339(),
        last_ip: r.get(9)?,
        login_count: r.get(10)?,
        failure_count: r.get(11)?,
        client_version: r.get(12)?,
        hassh: r.get(13)?,
        hassh_algorithms: r.get(14)?,
        key_fingerprint: r.get(15)?,
        trusted_at: r.get::<_, Option<i64>>(16)?.map(|t| Millis(t).rfc3339()),
        trusted_by: r.get(17)?,
        key_trusted_until: r.get::<_, Option<i64>>(18)?.map(Millis),
    })
}

fn device_in(tx: &rusqlite::Transaction<'_>, id: i64) -> Result<Option<DeviceRow>> {
    tx.query_row(&format!("{DEVICE_SELECT} WHERE d.id = ?1"), [id], device_row).optional().doing("reading a device")
}

/// Deletes a device and keeps its id from being handed out again (events
/// name devices by id).
fn delete_device(tx: &rusqlite::Transaction<'_>, id: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO retired_ids (tbl, max_id) VALUES ('devices', ?1) ON CONFLICT (tbl) DO UPDATE SET max_id = MAX(max_id, excluded.max_id)",
        [id],
    )
    .doing("retiring a device id")?;
    tx.execute("DELETE FROM devices WHERE id = ?1", [id]).doing("removing a device")?;
    Ok(())
}

impl Store {
    /// An account's devices, the most recently seen first.
    pub fn devices_of(&self, user_id: i64) -> Result<Vec<DeviceRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("{DEVICE_SELECT} WHERE d.user_id = ?1 ORDER BY d.last_seen_at DESC, d.id DESC")).doing("listing devices")?;
        let rows = st.query_map([user_id], device_row).doing("listing devices")?;
        rows.collect::<rusqlite::Result<_>>().doing("listing devices")
    }

    pub fn device(&self, id: i64) -> Result<Option<DeviceRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("{DEVICE_SELECT} WHERE d.id = ?1")).doing("reading a device")?;
        st.query_row([id], device_row).optional().doing("reading a device")
    }

    /// The account's device with this fingerprint.
    /// Opens (or moves) the window in which a hardware key's approval
    /// stands for device `id`, and records `events`, in one transaction.
    pub fn set_key_trust(&self, id: i64, until: Millis, events: &[Event]) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting a device change")?;
        let n = tx.execute("UPDATE devices SET key_trusted_until = ?2 WHERE id = ?1", params![id, until.0]).doing("trusting a device for its key")?;
        if n == 1 {
            super::events::insert_batch_tx(&tx, events)?;
        }
        tx.commit().doing("committing a device change")?;
        Ok(n == 1)
    }

    pub fn device_by_fingerprint(&self, user_id: i64, fingerprint: &str) -> Result<Option<DeviceRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("{DEVICE_SELECT} WHERE d.user_id = ?1 AND d.fingerprint = ?2")).doing("reading a device")?;
        st.query_row(params![user_id, fingerprint], device_row).optional().doing("reading a device")
    }

    /// The addresses a device was seen at, the most recent first (at most
    /// `MAX_ADDRESSES_PER_DEVICE`).
    pub fn device_addresses(&self, device_id: i64) -> Result<Vec<DeviceAddress>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT ip, first_seen_at, last_seen_at FROM device_ips WHERE device_id = ?1 ORDER BY last_seen_at DESC, ip")
            .doing("listing a device's addresses")?;
        let rows = st
            .query_map([device_id], |r| Ok(DeviceAddress { ip: r.get(0)?, first_seen_at: Millis(r.get(1)?).rfc3339(), last_seen_at: Millis(r.get(2)?).rfc3339() }))
            .doing("listing a device's addresses")?;
        rows.collect::<rusqlite::Result<_>>().doing("listing a device's addresses")
    }

    /// Trusts or stops trusting a device, with the events `events` makes
    /// for it, in one transaction. `Ok(None)`: no such device. The row
    /// returned is the device before the change; nothing is written when
    /// it already was as asked (`changed` false).
    pub fn set_device_trusted(&self, id: i64, trusted: bool, by: &str, now: Millis, events: impl FnOnce(&DeviceRow) -> Vec<Event>) -> Result<Option<(DeviceRow, bool)>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting a device change")?;
        let Some(row) = device_in(&tx, id)? else { return Ok(None) };
        if row.is_trusted == trusted {
            return Ok(Some((row, false)));
        }
        let (at, who) = if trusted { (Some(now.0), Some(by)) } else { (None, None) };
        tx.execute("UPDATE devices SET is_trusted = ?2, trusted_at = ?3, trusted_by = ?4 WHERE id = ?1", params![id, trusted, at, who]).doing("changing a device's trust")?;
        super::events::insert_batch_tx(&tx, &events(&row))?;
        tx.commit().doing("committing a device change")?;
        Ok(Some((row, true)))
    }

    /// Removes a device: its open sessions end with `reason`, and the
    /// events `events` makes for it and them are written, in one
    /// transaction. `Ok(None)`: no such device.
    pub fn remove_device(&self, id: i64, reason: &str, now: Millis, events: impl FnOnce(&DeviceRow, &[EndedSession]) -> Vec<Event>) -> Result<Option<(DeviceRow, Vec<EndedSession>)>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting a device removal")?;
        let Some(row) = device_in(&tx, id)? else { return Ok(None) };
        let ended = end_open_sessions(&tx, Sessions::OfDevice(id), reason, now)?;
        delete_device(&tx, id)?;
        super::events::insert_batch_tx(&tx, &events(&row, &ended))?;
        tx.commit().doing("committing a device removal")?;
        Ok(Some((row, ended)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::users::NewUser;

    fn seen<'a>(user_id: i64, fingerprint: &'a str, version: &'a str, ip: &'a str, now: i64) -> SeenDevice<'a> {
        SeenDevice { user_id, fingerprint, device_name: "d", device_type: "ssh", client_version: version, ip, success: true, pending: false, now: Millis(now) }
    }

    fn store() -> (tempfile::TempDir, Store, i64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        store.migrate(None).expect("migrate");
        let id = store.create_user(&NewUser { username: "alice", email: None, password_hash: "$x", groups: &[], now: Millis(1) }).expect("user").id;
        (dir, store, id)
    }

    /// A row recorded before 0010 (fingerprint version 1) survives the
    /// migration with an unknown HASSH and is taken over by the first
    /// login from its version string: not new, its counts kept.
    #[test]
    fn a_device_recorded_before_hassh_is_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        store.migrate(Some("0008_webhooks")).expect("migrate to 0008");
        let alice = store.create_user(&NewUser { username: "alice", email: None, password_hash: "$x", groups: &[], now: Millis(1) }).expect("user").id;
        let v = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10";
        {
            // As 0001-0008 recorded it.
            let conn = store.conn();
            conn.execute(
                "INSERT INTO devices (id, user_id, fingerprint, device_name, device_type, client_version, first_seen_at, last_seen_at, last_ip, login_count)
                 VALUES (4, ?1, 'legacyfp', ?2, 'ssh', ?2, 10, 20, '192.0.2.1', 7)",
                params![alice, v],
            )
            .expect("old row");
        }
        store.migrate(None).expect("migrate on");
        let old = store.device(4).expect("read").expect("kept");
        assert_eq!((old.hassh.as_deref(), old.key_fingerprint.as_deref(), old.login_count), (None, None, 7));
        let who = Identity { hassh: Some("472b5de333ad665af5cbf10ff892c4df"), hassh_algorithms: Some("a;b;c;d"), key_fingerprint: None, legacy_fingerprint: Some("legacyfp"), risk_score: None };
        // Another version string is another device.
        let other = store.see_device_as(&seen(alice, "fp-other", "SSH-2.0-PuTTY_Release_0.78", "192.0.2.1", 30), &Identity { legacy_fingerprint: Some("legacyfp"), ..who }).expect("see");
        assert!(other.new && !other.adopted && !other.first_of_account && !other.first_of_type, "{other:?}");
        let s = store.see_device_as(&seen(alice, "fp-new", v, "192.0.2.1", 40), &who).expect("see");
        assert_eq!(s, Seen { id: 4, new: false, first_of_account: false, first_of_type: false, adopted: true });
        let row = store.device(4).expect("read").expect("row");
        assert_eq!((row.hassh.as_deref(), row.login_count, row.first_seen_at.as_str()), (Some("472b5de333ad665af5cbf10ff892c4df"), 8, Millis(10).rfc3339().as_str()));
        // Taken over once: the next login finds it by its new fingerprint.
        let again = store.see_device_as(&seen(alice, "fp-new", v, "192.0.2.1", 50), &who).expect("see");
        assert_eq!(again, Seen { id: 4, new: false, first_of_account: false, first_of_type: false, adopted: false });
    }

    /// Addresses per device and devices per account are bounded; a removed
    /// device's id is never handed out again; a trusted device is never
    /// the one that makes room.
    #[test]
    fn addresses_and_devices_are_bounded() {
        let (_dir, store, alice) = store();
        for i in 0..(MAX_ADDRESSES_PER_DEVICE + 5) {
            store.see_device(&seen(alice, "fp", "v", &format!("192.0.2.{i}"), 100 + i as i64)).expect("see");
        }
        let (id, new) = store.see_device(&seen(alice, "fp", "v", "192.0.2.0", 1000)).expect("see");
        assert!(!new);
        let addresses = store.device_addresses(id).expect("addresses");
        assert_eq!(addresses.len(), MAX_ADDRESSES_PER_DEVICE);
        assert_eq!(addresses[0].ip, "192.0.2.0", "the latest first");
        assert!(!addresses.iter().any(|a| a.ip == "192.0.2.5"), "the oldest went: {addresses:?}");

        store.set_device_trusted(id, true, "cli:t", Millis(1001), |_| Vec::new()).expect("trust").expect("device");
        for i in 1..MAX_DEVICES_PER_USER {
            store.see_device(&seen(alice, &format!("fp{i}"), "v", "192.0.2.1", 2000 + i)).expect("see");
        }
        assert_eq!(store.devices_of(alice).expect("list").len() as i64, MAX_DEVICES_PER_USER);
        let (latest, new) = store.see_device(&seen(alice, "fp-last", "v", "192.0.2.1", 9000)).expect("see");
        assert!(new);
        let list = store.devices_of(alice).expect("list");
        assert_eq!(list.len() as i64, MAX_DEVICES_PER_USER);
        assert!(list.iter().any(|d| d.id == id), "the trusted device stays (though seen least recently)");
        assert!(!list.iter().any(|d| d.last_seen_at == Millis(2001).rfc3339()), "the oldest untrusted one made room");

        let (removed, _) = store.remove_device(latest, "removed", Millis(9001), |_, _| Vec::new()).expect("remove").expect("device");
        assert_eq!(removed.id, latest);
        let (next, _) = store.see_device(&seen(alice, "fp-after", "v", "192.0.2.1", 9002)).expect("see");
        assert!(next > latest, "device id {next} reused after {latest} was removed");
        assert!(store.remove_device(latest, "again", Millis(9003), |_, _| Vec::new()).expect("remove").is_none());
    }
}
