//! A Composer-style strategy on the ORS platform, end to end under a real
//! server: a voice call (and then a chat) is made to arrive at a routing
//! point whose application is a `script:` object
//! (`POST /sim/interactions`); the interaction-process page
//! (`fixtures/ors/routing/RoutingIPD.scxml`) starts the workflow page it
//! includes by `xi:include … resolveid`, which calls a subroutine for a
//! skill target, plays a treatment, `queue:submit`s to it and `ixn:redirect`s to the agent the
//! routing simulator picked; the interaction leaves the routing point and
//! the session ends. The agent stays busy until the call ends
//! (`DELETE /sim/interactions/{id}`). Then the admin routes' refusals.

mod common;

use std::time::Duration;

use common::{TestServer, eventually, fixture, spawn_server};
use ors::app::Config;
use serde_json::{Value, json};

fn config() -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            data_dir: common::scratch_dir("ors-platform"),
            ..Default::default()
        },
        ..Config::default()
    };
    config.scripts.insert(
        "RoutingIPD".into(),
        ors::server::config::ScriptObject {
            url: fixture("ors/routing", "RoutingIPD.scxml"),
            alternate_url: None,
            // A project variable supplied from outside wins over the
            // page's default (Composer's `typeof _data.X == "undefined"`).
            params: serde_json::Map::from_iter([("App_TreatmentSecs".to_string(), json!(0.05))]),
            dialect: None,
        },
    );
    for (name, media, application) in [
        ("RP_Sales", "voice", "script:RoutingIPD".to_string()),
        ("IQ_Chat", "chat", "script:RoutingIPD".to_string()),
        (
            "RP_End",
            "voice",
            fixture("ors/platform", "ends_at_once.scxml"),
        ),
        (
            "RP_GiveUp",
            "voice",
            fixture("ors/platform", "submit_then_end.scxml"),
        ),
        (
            "RP_Hold",
            "voice",
            fixture("ors/platform", "submit_and_hold.scxml"),
        ),
    ] {
        config.contact_centre.queues.insert(
            name.into(),
            ors::gms::settings::RoutingPoint {
                application,
                media: media.into(),
            },
        );
    }
    config
}

/// Waits until the session has ended; its final view.
async fn ended(server: &TestServer, id: &str) -> Value {
    let api = server.api();
    eventually(
        "the session did not end",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let api = api.clone();
            let id = id.to_string();
            async move {
                let view = api.query(&id).await;
                match view.body["status"].as_str() {
                    Some("running") | None => Err(format!("{}", view.body)),
                    Some(_) => Ok(view.body),
                }
            }
        },
    )
    .await
}

async fn agent_load(server: &TestServer, agent: &str, media: &str) -> u64 {
    let reply = server.api().get(&format!("/sim/agents/{agent}")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["load"][media].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_chats_arrive_run_the_strategy_and_reach_an_agent() {
    let server = spawn_server(config()).await;
    let api = server.api();
    for (queue, media) in [("RP_Sales", "voice"), ("IQ_Chat", "chat")] {
        let arrived = api
            .json(
                "/sim/interactions",
                &json!({"queue": queue, "udata": {"Language": "English"},
                        "from": "5551234", "to": "8005550100"}),
            )
            .await;
        assert_eq!(arrived.status, 201, "{}", arrived.body);
        assert_eq!(arrived.body["media"], media);
        let ixn = arrived.body["interactionid"]
            .as_str()
            .expect("an id")
            .to_string();
        let session = arrived.body["sessionid"]
            .as_str()
            .expect("a session")
            .to_string();

        let view = ended(&server, &session).await;
        assert_eq!(view["status"], "completed", "{view}");
        let data = &view["data"];
        assert_eq!(data["system"]["InteractionID"], json!(ixn), "{data}");
        assert_eq!(
            data["App_Target"],
            json!("?:English>=5@StatServer.GA"),
            "the subroutine's target: {data}"
        );
        assert_eq!(data["App_TreatmentSecs"], json!(0.05), "{data}");
        assert!(
            data["App_TreatmentRequest"].is_string(),
            "the treatment was requested: {data}"
        );
        assert!(
            data["system"]["LastError"].is_null(),
            "no error event reached the page: {data}"
        );

        let routed = api.get(&format!("/sim/interactions/{ixn}")).await;
        assert_eq!(routed.status, 200, "{}", routed.body);
        assert_eq!(routed.body["state"], "routed", "{}", routed.body);
        assert!(routed.body["sessionid"].is_null(), "it left the session");
        let agent = routed.body["agentid"]
            .as_str()
            .expect("an agent")
            .to_string();
        assert_eq!(data["App_Resource"]["agent_id"], json!(agent), "{data}");
        assert_eq!(agent_load(&server, &agent, media).await, 1);

        let released = api.delete(&format!("/sim/interactions/{ixn}")).await;
        assert_eq!(released.status, 204, "{}", released.body);
        assert_eq!(agent_load(&server, &agent, media).await, 0);
        assert_eq!(
            api.get(&format!("/sim/interactions/{ixn}")).await.status,
            404
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arrival_route_refuses_what_it_cannot_do() {
    let server = spawn_server(config()).await;
    let api = server.api();
    let cases = [
        (json!({"queue": "RP_Nowhere"}), 404, "unknown_queue"),
        (
            json!({"queue": "RP_Sales", "media": "chat"}),
            400,
            "bad_interaction",
        ),
        (
            json!({"queue": "RP_Sales", "media": "fax"}),
            400,
            "bad_interaction",
        ),
        (
            json!({"queue": "RP_Sales", "udata": [1]}),
            400,
            "bad_interaction",
        ),
        (
            json!({"queue": "RP_Sales", "colour": "red"}),
            400,
            "bad_interaction",
        ),
        (
            json!({"queue": "RP_Sales", "from": "9".repeat(300)}),
            400,
            "bad_interaction",
        ),
        (
            json!({"queue": "RP_Sales", "udata": {"big": "x".repeat(20_000)}}),
            400,
            "bad_interaction",
        ),
    ];
    for (body, status, code) in cases {
        let reply = api.json("/sim/interactions", &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert_eq!(reply.body["error"], code, "{body}: {}", reply.body);
    }
    let not_json = api
        .call(
            axum::http::Method::POST,
            "/sim/interactions",
            Some("application/json"),
            "{not json".into(),
        )
        .await;
    assert_eq!(not_json.status, 400, "{}", not_json.body);
    let plain = api
        .call(
            axum::http::Method::POST,
            "/sim/interactions",
            Some("text/plain"),
            r#"{"queue":"RP_Sales"}"#.into(),
        )
        .await;
    assert_eq!(plain.status, 415, "{}", plain.body);
    let array = api.json("/sim/interactions", &json!(["RP_Sales"])).await;
    assert_eq!(array.status, 400, "{}", array.body);
    let mut deep = json!("bottom");
    for _ in 0..40 {
        deep = json!({ "a": deep });
    }
    let too_deep = api
        .json(
            "/sim/interactions",
            &json!({"queue": "RP_Sales", "udata": deep}),
        )
        .await;
    assert_eq!(too_deep.status, 400, "{}", too_deep.body);
    assert_eq!(too_deep.body["error"], "json_too_deep");
    assert_eq!(api.delete("/sim/interactions/nope").await.status, 404);
    let customer = server.customer();
    let refused = customer
        .json("/sim/interactions", &json!({"queue": "RP_Sales"}))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(customer.get("/sim/interactions").await.status, 401);
    let listed = api.get("/sim/interactions").await;
    assert_eq!(listed.body, json!([]), "nothing arrived: {}", listed.body);
    server.stop().await;
}

/// A strategy that ends leaves nothing behind: an interaction it never
/// got to is ended at once, and a `queue:submit` still waiting when its
/// session ends is cancelled, so it cannot take the agent a live call
/// frees later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_strategy_lets_go_of_its_interactions_and_requests() {
    let server = spawn_server(config()).await;
    let api = server.api();

    let gone = api
        .json("/sim/interactions", &json!({"queue": "RP_End"}))
        .await;
    assert_eq!(gone.status, 201, "{}", gone.body);
    let gone_id = gone.body["interactionid"]
        .as_str()
        .expect("an id")
        .to_string();
    eventually(
        "the orphaned interaction was not ended",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let api = api.clone();
            let path = format!("/sim/interactions/{gone_id}");
            async move {
                match api.get(&path).await.status {
                    404 => Ok(()),
                    other => Err(format!("still there ({other})")),
                }
            }
        },
    )
    .await;

    // A call reaches agent-1 and keeps them busy.
    let first = api
        .json("/sim/interactions", &json!({"queue": "RP_Sales"}))
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let first_id = first.body["interactionid"]
        .as_str()
        .expect("an id")
        .to_string();
    ended(
        &server,
        first.body["sessionid"].as_str().expect("a session"),
    )
    .await;
    let routed = api.get(&format!("/sim/interactions/{first_id}")).await;
    assert_eq!(routed.body["agentid"], "agent-1", "{}", routed.body);

    // A second strategy asks for agent-1, waits, and gives up.
    let second = api
        .json("/sim/interactions", &json!({"queue": "RP_GiveUp"}))
        .await;
    assert_eq!(second.status, 201, "{}", second.body);
    let second_id = second.body["interactionid"]
        .as_str()
        .expect("an id")
        .to_string();
    let view = ended(
        &server,
        second.body["sessionid"].as_str().expect("a session"),
    )
    .await;
    assert_eq!(view["status"], "completed", "{view}");
    eventually(
        "the abandoned interaction was not ended",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let api = api.clone();
            let path = format!("/sim/interactions/{second_id}");
            async move {
                match api.get(&path).await.status {
                    404 => Ok(()),
                    other => Err(format!("still there ({other})")),
                }
            }
        },
    )
    .await;

    // Agent-1 is freed: the abandoned request must not take them.
    let released = api.delete(&format!("/sim/interactions/{first_id}")).await;
    assert_eq!(released.status, 204, "{}", released.body);
    assert_eq!(agent_load(&server, "agent-1", "voice").await, 0);
    assert_eq!(api.get("/sim/interactions").await.body, json!([]));
    server.stop().await;
}

/// Waits until the session's query satisfies `done`; answers it.
async fn query_until(
    server: &TestServer,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool + Send + Sync + 'static,
) -> Value {
    let api = server.api();
    let done = std::sync::Arc::new(done);
    eventually(
        what,
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let (api, id, done) = (api.clone(), id.to_string(), done.clone());
            async move {
                let q = api.query(&id).await.body;
                if done(&q) { Ok(q) } else { Err(format!("{q}")) }
            }
        },
    )
    .await
}

/// An interaction arrives at `queue`: its id and its strategy's session.
async fn arrive(server: &TestServer, queue: &str) -> (String, String) {
    let r = server
        .api()
        .json("/sim/interactions", &json!({ "queue": queue }))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let text = |key: &str| r.body[key].as_str().expect(key).to_string();
    (text("interactionid"), text("sessionid"))
}

/// A strategy that loses its interaction to another session while its
/// `queue:submit` waits never routes it: the agent found later is
/// released and the submit is answered `invalidstate.notcontrolled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_for_an_interaction_taken_over_while_it_waits_routes_nothing() {
    let server = spawn_server(config()).await;
    let api = server.api();
    // A call keeps agent-1 busy.
    let (first_id, first_session) = arrive(&server, "RP_Sales").await;
    ended(&server, &first_session).await;
    // A second call's strategy asks for agent-1 and waits.
    let (second_id, holder) = arrive(&server, "RP_Hold").await;
    query_until(&server, &holder, "the submit did not start waiting", |q| {
        q["data"]["rid"].is_string()
    })
    .await;
    // Another session takes the call over.
    let taker = api
        .start_session(&[
            ("src", fixture("ors/platform", "take_over.scxml").as_str()),
            ("interactionid", second_id.as_str()),
        ])
        .await;
    query_until(&server, &taker, "the taker did not take the call", |q| {
        q["configuration"] == json!(["holding"])
    })
    .await;
    query_until(
        &server,
        &holder,
        "the holder was not told it lost the call",
        |q| q["data"]["lost"] == true,
    )
    .await;
    // Agent-1 is freed: the old owner's submit must not take them.
    let released = api.delete(&format!("/sim/interactions/{first_id}")).await;
    assert_eq!(released.status, 204, "{}", released.body);
    let answered = query_until(
        &server,
        &holder,
        "the waiting submit was not answered",
        |q| q["configuration"] == json!(["answered"]),
    )
    .await;
    assert_eq!(
        answered["data"]["answer"], "error.queue.submit:invalidstate.notcontrolled",
        "{answered}"
    );
    assert_eq!(agent_load(&server, "agent-1", "voice").await, 0);
    let call = api.get(&format!("/sim/interactions/{second_id}")).await;
    assert!(call.body["agentid"].is_null(), "{}", call.body);
    server.stop().await;
}
