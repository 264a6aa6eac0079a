//! `/admin/v1/orgs/{org_id}/settings`: an organisation's defaults for its new
//! integrations (today: the maximum secret age).

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use tollgate_engine::MAX_SECRET_AGE_DAYS;
use tollgate_engine::model::{OrgId, OrgSettings};
use tollgate_engine::storage::audit::AuditEvent;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Principal;
use crate::dto::{ErrorBody, rfc3339};
use crate::error::{ApiError, ApiJson};

/// The routes, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(show, replace))
}

/// An organisation's settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrgSettingsDto {
    /// The organisation.
    pub org_id: String,
    /// Maximum secret age given to new integrations that do not set their own
    /// (`null`: none).
    pub secret_max_age_days: Option<u32>,
    /// Last change (`null`: never set).
    pub updated_at: Option<String>,
}

impl OrgSettingsDto {
    fn new(org: &OrgId, settings: Option<&OrgSettings>) -> Self {
        Self {
            org_id: org.to_string(),
            secret_max_age_days: settings.and_then(|s| s.secret_max_age_days),
            updated_at: settings.map(|s| rfc3339(s.updated_at_ms)),
        }
    }
}

/// `PUT` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgSettingsRequest {
    /// 1–3650 days, or `null` for none.
    #[schema(minimum = 1, maximum = 3650)]
    pub secret_max_age_days: Option<u32>,
}

fn org_for(principal: &Principal, org_id: &str) -> Result<OrgId, ApiError> {
    let org = OrgId::parse(org_id)?;
    if !principal.can_see(&org) {
        return Err(ApiError::Forbidden(format!(
            "this admin key is limited to another organisation and cannot see {org}"
        )));
    }
    Ok(org)
}

#[utoipa::path(get, path = "/admin/v1/orgs/{org_id}/settings", tag = "organisations",
    params(("org_id" = String, Path, description = "Organisation id", pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")),
    responses((status = 200, description = "The settings (defaults when never set)", body = OrgSettingsDto),
        (status = 401, description = "No or invalid admin key", body = ErrorBody),
        (status = 403, description = "Another organisation's key", body = ErrorBody),
        (status = 422, description = "Not an organisation id", body = ErrorBody)))]
async fn show(
    State(state): State<AdminState>,
    principal: Principal,
    Path(org_id): Path<String>,
) -> Result<Json<OrgSettingsDto>, ApiError> {
    let org = org_for(&principal, &org_id)?;
    let settings = state.engine.storage().org_settings(&org)?;
    Ok(Json(OrgSettingsDto::new(&org, settings.as_ref())))
}

#[utoipa::path(put, path = "/admin/v1/orgs/{org_id}/settings", tag = "organisations",
    params(("org_id" = String, Path, description = "Organisation id", pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")), request_body = OrgSettingsRequest,
    responses((status = 200, description = "Saved; applies to integrations created from now on", body = OrgSettingsDto),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or invalid admin key", body = ErrorBody),
        (status = 403, description = "Read-only or another organisation's key", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Out of range", body = ErrorBody)))]
async fn replace(
    State(state): State<AdminState>,
    principal: Principal,
    Path(org_id): Path<String>,
    ApiJson(body): ApiJson<OrgSettingsRequest>,
) -> Result<Json<OrgSettingsDto>, ApiError> {
    principal.require_write()?;
    let org = org_for(&principal, &org_id)?;
    if let Some(days) = body.secret_max_age_days
        && !(1..=MAX_SECRET_AGE_DAYS).contains(&days)
    {
        return Err(ApiError::Unprocessable(format!(
            "secret_max_age_days must be 1 to {MAX_SECRET_AGE_DAYS} days, or null (got {days})"
        )));
    }
    let now = state.engine.now_ms();
    let settings = OrgSettings {
        org_id: org.clone(),
        secret_max_age_days: body.secret_max_age_days,
        updated_at_ms: now,
    };
    let event = AuditEvent {
        at_ms: now,
        kind: "org.settings_updated".into(),
        org_id: Some(org.clone()),
        admin_key_id: Some(principal.key_id.clone()),
        source_ip: principal.source_ip.clone(),
        outcome: "success".into(),
        details: serde_json::json!({ "secret_max_age_days": body.secret_max_age_days }),
        ..AuditEvent::default()
    };
    state
        .engine
        .storage()
        .batch()
        .put_org_settings(&settings)
        .audit(event)
        .commit()
        .await?;
    Ok(Json(OrgSettingsDto::new(&org, Some(&settings))))
}
