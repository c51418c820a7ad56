//! The embedded simulator's admin API: play the agents' side by hand or
//! from scripts (make them ready, accept and answer chats) and look at
//! what the routing simulator sees.
//!
//! Every body is JSON. Errors are `{"error": "<code>", "message": "..."}`
//! with status 400 (`bad_request`: bad input), 404 (`not_found`: unknown
//! agent or chat) or 409 (`conflict`: the agent exists, the chat has
//! ended, the agent has not joined, ...).
//!
//! | Request | Body | Answer |
//! |---|---|---|
//! | `GET /sim/agents` | | `[agent, ...]` |
//! | `POST /sim/agents` | an agent's settings `{"id", "name", "place", "groups", "skills", "ready", "capacity", "auto_accept"}` (only `id` required) | 201, the agent |
//! | `GET /sim/agents/{id}` | | the agent |
//! | `DELETE /sim/agents/{id}` | | `{"removed": "<id>"}` |
//! | `POST /sim/agents/{id}/ready` | | the agent |
//! | `POST /sim/agents/{id}/not-ready` | | the agent |
//! | `POST /sim/agents/{id}/login` | | the agent |
//! | `POST /sim/agents/{id}/logout` | | the agent |
//! | `POST /sim/agents/{id}/auto-accept` | `{"auto_accept": true \| false \| null}` (null: the global setting) | the agent |
//! | `GET /sim/agents/{id}/chats` | | `[agent chat, ...]` |
//! | `POST /sim/agents/{id}/chats/{chat_id}/accept` | | the agent chat |
//! | `POST /sim/agents/{id}/chats/{chat_id}/send` | `{"message": "..."}`, or form-encoded `message=...` | `{"position": n}` |
//! | `POST /sim/agents/{id}/chats/{chat_id}/typing` | `{"started": true \| false}` (default true) | `{"position": n}` |
//! | `POST /sim/agents/{id}/chats/{chat_id}/leave` | | the agent chat |
//! | `GET /sim/statistics?target=<urs target>&stat=<name>` | | `{"target", "stat", "value"}` |
//!
//! An agent is `{"id", "name", "place", "groups", "skills", "logged_in",
//! "ready", "capacity": {"chat": 3, ...}, "load": {"chat": 1, ...},
//! "auto_accept"}`. An agent chat is `{"chat": <chat info>, "invited":
//! bool, "party_id": "<the agent's party while in the chat>" | null,
//! "transcript": [entry, ...]}` (see [`super::chat_http`] for chat infos
//! and entries); `invited` means delivered and not accepted yet.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::protocol::{json_response, query_pairs, query_value};
use super::routing::RoutingError;
use super::settings::AgentSettings;
use super::simulator::{SimError, Simulator};
use crate::server::routes::{RouteDoc, Routes};

/// The admin API over a simulator (routes under `/sim`; see the module
/// docs), with its `/ors/help` entries.
pub fn admin_router(sim: Arc<Simulator>) -> (Router, Vec<RouteDoc>) {
    const GET: &[Method] = &[Method::GET];
    const POST: &[Method] = &[Method::POST];
    Routes::new("admin")
        .route(
            "/sim/agents",
            GET,
            list_agents,
            "the simulated agents and their state",
        )
        .route(
            "/sim/agents",
            POST,
            add_agent,
            "adds an agent (JSON: id, name, groups, skills, ready, capacity)",
        )
        .route("/sim/agents/{id}", GET, get_agent, "one agent")
        .route(
            "/sim/agents/{id}",
            &[Method::DELETE],
            remove_agent,
            "removes an agent",
        )
        .route(
            "/sim/agents/{id}/ready",
            POST,
            ready,
            "makes the agent ready",
        )
        .route(
            "/sim/agents/{id}/not-ready",
            POST,
            not_ready,
            "makes the agent not ready",
        )
        .route("/sim/agents/{id}/login", POST, login, "logs the agent in")
        .route(
            "/sim/agents/{id}/logout",
            POST,
            logout,
            "logs the agent out",
        )
        .route(
            "/sim/agents/{id}/auto-accept",
            POST,
            auto_accept,
            "turns auto-accept on or off (JSON: auto_accept true|false)",
        )
        .route(
            "/sim/agents/{id}/chats",
            GET,
            agent_chats,
            "the agent's chats with their transcripts",
        )
        .route(
            "/sim/agents/{id}/chats/{chat_id}/accept",
            POST,
            accept,
            "the agent accepts a chat delivered to it",
        )
        .route(
            "/sim/agents/{id}/chats/{chat_id}/send",
            POST,
            send,
            "the agent sends a message (JSON: message, or form message=...); answers its position",
        )
        .route(
            "/sim/agents/{id}/chats/{chat_id}/typing",
            POST,
            typing,
            "the agent starts or stops typing (JSON: started true|false, default true)",
        )
        .route(
            "/sim/agents/{id}/chats/{chat_id}/leave",
            POST,
            leave,
            "the agent leaves the chat",
        )
        .route(
            "/sim/statistics",
            GET,
            statistics,
            "a routing statistic of a target (query: target=..., stat=...)",
        )
        .with_state(sim)
}

type Sim = State<Arc<Simulator>>;

/// The error response.
fn failure(error: &SimError) -> Response {
    json_response(
        error.status(),
        &json!({ "error": error.code(), "message": error.to_string() }),
    )
}

/// A success or error response.
fn answer<T: serde::Serialize>(result: Result<T, SimError>) -> Response {
    match result {
        Ok(body) => json_response(200, &body),
        Err(e) => failure(&e),
    }
}

/// Decodes a JSON body (an empty body is `{}`).
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, SimError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| SimError::Invalid(format!("bad request body: {e}")))
}

async fn list_agents(State(sim): Sim) -> Response {
    json_response(200, &sim.routing().agents())
}

async fn add_agent(State(sim): Sim, body: Bytes) -> Response {
    let result = if body.iter().all(u8::is_ascii_whitespace) {
        Err(SimError::Invalid(
            "the body must be an agent's settings".to_string(),
        ))
    } else {
        decode::<AgentSettings>(&body).and_then(|agent| sim.routing().add_agent(agent))
    };
    match result {
        Ok(agent) => json_response(201, &agent),
        Err(e) => failure(&e),
    }
}

async fn get_agent(State(sim): Sim, Path(id): Path<String>) -> Response {
    answer(
        sim.routing()
            .agent(&id)
            .ok_or_else(|| SimError::NotFound(format!("no agent '{id}'"))),
    )
}

async fn remove_agent(State(sim): Sim, Path(id): Path<String>) -> Response {
    answer(
        sim.routing()
            .remove_agent(&id)
            .map(|()| json!({ "removed": id })),
    )
}

async fn ready(State(sim): Sim, Path(id): Path<String>) -> Response {
    answer(sim.routing().set_ready(&id, true))
}

async fn not_ready(State(sim): Sim, Path(id): Path<String>) -> Response {
    answer(sim.routing().set_ready(&id, false))
}

async fn login(State(sim): Sim, Path(id): Path<String>) -> Response {
    answer(sim.routing().set_logged_in(&id, true))
}

async fn logout(State(sim): Sim, Path(id): Path<String>) -> Response {
    answer(sim.routing().set_logged_in(&id, false))
}

/// `auto-accept` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoAcceptBody {
    auto_accept: Option<bool>,
}

async fn auto_accept(State(sim): Sim, Path(id): Path<String>, body: Bytes) -> Response {
    answer(
        decode::<AutoAcceptBody>(&body)
            .and_then(|b| sim.routing().set_auto_accept(&id, b.auto_accept)),
    )
}

async fn agent_chats(State(sim): Sim, Path(id): Path<String>) -> Response {
    answer(sim.chat().agent_chats(&id))
}

async fn accept(State(sim): Sim, Path((id, chat_id)): Path<(String, String)>) -> Response {
    answer(sim.chat().accept(&id, &chat_id))
}

/// `send` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    message: String,
}

async fn send(
    State(sim): Sim,
    Path((id, chat_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let message = if form {
        form_urlencoded::parse(&body)
            .find(|(k, _)| k == "message")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| SimError::Invalid("the 'message' field is required".to_string()))
    } else {
        decode::<SendBody>(&body).map(|b| b.message)
    };
    answer(message.and_then(|m| {
        sim.chat()
            .agent_send(&id, &chat_id, &m)
            .map(|position| json!({ "position": position }))
    }))
}

/// `typing` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypingBody {
    #[serde(default = "yes")]
    started: bool,
}

fn yes() -> bool {
    true
}

async fn typing(
    State(sim): Sim,
    Path((id, chat_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    answer(decode::<TypingBody>(&body).and_then(|b| {
        sim.chat()
            .agent_typing(&id, &chat_id, b.started)
            .map(|position| json!({ "position": position }))
    }))
}

async fn leave(State(sim): Sim, Path((id, chat_id)): Path<(String, String)>) -> Response {
    answer(sim.chat().agent_leave(&id, &chat_id))
}

async fn statistics(State(sim): Sim, RawQuery(query): RawQuery) -> Response {
    let pairs = query_pairs(query.as_deref());
    let (Some(target), Some(stat)) = (query_value(&pairs, "target"), query_value(&pairs, "stat"))
    else {
        return failure(&SimError::Invalid(
            "the 'target' and 'stat' query parameters are required".to_string(),
        ));
    };
    answer(
        sim.routing()
            .statistic_now(target, stat)
            .map(|value| json!({ "target": target, "stat": stat, "value": value }))
            .map_err(|e| match e {
                RoutingError::Invalid(m) => SimError::Invalid(m),
                other => SimError::Invalid(other.to_string()),
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::protocol::serve_for_test;
    use crate::backends::settings::SimulatorSettings;
    use serde_json::Value;
    use std::time::Duration;

    async fn call(method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
        let client = crate::io::http::http_client(Duration::from_secs(5));
        let mut request = client.request(method.parse().unwrap(), url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn errors_are_json_with_the_right_status() {
        let sim = Simulator::new(&SimulatorSettings::default()).unwrap();
        let base = serve_for_test(admin_router(sim).0).await;
        let (status, body) = call("GET", &format!("{base}/sim/agents/nobody"), None).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"], "not_found");
        assert_eq!(body["message"], "no agent 'nobody'");
        let (status, body) = call("POST", &format!("{base}/sim/agents"), Some("{\"id\":")).await;
        assert_eq!((status, &body["error"]), (400, &json!("bad_request")));
        let (status, body) = call("POST", &format!("{base}/sim/agents"), Some("")).await;
        assert_eq!((status, &body["error"]), (400, &json!("bad_request")));
        let (status, body) = call(
            "POST",
            &format!("{base}/sim/agents"),
            Some(r#"{"id":"agent-1"}"#),
        )
        .await;
        assert_eq!((status, &body["error"]), (409, &json!("conflict")));
        let (status, body) = call(
            "POST",
            &format!("{base}/sim/agents/agent-1/auto-accept"),
            Some(r#"{"auto_accept": false}"#),
        )
        .await;
        assert_eq!((status, &body["auto_accept"]), (200, &json!(false)));
        let (status, body) = call(
            "POST",
            &format!("{base}/sim/agents/agent-1/chats/nochat/send"),
            Some(r#"{"message": "x"}"#),
        )
        .await;
        assert_eq!((status, &body["error"]), (404, &json!("not_found")));
        let (status, body) = call(
            "GET",
            &format!("{base}/sim/statistics?target=Chat_Agents%40SS.GA&stat=RStatAgentsReady"),
            None,
        )
        .await;
        assert_eq!((status, &body["value"]), (200, &json!(2.0)));
        let (status, body) = call("GET", &format!("{base}/sim/statistics?target=x"), None).await;
        assert_eq!((status, &body["error"]), (400, &json!("bad_request")));
        let (status, _) = call("DELETE", &format!("{base}/sim/agents/agent-3"), None).await;
        assert_eq!(status, 200);
        let (_, agents) = call("GET", &format!("{base}/sim/agents"), None).await;
        assert_eq!(agents.as_array().map(Vec::len), Some(2));
        let (status, body) = call("POST", &format!("{base}/sim/agents/agent-2/logout"), None).await;
        assert_eq!((status, &body["logged_in"]), (200, &json!(false)));
    }
}
