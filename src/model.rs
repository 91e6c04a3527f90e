//! Plain data shared by every layer: event kinds, timestamps, the secret
//! wrapper and the escaping of attacker-supplied text. No I/O here.

use std::fmt;

/// Milliseconds since the Unix epoch, UTC. Every timestamp in the store and
/// in `core` is one of these; `core` takes the time as an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub i64);

impl Millis {
    pub fn now() -> Millis {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Millis(d.as_millis() as i64)
    }
    pub fn plus(self, d: std::time::Duration) -> Millis {
        Millis(self.0.saturating_add(d.as_millis() as i64))
    }
    pub fn minus(self, d: std::time::Duration) -> Millis {
        Millis(self.0.saturating_sub(d.as_millis() as i64))
    }
    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-25T12:00:00.123Z`.
    pub fn rfc3339(self) -> String {
        let nanos = (self.0 as i128) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            ),
            Err(_) => format!("@{}ms", self.0),
        }
    }
    /// Parses RFC 3339 (any offset) back into milliseconds.
    pub fn parse_rfc3339(text: &str) -> Option<Millis> {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
        Some(Millis((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

/// A value that must never be printed: its `Debug` and `Display` show
/// `<secret>`. Reach the value only through `expose`, where it is used.
#[derive(Clone, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}
impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}
impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum!(
    /// What happened. The store's CHECK constraint lists the same names.
    EventType {
        LoginSuccess => "login_success",
        LoginFailed => "login_failed",
        OtpSuccess => "otp_success",
        OtpFailed => "otp_failed",
        OtpReplay => "otp_replay",
        BackupCodeUsed => "backup_code_used",
        MfaEnrollmentSent => "mfa_enrollment_sent",
        MfaEnabled => "mfa_enabled",
        MfaDisabled => "mfa_disabled",
        PasswordChanged => "password_changed",
        PasswordRejected => "password_rejected",
        AccountLocked => "account_locked",
        AccountUnlocked => "account_unlocked",
        IpBlocked => "ip_blocked",
        IpUnblocked => "ip_unblocked",
        DeviceNew => "device_new",
        DeviceTrusted => "device_trusted",
        DeviceUntrusted => "device_untrusted",
        DeviceRemoved => "device_removed",
        WebauthnRegistered => "webauthn_registered",
        WebauthnUsed => "webauthn_used",
        WebauthnRemoved => "webauthn_removed",
        WebauthnCounterRegression => "webauthn_counter_regression",
        SessionStarted => "session_started",
        SessionEnded => "session_ended",
        SessionRevoked => "session_revoked",
        IncidentCreated => "incident_created",
        IncidentResolved => "incident_resolved",
        PlaybookAction => "playbook_action",
        ScanCompleted => "scan_completed",
        SuspiciousInput => "suspicious_input",
        UserCreated => "user_created",
        UserUpdated => "user_updated",
        SshKeyAdded => "ssh_key_added",
        SshKeyRemoved => "ssh_key_removed",
        ConnectionRefused => "connection_refused",
        ConfigReloaded => "config_reloaded",
    }
);

string_enum!(
    Category {
        Authentication => "authentication",
        Authorization => "authorization",
        Device => "device",
        Suspicious => "suspicious",
        Admin => "admin",
        System => "system",
    }
);

string_enum!(
    /// Ordered from least to most severe.
    Severity {
        Info => "info",
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
);

impl Severity {
    pub fn rank(self) -> u8 {
        self as u8
    }
}

impl EventType {
    /// The category an event of this type belongs to.
    pub fn category(self) -> Category {
        use EventType::*;
        match self {
            LoginSuccess | LoginFailed | OtpSuccess | OtpFailed | OtpReplay | BackupCodeUsed
            | MfaEnrollmentSent | MfaEnabled | MfaDisabled | PasswordChanged
            | PasswordRejected | WebauthnRegistered | WebauthnUsed | WebauthnRemoved
            | SessionStarted | SessionEnded => Category::Authentication,
            AccountLocked | AccountUnlocked | IpBlocked | IpUnblocked | SessionRevoked
            | ConnectionRefused => Category::Authorization,
            DeviceNew | DeviceTrusted | DeviceUntrusted | DeviceRemoved => Category::Device,
            WebauthnCounterRegression | SuspiciousInput => Category::Suspicious,
            IncidentCreated | IncidentResolved | PlaybookAction | UserCreated | UserUpdated
            | SshKeyAdded | SshKeyRemoved => Category::Admin,
            ScanCompleted | ConfigReloaded => Category::System,
        }
    }
}

string_enum!(
    /// What an incident is about: the detection rule or the scan that
    /// opened it (`risky_login`: a login refused for its risk score), or
    /// `manual`. The store's CHECK constraint lists the same names
    /// (migration 0014 the latest list).
    IncidentType {
        BruteForceAccount => "brute_force_account",
        BruteForceIp => "brute_force_ip",
        CredentialStuffing => "credential_stuffing",
        PasswordSpraying => "password_spraying",
        AccountTakeover => "account_takeover",
        UsernameEnumeration => "username_enumeration",
        InjectionAttempt => "injection_attempt",
        ClonedAuthenticator => "cloned_authenticator",
        RiskyLogin => "risky_login",
        // `security scan mfa`: a sysop's factors below the required level.
        SysopFactorLevel => "sysop_factor_level",
        Manual => "manual",
    }
);

string_enum!(
    /// An incident's severity, least to most severe (events have `info`
    /// below these; incidents do not).
    IncidentSeverity {
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
);

impl IncidentSeverity {
    pub fn rank(self) -> u8 {
        self as u8
    }
    /// The event severity of the same name.
    pub fn as_event_severity(self) -> Severity {
        match self {
            IncidentSeverity::Low => Severity::Low,
            IncidentSeverity::Medium => Severity::Medium,
            IncidentSeverity::High => Severity::High,
            IncidentSeverity::Critical => Severity::Critical,
        }
    }
}

string_enum!(
    /// Where an incident is: open → investigating → resolved.
    IncidentStatus {
        Open => "open",
        Investigating => "investigating",
        Resolved => "resolved",
    }
);

string_enum!(
    /// The kinds of entry on an incident's timeline.
    TimelineKind {
        Created => "created",
        Attached => "attached",
        Note => "note",
        Assigned => "assigned",
        Status => "status",
        Action => "action",
        Escalated => "escalated",
        Resolved => "resolved",
    }
);

/// Who or what an incident is about. A rule keeps at most one open
/// incident per (type, subject); `key()` is the stored form of the subject.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// An account: by id when it exists, else by the attempted name
    /// (lower-cased for the key).
    Account { user_id: Option<i64>, username: String },
    /// One address as blocks group them: an IPv4 address ("192.0.2.7"),
    /// an IPv6 prefix ("2001:db8::/64"), as `AddressKey`'s display.
    Address(String),
    /// A network in CIDR form ("192.0.2.0/24", "2001:db8::/48").
    Network(String),
    /// Nothing in particular (a manual incident, a gate-wide pattern).
    Gate,
}

impl Subject {
    /// The stored, comparable form: `account:ID` (or `account:name:NAME`),
    /// `address:ADDR`, `network:CIDR`, `gate`.
    pub fn key(&self) -> String {
        match self {
            Subject::Account { user_id: Some(id), .. } => format!("account:{id}"),
            Subject::Account { user_id: None, username } => format!("account:name:{}", username.to_lowercase()),
            Subject::Address(a) => format!("address:{a}"),
            Subject::Network(n) => format!("network:{n}"),
            Subject::Gate => "gate".to_owned(),
        }
    }
}

/// What a detection rule found: the input of the incident engine, which
/// opens an incident for (type, subject) or attaches to the open one.
#[derive(Clone, Debug)]
pub struct Finding {
    pub incident_type: IncidentType,
    pub subject: Subject,
    pub severity: IncidentSeverity,
    /// One line, no control characters (attacker text escaped).
    pub title: String,
    pub description: String,
    /// The ids of the events that made the rule fire (bounded by the rule).
    pub event_ids: Vec<i64>,
    /// When the first of those events happened (the start of MTTD).
    pub first_event_at: Millis,
    /// A JSON object: the rule's name, its threshold and window, counts.
    pub details: serde_json::Value,
}

/// One security event, as `core` produces it and `store` records it.
#[derive(Clone, Debug)]
pub struct Event {
    pub event_type: EventType,
    pub category: Category,
    pub severity: Severity,
    pub user_id: Option<i64>,
    /// The username as typed (attacker-supplied for failures).
    pub username: Option<String>,
    pub ip: Option<String>,
    pub device_id: Option<i64>,
    pub session_id: Option<i64>,
    pub description: String,
    /// A JSON object; never holds a secret.
    pub details: serde_json::Value,
    pub risk_score: u8,
    pub is_suspicious: bool,
    pub created_at: Millis,
}

impl Event {
    pub fn new(event_type: EventType, severity: Severity, description: impl Into<String>, now: Millis) -> Event {
        Event {
            event_type,
            category: event_type.category(),
            severity,
            user_id: None,
            username: None,
            ip: None,
            device_id: None,
            session_id: None,
            description: description.into(),
            details: serde_json::Value::Object(Default::default()),
            risk_score: 0,
            is_suspicious: false,
            created_at: now,
        }
    }
    pub fn user(mut self, id: Option<i64>, name: Option<&str>) -> Event {
        self.user_id = id;
        self.username = name.map(str::to_owned);
        self
    }
    pub fn ip(mut self, ip: Option<&str>) -> Event {
        self.ip = ip.map(str::to_owned);
        self
    }
    pub fn session(mut self, id: Option<i64>) -> Event {
        self.session_id = id;
        self
    }
    pub fn device(mut self, id: Option<i64>) -> Event {
        self.device_id = id;
        self
    }
    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Event {
        if let serde_json::Value::Object(map) = &mut self.details {
            map.insert(key.to_owned(), value.into());
        }
        self
    }
    pub fn suspicious(mut self, risk: u8) -> Event {
        self.is_suspicious = true;
        self.risk_score = risk.min(100);
        self
    }
}

/// An event as read back from the store, with its id.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StoredEvent {
    pub id: i64,
    pub event_type: String,
    pub category: String,
    pub severity: String,
    pub description: String,
    pub is_suspicious: bool,
    pub risk_score: u8,
    pub created_at: String,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub ip: Option<String>,
    pub device_id: Option<i64>,
    pub session_id: Option<i64>,
    pub details: serde_json::Value,
}

impl StoredEvent {
    /// `e` as stored with `id` (what reading the row back gives).
    pub fn of(id: i64, e: &Event) -> StoredEvent {
        StoredEvent {
            id,
            event_type: e.event_type.as_str().to_owned(),
            category: e.category.as_str().to_owned(),
            severity: e.severity.as_str().to_owned(),
            description: e.description.clone(),
            is_suspicious: e.is_suspicious,
            risk_score: e.risk_score,
            created_at: e.created_at.rfc3339(),
            user_id: e.user_id,
            username: e.username.clone(),
            ip: e.ip.clone(),
            device_id: e.device_id,
            session_id: e.session_id,
            details: e.details.clone(),
        }
    }
}

/// Characters that must never reach a terminal raw: C0 controls, DEL, C1
/// controls (U+0080–U+009F: CSI U+009B, OSC U+009D, ... act like `ESC [`
/// on many terminals), the bidirectional formatting characters that can
/// reorder what a sysop reads (U+061C, U+200E, U+200F, U+202A–U+202E,
/// U+2066–U+2069) and the Unicode line and paragraph separators.
pub fn is_terminal_unsafe(c: char) -> bool {
    matches!(c as u32, 0x00..=0x1f | 0x7f..=0x9f | 0x061c | 0x200e | 0x200f | 0x2028 | 0x2029 | 0x202a..=0x202e | 0x2066..=0x2069)
}

/// Makes text safe to show on a terminal: control characters (C0, DEL, C1)
/// and backslashes are written as escapes, so nothing an attacker typed can
/// move the cursor, change colours or hide itself in a sysop's terminal.
/// Bidirectional formatting characters come out as `\u{202e}`.
pub fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0xa0 && is_terminal_unsafe(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_terminal_unsafe(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Removes what [`is_terminal_unsafe`] names, for client-supplied strings
/// that are stored (a client's version string): kept readable, never able
/// to act on a terminal.
pub fn strip_unsafe(text: &str) -> String {
    text.chars().filter(|c| !is_terminal_unsafe(*c)).collect()
}

/// Makes serialized JSON safe for a terminal while keeping it JSON that
/// parses back to the same values: DEL, C1 controls and the characters of
/// [`is_terminal_unsafe`] become `\uXXXX` escapes (serde_json escapes
/// only C0). Such characters can only occur inside JSON strings, where
/// `\uXXXX` means the same character.
pub fn json_terminal_safe(json: String) -> String {
    // Nearly every report is ASCII without DEL (a scan's runs to tens of
    // megabytes): nothing to escape, nothing to copy.
    if json.bytes().all(|b| b < 0x7f) {
        return json;
    }
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        // C0 controls are either escaped by serde_json already (inside
        // strings) or structural whitespace of pretty output (newlines).
        if c as u32 >= 0x7f && is_terminal_unsafe(c) {
            // All of them are in the Basic Multilingual Plane: one escape.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Escapes text for HTML element content and quoted attribute values
/// (mails and web pages).
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Usernames: 1–32 of letters, digits, `_`, `-`, `.` (SPEC §3).
pub fn valid_username(name: &str) -> bool {
    let n = name.chars().count();
    (1..=32).contains(&n) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Parses `30s`, `15m`, `2h`, `7d`, `1w`, `250ms` (and sums like `1h30m`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total_ms: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, after) = rest.split_at(digits);
        let letters = after.len() - after.trim_start_matches(|c: char| c.is_ascii_alphabetic()).len();
        let (unit, after) = after.split_at(letters);
        if number.is_empty() {
            return Err(match after.chars().next().filter(|_| unit.is_empty()) {
                Some(c) => format!("invalid duration {t:?}: unexpected {c:?}"),
                None => format!("invalid duration {t:?}: a unit needs a number before it"),
            });
        }
        let scale: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "" => return Err(format!("invalid duration {t:?}: expected a number and a unit, like \"30s\", \"15m\", \"2h\" or \"7d\"")),
            other => return Err(format!("invalid duration {t:?}: unknown unit {other:?} (use ms, s, m, h, d or w)")),
        };
        let n: u64 = number.parse().map_err(|_| format!("invalid duration {t:?}: number too large"))?;
        total_ms = n.checked_mul(scale).and_then(|v| total_ms.checked_add(v)).ok_or_else(|| format!("invalid duration {t:?}: too large"))?;
        rest = after;
    }
    Ok(std::time::Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters() {
        let cases = [
            ("alice", "alice"),
            ("a\x1b[2Jb", "a\\x1b[2Jb"),
            ("tab\there", "tab\\there"),
            ("nl\nx\r", "nl\\nx\\r"),
            ("del\x7f", "del\\x7f"),
            ("c1\u{9b}31m", "c1\\x9b31m"),
            ("back\\slash", "back\\\\slash"),
            ("rtl\u{202e}txt", "rtl\\u{202e}txt"),
            ("ünïcode", "ünïcode"),
            ("csi\u{9b}2J osc\u{9d}0;x\u{9c}", "csi\\x9b2J osc\\x9d0;x\\x9c"),
            ("c1 \u{80} \u{9f} nbsp\u{a0}", "c1 \\x80 \\x9f nbsp\u{a0}"),
            ("lro\u{202d} lre\u{202a} pdf\u{202c}", "lro\\u{202d} lre\\u{202a} pdf\\u{202c}"),
            ("iso\u{2066}\u{2067}\u{2068}\u{2069}", "iso\\u{2066}\\u{2067}\\u{2068}\\u{2069}"),
            ("marks\u{200e}\u{200f}\u{61c}", "marks\\u{200e}\\u{200f}\\u{061c}"),
            ("line\u{2028}para\u{2029}", "line\\u{2028}para\\u{2029}"),
            ("nul\u{0}", "nul\\x00"),
            ("zwj\u{200d}ok", "zwj\u{200d}ok"),
        ];
        for (input, want) in cases {
            assert_eq!(escape_control(input), want, "input {input:?}");
            let escaped = escape_control(input);
            assert!(!escaped.chars().any(is_terminal_unsafe), "unsafe left in {escaped:?}");
        }
    }

    /// Every unsafe character comes out of the JSON as `\uXXXX`, and the
    /// JSON parses back to the very string that went in.
    #[test]
    fn json_escapes_c1_del_and_bidi_and_round_trips() {
        let cases: &[(&str, &str)] = &[
            ("alice", r#""alice""#),
            ("a\u{9b}2Jb", r#""a\u009b2Jb""#),
            ("osc\u{9d}0;t\u{7}", r#""osc\u009d0;t\u0007""#),
            ("del\u{7f}", r#""del\u007f""#),
            ("rtl\u{202e}gnp.exe", r#""rtl\u202egnp.exe""#),
            ("iso\u{2066}x\u{2069}", r#""iso\u2066x\u2069""#),
            ("esc\u{1b}[2J", r#""esc\u001b[2J""#),
            ("quote\" back\\", r#""quote\" back\\""#),
            ("ünïcode \u{a0}", "\"ünïcode \u{a0}\""),
        ];
        for (input, want) in cases {
            let raw = serde_json::to_string(input).expect("serialize");
            let safe = json_terminal_safe(raw);
            assert_eq!(safe, *want, "input {input:?}");
            assert!(!safe.chars().any(is_terminal_unsafe), "unsafe left in {safe:?}");
            let back: String = serde_json::from_str(&safe).expect("still JSON");
            assert_eq!(back, *input);
        }
        // Keys and nested values too, and pretty output stays parseable.
        let value = serde_json::json!({ "user\u{9b}": ["x\u{202e}y", { "z": "\u{85}" }] });
        let safe = json_terminal_safe(serde_json::to_string_pretty(&value).expect("serialize"));
        assert!(!safe.chars().any(|c| c != '\n' && is_terminal_unsafe(c)), "{safe:?}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&safe).expect("parses"), value);
    }

    #[test]
    fn strips_unsafe_characters() {
        let cases = [
            ("SSH-2.0-OpenSSH_9.6", "SSH-2.0-OpenSSH_9.6"),
            ("SSH-2.0-x\u{202e}gnp", "SSH-2.0-xgnp"),
            ("SSH-2.0-\u{1b}[2J\u{9b}31m\u{7f}", "SSH-2.0-[2J31m"),
            ("SSH-2.0-\u{2066}a\u{2069}\u{200f}", "SSH-2.0-a"),
            ("SSH-2.0-ünï", "SSH-2.0-ünï"),
        ];
        for (input, want) in cases {
            assert_eq!(strip_unsafe(input), want, "input {input:?}");
        }
    }

    #[test]
    fn durations() {
        let ok = [("30s", 30_000), ("15m", 900_000), ("2h", 7_200_000), ("7d", 604_800_000), ("1h30m", 5_400_000), ("1w", 604_800_000), ("250ms", 250)];
        for (t, ms) in ok {
            assert_eq!(parse_duration(t), Ok(std::time::Duration::from_millis(ms)), "{t}");
        }
        let bad = [
            ("", "empty duration"),
            ("15", "invalid duration \"15\": expected a number and a unit, like \"30s\", \"15m\", \"2h\" or \"7d\""),
            ("5x", "invalid duration \"5x\": unknown unit \"x\" (use ms, s, m, h, d or w)"),
            ("5 m", "invalid duration \"5 m\": expected a number and a unit, like \"30s\", \"15m\", \"2h\" or \"7d\""),
            ("-5m", "invalid duration \"-5m\": unexpected '-'"),
            ("m", "invalid duration \"m\": a unit needs a number before it"),
        ];
        for (t, msg) in bad {
            assert_eq!(parse_duration(t), Err(msg.to_string()), "{t}");
        }
    }

    #[test]
    fn usernames() {
        for ok in ["a", "alice", "Bob_99", "x.y-z", &"a".repeat(32)] {
            assert!(valid_username(ok), "{ok}");
        }
        for bad in ["", "a b", "é", "a;b", &"a".repeat(33), "root\x1b"] {
            assert!(!valid_username(bad), "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = Millis(1_764_072_000_123);
        let s = t.rfc3339();
        assert_eq!(s, "2025-11-25T12:00:00.123Z");
        assert_eq!(Millis::parse_rfc3339(&s), Some(t));
    }
}

/// An account as stored. The password hash is a PHC string, never shown.
#[derive(Clone, Debug)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub password_hash: Option<Secret<String>>,
    pub password_changed_at: Option<Millis>,
    pub must_reset_password: bool,
    pub locked_until: Option<Millis>,
    pub lock_reason: Option<String>,
    /// Who made the lock in force (`None` when never locked).
    pub lock_source: Option<LockSource>,
    /// The incident a rule lock answers.
    pub lock_incident_id: Option<i64>,
    pub imposed_level: u8,
    pub login_count: i64,
    pub last_login_at: Option<Millis>,
    pub last_login_ip: Option<String>,
    pub created_at: Millis,
    pub groups: Vec<String>,
}

impl User {
    pub fn is_locked(&self, now: Millis) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }
}

string_enum!(
    /// Who locked an account. A `sysop` lock (the CLI) is absolute; a
    /// `rule` lock (a playbook) is bounded and still lets the owner in from
    /// an address where they recently passed every factor.
    LockSource {
        Sysop => "sysop",
        Rule => "rule",
    }
);

/// A registered SSH public key.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SshKey {
    pub id: i64,
    pub user_id: i64,
    pub algorithm: String,
    pub public_key: String,
    pub fingerprint: String,
    pub comment: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

/// Far future used for "locked until unlocked".
pub const FOREVER: Millis = Millis(253_402_300_799_000); // 9999-12-31T23:59:59Z

/// The hash of a one-time-code secret (HOTP/TOTP); `core::otp` computes
/// with it, `config` reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtpAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl OtpAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            OtpAlgorithm::Sha1 => "SHA1",
            OtpAlgorithm::Sha256 => "SHA256",
            OtpAlgorithm::Sha512 => "SHA512",
        }
    }
    pub fn parse(s: &str) -> Option<OtpAlgorithm> {
        match s.to_ascii_uppercase().replace('-', "").as_str() {
            "SHA1" => Some(OtpAlgorithm::Sha1),
            "SHA256" => Some(OtpAlgorithm::Sha256),
            "SHA512" => Some(OtpAlgorithm::Sha512),
            _ => None,
        }
    }
}

#[cfg(test)]
mod subject_tests {
    use super::*;

    #[test]
    fn subject_keys_are_stable_and_case_folded_for_names() {
        let cases = [
            (Subject::Account { user_id: Some(7), username: "Alice".into() }, "account:7"),
            (Subject::Account { user_id: None, username: "ROOT".into() }, "account:name:root"),
            (Subject::Address("192.0.2.7".into()), "address:192.0.2.7"),
            (Subject::Address("2001:db8::/64".into()), "address:2001:db8::/64"),
            (Subject::Network("192.0.2.0/24".into()), "network:192.0.2.0/24"),
            (Subject::Gate, "gate"),
        ];
        for (s, want) in cases {
            assert_eq!(s.key(), want, "{s:?}");
        }
        for t in IncidentType::ALL {
            assert_eq!(IncidentType::parse(t.as_str()), Some(*t));
        }
        assert!(IncidentSeverity::Critical.rank() > IncidentSeverity::Low.rank());
        assert_eq!(IncidentSeverity::High.as_event_severity(), Severity::High);
    }
}

/// An IP address or network in CIDR form, as blocks and
/// `blocks.never_block` name them: `192.0.2.7`, `192.0.2.0/24`,
/// `2001:db8::/64`. IPv4-mapped IPv6 (`::ffff:192.0.2.7`) is read as IPv4.
/// The host bits are always zero (a value with host bits set is refused
/// when parsed, so a typo does not silently block a wider network).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNetwork {
    addr: std::net::IpAddr,
    bits: u8,
}

impl IpNetwork {
    /// The single address `ip` (/32 or /128; IPv4-mapped IPv6 as IPv4).
    pub fn host(ip: std::net::IpAddr) -> IpNetwork {
        let ip = canonical_ip(ip);
        IpNetwork { addr: ip, bits: if ip.is_ipv4() { 32 } else { 128 } }
    }

    /// The network of `/bits` that holds `ip` (host bits cleared; `bits`
    /// clamped to the family's width).
    pub fn containing(ip: std::net::IpAddr, bits: u8) -> IpNetwork {
        match canonical_ip(ip) {
            std::net::IpAddr::V4(a) => {
                let bits = bits.min(32);
                IpNetwork { addr: std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) & mask_v4(bits))), bits }
            }
            std::net::IpAddr::V6(a) => {
                let bits = bits.min(128);
                IpNetwork { addr: std::net::IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & mask_v6(bits))), bits }
            }
        }
    }

    /// Parses `ADDR` or `ADDR/BITS`.
    pub fn parse(text: &str) -> Result<IpNetwork, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty address".into());
        }
        // Escaped only for a message (the load at start parses 100,000).
        let shown = || escape_control(t);
        let (addr_text, bits_text) = match t.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (t, None),
        };
        let Ok(addr) = addr_text.parse::<std::net::IpAddr>() else {
            return Err(format!("invalid address {shown:?}: expected an IPv4 or IPv6 address, optionally with /BITS, like 192.0.2.7, 192.0.2.0/24 or 2001:db8::/64", shown = shown()));
        };
        let Some(bits_text) = bits_text else { return Ok(IpNetwork::host(addr)) };
        let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
        if bits_text.is_empty() || !bits_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid network {shown:?}: the prefix length after '/' must be a number (0-{width} for {family})", shown = shown()));
        }
        let bits = match bits_text.parse::<u16>() {
            Ok(b) if b <= u16::from(width) => b as u8,
            _ => return Err(format!("invalid network {shown:?}: /{bits_text} is out of range for {family} (0-{width})", shown = shown())),
        };
        // ::ffff:a.b.c.d/BITS with BITS >= 96 is the IPv4 network /(BITS-96).
        let (addr, bits) = match addr {
            std::net::IpAddr::V6(v6) if bits >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (std::net::IpAddr::V4(v4), bits - 96),
                None => (addr, bits),
            },
            _ => (addr, bits),
        };
        let net = IpNetwork::containing(addr, bits);
        if net.addr != addr {
            return Err(format!("invalid network {shown:?}: host bits are set (the network is {net})", shown = shown()));
        }
        Ok(net)
    }

    pub fn addr(&self) -> std::net::IpAddr {
        self.addr
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// A single address (/32 for IPv4, /128 for IPv6).
    pub fn is_host(&self) -> bool {
        self.bits == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = canonical_ip(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && IpNetwork::containing(ip, self.bits).addr == self.addr
    }

    /// Whether the two share any address (one holds the other).
    pub fn overlaps(&self, other: &IpNetwork) -> bool {
        let (wide, narrow) = if self.bits <= other.bits { (self, other) } else { (other, self) };
        wide.contains(narrow.addr)
    }
}

impl std::fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.bits)
        }
    }
}

/// IPv4-mapped IPv6 as the IPv4 address it maps.
pub fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The IPv4 netmask of `/bits` (0..=32).
pub fn mask_v4(bits: u8) -> u32 {
    if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits.min(32)))
    }
}

/// The IPv6 netmask of `/bits` (0..=128).
pub fn mask_v6(bits: u8) -> u128 {
    if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits.min(128)))
    }
}

#[cfg(test)]
mod network_tests {
    use super::*;

    #[test]
    fn networks_parse_with_exact_messages() {
        let ok: &[(&str, &str)] = &[
            ("192.0.2.7", "192.0.2.7"),
            (" 192.0.2.7 ", "192.0.2.7"),
            ("192.0.2.7/32", "192.0.2.7"),
            ("192.0.2.0/24", "192.0.2.0/24"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::1", "2001:db8::1"),
            ("2001:db8::/64", "2001:db8::/64"),
            ("2001:DB8:0:0::/48", "2001:db8::/48"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.0/120", "192.0.2.0/24"),
            ("::ffff:192.0.2.7/128", "192.0.2.7"),
            ("::/0", "::/0"),
        ];
        for (text, want) in ok {
            assert_eq!(IpNetwork::parse(text).map(|n| n.to_string()), Ok(want.to_string()), "{text:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty address"),
            ("   ", "empty address"),
            ("example.org", "invalid address \"example.org\": expected an IPv4 or IPv6 address, optionally with /BITS, like 192.0.2.7, 192.0.2.0/24 or 2001:db8::/64"),
            ("192.0.2", "invalid address \"192.0.2\": expected an IPv4 or IPv6 address, optionally with /BITS, like 192.0.2.7, 192.0.2.0/24 or 2001:db8::/64"),
            ("192.0.2.256", "invalid address \"192.0.2.256\": expected an IPv4 or IPv6 address, optionally with /BITS, like 192.0.2.7, 192.0.2.0/24 or 2001:db8::/64"),
            ("fe80::1%eth0", "invalid address \"fe80::1%eth0\": expected an IPv4 or IPv6 address, optionally with /BITS, like 192.0.2.7, 192.0.2.0/24 or 2001:db8::/64"),
            ("192.0.2.0/33", "invalid network \"192.0.2.0/33\": /33 is out of range for IPv4 (0-32)"),
            ("192.0.2.0/99999999999", "invalid network \"192.0.2.0/99999999999\": /99999999999 is out of range for IPv4 (0-32)"),
            ("2001:db8::/129", "invalid network \"2001:db8::/129\": /129 is out of range for IPv6 (0-128)"),
            ("192.0.2.0/", "invalid network \"192.0.2.0/\": the prefix length after '/' must be a number (0-32 for IPv4)"),
            ("192.0.2.0/-1", "invalid network \"192.0.2.0/-1\": the prefix length after '/' must be a number (0-32 for IPv4)"),
            ("2001:db8::/6x", "invalid network \"2001:db8::/6x\": the prefix length after '/' must be a number (0-128 for IPv6)"),
            ("192.0.2.7/24", "invalid network \"192.0.2.7/24\": host bits are set (the network is 192.0.2.0/24)"),
            ("10.1.2.3/8", "invalid network \"10.1.2.3/8\": host bits are set (the network is 10.0.0.0/8)"),
            ("2001:db8::1/64", "invalid network \"2001:db8::1/64\": host bits are set (the network is 2001:db8::/64)"),
            ("::ffff:192.0.2.7/120", "invalid network \"::ffff:192.0.2.7/120\": host bits are set (the network is 192.0.2.0/24)"),
            ("1.2.3.4\u{1b}[2J", "invalid address \"1.2.3.4\\\\x1b[2J\": expected an IPv4 or IPv6 address, optionally with /BITS, like 192.0.2.7, 192.0.2.0/24 or 2001:db8::/64"),
        ];
        for (text, want) in bad {
            assert_eq!(IpNetwork::parse(text), Err(want.to_string()), "{text:?}");
        }
    }

    #[test]
    fn networks_contain_and_overlap() {
        let net = |s: &str| IpNetwork::parse(s).expect("network");
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        // (network, address, contained)
        let cases: &[(&str, &str, bool)] = &[
            ("192.0.2.0/24", "192.0.2.255", true),
            ("192.0.2.0/24", "192.0.3.0", false),
            ("192.0.2.0/24", "::ffff:192.0.2.9", true),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.1", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("2001:db8::/64", "2001:db8::ffff:1", true),
            ("2001:db8::/64", "2001:db8:0:1::1", false),
            ("2001:db8::/32", "2001:db8:ffff:1::1", true),
            ("::/0", "192.0.2.1", false),
            ("127.0.0.0/8", "127.0.0.2", true),
        ];
        for (n, a, want) in cases {
            assert_eq!(net(n).contains(ip(a)), *want, "{n} contains {a}");
        }
        assert!(net("10.0.0.0/8").overlaps(&net("10.1.2.3")));
        assert!(net("10.1.2.3").overlaps(&net("10.0.0.0/8")));
        assert!(!net("10.0.0.0/8").overlaps(&net("11.0.0.0/8")));
        assert!(!net("::/0").overlaps(&net("0.0.0.0/0")));
    }
}
