//! Response playbooks: which actions an incident calls for (`plan`, pure),
//! taking them (`Core::run_playbooks`), and escalating incidents that stay
//! open (`due_escalations`, pure; `Core::run_escalations`). Every action,
//! whatever its outcome (done, dry run, skipped, failed, not available,
//! scheduled), is a `playbook_action` event naming the playbook, the
//! action, the incident, `dry_run`, the outcome and the parameters.

use super::accounts::Actor;
use super::webhooks::{self, Notice};
use super::{Core, Result};
use crate::config::playbooks::{show_duration, Action, Escalation, NotifyTarget, Playbook};
use crate::model::{Event, EventType, IncidentSeverity, IncidentType, Millis, Severity, Subject, User};
use crate::store::webhooks::NewDelivery;

/// What the playbooks need to know of an incident (the incident engine
/// builds it from its own row).
#[derive(Debug, Clone, PartialEq)]
pub struct PlaybookIncident {
    pub id: i64,
    pub incident_type: IncidentType,
    pub severity: IncidentSeverity,
    pub subject: Subject,
    /// One line, attacker text already escaped.
    pub title: String,
    /// The finding's details (`rule`, thresholds, counts).
    pub details: serde_json::Value,
}

/// One action of one matching playbook.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAction {
    pub playbook: String,
    /// The action's position in its playbook.
    pub index: usize,
    pub action: Action,
    pub dry_run: bool,
}

/// The actions of every playbook whose `when` holds, playbooks in config
/// order, actions in playbook order.
pub fn plan(playbooks: &[Playbook], incident_type: IncidentType, severity: IncidentSeverity, details: &serde_json::Value) -> Vec<PlannedAction> {
    playbooks
        .iter()
        .filter(|p| p.when.matches(incident_type, severity, details))
        .flat_map(|p| p.actions.iter().enumerate().map(|(index, action)| PlannedAction { playbook: p.name.clone(), index, action: action.clone(), dry_run: p.dry_run }))
        .collect()
}

/// How one action went.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    /// Done; what was done.
    Done(String),
    /// A dry-run playbook: what would have been done. Nothing was.
    DryRun(String),
    /// Nothing to do, and why (no account to lock, already locked longer).
    Skipped(String),
    Failed(String),
    /// The primitive this action needs is not in this build yet.
    NotAvailable { action: &'static str },
    /// An escalation, checked from this time on.
    Scheduled { at: Millis },
}

impl ActionOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            ActionOutcome::Done(_) => "done",
            ActionOutcome::DryRun(_) => "dry_run",
            ActionOutcome::Skipped(_) => "skipped",
            ActionOutcome::Failed(_) => "failed",
            ActionOutcome::NotAvailable { .. } => "not_available",
            ActionOutcome::Scheduled { .. } => "scheduled",
        }
    }

    fn text(&self) -> String {
        match self {
            ActionOutcome::Done(t) | ActionOutcome::DryRun(t) | ActionOutcome::Skipped(t) | ActionOutcome::Failed(t) => t.clone(),
            ActionOutcome::NotAvailable { action } => format!("{action} is not available in this build"),
            ActionOutcome::Scheduled { at } => format!("escalation due at {}", at.rfc3339()),
        }
    }
}

/// One action taken (or not) for an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionReport {
    pub playbook: String,
    /// The action's name (`lock`, `notify`, ... ; `escalate.notify` for an
    /// escalation's parts).
    pub action: &'static str,
    pub dry_run: bool,
    pub outcome: ActionOutcome,
}

/// The action's parameters, for the event.
fn parameters(action: &Action) -> serde_json::Value {
    use serde_json::json;
    let targets = |t: &[NotifyTarget]| t.iter().map(NotifyTarget::describe).collect::<Vec<_>>();
    match action {
        Action::Lock { duration } => json!({ "for": show_duration(*duration) }),
        Action::Block { duration, ipv4_bits, ipv6_bits } => json!({ "for": duration.map(show_duration), "ipv4_bits": ipv4_bits, "ipv6_bits": ipv6_bits }),
        Action::RevokeSessions | Action::ForcePasswordReset => json!({}),
        Action::RequireLevel(l) => json!({ "level": l }),
        Action::Notify(t) => json!({ "to": targets(t) }),
        Action::Webhook(w) => json!({ "webhook": w }),
        Action::Escalate(e) => json!({ "after": show_duration(e.after), "raise_severity": e.raise_severity, "notify": targets(&e.notify), "webhook": e.webhook }),
    }
}

/// What an action would do, for a dry run.
fn would(action: &Action, incident: &PlaybookIncident) -> String {
    let subject = describe_subject(&incident.subject);
    match action {
        Action::Lock { duration } => format!("would lock {subject} for {}", show_duration(*duration)),
        Action::Block { duration, .. } => format!("would block {subject}{}", duration.map(|d| format!(" for {}", show_duration(d))).unwrap_or_default()),
        Action::RevokeSessions => format!("would revoke the sessions of {subject}"),
        Action::ForcePasswordReset => format!("would make {subject} change the password at the next login"),
        Action::RequireLevel(l) => format!("would make {subject} require factor level {l}"),
        Action::Notify(t) => format!("would mail {}", t.iter().map(NotifyTarget::describe).collect::<Vec<_>>().join(", ")),
        Action::Webhook(w) => format!("would post to webhook {w}"),
        Action::Escalate(e) => format!("would escalate if still open after {}", show_duration(e.after)),
    }
}

fn describe_subject(s: &Subject) -> String {
    match s {
        Subject::Account { username, .. } => format!("account {username}"),
        Subject::Address(a) => format!("address {a}"),
        Subject::Network(n) => format!("network {n}"),
        Subject::Gate => "the gate".into(),
    }
}

/// One step up (critical stays critical).
pub fn raised(s: IncidentSeverity) -> IncidentSeverity {
    match s {
        IncidentSeverity::Low => IncidentSeverity::Medium,
        IncidentSeverity::Medium => IncidentSeverity::High,
        IncidentSeverity::High | IncidentSeverity::Critical => IncidentSeverity::Critical,
    }
}

/// An escalation whose time has come.
#[derive(Debug, Clone, PartialEq)]
pub struct DueEscalation {
    pub incident: PlaybookIncident,
    pub playbook: String,
    pub index: usize,
    pub escalation: Escalation,
    pub dry_run: bool,
    pub due_at: Millis,
}

/// The escalations due at `now` for open incidents (each with its creation
/// time), by today's playbooks and each incident's current severity. Pure:
/// whether one already ran is the store's to say (`run_escalations`).
pub fn due_escalations(playbooks: &[Playbook], open: &[(PlaybookIncident, Millis)], now: Millis) -> Vec<DueEscalation> {
    let mut out = Vec::new();
    for (incident, created_at) in open {
        for p in plan(playbooks, incident.incident_type, incident.severity, &incident.details) {
            if let Action::Escalate(e) = p.action {
                let due_at = created_at.plus(e.after);
                if due_at <= now {
                    out.push(DueEscalation { incident: incident.clone(), playbook: p.playbook, index: p.index, escalation: e, dry_run: p.dry_run, due_at });
                }
            }
        }
    }
    out
}

/// What one escalation did.
#[derive(Debug, Clone, PartialEq)]
pub struct EscalationReport {
    pub incident_id: i64,
    pub playbook: String,
    pub dry_run: bool,
    /// The severity the incident should now have (`raise_severity`), for
    /// the incident engine to apply.
    pub raise_to: Option<IncidentSeverity>,
    pub actions: Vec<ActionReport>,
}

/// The group whose members `notify: sysops` mails.
pub const SYSOPS_GROUP: &str = "sysops";

impl Core {
    /// Runs every matching playbook for a newly opened incident, in order,
    /// and records each action as a `playbook_action` event. A failing
    /// action is recorded and the next one still runs.
    pub async fn run_playbooks(&self, incident: &PlaybookIncident, now: Millis) -> Result<Vec<ActionReport>> {
        let settings = self.settings();
        let mut reports: Vec<ActionReport> = Vec::new();
        for p in plan(&settings.playbooks, incident.incident_type, incident.severity, &incident.details) {
            let outcome = if p.dry_run {
                ActionOutcome::DryRun(would(&p.action, incident))
            } else {
                let so_far = reports.iter().filter(|r| r.playbook == p.playbook).map(|r| (r.action.to_owned(), r.outcome.as_str().to_owned())).collect::<Vec<_>>();
                self.take_action(&p, incident, &so_far, now).await
            };
            let report = ActionReport { playbook: p.playbook.clone(), action: p.action.name(), dry_run: p.dry_run, outcome };
            self.record_action(incident, &report, parameters(&p.action), now).await;
            reports.push(report);
        }
        Ok(reports)
    }

    async fn take_action(&self, p: &PlannedAction, incident: &PlaybookIncident, so_far: &[(String, String)], now: Millis) -> ActionOutcome {
        let result = match &p.action {
            Action::Lock { duration } => self.playbook_lock(&p.playbook, incident, *duration, now).await,
            Action::Block { duration, ipv4_bits, ipv6_bits } => match &incident.subject {
                Subject::Address(a) | Subject::Network(a) => self.playbook_block(&p.playbook, incident, a, *duration, *ipv4_bits, *ipv6_bits, now).await,
                other => Ok(ActionOutcome::Skipped(format!("nothing to block: the incident is about {}", describe_subject(other)))),
            },
            Action::RevokeSessions => match self.incident_account(incident) {
                Ok(Ok(user)) => {
                    let reason = format!("playbook {}: incident #{} ({})", p.playbook, incident.id, incident.incident_type);
                    match self.revoke_user_sessions(&user, &reason, &Actor::Playbook(p.playbook.clone()), Some(incident.id), now).await {
                        Ok(0) => Ok(ActionOutcome::Skipped(format!("{} has no open session", user.username))),
                        Ok(n) => Ok(ActionOutcome::Done(format!("{n} session(s) of {} ended", user.username))),
                        Err(e) => Err(e),
                    }
                }
                Ok(Err(skip)) => Ok(skip),
                Err(e) => Err(e),
            },
            Action::ForcePasswordReset => self.playbook_force_reset(incident),
            Action::RequireLevel(level) => self.playbook_require_level(incident, *level),
            Action::Notify(targets) => self.playbook_notify(&p.playbook, incident, targets, None, so_far, now),
            Action::Webhook(name) => self.playbook_webhook(&p.playbook, incident, name, "playbook_action", None, so_far, now),
            Action::Escalate(e) => Ok(ActionOutcome::Scheduled { at: now.plus(e.after) }),
        };
        result.unwrap_or_else(|e| ActionOutcome::Failed(e.to_string()))
    }

    /// The incident's account: `Ok(Err(skipped))` when it names none.
    fn incident_account(&self, incident: &PlaybookIncident) -> Result<std::result::Result<User, ActionOutcome>> {
        match &incident.subject {
            Subject::Account { user_id: Some(id), username } => match self.store.user_by_id(*id)? {
                Some(u) => Ok(Ok(u)),
                None => Ok(Err(ActionOutcome::Skipped(format!("account {username} (id {id}) no longer exists")))),
            },
            Subject::Account { user_id: None, username } => Ok(Err(ActionOutcome::Skipped(format!("no account is named {username}")))),
            other => Ok(Err(ActionOutcome::Skipped(format!("the incident is about {}, not an account", describe_subject(other))))),
        }
    }

    async fn playbook_lock(&self, playbook: &str, incident: &PlaybookIncident, duration: std::time::Duration, now: Millis) -> Result<ActionOutcome> {
        let user = match self.incident_account(incident)? {
            Ok(u) => u,
            Err(skip) => return Ok(skip),
        };
        // A rule's lock: bounded by `locks.max_duration`, and the owner
        // still gets in from a known address with every factor.
        let reason = format!("playbook {playbook}: incident #{}", incident.id);
        Ok(match self.lock_account_by_rule(&user, duration, &reason, Some(incident.id), now).await? {
            super::locks::LockOutcome::Locked { until, bounded } => {
                let cut = if bounded { " (cut to locks.max_duration)" } else { "" };
                ActionOutcome::Done(format!("locked {} until {}{cut}", user.username, until.rfc3339()))
            }
            super::locks::LockOutcome::AlreadyLocked { source, until } => {
                ActionOutcome::Skipped(format!("{} is already locked until {} ({} lock)", user.username, until.rfc3339(), source.as_str()))
            }
        })
    }

    /// Blocks the incident's address or network (widened to `ipv4_bits` /
    /// `ipv6_bits` when the action says so), for the action's duration or
    /// the growing default.
    #[allow(clippy::too_many_arguments)]
    async fn playbook_block(&self, playbook: &str, incident: &PlaybookIncident, subject: &str, duration: Option<std::time::Duration>, ipv4_bits: Option<u8>, ipv6_bits: Option<u8>, now: Millis) -> Result<ActionOutcome> {
        use super::blocks::{BlockFor, BlockOutcome, BlockRequest, BlockSource};
        let net = crate::model::IpNetwork::parse(subject).map_err(super::Error::Invalid)?;
        let widen = match net.addr() {
            std::net::IpAddr::V4(_) => ipv4_bits,
            std::net::IpAddr::V6(_) => ipv6_bits,
        };
        let target = match widen.filter(|b| *b < net.bits()) {
            Some(bits) => crate::model::IpNetwork::containing(net.addr(), bits).to_string(),
            None => subject.to_owned(),
        };
        let reason = format!("playbook {playbook}: incident #{} ({})", incident.id, incident.incident_type);
        let req = BlockRequest {
            target: &target,
            duration: duration.map_or(BlockFor::Grown, BlockFor::For),
            reason: &reason,
            incident_id: Some(incident.id),
            source: BlockSource::Rule,
        };
        Ok(match self.block_address(&req, &Actor::Playbook(playbook.to_owned()), now).await? {
            BlockOutcome::Blocked(b) => ActionOutcome::Done(match b.expires_at {
                Some(t) => format!("blocked {} until {} (earlier blocks: {})", b.network, t.rfc3339(), b.repeat),
                None => format!("blocked {} until lifted", b.network),
            }),
            BlockOutcome::NeverBlock { network, listed } => ActionOutcome::Skipped(format!("{network} is on blocks.never_block ({listed})")),
        })
    }

    fn playbook_force_reset(&self, incident: &PlaybookIncident) -> Result<ActionOutcome> {
        let user = match self.incident_account(incident)? {
            Ok(u) => u,
            Err(skip) => return Ok(skip),
        };
        if user.must_reset_password {
            return Ok(ActionOutcome::Skipped(format!("{} must already change the password", user.username)));
        }
        self.store.set_must_reset(user.id, true)?;
        Ok(ActionOutcome::Done(format!("{} must change the password at the next login", user.username)))
    }

    fn playbook_require_level(&self, incident: &PlaybookIncident, level: u8) -> Result<ActionOutcome> {
        let user = match self.incident_account(incident)? {
            Ok(u) => u,
            Err(skip) => return Ok(skip),
        };
        if self.store.raise_imposed_level(user.id, level)? {
            Ok(ActionOutcome::Done(format!("{} now requires factor level {level}", user.username)))
        } else {
            Ok(ActionOutcome::Skipped(format!("{} already has level {} imposed", user.username, user.imposed_level)))
        }
    }

    /// Mails each target once: sysops and addresses the incident alert,
    /// the account's owner a notice. `note` says why (an escalation).
    fn playbook_notify(&self, playbook: &str, incident: &PlaybookIncident, targets: &[NotifyTarget], note: Option<&str>, so_far: &[(String, String)], now: Millis) -> Result<ActionOutcome> {
        let s = self.settings();
        let mut alert_to: Vec<String> = Vec::new();
        let mut owner: Option<(User, String)> = None;
        let mut missing = Vec::new();
        for t in targets {
            match t {
                NotifyTarget::Sysops => {
                    let members: Vec<String> = self.store.list_users()?.into_iter().filter(|u| u.groups.iter().any(|g| g.eq_ignore_ascii_case(SYSOPS_GROUP))).filter_map(|u| u.email).collect();
                    if members.is_empty() {
                        missing.push("the sysops group has no member with an email address".to_owned());
                    }
                    alert_to.extend(members);
                }
                NotifyTarget::Address(a) => alert_to.push(a.clone()),
                NotifyTarget::User => match self.incident_account(incident)? {
                    Ok(u) => match u.email.clone() {
                        Some(e) => owner = Some((u, e)),
                        None => missing.push(format!("{} has no email address", u.username)),
                    },
                    Err(skip) => missing.push(skip.text()),
                },
            }
        }
        alert_to.sort_by_key(|a| a.to_lowercase());
        alert_to.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        let actions = if so_far.is_empty() { "(nothing yet)".to_owned() } else { so_far.iter().map(|(a, o)| format!("- {a}: {o}")).collect::<Vec<_>>().join("\n") };
        let id = incident.id.to_string();
        let subject = incident.subject.key();
        let mut sent = 0;
        for to in &alert_to {
            let values = [
                ("issuer", s.mfa.issuer.as_str()),
                ("incident_id", id.as_str()),
                ("title", incident.title.as_str()),
                ("incident_type", incident.incident_type.as_str()),
                ("severity", incident.severity.as_str()),
                ("subject", subject.as_str()),
                ("playbook", playbook),
                ("note", note.unwrap_or("")),
                ("actions", actions.as_str()),
            ];
            self.queue_mail("playbook_alert", to, &values, &[], now)?;
            sent += 1;
        }
        if let Some((user, to)) = &owner {
            let time = now.rfc3339();
            let values = [("username", user.username.as_str()), ("issuer", s.mfa.issuer.as_str()), ("time", time.as_str()), ("title", incident.title.as_str()), ("actions", actions.as_str())];
            self.queue_mail("security_notice", to, &values, &[], now)?;
            sent += 1;
        }
        if sent > 0 {
            self.mail_queued.notify_one();
        }
        let missing = if missing.is_empty() { String::new() } else { format!(" ({})", missing.join("; ")) };
        Ok(match sent {
            0 => ActionOutcome::Skipped(format!("no one to mail{missing}")),
            n => ActionOutcome::Done(format!("{n} mail{} queued{missing}", if n == 1 { "" } else { "s" })),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn playbook_webhook(&self, playbook: &str, incident: &PlaybookIncident, name: &str, event: &str, note: Option<&str>, so_far: &[(String, String)], now: Millis) -> Result<ActionOutcome> {
        let s = self.settings();
        let Some(hook) = s.webhooks.get(name) else {
            return Ok(ActionOutcome::Failed(webhooks::unknown_webhook(name, &s.webhooks).to_string()));
        };
        let notice = Notice::Incident { event, incident, playbook, note, actions: so_far };
        let body = webhooks::body(hook.preset, &notice, &s.mfa.issuer, &webhooks::new_delivery_id()?, now);
        let id = self.queue_webhook(&NewDelivery { webhook: name, event, incident_id: Some(incident.id), playbook: Some(playbook), body: &body }, &[], now)?;
        Ok(ActionOutcome::Done(format!("delivery {id} to webhook {name} queued")))
    }

    /// The `playbook_action` event of one action.
    async fn record_action(&self, incident: &PlaybookIncident, r: &ActionReport, parameters: serde_json::Value, now: Millis) {
        let severity = match r.outcome {
            ActionOutcome::Done(_) => Severity::Medium,
            ActionOutcome::Failed(_) => Severity::High,
            ActionOutcome::NotAvailable { .. } => Severity::Low,
            _ => Severity::Info,
        };
        let (user_id, username, ip) = match &incident.subject {
            Subject::Account { user_id, username } => (*user_id, Some(username.as_str()), None),
            Subject::Address(a) | Subject::Network(a) => (None, None, Some(a.as_str())),
            Subject::Gate => (None, None, None),
        };
        let text = r.outcome.text();
        let description = format!("playbook {}: {} {} for incident #{}: {text}", r.playbook, r.action, r.outcome.as_str().replace('_', " "), incident.id);
        // One timeline line per action (dry runs and refusals too); an
        // incident that is not in the store (gone, or a test's) has none.
        let on_timeline = match self.incident_timeline_add(
            incident.id,
            crate::model::TimelineKind::Action,
            &format!("playbook:{}", r.playbook),
            &description,
            serde_json::json!({ "action": r.action, "outcome": r.outcome.as_str(), "dry_run": r.dry_run, "parameters": parameters.clone() }),
            now,
        ) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(incident = incident.id, error = %e, "a playbook action could not go on the incident's timeline");
                false
            }
        };
        let e = Event::new(EventType::PlaybookAction, severity, description, now)
            .user(user_id, username)
            .ip(ip)
            .detail("playbook", r.playbook.clone())
            .detail("action", r.action)
            .detail("incident_id", incident.id)
            .detail("incident_type", incident.incident_type.as_str())
            .detail("dry_run", r.dry_run)
            .detail("outcome", r.outcome.as_str())
            .detail("result", text)
            .detail("parameters", parameters)
            .detail("on_timeline", on_timeline);
        self.record(e).await;
    }

    /// Runs the escalations due at `now` for these open incidents (each
    /// with its creation time), each once per incident: it is claimed in
    /// the store first, so a second check (or another process) skips it.
    /// The daemon calls this periodically.
    pub async fn run_escalations(&self, open: &[(PlaybookIncident, Millis)], now: Millis) -> Result<Vec<EscalationReport>> {
        let settings = self.settings();
        let mut out = Vec::new();
        for due in due_escalations(&settings.playbooks, open, now) {
            if !self.store.claim_escalation(due.incident.id, &due.playbook, due.index, now)? {
                continue;
            }
            let e = &due.escalation;
            let after = show_duration(e.after);
            let mut actions = Vec::new();
            let mut params = parameters(&Action::Escalate(e.clone()));
            if let serde_json::Value::Object(m) = &mut params {
                m.insert("due_at".into(), due.due_at.rfc3339().into());
            }
            let raise_to = (e.raise_severity && !due.dry_run).then(|| raised(due.incident.severity));
            if due.dry_run {
                let report = ActionReport { playbook: due.playbook.clone(), action: "escalate", dry_run: true, outcome: ActionOutcome::DryRun(format!("would escalate: still open after {after}")) };
                self.record_action(&due.incident, &report, params, now).await;
                actions.push(report);
            } else {
                let note = format!("escalated: still open after {after}");
                if let Some(to) = raise_to {
                    let outcome = match self.raise_incident_severity(due.incident.id, to, &note, &format!("playbook:{}", due.playbook), now) {
                        Ok(i) => ActionOutcome::Done(format!("severity now {}", i.severity)),
                        Err(e) => ActionOutcome::Failed(format!("raising the severity: {e}")),
                    };
                    let report = ActionReport { playbook: due.playbook.clone(), action: "escalate.raise_severity", dry_run: false, outcome };
                    let mut p = params.clone();
                    if let serde_json::Value::Object(m) = &mut p {
                        m.insert("to".into(), to.as_str().into());
                    }
                    self.record_action(&due.incident, &report, p, now).await;
                    actions.push(report);
                }
                let so_far: Vec<(String, String)> = Vec::new();
                if !e.notify.is_empty() {
                    let outcome = self.playbook_notify(&due.playbook, &due.incident, &e.notify, Some(&note), &so_far, now).unwrap_or_else(|err| ActionOutcome::Failed(err.to_string()));
                    let report = ActionReport { playbook: due.playbook.clone(), action: "escalate.notify", dry_run: false, outcome };
                    self.record_action(&due.incident, &report, params.clone(), now).await;
                    actions.push(report);
                }
                if let Some(w) = &e.webhook {
                    let outcome = self.playbook_webhook(&due.playbook, &due.incident, w, "escalation", Some(&note), &so_far, now).unwrap_or_else(|err| ActionOutcome::Failed(err.to_string()));
                    let report = ActionReport { playbook: due.playbook.clone(), action: "escalate.webhook", dry_run: false, outcome };
                    self.record_action(&due.incident, &report, params.clone(), now).await;
                    actions.push(report);
                }
            }
            out.push(EscalationReport { incident_id: due.incident.id, playbook: due.playbook, dry_run: due.dry_run, raise_to, actions });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::playbooks::When;
    use crate::model::Secret;
    use crate::store::events::EventFilter;
    use std::time::Duration;
    use IncidentSeverity::*;
    use IncidentType::*;

    fn book(name: &str, types: &[IncidentType], at_least: Option<IncidentSeverity>, dry_run: bool, actions: Vec<Action>) -> Playbook {
        Playbook { name: name.into(), when: When { incident_types: types.to_vec(), severity_at_least: at_least, rules: vec![] }, dry_run, actions }
    }

    fn lock(mins: u64) -> Action {
        Action::Lock { duration: Duration::from_secs(mins * 60) }
    }

    fn escalate(mins: u64) -> Action {
        Action::Escalate(Escalation { after: Duration::from_secs(mins * 60), raise_severity: true, notify: vec![NotifyTarget::Sysops], webhook: None })
    }

    #[test]
    fn plan_takes_every_matching_playbook_in_order() {
        let books = vec![
            book("lock", &[BruteForceAccount], None, false, vec![lock(15), Action::Notify(vec![NotifyTarget::Sysops])]),
            book("block", &[BruteForceIp, PasswordSpraying], Some(Medium), true, vec![Action::Block { duration: None, ipv4_bits: None, ipv6_bits: None }]),
            book("high", &[], Some(High), false, vec![escalate(60)]),
        ];
        let none = serde_json::json!({});
        let names = |t, s| plan(&books, t, s, &none).into_iter().map(|p| (p.playbook, p.index, p.action.name(), p.dry_run)).collect::<Vec<_>>();
        type Row<'a> = (&'a str, usize, &'static str, bool);
        let own = |v: &[Row]| v.iter().map(|(a, i, n, d)| (a.to_string(), *i, *n, *d)).collect::<Vec<_>>();
        let cases: &[(IncidentType, IncidentSeverity, &[Row])] = &[
            (BruteForceAccount, Low, &[("lock", 0, "lock", false), ("lock", 1, "notify", false)]),
            (BruteForceAccount, Critical, &[("lock", 0, "lock", false), ("lock", 1, "notify", false), ("high", 0, "escalate", false)]),
            (BruteForceIp, Low, &[]),
            (BruteForceIp, Medium, &[("block", 0, "block", true)]),
            (PasswordSpraying, High, &[("block", 0, "block", true), ("high", 0, "escalate", false)]),
            (Manual, High, &[("high", 0, "escalate", false)]),
            (InjectionAttempt, Medium, &[]),
        ];
        for (t, s, want) in cases {
            assert_eq!(names(*t, *s), own(want), "{t} {s}");
        }
        assert!(plan(&[], BruteForceAccount, Critical, &none).is_empty());
    }

    #[test]
    fn escalations_fall_due_after_their_time() {
        let books = vec![book("p", &[BruteForceAccount], None, false, vec![lock(15), escalate(60)]), book("dry", &[], Some(Critical), true, vec![escalate(30)])];
        let incident = |id, severity| PlaybookIncident { id, incident_type: BruteForceAccount, severity, subject: Subject::Gate, title: "t".into(), details: serde_json::json!({}) };
        let t0 = Millis(1_000_000_000);
        let open = vec![(incident(1, Medium), t0), (incident(2, Critical), t0.plus(Duration::from_secs(600)))];
        let due = |mins: u64| due_escalations(&books, &open, t0.plus(Duration::from_secs(mins * 60))).into_iter().map(|d| (d.incident.id, d.playbook, d.index, d.dry_run)).collect::<Vec<_>>();
        assert_eq!(due(29), []);
        assert_eq!(due(40), [(2, "dry".to_string(), 0, true)]);
        assert_eq!(due(60), [(1, "p".to_string(), 1, false), (2, "dry".to_string(), 0, true)]);
        assert_eq!(due(70), [(1, "p".to_string(), 1, false), (2, "p".to_string(), 1, false), (2, "dry".to_string(), 0, true)]);
        assert_eq!([raised(Low), raised(Medium), raised(High), raised(Critical)], [Medium, High, Critical, Critical]);
    }

    struct Fixture {
        core: Core,
        rt: tokio::runtime::Runtime,
        _dir: tempfile::TempDir,
    }

    fn fixture(playbooks: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!("kdf: {{\n  workers: 1\n}}\nwebhooks: {{\n  ops: {{\n    url: \"http://127.0.0.1:9/hook\"\n    secret: whsec-0123456789abcdef\n  }}\n}}\n{playbooks}");
        let core = crate::core::test_core(dir.path(), &text);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        Fixture { core, rt, _dir: dir }
    }

    impl Fixture {
        fn user(&self, name: &str, groups: &[&str]) -> User {
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            let email = format!("{name}@example.org");
            self.rt
                .block_on(self.core.add_user(name, Some(&email), &Secret::new("Correct-Horse-Battery-9".into()), &groups, &Actor::Cli("test".into()), Millis(1_000)))
                .expect("add user")
        }
        fn events(&self, t: EventType) -> Vec<crate::model::StoredEvent> {
            self.core.events(&EventFilter { event_type: Some(t), limit: 100, ..Default::default() }).expect("events")
        }
    }

    fn incident_about(u: &User, t: IncidentType, severity: IncidentSeverity) -> PlaybookIncident {
        PlaybookIncident { id: 41, incident_type: t, severity, subject: Subject::Account { user_id: Some(u.id), username: u.username.clone() }, title: format!("5 failed logins for {}", u.username), details: serde_json::json!({ "rule": "brute_force_account" }) }
    }

    const LOCK_AND_TELL: &str = "playbooks: [\n  {\n    name: lock-it\n    when: { incident_type: \"brute_force_account\" }\n    DRY\n    actions: [\n      { lock: \"30m\" }\n      { force_password_reset: true }\n      { require_level: 2 }\n      { notify: [\"sysops\", \"user\"] }\n      { webhook: \"ops\" }\n      { revoke_sessions: true }\n      {\n        escalate: { after: \"1h\", notify: \"sysops\" }\n      }\n    ]\n  }\n]\n";

    #[test]
    fn a_lock_playbook_locks_the_account_and_records_every_action() {
        let f = fixture(&LOCK_AND_TELL.replace("DRY", "dry_run: false"));
        let alice = f.user("alice", &[]);
        f.user("root", &["sysops"]);
        let now = Millis(1_764_072_000_000);
        let incident = incident_about(&alice, BruteForceAccount, High);
        let reports = f.rt.block_on(f.core.run_playbooks(&incident, now)).expect("run");
        let got: Vec<(&str, &str)> = reports.iter().map(|r| (r.action, r.outcome.as_str())).collect();
        assert_eq!(got, [("lock", "done"), ("force_password_reset", "done"), ("require_level", "done"), ("notify", "done"), ("webhook", "done"), ("revoke_sessions", "skipped"), ("escalate", "scheduled")]);
        assert_eq!(reports[3].outcome, ActionOutcome::Done("2 mails queued".into()));
        assert_eq!(reports[6].outcome, ActionOutcome::Scheduled { at: now.plus(Duration::from_secs(3600)) });

        let after = f.core.find_user("alice").expect("alice");
        assert_eq!(after.locked_until, Some(now.plus(Duration::from_secs(1800))));
        assert!(after.is_locked(now));
        assert!(after.must_reset_password);
        assert_eq!(after.imposed_level, 2);
        let locked = f.events(EventType::AccountLocked);
        assert_eq!(locked.len(), 1);
        assert_eq!((locked[0].details["actor"].as_str(), locked[0].details["source"].as_str()), (Some("rule"), Some("rule")), "{:#?}", locked[0]);
        assert!(locked[0].description.contains("lock-it") || locked[0].details.to_string().contains("playbook lock-it"), "{:#?}", locked[0]);

        let actions = f.events(EventType::PlaybookAction);
        assert_eq!(actions.len(), 7, "{actions:#?}");
        let lock = actions.iter().find(|e| e.details["action"] == "lock").expect("lock event");
        assert_eq!(lock.details["playbook"], "lock-it");
        assert_eq!(lock.details["incident_id"], 41);
        assert_eq!(lock.details["dry_run"], false);
        assert_eq!(lock.details["outcome"], "done");
        assert_eq!(lock.details["parameters"], serde_json::json!({ "for": "30m" }));
        assert_eq!(lock.user_id, Some(alice.id));
        let revoke = actions.iter().find(|e| e.details["action"] == "revoke_sessions").expect("revoke event");
        assert_eq!(revoke.details["outcome"], "skipped", "alice had no open session: {revoke:#?}");

        let mail = f.core.mail_queue(false).expect("mail");
        let mut templates: Vec<(&str, &str)> = mail.iter().map(|m| (m.template.as_str(), m.recipient.as_str())).collect();
        templates.sort();
        assert_eq!(templates, [("playbook_alert", "root@example.org"), ("security_notice", "alice@example.org")]);
        let hooks = f.core.webhook_queue(false).expect("webhooks");
        assert_eq!(hooks.len(), 1);
        assert_eq!((hooks[0].webhook.as_str(), hooks[0].event.as_str(), hooks[0].incident_id), ("ops", "playbook_action", Some(41)));
        let body: serde_json::Value = serde_json::from_str(&hooks[0].body).expect("json");
        assert_eq!(body["actions"], serde_json::json!([{ "action": "lock", "outcome": "done" }, { "action": "force_password_reset", "outcome": "done" }, { "action": "require_level", "outcome": "done" }, { "action": "notify", "outcome": "done" }]));

        // A second incident: the lock is extended, the rest is skipped.
        let reports = f.rt.block_on(f.core.run_playbooks(&incident, now.plus(Duration::from_secs(60)))).expect("run");
        let got: Vec<(&str, &str)> = reports.iter().take(3).map(|r| (r.action, r.outcome.as_str())).collect();
        assert_eq!(got, [("lock", "done"), ("force_password_reset", "skipped"), ("require_level", "skipped")]);
    }

    #[test]
    fn a_dry_run_records_what_it_would_do_and_does_nothing() {
        let f = fixture(&LOCK_AND_TELL.replace("DRY", "dry_run: true"));
        let alice = f.user("alice", &[]);
        f.user("root", &["sysops"]);
        let now = Millis(1_764_072_000_000);
        let reports = f.rt.block_on(f.core.run_playbooks(&incident_about(&alice, BruteForceAccount, High), now)).expect("run");
        assert_eq!(reports.len(), 7);
        assert!(reports.iter().all(|r| r.dry_run && r.outcome.as_str() == "dry_run"), "{reports:#?}");
        assert_eq!(reports[0].outcome, ActionOutcome::DryRun("would lock account alice for 30m".into()));

        let after = f.core.find_user("alice").expect("alice");
        assert!(!after.is_locked(now) && after.locked_until.is_none(), "not locked");
        assert!(!after.must_reset_password);
        assert_eq!(after.imposed_level, 1);
        assert!(f.events(EventType::AccountLocked).is_empty());
        assert!(f.core.mail_queue(true).expect("mail").is_empty(), "no mail");
        assert!(f.core.webhook_queue(true).expect("hooks").is_empty(), "no webhook");
        let actions = f.events(EventType::PlaybookAction);
        assert_eq!(actions.len(), 7);
        assert!(actions.iter().all(|e| e.details["dry_run"] == true && e.details["outcome"] == "dry_run"), "{actions:#?}");

        // Its escalation, when due, is recorded as a dry run too, once.
        let open = vec![(incident_about(&alice, BruteForceAccount, High), now)];
        let later = now.plus(Duration::from_secs(3600));
        let done = f.rt.block_on(f.core.run_escalations(&open, later)).expect("escalate");
        assert_eq!(done.len(), 1);
        assert!(done[0].dry_run && done[0].raise_to.is_none());
        assert!(f.rt.block_on(f.core.run_escalations(&open, later)).expect("again").is_empty());
        assert!(f.core.mail_queue(true).expect("mail").is_empty());
        assert_eq!(f.events(EventType::PlaybookAction).len(), 8);
    }

    #[test]
    fn actions_that_need_an_account_skip_other_subjects() {
        let f = fixture("playbooks: [\n  {\n    name: p\n    when: { severity_at_least: \"low\" }\n    actions: [\n      { lock: \"15m\" }\n      { block: true }\n      { notify: \"user\" }\n    ]\n  }\n]\n");
        let now = Millis(1_764_072_000_000);
        let cases = [
            (Subject::Address("192.0.2.7".into()), ["skipped", "done", "skipped"]),
            (Subject::Account { user_id: None, username: "ghost".into() }, ["skipped", "skipped", "skipped"]),
            (Subject::Gate, ["skipped", "skipped", "skipped"]),
        ];
        for (subject, want) in cases {
            let i = PlaybookIncident { id: 1, incident_type: Manual, severity: Low, subject: subject.clone(), title: "t".into(), details: serde_json::json!({}) };
            let got: Vec<&str> = f.rt.block_on(f.core.run_playbooks(&i, now)).expect("run").iter().map(|r| r.outcome.as_str()).collect();
            assert_eq!(got, want, "{subject:?}");
        }
        let blocked = f.events(EventType::PlaybookAction).into_iter().find(|e| e.details["action"] == "block" && e.details["outcome"] == "done").expect("block event");
        assert_eq!(blocked.ip.as_deref(), Some("192.0.2.7"));
        // Blocked for the growing default's first 30 minutes, by the rule.
        assert!(f.core.is_blocked("192.0.2.7".parse().unwrap(), now.plus(Duration::from_secs(1799))));
        assert!(!f.core.is_blocked("192.0.2.7".parse().unwrap(), now.plus(Duration::from_secs(1801))));
        assert!(!f.core.is_blocked("192.0.2.8".parse().unwrap(), now));
    }

    #[test]
    fn an_escalation_runs_once_and_notifies_again() {
        let f = fixture("playbooks: [\n  {\n    name: esc\n    when: { severity_at_least: \"high\" }\n    actions: [\n      {\n        escalate: { after: \"1h\", notify: \"sysops\", webhook: \"ops\" }\n      }\n    ]\n  }\n]\n");
        f.user("root", &["sysops"]);
        let t0 = Millis(1_764_072_000_000);
        let created = f.core.create_incident("t", High, "", &Actor::Cli("test".into()), t0).expect("incident");
        let i = PlaybookIncident { id: created.incident.id, incident_type: Manual, severity: High, subject: Subject::Gate, title: "t".into(), details: serde_json::json!({}) };
        let open = vec![(i, t0)];
        assert!(f.rt.block_on(f.core.run_escalations(&open, t0.plus(Duration::from_secs(3599)))).expect("early").is_empty());
        let done = f.rt.block_on(f.core.run_escalations(&open, t0.plus(Duration::from_secs(3600)))).expect("due");
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].raise_to, Some(Critical));
        let got: Vec<(&str, &str)> = done[0].actions.iter().map(|r| (r.action, r.outcome.as_str())).collect();
        assert_eq!(got, [("escalate.raise_severity", "done"), ("escalate.notify", "done"), ("escalate.webhook", "done")]);
        let now = f.core.incident(created.incident.id).expect("read").expect("incident");
        assert_eq!((now.severity, now.escalations), (Critical, 1));
        assert!(f.rt.block_on(f.core.run_escalations(&open, t0.plus(Duration::from_secs(7200)))).expect("again").is_empty(), "once per incident");
        // The new incident's own notice, then the escalation's.
        assert_eq!(f.core.mail_queue(false).expect("mail").len(), 2);
        let hooks = f.core.webhook_queue(false).expect("hooks");
        assert_eq!(hooks[0].event, "escalation");
    }
}
