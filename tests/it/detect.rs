//! Detection end to end: real OpenSSH logins from several loopback
//! addresses; the `suspicious_input` events, the live findings (seen in
//! `/metrics` and the daemon log) and `security scan suspicious`.

use crate::harness::{curl, detail, poll, Gate, Ssh, ALICE_PW};
use serde_json::Value;
use std::time::Duration;

/// The live count of findings of one rule, from `/metrics`.
fn findings_of(g: &Gate, rule: &str) -> u64 {
    let m = curl(&g.web_url("/metrics"), &["-k"]);
    assert_eq!(m.status, 200, "{m:?}");
    let prefix = format!("portcullis_detection_findings_total{{rule=\"{rule}\",");
    m.body.lines().filter(|l| l.starts_with(&prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
}

fn wait_findings(g: &Gate, rule: &str, at_least: u64) {
    poll(Duration::from_secs(20), &format!("a {rule} finding"), || (findings_of(g, rule) >= at_least).then_some(()));
}

/// An injection-looking username over real SSH: a `suspicious_input`
/// event with the text escaped and bounded, and an injection finding.
#[test]
fn injection_username_is_recorded_escaped_and_bounded() {
    let g = Gate::start();
    // The ssh_config file quotes the name (it holds a single quote).
    let run = g.ssh(&Ssh::kbd("\"x';DROP TABLE users;--\"", "whatever"));
    assert_eq!(run.code, Some(255), "{run:#?}");
    let ev = g.wait_events(None, "suspicious_input", |ev| !ev.is_empty());
    assert_eq!(ev.len(), 1, "{ev:#?}");
    let e = &ev[0];
    assert_eq!(e["is_suspicious"], true, "{e}");
    assert_eq!(e["category"], "suspicious");
    assert_eq!(e["ip"], "127.0.0.1");
    assert_eq!(detail(e, "text"), "x';DROP TABLE users;--");
    assert_eq!(detail(e, "source"), "username");
    assert_eq!(detail(e, "categories"), &serde_json::json!(["sql"]));
    assert_eq!(detail(e, "truncated"), false);
    wait_findings(&g, "injection_attempt", 1);

    // Long, with a terminal escape: cut to 128 characters, escaped.
    let long = format!("{}<script>\x1b[2J", "A".repeat(150));
    let run = g.ssh(&Ssh::kbd(&long, "whatever").bind("127.0.0.2"));
    assert_eq!(run.code, Some(255), "{run:#?}");
    let ev = g.wait_events(None, "suspicious_input", |ev| ev.len() >= 2);
    let e = &ev[0];
    assert_eq!(detail(e, "text"), &Value::from("A".repeat(128)), "{e}");
    assert_eq!(detail(e, "truncated"), true);
    assert_eq!(detail(e, "length"), 150 + 8 + 4);
    assert_eq!(detail(e, "categories"), &serde_json::json!(["terminal_escape", "script"]));
    assert_eq!(e["ip"], "127.0.0.2");
    wait_findings(&g, "injection_attempt", 2);
    // The table shows nothing raw.
    let out = g.cli(&["security", "events", "--type", "suspicious_input"]);
    assert!(out.status.success());
    assert!(!out.stdout.contains(&0x1b), "raw ESC in the table");
}

/// A visible prompt in the account menu: the line is looked at too.
#[test]
fn injection_at_a_prompt_is_recorded() {
    let g = Gate::start();
    g.add_user("alice", ALICE_PW);
    let run = g.ssh_script(
        &Ssh::kbd("alice", ALICE_PW),
        &[
            ("Your choice: ", "a"),
            ("[S] Your sessions", ""),
            ("Your choice: ", "s"),
            ("End which session", "1 UNION SELECT password FROM users\r"),
            ("That is not a session number.", ""),
            ("Your choice: ", "q"),
            ("[Q] Log off", ""),
            ("Your choice: ", "q"),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    let ev = g.wait_events(Some("alice"), "suspicious_input", |ev| !ev.is_empty());
    assert_eq!(detail(&ev[0], "source"), "prompt:end_session", "{}", ev[0]);
    assert_eq!(detail(&ev[0], "text"), "1 UNION SELECT password FROM users");
    assert!(ev[0]["session_id"].as_i64().is_some(), "{}", ev[0]);
    wait_findings(&g, "injection_attempt", 1);
}

/// A username from attackers' dictionaries that is not an account here,
/// from 127.0.0.2: a finding at once. An account that exists under such
/// a name is never a hit.
#[test]
fn dictionary_username_from_another_address_fires_at_once() {
    let g = Gate::start();
    g.add_user("admin", ALICE_PW);
    // The account "admin" exists: a wrong password is no dictionary hit.
    let run = g.ssh(&Ssh::kbd("admin", "Wrong-Password-1").bind("127.0.0.3"));
    assert_eq!(run.code, Some(255), "{run:#?}");
    let run = g.ssh(&Ssh::kbd("oracle", "oracle").bind("127.0.0.2"));
    assert_eq!(run.code, Some(255), "{run:#?}");
    wait_findings(&g, "dictionary_username", 1);
    // Events are seen in order: the earlier one was looked at and made
    // nothing of. One finding, for 127.0.0.2, asking for a block.
    let log = poll(Duration::from_secs(10), "the finding in the log", || {
        let log = g.daemon_log();
        log.contains("detection finding: dictionary username").then_some(log)
    });
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("rule=\"dictionary_username\"") || l.contains("rule=dictionary_username")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("address:127.0.0.2"), "{}", lines[0]);
    assert!(lines[0].contains("\\\"oracle\\\"") || lines[0].contains("\"oracle\""), "{}", lines[0]);
    assert_eq!(findings_of(&g, "dictionary_username"), 1);
    // The scan over history sees it too, with the configured action.
    let scan = scan_json(&g, &[]);
    let hit = scan.iter().find(|f| f["rule"] == "dictionary_username").unwrap_or_else(|| panic!("{scan:#?}"));
    assert_eq!(hit["subject_key"], "address:127.0.0.2");
    assert_eq!(hit["incident_type"], "brute_force_ip");
    assert_eq!(hit["details"]["action"], "block");
}

fn scan_json(g: &Gate, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["security", "scan", "suspicious", "--json"];
    all.extend_from_slice(args);
    let out = g.cli_ok(&all);
    match serde_json::from_str::<Value>(&out) {
        Ok(mut v) => match v["suspicious"]["findings"].take() {
            Value::Array(v) => v,
            other => panic!("scan: no suspicious findings: {other:?}\n{out}"),
        },
        other => panic!("scan: not JSON: {other:?}\n{out}"),
    }
}

/// Real failed logins, then the scan over history reports brute force on
/// the account and records `scan_completed` with its counts.
#[test]
fn scan_suspicious_reports_brute_force_on_an_account() {
    let g = Gate::start();
    g.add_user("alice", ALICE_PW);
    for bind in ["127.0.0.1", "127.0.0.4"] {
        let run = g.ssh(&Ssh::kbd("alice", "Wrong-Horse-Battery-0").prompts(3).bind(bind));
        assert_eq!(run.code, Some(255), "{run:#?}");
    }
    g.wait_events(Some("alice"), "login_failed", |ev| ev.len() >= 6);
    let scan = scan_json(&g, &["--since", "1h"]);
    let bf = scan.iter().find(|f| f["incident_type"] == "brute_force_account").unwrap_or_else(|| panic!("{scan:#?}"));
    assert_eq!(bf["subject"], "account alice (#1)", "{bf}");
    assert_eq!(bf["subject_key"], "account:1");
    assert_eq!(bf["details"]["failures"], 5, "the first crossing; the summary keeps the last finding: {bf}");
    assert_eq!(bf["details"]["addresses"].as_u64().map(|n| n >= 1), Some(true));
    assert!(bf["event_ids"].as_array().is_some_and(|a| a.len() >= 5), "{bf}");
    assert!(bf["first_event_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let done = g.wait_events(None, "scan_completed", |ev| !ev.is_empty());
    assert_eq!(detail(&done[0], "scan"), "suspicious");
    assert_eq!(detail(&done[0], "by_type")["brute_force_account"], 1, "{}", done[0]);
    // The table form, and a bad --since.
    let table = g.cli_ok(&["security", "scan", "suspicious"]);
    assert!(table.contains("brute_force_account") && table.contains("account alice (#1)"), "{table}");
    let bad = g.cli(&["security", "scan", "suspicious", "--since", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    // The live detector saw the same.
    wait_findings(&g, "brute_force_account", 1);
}

/// One password against five accounts over real SSH: the login path tags
/// each failed attempt, the detector pairs the tags with their events and
/// sees the spray. Nothing of the password reaches the events or the log.
#[test]
fn password_spraying_over_ssh_is_seen_live() {
    let g = Gate::start();
    let names = ["anna", "ben", "cleo", "dirk", "eva"];
    for n in names {
        g.add_user(n, ALICE_PW);
    }
    let sprayed = "Autumn-Spray-2026!";
    for n in names {
        let run = g.ssh(&Ssh::kbd(n, sprayed).bind("127.0.0.5"));
        assert_eq!(run.code, Some(255), "{run:#?}");
    }
    wait_findings(&g, "password_spraying", 1);
    let log = poll(Duration::from_secs(10), "the finding in the log", || {
        let log = g.daemon_log();
        log.contains("detection finding: password spraying").then_some(log)
    });
    assert!(log.contains("address:127.0.0.5"), "{log}");
    // It fired at the fifth account, not before.
    assert!(log.contains("one password against 5 accounts") && !log.contains("against 4 accounts"), "{log}");
    assert!(!log.contains(sprayed), "the password is never logged");
    let all = g.cli_ok(&["security", "events", "200", "--json"]);
    assert!(!all.contains(sprayed), "the password is never stored");
}
