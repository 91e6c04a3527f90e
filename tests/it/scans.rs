//! `security scan` over a real store seeded through the CLI, real SSH and
//! the `sqlite3` tool: an old-cost hash, an old password, a password that
//! a later policy finds weak at its login, a sysop without a code, a
//! session row left open. The report and `--json` say exactly that.

use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;

/// `DEFAULT_CONFIG` with its hashing cost and minimum length, and sysops
/// needing a one-time code.
fn config(iterations: u32, min_length: u32) -> String {
    let passwords = format!("passwords: {{\n  iterations: {iterations}\n  min_length: {min_length}\n}}\ngroups: {{\n  sysops: {{\n    require_level: 2\n  }}\n}}\n");
    let out = DEFAULT_CONFIG.replace("passwords: {\n  iterations: 1000\n}\n", &passwords);
    assert_ne!(out, DEFAULT_CONFIG, "the harness config changed shape");
    out
}

fn sqlite(g: &Gate, sql: &str) -> String {
    let mut cmd = std::process::Command::new("sqlite3");
    cmd.arg(g.db_path()).arg(sql);
    let out = run(cmd, None);
    assert!(out.status.success(), "sqlite3 {sql}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

#[test]
fn scans_report_exactly_the_seeded_findings() {
    let mut g = Gate::prepare(&config(1000, 12));
    g.add_user("oldcost", ALICE_PW);
    std::fs::write(&g.config, config(2000, 12)).expect("config");
    g.add_user("weakling", BOB_PW);
    g.add_user("oldpw", ALICE_PW);
    g.add_user("root", ALICE_PW);
    g.cli_ok(&["user", "group", "add", "root", "sysops"]);
    // Today's policy wants 30 characters: weakling's 23 are now too few.
    std::fs::write(&g.config, config(2000, 30)).expect("config");
    g.launch();
    let run = g.ssh(&Ssh::kbd("weakling", BOB_PW));
    assert!(run.authenticated_exec(), "{run:#?}");
    // The verdict is taken beside the login's answer.
    poll(Duration::from_secs(20), "the verdict on weakling's password", || {
        (sqlite(&g, "SELECT password_weak || ' ' || password_weak_reasons FROM users WHERE username = 'weakling'") == "1 [\"too_short\"]").then_some(())
    });
    g.stop();
    // Two hundred days since oldpw's change; weakling's session left open
    // (as by a crash) since 2023-11-14.
    sqlite(&g, "UPDATE users SET password_changed_at = password_changed_at - 200 * 86400000 WHERE username = 'oldpw'");
    sqlite(&g, "UPDATE sessions SET started_at = 1700000000000, authenticated_at = 1700000000000, last_activity_at = 1700000060000, ended_at = NULL, end_reason = NULL WHERE id = 1");
    assert_eq!(sqlite(&g, "SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL"), "1");

    let out = g.cli(&["security", "scan", "--json"]);
    assert_eq!(out.status.code(), Some(0), "findings are not a failure: {out:?}");
    assert_eq!(text(&out.stderr), "", "no progress bar off a terminal");
    let mut got: Value = serde_json::from_str(&text(&out.stdout)).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    // What the clock decides, checked for shape, then compared whole.
    let checked_at = got["passwords"]["findings"][1]["checked_at"].take();
    assert!(checked_at.as_str().is_some_and(|t| t.len() == 24 && t.ends_with('Z')), "{checked_at}");
    let since = got["suspicious"]["since"].take();
    assert!(since.as_str().is_some_and(|t| t.ends_with('Z')), "{since}");
    let events_read = got["suspicious"]["events_read"].take();
    assert!(events_read.as_u64().is_some_and(|n| n >= 2), "{events_read}");
    let expected = json!({
        "passwords": {
            "accounts": 4,
            "findings": [
                { "user_id": 1, "username": "oldcost", "finding": "hash_below_iterations", "iterations": 1000, "required_iterations": 2000 },
                { "user_id": 2, "username": "weakling", "finding": "password_weak", "reasons": ["too_short"], "checked_at": null },
                { "user_id": 3, "username": "oldpw", "finding": "password_old", "age_days": 200, "max_age_days": 90 },
            ]
        },
        "mfa": {
            "accounts": 4,
            "findings": [
                { "user_id": 1, "username": "oldcost", "finding": "no_second_factor", "sysop": false, "level": 1, "required_level": 1, "incident_id": null },
                { "user_id": 2, "username": "weakling", "finding": "no_second_factor", "sysop": false, "level": 1, "required_level": 1, "incident_id": null },
                { "user_id": 3, "username": "oldpw", "finding": "no_second_factor", "sysop": false, "level": 1, "required_level": 1, "incident_id": null },
                { "user_id": 4, "username": "root", "finding": "no_second_factor", "sysop": true, "level": 1, "required_level": 2, "incident_id": null },
                { "user_id": 4, "username": "root", "finding": "below_required_level", "sysop": true, "level": 1, "required_level": 2, "incident_id": 1 },
            ]
        },
        "sessions": {
            "open": 1,
            "closed": 1,
            "still_open": 0,
            "stale_after_seconds": 3600,
            "findings": [{
                "session_id": 1, "user_id": 2, "username": "weakling", "finding": "session_expired", "protocol": "ssh", "ip": "127.0.0.1",
                "started_at": "2023-11-14T22:13:20.000Z", "last_activity_at": "2023-11-14T22:14:20.000Z", "ended_at": "2023-11-14T22:14:20.000Z"
            }]
        },
        "suspicious": { "since": null, "events_read": null, "findings": [] },
        "incidents": { "opened": 1, "attached": 0, "folded": 0 }
    });
    assert_eq!(got, expected, "{}", serde_json::to_string_pretty(&got).unwrap_or_default());
    let checked_at = checked_at.as_str().unwrap_or_default().to_owned();

    // The session row is closed at its last sign of life, with its event.
    assert_eq!(sqlite(&g, "SELECT ended_at || ' ' || end_reason FROM sessions WHERE id = 1"), "1700000060000 expired: closed by a scan (no sign of life)");
    let ended = g.events_of(Some("weakling"), "session_ended");
    assert!(ended.iter().any(|e| detail(e, "reason") == "expired" && e["session_id"] == 1), "{ended:#?}");
    // One scan_completed with the counts per kind.
    let done = g.events_of(None, "scan_completed");
    assert_eq!(done.len(), 1, "{done:#?}");
    assert_eq!(detail(&done[0], "scan"), "passwords,mfa,sessions,suspicious");
    assert_eq!(detail(&done[0], "counts"), &json!({ "passwords": 3, "mfa": 5, "sessions": 1, "suspicious": 0 }));
    assert_eq!(detail(&done[0], "incidents_opened"), 1);
    // The sysop without a code is an incident (high); nothing else is.
    let incidents: Value = serde_json::from_str(&g.cli_ok(&["security", "incidents", "list", "--json"])).expect("json");
    let list = incidents.as_array().expect("array");
    assert_eq!(list.len(), 1, "{incidents:#}");
    assert_eq!(
        (list[0]["incident_type"].as_str(), list[0]["severity"].as_str(), list[0]["title"].as_str()),
        (Some("sysop_factor_level"), Some("high"), Some("sysop root is below the required factor level (1 of 2)"))
    );

    // The report for people: the sessions are clean now, the incident
    // already open.
    let report = g.cli_ok(&["security", "scan"]);
    let lines: Vec<&str> = report.lines().collect();
    let section = |head: &str, n: usize| -> Vec<&str> {
        let at = lines.iter().position(|l| l.starts_with(head)).unwrap_or_else(|| panic!("no {head:?} in\n{report}"));
        lines[at..(at + n).min(lines.len())].to_vec()
    };
    assert_eq!(
        section("passwords:", 5),
        vec![
            "passwords: 3 findings in 4 accounts",
            "USER      FINDING                DETAIL",
            "oldcost   hash_below_iterations  1000 iterations, the policy asks 2000",
            &format!("weakling  password_weak          too_short (at the login of {checked_at})"),
            "oldpw     password_old           200 days old, the limit is 90",
        ]
    );
    assert_eq!(
        section("mfa:", 7),
        vec![
            "mfa: 5 findings in 4 accounts",
            "USER      FINDING               SYSOP  LEVEL  REQUIRED  INCIDENT",
            "oldcost   no_second_factor      no     1      1         -",
            "weakling  no_second_factor      no     1      1         -",
            "oldpw     no_second_factor      no     1      1         -",
            "root      no_second_factor      yes    1      2         -",
            "root      below_required_level  yes    1      2         #1",
        ]
    );
    assert_eq!(section("sessions:", 1), vec!["sessions: 0 expired sessions closed, 0 still open (of 0 open; expired after 3600 s without a sign of life)"]);
    assert!(section("suspicious:", 1)[0].starts_with("suspicious: 0 findings in "), "{report}");
    assert_eq!(lines.last().copied(), Some("incidents: 0 opened, 1 already open (see `security incidents list`)"), "{report}");
    // One kind alone: only its key.
    let only: Value = serde_json::from_str(&g.cli_ok(&["security", "scan", "sessions", "--json"])).expect("json");
    assert_eq!(only, json!({ "sessions": { "open": 0, "closed": 0, "still_open": 0, "stale_after_seconds": 3600, "findings": [] }, "incidents": { "opened": 0, "attached": 0, "folded": 0 } }));
    let bad = g.cli(&["security", "scan", "everything"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}
