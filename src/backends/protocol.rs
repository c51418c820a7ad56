//! The JSON-over-HTTP protocol between the server and external routing
//! and chat backends: what both halves share. The routes are documented in
//! [`super::routing_http`] (routing) and [`super::chat_http`] (chat); this
//! module holds the conventions and the small request and response bodies.
//!
//! # Conventions
//!
//! * Every body is JSON (`Content-Type: application/json`), in and out;
//!   the types are the `serde` forms of the [`super::routing`] and
//!   [`super::chat`] types and of the bodies below.
//! * Each backend lives under a base URL of its own choosing (`{base}`),
//!   e.g. `http://router.example:8080/ors-routing`. The server is given
//!   that base (`routing_url`, `chat_url`) and appends the paths.
//! * Success is any 2xx status with the documented body.
//! * A failure is a non-2xx status whose body is the backend's error enum
//!   in its `serde` form: `{"error": "<code>", "message": "<text>"}`, with
//!   `message` absent for codes that carry none. Routing codes:
//!   `timeout`, `cancelled`, `invalid`, `unknown`, `backend`
//!   ([`super::routing::RoutingError`]); chat codes: `not_found`, `ended`,
//!   `invalid`, `backend` ([`super::chat::ChatError`]). The status is
//!   informative ([`routing_status`], [`chat_status`]); the client reads
//!   the body. A non-2xx answer without such a body, or no answer at all,
//!   is a `backend` error on the server's side.
//! * Path segments (chat ids) are percent-encoded.

use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::background::Background;
use super::chat::{ChatError, ChatUpdate};
use super::routing::RoutingError;

/// `POST {base}/cancel` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelBody {
    /// The request to cancel.
    pub request_id: String,
}

/// `POST {base}/cancel` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelledBody {
    /// Whether a request was waiting, or an unconfirmed reservation was
    /// released for it.
    pub cancelled: bool,
}

/// `POST {base}/confirm` and `POST {base}/release` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReservationBody {
    /// The reservation.
    pub reservation_id: String,
}

/// `GET {base}/statistic` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatisticBody {
    /// The statistic's value.
    pub value: f64,
}

/// `POST {base}/chats/{id}/send` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendBody {
    /// The sending party.
    pub party_id: String,
    /// The message.
    pub text: String,
}

/// `POST {base}/chats/{id}/system` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemBody {
    /// The system party's display name.
    pub nickname: String,
    /// The message.
    pub text: String,
}

/// `POST {base}/chats/{id}/typing` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypingBody {
    /// The typing party.
    pub party_id: String,
    /// Started (`true`) or stopped typing.
    pub started: bool,
}

/// Response of `send`, `system` and `typing`: the new entry's position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionBody {
    /// Position in the transcript.
    pub position: u64,
}

/// `POST {base}/chats/{id}/leave` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaveBody {
    /// The party leaving.
    pub party_id: String,
}

/// `POST {base}/chats/{id}/terminate` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TerminateBody {
    /// Why (recorded in the `ended` update).
    #[serde(default)]
    pub reason: String,
}

/// The empty JSON object most changes answer with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

/// One update in an updates page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequencedUpdate {
    /// Its sequence number (1, 2, ... per stream; a gap means updates
    /// were lost).
    pub seq: u64,
    /// The update.
    pub update: ChatUpdate,
}

/// `GET {base}/updates` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdatesPage {
    /// Updates after the requested sequence number, oldest first.
    pub updates: Vec<SequencedUpdate>,
    /// The sequence number to ask after next time.
    pub next: u64,
    /// The stream's id; it changes when the backend restarts and numbers
    /// from 1 again.
    pub stream: String,
}

/// The HTTP status a routing error is answered with.
pub fn routing_status(error: &RoutingError) -> u16 {
    match error {
        RoutingError::Invalid(_) => 400,
        RoutingError::Unknown(_) => 404,
        RoutingError::Timeout => 408,
        RoutingError::Cancelled => 409,
        RoutingError::Backend(_) => 502,
    }
}

/// The HTTP status a chat error is answered with.
pub fn chat_status(error: &ChatError) -> u16 {
    match error {
        ChatError::Invalid(_) => 400,
        ChatError::NotFound(_) => 404,
        ChatError::Ended => 410,
        ChatError::Backend(_) => 502,
    }
}

/// A JSON response.
pub(crate) fn json_response<T: Serialize>(status: u16, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            format!(r#"{{"error":"backend","message":"cannot encode the response: {e}"}}"#),
        )
            .into_response(),
    }
}

/// Reads a query string into (name, value) pairs.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The value of a query parameter.
pub(crate) fn query_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Characters escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// A value percent-encoded for a path segment or query value.
pub(crate) fn encode(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

/// An error enum of the protocol (the failure body).
pub(crate) trait ProtocolError: DeserializeOwned + Sized {
    /// A `backend` error.
    fn backend(message: String) -> Self;
}

impl ProtocolError for RoutingError {
    fn backend(message: String) -> Self {
        RoutingError::Backend(message)
    }
}

impl ProtocolError for ChatError {
    fn backend(message: String) -> Self {
        ChatError::Backend(message)
    }
}

/// The default time limit of a call (reserve and update polls set their
/// own).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The client side: a base URL and a `reqwest` client whose requests all
/// run on a background runtime the client owns (see
/// `backends/background.rs`).
pub(crate) struct ProtocolClient {
    base: String,
    client: reqwest::Client,
    runtime: Background,
}

impl ProtocolClient {
    /// A client for the backend at `base_url` (http or https).
    pub(crate) fn new(base_url: &str, name: &str) -> Result<ProtocolClient, super::SetupError> {
        let base = base_url.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(super::SetupError::Settings(format!(
                "'{base_url}' is not an http:// or https:// base URL"
            )));
        }
        Ok(ProtocolClient {
            base: base.to_string(),
            client: crate::io::http::http_client(CALL_TIMEOUT),
            runtime: Background::new(name)?,
        })
    }

    /// The base URL, without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The `reqwest` client.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The background runtime.
    pub(crate) fn runtime(&self) -> &Background {
        &self.runtime
    }

    /// Sends a request (`path` is appended to the base) with an optional
    /// JSON body, and decodes the answer: the success body, or the
    /// failure body as `E`.
    pub(crate) async fn call<T, E>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<T, E>
    where
        T: DeserializeOwned,
        E: ProtocolError,
    {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method, &url);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let answer = self
            .runtime
            .run(async move {
                let response = request.send().await.map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let bytes = response.bytes().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((status, bytes))
            })
            .await
            .and_then(|r| r);
        let (status, bytes) = answer.map_err(|e| E::backend(format!("{url}: {e}")))?;
        if (200..300).contains(&status) {
            serde_json::from_slice(&bytes)
                .map_err(|e| E::backend(format!("{url}: unexpected answer: {e}")))
        } else {
            Err(serde_json::from_slice::<E>(&bytes).unwrap_or_else(|_| {
                let text = String::from_utf8_lossy(&bytes);
                let text: String = text.chars().take(200).collect();
                E::backend(format!("{url}: HTTP {status}: {text}"))
            }))
        }
    }

    /// [`ProtocolClient::call`] with a JSON-encoded body.
    pub(crate) async fn post<B, T, E>(
        &self,
        path: &str,
        body: &B,
        timeout: Option<Duration>,
    ) -> Result<T, E>
    where
        B: Serialize,
        T: DeserializeOwned,
        E: ProtocolError,
    {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| E::backend(format!("cannot encode the request: {e}")))?;
        self.call(reqwest::Method::POST, path, Some(bytes), timeout)
            .await
    }
}

/// Serves a router on a local port for tests; returns its base URL.
#[cfg(test)]
pub(crate) async fn serve_for_test(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_the_enums_serde_forms() {
        let timeout = serde_json::to_string(&RoutingError::Timeout).unwrap();
        assert_eq!(timeout, r#"{"error":"timeout"}"#);
        let invalid = serde_json::to_string(&RoutingError::Invalid("bad".into())).unwrap();
        assert_eq!(invalid, r#"{"error":"invalid","message":"bad"}"#);
        assert_eq!(
            serde_json::from_str::<ChatError>(r#"{"error":"ended"}"#).unwrap(),
            ChatError::Ended
        );
        assert_eq!(routing_status(&RoutingError::Cancelled), 409);
        assert_eq!(chat_status(&ChatError::NotFound("x".into())), 404);
        assert_eq!(encode("a b/c-d_e.f"), "a%20b%2Fc-d_e.f");
        let pairs = query_pairs(Some("target=A%40B.GA&stat=X"));
        assert_eq!(query_value(&pairs, "target"), Some("A@B.GA"));
        assert_eq!(query_value(&pairs, "none"), None);
    }

    #[tokio::test]
    async fn unreachable_backends_are_backend_errors() {
        assert!(ProtocolClient::new("localhost:1", "t").is_err());
        let client = ProtocolClient::new("http://127.0.0.1:1/", "ors-test-client").unwrap();
        assert_eq!(client.base(), "http://127.0.0.1:1");
        let e: Result<Empty, RoutingError> = client
            .call(
                reqwest::Method::GET,
                "/x",
                None,
                Some(Duration::from_secs(2)),
            )
            .await;
        assert!(matches!(e, Err(RoutingError::Backend(m)) if m.contains("127.0.0.1:1/x")));
    }
}
