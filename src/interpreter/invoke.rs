//! `<invoke>`: starting children at the end of a macrostep, cancelling them
//! when their state is exited, `<finalize>` and autoforwarding. The host
//! creates and runs the child sessions.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Event, Host, Outbound, SCXML_PROCESSOR, Session};
use crate::datamodel::{DataModelError, InitialValue};
use crate::model::{Content, Document, Invoke, StateId, ValueSource};

/// Where an invoked child's document comes from.
#[derive(Clone, Debug)]
pub enum InvokeSource {
    /// An inline `<content><scxml>`, already built.
    Document(Arc<Document>),
    /// A `src`/`srcexpr` URI, relative to the parent document's location.
    Uri {
        /// The URI as evaluated.
        uri: String,
        /// Where the parent document came from (a path or URL).
        base: Option<String>,
    },
    /// SCXML text from `<content expr>`.
    Text(String),
}

/// What the host needs to start an invoked child session.
#[derive(Clone, Debug)]
pub struct InvokeRequest {
    /// The invoke id (`_event.invokeid` of events from the child).
    pub invokeid: Arc<str>,
    /// The invoke type as evaluated.
    pub type_: String,
    /// The child's document.
    pub source: InvokeSource,
    /// `<param>`/`namelist` values; they override the child's `<data>`.
    pub data: Map<String, Value>,
    /// Whether external events are forwarded to the child.
    pub autoforward: bool,
}

/// An invocation started by this session and not yet cancelled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveInvoke {
    /// The invoking state.
    pub state: StateId,
    /// Index of the `<invoke>` within that state.
    pub index: usize,
}

/// Whether an invoke `type` names an SCXML child session.
pub fn is_scxml_invoke_type(t: &str) -> bool {
    matches!(
        t,
        "http://www.w3.org/TR/scxml/" | "http://www.w3.org/TR/scxml" | "scxml" | SCXML_PROCESSOR
    )
}

impl Session {
    /// Starts the invokes of the states entered during the macrostep that
    /// are still active, in entry order then document order.
    pub(super) fn start_invokes(&mut self, doc: &Document, host: &mut dyn Host) {
        let states = std::mem::take(&mut self.states_to_invoke);
        for s in states.iter() {
            for (index, inv) in doc.state(s).invokes.iter().enumerate() {
                if let Err(e) = self.invoke(doc, s, index, inv, host) {
                    self.raise_error("error.execution", &e.message, None);
                }
            }
        }
        self.states_to_invoke = crate::model::StateSet::with_capacity(doc.states.len());
    }

    fn eval_source(&mut self, v: &ValueSource) -> Result<String, DataModelError> {
        match v {
            ValueSource::Literal(s) => Ok(s.to_string()),
            ValueSource::Expr(e) => self.datamodel.eval_string(*e),
        }
    }

    fn invoke(
        &mut self,
        doc: &Document,
        state: StateId,
        index: usize,
        inv: &Invoke,
        host: &mut dyn Host,
    ) -> Result<(), DataModelError> {
        let type_ = match &inv.type_ {
            Some(t) => self.eval_source(t)?,
            None => "http://www.w3.org/TR/scxml/".to_string(),
        };
        if !is_scxml_invoke_type(&type_) {
            return Err(DataModelError::new(format!(
                "unsupported invoke type '{type_}'"
            )));
        }
        let invokeid: Arc<str> = match &inv.id {
            Some(id) => id.clone(),
            None => {
                self.next_send += 1;
                crate::ids::invoke_id(&doc.state(state).name, &self.id, self.next_send).into()
            }
        };
        if let Some(loc) = inv.idlocation {
            let v = InitialValue::Json(Value::String(invokeid.to_string()));
            self.datamodel.assign_value(loc, &v)?;
        }
        let source = if let Some(inline) = &inv.inline_document {
            match inline {
                Ok(d) => InvokeSource::Document(d.clone()),
                Err(e) => return Err(DataModelError::new(format!("invalid inline child: {e}"))),
            }
        } else if let Some(src) = &inv.src {
            InvokeSource::Uri {
                uri: self.eval_source(src)?,
                base: doc.location.clone(),
            }
        } else if let Some(content) = &inv.content {
            let text = match content {
                // An XML value (a DOM) arrives tagged; take its text.
                Content::Expr(e) => match self.datamodel.eval_value(*e)? {
                    Some(Value::String(s)) => s,
                    Some(Value::Object(m)) if m.get("$xml").is_some_and(Value::is_string) => {
                        m["$xml"].as_str().unwrap_or_default().to_string()
                    }
                    Some(other) => other.to_string(),
                    None => String::new(),
                },
                Content::Inline(c) => c.text.to_string(),
            };
            InvokeSource::Text(text)
        } else {
            return Err(DataModelError::new(
                "<invoke> needs 'src', 'srcexpr' or <content>",
            ));
        };
        let data = match self.evaluate_params(&inv.namelist, &inv.params)? {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let request = InvokeRequest {
            invokeid: invokeid.clone(),
            type_,
            source,
            data,
            autoforward: inv.autoforward,
        };
        host.invoke(&self.id, request)
            .map_err(|e| DataModelError::new(format!("cannot invoke '{invokeid}': {e}")))?;
        self.invokes.insert(invokeid, ActiveInvoke { state, index });
        Ok(())
    }

    /// Cancels the invocations started by state `s` (it is being exited).
    pub(super) fn cancel_invokes_of(&mut self, s: StateId, host: &mut dyn Host) {
        if self.invokes.is_empty() {
            return;
        }
        let ids: Vec<Arc<str>> = self
            .invokes
            .iter()
            .filter(|(_, a)| a.state == s)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.invokes.remove(&id);
            host.cancel_invoke(&self.id, &id);
        }
    }

    /// An empty `<finalize/>`: each variable the invoke names in its
    /// `namelist` or in a `<param location>` takes the value the child
    /// returned under that name, if it returned one (SCXML 1.0 §6.5).
    fn update_from_child(&mut self, doc: &Document, inv: &Invoke, event: &Event) {
        let Some(Value::Object(data)) = &event.data else {
            return;
        };
        let locations =
            inv.namelist
                .iter()
                .map(|(n, e)| (n.clone(), *e))
                .chain(inv.params.iter().filter_map(|p| {
                    p.expr
                        .filter(|e| doc.expr(*e).kind == crate::model::ExprKind::Location)
                        .map(|e| (p.name.clone(), e))
                }));
        for (name, location) in locations.collect::<Vec<_>>() {
            if let Some(v) = data.get(&*name)
                && let Err(e) = self
                    .datamodel
                    .assign_value(location, &InitialValue::Json(v.clone()))
            {
                self.raise_error("error.execution", &e.message, None);
            }
        }
    }

    /// Runs `<finalize>` for an event from an invoked child and forwards
    /// the event to children with `autoforward`.
    pub(super) fn finalize_and_autoforward(
        &mut self,
        doc: &Document,
        event: &Event,
        host: &mut dyn Host,
    ) {
        if self.invokes.is_empty() {
            return;
        }
        if let Some(id) = &event.invokeid
            && let Some(active) = self.invokes.get(id).cloned()
            && self.configuration.contains(active.state)
        {
            let inv = &doc.state(active.state).invokes[active.index];
            match &inv.finalize {
                Some(block) if !block.is_empty() => self.execute_block(doc, block, host),
                Some(_) => self.update_from_child(doc, inv, event),
                None => {}
            }
        }
        let forward: Vec<Arc<str>> = self
            .invokes
            .iter()
            .filter(|(_, a)| {
                self.configuration.contains(a.state)
                    && doc.state(a.state).invokes[a.index].autoforward
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in forward {
            let outbound = Outbound {
                target: format!("#_{id}"),
                type_: SCXML_PROCESSOR.to_string(),
                event: event.clone(),
            };
            let _ = host.dispatch(&self.id, outbound);
        }
    }
}
