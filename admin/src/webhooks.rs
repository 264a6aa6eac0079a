//! `/admin/v1/webhooks`: endpoints that receive an organisation's (or one
//! integration's) events, and their deliveries with every attempt.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tollgate_engine::model::{
    DeliveryRecord, DeliveryStatus, IntegrationId, OrgId, WebhookId, WebhookRecord, random_base62,
};
use tollgate_engine::storage::audit::AuditEvent;
use tollgate_engine::webhook::EVENT_TYPES;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Principal;
use crate::dto::{ErrorBody, rfc3339};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::integrations::page_size;

/// Longest endpoint URL.
pub const MAX_URL_CHARS: usize = 2048;
/// Most endpoints per organisation.
pub const MAX_WEBHOOKS_PER_ORG: usize = 20;

/// The routes, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(delete))
        .routes(routes!(deliveries))
}

/// `POST /admin/v1/webhooks` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Whose events.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub org_id: String,
    /// Where to POST them (`http://` or `https://`).
    #[schema(max_length = 2048, pattern = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$")]
    pub url: String,
    /// Only this integration's events.
    #[schema(pattern = r"^int_[A-Za-z0-9]{16}$")]
    pub integration_id: Option<String>,
    /// Event types to send (default: all).
    #[serde(default)]
    pub events: Vec<String>,
}

/// A webhook endpoint as shown (never its secret after creation).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDto {
    /// Id.
    pub id: String,
    /// Organisation.
    pub org_id: String,
    /// Only this integration's events, when set.
    pub integration_id: Option<String>,
    /// Where events go.
    pub url: String,
    /// Event types sent (empty: all).
    pub events: Vec<String>,
    /// Created.
    pub created_at: String,
}

impl From<&WebhookRecord> for WebhookDto {
    fn from(r: &WebhookRecord) -> Self {
        Self {
            id: r.id.to_string(),
            org_id: r.org_id.to_string(),
            integration_id: r.integration_id.as_ref().map(ToString::to_string),
            url: r.url.clone(),
            events: r.events.clone(),
            created_at: rfc3339(r.created_at_ms),
        }
    }
}

/// `POST /admin/v1/webhooks` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    /// The endpoint.
    pub webhook: WebhookDto,
    /// The signing secret, shown this once: verify `Tollgate-Signature` with it.
    pub secret: String,
}

/// Endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Every endpoint the key may see.
    pub webhooks: Vec<WebhookDto>,
}

/// One attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptDto {
    /// When.
    pub at: String,
    /// The status answered, if any.
    pub status_code: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// One delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDto {
    /// Sequence number (also the pagination cursor).
    pub seq: u64,
    /// The event's id (the same on every retry).
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: &'static str,
    /// Every attempt, oldest first (the last 20).
    pub attempts: Vec<AttemptDto>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<String>,
    /// When the event was queued.
    pub created_at: String,
    /// The body sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl From<&DeliveryRecord> for DeliveryDto {
    fn from(d: &DeliveryRecord) -> Self {
        Self {
            seq: d.seq,
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            status: match d.status {
                DeliveryStatus::Pending => "pending",
                DeliveryStatus::Delivered => "delivered",
                DeliveryStatus::Failed => "failed",
            },
            attempts: d
                .attempts
                .iter()
                .map(|a| AttemptDto {
                    at: rfc3339(a.at_ms),
                    status_code: a.status_code,
                    error: a.error.clone(),
                    duration_ms: a.duration_ms,
                })
                .collect(),
            next_attempt_at: (d.status == DeliveryStatus::Pending).then(|| rfc3339(d.next_attempt_at_ms)),
            created_at: rfc3339(d.created_at_ms),
            payload: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// This page.
    pub deliveries: Vec<DeliveryDto>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<u64>,
}

/// Filter of the list.
#[derive(Debug, Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WebhookQuery {
    /// Only this organisation.
    #[param(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub org_id: Option<String>,
}

/// Paging of deliveries.
#[derive(Debug, Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// The `seq` of the last delivery of the previous page.
    pub cursor: Option<u64>,
    /// Page size (1–200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

fn check_url(url: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| Err(ApiError::Unprocessable(format!("url {why}")));
    if url.chars().count() > MAX_URL_CHARS {
        return invalid(&format!("is longer than {MAX_URL_CHARS} characters"));
    }
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return invalid("is not a valid URL");
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
        return invalid("must be an absolute http:// or https:// URL with a host");
    }
    Ok(())
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("webhook {id} does not exist"))
}

/// The webhook `id` if the principal may see it.
fn visible(state: &AdminState, principal: &Principal, id: &str) -> Result<WebhookRecord, ApiError> {
    let parsed = WebhookId::parse(id).map_err(|_| not_found(id))?;
    state
        .engine
        .storage()
        .webhook(&parsed)?
        .filter(|w| principal.can_see(&w.org_id))
        .ok_or_else(|| not_found(id))
}

#[utoipa::path(post, path = "/admin/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, description = "Created; the signing secret is shown this once", body = CreatedWebhook),
        (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "No or invalid admin key", body = ErrorBody),
        (status = 403, description = "Read-only key or another organisation", body = ErrorBody),
        (status = 409, description = "Too many endpoints for the organisation", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Bad URL, event type or integration", body = ErrorBody)))]
async fn create(
    State(state): State<AdminState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let org_id = OrgId::parse(&body.org_id)?;
    if !principal.can_see(&org_id) {
        return Err(ApiError::Forbidden(format!(
            "this admin key is limited to another organisation and cannot add webhooks for {org_id}"
        )));
    }
    check_url(&body.url)?;
    let mut events = body.events;
    if let Some(unknown) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
        return Err(ApiError::Unprocessable(format!(
            "event type `{unknown}` is not one of {}",
            EVENT_TYPES.join(", ")
        )));
    }
    events.sort();
    events.dedup();
    let storage = state.engine.storage();
    let integration_id = match body.integration_id.as_deref() {
        None => None,
        Some(text) => {
            let id = IntegrationId::parse(text)
                .map_err(|_| ApiError::Unprocessable(format!("integration {text} does not exist")))?;
            match storage.integration(&id)? {
                Some(rec) if rec.org_id == org_id => Some(id),
                _ => {
                    return Err(ApiError::Unprocessable(format!(
                        "integration {text} does not exist in organisation {org_id}"
                    )));
                }
            }
        }
    };
    if storage.webhooks()?.iter().filter(|w| w.org_id == org_id).count() >= MAX_WEBHOOKS_PER_ORG {
        return Err(ApiError::Conflict(format!(
            "organisation {org_id} already has {MAX_WEBHOOKS_PER_ORG} webhooks; delete one first"
        )));
    }
    let now = state.engine.now_ms();
    let record = WebhookRecord {
        id: WebhookId::generate(),
        org_id,
        integration_id,
        url: body.url,
        secret: format!("whsec_{}", random_base62(40)),
        events,
        from_audit_seq: storage.last_audit_seq()?,
        created_at_ms: now,
    };
    let event = AuditEvent {
        at_ms: now,
        kind: "webhook.created".into(),
        org_id: Some(record.org_id.clone()),
        integration_id: record.integration_id.clone(),
        admin_key_id: Some(principal.key_id.clone()),
        source_ip: principal.source_ip.clone(),
        outcome: "success".into(),
        details: serde_json::json!({ "webhook_id": record.id, "url": record.url, "events": record.events }),
        ..AuditEvent::default()
    };
    storage.batch().put_webhook(&record).audit(event).commit().await?;
    let body = CreatedWebhook {
        webhook: WebhookDto::from(&record),
        secret: record.secret.clone(),
    };
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

#[utoipa::path(get, path = "/admin/v1/webhooks", tag = "webhooks", params(WebhookQuery),
    responses((status = 200, description = "Endpoints", body = WebhookList),
        (status = 400, description = "Bad filter", body = ErrorBody), (status = 401, description = "No or invalid admin key", body = ErrorBody)))]
async fn list(
    State(state): State<AdminState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<WebhookQuery>,
) -> Result<Json<WebhookList>, ApiError> {
    let org = query.org_id.as_deref().map(OrgId::parse).transpose()?;
    let webhooks = state
        .engine
        .storage()
        .webhooks()?
        .iter()
        .filter(|w| principal.can_see(&w.org_id) && org.as_ref().is_none_or(|o| o == &w.org_id))
        .map(WebhookDto::from)
        .collect();
    Ok(Json(WebhookList { webhooks }))
}

#[utoipa::path(delete, path = "/admin/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id (whk_…)")),
    responses((status = 200, description = "Deleted; pending deliveries are dropped, the history stays", body = WebhookDto),
        (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 403, description = "Read-only key", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody)))]
async fn delete(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<WebhookDto>, ApiError> {
    principal.require_write()?;
    let record = visible(&state, &principal, &id)?;
    let event = AuditEvent {
        at_ms: state.engine.now_ms(),
        kind: "webhook.deleted".into(),
        org_id: Some(record.org_id.clone()),
        admin_key_id: Some(principal.key_id.clone()),
        source_ip: principal.source_ip.clone(),
        outcome: "success".into(),
        details: serde_json::json!({ "webhook_id": record.id, "url": record.url }),
        ..AuditEvent::default()
    };
    state
        .engine
        .storage()
        .batch()
        .remove_webhook(&record.id)
        .audit(event)
        .commit()
        .await?;
    Ok(Json(WebhookDto::from(&record)))
}

#[utoipa::path(get, path = "/admin/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id (whk_…)"), DeliveryQuery),
    responses((status = 200, description = "Deliveries, newest first, with every attempt", body = DeliveryPage),
        (status = 400, description = "Bad limit", body = ErrorBody),
        (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 404, description = "No such webhook", body = ErrorBody)))]
async fn deliveries(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let limit = page_size(query.limit)?;
    let record = visible(&state, &principal, &id)?;
    let page = state.engine.storage().deliveries_of(&record.id, query.cursor, limit)?;
    let next_cursor = (page.len() == limit).then(|| page.last().map(|d| d.seq)).flatten();
    Ok(Json(DeliveryPage {
        deliveries: page.iter().map(DeliveryDto::from).collect(),
        next_cursor,
    }))
}
