//! Tables for people, JSON for machines. Every text that may hold
//! attacker-supplied bytes goes through `escape_control` before a terminal
//! sees it; JSON goes through `json_terminal_safe` (serde_json escapes C0
//! controls only; C1, DEL and bidi overrides become `\uXXXX`, which is
//! still JSON that parses back to the same strings).

use crate::model::{escape_control, json_terminal_safe, Finding, Millis, SshKey, StoredEvent, Subject, User};
use crate::store::migrations::MigrationState;
use std::io::Write;

/// One JSON document, pretty, safe for a terminal.
fn json_text<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(json_terminal_safe(&serde_json::to_string_pretty(value)?))
}

/// One JSON object on one line (follow mode), safe for a terminal.
fn json_line<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(json_terminal_safe(&serde_json::to_string(value)?))
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let text = json_text(value)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
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

#[derive(serde::Serialize)]
struct UserJson<'a> {
    id: i64,
    username: &'a str,
    email: Option<&'a str>,
    groups: &'a [String],
    is_locked: bool,
    locked_until: Option<String>,
    lock_reason: Option<&'a str>,
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
        must_reset_password: u.must_reset_password,
        password_changed_at: u.password_changed_at.map(|t| t.rfc3339()),
        login_count: u.login_count,
        last_login_at: u.last_login_at.map(|t| t.rfc3339()),
        last_login_ip: u.last_login_ip.as_deref(),
        created_at: u.created_at.rfc3339(),
    }
}

pub fn users(list: &[User], json: bool, now: Millis) -> anyhow::Result<()> {
    if json {
        return print_json(&list.iter().map(|u| user_json(u, now)).collect::<Vec<_>>());
    }
    table(
        &["ID", "USERNAME", "EMAIL", "GROUPS", "LOCKED", "LOGINS", "LAST LOGIN"],
        list.iter()
            .map(|u| {
                vec![
                    u.id.to_string(),
                    u.username.clone(),
                    u.email.clone().unwrap_or_default(),
                    u.groups.join(","),
                    if u.is_locked(now) { "yes".into() } else { "no".into() },
                    u.login_count.to_string(),
                    u.last_login_at.map(|t| t.rfc3339()).unwrap_or_else(|| "never".into()),
                ]
            })
            .collect(),
    )
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
            (Some(t), r) => format!("until {t} ({})", r.unwrap_or("")),
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
    let mut out = std::io::stdout().lock();
    for (k, v) in rows {
        writeln!(out, "{k:<20} {}", escape_control(&v))?;
    }
    Ok(())
}

pub fn keys(list: &[SshKey], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&list);
    }
    table(
        &["ID", "TYPE", "FINGERPRINT", "ADDED", "LAST USED", "COMMENT"],
        list.iter()
            .map(|k| {
                vec![
                    k.id.to_string(),
                    k.algorithm.clone(),
                    k.fingerprint.clone(),
                    k.created_at.clone(),
                    k.last_used_at.clone().unwrap_or_else(|| "never".into()),
                    k.comment.clone(),
                ]
            })
            .collect(),
    )
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
                e.created_at.clone(),
                e.event_type.clone(),
                e.severity.clone(),
                e.username.clone().unwrap_or_default(),
                e.ip.clone().unwrap_or_default(),
                e.description.clone(),
            ]
        })
        .collect();
    table(&["ID", "TIME", "TYPE", "SEVERITY", "USER", "IP", "DESCRIPTION"], rows)?;
    std::io::stdout().flush()?;
    Ok(())
}

pub fn migrations(list: &[MigrationState], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&list);
    }
    table(
        &["MIGRATION", "APPLIED"],
        list.iter().map(|m| vec![m.name.clone(), m.applied_at.clone().unwrap_or_else(|| "pending".into())]).collect(),
    )
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
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("the queue is empty");
        return Ok(());
    }
    table(
        &["ID", "TO", "TEMPLATE", "QUEUED", "ATTEMPTS", "NEXT / SENT", "LAST ERROR"],
        list.iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    m.recipient.clone(),
                    m.template.clone(),
                    m.created_at.clone(),
                    m.attempts.to_string(),
                    m.sent_at.clone().map(|t| format!("sent {t}")).unwrap_or_else(|| m.next_attempt_at.clone()),
                    m.last_error.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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

/// The findings of `security scan suspicious` (one per rule and subject).
pub fn findings(list: &[Finding], events_read: u64, since: Millis, json: bool) -> anyhow::Result<()> {
    if json {
        let rows: Vec<FindingJson> = list
            .iter()
            .map(|f| FindingJson {
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
            })
            .collect();
        return print_json(&rows);
    }
    println!("{} finding(s) in {events_read} events since {}", list.len(), since.rfc3339());
    if list.is_empty() {
        return Ok(());
    }
    table(
        &["TYPE", "SEVERITY", "SUBJECT", "EVENTS", "FIRST EVENT", "TITLE"],
        list.iter()
            .map(|f| vec![f.incident_type.as_str().to_owned(), f.severity.as_str().to_owned(), subject_text(&f.subject), f.event_ids.len().to_string(), f.first_event_at.rfc3339(), f.title.clone()])
            .collect(),
    )?;
    std::io::stdout().flush()?;
    Ok(())
}
