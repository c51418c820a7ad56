//! `<session:terminate>`: stops a session (by default the current one).
//! Attributes: `sessionid` (an expression; omitted means this session),
//! `requestid`. Another session's end is confirmed with
//! `session.terminate.done` (`requestid`, `sessionid`) or
//! `error.session.terminate`.

use serde_json::{Map, Value};

use crate::interpreter::{ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{
    assign_request_id, eval_attr, failure_event, result_event, services, spawn_job, value_text,
};
use crate::server::worker::Command;

/// The `<session:terminate>` handler.
pub struct Terminate;

impl CustomActionHandler for Terminate {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        let ctx = services(scope, action)?.ctx.clone();
        let own = scope.session_id.to_string();
        let target = match eval_attr(scope, action, "sessionid")? {
            Some(Value::Null) | None => own.clone(),
            Some(v) => value_text(&v),
        };
        let requestid = assign_request_id(scope, action, &ctx)?;
        let job = async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sent = ctx.pool.send(
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
            let _ = ctx.pool.post_event(&own, event);
        };
        spawn_job(scope, action, Box::pin(job))
    }
}
