//! `<session:terminate>`: stops a session (by default the current one).
//! Attributes: `sessionid` (an expression; omitted means this session),
//! `requestid`. Another session's end is confirmed with
//! `session.terminate.done` (`requestid`, `sessionid`) or
//! `error.session.terminate`.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::interpreter::{ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{
    assign_request_id, defer, eval_attr, failure_event, result_event, value_text,
};
use crate::server::ServerHandles;
use crate::server::worker::Command;

/// The `<session:terminate>` handler.
pub struct Terminate(pub Arc<ServerHandles>);

impl CustomActionHandler for Terminate {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        let sessions = self.0.sessions.clone();
        let own = scope.session_id.to_string();
        let target = match eval_attr(scope, action, "sessionid")? {
            Some(Value::Null) | None => own.clone(),
            Some(v) => value_text(&v),
        };
        let requestid = assign_request_id(scope, action, &sessions)?;
        let job = async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sent = sessions.send(
                &target,
                Command::Terminate {
                    id: target.clone(),
                    reply: Some(tx),
                },
            );
            let result = match sent {
                Ok(()) => rx.await.unwrap_or_else(|_| {
                    Err(crate::server::error::ApiError::unavailable(
                        "worker stopped",
                    ))
                }),
                Err(e) => Err(e),
            };
            if target == own {
                return; // nobody is left to tell
            }
            let mut data = Map::new();
            data.insert("requestid".into(), Value::String(requestid));
            data.insert("sessionid".into(), Value::String(target));
            let event = match result {
                Ok(_) => result_event("session.terminate.done", data),
                Err(e) => failure_event("error.session.terminate", data, e.code, e.message),
            };
            let _ = sessions.post_event(&own, event);
        };
        defer(scope, action, job)
    }
}
