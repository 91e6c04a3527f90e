//! The shape of response playbooks (`playbooks:` in `portcullis.hjson`, or
//! a file it names): from an incident type and/or severity to a list of
//! actions. Parsed from the hjson tree so that every problem carries its
//! position (`file:line:col: playbooks[0].actions[1].lock: message`);
//! `core::playbooks` plans and runs them.

use super::hjson::{self, join_index, join_key, Node, Spanned};
use crate::model::{parse_duration, IncidentSeverity, IncidentType};
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The built-in playbooks (`config/playbooks.hjson`), used when the config
/// has no `playbooks` key. `playbooks: []` means none.
pub const DEFAULT_PLAYBOOKS: &str = include_str!("../../config/playbooks.hjson");

/// The name the built-in playbooks go by in messages.
pub const BUILT_IN: &str = "playbooks.hjson (built-in)";

/// A playbook lock never lasts longer: the owner is never locked out for
/// good by a rule (a sysop's `user lock` has no such bound).
pub const MAX_LOCK: Duration = Duration::from_secs(24 * 3600);

/// A block's `for` never lasts longer (the blocks' own growth stops at the
/// one-week recidivist tier).
pub const MAX_BLOCK: Duration = Duration::from_secs(30 * 86_400);

/// The action names, in the order messages list them.
pub const ACTIONS: &[&str] = &["lock", "block", "revoke_sessions", "force_password_reset", "require_level", "notify", "webhook", "escalate"];

#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub name: String,
    pub when: When,
    /// Record what would be done, do nothing (CrowdSec's simulation mode).
    pub dry_run: bool,
    pub actions: Vec<Action>,
}

/// Every condition given must hold; within a list, any entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct When {
    /// Empty: any type.
    pub incident_types: Vec<IncidentType>,
    pub severity_at_least: Option<IncidentSeverity>,
    /// Names of detection rules (the finding's `details.rule`); empty: any.
    pub rules: Vec<String>,
}

impl When {
    pub fn matches(&self, incident_type: IncidentType, severity: IncidentSeverity, details: &serde_json::Value) -> bool {
        let type_ok = self.incident_types.is_empty() || self.incident_types.contains(&incident_type);
        let severity_ok = self.severity_at_least.is_none_or(|s| severity.rank() >= s.rank());
        let rule_ok = self.rules.is_empty() || details.get("rule").and_then(|r| r.as_str()).is_some_and(|r| self.rules.iter().any(|x| x == r));
        type_ok && severity_ok && rule_ok
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Lock the incident's account for this long (at most [`MAX_LOCK`]).
    Lock { duration: Duration },
    /// Block the incident's address or network; `None`: the blocks'
    /// growing default duration and grouping (IPv4 per address, IPv6 /64).
    Block { duration: Option<Duration>, ipv4_bits: Option<u8>, ipv6_bits: Option<u8> },
    RevokeSessions,
    ForcePasswordReset,
    /// Raise the account's required factor level to 2 or 3.
    RequireLevel(u8),
    Notify(Vec<NotifyTarget>),
    /// A webhook by its name under `webhooks:`.
    Webhook(String),
    Escalate(Escalation),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Lock { .. } => "lock",
            Action::Block { .. } => "block",
            Action::RevokeSessions => "revoke_sessions",
            Action::ForcePasswordReset => "force_password_reset",
            Action::RequireLevel(_) => "require_level",
            Action::Notify(_) => "notify",
            Action::Webhook(_) => "webhook",
            Action::Escalate(_) => "escalate",
        }
    }
}

/// If the incident is still open `after` its creation: raise its severity
/// one step, and notify again.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    pub after: Duration,
    pub raise_severity: bool,
    pub notify: Vec<NotifyTarget>,
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// The members of the `sysops` group that have an email address.
    Sysops,
    /// The incident's account.
    User,
    /// One address.
    Address(String),
}

impl NotifyTarget {
    pub fn describe(&self) -> String {
        match self {
            NotifyTarget::Sysops => "sysops".into(),
            NotifyTarget::User => "user".into(),
            NotifyTarget::Address(a) => a.clone(),
        }
    }
}

/// Accepts what may stand for `playbooks` at the top of the config (an
/// array, or a file name); the content is read from the tree by [`load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaybooksKey {
    File(String),
    Inline,
}

impl<'de> Deserialize<'de> for PlaybooksKey {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PlaybooksKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of playbooks or the name of a playbook file")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PlaybooksKey, E> {
                Ok(PlaybooksKey::File(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PlaybooksKey, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(PlaybooksKey::Inline)
            }
        }
        d.deserialize_any(V)
    }
}

/// Where the playbooks came from, for messages: the file, or [`BUILT_IN`].
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub source: String,
    pub playbooks: Vec<Playbook>,
}

/// The playbooks of a config: `node` is the value of its `playbooks` key
/// (`None`: the built-in defaults), `file` its name in messages, `folder`
/// where a named playbook file is looked up, `webhooks` the names defined.
pub fn load(node: Option<&Spanned>, file: &str, folder: &Path, webhooks: &BTreeSet<String>) -> Result<Loaded, Vec<String>> {
    let mut problems = Vec::new();
    let loaded = match node.map(|n| (n, &n.node)) {
        None => from_file_text(DEFAULT_PLAYBOOKS, BUILT_IN, webhooks, &mut problems),
        Some((_, Node::String(name))) => {
            let p = Path::new(name);
            let path = if p.is_absolute() { p.to_path_buf() } else { folder.join(p) };
            let shown = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => from_file_text(&text, &shown, webhooks, &mut problems),
                Err(e) => {
                    problems.push(format!("{}: cannot read playbook file {shown}: {e}", at(file, node.map(|n| (n.line, n.col)), "playbooks")));
                    Loaded { source: shown, playbooks: Vec::new() }
                }
            }
        }
        Some((n, Node::Array(items))) => {
            let _ = n;
            Loaded { source: file.to_owned(), playbooks: parse_list(items, file, webhooks, &mut problems) }
        }
        Some((n, _)) => {
            problems.push(format!("{file}:{}:{}: playbooks: expected an array of playbooks or the name of a playbook file", n.line, n.col));
            Loaded { source: file.to_owned(), playbooks: Vec::new() }
        }
    };
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(problems)
    }
}

fn at(file: &str, pos: Option<(usize, usize)>, path: &str) -> String {
    match pos {
        Some((l, c)) => format!("{file}:{l}:{c}: {path}"),
        None => format!("{file}: {path}"),
    }
}

/// A playbook file: an object whose only key is `playbooks`.
fn from_file_text(text: &str, name: &str, webhooks: &BTreeSet<String>, problems: &mut Vec<String>) -> Loaded {
    let mut out = Loaded { source: name.to_owned(), playbooks: Vec::new() };
    let root = match hjson::parse(text) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("{name}:{e}"));
            return out;
        }
    };
    let Node::Object(members) = &root.node else {
        problems.push(format!("{name}:{}:{}: the playbook file must be an object holding `playbooks: [...]`", root.line, root.col));
        return out;
    };
    for (key, value) in members {
        match (key.name.as_str(), &value.node) {
            ("playbooks", Node::Array(items)) => out.playbooks = parse_list(items, name, webhooks, problems),
            ("playbooks", _) => problems.push(format!("{name}:{}:{}: playbooks: expected an array of playbooks", value.line, value.col)),
            (other, _) => problems.push(format!("{name}:{}:{}: {}: unknown field {other:?}, expected \"playbooks\"", key.line, key.col, join_key("", other))),
        }
    }
    out
}

/// The fields of one playbook but its actions (checked by hand below, so
/// that each action is an object of one key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaybookDef {
    #[allow(dead_code)]
    name: String,
    when: WhenDef,
    #[serde(default)]
    dry_run: bool,
    #[allow(dead_code)]
    actions: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenDef {
    #[serde(default)]
    incident_type: OneOrMany<TypeDe>,
    #[serde(default)]
    severity_at_least: Option<SeverityDe>,
    #[serde(default)]
    rule: OneOrMany<RuleDe>,
}

fn parse_list(items: &[Spanned], file: &str, webhooks: &BTreeSet<String>, problems: &mut Vec<String>) -> Vec<Playbook> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = join_index("playbooks", i);
        let before = problems.len();
        let def = match hjson::from_spanned_at::<PlaybookDef>(item, &path) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{file}:{e}"));
                continue;
            }
        };
        let (name_key, name_node) = item.get_entry("name").expect("deserialized: has a name");
        let name = name_node.as_str().map(str::to_owned).unwrap_or_default();
        let name_at = format!("{file}:{}:{}: {}", name_key.line, name_key.col, join_key(&path, "name"));
        if !valid_name(&name) {
            problems.push(format!("{name_at}: invalid playbook name {name:?}: use 1-64 letters, digits, '_', '-' or '.'"));
        } else if !names.insert(name.to_lowercase()) {
            problems.push(format!("{name_at}: the playbook name {name:?} is used twice"));
        }
        let when = When {
            incident_types: def.when.incident_type.0.into_iter().map(|t| t.0).collect(),
            severity_at_least: def.when.severity_at_least.map(|s| s.0),
            rules: def.when.rule.0.into_iter().map(|r| r.0).collect(),
        };
        if when == When::default() {
            let (k, _) = item.get_entry("when").expect("deserialized: has when");
            problems.push(format!("{file}:{}:{}: {}: needs incident_type, severity_at_least or rule (a playbook for every incident says severity_at_least: low)", k.line, k.col, join_key(&path, "when")));
        }
        let (actions_key, actions_node) = item.get_entry("actions").expect("deserialized: has actions");
        let actions_path = join_key(&path, "actions");
        let mut actions = Vec::new();
        match &actions_node.node {
            Node::Array(list) if list.is_empty() => {
                problems.push(format!("{file}:{}:{}: {actions_path}: a playbook needs at least one action", actions_key.line, actions_key.col));
            }
            Node::Array(list) => {
                for (j, a) in list.iter().enumerate() {
                    if let Some(action) = parse_action(a, &join_index(&actions_path, j), file, webhooks, problems) {
                        actions.push(action);
                    }
                }
            }
            _ => unreachable!("deserialized as a sequence"),
        }
        if problems.len() == before {
            out.push(Playbook { name, when, dry_run: def.dry_run, actions });
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.chars().count()) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockDef {
    #[serde(rename = "for", default)]
    duration: Option<Dur>,
    #[serde(default)]
    ipv4_bits: Option<u8>,
    #[serde(default)]
    ipv6_bits: Option<u8>,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalateDef {
    after: Dur,
    #[serde(default = "default_true")]
    raise_severity: bool,
    #[serde(default)]
    notify: OneOrMany<TargetDe>,
    #[serde(default)]
    webhook: Option<String>,
}

fn parse_action(node: &Spanned, path: &str, file: &str, webhooks: &BTreeSet<String>, problems: &mut Vec<String>) -> Option<Action> {
    let one_key = "an action is an object with one key, like { lock: \"15m\" } or { notify: sysops }";
    let members = match &node.node {
        Node::Object(m) if m.len() == 1 => m,
        Node::Object(m) => {
            let keys: Vec<&str> = m.iter().map(|(k, _)| k.name.as_str()).collect();
            problems.push(format!("{file}:{}:{}: {path}: {one_key}; this one has {} ({})", node.line, node.col, m.len(), keys.join(", ")));
            return None;
        }
        _ => {
            problems.push(format!("{file}:{}:{}: {path}: {one_key}", node.line, node.col));
            return None;
        }
    };
    let (key, value) = &members[0];
    let path = join_key(path, &key.name);
    let key_at = format!("{file}:{}:{}: {path}", key.line, key.col);
    let mut typed = |r: Result<Action, hjson::Error>| match r {
        Ok(a) => Some(a),
        Err(e) => {
            problems.push(format!("{file}:{e}"));
            None
        }
    };
    let webhook_known = |name: &str| -> Result<(), String> {
        if webhooks.contains(name) {
            return Ok(());
        }
        let defined: Vec<String> = webhooks.iter().map(|w| format!("{w:?}")).collect();
        Err(format!("no webhook named {name:?} under webhooks: (defined: {})", if defined.is_empty() { "none".to_owned() } else { defined.join(", ") }))
    };
    let action = match key.name.as_str() {
        "lock" => {
            let d = typed(hjson::from_spanned_at::<Dur>(value, &path).map(|d| Action::Lock { duration: d.0 }))?;
            let Action::Lock { duration } = d else { unreachable!() };
            if duration.is_zero() {
                problems.push(format!("{key_at}: must be longer than 0s"));
                return None;
            }
            if duration > MAX_LOCK {
                problems.push(format!("{key_at}: a playbook lock of {} is longer than the maximum of 24h (the owner must never be locked out for good; a sysop can still lock longer with `user lock`)", show_duration(duration)));
                return None;
            }
            d
        }
        "block" => match &value.node {
            Node::Bool(true) => Action::Block { duration: None, ipv4_bits: None, ipv6_bits: None },
            Node::Object(_) => {
                let def = match hjson::from_spanned_at::<BlockDef>(value, &path) {
                    Ok(d) => d,
                    Err(e) => {
                        problems.push(format!("{file}:{e}"));
                        return None;
                    }
                };
                let member_at = |k: &str| match value.get_entry(k) {
                    Some((k, _)) => format!("{file}:{}:{}: {}", k.line, k.col, join_key(&path, &k.name)),
                    None => key_at.clone(),
                };
                let mut ok = true;
                if let Some(d) = &def.duration {
                    if d.0.is_zero() || d.0 > MAX_BLOCK {
                        problems.push(format!("{}: must be longer than 0s and at most 30d", member_at("for")));
                        ok = false;
                    }
                }
                if def.ipv4_bits.is_some_and(|b| !(8..=32).contains(&b)) {
                    problems.push(format!("{}: must be between 8 and 32 (32: the address alone)", member_at("ipv4_bits")));
                    ok = false;
                }
                if def.ipv6_bits.is_some_and(|b| !(16..=64).contains(&b)) {
                    problems.push(format!("{}: must be between 16 and 64 (a longer prefix would let one host escape its block)", member_at("ipv6_bits")));
                    ok = false;
                }
                if !ok {
                    return None;
                }
                Action::Block { duration: def.duration.map(|d| d.0), ipv4_bits: def.ipv4_bits, ipv6_bits: def.ipv6_bits }
            }
            _ => {
                problems.push(format!("{}:{}:{}: {path}: expected true or an object like {{ for: \"2h\", ipv4_bits: 24 }}", file, value.line, value.col));
                return None;
            }
        },
        "revoke_sessions" | "force_password_reset" => {
            if value.node != Node::Bool(true) {
                problems.push(format!("{}:{}:{}: {path}: expected true (leave the action out to not take it)", file, value.line, value.col));
                return None;
            }
            if key.name == "revoke_sessions" {
                Action::RevokeSessions
            } else {
                Action::ForcePasswordReset
            }
        }
        "require_level" => {
            let level = typed(hjson::from_spanned_at::<u8>(value, &path).map(Action::RequireLevel))?;
            if !matches!(level, Action::RequireLevel(2 | 3)) {
                problems.push(format!("{key_at}: must be 2 (a one-time code) or 3 (a hardware key)"));
                return None;
            }
            level
        }
        "notify" => typed(hjson::from_spanned_at::<OneOrMany<TargetDe>>(value, &path).map(|t| Action::Notify(t.0.into_iter().map(|t| t.0).collect())))?,
        "webhook" => {
            let name = typed(hjson::from_spanned_at::<String>(value, &path).map(Action::Webhook))?;
            let Action::Webhook(n) = &name else { unreachable!() };
            if let Err(e) = webhook_known(n) {
                problems.push(format!("{key_at}: {e}"));
                return None;
            }
            name
        }
        "escalate" => {
            let def = match hjson::from_spanned_at::<EscalateDef>(value, &path) {
                Ok(d) => d,
                Err(e) => {
                    problems.push(format!("{file}:{e}"));
                    return None;
                }
            };
            let e = Escalation { after: def.after.0, raise_severity: def.raise_severity, notify: def.notify.0.into_iter().map(|t| t.0).collect(), webhook: def.webhook };
            if e.after.is_zero() {
                let (k, _) = value.get_entry("after").expect("deserialized: has after");
                problems.push(format!("{file}:{}:{}: {}: must be longer than 0s", k.line, k.col, join_key(&path, "after")));
                return None;
            }
            if let Some(w) = &e.webhook {
                if let Err(msg) = webhook_known(w) {
                    let (k, _) = value.get_entry("webhook").expect("deserialized: has webhook");
                    problems.push(format!("{file}:{}:{}: {}: {msg}", k.line, k.col, join_key(&path, "webhook")));
                    return None;
                }
            }
            if !e.raise_severity && e.notify.is_empty() && e.webhook.is_none() {
                problems.push(format!("{key_at}: does nothing: set raise_severity, notify or webhook"));
                return None;
            }
            Action::Escalate(e)
        }
        other => {
            let expected: Vec<String> = ACTIONS.iter().map(|a| format!("{a:?}")).collect();
            problems.push(format!("{key_at}: unknown action {other:?}, expected one of {}", expected.join(", ")));
            return None;
        }
    };
    Some(action)
}

/// `90s` → "90s", `2d` → "2d": a duration as a config would write it.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// A duration written like "15m".
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Dur).map_err(de::Error::custom)
    }
}

/// One value or an array of them.
struct OneOrMany<T>(Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::<E>::new(v)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = seq.next_element::<T>()? {
                    out.push(t);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn names_of<T: fmt::Display>(all: &[T]) -> String {
    all.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ")
}

struct TypeDe(IncidentType);

impl<'de> Deserialize<'de> for TypeDe {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        IncidentType::parse(&text).map(TypeDe).ok_or_else(|| de::Error::custom(format!("unknown incident type {text:?}, expected one of {}", names_of(IncidentType::ALL))))
    }
}

struct SeverityDe(IncidentSeverity);

impl<'de> Deserialize<'de> for SeverityDe {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        IncidentSeverity::parse(&text).map(SeverityDe).ok_or_else(|| de::Error::custom(format!("unknown severity {text:?}, expected one of {}", names_of(IncidentSeverity::ALL))))
    }
}

/// A detection rule's name: letters, digits and `_`.
struct RuleDe(String);

impl<'de> Deserialize<'de> for RuleDe {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() || text.len() > 64 || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(de::Error::custom(format!("invalid rule name {text:?}: use letters, digits and '_'")));
        }
        Ok(RuleDe(text))
    }
}

struct TargetDe(NotifyTarget);

impl<'de> Deserialize<'de> for TargetDe {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "sysops" => Ok(TargetDe(NotifyTarget::Sysops)),
            "user" => Ok(TargetDe(NotifyTarget::User)),
            a if plausible_address(a) => Ok(TargetDe(NotifyTarget::Address(a.to_owned()))),
            _ => Err(de::Error::custom(format!("unknown notify target {text:?}: use \"sysops\", \"user\" or an email address"))),
        }
    }
}

/// `local@domain`, no spaces or controls, at most 254 bytes (the mail
/// front end checks it fully when it sends).
fn plausible_address(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else { return false };
    a.len() <= 254 && !local.is_empty() && !domain.is_empty() && !domain.contains('@') && domain.contains('.') && !a.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | '"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn check(text: &str) -> Result<Vec<Playbook>, Vec<String>> {
        let root = hjson::parse(text).expect("hjson");
        load(root.get("playbooks"), "portcullis.hjson", Path::new("/nonexistent"), &hooks(&["ops"])).map(|l| l.playbooks)
    }

    #[test]
    fn the_built_in_playbooks_load() {
        let loaded = load(None, "portcullis.hjson", Path::new("/nonexistent"), &BTreeSet::new()).unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!(loaded.source, BUILT_IN);
        let names: Vec<&str> = loaded.playbooks.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["lock-brute-force-account", "block-attacking-address", "account-takeover", "cloned-authenticator", "risky-login", "escalate-critical"]);
        assert!(loaded.playbooks.iter().all(|p| !p.dry_run));
        let first = &loaded.playbooks[0];
        assert_eq!(first.when.incident_types, [IncidentType::BruteForceAccount]);
        assert_eq!(first.actions, [Action::Lock { duration: Duration::from_secs(900) }]);
        assert_eq!(loaded.playbooks[1].actions, [Action::Block { duration: None, ipv4_bits: None, ipv6_bits: None }]);
        assert_eq!(loaded.playbooks[2].actions, [Action::Lock { duration: Duration::from_secs(86_400) }, Action::RevokeSessions, Action::ForcePasswordReset, Action::Notify(vec![NotifyTarget::User])]);
        assert_eq!(loaded.playbooks[4].when.incident_types, [IncidentType::RiskyLogin]);
        assert_eq!(loaded.playbooks[4].actions, [Action::Notify(vec![NotifyTarget::User])]);
        let last = &loaded.playbooks[5];
        assert_eq!(last.when.severity_at_least, Some(IncidentSeverity::Critical));
        assert_eq!(last.actions, [Action::Escalate(Escalation { after: Duration::from_secs(3600), raise_severity: false, notify: vec![NotifyTarget::Sysops], webhook: None })]);
    }

    #[test]
    fn every_form_of_every_action() {
        let text = r#"playbooks: [
  {
    name: all.forms
    when: {
      incident_type: ["brute_force_account", "password_spraying"]
      severity_at_least: medium
      rule: dictionary_username
    }
    dry_run: true
    actions: [
      { lock: "30m" }
      { block: true }
      {
        block: { for: "2h", ipv4_bits: 24, ipv6_bits: 48 }
      }
      { revoke_sessions: true }
      { force_password_reset: true }
      { require_level: 2 }
      { notify: "sysops" }
      { notify: ["user", "soc@example.org"] }
      { webhook: "ops" }
      {
        escalate: { after: "1h", notify: "sysops", webhook: "ops" }
      }
    ]
  }
]
"#;
        let p = check(text).unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!(p.len(), 1);
        let p = &p[0];
        assert_eq!(p.name, "all.forms");
        assert!(p.dry_run);
        assert_eq!(p.when, When { incident_types: vec![IncidentType::BruteForceAccount, IncidentType::PasswordSpraying], severity_at_least: Some(IncidentSeverity::Medium), rules: vec!["dictionary_username".into()] });
        assert_eq!(
            p.actions,
            [
                Action::Lock { duration: Duration::from_secs(1800) },
                Action::Block { duration: None, ipv4_bits: None, ipv6_bits: None },
                Action::Block { duration: Some(Duration::from_secs(7200)), ipv4_bits: Some(24), ipv6_bits: Some(48) },
                Action::RevokeSessions,
                Action::ForcePasswordReset,
                Action::RequireLevel(2),
                Action::Notify(vec![NotifyTarget::Sysops]),
                Action::Notify(vec![NotifyTarget::User, NotifyTarget::Address("soc@example.org".into())]),
                Action::Webhook("ops".into()),
                Action::Escalate(Escalation { after: Duration::from_secs(3600), raise_severity: true, notify: vec![NotifyTarget::Sysops], webhook: Some("ops".into()) }),
            ]
        );
        assert_eq!(check("playbooks: []\n").unwrap(), []);
    }

    /// A playbook around `action` (one line of an actions array, at 6:7).
    fn with_action(action: &str) -> String {
        format!("playbooks: [\n  {{\n    name: p\n    when: {{ incident_type: \"brute_force_account\" }}\n    actions: [\n      {action}\n    ]\n  }}\n]\n")
    }

    #[test]
    fn problems_name_file_line_column_and_key() {
        let cases: &[(&str, &str)] = &[
            (&with_action("{ lok: \"15m\" }"),
             "portcullis.hjson:6:9: playbooks[0].actions[0].lok: unknown action \"lok\", expected one of \"lock\", \"block\", \"revoke_sessions\", \"force_password_reset\", \"require_level\", \"notify\", \"webhook\", \"escalate\""),
            (&with_action("{ lock: \"15 minutes\" }"),
             "portcullis.hjson:6:15: playbooks[0].actions[0].lock: invalid duration \"15 minutes\": expected a number and a unit, like \"30s\", \"15m\", \"2h\" or \"7d\""),
            (&with_action("{ lock: \"2d\" }"),
             "portcullis.hjson:6:9: playbooks[0].actions[0].lock: a playbook lock of 2d is longer than the maximum of 24h (the owner must never be locked out for good; a sysop can still lock longer with `user lock`)"),
            (&with_action("{ lock: \"0s\" }"),
             "portcullis.hjson:6:9: playbooks[0].actions[0].lock: must be longer than 0s"),
            (&with_action("{ webhook: \"pager\" }"),
             "portcullis.hjson:6:9: playbooks[0].actions[0].webhook: no webhook named \"pager\" under webhooks: (defined: \"ops\")"),
            (&with_action("{\n        block: { ipv4_bits: 33 }\n      }"),
             "portcullis.hjson:7:18: playbooks[0].actions[0].block.ipv4_bits: must be between 8 and 32 (32: the address alone)"),
            (&with_action("{\n        block: { ipv6_bits: 96 }\n      }"),
             "portcullis.hjson:7:18: playbooks[0].actions[0].block.ipv6_bits: must be between 16 and 64 (a longer prefix would let one host escape its block)"),
            (&with_action("{\n        block: { for: \"1y\" }\n      }"),
             "portcullis.hjson:7:23: playbooks[0].actions[0].block.for: invalid duration \"1y\": unknown unit \"y\" (use ms, s, m, h, d or w)"),
            (&with_action("{\n        block: { until: \"1h\" }\n      }"),
             "portcullis.hjson:7:18: playbooks[0].actions[0].block.until: unknown field \"until\", expected one of \"for\", \"ipv4_bits\", \"ipv6_bits\""),
            (&with_action("{ block: \"yes\" }"),
             "portcullis.hjson:6:16: playbooks[0].actions[0].block: expected true or an object like { for: \"2h\", ipv4_bits: 24 }"),
            (&with_action("{ revoke_sessions: false }"),
             "portcullis.hjson:6:26: playbooks[0].actions[0].revoke_sessions: expected true (leave the action out to not take it)"),
            (&with_action("{ require_level: 1 }"),
             "portcullis.hjson:6:9: playbooks[0].actions[0].require_level: must be 2 (a one-time code) or 3 (a hardware key)"),
            (&with_action("{ notify: \"everyone\" }"),
             "portcullis.hjson:6:17: playbooks[0].actions[0].notify: unknown notify target \"everyone\": use \"sysops\", \"user\" or an email address"),
            (&with_action("{ notify: [\"sysops\", \"nobody\"] }"),
             "portcullis.hjson:6:28: playbooks[0].actions[0].notify[1]: unknown notify target \"nobody\": use \"sysops\", \"user\" or an email address"),
            (&with_action("{\n        escalate: { after: \"1h\", raise_severity: false }\n      }"),
             "portcullis.hjson:7:9: playbooks[0].actions[0].escalate: does nothing: set raise_severity, notify or webhook"),
            (&with_action("{\n        escalate: { notify: \"sysops\" }\n      }"),
             "portcullis.hjson:7:19: playbooks[0].actions[0].escalate: missing field \"after\""),
            (&with_action("{\n        escalate: { after: \"1h\", webhook: \"pager\" }\n      }"),
             "portcullis.hjson:7:34: playbooks[0].actions[0].escalate.webhook: no webhook named \"pager\" under webhooks: (defined: \"ops\")"),
            (&with_action("{ lock: \"15m\", notify: \"sysops\" }"),
             "portcullis.hjson:6:7: playbooks[0].actions[0]: an action is an object with one key, like { lock: \"15m\" } or { notify: sysops }; this one has 2 (lock, notify)"),
            (&with_action("\"lock\""),
             "portcullis.hjson:6:7: playbooks[0].actions[0]: an action is an object with one key, like { lock: \"15m\" } or { notify: sysops }"),
            ("playbooks: [\n  {\n    name: p\n    when: { incident_type: \"brute_force\" }\n    actions: [\n      { revoke_sessions: true }\n    ]\n  }\n]\n",
             "portcullis.hjson:4:28: playbooks[0].when.incident_type: unknown incident type \"brute_force\", expected one of \"brute_force_account\", \"brute_force_ip\", \"credential_stuffing\", \"password_spraying\", \"account_takeover\", \"username_enumeration\", \"injection_attempt\", \"cloned_authenticator\", \"risky_login\", \"sysop_factor_level\", \"manual\""),
            ("playbooks: [\n  {\n    name: p\n    when: {\n      incident_type: [\"manual\", \"bruteforce\"]\n    }\n    actions: [\n      { revoke_sessions: true }\n    ]\n  }\n]\n",
             "portcullis.hjson:5:33: playbooks[0].when.incident_type[1]: unknown incident type \"bruteforce\", expected one of \"brute_force_account\", \"brute_force_ip\", \"credential_stuffing\", \"password_spraying\", \"account_takeover\", \"username_enumeration\", \"injection_attempt\", \"cloned_authenticator\", \"risky_login\", \"sysop_factor_level\", \"manual\""),
            ("playbooks: [\n  {\n    name: p\n    when: { severity_at_least: \"severe\" }\n    actions: [\n      { revoke_sessions: true }\n    ]\n  }\n]\n",
             "portcullis.hjson:4:32: playbooks[0].when.severity_at_least: unknown severity \"severe\", expected one of \"low\", \"medium\", \"high\", \"critical\""),
            ("playbooks: [\n  {\n    name: p\n    when: { incident_type: \"manual\" }\n    actions: []\n  }\n]\n",
             "portcullis.hjson:5:5: playbooks[0].actions: a playbook needs at least one action"),
            ("playbooks: [\n  {\n    name: p\n    when: {}\n    actions: [\n      { revoke_sessions: true }\n    ]\n  }\n]\n",
             "portcullis.hjson:4:5: playbooks[0].when: needs incident_type, severity_at_least or rule (a playbook for every incident says severity_at_least: low)"),
            ("playbooks: [\n  {\n    name: \"a b\"\n    when: { incident_type: \"manual\" }\n    actions: [\n      { revoke_sessions: true }\n    ]\n  }\n]\n",
             "portcullis.hjson:3:5: playbooks[0].name: invalid playbook name \"a b\": use 1-64 letters, digits, '_', '-' or '.'"),
            ("playbooks: [\n  {\n    name: p\n    when: { incident_type: \"manual\" }\n    actions: [\n      { revoke_sessions: true }\n    ]\n    dryrun: true\n  }\n]\n",
             "portcullis.hjson:8:5: playbooks[0].dryrun: unknown field \"dryrun\", expected one of \"name\", \"when\", \"dry_run\", \"actions\""),
            ("playbooks: [\n  {\n    name: p\n    when: { incident_type: \"manual\" }\n  }\n]\n",
             "portcullis.hjson:2:3: playbooks[0]: missing field \"actions\""),
            ("playbooks: 7\n",
             "portcullis.hjson:1:12: playbooks: expected an array of playbooks or the name of a playbook file"),
        ];
        for (text, want) in cases {
            match check(text) {
                Ok(p) => panic!("{text}\nshould fail, gave {p:#?}"),
                Err(errors) => assert_eq!(errors.join("\n"), *want, "\n{text}"),
            }
        }
    }

    #[test]
    fn every_problem_is_listed_and_names_are_unique() {
        let text = "playbooks: [\n  {\n    name: twice\n    when: { incident_type: \"manual\" }\n    actions: [\n      { lock: \"9d\" }\n      { require_level: 5 }\n    ]\n  }\n  {\n    name: Twice\n    when: { incident_type: \"manual\" }\n    actions: [\n      { revoke_sessions: true }\n    ]\n  }\n]\n";
        let errors = check(text).unwrap_err();
        assert_eq!(
            errors,
            [
                "portcullis.hjson:6:9: playbooks[0].actions[0].lock: a playbook lock of 9d is longer than the maximum of 24h (the owner must never be locked out for good; a sysop can still lock longer with `user lock`)",
                "portcullis.hjson:7:9: playbooks[0].actions[1].require_level: must be 2 (a one-time code) or 3 (a hardware key)",
                "portcullis.hjson:11:5: playbooks[1].name: the playbook name \"Twice\" is used twice",
            ]
        );
    }

    #[test]
    fn a_playbook_file_reports_its_own_positions() {
        let dir = std::env::temp_dir().join(format!("portcullis-playbooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("responses.hjson"), "# responses\nplaybooks: [\n  {\n    name: p\n    when: { incident_type: \"manual\" }\n    actions: [\n      { webhook: \"nope\" }\n    ]\n  }\n]\n").unwrap();
        std::fs::write(dir.join("good.hjson"), "playbooks: [\n  {\n    name: p\n    when: { incident_type: \"manual\" }\n    actions: [\n      { webhook: \"ops\" }\n    ]\n  }\n]\n").unwrap();
        std::fs::write(dir.join("odd.hjson"), "playbook: []\n").unwrap();
        let root = |t: &str| hjson::parse(t).unwrap();
        let run = |t: &str| load(root(t).get("playbooks"), "portcullis.hjson", &dir, &hooks(&["ops"]));
        let file = dir.join("responses.hjson").display().to_string();
        assert_eq!(run("playbooks: responses.hjson\n").unwrap_err(), [format!("{file}:7:9: playbooks[0].actions[0].webhook: no webhook named \"nope\" under webhooks: (defined: \"ops\")")]);
        let good = run("playbooks: good.hjson\n").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(good.source, dir.join("good.hjson").display().to_string());
        assert_eq!(good.playbooks[0].actions, [Action::Webhook("ops".into())]);
        let odd = dir.join("odd.hjson").display().to_string();
        assert_eq!(run("playbooks: odd.hjson\n").unwrap_err(), [format!("{odd}:1:1: playbook: unknown field \"playbook\", expected \"playbooks\"")]);
        let missing = run("playbooks: missing.hjson\n").unwrap_err();
        assert_eq!(missing.len(), 1);
        assert!(missing[0].starts_with(&format!("portcullis.hjson:1:12: playbooks: cannot read playbook file {}: ", dir.join("missing.hjson").display())), "{missing:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn conditions_match_type_severity_and_rule() {
        use IncidentSeverity::*;
        use IncidentType::*;
        let details = serde_json::json!({ "rule": "dictionary_username" });
        let none = serde_json::json!({});
        let w = |types: &[IncidentType], sev: Option<IncidentSeverity>, rules: &[&str]| When { incident_types: types.to_vec(), severity_at_least: sev, rules: rules.iter().map(|r| r.to_string()).collect() };
        let cases = [
            (w(&[BruteForceAccount], None, &[]), BruteForceAccount, Low, &none, true),
            (w(&[BruteForceAccount], None, &[]), BruteForceIp, Critical, &none, false),
            (w(&[], Some(High), &[]), Manual, High, &none, true),
            (w(&[], Some(High), &[]), Manual, Medium, &none, false),
            (w(&[], Some(Low), &[]), InjectionAttempt, Low, &none, true),
            (w(&[BruteForceIp, UsernameEnumeration], Some(Medium), &[]), UsernameEnumeration, Critical, &none, true),
            (w(&[BruteForceIp, UsernameEnumeration], Some(Medium), &[]), UsernameEnumeration, Low, &none, false),
            (w(&[], None, &["dictionary_username"]), UsernameEnumeration, Low, &details, true),
            (w(&[], None, &["dictionary_username"]), UsernameEnumeration, Low, &none, false),
            (w(&[BruteForceIp], None, &["dictionary_username"]), UsernameEnumeration, Low, &details, false),
        ];
        for (when, t, s, d, want) in cases {
            assert_eq!(when.matches(t, s, d), want, "{when:?} {t} {s} {d}");
        }
    }

    #[test]
    fn durations_are_shown_as_written() {
        for (secs, want) in [(900, "15m"), (86_400 * 2, "2d"), (3600, "1h"), (90, "90s")] {
            assert_eq!(show_duration(Duration::from_secs(secs)), want);
        }
    }
}
