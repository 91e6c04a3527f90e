//! One-time-code secrets, backup codes, single-use tokens and the mail
//! outbox. Values that must stay secret arrive here already sealed or
//! hashed by `core`.

use super::events::insert_batch_tx;
use super::{CachedExecute, Context, Error, Result, Store};
use crate::model::{Event, Millis};
use rusqlite::{params, OptionalExtension, Row};

#[derive(Debug, Clone)]
pub struct OtpRow {
    pub user_id: i64,
    pub method: String,
    pub algorithm: String,
    pub digits: u32,
    pub secret_sealed: Vec<u8>,
    pub enabled: bool,
    pub last_step: Option<u64>,
    pub next_counter: u64,
    pub step_failures: u32,
    pub failure_step: Option<u64>,
    pub consecutive_failures: u32,
    pub closed_until: Option<Millis>,
    pub closures: u32,
    pub enabled_at: Option<Millis>,
}

fn otp_from_row(r: &Row<'_>) -> rusqlite::Result<OtpRow> {
    Ok(OtpRow {
        user_id: r.get(0)?,
        method: r.get(1)?,
        algorithm: r.get(2)?,
        digits: r.get(3)?,
        secret_sealed: r.get(4)?,
        enabled: r.get(5)?,
        last_step: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        next_counter: r.get::<_, i64>(7)? as u64,
        step_failures: r.get(8)?,
        failure_step: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        consecutive_failures: r.get(10)?,
        closed_until: r.get::<_, Option<i64>>(11)?.map(Millis),
        closures: r.get(12)?,
        enabled_at: r.get::<_, Option<i64>>(13)?.map(Millis),
    })
}

const OTP_COLUMNS: &str = "user_id, method, algorithm, digits, secret_sealed, enabled, last_step, next_counter,
    step_failures, failure_step, consecutive_failures, closed_until, closures, enabled_at";

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub purpose: String,
    pub user_id: i64,
    pub data: serde_json::Value,
    pub expires_at: Millis,
    pub used_at: Option<Millis>,
}

/// A mail to queue with the event that causes it.
pub struct NewMail<'a> {
    pub recipient: &'a str,
    pub subject: &'a str,
    pub body_sealed: &'a [u8],
    pub template: &'a str,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    pub template: String,
    pub created_at: String,
    pub attempts: u32,
    pub next_attempt_at: String,
    pub sent_at: Option<String>,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub body_sealed: Option<Vec<u8>>,
}

impl Store {
    pub fn otp(&self, user_id: i64) -> Result<Option<OtpRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("SELECT {OTP_COLUMNS} FROM otp_secrets WHERE user_id = ?1")).doing("reading a code secret")?;
        st.query_row([user_id], otp_from_row).optional().doing("reading a code secret")
    }

    /// Replaces a pending (not enabled) secret, or creates one. Refuses when
    /// 2FA is already enabled.
    pub fn put_pending_otp(&self, user_id: i64, method: &str, algorithm: &str, digits: u32, sealed: &[u8], now: Millis) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting an enrollment")?;
        let enabled: Option<bool> = tx.query_row("SELECT enabled FROM otp_secrets WHERE user_id = ?1", [user_id], |r| r.get(0)).optional().doing("reading a code secret")?;
        if enabled == Some(true) {
            return Err(Error::Conflict("two-factor authentication is already enabled for this user; disable it first".into()));
        }
        tx.execute(
            "INSERT INTO otp_secrets (user_id, method, algorithm, digits, secret_sealed, enabled, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)
             ON CONFLICT (user_id) DO UPDATE SET method = excluded.method, algorithm = excluded.algorithm, digits = excluded.digits,
               secret_sealed = excluded.secret_sealed, enabled = 0, last_step = NULL, next_counter = 0, step_failures = 0,
               failure_step = NULL, consecutive_failures = 0, closed_until = NULL, closures = 0, created_at = excluded.created_at, enabled_at = NULL",
            params![user_id, method, algorithm, digits, sealed, now.0],
        )
        .doing("storing a pending code secret")?;
        tx.commit().doing("committing an enrollment")
    }

    /// Records the throttle state after a code check. The burnt step and
    /// counter are never written here: only `burn_*` move them, atomically.
    pub fn update_otp_throttle(&self, row: &OtpRow) -> Result<()> {
        self.conn()
            .prepare_cached_execute(
                "UPDATE otp_secrets SET step_failures = ?2, failure_step = ?3,
                   consecutive_failures = ?4, closed_until = ?5, closures = ?6 WHERE user_id = ?1",
                params![
                    row.user_id,
                    row.step_failures,
                    row.failure_step.map(|v| v as i64),
                    row.consecutive_failures,
                    row.closed_until.map(|t| t.0),
                    row.closures
                ],
            )
            .doing("recording a code check")?;
        Ok(())
    }

    /// Burns a TOTP step if it is newer than the last one used; false if
    /// another login got there first.
    pub fn burn_totp_step(&self, user_id: i64, step: u64) -> Result<bool> {
        let n = self
            .conn()
            .prepare_cached_execute("UPDATE otp_secrets SET last_step = ?2 WHERE user_id = ?1 AND enabled = 1 AND (last_step IS NULL OR last_step < ?2)", params![user_id, step as i64])
            .doing("burning a code step")?;
        Ok(n == 1)
    }

    /// Moves the HOTP counter past `counter` if it has not moved already.
    pub fn burn_hotp_counter(&self, user_id: i64, counter: u64) -> Result<bool> {
        let n = self
            .conn()
            .prepare_cached_execute("UPDATE otp_secrets SET next_counter = ?2 + 1 WHERE user_id = ?1 AND enabled = 1 AND next_counter <= ?2", params![user_id, counter as i64])
            .doing("burning a code counter")?;
        Ok(n == 1)
    }

    /// Enables 2FA: the secret, its first burnt step/counter, the backup
    /// codes, the token marked used and the events, in one transaction.
    /// Fails if the token was used meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub fn enable_otp(&self, user_id: i64, token_id: i64, last_step: Option<u64>, next_counter: u64, code_hashes: &[String], events: &[Event], now: Millis) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to enable 2FA")?;
        let n = tx.execute("UPDATE tokens SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL", params![token_id, now.0]).doing("using a token")?;
        if n != 1 {
            return Err(Error::Conflict("the link has already been used".into()));
        }
        tx.execute(
            "UPDATE otp_secrets SET enabled = 1, enabled_at = ?2, last_step = ?3, next_counter = ?4, step_failures = 0,
               failure_step = NULL, consecutive_failures = 0, closed_until = NULL WHERE user_id = ?1",
            params![user_id, now.0, last_step.map(|v| v as i64), next_counter as i64],
        )
        .doing("enabling 2FA")?;
        replace_backup_codes(&tx, user_id, code_hashes, now)?;
        insert_batch_tx(&tx, events)?;
        tx.commit().doing("committing 2FA")
    }

    /// Disables 2FA: secret and backup codes removed, open enrollment
    /// tokens burnt, the event written, in one transaction. Returns whether
    /// anything was enabled.
    /// Removes an enabled code factor with its backup codes and links, and
    /// records `events`, in one transaction; false (nothing written) when
    /// no enabled factor was there.
    pub fn disable_otp(&self, user_id: i64, events: &[Event], now: Millis) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to disable 2FA")?;
        let was: Option<bool> = tx.query_row("SELECT enabled FROM otp_secrets WHERE user_id = ?1", [user_id], |r| r.get(0)).optional().doing("reading a code secret")?;
        // Checked inside the write transaction: of two concurrent disables
        // only the first removes anything and records its events.
        if was != Some(true) {
            return Ok(false);
        }
        tx.execute("DELETE FROM otp_secrets WHERE user_id = ?1", [user_id]).doing("removing a code secret")?;
        tx.execute("DELETE FROM backup_codes WHERE user_id = ?1", [user_id]).doing("removing backup codes")?;
        tx.execute("UPDATE tokens SET used_at = ?2 WHERE user_id = ?1 AND purpose = 'otp_enroll' AND used_at IS NULL", params![user_id, now.0])
            .doing("burning enrollment links")?;
        insert_batch_tx(&tx, events)?;
        tx.commit().doing("committing 2FA removal")?;
        Ok(was == Some(true))
    }

    pub fn set_backup_codes(&self, user_id: i64, code_hashes: &[String], events: &[Event], now: Millis) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to replace backup codes")?;
        replace_backup_codes(&tx, user_id, code_hashes, now)?;
        insert_batch_tx(&tx, events)?;
        tx.commit().doing("committing backup codes")
    }

    /// Marks an unused backup code of this user used; true if one matched.
    pub fn use_backup_code(&self, user_id: i64, code_hash: &str, now: Millis) -> Result<bool> {
        let n = self
            .conn()
            .prepare_cached_execute("UPDATE backup_codes SET used_at = ?3 WHERE user_id = ?1 AND code_hash = ?2 AND used_at IS NULL", params![user_id, code_hash, now.0])
            .doing("using a backup code")?;
        Ok(n > 0)
    }

    pub fn backup_codes_left(&self, user_id: i64) -> Result<u32> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM backup_codes WHERE user_id = ?1 AND used_at IS NULL", [user_id], |r| r.get(0))
            .doing("counting backup codes")
    }

    /// Stores a new token (burning older unused ones of the same purpose
    /// for the user), queues its mail and records the events, atomically.
    #[allow(clippy::too_many_arguments)]
    pub fn issue_token_with_mail(&self, user_id: i64, purpose: &str, token_hash: &str, data: &serde_json::Value, expires_at: Millis, mail: &NewMail<'_>, events: &[Event], now: Millis) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to issue a link")?;
        tx.execute("UPDATE tokens SET used_at = ?3 WHERE user_id = ?1 AND purpose = ?2 AND used_at IS NULL", params![user_id, purpose, now.0])
            .doing("burning older links")?;
        tx.execute(
            "INSERT INTO tokens (token_hash, purpose, user_id, data, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![token_hash, purpose, user_id, data.to_string(), now.0, expires_at.0],
        )
        .doing("storing a link token")?;
        let mail_id = insert_outbox(&tx, mail, now)?;
        insert_batch_tx(&tx, events)?;
        tx.commit().doing("committing a link")?;
        Ok(mail_id)
    }

    /// Queues a mail with the event that causes it.
    pub fn queue_mail(&self, mail: &NewMail<'_>, events: &[Event], now: Millis) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to queue a mail")?;
        let id = insert_outbox(&tx, mail, now)?;
        insert_batch_tx(&tx, events)?;
        tx.commit().doing("committing a mail")?;
        Ok(id)
    }

    pub fn token(&self, token_hash: &str) -> Result<Option<TokenRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT id, purpose, user_id, data, expires_at, used_at FROM tokens WHERE token_hash = ?1").doing("reading a token")?;
        st.query_row([token_hash], |r| {
            let data: String = r.get(3)?;
            Ok(TokenRow {
                id: r.get(0)?,
                purpose: r.get(1)?,
                user_id: r.get(2)?,
                data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
                expires_at: Millis(r.get(4)?),
                used_at: r.get::<_, Option<i64>>(5)?.map(Millis),
            })
        })
        .optional()
        .doing("reading a token")
    }

    /// Adds one to the number `key` in a token's data (0 when absent), in
    /// one statement, and returns the new value; `None`: no such token.
    /// `key` is one of the callers' own names, never input.
    pub fn count_on_token(&self, token_id: i64, key: &str) -> Result<Option<i64>> {
        let path = format!("$.{key}");
        self.conn()
            .query_row(
                "UPDATE tokens SET data = json_set(data, ?2, COALESCE(json_extract(data, ?2), 0) + 1) WHERE id = ?1 RETURNING json_extract(data, ?2)",
                params![token_id, path],
                |r| r.get(0),
            )
            .optional()
            .doing("counting on a token")
    }

    pub fn burn_token(&self, token_id: i64, now: Millis) -> Result<()> {
        self.conn().execute("UPDATE tokens SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL", params![token_id, now.0]).doing("burning a token")?;
        Ok(())
    }

    pub fn due_mail(&self, now: Millis, limit: usize) -> Result<Vec<OutboxRow>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!("{OUTBOX_SELECT} WHERE sent_at IS NULL AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2"))
            .doing("reading due mail")?;
        let rows = st.query_map(params![now.0, limit as i64], outbox_from_row).doing("reading due mail")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading due mail")
    }

    /// The queue for `mail queue`: unsent first, then the newest sent.
    pub fn mail_queue(&self, include_sent: bool, limit: usize) -> Result<Vec<OutboxRow>> {
        let conn = self.conn();
        let filter = if include_sent { "" } else { "WHERE sent_at IS NULL" };
        let mut st = conn.prepare(&format!("{OUTBOX_SELECT} {filter} ORDER BY (sent_at IS NOT NULL), id DESC LIMIT ?1")).doing("reading the mail queue")?;
        let rows = st.query_map([limit as i64], outbox_from_row).doing("reading the mail queue")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading the mail queue")
    }

    /// Sent: the body (which may hold a single-use link) is dropped.
    pub fn mail_sent(&self, id: i64, now: Millis) -> Result<()> {
        self.conn()
            .execute("UPDATE outbox SET sent_at = ?2, body_sealed = NULL, attempts = attempts + 1, last_error = NULL WHERE id = ?1", params![id, now.0])
            .doing("marking a mail sent")?;
        Ok(())
    }

    pub fn mail_failed(&self, id: i64, error: &str, next_attempt_at: Millis) -> Result<()> {
        self.conn()
            .execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1", params![id, error, next_attempt_at.0])
            .doing("rescheduling a mail")?;
        Ok(())
    }

    /// Makes every unsent mail due now; returns how many.
    pub fn retry_mail(&self, now: Millis) -> Result<usize> {
        self.conn()
            .execute("UPDATE outbox SET next_attempt_at = ?1, attempts = 0 WHERE sent_at IS NULL AND body_sealed IS NOT NULL", [now.0])
            .doing("retrying mail")
    }
}

const OUTBOX_SELECT: &str = "SELECT id, recipient, subject, template, created_at, attempts, next_attempt_at, sent_at, last_error, body_sealed FROM outbox";

fn outbox_from_row(r: &Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        recipient: r.get(1)?,
        subject: r.get(2)?,
        template: r.get(3)?,
        created_at: Millis(r.get(4)?).rfc3339(),
        attempts: r.get(5)?,
        next_attempt_at: Millis(r.get(6)?).rfc3339(),
        sent_at: r.get::<_, Option<i64>>(7)?.map(|t| Millis(t).rfc3339()),
        last_error: r.get(8)?,
        body_sealed: r.get(9)?,
    })
}

pub(super) fn insert_outbox(tx: &rusqlite::Transaction<'_>, mail: &NewMail<'_>, now: Millis) -> Result<i64> {
    tx.execute(
        "INSERT INTO outbox (recipient, subject, body_sealed, template, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![mail.recipient, mail.subject, mail.body_sealed, mail.template, now.0],
    )
    .doing("queueing a mail")?;
    Ok(tx.last_insert_rowid())
}

fn replace_backup_codes(tx: &rusqlite::Transaction<'_>, user_id: i64, code_hashes: &[String], now: Millis) -> Result<()> {
    tx.execute("DELETE FROM backup_codes WHERE user_id = ?1", [user_id]).doing("removing old backup codes")?;
    let mut st = tx.prepare_cached("INSERT INTO backup_codes (user_id, code_hash, created_at) VALUES (?1, ?2, ?3)").doing("storing backup codes")?;
    for h in code_hashes {
        st.execute(params![user_id, h, now.0]).doing("storing a backup code")?;
    }
    Ok(())
}

impl Store {
    /// How many links of `purpose` a user holds that are unused and not
    /// expired at `now`.
    pub fn live_tokens(&self, user_id: i64, purpose: &str, now: Millis) -> Result<usize> {
        let conn = self.conn();
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM tokens WHERE user_id = ?1 AND purpose = ?2 AND used_at IS NULL AND expires_at > ?3",
                params![user_id, purpose, now.0],
                |r| r.get(0),
            )
            .doing("counting links")?;
        Ok(n as usize)
    }
}
