//! `<ixn:detach interactionid>`: the session gives up control of an
//! interaction (it stays where it is, owned by no session).

use serde_json::Map;

use super::run_action;
use crate::gms::Gms;
use crate::interpreter::{ActionScope, CustomActionHandler};
use crate::model::CustomAction;

/// The `<ixn:detach>` handler.
pub struct Detach(pub std::sync::Arc<Gms>);

impl CustomActionHandler for Detach {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        run_action(
            &self.0,
            scope,
            action,
            "interaction.detach",
            |ctx, id, session| async move {
                ctx.interactions.check_owner(&id, &session)?;
                ctx.interactions.set_owner(&id, None)?;
                Ok(Map::new())
            },
        )
    }
}
