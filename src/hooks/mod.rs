//! Webhook deliveries over HTTP(S), and the worker that drains the durable
//! queue `core::webhooks` keeps.
//!
//! The client is deliberately small: one POST per connection
//! (`Connection: close`), the body signed at send time, only the head of
//! the answer read (at most 16 KiB, parsed by httparse) and only its
//! status used; no redirects, no cookies, no proxies. TLS is rustls
//! (aws-lc-rs) with the system's root certificates. `http://` goes only to
//! loopback addresses (checked in the config and again on the resolved
//! addresses). Logs carry the delivery id, the webhook's name, its scheme,
//! host and port, the attempt and the error, never the secret, the body or
//! the URL's path (a Slack-style URL carries its token there).

use crate::core::webhooks::{signature, OutgoingWebhook, Retry, DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::core::Core;
use crate::model::Millis;
use std::collections::HashSet;
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
        Client { tls: tls_connector() }
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
            let tls = self.tls.as_ref().map_err(|e| Failure::transient(e.clone()))?;
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

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
        return Err(format!("no trusted root certificates found on this system{why}; https webhooks cannot be checked"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
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

fn parse_status(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(buf) {
        Ok(httparse::Status::Partial) => Head::Partial,
        Ok(httparse::Status::Complete(len)) => {
            let code = r.code.unwrap_or(0);
            if (100..200).contains(&code) && code != 101 {
                return Head::Informational(len);
            }
            let reason: String = crate::model::escape_control(r.reason.unwrap_or("")).chars().take(80).collect();
            Head::Status(code, reason)
        }
        Err(e) => Head::Invalid(e.to_string()),
    }
}

/// Runs until `shutdown` turns true (or its sender is dropped): every
/// `poll`, or at once when `wake` is notified, sends every due delivery
/// (oldest first), each marked sent or failed with its next attempt (core
/// decides the backoff and when to give up). A failure of one delivery
/// does not stop the others.
pub async fn run_worker(core: Arc<Core>, wake: Arc<tokio::sync::Notify>, mut shutdown: tokio::sync::watch::Receiver<bool>, poll: Duration) {
    let client = Client::new();
    if let Err(e) = &client.tls {
        if core.webhooks().iter().any(|w| w.url.https) {
            tracing::warn!(error = %e, "webhook worker: https deliveries will fail");
        }
    }
    tracing::info!(webhooks = core.webhooks().len(), "webhook worker started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        run_round(&client, &core, &shutdown).await;
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = wake.notified() => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    tracing::info!("webhook worker stopped");
}

async fn run_round(client: &Client, core: &Arc<Core>, shutdown: &tokio::sync::watch::Receiver<bool>) {
    let mut seen = HashSet::new();
    loop {
        let c = Arc::clone(core);
        let due = match tokio::task::spawn_blocking(move || c.due_webhooks(Millis::now(), BATCH)).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "webhook queue: cannot read due deliveries");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook queue: the read failed");
                return;
            }
        };
        let full = due.len() >= BATCH;
        let mut progressed = false;
        for d in due {
            if *shutdown.borrow() {
                return;
            }
            if !seen.insert(d.id) {
                continue;
            }
            progressed = true;
            send_one(client, core, &d).await;
        }
        if !full || !progressed || seen.len() >= MAX_PER_ROUND {
            return;
        }
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
            (b"HTTP/1.1 503 Busy\x1b[2J\r\n\r\n", Head::Invalid("invalid response status".into())),
            (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nerror", Head::Status(500, "Internal Server Error".into())),
            (b"HTTP/1.1 200 OK\r\nContent-", Head::Partial),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", Head::Informational(25)),
            (b"SSH-2.0-OpenSSH_9.6\r\n", Head::Invalid("invalid HTTP version".into())),
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
