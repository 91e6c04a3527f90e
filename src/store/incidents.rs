//! Incidents, the events linked to them, their timelines and the reads
//! that capture their evidence. Every change is one IMMEDIATE transaction
//! with its timeline entry (and, where `core` gives them, its events and
//! mails).

use super::events::{event_from_row, insert_batch_tx};
use super::mfa::{insert_outbox, NewMail};
use super::{Context, Error, Result, Store};
use crate::model::{Event, IncidentSeverity, IncidentStatus, IncidentType, Millis, StoredEvent, Subject, TimelineKind};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

/// An incident as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    pub id: i64,
    pub title: String,
    pub incident_type: IncidentType,
    pub severity: IncidentSeverity,
    /// 1 (most urgent) to 4, shown as `P1`..`P4`.
    pub priority: u8,
    pub status: IncidentStatus,
    pub subject: Subject,
    /// The detection rule whose finding opened it (`None` when opened by
    /// hand, or before the rule was kept).
    pub rule: Option<String>,
    pub description: String,
    pub assigned_to: Option<String>,
    /// Events attached so far (all of them, also those past the link bound).
    pub event_count: i64,
    /// When the first related event happened (MTTD starts here).
    pub first_event_at: Millis,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub resolved_at: Option<Millis>,
    pub resolution_notes: Option<String>,
    /// How many times it was escalated, and when last.
    pub escalations: u32,
    pub escalated_at: Option<Millis>,
}

/// One entry of an incident's timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEntry {
    pub id: i64,
    pub incident_id: i64,
    pub at: Millis,
    pub kind: TimelineKind,
    pub actor: String,
    pub text: String,
    pub details: serde_json::Value,
}

/// Which incidents a listing shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncidentFilter {
    /// Open and investigating.
    Open,
    Resolved,
    All,
}

pub struct NewIncident<'a> {
    pub title: &'a str,
    pub incident_type: IncidentType,
    pub severity: IncidentSeverity,
    pub priority: u8,
    pub subject: &'a Subject,
    /// The finding's rule (at most 64 characters); `None` by hand.
    pub rule: Option<&'a str>,
    pub description: &'a str,
    pub first_event_at: Millis,
    pub evidence: &'a serde_json::Value,
    pub now: Millis,
}

/// A timeline entry to write (its time is the change's `now`).
pub struct NewEntry<'a> {
    pub kind: TimelineKind,
    pub actor: &'a str,
    pub text: &'a str,
    pub details: &'a serde_json::Value,
}

/// A sealed mail `core` made once it knew the new incident's id.
pub struct QueuedMail {
    pub recipient: String,
    pub subject: String,
    pub body_sealed: Vec<u8>,
    pub template: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    Created(i64),
    /// A not-resolved incident for the same rule and subject appeared
    /// meanwhile: nothing was written.
    Exists(i64),
}

/// How a finding attaches to the open incident of its rule and subject.
pub struct Attach<'a> {
    /// Sorted, without duplicates.
    pub event_ids: &'a [i64],
    pub severity: IncidentSeverity,
    /// The priority that goes with `severity`.
    pub priority: u8,
    pub actor: &'a str,
    /// The finding's details (its rule's figures).
    pub details: &'a serde_json::Value,
    /// A finding within this long of the newest `attached` entry (when it
    /// is the newest entry of all) is added to it instead of a new one.
    pub coalesce_ms: i64,
    /// At most this many `attached` entries; later findings go into the last.
    pub max_attached_entries: i64,
    /// At most this many events linked per incident; later ones are counted.
    pub max_linked: i64,
    pub now: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attached {
    pub incident_id: i64,
    /// New events (those already attached are not counted again).
    pub events_added: i64,
    /// (from, to) when the finding raised the incident's severity.
    pub severity_raised: Option<(IncidentSeverity, IncidentSeverity)>,
}

/// A change made to one incident, with its timeline entry.
pub enum Change<'a> {
    /// Only the timeline entry (a note, an action); allowed when resolved.
    Entry,
    Assign(&'a str),
    Status(IncidentStatus),
    Resolve(&'a str),
    Severity { severity: IncidentSeverity, priority: u8, escalation: bool },
}

/// What one address tried, for the evidence.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TriedAccount {
    pub username: Option<String>,
    pub user_id: Option<i64>,
    pub attempts: i64,
    pub failures: i64,
    pub first_at: String,
    pub last_at: String,
}

const INCIDENT_COLUMNS: &str = "id, title, incident_type, severity, priority, status, subject_kind, subject_user_id, subject_name,
    description, assigned_to, event_count, first_event_at, created_at, updated_at, resolved_at,
    resolution_notes, escalations, escalated_at, rule";

const EVENT_SELECT: &str = "SELECT id, event_type, category, severity, user_id, username, ip, device_id, session_id,
    description, risk_score, is_suspicious, created_at, details FROM security_events";

fn bad_value(idx: usize, text: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, format!("unknown value {text:?}").into())
}

fn parsed<T>(r: &Row<'_>, idx: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = r.get(idx)?;
    parse(&text).ok_or_else(|| bad_value(idx, &text))
}

pub fn priority_name(p: u8) -> String {
    format!("P{p}")
}

fn parse_priority(text: &str) -> Option<u8> {
    match text {
        "P1" => Some(1),
        "P2" => Some(2),
        "P3" => Some(3),
        "P4" => Some(4),
        _ => None,
    }
}

fn subject_parts(s: &Subject) -> (&'static str, Option<i64>, Option<&str>) {
    match s {
        Subject::Account { user_id, username } => ("account", *user_id, Some(username.as_str())),
        Subject::Address(a) => ("address", None, Some(a.as_str())),
        Subject::Network(n) => ("network", None, Some(n.as_str())),
        Subject::Gate => ("gate", None, None),
    }
}

fn incident_from_row(r: &Row<'_>) -> rusqlite::Result<Incident> {
    let kind: String = r.get(6)?;
    let user_id: Option<i64> = r.get(7)?;
    let name: Option<String> = r.get(8)?;
    let subject = match kind.as_str() {
        "account" => Subject::Account { user_id, username: name.unwrap_or_default() },
        "address" => Subject::Address(name.unwrap_or_default()),
        "network" => Subject::Network(name.unwrap_or_default()),
        "gate" => Subject::Gate,
        other => return Err(bad_value(6, other)),
    };
    Ok(Incident {
        id: r.get(0)?,
        title: r.get(1)?,
        incident_type: parsed(r, 2, IncidentType::parse)?,
        severity: parsed(r, 3, IncidentSeverity::parse)?,
        priority: parsed(r, 4, parse_priority)?,
        status: parsed(r, 5, IncidentStatus::parse)?,
        subject,
        description: r.get(9)?,
        assigned_to: r.get(10)?,
        event_count: r.get(11)?,
        first_event_at: Millis(r.get(12)?),
        created_at: Millis(r.get(13)?),
        updated_at: Millis(r.get(14)?),
        resolved_at: r.get::<_, Option<i64>>(15)?.map(Millis),
        resolution_notes: r.get(16)?,
        escalations: r.get(17)?,
        escalated_at: r.get::<_, Option<i64>>(18)?.map(Millis),
        rule: r.get(19)?,
    })
}

fn entry_from_row(r: &Row<'_>) -> rusqlite::Result<TimelineEntry> {
    let details: String = r.get(6)?;
    Ok(TimelineEntry {
        id: r.get(0)?,
        incident_id: r.get(1)?,
        at: Millis(r.get(2)?),
        kind: parsed(r, 3, TimelineKind::parse)?,
        actor: r.get(4)?,
        text: r.get(5)?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
    })
}

fn read_incident(conn: &Connection, id: i64) -> Result<Option<Incident>> {
    let mut st = conn.prepare_cached(&format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1")).doing("reading an incident")?;
    st.query_row([id], incident_from_row).optional().doing("reading an incident")
}

fn no_such(id: i64) -> Error {
    Error::NotFound(format!("no such incident: {id}"))
}

fn insert_entry(conn: &Connection, incident_id: i64, e: &NewEntry<'_>, now: Millis) -> Result<i64> {
    conn.prepare_cached("INSERT INTO incident_timeline (incident_id, at, kind, actor, text, details) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .doing("adding to an incident's timeline")?
        .execute(params![incident_id, now.0, e.kind.as_str(), e.actor, e.text, e.details.to_string()])
        .doing("adding to an incident's timeline")?;
    Ok(conn.last_insert_rowid())
}

/// Links events (up to `max_linked` per incident; beyond it events newer
/// than the newest seen are counted only). Returns (added, new max id).
fn link_events(conn: &Connection, incident_id: i64, ids: &[i64], already: i64, max_event_id: i64, max_linked: i64) -> Result<(i64, i64)> {
    let mut st = conn.prepare_cached("INSERT OR IGNORE INTO incident_events (incident_id, event_id) VALUES (?1, ?2)").doing("linking events")?;
    // Below the bound every attached event is linked, so the links number
    // min(event_count, max_linked).
    let mut linked = already.min(max_linked);
    let (mut added, mut newest) = (0, max_event_id);
    for &id in ids {
        if linked < max_linked {
            let n = st.execute(params![incident_id, id]).doing("linking an event")? as i64;
            linked += n;
            added += n;
        } else if id > newest {
            added += 1;
        }
        newest = newest.max(id);
    }
    Ok((added, newest))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

impl Store {
    /// Opens an incident with its first timeline entry and linked events;
    /// `finish` then makes the mails and events that go with it (knowing
    /// its id), all committed together. With `dedup`, nothing is written
    /// when a not-resolved incident of the same type and subject exists.
    pub fn create_incident(
        &self,
        new: &NewIncident<'_>,
        dedup: bool,
        event_ids: &[i64],
        max_linked: i64,
        first: &NewEntry<'_>,
        finish: impl FnOnce(i64) -> (Vec<QueuedMail>, Vec<Event>),
    ) -> Result<Opened> {
        let key = new.subject.key();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to open an incident")?;
        if dedup {
            if let Some(id) = open_incident_id(&tx, new.incident_type, &key)? {
                return Ok(Opened::Exists(id));
            }
        }
        let (kind, user_id, name) = subject_parts(new.subject);
        let inserted = tx.execute(
            "INSERT INTO incidents (title, incident_type, severity, priority, status, subject_key, subject_kind, subject_user_id, subject_name,
                                    description, first_event_at, created_at, updated_at, evidence, rule)
             VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13)",
            params![
                new.title,
                new.incident_type.as_str(),
                new.severity.as_str(),
                priority_name(new.priority),
                key,
                kind,
                user_id,
                name,
                new.description,
                new.first_event_at.0,
                new.now.0,
                new.evidence.to_string(),
                new.rule
            ],
        );
        match inserted {
            Ok(_) => {}
            // Only the one-open index can refuse this row (the CHECKs are
            // met by construction); another writer won the race.
            Err(e) if is_unique_violation(&e) => {
                if let Some(id) = open_incident_id(&tx, new.incident_type, &key)? {
                    return Ok(Opened::Exists(id));
                }
                return Err(Error::Sqlite { what: "opening an incident".into(), source: e });
            }
            Err(e) => return Err(Error::Sqlite { what: "opening an incident".into(), source: e }),
        }
        let id = tx.last_insert_rowid();
        let (count, newest) = link_events(&tx, id, event_ids, 0, 0, max_linked)?;
        tx.execute("UPDATE incidents SET event_count = ?2, max_event_id = ?3 WHERE id = ?1", params![id, count, newest]).doing("counting an incident's events")?;
        insert_entry(&tx, id, first, new.now)?;
        let (mails, events) = finish(id);
        for m in &mails {
            insert_outbox(&tx, &NewMail { recipient: &m.recipient, subject: &m.subject, body_sealed: &m.body_sealed, template: m.template }, new.now)?;
        }
        insert_batch_tx(&tx, &events)?;
        tx.commit().doing("committing a new incident")?;
        Ok(Opened::Created(id))
    }

    /// Attaches a finding to the not-resolved incident of its type and
    /// subject; `None` (and nothing written) when there is none.
    pub fn attach_to_open_incident(&self, incident_type: IncidentType, subject_key: &str, a: &Attach<'_>) -> Result<Option<Attached>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to attach to an incident")?;
        let Some(id) = open_incident_id(&tx, incident_type, subject_key)? else {
            return Ok(None);
        };
        let current = read_incident(&tx, id)?.ok_or_else(|| no_such(id))?;
        let max_event_id: i64 = tx.query_row("SELECT max_event_id FROM incidents WHERE id = ?1", [id], |r| r.get(0)).doing("reading an incident")?;
        let (added, newest) = link_events(&tx, id, a.event_ids, current.event_count, max_event_id, a.max_linked)?;
        let severity_raised = (a.severity.rank() > current.severity.rank()).then_some((current.severity, a.severity));
        if severity_raised.is_some() {
            tx.execute("UPDATE incidents SET severity = ?2, priority = ?3 WHERE id = ?1", params![id, a.severity.as_str(), priority_name(a.priority.min(current.priority))])
                .doing("raising an incident's severity")?;
        }
        tx.execute(
            "UPDATE incidents SET event_count = event_count + ?2, max_event_id = ?3, updated_at = MAX(updated_at, ?4) WHERE id = ?1",
            params![id, added, newest, a.now.0],
        )
        .doing("attaching to an incident")?;
        // Where this finding goes on the timeline: a new `attached` entry,
        // or (no severity change) the one it continues.
        let target: Option<i64> = if severity_raised.is_some() {
            None
        } else {
            let newest_entry: Option<(i64, String, i64)> = tx
                .query_row("SELECT id, kind, at FROM incident_timeline WHERE incident_id = ?1 ORDER BY id DESC LIMIT 1", [id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .doing("reading an incident's timeline")?;
            match newest_entry {
                Some((eid, kind, at)) if kind == TimelineKind::Attached.as_str() && a.now.0 - at < a.coalesce_ms => Some(eid),
                _ => {
                    let attached: i64 = tx
                        .query_row("SELECT COUNT(*) FROM incident_timeline WHERE incident_id = ?1 AND kind = 'attached'", [id], |r| r.get(0))
                        .doing("reading an incident's timeline")?;
                    if attached >= a.max_attached_entries {
                        tx.query_row("SELECT MAX(id) FROM incident_timeline WHERE incident_id = ?1 AND kind = 'attached'", [id], |r| r.get(0))
                            .doing("reading an incident's timeline")?
                    } else {
                        None
                    }
                }
            }
        };
        match target {
            Some(eid) => {
                let old: String = tx.query_row("SELECT details FROM incident_timeline WHERE id = ?1", [eid], |r| r.get(0)).doing("reading a timeline entry")?;
                let old: serde_json::Value = serde_json::from_str(&old).unwrap_or_default();
                let events = old["events"].as_i64().unwrap_or(0) + added;
                let findings = old["findings"].as_i64().unwrap_or(0) + 1;
                let first_at = old["first_at"].as_str().map(str::to_owned).unwrap_or_else(|| a.now.rfc3339());
                let details = serde_json::json!({ "events": events, "findings": findings, "first_at": first_at, "last_at": a.now.rfc3339(), "finding": a.details });
                let text = attached_text(findings, events, None);
                tx.execute("UPDATE incident_timeline SET text = ?2, details = ?3 WHERE id = ?1", params![eid, text, details.to_string()]).doing("updating a timeline entry")?;
            }
            None => {
                let mut details = serde_json::json!({ "events": added, "findings": 1, "first_at": a.now.rfc3339(), "last_at": a.now.rfc3339(), "finding": a.details });
                if let Some((from, to)) = severity_raised {
                    details["severity_raised"] = serde_json::json!({ "from": from.as_str(), "to": to.as_str() });
                }
                let text = attached_text(1, added, severity_raised);
                insert_entry(&tx, id, &NewEntry { kind: TimelineKind::Attached, actor: a.actor, text: &text, details: &details }, a.now)?;
            }
        }
        tx.commit().doing("committing an attachment")?;
        Ok(Some(Attached { incident_id: id, events_added: added, severity_raised }))
    }

    /// Changes one incident and writes its timeline entry and `events`
    /// together; returns the incident as it is now.
    pub fn change_incident(&self, id: i64, change: &Change<'_>, entry: &NewEntry<'_>, events: &[Event], now: Millis) -> Result<Incident> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to change an incident")?;
        let current = read_incident(&tx, id)?.ok_or_else(|| no_such(id))?;
        let resolved = current.status == IncidentStatus::Resolved;
        let refuse = |what: &str| Error::Conflict(format!("incident {id} is resolved; it can no longer {what}"));
        match change {
            Change::Entry => {}
            Change::Assign(who) => {
                if resolved {
                    return Err(refuse("be assigned"));
                }
                tx.execute(
                    "UPDATE incidents SET assigned_to = ?2, status = CASE WHEN status = 'open' THEN 'investigating' ELSE status END WHERE id = ?1",
                    params![id, who],
                )
                .doing("assigning an incident")?;
            }
            Change::Status(status) => {
                if resolved {
                    return Err(refuse("change its status"));
                }
                if *status == IncidentStatus::Resolved {
                    return Err(Error::Conflict(format!("incident {id}: resolving needs resolution notes (`security incidents resolve {id} NOTES`)")));
                }
                tx.execute("UPDATE incidents SET status = ?2 WHERE id = ?1", params![id, status.as_str()]).doing("changing an incident's status")?;
            }
            Change::Resolve(notes) => {
                if let Some(at) = current.resolved_at {
                    return Err(Error::Conflict(format!("incident {id} is already resolved (at {})", at.rfc3339())));
                }
                tx.execute("UPDATE incidents SET status = 'resolved', resolved_at = ?2, resolution_notes = ?3 WHERE id = ?1", params![id, now.0, notes])
                    .doing("resolving an incident")?;
            }
            Change::Severity { severity, priority, escalation } => {
                if resolved {
                    return Err(refuse("be escalated"));
                }
                tx.execute(
                    "UPDATE incidents SET severity = ?2, priority = ?3,
                       escalations = escalations + ?4, escalated_at = CASE WHEN ?4 = 1 THEN ?5 ELSE escalated_at END WHERE id = ?1",
                    params![id, severity.as_str(), priority_name(*priority), *escalation as i64, now.0],
                )
                .doing("changing an incident's severity")?;
            }
        }
        tx.execute("UPDATE incidents SET updated_at = MAX(updated_at, ?2) WHERE id = ?1", params![id, now.0]).doing("changing an incident")?;
        insert_entry(&tx, id, entry, now)?;
        insert_batch_tx(&tx, events)?;
        let after = read_incident(&tx, id)?.ok_or_else(|| no_such(id))?;
        tx.commit().doing("committing an incident change")?;
        Ok(after)
    }

    pub fn incident(&self, id: i64) -> Result<Option<Incident>> {
        read_incident(&self.conn(), id)
    }

    /// Newest first (resolved ones by when they were resolved).
    pub fn incidents(&self, filter: IncidentFilter, limit: usize) -> Result<Vec<Incident>> {
        let clause = match filter {
            IncidentFilter::Open => "WHERE status <> 'resolved' ORDER BY created_at DESC, id DESC",
            IncidentFilter::Resolved => "WHERE status = 'resolved' ORDER BY resolved_at DESC, id DESC",
            IncidentFilter::All => "ORDER BY created_at DESC, id DESC",
        };
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("SELECT {INCIDENT_COLUMNS} FROM incidents {clause} LIMIT ?1")).doing("listing incidents")?;
        let rows = st.query_map([limit as i64], incident_from_row).doing("listing incidents")?;
        rows.collect::<rusqlite::Result<_>>().doing("listing incidents")
    }

    /// Not resolved, opened at or before `before`, oldest first.
    pub fn unresolved_incidents_opened_before(&self, before: Millis, limit: usize) -> Result<Vec<Incident>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE status <> 'resolved' AND created_at <= ?1 ORDER BY created_at, id LIMIT ?2"))
            .doing("listing unresolved incidents")?;
        let rows = st.query_map(params![before.0, limit as i64], incident_from_row).doing("listing unresolved incidents")?;
        rows.collect::<rusqlite::Result<_>>().doing("listing unresolved incidents")
    }

    pub fn incident_timeline(&self, id: i64) -> Result<Vec<TimelineEntry>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT id, incident_id, at, kind, actor, text, details FROM incident_timeline WHERE incident_id = ?1 ORDER BY id")
            .doing("reading an incident's timeline")?;
        let rows = st.query_map([id], entry_from_row).doing("reading an incident's timeline")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading an incident's timeline")
    }

    pub fn add_timeline_entry(&self, id: i64, entry: &NewEntry<'_>, now: Millis) -> Result<()> {
        self.change_incident(id, &Change::Entry, entry, &[], now).map(|_| ())
    }

    /// The ids of the linked events, oldest first.
    pub fn incident_event_ids(&self, id: i64, limit: usize) -> Result<Vec<i64>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT event_id FROM incident_events WHERE incident_id = ?1 ORDER BY event_id LIMIT ?2").doing("reading linked events")?;
        let rows = st.query_map(params![id, limit as i64], |r| r.get(0)).doing("reading linked events")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading linked events")
    }

    pub fn incident_evidence(&self, id: i64) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = self.conn().query_row("SELECT evidence FROM incidents WHERE id = ?1", [id], |r| r.get(0)).optional().doing("reading evidence")?;
        Ok(text.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::Null)))
    }

    /// (first_event_at, created_at, resolved_at) of the incidents resolved
    /// in `[from, to)`.
    pub fn incident_times_resolved_between(&self, from: Millis, to: Millis) -> Result<Vec<(Millis, Millis, Millis)>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT first_event_at, created_at, resolved_at FROM incidents WHERE resolved_at >= ?1 AND resolved_at < ?2")
            .doing("reading incident times")?;
        let rows = st.query_map(params![from.0, to.0], |r| Ok((Millis(r.get(0)?), Millis(r.get(1)?), Millis(r.get(2)?)))).doing("reading incident times")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading incident times")
    }

    /// Incidents opened in `[from, to)`.
    pub fn incidents_opened_between(&self, from: Millis, to: Millis) -> Result<i64> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM incidents WHERE created_at >= ?1 AND created_at < ?2", params![from.0, to.0], |r| r.get(0))
            .doing("counting incidents")
    }

    // ---- reads that capture evidence ----

    /// The events with these ids (at most 500), oldest first.
    pub fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<StoredEvent>> {
        let ids = &ids[..ids.len().min(500)];
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; ids.len()].join(",");
        let conn = self.conn();
        let mut st = conn.prepare(&format!("{EVENT_SELECT} WHERE id IN ({marks}) ORDER BY id")).doing("reading events by id")?;
        let rows = st.query_map(params_from_iter(ids.iter()), event_from_row).doing("reading events by id")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading events by id")
    }

    /// One address's events since a moment, newest first.
    pub fn events_from_ip(&self, ip: &str, since: Millis, limit: usize) -> Result<Vec<StoredEvent>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!("{EVENT_SELECT} WHERE ip = ?1 AND created_at >= ?2 ORDER BY created_at DESC, id DESC LIMIT ?3"))
            .doing("reading an address's events")?;
        let rows = st.query_map(params![ip, since.0, limit as i64], event_from_row).doing("reading an address's events")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading an address's events")
    }

    /// The accounts one address tried since a moment, over its newest
    /// `scan` events at most; the most tried first.
    pub fn accounts_tried_from(&self, ip: &str, since: Millis, scan: usize, limit: usize) -> Result<Vec<TriedAccount>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT username, user_id, COUNT(*), SUM(event_type = 'login_failed'), MIN(created_at), MAX(created_at) FROM (
                     SELECT username, user_id, event_type, created_at FROM security_events
                     WHERE ip = ?1 AND created_at >= ?2 AND (event_type = 'login_failed' OR event_type = 'login_success')
                     ORDER BY created_at DESC LIMIT ?3)
                 GROUP BY username, user_id ORDER BY COUNT(*) DESC, MIN(created_at) LIMIT ?4",
            )
            .doing("reading the accounts an address tried")?;
        let rows = st
            .query_map(params![ip, since.0, scan as i64, limit as i64], |r| {
                Ok(TriedAccount {
                    username: r.get(0)?,
                    user_id: r.get(1)?,
                    attempts: r.get(2)?,
                    failures: r.get(3)?,
                    first_at: Millis(r.get(4)?).rfc3339(),
                    last_at: Millis(r.get(5)?).rfc3339(),
                })
            })
            .doing("reading the accounts an address tried")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading the accounts an address tried")
    }

    /// When an address was first seen in the event log.
    pub fn address_first_seen(&self, ip: &str) -> Result<Option<Millis>> {
        let at: Option<i64> = self.conn().query_row("SELECT MIN(created_at) FROM security_events WHERE ip = ?1", [ip], |r| r.get(0)).doing("reading an address's history")?;
        Ok(at.map(Millis))
    }

    /// The email addresses of a group's members (case-insensitive name).
    pub fn group_emails(&self, group: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT DISTINCT u.email FROM users u JOIN user_groups g ON g.user_id = u.id
                 WHERE lower(g.group_name) = lower(?1) AND u.email IS NOT NULL AND u.email <> '' ORDER BY u.email",
            )
            .doing("reading a group's addresses")?;
        let rows = st.query_map([group], |r| r.get(0)).doing("reading a group's addresses")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading a group's addresses")
    }
}

fn open_incident_id(conn: &Connection, incident_type: IncidentType, subject_key: &str) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM incidents WHERE incident_type = ?1 AND subject_key = ?2 AND status <> 'resolved' ORDER BY id DESC LIMIT 1")
        .doing("finding an open incident")?
        .query_row(params![incident_type.as_str(), subject_key], |r| r.get(0))
        .optional()
        .doing("finding an open incident")
}

fn attached_text(findings: i64, events: i64, raised: Option<(IncidentSeverity, IncidentSeverity)>) -> String {
    let f = if findings == 1 { "1 finding".to_owned() } else { format!("{findings} findings") };
    let e = if events == 1 { "1 new event".to_owned() } else { format!("{events} new events") };
    match raised {
        Some((from, to)) => format!("{f} attached {e}; severity raised from {from} to {to}"),
        None => format!("{f} attached {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        store.migrate(None).expect("migrate");
        (dir, store)
    }

    fn open(store: &Store, subject: &Subject, dedup: bool, evidence: &serde_json::Value) -> Opened {
        open_with(store, subject, dedup, evidence, &[], 10)
    }

    fn open_with(store: &Store, subject: &Subject, dedup: bool, evidence: &serde_json::Value, ids: &[i64], max_linked: i64) -> Opened {
        let new = NewIncident {
            title: "t",
            incident_type: IncidentType::BruteForceIp,
            severity: IncidentSeverity::Medium,
            priority: 3,
            subject,
            rule: Some("brute_force_ip"),
            description: "",
            first_event_at: Millis(1),
            evidence,
            now: Millis(10),
        };
        let entry = NewEntry { kind: TimelineKind::Created, actor: "detection", text: "opened", details: &serde_json::json!({}) };
        store.create_incident(&new, dedup, ids, max_linked, &entry, |_| (Vec::new(), Vec::new())).expect("create")
    }

    /// The evidence column cannot be rewritten, not even by hand: the
    /// trigger refuses, and the stored text stays what it was.
    #[test]
    fn the_trigger_refuses_evidence_updates() {
        let (_dir, store) = store();
        let evidence = serde_json::json!({ "events": [{ "id": 1 }] });
        let Opened::Created(id) = open(&store, &Subject::Address("192.0.2.7".into()), true, &evidence) else { panic!("not created") };
        let err = store.conn().execute("UPDATE incidents SET evidence = '{}' WHERE id = ?1", [id]).expect_err("refused");
        assert!(err.to_string().contains("the evidence of an incident is kept unchanged"), "{err}");
        // Other columns still change; the same value written back is no change.
        store.conn().execute("UPDATE incidents SET title = 'x', evidence = evidence WHERE id = ?1", [id]).expect("other columns");
        assert_eq!(store.incident_evidence(id).expect("read"), Some(evidence));
    }

    /// One not-resolved incident per (rule, subject), enforced by the
    /// index even for a writer that skips the check; manual ones are exempt.
    #[test]
    fn one_open_incident_per_rule_and_subject() {
        let (_dir, store) = store();
        let subject = Subject::Address("192.0.2.7".into());
        let e = serde_json::json!({});
        let Opened::Created(first) = open(&store, &subject, true, &e) else { panic!("not created") };
        assert_eq!(open(&store, &subject, true, &e), Opened::Exists(first));
        // A writer that did not look first meets the index.
        assert_eq!(open(&store, &subject, false, &e), Opened::Exists(first));
        assert!(matches!(open(&store, &Subject::Address("192.0.2.8".into()), true, &e), Opened::Created(_)));
        let entry = NewEntry { kind: TimelineKind::Resolved, actor: "t", text: "done", details: &e };
        store.change_incident(first, &Change::Resolve("done"), &entry, &[], Millis(20)).expect("resolve");
        assert!(matches!(open(&store, &subject, true, &e), Opened::Created(id) if id != first));
    }

    /// Events are linked up to the bound; past it, newer events are
    /// counted, not linked, and never counted twice. `attached` entries
    /// stop at their bound too.
    #[test]
    fn links_and_attached_entries_stop_at_their_bounds() {
        let (_dir, store) = store();
        let subject = Subject::Address("192.0.2.7".into());
        let e = serde_json::json!({ "rule": "x" });
        let Opened::Created(id) = open_with(&store, &subject, true, &e, &[1, 2], 3) else { panic!("not created") };
        let attach = |ids: &[i64], now: i64| {
            let a = Attach {
                event_ids: ids,
                severity: IncidentSeverity::Medium,
                priority: 3,
                actor: "detection",
                details: &e,
                coalesce_ms: 0,
                max_attached_entries: 2,
                max_linked: 3,
                now: Millis(now),
            };
            store.attach_to_open_incident(IncidentType::BruteForceIp, &subject.key(), &a).expect("attach").expect("an open incident")
        };
        let linked = || store.incident_event_ids(id, 100).expect("links");
        let count = || store.incident(id).expect("read").expect("exists").event_count;
        assert_eq!((count(), linked()), (2, vec![1, 2]));
        // 3 is linked (the bound), 4 is counted.
        assert_eq!(attach(&[2, 3, 4], 20).events_added, 2);
        assert_eq!((count(), linked()), (4, vec![1, 2, 3]));
        // 3 and 4 were seen; only 5 is new.
        assert_eq!(attach(&[3, 4, 5], 30).events_added, 1);
        assert_eq!((count(), linked()), (5, vec![1, 2, 3]));
        // Third attachment: the two `attached` entries exist; it goes into the last.
        assert_eq!(attach(&[6], 40).events_added, 1);
        let timeline = store.incident_timeline(id).expect("timeline");
        assert_eq!(timeline.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>(), ["created", "attached", "attached"]);
        assert_eq!(timeline[2].details["findings"], 2);
        assert_eq!(timeline[2].details["events"], 2);
        assert_eq!(timeline[2].at, Millis(30));
        assert_eq!(timeline[2].details["last_at"], Millis(40).rfc3339());
        // Nothing to attach to for another subject.
        let a = Attach { event_ids: &[7], severity: IncidentSeverity::Low, priority: 4, actor: "d", details: &e, coalesce_ms: 0, max_attached_entries: 2, max_linked: 3, now: Millis(50) };
        assert_eq!(store.attach_to_open_incident(IncidentType::BruteForceIp, "address:192.0.2.8", &a).expect("attach"), None);
    }
}
