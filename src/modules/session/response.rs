//! `<session:response>`: answers a `/scxml/session/{id}/request/{name}`
//! call. Attributes: `requestid` (an expression, usually
//! `_event.data.requestid`), `status` (an expression giving the HTTP
//! status, default 200), `expr` (the body as any JSON value); without
//! `expr`, the `<param>` children make a JSON object. An answer for a
//! request that already timed out raises `error.session.response`.

use std::sync::Arc;

use serde_json::Value;

use crate::interpreter::{ActionScope, CustomActionHandler, Event, EventKind};
use crate::model::CustomAction;
use crate::modules::{eval_attr, eval_params, value_text};
use crate::server::ServerHandles;

/// The `<session:response>` handler.
pub struct Response(pub Arc<ServerHandles>);

impl CustomActionHandler for Response {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        let requestid = eval_attr(scope, action, "requestid")?
            .map(|v| value_text(&v))
            .ok_or("<session:response> needs 'requestid'")?;
        let status = match eval_attr(scope, action, "status")? {
            None => 200,
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .filter(|s| (200..600).contains(s))
                .ok_or_else(|| format!("status must be an HTTP status code, not {v}"))?
                as u16,
        };
        let body = match eval_attr(scope, action, "expr")? {
            Some(v) => v,
            None => Value::Object(eval_params(scope, action)?),
        };
        if !self.0.responses.complete(&requestid, status, body) {
            let mut event = Event::new("error.session.response".to_string(), EventKind::Platform);
            event.data = Some(serde_json::json!({
                "requestid": requestid,
                "error": "norequest",
                "message": "no request with this id is waiting (it timed out or was answered)",
            }));
            scope.raised.push(event);
        }
        Ok(())
    }
}
