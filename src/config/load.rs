//! Resolves the hjson schema into `Settings`: addresses parsed, paths made
//! absolute against the config file's folder, cross-field rules checked.
//! Every problem is reported, each as `file:line:col: key.path: message`.

use super::schema::Schema;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shipped default config, used when no file is given and
/// `config/portcullis.hjson` does not exist in the working folder.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/portcullis.hjson");

#[derive(Debug, Clone)]
pub struct Settings {
    /// The file these settings came from, or `<built-in>`.
    pub source: String,
    pub data_dir: PathBuf,
    pub art_dir: Option<PathBuf>,
    /// `None`: the built-in menus.
    pub menus: Option<PathBuf>,
    /// `None`: the built-in mail templates (see `core::mail`).
    pub templates_dir: Option<PathBuf>,
    /// How screens, mails and CLI tables show times (`timezone`).
    pub clock: super::time::Clock,
    pub ssh: SshSettings,
    pub passwords: super::schema::Passwords,
    pub kdf_workers: usize,
    pub kdf_queue: usize,
    pub event_batch: usize,
    pub web: WebSettings,
    pub email: super::schema::Email,
    pub mfa: MfaSettings,
    /// Hardware keys: the SSH approval's time, enrollment grace, device trust.
    pub webauthn: super::schema::Webauthn,
    /// The PEM files of `webauthn.attestation_ca`, resolved (read and
    /// checked by `core::webauthn::attestation_roots`; empty: attestation
    /// is not asked for).
    pub attestation_ca: Vec<PathBuf>,
    /// Who is mailed when an incident opens (addresses checked).
    pub incidents: super::schema::Incidents,
    pub blocks: BlockSettings,
    pub locks: super::schema::Locks,
    /// The detection rules, resolved.
    pub detection: super::detection::DetectionSettings,
    /// The risk score's factors and thresholds, resolved.
    pub risk: super::risk::RiskSettings,
    /// Required factor level per group name (lowercase).
    pub group_levels: std::collections::BTreeMap<String, u8>,
    /// Response playbooks, in order (the built-in ones when the config
    /// has no `playbooks` key).
    pub playbooks: Vec<super::playbooks::Playbook>,
    /// The file they came from, or `playbooks.hjson (built-in)`.
    pub playbooks_source: String,
    /// Webhooks by name.
    pub webhooks: std::collections::BTreeMap<String, super::webhooks::WebhookSettings>,
    /// Events older than this many days are removed daily (0: kept).
    pub retention_days: u32,
    /// Where committed events are streamed.
    pub export: super::export::ExportSettings,
    /// The effective configuration for `config show`: every key, the
    /// file's values over the defaults, paths resolved, secrets redacted.
    pub effective: serde_json::Value,
}

#[derive(Clone)]
pub struct WebSettings {
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub base_url: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Both files come from the config (never generated).
    pub cert_configured: bool,
    pub metrics_token: Option<String>,
    pub metrics_from_loopback: bool,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub http2_idle_timeout: Duration,
    pub http2_max_age: Duration,
    pub http1_idle_timeout: Duration,
    pub descriptor_reserve: usize,
}

impl std::fmt::Debug for WebSettings {
    // The metrics token is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSettings")
            .field("listen", &self.listen)
            .field("base_url", &self.base_url)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("cert_configured", &self.cert_configured)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "<secret>"))
            .field("metrics_from_loopback", &self.metrics_from_loopback)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_address", &self.max_connections_per_address)
            .field("http2_idle_timeout", &self.http2_idle_timeout)
            .field("http2_max_age", &self.http2_max_age)
            .field("http1_idle_timeout", &self.http1_idle_timeout)
            .field("descriptor_reserve", &self.descriptor_reserve)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct MfaSettings {
    pub issuer: String,
    pub algorithm: crate::model::OtpAlgorithm,
    pub digits: u32,
    pub link_ttl: Duration,
    pub backup_codes: usize,
    pub tries_per_step: u32,
    pub max_consecutive_failures: u32,
    pub lockout: Duration,
    pub max_lockout: Duration,
    pub hotp_lookahead: u64,
}

/// `blocks`: how long blocks made without a duration last, and what is
/// never blocked (the schema's section with `never_block` parsed).
pub type BlockSettings = super::schema::Blocks<crate::model::IpNetwork>;

#[derive(Debug, Clone)]
pub struct SshSettings {
    pub listen: SocketAddr,
    pub host_key: PathBuf,
    pub server_id: String,
    pub login_grace_time: Duration,
    pub max_auth_tries: u32,
    pub startups: MaxStartups,
    pub max_startups_per_address: u32,
    pub auth_rejection_time: Duration,
    pub idle_timeout: Duration,
    pub penalties: super::schema::Penalties,
}

/// OpenSSH's `MaxStartups start:rate:full`: below `start` unauthenticated
/// connections are all accepted, from `start` on each is dropped with
/// probability growing from `rate`% to 100% at `full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStartups {
    pub start: u32,
    pub rate: u32,
    pub full: u32,
}

/// The config file a command uses: `--config`, else `PORTCULLIS_CONFIG`
/// (clap folds both into `explicit`), else `config/portcullis.hjson` when it
/// exists, else the built-in default relative to the working folder.
pub fn load(explicit: Option<&Path>) -> Result<Settings, Vec<String>> {
    match explicit {
        Some(path) => load_file(path),
        None => {
            let local = Path::new("config/portcullis.hjson");
            if local.exists() {
                load_file(local)
            } else {
                // The built-in copy behaves as if it were ./config/portcullis.hjson.
                let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
                from_text(DEFAULT_CONFIG, "<built-in>", &cwd.join("config"))
            }
        }
    }
}

pub fn load_file(path: &Path) -> Result<Settings, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read config: {e}", path.display())])?;
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")).join(path)
    };
    let folder = absolute.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    from_text(&text, &path.display().to_string(), &folder)
}

/// Parses and resolves config text. `name` is used in messages, `folder`
/// anchors relative paths.
pub fn from_text(text: &str, name: &str, folder: &Path) -> Result<Settings, Vec<String>> {
    let tree = super::hjson::parse(text).map_err(|e| vec![format!("{name}:{e}")])?;
    let schema: Schema = super::schema::from_tree(&tree).map_err(|errors| errors.iter().map(|e| format!("{name}:{e}")).collect::<Vec<_>>())?;
    resolve(schema, &tree, name, text, folder)
}

fn resolve(s: Schema, tree: &super::hjson::Spanned, name: &str, text: &str, folder: &Path) -> Result<Settings, Vec<String>> {
    let mut problems = Vec::new();
    let mut effective = serde_json::to_value(&s).unwrap_or_default();
    // Semantic errors point at the key that holds the bad value.
    let at = |path: &str| -> String {
        match super::hjson::position_of(text, path) {
            Some((line, col)) => format!("{name}:{line}:{col}: {path}"),
            None => format!("{name}: {path}"),
        }
    };
    let absolute = |p: &str| -> PathBuf {
        let p = Path::new(p);
        normalize(&if p.is_absolute() { p.to_path_buf() } else { folder.join(p) })
    };

    let data_dir = absolute(&s.data_dir);
    let listen = match s.ssh.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(format!(
                "{}: invalid address {:?}: expected IP:PORT like \"127.0.0.1:2222\"",
                at("ssh.listen"),
                s.ssh.listen
            ));
            None
        }
    };
    let startups = match parse_max_startups(&s.ssh.max_startups) {
        Ok(m) => Some(m),
        Err(e) => {
            problems.push(format!("{}: {e}", at("ssh.max_startups")));
            None
        }
    };
    if !s.ssh.server_id.starts_with("SSH-2.0-")
        || s.ssh.server_id.len() > 200
        || s.ssh.server_id.chars().any(|c| c.is_control() || c == ' ')
    {
        problems.push(format!(
            "{}: must start with \"SSH-2.0-\" and hold no spaces or control characters",
            at("ssh.server_id")
        ));
    }
    if s.ssh.max_auth_tries == 0 {
        problems.push(format!("{}: must be at least 1", at("ssh.max_auth_tries")));
    }
    if !(16..=64).contains(&s.ssh.penalties.ipv6_prefix) {
        problems.push(format!("{}: must be between 16 and 64 (a longer prefix would let one host escape its penalty)", at("ssh.penalties.ipv6_prefix")));
    }
    if s.ssh.penalties.max_failures == 0 {
        problems.push(format!("{}: must be at least 1", at("ssh.penalties.max_failures")));
    }
    let p = &s.passwords;
    if p.iterations < 1000 {
        problems.push(format!("{}: must be at least 1000", at("passwords.iterations")));
    }
    if p.min_length == 0 || p.min_length > p.max_length {
        problems.push(format!(
            "{}: must be between 1 and passwords.max_length ({})",
            at("passwords.min_length"),
            p.max_length
        ));
    }
    if p.max_length > 128 * 4 {
        problems.push(format!("{}: must be at most 512", at("passwords.max_length")));
    }
    if p.min_strength > 4 {
        problems.push(format!("{}: must be between 0 and 4", at("passwords.min_strength")));
    }
    if s.events.batch == 0 {
        problems.push(format!("{}: must be at least 1", at("events.batch")));
    }
    for (key, value) in [("web.max_connections", s.web.max_connections), ("web.max_connections_per_address", s.web.max_connections_per_address)] {
        if value == 0 {
            problems.push(format!("{}: must be at least 1", at(key)));
        }
    }
    for (key, value) in [("web.http2_idle_timeout", s.web.http2_idle_timeout), ("web.http2_max_age", s.web.http2_max_age), ("web.http1_idle_timeout", s.web.http1_idle_timeout)] {
        if value.is_zero() {
            problems.push(format!("{}: must be longer than 0s", at(key)));
        }
    }
    let web_listen = match s.web.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(format!("{}: invalid address {:?}: expected IP:PORT like \"127.0.0.1:8443\"", at("web.listen"), s.web.listen));
            None
        }
    };
    let base_url = s.web.base_url.trim_end_matches('/').to_owned();
    if !base_url.starts_with("https://") || base_url.len() <= "https://".len() || base_url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        problems.push(format!("{}: must be an https:// URL like \"https://gate.example.org\" (links in mails carry tokens)", at("web.base_url")));
    }
    if s.web.tls_cert.is_some() != s.web.tls_key.is_some() {
        problems.push(format!("{}: tls_cert and tls_key must be set together", at(if s.web.tls_cert.is_some() { "web.tls_cert" } else { "web.tls_key" })));
    }
    if let Some(t) = &s.web.metrics_token {
        if t.len() < 16 {
            problems.push(format!("{}: must be at least 16 characters", at("web.metrics_token")));
        }
    }
    let algorithm = crate::model::OtpAlgorithm::parse(&s.mfa.algorithm);
    if algorithm.is_none() {
        problems.push(format!("{}: unknown algorithm {:?}: use SHA1, SHA256 or SHA512", at("mfa.algorithm"), s.mfa.algorithm));
    }
    if s.mfa.digits != 6 && s.mfa.digits != 8 {
        problems.push(format!("{}: must be 6 or 8", at("mfa.digits")));
    }
    if s.mfa.backup_codes == 0 || s.mfa.backup_codes > 50 {
        problems.push(format!("{}: must be between 1 and 50", at("mfa.backup_codes")));
    }
    if s.mfa.tries_per_step == 0 || s.mfa.max_consecutive_failures == 0 {
        problems.push(format!("{}: tries_per_step and max_consecutive_failures must be at least 1", at("mfa")));
    }
    if s.mfa.max_lockout < s.mfa.lockout {
        problems.push(format!("{}: must be at least mfa.lockout", at("mfa.max_lockout")));
    }
    if s.webauthn.approval_ttl < Duration::from_secs(30) || s.webauthn.approval_ttl > Duration::from_secs(600) {
        problems.push(format!("{}: must be between 30s and 10m", at("webauthn.approval_ttl")));
    }
    if s.webauthn.trust_device_for > Duration::from_secs(90 * 86_400) {
        problems.push(format!("{}: must be at most 90d", at("webauthn.trust_device_for")));
    }
    if s.mfa.hotp_lookahead > 100 {
        problems.push(format!("{}: must be at most 100", at("mfa.hotp_lookahead")));
    }
    if s.locks.max_duration < Duration::from_secs(60) || s.locks.max_duration > Duration::from_secs(30 * 86_400) {
        problems.push(format!("{}: must be between 1m and 30d (a rule lock is bounded; the sysop locks for longer)", at("locks.max_duration")));
    }
    if !(1..=365).contains(&s.locks.known_address_days) {
        problems.push(format!("{}: must be between 1 and 365", at("locks.known_address_days")));
    }
    if s.email.max_attempts == 0 {
        problems.push(format!("{}: must be at least 1", at("email.max_attempts")));
    }
    if let Some(url) = &s.email.smtp {
        if let Err(e) = super::smtp::check_url(url, s.email.allow_plaintext) {
            problems.push(format!("{}: {e}", at("email.smtp")));
        }
    }
    for address in &s.incidents.notify {
        if !plausible_email(address) {
            problems.push(format!("{}: invalid email address {:?}: expected one like \"sysop@example.org\"", at("incidents.notify"), address));
        }
    }
    let b = &s.blocks;
    if b.first.is_zero() {
        problems.push(format!("{}: must be longer than 0s", at("blocks.first")));
    }
    if b.max < b.first {
        problems.push(format!("{}: must be at least blocks.first", at("blocks.max")));
    }
    if b.recidive_after == 0 {
        problems.push(format!("{}: must be at least 1", at("blocks.recidive_after")));
    }
    let mut never_block = Vec::new();
    for entry in &b.never_block {
        match crate::model::IpNetwork::parse(entry) {
            Ok(n) => never_block.push(n),
            Err(e) => problems.push(format!("{}: {e}", at("blocks.never_block"))),
        }
    }
    let mut group_levels = std::collections::BTreeMap::new();
    for (name, policy) in &s.groups {
        if !crate::model::valid_username(name) {
            problems.push(format!("{}: invalid group name {:?}", at("groups"), name));
        }
        if !(1..=3).contains(&policy.require_level) {
            problems.push(format!("{}: must be 1, 2 or 3", at(&format!("groups.{name}.require_level"))));
        }
        group_levels.insert(name.to_lowercase(), policy.require_level);
    }
    let mut webhooks = std::collections::BTreeMap::new();
    for (hook, def) in &s.webhooks {
        if !super::webhooks::valid_name(hook) {
            problems.push(format!("{}: invalid webhook name {:?}: use 1-32 letters, digits, '_' or '-'", at("webhooks"), crate::model::escape_control(hook)));
            continue;
        }
        match super::webhooks::resolve(hook, def, folder, &at) {
            Ok(w) => {
                webhooks.insert(hook.clone(), w);
            }
            Err(e) => problems.extend(e),
        }
    }
    let hook_names: std::collections::BTreeSet<String> = s.webhooks.keys().cloned().collect();
    let playbooks = match super::playbooks::load(tree.get("playbooks"), name, folder, &hook_names) {
        Ok(p) => Some(p),
        Err(e) => {
            problems.extend(e);
            None
        }
    };
    let detection = super::detection::resolve(s.detection, &at, &mut problems);
    if s.retention.events_days > super::export::MAX_EVENTS_DAYS {
        problems.push(format!("{}: must be at most {} (0 keeps every event)", at("retention.events_days"), super::export::MAX_EVENTS_DAYS));
    }
    let export = super::export::resolve(s.export, &absolute, &at, &mut problems);
    let risk = super::risk::resolve(s.risk, &at, &mut problems);
    let clock = match super::time::Clock::new(s.timezone.as_deref()) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(format!("{}: {e}", at("timezone")));
            None
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let host_key = s
        .ssh
        .host_key
        .as_deref()
        .map(absolute)
        .unwrap_or_else(|| data_dir.join("ssh_host_ed25519_key"));
    let web_cert = s.web.tls_cert.as_deref().map(absolute).unwrap_or_else(|| data_dir.join("tls_cert.pem"));
    let web_key = s.web.tls_key.as_deref().map(absolute).unwrap_or_else(|| data_dir.join("tls_key.pem"));
    show_resolved(&mut effective, &s.playbooks, &absolute, &data_dir, &host_key, &web_cert, &web_key);
    Ok(Settings {
        effective,
        source: name.to_owned(),
        art_dir: s.art_dir.as_deref().map(absolute),
        menus: s.menus.as_deref().map(absolute),
        templates_dir: s.templates_dir.as_deref().map(absolute),
        clock: clock.expect("checked above"),
        data_dir,
        ssh: SshSettings {
            listen: listen.expect("checked above"),
            host_key,
            server_id: s.ssh.server_id,
            login_grace_time: s.ssh.login_grace_time,
            max_auth_tries: s.ssh.max_auth_tries,
            startups: startups.expect("checked above"),
            max_startups_per_address: s.ssh.max_startups_per_address,
            auth_rejection_time: s.ssh.auth_rejection_time,
            idle_timeout: s.ssh.idle_timeout,
            penalties: s.ssh.penalties,
        },
        passwords: s.passwords,
        kdf_workers: if s.kdf.workers == 0 { cores } else { s.kdf.workers },
        kdf_queue: s.kdf.queue,
        event_batch: s.events.batch,
        web: WebSettings {
            listen: web_listen.expect("checked above"),
            base_url,
            cert: web_cert,
            key: web_key,
            cert_configured: s.web.tls_cert.is_some(),
            metrics_token: s.web.metrics_token,
            metrics_from_loopback: s.web.metrics_from_loopback,
            max_connections: s.web.max_connections,
            max_connections_per_address: s.web.max_connections_per_address,
            http2_idle_timeout: s.web.http2_idle_timeout,
            http2_max_age: s.web.http2_max_age,
            http1_idle_timeout: s.web.http1_idle_timeout,
            descriptor_reserve: s.web.descriptor_reserve,
        },
        email: s.email,
        webauthn: s.webauthn.clone(),
        attestation_ca: s.webauthn.attestation_ca.iter().map(|p| absolute(p)).collect(),
        mfa: MfaSettings {
            issuer: s.mfa.issuer,
            algorithm: algorithm.expect("checked above"),
            digits: s.mfa.digits,
            link_ttl: s.mfa.link_ttl,
            backup_codes: s.mfa.backup_codes,
            tries_per_step: s.mfa.tries_per_step,
            max_consecutive_failures: s.mfa.max_consecutive_failures,
            lockout: s.mfa.lockout,
            max_lockout: s.mfa.max_lockout,
            hotp_lookahead: s.mfa.hotp_lookahead,
        },
        incidents: s.incidents,
        blocks: s.blocks.with_never_block(never_block),
        locks: s.locks,
        detection,
        risk,
        group_levels,
        playbooks_source: playbooks.as_ref().map(|p| p.source.clone()).unwrap_or_default(),
        playbooks: playbooks.map(|p| p.playbooks).unwrap_or_default(),
        webhooks,
        retention_days: s.retention.events_days,
        export: export.expect("checked above"),
    })
}

/// What `config show` prints for what the file names: paths made
/// absolute, and secrets replaced by `<redacted>` (the SMTP URL's password,
/// the metrics token, webhook secrets and the paths of webhook URLs, which
/// may carry a token).
fn show_resolved(v: &mut serde_json::Value, playbooks: &Option<super::playbooks::PlaybooksKey>, absolute: &dyn Fn(&str) -> PathBuf, data_dir: &Path, host_key: &Path, web_cert: &Path, web_key: &Path) {
    use serde_json::Value;
    const REDACTED: &str = "<redacted>";
    let path = |p: &Path| Value::String(p.display().to_string());
    let resolve_in = |v: &mut Value| {
        if let Some(p) = v.as_str() {
            *v = Value::String(absolute(p).display().to_string());
        }
    };
    v["data_dir"] = path(data_dir);
    resolve_in(&mut v["art_dir"]);
    resolve_in(&mut v["menus"]);
    resolve_in(&mut v["templates_dir"]);
    // Unset, these are made under data_dir on first start (null keeps
    // that meaning; a path would require the file).
    for (section, key, resolved) in [("ssh", "host_key", host_key), ("web", "tls_cert", web_cert), ("web", "tls_key", web_key)] {
        if v[section][key].is_string() {
            v[section][key] = path(resolved);
        }
    }
    if v["web"]["metrics_token"].is_string() {
        v["web"]["metrics_token"] = REDACTED.into();
    }
    if let Some(url) = v["email"]["smtp"].as_str() {
        v["email"]["smtp"] = super::smtp::redact_url(url).replace(":***@", &format!(":{REDACTED}@")).into();
    }
    resolve_in(&mut v["export"]["file"]);
    if let Some(files) = v["webauthn"]["attestation_ca"].as_array_mut() {
        files.iter_mut().for_each(resolve_in);
    }
    if let Some(hooks) = v["webhooks"].as_object_mut() {
        for hook in hooks.values_mut() {
            if hook["secret"].is_string() {
                hook["secret"] = REDACTED.into();
            }
            resolve_in(&mut hook["secret_file"]);
            resolve_in(&mut hook["ca_file"]);
            if let Some(url) = hook["url"].as_str() {
                // Scheme, host and port; a path may hold a token.
                let cut = url.find("://").map(|i| i + 3).and_then(|start| url[start..].find('/').map(|j| start + j));
                if let Some(cut) = cut.filter(|c| *c + 1 < url.len()) {
                    hook["url"] = format!("{}/{REDACTED}", &url[..cut]).into();
                }
            }
        }
    }
    if let (Some(super::playbooks::PlaybooksKey::File(f)), Some(o)) = (playbooks, v.as_object_mut()) {
        o.insert("playbooks".into(), Value::String(absolute(f).display().to_string()));
    }
}

/// One address, without a display name: `local@domain`, no spaces,
/// controls or separators (what a mail header may carry as is).
fn plausible_email(e: &str) -> bool {
    e.len() <= 254
        && e.matches('@').count() == 1
        && e.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.starts_with('.') && !domain.ends_with('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')'))
}

/// `file:line:col: key` for a problem found after loading (by checks that
/// need more than the config, like the menus or the mail gateway), or
/// `file: key` when the key is not in the file. The file is read again.
pub fn locate(settings: &Settings, key: &str) -> String {
    let text = if settings.source == "<built-in>" { Some(DEFAULT_CONFIG.to_owned()) } else { std::fs::read_to_string(&settings.source).ok() };
    match text.as_deref().and_then(|t| super::hjson::position_of(t, key)) {
        Some((line, col)) => format!("{}:{line}:{col}: {key}", settings.source),
        None => format!("{}: {key}", settings.source),
    }
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn parse_max_startups(text: &str) -> Result<MaxStartups, String> {
    let bad = || format!("invalid value {text:?}: expected \"start:rate:full\" like \"10:30:100\" (start <= full, rate <= 100)");
    let parts: Vec<&str> = text.split(':').collect();
    let nums: Vec<u32> = parts.iter().map(|p| p.trim().parse::<u32>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    let m = match nums.as_slice() {
        [full] => MaxStartups { start: *full, rate: 100, full: *full },
        [start, rate, full] => MaxStartups { start: *start, rate: *rate, full: *full },
        _ => return Err(bad()),
    };
    if m.start == 0 || m.start > m.full || m.rate > 100 {
        return Err(bad());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Settings, Vec<String>> {
        from_text(text, "portcullis.hjson", Path::new("/etc/portcullis"))
    }

    #[test]
    fn shipped_config_parses_and_matches_defaults() {
        let shipped = check(DEFAULT_CONFIG).expect("shipped config must load");
        let empty = check("{}").expect("empty config must load");
        assert_eq!(shipped.ssh.listen, empty.ssh.listen);
        assert_eq!(shipped.ssh.listen.to_string(), "127.0.0.1:2222");
        assert_eq!(shipped.passwords.iterations, 600_000);
        assert_eq!(shipped.data_dir, PathBuf::from("/etc/data"));
        assert_eq!(empty.data_dir, PathBuf::from("/etc/portcullis/data"));
        assert_eq!(shipped.ssh.startups, MaxStartups { start: 10, rate: 30, full: 100 });
        assert_eq!(shipped.ssh.login_grace_time, Duration::from_secs(120));
        assert_eq!(format!("{:?}", shipped.detection), format!("{:?}", empty.detection), "the shipped detection section is the defaults");
        assert_eq!(format!("{:?}", shipped.risk), format!("{:?}", empty.risk), "the shipped risk section is the defaults");
    }

    #[test]
    fn relative_paths_follow_the_config_folder() {
        let s = check("data_dir: state\nart_dir: ../art\nssh: {\n  host_key: /keys/host\n}").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.data_dir, PathBuf::from("/etc/portcullis/state"));
        assert_eq!(s.art_dir, Some(PathBuf::from("/etc/art")));
        assert_eq!(s.ssh.host_key, PathBuf::from("/keys/host"));
        let s = check("{}").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.ssh.host_key, PathBuf::from("/etc/portcullis/data/ssh_host_ed25519_key"));
    }

    #[test]
    fn ipv6_prefix_and_max_lockout_have_defaults_and_take_wider_values() {
        let s = check("{}").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.ssh.penalties.ipv6_prefix, 64);
        assert_eq!(s.mfa.max_lockout, Duration::from_secs(86_400));
        for p in [16u8, 48, 56, 64] {
            let s = check(&format!("ssh: {{\n  penalties: {{\n    ipv6_prefix: {p}\n  }}\n}}\n")).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(s.ssh.penalties.ipv6_prefix, p);
        }
    }

    #[test]
    fn config_errors_name_file_line_column_and_key() {
        let cases: &[(&str, &str)] = &[
            ("ssh: {\n  listn: \"127.0.0.1:22\"\n}\n",
             "portcullis.hjson:2:3: ssh.listn: unknown field \"listn\", expected one of \"listen\", \"host_key\", \"server_id\", \"login_grace_time\", \"max_auth_tries\", \"max_startups\", \"max_startups_per_address\", \"auth_rejection_time\", \"idle_timeout\", \"penalties\""),
            ("ssh: {\n  login_grace_time: 2 minutes\n}\n",
             "portcullis.hjson:2:21: ssh.login_grace_time: invalid duration \"2 minutes\": expected a number and a unit, like \"30s\", \"15m\", \"2h\" or \"7d\""),
            ("ssh: {\n  listen: \"localhost\"\n}\n",
             "portcullis.hjson:2:3: ssh.listen: invalid address \"localhost\": expected IP:PORT like \"127.0.0.1:2222\""),
            ("ssh: {\n  max_auth_tries: 70000000000\n}\n",
             "portcullis.hjson:2:19: ssh.max_auth_tries: integer 70000000000 is out of range for u32"),
            ("passwords: {\n  iterations: 10\n}\n",
             "portcullis.hjson:2:3: passwords.iterations: must be at least 1000"),
            ("ssh: {\n  max_startups: \"30:10\"\n}\n",
             "portcullis.hjson:2:3: ssh.max_startups: invalid value \"30:10\": expected \"start:rate:full\" like \"10:30:100\" (start <= full, rate <= 100)"),
            ("ssh: {\n  penalties: {\n    max_failures: x\n  }\n}\n",
             "portcullis.hjson:3:19: ssh.penalties.max_failures: invalid type: string \"x\", expected u32"),
            ("ssh: {\n  penalties: { window: \"5m\",\n  max_failures: x }\n}\n",
             "portcullis.hjson:5:1: unexpected end of input, expected '}' to close the object at 1:6"),
            ("ssh: {\n  listen: \"127.0.0.1:2222\"\n",
             "portcullis.hjson:3:1: unexpected end of input, expected '}' to close the object at 1:6"),
            ("ssh: {\n  penalties: {\n    ipv6_prefix: 65\n  }\n}\n",
             "portcullis.hjson:3:5: ssh.penalties.ipv6_prefix: must be between 16 and 64 (a longer prefix would let one host escape its penalty)"),
            ("ssh: {\n  penalties: {\n    ipv6_prefix: 8\n  }\n}\n",
             "portcullis.hjson:3:5: ssh.penalties.ipv6_prefix: must be between 16 and 64 (a longer prefix would let one host escape its penalty)"),
            ("mfa: {\n  lockout: 2h\n  max_lockout: 1h\n}\n",
             "portcullis.hjson:3:3: mfa.max_lockout: must be at least mfa.lockout"),
            ("web: {\n  max_connections_per_address: 0\n}\n",
             "portcullis.hjson:2:3: web.max_connections_per_address: must be at least 1"),
            ("web: {\n  http2_idle_timeout: 0s\n}\n",
             "portcullis.hjson:2:3: web.http2_idle_timeout: must be longer than 0s"),
            ("incidents: {\n  notify: [\"sysop@example.org\", \"not an address\"]\n}\n",
             "portcullis.hjson:2:3: incidents.notify: invalid email address \"not an address\": expected one like \"sysop@example.org\""),
            ("incidents: {\n  notify: sysop@example.org\n}\n",
             "portcullis.hjson:2:11: incidents.notify: invalid type: string \"sysop@example.org\", expected a sequence"),
            ("incidents: {\n  notfy: []\n}\n",
             "portcullis.hjson:2:3: incidents.notfy: unknown field \"notfy\", expected \"notify\""),
            ("web: {\n  descriptor_reserve: -1\n}\n",
             "portcullis.hjson:2:23: web.descriptor_reserve: integer -1 is out of range for u64"),
            ("locks: {\n  max_duration: 90d\n}\n",
             "portcullis.hjson:2:3: locks.max_duration: must be between 1m and 30d (a rule lock is bounded; the sysop locks for longer)"),
            ("locks: {\n  known_address_days: 0\n}\n",
             "portcullis.hjson:2:3: locks.known_address_days: must be between 1 and 365"),
            ("timezone: Mars/Olympus\n",
             "portcullis.hjson:1:1: timezone: unknown time zone \"Mars/Olympus\": expected an IANA name such as \"Europe/Stockholm\", \"America/New_York\" or \"UTC\""),
            ("locks: {\n  max_duration: forever\n}\n",
             "portcullis.hjson:2:17: locks.max_duration: invalid duration \"forever\": a unit needs a number before it"),
        ];
        for (text, want) in cases {
            match check(text) {
                Ok(_) => panic!("config {text:?} should fail"),
                Err(errors) => assert_eq!(errors.join("\n"), *want, "config {text:?}"),
            }
        }
    }

    #[test]
    fn attestation_roots_follow_the_config_folder() {
        let s = check("webauthn: {\n  attestation_ca: [\"roots.pem\", \"/usr/share/keys/yubico.pem\"]\n}\n").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.attestation_ca, vec![PathBuf::from("/etc/portcullis/roots.pem"), PathBuf::from("/usr/share/keys/yubico.pem")]);
        assert!(check("{}").unwrap().attestation_ca.is_empty());
    }

    #[test]
    fn blocks_have_defaults_and_checked_values() {
        let s = check("{}").unwrap_or_else(|e| panic!("{e:?}"));
        let want = BlockSettings {
            first: Duration::from_secs(1800),
            max: Duration::from_secs(86_400),
            repeat_window: Duration::from_secs(7 * 86_400),
            recidive_after: 5,
            recidive_window: Duration::from_secs(86_400),
            recidive: Duration::from_secs(7 * 86_400),
            never_block: vec![],
        };
        assert_eq!(s.blocks, want);
        assert_eq!(check(DEFAULT_CONFIG).expect("shipped").blocks, want, "the shipped config holds the defaults");
        let s = check("blocks: {\n  never_block: [\"127.0.0.0/8\", \"::1\", \"::ffff:192.0.2.7\"]\n}\n").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.blocks.never_block.iter().map(|n| n.to_string()).collect::<Vec<_>>(), vec!["127.0.0.0/8", "::1", "192.0.2.7"]);
        let cases: &[(&str, &str)] = &[
            ("blocks: {\n  never_block: [\"127.0.0.1/8\"]\n}\n",
             "portcullis.hjson:2:3: blocks.never_block: invalid network \"127.0.0.1/8\": host bits are set (the network is 127.0.0.0/8)"),
            ("blocks: {\n  never_block: [\"localhost\"]\n}\n",
             "portcullis.hjson:2:3: blocks.never_block: invalid address \"localhost\": expected an IPv4 or IPv6 address, optionally with /BITS, like 192.0.2.7, 192.0.2.0/24 or 2001:db8::/64"),
            ("blocks: {\n  never_block: 127.0.0.1\n}\n",
             "portcullis.hjson:2:16: blocks.never_block: invalid type: string \"127.0.0.1\", expected a sequence"),
            ("blocks: {\n  first: 2h\n  max: 1h\n}\n",
             "portcullis.hjson:3:3: blocks.max: must be at least blocks.first"),
            ("blocks: {\n  first: 0s\n}\n",
             "portcullis.hjson:2:3: blocks.first: must be longer than 0s"),
            ("blocks: {\n  recidive_after: 0\n}\n",
             "portcullis.hjson:2:3: blocks.recidive_after: must be at least 1"),
            ("webauthn: {\n  approval_ttl: 5s\n}\n",
             "portcullis.hjson:2:3: webauthn.approval_ttl: must be between 30s and 10m"),
            ("webauthn: {\n  trust_device_for: 100d\n}\n",
             "portcullis.hjson:2:3: webauthn.trust_device_for: must be at most 90d"),
            ("webauthn: {\n  enroll_grace: maybe\n}\n",
             "portcullis.hjson:2:17: webauthn.enroll_grace: invalid type: string \"maybe\", expected a boolean"),
            ("blocks: {\n  recidve: 7d\n}\n",
             "portcullis.hjson:2:3: blocks.recidve: unknown field \"recidve\", expected one of \"first\", \"max\", \"repeat_window\", \"recidive_after\", \"recidive_window\", \"recidive\", \"never_block\""),
        ];
        for (text, want) in cases {
            match check(text) {
                Ok(_) => panic!("config {text:?} should fail"),
                Err(errors) => assert_eq!(errors.join("\n"), *want, "config {text:?}"),
            }
        }
    }

    #[test]
    fn problems_in_different_sections_are_all_listed() {
        let errors = check("ssh: {\n  listn: x\n}\npasswords: {\n  iterations: lots\n}\nbogus: 1\n").unwrap_err();
        assert_eq!(
            errors,
            vec![
                "portcullis.hjson:2:3: ssh.listn: unknown field \"listn\", expected one of \"listen\", \"host_key\", \"server_id\", \"login_grace_time\", \"max_auth_tries\", \"max_startups\", \"max_startups_per_address\", \"auth_rejection_time\", \"idle_timeout\", \"penalties\"".to_string(),
                "portcullis.hjson:5:15: passwords.iterations: invalid type: string \"lots\", expected u32".to_string(),
                "portcullis.hjson:7:1: bogus: unknown field \"bogus\", expected one of \"data_dir\", \"art_dir\", \"menus\", \"templates_dir\", \"timezone\", \"ssh\", \"passwords\", \"kdf\", \"events\", \"web\", \"email\", \"mfa\", \"webauthn\", \"incidents\", \"blocks\", \"locks\", \"detection\", \"risk\", \"groups\", \"playbooks\", \"webhooks\", \"retention\", \"export\"".to_string(),
            ]
        );
    }

    #[test]
    fn cross_field_problems_carry_positions_and_are_listed_with_the_rest() {
        let errors = check("passwords: {\n  iterations: 10\n}\nemail: {\n  smtp: \"smtp://u:hunter2pw@mail.example.org:25\"\n}\n").unwrap_err();
        assert_eq!(
            errors,
            vec![
                "portcullis.hjson:2:3: passwords.iterations: must be at least 1000".to_string(),
                "portcullis.hjson:5:3: email.smtp: smtp url \"smtp://u:***@mail.example.org:25\" would send mail unencrypted to mail.example.org; use smtps:// or ?tls=required, or set allow_plaintext".to_string(),
            ]
        );
        let ok = check("email: {\n  smtp: \"smtp://mail.example.org:25\"\n  allow_plaintext: true\n}\n");
        assert!(ok.is_ok(), "{ok:?}");
        let errors = check("web: {\n  tls_key: /k.pem\n}\nemail: {\n  smtp: \"ftp://x\"\n}\n").unwrap_err();
        assert_eq!(
            errors,
            vec![
                "portcullis.hjson:2:3: web.tls_key: tls_cert and tls_key must be set together".to_string(),
                "portcullis.hjson:5:3: email.smtp: smtp url \"ftp://x\" has unknown scheme \"ftp\" (expected smtp or smtps)".to_string(),
            ]
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = check("web: {\n  metrics_token: token-value-0123456789\n}\nemail: {\n  smtp: \"smtp://u:hunter2pw@127.0.0.1:25\"\n}\n").unwrap_or_else(|e| panic!("{e:?}"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("token-value") && !shown.contains("hunter2pw"), "{shown}");
    }

    #[test]
    fn webhooks_and_playbooks_are_checked_with_positions() {
        let hook = |body: &str| format!("webhooks: {{\n  ops: {{\n{body}  }}\n}}\n");
        let cases: Vec<(String, &str)> = vec![
            (hook("    url: \"http://hooks.example.org/x\"\n    secret: 0123456789abcdef\n"),
             "portcullis.hjson:3:5: webhooks.ops.url: webhook url is plain http:// to hooks.example.org, which is not a loopback address: use https:// (http:// is allowed only to 127.0.0.0/8, ::1 and localhost, where nothing crosses a network)"),
            (hook("    url: \"https://hooks.example.org/x\"\n"),
             "portcullis.hjson:2:3: webhooks.ops: needs a secret (or secret_file): the receiver checks the HMAC signature with it"),
            (hook("    url: \"https://hooks.example.org/x\"\n    secret: short\n"),
             "portcullis.hjson:4:5: webhooks.ops.secret: the secret must be at least 16 characters"),
            (hook("    url: \"https://hooks.example.org/x\"\n    secret: 0123456789abcdef\n    preset: teams\n"),
             "portcullis.hjson:5:5: webhooks.ops.preset: unknown preset \"teams\": use \"json\" or \"slack\""),
            (hook("    url: \"https://hooks.example.org/x\"\n    secret: 0123456789abcdef\n    timeout: 10 seconds\n"),
             "portcullis.hjson:5:14: webhooks.ops.timeout: invalid duration \"10 seconds\": expected a number and a unit, like \"30s\", \"15m\", \"2h\" or \"7d\""),
            (hook("    url: \"https://hooks.example.org/x\"\n    sekret: 0123456789abcdef\n"),
             "portcullis.hjson:4:5: webhooks.ops.sekret: unknown field \"sekret\", expected one of \"url\", \"secret\", \"secret_file\", \"preset\", \"timeout\", \"retry_base\", \"retry_max\", \"max_attempts\", \"ca_file\""),
            (hook("    url: \"https://hooks.example.org/x\"\n    secret: 0123456789abcdef\n    secret_file: ops.secret\n"),
             "portcullis.hjson:5:5: webhooks.ops.secret_file: set secret or secret_file, not both"),
            ("playbooks: [\n  {\n    name: p\n    when: { incident_type: \"manual\" }\n    actions: [\n      { webhook: \"ops\" }\n    ]\n  }\n]\n".to_owned(),
             "portcullis.hjson:6:9: playbooks[0].actions[0].webhook: no webhook named \"ops\" under webhooks: (defined: none)"),
        ];
        for (text, want) in &cases {
            match check(text) {
                Ok(_) => panic!("config {text:?} should fail"),
                Err(errors) => assert_eq!(errors.join("\n"), *want, "config {text:?}"),
            }
        }
        let text = format!("{}playbooks: [\n  {{\n    name: p\n    when: {{ incident_type: \"manual\" }}\n    actions: [\n      {{ webhook: \"ops\" }}\n    ]\n  }}\n]\n", hook("    url: \"http://127.0.0.1:8080/hook\"\n    secret: 0123456789abcdef\n    preset: slack\n"));
        let s = check(&text).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.webhooks["ops"].url.port, 8080);
        assert_eq!(s.playbooks.len(), 1);
        assert_eq!(s.playbooks_source, "portcullis.hjson");
        // No `playbooks` key: the built-in ones; `playbooks: []`: none.
        let s = check("{}").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((s.playbooks.len(), s.playbooks_source.as_str()), (6, "playbooks.hjson (built-in)"));
        assert!(check("playbooks: []\n").unwrap_or_else(|e| panic!("{e:?}")).playbooks.is_empty());
        assert_eq!(check(DEFAULT_CONFIG).unwrap_or_else(|e| panic!("{e:?}")).playbooks, s.playbooks, "the shipped config keeps the defaults");
    }

    #[test]
    fn retention_and_export_have_defaults_and_checked_values() {
        let s = check("{}").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.retention_days, 365);
        let want = super::super::export::ExportSettings { file: None, syslog: None, facility: 10, hostname: None, chain_head_every: 1000, queue: 10_000, log_logins: true };
        assert_eq!(s.export, want);
        let shipped = check(DEFAULT_CONFIG).expect("shipped");
        assert_eq!((shipped.retention_days, &shipped.export), (365, &want), "the shipped config holds the defaults");
        let s = check("retention: {\n  events_days: 0\n}\nexport: {\n  file: log/events.jsonl\n  syslog: \"tcp://127.0.0.1:601\"\n  facility: local3\n  hostname: gate-1\n  chain_head_every: 10\n}\n").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.retention_days, 0);
        assert_eq!(s.export.file, Some(PathBuf::from("/etc/portcullis/log/events.jsonl")));
        assert_eq!(s.export.syslog, Some(super::super::export::SyslogTarget::Tcp("127.0.0.1:601".into())));
        assert_eq!((s.export.facility, s.export.hostname.as_deref(), s.export.chain_head_every), (19, Some("gate-1"), 10));
        let cases: &[(&str, &str)] = &[
            ("retention: {\n  events_days: 40000\n}\n",
             "portcullis.hjson:2:3: retention.events_days: must be at most 36500 (0 keeps every event)"),
            ("retention: {\n  events_days: -1\n}\n",
             "portcullis.hjson:2:16: retention.events_days: integer -1 is out of range for u32"),
            ("retention: {\n  days: 30\n}\n",
             "portcullis.hjson:2:3: retention.days: unknown field \"days\", expected \"events_days\""),
            ("export: {\n  syslog: \"udp://127.0.0.1\"\n}\n",
             "portcullis.hjson:2:3: export.syslog: invalid syslog target \"udp://127.0.0.1\": needs a port, like \"udp://127.0.0.1:514\""),
            ("export: {\n  syslog: \"https://logs.example.org\"\n}\n",
             "portcullis.hjson:2:3: export.syslog: invalid syslog target \"https://logs.example.org\": expected \"udp://HOST:PORT\", \"tcp://HOST:PORT\" or \"unix:/dev/log\""),
            ("export: {\n  facility: security\n}\n",
             "portcullis.hjson:2:3: export.facility: unknown facility \"security\": use one of kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, local0, local1, local2, local3, local4, local5, local6, local7"),
            ("export: {\n  hostname: \"my gate\"\n}\n",
             "portcullis.hjson:2:3: export.hostname: must be 1-255 printable ASCII characters without spaces (RFC 5424 HOSTNAME)"),
            ("export: {\n  chain_head_every: 0\n  queue: 0\n}\n",
             "portcullis.hjson:2:3: export.chain_head_every: must be at least 1\nportcullis.hjson:3:3: export.queue: must be at least 1"),
            ("export: {\n  file: \"\"\n}\n",
             "portcullis.hjson:2:3: export.file: must name a file"),
            ("export: {\n  sylog: \"udp://127.0.0.1:514\"\n}\n",
             "portcullis.hjson:2:3: export.sylog: unknown field \"sylog\", expected one of \"file\", \"syslog\", \"facility\", \"hostname\", \"chain_head_every\", \"queue\", \"log_logins\""),
        ];
        for (text, want) in cases {
            match check(text) {
                Ok(_) => panic!("config {text:?} should fail"),
                Err(errors) => assert_eq!(errors.join("\n"), *want, "config {text:?}"),
            }
        }
    }

    #[test]
    fn every_problem_is_listed() {
        let errors = check("ssh: {\n  listen: nowhere\n  max_auth_tries: 0\n}\npasswords: {\n  min_strength: 9\n}\n").unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
    }
}
