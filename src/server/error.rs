//! The one error type of the HTTP API: a status code, a stable `error` code
//! and a human `message`, always answered as a JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API failure; see the module docs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`session_not_found`, ...).
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 404: no session with this id.
    pub fn session_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no session '{id}'"),
        )
    }

    /// 409: the session exists but has ended.
    pub fn session_ended(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "session_ended",
            format!("session '{id}' has ended"),
        )
    }

    /// 400: a parameter is missing or malformed.
    pub fn bad_parameter(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_parameter", message)
    }

    /// 500: something failed inside the server; details go to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(%detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error (see the server log)",
        )
    }

    /// 503: the server is shutting down or a worker is gone.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}
