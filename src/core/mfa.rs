//! Two-factor authentication with one-time codes: enrollment by emailed
//! single-use link, confirmation, backup codes, disabling, and the code
//! check at login with its own per-account throttle and no replay.

use super::accounts::Actor;
use super::otp::{self, Algorithm, Check};
use super::secrets::{new_token, token_hash};
use super::{Core, Error, Result};
use crate::model::{Event, EventType, Millis, Severity, User};
use crate::store::mfa::{NewMail, OtpRow};

pub const TOTP_PERIOD: u64 = 30;
/// Wrong codes allowed on one enrollment link before it is burnt.
pub const ENROLL_TRIES: u32 = 5;
const SECRET_BYTES: usize = 20; // 160 bits (RFC 4226 §4 recommends ≥ 160)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Totp,
    Hotp,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Totp => "totp",
            Method::Hotp => "hotp",
        }
    }
    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "totp" => Some(Method::Totp),
            "hotp" => Some(Method::Hotp),
            _ => None,
        }
    }
}

/// What the enrollment page shows (`Debug` hides the secret).
#[derive(Clone)]
pub struct EnrollView {
    pub username: String,
    pub method: Method,
    pub secret_base32: String,
    pub otpauth_uri: String,
    pub digits: u32,
    pub issuer: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    /// Unknown, used, expired or for another purpose: one answer for all.
    InvalidToken,
    WrongCode { tries_left: u32 },
    TooManyTries,
    Unavailable,
}

impl std::fmt::Debug for EnrollView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollView")
            .field("username", &self.username)
            .field("method", &self.method)
            .field("secret_base32", &"<secret>")
            .field("otpauth_uri", &"<secret>")
            .field("digits", &self.digits)
            .field("issuer", &self.issuer)
            .finish()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub username: String,
    pub enabled: bool,
    pub pending: bool,
    pub method: Option<String>,
    pub algorithm: Option<String>,
    pub digits: Option<u32>,
    pub enabled_at: Option<String>,
    pub backup_codes_left: u32,
    pub required_level: u8,
    pub code_factor_closed_until: Option<String>,
}

/// Who sent a web request, for the events it causes: the peer address
/// and the `User-Agent` as sent (bounded; escaped wherever a terminal
/// shows it).
#[derive(Debug, Clone, Default)]
pub struct WebClient {
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

/// Longest user agent kept in an event, in bytes.
pub use super::useragent::MAX_USER_AGENT;

impl WebClient {
    pub fn stamp(&self, e: Event) -> Event {
        let e = match self.ip {
            Some(ip) => e.ip(Some(&ip.to_canonical().to_string())),
            None => e,
        };
        match &self.user_agent {
            Some(ua) => e.detail("user_agent", super::useragent::truncate_bytes(ua, MAX_USER_AGENT)),
            None => e,
        }
    }
}

/// The outcome of a code typed at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeVerdict {
    Accepted { kind: &'static str },
    Wrong,
    Replay,
    /// A replay of the code that confirmed enrollment moments ago (the
    /// user typed it on the page and again at login): refused like any
    /// replay, but it is the owner's slip, so it is not counted as a guess
    /// and the user is told to wait for the next code.
    UsedForEnrollment,
    /// Too many tries in this step, or closed after repeated failures.
    Throttled { until: Millis },
    NotEnrolled,
}

fn unix_secs(now: Millis) -> i64 {
    now.0.div_euclid(1000)
}

/// Backup codes: 10 characters from an alphabet without look-alikes,
/// shown as `xxxxx-xxxxx` (about 50 bits each).
const BACKUP_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

fn new_backup_code() -> Result<String> {
    let mut raw = [0u8; 10];
    getrandom::fill(&mut raw).map_err(|e| Error::Invalid(format!("generating a backup code: {e}")))?;
    let chars: String = raw.iter().map(|b| BACKUP_ALPHABET[(*b as usize) % BACKUP_ALPHABET.len()] as char).collect();
    Ok(format!("{}-{}", &chars[..5], &chars[5..]))
}

/// Normalises what a user typed as a backup code; `None` if it cannot be one.
fn clean_backup_code(input: &str) -> Option<String> {
    let c: String = input.chars().filter(|c| !matches!(c, ' ' | '-')).flat_map(char::to_lowercase).collect();
    (c.len() == 10 && c.bytes().all(|b| BACKUP_ALPHABET.contains(&b))).then(|| format!("{}-{}", &c[..5], &c[5..]))
}

/// How long the code factor closes after its `closures`-th closure (0 for
/// the first): `lockout` doubling each time, never beyond `max_lockout`.
fn closure_length(lockout: std::time::Duration, max_lockout: std::time::Duration, closures: u32) -> std::time::Duration {
    let factor = 1u32.checked_shl(closures.min(16)).unwrap_or(u32::MAX);
    lockout.saturating_mul(factor).min(max_lockout)
}

/// How long after enrollment a replayed code is taken for the one that
/// confirmed it: a TOTP code stays valid for up to three steps with ±1
/// step of skew.
pub const ENROLLMENT_REPLAY_WINDOW: std::time::Duration = std::time::Duration::from_secs(3 * TOTP_PERIOD);

/// Whether a replayed code can only be the one that confirmed enrollment:
/// enabled moments ago and no login has passed since (a login would have
/// burnt a later step or counter).
fn replays_enrollment(row: &OtpRow, user: &User, now: Millis) -> bool {
    let Some(enabled) = row.enabled_at else { return false };
    let recent = enabled <= now && now.0 - enabled.0 <= ENROLLMENT_REPLAY_WINDOW.as_millis() as i64;
    recent && user.last_login_at.is_none_or(|t| t < enabled)
}

/// A right code opens the factor again and forgets earlier closures, so
/// whoever knows only the password cannot keep doubling them.
fn reset_throttle(row: &mut OtpRow) {
    row.consecutive_failures = 0;
    row.step_failures = 0;
    row.failure_step = None;
    row.closures = 0;
    row.closed_until = None;
}

/// What `send_otp_enrollment` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentSent {
    /// The address the link was mailed to.
    pub to: String,
    /// An earlier link was still usable and now is not.
    pub voided_earlier: bool,
}

impl Core {
    /// The factor level a user must reach: the highest of what the account
    /// had imposed, the user's groups' policy, and 2 once a code is enrolled.
    pub fn required_level(&self, user: &User) -> Result<u8> {
        let mut level = self.policy_level(user);
        if self.store.otp(user.id)?.is_some_and(|o| o.enabled) {
            level = level.max(2);
        }
        Ok(level)
    }

    /// The level the sysop's group policy and playbooks impose, without
    /// what the user opted into.
    pub fn policy_level(&self, user: &User) -> u8 {
        let s = self.settings();
        let mut level = user.imposed_level.max(1);
        for g in &user.groups {
            if let Some(l) = s.group_levels.get(&g.to_lowercase()) {
                level = level.max(*l);
            }
        }
        level
    }

    /// The level a login needs before its risk score: `required_level`,
    /// or with `risk.adaptive_codes` only the policy's (an enrolled code
    /// is then asked when the score reaches `risk.step_up`).
    pub fn login_level(&self, user: &User) -> Result<u8> {
        let s = self.settings();
        if s.risk.enabled && s.risk.adaptive_codes {
            Ok(self.policy_level(user))
        } else {
            self.required_level(user)
        }
    }

    fn open_secret(&self, row: &OtpRow) -> Result<Vec<u8>> {
        self.keyring.open(&format!("otp:{}", row.user_id), &row.secret_sealed).map_err(Error::Invalid)
    }

    /// Starts enrollment: a fresh secret (pending until confirmed) and a
    /// single-use link mailed to the account's address.
    pub async fn start_otp_enrollment(&self, user: &User, method: Method, actor: &Actor, now: Millis) -> Result<String> {
        Ok(self.send_otp_enrollment(user, method, actor, now).await?.to)
    }

    /// Like `start_otp_enrollment`, and tells whether an earlier link was
    /// still usable (it is voided: only the newest link works; the new mail
    /// says so).
    pub async fn send_otp_enrollment(&self, user: &User, method: Method, actor: &Actor, now: Millis) -> Result<EnrollmentSent> {
        let email = user.email.clone().ok_or_else(|| Error::Invalid(format!("user {} has no email address to send the link to", user.username)))?;
        let s = self.settings();
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(|e| Error::Invalid(format!("generating a secret: {e}")))?;
        let sealed = self.keyring.seal(&format!("otp:{}", user.id), &secret).map_err(Error::Invalid)?;
        self.store.put_pending_otp(user.id, method.as_str(), s.mfa.algorithm.as_str(), s.mfa.digits, &sealed, now)?;
        let (token, hash) = new_token().map_err(Error::Invalid)?;
        let link = format!("{}/otp/enroll/{token}", s.web.base_url);
        let expires = super::mail::humanize(s.mfa.link_ttl);
        let voided_earlier = self.store.live_tokens(user.id, "otp_enroll", now)? > 0;
        let replaces = if voided_earlier { " It replaces the enrollment link mailed earlier: that one no longer works." } else { "" };
        let (subject, body) = self.seal_mail(
            "otp_enroll",
            &email,
            &[("username", &user.username), ("issuer", &s.mfa.issuer), ("link", &link), ("expires", &expires), ("replaces", replaces)],
        )?;
        let ev = actor.stamp(
            Event::new(EventType::MfaEnrollmentSent, Severity::Info, format!("{} enrollment link mailed to {}", method.as_str(), user.username), now)
                .user(Some(user.id), Some(&user.username))
                .detail("method", method.as_str())
                .detail("expires_at", now.plus(s.mfa.link_ttl).rfc3339())
                .detail("earlier_link_voided", voided_earlier),
        );
        self.store.issue_token_with_mail(
            user.id,
            "otp_enroll",
            &hash,
            &serde_json::json!({ "method": method.as_str(), "tries": 0 }),
            now.plus(s.mfa.link_ttl),
            &NewMail { recipient: &email, subject: &subject, body_sealed: &body, template: "otp_enroll" },
            &[ev],
            now,
        )?;
        self.mail_queued.notify_one();
        Ok(EnrollmentSent { to: email, voided_earlier })
    }

    /// A usable enrollment token and the pending secret behind it.
    fn enrollment(&self, token: &str, now: Millis) -> std::result::Result<(crate::store::mfa::TokenRow, User, OtpRow), LinkRefusal> {
        let t = self.store.token(&token_hash(token)).map_err(|_| LinkRefusal::Unavailable)?.ok_or(LinkRefusal::InvalidToken)?;
        if t.purpose != "otp_enroll" || t.used_at.is_some() || t.expires_at <= now {
            return Err(LinkRefusal::InvalidToken);
        }
        let user = self.store.user_by_id(t.user_id).map_err(|_| LinkRefusal::Unavailable)?.ok_or(LinkRefusal::InvalidToken)?;
        let row = self.store.otp(user.id).map_err(|_| LinkRefusal::Unavailable)?.ok_or(LinkRefusal::InvalidToken)?;
        if row.enabled {
            return Err(LinkRefusal::InvalidToken);
        }
        Ok((t, user, row))
    }

    /// Whether `token` is a usable enrollment link, without opening the
    /// secret (what the link's own page may know).
    pub fn otp_enrollment_usable(&self, token: &str, now: Millis) -> std::result::Result<(), LinkRefusal> {
        self.enrollment(token, now).map(|_| ())
    }

    pub fn otp_enrollment_view(&self, token: &str, now: Millis) -> std::result::Result<EnrollView, LinkRefusal> {
        let (_, user, row) = self.enrollment(token, now)?;
        self.enrollment_view(user, &row)
    }

    /// [`Core::otp_enrollment_view`] for a web request that opens the
    /// link: the page shows the secret to `client`, whose browser is
    /// recorded as one of the account's devices (a new one is mailed
    /// about, see `see_web_device`).
    pub async fn otp_enrollment_view_from(&self, token: &str, client: &WebClient, now: Millis) -> std::result::Result<EnrollView, LinkRefusal> {
        let (t, user, row) = self.enrollment(token, now)?;
        let view = self.enrollment_view(user.clone(), &row)?;
        self.see_web_device(&user, t.id, client, super::devices::WebUse::Opened, now).await;
        Ok(view)
    }

    fn enrollment_view(&self, user: User, row: &OtpRow) -> std::result::Result<EnrollView, LinkRefusal> {
        let secret = self.open_secret(row).map_err(|_| LinkRefusal::Unavailable)?;
        let method = Method::parse(&row.method).ok_or(LinkRefusal::Unavailable)?;
        let alg = Algorithm::parse(&row.algorithm).ok_or(LinkRefusal::Unavailable)?;
        let issuer = self.settings().mfa.issuer.clone();
        let extra = if method == Method::Hotp { 0 } else { TOTP_PERIOD };
        Ok(EnrollView {
            otpauth_uri: otp::otpauth_uri(method.as_str(), &issuer, &user.username, &secret, alg, row.digits, extra),
            secret_base32: otp::base32(&secret),
            username: user.username,
            method,
            digits: row.digits,
            issuer,
        })
    }

    /// Confirms enrollment with a code; on success 2FA is on and the
    /// backup codes are returned (the only time they are shown).
    pub async fn otp_confirm(&self, token: &str, code: &str, now: Millis) -> std::result::Result<Vec<String>, LinkRefusal> {
        self.otp_confirm_from(token, code, &WebClient::default(), now).await
    }

    /// [`Core::otp_confirm`] for a web request: its events (`otp_failed`,
    /// `mfa_enabled`) carry the client's address and user agent.
    pub async fn otp_confirm_from(&self, token: &str, code: &str, client: &WebClient, now: Millis) -> std::result::Result<Vec<String>, LinkRefusal> {
        let (t, user, row) = self.enrollment(token, now)?;
        let tries = t.data.get("tries").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        if tries >= ENROLL_TRIES {
            let _ = self.store.burn_token(t.id, now);
            return Err(LinkRefusal::TooManyTries);
        }
        let secret = self.open_secret(&row).map_err(|_| LinkRefusal::Unavailable)?;
        let alg = Algorithm::parse(&row.algorithm).ok_or(LinkRefusal::Unavailable)?;
        let lookahead = self.settings().mfa.hotp_lookahead;
        let verdict = match otp::clean_code(code, row.digits) {
            None => Check::Wrong,
            Some(c) if row.method == "hotp" => otp::check_hotp(alg, &secret, row.digits, &c, 0, lookahead),
            Some(c) => otp::check_totp(alg, &secret, row.digits, &c, otp::step_of(unix_secs(now), TOTP_PERIOD), 1, None),
        };
        let Check::Accepted(at) = verdict else {
            // Counted in one statement (two tabs cannot both write the old count).
            let tries = match self.store.count_on_token(t.id, "tries") {
                Ok(Some(n)) => u32::try_from(n).unwrap_or(u32::MAX),
                _ => tries + 1,
            };
            let device = self.see_web_device(&user, t.id, client, super::devices::WebUse::WrongCode, now).await;
            self.record(client.stamp(
                Event::new(EventType::OtpFailed, Severity::Low, format!("wrong code while enrolling {}", user.username), now)
                    .user(Some(user.id), Some(&user.username))
                    .device(device)
                    .detail("stage", "enrollment")
                    .detail("method", row.method.clone()),
            ))
            .await;
            if tries >= ENROLL_TRIES {
                let _ = self.store.burn_token(t.id, now);
                return Err(LinkRefusal::TooManyTries);
            }
            return Err(LinkRefusal::WrongCode { tries_left: ENROLL_TRIES - tries });
        };
        let (codes, hashes) = self.backup_code_set(user.id).map_err(|_| LinkRefusal::Unavailable)?;
        let (last_step, next_counter) = if row.method == "hotp" { (None, at + 1) } else { (Some(at), 0) };
        let device = self.see_web_device(&user, t.id, client, super::devices::WebUse::Confirmed, now).await;
        let ev = client.stamp(
            Event::new(EventType::MfaEnabled, Severity::Medium, format!("two-factor authentication ({}) enabled for {}", row.method, user.username), now)
                .user(Some(user.id), Some(&user.username))
                .device(device)
                .detail("method", row.method.clone())
                .detail("algorithm", row.algorithm.clone())
                .detail("backup_codes", codes.len()),
        );
        match self.store.enable_otp(user.id, t.id, last_step, next_counter, &hashes, &[ev], now) {
            Ok(()) => {
                // The link did what it was for: the device's login.
                if let Some(id) = device {
                    if let Err(e) = self.store.count_device_login(id, now) {
                        tracing::warn!(error = %e, "counting a web device's use");
                    }
                }
                Ok(codes)
            }
            Err(crate::store::Error::Conflict(_)) => Err(LinkRefusal::InvalidToken),
            Err(e) => {
                tracing::error!(error = %e, "enabling 2FA");
                Err(LinkRefusal::Unavailable)
            }
        }
    }

    fn backup_code_set(&self, user_id: i64) -> Result<(Vec<String>, Vec<String>)> {
        let n = self.settings().mfa.backup_codes;
        let mut codes = Vec::with_capacity(n);
        while codes.len() < n {
            let c = new_backup_code()?;
            if !codes.contains(&c) {
                codes.push(c);
            }
        }
        let hashes = codes.iter().map(|c| self.keyring.keyed_hash(&format!("backup:{user_id}"), c.as_bytes())).collect();
        Ok((codes, hashes))
    }

    pub async fn regenerate_backup_codes(&self, user: &User, actor: &Actor, now: Millis) -> Result<Vec<String>> {
        if !self.store.otp(user.id)?.is_some_and(|o| o.enabled) {
            return Err(Error::Invalid(format!("two-factor authentication is not enabled for {}", user.username)));
        }
        let (codes, hashes) = self.backup_code_set(user.id)?;
        let ev = actor.stamp(
            Event::new(EventType::UserUpdated, Severity::Medium, format!("backup codes of {} replaced", user.username), now)
                .user(Some(user.id), Some(&user.username))
                .detail("backup_codes", codes.len()),
        );
        self.store.set_backup_codes(user.id, &hashes, &[ev], now)?;
        Ok(codes)
    }

    /// Turns 2FA off. By a sysop it is a high-severity event.
    pub async fn disable_otp(&self, user: &User, actor: &Actor, now: Millis) -> Result<()> {
        // Nothing enabled: refuse, rather than log a high-severity
        // `mfa_disabled` that disabled nothing.
        if !self.store.otp(user.id)?.is_some_and(|r| r.enabled) {
            return Err(Error::Invalid(format!("two-factor authentication is not enabled for {}: nothing to disable", user.username)));
        }
        let severity = match actor {
            Actor::Cli(_) | Actor::Playbook(_) => Severity::High,
            Actor::User { .. } => Severity::Medium,
        };
        let ev = actor.stamp(
            Event::new(EventType::MfaDisabled, severity, format!("two-factor authentication disabled for {}", user.username), now).user(Some(user.id), Some(&user.username)),
        );
        let nothing = || Error::Invalid(format!("two-factor authentication is not enabled for {}: nothing to disable", user.username));
        if !self.store.disable_otp(user.id, &[ev], now)? {
            // Another process disabled it between the check and the write.
            return Err(nothing());
        }
        let by = match actor {
            Actor::Cli(_) => "by the sysop",
            Actor::Playbook(_) => "by a security response of the gate",
            Actor::User { .. } => "from your account menu",
        };
        let s = self.settings();
        self.mail_user(user, "mfa_disabled", &[("username", &user.username), ("issuer", &s.mfa.issuer), ("time", &s.clock.show_zoned(now)), ("by", by)], now);
        Ok(())
    }

    pub fn mfa_status(&self, user: &User, now: Millis) -> Result<Status> {
        let row = self.store.otp(user.id)?;
        Ok(Status {
            username: user.username.clone(),
            enabled: row.as_ref().is_some_and(|r| r.enabled),
            pending: row.as_ref().is_some_and(|r| !r.enabled),
            method: row.as_ref().map(|r| r.method.clone()),
            algorithm: row.as_ref().map(|r| r.algorithm.clone()),
            digits: row.as_ref().map(|r| r.digits),
            enabled_at: row.as_ref().and_then(|r| r.enabled_at).map(|t| t.rfc3339()),
            backup_codes_left: self.store.backup_codes_left(user.id)?,
            required_level: self.required_level(user)?,
            code_factor_closed_until: row.as_ref().and_then(|r| r.closed_until).filter(|t| *t > now).map(|t| t.rfc3339()),
        })
    }

    /// Checks a code typed at login: TOTP/HOTP (each step or counter
    /// accepted once) or a backup code (each used once). Throttled per
    /// account: `tries_per_step` per 30 s step, and after
    /// `max_consecutive_failures` the factor closes for `lockout`, doubling.
    pub fn check_login_code(&self, user: &User, input: &str, now: Millis) -> Result<CodeVerdict> {
        // One code check at a time in this process: the throttle counters
        // are read, judged and written back as one step, so parallel
        // sessions cannot get more tries than the limit allows. (Checks
        // take microseconds; the burn of a step or counter is atomic in SQL
        // besides.)
        let _serial = self.code_checks.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut row) = self.store.otp(user.id)?.filter(|r| r.enabled) else {
            return Ok(CodeVerdict::NotEnrolled);
        };
        let m = self.settings().mfa.clone();
        let step = otp::step_of(unix_secs(now), TOTP_PERIOD);
        // A closed factor still takes backup codes: at ~50 bits each they
        // cannot be guessed, and they are how the owner gets in while
        // someone who has the password keeps closing it.
        let backup = clean_backup_code(input);
        let closed = row.closed_until.filter(|t| *t > now);
        if let Some(until) = closed {
            let Some(code) = backup else {
                return Ok(CodeVerdict::Throttled { until });
            };
            let hash = self.keyring.keyed_hash(&format!("backup:{}", user.id), code.as_bytes());
            if !self.store.use_backup_code(user.id, &hash, now)? {
                // Judged, but the closure is neither extended nor doubled.
                return Ok(CodeVerdict::Wrong);
            }
            row = self.store.otp(user.id)?.unwrap_or(row);
            reset_throttle(&mut row);
            self.store.update_otp_throttle(&row)?;
            return Ok(CodeVerdict::Accepted { kind: "backup_code" });
        }
        if row.failure_step == Some(step) && row.step_failures >= m.tries_per_step {
            return Ok(CodeVerdict::Throttled { until: Millis(((step + 1) * TOTP_PERIOD * 1000) as i64) });
        }
        let secret = self.open_secret(&row)?;
        let alg = Algorithm::parse(&row.algorithm).ok_or_else(|| Error::Invalid("unknown stored algorithm".into()))?;
        let verdict = if let Some(code) = otp::clean_code(input, row.digits) {
            if row.method == "hotp" {
                match otp::check_hotp(alg, &secret, row.digits, &code, row.next_counter, m.hotp_lookahead) {
                    // Burnt atomically: a second login racing with the same
                    // code finds the counter already moved.
                    Check::Accepted(c) if self.store.burn_hotp_counter(user.id, c)? => CodeVerdict::Accepted { kind: "hotp" },
                    Check::Accepted(_) | Check::Replay => CodeVerdict::Replay,
                    Check::Wrong => CodeVerdict::Wrong,
                }
            } else {
                match otp::check_totp(alg, &secret, row.digits, &code, step, 1, row.last_step) {
                    Check::Accepted(s) if self.store.burn_totp_step(user.id, s)? => CodeVerdict::Accepted { kind: "totp" },
                    Check::Accepted(_) | Check::Replay => CodeVerdict::Replay,
                    Check::Wrong => CodeVerdict::Wrong,
                }
            }
        } else if let Some(code) = backup {
            let hash = self.keyring.keyed_hash(&format!("backup:{}", user.id), code.as_bytes());
            if self.store.use_backup_code(user.id, &hash, now)? {
                CodeVerdict::Accepted { kind: "backup_code" }
            } else {
                CodeVerdict::Wrong
            }
        } else {
            CodeVerdict::Wrong
        };
        let verdict = match verdict {
            // The account as it is now (a login elsewhere since this one
            // began would have burnt a later code).
            CodeVerdict::Replay if replays_enrollment(&row, &self.store.user_by_id(user.id)?.unwrap_or_else(|| user.clone()), now) => CodeVerdict::UsedForEnrollment,
            v => v,
        };
        // Re-read: the burn above changed the row.
        row = self.store.otp(user.id)?.unwrap_or(row);
        let throttle = |r: &OtpRow| (r.step_failures, r.failure_step, r.consecutive_failures, r.closed_until, r.closures);
        let before = throttle(&row);
        match verdict {
            CodeVerdict::Accepted { .. } => reset_throttle(&mut row),
            CodeVerdict::UsedForEnrollment => {}
            _ => {
                if row.failure_step != Some(step) {
                    row.failure_step = Some(step);
                    row.step_failures = 0;
                }
                row.step_failures += 1;
                row.consecutive_failures += 1;
                if row.consecutive_failures >= m.max_consecutive_failures {
                    row.closed_until = Some(now.plus(closure_length(m.lockout, m.max_lockout, row.closures)));
                    row.closures += 1;
                    row.consecutive_failures = 0;
                }
            }
        }
        // A good code on clean counters (the usual login) changes nothing:
        // spare that write its own commit (P9).
        if throttle(&row) != before {
            self.store.update_otp_throttle(&row)?;
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Secret;
    use std::sync::Arc;

    fn core(dir: &std::path::Path) -> Core {
        crate::core::test_core(dir, "")
    }

    fn base32_decode(s: &str) -> Vec<u8> {
        crate::core::otp::base32_decode(s).expect("base32")
    }

    /// Enrollment through the mailed link, confirmation, then codes at
    /// login: replay, backup codes once, throttling — with a fixed clock.
    #[test]
    fn totp_enrollment_and_login_codes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let t0 = Millis(1_800_000_000_000);
        let user = rt
            .block_on(core.add_user("alice", Some("alice@example.org"), &Secret::new("Correct-Horse-Battery-9".into()), &[], &Actor::Cli("t".into()), t0))
            .expect("user");
        assert_eq!(core.required_level(&user).expect("level"), 1);
        rt.block_on(core.start_otp_enrollment(&user, Method::Totp, &Actor::Cli("t".into()), t0)).expect("enroll");
        let mail = core.due_mail(t0, 10).expect("mail");
        assert_eq!(mail.len(), 1);
        assert_eq!(mail[0].to, "alice@example.org");
        let link = mail[0].body.text.lines().find(|l| l.contains("/otp/enroll/")).expect("link").trim().to_owned();
        let token = link.rsplit('/').next().expect("token").to_owned();
        assert!(link.starts_with("https://localhost:8443/otp/enroll/"));
        // The token is stored only as a hash.
        assert!(core.store.token(&token).expect("lookup").is_none());

        let view = core.otp_enrollment_view(&token, t0).expect("view");
        assert_eq!(view.username, "alice");
        assert!(view.otpauth_uri.starts_with("otpauth://totp/Portcullis:alice?secret="));
        let secret = base32_decode(&view.secret_base32);
        assert_eq!(secret.len(), 20);
        let code_at = |t: Millis| otp::hotp(Algorithm::Sha1, &secret, otp::step_of(t.0 / 1000, 30), 6);
        assert_eq!(core.otp_enrollment_view("not-a-token", t0).err(), Some(LinkRefusal::InvalidToken));
        assert_eq!(core.otp_enrollment_view(&token, t0.plus(std::time::Duration::from_secs(1801))).err(), Some(LinkRefusal::InvalidToken), "expired");

        let wrong = if code_at(t0) == "000000" { "111111" } else { "000000" };
        assert_eq!(rt.block_on(core.otp_confirm(&token, wrong, t0)).err(), Some(LinkRefusal::WrongCode { tries_left: 4 }));
        let codes = rt.block_on(core.otp_confirm(&token, &code_at(t0), t0)).expect("confirm");
        assert_eq!(codes.len(), 10);
        assert_eq!(rt.block_on(core.otp_confirm(&token, &code_at(t0), t0)).err(), Some(LinkRefusal::InvalidToken), "used once");
        assert_eq!(core.required_level(&user).expect("level"), 2);

        // The step used to confirm is burnt (typed again right after
        // enrollment: the owner's slip); the next step works once.
        assert_eq!(core.check_login_code(&user, &code_at(t0), t0).expect("check"), CodeVerdict::UsedForEnrollment);
        let t1 = t0.plus(std::time::Duration::from_secs(30));
        assert_eq!(core.check_login_code(&user, &code_at(t1), t1).expect("check"), CodeVerdict::Accepted { kind: "totp" });
        // (The login that code made is recorded, as `core::login` does.)
        core.store.record_login(user.id, "192.0.2.1", t1).expect("record login");
        assert_eq!(core.check_login_code(&user, &code_at(t1), t1).expect("check"), CodeVerdict::Replay);
        assert_eq!(core.check_login_code(&user, &code_at(t0), t1).expect("check"), CodeVerdict::Replay, "after a login, a plain replay");
        // A backup code, once.
        let t2 = t1.plus(std::time::Duration::from_secs(60));
        assert_eq!(core.check_login_code(&user, &codes[0].to_uppercase(), t2).expect("check"), CodeVerdict::Accepted { kind: "backup_code" });
        assert_eq!(core.check_login_code(&user, &codes[0], t2).expect("check"), CodeVerdict::Wrong, "a backup code works once");
        // Three tries per step: the third failure in this step closes it.
        assert_eq!(core.check_login_code(&user, "000000", t2).expect("check"), CodeVerdict::Wrong);
        assert_eq!(core.check_login_code(&user, "000001", t2).expect("check"), CodeVerdict::Wrong);
        assert_eq!(core.check_login_code(&user, &codes[1], t2).expect("check"), CodeVerdict::Throttled { until: Millis(((t2.0 / 30_000) + 1) * 30_000) });
        let status = core.mfa_status(&user, t2).expect("status");
        assert!(status.enabled);
        assert_eq!(status.backup_codes_left, 9, "the throttled attempt did not use a code");
    }

    /// Two disables that both passed the first check (two CLI processes at
    /// once): the store's write transaction lets only one remove the factor
    /// and record `mfa_disabled`; the other is told there is nothing left.
    #[test]
    fn a_second_disable_racing_the_first_records_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let t0 = Millis(1_800_000_000_000);
        let actor = Actor::Cli("t".into());
        let user = rt.block_on(core.add_user("erin", Some("erin@example.org"), &Secret::new("Correct-Horse-Battery-9".into()), &[], &actor, t0)).expect("user");
        rt.block_on(core.start_otp_enrollment(&user, Method::Totp, &actor, t0)).expect("enroll");
        let body = core.due_mail(t0, 10).expect("mail").remove(0).body.text;
        let token = body.lines().find(|l| l.contains("/otp/enroll/")).and_then(|l| l.trim().rsplit('/').next()).expect("token").to_owned();
        let secret = base32_decode(&core.otp_enrollment_view(&token, t0).expect("view").secret_base32);
        rt.block_on(core.otp_confirm(&token, &otp::hotp(Algorithm::Sha1, &secret, otp::step_of(t0.0 / 1000, 30), 6), t0)).expect("confirm");
        let disabled = |core: &Core| core.events(&crate::store::events::EventFilter { event_type: Some(EventType::MfaDisabled), limit: 100, ..Default::default() }).expect("events").len();
        let ev = Event::new(EventType::MfaDisabled, Severity::High, "x", t0).user(Some(user.id), Some("erin"));
        // The loser's write, as it reaches the store after the winner's.
        assert!(core.store.disable_otp(user.id, std::slice::from_ref(&ev), t0).expect("first"));
        assert!(!core.store.disable_otp(user.id, std::slice::from_ref(&ev), t0).expect("second"));
        assert_eq!(disabled(&core), 1, "only the write that removed the factor recorded its event");
        let err = rt.block_on(core.disable_otp(&user, &actor, t0)).expect_err("nothing left");
        assert_eq!(err.to_string(), "two-factor authentication is not enabled for erin: nothing to disable");
        assert_eq!(disabled(&core), 1);
    }

    /// Many sessions racing with the same code: exactly one gets in, and
    /// the throttle counts every wrong guess.
    #[test]
    fn concurrent_checks_accept_a_code_once_and_count_every_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = Arc::new(core(dir.path()));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let t0 = Millis(1_800_000_000_000);
        let user = rt.block_on(core.add_user("dave", Some("dave@example.org"), &Secret::new("Correct-Horse-Battery-9".into()), &[], &Actor::Cli("t".into()), t0)).expect("user");
        rt.block_on(core.start_otp_enrollment(&user, Method::Totp, &Actor::Cli("t".into()), t0)).expect("enroll");
        let body = core.due_mail(t0, 10).expect("mail").remove(0).body.text;
        let token = body.lines().find(|l| l.contains("/otp/enroll/")).and_then(|l| l.trim().rsplit('/').next()).expect("token").to_owned();
        let secret = base32_decode(&core.otp_enrollment_view(&token, t0).expect("view").secret_base32);
        let code_at = |t: Millis| otp::hotp(Algorithm::Sha1, &secret, otp::step_of(t.0 / 1000, 30), 6);
        rt.block_on(core.otp_confirm(&token, &code_at(t0), t0)).expect("confirm");
        let t1 = t0.plus(std::time::Duration::from_secs(30));
        let good = code_at(t1);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (core, user, good) = (core.clone(), user.clone(), good.clone());
                std::thread::spawn(move || core.check_login_code(&user, &good, t1).expect("check"))
            })
            .collect();
        let verdicts: Vec<CodeVerdict> = threads.into_iter().map(|h| h.join().expect("join")).collect();
        assert_eq!(verdicts.iter().filter(|v| matches!(v, CodeVerdict::Accepted { .. })).count(), 1, "{verdicts:?}");
        // Eight wrong guesses in parallel within one step: at most three are
        // judged (fewer when the replays above already brought the
        // consecutive failures near five), the rest find the factor closed.
        let t2 = t1.plus(std::time::Duration::from_secs(30));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (core, user) = (core.clone(), user.clone());
                std::thread::spawn(move || core.check_login_code(&user, &format!("00000{i}"), t2).expect("check"))
            })
            .collect();
        let verdicts: Vec<CodeVerdict> = threads.into_iter().map(|h| h.join().expect("join")).collect();
        let judged = verdicts.iter().filter(|v| matches!(v, CodeVerdict::Wrong)).count();
        assert!((2..=3).contains(&judged), "{verdicts:?}");
        assert_eq!(verdicts.iter().filter(|v| matches!(v, CodeVerdict::Throttled { .. })).count(), 8 - judged, "{verdicts:?}");
    }

    #[test]
    fn code_factor_closes_after_consecutive_failures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let t0 = Millis(1_800_000_000_000);
        let user = rt.block_on(core.add_user("bob", Some("bob@example.org"), &Secret::new("Correct-Horse-Battery-9".into()), &[], &Actor::Cli("t".into()), t0)).expect("user");
        rt.block_on(core.start_otp_enrollment(&user, Method::Hotp, &Actor::Cli("t".into()), t0)).expect("enroll");
        let body = core.due_mail(t0, 10).expect("mail").remove(0).body.text;
        let token = body.lines().find(|l| l.contains("/otp/enroll/")).and_then(|l| l.trim().rsplit('/').next()).expect("token").to_owned();
        let secret = base32_decode(&core.otp_enrollment_view(&token, t0).expect("view").secret_base32);
        let hotp = |c| otp::hotp(Algorithm::Sha1, &secret, c, 6);
        // A token that ran ahead (counter 3) still confirms; the server resyncs.
        rt.block_on(core.otp_confirm(&token, &hotp(3), t0)).expect("confirm");
        assert_eq!(core.check_login_code(&user, &hotp(3), t0).expect("check"), CodeVerdict::UsedForEnrollment);
        assert_eq!(core.check_login_code(&user, &hotp(3), t0.plus(ENROLLMENT_REPLAY_WINDOW).plus(std::time::Duration::from_secs(1))).expect("check"), CodeVerdict::Replay, "long after enrollment");
        assert_eq!(core.check_login_code(&user, &hotp(9), t0).expect("check"), CodeVerdict::Accepted { kind: "hotp" });
        // Five wrong codes, one per step, close the factor for 15 minutes.
        let mut t = t0;
        for _ in 0..5 {
            t = t.plus(std::time::Duration::from_secs(30));
            assert_eq!(core.check_login_code(&user, "123456x", t).expect("check"), CodeVerdict::Wrong);
        }
        let closed = core.check_login_code(&user, &hotp(10), t).expect("check");
        assert_eq!(closed, CodeVerdict::Throttled { until: t.plus(std::time::Duration::from_secs(900)) });
        let later = t.plus(std::time::Duration::from_secs(901));
        assert_eq!(core.check_login_code(&user, &hotp(10), later).expect("check"), CodeVerdict::Accepted { kind: "hotp" });
    }

    #[test]
    fn closure_lengths_double_and_are_bounded() {
        let m = |mins: u64| std::time::Duration::from_secs(mins * 60);
        let cases: &[(u32, std::time::Duration)] = &[(0, m(15)), (1, m(30)), (2, m(60)), (6, m(960)), (7, m(1440)), (16, m(1440)), (40, m(1440)), (u32::MAX, m(1440))];
        for (closures, want) in cases {
            assert_eq!(closure_length(m(15), m(1440), *closures), *want, "closures={closures}");
        }
    }

    /// Whoever has the password closes the factor again and again: the
    /// closures stay bounded, a backup code gets the owner through one,
    /// and a right code resets the doubling.
    #[test]
    fn closures_are_bounded_reset_by_success_and_let_backup_codes_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let t0 = Millis(1_800_000_000_000);
        let user = rt.block_on(core.add_user("erin", Some("erin@example.org"), &Secret::new("Correct-Horse-Battery-9".into()), &[], &Actor::Cli("t".into()), t0)).expect("user");
        rt.block_on(core.start_otp_enrollment(&user, Method::Hotp, &Actor::Cli("t".into()), t0)).expect("enroll");
        let body = core.due_mail(t0, 10).expect("mail").remove(0).body.text;
        let token = body.lines().find(|l| l.contains("/otp/enroll/")).and_then(|l| l.trim().rsplit('/').next()).expect("token").to_owned();
        let secret = base32_decode(&core.otp_enrollment_view(&token, t0).expect("view").secret_base32);
        let hotp = |c| otp::hotp(Algorithm::Sha1, &secret, c, 6);
        let codes = rt.block_on(core.otp_confirm(&token, &hotp(0), t0)).expect("confirm");
        let secs = std::time::Duration::from_secs;
        // Five wrong codes (one per step) close the factor; returns the end.
        let close = |t: &mut Millis| -> Millis {
            for _ in 0..5 {
                *t = t.plus(secs(30));
                assert_eq!(core.check_login_code(&user, "999999x", *t).expect("check"), CodeVerdict::Wrong);
            }
            match core.check_login_code(&user, &hotp(1), *t).expect("check") {
                CodeVerdict::Throttled { until } => until,
                other => panic!("not closed: {other:?}"),
            }
        };
        let mut t = t0;
        let mut lengths = Vec::new();
        for _ in 0..9 {
            let until = close(&mut t);
            lengths.push((until.0 - t.0) / 60_000);
            t = until;
        }
        assert_eq!(lengths, vec![15, 30, 60, 120, 240, 480, 960, 1440, 1440], "doubling, bounded by max_lockout (24h)");

        // While closed: a wrong backup code is judged without extending the
        // closure; a right one gets in and opens the factor.
        let until = close(&mut t);
        assert_eq!(core.check_login_code(&user, "aaaaa-aaaaa", t).expect("check"), CodeVerdict::Wrong);
        assert_eq!(core.mfa_status(&user, t).expect("status").code_factor_closed_until, Some(until.rfc3339()), "not extended");
        assert_eq!(core.check_login_code(&user, &codes[0], t).expect("check"), CodeVerdict::Accepted { kind: "backup_code" });
        assert_eq!(core.mfa_status(&user, t).expect("status").code_factor_closed_until, None, "opened again");
        assert_eq!(core.check_login_code(&user, &hotp(1), t).expect("check"), CodeVerdict::Accepted { kind: "hotp" });
        // The success reset the doubling: the next closure is 15 minutes.
        let until = close(&mut t);
        assert_eq!((until.0 - t.0) / 60_000, 15);
        // After it ends, a right code also resets it.
        t = until;
        assert_eq!(core.check_login_code(&user, &hotp(2), t).expect("check"), CodeVerdict::Accepted { kind: "hotp" });
        let until = close(&mut t);
        assert_eq!((until.0 - t.0) / 60_000, 15);
    }

    #[test]
    fn backup_codes_shape_and_cleaning() {
        let c = new_backup_code().expect("code");
        assert_eq!(c.len(), 11);
        assert_eq!(clean_backup_code(&c).as_deref(), Some(c.as_str()));
        assert_eq!(clean_backup_code(&c.to_uppercase()).as_deref(), Some(c.as_str()));
        assert_eq!(clean_backup_code(&c.replace('-', " ")).as_deref(), Some(c.as_str()));
        for bad in ["123456", "abcde-fghi", "abcde-fghil", "abcde-fgh1j", ""] {
            assert_eq!(clean_backup_code(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod web_client_tests {
    use super::*;

    /// (ip, user agent) → (event ip, event user_agent detail)
    #[test]
    fn stamp_table() {
        let long = "a".repeat(300);
        // 255 ASCII bytes then a 2-byte character across the 256-byte bound.
        let straddling = format!("{}é", "b".repeat(255));
        let cases: Vec<(Option<&str>, Option<&str>, Option<&str>, Option<String>)> = vec![
            (None, None, None, None),
            (Some("127.0.0.1"), Some("curl/8"), Some("127.0.0.1"), Some("curl/8".into())),
            (Some("::ffff:10.0.0.1"), None, Some("10.0.0.1"), None),
            (Some("2001:db8::1"), Some("\u{1b}[31mred"), Some("2001:db8::1"), Some("\u{1b}[31mred".into())),
            (None, Some(&long), None, Some("a".repeat(256))),
            (None, Some(&straddling), None, Some("b".repeat(255))),
        ];
        for (i, (ip, agent, want_ip, want_agent)) in cases.into_iter().enumerate() {
            let client = WebClient { ip: ip.map(|s| s.parse().unwrap()), user_agent: agent.map(str::to_owned) };
            let e = client.stamp(Event::new(EventType::MfaEnabled, Severity::Medium, "x", Millis(0)));
            assert_eq!(e.ip.as_deref(), want_ip, "case {i}");
            assert_eq!(e.details.get("user_agent").and_then(|v| v.as_str()).map(str::to_owned), want_agent, "case {i}");
        }
    }
}
