//! Hardware keys end to end: the sysop mails an enrollment link, the user
//! opens it in real headless Chromium with a DevTools virtual
//! authenticator (CTAP2, USB, resident key, user verification), names the
//! key and registers it; the CLI lists, renames and removes it; the link
//! works once. The relying party is `localhost` (an IP cannot be one), so
//! the gate's `web.base_url` is `https://localhost:PORT` on a fixed port.

use crate::browser::Browser;
use crate::harness::{curl, free_port, poll, read_mail, Gate, ALICE_PW, DEFAULT_CONFIG};
use serde_json::Value;
use std::time::Duration;

/// A gate whose web page is `https://localhost:PORT`.
fn gate_on_localhost() -> (Gate, u16) {
    let port = free_port();
    let config = DEFAULT_CONFIG.replace(
        "web: {\n  listen: \"127.0.0.1:0\"\n}",
        &format!("web: {{\n  listen: \"127.0.0.1:{port}\"\n  base_url: \"https://localhost:{port}\"\n}}"),
    );
    assert!(config.contains("https://localhost:"), "the test config changed shape");
    let g = Gate::start_with(&config);
    assert_eq!(g.web_port, port);
    g.add_user("alice", ALICE_PW);
    g.add_user("bob", crate::harness::BOB_PW);
    (g, port)
}

/// Mails `user` a key enrollment link and returns it (from the file spool).
fn key_link(g: &Gate, user: &str) -> String {
    let before = g.spooled_mail().len();
    let out = g.cli_ok(&["security", "webauthn", "enroll", &format!("--user={user}")]);
    assert!(out.contains("hardware key enrollment link"), "{out}");
    let to = format!("{user}@example.org");
    poll(Duration::from_secs(15), "the key enrollment mail", || {
        let mails = g.spooled_mail();
        mails.iter().skip(before).map(|p| read_mail(p)).find(|m| m.to.contains(&to) && m.text.contains("/webauthn/enroll/")).map(|m| {
            let start = m.text.find("https://").unwrap();
            m.text[start..].chars().take_while(|c| !c.is_whitespace()).collect::<String>()
        })
    })
}

fn keys_of(g: &Gate, user: &str) -> Vec<Value> {
    match serde_json::from_str(&g.cli_ok(&["security", "webauthn", "list", user, "--json"])) {
        Ok(Value::Array(v)) => v,
        other => panic!("webauthn list: {other:?}"),
    }
}

/// Registers a key on `link` in `browser` (a new tab with its own virtual
/// authenticator) under `name`; returns what the page said.
fn register(browser: &mut Browser, link: &str, name: &str) -> (crate::browser::Page, String, String) {
    let page = browser.page();
    let authenticator = browser.add_authenticator(&page);
    // The buttons work once the gate's script has run.
    browser.open(&page, link, "document.getElementById('key-enroll').dataset.ready === 'yes' && !document.getElementById('use-security-key').disabled");
    browser.eval(&page, &format!("document.getElementById('key-name').value = {}; document.getElementById('use-security-key').click(); true", serde_json::to_string(name).unwrap()));
    browser.wait_for(
        &page,
        "!document.getElementById('done').hidden || document.getElementById('status').className === 'error'",
        Duration::from_secs(30),
    );
    let status = browser.eval(&page, "document.getElementById('done').hidden ? document.getElementById('status').textContent : 'done: ' + document.querySelector('#done .key-name').textContent");
    (page, authenticator, status.as_str().unwrap_or_default().to_owned())
}

#[test]
fn register_a_key_from_the_mailed_link() {
    let (g, port) = gate_on_localhost();
    let link = key_link(&g, "alice");
    assert!(link.starts_with(&format!("https://localhost:{port}/webauthn/enroll/")), "{link}");

    let mut browser = Browser::launch();
    let (page, authenticator, said) = register(&mut browser, &link, "Blue key");
    assert_eq!(said, "done: Blue key", "the page said: {said}\n{}", g.daemon_log());

    // The authenticator holds one credential for the relying party localhost.
    let creds = browser.credentials(&page, &authenticator);
    assert_eq!(creds.len(), 1, "{creds:#?}");
    assert_eq!(creds[0]["rpId"], "localhost", "{:#?}", creds[0]);

    let keys = keys_of(&g, "alice");
    assert_eq!(keys.len(), 1, "{keys:#?}");
    let k = &keys[0];
    for field in ["id", "name", "credential_type", "authenticator_attachment", "created_at", "last_used_at"] {
        assert!(k.get(field).is_some(), "{field} missing from {k}");
    }
    assert_eq!(k["name"], "Blue key");
    assert_eq!(k["credential_type"], "security_key", "{k}");
    assert_eq!(k["authenticator_attachment"], "cross-platform", "{k}");
    assert_eq!(k["transports"], serde_json::json!(["usb"]), "{k}");
    assert!(k["last_used_at"].is_null(), "{k}");
    let aaguid = k["aaguid"].as_str().unwrap_or_else(|| panic!("no AAGUID: {k}"));
    assert_eq!(aaguid.len(), 36, "{k}");
    // Without attestation ("none", the gate's choice) Chromium hides the
    // model: an all-zero AAGUID, so no name from the table.
    assert_eq!(aaguid, "00000000-0000-0000-0000-000000000000", "{k}");
    assert!(k["authenticator"].is_null(), "{k}");
    assert_eq!(k["attestation_format"], "none", "{k}");
    assert_eq!(keys_of(&g, "bob"), Vec::<Value>::new());

    // The event names the key.
    let ev = g.wait_events(Some("alice"), "webauthn_registered", |ev| !ev.is_empty());
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(crate::harness::detail(&ev[0], "key_id"), &k["id"], "{}", ev[0]);
    assert_eq!(crate::harness::detail(&ev[0], "name"), "Blue key");
    assert_eq!(ev[0]["ip"], "127.0.0.1");

    // The link worked once: the page is gone, and so is a second ceremony.
    let again = curl(&g.web_url(&link[link.find("/webauthn").unwrap()..]), &["-k"]);
    assert_eq!(again.status, 404, "{again:#?}");
    let said = {
        let p = browser.page();
        browser.open(&p, &link, "document.body && document.body.innerText.length > 0");
        browser.eval(&p, "document.body.innerText").as_str().unwrap_or_default().to_owned()
    };
    assert!(said.contains("not valid") || said.contains("no longer"), "{said}");

    // Renamed and removed by the sysop, each an event.
    let id = k["id"].as_i64().unwrap().to_string();
    g.cli_ok(&["security", "webauthn", "rename", &id, "Spare key"]);
    assert_eq!(keys_of(&g, "alice")[0]["name"], "Spare key");
    let out = g.cli_ok(&["security", "webauthn", "remove", &id]);
    assert!(out.contains("removed hardware key"), "{out}");
    assert_eq!(keys_of(&g, "alice"), Vec::<Value>::new());
    let removed = g.wait_events(Some("alice"), "webauthn_removed", |ev| !ev.is_empty());
    assert_eq!(crate::harness::detail(&removed[0], "name"), "Spare key");
    let out = g.cli(&["security", "webauthn", "remove", &id]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(crate::harness::text(&out.stderr).contains(&format!("no hardware key {id}")), "{out:?}");
}

/// The JSON calls refuse what the page would never send, before any
/// ceremony: no CSRF value, not JSON, an unknown link.
#[test]
fn key_enrollment_calls_refuse_forgeries() {
    let (g, _) = gate_on_localhost();
    let link = key_link(&g, "alice");
    let path = &link[link.find("/webauthn").unwrap()..];
    let jar = g.path("jar");
    let jar_s = jar.to_str().unwrap();
    let page = curl(&g.web_url(path), &["-k", "-c", jar_s]);
    assert_eq!(page.status, 200, "{page:#?}");
    page.assert_security_headers();
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(page.body.contains("<script src=\"/static/webauthn.js\"></script>"), "{}", page.body);
    let csrf = page.body.split("data-csrf=\"").nth(1).and_then(|r| r.split('"').next()).expect("the CSRF value").to_owned();

    let options = g.web_url(&format!("{path}/options"));
    let post = |url: &str, headers: &[&str], body: &str| {
        let mut args = vec!["-k", "-b", jar_s, "-X", "POST", "--data-binary", body];
        for h in headers {
            args.push("-H");
            args.push(h);
        }
        curl(url, &args)
    };
    let csrf_header = format!("X-CSRF-Token: {csrf}");
    let no_csrf = post(&options, &["Content-Type: application/json"], "{}");
    assert_eq!(no_csrf.status, 403, "{no_csrf:#?}");
    let wrong_csrf = post(&options, &["Content-Type: application/json", "X-CSRF-Token: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"], "{}");
    assert_eq!(wrong_csrf.status, 403, "{wrong_csrf:#?}");
    let form = post(&options, &["Content-Type: application/x-www-form-urlencoded", &csrf_header], "platform=true");
    assert_eq!(form.status, 415, "{form:#?}");
    let unknown = post(&g.web_url("/webauthn/enroll/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/options"), &["Content-Type: application/json", &csrf_header], "{}");
    assert_eq!(unknown.status, 404, "{unknown:#?}");

    // A real start: the options name the relying party and hold a fresh
    // challenge of 32 bytes; finishing with garbage is refused and the
    // ceremony is spent.
    let ok = post(&options, &["Content-Type: application/json", &csrf_header], "{}");
    assert_eq!(ok.status, 200, "{ok:#?}\n{}", g.daemon_log());
    let v: Value = serde_json::from_str(&ok.body).expect("options JSON");
    assert_eq!(v["publicKey"]["rp"]["id"], "localhost", "{v}");
    let challenge = v["publicKey"]["challenge"].as_str().expect("challenge");
    assert_eq!(challenge.len(), 43, "32 bytes, base64url: {challenge}");
    let ceremony = v["ceremony"].as_str().expect("ceremony id");
    let finish = g.web_url(&format!("{path}/finish"));
    let garbage = serde_json::json!({ "ceremony": ceremony, "name": "x", "credential": { "id": "AA", "rawId": "AA", "type": "public-key",
        "response": { "attestationObject": "AA", "clientDataJSON": "AA" }, "extensions": {} } });
    let refused = post(&finish, &["Content-Type: application/json", &csrf_header], &garbage.to_string());
    assert_eq!(refused.status, 422, "{refused:#?}");
    let again = post(&finish, &["Content-Type: application/json", &csrf_header], &garbage.to_string());
    assert_eq!(again.status, 422, "{again:#?}");
    assert!(again.body.contains("too long") || again.body.contains("used twice"), "the ceremony was used once: {}", again.body);
    let hostile_name = serde_json::json!({ "ceremony": ceremony, "name": "a\u{1b}[2Jb", "credential": garbage["credential"] });
    let bad = post(&finish, &["Content-Type: application/json", &csrf_header], &hostile_name.to_string());
    assert_eq!(bad.status, 422, "{bad:#?}");
    assert!(bad.body.contains("control characters"), "{}", bad.body);
    assert_eq!(keys_of(&g, "alice"), Vec::<Value>::new());
}
