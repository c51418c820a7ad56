//! Callback status notifications over real HTTP (`httpcb`): a listener
//! in this test receives GMS's `_cbe_on_*` events as the callbacks of
//! notifying services are created, scheduled, queued, rescheduled and
//! cancelled; a failing listener is retried with backoff, and only as
//! often as `_max_notify_delivery_attempts` says; an event list limits
//! the events and their `notify_params`; and a listener that never
//! answers does not hold up the callbacks. With `orscb` the notifications
//! go to an ORS session as events.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use common::{eventually, spawn_server};
use ors::app::Config;
use serde_json::{Value, json};

#[derive(Default)]
struct Listener {
    /// (path, body) of every request, in arrival order.
    received: Mutex<Vec<(String, Value)>>,
}

async fn receive(
    State(listener): State<Arc<Listener>>,
    Path(path): Path<String>,
    body: String,
) -> StatusCode {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let tries = {
        let mut received = listener.received.lock().unwrap();
        received.push((path.clone(), body.clone()));
        received
            .iter()
            .filter(|(p, b)| *p == path && b["event"] == body["event"] && b["_id"] == body["_id"])
            .count()
    };
    match path.as_str() {
        "flaky" if tries <= 2 => StatusCode::INTERNAL_SERVER_ERROR,
        "fail" => StatusCode::SERVICE_UNAVAILABLE,
        "hang" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK
        }
        _ => StatusCode::NO_CONTENT,
    }
}

impl Listener {
    fn events(&self, path: &str, id: &str) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, b)| p == path && b["_id"] == id)
            .map(|(_, b)| b["event"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn bodies(&self, path: &str, id: &str) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, b)| p == path && b["_id"] == id)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

fn config(listener: &str) -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            data_dir: common::scratch_dir("notifications"),
            ..Default::default()
        },
        ..Config::default()
    };
    let service = |path: &str, extra: &[(&str, Value)]| {
        let mut m = ors::gms::service::demo_service_options();
        m.insert("_enable_status_notification".into(), json!("notify"));
        m.insert("_status_notification_type".into(), json!("httpcb"));
        m.insert(
            "_status_notification_target".into(),
            json!(format!("{listener}/{path}")),
        );
        m.insert("_request_execution_time_buffer".into(), json!(0));
        for (k, v) in extra {
            m.insert(k.to_string(), v.clone());
        }
        m
    };
    let services = &mut config.contact_centre.gms.services;
    services.insert("notified".into(), service("ok", &[]));
    services.insert("flaky".into(), service("flaky", &[]));
    services.insert(
        "broken".into(),
        service("fail", &[("_max_notify_delivery_attempts", json!(2))]),
    );
    services.insert(
        "listed".into(),
        service("listed", &[("_callback_events_list", json!("CB_Events"))]),
    );
    services.insert("hung".into(), service("hang", &[]));
    let mut cancelled = std::collections::BTreeMap::new();
    cancelled.insert(
        "_cbe_on_callback_cancelled".to_string(),
        ors::gms::notifications::EventSettings {
            notify_params: "_id, usr_reason".into(),
        },
    );
    config
        .contact_centre
        .gms
        .event_lists
        .insert("CB_Events".into(), cancelled);
    config
}

fn now_iso(ahead_ms: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    ors::gms::records::iso_utc(now + ahead_ms)
}

async fn wait_events(listener: &Listener, path: &str, id: &str, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    eventually(
        &format!("{path} never received {want:?} for {id}"),
        Duration::from_secs(15),
        Duration::from_millis(25),
        || {
            let got = listener.events(path, id);
            let want = want.clone();
            async move {
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_tell_their_listener_what_happens_to_them() {
    let listener = Arc::new(Listener::default());
    let base = common::server::serve_router(
        Router::new()
            .route("/{path}", post(receive))
            .with_state(listener.clone()),
    )
    .await;
    let server = spawn_server(config(&base)).await;
    let device = server.customer().with_gms_user("device-n1");
    let create =
        |service: &'static str, number: &'static str, extra: Vec<(&'static str, String)>| {
            let device = device.clone();
            async move {
                let mut form = vec![
                    ("_customer_number", number.to_string()),
                    ("usr_reason", "billing".to_string()),
                ];
                form.extend(extra);
                let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let r = device.callback_create(service, &pairs).await;
                assert_eq!(r.status, 200, "{}", r.body);
                r.body["_id"].as_str().expect("_id").to_string()
            }
        };

    // Created, then cancelled.
    let id = create("notified", "6502382001", vec![]).await;
    wait_events(
        &listener,
        "ok",
        &id,
        &["_cbe_on_service_create", "_cbe_on_callback_queued"],
    )
    .await;
    let body = &listener.bodies("ok", &id)[1];
    assert_eq!(body["_callback_state"], "QUEUED", "{body}");
    assert_eq!(body["_service_name"], "notified", "{body}");
    assert_eq!(body["_customer_number"], "6502382001", "{body}");
    assert!(
        body.get("usr_reason").is_none(),
        "not a default param: {body}"
    );
    assert_eq!(device.callback_cancel("notified", &id).await.status, 200);
    wait_events(
        &listener,
        "ok",
        &id,
        &[
            "_cbe_on_service_create",
            "_cbe_on_callback_queued",
            "_cbe_on_callback_cancelled",
            "_cbe_on_service_exit",
        ],
    )
    .await;
    assert_eq!(
        listener.bodies("ok", &id)[2]["_callback_reason"],
        "CANCELLED"
    );

    // Scheduled, rescheduled, then submitted when due.
    let id = create(
        "notified",
        "6502382002",
        vec![("_desired_time", now_iso(86_400_000))],
    )
    .await;
    wait_events(
        &listener,
        "ok",
        &id,
        &["_cbe_on_service_create", "_cbe_on_callback_scheduled"],
    )
    .await;
    let r = device
        .call(
            axum::http::Method::PUT,
            &format!("/genesys/1/service/callback/notified/{id}"),
            Some("application/json"),
            json!({"_new_desired_time": now_iso(1_000)}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_events(
        &listener,
        "ok",
        &id,
        &[
            "_cbe_on_service_create",
            "_cbe_on_callback_scheduled",
            "_cbe_on_callback_rescheduled",
            "_cbe_on_callback_queued",
        ],
    )
    .await;

    // A listener failing twice gets the notification on the third try.
    let id = create("flaky", "6502382003", vec![]).await;
    let tries = |event: &str| {
        listener
            .events("flaky", &id)
            .iter()
            .filter(|e| *e == event)
            .count()
    };
    eventually(
        "the flaky listener was not tried three times",
        Duration::from_secs(15),
        Duration::from_millis(25),
        || {
            let n = tries("_cbe_on_callback_queued");
            async move { if n == 3 { Ok(()) } else { Err(n.to_string()) } }
        },
    )
    .await;
    // One that always fails: exactly _max_notify_delivery_attempts tries.
    let id = create("broken", "6502382004", vec![]).await;
    eventually(
        "the failing listener was not tried twice",
        Duration::from_secs(15),
        Duration::from_millis(25),
        || {
            let n = listener.events("fail", &id).len();
            async move { if n == 4 { Ok(()) } else { Err(n.to_string()) } }
        },
    )
    .await;
    // Past the longest backoff: still two tries of each event.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut tried = listener.events("fail", &id);
    tried.sort();
    assert_eq!(
        tried,
        [
            "_cbe_on_callback_queued",
            "_cbe_on_callback_queued",
            "_cbe_on_service_create",
            "_cbe_on_service_create"
        ],
        "no third try"
    );

    // An event list: only the events it names, with their params.
    let id = create("listed", "6502382005", vec![]).await;
    assert_eq!(device.callback_cancel("listed", &id).await.status, 200);
    wait_events(&listener, "listed", &id, &["_cbe_on_callback_cancelled"]).await;
    let body = &listener.bodies("listed", &id)[0];
    assert_eq!(body["usr_reason"], "billing", "{body}");
    assert!(body.get("_callback_state").is_none(), "{body}");

    // A listener that never answers: the create is answered anyway, while
    // its notification is still being delivered.
    let id = create("hung", "6502382006", vec![]).await;
    eventually(
        "the hung listener never got the request",
        Duration::from_secs(15),
        Duration::from_millis(25),
        || {
            let n = listener.events("hang", &id).len();
            async move { if n >= 1 { Ok(()) } else { Err(n.to_string()) } }
        },
    )
    .await;
    let r = device.callback_get("hung", &id).await;
    assert_eq!(r.body["_callback_state"], "QUEUED", "{}", r.body);
    server.stop().await;
}

/// `_status_notification_type=orscb`: the target is an ORS session id, and
/// that session gets each notification as an event named as it (here a
/// session started on a first run of the server, and kept by its store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orscb_notifications_reach_the_target_session_as_events() {
    let data_dir = common::scratch_dir("notifications-orscb");
    let base_config = || {
        let mut config = Config {
            server: ors::server::Config {
                workers: 2,
                data_dir: data_dir.clone(),
                ..Default::default()
            },
            ..Config::default()
        };
        config.contact_centre.gms.services.clear();
        config
    };
    let server = spawn_server(base_config()).await;
    let monitor = server
        .api()
        .start_session(&[("src", "fixtures/gms/status_listener.scxml")])
        .await;
    server.stop().await;

    let mut config = base_config();
    let mut options = ors::gms::service::demo_service_options();
    options.insert("_enable_status_notification".into(), json!("notify"));
    options.insert("_status_notification_type".into(), json!("orscb"));
    options.insert("_status_notification_target".into(), json!(monitor));
    config
        .contact_centre
        .gms
        .services
        .insert("monitored".into(), options);
    let server = spawn_server(config).await;
    let device = server.customer().with_gms_user("device-orscb");
    let r = device
        .callback_create("monitored", &[("_customer_number", "6502382101")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["_id"].as_str().expect("_id").to_string();
    assert_eq!(device.callback_cancel("monitored", &id).await.status, 200);
    let api = server.api();
    let want = [
        ("_cbe_on_service_create", "QUEUED"),
        ("_cbe_on_callback_queued", "QUEUED"),
        ("_cbe_on_callback_cancelled", "COMPLETED"),
        ("_cbe_on_service_exit", "COMPLETED"),
    ];
    eventually(
        "the monitor session got the notifications",
        Duration::from_secs(15),
        Duration::from_millis(25),
        || {
            let api = api.clone();
            let (monitor, id) = (monitor.clone(), id.clone());
            async move {
                let q = api.query_ok(&monitor).await;
                let got: Vec<(String, String)> = q["data"]["got"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|g| g["id"] == id.as_str())
                    .map(|g| {
                        let text = |k: &str| g[k].as_str().unwrap_or_default().to_string();
                        (text("name"), text("state"))
                    })
                    .collect();
                let expected: Vec<(String, String)> = want
                    .iter()
                    .map(|(n, s)| (n.to_string(), s.to_string()))
                    .collect();
                if got == expected {
                    Ok(())
                } else {
                    Err(format!("{q}"))
                }
            }
        },
    )
    .await;
    let q = api.query_ok(&monitor).await;
    let cancelled = &q["data"]["got"][2];
    assert_eq!(cancelled["reason"], "CANCELLED", "{q}");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
