//! One chat is routed once. While an inbound strategy routes a chat to
//! its overflow group, a callback session that asks to take the chat over
//! is refused (`invalidstate.routed`): before, both delivered it, and the
//! chat went to two agents, one of them kept busy after it ended (found by
//! the kill loop after a restart). The chat backend's `deliver` is held in
//! a proxy so that the two meet every time.

mod common;

use std::time::Duration;

use common::client::Api;
use common::eventually;
use common::process::{ServeProcess, SimulateProcess, free_port};
use serde_json::json;

/// Two agents who join at once: one for the callback service's target,
/// one in the inbound strategy's overflow group.
const AGENTS: &str = "[backends.simulator]\naccept_delay_ms = 0\n\
     [[backends.simulator.agents]]\nid = \"agent-1\"\nname = \"Ann Lee\"\n\
     groups = [\"Chat_Agents\"]\ncapacity = { chat = 1 }\n\
     [[backends.simulator.agents]]\nid = \"agent-3\"\nname = \"Carla Diaz\"\n\
     groups = [\"Chat_Overflow\"]\ncapacity = { chat = 1 }\n";

const SERVICE: &str = "[gms.services.chat-immediate]\n_target = \"Chat_Agents@StatServer.GA\"\n\
     _urs_virtual_queue = \"VQ_Chat_Immediate\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_being_routed_is_not_taken_over_and_routed_again() {
    let data_dir = common::scratch_dir("routing-claim");
    std::fs::create_dir_all(&data_dir).unwrap();
    let sim_config = data_dir.join("sim.toml");
    std::fs::write(&sim_config, AGENTS).unwrap();
    let sim = SimulateProcess::start(free_port(), &sim_config, &data_dir.join("sim.log")).await;
    // Every delivery of a chat to an agent waits at the gate.
    let proxy = common::proxy::gated_proxy(format!("{}/chat", sim.base), |method, path| {
        method == axum::http::Method::POST && path.ends_with("/deliver")
    })
    .await;
    let config = data_dir.join("ors.toml");
    std::fs::write(
        &config,
        format!(
            "[backends]\nrouting_url = \"{}/routing\"\nchat_url = \"{}\"\n{SERVICE}",
            sim.base, proxy.base
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let server = ServeProcess::start(free_port(), &data_dir, &["--config", &config]).await;
    let operator = server.api();

    // A callback waits for its chat.
    let dana = server.customer().with_gms_user("device-dana");
    let r = dana
        .callback_create("chat-immediate", &[("_customer_number", "6502388742")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let dana_id = r.body["_id"].as_str().expect("_id").to_string();
    let callback = operator.callback_record(&dana_id).await["_ors_session_id"]
        .as_str()
        .expect("the callback's session")
        .to_string();

    // A chat that names no service: its inbound strategy routes it to the
    // overflow group, and the delivery waits.
    let chats = Api::new(&format!("{}/chat", sim.base));
    let r = chats
        .json(
            "/chats",
            &json!({"queue": "chat_inbound", "nickname": "Dana", "user_data": {}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let chat_id = r.body["chat_id"].as_str().expect("chat id").to_string();
    eventually(
        "the overflow route's delivery at the gate",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            if proxy.held() >= 1 {
                Ok(())
            } else {
                Err(proxy.held())
            }
        },
    )
    .await;

    // Now the callback session is handed the same chat.
    let r = operator
        .event(
            &callback,
            "gms.delegate",
            &[
                ("interactionid", chat_id.as_str()),
                ("find_agent_timeout", "30"),
            ],
        )
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.body);
    // It ends without the chat, or (the fault) routes it too: then its
    // own delivery reaches the gate.
    eventually(
        "the callback session to give up the chat or route it",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let (operator, dana_id) = (operator.clone(), dana_id.clone());
            let held = proxy.held();
            async move {
                let rec = operator.callback_record(&dana_id).await;
                if rec["_callback_state"] == "COMPLETED" || held >= 2 {
                    Ok(())
                } else {
                    Err(format!("{held} held; {rec}"))
                }
            }
        },
    )
    .await;
    proxy.open();
    let rec = operator.wait_callback_state(&dana_id, "COMPLETED").await;
    assert_eq!(rec["_callback_reason"], "chat_unavailable", "{rec}");
    assert_eq!(proxy.held(), 1, "the chat was delivered more than once");

    // The overflow agent has the chat; the callback's agent never had it.
    let agents = Api::new(&sim.base);
    eventually(
        "the overflow agent joined",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let (agents, chat_id) = (agents.clone(), chat_id.clone());
            async move {
                let r = agents.get("/sim/agents/agent-3/chats").await;
                if r.body.to_string().contains(&chat_id) {
                    Ok(())
                } else {
                    Err(format!("{} {}", r.status, r.body))
                }
            }
        },
    )
    .await;
    let r = agents.get("/sim/agents/agent-1/chats").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.to_string().contains(&chat_id), "{}", r.body);
    drop(server);
    drop(sim);
    let _ = std::fs::remove_dir_all(&data_dir);
}
