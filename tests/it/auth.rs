//! Authentication hardening end to end (issue 7, helper "auth"): the
//! login recorded only once every factor passed, the enrollment code typed
//! again at login, idle connections penalised at the grace time, key file
//! permissions, the offered ciphers and MACs, and what SIGHUP applies.

use crate::harness::{connect_from, detail, poll, run, text, totp_at, unix_now, Gate, Ssh, ALICE_PW, BIN, DEFAULT_CONFIG};
use crate::mfa::{enable, enroll_totp_spool, next_totp, open_page, spool_config, spooled_link};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const WRONG_PW: &str = "Wrong-Horse-Battery-0";
/// What the gate says when the code that just confirmed enrollment is
/// typed again (core::login::CODE_JUST_USED).
const JUST_USED: &str = "That code was just used to set up two-factor login and cannot be used again; wait for the next code.";

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// One number from the database, through the sqlite3 tool.
fn sql_number(g: &Gate, query: &str) -> i64 {
    let mut cmd = Command::new("sqlite3");
    cmd.arg("-readonly").arg(g.db_path()).arg(query);
    let out = run(cmd, None);
    assert!(out.status.success(), "sqlite3 {query}: {}", text(&out.stderr));
    text(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("sqlite3 {query}: {:?}", text(&out.stdout)))
}

fn user_logins(g: &Gate, user: &str) -> i64 {
    let shown: Value = serde_json::from_str(&g.cli_ok(&["user", "show", user, "--json"])).unwrap();
    shown["login_count"].as_i64().unwrap_or_else(|| panic!("login_count in {shown}"))
}

/// The logins counted on the user's SSH devices (the browser that
/// confirmed the enrollment link is a `web` device with its own count).
fn device_logins(g: &Gate, user: &str) -> i64 {
    sql_number(g, &format!("SELECT COALESCE(SUM(d.login_count), 0) FROM devices d JOIN users u ON u.id = d.user_id WHERE u.username = '{user}' AND d.device_type = 'ssh'"))
}

/// Item 8: a `password`-method client of a 2FA account passes the first
/// factor as its own step; `login_success` and the login counts come only
/// when the code passes in the terminal.
#[test]
fn password_client_login_is_recorded_only_after_the_code() {
    let g = Gate::start_with(&spool_config("mfa: {\n  tries_per_step: 10\n}\n"));
    g.add_user("alice", ALICE_PW);
    let e = enroll_totp_spool(&g, "alice");

    // The right password, then three wrong codes in the terminal.
    let run = g.ssh_script(&Ssh::kbd("alice", ALICE_PW).method("password"), &[("Verification code: ", "000000\r"), ("Verification code: ", "000001\r"), ("Verification code: ", "000002\r")]);
    assert!(run.stdout.contains("The one-time code was not given"), "{run:#?}\n{}", g.daemon_log());
    assert_eq!(run.prompts.len(), 1, "only the password over SSH: {run:#?}");
    g.wait_events(Some("alice"), "session_ended", |ev| !ev.is_empty());
    let started = g.events_of(Some("alice"), "session_started");
    assert_eq!(started.len(), 1, "{started:#?}");
    assert_eq!(detail(&started[0], "stage"), "first_factor", "{}", started[0]);
    assert_eq!(detail(&started[0], "method"), "password", "{}", started[0]);
    assert_eq!(detail(&started[0], "code_pending"), true, "{}", started[0]);
    assert!(g.events_of(Some("alice"), "login_success").is_empty(), "no login_success without the code");
    assert_eq!(g.events_of(Some("alice"), "otp_failed").len(), 3);
    assert_eq!(device_logins(&g, "alice"), 0, "the device's login count did not move");
    assert_eq!(user_logins(&g, "alice"), 0);

    // The right code: now it is a login.
    let line = format!("{}\r", next_totp(&e.secret));
    let run = g.ssh_script(&Ssh::kbd("alice", ALICE_PW).method("password"), &[("Verification code: ", line.as_str()), ("Your choice: ", "q")]);
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    let ok = g.wait_events(Some("alice"), "login_success", |ev| !ev.is_empty());
    assert_eq!(ok.len(), 1, "{ok:#?}");
    assert_eq!(detail(&ok[0], "method"), "password+totp", "{}", ok[0]);
    assert_eq!(detail(&ok[0], "factors"), 2, "{}", ok[0]);
    let otp_ok = g.events_of(Some("alice"), "otp_success");
    assert_eq!(otp_ok.len(), 1);
    assert!(ok[0]["id"].as_i64() > otp_ok[0]["id"].as_i64(), "login_success after the code: {ok:#?} {otp_ok:#?}");
    assert_eq!(ok[0]["session_id"], otp_ok[0]["session_id"]);
    assert_eq!(device_logins(&g, "alice"), 1);
    assert_eq!(user_logins(&g, "alice"), 1);
}

/// Item 16: the code typed on the enrollment page and again at the SSH
/// login is still refused, but the user is told why (only after a right
/// password) and the replay is logged at low severity, not high.
#[test]
fn enrollment_code_typed_again_at_login() {
    let g = Gate::start_with(&spool_config(""));
    g.add_user("alice", ALICE_PW);
    enable(&g, "alice", "totp");
    let link = spooled_link(&g, "alice", 0);
    let page = open_page(&g, &link, "alice.jar");
    let code = totp_at(&page.secret, unix_now());
    let done = page.post(&code);
    assert_eq!(done.status, 200, "{done:#?}\n{}", g.daemon_log());

    // A wrong password with that code: the usual prompts, nothing more.
    let wrong = g.ssh(&Ssh::kbd("alice", WRONG_PW).code(&code));
    assert_eq!(wrong.code, Some(255), "{wrong:#?}");
    assert!(wrong.prompts.iter().all(|p| !p.contains(JUST_USED)), "{wrong:#?}");
    assert!(g.events_of(Some("alice"), "otp_replay").is_empty(), "the code is not looked at after a wrong password");

    // The right password with that code: refused, and told why.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&code));
    assert_eq!(run.code, Some(255), "{run:#?}");
    assert!(run.prompts.len() >= 3, "{run:#?}");
    assert!(run.prompts[1].ends_with("Verification code: ") && !run.prompts[1].contains(JUST_USED), "{run:#?}");
    assert!(run.prompts[2].contains(JUST_USED), "the second code prompt says why: {run:#?}");
    assert!(g.events_of(Some("alice"), "login_success").is_empty());
    let replays = g.wait_events(Some("alice"), "otp_replay", |ev| !ev.is_empty());
    for r in &replays {
        assert_eq!(s(r, "severity"), "low", "{r:#}");
        assert_eq!(detail(r, "after_enrollment"), true, "{r:#}");
        assert_eq!(detail(r, "reason"), "code_replayed", "{r:#}");
    }
    // The next code lets her in.
    let ok = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&next_totp(&page.secret)));
    assert!(ok.authenticated_exec(), "{ok:#?}");
}

/// Item 16, the terminal's code prompt (a `password` client): the same
/// message, the same low-severity event, and the next code lets her in.
#[test]
fn enrollment_code_typed_again_in_the_terminal() {
    let g = Gate::start_with(&spool_config(""));
    g.add_user("alice", ALICE_PW);
    enable(&g, "alice", "totp");
    let link = spooled_link(&g, "alice", 0);
    let page = open_page(&g, &link, "alice.jar");
    let code = totp_at(&page.secret, unix_now());
    assert_eq!(page.post(&code).status, 200, "{}", g.daemon_log());
    let first = format!("{code}\r");
    let next = format!("{}\r", next_totp(&page.secret));
    let run = g.ssh_script(&Ssh::kbd("alice", ALICE_PW).method("password"), &[("Verification code: ", first.as_str()), ("wait for the next code.", next.as_str()), ("Your choice: ", "q")]);
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    assert!(run.stdout.contains(JUST_USED), "{run:#?}");
    assert!(run.stdout.contains("Welcome, alice."), "{run:#?}");
    let replays = g.events_of(Some("alice"), "otp_replay");
    assert_eq!(replays.len(), 1, "{replays:#?}");
    assert_eq!(s(&replays[0], "severity"), "low", "{:#}", replays[0]);
    assert_eq!(detail(&replays[0], "stage"), "terminal", "{:#}", replays[0]);
    assert_eq!(detail(&replays[0], "after_enrollment"), true, "{:#}", replays[0]);
    assert_eq!(g.events_of(Some("alice"), "login_success").len(), 1);
}

/// Reads until the server closes the connection (with a deadline);
/// returns what it sent.
fn read_to_close(mut stream: TcpStream, within: Duration) -> Vec<u8> {
    let until = Instant::now() + within;
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < until, "the server did not close the connection within {within:?}; got {:?}", text(&got));
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return got,
        }
    }
}

/// Item 5: connections that reach the login grace time without logging in
/// count against their address; enough of them and the address is held off
/// like one that failed its passwords.
#[test]
fn idle_connections_reaching_the_grace_time_penalise_their_address() {
    let config = "data_dir: data\nssh: {\n  listen: \"127.0.0.1:0\"\n  login_grace_time: 1s\n  auth_rejection_time: 50ms\n  penalties: {\n    max_failures: 3\n  }\n}\npasswords: {\n  iterations: 1000\n}\nweb: {\n  listen: \"127.0.0.1:0\"\n}\n";
    let g = Gate::start_with(config);
    g.add_user("alice", ALICE_PW);
    // Three idle connections: one says nothing at all, two stop after
    // their version line.
    let idle: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut c = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
            if i > 0 {
                use std::io::Write;
                c.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
            }
            c
        })
        .collect();
    for c in idle {
        read_to_close(c, Duration::from_secs(20));
    }
    let failed = g.wait_events(None, "login_failed", |ev| ev.len() >= 3);
    assert_eq!(failed.len(), 3, "{failed:#?}");
    for f in &failed {
        assert_eq!(detail(f, "reason"), "login_grace_time_exceeded", "{f:#}");
        assert_eq!(s(f, "ip"), "127.0.0.1", "{f:#}");
    }
    let blocked = g.wait_events(None, "ip_blocked", |ev| !ev.is_empty());
    assert_eq!(detail(&blocked[0], "kind"), "penalty", "{:#}", blocked[0]);
    // The address is now held off before the handshake: closed at once,
    // without even the server's version line.
    let c = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    let got = read_to_close(c, Duration::from_secs(10));
    assert!(!text(&got).contains("SSH-2.0"), "{:?}", text(&got));
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(!run.authenticated_exec(), "{run:#?}");
    assert!(g.events_of(Some("alice"), "login_success").is_empty());
    g.wait_events(None, "connection_refused", |ev| !ev.is_empty());
}

/// Item 5's scenario: waves of 100 idle connections from 10 addresses
/// (10 each, some silent, some stopping after their version line) used to
/// hold the unauthenticated slots and let 3 of 10 fresh logins in. With
/// the defaults (MaxStartups 10:30:100, 10 per address, 10 failures in
/// 10 min), every connection that reaches the grace time counts against
/// its address, so within a few waves all ten are held off at accept, and
/// ten concurrent logins from a fresh address all succeed during the next
/// wave.
#[test]
fn idle_waves_from_ten_addresses_leave_room_for_fresh_logins() {
    let g = Gate::start_with(&DEFAULT_CONFIG.replace("auth_rejection_time: 50ms", "auth_rejection_time: 50ms\n  login_grace_time: 1s").replace("max_failures: 1000", "max_failures: 10"));
    g.add_user("alice", ALICE_PW);
    let attackers: Vec<String> = (2..=11).map(|i| format!("127.0.0.{i}")).collect();
    let wave = |g: &Gate| -> Vec<TcpStream> {
        let mut held = Vec::new();
        for a in &attackers {
            for i in 0..10 {
                let mut c = connect_from(a, g.port);
                if i % 2 == 1 {
                    use std::io::Write;
                    let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
                }
                held.push(c);
            }
        }
        held
    };
    let penalised = |g: &Gate| -> std::collections::BTreeSet<String> {
        g.events_of(None, "ip_blocked").iter().filter(|e| detail(e, "kind") == "penalty").map(|e| s(e, "ip").to_owned()).collect()
    };
    // Waves until every attacking address is held off (MaxStartups drops
    // some connections of a wave at random before they can count).
    let until = Instant::now() + Duration::from_secs(120);
    let mut waves = 0;
    while penalised(&g).len() < attackers.len() {
        assert!(Instant::now() < until, "after {waves} waves only {:?} are held off\n{}", penalised(&g), g.daemon_log());
        let held = wave(&g);
        std::thread::scope(|sc| {
            for c in held {
                sc.spawn(move || read_to_close(c, Duration::from_secs(20)));
            }
        });
        waves += 1;
        // The grace-time failures are recorded as the connections end.
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(penalised(&g), attackers.iter().cloned().collect(), "{}", g.daemon_log());
    eprintln!("all ten addresses held off after {waves} waves of 100");
    // The next wave is turned away at accept, and ten fresh logins from
    // 127.0.0.1 made while it is attempted all get in.
    let before = g.events_of(Some("alice"), "login_success").len();
    let held = wave(&g);
    let runs: Vec<_> = std::thread::scope(|sc| {
        let logins: Vec<_> = (0..10).map(|_| sc.spawn(|| g.ssh(&Ssh::kbd("alice", ALICE_PW).bind("127.0.0.1")))).collect();
        logins.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = runs.iter().filter(|r| r.authenticated_exec()).count();
    assert_eq!(ok, 10, "fresh logins during the wave: {runs:#?}\n{}", g.daemon_log());
    for c in held {
        let got = read_to_close(c, Duration::from_secs(10));
        assert!(!text(&got).contains("SSH-2.0"), "a held-off address got the banner: {:?}", text(&got));
    }
    assert_eq!(g.events_of(Some("alice"), "login_success").len(), before + 10);
}

/// Item 13: the daemon refuses to start when a private key file is open to
/// the group or others, naming the file.
#[test]
fn key_files_open_to_group_or_others_stop_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let mut g = Gate::start();
    assert!(g.stop().map(|s| s.success()).unwrap_or(false), "{}", g.daemon_log());
    let serve = |g: &Gate| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&g.config).arg("serve").current_dir(g.dir.path()).env("PORTCULLIS_LOG", "info");
        run(cmd, None)
    };
    for file in ["data/secret.key", "data/ssh_host_ed25519_key"] {
        let path = g.path(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = serve(&g);
        assert!(!out.status.success(), "started with {file} at 0644: {}", text(&out.stderr));
        assert!(!text(&out.stdout).contains("ready"), "{}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains(&format!("{} is accessible by group or others (mode 0644)", path.display())), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    g.launch();
    assert!(g.ssh(&Ssh::kbd("nobody", ALICE_PW)).code == Some(255));
}

/// The algorithm lists of the server's KEXINIT, as `ssh -vvv` prints them.
fn server_proposal(g: &Gate, extra: &[&str]) -> (Vec<(String, String)>, String) {
    let mut cmd = Command::new("ssh");
    cmd.arg("-vvv").arg("-p").arg(g.port.to_string());
    for o in ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "GlobalKnownHostsFile=/dev/null", "BatchMode=yes", "ConnectTimeout=10", "PreferredAuthentications=none"] {
        cmd.arg("-o").arg(o);
    }
    cmd.args(extra).arg("-F").arg("/dev/null").arg("nobody@127.0.0.1").arg("true");
    cmd.env("HOME", g.dir.path()).env_remove("SSH_AUTH_SOCK");
    let out = run(cmd, None);
    let err = text(&out.stderr);
    let lists = err
        .lines()
        .skip_while(|l| !l.contains("peer server KEXINIT proposal"))
        .skip(1)
        .take_while(|l| !l.contains("first_kex_follows"))
        .filter_map(|l| l.strip_prefix("debug2: ").and_then(|l| l.split_once(": ")).map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    (lists, err)
}

/// Item 13: only AEAD ciphers and encrypt-then-MAC MACs are offered.
#[test]
fn only_aead_ciphers_and_etm_macs_are_offered() {
    let g = Gate::start();
    let (lists, err) = server_proposal(&g, &[]);
    let get = |k: &str| lists.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no {k} in the server proposal: {lists:?}\n{err}"));
    let aead = "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com";
    let etm = "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com";
    assert_eq!(get("ciphers ctos"), aead);
    assert_eq!(get("ciphers stoc"), aead);
    assert_eq!(get("MACs ctos"), etm);
    assert_eq!(get("MACs stoc"), etm);
    // A client that insists on the old ones cannot connect.
    let (_, err) = server_proposal(&g, &["-o", "Ciphers=aes128-ctr,aes256-ctr"]);
    assert!(err.contains("no matching cipher found"), "{err}");
    let (_, err) = server_proposal(&g, &["-o", "Ciphers=aes256-ctr", "-o", "MACs=hmac-sha2-256,hmac-sha2-512"]);
    assert!(err.contains("no matching cipher found") || err.contains("no matching MAC found"), "{err}");
}

/// The server's version line on a fresh connection.
fn banner(g: &Gate) -> String {
    let c = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// Item 13: SIGHUP applies the SSH settings to new connections, and what
/// it cannot apply is named in the log and the event.
#[test]
fn sighup_applies_ssh_settings_and_names_what_needs_a_restart() {
    let config = DEFAULT_CONFIG.replace("auth_rejection_time: 50ms", "auth_rejection_time: 50ms\n  server_id: SSH-2.0-GateBefore");
    let g = Gate::start_with(&config);
    assert_eq!(banner(&g), "SSH-2.0-GateBefore");
    let changed = config.replace("SSH-2.0-GateBefore", "SSH-2.0-GateAfter").replace("listen: \"127.0.0.1:0\"\n  auth", "listen: \"127.0.0.1:1\"\n  auth");
    assert_ne!(changed, config);
    std::fs::write(&g.config, &changed).unwrap();
    g.signal(libc::SIGHUP);
    let reloads = g.wait_events(None, "config_reloaded", |ev| !ev.is_empty());
    assert_eq!(s(&reloads[0], "severity"), "info", "{:#}", reloads[0]);
    assert_eq!(detail(&reloads[0], "restart_needed"), &serde_json::json!(["ssh.listen"]), "{:#}", reloads[0]);
    let log = poll(Duration::from_secs(10), "the restart warning in the log", || {
        let log = g.daemon_log();
        log.contains("need a restart").then_some(log)
    });
    let warning = log.lines().find(|l| l.contains("need a restart")).unwrap();
    assert!(warning.contains("ssh.listen") && !warning.contains("server_id"), "{warning}");
    // New connections get the new version string (on the old address).
    assert_eq!(banner(&g), "SSH-2.0-GateAfter");
}
