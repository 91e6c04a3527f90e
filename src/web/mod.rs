//! The HTTPS front end: OTP and hardware key enrollment pages, `/healthz`
//! and `/metrics`.
//!
//! axum on hyper with rustls (aws-lc-rs); `serve.rs` owns the accept
//! loop and bounds every connection. Handlers hold the
//! daemon's `Arc<Core>` and call its methods; core answers with its own
//! types. Request URIs are never logged (tokens live in URLs): log lines
//! name the route template only.

mod csrf;
mod keys;
mod pages;
mod serve;
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

use crate::core::mfa::{LinkRefusal, WebClient};
use crate::core::Core;
use crate::model::Millis;

/// Largest request body read (the enrollment form is a few dozen bytes).
const BODY_LIMIT: usize = 16 * 1024;
/// How long open connections get to finish once shutdown is asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A connection must send its first request (headers) within this.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest token accepted in a URL before asking the backend.
const MAX_TOKEN_LEN: usize = 128;

const ROUTE_ENROLL: &str = "/otp/enroll/{token}";

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
    /// Loopback peers read `/metrics` without the token.
    pub metrics_from_loopback: bool,
    /// An HTTP/1.1 connection waiting for its next request is closed after this.
    pub http1_idle_timeout: Duration,
    /// An HTTP/2 connection with no request in flight is closed after this.
    pub http2_idle_timeout: Duration,
    /// An HTTP/2 connection is closed (gracefully) once this old.
    pub http2_max_age: Duration,
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
            .field("metrics_from_loopback", &self.metrics_from_loopback)
            .field("http1_idle_timeout", &self.http1_idle_timeout)
            .field("http2_idle_timeout", &self.http2_idle_timeout)
            .field("http2_max_age", &self.http2_max_age)
            .finish()
    }
}

/// Loads (or creates, mode 0600 for the key) the certificate, binds, and
/// returns the bound address and a future that serves until `shutdown`
/// turns true (or its sender is dropped), then stops gracefully: no new
/// connections, open ones get [`SHUTDOWN_GRACE`] to finish.
pub async fn bind(
    settings: &WebSettings,
    core: Arc<Core>,
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
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("web: cannot listen on {addr}: {e}"))?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| format!("web: cannot listen on {addr}: {e}"))?;
    let tls = tokio_rustls::TlsAcceptor::from(config);
    let timeouts = serve::Timeouts {
        first_request: FIRST_REQUEST_TIMEOUT,
        http1_idle: settings.http1_idle_timeout,
        http2_idle: settings.http2_idle_timeout,
        http2_max_age: settings.http2_max_age,
        grace: SHUTDOWN_GRACE,
    };
    let connections = Arc::clone(&core.web_connections);
    let gate = Arc::clone(&core);

    let metrics_token = settings
        .metrics_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(Arc::<str>::from);
    let app = router(AppState { core, metrics_token, metrics_from_loopback: settings.metrics_from_loopback });

    let serve = async move {
        let stop = async move {
            // A dropped sender also means "stop".
            let _ = shutdown.wait_for(|stop| *stop).await;
            tracing::info!("web: shutting down");
        };
        serve::run(listener, tls, app, connections, gate, timeouts, stop).await;
    };
    Ok((addr, serve))
}

#[derive(Clone)]
struct AppState {
    core: Arc<Core>,
    metrics_token: Option<Arc<str>>,
    metrics_from_loopback: bool,
}

fn router(state: AppState) -> Router {
    Router::new()
        .route(ROUTE_ENROLL, get(enroll_get).post(enroll_post))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/static/style.css", get(stylesheet))
        .route(keys::ROUTE_PAGE, get(keys::page))
        .route(keys::ROUTE_OPTIONS, axum::routing::post(keys::options))
        .route(keys::ROUTE_FINISH, axum::routing::post(keys::finish))
        .route(keys::ROUTE_APPROVE, get(keys::approve_page))
        .route(keys::ROUTE_APPROVE_OPTIONS, axum::routing::post(keys::approve_options))
        .route(keys::ROUTE_APPROVE_FINISH, axum::routing::post(keys::approve_finish))
        .route(keys::ROUTE_APPROVE_DENY, axum::routing::post(keys::approve_deny))
        .route("/static/webauthn.js", get(keys::script))
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
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
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

fn refusal_page(refusal: LinkRefusal) -> Response {
    match refusal {
        LinkRefusal::InvalidToken => html(StatusCode::NOT_FOUND, pages::invalid_link()),
        LinkRefusal::TooManyTries => html(StatusCode::TOO_MANY_REQUESTS, pages::too_many_tries()),
        LinkRefusal::Unavailable | LinkRefusal::WrongCode { .. } => {
            html(StatusCode::SERVICE_UNAVAILABLE, pages::unavailable())
        }
    }
}

fn outcome(refusal: LinkRefusal) -> &'static str {
    match refusal {
        LinkRefusal::InvalidToken => "invalid_token",
        LinkRefusal::WrongCode { .. } => "wrong_code",
        LinkRefusal::TooManyTries => "too_many_tries",
        LinkRefusal::Unavailable => "unavailable",
    }
}

async fn enroll_get(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let token = match token {
        Ok(Path(t)) if plausible_token(&t) => t,
        _ => {
            tracing::info!(route = ROUTE_ENROLL, outcome = "invalid_token", "web: enrollment page");
            return refusal_page(LinkRefusal::InvalidToken);
        }
    };
    // Only whether the link is usable: the secret is not even opened.
    if let Err(r) = state.core.otp_enrollment_usable(&token, Millis::now()) {
        tracing::info!(route = ROUTE_ENROLL, outcome = outcome(r), "web: enrollment page");
        return refusal_page(r);
    }
    // Keep a well-formed cookie (another tab may hold a form with it).
    let existing = csrf::from_cookie_headers(cookie_headers(&headers)).filter(|v| csrf::well_formed(v));
    let csrf_value = match existing {
        Some(v) => v.to_owned(),
        None => match csrf::new_token() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "web: no randomness for the CSRF value");
                return refusal_page(LinkRefusal::Unavailable);
            }
        },
    };
    tracing::info!(route = ROUTE_ENROLL, outcome = "continue", "web: enrollment page");
    let mut response = html(StatusCode::OK, pages::enroll_continue(&csrf_value));
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

async fn enroll_post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
            return refusal_page(LinkRefusal::InvalidToken);
        }
    };

    let client = WebClient {
        ip: Some(peer.ip()),
        // Stored without C1 controls or bidi overrides (item 9), as the SSH
        // version string is: HTTP lets bytes 0x80-0xff through.
        user_agent: headers.get(header::USER_AGENT).map(|v| crate::model::strip_unsafe(&String::from_utf8_lossy(v.as_bytes()))),
    };

    // 3. "Continue" (no code field): now, and only now, the secret; the
    // browser it is shown to becomes one of the account's devices.
    let Some(code) = form.code else {
        return match state.core.otp_enrollment_view_from(&token, &client, Millis::now()).await {
            Ok(view) => {
                tracing::info!(route = ROUTE_ENROLL, outcome = "shown", "web: enrollment form");
                html(StatusCode::OK, pages::enroll(&view, &csrf_value, None))
            }
            Err(r) => {
                tracing::info!(route = ROUTE_ENROLL, outcome = outcome(r), "web: enrollment form");
                refusal_page(r)
            }
        };
    };

    // 4. The code: digits only (spaces ignored); a malformed entry costs no try.
    let code: String = code
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if code.is_empty() || code.len() > 10 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return rerender(&state, &token, &csrf_value, "Type the code your app shows now (digits only).").await;
    }

    match state.core.otp_confirm_from(&token, &code, &client, Millis::now()).await {
        Ok(backup_codes) => {
            tracing::info!(route = ROUTE_ENROLL, outcome = "confirmed", "web: enrollment form");
            html(StatusCode::OK, pages::confirmed(&backup_codes))
        }
        Err(LinkRefusal::WrongCode { tries_left }) => {
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
async fn rerender(state: &AppState, token: &str, csrf_value: &str, message: &str) -> Response {
    match state.core.otp_enrollment_view(token, Millis::now()) {
        Ok(view) => html(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::enroll(&view, csrf_value, Some(message)),
        ),
        Err(r) => refusal_page(r),
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.core.health() {
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
    /// No token configured, and the peer is not a loopback peer allowed
    /// without one: 403.
    Forbidden,
}

fn metrics_access(peer: IpAddr, authorization: Option<&[u8]>, token: Option<&str>, from_loopback: bool) -> MetricsAccess {
    use subtle::ConstantTimeEq as _;
    if from_loopback && peer.to_canonical().is_loopback() {
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

async fn metrics(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    match metrics_access(peer.ip(), authorization, state.metrics_token.as_deref(), state.metrics_from_loopback) {
        MetricsAccess::Allowed => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            state.core.metrics_text(),
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
    use crate::core::accounts::Actor;
    use crate::core::otp;
    use crate::core::EventSink;
    use crate::model::Secret;
    use crate::store::Store;
    use tokio::process::Command;

    const DEADLINE: Duration = Duration::from_secs(30);

    /// A real `Core` on a temporary store (cheap hashes). `migrated: false`
    /// leaves the store without its tables: every read fails, as a broken
    /// database would.
    fn test_core(dir: &std::path::Path, migrated: bool) -> Arc<Core> {
        let text = "passwords: {\n  iterations: 1000\n}\nweb: {\n  base_url: \"https://localhost\"\n}\n";
        let settings = crate::config::load::from_text(text, "t.hjson", dir).expect("settings");
        let store = Arc::new(Store::open(&dir.join("t.db")).expect("open"));
        if migrated {
            store.migrate(None).expect("migrate");
        }
        Arc::new(Core::new(store.clone(), settings, EventSink::Direct(store), crate::core::secrets::Keyring::from_key(&[7; 32])))
    }

    /// Adds `name` and mails them an enrollment link; returns the link's token.
    async fn enrollment_token(core: &Core, name: &str) -> String {
        let now = Millis::now();
        let actor = Actor::Cli("test".into());
        let user = core
            .add_user(name, Some(&format!("{name}@example.org")), &Secret::new("Correct-Horse-Battery-9".into()), &[], &actor, now)
            .await
            .expect("user");
        core.start_otp_enrollment(&user, crate::core::mfa::Method::Totp, &actor, now).await.expect("link");
        let mails = core.due_mail(now.plus(Duration::from_secs(1)), 100).expect("outbox");
        let text = &mails.iter().rev().find(|m| m.to.starts_with(name)).expect("the link mail").body.text;
        let start = text.find("/otp/enroll/").expect("link in the mail") + "/otp/enroll/".len();
        text[start..].split_whitespace().next().expect("token").to_owned()
    }

    fn base32_decode(s: &str) -> Vec<u8> {
        crate::core::otp::base32_decode(s).expect("base32")
    }

    /// The key shown on a page (grouped) and the code it gives now.
    fn key_and_code(html: &str) -> (String, String) {
        let marker = "<code class=\"secret\">";
        let start = html.find(marker).expect("key on the page") + marker.len();
        let grouped = html[start..start + html[start..].find('<').unwrap()].to_owned();
        let secret = base32_decode(&grouped);
        let step = otp::step_of(Millis::now().0.div_euclid(1000), crate::core::mfa::TOTP_PERIOD);
        (grouped, otp::hotp(otp::Algorithm::Sha1, &secret, step, 6))
    }

    struct Server {
        _dir: tempfile::TempDir,
        cert: String,
        addr: SocketAddr,
        core: Arc<Core>,
        stop: tokio::sync::watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    fn test_settings(dir: &std::path::Path) -> WebSettings {
        WebSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            base_url: "https://localhost".into(),
            cert_path: dir.join("web.crt"),
            key_path: dir.join("web.key"),
            generate_if_missing: true,
            hostnames: vec!["localhost".into(), "127.0.0.1".into()],
            metrics_token: Some("s3cret".into()),
            metrics_from_loopback: true,
            http1_idle_timeout: Duration::from_secs(5),
            http2_idle_timeout: Duration::from_secs(60),
            http2_max_age: Duration::from_secs(600),
        }
    }

    async fn start() -> Server {
        start_on(true).await
    }

    async fn start_on(migrated: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let settings = test_settings(dir.path());
        let core = test_core(dir.path(), migrated);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (addr, serve) = tokio::time::timeout(DEADLINE, bind(&settings, Arc::clone(&core), rx))
            .await
            .expect("bind deadline")
            .expect("bind");
        let task = tokio::spawn(serve);
        Server {
            cert: settings.cert_path.to_string_lossy().into_owned(),
            _dir: dir,
            addr,
            core,
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

    /// Codes that are wrong in every step the check accepts now.
    fn wrong_codes(html: &str) -> [String; 2] {
        let marker = "<code class=\"secret\">";
        let start = html.find(marker).unwrap() + marker.len();
        let secret = base32_decode(&html[start..start + html[start..].find('<').unwrap()]);
        let step = otp::step_of(Millis::now().0.div_euclid(1000), crate::core::mfa::TOTP_PERIOD);
        let near: Vec<String> = (step - 2..=step + 2).map(|s| otp::hotp(otp::Algorithm::Sha1, &secret, s, 6)).collect();
        let mut out = (0..).map(|n: u32| format!("{n:06}")).filter(|c| !near.contains(c));
        [out.next().unwrap(), out.next().unwrap()]
    }

    fn backup_codes_on(html: &str) -> Vec<String> {
        html.split("<li><code>").skip(1).filter_map(|rest| rest.split_once("</code></li>")).map(|(c, _)| c.to_owned()).collect()
    }

    #[tokio::test]
    async fn enrollment_flow_over_https() {
        let s = start().await;
        let token = enrollment_token(&s.core, "alice").await;
        let path = format!("/otp/enroll/{token}");

        // The link's page: a "Continue" form and the cookie, nothing secret.
        let first = s.https(&path, &[]).await;
        assert!(first.ok, "{}", first.stderr);
        assert_eq!(first.status, 200);
        assert!(first.header("content-type").unwrap().starts_with("text/html"));
        assert!(first.body.contains(">Continue</button>"), "{}", first.body);
        for secret in ["class=\"secret\"", "otpauth", "<svg", "name=\"code\""] {
            assert!(!first.body.contains(secret), "{secret} shown on GET: {}", first.body);
        }
        let page = first;
        let set_cookie = page.header("set-cookie").expect("csrf cookie").to_owned();
        let csrf_value = hidden_csrf(&page.body);
        let cookie = format!("Cookie: __Host-csrf={csrf_value}");
        // Continue without the cookie (a scanner replaying the form): refused.
        let replay = s.https(&path, &["-d", &format!("csrf={csrf_value}")]).await;
        assert_eq!(replay.status, 403, "{}", replay.body);
        assert!(!replay.body.contains("class=\"secret\""));
        // Continue: QR code, grouped secret, the name, the code form.
        let page = s.https(&path, &["-H", &cookie, "-d", &format!("csrf={csrf_value}")]).await;
        assert!(page.ok, "{}", page.stderr);
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("<svg role=\"img\""), "inline QR SVG");
        let (grouped, _) = key_and_code(&page.body);
        assert_eq!(grouped.len(), 32 + 7, "160-bit key in groups of four: {grouped}");
        assert!(page.body.contains("<strong>alice</strong>"));
        assert!(page.body.contains("<form method=\"post\">"));
        assert!(page.body.contains("name=\"code\""));
        for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set_cookie.contains(attr), "{set_cookie}");
        }
        assert_eq!(hidden_csrf(&page.body), csrf_value, "the same CSRF value in the code form");
        assert!(csrf::well_formed(&csrf_value));
        assert!(set_cookie.starts_with(&format!("__Host-csrf={csrf_value};")), "{set_cookie}");
        let other = csrf::new_token().unwrap();

        // (extra curl args, status, text in the body) in order: core's try
        // counter runs across the rows.
        let right_field = format!("csrf={csrf_value}");
        let wrong_field = format!("csrf={other}");
        let [wrong1, wrong2] = wrong_codes(&page.body);
        let (wrong1, wrong2) = (format!("code={wrong1}"), format!("code={wrong2}"));
        let (_, right) = key_and_code(&page.body);
        let right_spaced = format!("code={}+{}", &right[..3], &right[3..]);
        let right = format!("code={right}");
        let steps: Vec<(Vec<&str>, u16, &str)> = vec![
            // no CSRF at all
            (vec!["-d", &right], 403, "Security check failed"),
            // field without cookie
            (vec!["-d", &right_field, "-d", &right], 403, "Security check failed"),
            // cookie without field
            (vec!["-H", &cookie, "-d", &right], 403, "Security check failed"),
            // wrong field
            (vec!["-H", &cookie, "-d", &wrong_field, "-d", &right], 403, "Security check failed"),
            // not a code: no try used
            (vec!["-H", &cookie, "-d", &right_field, "-d", "code=abc"], 422, "digits only"),
            // wrong codes
            (vec!["-H", &cookie, "-d", &right_field, "-d", &wrong1], 422, "4 tries left"),
            (vec!["-H", &cookie, "-d", &right_field, "-d", &wrong2], 422, "3 tries left"),
            // right code (spaces ignored)
            (vec!["-H", &cookie, "-d", &right_field, "-d", &right_spaced], 200, "will not be shown again"),
            // the link is burnt now
            (vec!["-H", &cookie, "-d", &right_field, "-d", &right], 404, "it may have expired or been used"),
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
                let codes = backup_codes_on(&reply.body);
                assert_eq!(codes.len(), s.core.settings().mfa.backup_codes, "{}", reply.body);
                assert!(codes.iter().all(|c| c.len() == 11 && c.as_bytes()[5] == b'-'), "{codes:?}");
            }
        }
        let alice = s.core.find_user("alice").unwrap();
        assert!(s.core.mfa_status(&alice, Millis::now()).unwrap().enabled, "core turned 2FA on");

        // Every kind of bad link gets the same page.
        for bad in ["/otp/enroll/nope", &path, "/otp/enroll/%FF%FE", "/otp/enroll/a%20b"] {
            let reply = s.https(bad, &[]).await;
            assert_eq!(reply.status, 404, "{bad}");
            assert!(reply.body.contains("This link is not valid: it may have expired or been used"), "{bad}");
        }

        // Too many tries on another link.
        let other_token = enrollment_token(&s.core, "bob").await;
        let other_path = format!("/otp/enroll/{other_token}");
        let other_page = s.https(&other_path, &["-H", &cookie, "-d", &right_field]).await;
        let [wrong, _] = wrong_codes(&other_page.body);
        let wrong = format!("code={wrong}");
        let mut last = 0;
        for _ in 0..crate::core::mfa::ENROLL_TRIES {
            last = s.https(&other_path, &["-H", &cookie, "-d", &right_field, "-d", &wrong]).await.status;
        }
        assert_eq!(last, 429);
        s.stop().await;

        // A store that cannot be read: 503, not "invalid link".
        let broken = start_on(false).await;
        let reply = broken.https(&path, &[]).await;
        assert_eq!(reply.status, 503, "{}", reply.body);
        broken.stop().await;
    }

    #[tokio::test]
    async fn security_headers_on_every_response() {
        let s = start().await;
        let want = [
            ("strict-transport-security", "max-age=31536000"),
            (
                "content-security-policy",
                "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
        ];
        let enroll = format!("/otp/enroll/{}", enrollment_token(&s.core, "alice").await);
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
        let broken = start_on(false).await;
        assert_eq!(broken.https("/healthz", &[]).await.status, 503);
        broken.stop().await;

        // Loopback reads metrics with or without a (right or wrong) token.
        for extra in [vec![], vec!["-H", "Authorization: Bearer wrong"]] {
            let m = s.https("/metrics", &extra).await;
            assert_eq!(m.status, 200);
            assert!(m.body.contains("portcullis_users 0"), "{}", m.body);
            assert!(m.header("content-type").unwrap().starts_with("application/openmetrics-text; version=1.0.0"));
        }

        // Bodies over the limit are refused.
        let big = format!("code={}", "1".repeat(20 * 1024));
        let reply = s.https("/otp/enroll/any", &["-d", &big]).await;
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

        let settings = WebSettings { hostnames: vec![], metrics_token: None, ..test_settings(s._dir.path()) };
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let (_, serve) = bind(&settings, Arc::clone(&s.core), rx.clone()).await.unwrap();
        drop(serve);
        assert_eq!(std::fs::read(&s.cert).unwrap(), before);

        // A dropped sender stops the server too.
        let (tx, rx2) = tokio::sync::watch::channel(false);
        let (_, serve) = bind(&settings, Arc::clone(&s.core), rx2).await.unwrap();
        drop(tx);
        tokio::time::timeout(DEADLINE, serve).await.expect("stops when the sender is gone");

        // Address in use, and missing files without generation.
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let in_use = WebSettings { listen: busy.local_addr().unwrap(), ..settings.clone() };
        let err = bind(&in_use, Arc::clone(&s.core), rx.clone()).await.err().unwrap();
        assert!(err.contains("cannot listen"), "{err}");
        let missing = WebSettings {
            cert_path: s._dir.path().join("none.crt"),
            key_path: s._dir.path().join("none.key"),
            generate_if_missing: false,
            ..settings
        };
        let err = bind(&missing, Arc::clone(&s.core), rx).await.err().unwrap();
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
        // (peer, Authorization, configured token, expected) with loopback allowed.
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
            assert_eq!(metrics_access(*peer, auth.map(str::as_bytes), *token, true), *want, "case {i}");
        }
        // With `metrics_from_loopback: false` loopback is like any peer
        // (a reverse proxy on the same host).
        let cases: &[(IpAddr, Option<&str>, Option<&str>, MetricsAccess)] = &[
            (lo4, None, None, Forbidden),
            (lo6, None, Some("t0k"), Unauthorized),
            (mapped, Some("Bearer nope"), Some("t0k"), Unauthorized),
            (lo4, Some("Bearer t0k"), Some("t0k"), Allowed),
            (far, Some("Bearer t0k"), Some("t0k"), Allowed),
            (far, None, Some("t0k"), Unauthorized),
        ];
        for (i, (peer, auth, token, want)) in cases.iter().enumerate() {
            assert_eq!(metrics_access(*peer, auth.map(str::as_bytes), *token, false), *want, "case {i} without loopback");
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
            metrics_from_loopback: true,
            http1_idle_timeout: Duration::from_secs(5),
            http2_idle_timeout: Duration::from_secs(60),
            http2_max_age: Duration::from_secs(600),
        };
        assert!(!format!("{settings:?}").contains("tok-value"));
        let view = crate::core::mfa::EnrollView {
            username: "alice".into(),
            method: crate::core::mfa::Method::Totp,
            secret_base32: "SECRETVALUE".into(),
            otpauth_uri: "otpauth://totp/x?secret=SECRETVALUE".into(),
            digits: 6,
            issuer: "Portcullis".into(),
        };
        assert!(!format!("{view:?}").contains("SECRETVALUE"));
    }
}
