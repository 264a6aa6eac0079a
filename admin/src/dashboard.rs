//! The web dashboard: a page and a small hand-written script, embedded in the binary,
//! that call the admin REST API with a session cookie instead of a bearer key.
//!
//! Signing in exchanges an admin key for a session: a random id in an `HttpOnly`,
//! `SameSite=Strict` cookie, and a CSRF token the page keeps in memory and sends as
//! `X-CSRF-Token` with every change. The key itself is never stored by the browser.
//! Sessions live in memory (a restart signs everyone out), last
//! [`SESSION_LIFETIME`], and end at once when their admin key is revoked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tollgate_engine::model::{AdminKeyId, random_base62};
use tollgate_engine::secret::SecretDigest;
use tollgate_engine::storage::audit::AuditEvent;

use crate::AdminState;
use crate::auth::{Principal, authenticate};
use crate::error::{ApiError, ApiJson};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tollgate_session";
/// The header that carries the CSRF token on changes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts from sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept at once; signing in beyond it drops the oldest.
pub const MAX_SESSIONS: usize = 10_000;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// The page may load only its own script and style and talk only to its own origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

struct Session {
    key_id: AdminKeyId,
    csrf: String,
    created_at_ms: u64,
    expires_at_ms: u64,
}

/// Signed-in dashboard sessions, keyed by a keyed digest of the cookie value.
#[derive(Default)]
pub(crate) struct Sessions(Mutex<HashMap<SecretDigest, Session>>);

impl Sessions {
    fn insert(&self, id: SecretDigest, session: Session, now_ms: u64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires_at_ms > now_ms);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.created_at_ms).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(id, session);
    }

    /// The session's key id and CSRF token, when it exists and has not expired.
    fn get(&self, id: &SecretDigest, now_ms: u64) -> Option<(AdminKeyId, String, u64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .filter(|s| s.expires_at_ms > now_ms)
            .map(|s| (s.key_id.clone(), s.csrf.clone(), s.expires_at_ms))
    }

    fn remove(&self, id: &SecretDigest) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Ends every session of a key (on revocation).
    pub(crate) fn end_all_of(&self, key_id: &AdminKeyId) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, s| &s.key_id != key_id);
    }
}

/// The dashboard's routes: the page, its assets and the session endpoints.
pub(crate) fn router() -> axum::Router<AdminState> {
    axum::Router::new()
        .route("/", get(index))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/dashboard/session", get(current).post(sign_in).delete(sign_out))
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

async fn index() -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML).into_response();
    security_headers(response.headers_mut());
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    security_headers(response.headers_mut());
    response
}

/// `POST /dashboard/session` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    admin_key: String,
}

/// What the page learns about its session.
#[derive(Serialize)]
struct SessionInfo {
    csrf_token: String,
    admin_key_id: String,
    org_id: Option<String>,
    read_only: bool,
    expires_at: String,
}

impl SessionInfo {
    fn new(principal: &Principal, csrf_token: String, expires_at_ms: u64) -> Self {
        Self {
            csrf_token,
            admin_key_id: principal.key_id.to_string(),
            org_id: principal.org.as_ref().map(ToString::to_string),
            read_only: principal.is_read_only,
            expires_at: crate::dto::rfc3339(expires_at_ms),
        }
    }
}

fn session_cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn source_ip(parts_ip: Option<&ConnectInfo<std::net::SocketAddr>>) -> Option<String> {
    parts_ip.map(|c| c.0.ip().to_string())
}

/// Cookie attributes: `Secure` when the page was reached over HTTPS (through a proxy).
fn cookie(headers: &HeaderMap, value: &str, max_age: u64) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let text = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("tollgate_session=; Max-Age=0"))
}

async fn sign_in(
    State(state): State<AdminState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    let ip = source_ip(extensions.get::<ConnectInfo<std::net::SocketAddr>>());
    let principal = match authenticate(&state, body.admin_key.trim(), ip.clone()).await {
        Ok(principal) => principal,
        Err(refused) => {
            audit_sign_in(&state, None, ip, "failure").await?;
            return Err(refused);
        }
    };
    let now = state.engine.now_ms();
    let id = random_base62(43);
    let csrf = random_base62(43);
    let expires_at_ms = now + SESSION_LIFETIME.as_millis() as u64;
    state.sessions.insert(
        state.engine.digest(&id),
        Session {
            key_id: principal.key_id.clone(),
            csrf: csrf.clone(),
            created_at_ms: now,
            expires_at_ms,
        },
        now,
    );
    audit_sign_in(&state, Some(principal.key_id.clone()), ip, "success").await?;
    let info = SessionInfo::new(&principal, csrf, expires_at_ms);
    let mut response = (StatusCode::CREATED, Json(info)).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&headers, &id, SESSION_LIFETIME.as_secs()));
    security_headers(response.headers_mut());
    Ok(response)
}

async fn audit_sign_in(
    state: &AdminState,
    admin_key_id: Option<AdminKeyId>,
    source_ip: Option<String>,
    outcome: &str,
) -> Result<(), ApiError> {
    let event = AuditEvent {
        at_ms: state.engine.now_ms(),
        kind: "dashboard.sign_in".into(),
        admin_key_id,
        source_ip,
        outcome: outcome.into(),
        ..AuditEvent::default()
    };
    state.engine.storage().batch().audit(event).commit().await?;
    Ok(())
}

/// `GET /dashboard/session`: the current session (so a reloaded page gets its CSRF
/// token back), or 401.
async fn current(State(state): State<AdminState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (principal, csrf, expires_at_ms) = resolve(&state, &headers, false).await?;
    let info = SessionInfo::new(&principal, csrf, expires_at_ms);
    let mut response = Json(info).into_response();
    security_headers(response.headers_mut());
    Ok(response)
}

/// `DELETE /dashboard/session`: signs out (needs the CSRF token like every change).
async fn sign_out(State(state): State<AdminState>, headers: HeaderMap) -> Result<Response, ApiError> {
    resolve(&state, &headers, true).await?;
    if let Some(id) = session_cookie_of(&headers) {
        state.sessions.remove(&state.engine.digest(&id));
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&headers, "", 0));
    Ok(response)
}

/// The principal behind a session cookie. With `is_change` the request must also
/// carry the session's CSRF token.
async fn resolve(
    state: &AdminState,
    headers: &HeaderMap,
    is_change: bool,
) -> Result<(Principal, String, u64), ApiError> {
    let id = session_cookie_of(headers)
        .ok_or_else(|| ApiError::Unauthorized("sign in: there is no dashboard session".into()))?;
    let now = state.engine.now_ms();
    let (key_id, csrf, expires_at_ms) = state
        .sessions
        .get(&state.engine.digest(&id), now)
        .ok_or_else(|| ApiError::Unauthorized("the dashboard session has ended; sign in again".into()))?;
    if is_change {
        let sent = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(sent, csrf.as_bytes())) {
            return Err(ApiError::Forbidden(
                "the CSRF token is missing or wrong: reload the dashboard and try again".into(),
            ));
        }
    }
    let record = state
        .engine
        .storage()
        .admin_key(&key_id)?
        .filter(|r| r.revoked_at_ms.is_none())
        .ok_or_else(|| ApiError::Unauthorized("the admin key of this session was revoked; sign in again".into()))?;
    let principal = Principal {
        key_id,
        org: record.org_id,
        is_read_only: record.is_read_only,
        source_ip: None,
    };
    Ok((principal, csrf, expires_at_ms))
}

/// The principal of a request that came with a session cookie instead of a key.
pub(crate) async fn principal_from_session(parts: &Parts, state: &AdminState) -> Option<Result<Principal, ApiError>> {
    session_cookie_of(&parts.headers)?;
    let ip = source_ip(parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>());
    Some(
        resolve(
            state,
            &parts.headers,
            !matches!(parts.method, Method::GET | Method::HEAD),
        )
        .await
        .map(|(principal, _, _)| Principal {
            source_ip: ip,
            ..principal
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tollgate_session=abc; b=2"),
        );
        assert_eq!(session_cookie_of(&headers).as_deref(), Some("abc"));
        headers.insert(header::COOKIE, HeaderValue::from_static("tollgate_sessionx=abc"));
        assert_eq!(session_cookie_of(&headers), None);
    }

    #[test]
    fn cookies_are_http_only_and_strict() {
        let text = cookie(&HeaderMap::new(), "v", 10);
        let text = text.to_str().unwrap();
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Strict") && !text.contains("Secure"));
        let mut proxied = HeaderMap::new();
        proxied.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(cookie(&proxied, "v", 10).to_str().unwrap().ends_with("; Secure"));
    }
}
