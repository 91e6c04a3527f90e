//! The menu engine end to end: menu files chosen by the config, ACS-steered
//! `next` (the seed example with 2FA and non-2FA users), guarded menus, the
//! account menu, exec and telnet doors, `config check` on bad menus, and art
//! sent raw to CP437 terminals. The real daemon, the real OpenSSH client.

use crate::harness::{detail, poll, text, Gate, Ssh, ALICE_PW, BIN, BOB_PW, DEFAULT_CONFIG};
use crate::mfa::{enroll_totp_spool, next_totp, spool_config};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `menus: menu.hjson` (and `art_dir: art` when asked) after `base`.
fn with_menus(base: &str, art_dir: bool) -> String {
    format!("{base}menus: menu.hjson\n{}", if art_dir { "art_dir: art\n" } else { "" })
}

/// A gate whose config names `menu.hjson` in its folder, written before the
/// daemon starts (it checks the menus at start).
fn gate_with_menus(base: &str, menus: &str, art: &[(&str, &[u8])]) -> Gate {
    let mut g = Gate::prepare(&with_menus(base, !art.is_empty()));
    std::fs::write(g.path("menu.hjson"), menus).unwrap();
    if !art.is_empty() {
        std::fs::create_dir_all(g.path("art")).unwrap();
        for (name, bytes) in art {
            std::fs::write(g.path("art").join(name), bytes).unwrap();
        }
    }
    g.launch();
    g
}

/// An executable shell script in the gate's folder; returns its path.
fn script(g: &Gate, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = g.path(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// The shipped art files (an `art_dir` replaces the built-in art).
fn shipped_art(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("art").join(name)).unwrap()
}

const USERLOG: &str = "*** USERLOG: the seed example's login art ***\n";

/// The SPEC's example, as written (comments, members over lines), and the
/// menus it names.
const SEED_MENUS: &str = r#"{
  menus: {
    login: {
      art: USERLOG
      next: [
        {
          // users with AR2+ must first pass 2FA/OTP
          acs: AR2
          next: loginTwoFactorAuthOTP
        }
        {
          // everyone else skips ahead
          next: fullLoginSequenceLoginArt
        }
      ]
    }
    loginTwoFactorAuthOTP: {
      art: OTP
      module: loginTwoFactorAuthOTP
      next: fullLoginSequenceLoginArt
    }
    fullLoginSequenceLoginArt: {
      art: WELCOME
      module: welcome
      next: mainMenu
    }
    mainMenu: {
      art: MAINMENU
      module: menu
      prompt: "Your choice: "
      options: [
        {
          key: Q
          text: Log off
          next: logoff
        }
      ]
    }
    logoff: {
      art: GOODBYE
      module: logoff
    }
  }
}
"#;

#[test]
fn seed_example_for_2fa_and_non_2fa_users() {
    let art: Vec<(&str, Vec<u8>)> = vec![
        ("USERLOG.asc", USERLOG.as_bytes().to_vec()),
        ("OTP.asc", shipped_art("OTP.asc")),
        ("WELCOME.asc", shipped_art("WELCOME.asc")),
        ("MAINMENU.asc", shipped_art("MAINMENU.asc")),
        ("GOODBYE.ans", shipped_art("GOODBYE.ans")),
    ];
    let art: Vec<(&str, &[u8])> = art.iter().map(|(n, b)| (*n, &b[..])).collect();
    let g = gate_with_menus(&spool_config(""), SEED_MENUS, &art);
    g.add_user("alice", ALICE_PW);
    g.add_user("bob", BOB_PW);

    // Bob has no second factor: the login art, then straight to the welcome.
    let run = g.ssh_session(&Ssh::kbd("bob", BOB_PW));
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    let art_at = run.stdout.find("USERLOG: the seed example").unwrap_or_else(|| panic!("login art: {run:#?}"));
    let welcome_at = run.stdout.find("Welcome, bob.").unwrap_or_else(|| panic!("welcome: {run:#?}"));
    assert!(art_at < welcome_at, "{run:#?}");
    assert!(!run.stdout.contains("Verification code"), "no code asked of a 1-factor user: {run:#?}");
    assert!(!run.stdout.contains("one-time code"), "{run:#?}");

    // Alice enrolls; a plain `password` client is asked for the code in the
    // terminal after the login art and before the welcome and main menu.
    let e = enroll_totp_spool(&g, "alice");
    let line = format!("{}\r", next_totp(&e.secret));
    let run = g.ssh_script(&Ssh::kbd("alice", ALICE_PW).method("password"), &[("Verification code: ", line.as_str()), ("Your choice: ", "q")]);
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    assert_eq!(run.prompts.len(), 1, "only the password over SSH: {run:#?}");
    let art_at = run.stdout.find("USERLOG: the seed example").unwrap_or_else(|| panic!("login art: {run:#?}"));
    let code_at = run.stdout.find("Verification code: ").unwrap();
    let welcome_at = run.stdout.find("Welcome, alice.").unwrap_or_else(|| panic!("welcome: {run:#?}"));
    let menu_at = run.stdout.find("[Q] Log off").unwrap_or_else(|| panic!("main menu: {run:#?}"));
    assert!(art_at < code_at && code_at < welcome_at && welcome_at < menu_at, "{run:#?}");
    assert!(run.stdout.contains("Thank you."), "{run:#?}");
    let ok = g.wait_events(Some("alice"), "otp_success", |ev| !ev.is_empty());
    assert_eq!(detail(&ok[0], "stage"), "terminal", "{}", ok[0]);
    // The login is recorded once the code has passed.
    let logins = g.events_of(Some("alice"), "login_success");
    assert_eq!(detail(&logins[0], "method"), "password+totp", "{}", logins[0]);
    assert_eq!(detail(&logins[0], "factors"), 2, "{}", logins[0]);
}

/// login runs a door straight away: if any flow ran for an `exec` request,
/// the door would leave its marker.
const MARKER_MENUS: &str = r#"{
  menus: {
    login: {
      module: exec
      config: {
        program: "@DOOR@"
      }
      next: logoff
    }
    logoff: {
      module: logoff
    }
  }
}
"#;

#[test]
fn exec_request_refused_before_code() {
    let mut g = Gate::prepare(&with_menus(&spool_config(""), false));
    let marker = g.path("door-ran");
    let door = script(&g, "door.sh", &format!("#!/bin/sh\necho \"door for $PORTCULLIS_USER\" >> '{}'\n", marker.display()));
    std::fs::write(g.path("menu.hjson"), MARKER_MENUS.replace("@DOOR@", &door)).unwrap();
    g.launch();
    g.add_user("alice", ALICE_PW);
    g.add_user("bob", BOB_PW);
    enroll_totp_spool(&g, "alice");

    // Alice, 2FA, with a plain password client and a command: refused.
    let run = g.ssh(&Ssh { command: Some("somecommand"), ..Ssh::kbd("alice", ALICE_PW).method("password") });
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    assert!(!run.stdout.contains("door for"), "{run:#?}");
    // Only the first factor passed: a session step, not a login.
    let ok = g.wait_events(Some("alice"), "session_started", |ev| !ev.is_empty());
    assert_eq!(detail(&ok[0], "factors"), 1, "{}", ok[0]);
    assert_eq!(detail(&ok[0], "method"), "password", "{}", ok[0]);
    assert_eq!(detail(&ok[0], "stage"), "first_factor", "{}", ok[0]);
    assert!(g.events_of(Some("alice"), "login_success").is_empty());
    let ended = g.wait_events(Some("alice"), "session_ended", |ev| !ev.is_empty());
    assert_eq!(detail(&ended[0], "reason"), "command refused", "{}", ended[0]);
    // Bob, one factor: refused the same way.
    let run = g.ssh(&Ssh { command: Some("somecommand"), ..Ssh::kbd("bob", BOB_PW) });
    assert!(run.authenticated_exec(), "{run:#?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "no door ran for an exec request: {:?}", std::fs::read_to_string(&marker));

    // The marker works: bob's interactive session runs the door. (The
    // session is then dropped: a door whose program has exited does not
    // end, see exec_door_returns_to_the_menu_when_the_program_exits.)
    let ssh = g.ssh_pty(&Ssh::kbd("bob", BOB_PW), "xterm", 80, 24);
    poll(Duration::from_secs(15), "the door's marker", || marker.exists().then_some(()));
    drop(ssh);
    assert_eq!(std::fs::read_to_string(&marker).unwrap_or_default(), "door for bob\n");
}

#[test]
fn account_menu_changes_password() {
    const NEW_PW: &str = "Maple-Quartz-Violin-77";
    let g = Gate::start();
    g.add_user("alice", ALICE_PW);
    let new_line = format!("{NEW_PW}\r");
    let current_line = format!("{ALICE_PW}\r");
    let run = g.ssh_script(
        &Ssh::kbd("alice", ALICE_PW),
        &[
            ("Your choice: ", "a"),
            ("[C] Change your password", ""),
            ("Your choice: ", "c"),
            ("Current password: ", current_line.as_str()),
            ("New password: ", "short\r"),
            ("Repeat it: ", "short\r"),
            ("must be at least 12 characters", ""),
            ("New password: ", new_line.as_str()),
            ("Repeat it: ", new_line.as_str()),
            ("Your password has been changed.", ""),
            ("Your choice: ", "q"),
            ("[Q] Log off", ""),
            ("Your choice: ", "q"),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    assert!(run.stdout.contains("Your password has been changed."), "{run:#?}");
    assert!(!run.stdout.contains(NEW_PW), "hidden input is not echoed: {run:#?}");

    let changed = g.wait_events(Some("alice"), "password_changed", |ev| !ev.is_empty());
    assert_eq!(changed.len(), 1, "{changed:#?}");
    let actor = detail(&changed[0], "actor").as_str().unwrap_or_default();
    assert!(actor.starts_with("user:"), "changed by the user: {}", changed[0]);
    assert!(changed[0]["session_id"].as_i64().is_some(), "{}", changed[0]);

    let old = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert_eq!(old.code, Some(255), "the old password no longer works: {old:#?}");
    let new = g.ssh(&Ssh::kbd("alice", NEW_PW));
    assert!(new.authenticated_exec(), "the new password works: {new:#?}");
}

const DOOR_MENUS: &str = r#"{
  menus: {
    login: {
      module: menu
      prompt: "Your choice: "
      options: [
        {
          key: D
          text: The exec door
          next: door
        }
        {
          key: T
          text: The telnet door
          next: telnet
        }
        {
          key: B
          text: The bytes door
          next: bytes
        }
        {
          key: Q
          text: Log off
          next: logoff
        }
      ]
    }
    bytes: {
      module: exec
      config: {
        program: "@DOOR@"
        args: [
          bytes
        ]
      }
      next: login
    }
    door: {
      module: exec
      config: {
        program: "@DOOR@"
        args: [
          "first arg"
        ]
      }
      next: login
    }
    telnet: {
      module: telnet
      config: {
        host: "127.0.0.1"
        port: @PORT@
        announce: "LOGIN {username}"
      }
      next: login
    }
    logoff: {
      module: logoff
    }
  }
}
"#;

const DOOR_SCRIPT: &str = r#"#!/bin/sh
if [ "$1" = bytes ]; then
  echo "bytes door ready"
  IFS= read -r line
  echo "bytes=$(printf '%s' "$line" | od -An -tx1 | tr -d ' \n')"
  exit 0
fi
echo "user=$PORTCULLIS_USER factors=$PORTCULLIS_FACTORS level=$PORTCULLIS_LEVEL id=$PORTCULLIS_USER_ID term=$TERM arg=$1"
echo "size=$(stty size)"
trap 'echo "winch=$(stty size)"' WINCH
echo "door ready"
n=0
while [ $n -lt 50 ]; do
  n=$((n+1))
  if read line; then
    [ "$line" = end ] && break
    echo "line=$line size=$(stty size)"
  fi
done
echo "door done"
"#;

fn door_gate(telnet_port: u16) -> Gate {
    let mut g = Gate::prepare(&with_menus(DEFAULT_CONFIG, false));
    let door = script(&g, "door.sh", DOOR_SCRIPT);
    std::fs::write(g.path("menu.hjson"), DOOR_MENUS.replace("@DOOR@", &door).replace("@PORT@", &telnet_port.to_string())).unwrap();
    g.launch();
    g.add_user("alice", ALICE_PW);
    g
}

#[test]
fn exec_door_runs_with_env_and_window_change() {
    let g = door_gate(1);
    let shown: serde_json::Value = serde_json::from_str(&g.cli_ok(&["user", "show", "alice", "--json"])).unwrap();
    let user_id = shown["id"].as_i64().unwrap_or_else(|| panic!("user show: {shown}"));
    let mut ssh = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "xterm-256color", 80, 24);
    ssh.expect("Your choice: ");
    ssh.send(b"d");
    ssh.expect("user=alice factors=1 level=1 id=");
    ssh.expect(" term=xterm-256color arg=first arg");
    ssh.expect("size=24 80");
    ssh.expect("door ready");
    // The client's terminal grows: ssh sends a window change; the door
    // sees SIGWINCH and the new size.
    ssh.resize(100, 30);
    ssh.expect("winch=30 100");
    ssh.send(b"x\r");
    ssh.expect("line=x size=30 100");
    ssh.send(b"end\r");
    ssh.expect("door done");
    let screen = text(&ssh.screen);
    assert!(screen.contains(&format!("id={user_id} ")), "{screen}");
    // The user leaves (the return to the menu is the next test's).
    drop(ssh);
    let ended = g.wait_events(Some("alice"), "session_ended", |ev| !ev.is_empty());
    assert_eq!(ended.len(), 1, "{ended:#?}");
}

/// When the door's program exits, the user is back in the menus.
#[test]
fn exec_door_returns_to_the_menu_when_the_program_exits() {
    let g = door_gate(1);
    let mut ssh = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "xterm", 80, 24);
    ssh.expect("Your choice: ");
    ssh.send(b"d");
    ssh.expect("door ready");
    ssh.send(b"end\r");
    ssh.expect("door done");
    ssh.expect("Your choice: ");
    ssh.send(b"q");
    let (code, screen) = ssh.finish();
    assert_eq!(code, Some(0), "{}\n{}", text(&screen), g.daemon_log());
    let ended = g.wait_events(Some("alice"), "session_ended", |ev| !ev.is_empty());
    assert_eq!(detail(&ended[0], "reason"), "logged off", "{}", ended[0]);
}

/// A one-connection telnet service: reads the announce line, offers to
/// echo (IAC WILL ECHO) and greets, then reads until it has the client's
/// answer (IAC DO ECHO) and a line, echoes that line and closes. Returns
/// the port and what it received.
fn telnet_service() -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(25);
        listener.set_nonblocking(true).unwrap();
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("no connection to the telnet service: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut got = Vec::new();
        let read_until = |stream: &mut std::net::TcpStream, got: &mut Vec<u8>, done: &dyn Fn(&[u8]) -> bool| {
            let mut buf = [0u8; 1024];
            while !done(got) && Instant::now() < until {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        };
        read_until(&mut stream, &mut got, &|g: &[u8]| g.windows(2).any(|w| w == b"\r\n"));
        stream.write_all(&[255, 251, 1]).unwrap();
        stream.write_all(b"Hello from the service\r\nSay something: ").unwrap();
        let answered = |g: &[u8]| g.windows(3).any(|w| w == [255, 253, 1]) && g.windows(5).any(|w| w == b"ping\r" || w == b"ping\n");
        read_until(&mut stream, &mut got, &answered);
        stream.write_all(b"echo: ping\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        got
    });
    (port, handle)
}

#[test]
fn telnet_door_reaches_a_service() {
    let (port, service) = telnet_service();
    let g = door_gate(port);
    let run = g.ssh_script(
        &Ssh::kbd("alice", ALICE_PW),
        &[("Your choice: ", "t"), ("Say something: ", "ping\r"), ("The service closed the connection.", ""), ("Your choice: ", "q")],
    );
    let got = service.join().expect("the telnet service");
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    assert!(run.stdout.contains("Hello from the service"), "{run:#?}");
    assert!(run.stdout.contains("echo: ping"), "{run:#?}");
    assert!(!run.stdout.contains('\u{fffd}'), "telnet commands reached the user: {run:?}");
    assert!(got.starts_with(b"LOGIN alice\r\n"), "the announce line first: {:?}", String::from_utf8_lossy(&got));
    assert!(got.windows(3).any(|w| w == [255, 253, 1]), "IAC DO ECHO answered the offer: {got:?}");
    assert!(got.windows(5).any(|w| w == b"ping\r"), "the user's line: {got:?}");
}

/// `config check` with `menus` set to `body`: (exit code, stdout, stderr,
/// the menu file's path).
fn check_menus(name: &str, body: &str) -> (Option<i32>, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.hjson");
    std::fs::write(&config, format!("{DEFAULT_CONFIG}menus: {name}\n")).unwrap();
    let menu = dir.path().join(name);
    std::fs::write(&menu, body).unwrap();
    let mut c = Command::new(BIN);
    c.arg("--config").arg(&config).args(["config", "check"]).current_dir(dir.path()).env_remove("PORTCULLIS_CONFIG").env("PORTCULLIS_LOG", "warn");
    let out = crate::harness::run(c, None);
    (out.status.code(), text(&out.stdout), text(&out.stderr), menu.display().to_string())
}

/// A menu file with `login` as given (lines indented 4) and a `logoff`.
fn login_menu(login: &str) -> String {
    format!("menus: {{\n  login: {{\n{login}\n  }}\n  logoff: {{\n    art: GOODBYE\n    module: logoff\n  }}\n}}\n")
}

#[test]
fn bad_menus_rejected_by_config_check() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "acs.hjson",
            "    art: CONNECT\n    next: [\n      {\n        acs: XX2\n        next: logoff\n      }\n      {\n        next: logoff\n      }\n    ]",
            ":6:14: menus.login.next[0].acs: column 1: unknown ACS code \"XX\"",
        ),
        ("next.hjson", "    art: CONNECT\n    next: nowhere", ":4:11: menus.login.next: unknown menu \"nowhere\""),
        ("art.hjson", "    art: MISSING\n    next: logoff", ":3:10: menus.login.art: no art named \"MISSING\""),
        ("loop.hjson", "    art: CONNECT\n    next: login", ":2:10: menus.login: the menus login -> login lead back to each other"),
    ];
    for (name, login, want) in cases {
        let (code, out, err, path) = check_menus(name, &login_menu(login));
        assert_eq!(code, Some(1), "{name}: {out}{err}");
        assert!(err.contains(&format!("{path}{want}")), "{name}: want {path}{want} in:\n{err}");
        assert!(err.contains("1 problem found"), "{name}: {err}");
        assert!(!out.contains("config ok"), "{name}: {out}");
    }

    // Every problem is listed, each with its position.
    let (code, _, err, path) = check_menus("two.hjson", &login_menu("    art: MISSING\n    next: nowhere"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("{path}:3:10: menus.login.art: ")), "{err}");
    assert!(err.contains(&format!("{path}:4:11: menus.login.next: ")), "{err}");
    assert!(err.contains("2 problems found"), "{err}");

    // An unparenthesised mix of & and | is a warning, not an error.
    let (code, out, err, path) = check_menus("warn.hjson", &login_menu("    art: CONNECT\n    config: {\n      acs: \"AR1 & AF1 | SC\"\n    }\n    next: logoff"));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("config ok: "), "{out}");
    let warning = err.lines().find(|l| l.starts_with("warning: ")).unwrap_or_else(|| panic!("no warning in {err:?}"));
    assert!(warning.contains(&format!("{path}:5:12: menus.login.config.acs: ")), "{warning}");
    assert!(warning.contains("parentheses"), "{warning}");
    // With parentheses: no warning.
    let (code, _, err, _) = check_menus("paren.hjson", &login_menu("    art: CONNECT\n    config: {\n      acs: \"(AR1 & AF1) | SC\"\n    }\n    next: logoff"));
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("warning:"), "{err}");
}

const GUARD_MENUS: &str = r#"{
  menus: {
    login: {
      art: CONNECT
      next: mainMenu
    }
    mainMenu: {
      module: menu
      prompt: "Your choice: "
      options: [
        {
          key: S
          text: Sysop corner
          next: sysop
        }
        {
          key: X
          text: Sysops only shortcut
          next: sysop
          acs: "GM[sysops]"
        }
        {
          key: Q
          text: Log off
          next: logoff
        }
      ]
    }
    sysop: {
      module: menu
      prompt: "Sysop choice: "
      config: {
        acs: "GM[sysops]"
      }
      options: [
        {
          key: B
          text: Back to the main menu
          next: mainMenu
        }
      ]
    }
    logoff: {
      art: GOODBYE
      module: logoff
    }
  }
}
"#;

#[test]
fn menu_guard_acs() {
    let g = gate_with_menus(DEFAULT_CONFIG, GUARD_MENUS, &[]);
    g.add_user("alice", ALICE_PW);
    g.add_user("bob", BOB_PW);
    g.cli_ok(&["user", "group", "add", "alice", "sysops", "--new-group"]);

    // Bob is not a sysop: an option guarded by ACS is not shown (nor taken:
    // X does nothing); the guarded menu refuses him, and he stays in the
    // flow, back at the menu.
    let run = g.ssh_script(&Ssh::kbd("bob", BOB_PW), &[("Your choice: ", "x"), ("", "s"), ("You do not have access to that.", ""), ("Your choice: ", "q")]);
    assert!(!run.stdout.contains("Sysops only shortcut"), "{run:#?}");
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    assert!(run.stdout.contains("You do not have access to that."), "{run:#?}");
    assert!(!run.stdout.contains("Sysop choice: "), "{run:#?}");
    assert!(!run.stdout.contains("Back to the main menu"), "{run:#?}");
    assert_eq!(run.stdout.matches("You do not have access to that.").count(), 1, "{run:#?}");

    // Alice is: in, and back out.
    let run = g.ssh_script(&Ssh::kbd("alice", ALICE_PW), &[("Your choice: ", "s"), ("Sysop choice: ", "b"), ("Your choice: ", "q")]);
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    assert!(run.stdout.contains("[X] Sysops only shortcut"), "{run:#?}");
    assert!(run.stdout.contains("[B] Back to the main menu"), "{run:#?}");
    assert!(!run.stdout.contains("You do not have access"), "{run:#?}");
}

/// `DT` over real SSH: an option for trusted devices only appears once the
/// sysop trusts the device alice logs in from, and goes when trust goes.
#[test]
fn dt_shows_an_option_to_trusted_devices_only() {
    let menus = GUARD_MENUS.replace("acs: \"GM[sysops]\"\n        }\n        {\n          key: Q", "acs: DT\n        }\n        {\n          key: Q").replace("Sysops only shortcut", "Trusted devices only");
    assert!(menus.contains("acs: DT"), "{menus}");
    let g = gate_with_menus(DEFAULT_CONFIG, &menus, &[]);
    g.add_user("alice", ALICE_PW);
    let shown = |g: &Gate| {
        let run = g.ssh_script(&Ssh::kbd("alice", ALICE_PW), &[("Your choice: ", "q")]);
        assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
        run.stdout.contains("[X] Trusted devices only")
    };
    assert!(!shown(&g), "an untrusted device");
    let list: serde_json::Value = serde_json::from_str(&g.cli_ok(&["security", "devices", "list", "alice", "--json"])).unwrap();
    let devices = list.as_array().unwrap();
    assert_eq!(devices.len(), 1, "{list:#}");
    let id = devices[0]["id"].as_i64().unwrap().to_string();
    g.cli_ok(&["security", "devices", "trust", &id]);
    assert!(shown(&g), "the trusted device");
    g.cli_ok(&["security", "devices", "untrust", &id]);
    assert!(!shown(&g), "trust taken back");
}

/// `RS` over real SSH: an option for logins scoring 50 or more appears
/// on alice's first login (new device, address and network: 60), not on
/// the next from the same device and address (10), and again for another
/// device from another network (60).
#[test]
fn rs_shows_an_option_to_risky_logins_only() {
    let menus = GUARD_MENUS.replace("acs: \"GM[sysops]\"\n        }\n        {\n          key: Q", "acs: RS50\n        }\n        {\n          key: Q").replace("Sysops only shortcut", "Risky logins only");
    assert!(menus.contains("acs: RS50"), "{menus}");
    let g = gate_with_menus(DEFAULT_CONFIG, &menus, &[]);
    g.add_user("alice", ALICE_PW);
    let shown = |g: &Gate, ssh: Ssh, score: i64| {
        let run = g.ssh_script(&ssh, &[("Your choice: ", "q")]);
        assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
        let login = g.events_of(Some("alice"), "login_success").into_iter().next().expect("a login");
        assert_eq!(login["risk_score"], score, "{login:#}");
        run.stdout.contains("[X] Risky logins only")
    };
    assert!(shown(&g, Ssh::kbd("alice", ALICE_PW), 60), "the first login");
    assert!(!shown(&g, Ssh::kbd("alice", ALICE_PW), 10), "the known device and address");
    assert!(shown(&g, Ssh::kbd("alice", ALICE_PW).bind("127.0.5.6").options(&["KexAlgorithms=curve25519-sha256"]), 60), "another device from another network");
}

#[test]
fn cp437_terminal_gets_raw_art() {
    let g = Gate::start();
    g.add_user("alice", ALICE_PW);
    let session = |term: &str| {
        let mut ssh = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), term, 80, 24);
        ssh.expect("Your choice: ");
        ssh.send(b"q");
        let (code, screen) = ssh.finish();
        assert_eq!(code, Some(0), "TERM={term}: {}\n{}", String::from_utf8_lossy(&screen), g.daemon_log());
        screen
    };
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);

    // CP437 bytes as they are: ═ is 0xCD, █ 0xDB, ▄ 0xDC; not UTF-8.
    let raw = session("ansi-bbs");
    assert!(String::from_utf8(raw.clone()).is_err(), "raw CP437 is not UTF-8: {}", String::from_utf8_lossy(&raw));
    assert!(has(&raw, &[0xCD, 0xCD, 0xCD]), "{}", String::from_utf8_lossy(&raw));
    assert!(has(&raw, &[0xDC, 0xDC]), "{}", String::from_utf8_lossy(&raw));
    assert!(raw.contains(&0xDB), "{}", String::from_utf8_lossy(&raw));
    assert!(!has(&raw, "═".as_bytes()) && !has(&raw, "█".as_bytes()), "no UTF-8 box drawing for a CP437 terminal");
    assert!(has(&raw, b"Welcome, alice."), "{}", String::from_utf8_lossy(&raw));

    // The same art for a UTF-8 terminal.
    let utf8 = session("xterm");
    let screen = String::from_utf8(utf8.clone()).unwrap_or_else(|e| panic!("all UTF-8 for xterm: {e}: {}", String::from_utf8_lossy(&utf8)));
    assert!(screen.contains("═══"), "{screen}");
    assert!(screen.contains("▄▄"), "{screen}");
    assert!(screen.contains('█'), "{screen}");
    assert!(screen.contains("Welcome, alice."), "{screen}");
}

/// A CP437 terminal's input reaches a door as the terminal sent it (the
/// door runs with LANG=C and gets CP437 output passed through raw).
#[test]
fn cp437_input_reaches_a_door_unconverted() {
    let g = door_gate(1);
    let mut ssh = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "ansi-bbs", 80, 24);
    ssh.expect("Your choice: ");
    ssh.send(b"b");
    ssh.expect("bytes door ready");
    // CP437 0x82 is é.
    ssh.send(b"\x82\r");
    ssh.expect("bytes=");
    ssh.expect("\n");
    let screen = String::from_utf8_lossy(&ssh.screen).into_owned();
    assert!(screen.contains("bytes=82\r"), "the door got other bytes: {screen}");
}

/// A guarded menu reached by `next` from a module that does not wait for
/// the user (here `welcome`): going back to that module would lead to the
/// refusal again, endlessly (as it did before 57c719d); with no menu the
/// user chose from to go back to, the session ends after one refusal.
#[test]
fn guard_after_welcome_does_not_loop() {
    const MENUS: &str = r#"{
  menus: {
    login: {
      art: CONNECT
      next: hello
    }
    hello: {
      module: welcome
      next: sysop
    }
    sysop: {
      module: menu
      prompt: "Sysop choice: "
      config: {
        acs: "GM[sysops]"
      }
      options: [
        {
          key: Q
          text: Log off
          next: logoff
        }
      ]
    }
    logoff: {
      module: logoff
    }
  }
}
"#;
    let g = gate_with_menus(DEFAULT_CONFIG, MENUS, &[]);
    g.add_user("bob", BOB_PW);
    let mut ssh = g.ssh_pty(&Ssh::kbd("bob", BOB_PW), "xterm", 80, 24);
    ssh.expect("You do not have access to that.");
    ssh.settle(Duration::from_millis(1000));
    let screen = String::from_utf8_lossy(&ssh.screen).into_owned();
    let refusals = screen.matches("You do not have access to that.").count();
    let welcomes = screen.matches("Welcome, bob.").count();
    assert!(refusals == 1 && welcomes == 1, "{refusals} refusals and {welcomes} welcomes in 1 s: the flow loops");
    let (code, screen) = ssh.finish();
    assert!(code.is_some(), "the session ends: {}", text(&screen));
    assert!(!text(&screen).contains("Sysop choice: "), "{}", text(&screen));
}

/// From the account menu a user sees their sessions and ends another one:
/// that connection is closed at once and the end is recorded.
#[test]
fn account_menu_ends_another_session() {
    let g = Gate::start();
    g.add_user("alice", ALICE_PW);
    // The first session waits at the main menu.
    let mut first = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "xterm", 80, 24);
    first.expect("Your choice: ");
    let started = g.wait_events(Some("alice"), "session_started", |ev| !ev.is_empty());
    let first_id = started[0]["session_id"].as_i64().expect("session id");
    let end_it = format!("{first_id}\r");
    let run = g.ssh_script(
        &Ssh::kbd("alice", ALICE_PW),
        &[
            ("Your choice: ", "a"),
            ("[S] Your sessions", ""),
            ("Your choice: ", "s"),
            ("End which session", end_it.as_str()),
            ("has been ended.", ""),
            ("Your choice: ", "q"),
            ("[Q] Log off", ""),
            ("Your choice: ", "q"),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    assert!(run.stdout.contains(&format!("Session #{first_id} has been ended.")), "{run:#?}");
    // The first connection is gone, with the gate's message.
    let (code, screen) = first.finish();
    assert_ne!(code, Some(0), "{}", String::from_utf8_lossy(&screen));
    let revoked = g.wait_events(Some("alice"), "session_revoked", |ev| !ev.is_empty());
    assert_eq!(revoked[0]["session_id"].as_i64(), Some(first_id), "{}", revoked[0]);
    let ended = g.wait_events(Some("alice"), "session_ended", |ev| ev.iter().any(|e| e["session_id"].as_i64() == Some(first_id)));
    let e = ended.iter().find(|e| e["session_id"].as_i64() == Some(first_id)).expect("ended");
    assert_eq!(detail(e, "reason"), "revoked", "{e}");
}
