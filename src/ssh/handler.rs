//! One SSH connection: the russh `Handler` and the task that watches it
//! (login grace time, the too-many-attempts disconnect, shutdown).

use super::quickack::QuickAck;
use super::sniff::{ClientId, Sniff};
use crate::core::admission::Ticket;
use crate::core::login::{Attempt, Authenticated, Credential, Outcome, Prompt, Rejection};
use crate::core::Core;
use crate::flow::{self, Ending, Idle, Terminal};
use crate::model::{Millis, Secret};
use russh::keys::ssh_key::HashAlg;
use russh::server::{Auth, ChannelOpenHandle, Config, Handle, Msg, Response, Session};
use russh::{Channel, ChannelId, Disconnect};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};

/// What the handler and the watching task share.
#[derive(Default)]
struct Shared {
    auth: Mutex<Option<Arc<Authenticated>>>,
    /// Why the session ended, when the gate ended it.
    ending: Mutex<Option<&'static str>>,
    /// Asks the watcher to disconnect: too many failed attempts.
    kick: Notify,
    /// Ends when the session is revoked (registered with `core` at login).
    revoked: Arc<crate::core::sessions::LiveSession>,
    /// The session channel, once the shell runs (a revocation writes its
    /// message there before the disconnect).
    channel: Mutex<Option<ChannelId>>,
    /// The unauthenticated slot, held until every required factor passed.
    ticket: Mutex<Option<Ticket>>,
    /// Every required factor has passed (a plain-password login of an
    /// account that needs a code passes its code in the terminal). Until
    /// then the login grace time still runs.
    complete: std::sync::atomic::AtomicBool,
    flow: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Shared {
    /// Every required factor has passed: the unauthenticated slot is
    /// released and the login grace time no longer applies.
    fn fully_authenticated(&self) {
        self.complete.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(mut t) = lock(&self.ticket).take() {
            t.authenticated();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) async fn connection(core: Arc<Core>, config: Arc<Config>, menus: flow::menu::SharedMenus, stream: TcpStream, peer: SocketAddr, ticket: Ticket, mut shutdown: watch::Receiver<bool>) {
    let connected_at = Millis::now();
    // A second handle on the socket: a session stuck in its key exchange
    // does not act on a disconnect request, so it is closed from here.
    let socket = {
        use std::os::fd::AsFd;
        stream.as_fd().try_clone_to_owned().map(std::net::TcpStream::from).ok()
    };
    let settings = core.settings();
    let grace = settings.ssh.login_grace_time;
    let client_id = ClientId::default();
    let shared = Arc::new(Shared { ticket: Mutex::new(Some(ticket)), ..Default::default() });
    let handler = Handler {
        core: core.clone(),
        peer,
        attempt: Attempt::new(peer.ip(), String::new(), "ssh", connected_at),
        client_id: client_id.clone(),
        shared: shared.clone(),
        channel: None,
        input: None,
        size: Arc::new(Mutex::new((80, 24))),
        idle: settings.ssh.idle_timeout,
        methods: config.methods.clone(),
        term_type: String::new(),
        menus,
        approval: None,
        approval_closing: false,
    };
    let started = tokio::time::timeout(grace, russh::server::run_stream(config, Sniff::new(QuickAck::new(stream), client_id.clone()), handler)).await;
    let running = match started {
        Ok(Ok(r)) => r,
        // No identification line within the grace time: counted against
        // the address like any connection that never logs in.
        Err(_) => {
            core.login_grace_expired(peer.ip(), &client_id.get(), Millis::now()).await;
            return;
        }
        // A broken one.
        Ok(Err(_)) => return,
    };
    let handle = running.handle();
    tokio::pin!(running);
    let grace_timer = tokio::time::sleep(grace.saturating_sub(Duration::from_millis((Millis::now().0 - connected_at.0).max(0) as u64)));
    tokio::pin!(grace_timer);
    let mut ending: Option<&'static str> = None;
    let mut grace_armed = true;
    let mut finished = false;
    loop {
        tokio::select! {
            _ = &mut running => {
                finished = true;
                break;
            }
            _ = &mut grace_timer, if grace_armed => {
                grace_armed = false;
                if shared.complete.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                ending = Some("login grace time exceeded");
                core.login_grace_expired(peer.ip(), &client_id.get(), Millis::now()).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), handle.disconnect(Disconnect::ByApplication, "login grace time exceeded".into(), String::new())).await;
                break;
            }
            why = shared.revoked.ended() => {
                ending = Some("revoked");
                // The flow stops first, so the message is the last thing on
                // the screen; the disconnect carries it too.
                let flow = lock(&shared.flow).take();
                if let Some(f) = flow {
                    f.abort();
                    let _ = f.await;
                }
                let message = crate::core::sessions::end_message(&why);
                let channel = *lock(&shared.channel);
                if let Some(channel) = channel {
                    let _ = tokio::time::timeout(Duration::from_secs(1), handle.data(channel, format!("\r\n\r\n{message}\r\n").into_bytes())).await;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), handle.disconnect(Disconnect::ByApplication, message, String::new())).await;
                break;
            }
            _ = shared.kick.notified() => {
                let _ = handle.disconnect(Disconnect::NoMoreAuthMethodsAvailable, "too many authentication failures".into(), String::new()).await;
                break;
            }
            _ = shutdown.changed() => {
                ending = Some("server shutting down");
                let _ = handle.disconnect(Disconnect::ByApplication, "the gate is shutting down; please come back later".into(), String::new()).await;
                break;
            }
        }
    }
    // Give the session a moment to flush its goodbye; one that does not
    // end (stalled mid-handshake) has its socket shut, which ends it and
    // frees its unauthenticated slot.
    if !finished && tokio::time::timeout(Duration::from_secs(2), &mut running).await.is_err() {
        if let Some(s) = &socket {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
    let flow = lock(&shared.flow).take();
    if let Some(f) = flow {
        f.abort();
        let _ = f.await;
    }
    let auth = lock(&shared.auth).take();
    if let Some(auth) = auth {
        core.forget_session(auth.session_id);
        // The gate's own reason (shutdown, grace time) wins over what the
        // flow saw when its input closed.
        let reason = ending.or_else(|| lock(&shared.ending).take()).unwrap_or("client disconnected");
        core.end_session(&auth, peer.ip(), reason, Millis::now()).await;
    }
}

struct Handler {
    core: Arc<Core>,
    peer: SocketAddr,
    attempt: Attempt,
    client_id: ClientId,
    shared: Arc<Shared>,
    channel: Option<ChannelId>,
    input: Option<mpsc::Sender<Vec<u8>>>,
    size: Arc<Mutex<(u32, u32)>>,
    idle: Duration,
    methods: russh::MethodSet,
    term_type: String,
    menus: flow::menu::SharedMenus,
    /// The hardware key approval this login waits for.
    approval: Option<crate::core::webauthn::ApprovalTicket>,
    /// The approval failed and its message was shown: the next answer ends it.
    approval_closing: bool,
}

impl Handler {
    /// One login step. `kbd`: the step came through keyboard-interactive,
    /// where a further prompt can be asked at once.
    async fn login(&mut self, credential: Credential<'_>, kbd: bool) -> Auth {
        if self.attempt.client_version.is_empty() {
            self.attempt.client_version = self.client_id.get();
        }
        if self.attempt.hassh.is_none() {
            // Read long before the first login step: the key exchange is done.
            self.attempt.hassh = self.client_id.hassh();
        }
        match self.core.submit(&mut self.attempt, credential, Millis::now()).await {
            Outcome::Accepted(auth) => {
                if auth.complete() {
                    self.shared.fully_authenticated();
                }
                self.core.watch_session(auth.session_id, self.shared.revoked.clone());
                *lock(&self.shared.auth) = Some(Arc::from(auth));
                Auth::Accept
            }
            Outcome::Need(Prompt::Code) if kbd => code_prompt(),
            // Only ever asked through keyboard-interactive (the code step).
            Outcome::Need(Prompt::CodeJustUsed) => code_prompt_again(),
            Outcome::Need(Prompt::RiskRefused) => risk_refused_prompt(),
            Outcome::Need(Prompt::KeyRequired) => closing_prompt(crate::core::login::KEY_REQUIRED),
            Outcome::Need(Prompt::KeyApproval) if kbd => Box::pin(self.key_round()).await,
            // Asked through keyboard-interactive, the one method that can
            // show a link and wait.
            Outcome::Need(Prompt::KeyApproval) => {
                let mut only = russh::MethodSet::empty();
                only.push(russh::MethodKind::KeyboardInteractive);
                Auth::Reject { proceed_with_methods: Some(only), partial_success: true }
            }
            Outcome::Rejected(Rejection::Risky) => {
                self.shared.kick.notify_one();
                Auth::reject()
            }
            // Password or key accepted as far as the client may learn: the
            // code is asked through keyboard-interactive.
            Outcome::Need(Prompt::Code) => {
                let mut only = russh::MethodSet::empty();
                only.push(russh::MethodKind::KeyboardInteractive);
                Auth::Reject { proceed_with_methods: Some(only), partial_success: true }
            }
            Outcome::Rejected(Rejection::TooManyAttempts) => {
                self.shared.kick.notify_one();
                Auth::reject()
            }
            // Refused because the address is held off: the connection's
            // further attempts would be refused too, so it goes now rather
            // than hold an unauthenticated slot (MaxStartups) for others.
            Outcome::Rejected(Rejection::Refused) if self.core.admission.check_attempt(self.peer.ip(), Millis::now()).is_err() => {
                self.shared.kick.notify_one();
                Auth::reject()
            }
            // Name the methods again: a bare reject makes russh drop the
            // method just used, and OpenSSH would stop after one password.
            Outcome::Rejected(_) => Auth::Reject { proceed_with_methods: Some(self.methods.clone()), partial_success: false },
        }
    }

    /// One keyboard-interactive round of a hardware key approval: the link,
    /// QR code and code first; then waits of up to `APPROVAL_SLICE`, each
    /// ended by a silent round (no prompt: OpenSSH answers at once, and
    /// the traffic keeps `ServerAliveInterval` clients connected) until
    /// the key is touched (the login goes on by itself), refused or
    /// expired (a last prompt says why; its answer ends the connection).
    async fn key_round(&mut self) -> Auth {
        use crate::core::login::{Credential as C, KeyFailure};
        use crate::core::webauthn::ApprovalState;
        if self.approval_closing {
            self.shared.kick.notify_one();
            return Auth::reject();
        }
        let Some(ticket) = self.approval.as_mut() else {
            return match self.core.start_login_approval(&mut self.attempt, Millis::now()) {
                Ok(t) => {
                    let prompt = approval_prompt(&t);
                    self.approval = Some(t);
                    prompt
                }
                Err(e) => {
                    tracing::error!(error = %e, "ssh: cannot open a hardware key approval");
                    let _ = self.login(C::KeyApproval { key_id: None, failure: Some(KeyFailure::Refused) }, true).await;
                    self.approval_closing = true;
                    closing_prompt("Hardware key approval is not available on this gate right now; the login was refused. Tell your sysop.")
                }
            };
        };
        match self.core.wait_key_approval(ticket, APPROVAL_SLICE).await {
            ApprovalState::Pending => Auth::Partial { name: Cow::Borrowed(""), instructions: Cow::Borrowed(""), prompts: Cow::Owned(Vec::new()) },
            ApprovalState::Approved { key_id, .. } => {
                self.approval = None;
                self.login(C::KeyApproval { key_id: Some(key_id), failure: None }, true).await
            }
            ApprovalState::Refused(why) => {
                self.approval = None;
                let _ = self.login(C::KeyApproval { key_id: None, failure: Some(KeyFailure::Refused) }, true).await;
                self.approval_closing = true;
                closing_prompt(&why)
            }
            ApprovalState::Expired => {
                self.approval = None;
                let _ = self.login(C::KeyApproval { key_id: None, failure: Some(KeyFailure::Expired) }, true).await;
                self.approval_closing = true;
                closing_prompt("The approval expired before a key was touched: the login was refused. Connect again for a new link.")
            }
        }
    }

    fn authenticated(&self) -> Option<Arc<Authenticated>> {
        lock(&self.shared.auth).clone()
    }
}

/// How long one keyboard-interactive reply is held while an approval
/// waits (below OpenSSH's ServerAliveInterval x CountMax of most setups).
const APPROVAL_SLICE: Duration = Duration::from_secs(15);

/// The first round of an approval: the link, its QR code and the code in
/// the instructions (shown by OpenSSH at its default log level), and the
/// code and link again in the prompt (always shown, also by clients that
/// hide instructions). Enter may be pressed at once: the answer is only
/// the signal to start waiting.
fn approval_prompt(t: &crate::core::webauthn::ApprovalTicket) -> Auth {
    let secs = ((t.expires.0 - Millis::now().0) / 1000).max(0);
    let qr = crate::core::webauthn::terminal_qr(&t.link).unwrap_or_default();
    let instructions = format!(
        "This login needs your hardware key. Open this link on a device with your key:\r\n\r\n  {link}\r\n\r\n{qr}\r\n\r\nThe page shows the code {code}: check that it is the same, then touch your key.\r\nThe link works once and expires in {m}:{s:02}.",
        link = t.link,
        code = t.code,
        m = secs / 60,
        s = secs % 60
    );
    let prompt = format!("Code {}: approve at {} then press Enter (the login goes on once the key is touched): ", t.code, t.link);
    Auth::Partial { name: Cow::Borrowed(""), instructions: Cow::Owned(instructions), prompts: Cow::Owned(vec![(Cow::Owned(prompt), true)]) }
}

/// A last round that says why the login ends; its answer ends it.
fn closing_prompt(why: &str) -> Auth {
    Auth::Partial {
        name: Cow::Borrowed(""),
        instructions: Cow::Owned(why.to_owned()),
        prompts: Cow::Owned(vec![(Cow::Owned(format!("{why} Press Enter to close: ")), true)]),
    }
}

fn code_prompt() -> Auth {
    Auth::Partial {
        name: Cow::Borrowed(""),
        instructions: Cow::Borrowed(""),
        prompts: Cow::Owned(vec![(Cow::Borrowed("Verification code: "), false)]),
    }
}

/// The code prompt again, saying why: OpenSSH shows the instructions
/// only at its default log level, so the prompt itself carries them too.
fn code_prompt_again() -> Auth {
    Auth::Partial {
        name: Cow::Borrowed(""),
        instructions: Cow::Borrowed(crate::core::login::CODE_JUST_USED),
        prompts: Cow::Owned(vec![(Cow::Owned(format!("{} Verification code: ", crate::core::login::CODE_JUST_USED)), false)]),
    }
}

/// The refusal of a risky login, as keyboard-interactive can show it: in
/// the instructions and (for clients that show only prompts, as OpenSSH
/// below its default log level) in the one prompt, whose answer ends the
/// connection.
fn risk_refused_prompt() -> Auth {
    Auth::Partial {
        name: Cow::Borrowed(""),
        instructions: Cow::Borrowed(crate::core::login::RISK_REFUSED),
        prompts: Cow::Owned(vec![(Cow::Owned(format!("{} Press Enter to close: ", crate::core::login::RISK_REFUSED)), true)]),
    }
}

/// A client that does not know its size (0) gets the classic 80x24.
fn screen_size(cols: u32, rows: u32) -> (u32, u32) {
    let pick = |v: u32, default: u32| if v == 0 { default } else { v.min(1000) };
    (pick(cols, 80), pick(rows, 24))
}

/// CP437 for terminals that announce themselves as ANSI-BBS style
/// (SyncTERM, NetRunner...), UTF-8 for everything else.
fn encoding_of(term_type: &str) -> u8 {
    let t = term_type.to_ascii_lowercase();
    if t == "ansi" || t.contains("ansi-bbs") || t.contains("pcansi") || t.contains("syncterm") || t.contains("cp437") {
        0
    } else {
        1
    }
}

/// The flow's view of an SSH channel.
struct SshTerminal {
    handle: Handle,
    channel: ChannelId,
    input: mpsc::Receiver<Vec<u8>>,
    size: Arc<Mutex<(u32, u32)>>,
    /// The user types CP437 (decoded by the gate's prompts only).
    cp437: bool,
    shared: Arc<Shared>,
}

impl Terminal for SshTerminal {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.handle
            .data(self.channel, bytes.to_vec())
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "channel closed"))
    }
    async fn read(&mut self, idle: Duration) -> Result<Option<Vec<u8>>, Idle> {
        tokio::time::timeout(idle, self.input.recv()).await.map_err(|_| Idle)
    }
    fn input_is_cp437(&self) -> bool {
        self.cp437
    }
    fn fully_authenticated(&mut self) {
        self.shared.fully_authenticated();
    }
    fn size(&self) -> (u32, u32) {
        *lock(&self.size)
    }
}

impl russh::server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let secret = Secret::new(password.to_owned());
        Ok(self.login(Credential::Password { username: user, password: &secret, method: "password" }, false).await)
    }

    async fn auth_publickey_offered(&mut self, user: &str, offer: russh::server::PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        // Only keys that can succeed are worth a signature. An address that
        // is held off gets nothing.
        if self.core.admission.check_attempt(self.peer.ip(), Millis::now()).is_err() {
            return Ok(Auth::reject());
        }
        let fingerprint = offer.public_key.fingerprint(HashAlg::Sha256).to_string();
        Ok(if self.core.key_is_registered(user, &fingerprint) { Auth::Accept } else { Auth::reject() })
    }

    async fn auth_publickey(&mut self, user: &str, key: russh::server::VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        // russh calls this only after verifying the signature.
        let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        Ok(self.login(Credential::PublicKey { username: user, fingerprint: &fingerprint }, false).await)
    }

    async fn auth_keyboard_interactive<'a>(&'a mut self, user: &str, _submethods: &str, response: Option<Response<'a>>) -> Result<Auth, Self::Error> {
        if self.attempt.awaiting_key() || self.approval_closing {
            // The answers mean nothing here: the key decides.
            drop(response);
            return Ok(self.key_round().await);
        }
        let awaiting_code = self.attempt.awaiting_code();
        let Some(response) = response else {
            if awaiting_code {
                return Ok(code_prompt());
            }
            return Ok(Auth::Partial {
                name: Cow::Borrowed(""),
                instructions: Cow::Borrowed(""),
                prompts: Cow::Owned(vec![(Cow::Borrowed("Password: "), false)]),
            });
        };
        let answers: Vec<Secret<String>> = response.map(|b| Secret::new(String::from_utf8_lossy(&b).into_owned())).collect();
        // One prompt, one answer; anything else is a failed attempt with an
        // empty answer (undecodable answers are dropped by russh).
        let empty = Secret::new(String::new());
        let answer = if answers.len() == 1 { &answers[0] } else { &empty };
        let credential = if awaiting_code {
            Credential::Code { code: answer }
        } else {
            Credential::Password { username: user, password: answer, method: "keyboard-interactive" }
        };
        Ok(self.login(credential, true).await)
    }

    async fn channel_open_session(&mut self, channel: Channel<Msg>, reply: ChannelOpenHandle, _session: &mut Session) -> Result<(), Self::Error> {
        // One session channel per connection. The `Channel` itself is not
        // kept: input arrives through `data` below.
        if self.authenticated().is_some() && self.channel.is_none() {
            self.channel = Some(channel.id());
            reply.accept().await;
        } else {
            reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited).await;
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(&mut self, _c: Channel<Msg>, _h: &str, _p: u32, _oh: &str, _op: u32, reply: ChannelOpenHandle, _s: &mut Session) -> Result<(), Self::Error> {
        reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited).await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(&mut self, channel: ChannelId, term: &str, cols: u32, rows: u32, _pw: u32, _ph: u32, _modes: &[(russh::Pty, u32)], session: &mut Session) -> Result<(), Self::Error> {
        *lock(&self.size) = screen_size(cols, rows);
        // Attacker-supplied: keep a short, printable form.
        self.term_type = term.chars().filter(|c| c.is_ascii_graphic()).take(32).collect::<String>().to_ascii_lowercase();
        session.channel_success(channel)?;
        Ok(())
    }

    async fn window_change_request(&mut self, _channel: ChannelId, cols: u32, rows: u32, _pw: u32, _ph: u32, _session: &mut Session) -> Result<(), Self::Error> {
        *lock(&self.size) = screen_size(cols, rows);
        Ok(())
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        let Some(auth) = self.authenticated() else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        if self.input.is_some() || self.channel != Some(channel) {
            session.channel_failure(channel)?;
            return Ok(());
        }
        session.channel_success(channel)?;
        *lock(&self.shared.channel) = Some(channel);
        let (tx, rx) = mpsc::channel(64);
        self.input = Some(tx);
        let handle = session.handle();
        let encoding = encoding_of(&self.term_type);
        let mut term = SshTerminal { handle: handle.clone(), channel, input: rx, size: self.size.clone(), cp437: encoding == 0, shared: self.shared.clone() };
        let art_dir = self.core.settings().art_dir.clone();
        let idle = self.idle;
        let shared = self.shared.clone();
        let core = self.core.clone();
        let ip = self.peer.ip();
        let menus = self.menus.read().unwrap_or_else(|p| p.into_inner()).clone();
        let term_type = self.term_type.clone();
        let task = tokio::spawn(async move {
            let size = term.size();
            let mut session = flow::engine::Session {
                core: &core,
                auth: (*auth).clone(),
                ip,
                art_dir: art_dir.as_deref(),
                idle,
                menus: &menus,
                terminal_type: term_type,
                encoding,
                size,
            };
            let ending = flow::engine::run(&mut term, &mut session).await.unwrap_or(Ending::Disconnected);
            *lock(&shared.ending) = Some(ending.reason());
            let code = if ending == Ending::LoggedOff { 0 } else { 1 };
            let _ = handle.exit_status_request(channel, code).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        *lock(&self.shared.flow) = Some(task);
        Ok(())
    }

    async fn exec_request(&mut self, channel: ChannelId, _data: &[u8], session: &mut Session) -> Result<(), Self::Error> {
        // The gate offers an interactive session; commands are refused
        // plainly rather than silently.
        session.channel_success(channel)?;
        session.extended_data(channel, 1, b"portcullis: this gate offers interactive sessions only\r\n".to_vec())?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)?;
        *lock(&self.shared.ending) = Some("command refused");
        Ok(())
    }

    async fn subsystem_request(&mut self, channel: ChannelId, _name: &str, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn x11_request(&mut self, channel: ChannelId, _single: bool, _proto: &str, _cookie: &str, _screen: u32, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn env_request(&mut self, channel: ChannelId, _name: &str, _value: &str, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn agent_request(&mut self, _channel: ChannelId, _session: &mut Session) -> Result<bool, Self::Error> {
        Ok(false)
    }

    async fn tcpip_forward(&mut self, _address: &str, _port: &mut u32, _session: &mut Session) -> Result<bool, Self::Error> {
        Ok(false)
    }

    async fn data(&mut self, channel: ChannelId, data: &[u8], _session: &mut Session) -> Result<(), Self::Error> {
        if self.channel == Some(channel) {
            if let Some(tx) = &self.input {
                // Never block the session loop on a slow flow: input beyond
                // 64 queued chunks is dropped.
                let _ = tx.try_send(data.to_vec());
            }
        }
        Ok(())
    }

    async fn channel_eof(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        if self.channel == Some(channel) {
            self.input = None;
        }
        Ok(())
    }
}
