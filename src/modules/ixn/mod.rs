//! The ORS interaction module (`www.genesyslab.com/modules/interaction`,
//! prefix `ixn`): actions on the interactions a session controls, each
//! answered with `interaction.<action>.done` or
//! `error.interaction.<action>` carrying `requestid`, `interactionid`, and
//! on failure `error` (`unknown`, `invalidstate.<state>`,
//! `invaliddestination`, `remote`) and `message`.
//!
//! - `<ixn:redirect interactionid to>`: `to` is the `resource` of a
//!   `queue.submit.done` (routes the interaction to that reserved agent).
//! - `<ixn:accept interactionid>`: the session takes the interaction into
//!   processing (its state becomes `processing`).
//! - `<ixn:attach interactionid>`: the session takes control of an
//!   interaction another session controls (that one gets
//!   `interaction.deleted` and `interaction.notcontrolled`; this one
//!   `interaction.added` and `interaction.present`).
//! - `<ixn:detach interactionid>`: the session gives up control.
//! - `<ixn:terminate interactionid reason>`: ends the interaction.

pub mod accept;
pub mod attach;
pub mod detach;
pub mod redirect;
pub mod terminate;

use std::future::Future;

use serde_json::{Map, Value};

use crate::interpreter::ActionScope;
use crate::model::CustomAction;
use crate::modules::{
    assign_request_id, failure_event, interaction_attr, result_event, services, spawn_job,
};
use crate::server::ServerContext;
use crate::server::interactions::IxnError;

/// Runs an interaction action: assigns the request id, then runs `work`
/// as a job and answers with `interaction.<name>.done` or
/// `error.interaction.<name>`.
pub fn run_action<F, Fut>(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    name: &'static str,
    work: F,
) -> Result<(), String>
where
    F: FnOnce(std::sync::Arc<ServerContext>, String, String) -> Fut + 'static,
    Fut: Future<Output = Result<Map<String, Value>, IxnError>> + 'static,
{
    let ctx = services(scope, action)?.ctx.clone();
    let interaction_id = interaction_attr(scope, action)?;
    let requestid = assign_request_id(scope, action, &ctx)?;
    let session = scope.session_id.to_string();
    let job = async move {
        let mut data = Map::new();
        data.insert("requestid".into(), Value::from(requestid));
        data.insert("interactionid".into(), Value::from(interaction_id.clone()));
        let event = match work(ctx.clone(), interaction_id, session.clone()).await {
            Ok(extra) => {
                data.extend(extra);
                result_event(&format!("interaction.{name}.done"), data)
            }
            Err(e) => failure_event(
                &format!("error.interaction.{name}"),
                data,
                &e.code,
                e.message,
            ),
        };
        let _ = ctx.pool.post_event(&session, event);
    };
    spawn_job(scope, action, Box::pin(job))
}
