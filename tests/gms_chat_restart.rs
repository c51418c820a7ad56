//! Chats in progress over a restart of the server (SIGKILL, then a start
//! on the same data directory), beside a scheduled and a paused callback.
//!
//! With the simulators in a process of their own (`ors simulate`, as a
//! real chat server and router would be), a connected chat carries on:
//! the device keeps its chat (same `secureKey`, same transcript), its
//! messages reach the agent and the agent's reach it; a chat that was
//! waiting for an agent gets one once the first chat ends and frees the
//! agent (its `queue:submit` is asked again, the first chat's agent is
//! released). With the embedded simulators the chats die with the
//! server: after the restart the device gets a 404, and a callback whose
//! chat was waiting ends `COMPLETED` (`abandoned`) instead of waiting
//! for ever.

mod common;

use std::path::Path;
use std::time::Duration;

use common::client::{Api, has_entry};
use common::eventually;
use common::process::{ServeProcess, SimulateProcess, free_port};
use serde_json::{Value, json};

const SERVICE: &str = "[gms.services.chat-immediate]\n_target = \"Chat_Agents@StatServer.GA\"\n\
                       _urs_virtual_queue = \"VQ_Chat_Immediate\"\n";

/// One agent who takes one chat at a time and joins at once.
const AGENT: &str = "[backends.simulator]\naccept_delay_ms = 0\n\
                     greeting = \"Hello {customer}, I am {agent}.\"\n\
                     [[backends.simulator.agents]]\nid = \"agent-1\"\nname = \"Ann Lee\"\n\
                     groups = [\"Chat_Agents\"]\ncapacity = { chat = 1 }\n";

/// A callback and its chat, started by `device`; answers the service id
/// and the chat's `secureKey`.
async fn callback_with_chat(device: &Api, number: &str, first_name: &str) -> (String, String) {
    let r = device
        .callback_create("chat-immediate", &[("_customer_number", number)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["_id"].as_str().expect("_id").to_string();
    let r = device
        .chat_create(&id, &[("firstName", first_name), ("subject", "bill")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let key = r.body["secureKey"].as_str().expect("secureKey").to_string();
    (id, key)
}

/// Waits until the chat's transcript, read from position 1, satisfies
/// `seen`; answers it.
async fn wait_transcript(
    device: &Api,
    id: &str,
    what: &str,
    seen: impl Fn(&Value) -> bool,
) -> Value {
    eventually(
        what,
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let r = device.chat_refresh(id, "1").await;
            if r.status == 200 && seen(&r.body) {
                Ok(r.body)
            } else {
                Err(format!("{} {}", r.status, r.body))
            }
        },
    )
    .await
}

/// `ors simulate` with `agents` (its config written in `data_dir`), and
/// the path of a server config that uses it as both backends.
async fn simulator_and_config(data_dir: &Path, agents: &str) -> (SimulateProcess, String) {
    let sim_config = write(&data_dir.join("sim.toml"), agents);
    let sim = SimulateProcess::start(
        free_port(),
        Path::new(&sim_config),
        &data_dir.join("sim.log"),
    )
    .await;
    let config = write(
        &data_dir.join("ors.toml"),
        &format!(
            "[backends]\nrouting_url = \"{0}/routing\"\nchat_url = \"{0}/chat\"\n{SERVICE}",
            sim.base
        ),
    );
    (sim, config)
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("config written");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_chat_and_a_waiting_one_carry_on_after_sigkill() {
    for db in common::stores::test_databases().await {
        connected_and_waiting_chats_carry_on(&db.url()).await;
    }
}

/// The scenario of the test above on the store at `store_url`.
async fn connected_and_waiting_chats_carry_on(store_url: &str) {
    let data_dir = common::scratch_dir("chat-restart");
    std::fs::create_dir_all(&data_dir).unwrap();
    let sim_port = free_port();
    let sim_config = write(&data_dir.join("sim.toml"), AGENT);
    let sim =
        SimulateProcess::start(sim_port, Path::new(&sim_config), &data_dir.join("sim.log")).await;
    let agents = sim.api();
    let config = write(
        &data_dir.join("ors.toml"),
        &format!(
            "[backends]\nrouting_url = \"{0}/routing\"\nchat_url = \"{0}/chat\"\n{SERVICE}\
             [gms.services.held]\n_target = \"Chat_Agents@StatServer.GA\"\n\
             _urs_virtual_queue = \"VQ_Held\"\n",
            sim.base
        ),
    );
    let port = free_port();
    let args = ["--config", config.as_str(), "--store", store_url];
    let server = ServeProcess::start(port, &data_dir, &args).await;
    let operator = server.api();
    let alice = server.customer().with_gms_user("device-alice");
    let bob = server.customer().with_gms_user("device-bob");

    // Alice's chat reaches the one agent, and they talk.
    let (alice_id, alice_key) = callback_with_chat(&alice, "6502388711", "Alice").await;
    wait_transcript(&alice, &alice_id, "the agent did not greet Alice", |t| {
        has_entry(
            t,
            "Message.Text",
            "AGENT",
            Some("Hello Alice, I am Ann Lee."),
        )
    })
    .await;
    let r = alice.chat_send(&alice_id, "before the restart").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Bob's chat waits: the agent has no room for it.
    let (bob_id, bob_key) = callback_with_chat(&bob, "6502388712", "Bob").await;
    operator.wait_callback_state(&bob_id, "ROUTING").await;
    let r = bob.chat_refresh(&bob_id, "1").await;
    assert!(
        !has_entry(&r.body, "Notice.Joined", "AGENT", None),
        "{}",
        r.body
    );

    // And, beside the chats, a scheduled callback and a paused one.
    let carol = server.customer().with_gms_user("device-carol");
    let tomorrow = ors::gms::records::iso_utc(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64
            + 86_400_000,
    );
    let r = carol
        .callback_create(
            "chat-immediate",
            &[
                ("_customer_number", "6502388713"),
                ("_desired_time", &tomorrow),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let scheduled = r.body["_id"].as_str().expect("_id").to_string();
    let r = carol
        .callback_create("held", &[("_customer_number", "6502388714")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let paused = r.body["_id"].as_str().expect("_id").to_string();
    let r = operator
        .json(
            "/genesys/1/admin/callback/pause",
            &json!({"service": "held", "paused": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    operator.wait_callback_state(&paused, "PAUSED").await;

    drop(server); // SIGKILL
    let server = ServeProcess::start(port, &data_dir, &args).await;
    let operator = server.api();

    // The scheduled one still waits for its time; the paused one stays
    // paused until its service resumes.
    let rec = operator.callback_record(&scheduled).await;
    assert_eq!(rec["_callback_state"], "SCHEDULED", "{rec}");
    assert_eq!(
        operator.callback_record(&paused).await["_callback_state"],
        "PAUSED"
    );
    let r = operator
        .json(
            "/genesys/1/admin/callback/pause",
            &json!({"service": "held", "paused": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    operator.wait_callback_state(&paused, "QUEUED").await;

    // Alice's device carries on with the chat it holds.
    let r = alice
        .chat_operation(
            &alice_id,
            "refresh",
            &[("transcriptPosition", "1"), ("secureKey", &alice_key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["chatIxnState"], "CONNECTED", "{}", r.body);
    assert!(
        has_entry(
            &r.body,
            "Message.Text",
            "CLIENT",
            Some("before the restart")
        ),
        "{}",
        r.body
    );
    let r = alice
        .chat_operation(
            &alice_id,
            "send",
            &[("message", "after the restart"), ("secureKey", &alice_key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // ... and nobody else reaches it: not another device, not a wrong key.
    let r = bob.chat_refresh(&alice_id, "1").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = alice
        .chat_operation(&alice_id, "refresh", &[("secureKey", &bob_key)])
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    // The agent got the message, and answers.
    let r = agents.get("/sim/agents/agent-1/chats").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let chats = r.body.as_array().expect("agent chats").clone();
    assert_eq!(chats.len(), 1, "{}", r.body);
    let chat_id = chats[0]["chat"]["chat_id"]
        .as_str()
        .expect("chat id")
        .to_string();
    assert!(
        chats[0]["transcript"]
            .as_array()
            .is_some_and(|t| t.iter().any(|e| e["text"] == "after the restart")),
        "{}",
        r.body
    );
    let r = agents
        .json(
            &format!("/sim/agents/agent-1/chats/{chat_id}/send"),
            &json!({"message": "welcome back"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_transcript(
        &alice,
        &alice_id,
        "the agent's answer did not reach Alice",
        |t| has_entry(t, "Message.Text", "AGENT", Some("welcome back")),
    )
    .await;

    // Alice leaves: the agent is released, and Bob's waiting chat, asked
    // for again after the restart, gets them.
    let r = alice.chat_disconnect(&alice_id).await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_transcript(
        &bob,
        &bob_id,
        "Bob's chat was not routed after the restart",
        |t| has_entry(t, "Message.Text", "AGENT", Some("Hello Bob, I am Ann Lee.")),
    )
    .await;
    let rec = operator.wait_callback_state(&bob_id, "COMPLETED").await;
    assert_eq!(rec["_callback_reason"], "routed to agent-1", "{rec}");
    let r = agents.get("/sim/agents/agent-1").await;
    assert_eq!(
        r.body["load"]["chat"], 1,
        "only Bob's chat holds the agent: {}",
        r.body
    );
    // Bob's device, too, reaches its chat after the restart.
    let r = bob
        .chat_operation(
            &bob_id,
            "send",
            &[("message", "thanks"), ("secureKey", &bob_key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    drop(server);
    drop(sim);
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_embedded_simulators_the_chats_end_cleanly_after_sigkill() {
    let data_dir = common::scratch_dir("chat-restart-embedded");
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = write(&data_dir.join("ors.toml"), &format!("{AGENT}{SERVICE}"));
    let port = free_port();
    let args = ["--config", config.as_str()];
    let server = ServeProcess::start(port, &data_dir, &args).await;
    let operator = server.api();
    let alice = server.customer().with_gms_user("device-alice");
    let bob = server.customer().with_gms_user("device-bob");
    let (alice_id, _) = callback_with_chat(&alice, "6502388721", "Alice").await;
    wait_transcript(&alice, &alice_id, "the agent did not join", |t| {
        has_entry(t, "Notice.Joined", "AGENT", None)
    })
    .await;
    let (bob_id, _) = callback_with_chat(&bob, "6502388722", "Bob").await;
    operator.wait_callback_state(&bob_id, "ROUTING").await;

    drop(server); // SIGKILL: the simulated chats are gone with it.
    let server = ServeProcess::start(port, &data_dir, &args).await;
    let operator = server.api();
    let rec = operator.wait_callback_state(&bob_id, "COMPLETED").await;
    assert_eq!(rec["_callback_reason"], "abandoned", "{rec}");
    eventually(
        "the lost chat still answers",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let r = alice.chat_refresh(&alice_id, "1").await;
            if r.status == 404 {
                Ok(())
            } else {
                Err(format!("{} {}", r.status, r.body))
            }
        },
    )
    .await;
    // The agent the lost chats held is free for the next customer.
    let (carol_id, _) = callback_with_chat(
        &server.customer().with_gms_user("device-carol"),
        "6502388723",
        "Carol",
    )
    .await;
    let rec = operator.wait_callback_state(&carol_id, "COMPLETED").await;
    assert_eq!(rec["_callback_reason"], "routed to agent-1", "{rec}");
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// The store the server at `data_dir` keeps (SQLite), for writing what a
/// server killed at an awkward moment would have left.
async fn open_store(data_dir: &Path) -> std::sync::Arc<dyn ors::store::Store> {
    ors::store::open(
        &ors::store::StoreLocation::Sqlite {
            path: data_dir.join("ors.db"),
            full_sync: false,
        },
        1,
        ors::gms::records::MIGRATIONS,
    )
    .await
    .expect("the store opens")
    .expect("a store")
}

async fn put_row(store: &dyn ors::store::Store, table: &str, id: &str, body: &Value) {
    use ors::store::{SqlValue, Statement};
    let statement = Statement::new(
        format!("INSERT INTO {table} (id, body) VALUES ($1, $2)"),
        vec![SqlValue::Text(id.into()), SqlValue::Text(body.to_string())],
    );
    assert_eq!(store.execute(&statement).await.expect("insert"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_made_just_before_a_crash_are_found_and_routed_after_it() {
    let data_dir = common::scratch_dir("chat-restart-windows");
    std::fs::create_dir_all(&data_dir).unwrap();
    // Room for the three chats at once.
    let (sim, config) =
        simulator_and_config(&data_dir, &AGENT.replace("chat = 1", "chat = 3")).await;
    let port = free_port();
    let args = ["--config", config.as_str()];
    let server = ServeProcess::start(port, &data_dir, &args).await;
    let alice = server.customer().with_gms_user("device-alice");
    let bob = server.customer().with_gms_user("device-bob");
    let callback = |device: Api, number: &'static str| async move {
        let r = device
            .callback_create("chat-immediate", &[("_customer_number", number)])
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["_id"].as_str().expect("_id").to_string()
    };
    let alice_id = callback(alice.clone(), "6502388731").await;
    let bob_id = callback(bob.clone(), "6502388732").await;
    let cleo = server.customer().with_gms_user("device-cleo");
    let cleo_id = callback(cleo.clone(), "6502388733").await;
    drop(server); // SIGKILL, as if in the middle of the chat creates.

    // The chat backend made the three chats; the server had recorded, for
    // Alice's, its binding but not its arrival, for Bob's, its arrival
    // (no strategy had it yet) and only the claim of its binding, and for
    // Cleo's only the claim.
    let chats = Api::new(&format!("{}/chat", sim.base));
    let made = |id: String, name: &'static str| {
        let chats = chats.clone();
        async move {
            let r = chats
                .json(
                    "/chats",
                    &json!({"queue": "chat_inbound", "nickname": name,
                        "user_data": {"GMS_ServiceID": id, "GMS_ServiceName": "chat-immediate"}}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.body
        }
    };
    let alice_chat = made(alice_id.clone(), "Alice").await;
    let bob_chat = made(bob_id.clone(), "Bob").await;
    made(cleo_id.clone(), "Cleo").await;
    let binding = |id: &str, chat: &Value, owner: &str, key: &str| {
        json!({"service_id": id, "chat_id": chat["chat_id"].as_str().unwrap_or(""),
            "party_id": chat["customer_party_id"].as_str().unwrap_or(""),
            "gms_user": owner, "owner": owner, "service_name": "chat-immediate",
            "secure_key": key, "messages_sent": 0, "typing_sent": 0, "push": false,
            "shown": 0, "pushed": 0, "started_at": chat["started_at_ms"].as_u64().unwrap_or(0)})
    };
    let store = open_store(&data_dir).await;
    put_row(
        &*store,
        "ors_chat_bindings",
        &alice_id,
        &binding(&alice_id, &alice_chat, "device-alice", "k-alice"),
    )
    .await;
    put_row(
        &*store,
        "ors_chat_bindings",
        &bob_id,
        &binding(&bob_id, &Value::Null, "device-bob", "k-bob"),
    )
    .await;
    put_row(
        &*store,
        "ors_chat_bindings",
        &cleo_id,
        &binding(&cleo_id, &Value::Null, "device-cleo", "k-cleo"),
    )
    .await;
    let bob_chat_id = bob_chat["chat_id"].as_str().expect("chat id");
    put_row(
        &*store,
        "ors_interactions",
        bob_chat_id,
        &json!({"id": bob_chat_id, "media": "chat", "queue": "chat_inbound", "owner": null,
            "reservation": null, "user_data": bob_chat["user_data"], "state": "queued",
            "created_at": bob_chat["started_at_ms"], "from": "", "to": "", "hosted": true}),
    )
    .await;
    drop(store);

    let server = ServeProcess::start(port, &data_dir, &args).await;
    let operator = server.api();
    for (device, id, name) in [
        (&alice, &alice_id, "Alice"),
        (&bob, &bob_id, "Bob"),
        (&cleo, &cleo_id, "Cleo"),
    ] {
        let greeting = format!("Hello {name}, I am Ann Lee.");
        wait_transcript(device, id, &format!("{name}'s chat was not routed"), |t| {
            has_entry(t, "Message.Text", "AGENT", Some(greeting.as_str()))
        })
        .await;
        let rec = operator.wait_callback_state(id, "COMPLETED").await;
        assert_eq!(rec["_callback_reason"], "routed to agent-1", "{rec}");
        let r = device.chat_disconnect(id).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(
        server.log_text().contains("bound to its callback again"),
        "the repair is logged"
    );
    drop(server);
    drop(sim);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// The window between a strategy being given a chat and its state with
/// `interaction.present` being stored: the interaction names its owner,
/// but the owner still waits in `arriving`. At restart the chat is
/// presented to its owner again, and is routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_whose_presentation_was_lost_is_presented_again() {
    lost_presentation_is_repaired(true).await;
}

/// The window between a chat's strategy being named its owner and the
/// strategy's start being stored: the interaction names a session the
/// store does not have. At restart the chat goes to a new strategy, and
/// is routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_whose_strategy_never_started_goes_to_a_new_one() {
    lost_presentation_is_repaired(false).await;
}

/// The two tests above: the chat's owner is a stored strategy waiting in
/// `arriving` (`started`) or a session id nothing ever started.
async fn lost_presentation_is_repaired(started: bool) {
    let inbound = if started {
        Strategy::Inbound
    } else {
        Strategy::NeverStarted
    };
    let down = chat_made_while_down("chat-restart-present", inbound).await;
    let args = ["--config", down.config.as_str()];
    let server = ServeProcess::start(down.port, &down.data_dir, &args).await;
    let operator = server.api();
    down.served_by_ann(&operator).await;
    if started {
        let q = operator.query_ok(&down.strategy).await;
        assert_eq!(
            q["status"], "completed",
            "the strategy handed the chat over: {q}"
        );
    }
    let r = down.carol.chat_disconnect(&down.carol_id).await;
    assert_eq!(r.status, 200, "{}", r.body);
    drop(server);
    down.clean_up();
}

/// Which strategy a chat made while the server was down is stored with.
#[derive(Clone, Copy, PartialEq)]
enum Strategy {
    /// The shipped inbound strategy, stored waiting in `arriving`.
    Inbound,
    /// `fixtures/gms/still_strategy.scxml`, which never ends.
    Still,
    /// A session id nothing ever started.
    NeverStarted,
}

/// A callback whose chat the chat backend made while the server was down,
/// with the store as a crash leaves it when the server had named the
/// chat's strategy its owner but not stored the strategy's state with the
/// presentation. The server is stopped.
struct ChatMadeWhileDown {
    data_dir: std::path::PathBuf,
    sim: SimulateProcess,
    /// A server config using `sim` as both backends.
    config: String,
    port: u16,
    carol: Api,
    carol_id: String,
    chat_id: String,
    /// The session the interaction names as its owner.
    strategy: String,
}

impl ChatMadeWhileDown {
    /// Waits until Carol's chat was routed to agent-1 (Ann Lee greets her)
    /// and her callback record ended `COMPLETED`, `routed to agent-1`.
    async fn served_by_ann(&self, operator: &Api) {
        let greeting = "Hello Carol, I am Ann Lee.";
        wait_transcript(
            &self.carol,
            &self.carol_id,
            "Carol's chat was not routed",
            |t| has_entry(t, "Message.Text", "AGENT", Some(greeting)),
        )
        .await;
        let rec = operator
            .wait_callback_state(&self.carol_id, "COMPLETED")
            .await;
        assert_eq!(rec["_callback_reason"], "routed to agent-1", "{rec}");
    }

    fn clean_up(self) {
        drop(self.sim);
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

async fn chat_made_while_down(name: &str, strategy: Strategy) -> ChatMadeWhileDown {
    let data_dir = common::scratch_dir(name);
    std::fs::create_dir_all(&data_dir).unwrap();
    let (sim, config) = simulator_and_config(&data_dir, AGENT).await;
    let port = free_port();
    let args = ["--config", config.as_str()];
    let server = ServeProcess::start(port, &data_dir, &args).await;
    let carol = server.customer().with_gms_user("device-carol");
    let r = carol
        .callback_create("chat-immediate", &[("_customer_number", "6502388741")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let carol_id = r.body["_id"].as_str().expect("_id").to_string();
    drop(server); // SIGKILL.

    // The chat backend makes Carol's chat while the server is down.
    let chats = Api::new(&format!("{}/chat", sim.base));
    let r = chats
        .json(
            "/chats",
            &json!({"queue": "chat_inbound", "nickname": "Carol",
                "user_data": {"GMS_ServiceID": carol_id, "GMS_ServiceName": "chat-immediate"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let chat = r.body;
    let chat_id = chat["chat_id"].as_str().expect("chat id").to_string();
    // Its strategy is started (and stored) ...
    let server = ServeProcess::start(port, &data_dir, &args).await;
    let src = match strategy {
        Strategy::Inbound => format!(
            "{}{}/inbound_chat.scxml",
            server.base,
            ors::gms::DOCUMENT_PATH
        ),
        _ => common::files::fixture("gms", "still_strategy.scxml"),
    };
    let strategy = if strategy == Strategy::NeverStarted {
        // Shaped like the server's ids, for its first worker.
        "5E55104D0E5000000000000000".to_string()
    } else {
        server
            .api()
            .start_session(&[("src", src.as_str()), ("interactionid", chat_id.as_str())])
            .await
    };
    drop(server);
    // ... and the interaction names it as owner, but the server stopped
    // before the strategy's state with the presentation was stored.
    let store = open_store(&data_dir).await;
    put_row(
        &*store,
        "ors_chat_bindings",
        &carol_id,
        &json!({"service_id": carol_id, "chat_id": chat_id,
            "party_id": chat["customer_party_id"], "gms_user": "device-carol",
            "owner": "device-carol", "service_name": "chat-immediate", "secure_key": "k-carol",
            "messages_sent": 0, "typing_sent": 0, "push": false, "shown": 0, "pushed": 0,
            "started_at": chat["started_at_ms"]}),
    )
    .await;
    put_row(
        &*store,
        "ors_interactions",
        &chat_id,
        &json!({"id": chat_id, "media": "chat", "queue": "chat_inbound", "owner": strategy,
            "reservation": null, "user_data": chat["user_data"], "state": "queued",
            "created_at": chat["started_at_ms"], "from": "", "to": "", "hosted": true}),
    )
    .await;
    drop(store);
    ChatMadeWhileDown {
        data_dir,
        sim,
        config,
        port,
        carol,
        carol_id,
        chat_id,
        strategy,
    }
}

/// While a restart checks a kept chat with the chat backend, the callback
/// session takes the chat over from the strategy the store names. What
/// the check then does for the old owner (present the chat to it again,
/// or, as it has ended, hand the chat to a new strategy) must not take
/// the chat from the callback session. The backend's answer is held
/// until the take-over is done, so the race is not left to timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_taken_over_while_a_restart_checks_it_stays_with_its_new_owner() {
    taken_over_while_checked(Strategy::Still).await;
}

/// As above, with the shipped inbound strategy, which ends when the
/// callback session takes the chat: the check finds its owner gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_taken_over_from_an_ended_strategy_while_a_restart_checks_it_stays() {
    taken_over_while_checked(Strategy::Inbound).await;
}

async fn taken_over_while_checked(strategy: Strategy) {
    let down = chat_made_while_down("chat-restart-taken", strategy).await;
    let agents = Api::new(&down.sim.base);
    let r = agents.form("/sim/agents/agent-1/not-ready", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // How a restart checks a kept chat: GET /chats/{id}.
    let proxy = common::proxy::gated_proxy(format!("{}/chat", down.sim.base), |method, path| {
        method == axum::http::Method::GET
            && path
                .strip_prefix("/chats/")
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    })
    .await;
    let config = write(
        &down.data_dir.join("ors-gated.toml"),
        &format!(
            "[backends]\nrouting_url = \"{}/routing\"\nchat_url = \"{}\"\n{SERVICE}",
            down.sim.base, proxy.base
        ),
    );
    let log = down.data_dir.join("server.log");
    let checked = "chats kept over a restart checked with the chat backend";
    let checks_before = log_count(&log, checked);
    let server = ServeProcess::start(down.port, &down.data_dir, &["--config", &config]).await;
    let operator = server.api();

    // The check is held at the chat backend. The callback session is
    // handed the chat, takes it and waits for an agent.
    let callback = operator.callback_record(&down.carol_id).await["_ors_session_id"]
        .as_str()
        .expect("the callback's session")
        .to_string();
    let r = operator
        .event(
            &callback,
            "gms.delegate",
            &[
                ("interactionid", down.chat_id.as_str()),
                ("find_agent_timeout", "30"),
            ],
        )
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.body);
    eventually(
        "the callback session waiting for an agent",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let (operator, callback) = (operator.clone(), callback.clone());
            async move {
                let q = operator.query(&callback).await.body;
                let waits = q["configuration"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|s| s == "reserving"));
                if waits { Ok(()) } else { Err(format!("{q}")) }
            }
        },
    )
    .await;
    // The check goes on, and ends.
    proxy.open();
    eventually(
        "the restart's check of kept chats",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let log = log.clone();
            async move {
                let n = log_count(&log, checked);
                if n > checks_before { Ok(()) } else { Err(n) }
            }
        },
    )
    .await;
    // The callback session still has the chat: once the agent is ready,
    // it routes it.
    let r = agents.form("/sim/agents/agent-1/ready", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    down.served_by_ann(&operator).await;
    let r = down.carol.chat_disconnect(&down.carol_id).await;
    assert_eq!(r.status, 200, "{}", r.body);
    drop(server);
    down.clean_up();
}

/// How many lines of `log` contain `text`.
fn log_count(log: &Path, text: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

/// The `(position, entry)` pairs a CometD connect reply pushed on
/// `/_genesys`.
fn pushed_entries(reply: &Value) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    for m in reply.as_array().into_iter().flatten() {
        if m["channel"] == "/_genesys" {
            let message = &m["data"]["message"];
            let next = message["transcriptPosition"].as_u64().expect("a position");
            let entries = common::client::transcript(message);
            let first = next - entries.len() as u64;
            for (i, entry) in entries.into_iter().enumerate() {
                out.push((first + i as u64, entry));
            }
        }
    }
    out
}

/// A CometD device subscribed on `device`'s `gms_user`; answers its
/// client id.
async fn comet_subscribe(device: &Api) -> String {
    let r = device.cometd_handshake().await;
    let client_id = r.body[0]["clientId"]
        .as_str()
        .expect("clientId")
        .to_string();
    let r = device.cometd_subscribe(&client_id, "/_genesys").await;
    assert_eq!(r.body[0]["successful"], true, "{}", r.body);
    client_id
}

/// Connects the CometD client until an entry with `text` is pushed;
/// answers everything pushed, in order.
async fn comet_until(device: &Api, client_id: &str, text: &str) -> Vec<(u64, Value)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut pushed = Vec::new();
    while !pushed.iter().any(|(_, e): &(u64, Value)| e[2] == text) {
        assert!(
            std::time::Instant::now() < deadline,
            "'{text}' was not pushed; pushed: {pushed:?}"
        );
        let r = device.cometd_connect(client_id).await;
        pushed.extend(pushed_entries(&r.body));
    }
    pushed
}

/// An entry pushed to a CometD device but still queued for its next
/// connect when the server is killed is not lost: the device that
/// subscribes again after the restart is pushed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_queued_for_a_cometd_device_at_the_kill_is_pushed_after_the_restart() {
    let data_dir = common::scratch_dir("chat-restart-comet");
    std::fs::create_dir_all(&data_dir).unwrap();
    let (sim, config) = simulator_and_config(&data_dir, AGENT).await;
    let port = free_port();
    let args = ["--config", config.as_str()];
    let server = ServeProcess::start(port, &data_dir, &args).await;
    let dana = server.customer().with_gms_user("device-dana");
    let r = dana
        .callback_create("chat-immediate", &[("_customer_number", "6502388716")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["_id"].as_str().expect("_id").to_string();
    let client_id = comet_subscribe(&dana).await;
    let r = dana
        .chat_create(&id, &[("firstName", "Dana"), ("notify_by", "comet")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The device takes every push up to the agent's greeting.
    let greeting = "Hello Dana, I am Ann Lee.";
    let seen = comet_until(&dana, &client_id, greeting).await;
    // A message is pushed (queued for the device's next connect), but the
    // device does not connect before the kill.
    let r = dana.chat_send(&id, "queued at the kill").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at_kill = wait_transcript(&dana, &id, "the message is not in the chat", |t| {
        has_entry(t, "Message.Text", "CLIENT", Some("queued at the kill"))
    })
    .await;
    // Time for the push and its record to be written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(server); // SIGKILL

    let server = ServeProcess::start(port, &data_dir, &args).await;
    let dana = server.customer().with_gms_user("device-dana");
    let client_id = comet_subscribe(&dana).await;
    let again = comet_until(&dana, &client_id, "queued at the kill").await;
    // Nothing the device was handed before the kill comes again.
    let handed: Vec<u64> = seen.iter().map(|(p, _)| *p).collect();
    assert!(
        again.iter().all(|(p, _)| !handed.contains(p)),
        "handed before: {handed:?}, pushed again: {again:?} (transcript {at_kill})"
    );
    let r = dana.chat_disconnect(&id).await;
    assert_eq!(r.status, 200, "{}", r.body);
    drop(server);
    drop(sim);
    let _ = std::fs::remove_dir_all(&data_dir);
}
