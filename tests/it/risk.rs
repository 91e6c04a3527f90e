//! The risk score of logins over real SSH (SPEC §9): the real OpenSSH
//! client from several loopback addresses (`-b`), two client
//! configurations for two devices (their KEXINIT offers differ), codes
//! from oathtool. Weights and thresholds are set in each test's config so
//! that the scenarios cross them deterministically.

use crate::harness::{config_with_playbooks, detail, poll, Gate, Ssh, SshRun, ALICE_PW};
use crate::mfa::{enroll_totp_spool, next_totp, spool_config};
use serde_json::Value;
use std::time::Duration;

const WRONG_PW: &str = "Wrong-Horse-Battery-0";
/// Another client configuration: another HASSH, another device.
const KEX: &[&str] = &["KexAlgorithms=curve25519-sha256"];

/// The newest `event_type` event of `user`.
fn newest(g: &Gate, user: &str, event_type: &str) -> Value {
    g.events_of(Some(user), event_type).into_iter().next().unwrap_or_else(|| panic!("no {event_type} event for {user}"))
}

fn factors(e: &Value) -> Vec<String> {
    detail(e, "risk")["factors"].as_array().unwrap_or_else(|| panic!("no risk factors in {e:#}")).iter().map(|f| f["name"].as_str().unwrap().to_owned()).collect()
}

fn weights(e: &Value) -> Vec<i64> {
    detail(e, "risk")["factors"].as_array().unwrap().iter().map(|f| f["weight"].as_i64().unwrap()).collect()
}

/// The prompts of a run, without OpenSSH's "(alice@127.0.0.1) " prefix.
fn prompts(run: &SshRun) -> Vec<String> {
    run.prompts.iter().map(|p| p.strip_prefix("(alice@127.0.0.1) ").unwrap_or(p).to_owned()).collect()
}

/// With `adaptive_codes`, alice's enrolled code is asked only when a login
/// scores at or above `step_up` (50 here): her first login (new device,
/// address, network: 60) and a new device from a new network (60) are
/// asked for it; her known device, from her address (10) or from a new
/// network (40), is not.
#[test]
fn a_risky_login_is_asked_for_its_code_and_a_known_one_is_not() {
    let g = Gate::start_with(&spool_config("risk: {\n  adaptive_codes: true\n  step_up: 50\n}\n"));
    g.add_user("alice", ALICE_PW);
    let enrolled = enroll_totp_spool(&g, "alice");
    let both = vec!["Password: ".to_owned(), "Verification code: ".to_owned()];

    // Everything is new: 30 + 15 + 15 = 60, stepped up to the code.
    let code = next_totp(&enrolled.secret);
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&code));
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    assert_eq!(prompts(&run), both, "{run:#?}");
    let first = newest(&g, "alice", "login_success");
    assert_eq!(first["risk_score"], 60, "{first:#}");
    assert_eq!(factors(&first), ["new_device", "new_address", "new_network"], "{first:#}");
    assert_eq!(weights(&first), [30, 15, 15]);
    assert_eq!((detail(&first, "risk")["decision"].as_str(), detail(&first, "risk")["level"].as_i64()), (Some("step_up"), Some(2)), "{first:#}");
    assert_eq!((detail(&first, "method").as_str(), detail(&first, "factors").as_i64()), (Some("keyboard-interactive+totp"), Some(2)), "{first:#}");
    let otp = newest(&g, "alice", "otp_success");
    assert_eq!(otp["risk_score"], 60, "the login's other events carry the score: {otp:#}");
    // The device keeps the score of its latest login.
    let devices: Value = serde_json::from_str(&g.cli_ok(&["security", "devices", "list", "alice", "--json"])).unwrap();
    assert_eq!(devices[0]["risk_score"], 60, "{devices:#}");

    // The same device from the same address: 10, no code asked.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code("000000"));
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    assert_eq!(prompts(&run), ["Password: "], "{run:#?}");
    let known = newest(&g, "alice", "login_success");
    assert_eq!((known["risk_score"].as_i64(), factors(&known), detail(&known, "risk")["decision"].as_str()), (Some(10), vec!["untrusted_device".to_owned()], Some("allow")), "{known:#}");
    assert_eq!(detail(&known, "factors"), 1, "{known:#}");

    // The known device from a network it never used: 10 + 15 + 15 = 40.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).bind("127.0.6.7"));
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    assert_eq!(prompts(&run), ["Password: "], "{run:#?}");
    assert_eq!(newest(&g, "alice", "login_success")["risk_score"], 40);

    // Another device from yet another network: 60, the code again (a
    // backup code this time: the code steps of this minute are spent).
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&enrolled.backup[0]).bind("127.0.7.8").options(KEX));
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    assert_eq!(prompts(&run), both, "{run:#?}");
    let other = newest(&g, "alice", "login_success");
    assert_eq!((other["risk_score"].as_i64(), factors(&other)), (Some(60), vec!["new_device".to_owned(), "new_address".to_owned(), "new_network".to_owned()]), "{other:#}");
    assert_eq!(detail(&other, "method"), "keyboard-interactive+backup_code", "{other:#}");

    // `security events` shows the score and the factors in its table.
    let table = g.cli_ok(&["security", "events", "alice", "--type", "login_success"]);
    assert!(table.contains("RISK"), "{table}");
    assert!(table.contains("60 new_device+30 new_address+15 new_network+15"), "{table}");
    assert!(table.contains("10 untrusted_device+10"), "{table}");
}

/// Failures weigh 50 here. Alice's first login (60) gets in; after three
/// failed passwords on her account, a new device from a new network with
/// her password scores 30 + 15 + 15 + 50 = 100: refused with a message, a
/// `risky_login` incident opens with the refused login's event, and its
/// playbook tells her. She herself, from her known device and address,
/// still gets in (10 + 50 = 60).
#[test]
fn a_login_crossing_deny_is_refused_with_an_incident() {
    let g = Gate::start_with(&format!("{}risk: {{\n  weights: {{\n    recent_failures: 50\n  }}\n}}\n", config_with_playbooks()));
    g.add_user("alice", ALICE_PW);
    assert!(g.ssh(&Ssh::kbd("alice", ALICE_PW)).authenticated_exec(), "{}", g.daemon_log());
    assert_eq!(newest(&g, "alice", "login_success")["risk_score"], 60);
    for _ in 0..3 {
        let run = g.ssh(&Ssh::kbd("alice", WRONG_PW).bind("127.0.8.9"));
        assert_eq!(run.code, Some(255), "{run:#?}");
    }
    g.wait_events(Some("alice"), "login_failed", |ev| ev.len() >= 3);

    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).bind("127.0.8.9").options(KEX));
    assert_eq!(run.code, Some(255), "{run:#?}\n{}", g.daemon_log());
    assert!(!run.authenticated_exec());
    let shown = prompts(&run);
    assert_eq!(shown.len(), 2, "{run:#?}");
    assert!(shown[1].starts_with("This login was refused: it looks too risky"), "the client reads why: {run:#?}");

    let refused = newest(&g, "alice", "login_failed");
    assert_eq!((detail(&refused, "reason").as_str(), refused["risk_score"].as_i64(), refused["severity"].as_str()), (Some("risk_score_too_high"), Some(100), Some("high")), "{refused:#}");
    assert_eq!(factors(&refused), ["new_device", "new_address", "new_network", "recent_failures"], "{refused:#}");
    assert_eq!(weights(&refused), [30, 15, 15, 50]);
    assert_eq!(detail(&refused, "risk")["decision"], "deny");
    assert_eq!(refused["is_suspicious"], true, "{refused:#}");
    assert_eq!(refused["ip"], "127.0.8.9");

    let incidents = || -> Vec<Value> { serde_json::from_str::<Value>(&g.cli_ok(&["security", "incidents", "list", "all", "--json"])).unwrap().as_array().unwrap().clone() };
    let incident = poll(Duration::from_secs(10), "the risky_login incident", || incidents().into_iter().find(|i| i["incident_type"] == "risky_login"));
    let alice_id = refused["user_id"].as_i64().unwrap();
    assert_eq!((incident["severity"].as_str(), incident["subject"]["key"].as_str()), (Some("high"), Some(format!("account:{alice_id}").as_str())), "{incident:#}");
    let shown: Value = serde_json::from_str(&g.cli_ok(&["security", "incidents", "show", &incident["id"].to_string(), "--json"])).unwrap();
    assert!(shown["event_ids"].as_array().unwrap().contains(&refused["id"]), "the refused login is on the incident: {shown:#}");
    let told = g.wait_events(None, "playbook_action", |ev| ev.iter().any(|e| detail(e, "playbook") == "risky-login"));
    let told = told.iter().find(|e| detail(e, "playbook") == "risky-login").unwrap();
    assert_eq!((detail(told, "action").as_str(), detail(told, "outcome").as_str()), (Some("notify"), Some("done")), "{told:#}");

    // The owner from her own device and address is not refused.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    let ok = newest(&g, "alice", "login_success");
    assert_eq!((ok["risk_score"].as_i64(), factors(&ok)), (Some(60), vec!["untrusted_device".to_owned(), "recent_failures".to_owned()]), "{ok:#}");
    // Only the one incident.
    assert_eq!(incidents().iter().filter(|i| i["incident_type"] == "risky_login").count(), 1);
}
