//! A queued callback whose session died is submitted again, over real
//! HTTP on SQLite and (when `ORS_TEST_POSTGRES_URL` is set) PostgreSQL:
//! its session is terminated by an operator, the server notices within
//! `queue-polling-rate` (1 s here) and starts a new one, which then takes
//! the customer's chat to an agent; a callback that loses its session
//! more often than `_max_ors_submit_attempts` allows, or whose desired
//! time is older than `_queue_ping_ors_period`, ends `SUBMIT_FAILED`.

mod common;

use common::{Api, spawn_server};
use ors::app::Config;
use ors::store::{SqlValue, Statement};
use serde_json::{Value, json};

fn config(store_url: String) -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            data_dir: common::scratch_dir("callback_recovery"),
            ..Default::default()
        },
        ..Config::default()
    };
    config.store.url = store_url;
    config.contact_centre.callback.queue_polling_rate = 1;
    config
        .contact_centre
        .callback
        .options
        .insert("_queue_ping_ors_period".into(), json!("-120,0"));
    let mut once = ors::gms::service::demo_service_options();
    once.insert("_max_ors_submit_attempts".into(), json!(2));
    config
        .contact_centre
        .gms
        .services
        .insert("twice".into(), once);
    config.contact_centre.backends.simulator.accept_delay_ms = 20;
    config
}

async fn record(api: &Api, id: &str) -> Value {
    api.callback_record(id).await
}

/// Terminates callback `id`'s session and waits until another one has
/// taken over; returns the record.
async fn lose_session(operator: &Api, id: &str) -> Value {
    let first = record(operator, id).await["_ors_session_id"]
        .as_str()
        .expect("session")
        .to_string();
    assert_eq!(operator.terminate(&first).await.status, 200);
    operator
        .wait_callback(id, "never submitted again", |r| {
            r["_ors_session_id"].as_str().is_some_and(|s| s != first)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_loses_its_session_is_submitted_again_or_fails() {
    for db in common::stores::test_databases().await {
        let label = db.label;
        let server = spawn_server(config(db.url())).await;
        let operator = server.api();
        let device = server.customer().with_gms_user("device-rc");
        let create = |service: &'static str, number: &'static str| {
            let device = device.clone();
            async move {
                let r = device
                    .callback_create(service, &[("_customer_number", number)])
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
                r.body["_id"].as_str().expect("_id").to_string()
            }
        };

        // Its session is terminated: a new one takes over, and carries the
        // customer's chat to an agent.
        let id = create("chat-immediate", "6502383001").await;
        let again = lose_session(&operator, &id).await;
        assert_eq!(again["_callback_state"], "QUEUED", "{label}: {again}");
        assert_eq!(again["_submit_attempts"], 1, "{label}: {again}");
        let second = again["_ors_session_id"].as_str().unwrap().to_string();
        assert_eq!(
            operator.query_ok(&second).await["status"],
            "running",
            "{label}"
        );
        let r = device
            .chat_create(&id, &[("firstName", "Ann"), ("lastName", "Lee")])
            .await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        let done = operator
            .wait_callback(&id, "the chat never reached an agent", |r| {
                r["_callback_state"] == "COMPLETED"
            })
            .await;
        assert!(
            done["_callback_reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("routed to")),
            "{label}: {done}"
        );

        // Two submits at most on this service: losing the second session
        // ends it.
        let id = create("twice", "6502383002").await;
        let again = lose_session(&operator, &id).await;
        let second = again["_ors_session_id"].as_str().unwrap().to_string();
        assert_eq!(operator.terminate(&second).await.status, 200);
        let failed = operator
            .wait_callback(&id, "never failed", |r| r["_callback_state"] == "COMPLETED")
            .await;
        assert_eq!(
            failed["_callback_reason"], "SUBMIT_FAILED",
            "{label}: {failed}"
        );

        // Desired three hours ago, its session gone: beyond the period.
        let store = db.open().await;
        let old = "222-00000000-0000-0000-0000-000000000002";
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let desired = now - 3 * 3_600_000;
        let stored = json!({"_id": old, "_service_name": "chat-immediate",
            "_callback_state": "QUEUED", "_customer_number": "6502383003",
            "_desired_time": ors::gms::records::iso_utc(desired)});
        let insert = Statement::new(
            "INSERT INTO ors_callbacks (id, service, customer_number, state, session_id, \
             created_at, updated_at, expires_at, record, gms_user) VALUES ($1, \
             'chat-immediate', '16502383003', 'QUEUED', 'a-session-long-gone', $2, $2, $3, $4, \
             'device-rc')",
            vec![
                SqlValue::Text(old.into()),
                SqlValue::Int(desired),
                SqlValue::Int(now + 86_400_000),
                SqlValue::Text(stored.to_string()),
            ],
        );
        assert_eq!(store.execute(&insert).await.expect("insert"), 1);
        drop(store);
        let failed = operator
            .wait_callback(old, "the old one never failed", |r| {
                r["_callback_state"] == "COMPLETED"
            })
            .await;
        assert_eq!(
            failed["_callback_reason"], "SUBMIT_FAILED",
            "{label}: {failed}"
        );
        server.stop().await;
    }
}
