//! Account administration: users, passwords under policy, locks, groups,
//! SSH keys. Every change is an event; who made it is the `actor`.

use super::password::{self, Policy, Violation};
use super::{Core, Error, Result};
use crate::model::{valid_username, Event, EventType, Millis, Secret, Severity, SshKey, User};
use crate::store::events::EventFilter;
use crate::store::users::NewUser;
use sha2::Digest;

/// Who asked for a change, for the event log.
#[derive(Clone, Debug)]
pub enum Actor {
    /// The sysop at the command line (the OS user name when known).
    Cli(String),
    /// The user themself, from a session.
    User { id: i64, session: Option<i64>, ip: String },
    /// A response playbook, by name.
    Playbook(String),
}

impl Actor {
    pub(crate) fn describe(&self) -> String {
        match self {
            Actor::Cli(who) => format!("cli:{who}"),
            Actor::User { id, .. } => format!("user:{id}"),
            Actor::Playbook(name) => format!("playbook:{name}"),
        }
    }
    pub(crate) fn stamp(&self, e: Event) -> Event {
        let e = e.detail("actor", self.describe());
        match self {
            Actor::Cli(_) | Actor::Playbook(_) => e,
            Actor::User { session, ip, .. } => e.session(*session).ip(Some(ip)),
        }
    }
}

impl Core {
    fn policy(&self) -> Policy {
        let p = &self.settings().passwords;
        Policy { min_length: p.min_length, max_length: p.max_length, min_strength: p.min_strength, history: p.history }
    }

    /// A user by name (case-insensitive) or, for an all-digit argument that
    /// names no user, by id.
    pub fn find_user(&self, name_or_id: &str) -> Result<User> {
        if let Some(u) = self.store.user_by_name(name_or_id)? {
            return Ok(u);
        }
        if let Ok(id) = name_or_id.parse::<i64>() {
            if let Some(u) = self.store.user_by_id(id)? {
                return Ok(u);
            }
        }
        Err(Error::NoSuchUser(crate::model::escape_control(name_or_id)))
    }

    pub fn list_users(&self) -> Result<Vec<User>> {
        Ok(self.store.list_users()?)
    }

    pub fn events(&self, filter: &EventFilter) -> Result<Vec<crate::model::StoredEvent>> {
        Ok(self.store.events(filter)?)
    }

    /// A user's newest events (for their own account menu).
    pub fn user_events(&self, user_id: i64, limit: usize) -> Result<Vec<crate::model::StoredEvent>> {
        self.events(&EventFilter { user_id: Some(user_id), limit, ..Default::default() })
    }

    pub fn last_event_id(&self) -> Result<i64> {
        Ok(self.store.last_event_id()?)
    }

    /// `security events verify`: the whole hash chain of the event log,
    /// in id order, up to its first break.
    /// `progress(rows checked, rows in the chain)` now and then.
    pub fn verify_event_chain(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<crate::store::chain::ChainReport> {
        Ok(self.store.verify_event_chain_with(progress)?)
    }

    /// The chain's head (newest event id and hash). Not called yet: the
    /// export stream (issue 9 item 6) is to write it every N events.
    pub fn event_chain_head(&self) -> Result<crate::store::chain::ChainHead> {
        Ok(self.store.event_chain_head()?)
    }

    pub fn devices_of(&self, user_id: i64) -> Result<Vec<crate::store::devices::DeviceRow>> {
        Ok(self.store.devices_of(user_id)?)
    }

    pub fn health(&self) -> Result<()> {
        self.store.gauges()?;
        Ok(())
    }

    pub fn sessions(&self, user_id: Option<i64>, limit: usize) -> Result<Vec<crate::store::sessions::SessionRow>> {
        Ok(self.store.sessions(user_id, limit)?)
    }

    /// Checks a candidate password against the policy (and the history of
    /// `user` when given). On failure a `password_rejected` event names the
    /// failed rules, never the password.
    async fn vet_password(&self, password: &Secret<String>, username: &str, email: Option<&str>, user: Option<&User>, actor: &Actor, now: Millis) -> Result<()> {
        let history = match user {
            Some(u) => self.store.password_history(u.id, self.settings().passwords.history)?,
            None => Vec::new(),
        };
        let policy = self.policy();
        let (pw, name, mail) = (password.clone(), username.to_owned(), email.map(str::to_owned));
        let verdict = self
            .kdf
            .run(move || policy.check(pw.expose(), &password::Context { username: &name, email: mail.as_deref(), history: &history }))
            .await
            .map_err(|_| Error::Busy)?;
        if let Err(violations) = verdict {
            let rules: Vec<&str> = violations.iter().map(rule_name).collect();
            let ev = Event::new(EventType::PasswordRejected, Severity::Low, "a new password was refused by the policy", now)
                .user(user.map(|u| u.id), Some(username))
                .detail("rules", rules);
            self.events.record(actor.stamp(ev)).await;
            return Err(Error::PasswordRejected(password::describe(&violations)));
        }
        Ok(())
    }

    async fn hash(&self, password: &Secret<String>) -> Result<String> {
        let iterations = self.settings().passwords.iterations;
        let pw = password.clone();
        self.kdf.run(move || password::hash(pw.expose(), iterations)).await.map_err(|_| Error::Busy)
    }

    pub async fn add_user(&self, username: &str, email: Option<&str>, password: &Secret<String>, groups: &[String], actor: &Actor, now: Millis) -> Result<User> {
        if !valid_username(username) {
            return Err(Error::InvalidUsername(username.to_owned()));
        }
        if let Some(e) = email {
            validate_email(e)?;
        }
        for g in groups {
            validate_group(g)?;
        }
        if self.store.user_by_name(username)?.is_some() {
            return Err(Error::Conflict(format!("user {username:?} already exists")));
        }
        self.vet_password(password, username, email, None, actor, now).await?;
        let hash = self.hash(password).await?;
        let user = self.store.create_user(&NewUser { username, email, password_hash: &hash, groups, now })?;
        let ev = Event::new(EventType::UserCreated, Severity::Info, format!("user {} created", user.username), now)
            .user(Some(user.id), Some(&user.username))
            .detail("groups", groups.to_vec());
        self.events.record(actor.stamp(ev)).await;
        Ok(user)
    }

    pub async fn change_password(&self, user: &User, password: &Secret<String>, actor: &Actor, now: Millis) -> Result<()> {
        self.vet_password(password, &user.username, user.email.as_deref(), Some(user), actor, now).await?;
        let hash = self.hash(password).await?;
        self.store.set_password(user.id, &hash, self.settings().passwords.history, now)?;
        let ev = Event::new(EventType::PasswordChanged, Severity::Info, format!("password of {} changed", user.username), now)
            .user(Some(user.id), Some(&user.username));
        self.events.record(actor.stamp(ev)).await;
        Ok(())
    }

    /// Checks the current password of a logged-in user (the account menu
    /// asks for it before a change: OWASP ASVS 2.1.6). The hash runs on the
    /// bounded pool (`Busy` when full). A wrong one changes nothing and is
    /// a failure like a failed login: a `login_failed` event (reason
    /// `wrong_current_password`, stage `password_change`) that counts
    /// toward the address's penalties, live and when they are rebuilt. From
    /// an address that is held off no hash runs: refused, and an event.
    pub async fn verify_current_password(&self, auth: &super::login::Authenticated, ip: std::net::IpAddr, password: &Secret<String>, now: Millis) -> Result<bool> {
        let user = &auth.user;
        let addr = ip.to_string();
        // A refused or failed check is a `login_failed` of this session.
        let failed = |description: String, reason: &str| {
            Event::new(EventType::LoginFailed, Severity::Low, description, now)
                .user(Some(user.id), Some(&user.username))
                .ip(Some(&addr))
                .session(Some(auth.session_id))
                .device(Some(auth.device_id))
                .detail("reason", reason)
                .detail("method", "password")
                .detail("stage", "password_change")
        };
        // As for a login: one check at a time per address, and no hash at
        // all once the address is held off.
        let _turn = self.admission.turn(ip).await;
        if let Err(super::admission::Refusal::Penalized(until)) = self.admission.check_attempt(ip, now) {
            self.record(failed(format!("password check refused for {}: the address is held off", user.username), "address_penalized")).await;
            return Err(Error::Invalid(format!("checks from {} are held off until {}", self.admission.key(ip), until.rfc3339())));
        }
        let stored = self.store.user_by_id(auth.user.id)?.and_then(|u| u.password_hash);
        let iterations = self.settings().passwords.iterations;
        let matched = match stored {
            Some(phc) if password.expose().len() <= password::MAX_INPUT_BYTES => {
                let pw = password.clone();
                let verdict = self.kdf.run_counted(move || password::verify_padded(pw.expose(), Some(phc.expose().as_str()), iterations)).await.map_err(|_| Error::Busy)?;
                matches!(verdict, password::Verify::Match { .. })
            }
            _ => false,
        };
        if matched {
            return Ok(true);
        }
        self.record(failed(format!("password check failed for {}: wrong current password", user.username), "wrong_current_password")).await;
        if let Some(until) = self.admission.record_failure(ip, now) {
            self.record_penalty_of(ip, until, now).await;
        }
        Ok(false)
    }

    /// Returns whether membership changed.
    pub async fn set_group(&self, user: &User, group: &str, member: bool, actor: &Actor, now: Millis) -> Result<bool> {
        validate_group(group)?;
        let changed = self.store.set_group(user.id, group, member)?;
        if changed {
            let what = if member { "added to" } else { "removed from" };
            let ev = Event::new(EventType::UserUpdated, Severity::Medium, format!("{} {what} group {group}", user.username), now)
                .user(Some(user.id), Some(&user.username))
                .detail("group", group)
                .detail("member", member);
            self.events.record(actor.stamp(ev)).await;
        }
        Ok(changed)
    }

    pub async fn add_ssh_key(&self, user: &User, line: &str, actor: &Actor, now: Millis) -> Result<SshKey> {
        let key = parse_openssh_public_key(line).map_err(Error::Invalid)?;
        let id = self.store.add_ssh_key(user.id, &key.algorithm, &key.openssh, &key.fingerprint, &key.comment, now)?;
        let ev = Event::new(EventType::SshKeyAdded, Severity::Medium, format!("SSH key added for {}", user.username), now)
            .user(Some(user.id), Some(&user.username))
            .detail("fingerprint", key.fingerprint.clone())
            .detail("algorithm", key.algorithm.clone());
        self.events.record(actor.stamp(ev)).await;
        self.store
            .ssh_keys(user.id)?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| Error::Invalid("the key vanished after it was added".into()))
    }

    pub fn ssh_keys(&self, user: &User) -> Result<Vec<SshKey>> {
        Ok(self.store.ssh_keys(user.id)?)
    }

    pub async fn remove_ssh_key(&self, key_id: i64, actor: &Actor, now: Millis) -> Result<String> {
        let (user_id, fingerprint) = self.store.remove_ssh_key(key_id)?;
        let username = self.store.user_by_id(user_id)?.map(|u| u.username);
        let ev = Event::new(EventType::SshKeyRemoved, Severity::Medium, format!("SSH key {key_id} removed"), now)
            .user(Some(user_id), username.as_deref())
            .detail("fingerprint", fingerprint.clone());
        self.events.record(actor.stamp(ev)).await;
        Ok(fingerprint)
    }
}

/// What the login flow must do about a user's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordStatus {
    Fine,
    /// Older than `max_age_days`: the user is asked to change it.
    Old { age_days: u32, max_days: u32 },
    /// A sysop asked for a reset, or it is older than
    /// `force_change_after_days`: nothing else happens until it changes.
    MustChange,
}

/// What happened to an account since its previous login, for the welcome
/// screen (as `pam_lastlog` and GDM tell it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinceLastLogin {
    /// Failed logins since (this login's own wrong tries included).
    pub failures: i64,
    /// The newest failure: when, and from which address.
    pub last_failure: Option<(Millis, Option<String>)>,
    /// Devices first seen since, other than this login's: their names,
    /// newest first (at most [`AWAY_DEVICES_SHOWN`]), and how many.
    pub new_devices: Vec<String>,
    pub new_device_count: usize,
    /// Backup codes used since, and how many are left when any was.
    pub backup_codes_used: usize,
    pub backup_codes_left: Option<u32>,
    /// Days until the password reaches `passwords.max_age_days`, when that
    /// is within [`PASSWORD_NOTICE_DAYS`].
    pub password_days_left: Option<u32>,
}

/// Whole days since the password was set (or the account made).
fn password_age_days(user: &User, now: Millis) -> u32 {
    let changed = user.password_changed_at.unwrap_or(user.created_at);
    ((now.0 - changed.0).max(0) / 86_400_000) as u32
}

/// How many new devices the welcome screen names.
pub const AWAY_DEVICES_SHOWN: usize = 3;
/// From how many days before its maximum age a password is announced.
pub const PASSWORD_NOTICE_DAYS: u32 = 14;

impl Core {
    /// What happened to `user` since `since` (their previous login), for a
    /// login made now on the device `device_id`.
    pub fn since_last_login(&self, user: &User, since: Millis, device_id: i64, now: Millis) -> Result<SinceLastLogin> {
        let after = Millis(since.0 + 1);
        let of = |t: EventType, limit: usize| self.store.events(&EventFilter { user_id: Some(user.id), event_type: Some(t), since: Some(after), limit, ..Default::default() });
        let failures = self.store.failures_since(user.id, after)?;
        let last_failure = if failures > 0 { of(EventType::LoginFailed, 1)?.first().and_then(|e| Millis::parse_rfc3339(&e.created_at).map(|at| (at, e.ip.clone()))) } else { None };
        let devices: Vec<_> = of(EventType::DeviceNew, 100)?.into_iter().filter(|e| e.device_id != Some(device_id)).collect();
        let backup = of(EventType::BackupCodeUsed, 100)?.len();
        let p = &self.settings().passwords;
        let age_days = password_age_days(user, now);
        let password_days_left = p.max_age_days.checked_sub(age_days).filter(|left| *left > 0 && *left <= PASSWORD_NOTICE_DAYS);
        Ok(SinceLastLogin {
            failures,
            last_failure,
            new_device_count: devices.len(),
            new_devices: devices.iter().take(AWAY_DEVICES_SHOWN).map(|e| e.details["device_name"].as_str().unwrap_or("a device").to_owned()).collect(),
            backup_codes_used: backup,
            backup_codes_left: if backup > 0 { Some(self.store.backup_codes_left(user.id)?) } else { None },
            password_days_left,
        })
    }

    pub fn password_status(&self, user: &User, now: Millis) -> PasswordStatus {
        if user.must_reset_password {
            return PasswordStatus::MustChange;
        }
        let p = &self.settings().passwords;
        let age_days = password_age_days(user, now);
        if p.force_change_after_days.is_some_and(|d| age_days >= d) {
            return PasswordStatus::MustChange;
        }
        if age_days >= p.max_age_days {
            return PasswordStatus::Old { age_days, max_days: p.max_age_days };
        }
        PasswordStatus::Fine
    }

    /// Sets a password chosen by a sysop and makes the next login change it.
    pub async fn reset_password(&self, user: &User, password: &Secret<String>, actor: &Actor, now: Millis) -> Result<()> {
        self.change_password(user, password, actor, now).await?;
        self.store.set_must_reset(user.id, true)?;
        if matches!(actor, Actor::Cli(_)) {
            self.mail_password_reset(user, "You will be asked to choose your own password at the next login.", now);
        }
        Ok(())
    }

    /// Mails the user that the sysop set their password (never the
    /// password itself). False when the account has no email address.
    pub fn mail_password_reset(&self, user: &User, next: &str, now: Millis) -> bool {
        let s = self.settings();
        self.mail_user(user, "password_reset", &[("username", &user.username), ("issuer", &s.mfa.issuer), ("time", &s.clock.show_zoned(now)), ("next", next)], now)
    }
}

/// What `delete_user` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// Sessions that were open and are now ended.
    pub sessions_ended: usize,
    pub keys_removed: usize,
}

impl Core {
    /// The group names the configuration defines (`groups:`), lowercase.
    pub fn known_groups(&self) -> Vec<String> {
        self.settings().group_levels.keys().cloned().collect()
    }

    /// Refuses a group the configuration does not define, listing the ones
    /// it does (a typo would otherwise create a group no rule knows).
    pub fn check_known_group(&self, group: &str) -> Result<()> {
        validate_group(group)?;
        let known = self.known_groups();
        if known.iter().any(|k| k.eq_ignore_ascii_case(group)) {
            return Ok(());
        }
        let listed = if known.is_empty() { "none (the configuration's groups section is empty)".to_owned() } else { known.join(", ") };
        Err(Error::Invalid(format!("unknown group \"{}\": the configuration defines {listed}", crate::model::escape_control(group))))
    }

    /// Changes an account's email address. Links mailed to the old address
    /// stop working; returns how many did.
    pub async fn set_email(&self, user: &User, email: &str, actor: &Actor, now: Millis) -> Result<usize> {
        validate_email(email)?;
        let voided = self.store.set_email(user.id, Some(email), now)?;
        let ev = Event::new(EventType::UserUpdated, Severity::Medium, format!("email address of {} changed", user.username), now)
            .user(Some(user.id), Some(&user.username))
            .detail("field", "email")
            .detail("links_voided", voided);
        self.events.record(actor.stamp(ev)).await;
        Ok(voided)
    }

    /// Deletes an account: its open sessions end (a live connection in
    /// this process is told at once; the daemon notices a deletion made by
    /// another process within a second, see `on_database_change`), its
    /// secrets, keys and links are removed, and its security events stay,
    /// marked by a `deleted_users` row and a `user_updated` event with
    /// `deleted: true`.
    pub async fn delete_user(&self, user: &User, actor: &Actor, now: Millis) -> Result<Deleted> {
        let keys_removed = self.store.ssh_keys(user.id)?.len();
        // The open sessions are read in the deletion's own transaction, so
        // a login that starts meanwhile cannot slip past it.
        let sessions = self.store.delete_user(user.id, &user.username, &actor.describe(), now, |sessions| {
            let mut events: Vec<Event> = sessions
                .iter()
                .map(|sid| {
                    actor
                        .stamp(
                            Event::new(EventType::SessionRevoked, Severity::Medium, format!("session {sid} of {} ended: account deleted", user.username), now)
                                .user(Some(user.id), Some(&user.username))
                                .detail("reason", super::sessions::DELETED),
                        )
                        .session(Some(*sid))
                })
                .collect();
            events.push(
                actor.stamp(
                    Event::new(EventType::UserUpdated, Severity::High, format!("account {} deleted", user.username), now)
                        .user(Some(user.id), Some(&user.username))
                        .detail("deleted", true)
                        .detail("sessions_ended", sessions.len())
                        .detail("keys_removed", keys_removed),
                ),
            );
            events
        })?;
        self.cut_live(sessions.iter().copied(), super::sessions::DELETED);
        Ok(Deleted { sessions_ended: sessions.len(), keys_removed })
    }

    /// A deleted account by name: its former id.
    pub fn deleted_user_id(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.store.deleted_user(name)?.map(|(id, _, _)| id))
    }
}

fn rule_name(v: &Violation) -> &'static str {
    match v {
        Violation::TooShort { .. } => "min_length",
        Violation::TooLong { .. } => "max_length",
        Violation::InputTooLarge => "input_too_large",
        Violation::Common => "common",
        Violation::ContainsUsername => "contains_username",
        Violation::ContainsEmail => "contains_email",
        Violation::TooWeak { .. } => "strength",
        Violation::Reused { .. } => "history",
    }
}

fn validate_email(e: &str) -> Result<()> {
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.starts_with('.') && !domain.ends_with('.'))
        && e.matches('@').count() == 1
        && !e.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid email address \"{}\"", crate::model::escape_control(e))))
    }
}

fn validate_group(g: &str) -> Result<()> {
    if valid_username(g) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid group name \"{}\": use 1-32 letters, digits, '_', '-' or '.'", crate::model::escape_control(g))))
    }
}

/// An OpenSSH public key line, checked for shape.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedKey {
    pub algorithm: String,
    /// `algorithm base64`, without the comment.
    pub openssh: String,
    /// `SHA256:` and unpadded base64 of the SHA-256 of the key blob, as
    /// OpenSSH prints it.
    pub fingerprint: String,
    pub comment: String,
}

const KEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Parses `ALG BASE64 [COMMENT]`. The blob must be well-formed SSH wire
/// data naming the same algorithm; the signature check at login is done by
/// the SSH layer.
pub fn parse_openssh_public_key(line: &str) -> std::result::Result<ParsedKey, String> {
    use base64::Engine as _;
    let line = line.trim();
    let mut parts = line.splitn(3, char::is_whitespace);
    let alg = parts.next().unwrap_or("");
    let b64 = parts.next().unwrap_or("").trim();
    let comment = parts.next().unwrap_or("").trim();
    if !KEY_ALGORITHMS.contains(&alg) {
        return Err(format!(
            "unsupported key type \"{}\": expected one of {}",
            crate::model::escape_control(alg),
            KEY_ALGORITHMS.join(", ")
        ));
    }
    let blob = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| "the key data is not valid base64".to_string())?;
    let mut fields = Vec::new();
    let mut rest = &blob[..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err("the key data is truncated".into());
        }
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 4 + n {
            return Err("the key data is truncated".into());
        }
        fields.push(&rest[4..4 + n]);
        rest = &rest[4 + n..];
    }
    if fields.first().copied() != Some(alg.as_bytes()) {
        return Err(format!("the key data does not match its type {alg}"));
    }
    let expected_fields = match alg {
        "ssh-ed25519" => 2,
        "ssh-rsa" | "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521" | "sk-ssh-ed25519@openssh.com" => 3,
        _ => 4,
    };
    if fields.len() != expected_fields || (alg == "ssh-ed25519" && fields[1].len() != 32) {
        return Err(format!("the key data is not a valid {alg} key"));
    }
    if comment.chars().any(char::is_control) || comment.len() > 200 {
        return Err("the key comment holds control characters or is too long".into());
    }
    let digest = sha2::Sha256::digest(&blob);
    Ok(ParsedKey {
        algorithm: alg.to_owned(),
        openssh: format!("{alg} {b64}"),
        fingerprint: format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)),
        comment: comment.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_lines() {
        // Key and fingerprint from `ssh-keygen -t ed25519` / `ssh-keygen -lf`.
        let good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOFk1RetgXlX9zCdMPVg/2AEPJlxhMqRL+K++oCOX7Vl alice@host";
        let k = parse_openssh_public_key(good).expect("valid key");
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(k.comment, "alice@host");
        assert_eq!(k.fingerprint, "SHA256:ZdpsI7vXl01Lg4ov3K9jqW7uLOhRFYQHqtfCfHXkAnE");
        let bad: &[(&str, &str)] = &[
            ("ssh-dss AAAA", "unsupported key type \"ssh-dss\": expected one of ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com"),
            ("ssh-ed25519 !!!", "the key data is not valid base64"),
            ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOFk1RetgXlX9zCdMPVg/2AEPJlxhMqRL+K++oCOX7", "the key data is not valid base64"),
            ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOFk1RetgXlX9zCdMPVg/2AEPJlxhMqRL+K++oCOX7Vl", "the key data does not match its type ssh-rsa"),
            ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAAA==", "the key data is not a valid ssh-ed25519 key"),
            ("\x1b[2J AAAA", "unsupported key type \"\\x1b[2J\": expected one of ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com"),
        ];
        for (line, want) in bad {
            assert_eq!(parse_openssh_public_key(line).err().as_deref(), Some(*want), "line {line:?}");
        }
    }

    #[test]
    fn emails() {
        for ok in ["a@b.c", "first.last+tag@example.org"] {
            assert!(validate_email(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "@b", "a@", "a@@b", "a b@c", "a@.b", "x@y\n"] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn what_happened_since_the_last_login() {
        let dir = tempfile::tempdir().unwrap();
        let core = crate::core::test_core(dir.path(), "");
        let settings = crate::config::load::from_text("passwords: {\n  iterations: 1000\n  max_age_days: 30\n}\n", "t.hjson", dir.path()).unwrap();
        core.reload(settings);
        let day = 86_400_000;
        let t0 = Millis(1_800_000_000_000);
        let user = core.store.create_user(&NewUser { username: "alice", email: None, password_hash: "$x", groups: &[], now: t0 }).unwrap();
        let last = Millis(t0.0 + 20 * day);
        let now = Millis(last.0 + 3_600_000);
        let ev = |t: EventType, at: i64, ip: Option<&str>, device: Option<i64>, name: &str| {
            Event::new(t, Severity::Info, "x", Millis(at)).user(Some(user.id), Some("alice")).ip(ip).device(device).detail("device_name", name)
        };
        core.store
            .insert_events(&[
                // Before the last login: not counted.
                ev(EventType::LoginFailed, last.0 - 1000, Some("192.0.2.1"), None, ""),
                ev(EventType::DeviceNew, last.0 - 1000, None, Some(1), "old"),
                ev(EventType::LoginFailed, last.0 + 1000, Some("203.0.113.7"), None, ""),
                ev(EventType::LoginFailed, last.0 + 2000, Some("203.0.113.9"), None, ""),
                ev(EventType::DeviceNew, last.0 + 3000, None, Some(2), "OpenSSH_9.9 on Linux"),
                // This login's own device is not news.
                ev(EventType::DeviceNew, now.0 - 10, None, Some(3), "this one"),
                ev(EventType::BackupCodeUsed, last.0 + 4000, None, None, ""),
            ])
            .unwrap();
        let away = core.since_last_login(&user, last, 3, now).unwrap();
        assert_eq!(away.failures, 2);
        assert_eq!(away.last_failure, Some((Millis(last.0 + 2000), Some("203.0.113.9".into()))));
        assert_eq!((away.new_devices.clone(), away.new_device_count), (vec!["OpenSSH_9.9 on Linux".to_string()], 1));
        assert_eq!((away.backup_codes_used, away.backup_codes_left), (1, Some(0)));
        // Created 20 days and an hour ago, 30 allowed: 10 days left (within 14).
        assert_eq!(away.password_days_left, Some(10));
        // Nothing since a later moment; a password with 20 days left is not news.
        let quiet = core.since_last_login(&user, now, 3, now).unwrap();
        assert_eq!(quiet, SinceLastLogin { password_days_left: Some(10), ..Default::default() });
        let early = core.since_last_login(&user, now, 3, Millis(t0.0 + 5 * day)).unwrap();
        assert_eq!(early.password_days_left, None);
    }
}
