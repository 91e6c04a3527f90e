//! The risk score of a login (SPEC §9): 0-100, the sum of the weights
//! (`risk.weights`) of the factors that apply, clamped. Scored once the
//! first factor is right, when the device is known (its version string,
//! HASSH and key), from a few bounded index lookups (`store::risk`) — never
//! a hash, and only after admission control let the attempt through.
//!
//! The factors:
//! - the device: `new_device` (the account never logged in from it), else
//!   `trusted_device` (negative) or `untrusted_device`: one of the three;
//! - `new_address`: no full login of the account from this address (IPv6:
//!   its /64, as the known addresses of `locks` are kept);
//! - `new_network`: none from its network (`detection.ipv4_network` /
//!   `ipv6_network`, /24 and /48 by default), among the account's latest
//!   `KNOWN_ADDRESSES` known addresses;
//! - `recent_failures`: at least `risk.recent_failures.failures` failed
//!   logins or codes on the account within `within`;
//! - `suspicious_address`: the address or its network has an incident not
//!   resolved, or resolved within `risk.suspicious_within`, or is the
//!   source of one of the newest `SUSPICIOUS_SCAN` suspicious events
//!   within it;
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
use crate::model::{IpNetwork, Millis, User};
use serde_json::{json, Value};
use std::net::IpAddr;

/// The account's known addresses read for `new_network`, the newest first.
pub const KNOWN_ADDRESSES: usize = 500;
/// The newest suspicious events read for `suspicious_address`.
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
    let hour = |t: Millis| (t.0.rem_euclid(86_400_000) / 3_600_000) as i64;
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
        let device = match known_device {
            None => DeviceKnown::New,
            Some(true) => DeviceKnown::Trusted,
            Some(false) => DeviceKnown::Untrusted,
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
        let address_subject = super::admission::AddressKey::with_prefix(ip, s.ssh.penalties.ipv6_prefix).to_string();
        for subject in [format!("address:{address_subject}"), format!("address:{key}"), format!("network:{network}")] {
            if let Some(id) = self.store.incident_about(&subject, since)? {
                suspicious = Some(format!("incident {id} about {subject}"));
                break;
            }
        }
        if suspicious.is_none() {
            let here = IpNetwork::host(ip);
            for addr in self.store.recent_suspicious_addresses(since, SUSPICIOUS_SCAN)? {
                let Ok(a) = addr.parse::<IpAddr>() else { continue };
                if here.contains(a) {
                    suspicious = Some(format!("a suspicious event from address {}", here));
                    break;
                }
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
        let mut r = Risk::default();
        r.weights.new_device = 0;
        r.weights.recent_failures = 55;
        r.recent_failures.failures = 1;
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
        let mut r = Risk::default();
        r.step_up_unavailable = "deny".into();
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
