//! `/admin/v1/audit`: the global audit log (filters, newest first, cursor pages,
//! JSON Lines export) and `/admin/v1/audit/verify`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tollgate_engine::model::{IntegrationId, OrgId};
use tollgate_engine::storage::audit::AuditFilter;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Principal;
use crate::dto::{AuditEntryDto, AuditPage, BrokenLinkDto, ErrorBody, VerifyDto, parse_rfc3339};
use crate::error::{ApiError, ApiQuery};
use crate::integrations::page_size;

/// Most entries one JSON Lines export returns.
pub const MAX_EXPORT: usize = 100_000;

/// The routes, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(query)).routes(routes!(verify))
}

/// Filters and paging.
#[derive(Debug, Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this organisation.
    #[param(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub org_id: Option<String>,
    /// Only this integration.
    #[param(pattern = r"^int_[A-Za-z0-9]{16}$")]
    pub integration_id: Option<String>,
    /// Only this event type, or a prefix ending in `.` (`token.`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// At or after (RFC 3339).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Before (RFC 3339).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// The `seq` of the last entry of the previous page.
    pub cursor: Option<u64>,
    /// Page size (1–200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
    /// `json` (default) or `jsonl` (an export of the whole range, oldest first).
    #[param(pattern = "^(json|jsonl)$")]
    pub format: Option<String>,
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    value
        .map(|v| {
            parse_rfc3339(v).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`{name}` must be an RFC 3339 time such as 2026-11-28T10:00:00Z"
                ))
            })
        })
        .transpose()
}

#[utoipa::path(get, path = "/admin/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "A page of entries, newest first (format=json); with format=jsonl the whole range as application/jsonl, oldest first",
            content((AuditPage = "application/json"), (String = "application/jsonl"))),
        (status = 400, description = "Bad filter, time or format", body = ErrorBody),
        (status = 401, description = "No or invalid admin key", body = ErrorBody)))]
async fn query(
    State(state): State<AdminState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let mut filter = AuditFilter {
        org_id: q.org_id.as_deref().map(OrgId::parse).transpose()?,
        integration_id: q
            .integration_id
            .as_deref()
            .map(IntegrationId::parse)
            .transpose()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        kind: q.kind.clone().filter(|k| !k.is_empty()),
        from_ms: time_param("from", q.from.as_deref())?,
        to_ms: time_param("to", q.to.as_deref())?,
    };
    if let Some(own) = &principal.org {
        if filter.org_id.as_ref().is_some_and(|asked| asked != own) {
            return Ok(Json(AuditPage {
                entries: vec![],
                next_cursor: None,
            })
            .into_response());
        }
        filter.org_id = Some(own.clone());
    }
    match q.format.as_deref() {
        None | Some("json") => {
            let limit = page_size(q.limit)?;
            let entries = state.engine.audit_query(&filter, q.cursor, limit)?;
            let next_cursor = (entries.len() == limit)
                .then(|| entries.last().map(|e| e.seq))
                .flatten();
            let entries: Vec<AuditEntryDto> = entries.iter().map(AuditEntryDto::from).collect();
            Ok(Json(AuditPage { entries, next_cursor }).into_response())
        }
        Some("jsonl") => {
            let mut entries = state.engine.audit_query(&filter, q.cursor, MAX_EXPORT)?;
            entries.reverse();
            let mut body = String::new();
            for entry in &entries {
                body.push_str(
                    &serde_json::to_string(&AuditEntryDto::from(entry))
                        .map_err(|e| ApiError::Internal(e.to_string()))?,
                );
                body.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "application/jsonl")], body).into_response())
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "format `{other}` is not one of json, jsonl"
        ))),
    }
}

#[utoipa::path(get, path = "/admin/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "The chain's state and the first broken link, if any", body = VerifyDto),
        (status = 401, description = "No or invalid admin key", body = ErrorBody)))]
async fn verify(State(state): State<AdminState>, _principal: Principal) -> Result<Json<VerifyDto>, ApiError> {
    let report = state.engine.audit_verify()?;
    Ok(Json(VerifyDto {
        ok: report.first_broken.is_none(),
        entries_checked: report.entries_checked,
        first_broken: report.first_broken.map(|b| BrokenLinkDto {
            seq: b.seq,
            problem: b.problem,
        }),
    }))
}
