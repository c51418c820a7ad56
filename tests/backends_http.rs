//! The embedded simulator exposed over the backend protocol and driven
//! through the HTTP clients, with the agents' side played through the
//! admin API, all on real sockets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use ors::backends::chat::{AgentRef, ChatBackend, ChatError, ChatState, ChatUpdate, EntryKind};
use ors::backends::chat::{NewChat, PartyType};
use ors::backends::routing::{ReserveRequest, RoutingBackend, RoutingError};
use ors::backends::{AgentSettings, HttpChat, HttpRouting, Simulator, SimulatorSettings};
use ors::backends::{admin_router, chat_protocol_router, routing_protocol_router};
use serde_json::{Value, json};

/// A simulator served at `{base}/routing`, `{base}/chat` and `{base}/sim`.
struct Served {
    sim: Arc<Simulator>,
    base: String,
}

async fn serve(settings: SimulatorSettings) -> Served {
    let sim = Simulator::new(&settings).unwrap();
    let app = Router::new()
        .nest("/routing", routing_protocol_router(sim.routing_backend()))
        .nest("/chat", chat_protocol_router(sim.chat_backend()))
        .merge(admin_router(sim.clone()).0);
    Served {
        sim,
        base: common::serve_router(app).await,
    }
}

/// An admin call through the kit's client: status and JSON body (`Null`
/// when the body is not JSON). `form` sends the body form-encoded instead
/// of as JSON.
async fn admin(method: &str, url: &str, body: Option<Value>, form: bool) -> (u16, Value) {
    // The kit's client takes a base and a path: split after host:port.
    let path_at = url
        .find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(url.len());
    let api = common::Api::new(&url[..path_at]);
    let path = &url[path_at..];
    let method: axum::http::Method = method.parse().unwrap();
    let r = match body {
        Some(body) if form => {
            let pairs: Vec<(String, String)> = body
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let pairs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            api.call(
                method,
                path,
                Some("application/x-www-form-urlencoded"),
                common::client::form_body(&pairs),
            )
            .await
        }
        Some(body) => {
            api.call(method, path, Some("application/json"), body.to_string())
                .await
        }
        None => api.call(method, path, None, String::new()).await,
    };
    let body = if r.body.is_string() && !r.content_type.contains("json") {
        Value::Null
    } else {
        r.body
    };
    (r.status, body)
}

fn request(id: &str, target: &str, timeout_ms: u64) -> ReserveRequest {
    ReserveRequest {
        request_id: id.to_string(),
        interaction_id: format!("ixn-{id}"),
        virtual_queue: "Chat_VQ".to_string(),
        media: "chat".to_string(),
        target: target.to_string(),
        priority: 0,
        timeout_ms,
        reserve_ms: 10_000,
    }
}

/// Waits (at most 5 s) for a condition.
async fn until(what: impl Fn() -> bool) {
    let what = &what;
    common::eventually(
        "condition not reached in time",
        Duration::from_secs(5),
        Duration::from_millis(1),
        || async move { if what() { Ok(()) } else { Err("not yet") } },
    )
    .await
}

/// The next update from a subscription, within a few seconds.
async fn next(updates: &mut tokio::sync::broadcast::Receiver<ChatUpdate>) -> ChatUpdate {
    tokio::time::timeout(Duration::from_secs(5), updates.recv())
        .await
        .expect("an update in time")
        .expect("an update")
}

#[tokio::test]
async fn a_reserve_over_http_waits_until_an_agent_is_made_ready_over_the_admin_api() {
    let served = serve(SimulatorSettings {
        agents: vec![AgentSettings {
            ready: false,
            ..AgentSettings::new("a1", "Ann Lee", &["Chat_Agents"])
        }],
        ..SimulatorSettings::default()
    })
    .await;
    let routing = Arc::new(HttpRouting::new(&format!("{}/routing", served.base)).unwrap());
    let waiting = {
        let routing = routing.clone();
        tokio::spawn(async move {
            routing
                .reserve(request("r1", "Chat_Agents@StatServer.GA", 5000))
                .await
        })
    };
    until(|| served.sim.routing().waiting() == 1).await;
    assert!(!waiting.is_finished());
    let (status, agent) = admin(
        "POST",
        &format!("{}/sim/agents/a1/ready", served.base),
        None,
        false,
    )
    .await;
    assert_eq!((status, &agent["ready"]), (200, &json!(true)));
    let reservation = waiting.await.unwrap().unwrap();
    assert_eq!(reservation.agent_id, "a1");
    assert_eq!(reservation.agent_name, "Ann Lee");
    assert_eq!(reservation.target_selected, "Chat_Agents@StatServer.GA");
    assert_eq!(reservation.virtual_queue, "Chat_VQ");
    routing.confirm(&reservation.reservation_id).await.unwrap();
    let (_, agent) = admin(
        "GET",
        &format!("{}/sim/agents/a1", served.base),
        None,
        false,
    )
    .await;
    assert_eq!(agent["load"]["chat"], json!(1));
    routing.release(&reservation.reservation_id).await;
    assert_eq!(
        routing
            .statistic("Chat_Agents@StatServer.GA", "RStatAgentsReadychat")
            .await,
        Ok(1.0)
    );
}

#[tokio::test]
async fn errors_map_to_the_backend_error_enums() {
    let served = serve(SimulatorSettings::default()).await;
    let routing = HttpRouting::new(&format!("{}/routing", served.base)).unwrap();
    let chat = HttpChat::new(&format!("{}/chat", served.base)).unwrap();
    assert!(matches!(
        routing.reserve(request("r1", "Chat_Agents@SS.ZZ", 100)).await,
        Err(RoutingError::Invalid(m)) if m.contains("unknown target type 'ZZ'")
    ));
    assert!(matches!(
        routing.confirm("res-none").await,
        Err(RoutingError::Unknown(id)) if id == "res-none"
    ));
    assert!(matches!(
        chat.info("no-such-chat").await,
        Err(ChatError::NotFound(m)) if m.contains("no-such-chat")
    ));
    assert!(matches!(
        chat.transcript("no such/chat", 1).await,
        Err(ChatError::NotFound(m)) if m.contains("no such/chat")
    ));
    let info = chat
        .create(NewChat {
            queue: "Chat_IQ".into(),
            nickname: "Jane".into(),
            ..NewChat::default()
        })
        .await
        .unwrap();
    assert!(matches!(
        chat.send(&info.chat_id, &info.customer_party_id, " ").await,
        Err(ChatError::Invalid(_))
    ));
    chat.terminate(&info.chat_id, "test").await.unwrap();
    assert_eq!(
        chat.send(&info.chat_id, &info.customer_party_id, "x").await,
        Err(ChatError::Ended)
    );
    // Nobody listens there: a backend failure, not a hang.
    let gone = HttpRouting::new("http://127.0.0.1:1").unwrap();
    assert!(matches!(
        gone.statistic("G@SS.GA", "RStatAgentsReady").await,
        Err(RoutingError::Backend(_))
    ));
    let gone = HttpChat::new("http://127.0.0.1:1").unwrap();
    assert!(matches!(gone.info("x").await, Err(ChatError::Backend(_))));
}

#[tokio::test]
async fn chat_updates_arrive_through_the_clients_subscription() {
    let served = serve(SimulatorSettings {
        accept_delay_ms: 50,
        ..SimulatorSettings::default()
    })
    .await;
    let chat = HttpChat::new(&format!("{}/chat", served.base)).unwrap();
    assert!(chat.wait_synced(Duration::from_secs(5)).await);
    let mut updates = chat.subscribe();
    let info = chat
        .create(NewChat {
            queue: "Chat_IQ".into(),
            first_name: "Jane".into(),
            last_name: "Doe".into(),
            ..NewChat::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next(&mut updates).await,
        ChatUpdate::Created { chat: info.clone() }
    );
    let ChatUpdate::Entry { chat_id, entry } = next(&mut updates).await else {
        panic!("the customer's join expected");
    };
    assert_eq!(chat_id, info.chat_id);
    assert_eq!(
        (entry.kind, entry.nickname.as_str()),
        (EntryKind::Joined, "Jane Doe")
    );
    let agent = AgentRef {
        agent_id: "agent-1".into(),
        nickname: "Ann Lee".into(),
    };
    chat.deliver(&info.chat_id, agent).await.unwrap();
    assert_eq!(
        chat.info(&info.chat_id).await.unwrap().state,
        ChatState::Alerting
    );
    let ChatUpdate::Entry { entry: joined, .. } = next(&mut updates).await else {
        panic!("the agent's join expected");
    };
    assert_eq!(
        (joined.kind, joined.party_type, joined.position),
        (EntryKind::Joined, PartyType::Agent, 2)
    );
    let ChatUpdate::Entry {
        entry: greeting, ..
    } = next(&mut updates).await
    else {
        panic!("the greeting expected");
    };
    assert_eq!(
        greeting.text,
        "Hello Jane Doe, my name is Ann Lee. How can I help you?"
    );
    chat.leave(&info.chat_id, &info.customer_party_id)
        .await
        .unwrap();
    let ChatUpdate::Entry { entry: left, .. } = next(&mut updates).await else {
        panic!("the customer's leaving expected");
    };
    assert_eq!((left.kind, left.position), (EntryKind::Left, 4));
    assert_eq!(
        next(&mut updates).await,
        ChatUpdate::Ended {
            chat_id: info.chat_id.clone(),
            reason: "customer".into()
        }
    );
}

#[tokio::test]
async fn the_admin_api_plays_the_agents_side() {
    let served = serve(SimulatorSettings::default()).await;
    let base = &served.base;
    let chat = HttpChat::new(&format!("{base}/chat")).unwrap();
    let (status, added) = admin(
        "POST",
        &format!("{base}/sim/agents"),
        Some(json!({
            "id": "dan", "name": "Dan Hill", "groups": ["Chat_Agents"],
            "skills": {"English": 7}, "capacity": {"chat": 2}, "auto_accept": false
        })),
        false,
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(added["place"], "Place_dan");
    assert_eq!(added["ready"], true);
    let (status, body) = admin(
        "POST",
        &format!("{base}/sim/agents"),
        Some(json!({"id": "x", "colour": "red"})),
        false,
    )
    .await;
    assert_eq!((status, &body["error"]), (400, &json!("bad_request")));
    let (status, agent) = admin(
        "POST",
        &format!("{base}/sim/agents/dan/not-ready"),
        None,
        false,
    )
    .await;
    assert_eq!((status, &agent["ready"]), (200, &json!(false)));
    let (_, agents) = admin("GET", &format!("{base}/sim/agents"), None, false).await;
    let ids: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["agent-1", "agent-2", "agent-3", "dan"]);
    assert_eq!(agents[3]["ready"], false);
    let (status, body) = admin(
        "POST",
        &format!("{base}/sim/agents/nobody/ready"),
        None,
        false,
    )
    .await;
    assert_eq!((status, &body["error"]), (404, &json!("not_found")));

    // A chat delivered to Dan waits for him to accept.
    let info = chat
        .create(NewChat {
            queue: "Chat_IQ".into(),
            nickname: "Jane".into(),
            ..NewChat::default()
        })
        .await
        .unwrap();
    let id = info.chat_id.clone();
    let dan = AgentRef {
        agent_id: "dan".into(),
        nickname: "Dan Hill".into(),
    };
    chat.deliver(&id, dan).await.unwrap();
    let (status, chats) = admin("GET", &format!("{base}/sim/agents/dan/chats"), None, false).await;
    assert_eq!(status, 200);
    assert_eq!(chats[0]["chat"]["chat_id"], json!(id));
    assert_eq!(chats[0]["chat"]["state"], "alerting");
    assert_eq!(chats[0]["invited"], true);
    let chat_url = format!("{base}/sim/agents/dan/chats/{id}");
    let (status, body) = admin(
        "POST",
        &format!("{chat_url}/send"),
        Some(json!({"message": "too early"})),
        false,
    )
    .await;
    assert_eq!((status, &body["error"]), (409, &json!("conflict")));
    let (status, accepted) = admin("POST", &format!("{chat_url}/accept"), None, false).await;
    assert_eq!(status, 200);
    assert_eq!(accepted["chat"]["state"], "connected");
    assert!(accepted["party_id"].is_string());
    let (status, typing) = admin(
        "POST",
        &format!("{chat_url}/typing"),
        Some(json!({"started": true})),
        false,
    )
    .await;
    assert_eq!((status, &typing["position"]), (200, &json!(4)));
    let (status, sent) = admin(
        "POST",
        &format!("{chat_url}/send"),
        Some(json!({"message": "How can I help?"})),
        false,
    )
    .await;
    assert_eq!((status, &sent["position"]), (200, &json!(5)));
    let (status, sent) = admin(
        "POST",
        &format!("{chat_url}/send"),
        Some(json!({"message": "Sent as a form"})),
        true,
    )
    .await;
    assert_eq!((status, &sent["position"]), (200, &json!(6)));
    let page = chat.transcript(&id, 5).await.unwrap();
    let texts: Vec<&str> = page.entries.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["How can I help?", "Sent as a form"]);
    assert!(page.entries.iter().all(|e| e.nickname == "Dan Hill"));
    let (_, chats) = admin("GET", &format!("{base}/sim/agents/dan/chats"), None, false).await;
    assert_eq!(chats[0]["transcript"].as_array().map(Vec::len), Some(6));
    let (status, left) = admin("POST", &format!("{chat_url}/leave"), None, false).await;
    assert_eq!((status, &left["chat"]["state"]), (200, &json!("ended")));
    assert_eq!(chat.info(&id).await.unwrap().state, ChatState::Ended);
    let (status, _) = admin("DELETE", &format!("{base}/sim/agents/dan"), None, false).await;
    assert_eq!(status, 200);
    let (status, _) = admin("DELETE", &format!("{base}/sim/agents/dan"), None, false).await;
    assert_eq!(status, 404);
}

/// A chat is found over HTTP by the GMS service id in its user data while
/// it is not ended; an unknown id finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_is_found_by_its_service_id_until_it_ends() {
    let served = serve(SimulatorSettings::default()).await;
    let chat = HttpChat::new(&format!("{}/chat", served.base)).unwrap();
    let mut user_data = serde_json::Map::new();
    user_data.insert("GMS_ServiceID".into(), json!("707-abc"));
    let info = chat
        .create(NewChat {
            queue: "Chat_IQ".into(),
            nickname: "Jane".into(),
            user_data,
            ..NewChat::default()
        })
        .await
        .unwrap();
    let found = chat.find_by_service("707-abc").await.unwrap();
    assert_eq!(found.map(|c| c.chat_id), Some(info.chat_id.clone()));
    assert_eq!(chat.find_by_service("707-other").await.unwrap(), None);
    chat.terminate(&info.chat_id, "done").await.unwrap();
    assert_eq!(chat.find_by_service("707-abc").await.unwrap(), None);
}
