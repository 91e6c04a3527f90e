//! Syslog records in RFC 5424 and their transports: UDP (one record per
//! datagram), TCP (octet-counting frames, RFC 6587 §3.4.1: `LEN SP
//! RECORD`) and a Unix datagram socket (`/dev/log`).
//!
//! A record: `<PRI>1 TIMESTAMP HOSTNAME portcullis PROCID MSGID [SD] MSG`.
//! PRI is the facility times 8 plus the severity: `info` 6
//! (informational), `low` 5 (notice), `medium` 4 (warning), `high` 3
//! (error), `critical` 2 (critical); an event of the `suspicious` category
//! or marked suspicious is at least 4 (warning). MSGID is the event type
//! (`chain_head` for the chain's head). One SD-ELEMENT, `portcullis@32473`
//! (32473 is the enterprise number RFC 5612 reserves for documentation:
//! Portcullis has none of its own), carries the main fields; a value is the
//! text as a terminal shows it (`escape_control`), with `"`, `\` and `]`
//! escaped as RFC 5424 §6.3.3 asks. MSG is the description, escaped the
//! same way, UTF-8 without a BOM.

use crate::config::export::SyslogTarget;
use crate::model::{escape_control, StoredEvent};
use std::io::Write as _;
use std::time::{Duration, Instant};

/// The SD-ID of our structured data.
pub const SD_ID: &str = "portcullis@32473";
pub const APP_NAME: &str = "portcullis";

/// What every record of this process shares.
#[derive(Debug, Clone)]
pub struct Header {
    pub facility: u8,
    /// PRINTUSASCII, 1-255 characters (`hostname_field`).
    pub hostname: String,
    pub procid: u32,
}

/// The syslog severity of an event (RFC 5424 table 2).
pub fn severity_code(severity: &str, category: &str, suspicious: bool) -> u8 {
    let code = match severity {
        "critical" => 2,
        "high" => 3,
        "medium" => 4,
        "low" => 5,
        _ => 6,
    };
    if suspicious || category == "suspicious" {
        code.min(4)
    } else {
        code
    }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped with a backslash.
pub fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A HOSTNAME field from a system's name: printable US-ASCII without
/// spaces, at most 255 characters; anything else becomes `_`; empty: `-`.
pub fn hostname_field(name: &str) -> String {
    let out: String = name.trim().chars().take(255).map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect();
    if out.is_empty() {
        "-".into()
    } else {
        out
    }
}

fn param(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    out.push_str(&sd_escape(&escape_control(value)));
    out.push('"');
}

fn start(h: &Header, severity: u8, timestamp: &str, msgid: &str) -> String {
    format!("<{}>1 {timestamp} {} {APP_NAME} {} {msgid} [{SD_ID}", u32::from(h.facility) * 8 + u32::from(severity), h.hostname, h.procid)
}

/// The record of one event.
pub fn event_record(h: &Header, e: &StoredEvent) -> String {
    let mut out = start(h, severity_code(&e.severity, &e.category, e.is_suspicious), &e.created_at, &e.event_type);
    param(&mut out, "id", &e.id.to_string());
    param(&mut out, "category", &e.category);
    param(&mut out, "severity", &e.severity);
    if let Some(u) = &e.username {
        param(&mut out, "user", u);
    }
    if let Some(id) = e.user_id {
        param(&mut out, "user_id", &id.to_string());
    }
    if let Some(ip) = &e.ip {
        param(&mut out, "ip", ip);
    }
    for key in ["method", "reason", "protocol"] {
        if let Some(v) = e.details.get(key).and_then(|v| v.as_str()) {
            param(&mut out, key, v);
        }
    }
    if let Some(id) = e.session_id {
        param(&mut out, "session_id", &id.to_string());
    }
    if let Some(id) = e.device_id {
        param(&mut out, "device_id", &id.to_string());
    }
    param(&mut out, "risk_score", &e.risk_score.to_string());
    param(&mut out, "suspicious", if e.is_suspicious { "true" } else { "false" });
    out.push_str("] ");
    out.push_str(&escape_control(&e.description));
    out
}

/// The record of the chain's head at event `id`.
pub fn chain_head_record(h: &Header, id: i64, hash_hex: &str, timestamp: &str) -> String {
    let mut out = start(h, 6, timestamp, "chain_head");
    param(&mut out, "id", &id.to_string());
    param(&mut out, "hash", hash_hex);
    out.push_str("] ");
    out.push_str(&format!("event chain head: #{id} sha256 {hash_hex}"));
    out
}

/// An open connection to the target.
enum Conn {
    Udp(std::net::UdpSocket),
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixDatagram),
}

/// How long a write or a connect may take before the target counts as down.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The wait before the next connection attempt doubles from this...
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// ...up to this.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// One syslog target: connects when needed, drops (and counts) records
/// while it is down, says so in the log once per outage.
pub struct SyslogSink {
    target: SyslogTarget,
    conn: Option<Conn>,
    retry_at: Option<Instant>,
    retry_wait: Duration,
    /// Since when records are dropped (None: up).
    down: Option<Instant>,
    pub sent: u64,
    pub dropped: u64,
    dropped_in_outage: u64,
}

fn resolve(addr: &str) -> std::io::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()?.next().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address"))
}

impl SyslogSink {
    pub fn new(target: SyslogTarget) -> SyslogSink {
        SyslogSink { target, conn: None, retry_at: None, retry_wait: RETRY_FIRST, down: None, sent: 0, dropped: 0, dropped_in_outage: 0 }
    }

    pub fn target(&self) -> &SyslogTarget {
        &self.target
    }

    fn connect(&self) -> std::io::Result<Conn> {
        Ok(match &self.target {
            SyslogTarget::Udp(a) => {
                let addr = resolve(a)?;
                let local: std::net::SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
                let s = std::net::UdpSocket::bind(local)?;
                s.connect(addr)?;
                Conn::Udp(s)
            }
            SyslogTarget::Tcp(a) => {
                let s = std::net::TcpStream::connect_timeout(&resolve(a)?, IO_TIMEOUT)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                s.set_nodelay(true)?;
                Conn::Tcp(s)
            }
            SyslogTarget::Unix(p) => {
                let s = std::os::unix::net::UnixDatagram::unbound()?;
                s.connect(p)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Conn::Unix(s)
            }
        })
    }

    fn write(conn: &mut Conn, record: &str) -> std::io::Result<()> {
        match conn {
            Conn::Udp(s) => s.send(record.as_bytes()).map(|_| ()),
            Conn::Unix(s) => s.send(record.as_bytes()).map(|_| ()),
            Conn::Tcp(s) => {
                let frame = format!("{} {record}", record.len());
                s.write_all(frame.as_bytes())
            }
        }
    }

    /// Sends one record, or drops it (counted) when the target is down.
    pub fn send(&mut self, record: &str) {
        if self.conn.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                self.drop_one();
                return;
            }
            match self.connect() {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    self.failed(&e);
                    self.drop_one();
                    return;
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else { return };
        match Self::write(conn, record) {
            Ok(()) => {
                self.sent += 1;
                self.retry_wait = RETRY_FIRST;
                self.retry_at = None;
                if let Some(since) = self.down.take() {
                    tracing::info!(target_addr = %self.target, dropped = self.dropped_in_outage, down_for_s = since.elapsed().as_secs(), "export: the syslog target is back");
                    self.dropped_in_outage = 0;
                }
            }
            Err(e) => {
                // A UDP socket stays (the receiver may come back at the
                // same address). A stream, and a Unix datagram socket (once
                // connected to a receiver that went away, it stays bound to
                // that dead socket even after a new one binds the path),
                // are reconnected after a wait.
                if matches!(self.conn, Some(Conn::Tcp(_) | Conn::Unix(_))) {
                    self.conn = None;
                }
                self.failed(&e);
                self.drop_one();
            }
        }
    }

    fn drop_one(&mut self) {
        self.dropped += 1;
        self.dropped_in_outage += 1;
    }

    fn failed(&mut self, e: &std::io::Error) {
        if self.conn.is_none() {
            self.retry_at = Some(Instant::now() + self.retry_wait);
            self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
        }
        if self.down.is_none() {
            self.down = Some(Instant::now());
            tracing::warn!(target_addr = %self.target, error = %e, "export: the syslog target is down; its records are dropped (counted) until it is back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header { facility: 10, hostname: "gate".into(), procid: 42 }
    }

    fn event() -> StoredEvent {
        StoredEvent {
            id: 7,
            event_type: "login_failed".into(),
            category: "authentication".into(),
            severity: "low".into(),
            description: "password login failed: bad password".into(),
            is_suspicious: false,
            risk_score: 0,
            created_at: "2026-12-02T08:00:00.123Z".into(),
            user_id: None,
            username: Some("root".into()),
            ip: Some("192.0.2.7".into()),
            device_id: None,
            session_id: None,
            details: serde_json::json!({ "method": "password", "reason": "unknown_user", "protocol": "ssh", "attempt": 1 }),
        }
    }

    #[test]
    fn sd_param_values_escape_quote_backslash_and_bracket() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("a\"b", "a\\\"b"),
            ("a\\b", "a\\\\b"),
            ("a]b", "a\\]b"),
            ("[x]", "[x\\]"),
            ("\"]\\", "\\\"\\]\\\\"),
            ("ünïcode", "ünïcode"),
            ("", ""),
        ];
        for (value, want) in cases {
            assert_eq!(sd_escape(value), *want, "{value:?}");
        }
    }

    #[test]
    fn severities_map_to_syslog_codes() {
        let cases: &[(&str, &str, bool, u8)] = &[
            ("info", "authentication", false, 6),
            ("low", "authentication", false, 5),
            ("medium", "authorization", false, 4),
            ("high", "admin", false, 3),
            ("critical", "admin", false, 2),
            ("info", "suspicious", false, 4),
            ("low", "authentication", true, 4),
            ("critical", "suspicious", true, 2),
        ];
        for (sev, cat, sus, want) in cases {
            assert_eq!(severity_code(sev, cat, *sus), *want, "{sev} {cat} {sus}");
        }
    }

    #[test]
    fn an_event_record_is_rfc5424() {
        let h = header();
        assert_eq!(
            event_record(&h, &event()),
            "<85>1 2026-12-02T08:00:00.123Z gate portcullis 42 login_failed [portcullis@32473 id=\"7\" category=\"authentication\" severity=\"low\" user=\"root\" ip=\"192.0.2.7\" method=\"password\" reason=\"unknown_user\" protocol=\"ssh\" risk_score=\"0\" suspicious=\"false\"] password login failed: bad password"
        );
        // Attacker text: escaped for a terminal, then for SD.
        let mut e = event();
        e.username = Some("x\"] [evil@1 a=\"b\\\x1b[2J\u{202e}".into());
        e.user_id = Some(3);
        e.description = "line\nbreak".into();
        let r = event_record(&h, &e);
        assert!(r.contains(" user=\"x\\\"\\] [evil@1 a=\\\"b\\\\\\\\\\\\x1b[2J\\\\u{202e}\" user_id=\"3\" "), "{r}");
        assert!(r.ends_with("] line\\nbreak"), "{r}");
        assert!(!r.chars().any(|c| c.is_control()), "{r:?}");
        // Local facilities and suspicious events.
        let h = Header { facility: 23, ..header() };
        let mut e = event();
        e.category = "suspicious".into();
        e.severity = "info".into();
        e.event_type = "suspicious_input".into();
        assert!(event_record(&h, &e).starts_with("<188>1 2026-12-02T08:00:00.123Z gate portcullis 42 suspicious_input [portcullis@32473 id=\"7\""));
    }

    #[test]
    fn the_chain_head_record_names_id_and_hash() {
        assert_eq!(
            chain_head_record(&header(), 1000, "ab01", "2026-12-02T08:00:00.000Z"),
            "<86>1 2026-12-02T08:00:00.000Z gate portcullis 42 chain_head [portcullis@32473 id=\"1000\" hash=\"ab01\"] event chain head: #1000 sha256 ab01"
        );
    }

    #[test]
    fn hostnames_become_printable_ascii() {
        let cases: &[(&str, &str)] = &[("gate.example.org\n", "gate.example.org"), ("my gate", "my_gate"), ("", "-"), ("gäte", "g_te")];
        for (name, want) in cases {
            assert_eq!(hostname_field(name), *want, "{name:?}");
        }
    }

    /// A datagram per record over UDP and to a Unix socket (`/dev/log`
    /// style), each record whole.
    #[test]
    fn udp_and_unix_datagrams_carry_one_record_each() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        udp.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let unix = std::os::unix::net::UnixDatagram::bind(&path).expect("bind unix");
        unix.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let record = event_record(&header(), &event());
        let mut buf = vec![0u8; 65_536];
        let mut sink = SyslogSink::new(SyslogTarget::Udp(udp.local_addr().expect("addr").to_string()));
        sink.send(&record);
        sink.send("second");
        let n = udp.recv(&mut buf).expect("recv");
        assert_eq!(std::str::from_utf8(&buf[..n]), Ok(record.as_str()));
        let n = udp.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"second");
        let mut sink = SyslogSink::new(SyslogTarget::Unix(path.clone()));
        sink.send(&record);
        let n = unix.recv(&mut buf).expect("recv");
        assert_eq!(std::str::from_utf8(&buf[..n]), Ok(record.as_str()));
        assert_eq!((sink.sent, sink.dropped), (1, 0));
        drop(unix);
        std::fs::remove_file(&path).expect("remove");
        sink.send(&record);
        assert_eq!((sink.sent, sink.dropped), (1, 1), "no socket there: dropped and counted");
    }

    /// A Unix datagram receiver (syslogd's `/dev/log`) that goes away and
    /// binds the path again gets the records sent after that, once the
    /// wait before the next attempt is over.
    #[test]
    fn a_unix_receiver_that_binds_again_gets_records_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let unix = std::os::unix::net::UnixDatagram::bind(&path).expect("bind unix");
        unix.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = vec![0u8; 4096];
        let mut sink = SyslogSink::new(SyslogTarget::Unix(path.clone()));
        sink.send("before");
        let n = unix.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"before");
        // syslogd restarts: the old socket closes, a new one binds the path.
        drop(unix);
        std::fs::remove_file(&path).expect("remove");
        sink.send("while down");
        assert_eq!((sink.sent, sink.dropped), (1, 1));
        let unix = std::os::unix::net::UnixDatagram::bind(&path).expect("bind unix again");
        unix.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            assert!(Instant::now() < deadline, "no record reached the new receiver: sent {} dropped {}", sink.sent, sink.dropped);
            sink.send("after");
            match unix.recv(&mut buf) {
                Ok(n) => break buf[..n].to_vec(),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("recv: {e}"),
            }
        };
        assert_eq!(got, b"after");
        assert!(sink.down.is_none(), "back up");
        assert_eq!(sink.sent, 2);
    }

    /// Frames over TCP carry their length in octets; a target that is not
    /// there drops records and counts them, and what is sent once it is
    /// back arrives.
    #[test]
    fn tcp_frames_are_octet_counted_and_a_down_target_drops() {
        use std::io::Read as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut sink = SyslogSink::new(SyslogTarget::Tcp(addr.to_string()));
        sink.send("<86>1 - - portcullis - x - ünï");
        sink.send("<86>1 - - portcullis - y - b");
        let (mut conn, _) = listener.accept().expect("accept");
        drop(sink);
        let mut got = String::new();
        conn.read_to_string(&mut got).expect("read");
        assert_eq!(got, "32 <86>1 - - portcullis - x - ünï28 <86>1 - - portcullis - y - b");

        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let gone = free.local_addr().expect("addr");
        drop(free);
        let mut sink = SyslogSink::new(SyslogTarget::Tcp(gone.to_string()));
        sink.send("a");
        sink.send("b");
        assert_eq!((sink.sent, sink.dropped), (0, 2));
        assert!(sink.retry_at.is_some(), "waits before the next attempt");
    }
}
