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
    assign_request_id, attr, eval_attr, eval_params, result_event, services, spawn_job, value_text,
};

/// The `<session:start>` handler.
pub struct Start;

impl CustomActionHandler for Start {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        let ctx = services(scope, action)?.ctx.clone();
        let src = match eval_attr(scope, action, "srcexpr")? {
            Some(v) => value_text(&v),
            None => attr(action, "src")
                .map(str::to_string)
                .ok_or("<session:start> needs 'srcexpr' or 'src'")?,
        };
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
                Err(e) => {
                    data.insert("error".into(), Value::String(e.code.into()));
                    data.insert("message".into(), Value::String(e.message));
                    result_event("error.session.start", data)
                }
            };
            let _ = ctx.pool.post_event(&parent, event);
        };
        spawn_job(scope, action, Box::pin(job))
    }
}
