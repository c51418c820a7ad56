//! The server loads through the host's loader without blocking a worker:
//! an `<invoke src="http://…">` whose response the test holds leaves the
//! worker free for other sessions, and the child runs (with the events its
//! parent sent meanwhile) once the response is released; redirects to a
//! host the allow-list refuses are refused for documents, `<data src>` and
//! `<invoke src>`.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use ors::app::{Config, spawn};
use ors::server::RunningServer;
use serde_json::{Value, json};
use tokio::sync::oneshot;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/server")
        .join(name)
        .display()
        .to_string()
}

fn config() -> Config {
    static N: AtomicUsize = AtomicUsize::new(0);
    let data_dir = std::env::temp_dir().join(format!(
        "ors-loader-server-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let mut config = Config {
        server: ors::server::Config {
            // One worker: every session shares it.
            workers: 1,
            data_dir,
            ..Default::default()
        },
        ..Config::default()
    };
    config.security.allowed_dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    config.security.allowed_hosts = vec!["127.0.0.1".into()];
    config.security.bearer_token = Some(common::server::OPERATOR_TOKEN.into());
    config
}

struct Api {
    server: Option<RunningServer>,
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn start(config: Config) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = spawn(listener, config).expect("server starts");
        Api {
            base: format!("http://{}", server.addr),
            server: Some(server),
            client: common::client::bearer_client(common::server::OPERATOR_TOKEN),
        }
    }

    async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        (status, body)
    }

    async fn start_session(&self, src: &str) -> String {
        let (status, body) = self.post("/scxml/session/start", &[("src", src)]).await;
        assert_eq!(status, 200, "start failed: {body}");
        body["sessionid"].as_str().expect("sessionid").to_string()
    }

    async fn event(&self, id: &str, name: &str, pairs: &[(&str, &str)]) {
        let (status, body) = self
            .post(&format!("/scxml/session/{id}/event/{name}"), pairs)
            .await;
        assert!(status < 300, "event refused: {body}");
    }

    async fn query(&self, id: &str) -> Value {
        let (status, body) = self.post(&format!("/scxml/session/{id}/query"), &[]).await;
        assert_eq!(status, 200, "query failed: {body}");
        body
    }

    /// Polls a session until `check` holds.
    async fn wait_for(&self, id: &str, check: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..250 {
            let q = self.query(id).await;
            if check(&q) {
                return q;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("session {id} never got there: {}", self.query(id).await);
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.shutdown().await;
        }
    }
}

const PARENT: &str = r##"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="invoking">
  <state id="invoking">
    <invoke id="c" src="held/child.scxml"/>
    <transition event="go">
      <send target="#_c" event="first"/>
      <send target="#_c" event="second"/>
    </transition>
    <transition event="done.invoke.c" target="done"/>
    <transition event="error.*" target="failed"/>
  </state>
  <state id="done"/><state id="failed"/>
</scxml>"##;

/// Finishes only if `first` and then `second` arrive.
const CHILD: &str = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="a">
  <state id="a"><transition event="first" target="b"/></state>
  <state id="b"><transition event="second" target="end"/></state>
  <final id="end"/>
</scxml>"#;

/// The held route: tells the test the request arrived, then answers only
/// when the test releases it.
struct Held {
    seen: Mutex<Option<oneshot::Sender<()>>>,
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

async fn held_child(State(held): State<Arc<Held>>) -> impl IntoResponse {
    if let Some(tx) = held.seen.lock().unwrap().take() {
        let _ = tx.send(());
    }
    let release = held.release.lock().unwrap().take();
    if let Some(rx) = release {
        let _ = rx.await;
    }
    CHILD
}

async fn serve(router: Router) -> String {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(socket, router).await;
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_other_sessions_while_a_child_document_loads() {
    let (seen_tx, seen_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let held = Arc::new(Held {
        seen: Mutex::new(Some(seen_tx)),
        release: Mutex::new(Some(release_rx)),
    });
    let origin = serve(
        Router::new()
            .route("/parent.scxml", get(|| async { PARENT }))
            .route("/held/child.scxml", get(held_child))
            .with_state(held),
    )
    .await;
    let api = Api::start(config()).await;

    let parent = api.start_session(&format!("{origin}/parent.scxml")).await;
    seen_rx.await.expect("the child's fetch reached the server");

    // The only worker is free: another session starts, takes an event and
    // answers queries while the fetch is pending.
    let other = api.start_session(&fixture("counter.scxml")).await;
    api.event(&other, "add", &[("n", "5")]).await;
    let q = api
        .wait_for(&other, |q| q["data"]["total"] == json!(5))
        .await;
    assert_eq!(q["configuration"], json!(["counting"]));

    // Events for the loading child wait for it.
    api.event(&parent, "go", &[]).await;
    assert_eq!(
        api.query(&parent).await["configuration"],
        json!(["invoking"])
    );

    release_tx.send(()).expect("the server still waits");
    let q = api
        .wait_for(&parent, |q| q["configuration"] != json!(["invoking"]))
        .await;
    assert_eq!(q["configuration"], json!(["done"]), "{q}");
    api.stop().await;
}

const DATA_DOC: &str = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="s">
  <datamodel><data id="d" src="PATH/value.json"/><data id="why" expr="''"/></datamodel>
  <state id="s">
    <transition event="error.execution" target="refused">
      <assign location="why" expr="_event.data.message"/>
    </transition>
    <transition cond="d &amp;&amp; d.n === 1" target="loaded"/>
  </state>
  <state id="refused"/><state id="loaded"/>
</scxml>"#;

const INVOKE_DOC: &str = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="s">
  <datamodel><data id="why" expr="''"/></datamodel>
  <state id="s">
    <invoke id="c" src="PATH/child.scxml"/>
    <transition event="error.execution" target="refused">
      <assign location="why" expr="_event.data.message"/>
    </transition>
    <transition event="done.invoke.c" target="loaded"/>
  </state>
  <state id="refused"/><state id="loaded"/>
</scxml>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_hosts_the_allow_list_refuses_are_refused() {
    async fn away(State(port): State<u16>, path: axum::extract::Path<String>) -> Redirect {
        Redirect::temporary(&format!("http://localhost:{port}/{}", path.0))
    }
    async fn hop(State(port): State<u16>, path: axum::extract::Path<String>) -> Redirect {
        Redirect::temporary(&format!("http://127.0.0.1:{port}/{}", path.0))
    }
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = socket.local_addr().expect("addr").port();
    let router = Router::new()
        .route("/away/{*rest}", get(away))
        .route("/hop/{*rest}", get(hop))
        .route("/value.json", get(|| async { r#"{"n": 1}"# }))
        .route("/child.scxml", get(|| async {
            r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0"><final id="f"/></scxml>"#
        }))
        .route("/plain.scxml", get(|| async {
            r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0"><state id="plain"/></scxml>"#
        }))
        .route("/data/{via}", get(|path: axum::extract::Path<String>| async move {
            DATA_DOC.replace("PATH", &format!("../{}", path.0))
        }))
        .route("/invoke/{via}", get(|path: axum::extract::Path<String>| async move {
            INVOKE_DOC.replace("PATH", &format!("../{}", path.0))
        }))
        .with_state(port);
    tokio::spawn(async move {
        let _ = axum::serve(socket, router).await;
    });
    let origin = format!("http://127.0.0.1:{port}");
    let api = Api::start(config()).await;

    // A document.
    let (status, body) = api
        .post(
            "/scxml/session/start",
            &[("src", &format!("{origin}/away/plain.scxml"))],
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "url_not_allowed", "{body}");
    let id = api
        .start_session(&format!("{origin}/hop/plain.scxml"))
        .await;
    assert_eq!(api.query(&id).await["configuration"], json!(["plain"]));

    // <data src> and <invoke src>: refused through `away`, loaded through
    // `hop`.
    for kind in ["data", "invoke"] {
        let refused = api.start_session(&format!("{origin}/{kind}/away")).await;
        let q = api
            .wait_for(&refused, |q| q["configuration"] != json!(["s"]))
            .await;
        assert_eq!(q["configuration"], json!(["refused"]), "{kind}: {q}");
        let why = q["data"]["why"].as_str().unwrap_or_default();
        assert!(why.contains("allow-list"), "{kind}: {why}");
        let loaded = api.start_session(&format!("{origin}/{kind}/hop")).await;
        let q = api
            .wait_for(&loaded, |q| q["configuration"] != json!(["s"]))
            .await;
        assert_eq!(q["configuration"], json!(["loaded"]), "{kind}: {q}");
    }
    api.stop().await;
}
