//! `POST /admin/v1/secret-leaks`: secret scanners report Tollgate secrets they found
//! in public, in the style of GitHub's secret-scanning partner program.
//!
//! A report is a JSON array of found secrets. It is accepted from an admin key with
//! write access to every organisation, or signed with the shared report key
//! (`TOLLGATE_LEAK_REPORT_KEY`): `Tollgate-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256(key, "<t>.<body>")>`, at most [`SIGNATURE_TOLERANCE`] away from the
//! server's time and never accepted twice. Each secret is checked (shape, checksum,
//! slot, stored hash); genuine live ones are acted on by the configured policy and
//! audited as `secret.leaked`; unknown, fake and dead ones change nothing. The answer
//! says per secret whether it was genuine and what was done, and never repeats a secret.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tollgate_engine::{AdminContext, LeakPolicy, LeakReport, LeakVerdict};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::{authenticate, presented_key};
use crate::dto::ErrorBody;
use crate::error::ApiError;

/// The signature header of signed reports.
pub const SIGNATURE_HEADER: &str = "tollgate-signature";
/// How far a signed report's timestamp may be from the server's clock.
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);
/// Most secrets in one report.
pub const MAX_SECRETS_PER_REPORT: usize = 100;

/// The routes, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(report))
}

/// How reports are authenticated and acted on.
#[derive(Default)]
pub(crate) struct LeakConfig {
    report_key: Option<Vec<u8>>,
    policy: LeakPolicy,
    /// Signatures already accepted → when they stop mattering (Unix ms).
    seen: Mutex<HashMap<[u8; 32], u64>>,
}

impl LeakConfig {
    pub(crate) fn new(report_key: Option<String>, policy: LeakPolicy) -> Self {
        Self {
            report_key: report_key.map(String::into_bytes),
            policy,
            seen: Mutex::default(),
        }
    }
}

/// One found secret.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FoundSecret {
    /// The secret as found.
    pub token: String,
    /// The scanner's name for the kind of secret (echoed back).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Where it was found.
    pub url: Option<String>,
    /// Who found it (`github`, …).
    pub source: Option<String>,
}

/// What became of one reported secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeakResult {
    /// The secret's public part (`tgs_<slot id>_…`), never the secret.
    pub token_hint: String,
    /// The reported type, echoed.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Whether it is a real secret of an integration that still accepted it.
    pub genuine: bool,
    /// `slot_killed`, `disabled`, `already_disabled`, `inactive`, `not_genuine`,
    /// `unknown` or `malformed`.
    pub status: &'static str,
    /// In words.
    pub message: String,
    /// The integration (only in answers to admin keys).
    pub integration_id: Option<String>,
}

/// The answer to a report.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeakReportAnswer {
    /// One result per reported secret, in order.
    pub results: Vec<LeakResult>,
    /// How many were genuine.
    pub genuine: usize,
}

/// `t=<unix>,v1=<hex>` → (t, mac bytes).
fn parse_signature(value: &str) -> Option<(u64, Vec<u8>)> {
    let mut t = None;
    let mut v1 = None;
    for part in value.split(',') {
        match part.trim().split_once('=') {
            Some(("t", text)) => t = text.parse::<u64>().ok(),
            Some(("v1", text)) => v1 = hex::decode(text).ok(),
            _ => {}
        }
    }
    Some((t?, v1?)).filter(|(_, mac)| mac.len() == 32)
}

/// Checks a signed report: known key, fresh timestamp, right MAC, not seen before.
fn verify_signature(state: &AdminState, value: &str, body: &[u8]) -> Result<(), ApiError> {
    let leaks = &state.leaks;
    let key = leaks.report_key.as_ref().ok_or_else(|| {
        ApiError::Unauthorized("signed leak reports are not enabled here (no TOLLGATE_LEAK_REPORT_KEY)".into())
    })?;
    let (t, presented) = parse_signature(value).ok_or_else(|| {
        ApiError::Unauthorized(
            "the Tollgate-Signature header must look like t=<unix seconds>,v1=<64 hex digits>".into(),
        )
    })?;
    let now_ms = state.engine.now_ms();
    let skew_ms = now_ms.abs_diff(t.saturating_mul(1000));
    if skew_ms > SIGNATURE_TOLERANCE.as_millis() as u64 {
        return Err(ApiError::Unauthorized(format!(
            "the report's timestamp is {} s away from the server's clock (at most {} s allowed): sign it again",
            skew_ms / 1000,
            SIGNATURE_TOLERANCE.as_secs()
        )));
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|e| ApiError::Internal(e.to_string()))?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&presented)
        .map_err(|_| ApiError::Unauthorized("the report's signature does not match its body and timestamp".into()))?;
    let mut seen = leaks.seen.lock().unwrap_or_else(|p| p.into_inner());
    seen.retain(|_, until| *until > now_ms);
    let id: [u8; 32] = presented.try_into().unwrap_or([0; 32]);
    if seen.contains_key(&id) {
        return Err(ApiError::Unauthorized(
            "this signed report was already received (a replay); sign a new one".into(),
        ));
    }
    seen.insert(id, t * 1000 + SIGNATURE_TOLERANCE.as_millis() as u64);
    Ok(())
}

fn hint(token: &str) -> String {
    match token.get(..15) {
        Some(head) if token.starts_with("tgs_") && token.len() > 15 && head.is_ascii() => format!("{head}…"),
        _ => "(not a Tollgate secret)".into(),
    }
}

#[utoipa::path(post, path = "/admin/v1/secret-leaks", tag = "leaks",
    request_body(content = Vec<FoundSecret>, description = "The secrets found (at most 100)"),
    responses((status = 200, description = "Per secret: genuine or not, and what was done", body = LeakReportAnswer),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No admin key and no valid signature (or a replayed one)", body = ErrorBody),
        (status = 403, description = "Read-only or organisation-limited admin key", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Empty, too many, or wrong shape", body = ErrorBody)))]
async fn report(
    State(state): State<AdminState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<LeakReportAnswer>, ApiError> {
    let source_ip = extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let ctx = if let Some(key) = presented_key(&headers) {
        let principal = authenticate(&state, &key, source_ip.clone()).await?;
        principal.require_write()?;
        if principal.org.is_some() {
            return Err(ApiError::Forbidden(
                "leak reports need an admin key that is not limited to one organisation".into(),
            ));
        }
        principal.context()
    } else if let Some(signature) = headers.get(SIGNATURE_HEADER) {
        let signature = signature
            .to_str()
            .map_err(|_| ApiError::Unauthorized("the Tollgate-Signature header is not text".into()))?;
        verify_signature(&state, signature, &body)?;
        AdminContext {
            admin_key_id: None,
            source_ip: source_ip.clone(),
        }
    } else {
        return Err(ApiError::Unauthorized(
            "send an admin key (Authorization: Bearer) or sign the report (Tollgate-Signature)".into(),
        ));
    };
    let is_admin = ctx.admin_key_id.is_some();
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim() == "application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "send the report as JSON with Content-Type: application/json".into(),
        ));
    }
    let found: Vec<FoundSecret> = serde_json::from_slice(&body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::BadRequest(format!("the body is not valid JSON: {e}"))
        } else {
            ApiError::Unprocessable(format!(
                "the body must be an array of {{\"token\", \"type\", \"url\", \"source\"}}: {e}"
            ))
        }
    })?;
    if found.is_empty() || found.len() > MAX_SECRETS_PER_REPORT {
        return Err(ApiError::Unprocessable(format!(
            "report 1 to {MAX_SECRETS_PER_REPORT} secrets at a time (got {})",
            found.len()
        )));
    }
    let mut results = Vec::with_capacity(found.len());
    for item in found {
        let token_hint = hint(&item.token);
        let verdict = state
            .engine
            .report_leak(
                LeakReport {
                    secret: item.token,
                    url: item.url,
                    source: item.source,
                },
                state.leaks.policy,
                &ctx,
            )
            .await?;
        let (genuine, status, message, integration) = match verdict {
            LeakVerdict::Malformed(e) => (false, "malformed", e.to_string(), None),
            LeakVerdict::Unknown => (false, "unknown", "no integration has this secret".to_owned(), None),
            LeakVerdict::NotGenuine => (
                false,
                "not_genuine",
                "not the stored secret of its integration: nothing was changed".to_owned(),
                None,
            ),
            LeakVerdict::Inactive { integration_id } => (
                false,
                "inactive",
                "this secret no longer works (rotated away, killed or revoked): nothing was changed".to_owned(),
                Some(integration_id),
            ),
            LeakVerdict::Genuine { integration_id, action } => {
                let message = match action {
                    "slot_killed" => "genuine: the secret and every token issued up to now no longer work",
                    "disabled" => "genuine: the integration is disabled",
                    _ => "genuine: the integration was already disabled",
                };
                (true, action, message.to_owned(), Some(integration_id))
            }
        };
        metrics::counter!("tollgate_leak_reports_total", "status" => status).increment(1);
        results.push(LeakResult {
            token_hint,
            kind: item.kind,
            genuine,
            status,
            message,
            integration_id: integration.filter(|_| is_admin).map(|id| id.to_string()),
        });
    }
    let genuine = results.iter().filter(|r| r.genuine).count();
    tracing::info!(reported = results.len(), genuine, "leaked-secret report handled");
    Ok(Json(LeakReportAnswer { results, genuine }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_parse_and_hints_never_show_the_secret() {
        let mac = "ab".repeat(32);
        assert_eq!(parse_signature(&format!("t=12,v1={mac}")).unwrap().0, 12);
        assert!(parse_signature("t=12").is_none());
        assert!(parse_signature("t=x,v1=00").is_none());
        let secret = format!("tgs_ABCDEFGHIJ_{}", "x".repeat(49));
        assert_eq!(hint(&secret), "tgs_ABCDEFGHIJ_…");
        assert_eq!(hint("password123"), "(not a Tollgate secret)");
    }
}
