//! The risk score of a login (SPEC §9): 0-100, the sum of the weights
//! (`risk.weights`) of the factors that apply, clamped. Scored once the
//! first factor is right, when the device is known (its version string,
//! HASSH and key), from a few bounded index lookups (`store::risk`) — never
//! a hash, and only after admission control let the attempt through.
//!
//! The factors:
//! - the device: `new_device` (the account never logged in from it), else
//!   `trusted_device` (negative; only with its key, since the version
//!   string and HASSH are anyone's to copy) or `untrusted_device`: one of
//!   the three;
//! - `new_address`: no full login of the account from this address (IPv6:
//!   its /64, as the known addresses of `locks` are kept);
//! - `new_network`: none from its network (`detection.ipv4_network` /
//!   `ipv6_network`, /24 and /48 by default), among the account's latest
//!   `KNOWN_ADDRESSES` known addresses;
//! - `recent_failures`: at least `risk.recent_failures.failures` failed
//!   logins or codes on the account within `within`;
//! - `suspicious_address`: the address or its network has an incident not
//!   resolved, or resolved within `risk.suspicious_within`, or the address
//!   is the source of a suspicious event within it (its own lookup on the
//!   events' address index), or the network of one of the newest
//!   `SUSPICIOUS_SCAN` suspicious events within it;
//! - `unusual_hour`: see `unusual_hour` (needs enough history).
//!
//! The decision: at or above `risk.deny` the login is refused (and a
//! `risky_login` incident opened); at or above `risk.step_up` it must pass
//! the next factor level the user has (`step_up_level`); with none, it
//! goes on recorded as `step_up_unavailable`, or is refused when
//! `risk.step_up_unavailable` is "deny".

use super::devices::DeviceIdentity;
use super::{Core, Result};
use crate::config::risk::{RiskSettings, StepUpUnavailable, UnusualHour};
use crate::model::{IpNetwork, Millis, Subject, User};
use serde_json::{json, Value};
use std::net::IpAddr;

/// The account's known addresses read for `new_network`, the newest first.
pub const KNOWN_ADDRESSES: usize = 500;
/// The newest suspicious events read for `suspicious_address` of a
/// network (the address itself is looked up on its own).
pub const SUSPICIOUS_SCAN: usize = 256;

/// What the device is to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKnown {
    New,
    Untrusted,
    Trusted,
}

/// What was found about one login: the input of `score`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signals {
    pub device: DeviceKnown,
    pub new_address: bool,
    pub new_network: bool,
    /// Failed logins and codes on the account within the window (capped).
    pub recent_failures: u32,
    /// What made the address suspicious ("incident 7 about address:...",
    /// "a suspicious event from network:..."), if anything.
    pub suspicious: Option<String>,
    /// `None`: too little history to judge.
    pub unusual_hour: Option<bool>,
}

/// One factor that applied, with its weight.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Factor {
    pub name: &'static str,
    pub weight: i32,
    /// What was found, for the reader of the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The score and the factors behind it. Factors with weight 0 are left out.
pub fn score(s: &Signals, settings: &RiskSettings) -> (u8, Vec<Factor>) {
    let w = &settings.weights;
    let mut factors = Vec::new();
    let mut add = |on: bool, name: &'static str, weight: i32, note: Option<String>| {
        if on && weight != 0 {
            factors.push(Factor { name, weight, note });
        }
    };
    add(s.device == DeviceKnown::New, "new_device", w.new_device, None);
    add(s.device == DeviceKnown::Untrusted, "untrusted_device", w.untrusted_device, None);
    add(s.device == DeviceKnown::Trusted, "trusted_device", w.trusted_device, None);
    add(s.new_address, "new_address", w.new_address, None);
    add(s.new_network, "new_network", w.new_network, None);
    let failures = s.recent_failures >= settings.recent_failures.failures;
    add(failures, "recent_failures", w.recent_failures, failures.then(|| format!("{} within {}", s.recent_failures, crate::config::playbooks::show_duration(settings.recent_failures.within))));
    add(s.suspicious.is_some(), "suspicious_address", w.suspicious_address, s.suspicious.clone());
    add(s.unusual_hour == Some(true), "unusual_hour", w.unusual_hour, None);
    let sum: i32 = factors.iter().map(|f| f.weight).sum();
    (sum.clamp(0, 100) as u8, factors)
}

/// Whether `now`'s hour of day (UTC) is unusual for an account whose
/// latest logins were at `history` (newest first): none of them fell
/// within `margin_hours` of it, around the clock. `None` with fewer than
/// `min_logins` of them: too little to judge.
pub fn unusual_hour(history: &[Millis], now: Millis, u: &UnusualHour) -> Option<bool> {
    let history = &history[..history.len().min(u.history as usize)];
    if history.len() < u.min_logins as usize {
        return None;
    }
    let hour = |t: Millis| t.0.rem_euclid(86_400_000) / 3_600_000;
    let h = hour(now);
    let margin = i64::from(u.margin_hours);
    let near = |other: i64| {
        let d = (h - other).rem_euclid(24);
        d.min(24 - d) <= margin
    };
    Some(!history.iter().any(|t| near(hour(*t))))
}

/// What the adaptive rule makes of a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The login must reach this factor level.
    StepUp(u8),
    /// At or above `step_up`, no higher factor to ask; the login goes on.
    StepUpUnavailable,
    /// At or above `step_up`, no higher factor, and the config refuses.
    RefusedStepUpUnavailable,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::StepUp(_) => "step_up",
            Decision::StepUpUnavailable => "step_up_unavailable",
            Decision::RefusedStepUpUnavailable => "refused_step_up_unavailable",
            Decision::Deny => "deny",
        }
    }
}

/// The smallest factor level above `required` that the user has
/// (`available`: the levels they can pass, e.g. [1, 2] with a code; a
/// hardware key adds 3). `None`: nothing above.
pub fn step_up_level(required: u8, available: &[u8]) -> Option<u8> {
    available.iter().copied().filter(|l| *l > required).min()
}

/// The adaptive rule: `required` is the level the login needs without its
/// score.
pub fn decide(score: u8, required: u8, available: &[u8], s: &RiskSettings) -> Decision {
    if score >= s.deny {
        Decision::Deny
    } else if score >= s.step_up {
        match (step_up_level(required, available), s.step_up_unavailable) {
            (Some(l), _) => Decision::StepUp(l),
            (None, StepUpUnavailable::Allow) => Decision::StepUpUnavailable,
            (None, StepUpUnavailable::Deny) => Decision::RefusedStepUpUnavailable,
        }
    } else {
        Decision::Allow
    }
}

/// A scored login: what its events carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRisk {
    pub score: u8,
    pub factors: Vec<Factor>,
    pub decision: Decision,
    /// The factor level the login must reach (its score included).
    pub level: u8,
}

impl LoginRisk {
    /// `details.risk` of the login's events.
    pub fn details(&self) -> Value {
        let mut v = json!({ "score": self.score, "factors": self.factors, "decision": self.decision.as_str() });
        if let Decision::StepUp(l) = self.decision {
            v["level"] = json!(l);
        }
        v
    }
}

impl Core {
    /// Finds the signals of a login by `user` from `ip` and `device`
    /// (`failures_here`: this connection's failures, which may not be
    /// committed yet).
    pub(crate) fn risk_signals(&self, user: &User, ip: IpAddr, device: &DeviceIdentity<'_>, failures_here: u32, now: Millis) -> Result<Signals> {
        let s = self.settings();
        let r = &s.risk;
        let known_device = match self.store.device_by_fingerprint(user.id, &device.fingerprint())? {
            Some(d) => Some(d.is_trusted),
            // A row recorded before HASSH is taken over by this login (see
            // `store::devices`): the same device, never trusted.
            None => self.store.legacy_device_exists(user.id, &device.legacy_fingerprint(), device.client_version)?.then_some(false),
        };
        // Trusted only with its key, as in `locks`: the version string and
        // HASSH are public, so a keyless "trusted" identity is anyone's.
        let device = match known_device {
            None => DeviceKnown::New,
            Some(true) if device.key_fingerprint.is_some() => DeviceKnown::Trusted,
            Some(_) => DeviceKnown::Untrusted,
        };
        let key = super::locks::address_key(ip);
        let new_address = self.store.known_address(user.id, &key)?.is_none();
        let bits = if ip.to_canonical().is_ipv4() { s.detection.ipv4_network } else { s.detection.ipv6_network };
        let network = IpNetwork::containing(ip, bits);
        let new_network = new_address
            && !self.store.known_address_keys(user.id, KNOWN_ADDRESSES)?.iter().filter_map(|k| IpNetwork::parse(k).ok()).any(|k| network.contains(k.addr()));
        let cap = r.recent_failures.failures.max(1);
        let recent_failures = self.store.recent_account_failures(user.id, now.minus(r.recent_failures.within), cap)?.max(failures_here.min(cap));
        let since = now.minus(r.suspicious_within);
        let mut suspicious = None;
        // The subjects as the detector keys them (its address key, the
        // locks' one, its network key), so they match incidents' subject
        // keys whatever `detection.ipv4_network` / `ipv6_network` are.
        let detected_network = super::detect::NetKey::of(ip, s.detection.ipv4_network, s.detection.ipv6_network);
        let mut subjects = vec![
            Subject::Address(super::admission::AddressKey::with_prefix(ip, s.ssh.penalties.ipv6_prefix).to_string()).key(),
            Subject::Address(key.clone()).key(),
            Subject::Network(detected_network.to_string()).key(),
        ];
        subjects.dedup();
        for subject in subjects {
            if let Some(id) = self.store.incident_about(&subject, since)? {
                suspicious = Some(format!("incident {id} about {subject}"));
                break;
            }
        }
        // The address itself: a lookup of its own on the events' address
        // index, so no flood of suspicious events from elsewhere can push
        // it out of the gate-wide scan below (kept for its network).
        if suspicious.is_none() {
            let here = IpNetwork::host(ip);
            let (raw, canonical) = (ip.to_string(), here.addr().to_string());
            if self.store.suspicious_event_from(&raw, since)? || (canonical != raw && self.store.suspicious_event_from(&canonical, since)?) {
                suspicious = Some(format!("a suspicious event from address {here}"));
            }
        }
        if suspicious.is_none() {
            for addr in self.store.recent_suspicious_addresses(since, SUSPICIOUS_SCAN)? {
                let Ok(a) = addr.parse::<IpAddr>() else { continue };
                if network.contains(a) {
                    suspicious = Some(format!("a suspicious event from network {network}"));
                    break;
                }
            }
        }
        let unusual = if r.weights.unusual_hour == 0 {
            None
        } else {
            unusual_hour(&self.store.recent_login_times(user.id, r.unusual_hour.history as usize)?, now, &r.unusual_hour)
        };
        Ok(Signals { device, new_address, new_network, recent_failures, suspicious, unusual_hour: unusual })
    }

    /// The factor levels `user` can pass: 1 (password or key), 2 with an
    /// enabled code. Hardware keys (level 3) add 3 here when they exist.
    pub(crate) fn factor_levels(&self, user: &User) -> Result<Vec<u8>> {
        let mut levels = vec![1];
        if self.store.otp(user.id)?.is_some_and(|o| o.enabled) {
            levels.push(2);
        }
        if self.has_webauthn_key(user.id)? {
            levels.push(3);
        }
        Ok(levels)
    }

    /// Scores a login whose first factor is right and applies the adaptive
    /// rule. `required`: the level the login needs without its score.
    /// `None` when scoring is off.
    pub(crate) fn assess_login(&self, user: &User, ip: IpAddr, device: &DeviceIdentity<'_>, failures_here: u32, required: u8, now: Millis) -> Result<Option<LoginRisk>> {
        let s = self.settings();
        if !s.risk.enabled {
            return Ok(None);
        }
        let signals = self.risk_signals(user, ip, device, failures_here, now)?;
        let (score, factors) = score(&signals, &s.risk);
        let decision = decide(score, required, &self.factor_levels(user)?, &s.risk);
        let level = match decision {
            Decision::StepUp(l) => l.max(required),
            _ => required,
        };
        Ok(Some(LoginRisk { score, factors, decision, level }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::risk::{Risk, RiskSettings};
    use crate::core::accounts::Actor;
    use crate::core::login::{Attempt, Credential, Outcome, Prompt, Rejection};
    use crate::model::{EventType, IncidentType, Secret, StoredEvent};
    use crate::store::events::EventFilter;

    const PW: &str = "Correct-Horse-Battery-9";
    const T0: Millis = Millis(1_800_000_000_000);

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt")
    }

    fn login(core: &Core, rt: &tokio::runtime::Runtime, ip: &str, version: &str, method: &'static str, now: Millis) -> (Attempt, Outcome) {
        let mut attempt = Attempt::new(ip.parse().expect("ip"), version.into(), "ssh", now);
        let pw = Secret::new(PW.to_owned());
        let outcome = rt.block_on(core.submit(&mut attempt, Credential::Password { username: "alice", password: &pw, method }, now));
        (attempt, outcome)
    }

    fn newest(core: &Core, t: EventType) -> StoredEvent {
        core.store.events(&EventFilter { event_type: Some(t), limit: 1, ..Default::default() }).expect("events").into_iter().next().expect("an event")
    }

    fn names(e: &StoredEvent) -> Vec<String> {
        e.details["risk"]["factors"].as_array().expect("factors").iter().map(|f| f["name"].as_str().expect("name").to_owned()).collect()
    }

    /// Scored at the first factor, refused at `deny`: over `password` a
    /// plain refusal that ends the connection, over keyboard-interactive
    /// the refusal's prompt first; the event has the score and factors and
    /// is suspicious; one `risky_login` incident about the account, with
    /// the refused logins' events.
    #[test]
    fn a_score_at_deny_refuses_a_right_password_and_opens_an_incident() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = crate::core::test_core(dir.path(), "risk: {\n  step_up: 50\n  deny: 60\n}\nplaybooks: []\n");
        let rt = rt();
        let alice = rt.block_on(core.add_user("alice", Some("alice@example.org"), &Secret::new(PW.into()), &[], &Actor::Cli("t".into()), T0)).expect("user");
        let (attempt, outcome) = login(&core, &rt, "192.0.2.7", "SSH-2.0-OpenSSH_9.2", "password", T0);
        assert!(matches!(outcome, Outcome::Rejected(Rejection::Risky)), "{outcome:?}");
        assert_eq!(attempt.risk_score(), 60);
        let e = newest(&core, EventType::LoginFailed);
        assert_eq!((e.details["reason"].as_str(), e.risk_score, e.is_suspicious), (Some("risk_score_too_high"), 60, true), "{e:?}");
        assert_eq!(names(&e), ["new_device", "new_address", "new_network"]);
        let incidents = core.store.incidents(crate::store::incidents::IncidentFilter::All, 10).expect("incidents");
        assert_eq!(incidents.len(), 1, "{incidents:?}");
        assert_eq!((incidents[0].incident_type, incidents[0].subject.key()), (IncidentType::RiskyLogin, format!("account:{}", alice.id)));
        assert_eq!(core.store.incident_event_ids(incidents[0].id, 10).expect("links"), vec![e.id]);
        // keyboard-interactive: the refusal is shown, its answer ends it.
        let (mut attempt, outcome) = login(&core, &rt, "192.0.2.7", "SSH-2.0-OpenSSH_9.2", "keyboard-interactive", T0.plus(std::time::Duration::from_secs(1)));
        assert!(matches!(outcome, Outcome::Need(Prompt::RiskRefused)), "{outcome:?}");
        assert!(attempt.awaiting_code());
        let answer = Secret::new(String::new());
        let outcome = rt.block_on(core.submit(&mut attempt, Credential::Code { code: &answer }, T0.plus(std::time::Duration::from_secs(2))));
        assert!(matches!(outcome, Outcome::Rejected(Rejection::Risky)), "{outcome:?}");
        let incidents = core.store.incidents(crate::store::incidents::IncidentFilter::All, 10).expect("incidents");
        assert_eq!(incidents.len(), 1, "the second refusal attaches: {incidents:?}");
        assert_eq!(core.store.incident_event_ids(incidents[0].id, 10).expect("links").len(), 2);
        // Nothing was recorded as a login, no device was made.
        assert!(core.store.devices_of(alice.id).expect("devices").is_empty());
        assert!(core.store.events(&EventFilter { event_type: Some(EventType::LoginSuccess), limit: 1, ..Default::default() }).expect("events").is_empty());
    }

    /// At `step_up` with no factor above the one required: "allow" lets
    /// the login in, noted (`step_up_unavailable`, medium); "deny" refuses
    /// it and, as `RISK_REFUSED` tells the client, the owner is told: a
    /// `risky_login` incident (medium) with the reason and the refused
    /// login's event.
    #[test]
    fn no_higher_factor_allows_or_refuses_as_configured() {
        for (choice, allowed) in [("allow", true), ("deny", false)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let core = crate::core::test_core(dir.path(), &format!("risk: {{\n  step_up: 50\n  step_up_unavailable: {choice}\n}}\n"));
            let rt = rt();
            rt.block_on(core.add_user("alice", Some("alice@example.org"), &Secret::new(PW.into()), &[], &Actor::Cli("t".into()), T0)).expect("user");
            let (_, outcome) = login(&core, &rt, "192.0.2.7", "SSH-2.0-OpenSSH_9.2", "keyboard-interactive", T0);
            if allowed {
                let Outcome::Accepted(auth) = outcome else { panic!("{choice}: {outcome:?}") };
                assert_eq!((auth.risk_score(), auth.required_level, auth.factors), (60, 1, 1));
                let e = newest(&core, EventType::LoginSuccess);
                assert_eq!((e.details["risk"]["decision"].as_str(), e.severity.as_str(), e.risk_score), (Some("step_up_unavailable"), "medium", 60), "{e:?}");
                let device = core.store.devices_of(auth.user.id).expect("devices");
                assert_eq!(device[0].risk_score, 60);
            } else {
                assert!(matches!(outcome, Outcome::Need(Prompt::RiskRefused)), "{choice}: {outcome:?}");
                let e = newest(&core, EventType::LoginFailed);
                assert_eq!((e.details["reason"].as_str(), e.details["risk"]["decision"].as_str()), (Some("risk_step_up_unavailable"), Some("refused_step_up_unavailable")), "{e:?}");
                let incidents = core.store.incidents(crate::store::incidents::IncidentFilter::All, 10).expect("incidents");
                assert_eq!(incidents.len(), 1, "{incidents:?}");
                let i = &incidents[0];
                assert_eq!((i.incident_type, i.severity.as_str()), (IncidentType::RiskyLogin, "medium"), "{i:?}");
                assert!(i.description.contains("no higher factor") && i.description.contains("risk_step_up_unavailable"), "{i:?}");
                assert_eq!(core.store.incident_event_ids(i.id, 10).expect("links"), vec![e.id]);
                let mail = core.due_mail(T0.plus(std::time::Duration::from_secs(60)), 10).expect("mail");
                assert!(mail.iter().any(|m| m.to.contains("alice@example.org")), "the owner is mailed: {mail:?}");
            }
        }
    }

    /// The signals are read from the store: known addresses and their
    /// networks, failures in the window, incidents about the address or
    /// its network (open; resolved within the window or not), suspicious
    /// events from the network, the hour against the account's logins.
    #[test]
    fn signals_come_from_the_store() {
        use crate::model::{Event, Finding, IncidentSeverity, Severity, Subject};
        let dir = tempfile::tempdir().expect("tempdir");
        let core = crate::core::test_core(dir.path(), "risk: {\n  unusual_hour: {\n    min_logins: 3\n  }\n}\n");
        let rt = rt();
        let alice = rt.block_on(core.add_user("alice", None, &Secret::new(PW.into()), &[], &Actor::Cli("t".into()), T0)).expect("user");
        let hour = 3_600_000;
        let midnight = Millis(T0.0 - T0.0 % 86_400_000);
        // Three logins at about 09:00 UTC on earlier days, from 192.0.2.7.
        for d in 1..=3 {
            let at = Millis(midnight.0 - d * 86_400_000 + 9 * hour);
            core.store.start_session(&crate::store::sessions::NewSession { user_id: alice.id, device_id: None, protocol: "ssh", ip: "192.0.2.7", client_version: "v", auth_method: "password", factors: 1, connected_at: at, now: at }).expect("session");
        }
        core.store.record_known_address(alice.id, "192.0.2.7", midnight).expect("known");
        let dev = crate::core::devices::DeviceIdentity { client_version: "SSH-2.0-OpenSSH_9.2", hassh: None, key_fingerprint: None };
        let at = |h: i64| Millis(midnight.0 + h * hour);
        let signals = |ip: &str, now: Millis| core.risk_signals(&alice, ip.parse().expect("ip"), &dev, 0, now).expect("signals");
        let s = signals("192.0.2.7", at(9));
        assert_eq!(s, Signals { device: DeviceKnown::New, new_address: false, new_network: false, recent_failures: 0, suspicious: None, unusual_hour: Some(false) });
        let s = signals("192.0.2.99", at(15));
        assert_eq!((s.new_address, s.new_network, s.unusual_hour), (true, false, Some(true)), "another address of the /24, at 15:00");
        assert!(signals("198.51.100.1", at(9)).new_network);
        // Failures on the account within the hour count; older ones do not.
        let failed = |when: Millis| Event::new(EventType::LoginFailed, Severity::Low, "f", when).user(Some(alice.id), Some("alice"));
        core.store.insert_events(&[failed(Millis(at(9).0 - 2 * hour)), failed(Millis(at(9).0 - 60_000)), failed(Millis(at(9).0 - 30_000))]).expect("events");
        assert_eq!(signals("192.0.2.7", at(9)).recent_failures, 2);
        assert_eq!(core.risk_signals(&alice, "192.0.2.7".parse().expect("ip"), &dev, 5, at(9)).expect("signals").recent_failures, 3, "this connection's failures, capped at the count");
        // An incident about the network of 203.0.113.9, then resolved.
        let finding = |subject: Subject| Finding {
            incident_type: IncidentType::BruteForceIp,
            subject,
            severity: IncidentSeverity::Medium,
            title: "t".into(),
            description: "d".into(),
            event_ids: vec![],
            first_event_at: at(1),
            details: serde_json::json!({ "rule": "slow_brute_force" }),
        };
        let net = core.report_finding(finding(Subject::Network("203.0.113.0/24".into())), at(1)).expect("incident").incident_id;
        assert_eq!(signals("203.0.113.9", at(9)).suspicious, Some(format!("incident {net} about network:203.0.113.0/24")));
        core.resolve_incident(net, "done", &Actor::Cli("t".into()), at(2)).expect("resolve");
        assert!(signals("203.0.113.9", at(9)).suspicious.is_some(), "resolved within 24h");
        assert_eq!(signals("203.0.113.9", Millis(at(2).0 + 25 * hour)).suspicious, None, "resolved a day ago");
        // An open incident about one address; not about its neighbour.
        let one = core.report_finding(finding(Subject::Address("198.51.100.5".into())), at(1)).expect("incident").incident_id;
        assert_eq!(signals("198.51.100.5", at(9)).suspicious, Some(format!("incident {one} about address:198.51.100.5")));
        assert_eq!(signals("198.51.100.6", at(9)).suspicious, None);
        // A suspicious event from another address of the network counts.
        core.store.insert_events(&[Event::new(EventType::SuspiciousInput, Severity::Medium, "s", at(3)).ip(Some("198.51.100.77")).suspicious(50)]).expect("event");
        assert_eq!(signals("198.51.100.6", at(9)).suspicious.as_deref(), Some("a suspicious event from network 198.51.100.0/24"));
        assert_eq!(signals("198.51.100.6", Millis(at(3).0 + 25 * hour)).suspicious, None, "a day later");
    }

    /// A trusted device lowers the score only with its key: the version
    /// string and HASSH are public, so a keyless "trusted" identity is
    /// anyone's and scores as untrusted (as `locks` refuses it).
    #[test]
    fn a_trusted_device_counts_only_with_its_key() {
        use crate::store::devices::SeenDevice;
        let dir = tempfile::tempdir().expect("tempdir");
        let core = crate::core::test_core(dir.path(), "");
        let rt = rt();
        let alice = rt.block_on(core.add_user("alice", None, &Secret::new(PW.into()), &[], &Actor::Cli("t".into()), T0)).expect("user");
        for (what, key, want, weight) in [("keyless", None, DeviceKnown::Untrusted, 10), ("with its key", Some("SHA256:abc"), DeviceKnown::Trusted, -30)] {
            let dev = crate::core::devices::DeviceIdentity { client_version: "SSH-2.0-OpenSSH_9.2", hassh: None, key_fingerprint: key };
            let fingerprint = dev.fingerprint();
            let seen = SeenDevice { user_id: alice.id, fingerprint: &fingerprint, device_name: "d", device_type: "ssh", client_version: dev.client_version, ip: "192.0.2.7", success: true, pending: false, now: T0 };
            let (id, _) = core.store.see_device(&seen).expect("device");
            core.store.set_device_trusted(id, true, "t", T0, |_| vec![]).expect("trust").expect("a device");
            let s = core.risk_signals(&alice, "192.0.2.7".parse().expect("ip"), &dev, 0, T0).expect("signals");
            assert_eq!(s.device, want, "{what}");
            let (_, factors) = score(&s, &settings());
            assert_eq!(factors.iter().find(|f| f.name.ends_with("_device")).map(|f| f.weight), Some(weight), "{what}: {factors:?}");
        }
    }

    /// A suspicious event from the address itself counts however many
    /// newer suspicious events came from elsewhere (no flushing it out of
    /// the gate-wide scan); one from its network only within that scan.
    #[test]
    fn a_suspicious_address_cannot_be_flushed_out() {
        use crate::model::{Event, Severity};
        let dir = tempfile::tempdir().expect("tempdir");
        let core = crate::core::test_core(dir.path(), "");
        let rt = rt();
        let alice = rt.block_on(core.add_user("alice", None, &Secret::new(PW.into()), &[], &Actor::Cli("t".into()), T0)).expect("user");
        let dev = crate::core::devices::DeviceIdentity { client_version: "SSH-2.0-OpenSSH_9.2", hassh: None, key_fingerprint: None };
        let signals = |ip: &str, now: Millis| core.risk_signals(&alice, ip.parse().expect("ip"), &dev, 0, now).expect("signals");
        let suspicious = |ip: &str, at: Millis| Event::new(EventType::SuspiciousInput, Severity::Medium, "s", at).ip(Some(ip)).suspicious(50);
        core.store.insert_events(&[suspicious("198.51.100.5", T0), suspicious("192.0.2.50", T0)]).expect("events");
        let flood: Vec<Event> = (0..SUSPICIOUS_SCAN as i64 + 10).map(|i| suspicious(&format!("203.0.{}.{}", 113 + i / 250, 1 + i % 250), Millis(T0.0 + 1000 + i))).collect();
        core.store.insert_events(&flood).expect("flood");
        let now = Millis(T0.0 + 3_600_000);
        assert_eq!(signals("198.51.100.5", now).suspicious.as_deref(), Some("a suspicious event from address 198.51.100.5"));
        assert_eq!(signals("192.0.2.51", now).suspicious, None, "a neighbour's, pushed out of the scan");
        assert_eq!(signals("198.51.100.5", Millis(T0.0 + 25 * 3_600_000)).suspicious, None, "a day later");
    }

    /// The subjects looked up are the detector's, for every network size:
    /// at `ipv4_network: 32` it opens network incidents as "a.b.c.d/32".
    #[test]
    fn incident_subjects_match_the_detectors_keys() {
        use crate::model::{Finding, IncidentSeverity, Subject};
        for (bits, ip) in [(32u8, "203.0.113.9"), (24, "203.0.113.9"), (32, "::ffff:203.0.113.9")] {
            let dir = tempfile::tempdir().expect("tempdir");
            let core = crate::core::test_core(dir.path(), &format!("detection: {{\n  ipv4_network: {bits}\n}}\n"));
            let rt = rt();
            let alice = rt.block_on(core.add_user("alice", None, &Secret::new(PW.into()), &[], &Actor::Cli("t".into()), T0)).expect("user");
            let addr: IpAddr = ip.parse().expect("ip");
            let subject = Subject::Network(crate::core::detect::Detector::new(&core.settings().detection, 64).network_key(addr).to_string());
            let finding = Finding {
                incident_type: IncidentType::BruteForceIp,
                subject: subject.clone(),
                severity: IncidentSeverity::Medium,
                title: "t".into(),
                description: "d".into(),
                event_ids: vec![],
                first_event_at: T0,
                details: serde_json::json!({ "rule": "slow_brute_force" }),
            };
            let id = core.report_finding(finding, T0).expect("incident").incident_id;
            let dev = crate::core::devices::DeviceIdentity { client_version: "SSH-2.0-OpenSSH_9.2", hassh: None, key_fingerprint: None };
            let s = core.risk_signals(&alice, addr, &dev, 0, T0).expect("signals");
            assert_eq!(s.suspicious, Some(format!("incident {id} about {}", subject.key())), "/{bits} {ip}");
        }
    }

    /// Enrolls a one-time code through the mailed link; returns the secret.
    fn enroll(core: &Core, rt: &tokio::runtime::Runtime, user: &User, now: Millis) -> Vec<u8> {
        rt.block_on(core.start_otp_enrollment(user, crate::core::mfa::Method::Totp, &Actor::Cli("t".into()), now)).expect("enroll");
        let mail = core.due_mail(now, 10).expect("mail");
        let link = mail.iter().rev().find_map(|m| m.body.text.lines().find(|l| l.contains("/otp/enroll/"))).expect("link").trim().to_owned();
        let token = link.rsplit('/').next().expect("token").to_owned();
        let secret = crate::core::otp::base32_decode(&core.otp_enrollment_view(&token, now).expect("view").secret_base32).expect("base32");
        let code = crate::core::otp::hotp(crate::model::OtpAlgorithm::Sha1, &secret, crate::core::otp::step_of(now.0 / 1000, 30), 6);
        rt.block_on(core.otp_confirm(&token, &code, now)).expect("confirm");
        secret
    }

    /// A risk refusal holds for that attempt only: a new first factor on
    /// the same login (here once the address is known, so the score drops
    /// below `step_up`) is judged afresh, and its code is checked.
    #[test]
    fn a_new_auth_after_a_risk_refusal_is_judged_afresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The code is required already: at `step_up` nothing is above it.
        let core = crate::core::test_core(dir.path(), "risk: {\n  step_up: 50\n  step_up_unavailable: deny\n}\nplaybooks: []\n");
        let rt = rt();
        let alice = rt.block_on(core.add_user("alice", Some("alice@example.org"), &Secret::new(PW.into()), &[], &Actor::Cli("t".into()), T0)).expect("user");
        let secret = enroll(&core, &rt, &alice, T0);
        let t1 = T0.plus(std::time::Duration::from_secs(60));
        let pw = Secret::new(PW.to_owned());
        let password = Credential::Password { username: "alice", password: &pw, method: "keyboard-interactive" };
        let mut attempt = Attempt::new("192.0.2.7".parse().expect("ip"), "SSH-2.0-OpenSSH_9.2".into(), "ssh", t1);
        let outcome = rt.block_on(core.submit(&mut attempt, password, t1));
        assert!(matches!(outcome, Outcome::Need(Prompt::RiskRefused)), "{outcome:?}");
        core.store.record_known_address(alice.id, "192.0.2.7", t1).expect("known");
        let t2 = t1.plus(std::time::Duration::from_secs(1));
        let password = Credential::Password { username: "alice", password: &pw, method: "keyboard-interactive" };
        let outcome = rt.block_on(core.submit(&mut attempt, password, t2));
        assert!(matches!(outcome, Outcome::Need(Prompt::Code)), "{outcome:?}");
        assert_eq!(attempt.risk_score(), 30);
        let code = Secret::new(crate::core::otp::hotp(crate::model::OtpAlgorithm::Sha1, &secret, crate::core::otp::step_of(t2.0 / 1000, 30), 6));
        let outcome = rt.block_on(core.submit(&mut attempt, Credential::Code { code: &code }, t2));
        let Outcome::Accepted(auth) = outcome else { panic!("the code is checked, not the old refusal: {outcome:?}") };
        assert_eq!((auth.risk_score(), auth.factors), (30, 2));
    }

    /// `adaptive_codes`: a plain `password` client of a user with a code
    /// is let in with one factor and must pass the code in the terminal
    /// when the login is risky (its `login_success` then carries the
    /// score); from the known device and address it needs only the
    /// password. Without `adaptive_codes` the code is always required.
    #[test]
    fn adaptive_codes_step_up_only_risky_logins() {
        for adaptive in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let core = crate::core::test_core(dir.path(), &format!("risk: {{\n  step_up: 50\n  adaptive_codes: {adaptive}\n}}\n"));
            let rt = rt();
            let alice = rt.block_on(core.add_user("alice", Some("alice@example.org"), &Secret::new(PW.into()), &[], &Actor::Cli("t".into()), T0)).expect("user");
            let secret = enroll(&core, &rt, &alice, T0);
            let t1 = T0.plus(std::time::Duration::from_secs(60));
            let (_, outcome) = login(&core, &rt, "192.0.2.7", "SSH-2.0-OpenSSH_9.2", "password", t1);
            let Outcome::Accepted(auth) = outcome else { panic!("{outcome:?}") };
            assert_eq!((auth.risk_score(), auth.required_level, auth.factors), (60, 2, 1), "adaptive {adaptive}");
            let decision = newest(&core, EventType::SessionStarted).details["risk"]["decision"].as_str().map(str::to_owned);
            assert_eq!(decision.as_deref(), Some(if adaptive { "step_up" } else { "step_up_unavailable" }));
            let code = crate::core::otp::hotp(crate::model::OtpAlgorithm::Sha1, &secret, crate::core::otp::step_of(t1.0 / 1000, 30), 6);
            let answer = rt.block_on(core.session_code(&auth, "192.0.2.7".parse().expect("ip"), &Secret::new(code), t1)).expect("code");
            assert_eq!(answer, crate::core::login::CodeAnswer::Accepted);
            let success = newest(&core, EventType::LoginSuccess);
            assert_eq!((success.risk_score, names(&success)), (60, vec!["new_device".to_owned(), "new_address".to_owned(), "new_network".to_owned()]), "{success:?}");
            rt.block_on(core.end_session(&auth, "192.0.2.7".parse().expect("ip"), "test", t1));
            let (_, outcome) = login(&core, &rt, "192.0.2.7", "SSH-2.0-OpenSSH_9.2", "password", t1.plus(std::time::Duration::from_secs(60)));
            let Outcome::Accepted(auth) = outcome else { panic!("{outcome:?}") };
            assert_eq!((auth.risk_score(), auth.required_level), (10, if adaptive { 1 } else { 2 }), "adaptive {adaptive}");
        }
    }

    fn settings() -> RiskSettings {
        RiskSettings::default()
    }

    fn signals() -> Signals {
        Signals { device: DeviceKnown::Untrusted, new_address: false, new_network: false, recent_failures: 0, suspicious: None, unusual_hour: None }
    }

    /// Each factor alone and together, with the default weights: the sum,
    /// clamped to 0-100, and exactly the factors that applied.
    #[test]
    fn score_is_the_clamped_sum_of_the_factors_that_apply() {
        let s = settings();
        let cases: Vec<(&str, Signals, u8, Vec<&str>)> = vec![
            ("known untrusted device, known place", signals(), 10, vec!["untrusted_device"]),
            ("trusted device lowers to 0, not below", Signals { device: DeviceKnown::Trusted, ..signals() }, 0, vec!["trusted_device"]),
            ("trusted device offsets a new network", Signals { device: DeviceKnown::Trusted, new_address: true, new_network: true, ..signals() }, 0, vec!["trusted_device", "new_address", "new_network"]),
            ("trusted device, new place, failures", Signals { device: DeviceKnown::Trusted, new_address: true, new_network: true, recent_failures: 3, ..signals() }, 20, vec!["trusted_device", "new_address", "new_network", "recent_failures"]),
            ("an account's first login", Signals { device: DeviceKnown::New, new_address: true, new_network: true, ..signals() }, 60, vec!["new_device", "new_address", "new_network"]),
            ("new device, new address in a known network", Signals { device: DeviceKnown::New, new_address: true, ..signals() }, 45, vec!["new_device", "new_address"]),
            ("two failures are below the count", Signals { device: DeviceKnown::New, new_address: true, new_network: true, recent_failures: 2, ..signals() }, 60, vec!["new_device", "new_address", "new_network"]),
            ("new everything after failures: step up", Signals { device: DeviceKnown::New, new_address: true, new_network: true, recent_failures: 3, ..signals() }, 80, vec!["new_device", "new_address", "new_network", "recent_failures"]),
            ("unusual hour", Signals { unusual_hour: Some(true), ..signals() }, 20, vec!["untrusted_device", "unusual_hour"]),
            ("too little history is not unusual", Signals { unusual_hour: None, ..signals() }, 10, vec!["untrusted_device"]),
            ("a usual hour", Signals { unusual_hour: Some(false), ..signals() }, 10, vec!["untrusted_device"]),
            ("suspicious address", Signals { suspicious: Some("incident 1 about address:192.0.2.7".into()), ..signals() }, 40, vec!["untrusted_device", "suspicious_address"]),
            (
                "everything: clamped to 100",
                Signals { device: DeviceKnown::New, new_address: true, new_network: true, recent_failures: 9, suspicious: Some("x".into()), unusual_hour: Some(true) },
                100,
                vec!["new_device", "new_address", "new_network", "recent_failures", "suspicious_address", "unusual_hour"],
            ),
        ];
        for (what, sig, want, names) in cases {
            let (got, factors) = score(&sig, &s);
            assert_eq!(got, want, "{what}: {factors:?}");
            assert_eq!(factors.iter().map(|f| f.name).collect::<Vec<_>>(), names, "{what}");
            let sum: i32 = factors.iter().map(|f| f.weight).sum();
            assert_eq!(i32::from(got), sum.clamp(0, 100), "{what}");
        }
    }

    /// Weights come from the config; a factor weighing 0 is not listed; a
    /// factor's note says what was found.
    #[test]
    fn weights_come_from_the_config() {
        let r = Risk {
            weights: crate::config::risk::Weights { new_device: 0, recent_failures: 55, ..Default::default() },
            recent_failures: crate::config::risk::RecentFailures { failures: 1, ..Default::default() },
            ..Risk::default()
        };
        let s = crate::config::risk::resolve(r, &|k: &str| k.to_owned(), &mut Vec::new());
        let (got, factors) = score(&Signals { device: DeviceKnown::New, recent_failures: 4, ..signals() }, &s);
        assert_eq!(got, 55);
        assert_eq!(factors, vec![Factor { name: "recent_failures", weight: 55, note: Some("4 within 1h".into()) }]);
    }

    #[test]
    fn unusual_hour_needs_history_and_looks_around_the_clock() {
        let u = UnusualHour { min_logins: 3, history: 5, margin_hours: 1 };
        let at = |h: i64| Millis(1_800_000_000_000 - 1_800_000_000_000 % 86_400_000 + h * 3_600_000 + 600_000);
        let day = 86_400_000;
        let many = |hours: &[i64]| hours.iter().enumerate().map(|(i, h)| Millis(at(*h).0 - (i as i64 + 1) * day)).collect::<Vec<_>>();
        let cases: Vec<(&str, Vec<Millis>, i64, Option<bool>)> = vec![
            ("no history", vec![], 3, None),
            ("two logins are too few", many(&[9, 9]), 3, None),
            ("the usual hour", many(&[9, 9, 10]), 9, Some(false)),
            ("within the margin", many(&[9, 9, 10]), 11, Some(false)),
            ("outside it", many(&[9, 9, 10]), 12, Some(true)),
            ("night owl across midnight", many(&[23, 23, 0]), 1, Some(false)),
            ("midnight seen from 23h", many(&[0, 0, 1]), 23, Some(false)),
            ("far from every login", many(&[9, 10, 11, 12]), 3, Some(true)),
            // Only the newest `history` (5) count: the 3 o'clock login is older.
            ("beyond the history", many(&[9, 9, 9, 9, 9, 3]), 3, Some(true)),
        ];
        for (what, history, hour, want) in cases {
            assert_eq!(unusual_hour(&history, at(hour), &u), want, "{what}");
        }
    }

    /// The adaptive rule: thresholds are inclusive; a step up asks for
    /// the smallest level above the one required that the user has.
    #[test]
    fn decisions_at_the_thresholds() {
        let allow = settings();
        let r = Risk { step_up_unavailable: "deny".into(), ..Risk::default() };
        let refuse = crate::config::risk::resolve(r, &|k: &str| k.to_owned(), &mut Vec::new());
        let cases: Vec<(u8, u8, &[u8], &RiskSettings, Decision)> = vec![
            (69, 1, &[1, 2], &allow, Decision::Allow),
            (70, 1, &[1, 2], &allow, Decision::StepUp(2)),
            (89, 1, &[1, 2], &allow, Decision::StepUp(2)),
            (90, 1, &[1, 2], &allow, Decision::Deny),
            (100, 2, &[1, 2], &allow, Decision::Deny),
            (75, 1, &[1], &allow, Decision::StepUpUnavailable),
            (75, 2, &[1, 2], &allow, Decision::StepUpUnavailable),
            (75, 2, &[1, 2], &refuse, Decision::RefusedStepUpUnavailable),
            (75, 1, &[1, 3], &allow, Decision::StepUp(3)),
            (75, 2, &[1, 2, 3], &allow, Decision::StepUp(3)),
            (0, 1, &[1], &refuse, Decision::Allow),
        ];
        for (score, required, available, s, want) in cases {
            assert_eq!(decide(score, required, available, s), want, "score {score}, required {required}, available {available:?}");
        }
    }
}
