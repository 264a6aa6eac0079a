//! OAuth 2.0 endpoints: token (RFC 6749 §4.4 client credentials), introspection
//! (RFC 7662), revocation (RFC 7009), JWKS and server metadata (RFC 8414).

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::json;
use tollgate_engine::model::{ClientId, Scope, random_base62};
use tollgate_engine::storage::StorageError;
use tollgate_engine::storage::audit::AuditEvent;
use tollgate_engine::{AuthOutcome, AuthRefusal, AuthRequest, EngineError, Grant, RequestContext, TokenContext};

use crate::error::{OAuthError, no_store};
use crate::throttle::ThrottleKey;
use crate::{ClientIp, GatewayState};

/// Largest form body accepted by the OAuth endpoints.
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// Most scopes one token request may name.
const MAX_REQUESTED_SCOPES: usize = 64;

/// The OAuth routes.
pub fn router() -> Router<GatewayState> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/introspect", post(introspect))
        .route("/oauth/revoke", post(revoke))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
}

/// A parsed `application/x-www-form-urlencoded` body with no repeated parameter.
#[derive(Debug, Default)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

fn decode_component(raw: &[u8], what: &str) -> Result<String, OAuthError> {
    let spaced: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    percent_encoding::percent_decode(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| OAuthError::invalid_request(format!("the {what} is not valid UTF-8 after percent-decoding")))
}

impl Form {
    /// Parses the body; RFC 6749 §3.2: parameters must not repeat.
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match part.iter().position(|&b| b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &b""[..]),
            };
            let name = decode_component(name, "name of a form parameter")?;
            let value = decode_component(
                value,
                &format!("value of `{}`", name.chars().take(40).collect::<String>()),
            )?;
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::invalid_request(format!(
                    "the parameter `{}` is repeated; send each parameter once",
                    name.chars().take(40).collect::<String>()
                )));
            }
            pairs.push((name, value));
        }
        Ok(Self { pairs })
    }

    /// A parameter's value; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("the `{name}` parameter is missing")))
    }
}

/// Checks the content type and reads a bounded form body.
async fn read_form(headers: &HeaderMap, body: Body) -> Result<Form, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "send the parameters as application/x-www-form-urlencoded (RFC 6749 §4.4.2)",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
        OAuthError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("the request body is larger than {MAX_FORM_BYTES} bytes"),
        )
    })?;
    Form::parse(&bytes)
}

/// The client's credentials and how they were sent.
struct Credentials {
    client_id: String,
    client_secret: String,
}

/// `client_secret_basic` or `client_secret_post`, exactly one of them.
fn credentials(headers: &HeaderMap, form: &Form) -> Result<Credentials, OAuthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| OAuthError::invalid_request("the Authorization header is not valid text"))?;
            let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::invalid_client(
                    "use HTTP Basic authentication (client_secret_basic) or client_id and client_secret in the form",
                ));
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| OAuthError::invalid_client("the Basic credentials are not valid base64"))?;
            let i = decoded
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| OAuthError::invalid_client("the Basic credentials must be client_id:client_secret"))?;
            Some(Credentials {
                client_id: decode_component(&decoded[..i], "Basic client id")?,
                client_secret: decode_component(&decoded[i + 1..], "Basic client secret")?,
            })
        }
    };
    let posted = form.get("client_secret").is_some();
    match (basic, posted) {
        (Some(_), true) => Err(OAuthError::invalid_request(
            "send the client credentials once: either HTTP Basic or client_secret in the form, not both",
        )),
        (Some(basic), false) => {
            if form.get("client_id").is_some_and(|id| id != basic.client_id) {
                return Err(OAuthError::invalid_request(
                    "the form's client_id differs from the Basic credentials",
                ));
            }
            Ok(basic)
        }
        (None, true) => Ok(Credentials {
            client_id: form.required("client_id")?.to_owned(),
            client_secret: form.required("client_secret")?.to_owned(),
        }),
        (None, false) => Err(OAuthError::invalid_client(
            "client authentication is required: HTTP Basic (client_secret_basic) or client_id and client_secret in the form",
        )),
    }
}

fn parse_requested_scopes(raw: Option<&str>) -> Result<Option<Vec<Scope>>, OAuthError> {
    let Some(raw) = raw else { return Ok(None) };
    let items: Vec<&str> = raw.split(' ').filter(|s| !s.is_empty()).collect();
    if items.len() > MAX_REQUESTED_SCOPES {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            format!("{} scopes requested; at most {MAX_REQUESTED_SCOPES}", items.len()),
        ));
    }
    let mut scopes: Vec<Scope> = Vec::with_capacity(items.len());
    for item in items {
        let scope =
            Scope::parse(item).map_err(|e| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string()))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(Some(scopes))
}

const AUTH_FAILED: &str =
    "client authentication failed: unknown client, wrong or expired secret, or the integration is not active";

fn throttle_keys(ip: &ClientIp, client_id: &str) -> Vec<ThrottleKey> {
    let mut keys = vec![ThrottleKey::Ip(ip.0)];
    if ClientId::parse(client_id).is_ok() {
        keys.push(ThrottleKey::Client(client_id.to_owned()));
    }
    keys
}

fn engine_error(e: &EngineError) -> OAuthError {
    match e {
        EngineError::Overloaded { retry_after } => OAuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the server is busy verifying secrets; retry after the time in Retry-After",
        )
        .retry_after(*retry_after),
        EngineError::Timeout | EngineError::Unavailable | EngineError::ShuttingDown => OAuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the server cannot answer right now; retry shortly",
        )
        .retry_after(Duration::from_secs(1)),
        EngineError::Storage(e @ (StorageError::Io(_) | StorageError::Closed)) => {
            tracing::error!(error = %e, "token endpoint cannot write its audit record");
            OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the server cannot record the request durably right now, so no token was issued; retry later",
            )
            .retry_after(Duration::from_secs(30))
        }
        other => {
            tracing::error!(error = %other, "token endpoint failed");
            OAuthError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the server failed to handle the request; nothing was issued",
            )
        }
    }
}

/// Authenticates the client behind the brute-force guard. `jti` is set for token
/// requests (the audit entry then records the token id).
async fn authenticate(
    state: &GatewayState,
    ip: &ClientIp,
    user_agent: Option<String>,
    creds: Credentials,
    requested_scopes: Option<Vec<Scope>>,
    jti: Option<String>,
) -> Result<Grant, OAuthError> {
    let now = state.engine.now_ms();
    let keys = throttle_keys(ip, &creds.client_id);
    let locked_for = state.throttle.locked_for(&keys, now);
    let request = AuthRequest {
        client_id: creds.client_id,
        client_secret: creds.client_secret,
        requested_scopes,
        jti,
        context: RequestContext {
            source_ip: ip.0.to_string(),
            user_agent,
        },
        allow_slow_verify: locked_for.is_none(),
    };
    match state.engine.authenticate(request).await.map_err(|e| engine_error(&e))? {
        AuthOutcome::Granted(grant) => {
            state.throttle.record_success(&ThrottleKey::Client(grant.client_id.to_string()), now);
            Ok(grant)
        }
        AuthOutcome::Refused(AuthRefusal::Throttled) => {
            state.throttle.note_refused(&keys);
            let after = locked_for.unwrap_or(Duration::from_secs(1));
            Err(OAuthError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_client",
                "too many failed authentication attempts; retry after the time in Retry-After",
            )
            .retry_after(after))
        }
        AuthOutcome::Refused(AuthRefusal::InvalidScope) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "a requested scope is not one of this client's scopes",
        )),
        AuthOutcome::Refused(AuthRefusal::RateLimited { retry_after }) => Err(OAuthError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request",
            "too many token requests for this client; reuse the token you have until it expires, or retry after the time in Retry-After",
        )
        .retry_after(retry_after)),
        AuthOutcome::Refused(AuthRefusal::SecretTooOld) => {
            // Only a caller with the right secret gets here, so it may know why.
            Err(OAuthError::invalid_client(
                "the client secret is older than this integration's maximum secret age and no longer works: ask your Tollgate admin to rotate it",
            ))
        }
        AuthOutcome::Refused(AuthRefusal::MalformedSecret(e)) => {
            record_failure(state, &keys, now).await;
            Err(OAuthError::invalid_client(e.to_string()))
        }
        AuthOutcome::Refused(_) => {
            record_failure(state, &keys, now).await;
            Err(OAuthError::invalid_client(AUTH_FAILED))
        }
    }
}

async fn record_failure(state: &GatewayState, keys: &[ThrottleKey], now: u64) {
    for lockout in state.throttle.record_failure(keys, now) {
        metrics::counter!("tollgate_auth_lockouts_total").increment(1);
        let (source_ip, client_id) = match &lockout.key {
            ThrottleKey::Ip(ip) => (Some(ip.to_string()), None),
            ThrottleKey::Client(c) => (None, ClientId::parse(c).ok()),
        };
        let event = AuditEvent {
            at_ms: now,
            kind: "auth.lockout".into(),
            client_id,
            source_ip,
            outcome: "locked".into(),
            reason: Some(format!("{} failed authentications", lockout.failures)),
            details: json!({ "locked_seconds": lockout.duration.as_secs() }),
            ..AuditEvent::default()
        };
        if let Err(e) = state.engine.audit(event).await {
            tracing::error!(error = %e, "could not audit a lockout");
        }
    }
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect())
}

/// `POST /oauth/token`.
async fn token(
    State(state): State<GatewayState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OAuthError> {
    let form = read_form(&headers, body).await?;
    let grant_type = form.required("grant_type")?;
    if grant_type != "client_credentials" {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "this server supports only grant_type=client_credentials",
        ));
    }
    let requested = parse_requested_scopes(form.get("scope"))?;
    let creds = credentials(&headers, &form)?;
    let jti = random_base62(22);
    let grant = authenticate(&state, &ip, user_agent(&headers), creds, requested, Some(jti.clone())).await?;
    // The audit entry for this token is durable: only now may the token exist.
    let (access_token, claims) = state.tokens.sign(&grant, &jti, state.engine.now_ms()).map_err(|e| {
        tracing::error!(error = %e, "signing a token failed");
        OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the server failed to sign the token",
        )
    })?;
    metrics::counter!("tollgate_tokens_issued_total").increment(1);
    let mut response = Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": claims.exp - claims.iat,
        "scope": claims.scope,
    }))
    .into_response();
    no_store(response.headers_mut());
    Ok(response)
}

/// The shared start of introspection and revocation: a form with `token`, sent by an
/// authenticated client.
async fn authenticated_token_form(
    state: &GatewayState,
    ip: &ClientIp,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Form, String, Grant), OAuthError> {
    let form = read_form(headers, body).await?;
    let token = form.required("token")?.to_owned();
    let creds = credentials(headers, &form)?;
    let grant = authenticate(state, ip, user_agent(headers), creds, None, None).await?;
    Ok((form, token, grant))
}

/// `POST /oauth/introspect`: `active:false` for anything not currently valid, and
/// for tokens of other clients (an integration sees only its own tokens).
async fn introspect(
    State(state): State<GatewayState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OAuthError> {
    let (_, token, grant) = authenticated_token_form(&state, &ip, &headers, body).await?;
    let now = state.engine.now_ms();
    let inactive = || {
        let mut r = Json(json!({ "active": false })).into_response();
        no_store(r.headers_mut());
        r
    };
    let Ok(verified) = state.tokens.verify(&token, now) else {
        return Ok(inactive());
    };
    if verified.client_id != grant.client_id {
        return Ok(inactive());
    }
    let context = TokenContext {
        issued_at_ms: verified.claims.iat * 1000,
        jti: Some(verified.jti.clone()),
    };
    match state.engine.token_refusal(&verified.client_id, context).await {
        Ok(None) => {}
        Ok(Some(_)) => return Ok(inactive()),
        Err(e) => return Err(engine_error(&e)),
    }
    let c = &verified.claims;
    let mut response = Json(json!({
        "active": true,
        "scope": c.scope,
        "client_id": c.client_id,
        "token_type": "Bearer",
        "exp": c.exp,
        "iat": c.iat,
        "nbf": c.nbf,
        "sub": c.sub,
        "aud": c.aud,
        "iss": c.iss,
        "jti": c.jti,
        "org": c.org,
    }))
    .into_response();
    no_store(response.headers_mut());
    Ok(response)
}

/// `POST /oauth/revoke`: 200 whatever the token (RFC 7009 §2.2); a valid token of
/// the calling client is refused from then on.
async fn revoke(
    State(state): State<GatewayState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OAuthError> {
    let (form, token, grant) = authenticated_token_form(&state, &ip, &headers, body).await?;
    if let Some(hint) = form.get("token_type_hint")
        && hint != "access_token"
        && hint != "refresh_token"
    {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_token_type",
            "token_type_hint must be access_token (this server issues no other kind)",
        ));
    }
    let now = state.engine.now_ms();
    if let Ok(verified) = state.tokens.verify(&token, now)
        && verified.client_id == grant.client_id
    {
        let context = RequestContext {
            source_ip: ip.0.to_string(),
            user_agent: user_agent(&headers),
        };
        state
            .engine
            .revoke_token(
                &verified.client_id,
                &verified.claims.jti,
                verified.claims.exp * 1000,
                &context,
            )
            .await
            .map_err(|e| engine_error(&e))?;
    }
    let mut response = StatusCode::OK.into_response();
    no_store(response.headers_mut());
    Ok(response)
}

/// `GET /.well-known/jwks.json`.
async fn jwks(State(state): State<GatewayState>) -> Response {
    let keys = state.tokens.keys().current();
    let mut entries: Vec<_> = keys.verifying.values().collect();
    entries.sort_by(|a, b| a.kid.cmp(&b.kid));
    let body = json!({
        "keys": entries.iter().map(|k| json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": k.public_x,
            "kid": k.kid,
            "alg": "EdDSA",
            "use": "sig",
        })).collect::<Vec<_>>()
    });
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
async fn metadata(State(state): State<GatewayState>) -> Response {
    let issuer = state.tokens.issuer().trim_end_matches('/').to_owned();
    Json(json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms_decode_plus_and_percent_and_refuse_repeats() {
        let form = Form::parse(b"grant_type=client_credentials&scope=a%3Aread+b").unwrap();
        assert_eq!(form.get("scope"), Some("a:read b"));
        let err = Form::parse(b"scope=a&scope=b").unwrap_err();
        assert!(err.description.contains("repeated"));
        let err = Form::parse(b"scope=%FF%FE").unwrap_err();
        assert!(err.description.contains("UTF-8"));
        assert_eq!(
            Form::parse(b"a=&b").unwrap().get("a"),
            None,
            "empty values count as absent"
        );
    }

    proptest! {
        #[test]
        fn form_parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Form::parse(&body);
        }
    }
}
