//! The `retention` and `export` sections: how long events are kept, and
//! where every committed event is streamed (a JSON-lines file, syslog in
//! RFC 5424 over UDP, TCP or a Unix datagram socket). The shape is in
//! `schema.rs`; this file holds the rules and the resolved settings.

use serde::Deserialize;
use std::path::PathBuf;

/// `retention: { events_days }`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Events older than this many days are removed by the daemon's daily
    /// job (incidents and their evidence are kept). 0 keeps every event.
    pub events_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { events_days: 365 }
    }
}

/// The longest retention that may be set (100 years).
pub const MAX_EVENTS_DAYS: u32 = 36_500;

/// `export: { file, syslog, facility, hostname, chain_head_every, queue, log_logins }`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Export {
    /// A file every event is appended to as one JSON line (reopened on
    /// SIGHUP, for logrotate). Relative to the config's folder.
    pub file: Option<String>,
    /// `udp://HOST:PORT`, `tcp://HOST:PORT` (octet-counted frames, RFC
    /// 6587) or `unix:/dev/log` (a datagram socket).
    pub syslog: Option<String>,
    /// The syslog facility of every record.
    pub facility: String,
    /// The HOSTNAME field of syslog records; unset: the system's name.
    pub hostname: Option<String>,
    /// The chain head is written into every stream after this many events.
    pub chain_head_every: u64,
    /// Events handed to the export thread and not yet written at most;
    /// beyond it they are read back from the database.
    pub queue: usize,
    /// Each login success and failure is also one line in the daemon's log.
    pub log_logins: bool,
}

impl Default for Export {
    fn default() -> Self {
        Export { file: None, syslog: None, facility: "authpriv".into(), hostname: None, chain_head_every: 1000, queue: 10_000, log_logins: true }
    }
}

/// Where syslog records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// `host:port`, resolved when connecting.
    Udp(String),
    Tcp(String),
    /// A datagram socket (`/dev/log`).
    Unix(PathBuf),
}

impl std::fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogTarget::Udp(a) => write!(f, "udp://{a}"),
            SyslogTarget::Tcp(a) => write!(f, "tcp://{a}"),
            SyslogTarget::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The resolved `export` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    pub file: Option<PathBuf>,
    pub syslog: Option<SyslogTarget>,
    /// The facility's number (RFC 5424 table 1).
    pub facility: u8,
    pub hostname: Option<String>,
    pub chain_head_every: u64,
    pub queue: usize,
    pub log_logins: bool,
}

/// The facilities by name, with their numbers (RFC 5424 table 1).
pub const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Parses `udp://HOST:PORT`, `tcp://HOST:PORT` or `unix:PATH` (absolute).
pub fn parse_syslog_target(text: &str) -> Result<SyslogTarget, String> {
    let shown = crate::model::escape_control(text);
    if let Some(path) = text.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("invalid syslog target {shown:?}: unix: needs an absolute path, like \"unix:/dev/log\""));
        }
        return Ok(SyslogTarget::Unix(PathBuf::from(path)));
    }
    let (make, rest): (fn(String) -> SyslogTarget, &str) = if let Some(r) = text.strip_prefix("udp://") {
        (SyslogTarget::Udp, r)
    } else if let Some(r) = text.strip_prefix("tcp://") {
        (SyslogTarget::Tcp, r)
    } else {
        return Err(format!("invalid syslog target {shown:?}: expected \"udp://HOST:PORT\", \"tcp://HOST:PORT\" or \"unix:/dev/log\""));
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => return Err(format!("invalid syslog target {shown:?}: needs a port, like \"udp://127.0.0.1:514\"")),
    };
    let port_ok = !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0);
    if !port_ok {
        return Err(format!("invalid syslog target {shown:?}: the port must be a number from 1 to 65535"));
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let host_ok = match bare {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && host.len() <= 253 && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
    };
    if !host_ok {
        return Err(format!("invalid syslog target {shown:?}: expected a host name or address (IPv6 in brackets: \"udp://[::1]:514\")"));
    }
    Ok(make(rest.to_owned()))
}

/// Checks the `export` section; `file` is made absolute by `absolute`.
/// Problems are pushed as `<position>: message`, `at` giving the position.
pub fn resolve(e: Export, absolute: &dyn Fn(&str) -> PathBuf, at: &dyn Fn(&str) -> String, problems: &mut Vec<String>) -> Option<ExportSettings> {
    let before = problems.len();
    if let Some(f) = &e.file {
        if f.is_empty() {
            problems.push(format!("{}: must name a file", at("export.file")));
        }
    }
    let syslog = match e.syslog.as_deref().map(parse_syslog_target) {
        Some(Ok(t)) => Some(t),
        Some(Err(msg)) => {
            problems.push(format!("{}: {msg}", at("export.syslog")));
            None
        }
        None => None,
    };
    let facility = FACILITIES.iter().find(|(n, _)| *n == e.facility).map(|(_, v)| *v);
    if facility.is_none() {
        let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
        problems.push(format!("{}: unknown facility {:?}: use one of {}", at("export.facility"), crate::model::escape_control(&e.facility), names.join(", ")));
    }
    if let Some(h) = &e.hostname {
        // RFC 5424 HOSTNAME: 1-255 printable US-ASCII characters, no space.
        if h.is_empty() || h.len() > 255 || !h.bytes().all(|b| (33..=126).contains(&b)) {
            problems.push(format!("{}: must be 1-255 printable ASCII characters without spaces (RFC 5424 HOSTNAME)", at("export.hostname")));
        }
    }
    if e.chain_head_every == 0 {
        problems.push(format!("{}: must be at least 1", at("export.chain_head_every")));
    }
    if e.queue == 0 {
        problems.push(format!("{}: must be at least 1", at("export.queue")));
    }
    if problems.len() > before {
        return None;
    }
    Some(ExportSettings {
        file: e.file.as_deref().map(absolute),
        syslog,
        facility: facility.unwrap_or(10),
        hostname: e.hostname,
        chain_head_every: e.chain_head_every,
        queue: e.queue,
        log_logins: e.log_logins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_targets_parse_or_say_why_not() {
        let ok: &[(&str, SyslogTarget)] = &[
            ("udp://127.0.0.1:514", SyslogTarget::Udp("127.0.0.1:514".into())),
            ("tcp://logs.example.org:601", SyslogTarget::Tcp("logs.example.org:601".into())),
            ("udp://[::1]:514", SyslogTarget::Udp("[::1]:514".into())),
            ("unix:/dev/log", SyslogTarget::Unix("/dev/log".into())),
        ];
        for (text, want) in ok {
            assert_eq!(parse_syslog_target(text).as_ref(), Ok(want), "{text}");
            assert_eq!(want.to_string(), *text);
        }
        let bad: &[(&str, &str)] = &[
            ("syslog.example.org", "invalid syslog target \"syslog.example.org\": expected \"udp://HOST:PORT\", \"tcp://HOST:PORT\" or \"unix:/dev/log\""),
            ("udp://127.0.0.1", "invalid syslog target \"udp://127.0.0.1\": needs a port, like \"udp://127.0.0.1:514\""),
            ("tcp://127.0.0.1:0", "invalid syslog target \"tcp://127.0.0.1:0\": the port must be a number from 1 to 65535"),
            ("tcp://127.0.0.1:70000", "invalid syslog target \"tcp://127.0.0.1:70000\": the port must be a number from 1 to 65535"),
            ("udp://::1:514", "invalid syslog target \"udp://::1:514\": expected a host name or address (IPv6 in brackets: \"udp://[::1]:514\")"),
            ("udp://:514", "invalid syslog target \"udp://:514\": expected a host name or address (IPv6 in brackets: \"udp://[::1]:514\")"),
            ("unix:dev/log", "invalid syslog target \"unix:dev/log\": unix: needs an absolute path, like \"unix:/dev/log\""),
            ("udp://h\u{1b}st:514", "invalid syslog target \"udp://h\\\\x1bst:514\": expected a host name or address (IPv6 in brackets: \"udp://[::1]:514\")"),
        ];
        for (text, want) in bad {
            assert_eq!(parse_syslog_target(text).unwrap_err(), *want, "{text}");
        }
    }
}
