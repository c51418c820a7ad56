//! The SCXML interpreter: Appendix D of the Recommendation over a shared
//! [`Document`] and a running [`Session`] (configuration, queues, history,
//! delayed sends, data model).
//!
//! The core does no I/O and starts no threads. A host (the CLI, the server,
//! tests) calls [`Session::start`], feeds external events with
//! [`Session::enqueue_external`] / [`Session::process_next_external`], fires
//! timers with [`Session::fire_due_timers`], and receives logs and sends to
//! other targets through the [`Host`] trait.

mod algorithm;
mod execute;
mod invoke;
mod snapshot;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

pub use crate::model::{Event, EventKind, parse_delay};
pub use execute::is_scxml_type_uri;
pub use invoke::{ActiveInvoke, InvokeRequest, InvokeSource, is_scxml_invoke_type};
pub use snapshot::{DelayedSnapshot, SessionSnapshot, SnapshotError};

use crate::datamodel::{self, DataModel, ScriptLimits, SystemVariables};
use crate::model::CustomActionClaims;
use crate::model::{CustomAction, Document, StateId, StateSet};

pub use crate::model::SCXML_PROCESSOR;

/// An event bound for a target this session does not own (another session,
/// the parent, an invoked child, an external I/O processor).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outbound {
    /// Target URI as evaluated (`#_scxml_<id>`, `#_parent`, ...).
    pub target: String,
    /// I/O processor type URI.
    pub type_: String,
    /// The event to deliver.
    pub event: Event,
}

/// Work a custom action hands to its host with [`Host::defer`]: a future
/// the host polls on the session's own thread once the macrostep is over.
pub type Deferred = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Why the host could not deliver an [`Outbound`] event; becomes
/// `error.communication`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DispatchError(pub String);

/// What the interpreter needs from whoever runs it.
pub trait Host {
    /// Wall-clock time in milliseconds since the Unix epoch.
    fn now_ms(&mut self) -> u64;
    /// Receives `<log>` output.
    fn log(&mut self, session_id: &str, label: Option<&str>, message: &str);
    /// Delivers an event to a target outside this session.
    fn dispatch(&mut self, session_id: &str, outbound: Outbound) -> Result<(), DispatchError> {
        let _ = session_id;
        Err(DispatchError(format!(
            "no route to target '{}'",
            outbound.target
        )))
    }
    /// Creates and (soon after) starts an invoked child session.
    fn invoke(&mut self, parent_id: &str, request: InvokeRequest) -> Result<(), DispatchError> {
        let _ = (parent_id, request);
        Err(DispatchError("this host does not run <invoke>".into()))
    }
    /// Cancels an invoked child: it is stopped and its later events dropped.
    fn cancel_invoke(&mut self, parent_id: &str, invokeid: &str) {
        let _ = (parent_id, invokeid);
    }
    /// Takes work a custom action hands over to run after the current
    /// macrostep, outside the session (an HTTP call, starting another
    /// session); it reports back with events. A host that runs no such work
    /// (`ors run`) refuses, and the action fails with `error.execution`.
    fn defer(&mut self, job: Deferred) -> Result<(), DispatchError> {
        drop(job);
        Err(DispatchError(
            "this host runs no deferred work (the action needs `ors serve`)".into(),
        ))
    }
    /// Whether the host has an I/O processor of this type besides SCXML's.
    fn supports_type(&self, type_uri: &str) -> bool {
        let _ = type_uri;
        false
    }
    /// A send of I/O processor type `type_uri` addressed to the sending
    /// session's own `location`, as the event that session would receive
    /// had it gone out and come back (the Basic HTTP processor's encoding);
    /// the interpreter queues it at once. `None` sends it normally.
    fn loopback(&mut self, type_uri: &str, location: &str, event: &Event) -> Option<Event> {
        let _ = (type_uri, location, event);
        None
    }
    /// Observer hook: a state was entered (after it joined the configuration).
    fn on_enter(&mut self, session_id: &str, doc: &Document, state: StateId) {
        let _ = (session_id, doc, state);
    }
    /// Observer hook: a state was exited (after its onexit handlers ran).
    fn on_exit(&mut self, session_id: &str, doc: &Document, state: StateId) {
        let _ = (session_id, doc, state);
    }
    /// Observer hook: a transition's content is about to run.
    fn on_transition(
        &mut self,
        session_id: &str,
        doc: &Document,
        transition: crate::model::TransitionId,
    ) {
        let _ = (session_id, doc, transition);
    }
}

/// What a custom action handler may do while it runs.
pub struct ActionScope<'a> {
    /// The session's data model.
    pub datamodel: &'a mut dyn DataModel,
    /// Events the action raises onto the internal queue.
    pub raised: &'a mut Vec<Event>,
    /// The host.
    pub host: &'a mut dyn Host,
    /// The session id.
    pub session_id: &'a str,
    /// The session's requests awaiting an answer: an action whose answer
    /// comes later as an event records it here ([`PendingRequest`]).
    pub requests: &'a mut PendingRequests,
}

/// A request a custom action made of the host that the session has not
/// had answered yet (ORS's asynchronous actions: `gms:lookup`,
/// `queue:submit`, ...). It is part of the session's state, so that a
/// session restored after the server stopped knows which answers will
/// never come ([`Session::interrupt_requests`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PendingRequest {
    /// The action's event name (`gms.lookup`): it is answered by
    /// `<name>.done` or `error.<name>`.
    pub name: String,
    /// What the answer carries besides the request id (`interactionid`,
    /// ...), repeated in the `error.<name>` of an interrupted request.
    pub data: serde_json::Map<String, Value>,
}

/// Requests awaiting an answer, by request id.
pub type PendingRequests = BTreeMap<String, PendingRequest>;

/// Why a custom action refused to run; the interpreter raises
/// `error.execution` with this text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// A mandatory attribute or child element is missing (`<x> needs 'y'`).
    #[error("<{element}> needs {what}")]
    Missing {
        /// The action's element name.
        element: String,
        /// What it needs (`'interactionid'`, `a 'name'`, ...).
        what: String,
    },
    /// An attribute's expression failed, or gave a value of the wrong kind.
    #[error("{attribute}: {message}")]
    Attribute {
        /// The attribute as written (`timeout="t"`).
        attribute: String,
        /// What went wrong.
        message: String,
    },
    /// The action hands work to its host, and this host runs none
    /// ([`Host::defer`]; `ors run` has no server).
    #[error("<{0}> needs `ors serve`")]
    NeedsServer(String),
    /// Any other refusal, in words.
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for ActionError {
    fn from(message: String) -> Self {
        ActionError::Invalid(message)
    }
}

impl From<&str> for ActionError {
    fn from(message: &str) -> Self {
        ActionError::Invalid(message.to_string())
    }
}

/// Runs one kind of foreign-namespace element.
pub trait CustomActionHandler: Send + Sync {
    /// Executes the action; an error becomes `error.execution`.
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError>;
}

/// Handlers for custom actions, keyed by namespace and element name.
#[derive(Default, Clone)]
pub struct CustomActions {
    handlers: HashMap<(String, String), Arc<dyn CustomActionHandler>>,
}

impl CustomActions {
    /// Registers a handler for `<name>` in `namespace`.
    pub fn register(&mut self, namespace: &str, name: &str, handler: Arc<dyn CustomActionHandler>) {
        self.handlers
            .insert((namespace.to_string(), name.to_string()), handler);
    }

    /// The handler for an element, if any.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<dyn CustomActionHandler>> {
        self.handlers
            .get(&(namespace.to_string(), name.to_string()))
    }
}

impl CustomActionClaims for CustomActions {
    fn claims(&self, namespace: &str, name: &str) -> bool {
        self.get(namespace, name).is_some()
    }
}

/// Settings for a session.
#[derive(Clone, Default)]
pub struct SessionOptions {
    /// Session id; generated when `None`.
    pub session_id: Option<String>,
    /// Script runtime limits.
    pub limits: ScriptLimits,
    /// Custom action handlers.
    pub custom_actions: Arc<CustomActions>,
    /// Extra `_ioprocessors` entries: type name → location prefix (the
    /// session id is appended to make the session's location); shared by
    /// the sessions a host starts with the same options.
    pub ioprocessors: Arc<BTreeMap<String, String>>,
    /// Most microsteps one macrostep may take before the session is
    /// stopped as runaway (an eventless loop); 0 means no limit.
    pub max_microsteps: u64,
    /// Longest one macrostep may run, in ms of the host's clock, before
    /// the session is stopped as runaway (checked between microsteps; a
    /// single script is bounded by the data model's own limits); 0 means
    /// no limit.
    pub max_macrostep_ms: u64,
    /// Most events in a row a session may send itself without delay (each
    /// macrostep queueing the next) with no event from anywhere else in
    /// between, before it is stopped as runaway; 0 means no limit.
    pub max_self_events: u64,
    /// Most the process's resident memory may grow during one macrostep,
    /// in bytes, before the session is stopped as runaway (checked after
    /// every executable-content element and microstep against the
    /// sampled figure of [`crate::memory`]; nothing is checked where
    /// nothing samples it); 0 means no limit.
    pub max_macrostep_memory_bytes: u64,
    /// Values that override the document's `<data>` of the same id at
    /// initialisation (invoke parameters, session start parameters).
    pub initial_data: serde_json::Map<String, Value>,
    /// Whether `initial_data` entries that no `<data>` declares become
    /// variables too (ORS start parameters do; invoke parameters do not).
    pub declare_undeclared_data: bool,
    /// Script run in the session's data model before its `<data>` is
    /// initialised (a server defines `_genesys` with it); compiled once per
    /// context, run once per session.
    pub prelude: Option<Arc<str>>,
}

/// A `<send>` waiting for its delay.
#[derive(Clone, Debug)]
pub(crate) struct DelayedSend {
    pub sendid: Arc<str>,
    pub due_ms: u64,
    pub seq: u64,
    /// `None` delivers to this session's external queue.
    pub outbound: Option<Outbound>,
    pub event: Event,
}

/// How a call that advanced the session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// Waiting for external events.
    Idle,
    /// The session reached a top-level final state (or was stopped) and halted.
    Halted,
}

/// What the session looked like when it entered its top-level final state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalInfo {
    /// The top-level `<final>` entered.
    pub state: StateId,
    /// The configuration at that moment.
    pub configuration: StateSet,
}

/// One running instance of a document.
pub struct Session {
    doc: Arc<Document>,
    id: Arc<str>,
    options: SessionOptions,
    configuration: StateSet,
    states_to_invoke: StateSet,
    history_values: BTreeMap<StateId, Vec<StateId>>,
    initialized: StateSet,
    internal_queue: VecDeque<Event>,
    external_queue: VecDeque<Event>,
    delayed: Vec<DelayedSend>,
    datamodel: Box<dyn DataModel>,
    running: bool,
    started: bool,
    next_send: u64,
    final_info: Option<FinalInfo>,
    /// Why the session was stopped before reaching a final state (a
    /// limit), if it was.
    stop_reason: Option<String>,
    /// `<foreach>` iterations run in the current macrostep.
    foreach_iterations: u64,
    /// Whether the current macrostep sent this session an event without
    /// delay, whether the previous one did, and how many macrosteps in a
    /// row ran on an event the one before sent (see
    /// [`SessionOptions::max_self_events`]).
    fed_self: bool,
    fed_self_before: bool,
    self_fed_streak: u64,
    /// When the current macrostep began, by the host's clock (ms; 0: none
    /// is running), for the macrostep time budget inside `<foreach>`.
    macrostep_started_ms: u64,
    /// The process's sampled resident memory when the current macrostep
    /// began ([`crate::memory::resident_sample`], bytes; 0: unknown).
    memory_mark: u64,
    /// Events the current macrostep queued for this session itself.
    queued_in_macrostep: u64,
    /// The executable-content element running now (its tag name and
    /// where it is), for the `error.execution` it may raise.
    current_action: Option<(
        std::borrow::Cow<'static, str>,
        Option<crate::model::Position>,
    )>,
    done_data: Option<Value>,
    /// Requests of custom actions awaiting their answer.
    requests: PendingRequests,
    invokes: BTreeMap<Arc<str>, ActiveInvoke>,
    scratch_enabled: Vec<crate::model::TransitionId>,
    scratch_exit: StateSet,
    scratch_entry: Option<Box<algorithm::EntrySet>>,
}

impl Session {
    /// A session of `doc` that has not started yet.
    pub fn new(doc: Arc<Document>, options: SessionOptions) -> Session {
        let id: Arc<str> = options
            .session_id
            .clone()
            .unwrap_or_else(crate::ids::engine_session_id)
            .into();
        let datamodel = datamodel::create(&doc, &options.limits);
        let n = doc.states.len();
        Session {
            doc,
            id,
            options,
            configuration: StateSet::with_capacity(n),
            states_to_invoke: StateSet::with_capacity(n),
            history_values: BTreeMap::new(),
            initialized: StateSet::with_capacity(n),
            internal_queue: VecDeque::new(),
            external_queue: VecDeque::new(),
            delayed: Vec::new(),
            datamodel,
            running: false,
            started: false,
            next_send: 0,
            final_info: None,
            stop_reason: None,
            foreach_iterations: 0,
            fed_self: false,
            fed_self_before: false,
            self_fed_streak: 0,
            macrostep_started_ms: 0,
            memory_mark: 0,
            queued_in_macrostep: 0,
            current_action: None,
            done_data: None,
            requests: BTreeMap::new(),
            invokes: BTreeMap::new(),
            scratch_enabled: Vec::new(),
            scratch_exit: StateSet::with_capacity(n),
            scratch_entry: Some(Box::default()),
        }
    }

    /// The session id (`_sessionid`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The document this session runs.
    pub fn document(&self) -> &Arc<Document> {
        &self.doc
    }

    /// Whether the session has started and not halted.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The active states, in document order.
    pub fn configuration(&self) -> &StateSet {
        &self.configuration
    }

    /// Names of the active states in document order.
    pub fn configuration_names(&self) -> Vec<String> {
        names(&self.doc, &self.configuration, false)
    }

    /// The same names as [`Session::configuration_names`], shared with
    /// the document (no copy of each name): what a host keeps of a
    /// session it has put to sleep.
    pub fn configuration_shared_names(&self) -> Box<[Arc<str>]> {
        self.configuration
            .iter()
            .map(|s| self.doc.state(s).name.clone())
            .collect()
    }

    /// Names of the active atomic states in document order.
    pub fn atomic_names(&self) -> Vec<String> {
        names(&self.doc, &self.configuration, true)
    }

    /// Set when the session entered a top-level final state.
    pub fn final_info(&self) -> Option<&FinalInfo> {
        self.final_info.as_ref()
    }

    /// Why the session was stopped without reaching a final state (the
    /// microstep limit), if it was.
    pub fn stop_reason(&self) -> Option<&str> {
        self.stop_reason.as_deref()
    }

    /// The `<donedata>` of the top-level final state, once halted.
    pub fn done_data(&self) -> Option<&Value> {
        self.done_data.as_ref()
    }

    /// Direct access to the data model (for hosts and tests).
    pub fn datamodel_mut(&mut self) -> &mut dyn DataModel {
        self.datamodel.as_mut()
    }

    /// Queues an event on the external queue. An answer to a pending
    /// request (`<name>.done` or `error.<name>` with its `requestid`)
    /// settles the request.
    pub fn enqueue_external(&mut self, event: Event) {
        if !self.requests.is_empty()
            && let Some(id) = event
                .data
                .as_ref()
                .and_then(|d| d.get("requestid"))
                .and_then(Value::as_str)
            && let Some(pending) = self.requests.get(id)
        {
            let name = &pending.name;
            let answers = event.name.strip_suffix(".done") == Some(name.as_str())
                || event.name.strip_prefix("error.") == Some(name.as_str());
            if answers {
                self.requests.remove(id);
            }
        }
        self.external_queue.push_back(event);
    }

    /// The requests of custom actions still awaiting their answer.
    pub fn pending_requests(&self) -> &PendingRequests {
        &self.requests
    }

    /// Answers every pending request but those `resumed` claims with
    /// `error.<name>` (`requestid`, the request's data, `error:
    /// "interrupted"`, `message`): used when a session is restored after
    /// the server stopped, since the work behind those requests died with
    /// it (it may or may not have taken effect). A request `resumed`
    /// claims stays pending: its host asks again. Returns how many were
    /// answered.
    pub fn interrupt_requests(&mut self, mut resumed: impl FnMut(&str) -> bool) -> usize {
        let (kept, cut): (PendingRequests, PendingRequests) = std::mem::take(&mut self.requests)
            .into_iter()
            .partition(|(id, _)| resumed(id));
        self.requests = kept;
        let n = cut.len();
        for (id, request) in cut {
            let mut data = serde_json::Map::new();
            data.insert("requestid".into(), Value::String(id));
            data.extend(request.data);
            data.insert("error".into(), Value::String("interrupted".into()));
            data.insert(
                "message".into(),
                Value::String(
                    "the server stopped before the request was answered; it may or may not have taken effect"
                        .into(),
                ),
            );
            let mut event = Event::new(format!("error.{}", request.name), EventKind::External);
            event.data = Some(Value::Object(data));
            self.external_queue.push_back(event);
        }
        n
    }

    /// Whether an external event is waiting.
    pub fn has_external(&self) -> bool {
        !self.external_queue.is_empty()
    }

    /// How many events the internal and external queues have room for
    /// without growing (0 for a session that holds no queue storage; see
    /// [`Session::release_idle_memory`]).
    pub fn queue_capacity(&self) -> usize {
        self.internal_queue.capacity() + self.external_queue.capacity()
    }

    /// The earliest due time of a pending delayed send.
    pub fn next_timer_due(&self) -> Option<u64> {
        self.delayed.iter().map(|d| d.due_ms).min()
    }

    /// Number of pending delayed sends.
    pub fn pending_timers(&self) -> usize {
        self.delayed.len()
    }

    /// This session's location for an I/O processor type, if configured.
    pub fn own_location(&self, type_name: &str) -> Option<String> {
        self.options
            .ioprocessors
            .get(type_name)
            .map(|prefix| format!("{prefix}{}", self.id))
    }

    fn system_variables(&self) -> SystemVariables {
        SystemVariables {
            session_id: self.id.clone(),
            name: self.doc.name.clone(),
            ioprocessors: crate::datamodel::IoProcessors {
                session_id: self.id.clone(),
                others: self.options.ioprocessors.clone(),
            },
        }
    }

    /// Appendix D `interpret`: initialises the data model, runs global
    /// scripts, enters the initial configuration and completes the first
    /// macrostep.
    pub fn start(&mut self, host: &mut dyn Host) -> StepOutcome {
        if self.started {
            return self.outcome();
        }
        self.started = true;
        self.running = true;
        self.queued_in_macrostep = 0;
        if self.options.max_macrostep_ms > 0 {
            self.macrostep_started_ms = host.now_ms().max(1);
        }
        self.memory_mark = crate::memory::resident_sample();
        let doc = self.doc.clone();
        let vars = self.system_variables();
        if let Err(e) = self.datamodel.set_system_variables(&vars) {
            self.raise_error("error.execution", &e.message, None);
        }
        if let Some(prelude) = self.options.prelude.clone()
            && let Err(e) = self.datamodel.eval_prelude(&prelude)
        {
            self.raise_error("error.execution", &e.message, None);
        }
        // Start parameters that no <data> declares still become variables,
        // first, so that `<data expr>` can read them (`_data.x`) — unless
        // the name is taken (a built-in such as `JSON` or `__proto__`, a
        // system or platform variable): those stay in `_data` only, so a
        // caller can never replace what the document relies on.
        let extra: Vec<(String, Value)> = self
            .options
            .initial_data
            .iter()
            .filter(|_| self.options.declare_undeclared_data)
            .filter(|(k, _)| {
                !doc.states
                    .iter()
                    .any(|s| s.data.iter().any(|d| &*d.id == k.as_str()))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in extra {
            if !self.datamodel.is_free_name(&k) {
                tracing::debug!(session = %self.id, name = %k,
                    "a start parameter names a built-in or system variable; kept in _data only");
                continue;
            }
            if let Err(e) = self
                .datamodel
                .declare(&k, &datamodel::InitialValue::Json(v))
            {
                self.raise_error("error.execution", &e.message, None);
            }
        }
        match doc.binding {
            crate::model::Binding::Early => {
                for s in &doc.states {
                    self.initialize_data(&doc, s.id);
                }
            }
            crate::model::Binding::Late => {
                // Late binding creates every variable now and assigns the
                // value when its state is first entered.
                for s in &doc.states {
                    for decl in &s.data {
                        let _ = self
                            .datamodel
                            .declare(&decl.id, &datamodel::InitialValue::Undefined);
                    }
                }
                self.initialize_data(&doc, Document::ROOT)
            }
        }
        for &script in &doc.scripts {
            if let Err(e) = self.datamodel.run_script(script) {
                self.raise_error("error.execution", &e.message, None);
            }
        }
        let initial = doc
            .state(Document::ROOT)
            .initial
            .expect("root has an initial transition");
        self.enter_states(&doc, &[initial], host);
        self.run_macrostep(&doc, host);
        self.outcome()
    }

    /// Frees what a session waiting for its next event need not hold: the
    /// storage of its empty event queues (a queue keeps room for four
    /// events, ~0.75 KiB, once it has held one) and its data model's copy
    /// of the last event (`_event` is undefined until the next one, as in
    /// a session woken from the store). A host calls it when a session
    /// has nothing left to process; the engine's own loops do not, so a
    /// busy session reuses its queues.
    pub fn release_idle_memory(&mut self) {
        if self.internal_queue.is_empty() {
            self.internal_queue = VecDeque::new();
        }
        if self.external_queue.is_empty() {
            self.external_queue = VecDeque::new();
            if self.running {
                self.datamodel.release_event();
            }
        }
    }

    /// Takes the next external event and runs the macrostep it causes.
    /// Returns the event processed, or `None` when the queue was empty.
    pub fn process_next_external(&mut self, host: &mut dyn Host) -> Option<(Event, StepOutcome)> {
        if !self.running {
            return None;
        }
        let event = self.external_queue.pop_front()?;
        let doc = self.doc.clone();
        let from_self = self.fed_self_before
            && event
                .origin
                .as_deref()
                .is_some_and(|o| o.strip_prefix("#_scxml_") == Some(&*self.id));
        self.self_fed_streak = if from_self {
            self.self_fed_streak + 1
        } else {
            0
        };
        let limit = self.options.max_self_events;
        if limit > 0 && self.self_fed_streak > limit {
            let reason = format!(
                "sent itself {limit} events in a row with nothing from outside; session stopped"
            );
            host.log(&self.id, Some("error"), &reason);
            self.stop_reason = Some(reason);
            self.running = false;
            return Some((event, self.outcome()));
        }
        self.fed_self = false;
        self.queued_in_macrostep = 0;
        if self.options.max_macrostep_ms > 0 {
            self.macrostep_started_ms = host.now_ms().max(1);
        }
        self.memory_mark = crate::memory::resident_sample();
        if let Err(e) = self.datamodel.set_event(&event) {
            self.raise_error("error.execution", &e.message, None);
        }
        self.finalize_and_autoforward(&doc, &event, host);
        let mut enabled = self.select_transitions(&doc, Some(&event));
        if !enabled.is_empty() {
            self.microstep(&doc, &enabled, host);
        }
        enabled.clear();
        self.scratch_enabled = enabled;
        self.run_macrostep(&doc, host);
        self.fed_self_before = std::mem::take(&mut self.fed_self);
        Some((event, self.outcome()))
    }

    /// Moves every delayed send due at `now_ms` to its destination, in due
    /// order (send order for equal times). Returns how many fired.
    pub fn fire_due_timers(&mut self, now_ms: u64, host: &mut dyn Host) -> usize {
        if self.delayed.is_empty() {
            return 0;
        }
        let mut due: Vec<DelayedSend> = Vec::new();
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].due_ms <= now_ms {
                due.push(self.delayed.remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|d| (d.due_ms, d.seq));
        let n = due.len();
        for d in due {
            self.deliver_with_id(d.outbound, d.event, d.sendid, host);
        }
        n
    }

    /// The invocations this session has running, by invoke id.
    pub fn active_invokes(&self) -> &BTreeMap<Arc<str>, ActiveInvoke> {
        &self.invokes
    }

    /// Stops a running session as if cancelled: exits every state.
    pub fn cancel(&mut self, host: &mut dyn Host) {
        if self.running {
            self.running = false;
            let doc = self.doc.clone();
            self.exit_interpreter(&doc, host);
        }
    }

    fn outcome(&self) -> StepOutcome {
        if self.running {
            StepOutcome::Idle
        } else {
            StepOutcome::Halted
        }
    }
}

fn names(doc: &Document, set: &StateSet, atomic_only: bool) -> Vec<String> {
    set.iter()
        .map(|s| doc.state(s))
        .filter(|s| !atomic_only || s.is_atomic())
        .map(|s| s.name.to_string())
        .collect()
}
