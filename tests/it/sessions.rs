//! Sessions and locks from the CLI against the running daemon: the real
//! OpenSSH client holds an interactive session at the menu, the CLI (another
//! process) revokes it or locks the account, and the client is told why and
//! disconnected.

use crate::harness::{detail, poll, text, Gate, Ssh, ALICE_PW, BOB_PW};
use serde_json::Value;
use std::time::Duration;

fn gate() -> Gate {
    let g = Gate::start();
    g.add_user("alice", ALICE_PW);
    g.add_user("bob", BOB_PW);
    g
}

/// `security sessions list ARGS --json`.
fn sessions(g: &Gate, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["security", "sessions", "list"];
    all.extend_from_slice(args);
    all.push("--json");
    match serde_json::from_str(&g.cli_ok(&all)) {
        Ok(Value::Array(v)) => v,
        other => panic!("sessions list {args:?}: not a JSON array: {other:?}"),
    }
}

/// Waits until `user` has `n` open sessions; returns their ids, newest first.
fn open_sessions(g: &Gate, user: &str, n: usize) -> Vec<i64> {
    poll(Duration::from_secs(10), &format!("{n} open session(s) of {user}"), || {
        let list = sessions(g, &[user]);
        (list.len() == n).then(|| list.iter().map(|s| s["id"].as_i64().expect("id")).collect())
    })
}

/// Runs a CLI command that must fail with `code`; returns its stderr.
fn cli_err(g: &Gate, args: &[&str], code: i32) -> String {
    let out = g.cli(args);
    assert_eq!(out.status.code(), Some(code), "portcullis {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stderr)
}

#[test]
fn a_session_revoked_from_the_cli_is_cut_with_its_reason() {
    let g = gate();
    let mut ssh = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "xterm", 80, 24);
    ssh.expect("Your choice: ");
    let id = open_sessions(&g, "alice", 1)[0];
    let listed = sessions(&g, &[]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let s = &listed[0];
    assert_eq!((s["user"].as_str(), s["protocol"].as_str(), s["ip"].as_str(), s["factors"].as_i64()), (Some("alice"), Some("ssh"), Some("127.0.0.1"), Some(1)), "{s}");
    assert!(s["device_id"].as_i64().is_some() && s["started_at"].is_string() && s["last_activity_at"].is_string(), "{s}");
    assert!(s["ended_at"].is_null() && s["end_reason"].is_null(), "{s}");
    let table = g.cli_ok(&["security", "sessions", "list"]);
    assert!(table.starts_with("ID  USER   PROTOCOL  IP"), "{table}");
    assert!(table.contains(&format!("{id}   alice  ssh       127.0.0.1")), "{table}");

    let out = g.cli_ok(&["security", "sessions", "revoke", &id.to_string(), "--reason", "suspicious activity"]);
    assert_eq!(out, format!("revoked session {id} of alice\n"));
    ssh.expect("Your session was ended: suspicious activity");
    let (code, screen) = ssh.finish();
    assert!(code.is_some(), "the gate closed the connection:\n{}", String::from_utf8_lossy(&screen));

    let revoked = g.wait_events(Some("alice"), "session_revoked", |ev| !ev.is_empty());
    assert_eq!(revoked.len(), 1, "{revoked:#?}");
    let e = &revoked[0];
    assert_eq!(e["session_id"].as_i64(), Some(id), "{e}");
    assert_eq!(detail(e, "reason"), "suspicious activity", "{e}");
    assert!(detail(e, "actor").as_str().is_some_and(|a| a.starts_with("cli:")), "{e}");
    assert_eq!(detail(e, "session_ip"), "127.0.0.1", "{e}");
    let ended = g.wait_events(Some("alice"), "session_ended", |ev| ev.iter().any(|e| e["session_id"].as_i64() == Some(id)));
    assert_eq!(detail(&ended[0], "reason"), "revoked", "{}", ended[0]);

    // Gone from the open list, kept with its end in --all.
    assert!(sessions(&g, &[]).is_empty());
    assert_eq!(g.cli_ok(&["security", "sessions", "list"]), "no open sessions\n");
    let all = sessions(&g, &["alice", "--all"]);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["end_reason"], "suspicious activity", "{}", all[0]);
    assert!(all[0]["ended_at"].is_string(), "{}", all[0]);

    // Errors name the problem.
    let err = cli_err(&g, &["security", "sessions", "revoke", &id.to_string()], 1);
    assert!(err.starts_with(&format!("error: session {id} has already ended (at ")) && err.ends_with(": suspicious activity)\n"), "{err}");
    assert_eq!(cli_err(&g, &["security", "sessions", "revoke", "9999"], 1), "error: no session with id 9999\n");
    assert_eq!(cli_err(&g, &["security", "sessions", "revoke", "--user=carol"], 1), "error: no such user: carol\n");
    assert_eq!(cli_err(&g, &["security", "sessions", "list", "carol"], 1), "error: no such user: carol\n");
    assert_eq!(cli_err(&g, &["security", "sessions", "revoke"], 2), "error: revoke: give a session ID or --user=USER\n");
    assert_eq!(cli_err(&g, &["security", "sessions", "revoke", &id.to_string(), "--reason", " "], 2), "error: --reason: give one line of at most 200 characters\n");
    assert!(cli_err(&g, &["security", "sessions", "revoke", "12", "--user=alice"], 2).contains("cannot be used with"));
    assert_eq!(g.cli_ok(&["security", "sessions", "revoke", "--user=bob"]), "bob has no open sessions\n");
}

#[test]
fn revoking_a_users_sessions_cuts_every_one_of_them_and_no_other() {
    let g = gate();
    let mut first = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "xterm", 80, 24);
    first.expect("Your choice: ");
    let mut second = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "xterm", 80, 24);
    second.expect("Your choice: ");
    let mut bob = g.ssh_pty(&Ssh::kbd("bob", BOB_PW), "xterm", 80, 24);
    bob.expect("Your choice: ");
    let ids = open_sessions(&g, "alice", 2);
    let bobs = open_sessions(&g, "bob", 1);

    let out = g.cli_ok(&["security", "sessions", "revoke", "--user=alice"]);
    assert_eq!(out, "revoked 2 sessions of alice\n");
    for mut ssh in [first, second] {
        ssh.expect("Your session was ended: revoked by the sysop");
        let (code, screen) = ssh.finish();
        assert!(code.is_some(), "{}", String::from_utf8_lossy(&screen));
    }
    let revoked = g.wait_events(Some("alice"), "session_revoked", |ev| ev.len() == 2);
    let mut got: Vec<i64> = revoked.iter().map(|e| e["session_id"].as_i64().expect("session id")).collect();
    got.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(got, ids);
    // Bob's session is untouched and still answers.
    assert_eq!(open_sessions(&g, "bob", 1), bobs);
    bob.send(b"q");
    let (code, screen) = bob.finish();
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&screen));
    assert!(g.events_of(Some("bob"), "session_revoked").is_empty());
}

#[test]
fn a_cli_lock_cuts_the_live_session_and_unlock_lets_the_user_back() {
    let g = gate();
    let mut ssh = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "xterm", 80, 24);
    ssh.expect("Your choice: ");
    let id = open_sessions(&g, "alice", 1)[0];

    let out = g.cli_ok(&["user", "lock", "alice", "--reason", "under review"]);
    assert_eq!(out, "locked alice until unlocked; 1 open session ended\n");
    ssh.expect("Your session was ended: account locked: under review");
    let (code, screen) = ssh.finish();
    assert!(code.is_some(), "{}", String::from_utf8_lossy(&screen));
    let locked = g.events_of(Some("alice"), "account_locked");
    assert_eq!(locked.len(), 1, "{locked:#?}");
    for (k, v) in [("source", "sysop"), ("reason", "under review"), ("until", "unlocked")] {
        assert_eq!(detail(&locked[0], k), v, "{}", locked[0]);
    }
    assert!(detail(&locked[0], "actor").as_str().is_some_and(|a| a.starts_with("cli:")), "{}", locked[0]);
    let revoked = g.events_of(Some("alice"), "session_revoked");
    assert_eq!(revoked.len(), 1, "{revoked:#?}");
    assert_eq!(revoked[0]["session_id"].as_i64(), Some(id));
    assert_eq!(detail(&revoked[0], "cause"), "account_locked");
    let shown: Value = serde_json::from_str(&g.cli_ok(&["user", "show", "alice", "--json"])).expect("json");
    assert_eq!((shown["is_locked"].as_bool(), shown["lock_source"].as_str()), (Some(true), Some("sysop")), "{shown}");

    // Locked: the right password is refused, and the event says why.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(!run.authenticated_exec(), "{run:#?}");
    let failed = g.wait_events(Some("alice"), "login_failed", |ev| !ev.is_empty());
    assert_eq!(detail(&failed[0], "reason"), "locked");
    assert_eq!(failed[0]["details"]["lock"]["source"], "sysop", "{}", failed[0]);
    assert_eq!(failed[0]["details"]["lock"]["reason"], "under review", "{}", failed[0]);

    assert_eq!(g.cli_ok(&["user", "unlock", "alice"]), "unlocked alice\n");
    let unlocked = g.events_of(Some("alice"), "account_unlocked");
    assert_eq!(unlocked.len(), 1, "{unlocked:#?}");
    assert_eq!((detail(&unlocked[0], "source"), detail(&unlocked[0], "reason")), (&Value::from("sysop"), &Value::from("under review")));
    assert_eq!(g.cli_ok(&["user", "unlock", "alice"]), "alice was not locked\n");
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(run.authenticated_exec(), "{run:#?}");

    // A lock for a while, and bad durations.
    let out = g.cli_ok(&["user", "lock", "alice", "--for", "2h"]);
    assert!(out.starts_with("locked alice until ") && out.ends_with("; 0 open sessions ended\n"), "{out}");
    for bad in ["0s", "400d"] {
        assert_eq!(cli_err(&g, &["user", "lock", "alice", "--for", bad], 2), "error: --for: give a duration between 1s and 365d, or leave --for out to lock until unlocked\n");
    }
    assert_eq!(cli_err(&g, &["user", "lock", "carol"], 1), "error: no such user: carol\n");
    assert_eq!(cli_err(&g, &["user", "unlock", "carol"], 1), "error: no such user: carol\n");
}

/// A rule's lock over real SSH: the owner, from the address of an earlier
/// full login, still gets in with every factor (password and code); from
/// another address, or without the code, they do not. The lock row is set
/// as `Core::lock_account_by_rule` sets it (the playbooks that call it are
/// another part of the gate).
#[test]
fn a_rule_lock_still_admits_the_owner_from_a_known_address_with_every_factor() {
    let g = Gate::start_with(&crate::mfa::spool_config(""));
    g.add_user("alice", ALICE_PW);
    // A full login (one factor is all the account needs yet) from 127.0.0.1.
    assert!(g.ssh(&Ssh::kbd("alice", ALICE_PW)).authenticated_exec());
    let enrolled = crate::mfa::enroll_totp_spool(&g, "alice");
    let db = rusqlite::Connection::open(g.db_path()).expect("db");
    let until = crate::harness::unix_now() as i64 * 1000 + 3_600_000;
    let n = db
        .execute("UPDATE users SET locked_until = ?1, lock_source = 'rule', lock_reason = 'brute force', lock_incident_id = 7 WHERE username = 'alice'", [until])
        .expect("lock");
    assert_eq!(n, 1);
    let shown = g.cli_ok(&["user", "show", "alice"]);
    assert!(shown.contains("by a rule, incident 7; the owner's known addresses still get in (brute force)"), "{shown}");

    // Another address: refused, whatever it knows; the event says why.
    let code = crate::mfa::next_totp(&enrolled.secret);
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&code).bind("127.0.0.2"));
    assert!(!run.authenticated_exec(), "{run:#?}");
    let failed = g.wait_events(Some("alice"), "login_failed", |ev| !ev.is_empty());
    let lock = &failed[0]["details"]["lock"];
    assert_eq!(detail(&failed[0], "reason"), "locked", "{}", failed[0]);
    assert_eq!((lock["source"].as_str(), lock["known_address"].as_bool(), lock["incident_id"].as_i64()), (Some("rule"), Some(false), Some(7)), "{}", failed[0]);
    // The known address without the right code: refused.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&crate::mfa::wrong_totp(&enrolled.secret)));
    assert!(!run.authenticated_exec(), "{run:#?}");
    assert_eq!(g.wait_events(Some("alice"), "otp_failed", |ev| !ev.is_empty()).len(), 1);
    // The known address with every factor: in.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&code));
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    let success = g.events_of(Some("alice"), "login_success");
    assert_eq!(success[0]["details"]["lock"]["admitted"], "known_address", "{}", success[0]);
    assert_eq!(detail(&success[0], "factors"), 2, "{}", success[0]);

    // `user unlock` lifts a rule's lock too.
    assert_eq!(g.cli_ok(&["user", "unlock", "alice"]), "unlocked alice\n");
    let unlocked = g.events_of(Some("alice"), "account_unlocked");
    assert_eq!((detail(&unlocked[0], "source"), detail(&unlocked[0], "incident_id")), (&Value::from("rule"), &Value::from(7)), "{}", unlocked[0]);
}
