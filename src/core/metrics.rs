//! Live metrics for `/metrics`, with prometheus-client (OpenMetrics text).
//! Counters and histograms are fed where things happen (the event writer's
//! committed batches, the hashing pool); gauges are read at each scrape
//! (sessions, incidents, blocks, the outbox). Labels are from closed sets
//! of the code (method, result, reason, severity): never a username, an
//! address or anything a client chose. The web layer only serves the text.

use super::Core;
use crate::model::{Event, EventType, Millis};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];

/// What is counted as it happens (cheap to clone: every metric is shared).
#[derive(Clone)]
pub struct Metrics {
    /// `login_success` / `login_failed` events committed, by method and result.
    login_attempts: Family<Labels2, Counter>,
    /// `login_failed` events by reason.
    login_failures: Family<Labels1, Counter>,
    /// Security events committed by severity.
    events: Family<Labels1, Counter>,
    batch_size: Histogram,
    lag: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            login_attempts: Family::default(),
            login_failures: Family::default(),
            events: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            // 0.5 ms to about 16 s.
            lag: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        }
    }
}

/// What the event export (the `export` front end) has done, read at each
/// scrape: records (events and chain heads) written and dropped per sink,
/// chain head records.
#[derive(Debug, Default)]
pub struct ExportCounts {
    pub file_written: std::sync::atomic::AtomicU64,
    pub file_dropped: std::sync::atomic::AtomicU64,
    pub syslog_sent: std::sync::atomic::AtomicU64,
    pub syslog_dropped: std::sync::atomic::AtomicU64,
    pub chain_heads: std::sync::atomic::AtomicU64,
}

/// The `method` label: the ways the gate logs people in, `other` for
/// anything else (the label set stays closed whatever an event says).
pub fn method_label(method: Option<&str>) -> &'static str {
    const BASES: [&str; 3] = ["password", "keyboard-interactive", "publickey"];
    const SECOND: [&str; 4] = ["", "+totp", "+hotp", "+backup_code"];
    let Some(m) = method else { return "none" };
    for b in BASES {
        if let Some(rest) = m.strip_prefix(b) {
            for (i, s) in SECOND.iter().enumerate() {
                if rest == *s {
                    return LABELS[BASES.iter().position(|x| *x == b).unwrap_or(0) * 4 + i];
                }
            }
        }
    }
    "other"
}

const LABELS: [&str; 12] = [
    "password",
    "password+totp",
    "password+hotp",
    "password+backup_code",
    "keyboard-interactive",
    "keyboard-interactive+totp",
    "keyboard-interactive+hotp",
    "keyboard-interactive+backup_code",
    "publickey",
    "publickey+totp",
    "publickey+hotp",
    "publickey+backup_code",
];

/// The `reason` label: the code's reason names (lower case and `_`, at
/// most 40 bytes), `other` for anything else.
pub fn reason_label(reason: Option<&str>) -> String {
    match reason {
        Some(r) if !r.is_empty() && r.len() <= 40 && r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => r.to_owned(),
        Some(_) => "other".to_owned(),
        None => "none".to_owned(),
    }
}

impl Metrics {
    /// A committed batch of the event writer, at `now` (its commit).
    pub fn batch_committed(&self, events: &[Event], now: Millis) {
        if events.is_empty() {
            return;
        }
        self.batch_size.observe(events.len() as f64);
        let oldest = events.iter().map(|e| e.created_at.0).min().unwrap_or(now.0);
        self.lag.observe((now.0 - oldest).max(0) as f64 / 1000.0);
        for e in events {
            self.events.get_or_create(&[("severity", e.severity.as_str().to_owned())]).inc();
            let result = match e.event_type {
                EventType::LoginSuccess => "success",
                EventType::LoginFailed => "failure",
                _ => continue,
            };
            let method = method_label(e.details.get("method").and_then(|m| m.as_str()));
            self.login_attempts.get_or_create(&[("method", method.to_owned()), ("result", result.to_owned())]).inc();
            if e.event_type == EventType::LoginFailed {
                self.login_failures.get_or_create(&[("reason", reason_label(e.details.get("reason").and_then(|m| m.as_str())))]).inc();
            }
        }
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

impl Core {
    /// The OpenMetrics text for `/metrics`: what is counted live, and the
    /// gauges read now.
    pub fn metrics_text(&self) -> String {
        let now = Millis::now();
        let m = &self.metrics;
        let mut r = Registry::with_prefix("portcullis");
        r.register("login_attempts", "Logins and failed logins (committed events), by method and result", m.login_attempts.clone());
        r.register("login_failures", "Failed logins by reason", m.login_failures.clone());
        r.register("security_events_written", "Security events committed by this daemon, by severity", m.events.clone());
        r.register("event_writer_batch_size", "Events per transaction of the event writer", m.batch_size.clone());
        r.register_with_unit("event_writer_lag", "From an event's time to its commit, the oldest of each batch", Unit::Seconds, m.lag.clone());
        r.register_with_unit("kdf_duration", "Time of one password hash on a pool worker", Unit::Seconds, self.kdf.duration.clone());
        r.register("kdf_refused", "Hash requests refused because the pool and its queue were full", self.kdf.refused.clone());
        gauge(&mut r, "kdf_queue_depth", "Hash requests admitted and waiting for a worker", self.kdf.queue_depth() as i64);
        counter(&mut r, "kdf_iterations", "PBKDF2 iterations run by first-factor checks", self.kdf.iterations_spent());
        gauge(&mut r, "active_sessions", "Sessions live in this daemon", self.live.lock().unwrap_or_else(|p| p.into_inner()).len() as i64);
        gauge(&mut r, "unauthenticated_connections", "SSH connections not yet authenticated", self.admission.unauthenticated() as i64);
        match self.store.open_incidents_by_severity() {
            Ok(rows) => {
                let f: Family<Labels1, Gauge> = Family::default();
                for (severity, n) in rows {
                    f.get_or_create(&[("severity", severity.to_owned())]).set(n);
                }
                r.register("open_incidents", "Incidents not resolved, by severity", f);
            }
            Err(e) => tracing::warn!(error = %e, "reading metrics"),
        }
        match self.store.blocks_in_force(now) {
            Ok(n) => gauge(&mut r, "blocked_addresses", "Address and network blocks in force", n),
            Err(e) => tracing::warn!(error = %e, "reading metrics"),
        }
        match self.store.gauges() {
            Ok(g) => {
                gauge(&mut r, "mail_queue", "Mails waiting in the outbox", g.mail_pending);
                gauge(&mut r, "users", "Accounts", g.users);
                gauge(&mut r, "users_mfa_enabled", "Accounts with one-time codes enabled", g.mfa_enabled);
                gauge(&mut r, "sessions_open", "Sessions not yet ended (every process)", g.sessions_open);
                gauge(&mut r, "security_events", "Security events stored (the largest id)", g.events);
            }
            Err(e) => tracing::warn!(error = %e, "reading metrics"),
        }
        match self.store.oldest_pending_mail() {
            Ok(oldest) => {
                let age = oldest.map_or(0, |t| (now.0 - t.0).max(0) / 1000);
                r.register_with_unit("mail_queue_oldest_age", "Age of the oldest mail waiting in the outbox (0 when empty)", Unit::Seconds, {
                    let g: Gauge = Gauge::default();
                    g.set(age);
                    g
                });
            }
            Err(e) => tracing::warn!(error = %e, "reading metrics"),
        }
        let d = &self.detection;
        use std::sync::atomic::Ordering;
        gauge(&mut r, "detection_ready", "1 once the detector has rebuilt its windows and sees events live", i64::from(d.ready.load(Ordering::Acquire)));
        counter(&mut r, "detection_events", "Events the detector has looked at", d.events.load(Ordering::Relaxed));
        gauge(&mut r, "detection_seen_upto", "Every event with an id up to this one has been through the detector", d.seen_upto.load(Ordering::Acquire).max(0));
        gauge(&mut r, "detection_tracked_keys", "Addresses, networks, accounts and password tags the detector holds state for", d.tracked.load(Ordering::Relaxed) as i64);
        counter(&mut r, "detection_evicted", "Keys dropped to keep the detector's memory bounded", d.evicted.load(Ordering::Relaxed));
        counter(&mut r, "detection_tags_dropped", "Password tags dropped because the detector's queue was full", self.spray_tags.dropped());
        counter(&mut r, "detection_tags_unmatched", "Password tags whose event never reached the detector", d.tags_unmatched.load(Ordering::Relaxed));
        let findings: Family<Labels2, Counter> = Family::default();
        for ((rule, incident_type), n) in d.findings() {
            findings.get_or_create(&[("rule", rule), ("incident_type", incident_type)]).inc_by(n);
        }
        r.register("detection_findings", "Findings of the detection rules", findings);
        let x = &self.export_counts;
        let exported: Family<Labels2, Counter> = Family::default();
        for (sink, result, n) in [("file", "written", &x.file_written), ("file", "dropped", &x.file_dropped), ("syslog", "written", &x.syslog_sent), ("syslog", "dropped", &x.syslog_dropped)] {
            exported.get_or_create(&[("sink", sink.to_owned()), ("result", result.to_owned())]).inc_by(n.load(Ordering::Relaxed));
        }
        r.register("export_records", "Records (events and chain heads) the export wrote to a sink, or dropped while the sink was down", exported);
        counter(&mut r, "export_chain_heads", "Chain head records written into the export streams", x.chain_heads.load(Ordering::Relaxed));
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &r) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    #[test]
    fn labels_stay_in_closed_sets() {
        for (method, want) in [
            (Some("password"), "password"),
            (Some("keyboard-interactive+totp"), "keyboard-interactive+totp"),
            (Some("publickey"), "publickey"),
            (Some("password+backup_code"), "password+backup_code"),
            (Some("password+evil\"label"), "other"),
            (Some("root"), "other"),
            (None, "none"),
        ] {
            assert_eq!(method_label(method), want, "{method:?}");
        }
        for (reason, want) in [(Some("bad_password"), "bad_password"), (Some("Bad\nReason"), "other"), (Some(""), "other"), (None, "none")] {
            assert_eq!(reason_label(reason), want, "{reason:?}");
        }
    }

    #[test]
    fn committed_batches_count_logins_and_render_as_openmetrics() {
        let dir = tempfile::tempdir().expect("tmp");
        let core = crate::core::test_core(dir.path(), "");
        let t = Millis(1_800_000_000_000);
        let ev = |ty: EventType, sev: Severity, method: &str| Event::new(ty, sev, "x", t).user(None, Some("alice")).ip(Some("192.0.2.9")).detail("method", method).detail("reason", "bad_password");
        core.metrics.batch_committed(
            &[
                ev(EventType::LoginSuccess, Severity::Info, "publickey"),
                ev(EventType::LoginFailed, Severity::Low, "password"),
                ev(EventType::LoginFailed, Severity::Low, "password"),
                ev(EventType::SessionStarted, Severity::Info, "publickey"),
            ],
            t.plus(std::time::Duration::from_millis(1500)),
        );
        let text = core.metrics_text();
        for line in [
            "portcullis_login_attempts_total{method=\"publickey\",result=\"success\"} 1",
            "portcullis_login_attempts_total{method=\"password\",result=\"failure\"} 2",
            "portcullis_login_failures_total{reason=\"bad_password\"} 2",
            "portcullis_security_events_written_total{severity=\"info\"} 2",
            "portcullis_event_writer_batch_size_count 1",
            "portcullis_event_writer_batch_size_sum 4.0",
            "portcullis_event_writer_lag_seconds_sum 1.5",
            "portcullis_open_incidents{severity=\"critical\"} 0",
            "portcullis_blocked_addresses 0",
            "portcullis_mail_queue 0",
            "portcullis_kdf_queue_depth 0",
            "portcullis_active_sessions 0",
            "# TYPE portcullis_kdf_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Neither the username nor the address of an event becomes a label.
        assert!(!text.contains("alice") && !text.contains("192.0.2.9"), "{text}");
    }
}
