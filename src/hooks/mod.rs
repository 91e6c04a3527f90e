//! Webhook deliveries over HTTP(S), and the worker that drains the durable
//! queue `core::webhooks` keeps.
//!
//! The client is deliberately small: one POST per connection
//! (`Connection: close`), the body signed at send time, only the head of
//! the answer read (at most 16 KiB) and only its status line used; no redirects, no cookies, no proxies. TLS is rustls
//! (aws-lc-rs) with the system's CA bundle (or a webhook's `ca_file`). `http://` goes only to
//! loopback addresses (checked in the config and again on the resolved
//! addresses). Logs carry the delivery id, the webhook's name, its scheme,
//! host and port, the attempt and the error, never the secret, the body or
//! the URL's path (a Slack-style URL carries its token there).

use crate::core::webhooks::{signature, OutgoingWebhook, Retry, DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::core::{drain, Core};
use crate::config::webhooks::WebhookSettings;
use crate::model::Millis;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Deliveries fetched from the queue at a time.
const BATCH: usize = 32;
/// Deliveries tried in one round before the worker sleeps again.
const MAX_PER_ROUND: usize = 512;
/// The most of the answer's head read.
const MAX_HEAD: usize = 16 * 1024;

/// How a delivery went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    pub error: String,
    /// Retrying cannot help (the address is not allowed).
    pub permanent: bool,
}

impl Failure {
    fn transient(error: impl Into<String>) -> Failure {
        Failure { status: None, error: error.into(), permanent: false }
    }
}

/// Sends webhook deliveries.
pub struct Client {
    tls: Result<tokio_rustls::TlsConnector, String>,
}

impl Client {
    /// A client trusting the system's root certificates (for `https://`).
    pub fn new() -> Client {
        Client { tls: system_roots().and_then(connector) }
    }

    /// POSTs one delivery, signed with `timestamp` (Unix seconds); returns
    /// the receiver's 2xx status.
    pub async fn deliver(&self, d: &OutgoingWebhook, timestamp: i64) -> Result<u16, Failure> {
        let w = &d.webhook;
        match tokio::time::timeout(w.timeout, self.post(d, timestamp)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::transient(format!("no answer within {} ms", w.timeout.as_millis()))),
        }
    }

    async fn post(&self, d: &OutgoingWebhook, timestamp: i64) -> Result<u16, Failure> {
        let url = &d.webhook.url;
        let tcp = connect(&url.host, url.port, url.https).await?;
        let request = request_bytes(d, timestamp);
        if url.https {
            // A webhook's own `ca_file` replaces the system's roots.
            let own;
            let tls = match &d.webhook.ca_file {
                Some(path) => {
                    own = read_roots(path).and_then(connector).map_err(Failure::transient)?;
                    &own
                }
                None => self.tls.as_ref().map_err(|e| Failure::transient(e.clone()))?,
            };
            let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                .map_err(|e| Failure { status: None, error: format!("{} is not a name TLS can check: {e}", url.host), permanent: true })?;
            let stream = tls.connect(name, tcp).await.map_err(|e| Failure::transient(format!("TLS with {}: {e}", url.host)))?;
            exchange(stream, &request).await
        } else {
            exchange(tcp, &request).await
        }
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

/// The system's CA bundle, where the common distributions keep it
/// (`SSL_CERT_FILE` first, as OpenSSL reads it).
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Arch, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // Alpine, the BSDs, macOS
];

/// The certificates of a PEM file, as trust anchors.
pub fn read_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: holds no usable certificate", path.display()));
    }
    Ok(roots)
}

fn system_roots() -> Result<rustls::RootCertStore, String> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let mut tried = Vec::new();
    for path in from_env.into_iter().chain(CA_BUNDLES.iter().map(std::path::PathBuf::from)) {
        if path.exists() {
            return read_roots(&path);
        }
        tried.push(path.display().to_string());
    }
    Err(format!("no CA bundle found (tried {}); https webhooks cannot be checked: install ca-certificates or set ca_file", tried.join(", ")))
}

/// rustls (aws-lc-rs), TLS 1.3 and 1.2, trusting `roots`.
fn connector(roots: rustls::RootCertStore) -> Result<tokio_rustls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Problems with the webhooks' `ca_file`s, for `config check` and `serve`.
pub fn check(webhooks: &[WebhookSettings]) -> Vec<(String, String)> {
    webhooks.iter().filter_map(|w| w.ca_file.as_ref().and_then(|p| read_roots(p).err()).map(|e| (format!("webhooks.{}.ca_file", w.name), e))).collect()
}

/// Connects to the first address of `host` that answers. Plain http goes
/// only to loopback addresses, whatever the name resolves to.
async fn connect(host: &str, port: u16, https: bool) -> Result<tokio::net::TcpStream, Failure> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port)).await.map_err(|e| Failure::transient(format!("cannot resolve {host}: {e}")))?.collect();
    if addrs.is_empty() {
        return Err(Failure::transient(format!("{host} has no address")));
    }
    if !https {
        if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(Failure { status: None, error: format!("{host} resolves to {}, which is not loopback: plain http is allowed only to loopback", a.ip()), permanent: true });
        }
    }
    let mut last = String::new();
    for a in &addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    Err(Failure::transient(last))
}

/// The request: headers, then the body exactly as signed.
fn request_bytes(d: &OutgoingWebhook, timestamp: i64) -> Vec<u8> {
    let url = &d.webhook.url;
    let host = if url.host.contains(':') { format!("[{}]", url.host) } else { url.host.clone() };
    let default_port = if url.https { 443 } else { 80 };
    let host_header = if url.port == default_port { host } else { format!("{host}:{}", url.port) };
    let sig = signature(d.webhook.secret.expose(), timestamp, &d.body);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: Portcullis-Webhook/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{TIMESTAMP_HEADER}: {timestamp}\r\n{SIGNATURE_HEADER}: {sig}\r\n{DELIVERY_HEADER}: {}\r\nConnection: close\r\n\r\n",
        url.path,
        env!("CARGO_PKG_VERSION"),
        d.body.len(),
        d.id,
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(d.body.as_bytes());
    out
}

/// Writes the request and reads the status of the answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &[u8]) -> Result<u16, Failure> {
    stream.write_all(request).await.map_err(|e| Failure::transient(format!("sending the request: {e}")))?;
    stream.flush().await.map_err(|e| Failure::transient(format!("sending the request: {e}")))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        match parse_status(&buf) {
            Head::Status(code, reason) if (200..300).contains(&code) => {
                let _ = stream.shutdown().await;
                let _ = reason;
                return Ok(code);
            }
            Head::Status(code, reason) => {
                let redirect = if (300..400).contains(&code) { " (redirects are not followed)" } else { "" };
                return Err(Failure { status: Some(code), error: format!("the receiver answered {code} {reason}{redirect}"), permanent: false });
            }
            Head::Informational(len) => {
                buf.drain(..len);
                continue;
            }
            Head::Invalid(why) => return Err(Failure::transient(format!("the receiver's answer is not HTTP/1.1: {why}"))),
            Head::Partial if buf.len() >= MAX_HEAD => return Err(Failure::transient(format!("the receiver's answer head is longer than {MAX_HEAD} bytes"))),
            Head::Partial => {}
        }
        let n = stream.read(&mut chunk).await.map_err(|e| Failure::transient(format!("reading the answer: {e}")))?;
        if n == 0 {
            return Err(Failure::transient(if buf.is_empty() { "the receiver closed the connection without answering".to_owned() } else { "the receiver closed the connection in the middle of its answer".to_owned() }));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Head {
    Partial,
    /// A 1xx head of this many bytes: another answer follows.
    Informational(usize),
    /// The status and its reason phrase (escaped, at most 80 characters).
    Status(u16, String),
    Invalid(String),
}

/// Reads the status line, `HTTP/1.x DDD reason` (RFC 9112 §4); only its
/// code is used. An interim 1xx answer is skipped whole (to its blank line).
fn parse_status(buf: &[u8]) -> Head {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Head::Partial;
    };
    let bad = || Head::Invalid("not an HTTP/1.x status line".into());
    let line = &buf[..end];
    let Some(rest) = line.strip_prefix(b"HTTP/1.") else { return bad() };
    let (code, reason) = match rest {
        [minor, b' ', a, b, c, tail @ ..] if minor.is_ascii_digit() && [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
            match tail {
                [] => (code, &b""[..]),
                [b' ', reason @ ..] => (code, reason),
                _ => return bad(),
            }
        }
        _ => return bad(),
    };
    if !(100..600).contains(&code) {
        return bad();
    }
    if (100..200).contains(&code) && code != 101 {
        return match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) => Head::Informational(i + 4),
            None => Head::Partial,
        };
    }
    let reason: String = crate::model::escape_control(&String::from_utf8_lossy(reason)).chars().take(80).collect();
    Head::Status(code, reason)
}

/// Runs until `shutdown` turns true (or its sender is dropped): every
/// `poll`, or at once when `wake` is notified, sends every due delivery
/// (oldest first), each marked sent or failed with its next attempt (core
/// decides the backoff and when to give up). A failure of one delivery
/// does not stop the others.
pub async fn run_worker(core: Arc<Core>, wake: Arc<tokio::sync::Notify>, shutdown: tokio::sync::watch::Receiver<bool>, poll: Duration) {
    let client = Client::new();
    if let Err(e) = &client.tls {
        if core.webhooks().iter().any(|w| w.url.https) {
            tracing::warn!(error = %e, "webhook worker: https deliveries will fail");
        }
    }
    tracing::info!(webhooks = core.webhooks().len(), "webhook worker started");
    let queue = Deliveries { client, core };
    drain::run(&queue, drain::Limits { batch: BATCH, max_per_round: MAX_PER_ROUND }, &wake, shutdown, poll).await;
    tracing::info!("webhook worker stopped");
}

/// The delivery queue as the worker drains it.
struct Deliveries {
    client: Client,
    core: Arc<Core>,
}

impl drain::Queue for Deliveries {
    type Item = OutgoingWebhook;

    fn id(d: &OutgoingWebhook) -> i64 {
        d.id
    }

    async fn due(&self, n: usize) -> Option<Vec<OutgoingWebhook>> {
        let c = Arc::clone(&self.core);
        match tokio::task::spawn_blocking(move || c.due_webhooks(Millis::now(), n)).await {
            Ok(Ok(d)) => Some(d),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "webhook queue: cannot read due deliveries");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook queue: the read failed");
                None
            }
        }
    }

    async fn send(&self, d: &OutgoingWebhook) {
        send_one(&self.client, &self.core, d).await
    }
}

async fn send_one(client: &Client, core: &Arc<Core>, d: &OutgoingWebhook) {
    let (id, name, to, attempt) = (d.id, d.webhook.name.clone(), d.webhook.url.shown(), d.attempts.saturating_add(1));
    let now = Millis::now();
    match client.deliver(d, now.0.div_euclid(1000)).await {
        Ok(status) => {
            tracing::info!(id, webhook = %name, to = %to, attempt, status, "webhook delivered");
            let c = Arc::clone(core);
            let done = tokio::task::spawn_blocking(move || c.webhook_sent(id, status, Millis::now())).await;
            if !matches!(done, Ok(Ok(()))) {
                tracing::warn!(id, webhook = %name, "webhook queue: the delivery was made but not recorded; it may be sent again");
            }
        }
        Err(f) => match core.webhook_failed(d, f.status, &f.error, f.permanent, Millis::now()).await {
            Ok(Retry::At(t)) => tracing::warn!(id, webhook = %name, to = %to, attempt, status = ?f.status, error = %f.error, retry_at = %t.rfc3339(), "webhook not delivered, will retry"),
            Ok(Retry::GaveUp) => tracing::warn!(id, webhook = %name, to = %to, attempt, status = ?f.status, error = %f.error, "webhook not delivered, giving up"),
            Err(e) => tracing::warn!(id, webhook = %name, error = %e, "webhook queue: the failure was not recorded"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::webhooks::{parse_url, Preset, WebhookSettings};
    use crate::model::Secret;

    fn delivery(url: &str) -> OutgoingWebhook {
        OutgoingWebhook {
            id: 7,
            webhook: WebhookSettings {
                name: "ops".into(),
                url: parse_url(url).expect("url"),
                secret: Secret::new("whsec-0123456789abcdef".into()),
                preset: Preset::Json,
                timeout: Duration::from_secs(5),
                retry_base: Duration::from_secs(1),
                retry_max: Duration::from_secs(2),
                max_attempts: 3,
                ca_file: None,
            },
            body: r#"{"event":"test"}"#.into(),
            attempts: 0,
            incident_id: None,
            playbook: None,
        }
    }

    #[test]
    fn the_request_is_signed_over_timestamp_and_body() {
        let req = String::from_utf8(request_bytes(&delivery("http://127.0.0.1:8080/hook?x=1"), 1_700_000_000)).unwrap();
        let (head, body) = req.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, r#"{"event":"test"}"#);
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "POST /hook?x=1 HTTP/1.1");
        assert!(lines.contains(&"Host: 127.0.0.1:8080"), "{lines:?}");
        assert!(lines.contains(&"Content-Length: 16"), "{lines:?}");
        assert!(lines.contains(&"X-Portcullis-Timestamp: 1700000000"), "{lines:?}");
        // The same vector as core::webhooks' test (openssl dgst -hmac).
        assert!(lines.contains(&"X-Portcullis-Signature: sha256=b988d128e149191238e2483bda5f6b7b6b6120fd7e9e5b2833656e1b7a269bea"), "{lines:?}");
        assert!(lines.contains(&"X-Portcullis-Delivery: 7"), "{lines:?}");
        assert!(!req.contains("whsec-"), "the secret is not sent");
        let req = String::from_utf8(request_bytes(&delivery("https://[2001:db8::1]/"), 1)).unwrap();
        assert!(req.contains("\r\nHost: [2001:db8::1]\r\n"), "{req}");
    }

    #[test]
    fn answers_are_read_by_their_status_line() {
        let cases: &[(&[u8], Head)] = &[
            (b"HTTP/1.1 200 OK\r\n\r\n", Head::Status(200, "OK".into())),
            (b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n", Head::Status(204, "No Content".into())),
            (b"HTTP/1.1 503 Busy\x1b[2J\r\n\r\n", Head::Status(503, "Busy\\x1b[2J".into())),
            (b"HTTP/1.0 201\r\n", Head::Status(201, "".into())),
            (b"HTTP/1.1 200", Head::Partial),
            (b"HTTP/1.1 2000 OK\r\n", Head::Invalid("not an HTTP/1.x status line".into())),
            (b"HTTP/2 200 OK\r\n", Head::Invalid("not an HTTP/1.x status line".into())),
            (b"HTTP/1.1 099 Low\r\n", Head::Invalid("not an HTTP/1.x status line".into())),
            (b"HTTP/1.1 100 Continue\r\n", Head::Partial),
            (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nerror", Head::Status(500, "Internal Server Error".into())),
            (b"HTTP/1.1 200 OK\r\nContent-", Head::Status(200, "OK".into())),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", Head::Informational(25)),
            (b"SSH-2.0-OpenSSH_9.6\r\n", Head::Invalid("not an HTTP/1.x status line".into())),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse_status(bytes), *want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    /// Serves one connection on loopback with `answer`; returns what came in.
    async fn serve_once(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            while !got.windows(16).any(|w| w == br#"{"event":"test"}"#) {
                let n = s.read(&mut b).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&b[..n]);
            }
            s.write_all(answer).await.expect("write");
            got
        });
        (port, h)
    }

    #[tokio::test]
    async fn delivers_and_reports_the_receivers_answer() {
        let client = Client::new();
        for (answer, want) in [
            (&b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"[..], Ok(202)),
            (b"HTTP/1.1 500 Oops\r\n\r\n", Err(Failure { status: Some(500), error: "the receiver answered 500 Oops".into(), permanent: false })),
            (b"HTTP/1.1 301 Moved\r\nLocation: http://evil/\r\n\r\n", Err(Failure { status: Some(301), error: "the receiver answered 301 Moved (redirects are not followed)".into(), permanent: false })),
            (b"", Err(Failure::transient("the receiver closed the connection without answering"))),
        ] {
            let (port, server) = serve_once(answer).await;
            let got = client.deliver(&delivery(&format!("http://127.0.0.1:{port}/hook")), 1_700_000_000).await;
            assert_eq!(got, want);
            let request = String::from_utf8(server.await.expect("server")).expect("utf8");
            assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
        }
        // Nothing listening: a transient failure, retried later.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let f = client.deliver(&delivery(&format!("http://127.0.0.1:{port}/hook")), 1).await.unwrap_err();
        assert!(!f.permanent && f.status.is_none() && f.error.starts_with(&format!("connecting to 127.0.0.1:{port}: ")), "{f:?}");
    }

    #[tokio::test]
    async fn plain_http_never_leaves_loopback() {
        // `localhost` may resolve to loopback only; an address the config
        // allowed cannot point elsewhere. The check runs on what resolves.
        let f = connect("192.0.2.7", 80, false).await.unwrap_err();
        assert!(f.permanent, "{f:?}");
        assert_eq!(f.error, "192.0.2.7 resolves to 192.0.2.7, which is not loopback: plain http is allowed only to loopback");
    }
}
