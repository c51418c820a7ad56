//! The GMS endpoints as an attacker with nothing but those endpoints would
//! use them, over real HTTP, each attack now refused; in the same tests
//! the legitimate device's flow still works. The attacks are the ones
//! issue 15 measured on a default server: listing every customer's
//! records, reading, writing, taking over and cancelling another
//! customer's chat and callback with its service id, reading secrets and
//! sessions through the operator API, setting `_` options the service does
//! not offer, exhausting memory with big fields and long transcripts, and
//! flooding creates; plus the roles and the GMS-style Basic
//! authentication that separate devices, operators and the simulator's
//! administrators.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Api, eventually, spawn_server};
use ors::app::Config;
use serde_json::{Map, Value, json};

const VICTIM: &str = "victim-device-7f3a9c";
const ATTACKER: &str = "attacker-device-01b2";

fn config() -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            data_dir: common::scratch_dir("isolation"),
            ..Default::default()
        },
        ..Config::default()
    };
    config.contact_centre.backends.simulator.accept_delay_ms = 20;
    // Every client here is 127.0.0.1; the rate test sets its own rates.
    config.contact_centre.gms.limits.creates_per_minute = 6000;
    config.contact_centre.gms.limits.chat_sends_per_minute = 6000;
    config.contact_centre.gms.limits.burst = 1000;
    config
}

fn options(pairs: &[(&str, Value)]) -> Map<String, Value> {
    let mut m = ors::gms::service::demo_service_options();
    for (k, v) in pairs {
        m.insert(k.to_string(), v.clone());
    }
    m
}

fn entries(reply: &Value) -> Vec<Value> {
    reply["transcriptToShow"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn texts(reply: &Value) -> Vec<String> {
    entries(reply)
        .iter()
        .filter(|e| e[0] == "Message.Text")
        .filter_map(|e| e[2].as_str().map(str::to_string))
        .collect()
}

fn assert_error(r: &common::Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["error"], code, "{}", r.body);
}

async fn create(device: &Api, service: &str, number: &str) -> String {
    let r = device
        .callback_create(
            service,
            &[("_customer_number", number), ("usr_reason", "billing")],
        )
        .await;
    assert_eq!(r.status, 200, "create: {}", r.body);
    r.body["_id"].as_str().expect("_id").to_string()
}

/// Refreshes as `device` until the agent has joined.
async fn until_agent_joined(device: &Api, id: &str) {
    eventually(
        "the agent never joined",
        Duration::from_secs(15),
        Duration::from_millis(25),
        || async move {
            let r = device.chat_refresh(id, "1").await;
            let joined = entries(&r.body)
                .iter()
                .any(|e| e[0] == "Notice.Joined" && e[4] == "AGENT");
            if joined { Ok(()) } else { Err(r.body) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_device_cannot_list_read_write_take_over_or_cancel_a_callback() {
    let server = spawn_server(config()).await;
    let operator = server.api();
    let victim = server.customer().with_gms_user(VICTIM);
    let attacker = server.customer().with_gms_user(ATTACKER);
    let anonymous = server.customer();

    let id = create(&victim, "chat-immediate", "6502388511").await;

    // Listing across services shows a device its own records only, and
    // every customer's to an operator.
    let r = attacker.get("/genesys/1/service/callback").await;
    assert_eq!((r.status, r.body.clone()), (200, json!([])));
    let r = attacker
        .get("/genesys/1/service/callback?_callback_state=!COMPLETED")
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!([])));
    assert_error(
        &anonymous.get("/genesys/1/service/callback").await,
        400,
        "gms_user_required",
    );
    let r = victim.get("/genesys/1/service/callback").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body.as_array().map(Vec::len), Some(1), "{}", r.body);
    let r = operator.get("/genesys/1/service/callback").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let listed = r.body.as_array().expect("a list").clone();
    let mine = listed.iter().find(|x| x["_id"] == id).expect("listed");
    assert!(mine["_ors_session_id"].is_string(), "{mine}");

    // A property query shows a device its own records only.
    let q = "_customer_number=6502388511";
    let r = attacker.callback_query("chat-immediate", q).await;
    assert_eq!((r.status, r.body.clone()), (200, json!([])));
    assert_error(
        &anonymous.callback_query("chat-immediate", q).await,
        400,
        "gms_user_required",
    );
    let r = victim.callback_query("chat-immediate", q).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body[0]["_id"], id);
    assert!(
        r.body[0].get("_ors_session_id").is_none(),
        "a device never sees the ORS session: {}",
        r.body
    );

    // By id: 404 for another device, the same as for no such id.
    for r in [
        attacker.callback_query_any(&format!("_id={id}")).await,
        attacker.callback_get("chat-immediate", &id).await,
        anonymous.callback_get("chat-immediate", &id).await,
        victim
            .callback_get("chat-immediate", "1-00000000-0000-0000-0000-000000000000")
            .await,
    ] {
        assert_error(&r, 404, "callback_not_found");
    }
    let r = victim.callback_get("chat-immediate", &id).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["usr_reason"], "billing");

    // The owner starts the chat and gets its secret.
    let r = victim
        .chat_create(&id, &[("firstName", "Bob"), ("notify_by", "comet")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let secure_key = r.body["secureKey"].as_str().expect("secureKey").to_string();
    assert_eq!(secure_key.len(), 32);

    // Taking the chat over by creating it again: 404 for others, 409 for
    // the owner.
    assert_error(
        &attacker.chat_create(&id, &[("firstName", "Eve")]).await,
        404,
        "service_not_found",
    );
    assert_error(
        &anonymous.chat_create(&id, &[("firstName", "Eve")]).await,
        404,
        "service_not_found",
    );
    assert_error(
        &victim.chat_create(&id, &[("firstName", "Bob")]).await,
        409,
        "chat_exists",
    );

    // Reading and writing the transcript as another device.
    assert_error(
        &attacker.chat_refresh(&id, "1").await,
        404,
        "chat_not_found",
    );
    assert_error(
        &attacker.chat_send(&id, "I am Bob, send me the card").await,
        404,
        "chat_not_found",
    );
    assert_error(
        &anonymous.chat_send(&id, "hello from nowhere").await,
        404,
        "chat_not_found",
    );
    assert_error(
        &attacker.chat_operation(&id, "disconnect", &[]).await,
        404,
        "chat_not_found",
    );
    // The owner's device with a wrong secret is refused the same way.
    assert_error(
        &victim
            .chat_operation(
                &id,
                "refresh",
                &[("secureKey", "0000"), ("transcriptPosition", "1")],
            )
            .await,
        404,
        "chat_not_found",
    );

    // The legitimate flow goes on: the agent joins, messages both ways.
    until_agent_joined(&victim, &id).await;
    let r = victim
        .chat_operation(
            &id,
            "send",
            &[("message", "my bill is wrong"), ("secureKey", &secure_key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let all = victim.chat_refresh(&id, "1").await;
    assert_eq!(all.status, 200, "{}", all.body);
    let said = texts(&all.body);
    assert!(said.contains(&"my bill is wrong".to_string()), "{said:?}");
    assert!(
        !said
            .iter()
            .any(|t| t.contains("send me the card") || t.contains("nowhere")),
        "another device's message reached the chat: {said:?}"
    );

    // The session behind it is the operator's business.
    let record = operator.callback_query_any(&format!("_id={id}")).await.body[0].clone();
    let session = record["_ors_session_id"].as_str().expect("session id");
    assert_error(&attacker.query(session).await, 401, "unauthorized");
    assert_eq!(operator.query(session).await.status, 200);
    assert_error(&attacker.get("/scxml/sessions").await, 401, "unauthorized");
    assert_error(&attacker.get("/sim/agents").await, 401, "unauthorized");
    assert_eq!(operator.get("/sim/agents").await.status, 200);
    assert_eq!(anonymous.get("/health").await.status, 200);

    // Cancelling another device's callback.
    let other = create(&victim, "chat-immediate", "6502388599").await;
    assert_error(
        &attacker.callback_cancel("chat-immediate", &other).await,
        404,
        "callback_not_found",
    );
    let r = victim.callback_get("chat-immediate", &other).await;
    assert_eq!(r.body["_callback_state"], "QUEUED", "{}", r.body);
    let r = victim.callback_cancel("chat-immediate", &other).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["_callback_state"], "COMPLETED", "{}", r.body);
    assert_eq!(r.body["_callback_reason"], "CANCELLED", "{}", r.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sets_only_the_options_its_service_lets_it_and_in_range() {
    let mut config = config();
    config.contact_centre.gms.services.insert(
        "flex".into(),
        options(&[(
            "_overwritable_options",
            json!("_ttl, _urs_vq_priority, _service"),
        )]),
    );
    let server = spawn_server(config).await;
    let device = server.customer().with_gms_user(VICTIM);
    let numbers = std::sync::atomic::AtomicU32::new(0);
    let attempt = |service: &'static str, option: &'static str, value: &'static str| {
        let device = device.clone();
        let n = numbers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let number = format!("65023885{n:02}");
            device
                .callback_create(service, &[("_customer_number", &number), (option, value)])
                .await
        }
    };
    for (option, value) in [
        ("_urs_queued_ttl", "-1"),
        ("_urs_vq_priority", "999999"),
        ("_target", "Billing_VIPs@StatServer.GA"),
        ("_ttl", "2000000000"),
        ("_service", "file:///etc/passwd"),
        ("_chat_endpoint", "Environment:vip"),
    ] {
        let r = attempt("chat-immediate", option, value).await;
        assert_error(&r, 400, "option_not_overwritable");
        assert!(
            r.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(option),
            "{}",
            r.body
        );
    }
    // A stock client repeats its scenario's options: the same value is
    // no change.
    let r = attempt("chat-immediate", "_media_type", "chat").await;
    assert_eq!(r.status, 200, "{}", r.body);

    // An overwritable option is still range-checked.
    for value in ["-5", "0", "2000000000", "soon"] {
        let r = attempt("flex", "_ttl", value).await;
        assert_error(&r, 400, "bad_parameter");
        assert!(
            r.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("_ttl"),
            "{}",
            r.body
        );
    }
    // `_service` stays fixed even when a service lists it.
    let r = attempt("flex", "_service", "http://elsewhere.example/evil.scxml").await;
    assert_error(&r, 400, "option_not_overwritable");
    let r = attempt("flex", "_urs_vq_priority", "50").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = attempt("flex", "_ttl", "3600").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["_id"].as_str().expect("_id").to_string();
    let record = device.callback_get("flex", &id).await.body;
    assert_ne!(record["_expiration_time"], Value::Null, "{record}");

    // Configuration is checked by the same ranges.
    let endless = options(&[("_urs_queued_ttl", json!(-1))]);
    let e = ors::gms::service::Service::new("bad", &endless).unwrap_err();
    assert!(e.to_string().contains("_urs_queued_ttl"), "{e}");
    let decades = options(&[("_ttl", json!(1_000_000_000))]);
    assert!(ors::gms::service::Service::new("bad", &decades).is_err());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_customer_controls_is_capped() {
    let mut config = config();
    {
        let limits = &mut config.contact_centre.gms.limits;
        limits.max_message_bytes = 1024;
        limits.max_user_data_bytes = 2048;
        limits.max_nickname_chars = 32;
        limits.transcript_page_entries = 5;
        limits.max_messages_per_chat = 14;
        limits.max_listed_records = 2;
        limits.max_active_per_device = 3;
        limits.chat_sends_per_minute = 6000;
        limits.creates_per_minute = 6000;
    }
    let server = spawn_server(config).await;
    let device = server.customer().with_gms_user(VICTIM);

    // Big fields.
    let big = "x".repeat(4096);
    let r = device
        .callback_create(
            "chat-immediate",
            &[("_customer_number", "6502388511"), ("usr_notes", &big)],
        )
        .await;
    assert_error(&r, 400, "too_large");
    let id = create(&device, "chat-immediate", "6502388511").await;
    let long_name = "N".repeat(200);
    assert_error(
        &device
            .chat_create(&id, &[("userDisplayName", &long_name)])
            .await,
        400,
        "too_large",
    );
    let r = device.chat_create(&id, &[("firstName", "Bob")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_error(
        &device.chat_send(&id, &"m".repeat(2048)).await,
        400,
        "too_large",
    );

    // The transcript comes in pages; the pages together are the whole.
    for n in 0..12 {
        let r = device.chat_send(&id, &format!("message {n}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let mut seen = Vec::new();
    let mut position = "1".to_string();
    for _ in 0..20 {
        let r = device.chat_refresh(&id, &position).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = entries(&r.body);
        assert!(page.len() <= 5, "a page of {}: {}", page.len(), r.body);
        if page.is_empty() {
            break;
        }
        seen.extend(texts(&r.body));
        position = r.body["transcriptPosition"].to_string();
    }
    for n in 0..12 {
        assert!(seen.contains(&format!("message {n}")), "{seen:?}");
    }
    // Typing notices are capped too (twice the messages).
    for n in 0..28 {
        let r = device.chat_typing(&id, n % 2 == 0).await;
        assert_eq!(r.status, 200, "typing {n}: {}", r.body);
    }
    assert_error(
        &device.chat_typing(&id, true).await,
        409,
        "too_many_messages",
    );
    // Messages per chat.
    let r = device.chat_send(&id, "one").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(device.chat_send(&id, "two").await.status, 200);
    assert_error(
        &device.chat_send(&id, "three").await,
        409,
        "too_many_messages",
    );

    // The first callback is done once its chat reached an agent.
    eventually(
        "the first callback never completed",
        Duration::from_secs(15),
        Duration::from_millis(25),
        || {
            let device = device.clone();
            let id = id.clone();
            async move {
                let r = device.callback_get("chat-immediate", &id).await;
                if r.body["_callback_state"] == "COMPLETED" {
                    Ok(())
                } else {
                    Err(r.body)
                }
            }
        },
    )
    .await;
    // Callbacks per customer number: GMS refuses the third in progress
    // (in-queue checking), as GMS refuses: 503, with its exception.
    create(&device, "chat-immediate", "6502388520").await;
    create(&device, "chat-immediate", "6502388520").await;
    let r = device
        .callback_create("chat-immediate", &[("_customer_number", "6502388520")])
        .await;
    assert_error(&r, 503, "callback_refused");
    assert!(
        r.body["exception"]
            .as_str()
            .is_some_and(|e| e.ends_with("CallbackExceptionServiceUnavailable")),
        "{}",
        r.body
    );
    // Per device: three in progress, the fourth waits.
    create(&device, "chat-immediate", "6502388521").await;
    let r = device
        .callback_create("chat-immediate", &[("_customer_number", "6502388522")])
        .await;
    assert_error(&r, 429, "too_many_callbacks");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);

    // Listings are bounded.
    let r = device.callback_query("chat-immediate", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body.as_array().map(Vec::len), Some(2), "{}", r.body);

    // The request's own `_` parameters are capped like user data.
    let anonymous = server.customer();
    let long = "A".repeat(2000);
    let r = anonymous
        .callback_create(
            "chat-immediate",
            &[
                ("_customer_number", "6502388540"),
                ("_device_notification_id", &long),
            ],
        )
        .await;
    assert_error(&r, 400, "too_large");
    // One number however it is written; and it must be one.
    for spelling in ["+1 650 238 8541", "16502388541"] {
        let r = anonymous
            .callback_create("chat-immediate", &[("_customer_number", spelling)])
            .await;
        assert_eq!(r.status, 200, "{spelling}: {}", r.body);
    }
    let r = anonymous
        .callback_create("chat-immediate", &[("_customer_number", "1-650-238-8541")])
        .await;
    assert_error(&r, 503, "callback_refused");
    let r = anonymous
        .json(
            "/genesys/1/service/callback/chat-immediate",
            &json!({"_customer_number": 6.5e9}),
        )
        .await;
    assert_error(&r, 400, "bad_parameter");
    let r = anonymous
        .callback_create("chat-immediate", &[("_customer_number", "call me")])
        .await;
    assert_error(&r, 400, "bad_parameter");

    // Creates racing for one number: the quota still holds.
    let racing = (0..10).map(|_| {
        let a = anonymous.clone();
        async move {
            a.callback_create("chat-immediate", &[("_customer_number", "6502388530")])
                .await
                .status
        }
    });
    let statuses = futures_util::future::join_all(racing).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_flood_from_one_client_gets_429_while_another_client_goes_on() {
    let mut config = config();
    config.contact_centre.gms.limits.creates_per_minute = 60;
    config.contact_centre.gms.limits.burst = 5;
    let server = spawn_server(config).await;
    let flooder = Api::from_address(&server.base, "127.0.0.2".parse::<IpAddr>().unwrap());
    let mut refused = None;
    for n in 0..20 {
        let r = flooder
            .callback_create(
                "chat-immediate",
                &[("_customer_number", &format!("555{n:04}"))],
            )
            .await;
        match r.status {
            200 => {}
            429 => {
                refused = Some((n, r));
                break;
            }
            other => panic!("create {n}: {other} {}", r.body),
        }
    }
    let (n, r) = refused.expect("the flood was never limited");
    assert!(
        n >= 5,
        "limited after {n} creates, before the burst was spent"
    );
    assert_eq!(r.body["error"], "rate_limited", "{}", r.body);
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Another client is not affected.
    let other = server.customer().with_gms_user(VICTIM);
    let id = create(&other, "chat-immediate", "6502388511").await;
    assert_eq!(
        other.chat_create(&id, &[("firstName", "Bob")]).await.status,
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_have_their_own_credentials_and_basic_auth_works_as_in_gms() {
    let mut config = config();
    let data_dir = config.server.data_dir.clone();
    config.server.security.operator = ors::server::auth::Credentials {
        bearer_token: None,
        username: Some("ops".into()),
        password: Some("ops-pass".into()),
    };
    config.server.security.admin = ors::server::auth::Credentials {
        bearer_token: Some("sim-admin".into()),
        ..Default::default()
    };
    let gms = &mut config.contact_centre.gms;
    gms.username = Some("gms".into());
    gms.password = Some("server-pass".into());
    gms.bearer_token = Some("device-app-token".into());
    gms.realm = "Contact Us".into();
    gms.services.insert(
        "secured".into(),
        options(&[("username", json!("app")), ("password", json!("svc-pass"))]),
    );
    let server = spawn_server(config).await;
    let base = server.customer();
    let server_level = base.clone().with_basic("gms", "server-pass");
    let per_service = base.clone().with_basic("app", "svc-pass");
    let app_token = base.clone().with_token(Some("device-app-token".into()));
    let operator = base.clone().with_basic("ops", "ops-pass");
    let admin = base.clone().with_token(Some("sim-admin".into()));
    let number = [("_customer_number", "6502388511")];

    // Customers: server-level Basic, or the app's bearer token.
    let r = base.callback_create("chat-immediate", &number).await;
    assert_error(&r, 401, "unauthorized");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Contact Us\", charset=\"UTF-8\"")
    );
    assert_eq!(
        base.clone()
            .with_basic("gms", "wrong")
            .callback_create("chat-immediate", &number)
            .await
            .status,
        401
    );
    assert_eq!(
        server_level
            .callback_create("chat-immediate", &number)
            .await
            .status,
        200
    );
    let r = app_token
        .clone()
        .with_gms_user(VICTIM)
        .callback_create("chat-immediate", &[("_customer_number", "6502388512")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A service's own credentials win over the server's.
    assert_eq!(
        server_level
            .callback_create("secured", &[("_customer_number", "6502388513")])
            .await
            .status,
        401
    );
    let r = per_service
        .clone()
        .with_gms_user(VICTIM)
        .callback_create("secured", &[("_customer_number", "6502388513")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let secured_id = r.body["_id"].as_str().expect("_id").to_string();
    // The service's password never reaches the session's data.
    let record = operator
        .callback_query_any(&format!("_id={secured_id}"))
        .await;
    assert_eq!(record.status, 200, "{}", record.body);
    let session = record.body[0]["_ors_session_id"].as_str().expect("session");
    let data = operator.query_ok(session).await["data"].to_string();
    assert!(!data.contains("svc-pass"), "{data}");
    assert!(!data.contains("server-pass"), "{data}");

    // CometD with either mode.
    assert_eq!(
        base.clone()
            .with_gms_user(VICTIM)
            .cometd_handshake()
            .await
            .status,
        401
    );
    for client in [&server_level, &app_token] {
        let r = client
            .clone()
            .with_gms_user(VICTIM)
            .cometd_handshake()
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body[0]["successful"], true, "{}", r.body);
    }

    // Operators and administrators: separate doors.
    for who in [&base, &server_level, &app_token, &admin] {
        assert_error(&who.get("/scxml/sessions").await, 401, "unauthorized");
    }
    assert_eq!(operator.get("/scxml/sessions").await.status, 200);
    for who in [&base, &server_level, &app_token] {
        assert_error(&who.get("/sim/agents").await, 401, "unauthorized");
    }
    assert_eq!(admin.get("/sim/agents").await.status, 200);
    assert_eq!(operator.get("/sim/agents").await.status, 200);
    assert_eq!(base.get("/health").await.status, 200);
    // With operator credentials configured no token file is made.
    assert!(!data_dir.join("operator-token").exists());
    server.stop().await;
}
