//! The admin API's errors: JSON `{"error": "<stable_code>", "message": "..."}` with
//! the right status. Internal failures are logged and answered generically.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tollgate_engine::EngineError;
use tollgate_engine::model::ValidationError;

/// Every way an admin request can fail.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, bad query parameter).
    BadRequest(String),
    /// 401: no or an invalid admin key.
    Unauthorized(String),
    /// 403: the key may not do this (read-only, another organisation's write).
    Forbidden(String),
    /// 404: no such resource (or one the key may not see).
    NotFound(String),
    /// 409: the change does not fit the current state.
    Conflict(String),
    /// 413: the body is too large.
    PayloadTooLarge(String),
    /// 415: not JSON.
    UnsupportedMediaType(String),
    /// 422: well-formed but invalid values.
    Unprocessable(String),
    /// 429/503: busy; retry after the given seconds.
    Busy(u64),
    /// 503: the data store cannot write (disk full or failing); logged.
    StorageUnavailable(String),
    /// 500: logged, never echoed.
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            Self::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m.clone()),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
            Self::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            Self::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m.clone()),
            Self::UnsupportedMediaType(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", m.clone()),
            Self::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", m.clone()),
            Self::Busy(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is busy; retry after the time in Retry-After".into(),
            ),
            Self::StorageUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the data store cannot write right now (for example, the disk is full); nothing was changed. The cause is in the server log".into(),
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the server failed; nothing was changed. The error is in the server log".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) | Self::StorageUnavailable(detail) = &self {
            tracing::error!(detail = %detail, "admin API internal error");
        }
        let (status, code, message) = self.parts();
        let mut response = (status, Json(json!({ "error": code, "message": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="tollgate-admin""#),
            );
        }
        let retry_after = match self {
            Self::Busy(after) => Some(after.max(1)),
            Self::StorageUnavailable(_) => Some(30),
            _ => None,
        };
        if let Some(after) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after));
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::Unprocessable(e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => Self::NotFound(format!("integration {what} does not exist")),
            EngineError::Conflict(m) => Self::Conflict(m),
            EngineError::Invalid(v) => Self::Unprocessable(v.to_string()),
            EngineError::Overloaded { retry_after } => Self::Busy(retry_after.as_secs()),
            EngineError::Timeout | EngineError::Unavailable | EngineError::ShuttingDown => Self::Busy(1),
            EngineError::Storage(e) => Self::from(e),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<tollgate_engine::storage::StorageError> for ApiError {
    fn from(e: tollgate_engine::storage::StorageError) -> Self {
        use tollgate_engine::storage::StorageError;
        match e {
            StorageError::Io(_) | StorageError::Closed => Self::StorageUnavailable(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// A JSON body whose rejections use [`ApiError`] (400 syntax, 415 content type,
/// 413 size, 422 wrong fields or types).
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Self::UnsupportedMediaType("send the body as JSON with Content-Type: application/json".into())
            }
            JsonRejection::JsonSyntaxError(e) => {
                Self::BadRequest(format!("the body is not valid JSON: {}", e.body_text()))
            }
            JsonRejection::JsonDataError(e) => {
                Self::Unprocessable(format!("the body has the wrong shape: {}", e.body_text()))
            }
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge("the body is larger than 64 KiB".into())
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

/// Query parameters whose rejections use [`ApiError`] (400 with our JSON shape).
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(format!("bad query parameters: {}", rejection.body_text()))
    }
}
