//! Retention (SPEC §11): events older than `retention.events_days` are
//! removed from the start of the hash chain by the daemon's daily job,
//! through `Store::trim_events_before_with` only (it moves the chain's
//! anchor with each batch, so `security events verify` still passes).
//! Incidents, their links to events, their timelines and their evidence
//! (copies of the related events, made when they opened) are kept: nothing
//! references `security_events` by a foreign key. Each run is recorded as
//! one `scan_completed` event (`scan: "retention"`) with what went.

use super::{Core, Result};
use crate::model::{Event, EventType, Millis, Severity};

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRun {
    pub days: u32,
    /// Events created before this were to go.
    pub cutoff: Millis,
    /// Events with a lower id were to go (the trim point).
    pub before_id: i64,
    pub removed: u64,
    /// Where the kept chain begins now.
    pub first_id: i64,
    /// Stopped before the trim point (the daemon was stopping).
    pub interrupted: bool,
}

impl RetentionRun {
    /// The run's event.
    pub fn event(&self, now: Millis) -> Event {
        let what = if self.interrupted { "interrupted" } else { "done" };
        Event::new(
            EventType::ScanCompleted,
            Severity::Info,
            format!("retention ({what}): {} event(s) older than {} day(s) removed; the kept chain begins at #{}", self.removed, self.days, self.first_id),
            now,
        )
        .detail("scan", "retention")
        .detail("events_days", self.days)
        .detail("cutoff", self.cutoff.rfc3339())
        .detail("removed", self.removed)
        .detail("first_id", self.first_id)
        .detail("interrupted", self.interrupted)
    }
}

impl Core {
    /// Removes the events created more than `retention.events_days` before
    /// `now`, from the start of the chain (see `Store::event_trim_point`),
    /// in short batches with `between(removed so far)` after each (the
    /// daemon pauses there; false stops the run). Records nothing: the
    /// caller records `run.event(..)` (`record_retention`). None when
    /// retention is off (0 days).
    pub fn trim_old_events(&self, now: Millis, between: &mut dyn FnMut(u64) -> bool) -> Result<Option<RetentionRun>> {
        let days = self.settings().retention_days;
        if days == 0 {
            return Ok(None);
        }
        let cutoff = Millis(now.0.saturating_sub(i64::from(days) * super::rollups::DAY_MS));
        let before_id = self.store.event_trim_point(cutoff)?;
        let mut interrupted = false;
        let removed = self.store.trim_events_before_with(before_id, &mut |n| {
            let go_on = between(n);
            interrupted = !go_on;
            go_on
        })?;
        let first_id = self.store.event_chain_start()?;
        Ok(Some(RetentionRun { days, cutoff, before_id, removed, first_id, interrupted: interrupted && first_id < before_id }))
    }

    /// Records the run's `scan_completed` event.
    pub async fn record_retention(&self, run: &RetentionRun, now: Millis) {
        self.events.record(run.event(now)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Finding, IncidentSeverity, IncidentType, Subject};
    use crate::store::users::NewUser;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);
    /// A fixed "now": 2027-01-15T08:00:00Z.
    const NOW: Millis = Millis(1_800_000_000_000 - 1_800_000_000_000 % 86_400_000 + 8 * 3_600_000);

    /// Old failures that opened an incident, newer events around them:
    /// the old ones go (in batches, the chain still verifying), the
    /// incident stays with its links and its evidence, the run's event
    /// says how many went; a second run removes nothing.
    #[test]
    fn retention_removes_old_events_and_keeps_incidents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = crate::core::test_core(dir.path(), "retention: {\n  events_days: 30\n}\n");
        let alice = core.store.create_user(&NewUser { username: "alice", email: None, password_hash: "x", groups: &[], now: NOW.minus(DAY * 100) }).expect("user").id;
        let old_at = NOW.minus(DAY * 40);
        let old: Vec<Event> = (0..2100)
            .map(|i| {
                Event::new(EventType::LoginFailed, Severity::Low, "password login failed: bad password", old_at.plus(Duration::from_millis(i)))
                    .user(Some(alice), Some("alice"))
                    .ip(Some("192.0.2.7"))
                    .detail("reason", "bad_password")
            })
            .collect();
        let old_ids = core.store.insert_events(&old).expect("old events");
        let f = Finding {
            incident_type: IncidentType::BruteForceAccount,
            subject: Subject::Account { user_id: Some(alice), username: "alice".into() },
            severity: IncidentSeverity::High,
            title: "brute force against alice".into(),
            description: "the rule fired".into(),
            event_ids: old_ids[..5].to_vec(),
            first_event_at: old_at,
            details: serde_json::json!({ "rule": "brute_force_account" }),
        };
        let incident = core.report_finding(f, old_at.plus(Duration::from_secs(60))).expect("incident").incident_id;
        let evidence = core.store.incident_evidence(incident).expect("evidence").expect("some");
        // Exactly at the cutoff stays; a minute newer stays.
        let kept = core
            .store
            .insert_events(&[
                Event::new(EventType::ConfigReloaded, Severity::Info, "at the cutoff", NOW.minus(DAY * 30)),
                Event::new(EventType::LoginSuccess, Severity::Info, "recent", NOW.minus(Duration::from_secs(60))).user(Some(alice), Some("alice")),
            ])
            .expect("new events");
        let before = core.store.verify_event_chain().expect("verify");
        assert_eq!(before.problem, None);
        let total = before.verified;

        let mut pauses = Vec::new();
        let run = core
            .trim_old_events(NOW, &mut |n| {
                pauses.push(n);
                true
            })
            .expect("retention")
            .expect("on");
        // 2100 old failures and the incident's own event(s), all older than 30 days.
        let removed = total - 2;
        assert_eq!(run, RetentionRun { days: 30, cutoff: NOW.minus(DAY * 30), before_id: kept[0], removed, first_id: kept[0], interrupted: false });
        assert_eq!(pauses, vec![1000, 2000], "a pause after each full batch");
        let after = core.store.verify_event_chain().expect("verify");
        assert_eq!((after.problem, after.verified, after.first_id, after.last_id), (None, 2, kept[0], Some(kept[1])));
        let i = core.incident(incident).expect("read").expect("kept");
        assert_eq!((i.event_count, i.first_event_at), (5, old_at));
        assert_eq!(core.store.incident_event_ids(incident, 10).expect("links"), old_ids[..5].to_vec());
        assert_eq!(core.store.incident_evidence(incident).expect("evidence").expect("some"), evidence, "evidence unchanged");
        assert!(evidence.to_string().contains("password login failed"), "{evidence}");

        let event = run.event(NOW);
        assert_eq!(event.event_type, EventType::ScanCompleted);
        assert_eq!(event.details["scan"], "retention");
        assert_eq!(event.details["removed"], removed);
        assert_eq!(event.details["first_id"], kept[0]);
        assert_eq!(event.details["cutoff"], NOW.minus(DAY * 30).rfc3339());
        assert_eq!(event.description, format!("retention (done): {removed} event(s) older than 30 day(s) removed; the kept chain begins at #{}", kept[0]));
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(core.record_retention(&run, NOW));
        assert_eq!(core.store.verify_event_chain().expect("verify").problem, None);

        let again = core.trim_old_events(NOW, &mut |_| true).expect("retention").expect("on");
        assert_eq!((again.removed, again.first_id), (0, kept[0]));
    }

    #[test]
    fn an_interrupted_run_says_so_and_zero_days_keeps_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = crate::core::test_core(dir.path(), "retention: {\n  events_days: 1\n}\n");
        let old: Vec<Event> = (0..2500).map(|i| Event::new(EventType::ConfigReloaded, Severity::Info, "old", NOW.minus(DAY * 2).plus(Duration::from_millis(i)))).collect();
        core.store.insert_events(&old).expect("old events");
        let run = core.trim_old_events(NOW, &mut |_| false).expect("retention").expect("on");
        assert_eq!((run.removed, run.first_id, run.before_id, run.interrupted), (1000, 1001, 2501, true));
        assert!(run.event(NOW).description.starts_with("retention (interrupted): 1000 event(s)"));
        assert_eq!(core.store.verify_event_chain().expect("verify").problem, None);

        let dir = tempfile::tempdir().expect("tempdir");
        let core = crate::core::test_core(dir.path(), "retention: {\n  events_days: 0\n}\n");
        core.store.insert_events(&old).expect("old events");
        assert_eq!(core.trim_old_events(NOW, &mut |_| true).expect("retention"), None);
        assert_eq!(core.store.verify_event_chain().expect("verify").verified, 2500);
    }
}
