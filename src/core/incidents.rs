//! Incidents: opened by a detection rule's finding (one not resolved per
//! rule and subject; later findings attach to it) or by hand; evidence
//! captured when one opens and kept unchanged; a timeline of what was
//! done; MTTD and MTTR from the stored times; a mail to the sysops through
//! the outbox, committed with the incident and its `incident_created` event.

use super::accounts::Actor;
use super::{Core, Error, Result};
use crate::model::{escape_control, Event, EventType, Finding, IncidentSeverity, IncidentStatus, IncidentType, Millis, Severity, Subject, TimelineKind};
use crate::store::incidents::{Attach, Change, NewEntry, NewIncident, Opened, QueuedMail};
use serde_json::{json, Value};
use std::time::Duration;

pub use crate::store::incidents::{priority_name, Incident, IncidentFilter, TimelineEntry, TriedAccount};

/// Longest title, description, note or resolution kept (characters).
pub const MAX_TITLE: usize = 200;
pub const MAX_TEXT: usize = 4000;
/// Longest assignee name.
pub const MAX_ASSIGNEE: usize = 64;
/// Longest rule name kept on an incident (the config's rule names are no
/// longer).
pub const MAX_RULE: usize = 64;
/// Event ids taken from one finding (the newest).
pub const MAX_FINDING_EVENTS: usize = 1000;
/// Events linked to one incident; later ones are counted, not linked.
pub const MAX_LINKED_EVENTS: i64 = 10_000;
/// Related events copied into the evidence (the newest).
pub const EVIDENCE_EVENTS: usize = 200;
/// An account's sessions copied into the evidence (the newest).
pub const EVIDENCE_SESSIONS: usize = 50;
/// Addresses whose history goes into the evidence, how far back, and how
/// much of each.
pub const EVIDENCE_ADDRESSES: usize = 8;
pub const ADDRESS_HISTORY: Duration = Duration::from_secs(7 * 86_400);
pub const ADDRESS_EVENTS: usize = 50;
const ADDRESS_SCAN: usize = 10_000;
const ADDRESS_ACCOUNTS: usize = 100;
/// Findings within this long of the newest `attached` entry add to it.
pub const ATTACH_COALESCE: Duration = Duration::from_secs(3600);
/// `attached` entries one incident's timeline holds at most.
pub const MAX_ATTACHED_ENTRIES: i64 = 100;
/// A finding's details kept on the timeline, in bytes of JSON.
const MAX_DETAILS: usize = 8 * 1024;
/// Incident mails sent at most per incident.
pub const MAX_RECIPIENTS: usize = 50;
/// Whose members are mailed when `incidents.notify` is empty.
pub const SYSOPS_GROUP: &str = "sysops";
/// The timeline's actor for what detection reports.
pub const DETECTION_ACTOR: &str = "detection";

/// What `report_finding` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reported {
    pub incident_id: i64,
    /// A new incident was opened (else the finding attached to one).
    pub created: bool,
}

/// What `create_incident` opened, and who was mailed.
#[derive(Clone, Debug)]
pub struct Created {
    pub incident: Incident,
    pub notified: Vec<String>,
}

/// One incident with everything known about it.
#[derive(Clone, Debug)]
pub struct IncidentView {
    pub incident: Incident,
    pub timeline: Vec<TimelineEntry>,
    /// The linked events' ids, oldest first.
    pub event_ids: Vec<i64>,
    pub evidence: Value,
}

/// MTTD and MTTR over the incidents resolved in a period.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResponseTimes {
    /// Incidents opened in the period.
    pub opened: i64,
    /// Incidents resolved in the period (the MTTD and MTTR are over these).
    pub resolved: usize,
    pub mttd_mean_ms: Option<i64>,
    pub mttd_median_ms: Option<i64>,
    pub mttr_mean_ms: Option<i64>,
    pub mttr_median_ms: Option<i64>,
}

/// Priority by severity: critical P1, high P2, medium P3, low P4.
pub fn default_priority(severity: IncidentSeverity) -> u8 {
    match severity {
        IncidentSeverity::Critical => 1,
        IncidentSeverity::High => 2,
        IncidentSeverity::Medium => 3,
        IncidentSeverity::Low => 4,
    }
}

/// Time to detect: from the first related event to the incident.
pub fn mttd_ms(i: &Incident) -> i64 {
    (i.created_at.0 - i.first_event_at.0).max(0)
}

/// Time to resolve: from the incident to its resolution.
pub fn mttr_ms(i: &Incident) -> Option<i64> {
    i.resolved_at.map(|r| (r.0 - i.created_at.0).max(0))
}

fn mean(v: &[i64]) -> Option<i64> {
    (!v.is_empty()).then(|| (v.iter().map(|x| *x as i128).sum::<i128>() / v.len() as i128) as i64)
}

fn median(v: &mut [i64]) -> Option<i64> {
    v.sort_unstable();
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some(((v[n / 2 - 1] as i128 + v[n / 2] as i128) / 2) as i64),
    }
}

/// MTTD and MTTR (mean and median, whole milliseconds rounded down) of
/// incidents given as (first_event_at, created_at, resolved_at).
pub fn response_times(times: &[(Millis, Millis, Millis)]) -> ResponseTimes {
    let mut detect: Vec<i64> = times.iter().map(|(first, created, _)| (created.0 - first.0).max(0)).collect();
    let mut resolve: Vec<i64> = times.iter().map(|(_, created, resolved)| (resolved.0 - created.0).max(0)).collect();
    ResponseTimes {
        opened: 0,
        resolved: times.len(),
        mttd_mean_ms: mean(&detect),
        mttd_median_ms: median(&mut detect),
        mttr_mean_ms: mean(&resolve),
        mttr_median_ms: median(&mut resolve),
    }
}

/// How a subject reads in a table, a mail or a timeline (attacker text
/// not yet escaped).
pub fn subject_text(s: &Subject) -> String {
    match s {
        Subject::Account { user_id: Some(id), username } => format!("account {username} (id {id})"),
        Subject::Account { user_id: None, username } => format!("username {username} (no such account)"),
        Subject::Address(a) => format!("address {a}"),
        Subject::Network(n) => format!("network {n}"),
        Subject::Gate => "the gate".to_owned(),
    }
}

/// The rule a finding names (`details.rule`), as its incident keeps it:
/// a playbook's `when.rule` is matched against it when the incident opens
/// and at every escalation. A name no playbook could give (empty, longer
/// than `MAX_RULE`, not a string) is not kept.
pub fn finding_rule(details: &Value) -> Option<&str> {
    details.get("rule").and_then(Value::as_str).filter(|r| !r.is_empty() && r.chars().count() <= MAX_RULE)
}

/// At most `max` characters; a cut is marked with `…`.
fn bounded(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn bounded_details(v: &Value) -> Value {
    if v.to_string().len() <= MAX_DETAILS {
        v.clone()
    } else {
        json!({ "omitted": format!("the rule's details were over {MAX_DETAILS} bytes") })
    }
}

/// Checks text a sysop typed: not blank, not too long.
fn required(text: &str, what: &str, max: usize) -> Result<String> {
    let t = text.trim();
    let is = if what.ends_with('s') { "are" } else { "is" };
    if t.is_empty() {
        return Err(Error::Invalid(format!("the {what} {is} empty")));
    }
    if t.chars().count() > max {
        return Err(Error::Invalid(format!("the {what} {is} longer than {max} characters")));
    }
    Ok(t.to_owned())
}

/// The user an event about this subject names.
fn stamp_subject(e: Event, s: &Subject) -> Event {
    match s {
        Subject::Account { user_id, username } => e.user(*user_id, Some(username)),
        _ => e,
    }
}

/// What opens an incident, from a finding or from a sysop.
struct Opening<'a> {
    title: String,
    incident_type: IncidentType,
    severity: IncidentSeverity,
    subject: &'a Subject,
    description: String,
    first_event_at: Millis,
    event_ids: &'a [i64],
    evidence: Value,
    /// The finding's details.
    rule: Value,
    /// The finding's rule name (`finding_rule`); `None` by hand.
    rule_name: Option<&'a str>,
    /// Who opened it, for the timeline and the event.
    actor: String,
    dedup: bool,
}

impl Core {
    /// The entry point of detection: opens an incident for the finding's
    /// rule and subject, or attaches the finding to the one not resolved
    /// (its new events linked and counted, the severity raised when the
    /// finding is more severe).
    pub fn report_finding(&self, f: Finding, now: Millis) -> Result<Reported> {
        let mut ids = f.event_ids.clone();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > MAX_FINDING_EVENTS {
            ids.drain(..ids.len() - MAX_FINDING_EVENTS);
        }
        let key = f.subject.key();
        let details = bounded_details(&f.details);
        let attach = Attach {
            event_ids: &ids,
            severity: f.severity,
            priority: default_priority(f.severity),
            actor: DETECTION_ACTOR,
            details: &details,
            coalesce_ms: ATTACH_COALESCE.as_millis() as i64,
            max_attached_entries: MAX_ATTACHED_ENTRIES,
            max_linked: MAX_LINKED_EVENTS,
            now,
        };
        // Another writer may open or resolve the incident in between; each
        // turn either attaches, opens, or sees what the other one did.
        for _ in 0..4 {
            if let Some(a) = self.store.attach_to_open_incident(f.incident_type, &key, &attach)? {
                return Ok(Reported { incident_id: a.incident_id, created: false });
            }
            let evidence = self.capture_evidence(&f.subject, &ids, &details, now)?;
            let opening = Opening {
                title: bounded(&f.title, MAX_TITLE),
                incident_type: f.incident_type,
                severity: f.severity,
                subject: &f.subject,
                description: bounded(&f.description, MAX_TEXT),
                first_event_at: f.first_event_at.min(now),
                event_ids: &ids,
                evidence,
                rule: details.clone(),
                rule_name: finding_rule(&f.details),
                actor: DETECTION_ACTOR.to_owned(),
                dedup: true,
            };
            if let (Opened::Created(id), _) = self.open_incident(opening, now)? {
                return Ok(Reported { incident_id: id, created: true });
            }
        }
        Err(Error::Conflict(format!("the incident for {} {} kept changing while it was being opened", f.incident_type, escape_control(&key))))
    }

    /// Opens an incident by hand (type `manual`, about the gate).
    pub fn create_incident(&self, title: &str, severity: IncidentSeverity, description: &str, actor: &Actor, now: Millis) -> Result<Created> {
        let title = required(title, "incident title", MAX_TITLE)?;
        let description = description.trim();
        if description.chars().count() > MAX_TEXT {
            return Err(Error::Invalid(format!("the description is longer than {MAX_TEXT} characters")));
        }
        let opening = Opening {
            title,
            incident_type: IncidentType::Manual,
            severity,
            subject: &Subject::Gate,
            description: description.to_owned(),
            first_event_at: now,
            event_ids: &[],
            evidence: json!({ "captured_at": now.rfc3339(), "events": [] }),
            rule: json!({}),
            rule_name: None,
            actor: actor.describe(),
            dedup: false,
        };
        let (opened, notified) = self.open_incident(opening, now)?;
        let Opened::Created(id) = opened else {
            return Err(Error::Conflict("a manual incident was refused as a duplicate".into()));
        };
        let incident = self.store.incident(id)?.ok_or_else(|| no_such(id))?;
        Ok(Created { incident, notified })
    }

    /// Who is mailed about a new incident: `incidents.notify`, else the
    /// `sysops` group's addresses.
    pub fn incident_recipients(&self) -> Result<Vec<String>> {
        let configured = self.settings().incidents.notify.clone();
        let mut list = if configured.is_empty() { self.store.group_emails(SYSOPS_GROUP)? } else { configured };
        let mut seen = std::collections::HashSet::new();
        list.retain(|a| seen.insert(a.to_lowercase()));
        list.truncate(MAX_RECIPIENTS);
        Ok(list)
    }

    /// Writes the incident, its `created` entry, its event and its mails
    /// in one transaction.
    fn open_incident(&self, o: Opening<'_>, now: Millis) -> Result<(Opened, Vec<String>)> {
        let recipients = self.incident_recipients()?;
        let priority = default_priority(o.severity);
        let key = o.subject.key();
        let subject = subject_text(o.subject);
        let text = match o.incident_type {
            IncidentType::Manual => format!("opened by hand: {}", o.title),
            IncidentType::SysopFactorLevel => format!("opened by a scan about {subject}: {}", o.title),
            t => format!("opened by the rule {t} about {subject}: {}", o.title),
        };
        let entry_details = json!({ "rule": o.rule, "events": o.event_ids.len(), "notified": recipients });
        let entry = NewEntry { kind: TimelineKind::Created, actor: &o.actor, text: &bounded(&text, MAX_TEXT), details: &entry_details };
        let new = NewIncident {
            title: &o.title,
            incident_type: o.incident_type,
            severity: o.severity,
            priority,
            subject: o.subject,
            rule: o.rule_name,
            description: &o.description,
            first_event_at: o.first_event_at,
            evidence: &o.evidence,
            now,
        };
        let issuer = self.settings().mfa.issuer.clone();
        let opened = self.store.create_incident(&new, o.dedup, o.event_ids, MAX_LINKED_EVENTS, &entry, |id| {
            let id_text = id.to_string();
            let (title, subject_shown) = (escape_control(&o.title), escape_control(&subject));
            let description = if o.description.is_empty() { String::new() } else { escape_control(&o.description) };
            let (events, first, created, prio) = (o.event_ids.len().to_string(), self.settings().clock.show_zoned(o.first_event_at), self.settings().clock.show_zoned(now), priority_name(priority));
            let values = [
                ("issuer", issuer.as_str()),
                ("id", id_text.as_str()),
                ("title", title.as_str()),
                ("type", o.incident_type.as_str()),
                ("severity", o.severity.as_str()),
                ("priority", prio.as_str()),
                ("subject", subject_shown.as_str()),
                ("events", events.as_str()),
                ("first_event", first.as_str()),
                ("created", created.as_str()),
                ("description", description.as_str()),
            ];
            let mut mails = Vec::with_capacity(recipients.len());
            for to in &recipients {
                match self.seal_mail("incident_created", to, &values) {
                    Ok((subject, body_sealed)) => mails.push(QueuedMail { recipient: to.clone(), subject, body_sealed, template: "incident_created" }),
                    Err(e) => tracing::warn!(error = %e, incident_id = id, "an incident mail could not be sealed"),
                }
            }
            let event = Event::new(EventType::IncidentCreated, o.severity.as_event_severity(), bounded(&format!("incident {id} opened: {}", o.title), MAX_TEXT), now)
                .detail("incident_id", id)
                .detail("incident_type", o.incident_type.as_str())
                .detail("subject", key.as_str())
                .detail("severity", o.severity.as_str())
                .detail("priority", prio.as_str())
                .detail("events", o.event_ids.len())
                .detail("mttd_ms", (now.0 - o.first_event_at.0).max(0))
                .detail("rule", o.rule.clone())
                .detail("notified", mails.len())
                .detail("actor", o.actor.as_str());
            (mails, vec![stamp_subject(event, o.subject)])
        })?;
        if let Opened::Created(id) = opened {
            if !recipients.is_empty() {
                self.mail_queued.notify_one();
            } else {
                tracing::warn!(incident_id = id, "an incident opened and nobody was mailed: set incidents.notify or give the sysops group an email address");
            }
        }
        Ok((opened, recipients))
    }

    /// What is known about the subject now, kept with the new incident.
    fn capture_evidence(&self, subject: &Subject, ids: &[i64], rule: &Value, now: Millis) -> Result<Value> {
        let newest = &ids[ids.len().saturating_sub(EVIDENCE_EVENTS)..];
        let events = self.store.events_by_ids(newest)?;
        let mut ev = json!({
            "captured_at": now.rfc3339(),
            "subject": subject.key(),
            "rule": rule,
            "event_ids": ids.len(),
            "events_omitted": ids.len() - newest.len(),
            "events": events,
        });
        match subject {
            Subject::Account { user_id: Some(uid), username } => {
                ev["account"] = match self.store.user_by_id(*uid)? {
                    Some(u) => json!({
                        "id": u.id,
                        "username": u.username,
                        "email": u.email,
                        "groups": u.groups,
                        "locked_until": u.locked_until.filter(|t| *t > now).map(|t| t.rfc3339()),
                        "lock_reason": u.lock_reason,
                        "login_count": u.login_count,
                        "last_login_at": u.last_login_at.map(|t| t.rfc3339()),
                        "last_login_ip": u.last_login_ip,
                        "created_at": u.created_at.rfc3339(),
                    }),
                    None => json!({ "id": uid, "username": username, "deleted": true }),
                };
                ev["devices"] = json!(self.store.devices_of(*uid)?);
                ev["sessions"] = json!(self.store.sessions(Some(*uid), EVIDENCE_SESSIONS)?);
            }
            Subject::Account { user_id: None, username } => {
                ev["account"] = Value::Null;
                ev["attempted_username"] = json!(username);
            }
            Subject::Address(a) | Subject::Network(a) => {
                // The subject itself when it is one address, then the
                // addresses of the related events (a /64 or a network
                // holds many), the busiest first.
                let mut addresses: Vec<String> = Vec::new();
                if let Ok(ip) = a.parse::<std::net::IpAddr>() {
                    addresses.push(ip.to_string());
                }
                let mut counts: Vec<(String, usize)> = Vec::new();
                for e in &events {
                    if let Some(ip) = &e.ip {
                        match counts.iter_mut().find(|(x, _)| x == ip) {
                            Some((_, n)) => *n += 1,
                            None => counts.push((ip.clone(), 1)),
                        }
                    }
                }
                counts.sort_by(|x, y| y.1.cmp(&x.1));
                for (ip, _) in counts {
                    if !addresses.contains(&ip) {
                        addresses.push(ip);
                    }
                }
                addresses.truncate(EVIDENCE_ADDRESSES);
                let since = now.minus(ADDRESS_HISTORY);
                let mut history = Vec::new();
                for ip in &addresses {
                    history.push(json!({
                        "ip": ip,
                        "first_seen_at": self.store.address_first_seen(ip)?.map(|t| t.rfc3339()),
                        "since": since.rfc3339(),
                        "accounts_tried": self.store.accounts_tried_from(ip, since, ADDRESS_SCAN, ADDRESS_ACCOUNTS)?,
                        "recent_events": self.store.events_from_ip(ip, since, ADDRESS_EVENTS)?,
                    }));
                }
                ev["addresses"] = Value::Array(history);
            }
            Subject::Gate => {}
        }
        Ok(ev)
    }

    pub fn incident(&self, id: i64) -> Result<Option<Incident>> {
        Ok(self.store.incident(id)?)
    }

    fn existing_incident(&self, id: i64) -> Result<Incident> {
        self.store.incident(id)?.ok_or_else(|| no_such(id))
    }

    /// One incident with its timeline, linked event ids and evidence.
    pub fn show_incident(&self, id: i64) -> Result<IncidentView> {
        let incident = self.existing_incident(id)?;
        Ok(IncidentView {
            timeline: self.store.incident_timeline(id)?,
            event_ids: self.store.incident_event_ids(id, MAX_LINKED_EVENTS as usize)?,
            evidence: self.store.incident_evidence(id)?.unwrap_or(Value::Null),
            incident,
        })
    }

    /// Newest first.
    pub fn list_incidents(&self, filter: IncidentFilter) -> Result<Vec<Incident>> {
        Ok(self.store.incidents(filter, 10_000)?)
    }

    /// Assigns an incident; an open one becomes `investigating`.
    pub fn assign_incident(&self, id: i64, who: &str, actor: &Actor, now: Millis) -> Result<Incident> {
        let who = required(who, "assignee", MAX_ASSIGNEE)?;
        let before = self.existing_incident(id)?;
        let mut text = format!("assigned to {who}");
        if before.status == IncidentStatus::Open {
            text.push_str("; status open → investigating");
        }
        let details = json!({ "assigned_to": who, "previous": before.assigned_to });
        let entry = NewEntry { kind: TimelineKind::Assigned, actor: &actor.describe(), text: &text, details: &details };
        Ok(self.store.change_incident(id, &Change::Assign(&who), &entry, &[], now)?)
    }

    /// Adds a note to the timeline (also of a resolved incident).
    pub fn note_incident(&self, id: i64, text: &str, actor: &Actor, now: Millis) -> Result<Incident> {
        let text = required(text, "note", MAX_TEXT)?;
        let entry = NewEntry { kind: TimelineKind::Note, actor: &actor.describe(), text: &text, details: &json!({}) };
        Ok(self.store.change_incident(id, &Change::Entry, &entry, &[], now)?)
    }

    /// Moves an incident between `open` and `investigating` (`resolve`
    /// resolves).
    pub fn set_incident_status(&self, id: i64, status: IncidentStatus, actor: &Actor, now: Millis) -> Result<Incident> {
        let before = self.existing_incident(id)?;
        let text = format!("status {} → {status}", before.status);
        let details = json!({ "from": before.status.as_str(), "to": status.as_str() });
        let entry = NewEntry { kind: TimelineKind::Status, actor: &actor.describe(), text: &text, details: &details };
        Ok(self.store.change_incident(id, &Change::Status(status), &entry, &[], now)?)
    }

    /// Resolves an incident with its notes; records `incident_resolved`
    /// (with the MTTD and MTTR). A resolved incident stays resolved.
    pub fn resolve_incident(&self, id: i64, notes: &str, actor: &Actor, now: Millis) -> Result<Incident> {
        let notes = required(notes, "resolution notes", MAX_TEXT)?;
        let before = self.existing_incident(id)?;
        if let Some(at) = before.resolved_at {
            return Err(Error::Conflict(format!("incident {id} is already resolved (at {})", at.rfc3339())));
        }
        let mttr = (now.0 - before.created_at.0).max(0);
        let mttd = mttd_ms(&before);
        let who = actor.describe();
        let event = Event::new(EventType::IncidentResolved, Severity::Info, bounded(&format!("incident {id} resolved: {}", before.title), MAX_TEXT), now)
            .detail("incident_id", id)
            .detail("incident_type", before.incident_type.as_str())
            .detail("subject", before.subject.key())
            .detail("severity", before.severity.as_str())
            .detail("mttd_ms", mttd)
            .detail("mttr_ms", mttr);
        let event = actor.stamp(stamp_subject(event, &before.subject));
        let details = json!({ "mttd_ms": mttd, "mttr_ms": mttr });
        let entry = NewEntry { kind: TimelineKind::Resolved, actor: &who, text: &format!("resolved: {notes}"), details: &details };
        Ok(self.store.change_incident(id, &Change::Resolve(&notes), &entry, &[event], now)?)
    }

    /// Adds an entry to an incident's timeline (what a playbook did, and
    /// the like). `text` is kept bounded; `details` is a JSON object.
    pub fn incident_timeline_add(&self, incident_id: i64, kind: TimelineKind, actor: &str, text: &str, details: Value, now: Millis) -> Result<()> {
        let details = bounded_details(&details);
        let entry = NewEntry { kind, actor: &bounded(actor, MAX_ASSIGNEE), text: &bounded(text, MAX_TEXT), details: &details };
        Ok(self.store.add_timeline_entry(incident_id, &entry, now)?)
    }

    /// Escalates a not-resolved incident: its severity becomes `new` when
    /// that is higher (the priority follows), its escalation count rises
    /// and an `escalated` entry says why. Returns the incident as it is now.
    pub fn raise_incident_severity(&self, id: i64, new: IncidentSeverity, reason: &str, actor: &str, now: Millis) -> Result<Incident> {
        let before = self.existing_incident(id)?;
        let severity = if new.rank() > before.severity.rank() { new } else { before.severity };
        let priority = default_priority(severity).min(before.priority);
        let reason = bounded(reason, MAX_TEXT);
        let text = if severity != before.severity {
            format!("escalated: severity raised from {} to {severity}: {reason}", before.severity)
        } else {
            format!("escalated (severity stays {severity}): {reason}")
        };
        let details = json!({ "from": before.severity.as_str(), "to": severity.as_str(), "reason": reason });
        let entry = NewEntry { kind: TimelineKind::Escalated, actor: &bounded(actor, MAX_ASSIGNEE), text: &bounded(&text, MAX_TEXT), details: &details };
        Ok(self.store.change_incident(id, &Change::Severity { severity, priority, escalation: true }, &entry, &[], now)?)
    }

    /// The incidents not resolved `age` after they were opened, oldest
    /// first (at most 1000): what an escalation step looks at.
    pub fn unresolved_incidents_older_than(&self, age: Duration, now: Millis) -> Result<Vec<Incident>> {
        Ok(self.store.unresolved_incidents_opened_before(now.minus(age), 1000)?)
    }

    /// MTTD and MTTR over the incidents resolved in `[from, to)`, and how
    /// many were opened then.
    pub fn incident_response_times(&self, from: Millis, to: Millis) -> Result<ResponseTimes> {
        let mut r = response_times(&self.store.incident_times_resolved_between(from, to)?);
        r.opened = self.store.incidents_opened_between(from, to)?;
        Ok(r)
    }
}

fn no_such(id: i64) -> Error {
    Error::Invalid(format!("no such incident: {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::devices::SeenDevice;
    use crate::store::sessions::NewSession;
    use crate::store::users::NewUser;

    const T0: Millis = Millis(1_800_000_000_000);
    const MIN: Duration = Duration::from_secs(60);

    fn core_with(dir: &std::path::Path, extra: &str) -> Core {
        crate::core::test_core(dir, extra)
    }

    fn user(core: &Core, name: &str, email: Option<&str>, groups: &[&str]) -> i64 {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        core.store.create_user(&NewUser { username: name, email, password_hash: "x", groups: &groups, now: T0 }).expect("user").id
    }

    /// Failed logins of `name` from `ip`, `n` of them a second apart from `at`.
    fn failures(core: &Core, name: &str, user_id: Option<i64>, ip: &str, n: usize, at: Millis) -> Vec<i64> {
        let events: Vec<Event> = (0..n)
            .map(|i| {
                Event::new(EventType::LoginFailed, Severity::Low, format!("password login failed for {name}"), at.plus(Duration::from_secs(i as u64)))
                    .user(user_id, Some(name))
                    .ip(Some(ip))
                    .detail("reason", if user_id.is_some() { "bad_password" } else { "unknown_user" })
            })
            .collect();
        core.store.insert_events(&events).expect("events")
    }

    fn finding(t: IncidentType, subject: Subject, severity: IncidentSeverity, ids: &[i64], first: Millis) -> Finding {
        Finding {
            incident_type: t,
            subject,
            severity,
            title: format!("{t} finding"),
            description: "the rule fired".into(),
            event_ids: ids.to_vec(),
            first_event_at: first,
            details: json!({ "rule": t.as_str(), "threshold": 5, "window_s": 600, "count": ids.len() }),
        }
    }

    fn actor() -> Actor {
        Actor::Cli("root".into())
    }

    fn kinds(core: &Core, id: i64) -> Vec<&'static str> {
        core.store.incident_timeline(id).expect("timeline").iter().map(|e| e.kind.as_str()).collect()
    }

    /// MTTD runs from the first related event to the incident, MTTR from
    /// the incident to its resolution: both from the stored times.
    #[test]
    fn mttd_and_mttr_from_known_timestamps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core_with(dir.path(), "");
        let alice = user(&core, "alice", None, &[]);
        let ids = failures(&core, "alice", Some(alice), "192.0.2.7", 5, T0);
        let opened_at = T0.plus(Duration::from_secs(90));
        let f = finding(IncidentType::BruteForceAccount, Subject::Account { user_id: Some(alice), username: "alice".into() }, IncidentSeverity::High, &ids, T0);
        let r = core.report_finding(f, opened_at).expect("report");
        assert!(r.created);
        let i = core.incident(r.incident_id).expect("read").expect("exists");
        assert_eq!((i.created_at, i.first_event_at), (opened_at, T0));
        assert_eq!(mttd_ms(&i), 90_000);
        assert_eq!(mttr_ms(&i), None);
        assert_eq!((i.priority, i.status, i.event_count), (2, IncidentStatus::Open, 5));
        assert_eq!(i.rule.as_deref(), Some("brute_force_account"), "the finding's rule is kept");

        let resolved_at = opened_at.plus(Duration::from_secs(3600 + 5));
        let i = core.resolve_incident(r.incident_id, "password changed, address blocked", &actor(), resolved_at).expect("resolve");
        assert_eq!(i.resolved_at, Some(resolved_at));
        assert_eq!(mttr_ms(&i), Some(3_605_000));
        assert_eq!(mttd_ms(&i), 90_000);
        let resolved = core.store.events(&crate::store::events::EventFilter { event_type: Some(EventType::IncidentResolved), limit: 10, ..Default::default() }).expect("events");
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].details["mttr_ms"], 3_605_000);
        assert_eq!(resolved[0].details["mttd_ms"], 90_000);
        assert_eq!(resolved[0].details["incident_id"], r.incident_id);
        assert_eq!(resolved[0].user_id, Some(alice));

        // A second incident, resolved later: the aggregates over the period.
        let f = finding(IncidentType::BruteForceIp, Subject::Address("192.0.2.7".into()), IncidentSeverity::Medium, &ids, T0);
        let second = core.report_finding(f, T0.plus(Duration::from_secs(30))).expect("report");
        core.resolve_incident(second.incident_id, "noise", &actor(), T0.plus(Duration::from_secs(30 + 600))).expect("resolve");
        let r = core.incident_response_times(T0, T0.plus(Duration::from_secs(86_400))).expect("times");
        assert_eq!(
            r,
            ResponseTimes {
                opened: 2,
                resolved: 2,
                mttd_mean_ms: Some(60_000),
                mttd_median_ms: Some(60_000),
                mttr_mean_ms: Some((3_605_000 + 600_000) / 2),
                mttr_median_ms: Some((3_605_000 + 600_000) / 2),
            }
        );
        // A period that holds neither resolution.
        let none = core.incident_response_times(T0.minus(Duration::from_secs(86_400)), T0).expect("times");
        assert_eq!(none, ResponseTimes::default());
    }

    #[test]
    fn response_time_aggregates() {
        let at = |s: i64| Millis(T0.0 + s * 1000);
        let cases: &[(&[(i64, i64, i64)], [Option<i64>; 4])] = &[
            (&[], [None, None, None, None]),
            (&[(0, 10, 70)], [Some(10_000), Some(10_000), Some(60_000), Some(60_000)]),
            // Odd count: the middle one; the mean is pulled by the outlier.
            (&[(0, 1, 2), (0, 2, 4), (0, 90, 990)], [Some(31_000), Some(2_000), Some(301_000), Some(2_000)]),
            // Even count: the mean of the two middle ones.
            (&[(0, 1, 11), (0, 3, 33), (0, 5, 5), (0, 100, 100)], [Some(27_250), Some(4_000), Some(10_000), Some(5_000)]),
            // An incident opened before its first event (a clock step) counts 0.
            (&[(10, 5, 5)], [Some(0), Some(0), Some(0), Some(0)]),
        ];
        for (times, want) in cases {
            let t: Vec<_> = times.iter().map(|(f, c, r)| (at(*f), at(*c), at(*r))).collect();
            let r = response_times(&t);
            assert_eq!([r.mttd_mean_ms, r.mttd_median_ms, r.mttr_mean_ms, r.mttr_median_ms], *want, "{times:?}");
            assert_eq!(r.resolved, times.len());
        }
        for (s, p) in [(IncidentSeverity::Critical, 1), (IncidentSeverity::High, 2), (IncidentSeverity::Medium, 3), (IncidentSeverity::Low, 4)] {
            assert_eq!(default_priority(s), p);
        }
    }

    /// A second finding for the same rule and subject attaches: its new
    /// events are linked once, the count rises, no new incident; findings
    /// close together share one timeline entry; a more severe one raises
    /// the severity and says so.
    #[test]
    fn findings_for_one_rule_and_subject_attach_to_one_incident() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core_with(dir.path(), "");
        let ids = failures(&core, "root", None, "192.0.2.7", 8, T0);
        let subject = Subject::Address("192.0.2.7".into());
        let first = core.report_finding(finding(IncidentType::BruteForceIp, subject.clone(), IncidentSeverity::Medium, &ids[..5], T0), T0.plus(MIN)).expect("report");
        assert!(first.created);
        // Overlapping window: 3 of its 5 events are already attached.
        let second = core.report_finding(finding(IncidentType::BruteForceIp, subject.clone(), IncidentSeverity::Medium, &ids[2..7], T0), T0.plus(MIN * 2)).expect("report");
        assert_eq!(second, Reported { incident_id: first.incident_id, created: false });
        let i = core.incident(first.incident_id).expect("read").expect("exists");
        assert_eq!(i.event_count, 7);
        assert_eq!(i.updated_at, T0.plus(MIN * 2));
        assert_eq!(core.show_incident(first.incident_id).expect("show").event_ids, ids[..7].to_vec());
        assert_eq!(kinds(&core, first.incident_id), ["created", "attached"]);
        // The same events again add nothing; a finding soon after goes into
        // the same `attached` entry.
        core.report_finding(finding(IncidentType::BruteForceIp, subject.clone(), IncidentSeverity::Medium, &ids[2..7], T0), T0.plus(MIN * 3)).expect("report");
        core.report_finding(finding(IncidentType::BruteForceIp, subject.clone(), IncidentSeverity::Medium, &ids[3..8], T0), T0.plus(MIN * 4)).expect("report");
        assert_eq!(core.incident(first.incident_id).expect("read").expect("exists").event_count, 8);
        let timeline = core.store.incident_timeline(first.incident_id).expect("timeline");
        assert_eq!(timeline.len(), 2, "{timeline:#?}");
        assert_eq!(timeline[1].details["findings"], 3);
        assert_eq!(timeline[1].details["events"], 3);
        assert_eq!(timeline[1].text, "3 findings attached 3 new events");
        assert_eq!(timeline[1].actor, DETECTION_ACTOR);

        // More severe: raised, the priority follows, a new entry says so.
        core.report_finding(finding(IncidentType::BruteForceIp, subject.clone(), IncidentSeverity::Critical, &ids[7..], T0), T0.plus(MIN * 5)).expect("report");
        let i = core.incident(first.incident_id).expect("read").expect("exists");
        assert_eq!((i.severity, i.priority, i.event_count), (IncidentSeverity::Critical, 1, 8));
        let timeline = core.store.incident_timeline(first.incident_id).expect("timeline");
        assert_eq!(timeline.len(), 3);
        assert_eq!(timeline[2].text, "1 finding attached 0 new events; severity raised from medium to critical");
        assert_eq!(timeline[2].details["severity_raised"], json!({ "from": "medium", "to": "critical" }));
        // Less severe later: the severity stays.
        core.report_finding(finding(IncidentType::BruteForceIp, subject.clone(), IncidentSeverity::Low, &ids[7..], T0), T0.plus(MIN * 6)).expect("report");
        assert_eq!(core.incident(first.incident_id).expect("read").expect("exists").severity, IncidentSeverity::Critical);

        // Another rule or another subject is another incident.
        let other = core.report_finding(finding(IncidentType::UsernameEnumeration, subject.clone(), IncidentSeverity::Low, &ids, T0), T0.plus(MIN)).expect("report");
        let elsewhere = core.report_finding(finding(IncidentType::BruteForceIp, Subject::Address("192.0.2.8".into()), IncidentSeverity::Low, &ids, T0), T0.plus(MIN)).expect("report");
        assert!(other.created && elsewhere.created);
        assert_eq!(core.list_incidents(IncidentFilter::Open).expect("list").len(), 3);
        // One incident_created event per incident, none for attachments.
        let created = core.store.events(&crate::store::events::EventFilter { event_type: Some(EventType::IncidentCreated), limit: 10, ..Default::default() }).expect("events");
        assert_eq!(created.len(), 3);
    }

    /// A long attack does not grow the timeline without bound: findings far
    /// apart each get an entry until the cap, then go into the last one.
    #[test]
    fn the_timeline_stays_bounded_under_a_long_attack() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core_with(dir.path(), "");
        let subject = Subject::Address("192.0.2.9".into());
        let n = MAX_ATTACHED_ENTRIES as u64 + 30;
        let mut id = 0;
        for i in 0..=n {
            let at = T0.plus(ATTACH_COALESCE * (i as u32) * 2);
            let ids = failures(&core, "root", None, "192.0.2.9", 1, at);
            id = core.report_finding(finding(IncidentType::BruteForceIp, subject.clone(), IncidentSeverity::Low, &ids, at), at).expect("report").incident_id;
        }
        let timeline = core.store.incident_timeline(id).expect("timeline");
        let attached: Vec<_> = timeline.iter().filter(|e| e.kind == TimelineKind::Attached).collect();
        assert_eq!(attached.len() as i64, MAX_ATTACHED_ENTRIES);
        assert_eq!(attached.last().expect("last").details["findings"], 31);
        assert_eq!(core.incident(id).expect("read").expect("exists").event_count, n as i64 + 1);
    }

    /// Once resolved, the next finding opens a new incident; the resolved
    /// one cannot be resolved again.
    #[test]
    fn after_resolve_a_new_finding_opens_a_new_incident() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core_with(dir.path(), "");
        let ids = failures(&core, "admin", None, "192.0.2.7", 3, T0);
        let subject = Subject::Account { user_id: None, username: "Admin".into() };
        let first = core.report_finding(finding(IncidentType::BruteForceAccount, subject.clone(), IncidentSeverity::Medium, &ids, T0), T0.plus(MIN)).expect("report");
        let resolved = core.resolve_incident(first.incident_id, "dictionary noise", &actor(), T0.plus(MIN * 2)).expect("resolve");
        let err = core.resolve_incident(first.incident_id, "again", &actor(), T0.plus(MIN * 3)).expect_err("resolved once");
        assert_eq!(err.to_string(), format!("incident {} is already resolved (at {})", first.incident_id, resolved.resolved_at.expect("at").rfc3339()));
        let err = core.assign_incident(first.incident_id, "bob", &actor(), T0.plus(MIN * 3)).expect_err("resolved");
        assert_eq!(err.to_string(), format!("incident {} is resolved; it can no longer be assigned", first.incident_id));

        let later = failures(&core, "admin", None, "192.0.2.7", 2, T0.plus(MIN * 4));
        let second = core.report_finding(finding(IncidentType::BruteForceAccount, subject, IncidentSeverity::Medium, &later, T0.plus(MIN * 4)), T0.plus(MIN * 5)).expect("report");
        assert!(second.created);
        assert_ne!(second.incident_id, first.incident_id);
        assert_eq!(core.list_incidents(IncidentFilter::Open).expect("list").iter().map(|i| i.id).collect::<Vec<_>>(), [second.incident_id]);
        assert_eq!(core.list_incidents(IncidentFilter::Resolved).expect("list").iter().map(|i| i.id).collect::<Vec<_>>(), [first.incident_id]);
        assert_eq!(core.list_incidents(IncidentFilter::All).expect("list").len(), 2);
        assert_eq!(core.incident(first.incident_id).expect("read").expect("exists").event_count, 3, "the resolved one got nothing");
    }

    /// An account's evidence: the related events, its devices and sessions,
    /// as they were when the incident opened — later events, devices and a
    /// finding that attaches change nothing in it.
    #[test]
    fn evidence_of_an_account_is_captured_at_creation_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core_with(dir.path(), "");
        let alice = user(&core, "alice", Some("alice@example.org"), &[]);
        let seen = |fp: &str, ip: &str, at: Millis| {
            core.store
                .see_device(&SeenDevice { user_id: alice, fingerprint: fp, device_name: "OpenSSH_9.2", device_type: "ssh", client_version: "SSH-2.0-OpenSSH_9.2", ip, success: true, pending: false, now: at })
                .expect("device")
                .0
        };
        let laptop = seen("fp-laptop", "198.51.100.4", T0);
        let session = core
            .store
            .start_session(&NewSession { user_id: alice, device_id: Some(laptop), protocol: "ssh", ip: "198.51.100.4", client_version: "SSH-2.0-OpenSSH_9.2", auth_method: "password", factors: 1, connected_at: T0, now: T0 })
            .expect("session");
        let ids = failures(&core, "alice", Some(alice), "192.0.2.7", 5, T0.plus(MIN));
        let subject = Subject::Account { user_id: Some(alice), username: "alice".into() };
        let r = core.report_finding(finding(IncidentType::BruteForceAccount, subject.clone(), IncidentSeverity::High, &ids, T0.plus(MIN)), T0.plus(MIN * 2)).expect("report");
        let before = core.show_incident(r.incident_id).expect("show").evidence;
        let event_ids: Vec<i64> = before["events"].as_array().expect("events").iter().map(|e| e["id"].as_i64().expect("id")).collect();
        assert_eq!(event_ids, ids);
        assert_eq!(before["events"][0]["username"], "alice");
        assert_eq!(before["events"][0]["ip"], "192.0.2.7");
        assert_eq!(before["devices"].as_array().map(Vec::len), Some(1));
        assert_eq!(before["devices"][0]["id"], laptop);
        assert_eq!(before["sessions"].as_array().map(Vec::len), Some(1));
        assert_eq!(before["sessions"][0]["id"], session);
        assert_eq!(before["account"]["username"], "alice");
        assert_eq!(before["rule"]["threshold"], 5);
        assert_eq!(before["captured_at"], T0.plus(MIN * 2).rfc3339());

        // Later: another device, more failures attached, the session ends.
        seen("fp-phone", "203.0.113.9", T0.plus(MIN * 3));
        core.store.end_session(session, "logged off", T0.plus(MIN * 3)).expect("end");
        let more = failures(&core, "alice", Some(alice), "192.0.2.7", 3, T0.plus(MIN * 4));
        let again = core.report_finding(finding(IncidentType::BruteForceAccount, subject, IncidentSeverity::High, &more, T0.plus(MIN * 4)), T0.plus(MIN * 5)).expect("report");
        assert!(!again.created);
        let view = core.show_incident(r.incident_id).expect("show");
        assert_eq!(view.evidence, before, "evidence unchanged");
        assert_eq!(view.incident.event_count, 8);
        assert_eq!(view.event_ids.len(), 8);
        // (That the store refuses any rewrite is store::incidents' test.)
    }

    /// An address's evidence: its recent history and the accounts it tried.
    #[test]
    fn evidence_of_an_address_holds_its_history_and_the_accounts_it_tried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core_with(dir.path(), "");
        let alice = user(&core, "alice", None, &[]);
        let old = failures(&core, "oracle", None, "192.0.2.7", 1, T0.minus(Duration::from_secs(30 * 86_400)));
        let mut ids = failures(&core, "root", None, "192.0.2.7", 3, T0);
        ids.extend(failures(&core, "admin", None, "192.0.2.7", 2, T0.plus(MIN)));
        ids.extend(failures(&core, "alice", Some(alice), "192.0.2.7", 1, T0.plus(MIN * 2)));
        failures(&core, "bob", None, "192.0.2.99", 4, T0);
        let r = core.report_finding(finding(IncidentType::CredentialStuffing, Subject::Address("192.0.2.7".into()), IncidentSeverity::High, &ids, T0), T0.plus(MIN * 3)).expect("report");
        let ev = core.show_incident(r.incident_id).expect("show").evidence;
        assert_eq!(ev["events"].as_array().map(Vec::len), Some(6));
        let addresses = ev["addresses"].as_array().expect("addresses");
        assert_eq!(addresses.len(), 1, "{addresses:#?}");
        let a = &addresses[0];
        assert_eq!(a["ip"], "192.0.2.7");
        // First seen a month ago, though that event is outside the history window.
        assert_eq!(a["first_seen_at"], T0.minus(Duration::from_secs(30 * 86_400)).rfc3339());
        let tried: Vec<(String, i64, bool)> = a["accounts_tried"]
            .as_array()
            .expect("tried")
            .iter()
            .map(|t| (t["username"].as_str().unwrap_or("").to_owned(), t["failures"].as_i64().unwrap_or(-1), t["user_id"].is_null()))
            .collect();
        assert_eq!(tried, [("root".into(), 3, true), ("admin".into(), 2, true), ("alice".into(), 1, false)]);
        let recent = a["recent_events"].as_array().expect("recent");
        assert_eq!(recent.len(), 6);
        assert!(recent.iter().all(|e| e["ip"] == "192.0.2.7" && e["id"] != old[0]));

        // An IPv6 /64 subject: the history of the addresses its events came from.
        let v6 = failures(&core, "root", None, "2001:db8::5", 2, T0);
        let r = core.report_finding(finding(IncidentType::BruteForceIp, Subject::Address("2001:db8::/64".into()), IncidentSeverity::Medium, &v6, T0), T0.plus(MIN)).expect("report");
        let ev = core.show_incident(r.incident_id).expect("show").evidence;
        assert_eq!(ev["addresses"][0]["ip"], "2001:db8::5");
        assert_eq!(ev["addresses"][0]["accounts_tried"][0]["attempts"], 2);
    }

    /// The mail goes to the sysops group's addresses (or the configured
    /// list), committed with the incident and its event.
    #[test]
    fn a_new_incident_mails_the_sysops_group_or_the_configured_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core_with(dir.path(), "");
        user(&core, "carol", Some("carol@example.org"), &["sysops"]);
        user(&core, "dan", Some("dan@example.org"), &["Sysops", "users"]);
        user(&core, "erin", None, &["sysops"]);
        user(&core, "frank", Some("frank@example.org"), &["users"]);
        let ids = failures(&core, "evil\x1b[2J", None, "192.0.2.7", 2, T0);
        let mut f = finding(IncidentType::InjectionAttempt, Subject::Address("192.0.2.7".into()), IncidentSeverity::High, &ids, T0);
        f.title = "injection-looking username evil\x1b[2J".into();
        let r = core.report_finding(f, T0.plus(MIN)).expect("report");
        let mut mail = core.due_mail(T0.plus(MIN), 10).expect("mail");
        mail.sort_by(|a, b| a.to.cmp(&b.to));
        assert_eq!(mail.iter().map(|m| m.to.as_str()).collect::<Vec<_>>(), ["carol@example.org", "dan@example.org"]);
        let id = r.incident_id;
        assert_eq!(mail[0].subject, format!("Security incident #{id} (high): injection-looking username evil\\x1b[2J"));
        let body = &mail[0].body.text;
        assert!(body.contains(&format!("#{id}: injection-looking username evil\\x1b[2J")), "{body}");
        assert!(body.contains("Type       injection_attempt") && body.contains("Severity   high (P2)") && body.contains("Subject    address 192.0.2.7"), "{body}");
        assert!(body.contains(&format!("portcullis security incidents show {id}")), "{body}");
        assert!(!body.contains('\x1b') && !body.contains("{{"), "{body}");
        assert!(!mail[0].body.html.contains('\x1b') && !mail[0].body.html.contains("{{"));
        let created = core.store.events(&crate::store::events::EventFilter { event_type: Some(EventType::IncidentCreated), limit: 10, ..Default::default() }).expect("events");
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].details["incident_id"], id);
        assert_eq!(created[0].details["subject"], "address:192.0.2.7");
        assert_eq!(created[0].details["notified"], 2);
        assert_eq!(created[0].details["rule"]["threshold"], 5);
        assert_eq!(created[0].severity, "high");
        let timeline = core.store.incident_timeline(id).expect("timeline");
        assert_eq!(timeline[0].details["notified"], json!(["carol@example.org", "dan@example.org"]));
        // Attaching mails nobody again.
        core.report_finding(finding(IncidentType::InjectionAttempt, Subject::Address("192.0.2.7".into()), IncidentSeverity::High, &ids, T0), T0.plus(MIN * 2)).expect("report");
        assert_eq!(core.due_mail(T0.plus(MIN * 2), 10).expect("mail").len(), 2);

        // A configured list replaces the group.
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core_with(dir.path(), "incidents: {\n  notify: [\"oncall@example.org\", \"sec@example.net\"]\n}\n");
        user(&core, "carol", Some("carol@example.org"), &["sysops"]);
        let created = core.create_incident("odd logins at night", IncidentSeverity::Medium, "check the VPN logs", &actor(), T0).expect("create");
        assert_eq!(created.notified, ["oncall@example.org", "sec@example.net"]);
        let mut mail = core.due_mail(T0, 10).expect("mail");
        mail.sort_by(|a, b| a.to.cmp(&b.to));
        assert_eq!(mail.iter().map(|m| m.to.as_str()).collect::<Vec<_>>(), ["oncall@example.org", "sec@example.net"]);
        assert!(mail[0].body.text.contains("check the VPN logs"));
    }

    /// By hand: open, assign, note, resolve — the timeline holds each in
    /// order; bad input is refused with a clear message.
    #[test]
    fn manual_incident_workflow_and_its_refusals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core_with(dir.path(), "");
        let c = core.create_incident("  odd logins  ", IncidentSeverity::Low, "", &actor(), T0).expect("create");
        let i = &c.incident;
        assert_eq!((i.title.as_str(), i.incident_type, i.subject.clone(), i.priority, i.event_count), ("odd logins", IncidentType::Manual, Subject::Gate, 4, 0));
        assert_eq!(mttd_ms(i), 0);
        assert_eq!(i.rule, None, "opened by hand: no rule");
        assert!(c.notified.is_empty(), "no sysop has an address");
        // Manual incidents do not collide with each other.
        let other = core.create_incident("another", IncidentSeverity::High, "", &actor(), T0).expect("create");
        assert_ne!(other.incident.id, i.id);

        let id = i.id;
        let a = core.assign_incident(id, "bob", &actor(), T0.plus(MIN)).expect("assign");
        assert_eq!((a.status, a.assigned_to.as_deref()), (IncidentStatus::Investigating, Some("bob")));
        core.note_incident(id, "checked the logs", &actor(), T0.plus(MIN * 2)).expect("note");
        core.incident_timeline_add(id, TimelineKind::Action, "playbook:lock", "locked alice for 30m", json!({ "action": "lock_account" }), T0.plus(MIN * 3)).expect("add");
        let e = core.raise_incident_severity(id, IncidentSeverity::Critical, "still open after 1h", "playbook:escalate", T0.plus(MIN * 4)).expect("escalate");
        assert_eq!((e.severity, e.priority, e.escalations, e.escalated_at), (IncidentSeverity::Critical, 1, 1, Some(T0.plus(MIN * 4))));
        let e = core.raise_incident_severity(id, IncidentSeverity::High, "still open after 2h", "playbook:escalate", T0.plus(MIN * 5)).expect("escalate");
        assert_eq!((e.severity, e.escalations), (IncidentSeverity::Critical, 2), "never lowered");
        let old = core.unresolved_incidents_older_than(Duration::from_secs(60), T0.plus(MIN * 5)).expect("old");
        assert_eq!(old.iter().map(|i| i.id).collect::<Vec<_>>(), [id, other.incident.id]);
        assert!(core.unresolved_incidents_older_than(MIN * 6, T0.plus(MIN * 5)).expect("old").is_empty());
        core.resolve_incident(id, "false alarm", &actor(), T0.plus(MIN * 6)).expect("resolve");
        core.note_incident(id, "post-mortem written", &actor(), T0.plus(MIN * 7)).expect("a note after resolving");
        let view = core.show_incident(id).expect("show");
        assert_eq!(view.timeline.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["created", "assigned", "note", "action", "escalated", "escalated", "resolved", "note"]);
        assert_eq!(view.timeline[1].text, "assigned to bob; status open → investigating");
        assert_eq!(view.timeline[2].text, "checked the logs");
        assert_eq!(view.timeline[4].text, "escalated: severity raised from low to critical: still open after 1h");
        assert_eq!(view.timeline[5].text, "escalated (severity stays critical): still open after 2h");
        assert_eq!(view.timeline[6].text, "resolved: false alarm");
        assert_eq!(view.timeline[6].details["mttr_ms"], 360_000);
        assert!(view.timeline.iter().filter(|e| e.kind != TimelineKind::Action && e.kind != TimelineKind::Escalated).all(|e| e.actor == "cli:root"));
        assert_eq!(view.incident.resolution_notes.as_deref(), Some("false alarm"));
        assert!(core.unresolved_incidents_older_than(Duration::ZERO, T0.plus(MIN * 8)).expect("old").iter().all(|i| i.id != id));

        let refusals: Vec<(Result<Incident>, String)> = vec![
            (core.create_incident(" ", IncidentSeverity::Low, "", &actor(), T0).map(|c| c.incident), "the incident title is empty".into()),
            (core.create_incident(&"x".repeat(201), IncidentSeverity::Low, "", &actor(), T0).map(|c| c.incident), "the incident title is longer than 200 characters".into()),
            (core.create_incident("t", IncidentSeverity::Low, &"x".repeat(4001), &actor(), T0).map(|c| c.incident), "the description is longer than 4000 characters".into()),
            (core.assign_incident(999, "bob", &actor(), T0), "no such incident: 999".into()),
            (core.assign_incident(other.incident.id, "", &actor(), T0), "the assignee is empty".into()),
            (core.note_incident(999, "x", &actor(), T0), "no such incident: 999".into()),
            (core.note_incident(id, "  ", &actor(), T0), "the note is empty".into()),
            (core.resolve_incident(other.incident.id, "", &actor(), T0), "the resolution notes are empty".into()),
            (core.resolve_incident(999, "x", &actor(), T0), "no such incident: 999".into()),
            (core.set_incident_status(id, IncidentStatus::Open, &actor(), T0), format!("incident {id} is resolved; it can no longer change its status")),
            (core.raise_incident_severity(id, IncidentSeverity::High, "x", "t", T0), format!("incident {id} is resolved; it can no longer be escalated")),
        ];
        for (got, want) in refusals {
            assert_eq!(got.expect_err(&want).to_string(), want);
        }
        assert_eq!(core.incident_timeline_add(999, TimelineKind::Note, "t", "x", json!({}), T0).expect_err("unknown").to_string(), "no such incident: 999");
        assert_eq!(core.show_incident(999).expect_err("unknown").to_string(), "no such incident: 999");
        assert!(core.incident(999).expect("read").is_none());
    }
}
