//! The GMS CometD endpoint served on a real socket: driven by hand over
//! HTTP, and by the real CometD JavaScript client (`tests/cometd/client.js`
//! under node).
//!
//! The hand-driven test runs in process on paused tokio time; the node
//! client's test stays on a socket and the wall clock, since node keeps
//! its own time.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::node::spawn_comet_client;
use ors::gms::cometd::{CometHub, CometSettings};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// Serves a hub with this connect timeout on a loopback port.
/// Its base URL.
async fn serve(connect_timeout_ms: u64) -> (Arc<CometHub>, String) {
    let hub = CometHub::new(CometSettings {
        connect_timeout_ms,
        ..CometSettings::default()
    });
    let base = common::serve_router(hub.router().0).await;
    (hub, base)
}

/// POSTs Bayeux messages through the kit's client and parses the reply
/// array (asserting 200 and the vendor's content type).
fn bayeux_array(r: common::Reply) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.content_type, "application/json;charset=UTF-8");
    serde_json::from_value(r.body).expect("a JSON array")
}

/// Driven in process on tokio's paused clock: the connect hold is a tokio
/// timeout, so "held" and "released early" are decided in virtual time
/// (a connect that were held to its 4 s timeout would show 4 s elapsed).
#[tokio::test(start_paused = true)]
async fn a_published_message_ends_a_held_connect_early() {
    let hub = CometHub::new(CometSettings {
        connect_timeout_ms: 4_000,
        ..CometSettings::default()
    });
    let api = common::Api::in_process(hub.router().0).with_gms_user("alice");

    let r = bayeux_array(api.cometd_handshake().await);
    assert_eq!(r[0]["successful"], true, "{r:?}");
    assert_eq!(r[0]["advice"]["timeout"], 4_000);
    let id = r[0]["clientId"].as_str().expect("clientId").to_owned();

    let r = bayeux_array(api.cometd_subscribe(&id, "/_genesys").await);
    assert_eq!(r[0]["successful"], true, "{r:?}");
    assert_eq!(r[0]["id"], "2");

    let r = bayeux_array(api.cometd_connect(&id).await);
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0]["successful"], true,
        "the first connect returns at once"
    );

    let held = {
        let (api, id) = (api.clone(), id.clone());
        tokio::spawn(async move { bayeux_array(api.cometd_connect(&id).await) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the second connect is held");
    let start = tokio::time::Instant::now();
    let data = json!({"id": "svc-1", "tag": "service.chat.refresh.svc-1", "message": {"chatEnded": false}});
    assert_eq!(hub.publish("alice", "/_genesys", data.clone(), None), 1);
    let r = held.await.expect("connect task");
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_millis(2_000),
        "the connect returned after {waited:?}, not early"
    );
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0], json!({"channel": "/_genesys", "data": data}));
    assert_eq!(r[1]["channel"], "/meta/connect");
    assert_eq!(r[1]["successful"], true);

    let r = api
        .call(
            axum::http::Method::POST,
            "/genesys/cometd",
            Some("application/json"),
            "[{not json".to_string(),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.content_type, "application/json;charset=UTF-8");
    assert!(r.body["error"].is_string(), "a JSON error body: {}", r.body);

    let r = bayeux_array(
        api.cometd(
            "/disconnect",
            &json!([{"channel": "/meta/disconnect", "clientId": id}]),
        )
        .await,
    );
    assert_eq!(r[0]["successful"], true);
    assert_eq!(hub.clients(), 0);
}

#[tokio::test]
async fn the_cometd_javascript_client_receives_its_users_messages_in_order() {
    let Some(harness) = common::skips::cometd_node_harness("the CometD JavaScript client test")
    else {
        return;
    };
    let (hub, base) = serve(3_000).await;
    let url = format!("{base}/genesys/cometd");
    let mut client = spawn_comet_client(&harness, &url, "alice", 3, 20_000, Stdio::piped());
    let mut stderr = client.take_stderr().expect("stderr");
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    if !client.ready(Duration::from_secs(20)).await {
        client.kill().await;
        panic!(
            "the client never printed READY: {:?}\n{}",
            client.seen,
            stderr_text.await.unwrap_or_default()
        );
    }
    assert_eq!(hub.clients(), 1);

    let message = |n: u32| {
        json!({"id": "svc-1", "tag": "service.chat.refresh.svc-1",
               "message": {"chatEnded": false, "nextPosition": n}})
    };
    // Let the client's connect be held, so the first message releases it,
    // and the others come on a later connect.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hub.publish("alice", "/_genesys", message(1), None), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hub.publish("bob", "/_genesys", json!({"for": "bob"}), None),
        0
    );
    assert_eq!(hub.publish("alice", "/_genesys", message(2), None), 1);
    assert_eq!(hub.publish("alice", "/_genesys", message(3), None), 1);

    let status = client.finish(Duration::from_secs(20)).await;
    let stderr_text = stderr_text.await.unwrap_or_default();
    let Some(status) = status else {
        panic!("the client did not exit: {:?}\n{stderr_text}", client.seen);
    };
    eprintln!(
        "client stdout: {:?}\nclient stderr: {stderr_text}",
        client.seen
    );
    assert!(status.success(), "{status}");
    let received = client.messages();
    assert_eq!(received, vec![message(1), message(2), message(3)]);
    assert_eq!(hub.clients(), 0, "the client disconnected");
}
