//! Retention and export (issue 9 items 6 and 7) end to end: events
//! stream from a real SSH login into a JSON-lines file that SIGHUP
//! reopens after logrotate's rename, and to syslog receivers started here
//! (UDP and TCP on 127.0.0.1) as RFC 5424 records, parsed field by field;
//! the chain head is in both streams; logins are lines of the daemon's
//! log; the daily job trims old events at start and keeps incidents.

use crate::harness::{poll, run, text, Gate, Ssh, ALICE_PW, DEFAULT_CONFIG};
use serde_json::Value;
use std::io::Read;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn sqlite(g: &Gate, statement: &str) -> String {
    let mut cmd = Command::new("sqlite3");
    cmd.arg("-cmd").arg(".timeout 10000").arg(g.db_path()).arg(statement);
    let out = run(cmd, None);
    assert!(out.status.success(), "sqlite3 {statement}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// The stored hash of event `id`, as lowercase hex.
fn stored_hash(g: &Gate, id: i64) -> String {
    sqlite(g, &format!("SELECT lower(hex(hash)) FROM security_events WHERE id = {id}"))
}

fn lines_of(path: &std::path::Path) -> Vec<Value> {
    let body = std::fs::read_to_string(path).unwrap_or_default();
    // Only whole lines: the daemon may be halfway through one.
    let whole = match body.rfind('\n') {
        Some(i) => &body[..=i],
        None => "",
    };
    whole.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"))).collect()
}

fn is_event(v: &Value, event_type: &str, user: &str) -> bool {
    v["event_type"] == event_type && v["username"] == user
}

#[test]
fn events_stream_to_a_json_lines_file_that_sighup_reopens() {
    let config = format!("{DEFAULT_CONFIG}export: {{\n  file: events.jsonl\n  chain_head_every: 3\n}}\n");
    let g = Gate::start_with(&config);
    let file = g.path("events.jsonl");
    g.add_user("alice", ALICE_PW);
    let ok = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(ok.authenticated_exec(), "{ok:#?}\n{}", g.daemon_log());
    let lines = poll(Duration::from_secs(10), "the login in the events file", || {
        let l = lines_of(&file);
        l.iter().any(|v| is_event(v, "session_ended", "alice")).then_some(l)
    });
    // The stream starts with the head at start (an empty log: #0, zeros).
    assert_eq!(lines[0]["chain_head"]["id"], 0, "{:#?}", lines[0]);
    assert_eq!(lines[0]["chain_head"]["hash"], "0".repeat(64));
    // Every event line is the object `security events --json` prints,
    // in id order, the CLI's user_created included.
    let listed = g.events_json(&["1000"]);
    let events: Vec<&Value> = lines.iter().filter(|v| v.get("chain_head").is_none()).collect();
    let ids: Vec<i64> = events.iter().map(|v| v["id"].as_i64().expect("id")).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "{events:#?}");
    for e in &events {
        let same = listed.iter().find(|l| l["id"] == e["id"]).unwrap_or_else(|| panic!("{e} not listed"));
        assert_eq!(*e, same);
    }
    for t in ["user_created", "device_new", "login_success", "session_started", "session_ended"] {
        assert!(events.iter().any(|e| e["event_type"] == t), "no {t} in {events:#?}");
    }
    // A chain head after every third event, with the hash the table holds.
    let heads: Vec<&Value> = lines.iter().skip(1).filter_map(|v| v.get("chain_head")).collect();
    assert!(!heads.is_empty(), "{lines:#?}");
    for h in &heads {
        let id = h["id"].as_i64().expect("id");
        assert_eq!(id % 3, 0, "{h}");
        assert_eq!(h["hash"].as_str(), Some(stored_hash(&g, id).as_str()), "{h}");
    }
    // The daemon's log has one line for the login.
    let success = &g.events_of(Some("alice"), "login_success")[0];
    let log = g.daemon_log();
    let line = log.lines().find(|l| l.contains("login success")).unwrap_or_else(|| panic!("no login line in\n{log}"));
    for part in [format!("event_id={}", success["id"]), "result=\"success\"".into(), "user=\"alice\"".into(), "ip=127.0.0.1".into(), "method=keyboard-interactive".into()] {
        assert!(line.contains(&part), "{part} missing in {line}");
    }

    // logrotate: rename, SIGHUP; what comes next goes to a new file.
    let rotated = g.path("events.jsonl.1");
    std::fs::rename(&file, &rotated).expect("rename");
    g.signal(libc::SIGHUP);
    g.wait_events(None, "config_reloaded", |ev| !ev.is_empty());
    let bad = g.ssh(&Ssh::kbd("alice", "Wrong-Horse-Battery-0"));
    assert_eq!(bad.code, Some(255), "{bad:#?}");
    let fresh = poll(Duration::from_secs(10), "the failure in a new events file", || {
        let l = lines_of(&file);
        l.iter().any(|v| is_event(v, "login_failed", "alice")).then_some(l)
    });
    assert!(fresh.iter().any(|v| v["event_type"] == "config_reloaded"), "{fresh:#?}");
    let old = lines_of(&rotated);
    assert!(!old.iter().any(|v| v["event_type"] == "login_failed" || v["event_type"] == "config_reloaded"), "{old:#?}");
    let last_old = old.iter().filter_map(|v| v["id"].as_i64()).max().expect("ids");
    let first_new = fresh.iter().filter_map(|v| v["id"].as_i64()).min().expect("ids");
    assert_eq!(first_new, last_old + 1, "nothing lost or doubled across the rotation");
    let log = g.daemon_log();
    let line = log.lines().find(|l| l.contains("login failure")).unwrap_or_else(|| panic!("no failure line in\n{log}"));
    assert!(line.contains("user=\"alice\"") && line.contains("reason=bad_password") && line.contains("result=\"failure\""), "{line}");
    let out = g.cli(&["security", "events", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

/// One RFC 5424 record, split into its fields.
#[derive(Debug)]
struct Record {
    pri: u32,
    timestamp: String,
    hostname: String,
    app: String,
    procid: String,
    msgid: String,
    sd_id: String,
    params: Vec<(String, String)>,
    msg: String,
}

impl Record {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Parses `<PRI>1 TIMESTAMP HOSTNAME APP PROCID MSGID [SD-ID k="v"...] MSG`
/// strictly (one SD-ELEMENT, values with `\"`, `\\`, `\]` escapes).
fn parse_5424(rec: &str) -> Record {
    let fail = |why: &str| -> ! { panic!("not RFC 5424 ({why}): {rec:?}") };
    let rest = rec.strip_prefix('<').unwrap_or_else(|| fail("no PRI"));
    let (pri, rest) = rest.split_once('>').unwrap_or_else(|| fail("PRI"));
    let pri: u32 = pri.parse().unwrap_or_else(|_| fail("PRI number"));
    assert!(pri <= 191, "PRI {pri}");
    let rest = rest.strip_prefix("1 ").unwrap_or_else(|| fail("VERSION"));
    let mut fields = rest.splitn(6, ' ');
    let mut next = |what: &str| fields.next().unwrap_or_else(|| fail(what)).to_owned();
    let (timestamp, hostname, app, procid, msgid, rest) = (next("TIMESTAMP"), next("HOSTNAME"), next("APP-NAME"), next("PROCID"), next("MSGID"), next("SD"));
    for (f, max) in [(&hostname, 255), (&app, 48), (&procid, 128), (&msgid, 32)] {
        assert!(!f.is_empty() && f.len() <= max && f.bytes().all(|b| (33..=126).contains(&b)), "header field {f:?} in {rec:?}");
    }
    let body = rest.strip_prefix('[').unwrap_or_else(|| fail("SD"));
    let (sd_id, mut body) = body.split_once(' ').unwrap_or_else(|| fail("SD-ID"));
    let mut params = Vec::new();
    loop {
        if let Some(after) = body.strip_prefix(']') {
            body = after;
            break;
        }
        let (name, after) = body.split_once("=\"").unwrap_or_else(|| fail("SD-PARAM"));
        let name = name.trim_start_matches(' ');
        assert!(!name.is_empty() && name.len() <= 32 && !name.contains([' ', '=', ']', '"']), "PARAM-NAME {name:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, c @ ('"' | '\\' | ']'))) => value.push(c),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => fail("escape at the end"),
                },
                Some((i, '"')) => break i,
                Some((_, ']')) => fail("unescaped ] in a value"),
                Some((_, c)) => value.push(c),
                None => fail("unterminated value"),
            }
        };
        params.push((name.to_owned(), value));
        body = &after[end + 1..];
    }
    let msg = body.strip_prefix(' ').unwrap_or(body);
    assert!(!msg.starts_with('\u{feff}'), "BOM-less MSG");
    Record { pri, timestamp, hostname, app, procid, msgid, sd_id: sd_id.to_owned(), params, msg: msg.to_owned() }
}

/// A receiver on 127.0.0.1: UDP datagrams, or TCP octet-counted frames
/// (`LEN SP RECORD`, one connection after another).
struct Receiver {
    port: u16,
    records: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn udp() -> Receiver {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = sock.local_addr().unwrap().port();
        let records = Arc::new(Mutex::new(Vec::new()));
        let into = records.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = sock.recv(&mut buf) {
                into.lock().unwrap().push(String::from_utf8(buf[..n].to_vec()).expect("UTF-8 record"));
            }
        });
        Receiver { port, records }
    }

    fn tcp_on(listener: std::net::TcpListener) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let records = Arc::new(Mutex::new(Vec::new()));
        let into = records.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let into = into.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    while let Ok(n) = conn.read(&mut chunk) {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        // Whole frames out of the buffer.
                        while let Some(sp) = buf.iter().position(|&b| b == b' ') {
                            let len: usize = std::str::from_utf8(&buf[..sp]).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad frame length in {:?}", String::from_utf8_lossy(&buf)));
                            if buf.len() < sp + 1 + len {
                                break;
                            }
                            let rec = String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).expect("UTF-8 record");
                            into.lock().unwrap().push(rec);
                            buf.drain(..sp + 1 + len);
                        }
                    }
                });
            }
        });
        Receiver { port, records }
    }

    fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().iter().map(|r| parse_5424(r)).collect()
    }
}

fn syslog_config(target: &str) -> String {
    format!("{DEFAULT_CONFIG}export: {{\n  syslog: \"{target}\"\n  facility: local4\n  hostname: gate-test\n  chain_head_every: 2\n}}\n")
}

/// Checks the records of alice's login against her events.
fn check_login_records(g: &Gate, records: &[Record]) {
    let success = &g.events_of(Some("alice"), "login_success")[0];
    let id = success["id"].as_i64().expect("id").to_string();
    let r = records.iter().find(|r| r.msgid == "login_success" && r.param("id") == Some(&id)).unwrap_or_else(|| panic!("no record of #{id} in {records:#?}"));
    // local4 (20) * 8 + informational (6).
    assert_eq!(r.pri, 166, "{r:?}");
    assert_eq!(r.timestamp, success["created_at"].as_str().unwrap(), "{r:?}");
    assert_eq!((r.hostname.as_str(), r.app.as_str(), r.procid.as_str()), ("gate-test", "portcullis", g.pid().to_string().as_str()), "{r:?}");
    assert_eq!(r.sd_id, "portcullis@32473");
    for (k, v) in [("category", "authentication"), ("severity", "info"), ("user", "alice"), ("ip", "127.0.0.1"), ("method", "keyboard-interactive"), ("protocol", "ssh"), ("suspicious", "false")] {
        assert_eq!(r.param(k), Some(v), "{k} in {r:?}");
    }
    assert_eq!(r.param("user_id").map(str::to_owned), success["user_id"].as_i64().map(|i| i.to_string()));
    assert_eq!(r.msg, success["description"].as_str().unwrap(), "{r:?}");
    // The failure: notice (5).
    let failed = &g.events_of(Some("alice"), "login_failed")[0];
    let fid = failed["id"].as_i64().expect("id").to_string();
    let f = records.iter().find(|r| r.msgid == "login_failed" && r.param("id") == Some(&fid)).unwrap_or_else(|| panic!("no record of #{fid}"));
    assert_eq!((f.pri, f.param("reason")), (165, Some("bad_password")), "{f:?}");
    // Chain heads with the table's hashes.
    let heads: Vec<&Record> = records.iter().filter(|r| r.msgid == "chain_head").collect();
    assert!(heads.len() >= 2, "{records:#?}");
    for h in heads.iter().filter(|h| h.param("id") != Some("0")) {
        let hid: i64 = h.param("id").expect("id").parse().expect("number");
        assert_eq!(h.param("hash"), Some(stored_hash(g, hid).as_str()), "{h:?}");
        assert_eq!(h.msg, format!("event chain head: #{hid} sha256 {}", stored_hash(g, hid)));
    }
}

fn login_twice(g: &Gate) {
    let bad = g.ssh(&Ssh::kbd("alice", "Wrong-Horse-Battery-0"));
    assert_eq!(bad.code, Some(255), "{bad:#?}");
    let ok = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(ok.authenticated_exec(), "{ok:#?}\n{}", g.daemon_log());
    g.wait_events(Some("alice"), "session_ended", |ev| !ev.is_empty());
}

#[test]
fn syslog_over_udp_carries_rfc5424_records_of_a_login() {
    let rx = Receiver::udp();
    let g = Gate::start_with(&syslog_config(&format!("udp://127.0.0.1:{}", rx.port)));
    g.add_user("alice", ALICE_PW);
    login_twice(&g);
    let records = poll(Duration::from_secs(10), "the login's records", || {
        let r = rx.records();
        r.iter().any(|r| r.msgid == "session_ended").then_some(r)
    });
    check_login_records(&g, &records);
    assert_eq!(records[0].msgid, "chain_head", "the head at start comes first: {records:#?}");
    let ids: Vec<i64> = records.iter().filter(|r| r.msgid != "chain_head").map(|r| r.param("id").unwrap().parse().unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "every event once, in order");
}

/// TCP, with the receiver not there at first: records are dropped, the
/// daemon says so once, and once the receiver listens the stream goes on
/// with octet-counted frames.
#[test]
fn syslog_over_tcp_survives_a_receiver_that_comes_late() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().unwrap().port()
    };
    let g = Gate::start_with(&syslog_config(&format!("tcp://127.0.0.1:{port}")));
    g.add_user("alice", ALICE_PW);
    poll(Duration::from_secs(10), "the outage in the daemon's log", || g.daemon_log().contains("the syslog target is down").then_some(()));
    let rx = Receiver::tcp_on(std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver's port"));
    // Reconnection waits grow (1 s, 2 s, ...): log in until a login's
    // records arrive.
    let records = poll(Duration::from_secs(40), "records after the receiver came", || {
        login_twice(&g);
        std::thread::sleep(Duration::from_millis(300));
        let r = rx.records();
        // Both records of the last round: the receiver may come back
        // between its failure (then dropped, as records in an outage are)
        // and its success.
        let last_success = g.events_of(Some("alice"), "login_success")[0]["id"].as_i64().unwrap().to_string();
        let last_failure = g.events_of(Some("alice"), "login_failed")[0]["id"].as_i64().unwrap().to_string();
        let has = |msgid: &str, id: &str| r.iter().any(|r| r.msgid == msgid && r.param("id") == Some(id));
        (has("login_success", &last_success) && has("login_failed", &last_failure)).then_some(r)
    });
    check_login_records(&g, &records);
    let log = g.daemon_log();
    assert_eq!(log.matches("the syslog target is down").count(), 1, "said once per outage:\n{log}");
    assert_eq!(log.matches("the syslog target is back").count(), 1, "{log}");
    let back = log.lines().find(|l| l.contains("the syslog target is back")).unwrap();
    assert!(!back.contains("dropped=0"), "records were dropped and counted: {back}");
    // And /metrics counts them.
    let metrics = crate::harness::curl(&g.web_url("/metrics"), &["-k"]);
    let count = |sink: &str, result: &str| -> u64 {
        let key = format!("portcullis_export_records_total{{sink=\"{sink}\",result=\"{result}\"}} ");
        metrics.body.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("no {key} in\n{}", metrics.body))
    };
    assert!(count("syslog", "dropped") > 0 && count("syslog", "written") >= records.len() as u64, "{}", metrics.body);
    assert_eq!((count("file", "written"), count("file", "dropped")), (0, 0));
}

/// The daily job at start removes events older than `retention.events_days`
/// from the start of the chain and records it; the incident opened then is
/// kept with its evidence; the kept chain verifies.
#[test]
fn retention_trims_old_events_at_start_and_keeps_incidents() {
    let config = format!("{DEFAULT_CONFIG}retention: {{\n  events_days: 30\n}}\n");
    let mut g = Gate::prepare(&config);
    g.add_user("alice", ALICE_PW);
    g.cli_ok(&["security", "incidents", "create", "old trouble", "high", "seen long ago"]);
    let old = g.events_json(&["1000"]);
    assert!(old.len() >= 2, "{old:#?}");
    // Make them 400 days old (their hashes no longer match: verify says so).
    sqlite(&g, "UPDATE security_events SET created_at = created_at - 400 * 86400000");
    let out = g.cli(&["security", "events", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let incident_before: Value = serde_json::from_str(&g.cli_ok(&["security", "incidents", "show", "1", "--json"])).expect("json");

    g.launch();
    let done = g.wait_events(None, "scan_completed", |ev| ev.iter().any(|e| e["details"]["scan"] == "retention"));
    let run = done.iter().find(|e| e["details"]["scan"] == "retention").unwrap();
    assert_eq!(run["details"]["removed"].as_u64(), Some(old.len() as u64), "{run}");
    assert_eq!(run["details"]["events_days"], 30, "{run}");
    let first = run["details"]["first_id"].as_i64().expect("first_id");
    assert_eq!(first, old.len() as i64 + 1, "{run}");
    let kept = g.events_json(&["1000"]);
    assert!(kept.iter().all(|e| e["id"].as_i64().unwrap() >= first), "{kept:#?}");
    let out = g.cli(&["security", "events", "verify"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("chain from #{first} ")), "{}", text(&out.stdout));
    // The incident stays as it was, evidence and all.
    let incident_after: Value = serde_json::from_str(&g.cli_ok(&["security", "incidents", "show", "1", "--json"])).expect("json");
    assert_eq!(incident_after["evidence"], incident_before["evidence"]);
    assert_eq!(incident_after["title"], "old trouble");
    assert!(g.daemon_log().contains("retention: old events removed"), "{}", g.daemon_log());
}
