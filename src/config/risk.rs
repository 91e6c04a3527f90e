//! The `risk: { ... }` section: the factors of a login's risk score, their
//! weights and windows, the thresholds of the adaptive rule (SPEC §9), and
//! how they resolve into `RiskSettings`. `core::risk` computes the score.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    crate::model::parse_duration(&text).map_err(serde::de::Error::custom)
}

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
/// The longest window a factor may look back.
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * DAY);

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Risk {
    /// Off: no score is computed (every login scores 0, nothing steps up).
    pub enabled: bool,
    /// At or above: the login must pass the next factor level the user has.
    pub step_up: u8,
    /// At or above: the login is refused and an incident opened.
    pub deny: u8,
    /// What a login at or above `step_up` gets when the user has no factor
    /// above the level required: "allow" (recorded as
    /// `risk_step_up_unavailable`) or "deny".
    pub step_up_unavailable: String,
    /// false (SPEC §4): enrolling a code makes the user AR2, every login
    /// asks for it. true: an enrolled code is asked only when the score
    /// reaches `step_up` (or a group or playbook requires level 2).
    pub adaptive_codes: bool,
    pub weights: Weights,
    pub recent_failures: RecentFailures,
    /// Suspicious events from the address or its network within this long,
    /// and incidents about them open or resolved within it, count.
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub suspicious_within: Duration,
    pub unusual_hour: UnusualHour,
}

impl Default for Risk {
    fn default() -> Self {
        Risk {
            enabled: true,
            step_up: 70,
            deny: 90,
            step_up_unavailable: "allow".into(),
            adaptive_codes: false,
            weights: Weights::default(),
            recent_failures: RecentFailures::default(),
            suspicious_within: Duration::from_secs(DAY),
            unusual_hour: UnusualHour::default(),
        }
    }
}

/// What each factor adds when it applies (`trusted_device` takes away).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// The account has never logged in from this device.
    pub new_device: i32,
    /// A device the account knows, not trusted.
    pub untrusted_device: i32,
    /// No full login of the account from this address (IPv6: its /64).
    pub new_address: i32,
    /// No full login of the account from this network
    /// (`detection.ipv4_network` / `ipv6_network`: /24, /48).
    pub new_network: i32,
    /// `recent_failures.failures` failed logins or codes on the account
    /// within `recent_failures.within`.
    pub recent_failures: i32,
    /// The address or its network in recent suspicious events or in an
    /// incident open or resolved lately.
    pub suspicious_address: i32,
    /// An hour of day the account does not log in at.
    pub unusual_hour: i32,
    /// A device the account trusts: negative, it lowers the score.
    pub trusted_device: i32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            new_device: 30,
            untrusted_device: 10,
            new_address: 15,
            new_network: 15,
            recent_failures: 20,
            suspicious_address: 30,
            unusual_hour: 10,
            trusted_device: -30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecentFailures {
    pub failures: u32,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub within: Duration,
}

impl Default for RecentFailures {
    fn default() -> Self {
        RecentFailures { failures: 3, within: Duration::from_secs(HOUR) }
    }
}

/// An hour is unusual for an account when none of its last `history`
/// logins fell within `margin_hours` of it (hour of day, UTC, around the
/// clock); it needs `min_logins` logins to judge, else the factor does not
/// apply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnusualHour {
    pub min_logins: u32,
    pub history: u32,
    pub margin_hours: u8,
}

impl Default for UnusualHour {
    fn default() -> Self {
        UnusualHour { min_logins: 10, history: 100, margin_hours: 1 }
    }
}

/// What a login at or above `step_up` gets when no higher factor exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepUpUnavailable {
    Allow,
    Deny,
}

/// The resolved section.
#[derive(Debug, Clone)]
pub struct RiskSettings {
    pub enabled: bool,
    pub step_up: u8,
    pub deny: u8,
    pub step_up_unavailable: StepUpUnavailable,
    pub adaptive_codes: bool,
    pub weights: Weights,
    pub recent_failures: RecentFailures,
    pub suspicious_within: Duration,
    pub unusual_hour: UnusualHour,
}

impl Default for RiskSettings {
    fn default() -> Self {
        resolve(Risk::default(), &|p: &str| p.to_owned(), &mut Vec::new())
    }
}

/// Checks the section; `at(key)` gives `file:line:col: key` for messages.
pub fn resolve(r: Risk, at: &dyn Fn(&str) -> String, problems: &mut Vec<String>) -> RiskSettings {
    for (key, value) in [("risk.step_up", r.step_up), ("risk.deny", r.deny)] {
        if !(1..=100).contains(&value) {
            problems.push(format!("{}: must be between 1 and 100", at(key)));
        }
    }
    if r.step_up > r.deny {
        problems.push(format!("{}: must not be above risk.deny ({})", at("risk.step_up"), r.deny));
    }
    let unavailable = match r.step_up_unavailable.as_str() {
        "allow" => StepUpUnavailable::Allow,
        "deny" => StepUpUnavailable::Deny,
        other => {
            problems.push(format!("{}: unknown choice {:?}: use \"allow\" or \"deny\"", at("risk.step_up_unavailable"), crate::model::escape_control(other)));
            StepUpUnavailable::Allow
        }
    };
    let w = &r.weights;
    for (name, value) in [
        ("new_device", w.new_device),
        ("untrusted_device", w.untrusted_device),
        ("new_address", w.new_address),
        ("new_network", w.new_network),
        ("recent_failures", w.recent_failures),
        ("suspicious_address", w.suspicious_address),
        ("unusual_hour", w.unusual_hour),
    ] {
        if !(0..=100).contains(&value) {
            problems.push(format!("{}: must be between 0 and 100", at(&format!("risk.weights.{name}"))));
        }
    }
    if !(-100..=0).contains(&w.trusted_device) {
        problems.push(format!("{}: must be between -100 and 0 (a trusted device lowers the score)", at("risk.weights.trusted_device")));
    }
    let window = |problems: &mut Vec<String>, key: &str, value: Duration| {
        if value.is_zero() || value > MAX_WINDOW {
            problems.push(format!("{}: must be longer than 0s and at most 30d", at(key)));
        }
    };
    if r.recent_failures.failures == 0 {
        problems.push(format!("{}: must be at least 1", at("risk.recent_failures.failures")));
    }
    window(problems, "risk.recent_failures.within", r.recent_failures.within);
    window(problems, "risk.suspicious_within", r.suspicious_within);
    let u = &r.unusual_hour;
    if !(1..=1000).contains(&u.min_logins) {
        problems.push(format!("{}: must be between 1 and 1000", at("risk.unusual_hour.min_logins")));
    }
    if u.history < u.min_logins || u.history > 1000 {
        problems.push(format!("{}: must be between risk.unusual_hour.min_logins ({}) and 1000", at("risk.unusual_hour.history"), u.min_logins));
    }
    if u.margin_hours > 11 {
        problems.push(format!("{}: must be between 0 and 11", at("risk.unusual_hour.margin_hours")));
    }
    RiskSettings {
        enabled: r.enabled,
        step_up: r.step_up,
        deny: r.deny,
        step_up_unavailable: unavailable,
        adaptive_codes: r.adaptive_codes,
        weights: r.weights,
        recent_failures: r.recent_failures,
        suspicious_within: r.suspicious_within,
        unusual_hour: r.unusual_hour,
    }
}

#[cfg(test)]
mod tests {
    use super::StepUpUnavailable;
    use crate::config::load::from_text;
    use std::path::Path;
    use std::time::Duration;

    fn check(text: &str) -> Result<crate::config::Settings, Vec<String>> {
        from_text(text, "portcullis.hjson", Path::new("/etc/portcullis"))
    }

    #[test]
    fn defaults_and_partial_sections() {
        let r = check("{}").unwrap_or_else(|e| panic!("{e:?}")).risk;
        assert!(r.enabled && !r.adaptive_codes);
        assert_eq!((r.step_up, r.deny, r.step_up_unavailable), (70, 90, StepUpUnavailable::Allow));
        assert_eq!(r.weights, super::Weights::default());
        assert_eq!((r.weights.new_device, r.weights.trusted_device), (30, -30));
        assert_eq!((r.recent_failures.failures, r.recent_failures.within), (3, Duration::from_secs(3600)));
        assert_eq!(r.suspicious_within, Duration::from_secs(86_400));
        assert_eq!((r.unusual_hour.min_logins, r.unusual_hour.history, r.unusual_hour.margin_hours), (10, 100, 1));
        let some = check("risk: {\n  step_up_unavailable: deny\n  weights: {\n    new_device: 80\n  }\n}\n").unwrap_or_else(|e| panic!("{e:?}")).risk;
        assert_eq!(some.step_up_unavailable, StepUpUnavailable::Deny);
        assert_eq!((some.weights.new_device, some.weights.new_address), (80, 15), "unset keys keep their defaults");
    }

    #[test]
    fn bad_values_name_file_line_column_and_key() {
        let cases: &[(&str, &str)] = &[
            ("risk: {\n  step_up: 0\n}\n", "portcullis.hjson:2:3: risk.step_up: must be between 1 and 100"),
            ("risk: {\n  deny: 101\n}\n", "portcullis.hjson:2:3: risk.deny: must be between 1 and 100"),
            ("risk: {\n  step_up: 95\n}\n", "portcullis.hjson:2:3: risk.step_up: must not be above risk.deny (90)"),
            ("risk: {\n  deny: 300\n}\n", "portcullis.hjson:2:9: risk.deny: integer 300 is out of range for u8"),
            ("risk: {\n  step_up_unavailable: maybe\n}\n", "portcullis.hjson:2:3: risk.step_up_unavailable: unknown choice \"maybe\": use \"allow\" or \"deny\""),
            ("risk: {\n  weights: {\n    new_device: -5\n  }\n}\n", "portcullis.hjson:3:5: risk.weights.new_device: must be between 0 and 100"),
            ("risk: {\n  weights: {\n    trusted_device: 10\n  }\n}\n", "portcullis.hjson:3:5: risk.weights.trusted_device: must be between -100 and 0 (a trusted device lowers the score)"),
            ("risk: {\n  weights: {\n    new_place: 10\n  }\n}\n", "portcullis.hjson:3:5: risk.weights.new_place: unknown field \"new_place\", expected one of \"new_device\", \"untrusted_device\", \"new_address\", \"new_network\", \"recent_failures\", \"suspicious_address\", \"unusual_hour\", \"trusted_device\""),
            ("risk: {\n  recent_failures: {\n    failures: 0\n    within: 0s\n  }\n}\n", "portcullis.hjson:3:5: risk.recent_failures.failures: must be at least 1\nportcullis.hjson:4:5: risk.recent_failures.within: must be longer than 0s and at most 30d"),
            ("risk: {\n  suspicious_within: 31d\n}\n", "portcullis.hjson:2:3: risk.suspicious_within: must be longer than 0s and at most 30d"),
            ("risk: {\n  unusual_hour: {\n    min_logins: 20\n    history: 10\n  }\n}\n", "portcullis.hjson:4:5: risk.unusual_hour.history: must be between risk.unusual_hour.min_logins (20) and 1000"),
            ("risk: {\n  unusual_hour: {\n    margin_hours: 12\n  }\n}\n", "portcullis.hjson:3:5: risk.unusual_hour.margin_hours: must be between 0 and 11"),
        ];
        for (text, want) in cases {
            match check(text) {
                Ok(_) => panic!("config {text:?} should fail"),
                Err(errors) => assert_eq!(errors.join("\n"), *want, "config {text:?}"),
            }
        }
    }
}
