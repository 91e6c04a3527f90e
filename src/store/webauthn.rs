//! Hardware keys: registered WebAuthn credentials (`webauthn_credentials`),
//! their use (counter and flags saved after each assertion), renaming and
//! removal. Registration burns the link that allowed it, in the same
//! transaction.

use super::events::insert_batch_tx;
use super::{Context, Error, Result, Store};
use crate::model::{Event, Millis};
use rusqlite::{params, OptionalExtension};

/// A key as stored, without webauthn-rs's record (see [`Store::webauthn_credential_json`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub credential_id: Vec<u8>,
    pub credential_type: String,
    pub authenticator_attachment: Option<String>,
    pub transports: Vec<String>,
    pub aaguid: Option<String>,
    pub authenticator_name: Option<String>,
    pub attestation_format: String,
    pub attestation_verified: bool,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub user_verified: bool,
    pub sign_count: u32,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
}

/// A key to store.
pub struct NewKey<'a> {
    pub user_id: i64,
    pub name: &'a str,
    pub credential_id: &'a [u8],
    pub credential_json: &'a str,
    pub credential_type: &'a str,
    pub authenticator_attachment: Option<&'a str>,
    pub transports: &'a [String],
    pub aaguid: Option<&'a str>,
    pub authenticator_name: Option<&'a str>,
    pub attestation_format: &'a str,
    pub attestation_verified: bool,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub user_verified: bool,
    pub sign_count: u32,
}

const KEY_SELECT: &str = "SELECT id, user_id, name, credential_id, credential_type, authenticator_attachment, transports, aaguid,
    authenticator_name, attestation_format, attestation_verified, backup_eligible, backup_state, user_verified, sign_count,
    created_at, last_used_at FROM webauthn_credentials";

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    let transports: String = r.get(6)?;
    Ok(KeyRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        credential_id: r.get(3)?,
        credential_type: r.get(4)?,
        authenticator_attachment: r.get(5)?,
        transports: serde_json::from_str(&transports).unwrap_or_default(),
        aaguid: r.get(7)?,
        authenticator_name: r.get(8)?,
        attestation_format: r.get(9)?,
        attestation_verified: r.get(10)?,
        backup_eligible: r.get(11)?,
        backup_state: r.get(12)?,
        user_verified: r.get(13)?,
        sign_count: r.get::<_, i64>(14)?.clamp(0, u32::MAX as i64) as u32,
        created_at: Millis(r.get(15)?),
        last_used_at: r.get::<_, Option<i64>>(16)?.map(Millis),
    })
}

impl Store {
    /// Stores a registered key, marks the link `token_id` used and records
    /// `events`, in one transaction. `Conflict` when the link was used
    /// meanwhile or the credential is already registered (to anyone).
    pub fn register_webauthn_key(&self, key: &NewKey<'_>, token_id: i64, events: &[Event], now: Millis) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to register a key")?;
        let n = tx.execute("UPDATE tokens SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL", params![token_id, now.0]).doing("using a token")?;
        if n != 1 {
            return Err(Error::Conflict("the link has already been used".into()));
        }
        let taken: Option<i64> =
            tx.query_row("SELECT id FROM webauthn_credentials WHERE credential_id = ?1", [key.credential_id], |r| r.get(0)).optional().doing("looking a key up")?;
        if taken.is_some() {
            return Err(Error::Conflict("this key is already registered".into()));
        }
        tx.execute(
            "INSERT INTO webauthn_credentials (user_id, name, credential_id, credential, credential_type, authenticator_attachment, transports,
               aaguid, authenticator_name, attestation_format, attestation_verified, backup_eligible, backup_state, user_verified, sign_count, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            params![
                key.user_id,
                key.name,
                key.credential_id,
                key.credential_json,
                key.credential_type,
                key.authenticator_attachment,
                serde_json::to_string(key.transports).unwrap_or_else(|_| "[]".into()),
                key.aaguid,
                key.authenticator_name,
                key.attestation_format,
                key.attestation_verified,
                key.backup_eligible,
                key.backup_state,
                key.user_verified,
                key.sign_count as i64,
                now.0
            ],
        )
        .doing("storing a key")?;
        let id = tx.last_insert_rowid();
        let events: Vec<Event> = events.iter().cloned().map(|e| e.detail("key_id", id)).collect();
        insert_batch_tx(&tx, &events)?;
        tx.commit().doing("committing a key")?;
        Ok(id)
    }

    /// A user's keys, oldest first.
    pub fn webauthn_keys(&self, user_id: i64) -> Result<Vec<KeyRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("{KEY_SELECT} WHERE user_id = ?1 ORDER BY id")).doing("reading keys")?;
        let rows = st.query_map([user_id], key_from_row).doing("reading keys")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading keys")
    }

    pub fn webauthn_key(&self, id: i64) -> Result<Option<KeyRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("{KEY_SELECT} WHERE id = ?1")).doing("reading a key")?;
        st.query_row([id], key_from_row).optional().doing("reading a key")
    }

    pub fn webauthn_key_count(&self, user_id: i64) -> Result<u32> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM webauthn_credentials WHERE user_id = ?1", [user_id], |r| r.get(0))
            .doing("counting keys")
    }

    /// webauthn-rs's records of a user's keys, with their row ids.
    pub fn webauthn_credential_json(&self, user_id: i64) -> Result<Vec<(i64, String)>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT id, credential FROM webauthn_credentials WHERE user_id = ?1 ORDER BY id").doing("reading keys")?;
        let rows = st.query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?))).doing("reading keys")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading keys")
    }

    /// Saves a key's record after an assertion and records `events`, in
    /// one transaction. The stored counter only moves forward: `Conflict`
    /// when another assertion saved a counter at or beyond `sign_count`
    /// meanwhile (a counter that stays 0 is always saved).
    pub fn webauthn_key_used(&self, id: i64, credential_json: &str, sign_count: u32, backup_state: bool, events: &[Event], now: Millis) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to save a key's use")?;
        let n = tx
            .execute(
                "UPDATE webauthn_credentials SET credential = ?2, sign_count = ?3, backup_state = ?4, last_used_at = ?5
                 WHERE id = ?1 AND (sign_count < ?3 OR (sign_count = 0 AND ?3 = 0))",
                params![id, credential_json, sign_count as i64, backup_state, now.0],
            )
            .doing("saving a key's use")?;
        if n != 1 {
            return Err(Error::Conflict("the key was used again meanwhile, or removed".into()));
        }
        insert_batch_tx(&tx, events)?;
        tx.commit().doing("committing a key's use")
    }

    /// Renames a key of `user_id`; false if it is not theirs (or gone).
    pub fn rename_webauthn_key(&self, id: i64, user_id: i64, name: &str, events: &[Event]) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to rename a key")?;
        let n = tx.execute("UPDATE webauthn_credentials SET name = ?3 WHERE id = ?1 AND user_id = ?2", params![id, user_id, name]).doing("renaming a key")?;
        if n == 1 {
            insert_batch_tx(&tx, events)?;
        }
        tx.commit().doing("committing a key's name")?;
        Ok(n == 1)
    }

    /// Removes a key and records `events`, in one transaction; `None` when
    /// there was no such key. With `keep_one`, the last key of its owner is
    /// not removed (`Conflict`), checked inside the transaction.
    pub fn remove_webauthn_key(&self, id: i64, keep_one: bool, events: &[Event]) -> Result<Option<KeyRow>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to remove a key")?;
        let row = tx.query_row(&format!("{KEY_SELECT} WHERE id = ?1"), [id], key_from_row).optional().doing("reading a key")?;
        let Some(row) = row else { return Ok(None) };
        if keep_one {
            let n: i64 = tx.query_row("SELECT COUNT(*) FROM webauthn_credentials WHERE user_id = ?1", [row.user_id], |r| r.get(0)).doing("counting keys")?;
            if n <= 1 {
                return Err(Error::Conflict("it is the account's last hardware key".into()));
            }
        }
        tx.execute("DELETE FROM webauthn_credentials WHERE id = ?1", [id]).doing("removing a key")?;
        insert_batch_tx(&tx, events)?;
        tx.commit().doing("committing a key's removal")?;
        Ok(Some(row))
    }
}
