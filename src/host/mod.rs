//! A single-threaded session host: runs many sessions side by side, routes
//! events between them (`#_parent`, `#_<invokeid>`, `#_scxml_<id>`), starts
//! and cancels invoked children, and fires their timers. `ors run` uses it
//! for one top-level session and its children; a server worker thread runs
//! one per worker.
//!
//! The host never waits on the network. An `<invoke src>` whose document is
//! not at hand becomes a *loading* child: the host hands out the fetch
//! ([`LocalHost::take_fetches`]), its runner drives it ([`Fetches`] on a
//! `LocalSet`) and reports the result ([`LocalHost::fetched`]); events the
//! parent sends to `#_<invokeid>` meanwhile wait and are delivered, in order,
//! once the child has started. A failed load sends the parent the
//! `error.execution` a synchronous failure raises; a cancel drops the fetch.
//!
//! Persistence: a loading child has no session yet, so nothing of it is
//! saved; a server does not hibernate a tree while a child in it loads
//! ([`LocalHost::is_loading_in`]). A parent recovered after a crash from a
//! snapshot written while its child was loading comes back without the
//! child, in its invoking state, as if the child had not answered yet (it
//! never will: leaving the state ends the wait); a fetch result arriving
//! for a parent no longer in the table is dropped.

mod fetches;
pub mod loader;

pub use fetches::Fetches;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::interpreter::{
    Deferred, DispatchError, Event, EventKind, Host, InvokeRequest, InvokeSource, Outbound,
    Session, SessionOptions, StepOutcome, is_scxml_type_uri,
};
use crate::model::Document;
use crate::parser::{LoadOptions, parse_document};

/// How deep invoked sessions may nest (a document that invokes itself
/// would otherwise grow a chain of children without end).
pub const MAX_INVOKE_DEPTH: usize = 32;

/// Receives `<log>` output: session id, label, message.
pub type LogSink = Box<dyn FnMut(&str, Option<&str>, &str)>;

/// Where `<log>` lines go: session id, the document's name (its
/// `<scxml name>`, "" when it has none), label, message.
pub type SessionLogSink = Box<dyn FnMut(&str, &str, Option<&str>, &str)>;

/// A fetch of an invoked child's document, run by the host's runner; the
/// error is a one-line reason.
pub type ChildFetch = Pin<Box<dyn Future<Output = Result<Arc<Document>, String>>>>;

/// What a [`DocumentLoader`] answers for an invoked child's URI.
pub enum ChildLoad {
    /// The document (or why it cannot be had), at once.
    Ready(Result<Arc<Document>, String>),
    /// The document needs the network: the child waits for this fetch.
    Pending(ChildFetch),
}

/// Finds an invoked child's document from its resolved URI (a server uses
/// its document cache and allow-list).
pub type DocumentLoader = Box<dyn FnMut(&str) -> ChildLoad>;

/// Names one pending child fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchId(u64);

/// An invoked child whose document is being fetched.
struct LoadingChild {
    parent: Arc<str>,
    invokeid: Arc<str>,
    data: Map<String, Value>,
    /// Events the parent sent to `#_<invokeid>` meanwhile, in order.
    events: Vec<Event>,
}

/// Delivers an event to a session id this host does not hold (one on
/// another worker thread); the error becomes `error.communication`.
pub type RemoteRouter = Box<dyn FnMut(&str, Event) -> Result<(), DispatchError>>;

struct Slot {
    id: Arc<str>,
    /// `None` while the session is running (taken out of the table).
    session: Option<Session>,
    /// Parent session id and the invoke id it knows this child by.
    parent: Option<(Arc<str>, Arc<str>)>,
    /// Invoke id → child session id.
    children: HashMap<Arc<str>, Arc<str>>,
    started: bool,
    /// Whether the id sits in the ready queue.
    ready: bool,
    /// The due time last pushed onto the timer heap for this session.
    timer: Option<u64>,
    /// Whether the id is in the host's touched list.
    touched: bool,
}

/// Runs sessions on the current thread; see the module docs.
pub struct LocalHost {
    slots: HashMap<Arc<str>, Slot>,
    /// Sessions with queued external events, served round-robin.
    ready: VecDeque<Arc<str>>,
    /// Pending timers by due time (lazy: entries are checked when popped).
    timers: BinaryHeap<Reverse<(u64, Arc<str>)>>,
    outbox: VecDeque<(Arc<str>, Event)>,
    to_start: Vec<Arc<str>>,
    documents: HashMap<String, Arc<Document>>,
    options: SessionOptions,
    log: SessionLogSink,
    /// The documents of the sessions running now (innermost last), so a
    /// log line can name its document.
    running_docs: Vec<Arc<Document>>,
    clock: Box<dyn FnMut() -> u64>,
    basichttp: Option<crate::io::basichttp::Client>,
    trace: Option<LogSink>,
    document_loader: Option<DocumentLoader>,
    /// Fetches documents when no [`DocumentLoader`] is set.
    loader: loader::Loader,
    loading: HashMap<FetchId, LoadingChild>,
    next_fetch: u64,
    new_fetches: Vec<(FetchId, ChildFetch)>,
    dropped_fetches: Vec<FetchId>,
    remote: Option<RemoteRouter>,
    id_generator: Option<Box<dyn FnMut() -> String>>,
    /// Deferred work of custom actions (`None`: this host runs none).
    deferred: Option<Vec<Deferred>>,
    halted: Vec<Arc<str>>,
    /// Sessions that ran since [`LocalHost::take_touched`] (their state may
    /// have changed).
    touched: Vec<Arc<str>>,
    /// Invoked children that ended or were cancelled since
    /// [`LocalHost::take_removed`].
    removed: Vec<Arc<str>>,
    /// Told which session runs (see [`LocalHost::set_run_observer`]).
    run_observer: Option<RunObserver>,
    /// Sessions running now, innermost last.
    running: Vec<Arc<str>>,
}

/// Told the session whose code is about to run on this host's thread
/// (`Some`), and `None` when none is (a watchdog's view of which session
/// a stuck or crashed thread was running).
pub type RunObserver = Box<dyn FnMut(Option<&Arc<str>>)>;

/// Milliseconds since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LocalHost {
    /// A host whose sessions get `options` (ids are generated per session).
    pub fn new(options: SessionOptions, log: SessionLogSink) -> LocalHost {
        LocalHost {
            slots: HashMap::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            outbox: VecDeque::new(),
            to_start: Vec::new(),
            documents: HashMap::new(),
            options,
            log,
            running_docs: Vec::new(),
            clock: Box::new(wall_clock_ms),
            basichttp: None,
            trace: None,
            document_loader: None,
            loader: loader::Loader::default(),
            loading: HashMap::new(),
            next_fetch: 0,
            new_fetches: Vec::new(),
            dropped_fetches: Vec::new(),
            remote: None,
            id_generator: None,
            deferred: None,
            halted: Vec::new(),
            touched: Vec::new(),
            removed: Vec::new(),
            run_observer: None,
            running: Vec::new(),
        }
    }

    /// Forgets which sessions were running (after a panic unwound out of
    /// one) and tells the observer none is.
    pub fn reset_running(&mut self) {
        self.running.clear();
        if let Some(observe) = &mut self.run_observer {
            observe(None);
        }
    }

    /// Tells `observer` whenever a session's code starts or stops running
    /// on this host (every macrostep, timer, start and cancel).
    pub fn set_run_observer(&mut self, observer: RunObserver) {
        self.run_observer = Some(observer);
    }

    /// Loads invoked children's documents with `loader` instead of the
    /// built-in one (a [`loader::Loader`] with no allow-list).
    pub fn set_document_loader(&mut self, loader: DocumentLoader) {
        self.document_loader = Some(loader);
    }

    /// Child fetches started since the last call, for the runner to drive
    /// (see [`Fetches`]); each result goes back through
    /// [`LocalHost::fetched`].
    pub fn take_fetches(&mut self) -> Vec<(FetchId, ChildFetch)> {
        std::mem::take(&mut self.new_fetches)
    }

    /// Child fetches no longer wanted (their invoke was cancelled or their
    /// parent removed) since the last call; the runner may abort them.
    pub fn take_dropped_fetches(&mut self) -> Vec<FetchId> {
        std::mem::take(&mut self.dropped_fetches)
    }

    /// Whether any invoked child is waiting for its document.
    pub fn has_loading(&self) -> bool {
        !self.loading.is_empty()
    }

    /// Whether a child `id` invoked is waiting for its document (a host
    /// keeps such a session in memory: hibernating it would lose the child).
    pub fn is_loading_in(&self, id: &str) -> bool {
        self.loading.values().any(|l| &*l.parent == id)
    }

    /// Takes the result of a child fetch: the child starts and gets the
    /// events its parent sent it meanwhile, or the parent gets
    /// `error.execution`. A result nobody waits for any more is dropped.
    pub fn fetched(&mut self, id: FetchId, result: Result<Arc<Document>, String>) {
        let Some(child) = self.loading.remove(&id) else {
            return;
        };
        if !self.slots.contains_key(&child.parent) {
            return;
        }
        match result {
            Ok(doc) => {
                let child_id = self.insert_child(&child.parent, child.invokeid, doc, child.data);
                self.start(&child_id);
                for event in child.events {
                    self.outbox.push_back((child_id.clone(), event));
                }
            }
            Err(e) => {
                let mut ev = Event::new("error.execution", EventKind::Platform);
                ev.data = Some(serde_json::json!({
                    "message": format!("cannot invoke '{}': {e}", child.invokeid)
                }));
                self.outbox.push_back((child.parent, ev));
            }
        }
        self.flush();
    }

    /// Routes `#_scxml_<id>` sends for sessions this host does not hold.
    pub fn set_remote_router(&mut self, router: RemoteRouter) {
        self.remote = Some(router);
    }

    /// Generates the ids of invoked children (a server encodes its worker).
    pub fn set_id_generator(&mut self, generator: Box<dyn FnMut() -> String>) {
        self.id_generator = Some(generator);
    }

    /// Accepts custom actions' deferred work ([`Host::defer`]); the owner
    /// collects it with [`LocalHost::take_deferred`] and runs it.
    pub fn accept_deferred(&mut self) {
        self.deferred.get_or_insert_with(Vec::new);
    }

    /// The deferred work handed over since the last call.
    pub fn take_deferred(&mut self) -> Vec<Deferred> {
        self.deferred
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Top-level sessions that halted since the last call.
    pub fn take_halted(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.halted)
    }

    /// Removes a session (and the children it invoked) from the table, as
    /// a host does to forget or hibernate it; unlike an invoked child that
    /// ends, this is not reported by [`LocalHost::take_removed`].
    pub fn remove(&mut self, id: &str) -> bool {
        let present = self.slots.contains_key(id);
        self.remove_tree(id, false);
        self.compact_timers();
        present
    }

    /// How many timer entries the host holds: one per session with a
    /// timer pending, plus those left behind by sessions that rescheduled
    /// or left memory and were not yet swept (for diagnostics and tests).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// Drops the timer entries no session holds any more once they
    /// outnumber the sessions by far: a session that leaves memory with a
    /// timer pending (a hibernation) leaves its entry behind until it
    /// comes due, and a million sessions asleep with timers set hours out
    /// would otherwise keep a million dead entries. Each sweep leaves at
    /// most one entry per session, so sweeps are amortised O(1) per entry.
    fn compact_timers(&mut self) {
        if self.timers.len() <= 2 * self.slots.len() + 1024 {
            return;
        }
        let slots = &self.slots;
        self.timers
            .retain(|Reverse((due, id))| slots.get(id).and_then(|s| s.timer) == Some(*due));
        if self.timers.capacity() > 2 * self.timers.len() + 1024 {
            self.timers.shrink_to_fit();
        }
    }

    /// Sessions that ran (started, took an event, fired a timer, were
    /// cancelled) since the last call, so a host knows what to persist.
    pub fn take_touched(&mut self) -> Vec<Arc<str>> {
        let mut touched = std::mem::take(&mut self.touched);
        touched.retain(|id| match self.slots.get_mut(id) {
            Some(slot) => std::mem::take(&mut slot.touched),
            None => false,
        });
        touched
    }

    /// Invoked children that ended or were cancelled since the last call.
    pub fn take_removed(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.removed)
    }

    /// The parent session and the invoke id it knows `id` by.
    pub fn parent_of(&self, id: &str) -> Option<(Arc<str>, Arc<str>)> {
        self.slots.get(id).and_then(|s| s.parent.clone())
    }

    /// The top-level session of `id`'s invoke tree.
    pub fn root_of(&self, id: &str) -> Option<Arc<str>> {
        let mut slot = self.slots.get(id)?;
        while let Some((parent, _)) = &slot.parent {
            slot = self.slots.get(parent)?;
        }
        Some(slot.id.clone())
    }

    /// The ids of `id` and every descendant it invoked, parents first.
    pub fn tree_of(&self, id: &str) -> Vec<Arc<str>> {
        let mut out = Vec::new();
        let mut next = vec![id];
        while let Some(i) = next.pop() {
            if let Some(slot) = self.slots.get(i) {
                out.push(slot.id.clone());
                next.extend(slot.children.values().map(|c| &**c));
            }
        }
        out
    }

    /// Adds a session rebuilt from a snapshot (it does not start again);
    /// a child is linked to its parent, which must already be present.
    pub fn add_restored(&mut self, session: Session, parent: Option<(Arc<str>, Arc<str>)>) {
        let id = self.insert(session, parent.clone());
        if let Some((p, invokeid)) = parent
            && let Some(slot) = self.slots.get_mut(&p)
        {
            slot.children.insert(invokeid, id.clone());
        }
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.started = true;
        }
        // Registers its timers and any queued events.
        self.with_session(&id, |_, _| ());
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.touched = false;
        }
        self.touched.retain(|t| *t != id);
    }

    /// Counts the session as changed, so the next write batch stores it
    /// (a restored session given events before its first run).
    pub fn mark_touched(&mut self, id: &str) {
        if let Some(slot) = self.slots.get_mut(id)
            && !slot.touched
        {
            slot.touched = true;
            self.touched.push(slot.id.clone());
        }
    }

    /// Stops a running top-level session as if cancelled: it exits its
    /// states (running onexit handlers) and its children are cancelled.
    pub fn terminate(&mut self, id: &str) -> bool {
        let running = self.session(id).is_some_and(Session::is_running);
        if running {
            self.with_session(id, |s, host| s.cancel(host));
            self.flush();
            self.halted.push(id.into());
        }
        running
    }

    /// Stops a session where it stands for `reason`, running nothing more
    /// (no `onexit`, no `done.invoke` to a parent): its invoked children
    /// are dropped (reported by [`LocalHost::take_removed`]) and a
    /// top-level one is reported halted. For a session whose state cannot
    /// be kept, or one an operator's supervisor quarantined.
    pub fn fail(&mut self, id: &str, reason: &str) -> bool {
        let Some(slot) = self.slots.get_mut(id) else {
            return false;
        };
        let Some(session) = slot.session.as_mut() else {
            return false;
        };
        session.stop_with_reason(reason);
        let children: Vec<Arc<str>> = slot.children.drain().map(|(_, c)| c).collect();
        let top = slot.parent.is_none();
        let id: Arc<str> = slot.id.clone();
        if !std::mem::replace(&mut slot.touched, true) {
            self.touched.push(id.clone());
        }
        for child in children {
            self.remove_tree(&child, true);
        }
        if top {
            self.halted.push(id);
        }
        true
    }

    /// Lets sessions `<send>` with the Basic HTTP Event I/O Processor.
    pub fn set_basichttp(&mut self, client: crate::io::basichttp::Client) {
        self.basichttp = Some(client);
    }

    /// Reports every state entry and exit and every transition taken to
    /// `sink` (session id, `None`, one line such as `enter s1`).
    pub fn set_trace(&mut self, sink: LogSink) {
        self.trace = Some(sink);
    }

    /// Replaces the clock (tests use a manual one).
    pub fn set_clock(&mut self, clock: Box<dyn FnMut() -> u64>) {
        self.clock = clock;
    }

    /// Adds a top-level session; it starts with [`LocalHost::start`].
    pub fn add(&mut self, session: Session) -> Arc<str> {
        let id: Arc<str> = session.id().into();
        self.insert(session, None);
        id
    }

    fn insert(&mut self, session: Session, parent: Option<(Arc<str>, Arc<str>)>) -> Arc<str> {
        let id: Arc<str> = session.id().into();
        self.slots.insert(
            id.clone(),
            Slot {
                id: id.clone(),
                session: Some(session),
                parent,
                children: HashMap::new(),
                started: false,
                ready: false,
                timer: None,
                touched: false,
            },
        );
        id
    }

    /// The session with this id, when it is in the table.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.slots.get(id).and_then(|s| s.session.as_ref())
    }

    /// The session with this id, for changes (reading its data model).
    pub fn session_mut(&mut self, id: &str) -> Option<&mut Session> {
        self.slots.get_mut(id).and_then(|s| s.session.as_mut())
    }

    /// Number of sessions (including halted top-level ones still kept).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the host has no sessions.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn with_session<R>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut Session, &mut Self) -> R,
    ) -> Option<R> {
        let slot = self.slots.get_mut(id)?;
        let mut session = slot.session.take()?;
        if !slot.touched {
            slot.touched = true;
            self.touched.push(slot.id.clone());
        }
        if let Some(observe) = &mut self.run_observer {
            observe(Some(&slot.id));
            self.running.push(slot.id.clone());
        }
        self.running_docs.push(session.document().clone());
        let r = f(&mut session, self);
        self.running_docs.pop();
        if let Some(observe) = &mut self.run_observer {
            self.running.pop();
            observe(self.running.last());
        }
        let due = session.next_timer_due();
        let queued = session.is_running() && session.has_external();
        if let Some(slot) = self.slots.get_mut(id) {
            slot.session = Some(session);
            if queued && !slot.ready {
                slot.ready = true;
                self.ready.push_back(slot.id.clone());
            }
            if due.is_some() && due != slot.timer {
                self.timers
                    .push(Reverse((due.unwrap_or(0), slot.id.clone())));
            }
            slot.timer = due;
        }
        Some(r)
    }

    /// Runs a session's initial macrostep.
    pub fn start(&mut self, id: &str) -> Option<StepOutcome> {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.started = true;
        }
        let outcome = self.with_session(id, |s, host| s.start(host))?;
        if outcome == StepOutcome::Halted {
            self.on_halt(id);
        }
        Some(outcome)
    }

    /// Queues an external event for a session (its queue is part of its
    /// state, so the session counts as touched).
    pub fn deliver(&mut self, id: &str, event: Event) -> bool {
        let Some(slot) = self.slots.get_mut(id) else {
            return false;
        };
        let key = &slot.id;
        match slot.session.as_mut() {
            Some(session) if session.is_running() => {
                session.enqueue_external(event);
                if !slot.touched {
                    slot.touched = true;
                    self.touched.push(key.clone());
                }
                if !slot.ready {
                    slot.ready = true;
                    self.ready.push_back(key.clone());
                }
                true
            }
            _ => false,
        }
    }

    /// Moves routed events to their sessions and starts new children.
    fn flush(&mut self) {
        loop {
            while let Some((target, event)) = self.outbox.pop_front() {
                self.deliver(&target, event);
            }
            let starting = std::mem::take(&mut self.to_start);
            if starting.is_empty() {
                break;
            }
            for id in starting {
                self.start(&id);
            }
        }
    }

    /// Processes one external event of one session; `None` when it had none.
    pub fn step(&mut self, id: &str) -> Option<(Event, StepOutcome)> {
        let r = self.with_session(id, |s, host| s.process_next_external(host))??;
        if r.1 == StepOutcome::Halted {
            self.on_halt(id);
        }
        Some(r)
    }

    /// Serves every session's external queue until all are empty, calling
    /// `observe` after each event a session processed. Sessions with queued
    /// events take turns, one event each.
    pub fn run_until_idle(&mut self, observe: &mut dyn FnMut(&str, &Session, &Event)) {
        self.run_for(usize::MAX, observe);
    }

    /// Like [`LocalHost::run_until_idle`], but stops after `max_steps`
    /// macrosteps (taken round-robin across sessions); returns whether
    /// sessions are still ready. A host serving other work between batches
    /// uses it so that a session feeding itself events forever cannot keep
    /// the thread from everything else.
    pub fn run_for(
        &mut self,
        max_steps: usize,
        observe: &mut dyn FnMut(&str, &Session, &Event),
    ) -> bool {
        let mut steps = 0usize;
        loop {
            self.flush();
            if steps >= max_steps {
                return !self.ready.is_empty();
            }
            steps += 1;
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.ready = false;
            }
            if let Some((event, _)) = self.step(&id)
                && let Some(session) = self.session(&id)
            {
                observe(&id, session, &event);
            }
            if let Some(slot) = self.slots.get_mut(&id)
                && !slot.ready
                && let Some(session) = slot.session.as_mut()
            {
                if session.is_running() && session.has_external() {
                    slot.ready = true;
                    self.ready.push_back(id);
                } else {
                    // Waiting for its next event: a session among many
                    // thousands keeps no empty queue's storage and no copy
                    // of its last event.
                    session.release_idle_memory();
                }
            }
        }
        false
    }

    /// The earliest pending timer of any session.
    pub fn next_timer_due(&mut self) -> Option<u64> {
        while let Some(Reverse((due, id))) = self.timers.peek() {
            let current = self.slots.get(id).and_then(|s| s.timer);
            if current == Some(*due) {
                return Some(*due);
            }
            self.timers.pop();
        }
        None
    }

    /// Fires every timer due at `now` (by due time, across sessions).
    pub fn fire_due_timers(&mut self, now: u64) -> usize {
        let mut n = 0;
        while let Some(due) = self.next_timer_due() {
            if due > now {
                break;
            }
            let Some(Reverse((_, id))) = self.timers.pop() else {
                break;
            };
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.timer = None;
            }
            n += self
                .with_session(&id, |s, host| s.fire_due_timers(now, host))
                .unwrap_or(0);
        }
        self.flush();
        n
    }

    /// Whether any session could still do something (running with a timer,
    /// a queued event, or a child that is running).
    pub fn has_pending_work(&mut self, root: &str) -> bool {
        self.slots
            .get(root)
            .and_then(|s| s.session.as_ref())
            .is_some_and(|s| s.is_running())
            && (self.next_timer_due().is_some()
                || !self.ready.is_empty()
                || self.slots.len() > 1
                || !self.loading.is_empty())
    }

    /// A session halted: an invoked child is removed at once and its parent
    /// is sent `done.invoke.<id>`, after everything the child sent before.
    fn on_halt(&mut self, id: &str) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        let Some((parent, invokeid)) = slot.parent.clone() else {
            // Top-level sessions stay for their host to read.
            self.halted.push(id.into());
            return;
        };
        let done_data = slot.session.as_ref().and_then(|s| s.done_data().cloned());
        self.remove_tree(id, true);
        if let Some(p) = self.slots.get_mut(&parent) {
            p.children.remove(&invokeid);
        }
        let mut ev = Event::new(format!("done.invoke.{invokeid}"), EventKind::External);
        ev.invokeid = Some(invokeid);
        ev.data = done_data;
        self.outbox.push_back((parent, ev));
    }

    /// Removes a session and every descendant it invoked; `ended` records
    /// them for [`LocalHost::take_removed`].
    fn remove_tree(&mut self, id: &str, ended: bool) {
        self.drop_loading(|l| &*l.parent == id);
        if let Some(slot) = self.slots.remove(id) {
            for child in slot.children.values() {
                self.remove_tree(child, ended);
            }
            if ended {
                self.removed.push(slot.id);
            }
        }
    }

    /// Forgets the loading children `which` selects; their fetches are
    /// reported as dropped.
    fn drop_loading(&mut self, which: impl Fn(&LoadingChild) -> bool) {
        let ids: Vec<FetchId> = self
            .loading
            .iter()
            .filter(|(_, l)| which(l))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.loading.remove(&id);
            self.dropped_fetches.push(id);
        }
    }

    fn load_child(&mut self, source: &InvokeSource) -> ChildLoad {
        match source {
            InvokeSource::Document(d) => ChildLoad::Ready(Ok(d.clone())),
            InvokeSource::Text(text) => ChildLoad::Ready(
                parse_document(text, None, &LoadOptions::default())
                    .map(Arc::new)
                    .map_err(|e| e.to_string()),
            ),
            InvokeSource::Uri { uri, base } => {
                let resolved = loader::resolve(uri, base.as_deref());
                if let Some(load) = &mut self.document_loader {
                    return load(&resolved);
                }
                if let Some(d) = self.documents.get(&resolved) {
                    return ChildLoad::Ready(Ok(d.clone()));
                }
                match self
                    .loader
                    .load_document_now(&resolved, &LoadOptions::default())
                {
                    Some(Ok(doc)) => {
                        let doc = Arc::new(doc);
                        self.documents.insert(resolved, doc.clone());
                        ChildLoad::Ready(Ok(doc))
                    }
                    Some(Err(e)) => ChildLoad::Ready(Err(e.to_string())),
                    None => {
                        let loader = self.loader.clone();
                        ChildLoad::Pending(Box::pin(async move {
                            loader
                                .load_document(&resolved, &LoadOptions::default())
                                .await
                                .map(Arc::new)
                                .map_err(|e| e.to_string())
                        }))
                    }
                }
            }
        }
    }

    /// Adds an invoked child to the table, linked to its parent, not
    /// started.
    fn insert_child(
        &mut self,
        parent_id: &str,
        invokeid: Arc<str>,
        doc: Arc<Document>,
        data: Map<String, Value>,
    ) -> Arc<str> {
        let options = SessionOptions {
            session_id: self.id_generator.as_mut().map(|g| g()),
            initial_data: data,
            ..self.options.clone()
        };
        let child = Session::new(doc, options);
        let parent: Arc<str> = parent_id.into();
        let child_id = self.insert(child, Some((parent.clone(), invokeid.clone())));
        if let Some(p) = self.slots.get_mut(&parent) {
            p.children.insert(invokeid, child_id.clone());
        }
        child_id
    }
}

impl Host for LocalHost {
    fn now_ms(&mut self) -> u64 {
        (self.clock)()
    }

    fn log(&mut self, session_id: &str, label: Option<&str>, message: &str) {
        let document = self
            .running_docs
            .last()
            .and_then(|d| d.name.as_deref())
            .unwrap_or("");
        (self.log)(session_id, document, label, message);
    }

    fn on_enter(&mut self, session_id: &str, doc: &Document, state: crate::model::StateId) {
        if let Some(trace) = &mut self.trace {
            trace(
                session_id,
                None,
                &format!("enter {}", doc.state(state).name),
            );
        }
    }

    fn on_exit(&mut self, session_id: &str, doc: &Document, state: crate::model::StateId) {
        if let Some(trace) = &mut self.trace {
            trace(session_id, None, &format!("exit {}", doc.state(state).name));
        }
    }

    fn on_transition(
        &mut self,
        session_id: &str,
        doc: &Document,
        transition: crate::model::TransitionId,
    ) {
        if let Some(trace) = &mut self.trace {
            let t = doc.transition(transition);
            let targets: Vec<&str> = t.targets.iter().map(|&s| &*doc.state(s).name).collect();
            let line = format!(
                "transition {} -> [{}] at {}",
                doc.state(t.source).name,
                targets.join(" "),
                t.position
            );
            trace(session_id, None, &line);
        }
    }

    fn defer(&mut self, job: Deferred) -> Result<(), DispatchError> {
        match &mut self.deferred {
            Some(jobs) => {
                jobs.push(job);
                Ok(())
            }
            None => Err(DispatchError(
                "this host runs no deferred work (the action needs `ors serve`)".into(),
            )),
        }
    }

    fn supports_type(&self, type_uri: &str) -> bool {
        self.basichttp.is_some() && crate::io::basichttp::is_basichttp_type(type_uri)
    }

    fn loopback(&mut self, type_uri: &str, location: &str, event: &Event) -> Option<Event> {
        crate::io::basichttp::is_basichttp_type(type_uri)
            .then(|| crate::io::basichttp::loopback_event(event, location))
    }

    fn dispatch(&mut self, session_id: &str, outbound: Outbound) -> Result<(), DispatchError> {
        if crate::io::basichttp::is_basichttp_type(&outbound.type_) {
            return match &self.basichttp {
                Some(client) => client.send(session_id, outbound),
                None => Err(DispatchError(
                    "the Basic HTTP processor is not enabled".into(),
                )),
            };
        }
        if !is_scxml_type_uri(&outbound.type_) {
            return Err(DispatchError(format!(
                "no I/O processor of type '{}'",
                outbound.type_
            )));
        }
        let target = outbound.target.as_str();
        let mut event = outbound.event;
        let to: Arc<str> = if target == "#_parent" {
            let slot = self.slots.get(session_id);
            match slot.and_then(|s| s.parent.clone()) {
                Some((parent, invokeid)) => {
                    event.invokeid = Some(invokeid);
                    parent
                }
                None => return Err(DispatchError("this session has no parent".into())),
            }
        } else if let Some(id) = target.strip_prefix("#_scxml_") {
            match self.slots.get_key_value(id) {
                Some((k, _)) => k.clone(),
                None => {
                    return match &mut self.remote {
                        Some(route) => route(id, event),
                        None => Err(DispatchError(format!("no session '{id}'"))),
                    };
                }
            }
        } else if let Some(invokeid) = target.strip_prefix("#_") {
            match self
                .slots
                .get(session_id)
                .and_then(|s| s.children.get(invokeid))
            {
                Some(child) => child.clone(),
                None => {
                    // A child still loading gets the event once it starts.
                    if let Some(loading) = self
                        .loading
                        .values_mut()
                        .find(|l| &*l.parent == session_id && &*l.invokeid == invokeid)
                    {
                        loading.events.push(event);
                        return Ok(());
                    }
                    return Err(DispatchError(format!("no invoked session '{invokeid}'")));
                }
            }
        } else {
            return Err(DispatchError(format!("cannot reach target '{target}'")));
        };
        self.outbox.push_back((to, event));
        Ok(())
    }

    fn invoke(&mut self, parent_id: &str, request: InvokeRequest) -> Result<(), DispatchError> {
        let mut depth = 1;
        let mut at = self.slots.get(parent_id).and_then(|s| s.parent.clone());
        while let Some((p, _)) = at {
            depth += 1;
            if depth >= MAX_INVOKE_DEPTH {
                return Err(DispatchError(format!(
                    "invoked sessions nest deeper than {MAX_INVOKE_DEPTH} levels"
                )));
            }
            at = self.slots.get(&p).and_then(|s| s.parent.clone());
        }
        let doc = match self.load_child(&request.source) {
            ChildLoad::Ready(doc) => doc.map_err(DispatchError)?,
            ChildLoad::Pending(fetch) => {
                let id = FetchId(self.next_fetch);
                self.next_fetch += 1;
                self.loading.insert(
                    id,
                    LoadingChild {
                        parent: parent_id.into(),
                        invokeid: request.invokeid,
                        data: request.data,
                        events: Vec::new(),
                    },
                );
                self.new_fetches.push((id, fetch));
                return Ok(());
            }
        };
        let child_id = self.insert_child(parent_id, request.invokeid, doc, request.data);
        self.to_start.push(child_id);
        Ok(())
    }

    fn cancel_invoke(&mut self, parent_id: &str, invokeid: &str) {
        let Some(child) = self
            .slots
            .get_mut(parent_id)
            .and_then(|p| p.children.remove(invokeid))
        else {
            self.drop_loading(|l| &*l.parent == parent_id && &*l.invokeid == invokeid);
            return;
        };
        // The child exits its states (running its onexit handlers); what it
        // sends meanwhile is dropped by the parent, which no longer knows it.
        let started = self.slots.get(&child).is_some_and(|s| s.started);
        if started {
            let queued = self.outbox.len();
            self.with_session(&child, |s, host| s.cancel(host));
            // Nothing a cancelled child sends from now on is delivered.
            self.outbox.truncate(queued);
        }
        self.to_start.retain(|c| *c != child);
        self.remove_tree(&child, true);
    }
}
