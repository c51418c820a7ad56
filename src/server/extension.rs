//! The one door through which a service plugs into the server. The core
//! (workers, the ORS REST API, the store, documents, metrics) names no
//! service; an [`Extension`] brings its routes, its custom actions (ORS
//! modules), the tables it keeps in the store, the script objects it
//! provides, its background tasks, and a [`SessionHook`] that sees the
//! events it feeds sessions. It reaches the core only through the narrow
//! handles of [`ServerHandles`].

use std::sync::Arc;

use axum::Router;

use super::config::{Config, ScriptObject};
use super::metrics::Metrics;
use super::sessions::Sessions;
use super::{PendingResponses, http_client};
use crate::datamodel::DataModel;
use crate::interpreter::{CustomActions, Session};
use crate::model::Event;
use crate::store::{CommitHandle, Migration, Store};

/// What the core lends an extension when it starts.
#[derive(Clone)]
pub struct ServerHandles {
    /// The core's settings (limits, security, documents).
    pub config: Arc<Config>,
    /// Starting sessions and sending them events.
    pub sessions: Sessions,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// `/request` calls waiting for a `<session:response>`.
    pub responses: Arc<PendingResponses>,
    /// The store, for the extension's own tables (`None`: memory only).
    pub store: Option<Arc<dyn Store>>,
    /// The group committer: writes acknowledged only once durable.
    pub commits: Option<CommitHandle>,
    /// The server's own base URL (`http://<listen address>`).
    pub base_url: String,
}

impl ServerHandles {
    /// An HTTP client for the current thread, with the configured fetch
    /// timeout (each worker runtime keeps its own connections).
    pub fn http_client(&self) -> reqwest::Client {
        http_client(self.config.limits.fetch_timeout_ms)
    }
}

/// What an extension adds to the server once started.
#[derive(Default)]
pub struct Plugged {
    /// Its routes, with their state applied; merged beside the ORS API.
    /// The extension guards them itself (customer and admin credentials,
    /// with [`super::auth`]); the core only counts their answers.
    pub router: Router,
    /// What `router` serves, for `/ors/help` (built with
    /// [`super::routes::Routes`]).
    pub routes: Vec<super::routes::RouteDoc>,
    /// Sees every external event before a session processes it.
    pub session_hook: Option<Arc<dyn SessionHook>>,
    /// Reads back what the extension keeps in the store; the core awaits
    /// it before the server answers its first request, and does not
    /// start when it fails (the error says why).
    pub restore: Option<futures_util::future::BoxFuture<'static, Result<(), String>>>,
    /// Its background tasks; the core spawns them on the multi-threaded
    /// runtime once every extension has registered its custom actions and
    /// restored its state, and the stored sessions are back with their
    /// workers (so nothing they start is parsed against an incomplete
    /// action table, and an event they send a stored session reaches it).
    pub tasks: Vec<futures_util::future::BoxFuture<'static, ()>>,
}

/// Runs on a session's worker thread, with the session's data model,
/// before the session processes an external event (an extension keeps an
/// object model such as `_genesys.ixn` in step with the events it sends).
///
/// The other methods let a host watching sessions (`ors run --platform`)
/// see what they do; each defaults to nothing.
pub trait SessionHook: Send + Sync {
    /// Called for every external event delivered to a session.
    fn before_event(&self, datamodel: &mut dyn DataModel, event: &Event) {
        let _ = (datamodel, event);
    }

    /// Called after a session's initial macrostep (`event` `None`) and
    /// after each external event it processed, with the session as it
    /// stands.
    fn after_macrostep(&self, session_id: &str, session: &Session, event: Option<&Event>) {
        let _ = (session_id, session, event);
    }

    /// A `<log>` of a session (`label` as written, if any).
    fn on_log(&self, session_id: &str, label: Option<&str>, message: &str) {
        let _ = (session_id, label, message);
    }

    /// Whether the hook wants [`SessionHook::on_trace`] lines (tracing
    /// every state entry and exit costs time, so it is off unless a hook
    /// asks for it).
    fn wants_trace(&self) -> bool {
        false
    }

    /// One trace line: a state entered or exited, a transition taken.
    fn on_trace(&self, session_id: &str, line: &str) {
        let _ = (session_id, line);
    }

    /// The session has ended (completed, terminated or failed): what an
    /// extension keeps for it (requests, interactions it controls) can be
    /// let go. Runs on the session's worker thread, inside its runtime.
    fn session_ended(&self, session_id: &str) {
        let _ = session_id;
    }

    /// A session is restored for the first time after a restart, with
    /// its requests still pending as `(requestid, action event name)`
    /// (possibly none): returns
    /// those the extension resumes itself (it journaled the work and asks
    /// again), so that the session keeps waiting for their answers; the
    /// others are answered `error.<name>` with `error: "interrupted"`. An
    /// extension may also drop here what it journaled for requests the
    /// session no longer waits for.
    fn resume_requests(&self, session_id: &str, pending: &[(&str, &str)]) -> Vec<String> {
        let _ = (session_id, pending);
        Vec::new()
    }
}

/// A service that plugs into the server; see the module docs.
pub trait Extension: Send + Sync {
    /// A short name for logs and the store's migration records.
    fn name(&self) -> &'static str;

    /// Its tables: run when the store opens, before anything starts.
    fn migrations(&self) -> &'static [Migration] {
        &[]
    }

    /// What it runs, for the block of log lines the server writes when it
    /// starts: one line each (services, queues, backends, …).
    fn summary(&self) -> Vec<String> {
        Vec::new()
    }

    /// Script objects it provides when the configuration does not define
    /// one of the same name (`base_url`: the server's own URL).
    fn script_objects(&self, base_url: &str) -> Vec<(String, ScriptObject)> {
        let _ = base_url;
        Vec::new()
    }

    /// ECMAScript pieces every session runs after the core prelude (which
    /// defines `_genesys.session` and `_genesys.ixn`), in order, before its
    /// data is initialised: each defines its module's `_genesys.<module>`
    /// members. Each piece is one expression, typically an immediately
    /// called function (`(function (G) { … })(globalThis._genesys)`),
    /// since the prelude is evaluated as one comma expression. Asked once, when the server starts; extensions' pieces run
    /// in the order the extensions are listed. They run again when a
    /// hibernated session wakes, so they must only define things; a piece
    /// that throws is an `error.execution` in the session, as the core
    /// prelude is. A trait method rather than a field of [`Plugged`], so
    /// that extensions that bring none need not change.
    fn prelude(&self) -> Vec<String> {
        Vec::new()
    }

    /// Plugs in: registers its custom actions in `actions` and returns its
    /// routes, hook and background tasks. Called once, before the workers
    /// start.
    fn start(
        &self,
        server: &ServerHandles,
        actions: &mut CustomActions,
    ) -> Result<Plugged, ExtensionError>;
}

/// Why an extension could not start.
#[derive(Debug, thiserror::Error)]
#[error("{extension}: {message}")]
pub struct ExtensionError {
    /// The extension's name.
    pub extension: &'static str,
    /// What went wrong.
    pub message: String,
}
