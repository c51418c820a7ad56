//! `ors serve`: the orchestration server. It owns the worker pool that
//! hosts sessions ([`worker`]), the ORS REST API ([`api`]), where
//! documents come from ([`documents`]), settings ([`config`]) and
//! operations ([`metrics`], logging, shutdown).
//!
//! [`run`] serves on a listener until a shutdown future completes; tests
//! bind port 0 and call the same function. [`api::router`] builds the
//! routes separately from serving.

pub mod api;
pub mod config;
pub mod documents;
pub mod error;
pub mod interactions;
pub mod metrics;
pub mod params;
pub mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::oneshot;

pub use config::Config;
use documents::Documents;
use error::ApiError;
use metrics::Metrics;
use worker::{Command, Pool, SessionView};

use crate::interpreter::CustomActions;

/// An answer to a `/request/{name}` call, produced by `<session:response>`.
#[derive(Debug, Clone)]
pub struct ResponseBody {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}

/// Requests waiting for a session's `<session:response>`, by request id.
#[derive(Default)]
pub struct PendingResponses {
    waiting: Mutex<HashMap<String, oneshot::Sender<ResponseBody>>>,
}

impl PendingResponses {
    /// Registers a request; the receiver gets the answer.
    pub fn register(&self, requestid: &str) -> oneshot::Receiver<ResponseBody> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(requestid.to_string(), tx);
        }
        rx
    }

    /// Hands an answer to the waiting request; false when none waits.
    pub fn complete(&self, requestid: &str, status: u16, body: Value) -> bool {
        let sender = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(requestid));
        match sender {
            Some(tx) => tx.send(ResponseBody { status, body }).is_ok(),
            None => false,
        }
    }

    /// Forgets a request that gave up waiting.
    pub fn cancel(&self, requestid: &str) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(requestid);
        }
    }
}

/// State shared by the HTTP handlers, the workers and module jobs.
pub struct ServerContext {
    /// Settings.
    pub config: Arc<Config>,
    /// The session workers.
    pub pool: Pool,
    /// Document cache and allow-list.
    pub documents: Documents,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// `/request` calls waiting for an answer.
    pub responses: PendingResponses,
    /// The module actions sessions can use.
    pub custom_actions: Arc<CustomActions>,
    /// The script that defines `_genesys` in each session.
    pub prelude: Arc<str>,
    /// Location prefix of sessions for the Basic HTTP Event I/O Processor
    /// (`http://<listen address>/basichttp/`).
    pub basichttp_base: String,
    /// Where sessions are persisted (`None`: memory only).
    pub store: Option<Arc<dyn crate::store::Store>>,
    /// The group committer in front of the store.
    pub commits: Option<crate::store::CommitHandle>,
    /// The multi-threaded runtime the server was built in (store I/O).
    pub runtime: tokio::runtime::Handle,
    /// Documents read back from the store, by hash.
    pub stored_documents: Mutex<HashMap<String, Arc<crate::model::Document>>>,
    /// The routing and chat backends.
    pub backends: crate::backends::Backends,
    /// The embedded simulator, when a backend is embedded (admin API).
    pub simulator: Option<Arc<crate::backends::simulator::Simulator>>,
    /// Interactions under the server's control.
    pub interactions: interactions::Interactions,
    /// The GMS services.
    pub gms: crate::gms::Gms,
    /// The CometD endpoint devices receive pushes from.
    pub comet: Arc<crate::gms::cometd::CometHub>,
    request_counter: AtomicU64,
}

thread_local! {
    static HTTP_CLIENT: std::cell::OnceCell<reqwest::Client> = const { std::cell::OnceCell::new() };
}

impl ServerContext {
    /// A fresh request id (for module actions and `/request` calls).
    pub fn new_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        crate::ids::request_id(n)
    }

    /// An HTTP client for the current thread (each worker runtime keeps
    /// its own connections).
    pub fn http_client(&self) -> reqwest::Client {
        HTTP_CLIENT.with(|c| {
            c.get_or_init(|| {
                crate::loader::http_client(std::time::Duration::from_millis(
                    self.config.limits.fetch_timeout_ms,
                ))
            })
            .clone()
        })
    }

    /// Resolves `src` and starts a session of it with `params` as data.
    pub async fn start_session(
        &self,
        src: &str,
        params: Map<String, Value>,
        idealtime: Option<u64>,
    ) -> Result<SessionView, ApiError> {
        let id = self.pool.new_session_id();
        self.start_session_with_id(id, src, params, idealtime).await
    }

    /// Like [`ServerContext::start_session`] with an id made beforehand.
    pub async fn start_session_with_id(
        &self,
        id: String,
        src: &str,
        params: Map<String, Value>,
        idealtime: Option<u64>,
    ) -> Result<SessionView, ApiError> {
        let resolved = self.documents.resolve(src).await?;
        // Script object parameters first; start parameters override them.
        let mut data = resolved.params;
        data.extend(params);
        let mut session_data = data.clone();
        if !session_data.contains_key("_data") {
            session_data.insert("_data".into(), Value::Object(data));
        }
        // Reserve a place under the cap before the worker counts the session.
        let max = self.config.limits.max_sessions as u64;
        let reserved =
            self.metrics
                .sessions_running
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                });
        if let Err(running) = reserved {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                format!(
                    "{running} sessions are running, the configured maximum (limits.max_sessions)"
                ),
            ));
        }
        let (tx, rx) = oneshot::channel();
        let sent = self.pool.send(
            &id,
            Command::Start {
                id: id.clone(),
                doc: resolved.doc,
                data: session_data,
                src: resolved.url,
                idealtime,
                reply: Some(tx),
            },
        );
        if let Err(e) = sent {
            Metrics::dec(&self.metrics.sessions_running);
            return Err(e);
        }
        rx.await
            .unwrap_or_else(|_| Err(ApiError::internal("the worker dropped a start request")))
    }
}

/// A server that is running; [`RunningServer::shutdown`] stops it.
pub struct RunningServer {
    /// The address the API listens on.
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, finishes open requests, stops the workers.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Builds the shared state, opens the store (running its migrations),
/// starts the workers and hands them the sessions the store holds as
/// running; `addr` is where the API listens (it names sessions' Basic HTTP
/// locations). Call it inside a multi-threaded tokio runtime.
pub async fn build(
    mut config: Config,
    addr: std::net::SocketAddr,
) -> std::io::Result<(Arc<ServerContext>, Vec<std::thread::JoinHandle<()>>)> {
    let base_url = format!("http://{addr}");
    // The inbound chat strategy's script object, as the seed configures
    // it, unless the configuration defines its own.
    if config.script(config::INBOUND_SCRIPT).is_none() {
        let mut params = serde_json::Map::new();
        params.insert("app_find_agent_timeout".into(), Value::from(30));
        params.insert(
            "app_selected_agent_group".into(),
            Value::from("Chat_Overflow"),
        );
        config.scripts.insert(
            config::INBOUND_SCRIPT.to_string(),
            config::ScriptObject {
                url: format!("{base_url}{}/inbound_chat.scxml", crate::gms::DOCUMENT_PATH),
                alternate_url: None,
                params,
            },
        );
    }
    let (backends, simulator) =
        crate::backends::simulator::build(&config.backends).map_err(std::io::Error::other)?;
    let config = Arc::new(config);
    let comet = crate::gms::cometd::CometHub::new(config.gms.cometd.clone());
    let metrics = Arc::new(Metrics::default());
    let mut actions = CustomActions::default();
    crate::modules::register_all(&mut actions);
    let custom_actions = Arc::new(actions);
    let location = config
        .store_location()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let store = crate::store::open(&location, config.store.max_connections)
        .await
        .map_err(|e| std::io::Error::other(format!("cannot open the session store: {e}")))?;
    let commits = store.as_ref().map(|store| {
        let (committer, handle) = crate::store::Committer::new(store.clone());
        tokio::spawn(committer.run());
        handle
    });
    let recovered = match &store {
        Some(store) => store
            .running_roots()
            .await
            .map_err(|e| std::io::Error::other(format!("cannot read the session store: {e}")))?,
        None => Vec::new(),
    };
    let (pool, receivers) = Pool::new(config.worker_count());
    let gms = crate::gms::Gms {
        services: config
            .gms
            .services
            .iter()
            .filter_map(|(name, options)| {
                crate::gms::service::Service::new(name, options)
                    .ok()
                    .map(|s| (name.clone(), s))
            })
            .collect(),
        records: crate::gms::records::Records::new(store.clone(), commits.clone()),
        chats: crate::gms::chat_api::ChatBindings::default(),
        pusher: comet.clone(),
        base_url,
    };

    let ctx = Arc::new(ServerContext {
        documents: Documents::new(config.clone(), custom_actions.clone(), metrics.clone()),
        prelude: crate::modules::session::prelude(&config.server_name).into(),
        basichttp_base: format!("http://{addr}/basichttp/"),
        config,
        pool,
        metrics,
        responses: PendingResponses::default(),
        custom_actions,
        store,
        commits,
        stored_documents: Mutex::new(HashMap::new()),
        runtime: tokio::runtime::Handle::current(),
        gms,
        comet,
        backends,
        simulator,
        interactions: interactions::Interactions::default(),
        request_counter: AtomicU64::new(1),
    });
    let n = recovered.len() as u64;
    ctx.metrics.sessions_running.fetch_add(n, Ordering::Relaxed);
    ctx.metrics
        .sessions_hibernated
        .fetch_add(n, Ordering::Relaxed);
    let mut by_worker: Vec<Vec<crate::store::RootSummary>> = vec![Vec::new(); ctx.pool.len()];
    for root in recovered {
        match worker::worker_of(&root.id, ctx.pool.len()) {
            Some(w) => by_worker[w].push(root),
            None => {
                tracing::warn!(session = %root.id, "stored session with a malformed id skipped")
            }
        }
    }
    for (w, roots) in by_worker.into_iter().enumerate() {
        ctx.pool.send_to_worker(w, Command::Recover { roots });
    }
    if let Some(store) = ctx.store.clone() {
        tokio::spawn(purge_halted(store, ctx.config.clone()));
    }
    tokio::spawn(purge_callbacks(ctx.clone()));
    tokio::spawn(interactions::follow_chats(ctx.clone()));
    tokio::spawn(crate::gms::chat_api::push_chat_updates(ctx.clone()));
    let workers = worker::spawn_workers(ctx.clone(), receivers);
    Ok((ctx, workers))
}

/// Deletes halted sessions from the store once they are older than the
/// retention time, every `store.purge_interval_secs`.
async fn purge_halted(store: Arc<dyn crate::store::Store>, config: Arc<Config>) {
    let every = std::time::Duration::from_secs(config.store.purge_interval_secs.max(1));
    let keep_ms = config.limits.halted_retention_secs.saturating_mul(1000) as i64;
    loop {
        tokio::time::sleep(every).await;
        let cut = crate::host::wall_clock_ms() as i64 - keep_ms;
        match store.purge_halted(cut).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "halted sessions purged from the store"),
            Err(e) => tracing::warn!(error = %e, "purging halted sessions failed"),
        }
    }
}

/// Deletes callback records past their `_ttl`, every
/// `store.purge_interval_secs`.
async fn purge_callbacks(ctx: Arc<ServerContext>) {
    let every = std::time::Duration::from_secs(ctx.config.store.purge_interval_secs.max(1));
    loop {
        tokio::time::sleep(every).await;
        match ctx.gms.records.purge().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "expired callback records purged"),
            Err(e) => tracing::warn!(error = %e, "purging callback records failed"),
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes, then stops the
/// workers (two phases: no new requests, then workers finish their batch
/// and wait for its commit).
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let (ctx, workers) = build(config, addr).await?;
    let app = api::router(ctx.clone());
    tracing::info!(%addr, workers = ctx.pool.len(), store = ctx.store.as_ref().map_or("none", |s| s.backend()), "ors serve listening");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    tracing::info!("HTTP stopped; stopping workers");
    ctx.pool.broadcast(|| Command::Stop);
    let joined = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    });
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), joined).await;
    served
}

/// Starts a server on `listener` in the current runtime (for tests and
/// embedding).
pub fn spawn(listener: tokio::net::TcpListener, config: Config) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(run(listener, config, async move {
        let _ = stopped.await;
    }));
    Ok(RunningServer {
        addr,
        stop: Some(stop),
        done,
    })
}

/// Resolves when the process gets SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
