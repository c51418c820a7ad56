//! The ceiling for `benches/http/load.sh`'s events phase: an axum server
//! on the same stack as `ors serve` (tokio's multi-threaded runtime with as
//! many threads as `ors serve` has session workers, hyper, axum) whose one
//! handler does nothing but answer the events phase's request shape —
//! `POST /scxml/session/{id}/event/{name}` with a form body `n=…` — with a
//! reply of the shape `ors serve` gives. What `ors serve` reaches divided by
//! what this reaches is the share of the HTTP stack's ceiling the session
//! engine and the store leave.
//!
//! `cargo bench --bench http_ceiling -- --listen 127.0.0.1:PORT [--threads N]`
//! (`load.sh` runs it); `GET /health` answers once it listens. Without
//! `--listen` (as `cargo test --all-targets` runs it) it checks itself
//! instead: one event request on a free port must get the reply shape,
//! then it exits.

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

/// `POST /scxml/session/{id}/event/{name}`: reads `n` from the form body
/// (so the body is read, as `ors serve` reads it) and answers the reply
/// shape of an accepted event.
async fn event(Path((id, name)): Path<(String, String)>, body: Bytes) -> impl IntoResponse {
    let n = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "n")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let reply = serde_json::json!({
        "sessionid": id,
        "event": name,
        "status": "running",
        "configuration": ["idle"],
        "n": n,
    });
    let mut text = reply.to_string();
    text.push('\n');
    ([(header::CONTENT_TYPE, "application/json")], text)
}

fn main() {
    let mut listen: Option<String> = None;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--listen" => listen = Some(args.get(i + 1).cloned().expect("--listen ADDR")),
            "--threads" => {
                threads = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .expect("--threads N")
            }
            // cargo bench passes --bench; anything else is ignored.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let app = Router::new()
            .route("/health", get(|| async { "{\"status\":\"ok\"}\n" }))
            .route("/scxml/session/{id}/event/{name}", post(event));
        let Some(listen) = listen else {
            self_check(app).await;
            return;
        };
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .expect("bind the ceiling's address");
        eprintln!("http ceiling on {listen} ({threads} threads)");
        axum::serve(listener, app).await.expect("serve");
    });
}

/// Serves on a free port for one request, as `load.sh`'s events phase
/// sends it, and checks the reply's shape.
async fn self_check(app: Router) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("address");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = ors::io::http::http_client(std::time::Duration::from_secs(10));
    let reply = client
        .post(format!("http://{addr}/scxml/session/S1/event/ping"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("n=1")
        .send()
        .await
        .expect("the ceiling answers");
    assert!(reply.status().is_success(), "{}", reply.status());
    let text = reply.text().await.expect("a body");
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body["sessionid"], "S1");
    assert_eq!(body["event"], "ping");
    assert_eq!(body["n"], "1");
    server.abort();
    println!("http ceiling: self-check passed on {addr}");
}
