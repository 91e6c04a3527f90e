//! The incident workflow through the real CLI against a running daemon's
//! database: open, list, assign, note, show, resolve; the notice to the
//! sysops through the daemon's outbox (a real SMTP server, or the `.eml`
//! spool for a configured list); the refusals with their exact messages.

use crate::harness::{detail, free_port, poll, read_mail, text, Gate, Smtp, ALICE_PW, BOB_PW, DEFAULT_CONFIG};
use crate::mfa::add_user_in;
use serde_json::Value;
use std::time::Duration;

const SYSOPS: &str = "groups: {\n  sysops: {\n    require_level: 1\n  }\n}\n";

fn json(g: &Gate, args: &[&str]) -> Value {
    let out = g.cli_ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("portcullis {args:?}: not JSON ({e}):\n{out}"))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// `2026-12-01T20:00:00.123Z`.
fn is_rfc3339_utc(t: &str) -> bool {
    let b = t.as_bytes();
    t.len() == 24 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':' && b[19] == b'.' && t.ends_with('Z')
}

/// Runs a command that must fail; returns (exit code, stderr).
fn refused(g: &Gate, args: &[&str]) -> (Option<i32>, String) {
    let out = g.cli(args);
    assert!(!out.status.success(), "portcullis {args:?} should fail: {}", text(&out.stdout));
    (out.status.code(), text(&out.stderr))
}

#[test]
fn incident_workflow_from_the_cli() {
    let smtp = Smtp::start(free_port());
    let config = format!("{DEFAULT_CONFIG}email: {{\n  smtp: \"smtp://127.0.0.1:{}\"\n  poll: 200ms\n  retry_base: 1s\n  retry_max: 2s\n}}\n{SYSOPS}", smtp.port);
    let g = Gate::start_with(&config);
    add_user_in(&g, "carol", ALICE_PW, "sysops");
    g.add_user("bob", BOB_PW);

    // Open one by hand; the title carries a terminal escape.
    let title = "Odd logins for evil\x1b[2J";
    let out = g.cli_ok(&["security", "incidents", "create", title, "high", "seen in the VPN logs"]);
    let first = out.lines().next().unwrap_or_default();
    let id: i64 = first
        .strip_prefix("opened incident ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no id in {out:?}"));
    assert_eq!(first, format!("opened incident {id} (high, P2): Odd logins for evil\\x1b[2J"));
    assert!(out.contains("a notice was queued for 1 address: carol@example.org"), "{out}");
    let ids = id.to_string();
    let ids = ids.as_str();

    // The table shows it escaped; the JSON has every field.
    let table = g.cli_ok(&["security", "incidents", "list"]);
    assert!(!table.contains('\x1b'), "{table:?}");
    let row = table.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap_or_else(|| panic!("no row for {id}:\n{table}"));
    for cell in ["open", "high", "P2", "manual", "gate", "Odd logins for evil\\x1b[2J"] {
        assert!(row.contains(cell), "{cell:?} missing from {row:?}");
    }
    let list = json(&g, &["security", "incidents", "list", "--json"]);
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 1, "{list:#?}");
    let i = &list[0];
    assert_eq!(i["id"].as_i64(), Some(id));
    assert_eq!(s(i, "title"), title, "stored as typed, escaped only for the terminal");
    assert_eq!((s(i, "incident_type"), s(i, "severity"), s(i, "priority"), s(i, "status")), ("manual", "high", "P2", "open"));
    assert!(i["assigned_to"].is_null() && i["resolved_at"].is_null(), "{i}");
    assert!(is_rfc3339_utc(s(i, "created_at")), "{i}");
    assert_eq!(i["event_count"].as_i64(), Some(0));
    assert_eq!(i["subject"]["kind"], "gate");
    assert!(i["rule"].is_null(), "opened by hand: no rule: {i}");
    assert_eq!(i["mttd_ms"].as_i64(), Some(0));

    assert_eq!(g.cli_ok(&["security", "incidents", "assign", ids, "bob"]).trim(), format!("incident {id} assigned to bob (investigating)"));
    assert_eq!(g.cli_ok(&["security", "incidents", "note", ids, "checked the VPN logs: one address"]).trim(), format!("note added to incident {id}"));

    let shown = json(&g, &["security", "incidents", "show", ids, "--json"]);
    assert_eq!((s(&shown, "status"), s(&shown, "assigned_to")), ("investigating", "bob"));
    assert_eq!(s(&shown, "description"), "seen in the VPN logs");
    let kinds = |v: &Value| v["timeline"].as_array().expect("timeline").iter().map(|e| s(e, "kind").to_owned()).collect::<Vec<_>>();
    assert_eq!(kinds(&shown), ["created", "assigned", "note"]);
    let timeline = shown["timeline"].as_array().expect("timeline");
    assert_eq!(s(&timeline[1], "text"), "assigned to bob; status open → investigating");
    assert_eq!(s(&timeline[2], "text"), "checked the VPN logs: one address");
    assert!(timeline.iter().all(|e| s(e, "actor").starts_with("cli:") && is_rfc3339_utc(s(e, "at"))), "{timeline:#?}");
    assert!(timeline.windows(2).all(|w| s(&w[0], "at") <= s(&w[1], "at") && w[0]["id"].as_i64() < w[1]["id"].as_i64()));
    assert_eq!(timeline[0]["details"]["notified"], serde_json::json!(["carol@example.org"]));
    assert_eq!(shown["event_ids"], serde_json::json!([]));
    assert!(shown["evidence"].is_object(), "{shown}");
    let table = g.cli_ok(&["security", "incidents", "show", ids]);
    assert!(table.contains("investigating (assigned to bob)") && table.contains("TIME") && table.contains("checked the VPN logs"), "{table}");
    assert!(!table.contains('\x1b'), "{table:?}");

    // The notice reached the sysop (and nobody else).
    let files = smtp.wait_messages(1, Duration::from_secs(20));
    let mail = read_mail(&files[0]);
    assert!(mail.to.contains("carol@example.org"), "{mail:#?}");
    assert_eq!(mail.subject, format!("Security incident #{id} (high): Odd logins for evil\\x1b[2J"));
    assert!(mail.text.contains(&format!("portcullis security incidents show {id}")) && mail.text.contains("seen in the VPN logs"), "{mail:#?}");
    poll(Duration::from_secs(10), "the notice marked sent", || g.mail_queue(true).into_iter().find(|m| m["template"] == "incident_created" && !m["sent_at"].is_null()));
    let notices: Vec<Value> = g.mail_queue(true).into_iter().filter(|m| m["template"] == "incident_created").collect();
    assert_eq!(notices.len(), 1, "{notices:#?}");

    // Resolve; it leaves the open list.
    let out = g.cli_ok(&["security", "incidents", "resolve", ids, "a contractor's scanner; allowed"]);
    assert!(out.starts_with(&format!("incident {id} resolved (MTTR ")), "{out}");
    assert_eq!(g.cli_ok(&["security", "incidents", "list"]).trim(), "no incidents");
    assert_eq!(json(&g, &["security", "incidents", "list", "--json"]), serde_json::json!([]));
    let resolved = json(&g, &["security", "incidents", "list", "resolved", "--json"]);
    assert_eq!(resolved.as_array().map(Vec::len), Some(1), "{resolved}");
    let r = &resolved[0];
    assert_eq!((r["id"].as_i64(), s(r, "status")), (Some(id), "resolved"));
    assert!(is_rfc3339_utc(s(r, "resolved_at")), "{r}");
    assert_eq!(json(&g, &["security", "incidents", "list", "all", "--json"]).as_array().map(Vec::len), Some(1));
    let shown = json(&g, &["security", "incidents", "show", ids, "--json"]);
    assert_eq!(kinds(&shown), ["created", "assigned", "note", "resolved"]);
    assert_eq!(s(&shown, "resolution_notes"), "a contractor's scanner; allowed");
    let mttr = shown["mttr_ms"].as_i64().unwrap_or_else(|| panic!("mttr_ms: {shown}"));
    assert_eq!(shown["timeline"][3]["details"]["mttr_ms"].as_i64(), Some(mttr));

    // Both events, with what caused them.
    let created = g.events_of(None, "incident_created");
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(detail(&created[0], "incident_id").as_i64(), Some(id));
    assert_eq!(detail(&created[0], "incident_type"), "manual");
    assert_eq!(detail(&created[0], "notified").as_i64(), Some(1));
    assert_eq!(s(&created[0], "severity"), "high");
    let done = g.events_of(None, "incident_resolved");
    assert_eq!(done.len(), 1, "{done:#?}");
    assert_eq!(detail(&done[0], "incident_id").as_i64(), Some(id));
    assert_eq!(detail(&done[0], "mttr_ms").as_i64(), Some(mttr));
    assert!(detail(&done[0], "actor").as_str().unwrap_or_default().starts_with("cli:"), "{}", done[0]);

    // Refusals: runtime errors exit 1, usage errors 2, each saying what.
    let resolved_at = s(&shown, "resolved_at").to_owned();
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        (vec!["show", "999"], 1, "error: no such incident: 999\n".into()),
        (vec!["assign", "999", "bob"], 1, "error: no such incident: 999\n".into()),
        (vec!["create", "", "high"], 1, "error: the incident title is empty\n".into()),
        (vec!["create", "x", "urgent"], 2, "error: unknown severity \"urgent\" (one of: low, medium, high, critical)\n".into()),
        (vec!["resolve", ids, "again"], 1, format!("error: incident {id} is already resolved (at {resolved_at})\n")),
        (vec!["assign", ids, "dave"], 1, format!("error: incident {id} is resolved; it can no longer be assigned\n")),
        (vec!["note", ids, " "], 1, "error: the note is empty\n".into()),
        (vec!["resolve", ids, ""], 1, "error: the resolution notes are empty\n".into()),
    ];
    for (args, code, want) in cases {
        let mut all = vec!["security", "incidents"];
        all.extend_from_slice(&args);
        let (got_code, stderr) = refused(&g, &all);
        assert_eq!((got_code, stderr.as_str()), (Some(code), want.as_str()), "{args:?}");
    }
    for args in [&["list", "bogus"][..], &["show", "abc"], &["create", "only a title"], &["resolve", ids]] {
        let mut all = vec!["security", "incidents"];
        all.extend_from_slice(args);
        let (code, stderr) = refused(&g, &all);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(!stderr.is_empty());
    }
    // Nothing of that changed the incident or mailed anyone again.
    assert_eq!(kinds(&json(&g, &["security", "incidents", "show", ids, "--json"])), ["created", "assigned", "note", "resolved"]);
    assert_eq!(g.mail_queue(true).into_iter().filter(|m| m["template"] == "incident_created").count(), 1);
    assert_eq!(smtp.messages().len(), 1);
}

/// `incidents.notify` replaces the sysops group; the daemon's mail worker
/// writes the notice to the spool.
#[test]
fn a_configured_list_gets_the_notice() {
    let config = format!("{DEFAULT_CONFIG}email: {{\n  poll: 200ms\n}}\nincidents: {{\n  notify: [\"oncall@example.org\"]\n}}\n{SYSOPS}");
    let g = Gate::start_with(&config);
    add_user_in(&g, "carol", ALICE_PW, "sysops");
    let out = g.cli_ok(&["security", "incidents", "create", "Disk full on the log host", "medium", "--json"]);
    let created: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let id = created[0]["id"].as_i64().unwrap_or_else(|| panic!("{created}"));
    assert_eq!((s(&created[0], "priority"), s(&created[0], "status")), ("P3", "open"));
    let mail = poll(Duration::from_secs(20), "the notice in the spool", || g.spooled_mail().first().map(|p| read_mail(p)));
    assert!(mail.to.contains("oncall@example.org"), "{mail:#?}");
    assert_eq!(mail.subject, format!("Security incident #{id} (medium): Disk full on the log host"));
    let queue = g.mail_queue(true);
    assert_eq!(queue.iter().map(|m| s(m, "recipient")).collect::<Vec<_>>(), ["oncall@example.org"], "not the group: {queue:#?}");
}
