//! The `detection: { ... }` section: the rules of `core::detect`, their
//! thresholds and windows (SPEC §10's numbers by default), and how they
//! resolve into `DetectionSettings`. Every rule is on by default.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    crate::model::parse_duration(&text).map_err(serde::de::Error::custom)
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// The longest window a rule may have: the detector rebuilds its state from
/// this much history at start, and keeps (bounded) state for it.
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * DAY);

/// A rule's section: `enabled` (on by default) and its fields, each with
/// its default beside it.
macro_rules! rule {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty = $default:expr),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            pub enabled: bool,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { enabled: true, $($field: $default),* }
            }
        }
    };
}

/// The rules, listed once: each is a field of the schema (`Detection`)
/// and of the resolved `DetectionSettings`, under the same name.
macro_rules! rules {
    ($($field:ident: $ty:ident),+ $(,)?) => {
        #[derive(Debug, Clone, Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Detection {
            /// Off: no rule runs (live or in `security scan suspicious`).
            pub enabled: bool,
            /// Keys (addresses, networks, accounts, names, password tags) one rule
            /// keeps state for at most; the oldest are dropped beyond it.
            pub max_tracked: usize,
            /// Networks are these prefixes: /24 for IPv4, /48 for IPv6.
            pub ipv4_network: u8,
            pub ipv6_network: u8,
            $(pub $field: $ty,)+
        }

        impl Default for Detection {
            fn default() -> Self {
                Detection { enabled: true, max_tracked: 50_000, ipv4_network: 24, ipv6_network: 48, $($field: $ty::default()),+ }
            }
        }

        /// The resolved section: the schema's values, checked, with the
        /// dictionary action parsed and the extra usernames lower-cased. A rule
        /// that is off has its `enabled` false (all of them when the section is).
        #[derive(Debug, Clone)]
        pub struct DetectionSettings {
            pub max_tracked: usize,
            pub ipv4_network: u8,
            pub ipv6_network: u8,
            $(pub $field: $ty,)+
            pub dictionary_action: DictionaryAction,
        }

        impl DetectionSettings {
            /// Whether any rule runs.
            pub fn any_enabled(&self) -> bool {
                false $(|| self.$field.enabled)+
            }

            /// Whether every rule runs.
            pub fn all_enabled(&self) -> bool {
                true $(&& self.$field.enabled)+
            }

            /// The schema's values as they are (`resolve` checked them), every
            /// rule off when the section is.
            fn from_schema(d: Detection, dictionary_action: DictionaryAction) -> DetectionSettings {
                let mut s = DetectionSettings { max_tracked: d.max_tracked, ipv4_network: d.ipv4_network, ipv6_network: d.ipv6_network, $($field: d.$field,)+ dictionary_action };
                $(s.$field.enabled &= d.enabled;)+
                s
            }
        }
    };
}

rules! {
    brute_force_account: BruteForceAccount,
    brute_force_ip: BruteForceIp,
    slow_brute_force: SlowBruteForce,
    credential_stuffing: CredentialStuffing,
    distributed_stuffing: DistributedStuffing,
    password_spraying: PasswordSpraying,
    dictionary_usernames: DictionaryUsernames,
    username_enumeration: UsernameEnumeration,
    injection: Injection,
    account_takeover: AccountTakeover,
}

rule! {
    /// Failures against one account, from any number of addresses.
    BruteForceAccount {
        failures: u32 = 5,
        #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
        window: Duration = Duration::from_secs(10 * MINUTE),
    }
}

rule! {
    /// Failures from one address.
    BruteForceIp {
        failures: u32 = 10,
        #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
        window: Duration = Duration::from_secs(10 * MINUTE),
    }
}

rule! {
    /// Failures from one address or one network over hours and days (a
    /// network's tier needs two of its addresses or more in the window).
    SlowBruteForce {
        tiers: Vec<Tier> = vec![Tier { failures: 30, window: Duration::from_secs(DAY) }, Tier { failures: 100, window: Duration::from_secs(7 * DAY) }],
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub failures: u32,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub window: Duration,
}

rule! {
    /// One address trying many accounts, nearly all failing. Only names that
    /// are accounts here count: the others are username enumeration's.
    CredentialStuffing {
        usernames: u32 = 5,
        /// Failed share of the address's attempts (0 to 1).
        failure_ratio: f64 = 0.8,
        #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
        window: Duration = Duration::from_secs(10 * MINUTE),
    }
}

rule! {
    /// Many addresses, many accounts, almost nothing succeeding, gate-wide.
    DistributedStuffing {
        addresses: u32 = 20,
        accounts: u32 = 20,
        /// Attempts (failures and successes) in the window at least.
        attempts: u32 = 100,
        /// Fires while the successful share stays below this (0 to 1).
        max_success_ratio: f64 = 0.05,
        #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
        window: Duration = Duration::from_secs(HOUR),
    }
}

rule! {
    /// One password tried against many accounts (seen through a keyed hash
    /// that lives only in the daemon's memory).
    PasswordSpraying {
        accounts: u32 = 5,
        #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
        window: Duration = Duration::from_secs(HOUR),
        /// Password tags waiting for the detector; more are dropped (counted),
        /// never waited for.
        queue: usize = 4096,
    }
}

rule! {
    /// Usernames attackers try; one that is not an account here marks the
    /// address at once.
    DictionaryUsernames {
        /// `block` (the finding asks for the address to be blocked) or `count`.
        action: String = "block".into(),
        /// Added to the shipped list.
        usernames: Vec<String> = Vec::new(),
        /// A hit fires once per address in this window; later hits attach.
        #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
        window: Duration = Duration::from_secs(HOUR),
    }
}

rule! {
    /// Many usernames that are not accounts, from one address or from two or
    /// more addresses of one network.
    UsernameEnumeration {
        usernames: u32 = 10,
        #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
        window: Duration = Duration::from_secs(HOUR),
    }
}

rule! {
    /// SQL, script tags, terminal escapes, format strings in usernames and
    /// prompts.
    Injection {
        /// One finding per subject in this window; later inputs attach.
        #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
        window: Duration = Duration::from_secs(HOUR),
    }
}

rule! {
    /// A success from a new device and a new address right after failures,
    /// and a password, email or 2FA change soon after it.
    AccountTakeover {
        /// Failures against the account...
        failures: u32 = 3,
        /// ...within this long before the login.
        #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
        failures_within: Duration = Duration::from_secs(HOUR),
        /// A change this soon after such a login fires again.
        #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
        change_within: Duration = Duration::from_secs(HOUR),
    }
}

/// What a dictionary hit asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictionaryAction {
    Block,
    Count,
}

impl DictionaryAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DictionaryAction::Block => "block",
            DictionaryAction::Count => "count",
        }
    }
}

impl Default for DetectionSettings {
    fn default() -> Self {
        let mut problems = Vec::new();
        resolve(Detection::default(), &|p: &str| p.to_owned(), &mut problems)
    }
}

impl DetectionSettings {
    /// The longest window of a rule that is on: how much history the
    /// detector reads at start and `security scan suspicious` by default.
    pub fn longest_window(&self) -> Duration {
        let mut w = Duration::ZERO;
        let mut consider = |on: bool, d: Duration| {
            if on {
                w = w.max(d);
            }
        };
        consider(self.brute_force_account.enabled, self.brute_force_account.window);
        consider(self.brute_force_ip.enabled, self.brute_force_ip.window);
        for t in &self.slow_brute_force.tiers {
            consider(self.slow_brute_force.enabled, t.window);
        }
        consider(self.credential_stuffing.enabled, self.credential_stuffing.window);
        consider(self.distributed_stuffing.enabled, self.distributed_stuffing.window);
        consider(self.password_spraying.enabled, self.password_spraying.window);
        consider(self.dictionary_usernames.enabled, self.dictionary_usernames.window);
        consider(self.username_enumeration.enabled, self.username_enumeration.window);
        consider(self.injection.enabled, self.injection.window);
        let a = &self.account_takeover;
        consider(a.enabled, a.failures_within.max(a.change_within));
        w
    }

    /// Every rule off (the benchmark's baseline, `enabled: false`).
    pub fn all_off() -> DetectionSettings {
        let d = Detection { enabled: false, ..Detection::default() };
        let mut problems = Vec::new();
        resolve(d, &|p: &str| p.to_owned(), &mut problems)
    }
}

/// Checks the section; `at(key)` gives `file:line:col: key` for messages.
pub fn resolve(d: Detection, at: &dyn Fn(&str) -> String, problems: &mut Vec<String>) -> DetectionSettings {
    let at_least_one = |problems: &mut Vec<String>, key: &str, value: u32| {
        if value == 0 {
            problems.push(format!("{}: must be at least 1", at(key)));
        }
    };
    let window = |problems: &mut Vec<String>, key: &str, value: Duration| {
        if value.is_zero() || value > MAX_WINDOW {
            problems.push(format!("{}: must be longer than 0s and at most 30d", at(key)));
        }
    };
    let ratio = |problems: &mut Vec<String>, key: &str, value: f64| {
        if !(0.0..=1.0).contains(&value) {
            problems.push(format!("{}: must be between 0 and 1 (a share, like 0.8)", at(key)));
        }
    };
    if !(100..=10_000_000).contains(&d.max_tracked) {
        problems.push(format!("{}: must be between 100 and 10000000", at("detection.max_tracked")));
    }
    if !(8..=32).contains(&d.ipv4_network) {
        problems.push(format!("{}: must be between 8 and 32", at("detection.ipv4_network")));
    }
    if !(16..=64).contains(&d.ipv6_network) {
        problems.push(format!("{}: must be between 16 and 64", at("detection.ipv6_network")));
    }
    at_least_one(problems, "detection.brute_force_account.failures", d.brute_force_account.failures);
    window(problems, "detection.brute_force_account.window", d.brute_force_account.window);
    at_least_one(problems, "detection.brute_force_ip.failures", d.brute_force_ip.failures);
    window(problems, "detection.brute_force_ip.window", d.brute_force_ip.window);
    if d.slow_brute_force.tiers.len() > 8 {
        problems.push(format!("{}: at most 8 tiers", at("detection.slow_brute_force.tiers")));
    }
    for (i, t) in d.slow_brute_force.tiers.iter().enumerate() {
        if t.failures == 0 {
            problems.push(format!("{}: tier {}: failures must be at least 1", at("detection.slow_brute_force.tiers"), i + 1));
        }
        if t.window.is_zero() || t.window > MAX_WINDOW {
            problems.push(format!("{}: tier {}: window must be longer than 0s and at most 30d", at("detection.slow_brute_force.tiers"), i + 1));
        }
    }
    let c = &d.credential_stuffing;
    at_least_one(problems, "detection.credential_stuffing.usernames", c.usernames);
    ratio(problems, "detection.credential_stuffing.failure_ratio", c.failure_ratio);
    window(problems, "detection.credential_stuffing.window", c.window);
    let s = &d.distributed_stuffing;
    at_least_one(problems, "detection.distributed_stuffing.addresses", s.addresses);
    at_least_one(problems, "detection.distributed_stuffing.accounts", s.accounts);
    at_least_one(problems, "detection.distributed_stuffing.attempts", s.attempts);
    ratio(problems, "detection.distributed_stuffing.max_success_ratio", s.max_success_ratio);
    window(problems, "detection.distributed_stuffing.window", s.window);
    let p = &d.password_spraying;
    at_least_one(problems, "detection.password_spraying.accounts", p.accounts);
    window(problems, "detection.password_spraying.window", p.window);
    if !(1..=1_000_000).contains(&p.queue) {
        problems.push(format!("{}: must be between 1 and 1000000", at("detection.password_spraying.queue")));
    }
    let action = match d.dictionary_usernames.action.as_str() {
        "block" => DictionaryAction::Block,
        "count" => DictionaryAction::Count,
        other => {
            problems.push(format!("{}: unknown action {other:?}: use \"block\" or \"count\"", at("detection.dictionary_usernames.action")));
            DictionaryAction::Block
        }
    };
    window(problems, "detection.dictionary_usernames.window", d.dictionary_usernames.window);
    let mut extra = Vec::with_capacity(d.dictionary_usernames.usernames.len());
    for name in &d.dictionary_usernames.usernames {
        let n = name.chars().count();
        if n == 0 || n > 64 || name.chars().any(|c| c.is_whitespace() || crate::model::is_terminal_unsafe(c)) {
            problems.push(format!(
                "{}: invalid username {:?}: 1-64 characters, no spaces or control characters",
                at("detection.dictionary_usernames.usernames"),
                crate::model::escape_control(name)
            ));
        } else {
            extra.push(name.to_lowercase());
        }
    }
    at_least_one(problems, "detection.username_enumeration.usernames", d.username_enumeration.usernames);
    window(problems, "detection.username_enumeration.window", d.username_enumeration.window);
    window(problems, "detection.injection.window", d.injection.window);
    let a = &d.account_takeover;
    at_least_one(problems, "detection.account_takeover.failures", a.failures);
    window(problems, "detection.account_takeover.failures_within", a.failures_within);
    window(problems, "detection.account_takeover.change_within", a.change_within);

    let mut out = DetectionSettings::from_schema(d, action);
    out.dictionary_usernames.usernames = extra;
    out
}

#[cfg(test)]
mod tests {
    use crate::config::load::from_text;
    use std::path::Path;
    use std::time::Duration;

    fn check(text: &str) -> Result<crate::config::Settings, Vec<String>> {
        from_text(text, "portcullis.hjson", Path::new("/etc/portcullis"))
    }

    #[test]
    fn defaults_are_spec_numbers_and_every_rule_is_on() {
        let d = check("{}").unwrap_or_else(|e| panic!("{e:?}")).detection;
        assert!(d.any_enabled());
        assert_eq!((d.brute_force_account.failures, d.brute_force_account.window), (5, Duration::from_secs(600)));
        assert_eq!((d.brute_force_ip.failures, d.brute_force_ip.window), (10, Duration::from_secs(600)));
        let tiers: Vec<(u32, u64)> = d.slow_brute_force.tiers.iter().map(|t| (t.failures, t.window.as_secs())).collect();
        assert_eq!(tiers, vec![(30, 86_400), (100, 604_800)]);
        assert_eq!((d.credential_stuffing.usernames, d.credential_stuffing.failure_ratio), (5, 0.8));
        assert_eq!(d.password_spraying.accounts, 5);
        assert_eq!(d.dictionary_action, super::DictionaryAction::Block);
        assert_eq!(d.longest_window(), Duration::from_secs(7 * 86_400));
        assert!(d.all_enabled());
        let off = check("detection: {\n  enabled: false\n}\n").unwrap_or_else(|e| panic!("{e:?}")).detection;
        assert!(!off.any_enabled());
        let some = check("detection: {\n  brute_force_ip: {\n    window: 5m\n  }\n  dictionary_usernames: {\n    action: count\n    usernames: [\"Minecraft\", \"steam\"]\n  }\n}\n").unwrap_or_else(|e| panic!("{e:?}")).detection;
        assert_eq!((some.brute_force_ip.failures, some.brute_force_ip.window), (10, Duration::from_secs(300)), "unset keys keep their defaults");
        assert_eq!(some.dictionary_action, super::DictionaryAction::Count);
        assert_eq!(some.dictionary_usernames.usernames, vec!["minecraft".to_string(), "steam".to_string()]);
    }

    #[test]
    fn bad_values_name_file_line_column_and_key() {
        let cases: &[(&str, &str)] = &[
            ("detection: {\n  brute_force_account: {\n    failures: 0\n  }\n}\n", "portcullis.hjson:3:5: detection.brute_force_account.failures: must be at least 1"),
            ("detection: {\n  brute_force_ip: {\n    window: 0s\n  }\n}\n", "portcullis.hjson:3:5: detection.brute_force_ip.window: must be longer than 0s and at most 30d"),
            ("detection: {\n  brute_force_ip: {\n    window: 31d\n  }\n}\n", "portcullis.hjson:3:5: detection.brute_force_ip.window: must be longer than 0s and at most 30d"),
            ("detection: {\n  brute_force_ip: {\n    window: soon\n  }\n}\n", "portcullis.hjson:3:13: detection.brute_force_ip.window: invalid duration \"soon\": a unit needs a number before it"),
            ("detection: {\n  credential_stuffing: {\n    failure_ratio: 80\n  }\n}\n", "portcullis.hjson:3:5: detection.credential_stuffing.failure_ratio: must be between 0 and 1 (a share, like 0.8)"),
            ("detection: {\n  distributed_stuffing: {\n    max_success_ratio: -0.1\n  }\n}\n", "portcullis.hjson:3:5: detection.distributed_stuffing.max_success_ratio: must be between 0 and 1 (a share, like 0.8)"),
            ("detection: {\n  dictionary_usernames: {\n    action: ban\n  }\n}\n", "portcullis.hjson:3:5: detection.dictionary_usernames.action: unknown action \"ban\": use \"block\" or \"count\""),
            ("detection: {\n  dictionary_usernames: {\n    usernames: [\"ok\", \"a b\"]\n  }\n}\n", "portcullis.hjson:3:5: detection.dictionary_usernames.usernames: invalid username \"a b\": 1-64 characters, no spaces or control characters"),
            ("detection: {\n  slow_brute_force: {\n    tiers: [\n      {\n        failures: 0\n        window: 1h\n      }\n    ]\n  }\n}\n", "portcullis.hjson:3:5: detection.slow_brute_force.tiers: tier 1: failures must be at least 1"),
            ("detection: {\n  slow_brute_force: {\n    tiers: [\n      {\n        failures: 3\n        windw: 1h\n      }\n    ]\n  }\n}\n", "portcullis.hjson:6:9: detection.slow_brute_force.tiers[0].windw: unknown field \"windw\", expected one of \"failures\", \"window\""),
            ("detection: {\n  ipv4_network: 33\n}\n", "portcullis.hjson:2:3: detection.ipv4_network: must be between 8 and 32"),
            ("detection: {\n  ipv6_network: 8\n}\n", "portcullis.hjson:2:3: detection.ipv6_network: must be between 16 and 64"),
            ("detection: {\n  max_tracked: 5\n}\n", "portcullis.hjson:2:3: detection.max_tracked: must be between 100 and 10000000"),
            ("detection: {\n  password_spraying: {\n    queue: 0\n  }\n}\n", "portcullis.hjson:3:5: detection.password_spraying.queue: must be between 1 and 1000000"),
            ("detection: {\n  account_takeover: {\n    failures: 0\n    change_within: 0s\n  }\n}\n", "portcullis.hjson:3:5: detection.account_takeover.failures: must be at least 1\nportcullis.hjson:4:5: detection.account_takeover.change_within: must be longer than 0s and at most 30d"),
            ("detection: {\n  injection: {\n    on: true\n  }\n}\n", "portcullis.hjson:3:5: detection.injection.on: unknown field \"on\", expected one of \"enabled\", \"window\""),
        ];
        for (text, want) in cases {
            match check(text) {
                Ok(_) => panic!("config {text:?} should fail"),
                Err(errors) => assert_eq!(errors.join("\n"), *want, "config {text:?}"),
            }
        }
    }
}
