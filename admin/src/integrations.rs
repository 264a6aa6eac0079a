//! `/admin/v1/integrations`: create, list, get, update, disable / enable, revoke,
//! rotate, finish rotation, usage, activity.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tollgate_engine::model::{DailyQuota, IntegrationId, IntegrationStatus, OrgId, parse_scopes};
use tollgate_engine::storage::audit::AuditFilter;
use tollgate_engine::{DEFAULT_GRACE, IntegrationUpdate, IntegrationView, NewIntegration, RotationMode};

use crate::AdminState;
use crate::auth::Principal;
use crate::dto::{AuditEntryDto, IntegrationDto, rfc3339};
use crate::error::{ApiError, ApiJson};

/// Default and largest page size.
pub const DEFAULT_PAGE: usize = 50;
/// Largest page size.
pub const MAX_PAGE: usize = 200;

/// The routes.
pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/admin/v1/integrations", post(create).get(list))
        .route("/admin/v1/integrations/{id}", get(show).patch(update))
        .route("/admin/v1/integrations/{id}/disable", post(disable))
        .route("/admin/v1/integrations/{id}/enable", post(enable))
        .route("/admin/v1/integrations/{id}/revoke", post(revoke))
        .route("/admin/v1/integrations/{id}/rotate", post(rotate))
        .route("/admin/v1/integrations/{id}/rotation/finish", post(finish_rotation))
        .route("/admin/v1/integrations/{id}/usage", get(usage))
        .route("/admin/v1/integrations/{id}/activity", get(activity))
}

/// `POST /admin/v1/integrations` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Organisation.
    pub org_id: String,
    /// Name.
    pub name: String,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Requests per UTC day.
    pub daily_quota: u64,
    /// Token lifetime (default 3600).
    pub token_ttl_seconds: Option<u32>,
    /// Token-endpoint rate (default 600).
    pub token_requests_per_minute: Option<u32>,
}

/// `PATCH /admin/v1/integrations/{id}` body.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// New name.
    pub name: Option<String>,
    /// New scopes.
    pub scopes: Option<Vec<String>>,
    /// New quota (today's count is kept).
    pub daily_quota: Option<u64>,
    /// New token lifetime.
    pub token_ttl_seconds: Option<u32>,
    /// New token-endpoint rate.
    pub token_requests_per_minute: Option<u32>,
}

/// `POST .../disable` body (optional).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    /// Why (audited, shown to admins).
    pub reason: Option<String>,
}

/// `POST .../rotate` body (optional).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// `routine` (default) or `incident`.
    pub mode: Option<String>,
    /// Grace window for a routine rotation (default 86400, at most 604800).
    pub grace_seconds: Option<u64>,
}

/// List filters.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this organisation.
    pub org_id: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// The last id of the previous page.
    pub cursor: Option<String>,
    /// Page size (1–200, default 50).
    pub limit: Option<usize>,
}

/// Pagination of the activity.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The `seq` of the last entry of the previous page.
    pub cursor: Option<u64>,
    /// Page size (1–200, default 50).
    pub limit: Option<usize>,
}

/// Usage window.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Days back, including today (1–90, default 30).
    pub days: Option<u32>,
}

/// Parses an optional JSON body (empty means default).
pub(crate) fn optional_json<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::BadRequest(format!("the body is not valid JSON: {e}"))
        } else {
            ApiError::Unprocessable(format!("the body has the wrong shape: {e}"))
        }
    })
}

/// Page size from a query, within bounds.
pub(crate) fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit {n} is out of range: use 1 to {MAX_PAGE}"
        ))),
    }
}

fn parse_id(id: &str) -> Result<IntegrationId, ApiError> {
    IntegrationId::parse(id).map_err(|_| ApiError::NotFound(format!("integration {id} does not exist")))
}

/// Loads an integration the principal may see (others are 404, like missing ones).
async fn visible(
    state: &AdminState,
    principal: &Principal,
    id: &str,
) -> Result<(IntegrationId, IntegrationView), ApiError> {
    let id = parse_id(id)?;
    let view = state.engine.integration(&id).await?;
    if !principal.can_see(&view.org_id) {
        return Err(ApiError::NotFound(format!("integration {id} does not exist")));
    }
    Ok((id, view))
}

fn dto(state: &AdminState, view: &IntegrationView) -> IntegrationDto {
    IntegrationDto::from_view(view, state.engine.now_ms())
}

async fn create(
    State(state): State<AdminState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateRequest>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let org_id = OrgId::parse(&body.org_id)?;
    if !principal.can_see(&org_id) {
        return Err(ApiError::Forbidden(format!(
            "this admin key is limited to another organisation and cannot create integrations in {org_id}"
        )));
    }
    let new = NewIntegration {
        org_id,
        name: body.name,
        scopes: parse_scopes(&body.scopes)?,
        daily_quota: DailyQuota::new(body.daily_quota)?,
        token_ttl_seconds: body.token_ttl_seconds,
        token_requests_per_minute: body.token_requests_per_minute,
    };
    let created = state.engine.create_integration(new, &principal.context()).await?;
    let body = json!({
        "integration": dto(&state, &created.integration),
        "client_secret": created.client_secret.expose(),
    });
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

async fn list(
    State(state): State<AdminState>,
    principal: Principal,
    Query(query): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = page_size(query.limit)?;
    let org = query.org_id.as_deref().map(OrgId::parse).transpose()?;
    if let (Some(own), Some(asked)) = (&principal.org, &org)
        && own != asked
    {
        return Ok(Json(json!({ "integrations": [], "next_cursor": null })));
    }
    let org = org.or_else(|| principal.org.clone());
    let status = match query.status.as_deref() {
        None => None,
        Some("active") => Some(IntegrationStatus::Active),
        Some("disabled") => Some(IntegrationStatus::Disabled),
        Some("revoked") => Some(IntegrationStatus::Revoked),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "status `{other}` is not one of active, disabled, revoked"
            )));
        }
    };
    let mut cursor = query.cursor.as_deref().map(parse_id).transpose()?;
    let mut out = Vec::new();
    let mut next_cursor = None;
    // Filtering by status may skip records: keep reading pages until one is full.
    'pages: loop {
        let page = state.engine.list_integrations(org.as_ref(), cursor.as_ref(), limit)?;
        let is_last_page = page.len() < limit;
        for view in page {
            cursor = Some(view.id.clone());
            if status.is_none_or(|s| s == view.status) {
                out.push(dto(&state, &view));
                if out.len() == limit {
                    next_cursor = Some(view.id.to_string());
                    break 'pages;
                }
            }
        }
        if is_last_page {
            break;
        }
    }
    Ok(Json(json!({ "integrations": out, "next_cursor": next_cursor })))
}

async fn show(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<IntegrationDto>, ApiError> {
    let (_, view) = visible(&state, &principal, &id).await?;
    Ok(Json(dto(&state, &view)))
}

async fn update(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateRequest>,
) -> Result<Json<IntegrationDto>, ApiError> {
    principal.require_write()?;
    let (id, _) = visible(&state, &principal, &id).await?;
    let update = IntegrationUpdate {
        name: body.name,
        scopes: body.scopes.as_deref().map(parse_scopes).transpose()?,
        daily_quota: body.daily_quota.map(DailyQuota::new).transpose()?,
        token_ttl_seconds: body.token_ttl_seconds,
        token_requests_per_minute: body.token_requests_per_minute,
    };
    if update.name.is_none()
        && update.scopes.is_none()
        && update.daily_quota.is_none()
        && update.token_ttl_seconds.is_none()
        && update.token_requests_per_minute.is_none()
    {
        return Err(ApiError::Unprocessable(
            "nothing to change: send at least one of name, scopes, daily_quota, token_ttl_seconds, token_requests_per_minute".into(),
        ));
    }
    let view = state
        .engine
        .update_integration(&id, update, &principal.context())
        .await?;
    Ok(Json(dto(&state, &view)))
}

async fn disable(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<IntegrationDto>, ApiError> {
    principal.require_write()?;
    let body: DisableRequest = optional_json(&body)?;
    let (id, _) = visible(&state, &principal, &id).await?;
    let view = state.engine.disable(&id, body.reason, &principal.context()).await?;
    Ok(Json(dto(&state, &view)))
}

async fn enable(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<IntegrationDto>, ApiError> {
    principal.require_write()?;
    let (id, _) = visible(&state, &principal, &id).await?;
    let view = state.engine.enable(&id, &principal.context()).await?;
    Ok(Json(dto(&state, &view)))
}

async fn revoke(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<IntegrationDto>, ApiError> {
    principal.require_write()?;
    let (id, _) = visible(&state, &principal, &id).await?;
    let view = state.engine.revoke(&id, &principal.context()).await?;
    Ok(Json(dto(&state, &view)))
}

async fn rotate(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let body: RotateRequest = optional_json(&body)?;
    let mode = match body.mode.as_deref() {
        None | Some("routine") => RotationMode::Routine {
            grace: body.grace_seconds.map_or(DEFAULT_GRACE, Duration::from_secs),
        },
        Some("incident") => {
            if body.grace_seconds.is_some_and(|g| g > 0) {
                return Err(ApiError::Unprocessable(
                    "an incident rotation has no grace window: drop grace_seconds or use mode routine".into(),
                ));
            }
            RotationMode::Incident
        }
        Some(other) => {
            return Err(ApiError::Unprocessable(format!(
                "mode `{other}` is not one of routine, incident"
            )));
        }
    };
    let (id, _) = visible(&state, &principal, &id).await?;
    let rotated = state.engine.rotate(&id, mode, &principal.context()).await?;
    let body = json!({
        "client_secret": rotated.client_secret.expose(),
        "previous_secret_expires_at": rotated.previous_secret_expires_at_ms.map(rfc3339),
        "integration": dto(&state, &rotated.integration),
    });
    Ok(([(axum::http::header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

async fn finish_rotation(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<IntegrationDto>, ApiError> {
    principal.require_write()?;
    let (id, _) = visible(&state, &principal, &id).await?;
    let view = state.engine.finish_rotation(&id, &principal.context()).await?;
    Ok(Json(dto(&state, &view)))
}

async fn usage(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, _) = visible(&state, &principal, &id).await?;
    let report = state.engine.usage(&id, query.days.unwrap_or(30)).await?;
    let days: Vec<_> = report
        .daily
        .iter()
        .map(|d| json!({ "date": &rfc3339(u64::from(d.day) * 86_400_000)[..10], "count": d.count }))
        .collect();
    Ok(Json(json!({
        "daily_quota": report.daily_quota,
        "days": days,
        "hourly_today": report.hourly_today,
    })))
}

async fn activity(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = page_size(query.limit)?;
    let (id, _) = visible(&state, &principal, &id).await?;
    let filter = AuditFilter {
        integration_id: Some(id),
        ..AuditFilter::default()
    };
    let entries = state.engine.audit_query(&filter, query.cursor, limit)?;
    let next_cursor = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    let entries: Vec<AuditEntryDto> = entries.iter().map(AuditEntryDto::from).collect();
    Ok(Json(json!({ "entries": entries, "next_cursor": next_cursor })))
}
