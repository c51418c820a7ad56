//! `<queue:cancel>`: withdraws a `<queue:submit>` that is still waiting.
//! `requestid` is an expression giving the submit's request id. Outcome:
//! `queue.cancel.done` with `requestid` and `cancelled` (false when the
//! submit had already finished); the submit itself then fails with
//! `error.queue.submit` (`cancelled`).

use serde_json::{Map, Value};

use crate::gms::Gms;
use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{defer, required_text, result_event};

/// The `<queue:cancel>` handler.
pub struct Cancel(pub std::sync::Arc<Gms>);

impl CustomActionHandler for Cancel {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let ctx = self.0.clone();
        let requestid = required_text(scope, action, "requestid")?;
        let session = scope.session_id.to_string();
        let job = async move {
            let cancelled = ctx.backends.routing.cancel(&requestid).await;
            let mut data = Map::new();
            data.insert("requestid".into(), Value::from(requestid));
            data.insert("cancelled".into(), Value::from(cancelled));
            let _ = ctx
                .sessions
                .post_event(&session, result_event("queue.cancel.done", data));
        };
        defer(scope, action, job)
    }
}
