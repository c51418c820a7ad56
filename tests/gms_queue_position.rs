//! `check-queue-position` over real HTTP, as public GMS clients call it
//! (GET and POST on `/genesys/1/service/{id}/check-queue-position`): the
//! shipped callback document answers at once with the position and wait
//! the server found in the routing backend's virtual queue, before the
//! chat (among the service's queued callbacks) and while its request waits
//! for an agent (among the virtual queue's submits); a scheduled callback
//! says so; one whose session is gone gets GMS's 500 `404 Not Found`;
//! another device gets a 404.

mod common;

use std::time::Duration;

use common::{Api, eventually, spawn_server};
use ors::app::Config;
use ors::backends::settings::AgentSettings;
use serde_json::Value;

fn config() -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            data_dir: common::scratch_dir("queue_position"),
            ..Default::default()
        },
        ..Config::default()
    };
    // A session that did not answer would get a 504 after this, not hang.
    config.limits.request_timeout_ms = 3_000;
    // One agent, not ready: a chat's request waits in the virtual queue.
    let mut agent = AgentSettings::new("agent-1", "Ann", &["Chat_Agents"]);
    agent.ready = false;
    config.contact_centre.backends.simulator.agents = vec![agent];
    config
}

async fn create(device: &Api, number: &str) -> String {
    let r = device
        .callback_create("chat-immediate", &[("_customer_number", number)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["_id"].as_str().expect("_id").to_string()
}

async fn position(device: &Api, id: &str) -> common::Reply {
    device
        .get(&format!("/genesys/1/service/{id}/check-queue-position"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_learns_where_it_stands_from_its_session() {
    let server = spawn_server(config()).await;
    let device = server.customer().with_gms_user("device-q1");
    let first = create(&device, "6502381001").await;
    let second = create(&device, "6502381002").await;

    // Before the chat: among the service's queued callbacks. No agent is
    // ready, so the backend expects a wait.
    let r = position(&device, &second).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["_id"], second.as_str(), "{}", r.body);
    assert_eq!(r.body["_position"], 2, "{}", r.body);
    assert_eq!(r.body["_total_waiting"], 2, "{}", r.body);
    assert_eq!(r.body["ewt"], 60.0, "{}", r.body);
    assert_eq!(r.body["_eta"], 60.0, "{}", r.body);
    assert_eq!(r.body["_agent_ready_threshold_passed"], false, "{}", r.body);
    let r = device
        .form(
            &format!("/genesys/1/service/{first}/check-queue-position"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["_position"], 1, "{}", r.body);

    // Another device: no such callback.
    let other = server.customer().with_gms_user("device-q2");
    let r = position(&other, &first).await;
    assert_eq!(r.status, 404, "{}", r.body);

    // The first customer's chat starts: its request now waits for an
    // agent, and it stands first in the virtual queue.
    let r = device
        .chat_create(&first, &[("firstName", "Ann"), ("lastName", "Lee")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = eventually(
        "the callback's request never waited in the virtual queue",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let device = device.clone();
            let first = first.clone();
            async move {
                let r = position(&device, &first).await;
                let record = device.callback_query_any(&format!("_id={first}")).await;
                if r.status == 200 && record.body[0]["_callback_state"] == "ROUTING" {
                    Ok(r)
                } else {
                    Err(format!("{} / {}", r.body, record.body))
                }
            }
        },
    )
    .await;
    assert_eq!(r.body["_position"], 1, "{}", r.body);
    assert_eq!(r.body["_total_waiting"], 1, "{}", r.body);
    // The waiting request itself: a minute.
    assert_eq!(r.body["ewt"], 60.0, "{}", r.body);
    // The other callback now stands alone among the queued ones.
    let r = position(&device, &second).await;
    assert_eq!(
        (
            r.body["_position"].clone(),
            r.body["_total_waiting"].clone()
        ),
        (Value::from(1), Value::from(1)),
        "{}",
        r.body
    );

    // Cancelled: its session is gone, and GMS answers 500 "404 Not Found".
    assert_eq!(
        device
            .callback_cancel("chat-immediate", &second)
            .await
            .status,
        200
    );
    let r = position(&device, &second).await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("404 Not Found")),
        "{}",
        r.body
    );
    assert_eq!(
        r.body["exception"], "com.genesyslab.gsg.services.ors.OrsServiceException",
        "{}",
        r.body
    );

    // Scheduled: no session yet; the answer says so.
    let desired = ors::gms::records::iso_utc(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            + 86_400_000,
    );
    let r = device
        .callback_create(
            "chat-immediate",
            &[
                ("_customer_number", "6502381003"),
                ("_desired_time", &desired),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let scheduled = r.body["_id"].as_str().expect("_id").to_string();
    let r = position(&device, &scheduled).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["_callback_state"], "SCHEDULED", "{}", r.body);
    assert_eq!(r.body["_desired_time"], desired.as_str(), "{}", r.body);
    server.stop().await;
}
