//! `<dialog:stop>`: stops the treatments this session has under way
//! (those on `interactionid` when it is given). Each stopped treatment
//! answers `error.dialog.<action>` with `error: "cancelled"`; the stop
//! itself answers `dialog.stop.done` with `requestid`, `interactionid` and
//! `stopped` (the request ids it cancelled; empty when nothing was
//! running, which the reference leaves open and this simulator does not
//! treat as an error).

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::checked_request;

use super::{Dialog, interaction_data};

/// The `<dialog:stop>` handler.
pub struct Stop(pub Arc<Dialog>);

impl CustomActionHandler for Stop {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let treatments = self.0.treatments.clone();
        let session = scope.session_id.to_string();
        checked_request(
            scope,
            action,
            &self.0.server.sessions,
            "dialog.stop",
            |scope| interaction_data(scope, "dialog:stop", action),
            move |_requestid, interaction| async move {
                let stopped = treatments.stop(&session, interaction.as_deref());
                let mut out = Map::new();
                out.insert(
                    "stopped".into(),
                    Value::Array(stopped.into_iter().map(Value::String).collect()),
                );
                Ok(out)
            },
        )
    }
}
