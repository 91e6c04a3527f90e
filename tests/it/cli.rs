//! The sysop CLI end to end: the first command before the first `serve`,
//! account edits and deletion (with a live SSH session cut), group checks,
//! usage errors, who the actor is, two-factor disabling and the mails that
//! tell the user, and `config check` with cross-field problems.

use crate::harness::{detail, poll, read_mail, text, Gate, Ssh, ALICE_PW, DEFAULT_CONFIG};
use crate::mfa::{enroll_totp_spool, spool_config};
use serde_json::Value;
use std::time::Duration;

/// The test config with a `sysops` group defined, file spool for mail.
fn config_with_sysops() -> String {
    spool_config("groups: {\n  sysops: {\n    require_level: 1\n  }\n}\n")
}

fn add_user_with(g: &Gate, args: &[&str]) -> std::process::Output {
    let mut all = vec!["user", "add"];
    all.extend_from_slice(args);
    all.push("--password-stdin");
    g.cli_stdin(&all, &format!("{ALICE_PW}\n"))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// Waits for a spooled mail to `to` whose text holds `marker`; returns the
/// decoded text and the raw file.
fn spooled(g: &Gate, to: &str, marker: &str, nth: usize) -> (String, String) {
    poll(Duration::from_secs(15), &format!("mail {nth} to {to} with {marker:?}"), || {
        let found: Vec<(String, String)> = g
            .spooled_mail()
            .iter()
            .filter_map(|p| {
                let m = read_mail(p);
                (m.to.contains(to) && m.text.contains(marker)).then(|| (m.text, std::fs::read_to_string(p).unwrap_or_default()))
            })
            .collect();
        found.get(nth).cloned()
    })
}

#[test]
fn user_add_works_before_the_first_serve() {
    let mut g = Gate::fresh(&config_with_sysops());
    assert!(!g.db_path().exists());
    let out = add_user_with(&g, &["alice", "--email", "alice@example.org", "--group", "sysops"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("created user alice"), "{}", text(&out.stdout));
    assert!(g.db_path().exists());
    let status = g.cli_ok(&["migrate", "status", "--json"]);
    let status: Vec<Value> = serde_json::from_str(&status).unwrap();
    assert!(status.iter().all(|m| !m["applied_at"].is_null()), "{status:?}");
    g.launch();
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(run.authenticated_exec(), "{run:?}\n{}", g.daemon_log());
}

#[test]
fn user_edit_sets_the_email_so_the_account_can_enroll() {
    let g = Gate::start_with(&config_with_sysops());
    let out = add_user_with(&g, &["alice"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = g.cli(&["security", "mfa", "enable", "--user=alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("user alice has no email address"), "{}", text(&out.stderr));
    let out = g.cli_ok(&["user", "edit", "alice", "--email", "alice@example.org"]);
    assert!(out.contains("email address of alice set to alice@example.org"), "{out}");
    let shown: Value = serde_json::from_str(&g.cli_ok(&["user", "show", "alice", "--json"])).unwrap();
    assert_eq!(shown["email"], "alice@example.org");
    let updated = g.events_of(Some("alice"), "user_updated");
    assert_eq!(detail(&updated[0], "field"), "email", "{}", updated[0]);
    let out = g.cli(&["user", "edit", "alice", "--email", "not an address"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error: invalid email address \"not an address\""), "{}", text(&out.stderr));
    // An email change voids links mailed to the old address.
    g.cli_ok(&["security", "mfa", "enable", "--user=alice"]);
    let out = g.cli_ok(&["user", "edit", "alice", "--email", "alice@example.net"]);
    assert!(out.contains("1 link mailed to the old address no longer works"), "{out}");
}

#[test]
fn user_delete_cuts_the_session_and_keeps_the_events() {
    let g = Gate::start_with(&config_with_sysops());
    let out = add_user_with(&g, &["alice", "--email", "alice@example.org"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_key, public) = g.keygen("alice_key");
    g.cli_ok(&["user", "key", "add", "alice", &public]);
    let enrolled = enroll_totp_spool(&g, "alice");
    let before: Value = serde_json::from_str(&g.cli_ok(&["user", "show", "alice", "--json"])).unwrap();
    let id = before["id"].as_i64().unwrap();
    let db = rusqlite::Connection::open(g.db_path()).unwrap();
    let count = |table: &str| -> i64 { db.query_row(&format!("SELECT COUNT(*) FROM {table} WHERE user_id = ?1"), [id], |r| r.get(0)).unwrap() };
    for table in ["ssh_keys", "otp_secrets", "backup_codes", "password_history", "tokens"] {
        assert!(count(table) > 0, "{table} holds alice's rows before");
    }

    // A live session, then the deletion from the CLI (another process).
    let code = crate::mfa::next_totp(&enrolled.secret);
    let mut ssh = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW).code(&code), "xterm", 80, 24);
    ssh.expect("Your choice: ");
    let out = g.cli_ok(&["user", "delete", "alice"]);
    assert!(out.contains(&format!("deleted user alice (id {id}): 1 open session ended, 1 SSH key removed")), "{out}");
    let (status, screen) = ssh.finish();
    assert!(status.is_some(), "the session was cut by the gate, not killed at the deadline:\n{}", text(&screen));

    // Gone: the account, its password, keys, code secret, backup codes, links.
    for table in ["ssh_keys", "otp_secrets", "backup_codes", "password_history", "tokens", "sessions", "user_groups"] {
        assert_eq!(count(table), 0, "{table} still holds alice's rows");
    }
    let out = g.cli(&["user", "show", "alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no such user: alice"), "{}", text(&out.stderr));
    let list: Vec<Value> = serde_json::from_str(&g.cli_ok(&["user", "list", "--json"])).unwrap();
    assert!(list.is_empty(), "{list:?}");
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(!run.authenticated_exec(), "{run:?}");

    // Kept: its events, under its former id, with the deletion marked.
    let events = g.events_json(&["alice", "1000"]);
    assert!(events.iter().all(|e| e["user_id"].as_i64() == Some(id)), "{events:?}");
    let deleted = events.iter().find(|e| s(e, "event_type") == "user_updated" && detail(e, "deleted") == true).unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(s(deleted, "severity"), "high");
    assert_eq!(detail(deleted, "keys_removed"), 1);
    assert!(events.iter().any(|e| s(e, "event_type") == "mfa_enabled"), "older events kept: {events:?}");
    assert!(events.iter().any(|e| s(e, "event_type") == "session_revoked"), "{events:?}");
    let ended = g.wait_events(Some("alice"), "session_ended", |ev| !ev.is_empty());
    assert_eq!(detail(&ended[0], "reason"), "revoked", "{}", ended[0]);

    // A new account never takes the deleted one's id (nor its events).
    let out = add_user_with(&g, &["bob", "--email", "bob@example.org"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bob: Value = serde_json::from_str(&g.cli_ok(&["user", "show", "bob", "--json"])).unwrap();
    assert!(bob["id"].as_i64().unwrap() > id, "{bob}");
}

#[test]
fn groups_the_config_does_not_define_are_refused() {
    let g = Gate::start_with(&config_with_sysops());
    let out = add_user_with(&g, &["alice", "--email", "alice@example.org"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = g.cli(&["user", "group", "add", "alice", "wizards"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "error: unknown group \"wizards\": the configuration defines sysops; give --new-group to use it anyway"
    );
    let shown: Value = serde_json::from_str(&g.cli_ok(&["user", "show", "alice", "--json"])).unwrap();
    assert_eq!(shown["groups"], serde_json::json!([]));
    let out = add_user_with(&g, &["bob", "--email", "bob@example.org", "--group", "wizards"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown group \"wizards\""), "{}", text(&out.stderr));
    assert!(!g.cli_ok(&["user", "list"]).contains("bob"));
    // Known groups pass; --new-group insists.
    assert!(g.cli_ok(&["user", "group", "add", "alice", "sysops"]).contains("alice added to group sysops"));
    assert!(g.cli_ok(&["user", "group", "add", "alice", "wizards", "--new-group"]).contains("alice added to group wizards"));
    let shown: Value = serde_json::from_str(&g.cli_ok(&["user", "show", "alice", "--json"])).unwrap();
    assert_eq!(shown["groups"], serde_json::json!(["sysops", "wizards"]));
}

#[test]
fn bad_flag_values_are_usage_errors() {
    let g = Gate::start();
    for (args, want) in [
        (&["security", "events", "--type", "bogus"][..], "error: --type: unknown event type \"bogus\" (one of: "),
        (&["security", "events", "--since", "yesterday"][..], "error: --since: "),
        (&["security", "events", "--severity", "dire"][..], "error: --severity: unknown severity \"dire\""),
        (&["security", "events", "--bogus-flag"][..], "error: unexpected argument '--bogus-flag'"),
    ] {
        let out = g.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).starts_with(want), "{args:?}: {}", text(&out.stderr));
    }
    g.add_user("alice", ALICE_PW);
    let out = g.cli(&["user", "lock", "alice", "--for", "a while"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // Errors that are not about the command line stay 1.
    let out = g.cli(&["user", "show", "nobody"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn the_actor_is_the_uid_not_the_user_variable() {
    let g = Gate::start();
    let me = std::process::Command::new("id").arg("-un").output().expect("id -un");
    let me = text(&me.stdout).trim().to_owned();
    assert!(!me.is_empty());
    let mut cmd = g.cli_command(&["user", "add", "alice", "--email", "alice@example.org", "--password-stdin"]);
    cmd.env_remove("USER").env_remove("LOGNAME");
    let out = crate::harness::run(cmd, Some(&format!("{ALICE_PW}\n")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut cmd = g.cli_command(&["user", "lock", "alice"]);
    cmd.env("USER", "mallory");
    let out = crate::harness::run(cmd, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created = g.events_of(Some("alice"), "user_created");
    assert_eq!(detail(&created[0], "actor"), &format!("cli:{me}"), "{}", created[0]);
    let locked = g.events_of(Some("alice"), "account_locked");
    assert_eq!(detail(&locked[0], "actor"), &format!("cli:{me}"), "{}", locked[0]);
}

#[test]
fn mfa_disable_refuses_when_nothing_is_enabled_and_mails_when_it_disables() {
    let g = Gate::start_with(&config_with_sysops());
    let out = add_user_with(&g, &["alice", "--email", "alice@example.org"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = g.cli(&["security", "mfa", "disable", "--user=alice"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_eq!(text(&out.stderr).trim_end(), "error: two-factor authentication is not enabled for alice: nothing to disable");
    assert!(g.events_of(Some("alice"), "mfa_disabled").is_empty());

    enroll_totp_spool(&g, "alice");
    let out = g.cli_ok(&["security", "mfa", "disable", "--user=alice"]);
    assert!(out.contains("two-factor authentication disabled for alice; the user was mailed about it"), "{out}");
    let (mail, _) = spooled(&g, "alice@example.org", "two-factor authentication was turned off", 0);
    assert!(mail.contains("Hello alice,") && mail.contains("(by the sysop)"), "{mail}");
    let disabled = g.events_of(Some("alice"), "mfa_disabled");
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    // Disabling again: nothing to disable, no second event.
    let out = g.cli(&["security", "mfa", "disable", "--user=alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(g.events_of(Some("alice"), "mfa_disabled").len(), 1);
}

#[test]
fn a_sysop_password_reset_mails_the_user() {
    const TEMP_PW: &str = "Orchid-Glacier-Pylon-31";
    let g = Gate::start_with(&config_with_sysops());
    let out = add_user_with(&g, &["alice", "--email", "alice@example.org"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = g.cli_stdin(&["user", "passwd", "alice", "--password-stdin", "--must-reset"], &format!("{TEMP_PW}\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (mail, raw) = spooled(&g, "alice@example.org", "the sysop set a new password", 0);
    assert!(mail.contains("choose your own password at the next login"), "{mail}");
    assert!(!mail.contains(TEMP_PW) && !raw.contains(TEMP_PW), "the password is never mailed");
}

#[test]
fn a_second_enrollment_link_says_the_first_is_void() {
    let g = Gate::start_with(&config_with_sysops());
    let out = add_user_with(&g, &["alice", "--email", "alice@example.org"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = g.cli_ok(&["security", "mfa", "enable", "--user=alice"]);
    assert!(!first.contains("no longer works"), "{first}");
    let (text1, _) = spooled(&g, "alice@example.org", "/otp/enroll/", 0);
    assert!(!text1.contains("no longer works"), "{text1}");
    let second = g.cli_ok(&["security", "mfa", "enable", "--user=alice"]);
    assert!(second.contains("the enrollment link sent earlier no longer works: only this new one does"), "{second}");
    let (text2, raw) = spooled(&g, "alice@example.org", "/otp/enroll/", 1);
    assert!(text2.contains("It replaces the enrollment link mailed earlier: that one no longer works."), "{text2}");
    // The link is on one line of the .eml as stored (7bit, no soft breaks).
    let line = raw.lines().find(|l| l.contains("/otp/enroll/")).unwrap_or_else(|| panic!("{raw}"));
    let link = line.trim();
    assert!(link.starts_with("https://localhost:8443/otp/enroll/"), "{raw}");
    let token = link.rsplit('/').next().unwrap();
    assert_eq!(token.len(), 43, "{raw}");
    assert!(raw.contains("Content-Transfer-Encoding: 7bit"), "{raw}");
    assert!(text2.contains(link), "the decoded text holds the same link");
    let sent = g.events_of(Some("alice"), "mfa_enrollment_sent");
    assert_eq!(detail(&sent[0], "earlier_link_voided"), true, "{}", sent[0]);
    assert_eq!(detail(&sent[1], "earlier_link_voided"), false, "{}", sent[1]);
}

#[test]
fn config_check_lists_cross_field_problems_with_positions() {
    let config = format!("{DEFAULT_CONFIG}email: {{\n  smtp: \"smtp://mail.example.org:25\"\n}}\nevents: {{\n  batch: 0\n}}\n");
    let g = Gate::fresh(&config);
    let out = g.cli(&["config", "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    let file = g.config.display().to_string();
    let lines: Vec<&str> = DEFAULT_CONFIG.lines().collect();
    let smtp_line = lines.len() + 2;
    assert!(
        err.contains(&format!("{file}:{smtp_line}:3: email.smtp: smtp url \"smtp://mail.example.org:25\" would send mail unencrypted to mail.example.org")),
        "{err}"
    );
    assert!(err.contains(&format!("{file}:{}:3: events.batch: must be at least 1", smtp_line + 3)), "{err}");
    assert!(err.contains("2 problems found"), "{err}");
}

/// `config show` prints the effective configuration: the file's values,
/// the defaults of what it leaves out, durations as written, paths made
/// absolute and no secret; its output is a config `config check` accepts
/// and that shows the same again.
#[test]
fn config_show_prints_the_merged_values_and_no_secret() {
    let plain = "data_dir: state\nssh: {\n  listen: \"127.0.0.1:2299\"\n  login_grace_time: 90s\n}\nexport: {\n  file: events.jsonl\n}\n";
    let secrets = "web: {\n  metrics_token: \"s3cr3t-token-value\"\n}\nemail: {\n  smtp: \"smtps://user:pa55word@mail.example.org:465\"\n}\nwebhooks: {\n  ops: {\n    url: \"https://hooks.example.org/T000/B000/XXXXsecretpath\"\n    secret: \"0123456789abcdef-hook-secret\"\n  }\n}\n";
    let g = Gate::fresh(&format!("{plain}{secrets}"));
    let dir = g.config.parent().unwrap().display().to_string();
    let out = g.cli_ok(&["config", "show"]);
    for want in [
        "listen: \"127.0.0.1:2299\"".to_string(),
        "login_grace_time: \"90s\"".into(),
        "max_auth_tries: 6".into(),
        "idle_timeout: \"1h\"".into(),
        format!("data_dir: \"{dir}/state\""),
        format!("file: \"{dir}/events.jsonl\""),
        "metrics_token: \"<redacted>\"".into(),
        "smtp: \"smtps://user:<redacted>@mail.example.org:465\"".into(),
        "url: \"https://hooks.example.org/<redacted>\"".into(),
        "secret: \"<redacted>\"".into(),
    ] {
        assert!(out.contains(&want), "no {want} in:\n{out}");
    }
    for secret in ["s3cr3t-token-value", "pa55word", "XXXXsecretpath", "hook-secret"] {
        assert!(!out.contains(secret), "{secret} shown:\n{out}");
    }
    let json: Value = serde_json::from_str(&g.cli_ok(&["config", "show", "--json"])).expect("JSON");
    assert_eq!(json["ssh"]["listen"], "127.0.0.1:2299");
    assert_eq!(json["ssh"]["login_grace_time"], "90s");
    assert_eq!(json["passwords"]["iterations"], 600_000);
    assert_eq!(json["web"]["metrics_token"], "<redacted>");
    assert!(!json.to_string().contains("pa55word"));

    // Without secrets the output is a config of its own, showing the same.
    let g = Gate::fresh(plain);
    let first = g.cli_ok(&["config", "show"]);
    let copy = Gate::fresh(&first);
    let check = copy.cli(&["config", "check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let again = copy.cli_ok(&["config", "show"]);
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&again), body(&first));
}

/// `config init DIR` writes the documented defaults (config, menus,
/// playbooks, art, mail templates) that `config check` accepts, refuses a
/// second time without touching a file, and its templates folder, edited,
/// changes the mail a real gate sends.
#[test]
fn config_init_writes_files_that_check_and_templates_that_mail() {
    let g0 = Gate::fresh(DEFAULT_CONFIG);
    let dir = g0.path("etc");
    let d = dir.to_str().unwrap();
    let out = g0.cli(&["config", "init", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("wrote 40 files into {d}")), "{}", text(&out.stdout));
    for f in ["portcullis.hjson", "menu.hjson", "playbooks.hjson", "art/WELCOME.asc", "templates/otp_enroll.txt", "templates/otp_enroll.html", "templates/otp_enroll.subject"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let mut c = Gate::fresh(DEFAULT_CONFIG);
    c.cli_config = dir.join("portcullis.hjson");
    let check = c.cli(&["config", "check"]);
    assert!(check.status.success(), "{}{}", text(&check.stdout), text(&check.stderr));
    assert!(text(&check.stdout).contains(&format!("config ok: {d}/portcullis.hjson")));
    let shown = c.cli_ok(&["config", "show"]);
    assert!(shown.contains(&format!("templates_dir: \"{d}/templates\"")) && shown.contains(&format!("data_dir: \"{d}/data\"")), "{shown}");

    std::fs::write(dir.join("templates/otp_enroll.subject"), "Codes for {{username}}\n").unwrap();
    std::fs::write(dir.join("templates/otp_enroll.txt"), "Hello {{username}}, open {{link}} within {{expires}}.\n").unwrap();
    let again = g0.cli(&["config", "init", d]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("refusing to overwrite 40 existing files (nothing was written)"), "{}", text(&again.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("templates/otp_enroll.subject")).unwrap(), "Codes for {{username}}\n");

    let g = Gate::start_with(&crate::mfa::spool_config(&format!("templates_dir: \"{d}/templates\"\n")));
    g.add_user("alice", ALICE_PW);
    g.cli_ok(&["security", "mfa", "enable", "--user=alice"]);
    let mail = poll(Duration::from_secs(15), "the enrollment mail", || g.spooled_mail().first().map(|p| read_mail(p)));
    assert_eq!(mail.subject, "Codes for alice");
    assert!(mail.text.starts_with("Hello alice, open https://") && mail.text.contains("within 30 minutes."), "{}", mail.text);
}

/// A data folder under /etc (the shipped `../data` copied to
/// /etc/portcullis/ would make /etc/data) is a warning naming the key.
#[test]
fn config_check_warns_of_a_data_folder_under_etc() {
    let g = Gate::fresh(&DEFAULT_CONFIG.replacen("data_dir: data\n", "data_dir: ../../etc/data\n", 1));
    let out = g.cli(&["config", "check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("warning: {}:1:1: data_dir: the data folder resolves to /etc/data, under /etc, which is for configuration: set an absolute data_dir such as /var/lib/portcullis", g.config.display())), "{err}");
}

/// Tables show times in the configured zone as `2026-12-01 19:14`;
/// `--utc` shows UTC; `--json` keeps RFC 3339 UTC.
#[test]
fn tables_show_times_in_the_configured_zone() {
    let g = Gate::fresh(&format!("timezone: Asia/Kolkata\n{DEFAULT_CONFIG}"));
    let out = g.cli(&["migrate", "run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    g.add_user("alice", ALICE_PW);
    let events: Value = serde_json::from_str(&g.cli_ok(&["security", "events", "alice", "--json"])).unwrap();
    let created = events[0]["created_at"].as_str().expect("created_at").to_owned();
    assert!(created.ends_with('Z') && created.contains('T'), "JSON keeps RFC 3339 UTC: {created}");
    let ts: jiff::Timestamp = created.parse().unwrap();
    let local = ts.to_zoned_datetime(jiff::tz::TimeZone::get("Asia/Kolkata").unwrap()).strftime("%Y-%m-%d %H:%M").to_string();
    let utc = ts.to_zoned_datetime(jiff::tz::TimeZone::UTC).strftime("%Y-%m-%d %H:%M").to_string();
    assert_ne!(local, utc);
    let table = g.cli_ok(&["security", "events", "alice"]);
    assert!(table.contains(&local) && !table.contains(&created), "{table}");
    let table = g.cli_ok(&["--utc", "security", "events", "alice"]);
    assert!(table.contains(&utc), "{table}");
    let shown = g.cli_ok(&["config", "show"]);
    assert!(shown.contains("timezone: \"Asia/Kolkata\""), "{shown}");
}
