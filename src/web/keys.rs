//! Hardware key registration by emailed link: the page
//! (`GET /webauthn/enroll/{token}`), and the two JSON calls its script
//! makes, `…/options` (start a ceremony) and `…/finish` (the browser's
//! answer). Both POSTs carry the CSRF value in `X-CSRF-Token`, checked
//! against the `__Host-` cookie the page set, before anything else.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{cookie_headers, csrf, html, pages, plausible_token, refusal_page, AppState};
use crate::core::mfa::{LinkRefusal, WebClient};
use crate::core::webauthn::KeyRefusal;
use crate::model::Millis;

pub(super) const ROUTE_PAGE: &str = "/webauthn/enroll/{token}";
pub(super) const ROUTE_OPTIONS: &str = "/webauthn/enroll/{token}/options";
pub(super) const ROUTE_FINISH: &str = "/webauthn/enroll/{token}/finish";
pub(super) const ROUTE_APPROVE: &str = "/webauthn/approve/{id}";
pub(super) const ROUTE_APPROVE_OPTIONS: &str = "/webauthn/approve/{id}/options";
pub(super) const ROUTE_APPROVE_FINISH: &str = "/webauthn/approve/{id}/finish";
pub(super) const ROUTE_APPROVE_DENY: &str = "/webauthn/approve/{id}/deny";

/// The script of the page (the CSP allows scripts from the gate only).
pub(super) const SCRIPT: &str = include_str!("static/webauthn.js");

pub(super) async fn page(State(state): State<AppState>, token: Result<Path<String>, PathRejection>, headers: HeaderMap) -> Response {
    let token = match token {
        Ok(Path(t)) if plausible_token(&t) => t,
        _ => {
            tracing::info!(route = ROUTE_PAGE, outcome = "invalid_token", "web: key enrollment page");
            return refusal_page(LinkRefusal::InvalidToken);
        }
    };
    let view = match state.core.webauthn_enrollment_view(&token, Millis::now()) {
        Ok(v) => v,
        Err(r) => {
            tracing::info!(route = ROUTE_PAGE, outcome = super::outcome(r), "web: key enrollment page");
            return refusal_page(r);
        }
    };
    let Some(csrf_value) = csrf_for(&headers) else { return refusal_page(LinkRefusal::Unavailable) };
    tracing::info!(route = ROUTE_PAGE, outcome = "shown", "web: key enrollment page");
    let base = format!("/webauthn/enroll/{token}");
    let mut response = html(StatusCode::OK, pages::key_enroll(&view, &csrf_value, &base));
    if let Ok(cookie) = HeaderValue::from_str(&csrf::set_cookie(&csrf_value)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn refusal(route: &'static str, r: &KeyRefusal) -> Response {
    tracing::info!(route, outcome = r.outcome(), "web: key enrollment");
    let status = match r {
        KeyRefusal::Link(LinkRefusal::InvalidToken) => StatusCode::NOT_FOUND,
        KeyRefusal::Link(LinkRefusal::TooManyTries) => StatusCode::TOO_MANY_REQUESTS,
        KeyRefusal::Link(_) => StatusCode::SERVICE_UNAVAILABLE,
        KeyRefusal::AlreadyRegistered => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    json_error(status, &r.message())
}

/// The checks both calls share: CSRF header against the cookie, JSON
/// content type, a plausible token.
fn admit(route: &'static str, token: Result<Path<String>, PathRejection>, headers: &HeaderMap) -> Result<String, Response> {
    let cookie = csrf::from_cookie_headers(cookie_headers(headers));
    let field = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    if !csrf::verify(cookie, field) {
        tracing::info!(route, outcome = "csrf_failed", "web: key enrollment");
        return Err(json_error(StatusCode::FORBIDDEN, "The page's security check failed: reload the page from the link and try again."));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if !json {
        tracing::info!(route, outcome = "not_json", "web: key enrollment");
        return Err(json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Send JSON."));
    }
    match token {
        Ok(Path(t)) if plausible_token(&t) => Ok(t),
        _ => Err(refusal(route, &KeyRefusal::Link(LinkRefusal::InvalidToken))),
    }
}

fn client(peer: SocketAddr, headers: &HeaderMap) -> WebClient {
    WebClient {
        ip: Some(peer.ip()),
        user_agent: headers.get(header::USER_AGENT).map(|v| crate::model::strip_unsafe(&String::from_utf8_lossy(v.as_bytes()))),
    }
}

#[derive(serde::Deserialize)]
struct OptionsBody {
    #[serde(default)]
    platform: bool,
}

pub(super) async fn options(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    token: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match admit(ROUTE_OPTIONS, token, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let platform = serde_json::from_slice::<OptionsBody>(&body).map(|b| b.platform).unwrap_or(false);
    match state.core.webauthn_register_start(&token, platform, &client(peer, &headers), Millis::now()).await {
        Ok(options) => {
            tracing::info!(route = ROUTE_OPTIONS, outcome = "started", "web: key enrollment");
            Json(options).into_response()
        }
        Err(r) => refusal(ROUTE_OPTIONS, &r),
    }
}

pub(super) async fn finish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    token: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match admit(ROUTE_FINISH, token, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match state.core.webauthn_register_finish(&token, &body, &client(peer, &headers), Millis::now()).await {
        Ok(key) => {
            tracing::info!(route = ROUTE_FINISH, outcome = "registered", "web: key enrollment");
            Json(serde_json::json!({ "key": key })).into_response()
        }
        Err(r) => refusal(ROUTE_FINISH, &r),
    }
}

/// The CSRF value a page keeps (from the cookie, or a new one).
fn csrf_for(headers: &HeaderMap) -> Option<String> {
    let existing = csrf::from_cookie_headers(cookie_headers(headers)).filter(|v| csrf::well_formed(v));
    match existing {
        Some(v) => Some(v.to_owned()),
        None => csrf::new_token().map_err(|e| tracing::error!(error = %e, "web: no randomness for the CSRF value")).ok(),
    }
}

pub(super) async fn approve_page(State(state): State<AppState>, id: Result<Path<String>, PathRejection>, headers: HeaderMap) -> Response {
    let id = match id {
        Ok(Path(t)) if plausible_token(&t) => t,
        _ => {
            tracing::info!(route = ROUTE_APPROVE, outcome = "invalid_token", "web: approval page");
            return refusal_page(LinkRefusal::InvalidToken);
        }
    };
    let view = match state.core.key_approval_view(&id, Millis::now()) {
        Ok(v) => v,
        Err(_) => {
            tracing::info!(route = ROUTE_APPROVE, outcome = "invalid_token", "web: approval page");
            return html(StatusCode::NOT_FOUND, pages::approval_gone());
        }
    };
    let Some(csrf_value) = csrf_for(&headers) else { return refusal_page(LinkRefusal::Unavailable) };
    tracing::info!(route = ROUTE_APPROVE, outcome = "shown", "web: approval page");
    let mut response = html(StatusCode::OK, pages::key_approve(&view, &csrf_value, &format!("/webauthn/approve/{id}")));
    if let Ok(cookie) = HeaderValue::from_str(&csrf::set_cookie(&csrf_value)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

pub(super) async fn approve_options(State(state): State<AppState>, id: Result<Path<String>, PathRejection>, headers: HeaderMap) -> Response {
    let id = match admit(ROUTE_APPROVE_OPTIONS, id, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match state.core.key_approval_start(&id, Millis::now()) {
        Ok(options) => {
            tracing::info!(route = ROUTE_APPROVE_OPTIONS, outcome = "started", "web: approval");
            Json(options).into_response()
        }
        Err(r) => refusal(ROUTE_APPROVE_OPTIONS, &r),
    }
}

pub(super) async fn approve_finish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = match admit(ROUTE_APPROVE_FINISH, id, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match state.core.key_approval_finish(&id, &body, &client(peer, &headers), Millis::now()).await {
        Ok(_) => {
            tracing::info!(route = ROUTE_APPROVE_FINISH, outcome = "approved", "web: approval");
            Json(serde_json::json!({ "approved": true })).into_response()
        }
        Err(r) => refusal(ROUTE_APPROVE_FINISH, &r),
    }
}

pub(super) async fn approve_deny(State(state): State<AppState>, id: Result<Path<String>, PathRejection>, headers: HeaderMap) -> Response {
    let id = match admit(ROUTE_APPROVE_DENY, id, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match state.core.key_approval_deny(&id, Millis::now()) {
        Ok(()) => {
            tracing::info!(route = ROUTE_APPROVE_DENY, outcome = "refused", "web: approval");
            Json(serde_json::json!({ "refused": true })).into_response()
        }
        Err(r) => refusal(ROUTE_APPROVE_DENY, &r),
    }
}

pub(super) async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}
