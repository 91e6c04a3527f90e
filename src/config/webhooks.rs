//! Webhooks (`webhooks: { NAME: { url, secret, preset, timeout } }`): the
//! shape, the URL's rules (https, or http to loopback only) and the
//! resolved settings the webhook worker uses. The secret and the URL's
//! path (a Slack-style URL carries its token there) never reach `Debug`.

use crate::model::Secret;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    crate::model::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// One webhook as written in the config.
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDef {
    /// `https://host[:port]/path`; `http://` only to 127.0.0.0/8, ::1 or localhost.
    pub url: String,
    /// The HMAC-SHA256 key (16+ characters); or `secret_file`, a file
    /// holding it (relative to the config's folder).
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_file: Option<String>,
    /// `json` (an object with the incident's fields) or `slack` (`{"text": ...}`).
    #[serde(default = "default_preset")]
    pub preset: String,
    /// Limit for one delivery (connect, TLS, request, response head).
    #[serde(default = "default_timeout", deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub timeout: Duration,
    /// A failed delivery is retried after `retry_base`, doubling up to
    /// `retry_max`, at most `max_attempts` times.
    #[serde(default = "default_retry_base", deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub retry_base: Duration,
    #[serde(default = "default_retry_max", deserialize_with = "duration", serialize_with = "crate::config::schema::show_duration")]
    pub retry_max: Duration,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// PEM certificates trusted for this receiver instead of the system's
    /// CA bundle (a private CA, or a receiver's own certificate).
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn default_preset() -> String {
    "json".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_base() -> Duration {
    Duration::from_secs(30)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_attempts() -> u32 {
    20
}

impl std::fmt::Debug for WebhookDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookDef")
            .field("url", &shown_url(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| "<secret>"))
            .field("secret_file", &self.secret_file)
            .field("preset", &self.preset)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Json,
    Slack,
}

impl Preset {
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Json => "json",
            Preset::Slack => "slack",
        }
    }
}

/// Where a webhook goes, parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub https: bool,
    /// A host name, or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Starts with `/`; may hold a query. May hold a token: never logged.
    pub path: String,
}

impl WebhookUrl {
    /// `https://host:port/…` — what logs and listings may show.
    pub fn shown(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{}://{host}:{}/…", if self.https { "https" } else { "http" }, self.port)
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// A webhook, resolved.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub name: String,
    pub url: WebhookUrl,
    pub secret: Secret<String>,
    pub preset: Preset,
    pub timeout: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub max_attempts: u32,
    /// Absolute; read (and checked) by the webhook front end.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The URL as a log may show it: scheme, host and port, no path.
fn shown_url(url: &str) -> String {
    parse_url(url).map(|u| u.shown()).unwrap_or_else(|_| "<invalid>".into())
}

/// Whether a host (name or address) is loopback: 127.0.0.0/8, ::1, `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Parses a webhook URL: `https://` (or `http://` to a loopback host), a
/// host name or IP address, an optional port, a path. No user name or
/// password (the signature authenticates the gate), no fragment, no
/// spaces or control characters. Messages never hold the path.
pub fn parse_url(url: &str) -> Result<WebhookUrl, String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        return Err(if scheme.is_empty() { "webhook url must start with https://".to_owned() } else { format!("webhook url has scheme {:?}: use https:// (http:// only to a loopback address)", crate::model::escape_control(scheme)) });
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("webhook url holds a space or a control character".into());
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if tail.contains('#') {
        return Err("webhook url must not have a #fragment".into());
    }
    if authority.contains('@') {
        return Err("webhook url must not hold a user name or password (the HMAC signature authenticates the gate)".into());
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (h, after) = inner.split_once(']').ok_or("webhook url has an unclosed [ in its host")?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("webhook url host [{}] is not an IPv6 address", crate::model::escape_control(h)));
        }
        (h.to_owned(), after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err("webhook url has no host".into());
    }
    if !host.contains(':') && !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
        return Err(format!("webhook url host {:?} is not a host name or IP address", crate::model::escape_control(&host)));
    }
    let port = match port {
        None => if https { 443 } else { 80 },
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("webhook url port {:?} is not a port number (1-65535)", crate::model::escape_control(p))),
        },
    };
    if !https && !is_loopback_host(&host) {
        return Err(format!("webhook url is plain http:// to {host}, which is not a loopback address: use https:// (http:// is allowed only to 127.0.0.0/8, ::1 and localhost, where nothing crosses a network)"));
    }
    let path = if tail.is_empty() { "/".to_owned() } else if tail.starts_with('?') { format!("/{tail}") } else { tail.to_owned() };
    Ok(WebhookUrl { https, host: host.to_lowercase(), port, path })
}

/// Webhook names: letters, digits, `_` and `-` (so they are plain keys).
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Resolves one webhook; `at(key)` gives `file:line:col: key` for messages.
pub fn resolve(name: &str, def: &WebhookDef, folder: &Path, at: &dyn Fn(&str) -> String) -> Result<WebhookSettings, Vec<String>> {
    let key = |k: &str| at(&format!("webhooks.{name}.{k}"));
    let mut problems = Vec::new();
    let url = parse_url(&def.url).map_err(|e| problems.push(format!("{}: {e}", key("url")))).ok();
    let preset = match def.preset.as_str() {
        "json" => Some(Preset::Json),
        "slack" => Some(Preset::Slack),
        other => {
            problems.push(format!("{}: unknown preset {:?}: use \"json\" or \"slack\"", key("preset"), crate::model::escape_control(other)));
            None
        }
    };
    let secret = match (&def.secret, &def.secret_file) {
        (Some(_), Some(_)) => {
            problems.push(format!("{}: set secret or secret_file, not both", key("secret_file")));
            None
        }
        (None, None) => {
            problems.push(format!("{}: needs a secret (or secret_file): the receiver checks the HMAC signature with it", at(&format!("webhooks.{name}"))));
            None
        }
        (Some(s), None) => Some((s.clone(), "secret")),
        (None, Some(f)) => {
            let p = Path::new(f);
            let path = if p.is_absolute() { p.to_path_buf() } else { folder.join(p) };
            match std::fs::read_to_string(&path) {
                Ok(text) => Some((text.trim_end_matches(['\n', '\r']).to_owned(), "secret_file")),
                Err(e) => {
                    problems.push(format!("{}: cannot read {}: {e}", key("secret_file"), path.display()));
                    None
                }
            }
        }
    };
    if let Some((s, which)) = &secret {
        if s.chars().count() < 16 {
            problems.push(format!("{}: the secret must be at least 16 characters", key(which)));
        }
    }
    if def.timeout.is_zero() {
        problems.push(format!("{}: must be longer than 0s", key("timeout")));
    }
    if def.retry_base.is_zero() {
        problems.push(format!("{}: must be longer than 0s", key("retry_base")));
    }
    if def.retry_max < def.retry_base {
        problems.push(format!("{}: must be at least retry_base", key("retry_max")));
    }
    if def.max_attempts == 0 {
        problems.push(format!("{}: must be at least 1", key("max_attempts")));
    }
    match (url, preset, secret) {
        (Some(url), Some(preset), Some((secret, _))) if problems.is_empty() => Ok(WebhookSettings {
            name: name.to_owned(),
            url,
            secret: Secret::new(secret),
            preset,
            timeout: def.timeout,
            retry_base: def.retry_base,
            retry_max: def.retry_max,
            max_attempts: def.max_attempts,
            ca_file: def.ca_file.as_deref().map(|f| {
                let p = Path::new(f);
                if p.is_absolute() { p.to_path_buf() } else { folder.join(p) }
            }),
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok: &[(&str, bool, &str, u16, &str)] = &[
            ("https://hooks.example.org/services/T0/B0/XyZ", true, "hooks.example.org", 443, "/services/T0/B0/XyZ"),
            ("https://Hooks.Example.org:8443", true, "hooks.example.org", 8443, "/"),
            ("https://192.0.2.7/x?y=1", true, "192.0.2.7", 443, "/x?y=1"),
            ("https://[2001:db8::1]:9000/h", true, "2001:db8::1", 9000, "/h"),
            ("http://127.0.0.1:8080/hook", false, "127.0.0.1", 8080, "/hook"),
            ("http://127.3.4.5/hook", false, "127.3.4.5", 80, "/hook"),
            ("http://[::1]:81/", false, "::1", 81, "/"),
            ("http://localhost:9/?a", false, "localhost", 9, "/?a"),
        ];
        for (url, https, host, port, path) in ok {
            let u = parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!((u.https, u.host.as_str(), u.port, u.path.as_str()), (*https, *host, *port, *path), "{url}");
        }
        let bad: &[(&str, &str)] = &[
            ("http://hooks.example.org/x", "webhook url is plain http:// to hooks.example.org, which is not a loopback address: use https:// (http:// is allowed only to 127.0.0.0/8, ::1 and localhost, where nothing crosses a network)"),
            ("http://192.0.2.7:8080/x", "webhook url is plain http:// to 192.0.2.7, which is not a loopback address: use https:// (http:// is allowed only to 127.0.0.0/8, ::1 and localhost, where nothing crosses a network)"),
            ("http://[2001:db8::1]/x", "webhook url is plain http:// to 2001:db8::1, which is not a loopback address: use https:// (http:// is allowed only to 127.0.0.0/8, ::1 and localhost, where nothing crosses a network)"),
            ("http://128.0.0.1/", "webhook url is plain http:// to 128.0.0.1, which is not a loopback address: use https:// (http:// is allowed only to 127.0.0.0/8, ::1 and localhost, where nothing crosses a network)"),
            ("ftp://x/y", "webhook url has scheme \"ftp\": use https:// (http:// only to a loopback address)"),
            ("hooks.example.org/x", "webhook url must start with https://"),
            ("https://user:pw@hooks.example.org/", "webhook url must not hold a user name or password (the HMAC signature authenticates the gate)"),
            ("http://127.0.0.1@evil.example/", "webhook url must not hold a user name or password (the HMAC signature authenticates the gate)"),
            ("https://hooks.example.org/x#frag", "webhook url must not have a #fragment"),
            ("https://hooks.example.org:0/", "webhook url port \"0\" is not a port number (1-65535)"),
            ("https://hooks.example.org:99999/", "webhook url port \"99999\" is not a port number (1-65535)"),
            ("https:///x", "webhook url has no host"),
            ("https://ex_ample.org/", "webhook url host \"ex_ample.org\" is not a host name or IP address"),
            ("https://[nope]/", "webhook url host [nope] is not an IPv6 address"),
            ("https://a.example/ x", "webhook url holds a space or a control character"),
        ];
        for (url, want) in bad {
            assert_eq!(parse_url(url).err().as_deref(), Some(*want), "{url}");
        }
    }

    #[test]
    fn the_path_and_the_secret_stay_out_of_debug() {
        let def: WebhookDef = crate::config::hjson::from_str("url: \"https://hooks.example.org/services/T0/B0/TOKEN123\"\nsecret: s3cret-s3cret-s3cret\n").unwrap();
        let shown = format!("{def:?}");
        assert!(!shown.contains("TOKEN123") && !shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("https://hooks.example.org:443/…"), "{shown}");
        let s = resolve("ops", &def, Path::new("/"), &|k| k.to_owned()).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("TOKEN123") && !shown.contains("s3cret"), "{shown}");
        assert_eq!(s.secret.expose(), "s3cret-s3cret-s3cret");
        assert_eq!((s.preset, s.timeout, s.max_attempts), (Preset::Json, Duration::from_secs(10), 20));
    }
}
