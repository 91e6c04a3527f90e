//! Tables for people, JSON for machines. Every text that may hold
//! attacker-supplied bytes goes through `escape_control` before a terminal
//! sees it; JSON goes through `json_terminal_safe` (serde_json escapes C0
//! controls only; C1, DEL and bidi overrides become `\uXXXX`, which is
//! still JSON that parses back to the same strings).

use crate::model::{escape_control, json_terminal_safe, Finding, Millis, SshKey, StoredEvent, Subject, User};
use crate::store::migrations::MigrationState;
use std::io::Write;

/// The zone table cells show times in (`timezone`, or UTC with `--utc`);
/// set once when the command's settings are loaded. JSON keeps RFC 3339 UTC.
static CLOCK: std::sync::OnceLock<crate::config::time::Clock> = std::sync::OnceLock::new();

pub fn set_clock(clock: crate::config::time::Clock) {
    let _ = CLOCK.set(clock);
}

/// A time for a table: `2026-12-01 19:14` in the command's zone.
pub(crate) fn at(t: Millis) -> String {
    match CLOCK.get() {
        Some(c) => c.show(t),
        None => crate::config::time::Clock::utc().show(t),
    }
}

/// The same from a stored RFC 3339 text (left as it is when it is not one).
fn at_text(t: &str) -> String {
    Millis::parse_rfc3339(t).map(at).unwrap_or_else(|| t.to_owned())
}

/// One JSON document, pretty, safe for a terminal.
fn json_text<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(json_terminal_safe(serde_json::to_string_pretty(value)?))
}

/// One JSON object on one line (follow mode), safe for a terminal.
fn json_line<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(json_terminal_safe(serde_json::to_string(value)?))
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    print_json_text(json_text(value)?)
}

/// A simple left-aligned table; cells are escaped and cut to a width.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = rows.into_iter().map(|r| r.into_iter().map(|c| escape_control(&c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count().min(60));
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let cut: String = c.chars().take(if i + 1 == cells.len() { 200 } else { 60 }).collect();
            if i + 1 == cells.len() {
                s.push_str(&cut);
            } else {
                s.push_str(&format!("{:<w$}  ", cut, w = widths[i]));
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(headers.iter().map(|h| h.to_string()).collect()))?;
    for r in rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

/// One thing as `name  value` lines, names padded to `width`, values
/// escaped.
fn fields(rows: Vec<(&str, String)>, width: usize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for (k, v) in rows {
        writeln!(out, "{k:<width$} {}", escape_control(&v))?;
    }
    Ok(())
}

/// A listing: with `--json` the array of each item's `to_json`; otherwise
/// `empty` when there is no item (`None`: the headers alone), else the
/// table of each item's `row`.
fn listing<'a, T, J: serde::Serialize>(
    list: &'a [T],
    json: bool,
    to_json: impl Fn(&'a T) -> J,
    empty: Option<&str>,
    headers: &[&str],
    row: impl Fn(&'a T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        return print_json(&list.iter().map(to_json).collect::<Vec<_>>());
    }
    if let (true, Some(text)) = (list.is_empty(), empty) {
        println!("{text}");
        return Ok(());
    }
    table(headers, list.iter().map(row).collect())
}

#[derive(serde::Serialize)]
struct UserJson<'a> {
    id: i64,
    username: &'a str,
    email: Option<&'a str>,
    groups: &'a [String],
    is_locked: bool,
    locked_until: Option<String>,
    lock_reason: Option<&'a str>,
    lock_source: Option<&'a str>,
    lock_incident_id: Option<i64>,
    must_reset_password: bool,
    password_changed_at: Option<String>,
    login_count: i64,
    last_login_at: Option<String>,
    last_login_ip: Option<&'a str>,
    created_at: String,
}

fn user_json(u: &User, now: Millis) -> UserJson<'_> {
    UserJson {
        id: u.id,
        username: &u.username,
        email: u.email.as_deref(),
        groups: &u.groups,
        is_locked: u.is_locked(now),
        locked_until: u.locked_until.filter(|t| *t > now).map(|t| t.rfc3339()),
        lock_reason: if u.is_locked(now) { u.lock_reason.as_deref() } else { None },
        lock_source: if u.is_locked(now) { u.lock_source.map(|s| s.as_str()) } else { None },
        lock_incident_id: if u.is_locked(now) { u.lock_incident_id } else { None },
        must_reset_password: u.must_reset_password,
        password_changed_at: u.password_changed_at.map(|t| t.rfc3339()),
        login_count: u.login_count,
        last_login_at: u.last_login_at.map(|t| t.rfc3339()),
        last_login_ip: u.last_login_ip.as_deref(),
        created_at: u.created_at.rfc3339(),
    }
}

pub fn users(list: &[User], json: bool, now: Millis) -> anyhow::Result<()> {
    listing(list, json, |u| user_json(u, now), None, &["ID", "USERNAME", "EMAIL", "GROUPS", "LOCKED", "LOGINS", "LAST LOGIN"], |u| {
        vec![
            u.id.to_string(),
            u.username.clone(),
            u.email.clone().unwrap_or_default(),
            u.groups.join(","),
            if u.is_locked(now) { "yes".into() } else { "no".into() },
            u.login_count.to_string(),
            u.last_login_at.map(at).unwrap_or_else(|| "never".into()),
        ]
    })
}

pub fn user(u: &User, json: bool, now: Millis) -> anyhow::Result<()> {
    if json {
        return print_json(&user_json(u, now));
    }
    let j = user_json(u, now);
    let rows = vec![
        ("id", j.id.to_string()),
        ("username", j.username.to_owned()),
        ("email", j.email.unwrap_or("").to_owned()),
        ("groups", j.groups.join(", ")),
        ("locked", match (&j.locked_until, j.lock_reason) {
            (Some(_), r) if u.locked_until == Some(crate::model::FOREVER) => format!("until unlocked, by the {} ({})", j.lock_source.unwrap_or("sysop"), r.unwrap_or("")),
            (Some(t), r) => format!("until {t}, by {} ({})", match j.lock_source {
                Some("rule") => match j.lock_incident_id {
                    Some(id) => format!("a rule, incident {id}; the owner's known addresses still get in"),
                    None => "a rule; the owner's known addresses still get in".to_owned(),
                },
                _ => "the sysop".to_owned(),
            }, r.unwrap_or("")),
            _ => "no".into(),
        }),
        ("must reset password", j.must_reset_password.to_string()),
        ("password changed", j.password_changed_at.unwrap_or_default()),
        ("logins", j.login_count.to_string()),
        ("last login", match (j.last_login_at, j.last_login_ip) {
            (Some(t), Some(ip)) => format!("{t} from {ip}"),
            _ => "never".into(),
        }),
        ("created", j.created_at),
    ];
    fields(rows, 20)
}

pub fn keys(list: &[SshKey], json: bool) -> anyhow::Result<()> {
    listing(list, json, |k| k, None, &["ID", "TYPE", "FINGERPRINT", "ADDED", "LAST USED", "COMMENT"], |k| {
        vec![
            k.id.to_string(),
            k.algorithm.clone(),
            k.fingerprint.clone(),
            at_text(&k.created_at),
            k.last_used_at.as_deref().map(at_text).unwrap_or_else(|| "never".into()),
            k.comment.clone(),
        ]
    })
}

/// `as_array`: one JSON array; otherwise (follow mode) one object per line.
pub fn events(list: &[StoredEvent], json: bool, as_array: bool) -> anyhow::Result<()> {
    if json {
        if as_array {
            return print_json(&list);
        }
        let mut out = std::io::stdout().lock();
        for e in list {
            writeln!(out, "{}", json_line(e)?)?;
        }
        out.flush()?;
        return Ok(());
    }
    if list.is_empty() && as_array {
        println!("no events");
        return Ok(());
    }
    let rows = list
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                at_text(&e.created_at),
                e.event_type.clone(),
                e.severity.clone(),
                e.username.clone().unwrap_or_default(),
                e.ip.clone().unwrap_or_default(),
                risk_cell(e),
                e.description.clone(),
            ]
        })
        .collect();
    table(&["ID", "TIME", "TYPE", "SEVERITY", "USER", "IP", "RISK", "DESCRIPTION"], rows)?;
    std::io::stdout().flush()?;
    Ok(())
}

/// The RISK column: the score, and the factors with their weights when
/// the event has them (`details.risk`, the events of a scored login):
/// "80 new_device+30 new_address+15 new_network+15 recent_failures+20".
/// Empty for an event with neither.
fn risk_cell(e: &StoredEvent) -> String {
    let factors: Vec<String> = e.details["risk"]["factors"]
        .as_array()
        .map(|list| list.iter().filter_map(|f| Some(format!("{}{:+}", f["name"].as_str()?, f["weight"].as_i64()?))).collect())
        .unwrap_or_default();
    match (e.risk_score, factors.is_empty()) {
        (0, true) => String::new(),
        (score, true) => score.to_string(),
        (score, false) => format!("{score} {}", factors.join(" ")),
    }
}

#[derive(serde::Serialize)]
struct ChainProblemJson {
    kind: &'static str,
    /// The first event concerned (none for a missing anchor).
    id: Option<i64>,
    /// The last missing id, for `missing`.
    to_id: Option<i64>,
    message: String,
}

#[derive(serde::Serialize)]
struct ChainReportJson {
    verified: bool,
    /// Events whose hash checked out (before the problem, if any).
    events: u64,
    /// Where the kept chain begins.
    first_id: i64,
    /// The last event that checked out, and its hash (hex).
    last_id: Option<i64>,
    last_hash: String,
    problem: Option<ChainProblemJson>,
}

/// `security events verify`: one line saying the log verified, or naming
/// the first broken or missing row (then how far it verified).
pub fn event_chain(r: &crate::store::chain::ChainReport, json: bool) -> anyhow::Result<()> {
    use crate::store::chain::ChainBreak;
    if json {
        return print_json(&ChainReportJson {
            verified: r.problem.is_none(),
            events: r.verified,
            first_id: r.first_id,
            last_id: r.last_id,
            last_hash: crate::store::chain::hex(&r.last_hash),
            problem: r.problem.as_ref().map(|p| ChainProblemJson {
                kind: p.kind(),
                id: p.id(),
                to_id: match p {
                    ChainBreak::Missing { to, .. } => Some(*to),
                    _ => None,
                },
                message: p.to_string(),
            }),
        });
    }
    let mut out = std::io::stdout().lock();
    match (&r.problem, r.last_id) {
        (None, Some(last)) => writeln!(out, "event log verified: {} events, chain from #{} to #{last}", r.verified, r.first_id)?,
        (None, None) => writeln!(out, "event log verified: 0 events (the chain continues at #{})", r.first_id)?,
        (Some(p), last) => {
            writeln!(out, "{p}")?;
            match last {
                Some(last) => writeln!(out, "event log NOT verified: {} events before it verified, from #{} to #{last}", r.verified, r.first_id)?,
                None => writeln!(out, "event log NOT verified: no event before it verified")?,
            }
        }
    }
    out.flush()?;
    Ok(())
}

#[derive(serde::Serialize)]
struct SessionJson<'a> {
    id: i64,
    user: &'a str,
    user_id: i64,
    protocol: &'a str,
    ip: &'a str,
    device_id: Option<i64>,
    client_version: &'a str,
    auth_method: &'a str,
    factors: u8,
    started_at: &'a str,
    last_activity_at: &'a str,
    ended_at: Option<&'a str>,
    end_reason: Option<&'a str>,
}

fn session_json(s: &crate::store::sessions::SessionRow) -> SessionJson<'_> {
    SessionJson {
        id: s.id,
        user: &s.username,
        user_id: s.user_id,
        protocol: &s.protocol,
        ip: &s.ip,
        device_id: s.device_id,
        client_version: &s.client_version,
        auth_method: &s.auth_method,
        factors: s.factors,
        started_at: &s.started_at,
        last_activity_at: &s.last_activity_at,
        ended_at: s.ended_at.as_deref(),
        end_reason: s.end_reason.as_deref(),
    }
}

/// `all`: the list holds ended sessions too (the table shows their end).
pub fn sessions(list: &[crate::store::sessions::SessionRow], json: bool, all: bool) -> anyhow::Result<()> {
    let mut headers = vec!["ID", "USER", "PROTOCOL", "IP", "DEVICE", "FACTORS", "STARTED", "LAST ACTIVITY"];
    if all {
        headers.extend(["ENDED", "END REASON"]);
    }
    listing(list, json, session_json, Some(if all { "no sessions" } else { "no open sessions" }), &headers, |s| {
        let mut row = vec![
            s.id.to_string(),
            s.username.clone(),
            s.protocol.clone(),
            s.ip.clone(),
            s.device_id.map(|d| d.to_string()).unwrap_or_default(),
            s.factors.to_string(),
            at_text(&s.started_at),
            at_text(&s.last_activity_at),
        ];
        if all {
            row.push(s.ended_at.clone().unwrap_or_else(|| "open".into()));
            row.push(s.end_reason.clone().unwrap_or_default());
        }
        row
    })
}

pub fn migrations(list: &[MigrationState], json: bool) -> anyhow::Result<()> {
    listing(list, json, |m| m, None, &["MIGRATION", "APPLIED"], |m| vec![m.name.clone(), m.applied_at.clone().unwrap_or_else(|| "pending".into())])
}

pub fn mfa_status(s: &crate::core::mfa::Status, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(s);
    }
    let state = match (s.enabled, s.pending) {
        (true, _) => format!("enabled ({}, {}, {} digits) since {}", s.method.as_deref().unwrap_or(""), s.algorithm.as_deref().unwrap_or(""), s.digits.unwrap_or(0), s.enabled_at.as_deref().unwrap_or("")),
        (false, true) => "enrollment pending (link sent, not confirmed)".into(),
        _ => "not enrolled".into(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<20} {}", "user", escape_control(&s.username))?;
    writeln!(out, "{:<20} {state}", "one-time codes")?;
    writeln!(out, "{:<20} {}", "backup codes left", s.backup_codes_left)?;
    writeln!(out, "{:<20} {}", "required level", s.required_level)?;
    if let Some(t) = &s.code_factor_closed_until {
        writeln!(out, "{:<20} closed until {t} after repeated failures", "code factor")?;
    }
    Ok(())
}

pub fn mail_queue(list: &[crate::store::mfa::OutboxRow], json: bool) -> anyhow::Result<()> {
    listing(list, json, |m| m, Some("the queue is empty"), &["ID", "TO", "TEMPLATE", "QUEUED", "ATTEMPTS", "NEXT / SENT", "LAST ERROR"], |m| {
        vec![
            m.id.to_string(),
            m.recipient.clone(),
            m.template.clone(),
            at_text(&m.created_at),
            m.attempts.to_string(),
            m.sent_at.clone().map(|t| format!("sent {t}")).unwrap_or_else(|| m.next_attempt_at.clone()),
            m.last_error.clone().unwrap_or_default(),
        ]
    })
}

// ---- daily metrics ----

#[derive(serde::Serialize)]
struct RollupJson<'a> {
    day: &'a str,
    logins: i64,
    failures: i64,
    attacking_addresses: i64,
    users: i64,
    users_mfa: i64,
    mfa_adoption_percent: Option<f64>,
    events_by_severity: std::collections::BTreeMap<&'static str, i64>,
    incidents_opened: i64,
    incidents_resolved: i64,
    mttd_ms: Option<i64>,
    mttr_ms: Option<i64>,
    blocked_addresses: i64,
    /// False for today (still running) or a day computed before it ended.
    is_final: bool,
    computed_at: String,
}

/// Bars for a series, one character a value: ' ' for 0, `▁`..`█` scaled to
/// the largest, `·` where there is no value (no MTTR on a day without a
/// resolved incident). Plain characters: no colour, no control bytes.
pub fn spark_bars(values: &[Option<f64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().flatten().fold(0.0_f64, |m, v| m.max(*v));
    values
        .iter()
        .map(|v| match v {
            None => '·',
            Some(v) if *v <= 0.0 || max <= 0.0 => ' ',
            Some(v) => BARS[(((v / max) * 8.0).ceil() as usize).clamp(1, 8) - 1],
        })
        .collect()
}

pub fn daily_metrics(list: &[crate::core::rollups::DailyRollup], json: bool, chart: bool) -> anyhow::Result<()> {
    if json {
        let rows: Vec<RollupJson<'_>> = list
            .iter()
            .map(|r| RollupJson {
                day: &r.day,
                logins: r.logins,
                failures: r.failures,
                attacking_addresses: r.attacking_addresses,
                users: r.users,
                users_mfa: r.users_mfa,
                mfa_adoption_percent: r.mfa_adoption_percent().map(|p| (p * 10.0).round() / 10.0),
                events_by_severity: [("info", r.events_info), ("low", r.events_low), ("medium", r.events_medium), ("high", r.events_high), ("critical", r.events_critical)].into_iter().collect(),
                incidents_opened: r.incidents_opened,
                incidents_resolved: r.incidents_resolved,
                mttd_ms: r.mttd_ms,
                mttr_ms: r.mttr_ms,
                blocked_addresses: r.blocked_addresses,
                is_final: r.is_final(),
                computed_at: r.computed_at.rfc3339(),
            })
            .collect();
        return print_json(&rows);
    }
    let dash = || "-".to_owned();
    table(
        &["DAY", "LOGINS", "FAILED", "ATTACKERS", "MFA", "EVENTS I/L/M/H/C", "INC OPEN", "INC RESOLVED", "MTTD", "MTTR", "BLOCKED"],
        list.iter()
            .map(|r| {
                vec![
                    if r.is_final() { r.day.clone() } else { format!("{}*", r.day) },
                    r.logins.to_string(),
                    r.failures.to_string(),
                    r.attacking_addresses.to_string(),
                    r.mfa_adoption_percent().map(|p| format!("{p:.0}% ({}/{})", r.users_mfa, r.users)).unwrap_or_else(dash),
                    format!("{}/{}/{}/{}/{}", r.events_info, r.events_low, r.events_medium, r.events_high, r.events_critical),
                    r.incidents_opened.to_string(),
                    r.incidents_resolved.to_string(),
                    r.mttd_ms.map(duration_ms).unwrap_or_else(dash),
                    r.mttr_ms.map(duration_ms).unwrap_or_else(dash),
                    r.blocked_addresses.to_string(),
                ]
            })
            .collect(),
    )?;
    let mut out = std::io::stdout().lock();
    if list.iter().any(|r| !r.is_final()) {
        writeln!(out, "* still running or computed before the day ended")?;
    }
    if chart && !list.is_empty() {
        let first = list.first().map(|r| r.day.as_str()).unwrap_or("");
        let last = list.last().map(|r| r.day.as_str()).unwrap_or("");
        writeln!(out, "\ndaily, {first} .. {last} (one column a day)")?;
        let series: [(&str, Vec<Option<f64>>, fn(f64) -> String); 6] = [
            ("logins", list.iter().map(|r| Some(r.logins as f64)).collect(), |v| format!("{v}")),
            ("failed", list.iter().map(|r| Some(r.failures as f64)).collect(), |v| format!("{v}")),
            ("attackers", list.iter().map(|r| Some(r.attacking_addresses as f64)).collect(), |v| format!("{v}")),
            ("incidents", list.iter().map(|r| Some(r.incidents_opened as f64)).collect(), |v| format!("{v}")),
            ("blocked", list.iter().map(|r| Some(r.blocked_addresses as f64)).collect(), |v| format!("{v}")),
            ("mttr", list.iter().map(|r| r.mttr_ms.map(|m| m as f64)).collect(), |v| duration_ms(v as i64)),
        ];
        for (name, values, show) in series {
            let max = values.iter().flatten().fold(0.0_f64, |m, v| m.max(*v));
            let max = if values.iter().any(Option::is_some) { show(max) } else { "-".to_owned() };
            writeln!(out, "{name:<10} |{}| max {max}", spark_bars(&values))?;
        }
    }
    Ok(())
}

// ---- incidents ----

/// A duration for people: `850ms`, `42s`, `3m 5s`, `2h 0m 7s`, `3d 4h 0m 0s`.
pub fn duration_ms(ms: i64) -> String {
    if ms < 1000 {
        return format!("{}ms", ms.max(0));
    }
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m {s}s"),
    }
}

#[derive(serde::Serialize)]
struct SubjectJson<'a> {
    kind: &'static str,
    key: String,
    /// The username, address or network.
    name: Option<&'a str>,
    user_id: Option<i64>,
}

fn subject_json(s: &crate::model::Subject) -> SubjectJson<'_> {
    use crate::model::Subject;
    let (kind, name, user_id) = match s {
        Subject::Account { user_id, username } => ("account", Some(username.as_str()), *user_id),
        Subject::Address(a) => ("address", Some(a.as_str()), None),
        Subject::Network(n) => ("network", Some(n.as_str()), None),
        Subject::Gate => ("gate", None, None),
    };
    SubjectJson { kind, key: s.key(), name, user_id }
}

#[derive(serde::Serialize)]
struct IncidentJson<'a> {
    id: i64,
    title: &'a str,
    incident_type: &'static str,
    severity: &'static str,
    priority: String,
    status: &'static str,
    assigned_to: Option<&'a str>,
    created_at: String,
    resolved_at: Option<String>,
    event_count: i64,
    subject: SubjectJson<'a>,
    /// The detection rule that opened it; null when opened by hand.
    rule: Option<&'a str>,
    first_event_at: String,
    updated_at: String,
    escalations: u32,
    escalated_at: Option<String>,
    mttd_ms: i64,
    mttr_ms: Option<i64>,
}

fn incident_json(i: &crate::core::incidents::Incident) -> IncidentJson<'_> {
    use crate::core::incidents::{mttd_ms, mttr_ms, priority_name};
    IncidentJson {
        id: i.id,
        title: &i.title,
        incident_type: i.incident_type.as_str(),
        severity: i.severity.as_str(),
        priority: priority_name(i.priority),
        status: i.status.as_str(),
        assigned_to: i.assigned_to.as_deref(),
        created_at: i.created_at.rfc3339(),
        resolved_at: i.resolved_at.map(|t| t.rfc3339()),
        event_count: i.event_count,
        subject: subject_json(&i.subject),
        rule: i.rule.as_deref(),
        first_event_at: i.first_event_at.rfc3339(),
        updated_at: i.updated_at.rfc3339(),
        escalations: i.escalations,
        escalated_at: i.escalated_at.map(|t| t.rfc3339()),
        mttd_ms: mttd_ms(i),
        mttr_ms: mttr_ms(i),
    }
}

pub fn incidents(list: &[crate::core::incidents::Incident], json: bool) -> anyhow::Result<()> {
    let headers = ["ID", "STATUS", "SEVERITY", "PRIORITY", "TYPE", "SUBJECT", "EVENTS", "ASSIGNED", "CREATED", "TITLE"];
    listing(list, json, incident_json, Some("no incidents"), &headers, |i| {
        vec![
            i.id.to_string(),
            i.status.to_string(),
            i.severity.to_string(),
            crate::core::incidents::priority_name(i.priority),
            i.incident_type.to_string(),
            i.subject.key(),
            i.event_count.to_string(),
            i.assigned_to.clone().unwrap_or_else(|| "-".into()),
            at(i.created_at),
            i.title.clone(),
        ]
    })
}

#[derive(serde::Serialize)]
struct TimelineJson<'a> {
    id: i64,
    at: String,
    kind: &'static str,
    actor: &'a str,
    text: &'a str,
    details: &'a serde_json::Value,
}

#[derive(serde::Serialize)]
struct IncidentShowJson<'a> {
    #[serde(flatten)]
    incident: IncidentJson<'a>,
    description: &'a str,
    resolution_notes: Option<&'a str>,
    timeline: Vec<TimelineJson<'a>>,
    event_ids: &'a [i64],
    evidence: &'a serde_json::Value,
}

pub fn incident(v: &crate::core::incidents::IncidentView, json: bool) -> anyhow::Result<()> {
    let i = &v.incident;
    if json {
        return print_json(&IncidentShowJson {
            incident: incident_json(i),
            description: &i.description,
            resolution_notes: i.resolution_notes.as_deref(),
            timeline: v
                .timeline
                .iter()
                .map(|e| TimelineJson { id: e.id, at: e.at.rfc3339(), kind: e.kind.as_str(), actor: &e.actor, text: &e.text, details: &e.details })
                .collect(),
            event_ids: &v.event_ids,
            evidence: &v.evidence,
        });
    }
    use crate::core::incidents::{mttd_ms, mttr_ms, priority_name, subject_text};
    let status = match (&i.assigned_to, i.status) {
        (Some(who), s) => format!("{s} (assigned to {who})"),
        (None, s) => s.to_string(),
    };
    let mut rows = vec![
        ("incident", format!("{}: {}", i.id, i.title)),
        ("status", status),
        ("type", i.incident_type.to_string()),
        ("severity", format!("{} ({})", i.severity, priority_name(i.priority))),
        ("subject", subject_text(&i.subject)),
        ("events", i.event_count.to_string()),
        ("first event", at(i.first_event_at)),
        ("opened", at(i.created_at)),
        ("MTTD", duration_ms(mttd_ms(i))),
    ];
    if let Some(rule) = &i.rule {
        rows.insert(3, ("rule", rule.clone()));
    }
    if let Some(at) = i.resolved_at {
        rows.push(("resolved", self::at(at)));
        rows.push(("MTTR", duration_ms(mttr_ms(i).unwrap_or(0))));
    }
    if i.escalations > 0 {
        rows.push(("escalations", format!("{} (last {})", i.escalations, i.escalated_at.map(at).unwrap_or_default())));
    }
    if !i.description.is_empty() {
        rows.push(("description", i.description.clone()));
    }
    if let Some(n) = &i.resolution_notes {
        rows.push(("resolution", n.clone()));
    }
    let ev = &v.evidence;
    let count = |k: &str, one: &str, many: &str| crate::flow::pager::count(ev[k].as_array().map_or(0, Vec::len) as u64, one, many);
    rows.push((
        "evidence",
        format!("{}, {}, {}, {} (--json shows it)", count("events", "event", "events"), count("devices", "device", "devices"), count("sessions", "session", "sessions"), count("addresses", "address", "addresses")),
    ));
    let shown: Vec<String> = v.event_ids.iter().take(20).map(i64::to_string).collect();
    let more = if v.event_ids.len() > 20 { format!(" and {} more", v.event_ids.len() - 20) } else { String::new() };
    rows.push(("linked events", if shown.is_empty() { "none".into() } else { format!("{}{more}", shown.join(", ")) }));
    fields(rows, 14)?;
    println!();
    table(
        &["TIME", "KIND", "ACTOR", "TEXT"],
        v.timeline.iter().map(|e| vec![at(e.at), e.kind.to_string(), e.actor.clone(), e.text.clone()]).collect(),
    )
}

#[derive(serde::Serialize)]
struct BlockJson<'a> {
    /// An address or a CIDR network.
    address: &'a str,
    reason: &'a str,
    created_at: String,
    expires_at: Option<String>,
    incident_id: Option<i64>,
    source: &'a str,
    created_by: &'a str,
    /// Earlier blocks of the address when this one was made.
    repeat: u32,
}

fn block_json(b: &crate::store::blocks::BlockRow) -> BlockJson<'_> {
    BlockJson {
        address: &b.network,
        reason: &b.reason,
        created_at: b.created_at.rfc3339(),
        expires_at: b.expires_at.map(|t| t.rfc3339()),
        incident_id: b.incident_id,
        source: &b.source,
        created_by: &b.created_by,
        repeat: b.repeat,
    }
}

pub fn blocks(list: &[crate::store::blocks::BlockRow], json: bool) -> anyhow::Result<()> {
    listing(list, json, block_json, Some("no address is blocked"), &["ADDRESS", "SOURCE", "CREATED", "EXPIRES", "INCIDENT", "BY", "REASON"], |b| {
        vec![
            b.network.clone(),
            b.source.clone(),
            at(b.created_at),
            b.expires_at.map(at).unwrap_or_else(|| "when unblocked".into()),
            b.incident_id.map(|i| i.to_string()).unwrap_or_default(),
            b.created_by.clone(),
            b.reason.clone(),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_bars_scale_to_the_largest_and_mark_gaps() {
        for (values, want) in [
            (vec![Some(0.0), Some(1.0), Some(4.0), Some(8.0)], " ▁▄█"),
            (vec![Some(0.0), Some(0.0)], "  "),
            (vec![None, Some(3.0), None], "·█·"),
            (vec![Some(1.0), Some(1000.0)], "▁█"),
            (vec![], ""),
        ] {
            assert_eq!(spark_bars(&values), want, "{values:?}");
        }
        // Only block characters, spaces and the dot: nothing a terminal interprets.
        assert!(!spark_bars(&[Some(1.0), None, Some(2.0)]).chars().any(crate::model::is_terminal_unsafe));
    }

    /// The draft finished with the incidents is the text of the finished
    /// report, whatever the findings' strings hold (a key-like line in a
    /// title included), with and without other kinds before it.
    #[test]
    fn a_finished_scan_draft_is_the_finished_report() {
        use crate::core::detect::scan::SuspiciousScan;
        use crate::core::scans::{IncidentCounts, ScanKind, ScanReport, SessionScan};
        use crate::model::{Finding, IncidentSeverity, IncidentType, Millis, Subject};
        let hostile = Finding {
            incident_type: IncidentType::BruteForceIp,
            subject: Subject::Address("192.0.2.1".into()),
            severity: IncidentSeverity::Medium,
            title: "x\n  \"incidents\": {\u{7f}".into(),
            description: "d".into(),
            event_ids: vec![1, 2],
            first_event_at: Millis(1_800_000_000_000),
            details: serde_json::json!({ "rule": "brute_force_ip", "incidents": 7 }),
        };
        let sessions = SessionScan { open: 3, closed: 1, still_open: 2, stale_after_seconds: 60, findings: Vec::new() };
        let suspicious = SuspiciousScan { since: Millis(1_800_000_000_000), events_read: 9, findings: vec![hostile.clone()] };
        let so_far = IncidentCounts { opened: 1, attached: 0, folded: 0 };
        let done = IncidentCounts { opened: 4, attached: 12, folded: 30 };
        for (sessions, suspicious) in [(None, None), (Some(sessions.clone()), None), (None, Some(suspicious.clone())), (Some(sessions), Some(suspicious))] {
            let summary = if suspicious.is_some() { vec![hostile.clone()] } else { Vec::new() };
            let mut r = ScanReport { kinds: vec![ScanKind::Sessions, ScanKind::Suspicious], passwords: None, mfa: None, sessions, suspicious, suspicious_summary: summary, incidents: so_far };
            let draft = scan_json_draft(&r).expect("draft");
            r.incidents = done;
            assert_eq!(scan_json_finish(draft, done).expect("finish"), json_text(&scan_json(&r)).expect("report"));
        }
    }

    fn event(username: &str, description: &str) -> StoredEvent {
        StoredEvent {
            id: 1,
            event_type: "login_failed".into(),
            category: "authentication".into(),
            severity: "low".into(),
            description: description.into(),
            is_suspicious: false,
            risk_score: 0,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            user_id: None,
            username: Some(username.into()),
            ip: Some("127.0.0.1".into()),
            device_id: None,
            session_id: None,
            details: serde_json::json!({ "client_version": "SSH-2.0-\u{9d}0;x\u{7}" }),
        }
    }

    /// What `--json` prints (pretty and follow mode) has no raw C1, DEL or
    /// bidi character anywhere, and parses back to the stored strings.
    #[test]
    fn json_output_is_terminal_safe_and_round_trips() {
        let names = ["root\u{9b}2J", "adm\u{202e}nimda", "del\u{7f}", "\u{1b}]0;pwned\u{7}", "plain", "ünï\u{2066}"];
        for name in names {
            let e = event(name, &format!("password login failed for {name}"));
            for text in [json_text(&e).expect("json"), json_line(&e).expect("json"), json_text(&vec![&e]).expect("json")] {
                assert!(!text.chars().any(|c| c != '\n' && crate::model::is_terminal_unsafe(c)), "{text:?}");
                let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
                let obj = if v.is_array() { &v[0] } else { &v };
                assert_eq!(obj["username"].as_str(), Some(name), "{text}");
                assert_eq!(obj["description"].as_str(), Some(format!("password login failed for {name}").as_str()));
                assert_eq!(obj["details"]["client_version"].as_str(), Some("SSH-2.0-\u{9d}0;x\u{7}"));
            }
        }
        assert!(json_line(&event("x\u{9b}", "d")).expect("json").contains(r#""username":"x\u009b""#));
    }

    #[test]
    fn risk_cell_shows_the_score_and_factors() {
        let plain = event("alice", "d");
        assert_eq!(risk_cell(&plain), "");
        let scored = StoredEvent { risk_score: 60, ..event("alice", "d") };
        assert_eq!(risk_cell(&scored), "60");
        let factors = serde_json::json!({ "risk": { "score": 35, "decision": "allow", "factors": [{ "name": "new_device", "weight": 30 }, { "name": "trusted_device", "weight": -30 }, { "name": "recent_failures", "weight": 20, "note": "3 within 1h" }] } });
        let login = StoredEvent { risk_score: 20, details: factors, ..event("alice", "d") };
        assert_eq!(risk_cell(&login), "20 new_device+30 trusted_device-30 recent_failures+20");
    }

    #[test]
    fn durations_for_people() {
        let cases = [(0, "0ms"), (850, "850ms"), (42_000, "42s"), (185_000, "3m 5s"), (7_207_000, "2h 0m 7s"), (360_000_000, "4d 4h 0m 0s"), (-5, "0ms")];
        for (ms, want) in cases {
            assert_eq!(duration_ms(ms), want, "{ms}");
        }
    }
}

#[derive(serde::Serialize)]
struct WebhookJson<'a> {
    name: &'a str,
    /// Scheme, host and port: the path may hold a token.
    url: String,
    preset: &'static str,
    timeout: String,
    max_attempts: u32,
}

pub fn webhooks(list: &[crate::config::webhooks::WebhookSettings], json: bool) -> anyhow::Result<()> {
    let rows: Vec<WebhookJson<'_>> = list
        .iter()
        .map(|w| WebhookJson { name: &w.name, url: w.url.shown(), preset: w.preset.as_str(), timeout: crate::config::playbooks::show_duration(w.timeout), max_attempts: w.max_attempts })
        .collect();
    listing(&rows, json, |w| w, Some("no webhooks are configured"), &["NAME", "URL", "PRESET", "TIMEOUT", "ATTEMPTS"], |w| {
        vec![w.name.to_owned(), w.url.clone(), w.preset.to_owned(), w.timeout.clone(), w.max_attempts.to_string()]
    })
}

pub fn webhook_queue(list: &[crate::store::webhooks::DeliveryRow], json: bool) -> anyhow::Result<()> {
    let headers = ["ID", "WEBHOOK", "EVENT", "INCIDENT", "QUEUED", "ATTEMPTS", "NEXT / DONE", "LAST ERROR"];
    listing(list, json, |d| d, Some("the queue is empty"), &headers, |d| {
        let state = match (&d.sent_at, &d.gave_up_at, &d.next_attempt_at) {
            (Some(t), _, _) => format!("sent {t}"),
            (None, Some(t), _) => format!("gave up {t}"),
            (None, None, Some(t)) => t.clone(),
            (None, None, None) => String::new(),
        };
        vec![
            d.id.to_string(),
            d.webhook.clone(),
            d.event.clone(),
            d.incident_id.map(|i| i.to_string()).unwrap_or_default(),
            at_text(&d.created_at),
            d.attempts.to_string(),
            state,
            d.last_error.clone().unwrap_or_default(),
        ]
    })
}

#[derive(serde::Serialize)]
struct FindingJson<'a> {
    incident_type: &'static str,
    rule: &'a str,
    severity: &'static str,
    subject: String,
    subject_key: String,
    title: &'a str,
    description: &'a str,
    event_ids: &'a [i64],
    first_event_at: String,
    details: &'a serde_json::Value,
}

/// How a subject reads in a table ("account alice (#3)", an address, a
/// network, "gate").
fn subject_text(s: &Subject) -> String {
    match s {
        Subject::Account { user_id: Some(id), username } => format!("account {username} (#{id})"),
        Subject::Account { user_id: None, username } => format!("account name {username}"),
        Subject::Address(a) => a.clone(),
        Subject::Network(n) => n.clone(),
        Subject::Gate => "gate".to_owned(),
    }
}

fn finding_json(f: &Finding) -> FindingJson<'_> {
    FindingJson {
        incident_type: f.incident_type.as_str(),
        rule: f.details.get("rule").and_then(|v| v.as_str()).unwrap_or(""),
        severity: f.severity.as_str(),
        subject: subject_text(&f.subject),
        subject_key: f.subject.key(),
        title: &f.title,
        description: &f.description,
        event_ids: &f.event_ids,
        first_event_at: f.first_event_at.rfc3339(),
        details: &f.details,
    }
}

#[derive(serde::Serialize)]
struct SuspiciousJson<'a> {
    since: String,
    events_read: u64,
    findings: Vec<FindingJson<'a>>,
}

#[derive(serde::Serialize)]
struct ScanJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    passwords: Option<&'a crate::core::scans::PasswordScan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa: Option<&'a crate::core::scans::MfaScan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sessions: Option<&'a crate::core::scans::SessionScan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suspicious: Option<SuspiciousJson<'a>>,
    incidents: crate::core::scans::IncidentCounts,
}

fn scan_json(r: &crate::core::scans::ScanReport) -> ScanJson<'_> {
    ScanJson {
        passwords: r.passwords.as_ref(),
        mfa: r.mfa.as_ref(),
        sessions: r.sessions.as_ref(),
        suspicious: r.suspicious.as_ref().map(|s| SuspiciousJson { since: s.since.rfc3339(), events_read: s.events_read, findings: r.suspicious_summary.iter().map(finding_json).collect() }),
        incidents: r.incidents,
    }
}

/// `security scan --json`'s text with the incidents counted so far: made
/// beside the opening of the suspicious findings' incidents
/// (`Core::scan_with`), finished by `scan_json_finish`.
pub fn scan_json_draft(r: &crate::core::scans::ScanReport) -> anyhow::Result<String> {
    json_text(&scan_json(r))
}

/// The draft with its `incidents` (the object's last key) replaced by
/// `incidents`: the same text `scan_report` prints for the finished report.
pub fn scan_json_finish(mut draft: String, incidents: crate::core::scans::IncidentCounts) -> anyhow::Result<String> {
    // Pretty output puts each top-level key on a line of its own, indented
    // by two; a newline inside a string is escaped, so the last such line
    // is the key's.
    const KEY: &str = "\n  \"incidents\": ";
    let at = draft.rfind(KEY).ok_or_else(|| anyhow::anyhow!("the scan's JSON report has no incidents key"))?;
    draft.truncate(at + KEY.len());
    draft.push_str(&serde_json::to_string_pretty(&incidents)?.replace('\n', "\n  "));
    draft.push_str("\n}");
    Ok(draft)
}

/// Prints a text made by `json_text` and its newline.
pub fn print_json_text(mut text: String) -> anyhow::Result<()> {
    text.push('\n');
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// The report of `security scan`: a section per kind run (counts, then
/// the findings), then the incidents; `--json`: one object with a key per
/// kind and `incidents`.
pub fn scan_report(r: &crate::core::scans::ScanReport, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&scan_json(r));
    }
    let mut first = true;
    let mut gap = || {
        if !std::mem::take(&mut first) {
            println!();
        }
    };
    if let Some(p) = &r.passwords {
        gap();
        println!("passwords: {} in {}", crate::flow::pager::count(p.findings.len() as u64, "finding", "findings"), crate::flow::pager::count(p.accounts as u64, "account", "accounts"));
        if !p.findings.is_empty() {
            table(
                &["USER", "FINDING", "DETAIL"],
                p.findings
                    .iter()
                    .map(|f| {
                        let detail = match f.finding {
                            "hash_below_iterations" => format!("{} iterations, the policy asks {}", f.iterations.unwrap_or(0), f.required_iterations.unwrap_or(0)),
                            "password_old" => format!("{} days old, the limit is {}", f.age_days.unwrap_or(0), f.max_age_days.unwrap_or(0)),
                            "password_weak" => format!("{} (at the login of {})", f.reasons.as_deref().unwrap_or(&[]).join(", "), f.checked_at.as_deref().unwrap_or("?")),
                            "hash_unreadable" => "the stored hash cannot be read".to_owned(),
                            _ => String::new(),
                        };
                        vec![f.username.clone(), f.finding.to_owned(), detail]
                    })
                    .collect(),
            )?;
        }
    }
    if let Some(m) = &r.mfa {
        gap();
        println!("mfa: {} in {}", crate::flow::pager::count(m.findings.len() as u64, "finding", "findings"), crate::flow::pager::count(m.accounts as u64, "account", "accounts"));
        if !m.findings.is_empty() {
            table(
                &["USER", "FINDING", "SYSOP", "LEVEL", "REQUIRED", "INCIDENT"],
                m.findings
                    .iter()
                    .map(|f| {
                        vec![
                            f.username.clone(),
                            f.finding.to_owned(),
                            if f.sysop { "yes" } else { "no" }.to_owned(),
                            f.level.to_string(),
                            f.required_level.to_string(),
                            f.incident_id.map(|i| format!("#{i}")).unwrap_or_else(|| "-".to_owned()),
                        ]
                    })
                    .collect(),
            )?;
        }
    }
    if let Some(s) = &r.sessions {
        gap();
        println!("sessions: {} closed, {} still open (of {} open; expired after {} s without a sign of life)", crate::flow::pager::count(s.closed as u64, "expired session", "expired sessions"), s.still_open, s.open, s.stale_after_seconds);
        if !s.findings.is_empty() {
            table(
                &["SESSION", "USER", "IP", "STARTED", "LAST SIGN OF LIFE"],
                s.findings.iter().map(|f| vec![f.session_id.to_string(), f.username.clone(), f.ip.clone(), at_text(&f.started_at), at_text(&f.ended_at)]).collect(),
            )?;
        }
    }
    if let Some(s) = &r.suspicious {
        gap();
        let list = &r.suspicious_summary;
        println!("suspicious: {} in {} since {}", crate::flow::pager::count(list.len() as u64, "finding", "findings"), crate::flow::pager::count(s.events_read as u64, "event", "events"), at(s.since));
        if !list.is_empty() {
            table(
                &["TYPE", "SEVERITY", "SUBJECT", "EVENTS", "FIRST EVENT", "TITLE"],
                list.iter()
                    .map(|f| vec![f.incident_type.as_str().to_owned(), f.severity.as_str().to_owned(), subject_text(&f.subject), f.event_ids.len().to_string(), at(f.first_event_at), f.title.clone()])
                    .collect(),
            )?;
        }
    }
    let i = r.incidents;
    if i.opened + i.attached > 0 {
        gap();
        let folded = if i.folded > 0 { format!("; {} reported in their network's incident", crate::flow::pager::count(i.folded as u64, "address finding", "address findings")) } else { String::new() };
        println!("incidents: {} opened, {} already open{folded} (see `security incidents list`)", i.opened, i.attached);
    }
    std::io::stdout().flush()?;
    Ok(())
}

#[derive(serde::Serialize)]
struct DeviceJson<'a> {
    id: i64,
    device_name: &'a str,
    device_type: &'a str,
    is_trusted: bool,
    risk_score: u8,
    last_seen_at: &'a str,
    first_seen_at: &'a str,
    user_id: i64,
    username: &'a str,
    last_ip: &'a str,
    /// The addresses it was seen at, the most recent first (bounded).
    addresses: Vec<&'a str>,
    login_count: i64,
    failure_count: i64,
    client_version: &'a str,
    hassh: Option<&'a str>,
    hassh_algorithms: Option<&'a str>,
    key_fingerprint: Option<&'a str>,
    trusted_at: Option<&'a str>,
    trusted_by: Option<&'a str>,
    /// Until when a hardware key's approval stands for the device.
    key_trusted_until: Option<String>,
}

/// An account's devices, each with the addresses it was seen at.
pub fn devices(list: &[(crate::store::devices::DeviceRow, Vec<crate::store::devices::DeviceAddress>)], json: bool) -> anyhow::Result<()> {
    if json {
        let rows: Vec<DeviceJson<'_>> = list
            .iter()
            .map(|(d, addresses)| DeviceJson {
                id: d.id,
                device_name: &d.device_name,
                device_type: &d.device_type,
                is_trusted: d.is_trusted,
                risk_score: d.risk_score,
                last_seen_at: &d.last_seen_at,
                first_seen_at: &d.first_seen_at,
                user_id: d.user_id,
                username: &d.username,
                last_ip: &d.last_ip,
                addresses: addresses.iter().map(|a| a.ip.as_str()).collect(),
                login_count: d.login_count,
                failure_count: d.failure_count,
                client_version: &d.client_version,
                hassh: d.hassh.as_deref(),
                hassh_algorithms: d.hassh_algorithms.as_deref(),
                key_fingerprint: d.key_fingerprint.as_deref(),
                trusted_at: d.trusted_at.as_deref(),
                trusted_by: d.trusted_by.as_deref(),
                key_trusted_until: d.key_trusted_until.map(|t| t.rfc3339()),
            })
            .collect();
        return print_json(&rows);
    }
    if list.is_empty() {
        println!("no devices");
        return Ok(());
    }
    table(
        &["ID", "TRUSTED", "TYPE", "LOGINS", "FAILURES", "RISK", "LAST SEEN", "LAST IP", "ADDRESSES", "HASSH", "NAME"],
        list.iter()
            .map(|(d, addresses)| {
                vec![
                    d.id.to_string(),
                    if d.is_trusted { "yes".into() } else { "no".into() },
                    d.device_type.clone(),
                    d.login_count.to_string(),
                    d.failure_count.to_string(),
                    d.risk_score.to_string(),
                    at_text(&d.last_seen_at),
                    d.last_ip.clone(),
                    addresses.len().to_string(),
                    d.hassh.clone().unwrap_or_else(|| "unknown".into()),
                    d.device_name.clone(),
                ]
            })
            .collect(),
    )
}

/// `security webauthn list`: a user's hardware keys (the seed's fields
/// first in `--json`).
pub fn webauthn_keys(keys: &[crate::core::webauthn::KeyInfo], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&keys);
    }
    if keys.is_empty() {
        println!("no hardware keys");
        return Ok(());
    }
    table(
        &["ID", "TYPE", "ATTACHMENT", "AUTHENTICATOR", "COUNTER", "CREATED", "LAST USED", "NAME"],
        keys.iter()
            .map(|k| {
                vec![
                    k.id.to_string(),
                    k.credential_type.clone(),
                    k.authenticator_attachment.clone().unwrap_or_else(|| "unknown".into()),
                    k.authenticator.clone().or_else(|| k.aaguid.clone()).unwrap_or_else(|| "unknown".into()),
                    k.sign_count.to_string(),
                    at_text(&k.created_at),
                    k.last_used_at.as_deref().map(at_text).unwrap_or_else(|| "never".into()),
                    k.name.clone(),
                ]
            })
            .collect(),
    )
}
