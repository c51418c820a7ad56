//! The ORS `queue` module: `<queue:submit>` asks the routing backend for
//! an agent matching a target and reserves them (routing the interaction
//! there too unless `route="false"`), `<queue:cancel>` withdraws a submit
//! still waiting, and `<queue:query>` reports on one. [`Submits`] keeps
//! the submits still waiting, for `queue:query`.

pub mod cancel;
pub mod query;
pub mod submit;

use std::collections::HashMap;
use std::sync::Mutex;

/// A `<queue:submit>` still waiting for a target.
#[derive(Debug, Clone)]
pub struct Outstanding {
    /// Its request id.
    pub requestid: String,
    /// The interaction it routes.
    pub interaction_id: String,
    /// The virtual queue it waits in.
    pub virtual_queue: String,
    /// The target text given to the routing backend.
    pub target: String,
    /// Its priority (higher first).
    pub priority: i64,
    /// When it began, ms since the Unix epoch.
    pub since_ms: u64,
    /// The session that made it.
    pub session: String,
}

/// The submits still waiting, by request id.
#[derive(Default)]
pub struct Submits {
    map: Mutex<HashMap<String, Outstanding>>,
}

impl Submits {
    /// A submit began waiting.
    pub fn begin(&self, submit: Outstanding) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(submit.requestid.clone(), submit);
        }
    }

    /// A submit was answered (done or failed).
    pub fn finish(&self, requestid: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(requestid);
        }
    }

    /// The request ids of the submits `session` still has waiting.
    pub fn of_session(&self, session: &str) -> Vec<String> {
        self.map
            .lock()
            .map(|m| {
                m.values()
                    .filter(|o| o.session == session)
                    .map(|o| o.requestid.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many submits wait in virtual queue `vq`.
    pub fn waiting_in(&self, vq: &str) -> usize {
        self.map
            .lock()
            .map(|m| m.values().filter(|o| o.virtual_queue == vq).count())
            .unwrap_or(0)
    }

    /// A waiting submit and its 1-based position in its virtual queue
    /// (higher priority first, then earlier), if it is waiting.
    pub fn position(&self, requestid: &str) -> Option<(Outstanding, usize)> {
        let m = self.map.lock().ok()?;
        let me = m.get(requestid)?.clone();
        let ahead = m
            .values()
            .filter(|o| o.virtual_queue == me.virtual_queue && o.requestid != me.requestid)
            .filter(|o| {
                o.priority > me.priority
                    || (o.priority == me.priority
                        && (o.since_ms, &o.requestid) < (me.since_ms, &me.requestid))
            })
            .count();
        Some((me, ahead + 1))
    }
}
