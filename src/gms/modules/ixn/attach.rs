//! `<ixn:attach interactionid>`: the session takes control of an
//! interaction, from whichever session had it (the way an inbound
//! strategy hands a chat to the Callback session that expects it).

use serde_json::Map;

use super::run_action;
use crate::gms::Gms;
use crate::gms::interactions;
use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;

/// The `<ixn:attach>` handler.
pub struct Attach(pub std::sync::Arc<Gms>);

impl CustomActionHandler for Attach {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        run_action(
            &self.0,
            scope,
            action,
            "interaction.attach",
            |ctx, id, session| async move {
                interactions::attach(&ctx, &id, &session)?;
                Ok(Map::new())
            },
        )
    }
}
