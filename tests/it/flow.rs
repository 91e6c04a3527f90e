//! The flow after login and what reaches a terminal (issue 7). The real
//! daemon, the real OpenSSH client.

use crate::harness::{text, Gate, Ssh, ALICE_PW, DEFAULT_CONFIG};

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
