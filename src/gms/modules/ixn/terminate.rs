//! `<ixn:terminate interactionid reason>`: ends an interaction this
//! session controls (a hosted chat is closed for every party; any other
//! interaction ends at once and its agent is released).

use serde_json::{Map, Value};

use super::run_action;
use crate::gms::Gms;
use crate::gms::interactions;
use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{eval_attr, value_text};

/// The `<ixn:terminate>` handler.
pub struct Terminate(pub std::sync::Arc<Gms>);

impl CustomActionHandler for Terminate {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let reason = eval_attr(scope, action, "reason")?
            .filter(|v| !v.is_null())
            .map(|v| value_text(&v))
            .unwrap_or_else(|| "terminated".into());
        run_action(
            &self.0,
            scope,
            action,
            "interaction.terminate",
            move |ctx, id, session| async move {
                ctx.interactions.check_owner(&id, &session)?;
                interactions::end(&ctx, &id, &reason).await?;
                let mut extra = Map::new();
                extra.insert("reason".into(), Value::from(reason));
                Ok(extra)
            },
        )
    }
}
