//! Two-factor authentication end to end: enrollment links by mail (real
//! SMTP server or file spool), the HTTPS enrollment page, codes from an
//! independent implementation (oathtool), and SSH logins with the real
//! OpenSSH client.

use crate::harness::{curl, detail, free_port, hotp, poll, read_mail, text, totp_at, unix_now, Gate, Http, Smtp, Ssh, ALICE_PW, BOB_PW, DEFAULT_CONFIG};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const WRONG_PW: &str = "Wrong-Horse-Battery-0";

/// The test config plus `extra` sections (each written over lines).
fn config(extra: &str) -> String {
    format!("{DEFAULT_CONFIG}{extra}")
}

/// File spool, mail checked every 200 ms.
pub(crate) fn spool_config(extra: &str) -> String {
    config(&format!("email: {{\n  poll: 200ms\n}}\n{extra}"))
}

fn smtp_config(port: u16, extra: &str) -> String {
    config(&format!("email: {{\n  smtp: \"smtp://127.0.0.1:{port}\"\n  poll: 200ms\n  retry_base: 1s\n  retry_max: 2s\n}}\n{extra}"))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

pub(crate) fn add_user_in(g: &Gate, name: &str, password: &str, group: &str) {
    let email = format!("{name}@example.org");
    let out = g.cli_stdin(&["user", "add", name, "--email", &email, "--group", group, "--password-stdin"], &format!("{password}\n"));
    assert!(out.status.success(), "user add {name}: {}{}", text(&out.stdout), text(&out.stderr));
}

/// `security mfa enable`; checks what it says.
pub(crate) fn enable(g: &Gate, user: &str, method: &str) {
    let out = g.cli_ok(&["security", "mfa", "enable", &format!("--method={method}"), &format!("--user={user}")]);
    assert!(out.contains(&format!("{user}@example.org")), "{out}");
}

/// The enrollment link in a mail's text, as sent (base_url host).
pub(crate) fn link_in(mail_text: &str) -> String {
    let start = mail_text.find("https://").unwrap_or_else(|| panic!("no link in the mail:\n{mail_text}"));
    let link: String = mail_text[start..].chars().take_while(|c| !c.is_whitespace() && *c != '<' && *c != '>' && *c != '"').collect();
    assert!(link.starts_with("https://localhost:8443/otp/enroll/"), "link {link:?}");
    let token = token_of(&link);
    assert_eq!(token.len(), 43, "a 256-bit base64url token: {token:?}");
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token:?}");
    link
}

fn token_of(link: &str) -> &str {
    link.rsplit('/').next().unwrap()
}

/// Waits for an enrollment mail to `user` in the file spool beyond the
/// first `seen` such mails; returns the link.
pub(crate) fn spooled_link(g: &Gate, user: &str, seen: usize) -> String {
    let to = format!("{user}@example.org");
    let links = poll(Duration::from_secs(15), &format!("an enrollment mail to {to} in the spool"), || {
        let links: Vec<String> = g
            .spooled_mail()
            .iter()
            .map(|p| read_mail(p))
            .filter(|m| m.to.contains(&to) && m.text.contains("/otp/enroll/"))
            .map(|m| link_in(&m.text))
            .collect();
        (links.len() > seen).then_some(links)
    });
    links.last().unwrap().clone()
}

/// The enrollment page, fetched into a cookie jar.
pub(crate) struct Page {
    pub(crate) url: String,
    pub(crate) jar: PathBuf,
    /// The link's page (GET): a "Continue" form, no secret.
    get: Http,
    /// What "Continue" (POST with the CSRF value) shows: the secret.
    http: Http,
    pub(crate) csrf: String,
    pub(crate) secret: String,
}

pub(crate) fn open_page(g: &Gate, link: &str, jar_name: &str) -> Page {
    let url = g.local_link(link);
    let jar = g.path(jar_name);
    let jar_s = jar.to_str().unwrap();
    let get = curl(&url, &["-k", "-c", jar_s, "-b", jar_s]);
    assert_eq!(get.status, 200, "{get:#?}\n{}", g.daemon_log());
    let csrf = between(&get.body, "name=\"csrf\" value=\"", "\"").to_owned();
    // Fetching the link (as mail scanners do) reveals nothing.
    assert!(get.body.contains(">Continue</button>"), "{}", get.body);
    for hidden in ["class=\"secret\"", "otpauth", "<svg", "name=\"code\""] {
        assert!(!get.body.contains(hidden), "{hidden} on the GET page:\n{}", get.body);
    }
    let http = curl(&url, &["-k", "-b", jar_s, "--data-urlencode", &format!("csrf={csrf}")]);
    assert_eq!(http.status, 200, "{http:#?}\n{}", g.daemon_log());
    assert_eq!(between(&http.body, "name=\"csrf\" value=\"", "\""), csrf, "the same CSRF value in the code form");
    let secret = between(&http.body, "<code class=\"secret\">", "</code>").to_owned();
    // Base32, grouped in fours for reading aloud.
    let groups: Vec<&str> = secret.split(' ').collect();
    assert!(groups.len() >= 2 && groups.iter().all(|g| g.len() <= 4 && !g.is_empty()), "secret {secret:?}");
    assert!(groups[..groups.len() - 1].iter().all(|g| g.len() == 4), "secret {secret:?}");
    assert!(secret.bytes().all(|b| b == b' ' || b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)), "secret {secret:?}");
    let secret = secret.replace(' ', "");
    assert_eq!(secret.len(), 32, "160 bits: {secret}");
    Page { url, jar, get, http, csrf, secret }
}

pub(crate) fn between<'a>(hay: &'a str, start: &str, end: &str) -> &'a str {
    let i = hay.find(start).unwrap_or_else(|| panic!("{start:?} not in:\n{hay}")) + start.len();
    let j = hay[i..].find(end).unwrap_or_else(|| panic!("{end:?} not after {start:?}")) + i;
    &hay[i..j]
}

impl Page {
    /// POSTs the form with the jar's cookie.
    pub(crate) fn post(&self, code: &str) -> Http {
        let jar = self.jar.to_str().unwrap();
        curl(&self.url, &["-k", "-b", jar, "--data-urlencode", &format!("csrf={}", self.csrf), "--data-urlencode", &format!("code={code}")])
    }
}

/// The backup codes on the confirmation page.
fn backup_codes(body: &str) -> Vec<String> {
    let mut codes = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("<li><code>") {
        rest = &rest[i + "<li><code>".len()..];
        let j = rest.find("</code>").unwrap();
        codes.push(rest[..j].to_owned());
        rest = &rest[j..];
    }
    for c in &codes {
        let (a, b) = c.split_once('-').unwrap_or_else(|| panic!("backup code {c:?}"));
        assert!(a.len() == 5 && b.len() == 5, "backup code {c:?}");
        assert!(c.bytes().filter(|b| *b != b'-').all(|b| b"abcdefghjkmnpqrstuvwxyz23456789".contains(&b)), "backup code {c:?}");
    }
    codes
}

pub(crate) struct Enrolled {
    pub(crate) secret: String,
    pub(crate) backup: Vec<String>,
}

/// Confirms a TOTP enrollment on `page` with the current code.
fn confirm_totp(g: &Gate, page: &Page) -> Enrolled {
    let done = page.post(&totp_at(&page.secret, unix_now()));
    assert_eq!(done.status, 200, "{done:#?}\n{}", g.daemon_log());
    let backup = backup_codes(&done.body);
    assert_eq!(backup.len(), 10, "{}", done.body);
    Enrolled { secret: page.secret.clone(), backup }
}

/// Enrolls `user` for TOTP through the file spool.
pub(crate) fn enroll_totp_spool(g: &Gate, user: &str) -> Enrolled {
    enable(g, user, "totp");
    let link = spooled_link(g, user, 0);
    let page = open_page(g, &link, &format!("{user}.jar"));
    let e = confirm_totp(g, &page);
    g.wait_events(Some(user), "mfa_enabled", |ev| !ev.is_empty());
    e
}

/// A TOTP code for the next step: the step used to confirm is burnt, and
/// the server accepts one step of drift, so this works at once.
pub(crate) fn next_totp(secret: &str) -> String {
    totp_at(secret, unix_now() + 30)
}

/// A code no nearby step produces.
pub(crate) fn wrong_totp(secret: &str) -> String {
    let now = unix_now();
    let near: Vec<String> = (0..6).map(|i| totp_at(secret, now - 60 + i * 30)).collect();
    ["000000", "111111", "222222", "333333", "444444", "555555", "666666"].iter().map(|c| c.to_string()).find(|c| !near.contains(c)).unwrap()
}

fn without_user(prompts: &[String], user: &str) -> Vec<String> {
    prompts.iter().map(|p| p.replace(&format!("({user}@127.0.0.1) "), "")).collect()
}

fn two_prompts() -> Vec<String> {
    vec!["Password: ".to_owned(), "Verification code: ".to_owned()]
}

fn otp_events(g: &Gate, user: &str) -> Vec<Value> {
    ["otp_success", "otp_failed", "otp_replay", "backup_code_used"].iter().flat_map(|t| g.events_of(Some(user), t)).collect()
}

fn assert_refused(run: &crate::harness::SshRun) {
    assert_eq!(run.code, Some(255), "{run:#?}");
    assert!(run.stderr.contains("Permission denied"), "{run:#?}");
}

#[test]
fn totp_enrollment_via_smtp_and_login() {
    let smtp = Smtp::start(free_port());
    let g = Gate::start_with(&smtp_config(smtp.port, ""));
    g.add_user("alice", ALICE_PW);
    assert_eq!(g.mfa_status("alice")["enabled"], false);

    enable(&g, "alice", "totp");
    let sent = g.wait_events(Some("alice"), "mfa_enrollment_sent", |ev| !ev.is_empty());
    assert_eq!(detail(&sent[0], "method"), "totp");
    let status = g.mfa_status("alice");
    assert_eq!(status["pending"], true, "{status}");
    assert_eq!(status["enabled"], false, "{status}");

    // The mail arrives over SMTP.
    let files = smtp.wait_messages(1, Duration::from_secs(15));
    assert_eq!(files.len(), 1);
    let mail = read_mail(&files[0]);
    assert!(mail.to.contains("alice@example.org"), "{mail:#?}");
    assert!(!mail.subject.is_empty() && !mail.subject.contains("/otp/"), "{mail:#?}");
    let link = link_in(&mail.text);
    let sent_row = poll(Duration::from_secs(10), "the outbox row marked sent", || {
        g.mail_queue(true).into_iter().find(|m| m["template"] == "otp_enroll" && !m["sent_at"].is_null())
    });
    assert_eq!(s(&sent_row, "recipient"), "alice@example.org");

    // The page: headers, QR code, secret, CSRF cookie and field.
    let page = open_page(&g, &link, "alice.jar");
    page.http.assert_security_headers();
    assert!(page.http.header("content-type").unwrap_or_default().starts_with("text/html"), "{:?}", page.http.headers);
    assert!(page.http.body.contains("<svg"), "an inline QR code");
    let cookie = page.get.header("set-cookie").expect("a CSRF cookie");
    assert!(cookie.starts_with(&format!("__Host-csrf={};", page.csrf)), "{cookie}");
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!page.http.body.contains(token_of(&link)), "the page does not echo the token");
    assert!(!page.get.body.contains(token_of(&link)), "the page does not echo the token");
    page.get.assert_security_headers();

    let enrolled = confirm_totp(&g, &page);
    let mut unique = enrolled.backup.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10, "{:?}", enrolled.backup);
    let enabled = g.wait_events(Some("alice"), "mfa_enabled", |ev| !ev.is_empty());
    assert_eq!(detail(&enabled[0], "method"), "totp");
    let status = g.mfa_status("alice");
    assert_eq!(status["enabled"], true, "{status}");
    assert_eq!(status["pending"], false, "{status}");
    assert_eq!(status["method"], "totp", "{status}");
    assert_eq!(status["backup_codes_left"], 10, "{status}");
    assert_eq!(status["required_level"], 2, "{status}");

    // Password and a code for the next step.
    let code = next_totp(&enrolled.secret);
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&code));
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    assert_eq!(without_user(&run.prompts, "alice"), two_prompts());
    let ok = g.wait_events(Some("alice"), "login_success", |ev| !ev.is_empty());
    assert_eq!(detail(&ok[0], "method"), "keyboard-interactive+totp", "{}", ok[0]);
    assert_eq!(detail(&ok[0], "factors"), 2, "{}", ok[0]);
    let otp_ok = g.events_of(Some("alice"), "otp_success");
    assert_eq!(otp_ok.len(), 1, "{otp_ok:#?}");
    assert_eq!(detail(&otp_ok[0], "method"), "totp");

    // The same code again is a replay.
    let replay = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&code));
    assert_refused(&replay);
    let replays = g.wait_events(Some("alice"), "otp_replay", |ev| !ev.is_empty());
    assert_eq!(replays.len(), 1, "{replays:#?}");
    assert_eq!(s(&replays[0], "severity"), "high");
    assert_eq!(detail(&replays[0], "reason"), "code_replayed");
    assert_eq!(g.events_of(Some("alice"), "login_success").len(), 1);

    // A backup code works once.
    let backup = &enrolled.backup[0];
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(backup));
    assert!(run.authenticated_exec(), "{run:#?}");
    let used = g.wait_events(Some("alice"), "backup_code_used", |ev| !ev.is_empty());
    assert_eq!(detail(&used[0], "backup_codes_left"), 9, "{}", used[0]);
    let ok = g.events_of(Some("alice"), "login_success");
    assert_eq!(ok.len(), 2);
    assert_eq!(detail(&ok[0], "method"), "keyboard-interactive+backup_code", "{}", ok[0]);
    let again = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(backup));
    assert_refused(&again);
    let failed = g.wait_events(Some("alice"), "otp_failed", |ev| !ev.is_empty());
    assert_eq!(detail(&failed[0], "reason"), "wrong_code", "{}", failed[0]);
    assert_eq!(g.events_of(Some("alice"), "login_success").len(), 2);
    assert_eq!(g.mfa_status("alice")["backup_codes_left"], 9);
    // The wrong code was reported to alice by mail, over SMTP too.
    let files = smtp.wait_messages(2, Duration::from_secs(15));
    assert!(read_mail(&files[1]).to.contains("alice@example.org"));

    // A sysop turns 2FA off: high severity; the password alone works again.
    let out = g.cli_ok(&["security", "mfa", "disable", "--user=alice"]);
    assert!(out.contains("disabled"), "{out}");
    let disabled = g.wait_events(Some("alice"), "mfa_disabled", |ev| !ev.is_empty());
    assert_eq!(s(&disabled[0], "severity"), "high", "{}", disabled[0]);
    let status = g.mfa_status("alice");
    assert_eq!(status["enabled"], false, "{status}");
    assert_eq!(status["required_level"], 1, "{status}");
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW));
    assert!(run.authenticated_exec(), "{run:#?}");
    assert_eq!(without_user(&run.prompts, "alice"), vec!["Password: "]);
    let ok = g.events_of(Some("alice"), "login_success");
    assert_eq!(ok.len(), 3);
    assert_eq!(detail(&ok[0], "method"), "keyboard-interactive");
    assert_eq!(detail(&ok[0], "factors"), 1);
}

#[test]
fn hotp_enrollment_and_lookahead() {
    let g = Gate::start_with(&spool_config(""));
    g.add_user("alice", ALICE_PW);
    enable(&g, "alice", "hotp");
    let link = spooled_link(&g, "alice", 0);
    let page = open_page(&g, &link, "alice.jar");
    let done = page.post(&hotp(&page.secret, 0));
    assert_eq!(done.status, 200, "{done:#?}");
    assert_eq!(backup_codes(&done.body).len(), 10);
    let status = g.mfa_status("alice");
    assert_eq!(status["enabled"], true, "{status}");
    assert_eq!(status["method"], "hotp", "{status}");

    // Counter 0 was used to confirm; a token that ran ahead to 5 is in the window.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&hotp(&page.secret, 5)));
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    assert_eq!(without_user(&run.prompts, "alice"), two_prompts());
    let ok = g.wait_events(Some("alice"), "login_success", |ev| !ev.is_empty());
    assert_eq!(detail(&ok[0], "method"), "keyboard-interactive+hotp", "{}", ok[0]);
    assert_eq!(detail(&ok[0], "factors"), 2);
    assert_eq!(detail(&g.events_of(Some("alice"), "otp_success")[0], "method"), "hotp");

    // Counter 3 is now behind the server: a replay.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&hotp(&page.secret, 3)));
    assert_refused(&run);
    let replays = g.wait_events(Some("alice"), "otp_replay", |ev| !ev.is_empty());
    assert_eq!(s(&replays[0], "severity"), "high");

    // Counter 6 is next.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&hotp(&page.secret, 6)));
    assert!(run.authenticated_exec(), "{run:#?}");
    assert_eq!(g.events_of(Some("alice"), "login_success").len(), 2);

    // Beyond the look-ahead (next is 7, window 7..=17): wrong.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&hotp(&page.secret, 18)));
    assert_refused(&run);
    let failed = g.wait_events(Some("alice"), "otp_failed", |ev| !ev.is_empty());
    assert_eq!(detail(&failed[0], "reason"), "wrong_code");
    assert_eq!(g.events_of(Some("alice"), "login_success").len(), 2);
}

#[test]
fn smtp_outage_and_restart() {
    let port = free_port();
    let mut g = Gate::start_with(&smtp_config(port, ""));
    g.add_user("alice", ALICE_PW);
    enable(&g, "alice", "totp");
    // Nothing listens: the mail stays queued with its error.
    let row = poll(Duration::from_secs(15), "a failed delivery attempt", || {
        g.mail_queue(false).into_iter().find(|m| m["template"] == "otp_enroll" && m["attempts"].as_u64().unwrap_or(0) >= 1 && !m["last_error"].is_null())
    });
    assert!(row["sent_at"].is_null(), "{row}");
    assert_eq!(s(&row, "recipient"), "alice@example.org");
    let error = s(&row, "last_error");
    assert!(!error.contains("/otp/enroll/"), "no link in the error: {error}");

    assert!(g.stop().is_some_and(|s| s.success()), "clean exit on SIGTERM\n{}", g.daemon_log());
    let queued = g.mail_queue(false);
    assert_eq!(queued.len(), 1, "the mail survives the restart: {queued:#?}");

    let smtp = Smtp::start(port);
    g.launch();
    let files = smtp.wait_messages(1, Duration::from_secs(20));
    assert_eq!(files.len(), 1);
    let mail = read_mail(&files[0]);
    assert!(mail.to.contains("alice@example.org"), "{mail:#?}");
    let link = link_in(&mail.text);
    let sent = poll(Duration::from_secs(10), "the mail marked sent", || g.mail_queue(true).into_iter().find(|m| m["template"] == "otp_enroll" && !m["sent_at"].is_null()));
    assert!(sent["attempts"].as_u64().unwrap_or(0) >= 2, "{sent}");
    assert!(g.mail_queue(false).is_empty(), "nothing left waiting");
    // The link still works after the restart.
    let page = open_page(&g, &link, "alice.jar");
    assert!(page.http.body.contains("<svg"));
}

#[test]
fn web_tokens_refused() {
    let mut g = Gate::start_with(&spool_config(""));
    g.add_user("alice", ALICE_PW);
    g.add_user("bob", BOB_PW);

    // Plain HTTP on the TLS port gets no HTTP response; TLS 1.1 is refused.
    let plain = curl(&format!("http://127.0.0.1:{}/healthz", g.web_port), &[]);
    assert_eq!(plain.status, 0, "{plain:#?}");
    assert_ne!(plain.curl_code, Some(0), "{plain:#?}");
    // SECLEVEL=0 lets OpenSSL offer TLS 1.1, so the refusal is the server's.
    let old = curl(&g.web_url("/healthz"), &["-k", "--tlsv1.0", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0"]);
    assert_eq!(old.status, 0, "{old:#?}");
    assert_eq!(old.curl_code, Some(35), "a TLS handshake failure: {}", old.stderr);
    assert!(!old.stderr.contains("no protocols available"), "the client did not even try: {}", old.stderr);
    for tls in [["--tlsv1.2", "--tls-max", "1.2"], ["--tlsv1.3", "--tls-max", "1.3"]] {
        let health = curl(&g.web_url("/healthz"), &["-k", tls[0], tls[1], tls[2]]);
        assert_eq!(health.status, 200, "{tls:?}: {health:#?}");
        assert_eq!(health.body.trim(), "ok");
        health.assert_security_headers();
    }
    let metrics = curl(&g.web_url("/metrics"), &["-k"]);
    assert_eq!(metrics.status, 200, "{metrics:#?}");
    assert!(metrics.body.contains("portcullis_users"), "{}", metrics.body);

    // A well-formed token nobody issued, and a malformed one.
    let random = "A".repeat(21) + "_" + &"b".repeat(20) + "9";
    assert_eq!(random.len(), 43);
    let r = curl(&g.web_url(&format!("/otp/enroll/{random}")), &["-k"]);
    assert_eq!(r.status, 404, "{r:#?}");
    assert!(r.body.contains("not valid"), "{}", r.body);
    r.assert_security_headers();
    let r = curl(&g.web_url("/otp/enroll/not%20a%20token"), &["-k"]);
    assert_eq!(r.status, 404, "{r:#?}");

    enable(&g, "alice", "totp");
    let link = spooled_link(&g, "alice", 0);
    let page = open_page(&g, &link, "alice.jar");
    page.http.assert_security_headers();
    let url = page.url.clone();
    let jar = page.jar.to_str().unwrap().to_owned();

    // CSRF: no field; a field but no cookie; a field that is not the cookie.
    let code = totp_at(&page.secret, unix_now());
    let r = curl(&url, &["-k", "-b", &jar, "--data-urlencode", &format!("code={code}")]);
    assert_eq!(r.status, 403, "{r:#?}");
    r.assert_security_headers();
    let r = curl(&url, &["-k", "--data-urlencode", &format!("csrf={}", page.csrf), "--data-urlencode", &format!("code={code}")]);
    assert_eq!(r.status, 403, "{r:#?}");
    let other = "Z".repeat(43);
    let r = curl(&url, &["-k", "-b", &jar, "--data-urlencode", &format!("csrf={other}"), "--data-urlencode", &format!("code={code}")]);
    assert_eq!(r.status, 403, "{r:#?}");
    assert!(g.events_of(Some("alice"), "mfa_enabled").is_empty(), "nothing was changed");

    // A wrong code: 422 with the tries left.
    let r = page.post(&wrong_totp(&page.secret));
    assert_eq!(r.status, 422, "{r:#?}");
    assert!(r.body.contains("4 tries left"), "{}", r.body);
    r.assert_security_headers();

    // A token of another purpose (same user, pending enrollment) is refused.
    let other_purpose = "Pw-reset_token".to_owned() + &"x".repeat(29);
    {
        use sha2::Digest;
        let hash: String = sha2::Sha256::digest(other_purpose.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let conn = rusqlite::Connection::open(g.db_path()).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let far = (unix_now() as i64 + 3600) * 1000;
        conn.execute(
            "INSERT INTO tokens (token_hash, purpose, user_id, data, created_at, expires_at) VALUES (?1, 'password_reset', (SELECT id FROM users WHERE username = 'alice'), '{}', ?2, ?3)",
            rusqlite::params![hash, far - 3_600_000, far],
        )
        .unwrap();
    }
    let wrong_purpose = g.web_url(&format!("/otp/enroll/{other_purpose}"));
    let r = curl(&wrong_purpose, &["-k", "-b", &jar]);
    assert_eq!(r.status, 404, "{r:#?}");
    assert!(r.body.contains("not valid"), "{}", r.body);
    let r = curl(&wrong_purpose, &["-k", "-b", &jar, "--data-urlencode", &format!("csrf={}", page.csrf), "--data-urlencode", &format!("code={}", totp_at(&page.secret, unix_now()))]);
    assert_eq!(r.status, 404, "{r:#?}");
    assert_eq!(g.mfa_status("alice")["enabled"], false);

    // A new link for bob burns his older one.
    enable(&g, "bob", "totp");
    let first_bob_link = spooled_link(&g, "bob", 0);
    enable(&g, "bob", "totp");
    let bob_link = spooled_link(&g, "bob", 1);
    assert_ne!(bob_link, first_bob_link);
    let r = curl(&g.local_link(&first_bob_link), &["-k"]);
    assert_eq!(r.status, 404, "a superseded link: {r:#?}");

    // Tokens are bound to their user: bob's link shows bob, and alice's
    // code does not confirm bob's secret.
    let bob_page = open_page(&g, &bob_link, "bob.jar");
    assert!(bob_page.http.body.contains("<strong>bob</strong>"), "{}", bob_page.http.body);
    assert_ne!(bob_page.secret, page.secret);
    let alice_code = totp_at(&page.secret, unix_now());
    let bob_codes: Vec<String> = (0..4).map(|i| totp_at(&bob_page.secret, unix_now() - 30 + i * 30)).collect();
    if !bob_codes.contains(&alice_code) {
        let r = bob_page.post(&alice_code);
        assert_eq!(r.status, 422, "{r:#?}");
    }

    // Alice confirms; her link is then used up.
    confirm_totp(&g, &page);
    assert_eq!(g.mfa_status("alice")["enabled"], true);
    assert_eq!(g.mfa_status("bob")["enabled"], false);
    let r = curl(&url, &["-k", "-b", &jar]);
    assert_eq!(r.status, 404, "{r:#?}");
    assert!(r.body.contains("not valid"), "{}", r.body);
    r.assert_security_headers();
    let r = page.post(&next_totp(&page.secret));
    assert_eq!(r.status, 404, "{r:#?}");
    // A second enrollment while one is on is refused (disable first).
    let again = g.cli(&["security", "mfa", "enable", "--method=totp", "--user=alice"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    assert_eq!(g.mfa_status("alice")["enabled"], true);

    // An expired link: the CLI issues it with a 2 s lifetime.
    g.add_user("carol", "Quartz-Meadow-Violin-77");
    let daemon_config = std::fs::read_to_string(&g.config).unwrap();
    g.cli_config = g.path("cli.hjson");
    std::fs::write(&g.cli_config, format!("{daemon_config}mfa: {{\n  link_ttl: 2s\n}}\n")).unwrap();
    enable(&g, "carol", "totp");
    let carol_link = spooled_link(&g, "carol", 0);
    let expires = g.events_of(Some("carol"), "mfa_enrollment_sent");
    assert_eq!(expires.len(), 1);
    std::thread::sleep(Duration::from_millis(2500));
    let r = curl(&g.local_link(&carol_link), &["-k"]);
    assert_eq!(r.status, 404, "expired: {r:#?}");
    assert!(r.body.contains("not valid"), "{}", r.body);
    assert_eq!(g.mfa_status("carol")["pending"], true);
}

#[test]
fn wrong_password_gets_the_same_code_prompt() {
    let g = Gate::start_with(&spool_config(""));
    g.add_user("alice", ALICE_PW);
    let e = enroll_totp_spool(&g, "alice");

    // Wrong password, right code: the code is asked all the same.
    let wrong_pw = g.ssh(&Ssh::kbd("alice", WRONG_PW).code(&next_totp(&e.secret)));
    assert_refused(&wrong_pw);
    assert_eq!(without_user(&wrong_pw.prompts, "alice"), two_prompts(), "{wrong_pw:#?}");
    let failed = g.wait_events(Some("alice"), "login_failed", |ev| !ev.is_empty());
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(detail(&failed[0], "reason"), "bad_password");
    assert_eq!(detail(&failed[0], "method"), "keyboard-interactive");
    assert!(otp_events(&g, "alice").is_empty(), "the code was not looked at: {:#?}", otp_events(&g, "alice"));

    // Right password, wrong code: the client sees the same.
    let wrong_code = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&wrong_totp(&e.secret)));
    assert_refused(&wrong_code);
    assert_eq!(wrong_code.prompts, wrong_pw.prompts);
    assert_eq!(wrong_code.stderr, wrong_pw.stderr);
    g.wait_events(Some("alice"), "otp_failed", |ev| !ev.is_empty());

    // Right password, right code: the same prompts, and in.
    let right = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&next_totp(&e.secret)));
    assert!(right.authenticated_exec(), "{right:#?}\n{}", g.daemon_log());
    assert_eq!(right.prompts, wrong_pw.prompts);
    assert_eq!(g.events_of(Some("alice"), "login_failed").len(), 1, "only the wrong password was a login_failed");
}

#[test]
fn wrong_code_notifies_the_user() {
    let g = Gate::start_with(&spool_config(""));
    g.add_user("alice", ALICE_PW);
    let e = enroll_totp_spool(&g, "alice");
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&wrong_totp(&e.secret)));
    assert_refused(&run);
    let failed = g.wait_events(Some("alice"), "otp_failed", |ev| !ev.is_empty());
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(detail(&failed[0], "reason"), "wrong_code");
    assert_eq!(s(&failed[0], "severity"), "medium");
    assert_eq!(s(&failed[0], "ip"), "127.0.0.1");
    assert!(g.events_of(Some("alice"), "login_success").is_empty());

    let notice = poll(Duration::from_secs(15), "a code_failed mail sent", || {
        g.mail_queue(true).into_iter().find(|m| m["template"] == "code_failed" && !m["sent_at"].is_null())
    });
    assert_eq!(s(&notice, "recipient"), "alice@example.org");
    let mail = poll(Duration::from_secs(10), "the notice in the spool", || {
        g.spooled_mail().iter().map(|p| read_mail(p)).find(|m| !m.text.contains("/otp/enroll/"))
    });
    assert!(mail.to.contains("alice@example.org"), "{mail:#?}");
    assert!(mail.text.contains("alice"), "{mail:#?}");
    assert!(!mail.text.contains(&wrong_totp(&e.secret)), "the code typed is not repeated: {mail:#?}");
}

/// With more tries per step allowed, five wrong codes in a row close the
/// code factor: even the right code is then refused.
#[test]
fn code_factor_closes_after_repeated_failures() {
    let g = Gate::start_with(&spool_config("mfa: {\n  tries_per_step: 10\n}\n"));
    g.add_user("alice", ALICE_PW);
    let e = enroll_totp_spool(&g, "alice");
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&wrong_totp(&e.secret)).prompts(5));
    assert_refused(&run);
    g.wait_events(Some("alice"), "otp_failed", |ev| ev.len() >= 5);
    let status = g.mfa_status("alice");
    assert!(status["code_factor_closed_until"].is_string(), "{status}");

    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&next_totp(&e.secret)));
    assert_refused(&run);
    let failed = g.wait_events(Some("alice"), "otp_failed", |ev| ev.len() >= 6);
    assert_eq!(detail(&failed[0], "reason"), "code_factor_closed", "{}", failed[0]);
    assert!(g.events_of(Some("alice"), "login_success").is_empty());
    // Backup codes still work (at ~50 bits they cannot be guessed), and
    // open the factor again.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).code(&e.backup[0]));
    assert!(run.authenticated_exec(), "{run:#?}");
    assert_eq!(g.mfa_status("alice")["backup_codes_left"], 9);
    assert!(g.mfa_status("alice")["code_factor_closed_until"].is_null());
}

#[test]
fn password_only_client_gets_the_code_in_the_terminal() {
    // Room for three wrong codes and the right one within one 30 s step.
    let g = Gate::start_with(&spool_config("mfa: {\n  tries_per_step: 10\n}\n"));
    g.add_user("alice", ALICE_PW);
    let e = enroll_totp_spool(&g, "alice");
    let code = next_totp(&e.secret);

    // A plain `password` client gets in with one factor; `exec` stays
    // refused as always.
    let run = g.ssh(&Ssh::kbd("alice", ALICE_PW).method("password"));
    assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    assert_eq!(run.prompts.len(), 1, "only the password was asked over SSH: {run:#?}");
    // The first factor is its own step; no login until the code passes.
    let started = g.wait_events(Some("alice"), "session_started", |ev| !ev.is_empty());
    assert_eq!(detail(&started[0], "stage"), "first_factor", "{}", started[0]);
    assert_eq!(detail(&started[0], "factors"), 1, "{}", started[0]);
    assert!(g.events_of(Some("alice"), "login_success").is_empty());

    // Interactively, the code is asked in the terminal before anything else;
    // three wrong codes end the session.
    let run = g.ssh_script(&Ssh::kbd("alice", ALICE_PW).method("password"), &[("Verification code: ", "000000\r"), ("Verification code: ", "000001\r"), ("Verification code: ", "000002\r")]);
    assert!(run.stdout.contains("The one-time code was not given"), "{run:#?}");
    assert!(!run.stdout.contains("Your choice: "), "no menu before the code: {run:#?}");
    let failed = g.wait_events(Some("alice"), "otp_failed", |ev| ev.len() >= 3);
    assert_eq!(detail(&failed[0], "stage"), "terminal", "{}", failed[0]);
    let ended = g.wait_events(Some("alice"), "session_ended", |ev| ev.len() >= 2);
    assert_eq!(detail(&ended[0], "reason"), "one-time code not given", "{}", ended[0]);

    // The right code opens the menus.
    let line = format!("{code}\r");
    let run = g.ssh_script(&Ssh::kbd("alice", ALICE_PW).method("password"), &[("Verification code: ", line.as_str()), ("Your choice: ", "q")]);
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", g.daemon_log());
    assert!(run.stdout.contains("Welcome, alice."), "{run:#?}");
    let ok = g.wait_events(Some("alice"), "otp_success", |ev| !ev.is_empty());
    assert_eq!(detail(&ok[0], "stage"), "terminal", "{}", ok[0]);
}

#[test]
fn group_policy_requires_a_second_factor() {
    let g = Gate::start_with(&spool_config("groups: {\n  sysops: {\n    require_level: 2\n  }\n}\n"));
    add_user_in(&g, "carol", ALICE_PW, "sysops");
    g.add_user("bob", BOB_PW);
    let status = g.mfa_status("carol");
    assert_eq!(status["required_level"], 2, "{status}");
    assert_eq!(status["enabled"], false, "{status}");
    assert_eq!(g.mfa_status("bob")["required_level"], 1);

    // The right password alone is not enough.
    let run = g.ssh(&Ssh::kbd("carol", ALICE_PW));
    assert_refused(&run);
    let failed = g.wait_events(Some("carol"), "login_failed", |ev| !ev.is_empty());
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(detail(&failed[0], "reason"), "second_factor_not_enrolled", "{}", failed[0]);
    assert!(g.events_of(Some("carol"), "login_success").is_empty());
    // Users outside the group are unaffected.
    assert!(g.ssh(&Ssh::kbd("bob", BOB_PW)).authenticated_exec());

    // Once carol enrolls, password and code let her in.
    let e = enroll_totp_spool(&g, "carol");
    let run = g.ssh(&Ssh::kbd("carol", ALICE_PW).code(&next_totp(&e.secret)));
    assert!(run.authenticated_exec(), "{run:#?}");
    let ok = g.events_of(Some("carol"), "login_success");
    assert_eq!(detail(&ok[0], "factors"), 2);
    // Turning the code off does not lift the group's requirement.
    g.cli_ok(&["security", "mfa", "disable", "--user=carol"]);
    let run = g.ssh(&Ssh::kbd("carol", ALICE_PW));
    assert_refused(&run);
}

/// Unknown users get the same prompts as known ones: after a wrong
/// password every account (and every unknown name) is asked for a code, so
/// nobody learns which names exist or have 2FA.
#[test]
fn unknown_user_gets_the_same_prompts_as_a_2fa_user() {
    let g = Gate::start_with(&spool_config(""));
    g.add_user("alice", ALICE_PW);
    let e = enroll_totp_spool(&g, "alice");
    let wrong = wrong_totp(&e.secret);
    let known = g.ssh(&Ssh::kbd("alice", WRONG_PW).code(&wrong));
    let unknown = g.ssh(&Ssh::kbd("mallory", WRONG_PW).code(&wrong));
    assert_refused(&known);
    assert_refused(&unknown);
    assert_eq!(without_user(&unknown.prompts, "mallory"), without_user(&known.prompts, "alice"));
    assert_eq!(unknown.stderr.replace("mallory", "USER"), known.stderr.replace("alice", "USER"));
}

/// Every authentication decision is an event (ARCHITECTURE.md), and failed
/// passwords count towards the per-address penalties, whatever the method.
#[test]
fn password_method_attempts_are_recorded_for_2fa_user() {
    let g = Gate::start_with(&spool_config(""));
    g.add_user("alice", ALICE_PW);
    enroll_totp_spool(&g, "alice");
    let run = g.ssh(&Ssh::kbd("alice", WRONG_PW).method("password"));
    assert_refused(&run);
    let failed = g.wait_events(Some("alice"), "login_failed", |ev| !ev.is_empty());
    assert_eq!(detail(&failed[0], "reason"), "bad_password", "{}", failed[0]);
    assert_eq!(detail(&failed[0], "method"), "password", "{}", failed[0]);
}
