//! `ors serve` driven over real HTTP: each test starts the server on an
//! ephemeral loopback port (the same `run` the binary calls) and talks to
//! it with an HTTP client. Documents come from `fixtures/server/`, from a
//! small document server the test runs, and from script objects.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use common::{Reply, TestServer, eventually, spawn_server};
use ors::app::Config;
use ors::server::config::ScriptObject;
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    common::fixtures_dir("server")
}

fn fixture(name: &str) -> String {
    common::fixture("server", name)
}

fn scratch_dir() -> PathBuf {
    common::scratch_dir("server")
}

fn base_config() -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            ..Default::default()
        },
        ..Config::default()
    };
    config.security.allowed_dirs = vec![fixtures(), std::env::temp_dir()];
    // Every server persists to its own SQLite file.
    config.data_dir = scratch_dir();
    config
}

/// The server and a client of it that sends the configured bearer token
/// and requires JSON replies.
struct Api {
    server: TestServer,
    base: String,
    client: common::Api,
}

impl Api {
    async fn start(config: Config) -> Api {
        let server = spawn_server(config).await;
        Api {
            base: server.base.clone(),
            client: server.api().requiring_json(),
            server,
        }
    }

    /// Sends the next requests with this bearer token (or none).
    fn set_token(&mut self, token: Option<&str>) {
        self.client = self.client.clone().with_token(token.map(str::to_string));
    }

    /// `POST path` with this content type and body, as given.
    async fn post_raw(&self, path: &str, content_type: &str, body: String) -> Reply {
        self.client
            .call(Method::POST, path, Some(content_type), body)
            .await
    }

    async fn form(&self, path: &str, pairs: &[(&str, &str)]) -> Reply {
        self.client.form(path, pairs).await
    }

    async fn json(&self, path: &str, body: &Value) -> Reply {
        self.client.json(path, body).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.client.get(path).await
    }

    /// The text of the `/metrics` page.
    async fn metrics_text(&self) -> String {
        let r = self.server.api().get("/metrics").await;
        r.body.as_str().unwrap_or_default().to_string()
    }

    async fn start_session(&self, pairs: &[(&str, &str)]) -> String {
        self.client.start_session(pairs).await
    }

    async fn query(&self, id: &str) -> Value {
        self.client.query_ok(id).await
    }

    /// Polls a session until `check` holds (asynchronous module results).
    async fn wait_for(&self, id: &str, check: impl Fn(&Value) -> bool) -> Value {
        let check = &check;
        eventually(
            &format!("session {id} never reached the expected state"),
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async move {
                let q = self.query(id).await;
                if check(&q) { Ok(q) } else { Err(q) }
            },
        )
        .await
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

/// An event, a terminate and a request to a session that has ended are
/// each refused with 409 `session_ended`.
async fn assert_refused_as_ended(api: &Api, id: &str) {
    let r = api
        .form(&format!("/scxml/session/{id}/event/add"), &[("n", "1")])
        .await;
    assert_error(&r, 409, "session_ended");
    let r = api
        .form(&format!("/scxml/session/{id}/terminate"), &[])
        .await;
    assert_error(&r, 409, "session_ended");
    let r = api
        .get(&format!("/scxml/session/{id}/request/check-total"))
        .await;
    assert_error(&r, 409, "session_ended");
}

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "unexpected status; body {}", r.body);
    assert_eq!(
        r.body["error"], code,
        "unexpected error code; body {}",
        r.body
    );
    assert!(
        r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {}",
        r.body
    );
}

/// A document server for the tests: serves `docs` with an ETag and
/// `Cache-Control: max-age=0`, answers conditional requests with 304, and
/// counts what it served.
#[derive(Default)]
struct DocServer {
    docs: Mutex<HashMap<String, String>>,
    full: AtomicUsize,
    not_modified: AtomicUsize,
}

fn etag_of(text: &str) -> String {
    format!(
        "\"{:x}-{}\"",
        text.len(),
        text.bytes().map(u64::from).sum::<u64>()
    )
}

async fn serve_doc(
    State(state): State<Arc<DocServer>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> axum::response::Response {
    let Some(text) = state.docs.lock().unwrap().get(&name).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = etag_of(&text);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        state.not_modified.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NOT_MODIFIED.into_response();
    }
    state.full.fetch_add(1, Ordering::SeqCst);
    (
        [
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "max-age=0".to_string()),
            (header::CONTENT_TYPE, "application/xml".to_string()),
        ],
        text,
    )
        .into_response()
}

async fn serve_data(Query(q): Query<HashMap<String, String>>) -> axum::response::Response {
    axum::Json(json!({ "answer": 42, "q": q.get("q").cloned().unwrap_or_default() }))
        .into_response()
}

async fn start_doc_server(state: Arc<DocServer>) -> String {
    let app = axum::Router::new()
        .route("/docs/{name}", axum::routing::get(serve_doc))
        .route("/data.json", axum::routing::get(serve_data))
        .with_state(state);
    common::serve_router(app).await
}

fn doc_with_state(state: &str) -> String {
    format!(
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="{state}">
             <state id="{state}"/>
           </scxml>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_started_from_a_file_takes_events_requests_and_queries() {
    let api = Api::start(base_config()).await;
    let src = fixture("counter.scxml");
    let id = api
        .start_session(&[("src", &src), ("label", "hello"), ("extra", "x")])
        .await;

    // Form body, query string, JSON body and multipart body all become _event.data.
    let r = api
        .form(&format!("/scxml/session/{id}/event/add"), &[("n", "2")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "running");
    assert_eq!(r.body["configuration"], json!(["counting"]));
    let r = api
        .form(&format!("/scxml/session/{id}/event/add?n=3"), &[])
        .await;
    assert_eq!(r.status, 200);
    let r = api
        .json(&format!("/scxml/session/{id}/event/add"), &json!({"n": 4}))
        .await;
    assert_eq!(r.status, 200);
    let boundary = "XyZ0123";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n5\r\n--{boundary}--\r\n"
    );
    let r = api
        .post_raw(
            &format!("/scxml/session/{id}/event/add"),
            &format!("multipart/form-data; boundary={boundary}"),
            multipart,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The document answers a request with <session:response>.
    let r = api
        .get(&format!("/scxml/session/{id}/request/check-total"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"total": 14, "label": "hello"}));

    // Query: status, configuration, variables as JSON; start parameters
    // override <data> and undeclared ones become variables too.
    let q = api.query(&id).await;
    assert_eq!(q["status"], "running");
    assert_eq!(q["configuration"], json!(["counting"]));
    assert_eq!(q["data"]["total"], 14);
    assert_eq!(q["data"]["label"], "hello");
    assert_eq!(q["data"]["extra"], "x");
    assert_eq!(q["data"]["_data"], json!({"label": "hello", "extra": "x"}));
    assert_eq!(q["events"], 5);

    // Terminate, then events are refused and the query shows the end.
    let r = api
        .form(&format!("/scxml/session/{id}/terminate"), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "terminated");
    assert_refused_as_ended(&api, &id).await;
    let q = api.query(&id).await;
    assert_eq!(q["status"], "terminated");
    assert!(q["ended_at"].as_u64().is_some());
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_reaches_its_final_state_is_completed() {
    let api = Api::start(base_config()).await;
    let id = api
        .start_session(&[
            ("src", &fixture("counter.scxml")),
            ("idealtime", "1700000000000"),
        ])
        .await;
    let r = api
        .form(&format!("/scxml/session/{id}/event/stop"), &[])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "completed");
    let q = api.query(&id).await;
    assert_eq!(q["status"], "completed");
    assert_eq!(q["idealtime"], 1700000000000u64);
    let r = api
        .get(&format!("/scxml/session/{id}/request/check-total"))
        .await;
    assert_error(&r, 409, "session_ended");
    api.stop().await;
}

/// Once a halted session's last state is committed, the worker keeps it
/// as a plain record and drops its engine state: queries, refused events
/// and terminates answer exactly as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_session_is_retired_from_the_engine_and_still_answers_as_before() {
    let api = Api::start(base_config()).await;
    let id = api
        .start_session(&[("src", &fixture("counter.scxml")), ("label", "kept")])
        .await;
    let r = api
        .form(&format!("/scxml/session/{id}/event/add"), &[("n", "6")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api
        .form(&format!("/scxml/session/{id}/event/stop"), &[])
        .await;
    assert_eq!(r.body["status"], "completed");
    let before = api.query(&id).await;
    assert_eq!(before["data"]["total"], 6);
    eventually(
        "the completed session was never retired",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let text = api.metrics_text().await;
            if text.lines().any(|l| l == "ors_sessions_retired 1") {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await;
    let after = api.query(&id).await;
    assert_eq!(after, before, "a retired session's query changed");
    assert_refused_as_ended(&api, &id).await;
    let listed = api.get("/scxml/sessions").await;
    assert!(
        listed.body["sessions"].as_array().is_some_and(|all| all
            .iter()
            .any(|s| s["sessionid"] == json!(id) && s["status"] == "completed")),
        "{}",
        listed.body
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_by_http_url_are_cached_revalidated_and_changes_reach_new_sessions_only() {
    let docs = Arc::new(DocServer::default());
    docs.docs
        .lock()
        .unwrap()
        .insert("flow.scxml".into(), doc_with_state("version_one"));
    docs.docs.lock().unwrap().insert(
        "parent.scxml".into(),
        std::fs::read_to_string(fixtures().join("parent.scxml")).unwrap(),
    );
    docs.docs.lock().unwrap().insert(
        "child.scxml".into(),
        std::fs::read_to_string(fixtures().join("child.scxml")).unwrap(),
    );
    let origin = start_doc_server(docs.clone()).await;
    let api = Api::start(base_config()).await;
    let url = format!("{origin}/docs/flow.scxml");

    let first = api.start_session(&[("src", &url)]).await;
    assert_eq!(docs.full.load(Ordering::SeqCst), 1);
    let second = api.start_session(&[("src", &url)]).await;
    // max-age=0: revalidated with If-None-Match, answered 304, not refetched.
    assert_eq!(docs.full.load(Ordering::SeqCst), 1);
    assert_eq!(docs.not_modified.load(Ordering::SeqCst), 1);
    assert_eq!(
        api.query(&second).await["configuration"],
        json!(["version_one"])
    );

    docs.docs
        .lock()
        .unwrap()
        .insert("flow.scxml".into(), doc_with_state("version_two"));
    let third = api.start_session(&[("src", &url)]).await;
    assert_eq!(docs.full.load(Ordering::SeqCst), 2);
    assert_eq!(
        api.query(&third).await["configuration"],
        json!(["version_two"])
    );
    assert_eq!(
        api.query(&first).await["configuration"],
        json!(["version_one"])
    );

    // A relative invoke src resolves against the parent's URL.
    let parent = api
        .start_session(&[("src", &format!("{origin}/docs/parent.scxml"))])
        .await;
    let q = api
        .wait_for(&parent, |q| q["configuration"] == json!(["child_done"]))
        .await;
    assert_eq!(q["status"], "running");

    let metrics = api.metrics_text().await;
    assert!(
        metrics.contains("ors_document_cache_total{result=\"revalidated\"} 1"),
        "{metrics}"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_objects_fall_back_to_their_alternate_url_and_pass_their_parameters() {
    let docs = Arc::new(DocServer::default());
    let origin = start_doc_server(docs.clone()).await;
    let mut config = base_config();
    let mut params = serde_json::Map::new();
    params.insert("label".into(), json!("from the script object"));
    params.insert("app_find_agent_timeout".into(), json!("60"));
    config.scripts.insert(
        "CounterApp".into(),
        ScriptObject {
            url: format!("{origin}/docs/missing.scxml"),
            alternate_url: Some(fixture("counter.scxml")),
            params,
            dialect: None,
        },
    );
    let api = Api::start(config).await;

    // The name matches ignoring case, the first URL 404s, the alternate loads.
    let id = api.start_session(&[("src", "script:counterapp")]).await;
    let q = api.query(&id).await;
    assert_eq!(q["src"], fixture("counter.scxml"));
    assert_eq!(q["data"]["label"], "from the script object");
    assert_eq!(q["data"]["app_find_agent_timeout"], "60");

    // Start parameters override script parameters.
    let id = api
        .start_session(&[("src", "script:CounterApp"), ("label", "override")])
        .await;
    assert_eq!(api.query(&id).await["data"]["label"], "override");

    // A second URL after a space is the fallback for a plain src.
    let src = format!("{origin}/docs/missing.scxml {}", fixture("counter.scxml"));
    let id = api.start_session(&[("src", &src)]).await;
    assert_eq!(api.query(&id).await["configuration"], json!(["counting"]));

    // When both fail, the reply names both reasons.
    let src = format!("{origin}/docs/missing.scxml {}", fixture("broken.scxml"));
    let r = api.form("/scxml/session/start", &[("src", &src)]).await;
    assert_error(&r, 404, "document_not_found");
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.contains("HTTP 404") && message.contains("fallback"),
        "{message}"
    );
    assert!(message.contains("broken.scxml:4:"), "{message}");

    let r = api
        .form("/scxml/session/start", &[("src", "script:nothing")])
        .await;
    assert_error(&r, 404, "script_not_found");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_json_body_with_a_stable_code() {
    let mut config = base_config();
    config.limits.max_body_bytes = 2048;
    config.limits.request_timeout_ms = 300;
    let api = Api::start(config).await;
    let id = api
        .start_session(&[("src", &fixture("counter.scxml"))])
        .await;
    let unknown = "00000000000000000000000000";

    for path in [
        format!("/scxml/session/{unknown}/event/add"),
        format!("/scxml/session/{unknown}/terminate"),
        format!("/scxml/session/{unknown}/request/check-total"),
        "/scxml/session/not-an-id/event/add".to_string(),
    ] {
        assert_error(&api.form(&path, &[]).await, 404, "session_not_found");
    }
    assert_error(
        &api.get(&format!("/scxml/session/{unknown}/query")).await,
        404,
        "session_not_found",
    );
    assert_error(&api.get("/no/such/route").await, 404, "not_found");
    assert_error(
        &api.get("/scxml/session/start").await,
        405,
        "method_not_allowed",
    );

    // Bad parameters.
    assert_error(
        &api.form("/scxml/session/start", &[]).await,
        400,
        "missing_parameter",
    );
    assert_error(
        &api.form(
            "/scxml/session/start",
            &[("src", &fixture("counter.scxml")), ("idealtime", "soon")],
        )
        .await,
        400,
        "bad_parameter",
    );
    assert_error(
        &api.json("/scxml/session/start", &json!(["not", "an", "object"]))
            .await,
        400,
        "bad_parameter",
    );
    let r = api
        .post_raw(
            "/scxml/session/start",
            "application/json",
            "{\"src\": ".to_string(),
        )
        .await;
    assert_error(&r, 400, "bad_parameter");
    let r = api
        .post_raw(
            "/scxml/session/start",
            "application/pdf",
            "%PDF".to_string(),
        )
        .await;
    assert_error(&r, 415, "unsupported_media_type");
    let big = "n=".to_string() + &"9".repeat(4096);
    let r = api
        .post_raw(
            &format!("/scxml/session/{id}/event/add"),
            "application/x-www-form-urlencoded",
            big,
        )
        .await;
    assert_error(&r, 413, "body_too_large");
    assert_error(
        &api.form(&format!("/scxml/session/{id}/event/bad%20name"), &[])
            .await,
        400,
        "bad_parameter",
    );
    assert_error(
        &api.get("/scxml/sessions?limit=5000").await,
        400,
        "bad_parameter",
    );

    // Documents that cannot be loaded.
    let r = api
        .form("/scxml/session/start", &[("src", &fixture("broken.scxml"))])
        .await;
    assert_error(&r, 422, "document_invalid");
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.contains("broken.scxml:4:5") && message.contains("nowhere"),
        "{message}"
    );
    let dir = scratch_dir();
    let dtd = dir.join("dtd.scxml");
    std::fs::write(
        &dtd,
        "<?xml version=\"1.0\"?>\n<!DOCTYPE scxml [<!ENTITY x \"y\">]>\n<scxml xmlns=\"http://www.w3.org/2005/07/scxml\" version=\"1.0\"><state id=\"a\"/></scxml>",
    )
    .unwrap();
    let r = api
        .form(
            "/scxml/session/start",
            &[("src", &dtd.display().to_string())],
        )
        .await;
    assert_error(&r, 422, "document_invalid");
    assert!(
        r.body["message"].as_str().unwrap().contains(":2:1"),
        "{}",
        r.body
    );
    let r = api
        .form("/scxml/session/start", &[("src", &fixture("absent.scxml"))])
        .await;
    assert_error(&r, 404, "document_not_found");
    let r = api
        .form("/scxml/session/start", &[("src", "/etc/hostname")])
        .await;
    assert_error(&r, 403, "url_not_allowed");
    // A link inside an allowed directory that leads out of them is
    // refused, and the answer does not say where it leads.
    #[cfg(unix)]
    {
        let dir = common::scratch_dir("links");
        let link = dir.join("innocent.scxml");
        std::os::unix::fs::symlink("/etc/hostname", &link).expect("a symbolic link");
        let r = api
            .form(
                "/scxml/session/start",
                &[("src", &link.display().to_string())],
            )
            .await;
        assert_error(&r, 403, "url_not_allowed");
        assert!(!r.body.to_string().contains("/etc"), "{}", r.body);
    }
    let r = api
        .form(
            "/scxml/session/start",
            &[("src", "ftp://example.com/x.scxml")],
        )
        .await;
    assert_error(&r, 403, "url_not_allowed");
    let r = api
        .form(
            "/scxml/session/start",
            &[("src", "http://127.0.0.1:9/x.scxml")],
        )
        .await;
    assert_error(&r, 502, "document_unavailable");

    // A request the document never answers times out with 504.
    let r = api
        .get(&format!("/scxml/session/{id}/request/ignore-me"))
        .await;
    assert_error(&r, 504, "request_timeout");

    // The server is still fine.
    let r = api
        .form(&format!("/scxml/session/{id}/event/add"), &[("n", "1")])
        .await;
    assert_eq!(r.status, 200);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_everything_but_health() {
    let mut config = base_config();
    config.security.bearer_token = Some("s3cret".into());
    let mut api = Api::start(config).await;
    api.set_token(None);
    assert_error(
        &api.form(
            "/scxml/session/start",
            &[("src", &fixture("counter.scxml"))],
        )
        .await,
        401,
        "unauthorized",
    );
    assert_eq!(api.get("/health").await.status, 200);
    api.set_token(Some("wrong"));
    assert_error(&api.get("/scxml/sessions").await, 401, "unauthorized");
    api.set_token(Some("s3cret"));
    api.start_session(&[("src", &fixture("counter.scxml"))])
        .await;
    assert_eq!(api.get("/scxml/sessions").await.body["total"], 1);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_module_fetches_starts_and_terminates() {
    let docs = Arc::new(DocServer::default());
    let origin = start_doc_server(docs).await;
    let api = Api::start(base_config()).await;
    let id = api
        .start_session(&[
            ("src", &fixture("fetcher.scxml")),
            ("url", &format!("{origin}/data.json")),
            ("child_src", &fixture("counter.scxml")),
        ])
        .await;
    let q = api
        .wait_for(&id, |q| {
            q["configuration"] == json!(["done"]) || q["configuration"] == json!(["failed"])
        })
        .await;
    assert_eq!(q["configuration"], json!(["done"]), "{q}");
    assert_eq!(q["data"]["fetched"], json!({"answer": 42, "q": "abc"}));
    assert_eq!(q["data"]["own_id_matches"], true);
    let child = q["data"]["child"].as_str().unwrap().to_string();
    assert_eq!(q["data"]["started"], child.as_str());
    let c = api.query(&child).await;
    assert_eq!(c["status"], "terminated");
    assert_eq!(c["data"]["label"], "from parent");

    // A fetch outside the allow-list fails with error.session.fetch.
    let mut config = base_config();
    config.security.allowed_hosts = vec!["example.com".into()];
    let strict = Api::start(config).await;
    let id = strict
        .start_session(&[
            ("src", &fixture("fetcher.scxml")),
            ("url", &format!("{origin}/data.json")),
        ])
        .await;
    let q = strict
        .wait_for(&id, |q| q["configuration"] == json!(["failed"]))
        .await;
    assert_eq!(q["data"]["error"]["error"], "notallowed");
    strict.stop().await;
    api.stop().await;
}

/// A redirect is checked against the allow-list at every hop: a fetch to
/// an allowed host that redirects to a refused one fails, and nothing is
/// fetched from the refused host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_fetch_checks_every_redirect_hop() {
    let refused_hits = Arc::new(AtomicUsize::new(0));
    let hits = refused_hits.clone();
    let app = axum::Router::new()
        .route(
            "/hop",
            axum::routing::get(|headers: HeaderMap| async move {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let port = host.rsplit(':').next().unwrap_or_default().to_string();
                axum::response::Redirect::temporary(&format!("http://localhost:{port}/data.json"))
            }),
        )
        .route(
            "/data.json",
            axum::routing::get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { axum::Json(json!({"secret": true})) }
            }),
        );
    let origin = common::serve_router(app).await;
    let mut config = base_config();
    config.security.allowed_hosts = vec!["127.0.0.1".into()];
    let api = Api::start(config).await;
    let id = api
        .start_session(&[
            ("src", &fixture("fetcher.scxml")),
            ("url", &format!("{origin}/hop")),
        ])
        .await;
    let q = api
        .wait_for(&id, |q| {
            q["configuration"] == json!(["failed"]) || q["configuration"] == json!(["starting"])
        })
        .await;
    assert_eq!(q["configuration"], json!(["failed"]), "{q}");
    assert!(
        q["data"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("redirect")),
        "{q}"
    );
    assert_eq!(refused_hits.load(Ordering::SeqCst), 0);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_different_workers_message_each_other_and_timers_fire() {
    let api = Api::start(base_config()).await;
    let src = fixture("messenger.scxml");
    let a = api.start_session(&[("src", &src)]).await;
    let b = api.start_session(&[("src", &src), ("peer", &a)]).await;
    // Ids name their worker; consecutive starts go to different workers.
    assert_ne!(a[24..], b[24..]);
    for _ in 0..3 {
        let r = api
            .form(&format!("/scxml/session/{b}/event/poke"), &[])
            .await;
        assert_eq!(r.status, 200);
    }
    api.wait_for(&a, |q| q["data"]["hellos"] == 3).await;

    let r = api
        .form(&format!("/scxml/session/{a}/event/arm"), &[])
        .await;
    assert_eq!(r.status, 200);
    let q = api.query(&a).await;
    assert!(
        q["configuration"]
            .as_array()
            .unwrap()
            .contains(&json!("waiting"))
    );
    assert_eq!(q["pending_timers"], 1);
    let q = api
        .wait_for(&a, |q| {
            q["configuration"]
                .as_array()
                .unwrap()
                .contains(&json!("ticked"))
        })
        .await;
    assert_eq!(q["pending_timers"], 0);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_script_is_stopped_and_other_sessions_carry_on() {
    let mut config = base_config();
    config.limits.script_loop_iterations = 200_000;
    let api = Api::start(config).await;
    let stuck = api
        .start_session(&[("src", &fixture("runaway.scxml"))])
        .await;
    let other = api
        .start_session(&[("src", &fixture("counter.scxml"))])
        .await;
    let r = api
        .form(&format!("/scxml/session/{stuck}/event/spin"), &[])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["configuration"], json!(["stopped"]));
    let r = api
        .form(&format!("/scxml/session/{other}/event/add"), &[("n", "1")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(api.get("/health").await.body["status"], "ok");
    api.stop().await;
}

/// A session that sends itself an event on every entry never goes idle;
/// its worker still serves every other session and the API between its
/// batches, and terminating it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_feeding_itself_events_does_not_freeze_its_worker() {
    let mut config = base_config();
    config.workers = 1;
    let api = Api::start(config).await;
    let busy = api
        .start_session(&[("src", &fixture("self_feeding.scxml"))])
        .await;
    let other = api
        .start_session(&[("src", &fixture("counter.scxml"))])
        .await;
    let r = api
        .form(&format!("/scxml/session/{other}/event/add"), &[("n", "1")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let q = api.query(&busy).await;
    assert!(q["data"]["turns"].as_u64().unwrap_or(0) > 1, "{q}");
    let r = api
        .form(&format!("/scxml/session/{busy}/terminate"), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.query(&busy).await["status"], "terminated");
    api.stop().await;
}

/// An eventless loop whose every microstep runs a long script is stopped
/// by the macrostep time budget (`limits.max_macrostep_ms`), long before
/// the microstep limit, and the worker goes on serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_macrostep_past_its_time_budget_stops_the_session() {
    let mut config = base_config();
    config.workers = 1;
    config.limits.max_macrostep_ms = 200;
    let api = Api::start(config).await;
    let slow = api
        .start_session(&[("src", &fixture("slow_loop.scxml"))])
        .await;
    let other = api
        .start_session(&[("src", &fixture("counter.scxml"))])
        .await;
    let r = api
        .form(&format!("/scxml/session/{other}/event/add"), &[("n", "1")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let q = api.query(&slow).await;
    assert_ne!(q["status"], "running", "{q}");
    let turns = q["data"]["turns"].as_u64().unwrap_or(0);
    assert!(turns > 1 && turns < 100_000, "{q}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_list_pages_and_filters() {
    let api = Api::start(base_config()).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            api.start_session(&[("src", &fixture("counter.scxml"))])
                .await,
        );
    }
    api.form(&format!("/scxml/session/{}/event/stop", ids[0]), &[])
        .await;
    let page = api.get("/scxml/sessions?offset=1&limit=2").await.body;
    assert_eq!(page["total"], 5);
    assert_eq!(page["sessions"].as_array().unwrap().len(), 2);
    let all = api.get("/scxml/sessions").await.body;
    let listed: Vec<&str> = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessionid"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let running = api.get("/scxml/sessions?status=running").await.body;
    assert_eq!(running["total"], 4);
    let done = api.get("/scxml/sessions?status=completed").await.body;
    assert_eq!(done["sessions"][0]["sessionid"], ids[0].as_str());
    let health = api.get("/health").await.body;
    assert_eq!(health["sessions_running"], 4);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_talk_over_the_basic_http_processor() {
    let api = Api::start(base_config()).await;
    let src = fixture("basichttp_peer.scxml");
    let b = api.start_session(&[("src", &src)]).await;
    let b_location = api.query(&b).await["data"]["my_location"]
        .as_str()
        .expect("a Basic HTTP location")
        .to_string();
    assert_eq!(b_location, format!("{}/basichttp/{b}", api.base));
    let a = api
        .start_session(&[("src", &src), ("peer_location", &b_location)])
        .await;
    let a_location = api.query(&a).await["data"]["my_location"].clone();
    api.form(&format!("/scxml/session/{a}/event/poke"), &[])
        .await;
    let q = api.wait_for(&b, |q| q["data"]["hellos"] == 1).await;
    assert_eq!(q["data"]["last_origin"], a_location);

    // A peer that cannot be reached: error.communication in the sender.
    let c = api
        .start_session(&[
            ("src", &src),
            ("peer_location", "http://127.0.0.1:9/basichttp/x"),
        ])
        .await;
    api.form(&format!("/scxml/session/{c}/event/poke"), &[])
        .await;
    api.wait_for(&c, |q| q["data"]["failures"] == 1).await;

    // An outside client posts an event by name.
    let r = api
        .form(&format!("/basichttp/{b}"), &[("_scxmleventname", "hello")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    api.wait_for(&b, |q| q["data"]["hellos"] == 2).await;

    // Targets outside the allow-list are refused: error.communication.
    let mut config = base_config();
    config.security.allowed_hosts = vec!["example.com".into()];
    let strict = Api::start(config).await;
    let d = strict
        .start_session(&[("src", &src), ("peer_location", &b_location)])
        .await;
    strict
        .form(&format!("/scxml/session/{d}/event/poke"), &[])
        .await;
    strict.wait_for(&d, |q| q["data"]["failures"] == 1).await;
    assert_eq!(api.query(&b).await["data"]["hellos"], 2);
    strict.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_answer_in_process_without_a_socket() {
    let server = common::in_process(base_config()).await;
    let api = server.api().requiring_json();
    let id = api
        .start_session(&[("src", &fixture("counter.scxml"))])
        .await;
    for n in ["2", "5"] {
        let r = api.event(&id, "add", &[("n", n)]).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = api.request(&id, "check-total", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"total": 7, "label": "none"}));
    let r = api.list("").await;
    assert_eq!(r.body["total"], 1, "{}", r.body);
    let r = api.terminate(&id).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.query_ok(&id).await["status"], "terminated");
    let r = api.query("no-such-session").await;
    assert_eq!(r.status, 404, "{}", r.body);
    server.stop().await;
}

/// A JSON body nesting deeper than the door's limit is refused with 400,
/// on the ORS API and the GMS API alike (the 125-level user field a
/// customer could send made a session that could not be restored after
/// hibernation); a body within the limit starts a session as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_nested_too_deep_are_refused_at_the_door() {
    let server = spawn_server(base_config()).await;
    let api = server.api();
    let nest = |levels: usize| {
        let mut v = json!("x");
        for _ in 0..levels {
            v = json!({ "k": v });
        }
        v
    };
    let deep_callback = json!({ "_customer_number": "5551234", "usr_deep": nest(125) });
    let r = api
        .json("/genesys/1/service/callback/chat-immediate", &deep_callback)
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"], "json_too_deep");
    let src = fixture("counter.scxml");
    let r = api
        .json(
            "/scxml/session/start",
            &json!({ "src": src, "deep": nest(125) }),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"], "json_too_deep");
    let r = api
        .json(
            "/scxml/session/start",
            &json!({ "src": src, "deep": nest(20) }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["sessionid"]
        .as_str()
        .expect("a session id")
        .to_string();
    let data = api.query_ok(&id).await;
    let mut v = &data["data"]["deep"];
    for _ in 0..20 {
        v = &v["k"];
    }
    assert_eq!(*v, json!("x"), "{data}");
    server.stop().await;
}

/// The dialect a script object names wins over what `<scxml>` calls for:
/// an ORS document (quoted `<send>` expressions) runs to its end through
/// a plain URL, and is refused when a script object reads it as W3C SCXML
/// (a quoted delay is no W3C delay); the two readings are cached apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_object_can_name_the_dialect_its_documents_are_read_as() {
    let mut config = base_config();
    let url = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/ors/send_expressions.scxml")
        .display()
        .to_string();
    config
        .security
        .allowed_dirs
        .push(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"));
    config.scripts.insert(
        "AsRec".into(),
        ScriptObject {
            url: url.clone(),
            alternate_url: None,
            params: serde_json::Map::new(),
            dialect: Some(ors::model::Dialect::W3c),
        },
    );
    let api = Api::start(config).await;
    let id = api.start_session(&[("src", &url)]).await;
    let q = api.wait_for(&id, |q| q["status"] != "running").await;
    assert_eq!(q["configuration"], json!([]), "{q}");
    assert_eq!(q["status"], "completed", "{q}");
    let r = api
        .form("/scxml/session/start", &[("src", "script:AsRec")])
        .await;
    assert_error(&r, 422, "document_invalid");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not a valid delay"),
        "{}",
        r.body
    );
    api.stop().await;
}

/// `/ors/help` lists every route of the server (ORS, GMS, CometD, the
/// simulator's admin API, Basic HTTP) with its methods and access, and
/// every route it lists is one the server serves with those methods;
/// replies end with a newline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_every_route_the_server_serves() {
    let api = Api::start(base_config()).await;
    let r = api.get("/ors/help").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let routes = r.body["routes"].as_array().expect("routes").clone();
    let listed = |path: &str| routes.iter().any(|e| e["path"] == path);
    for path in [
        "/scxml/session/start",
        "/scxml/session/{id}/event/{name}",
        "/health",
        "/metrics",
        "/basichttp/{id}",
        "/genesys/1/service/callback/{service}",
        "/genesys/1/service/{id}/ixn/chat/{operation}",
        "/genesys/cometd",
        "/sim/agents/{id}/chats/{chat_id}/accept",
        "/sim/interactions",
    ] {
        assert!(listed(path), "{path} is not listed: {}", r.body);
    }
    assert!(routes.len() >= 30, "{}", routes.len());
    for entry in &routes {
        let path = entry["path"].as_str().expect("path");
        assert!(
            entry["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{entry}"
        );
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in entry["methods"].as_array().expect("methods") {
            let method = match method.as_str().expect("a method") {
                "ANY" => Method::GET,
                m => Method::from_bytes(m.as_bytes()).expect("a method name"),
            };
            let reply = api
                .server
                .api()
                .call(method.clone(), &concrete, None, String::new())
                .await;
            let text = reply.body.to_string();
            assert!(
                !text.contains("no route for") && reply.status != 405,
                "{method} {concrete} is listed but not served: {} {text}",
                reply.status
            );
        }
    }
    let raw = reqwest::get(format!("{}/health", api.base))
        .await
        .expect("health")
        .text()
        .await
        .expect("body");
    assert!(raw.ends_with("}\n"), "{raw:?}");
    api.server.stop().await;
}
