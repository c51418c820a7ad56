//! `<ixn:accept interactionid>`: the session takes an interaction it
//! controls into processing.

use serde_json::Map;

use super::run_action;
use crate::gms::Gms;
use crate::interpreter::{ActionScope, CustomActionHandler};
use crate::model::CustomAction;

/// The `<ixn:accept>` handler.
pub struct Accept(pub std::sync::Arc<Gms>);

impl CustomActionHandler for Accept {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        run_action(
            &self.0,
            scope,
            action,
            "interaction.accept",
            |ctx, id, session| async move {
                ctx.interactions.check_owner(&id, &session)?;
                ctx.interactions.set_state(&id, "processing")?;
                Ok(Map::new())
            },
        )
    }
}
