//! GMS's limits and throttles on Callback creates over real HTTP, on
//! SQLite and (when `ORS_TEST_POSTGRES_URL` is set) PostgreSQL: the queued
//! limit per service (0 refuses all; concurrent creates cannot overshoot),
//! the two rate windows, the same-parameter daily throttle, in-queue
//! checking and the phone-number checks, each refused as GMS refuses
//! (503 or 400 with its exception and wording). Time windows are tested
//! with records stored as if created earlier and with the service's
//! clock moved by the test, never by waiting.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Api, spawn_server};
use ors::app::Config;
use ors::gms::clock::Clock;
use ors::store::{SqlValue, Statement, Store};
use serde_json::{Map, Value, json};

const UNAVAILABLE: &str =
    "com.genesyslab.gsg.services.callback.exceptions.CallbackExceptionServiceUnavailable";
const NUMBER: &str = "com.genesyslab.gsg.services.callback.exceptions.CallbackExceptionNumber";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

fn service(pairs: &[(&str, Value)]) -> Map<String, Value> {
    let mut m = ors::gms::service::demo_service_options();
    for (k, v) in pairs {
        m.insert(k.to_string(), v.clone());
    }
    m
}

fn config(store_url: String) -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            data_dir: common::scratch_dir("callback_limits"),
            ..Default::default()
        },
        ..Config::default()
    };
    config.store.url = store_url;
    let limits = &mut config.contact_centre.gms.limits;
    limits.creates_per_minute = 100_000;
    limits.burst = 10_000;
    limits.max_active_per_number = 100;
    limits.max_active_per_device = 100;
    let services = &mut config.contact_centre.gms.services;
    services.insert(
        "capped".into(),
        service(&[("_max_queued_callbacks_per_service", json!(3))]),
    );
    services.insert(
        "closed".into(),
        service(&[("_max_queued_callbacks_per_service", json!("0"))]),
    );
    services.insert(
        "rated".into(),
        service(&[
            ("_throttle_callbacks_per_service_1", json!(3)),
            ("_throttle_ttl_1", json!(300)),
            ("_throttle_callbacks_per_service_2", json!(100)),
        ]),
    );
    services.insert(
        "hourly".into(),
        service(&[
            ("_throttle_callbacks_per_service_1", json!(100)),
            ("_throttle_callbacks_per_service_2", json!(4)),
            ("_throttle_ttl_2", json!(3600)),
        ]),
    );
    services.insert(
        "daily".into(),
        service(&[
            (
                "_throttle_request_parameters",
                json!("_customer_number, email"),
            ),
            ("_throttle_request_parameters_limit", json!(2)),
            ("_enable_in_queue_checking", json!("false")),
        ]),
    );
    services.insert(
        "strict".into(),
        service(&[("_enable_in_queue_checking", json!("strict"))]),
    );
    services.insert(
        "unchecked".into(),
        service(&[
            ("_disallow_premium_phone_numbers", json!(false)),
            ("_disallow_impossible_phone_numbers", json!("false")),
        ]),
    );
    services.insert(
        "german".into(),
        service(&[("_default_country", json!("DE"))]),
    );
    services.insert(
        "nowhere".into(),
        service(&[("_default_country", json!(""))]),
    );
    config
}

/// A callback record stored directly, as if created `ago_ms` earlier.
async fn stored_earlier(
    store: &Arc<dyn Store>,
    clock: &Clock,
    service: &str,
    number: &str,
    ago_ms: i64,
    extra: Value,
) {
    let created = clock.now_ms() - ago_ms;
    let id = format!("earlier-{}", common::stores::unique_name());
    let mut record = json!({"_id": id, "_service_name": service, "_callback_state": "COMPLETED",
        "_customer_number": number});
    if let (Some(r), Value::Object(extra)) = (record.as_object_mut(), extra) {
        r.extend(extra);
    }
    let insert = Statement::new(
        "INSERT INTO ors_callbacks (id, service, customer_number, state, session_id, created_at, \
         updated_at, expires_at, record, gms_user) \
         VALUES ($1, $2, $3, 'COMPLETED', '', $4, $4, $5, $6, '')",
        vec![
            SqlValue::Text(id),
            SqlValue::Text(service.into()),
            SqlValue::Text(number.into()),
            SqlValue::Int(created),
            SqlValue::Int(clock.now_ms() + 86_400_000),
            SqlValue::Text(record.to_string()),
        ],
    );
    assert_eq!(store.execute(&insert).await.expect("insert"), 1);
}

async fn create(api: &Api, service: &str, number: &str) -> common::Reply {
    api.callback_create(service, &[("_customer_number", number)])
        .await
}

fn assert_refused(r: &common::Reply, status: u16, exception: &str, message: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["exception"], exception, "{}", r.body);
    let text = r.body["message"].as_str().unwrap_or_default();
    assert!(text.contains(message), "expected '{message}' in {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_limits_and_rate_windows_hold_even_for_concurrent_creates() {
    for db in common::stores::test_databases().await {
        let label = db.label;
        let clock = Clock::manual(now_ms());
        let mut config = config(db.url());
        config.contact_centre.clock = clock.clone();
        let server = spawn_server(config).await;
        let store = db.open().await;
        let api = server.customer();

        // 0 refuses every create.
        let r = create(&api, "closed", "6502388001").await;
        assert_refused(
            &r,
            503,
            UNAVAILABLE,
            "Limit of queued callbacks for closed is reached.",
        );

        // Ten creates at once against a limit of three queued.
        let racing = (0..10).map(|i| {
            let api = api.clone();
            async move { create(&api, "capped", &format!("65023881{i:02}")).await }
        });
        let replies = futures_util::future::join_all(racing).await;
        let admitted: Vec<&common::Reply> = replies.iter().filter(|r| r.status == 200).collect();
        assert_eq!(admitted.len(), 3, "{label}: {replies:?}");
        for r in replies.iter().filter(|r| r.status != 200) {
            assert_refused(
                r,
                503,
                UNAVAILABLE,
                "Limit of queued callbacks for capped is reached.",
            );
        }
        // A cancel frees a place.
        let id = admitted[0].body["_id"].as_str().expect("_id");
        assert_eq!(api.callback_cancel("capped", id).await.status, 200);
        assert_eq!(
            create(&api, "capped", "6502388200").await.status,
            200,
            "{label}"
        );
        assert_eq!(
            create(&api, "capped", "6502388201").await.status,
            503,
            "{label}"
        );

        // Window 1 (3 per 300 s) does not count creates from 400 s ago...
        stored_earlier(&store, &clock, "rated", "6502388300", 400_000, json!({})).await;
        stored_earlier(&store, &clock, "rated", "6502388301", 400_000, json!({})).await;
        for i in 0..3 {
            let r = create(&api, "rated", &format!("650238831{i}")).await;
            assert_eq!(r.status, 200, "{label}: {}", r.body);
        }
        let r = create(&api, "rated", "6502388320").await;
        assert_refused(&r, 503, UNAVAILABLE, "is reached for interval 300s.");
        // Five minutes later (by the service's clock, moved by the test)
        // the window has room again.
        clock.advance(Duration::from_secs(301));
        let r = create(&api, "rated", "6502388321").await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        // ...and window 2 (4 per hour) does.
        stored_earlier(&store, &clock, "hourly", "6502388400", 400_000, json!({})).await;
        stored_earlier(&store, &clock, "hourly", "6502388401", 400_000, json!({})).await;
        stored_earlier(&store, &clock, "hourly", "6502388402", 7_200_000, json!({})).await;
        for i in 0..2 {
            let r = create(&api, "hourly", &format!("650238841{i}")).await;
            assert_eq!(r.status, 200, "{label}: {}", r.body);
        }
        let r = create(&api, "hourly", "6502388420").await;
        assert_refused(&r, 503, UNAVAILABLE, "is reached for interval 3600s.");
        // Other services are not affected.
        assert_eq!(create(&api, "strict", "6502388500").await.status, 200);
        drop(store);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_customer_is_throttled_per_day_and_per_queue() {
    for db in common::stores::test_databases().await {
        let label = db.label;
        let clock = Clock::manual(now_ms());
        let mut config = config(db.url());
        config.contact_centre.clock = clock.clone();
        let server = spawn_server(config).await;
        let store = db.open().await;
        let api = server.customer();

        // Two creates a day per number; yesterday's do not count. One
        // number however it is written.
        stored_earlier(
            &store,
            &clock,
            "daily",
            "6502388600",
            2 * 86_400_000,
            json!({}),
        )
        .await;
        assert_eq!(create(&api, "daily", "6502388600").await.status, 200);
        assert_eq!(create(&api, "daily", "+1 (650) 238-8600").await.status, 200);
        let r = create(&api, "daily", "1 650 238 8600").await;
        assert_refused(
            &r,
            503,
            UNAVAILABLE,
            "previous callbacks for this parameter were requested for more than 2 times today.",
        );
        assert_eq!(
            create(&api, "daily", "6502388601").await.status,
            200,
            "{label}"
        );
        // The next day (by the service's clock) the number may ask again.
        clock.advance(Duration::from_secs(86_400));
        let r = create(&api, "daily", "6502388600").await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        // Any listed parameter: here a user-data key.
        for number in ["6502388610", "6502388611"] {
            let r = api
                .callback_create(
                    "daily",
                    &[("_customer_number", number), ("email", "a@example.com")],
                )
                .await;
            assert_eq!(r.status, 200, "{label}: {}", r.body);
        }
        let r = api
            .callback_create(
                "daily",
                &[
                    ("_customer_number", "6502388612"),
                    ("email", "a@example.com"),
                ],
            )
            .await;
        assert_refused(&r, 503, UNAVAILABLE, "email=a@example.com");
        // The value may come in a header of the parameter's name.
        let by_header = server.customer().with_header("email", "b@example.com");
        for number in ["6502388620", "6502388621"] {
            let r = by_header
                .callback_create(
                    "daily",
                    &[("_customer_number", number), ("email", "other@example.com")],
                )
                .await;
            assert_eq!(r.status, 200, "{label}: {}", r.body);
        }
        let r = by_header
            .callback_create("daily", &[("_customer_number", "6502388622")])
            .await;
        assert_refused(&r, 503, UNAVAILABLE, "email=b@example.com");

        // In-queue checking: strict refuses a second unfinished callback,
        // the number written another way too.
        assert_eq!(create(&api, "strict", "6502388700").await.status, 200);
        let r = create(&api, "strict", "+16502388700").await;
        assert_refused(&r, 503, UNAVAILABLE, "_enable_in_queue_checking");
        drop(store);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_numbers_are_checked_for_the_service_country() {
    let dir = common::scratch_dir("callback_numbers");
    let server = spawn_server(config(format!("sqlite://{}", dir.join("ors.db").display()))).await;
    let api = server.customer();
    // The defaults refuse premium and impossible numbers (country US).
    let r = create(&api, "chat-immediate", "+1 900 555 1234").await;
    assert_refused(&r, 400, NUMBER, "because it's a premium number");
    let r = create(&api, "chat-immediate", "111").await;
    assert_refused(
        &r,
        400,
        NUMBER,
        "Customer Number [111] is disallowed, because it is invalid",
    );
    let r = create(&api, "chat-immediate", "650 238 8511 ext; drop").await;
    assert_refused(&r, 400, NUMBER, "is invalid");
    assert_eq!(
        create(&api, "chat-immediate", "(650) 238-8511")
            .await
            .status,
        200
    );
    // Off: anything with digits goes.
    assert_eq!(
        create(&api, "unchecked", "+1 900 555 1234").await.status,
        200
    );
    assert_eq!(create(&api, "unchecked", "111").await.status, 200);
    // Another country reads national numbers its own way.
    assert_eq!(create(&api, "german", "030 1234567").await.status, 200);
    let r = create(&api, "german", "0900 5123456").await;
    assert_refused(&r, 400, NUMBER, "premium");
    // Checks on and no country: refused, saying so.
    let r = create(&api, "nowhere", "6502388511").await;
    assert_refused(&r, 400, NUMBER, "_default_country is not configured");
    server.stop().await;
}
