//! The callback lifecycle's queries and the admin API over real HTTP, on
//! SQLite and (when `ORS_TEST_POSTGRES_URL` is set) PostgreSQL, with the
//! request shapes public GMS client code and functional tests send: GMS's
//! state names (a cancel is `COMPLETED` with `_callback_reason`), queries
//! by properties with `!` and `operand=OR`, the keys listed records carry,
//! error bodies with GMS's `exception`, and `/genesys/1/admin/callback/`
//! `queues`, `watermarks`, `cancel` and `reportcancelled`.

mod common;

use common::{Api, TestServer, spawn_server};
use ors::app::Config;
use serde_json::{Value, json};

const DEVICE_A: &str = "device-a-41c9";
const DEVICE_B: &str = "device-b-77e0";

fn config(store_url: String) -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            data_dir: common::scratch_dir("callback_admin"),
            ..Default::default()
        },
        ..Config::default()
    };
    config.store.url = store_url;
    let mut billing = ors::gms::service::demo_service_options();
    billing.insert("_customer_lookup_keys".into(), json!("account"));
    config
        .contact_centre
        .gms
        .services
        .insert("billing".into(), billing);
    config
}

async fn create(device: &Api, service: &str, pairs: &[(&str, &str)]) -> String {
    let r = device.callback_create(service, pairs).await;
    assert_eq!(r.status, 200, "create on {service}: {}", r.body);
    r.body["_id"].as_str().expect("_id").to_string()
}

fn ids(reply: &Value) -> Vec<String> {
    let mut ids: Vec<String> = reply
        .as_array()
        .unwrap_or_else(|| panic!("a list: {reply}"))
        .iter()
        .map(|r| r["_id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<&str>) -> Vec<String> {
    ids.sort();
    ids.into_iter().map(str::to_string).collect()
}

fn assert_gms_error(r: &common::Reply, status: u16, exception: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(r.body["message"].is_string(), "{}", r.body);
    assert!(r.body["error"].is_string(), "{}", r.body);
    assert_eq!(
        r.body["exception"],
        format!("com.genesyslab.gsg.services.callback.exceptions.{exception}"),
        "{}",
        r.body
    );
}

struct Setup {
    server: TestServer,
    a: Api,
    b: Api,
    admin: Api,
    /// Device A's callbacks on chat-immediate.
    a1: String,
    a2: String,
    /// Device B's on billing (account 77).
    b1: String,
}

async fn setup(store_url: String) -> Setup {
    let server = spawn_server(config(store_url)).await;
    let a = server.customer().with_gms_user(DEVICE_A);
    let b = server.customer().with_gms_user(DEVICE_B);
    let admin = server.api();
    let a1 = create(
        &a,
        "chat-immediate",
        &[
            ("_customer_number", "6502388111"),
            ("usr_reason", "billing"),
        ],
    )
    .await;
    let a2 = create(
        &a,
        "chat-immediate",
        &[
            ("_customer_number", "+1 650 238 8222"),
            ("usr_reason", "sales"),
        ],
    )
    .await;
    let b1 = create(
        &b,
        "billing",
        &[
            ("_customer_number", "6502388333"),
            ("account", "77"),
            ("usr_note", "call after five"),
        ],
    )
    .await;
    Setup {
        server,
        a,
        b,
        admin,
        a1,
        a2,
        b1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_queries_and_error_bodies_are_gms_shaped() {
    for db in common::stores::test_databases().await {
        let label = db.label;
        let Setup {
            server,
            a,
            b,
            a1,
            a2,
            b1,
            ..
        } = setup(db.url()).await;

        // A customer's cancel completes the callback with reason CANCELLED.
        let r = a.callback_cancel("chat-immediate", &a1).await;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        assert_eq!(r.body["_callback_state"], "COMPLETED", "{label}");
        assert_eq!(r.body["_callback_reason"], "CANCELLED", "{label}");
        let again = a.callback_cancel("chat-immediate", &a1).await;
        assert_gms_error(&again, 409, "CallbackException");
        // No chat for a finished callback.
        let chat = a
            .chat_create(&a1, &[("firstName", "Ann"), ("lastName", "Lee")])
            .await;
        assert_eq!(chat.status, 409, "{label}: {}", chat.body);
        assert_eq!(chat.body["error"], "callback_finished", "{label}");

        // `!` negates; a device sees its own records only.
        let open = a
            .callback_query("chat-immediate", "_callback_state=!COMPLETED")
            .await;
        assert_eq!(open.status, 200, "{label}: {}", open.body);
        assert_eq!(ids(&open.body), std::slice::from_ref(&a2), "{label}");
        let done = a
            .callback_query("chat-immediate", "_callback_state=completed")
            .await;
        assert_eq!(ids(&done.body), std::slice::from_ref(&a1), "{label}");
        // The number matches by its digits; OR takes either condition.
        let either = a
            .callback_query(
                "chat-immediate",
                "_customer_number=6502388111&_customer_number=16502388222&operand=OR",
            )
            .await;
        assert_eq!(either.status, 200, "{label}: {}", either.body);
        assert_eq!(ids(&either.body), sorted(vec![&a1, &a2]), "{label}");
        let both = a
            .callback_query(
                "chat-immediate",
                "_customer_number=6502388111&_customer_number=16502388222",
            )
            .await;
        assert_eq!(ids(&both.body), Vec::<String>::new(), "{label}");
        // Any record key, including user data.
        let by_reason = a
            .callback_query("chat-immediate", "usr_reason=!billing")
            .await;
        assert_eq!(ids(&by_reason.body), std::slice::from_ref(&a2), "{label}");
        // Across services, a device still sees only its own.
        let mine = b.callback_query_any("_callback_state=!COMPLETED").await;
        assert_eq!(mine.status, 200, "{label}: {}", mine.body);
        assert_eq!(ids(&mine.body), std::slice::from_ref(&b1), "{label}");

        // Listed records carry GMS's keys and the service's lookup keys,
        // not the rest of the user data or the session id.
        let listed = &b.callback_query("billing", "account=77").await.body[0];
        for key in [
            "_id",
            "_desired_time",
            "_service_name",
            "_callback_state",
            "_expiration_time",
            "_customer_number",
            "_url",
            "account",
        ] {
            assert!(listed.get(key).is_some(), "{label}: {key} in {listed}");
        }
        assert!(listed.get("usr_note").is_none(), "{label}: {listed}");
        assert!(listed.get("_ors_session_id").is_none(), "{label}: {listed}");
        // The query by id returns the whole record.
        let whole = b.callback_query_any(&format!("_id={b1}")).await;
        assert_eq!(whole.body[0]["usr_note"], "call after five", "{label}");

        // Errors name GMS's exception.
        let bad_state = a
            .callback_query("chat-immediate", "_callback_state=LOST")
            .await;
        assert_gms_error(&bad_state, 400, "CallbackException");
        let bad_operand = a.callback_query("chat-immediate", "operand=XOR").await;
        assert_gms_error(&bad_operand, 400, "CallbackException");
        let no_service = a.callback_query("no-such-service", "").await;
        assert_gms_error(&no_service, 404, "CallbackExceptionNotFound");
        let not_mine = a.callback_get("billing", &b1).await;
        assert_gms_error(&not_mine, 404, "CallbackExceptionNotFound");
        let no_number = a.callback_create("chat-immediate", &[]).await;
        assert_gms_error(&no_number, 400, "CallbackException");
        let unnamed = a
            .callback_create(
                "chat-immediate",
                &[("_customer_number", "6502388119"), ("", "x")],
            )
            .await;
        assert_gms_error(&unnamed, 400, "CallbackException");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_lists_counts_cancels_and_reports() {
    for db in common::stores::test_databases().await {
        let label = db.label;
        let Setup {
            server,
            a,
            admin,
            a1,
            a2,
            b1,
            ..
        } = setup(db.url()).await;
        assert_eq!(a.callback_cancel("chat-immediate", &a1).await.status, 200);

        // Only an admin or operator may call it; the refusal is GMS-shaped.
        let refused = a.get("/genesys/1/admin/callback/watermarks").await;
        assert_eq!(refused.status, 401, "{label}: {}", refused.body);
        assert!(refused.body["exception"].is_string(), "{}", refused.body);

        let marks = admin.get("/genesys/1/admin/callback/watermarks").await;
        assert_eq!(marks.status, 200, "{label}: {}", marks.body);
        assert_eq!(
            marks.body,
            json!({"services": {"billing": 1, "chat-immediate": 1}, "total": 2}),
            "{label}"
        );
        let one = admin
            .get("/genesys/1/admin/callback/watermarks?service_name=billing")
            .await;
        assert_eq!(
            one.body,
            json!({"services": {"billing": 1}, "total": 1}),
            "{label}"
        );
        let unknown = admin
            .get("/genesys/1/admin/callback/watermarks?service_name=nope")
            .await;
        assert_gms_error(&unknown, 404, "CallbackExceptionNotFound");

        // Queues: every service by default, each with its list.
        let all = admin.get("/genesys/1/admin/callback/queues").await;
        assert_eq!(all.status, 200, "{label}: {}", all.body);
        assert_eq!(
            ids(&all.body["chat-immediate"]),
            sorted(vec![&a1, &a2]),
            "{label}"
        );
        assert_eq!(
            ids(&all.body["billing"]),
            std::slice::from_ref(&b1),
            "{label}"
        );
        let billing = admin
            .get("/genesys/1/admin/callback/queues?target=billing&states=QUEUED,SCHEDULED&max=5")
            .await;
        let record = &billing.body["billing"][0];
        assert_eq!(record["account"], "77", "{label}: {record}");
        assert!(record["_ors_session_id"].is_string(), "{label}: {record}");
        assert!(record.get("usr_note").is_none(), "{label}: {record}");
        assert_eq!(billing.body.as_object().map(|m| m.len()), Some(1));
        let queued = admin
            .get("/genesys/1/admin/callback/queues?target=chat-immediate&states=QUEUED")
            .await;
        assert_eq!(
            ids(&queued.body["chat-immediate"]),
            std::slice::from_ref(&a2),
            "{label}"
        );
        // A filter key from [callback] filter-keys, negated.
        let not_cancelled = admin
            .get("/genesys/1/admin/callback/queues?target=chat-immediate&_callback_reason=!CANCELLED")
            .await;
        assert_eq!(
            ids(&not_cancelled.body["chat-immediate"]),
            std::slice::from_ref(&a2),
            "{label}: {}",
            not_cancelled.body
        );
        // The window is on the desired time.
        let long_ago = admin
            .get(
                "/genesys/1/admin/callback/queues?start_time=2001-01-01T00:00:00.000Z\
                 &end_time=2001-01-02T00:00:00.000Z",
            )
            .await;
        assert_eq!(ids(&long_ago.body["billing"]), Vec::<String>::new());
        for (query, why) in [
            ("usr_note=x", "not a filter key"),
            ("states=LOST", "not a state"),
            ("start_time=yesterday", "not a time"),
            (
                "start_time=2026-01-02T00:00:00Z&end_time=2026-01-01T00:00:00Z",
                "an empty window",
            ),
            ("max=many", "not a number"),
        ] {
            let r = admin
                .get(&format!("/genesys/1/admin/callback/queues?{query}"))
                .await;
            assert_eq!(r.status, 400, "{label}: {why}: {}", r.body);
            assert!(r.body["exception"].is_string(), "{}", r.body);
        }
        let no_target = admin
            .get("/genesys/1/admin/callback/queues?target=nope")
            .await;
        assert_gms_error(&no_target, 404, "CallbackExceptionNotFound");
        // Repeated states add up; the list runs by desired time.
        let both = admin
            .get("/genesys/1/admin/callback/queues?target=chat-immediate&states=QUEUED&states=COMPLETED")
            .await;
        let listed = both.body["chat-immediate"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(listed.len(), 2, "{label}: {}", both.body);
        let desired: Vec<&str> = listed
            .iter()
            .filter_map(|r| r["_desired_time"].as_str())
            .collect();
        let mut in_order = desired.clone();
        in_order.sort();
        assert_eq!(desired, in_order, "{label}: earliest first");
        for query in [
            "max=0",
            "max=1&max=2",
            "start_time=2026-01-01T00:00:00Z&start_time=2026-01-02T00:00:00Z",
        ] {
            let r = admin
                .get(&format!("/genesys/1/admin/callback/queues?{query}"))
                .await;
            assert_eq!(r.status, 400, "{label}: {query}: {}", r.body);
        }

        // Cancel by the admin: each id's fate is reported.
        let cancel = admin
            .json(
                "/genesys/1/admin/callback/cancel",
                &json!({"reason": "CANCELLED_BY_ADMIN", "ids": [b1, a1, "no-such-id"]}),
            )
            .await;
        assert_eq!(cancel.status, 200, "{label}: {}", cancel.body);
        assert_eq!(cancel.body["cancelled"], json!([b1]), "{label}");
        assert_eq!(cancel.body["completed_already"], json!([a1]), "{label}");
        assert_eq!(cancel.body["not_found"], json!(["no-such-id"]), "{label}");
        let record = &admin.callback_query_any(&format!("_id={b1}")).await.body[0];
        assert_eq!(record["_callback_state"], "COMPLETED", "{label}");
        assert_eq!(record["_callback_reason"], "CANCELLED_BY_ADMIN", "{label}");
        let session = record["_ors_session_id"].as_str().expect("session id");
        let status = admin.query_ok(session).await;
        assert_eq!(status["status"], "terminated", "{label}: {status}");
        let marks = admin.get("/genesys/1/admin/callback/watermarks").await;
        assert_eq!(marks.body["total"], 1, "{label}: {}", marks.body);
        for body in [
            json!({"ids": []}),
            json!({"reason": "x"}),
            json!({"ids": "  "}),
            json!({"ids": [1, null]}),
            json!({"ids": [a2], "reason": "x".repeat(300)}),
        ] {
            let r = admin.json("/genesys/1/admin/callback/cancel", &body).await;
            assert_eq!(r.status, 400, "{label}: {body}: {}", r.body);
        }

        // The export of what the admin cancelled.
        let report = admin
            .json(
                "/genesys/1/admin/callback/reportcancelled",
                &json!({
                    "callback_reason": "CANCELLED_BY_ADMIN",
                    "exported_properties": ["_id", "_customer_number", "account"]
                }),
            )
            .await;
        assert_eq!(report.status, 200, "{label}: {}", report.body);
        assert!(report.content_type.starts_with("text/csv"), "{label}");
        let csv = report.body.as_str().expect("CSV text");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines,
            [
                "_id,_customer_number,account",
                &format!("{b1},6502388333,77")
            ],
            "{label}"
        );
        // Values that would run in a spreadsheet are exported inert; an id
        // named twice is cancelled once.
        let b2 = create(
            &server.customer().with_gms_user(DEVICE_B),
            "billing",
            &[("_customer_number", "6502388334"), ("account", "@risk")],
        )
        .await;
        let cancel = admin
            .json(
                "/genesys/1/admin/callback/cancel",
                &json!({"reason": "+1 day", "ids": [b2, b2]}),
            )
            .await;
        assert_eq!(
            cancel.body["cancelled"],
            json!([b2]),
            "{label}: {}",
            cancel.body
        );
        assert_eq!(cancel.body["completed_already"], json!([]), "{label}");
        let report = admin
            .json(
                "/genesys/1/admin/callback/reportcancelled",
                &json!({"callback_reason": "+1 day", "exported_properties": ["_id", "account", "_callback_reason"]}),
            )
            .await;
        let csv = report.body.as_str().expect("CSV text");
        assert_eq!(
            csv.lines().nth(1),
            Some(format!("{b2},'@risk,'+1 day").as_str()),
            "{label}: {csv}"
        );
        server.stop().await;
    }
}
