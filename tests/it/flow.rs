//! The flow after login (issue 7): a forced password change whatever the
//! menus say, the current password before a change, backup codes only
//! after a confirmation, the two-factor box only when the code is asked,
//! doors that get a clean `TERM` and no inherited descriptor, and `--json`
//! output that cannot act on a terminal. The real daemon, the real OpenSSH
//! client.

use crate::harness::{detail, text, Gate, Ssh, ALICE_PW, DEFAULT_CONFIG};
use crate::mfa::{enroll_totp_spool, next_totp, spool_config};
use serde_json::Value;

const NEW_PW: &str = "Maple-Quartz-Violin-77";

/// An executable shell script in the gate's folder; returns its path.
fn script(g: &Gate, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = g.path(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// A prepared (not started) gate whose config names `menu.hjson`.
fn prepare_with_menus(base: &str, menus: &str) -> Gate {
    let g = Gate::prepare(&format!("{base}menus: menu.hjson\n"));
    std::fs::write(g.path("menu.hjson"), menus).unwrap();
    g
}

fn user_json(g: &Gate, name: &str) -> Value {
    serde_json::from_str(&g.cli_ok(&["user", "show", name, "--json"])).unwrap()
}

/// No `welcome` anywhere: the first menu offers a door and the account menu.
const NO_WELCOME_MENUS: &str = r#"{
  menus: {
    login: {
      module: menu
      prompt: "Your choice: "
      options: [
        {
          key: D
          text: The door
          next: door
        }
        {
          key: A
          text: Your account
          next: account
        }
        {
          key: Q
          text: Log off
          next: logoff
        }
      ]
    }
    door: {
      module: exec
      config: {
        program: "@DOOR@"
      }
      next: login
    }
    account: {
      module: account
      next: login
    }
    logoff: {
      module: logoff
    }
  }
}
"#;

/// A user who must change the password is made to, first, by a flow
/// without `welcome`; giving up logs off before any door opens.
#[test]
fn must_reset_is_enforced_without_welcome() {
    let mut g = prepare_with_menus(DEFAULT_CONFIG, NO_WELCOME_MENUS);
    let marker = g.path("door-ran");
    let door = script(&g, "door.sh", &format!("#!/bin/sh\necho \"door for $PORTCULLIS_USER\" >> '{}'\necho door-ran\n", marker.display()));
    std::fs::write(g.path("menu.hjson"), NO_WELCOME_MENUS.replace("@DOOR@", &door)).unwrap();
    g.launch();
    g.add_user("alice", ALICE_PW);
    let out = g.cli_stdin(&["user", "passwd", "alice", "--password-stdin", "--must-reset"], &format!("{ALICE_PW}-x\n"));
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let temp_pw = format!("{ALICE_PW}-x");
    assert_eq!(user_json(&g, "alice")["must_reset_password"], true);

    // Giving up (Esc) ends the session: no menu, no door.
    let run = g.ssh_script(&Ssh::kbd("alice", &temp_pw), &[("New password: ", "\x1b"), ("Logging you off", "")]);
    assert!(run.stdout.contains("Your password must be changed before you go on."), "{run:#?}\n{}", g.daemon_log());
    assert!(run.stdout.contains("The password was not changed. Logging you off."), "{run:#?}");
    assert!(!run.stdout.contains("Your choice: "), "no menu before the change: {run:#?}");
    let ended = g.wait_events(Some("alice"), "session_ended", |ev| !ev.is_empty());
    assert_eq!(detail(&ended[0], "reason"), "password change required", "{}", ended[0]);
    assert!(!marker.exists(), "no door for a user who must change the password");

    // Changing it opens the menus, and the door.
    let new_line = format!("{NEW_PW}\r");
    let run = g.ssh_script(
        &Ssh::kbd("alice", &temp_pw),
        &[("New password: ", new_line.as_str()), ("Repeat it: ", new_line.as_str()), ("Your password has been changed.", ""), ("Your choice: ", "d"), ("door-ran", ""), ("Your choice: ", "q")],
    );
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    let changed_at = run.stdout.find("Your password has been changed.").unwrap();
    let menu_at = run.stdout.find("Your choice: ").unwrap_or_else(|| panic!("menu: {run:#?}"));
    assert!(changed_at < menu_at, "the change comes first: {run:#?}");
    assert_eq!(run.stdout.matches("must be changed before you go on").count(), 1, "asked once, not again at the next menu: {run:#?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap_or_default(), "door for alice\n");
    assert_eq!(user_json(&g, "alice")["must_reset_password"], false);
    let ok = g.ssh(&Ssh::kbd("alice", NEW_PW));
    assert!(ok.authenticated_exec(), "the new password works: {ok:#?}");
}

/// The account menu asks for the current password before a change: a
/// wrong one changes nothing and is a failure event; Esc and an empty
/// entry say what they did; three wrong ones end the session.
#[test]
fn account_menu_asks_for_the_current_password() {
    let g = Gate::start();
    g.add_user("alice", ALICE_PW);
    let run = g.ssh_script(
        &Ssh::kbd("alice", ALICE_PW),
        &[
            ("Your choice: ", "a"),
            ("[C] Change your password", ""),
            ("Your choice: ", "c"),
            ("Current password: ", "Wrong-Guess-Password-1\r"),
            ("That is not your current password: your password is unchanged.", ""),
            ("Your choice: ", "c"),
            ("Current password: ", "\x1b"),
            ("Cancelled: your password is unchanged.", ""),
            ("Your choice: ", "c"),
            ("Current password: ", "\r"),
            ("Nothing was entered: your password is unchanged.", ""),
            ("Your choice: ", "\r"),
            ("Press one of the letters in brackets", ""),
            ("Your choice: ", "q"),
            ("[Q] Log off", ""),
            ("Your choice: ", "q"),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    assert!(!run.stdout.contains("New password: "), "no new password without the current one: {run:#?}");
    assert!(!run.stdout.contains("Wrong-Guess"), "hidden input is not echoed: {run:#?}");

    let failed = g.wait_events(Some("alice"), "login_failed", |ev| !ev.is_empty());
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(detail(&failed[0], "reason"), "wrong_current_password", "{}", failed[0]);
    assert_eq!(detail(&failed[0], "stage"), "password_change", "{}", failed[0]);
    assert_eq!(failed[0]["ip"], "127.0.0.1", "{}", failed[0]);
    assert!(failed[0]["session_id"].as_i64().is_some(), "{}", failed[0]);
    assert!(!failed[0].to_string().contains("Wrong-Guess"), "no secret in the event: {}", failed[0]);
    assert!(g.events_of(Some("alice"), "password_changed").is_empty());
    let ok = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(ok.authenticated_exec(), "the password is unchanged: {ok:#?}");

    // Three wrong ones in one session: logged off.
    let run = g.ssh_script(
        &Ssh::kbd("alice", ALICE_PW),
        &[
            ("Your choice: ", "a"),
            ("Your choice: ", "c"),
            ("Current password: ", "Wrong-Guess-Password-1\r"),
            ("Your choice: ", "c"),
            ("Current password: ", "Wrong-Guess-Password-2\r"),
            ("Your choice: ", "c"),
            ("Current password: ", "Wrong-Guess-Password-3\r"),
            ("logging you off", ""),
        ],
    );
    assert!(run.stdout.contains("Too many wrong tries: logging you off."), "{run:#?}\n{}", g.daemon_log());
    let failed = g.wait_events(Some("alice"), "login_failed", |ev| ev.len() >= 4);
    assert_eq!(failed.iter().filter(|e| detail(e, "reason") == "wrong_current_password").count(), 4, "{failed:#?}");
    let ended = g.wait_events(Some("alice"), "session_ended", |ev| ev.iter().any(|e| detail(e, "reason") == "current password given wrong too often"));
    assert!(!ended.is_empty());
    assert!(g.events_of(Some("alice"), "password_changed").is_empty());
}

/// The "Two-factor check" box (the OTP art) is drawn when the code is
/// asked in the terminal, not when it was given during SSH authentication.
#[test]
fn two_factor_box_only_when_the_code_is_asked() {
    let g = Gate::start_with(&spool_config(""));
    g.add_user("alice", ALICE_PW);
    let e = enroll_totp_spool(&g, "alice");

    // A password-method client: the box, then the prompt (Esc gives up).
    let run = g.ssh_script(&Ssh::kbd("alice", ALICE_PW).method("password"), &[("Verification code: ", "\x1b"), ("The one-time code was not given", "")]);
    let box_at = run.stdout.find("Two-factor check").unwrap_or_else(|| panic!("the box for a password client: {run:#?}\n{}", g.daemon_log()));
    let prompt_at = run.stdout.find("Verification code: ").unwrap();
    assert!(box_at < prompt_at, "{run:#?}");

    // Keyboard-interactive with the code during SSH authentication: no box.
    let code = next_totp(&e.secret);
    let run = g.ssh_script(&Ssh::kbd("alice", ALICE_PW).code(&code), &[("Your choice: ", "q")]);
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    assert_eq!(run.prompts.len(), 2, "password and code over SSH: {run:#?}");
    assert!(run.stdout.contains("Welcome, alice."), "{run:#?}");
    assert!(!run.stdout.contains("Two-factor check"), "no box when the code was given during SSH authentication: {run:#?}");
    assert!(!run.stdout.contains("Verification code: "), "{run:#?}");
}

/// `[B]` asks before it replaces the backup codes, and says what an empty
/// entry, Esc or another answer did.
#[test]
fn backup_codes_are_replaced_only_after_a_confirmation() {
    let g = Gate::start_with(&spool_config(""));
    g.add_user("alice", ALICE_PW);
    let e = enroll_totp_spool(&g, "alice");
    let code = next_totp(&e.secret);
    let run = g.ssh_script(
        &Ssh::kbd("alice", ALICE_PW).code(&code),
        &[
            ("Your choice: ", "a"),
            ("[B] New backup codes", ""),
            ("Your choice: ", "b"),
            ("Type YES to make new ones: ", "\r"),
            ("Nothing was entered: your backup codes are unchanged.", ""),
            ("Your choice: ", "b"),
            ("Type YES to make new ones: ", "\x1b"),
            ("Cancelled: your backup codes are unchanged.", ""),
            ("Your choice: ", "b"),
            ("Type YES to make new ones: ", "no\r"),
            ("Not confirmed: your backup codes are unchanged.", ""),
            ("Your choice: ", "b"),
            ("Type YES to make new ones: ", "YES\r"),
            ("Your new backup codes", ""),
            ("Your choice: ", "q"),
            ("[Q] Log off", ""),
            ("Your choice: ", "q"),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    assert_eq!(run.stdout.matches("Your new backup codes").count(), 1, "replaced once, after YES: {run:#?}");

    // The old backup codes are gone (replaced once, after the YES).
    let old = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&e.backup[0]));
    assert!(!old.authenticated_exec(), "an old backup code no longer works: {old:#?}");
    assert_eq!(g.mfa_status("alice")["backup_codes_left"], 10);
}

const TERM_DOOR_MENUS: &str = r#"{
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

/// A door gets `TERM=vt100` for a terminal type that is not a plain name,
/// and none of the descriptors the daemon inherited from its parent.
#[test]
fn door_gets_a_clean_term_and_no_inherited_descriptor() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut g = prepare_with_menus(DEFAULT_CONFIG, TERM_DOOR_MENUS);
    let door = script(&g, "door.sh", "#!/bin/sh\necho \"term=[$TERM]\"\nfor f in /proc/$$/fd/*; do echo \"fd ${f##*/} -> $(readlink \"$f\")\"; done\necho listing-done\n");
    std::fs::write(g.path("menu.hjson"), TERM_DOOR_MENUS.replace("@DOOR@", &door)).unwrap();
    // The daemon's parent leaves it descriptor 9 open on a marker file.
    let marker = g.path("inherited-by-the-daemon");
    let file = std::fs::File::create(&marker).unwrap();
    let raw = file.as_raw_fd();
    g.launch_adjusted(|cmd| {
        // SAFETY: dup2 is async-signal-safe; the copy has no close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 9) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    drop(file);
    let marker_name = marker.display().to_string();
    let daemon_fd = std::fs::read_link(format!("/proc/{}/fd/9", g.pid())).map(|p| p.display().to_string()).unwrap_or_default();
    assert_eq!(daemon_fd, marker_name, "the daemon holds the inherited descriptor");
    g.add_user("alice", ALICE_PW);

    let mut ssh = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "xterm;rm -rf /tmp/x", 80, 24);
    ssh.expect("listing-done");
    let (_, screen) = ssh.finish();
    let screen = text(&screen);
    assert!(screen.contains("term=[vt100]"), "{screen}\n{}", g.daemon_log());
    assert!(!screen.contains("rm -rf"), "{screen}");
    assert!(screen.contains("fd 0 -> /dev/pts/"), "the listing ran: {screen}");
    assert!(!screen.contains(&marker_name), "the door inherited the daemon's descriptor: {screen}");
    let extra: Vec<&str> = screen.lines().filter(|l| l.starts_with("fd ") && !["fd 0 ", "fd 1 ", "fd 2 "].iter().any(|p| l.starts_with(p))).collect();
    // Beyond 0-2 only what the shell opens itself: its script, the
    // listing's directory or its command substitution's pipe.
    assert!(extra.iter().all(|l| l.contains("door.sh") || l.contains("/proc/") || l.contains("pipe:")), "only 0-2 are open in the door: {extra:?}");

    // A plain name passes as it is.
    let mut ssh = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "xterm-256color", 80, 24);
    ssh.expect("listing-done");
    let (_, screen) = ssh.finish();
    assert!(text(&screen).contains("term=[xterm-256color]"), "{}", text(&screen));
}

/// Attempted usernames with C1 controls, DEL and a bidi override come out
/// of `--json` as `\uXXXX` escapes, and parse back to what was typed.
#[test]
fn json_output_escapes_c1_del_and_bidi() {
    let g = Gate::start();
    let evil = "ev\u{9b}2J\u{202e}il\u{7f}x";
    let run = g.ssh(&Ssh::kbd(evil, ALICE_PW));
    assert_eq!(run.code, Some(255), "{run:#?}");
    let failed = g.wait_events(None, "login_failed", |ev| !ev.is_empty());
    assert_eq!(failed[0]["username"], evil, "stored as typed, and the JSON parses back to it");
    for args in [&["security", "events", "--json"][..], &["security", "events", "--json", "--type", "login_failed"][..]] {
        let out = g.cli(args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let raw = String::from_utf8(out.stdout).expect("UTF-8");
        for c in ['\u{9b}', '\u{202e}', '\u{7f}'] {
            assert!(!raw.contains(c), "raw {c:?} in {args:?}: {raw:?}");
        }
        assert!(raw.contains(r"\u009b") && raw.contains(r"\u202e") && raw.contains(r"\u007f"), "{raw}");
    }
    // The table escapes them too.
    let out = g.cli(&["security", "events"]);
    let table = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(!table.contains('\u{9b}') && !table.contains('\u{202e}') && !table.contains('\u{7f}'), "{table:?}");
    assert!(table.contains("ev\\x9b2J\\u{202e}il\\x7fx"), "{table}");
}
