//! GMS Callback "Chat Immediate" end to end, against a real server on a
//! socket with the embedded routing and chat backends: the vendor's sample
//! create request replayed byte for byte, the chat started with Chat API
//! v1, the agent joining and greeting, messages both ways, disconnect, and
//! the record and both sessions ended; then the failure paths: unknown
//! ids, a bad `_target`, no agent ready until `app_find_agent_timeout`,
//! and a chat no waiting service matches (routed to
//! `app_selected_agent_group`).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::client::{has_entry, transcript};
use common::{TestServer, eventually, spawn_server};
use ors::app::Config;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GMS_USER: &str = "b16416334828b1d26ef14f329628b55b5a8c631d8928a371a5584722dd7fb673";

fn config() -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            data_dir: common::scratch_dir("gms"),
            ..Default::default()
        },
        ..Config::default()
    };
    config.contact_centre.backends.simulator.accept_delay_ms = 30;
    config
}

/// The server, an operator's client (no `gms_user`) and the device's (a
/// customer with its `gms_user`).
struct Api {
    server: TestServer,
    base: String,
    plain: common::Api,
    device: common::Api,
}

impl Api {
    async fn start(config: Config) -> Api {
        let server = spawn_server(config).await;
        let plain = server.api();
        Api {
            base: server.base.clone(),
            device: server.customer().with_gms_user(GMS_USER),
            plain,
            server,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
    }

    /// POSTs a form as the device (with its `gms_user`).
    async fn form(&self, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
        let r = self.device.form(path, pairs).await;
        (r.status, r.body)
    }

    /// POSTs a form as the operator.
    async fn plain_form(&self, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
        let r = self.plain.form(path, pairs).await;
        (r.status, r.body)
    }

    async fn json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.plain.json(path, &body).await;
        (r.status, r.body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.plain.get(path).await;
        (r.status, r.body)
    }

    async fn record(&self, id: &str) -> Value {
        let r = self.plain.callback_query_any(&format!("_id={id}")).await;
        assert_eq!(r.status, 200, "record {id}: {}", r.body);
        r.body[0].clone()
    }

    /// The id of the session that serves callback `id`.
    async fn session_of(&self, id: &str) -> String {
        self.record(id).await["_ors_session_id"]
            .as_str()
            .expect("the record names its session")
            .to_string()
    }

    /// Creates a callback on the demo service; returns its id.
    async fn create_callback(&self, extra: &[(&str, &str)]) -> String {
        let mut form = vec![("_customer_number", "5551234")];
        form.extend_from_slice(extra);
        let r = self.device.callback_create("chat-immediate", &form).await;
        assert_eq!(r.status, 200, "create: {}", r.body);
        r.body["_id"].as_str().expect("_id").to_string()
    }

    async fn start_chat(&self, id: &str, first_name: &str) -> Value {
        let r = self
            .device
            .chat_create(
                id,
                &[
                    ("firstName", first_name),
                    ("lastName", "Markel"),
                    ("email", "bob@example.com"),
                    ("subject", "billing question"),
                    ("notify_by", "comet"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "chat create: {}", r.body);
        assert_eq!(r.body["chatIxnState"], "CONNECTED", "{}", r.body);
        r.body
    }

    /// Refreshes the chat from position 1 until `done` holds for its
    /// reply, or fails after `limit`.
    async fn refresh_until(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let done = &done;
        eventually(
            "the chat never reached the expected state",
            limit,
            Duration::from_millis(25),
            || async move {
                let r = self.device.chat_refresh(id, "1").await;
                assert_eq!(r.status, 200, "refresh: {}", r.body);
                if done(&r.body) {
                    Ok(r.body)
                } else {
                    Err(r.body)
                }
            },
        )
        .await
    }

    async fn wait_record_state(&self, id: &str, state: &str) -> Value {
        eventually(
            &format!("record never became {state}"),
            Duration::from_secs(10),
            Duration::from_millis(25),
            || async move {
                let record = self.record(id).await;
                if record["_callback_state"] == state {
                    Ok(record)
                } else {
                    Err(record)
                }
            },
        )
        .await
    }

    async fn session_status(&self, id: &str) -> String {
        let body = self.plain.query_ok(id).await;
        body["status"].as_str().unwrap_or_default().to_string()
    }

    /// The sessions of a document (by its `name`).
    async fn sessions_named(&self, name: &str) -> Vec<Value> {
        let r = self.plain.list("").await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .filter(|s| s["name"] == name)
            .cloned()
            .collect()
    }
}

/// Writes raw bytes to the server and reads one HTTP/1.1 response.
async fn raw_exchange(addr: &str, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("a content-length");
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    (status, headers, body)
}

fn header_values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

fn looks_like_service_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == 6
        && parts[0].chars().all(|c| c.is_ascii_digit())
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts[1..])
            .all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_request_then_chat_with_agent_then_everything_ends() {
    let api = Api::start(config()).await;
    let addr = api.base.trim_start_matches("http://").to_string();
    let request = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/gms/chat-immediate-request.http"),
    )
    .expect("seed request fixture");

    // 1. Start Callback: the seed's request, byte for byte.
    let (status, headers, body) = raw_exchange(&addr, &request).await;
    let reply: Value = serde_json::from_slice(&body).expect("JSON reply");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        header_values(&headers, "content-type"),
        ["application/json;charset=UTF-8"]
    );
    let cache = header_values(&headers, "cache-control").join(",");
    assert!(
        cache.contains("no-cache") && cache.contains("no-store"),
        "{cache}"
    );
    assert_eq!(header_values(&headers, "pragma"), ["no-cache"]);
    assert_eq!(
        header_values(&headers, "expires"),
        ["Thu, 01 Jan 1970 00:00:00 GMT"]
    );
    let id = reply["_id"].as_str().expect("_id").to_string();
    assert!(looks_like_service_id(&id), "{id}");
    assert_eq!(reply["_dialog_id"], "1");
    assert_eq!(reply["_action"], "StartChat");
    assert_eq!(reply["_label"], "Start Chat");
    assert_eq!(
        reply["_start_chat_url"],
        format!("http://localhost:8080/genesys/1/service/{id}/ixn/chat")
    );
    assert_eq!(reply["_comet_url"], "http://localhost:8080/genesys/cometd");
    assert_eq!(reply["_user_header"], GMS_USER);
    assert_eq!(reply["_id_to_jump_before"], "exit://");
    assert_eq!(reply["_chat_parameters"]["subject"], "None");

    // The record: queued, with the customer's number and user data.
    let record = api.record(&id).await;
    assert_eq!(record["_callback_state"], "QUEUED", "{record}");
    assert_eq!(record["_customer_number"], "6502388511");
    assert_eq!(record["usr_customer_name"], "Bob Markel");
    assert_eq!(record["usr_reason"], "billing question");
    let callback_session = record["_ors_session_id"]
        .as_str()
        .expect("session")
        .to_string();
    assert_eq!(api.session_status(&callback_session).await, "running");
    let (status, by_number) = api
        .get("/genesys/1/service/callback/chat-immediate?_customer_number=6502388511&_callback_state=QUEUED")
        .await;
    assert_eq!(status, 200);
    assert!(
        by_number
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r["_id"] == id.as_str()),
        "{by_number}"
    );

    // 2. Initiate Chat on the URL we were given.
    let created = api.start_chat(&id, "Bob").await;
    let chat_id = created["chatSessionId"]
        .as_str()
        .expect("chat id")
        .to_string();
    assert!(
        has_entry(&created, "Notice.Joined", "CLIENT", None),
        "{created}"
    );

    // 3. The agent joins and greets.
    let greeted = api
        .refresh_until(&id, Duration::from_secs(10), |r| {
            has_entry(r, "Notice.Joined", "AGENT", None)
                && has_entry(r, "Message.Text", "AGENT", None)
        })
        .await;
    let greeting = transcript(&greeted)
        .into_iter()
        .find(|t| t[0] == "Message.Text" && t[4] == "AGENT")
        .expect("greeting");
    assert!(
        greeting[2]
            .as_str()
            .unwrap_or_default()
            .contains("Bob Markel"),
        "{greeting}"
    );
    let record = api.wait_record_state(&id, "COMPLETED").await;
    let agent = record["_callback_reason"]
        .as_str()
        .and_then(|r| r.strip_prefix("routed to "))
        .expect("routed to an agent")
        .to_string();

    // 4. Messages both ways.
    let (status, sent) = api
        .form(
            &format!("/genesys/1/service/{id}/ixn/chat/send"),
            &[("message", "My bill looks wrong")],
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let (status, chats) = api.get(&format!("/sim/agents/{agent}/chats")).await;
    assert_eq!(status, 200, "{chats}");
    assert!(
        chats.to_string().contains("My bill looks wrong"),
        "the agent does not see the customer's message: {chats}"
    );
    let (status, answer) = api
        .json(
            &format!("/sim/agents/{agent}/chats/{chat_id}/send"),
            json!({"message": "Let me check that for you."}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    api.refresh_until(&id, Duration::from_secs(5), |r| {
        has_entry(
            r,
            "Message.Text",
            "AGENT",
            Some("Let me check that for you."),
        )
    })
    .await;
    for op in ["startTyping", "stopTyping"] {
        let (status, body) = api
            .form(&format!("/genesys/1/service/{id}/ixn/chat/{op}"), &[])
            .await;
        assert_eq!(status, 200, "{op}: {body}");
    }

    // 5. Disconnect: the chat ends, the record is completed, both
    // sessions have ended.
    let (status, bye) = api
        .form(&format!("/genesys/1/service/{id}/ixn/chat/disconnect"), &[])
        .await;
    assert_eq!(status, 200, "{bye}");
    assert_eq!(bye["chatIxnState"], "DISCONNECTED", "{bye}");
    let record = api.record(&id).await;
    assert_eq!(record["_callback_state"], "COMPLETED");
    assert_eq!(api.session_status(&callback_session).await, "completed");
    let inbound = api.sessions_named("inbound_chat").await;
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    let inbound_id = inbound[0]["sessionid"].as_str().expect("id").to_string();
    assert_eq!(api.session_status(&inbound_id).await, "completed");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_bad_targets_and_missing_fields_are_refused() {
    let api = Api::start(config()).await;
    let (status, body) = api
        .form(
            "/genesys/1/service/9-00000000-0000-0000-0000-000000000000/ixn/chat",
            &[("firstName", "Bob")],
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "service_not_found");
    let (status, body) = api
        .form(
            "/genesys/1/service/callback/no-such-service",
            &[("_customer_number", "1")],
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api
        .form(
            "/genesys/1/service/callback/chat-immediate",
            &[("usr_x", "1")],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("_customer_number"),
        "{body}"
    );
    for bad in [
        "Chat_Agents@StatServer",
        "?:English=@StatServer.GA",
        "[{\"target\": 5}]",
    ] {
        let (status, body) = api
            .form(
                "/genesys/1/service/callback/chat-immediate",
                &[("_customer_number", "1"), ("_target", bad)],
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("_target"), "{bad}: {message}");
    }
    let (status, body) = api.get("/genesys/1/service/callback?_id=nope").await;
    assert_eq!(status, 404, "{body}");
    // A callback can be cancelled once; its session ends.
    let id = api.create_callback(&[]).await;
    let session = api.session_of(&id).await;
    let r = api.plain.callback_cancel("chat-immediate", &id).await;
    assert_eq!(r.status, 200);
    let record = api.record(&id).await;
    assert_eq!(record["_callback_state"], "COMPLETED", "{record}");
    assert_eq!(record["_callback_reason"], "CANCELLED", "{record}");
    assert_eq!(api.session_status(&session).await, "terminated");
    let r = api.plain.callback_cancel("chat-immediate", &id).await;
    assert_eq!(r.status, 409);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_agent_ready_until_find_agent_timeout_ends_the_chat_with_an_apology() {
    let mut config = config();
    config.contact_centre.backends.simulator.agents = vec![
        ors::backends::settings::AgentSettings::new("agent-1", "Ann Lee", &["Chat_Agents"]),
        ors::backends::settings::AgentSettings::new("agent-3", "Carla Diaz", &["Chat_Overflow"]),
    ];
    let api = Api::start(config).await;
    // The inbound strategy's script object gives the timeout.
    let (status, body) = api.plain_form("/sim/agents/agent-1/not-ready", &[]).await;
    assert_eq!(status, 200, "{body}");
    let id = api.create_callback(&[]).await;
    api.record(&id).await;
    let started = Instant::now();
    api.start_chat(&id, "Dora").await;
    let ended = api
        .refresh_until(&id, Duration::from_secs(60), |r| {
            r["chatIxnState"] == "DISCONNECTED"
        })
        .await;
    let waited = started.elapsed();
    assert!(
        has_entry(&ended, "Message.Text", "EXTERNAL", None),
        "no apology in the transcript: {ended}"
    );
    assert!(
        !has_entry(&ended, "Notice.Joined", "AGENT", None),
        "{ended}"
    );
    // The demo GMSInbound script object's app_find_agent_timeout is 30 s;
    // this server's is that default, so the wait is at least that long.
    assert!(
        waited >= Duration::from_secs(29),
        "gave up after {waited:?}"
    );
    let record = api.wait_record_state(&id, "COMPLETED").await;
    assert_eq!(record["_callback_reason"], "no_agent_available");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_no_waiting_service_matches_goes_to_the_selected_agent_group() {
    let api = Api::start(config()).await;
    let id = api.create_callback(&[]).await;
    // The operator ends the callback's session while its record still
    // waits: the chat that then arrives finds no waiting service, and the
    // inbound strategy routes it to Chat_Overflow itself.
    let record = api.record(&id).await;
    let session = record["_ors_session_id"].as_str().expect("session");
    let r = api.plain.terminate(session).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.session_status(session).await, "terminated");
    api.start_chat(&id, "Eve").await;
    // The strategy gives the ended session 10 s to take the chat.
    let joined = api
        .refresh_until(&id, Duration::from_secs(25), |r| {
            has_entry(r, "Notice.Joined", "AGENT", None)
        })
        .await;
    let agent = transcript(&joined)
        .into_iter()
        .find(|t| t[0] == "Notice.Joined" && t[4] == "AGENT")
        .expect("agent joined");
    assert_eq!(agent[1], "Carla Diaz", "{joined}");
    // The callback never took the chat.
    assert_eq!(api.record(&id).await["_callback_state"], "QUEUED");
    // One chat per callback: a second create is refused.
    let r = api.device.chat_create(&id, &[("firstName", "Eve")]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["error"], "chat_exists");
    api.stop().await;
}

/// The real CometD JavaScript client (tests/cometd) subscribed as the
/// device: it receives the chat's transcript as pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cometd_javascript_client_receives_the_chat_pushes() {
    use std::process::Stdio;
    let Some(harness) = common::skips::cometd_node_harness("the CometD JavaScript client test")
    else {
        return;
    };
    let api = Api::start(config()).await;
    let id = api.create_callback(&[]).await;
    // The device subscribes with its gms_user before starting the chat;
    // it expects the customer's join, the agent's join and the greeting.
    let mut client = common::node::spawn_comet_client(
        &harness,
        &format!("{}/genesys/cometd", api.base),
        GMS_USER,
        3,
        30_000,
        Stdio::inherit(),
    );
    let ready = client.ready(Duration::from_secs(20)).await;
    assert!(ready, "the client never subscribed: {:?}", client.seen);
    let created = api.start_chat(&id, "Fay").await;
    let status = client
        .finish(Duration::from_secs(30))
        .await
        .expect("the client exits after its messages");
    assert!(status.success(), "client: {status} {:?}", client.seen);
    let pushes = client.messages();
    assert_eq!(pushes.len(), 3, "{pushes:?}");
    let tag = format!("service.chat.refresh.{id}");
    for push in &pushes {
        assert_eq!(push["id"], id.as_str());
        assert_eq!(push["tag"], tag.as_str());
        assert_eq!(push["message"]["chatSessionId"], created["chatSessionId"]);
    }
    let events: Vec<(String, String)> = pushes
        .iter()
        .flat_map(|p| transcript(&p["message"]))
        .map(|t| {
            (
                t[0].as_str().unwrap_or_default().to_string(),
                t[4].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("Notice.Joined", "CLIENT"),
        ("Notice.Joined", "AGENT"),
        ("Message.Text", "AGENT"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(events, expected);
    api.stop().await;
}

/// Options holding secrets (a name with password, api_key, token, …, or
/// one listed in `[gms] secret_options`) never reach the callback
/// session's data, which an operator query or the session's own scripts
/// could read; the other options still do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_service_options_never_reach_the_session() {
    let mut config = config();
    config.contact_centre.gms.secret_options = vec!["crm_pin".into()];
    let options = config
        .contact_centre
        .gms
        .services
        .get_mut("chat-immediate")
        .expect("the demo service");
    options.insert("_crm_password".into(), json!("hunter2-secret-value"));
    options.insert("_provider_api_key".into(), json!("key-secret-value"));
    options.insert("_crm_pin".into(), json!("pin-secret-value"));
    options.insert("_crm_region".into(), json!("emea"));
    let api = Api::start(config).await;
    let id = api.create_callback(&[]).await;
    let session = api.session_of(&id).await;
    let (status, view) = api.get(&format!("/scxml/session/{session}/query")).await;
    assert_eq!(status, 200, "{view}");
    let text = view.to_string();
    assert!(!text.contains("secret-value"), "{text}");
    assert_eq!(view["data"]["_data"]["_crm_region"], "emea", "{text}");
    assert_eq!(view["data"]["_data"]["_id"], id.as_str(), "{text}");
    api.stop().await;
}

/// The example configuration routes chats on any port: its inbound chat
/// script object takes the server's own address (here an ephemeral port,
/// not the example's 8080).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_configuration_routes_chats_on_any_port() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ors.example.toml");
    let mut config = Config::load(&example).expect("the example configuration loads");
    config.server.data_dir = common::scratch_dir("gms-example");
    config.server.store.url = "none".into();
    config.contact_centre.backends.simulator.accept_delay_ms = 30;
    let api = Api::start(config).await;
    assert!(!api.base.ends_with(":8080"), "{}", api.base);
    let id = api.create_callback(&[]).await;
    api.start_chat(&id, "Pat").await;
    api.refresh_until(&id, Duration::from_secs(15), |r| {
        has_entry(r, "Notice.Joined", "AGENT", None)
    })
    .await;
    let record = api.wait_record_state(&id, "COMPLETED").await;
    assert!(
        record["_callback_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("routed to")),
        "{record}"
    );
    api.stop().await;
}

/// A chat whose strategy cannot start fails visibly: the customer reads
/// why in the transcript and the chat ends, the callback record becomes
/// FAILED with the reason, and the callback's session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_that_cannot_start_fails_the_record_and_tells_the_customer() {
    let mut config = config();
    config.server.scripts.insert(
        "GMSInbound".into(),
        ors::server::config::ScriptObject {
            url: "fixtures/absent/inbound_chat.scxml".into(),
            ..Default::default()
        },
    );
    let api = Api::start(config).await;
    let id = api.create_callback(&[]).await;
    let session = api.session_of(&id).await;
    // The chat may already have ended when its create is answered.
    let r = api.device.chat_create(&id, &[("firstName", "Sam")]).await;
    assert_eq!(r.status, 200, "chat create: {}", r.body);
    let ended = api
        .refresh_until(&id, Duration::from_secs(15), |r| {
            r["chatIxnState"] == "DISCONNECTED"
        })
        .await;
    assert!(
        transcript(&ended).iter().any(|t| t[0] == "Message.Text"
            && t[2]
                .as_str()
                .is_some_and(|s| s.contains("cannot be connected"))),
        "the customer is told: {ended}"
    );
    let record = api.wait_record_state(&id, "COMPLETED").await;
    assert_eq!(record["_callback_reason"], "ROUTING_FAILED", "{record}");
    let why = record["_failure_reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("could not start") && why.contains("inbound_chat.scxml"),
        "{record}"
    );
    eventually(
        "the callback's session never ended",
        Duration::from_secs(10),
        Duration::from_millis(25),
        || async {
            match api.session_status(&session).await.as_str() {
                "terminated" => Ok(()),
                other => Err(other.to_string()),
            }
        },
    )
    .await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_callback_ends_its_chat_waiting_for_an_agent() {
    let server = spawn_server(config()).await;
    let operator = server.api();
    for agent in ["agent-1", "agent-2"] {
        let r = operator
            .form(&format!("/sim/agents/{agent}/not-ready"), &[])
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let device = server.customer().with_gms_user("device-cancel");
    let r = device
        .callback_create("chat-immediate", &[("_customer_number", "6502388741")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["_id"].as_str().expect("_id").to_string();
    let r = device.chat_create(&id, &[("firstName", "Cy")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    operator.wait_callback_state(&id, "ROUTING").await;
    let r = device.callback_cancel("chat-immediate", &id).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Nobody would ever answer it: the device sees it end.
    eventually(
        "the chat of a cancelled callback stays open",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let r = device.chat_refresh(&id, "1").await;
            if r.body["chatIxnState"] == "DISCONNECTED" {
                Ok(())
            } else {
                Err(r.body)
            }
        },
    )
    .await;
    server.stop().await;
}

/// A device with `notify_by=comet` that has no CometD client subscribed
/// while its chat goes on (not connected yet, or reconnecting after a
/// restart of the server) is pushed every entry it missed, in order, once
/// it subscribes; and later entries follow them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_subscribes_late_is_pushed_what_it_missed() {
    let api = Api::start(config()).await;
    let id = api.create_callback(&[]).await;
    api.start_chat(&id, "Bob").await;
    let shown = api
        .refresh_until(&id, Duration::from_secs(10), |r| {
            has_entry(r, "Notice.Joined", "AGENT", None) && transcript(r).len() >= 3
        })
        .await;
    let missed = transcript(&shown);

    let r = api.device.cometd_handshake().await;
    let client_id = r.body[0]["clientId"]
        .as_str()
        .expect("clientId")
        .to_string();
    let r = api.device.cometd_subscribe(&client_id, "/_genesys").await;
    assert_eq!(r.body[0]["successful"], true, "{}", r.body);
    // Pushed: (position, entry) in the order they came.
    let mut pushed: Vec<(u64, Value)> = Vec::new();
    let collect = |pushed: &mut Vec<(u64, Value)>, reply: &Value| {
        for m in reply.as_array().into_iter().flatten() {
            if m["channel"] == "/_genesys" {
                let message = &m["data"]["message"];
                let next = message["transcriptPosition"].as_u64().expect("position");
                for entry in transcript(message) {
                    pushed.push((next - 1, entry));
                }
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut polls = 0;
    while pushed.len() < missed.len() {
        assert!(Instant::now() < deadline, "pushed so far: {pushed:?}");
        let r = api.device.cometd_connect(&client_id).await;
        collect(&mut pushed, &r.body);
        polls += 1;
    }
    let positions: Vec<u64> = pushed.iter().map(|(p, _)| *p).collect();
    let want: Vec<u64> = (1..=missed.len() as u64).collect();
    assert_eq!(positions, want, "in order, each once ({polls} polls)");
    let entries: Vec<Value> = pushed.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(entries, missed);

    // What comes next is pushed as it happens.
    let r = api.device.chat_send(&id, "still there?").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pushed
        .iter()
        .any(|(_, e)| e[2].as_str() == Some("still there?"))
    {
        assert!(Instant::now() < deadline, "pushed so far: {pushed:?}");
        let r = api.device.cometd_connect(&client_id).await;
        collect(&mut pushed, &r.body);
    }
    let positions: Vec<u64> = pushed.iter().map(|(p, _)| *p).collect();
    let want: Vec<u64> = (1..=positions.len() as u64).collect();
    assert_eq!(positions, want, "no gap, no repeat: {pushed:?}");
    api.stop().await;
}

/// An inbound strategy whose chat is never presented (its hand-over was
/// cut off by a restart, and the server handed the chat to another one)
/// ends after `app_arrival_timeout` instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_strategy_never_presented_its_chat_ends() {
    let api = Api::start(config()).await;
    let src = format!("{}{}/inbound_chat.scxml", api.base, ors::gms::DOCUMENT_PATH);
    let orphan = api
        .plain
        .start_session(&[
            ("src", src.as_str()),
            ("interactionid", "never-presented"),
            ("app_arrival_timeout", "0.2"),
        ])
        .await;
    let q = api.plain.query_ok(&orphan).await;
    assert_eq!(q["configuration"], json!(["arriving"]), "{q}");
    eventually(
        "the orphan strategy never ended",
        Duration::from_secs(10),
        Duration::from_millis(25),
        || async {
            let status = api.session_status(&orphan).await;
            if status == "completed" {
                Ok(())
            } else {
                Err(status)
            }
        },
    )
    .await;
    api.stop().await;
}
