//! The rules as tables: each fires at its threshold and not one below,
//! windows expire, the distributed forms, sprays by tag, dictionary hits,
//! injection and account takeover; a day of ordinary traffic fires
//! nothing; a replay from the table finds what the live run found; the
//! memory stays bounded.

use super::spray::PasswordTag;
use super::*;
use crate::config::detection::{DetectionSettings, DictionaryAction};
use crate::model::{Event, EventType, Severity};

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// Builds a script of events with increasing ids.
struct Script {
    next: i64,
    events: Vec<DetectEvent>,
}

impl Script {
    fn new() -> Script {
        Script { next: 1, events: Vec::new() }
    }
    fn push(&mut self, at: i64, kind: Kind, user: Option<(i64, &str)>, name: Option<&str>, ip: &str) -> i64 {
        let id = self.next;
        self.next += 1;
        self.events.push(DetectEvent {
            id,
            at: Millis(T0 + at),
            kind,
            user_id: user.map(|u| u.0),
            username: name.or(user.map(|u| u.1)).map(Name::new),
            ip: if ip.is_empty() { None } else { Some(ip.parse().expect("ip")) },
            session_id: None,
            tag: None,
        });
        id
    }
    /// A failed password of an existing account.
    fn fail(&mut self, at: i64, user: (i64, &str), ip: &str) -> i64 {
        self.push(at, Kind::Failure { unknown_user: false }, Some(user), None, ip)
    }
    /// A failed attempt with a name that is not an account.
    fn unknown(&mut self, at: i64, name: &str, ip: &str) -> i64 {
        self.push(at, Kind::Failure { unknown_user: true }, None, Some(name), ip)
    }
    fn success(&mut self, at: i64, user: (i64, &str), ip: &str, session: i64) -> i64 {
        let id = self.push(at, Kind::Success, Some(user), None, ip);
        self.events.last_mut().expect("pushed").session_id = Some(session);
        id
    }
    fn new_device(&mut self, at: i64, user: (i64, &str), ip: &str, session: i64) -> i64 {
        let id = self.push(at, Kind::NewDevice, Some(user), None, ip);
        self.events.last_mut().expect("pushed").session_id = Some(session);
        id
    }
    fn tagged(&mut self, tag: u8) {
        self.events.last_mut().expect("pushed").tag = Some(PasswordTag([tag; 16]));
    }
}

fn run(settings: &DetectionSettings, events: &[DetectEvent]) -> Vec<Finding> {
    let mut d = Detector::new(settings, 64);
    events.iter().flat_map(|e| d.observe(e, e.at)).collect()
}

/// (rule, subject key, update) of each finding.
fn shape(found: &[Finding]) -> Vec<(String, String, bool)> {
    found
        .iter()
        .map(|f| (f.details["rule"].as_str().unwrap_or("").to_owned(), f.subject.key(), f.details["update"].as_bool().unwrap_or(false)))
        .collect()
}

fn first(rule: &str, subject: &str) -> (String, String, bool) {
    (rule.to_owned(), subject.to_owned(), false)
}

fn update(rule: &str, subject: &str) -> (String, String, bool) {
    (rule.to_owned(), subject.to_owned(), true)
}

/// Every rule off but the ones `f` turns on.
fn only(f: impl FnOnce(&mut DetectionSettings)) -> DetectionSettings {
    let mut s = DetectionSettings::all_off();
    f(&mut s);
    s
}

const ALICE: (i64, &str) = (1, "alice");

#[test]
fn brute_force_on_an_account_fires_at_five_in_ten_minutes() {
    let s = only(|s| s.brute_force_account.enabled = true);
    // Four failures: nothing. The fifth within 10 minutes: a finding.
    let mut sc = Script::new();
    for i in 0..4 {
        sc.fail(i * MIN, ALICE, "192.0.2.1");
    }
    assert!(run(&s, &sc.events).is_empty());
    sc.fail(9 * MIN, ALICE, "192.0.2.1");
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("brute_force_account", "account:1")]);
    let f = &found[0];
    assert_eq!(f.incident_type, IncidentType::BruteForceAccount);
    assert_eq!(f.event_ids, vec![1, 2, 3, 4, 5]);
    assert_eq!(f.first_event_at, Millis(T0));
    assert_eq!(f.severity, IncidentSeverity::Medium);
    assert_eq!(f.details["failures"], 5);
    assert_eq!(f.details["distributed"], false);
    assert_eq!(f.title, "brute force on account alice: 5 failures in 10m");
    // The same five with the first 11 minutes before the last: the window
    // holds four, nothing fires.
    let mut sc = Script::new();
    sc.fail(0, ALICE, "192.0.2.1");
    for i in 0..4 {
        sc.fail(8 * MIN + i * MIN, ALICE, "192.0.2.1");
    }
    assert!(run(&s, &sc.events).is_empty(), "{:?}", shape(&run(&s, &sc.events)));
    // It keeps counting: updates at 10 and 20, not in between.
    let mut sc = Script::new();
    for i in 0..20 {
        sc.fail(i * 10_000, ALICE, "192.0.2.1");
    }
    assert_eq!(shape(&run(&s, &sc.events)), vec![first("brute_force_account", "account:1"), update("brute_force_account", "account:1"), update("brute_force_account", "account:1")]);
}

#[test]
fn brute_force_on_an_account_from_a_different_address_each_time() {
    // All rules on: no address fails more than once, so per-address rules
    // stay quiet; the account rule sees the distributed form.
    let s = DetectionSettings::default();
    let mut sc = Script::new();
    for i in 0..5 {
        sc.fail(i * MIN, ALICE, &format!("198.51.{i}.7"));
    }
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("brute_force_account", "account:1")]);
    assert_eq!(found[0].severity, IncidentSeverity::High);
    assert_eq!(found[0].details["distributed"], true);
    assert_eq!(found[0].details["addresses"], 5);
    assert_eq!(found[0].title, "brute force on account alice: 5 failures in 10m from 5 addresses");
}

#[test]
fn brute_force_from_an_address_fires_at_ten_in_ten_minutes() {
    let s = only(|s| s.brute_force_ip.enabled = true);
    let mut sc = Script::new();
    for i in 0..9 {
        sc.fail(i * MIN, (i + 1, "u"), "203.0.113.5");
    }
    assert!(run(&s, &sc.events).is_empty());
    sc.fail(9 * MIN + 59_000, (10, "u"), "203.0.113.5");
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("brute_force_ip", "address:203.0.113.5")]);
    assert_eq!(found[0].incident_type, IncidentType::BruteForceIp);
    assert_eq!(found[0].event_ids.len(), 10);
    // Ten spread over 11 minutes: nothing.
    let mut sc = Script::new();
    for i in 0..10 {
        sc.fail(i * 70_000, ALICE, "203.0.113.5");
    }
    assert!(run(&s, &sc.events).is_empty());
    // IPv6: the hosts of one /64 are one address.
    let mut sc = Script::new();
    for i in 0..10 {
        sc.fail(i * 1000, ALICE, &format!("2001:db8:1:2::{:x}", i + 1));
    }
    assert_eq!(shape(&run(&s, &sc.events)), vec![first("brute_force_ip", "address:2001:db8:1:2::/64")]);
}

#[test]
fn slow_brute_force_tiers_per_address_and_per_network() {
    let s = only(|s| s.slow_brute_force.enabled = true);
    // 29 failures 45 minutes apart (~22 h): nothing; the 30th: the 24 h
    // tier, for the address only (one address is not its /24: the
    // network's finding would block every neighbour).
    let mut sc = Script::new();
    for i in 0..29 {
        sc.fail(i * 45 * MIN, ALICE, "203.0.113.9");
    }
    assert!(run(&s, &sc.events).is_empty());
    let mut spread = Script::new();
    spread.events = sc.events.clone();
    spread.next = sc.next;
    sc.fail(29 * 45 * MIN, ALICE, "203.0.113.9");
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("slow_brute_force", "address:203.0.113.9")]);
    assert_eq!(found[0].details["window"], "1d");
    // The 30th from a neighbour: two addresses of the /24, the network.
    spread.fail(29 * 45 * MIN, ALICE, "203.0.113.10");
    assert_eq!(shape(&run(&s, &spread.events)), vec![first("slow_brute_force", "network:203.0.113.0/24")]);
    // ... but not when the other address failed a day before the 30th.
    let mut sc = Script::new();
    sc.fail(0, ALICE, "203.0.113.10");
    for i in 0..30 {
        sc.fail(25 * HOUR + i * 30 * MIN, ALICE, "203.0.113.9");
    }
    assert_eq!(shape(&run(&s, &sc.events)), vec![first("slow_brute_force", "address:203.0.113.9")]);
    // Thirty addresses of one /24, one failure each: only the network.
    let mut sc = Script::new();
    for i in 0..30 {
        sc.fail(i * 40 * MIN, ALICE, &format!("203.0.113.{}", i + 1));
    }
    assert_eq!(shape(&run(&s, &sc.events)), vec![first("slow_brute_force", "network:203.0.113.0/24")]);
    // The 7-day tier: 100 failures 90 minutes apart (~6 days) from one
    // address; 90 minutes apart is 16 a day, under the daily tier.
    let mut sc = Script::new();
    for i in 0..99 {
        sc.fail(i * 90 * MIN, ALICE, "198.51.100.4");
    }
    assert!(run(&s, &sc.events).is_empty());
    sc.fail(99 * 90 * MIN, ALICE, "198.51.100.4");
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("slow_brute_force", "address:198.51.100.4")]);
    assert_eq!(found[0].details["window"], "7d");
    // IPv6 networks are /48.
    let mut sc = Script::new();
    for i in 0..30 {
        sc.fail(i * 40 * MIN, ALICE, &format!("2001:db8:5:{:x}::1", i + 1));
    }
    assert_eq!(shape(&run(&s, &sc.events)), vec![first("slow_brute_force", "network:2001:db8:5::/48")]);
}

#[test]
fn credential_stuffing_from_one_address() {
    let s = only(|s| s.credential_stuffing.enabled = true);
    let users = [(1, "alice"), (2, "bob"), (3, "carol"), (4, "dave"), (5, "erin"), (6, "frank")];
    // Four usernames, all failing: nothing; the fifth: a finding.
    let mut sc = Script::new();
    for (i, u) in users[..4].iter().enumerate() {
        sc.fail(i as i64 * MIN, *u, "192.0.2.50");
    }
    assert!(run(&s, &sc.events).is_empty());
    sc.fail(5 * MIN, users[4], "192.0.2.50");
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("credential_stuffing", "address:192.0.2.50")]);
    assert_eq!(found[0].incident_type, IncidentType::CredentialStuffing);
    // Five usernames but two of seven attempts succeed (71% failures):
    // under 80%, nothing.
    let mut sc = Script::new();
    sc.success(0, users[5], "192.0.2.50", 100);
    sc.success(MIN, users[5], "192.0.2.50", 101);
    for (i, u) in users[..5].iter().enumerate() {
        sc.fail((2 + i as i64) * MIN, *u, "192.0.2.50");
    }
    assert!(run(&s, &sc.events).is_empty(), "{:?}", shape(&run(&s, &sc.events)));
    // Names that are not accounts here do not count: they are username
    // enumeration's (with stuffing's five first, enumeration could never
    // fire from one address). Five unknown ones and four accounts: nothing.
    let mut sc = Script::new();
    for (i, n) in ["anna", "ben", "cleo", "dirk", "eva"].iter().enumerate() {
        sc.unknown(i as i64 * 1000, n, "192.0.2.51");
    }
    for (i, u) in users[..4].iter().enumerate() {
        sc.fail(10_000 + i as i64 * 1000, *u, "192.0.2.51");
    }
    assert!(run(&s, &sc.events).is_empty(), "{:?}", shape(&run(&s, &sc.events)));
    sc.fail(20_000, users[4], "192.0.2.51");
    assert_eq!(shape(&run(&s, &sc.events)), vec![first("credential_stuffing", "address:192.0.2.51")]);
}

#[test]
fn distributed_credential_stuffing_over_the_gate() {
    let s = only(|s| s.distributed_stuffing.enabled = true);
    let fail = |sc: &mut Script, at: i64, account: i64, address: i64| {
        let name = format!("u{account}");
        sc.fail(at, (account, &name), &format!("198.51.100.{address}"));
    };
    // 99 attempts from 33 addresses against 33 accounts within an hour:
    // nothing; the 100th: a gate-wide finding.
    let mut sc = Script::new();
    for i in 0..99 {
        fail(&mut sc, i * 30_000, i % 33 + 1, i % 33 + 1);
    }
    assert!(run(&s, &sc.events).is_empty());
    fail(&mut sc, 99 * 30_000, 7, 7);
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("distributed_stuffing", "gate")]);
    assert_eq!(found[0].subject, Subject::Gate);
    assert_eq!(found[0].details["attempts"], 100);
    // With six successes among the hundred (6%, not under 5%): nothing.
    let mut sc = Script::new();
    for i in 0..94 {
        fail(&mut sc, i * 30_000, i % 33 + 1, i % 33 + 1);
    }
    for i in 0..6 {
        sc.success(94 * 30_000 + i * 1000, (i + 1, "u"), &format!("198.51.100.{}", i + 1), i);
    }
    assert!(run(&s, &sc.events).is_empty());
    // A hundred and more from only five addresses: not distributed.
    let mut sc = Script::new();
    for i in 0..130 {
        fail(&mut sc, i * 20_000, i % 33 + 1, i % 5 + 1);
    }
    assert!(run(&s, &sc.events).is_empty());
}

#[test]
fn password_spraying_by_tag() {
    let s = only(|s| s.password_spraying.enabled = true);
    let names = ["alice", "bob", "carol", "dave", "erin"];
    // One tag against four accounts: nothing; the fifth: from one address.
    let mut sc = Script::new();
    for (i, n) in names.iter().enumerate() {
        sc.fail(i as i64 * MIN, (i as i64 + 1, n), "192.0.2.77");
        sc.tagged(9);
    }
    let found = run(&s, &sc.events[..4]);
    assert!(found.is_empty());
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("password_spraying", "address:192.0.2.77")]);
    assert_eq!(found[0].incident_type, IncidentType::PasswordSpraying);
    assert!(!format!("{:?}", found[0]).contains("tag"), "no tag in the finding");
    // From five addresses: the gate.
    let mut sc = Script::new();
    for (i, n) in names.iter().enumerate() {
        sc.unknown(i as i64 * MIN, n, &format!("203.0.113.{}", i + 1));
        sc.tagged(9);
    }
    assert_eq!(shape(&run(&s, &sc.events)), vec![first("password_spraying", "gate")]);
    // Five different passwords: nothing; no tags (history): nothing.
    let mut sc = Script::new();
    for (i, n) in names.iter().enumerate() {
        sc.fail(i as i64 * MIN, (i as i64 + 1, n), "192.0.2.77");
        sc.tagged(i as u8);
    }
    for (i, n) in names.iter().enumerate() {
        sc.fail(10 * MIN + i as i64 * MIN, (i as i64 + 1, n), "192.0.2.77");
    }
    assert!(run(&s, &sc.events).is_empty());
    // One password against one account many times is not a spray.
    let mut sc = Script::new();
    for i in 0..20 {
        sc.fail(i * 1000, ALICE, "192.0.2.77");
        sc.tagged(1);
    }
    assert!(run(&s, &sc.events).is_empty());
}

#[test]
fn dictionary_usernames_fire_at_once_unless_the_account_exists() {
    let s = only(|s| s.dictionary_usernames.enabled = true);
    let mut sc = Script::new();
    sc.unknown(0, "Admin", "127.0.0.2");
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("dictionary_username", "address:127.0.0.2")]);
    let f = &found[0];
    assert_eq!(f.incident_type, IncidentType::BruteForceIp);
    assert_eq!(f.details["action"], "block");
    assert_eq!(f.details["username"], "Admin");
    assert_eq!(f.event_ids, vec![1]);
    // An account named admin exists here: never a hit.
    let mut sc = Script::new();
    sc.fail(0, (7, "admin"), "127.0.0.2");
    assert!(run(&s, &sc.events).is_empty());
    // A name not in the list: nothing.
    let mut sc = Script::new();
    sc.unknown(0, "alicee", "127.0.0.2");
    assert!(run(&s, &sc.events).is_empty());
    // Later hits attach (doubling), other addresses fire on their own.
    let mut sc = Script::new();
    for n in ["root", "oracle", "postgres", "pi"] {
        sc.unknown(0, n, "127.0.0.2");
    }
    sc.unknown(0, "ubuntu", "127.0.0.3");
    assert_eq!(
        shape(&run(&s, &sc.events)),
        vec![first("dictionary_username", "address:127.0.0.2"), update("dictionary_username", "address:127.0.0.2"), update("dictionary_username", "address:127.0.0.2"), first("dictionary_username", "address:127.0.0.3")]
    );
    // Count mode and the sysop's own names.
    let s = only(|s| {
        s.dictionary_usernames.enabled = true;
        s.dictionary_action = DictionaryAction::Count;
        s.dictionary_usernames.usernames = vec!["minecraft-admin".into()];
    });
    let mut sc = Script::new();
    sc.unknown(0, "Minecraft-Admin", "127.0.0.2");
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("dictionary_username", "address:127.0.0.2")]);
    assert_eq!(found[0].details["action"], "count");
}

#[test]
fn username_enumeration_per_address_and_network() {
    let s = only(|s| s.username_enumeration.enabled = true);
    let mut sc = Script::new();
    for i in 0..9 {
        sc.unknown(i * MIN, &format!("name{i}"), "192.0.2.9");
    }
    // The same unknown name again and again is one name.
    for _ in 0..5 {
        sc.unknown(10 * MIN, "name0", "192.0.2.9");
    }
    assert!(run(&s, &sc.events).is_empty());
    let mut spread = Script::new();
    spread.events = sc.events.clone();
    spread.next = sc.next;
    // The tenth: the address; not its /24, where no other address tried.
    sc.unknown(20 * MIN, "name9", "192.0.2.9");
    assert_eq!(shape(&run(&s, &sc.events)), vec![first("username_enumeration", "address:192.0.2.9")]);
    // The tenth from a neighbour: the network, two of its addresses.
    spread.unknown(20 * MIN, "name9", "192.0.2.10");
    assert_eq!(shape(&run(&s, &spread.events)), vec![first("username_enumeration", "network:192.0.2.0/24")]);
    // Ten addresses of a /24, one name each: the network.
    let mut sc = Script::new();
    for i in 0..10 {
        sc.unknown(i * MIN, &format!("name{i}"), &format!("192.0.2.{}", i + 1));
    }
    assert_eq!(shape(&run(&s, &sc.events)), vec![first("username_enumeration", "network:192.0.2.0/24")]);
    // Existing accounts are not unknown names.
    let mut sc = Script::new();
    for i in 0..12 {
        sc.fail(i * MIN, (i + 1, "someone"), "192.0.2.9");
    }
    assert!(run(&s, &sc.events).is_empty());
}

#[test]
fn injection_inputs_become_findings() {
    let s = only(|s| s.injection.enabled = true);
    let mut sc = Script::new();
    let kind = Kind::injection("username", vec!["sql".into()], "x';DROP TABLE users;--");
    sc.push(0, kind.clone(), None, Some("x';DROP TABLE users;--"), "127.0.0.2");
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("injection_attempt", "address:127.0.0.2")]);
    assert_eq!(found[0].incident_type, IncidentType::InjectionAttempt);
    assert_eq!(found[0].title, "injection-looking input (sql) from 127.0.0.2");
    assert_eq!(found[0].details["text"], "x';DROP TABLE users;--");
    // Text with escapes stays escaped in the finding.
    let mut sc = Script::new();
    let kind = Kind::injection("prompt:end_session", vec!["terminal_escape".into()], "a\u{1b}[2J");
    sc.push(0, kind, Some(ALICE), None, "");
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("injection_attempt", "account:1")]);
    assert!(!found[0].description.contains('\u{1b}') && found[0].description.contains("a\\x1b[2J"), "{}", found[0].description);
}

#[test]
fn account_takeover_after_failures_and_a_change_soon_after() {
    let s = only(|s| s.account_takeover.enabled = true);
    let attack = |failures: i64, known_before: bool, new_device: bool| {
        let mut sc = Script::new();
        if known_before {
            sc.success(0, ALICE, "203.0.113.66", 1);
        }
        for i in 0..failures {
            sc.fail(10 * MIN + i * MIN, ALICE, "203.0.113.66");
        }
        if new_device {
            sc.new_device(20 * MIN, ALICE, "203.0.113.66", 9);
        }
        sc.success(20 * MIN, ALICE, "203.0.113.66", 9);
        sc
    };
    // A known address or device, or too few failures: nothing.
    assert!(run(&s, &attack(2, false, true).events).is_empty());
    assert!(run(&s, &attack(3, true, true).events).is_empty());
    assert!(run(&s, &attack(3, false, false).events).is_empty());
    // New device, new address, after three failures: high.
    let sc = attack(3, false, true);
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("account_takeover", "account:1")]);
    assert_eq!(found[0].severity, IncidentSeverity::High);
    assert_eq!(found[0].event_ids, vec![1, 2, 3, 5]);
    assert_eq!(found[0].details["form"], "login");
    // Then the email changes 10 minutes later: critical. Two hours later: nothing.
    let mut soon = attack(3, false, true);
    soon.push(30 * MIN, Kind::Change("email"), Some(ALICE), None, "203.0.113.66");
    let found = run(&s, &soon.events);
    assert_eq!(shape(&found), vec![first("account_takeover", "account:1"), update("account_takeover", "account:1")]);
    assert_eq!(found[1].severity, IncidentSeverity::Critical);
    assert_eq!(found[1].details["change"], "email");
    let mut late = attack(3, false, true);
    late.push(20 * MIN + 2 * HOUR, Kind::Change("password"), Some(ALICE), None, "203.0.113.66");
    assert_eq!(run(&s, &late.events).len(), 1);
    // A change without a risky login before it: nothing.
    let mut plain = Script::new();
    plain.success(0, ALICE, "192.0.2.1", 1);
    plain.push(MIN, Kind::Change("password"), Some(ALICE), None, "192.0.2.1");
    assert!(run(&s, &plain.events).is_empty());
}

/// Which stored events the detector reads, and as what.
#[test]
fn events_map_to_what_the_rules_read() {
    let ev = |t: EventType, user: Option<i64>, details: serde_json::Value| {
        let mut e = Event::new(t, Severity::Low, "x", Millis(T0)).user(user, Some("alice")).ip(Some("192.0.2.1"));
        e.details = details;
        DetectEvent::from_event(1, &e).map(|d| d.kind)
    };
    use serde_json::json;
    let cases: Vec<(Option<Kind>, Option<Kind>)> = vec![
        (ev(EventType::LoginFailed, Some(1), json!({"reason": "bad_password"})), Some(Kind::Failure { unknown_user: false })),
        (ev(EventType::LoginFailed, None, json!({"reason": "unknown_user"})), Some(Kind::Failure { unknown_user: true })),
        // A held-off address is not looked up: no user_id, but no finding either.
        (ev(EventType::LoginFailed, None, json!({"reason": "address_penalized"})), None),
        (ev(EventType::LoginFailed, None, json!({"reason": "server_busy"})), None),
        (ev(EventType::LoginFailed, Some(1), json!({"reason": "locked"})), None),
        (ev(EventType::LoginFailed, None, json!({"reason": "login_grace_time_exceeded"})), None),
        (ev(EventType::OtpFailed, Some(1), json!({"reason": "wrong_code"})), Some(Kind::Failure { unknown_user: false })),
        (ev(EventType::OtpFailed, Some(1), json!({"stage": "enrollment"})), None),
        (ev(EventType::OtpReplay, Some(1), json!({"after_enrollment": true})), None),
        (ev(EventType::OtpReplay, Some(1), json!({"after_enrollment": null})), None),
        (ev(EventType::OtpReplay, Some(1), json!({})), Some(Kind::Failure { unknown_user: false })),
        // Fields of another JSON type read as missing, and never hide the others.
        (ev(EventType::LoginFailed, Some(1), json!({"reason": 5})), Some(Kind::Failure { unknown_user: false })),
        (ev(EventType::LoginFailed, Some(1), json!({"stage": ["x"], "reason": "locked"})), None),
        (ev(EventType::LoginFailed, Some(1), json!(["locked"])), Some(Kind::Failure { unknown_user: false })),
        (ev(EventType::LoginSuccess, Some(1), json!({})), Some(Kind::Success)),
        (ev(EventType::DeviceNew, Some(1), json!({})), Some(Kind::NewDevice)),
        (ev(EventType::PasswordChanged, Some(1), json!({"actor": "user:1"})), Some(Kind::Change("password"))),
        (ev(EventType::PasswordChanged, Some(1), json!({"actor": "cli:root"})), None),
        (ev(EventType::UserUpdated, Some(1), json!({"field": "email", "actor": "user:1"})), Some(Kind::Change("email"))),
        (ev(EventType::UserUpdated, Some(1), json!({"group": "sysops"})), None),
        (ev(EventType::MfaDisabled, Some(1), json!({"actor": "user:1"})), Some(Kind::Change("2fa"))),
        (ev(EventType::SshKeyAdded, Some(1), json!({"actor": "cli:root"})), None),
        (ev(EventType::SuspiciousInput, None, json!({"kind": "injection", "source": "username", "categories": ["sql"], "text": "x'--"})), Some(Kind::injection("username", vec!["sql".into()], "x'--"))),
        (ev(EventType::SuspiciousInput, None, json!({"kind": "other"})), None),
        (ev(EventType::SessionStarted, Some(1), json!({})), None),
    ];
    for (i, (got, want)) in cases.into_iter().enumerate() {
        assert_eq!(got, want, "case {i}");
    }
    // The stored text reads the same, escapes and repeated keys included.
    let row = |t: EventType, details: &str| {
        let r = crate::store::events::DetectRow { id: 1, event_type: t, user_id: Some(1), username: Some("alice"), ip: Some("192.0.2.1"), session_id: None, created_at: Millis(T0), details };
        DetectEvent::from_row(&r).map(|d| d.kind)
    };
    let texts: Vec<(Option<Kind>, Option<Kind>)> = vec![
        (row(EventType::LoginFailed, r#"{"reason":"bad_password","risk":{"score":40,"factors":[{"name":"new_device"}]}}"#), Some(Kind::Failure { unknown_user: false })),
        (row(EventType::LoginFailed, r#"{"reason":"lo\u0063ked"}"#), None),
        (row(EventType::LoginFailed, r#"{"reason":"bad_password","reason":"locked"}"#), None),
        (row(EventType::LoginFailed, r#"["locked"]"#), Some(Kind::Failure { unknown_user: false })),
        (row(EventType::LoginFailed, "not json"), Some(Kind::Failure { unknown_user: false })),
        (row(EventType::OtpReplay, r#"{"after_enrollment":null}"#), None),
        (row(EventType::SuspiciousInput, r#"{"kind":"injection","source":"username","categories":["sql",7,"xss"],"text":"a\"b"}"#), Some(Kind::injection("username", vec!["sql".into(), "xss".into()], "a\"b"))),
    ];
    for (i, (got, want)) in texts.into_iter().enumerate() {
        assert_eq!(got, want, "text case {i}");
    }
}

/// A day of ordinary traffic: 60 users log in from their own addresses
/// (a dozen behind one office address), a few times a day, and some
/// mistype their password once or twice first. No rule fires.
#[test]
fn a_day_of_normal_logins_with_typos_fires_nothing() {
    let s = DetectionSettings::default();
    let mut sc = Script::new();
    let mut session = 0;
    let mut typos = 0;
    let users: Vec<(i64, String, String)> = (0..60)
        .map(|i| {
            let ip = if i < 12 { "192.0.2.10".to_owned() } else { format!("10.{}.{}.{}", i % 7, i / 7, i + 20) };
            (i as i64 + 1, format!("user{i}"), ip)
        })
        .collect();
    let mut events: Vec<(i64, usize, u8)> = Vec::new(); // (time, user index, failures before)
    for (u, _) in users.iter().enumerate() {
        let logins = 3 + (u % 4);
        for k in 0..logins {
            let t = (k as i64 * 4 * HOUR) + (u as i64 * 7 * MIN) % (3 * HOUR);
            let fails = match (u * 7 + k * 13) % 20 {
                0 => 2,
                1 | 2 => 1,
                _ => 0,
            };
            events.push((t, u, fails as u8));
        }
    }
    events.sort();
    for (t, u, fails) in events {
        let (id, name, ip) = &users[u];
        let user = (*id, name.as_str());
        for f in 0..fails {
            sc.fail(t + f as i64 * 20_000, user, ip);
            typos += 1;
        }
        session += 1;
        if t < 4 * HOUR {
            // Each user's first login of the day comes from a new client.
            sc.new_device(t + 60_000, user, ip, session);
        }
        sc.success(t + 60_000, user, ip, session);
    }
    assert!(typos > 20, "the day has typos: {typos}");
    let found = run(&s, &sc.events);
    assert!(found.is_empty(), "{:#?}", shape(&found));
}

/// The rules read the same from the table (the rebuild at start and the
/// scan read it by id) as from the writer's batches live.
#[test]
fn replay_from_the_table_finds_what_the_live_run_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::store::Store::open(&dir.path().join("t.db")).expect("open");
    store.migrate(None).expect("migrate");
    let base = |t: EventType, at: i64| Event::new(t, Severity::Low, "x", Millis(T0 + at));
    let mut events = Vec::new();
    for i in 0..12 {
        events.push(base(EventType::LoginFailed, i * 1000).user(Some(1), Some("alice")).ip(Some("203.0.113.5")).detail("reason", "bad_password"));
    }
    for (i, n) in ["root", "oracle", "test", "x';drop table users;--"].iter().enumerate() {
        events.push(base(EventType::LoginFailed, 20_000 + i as i64).user(None, Some(n)).ip(Some("127.0.0.2")).detail("reason", "unknown_user"));
    }
    let cats = injection::classify("x';drop table users;--");
    events.push(injection::suspicious_input_event("username", "x';drop table users;--", &cats, Millis(T0 + 20_004)).user(None, Some("x';drop table users;--")).ip(Some("127.0.0.2")));
    for i in 0..6 {
        events.push(base(EventType::LoginFailed, 30_000 + i).user(Some(i + 2), Some(&format!("u{i}"))).ip(Some("198.51.100.3")).detail("reason", "bad_password"));
    }
    events.push(base(EventType::SessionStarted, 40_000).user(Some(1), Some("alice")));
    events.push(base(EventType::LoginFailed, 40_001).ip(Some("198.51.100.3")).detail("reason", "address_penalized"));
    let ids = store.insert_events(&events).expect("insert");
    let s = DetectionSettings::default();
    let mut live = Detector::new(&s, 64);
    let live_found: Vec<Finding> = ids.iter().zip(&events).flat_map(|(id, e)| live.observe_event(*id, e, e.created_at)).collect();
    let mut replay = Detector::new(&s, 64);
    let rows = store.events_by_id(0, i64::MAX, Some(Millis(T0)), EVENT_TYPES, 1000).expect("read");
    let replay_found: Vec<Finding> = rows.iter().flat_map(|(id, e)| replay.observe_event(*id, e, e.created_at)).collect();
    let key = |f: &Finding| (f.incident_type, f.subject.key(), f.event_ids.clone(), f.details.to_string(), f.title.clone());
    assert!(live_found.len() >= 5, "{:?}", shape(&live_found));
    assert_eq!(live_found.iter().map(key).collect::<Vec<_>>(), replay_found.iter().map(key).collect::<Vec<_>>());
    let rules: std::collections::BTreeSet<String> = shape(&live_found).into_iter().map(|(r, _, _)| r).collect();
    for r in ["brute_force_account", "brute_force_ip", "dictionary_username", "injection_attempt", "credential_stuffing"] {
        assert!(rules.contains(r), "{r} in {rules:?}");
    }
    // The scan's reader (borrowed rows, details parsed for their few
    // fields) converts the same way.
    let mut fourth = Detector::new(&s, 64);
    let mut row_found: Vec<Finding> = Vec::new();
    store.detect_rows_by_id(0, i64::MAX, Some(Millis(T0)), EVENT_TYPES, 1000, |r| row_found.extend(DetectEvent::from_row(r).map(|e| fourth.observe(&e, e.at)).unwrap_or_default())).expect("rows");
    assert_eq!(live_found.iter().map(key).collect::<Vec<_>>(), row_found.iter().map(key).collect::<Vec<_>>());
    // The stored view (security events --json) converts the same way.
    let stored = store.events(&crate::store::events::EventFilter { after_id: Some(0), limit: 1000, ..Default::default() }).expect("events");
    let mut third = Detector::new(&s, 64);
    let stored_found: Vec<Finding> = stored.iter().filter_map(DetectEvent::from_stored).flat_map(|e| third.observe(&e, e.at)).collect();
    assert_eq!(live_found.iter().map(key).collect::<Vec<_>>(), stored_found.iter().map(key).collect::<Vec<_>>());
}

/// A million-address botnet cannot grow the state past `max_tracked` keys
/// per map; networks keep counting.
#[test]
fn memory_stays_bounded_under_a_botnet() {
    let mut s = DetectionSettings::default();
    s.max_tracked = 1000;
    let mut d = Detector::new(&s, 64);
    let mut findings = 0;
    for i in 0..50_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i * 7);
        let ev = DetectEvent { id: i64::from(i) + 1, at: Millis(T0 + i64::from(i) * 10), kind: Kind::Failure { unknown_user: true }, user_id: None, username: Some(format!("n{}", i % 5000).into()), ip: Some(ip.into()), session_id: None, tag: Some(PasswordTag([(i % 251) as u8; 16])) };
        findings += d.observe(&ev, ev.at).len();
    }
    let st = d.stats();
    assert!(st.addresses <= 1000 && st.networks <= 1000 && st.accounts <= 1000 && st.tags <= 1000, "{st:?}");
    assert!(st.evicted > 0, "{st:?}");
    assert_eq!(st.events, 50_000);
    assert!(findings > 0, "the networks and the gate still see it");
}

/// After a risky login, a change made from an address the owner had
/// logged in from before it (the owner obeying the forced reset of a
/// takeover playbook) fires nothing; one from the newcomer's address, or
/// from any address the account had not used before the risky login, is
/// critical as before.
#[test]
fn account_takeover_changes_from_the_owners_earlier_addresses_are_the_owners() {
    let s = only(|s| s.account_takeover.enabled = true);
    let attack = || {
        let mut sc = Script::new();
        sc.success(0, ALICE, "192.0.2.1", 1);
        for i in 0..3 {
            sc.fail(10 * MIN + i * MIN, ALICE, "203.0.113.66");
        }
        sc.new_device(20 * MIN, ALICE, "203.0.113.66", 9);
        sc.success(20 * MIN, ALICE, "203.0.113.66", 9);
        sc
    };
    // (address of the change, whether it is a takeover's change)
    let cases = [("192.0.2.1", false), ("203.0.113.66", true), ("198.51.100.9", true), ("", true)];
    for (ip, fires) in cases {
        let mut sc = attack();
        sc.push(25 * MIN, Kind::Change("password"), Some(ALICE), None, ip);
        let found = run(&s, &sc.events);
        let want = if fires { vec![first("account_takeover", "account:1"), update("account_takeover", "account:1")] } else { vec![first("account_takeover", "account:1")] };
        assert_eq!(shape(&found), want, "a change from {ip:?}");
        if fires {
            assert_eq!(found[1].severity, IncidentSeverity::Critical, "{ip:?}");
        }
    }
    // The owner's change does not use up the newcomer's: a later change
    // from the newcomer's address still fires.
    let mut sc = attack();
    sc.push(25 * MIN, Kind::Change("password"), Some(ALICE), None, "192.0.2.1");
    sc.push(26 * MIN, Kind::Change("email"), Some(ALICE), None, "203.0.113.66");
    let found = run(&s, &sc.events);
    assert_eq!(shape(&found), vec![first("account_takeover", "account:1"), update("account_takeover", "account:1")]);
    assert_eq!(found[1].details["change"], "email");
}

/// Shards (`Detector::with_shard`) that each see every event and keep
/// their part of the keys find, together, what one detector finds, event
/// by event: over a mixed stream of every kind the rules read, from
/// addresses of a few networks against a few accounts.
#[test]
fn shards_together_find_what_one_detector_finds() {
    let mut sc = Script::new();
    let users: Vec<(i64, String)> = (1..=24).map(|i| (i, format!("user{i}"))).collect();
    for i in 0..8000i64 {
        let at = i * 1_000;
        let (uid, name) = &users[(i * 7 % if i < 5000 { 12 } else { 24 }) as usize];
        let user = (*uid, name.as_str());
        let ip = format!("198.51.{}.{}", i % 2, (i * 13) % 10 + if i < 5000 { 0 } else { 100 });
        // A burst of failures only at the end (distributed stuffing).
        let case = if i < 5000 { i % 11 } else { 0 };
        match case {
            0 | 1 | 2 | 3 | 4 => {
                sc.fail(at, user, &ip);
                if i % 5 == 0 {
                    sc.tagged((i % 3) as u8);
                }
            }
            5 => {
                sc.unknown(at, &format!("guess{}", i % 17), &ip);
            }
            6 => {
                sc.unknown(at, "admin", &ip);
            }
            7 if i % 3 == 0 => {
                sc.new_device(at, user, &ip, i);
                sc.success(at + 1, user, &ip, i);
            }
            7 => {
                sc.fail(at, user, &ip);
            }
            8 if i % 5 == 0 => {
                sc.success(at, user, &ip, i);
            }
            8 => {
                sc.fail(at, user, &ip);
            }
            9 => {
                sc.push(at, Kind::Change("password"), Some(user), None, &ip);
            }
            _ => {
                sc.push(at, Kind::injection("username", vec!["sql".into()], "' or 1=1 --"), None, Some("' or 1=1 --"), if i % 2 == 0 { &ip } else { "" });
                sc.events.last_mut().expect("pushed").user_id = Some(*uid);
            }
        }
    }
    let s = DetectionSettings::default();
    let key = |f: &Finding| (f.incident_type.as_str(), f.subject.key(), f.event_ids.clone(), f.details.to_string(), f.title.clone());
    let mut one = Detector::new(&s, 64);
    let want: Vec<Vec<_>> = sc.events.iter().map(|e| {
        let mut k: Vec<_> = one.observe(e, e.at).iter().map(key).collect();
        k.sort();
        k
    }).collect();
    let total: usize = want.iter().map(Vec::len).sum();
    assert!(total >= 20, "the stream must make the rules fire: {total}");
    let rules: std::collections::BTreeSet<String> = want.iter().flatten().filter_map(|k| serde_json::from_str::<serde_json::Value>(&k.3).ok()?["rule"].as_str().map(str::to_owned)).collect();
    for r in ["account_takeover", "brute_force_account", "brute_force_ip", "credential_stuffing", "dictionary_username", "distributed_stuffing", "injection_attempt", "password_spraying", "slow_brute_force", "username_enumeration"] {
        assert!(rules.contains(r), "{r} must fire in the stream: {rules:?}");
    }
    for count in [2u64, 3] {
        let mut shards: Vec<Detector> = (0..count).map(|i| Detector::new(&s, 64).with_shard(i, count)).collect();
        for (n, e) in sc.events.iter().enumerate() {
            let mut got: Vec<_> = shards.iter_mut().flat_map(|d| d.observe(e, e.at)).map(|f| key(&f)).collect();
            got.sort();
            assert_eq!(got, want[n], "{count} shards, event {}", e.id);
        }
    }
}

/// A name is kept in place up to `Name::INLINE` bytes and on the heap
/// beyond, and reads back the same either way (multi-byte characters at
/// the boundary included).
#[test]
fn names_read_back_as_they_were_given() {
    let at_limit = "a".repeat(Name::INLINE);
    let over = "a".repeat(Name::INLINE + 1);
    let accented_fits = format!("{}é", "a".repeat(Name::INLINE - 2));
    let accented_over = format!("{}é", "a".repeat(Name::INLINE - 1));
    for s in ["", "u", "Ünïcødé", "x';DROP TABLE users;--", at_limit.as_str(), over.as_str(), accented_fits.as_str(), accented_over.as_str()] {
        let n = Name::new(s);
        assert_eq!(n.as_str(), s);
        assert_eq!(&*n, s);
        assert_eq!(format!("{n:?}"), format!("{s:?}"));
        assert_eq!(n, Name::from(s.to_owned()));
    }
}
