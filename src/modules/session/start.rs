//! `<session:start>`: starts another session. Attributes: `srcexpr` (or a
//! literal `src`; any `src` the REST API accepts, `script:` included),
//! `sessionid` (a location that receives the new session's id at once),
//! `requestid`; `<param>` children become the new session's data. The
//! outcome arrives as `session.start.done` (`requestid`, `sessionid`) or
//! `error.session.start` (`requestid`, `error`, `message`).

use serde_json::{Map, Value};

use crate::datamodel::InitialValue;
use crate::interpreter::{ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{
    assign_request_id, attr, eval_params, failure_event, result_event, services, spawn_job,
    src_attr,
};

/// The `<session:start>` handler.
pub struct Start;

impl CustomActionHandler for Start {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        let ctx = services(scope, action)?.ctx.clone();
        let src = src_attr(scope, action)?;
        let params = eval_params(scope, action)?;
        let requestid = assign_request_id(scope, action, &ctx)?;
        let new_id = ctx.pool.new_session_id();
        if let Some(location) = attr(action, "sessionid") {
            scope
                .datamodel
                .assign_text(location, &InitialValue::Json(Value::String(new_id.clone())))
                .map_err(|e| format!("sessionid=\"{location}\": {}", e.message))?;
        }
        let parent = scope.session_id.to_string();
        let job = async move {
            let mut data = Map::new();
            data.insert("requestid".into(), Value::String(requestid));
            let event = match ctx.start_session_with_id(new_id, &src, params, None).await {
                Ok(view) => {
                    data.insert("sessionid".into(), Value::String(view.sessionid));
                    result_event("session.start.done", data)
                }
                Err(e) => failure_event("error.session.start", data, e.code, e.message),
            };
            let _ = ctx.pool.post_event(&parent, event);
        };
        spawn_job(scope, action, Box::pin(job))
    }
}
