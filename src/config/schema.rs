//! The one definition of `portcullis.hjson`. Every key has a default beside
//! it, unknown keys are errors, and each section maps onto one module.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    crate::model::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// A duration as the config writes it ("90s", "2d"), for `config show`.
pub(crate) fn show_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::playbooks::show_duration(*d))
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schema {
    /// Database, host key, TLS certificate and mail spool.
    pub data_dir: String,
    /// Art folder; the built-in art is used when unset.
    pub art_dir: Option<String>,
    /// The login flow and menus; the built-in `menu.hjson` when unset.
    pub menus: Option<String>,
    /// The time zone of screens, mails and CLI tables (an IANA name);
    /// unset: the machine's.
    pub timezone: Option<String>,
    /// Mail templates that replace the built-in ones file by file
    /// (`NAME.txt`, `NAME.html`, `NAME.subject`); unset: all built in.
    pub templates_dir: Option<String>,
    pub ssh: Ssh,
    pub passwords: Passwords,
    pub kdf: Kdf,
    pub events: Events,
    pub web: Web,
    pub email: Email,
    pub mfa: Mfa,
    pub incidents: Incidents,
    pub blocks: Blocks,
    pub locks: Locks,
    /// The detection rules (`core::detect`): see `config/detection.rs`.
    pub detection: super::detection::Detection,
    /// The risk score of each login (`core::risk`): see `config/risk.rs`.
    pub risk: super::risk::Risk,
    /// Policy per group: `groups: { sysops: { require_level: 2 } }`.
    pub groups: std::collections::BTreeMap<String, GroupPolicy>,
    /// Hardware keys (level 3): the SSH approval and its options.
    pub webauthn: Webauthn,
    /// Response playbooks: an array, or the name of a file holding
    /// `playbooks: [...]`. Unset: the built-in `config/playbooks.hjson`.
    /// The content is read from the tree (`config::playbooks::load`).
    #[serde(skip_serializing)]
    pub playbooks: Option<super::playbooks::PlaybooksKey>,
    /// Webhooks by name: `webhooks: { ops: { url, secret, preset } }`. None by default.
    pub webhooks: std::collections::BTreeMap<String, super::webhooks::WebhookDef>,
    /// How long events are kept (`config/export.rs`).
    pub retention: super::export::Retention,
    /// Where committed events are streamed (`config/export.rs`).
    pub export: super::export::Export,
}

impl Default for Schema {
    fn default() -> Self {
        Schema {
            data_dir: "data".into(),
            templates_dir: None,
            timezone: None,
            art_dir: None,
            menus: None,
            ssh: Ssh::default(),
            passwords: Passwords::default(),
            kdf: Kdf::default(),
            events: Events::default(),
            web: Web::default(),
            email: Email::default(),
            mfa: Mfa::default(),
            incidents: Incidents::default(),
            blocks: Blocks::default(),
            locks: Locks::default(),
            detection: Default::default(),
            risk: Default::default(),
            groups: Default::default(),
            webauthn: Default::default(),
            playbooks: None,
            webhooks: Default::default(),
            retention: Default::default(),
            export: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ssh {
    pub listen: String,
    /// Host key file; `<data_dir>/ssh_host_ed25519_key` when unset.
    pub host_key: Option<String>,
    /// The version string sent to clients (must start with `SSH-2.0-`).
    pub server_id: String,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub login_grace_time: Duration,
    pub max_auth_tries: u32,
    /// OpenSSH's `MaxStartups start:rate:full`.
    pub max_startups: String,
    /// Unauthenticated connections one address may hold at once.
    pub max_startups_per_address: u32,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub auth_rejection_time: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub idle_timeout: Duration,
    pub penalties: Penalties,
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            listen: "127.0.0.1:2222".into(),
            host_key: None,
            server_id: "SSH-2.0-Portcullis".into(),
            login_grace_time: Duration::from_secs(120),
            max_auth_tries: 6,
            max_startups: "10:30:100".into(),
            max_startups_per_address: 10,
            auth_rejection_time: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3600),
            penalties: Penalties::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Penalties {
    /// Failed attempts from one address within `window` before it is held off.
    pub max_failures: u32,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub window: Duration,
    /// First hold-off; doubles on each repeat up to `max_penalty`.
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub penalty: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub max_penalty: Duration,
    /// IPv6 addresses share caps and penalties per this prefix: 64 (one
    /// site's subnet) unless a wider one (down to 16) is set.
    pub ipv6_prefix: u8,
}

impl Default for Penalties {
    fn default() -> Self {
        Penalties {
            max_failures: 10,
            window: Duration::from_secs(600),
            penalty: Duration::from_secs(1800),
            max_penalty: Duration::from_secs(86_400),
            ipv6_prefix: 64,
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Passwords {
    pub iterations: u32,
    pub min_length: usize,
    pub max_length: usize,
    pub min_strength: u8,
    pub history: usize,
    pub max_age_days: u32,
    pub force_change_after_days: Option<u32>,
}

impl Default for Passwords {
    fn default() -> Self {
        Passwords {
            iterations: 600_000,
            min_length: 12,
            max_length: 128,
            min_strength: 3,
            history: 5,
            max_age_days: 90,
            force_change_after_days: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kdf {
    /// Threads that run password hashes; 0 means one per core.
    pub workers: usize,
    /// Hash requests that may wait for a worker; more are refused at once.
    pub queue: usize,
}

impl Default for Kdf {
    fn default() -> Self {
        Kdf { workers: 0, queue: 32 }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// Most events committed in one transaction by the writer.
    pub batch: usize,
}

impl Default for Events {
    fn default() -> Self {
        Events { batch: 10_000 }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Web {
    pub listen: String,
    /// How users reach the web server; links in mails start with it.
    pub base_url: String,
    /// PEM certificate chain and key; both unset: a self-signed pair in
    /// `<data_dir>` is created on first start.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// `/metrics` answers loopback peers, or this bearer token.
    pub metrics_token: Option<String>,
    /// Whether loopback peers read `/metrics` without the token (turn off
    /// behind a reverse proxy on the same host).
    pub metrics_from_loopback: bool,
    /// Open web connections at most, from everyone.
    pub max_connections: usize,
    /// Open web connections at most from one address (IPv6 grouped by `ssh.penalties.ipv6_prefix`, /64 by default).
    pub max_connections_per_address: usize,
    /// An HTTP/2 connection with no request in flight for this long is closed.
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub http2_idle_timeout: Duration,
    /// An HTTP/2 connection is closed (gracefully) once this old.
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub http2_max_age: Duration,
    /// An HTTP/1.1 connection waiting for its next request is closed after this.
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub http1_idle_timeout: Duration,
    /// File descriptors only SSH may use: the web server refuses
    /// connections that would leave fewer free.
    pub descriptor_reserve: usize,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            listen: "127.0.0.1:8443".into(),
            base_url: "https://localhost:8443".into(),
            tls_cert: None,
            tls_key: None,
            metrics_token: None,
            metrics_from_loopback: true,
            max_connections: 512,
            max_connections_per_address: 32,
            http2_idle_timeout: Duration::from_secs(60),
            http2_max_age: Duration::from_secs(600),
            http1_idle_timeout: Duration::from_secs(5),
            descriptor_reserve: 256,
        }
    }
}

#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Email {
    pub from: String,
    /// lettre URL (`smtp://host:port`, `smtps://...`, `?tls=required`);
    /// unset: mails are written to `<data_dir>/mail/`.
    pub smtp: Option<String>,
    /// Allow a plaintext `smtp://` URL to a host that is not loopback.
    pub allow_plaintext: bool,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub retry_base: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub retry_max: Duration,
    pub max_attempts: u32,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub poll: Duration,
}

impl std::fmt::Debug for Email {
    // The SMTP URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("from", &self.from)
            .field("smtp", &self.smtp.as_ref().map(|_| "<set>"))
            .field("allow_plaintext", &self.allow_plaintext)
            .field("retry_base", &self.retry_base)
            .field("retry_max", &self.retry_max)
            .field("max_attempts", &self.max_attempts)
            .field("poll", &self.poll)
            .finish()
    }
}

impl Default for Email {
    fn default() -> Self {
        Email {
            from: "gate@localhost".into(),
            smtp: None,
            allow_plaintext: false,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            max_attempts: 50,
            poll: Duration::from_secs(1),
        }
    }
}

/// `webauthn`: hardware keys as the third factor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webauthn {
    /// How long an SSH login waits for its key's touch (30s to 10m; never
    /// beyond the login grace time, less 5 s).
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub approval_ttl: Duration,
    /// A user whose policy requires level 3 and who has no key yet may log
    /// in with password and code (level 2) only to register one: the
    /// session offers nothing else. Off: such a login is refused, with a
    /// message saying what to do.
    pub enroll_grace: bool,
    /// After a key approved an SSH login, trust that SSH device (its
    /// client, key exchange offer and public key) for this long: its next
    /// logins need their other factors but no touch. 0s (the default):
    /// every login asks for the key.
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub trust_device_for: Duration,
    /// PEM files of the authenticator makers' attestation roots (relative
    /// to the config's folder). Empty (the default): any authenticator is
    /// accepted and its attestation is not asked for ("none"). Set: every
    /// registration asks for attestation and accepts only a key whose
    /// certificate chain ends at one of these.
    pub attestation_ca: Vec<String>,
}

impl Default for Webauthn {
    fn default() -> Self {
        Webauthn { approval_ttl: Duration::from_secs(120), enroll_grace: false, trust_device_for: Duration::ZERO, attestation_ca: Vec::new() }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mfa {
    /// Shown in authenticator apps.
    pub issuer: String,
    /// TOTP/HOTP hash for new enrollments: SHA1 (what every app reads),
    /// SHA256 or SHA512.
    pub algorithm: String,
    pub digits: u32,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub link_ttl: Duration,
    pub backup_codes: usize,
    /// Code attempts per account within one 30 s step.
    pub tries_per_step: u32,
    /// Consecutive failed codes that close the code factor...
    pub max_consecutive_failures: u32,
    /// ...for this long, doubling on each repeat...
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub lockout: Duration,
    /// ...up to this bound (a closure never lasts longer).
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub max_lockout: Duration,
    pub hotp_lookahead: u64,
}

impl Default for Mfa {
    fn default() -> Self {
        Mfa {
            issuer: "Portcullis".into(),
            algorithm: "SHA1".into(),
            digits: 6,
            link_ttl: Duration::from_secs(1800),
            backup_codes: 10,
            tries_per_step: 3,
            max_consecutive_failures: 5,
            lockout: Duration::from_secs(900),
            max_lockout: Duration::from_secs(86_400),
            hotp_lookahead: 10,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Incidents {
    /// Who is mailed when an incident opens. Empty (the default): every
    /// member of the `sysops` group with an email address.
    pub notify: Vec<String>,
}

/// Address blocks (`security ip`, and the playbooks' "block" action).
/// `N` is what a `never_block` entry is: the text here, the parsed
/// network once `load` resolved it (`load::BlockSettings`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Blocks<N = String> {
    /// A block made without a duration (by a rule) lasts this long the
    /// first time...
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub first: Duration,
    /// ...doubling with each earlier block of the address within
    /// `repeat_window`, up to `max`.
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub max: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub repeat_window: Duration,
    /// Recidivists (fail2ban's `recidive`): an address with this many
    /// earlier blocks within `recidive_window` is blocked for `recidive`.
    pub recidive_after: u32,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub recidive_window: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub recidive: Duration,
    /// Addresses and networks never blocked and never held off by the
    /// admission penalties (loopback is not in it unless listed).
    pub never_block: Vec<N>,
}

impl<N> Blocks<N> {
    /// The same settings with `never_block` replaced (resolved).
    pub fn with_never_block<M>(self, never_block: Vec<M>) -> Blocks<M> {
        let Blocks { first, max, repeat_window, recidive_after, recidive_window, recidive, never_block: _ } = self;
        Blocks { first, max, repeat_window, recidive_after, recidive_window, recidive, never_block }
    }
}

impl<N> Default for Blocks<N> {
    fn default() -> Self {
        Blocks {
            first: Duration::from_secs(1800),
            max: Duration::from_secs(86_400),
            repeat_window: Duration::from_secs(7 * 86_400),
            recidive_after: 5,
            recidive_window: Duration::from_secs(86_400),
            recidive: Duration::from_secs(7 * 86_400),
            never_block: Vec::new(),
        }
    }
}

/// Account locks made by rules (playbooks), and what still lets the owner in.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Locks {
    /// The longest a rule may lock an account (a longer request is cut to this).
    #[serde(deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub max_duration: Duration,
    /// A rule lock still admits the owner, with every factor, from an
    /// address where they completed a full login within this many days.
    pub known_address_days: u32,
}

impl Default for Locks {
    fn default() -> Self {
        Locks { max_duration: Duration::from_secs(86_400), known_address_days: 30 }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPolicy {
    /// Factor level members need: 1 password or key, 2 a one-time code,
    /// 3 a hardware key.
    pub require_level: u8,
}

/// Deserializes each top-level section on its own, so that one bad section
/// does not hide the problems of the others.
macro_rules! sections {
    ($($field:ident),+ $(,)?) => {
        /// The top-level keys, in the order serde reports them.
        pub const TOP_LEVEL: &[&str] = &[$(stringify!($field)),+];

        pub fn from_tree(root: &super::hjson::Spanned) -> Result<Schema, Vec<super::hjson::Error>> {
            use super::hjson::{from_spanned_at, join_key, Error, Node};
            let Node::Object(members) = &root.node else {
                return Err(vec![Error::new(root.line, root.col, "", "the config must be an object")]);
            };
            let mut schema = Schema::default();
            let mut problems = Vec::new();
            for (key, value) in members {
                let path = join_key("", &key.name);
                match key.name.as_str() {
                    $(stringify!($field) => match from_spanned_at(value, &path) {
                        Ok(v) => schema.$field = v,
                        Err(e) => problems.push(e),
                    },)+
                    other => {
                        let expected: Vec<String> = TOP_LEVEL.iter().map(|f| format!("{f:?}")).collect();
                        problems.push(Error::new(key.line, key.col, path.clone(), format!("unknown field {other:?}, expected one of {}", expected.join(", "))));
                    }
                }
            }
            if problems.is_empty() { Ok(schema) } else { Err(problems) }
        }
    };
}

sections!(data_dir, art_dir, menus, templates_dir, timezone, ssh, passwords, kdf, events, web, email, mfa, webauthn, incidents, blocks, locks, detection, risk, groups, playbooks, webhooks, retention, export);
