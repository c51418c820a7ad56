//! GMS's Callback admin API (`/genesys/1/admin/callback/…`, admin or
//! operator credential), as the GMS 8.5 Callback Services API and the
//! public functional tests written against real GMS use it:
//!
//! - `GET queues?target=&start_time=&end_time=&max=&states=&<filter key>=…`:
//!   callbacks by service, `{"<service>": [record, …], …}`, earliest
//!   desired time first. `target` is a service name (repeated or comma
//!   separated: several; every service when absent); the window applies to
//!   `_desired_time` and defaults to 15 minutes ago … 24 hours ahead
//!   (ISO 8601 UTC); `states` is a comma-separated list, or repeated
//!   (every state when absent); `max` (from 1) caps each service's list;
//!   other parameters must be
//!   `[callback] filter-keys` (`!value` negates, as in the property query).
//!   Records carry the keys GMS always returns, `returned-keys` and the
//!   service's `_customer_lookup_keys`.
//! - `GET watermarks[?service_name=a&service_name=b]`:
//!   `{"services": {"<service>": n, …}, "total": n}`, where n counts the
//!   `QUEUED` and `PROCESSING` callbacks (a scheduled one is not active).
//! - `POST cancel` `{"reason": "…", "ids": ["…", …]}` (reason defaults to
//!   `CANCELLED_BY_ADMIN`): each callback becomes `COMPLETED` with that
//!   reason and its session is ended; the reply lists what happened to
//!   each id (`cancelled`, `completed_already`, `not_found`).
//! - `POST reportcancelled` `{"callback_reason": "…", "exported_properties":
//!   ["_id", …]}`: the completed callbacks with that reason as CSV
//!   (`CancelledCallbacks.csv`), one column per exported property; a cell
//!   that would start like a spreadsheet formula gets a leading `'`.
//!
//! Bad parameters are 400s with GMS's `exception` name beside `error` and
//! `message`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Gms;
use super::callback_api::{cancel_callback, exceptions, returned_record};
use super::records::{self, CallbackQuery, KeyFilter, parse_iso_utc};
use crate::server::error::ApiError;
use crate::server::params::read_request;
use crate::server::routes::{RouteDoc, Routes};

/// The most ids one admin cancel takes.
pub const MAX_CANCEL_IDS: usize = 1_000;

/// The longest cancel reason, in characters.
pub const MAX_REASON_CHARS: usize = 256;

/// The most rows a `reportcancelled` export holds.
pub const MAX_EXPORT_ROWS: usize = records::SCAN_ROWS;

/// The default window of the queue query, before and after now, in ms.
const WINDOW_BEFORE_MS: i64 = 15 * 60 * 1000;
const WINDOW_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

type Ctx = State<Arc<Gms>>;

/// The routes and their `/ors/help` entries (the caller adds the admin
/// guard).
pub fn router(gms: &Arc<Gms>) -> (Router, Vec<RouteDoc>) {
    use axum::http::Method;
    Routes::new("admin")
        .route(
            "/genesys/1/admin/callback/queues",
            &[Method::GET],
            queues,
            "callbacks by service (target, start_time, end_time, max, states, filter keys)",
        )
        .route(
            "/genesys/1/admin/callback/watermarks",
            &[Method::GET],
            watermarks,
            "active (QUEUED, PROCESSING) callbacks per service and in total (service_name=…)",
        )
        .route(
            "/genesys/1/admin/callback/cancel",
            &[Method::POST],
            cancel,
            "cancels callbacks: {\"reason\", \"ids\": [...]}",
        )
        .route(
            "/genesys/1/admin/callback/pause",
            &[Method::GET],
            super::pause::paused,
            "the paused services",
        )
        .route(
            "/genesys/1/admin/callback/pause",
            &[Method::POST],
            super::pause::pause,
            "pauses or resumes a service: {\"service\": name or \"all\", \"paused\": true|false}",
        )
        .route(
            "/genesys/1/admin/callback/reportcancelled",
            &[Method::POST],
            report_cancelled,
            "CSV of the callbacks completed with a reason: {\"callback_reason\", \"exported_properties\"}",
        )
        .with_state(gms.clone())
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_parameter(message).with_exception(exceptions::CALLBACK)
}

/// A parameter as text (a JSON body may give numbers).
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn time_param(name: &str, value: Option<&String>) -> Result<Option<i64>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) => parse_iso_utc(v).map(Some).ok_or_else(|| {
            bad(format!(
                "{name} must be an ISO 8601 time such as 2026-12-01T09:30:00.000Z, not '{v}'"
            ))
        }),
    }
}

/// `GET /genesys/1/admin/callback/queues`. Parameters come from the
/// query string; `states` and `target` may repeat (their values add up),
/// the others may not.
async fn queues(State(ctx): Ctx, request: Request) -> Result<Response, ApiError> {
    let mut single: Map<String, Value> = Map::new();
    let mut states = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    let mut filters = Vec::new();
    let filter_keys = ctx.settings.callback.filter_keys();
    for (key, value) in form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
        let value = value.into_owned();
        match &*key {
            "states" => {
                for name in super::settings::key_list(&value) {
                    let state = records::state_named(&name).ok_or_else(|| {
                        bad(format!(
                            "'{name}' is not a callback state (one of {})",
                            records::STATES.join(", ")
                        ))
                    })?;
                    if !states.iter().any(|s| s == state) {
                        states.push(state.to_string());
                    }
                }
            }
            "target" => targets.extend(super::settings::key_list(&value)),
            "max" | "start_time" | "end_time" => {
                if single.insert(key.to_string(), Value::from(value)).is_some() {
                    return Err(bad(format!("{key} is given more than once")));
                }
            }
            key if filter_keys.iter().any(|k| k == key) => {
                let (negated, value) = match value.strip_prefix('!') {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, value),
                };
                filters.push(KeyFilter {
                    key: key.to_string(),
                    value,
                    negated,
                });
            }
            key => {
                return Err(bad(format!(
                    "'{key}' is not a parameter of this query nor a filter key of this server \
                     (filter-keys: {})",
                    filter_keys.join(", ")
                )));
            }
        }
    }
    let text_of = |name: &str| single.get(name).and_then(Value::as_str).map(str::to_string);
    let now = ctx.settings.clock.now_ms();
    let cap = ctx.settings.gms.limits.max_listed_records.max(1);
    let from =
        time_param("start_time", text_of("start_time").as_ref())?.unwrap_or(now - WINDOW_BEFORE_MS);
    let until =
        time_param("end_time", text_of("end_time").as_ref())?.unwrap_or(now + WINDOW_AFTER_MS);
    if until < from {
        return Err(bad("end_time is before start_time"));
    }
    let limit = match text_of("max") {
        None => cap,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(0) | Err(_) => {
                return Err(bad(format!("max must be a whole number from 1, not '{v}'")));
            }
            Ok(n) => n.min(cap),
        },
    };
    let services: Vec<String> = if targets.is_empty() {
        ctx.services.keys().cloned().collect()
    } else {
        for name in &targets {
            if !ctx.services.contains_key(name) {
                return Err(super::callback_api::unknown_service(name));
            }
        }
        targets.dedup();
        targets
    };
    let mut reply = Map::new();
    for name in services {
        // Every match in the window (up to the scan bound), earliest
        // desired time first, then the first `limit`.
        let query = CallbackQuery {
            service: Some(name.clone()),
            states: states.clone(),
            desired_from: Some(from),
            desired_until: Some(until),
            filters: filters.clone(),
            limit: records::SCAN_ROWS,
            ..CallbackQuery::default()
        };
        let rows = ctx.records.query(&query).await.map_err(ApiError::from)?;
        let mut listed: Vec<(i64, Value)> = rows
            .iter()
            .map(|row| {
                let shown = returned_record(&ctx, row, true);
                let desired = shown
                    .get("_desired_time")
                    .and_then(Value::as_str)
                    .and_then(parse_iso_utc)
                    .unwrap_or(row.created_at);
                (desired, shown)
            })
            .collect();
        listed.sort_by_key(|(desired, _)| *desired);
        listed.truncate(limit);
        reply.insert(
            name,
            Value::Array(listed.into_iter().map(|(_, v)| v).collect()),
        );
    }
    Ok(axum::Json(Value::Object(reply)).into_response())
}

/// `GET /genesys/1/admin/callback/watermarks`.
async fn watermarks(State(ctx): Ctx, request: Request) -> Result<Response, ApiError> {
    let named: Vec<String> = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "service_name")
        .map(|(_, v)| v.into_owned())
        .collect();
    for name in &named {
        if !ctx.services.contains_key(name) {
            return Err(super::callback_api::unknown_service(name));
        }
    }
    let counts = ctx
        .records
        .count_by_service(&[records::QUEUED, records::PROCESSING])
        .await
        .map_err(ApiError::from)?;
    let listed: Vec<&String> = if named.is_empty() {
        ctx.services.keys().collect()
    } else {
        named.iter().collect()
    };
    let mut services = Map::new();
    let mut total = 0u64;
    for name in listed {
        let n = counts.get(name).copied().unwrap_or(0);
        if services.insert(name.clone(), Value::from(n)).is_none() {
            total += n;
        }
    }
    Ok(axum::Json(json!({ "services": services, "total": total })).into_response())
}

/// `POST /genesys/1/admin/callback/cancel`.
async fn cancel(State(ctx): Ctx, request: Request) -> Result<Response, ApiError> {
    let (_, params) = read_request(request, ctx.config.limits.max_body_bytes).await?;
    let reason = match params.get("reason") {
        None | Some(Value::Null) => records::CANCELLED_BY_ADMIN.to_string(),
        Some(Value::String(v)) if v.trim().is_empty() => records::CANCELLED_BY_ADMIN.to_string(),
        Some(Value::String(v)) if v.trim().chars().count() <= MAX_REASON_CHARS => {
            v.trim().to_string()
        }
        Some(_) => {
            return Err(bad(format!(
                "reason must be text of at most {MAX_REASON_CHARS} characters"
            )));
        }
    };
    let mut ids: Vec<String> = match params.get("ids") {
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| match id {
                Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                other => Err(bad(format!("ids must be callback ids (text), not {other}"))),
            })
            .collect::<Result<_, _>>()?,
        // A form body gives one id, or several comma-separated.
        Some(Value::String(ids)) => super::settings::key_list(ids),
        _ => return Err(bad("ids must be a list of callback ids")),
    };
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    if ids.is_empty() {
        return Err(bad("ids is empty: name the callbacks to cancel"));
    }
    if ids.len() > MAX_CANCEL_IDS {
        return Err(bad(format!(
            "{} ids given; at most {MAX_CANCEL_IDS} are cancelled per request",
            ids.len()
        )));
    }
    let (mut cancelled, mut finished, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for id in ids {
        match ctx.records.get(&id).await.map_err(ApiError::from)? {
            None => missing.push(id),
            Some(row) if records::is_final(&row.state) => finished.push(id),
            Some(row) => match cancel_callback(&ctx, &row, &reason).await? {
                Some(_) => cancelled.push(id),
                None => finished.push(id),
            },
        }
    }
    Ok(axum::Json(json!({
        "reason": reason,
        "cancelled": cancelled,
        "completed_already": finished,
        "not_found": missing,
    }))
    .into_response())
}

/// A cell a spreadsheet will not run: text that starts like a formula
/// (`=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`.
fn spreadsheet_safe(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// `POST /genesys/1/admin/callback/reportcancelled`.
async fn report_cancelled(State(ctx): Ctx, request: Request) -> Result<Response, ApiError> {
    let (_, params) = read_request(request, ctx.config.limits.max_body_bytes).await?;
    let reason = match params.get("callback_reason") {
        Some(v) if !text(v).trim().is_empty() => text(v).trim().to_string(),
        _ => records::CANCELLED_BY_ADMIN.to_string(),
    };
    let columns: Vec<String> = match params.get("exported_properties") {
        None | Some(Value::Null) => vec![
            "_id".into(),
            "_service_name".into(),
            "_customer_number".into(),
            "_desired_time".into(),
            "_callback_reason".into(),
        ],
        Some(Value::Array(keys)) => keys.iter().map(text).collect(),
        Some(Value::String(keys)) => super::settings::key_list(keys),
        Some(_) => return Err(bad("exported_properties must be a list of record keys")),
    };
    if columns.is_empty() {
        return Err(bad("exported_properties is empty"));
    }
    let query = CallbackQuery {
        states: vec![records::COMPLETED.to_string()],
        filters: vec![KeyFilter {
            key: "_callback_reason".into(),
            value: reason,
            negated: false,
        }],
        limit: MAX_EXPORT_ROWS,
        ..CallbackQuery::default()
    };
    let rows = ctx.records.query(&query).await.map_err(ApiError::from)?;
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(&columns).map_err(ApiError::internal)?;
    for row in &rows {
        let record = records::record_json(row);
        let fields = columns.iter().map(|key| match record.get(key) {
            None | Some(Value::Null) => String::new(),
            Some(v) => spreadsheet_safe(text(v)),
        });
        out.write_record(fields).map_err(ApiError::internal)?;
    }
    let body = out.into_inner().map_err(ApiError::internal)?;
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"CancelledCallbacks.csv\""),
    );
    Ok(response)
}
