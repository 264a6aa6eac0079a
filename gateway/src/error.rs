//! The gateway's error responses, each in the format its RFC prescribes.
//!
//! - token, introspect and revoke endpoints: RFC 6749 §5.2 JSON (`error`,
//!   `error_description`), `invalid_client` with 401 + `WWW-Authenticate: Basic`;
//! - bearer-protected requests (check, proxy): RFC 6750 `WWW-Authenticate: Bearer`
//!   challenges with a small JSON body;
//! - the quota limit: RFC 9457 `application/problem+json`, type `quota-exceeded`.
//!
//! Messages never contain a secret or a token.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use serde_json::json;
use tollgate_engine::quota::QuotaStatus;

/// An RFC 6749 §5.2 error from the token, introspection or revocation endpoint.
#[derive(Debug, Clone)]
pub struct OAuthError {
    /// HTTP status.
    pub status: StatusCode,
    /// The RFC 6749 error code.
    pub code: &'static str,
    /// What happened and what to do.
    pub description: String,
    /// `Retry-After`, for throttling and overload.
    pub retry_after: Option<Duration>,
}

impl OAuthError {
    /// 400 `invalid_request` (a malformed request: missing or repeated parameter, …).
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// 401 `invalid_client` (client authentication failed).
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    /// An error with any status and code.
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

/// Whole seconds for `Retry-After`, at least 1.
pub fn retry_after_secs(after: Duration) -> u64 {
    after.as_secs() + u64::from(after.subsec_nanos() > 0)
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "error": self.code, "error_description": self.description })),
        )
            .into_response();
        let headers = response.headers_mut();
        no_store(headers);
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="tollgate", charset="UTF-8""#),
            );
        }
        if let Some(after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(after)));
        }
        response
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1).
pub fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// An RFC 6750 refusal of a bearer-protected request.
#[derive(Debug, Clone)]
pub enum BearerError {
    /// No credentials at all: 401 with a bare challenge.
    Missing,
    /// The `Authorization` header is not `Bearer <token>`: 400 `invalid_request`.
    InvalidRequest(String),
    /// The token is not acceptable: 401 `invalid_token`.
    InvalidToken(String),
    /// The token lacks scopes for this route: 403 `insufficient_scope`.
    InsufficientScope {
        /// Scopes the route needs.
        required: Vec<String>,
    },
    /// The engine is overloaded or did not answer: 503 with `Retry-After`.
    Unavailable(Duration),
}

fn quoted(s: &str) -> String {
    // Quoted-string per RFC 7230: drop what cannot appear inside.
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

impl IntoResponse for BearerError {
    fn into_response(self) -> Response {
        let (status, code, description, challenge) = match &self {
            Self::Missing => (
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "send an access token: Authorization: Bearer <token> (get one from POST /oauth/token)".to_string(),
                r#"Bearer realm="tollgate""#.to_string(),
            ),
            Self::InvalidRequest(d) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                d.clone(),
                format!(
                    r#"Bearer realm="tollgate", error="invalid_request", error_description="{}""#,
                    quoted(d)
                ),
            ),
            Self::InvalidToken(d) => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                d.clone(),
                format!(
                    r#"Bearer realm="tollgate", error="invalid_token", error_description="{}""#,
                    quoted(d)
                ),
            ),
            Self::InsufficientScope { required } => {
                let scope = required.join(" ");
                (
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    format!("this route needs the scope(s) `{scope}`; request a token that has them"),
                    format!(
                        r#"Bearer realm="tollgate", error="insufficient_scope", scope="{}""#,
                        quoted(&scope)
                    ),
                )
            }
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the gateway is overloaded; retry after the time in Retry-After".to_string(),
                String::new(),
            ),
        };
        let mut response = (status, Json(json!({ "error": code, "error_description": description }))).into_response();
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&challenge)
            && !challenge.is_empty()
        {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Self::Unavailable(after) = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(after)));
        }
        response
    }
}

/// Seconds from `now_ms` until the quota resets.
pub fn seconds_to_reset(status: &QuotaStatus, now_ms: u64) -> u64 {
    status.resets_at_ms.saturating_sub(now_ms).div_ceil(1000)
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_USED: HeaderName = HeaderName::from_static("x-ratelimit-used");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const X_RATELIMIT_NEARLIMIT: HeaderName = HeaderName::from_static("x-ratelimit-nearlimit");
const TOLLGATE_QUOTA_WARNING: HeaderName = HeaderName::from_static("tollgate-quota-warning");
/// `X-Tollgate-Client-Id`: the checked token's client.
pub const X_TOLLGATE_CLIENT_ID: HeaderName = HeaderName::from_static("x-tollgate-client-id");
/// `X-Tollgate-Org`: the checked token's organisation.
pub const X_TOLLGATE_ORG: HeaderName = HeaderName::from_static("x-tollgate-org");
/// `X-Tollgate-Scopes`: the checked token's scopes, space-separated.
pub const X_TOLLGATE_SCOPES: HeaderName = HeaderName::from_static("x-tollgate-scopes");

/// The quota headers of DESIGN §7, on every checked response. This runs per request:
/// header names are parsed once, at compile time, and the six values are written into
/// one buffer and handed out as slices of it (one allocation instead of six).
pub fn quota_headers(headers: &mut HeaderMap, status: &QuotaStatus, now_ms: u64) {
    write_checked_headers(headers, status, now_ms, None);
}

/// The quota headers and the three identity headers (`X-Tollgate-Client-Id`, `-Org`,
/// `-Scopes`, values given) of an allowed check, all nine values in one buffer.
///
/// The identity values are copied in rather than cloned: a clone of a cached header
/// value writes its shared reference count, which both cores then pass back and forth
/// on every check of that token, while copying a few dozen bytes only reads them.
pub fn checked_headers(headers: &mut HeaderMap, status: &QuotaStatus, now_ms: u64, identity: [&[u8]; 3]) {
    write_checked_headers(headers, status, now_ms, Some(identity));
}

fn write_checked_headers(headers: &mut HeaderMap, status: &QuotaStatus, now_ms: u64, identity: Option<[&[u8]; 3]>) {
    use std::fmt::Write as _;
    let reset_in = seconds_to_reset(status, now_ms);
    let identity_len: usize = identity.iter().flatten().map(|v| v.len()).sum();
    let mut buf = BytesMut::with_capacity(128 + identity_len);
    let mut ends = [0usize; 9];
    // Writing to a BytesMut cannot fail.
    let _ = write!(buf, "\"daily\";q={};w=86400", status.limit);
    ends[0] = buf.len();
    let _ = write!(buf, "\"daily\";r={};t={reset_in}", status.remaining);
    ends[1] = buf.len();
    let _ = write!(buf, "{}", status.limit);
    ends[2] = buf.len();
    let _ = write!(buf, "{}", status.remaining);
    ends[3] = buf.len();
    let _ = write!(buf, "{}", status.used);
    ends[4] = buf.len();
    let _ = write!(buf, "{}", status.resets_at_ms.div_ceil(1000));
    ends[5] = buf.len();
    let mut count = 6;
    if let Some(identity) = identity {
        for value in identity {
            buf.extend_from_slice(value);
            ends[count] = buf.len();
            count += 1;
        }
    }
    let names = [
        RATELIMIT_POLICY,
        RATELIMIT,
        X_RATELIMIT_LIMIT,
        X_RATELIMIT_REMAINING,
        X_RATELIMIT_USED,
        X_RATELIMIT_RESET,
        X_TOLLGATE_CLIENT_ID,
        X_TOLLGATE_ORG,
        X_TOLLGATE_SCOPES,
    ];
    insert_from_buffer(headers, names, buf, &ends[..count]);
    if let Some(threshold) = status.warning_threshold {
        headers.insert(X_RATELIMIT_NEARLIMIT, HeaderValue::from_static("true"));
        let warning = format!(
            "{threshold}% of the daily quota used ({} of {}); it resets in {reset_in} s",
            status.used, status.limit
        );
        if let Ok(v) = HeaderValue::try_from(warning) {
            headers.insert(TOLLGATE_QUOTA_WARNING, v);
        }
    }
}

/// Sets `names[i]` to the `i`-th value written into `buf`, which ends at `ends[i]`:
/// every value a slice of the one buffer, one allocation for them all. A value that
/// is not a valid header value is left out (the writers put only digits, quotes,
/// `;`, `=`, IP addresses and values that were valid header values already into it;
/// `from_maybe_shared` checks them again).
pub fn insert_from_buffer<const N: usize>(
    headers: &mut HeaderMap,
    names: [HeaderName; N],
    buf: BytesMut,
    ends: &[usize],
) {
    let values = buf.freeze();
    let mut start = 0;
    for (name, &end) in names.into_iter().zip(ends) {
        if let Ok(value) = HeaderValue::from_maybe_shared(values.slice(start..end)) {
            headers.insert(name, value);
        }
        start = end;
    }
}

/// 429 with `Retry-After` and an RFC 9457 `quota-exceeded` problem.
pub fn quota_exceeded(status: &QuotaStatus, now_ms: u64) -> Response {
    let reset_in = seconds_to_reset(status, now_ms);
    let reset_at = time::OffsetDateTime::from_unix_timestamp((status.resets_at_ms / 1000) as i64)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    let body = json!({
        "type": "https://tollgate.dev/problems/quota-exceeded",
        "title": "Daily request quota exceeded",
        "status": 429,
        "detail": format!(
            "This integration has used all {} requests of its daily quota; it resets at {reset_at} (in {reset_in} s).",
            status.limit
        ),
        "violated-policies": ["daily"],
        "limit": status.limit,
        "used": status.used,
        "reset": reset_at,
        "retry_after_seconds": reset_in,
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from(reset_in.max(1)));
    quota_headers(headers, status, now_ms);
    response
}
