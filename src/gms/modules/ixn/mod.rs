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
pub mod associate;
pub mod attach;
pub mod detach;
pub mod redirect;
pub mod terminate;

use std::future::Future;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::gms::Gms;
use crate::gms::interactions::IxnError;
use crate::interpreter::{ActionError, ActionScope};
use crate::model::CustomAction;
use crate::modules::{Failure, answer_then, assign_request_id, interaction_attr};

impl From<IxnError> for Failure {
    fn from(e: IxnError) -> Failure {
        Failure::new(e.code, e.message)
    }
}

/// Runs an interaction action `name` (`interaction.accept`, …): `work`
/// gets the services, the interaction id and the session id, and is
/// answered with `<name>.done` or `error.<name>` carrying `interactionid`.
pub fn run_action<F, Fut>(
    gms: &Arc<Gms>,
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    name: &'static str,
    work: F,
) -> Result<(), ActionError>
where
    F: FnOnce(Arc<Gms>, String, String) -> Fut,
    Fut: Future<Output = Result<Map<String, Value>, IxnError>> + 'static,
{
    let interaction_id = interaction_attr(scope, action)?;
    run_action_then(gms, scope, action, (name, interaction_id), |_| {}, work)
}

/// [`run_action`] for an interaction id already evaluated, calling
/// `after(succeeded)` once the answer is posted.
pub fn run_action_then<F, Fut>(
    gms: &Arc<Gms>,
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    (name, interaction_id): (&'static str, String),
    after: impl FnOnce(bool) + 'static,
    work: F,
) -> Result<(), ActionError>
where
    F: FnOnce(Arc<Gms>, String, String) -> Fut,
    Fut: Future<Output = Result<Map<String, Value>, IxnError>> + 'static,
{
    let mut data = Map::new();
    data.insert("interactionid".into(), Value::from(interaction_id.clone()));
    let work = work(gms.clone(), interaction_id, scope.session_id.to_string());
    let requestid = assign_request_id(scope, action, &gms.sessions)?;
    answer_then(
        scope,
        action,
        &gms.sessions,
        (name, requestid, data),
        async move { work.await.map_err(Failure::from) },
        after,
    )
}
