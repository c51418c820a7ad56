//! `<queue:submit>`: find and reserve a target through the routing backend.
//!
//! Attributes (expressions): `interactionid`, `queue` (the virtual queue),
//! `priority`, `timeout` (seconds to wait for a target in all), `route`
//! (default true: the interaction is routed to the agent before `done`),
//! `hints` (an object; `reserve_timeout` in seconds, default 30, and
//! `media`, default the interaction's); `requestid` is a location that
//! receives the request id. Targets come from a `<queue:targets>` child
//! holding `<queue:target name type statserver>` elements (literal) or
//! `<queue:targetid expr>` elements whose value is a URS target string;
//! as our extension a `targetid` may also be a GMS `_target` JSON list of
//! steps. Several targets are offered at once.
//!
//! Outcome: `queue.submit.done` with `requestid`, `interactionid`,
//! `targetselected`, `vqselected`, `targetobjectselected` (the agent),
//! `targetcomponentselected` (the place), `waited` (ms) and `resource`
//! (usable as the `to` of `<ixn:redirect>`); or `error.queue.submit`
//! with `requestid`, `error` (`timeout`, `cancelled`, `invalidattribute`,
//! `unknown`, `remote`, `invalidstate.notcontrolled` for an interaction
//! another session controls, or a redirect error) and `message`. As in ORS a
//! `queue.submit.requestid` event (`requestid`, `interactionid`) comes
//! first. `media` defaults to the interaction's. After routing an
//! interaction the chat backend does not host (a call, an e-mail) the
//! session gets `interaction.deleted` (`resultof` `routed`) after the
//! `done`: the interaction has left the routing point.

use serde_json::{Map, Value};

use std::sync::Arc;

use crate::backends::routing::{Reservation, ReserveRequest, RoutingError};
use crate::gms::{Gms, interactions};
use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{
    Failure, answer_then, assign_request_id, attr, descendant_elements, eval_attr, failure_event,
    interaction_attr, result_event, seconds_attr, seconds_value, value_text,
};

use super::Outstanding;

/// The `<queue:submit>` handler.
pub struct Submit(pub std::sync::Arc<Gms>);

/// How long a submit waits when it names no `timeout`.
const DEFAULT_TIMEOUT_MS: u64 = 3_600_000;
/// How long an agent stays reserved by default (`_agent_reserve_timeout`).
const DEFAULT_RESERVE_MS: u64 = 30_000;

impl CustomActionHandler for Submit {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let ctx = self.0.clone();
        let interaction_id = interaction_attr(scope, action)?;
        let virtual_queue = eval_attr(scope, action, "queue")?
            .map(|v| value_text(&v))
            .unwrap_or_default();
        let priority = match eval_attr(scope, action, "priority")? {
            None | Some(Value::Null) => 0,
            Some(v) => match &v {
                Value::Number(n) => n.as_f64().map(|f| f as i64),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("priority must be an integer, not {v}"))?,
        };
        let timeout_ms = seconds_attr(scope, action, "timeout")?.unwrap_or(DEFAULT_TIMEOUT_MS);
        let route = match eval_attr(scope, action, "route")? {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => b,
            Some(Value::String(s)) => !s.eq_ignore_ascii_case("false"),
            Some(other) => {
                return Err(format!("route must be true or false, not {other}").into());
            }
        };
        let hints = match eval_attr(scope, action, "hints")? {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => return Err(format!("hints must be an object, not {other}").into()),
        };
        let reserve_ms = match hints.get("reserve_timeout") {
            None | Some(Value::Null) => DEFAULT_RESERVE_MS,
            Some(v) => seconds_value(v)
                .ok_or_else(|| format!("hints.reserve_timeout must be seconds, not {v}"))?,
        };
        let media = hints.get("media").map(value_text).unwrap_or_else(|| {
            ctx.interactions
                .get(&interaction_id)
                .map_or("chat", |i| i.media)
                .to_string()
        });
        let target = targets(scope, action)?;
        let requestid = assign_request_id(scope, action, &ctx.sessions)?;
        let request = ReserveRequest {
            request_id: requestid.clone(),
            interaction_id: interaction_id.clone(),
            virtual_queue,
            media,
            target,
            priority,
            timeout_ms,
            reserve_ms,
        };
        let mut data = Map::new();
        data.insert("interactionid".into(), Value::from(interaction_id.clone()));
        let sessions = ctx.sessions.clone();
        let session = scope.session_id.to_string();
        let announced = result_event("queue.submit.requestid", {
            let mut d = data.clone();
            d.insert("requestid".into(), Value::from(requestid.clone()));
            d
        });
        let outstanding = Outstanding {
            request: request.clone(),
            route,
            since_ms: crate::host::wall_clock_ms(),
            session: session.clone(),
        };
        let after_ctx = ctx.clone();
        let after_id = interaction_id.clone();
        let after_request = requestid.clone();
        let after = move |ok: bool| finish(&after_ctx, &after_request, &after_id, route, ok);
        let work = async move {
            // ORS names the request before it answers it.
            let _ = ctx.sessions.post_event(&session, announced);
            // An interaction another session controls is not this one's
            // to route (one the server does not know, such as a callback's
            // own id, is allowed: the reservation is kept for it).
            if let Some(ixn) = ctx.interactions.get(&interaction_id)
                && ixn.owner.as_deref().is_some_and(|owner| owner != session)
            {
                return Err(Failure::new(
                    "invalidstate.notcontrolled",
                    format!("interaction '{interaction_id}' is controlled by another session"),
                ));
            }
            ctx.submits.begin(outstanding);
            reserve_and_route(&ctx, request, route, &session).await
        };
        answer_then(
            scope,
            action,
            &sessions,
            ("queue.submit", requestid, data),
            work,
            after,
        )
    }
}

/// Reserves an agent through the routing backend and, with `route`,
/// routes the interaction to them; answers the `done` fields. A
/// reservation that cannot be used is released: also one made for an
/// interaction that another session took over while the submit waited
/// (`invalidstate.notcontrolled`), so a strategy that lost its chat never
/// routes it.
async fn reserve_and_route(
    ctx: &Gms,
    request: ReserveRequest,
    route: bool,
    session: &str,
) -> Result<Map<String, Value>, Failure> {
    let interaction_id = request.interaction_id.clone();
    let reservation = ctx
        .backends
        .routing
        .reserve(request)
        .await
        .map_err(|e| Failure::new(e.code(), e.to_string()))?;
    if let Some(ixn) = ctx.interactions.get(&interaction_id)
        && ixn.owner.as_deref().is_some_and(|owner| owner != session)
    {
        ctx.backends
            .routing
            .release(&reservation.reservation_id)
            .await;
        return Err(Failure::new(
            "invalidstate.notcontrolled",
            format!("interaction '{interaction_id}' was taken over by another session"),
        ));
    }
    let routed = if route {
        interactions::route_to_agent(ctx, &interaction_id, &reservation, session).await
    } else {
        // Kept with the interaction for the redirect to come; one already
        // being routed by another session keeps its own (the agent found
        // here is released); one the server does not know is allowed.
        match ctx
            .interactions
            .set_reservation(&interaction_id, reservation.clone())
        {
            Err(e) if e.code == "invalidstate.routed" => Err(e),
            Err(e) => {
                tracing::debug!(error = %e.message, "reservation for an unknown interaction");
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    };
    match routed {
        Ok(()) => Ok(selected(&reservation)),
        Err(e) => {
            ctx.backends
                .routing
                .release(&reservation.reservation_id)
                .await;
            Err(Failure::from(e))
        }
    }
}

/// A submit was answered: it stops waiting, and an interaction the chat
/// backend does not host leaves its routing point once routed.
fn finish(ctx: &Gms, requestid: &str, interaction_id: &str, route: bool, ok: bool) {
    ctx.submits.finish(requestid);
    if ok && route {
        interactions::leave_after_routing(ctx, interaction_id);
    }
}

/// Asks the routing backend again for a submit that was waiting when the
/// server stopped (read back from the store, and still awaited by its
/// session once restored), for what remains of its
/// timeout, and answers its session as the submit would have
/// (`queue.submit.done` or `error.queue.submit`; `timeout` when nothing
/// remains). A multi-step target starts again from its first step. The
/// backend may still hold the first request (a routing service that kept
/// running while the server was down): it is cancelled first, so one
/// submit never holds two agents.
pub async fn resume(ctx: Arc<Gms>, submit: Outstanding) {
    let mut request = submit.request.clone();
    let (requestid, interaction_id) = (request.request_id.clone(), request.interaction_id.clone());
    // The chats read back are checked with the chat backend first: a
    // submit for one that ended while the server was down is answered,
    // not asked again (its session has `interaction.deleted`).
    let mut reconciled = ctx.reconciled.subscribe();
    let ended = match reconciled.wait_for(Option::is_some).await {
        Ok(v) => v.as_ref().is_some_and(|e| e.contains(&interaction_id)),
        Err(_) => false,
    };
    if ended {
        let mut data = Map::new();
        data.insert("requestid".into(), Value::from(requestid.clone()));
        data.insert("interactionid".into(), Value::from(interaction_id.clone()));
        let event = failure_event(
            "error.queue.submit",
            data,
            "cancelled",
            "the interaction ended while the server was down".into(),
        );
        ctx.sessions
            .post_durably(vec![(submit.session.clone(), event)], Vec::new());
        finish(&ctx, &requestid, &interaction_id, submit.route, false);
        return;
    }
    let mut pause = std::time::Duration::from_secs(1);
    let result = loop {
        let elapsed = crate::host::wall_clock_ms().saturating_sub(submit.since_ms);
        let Some(left) = submit
            .request
            .timeout_ms
            .checked_sub(elapsed)
            .filter(|l| *l > 0)
        else {
            break Err(Failure::new(
                RoutingError::Timeout.code(),
                RoutingError::Timeout.to_string(),
            ));
        };
        request.timeout_ms = left;
        ctx.backends.routing.cancel(&requestid).await;
        match reserve_and_route(&ctx, request.clone(), submit.route, &submit.session).await {
            // The routing backend may not be back yet: asked again
            // while the submit's time lasts.
            Err(f) if f.code == RoutingError::Backend(String::new()).code() => {
                tracing::warn!(request = %requestid, error = %f.message,
                    "a submit kept over a restart could not be asked again yet");
                tokio::time::sleep(pause.min(std::time::Duration::from_millis(left))).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(30));
            }
            other => break other,
        }
    };
    let mut reply = Map::new();
    reply.insert("requestid".into(), Value::from(requestid.clone()));
    reply.insert("interactionid".into(), Value::from(interaction_id.clone()));
    let (event, ok) = match result {
        Ok(extra) => {
            reply.extend(extra);
            (result_event("queue.submit.done", reply), true)
        }
        Err(f) => (
            failure_event("error.queue.submit", reply, &f.code, f.message),
            false,
        ),
    };
    ctx.sessions
        .post_durably(vec![(submit.session.clone(), event)], Vec::new());
    finish(&ctx, &requestid, &interaction_id, submit.route, ok);
}

/// The target text the routing backend gets: one target as is, several
/// as a JSON list offered together.
fn targets(scope: &mut ActionScope<'_>, action: &CustomAction) -> Result<String, ActionError> {
    let mut found = Vec::new();
    for element in descendant_elements(&action.xml) {
        match element.name.as_str() {
            "target" => {
                let name = element
                    .attr("name")
                    .ok_or("<queue:target> needs a 'name'")?;
                let kind = element.attr("type").unwrap_or("A");
                let statserver = element.attr("statserver").unwrap_or("StatServer");
                found.push(format!("{name}@{statserver}.{kind}"));
            }
            "targetid" => {
                let expr = element
                    .attr("expr")
                    .ok_or("<queue:targetid> needs an 'expr'")?;
                let value = scope
                    .datamodel
                    .eval_text(expr)
                    .map_err(|e| format!("<queue:targetid expr=\"{expr}\">: {}", e.message))?
                    .unwrap_or(Value::Null);
                match value {
                    Value::Null => {
                        return Err(format!("<queue:targetid expr=\"{expr}\"> is empty").into());
                    }
                    Value::Array(_) => found.push(value.to_string()),
                    other => found.push(value_text(&other)),
                }
            }
            _ => {}
        }
    }
    if found.is_empty()
        && let Some(text) = attr(action, "targetexpr")
    {
        let v = scope
            .datamodel
            .eval_text(text)
            .map_err(|e| format!("targetexpr=\"{text}\": {}", e.message))?;
        if let Some(v) = v {
            found.push(value_text(&v));
        }
    }
    match found.len() {
        0 => Err(
            "<queue:submit> needs <queue:targets> with a <queue:target> or <queue:targetid>".into(),
        ),
        1 => Ok(found.remove(0)),
        _ => {
            let steps: Vec<Value> = found
                .into_iter()
                .map(|t| {
                    let mut step = Map::new();
                    step.insert("target".into(), Value::from(t));
                    step.insert("timeout".into(), Value::from(0));
                    step.insert("clear".into(), Value::from(false));
                    Value::Object(step)
                })
                .collect();
            Ok(Value::Array(steps).to_string())
        }
    }
}

/// The `done` fields describing the selected target.
pub fn selected(reservation: &Reservation) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert(
        "targetselected".into(),
        Value::from(reservation.target_selected.clone()),
    );
    data.insert(
        "vqselected".into(),
        Value::from(reservation.virtual_queue.clone()),
    );
    data.insert(
        "targetobjectselected".into(),
        Value::from(reservation.agent_id.clone()),
    );
    data.insert(
        "targetcomponentselected".into(),
        Value::from(reservation.place.clone()),
    );
    data.insert("waited".into(), Value::from(reservation.waited_ms));
    data.insert(
        "resource".into(),
        serde_json::to_value(reservation).unwrap_or(Value::Null),
    );
    data
}
