//! A proxy in front of a backend that holds chosen requests until the test
//! opens its gate, so that a race between two parts of the server can be
//! set up step by step instead of left to timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use tokio::sync::watch;

/// A running proxy (served until the test's runtime ends).
pub struct GatedProxy {
    /// `http://127.0.0.1:<port>`: the backend URL to give the server.
    pub base: String,
    open: watch::Sender<bool>,
    held: Arc<AtomicUsize>,
}

impl GatedProxy {
    /// Lets every held request (and every later one) through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// How many requests the gate has held so far (including those let
    /// through since).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

/// Serves, on a free loopback port, a proxy to `upstream` (a base URL)
/// that forwards every request, except that each one `holds(method, path)`
/// chooses waits until [`GatedProxy::open`].
pub async fn gated_proxy(
    upstream: String,
    holds: impl Fn(&Method, &str) -> bool + Send + Sync + 'static,
) -> GatedProxy {
    let (open, gate) = watch::channel(false);
    let held = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let holds = Arc::new(holds);
    let counter = held.clone();
    let forward = move |req: Request| {
        let (client, upstream, mut gate) = (client.clone(), upstream.clone(), gate.clone());
        let (holds, counter) = (holds.clone(), counter.clone());
        async move {
            let method = req.method().clone();
            let target = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let path = req.uri().path().to_string();
            let content_type = req.headers().get("content-type").cloned();
            let body = to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            if holds(&method, &path) {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = gate.wait_for(|open| *open).await;
            }
            let mut call = client
                .request(method, format!("{upstream}{target}"))
                .body(body);
            if let Some(t) = content_type {
                call = call.header("content-type", t);
            }
            let (status, content_type, bytes) = match call.send().await {
                Ok(reply) => {
                    let status = reply.status();
                    let ct = reply.headers().get("content-type").cloned();
                    (status, ct, reply.bytes().await.unwrap_or_default())
                }
                Err(_) => (
                    axum::http::StatusCode::BAD_GATEWAY,
                    None,
                    Default::default(),
                ),
            };
            let mut response = Response::builder().status(status);
            if let Some(t) = content_type {
                response = response.header("content-type", t);
            }
            response.body(Body::from(bytes)).expect("a response")
        }
    };
    let app = axum::Router::new().fallback(forward);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let base = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    GatedProxy { base, open, held }
}
