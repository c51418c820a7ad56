//! Executable content: one `match` over [`Action`], plus `<data>`
//! initialisation, `<donedata>` evaluation, and `<send>` through the SCXML
//! Event I/O Processor.

use crate::model::Foreach;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{
    ActionScope, DelayedSend, Event, EventKind, Host, Outbound, SCXML_PROCESSOR, Session,
    parse_delay,
};
use crate::datamodel::{DataModelError, InitialValue, text_value};
use crate::model::{
    Action, AssignValue, Content, DataSource, Document, ExprId, Param, SendAction, StateId,
    ValueSource,
};

/// An error inside a block: the rest of the block is skipped.
/// Most `<foreach>` iterations (nested ones counted) one macrostep may
/// run; past it the `<foreach>` fails with `error.execution` (a foreach in
/// a foreach over 30 000 items once froze a worker).
pub const MAX_FOREACH_ITERATIONS: u64 = 1_000_000;

/// Most events one macrostep may queue for its own session (`<raise>`,
/// and `<send>`s to itself without delay); past it the action fails with
/// `error.execution` and queues nothing.
pub const MAX_EVENTS_PER_MACROSTEP: u64 = 10_000;

struct BlockError;

impl Session {
    /// Queues a platform error event (`error.execution`, `error.communication`).
    pub(super) fn raise_error(&mut self, name: &str, message: &str, sendid: Option<Arc<str>>) {
        tracing::debug!(session = %self.id, error = name, message);
        let mut ev = Event::new(name, EventKind::Platform);
        ev.sendid = sendid;
        ev.data = Some(serde_json::json!({ "message": message }));
        self.internal_queue.push_back(ev);
    }

    /// Counts one more event this macrostep queues for its own session;
    /// `Err` (after raising `error.execution`) past
    /// [`MAX_EVENTS_PER_MACROSTEP`].
    fn count_queued(&mut self) -> Result<(), BlockError> {
        self.queued_in_macrostep += 1;
        if self.queued_in_macrostep > MAX_EVENTS_PER_MACROSTEP {
            return Err(self.fail(DataModelError::new(format!(
                "more than {MAX_EVENTS_PER_MACROSTEP} events queued for the session in one macrostep"
            ))));
        }
        Ok(())
    }

    /// Runs a block of executable content; an error raises
    /// `error.execution` and stops the block.
    pub(super) fn execute_block(&mut self, doc: &Document, block: &[Action], host: &mut dyn Host) {
        let _ = self.run_actions(doc, block, host);
        self.current_action = None;
    }

    /// Runs `block` to its end or its first error. Nested `<if>` and
    /// `<foreach>` bodies are frames on an explicit stack, not recursive
    /// calls, so deeply nested executable content never deepens Rust's
    /// stack. On an error every `<foreach>` still open ends its scope.
    fn run_actions(
        &mut self,
        doc: &Document,
        block: &[Action],
        host: &mut dyn Host,
    ) -> Result<(), BlockError> {
        let mut frames = vec![BlockFrame::Block {
            actions: block,
            next: 0,
        }];
        let outcome = self.run_frames(doc, &mut frames, host);
        if outcome.is_err() {
            for frame in frames.iter().rev() {
                if let BlockFrame::Foreach { .. } = frame {
                    self.datamodel.foreach_end();
                }
            }
        }
        outcome
    }

    fn run_frames<'d>(
        &mut self,
        doc: &Document,
        frames: &mut Vec<BlockFrame<'d>>,
        host: &mut dyn Host,
    ) -> Result<(), BlockError> {
        while let Some(top) = frames.last_mut() {
            match top {
                BlockFrame::Block { actions, next } => {
                    let actions: &'d [Action] = actions;
                    let Some(action) = actions.get(*next) else {
                        frames.pop();
                        continue;
                    };
                    *next += 1;
                    match action {
                        Action::If { branches } => {
                            self.current_action = Some(Self::locate(doc, action));
                            for branch in branches {
                                let take = match branch.cond {
                                    None => true,
                                    Some(c) => {
                                        self.datamodel.eval_cond(c).map_err(|e| self.fail(e))?
                                    }
                                };
                                if take {
                                    frames.push(BlockFrame::Block {
                                        actions: &branch.body,
                                        next: 0,
                                    });
                                    break;
                                }
                            }
                        }
                        Action::Foreach(f) => {
                            self.current_action = Some(Self::locate(doc, action));
                            let len = self
                                .datamodel
                                .foreach_begin(f.array, &f.item, f.index.as_deref())
                                .map_err(|e| self.fail(e))?;
                            frames.push(BlockFrame::Foreach { f, len, done: 0 });
                        }
                        other => self.run_action(doc, other, host)?,
                    }
                    if let Some(reason) = self.memory_over_budget() {
                        host.log(&self.id, Some("error"), &reason);
                        self.stop_reason = Some(reason.clone());
                        self.running = false;
                        return Err(self.fail(DataModelError::new(reason)));
                    }
                }
                BlockFrame::Foreach { f, len, done } => {
                    let f: &'d Foreach = f;
                    if *done >= *len {
                        frames.pop();
                        self.datamodel.foreach_end();
                        continue;
                    }
                    let i = *done;
                    *done += 1;
                    self.foreach_iterations += 1;
                    if self.foreach_iterations > MAX_FOREACH_ITERATIONS {
                        self.current_action = Some(Self::locate_foreach(f));
                        return Err(self.fail(DataModelError::new(format!(
                            "<foreach> ran more than {MAX_FOREACH_ITERATIONS} iterations in one macrostep"
                        ))));
                    }
                    let limit = self.options.max_macrostep_ms;
                    if limit > 0
                        && self.foreach_iterations.is_multiple_of(1024)
                        && host.now_ms().saturating_sub(self.macrostep_started_ms) > limit
                    {
                        self.current_action = Some(Self::locate_foreach(f));
                        return Err(self.fail(DataModelError::new(format!(
                            "<foreach> ran past the macrostep's {limit} ms"
                        ))));
                    }
                    if let Err(e) = self.datamodel.foreach_step(&f.item, f.index.as_deref(), i) {
                        self.current_action = Some(Self::locate_foreach(f));
                        return Err(self.fail(e));
                    }
                    frames.push(BlockFrame::Block {
                        actions: &f.body,
                        next: 0,
                    });
                }
            }
        }
        Ok(())
    }

    /// Why to stop the session when the process's memory has grown past
    /// [`super::SessionOptions::max_macrostep_memory_bytes`] since the
    /// current macrostep began (never when nothing samples it).
    pub(super) fn memory_over_budget(&self) -> Option<String> {
        let limit = self.options.max_macrostep_memory_bytes;
        if limit == 0 || self.memory_mark == 0 {
            return None;
        }
        let grown = crate::memory::resident_sample().saturating_sub(self.memory_mark);
        (grown > limit).then(|| {
            format!(
                "the server's memory grew by {} MiB during this macrostep, past \
                 limits.max_macrostep_memory_mb ({} MiB); session stopped",
                grown >> 20,
                limit >> 20
            )
        })
    }

    fn locate_foreach(
        f: &Foreach,
    ) -> (
        std::borrow::Cow<'static, str>,
        Option<crate::model::Position>,
    ) {
        (std::borrow::Cow::Borrowed("foreach"), Some(f.position))
    }

    /// Raises `error.execution` for an element that failed: `_event.data`
    /// has the `message`, and the element's `tagname`, `line` and `column`
    /// in the document when known.
    fn fail(&mut self, e: DataModelError) -> BlockError {
        tracing::debug!(session = %self.id, error = "error.execution", message = %e.message);
        let mut data = serde_json::Map::new();
        data.insert("message".into(), serde_json::Value::from(e.message));
        if let Some((tag, pos)) = &self.current_action {
            data.insert("tagname".into(), serde_json::Value::from(tag.as_ref()));
            if let Some(p) = pos {
                data.insert("line".into(), serde_json::Value::from(p.line));
                data.insert("column".into(), serde_json::Value::from(p.column));
            }
        }
        let mut ev = Event::new("error.execution", EventKind::Platform);
        ev.data = Some(serde_json::Value::Object(data));
        self.internal_queue.push_back(ev);
        BlockError
    }

    /// The tag name and place of an action, for its errors.
    fn locate(
        doc: &Document,
        action: &Action,
    ) -> (
        std::borrow::Cow<'static, str>,
        Option<crate::model::Position>,
    ) {
        use std::borrow::Cow;
        let at = |e: &ExprId| Some(doc.expr(*e).position);
        match action {
            Action::Raise { .. } => (Cow::Borrowed("raise"), None),
            Action::Send(s) => (Cow::Borrowed("send"), Some(s.position)),
            Action::Cancel { sendid } => (
                Cow::Borrowed("cancel"),
                match sendid {
                    ValueSource::Expr(e) => at(e),
                    ValueSource::Literal(_) => None,
                },
            ),
            Action::Log { expr, .. } => (Cow::Borrowed("log"), expr.as_ref().and_then(at)),
            Action::Assign { location, .. } => (Cow::Borrowed("assign"), at(location)),
            Action::Script(e) => (Cow::Borrowed("script"), at(e)),
            Action::If { branches } => (
                Cow::Borrowed("if"),
                branches.first().and_then(|b| b.cond.as_ref()).and_then(at),
            ),
            Action::Foreach(f) => (Cow::Borrowed("foreach"), Some(f.position)),
            Action::Custom(c) => (Cow::Owned(c.name.to_string()), Some(c.position)),
        }
    }

    fn value_string(&mut self, v: &ValueSource) -> Result<String, BlockError> {
        match v {
            ValueSource::Literal(s) => Ok(s.to_string()),
            ValueSource::Expr(e) => self.datamodel.eval_string(*e).map_err(|e| self.fail(e)),
        }
    }

    fn run_action(
        &mut self,
        doc: &Document,
        action: &Action,
        host: &mut dyn Host,
    ) -> Result<(), BlockError> {
        self.current_action = Some(Self::locate(doc, action));
        match action {
            Action::Raise { event } => {
                self.count_queued()?;
                self.internal_queue
                    .push_back(Event::new(event.clone(), EventKind::Internal));
            }
            Action::Log { label, expr } => {
                let message = match expr {
                    Some(e) => self.datamodel.eval_string(*e).map_err(|e| self.fail(e))?,
                    None => String::new(),
                };
                host.log(&self.id, label.as_deref(), &message);
            }
            Action::Assign { location, value } => {
                let r = match value {
                    AssignValue::Expr(e) => self.datamodel.assign_expr(*location, *e),
                    AssignValue::Inline(c) => {
                        let v = if c.is_xml {
                            InitialValue::Xml(c.text.to_string())
                        } else {
                            text_value(&c.text)
                        };
                        self.datamodel.assign_value(*location, &v)
                    }
                    AssignValue::None => self
                        .datamodel
                        .assign_value(*location, &InitialValue::Undefined),
                };
                r.map_err(|e| self.fail(e))?;
            }
            Action::Script(s) => self.datamodel.run_script(*s).map_err(|e| self.fail(e))?,
            // Nested content runs on `run_actions`' explicit stack.
            Action::If { .. } | Action::Foreach(_) => {
                return self.run_actions(doc, std::slice::from_ref(action), host);
            }
            Action::Cancel { sendid } => {
                let id = self.value_string(sendid)?;
                self.delayed.retain(|d| *d.sendid != *id);
            }
            Action::Send(send) => self.send(send, host)?,
            Action::Custom(custom) => {
                let handler = self
                    .options
                    .custom_actions
                    .get(&custom.namespace, &custom.name)
                    .cloned();
                let Some(handler) = handler else {
                    if let Some(module) = crate::model::ors_module(&custom.namespace) {
                        // An ORS module action nothing implements answers
                        // like a failed request of that module, and the
                        // block goes on (issue 16; docs/ors-dialect.md).
                        let name = format!("error.{module}.{}", custom.name);
                        let message = format!(
                            "<{}> of the ORS {module} module is not supported by this server",
                            custom.name
                        );
                        tracing::debug!(session = %self.id, error = %name, "{message}");
                        let mut ev = Event::new(name.as_str(), EventKind::Platform);
                        ev.data = Some(serde_json::json!({
                            "error": "unsupported",
                            "message": message,
                        }));
                        self.internal_queue.push_back(ev);
                        return Ok(());
                    }
                    return Err(self.fail(DataModelError::new(format!(
                        "no handler for custom action <{}> in namespace '{}'",
                        custom.name, custom.namespace
                    ))));
                };
                let mut raised = Vec::new();
                let id = self.id.clone();
                let result = {
                    let mut scope = ActionScope {
                        datamodel: self.datamodel.as_mut(),
                        raised: &mut raised,
                        host,
                        session_id: &id,
                        requests: &mut self.requests,
                    };
                    handler.execute(custom, &mut scope)
                };
                self.internal_queue.extend(raised);
                result.map_err(|e| self.fail(DataModelError::new(e.to_string())))?;
            }
        }
        Ok(())
    }

    /// Evaluates `<param>`s and a namelist into an object.
    pub(super) fn evaluate_params(
        &mut self,
        namelist: &[(Arc<str>, ExprId)],
        params: &[Param],
    ) -> Result<Option<Value>, DataModelError> {
        let pairs = self.evaluate_param_pairs(namelist, params)?;
        Ok(pairs.map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())))
    }

    /// The name/value pairs of a namelist and `<param>`s in order, duplicates
    /// kept (`None` when there are none).
    fn evaluate_param_pairs(
        &mut self,
        namelist: &[(Arc<str>, ExprId)],
        params: &[Param],
    ) -> Result<Option<Vec<(String, Value)>>, DataModelError> {
        if namelist.is_empty() && params.is_empty() {
            return Ok(None);
        }
        let mut pairs = Vec::with_capacity(namelist.len() + params.len());
        for (name, expr) in namelist {
            let v = self.datamodel.eval_location(*expr)?;
            pairs.push((name.to_string(), v.unwrap_or(Value::Null)));
        }
        for p in params {
            let v = match p.expr {
                Some(e) => self.datamodel.eval_value(e)?,
                None => None,
            };
            pairs.push((p.name.to_string(), v.unwrap_or(Value::Null)));
        }
        Ok(Some(pairs))
    }

    fn evaluate_content(&mut self, content: &Content) -> Result<Option<Value>, DataModelError> {
        match content {
            Content::Expr(e) => self.datamodel.eval_value(*e),
            // XML travels tagged so the receiving data model makes a DOM of it.
            Content::Inline(c) if c.is_xml => Ok(Some(serde_json::json!({ "$xml": &*c.text }))),
            Content::Inline(c) => Ok(match text_value(&c.text) {
                InitialValue::Json(v) => Some(v),
                InitialValue::Xml(x) => Some(serde_json::json!({ "$xml": x })),
                InitialValue::Text(t) if t.is_empty() => None,
                InitialValue::Text(t) => Some(Value::String(t)),
                _ => None,
            }),
        }
    }

    /// Evaluates a final state's `<donedata>`; errors raise `error.execution`.
    pub(super) fn evaluate_donedata(&mut self, doc: &Document, s: StateId) -> Option<Value> {
        let dd = doc.state(s).donedata.as_ref()?;
        let result = match &dd.content {
            Some(c) => self.evaluate_content(c),
            None => self.evaluate_params(&[], &dd.params),
        };
        match result {
            Ok(v) => v,
            Err(e) => {
                self.raise_error("error.execution", &e.message, None);
                None
            }
        }
    }

    /// Declares the `<data>` of one state and gives it its initial values.
    pub(super) fn initialize_data(&mut self, doc: &Document, s: StateId) {
        self.initialized.insert(s);
        for decl in &doc.state(s).data {
            if let Some(v) = self.options.initial_data.get(&*decl.id) {
                let v = InitialValue::Json(v.clone());
                if let Err(e) = self.datamodel.declare(&decl.id, &v) {
                    self.raise_error("error.execution", &e.message, None);
                }
                continue;
            }
            let value = match &decl.source {
                DataSource::None => InitialValue::Undefined,
                DataSource::Expr(e) => InitialValue::Expr(*e),
                DataSource::Inline(c) if c.is_xml => InitialValue::Xml(c.text.to_string()),
                DataSource::Inline(c) => text_value(&c.text),
                DataSource::Src {
                    loaded: Ok(text), ..
                } => text_value(text),
                DataSource::Src {
                    loaded: Err(why), ..
                } => {
                    let _ = self.datamodel.declare(&decl.id, &InitialValue::Undefined);
                    let why = why.to_string();
                    self.raise_error("error.execution", &why, None);
                    continue;
                }
            };
            if let Err(e) = self.datamodel.declare(&decl.id, &value) {
                let msg = format!("<data id=\"{}\">: {}", decl.id, e.message);
                self.raise_error("error.execution", &msg, None);
            }
        }
    }

    fn new_sendid(&mut self) -> Arc<str> {
        self.next_send += 1;
        crate::ids::send_id(&self.id, self.next_send).into()
    }

    /// `<send>`: evaluates its attributes and children, then delivers now or
    /// after the delay.
    fn send(&mut self, send: &SendAction, host: &mut dyn Host) -> Result<(), BlockError> {
        let name = match &send.event {
            Some(v) => Some(self.value_string(v)?),
            None => None,
        };
        let target = match &send.target {
            Some(v) => Some(self.value_string(v)?),
            None => None,
        };
        let type_ = match &send.type_ {
            Some(v) => Some(self.value_string(v)?),
            None => None,
        };
        let sendid: Arc<str> = match &send.id {
            Some(id) => id.clone(),
            None => self.new_sendid(),
        };
        if let Some(loc) = send.idlocation {
            let v = InitialValue::Json(Value::String(sendid.to_string()));
            self.datamodel
                .assign_value(loc, &v)
                .map_err(|e| self.fail(e))?;
        }
        let delay_ms = match &send.delay {
            Some(v) => {
                let text = self.value_string(v)?;
                match parse_delay(&text) {
                    Some(ms) => ms,
                    None => {
                        return Err(self.fail(DataModelError::new(format!(
                            "'{text}' is not a valid delay"
                        ))));
                    }
                }
            }
            None => 0,
        };
        // `raw` is the event as the SCXML processor's message: the name and
        // every parameter form-encoded, duplicates included.
        let mut raw = None;
        let data = match &send.content {
            Some(c) => self.evaluate_content(c),
            None => self
                .evaluate_param_pairs(&send.namelist, &send.params)
                .map(|pairs| {
                    pairs.map(|pairs| {
                        let mut form = form_urlencoded::Serializer::new(String::new());
                        if let Some(n) = name.as_deref().filter(|n| !n.is_empty()) {
                            form.append_pair("_scxmleventname", n);
                        }
                        for (k, v) in &pairs {
                            match v {
                                Value::String(s) => form.append_pair(k, s),
                                other => form.append_pair(k, &other.to_string()),
                            };
                        }
                        raw = Some(Arc::<str>::from(form.finish()));
                        Value::Object(pairs.into_iter().collect())
                    })
                }),
        }
        .map_err(|e| self.fail(e))?;

        let is_scxml_type = match type_.as_deref() {
            None => true,
            Some(t) => is_scxml_type_uri(t),
        };
        if !is_scxml_type && !type_.as_deref().is_some_and(|t| host.supports_type(t)) {
            let t = type_.unwrap_or_default();
            self.raise_error(
                "error.execution",
                &format!("unsupported send type '{t}'"),
                Some(sendid),
            );
            return Err(BlockError);
        }
        let explicit_id = send.id.is_some() || send.idlocation.is_some();
        let mut event = Event::new(name.unwrap_or_default(), EventKind::External);
        event.data = data;
        event.raw = raw;
        if explicit_id {
            event.sendid = Some(sendid.clone());
        }
        event.origin = Some(format!("#_scxml_{}", self.id).into());
        event.origintype = Some(SCXML_PROCESSOR.into());

        // A Basic HTTP send to this session's own location is queued at
        // once, like a send to `#_scxml_<own id>`.
        if let (Some(t), Some(ty)) = (target.as_deref(), type_.as_deref())
            && delay_ms == 0
            && self.own_location("basichttp").is_some_and(|own| own == t)
            && let Some(ev) = host.loopback(ty, t, &event)
        {
            self.fed_self = true;
            self.external_queue.push_back(ev);
            return Ok(());
        }
        let self_target = format!("#_scxml_{}", self.id);
        let to_self = match target.as_deref() {
            None => is_scxml_type,
            Some(t) => is_scxml_type && (t == self_target || t == "#_internal"),
        };
        if to_self && delay_ms == 0 {
            self.count_queued()?;
        }
        let outbound = match target.as_deref() {
            None if is_scxml_type => None,
            Some(t) if is_scxml_type && t == self_target => None,
            Some("#_internal") if is_scxml_type => {
                event.kind = EventKind::Internal;
                self.internal_queue.push_back(event);
                return Ok(());
            }
            Some(t) if is_scxml_type && !t.starts_with("#_") && !t.contains(':') => {
                self.raise_error(
                    "error.execution",
                    &format!("'{t}' is not a valid target for the SCXML I/O processor"),
                    Some(sendid),
                );
                return Err(BlockError);
            }
            other => Some(Outbound {
                target: other.unwrap_or_default().to_string(),
                type_: type_.unwrap_or_else(|| SCXML_PROCESSOR.to_string()),
                event: event.clone(),
            }),
        };
        if delay_ms > 0 {
            let seq = self.next_send;
            self.next_send += 1;
            // Saturating: a delay of 1e20 s is "never", not a wrapped "now".
            let due_ms = host.now_ms().saturating_add(delay_ms);
            self.delayed.push(DelayedSend {
                sendid,
                due_ms,
                seq,
                outbound,
                event,
            });
        } else {
            self.deliver_with_id(outbound, event, sendid, host);
        }
        Ok(())
    }

    /// Delivers a send (now due) to its destination; a failed dispatch
    /// raises `error.communication` carrying the send id.
    pub(super) fn deliver_with_id(
        &mut self,
        outbound: Option<Outbound>,
        event: Event,
        sendid: Arc<str>,
        host: &mut dyn Host,
    ) {
        match outbound {
            None => {
                self.fed_self = true;
                self.external_queue.push_back(event)
            }
            Some(o) => {
                if let Err(e) = host.dispatch(&self.id, o) {
                    self.raise_error("error.communication", &e.0, Some(sendid));
                }
            }
        }
    }
}

/// Whether a `type` names the SCXML Event I/O Processor.
pub fn is_scxml_type_uri(t: &str) -> bool {
    matches!(
        t,
        SCXML_PROCESSOR | "scxml" | "http://www.w3.org/TR/scxml/" | "http://www.w3.org/TR/scxml"
    )
}

/// A block of executable content being run, or a `<foreach>` between its
/// iterations ([`Session::run_actions`]).
enum BlockFrame<'d> {
    /// The actions of a block and the index of the next one to run.
    Block { actions: &'d [Action], next: usize },
    /// A `<foreach>` over `len` items, `done` of them started.
    Foreach {
        f: &'d Foreach,
        len: usize,
        done: usize,
    },
}
