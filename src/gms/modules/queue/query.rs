//! `<queue:query requestid>`: reports on a `<queue:submit>` still waiting
//! (Composer's *QueueQuery* subroutine calls it). `requestid` is an
//! expression giving the submit's request id. Outcome: `queue.query.done`
//! with `requestid`, `interactionid`, `vq` (the virtual queue), `target`,
//! `priority`, `position` (1-based, among the submits this server has
//! waiting in that virtual queue: higher priority first, then earlier) and
//! `waited` (ms); or `error.queue.query` with `error` `unknown` when no
//! submit by that id is waiting (it was answered, cancelled, or never
//! made).

use serde_json::{Map, Value};

use crate::gms::Gms;
use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{defer, failure_event, required_text, result_event};

/// The `<queue:query>` handler.
pub struct Query(pub std::sync::Arc<Gms>);

impl CustomActionHandler for Query {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let ctx = self.0.clone();
        let requestid = required_text(scope, action, "requestid")?;
        let session = scope.session_id.to_string();
        let job = async move {
            let mut data = Map::new();
            data.insert("requestid".into(), Value::from(requestid.clone()));
            let event = match ctx.submits.position(&requestid) {
                Some((submit, position)) => {
                    let request = submit.request;
                    data.insert("interactionid".into(), Value::from(request.interaction_id));
                    data.insert("vq".into(), Value::from(request.virtual_queue));
                    data.insert("target".into(), Value::from(request.target));
                    data.insert("priority".into(), Value::from(request.priority));
                    data.insert("position".into(), Value::from(position));
                    data.insert(
                        "waited".into(),
                        Value::from(crate::host::wall_clock_ms().saturating_sub(submit.since_ms)),
                    );
                    result_event("queue.query.done", data)
                }
                None => failure_event(
                    "error.queue.query",
                    data,
                    "unknown",
                    format!("no queue:submit '{requestid}' is waiting"),
                ),
            };
            let _ = ctx.sessions.post_event(&session, event);
        };
        defer(scope, action, job)
    }
}
