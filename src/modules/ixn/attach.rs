//! `<ixn:attach interactionid>`: the session takes control of an
//! interaction, from whichever session had it (the way an inbound
//! strategy hands a chat to the Callback session that expects it).

use serde_json::Map;

use crate::interpreter::{ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::ixn::run_action;
use crate::server::interactions;

/// The `<ixn:attach>` handler.
pub struct Attach;

impl CustomActionHandler for Attach {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        run_action(scope, action, "attach", |ctx, id, session| async move {
            interactions::present(&ctx, &id, &session, "attach")?;
            Ok(Map::new())
        })
    }
}
