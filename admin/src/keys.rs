//! `/admin/v1/admin-keys` (create, list, revoke) and `/admin/v1/signing-keys`
//! (list, rotate). Only unrestricted keys with write access manage keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tollgate_engine::model::{AdminKeyId, AdminKeyRecord, OrgId};
use tollgate_engine::storage::audit::AuditEvent;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Principal, generate_key, store_new_key};
use crate::dto::ErrorBody;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiJson};
use crate::{AdminState, SigningKeyInfo};

/// The routes, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(revoke))
        .routes(routes!(list_signing))
        .routes(routes!(rotate_signing))
}

/// `POST /admin/v1/admin-keys` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyDto {
    /// The key's record.
    pub admin_key: AdminKeyDto,
    /// The key itself, shown this once and stored only as a hash.
    pub key: String,
}

/// `GET /admin/v1/admin-keys` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminKeyList {
    /// Every key, revoked ones included.
    pub admin_keys: Vec<AdminKeyDto>,
}

/// `GET /admin/v1/signing-keys` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyList {
    /// Published keys, the current one first.
    pub signing_keys: Vec<SigningKeyInfo>,
}

/// `POST /admin/v1/signing-keys/rotate` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyRotated {
    /// The new signing key's kid.
    pub kid: String,
    /// Published keys, the current one first.
    pub signing_keys: Vec<SigningKeyInfo>,
}

/// `POST /admin/v1/admin-keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// What the key is for (1–200 characters).
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub label: String,
    /// Limit the key to one organisation.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub org_id: Option<String>,
    /// Limit the key to reading.
    #[serde(default)]
    pub read_only: bool,
}

/// An admin key as listed (never the key or its hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminKeyDto {
    /// Key id.
    pub id: String,
    /// Label.
    pub label: String,
    /// Organisation limit.
    pub org_id: Option<String>,
    /// Read-only limit.
    pub read_only: bool,
    /// Created.
    pub created_at: String,
    /// Revoked, if it was.
    pub revoked_at: Option<String>,
}

impl From<&AdminKeyRecord> for AdminKeyDto {
    fn from(r: &AdminKeyRecord) -> Self {
        Self {
            id: r.id.to_string(),
            label: r.label.clone(),
            org_id: r.org_id.as_ref().map(ToString::to_string),
            read_only: r.is_read_only,
            created_at: rfc3339(r.created_at_ms),
            revoked_at: r.revoked_at_ms.map(rfc3339),
        }
    }
}

fn require_key_admin(principal: &Principal) -> Result<(), ApiError> {
    principal.require_write()?;
    if principal.org.is_some() {
        return Err(ApiError::Forbidden(
            "keys are managed only with an admin key that is not limited to an organisation".into(),
        ));
    }
    Ok(())
}

fn audit(principal: &Principal, now: u64, kind: &str, details: serde_json::Value) -> AuditEvent {
    AuditEvent {
        at_ms: now,
        kind: kind.into(),
        admin_key_id: Some(principal.key_id.clone()),
        source_ip: principal.source_ip.clone(),
        outcome: "success".into(),
        details,
        ..AuditEvent::default()
    }
}

#[utoipa::path(post, path = "/admin/v1/admin-keys", tag = "keys", request_body = CreateKeyRequest,
    responses((status = 201, description = "The key, shown this once", body = CreatedKeyDto), (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 403, description = "Read-only or organisation-limited key", body = ErrorBody),
        (status = 422, description = "Invalid label or organisation", body = ErrorBody)))]
async fn create(
    State(state): State<AdminState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateKeyRequest>,
) -> Result<Response, ApiError> {
    require_key_admin(&principal)?;
    let label = tollgate_engine::model::parse_name(&body.label)
        .map_err(|e| ApiError::Unprocessable(e.to_string().replace("name", "label")))?;
    let org_id = body.org_id.as_deref().map(OrgId::parse).transpose()?;
    let id = AdminKeyId::generate();
    let key = generate_key(&id);
    let event = audit(
        &principal,
        0,
        "admin_key.created",
        json!({ "new_key_id": id, "org_id": org_id, "read_only": body.read_only }),
    );
    let record = store_new_key(&state.engine, id, key.clone(), label, org_id, body.read_only, event).await?;
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(CreatedKeyDto {
            admin_key: AdminKeyDto::from(&record),
            key,
        }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/admin/v1/admin-keys", tag = "keys",
    responses((status = 200, description = "Every admin key (never the key itself)", body = AdminKeyList), (status = 401, description = "No or invalid admin key", body = ErrorBody),
        (status = 403, description = "Organisation-limited key", body = ErrorBody)))]
async fn list(State(state): State<AdminState>, principal: Principal) -> Result<Json<AdminKeyList>, ApiError> {
    if principal.org.is_some() {
        return Err(ApiError::Forbidden(
            "keys are listed only with an admin key that is not limited to an organisation".into(),
        ));
    }
    let keys: Vec<AdminKeyDto> = state
        .engine
        .storage()
        .admin_keys()?
        .iter()
        .map(AdminKeyDto::from)
        .collect();
    Ok(Json(AdminKeyList { admin_keys: keys }))
}

#[utoipa::path(post, path = "/admin/v1/admin-keys/{id}/revoke", tag = "keys",
    params(("id" = String, Path, description = "Admin key id (tgk_…)")),
    responses((status = 200, description = "Revoked: refused from the next request on", body = AdminKeyDto), (status = 401, description = "No or invalid admin key", body = ErrorBody), (status = 403, description = "Read-only or organisation-limited key", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "Already revoked, or the key revoking itself", body = ErrorBody)))]
async fn revoke(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<AdminKeyDto>, ApiError> {
    require_key_admin(&principal)?;
    let not_found = || ApiError::NotFound(format!("admin key {id} does not exist"));
    let key_id = AdminKeyId::parse(&id).map_err(|_| not_found())?;
    let mut record = state.engine.storage().admin_key(&key_id)?.ok_or_else(not_found)?;
    if record.revoked_at_ms.is_some() {
        return Err(ApiError::Conflict(format!("admin key {id} is already revoked")));
    }
    if key_id == principal.key_id {
        return Err(ApiError::Conflict(
            "an admin key cannot revoke itself; use another key so that one always remains".into(),
        ));
    }
    let now = state.engine.now_ms();
    record.revoked_at_ms = Some(now);
    let event = audit(
        &principal,
        now,
        "admin_key.revoked",
        json!({ "revoked_key_id": key_id }),
    );
    state
        .engine
        .storage()
        .batch()
        .put_admin_key(&record)
        .audit(event)
        .commit()
        .await?;
    state.verified.forget(&key_id);
    state.sessions.end_all_of(&key_id);
    Ok(Json(AdminKeyDto::from(&record)))
}

#[utoipa::path(get, path = "/admin/v1/signing-keys", tag = "keys",
    responses((status = 200, description = "Published token-signing keys", body = SigningKeyList), (status = 401, description = "No or invalid admin key", body = ErrorBody)))]
async fn list_signing(State(state): State<AdminState>, _principal: Principal) -> Json<SigningKeyList> {
    Json(SigningKeyList {
        signing_keys: state.signing.list(),
    })
}

#[utoipa::path(post, path = "/admin/v1/signing-keys/rotate", tag = "keys",
    responses((status = 200, description = "A new signing key; the old one stays published until its tokens expire", body = SigningKeyRotated),
        (status = 401, description = "No or invalid admin key", body = ErrorBody),
        (status = 403, description = "Read-only or organisation-limited key", body = ErrorBody)))]
async fn rotate_signing(
    State(state): State<AdminState>,
    principal: Principal,
) -> Result<Json<SigningKeyRotated>, ApiError> {
    require_key_admin(&principal)?;
    let now = state.engine.now_ms();
    let kid = state.signing.rotate(now).await?;
    state
        .engine
        .audit(audit(&principal, now, "signing_key.rotated", json!({ "kid": kid })))
        .await?;
    Ok(Json(SigningKeyRotated {
        kid,
        signing_keys: state.signing.list(),
    }))
}
