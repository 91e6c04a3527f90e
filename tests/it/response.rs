//! Detection, incidents and playbooks wired together, end to end with the
//! real OpenSSH client from several loopback addresses and the built-in
//! playbooks: a dictionary username gets its address blocked before the
//! banner; brute force on an account rule-locks it, and its owner still
//! gets in from the address of an earlier full login.

use crate::harness::{config_with_playbooks, connect_from, detail, poll, text, Gate, Ssh, ALICE_PW, DEFAULT_CONFIG};
use serde_json::Value;
use std::io::Read;
use std::time::Duration;

fn incidents(g: &Gate) -> Vec<Value> {
    serde_json::from_str(&g.cli_ok(&["security", "incidents", "list", "all", "--json"])).expect("incidents json")
}

fn wait_incident(g: &Gate, incident_type: &str) -> Value {
    poll(Duration::from_secs(30), &format!("a {incident_type} incident"), || incidents(g).into_iter().find(|i| i["incident_type"] == incident_type))
}

/// What a connection from `from` receives before the gate closes it.
fn banner_from(g: &Gate, from: &str) -> Vec<u8> {
    let mut s = connect_from(from, g.port);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = vec![0u8; 256];
    let n = s.read(&mut got).unwrap_or(0);
    got.truncate(n);
    got
}

#[test]
fn a_dictionary_username_gets_its_address_blocked_before_the_banner() {
    let g = Gate::start_with(&config_with_playbooks());
    g.add_user("alice", ALICE_PW);
    assert!(text(&banner_from(&g, "127.0.0.2")).starts_with("SSH-2.0-"), "not blocked yet");
    let run = g.ssh(&Ssh::kbd("oracle", "oracle").bind("127.0.0.2"));
    assert_eq!(run.code, Some(255), "{run:#?}");
    let incident = wait_incident(&g, "brute_force_ip");
    assert_eq!(incident["subject"]["key"], "address:127.0.0.2", "{incident:#}");
    let blocked = g.wait_events(None, "ip_blocked", |ev| ev.iter().any(|e| e["ip"] == "127.0.0.2" || detail(e, "network") == "127.0.0.2"));
    let b = blocked.iter().find(|e| detail(e, "network") == "127.0.0.2").unwrap_or_else(|| panic!("{blocked:#?}"));
    assert_eq!(detail(b, "incident_id"), &incident["id"], "{b:#}");
    // Dropped right after the accept: not even the version line.
    poll(Duration::from_secs(10), "127.0.0.2 dropped before the banner", || banner_from(&g, "127.0.0.2").is_empty().then_some(()));
    // The playbook's action is on the incident's timeline.
    let shown: Value = serde_json::from_str(&g.cli_ok(&["security", "incidents", "show", &incident["id"].to_string(), "--json"])).unwrap();
    assert!(shown["timeline"].as_array().unwrap().iter().any(|e| e["kind"] == "action" && e["actor"] == "playbook:block-attacking-address"), "{shown:#}");
    // The rule that opened it is kept on it, in the JSON and the table.
    assert_eq!((&incident["rule"], &shown["rule"]), (&Value::from("dictionary_username"), &Value::from("dictionary_username")), "{shown:#}");
    let table = g.cli_ok(&["security", "incidents", "show", &incident["id"].to_string()]);
    assert!(table.lines().any(|l| l.starts_with("rule ") && l.ends_with(" dictionary_username")), "{table}");
    // Everyone else is unaffected.
    let ok = g.ssh(&Ssh::kbd("alice", ALICE_PW).bind("127.0.0.1"));
    assert!(ok.authenticated_exec(), "{ok:#?}");
}

#[test]
fn brute_force_on_an_account_locks_it_but_not_its_owner_at_home() {
    let g = Gate::start_with(&config_with_playbooks());
    g.add_user("alice", ALICE_PW);
    // A full login from home (127.0.0.1) first: a known address.
    assert!(g.ssh(&Ssh::kbd("alice", ALICE_PW).bind("127.0.0.1")).authenticated_exec());
    // Five wrong passwords from five addresses (the distributed form).
    for i in 3..8 {
        let run = g.ssh(&Ssh::kbd("alice", "Wrong-Horse-Battery-0").bind(&format!("127.0.0.{i}")));
        assert!(!run.authenticated_exec(), "{run:#?}");
    }
    let incident = wait_incident(&g, "brute_force_account");
    assert_eq!(incident["subject"]["name"], "alice", "{incident:#}");
    let locked = g.wait_events(Some("alice"), "account_locked", |ev| !ev.is_empty());
    assert_eq!(detail(&locked[0], "source"), "rule", "{:#}", locked[0]);
    // The right password from a new address is refused while locked...
    let away = g.ssh(&Ssh::kbd("alice", ALICE_PW).bind("127.0.0.9"));
    assert!(!away.authenticated_exec(), "{away:#?}");
    // ...and the owner gets in from home with every factor.
    let home = g.ssh(&Ssh::kbd("alice", ALICE_PW).bind("127.0.0.1"));
    assert!(home.authenticated_exec(), "{home:#?}\n{}", g.daemon_log());
    // One incident for the account, however many findings followed.
    assert_eq!(incidents(&g).iter().filter(|i| i["incident_type"] == "brute_force_account").count(), 1);
}

/// Ten wrong passwords from one address: a brute_force_ip incident whose
/// built-in playbook blocks the address before the banner, while a user
/// from another address logs in.
#[test]
fn brute_force_from_one_address_blocks_it() {
    let g = Gate::start_with(&config_with_playbooks());
    g.add_user("alice", ALICE_PW);
    g.add_user("bob", ALICE_PW);
    g.add_user("carol", ALICE_PW);
    for i in 0..10 {
        let who = if i % 2 == 0 { "alice" } else { "bob" };
        let run = g.ssh(&Ssh::kbd(who, "Wrong-Horse-Battery-0").bind("127.0.0.2"));
        assert!(!run.authenticated_exec(), "{run:#?}");
    }
    let incident = wait_incident(&g, "brute_force_ip");
    assert_eq!(incident["subject"]["key"], "address:127.0.0.2", "{incident:#}");
    poll(Duration::from_secs(10), "127.0.0.2 dropped before the banner", || banner_from(&g, "127.0.0.2").is_empty().then_some(()));
    let list: Vec<Value> = serde_json::from_str(&g.cli_ok(&["security", "ip", "list", "--json"])).unwrap();
    assert!(list.iter().any(|b| b["address"] == "127.0.0.2" && b["incident_id"] == incident["id"] && b["source"] == "rule"), "{list:#?}");
    // Alice and bob took five failures each: their accounts are under a
    // rule lock too (neither has a known address yet). Carol, from
    // another address, is untouched.
    let ok = g.ssh(&Ssh::kbd("carol", ALICE_PW).bind("127.0.0.3"));
    assert!(ok.authenticated_exec(), "a legitimate user from another address: {ok:#?}");
    assert!(!g.ssh(&Ssh::kbd("bob", ALICE_PW).bind("127.0.0.3")).authenticated_exec(), "bob is rule-locked");
}

/// A dry-run playbook on live traffic records what it would have done and
/// does nothing: the address keeps its banner.
#[test]
fn a_dry_run_playbook_records_and_does_nothing() {
    let config = DEFAULT_CONFIG.replace(
        "playbooks: []\n",
        "playbooks: [\n  {\n    name: try-blocking\n    when: { incident_type: \"brute_force_ip\" }\n    dry_run: true\n    actions: [\n      { block: true }\n    ]\n  }\n]\n",
    );
    let g = Gate::start_with(&config);
    g.add_user("alice", ALICE_PW);
    let run = g.ssh(&Ssh::kbd("oracle", "oracle").bind("127.0.0.2"));
    assert!(!run.authenticated_exec(), "{run:#?}");
    wait_incident(&g, "brute_force_ip");
    let actions = g.wait_events(None, "playbook_action", |ev| !ev.is_empty());
    assert_eq!(actions.len(), 1, "{actions:#?}");
    let a = &actions[0];
    assert_eq!((detail(a, "playbook"), detail(a, "action"), detail(a, "dry_run"), detail(a, "outcome")), (&"try-blocking".into(), &"block".into(), &true.into(), &"dry_run".into()), "{a:#}");
    assert!(g.events_of(None, "ip_blocked").is_empty(), "nothing blocked");
    assert!(text(&banner_from(&g, "127.0.0.2")).starts_with("SSH-2.0-"), "127.0.0.2 still gets the banner");
}
