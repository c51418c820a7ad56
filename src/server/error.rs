//! The one error type of the HTTP API: a status code, a stable `error` code
//! and a human `message`, always answered as a JSON body (with GMS's
//! `exception` class name too, on the GMS APIs).

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
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
    /// Headers the answer carries beside the body (`WWW-Authenticate`,
    /// `Retry-After`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The exception class name GMS clients parse (`exception` in the
    /// body), on the GMS APIs.
    pub exception: Option<&'static str>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            exception: None,
        }
    }

    /// The same error naming `exception` (a Java class name, as GMS's
    /// error bodies do) beside `error` and `message`.
    pub fn with_exception(mut self, exception: &'static str) -> ApiError {
        self.exception = Some(exception);
        self
    }

    /// 429: the caller went over a rate or a quota; `retry_after_secs`
    /// becomes the `Retry-After` header (at least 1).
    pub fn too_many(
        code: &'static str,
        message: impl Into<String>,
        retry_after_secs: u64,
    ) -> ApiError {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        e.headers.push((
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs.max(1)),
        ));
        e
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
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some(exception) = self.exception {
            body["exception"] = exception.into();
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}
