//! The path every finding takes: detection → incident → playbooks. A
//! finding that opens an incident runs the playbooks that match it, once;
//! a finding that attaches to an open incident only raises its count (the
//! response already ran). Escalations run for incidents still open.

use super::playbooks::PlaybookIncident;
use super::{Core, Result};
use crate::core::incidents::{Incident, Reported};
use crate::model::{Finding, Millis};
use std::time::Duration;

impl Core {
    /// Reports `f` (see `report_finding`) and, when it opened a new
    /// incident, runs its playbooks. Playbook failures are recorded as
    /// their `playbook_action` events and do not undo the incident.
    pub async fn respond_to_finding(&self, f: Finding, now: Millis) -> Result<Reported> {
        let incident = PlaybookIncident { id: 0, incident_type: f.incident_type, severity: f.severity, subject: f.subject.clone(), title: f.title.clone(), details: f.details.clone() };
        // A rule set to "count" (the dictionary rule's other mode) opens
        // or attaches its incident and runs no playbook.
        let count_only = f.details.get("action").and_then(|a| a.as_str()) == Some("count");
        let reported = self.report_finding(f, now)?;
        if reported.created && !count_only {
            let incident = PlaybookIncident { id: reported.incident_id, ..incident };
            if let Err(e) = self.run_playbooks(&incident, now).await {
                tracing::error!(incident = reported.incident_id, error = %e, "the playbooks of a new incident failed");
            }
        }
        Ok(reported)
    }

    /// Runs the escalations due now for every incident not yet resolved;
    /// returns how many ran. Playbooks match as when the incident opened:
    /// by its type, its severity now, and the rule kept on it.
    pub async fn run_due_escalations(&self, now: Millis) -> Result<usize> {
        let open = self.unresolved_incidents_older_than(Duration::ZERO, now)?;
        if open.is_empty() {
            return Ok(0);
        }
        let list: Vec<(PlaybookIncident, Millis)> = open.iter().map(|i| (playbook_incident(i), i.created_at)).collect();
        Ok(self.run_escalations(&list, now).await?.len())
    }
}

/// A stored incident as the playbooks see it: of the finding's details only
/// the rule is kept, and it is all a playbook's `when` reads of them.
fn playbook_incident(i: &Incident) -> PlaybookIncident {
    let details = match &i.rule {
        Some(rule) => serde_json::json!({ "rule": rule }),
        None => serde_json::json!({}),
    };
    PlaybookIncident { id: i.id, incident_type: i.incident_type, severity: i.severity, subject: i.subject.clone(), title: i.title.clone(), details }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::accounts::Actor;
    use crate::model::{EventType, IncidentSeverity, IncidentType, Secret, Subject, TimelineKind};
    use crate::store::events::EventFilter;

    /// A brute-force finding against alice under the built-in playbooks:
    /// the incident opens, its playbook locks the account once (on the
    /// timeline and as an event), a second finding only attaches; a
    /// critical incident still open after an hour is escalated once.
    #[test]
    fn a_finding_opens_an_incident_and_its_playbook_runs_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = crate::core::test_core(dir.path(), "");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let t0 = Millis(1_764_072_000_000);
        let alice = rt.block_on(core.add_user("alice", Some("alice@example.org"), &Secret::new("Correct-Horse-Battery-9".into()), &[], &Actor::Cli("t".into()), t0)).expect("user");
        let finding = |severity, at: Millis| Finding {
            incident_type: IncidentType::BruteForceAccount,
            subject: Subject::Account { user_id: Some(alice.id), username: "alice".into() },
            severity,
            title: "5 failed logins for alice in 10m".into(),
            description: "test".into(),
            event_ids: vec![],
            first_event_at: at,
            details: serde_json::json!({ "rule": "brute_force_account" }),
        };
        let events = |t: EventType| core.events(&EventFilter { event_type: Some(t), limit: 100, ..Default::default() }).expect("events");

        let first = rt.block_on(core.respond_to_finding(finding(IncidentSeverity::High, t0), t0)).expect("respond");
        assert!(first.created);
        let locked = core.find_user("alice").expect("alice");
        assert!(locked.is_locked(t0.plus(Duration::from_secs(60))), "the built-in playbook locks for 15 minutes");
        assert_eq!(events(EventType::AccountLocked).len(), 1);
        let action = events(EventType::PlaybookAction);
        assert_eq!(action.len(), 1, "{action:#?}");
        assert_eq!((action[0].details["action"].as_str(), action[0].details["on_timeline"].as_bool()), (Some("lock"), Some(true)));
        let view = core.show_incident(first.incident_id).expect("show");
        assert!(view.timeline.iter().any(|e| e.kind == TimelineKind::Action && e.actor == "playbook:lock-brute-force-account"), "{:#?}", view.timeline);

        let t1 = t0.plus(Duration::from_secs(120));
        let again = rt.block_on(core.respond_to_finding(finding(IncidentSeverity::Critical, t1), t1)).expect("respond");
        assert_eq!((again.incident_id, again.created), (first.incident_id, false));
        assert_eq!(events(EventType::AccountLocked).len(), 1, "an attaching finding runs no playbook");

        // Now critical (raised by the second finding) and open: the
        // built-in escalation runs after an hour, once.
        assert_eq!(rt.block_on(core.run_due_escalations(t0.plus(Duration::from_secs(1800)))).expect("early"), 0);
        let t2 = t0.plus(Duration::from_secs(3700));
        assert_eq!(rt.block_on(core.run_due_escalations(t2)).expect("due"), 1);
        assert_eq!(rt.block_on(core.run_due_escalations(t2.plus(Duration::from_secs(60)))).expect("once"), 0);
        let escalated = events(EventType::PlaybookAction).into_iter().filter(|e| e.details["playbook"] == "escalate-critical").count();
        assert!(escalated >= 1, "the escalation is recorded");
    }

    /// A playbook whose `when` names a rule escalates the incidents that
    /// rule opened (the rule is kept on the incident), and not those of
    /// another rule with the same incident type; nothing before it is due.
    #[test]
    fn a_when_rule_playbook_escalates_only_its_rules_incidents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = "playbooks: [\n  {\n    name: slow-escalate\n    when: { rule: \"slow_brute_force\" }\n    actions: [\n      {\n        escalate: { after: \"1h\", raise_severity: true }\n      }\n    ]\n  }\n]\n";
        let core = crate::core::test_core(dir.path(), config);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let t0 = Millis(1_764_072_000_000);
        let finding = |rule: &str, ip: &str| Finding {
            incident_type: IncidentType::BruteForceIp,
            subject: Subject::Address(ip.into()),
            severity: IncidentSeverity::Medium,
            title: format!("{rule} from {ip}"),
            description: "test".into(),
            event_ids: vec![],
            first_event_at: t0,
            details: serde_json::json!({ "rule": rule, "threshold": 30 }),
        };
        let slow = rt.block_on(core.respond_to_finding(finding("slow_brute_force", "192.0.2.7"), t0)).expect("respond");
        let fast = rt.block_on(core.respond_to_finding(finding("brute_force_ip", "192.0.2.8"), t0)).expect("respond");
        assert!(slow.created && fast.created);
        let incident = |id| core.incident(id).expect("read").expect("incident");
        assert_eq!(incident(slow.incident_id).rule.as_deref(), Some("slow_brute_force"));
        assert_eq!(incident(fast.incident_id).rule.as_deref(), Some("brute_force_ip"));

        assert_eq!(rt.block_on(core.run_due_escalations(t0.plus(Duration::from_secs(3599)))).expect("early"), 0);
        assert_eq!(rt.block_on(core.run_due_escalations(t0.plus(Duration::from_secs(3600)))).expect("due"), 1);
        let (slow_now, fast_now) = (incident(slow.incident_id), incident(fast.incident_id));
        assert_eq!((slow_now.severity, slow_now.escalations), (IncidentSeverity::High, 1));
        assert_eq!((fast_now.severity, fast_now.escalations), (IncidentSeverity::Medium, 0));
        let escalated: Vec<i64> = core
            .show_incident(slow.incident_id)
            .expect("show")
            .timeline
            .iter()
            .filter(|e| e.kind == TimelineKind::Escalated && e.actor == "playbook:slow-escalate")
            .map(|e| e.incident_id)
            .collect();
        assert_eq!(escalated, [slow.incident_id]);
        assert!(core.show_incident(fast.incident_id).expect("show").timeline.iter().all(|e| e.kind != TimelineKind::Escalated && e.kind != TimelineKind::Action));
    }
}
