//! Daily rollups of the security metrics (SPEC §11): per UTC day the
//! logins, failures, distinct attacking addresses, MFA adoption, events by
//! severity, incidents opened and resolved with their MTTD and MTTR, and
//! the addresses blocked, computed from the tables of record and kept in
//! `metrics_daily`. A stored day is final once computed after its end; a
//! day computed while it ran (today) is computed again. A stored day that
//! starts before the first event retention kept (`rollups_kept_before`)
//! is never computed again, `--recompute` or not: its events are gone.

use super::{Core, Result};
use crate::model::Millis;
pub use crate::store::metrics::DailyRollup;

pub const DAY_MS: i64 = 86_400_000;

/// How far back the start-up job fills missing days.
pub const BACKFILL_DAYS: u32 = 400;

/// 00:00 UTC of the day holding `t`.
pub fn day_start(t: Millis) -> Millis {
    Millis(t.0.div_euclid(DAY_MS) * DAY_MS)
}

/// "2026-12-01" for the day holding `t`.
pub fn day_name(t: Millis) -> String {
    day_start(t).rfc3339()[..10].to_owned()
}

/// One rollup from its counts (pure, so tests can check it by hand).
pub fn rollup(start: Millis, c: &crate::store::metrics::DayCounts, times: &super::incidents::ResponseTimes, now: Millis) -> DailyRollup {
    DailyRollup {
        day: day_name(start),
        day_start: start,
        logins: c.logins,
        failures: c.failures,
        attacking_addresses: c.attacking_addresses,
        users: c.users,
        users_mfa: c.users_mfa,
        events_info: c.by_severity[0],
        events_low: c.by_severity[1],
        events_medium: c.by_severity[2],
        events_high: c.by_severity[3],
        events_critical: c.by_severity[4],
        incidents_opened: times.opened,
        incidents_resolved: times.resolved as i64,
        mttd_ms: times.mttd_mean_ms,
        mttr_ms: times.mttr_mean_ms,
        blocked_addresses: c.blocked_addresses,
        computed_at: now,
    }
}

impl DailyRollup {
    /// Share of accounts with a second factor, in percent (None without accounts).
    pub fn mfa_adoption_percent(&self) -> Option<f64> {
        (self.users > 0).then(|| self.users_mfa as f64 * 100.0 / self.users as f64)
    }

    /// Computed after the day ended: never computed again.
    pub fn is_final(&self) -> bool {
        self.computed_at.0 >= self.day_start.0 + DAY_MS
    }
}

impl Core {
    /// Computes the rollup of the UTC day holding `day` and stores it.
    pub fn compute_rollup(&self, day: Millis, now: Millis) -> Result<DailyRollup> {
        let start = day_start(day);
        let end = Millis(start.0 + DAY_MS);
        let counts = self.store.day_counts(start, end)?;
        let times = self.incident_response_times(start, end)?;
        let r = rollup(start, &counts, &times, now);
        self.store.put_rollup(&r)?;
        Ok(r)
    }

    /// When retention removed events (the kept chain begins after event
    /// #1): the time of the first kept event (now when none is kept). A
    /// stored rollup of a day starting before it is kept as it is. None
    /// when no event was removed.
    pub fn rollups_kept_before(&self, now: Millis) -> Result<Option<Millis>> {
        if self.store.event_chain_start()? <= 1 {
            return Ok(None);
        }
        Ok(Some(self.store.first_event_at()?.unwrap_or(now)))
    }

    /// The daemon's job (at start and after each midnight): computes every
    /// finished day not yet final, from the day of the first stored event
    /// (at most `max_days` back) to yesterday. Returns the days computed.
    pub fn rollup_missing_days(&self, now: Millis, max_days: u32) -> Result<usize> {
        let today = day_start(now);
        let Some(first) = self.store.first_event_at()? else { return Ok(0) };
        let earliest = Millis(today.0 - i64::from(max_days) * DAY_MS).max(day_start(first));
        let stored = self.store.rollups_since(earliest)?;
        let kept = self.rollups_kept_before(now)?;
        let mut done = 0;
        let mut day = earliest;
        while day < today {
            let trimmed = kept.is_some_and(|k| day < k);
            if !stored.iter().any(|r| r.day_start == day && (r.is_final() || trimmed)) {
                self.compute_rollup(day, now)?;
                done += 1;
            }
            day = Millis(day.0 + DAY_MS);
        }
        Ok(done)
    }

    /// The last `days` days, today included, oldest first (`security
    /// metrics`): finished days as stored (computed when missing or not
    /// final, or all of them with `recompute`), today computed now. A
    /// stored day starting before `rollups_kept_before` is never computed
    /// again (retention removed its events).
    pub fn daily_metrics(&self, days: u32, recompute: bool, now: Millis) -> Result<Vec<DailyRollup>> {
        let days = days.max(1);
        let today = day_start(now);
        let from = Millis(today.0 - i64::from(days - 1) * DAY_MS);
        let stored = self.store.rollups_since(from)?;
        let kept = self.rollups_kept_before(now)?;
        let mut out = Vec::with_capacity(days as usize);
        let mut day = from;
        while day <= today {
            let trimmed = kept.is_some_and(|k| day < k);
            match stored.iter().find(|r| r.day_start == day) {
                Some(r) if trimmed || (r.is_final() && !recompute) => out.push(r.clone()),
                _ => out.push(self.compute_rollup(day, now)?),
            }
            day = Millis(day.0 + DAY_MS);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, EventType, IncidentSeverity, IncidentType, Severity, Subject};
    use crate::store::users::NewUser;
    use std::time::Duration;

    /// 2027-01-15T00:00:00Z.
    const D0: Millis = Millis(1_800_000_000_000 - 1_800_000_000_000 % DAY_MS);
    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn days_are_utc() {
        assert_eq!(day_name(Millis(0)), "1970-01-01");
        assert_eq!(day_start(Millis(DAY_MS + 5)), Millis(DAY_MS));
        assert_eq!(day_name(Millis(DAY_MS - 1)), "1970-01-01");
        assert_eq!(day_name(D0), "2027-01-15");
    }

    fn ev(t: EventType, s: Severity, ip: Option<&str>, at: Millis) -> Event {
        Event::new(t, s, "seeded", at).ip(ip)
    }

    /// Seeded events on two days, one incident opened on day 1 and
    /// resolved on day 2: each day's rollup counts exactly its events.
    #[test]
    fn rollups_match_the_events_they_were_computed_from() {
        let dir = tempfile::tempdir().expect("tmp");
        let core = crate::core::test_core(dir.path(), "");
        let d1 = D0;
        let d2 = D0.plus(Duration::from_millis(DAY_MS as u64));
        let now = d2.plus(Duration::from_millis(DAY_MS as u64)).plus(H); // day 3, 01:00
        // Alice (with codes) and Bob: made the day before day 1, through
        // the real enrollment, so their own events fall on that day.
        let before = d1.minus(H);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let actor = crate::core::accounts::Actor::Cli("t".into());
        let pw = crate::model::Secret::new("Correct-Horse-Battery-9".to_owned());
        let alice = rt.block_on(core.add_user("alice", Some("alice@example.org"), &pw, &[], &actor, before)).expect("alice");
        rt.block_on(core.start_otp_enrollment(&alice, crate::core::mfa::Method::Totp, &actor, before)).expect("enroll");
        let mail = core.due_mail(before, 10).expect("mail");
        let link = mail[0].body.text.lines().find(|l| l.contains("/otp/enroll/")).expect("link").trim().to_owned();
        let token = link.rsplit('/').next().expect("token").to_owned();
        let secret = crate::core::otp::base32_decode(&core.otp_enrollment_view(&token, before).expect("view").secret_base32).expect("base32");
        let code = crate::core::otp::hotp(crate::core::otp::Algorithm::Sha1, &secret, crate::core::otp::step_of(before.0 / 1000, 30), 6);
        rt.block_on(core.otp_confirm(&token, &code, before)).expect("confirm");
        let alice = alice.id;
        core.store.create_user(&NewUser { username: "bob", email: None, password_hash: "x", groups: &[], now: d2.plus(H) }).expect("user");
        let mut events = Vec::new();
        // Day 1: 3 logins, 5 failures from 2 addresses, a critical event, a block.
        for i in 0..3 {
            events.push(ev(EventType::LoginSuccess, Severity::Info, Some("192.0.2.1"), d1.plus(H * i)));
        }
        for (i, ip) in ["203.0.113.5", "203.0.113.5", "203.0.113.5", "198.51.100.7", "198.51.100.7"].iter().enumerate() {
            events.push(ev(EventType::LoginFailed, Severity::Low, Some(ip), d1.plus(H * 5).plus(Duration::from_secs(i as u64))));
        }
        events.push(ev(EventType::OtpReplay, Severity::Critical, None, d1.plus(H * 6)));
        events.push(ev(EventType::IpBlocked, Severity::Medium, Some("203.0.113.5"), d1.plus(H * 7)));
        // The last millisecond of day 1 and the first of day 2.
        events.push(ev(EventType::LoginFailed, Severity::Low, Some("192.0.2.200"), Millis(d2.0 - 1)));
        events.push(ev(EventType::LoginSuccess, Severity::Info, Some("192.0.2.1"), d2));
        // Day 2: two blocks of one network count once; a high event.
        events.push(ev(EventType::IpBlocked, Severity::Medium, Some("198.51.100.0/24"), d2.plus(H)));
        events.push(ev(EventType::IpBlocked, Severity::Medium, Some("198.51.100.0/24"), d2.plus(H * 2)));
        events.push(ev(EventType::OtpReplay, Severity::High, None, d2.plus(H * 3)));
        core.store.insert_events(&events).expect("events");
        // An incident: first event d1+5h, opened d1+6h (MTTD 1 h), resolved d2+4h (MTTR 22 h).
        let finding = crate::model::Finding {
            incident_type: IncidentType::BruteForceAccount,
            severity: IncidentSeverity::High,
            subject: Subject::Account { user_id: Some(alice), username: "alice".into() },
            title: "brute force".into(),
            description: String::new(),
            event_ids: vec![4],
            first_event_at: d1.plus(H * 5),
            details: serde_json::json!({"rule": "test"}),
        };
        let opened = core.report_finding(finding, d1.plus(H * 6)).expect("incident");
        core.resolve_incident(opened.incident_id, "handled", &actor, d2.plus(H * 4)).expect("resolve");

        assert_eq!(core.rollup_missing_days(now, 30).expect("rollup"), 3, "the day before, day 1 and day 2, not today");
        let got = core.daily_metrics(3, false, now).expect("metrics");
        let [r1, r2, r3] = &got[..] else { panic!("{got:?}") };
        // The incident's own events (incident_created, incident_resolved) are events too.
        let incident_events = |from: Millis| core.events(&crate::store::events::EventFilter { since: Some(from), limit: 100, ..Default::default() }).expect("events");
        let created = incident_events(d1).iter().filter(|e| e.event_type == "incident_created").count() as i64;
        assert_eq!(created, 1);
        let d1_sev: Vec<i64> = vec![r1.events_info, r1.events_low, r1.events_medium, r1.events_high, r1.events_critical];
        let created_sev = incident_events(d1).iter().find(|e| e.event_type == "incident_created").map(|e| e.severity.clone()).expect("created");
        let mut want1 = vec![3, 6, 1, 0, 1];
        want1[["info", "low", "medium", "high", "critical"].iter().position(|s| *s == created_sev).expect("sev")] += 1;
        assert_eq!(d1_sev, want1);
        assert_eq!(
            (r1.day.as_str(), r1.logins, r1.failures, r1.attacking_addresses, r1.blocked_addresses, r1.users, r1.users_mfa),
            ("2027-01-15", 3, 6, 3, 1, 1, 1)
        );
        assert_eq!((r1.incidents_opened, r1.incidents_resolved, r1.mttd_ms, r1.mttr_ms), (1, 0, None, None));
        assert_eq!((r2.logins, r2.failures, r2.attacking_addresses, r2.blocked_addresses, r2.users, r2.users_mfa), (1, 0, 0, 1, 2, 1));
        assert_eq!((r2.incidents_opened, r2.incidents_resolved, r2.mttd_ms, r2.mttr_ms), (0, 1, Some(3_600_000), Some(22 * 3_600_000)));
        assert_eq!(r2.mfa_adoption_percent(), Some(50.0));
        assert!(r1.is_final() && r2.is_final() && !r3.is_final());
        assert_eq!((r3.day.as_str(), r3.logins, r3.failures), ("2027-01-17", 0, 0));
        // Stored: a second run computes nothing; the rows read back equal.
        assert_eq!(core.rollup_missing_days(now, 30).expect("again"), 0);
        assert_eq!(core.store.rollup_of(d1).expect("read").as_ref(), Some(r1));
    }

    /// Retention removed day 1's events: `--recompute` keeps day 1's
    /// stored rollup (not zeros) and computes day 2 again.
    #[test]
    fn a_day_retention_trimmed_is_never_computed_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let core = crate::core::test_core(dir.path(), "");
        let d1 = D0;
        let d2 = D0.plus(Duration::from_millis(DAY_MS as u64));
        let now = d2.plus(Duration::from_millis(DAY_MS as u64)).plus(H);
        let mut events = Vec::new();
        for i in 0..3 {
            events.push(ev(EventType::LoginSuccess, Severity::Info, Some("192.0.2.1"), d1.plus(H * i)));
        }
        events.push(ev(EventType::LoginSuccess, Severity::Info, Some("192.0.2.1"), d2.plus(H)));
        core.store.insert_events(&events).expect("events");
        assert_eq!(core.rollups_kept_before(now).expect("kept"), None, "nothing removed yet");
        core.rollup_missing_days(now, 30).expect("rollup");
        let before = core.daily_metrics(3, false, now).expect("metrics");
        assert_eq!((before[0].logins, before[1].logins), (3, 1));
        let removed = core.store.trim_events_before(core.store.event_trim_point(d2).expect("point")).expect("trim");
        assert!(removed >= 3, "{removed}");
        assert_eq!(core.rollups_kept_before(now).expect("kept"), Some(d2.plus(H)));
        let later = now.plus(Duration::from_secs(60));
        let got = core.daily_metrics(3, true, later).expect("recompute");
        assert_eq!(got[0], before[0], "day 1 as stored");
        // Day 2 holds the first kept event but starts before it (retention
        // may have cut into it): as stored too. Today is computed.
        assert_eq!(got[1], before[1], "day 2 as stored");
        assert_eq!(got[2].computed_at, later);
        assert_eq!(core.store.rollup_of(d1).expect("read").as_ref(), Some(&before[0]));
        // A day after the first kept event is computed again.
        let d3 = d2.plus(Duration::from_millis(DAY_MS as u64));
        let after = d3.plus(Duration::from_millis(DAY_MS as u64)).plus(H);
        core.rollup_missing_days(after, 30).expect("rollup day 3");
        let got = core.daily_metrics(4, true, after.plus(Duration::from_secs(60))).expect("recompute");
        assert_eq!((got[0].computed_at, got[1].computed_at, got[2].computed_at), (now, now, after.plus(Duration::from_secs(60))));
        // Nothing kept at all: every stored day stays.
        core.store.trim_events_before(core.store.event_trim_point(after).expect("point")).expect("trim all");
        assert_eq!(core.store.first_event_at().expect("first"), None);
        assert_eq!(core.rollups_kept_before(after).expect("kept"), Some(after));
        let got = core.daily_metrics(4, true, after).expect("recompute");
        assert_eq!((got[0].logins, got[1].logins), (3, 1));
    }
}
