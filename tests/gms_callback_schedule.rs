//! Scheduled callbacks over real HTTP, on SQLite and (when
//! `ORS_TEST_POSTGRES_URL` is set) PostgreSQL: a create with a future
//! `_desired_time` is `SCHEDULED` with no session until its time less
//! `_request_execution_time_buffer`, then the scheduler submits it
//! (`QUEUED`, its session started with the user data as updated);
//! desired times are checked; `PUT` reschedules and updates user data
//! (`""` removes a key); a cancelled one never starts. And the schedule
//! is durable: after SIGKILL, what came due while the server was down is
//! submitted late, what is older than the recovery window ends
//! `SUBMIT_FAILED`, queued callbacks keep their sessions and paused ones
//! stay paused until their service resumes. In process, the service
//! goes by a manual clock the test moves by hours; the restart test,
//! across processes, waits two real seconds.

mod common;

use std::time::Duration;

use common::process::{ServeProcess, free_port};
use common::{Api, spawn_server};
use ors::app::Config;
use ors::gms::clock::Clock;
use ors::store::{SqlValue, Statement};
use serde_json::{Value, json};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn iso(ms: i64) -> String {
    ors::gms::records::iso_utc(ms)
}

fn config(store_url: String) -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            data_dir: common::scratch_dir("callback_schedule"),
            ..Default::default()
        },
        ..Config::default()
    };
    config.store.url = store_url;
    let services = &mut config.contact_centre.gms.services;
    let mut later = ors::gms::service::demo_service_options();
    later.insert("_request_execution_time_buffer".into(), json!(0));
    later.insert("_max_queued_callbacks_per_service".into(), json!(1));
    services.insert("later".into(), later);
    let mut marker = ors::gms::service::demo_service_options();
    marker.insert("_request_execution_time_buffer".into(), json!(0));
    services.insert("marker".into(), marker);
    config
}

const HOUR: i64 = 3_600_000;

async fn put(api: &Api, id: &str, body: &Value) -> common::Reply {
    api.call(
        axum::http::Method::PUT,
        &format!("/genesys/1/service/callback/later/{id}"),
        Some("application/json"),
        body.to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_callback_waits_for_its_time_and_can_be_moved_or_cancelled() {
    for db in common::stores::test_databases().await {
        let label = db.label;
        let clock = Clock::manual(now_ms());
        let mut config = config(db.url());
        config.contact_centre.clock = clock.clone();
        let server = spawn_server(config).await;
        let device = server.customer().with_gms_user("device-s1");
        let operator = server.api();
        let create = |number: &'static str, desired: String| {
            let device = device.clone();
            async move {
                device
                    .callback_create(
                        "later",
                        &[
                            ("_customer_number", number),
                            ("_desired_time", desired.as_str()),
                            ("usr_note", "first"),
                            ("account", "77"),
                        ],
                    )
                    .await
            }
        };

        // Far ahead: SCHEDULED, confirmed, no session.
        let desired = iso(clock.now_ms() + 2 * 86_400_000);
        let r = create("6502388801", desired.clone()).await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        assert_eq!(r.body["_action"], "ConfirmationDialog", "{}", r.body);
        assert_eq!(r.body["_callback_state"], "SCHEDULED", "{}", r.body);
        let far = r.body["_id"].as_str().expect("_id").to_string();
        let rec = operator.callback_record(&far).await;
        assert_eq!(rec["_callback_state"], "SCHEDULED", "{label}: {rec}");
        assert_eq!(rec["_desired_time"], desired, "{label}");
        assert!(rec.get("_ors_session_id").is_none(), "{label}: {rec}");
        // A second scheduled one: the queued limit (1) is for QUEUED ones.
        let r = create("6502388802", iso(clock.now_ms() + 3 * 86_400_000)).await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        let marks = operator
            .get("/genesys/1/admin/callback/watermarks?service_name=later")
            .await;
        assert_eq!(marks.body["total"], 0, "{label}: {}", marks.body);

        // Desired times that are refused.
        for bad in [
            "tomorrow".to_string(),
            iso(clock.now_ms() - 3_600_000),
            iso(clock.now_ms() + 60 * 86_400_000),
        ] {
            let r = create("6502388803", bad.clone()).await;
            assert_eq!(r.status, 400, "{label}: {bad}: {}", r.body);
            assert!(r.body["exception"].is_string(), "{}", r.body);
        }

        // User data: changed, added, removed ("").
        let r = put(
            &device,
            &far,
            &json!({"usr_note": "second", "account": "", "_customer_number": "6502388801"}),
        )
        .await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        assert_eq!(r.body["usr_note"], "second", "{}", r.body);
        assert!(r.body.get("account").is_none(), "{}", r.body);
        let r = put(&device, &far, &json!({"_new_desired_time": "soon"})).await;
        assert_eq!(r.status, 400, "{label}: {}", r.body);
        // A key an update cannot change, and the wrong field for a new
        // time, are refused; the current time sent back is fine.
        let r = put(&device, &far, &json!({"_ttl": 60})).await;
        assert_eq!(r.status, 400, "{label}: {}", r.body);
        let r = put(
            &device,
            &far,
            &json!({"_desired_time": iso(clock.now_ms() + 5 * 86_400_000)}),
        )
        .await;
        assert_eq!(r.status, 400, "{label}: {}", r.body);
        assert!(
            r.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("_new_desired_time")
        );
        let r = put(
            &device,
            &far,
            &json!({"_desired_time": desired, "usr_note": "second"}),
        )
        .await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        // Another device cannot touch it.
        let other = server.customer().with_gms_user("device-s2");
        assert_eq!(
            put(&other, &far, &json!({"usr_note": "x"})).await.status,
            404
        );

        // Moved to two hours from now: two hours later (on the service's
        // clock) the scheduler submits it, and its session starts with
        // the user data as updated.
        let soon = iso(clock.now_ms() + 2 * HOUR);
        let r = put(&device, &far, &json!({"_new_desired_time": soon})).await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        assert_eq!(r.body["_desired_time"], soon, "{label}");
        clock.advance(Duration::from_secs(3_600));
        let rec = operator.callback_record(&far).await;
        assert_eq!(
            rec["_callback_state"], "SCHEDULED",
            "{label}: an hour early: {rec}"
        );
        clock.advance(Duration::from_secs(3_600));
        let rec = operator.wait_callback_state(&far, "QUEUED").await;
        let session = rec["_ors_session_id"]
            .as_str()
            .expect("a session")
            .to_string();
        let data = operator.query_ok(&session).await;
        let user_data = data
            .pointer("/data/_data/_user_data")
            .cloned()
            .unwrap_or_default();
        assert_eq!(user_data["usr_note"], "second", "{label}: {data}");
        assert!(user_data.get("account").is_none(), "{label}: {user_data}");
        // Queued: moved to tomorrow, it leaves its session and is
        // scheduled again.
        let r = put(
            &device,
            &far,
            &json!({"_new_desired_time": iso(clock.now_ms() + 86_400_000)}),
        )
        .await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        let rec = operator.callback_record(&far).await;
        assert_eq!(rec["_callback_state"], "SCHEDULED", "{label}: {rec}");
        assert!(rec.get("_ors_session_id").is_none(), "{label}: {rec}");
        let view = operator.query(&session).await;
        assert!(
            view.status == 404 || view.body["status"] != "running",
            "{label}: the old session runs on: {}",
            view.body
        );
        // Its time brought back to now: a new session starts.
        let r = put(
            &device,
            &far,
            &json!({"_new_desired_time": iso(clock.now_ms())}),
        )
        .await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        let rec = operator.wait_callback_state(&far, "QUEUED").await;
        let again = rec["_ors_session_id"].as_str().expect("a session");
        assert_ne!(again, session, "{label}");
        assert_eq!(
            operator.query_ok(again).await["status"],
            "running",
            "{label}"
        );

        // Cancelled before its time: it never starts. And one coming due
        // while the service's queue is full (1, the rescheduled one) waits
        // SCHEDULED instead of overshooting the limit. A callback of
        // another service due a second after them shows when the
        // scheduler has been through them.
        let r = create("6502388804", iso(clock.now_ms() + HOUR)).await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        let cancelled = r.body["_id"].as_str().expect("_id").to_string();
        let r = create("6502388805", iso(clock.now_ms() + HOUR)).await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        let waiting = r.body["_id"].as_str().expect("_id").to_string();
        let r = device
            .callback_create(
                "marker",
                &[
                    ("_customer_number", "6502388806"),
                    ("_desired_time", &iso(clock.now_ms() + HOUR + 1_000)),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        let marker = r.body["_id"].as_str().expect("_id").to_string();
        let r = device.callback_cancel("later", &cancelled).await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        clock.advance(Duration::from_secs(3_601));
        operator.wait_callback_state(&marker, "QUEUED").await;
        let rec = operator.callback_record(&waiting).await;
        assert_eq!(rec["_callback_state"], "SCHEDULED", "{label}: {rec}");
        let marks = operator
            .get("/genesys/1/admin/callback/watermarks?service_name=later")
            .await;
        assert_eq!(marks.body["total"], 1, "{label}: {}", marks.body);
        let rec = operator.callback_record(&cancelled).await;
        assert_eq!(rec["_callback_state"], "COMPLETED", "{label}: {rec}");
        assert_eq!(rec["_callback_reason"], "CANCELLED", "{label}: {rec}");
        assert!(rec.get("_ors_session_id").is_none(), "{label}: {rec}");
        // Its queue freed, the waiting one goes once the scheduler looks
        // again (30 s later).
        let r = device.callback_cancel("later", &far).await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        clock.advance(Duration::from_secs(31));
        operator.wait_callback_state(&waiting, "QUEUED").await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_survives_sigkill_and_late_ones_are_submitted_or_failed() {
    let data_dir = common::scratch_dir("schedule-restart");
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = data_dir.join("ors.toml");
    std::fs::write(
        &config,
        "[callback]\n_request_execution_time_buffer = 0\n\
         [gms.services.chat-immediate]\n_target = \"Chat_Agents@StatServer.GA\"\n\
         _urs_virtual_queue = \"VQ_Chat_Immediate\"\n\
         [gms.services.held]\n_target = \"Chat_Agents@StatServer.GA\"\n\
         _urs_virtual_queue = \"VQ_Held\"\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let port = free_port();
    let args = ["--config", config.as_str()];
    let server = ServeProcess::start(port, &data_dir, &args).await;
    let device = server.api().with_gms_user("device-r1");
    let operator = server.api();
    let create = |desired: String| {
        let device = device.clone();
        async move {
            let r = device
                .callback_create(
                    "chat-immediate",
                    &[
                        ("_customer_number", "6502388901"),
                        ("_desired_time", desired.as_str()),
                    ],
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.body["_id"].as_str().expect("_id").to_string()
        }
    };
    let due_while_down = create(iso(now_ms() + 1_500)).await;
    let far = create(iso(now_ms() + 86_400_000)).await;
    // A queued callback, and one paused with its service.
    let queued = device
        .callback_create("chat-immediate", &[("_customer_number", "6502388903")])
        .await;
    let queued = queued.body["_id"].as_str().expect("_id").to_string();
    let paused = device
        .callback_create("held", &[("_customer_number", "6502388904")])
        .await;
    let paused = paused.body["_id"].as_str().expect("_id").to_string();
    let r = operator
        .json(
            "/genesys/1/admin/callback/pause",
            &json!({"service": "held", "paused": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        operator.callback_record(&paused).await["_callback_state"],
        "PAUSED"
    );
    drop(server); // SIGKILL
    // One the scheduler missed by two days (stored as an older server
    // would have left it).
    let db = data_dir.join("ors.db");
    let store = ors::store::open(
        &ors::store::StoreLocation::Sqlite {
            path: db.clone(),
            full_sync: false,
        },
        1,
        ors::gms::records::MIGRATIONS,
    )
    .await
    .expect("the store opens")
    .expect("a store");
    let old = "111-00000000-0000-0000-0000-000000000001";
    let desired = now_ms() - 2 * 86_400_000;
    let stored = json!({"_id": old, "_service_name": "chat-immediate", "_callback_state": "SCHEDULED",
        "_customer_number": "6502388902", "_desired_time": iso(desired)});
    for statement in [
        Statement::new(
            "INSERT INTO ors_callbacks (id, service, customer_number, state, session_id, created_at, \
             updated_at, expires_at, record, gms_user) VALUES ($1, 'chat-immediate', '6502388902', \
             'SCHEDULED', 'session-of-old', $2, $2, $3, $4, 'device-r1')",
            vec![
                SqlValue::Text(old.into()),
                SqlValue::Int(desired),
                SqlValue::Int(now_ms() + 86_400_000),
                SqlValue::Text(stored.to_string()),
            ],
        ),
        Statement::new(
            "INSERT INTO ors_callback_schedule (id, due_at, start) VALUES ($1, $2, $3)",
            vec![
                SqlValue::Text(old.into()),
                SqlValue::Int(desired),
                SqlValue::Text(json!({"src": "unused.scxml", "params": {}}).to_string()),
            ],
        ),
    ] {
        assert_eq!(store.execute(&statement).await.expect("insert"), 1);
    }
    drop(store);
    tokio::time::sleep(Duration::from_millis(2_000)).await;

    let _server = ServeProcess::start(port, &data_dir, &args).await;
    let rec = operator
        .wait_callback_state(&due_while_down, "QUEUED")
        .await;
    let session = rec["_ors_session_id"].as_str().expect("session");
    assert_eq!(
        operator.query_ok(session).await["status"],
        "running",
        "{rec}"
    );
    let rec = operator.wait_callback_state(old, "COMPLETED").await;
    assert_eq!(rec["_callback_reason"], "SUBMIT_FAILED", "{rec}");
    let rec = operator.callback_record(&far).await;
    assert_eq!(rec["_callback_state"], "SCHEDULED", "{rec}");
    let rec = operator.callback_record(&queued).await;
    assert_eq!(rec["_callback_state"], "QUEUED", "{rec}");
    let session = rec["_ors_session_id"].as_str().expect("session");
    assert_eq!(
        operator.query_ok(session).await["status"],
        "running",
        "{rec}"
    );
    // Still paused, and it resumes.
    let r = operator.get("/genesys/1/admin/callback/pause").await;
    assert_eq!(r.body["paused"], json!(["held"]), "{}", r.body);
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
    assert_eq!(
        operator.callback_record(&paused).await["_callback_state"],
        "QUEUED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_offers_the_free_slots_of_business_hours() {
    let dir = common::scratch_dir("availability");
    let mut config = config(format!("sqlite://{}", dir.join("ors.db").display()));
    let mut hours = ors::gms::service::demo_service_options();
    hours.insert("_business_hours".into(), json!("daily 09:00-09:30"));
    hours.insert("_business_hours_time_zone".into(), json!("Europe/Paris"));
    hours.insert("_request_time_bucket".into(), json!(10));
    hours.insert("_max_request_by_time_bucket".into(), json!(2));
    config
        .contact_centre
        .gms
        .services
        .insert("hours".into(), hours);
    let server = spawn_server(config).await;
    let device = server.customer().with_gms_user("device-av");
    // Tomorrow, 08:00-09:00 UTC: 09:00-10:00 in Paris in winter.
    let day = (now_ms() / 86_400_000 + 1) * 86_400_000;
    let at = |minutes: i64| iso(day + minutes * 60_000);
    let slots = |query: String| {
        let device = device.clone();
        async move {
            device
                .get(&format!(
                    "/genesys/1/service/callback/hours/availability?{query}"
                ))
                .await
        }
    };
    let window = format!("start={}&end={}", at(8 * 60), at(9 * 60));
    let r = slots(window.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Paris winter time is UTC+1; in summer this window would be 10:00 local.
    let offset = if r.body.as_object().is_some_and(|m| m.is_empty()) {
        60
    } else {
        0
    };
    let (first, second, third) = (
        at(8 * 60 - offset),
        at(8 * 60 + 10 - offset),
        at(8 * 60 + 20 - offset),
    );
    let window = format!("start={}&end={}", at(8 * 60 - offset), at(9 * 60 - offset));
    let r = slots(window.clone()).await;
    assert_eq!(
        r.body,
        json!({first.clone(): 2, second.clone(): 2, third.clone(): 2}),
        "{}",
        r.body
    );
    // Two callbacks desired in the second slot fill it.
    for number in ["6502385001", "6502385002"] {
        let r = device
            .callback_create(
                "hours",
                &[
                    ("_customer_number", number),
                    ("_desired_time", second.as_str()),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = slots(window.clone()).await;
    assert_eq!(
        r.body,
        json!({first.clone(): 2, third.clone(): 2}),
        "{}",
        r.body
    );
    let r = slots(format!("{window}&max-time-slots=1")).await;
    assert_eq!(r.body, json!({first.clone(): 2}), "{}", r.body);
    // Creates are held to the same slots: a full one and a closed hour
    // are refused.
    let create = |number: &'static str, desired: String| {
        let device = device.clone();
        async move {
            device
                .callback_create(
                    "hours",
                    &[
                        ("_customer_number", number),
                        ("_desired_time", desired.as_str()),
                    ],
                )
                .await
        }
    };
    let r = create("6502385003", second.clone()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is full"),
        "{}",
        r.body
    );
    let r = create("6502385004", at(12 * 60)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("outside the business hours"),
        "{}",
        r.body
    );
    // Three creates racing for the first slot's two places: two get them.
    let racing = futures_util::future::join_all(
        ["6502385011", "6502385012", "6502385013"]
            .into_iter()
            .map(|n| create(n, first.clone())),
    )
    .await;
    let statuses: Vec<u16> = racing.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        1,
        "{statuses:?}"
    );
    // A reschedule moves its place: into the third slot, out of the second.
    let moved = device
        .callback_query("hours", "_customer_number=6502385001")
        .await;
    let moved = moved.body[0]["_id"].as_str().expect("_id").to_string();
    let r = device
        .call(
            axum::http::Method::PUT,
            &format!("/genesys/1/service/callback/hours/{moved}"),
            Some("application/json"),
            json!({"_new_desired_time": third}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = slots(window.clone()).await;
    assert_eq!(
        r.body,
        json!({second.clone(): 1, third.clone(): 1}),
        "{}",
        r.body
    );
    for bad in [
        "number-of-days=0".to_string(),
        "start=soon".to_string(),
        format!("start={}&end={}", at(60), at(0)),
        "max-time-slots=100000".to_string(),
    ] {
        let r = slots(bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    let r = device
        .get("/genesys/1/service/callback/nowhere/availability")
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    server.stop().await;
}
