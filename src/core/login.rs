//! The login state machine. A front end opens an `Attempt` per connection
//! and submits each credential; the answer is `Accepted`, `Need` (another
//! factor, from a later issue) or `Rejected`. A failed factor is a step of
//! the machine, not an error. Every decision is an event, and the events of
//! a success are committed before `Accepted` is returned.

use super::admission::Refusal;
use super::devices::{DeviceIdentity, Hassh};
use super::password::{self, Verify};
use super::mfa::CodeVerdict;
use super::risk::{Decision, LoginRisk};
use super::Core;
use crate::model::{valid_username, Event, EventType, Millis, Secret, Severity, User};
use crate::store::devices::{Identity, SeenDevice};
use crate::store::sessions::NewSession;
use std::net::IpAddr;

/// What one connection has done so far.
pub struct Attempt {
    pub ip: IpAddr,
    /// The client's SSH version string (attacker-supplied).
    pub client_version: String,
    /// The HASSH of the client's first KEXINIT (`None`: not read).
    pub hassh: Option<Hassh>,
    pub protocol: &'static str,
    pub connected_at: Millis,
    pub failures: u32,
    /// The fingerprint of the public key that authenticated, if one did.
    key_fingerprint: Option<String>,
    /// A first factor was submitted for a user who needs a code; the code
    /// is asked whether or not the first factor was right, so the answer
    /// gives no hint.
    pending: Option<Pending>,
    /// The account's lock and what it meant for this login (refused, or
    /// admitted from the owner's known address), for its events.
    lock: Option<serde_json::Value>,
    /// The risk score of this login, once its first factor was right.
    risk: Option<LoginRisk>,
    /// The factor level this login must reach (its score included), set
    /// with the first factor.
    level: Option<u8>,
    /// Refused for its risk over keyboard-interactive: the refusal was
    /// shown as a prompt; its answer ends the connection.
    risk_refused: bool,
    /// The id of the last failure's event, when it was waited for.
    failure_event: Option<i64>,
    /// The pending factor is a hardware key's approval, not a code.
    awaiting_key: bool,
    /// The code is asked only to let the user register a key
    /// (`webauthn.enroll_grace`).
    key_enrollment_only: bool,
    /// A key's approval of this device still stands (until then): no touch.
    key_trust: Option<Millis>,
    /// The short code of this login's key approval (both screens show it;
    /// `webauthn_used` and `login_success` record it, tying them together).
    approval_code: Option<String>,
}

struct Pending {
    /// `None` when the first factor failed (already recorded and counted):
    /// the code prompt is then only there so it says nothing.
    user: Option<User>,
    method: &'static str,
}

pub enum Credential<'a> {
    /// A one-time code (TOTP, HOTP or backup code) after a first factor.
    Code { code: &'a Secret<String> },
    /// `method` names how it was asked: "password" or "keyboard-interactive".
    Password { username: &'a str, password: &'a Secret<String>, method: &'static str },
    /// A public key whose signature the SSH layer has verified.
    PublicKey { username: &'a str, fingerprint: &'a str },
    /// The login's hardware key approval was decided (`Core::start_login_approval`):
    /// approved by key `key_id`, or not (`None`: refused or expired, with why).
    KeyApproval { key_id: Option<i64>, failure: Option<KeyFailure> },
}

/// Why a login's hardware key approval did not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFailure {
    Expired,
    Refused,
}

impl Credential<'_> {
    fn username(&self) -> &str {
        match self {
            Credential::Password { username, .. } | Credential::PublicKey { username, .. } => username,
            Credential::Code { .. } | Credential::KeyApproval { .. } => "",
        }
    }
    fn method(&self) -> &'static str {
        match self {
            Credential::Password { method, .. } => method,
            Credential::PublicKey { .. } => "publickey",
            Credential::Code { .. } => "code",
            Credential::KeyApproval { .. } => "webauthn",
        }
    }
}

/// A login that passed every required factor.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: User,
    pub session_id: i64,
    pub device_id: i64,
    pub factors: u8,
    /// The factor level the user must reach, decided at login; below it
    /// the session runs nothing but the code prompt.
    pub required_level: u8,
    /// The previous login, for the welcome screen.
    pub previous_login: Option<(Millis, String)>,
    /// Required at level 3 with no hardware key yet, let in with password
    /// and code under `webauthn.enroll_grace`: the session only registers
    /// a key.
    pub key_enrollment_only: bool,
    /// The login's risk score and its factors (`None`: scoring is off).
    pub risk: Option<LoginRisk>,
}

impl Authenticated {
    /// Every required factor has passed.
    pub fn complete(&self) -> bool {
        self.factors >= self.required_level
    }

    /// The login's risk score (ACS `RSn`); 0 with scoring off.
    pub fn risk_score(&self) -> u8 {
        self.risk.as_ref().map_or(0, |r| r.score)
    }
}

#[derive(Debug)]
pub enum Outcome {
    Accepted(Box<Authenticated>),
    /// Ask for another factor.
    Need(Prompt),
    Rejected(Rejection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// A one-time code or a backup code.
    Code,
    /// Again, after the code that confirmed enrollment moments ago was
    /// typed (refused: each code works once): the prompt says why.
    CodeJustUsed,
    /// Keyboard-interactive only: the login is refused for its risk
    /// (`RISK_REFUSED`); whatever is answered ends the connection.
    RiskRefused,
    /// Keyboard-interactive only: the account must use a hardware key and
    /// has none (`KEY_REQUIRED`); whatever is answered ends the connection.
    KeyRequired,
    /// A hardware key's approval (keyboard-interactive: the SSH layer
    /// opens it with `Core::start_login_approval` and waits).
    KeyApproval,
}

/// What a client refused for its risk score reads (keyboard-interactive:
/// the only method that can carry text to OpenSSH). Shown only after a
/// right first factor, as a risk refusal is; the owner is told as well
/// (the `risky_login` incident's playbook mails them).
pub const RISK_REFUSED: &str = "This login was refused: it looks too risky (new device or place, recent failures). Your sysop has been told; log in from a device or place you have used before, or ask them.";

/// What a user whose policy requires a hardware key, and who has none, is
/// told after a right first factor (keyboard-interactive).
pub const KEY_REQUIRED: &str = "This account must log in with a hardware key and has none registered: ask your sysop for a link to register one (portcullis security webauthn enroll).";

/// What the user is told when the code just used to enroll is typed again
/// (only ever after a right first factor).
pub const CODE_JUST_USED: &str = "That code was just used to set up two-factor login and cannot be used again; wait for the next code.";

/// The answer to a code typed in the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeAnswer {
    Accepted,
    Refused,
    /// The code that confirmed enrollment moments ago: wait for the next.
    JustUsed,
}

impl CodeAnswer {
    /// What the terminal tells the user after a refusal.
    pub fn message(self) -> &'static str {
        match self {
            CodeAnswer::Accepted => "Thank you.",
            CodeAnswer::Refused => "That code was not accepted.",
            CodeAnswer::JustUsed => CODE_JUST_USED,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Wrong username or password, or a locked account: the client is
    /// told nothing more. The event log has the real reason.
    Denied,
    /// Refused for its risk score (the first factor was right): the
    /// connection ends.
    Risky,
    /// The address is held off or the hash pool is full: refused without
    /// a hash.
    Refused,
    /// This connection has used up its attempts: disconnect.
    TooManyAttempts,
}

/// Why a login failed, as the event log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    UnknownUser,
    BadPassword,
    UnknownKey,
    Locked,
    Penalized,
    Busy,
    InputTooLarge,
    EventLogUnavailable,
    WrongCode,
    CodeReplayed,
    CodeThrottled,
    SecondFactorNotEnrolled,
    HardwareKeyRequired,
    KeyApprovalExpired,
    KeyApprovalRefused,
    NoFirstFactor,
    RiskDenied,
    RiskStepUpUnavailable,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownUser => "unknown_user",
            Reason::BadPassword => "bad_password",
            Reason::UnknownKey => "unknown_key",
            Reason::Locked => "locked",
            Reason::Penalized => "address_penalized",
            Reason::Busy => "server_busy",
            Reason::InputTooLarge => "input_too_large",
            Reason::EventLogUnavailable => "event_log_unavailable",
            Reason::WrongCode => "wrong_code",
            Reason::CodeReplayed => "code_replayed",
            Reason::CodeThrottled => "code_factor_closed",
            Reason::SecondFactorNotEnrolled => "second_factor_not_enrolled",
            Reason::HardwareKeyRequired => "hardware_key_required",
            Reason::KeyApprovalExpired => "key_approval_expired",
            Reason::KeyApprovalRefused => "key_approval_refused",
            Reason::NoFirstFactor => "code_without_first_factor",
            Reason::RiskDenied => "risk_score_too_high",
            Reason::RiskStepUpUnavailable => "risk_step_up_unavailable",
        }
    }
    fn counts_as_failure(self) -> bool {
        !matches!(self, Reason::Busy | Reason::EventLogUnavailable | Reason::Penalized)
    }
}

/// Over keyboard-interactive every failed first factor — wrong password,
/// unknown name, locked account, an account whose required factor cannot
/// be met, even the last allowed attempt — is followed by the code prompt
/// and refused after it, so the prompts tell nothing about the account or
/// the password. (The failure is already recorded and counted.)
fn hide_behind_code_prompt(attempt: &mut Attempt, kbd: bool, method: &'static str, outcome: Outcome) -> Outcome {
    if kbd && matches!(outcome, Outcome::Rejected(Rejection::Denied | Rejection::TooManyAttempts)) {
        attempt.pending = Some(Pending { user: None, method });
        return Outcome::Need(Prompt::Code);
    }
    outcome
}

enum SecondFactor {
    NotNeeded,
    Code,
    Key,
    /// Level 3 without a key, under `webauthn.enroll_grace`: the code, then
    /// only the key's registration.
    CodeToEnrollKey,
    Unavailable(Reason),
}

impl Attempt {
    pub fn new(ip: IpAddr, client_version: String, protocol: &'static str, connected_at: Millis) -> Attempt {
        Attempt {
            ip,
            client_version,
            hassh: None,
            protocol,
            connected_at,
            failures: 0,
            key_fingerprint: None,
            pending: None,
            lock: None,
            risk: None,
            level: None,
            risk_refused: false,
            failure_event: None,
            awaiting_key: false,
            key_enrollment_only: false,
            key_trust: None,
            approval_code: None,
        }
    }

    /// The device this attempt comes from, as far as it is known now.
    pub fn device(&self) -> DeviceIdentity<'_> {
        DeviceIdentity { client_version: &self.client_version, hassh: self.hassh.as_ref(), key_fingerprint: self.key_fingerprint.as_deref() }
    }

    /// Whether the next answer expected is a code.
    pub fn awaiting_code(&self) -> bool {
        self.pending.is_some() && !self.awaiting_key
    }

    /// Whether the login waits for a hardware key's approval.
    pub fn awaiting_key(&self) -> bool {
        self.pending.is_some() && self.awaiting_key
    }

    /// The risk score of this login so far (0 before its first factor
    /// was right, or with scoring off).
    pub fn risk_score(&self) -> u8 {
        self.risk.as_ref().map_or(0, |r| r.score)
    }
}

/// `e` with the login's score, and with `details.risk` (the score, the
/// factors and their weights, the decision) when `details`.
fn with_risk(mut e: Event, risk: Option<&LoginRisk>, details: bool) -> Event {
    if let Some(r) = risk {
        e.risk_score = r.score;
        if details {
            e = e.detail("risk", r.details());
        }
    }
    e
}

impl Core {
    /// Records that a connection was turned away before authentication: at
    /// most one event per address every few seconds, with the count it
    /// stands for, so a flood costs neither disk nor accept-loop time.
    pub async fn connection_refused(&self, ip: IpAddr, refusal: Refusal, now: Millis) {
        let Some(count) = self.admission.refusal_to_record(ip, now) else { return };
        let mut e = Event::new(EventType::ConnectionRefused, Severity::Low, format!("connection refused: {}", refusal.reason()), now)
            .ip(Some(&ip.to_string()))
            .detail("reason", refusal.reason())
            .detail("refusals", count);
        if let Refusal::Penalized(until) = refusal {
            e = e.detail("held_until", until.rfc3339());
        }
        self.record(e).await;
    }

    /// A connection reached the login grace time without passing every
    /// required factor: it counts against its address like a failed
    /// attempt (OpenSSH 9.8's `PerSourcePenalties` does the same), so idle
    /// connections cannot hold slots for free.
    pub async fn login_grace_expired(&self, ip: IpAddr, client_version: &str, now: Millis) {
        let penalty = self.admission.record_failure(ip, now);
        let e = Event::new(EventType::LoginFailed, Severity::Low, "connection reached the login grace time without logging in", now)
            .ip(Some(&ip.to_string()))
            .detail("reason", "login_grace_time_exceeded")
            .detail("protocol", "ssh")
            .detail("client_version", client_version.chars().take(200).collect::<String>());
        self.record(e).await;
        if let Some(until) = penalty {
            self.record_penalty_of(ip, until, now).await;
        }
    }

    /// One authentication step.
    pub async fn submit(&self, attempt: &mut Attempt, credential: Credential<'_>, now: Millis) -> Outcome {
        if let Credential::Code { code } = credential {
            return self.submit_code(attempt, code, now).await;
        }
        if let Credential::KeyApproval { key_id, failure } = credential {
            return self.submit_key_approval(attempt, key_id, failure, now).await;
        }
        attempt.awaiting_key = false;
        attempt.key_enrollment_only = false;
        attempt.key_trust = None;
        attempt.approval_code = None;
        attempt.pending = None;
        attempt.key_fingerprint = None;
        attempt.lock = None;
        attempt.risk = None;
        attempt.level = None;
        attempt.risk_refused = false;
        let username = credential.username();
        // One first-factor check per address at a time, held until its
        // failure (if any) is counted: parallel connections from one
        // address cannot run hashes past the start of its penalty.
        let _turn = self.admission.turn(attempt.ip).await;
        if let Err(Refusal::Penalized(until)) = self.admission.check_attempt(attempt.ip, now) {
            return self.fail(attempt, username, credential.method(), Reason::Penalized, None, now, Some(until)).await;
        }
        let user = if valid_username(username) {
            match self.store.user_by_name(username) {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!(error = %e, "reading a user during login");
                    return self.fail(attempt, username, credential.method(), Reason::Busy, None, now, None).await;
                }
            }
        } else {
            None
        };
        let verdict = match credential {
            Credential::Password { password, .. } => self.check_password(user.as_ref(), password, now).await,
            Credential::PublicKey { fingerprint, .. } => {
                attempt.key_fingerprint = Some(fingerprint.to_owned());
                self.check_key(user.as_ref(), fingerprint, now)
            }
            Credential::Code { .. } | Credential::KeyApproval { .. } => Err(Reason::NoFirstFactor),
        };
        let method = credential.method();
        let reason = match (verdict, &user) {
            (Err(reason), _) => Some(reason),
            // Only a right first factor learns about the lock: the time to
            // the answer is the same either way.
            (Ok(()), Some(u)) => match self.lock_verdict(u, attempt.ip, &attempt.device(), now) {
                Ok(super::locks::LockVerdict::NotLocked) => None,
                Ok(super::locks::LockVerdict::Admitted(details)) => {
                    attempt.lock = Some(details);
                    None
                }
                Ok(super::locks::LockVerdict::Refused(details)) => {
                    attempt.lock = Some(details);
                    Some(Reason::Locked)
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading an account's lock during login");
                    Some(Reason::Busy)
                }
            },
            (Ok(()), None) => Some(Reason::UnknownUser),
        };
        if let (Some(Reason::BadPassword | Reason::UnknownUser), Credential::Password { password, .. }) = (reason, &credential) {
            // The spraying rule's keyed tag of this failed password, queued
            // for the detector without waiting (and before the event, which
            // it is paired with).
            if self.settings().detection.password_spraying.enabled {
                self.spray_tags.offer(password.expose().as_bytes(), now, attempt.ip.to_string(), username.chars().take(64).collect());
            }
        }
        let kbd = method == "keyboard-interactive";
        let user = match (reason, user) {
            (Some(r), user) => {
                let outcome = self.fail(attempt, username, method, r, user.as_ref(), now, None).await;
                return hide_behind_code_prompt(attempt, kbd, method, outcome);
            }
            (None, Some(u)) => u,
            (None, None) => return self.fail(attempt, username, method, Reason::UnknownUser, None, now, None).await,
        };
        // The device is known now: the login's risk score, and the level
        // it must reach with it.
        let scored = self.login_level(&user).and_then(|base| Ok((base, self.assess_login(&user, attempt.ip, &attempt.device(), attempt.failures, base, now)?)));
        let (base, risk) = match scored {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "scoring a login's risk");
                return self.fail(attempt, username, method, Reason::Busy, Some(&user), now, None).await;
            }
        };
        attempt.level = Some(risk.as_ref().map_or(base, |r| r.level));
        attempt.risk = risk;
        // A device a key approved lately (`webauthn.trust_device_for`):
        // the approval stands in for the key the policy asks, the other
        // factors are asked. Not for a key the risk score asks: a risky
        // login from that device touches the key again.
        let stepped_up = attempt.risk.as_ref().is_some_and(|r| matches!(r.decision, Decision::StepUp(_)));
        if base >= 3 && !stepped_up {
            if let Some(until) = self.key_trust_of(&user, attempt, now) {
                let otp = self.store.otp(user.id).map(|o| o.is_some_and(|o| o.enabled)).unwrap_or(false);
                attempt.level = Some(if otp { 2 } else { 1 });
                attempt.key_trust = Some(until);
            }
        }
        match attempt.risk.as_ref().map(|r| r.decision) {
            Some(Decision::Deny) => return self.refuse_for_risk(attempt, &user, method, Reason::RiskDenied, kbd, now).await,
            Some(Decision::RefusedStepUpUnavailable) => return self.refuse_for_risk(attempt, &user, method, Reason::RiskStepUpUnavailable, kbd, now).await,
            _ => {}
        }
        match self.second_factor_at(&user, attempt.level.unwrap_or(base)) {
            Ok(SecondFactor::NotNeeded) => self.succeed(attempt, user, method.to_owned(), 1, Vec::new(), now).await,
            // A plain `password` client cannot be asked here: it gets in with
            // one factor and the terminal flow asks for the code before
            // anything else (ENiGMA's loginTwoFactorAuthOTP).
            Ok(SecondFactor::Code) if method == "password" => self.succeed(attempt, user, method.to_owned(), 1, Vec::new(), now).await,
            Ok(SecondFactor::Code) => {
                attempt.pending = Some(Pending { user: Some(user), method });
                Outcome::Need(Prompt::Code)
            }
            // Any method: the approval is asked through keyboard-interactive.
            Ok(SecondFactor::Key) => {
                attempt.pending = Some(Pending { user: Some(user), method });
                attempt.awaiting_key = true;
                Outcome::Need(Prompt::KeyApproval)
            }
            // Under `enroll_grace`: password and code, then only the key's
            // registration.
            Ok(SecondFactor::CodeToEnrollKey) if method == "password" => {
                attempt.key_enrollment_only = true;
                self.succeed(attempt, user, method.to_owned(), 1, Vec::new(), now).await
            }
            Ok(SecondFactor::CodeToEnrollKey) => {
                attempt.key_enrollment_only = true;
                attempt.pending = Some(Pending { user: Some(user), method });
                Outcome::Need(Prompt::Code)
            }
            Ok(SecondFactor::Unavailable(why)) => {
                let outcome = self.fail(attempt, username, method, why, Some(&user), now, None).await;
                // The first factor was right: the user may learn why (as
                // for a risk refusal), over the one method that shows text.
                if why == Reason::HardwareKeyRequired && kbd && matches!(outcome, Outcome::Rejected(Rejection::Denied)) {
                    attempt.pending = Some(Pending { user: None, method });
                    attempt.risk_refused = true;
                    return Outcome::Need(Prompt::KeyRequired);
                }
                hide_behind_code_prompt(attempt, kbd, method, outcome)
            }
            Err(e) => {
                tracing::error!(error = %e, "reading a user's factors during login");
                self.fail(attempt, username, method, Reason::Busy, Some(&user), now, None).await
            }
        }
    }

    /// What a login that must reach `level` still needs after its first
    /// factor.
    fn second_factor_at(&self, user: &User, level: u8) -> super::Result<SecondFactor> {
        if level < 2 {
            return Ok(SecondFactor::NotNeeded);
        }
        if level >= 3 {
            if self.has_webauthn_key(user.id)? {
                return Ok(SecondFactor::Key);
            }
            let otp = self.store.otp(user.id)?.is_some_and(|o| o.enabled);
            return Ok(if otp && self.settings().webauthn.enroll_grace { SecondFactor::CodeToEnrollKey } else { SecondFactor::Unavailable(Reason::HardwareKeyRequired) });
        }
        if self.store.otp(user.id)?.is_some_and(|o| o.enabled) {
            Ok(SecondFactor::Code)
        } else {
            Ok(SecondFactor::Unavailable(Reason::SecondFactorNotEnrolled))
        }
    }

    /// Opens the hardware key approval of a login waiting for one: the
    /// link and code to show. It expires with the approval's own time or
    /// 5 s before the login grace time runs out, whichever is first, so
    /// the user always reads why.
    pub fn start_login_approval(&self, attempt: &mut Attempt, now: Millis) -> super::Result<super::webauthn::ApprovalTicket> {
        let user = match (&attempt.pending, attempt.awaiting_key) {
            (Some(Pending { user: Some(u), .. }), true) => u,
            _ => return Err(super::Error::Invalid("no login is waiting for a hardware key".into())),
        };
        let grace_end = attempt.connected_at.plus(self.settings().ssh.login_grace_time).minus(std::time::Duration::from_secs(5));
        let ticket = self.start_key_approval(user, attempt.ip, &attempt.client_version, grace_end, now)?;
        attempt.approval_code = Some(ticket.code.clone());
        Ok(ticket)
    }

    /// Until when a key's approval stands for the device of `attempt`
    /// (`webauthn.trust_device_for`; `None`: it does not, or it is off).
    fn key_trust_of(&self, user: &User, attempt: &Attempt, now: Millis) -> Option<Millis> {
        if self.settings().webauthn.trust_device_for.is_zero() {
            return None;
        }
        let fingerprint = attempt.device().fingerprint();
        let device = self.store.device_by_fingerprint(user.id, &fingerprint).ok().flatten()?;
        device.key_trusted_until.filter(|until| *until > now)
    }

    /// After a key approved a login: with `webauthn.trust_device_for`, the
    /// device needs no touch for that long (a `device_trusted` event says
    /// so, with the key and the time).
    fn open_key_trust(&self, auth: &Authenticated, key_id: i64, attempt: &Attempt, now: Millis) {
        let window = self.settings().webauthn.trust_device_for;
        if window.is_zero() {
            return;
        }
        let until = now.plus(window);
        let e = Event::new(
            EventType::DeviceTrusted,
            Severity::Medium,
            format!("device {} of {} needs no hardware key until {} (approved by key {key_id})", auth.device_id, auth.user.username, until.rfc3339()),
            now,
        )
        .user(Some(auth.user.id), Some(&auth.user.username))
        .ip(Some(&attempt.ip.to_string()))
        .session(Some(auth.session_id))
        .device(Some(auth.device_id))
        .detail("scope", "hardware_key")
        .detail("key_id", key_id)
        .detail("until", until.rfc3339());
        if let Err(e) = self.store.set_key_trust(auth.device_id, until, &[e]) {
            tracing::warn!(error = %e, "trusting a device for its key");
        }
    }

    async fn submit_key_approval(&self, attempt: &mut Attempt, key_id: Option<i64>, failure: Option<KeyFailure>, now: Millis) -> Outcome {
        let waiting = attempt.awaiting_key;
        attempt.awaiting_key = false;
        let Some(p) = attempt.pending.take().filter(|_| waiting) else {
            return self.fail(attempt, "", "webauthn", Reason::NoFirstFactor, None, now, None).await;
        };
        let Some(user) = p.user else {
            return Outcome::Rejected(Rejection::Denied);
        };
        match (key_id, failure) {
            (Some(key_id), None) => {
                // `webauthn_used` (recorded by the page) names the key.
                let outcome = self.succeed(attempt, user, format!("{}+webauthn", p.method), 3, Vec::new(), now).await;
                if let Outcome::Accepted(auth) = &outcome {
                    self.open_key_trust(auth, key_id, attempt, now);
                }
                outcome
            }
            (_, f) => {
                let reason = if f == Some(KeyFailure::Refused) { Reason::KeyApprovalRefused } else { Reason::KeyApprovalExpired };
                let username = user.username.clone();
                self.fail(attempt, &username, p.method, reason, Some(&user), now, None).await
            }
        }
    }

    async fn submit_code(&self, attempt: &mut Attempt, code: &Secret<String>, now: Millis) -> Outcome {
        let Some(p) = attempt.pending.take() else {
            return self.fail(attempt, "", "code", Reason::NoFirstFactor, None, now, None).await;
        };
        // The answer to the risk refusal's prompt: the connection ends.
        if attempt.risk_refused {
            return Outcome::Rejected(Rejection::Risky);
        }
        // The first factor failed (and was recorded): the code is not even
        // looked at.
        let Some(user) = p.user else {
            let out_of_tries = attempt.failures >= self.settings().ssh.max_auth_tries;
            return Outcome::Rejected(if out_of_tries { Rejection::TooManyAttempts } else { Rejection::Denied });
        };
        let verdict = match self.check_login_code(&user, code.expose(), now) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "checking a code");
                return self.fail(attempt, &user.username.clone(), p.method, Reason::Busy, Some(&user), now, None).await;
            }
        };
        let ip = attempt.ip.to_string();
        let base = |t: EventType, s: Severity, d: String| Event::new(t, s, d, now).user(Some(user.id), Some(&user.username)).ip(Some(&ip)).detail("client_version", attempt.client_version.clone());
        match verdict {
            CodeVerdict::Accepted { kind } => {
                let event = if kind == "backup_code" {
                    let left = self.store.backup_codes_left(user.id).unwrap_or(0);
                    base(EventType::BackupCodeUsed, Severity::Medium, format!("backup code used by {}", user.username)).detail("backup_codes_left", left)
                } else {
                    base(EventType::OtpSuccess, Severity::Info, format!("{kind} code accepted for {}", user.username)).detail("method", kind)
                };
                self.succeed(attempt, user, format!("{}+{kind}", p.method), 2, vec![event], now).await
            }
            CodeVerdict::Replay => {
                let e = base(EventType::OtpReplay, Severity::High, format!("a used code was replayed for {}", user.username)).suspicious(60);
                self.code_failed(attempt, &user, e, Reason::CodeReplayed, now).await
            }
            CodeVerdict::UsedForEnrollment => {
                let e = enrollment_replay(base(EventType::OtpReplay, Severity::Low, format!("{} typed the code that had just confirmed enrollment", user.username)));
                let outcome = self.code_failed(attempt, &user, e, Reason::CodeReplayed, now).await;
                // The owner's slip: asked again, with the reason, while
                // attempts are left.
                match outcome {
                    Outcome::Rejected(Rejection::Denied) => {
                        attempt.pending = Some(Pending { user: Some(user), method: p.method });
                        Outcome::Need(Prompt::CodeJustUsed)
                    }
                    other => other,
                }
            }
            CodeVerdict::Throttled { until } => {
                let e = base(EventType::OtpFailed, Severity::Medium, format!("code refused for {}: too many recent failures", user.username)).detail("closed_until", until.rfc3339());
                self.code_failed(attempt, &user, e, Reason::CodeThrottled, now).await
            }
            CodeVerdict::Wrong | CodeVerdict::NotEnrolled => {
                let e = base(EventType::OtpFailed, Severity::Medium, format!("wrong code after a correct password for {}", user.username));
                // Someone probably knows the password: tell the owner now.
                self.notify_code_failed(&user, now);
                self.code_failed(attempt, &user, e, Reason::WrongCode, now).await
            }
        }
    }

    /// The code asked in the terminal (for a session that logged in with a
    /// plain password). Accepted: the session then has two factors and
    /// only now is the login recorded (`login_success`, the account's and
    /// the device's login counts). Failures are events and count toward
    /// the address's penalties like any other.
    pub async fn session_code(&self, auth: &Authenticated, ip: IpAddr, code: &Secret<String>, now: Millis) -> super::Result<CodeAnswer> {
        let verdict = self.check_login_code(&auth.user, code.expose(), now)?;
        let base = |t: EventType, s: Severity, d: String| {
            with_risk(Event::new(t, s, d, now), auth.risk.as_ref(), false)
                .user(Some(auth.user.id), Some(&auth.user.username))
                .ip(Some(&ip.to_string()))
                .session(Some(auth.session_id))
                .device(Some(auth.device_id))
                .detail("stage", "terminal")
        };
        match verdict {
            CodeVerdict::Accepted { kind } => {
                let e = if kind == "backup_code" {
                    base(EventType::BackupCodeUsed, Severity::Medium, format!("backup code used by {}", auth.user.username)).detail("backup_codes_left", self.store.backup_codes_left(auth.user.id)?)
                } else {
                    base(EventType::OtpSuccess, Severity::Info, format!("{kind} code accepted for {}", auth.user.username)).detail("method", kind)
                };
                let method = format!("password+{kind}");
                let success = with_risk(base(EventType::LoginSuccess, Severity::Info, format!("{method} login of {}", auth.user.username)), auth.risk.as_ref(), true)
                    .detail("method", method)
                    .detail("protocol", "ssh")
                    .detail("factors", 2);
                if !self.events.record_committed(vec![e, success]).await {
                    return Err(super::Error::EventLog);
                }
                self.store.set_session_factors(auth.session_id, 2)?;
                self.store.record_login(auth.user.id, &ip.to_string(), now)?;
                self.record_full_login(&auth.user, ip, now);
                self.store.count_device_login(auth.device_id, now)?;
                Ok(CodeAnswer::Accepted)
            }
            other => {
                let (t, sev, reason) = match other {
                    CodeVerdict::Replay => (EventType::OtpReplay, Severity::High, Reason::CodeReplayed),
                    CodeVerdict::UsedForEnrollment => (EventType::OtpReplay, Severity::Low, Reason::CodeReplayed),
                    CodeVerdict::Throttled { .. } => (EventType::OtpFailed, Severity::Medium, Reason::CodeThrottled),
                    _ => (EventType::OtpFailed, Severity::Medium, Reason::WrongCode),
                };
                let mut e = base(t, sev, format!("code refused for {} in the terminal", auth.user.username)).detail("reason", reason.as_str());
                if other == CodeVerdict::UsedForEnrollment {
                    e = enrollment_replay(e);
                }
                self.record(e).await;
                if let Some(until) = self.admission.record_failure(ip, now) {
                    self.record_penalty_of(ip, until, now).await;
                }
                if reason == Reason::WrongCode {
                    self.notify_code_failed(&auth.user, now);
                }
                Ok(if other == CodeVerdict::UsedForEnrollment { CodeAnswer::JustUsed } else { CodeAnswer::Refused })
            }
        }
    }

    fn notify_code_failed(&self, user: &User, now: Millis) {
        let s = self.settings();
        if let Some(email) = &user.email {
            let when = s.clock.show_zoned(now);
            match self.queue_mail("code_failed", email, &[("username", &user.username), ("issuer", &s.mfa.issuer), ("time", &when)], &[], now) {
                Ok(_) => self.mail_queued.notify_one(),
                Err(err) => tracing::warn!(error = %err, "queueing a code-failure notice"),
            }
        }
    }

    /// A failed code: its event, the failure counted like a failed
    /// password (per connection and per address).
    async fn code_failed(&self, attempt: &mut Attempt, user: &User, event: Event, reason: Reason, now: Millis) -> Outcome {
        attempt.failures += 1;
        let penalty = self.admission.record_failure(attempt.ip, now);
        let max = self.settings().ssh.max_auth_tries;
        let out_of_tries = attempt.failures >= max;
        let mut e = with_risk(event.detail("reason", reason.as_str()).detail("attempt", attempt.failures).detail("protocol", attempt.protocol), attempt.risk.as_ref(), true);
        if out_of_tries {
            e = e.detail("disconnected", true);
        }
        self.record(e).await;
        if let Some(until) = penalty {
            self.record_penalty(attempt, until, now).await;
        }
        let _ = user;
        Outcome::Rejected(if out_of_tries { Rejection::TooManyAttempts } else { Rejection::Denied })
    }

    /// Verifies a password (or spends the same time on a dummy hash for an
    /// unknown user). Upgrades the stored hash when its cost is below policy,
    /// and judges a right password against the policy, beside the answer.
    async fn check_password(&self, user: Option<&User>, password: &Secret<String>, now: Millis) -> Result<(), Reason> {
        if password.expose().len() > password::MAX_INPUT_BYTES {
            return Err(Reason::InputTooLarge);
        }
        let iterations = self.settings().passwords.iterations;
        let stored = user.and_then(|u| u.password_hash.clone());
        let pw = password.clone();
        let phc = stored.clone();
        // Every check costs the policy's iterations, whatever the account
        // (unknown, no password, a hash at an older cost): the time to the
        // answer says nothing about which names exist.
        let verdict = self
            .kdf
            .run_counted(move || password::verify_padded(pw.expose(), phc.as_ref().map(|h| h.expose().as_str()), iterations))
            .await
            .map_err(|_| Reason::Busy)?;
        match (verdict, user, stored) {
            (Verify::Match { iterations: had }, Some(u), Some(old)) => {
                // Weak against today's policy? Only the verdict is kept
                // (for `security scan passwords`), found beside the answer.
                self.judge_password_beside(u, password, now);
                if had != iterations {
                    // Upgraded beside the login, not before its answer: a
                    // right password must not answer later than a wrong one
                    // (over keyboard-interactive both get the code prompt).
                    let (kdf, store, pw, user_id) = (self.kdf.clone(), self.store.clone(), password.clone(), u.id);
                    let cost = u64::from(iterations);
                    tokio::spawn(async move {
                        if let Ok(new) = kdf.run_counted(move || (password::hash(pw.expose(), iterations), cost)).await {
                            if let Err(e) = store.rehash_password(user_id, old.expose(), &new) {
                                tracing::warn!(error = %e, user = user_id, "could not upgrade a password hash");
                            }
                        }
                    });
                }
                Ok(())
            }
            (Verify::Match { .. }, _, _) => Err(Reason::UnknownUser),
            (Verify::Mismatch, Some(_), _) => Err(Reason::BadPassword),
            (Verify::Mismatch, None, _) => Err(Reason::UnknownUser),
            (Verify::Malformed, _, _) => {
                tracing::error!("a stored password hash is malformed");
                Err(Reason::BadPassword)
            }
        }
    }

    fn check_key(&self, user: Option<&User>, fingerprint: &str, now: Millis) -> Result<(), Reason> {
        let Some(u) = user else { return Err(Reason::UnknownUser) };
        match self.store.ssh_keys(u.id) {
            Ok(keys) => match keys.iter().find(|k| k.fingerprint == fingerprint) {
                Some(k) => {
                    if let Err(e) = self.store.touch_ssh_key(k.id, now) {
                        tracing::warn!(error = %e, "recording key use");
                    }
                    Ok(())
                }
                None => Err(Reason::UnknownKey),
            },
            Err(e) => {
                tracing::error!(error = %e, "reading SSH keys during login");
                Err(Reason::Busy)
            }
        }
    }

    /// Whether `fingerprint` is registered to `username` (for the unsigned
    /// probe, so clients do not sign with keys that cannot succeed).
    pub fn key_is_registered(&self, username: &str, fingerprint: &str) -> bool {
        if !valid_username(username) {
            return false;
        }
        match self.store.user_by_name(username) {
            Ok(Some(u)) => self.store.ssh_keys(u.id).map(|keys| keys.iter().any(|k| k.fingerprint == fingerprint)).unwrap_or(false),
            _ => false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn fail(&self, attempt: &mut Attempt, username: &str, method: &str, reason: Reason, user: Option<&User>, now: Millis, held_until: Option<Millis>) -> Outcome {
        let max = self.settings().ssh.max_auth_tries;
        let ip = attempt.ip.to_string();
        let mut penalty = None;
        if reason.counts_as_failure() {
            attempt.failures += 1;
            penalty = self.admission.record_failure(attempt.ip, now);
        }
        let severity = match reason {
            Reason::RiskDenied => Severity::High,
            Reason::Locked | Reason::RiskStepUpUnavailable => Severity::Medium,
            _ => Severity::Low,
        };
        // The attempted name is stored as typed (bounded); it is escaped
        // wherever it is displayed.
        let attempted: String = username.chars().take(64).collect();
        let mut e = Event::new(EventType::LoginFailed, severity, format!("{method} login failed: {}", reason.as_str().replace('_', " ")), now)
            .user(user.map(|u| u.id), Some(&attempted))
            .ip(Some(&ip))
            .detail("reason", reason.as_str())
            .detail("method", method)
            .detail("protocol", attempt.protocol)
            .detail("client_version", attempt.client_version.clone())
            .detail("attempt", attempt.failures);
        if let Some(until) = held_until {
            e = e.detail("held_until", until.rfc3339());
        }
        if let Some(fp) = &attempt.key_fingerprint {
            e = e.detail("key_fingerprint", fp.clone());
        }
        if let Some(h) = &attempt.hassh {
            e = e.detail("hassh", h.hash.clone());
        }
        if let Some(lock) = attempt.lock.take() {
            e = e.detail("lock", lock);
        }
        // A known account's device counts the failure (failures never
        // make devices: an attacker cannot fill the table). Beside the
        // answer, not before it: a write only for existing accounts must
        // not tell them apart by time.
        if let (Some(u), true) = (user, reason.counts_as_failure()) {
            let (store, user_id, fingerprint) = (self.store.clone(), u.id, attempt.device().fingerprint());
            tokio::spawn(async move {
                if let Err(err) = store.count_device_failure(user_id, &fingerprint) {
                    tracing::warn!(error = %err, "counting a device failure");
                }
            });
        }
        let out_of_tries = attempt.failures >= max;
        if out_of_tries {
            e = e.detail("disconnected", true);
        }
        e = with_risk(e, attempt.risk.as_ref(), true);
        attempt.failure_event = None;
        if matches!(reason, Reason::RiskDenied | Reason::RiskStepUpUnavailable) {
            if reason == Reason::RiskDenied {
                // Suspicious: the address now counts for later logins' scores.
                let score = e.risk_score;
                e = e.suspicious(score);
            }
            // Waited for: its id goes on the incident.
            attempt.failure_event = self.events.record_committed_id(e).await;
        } else {
            self.record(e).await;
        }
        if !username.is_empty() && self.settings().detection.injection.enabled {
            let categories = super::detect::injection::classify(username);
            if !categories.is_empty() {
                let e = super::detect::injection::suspicious_input_event("username", username, &categories, now).user(user.map(|u| u.id), Some(&attempted)).ip(Some(&ip));
                self.record(e).await;
            }
        }
        if let Some(until) = penalty {
            self.record_penalty(attempt, until, now).await;
        }
        Outcome::Rejected(match reason {
            _ if out_of_tries => Rejection::TooManyAttempts,
            Reason::Penalized | Reason::Busy | Reason::EventLogUnavailable => Rejection::Refused,
            _ => Rejection::Denied,
        })
    }

    /// Refuses a login for its risk score (its first factor was right):
    /// the failure's event carries the score and factors; a `risky_login`
    /// incident about the account opens (or the open one grows), its
    /// playbooks run — at or above `risk.deny`, and at `risk.step_up` with
    /// no higher factor under `step_up_unavailable: deny` (the client is
    /// told its sysop knows, and its password was right). The device, if the account
    /// has it, keeps the score. Over keyboard-interactive the client is
    /// shown `RISK_REFUSED`, elsewhere refused; the connection ends.
    async fn refuse_for_risk(&self, attempt: &mut Attempt, user: &User, method: &'static str, reason: Reason, kbd: bool, now: Millis) -> Outcome {
        let Some(risk) = attempt.risk.clone() else { return self.fail(attempt, &user.username, method, reason, Some(user), now, None).await };
        let (store, user_id, fingerprint, score) = (self.store.clone(), user.id, attempt.device().fingerprint(), risk.score);
        tokio::spawn(async move {
            if let Err(err) = store.set_device_risk(user_id, &fingerprint, score) {
                tracing::warn!(error = %err, "keeping a device's risk score");
            }
        });
        let outcome = self.fail(attempt, &user.username, method, reason, Some(user), now, None).await;
        {
            let r = &self.settings().risk;
            let finding = risky_login_finding(user, attempt, &risk, reason, (r.step_up, r.deny), now);
            if let Err(e) = self.respond_to_finding(finding, now).await {
                tracing::error!(error = %e, "opening the incident of a risky login");
            }
        }
        if matches!(outcome, Outcome::Rejected(Rejection::Refused)) {
            return outcome;
        }
        if kbd {
            attempt.pending = Some(Pending { user: None, method });
            attempt.risk_refused = true;
            return Outcome::Need(Prompt::RiskRefused);
        }
        Outcome::Rejected(Rejection::Risky)
    }

    async fn record_penalty(&self, attempt: &Attempt, until: Millis, now: Millis) {
        self.record_penalty_of(attempt.ip, until, now).await
    }

    pub(super) async fn record_penalty_of(&self, ip: IpAddr, until: Millis, now: Millis) {
        let e = Event::new(EventType::IpBlocked, Severity::Medium, format!("address {} held off after repeated failures", self.admission.key(ip)), now)
            .ip(Some(&ip.to_string()))
            .detail("kind", "penalty")
            .detail("until", until.rfc3339());
        self.record(e).await;
    }

    async fn succeed(&self, attempt: &mut Attempt, user: User, method: String, factors: u8, mut extra: Vec<Event>, now: Millis) -> Outcome {
        let method = method.as_str();
        // The level decided with the first factor (its risk score in it).
        let required_level = match attempt.level.map_or_else(|| self.required_level(&user), Ok) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "reading a user's factors during login");
                return self.fail(attempt, &user.username.clone(), method, Reason::Busy, Some(&user), now, None).await;
            }
        };
        let ip = attempt.ip.to_string();
        let identity = attempt.device();
        let fingerprint = identity.fingerprint();
        let legacy = identity.legacy_fingerprint();
        let device_name = identity.name();
        // A plain-password login of an account that needs a code: in with
        // one factor, the code still to come in the terminal. Only then is
        // it a login (event, device and account counts).
        let code_pending = factors < required_level;
        let device = SeenDevice {
            user_id: user.id,
            fingerprint: &fingerprint,
            device_name: &device_name,
            device_type: attempt.protocol,
            client_version: &attempt.client_version,
            ip: &ip,
            success: true,
            pending: code_pending,
            now,
        };
        let who = Identity {
            hassh: attempt.hassh.as_ref().map(|h| h.hash.as_str()),
            hassh_algorithms: attempt.hassh.as_ref().map(|h| h.algorithms.as_str()),
            key_fingerprint: attempt.key_fingerprint.as_deref(),
            legacy_fingerprint: Some(&legacy),
            risk_score: attempt.risk.as_ref().map(|r| r.score),
        };
        let started = self.store.see_device_as(&device, &who).and_then(|seen| {
            let session_id = self.store.start_session(&NewSession {
                user_id: user.id,
                device_id: Some(seen.id),
                protocol: attempt.protocol,
                ip: &ip,
                client_version: &attempt.client_version,
                auth_method: method,
                factors,
                connected_at: attempt.connected_at,
                now,
            })?;
            Ok((seen, session_id))
        });
        let (seen, session_id) = match started {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "starting a session");
                return self.fail(attempt, &user.username, method, Reason::Busy, Some(&user), now, None).await;
            }
        };
        let (device_id, new_device) = (seen.id, seen.new);
        let mut events = Vec::new();
        for e in &mut extra {
            e.device_id = Some(device_id);
            e.session_id = Some(session_id);
            e.risk_score = attempt.risk.as_ref().map_or(0, |r| r.score);
        }
        events.append(&mut extra);
        let risk = attempt.risk.clone();
        let base = |t, s, d: String| {
            with_risk(Event::new(t, s, d, now), risk.as_ref(), false)
                .user(Some(user.id), Some(&user.username))
                .ip(Some(&ip))
                .device(Some(device_id))
                .session(Some(session_id))
                .detail("client_version", attempt.client_version.clone())
                .detail("hassh", attempt.hassh.as_ref().map(|h| h.hash.clone()))
        };
        if new_device {
            events.push(
                base(EventType::DeviceNew, Severity::Info, format!("first login of {} from this device: {device_name}", user.username))
                    .detail("fingerprint", fingerprint.clone())
                    .detail("device_name", device_name.clone())
                    .detail("device_type", attempt.protocol)
                    .detail("key_fingerprint", attempt.key_fingerprint.clone())
                    .detail("first_of_account", seen.first_of_account)
                    .detail("first_login_device", seen.first_of_type),
            );
        }
        if code_pending {
            // The first factor is its own step: the session starts, the
            // login is recorded when the code passes (`session_code`).
            events.push(
                with_risk(base(EventType::SessionStarted, Severity::Info, format!("{} session started after the first factor; the code is still to come", attempt.protocol)), risk.as_ref(), true)
                    .detail("stage", "first_factor")
                    .detail("method", method)
                    .detail("factors", factors)
                    .detail("code_pending", true),
            );
        } else {
            // A risky login that could not be stepped up goes on, noted.
            let unstepped = risk.as_ref().is_some_and(|r| r.decision == Decision::StepUpUnavailable);
            let severity = if unstepped { Severity::Medium } else { Severity::Info };
            let mut success = with_risk(base(EventType::LoginSuccess, severity, format!("{method} login of {}", user.username)), risk.as_ref(), true)
                .detail("method", method)
                .detail("protocol", attempt.protocol)
                .detail("factors", factors);
            if let Some(fp) = &attempt.key_fingerprint {
                success = success.detail("key_fingerprint", fp.clone());
            }
            if let Some(lock) = &attempt.lock {
                success = success.detail("lock", lock.clone());
            }
            if let Some(code) = &attempt.approval_code {
                // Approved by a touch: the approval's code, as on both screens.
                success = success.detail("approval_code", code.clone());
            }
            if let Some(until) = attempt.key_trust {
                // No touch: a key approved this device lately.
                success = success.detail("hardware_key_trusted_until", until.rfc3339());
            }
            events.push(success);
            events.push(base(EventType::SessionStarted, Severity::Info, format!("{} session started", attempt.protocol)));
        }
        if !self.events.record_committed(events).await {
            let _ = self.store.end_session(session_id, "event log unavailable", now);
            return self.fail(attempt, &user.username, method, Reason::EventLogUnavailable, Some(&user), now, None).await;
        }
        // A new device of an account that has logged in before: its owner
        // is told (the account's first login is not news, even when a
        // browser of theirs already used a mailed link).
        if new_device && !seen.first_of_type {
            self.notify_new_device(&user, device_id, &device_name, &ip, code_pending, now);
        }
        let previous_login = user.last_login_at.zip(user.last_login_ip.clone());
        // The last login and the count move once every factor has passed;
        // so does the record of the owner's known addresses.
        if !code_pending {
            if let Err(e) = self.store.record_login(user.id, &ip, now) {
                tracing::warn!(error = %e, "recording last login");
            }
            self.record_full_login(&user, attempt.ip, now);
        }
        let key_enrollment_only = attempt.key_enrollment_only;
        Outcome::Accepted(Box::new(Authenticated { user, session_id, device_id, factors, required_level, previous_login, risk, key_enrollment_only }))
    }

    /// Ends a session row and records `session_ended`.
    pub async fn end_session(&self, auth: &Authenticated, ip: IpAddr, reason: &str, now: Millis) {
        if let Err(e) = self.store.end_session(auth.session_id, reason, now) {
            tracing::warn!(error = %e, "ending a session");
        }
        let e = Event::new(EventType::SessionEnded, Severity::Info, format!("session ended: {reason}"), now)
            .user(Some(auth.user.id), Some(&auth.user.username))
            .ip(Some(&ip.to_string()))
            .session(Some(auth.session_id))
            .device(Some(auth.device_id))
            .detail("reason", reason);
        self.record(e).await;
    }
}

/// The finding of a login refused at or above `risk.deny`: about the
/// account (someone has its first factor), with the refused login's event.
/// The finding of a login refused for its risk (`reason`: `RiskDenied`,
/// high, or `RiskStepUpUnavailable`, medium); `(step_up, deny)` are the
/// thresholds.
fn risky_login_finding(user: &User, attempt: &Attempt, risk: &LoginRisk, reason: Reason, (step_up, deny): (u8, u8), now: Millis) -> crate::model::Finding {
    let factors: Vec<String> = risk.factors.iter().map(|f| format!("{} {:+}", f.name, f.weight)).collect();
    let device = attempt.device().name();
    let (severity, why) = if reason == Reason::RiskStepUpUnavailable {
        (crate::model::IncidentSeverity::Medium, format!("reached step_up ({step_up}) with no higher factor to ask, refused under step_up_unavailable: deny"))
    } else {
        (crate::model::IncidentSeverity::High, format!("reached deny ({deny})"))
    };
    crate::model::Finding {
        incident_type: crate::model::IncidentType::RiskyLogin,
        subject: crate::model::Subject::Account { user_id: Some(user.id), username: user.username.clone() },
        severity,
        title: format!("risky login of {} refused (score {})", user.username, risk.score),
        description: format!(
            "a login of {} from {} with a right first factor scored {}, {why}, and was refused ({}); device: {}; factors: {}",
            user.username,
            attempt.ip,
            risk.score,
            reason.as_str(),
            crate::model::escape_control(&device),
            factors.join(", ")
        ),
        event_ids: attempt.failure_event.into_iter().collect(),
        first_event_at: now,
        details: serde_json::json!({
            "rule": "risky_login",
            "reason": reason.as_str(),
            "score": risk.score,
            "step_up": step_up,
            "deny": deny,
            "factors": risk.factors,
            "address": attempt.ip.to_string(),
            "device": device,
        }),
    }
}

/// The details of a replay of the code that had just confirmed enrollment.
fn enrollment_replay(e: Event) -> Event {
    e.detail("after_enrollment", true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::accounts::Actor;
    use std::sync::Arc;

    fn core(dir: &std::path::Path, extra: &str) -> Core {
        crate::core::test_core(dir, &format!("kdf: {{\n  workers: 2\n  queue: 32\n}}\n{extra}"))
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt")
    }

    const PASSWORD: &str = "Correct-Horse-Battery-9";

    /// The KDF work of one password attempt, counted by the pool.
    fn work(core: &Core, rt: &tokio::runtime::Runtime, ip: &str, username: &str, password: &str, now: Millis) -> (u64, Outcome) {
        let before = core.kdf.iterations_spent();
        let mut attempt = Attempt::new(ip.parse().expect("ip"), "SSH-2.0-test".into(), "ssh", now);
        let pw = Secret::new(password.to_owned());
        let outcome = rt.block_on(core.submit(&mut attempt, Credential::Password { username, password: &pw, method: "keyboard-interactive" }, now));
        (core.kdf.iterations_spent() - before, outcome)
    }

    /// Item 3: a known user whose hash has an older (lower) cost, a known
    /// user at the current cost and an unknown user cost the same KDF
    /// iterations, so the time to the answer (the code prompt) tells
    /// nothing.
    #[test]
    fn every_first_factor_costs_the_policy_iterations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path(), "");
        let rt = rt();
        let t0 = Millis(1_800_000_000_000);
        let current = rt.block_on(core.add_user("current", None, &Secret::new(PASSWORD.into()), &[], &Actor::Cli("t".into()), t0)).expect("user");
        let old = rt.block_on(core.add_user("old", None, &Secret::new(PASSWORD.into()), &[], &Actor::Cli("t".into()), t0)).expect("user");
        let stored = old.password_hash.as_ref().expect("hash").expose().clone();
        core.store.rehash_password(old.id, &stored, &password::hash(PASSWORD, 100)).expect("set an old-cost hash");
        assert!(core.store.user_by_name("old").expect("read").and_then(|u| u.password_hash).expect("hash").expose().contains("i=100,"));
        assert!(current.password_hash.as_ref().expect("hash").expose().contains("i=1000,"));
        let cases = [("old", "wrong password 1"), ("current", "wrong password 2"), ("nobody", "wrong password 3"), ("bad name!", "wrong password 4")];
        let spent: Vec<u64> = cases.iter().map(|(u, p)| work(&core, &rt, "192.0.2.10", u, p, t0).0).collect();
        assert_eq!(spent, vec![1000, 1000, 1000, 1000], "{cases:?}");
        // The right password at the old cost: the same padded check before
        // the answer; the upgrade to the policy's cost runs beside it.
        let before = core.kdf.iterations_spent();
        let (spent, outcome) = work(&core, &rt, "192.0.2.11", "old", PASSWORD, t0);
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
        assert!(spent == 1000 || spent == 2000, "{spent}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !core.store.user_by_name("old").expect("read").and_then(|u| u.password_hash).expect("hash").expose().contains("i=1000,") {
            assert!(std::time::Instant::now() < deadline, "the hash was not upgraded");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(core.kdf.iterations_spent() - before, 2000, "the check and the upgrade");
        let (spent, _) = work(&core, &rt, "192.0.2.11", "old", "wrong again", t0);
        assert_eq!(spent, 1000);
    }

    /// Item 4: many parallel attempts from one address: once its failures
    /// start a penalty no further hash runs for it (the budget is 3).
    #[test]
    fn no_hash_runs_for_an_address_once_it_is_over_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = Arc::new(core(dir.path(), "ssh: {\n  penalties: {\n    max_failures: 3\n  }\n}\n"));
        let rt = rt();
        let t0 = Millis(1_800_000_000_000);
        rt.block_on(core.add_user("victim", None, &Secret::new(PASSWORD.into()), &[], &Actor::Cli("t".into()), t0)).expect("user");
        let before = core.kdf.iterations_spent();
        let outcomes = rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..12 {
                let core = core.clone();
                tasks.spawn(async move {
                    let ip: IpAddr = "2001:db8:7:7::1".parse().expect("ip");
                    // Other hosts of the same /64 are the same address.
                    let ip = if i % 2 == 0 { ip } else { "2001:db8:7:7::2".parse().expect("ip") };
                    let mut attempt = Attempt::new(ip, "SSH-2.0-test".into(), "ssh", t0);
                    let pw = Secret::new(format!("wrong password {i}"));
                    core.submit(&mut attempt, Credential::Password { username: "victim", password: &pw, method: "password" }, t0).await
                });
            }
            let mut out = Vec::new();
            while let Some(o) = tasks.join_next().await {
                out.push(o.expect("join"));
            }
            out
        });
        assert_eq!(core.kdf.iterations_spent() - before, 3 * 1000, "exactly the budget's hashes ran");
        let refused = outcomes.iter().filter(|o| matches!(o, Outcome::Rejected(Rejection::Refused))).count();
        assert_eq!(refused, 9, "{outcomes:?}");
        assert_eq!(core.admission.turns_held(), 0);
        // Another address is not held off.
        let (spent, _) = work(&core, &rt, "192.0.2.99", "victim", "wrong", t0);
        assert_eq!(spent, 1000);
    }

    /// The account menu's current-password check is a password check
    /// like a login's: no hash runs for an address once it is held off,
    /// and the refusal is an event.
    #[test]
    fn current_password_check_runs_no_hash_for_a_held_off_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path(), "ssh: {\n  penalties: {\n    max_failures: 3\n  }\n}\n");
        let rt = rt();
        let t0 = Millis(1_800_000_000_000);
        rt.block_on(core.add_user("victim", None, &Secret::new(PASSWORD.into()), &[], &Actor::Cli("t".into()), t0)).expect("user");
        let auth = match work(&core, &rt, "192.0.2.20", "victim", PASSWORD, t0).1 {
            Outcome::Accepted(auth) => auth,
            other => panic!("not logged in: {other:?}"),
        };
        let pw = Secret::new(PASSWORD.to_owned());
        // Not held off: the check runs, at the policy's cost.
        let before = core.kdf.iterations_spent();
        assert!(rt.block_on(core.verify_current_password(&auth, "192.0.2.20".parse().expect("ip"), &pw, t0)).expect("check"));
        assert_eq!(core.kdf.iterations_spent() - before, 1000);
        // The address fails elsewhere and is held off.
        for i in 0..3 {
            work(&core, &rt, "192.0.2.20", "victim", &format!("wrong {i}"), t0);
        }
        let before = core.kdf.iterations_spent();
        for password in [PASSWORD, "wrong again"] {
            let r = rt.block_on(core.verify_current_password(&auth, "192.0.2.20".parse().expect("ip"), &Secret::new(password.to_owned()), t0));
            let e = r.expect_err("held off");
            assert!(e.to_string().starts_with("checks from 192.0.2.20 are held off until "), "{e}");
            assert!(!e.to_string().contains(password), "{e}");
        }
        assert_eq!(core.kdf.iterations_spent() - before, 0, "no hash for a held-off address");
        let events = core.store.events(&crate::store::events::EventFilter { event_type: Some(EventType::LoginFailed), limit: 100, ..Default::default() }).expect("events");
        let refused = events.iter().filter(|e| e.details.get("reason").and_then(|v| v.as_str()) == Some("address_penalized") && e.details.get("stage").and_then(|v| v.as_str()) == Some("password_change")).count();
        assert_eq!(refused, 2, "{events:#?}");
        assert_eq!(core.admission.turns_held(), 0);
    }

    /// A right password is judged against today's policy beside the
    /// login's answer (no hash more than the check's): only the verdict,
    /// its rules' codes and when are stored — never the password.
    #[test]
    fn a_right_password_is_judged_beside_the_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path(), "");
        let rt = rt();
        let t0 = Millis(1_800_000_000_000);
        // Set before today's policy (stored directly, as an old account).
        let weak_pw = "password1234";
        let hash = password::hash(weak_pw, 1000);
        core.store.create_user(&crate::store::users::NewUser { username: "weak", email: Some("weak@example.org"), password_hash: &hash, groups: &[], now: t0 }).expect("user");
        rt.block_on(core.add_user("strong", None, &Secret::new(PASSWORD.into()), &[], &Actor::Cli("t".into()), t0)).expect("user");
        let verdict = |name: &str| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let a = core.store.scan_accounts(0, 10).expect("read").into_iter().find(|a| a.username == name).expect("account");
                if a.password_checked_at.is_some() {
                    return a;
                }
                assert!(std::time::Instant::now() < deadline, "no verdict for {name}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        let (spent, outcome) = work(&core, &rt, "192.0.2.30", "weak", weak_pw, t0);
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
        assert_eq!(spent, 1000, "the judgement runs no hash");
        let a = verdict("weak");
        let policy = password::Policy { history: 0, ..password::Policy::default() };
        let expected: Vec<String> = policy.check(weak_pw, &password::Context { username: "weak", email: Some("weak@example.org"), history: &[] }).expect_err("weak").iter().map(|v| v.code().to_owned()).collect();
        assert!(expected.contains(&"common".to_owned()), "{expected:?}");
        assert_eq!((a.password_weak, a.weak_reasons, a.password_checked_at), (Some(true), expected, Some(t0)));
        let (_, outcome) = work(&core, &rt, "192.0.2.30", "strong", PASSWORD, t0);
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
        let a = verdict("strong");
        assert_eq!((a.password_weak, a.weak_reasons.len()), (Some(false), 0));
        // A wrong password is not judged.
        work(&core, &rt, "192.0.2.31", "weak", "password12345", t0.plus(std::time::Duration::from_secs(5)));
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(verdict("weak").password_checked_at, Some(t0));
        // Nothing of the password reaches the files.
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            assert!(!bytes.windows(weak_pw.len()).any(|w| w == weak_pw.as_bytes()), "the password was stored");
        }
    }
}
