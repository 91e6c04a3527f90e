//! Webhooks: what a delivery says (the `json` and `slack` presets), how it
//! is signed, and the rules of the durable queue (exponential backoff,
//! giving up). The HTTP client is the `hooks` front end; it asks for due
//! deliveries, signs each at send time and reports the result here.
//!
//! Signing: `X-Portcullis-Timestamp: T` (Unix seconds at send time) and
//! `X-Portcullis-Signature: sha256=HEX`, HEX being HMAC-SHA256 with the
//! webhook's secret over `T` `.` BODY (the exact bytes sent). A receiver
//! recomputes it, compares in constant time, and refuses a timestamp far
//! from its clock (replays). The secret is never stored, logged or sent.

use super::playbooks::PlaybookIncident;
use super::{Core, Error, Result};
use crate::config::webhooks::{Preset, WebhookSettings};
use crate::model::{Event, EventType, Millis, Severity};
use crate::store::webhooks::{DeliveryRow, NewDelivery};
use hmac::{Hmac, KeyInit, Mac};
use std::time::Duration;

pub const TIMESTAMP_HEADER: &str = "X-Portcullis-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Portcullis-Signature";
/// The delivery's id in the queue (the same on every retry).
pub const DELIVERY_HEADER: &str = "X-Portcullis-Delivery";

/// HMAC-SHA256 of `msg` under `key`, lowercase hex.
pub fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("hmac takes any key length"));
    m.update(msg);
    m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `X-Portcullis-Signature` value for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    format!("sha256={}", hmac_sha256_hex(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes()))
}

/// A receiver's check, in constant time: the signature matches and the
/// timestamp is within `tolerance` of `now` (Unix seconds).
pub fn verify(secret: &str, timestamp: &str, body: &str, header: &str, now: i64, tolerance: Duration) -> bool {
    use subtle::ConstantTimeEq as _;
    let Ok(ts) = timestamp.parse::<i64>() else { return false };
    let fresh = ts.abs_diff(now) <= tolerance.as_secs();
    let want = signature(secret, ts, body);
    let same: bool = want.as_bytes().ct_eq(header.as_bytes()).into();
    fresh && same
}

/// What a delivery is about.
pub enum Notice<'a> {
    /// A playbook's `webhook` action (or an escalation's): the incident, the
    /// playbook and what it did before this action.
    Incident { event: &'a str, incident: &'a PlaybookIncident, playbook: &'a str, note: Option<&'a str>, actions: &'a [(String, String)] },
    /// `security webhooks test NAME`.
    Test { webhook: &'a str },
}

/// Escapes `&`, `<` and `>` as Slack's mrkdwn needs, so incident text
/// (which may come from an attacker) cannot make a mention or a link.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The body of a delivery, as JSON text. `id` is random and stays the
/// same on retries, so a receiver can drop duplicates.
pub fn body(preset: Preset, notice: &Notice<'_>, gate: &str, id: &str, now: Millis) -> String {
    let value = match (preset, notice) {
        (Preset::Json, Notice::Incident { event, incident, playbook, note, actions }) => serde_json::json!({
            "id": id,
            "event": event,
            "gate": gate,
            "created_at": now.rfc3339(),
            "playbook": playbook,
            "note": note,
            "incident": {
                "id": incident.id,
                "incident_type": incident.incident_type.as_str(),
                "severity": incident.severity.as_str(),
                "title": incident.title,
                "subject": incident.subject.key(),
            },
            "actions": actions.iter().map(|(a, o)| serde_json::json!({ "action": a, "outcome": o })).collect::<Vec<_>>(),
        }),
        (Preset::Json, Notice::Test { webhook }) => serde_json::json!({
            "id": id,
            "event": "test",
            "gate": gate,
            "created_at": now.rfc3339(),
            "webhook": webhook,
            "message": "a test delivery from `portcullis security webhooks test`",
        }),
        (Preset::Slack, Notice::Incident { incident, playbook, note, actions, .. }) => {
            let done: Vec<String> = actions.iter().map(|(a, o)| format!("{a} {o}")).collect();
            let mut text = format!(
                "{}: {} incident #{} ({}): {}; playbook {}",
                slack_escape(gate),
                incident.severity,
                incident.id,
                incident.incident_type,
                slack_escape(&incident.title),
                slack_escape(playbook)
            );
            if !done.is_empty() {
                text.push_str(&format!(": {}", done.join(", ")));
            }
            if let Some(n) = note {
                text.push_str(&format!(" ({})", slack_escape(n)));
            }
            serde_json::json!({ "text": text })
        }
        (Preset::Slack, Notice::Test { webhook }) => serde_json::json!({ "text": format!("{}: a test delivery to webhook {}", slack_escape(gate), slack_escape(webhook)) }),
    };
    value.to_string()
}

/// A random delivery id (128 bits, hex).
pub(crate) fn new_delivery_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::Invalid(format!("generating a delivery id: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A delivery ready for the webhook front end.
#[derive(Debug, Clone)]
pub struct OutgoingWebhook {
    pub id: i64,
    /// The webhook's settings as the config says now (its `Debug` hides
    /// the secret and the URL's path).
    pub webhook: WebhookSettings,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub incident_id: Option<i64>,
    pub playbook: Option<String>,
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    At(Millis),
    GaveUp,
}

/// `base * 2^attempts_so_far`, capped at `max`.
pub fn backoff(base: Duration, max: Duration, attempts_so_far: u32) -> Duration {
    1u32.checked_shl(attempts_so_far).and_then(|f| base.checked_mul(f)).map_or(max, |d| d.min(max))
}

impl Core {
    /// Queues a delivery with the events that go with it; wakes the worker.
    pub(crate) fn queue_webhook(&self, delivery: &NewDelivery<'_>, events: &[Event], now: Millis) -> Result<i64> {
        let ids = self.store.queue_deliveries(std::slice::from_ref(delivery), events, now)?;
        self.webhook_queued.notify_one();
        Ok(ids[0])
    }

    /// Queues a signed test delivery to the webhook `name` through the same
    /// queue (`security webhooks test NAME`); the running gate sends it.
    pub fn queue_test_webhook(&self, name: &str, now: Millis) -> Result<i64> {
        let s = self.settings();
        let hook = s.webhooks.get(name).ok_or_else(|| unknown_webhook(name, &s.webhooks))?;
        let body = body(hook.preset, &Notice::Test { webhook: name }, &s.mfa.issuer, &new_delivery_id()?, now);
        self.queue_webhook(&NewDelivery { webhook: name, event: "test", incident_id: None, playbook: None, body: &body }, &[], now)
    }

    /// The configured webhooks, by name.
    pub fn webhooks(&self) -> Vec<WebhookSettings> {
        self.settings().webhooks.values().cloned().collect()
    }

    /// Deliveries due at `now`. One whose webhook is no longer in the
    /// config is given up at once (its secret is gone).
    pub fn due_webhooks(&self, now: Millis, limit: usize) -> Result<Vec<OutgoingWebhook>> {
        let s = self.settings();
        let mut out = Vec::new();
        for r in self.store.due_deliveries(now, limit)? {
            match s.webhooks.get(&r.webhook) {
                Some(w) => out.push(OutgoingWebhook { id: r.id, webhook: w.clone(), body: r.body, attempts: r.attempts, incident_id: r.incident_id, playbook: r.playbook }),
                None => {
                    let why = format!("webhook {:?} is no longer in the config", r.webhook);
                    self.store.delivery_failed(r.id, None, &why, None, now)?;
                    tracing::warn!(id = r.id, webhook = %r.webhook, "webhook delivery given up: {why}");
                }
            }
        }
        Ok(out)
    }

    pub fn webhook_sent(&self, id: i64, status: u16, now: Millis) -> Result<()> {
        Ok(self.store.delivery_sent(id, status, now)?)
    }

    /// Records a failed attempt and decides what follows: the next attempt
    /// after the webhook's backoff, or giving up (after `max_attempts`, or
    /// at once when `permanent`). Giving up on a playbook's delivery is a
    /// `playbook_action` event (outcome `failed`).
    pub async fn webhook_failed(&self, d: &OutgoingWebhook, status: Option<u16>, error: &str, permanent: bool, now: Millis) -> Result<Retry> {
        let attempt = d.attempts.saturating_add(1);
        let w = &d.webhook;
        let retry = if permanent || attempt >= w.max_attempts { Retry::GaveUp } else { Retry::At(now.plus(backoff(w.retry_base, w.retry_max, d.attempts))) };
        self.store.delivery_failed(d.id, status, error, match retry {
            Retry::At(t) => Some(t),
            Retry::GaveUp => None,
        }, now)?;
        if retry == Retry::GaveUp {
            if let Some(incident_id) = d.incident_id {
                let e = Event::new(EventType::PlaybookAction, Severity::High, format!("webhook {} gave up on delivery {} after {attempt} attempts", w.name, d.id), now)
                    .detail("playbook", d.playbook.clone())
                    .detail("action", "webhook")
                    .detail("incident_id", incident_id)
                    .detail("dry_run", false)
                    .detail("outcome", "failed")
                    .detail("parameters", serde_json::json!({ "webhook": w.name }))
                    .detail("delivery_id", d.id)
                    .detail("attempts", attempt)
                    .detail("error", error);
                self.record(e).await;
            }
        }
        Ok(retry)
    }

    /// The queue (with `include_done`: also the newest sent or given up).
    pub fn webhook_queue(&self, include_done: bool) -> Result<Vec<DeliveryRow>> {
        Ok(self.store.delivery_queue(include_done, 200)?)
    }
}

pub(crate) fn unknown_webhook(name: &str, defined: &std::collections::BTreeMap<String, WebhookSettings>) -> Error {
    let names: Vec<String> = defined.keys().map(|k| format!("{k:?}")).collect();
    Error::Invalid(format!(
        "no webhook named {:?} in the config (defined: {})",
        crate::model::escape_control(name),
        if names.is_empty() { "none".to_owned() } else { names.join(", ") }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IncidentSeverity, IncidentType, Subject};

    #[test]
    fn hmac_matches_rfc_4231_and_an_independent_signer() {
        // RFC 4231, test cases 1 and 2.
        assert_eq!(hmac_sha256_hex(&[0x0b; 20], b"Hi There"), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        assert_eq!(hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // `printf '1700000000.{"event":"test"}' | openssl dgst -sha256 -hmac whsec-0123456789abcdef`
        let sig = signature("whsec-0123456789abcdef", 1_700_000_000, r#"{"event":"test"}"#);
        assert_eq!(sig, "sha256=b988d128e149191238e2483bda5f6b7b6b6120fd7e9e5b2833656e1b7a269bea");
    }

    #[test]
    fn a_receiver_checks_signature_and_freshness() {
        let (secret, body, ts) = ("whsec-0123456789abcdef", r#"{"event":"test"}"#, 1_700_000_000i64);
        let sig = signature(secret, ts, body);
        let five_min = Duration::from_secs(300);
        let cases: &[(&str, &str, &str, i64, bool)] = &[
            ("1700000000", body, &sig, ts, true),
            ("1700000000", body, &sig, ts + 299, true),
            // A replay, later than the tolerance.
            ("1700000000", body, &sig, ts + 301, false),
            // Another timestamp with the old signature.
            ("1700000300", body, &sig, ts + 300, false),
            ("1700000000", r#"{"event":"tost"}"#, &sig, ts, false),
            ("1700000000", body, "sha256=00", ts, false),
            ("soon", body, &sig, ts, false),
        ];
        for (t, b, s, now, want) in cases {
            assert_eq!(verify(secret, t, b, s, *now, five_min), *want, "{t} {b} {s} {now}");
        }
        assert!(!verify("another-secret-0123", "1700000000", body, &sig, ts, five_min));
    }

    fn incident() -> PlaybookIncident {
        PlaybookIncident {
            id: 12,
            incident_type: IncidentType::BruteForceAccount,
            severity: IncidentSeverity::High,
            subject: Subject::Account { user_id: Some(7), username: "alice".into() },
            title: "5 failed logins for alice <@here> & co".into(),
            details: serde_json::json!({ "rule": "brute_force_account" }),
        }
    }

    #[test]
    fn preset_bodies() {
        let i = incident();
        let actions = vec![("lock".to_owned(), "done".to_owned())];
        let n = Notice::Incident { event: "playbook_action", incident: &i, playbook: "lock-brute-force", note: None, actions: &actions };
        let now = Millis(1_764_072_000_123);
        let json: serde_json::Value = serde_json::from_str(&body(Preset::Json, &n, "Portcullis", "abc", now)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "abc", "event": "playbook_action", "gate": "Portcullis", "created_at": "2025-11-25T12:00:00.123Z",
                "playbook": "lock-brute-force", "note": null,
                "incident": { "id": 12, "incident_type": "brute_force_account", "severity": "high", "title": "5 failed logins for alice <@here> & co", "subject": "account:7" },
                "actions": [{ "action": "lock", "outcome": "done" }],
            })
        );
        let slack: serde_json::Value = serde_json::from_str(&body(Preset::Slack, &n, "Portcullis", "abc", now)).unwrap();
        assert_eq!(slack, serde_json::json!({ "text": "Portcullis: high incident #12 (brute_force_account): 5 failed logins for alice &lt;@here&gt; &amp; co; playbook lock-brute-force: lock done" }));
        let esc = Notice::Incident { event: "escalation", incident: &i, playbook: "p", note: Some("still open after 1h"), actions: &[] };
        let slack: serde_json::Value = serde_json::from_str(&body(Preset::Slack, &esc, "Gate", "x", now)).unwrap();
        assert_eq!(slack["text"], "Gate: high incident #12 (brute_force_account): 5 failed logins for alice &lt;@here&gt; &amp; co; playbook p (still open after 1h)");
        let test: serde_json::Value = serde_json::from_str(&body(Preset::Json, &Notice::Test { webhook: "ops" }, "Gate", "x", now)).unwrap();
        assert_eq!(test["event"], "test");
        assert_eq!(test["webhook"], "ops");
        let test: serde_json::Value = serde_json::from_str(&body(Preset::Slack, &Notice::Test { webhook: "ops" }, "Gate", "x", now)).unwrap();
        assert_eq!(test, serde_json::json!({ "text": "Gate: a test delivery to webhook ops" }));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = |n| backoff(Duration::from_secs(30), Duration::from_secs(3600), n);
        assert_eq!([b(0), b(1), b(2), b(7), b(40)], [30, 60, 120, 3600, 3600].map(Duration::from_secs));
    }
}
