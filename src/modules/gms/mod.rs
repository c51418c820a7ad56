//! Our GMS module (`www.genesyslab.com/modules/gms`, not a vendor
//! module): how the shipped Callback documents read and mark their
//! callback records in-process instead of calling the GMS HTTP API.
//!
//! - `<gms:lookup serviceid>` → `gms.lookup.done` with `requestid`,
//!   `serviceid` and `record` (the record as `GET …/callback?_id=` shows
//!   it), or `error.gms.lookup` (`error`: `notfound` or `remote`).
//! - `<gms:update serviceid state reason>` → `gms.update.done` with
//!   `requestid`, `serviceid`, `state` and `changed` (false when the
//!   record was already final), or `error.gms.update`.

use serde_json::{Map, Value};

use crate::interpreter::{ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{
    assign_request_id, eval_attr, failure_event, result_event, services, spawn_job, value_text,
};

/// The `<gms:lookup>` handler.
pub struct Lookup;

/// The `<gms:update>` handler.
pub struct Update;

fn text_attr(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    name: &str,
) -> Result<Option<String>, String> {
    Ok(eval_attr(scope, action, name)?
        .filter(|v| !v.is_null())
        .map(|v| value_text(&v)))
}

impl CustomActionHandler for Lookup {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        let ctx = services(scope, action)?.ctx.clone();
        let service_id =
            text_attr(scope, action, "serviceid")?.ok_or("<gms:lookup> needs 'serviceid'")?;
        let requestid = assign_request_id(scope, action, &ctx)?;
        let session = scope.session_id.to_string();
        let job = async move {
            let mut data = Map::new();
            data.insert("requestid".into(), Value::from(requestid));
            data.insert("serviceid".into(), Value::from(service_id.clone()));
            let event = match ctx.gms.records.get(&service_id).await {
                Ok(Some(row)) => {
                    data.insert("record".into(), crate::gms::records::record_json(&row));
                    result_event("gms.lookup.done", data)
                }
                Ok(None) => failure_event(
                    "error.gms.lookup",
                    data,
                    "notfound",
                    format!("no callback '{service_id}'"),
                ),
                Err(e) => failure_event("error.gms.lookup", data, "remote", e),
            };
            let _ = ctx.pool.post_event(&session, event);
        };
        spawn_job(scope, action, Box::pin(job))
    }
}

impl CustomActionHandler for Update {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        let ctx = services(scope, action)?.ctx.clone();
        let service_id =
            text_attr(scope, action, "serviceid")?.ok_or("<gms:update> needs 'serviceid'")?;
        let state = text_attr(scope, action, "state")?
            .ok_or("<gms:update> needs 'state'")?
            .to_ascii_uppercase();
        let reason = text_attr(scope, action, "reason")?;
        let requestid = assign_request_id(scope, action, &ctx)?;
        let session = scope.session_id.to_string();
        let job = async move {
            let mut data = Map::new();
            data.insert("requestid".into(), Value::from(requestid));
            data.insert("serviceid".into(), Value::from(service_id.clone()));
            let outcome = ctx
                .gms
                .records
                .update(&service_id, &state, reason.as_deref(), Map::new())
                .await;
            let event = match outcome {
                Ok(Some((row, changed))) => {
                    data.insert("state".into(), Value::from(row.state));
                    data.insert("changed".into(), Value::from(changed));
                    result_event("gms.update.done", data)
                }
                Ok(None) => failure_event(
                    "error.gms.update",
                    data,
                    "notfound",
                    format!("no callback '{service_id}'"),
                ),
                Err(e) => failure_event("error.gms.update", data, "remote", e),
            };
            let _ = ctx.pool.post_event(&session, event);
        };
        spawn_job(scope, action, Box::pin(job))
    }
}
