//! Devices over real SSH (SPEC §9, issue 9 points 1 and 3): the real
//! OpenSSH client under different configurations is told apart by the
//! HASSH of its key-exchange offer (checked against an independent reading
//! of the same client's KEXINIT), the owner is mailed about a new device
//! (a real SMTP server), and devices are trusted, untrusted and removed
//! from the CLI and from the account menu; a trusted device with its key
//! opens a rule's lock.

use crate::harness::{detail, free_port, poll, read_mail, text, Gate, Smtp, Ssh, ALICE_PW, BOB_PW, DEFAULT_CONFIG};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `security devices list USER --json`.
fn devices(g: &Gate, user: &str) -> Vec<Value> {
    let out = g.cli_ok(&["security", "devices", "list", user, "--json"]);
    match serde_json::from_str(&out) {
        Ok(Value::Array(v)) => v,
        other => panic!("devices list {user}: not a JSON array: {other:?}\n{out}"),
    }
}

fn id_of(d: &Value) -> i64 {
    d["id"].as_i64().unwrap_or_else(|| panic!("no id in {d}"))
}

/// Runs a CLI command that must fail with `code`; returns its stderr.
fn cli_err(g: &Gate, args: &[&str], code: i32) -> String {
    let out = g.cli(args);
    assert_eq!(out.status.code(), Some(code), "portcullis {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stderr)
}

/// The HASSH of the local OpenSSH client run with `options`, read
/// without the gate: a Python listener takes the client's first KEXINIT
/// and hashes its four client-to-server lists with `hashlib` (Salesforce's
/// definition), so the gate's value is checked against another reading
/// of the same bytes.
fn independent_hassh(options: &[&str]) -> String {
    const SCRIPT: &str = r#"
import hashlib, socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
s.settimeout(20)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.settimeout(20)
c.sendall(b"SSH-2.0-listener\r\n")
data = b""
while True:
    chunk = c.recv(65536)
    if not chunk:
        break
    data += chunk
    i = data.find(b"\n")
    if i >= 0 and len(data) >= i + 5 and len(data) >= i + 5 + int.from_bytes(data[i + 1:i + 5], "big"):
        break
i = data.find(b"\n")
packet = data[i + 1:]
length, padding = int.from_bytes(packet[:4], "big"), packet[4]
payload = packet[5:4 + length - padding]
assert payload[0] == 20, "not a KEXINIT"
at, lists = 17, []
for _ in range(10):
    n = int.from_bytes(payload[at:at + 4], "big")
    lists.append(payload[at + 4:at + 4 + n])
    at += 4 + n
print(hashlib.md5(b";".join([lists[0], lists[2], lists[4], lists[6]])).hexdigest(), flush=True)
"#;
    let mut py = Command::new("python3");
    py.arg("-c").arg(SCRIPT).current_dir(std::env::temp_dir()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = py.spawn().expect("python3");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(20)).expect("the listener's port");
    let mut ssh = Command::new("ssh");
    ssh.args(["-p", &port, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-F", "/dev/null"]);
    for o in options {
        ssh.arg("-o").arg(o);
    }
    ssh.arg("127.0.0.1").arg("true");
    // It fails once the listener has what it wants and hangs up.
    let _ = crate::harness::run(ssh, None);
    let hassh = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| {
        let _ = child.kill();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err);
        panic!("no hassh from the listener: {err}")
    });
    let _ = crate::harness::wait_deadline(&mut child, Duration::from_secs(10));
    assert_eq!(hassh.len(), 32, "{hassh}");
    hassh
}

const CIPHERS: &[&str] = &["Ciphers=aes256-gcm@openssh.com"];
const KEX: &[&str] = &["KexAlgorithms=curve25519-sha256"];

/// Two client configurations that change the KEXINIT offer are two
/// devices with two HASSH values (each the value an independent reading
/// gives); the same configuration again is the same device; each new
/// device of the account (not its first) mails the owner a notice, and
/// the notice says what, when, from where and how to report it.
#[test]
fn each_client_configuration_is_a_device_and_a_new_one_is_mailed() {
    let smtp = Smtp::start(free_port());
    let config = format!(
        "{DEFAULT_CONFIG}email: {{\n  smtp: \"smtp://127.0.0.1:{}\"\n  poll: 200ms\n  retry_base: 1s\n  retry_max: 2s\n}}\ngroups: {{\n  sysops: {{\n    require_level: 1\n  }}\n}}\n",
        smtp.port
    );
    let g = Gate::start_with(&config);
    g.add_user("alice", ALICE_PW);
    crate::mfa::add_user_in(&g, "carol", BOB_PW, "sysops");

    // The default configuration, twice: one device.
    for _ in 0..2 {
        let run = g.ssh(&Ssh::kbd("alice", ALICE_PW));
        assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    }
    let list = devices(&g, "alice");
    assert_eq!(list.len(), 1, "{list:#?}");
    let first = &list[0];
    let default_hassh = independent_hassh(&[]);
    // Its risk score is its latest login's: a known, untrusted device from
    // a known address (10).
    assert_eq!(first["hassh"].as_str(), Some(default_hassh.as_str()), "{first}");
    assert_eq!((first["login_count"].as_i64(), first["device_type"].as_str(), first["is_trusted"].as_bool(), first["risk_score"].as_i64()), (Some(2), Some("ssh"), Some(false), Some(10)), "{first}");
    assert!(first["client_version"].as_str().is_some_and(|v| v.starts_with("SSH-2.0-OpenSSH_")), "{first}");
    assert!(first["device_name"].as_str().is_some_and(|n| n.starts_with("OpenSSH ") && !n.contains('_')), "{first}");
    assert!(first["key_fingerprint"].is_null() && first["last_seen_at"].is_string() && first["hassh_algorithms"].as_str().is_some_and(|a| a.matches(';').count() == 3), "{first}");
    assert_eq!(first["addresses"], serde_json::json!(["127.0.0.1"]), "{first}");

    // Another cipher list, twice (and from another address): one more device.
    for from in ["127.0.0.1", "127.0.0.2"] {
        let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).options(CIPHERS).bind(from));
        assert!(run.authenticated_exec(), "{run:#?}");
    }
    // Another key exchange list: one more.
    assert!(g.ssh(&Ssh::kbd("alice", ALICE_PW).options(KEX)).authenticated_exec());
    let list = devices(&g, "alice");
    assert_eq!(list.len(), 3, "{list:#?}");
    let by_hassh = |h: &str| list.iter().find(|d| d["hassh"].as_str() == Some(h)).unwrap_or_else(|| panic!("no device with hassh {h}: {list:#?}"));
    let ciphers = by_hassh(&independent_hassh(CIPHERS));
    let kex = by_hassh(&independent_hassh(KEX));
    let hashes: std::collections::HashSet<&str> = list.iter().map(|d| d["hassh"].as_str().expect("hassh")).collect();
    assert_eq!(hashes.len(), 3, "three offers, three HASSH values: {list:#?}");
    assert_eq!(ciphers["login_count"].as_i64(), Some(2), "{ciphers}");
    assert_eq!(ciphers["addresses"], serde_json::json!(["127.0.0.2", "127.0.0.1"]), "{ciphers}");
    assert!(ciphers["hassh_algorithms"].as_str().is_some_and(|a| a.contains(";aes256-gcm@openssh.com;")), "{ciphers}");
    assert!(kex["hassh_algorithms"].as_str().is_some_and(|a| a.starts_with("curve25519-sha256,")), "{kex}");

    // One device_new each; the first says it was the account's first.
    let new = g.events_of(Some("alice"), "device_new");
    assert_eq!(new.len(), 3, "{new:#?}");
    let ids: Vec<i64> = new.iter().rev().map(|e| e["device_id"].as_i64().expect("device id")).collect();
    assert_eq!(ids, vec![id_of(first), id_of(ciphers), id_of(kex)]);
    assert_eq!(detail(&new[2], "first_of_account"), true);
    assert_eq!(detail(&new[1], "hassh"), &ciphers["hassh"]);
    assert!(g.events_of(Some("alice"), "login_success").iter().all(|e| !detail(e, "hassh").is_null()), "logins carry their HASSH");

    // Two notices (not for the first device, nor for a known one), to alice.
    let files = smtp.wait_messages(2, Duration::from_secs(30));
    let mails: Vec<_> = files.iter().map(|f| read_mail(f)).collect();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    for (mail, d, from) in [(&mails, ciphers, "127.0.0.1"), (&mails, kex, "127.0.0.1")] {
        let id = id_of(d);
        let m = mail.iter().find(|m| m.text.contains(&format!("(device #{id})"))).unwrap_or_else(|| panic!("no notice for device {id}: {mail:#?}"));
        assert!(m.to.contains("alice@example.org"), "{m:#?}");
        assert_eq!(m.subject, "Sign-in to your account from a new device");
        let name = d["device_name"].as_str().expect("name");
        for want in [name, from, "Every required step of the login passed.", &format!("remove device #{id}"), "report it to your sysop (carol@example.org)"] {
            assert!(m.text.contains(want), "{want:?} missing from {m:#?}");
        }
    }
    poll(Duration::from_secs(10), "the notices marked sent", || {
        let q: Vec<Value> = g.mail_queue(true).into_iter().filter(|m| m["template"] == "device_new").collect();
        (q.len() == 2 && q.iter().all(|m| !m["sent_at"].is_null())).then_some(())
    });
}

/// Trust, untrust and remove from the CLI: each an event with the sysop
/// as actor; a device logged in with a key carries its fingerprint and
/// says so in its name; removing it ends its live session (the daemon
/// cuts it) and its next login is a new device; errors name the problem.
#[test]
fn devices_are_trusted_untrusted_and_removed_from_the_cli() {
    let g = Gate::start();
    g.add_user("alice", ALICE_PW);
    let (key, public) = g.keygen("alice_key");
    g.cli_ok(&["user", "key", "add", "alice", &public]);
    assert!(g.ssh(&Ssh::kbd("alice", "").key(&key)).authenticated_exec());
    let list = devices(&g, "alice");
    assert_eq!(list.len(), 1, "{list:#?}");
    let d = &list[0];
    let id = id_of(d);
    let ids = id.to_string();
    let fp = d["key_fingerprint"].as_str().expect("a key fingerprint").to_owned();
    assert!(fp.starts_with("SHA256:"), "{d}");
    let name = d["device_name"].as_str().expect("name").to_owned();
    assert!(name.ends_with(&format!(", key {}…", &fp[..19])), "{name}");

    // The table (RISK: its one login, all new: 60).
    let table = g.cli_ok(&["security", "devices", "list", "alice"]);
    assert!(table.starts_with("ID  TRUSTED  TYPE  LOGINS  FAILURES  RISK  LAST SEEN"), "{table}");
    assert!(table.lines().nth(1).is_some_and(|l| l.starts_with(&format!("{id}   no       ssh   1       0         60    "))), "{table}");

    assert_eq!(g.cli_ok(&["security", "devices", "trust", &ids]), format!("device {id} of alice is trusted: {name}\n"));
    assert_eq!(g.cli_ok(&["security", "devices", "trust", &ids]), format!("device {id} of alice was already trusted: {name}\n"));
    let d = &devices(&g, "alice")[0];
    assert_eq!(d["is_trusted"], true);
    assert!(d["trusted_at"].is_string() && d["trusted_by"].as_str().is_some_and(|b| b.starts_with("cli:")), "{d}");
    let trusted = g.events_of(Some("alice"), "device_trusted");
    assert_eq!(trusted.len(), 1, "once: {trusted:#?}");
    assert_eq!((trusted[0]["device_id"].as_i64(), detail(&trusted[0], "key_fingerprint").as_str()), (Some(id), Some(fp.as_str())), "{}", trusted[0]);
    assert!(detail(&trusted[0], "actor").as_str().is_some_and(|a| a.starts_with("cli:")), "{}", trusted[0]);

    assert_eq!(g.cli_ok(&["security", "devices", "untrust", &ids]), format!("device {id} of alice is no longer trusted: {name}\n"));
    assert_eq!(g.cli_ok(&["security", "devices", "untrust", &ids]), format!("device {id} of alice was not trusted: {name}\n"));
    assert_eq!(devices(&g, "alice")[0]["is_trusted"], false);
    assert_eq!(g.events_of(Some("alice"), "device_untrusted").len(), 1);

    // Removed while a session from it is open: the session is cut.
    let mut ssh = g.ssh_pty(&Ssh::kbd("alice", "").key(&key), "xterm", 80, 24);
    ssh.expect("Your choice: ");
    let out = g.cli_ok(&["security", "devices", "remove", &ids]);
    assert_eq!(out, format!("removed device {id} of alice: {name} (1 session ended)\n"));
    ssh.expect("Your session was ended: this device was removed from the account");
    let (code, screen) = ssh.finish();
    assert!(code.is_some(), "the gate closed the connection:\n{}", String::from_utf8_lossy(&screen));
    let removed = g.events_of(Some("alice"), "device_removed");
    assert_eq!((removed.len(), removed[0]["device_id"].as_i64(), detail(&removed[0], "sessions_ended").as_i64()), (1, Some(id), Some(1)), "{removed:#?}");
    let revoked = g.wait_events(Some("alice"), "session_revoked", |ev| !ev.is_empty());
    assert_eq!(detail(&revoked[0], "cause"), "device_removed", "{}", revoked[0]);
    assert_eq!(g.cli_ok(&["security", "devices", "list", "alice"]), "no devices\n");
    assert_eq!(devices(&g, "alice"), Vec::<Value>::new());

    // Its next login is a new device (a new id), announced again.
    assert!(g.ssh(&Ssh::kbd("alice", "").key(&key)).authenticated_exec());
    let again = devices(&g, "alice");
    assert!(again.len() == 1 && id_of(&again[0]) > id, "{again:#?}");
    assert_eq!(g.events_of(Some("alice"), "device_new").len(), 2);

    assert_eq!(cli_err(&g, &["security", "devices", "trust", "9999"], 1), "error: no device with id 9999\n");
    assert_eq!(cli_err(&g, &["security", "devices", "remove", &ids], 1), format!("error: no device with id {id}\n"));
    assert_eq!(cli_err(&g, &["security", "devices", "list", "carol"], 1), "error: no such user: carol\n");
    assert!(cli_err(&g, &["security", "devices", "trust", "laptop"], 2).contains("invalid value 'laptop'"));
}

/// Issue 9 point 3 over real SSH: under a rule's lock the owner gets in
/// from an address never used before with the key of a device they
/// trust; the same account from there without that device is refused.
/// (The lock row is set as `Core::lock_account_by_rule` sets it.)
#[test]
fn a_rule_lock_admits_the_owner_from_a_trusted_device() {
    let g = Gate::start();
    g.add_user("alice", ALICE_PW);
    let (key, public) = g.keygen("alice_key");
    g.cli_ok(&["user", "key", "add", "alice", &public]);
    assert!(g.ssh(&Ssh::kbd("alice", "").key(&key)).authenticated_exec());
    let id = id_of(&devices(&g, "alice")[0]);
    g.cli_ok(&["security", "devices", "trust", &id.to_string()]);
    let db = rusqlite::Connection::open(g.db_path()).expect("db");
    let until = crate::harness::unix_now() as i64 * 1000 + 3_600_000;
    let n = db.execute("UPDATE users SET locked_until = ?1, lock_source = 'rule', lock_reason = 'brute force', lock_incident_id = 7 WHERE username = 'alice'", [until]).expect("lock");
    assert_eq!(n, 1);

    // A password from a new address: refused (no trusted device, no known address).
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).bind("127.0.0.2"));
    assert!(!run.authenticated_exec(), "{run:#?}");
    let failed = g.wait_events(Some("alice"), "login_failed", |ev| !ev.is_empty());
    let lock = &failed[0]["details"]["lock"];
    assert_eq!((lock["known_address"].as_bool(), lock["trusted_device"].as_bool()), (Some(false), Some(false)), "{}", failed[0]);
    // The trusted device's key, another client configuration: another device, refused.
    let run = g.ssh(&Ssh::kbd("alice", "").key(&key).bind("127.0.0.3").options(CIPHERS));
    assert!(!run.authenticated_exec(), "{run:#?}");
    // The trusted device with its key from a new address: in.
    let run = g.ssh(&Ssh::kbd("alice", "").key(&key).bind("127.0.0.4"));
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    let success = g.events_of(Some("alice"), "login_success");
    let lock = &success[0]["details"]["lock"];
    assert_eq!((lock["admitted"].as_str(), lock["device_id"].as_i64()), (Some("trusted_device"), Some(id)), "{}", success[0]);
    assert_eq!(success[0]["ip"], "127.0.0.4");
}

/// The account menu: a user sees their devices, trusts one, is refused
/// the device of their own session and someone else's, and removes one;
/// each change is an event with the user as actor.
#[test]
fn the_account_menu_trusts_and_removes_own_devices() {
    let g = Gate::start();
    g.add_user("alice", ALICE_PW);
    g.add_user("bob", BOB_PW);
    assert!(g.ssh(&Ssh::kbd("alice", ALICE_PW)).authenticated_exec());
    assert!(g.ssh(&Ssh::kbd("alice", ALICE_PW).options(CIPHERS)).authenticated_exec());
    assert!(g.ssh(&Ssh::kbd("bob", BOB_PW)).authenticated_exec());
    let list = devices(&g, "alice");
    assert_eq!(list.len(), 2, "{list:#?}");
    let this = id_of(list.iter().find(|d| d["hassh_algorithms"].as_str().is_some_and(|a| !a.contains(";aes256-gcm@openssh.com;"))).expect("default"));
    let other = id_of(list.iter().find(|d| d["hassh_algorithms"].as_str().is_some_and(|a| a.contains(";aes256-gcm@openssh.com;"))).expect("ciphers"));
    let bobs = id_of(&devices(&g, "bob")[0]);
    let (trust, remove_this, remove_bobs, remove_other) = (format!("T{other}\r"), format!("r{this}\r"), format!("R#{bobs}\r"), format!("R {other}\r"));
    let run = g.ssh_script(
        &Ssh::kbd("alice", ALICE_PW),
        &[
            ("Your choice: ", "a"),
            ("[D] Your devices", ""),
            ("Your choice: ", "d"),
            ("(Enter for none): ", &trust),
            ("is trusted now.", ""),
            ("Your choice: ", "d"),
            ("[trusted]", ""),
            ("(Enter for none): ", &remove_this),
            ("That is the device of this session", ""),
            ("Your choice: ", "d"),
            ("(Enter for none): ", &remove_bobs),
            ("is not one of your devices.", ""),
            ("Your choice: ", "d"),
            ("(Enter for none): ", &remove_other),
            ("has been removed", ""),
            ("Your choice: ", "q"),
            ("[Q] Log off", ""),
            ("Your choice: ", "q"),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    assert!(run.stdout.contains(&format!("#{this:<4} ")) && run.stdout.contains("[this device]"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("Device #{other} has been removed (0 sessions ended).")), "{}", run.stdout);
    let trusted = g.events_of(Some("alice"), "device_trusted");
    assert_eq!(trusted[0]["device_id"].as_i64(), Some(other), "{trusted:#?}");
    assert!(detail(&trusted[0], "actor").as_str().is_some_and(|a| a.starts_with("user:")), "{}", trusted[0]);
    let removed = g.events_of(Some("alice"), "device_removed");
    assert_eq!((removed.len(), removed[0]["device_id"].as_i64()), (1, Some(other)), "{removed:#?}");
    assert_eq!(devices(&g, "alice").iter().map(id_of).collect::<Vec<_>>(), vec![this]);
    assert_eq!(devices(&g, "bob").len(), 1, "bob's device is untouched");
}

const FIREFOX_128: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const FIREFOX_133: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// One request of a browser: curl over HTTPS with the user agent `agent`,
/// from the loopback address `from`, keeping its cookies in `jar`, and
/// posting `form` (as `--data-urlencode` fields) when there is one.
fn browse(url: &str, jar: &std::path::Path, agent: &str, from: &str, form: &[String]) -> crate::harness::Http {
    let jar = jar.to_str().expect("jar path");
    let mut args = vec!["-k", "-c", jar, "-b", jar, "-A", agent, "--interface", from];
    for field in form {
        args.extend(["--data-urlencode", field.as_str()]);
    }
    crate::harness::curl(url, &args)
}

fn web_device<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter().find(|d| d["device_type"] == "web" && d["device_name"] == name).unwrap_or_else(|| panic!("no web device {name:?}: {list:#?}"))
}

/// A mailed enrollment link used over real HTTPS (curl sending browsers'
/// user agents): fetching it records nothing (mail scanners do that);
/// "Continue" records the browser as a `web` device of the account, with
/// the seed's fields in `security devices list --json`; a newer version
/// of the same browser from another address is the same device (renamed,
/// a failure counted for a wrong code); another browser is another
/// device, its right code counted as its login. The account's first
/// device (SSH) was not news; each new web device is mailed about at the
/// SMTP server, with what, when, where and how to report it.
#[test]
fn a_mailed_link_used_in_browsers_makes_web_devices() {
    let smtp = Smtp::start(free_port());
    let config = format!(
        "{DEFAULT_CONFIG}email: {{\n  smtp: \"smtp://127.0.0.1:{}\"\n  poll: 200ms\n  retry_base: 1s\n  retry_max: 2s\n}}\ngroups: {{\n  sysops: {{\n    require_level: 1\n  }}\n}}\n",
        smtp.port
    );
    let g = Gate::start_with(&config);
    g.add_user("alice", ALICE_PW);
    crate::mfa::add_user_in(&g, "carol", BOB_PW, "sysops");
    assert!(g.ssh(&Ssh::kbd("alice", ALICE_PW)).authenticated_exec());
    let ssh_device = id_of(&devices(&g, "alice")[0]);

    crate::mfa::enable(&g, "alice", "totp");
    let files = smtp.wait_messages(1, Duration::from_secs(30));
    let link = crate::mfa::link_in(&read_mail(&files[0]).text);
    let url = g.local_link(&link);
    let jar = g.path("browser.jar");

    // Fetching the link is not using it.
    let get = browse(&url, &jar, FIREFOX_128, "127.0.0.2", &[]);
    assert_eq!(get.status, 200, "{get:#?}");
    assert_eq!(devices(&g, "alice").len(), 1, "a GET records no device");
    let csrf = crate::mfa::between(&get.body, "name=\"csrf\" value=\"", "\"").to_owned();

    // "Continue": the secret is shown, to a device of the account.
    let page = browse(&url, &jar, FIREFOX_128, "127.0.0.2", &[format!("csrf={csrf}")]);
    assert_eq!(page.status, 200, "{page:#?}\n{}", g.daemon_log());
    let secret = crate::mfa::between(&page.body, "<code class=\"secret\">", "</code>").replace(' ', "");
    let list = devices(&g, "alice");
    assert_eq!(list.len(), 2, "{list:#?}");
    let web = web_device(&list, "Firefox 128 on Linux");
    let web_id = id_of(web);
    assert_ne!(web_id, ssh_device);
    for field in ["id", "device_name", "device_type", "is_trusted", "risk_score", "last_seen_at"] {
        assert!(!web[field].is_null(), "the seed's field {field} in {web}");
    }
    assert_eq!((web["is_trusted"].as_bool(), web["risk_score"].as_i64(), web["login_count"].as_i64(), web["failure_count"].as_i64()), (Some(false), Some(0), Some(0), Some(0)), "{web}");
    assert_eq!((web["client_version"].as_str(), web["last_ip"].as_str()), (Some(FIREFOX_128), Some("127.0.0.2")), "{web}");
    assert_eq!(web["addresses"], serde_json::json!(["127.0.0.2"]), "{web}");
    assert!(web["hassh"].is_null() && web["key_fingerprint"].is_null(), "{web}");

    // The notice, to alice, at the SMTP server.
    let notice = |id: i64, n: usize| {
        let files = smtp.wait_messages(n, Duration::from_secs(30));
        let mails: Vec<_> = files.iter().map(|f| read_mail(f)).collect();
        mails.into_iter().find(|m| m.text.contains(&format!("(device #{id})"))).unwrap_or_else(|| panic!("no notice for device {id}"))
    };
    let m = notice(web_id, 2);
    assert!(m.to.contains("alice@example.org"), "{m:#?}");
    assert_eq!(m.subject, "A link of yours was opened on a new device");
    for want in ["Firefox 128 on Linux (device #", "127.0.0.2", "The page showed the secret", &format!("remove device #{web_id}"), "report it to your sysop (carol@example.org)"] {
        assert!(m.text.contains(want), "{want:?} missing from {m:#?}");
    }

    // A wrong code from a newer Firefox elsewhere: the same device.
    let r = browse(&url, &jar, FIREFOX_133, "127.0.0.3", &[format!("csrf={csrf}"), format!("code={}", crate::mfa::wrong_totp(&secret))]);
    assert_eq!(r.status, 422, "{r:#?}");
    let list = devices(&g, "alice");
    assert_eq!(list.len(), 2, "{list:#?}");
    let web = web_device(&list, "Firefox 133 on Linux");
    assert_eq!((id_of(web), web["failure_count"].as_i64(), web["client_version"].as_str()), (web_id, Some(1), Some(FIREFOX_133)), "{web}");
    assert_eq!(web["addresses"], serde_json::json!(["127.0.0.3", "127.0.0.2"]), "{web}");

    // The right code from Chrome on Windows: another device, its use counted.
    let r = browse(&url, &jar, CHROME_WINDOWS, "127.0.0.4", &[format!("csrf={csrf}"), format!("code={}", crate::harness::totp_at(&secret, crate::harness::unix_now()))]);
    assert_eq!(r.status, 200, "{r:#?}\n{}", g.daemon_log());
    let list = devices(&g, "alice");
    assert_eq!(list.len(), 3, "{list:#?}");
    let chrome = web_device(&list, "Chrome 131 on Windows");
    let chrome_id = id_of(chrome);
    assert_eq!((chrome["login_count"].as_i64(), chrome["failure_count"].as_i64(), chrome["last_ip"].as_str()), (Some(1), Some(0), Some("127.0.0.4")), "{chrome}");
    let m = notice(chrome_id, 3);
    assert!(m.text.contains("Two-factor authentication was set up from it.") && m.text.contains("127.0.0.4"), "{m:#?}");

    // The events name the devices; the SSH one was the account's first.
    let new = g.events_of(Some("alice"), "device_new");
    assert_eq!(new.iter().rev().map(|e| e["device_id"].as_i64().expect("device id")).collect::<Vec<_>>(), vec![ssh_device, web_id, chrome_id], "{new:#?}");
    assert_eq!((detail(&new[2], "first_of_account"), detail(&new[1], "first_of_account")), (&Value::Bool(true), &Value::Bool(false)));
    assert_eq!((detail(&new[1], "device_type"), detail(&new[1], "user_agent"), &new[1]["ip"]), (&Value::from("web"), &Value::from(FIREFOX_128), &Value::from("127.0.0.2")), "{}", new[1]);
    assert_eq!(g.events_of(Some("alice"), "otp_failed")[0]["device_id"].as_i64(), Some(web_id));
    assert_eq!(g.events_of(Some("alice"), "mfa_enabled")[0]["device_id"].as_i64(), Some(chrome_id));
    poll(Duration::from_secs(10), "the two web notices marked sent, no SSH one", || {
        let q = g.mail_queue(true);
        let sent = |t: &str| q.iter().filter(|m| m["template"] == t && !m["sent_at"].is_null()).count();
        (sent("web_device_new") == 2 && q.iter().all(|m| m["template"] != "device_new")).then_some(())
    });

    // The table lists them with the SSH one.
    let table = g.cli_ok(&["security", "devices", "list", "alice"]);
    for want in ["Firefox 133 on Linux", "Chrome 131 on Windows", "OpenSSH ", " web ", " ssh "] {
        assert!(table.contains(want), "{want:?} missing from:\n{table}");
    }
}

/// The account menu lists the browsers that used a link beside the SSH
/// devices and trusts one; a hostile user agent reaches the name and the
/// stored version string without its controls (and `--json` stays
/// terminal-safe); one link adds at most three devices.
#[test]
fn the_account_menu_shows_web_devices_and_hostile_agents_are_cleaned() {
    let g = Gate::start_with(&crate::mfa::spool_config(""));
    g.add_user("alice", ALICE_PW);
    assert!(g.ssh(&Ssh::kbd("alice", ALICE_PW)).authenticated_exec());
    crate::mfa::enable(&g, "alice", "totp");
    // open_page uses curl's own user agent ("curl/X.Y.Z").
    let page = crate::mfa::open_page(&g, &crate::mfa::spooled_link(&g, "alice", 0), "alice.jar");
    let wrong = crate::mfa::wrong_totp(&page.secret);
    let post = |agent: &str| browse(&page.url, &page.jar, agent, "127.0.0.1", &[format!("csrf={}", page.csrf), format!("code={wrong}")]);
    // (HTTP itself refuses C0 controls in a header: C1 and bidi pass as bytes.)
    assert_eq!(post("evil\u{9b}2J\u{202e}/6.6 \u{2066}x\u{2069}").status, 422);
    let list = devices(&g, "alice");
    assert_eq!(list.len(), 3, "{list:#?}");
    let curl = list.iter().find(|d| d["device_type"] == "web" && d["device_name"].as_str().is_some_and(|n| n.starts_with("curl "))).unwrap_or_else(|| panic!("{list:#?}"));
    let curl_id = id_of(curl);
    let evil = web_device(&list, "evil2J 6");
    assert_eq!((evil["client_version"].as_str(), evil["failure_count"].as_i64()), (Some("evil2J/6.6 x"), Some(1)), "{evil}");
    // A third and a fourth user agent through the same link: the fourth is on no device.
    assert_eq!(post(FIREFOX_128).status, 422);
    assert_eq!(post(CHROME_WINDOWS).status, 422);
    let list = devices(&g, "alice");
    assert_eq!(list.len(), 4, "one SSH device and three from the link: {list:#?}");
    assert!(list.iter().all(|d| d["device_name"] != "Chrome 131 on Windows"), "{list:#?}");
    let failed = g.events_of(Some("alice"), "otp_failed");
    assert_eq!(failed.len(), 3, "{failed:#?}");
    assert!(failed[0]["device_id"].is_null() && detail(&failed[0], "user_agent").as_str() == Some(CHROME_WINDOWS), "{}", failed[0]);

    let trust = format!("T{curl_id}\r");
    let run = g.ssh_script(
        &Ssh::kbd("alice", ALICE_PW),
        &[("Your choice: ", "a"), ("[D] Your devices", ""), ("Your choice: ", "d"), ("(Enter for none): ", &trust), ("is trusted now.", ""), ("Your choice: ", "q"), ("[Q] Log off", ""), ("Your choice: ", "q")],
    );
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    for want in ["Firefox 128 on Linux", &format!("#{curl_id:<4} curl "), &format!("#{:<4} evil2J 6", id_of(evil)), "OpenSSH ", "web, last ", "ssh, last ", "[this device]"] {
        assert!(run.stdout.contains(want), "{want:?} missing from:\n{}", run.stdout);
    }
    assert!(!run.stdout.contains('\u{202e}') && !run.stdout.contains('\u{9b}'), "{}", run.stdout);
    let trusted = g.events_of(Some("alice"), "device_trusted");
    assert_eq!((trusted[0]["device_id"].as_i64(), detail(&trusted[0], "device_type").as_str()), (Some(curl_id), Some("web")), "{trusted:#?}");
    assert_eq!(devices(&g, "alice").iter().find(|d| id_of(d) == curl_id).expect("curl")["is_trusted"], true);
}
