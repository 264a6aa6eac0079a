//! Request checks: `ANY /v1/check/{*path}` (the Envoy ext_authz HTTP / nginx
//! auth_request shape) and the reverse proxy for every other path.
//!
//! Both run the same [`authorize`]: bearer token (RFC 6750) → signature, issuer,
//! audience and times (cached after the first verify) → route policy scopes → one
//! engine check-and-consume. Every checked response carries the quota headers.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use serde_json::json;
use tollgate_engine::quota::QuotaStatus;
use tollgate_engine::{CheckOutcome, EngineError, Refusal, TokenContext};

use crate::error::{
    BearerError, X_TOLLGATE_CLIENT_ID, X_TOLLGATE_ORG, X_TOLLGATE_SCOPES, checked_headers, insert_from_buffer,
    quota_exceeded, quota_headers,
};
use crate::jwt::VerifiedToken;
use crate::{ClientIp, GatewayState};

/// Every path outside the token routes: `/v1/check` and `/v1/check/{*path}` are
/// checks, every other path is proxied.
///
/// The check paths are told apart here rather than by two routes: a routed request
/// gets its matched path and the captured `{*path}` stored in its extensions (two
/// allocations, and a map to drop, on every check), and a check uses neither.
pub async fn unreserved(State(state): State<GatewayState>, request: Request) -> Response {
    if is_check_path(request.uri().path()) {
        return check(State(state), request).await;
    }
    let (mut parts, body) = request.into_parts();
    let ip = match ClientIp::from_request_parts(&mut parts, &state).await {
        Ok(ip) => ip,
        Err(never) => match never {},
    };
    proxy(State(state), ip, Request::from_parts(parts, body)).await
}

/// `/v1/check`, or `/v1/check/` followed by at least one character (the paths the
/// routes `/v1/check` and `/v1/check/{*path}` would match).
fn is_check_path(path: &str) -> bool {
    match path.strip_prefix("/v1/check") {
        Some("") => true,
        Some(rest) => rest.len() > 1 && rest.starts_with('/'),
        None => false,
    }
}

/// An authorised, counted request.
pub struct Authorized {
    /// The verified token.
    pub token: Arc<VerifiedToken>,
    /// The quota after this request.
    pub status: QuotaStatus,
    /// When it was decided (engine clock).
    pub now_ms: u64,
}

impl Authorized {
    /// Adds quota and identity headers.
    fn decorate(&self, headers: &mut HeaderMap) {
        let identity = &self.token.identity;
        checked_headers(
            headers,
            &self.status,
            self.now_ms,
            [
                identity.client_id.as_bytes(),
                identity.org.as_bytes(),
                identity.scopes.as_bytes(),
            ],
        );
    }
}

/// Room for the quota and identity headers (and hyper's own), reserved up front so
/// that the header map is not grown and rehashed several times per response.
const CHECKED_RESPONSE_HEADERS: usize = 16;

fn identity_headers(headers: &mut HeaderMap, token: &VerifiedToken) {
    headers.insert(X_TOLLGATE_CLIENT_ID, token.identity.client_id.clone());
    headers.insert(X_TOLLGATE_ORG, token.identity.org.clone());
    headers.insert(X_TOLLGATE_SCOPES, token.identity.scopes.clone());
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, BearerError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(BearerError::Missing);
    };
    let text = value
        .to_str()
        .map_err(|_| BearerError::InvalidRequest("the Authorization header is not valid text".into()))?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(BearerError::InvalidRequest(
            "use the Bearer scheme: Authorization: Bearer <access token>".into(),
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(BearerError::InvalidRequest("the Bearer token is empty".into()));
    }
    Ok(token)
}

fn refusal_message(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::UnknownClient => "the token's client is not registered",
        Refusal::Disabled => "the integration is disabled; ask the platform's admin",
        Refusal::Revoked => "the integration was revoked",
        Refusal::TokenRevoked => "the access token was revoked; request a new one",
        Refusal::TokenIssuedBeforeCutoff => {
            "the access token was issued before the integration's credentials were rotated; request a new one"
        }
    }
}

/// The whole decision for one request: token, scopes, quota.
pub async fn authorize(
    state: &GatewayState,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Result<Authorized, Response> {
    let now = state.engine.now_ms();
    let raw = bearer_token(headers).map_err(IntoResponse::into_response)?;
    let token = state
        .tokens
        .verify(raw, now)
        .map_err(|e| BearerError::InvalidToken(e.to_string()).into_response())?;
    let required = state.policy.required_scopes(method, path);
    if !required.iter().all(|s| token.scopes.iter().any(|t| t == s)) {
        metrics::counter!("tollgate_checks_total", "outcome" => "insufficient_scope").increment(1);
        return Err(BearerError::InsufficientScope {
            required: required.to_vec(),
        }
        .into_response());
    }
    let context = TokenContext {
        issued_at_ms: token.claims.iat * 1000,
        jti: Some(token.jti.clone()),
    };
    match state
        .engine
        .check_hinted(&token.client_id, context, Some(&token.actor))
        .await
    {
        Ok(CheckOutcome::Admitted(status)) => {
            state.checks_admitted.increment(1);
            Ok(Authorized {
                token,
                status,
                now_ms: now,
            })
        }
        Ok(CheckOutcome::QuotaExceeded(status)) => {
            metrics::counter!("tollgate_checks_total", "outcome" => "quota_exceeded").increment(1);
            let mut response = quota_exceeded(&status, now);
            identity_headers(response.headers_mut(), &token);
            Err(response)
        }
        Ok(CheckOutcome::Refused(refusal)) => {
            metrics::counter!("tollgate_checks_total", "outcome" => refusal.as_str()).increment(1);
            Err(BearerError::InvalidToken(refusal_message(refusal).into()).into_response())
        }
        Err(EngineError::Overloaded { retry_after }) => Err(BearerError::Unavailable(retry_after).into_response()),
        Err(e) => {
            tracing::error!(error = %e, "request check failed");
            Err(BearerError::Unavailable(std::time::Duration::from_secs(1)).into_response())
        }
    }
}

/// Headers in which a proxy in front (Envoy, nginx `auth_request`) names the method
/// of the request being authorised. Looked up by `HeaderName`: a lookup by `&str`
/// parses and validates the name again on every check.
const ORIGINAL_METHOD_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("x-forwarded-method"),
    HeaderName::from_static("x-original-method"),
];

/// The method being authorised: the original one when a proxy says so.
fn original_method<'a>(headers: &'a HeaderMap, method: &'a Method) -> &'a str {
    ORIGINAL_METHOD_HEADERS
        .iter()
        .find_map(|h| headers.get(h).and_then(|v| v.to_str().ok()))
        .filter(|m| !m.is_empty() && m.len() <= 16 && m.bytes().all(|b| b.is_ascii_alphabetic()))
        .unwrap_or(method.as_str())
}

/// `ANY /v1/check/{*path}`: 200 allow, or the refusal, with the same headers the
/// proxy would send. The path checked is the part after `/v1/check`.
///
/// It takes the whole request rather than the method, URI and header extractors,
/// which would each clone their part of it on every check.
async fn check(State(state): State<GatewayState>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let path = parts
        .uri
        .path()
        .strip_prefix("/v1/check")
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let method = original_method(&parts.headers, &parts.method);
    match authorize(&state, &parts.headers, method, path).await {
        Ok(ok) => {
            let mut response = StatusCode::OK.into_response();
            response.headers_mut().reserve(CHECKED_RESPONSE_HEADERS);
            ok.decorate(response.headers_mut());
            response
        }
        Err(refusal) => refusal,
    }
}

/// Refuses paths that try to climb out of the proxied tree.
fn has_traversal(path: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    decoded.contains('\\') || decoded.split('/').any(|seg| seg == ".." || seg == ".")
}

/// How long the proxy waits for the upstream.
pub const UPSTREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Hop-by-hop headers (RFC 9110 §7.6.1), forwarded in neither direction. Names, not
/// strings: a removal by `&str` parses and hashes the name again on every request.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What the upstream is told about the caller: the identity headers and
/// `X-Forwarded-For`, copied into one buffer. Cloning the cached token's values would
/// write their shared reference counts, which both cores then pass back and forth on
/// every request with that token (as [`checked_headers`] explains).
fn forwarded_headers(headers: &mut HeaderMap, token: &VerifiedToken, ip: &ClientIp) {
    use std::fmt::Write as _;
    let identity = &token.identity;
    let values = [
        identity.client_id.as_bytes(),
        identity.org.as_bytes(),
        identity.scopes.as_bytes(),
    ];
    // An IPv6 address is at most 39 characters.
    let mut buf = BytesMut::with_capacity(values.iter().map(|v| v.len()).sum::<usize>() + 39);
    let mut ends = [0usize; 4];
    for (value, end) in values.iter().zip(&mut ends) {
        buf.extend_from_slice(value);
        *end = buf.len();
    }
    // Writing to a BytesMut cannot fail.
    let _ = write!(buf, "{}", ip.0);
    ends[3] = buf.len();
    insert_from_buffer(
        headers,
        [X_TOLLGATE_CLIENT_ID, X_TOLLGATE_ORG, X_TOLLGATE_SCOPES, X_FORWARDED_FOR],
        buf,
        &ends,
    );
}

/// Every path outside the reserved ones: check, then forward to the upstream (or
/// answer from the built-in demo upstream when none is configured).
pub async fn proxy(State(state): State<GatewayState>, ip: ClientIp, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if has_traversal(&path) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_path", "error_description": "the path contains `.` or `..` segments or a backslash" })),
        )
            .into_response();
    }
    let authorized = match authorize(&state, &parts.headers, parts.method.as_str(), &path).await {
        Ok(ok) => ok,
        Err(refusal) => return refusal,
    };
    let mut response = match &state.upstream {
        None => demo_upstream(&parts.method, &path, &authorized.token),
        Some(upstream) => forward(upstream, parts, body, &authorized, &ip).await,
    };
    quota_headers(response.headers_mut(), &authorized.status, authorized.now_ms);
    response
}

/// The built-in upstream of the quick start.
fn demo_upstream(method: &Method, path: &str, token: &VerifiedToken) -> Response {
    Json(json!({
        "message": "Hello from Tollgate's demo upstream. Configure --upstream to proxy to your API.",
        "method": method.as_str(),
        "path": path,
        "client_id": token.claims.client_id,
        "org": token.claims.org,
        "scopes": token.scopes,
    }))
    .into_response()
}

/// Where proxied requests go.
#[derive(Clone)]
pub struct Upstream {
    /// Base URI (scheme + authority + optional path prefix).
    pub base: Uri,
    /// The HTTP client.
    pub client: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
}

impl Upstream {
    /// An upstream at `base` (http only).
    pub fn new(base: Uri) -> Self {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        Self { base, client }
    }
}

async fn forward(
    upstream: &Upstream,
    mut parts: axum::http::request::Parts,
    body: Body,
    authorized: &Authorized,
    ip: &ClientIp,
) -> Response {
    let prefix = upstream.base.path().trim_end_matches('/');
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let target = format!(
        "{}://{}{prefix}{path_and_query}",
        upstream.base.scheme_str().unwrap_or("http"),
        upstream.base.authority().map_or("", |a| a.as_str())
    );
    let Ok(uri) = target.parse::<Uri>() else {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "invalid_path" }))).into_response();
    };
    let headers = &mut parts.headers;
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // The upstream trusts these: never let a caller set them.
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-tollgate-"))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    forwarded_headers(headers, &authorized.token, ip);
    parts.uri = uri;
    let request = axum::http::Request::from_parts(parts, body);
    // The one place a request can wait on something outside Tollgate: bound it here
    // (a timer per request everywhere else would cost ~40 % of check throughput).
    match tokio::time::timeout(UPSTREAM_TIMEOUT, upstream.client.request(request)).await {
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            Json(json!({ "error": "upstream_timeout", "error_description": "the upstream service did not answer in time" })),
        )
            .into_response(),
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            for name in &HOP_BY_HOP {
                parts.headers.remove(name);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the upstream did not answer");
            (
                StatusCode::BAD_GATEWAY,
                Json(json!({ "error": "bad_gateway", "error_description": "the upstream service did not answer" })),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_paths_are_the_ones_the_check_routes_would_match() {
        for path in ["/v1/check", "/v1/check/v1/items", "/v1/check/x", "/v1/check//"] {
            assert!(is_check_path(path), "{path}");
        }
        for path in [
            "/v1/checks",
            "/v1/check/",
            "/v1/checkout/x",
            "/v1/items",
            "/",
            "/V1/check",
        ] {
            assert!(!is_check_path(path), "{path}");
        }
    }

    #[test]
    fn traversal_is_spotted_even_when_encoded() {
        assert!(has_traversal("/a/../b"));
        assert!(has_traversal("/a/%2e%2e/b"));
        assert!(has_traversal("/a/%2E%2E"));
        assert!(has_traversal("/a\\b"));
        assert!(has_traversal("/./a"));
        assert!(!has_traversal("/a/..b/c"));
        assert!(!has_traversal("/v1/messages"));
    }
}
