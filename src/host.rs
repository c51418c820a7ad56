//! A single-threaded session host: runs many sessions side by side, routes
//! events between them (`#_parent`, `#_<invokeid>`, `#_scxml_<id>`), starts
//! and cancels invoked children, and fires their timers. `ors run` uses it
//! for one top-level session and its children; a server worker thread runs
//! one per worker.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use crate::interpreter::{
    DispatchError, Event, EventKind, Host, InvokeRequest, InvokeSource, Outbound, Session,
    SessionOptions, StepOutcome, is_scxml_type_uri,
};
use crate::model::Document;
use crate::parser::{LoadOptions, load_file, parse_document};

/// Receives `<log>` output: session id, label, message.
pub type LogSink = Box<dyn FnMut(&str, Option<&str>, &str)>;

struct Slot {
    /// `None` while the session is running (taken out of the table).
    session: Option<Session>,
    /// Parent session id and the invoke id it knows this child by.
    parent: Option<(Arc<str>, Arc<str>)>,
    /// Invoke id → child session id.
    children: HashMap<Arc<str>, Arc<str>>,
    started: bool,
}

/// Runs sessions on the current thread; see the module docs.
pub struct LocalHost {
    slots: HashMap<Arc<str>, Slot>,
    /// Session ids in creation order (the order queues are served in).
    order: Vec<Arc<str>>,
    outbox: VecDeque<(Arc<str>, Event)>,
    to_start: Vec<Arc<str>>,
    documents: HashMap<PathBuf, Arc<Document>>,
    options: SessionOptions,
    log: LogSink,
    clock: Box<dyn FnMut() -> u64>,
    basichttp: Option<crate::io::basichttp::Client>,
    trace: Option<LogSink>,
}

/// Milliseconds since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LocalHost {
    /// A host whose sessions get `options` (ids are generated per session).
    pub fn new(options: SessionOptions, log: LogSink) -> LocalHost {
        LocalHost {
            slots: HashMap::new(),
            order: Vec::new(),
            outbox: VecDeque::new(),
            to_start: Vec::new(),
            documents: HashMap::new(),
            options,
            log,
            clock: Box::new(wall_clock_ms),
            basichttp: None,
            trace: None,
        }
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
                session: Some(session),
                parent,
                children: HashMap::new(),
                started: false,
            },
        );
        self.order.push(id.clone());
        id
    }

    /// The session with this id, when it is in the table.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.slots.get(id).and_then(|s| s.session.as_ref())
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
        let mut session = self.slots.get_mut(id)?.session.take()?;
        let r = f(&mut session, self);
        if let Some(slot) = self.slots.get_mut(id) {
            slot.session = Some(session);
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

    /// Queues an external event for a session.
    pub fn deliver(&mut self, id: &str, event: Event) -> bool {
        match self.slots.get_mut(id).and_then(|s| s.session.as_mut()) {
            Some(session) if session.is_running() => {
                session.enqueue_external(event);
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
    /// `observe` after each event a session processed.
    pub fn run_until_idle(&mut self, observe: &mut dyn FnMut(&str, &Session, &Event)) {
        loop {
            self.flush();
            let mut progressed = false;
            let ids = self.order.clone();
            for id in ids {
                let has = self
                    .slots
                    .get(&id)
                    .and_then(|s| s.session.as_ref())
                    .is_some_and(|s| s.is_running() && s.has_external());
                if !has {
                    continue;
                }
                if let Some((event, _)) = self.step(&id) {
                    progressed = true;
                    if let Some(session) = self.session(&id) {
                        observe(&id, session, &event);
                    }
                }
                self.flush();
            }
            if !progressed {
                break;
            }
        }
    }

    /// The earliest pending timer of any session.
    pub fn next_timer_due(&self) -> Option<u64> {
        self.slots
            .values()
            .filter_map(|s| s.session.as_ref())
            .filter_map(|s| s.next_timer_due())
            .min()
    }

    /// Fires every timer due at `now` (by due time, across sessions).
    pub fn fire_due_timers(&mut self, now: u64) -> usize {
        let mut due: Vec<(u64, Arc<str>)> = self
            .slots
            .iter()
            .filter_map(|(id, s)| {
                let d = s.session.as_ref()?.next_timer_due()?;
                (d <= now).then(|| (d, id.clone()))
            })
            .collect();
        due.sort();
        let mut n = 0;
        for (_, id) in due {
            n += self
                .with_session(&id, |s, host| s.fire_due_timers(now, host))
                .unwrap_or(0);
        }
        self.flush();
        n
    }

    /// Whether any session could still do something (running with a timer,
    /// a queued event, or a child that is running).
    pub fn has_pending_work(&self, root: &str) -> bool {
        self.slots
            .get(root)
            .and_then(|s| s.session.as_ref())
            .is_some_and(|s| s.is_running())
            && (self.next_timer_due().is_some()
                || self
                    .slots
                    .values()
                    .filter_map(|s| s.session.as_ref())
                    .any(|s| s.is_running() && s.has_external())
                || self.slots.len() > 1)
    }

    /// A session halted: an invoked child is removed at once and its parent
    /// is sent `done.invoke.<id>`, after everything the child sent before.
    fn on_halt(&mut self, id: &str) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        let Some((parent, invokeid)) = slot.parent.clone() else {
            return; // top-level sessions stay for their host to read
        };
        let done_data = slot.session.as_ref().and_then(|s| s.done_data().cloned());
        self.remove_tree(id);
        if let Some(p) = self.slots.get_mut(&parent) {
            p.children.remove(&invokeid);
        }
        let mut ev = Event::new(format!("done.invoke.{invokeid}"), EventKind::External);
        ev.invokeid = Some(invokeid);
        ev.data = done_data;
        self.outbox.push_back((parent, ev));
    }

    /// Removes a session and every descendant it invoked.
    fn remove_tree(&mut self, id: &str) {
        if let Some(slot) = self.slots.remove(id) {
            for child in slot.children.values() {
                self.remove_tree(child);
            }
        }
        self.order.retain(|o| &**o != id);
    }

    fn load_child(&mut self, source: &InvokeSource) -> Result<Arc<Document>, String> {
        match source {
            InvokeSource::Document(d) => Ok(d.clone()),
            InvokeSource::Text(text) => parse_document(text, None, &LoadOptions::default())
                .map(Arc::new)
                .map_err(|e| e.to_string()),
            InvokeSource::Uri { uri, base_dir } => {
                let key = match crate::loader::resolve_path(uri, base_dir.as_deref()) {
                    Some(path) => path,
                    None if crate::loader::is_http(uri) => PathBuf::from(uri),
                    None => return Err(format!("cannot fetch '{uri}': unsupported URI scheme")),
                };
                if let Some(d) = self.documents.get(&key) {
                    return Ok(d.clone());
                }
                let doc = if crate::loader::is_http(uri) {
                    let text = crate::loader::load_text(uri, None)?;
                    parse_document(&text, None, &LoadOptions::default())
                } else {
                    load_file(&key, &LoadOptions::default())
                }
                .map_err(|e| e.to_string())?;
                let doc = Arc::new(doc);
                self.documents.insert(key, doc.clone());
                Ok(doc)
            }
        }
    }
}

impl Host for LocalHost {
    fn now_ms(&mut self) -> u64 {
        (self.clock)()
    }

    fn log(&mut self, session_id: &str, label: Option<&str>, message: &str) {
        (self.log)(session_id, label, message);
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

    fn supports_type(&self, type_uri: &str) -> bool {
        self.basichttp.is_some() && crate::io::basichttp::is_basichttp_type(type_uri)
    }

    fn dispatch(&mut self, session_id: &str, outbound: Outbound) -> Result<(), DispatchError> {
        if crate::io::basichttp::is_basichttp_type(&outbound.type_) {
            return match &self.basichttp {
                Some(client) => client.send(session_id, outbound).map_err(DispatchError),
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
                None => return Err(DispatchError(format!("no session '{id}'"))),
            }
        } else if let Some(invokeid) = target.strip_prefix("#_") {
            match self
                .slots
                .get(session_id)
                .and_then(|s| s.children.get(invokeid))
            {
                Some(child) => child.clone(),
                None => return Err(DispatchError(format!("no invoked session '{invokeid}'"))),
            }
        } else {
            return Err(DispatchError(format!("cannot reach target '{target}'")));
        };
        self.outbox.push_back((to, event));
        Ok(())
    }

    fn invoke(&mut self, parent_id: &str, request: InvokeRequest) -> Result<(), DispatchError> {
        let doc = self.load_child(&request.source).map_err(DispatchError)?;
        let options = SessionOptions {
            session_id: None,
            initial_data: request.data,
            ..self.options.clone()
        };
        let child = Session::new(doc, options);
        let parent: Arc<str> = parent_id.into();
        let child_id = self.insert(child, Some((parent.clone(), request.invokeid.clone())));
        if let Some(p) = self.slots.get_mut(&parent) {
            p.children.insert(request.invokeid, child_id.clone());
        }
        self.to_start.push(child_id);
        Ok(())
    }

    fn cancel_invoke(&mut self, parent_id: &str, invokeid: &str) {
        let Some(child) = self
            .slots
            .get_mut(parent_id)
            .and_then(|p| p.children.remove(invokeid))
        else {
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
        self.remove_tree(&child);
    }
}
