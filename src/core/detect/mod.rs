//! Detection: a pure state machine (`Detector`) that sees the security
//! events one by one, in id order, with the time passed in, and answers
//! with `Finding`s for the incident engine. The same machine runs live
//! beside the event writer (`feed`) and over history (`scan`).
//!
//! Rules (`rules.rs`; thresholds and windows in `detection: { ... }`):
//! brute force on an account (also from many addresses), from an address,
//! slow brute force from an address or a network (tiers of days),
//! credential stuffing from one address and spread over many, password
//! spraying (by keyed tags of the attempts, `spray.rs`), dictionary
//! usernames (`dictionary.rs`), username enumeration, injection-looking
//! input (`injection.rs`) and account takeover.
//!
//! **Firing.** A rule fires once per (rule, subject) when its count reaches
//! the threshold within the window, then again only each time the count
//! doubles (5, 10, 20, ... failures), so an incident's count rises while
//! the findings stay few (at most log2 of the events); after a window
//! without events for the subject it may fire afresh.
//!
//! **Memory bound.** State lives in three maps — per address
//! (`AddressKey`), per network (/24, /48) and per account — plus one per
//! password tag and a fixed gate-wide structure. Each map holds at most
//! `detection.max_tracked` keys (default 50,000): entries untouched for
//! the map's longest window are swept every minute, and a new key at a
//! full map first drops the stale ones, then the oldest eighth (counted
//! in `evicted`); the account map holds at least every account of the
//! gate (`with_accounts`: accounts cannot be made up). Within a key every
//! sliding window holds at most 16 ×
//! its threshold attempts (at most 1,024), is made on its first attempt
//! and allocates only for what it holds; day-long tiers keep at most 24
//! buckets each, only those that hold events; the distinct names and
//! addresses are counted over those attempts only. A botnet's address
//! (one failure) costs about 1 KiB. So memory is O(max_tracked × (the
//! rules' caps)), whatever the
//! traffic: a botnet of a million addresses fills the address map, whose
//! oldest entries then give way, while its networks keep counting in the
//! smaller network map (slow tiers and enumeration aggregate per network).

pub mod dictionary;
pub mod feed;
pub mod injection;
mod rules;
pub mod scan;
pub mod spray;
mod windows;

use crate::config::detection::DetectionSettings;
use crate::core::admission::AddressKey;
use crate::model::{escape_control, Event, EventType, Finding, IncidentSeverity, IncidentType, Millis, StoredEvent, Subject};
use crate::store::events::DetectRow;
use spray::PasswordTag;
use std::net::IpAddr;
use windows::BoundedMap;

/// What the detector needs of one event.
#[derive(Clone, Debug)]
pub struct DetectEvent {
    pub id: i64,
    pub at: Millis,
    pub kind: Kind,
    pub user_id: Option<i64>,
    /// As attempted or recorded (attacker-supplied for failures).
    pub username: Option<Name>,
    pub ip: Option<IpAddr>,
    pub session_id: Option<i64>,
    /// The keyed hash of the attempted password (failed password attempts
    /// seen live only; never stored).
    pub tag: Option<PasswordTag>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A failed first factor or code that counts against an address and an
    /// account (not a refusal of a held-off address, a busy server, a
    /// correct password for a locked account, an unmet factor).
    Failure { unknown_user: bool },
    /// A login that passed every required factor.
    Success,
    /// The first login of an account from this client.
    NewDevice,
    /// A password, email, 2FA or SSH key change of the account, not made
    /// by the sysop ("password", "email", "2fa", "ssh_key").
    Change(&'static str),
    /// A `suspicious_input` event of kind `injection` (boxed: rare, and
    /// the other kinds fit in a word).
    Injection(Box<Injection>),
}

/// What an injection-looking input was.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    pub source: String,
    pub categories: Vec<String>,
    pub text: String,
}

impl Kind {
    pub fn injection(source: impl Into<String>, categories: Vec<String>, text: impl Into<String>) -> Kind {
        Kind::Injection(Box::new(Injection { source: source.into(), categories, text: text.into() }))
    }
}

/// A username as the detector keeps it: in place up to `Name::INLINE`
/// bytes (nearly every name: the scan over history replays millions of
/// events, and a heap string each, made on the reading thread and freed on
/// a detector's, was a sixth of the reading), on the heap beyond.
#[derive(Clone, PartialEq, Eq)]
pub struct Name(NameRepr);

#[derive(Clone, PartialEq, Eq)]
enum NameRepr {
    Inline(u8, [u8; Name::INLINE]),
    Heap(Box<str>),
}

impl Name {
    pub const INLINE: usize = 22;

    pub fn new(s: &str) -> Name {
        if s.len() <= Name::INLINE {
            let mut b = [0u8; Name::INLINE];
            b[..s.len()].copy_from_slice(s.as_bytes());
            Name(NameRepr::Inline(s.len() as u8, b))
        } else {
            Name(NameRepr::Heap(s.into()))
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Made from a `str` cut at its end: always UTF-8.
            NameRepr::Inline(n, b) => std::str::from_utf8(&b[..usize::from(*n)]).unwrap_or_default(),
            NameRepr::Heap(s) => s,
        }
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name::new(s)
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name::new(&s)
    }
}

/// The `login_failed` reasons that are not an attempt at a credential.
const NOT_ATTEMPTS: &[&str] = &["address_penalized", "server_busy", "event_log_unavailable", "login_grace_time_exceeded", "locked", "second_factor_not_enrolled", "hardware_key_required"];

/// The event types the detector reads (the store filters on them).
pub const EVENT_TYPES: &[EventType] = &[
    EventType::LoginFailed,
    EventType::LoginSuccess,
    EventType::OtpFailed,
    EventType::OtpReplay,
    EventType::DeviceNew,
    EventType::PasswordChanged,
    EventType::UserUpdated,
    EventType::MfaEnabled,
    EventType::MfaDisabled,
    EventType::SshKeyAdded,
    EventType::WebauthnRegistered,
    EventType::WebauthnRemoved,
    EventType::SuspiciousInput,
];

/// The few `details` fields the rules read, borrowed where the JSON
/// allows. Lenient as `Value::get(..).as_str()` is: a field of another
/// JSON type reads as missing, and it never makes the others unreadable.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Fields<'a> {
    #[serde(borrow)]
    reason: Text<'a>,
    #[serde(borrow)]
    stage: Text<'a>,
    #[serde(borrow)]
    actor: Text<'a>,
    #[serde(borrow)]
    field: Text<'a>,
    #[serde(borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    source: Text<'a>,
    #[serde(borrow)]
    text: Text<'a>,
    #[serde(borrow)]
    categories: Texts<'a>,
    /// Present, with any value (`null` too, as `Value::get` sees it).
    after_enrollment: Present,
}

/// Whether a field is there at all (`#[serde(default)]` makes a missing
/// one `false`).
#[derive(Default)]
struct Present(bool);

impl<'de> serde::Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Present(true))
    }
}

/// A JSON string (borrowed unless it holds escapes), or `None` for any
/// other JSON value.
#[derive(Default)]
struct Text<'a>(Option<std::borrow::Cow<'a, str>>);

impl<'a> Text<'a> {
    fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// The strings of a JSON array (other elements skipped); empty for any
/// other JSON value.
#[derive(Default)]
struct Texts<'a>(Vec<Text<'a>>);

/// What `Text` and `Texts` take from any JSON value: a string, an array
/// (its elements read as `Text`), or nothing (numbers, booleans, null and
/// objects are skipped).
enum Shape<'a> {
    Str(std::borrow::Cow<'a, str>),
    Seq(Vec<Text<'a>>),
    Other,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Shape<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Shape<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Shape<'de>, E> {
                Ok(Shape::Str(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Shape<'de>, E> {
                Ok(Shape::Str(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape<'de>, E> {
                Ok(Shape::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape<'de>, E> {
                Ok(Shape::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shape<'de>, E> {
                Ok(Shape::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape<'de>, E> {
                Ok(Shape::Other)
            }
            fn visit_unit<E>(self) -> Result<Shape<'de>, E> {
                Ok(Shape::Other)
            }
            fn visit_none<E>(self) -> Result<Shape<'de>, E> {
                Ok(Shape::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Shape<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = a.next_element::<Text<'de>>()? {
                    out.push(t);
                }
                Ok(Shape::Seq(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Shape<'de>, A::Error> {
                while a.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Shape::Other)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Shape::deserialize(d)? {
            Shape::Str(s) => Text(Some(s)),
            _ => Text(None),
        })
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Texts<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Shape::deserialize(d)? {
            Shape::Seq(v) => Texts(v),
            _ => Texts::default(),
        })
    }
}

/// Whether the rules need the details of an event of this type at all
/// (a success or a new device is read from its columns alone).
fn needs_details(t: EventType) -> bool {
    !matches!(t, EventType::LoginSuccess | EventType::DeviceNew)
}

fn kind_of(t: EventType, d: &Fields<'_>, user_id: Option<i64>) -> Option<Kind> {
    let by_sysop = || d.actor.get().is_some_and(|a| a.starts_with("cli:"));
    match t {
        EventType::LoginFailed => {
            let reason = d.reason.get().unwrap_or("");
            if NOT_ATTEMPTS.contains(&reason) {
                return None;
            }
            Some(Kind::Failure { unknown_user: reason == "unknown_user" && user_id.is_none() })
        }
        EventType::OtpFailed if d.stage.get() != Some("enrollment") && user_id.is_some() => Some(Kind::Failure { unknown_user: false }),
        EventType::OtpReplay if !d.after_enrollment.0 && user_id.is_some() => Some(Kind::Failure { unknown_user: false }),
        EventType::LoginSuccess if user_id.is_some() => Some(Kind::Success),
        EventType::DeviceNew if user_id.is_some() => Some(Kind::NewDevice),
        EventType::PasswordChanged if !by_sysop() => Some(Kind::Change("password")),
        EventType::UserUpdated if d.field.get() == Some("email") && !by_sysop() => Some(Kind::Change("email")),
        EventType::MfaEnabled | EventType::MfaDisabled | EventType::WebauthnRegistered | EventType::WebauthnRemoved if !by_sysop() => Some(Kind::Change("2fa")),
        EventType::SshKeyAdded if !by_sysop() => Some(Kind::Change("ssh_key")),
        EventType::SuspiciousInput if d.kind.get() == Some("injection") => Some(Kind::injection(
            d.source.get().unwrap_or("input"),
            d.categories.0.iter().filter_map(|c| c.get().map(str::to_owned)).collect(),
            d.text.get().unwrap_or(""),
        )),
        _ => None,
    }
}

/// The fields of a `details` object (a JSON value the rules cannot read,
/// as an object without them).
fn fields_of_value(t: EventType, details: &serde_json::Value) -> Fields<'_> {
    if !needs_details(t) || !details.is_object() {
        return Fields::default();
    }
    serde::Deserialize::deserialize(details).unwrap_or_default()
}

/// The fields of a stored `details` text. Only an object has fields (a
/// struct would also take an array, by position); a text the struct
/// refuses (a repeated key, which the store never writes) is read through
/// `Value`, which keeps the last of each key, as the rules read it before.
fn fields_of_text<'a>(t: EventType, details: &'a str, parsed: &'a mut Option<serde_json::Value>) -> Fields<'a> {
    if !needs_details(t) || !details.trim_start().starts_with('{') {
        return Fields::default();
    }
    match serde_json::from_str(details) {
        Ok(f) => f,
        Err(_) => {
            let v = parsed.insert(serde_json::from_str(details).unwrap_or(serde_json::Value::Null));
            fields_of_value(t, v)
        }
    }
}

impl DetectEvent {
    /// The detector's view of an event (with its id), or `None` for an
    /// event no rule looks at.
    pub fn from_event(id: i64, e: &Event) -> Option<DetectEvent> {
        let kind = kind_of(e.event_type, &fields_of_value(e.event_type, &e.details), e.user_id)?;
        Some(DetectEvent {
            id,
            at: e.created_at,
            kind,
            user_id: e.user_id,
            username: e.username.as_deref().map(Name::new),
            ip: e.ip.as_deref().and_then(|s| s.parse().ok()),
            session_id: e.session_id,
            tag: None,
        })
    }

    /// The same from an event read back for display.
    pub fn from_stored(e: &StoredEvent) -> Option<DetectEvent> {
        let t = EventType::parse(&e.event_type)?;
        let kind = kind_of(t, &fields_of_value(t, &e.details), e.user_id)?;
        Some(DetectEvent {
            id: e.id,
            at: Millis::parse_rfc3339(&e.created_at)?,
            kind,
            user_id: e.user_id,
            username: e.username.as_deref().map(Name::new),
            ip: e.ip.as_deref().and_then(|s| s.parse().ok()),
            session_id: e.session_id,
            tag: None,
        })
    }

    /// The same from a row read for the rules (`Store::detect_rows_by_id`):
    /// the details text is parsed for the few fields the rules read, and
    /// only for the types whose rules read them.
    pub fn from_row(r: &DetectRow<'_>) -> Option<DetectEvent> {
        let mut parsed = None;
        let fields = fields_of_text(r.event_type, r.details, &mut parsed);
        let kind = kind_of(r.event_type, &fields, r.user_id)?;
        Some(DetectEvent {
            id: r.id,
            at: r.created_at,
            kind,
            user_id: r.user_id,
            username: r.username.map(Name::new),
            ip: r.ip.and_then(|s| s.parse().ok()),
            session_id: r.session_id,
            tag: None,
        })
    }

    /// The username, or "" for an event without one.
    pub fn name(&self) -> &str {
        self.username.as_deref().unwrap_or_default()
    }

    pub fn with_tag(mut self, tag: Option<PasswordTag>) -> DetectEvent {
        self.tag = tag;
        self
    }
}

/// A network as the slow tiers and enumeration count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum NetKey {
    V4(u32, u8),
    V6(u128, u8),
}

impl NetKey {
    /// Also the key of the risk score's incident lookups (`core::risk`),
    /// so they find the network incidents the rules open.
    pub(crate) fn of(ip: IpAddr, v4: u8, v6: u8) -> NetKey {
        match ip {
            IpAddr::V4(a) => NetKey::V4(mask32(u32::from(a), v4), v4),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => NetKey::V4(mask32(u32::from(m), v4), v4),
                None => NetKey::V6(mask128(u128::from(a), v6), v6),
            },
        }
    }
}

fn mask32(v: u32, bits: u8) -> u32 {
    if bits == 0 { 0 } else { v & (u32::MAX << (32 - u32::from(bits.min(32)))) }
}

fn mask128(v: u128, bits: u8) -> u128 {
    if bits == 0 { 0 } else { v & (u128::MAX << (128 - u32::from(bits.min(128)))) }
}

impl std::fmt::Display for NetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetKey::V4(v, p) => write!(f, "{}/{p}", std::net::Ipv4Addr::from(*v)),
            NetKey::V6(v, p) => write!(f, "{}/{p}", std::net::Ipv6Addr::from(*v)),
        }
    }
}

/// What the detector holds, for metrics and the memory bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectorStats {
    pub events: u64,
    pub findings: u64,
    pub addresses: usize,
    pub networks: usize,
    pub accounts: usize,
    pub tags: usize,
    /// Keys dropped to keep the maps under `max_tracked`.
    pub evicted: u64,
}

/// The detection state machine. Feed it every event in id order with
/// `observe`; it never does I/O and never reads the clock.
pub struct Detector {
    pub(crate) s: DetectionSettings,
    pub(crate) ipv6_prefix: u8,
    pub(crate) dictionary: dictionary::Dictionary,
    pub(crate) addresses: BoundedMap<AddressKey, rules::AddressState>,
    pub(crate) networks: BoundedMap<NetKey, rules::NetworkState>,
    pub(crate) accounts: BoundedMap<i64, rules::AccountState>,
    pub(crate) sprays: BoundedMap<PasswordTag, rules::SprayState>,
    pub(crate) gate: rules::GateState,
    events: u64,
    findings: u64,
    last_sweep: Millis,
    /// This detector's part of the keys when several share the events
    /// (`with_shard`): (index, count); (0, 1) owns every key.
    shard: (u64, u64),
}

const SWEEP_EVERY_MS: i64 = 60_000;

impl Detector {
    /// `ipv6_prefix` groups IPv6 addresses as admission and blocks do
    /// (`ssh.penalties.ipv6_prefix`).
    pub fn new(settings: &DetectionSettings, ipv6_prefix: u8) -> Detector {
        let s = settings.clone();
        let ms = |d: std::time::Duration| d.as_millis().min(i64::MAX as u128) as i64;
        let longest = ms(s.longest_window()).max(1);
        let address_horizon = [
            s.brute_force_ip.window,
            s.credential_stuffing.window,
            s.dictionary_usernames.window,
            s.username_enumeration.window,
            s.injection.window,
        ]
        .into_iter()
        .chain(s.slow_brute_force.tiers.iter().map(|t| t.window))
        .map(ms)
        .max()
        .unwrap_or(longest);
        let network_horizon = s.slow_brute_force.tiers.iter().map(|t| ms(t.window)).chain([ms(s.username_enumeration.window)]).max().unwrap_or(longest);
        let cap = s.max_tracked;
        Detector {
            dictionary: dictionary::Dictionary::new(&s.dictionary_usernames.usernames),
            addresses: BoundedMap::new(cap, address_horizon),
            networks: BoundedMap::new(cap, network_horizon),
            // Accounts keep the addresses they logged in from for as long
            // as the longest window (account takeover's "never seen").
            accounts: BoundedMap::new(cap, longest),
            sprays: BoundedMap::new(cap, ms(s.password_spraying.window)),
            gate: rules::GateState::default(),
            ipv6_prefix,
            s,
            events: 0,
            findings: 0,
            last_sweep: Millis(i64::MIN),
            shard: (0, 1),
        }
    }

    /// Lets the account map hold `accounts` keys when that is more than
    /// `max_tracked`. Account keys are accounts that exist (a failure for a
    /// name that is not an account has no user id), so an attacker cannot
    /// multiply them; a gate with more accounts than `max_tracked` would
    /// otherwise drop each account's state before its next event (losing
    /// the addresses account takeover compares with, and paying for a new
    /// state on every event).
    pub fn with_accounts(mut self, accounts: u64) -> Detector {
        self.accounts.raise_cap(usize::try_from(accounts).unwrap_or(usize::MAX).saturating_add(accounts as usize / 8));
        self
    }

    /// Makes this detector one of `count` that each see every event and
    /// keep the state of their own part of the keys (addresses, networks
    /// and accounts by a hash; password tags and the gate-wide state with
    /// shard 0): the scan over history runs them on separate threads.
    /// Every rule reads the state of one key (or the gate's) only, so the
    /// shards together find what one detector finds, event by event (in
    /// another order within one event), as long as no map is full: each
    /// shard holds up to `max_tracked` keys of its own part, so together
    /// they drop fewer keys than one detector would.
    pub fn with_shard(mut self, index: u64, count: u64) -> Detector {
        let count = count.max(1);
        self.shard = (index % count, count);
        self
    }

    /// Whether this detector keeps the state of the key hashed to `h`.
    pub(crate) fn owns(&self, h: u64) -> bool {
        self.shard.1 <= 1 || h % self.shard.1 == self.shard.0
    }

    /// `owns` for the keys that have no hash of their own (the gate's
    /// state, password tags): shard 0.
    pub(crate) fn owns_gate(&self) -> bool {
        self.shard.0 == 0
    }

    /// Looks at one event; returns what it made fire (usually nothing).
    /// `now` is the wall clock (stale state is swept against it), the
    /// windows run on the events' own times.
    pub fn observe(&mut self, ev: &DetectEvent, now: Millis) -> Vec<Finding> {
        self.events += 1;
        if now.0 >= self.last_sweep.0.saturating_add(SWEEP_EVERY_MS) {
            self.sweep(now);
        }
        let mut out = Vec::new();
        self.apply(ev, &mut out);
        self.findings += out.len() as u64;
        out
    }

    /// `observe` for an event as the writer has it.
    pub fn observe_event(&mut self, id: i64, e: &Event, now: Millis) -> Vec<Finding> {
        match DetectEvent::from_event(id, e) {
            Some(ev) => self.observe(&ev, now),
            None => {
                self.events += 1;
                Vec::new()
            }
        }
    }

    /// Drops the state untouched for longer than its window.
    pub fn sweep(&mut self, now: Millis) {
        self.last_sweep = now;
        self.addresses.sweep(now);
        self.networks.sweep(now);
        self.accounts.sweep(now);
        self.sprays.sweep(now);
    }

    pub fn stats(&self) -> DetectorStats {
        DetectorStats {
            events: self.events,
            findings: self.findings,
            addresses: self.addresses.len(),
            networks: self.networks.len(),
            accounts: self.accounts.len(),
            tags: self.sprays.len(),
            evicted: self.addresses.evicted + self.networks.evicted + self.accounts.evicted + self.sprays.evicted,
        }
    }

    pub(crate) fn address_key(&self, ip: IpAddr) -> AddressKey {
        AddressKey::with_prefix(ip, self.ipv6_prefix)
    }

    pub(crate) fn network_key(&self, ip: IpAddr) -> NetKey {
        NetKey::of(ip, self.s.ipv4_network, self.s.ipv6_network)
    }
}

/// A username as the rules compare it (lower-cased), and as titles show it
/// (escaped, cut to 64 characters).
pub(crate) fn shown(name: &str) -> String {
    escape_control(&name.chars().take(64).collect::<String>())
}

/// Builds a finding; `title` and `description` must already be escaped.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finding(incident_type: IncidentType, subject: Subject, severity: IncidentSeverity, title: String, description: String, event_ids: Vec<i64>, first_event_at: Millis, details: serde_json::Value) -> Finding {
    Finding { incident_type, subject, severity, title, description, event_ids, first_event_at, details }
}

#[cfg(test)]
mod tests;
