//! The GMS CometD endpoint served on a real socket: driven by hand over
//! HTTP, and by the real CometD JavaScript client (`tests/cometd/client.js`
//! under node).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ors::gms::cometd::{CometHub, CometSettings};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Serves a hub with this connect timeout on a loopback port.
async fn serve(connect_timeout_ms: u64) -> (Arc<CometHub>, SocketAddr) {
    let hub = CometHub::new(CometSettings {
        connect_timeout_ms,
        ..CometSettings::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = hub.router();
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (hub, addr)
}

/// POSTs a body with the `gms_user` header; the status, content type and
/// body text.
async fn post(
    client: &reqwest::Client,
    url: &str,
    user: &str,
    body: &str,
) -> (u16, String, String) {
    let resp = client
        .post(url)
        .header("gms_user", user)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, resp.text().await.expect("body"))
}

/// POSTs Bayeux messages and parses the reply array.
async fn bayeux(client: &reqwest::Client, url: &str, user: &str, messages: Value) -> Vec<Value> {
    let (status, content_type, body) = post(client, url, user, &messages.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/json;charset=UTF-8");
    serde_json::from_str(&body).expect("a JSON array")
}

#[tokio::test]
async fn a_published_message_ends_a_held_connect_early() {
    let (hub, addr) = serve(4_000).await;
    let base = format!("http://{addr}/genesys/cometd");
    let client = ors::io::http::http_client(Duration::from_secs(20));

    let r = bayeux(
        &client,
        &format!("{base}/handshake"),
        "alice",
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
                "supportedConnectionTypes": ["long-polling"]}]),
    )
    .await;
    assert_eq!(r[0]["successful"], true, "{r:?}");
    assert_eq!(r[0]["advice"]["timeout"], 4_000);
    let id = r[0]["clientId"].as_str().expect("clientId").to_owned();

    let r = bayeux(
        &client,
        &base,
        "alice",
        json!({"channel": "/meta/subscribe", "clientId": id, "subscription": "/_genesys", "id": "2"}),
    )
    .await;
    assert_eq!(r[0]["successful"], true, "{r:?}");
    assert_eq!(r[0]["id"], "2");

    let connect = json!([{"channel": "/meta/connect", "clientId": id,
                          "connectionType": "long-polling", "id": "3"}]);
    let r = bayeux(
        &client,
        &format!("{base}/connect"),
        "alice",
        connect.clone(),
    )
    .await;
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0]["successful"], true,
        "the first connect returns at once"
    );

    let held = {
        let (client, url) = (client.clone(), format!("{base}/connect"));
        tokio::spawn(async move { bayeux(&client, &url, "alice", connect).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the second connect is held");
    let start = Instant::now();
    let data = json!({"id": "svc-1", "tag": "service.chat.refresh.svc-1", "message": {"chatEnded": false}});
    assert_eq!(hub.publish("alice", "/_genesys", data.clone()), 1);
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

    let (status, content_type, body) = post(&client, &base, "alice", "[{not json").await;
    assert_eq!(status, 400);
    assert_eq!(content_type, "application/json;charset=UTF-8");
    let body: Value = serde_json::from_str(&body).expect("a JSON error body");
    assert!(body["error"].is_string());

    let r = bayeux(
        &client,
        &format!("{base}/disconnect"),
        "alice",
        json!([{"channel": "/meta/disconnect", "clientId": id}]),
    )
    .await;
    assert_eq!(r[0]["successful"], true);
    assert_eq!(hub.clients(), 0);
}

#[tokio::test]
async fn the_cometd_javascript_client_receives_its_users_messages_in_order() {
    let harness = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cometd");
    if !harness.join("node_modules").is_dir() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "{} is missing: .ci/run installs it with npm ci",
                harness.join("node_modules").display()
            );
        }
        eprintln!(
            "skipped: no {}; run `npm ci` in tests/cometd to enable this test",
            harness.join("node_modules").display()
        );
        return;
    }
    let (hub, addr) = serve(3_000).await;
    let url = format!("http://{addr}/genesys/cometd");
    let mut child = tokio::process::Command::new("node")
        .arg("client.js")
        .args([url.as_str(), "alice", "3", "20000"])
        .current_dir(&harness)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut transcript = Vec::new();

    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("stdout") {
            transcript.push(line.clone());
            if line == "READY" {
                return true;
            }
        }
        false
    })
    .await;
    if ready != Ok(true) {
        let _ = child.kill().await;
        panic!(
            "the client never printed READY: {transcript:?}\n{}",
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
    assert_eq!(hub.publish("alice", "/_genesys", message(1)), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hub.publish("bob", "/_genesys", json!({"for": "bob"})), 0);
    assert_eq!(hub.publish("alice", "/_genesys", message(2)), 1);
    assert_eq!(hub.publish("alice", "/_genesys", message(3)), 1);

    let status = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("stdout") {
            transcript.push(line);
        }
        child.wait().await.expect("exit status")
    })
    .await;
    let stderr_text = stderr_text.await.unwrap_or_default();
    let Ok(status) = status else {
        panic!("the client did not exit: {transcript:?}\n{stderr_text}");
    };
    eprintln!("client stdout: {transcript:?}\nclient stderr: {stderr_text}");
    assert!(status.success(), "{status}");
    let received: Vec<Value> = transcript
        .iter()
        .filter_map(|l| l.strip_prefix("MESSAGE "))
        .map(|j| serde_json::from_str(j).expect("a JSON line"))
        .collect();
    assert_eq!(received, vec![message(1), message(2), message(3)]);
    assert_eq!(hub.clients(), 0, "the client disconnected");
}
