//! The server under test, two ways: on a real loopback socket bound to
//! port 0 ([`spawn_server`]), or as an in-process `axum::Router` driven with
//! `tower::ServiceExt::oneshot` ([`in_process`]).
//!
//! These two functions are the only places the tests name the server's
//! entry points (`ors::server::connections::bind`, `ors::app::spawn`,
//! `ors::app::build`), so a change of those is adapted here once.

use std::net::SocketAddr;
use std::time::Duration;

use ors::app::Config;
use ors::server::{RunningServer, Server};

use super::client::Api;
use super::wait::eventually;

/// The operator token test servers get when their configuration names no
/// operator credential (so that no token file is written).
pub const OPERATOR_TOKEN: &str = "test-operator-token";

/// Gives `config` the test operator token unless it names an operator
/// credential; returns the operator's bearer token, if any.
fn with_operator(config: &mut Config) -> Option<String> {
    if !config.security.operator_credentials().is_set() {
        config.security.bearer_token = Some(OPERATOR_TOKEN.to_string());
    }
    config.security.operator_credentials().bearer_token
}

/// A server serving on a loopback socket; stop it with [`TestServer::stop`]
/// (dropping it leaves the server running until the test's runtime ends).
pub struct TestServer {
    server: Option<RunningServer>,
    /// The operator's bearer token.
    pub operator_token: Option<String>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://<addr>`.
    pub base: String,
}

/// Binds `127.0.0.1:0` as `ors serve` binds (a deep accept queue), starts
/// the server there with `config`, and waits
/// (at most 20 s) until it answers `/health`: the store opens and recovers
/// before the API answers. Call inside a multi-threaded tokio runtime.
pub async fn spawn_server(mut config: Config) -> TestServer {
    let operator_token = with_operator(&mut config);
    let listener =
        ors::server::connections::bind(([127, 0, 0, 1], 0).into()).expect("bind a loopback port");
    let server = ors::app::spawn(listener, config).expect("server starts");
    let addr = server.addr;
    let base = format!("http://{addr}");
    let probe = ors::io::http::http_client(Duration::from_secs(5));
    let health = format!("{base}/health");
    eventually(
        "the server never answered /health",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let request = probe.get(&health).send();
            async move { request.await.map(|_| ()) }
        },
    )
    .await;
    TestServer {
        server: Some(server),
        operator_token,
        addr,
        base,
    }
}

impl TestServer {
    /// An operator's client of this server (its bearer token, no
    /// `gms_user`).
    pub fn api(&self) -> Api {
        Api::new(&self.base).with_token(self.operator_token.clone())
    }

    /// A customer's client: no credential, no `gms_user`.
    pub fn customer(&self) -> Api {
        Api::new(&self.base)
    }

    /// Stops the server gracefully: HTTP first, then the session workers
    /// after their last commit.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// The server's state and routes without a socket: requests go through
/// [`InProcess::router`] with `tower::ServiceExt::oneshot`.
pub struct InProcess {
    /// Every route of the server.
    pub router: axum::Router,
    /// The operator's bearer token.
    pub operator_token: Option<String>,
    server: Server,
}

/// Builds the server (store, workers, extensions) with `config` and its
/// router, as `ors serve` would, without binding a socket. `addr` only
/// names the sessions' Basic HTTP locations, so a closed port is used.
pub async fn in_process(mut config: Config) -> InProcess {
    let operator_token = with_operator(&mut config);
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("an address");
    let server = ors::app::build(config, addr)
        .await
        .expect("server state builds");
    InProcess {
        router: server.router(),
        operator_token,
        server,
    }
}

impl InProcess {
    /// An operator's client straight into the router.
    pub fn api(&self) -> Api {
        Api::in_process(self.router.clone()).with_token(self.operator_token.clone())
    }

    /// Stops the session workers and waits (at most 15 s) for them to
    /// finish their last batch.
    pub async fn stop(self) {
        self.server.stop_workers().await;
    }
}

/// Serves `router` (a fake peer: a document server, a simulator, a hub) on
/// a loopback port for the rest of the test's runtime; its
/// `http://<addr>`.
pub async fn serve_router(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}
