//! `<ixn:accept interactionid>`: the session takes an interaction it
//! controls into processing.

use serde_json::Map;

use crate::interpreter::{ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::ixn::run_action;

/// The `<ixn:accept>` handler.
pub struct Accept;

impl CustomActionHandler for Accept {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        run_action(scope, action, "accept", |ctx, id, session| async move {
            ctx.interactions.check_owner(&id, &session)?;
            ctx.interactions.set_state(&id, "processing")?;
            Ok(Map::new())
        })
    }
}
