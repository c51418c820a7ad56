//! `<session:start>`: starts another session. Attributes: `srcexpr` (or a
//! literal `src`; any `src` the REST API accepts, `script:` included),
//! `sessionid` (a location that receives the new session's id at once),
//! `requestid`; `<param>` children become the new session's data. The
//! outcome arrives as `session.start.done` (`requestid`, `sessionid`) or
//! `error.session.start` (`requestid`, `error`, `message`).

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::datamodel::InitialValue;
use crate::interpreter::{ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{Failure, answer, assign_request_id, attr, eval_params, src_attr};
use crate::server::ServerHandles;

/// The `<session:start>` handler.
pub struct Start(pub Arc<ServerHandles>);

impl CustomActionHandler for Start {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        let sessions = &self.0.sessions;
        let src = src_attr(scope, action)?;
        let params = eval_params(scope, action)?;
        let requestid = assign_request_id(scope, action, sessions)?;
        let new_id = sessions.new_session_id();
        if let Some(location) = attr(action, "sessionid") {
            scope
                .datamodel
                .assign_text(location, &InitialValue::Json(Value::String(new_id.clone())))
                .map_err(|e| format!("sessionid=\"{location}\": {}", e.message))?;
        }
        let starter = sessions.clone();
        let work = async move {
            match starter.start_with_id(new_id, &src, params, None).await {
                Ok(view) => {
                    let mut data = Map::new();
                    data.insert("sessionid".into(), Value::String(view.sessionid));
                    Ok(data)
                }
                Err(e) => Err(Failure::new(e.code, e.message)),
            }
        };
        answer(
            scope,
            action,
            sessions,
            "session.start",
            requestid,
            Map::new(),
            work,
        )
    }
}
