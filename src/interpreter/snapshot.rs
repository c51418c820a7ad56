//! A running session captured as plain, serializable data, and the restore
//! that continues exactly where it stopped. State references are by state
//! name so a snapshot stays readable and checkable against the document.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DelayedSend, Event, FinalInfo, Outbound, Session, SessionOptions};
use crate::model::{Document, StateId, StateSet};

/// A delayed send in a snapshot; `due_ms` is wall-clock epoch milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DelayedSnapshot {
    /// The send id (for `<cancel>`).
    pub sendid: String,
    /// When it falls due (ms since the Unix epoch).
    pub due_ms: u64,
    /// Order among sends due at the same time.
    pub seq: u64,
    /// Destination outside this session, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<Outbound>,
    /// The event to deliver.
    pub event: Event,
}

/// Everything needed to continue a session elsewhere or later. `D` is the
/// data model's form: a JSON value (read back, or for tests and views);
/// the text written to the store is made by [`Session::snapshot_text`]
/// with the data model's own JSON text appended as the last member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionSnapshot<D = Value> {
    /// The session id.
    pub session_id: String,
    /// The document's `name`, as a check on restore.
    #[serde(default)]
    pub document_name: Option<String>,
    /// Whether the session was still running.
    pub running: bool,
    /// Active states, in document order.
    pub configuration: Vec<String>,
    /// Recorded history: history state → states it remembers.
    pub history: BTreeMap<String, Vec<String>>,
    /// States whose `<data>` has been initialised (late binding).
    pub initialized: Vec<String>,
    /// States entered in the last macrostep whose invokes have not started.
    pub states_to_invoke: Vec<String>,
    /// Internal queue (empty between macrosteps, kept for completeness).
    pub internal_queue: Vec<Event>,
    /// External queue.
    pub external_queue: Vec<Event>,
    /// Pending delayed sends.
    pub delayed: Vec<DelayedSnapshot>,
    /// Counter for generated send ids.
    pub next_send: u64,
    /// Invocations running: invoke id → invoking state and `<invoke>` index.
    #[serde(default)]
    pub invokes: BTreeMap<String, (String, usize)>,
    /// Why the session was stopped without reaching a final state (a
    /// limit, a snapshot it could not take, a quarantine), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Requests of custom actions awaiting their answer, by request id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: super::PendingRequests,
    /// The data model's variables. The last member of the text, so that
    /// [`Session::snapshot_text`] can append the data model's own text.
    pub datamodel: D,
}

/// Why a snapshot could not be taken or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A state named in the snapshot is not in the document.
    #[error("state '{0}' in the snapshot is not in the document")]
    UnknownState(String),
    /// The data model refused.
    #[error("data model: {0}")]
    DataModel(String),
}

impl Session {
    /// Captures the session between macrosteps.
    pub fn snapshot(&mut self) -> Result<SessionSnapshot, SnapshotError> {
        let datamodel = self
            .datamodel
            .snapshot()
            .map_err(|e| SnapshotError::DataModel(e.message))?;
        Ok(self.snapshot_with(datamodel))
    }

    /// [`Session::snapshot`] as the JSON text the store keeps, the data
    /// model written as text by the model itself.
    ///
    /// The data model's text is appended as the last member as it is,
    /// not parsed again: it is the model's own encoder's output, one JSON
    /// object (checked in `tests/snapshot.rs`).
    pub fn snapshot_text(&mut self) -> Result<String, SnapshotError> {
        let text = self
            .datamodel
            .snapshot_text()
            .map_err(|e| SnapshotError::DataModel(e.message))?;
        let mut out = serde_json::to_string(&self.snapshot_with(()))
            .map_err(|e| SnapshotError::DataModel(e.to_string()))?;
        // `datamodel` is the last field, written as `null` for `()`.
        const LAST: &str = "null}";
        if !out.ends_with(LAST) {
            return Err(SnapshotError::DataModel(
                "the snapshot does not end with its data model".into(),
            ));
        }
        out.truncate(out.len() - LAST.len());
        out.reserve(text.len() + 1);
        out.push_str(&text);
        out.push('}');
        Ok(out)
    }

    /// The session's snapshot around a data model already captured.
    fn snapshot_with<D>(&self, datamodel: D) -> SessionSnapshot<D> {
        let doc = self.doc.clone();
        let name = |s: StateId| doc.state(s).name.to_string();
        let set = |set: &StateSet| set.iter().map(name).collect::<Vec<_>>();
        SessionSnapshot {
            session_id: self.id.to_string(),
            document_name: doc.name.clone(),
            running: self.running,
            configuration: set(&self.configuration),
            history: self
                .history_values
                .iter()
                .map(|(h, v)| (name(*h), v.iter().map(|&s| name(s)).collect()))
                .collect(),
            initialized: set(&self.initialized),
            states_to_invoke: set(&self.states_to_invoke),
            internal_queue: self.internal_queue.iter().cloned().collect(),
            external_queue: self.external_queue.iter().cloned().collect(),
            delayed: self
                .delayed
                .iter()
                .map(|d| DelayedSnapshot {
                    sendid: d.sendid.to_string(),
                    due_ms: d.due_ms,
                    seq: d.seq,
                    outbound: d.outbound.clone(),
                    event: d.event.clone(),
                })
                .collect(),
            next_send: self.next_send,
            invokes: self
                .invokes
                .iter()
                .map(|(id, a)| (id.to_string(), (name(a.state), a.index)))
                .collect(),
            datamodel,
            stop_reason: self.stop_reason.clone(),
            requests: self.requests.clone(),
        }
    }

    /// Stops the session for `reason` without running anything more (its
    /// state could not be kept, or it was quarantined): it is no longer
    /// running and [`Session::stop_reason`] says why.
    pub fn stop_with_reason(&mut self, reason: impl Into<String>) {
        self.running = false;
        self.stop_reason = Some(reason.into());
        self.delayed.clear();
    }

    /// What is left of a stopped session when its data cannot be captured:
    /// its id, name and stop reason, nothing to run.
    pub fn stopped_snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            session_id: self.id.to_string(),
            document_name: self.doc.name.clone(),
            running: false,
            configuration: Vec::new(),
            history: BTreeMap::new(),
            initialized: Vec::new(),
            states_to_invoke: Vec::new(),
            internal_queue: Vec::new(),
            external_queue: Vec::new(),
            delayed: Vec::new(),
            next_send: self.next_send,
            invokes: BTreeMap::new(),
            datamodel: Value::Object(Default::default()),
            stop_reason: self.stop_reason.clone(),
            requests: BTreeMap::new(),
        }
    }

    /// Rebuilds a session from a snapshot: a fresh data model gets the system
    /// variables, the document's top-level scripts run again (to define its
    /// functions), then the saved variables overwrite what they set.
    pub fn restore(
        doc: Arc<Document>,
        snapshot: &SessionSnapshot,
        mut options: SessionOptions,
    ) -> Result<Session, SnapshotError> {
        options.session_id = Some(snapshot.session_id.clone());
        let mut session = Session::new(doc.clone(), options);
        let lookup = |n: &str| {
            doc.state_by_name(n)
                .ok_or_else(|| SnapshotError::UnknownState(n.to_string()))
        };
        let to_set = |names: &[String]| -> Result<StateSet, SnapshotError> {
            let mut set = StateSet::with_capacity(doc.states.len());
            for n in names {
                set.insert(lookup(n)?);
            }
            Ok(set)
        };
        let vars = session.system_variables();
        session
            .datamodel
            .set_system_variables(&vars)
            .map_err(|e| SnapshotError::DataModel(e.message))?;
        if let Some(prelude) = session.options.prelude.clone()
            && let Err(e) = session.datamodel.restore_prelude(&prelude)
        {
            tracing::warn!(error = %e, "the prelude failed while restoring");
        }
        for &script in &doc.scripts {
            if let Err(e) = session.datamodel.run_script(script) {
                tracing::warn!(error = %e, "top-level script failed while restoring");
            }
        }
        session
            .datamodel
            .restore(&snapshot.datamodel)
            .map_err(|e| SnapshotError::DataModel(e.message))?;
        session.configuration = to_set(&snapshot.configuration)?;
        for s in session.configuration.clone().iter() {
            session.datamodel.state_entered(s);
        }
        for (h, values) in &snapshot.history {
            let h = lookup(h)?;
            let values = values
                .iter()
                .map(|v| lookup(v))
                .collect::<Result<Vec<_>, _>>()?;
            session.history_values.insert(h, values);
        }
        session.initialized = to_set(&snapshot.initialized)?;
        session.states_to_invoke = to_set(&snapshot.states_to_invoke)?;
        session.internal_queue = snapshot.internal_queue.iter().cloned().collect();
        session.external_queue = snapshot.external_queue.iter().cloned().collect();
        session.delayed = snapshot
            .delayed
            .iter()
            .map(|d| DelayedSend {
                sendid: d.sendid.as_str().into(),
                due_ms: d.due_ms,
                seq: d.seq,
                outbound: d.outbound.clone(),
                event: d.event.clone(),
            })
            .collect();
        session.next_send = snapshot.next_send;
        for (id, (state, index)) in &snapshot.invokes {
            let state = lookup(state)?;
            session.invokes.insert(
                id.as_str().into(),
                super::ActiveInvoke {
                    state,
                    index: *index,
                },
            );
        }
        session.running = snapshot.running;
        session.stop_reason = snapshot.stop_reason.clone();
        session.requests = snapshot.requests.clone();
        session.started = true;
        if !snapshot.running {
            session.final_info = None::<FinalInfo>;
        }
        Ok(session)
    }
}
