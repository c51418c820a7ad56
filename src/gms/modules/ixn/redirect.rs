//! `<ixn:redirect interactionid to>`: routes an interaction this session
//! controls to the agent a `queue:submit route="false"` reserved; `to` is
//! that submit's `_event.data.resource`.

use serde_json::{Map, Value};

use super::run_action_then;
use crate::backends::routing::Reservation;
use crate::gms::Gms;
use crate::gms::interactions::{self, IxnError};
use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{eval_attr, interaction_attr};

/// The `<ixn:redirect>` handler.
pub struct Redirect(pub std::sync::Arc<Gms>);

impl CustomActionHandler for Redirect {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let to = eval_attr(scope, action, "to")?.ok_or("<ixn:redirect> needs 'to'")?;
        let destination: Result<Reservation, String> = serde_json::from_value(to.clone())
            .map_err(|_| format!("'to' is not a resource from queue.submit.done: {to}"));
        let ctx = self.0.clone();
        let interaction_id = interaction_attr(scope, action)?;
        let routed_id = interaction_id.clone();
        let after = move |ok: bool| {
            if ok {
                interactions::leave_after_routing(&ctx, &routed_id);
            }
        };
        run_action_then(
            &self.0,
            scope,
            action,
            ("interaction.redirect", interaction_id),
            after,
            move |ctx, id, session| async move {
                let reservation = destination.map_err(|message| IxnError {
                    code: "invaliddestination".into(),
                    message,
                })?;
                ctx.interactions.check_owner(&id, &session)?;
                if let Err(e) =
                    interactions::route_to_agent(&ctx, &id, &reservation, &session).await
                {
                    ctx.backends
                        .routing
                        .release(&reservation.reservation_id)
                        .await;
                    return Err(e);
                }
                let mut extra = Map::new();
                extra.insert("agentid".into(), Value::from(reservation.agent_id));
                Ok(extra)
            },
        )
    }
}
