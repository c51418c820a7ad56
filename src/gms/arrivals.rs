//! Interactions from outside: the simulator's admin routes that make an
//! interaction arrive at a routing point or interaction queue, as ORS sees
//! one when SIP Server or Interaction Server hands it over, and let a
//! person or a test watch and end it (admin credential).
//!
//! - `POST /sim/interactions` `{media?, queue, udata?, from?, to?}` → 201
//!   `{interactionid, sessionid, media, queue}`: the queue's `application`
//!   (`[queues.NAME]`, or `[interaction_queues.NAME]` for chat) starts with
//!   `interactionid`, `queue` and `media` in its data and gets
//!   `interaction.added` then `interaction.present`. `media` defaults to the
//!   queue's and must match it. 400 `bad_interaction` for a malformed body,
//!   404 `unknown_queue`, 502 `strategy_failed` when the strategy cannot
//!   start, 503 `too_many_interactions` beyond [`MAX_INTERACTIONS`], 415
//!   for a body that is not JSON, 400 `json_too_deep` past the API's
//!   nesting limit.
//! - `GET /sim/interactions`: every interaction the server knows, oldest
//!   first; `GET /sim/interactions/{id}`: one (404 `interaction_not_found`).
//! - `DELETE /sim/interactions/{id}[?reason=…]`: the interaction ends (the
//!   caller hung up, the agent released the call): its session, if it
//!   still controls it, gets `interaction.deleted` (`resultof` = reason,
//!   default `released`) and its agent is released.
//!
//! An injected chat is an interaction only: it has no transcript (chats
//! with transcripts come through Chat API v1 and the chat backend).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Gms;
use super::interactions::{self, Arrival, Interaction};
use crate::server::error::ApiError;
use crate::server::routes::{RouteDoc, Routes};

/// The routes and their `/ors/help` entries (the caller adds the admin
/// guard).
pub fn router(gms: &Arc<Gms>) -> (Router, Vec<RouteDoc>) {
    use axum::http::Method;
    Routes::new("admin")
        .route(
            "/sim/interactions",
            &[Method::POST],
            arrive,
            "an interaction arrives at a routing point or queue (JSON: queue, media, udata, from, to)",
        )
        .route(
            "/sim/interactions",
            &[Method::GET],
            list,
            "the interactions in the simulator",
        )
        .route(
            "/sim/interactions/{id}",
            &[Method::GET],
            one,
            "one interaction",
        )
        .route(
            "/sim/interactions/{id}",
            &[Method::DELETE],
            end,
            "ends an interaction",
        )
        .with_state(gms.clone())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInteraction {
    media: Option<String>,
    queue: String,
    #[serde(default)]
    udata: Map<String, Value>,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_interaction", message)
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "interaction_not_found",
        format!("no interaction '{id}'"),
    )
}

fn view(ixn: &Interaction) -> Value {
    json!({
        "interactionid": ixn.id,
        "media": ixn.media,
        "queue": ixn.queue,
        "state": ixn.state,
        "sessionid": ixn.owner,
        "agentid": ixn.reservation.as_ref().map(|r| r.agent_id.clone()),
        "from": ixn.from,
        "to": ixn.to,
        "udata": ixn.user_data,
        "created": ixn.created_at,
    })
}

/// Most interactions the server keeps at once; beyond it an arrival is
/// refused (503 `too_many_interactions`) until some end, so a driver that
/// never ends its calls cannot grow the table without bound.
pub const MAX_INTERACTIONS: usize = 10_000;

async fn arrive(
    State(gms): State<Arc<Gms>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mime = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if mime != "application/json" && mime != "text/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "an arriving interaction is a JSON object (Content-Type: application/json)",
        ));
    }
    if gms.interactions.len() >= MAX_INTERACTIONS {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_interactions",
            format!(
                "{MAX_INTERACTIONS} interactions are in progress; end some \
                 (DELETE /sim/interactions/{{id}}) first"
            ),
        ));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not JSON: {e}")))?;
    if crate::server::params::json_depth(&value) > crate::server::params::MAX_JSON_DEPTH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "json_too_deep",
            format!(
                "the JSON body nests deeper than {} levels",
                crate::server::params::MAX_JSON_DEPTH
            ),
        ));
    }
    if !value.is_object() {
        return Err(bad("an arriving interaction is a JSON object"));
    }
    let request: NewInteraction =
        serde_json::from_value(value).map_err(|e| bad(format!("not an interaction: {e}")))?;
    let limits = &gms.settings.gms.limits;
    for (field, value) in [
        ("from", &request.from),
        ("to", &request.to),
        ("queue", &request.queue),
    ] {
        if value.chars().count() > limits.max_field_chars {
            return Err(bad(format!(
                "'{field}' is longer than {} characters",
                limits.max_field_chars
            )));
        }
    }
    let udata_bytes = serde_json::to_vec(&request.udata).map_or(0, |v| v.len());
    if udata_bytes > limits.max_user_data_bytes {
        return Err(bad(format!(
            "'udata' is larger than {} bytes",
            limits.max_user_data_bytes
        )));
    }
    let (Some(application), Some(queue_media)) = (
        gms.settings.application_for(&request.queue),
        gms.settings.media_of(&request.queue),
    ) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_queue",
            format!(
                "no routing point or interaction queue '{}' is configured ([queues.NAME])",
                request.queue
            ),
        ));
    };
    let media = match &request.media {
        None => queue_media,
        Some(m) => match interactions::media_named(m) {
            Some(m) if m == queue_media => m,
            Some(m) => {
                return Err(bad(format!(
                    "'{}' takes {queue_media} interactions, not {m}",
                    request.queue
                )));
            }
            None => {
                return Err(bad(format!(
                    "media must be voice, chat or email, not '{m}'"
                )));
            }
        },
    };
    let ixn = gms.interactions.inject(Arrival {
        media,
        queue: request.queue.clone(),
        user_data: request.udata,
        from: request.from,
        to: request.to,
    });
    let sessionid = interactions::start_strategy(&gms, &ixn, &application)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "strategy_failed",
                format!("the strategy of '{}' could not start: {e}", request.queue),
            )
        })?;
    tracing::info!(interaction = %ixn.id, queue = %ixn.queue, media, session = %sessionid,
        "interaction arrived");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "interactionid": ixn.id,
            "sessionid": sessionid,
            "media": media,
            "queue": ixn.queue,
        })),
    )
        .into_response())
}

async fn list(State(gms): State<Arc<Gms>>) -> Json<Value> {
    Json(Value::Array(
        gms.interactions.list().iter().map(view).collect(),
    ))
}

async fn one(State(gms): State<Arc<Gms>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    gms.interactions
        .get(&id)
        .map(|i| Json(view(&i)))
        .ok_or_else(|| not_found(&id))
}

#[derive(Deserialize)]
struct EndQuery {
    reason: Option<String>,
}

async fn end(
    State(gms): State<Arc<Gms>>,
    Path(id): Path<String>,
    Query(q): Query<EndQuery>,
) -> Result<StatusCode, ApiError> {
    let reason = q.reason.unwrap_or_else(|| "released".into());
    if reason.chars().count() > gms.settings.gms.limits.max_field_chars {
        return Err(bad("'reason' is too long"));
    }
    interactions::end(&gms, &id, &reason)
        .await
        .map_err(|e| match e.code.as_str() {
            "unknown" => not_found(&id),
            _ => ApiError::new(StatusCode::BAD_GATEWAY, "backend_failed", e.message),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
