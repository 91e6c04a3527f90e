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
    gate_on_localhost_with("")
}

/// `gate_on_localhost` with `ssh_extra` added to the `ssh` section, and
/// the group `keyholders` requiring level 3 (a hardware key).
fn gate_on_localhost_with(ssh_extra: &str) -> (Gate, u16) {
    let port = free_port();
    let config = format!("{DEFAULT_CONFIG}groups: {{\n  keyholders: {{\n    require_level: 3\n  }}\n}}\n")
        .replace("auth_rejection_time: 50ms", &format!("auth_rejection_time: 50ms\n  {ssh_extra}"))
        .replace(
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
    register_after(browser, link, name, "")
}

/// `register`, with the script `first` run in the page before the button
/// is pressed.
fn register_after(browser: &mut Browser, link: &str, name: &str, first: &str) -> (crate::browser::Page, String, String) {
    register_on(browser, link, name, first, "usb", "use-security-key")
}

/// `register_after` with an authenticator on `transport`, pressing the
/// button `button`.
fn register_on(browser: &mut Browser, link: &str, name: &str, first: &str, transport: &str, button: &str) -> (crate::browser::Page, String, String) {
    let page = browser.page();
    let authenticator = browser.add_authenticator_on(&page, transport);
    // The buttons work once the gate's script has run.
    browser.open(&page, link, &format!("document.getElementById('key-enroll').dataset.ready === 'yes' && !document.getElementById('{button}').disabled"));
    browser.eval(&page, &format!("{first}; document.getElementById('key-name').value = {}; document.getElementById('{button}').click(); true", serde_json::to_string(name).unwrap()));
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


/// The approval prompts the askpass of the gate's ssh runs logged so far:
/// (code, link) of each.
fn approval_prompts(g: &Gate) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let Ok(dirs) = std::fs::read_dir(g.dir.path()) else { return found };
    // ssh-N, one per run: in the order of the runs.
    let mut runs: Vec<(u64, std::path::PathBuf)> = dirs
        .flatten()
        .filter_map(|d| d.file_name().to_str().and_then(|n| n.strip_prefix("ssh-")).and_then(|n| n.parse().ok()).map(|n| (n, d.path())))
        .collect();
    runs.sort();
    for (_, dir) in runs {
        let Ok(prompts) = std::fs::read_to_string(dir.join("prompts")) else { continue };
        for line in prompts.lines() {
            // "Code ABCD-EFGH: approve at https://... then press Enter ..."
            if let Some(rest) = line.split("Code ").nth(1) {
                if let Some((code, tail)) = rest.split_once(": approve at ") {
                    let link = tail.split_whitespace().next().unwrap_or_default().to_owned();
                    found.push((code.to_owned(), link));
                }
            }
        }
    }
    found
}

/// Starts alice's SSH login (password, then the approval) on a thread.
fn ssh_alice(g: &Gate) -> std::thread::JoinHandle<crate::harness::SshRun> {
    let client = g.client();
    std::thread::spawn(move || client.ssh(&crate::harness::Ssh::kbd("alice", ALICE_PW).prompts(3)))
}

/// Waits for the `n`th approval prompt; returns its code and link.
fn nth_approval(g: &Gate, n: usize) -> (String, String) {
    poll(Duration::from_secs(20), "the approval prompt in the terminal", || {
        let p = approval_prompts(g);
        (p.len() >= n).then(|| p[n - 1].clone())
    })
}

/// Opens an approval link in `page` and checks what it shows.
fn open_approval(browser: &mut Browser, page: &crate::browser::Page, link: &str, code: &str) {
    browser.open(page, link, "document.getElementById('key-approve') && document.getElementById('key-approve').dataset.ready === 'yes'");
    assert_eq!(browser.eval(page, "document.getElementById('code').textContent"), code, "the page shows the terminal's code");
    assert_eq!(browser.eval(page, "document.getElementById('account').textContent"), "alice");
    assert_eq!(browser.eval(page, "document.getElementById('address').textContent"), "127.0.0.1");
    let client = browser.eval(page, "document.getElementById('client').textContent");
    assert!(client.as_str().unwrap_or_default().starts_with("SSH-2.0-OpenSSH"), "{client}");
}

/// Presses "Approve" and waits for the page's verdict.
fn press_approve(browser: &mut Browser, page: &crate::browser::Page) -> String {
    browser.eval(page, "document.getElementById('approve').click(); true");
    browser.wait_for(page, "!document.getElementById('done').hidden || document.getElementById('status').className === 'error'", Duration::from_secs(30));
    let said = browser.eval(page, "document.getElementById('done').hidden ? 'error: ' + document.getElementById('status').textContent : document.querySelector('#done p').textContent");
    said.as_str().unwrap_or_default().to_owned()
}

#[test]
fn ssh_login_approved_by_a_touch() {
    let (g, port) = gate_on_localhost_with("");
    g.cli_ok(&["user", "group", "add", "alice", "keyholders"]);
    // Without a key, a login that needs level 3 cannot pass.
    let run = g.ssh(&crate::harness::Ssh::kbd("alice", ALICE_PW));
    assert!(!run.authenticated_exec(), "{run:#?}");
    let failed = g.wait_events(Some("alice"), "login_failed", |ev| !ev.is_empty());
    assert_eq!(crate::harness::detail(&failed[0], "reason"), "hardware_key_required", "{}", failed[0]);
    // The password was right, so the terminal says why and what to do.
    assert!(run.prompts.iter().any(|p| p.contains("must log in with a hardware key and has none registered")), "{:?}", run.prompts);

    let link = key_link(&g, "alice");
    let mut browser = Browser::launch();
    let (page, authenticator, said) = register(&mut browser, &link, "Blue key");
    assert_eq!(said, "done: Blue key");
    let counter_before = browser.credentials(&page, &authenticator)[0]["signCount"].as_i64().unwrap();

    // The terminal shows a code and a link; the page shows the same code;
    // a touch lets the waiting login go on by itself.
    let ssh = ssh_alice(&g);
    let (code, approve) = nth_approval(&g, 1);
    assert!(approve.starts_with(&format!("https://localhost:{port}/webauthn/approve/")), "{approve}");
    assert_eq!(code.len(), 9, "{code}");
    open_approval(&mut browser, &page, &approve, &code);
    let said = press_approve(&mut browser, &page);
    assert!(said.starts_with("Approved."), "the page said: {said}\n{}", g.daemon_log());
    let run = ssh.join().unwrap();
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());

    let ok = g.wait_events(Some("alice"), "login_success", |ev| !ev.is_empty());
    assert_eq!(crate::harness::detail(&ok[0], "method"), "keyboard-interactive+webauthn", "{}", ok[0]);
    let used = g.wait_events(Some("alice"), "webauthn_used", |ev| !ev.is_empty());
    let keys = keys_of(&g, "alice");
    assert_eq!(crate::harness::detail(&used[0], "key_id"), &keys[0]["id"], "{}", used[0]);
    // Both events name the approval (its code, as on both screens) and
    // the key's event the login it approved.
    assert_eq!(crate::harness::detail(&used[0], "approval_code"), code.as_str(), "{}", used[0]);
    assert_eq!(crate::harness::detail(&ok[0], "approval_code"), code.as_str(), "{}", ok[0]);
    assert_eq!(crate::harness::detail(&used[0], "login_address"), "127.0.0.1", "{}", used[0]);
    assert!(crate::harness::detail(&used[0], "login_client").as_str().is_some_and(|c| c.starts_with("SSH-2.0-OpenSSH")), "{}", used[0]);
    assert!(!keys[0]["last_used_at"].is_null(), "{}", keys[0]);
    let counter_after = browser.credentials(&page, &authenticator)[0]["signCount"].as_i64().unwrap();
    assert!(counter_after > counter_before, "{counter_before} -> {counter_after}");
    assert_eq!(keys[0]["sign_count"].as_i64(), Some(counter_after), "the gate saved the counter: {}", keys[0]);

    // The approval was used once: its page is gone.
    let again = curl(&g.web_url(&approve[approve.find("/webauthn").unwrap()..]), &["-k"]);
    assert_eq!(again.status, 404, "{again:#?}");

    // A key of another user cannot release alice's login: bob's key (in
    // its own tab) signs alice's challenge, and the gate refuses it.
    let bob_link = key_link(&g, "bob");
    let (bob_page, bob_auth, said) = register(&mut browser, &bob_link, "Bob's key");
    assert_eq!(said, "done: Bob's key");
    let bob_cred = browser.credentials(&bob_page, &bob_auth)[0]["credentialId"].as_str().unwrap().to_owned();
    let ssh = ssh_alice(&g);
    let (code, approve) = nth_approval(&g, 2);
    open_approval(&mut browser, &bob_page, &approve, &code);
    // The page's own flow, with bob's credential allowed instead of alice's.
    let forged = browser.eval(
        &bob_page,
        &format!(
            r#"(async () => {{
                const main = document.getElementById('key-approve');
                const h = {{ "Content-Type": "application/json", "X-CSRF-Token": main.dataset.csrf }};
                const opts = await (await fetch(main.dataset.base + '/options', {{ method: 'POST', headers: h, body: '{{}}' }})).json();
                const b = s => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4)), c => c.charCodeAt(0)).buffer;
                const e = x => btoa(String.fromCharCode(...new Uint8Array(x))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
                opts.publicKey.challenge = b(opts.publicKey.challenge);
                opts.publicKey.allowCredentials = [{{ type: 'public-key', id: b({bob:?}) }}];
                const c = await navigator.credentials.get({{ publicKey: opts.publicKey }});
                const r = c.response;
                const res = await fetch(main.dataset.base + '/finish', {{ method: 'POST', headers: h, body: JSON.stringify({{ id: c.id, rawId: e(c.rawId), type: c.type,
                    response: {{ authenticatorData: e(r.authenticatorData), clientDataJSON: e(r.clientDataJSON), signature: e(r.signature), userHandle: r.userHandle ? e(r.userHandle) : null }}, extensions: {{}} }}) }});
                return res.status + ' ' + (await res.text());
            }})()"#,
            bob = bob_cred.replace('+', "-").replace('/', "_").trim_end_matches('=')
        ),
    );
    let forged = forged.as_str().unwrap_or_default().to_owned();
    assert!(forged.starts_with("422 "), "bob's key must not release alice's login: {forged}");
    // And the refusal is recorded against alice's waiting login.
    let refused = g.wait_events(Some("alice"), "login_failed", |ev| ev.iter().any(|e| crate::harness::detail(e, "reason") == "key_assertion_refused"));
    assert!(refused.iter().any(|e| crate::harness::detail(e, "reason") == "key_assertion_refused"), "{refused:#?}");
    // Alice's own key still can (the refused answer spent only that ceremony).
    open_approval(&mut browser, &page, &approve, &code);
    let said = press_approve(&mut browser, &page);
    assert!(said.starts_with("Approved."), "{said}");
    let run = ssh.join().unwrap();
    assert!(run.authenticated_exec(), "{run:#?}");
}

/// A cloned key: the virtual authenticator's counter is set back below
/// what the gate stored; the assertion is refused, a critical
/// `webauthn_counter_regression` raised and `cloned_authenticator` opened.
#[test]
fn counter_regression_is_refused_and_opens_an_incident() {
    let (g, _) = gate_on_localhost_with("");
    g.cli_ok(&["user", "group", "add", "alice", "keyholders"]);
    let link = key_link(&g, "alice");
    let mut browser = Browser::launch();
    let (page, authenticator, said) = register(&mut browser, &link, "Blue key");
    assert_eq!(said, "done: Blue key");
    // One good login: the gate stores the counter.
    let ssh = ssh_alice(&g);
    let (code, approve) = nth_approval(&g, 1);
    open_approval(&mut browser, &page, &approve, &code);
    assert!(press_approve(&mut browser, &page).starts_with("Approved."));
    assert!(ssh.join().unwrap().authenticated_exec());
    let stored = keys_of(&g, "alice")[0]["sign_count"].as_i64().unwrap();
    assert!(stored >= 1, "{stored}");

    // The "clone": the same private key with its counter set back.
    let mut cred = browser.credentials(&page, &authenticator).remove(0);
    browser.call(Some(&page.session), "WebAuthn.removeCredential", serde_json::json!({ "authenticatorId": authenticator, "credentialId": cred["credentialId"] }));
    cred["signCount"] = serde_json::json!(0);
    browser.call(Some(&page.session), "WebAuthn.addCredential", serde_json::json!({ "authenticatorId": authenticator, "credential": cred }));

    let ssh = ssh_alice(&g);
    let (code, approve) = nth_approval(&g, 2);
    open_approval(&mut browser, &page, &approve, &code);
    let said = press_approve(&mut browser, &page);
    assert!(said.starts_with("error: ") && said.contains("counter"), "the page said: {said}");
    let run = ssh.join().unwrap();
    assert!(!run.authenticated_exec(), "{run:#?}");
    assert!(run.prompts.iter().any(|p| p.contains("counter went back")), "the terminal says why: {:?}", run.prompts);

    let ev = g.wait_events(Some("alice"), "webauthn_counter_regression", |ev| !ev.is_empty());
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(ev[0]["severity"], "critical", "{}", ev[0]);
    assert_eq!(crate::harness::detail(&ev[0], "stored_counter").as_i64(), Some(stored), "{}", ev[0]);
    assert!(crate::harness::detail(&ev[0], "new_counter").as_i64().unwrap() <= stored, "{}", ev[0]);
    let incidents: Value = serde_json::from_str(&g.cli_ok(&["security", "incidents", "list", "--json"])).unwrap();
    let cloned: Vec<&Value> = incidents.as_array().unwrap().iter().filter(|i| i["incident_type"] == "cloned_authenticator").collect();
    assert_eq!(cloned.len(), 1, "{incidents:#}");
    assert_eq!(cloned[0]["severity"], "critical");
    assert_eq!(keys_of(&g, "alice")[0]["sign_count"].as_i64(), Some(stored), "the stored counter did not move back");
    let failed = g.wait_events(Some("alice"), "login_failed", |ev| ev.iter().any(|e| crate::harness::detail(e, "reason") == "key_approval_refused"));
    assert!(!failed.is_empty());
}

/// An approval nobody answers expires: the login ends with its message,
/// never a hang (the approval's time is cut to the login grace time).
#[test]
fn an_unanswered_approval_expires_with_a_message() {
    let (g, _) = gate_on_localhost_with("login_grace_time: 12s");
    g.cli_ok(&["user", "group", "add", "alice", "keyholders"]);
    let link = key_link(&g, "alice");
    let mut browser = Browser::launch();
    let (_page, _authenticator, said) = register(&mut browser, &link, "Blue key");
    assert_eq!(said, "done: Blue key");
    let started = std::time::Instant::now();
    let run = ssh_alice(&g).join().unwrap();
    assert!(!run.authenticated_exec(), "{run:#?}");
    assert!(started.elapsed() < Duration::from_secs(25), "{:?}", started.elapsed());
    assert!(run.prompts.iter().any(|p| p.contains("The approval expired")), "the terminal says why: {:?}", run.prompts);
    let failed = g.wait_events(Some("alice"), "login_failed", |ev| ev.iter().any(|e| crate::harness::detail(e, "reason") == "key_approval_expired"));
    assert!(!failed.is_empty());
    let (_, approve) = nth_approval(&g, 1);
    let gone = curl(&g.web_url(&approve[approve.find("/webauthn").unwrap()..]), &["-k"]);
    assert_eq!(gone.status, 404, "{gone:#?}");
}


/// `webauthn.enroll_grace`: a user required at level 3 with no key gets in
/// with password and code only to be mailed a registration link.
#[test]
fn enroll_grace_mails_a_link_and_lets_nothing_else_run() {
    let config = format!("{DEFAULT_CONFIG}groups: {{\n  keyholders: {{\n    require_level: 3\n  }}\n}}\nwebauthn: {{\n  enroll_grace: true\n}}\n");
    let g = Gate::start_with(&config);
    g.add_user("alice", ALICE_PW);
    let enrolled = crate::mfa::enroll_totp_spool(&g, "alice");
    g.cli_ok(&["user", "group", "add", "alice", "keyholders"]);
    let before = g.spooled_mail().len();
    let code = crate::mfa::next_totp(&enrolled.secret);
    let run = g.ssh_script(&crate::harness::Ssh::kbd("alice", ALICE_PW).code(&code), &[("then log in again", "")]);
    assert!(run.stdout.contains("must log in with a hardware key"), "{run:#?}\n{}", g.daemon_log());
    assert!(run.stdout.contains("A link to register one was mailed to alice@example.org"), "{run:#?}");
    assert!(!run.stdout.contains("Your choice"), "no menu runs: {run:#?}");
    poll(Duration::from_secs(15), "the registration mail", || {
        g.spooled_mail().iter().skip(before).map(|p| read_mail(p)).find(|m| m.text.contains("/webauthn/enroll/")).map(|_| ())
    });
    // Without the grace the same login is refused, saying why.
    let strict = Gate::start_with(&config.replace("enroll_grace: true", "enroll_grace: false"));
    strict.add_user("alice", ALICE_PW);
    let enrolled = crate::mfa::enroll_totp_spool(&strict, "alice");
    strict.cli_ok(&["user", "group", "add", "alice", "keyholders"]);
    let run = strict.ssh(&crate::harness::Ssh::kbd("alice", ALICE_PW).code(&crate::mfa::next_totp(&enrolled.secret)).prompts(3));
    assert!(!run.authenticated_exec(), "{run:#?}");
    assert!(run.prompts.iter().any(|p| p.contains("has none registered")), "{:?}", run.prompts);
}


/// `webauthn.trust_device_for`: after a key approved a login, the same SSH
/// device logs in without a touch for that long (an event says so, and
/// the device list shows until when); another device still needs the key.
#[test]
fn an_approved_device_may_skip_the_touch_for_a_while() {
    let (g, _) = gate_on_localhost_with("");
    let config = std::fs::read_to_string(&g.config).unwrap();
    std::fs::write(&g.config, format!("{config}webauthn: {{\n  trust_device_for: 1h\n}}\n")).unwrap();
    g.signal(libc::SIGHUP);
    g.wait_events(None, "config_reloaded", |ev| !ev.is_empty());
    g.cli_ok(&["user", "group", "add", "alice", "keyholders"]);
    let link = key_link(&g, "alice");
    let mut browser = Browser::launch();
    let (page, _authenticator, said) = register(&mut browser, &link, "Blue key");
    assert_eq!(said, "done: Blue key");
    let ssh = ssh_alice(&g);
    let (code, approve) = nth_approval(&g, 1);
    open_approval(&mut browser, &page, &approve, &code);
    assert!(press_approve(&mut browser, &page).starts_with("Approved."));
    assert!(ssh.join().unwrap().authenticated_exec());
    let trusted = g.wait_events(Some("alice"), "device_trusted", |ev| !ev.is_empty());
    assert_eq!(crate::harness::detail(&trusted[0], "scope"), "hardware_key", "{}", trusted[0]);

    // The same client again: in with the password alone, no approval.
    let run = g.ssh(&crate::harness::Ssh::kbd("alice", ALICE_PW));
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    assert_eq!(approval_prompts(&g).len(), 1, "no second approval was asked");
    let ok = g.events_of(Some("alice"), "login_success");
    assert!(!crate::harness::detail(&ok[0], "hardware_key_trusted_until").is_null(), "{}", ok[0]);
    let devices: Value = serde_json::from_str(&g.cli_ok(&["security", "devices", "list", "alice", "--json"])).unwrap();
    assert!(devices.as_array().unwrap().iter().any(|d| !d["key_trusted_until"].is_null()), "{devices:#}");

    // Another client configuration (another key exchange offer: another
    // device) still needs the touch.
    let client = g.client();
    let other = std::thread::spawn(move || {
        client.ssh(&crate::harness::Ssh::kbd("alice", ALICE_PW).prompts(3).options(&["KexAlgorithms=curve25519-sha256"]))
    });
    let (code, approve) = nth_approval(&g, 2);
    open_approval(&mut browser, &page, &approve, &code);
    assert!(press_approve(&mut browser, &page).starts_with("Approved."));
    assert!(other.join().unwrap().authenticated_exec());
}

/// The account menu's `[K]`: a link mailed from the session, the key
/// listed, renamed; removing it needs a session that passed a second factor.
#[test]
fn keys_in_the_account_menu() {
    let (g, _) = gate_on_localhost();
    let before = g.spooled_mail().len();
    let run = g.ssh_script(
        &crate::harness::Ssh::kbd("alice", ALICE_PW),
        &[("Your choice: ", "a"), ("[K] Hardware keys", ""), ("Your choice: ", "k"), ("(Enter for none): ", "a\r"), ("A link to add a key was mailed", ""), ("Your choice: ", "q"), ("[Q] Log off", ""), ("Your choice: ", "q")],
    );
    assert!(run.stdout.contains("You have no hardware key."), "{run:#?}\n{}", g.daemon_log());
    assert!(run.stdout.contains("A link to add a key was mailed to alice@example.org"), "{run:#?}");
    let link = poll(Duration::from_secs(15), "the key enrollment mail", || {
        g.spooled_mail().iter().skip(before).map(|p| read_mail(p)).find(|m| m.text.contains("/webauthn/enroll/")).map(|m| {
            let start = m.text.find("https://").unwrap();
            m.text[start..].chars().take_while(|c| !c.is_whitespace()).collect::<String>()
        })
    });
    let mut browser = Browser::launch();
    let (_page, _auth, said) = register(&mut browser, &link, "");
    // No name given: one is chosen ("Key 1": the virtual authenticator's model is hidden).
    assert_eq!(said, "done: Key 1");
    let id = keys_of(&g, "alice")[0]["id"].as_i64().unwrap();

    let rename = format!("N{id} Blue \x1b[2Jkey\r");
    let good_rename = format!("N{id} Blue key\r");
    let remove = format!("R{id}\r");
    let run = g.ssh_script(
        &crate::harness::Ssh::kbd("alice", ALICE_PW),
        &[
            ("Your choice: ", "a"),
            ("[K] Hardware keys", ""),
            ("Your choice: ", "k"),
            // Esc in the line ends it: nothing of it is used.
            ("(Enter for none): ", &rename),
            ("Cancelled: your keys are unchanged.", ""),
            ("Your choice: ", "k"),
            ("(Enter for none): ", &good_rename),
            ("is now called Blue key", ""),
            ("Your choice: ", "k"),
            ("(Enter for none): ", &remove),
            ("needs a session that passed a second factor", ""),
            ("Your choice: ", "q"),
            ("[Q] Log off", ""),
            ("Your choice: ", "q"),
        ],
    );
    assert!(!run.stdout.contains("\u{1b}[2J"), "nothing typed reaches the screen raw");
    assert!(run.stdout.contains("needs a session that passed a second factor"), "{run:#?}");
    let keys = keys_of(&g, "alice");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["name"], "Blue key");
}

/// `webauthn.attestation_ca`: with roots configured the gate asks for the
/// key's attestation ("direct") and registers only a key whose chain ends
/// at one of them. Chromium's virtual authenticator attests with a
/// self-signed "Batch Certificate": a root of another maker refuses it,
/// with a message on the page and an event naming its certificate; and
/// that certificate itself cannot be listed as a root (it is not a CA):
/// the reload is refused saying so, and the old roots stay. (A chain that
/// does end at a listed root registers, marked verified:
/// `attestation_roots_accept_a_chain_to_a_listed_root`, with keys made in
/// the test, as no browser's virtual authenticator takes a certificate
/// from outside.)
#[test]
fn attestation_roots_refuse_other_makers() {
    use base64::Engine;
    let (g, _) = gate_on_localhost();
    let other_maker = {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "Some Other Maker Root CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
    };
    std::fs::write(g.path("roots.pem"), &other_maker).unwrap();
    let config = std::fs::read_to_string(&g.config).unwrap();
    std::fs::write(&g.config, format!("{config}webauthn: {{\n  attestation_ca: [\"roots.pem\"]\n}}\n")).unwrap();
    g.signal(libc::SIGHUP);
    let reloaded = g.wait_events(None, "config_reloaded", |ev| !ev.is_empty());
    assert_eq!(reloaded[0]["severity"], "info", "{}", reloaded[0]);

    // The page keeps what the authenticator answered, for the test.
    let keep = "const create = navigator.credentials.create.bind(navigator.credentials); \
        navigator.credentials.create = async (o) => { const c = await create(o); \
        window.attestationSeen = btoa(String.fromCharCode(...new Uint8Array(c.response.attestationObject))); return c; }";
    let mut browser = Browser::launch();
    let (page, _, said) = register_after(&mut browser, &key_link(&g, "alice"), "Blue key", keep);
    assert!(said.contains("accepts only keys from the makers its sysop lists"), "the page said: {said}\n{}", g.daemon_log());
    assert_eq!(keys_of(&g, "alice"), Vec::<Value>::new());
    let refused = g.wait_events(Some("alice"), "otp_failed", |ev| !ev.is_empty());
    assert_eq!(crate::harness::detail(&refused[0], "stage"), "webauthn_registration", "{}", refused[0]);
    let att = crate::harness::detail(&refused[0], "attestation");
    assert_eq!(att["format"], "packed", "{}", refused[0]);
    assert_eq!(att["certificates"], 1, "{}", refused[0]);
    assert_eq!(att["subject"], "CN=Batch Certificate,OU=Authenticator Attestation,O=Chromium,C=US", "{}", refused[0]);
    assert_eq!(att["issuer"], att["subject"], "self-signed: {}", refused[0]);

    // Its certificate, from the answer the page kept.
    let seen = browser.eval(&page, "window.attestationSeen");
    let object = base64::engine::general_purpose::STANDARD.decode(seen.as_str().expect("the page kept the answer")).unwrap();
    let serde_cbor_2::Value::Map(map) = serde_cbor_2::from_slice::<serde_cbor_2::Value>(&object).unwrap() else { panic!("not a map") };
    let Some(serde_cbor_2::Value::Map(statement)) = map.get(&serde_cbor_2::Value::Text("attStmt".into())) else { panic!("no attStmt") };
    let Some(serde_cbor_2::Value::Array(chain)) = statement.get(&serde_cbor_2::Value::Text("x5c".into())) else { panic!("no x5c") };
    let Some(serde_cbor_2::Value::Bytes(cert)) = chain.first() else { panic!("empty x5c") };
    {
        use sha2::Digest;
        let fingerprint: String = sha2::Sha256::digest(cert).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(att["sha256"], fingerprint.as_str(), "the event's fingerprint is the certificate's");
    }
    let body = base64::engine::general_purpose::STANDARD.encode(cert);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).unwrap()).collect();
    std::fs::write(g.path("roots.pem"), format!("{other_maker}-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))).unwrap();
    let out = g.cli(&["config", "check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = crate::harness::text(&out.stderr);
    assert!(said.contains("webauthn.attestation_ca:") && said.contains("roots.pem: certificate 2 cannot be a root: it is not a CA certificate"), "{said}");
    g.signal(libc::SIGHUP);
    // (The CLI refuses the file too, so the daemon's log is read first.)
    poll(Duration::from_secs(15), "the refused reload", || g.daemon_log().contains("cannot be a root").then_some(()));
    std::fs::write(g.path("roots.pem"), &other_maker).unwrap();
    let reloads = g.wait_events(None, "config_reloaded", |ev| ev.len() >= 2);
    let refused_reload = reloads.iter().find(|e| e["severity"] == "medium").unwrap_or_else(|| panic!("{reloads:#?}"));
    assert!(refused_reload.to_string().contains("cannot be a root"), "{refused_reload}");
    // The old roots stay: the key is still refused.
    let (_, _, said) = register(&mut browser, &key_link(&g, "alice"), "Blue key");
    assert!(said.contains("accepts only keys from the makers its sysop lists"), "the page said: {said}");
}

/// "Use this device": the platform authenticator (a virtual one on the
/// `internal` transport, as Touch ID or Windows Hello would be) registers
/// as a platform key, and approves an SSH login like a security key.
#[test]
fn this_devices_authenticator_registers_and_approves() {
    let (g, _) = gate_on_localhost();
    g.cli_ok(&["user", "group", "add", "alice", "keyholders"]);
    let mut browser = Browser::launch();
    let (page, authenticator, said) = register_on(&mut browser, &key_link(&g, "alice"), "Laptop", "", "internal", "use-this-device");
    assert_eq!(said, "done: Laptop", "the page said: {said}\n{}", g.daemon_log());
    let keys = keys_of(&g, "alice");
    assert_eq!(keys.len(), 1, "{keys:#?}");
    assert_eq!(keys[0]["authenticator_attachment"], "platform", "{}", keys[0]);
    assert_eq!(keys[0]["transports"], serde_json::json!(["internal"]), "{}", keys[0]);
    assert_eq!(browser.credentials(&page, &authenticator).len(), 1);

    let ssh = ssh_alice(&g);
    let (code, approve) = nth_approval(&g, 1);
    open_approval(&mut browser, &page, &approve, &code);
    assert!(press_approve(&mut browser, &page).starts_with("Approved."));
    assert!(ssh.join().unwrap().authenticated_exec());
    let used = g.wait_events(Some("alice"), "webauthn_used", |ev| !ev.is_empty());
    assert_eq!(crate::harness::detail(&used[0], "name"), "Laptop", "{}", used[0]);
}

/// The same pages in Firefox (headless Firefox ESR over Marionette, with
/// its WebDriver virtual authenticator): a key registered from the mailed
/// link, then an SSH login made with OpenSSH approved by a touch.
#[test]
fn firefox_registers_a_key_and_approves_a_login() {
    let (g, _) = gate_on_localhost();
    g.cli_ok(&["user", "group", "add", "alice", "keyholders"]);
    let mut ff = crate::firefox::Firefox::launch();
    let link = key_link(&g, "alice");
    ff.open(&link, "document.getElementById('key-enroll') !== null && document.getElementById('key-enroll').dataset.ready === 'yes' && !document.getElementById('use-security-key').disabled");
    let authenticator = ff.add_authenticator("usb");
    ff.eval("(document.getElementById('key-name').value = 'Red key', document.getElementById('use-security-key').click(), true)");
    ff.wait_for("!document.getElementById('done').hidden || document.getElementById('status').className === 'error'", Duration::from_secs(30));
    let said = ff.eval("document.getElementById('done').hidden ? document.getElementById('status').textContent : 'done: ' + document.querySelector('#done .key-name').textContent");
    assert_eq!(said, "done: Red key", "{}", g.daemon_log());
    assert_eq!(ff.credentials(&authenticator).len(), 1);
    let keys = keys_of(&g, "alice");
    assert_eq!(keys.len(), 1, "{keys:#?}");
    assert_eq!(keys[0]["name"], "Red key");
    assert_eq!(keys[0]["transports"], serde_json::json!(["usb"]), "{}", keys[0]);

    let ssh = ssh_alice(&g);
    let (code, approve) = nth_approval(&g, 1);
    ff.open(&approve, "document.getElementById('key-approve') !== null && document.getElementById('key-approve').dataset.ready === 'yes'");
    assert_eq!(ff.eval("document.getElementById('code').textContent"), code.as_str(), "the page shows the terminal's code");
    assert_eq!(ff.eval("document.getElementById('account').textContent"), "alice");
    ff.eval("(document.getElementById('approve').click(), true)");
    ff.wait_for("!document.getElementById('done').hidden || document.getElementById('status').className === 'error'", Duration::from_secs(30));
    let said = ff.eval("document.getElementById('done').hidden ? 'error: ' + document.getElementById('status').textContent : document.querySelector('#done p').textContent");
    assert!(said.as_str().unwrap_or_default().starts_with("Approved."), "{said}");
    assert!(ssh.join().unwrap().authenticated_exec());
    let used = g.wait_events(Some("alice"), "webauthn_used", |ev| !ev.is_empty());
    assert_eq!(crate::harness::detail(&used[0], "name"), "Red key", "{}", used[0]);
}

/// An approval is bound to the one login it was opened for: two logins of
/// alice wait at once, each with its own code and link; approving the
/// first releases the first only (the second still waits), the first's
/// link, once used, is gone, and the second's own approval releases it.
#[test]
fn an_approval_releases_only_its_own_login() {
    let (g, _) = gate_on_localhost();
    g.cli_ok(&["user", "group", "add", "alice", "keyholders"]);
    let mut browser = Browser::launch();
    let (page, _, said) = register(&mut browser, &key_link(&g, "alice"), "Blue key");
    assert_eq!(said, "done: Blue key");
    let first = ssh_alice(&g);
    let (code1, link1) = nth_approval(&g, 1);
    let second = ssh_alice(&g);
    let (code2, link2) = nth_approval(&g, 2);
    assert_ne!(code1, code2);
    assert_ne!(link1, link2);

    open_approval(&mut browser, &page, &link1, &code1);
    assert!(press_approve(&mut browser, &page).starts_with("Approved."));
    assert!(first.join().unwrap().authenticated_exec());
    let ok = g.wait_events(Some("alice"), "login_success", |ev| !ev.is_empty());
    assert_eq!(ok.len(), 1, "only the approved login got in: {ok:#?}");
    assert_eq!(crate::harness::detail(&ok[0], "approval_code"), code1.as_str());
    assert!(!second.is_finished(), "the second login still waits for its own approval");
    let used = curl(&g.web_url(&link1[link1.find("/webauthn").unwrap()..]), &["-k"]);
    assert_eq!(used.status, 404, "{used:#?}");

    open_approval(&mut browser, &page, &link2, &code2);
    assert!(press_approve(&mut browser, &page).starts_with("Approved."));
    assert!(second.join().unwrap().authenticated_exec());
    let ok = g.wait_events(Some("alice"), "login_success", |ev| ev.len() >= 2);
    let mut codes: Vec<&str> = ok.iter().map(|e| crate::harness::detail(e, "approval_code").as_str().unwrap_or_default()).collect();
    codes.sort();
    let mut want = vec![code1.as_str(), code2.as_str()];
    want.sort();
    assert_eq!(codes, want);
}

/// A maker for the attestation tests: a root CA (PEM) and, issued by it,
/// an attestation certificate of the form packed attestation needs (C, O,
/// OU "Authenticator Attestation", CN; not a CA), with its key.
fn maker(name: &str) -> (String, Vec<u8>, rcgen::KeyPair) {
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} Root CA"));
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let root_pem = root.self_signed(&root_key).unwrap().pem();
    let issuer = rcgen::Issuer::from_params(&root, &root_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    for (t, v) in [(rcgen::DnType::CountryName, "SE"), (rcgen::DnType::OrganizationName, name), (rcgen::DnType::OrganizationalUnitName, "Authenticator Attestation"), (rcgen::DnType::CommonName, "Batch 1")] {
        leaf.distinguished_name.push(t, v);
    }
    leaf.is_ca = rcgen::IsCa::ExplicitNoCa;
    let leaf_der = leaf.signed_by(&leaf_key, &issuer).unwrap().der().to_vec();
    (root_pem, leaf_der, leaf_key)
}

/// What a security key made here answers to the gate's `options`: a new
/// P-256 credential for `localhost` (AAGUID 11..11), with packed
/// attestation signed by `attestation` (certificate and key) or, without
/// one, by the credential's own key (self attestation, no chain).
fn soft_key_answer(options: &Value, origin: &str, attestation: Option<(&[u8], &rcgen::KeyPair)>) -> Value {
    use base64::Engine;
    use rcgen::{PublicKeyData, SigningKey};
    use serde_cbor_2::Value as Cbor;
    use sha2::Digest;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let challenge = options["publicKey"]["challenge"].as_str().expect("challenge");
    let client_data = serde_json::json!({ "type": "webauthn.create", "challenge": challenge, "origin": origin, "crossOrigin": false }).to_string();
    let credential = rcgen::KeyPair::generate().unwrap();
    let spki = credential.subject_public_key_info();
    // The uncompressed point ends the SPKI: 04 | x | y.
    let point = &spki[spki.len() - 65..];
    assert_eq!(point[0], 4);
    let cose = Cbor::Map(
        [(1, Cbor::Integer(2)), (3, Cbor::Integer(-7)), (-1, Cbor::Integer(1)), (-2, Cbor::Bytes(point[1..33].to_vec())), (-3, Cbor::Bytes(point[33..].to_vec()))]
            .into_iter()
            .map(|(k, v)| (Cbor::Integer(k), v))
            .collect(),
    );
    let cred_id: Vec<u8> = (0..32).map(|i| i as u8 ^ point[i + 1]).collect();
    let mut auth = sha2::Sha256::digest(b"localhost").to_vec();
    auth.push(0x45); // UP | UV | AT
    auth.extend_from_slice(&0u32.to_be_bytes());
    auth.extend_from_slice(&[0x11; 16]);
    auth.extend_from_slice(&(cred_id.len() as u16).to_be_bytes());
    auth.extend_from_slice(&cred_id);
    auth.extend_from_slice(&serde_cbor_2::to_vec(&cose).unwrap());
    let mut signed = auth.clone();
    signed.extend_from_slice(&sha2::Sha256::digest(client_data.as_bytes()));
    let mut statement = std::collections::BTreeMap::new();
    statement.insert(Cbor::Text("alg".into()), Cbor::Integer(-7));
    match attestation {
        Some((cert, key)) => {
            statement.insert(Cbor::Text("sig".into()), Cbor::Bytes(key.sign(&signed).unwrap()));
            statement.insert(Cbor::Text("x5c".into()), Cbor::Array(vec![Cbor::Bytes(cert.to_vec())]));
        }
        None => {
            statement.insert(Cbor::Text("sig".into()), Cbor::Bytes(credential.sign(&signed).unwrap()));
        }
    }
    let mut object = std::collections::BTreeMap::new();
    object.insert(Cbor::Text("fmt".into()), Cbor::Text("packed".into()));
    object.insert(Cbor::Text("attStmt".into()), Cbor::Map(statement));
    object.insert(Cbor::Text("authData".into()), Cbor::Bytes(auth));
    serde_json::json!({
        "id": b64.encode(&cred_id),
        "rawId": b64.encode(&cred_id),
        "type": "public-key",
        "response": {
            "attestationObject": b64.encode(serde_cbor_2::to_vec(&Cbor::Map(object)).unwrap()),
            "clientDataJSON": b64.encode(client_data.as_bytes()),
            "transports": ["usb"]
        },
        "extensions": {}
    })
}

/// `webauthn.attestation_ca` over real HTTPS with keys made here: the
/// options ask for attestation; a key whose packed attestation chains to
/// the listed root registers, marked verified, with its AAGUID; one of
/// another maker and one with self attestation are refused (422, the
/// page's message) and the events name what they sent.
#[test]
fn attestation_roots_accept_a_chain_to_a_listed_root() {
    let (g, port) = gate_on_localhost();
    let (ours, our_cert, our_key) = maker("Good Keys AB");
    let (_, their_cert, their_key) = maker("Other Keys AB");
    std::fs::write(g.path("roots.pem"), &ours).unwrap();
    let config = std::fs::read_to_string(&g.config).unwrap();
    std::fs::write(&g.config, format!("{config}webauthn: {{\n  attestation_ca: [\"roots.pem\"]\n}}\n")).unwrap();
    g.signal(libc::SIGHUP);
    g.wait_events(None, "config_reloaded", |ev| !ev.is_empty());
    let origin = format!("https://localhost:{port}");
    let jar = g.path("jar");
    let jar_s = jar.to_str().unwrap().to_owned();
    let register = |attestation: Option<(&[u8], &rcgen::KeyPair)>| {
        let link = key_link(&g, "alice");
        let path = &link[link.find("/webauthn").unwrap()..];
        let page = curl(&g.web_url(path), &["-k", "-c", &jar_s]);
        assert_eq!(page.status, 200, "{page:#?}");
        let csrf = page.body.split("data-csrf=\"").nth(1).and_then(|r| r.split('"').next()).expect("the CSRF value").to_owned();
        let csrf = format!("X-CSRF-Token: {csrf}");
        let post = |what: &str, body: &str| curl(&g.web_url(&format!("{path}/{what}")), &["-k", "-b", &jar_s, "-X", "POST", "-H", "Content-Type: application/json", "-H", &csrf, "--data-binary", body]);
        let options = post("options", "{}");
        assert_eq!(options.status, 200, "{options:#?}");
        let options: Value = serde_json::from_str(&options.body).unwrap();
        assert_eq!(options["publicKey"]["attestation"], "direct", "{options}");
        let body = serde_json::json!({ "ceremony": options["ceremony"], "name": "", "attachment": "cross-platform", "credential": soft_key_answer(&options, &origin, attestation) });
        post("finish", &body.to_string())
    };

    for attestation in [Some((their_cert.as_slice(), &their_key)), None] {
        let refused = register(attestation);
        assert_eq!(refused.status, 422, "{refused:#?}\n{}", g.daemon_log());
        assert!(refused.body.contains("accepts only keys from the makers its sysop lists"), "{}", refused.body);
    }
    let mut events = g.events_of(Some("alice"), "otp_failed");
    events.sort_by_key(|e| e["id"].as_i64());
    assert_eq!(events.len(), 2, "{events:#?}");
    let att = crate::harness::detail(&events[0], "attestation");
    assert_eq!(att["issuer"], "CN=Other Keys AB Root CA", "{att}");
    assert!(att["subject"].as_str().is_some_and(|s| s.contains("O=Other Keys AB") && s.contains("CN=Batch 1")), "{att}");
    assert_eq!(crate::harness::detail(&events[1], "attestation")["certificates"], 0, "self attestation has no chain");
    assert_eq!(keys_of(&g, "alice"), Vec::<Value>::new());

    let ok = register(Some((our_cert.as_slice(), &our_key)));
    assert_eq!(ok.status, 200, "{ok:#?}\n{}", g.daemon_log());
    let keys = keys_of(&g, "alice");
    assert_eq!(keys.len(), 1, "{keys:#?}");
    assert_eq!(keys[0]["attestation_format"], "packed", "{}", keys[0]);
    assert_eq!(keys[0]["attestation_verified"], true, "{}", keys[0]);
    assert_eq!(keys[0]["aaguid"], "11111111-1111-1111-1111-111111111111", "{}", keys[0]);
}
