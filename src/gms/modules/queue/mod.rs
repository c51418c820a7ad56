//! The ORS `queue` module: `<queue:submit>` asks the routing backend for
//! an agent matching a target and reserves them (routing the interaction
//! there too unless `route="false"`), `<queue:cancel>` withdraws a submit
//! still waiting, and `<queue:query>` reports on one. [`Submits`] keeps
//! the submits still waiting, for `queue:query`, and in the store
//! (`crate::gms::continuity`), so a submit outlives a restart.

pub mod cancel;
pub mod query;
pub mod submit;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::backends::routing::ReserveRequest;
use crate::gms::continuity::Journal;

/// A `<queue:submit>` still waiting for a target (stored as JSON:
/// `{"request": {…}, "route", "since_ms", "session"}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outstanding {
    /// What the routing backend was asked: request id, interaction,
    /// virtual queue, target text, priority, timeouts (ms).
    pub request: ReserveRequest,
    /// Whether the interaction is routed to the agent found.
    pub route: bool,
    /// When it began, ms since the Unix epoch.
    pub since_ms: u64,
    /// The session that made it.
    pub session: String,
}

/// The submits still waiting, by request id.
pub struct Submits {
    map: Mutex<HashMap<String, Outstanding>>,
    /// Request ids read back from the store whose session has not been
    /// restored since ([`Submits::take_restored_of`]).
    unclaimed: Mutex<HashSet<String>>,
    journal: Journal,
}

impl Submits {
    /// No submits; changes are written to `journal`.
    pub fn new(journal: Journal) -> Submits {
        Submits {
            map: Mutex::new(HashMap::new()),
            unclaimed: Mutex::new(HashSet::new()),
            journal,
        }
    }

    /// A submit began waiting.
    pub fn begin(&self, submit: Outstanding) {
        if let Ok(mut m) = self.map.lock() {
            self.journal.put(&submit.request.request_id, &submit);
            m.insert(submit.request.request_id.clone(), submit);
        }
    }

    /// A submit was answered (done or failed).
    pub fn finish(&self, requestid: &str) {
        if let Ok(mut m) = self.map.lock()
            && m.remove(requestid).is_some()
        {
            self.journal.remove(requestid);
        }
    }

    /// Puts back the submits read from the store at start.
    pub fn restore(&self, submits: Vec<Outstanding>) {
        if let (Ok(mut m), Ok(mut unclaimed)) = (self.map.lock(), self.unclaimed.lock()) {
            for s in submits {
                unclaimed.insert(s.request.request_id.clone());
                m.insert(s.request.request_id.clone(), s);
            }
        }
    }

    /// The submits read back from the store that `session` made, each
    /// returned once (when the session is first restored).
    pub fn take_restored_of(&self, session: &str) -> Vec<Outstanding> {
        let (Ok(m), Ok(mut unclaimed)) = (self.map.lock(), self.unclaimed.lock()) else {
            return Vec::new();
        };
        if unclaimed.is_empty() {
            return Vec::new();
        }
        let mine: Vec<Outstanding> = m
            .values()
            .filter(|o| o.session == session && unclaimed.contains(&o.request.request_id))
            .cloned()
            .collect();
        for o in &mine {
            unclaimed.remove(&o.request.request_id);
        }
        mine
    }

    /// The request ids of the submits `session` still has waiting.
    pub fn of_session(&self, session: &str) -> Vec<String> {
        self.map
            .lock()
            .map(|m| {
                m.values()
                    .filter(|o| o.session == session)
                    .map(|o| o.request.request_id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many submits wait in virtual queue `vq`.
    pub fn waiting_in(&self, vq: &str) -> usize {
        self.map
            .lock()
            .map(|m| m.values().filter(|o| o.request.virtual_queue == vq).count())
            .unwrap_or(0)
    }

    /// A waiting submit and its 1-based position in its virtual queue
    /// (higher priority first, then earlier), if it is waiting.
    pub fn position(&self, requestid: &str) -> Option<(Outstanding, usize)> {
        let m = self.map.lock().ok()?;
        let me = m.get(requestid)?.clone();
        let (vq, id, priority) = (
            &me.request.virtual_queue,
            &me.request.request_id,
            me.request.priority,
        );
        let ahead = m
            .values()
            .filter(|o| &o.request.virtual_queue == vq && &o.request.request_id != id)
            .filter(|o| {
                o.request.priority > priority
                    || (o.request.priority == priority
                        && (o.since_ms, &o.request.request_id) < (me.since_ms, id))
            })
            .count();
        Some((me, ahead + 1))
    }
}
