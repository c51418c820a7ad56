//! A Callback survives the server being killed mid-flow: after Start
//! Callback, the `ors` binary is killed with SIGKILL and started again on
//! the same data directory; the chat then started on the URL the device
//! already holds finds the recovered callback session, which routes it to
//! an agent and completes the record.

mod common;

use std::time::Duration;

use common::eventually;
use common::process::{ServeProcess, free_port};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_resumes_after_the_server_is_killed() {
    let data_dir = common::scratch_dir("gms-restart");
    let port = free_port();
    let server = ServeProcess::start(port, &data_dir, &[]).await;
    let device = server.api().with_gms_user("device-1");
    let plain = server.api();

    let r = device
        .callback_create(
            "chat-immediate",
            &[
                ("_customer_number", "6502388511"),
                ("usr_customer_name", "Bob Markel"),
            ],
        )
        .await;
    let (status, created) = (r.status, r.body);
    assert_eq!(status, 200, "{created}");
    let id = created["_id"].as_str().expect("_id").to_string();
    let chat_url = created["_start_chat_url"]
        .as_str()
        .expect("url")
        .to_string();
    drop(server); // SIGKILL

    let _server = ServeProcess::start(port, &data_dir, &[]).await;
    let r = plain.callback_query_any(&format!("_id={id}")).await;
    let (status, records) = (r.status, r.body);
    assert_eq!(status, 200, "{records}");
    assert_eq!(records[0]["_callback_state"], "QUEUED");
    let session = records[0]["_ors_session_id"]
        .as_str()
        .expect("session")
        .to_string();

    // The URL the device already holds, on this same server.
    let chat_path = chat_url
        .strip_prefix(plain.base())
        .unwrap_or_else(|| panic!("{chat_url} is not on {}", plain.base()))
        .to_string();
    let r = device
        .form(
            &chat_path,
            &[
                ("firstName", "Bob"),
                ("lastName", "Markel"),
                ("subject", "bill"),
            ],
        )
        .await;
    let (status, chat) = (r.status, r.body);
    assert_eq!(status, 200, "{chat}");
    eventually(
        "no agent joined after the restart",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            let reply = plain
                .form(
                    &format!("{chat_path}/refresh"),
                    &[("transcriptPosition", "1")],
                )
                .await
                .body;
            let joined = reply["transcriptToShow"]
                .as_array()
                .is_some_and(|t| t.iter().any(|e| e[0] == "Notice.Joined" && e[4] == "AGENT"));
            if joined { Ok(()) } else { Err(reply) }
        },
    )
    .await;
    eventually(
        "record not completed",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let records = plain.callback_query_any(&format!("_id={id}")).await.body;
            if records[0]["_callback_state"] == "COMPLETED" {
                Ok(())
            } else {
                Err(records)
            }
        },
    )
    .await;
    let view: Value = plain.query(&session).await.body;
    assert_eq!(view["status"], "completed", "{view}");
    let _ = std::fs::remove_dir_all(&data_dir);
}
