//! The HTTPS front end: OTP enrollment pages, `/healthz` and `/metrics`.
//!
//! axum over axum-server with rustls (aws-lc-rs). The daemon's core
//! answers through [`Backend`]. Request URIs are never logged (tokens live
//! in URLs): log lines name the route template only.

mod csrf;
mod pages;
mod tls;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

/// Largest request body read (the enrollment form is a few dozen bytes).
const BODY_LIMIT: usize = 16 * 1024;
/// How long open connections get to finish once shutdown is asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A connection must send its first request (headers) within this.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest token accepted in a URL before asking the backend.
const MAX_TOKEN_LEN: usize = 128;

const ROUTE_ENROLL: &str = "/otp/enroll/{token}";

/// What the web server needs from the daemon's core.
pub trait Backend: Send + Sync + 'static {
    /// A valid, unexpired, unused OTP-enrollment token → what the page shows.
    fn otp_enrollment(&self, token: &str) -> impl Future<Output = Result<EnrollView, Refusal>> + Send;
    /// Checks `code` against the pending secret; on success enables 2FA, burns the token and returns the backup codes (shown once).
    fn otp_confirm(&self, token: &str, code: &str) -> impl Future<Output = Result<Confirmed, Refusal>> + Send;
    /// Prometheus text format.
    fn metrics(&self) -> impl Future<Output = String> + Send;
    /// Ok when the store answers.
    fn health(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// What the enrollment page shows.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollView {
    pub username: String,
    /// "totp" | "hotp"
    pub method: String,
    pub secret_base32: String,
    pub otpauth_uri: String,
    pub digits: u32,
    pub issuer: String,
}

impl fmt::Debug for EnrollView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollView")
            .field("username", &self.username)
            .field("method", &self.method)
            .field("secret_base32", &"<secret>")
            .field("otpauth_uri", &"<secret>")
            .field("digits", &self.digits)
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// A confirmed enrollment.
#[derive(Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub backup_codes: Vec<String>,
}

impl fmt::Debug for Confirmed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Confirmed {{ backup_codes: <{} secrets> }}", self.backup_codes.len())
    }
}

/// Why the backend said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown, used, expired or for another purpose: one message for all.
    InvalidToken,
    WrongCode { tries_left: u32 },
    TooManyTries,
    Unavailable,
}

/// The `web` section of the configuration, resolved.
#[derive(Clone)]
pub struct WebSettings {
    pub listen: SocketAddr,
    pub base_url: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Self-signed on first start when both files are missing.
    pub generate_if_missing: bool,
    /// SANs for the self-signed cert, e.g. ["localhost", "127.0.0.1"].
    pub hostnames: Vec<String>,
    pub metrics_token: Option<String>,
}

impl fmt::Debug for WebSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSettings")
            .field("listen", &self.listen)
            .field("base_url", &self.base_url)
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("generate_if_missing", &self.generate_if_missing)
            .field("hostnames", &self.hostnames)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// Loads (or creates, mode 0600 for the key) the certificate, binds, and
/// returns the bound address and a future that serves until `shutdown`
/// turns true (or its sender is dropped), then stops gracefully: no new
/// connections, open ones get [`SHUTDOWN_GRACE`] to finish.
pub async fn bind<B: Backend>(
    settings: &WebSettings,
    backend: Arc<B>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static), String> {
    let (cert_path, key_path) = (settings.cert_path.clone(), settings.key_path.clone());
    let generate = settings.generate_if_missing;
    let hostnames = settings.hostnames.clone();
    let config = tokio::task::spawn_blocking(move || {
        let (certs, key) = tls::load_or_create(&cert_path, &key_path, generate, &hostnames)?;
        tls::server_config(certs, key)
    })
    .await
    .map_err(|e| format!("web: certificate task failed: {e}"))??;

    let listener = std::net::TcpListener::bind(settings.listen)
        .map_err(|e| format!("web: cannot listen on {}: {e}", settings.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("web: listening address: {e}"))?;
    let rustls_config = axum_server::tls_rustls::RustlsConfig::from_config(config);
    let mut server = axum_server::from_tcp_rustls(listener, rustls_config)
        .map_err(|e| format!("web: cannot listen on {addr}: {e}"))?
        .first_request_timeout(FIRST_REQUEST_TIMEOUT)
        .accept_error_handler(|peer: Option<&SocketAddr>, e: &std::io::Error| {
            tracing::debug!(peer = ?peer, error = %e, "web: connection dropped before a request");
        });
    server
        .http_builder()
        .http1()
        .header_read_timeout(FIRST_REQUEST_TIMEOUT);
    // Idle HTTP/2 connections are pinged and dropped when they stop answering.
    server
        .http_builder()
        .http2()
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(32);
    let handle = axum_server::Handle::new();
    let server = server.handle(handle.clone());

    let metrics_token = settings
        .metrics_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(Arc::<str>::from);
    let app = router(AppState { backend, metrics_token });

    let serve = async move {
        let serving = server.serve(app.into_make_service_with_connect_info::<SocketAddr>());
        tokio::pin!(serving);
        let stop = async move {
            // A dropped sender also means "stop".
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        tokio::select! {
            result = &mut serving => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "web: server stopped");
                }
                return;
            }
            () = stop => {}
        }
        tracing::info!("web: shutting down");
        handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "web: server stopped");
        }
    };
    Ok((addr, serve))
}

struct AppState<B> {
    backend: Arc<B>,
    metrics_token: Option<Arc<str>>,
}

impl<B> Clone for AppState<B> {
    fn clone(&self) -> Self {
        Self {
            backend: Arc::clone(&self.backend),
            metrics_token: self.metrics_token.clone(),
        }
    }
}

fn router<B: Backend>(state: AppState<B>) -> Router {
    Router::new()
        .route(ROUTE_ENROLL, get(enroll_get::<B>).post(enroll_post::<B>))
        .route("/healthz", get(healthz::<B>))
        .route("/metrics", get(metrics::<B>))
        .route("/static/style.css", get(stylesheet))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(request_deadline))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// How long one request (body included) may take.
const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// A request that takes too long (a slow body, say) is answered 408 and
/// its connection freed.
async fn request_deadline(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (axum::http::StatusCode::REQUEST_TIMEOUT, "request timed out").into_response(),
    }
}

/// Added to every response, errors and fallbacks included.
async fn security_headers(mut response: Response) -> Response {
    const HEADERS: [(header::HeaderName, &str); 6] = [
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    let headers = response.headers_mut();
    for (name, value) in HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn html(status: StatusCode, body: String) -> Response {
    (status, Html(body)).into_response()
}

async fn not_found() -> Response {
    html(StatusCode::NOT_FOUND, pages::not_found())
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::STYLE_CSS,
    )
        .into_response()
}

/// Tokens are random; anything else is refused without asking the store.
fn plausible_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// The cookie, CSRF and token checks of the enrollment form, for the fuzz
/// targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub const CSRF_COOKIE: &str = super::csrf::COOKIE_NAME;
    pub const MAX_TOKEN_LEN: usize = super::MAX_TOKEN_LEN;
    pub fn csrf_from_cookie_headers<'a>(headers: &[&'a str]) -> Option<&'a str> {
        super::csrf::from_cookie_headers(headers.iter().copied())
    }
    pub fn csrf_verify(cookie: Option<&str>, field: Option<&str>) -> bool {
        super::csrf::verify(cookie, field)
    }
    pub fn csrf_well_formed(value: &str) -> bool {
        super::csrf::well_formed(value)
    }
    pub fn plausible_token(token: &str) -> bool {
        super::plausible_token(token)
    }
}

fn refusal_page(refusal: Refusal) -> Response {
    match refusal {
        Refusal::InvalidToken => html(StatusCode::NOT_FOUND, pages::invalid_link()),
        Refusal::TooManyTries => html(StatusCode::TOO_MANY_REQUESTS, pages::too_many_tries()),
        Refusal::Unavailable | Refusal::WrongCode { .. } => {
            html(StatusCode::SERVICE_UNAVAILABLE, pages::unavailable())
        }
    }
}

fn outcome(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::InvalidToken => "invalid_token",
        Refusal::WrongCode { .. } => "wrong_code",
        Refusal::TooManyTries => "too_many_tries",
        Refusal::Unavailable => "unavailable",
    }
}

async fn enroll_get<B: Backend>(
    State(state): State<AppState<B>>,
    token: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let token = match token {
        Ok(Path(t)) if plausible_token(&t) => t,
        _ => {
            tracing::info!(route = ROUTE_ENROLL, outcome = "invalid_token", "web: enrollment page");
            return refusal_page(Refusal::InvalidToken);
        }
    };
    let view = match state.backend.otp_enrollment(&token).await {
        Ok(v) => v,
        Err(r) => {
            tracing::info!(route = ROUTE_ENROLL, outcome = outcome(r), "web: enrollment page");
            return refusal_page(r);
        }
    };
    // Keep a well-formed cookie (another tab may hold a form with it).
    let existing = csrf::from_cookie_headers(cookie_headers(&headers)).filter(|v| csrf::well_formed(v));
    let csrf_value = match existing {
        Some(v) => v.to_owned(),
        None => match csrf::new_token() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "web: no randomness for the CSRF value");
                return refusal_page(Refusal::Unavailable);
            }
        },
    };
    tracing::info!(route = ROUTE_ENROLL, outcome = "shown", "web: enrollment page");
    let mut response = html(StatusCode::OK, pages::enroll(&view, &csrf_value, None));
    if let Ok(cookie) = HeaderValue::from_str(&csrf::set_cookie(&csrf_value)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
struct EnrollForm {
    csrf: Option<String>,
    code: Option<String>,
}

fn cookie_headers(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
}

async fn enroll_post<B: Backend>(
    State(state): State<AppState<B>>,
    token: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    form: Result<Form<EnrollForm>, FormRejection>,
) -> Response {
    // 1. CSRF, before anything else.
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::info!(route = ROUTE_ENROLL, outcome = "too_large", "web: enrollment form");
            return html(StatusCode::PAYLOAD_TOO_LARGE, pages::too_large());
        }
        Err(_) => EnrollForm { csrf: None, code: None },
    };
    let cookie = csrf::from_cookie_headers(cookie_headers(&headers));
    if !csrf::verify(cookie, form.csrf.as_deref()) {
        tracing::info!(route = ROUTE_ENROLL, outcome = "csrf_failed", "web: enrollment form");
        return html(StatusCode::FORBIDDEN, pages::csrf_failed());
    }
    let csrf_value = form.csrf.unwrap_or_default();

    // 2. The token.
    let token = match token {
        Ok(Path(t)) if plausible_token(&t) => t,
        _ => {
            tracing::info!(route = ROUTE_ENROLL, outcome = "invalid_token", "web: enrollment form");
            return refusal_page(Refusal::InvalidToken);
        }
    };

    // 3. The code: digits only (spaces ignored); a malformed entry costs no try.
    let code: String = form
        .code
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if code.is_empty() || code.len() > 10 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return rerender(&state, &token, &csrf_value, "Type the code your app shows now (digits only).").await;
    }

    match state.backend.otp_confirm(&token, &code).await {
        Ok(confirmed) => {
            tracing::info!(route = ROUTE_ENROLL, outcome = "confirmed", "web: enrollment form");
            html(StatusCode::OK, pages::confirmed(&confirmed.backup_codes))
        }
        Err(Refusal::WrongCode { tries_left }) => {
            tracing::info!(route = ROUTE_ENROLL, outcome = "wrong_code", "web: enrollment form");
            let message = match tries_left {
                1 => "That code is not right. 1 try left.".to_owned(),
                n => format!("That code is not right. {n} tries left."),
            };
            rerender(&state, &token, &csrf_value, &message).await
        }
        Err(r) => {
            tracing::info!(route = ROUTE_ENROLL, outcome = outcome(r), "web: enrollment form");
            refusal_page(r)
        }
    }
}

/// The form again with `message`; 422 so it is not mistaken for success.
async fn rerender<B: Backend>(state: &AppState<B>, token: &str, csrf_value: &str, message: &str) -> Response {
    match state.backend.otp_enrollment(token).await {
        Ok(view) => html(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::enroll(&view, csrf_value, Some(message)),
        ),
        Err(r) => refusal_page(r),
    }
}

async fn healthz<B: Backend>(State(state): State<AppState<B>>) -> Response {
    match state.backend.health().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!(route = "/healthz", error = %e, "web: unhealthy");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable\n").into_response()
        }
    }
}

/// Who may read `/metrics`.
#[derive(Debug, PartialEq, Eq)]
enum MetricsAccess {
    Allowed,
    /// A token is configured and was not given, or was wrong: 401.
    Unauthorized,
    /// Not loopback and no token configured: 403.
    Forbidden,
}

fn metrics_access(peer: IpAddr, authorization: Option<&[u8]>, token: Option<&str>) -> MetricsAccess {
    use subtle::ConstantTimeEq as _;
    if peer.to_canonical().is_loopback() {
        return MetricsAccess::Allowed;
    }
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return MetricsAccess::Forbidden;
    };
    let given = authorization.and_then(|value| {
        let (scheme, rest) = value.split_at_checked(7)?;
        scheme.eq_ignore_ascii_case(b"Bearer ").then(|| rest.trim_ascii())
    });
    match given {
        // Lengths differ → unequal at once; the token's length is no secret worth hiding.
        Some(given) if bool::from(given.ct_eq(token.as_bytes())) => MetricsAccess::Allowed,
        _ => MetricsAccess::Unauthorized,
    }
}

async fn metrics<B: Backend>(
    State(state): State<AppState<B>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    match metrics_access(peer.ip(), authorization, state.metrics_token.as_deref()) {
        MetricsAccess::Allowed => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            state.backend.metrics().await,
        )
            .into_response(),
        MetricsAccess::Unauthorized => {
            tracing::info!(route = "/metrics", outcome = "unauthorized", "web: metrics refused");
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "unauthorized\n",
            )
                .into_response()
        }
        MetricsAccess::Forbidden => {
            tracing::info!(route = "/metrics", outcome = "forbidden", "web: metrics refused");
            (StatusCode::FORBIDDEN, "forbidden\n").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use tokio::process::Command;

    const GOOD: &str = "good-token_123";
    const RIGHT_CODE: &str = "123456";
    const DEADLINE: Duration = Duration::from_secs(30);

    struct TestBackend {
        /// token → tries left
        tokens: Mutex<HashMap<String, u32>>,
        healthy: AtomicBool,
    }

    impl TestBackend {
        fn new() -> Self {
            let tokens = [(GOOD.to_owned(), 3), ("other".to_owned(), 3)].into_iter().collect();
            Self { tokens: Mutex::new(tokens), healthy: AtomicBool::new(true) }
        }
    }

    impl Backend for TestBackend {
        async fn otp_enrollment(&self, token: &str) -> Result<EnrollView, Refusal> {
            if token == "store-down" {
                return Err(Refusal::Unavailable);
            }
            if !self.tokens.lock().unwrap().contains_key(token) {
                return Err(Refusal::InvalidToken);
            }
            Ok(EnrollView {
                username: "alice<script>".into(),
                method: "totp".into(),
                secret_base32: "JBSWY3DPEHPK3PXPJBSWY3DP".into(),
                otpauth_uri: "otpauth://totp/Portcullis:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DP&issuer=Portcullis&digits=6".into(),
                digits: 6,
                issuer: "Portcullis".into(),
            })
        }

        async fn otp_confirm(&self, token: &str, code: &str) -> Result<Confirmed, Refusal> {
            let mut tokens = self.tokens.lock().unwrap();
            let Some(left) = tokens.get_mut(token) else {
                return Err(Refusal::InvalidToken);
            };
            if code == RIGHT_CODE {
                tokens.remove(token);
                return Ok(Confirmed {
                    backup_codes: vec!["1111-2222".into(), "3333-4444".into(), "<b>".into()],
                });
            }
            *left -= 1;
            if *left == 0 {
                tokens.remove(token);
                return Err(Refusal::TooManyTries);
            }
            Err(Refusal::WrongCode { tries_left: *left })
        }

        async fn metrics(&self) -> String {
            "# TYPE portcullis_up gauge\nportcullis_up 1\n".into()
        }

        async fn health(&self) -> Result<(), String> {
            if self.healthy.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("store closed".into())
            }
        }
    }

    struct Server {
        _dir: tempfile::TempDir,
        cert: String,
        addr: SocketAddr,
        backend: Arc<TestBackend>,
        stop: tokio::sync::watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let settings = WebSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            base_url: "https://localhost".into(),
            cert_path: dir.path().join("web.crt"),
            key_path: dir.path().join("web.key"),
            generate_if_missing: true,
            hostnames: vec!["localhost".into(), "127.0.0.1".into()],
            metrics_token: Some("s3cret".into()),
        };
        let backend = Arc::new(TestBackend::new());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (addr, serve) = tokio::time::timeout(DEADLINE, bind(&settings, Arc::clone(&backend), rx))
            .await
            .expect("bind deadline")
            .expect("bind");
        let task = tokio::spawn(serve);
        Server {
            cert: settings.cert_path.to_string_lossy().into_owned(),
            _dir: dir,
            addr,
            backend,
            stop,
            task,
        }
    }

    #[derive(Debug)]
    struct Reply {
        ok: bool,
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
        stderr: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        }
    }

    /// Runs curl (with its own time limit, inside ours) and parses `-i` output.
    async fn curl(args: &[&str]) -> Reply {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-i", "--max-time", "10"]).args(args).kill_on_drop(true);
        let out = tokio::time::timeout(DEADLINE, cmd.output())
            .await
            .expect("curl deadline")
            .expect("curl runs (is it installed?)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .filter(|l| l.starts_with("HTTP/"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Reply { ok: out.status.success(), status, headers, body: body.to_owned(), stderr }
    }

    impl Server {
        fn url(&self, path: &str) -> String {
            format!("https://127.0.0.1:{}{path}", self.addr.port())
        }

        /// curl over verified HTTPS (the generated certificate as the CA).
        async fn https(&self, path: &str, extra: &[&str]) -> Reply {
            let url = self.url(path);
            let mut args = vec!["--cacert", self.cert.as_str()];
            args.extend_from_slice(extra);
            args.push(url.as_str());
            curl(&args).await
        }

        async fn stop(self) {
            self.stop.send(true).unwrap();
            tokio::time::timeout(DEADLINE, self.task)
                .await
                .expect("graceful shutdown within the deadline")
                .unwrap();
        }
    }

    fn hidden_csrf(html: &str) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = html.find(marker).expect("hidden csrf field") + marker.len();
        html[start..start + html[start..].find('"').unwrap()].to_owned()
    }

    #[tokio::test]
    async fn enrollment_flow_over_https() {
        let s = start().await;
        let path = format!("/otp/enroll/{GOOD}");

        // The page: QR code, grouped secret, escaped name, form, cookie.
        let page = s.https(&path, &[]).await;
        assert!(page.ok, "{}", page.stderr);
        assert_eq!(page.status, 200);
        assert!(page.header("content-type").unwrap().starts_with("text/html"));
        assert!(page.body.contains("<svg role=\"img\""), "inline QR SVG");
        assert!(page.body.contains("JBSW Y3DP EHPK 3PXP JBSW Y3DP"));
        assert!(page.body.contains("alice&lt;script&gt;"));
        assert!(page.body.contains("<form method=\"post\">"));
        assert!(page.body.contains("name=\"code\""));
        let set_cookie = page.header("set-cookie").expect("csrf cookie");
        for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set_cookie.contains(attr), "{set_cookie}");
        }
        let csrf_value = hidden_csrf(&page.body);
        assert!(csrf::well_formed(&csrf_value));
        assert!(set_cookie.starts_with(&format!("__Host-csrf={csrf_value};")), "{set_cookie}");
        let cookie = format!("Cookie: __Host-csrf={csrf_value}");
        let other = csrf::new_token().unwrap();

        // (extra curl args, status, text in the body) in order: the
        // backend's try counter runs across the rows.
        let right_field = format!("csrf={csrf_value}");
        let wrong_field = format!("csrf={other}");
        let steps: Vec<(Vec<&str>, u16, &str)> = vec![
            // no CSRF at all
            (vec!["-d", "code=123456"], 403, "Security check failed"),
            // field without cookie
            (vec!["-d", &right_field, "-d", "code=123456"], 403, "Security check failed"),
            // cookie without field
            (vec!["-H", &cookie, "-d", "code=123456"], 403, "Security check failed"),
            // wrong field
            (vec!["-H", &cookie, "-d", &wrong_field, "-d", "code=123456"], 403, "Security check failed"),
            // not a code: no try used
            (vec!["-H", &cookie, "-d", &right_field, "-d", "code=abc"], 422, "digits only"),
            // wrong codes
            (vec!["-H", &cookie, "-d", &right_field, "-d", "code=000000"], 422, "2 tries left"),
            (vec!["-H", &cookie, "-d", &right_field, "-d", "code=000001"], 422, "1 try left"),
            // right code (spaces ignored)
            (vec!["-H", &cookie, "-d", &right_field, "-d", "code=123+456"], 200, "<li><code>1111-2222</code></li>"),
            // the link is burnt now
            (vec!["-H", &cookie, "-d", &right_field, "-d", "code=123456"], 404, "it may have expired or been used"),
        ];
        for (i, (extra, status, text)) in steps.iter().enumerate() {
            let reply = s.https(&path, extra).await;
            assert!(reply.ok, "step {i}: {}", reply.stderr);
            assert_eq!(reply.status, *status, "step {i}: {}", reply.body);
            assert!(reply.body.contains(text), "step {i}: {}", reply.body);
            if *status == 422 {
                assert_eq!(hidden_csrf(&reply.body), csrf_value, "step {i}: same CSRF value");
                assert!(reply.body.contains("role=\"alert\""));
            }
            if *status == 200 {
                assert!(reply.body.contains("<li><code>&lt;b&gt;</code></li>"));
                assert!(reply.body.contains("will not be shown again"));
            }
        }

        // Every kind of bad link gets the same page.
        for bad in ["/otp/enroll/nope", &path, "/otp/enroll/%FF%FE", "/otp/enroll/a%20b", "/otp/enroll/store-down"] {
            let reply = s.https(bad, &[]).await;
            if bad.ends_with("store-down") {
                assert_eq!(reply.status, 503, "{bad}");
                continue;
            }
            assert_eq!(reply.status, 404, "{bad}");
            assert!(reply.body.contains("This link is not valid: it may have expired or been used"), "{bad}");
        }

        // Too many tries on another link.
        let other_path = "/otp/enroll/other";
        let mut last = 0;
        for _ in 0..3 {
            last = s.https(other_path, &["-H", &cookie, "-d", &right_field, "-d", "code=999999"]).await.status;
        }
        assert_eq!(last, 429);
        s.stop().await;
    }

    #[tokio::test]
    async fn security_headers_on_every_response() {
        let s = start().await;
        let want = [
            ("strict-transport-security", "max-age=31536000"),
            (
                "content-security-policy",
                "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
        ];
        let enroll = format!("/otp/enroll/{GOOD}");
        let cases: Vec<(&str, Vec<&str>, u16)> = vec![
            ("/healthz", vec![], 200),
            ("/healthz", vec!["--http1.1"], 200),
            (&enroll, vec![], 200),
            ("/static/style.css", vec![], 200),
            ("/metrics", vec![], 200),
            (&enroll, vec!["-d", "code=1"], 403),
            ("/nowhere", vec![], 404),
            ("/otp/enroll/unknown", vec![], 404),
            ("/healthz", vec!["-X", "DELETE"], 405),
        ];
        for (path, extra, status) in cases {
            let reply = s.https(path, &extra).await;
            assert!(reply.ok, "{path}: {}", reply.stderr);
            assert_eq!(reply.status, status, "{path} {extra:?}");
            for (name, value) in want {
                assert_eq!(reply.header(name), Some(value), "{path} {extra:?}: {name}");
            }
        }
        let css = s.https("/static/style.css", &[]).await;
        assert!(css.header("content-type").unwrap().starts_with("text/css"));
        s.stop().await;
    }

    #[tokio::test]
    async fn health_metrics_and_limits() {
        let s = start().await;
        let health = s.https("/healthz", &[]).await;
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        s.backend.healthy.store(false, Ordering::SeqCst);
        assert_eq!(s.https("/healthz", &[]).await.status, 503);

        // Loopback reads metrics with or without a (right or wrong) token.
        for extra in [vec![], vec!["-H", "Authorization: Bearer wrong"]] {
            let m = s.https("/metrics", &extra).await;
            assert_eq!(m.status, 200);
            assert!(m.body.contains("portcullis_up 1"));
            assert!(m.header("content-type").unwrap().starts_with("text/plain"));
        }

        // Bodies over the limit are refused.
        let big = format!("code={}", "1".repeat(20 * 1024));
        let reply = s.https(&format!("/otp/enroll/{GOOD}"), &["-d", &big]).await;
        assert_eq!(reply.status, 413);
        s.stop().await;
    }

    #[tokio::test]
    async fn tls_only_and_versions() {
        let s = start().await;
        // Plain HTTP on the TLS port gets no HTTP answer.
        let plain = curl(&[&format!("http://127.0.0.1:{}/healthz", s.addr.port())]).await;
        assert!(!plain.ok, "plain HTTP must fail: {plain:?}");
        assert_eq!(plain.status, 0, "{plain:?}");
        assert!(!plain.body.contains("ok"));
        // TLS 1.1 and below refused; 1.2 and 1.3 work.
        let old = s.https("/healthz", &["--tlsv1", "--tls-max", "1.1"]).await;
        assert!(!old.ok && old.status == 0, "{old:?}");
        for extra in [vec!["--tlsv1.2", "--tls-max", "1.2"], vec!["--tlsv1.3"]] {
            let reply = s.https("/healthz", &extra).await;
            assert_eq!(reply.status, 200, "{extra:?}: {}", reply.stderr);
        }
        // HTTP/2 through ALPN.
        let h2 = s.https("/healthz", &["--http2", "-w", "%{http_version}"]).await;
        assert!(h2.body.ends_with('2'), "{h2:?}");
        s.stop().await;
    }

    #[tokio::test]
    async fn shutdown_and_bind_errors() {
        let s = start().await;
        let addr = s.addr;
        // The certificate created on first start is reused by the next one.
        let before = std::fs::read(&s.cert).unwrap();
        s.stop.send(true).unwrap();
        tokio::time::timeout(DEADLINE, s.task).await.expect("stops in time").unwrap();
        let after_stop = curl(&["-k", &format!("https://127.0.0.1:{}/healthz", addr.port())]).await;
        assert!(!after_stop.ok, "nothing serves after shutdown");

        let settings = WebSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            base_url: String::new(),
            cert_path: s._dir.path().join("web.crt"),
            key_path: s._dir.path().join("web.key"),
            generate_if_missing: true,
            hostnames: vec![],
            metrics_token: None,
        };
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let (_, serve) = bind(&settings, Arc::new(TestBackend::new()), rx.clone()).await.unwrap();
        drop(serve);
        assert_eq!(std::fs::read(&s.cert).unwrap(), before);

        // A dropped sender stops the server too.
        let (tx, rx2) = tokio::sync::watch::channel(false);
        let (_, serve) = bind(&settings, Arc::new(TestBackend::new()), rx2).await.unwrap();
        drop(tx);
        tokio::time::timeout(DEADLINE, serve).await.expect("stops when the sender is gone");

        // Address in use, and missing files without generation.
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let in_use = WebSettings { listen: busy.local_addr().unwrap(), ..settings.clone() };
        let err = bind(&in_use, Arc::new(TestBackend::new()), rx.clone()).await.err().unwrap();
        assert!(err.contains("cannot listen"), "{err}");
        let missing = WebSettings {
            cert_path: s._dir.path().join("none.crt"),
            key_path: s._dir.path().join("none.key"),
            generate_if_missing: false,
            ..settings
        };
        let err = bind(&missing, Arc::new(TestBackend::new()), rx).await.err().unwrap();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn metrics_access_table() {
        use MetricsAccess::*;
        let lo4: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let far: IpAddr = "192.0.2.7".parse().unwrap();
        let far6: IpAddr = "2001:db8::1".parse().unwrap();
        let cases: &[(IpAddr, Option<&str>, Option<&str>, MetricsAccess)] = &[
            (lo4, None, None, Allowed),
            (lo6, None, Some("t0k"), Allowed),
            (mapped, Some("Bearer nope"), Some("t0k"), Allowed),
            (far, None, None, Forbidden),
            (far, Some("Bearer t0k"), None, Forbidden),
            (far, Some("Bearer "), Some(""), Forbidden),
            (far, None, Some("t0k"), Unauthorized),
            (far, Some("Bearer t0k"), Some("t0k"), Allowed),
            (far, Some("bearer t0k"), Some("t0k"), Allowed),
            (far6, Some("Bearer  t0k "), Some("t0k"), Allowed),
            (far, Some("Bearer t0K"), Some("t0k"), Unauthorized),
            (far, Some("Bearer t0k0"), Some("t0k"), Unauthorized),
            (far, Some("Bearer t0"), Some("t0k"), Unauthorized),
            (far, Some("Bearer "), Some("t0k"), Unauthorized),
            (far, Some("Basic dDBr"), Some("t0k"), Unauthorized),
            (far, Some("t0k"), Some("t0k"), Unauthorized),
            (far, Some("Bearert0k"), Some("t0k"), Unauthorized),
        ];
        for (i, (peer, auth, token, want)) in cases.iter().enumerate() {
            assert_eq!(metrics_access(*peer, auth.map(str::as_bytes), *token), *want, "case {i}");
        }
    }

    #[test]
    fn plausible_token_table() {
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let cases = [
            ("abcDEF012-_", true),
            ("", false),
            ("a b", false),
            ("a/b", false),
            ("<x>", false),
            (long.as_str(), false),
            (&long[1..], true),
        ];
        for (t, want) in cases {
            assert_eq!(plausible_token(t), want, "{t:?}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let settings = WebSettings {
            listen: "127.0.0.1:1".parse().unwrap(),
            base_url: String::new(),
            cert_path: PathBuf::new(),
            key_path: PathBuf::new(),
            generate_if_missing: false,
            hostnames: vec![],
            metrics_token: Some("tok-value".into()),
        };
        assert!(!format!("{settings:?}").contains("tok-value"));
        let codes = Confirmed { backup_codes: vec!["code-value".into()] };
        assert!(!format!("{codes:?}").contains("code-value"));
    }
}
