//! Pausing a service and redirecting one, over real HTTP: while a service
//! is paused its queued callbacks are `PAUSED` (not counted as queued),
//! new ones start `PAUSED`, and a chat that arrives is held (taken over,
//! not routed) until the service resumes, then goes to an agent; which
//! services are paused survives a restart. A service with `_redirect`
//! makes its creates on the target service; a request may cancel the
//! redirect only when `_redirect` is overwritable.

mod common;

use std::time::Duration;

use common::{Api, eventually, spawn_server};
use ors::app::Config;
use serde_json::json;

fn config(data_dir: std::path::PathBuf) -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            data_dir,
            ..Default::default()
        },
        ..Config::default()
    };
    config.contact_centre.backends.simulator.accept_delay_ms = 20;
    let services = &mut config.contact_centre.gms.services;
    services.insert("sales".into(), ors::gms::service::demo_service_options());
    let mut front = ors::gms::service::demo_service_options();
    front.insert("_redirect".into(), json!("sales"));
    services.insert("front".into(), front);
    let mut open = ors::gms::service::demo_service_options();
    open.insert("_redirect".into(), json!("sales"));
    open.insert("_overwritable_options".into(), json!("_redirect"));
    services.insert("front-open".into(), open);
    let mut vip = ors::gms::service::demo_service_options();
    vip.insert("username".into(), json!("bob"));
    vip.insert("password".into(), json!("bob-pass"));
    services.insert("vip".into(), vip);
    let mut to_vip = ors::gms::service::demo_service_options();
    to_vip.insert("_redirect".into(), json!("vip"));
    services.insert("to-vip".into(), to_vip);
    let mut small = ors::gms::service::demo_service_options();
    small.insert("_max_queued_callbacks_per_service".into(), json!(1));
    services.insert("small".into(), small);
    config
}

async fn create(device: &Api, service: &str, pairs: &[(&str, &str)]) -> common::Reply {
    device.callback_create(service, pairs).await
}

async fn pause(admin: &Api, service: &str, paused: bool) -> common::Reply {
    admin
        .json(
            "/genesys/1/admin/callback/pause",
            &json!({"service": service, "paused": paused}),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_service_holds_its_callbacks_and_a_redirect_moves_them() {
    let data_dir = common::scratch_dir("callback_pause");
    let server = spawn_server(config(data_dir.clone())).await;
    let admin = server.api();
    let device = server.customer().with_gms_user("device-p1");

    // Redirects.
    let r = create(&device, "front", &[("_customer_number", "6502384001")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = admin.callback_record(r.body["_id"].as_str().unwrap()).await;
    assert_eq!(rec["_service_name"], "sales", "{rec}");
    assert_eq!(rec["_redirected_from"], "front", "{rec}");
    let r = create(
        &device,
        "front",
        &[("_customer_number", "6502384002"), ("_redirect", "")],
    )
    .await;
    assert_eq!(r.status, 400, "not overwritable: {}", r.body);
    let r = create(
        &device,
        "front-open",
        &[("_customer_number", "6502384003"), ("_redirect", "")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = admin.callback_record(r.body["_id"].as_str().unwrap()).await;
    assert_eq!(rec["_service_name"], "front-open", "cancelled: {rec}");
    let r = create(
        &device,
        "front-open",
        &[("_customer_number", "6502384004"), ("_redirect", "nowhere")],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // A redirect to a service with credentials needs them; the callback
    // is then reached through either service.
    let r = create(&device, "to-vip", &[("_customer_number", "6502384005")]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let bob = device.clone().with_basic("bob", "bob-pass");
    let r = create(&bob, "to-vip", &[("_customer_number", "6502384005")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let vip_id = r.body["_id"].as_str().expect("_id").to_string();
    assert_eq!(bob.callback_get("to-vip", &vip_id).await.status, 200);
    assert_eq!(device.callback_get("to-vip", &vip_id).await.status, 401);
    assert_eq!(bob.callback_cancel("to-vip", &vip_id).await.status, 200);

    // A paused callback keeps its place against the queued limit, so a
    // resume cannot overfill the queue.
    assert_eq!(pause(&admin, "small", true).await.status, 200);
    let r = create(&device, "small", &[("_customer_number", "6502384006")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = create(&device, "small", &[("_customer_number", "6502384007")]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(pause(&admin, "small", false).await.status, 200);
    let marks = admin
        .get("/genesys/1/admin/callback/watermarks?service_name=small")
        .await;
    assert_eq!(marks.body["total"], 1, "{}", marks.body);

    // Pausing.
    let queued = create(
        &device,
        "chat-immediate",
        &[("_customer_number", "6502384010")],
    )
    .await;
    let queued = queued.body["_id"].as_str().expect("_id").to_string();
    let r = pause(&admin, "chat-immediate", true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["paused"], json!(["chat-immediate"]), "{}", r.body);
    assert_eq!(
        admin.callback_record(&queued).await["_callback_state"],
        "PAUSED"
    );
    let r = create(
        &device,
        "chat-immediate",
        &[("_customer_number", "6502384011")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let held = r.body["_id"].as_str().expect("_id").to_string();
    assert_eq!(
        admin.callback_record(&held).await["_callback_state"],
        "PAUSED"
    );
    let marks = admin
        .get("/genesys/1/admin/callback/watermarks?service_name=chat-immediate")
        .await;
    assert_eq!(
        marks.body["total"], 0,
        "paused ones are not queued: {}",
        marks.body
    );
    // A chat arriving now is taken over and held.
    let r = device
        .chat_create(&held, &[("firstName", "Ann"), ("lastName", "Lee")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let session = admin.callback_record(&held).await["_ors_session_id"]
        .as_str()
        .expect("session")
        .to_string();
    eventually(
        "the chat was never held",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || {
            let admin = admin.clone();
            let session = session.clone();
            async move {
                let view = admin.query_ok(&session).await;
                let states = view["configuration"].to_string();
                if states.contains("\"held\"") {
                    Ok(())
                } else {
                    Err(states)
                }
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        admin.callback_record(&held).await["_callback_state"],
        "PAUSED"
    );

    // Resumed: the held chat goes to an agent; the other waits, queued.
    let r = pause(&admin, "chat-immediate", false).await;
    assert_eq!(r.body["paused"], json!([]), "{}", r.body);
    let done = admin.wait_callback_state(&held, "COMPLETED").await;
    assert!(
        done["_callback_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("routed to")),
        "{done}"
    );
    assert_eq!(
        admin.callback_record(&queued).await["_callback_state"],
        "QUEUED"
    );

    // Bad requests, and who may ask.
    assert_eq!(pause(&admin, "nowhere", true).await.status, 404);
    let r = admin
        .json(
            "/genesys/1/admin/callback/pause",
            &json!({"service": "sales"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(pause(&device, "sales", true).await.status, 401);

    // Paused survives a restart.
    assert_eq!(pause(&admin, "all", true).await.status, 200);
    server.stop().await;
    let server = spawn_server(config(data_dir)).await;
    let r = server.api().get("/genesys/1/admin/callback/pause").await;
    assert_eq!(
        r.body["paused"],
        json!([
            "chat-immediate",
            "front",
            "front-open",
            "sales",
            "small",
            "to-vip",
            "vip"
        ]),
        "{}",
        r.body
    );
    let r = create(
        &server.customer().with_gms_user("device-p1"),
        "sales",
        &[("_customer_number", "6502384020")],
    )
    .await;
    let id = r.body["_id"].as_str().expect("_id").to_string();
    assert_eq!(
        server.api().callback_record(&id).await["_callback_state"],
        "PAUSED"
    );
    server.stop().await;
}

#[test]
fn bad_callback_options_stop_the_server_at_start() {
    let service = |extra: &str| {
        format!(
            "[gms.services.s]\n_target = \"A@StatServer.GA\"\n_urs_virtual_queue = \"VQ\"\n{extra}\n"
        )
    };
    for (extra, named) in [
        ("_queue_ping_ors_period = \"abc\"", "_queue_ping_ors_period"),
        (
            "_queue_ping_ors_period = \"-2,-120\"",
            "_queue_ping_ors_period",
        ),
        (
            "_queue_poll_period_recovery = \"5\"",
            "_queue_poll_period_recovery",
        ),
        (
            "_max_request_by_time_bucket = \"abc\"",
            "_max_request_by_time_bucket",
        ),
        (
            "_max_notify_delivery_attempts = 0",
            "_max_notify_delivery_attempts",
        ),
        (
            "_enable_status_notification = \"notify\"\n_status_notification_type = \"bogus\"\n_status_notification_target = \"http://x\"",
            "_status_notification_type",
        ),
        (
            "_enable_status_notification = \"notify\"\n_status_notification_target = \"ftp://x\"",
            "_status_notification_target",
        ),
        ("_callback_events_list = \"NOPE\"", "_callback_events_list"),
        ("_redirect = \"nowhere\"", "_redirect"),
        (
            "_reject_future_desired_time = \"banana\"",
            "_reject_future_desired_time",
        ),
    ] {
        let e = Config::parse(&service(extra), "test.toml")
            .err()
            .unwrap_or_else(|| panic!("accepted: {extra}"))
            .to_string();
        assert!(e.contains(named), "{extra}: {e}");
    }
    let e = Config::parse("[callback]\nqueue-polling-rate = 0\n", "test.toml")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("queue-polling-rate"), "{e}");
    assert!(Config::parse(&service("_queue_ping_ors_period = \"-120,0\""), "test.toml").is_ok());
}
