//! The webhook delivery queue and the escalations already run. Bodies are
//! plain JSON (incident fields, no secret); secrets stay in the config.

use super::events::insert_batch_tx;
use super::{Context, Result, Store};
use crate::model::{Event, Millis};
use rusqlite::{params, Row};

/// A delivery to queue.
pub struct NewDelivery<'a> {
    pub webhook: &'a str,
    /// `playbook_action`, `escalation` or `test`.
    pub event: &'a str,
    pub incident_id: Option<i64>,
    pub playbook: Option<&'a str>,
    pub body: &'a str,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub webhook: String,
    pub event: String,
    pub incident_id: Option<i64>,
    pub playbook: Option<String>,
    pub created_at: String,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub sent_at: Option<String>,
    pub gave_up_at: Option<String>,
    #[serde(skip)]
    pub body: String,
}

const SELECT: &str = "SELECT id, webhook, event, incident_id, playbook, created_at, attempts, next_attempt_at, last_attempt_at, last_status, last_error, sent_at, gave_up_at, body FROM webhook_deliveries";

fn from_row(r: &Row<'_>) -> rusqlite::Result<DeliveryRow> {
    let t = |i: usize| -> rusqlite::Result<Option<String>> { Ok(r.get::<_, Option<i64>>(i)?.map(|v| Millis(v).rfc3339())) };
    let sent_at = t(11)?;
    let gave_up_at = t(12)?;
    let pending = sent_at.is_none() && gave_up_at.is_none();
    Ok(DeliveryRow {
        id: r.get(0)?,
        webhook: r.get(1)?,
        event: r.get(2)?,
        incident_id: r.get(3)?,
        playbook: r.get(4)?,
        created_at: Millis(r.get(5)?).rfc3339(),
        attempts: r.get(6)?,
        next_attempt_at: if pending { t(7)? } else { None },
        last_attempt_at: t(8)?,
        last_status: r.get(9)?,
        last_error: r.get(10)?,
        sent_at,
        gave_up_at,
        body: r.get(13)?,
    })
}

impl Store {
    /// Queues deliveries with the events that go with them, in one transaction.
    pub fn queue_deliveries(&self, deliveries: &[NewDelivery<'_>], events: &[Event], now: Millis) -> Result<Vec<i64>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to queue a webhook delivery")?;
        let mut ids = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            tx.execute(
                "INSERT INTO webhook_deliveries (webhook, event, incident_id, playbook, body, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![d.webhook, d.event, d.incident_id, d.playbook, d.body, now.0],
            )
            .doing("queueing a webhook delivery")?;
            ids.push(tx.last_insert_rowid());
        }
        insert_batch_tx(&tx, events)?;
        tx.commit().doing("committing a webhook delivery")?;
        Ok(ids)
    }

    /// Deliveries due at `now`, oldest first.
    pub fn due_deliveries(&self, now: Millis, limit: usize) -> Result<Vec<DeliveryRow>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!("{SELECT} WHERE sent_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2"))
            .doing("reading due webhook deliveries")?;
        let rows = st.query_map(params![now.0, limit as i64], from_row).doing("reading due webhook deliveries")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading due webhook deliveries")
    }

    /// The queue for `security webhooks queue`: pending first, then the
    /// newest done (sent or given up) when `include_done`.
    pub fn delivery_queue(&self, include_done: bool, limit: usize) -> Result<Vec<DeliveryRow>> {
        let conn = self.conn();
        let filter = if include_done { "" } else { "WHERE sent_at IS NULL AND gave_up_at IS NULL" };
        let mut st = conn
            .prepare(&format!("{SELECT} {filter} ORDER BY (sent_at IS NOT NULL OR gave_up_at IS NOT NULL), id DESC LIMIT ?1"))
            .doing("reading the webhook queue")?;
        let rows = st.query_map([limit as i64], from_row).doing("reading the webhook queue")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading the webhook queue")
    }

    pub fn delivery_sent(&self, id: i64, status: u16, now: Millis) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE webhook_deliveries SET sent_at = ?2, last_attempt_at = ?2, attempts = attempts + 1, last_status = ?3, last_error = NULL WHERE id = ?1",
                params![id, now.0, status],
            )
            .doing("marking a webhook delivery sent")?;
        Ok(())
    }

    /// A failed attempt: `next` is the next attempt, `None` to give up.
    pub fn delivery_failed(&self, id: i64, status: Option<u16>, error: &str, next: Option<Millis>, now: Millis) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = ?2, last_status = ?3, last_error = ?4,
                 next_attempt_at = COALESCE(?5, next_attempt_at), gave_up_at = CASE WHEN ?5 IS NULL THEN ?2 ELSE NULL END WHERE id = ?1",
                params![id, now.0, status, error, next.map(|t| t.0)],
            )
            .doing("rescheduling a webhook delivery")?;
        Ok(())
    }

    /// Claims an escalation (incident, playbook, action): true the first
    /// time only.
    pub fn claim_escalation(&self, incident_id: i64, playbook: &str, action_index: usize, now: Millis) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO playbook_escalations (incident_id, playbook, action_index, done_at) VALUES (?1, ?2, ?3, ?4)",
                params![incident_id, playbook, action_index as i64, now.0],
            )
            .doing("claiming an escalation")?;
        Ok(n > 0)
    }

    /// Whether an escalation already ran.
    pub fn escalation_done(&self, incident_id: i64, playbook: &str, action_index: usize) -> Result<bool> {
        self.conn()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM playbook_escalations WHERE incident_id = ?1 AND playbook = ?2 AND action_index = ?3)",
                params![incident_id, playbook, action_index as i64],
                |r| r.get(0),
            )
            .doing("reading escalations")
    }
}
