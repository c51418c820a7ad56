//! `<ixn:detach interactionid>`: the session gives up control of an
//! interaction (it stays where it is, owned by no session).

use serde_json::Map;

use crate::interpreter::{ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::ixn::run_action;

/// The `<ixn:detach>` handler.
pub struct Detach;

impl CustomActionHandler for Detach {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        run_action(scope, action, "detach", |ctx, id, session| async move {
            ctx.interactions.check_owner(&id, &session)?;
            ctx.interactions.set_owner(&id, None)?;
            Ok(Map::new())
        })
    }
}
