//! `/admin/v1/integrations`: create, list, get, update, disable / enable, revoke,
//! rotate, finish rotation, usage, activity.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tollgate_engine::model::{DailyQuota, IntegrationId, IntegrationStatus, OrgId, parse_scopes};
use tollgate_engine::storage::audit::AuditFilter;
use tollgate_engine::{DEFAULT_GRACE, IntegrationUpdate, IntegrationView, NewIntegration, RotationMode};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Principal;
use crate::dto::{
    AuditEntryDto, AuditPage, CreatedDto, DayDto, ErrorBody, IntegrationDto, IntegrationPage, RotatedDto, UsageDto,
    rfc3339,
};
use crate::error::{ApiError, ApiJson, ApiQuery};

/// Default and largest page size.
pub const DEFAULT_PAGE: usize = 50;
/// Largest page size.
pub const MAX_PAGE: usize = 200;

/// The routes, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, update))
        .routes(routes!(disable))
        .routes(routes!(enable))
        .routes(routes!(revoke))
        .routes(routes!(rotate))
        .routes(routes!(finish_rotation))
        .routes(routes!(usage))
        .routes(routes!(activity))
}

const TAG: &str = "integrations";

/// `POST /admin/v1/integrations` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Organisation.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub org_id: String,
    /// Name (1–200 characters, no control characters).
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    /// Scopes (each 1–64 of `a-z 0-9 _ . : -`).
    #[serde(default)]
    #[schema(max_items = 64, value_type = Vec<ScopeText>)]
    pub scopes: Vec<String>,
    /// Requests per UTC day.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub daily_quota: u64,
    /// Token lifetime (default 3600).
    #[schema(minimum = 60, maximum = 86_400)]
    pub token_ttl_seconds: Option<u32>,
    /// Token-endpoint rate (default 600).
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub token_requests_per_minute: Option<u32>,
    /// Secrets stop working at this age (1–3650 days; default: the organisation's, or no limit).
    #[schema(minimum = 1, maximum = 3650)]
    pub secret_max_age_days: Option<u32>,
}

/// One scope.
#[derive(ToSchema)]
#[schema(pattern = r"^[a-z0-9_.:-]{1,64}$")]
pub struct ScopeText(#[allow(dead_code)] String);

/// `PATCH /admin/v1/integrations/{id}` body.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// New name.
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: Option<String>,
    /// New scopes.
    #[schema(max_items = 64, value_type = Option<Vec<ScopeText>>)]
    pub scopes: Option<Vec<String>>,
    /// New quota (today's count is kept).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub daily_quota: Option<u64>,
    /// New token lifetime.
    #[schema(minimum = 60, maximum = 86_400)]
    pub token_ttl_seconds: Option<u32>,
    /// New token-endpoint rate.
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub token_requests_per_minute: Option<u32>,
    /// New maximum secret age in days (1–3650); 0 removes the limit.
    #[schema(minimum = 0, maximum = 3650)]
    pub secret_max_age_days: Option<u32>,
}

/// `POST .../disable` body (optional).
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    /// Why (audited, shown to admins).
    pub reason: Option<String>,
}

/// `POST .../rotate` body (optional).
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// `routine` (default) or `incident`.
    #[schema(pattern = "^(routine|incident)$")]
    pub mode: Option<String>,
    /// Grace window for a routine rotation (default 86400, at most 604800).
    #[schema(minimum = 0, maximum = 604_800)]
    pub grace_seconds: Option<u64>,
}

/// List filters.
#[derive(Debug, Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this organisation.
    #[param(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub org_id: Option<String>,
    /// Only this status.
    #[param(pattern = "^(active|disabled|revoked)$")]
    pub status: Option<String>,
    /// The last id of the previous page.
    #[param(pattern = r"^int_[A-Za-z0-9]{16}$")]
    pub cursor: Option<String>,
    /// Page size (1–200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// Pagination of the activity.
#[derive(Debug, Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The `seq` of the last entry of the previous page.
    pub cursor: Option<u64>,
    /// Page size (1–200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// Usage window.
#[derive(Debug, Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Days back, including today (1–90, default 30).
    #[param(minimum = 1, maximum = 90)]
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

#[utoipa::path(post, path = "/admin/v1/integrations", tag = TAG, request_body = CreateRequest,
    responses((status = 201, description = "Registered; the secret is shown this once", body = CreatedDto),
        (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "No or invalid admin key", body = ErrorBody),
        (status = 403, description = "Read-only key", body = ErrorBody), (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody), (status = 422, description = "Invalid values", body = ErrorBody)))]
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
        secret_max_age_days: body.secret_max_age_days,
    };
    let created = state.engine.create_integration(new, &principal.context()).await?;
    let body = CreatedDto {
        integration: dto(&state, &created.integration),
        client_secret: created.client_secret.expose().to_owned(),
    };
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

#[utoipa::path(get, path = "/admin/v1/integrations", tag = TAG, params(ListQuery),
    responses((status = 200, description = "A page of integrations", body = IntegrationPage),
        (status = 400, description = "Bad filter or cursor", body = ErrorBody), (status = 401, description = "No or invalid admin key", body = ErrorBody)))]
async fn list(
    State(state): State<AdminState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<IntegrationPage>, ApiError> {
    let limit = page_size(query.limit)?;
    let org = query.org_id.as_deref().map(OrgId::parse).transpose()?;
    if let (Some(own), Some(asked)) = (&principal.org, &org)
        && own != asked
    {
        return Ok(Json(IntegrationPage {
            integrations: vec![],
            next_cursor: None,
        }));
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
    let mut cursor = query
        .cursor
        .as_deref()
        .map(|c| {
            IntegrationId::parse(c)
                .map_err(|_| ApiError::BadRequest(format!("cursor `{c}` is not an integration id (int_…)")))
        })
        .transpose()?;
    let mut out = Vec::new();
    let mut next_cursor = None;
    // Filtering by status may skip records: keep reading pages until one is full.
    'pages: loop {
        let page = state
            .engine
            .list_integrations(org.as_ref(), cursor.as_ref(), limit)
            .await?;
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
    Ok(Json(IntegrationPage {
        integrations: out,
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/admin/v1/integrations/{id}", tag = TAG, params(("id" = String, Path, description = "Integration id (int_…)")),
    responses((status = 200, description = "The integration with live usage", body = IntegrationDto), (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 404, description = "No such integration (or one the key may not see)", body = ErrorBody)))]
async fn show(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<IntegrationDto>, ApiError> {
    let (_, view) = visible(&state, &principal, &id).await?;
    Ok(Json(dto(&state, &view)))
}

#[utoipa::path(patch, path = "/admin/v1/integrations/{id}", tag = TAG, params(("id" = String, Path, description = "Integration id (int_…)")), request_body = UpdateRequest,
    responses((status = 200, description = "Updated (today's count is kept)", body = IntegrationDto), (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 404, description = "No such integration (or one the key may not see)", body = ErrorBody), (status = 403, description = "Read-only key", body = ErrorBody),
        (status = 409, description = "Revoked", body = ErrorBody), (status = 422, description = "Invalid values", body = ErrorBody)))]
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
        secret_max_age_days: body.secret_max_age_days,
    };
    if update.name.is_none()
        && update.scopes.is_none()
        && update.daily_quota.is_none()
        && update.token_ttl_seconds.is_none()
        && update.token_requests_per_minute.is_none()
        && update.secret_max_age_days.is_none()
    {
        return Err(ApiError::Unprocessable(
            "nothing to change: send at least one of name, scopes, daily_quota, token_ttl_seconds, token_requests_per_minute, secret_max_age_days".into(),
        ));
    }
    let view = state
        .engine
        .update_integration(&id, update, &principal.context())
        .await?;
    Ok(Json(dto(&state, &view)))
}

#[utoipa::path(post, path = "/admin/v1/integrations/{id}/disable", tag = TAG, params(("id" = String, Path, description = "Integration id (int_…)")), request_body(content = DisableRequest, description = "Optional"),
    responses((status = 200, description = "Disabled: the next request is refused", body = IntegrationDto), (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 404, description = "No such integration (or one the key may not see)", body = ErrorBody), (status = 403, description = "Read-only key", body = ErrorBody),
        (status = 409, description = "Already disabled, or revoked", body = ErrorBody)))]
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

#[utoipa::path(post, path = "/admin/v1/integrations/{id}/enable", tag = TAG, params(("id" = String, Path, description = "Integration id (int_…)")),
    responses((status = 200, description = "Enabled", body = IntegrationDto), (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 404, description = "No such integration (or one the key may not see)", body = ErrorBody), (status = 403, description = "Read-only key", body = ErrorBody),
        (status = 409, description = "Already active, or revoked", body = ErrorBody)))]
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

#[utoipa::path(post, path = "/admin/v1/integrations/{id}/revoke", tag = TAG, params(("id" = String, Path, description = "Integration id (int_…)")),
    responses((status = 200, description = "Revoked for good: secrets erased, tokens dead, record kept", body = IntegrationDto), (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 404, description = "No such integration (or one the key may not see)", body = ErrorBody), (status = 403, description = "Read-only key", body = ErrorBody),
        (status = 409, description = "Already revoked", body = ErrorBody)))]
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

#[utoipa::path(post, path = "/admin/v1/integrations/{id}/rotate", tag = TAG, params(("id" = String, Path, description = "Integration id (int_…)")), request_body(content = RotateRequest, description = "Optional; default: routine with 24 h grace"),
    responses((status = 200, description = "The new secret, shown this once", body = RotatedDto), (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 404, description = "No such integration (or one the key may not see)", body = ErrorBody), (status = 403, description = "Read-only key", body = ErrorBody),
        (status = 409, description = "Revoked", body = ErrorBody), (status = 422, description = "Bad mode or grace", body = ErrorBody)))]
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
    let body = RotatedDto {
        client_secret: rotated.client_secret.expose().to_owned(),
        previous_secret_expires_at: rotated.previous_secret_expires_at_ms.map(rfc3339),
        integration: dto(&state, &rotated.integration),
    };
    Ok(([(axum::http::header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

#[utoipa::path(post, path = "/admin/v1/integrations/{id}/rotation/finish", tag = TAG, params(("id" = String, Path, description = "Integration id (int_…)")),
    responses((status = 200, description = "Only the new secret works from now on", body = IntegrationDto), (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 404, description = "No such integration (or one the key may not see)", body = ErrorBody), (status = 403, description = "Read-only key", body = ErrorBody),
        (status = 409, description = "No rotation in progress", body = ErrorBody)))]
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

#[utoipa::path(get, path = "/admin/v1/integrations/{id}/usage", tag = TAG, params(("id" = String, Path, description = "Integration id (int_…)"), UsageQuery),
    responses((status = 200, description = "Daily counts, today live, and today by hour", body = UsageDto), (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 404, description = "No such integration (or one the key may not see)", body = ErrorBody),
        (status = 422, description = "days out of range", body = ErrorBody)))]
async fn usage(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<UsageDto>, ApiError> {
    let (id, _) = visible(&state, &principal, &id).await?;
    let report = state.engine.usage(&id, query.days.unwrap_or(30)).await?;
    let days = report
        .daily
        .iter()
        .map(|d| DayDto {
            date: rfc3339(u64::from(d.day) * 86_400_000)[..10].to_owned(),
            count: d.count,
        })
        .collect();
    Ok(Json(UsageDto {
        daily_quota: report.daily_quota,
        days,
        hourly_today: report.hourly_today.to_vec(),
    }))
}

#[utoipa::path(get, path = "/admin/v1/integrations/{id}/activity", tag = TAG, params(("id" = String, Path, description = "Integration id (int_…)"), PageQuery),
    responses((status = 200, description = "Audit entries of this integration, newest first", body = AuditPage), (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 404, description = "No such integration (or one the key may not see)", body = ErrorBody),
        (status = 400, description = "Bad limit", body = ErrorBody)))]
async fn activity(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<AuditPage>, ApiError> {
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
    Ok(Json(AuditPage { entries, next_cursor }))
}
