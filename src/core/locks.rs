//! Account locks. A sysop's lock (the CLI) is absolute and ends the
//! account's sessions; a rule's lock (a playbook) is bounded by
//! `locks.max_duration` and never locks the owner out for good: from an
//! address where they completed a full login (every required factor) in
//! the last `locks.known_address_days` days, or from a device they trust
//! that logged in with its key, they still get in, with every factor.
//! `user unlock` lifts either kind. Each change is an event with its cause
//! (source, reason, until, incident, actor).

use super::accounts::Actor;
use super::admission::AddressKey;
use super::devices::DeviceIdentity;
use super::{Core, Error, Result};
use crate::model::{Event, EventType, LockSource, Millis, Severity, User, FOREVER};
use crate::store::locks::NewLock;
use std::net::IpAddr;
use std::time::Duration;

/// The longest a sysop's lock with a duration may last; longer is "until
/// unlocked" (no `--for`).
pub const MAX_SYSOP_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// What `lock_account_by_rule` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    /// Locked (or a shorter rule lock extended) until `until`; `bounded`:
    /// the duration asked for was cut to `locks.max_duration`.
    Locked { until: Millis, bounded: bool },
    /// A lock at least as strong is in force and stays: the sysop's, or a
    /// rule's that lasts as long.
    AlreadyLocked { source: LockSource, until: Millis },
}

/// What a lock means for one login, decided after its first factor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LockVerdict {
    NotLocked,
    /// Refused; the details say why (for the event).
    Refused(serde_json::Value),
    /// A rule lock, and the owner's known address or trusted device: on
    /// with every factor; the details go on the login's events.
    Admitted(serde_json::Value),
}

/// The key under which full logins from `ip` are remembered.
pub(crate) fn address_key(ip: IpAddr) -> String {
    AddressKey::of(ip).to_string()
}

impl Core {
    fn lock_event(&self, user: &User, lock: &NewLock<'_>, now: Millis) -> Event {
        let mut e = Event::new(EventType::AccountLocked, Severity::Medium, format!("account {} locked by {}: {}", user.username, lock.source, lock.reason), now)
            .user(Some(user.id), Some(&user.username))
            .detail("source", lock.source.as_str())
            .detail("reason", lock.reason)
            .detail("until", if lock.until == FOREVER { "unlocked".to_owned() } else { lock.until.rfc3339() });
        if let Some(id) = lock.incident_id {
            e = e.detail("incident_id", id);
        }
        e
    }

    /// A sysop's lock: absolute until `until` (`FOREVER`: until unlocked).
    /// The account's open sessions end (in the same transaction, each with
    /// a `session_revoked`), and live connections are cut with the reason —
    /// at once in this process, within a second in the daemon. Returns how
    /// many sessions ended.
    pub async fn lock_user(&self, user: &User, until: Millis, reason: &str, actor: &Actor, now: Millis) -> Result<usize> {
        if until <= now {
            return Err(Error::Invalid("a lock must end in the future".into()));
        }
        if until != FOREVER && until > now.plus(MAX_SYSOP_DURATION) {
            return Err(Error::Invalid("a lock with a duration lasts at most 365d; lock without one to lock until unlocked".into()));
        }
        let reason = reason.trim();
        let lock = NewLock { until, reason, source: LockSource::Sysop, incident_id: None };
        let why = format!("account locked: {reason}");
        let locked = actor.stamp(self.lock_event(user, &lock, now));
        let ended = self
            .store
            .lock_user(user.id, &lock, false, Some(&why), now, |ended| {
                let mut events = vec![locked.detail("sessions_ended", ended.len())];
                for s in ended {
                    let e = Event::new(EventType::SessionRevoked, Severity::Medium, format!("session {} of {} revoked: {why}", s.id, user.username), now)
                        .user(Some(user.id), Some(&user.username))
                        .detail("reason", why.clone())
                        .detail("cause", "account_locked");
                    let mut e = actor.stamp(e);
                    e.session_id = Some(s.id);
                    e.ip = Some(s.ip.clone());
                    events.push(e);
                }
                events
            })?
            .unwrap_or_default();
        self.cut_live(ended.iter().map(|s| s.id), &why);
        Ok(ended.len())
    }

    /// A rule's lock (the playbook executor): `duration` cut to
    /// `locks.max_duration`; a sysop's lock or a longer rule lock in force
    /// stays as it is. Sessions are not ended here (the playbook's
    /// revoke-sessions action does that), and the owner still gets in from
    /// a known address with every factor (see `lock_verdict`).
    pub async fn lock_account_by_rule(&self, user: &User, duration: Duration, reason: &str, incident_id: Option<i64>, now: Millis) -> Result<LockOutcome> {
        if duration.is_zero() {
            return Err(Error::Invalid("a lock needs a duration longer than 0s".into()));
        }
        let s = self.settings();
        let max = s.locks.max_duration;
        let bounded = duration > max;
        let until = now.plus(duration.min(max));
        let reason = reason.trim();
        let lock = NewLock { until, reason, source: LockSource::Rule, incident_id };
        let e = self
            .lock_event(user, &lock, now)
            .detail("actor", "rule")
            .detail("requested_duration_ms", duration.as_millis() as u64)
            .detail("bounded", bounded)
            .detail("known_address_days", s.locks.known_address_days);
        match self.store.lock_user(user.id, &lock, true, None, now, |_| vec![e])? {
            Some(_) => Ok(LockOutcome::Locked { until, bounded }),
            None => {
                let current = self.store.user_by_id(user.id)?.ok_or_else(|| Error::NoSuchUser(user.username.clone()))?;
                Ok(LockOutcome::AlreadyLocked { source: current.lock_source.unwrap_or(LockSource::Sysop), until: current.locked_until.unwrap_or(until) })
            }
        }
    }

    /// Lifts any lock (sysop's or rule's). Returns whether one was in
    /// force; only then is `account_unlocked` recorded, with what it lifted.
    pub async fn unlock_user(&self, user: &User, actor: &Actor, now: Millis) -> Result<bool> {
        let current = self.store.user_by_id(user.id)?.ok_or_else(|| Error::NoSuchUser(user.username.clone()))?;
        let mut events = Vec::new();
        if current.is_locked(now) {
            let mut e = Event::new(EventType::AccountUnlocked, Severity::Info, format!("account {} unlocked", user.username), now)
                .user(Some(user.id), Some(&user.username))
                .detail("source", current.lock_source.unwrap_or(LockSource::Sysop).as_str())
                .detail("reason", current.lock_reason.clone().unwrap_or_default())
                .detail("until", current.locked_until.map(|t| if t == FOREVER { "unlocked".to_owned() } else { t.rfc3339() }).unwrap_or_default());
            if let Some(id) = current.lock_incident_id {
                e = e.detail("incident_id", id);
            }
            events.push(actor.stamp(e));
        }
        self.store.unlock_user(user.id, &events)?;
        Ok(!events.is_empty())
    }

    /// What the lock of `user` (read at the start of this login) means for
    /// a login from `ip` and `device` whose first factor was right.
    pub(crate) fn lock_verdict(&self, user: &User, ip: IpAddr, device: &DeviceIdentity<'_>, now: Millis) -> Result<LockVerdict> {
        if !user.is_locked(now) {
            return Ok(LockVerdict::NotLocked);
        }
        let source = user.lock_source.unwrap_or(LockSource::Sysop);
        let until = user.locked_until.map(|t| if t == FOREVER { "unlocked".to_owned() } else { t.rfc3339() }).unwrap_or_default();
        let mut details = serde_json::json!({ "source": source.as_str(), "until": until, "reason": user.lock_reason.clone().unwrap_or_default() });
        if let Some(id) = user.lock_incident_id {
            details["incident_id"] = id.into();
        }
        if source == LockSource::Sysop {
            return Ok(LockVerdict::Refused(details));
        }
        // A rule's lock never shuts the owner out: the address of a recent
        // full login still lets them in (they pass every factor as usual),
        // and so does a device they trust (SPEC §10).
        //
        // Only an address known, or a device trusted, before the attack
        // began counts: after a takeover the intruder's own login made
        // their address "known" (and from the account menu they could
        // trust their device), and that must not open the lock the
        // takeover's playbook set.
        let attack_began = match user.lock_incident_id {
            Some(id) => self.store.incident(id)?.map(|i| i.first_event_at),
            None => None,
        };
        let days = self.settings().locks.known_address_days;
        let key = address_key(ip);
        match self.store.known_address(user.id, &key)? {
            Some((first, last)) if attack_began.is_some_and(|t| first >= t) => {
                details["known_address"] = "since_attack".into();
                details["first_full_login_at"] = first.rfc3339().into();
                details["last_full_login_at"] = last.rfc3339().into();
            }
            Some((_, last)) if last >= now.minus(Duration::from_secs(u64::from(days) * 86_400)) => {
                details["admitted"] = "known_address".into();
                details["last_full_login_at"] = last.rfc3339().into();
                return Ok(LockVerdict::Admitted(details));
            }
            Some((_, last)) => {
                details["known_address"] = "expired".into();
                details["last_full_login_at"] = last.rfc3339().into();
                details["known_address_days"] = days.into();
            }
            None => {
                details["known_address"] = false.into();
            }
        }
        // A trusted device counts only with its key: the version string
        // and the KEXINIT (HASSH) are public and anyone's client can send
        // the same ones, so without a key a "trusted" identity would open
        // the lock to whoever guesses the password with a common client
        // (the very attack the lock answers). The key's signature is proof
        // that the client holds it.
        match self.trusted_device(user, device)? {
            Some(d) if attack_began.is_some_and(|t| d.trusted_at.as_deref().and_then(Millis::parse_rfc3339).is_none_or(|at| at >= t)) => {
                details["trusted_device"] = "since_attack".into();
                details["device_id"] = d.id.into();
                Ok(LockVerdict::Refused(details))
            }
            Some(d) if device.key_fingerprint.is_some() => {
                details["admitted"] = "trusted_device".into();
                details["device_id"] = d.id.into();
                details["device_name"] = d.device_name.into();
                Ok(LockVerdict::Admitted(details))
            }
            Some(d) => {
                details["trusted_device"] = "without_key".into();
                details["device_id"] = d.id.into();
                Ok(LockVerdict::Refused(details))
            }
            None => {
                details["trusted_device"] = false.into();
                Ok(LockVerdict::Refused(details))
            }
        }
    }

    /// Remembers that `user` completed a full login (every required
    /// factor) from `ip`.
    pub(crate) fn record_full_login(&self, user: &User, ip: IpAddr, now: Millis) {
        if let Err(e) = self.store.record_known_address(user.id, &address_key(ip), now) {
            tracing::warn!(error = %e, "recording a known address");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixture::{Fixture, PASSWORD, T0};
    use crate::core::login::{Attempt, Credential, Outcome};
    use crate::model::Secret;

    const DAY: Duration = Duration::from_secs(86_400);

    fn last_failure(core: &Core) -> crate::model::StoredEvent {
        let f = core.events(&crate::store::events::EventFilter { event_type: Some(EventType::LoginFailed), limit: 1, ..Default::default() }).expect("events");
        f.into_iter().next().expect("a login_failed event")
    }

    /// The rule lock's exception, with a fixed clock: the owner's known
    /// address (a full login within 30 days, IPv6 per /64) gets in; an
    /// unknown address, an address last used 31 days ago, and anyone under
    /// a sysop's lock do not; refusals say why.
    #[test]
    fn a_rule_lock_admits_the_owner_from_a_known_address_only() {
        let f = Fixture::new("", None);
        let (core, rt, sysop, alice) = (&f.core, &f.rt, &f.sysop, &f.alice);
        let t0 = T0;
        // Full logins: 192.0.2.1 and 2001:db8:1:1::5 now, 192.0.2.9 31 days before the lock.
        let old = t0;
        assert!(matches!(f.login("192.0.2.9", None, old), Outcome::Accepted(_)));
        let now = t0.plus(31 * DAY);
        for ip in ["192.0.2.1", "2001:db8:1:1::5"] {
            assert!(matches!(f.login(ip, None, now.minus(DAY)), Outcome::Accepted(_)), "{ip}");
        }
        let outcome = rt.block_on(core.lock_account_by_rule(alice, Duration::from_secs(3600), "brute force", Some(7), now)).expect("lock");
        assert_eq!(outcome, LockOutcome::Locked { until: now.plus(Duration::from_secs(3600)), bounded: false });

        let cases: &[(&str, bool, Option<serde_json::Value>)] = &[
            ("192.0.2.1", true, None),
            // Another host of the same /64.
            ("2001:db8:1:1::77", true, None),
            ("192.0.2.2", false, Some(false.into())),
            ("2001:db8:1:2::5", false, Some(false.into())),
            ("192.0.2.9", false, Some("expired".into())),
        ];
        for (ip, admitted, known) in cases {
            match f.login(ip, None, now) {
                Outcome::Accepted(_) => assert!(admitted, "{ip} was admitted"),
                other => {
                    assert!(!admitted, "{ip}: {other:?}");
                    let e = last_failure(core);
                    assert_eq!(e.details["reason"], "locked", "{ip}: {e:?}");
                    let lock = &e.details["lock"];
                    assert_eq!(lock["source"], "rule", "{ip}: {e:?}");
                    assert_eq!(lock["incident_id"], 7);
                    assert_eq!(lock["reason"], "brute force");
                    assert_eq!(Some(&lock["known_address"]), known.as_ref(), "{ip}: {e:?}");
                }
            }
        }
        // The admitted login says how it got past the lock.
        let success = core.events(&crate::store::events::EventFilter { event_type: Some(EventType::LoginSuccess), limit: 1, ..Default::default() }).expect("events");
        assert_eq!(success[0].details["lock"]["admitted"], "known_address", "{success:?}");
        assert_eq!(success[0].ip.as_deref(), Some("2001:db8:1:1::77"));

        // A sysop's lock stays absolute, even from a known address, and a
        // rule lock does not replace it.
        rt.block_on(core.lock_user(alice, FOREVER, "investigating", sysop, now)).expect("lock");
        assert_eq!(
            rt.block_on(core.lock_account_by_rule(alice, DAY, "again", None, now)).expect("lock"),
            LockOutcome::AlreadyLocked { source: LockSource::Sysop, until: FOREVER }
        );
        for ip in ["192.0.2.1", "2001:db8:1:1::5", "192.0.2.2"] {
            // (Over keyboard-interactive the refusal hides behind the code prompt.)
            assert!(!matches!(f.login(ip, None, now), Outcome::Accepted(_)), "{ip}");
            let e = last_failure(core);
            assert_eq!(e.details["lock"]["source"], "sysop", "{e:?}");
            assert_eq!(e.details["lock"]["until"], "unlocked", "{e:?}");
        }
        assert!(rt.block_on(core.unlock_user(alice, sysop, now)).expect("unlock"));
        assert!(!rt.block_on(core.unlock_user(alice, sysop, now)).expect("unlock"), "nothing left to lift");
        assert!(matches!(f.login("192.0.2.2", None, now), Outcome::Accepted(_)));
    }

    /// Issue 9 point 3: a rule lock admits the owner from a device they
    /// trust that logs in with its key, from an address never used
    /// before, and still with every factor. Not from a trusted device
    /// without a key (its version string and HASSH are anyone's to send),
    /// not from an untrusted device (another client configuration of the
    /// same key), not once the device is untrusted or removed; a sysop's
    /// lock admits nobody.
    #[test]
    fn a_rule_lock_admits_the_owner_from_a_trusted_device_with_its_key() {
        use crate::core::devices::Hassh;
        const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILH55DvruBb/62oLBYjcIrqz93wAN8vOurcc0JKrebtm alice-laptop";
        let f = Fixture::new("", Some("alice@example.org"));
        let (core, rt, sysop, alice) = (&f.core, &f.rt, &f.sysop, &f.alice);
        let t0 = T0;
        let key = rt.block_on(core.add_ssh_key(alice, KEY, sysop, t0)).expect("key");
        assert_eq!(key.fingerprint, "SHA256:dGLi+F6Q1mG0vtDBfi/5fHls++j/R1iqB8xvRIDdSCk");
        let laptop = Hassh::of(b"curve25519-sha256", b"chacha20-poly1305@openssh.com", b"hmac-sha2-256-etm@openssh.com", b"none");
        let other_config = Hassh::of(b"curve25519-sha256", b"aes256-gcm@openssh.com", b"hmac-sha2-256-etm@openssh.com", b"none");
        // One login step (and the code, when asked), from a client whose offer is `hassh`.
        let login = |ip: &str, hassh: &Hassh, with_key: bool, code: Option<&str>, now: Millis| {
            let mut attempt = Attempt::new(ip.parse().expect("ip"), "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10".into(), "ssh", now);
            attempt.hassh = Some(hassh.clone());
            let pw = Secret::new(PASSWORD.to_owned());
            let credential = if with_key {
                Credential::PublicKey { username: "alice", fingerprint: &key.fingerprint }
            } else {
                Credential::Password { username: "alice", password: &pw, method: "keyboard-interactive" }
            };
            match (rt.block_on(core.submit(&mut attempt, credential, now)), code) {
                (Outcome::Need(_), Some(c)) => rt.block_on(core.submit(&mut attempt, Credential::Code { code: &Secret::new(c.to_owned()) }, now)),
                (other, _) => other,
            }
        };
        let device = |o: Outcome| match o {
            Outcome::Accepted(a) => a.device_id,
            other => panic!("not logged in: {other:?}"),
        };
        let with_key = device(login("192.0.2.1", &laptop, true, None, t0));
        let with_password = device(login("192.0.2.1", &laptop, false, None, t0));
        let other = device(login("192.0.2.1", &other_config, true, None, t0));
        assert!(with_key != with_password && with_key != other && with_password != other, "three devices");
        for id in [with_key, with_password] {
            let c = rt.block_on(core.set_device_trusted(id, true, None, sysop, t0)).expect("trust");
            assert!(c.changed && c.device.is_trusted);
        }
        let now = t0.plus(DAY);
        rt.block_on(core.lock_account_by_rule(alice, Duration::from_secs(3600), "brute force", Some(3), now)).expect("lock");

        let refusal = || last_failure(core).details["lock"].clone();
        // The trusted device with its key, from an address never seen: in.
        assert!(matches!(login("203.0.113.9", &laptop, true, None, now), Outcome::Accepted(_)));
        let success = core.events(&crate::store::events::EventFilter { event_type: Some(EventType::LoginSuccess), limit: 1, ..Default::default() }).expect("events");
        let lock = &success[0].details["lock"];
        assert_eq!((lock["admitted"].as_str(), lock["device_id"].as_i64(), lock["known_address"].as_bool()), (Some("trusted_device"), Some(with_key), Some(false)), "{success:?}");
        assert_eq!(success[0].device_id, Some(with_key));
        // (Each check below comes from an address of its own: a full login
        // makes its address known, which opens the lock by itself.)
        // The trusted device without a key: refused, saying why.
        assert!(!matches!(login("203.0.113.20", &laptop, false, None, now), Outcome::Accepted(_)));
        let lock = refusal();
        assert_eq!((lock["trusted_device"].as_str(), lock["device_id"].as_i64()), (Some("without_key"), Some(with_password)), "{lock}");
        // The same key from a client configured otherwise: another device, not trusted.
        assert!(!matches!(login("203.0.113.21", &other_config, true, None, now), Outcome::Accepted(_)));
        assert_eq!(refusal()["trusted_device"], false);

        // Still every factor: with a code enrolled, the trusted device needs it.
        let code = f.enroll_totp(now);
        let later = now.plus(Duration::from_secs(60));
        let wrong = if code(later) == "000000" { "111111" } else { "000000" };
        assert!(matches!(login("203.0.113.30", &laptop, true, Some(wrong), later), Outcome::Rejected(_)));
        let failed = core.events(&crate::store::events::EventFilter { event_type: Some(EventType::OtpFailed), limit: 1, ..Default::default() }).expect("events");
        assert_eq!(failed[0].details["reason"], "wrong_code", "{failed:?}");
        assert!(matches!(login("203.0.113.31", &laptop, true, Some(&code(later)), later), Outcome::Accepted(_)));

        // Untrusted, it no longer opens the lock; removed, neither.
        let t = later.plus(Duration::from_secs(60));
        let c = rt.block_on(core.set_device_trusted(with_key, false, None, sysop, t)).expect("untrust");
        assert!(c.changed && !c.device.is_trusted);
        assert!(!matches!(login("203.0.113.40", &laptop, true, Some(&code(t)), t), Outcome::Accepted(_)));
        assert_eq!(refusal()["trusted_device"], false);
        rt.block_on(core.set_device_trusted(with_key, true, None, sysop, t)).expect("trust again");
        rt.block_on(core.remove_device(with_key, None, sysop, t)).expect("remove");
        let t = t.plus(Duration::from_secs(60));
        assert!(!matches!(login("203.0.113.41", &laptop, true, Some(&code(t)), t), Outcome::Accepted(_)));
        assert_eq!(refusal()["trusted_device"], false);
        // A sysop's lock: no device opens it.
        rt.block_on(core.unlock_user(alice, sysop, t)).expect("unlock");
        let device = device(login("192.0.2.1", &laptop, true, Some(&code(t)), t));
        rt.block_on(core.set_device_trusted(device, true, None, sysop, t)).expect("trust");
        rt.block_on(core.lock_user(alice, FOREVER, "investigating", sysop, t)).expect("lock");
        let t = t.plus(Duration::from_secs(60));
        assert!(!matches!(login("192.0.2.1", &laptop, true, Some(&code(t)), t), Outcome::Accepted(_)));
        assert_eq!(refusal()["source"], "sysop");
    }

    /// Under a rule lock the owner still needs every factor: a right
    /// password and a wrong code from the known address is refused.
    #[test]
    fn a_known_address_still_needs_every_factor() {
        let f = Fixture::new("", Some("alice@example.org"));
        let (core, rt, alice) = (&f.core, &f.rt, &f.alice);
        let code = f.enroll_totp(T0);
        let now = T0.plus(Duration::from_secs(30));
        assert!(matches!(f.login("192.0.2.1", Some(&code(now)), now), Outcome::Accepted(_)));
        let later = now.plus(Duration::from_secs(120));
        rt.block_on(core.lock_account_by_rule(alice, DAY, "brute force", None, later)).expect("lock");
        let wrong = if code(later) == "000000" { "111111" } else { "000000" };
        assert!(matches!(f.login("192.0.2.1", Some(wrong), later), Outcome::Rejected(_)));
        let failed = core.events(&crate::store::events::EventFilter { event_type: Some(EventType::OtpFailed), limit: 1, ..Default::default() }).expect("events");
        assert_eq!(failed[0].details["reason"], "wrong_code", "{failed:?}");
        let t = later.plus(Duration::from_secs(30));
        assert!(matches!(f.login("192.0.2.1", Some(&code(t)), t), Outcome::Accepted(_)));
    }

    /// A lock set for an incident admits only addresses known before the
    /// attack's first event: the intruder's own login after a takeover
    /// made their address known, and it must not open the lock.
    #[test]
    fn an_address_first_known_during_the_attack_does_not_open_the_lock() {
        use crate::model::{Finding, IncidentSeverity, IncidentType, Subject};
        let f = Fixture::new("", None);
        let (core, rt, alice) = (&f.core, &f.rt, &f.alice);
        let t0 = T0;
        let minute = Duration::from_secs(60);
        // Home before the attack; the attack's first failure at t0+10m;
        // the intruder's full login at t0+12m.
        assert!(matches!(f.login("192.0.2.1", None, t0.plus(minute)), Outcome::Accepted(_)));
        let attack = t0.plus(10 * minute);
        assert!(matches!(f.login("198.51.100.7", None, t0.plus(12 * minute)), Outcome::Accepted(_)));
        let finding = Finding {
            incident_type: IncidentType::AccountTakeover,
            subject: Subject::Account { user_id: Some(alice.id), username: "alice".into() },
            severity: IncidentSeverity::High,
            title: "possible takeover of alice".into(),
            description: "test".into(),
            event_ids: vec![],
            first_event_at: attack,
            details: serde_json::json!({ "rule": "account_takeover" }),
        };
        let now = t0.plus(13 * minute);
        let incident = core.report_finding(finding, now).expect("incident").incident_id;
        rt.block_on(core.lock_account_by_rule(alice, DAY, "takeover", Some(incident), now)).expect("lock");
        // (address, admitted, why refused)
        let cases: &[(&str, bool, Option<&str>)] = &[("198.51.100.7", false, Some("since_attack")), ("192.0.2.1", true, None)];
        for (ip, admitted, why) in cases {
            match f.login(ip, None, now.plus(minute)) {
                Outcome::Accepted(_) => assert!(admitted, "{ip} was admitted"),
                other => {
                    assert!(!admitted, "{ip}: {other:?}");
                    let e = last_failure(core);
                    assert_eq!(e.details["lock"]["known_address"].as_str(), *why, "{ip}: {e:?}");
                    assert_eq!(e.details["lock"]["incident_id"], incident, "{e:?}");
                }
            }
        }
    }

    /// Rule locks are bounded by `locks.max_duration`; a longer lock in
    /// force is not shortened; a sysop's lock with a duration is bounded too.
    #[test]
    fn lock_durations_are_bounded() {
        let f = Fixture::new("locks: {\n  max_duration: 2h\n}\n", None);
        let (core, rt, sysop, alice) = (&f.core, &f.rt, &f.sysop, &f.alice);
        let now = T0;
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(rt.block_on(core.lock_account_by_rule(alice, h(48), "r", None, now)).expect("lock"), LockOutcome::Locked { until: now.plus(h(2)), bounded: true });
        assert_eq!(rt.block_on(core.lock_account_by_rule(alice, h(1), "r", None, now)).expect("lock"), LockOutcome::AlreadyLocked { source: LockSource::Rule, until: now.plus(h(2)) });
        let later = now.plus(h(1));
        assert_eq!(rt.block_on(core.lock_account_by_rule(alice, h(2), "r", None, later)).expect("lock"), LockOutcome::Locked { until: later.plus(h(2)), bounded: false });
        let e = rt.block_on(core.lock_account_by_rule(alice, Duration::ZERO, "r", None, now)).expect_err("zero");
        assert_eq!(e.to_string(), "a lock needs a duration longer than 0s");
        let e = rt.block_on(core.lock_user(alice, now.plus(366 * DAY), "s", sysop, now)).expect_err("too long");
        assert_eq!(e.to_string(), "a lock with a duration lasts at most 365d; lock without one to lock until unlocked");
        let e = rt.block_on(core.lock_user(alice, now, "s", sysop, now)).expect_err("past");
        assert_eq!(e.to_string(), "a lock must end in the future");
        let events = core.events(&crate::store::events::EventFilter { event_type: Some(EventType::AccountLocked), limit: 10, ..Default::default() }).expect("events");
        assert_eq!(events.len(), 2, "only the locks that changed something: {events:?}");
        assert_eq!(events[1].details["bounded"], true);
        assert_eq!(events[1].details["source"], "rule");
        assert_eq!(events[1].details["actor"], "rule");
        assert_eq!(events[1].details["requested_duration_ms"], 48 * 3_600_000u64);
    }
}
