//! Our GMS module (`www.genesyslab.com/modules/gms`, not a vendor
//! module): how the shipped Callback documents read and mark their
//! callback records in-process instead of calling the GMS HTTP API.
//!
//! - `<gms:lookup serviceid>` → `gms.lookup.done` with `requestid`,
//!   `serviceid` and `record` (the record as `GET …/callback?_id=` shows
//!   it), or `error.gms.lookup` (`error`: `notfound` or `remote`).
//! - `<gms:update serviceid state reason>` → `gms.update.done` with
//!   `requestid`, `serviceid`, `state` and `changed` (false when the
//!   record was already final), or `error.gms.update`. `state` is one of
//!   Only the session the record names may update it (`error`
//!   `notyours` otherwise). `state` is one of
//!   GMS's states (`SCHEDULED`, `QUEUED`, `ROUTING`, `PROCESSING`,
//!   `PAUSED`, `COMPLETED`, any case); the names documents used before
//!   (`FAILED`, `CANCELLED`) mean `COMPLETED` with that name as the
//!   reason when none is given. Any other state is an `error.execution`.

use serde_json::{Map, Value};

use crate::gms::Gms;
use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{Failure, eval_attr, request, value_text};

/// The `<gms:lookup>` handler.
pub struct Lookup(pub std::sync::Arc<Gms>);

/// The `<gms:update>` handler.
pub struct Update(pub std::sync::Arc<Gms>);

fn text_attr(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    name: &str,
) -> Result<Option<String>, ActionError> {
    Ok(eval_attr(scope, action, name)?
        .filter(|v| !v.is_null())
        .map(|v| value_text(&v)))
}

impl CustomActionHandler for Lookup {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let gms = self.0.clone();
        let service_id =
            text_attr(scope, action, "serviceid")?.ok_or("<gms:lookup> needs 'serviceid'")?;
        let mut data = Map::new();
        data.insert("serviceid".into(), Value::from(service_id.clone()));
        let sessions = gms.sessions.clone();
        request(
            scope,
            action,
            &sessions,
            "gms.lookup",
            data,
            |_| async move {
                match gms.records.get(&service_id).await {
                    Ok(Some(row)) => {
                        let mut done = Map::new();
                        done.insert("record".into(), crate::gms::records::record_json(&row));
                        Ok(done)
                    }
                    Ok(None) => Err(Failure::new(
                        "notfound",
                        format!("no callback '{service_id}'"),
                    )),
                    Err(e) => Err(Failure::new("remote", e.to_string())),
                }
            },
        )
    }
}

impl CustomActionHandler for Update {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let gms = self.0.clone();
        let service_id =
            text_attr(scope, action, "serviceid")?.ok_or("<gms:update> needs 'serviceid'")?;
        let named = text_attr(scope, action, "state")?.ok_or("<gms:update> needs 'state'")?;
        let mut reason = text_attr(scope, action, "reason")?;
        let state = match crate::gms::records::state_named(&named) {
            Some(state) => state,
            None if ["FAILED", "CANCELLED"]
                .iter()
                .any(|old| old.eq_ignore_ascii_case(named.trim())) =>
            {
                reason.get_or_insert_with(|| named.trim().to_ascii_uppercase());
                crate::gms::records::COMPLETED
            }
            None => {
                return Err(format!(
                    "<gms:update>: '{named}' is not a callback state (one of {})",
                    crate::gms::records::STATES.join(", ")
                )
                .into());
            }
        };
        let mut data = Map::new();
        data.insert("serviceid".into(), Value::from(service_id.clone()));
        let sessions = gms.sessions.clone();
        let caller = scope.session_id.to_string();
        request(
            scope,
            action,
            &sessions,
            "gms.update",
            data,
            |_| async move {
                // Only the record's own session may change it: a session the
                // callback no longer runs in (rescheduled, submitted again)
                // leaves it alone.
                let owned = match gms.records.get(&service_id).await {
                    Ok(Some(row)) => row.session_id == caller,
                    _ => true,
                };
                if !owned {
                    return Err(Failure::new(
                        "notyours",
                        format!("callback '{service_id}' is handled by another session now"),
                    ));
                }
                let outcome = gms
                    .records
                    .update(&service_id, state, reason.as_deref(), Map::new())
                    .await;
                match outcome {
                    Ok(Some((row, changed))) => {
                        let mut done = Map::new();
                        done.insert("state".into(), Value::from(row.state));
                        done.insert("changed".into(), Value::from(changed));
                        Ok(done)
                    }
                    Ok(None) => Err(Failure::new(
                        "notfound",
                        format!("no callback '{service_id}'"),
                    )),
                    Err(e) => Err(Failure::new("remote", e.to_string())),
                }
            },
        )
    }
}
