//! The flow after login and what reaches a terminal (issue 7). The real
//! daemon, the real OpenSSH client.

use crate::harness::{text, Gate, Ssh, ALICE_PW};

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
