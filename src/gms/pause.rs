//! Pausing a callback service (GMS Callback User's Guide, *Stopping
//! outbound*: a paused service's `QUEUED` callbacks become `PAUSED`, and
//! `QUEUED` again when it resumes), through the admin API:
//!
//! - `GET /genesys/1/admin/callback/pause` → `{"paused": [service, …]}`;
//! - `POST /genesys/1/admin/callback/pause` `{"service": "<name>"|"all",
//!   "paused": true|false}` → the same list after the change.
//!
//! Which services are paused is durable (table `ors_callback_paused`,
//! [`super::records::MIGRATIONS`]).
//! Pausing moves the service's `QUEUED` callbacks to `PAUSED` and sends
//! each one's session `callback.paused`; resuming moves `PAUSED` ones back
//! to `QUEUED` with `callback.resumed`. A callback created (or a scheduled
//! one coming due) while its service is paused starts `PAUSED`, its session
//! told so in `_data._paused`. The shipped `callback.scxml` holds a chat
//! that arrives while paused (taken over from the inbound strategy, not
//! yet routed) until it resumes. A paused service still takes creates and
//! cancels; a `PAUSED` callback keeps its place against
//! `_max_queued_callbacks_per_service` (so a resume cannot overfill the
//! queue) but is not in the watermarks. A create that races a pause or a
//! resume checks again once its record is written and follows it.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Gms;
use super::callback_api::exceptions;
use super::records::{self, CallbackQuery};
use crate::model::Event;
use crate::server::error::ApiError;
use crate::server::params::read_request;
use crate::store::{SqlValue, Statement, WriteBatch};

/// Which services are paused: read from the store once, then kept.
#[derive(Default)]
pub struct Paused {
    set: tokio::sync::OnceCell<std::sync::Mutex<BTreeSet<String>>>,
}

impl Paused {
    async fn set(&self, gms: &Gms) -> &std::sync::Mutex<BTreeSet<String>> {
        self.set
            .get_or_init(|| async {
                let mut names = BTreeSet::new();
                if let Some(store) = &gms.store {
                    let select = Statement::new("SELECT service FROM ors_callback_paused", vec![]);
                    match store.query(&select).await {
                        Ok(rows) => {
                            for row in rows {
                                if let Some(SqlValue::Text(name)) = row.into_iter().next() {
                                    names.insert(name);
                                }
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "paused services could not be read"),
                    }
                }
                std::sync::Mutex::new(names)
            })
            .await
    }

    /// Whether `service` is paused.
    pub async fn is_paused(&self, gms: &Gms, service: &str) -> bool {
        self.set(gms)
            .await
            .lock()
            .is_ok_and(|s| s.contains(service))
    }

    async fn list(&self, gms: &Gms) -> Vec<String> {
        self.set(gms)
            .await
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Moves one callback with its service: `pausing` moves it `QUEUED` →
/// `PAUSED`, else `PAUSED` → `QUEUED`, and tells its session (a create
/// that raced a pause or resume uses this to catch up).
pub async fn follow(ctx: &Gms, id: &str, pausing: bool) {
    let (from, to, event) = if pausing {
        (records::QUEUED, records::PAUSED, "callback.paused")
    } else {
        (records::PAUSED, records::QUEUED, "callback.resumed")
    };
    let moved = ctx
        .records
        .modify(id, |row, record| {
            if row.state != from {
                return None;
            }
            row.state = to.to_string();
            record.insert("_callback_state".into(), Value::from(to));
            Some(records::ScheduleChange::Keep)
        })
        .await;
    match moved {
        Ok(Some((row, true))) => {
            let _ = ctx
                .sessions
                .post_event(&row.session_id, Event::external(event, None));
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(callback = %id, error = %e, "a callback could not follow its service's pause")
        }
    }
}

/// `GET /genesys/1/admin/callback/pause`.
pub async fn paused(State(ctx): State<Arc<Gms>>) -> Response {
    axum::Json(json!({ "paused": ctx.paused.list(&ctx).await })).into_response()
}

/// `POST /genesys/1/admin/callback/pause`.
pub async fn pause(State(ctx): State<Arc<Gms>>, request: Request) -> Result<Response, ApiError> {
    let (_, params) = read_request(request, ctx.config.limits.max_body_bytes).await?;
    let bad = |m: String| ApiError::bad_parameter(m).with_exception(exceptions::CALLBACK);
    let service = match params.get("service") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err(bad("service must name a service, or be \"all\"".into())),
    };
    let pausing = match params.get("paused") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        _ => return Err(bad("paused must be true or false".into())),
    };
    let names: Vec<String> = if service == "all" {
        ctx.services.keys().cloned().collect()
    } else if ctx.services.contains_key(&service) {
        vec![service]
    } else {
        return Err(super::callback_api::unknown_service(&service));
    };
    // Durable first, then the set, then the callbacks.
    if let Some(commits) = &ctx.commits {
        let statements = names
            .iter()
            .map(|name| {
                if pausing {
                    Statement::new(
                        "INSERT INTO ors_callback_paused (service) VALUES ($1) \
                         ON CONFLICT (service) DO NOTHING",
                        vec![name.as_str().into()],
                    )
                } else {
                    Statement::new(
                        "DELETE FROM ors_callback_paused WHERE service = $1",
                        vec![name.as_str().into()],
                    )
                }
            })
            .collect();
        commits
            .submit(WriteBatch {
                statements,
                ..WriteBatch::default()
            })
            .await
            .map_err(|_| ApiError::unavailable("the store committer stopped"))?
            .map_err(|e| ApiError::from(records::RecordsError::from(e)))?;
    }
    if let Ok(mut set) = ctx.paused.set(&ctx).await.lock() {
        for name in &names {
            if pausing {
                set.insert(name.clone());
            } else {
                set.remove(name);
            }
        }
    }
    let from = if pausing {
        records::QUEUED
    } else {
        records::PAUSED
    };
    for name in &names {
        let query = CallbackQuery {
            service: Some(name.clone()),
            states: vec![from.to_string()],
            limit: records::SCAN_ROWS,
            ..CallbackQuery::default()
        };
        for row in ctx.records.query(&query).await.map_err(ApiError::from)? {
            follow(&ctx, &row.id, pausing).await;
        }
    }
    Ok(axum::Json(json!({ "paused": ctx.paused.list(&ctx).await })).into_response())
}
