//! `ors serve`: the orchestration server. It owns the worker pool that
//! hosts sessions ([`worker`]), the ORS REST API ([`api`]), where
//! documents come from ([`documents`]), settings ([`config`]) and
//! operations ([`metrics`], logging, shutdown), and the HTTP front door
//! with its timeouts and connection limits ([`connections`]).
//!
//! [`run`] serves on a listener until a shutdown future completes; tests
//! bind port 0 and call the same function. [`api::router`] builds the
//! routes separately from serving.

pub mod api;
pub mod auth;
pub mod config;
pub mod connections;
pub mod documents;
pub mod error;
pub mod extension;
pub mod logging;
pub mod metrics;
pub mod outbox;
pub mod params;
pub mod prelude;
pub mod routes;
pub mod sessions;
pub mod watchdog;
pub mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::oneshot;

pub use config::Config;
use documents::Documents;
pub use extension::{Extension, ExtensionError, Plugged, ServerHandles, SessionHook};
use metrics::Metrics;
pub use sessions::Sessions;
use worker::{Command, Pool, WorkerContext};

use crate::interpreter::CustomActions;
use crate::model::{CustomActionClaims, NoCustomActions};

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

thread_local! {
    static HTTP_CLIENT: std::cell::OnceCell<reqwest::Client> = const { std::cell::OnceCell::new() };
}

thread_local! {
    static CHECKED_CLIENT: std::cell::OnceCell<reqwest::Client> = const { std::cell::OnceCell::new() };
}

/// Like [`http_client`], but every redirect hop must pass `policy` (the
/// server's allow-list; the first call on a thread decides it).
pub fn checked_http_client(
    timeout_ms: u64,
    policy: &crate::host::loader::UrlPolicy,
) -> reqwest::Client {
    CHECKED_CLIENT.with(|c| {
        c.get_or_init(|| {
            let policy = policy.clone();
            crate::io::http::http_client_checked(
                std::time::Duration::from_millis(timeout_ms),
                std::sync::Arc::new(move |url: &str| policy.check(url).map_err(|e| e.to_string())),
            )
        })
        .clone()
    })
}

/// An HTTP client for the current thread with a `timeout_ms` timeout (the
/// first call on a thread decides it; each worker runtime keeps its own
/// connections).
pub fn http_client(timeout_ms: u64) -> reqwest::Client {
    HTTP_CLIENT.with(|c| {
        c.get_or_init(|| crate::io::http::http_client(std::time::Duration::from_millis(timeout_ms)))
            .clone()
    })
}

/// The custom action table, readable by the document cache before the
/// extensions have registered into it (the parser asks which elements are
/// claimed; nothing is parsed before the table is complete).
#[derive(Default)]
struct LateClaims(std::sync::OnceLock<Arc<CustomActions>>);

impl CustomActionClaims for LateClaims {
    fn claims(&self, namespace: &str, name: &str) -> bool {
        match self.0.get() {
            Some(actions) => actions.claims(namespace, name),
            None => NoCustomActions.claims(namespace, name),
        }
    }
}

/// A server built and ready to serve: its routes, the handles its parts
/// share, and the worker threads.
pub struct Server {
    /// What the core lends its parts.
    pub handles: ServerHandles,
    router: axum::Router,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Every route: the ORS API and each extension's, behind the guard.
    /// Clone it for in-process (`oneshot`) requests.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Tells the workers to finish their batch and waits for them (at
    /// most 15 s).
    pub async fn stop_workers(self) {
        self.handles.sessions.pool().broadcast(|| Command::Stop);
        let workers = self.workers;
        let joined = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        });
        if tokio::time::timeout(std::time::Duration::from_secs(15), joined)
            .await
            .is_err()
        {
            tracing::warn!(
                "a worker did not stop within 15 s (a session stuck in a script); leaving it"
            );
        }
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

/// Builds the server: opens the store (running the core's migrations and
/// the extensions'), starts `extensions` (their custom actions, tasks and
/// routes), starts the workers and hands them the sessions the store holds
/// as running; `addr` is where the API listens (it names sessions' Basic
/// HTTP locations and the server's own base URL). Call it inside a
/// multi-threaded tokio runtime.
pub async fn build(
    mut config: Config,
    extensions: &[Arc<dyn Extension>],
    addr: std::net::SocketAddr,
) -> std::io::Result<Server> {
    // The server's own address, as its documents are fetched: loopback
    // when it listens on every interface.
    let own = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    };
    let base_url = format!("http://{own}");
    crate::parser::xml::set_depth_limit(config.documents.max_nesting);
    let mut operator = config.security.operator_credentials();
    match auth::ensure_operator_token(&mut operator, &config.data_dir) {
        Ok(Some(path)) => tracing::info!(
            file = %path.display(),
            "no operator credential is configured: the operator API takes the bearer token kept in this file"
        ),
        Ok(None) => {}
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    }
    config.security.operator = operator;
    for extension in extensions {
        for (name, object) in extension.script_objects(&base_url) {
            let configured = config
                .scripts
                .iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case(&name))
                .map(|(_, s)| s);
            match configured {
                None => {
                    config.scripts.insert(name, object);
                }
                // Configured without a url: the service's own address,
                // with the configured parameters over the service's.
                Some(s) if s.url.trim().is_empty() => {
                    s.url = object.url;
                    if s.alternate_url.is_none() {
                        s.alternate_url = object.alternate_url;
                    }
                    for (k, v) in object.params {
                        s.params.entry(k).or_insert(v);
                    }
                    if s.dialect.is_none() {
                        s.dialect = object.dialect;
                    }
                }
                Some(_) => {}
            }
        }
    }
    if let Some((name, _)) = config.scripts.iter().find(|(_, s)| s.url.trim().is_empty()) {
        return Err(std::io::Error::other(format!(
            "scripts.{name}: 'url' is empty, and no service of this server defines a script \
             object of that name"
        )));
    }
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    let location = config
        .store_location()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let migrations: Vec<crate::store::Migration> = extensions
        .iter()
        .flat_map(|e| e.migrations().iter().copied())
        .collect();
    let store = crate::store::open(&location, config.store.max_connections, &migrations)
        .await
        .map_err(|e| std::io::Error::other(format!("cannot open the session store: {e}")))?;
    let commits = store.as_ref().map(|store| {
        let (committer, handle) = crate::store::Committer::new(store.clone());
        tokio::spawn(committer.run());
        handle
    });
    if let Some(store) = &store {
        watchdog::quarantine(store, &config.data_dir)
            .await
            .map_err(|e| std::io::Error::other(format!("cannot quarantine sessions: {e}")))?;
    }
    let watch = if config.watchdog {
        let journal = store
            .as_ref()
            .map(|_| config.data_dir.join(watchdog::JOURNAL_FILE));
        let watch = Arc::new(watchdog::Watch::new(
            config.worker_count(),
            journal.as_deref(),
        )?);
        watchdog::spawn(
            watch.clone(),
            watchdog::WatchdogLimits::from_config(&config),
        )?;
        Some(watch)
    } else {
        None
    };
    let recovered = match &store {
        Some(store) => store
            .running_roots()
            .await
            .map_err(|e| std::io::Error::other(format!("cannot read the session store: {e}")))?,
        None => Vec::new(),
    };
    // Read before anything of this process can write a letter.
    let letters = match &store {
        Some(store) => outbox::read_all(store.as_ref())
            .await
            .map_err(|e| std::io::Error::other(format!("cannot read the outbox: {e}")))?,
        None => Vec::new(),
    };
    let (pool, receivers) = Pool::new(config.worker_count());
    let claims = Arc::new(LateClaims::default());
    let documents = Arc::new(Documents::new(
        config.clone(),
        claims.clone(),
        metrics.clone(),
    ));
    let sessions = Sessions::new(
        pool,
        commits.clone(),
        documents.clone(),
        metrics.clone(),
        config.limits.max_sessions,
    );
    let handles = ServerHandles {
        config: config.clone(),
        sessions: sessions.clone(),
        metrics: metrics.clone(),
        responses: Arc::new(PendingResponses::default()),
        store: store.clone(),
        commits: commits.clone(),
        base_url,
    };
    let mut actions = CustomActions::default();
    let mut plugged = Vec::new();
    for extension in extensions {
        let p = extension
            .start(&handles, &mut actions)
            .map_err(std::io::Error::other)?;
        plugged.push(p);
    }
    let custom_actions = Arc::new(actions);
    let _ = claims.0.set(custom_actions.clone());
    for restore in plugged.iter_mut().filter_map(|p| p.restore.take()) {
        restore.await.map_err(|e| {
            std::io::Error::other(format!("cannot read an extension's state back: {e}"))
        })?;
    }
    let hooks = plugged
        .iter_mut()
        .filter_map(|p| p.session_hook.take())
        .collect();
    let session_prelude = std::iter::once(prelude::prelude(&config.server_name))
        .chain(extensions.iter().flat_map(|e| e.prelude()))
        .collect::<Vec<_>>()
        // The prelude is evaluated as one expression: pieces are joined
        // by the comma operator.
        .join(",\n");
    let worker_ctx = Arc::new(WorkerContext {
        config: config.clone(),
        sessions: sessions.clone(),
        documents,
        metrics: metrics.clone(),
        store: store.clone(),
        commits,
        custom_actions,
        prelude: session_prelude.into(),
        basichttp_base: format!("http://{addr}/basichttp/"),
        runtime: tokio::runtime::Handle::current(),
        stored_documents: Mutex::new(HashMap::new()),
        hooks,
        watch,
    });
    let n = recovered.len() as u64;
    metrics.sessions_running.fetch_add(n, Ordering::Relaxed);
    metrics.sessions_hibernated.fetch_add(n, Ordering::Relaxed);
    let pool = sessions.pool();
    let mut by_worker: Vec<Vec<crate::store::RootSummary>> = vec![Vec::new(); pool.len()];
    for root in recovered {
        match worker::worker_of(&root.id, pool.len()) {
            Some(w) => by_worker[w].push(root),
            None => {
                tracing::warn!(session = %root.id, "stored session with a malformed id skipped")
            }
        }
    }
    let mut letters_by_worker: Vec<Vec<outbox::Letter>> = vec![Vec::new(); pool.len()];
    let mut undeliverable = Vec::new();
    for letter in letters {
        match worker::worker_of(&letter.target, pool.len()) {
            Some(w) => letters_by_worker[w].push(letter),
            None => undeliverable.push(letter.id),
        }
    }
    if let Some(store) = &store {
        for statement in outbox::delete_statements(&undeliverable) {
            store
                .execute(&statement)
                .await
                .map_err(|e| std::io::Error::other(format!("cannot write the outbox: {e}")))?;
        }
    }
    for (w, (roots, letters)) in by_worker.into_iter().zip(letters_by_worker).enumerate() {
        pool.send_to_worker(w, Command::Recover { roots, letters });
    }
    for task in plugged
        .iter_mut()
        .flat_map(|p| std::mem::take(&mut p.tasks))
    {
        tokio::spawn(task);
    }
    if let Some(store) = store {
        tokio::spawn(purge_halted(store, config.clone()));
    }
    let router = api::router(&handles, plugged);
    let workers = worker::spawn_workers(worker_ctx, receivers);
    Ok(Server {
        handles,
        router,
        workers,
    })
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

/// Serves the API on `listener` until `shutdown` completes, then stops the
/// workers (two phases: no new requests, and open ones finish within
/// [`connections::SHUTDOWN_GRACE`]; then workers finish their batch and
/// wait for its commit). Raises the process's open-file limit first and
/// caps `connections.max_connections` by it (see [`connections`]).
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    extensions: Vec<Arc<dyn Extension>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let nofile = connections::raise_file_limit();
    // Files the rest of the server may hold at once: the store's pool
    // (and SQLite's journal files), a few per worker thread.
    let kept_back = u64::from(config.store.max_connections) * 2 + 4 * config.worker_count() as u64;
    let limits = connections::ConnectionLimits::new(&config.connections, nofile, kept_back);
    if limits.max_connections < config.connections.max_connections {
        tracing::warn!(
            configured = config.connections.max_connections,
            max_connections = limits.max_connections,
            reserve_connections = limits.reserve_connections,
            nofile = ?nofile,
            "connections capped by the open-file limit"
        );
    }
    let server = build(config, &extensions, addr).await?;
    // The reserve admits operators: the same check as the operator API's.
    let checked = server.handles.config.clone();
    let operator: connections::OperatorCheck =
        Arc::new(move |parts| checked.security.is_operator(&parts.headers));
    log_what_runs(&server, &extensions, addr, &limits);
    let served = connections::serve(
        listener,
        server.router(),
        limits,
        operator,
        server.handles.metrics.clone(),
        shutdown,
    )
    .await;
    tracing::info!("HTTP stopped; stopping workers");
    let metrics = server.handles.metrics.clone();
    let kept = server.handles.store.is_some();
    server.stop_workers().await;
    let running = metrics
        .sessions_running
        .load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        "ors serve stopped; running sessions: {running}{}",
        if kept {
            ", saved in the store (they resume at the next start)"
        } else {
            ", not kept (no store)"
        }
    );
    served
}

/// The block of log lines a server writes once it is ready: where it
/// listens, its store and data directory, workers, how the operator API
/// is guarded, its script objects, and what each extension runs.
fn log_what_runs(
    server: &Server,
    extensions: &[Arc<dyn Extension>],
    addr: std::net::SocketAddr,
    limits: &connections::ConnectionLimits,
) {
    let config = &server.handles.config;
    tracing::info!(
        %addr,
        version = env!("CARGO_PKG_VERSION"),
        workers = server.handles.sessions.pool().len(),
        max_connections = limits.max_connections,
        "ors serve listening"
    );
    let store = match config.store_location() {
        Ok(crate::store::StoreLocation::None) => {
            "none: sessions live in memory and end with the server".to_string()
        }
        Ok(crate::store::StoreLocation::Sqlite { path, .. }) => {
            format!("SQLite {}", path.display())
        }
        Ok(crate::store::StoreLocation::Postgres { url }) => {
            let host = url.rsplit('@').next().unwrap_or_default();
            format!("PostgreSQL {host}")
        }
        Err(e) => e.to_string(),
    };
    tracing::info!(
        "store: {store}; data directory {}",
        config.data_dir.display()
    );
    let kept = auth::operator_token_path(&config.data_dir);
    let from_file = std::fs::read_to_string(&kept)
        .is_ok_and(|t| config.security.operator.bearer_token.as_deref() == Some(t.trim()));
    tracing::info!(
        "operator API (/scxml, /metrics, /ors/help): {}",
        if from_file {
            format!("the bearer token in {}", kept.display())
        } else {
            "the credential in the configuration".to_string()
        }
    );
    for (name, script) in &config.scripts {
        if script.params.is_empty() {
            tracing::info!("script object '{name}': {}", script.url);
        } else {
            let params: Vec<String> = script
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            tracing::info!(
                "script object '{name}': {} (ApplicationParms {})",
                script.url,
                params.join(", ")
            );
        }
    }
    for extension in extensions {
        for line in extension.summary() {
            tracing::info!("{line}");
        }
    }
}

/// Starts a server on `listener` in the current runtime (for tests and
/// embedding).
pub fn spawn(
    listener: tokio::net::TcpListener,
    config: Config,
    extensions: Vec<Arc<dyn Extension>>,
) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(run(listener, config, extensions, async move {
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
