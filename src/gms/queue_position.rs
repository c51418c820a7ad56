//! `GET|POST /genesys/1/service/{id}/check-queue-position` (GMS 8.5
//! Callback Services API; the keys as public GMS clients read them): where
//! a callback stands in its queue.
//!
//! The extension works out the position and the expected wait from the
//! routing backend's virtual queue: a callback whose session has a
//! `<queue:submit>` waiting stands among the submits of that virtual
//! queue; one still waiting for its customer (Chat Immediate before the
//! chat) stands among its service's `QUEUED` callbacks, oldest first. The
//! wait is the backend's `ExpectedWaitTime` statistic for the target (in
//! seconds; absent when the backend has none). Then, as GMS forwards the
//! call to ORS, it sends the callback's session the request
//! `check-queue-position` with `position`, `total_waiting`, `ewt` and
//! `agents_ready` in its data; the document answers with
//! `<session:response>` (the shipped `callback.scxml` answers at once, in
//! any state) and its answer is the reply: `_id`, `_position`,
//! `_total_waiting`, `_eta` and `ewt` (seconds),
//! `_agent_ready_threshold_passed`. A document that does not answer
//! within `[limits] request_timeout_ms` gets a 504.
//!
//! A `SCHEDULED` callback (no session yet) or a `PAUSED` one (not in the
//! queue while its service is paused) is answered by the extension:
//! `_callback_state` and `_desired_time`. A callback whose session is gone
//! (completed, cancelled, killed) gets what GMS answers then: a 500 whose
//! message carries `404 Not Found`, with `OrsServiceException`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Gms;
use super::records::{self, CallbackRow};
use crate::model::Event;
use crate::server::error::ApiError;

/// GMS's exception for a failed call to ORS.
pub const ORS_EXCEPTION: &str = "com.genesyslab.gsg.services.ors.OrsServiceException";

/// The request name the callback's session gets.
pub const REQUEST_NAME: &str = "check-queue-position";

fn session_gone(session: &str) -> ApiError {
    tracing::debug!(
        session,
        "check-queue-position: the callback's session is not running"
    );
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ors_session_gone",
        "ORS request failed: 404 Not Found (the callback's session is not running)",
    )
    .with_exception(ORS_EXCEPTION)
}

/// `GET|POST /genesys/1/service/{id}/check-queue-position`.
pub async fn check_queue_position(
    State(ctx): State<Arc<Gms>>,
    Path(service_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let record = ctx.records.get(&service_id).await.map_err(ApiError::from)?;
    let service = record.as_ref().and_then(|r| ctx.services.get(&r.service));
    let caller = ctx.customer(request.headers(), service)?;
    let Some(row) = record.filter(|r| caller.owns(&r.gms_user)) else {
        return Err(super::access::not_yours(&service_id));
    };
    if row.state == records::SCHEDULED || row.state == records::PAUSED {
        let shown = records::record_json(&row);
        return Ok(axum::Json(json!({
            "_id": row.id,
            "_callback_state": row.state,
            "_desired_time": shown.get("_desired_time").cloned().unwrap_or(Value::Null),
        }))
        .into_response());
    }
    let session = row.session_id.clone();
    let running = !records::is_final(&row.state)
        && ctx
            .sessions
            .query(&session)
            .await
            .is_ok_and(|view| view.status == "running");
    if !running {
        return Err(session_gone(&session));
    }
    let (position, total, target) = standing(&ctx, &row);
    let routing = &ctx.backends.routing;
    let statistic = |stat: &'static str| {
        let target = target.clone();
        async move {
            match target {
                Some(t) => routing.statistic(&t, stat).await.ok(),
                None => None,
            }
        }
    };
    let ewt = statistic("ExpectedWaitTime").await;
    let ready = statistic("StatAgentsAvailable").await;
    let (position, total) = match (position, total) {
        (Some(p), Some(t)) => (p, t),
        _ => ctx
            .records
            .queued_position(&row)
            .await
            .map_err(ApiError::from)?,
    };
    let requestid = ctx.sessions.new_request_id();
    let mut data = Map::new();
    data.insert("requestid".into(), Value::from(requestid.clone()));
    data.insert("serviceid".into(), Value::from(row.id.clone()));
    data.insert("position".into(), Value::from(position));
    data.insert("total_waiting".into(), Value::from(total));
    data.insert("ewt".into(), ewt.map(Value::from).unwrap_or(Value::Null));
    data.insert(
        "agents_ready".into(),
        ready.map(Value::from).unwrap_or(Value::Null),
    );
    let answer = ctx.responses.register(&requestid);
    if ctx
        .sessions
        .post_event(
            &session,
            Event::external(REQUEST_NAME, Some(Value::Object(data))),
        )
        .is_err()
    {
        ctx.responses.cancel(&requestid);
        return Err(session_gone(&session));
    }
    let timeout = Duration::from_millis(ctx.config.limits.request_timeout_ms);
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(body)) => {
            let status = StatusCode::from_u16(body.status).unwrap_or(StatusCode::OK);
            Ok((status, axum::Json(body.body)).into_response())
        }
        _ => {
            ctx.responses.cancel(&requestid);
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "request_timeout",
                format!(
                    "the session of callback '{}' did not answer {REQUEST_NAME} within {} ms",
                    row.id,
                    timeout.as_millis()
                ),
            ))
        }
    }
}

/// Where the callback's session stands when it has a submit waiting:
/// (position, waiting in that virtual queue, target); otherwise no
/// position yet and the service's first target.
fn standing(ctx: &Gms, row: &CallbackRow) -> (Option<u64>, Option<u64>, Option<String>) {
    let waiting = ctx
        .submits
        .of_session(&row.session_id)
        .into_iter()
        .find_map(|requestid| ctx.submits.position(&requestid));
    match waiting {
        Some((submit, position)) => (
            Some(position as u64),
            Some(ctx.submits.waiting_in(&submit.request.virtual_queue) as u64),
            Some(submit.request.target),
        ),
        None => (
            None,
            None,
            ctx.services
                .get(&row.service)
                .and_then(|s| s.target.first())
                .map(|step| step.target.text.clone()),
        ),
    }
}
