//! The login state machine. A front end opens an `Attempt` per connection
//! and submits each credential; the answer is `Accepted`, `Need` (another
//! factor, from a later issue) or `Rejected`. A failed factor is a step of
//! the machine, not an error. Every decision is an event, and the events of
//! a success are committed before `Accepted` is returned.

use super::admission::Refusal;
use super::password::{self, Verify};
use super::Core;
use crate::model::{valid_username, Event, EventType, Millis, Secret, Severity, User};
use crate::store::devices::SeenDevice;
use crate::store::sessions::NewSession;
use sha2::Digest;
use std::net::IpAddr;

/// What one connection has done so far.
pub struct Attempt {
    pub ip: IpAddr,
    /// The client's SSH version string (attacker-supplied).
    pub client_version: String,
    pub protocol: &'static str,
    pub connected_at: Millis,
    pub failures: u32,
}

pub enum Credential<'a> {
    /// `method` names how it was asked: "password" or "keyboard-interactive".
    Password { username: &'a str, password: &'a Secret<String>, method: &'static str },
    /// A public key whose signature the SSH layer has verified.
    PublicKey { username: &'a str, fingerprint: &'a str },
}

impl Credential<'_> {
    fn username(&self) -> &str {
        match self {
            Credential::Password { username, .. } | Credential::PublicKey { username, .. } => username,
        }
    }
    fn method(&self) -> &'static str {
        match self {
            Credential::Password { method, .. } => method,
            Credential::PublicKey { .. } => "publickey",
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
    /// The previous login, for the welcome screen.
    pub previous_login: Option<(Millis, String)>,
}

#[derive(Debug)]
pub enum Outcome {
    Accepted(Box<Authenticated>),
    Rejected(Rejection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Wrong username or password, or a locked account: the client is
    /// told nothing more. The event log has the real reason.
    Denied,
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
        }
    }
    fn counts_as_failure(self) -> bool {
        !matches!(self, Reason::Busy | Reason::EventLogUnavailable | Reason::Penalized)
    }
}

impl Attempt {
    pub fn new(ip: IpAddr, client_version: String, protocol: &'static str, connected_at: Millis) -> Attempt {
        Attempt { ip, client_version, protocol, connected_at, failures: 0 }
    }
}

impl Core {
    /// Records that a connection was turned away before authentication.
    pub async fn connection_refused(&self, ip: IpAddr, refusal: Refusal, now: Millis) {
        let mut e = Event::new(EventType::ConnectionRefused, Severity::Low, format!("connection refused: {}", refusal.reason()), now)
            .ip(Some(&ip.to_string()))
            .detail("reason", refusal.reason());
        if let Refusal::Penalized(until) = refusal {
            e = e.detail("held_until", until.rfc3339());
        }
        self.record(e).await;
    }

    /// One authentication step.
    pub async fn submit(&self, attempt: &mut Attempt, credential: Credential<'_>, now: Millis) -> Outcome {
        let username = credential.username();
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
            Credential::Password { password, .. } => self.check_password(user.as_ref(), password).await,
            Credential::PublicKey { fingerprint, .. } => self.check_key(user.as_ref(), fingerprint, now),
        };
        let method = credential.method();
        let reason = match (verdict, &user) {
            (Err(reason), _) => Some(reason),
            (Ok(()), Some(u)) if u.is_locked(now) => Some(Reason::Locked),
            (Ok(()), Some(_)) => None,
            (Ok(()), None) => Some(Reason::UnknownUser),
        };
        match (reason, user) {
            (None, Some(user)) => self.succeed(attempt, user, method, now).await,
            (reason, user) => self.fail(attempt, username, method, reason.unwrap_or(Reason::UnknownUser), user.as_ref(), now, None).await,
        }
    }

    /// Verifies a password (or spends the same time on a dummy hash for an
    /// unknown user). Upgrades the stored hash when its cost is below policy.
    async fn check_password(&self, user: Option<&User>, password: &Secret<String>) -> Result<(), Reason> {
        if password.expose().len() > password::MAX_INPUT_BYTES {
            return Err(Reason::InputTooLarge);
        }
        let iterations = self.settings().passwords.iterations;
        let stored = user.and_then(|u| u.password_hash.clone());
        let pw = password.clone();
        let phc = stored.clone();
        let verdict = self
            .kdf
            .run(move || match phc {
                Some(h) => password::verify(pw.expose(), h.expose()),
                None => {
                    password::dummy_verify(iterations);
                    Verify::Mismatch
                }
            })
            .await
            .map_err(|_| Reason::Busy)?;
        match (verdict, user, stored) {
            (Verify::Match { iterations: had }, Some(u), Some(old)) => {
                if had != iterations {
                    let pw = password.clone();
                    if let Ok(new) = self.kdf.run(move || password::hash(pw.expose(), iterations)).await {
                        if let Err(e) = self.store.rehash_password(u.id, old.expose(), &new) {
                            tracing::warn!(error = %e, user = u.id, "could not upgrade a password hash");
                        }
                    }
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
        let severity = if reason == Reason::Locked { Severity::Medium } else { Severity::Low };
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
        let out_of_tries = attempt.failures >= max;
        if out_of_tries {
            e = e.detail("disconnected", true);
        }
        self.record(e).await;
        if let Some(until) = penalty {
            let e = Event::new(EventType::IpBlocked, Severity::Medium, format!("address {} held off after repeated failures", super::admission::AddressKey::of(attempt.ip)), now)
                .ip(Some(&ip))
                .detail("kind", "penalty")
                .detail("until", until.rfc3339());
            self.record(e).await;
        }
        Outcome::Rejected(match reason {
            _ if out_of_tries => Rejection::TooManyAttempts,
            Reason::Penalized | Reason::Busy | Reason::EventLogUnavailable => Rejection::Refused,
            _ => Rejection::Denied,
        })
    }

    async fn succeed(&self, attempt: &mut Attempt, user: User, method: &str, now: Millis) -> Outcome {
        let ip = attempt.ip.to_string();
        let fingerprint = hex(&sha2::Sha256::digest(attempt.client_version.as_bytes())[..16]);
        let device = SeenDevice {
            user_id: user.id,
            fingerprint: &fingerprint,
            device_name: &attempt.client_version,
            device_type: attempt.protocol,
            client_version: &attempt.client_version,
            ip: &ip,
            success: true,
            now,
        };
        let factors = 1;
        let started = self.store.see_device(&device).and_then(|(device_id, new)| {
            let session_id = self.store.start_session(&NewSession {
                user_id: user.id,
                device_id: Some(device_id),
                protocol: attempt.protocol,
                ip: &ip,
                client_version: &attempt.client_version,
                auth_method: method,
                factors,
                connected_at: attempt.connected_at,
                now,
            })?;
            Ok((device_id, new, session_id))
        });
        let (device_id, new_device, session_id) = match started {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "starting a session");
                return self.fail(attempt, &user.username, method, Reason::Busy, Some(&user), now, None).await;
            }
        };
        let mut events = Vec::new();
        let base = |t, s, d: String| {
            Event::new(t, s, d, now)
                .user(Some(user.id), Some(&user.username))
                .ip(Some(&ip))
                .device(Some(device_id))
                .session(Some(session_id))
                .detail("client_version", attempt.client_version.clone())
        };
        if new_device {
            events.push(base(EventType::DeviceNew, Severity::Info, format!("first login of {} from this client", user.username)).detail("fingerprint", fingerprint.clone()));
        }
        events.push(
            base(EventType::LoginSuccess, Severity::Info, format!("{method} login of {}", user.username))
                .detail("method", method)
                .detail("protocol", attempt.protocol)
                .detail("factors", factors),
        );
        events.push(base(EventType::SessionStarted, Severity::Info, format!("{} session started", attempt.protocol)));
        if !self.events.record_committed(events).await {
            let _ = self.store.end_session(session_id, "event log unavailable", now);
            return self.fail(attempt, &user.username, method, Reason::EventLogUnavailable, Some(&user), now, None).await;
        }
        let previous_login = user.last_login_at.zip(user.last_login_ip.clone());
        if let Err(e) = self.store.record_login(user.id, &ip, now) {
            tracing::warn!(error = %e, "recording last login");
        }
        Outcome::Accepted(Box::new(Authenticated { user, session_id, device_id, factors, previous_login }))
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
