//! `<ixn:associate interactionid sessionid>`: hands an interaction this
//! session controls to another session (ORS *Interaction Interface*: an
//! interaction belongs to at most one session and can be moved). The
//! other session gets `interaction.added` and `interaction.present`; this
//! one `interaction.deleted` (`resultof` `associate`) and
//! `interaction.notcontrolled`, then `interaction.associate.done` with
//! `sessionid`. Errors: `unknown` (no such interaction or session),
//! `invalidstate.notcontrolled` (this session does not control it).

use serde_json::{Map, Value};

use super::run_action;
use crate::gms::Gms;
use crate::gms::interactions::{self, IxnError};
use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::required_text;

/// The `<ixn:associate>` handler.
pub struct Associate(pub std::sync::Arc<Gms>);

impl CustomActionHandler for Associate {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let target = required_text(scope, action, "sessionid")?;
        run_action(
            &self.0,
            scope,
            action,
            "interaction.associate",
            move |ctx, id, session| async move {
                ctx.interactions.check_owner(&id, &session)?;
                // The target must exist: asking for its view answers that.
                ctx.sessions.query(&target).await.map_err(|e| IxnError {
                    code: "unknown".into(),
                    message: e.message,
                })?;
                interactions::present(&ctx, &id, &target, "associate")?;
                let mut extra = Map::new();
                extra.insert("sessionid".into(), Value::from(target));
                Ok(extra)
            },
        )
    }
}
