//! Account takeover end to end, through real SSH. alice sits at the menu
//! from home (127.0.0.1, OpenSSH); an attacker at 127.0.0.7 fails against
//! her three times (under brute force's five) and then logs in with her
//! password from a client the gate has never seen: russh's, with its own
//! version string, so a new device. The built-in `account-takeover`
//! playbook locks the account (the intruder, who knows the password, is
//! kept out; alice still gets in from home), cuts both live sessions with
//! a message, makes the next login change the password, and mails alice. A password change the newcomer
//! makes right after such a login raises the incident to critical; the
//! owner obeying the forced reset from home does not.

use crate::harness::{config_with_playbooks, curl, detail, free_port, poll, read_mail, Gate, Smtp, Ssh, ALICE_PW, DEADLINE};
use russh::client;
use russh::ChannelMsg;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ATTACKER: &str = "127.0.0.7";
/// The attacker's client version string: a device alice never used.
const ATTACKER_CLIENT: &str = "SSH-2.0-Takeover_0.1";
const WRONG_PW: &str = "Wrong-Horse-Battery-0";
const NEW_PW: &str = "Maple-Quartz-Violin-77";
/// Every wait of this file: a loaded 2-core machine is slow.
const WAIT: Duration = Duration::from_secs(60);

/// What the russh client hears from the gate besides the channel.
struct Listener {
    goodbye: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Listener {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn disconnected(&mut self, reason: client::DisconnectReason<Self::Error>) -> Result<(), Self::Error> {
        match reason {
            client::DisconnectReason::ReceivedDisconnect(info) => {
                *self.goodbye.lock().unwrap() = Some(info.message);
                Ok(())
            }
            client::DisconnectReason::Error(e) => Err(e),
        }
    }
}

/// An interactive session of russh's client from 127.0.0.7: a PTY, the
/// shell, the screen as the gate wrote it.
struct Intruder {
    handle: client::Handle<Listener>,
    channel: russh::Channel<client::Msg>,
    screen: Vec<u8>,
    seen: usize,
    closed: bool,
    goodbye: Arc<Mutex<Option<String>>>,
    rt: tokio::runtime::Runtime,
}

impl Intruder {
    /// Logs in as `user` with `password` from `ATTACKER`; `Err` says why not
    /// (refused, or the connection failed).
    fn login(port: u16, user: &str, password: &str) -> Result<Intruder, String> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let goodbye = Arc::new(Mutex::new(None));
        let listener = Listener { goodbye: goodbye.clone() };
        let attempt = async {
            let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
            socket.bind(format!("{ATTACKER}:0").parse().unwrap()).map_err(|e| format!("bind {ATTACKER}: {e}"))?;
            let stream = socket.connect(format!("127.0.0.1:{port}").parse().unwrap()).await.map_err(|e| format!("connect: {e}"))?;
            let config = client::Config { client_id: russh::SshId::Standard(ATTACKER_CLIENT.into()), inactivity_timeout: None, ..Default::default() };
            let mut handle = client::connect_stream(Arc::new(config), stream, listener).await.map_err(|e| format!("handshake: {e}"))?;
            let auth = handle.authenticate_password(user, password).await.map_err(|e| format!("auth: {e}"))?;
            if !auth.success() {
                return Err(format!("refused: {auth:?}"));
            }
            // Logged in: from here the gate may cut the connection at any
            // moment (a playbook acts within milliseconds of the login).
            let session = async {
                let channel = handle.channel_open_session().await.map_err(|e| format!("channel: {e}"))?;
                channel.request_pty(true, "xterm", 80, 24, 0, 0, &[]).await.map_err(|e| format!("pty: {e}"))?;
                channel.request_shell(true).await.map_err(|e| format!("shell: {e}"))?;
                Ok::<_, String>(channel)
            }
            .await;
            Ok((handle, session))
        };
        let started = rt.block_on(async { tokio::time::timeout(DEADLINE, attempt).await });
        let (handle, session) = started.map_err(|_| format!("no login within {DEADLINE:?}"))??;
        match session {
            Ok(channel) => Ok(Intruder { handle, channel, screen: Vec::new(), seen: 0, closed: false, goodbye, rt }),
            Err(e) => {
                // Cut before the shell began: say so with the gate's message.
                poll(WAIT, "the gate's disconnect", || handle.is_closed().then_some(()));
                let said = goodbye.lock().unwrap().clone();
                Err(format!("cut after login ({e}): {}", said.unwrap_or_default()))
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen).into_owned()
    }

    /// Reads one message (or nothing before `until`).
    fn read(&mut self, until: Instant) {
        let left = until.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
        let channel = &mut self.channel;
        match self.rt.block_on(async { tokio::time::timeout(left, channel.wait()).await }) {
            Ok(Some(ChannelMsg::Data { data })) | Ok(Some(ChannelMsg::ExtendedData { data, .. })) => self.screen.extend_from_slice(&data),
            Ok(Some(ChannelMsg::Close)) | Ok(None) => self.closed = true,
            Ok(Some(_)) | Err(_) => {}
        }
    }

    /// Waits until the screen after the last match holds `text`.
    fn expect(&mut self, text: &str) {
        let until = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.screen[self.seen..].windows(text.len()).position(|w| w == text.as_bytes()) {
                self.seen += i + text.len();
                return;
            }
            assert!(!self.closed, "the session closed before {text:?} appeared; screen:\n{}", self.text());
            assert!(Instant::now() < until, "timed out waiting for {text:?}; screen:\n{}", self.text());
            self.read(until);
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.rt.block_on(self.channel.data_bytes(bytes.to_vec())).expect("writing to the channel");
    }

    /// Waits until the gate has closed the session's channel.
    fn wait_channel_closed(&mut self) {
        let until = Instant::now() + WAIT;
        while !self.closed {
            assert!(Instant::now() < until, "the gate kept the session open; screen:\n{}", self.text());
            self.read(until);
        }
    }

    /// Waits until the gate has closed the connection; returns its
    /// disconnect message.
    fn wait_disconnected(&mut self) -> String {
        self.wait_channel_closed();
        poll(WAIT, "the gate's disconnect", || self.handle.is_closed().then_some(()));
        self.goodbye.lock().unwrap().clone().unwrap_or_else(|| panic!("no disconnect message; screen:\n{}", self.text()))
    }
}

fn with_mail(config: &str, port: u16) -> String {
    format!("{config}email: {{\n  smtp: \"smtp://127.0.0.1:{port}\"\n  poll: 200ms\n  retry_base: 1s\n  retry_max: 2s\n}}\n")
}

fn json(g: &Gate, args: &[&str]) -> Value {
    let out = g.cli_ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("portcullis {args:?}: not JSON ({e}):\n{out}"))
}

fn incidents(g: &Gate) -> Vec<Value> {
    match json(g, &["security", "incidents", "list", "all", "--json"]) {
        Value::Array(v) => v,
        other => panic!("not an array: {other}"),
    }
}

fn wait_incident(g: &Gate, incident_type: &str) -> Value {
    poll(WAIT, &format!("a {incident_type} incident"), || incidents(g).into_iter().find(|i| i["incident_type"] == incident_type))
}

fn show(g: &Gate, id: i64) -> Value {
    json(g, &["security", "incidents", "show", &id.to_string(), "--json"])
}

fn user(g: &Gate, name: &str) -> Value {
    json(g, &["user", "show", name, "--json"])
}

/// The open sessions of `name`, newest first.
fn open_sessions(g: &Gate, name: &str) -> Vec<i64> {
    match json(g, &["security", "sessions", "list", name, "--json"]) {
        Value::Array(v) => v.iter().map(|s| s["id"].as_i64().expect("session id")).collect(),
        other => panic!("not an array: {other}"),
    }
}

/// The live count of findings of one rule, from `/metrics`.
fn findings_of(g: &Gate, rule: &str) -> u64 {
    let m = curl(&g.web_url("/metrics"), &["-k"]);
    assert_eq!(m.status, 200, "{m:?}");
    let prefix = format!("portcullis_detection_findings_total{{rule=\"{rule}\",");
    m.body.lines().filter(|l| l.starts_with(&prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
}

fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

/// The attack up to the intruder's login: three wrong passwords from
/// 127.0.0.7 (OpenSSH), then alice's password from russh's client. Returns
/// the intruder's session, the failures' and the login's event ids.
fn break_in(g: &Gate) -> (Result<Intruder, String>, Vec<i64>, i64) {
    let run = g.ssh(&Ssh::kbd("alice", WRONG_PW).prompts(3).bind(ATTACKER));
    assert!(!run.authenticated_exec(), "{run:#?}");
    let failed = g.wait_events(Some("alice"), "login_failed", |ev| ev.len() >= 3);
    assert_eq!(failed.len(), 3, "{failed:#?}");
    assert!(failed.iter().all(|e| e["ip"] == ATTACKER && detail(e, "reason") == "bad_password"), "{failed:#?}");
    let mut failures: Vec<i64> = failed.iter().map(id).collect();
    failures.sort_unstable();

    // Either a live session or one already cut (the playbook can act
    // before the intruder's shell starts); anything else fails here.
    let intruder = Intruder::login(g.port, "alice", ALICE_PW);
    if let Err(e) = &intruder {
        assert!(e.starts_with("cut after login"), "the attacker's login: {e}\n{}", g.daemon_log());
    }
    let success = g.wait_events(Some("alice"), "login_success", |ev| ev.iter().any(|e| e["ip"] == ATTACKER));
    let login = success.iter().find(|e| e["ip"] == ATTACKER).unwrap();
    assert_eq!(detail(login, "client_version"), ATTACKER_CLIENT, "{login:#}");
    // The gate saw a device it did not know for alice.
    let new = g.events_of(Some("alice"), "device_new");
    assert!(new.iter().any(|e| e["session_id"] == login["session_id"]), "{new:#?}");
    (intruder, failures, id(login))
}

#[test]
fn a_takeover_cuts_both_sessions_forces_a_reset_and_tells_the_owner() {
    let smtp = Smtp::start(free_port());
    let g = Gate::start_with(&with_mail(&config_with_playbooks(), smtp.port));
    g.add_user("alice", ALICE_PW);

    // 1. alice at home, at the menu.
    let mut home = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "xterm", 80, 24);
    home.within(4 * WAIT);
    home.expect("Your choice: ");
    let home_session = poll(WAIT, "alice's session", || open_sessions(&g, "alice").first().copied());

    // 2. The attack.
    let (intruder, failures, login) = break_in(&g);

    // 3. The incident, with its evidence.
    let incident = wait_incident(&g, "account_takeover");
    let n = id(&incident);
    assert_eq!((incident["severity"].as_str(), incident["status"].as_str()), (Some("high"), Some("open")), "{incident:#}");
    assert_eq!(incident["subject"]["name"], "alice", "{incident:#}");
    let shown = show(&g, n);
    let mut want: Vec<i64> = failures.clone();
    want.push(login);
    assert_eq!(shown["event_ids"], serde_json::json!(want), "the failures and the login: {shown:#}");
    let evidence = &shown["evidence"];
    let mut kept: Vec<(i64, String, String)> = evidence["events"].as_array().expect("evidence events").iter().map(|e| (id(e), e["event_type"].as_str().unwrap().to_owned(), e["ip"].as_str().unwrap().to_owned())).collect();
    kept.sort();
    let mut expected: Vec<(i64, String, String)> = failures.iter().map(|f| (*f, "login_failed".to_owned(), ATTACKER.to_owned())).collect();
    expected.push((login, "login_success".into(), ATTACKER.into()));
    assert_eq!(kept, expected, "{evidence:#}");
    let attacker_device = g.events_of(Some("alice"), "login_success").iter().find(|e| id(e) == login).unwrap()["device_id"].clone();
    assert!(evidence["devices"].as_array().expect("devices").iter().any(|d| d["id"] == attacker_device), "the new device is in the evidence: {evidence:#}");
    assert_eq!(evidence["rule"]["rule"], "account_takeover", "{evidence:#}");
    assert_eq!(evidence["rule"]["form"], "login", "{evidence:#}");

    // The playbook's actions: events and timeline entries.
    let actions = g.wait_events(Some("alice"), "playbook_action", |ev| ev.len() >= 4);
    let mut got: Vec<(String, String, String)> = actions
        .iter()
        .map(|a| (detail(a, "playbook").as_str().unwrap().to_owned(), detail(a, "action").as_str().unwrap().to_owned(), detail(a, "outcome").as_str().unwrap().to_owned()))
        .collect();
    got.sort();
    let pb = |a: &str| ("account-takeover".to_owned(), a.to_owned(), "done".to_owned());
    assert_eq!(got, [pb("force_password_reset"), pb("lock"), pb("notify"), pb("revoke_sessions")], "{actions:#?}");
    assert!(actions.iter().all(|a| detail(a, "incident_id") == n && detail(a, "dry_run") == false), "{actions:#?}");
    let revoke = actions.iter().find(|a| detail(a, "action") == "revoke_sessions").unwrap();
    assert_eq!(detail(revoke, "result"), "2 session(s) of alice ended", "{revoke:#}");
    let shown = show(&g, n);
    let mut on_timeline: Vec<String> = shown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "action" && e["actor"] == "playbook:account-takeover" && e["details"]["outcome"] == "done")
        .map(|e| e["details"]["action"].as_str().unwrap().to_owned())
        .collect();
    on_timeline.sort();
    assert_eq!(on_timeline, ["force_password_reset", "lock", "notify", "revoke_sessions"], "{shown:#}");

    // Both live sessions are cut, with the reason.
    let why = format!("Your session was ended: playbook account-takeover: incident #{n} (account_takeover)");
    home.expect(&why);
    let (code, screen) = home.finish();
    assert!(code.is_some(), "ssh ended by itself:\n{}", String::from_utf8_lossy(&screen));
    // The playbook may act before the intruder's shell has drawn anything
    // (the incident follows the login within milliseconds): the disconnect
    // always carries the reason, the screen does once the shell had begun.
    match intruder {
        Ok(mut intruder) => {
            assert_eq!(intruder.wait_disconnected(), why, "the disconnect message");
            if !intruder.screen.is_empty() {
                assert!(intruder.text().contains(&why), "the message on the intruder's screen:\n{}", intruder.text());
            }
        }
        Err(cut) => assert!(cut.ends_with(&format!("): {why}")), "{cut}"),
    }
    let revoked = g.wait_events(Some("alice"), "session_revoked", |ev| ev.len() >= 2);
    let intruder_session = g.events_of(Some("alice"), "login_success").iter().find(|e| id(e) == login).unwrap()["session_id"].as_i64().unwrap();
    let mut cut: Vec<i64> = revoked.iter().map(|e| e["session_id"].as_i64().unwrap()).collect();
    cut.sort_unstable();
    assert_eq!(cut, [home_session, intruder_session], "{revoked:#?}");
    assert!(revoked.iter().all(|e| detail(e, "incident_id") == n && detail(e, "actor") == "playbook:account-takeover"), "{revoked:#?}");
    assert!(open_sessions(&g, "alice").is_empty());
    // The takeover rule acted, not brute force (3 failures, its threshold is 5).
    assert_eq!(findings_of(&g, "brute_force_account"), 0);
    assert_eq!(incidents(&g).len(), 1, "{:#?}", incidents(&g));

    // The owner got two mails: the new device's notice and the playbook's.
    let files = smtp.wait_messages(2, WAIT);
    assert_eq!(files.len(), 2, "two mails");
    let mut mails: Vec<_> = files.iter().map(|f| read_mail(f)).collect();
    assert!(mails.iter().all(|m| m.to.contains("alice@example.org")), "{mails:#?}");
    mails.sort_by(|a, b| a.subject.cmp(&b.subject));
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["Sign-in to your account from a new device", "Unusual activity on your account"], "{mails:#?}");
    assert!(mails[0].text.contains(ATTACKER), "the notice names the address: {mails:#?}");
    let mail = &mails[1];
    assert!(mail.text.contains(incident["title"].as_str().unwrap()), "{mail:#?}");
    assert!(mail.text.contains("- lock: done\n- revoke_sessions: done\n- force_password_reset: done"), "{mail:#?}");

    // The intruder still knows the password, but the lock keeps them out:
    // their own login made 127.0.0.7 a "known" address of alice's, after
    // the attack began, so it does not open the lock.
    let refused = Intruder::login(g.port, "alice", ALICE_PW).err().expect("the intruder is locked out");
    assert!(refused.starts_with("refused"), "{refused}");
    let locked = g.wait_events(Some("alice"), "login_failed", |ev| ev.iter().any(|e| detail(e, "reason") == "locked"));
    let locked = locked.iter().find(|e| detail(e, "reason") == "locked").unwrap();
    assert_eq!((locked["ip"].as_str(), detail(locked, "lock")["known_address"].as_str()), (Some(ATTACKER), Some("since_attack")), "{locked:#}");
    assert_eq!(detail(locked, "lock")["incident_id"], n, "{locked:#}");

    // 4. The forced reset holds: the next login must change the password,
    // and giving up logs off with the flag still set.
    assert_eq!(user(&g, "alice")["must_reset_password"], true);
    let mut next = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "xterm", 80, 24);
    next.within(WAIT);
    next.expect("Your password must be changed before you go on.");
    next.expect("New password: ");
    next.send(b"\x1b");
    next.expect("The password was not changed. Logging you off.");
    let (code, screen) = next.finish();
    assert!(code.is_some(), "{}", String::from_utf8_lossy(&screen));
    assert!(!String::from_utf8_lossy(&screen).contains("Your choice: "), "no menu before the change");
    assert_eq!(user(&g, "alice")["must_reset_password"], true);

    let mut next = g.ssh_pty(&Ssh::kbd("alice", ALICE_PW), "xterm", 80, 24);
    next.within(WAIT);
    next.expect("Your password must be changed before you go on.");
    next.expect("New password: ");
    next.send(format!("{NEW_PW}\r").as_bytes());
    next.expect("Repeat it: ");
    next.send(format!("{NEW_PW}\r").as_bytes());
    next.expect("Your password has been changed.");
    next.expect("Welcome, alice.");
    next.expect("Your choice: ");
    next.send(b"q");
    let (code, screen) = next.finish();
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&screen));
    assert_eq!(user(&g, "alice")["must_reset_password"], false);
    // She got past the lock from her address known before the attack.
    let home_logins = g.events_of(Some("alice"), "login_success");
    let last = home_logins.iter().filter(|e| e["ip"] == "127.0.0.1").max_by_key(|e| id(e)).unwrap();
    assert_eq!(detail(last, "lock")["admitted"], "known_address", "{last:#}");
    let changed = g.wait_events(Some("alice"), "password_changed", |ev| !ev.is_empty());
    assert_eq!(changed[0]["ip"], "127.0.0.1", "{:#}", changed[0]);
    // The attacker's password is worth nothing now.
    let refused = Intruder::login(g.port, "alice", ALICE_PW).err().expect("the old password is refused");
    assert!(refused.starts_with("refused"), "{refused}");

    // The owner's change from home is not the takeover's "change" form:
    // once the detector has seen a later event (an injection-looking name,
    // a finding of its own), the takeover rule still has one finding and
    // the incident is still high.
    let run = g.ssh(&Ssh::kbd("\"x';DROP TABLE users;--\"", "whatever").bind("127.0.0.9"));
    assert_eq!(run.code, Some(255), "{run:#?}");
    poll(WAIT, "the injection finding", || (findings_of(&g, "injection_attempt") >= 1).then_some(()));
    assert_eq!(findings_of(&g, "account_takeover"), 1);
    let now = show(&g, n);
    assert_eq!(now["severity"], "high", "{now:#}");
    assert!(!now["timeline"].as_array().unwrap().iter().any(|e| e["kind"] == "attached"), "{now:#}");
}

/// The "change" form over real traffic. With no playbook the intruder is
/// not thrown out, and changes alice's password from the account menu at
/// once: a second, critical finding attaches to the open incident and
/// raises it.
#[test]
fn a_password_change_right_after_a_takeover_makes_it_critical() {
    let g = Gate::start();
    g.add_user("alice", ALICE_PW);
    // alice's own login from home: a known address and device.
    assert!(g.ssh(&Ssh::kbd("alice", ALICE_PW)).authenticated_exec());
    let (intruder, _, login) = break_in(&g);
    let mut intruder = intruder.expect("no playbook: the intruder stays in");
    intruder.expect("Your choice: ");
    let incident = wait_incident(&g, "account_takeover");
    let n = id(&incident);
    assert_eq!((incident["severity"].as_str(), incident["priority"].as_str()), (Some("high"), Some("P2")), "{incident:#}");

    intruder.send(b"a");
    intruder.expect("[C] Change your password");
    intruder.expect("Your choice: ");
    intruder.send(b"c");
    intruder.expect("Current password: ");
    intruder.send(format!("{ALICE_PW}\r").as_bytes());
    intruder.expect("New password: ");
    intruder.send(format!("{NEW_PW}\r").as_bytes());
    intruder.expect("Repeat it: ");
    intruder.send(format!("{NEW_PW}\r").as_bytes());
    intruder.expect("Your password has been changed.");
    let changed = g.wait_events(Some("alice"), "password_changed", |ev| !ev.is_empty());
    let change = &changed[0];
    assert_eq!(change["ip"], ATTACKER, "{change:#}");
    assert!(detail(change, "actor").as_str().is_some_and(|a| a.starts_with("user:")), "{change:#}");

    let raised = poll(WAIT, "the incident raised to critical", || incidents(&g).into_iter().find(|i| id(i) == n && i["severity"] == "critical"));
    assert_eq!(raised["priority"], "P1", "{raised:#}");
    assert_eq!(incidents(&g).len(), 1, "the change attaches to the open incident");
    assert_eq!(findings_of(&g, "account_takeover"), 2);
    let shown = show(&g, n);
    let attached: Vec<&Value> = shown["timeline"].as_array().unwrap().iter().filter(|e| e["kind"] == "attached").collect();
    assert_eq!(attached.len(), 1, "{shown:#}");
    assert_eq!(attached[0]["details"]["severity_raised"], serde_json::json!({ "from": "high", "to": "critical" }), "{shown:#}");
    let linked = shown["event_ids"].as_array().unwrap();
    assert!(linked.contains(&Value::from(id(change))) && linked.contains(&Value::from(login)), "the change and the risky login: {shown:#}");
    // No playbook: nothing was done about it.
    assert!(g.events_of(None, "playbook_action").is_empty());
    intruder.send(b"q");
    intruder.expect("Your choice: ");
    intruder.send(b"q");
    intruder.wait_channel_closed();
}
