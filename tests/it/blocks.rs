//! Issue 8, items 4 and 5: address blocks made with the CLI while the
//! daemon runs are dropped right after the TCP accept (no SSH banner, no
//! TLS), survive a restart with their expiry, come from imports; an
//! unblock lifts the penalty hold-off too; `never_block` is never held off.

use crate::harness::{curl, detail, poll, text, Gate, Ssh, ALICE_PW, DEFAULT_CONFIG};
use serde_json::Value;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Within this a change made by the CLI must reach the daemon (the issue
/// asks for one second; the deadline is generous for a loaded machine,
/// the poll ends as soon as it holds).
const REACH: Duration = Duration::from_secs(10);

/// A TCP connection to 127.0.0.1:`port` from the source address `from`.
fn connect_from(from: &str, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let from: std::net::IpAddr = from.parse().expect("source address");
    let stream = rt
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(from, 0))?;
            tokio::time::timeout(Duration::from_secs(10), socket.connect(SocketAddr::from(([127, 0, 0, 1], port))))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
        })
        .unwrap_or_else(|e| panic!("connecting from {from} to port {port}: {e}"));
    let stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
}

/// What the SSH server sends first, the client sending nothing:
/// `Some(bytes)` (the start of its banner) or `None` when it closed the
/// connection having sent nothing.
fn first_bytes(from: &str, port: u16) -> Option<Vec<u8>> {
    let mut stream = connect_from(from, port);
    stream.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let until = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        assert!(Instant::now() < until, "from {from}: neither a banner nor a close within 20 s; got {:?}", text(&got));
        match stream.read(&mut buf) {
            Ok(0) => return if got.is_empty() { None } else { Some(got) },
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() >= 8 {
                    return Some(got);
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) if got.is_empty() => return None,
            Err(_) => return Some(got),
        }
    }
}

/// Whether `/healthz` answers a client at `from` (curl, real TLS).
fn web_admitted(g: &Gate, from: &str) -> bool {
    let r = curl(&g.web_url("/healthz"), &["-k", "--interface", from]);
    match r.status {
        200 => true,
        0 => false,
        other => panic!("/healthz from {from}: {other} {r:?}"),
    }
}

fn banner(from: &str, port: u16) -> bool {
    match first_bytes(from, port) {
        Some(b) => {
            assert!(text(&b).starts_with("SSH-2.0-"), "from {from}: {:?}", text(&b));
            true
        }
        None => false,
    }
}

fn blocks_json(g: &Gate) -> Vec<Value> {
    let out = g.cli_ok(&["security", "ip", "list", "--json"]);
    match serde_json::from_str(&out) {
        Ok(Value::Array(v)) => v,
        other => panic!("security ip list --json: not an array: {other:?}\n{out}"),
    }
}

fn failed(g: &Gate, args: &[&str]) -> (i32, String, String) {
    let out = g.cli(args);
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The CLI blocks 127.0.0.2 while the daemon runs: within a deadline its
/// connections are closed before the SSH banner (and before TLS on the web
/// port), a flood of them makes few events, alice logs in from 127.0.0.1
/// meanwhile, and the unblock lets 127.0.0.2 in again.
#[test]
fn a_block_from_the_cli_drops_the_address_before_the_banner() {
    let g = Gate::start();
    g.add_user("alice", ALICE_PW);
    assert!(banner("127.0.0.2", g.port), "127.0.0.2 gets the banner before the block");
    assert!(web_admitted(&g, "127.0.0.2"), "127.0.0.2 reaches the web server before the block");

    let out = g.cli_ok(&["security", "ip", "block", "127.0.0.2", "--reason", "testing blocks"]);
    assert_eq!(out, "blocked 127.0.0.2 until unblocked\n");
    poll(REACH, "127.0.0.2 dropped at accept", || (!banner("127.0.0.2", g.port)).then_some(()));
    // Zero bytes, many times over; the web port closes it before TLS too.
    for _ in 0..20 {
        assert_eq!(first_bytes("127.0.0.2", g.port), None);
    }
    assert!(!web_admitted(&g, "127.0.0.2"), "the web server drops 127.0.0.2 before TLS");
    // Others are unaffected.
    assert!(banner("127.0.0.3", g.port));
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(run.authenticated_exec(), "alice from 127.0.0.1 during the block: {run:#?}");
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).bind("127.0.0.2"));
    assert!(!run.authenticated_exec(), "{run:#?}");

    // The block's event names its cause; the refusals are counted, not one event each.
    let blocked = g.wait_events(None, "ip_blocked", |ev| !ev.is_empty());
    assert_eq!(blocked.len(), 1, "{blocked:#?}");
    let e = &blocked[0];
    assert_eq!((e["ip"].as_str(), detail(e, "network").as_str(), detail(e, "reason").as_str(), detail(e, "source").as_str()), (Some("127.0.0.2"), Some("127.0.0.2"), Some("testing blocks"), Some("manual")), "{e:#}");
    assert!(detail(e, "actor").as_str().is_some_and(|a| a.starts_with("cli:")), "{e:#}");
    assert_eq!((detail(e, "duration"), detail(e, "expires_at"), detail(e, "repeat")), (&Value::Null, &Value::Null, &Value::from(0)), "{e:#}");
    let refused = g.wait_events(None, "connection_refused", |ev| ev.iter().any(|e| e["ip"] == "127.0.0.2"));
    let refused: Vec<&Value> = refused.iter().filter(|e| e["ip"] == "127.0.0.2").collect();
    assert!(refused.len() < 10, "23 or more blocked connections made {} events: {refused:#?}", refused.len());
    assert!(refused.iter().all(|e| detail(e, "reason") == "address blocked" && detail(e, "network") == "127.0.0.2"), "{refused:#?}");

    let list = blocks_json(&g);
    assert_eq!(list.len(), 1, "{list:#?}");
    let b = &list[0];
    assert_eq!((b["address"].as_str(), b["reason"].as_str(), b["source"].as_str()), (Some("127.0.0.2"), Some("testing blocks"), Some("manual")), "{b:#}");
    assert_eq!((&b["expires_at"], &b["incident_id"]), (&Value::Null, &Value::Null), "{b:#}");
    assert!(b["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{b:#}");
    let table = g.cli_ok(&["security", "ip", "list"]);
    assert!(table.starts_with("ADDRESS") && table.contains("127.0.0.2") && table.contains("testing blocks"), "{table}");

    let out = g.cli_ok(&["security", "ip", "unblock", "127.0.0.2"]);
    assert!(out.starts_with("unblocked 127.0.0.2 (blocked since "), "{out}");
    poll(REACH, "127.0.0.2 let in again", || banner("127.0.0.2", g.port).then_some(()));
    assert!(web_admitted(&g, "127.0.0.2"));
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).bind("127.0.0.2"));
    assert!(run.authenticated_exec(), "alice from 127.0.0.2 after the unblock: {run:#?}");
    assert!(blocks_json(&g).is_empty());
    let unblocked = g.wait_events(None, "ip_unblocked", |ev| !ev.is_empty());
    assert_eq!((detail(&unblocked[0], "network").as_str(), detail(&unblocked[0], "had_block")), (Some("127.0.0.2"), &Value::Bool(true)));
}

/// Blocks and their expiry survive a restart; a block that expires lets
/// the address in again and is recorded as `ip_unblocked` (expired).
#[test]
fn blocks_and_their_expiry_survive_a_restart() {
    let mut g = Gate::start();
    g.cli_ok(&["security", "ip", "block", "127.0.0.2", "--for", "1h"]);
    g.cli_ok(&["security", "ip", "block", "127.0.6.0/24"]);
    let out = g.cli_ok(&["security", "ip", "block", "127.0.0.4", "--for", "4s"]);
    assert!(out.starts_with("blocked 127.0.0.4 until "), "{out}");
    let before = blocks_json(&g);
    assert_eq!(before.len(), 3, "{before:#?}");
    assert!(g.stop().is_some_and(|s| s.success()), "{}", g.daemon_log());
    g.launch();
    // Dropped from the first connection on: the blocks were loaded at start.
    assert_eq!(first_bytes("127.0.0.2", g.port), None);
    assert_eq!(first_bytes("127.0.6.200", g.port), None);
    assert!(banner("127.0.7.1", g.port));
    let after = blocks_json(&g);
    let pick = |v: &[Value], a: &str| v.iter().find(|b| b["address"] == a).cloned().unwrap_or_else(|| panic!("{a} not listed: {v:#?}"));
    for a in ["127.0.0.2", "127.0.6.0/24"] {
        assert_eq!(pick(&after, a)["expires_at"], pick(&before, a)["expires_at"], "{a}");
    }
    // The short one runs out: let in, unlisted, and recorded.
    poll(Duration::from_secs(30), "127.0.0.4's block to expire", || banner("127.0.0.4", g.port).then_some(()));
    let expired = g.wait_events(None, "ip_unblocked", |ev| ev.iter().any(|e| detail(e, "network") == "127.0.0.4"));
    let e = expired.iter().find(|e| detail(e, "network") == "127.0.0.4").expect("event");
    assert_eq!(detail(e, "reason"), "expired", "{e:#}");
    poll(REACH, "the expired block to leave the list", || (blocks_json(&g).len() == 2).then_some(()));
    assert_eq!(first_bytes("127.0.0.2", g.port), None, "the hour-long block still holds");
}

/// `security ip import`: a file with bad lines is refused whole with each
/// line named; a good file blocks every address and network in it.
/// Bad addresses on the command line are usage errors (exit 2).
#[test]
fn imports_and_bad_addresses() {
    let g = Gate::start_with(&DEFAULT_CONFIG.replace("passwords: {", "blocks: {\n  never_block: [\"127.0.9.0/24\"]\n}\npasswords: {"));
    let bad = g.path("bad.txt");
    std::fs::write(&bad, "# a feed\n127.0.0.2\n\n127.0.5.0/33\n127.0.5.1/24 ; SBL1\nexample.org\n127.0.0.3 127.0.0.4\n").unwrap();
    let name = bad.display().to_string();
    let (code, stdout, stderr) = failed(&g, &["security", "ip", "import", &name]);
    assert_eq!((code, stdout.as_str()), (1, ""), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{name}:4: invalid network \"127.0.5.0/33\": /33 is out of range for IPv4 (0-32)\n\
             {name}:5: invalid network \"127.0.5.1/24\": host bits are set (the network is 127.0.5.0/24)\n\
             {name}:6: invalid address \"example.org\": expected an IPv4 or IPv6 address, optionally with /BITS, like 192.0.2.7, 192.0.2.0/24 or 2001:db8::/64\n\
             {name}:7: \"127.0.0.3 127.0.0.4\": expected one address or network per line\n\
             error: {name}: 4 bad line(s): nothing imported\n"
        )
    );
    assert!(blocks_json(&g).is_empty(), "nothing imported");
    assert!(banner("127.0.0.2", g.port));

    let good = g.path("good.txt");
    std::fs::write(&good, "# a feed\n127.0.0.2\n\n127.0.5.0/24 ; SBL1\n127.0.0.2 # again\n127.0.9.7\n2001:db8::1\n").unwrap();
    let gname = good.display().to_string();
    let out = g.cli(&["security", "ip", "import", &gname, "--for", "1d"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stderr), format!("note: {gname}:6: 127.0.9.7 overlaps 127.0.9.0/24 of blocks.never_block; skipped\n"));
    assert!(text(&out.stdout).starts_with(&format!("imported 3 from {gname}: 3 new, 0 already blocked and extended, 0 already blocked for longer; until ")), "{}", text(&out.stdout));
    let list = blocks_json(&g);
    let mut addresses: Vec<&str> = list.iter().map(|b| b["address"].as_str().unwrap()).collect();
    addresses.sort();
    assert_eq!(addresses, vec!["127.0.0.2", "127.0.5.0/24", "2001:db8::/64"]);
    assert!(list.iter().all(|b| b["source"] == "import" && b["reason"] == format!("imported from {gname}") && b["expires_at"].is_string()), "{list:#?}");
    poll(REACH, "the imported network dropped", || (first_bytes("127.0.5.77", g.port).is_none()).then_some(()));
    assert_eq!(first_bytes("127.0.0.2", g.port), None);
    assert!(banner("127.0.9.7", g.port), "never_block is not blocked");
    let imported = g.wait_events(None, "ip_blocked", |ev| !ev.is_empty());
    assert_eq!((detail(&imported[0], "kind").as_str(), detail(&imported[0], "entries"), detail(&imported[0], "skipped")), (Some("import"), &Value::from(3), &Value::from(1)), "{:#}", imported[0]);

    // Usage errors name the problem; never_block is refused (exit 1).
    let cases: &[(&[&str], i32, &str)] = &[
        (&["security", "ip", "block", "127.0.0.1/33"], 2, "error: invalid network \"127.0.0.1/33\": /33 is out of range for IPv4 (0-32)\n"),
        (&["security", "ip", "block", "10.1.2.3/8"], 2, "error: invalid network \"10.1.2.3/8\": host bits are set (the network is 10.0.0.0/8)\n"),
        (&["security", "ip", "block", "gate.example.org"], 2, "error: invalid address \"gate.example.org\": expected an IPv4 or IPv6 address, optionally with /BITS, like 192.0.2.7, 192.0.2.0/24 or 2001:db8::/64\n"),
        (&["security", "ip", "block", "0.0.0.0/0"], 2, "error: 0.0.0.0/0 is too wide to block: a block may cover at most a /8 for IPv4\n"),
        (&["security", "ip", "block", "127.0.0.8", "--for", "soon"], 2, "error: --for: invalid duration \"soon\": a unit needs a number before it\n"),
        (&["security", "ip", "unblock", "127.0.0.300"], 2, "error: invalid address \"127.0.0.300\": expected an IPv4 or IPv6 address, optionally with /BITS, like 192.0.2.7, 192.0.2.0/24 or 2001:db8::/64\n"),
        (&["security", "ip", "block", "127.0.9.1"], 1, "error: 127.0.9.1 is on blocks.never_block (127.0.9.0/24): not blocked\n"),
        (&["security", "ip", "block", "127.0.0.0/16"], 1, "error: 127.0.0.0/16 is on blocks.never_block (127.0.9.0/24): not blocked\n"),
    ];
    for (args, want_code, want) in cases {
        let (code, _, stderr) = failed(&g, args);
        assert_eq!((code, stderr.as_str()), (*want_code, *want), "{args:?}");
    }
    let (code, _, stderr) = failed(&g, &["security", "ip", "import", "/nonexistent/feed.txt"]);
    assert_eq!((code, stderr.as_str()), (1, "error: reading /nonexistent/feed.txt: No such file or directory (os error 2)\n"));
    assert_eq!(blocks_json(&g).len(), 3);
}

/// Ten wrong passwords from loopback hold it off (the default penalty is
/// 30 minutes); `security ip unblock 127.0.0.1` lifts it in the running
/// daemon, so the right password works. An address on never_block is
/// never held off.
#[test]
fn unblock_lifts_the_penalty_hold_off_and_never_block_is_never_held_off() {
    let config = DEFAULT_CONFIG.replace("max_failures: 1000", "max_failures: 10").replace("passwords: {", "blocks: {\n  never_block: [\"127.0.0.3\"]\n}\npasswords: {");
    let g = Gate::start_with(&config);
    g.add_user("alice", ALICE_PW);
    // Alice has logged in from here before: her device and address are
    // known, so the risk score of her login after the attack below (its
    // failures, the incident about the address) stays under `deny`.
    assert!(g.ssh(&Ssh::kbd("alice", ALICE_PW)).authenticated_exec(), "{}", g.daemon_log());
    for _ in 0..2 {
        let run = g.ssh(&Ssh::kbd("alice", "Wrong-Horse-Battery-0").prompts(5));
        assert!(!run.authenticated_exec(), "{run:#?}");
    }
    let held = g.wait_events(None, "ip_blocked", |ev| ev.iter().any(|e| detail(e, "kind") == "penalty"));
    assert_eq!(held[0]["ip"], "127.0.0.1", "{:#}", held[0]);
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(!run.authenticated_exec(), "the right password is held off: {run:#?}");

    let out = g.cli_ok(&["security", "ip", "unblock", "127.0.0.1"]);
    assert_eq!(out, "127.0.0.1 was not blocked\nany penalty hold-off on 127.0.0.1 is lifted (in the running daemon within a second)\n");
    let run = poll(REACH, "alice let in after the lift", || {
        let run = g.ssh(&Ssh::kbd("alice", ALICE_PW));
        run.authenticated_exec().then_some(run)
    });
    assert!(run.authenticated_exec());
    let lifted = g.wait_events(None, "ip_unblocked", |ev| !ev.is_empty());
    assert_eq!((detail(&lifted[0], "network").as_str(), detail(&lifted[0], "had_block"), detail(&lifted[0], "penalty_lifted")), (Some("127.0.0.1"), &Value::Bool(false), &Value::Bool(true)));

    // never_block: twelve wrong passwords, no hold-off, the right one works.
    for _ in 0..2 {
        let run = g.ssh(&Ssh::kbd("alice", "Wrong-Horse-Battery-0").prompts(6).bind("127.0.0.3"));
        assert!(!run.authenticated_exec(), "{run:#?}");
    }
    let failures = g.events_of(Some("alice"), "login_failed").into_iter().filter(|e| e["ip"] == "127.0.0.3" && detail(e, "reason") == "bad_password").count();
    assert!(failures >= 10, "{failures} failures from 127.0.0.3");
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).bind("127.0.0.3"));
    assert!(run.authenticated_exec(), "never_block is not held off: {run:#?}");
    assert_eq!(g.events_of(None, "ip_blocked").iter().filter(|e| e["ip"] == "127.0.0.3").count(), 0);
}
