//! The tamper-evident event log (issue 9 item 7) end to end: the daemon
//! and a CLI process write into one chain, `security events verify`
//! passes; a row altered or deleted in the file with the `sqlite3` tool
//! makes it fail naming that row.

use crate::harness::{run, text, Gate, Ssh, ALICE_PW};
use serde_json::Value;
use std::process::{Command, Output};

/// Runs one statement on the gate's database with the sqlite3 tool,
/// waiting for the daemon's write lock if need be.
fn sqlite(g: &Gate, statement: &str) -> String {
    let mut cmd = Command::new("sqlite3");
    cmd.arg("-cmd").arg(".timeout 10000").arg(g.db_path()).arg(statement);
    let out = run(cmd, None);
    assert!(out.status.success(), "sqlite3 {statement}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

fn verify(g: &Gate) -> (Output, String) {
    let out = g.cli(&["security", "events", "verify"]);
    let stdout = text(&out.stdout);
    (out, stdout)
}

fn verify_json(g: &Gate) -> (Option<i32>, Value) {
    let out = g.cli(&["security", "events", "verify", "--json"]);
    let v = serde_json::from_str(&text(&out.stdout)).unwrap_or_else(|e| panic!("verify --json: {e}: {}{}", text(&out.stdout), text(&out.stderr)));
    (out.status.code(), v)
}

/// "event log verified: N events, chain from #A to #B" → (N, A, B).
fn verified_line(stdout: &str) -> (i64, i64, i64) {
    let rest = stdout.trim().strip_prefix("event log verified: ").unwrap_or_else(|| panic!("not verified: {stdout:?}"));
    let (n, rest) = rest.split_once(" events, chain from #").unwrap_or_else(|| panic!("{stdout:?}"));
    let (a, b) = rest.split_once(" to #").unwrap_or_else(|| panic!("{stdout:?}"));
    (n.parse().unwrap(), a.parse().unwrap(), b.parse().unwrap())
}

fn id_of(e: &Value) -> i64 {
    e["id"].as_i64().unwrap_or_else(|| panic!("no id: {e}"))
}

#[test]
fn the_event_log_verifies_until_a_row_is_altered_or_deleted() {
    let g = Gate::start();
    // The CLI writes while the daemon runs: user_created directly, the
    // lock and unlock inside their own transactions; the daemon's writer
    // thread writes the logins' events in between.
    g.add_user("alice", ALICE_PW);
    let failed = g.ssh(&Ssh::kbd("alice", "Wrong-Horse-Battery-0"));
    assert_eq!(failed.code, Some(255), "{failed:#?}");
    g.cli_ok(&["user", "lock", "alice", "--reason", "chain test"]);
    g.cli_ok(&["user", "unlock", "alice"]);
    let ok = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(ok.authenticated_exec(), "{ok:#?}\n{}", g.daemon_log());
    g.wait_events(Some("alice"), "session_ended", |ev| !ev.is_empty());
    g.add_user("bob", "Tangerine-Orbit-Lamp-42");

    let all = g.events_json(&["1000"]);
    for t in ["user_created", "login_failed", "account_locked", "account_unlocked", "login_success", "session_started", "session_ended"] {
        assert!(all.iter().any(|e| e["event_type"] == t), "no {t} event in {all:#?}");
    }
    let (out, stdout) = verify(&g);
    assert!(out.status.success(), "verify failed: {stdout}{}", text(&out.stderr));
    let (n, first, last) = verified_line(&stdout);
    assert_eq!(first, 1, "{stdout}");
    assert_eq!(last, n, "ids from 1 without a gap: {stdout}");
    assert!(n >= all.len() as i64, "{n} verified, {} listed", all.len());
    let (code, v) = verify_json(&g);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["verified"], true, "{v}");
    assert!(v["problem"].is_null(), "{v}");
    assert_eq!(v["last_hash"].as_str().map(str::len), Some(64), "{v}");

    // Alter the login's event in the file: verify names it, exit 1, even
    // with more events chained after it.
    let success = id_of(&g.events_of(Some("alice"), "login_success")[0]);
    sqlite(&g, &format!("UPDATE security_events SET description = description || ' (edited)' WHERE id = {success}"));
    let more = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(more.authenticated_exec(), "{more:#?}");
    let (out, stdout) = verify(&g);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let first_line = stdout.lines().next().unwrap_or_default();
    assert_eq!(first_line, format!("event #{success}: hash does not match its contents"), "{stdout}");
    assert!(stdout.contains(&format!("event log NOT verified: {} events before it verified, from #1 to #{}", success - 1, success - 1)), "{stdout}");
    let (code, v) = verify_json(&g);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["verified"], false, "{v}");
    assert_eq!(v["problem"]["kind"], "hash_mismatch", "{v}");
    assert_eq!(v["problem"]["id"].as_i64(), Some(success), "{v}");
    assert_eq!(v["events"].as_i64(), Some(success - 1), "{v}");

    // Put the text back as it was: the chain holds again.
    sqlite(&g, &format!("UPDATE security_events SET description = substr(description, 1, length(description) - 9) WHERE id = {success}"));
    let (out, stdout) = verify(&g);
    assert!(out.status.success(), "restored row: {stdout}");

    // Change the time of the failed login's event: named.
    let failure = id_of(&g.events_of(Some("alice"), "login_failed")[0]);
    assert!(failure < success);
    sqlite(&g, &format!("UPDATE security_events SET created_at = created_at - 3600000 WHERE id = {failure}"));
    let (out, stdout) = verify(&g);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.lines().next(), Some(format!("event #{failure}: hash does not match its contents").as_str()), "{stdout}");
    sqlite(&g, &format!("UPDATE security_events SET created_at = created_at + 3600000 WHERE id = {failure}"));

    // Delete a row in the middle: named as missing.
    let locked = id_of(&g.events_of(Some("alice"), "account_locked")[0]);
    assert_eq!(sqlite(&g, &format!("DELETE FROM security_events WHERE id = {locked}; SELECT changes();")), "1");
    let (out, stdout) = verify(&g);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.lines().next(), Some(format!("event #{locked} missing").as_str()), "{stdout}");
    let (_, v) = verify_json(&g);
    assert_eq!((v["problem"]["kind"].as_str(), v["problem"]["id"].as_i64(), v["problem"]["to_id"].as_i64()), (Some("missing"), Some(locked), Some(locked)), "{v}");
}
