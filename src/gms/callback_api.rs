//! The GMS Callback API and the documents the services run:
//!
//! - `POST /genesys/1/service/callback/{service}`: create (multipart, form
//!   or JSON; `gms_user` header). Answers at once with the dialog that
//!   tells the device to start its chat (`_action: "StartChat"`).
//! - `GET /genesys/1/service/callback/{service}?_customer_number=&_callback_state=`:
//!   records of a service matching the properties, newest first.
//! - `GET /genesys/1/service/callback?_id=`: one record by id (a list of
//!   one, like the property query).
//! - `GET /genesys/1/service/callback/{service}/{id}`: one record.
//! - `DELETE /genesys/1/service/callback/{service}/{id}`: cancel; the
//!   record becomes `COMPLETED` with `_callback_reason` `CANCELLED` and its
//!   session is terminated.
//! - `GET /genesys/1/document/service_template/callback/src/{file}`: the
//!   shipped `callback.scxml` and `inbound_chat.scxml`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::Gms;
use super::access::{Caller, Rated, not_yours};
use super::records::{self, iso_utc, record_json};
use super::records::{CallbackQuery, CallbackRow};
use super::service::{CallbackRequest, Service, ServiceError};
use crate::server::error::ApiError;
use crate::server::params::read_request;

/// The exception class names GMS's error bodies carry (`exception`), as
/// the public functional tests against GMS 8.5 assert them. Where GMS's
/// class for a refusal is not known, the base class is named.
pub mod exceptions {
    /// The base class: a request the callback service refused.
    pub const CALLBACK: &str = "com.genesyslab.gsg.services.callback.exceptions.CallbackException";
    /// No such callback or service.
    pub const NOT_FOUND: &str =
        "com.genesyslab.gsg.services.callback.exceptions.CallbackExceptionNotFound";
    /// A limit or throttle refused the request (503).
    pub const SERVICE_UNAVAILABLE: &str =
        "com.genesyslab.gsg.services.callback.exceptions.CallbackExceptionServiceUnavailable";
    /// The customer number is refused (400).
    pub const NUMBER: &str =
        "com.genesyslab.gsg.services.callback.exceptions.CallbackExceptionNumber";
}

/// The exception an error answer of the callback API names when its
/// handler named none, by status.
fn exception_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        404 => exceptions::NOT_FOUND,
        429 | 503 => exceptions::SERVICE_UNAVAILABLE,
        _ => exceptions::CALLBACK,
    }
}

/// Middleware of the callback and callback admin routes: every JSON error
/// answer (a handler's, an extractor's, the access guard's) carries an
/// `exception` as GMS's do, beside `error` and `message`.
pub async fn with_gms_exception(request: Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Error bodies are small; one that is not is passed on cut short
    // rather than held.
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut m)) if !m.contains_key("exception") => {
            m.insert("exception".into(), Value::from(exception_for(status)));
            parts.headers.remove(header::CONTENT_LENGTH);
            Value::Object(m).to_string().into_bytes()
        }
        _ => bytes.to_vec(),
    };
    Response::from_parts(parts, axum::body::Body::from(body))
}

type Ctx = State<Arc<Gms>>;

/// The `gms_user` header (also accepted with a dash).
pub fn gms_user(headers: &HeaderMap) -> Option<String> {
    ["gms_user", "gms-user"]
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `http://<Host>` of a request, for the URLs handed back to devices.
pub fn public_base(headers: &HeaderMap, fallback: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
        });
    match host {
        Some(h) => format!("http://{h}"),
        None => fallback.to_string(),
    }
}

fn service_error(e: ServiceError) -> ApiError {
    let code = match &e {
        ServiceError::MissingParameter(_) => "missing_parameter",
        ServiceError::NotOverwritable(_) => "option_not_overwritable",
        _ => "bad_parameter",
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
}

/// 404: no service of that name is configured.
pub fn unknown_service(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "service_not_found",
        format!("no GMS service '{name}' is configured"),
    )
    .with_exception(exceptions::NOT_FOUND)
}

/// JSON with the seed's no-cache headers.
fn no_cache_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    h.append(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.append(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::EXPIRES,
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /genesys/1/service/callback/{service}`.
pub async fn create(
    State(ctx): Ctx,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(called) = ctx.services.get(&name) else {
        return Err(unknown_service(&name));
    };
    let caller = ctx.customer(request.headers(), Some(called))?;
    if !caller.operator {
        ctx.rates
            .check(Rated::Create, super::access::client_ip(&request))?;
    }
    let (parts, params) = read_request(request, ctx.config.limits.max_body_bytes).await?;
    let mut request = CallbackRequest::from_params(params).map_err(service_error)?;
    // `_redirect`: the request is made on another service (one hop).
    let redirect = redirect_of(called, &mut request)?;
    let redirected_from = redirect.as_ref().map(|_| name.clone());
    let name = redirect.unwrap_or(name);
    let Some(service) = ctx.services.get(&name) else {
        return Err(ApiError::bad_parameter(format!(
            "_redirect names no configured service ('{name}')"
        ))
        .with_exception(exceptions::CALLBACK));
    };
    if redirected_from.is_some() {
        // The service the callback is made on admits its own customers.
        ctx.customer(&parts.headers, Some(service))?;
    }
    let limits = &ctx.settings.gms.limits;
    check_number(&request.options["_customer_number"])?;
    for name in super::service::REQUEST_PARAMETERS {
        if let Some(v) = request.options.get(*name) {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(ApiError::bad_parameter(format!("{name} must be text"))),
            };
            if text.chars().count() > limits.max_field_chars {
                return Err(too_large(format!(
                    "{name} is longer than {} characters",
                    limits.max_field_chars
                )));
            }
        }
    }
    let options_bytes = Value::Object(request.options.clone()).to_string().len();
    if options_bytes > limits.max_user_data_bytes {
        return Err(too_large(format!(
            "the request's options are {options_bytes} bytes; at most {} are accepted",
            limits.max_user_data_bytes
        )));
    }
    check_user_data_keys(request.user_data.keys(), limits.max_field_chars)?;
    let user_data_bytes = Value::Object(request.user_data.clone()).to_string().len();
    if user_data_bytes > limits.max_user_data_bytes {
        return Err(too_large(format!(
            "the user data is {user_data_bytes} bytes; at most {} are accepted",
            limits.max_user_data_bytes
        )));
    }
    // Options given with the request override the service's only where
    // the service lists them in `_overwritable_options`; all are checked
    // again.
    let overrides = service
        .request_overrides(&request.options)
        .map_err(service_error)?;
    let service = if overrides.is_empty() {
        service.clone()
    } else {
        let mut options = service.options.clone();
        options.extend(overrides);
        Service::new(&name, &options).map_err(service_error)?
    };
    let gms_user = gms_user(&parts.headers);
    // One create at a time per customer number and per device, from the
    // quota check until the record is saved (numbers first, then
    // devices: always in that order, so two creates never wait on each
    // other).
    let raw_number = crate::modules::value_text(&request.options["_customer_number"]);
    let customer_number = records::canonical_number(&raw_number, &ctx.number_country(Some(&name)));
    let number_key = format!("number:{name}:{customer_number}");
    let _number_lock = ctx.creating.lock(&number_key).await;
    let _device_lock = match &gms_user {
        Some(user) => Some(ctx.creating.lock(&format!("device:{user}")).await),
        None => None,
    };
    let now = ctx.settings.clock.now_ms();
    // A desired time whose submit time (less the service's execution
    // buffer) is still ahead makes a scheduled callback.
    let desired = match request.options.get("_desired_time") {
        None | Some(Value::Null) => None,
        Some(v) if crate::modules::value_text(v).trim().is_empty() => None,
        Some(v) => Some(super::scheduler::desired_time(
            &service,
            "_desired_time",
            crate::modules::value_text(v).trim(),
            now,
        )?),
    };
    // A requested time must fall in an open slot with a place left; the
    // slot stays claimed until the record is saved.
    let _slot = match desired {
        Some(at) => Some(super::availability::claim_slot(&ctx, &service, &name, at, None).await?),
        None => None,
    };
    let due = desired
        .map(|d| super::scheduler::due_time(&service, d))
        .filter(|due| *due > now);
    let paused = due.is_none() && ctx.paused.is_paused(&ctx, &name).await;
    let state = if due.is_some() {
        records::SCHEDULED
    } else if paused {
        records::PAUSED
    } else {
        records::QUEUED
    };
    let desired = desired.unwrap_or(now);
    super::admission::check_phone_number(&service, raw_number.trim())?;
    super::admission::check_customer(
        &ctx,
        &service,
        &request,
        &parts.headers,
        &customer_number,
        gms_user.as_deref(),
        now,
    )
    .await?;
    // Held until the record is saved: counted against the service's
    // limits by concurrent creates meanwhile.
    let reservation = super::admission::admit(&ctx, &service, now, due.is_none()).await?;
    let base = public_base(&parts.headers, &ctx.base_url);
    let id = crate::ids::gms_service_id();
    let ttl_secs = service
        .options
        .get("_ttl")
        .and_then(|v| match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .unwrap_or(86_400);
    // Kept `_ttl` after its desired time.
    let expires_at = desired.saturating_add(ttl_secs.saturating_mul(1000));
    // The column holds the number in one form for matching; the record
    // shows its digits as sent.
    let shown_number = records::normalize_number(&raw_number);
    let subject = request
        .user_data
        .get("subject")
        .or_else(|| request.options.get("_subject"))
        .map(crate::modules::value_text)
        .unwrap_or_else(|| "None".into());

    // The session's data: the service's options (with the request's
    // overrides) and the request's own parameters, but the secret ones and
    // the service's credentials; the user data; who and what it is.
    let mut data = service.options.clone();
    for (k, v) in &request.options {
        if super::service::REQUEST_PARAMETERS.contains(&k.as_str()) {
            data.insert(k.clone(), v.clone());
        }
    }
    let secret_options = &ctx.settings.gms.secret_options;
    data.retain(|k, _| {
        !super::service::is_secret_option(k, secret_options)
            && !super::access::AUTH_OPTIONS.contains(&k.as_str())
    });
    data.insert("_id".into(), Value::from(id.clone()));
    data.insert("_service_name".into(), Value::from(name.clone()));
    if paused {
        data.insert("_paused".into(), Value::Bool(true));
    }
    data.insert(
        "_user_data".into(),
        Value::Object(request.user_data.clone()),
    );
    if let Some(user) = &gms_user {
        data.insert("_gms_user".into(), Value::from(user.clone()));
    }
    let src = match service.options.get("_service") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => ctx.document_url("callback.scxml"),
    };
    let session_id = ctx.sessions.new_session_id();

    let mut record = Map::new();
    record.insert("_id".into(), Value::from(id.clone()));
    record.insert("_service_name".into(), Value::from(name.clone()));
    record.insert("_callback_state".into(), Value::from(state));
    record.insert("_customer_number".into(), Value::from(shown_number));
    if let Some(from) = &redirected_from {
        record.insert("_redirected_from".into(), Value::from(from.clone()));
    }
    // What the daily throttle counts this create by (beside its number).
    let throttled: Map<String, Value> =
        super::admission::throttle_values(&service, &request, &parts.headers, &customer_number)
            .into_iter()
            .filter(|(k, _)| k != "_customer_number")
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
    if !throttled.is_empty() {
        record.insert(
            super::admission::THROTTLE_KEY.into(),
            Value::Object(throttled),
        );
    }
    record.insert("_desired_time".into(), Value::from(iso_utc(desired)));
    record.insert("_expiration_time".into(), Value::from(iso_utc(expires_at)));
    record.insert("_created_time".into(), Value::from(iso_utc(now)));
    record.insert(
        "_media_type".into(),
        service
            .options
            .get("_media_type")
            .cloned()
            .unwrap_or(Value::Null),
    );
    if due.is_none() {
        record.insert("_ors_session_id".into(), Value::from(session_id.clone()));
    }
    record.insert(
        "_url".into(),
        Value::from(format!("{base}/genesys/1/service/callback/{name}/{id}")),
    );
    for (k, v) in &request.user_data {
        record.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let row = CallbackRow {
        id: id.clone(),
        service: name.clone(),
        customer_number,
        state: state.into(),
        session_id: session_id.clone(),
        created_at: now,
        updated_at: now,
        expires_at,
        record: Value::Object(record).to_string(),
        gms_user: gms_user.clone().unwrap_or_default(),
    };
    let mut params = Map::new();
    params.insert("_data".into(), Value::Object(data));
    if let Some(due) = due {
        // On the schedule, with what its session will start with; the
        // scheduler starts it then.
        let start = super::scheduler::start_spec(&src, &params);
        ctx.records
            .save_scheduled(row, due, start)
            .await
            .map_err(ApiError::from)?;
        drop(reservation);
        ctx.schedule_changed.notify_one();
        let mut reply = Map::new();
        reply.insert("_dialog_id".into(), Value::from("0"));
        reply.insert("_action".into(), Value::from("ConfirmationDialog"));
        reply.insert(
            "_text".into(),
            Value::from(format!(
                "Your callback is scheduled for {}",
                iso_utc(desired)
            )),
        );
        reply.insert("_ok_title".into(), Value::from("Ok"));
        reply.insert("_callback_state".into(), Value::from(records::SCHEDULED));
        reply.insert("_desired_time".into(), Value::from(iso_utc(desired)));
        reply.insert("_id".into(), Value::from(id));
        return Ok(no_cache_json(StatusCode::OK, &Value::Object(reply)));
    }
    // The record first (with how its session starts, to start it again
    // if it dies), so a chat that starts the moment the reply arrives
    // finds it; then the session, which waits for that chat.
    let start = super::scheduler::start_spec(&src, &params);
    ctx.records
        .save_new(row, start)
        .await
        .map_err(ApiError::from)?;
    drop(reservation);
    if let Err(e) = ctx
        .sessions
        .start_with_id(session_id, &src, params, None)
        .await
    {
        let _ = ctx
            .records
            .update(
                &id,
                records::COMPLETED,
                Some(records::SUBMIT_FAILED),
                Map::new(),
            )
            .await;
        return Err(e);
    }
    // A pause (or resume) that came between the check above and the
    // record's write did not see this callback: it follows the service
    // now.
    if ctx.paused.is_paused(&ctx, &name).await != paused {
        super::pause::follow(&ctx, &id, !paused).await;
    }
    let mut chat_parameters = Map::new();
    chat_parameters.insert("subject".into(), Value::from(subject));
    let mut reply = Map::new();
    reply.insert("_dialog_id".into(), Value::from("1"));
    reply.insert("_action".into(), Value::from("StartChat"));
    reply.insert("_label".into(), Value::from("Start Chat"));
    reply.insert(
        "_start_chat_url".into(),
        Value::from(format!("{base}/genesys/1/service/{id}/ixn/chat")),
    );
    reply.insert(
        "_comet_url".into(),
        Value::from(format!("{base}/genesys/cometd")),
    );
    reply.insert(
        "_user_header".into(),
        gms_user.map(Value::from).unwrap_or(Value::Null),
    );
    reply.insert("_id_to_jump_before".into(), Value::from("exit://"));
    reply.insert("_chat_parameters".into(), Value::Object(chat_parameters));
    reply.insert("_id".into(), Value::from(id));
    Ok(no_cache_json(StatusCode::OK, &Value::Object(reply)))
}

/// The service a create on `called` is redirected to, if any: its
/// `_redirect` option, which a request may change (an empty value cancels
/// it) only when `_redirect` is in `_overwritable_options`. The request's
/// own `_redirect` is taken out (the target service need not allow it).
fn redirect_of(
    called: &Service,
    request: &mut CallbackRequest,
) -> Result<Option<String>, ApiError> {
    let configured = called
        .options
        .get("_redirect")
        .map(crate::modules::value_text)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let target = match request.options.remove("_redirect") {
        None => configured,
        Some(v) => {
            let asked = crate::modules::value_text(&v).trim().to_string();
            let allowed = called.overwritable().iter().any(|o| o == "_redirect");
            if !allowed && Some(&asked) != configured.as_ref() {
                return Err(service_error(ServiceError::NotOverwritable(
                    "_redirect".into(),
                )));
            }
            (!asked.is_empty()).then_some(asked)
        }
    };
    Ok(target.filter(|t| *t != called.name))
}

/// A customer number must be text or a whole number with some digits.
fn check_number(number: &Value) -> Result<(), ApiError> {
    let ok = match number {
        Value::String(s) => !records::normalize_number(s).is_empty(),
        Value::Number(n) => n.is_u64(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_parameter(
            "_customer_number must be a phone number (text with digits, or a whole number)",
        ))
    }
}

/// User-data keys must be named, and no longer than `max_chars`.
fn check_user_data_keys<'a>(
    keys: impl Iterator<Item = &'a String>,
    max_chars: usize,
) -> Result<(), ApiError> {
    for key in keys {
        if key.trim().is_empty() {
            return Err(ApiError::bad_parameter("a user-data key is empty")
                .with_exception(exceptions::CALLBACK));
        }
        if key.chars().count() > max_chars {
            return Err(too_large(format!(
                "a user-data key is longer than {max_chars} characters"
            )));
        }
    }
    Ok(())
}

/// 413-like refusal of a field over its cap (a 400 naming the limit).
fn too_large(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "too_large", message)
}

/// The most conditions one query by properties may carry.
const MAX_QUERY_CONDITIONS: usize = 32;

/// A record as `caller` may see it: the ORS session id is for operators.
fn shown(caller: &Caller, row: &CallbackRow) -> Value {
    let mut v = record_json(row);
    if !caller.operator
        && let Value::Object(m) = &mut v
    {
        m.remove("_ors_session_id");
    }
    v
}

/// `GET /genesys/1/service/callback/{service}?...`: records by properties;
/// a device sees only its own (by its `gms_user`), an operator every
/// device's.
pub async fn query(
    State(ctx): Ctx,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(service) = ctx.services.get(&name) else {
        return Err(unknown_service(&name));
    };
    let caller = ctx.customer(request.headers(), Some(service))?;
    let q = query_of(&ctx, &caller, request.uri().query(), Some(name))?;
    records_reply(&ctx, &caller, &q).await
}

/// `GET /genesys/1/service/callback?_id=...`: one record by id (a list of
/// one, every key); without `_id`, records by properties across services
/// (an operator's: every device's; a device's: its own).
pub async fn query_any(State(ctx): Ctx, request: Request) -> Result<Response, ApiError> {
    let query = request.uri().query().unwrap_or_default().to_string();
    let id = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "_id")
        .map(|(_, v)| v.into_owned());
    match id {
        Some(id) => {
            let row = ctx.records.get(&id).await.map_err(ApiError::from)?;
            let service = row.as_ref().and_then(|r| ctx.services.get(&r.service));
            let caller = ctx.customer(request.headers(), service)?;
            match row {
                Some(row) if caller.owns(&row.gms_user) => Ok(no_cache_json(
                    StatusCode::OK,
                    &Value::Array(vec![shown(&caller, &row)]),
                )),
                _ => Err(not_yours(&id)),
            }
        }
        None => {
            // Across services: an operator sees every device's records, a
            // device its own (by its gms_user).
            let caller = ctx.customer(request.headers(), None)?;
            let q = query_of(&ctx, &caller, Some(&query), None)?;
            records_reply(&ctx, &caller, &q).await
        }
    }
}

fn query_of(
    ctx: &Gms,
    caller: &Caller,
    query: Option<&str>,
    service: Option<String>,
) -> Result<CallbackQuery, ApiError> {
    let cap = ctx.settings.gms.limits.max_listed_records.max(1);
    let mut q = CallbackQuery {
        service,
        limit: cap,
        ..CallbackQuery::default()
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "_max" | "max" => {
                q.limit = v.trim().parse::<usize>().map_err(|_| {
                    ApiError::bad_parameter(format!("{k} must be a whole number, not '{v}'"))
                })?;
                q.limit = q.limit.clamp(1, cap);
            }
            "operand" | "_operand" => {
                q.operand = match v.trim().to_ascii_uppercase().as_str() {
                    "AND" => records::Operand::And,
                    "OR" => records::Operand::Or,
                    _ => {
                        return Err(ApiError::bad_parameter(format!(
                            "operand must be AND or OR, not '{v}'"
                        )));
                    }
                }
            }
            // A client's cache-buster, not a record key.
            "_" => {}
            key if key.trim().is_empty() => {
                return Err(ApiError::bad_parameter("a query parameter has no name"));
            }
            key => {
                if q.filters.len() >= MAX_QUERY_CONDITIONS {
                    return Err(ApiError::bad_parameter(format!(
                        "a query takes at most {MAX_QUERY_CONDITIONS} conditions"
                    )));
                }
                let (negated, mut value) = match v.strip_prefix('!') {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, v.into_owned()),
                };
                if key == "_customer_number" {
                    let country = ctx.number_country(q.service.as_deref());
                    value = records::canonical_number(&value, &country);
                }
                if key == "_callback_state" && records::state_named(&value).is_none() {
                    return Err(ApiError::bad_parameter(format!(
                        "_callback_state '{value}' is not a callback state (one of {})",
                        records::STATES.join(", ")
                    )));
                }
                q.filters.push(records::KeyFilter {
                    key: key.to_string(),
                    value,
                    negated,
                });
            }
        }
    }
    if !caller.operator {
        match &caller.gms_user {
            Some(user) => q.gms_user = Some(user.clone()),
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "gms_user_required",
                    "a query by properties returns the device's own callbacks: send its \
                     gms_user header (or an operator credential)",
                ));
            }
        }
    }
    Ok(q)
}

/// The matching records, newest first, at most `max_listed_bytes` of them.
async fn records_reply(
    ctx: &Gms,
    caller: &Caller,
    q: &CallbackQuery,
) -> Result<Response, ApiError> {
    let max_bytes = ctx.settings.gms.limits.max_listed_bytes;
    let mut bytes = 0usize;
    let mut rows = Vec::new();
    for row in ctx.records.query(q).await.map_err(ApiError::from)? {
        let v = returned_record(ctx, &row, caller.operator);
        bytes += v.to_string().len();
        if bytes > max_bytes && !rows.is_empty() {
            break;
        }
        rows.push(v);
    }
    Ok(no_cache_json(StatusCode::OK, &Value::Array(rows)))
}

/// The record `id` of service `name` if `caller` may reach it, or 404.
async fn record_of(
    ctx: &Gms,
    headers: &axum::http::HeaderMap,
    name: &str,
    id: &str,
) -> Result<(Caller, CallbackRow), ApiError> {
    let Some(service) = ctx.services.get(name) else {
        return Err(unknown_service(name));
    };
    let caller = ctx.customer(headers, Some(service))?;
    // A callback redirected from this service is reached here too, by a
    // caller its own service admits.
    let redirected_here = |r: &CallbackRow| {
        record_json(r)
            .get("_redirected_from")
            .and_then(Value::as_str)
            == Some(name)
    };
    let row = ctx
        .records
        .get(id)
        .await
        .map_err(ApiError::from)?
        .filter(|r| (r.service == name || redirected_here(r)) && caller.owns(&r.gms_user))
        .ok_or_else(|| not_yours(id))?;
    if row.service != name {
        ctx.customer(headers, ctx.services.get(&row.service))?;
    }
    Ok((caller, row))
}

/// `GET /genesys/1/service/callback/{service}/{id}`.
pub async fn get_one(
    State(ctx): Ctx,
    Path((name, id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let (caller, row) = record_of(&ctx, &headers, &name, &id).await?;
    Ok(no_cache_json(StatusCode::OK, &shown(&caller, &row)))
}

/// `DELETE /genesys/1/service/callback/{service}/{id}`: cancel.
pub async fn cancel(
    State(ctx): Ctx,
    Path((name, id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let (caller, row) = record_of(&ctx, &headers, &name, &id).await?;
    let finished = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "callback_finished",
            format!("callback '{id}' is already {}", records::COMPLETED),
        )
    };
    if records::is_final(&row.state) {
        return Err(finished());
    }
    let row = cancel_callback(&ctx, &row, records::CANCELLED)
        .await?
        .ok_or_else(finished)?;
    Ok(no_cache_json(StatusCode::OK, &shown(&caller, &row)))
}

/// `PUT /genesys/1/service/callback/{service}/{id}`: reschedules a
/// callback (`_new_desired_time`, checked as a create's `_desired_time`)
/// and updates its user data (any key without `_`; a key sent as `""` is
/// removed). Clients re-send `_customer_number`, `_desired_time`, ...:
/// those are ignored when unchanged; other `_` keys are refused. Only a
/// `SCHEDULED` or `QUEUED` callback can be rescheduled (409 otherwise); a
/// `QUEUED` one leaves its session and is `SCHEDULED` again, a new session
/// starting when it is due. Any unfinished one can have its user data
/// updated. Answers the record.
pub async fn update(
    State(ctx): Ctx,
    Path((name, id)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let (caller, row) = record_of(&ctx, request.headers(), &name, &id).await?;
    let Some(service) = ctx.services.get(&name) else {
        return Err(unknown_service(&name));
    };
    let (_, params) = read_request(request, ctx.config.limits.max_body_bytes).await?;
    let now = ctx.settings.clock.now_ms();
    let new_desired = match params.get("_new_desired_time") {
        None | Some(Value::Null) => None,
        Some(v) => Some(super::scheduler::desired_time(
            service,
            "_new_desired_time",
            crate::modules::value_text(v).trim(),
            now,
        )?),
    };
    let _slot = match new_desired {
        Some(at) => {
            Some(super::availability::claim_slot(&ctx, service, &name, at, Some(&id)).await?)
        }
        None => None,
    };
    // Keys clients send back unchanged with an update; any other `_` key
    // is a mistake worth telling.
    const ECHOED: &[&str] = &[
        "_id",
        "_customer_number",
        "_service_name",
        "_callback_state",
        "_desired_time",
        "_new_desired_time",
    ];
    if let Some(key) = params
        .keys()
        .find(|k| k.starts_with('_') && !ECHOED.contains(&k.as_str()))
    {
        return Err(ApiError::bad_parameter(format!(
            "{key} cannot be changed by an update (it takes _new_desired_time and user data)"
        ))
        .with_exception(exceptions::CALLBACK));
    }
    let current_desired = records::record_json(&row)
        .get("_desired_time")
        .and_then(Value::as_str)
        .and_then(records::parse_iso_utc);
    if new_desired.is_none()
        && let Some(v) = params.get("_desired_time")
        && records::parse_iso_utc(&crate::modules::value_text(v)) != current_desired
    {
        return Err(ApiError::bad_parameter(
            "_desired_time differs from the callback's: to reschedule, send _new_desired_time",
        )
        .with_exception(exceptions::CALLBACK));
    }
    let limits = &ctx.settings.gms.limits;
    check_user_data_keys(params.keys(), limits.max_field_chars)?;
    let changes: Map<String, Value> = params
        .into_iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .collect();
    let finished = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "callback_finished",
            format!("callback '{id}' is already {}", records::COMPLETED),
        )
    };
    if records::is_final(&row.state) {
        return Err(finished());
    }
    let reschedulable = |state: &str| state == records::SCHEDULED || state == records::QUEUED;
    if new_desired.is_some() && !reschedulable(&row.state) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "callback_not_scheduled",
            format!(
                "callback '{id}' is {}: only a SCHEDULED or QUEUED callback can be \
                 rescheduled (cancel it and create another)",
                row.state
            ),
        ));
    }
    let ttl_ms = service
        .options
        .get("_ttl")
        .map(crate::modules::value_text)
        .and_then(|t| t.trim().parse::<i64>().ok())
        .unwrap_or(86_400)
        .saturating_mul(1000);
    let spec = ctx.records.scheduled(&id).await.map_err(ApiError::from)?;
    // A queued callback moved to a later time leaves its session: a new
    // one starts when it is due.
    let queued_start = match (&new_desired, row.state.as_str()) {
        (Some(_), records::QUEUED) => ctx.records.start_of(&id).await.map_err(ApiError::from)?,
        _ => None,
    };
    let next_session = ctx.sessions.new_session_id();
    let mut left_session = None;
    let limit = ctx.settings.gms.limits.max_user_data_bytes;
    let mut too_big = None;
    let outcome = ctx
        .records
        .modify(&id, |row, record| {
            if new_desired.is_some() && !reschedulable(&row.state) {
                return None;
            }
            if new_desired.is_some() && row.state == records::QUEUED && queued_start.is_none() {
                return None;
            }
            for (k, v) in &changes {
                let cleared = matches!(v, Value::String(s) if s.is_empty());
                if cleared {
                    record.remove(k);
                } else {
                    record.insert(k.clone(), v.clone());
                }
            }
            let kept: Map<String, Value> = record
                .iter()
                .filter(|(k, _)| !k.starts_with('_'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let bytes = Value::Object(kept.clone()).to_string().len();
            if bytes > limit {
                too_big = Some(bytes);
                return None;
            }
            let mut due = spec.as_ref().map(|(due, _)| *due);
            if let Some(desired) = new_desired {
                record.insert("_desired_time".into(), Value::from(iso_utc(desired)));
                row.expires_at = desired.saturating_add(ttl_ms);
                record.insert(
                    "_expiration_time".into(),
                    Value::from(iso_utc(row.expires_at)),
                );
                due = Some(super::scheduler::due_time(service, desired));
            }
            if let (Some(desired), Some(start)) = (new_desired, &queued_start)
                && row.state == records::QUEUED
            {
                left_session = Some(std::mem::replace(&mut row.session_id, next_session.clone()));
                row.state = records::SCHEDULED.into();
                record.insert("_callback_state".into(), Value::from(records::SCHEDULED));
                record.remove("_ors_session_id");
                let mut start: Value = serde_json::from_str(start).unwrap_or(Value::Null);
                if let Some(Value::Object(data)) = start.pointer_mut("/params/_data") {
                    data.insert("_user_data".into(), Value::Object(kept));
                }
                return Some(records::ScheduleChange::Put(
                    super::scheduler::due_time(service, desired),
                    start.to_string(),
                ));
            }
            // A scheduled session starts with the user data as it is then.
            match (due, &spec) {
                (Some(due), Some((_, start))) if row.state == records::SCHEDULED => {
                    let mut start: Value = serde_json::from_str(start).unwrap_or(Value::Null);
                    if let Some(Value::Object(data)) = start.pointer_mut("/params/_data") {
                        data.insert("_user_data".into(), Value::Object(kept));
                    }
                    Some(records::ScheduleChange::Put(due, start.to_string()))
                }
                _ => Some(records::ScheduleChange::Keep),
            }
        })
        .await
        .map_err(ApiError::from)?;
    if let Some(bytes) = too_big {
        return Err(too_large(format!(
            "the user data would be {bytes} bytes; at most {limit} are accepted"
        )));
    }
    match outcome {
        None => Err(not_yours(&id)),
        Some((row, true)) => {
            if let Some(old) = left_session {
                let _ = ctx.sessions.send(
                    &old,
                    crate::server::worker::Command::Terminate {
                        id: old.clone(),
                        reply: None,
                    },
                );
            }
            ctx.schedule_changed.notify_one();
            Ok(no_cache_json(StatusCode::OK, &shown(&caller, &row)))
        }
        Some((row, false)) if records::is_final(&row.state) => Err(finished()),
        Some((row, false)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "callback_not_scheduled",
            format!(
                "callback '{id}' is {} now: it can no longer be rescheduled",
                row.state
            ),
        )),
    }
}

/// Cancels a callback: its record becomes `COMPLETED` with `reason`, then
/// its session is ended (a session already gone is fine: the record is
/// what counts), and a chat it started that no agent has yet is ended.
/// `None` when the record was already final.
pub async fn cancel_callback(
    ctx: &Gms,
    row: &CallbackRow,
    reason: &str,
) -> Result<Option<CallbackRow>, ApiError> {
    let Some((row, true)) = ctx
        .records
        .update(&row.id, records::COMPLETED, Some(reason), Map::new())
        .await
        .map_err(ApiError::from)?
    else {
        return Ok(None);
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if ctx
        .sessions
        .send(
            &row.session_id,
            crate::server::worker::Command::Terminate {
                id: row.session_id.clone(),
                reply: Some(tx),
            },
        )
        .is_ok()
    {
        let _ = rx.await;
    }
    // Its chat, if one was started and has not reached an agent, ends
    // too: nobody would ever answer it.
    if let Some(binding) = ctx.chats.get(&row.id).filter(|b| !b.chat_id.is_empty())
        && ctx
            .interactions
            .get(&binding.chat_id)
            .is_none_or(|i| i.state != "routed")
    {
        let _ = ctx
            .backends
            .chat
            .terminate(&binding.chat_id, "This callback was cancelled.")
            .await;
    }
    Ok(Some(row))
}

/// The keys every listed record carries (GMS 8.5 Callback Services API,
/// `returned-keys`): `_callback_reason` only where it has one.
pub const ALWAYS_RETURNED_KEYS: &[&str] = &[
    "_id",
    "_desired_time",
    "_service_name",
    "_callback_state",
    "_expiration_time",
    "_customer_number",
    "_url",
    "_callback_reason",
];

/// A record as the queue and property queries list it: the keys GMS
/// always returns, `[callback] returned-keys`, and its service's
/// `_customer_lookup_keys`; `_ors_session_id` only for an operator.
pub fn returned_record(ctx: &Gms, row: &CallbackRow, operator: bool) -> Value {
    let Value::Object(record) = record_json(row) else {
        return Value::Null;
    };
    let lookup = ctx
        .services
        .get(&row.service)
        .and_then(|s| s.options.get("_customer_lookup_keys"))
        .map(|v| super::settings::key_list(&crate::modules::value_text(v)))
        .unwrap_or_default();
    let returned = ctx.settings.callback.returned_keys();
    let wanted = |k: &str| {
        ALWAYS_RETURNED_KEYS.contains(&k)
            || returned.iter().any(|r| r == k)
            || lookup.iter().any(|r| r == k)
    };
    let mut out = Map::new();
    for (k, v) in record {
        if wanted(&k) && (operator || k != "_ors_session_id") {
            out.insert(k, v);
        }
    }
    Value::Object(out)
}

/// `GET /genesys/1/document/service_template/callback/src/{file}`.
pub async fn document(Path(file): Path<String>) -> Result<Response, ApiError> {
    let text = super::shipped_document(&file).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "document_not_found",
            format!("no shipped document '{file}'"),
        )
    })?;
    let etag = format!("\"{}\"", crate::store::document_hash(text));
    let mut response = text.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/scxml+xml;charset=UTF-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    Ok(response)
}
