//! The HTTP API of the core, all its routes in [`router`]: the ORS REST
//! interface (`/scxml/session/...`), the session list, `/health`,
//! `/metrics` and `/ors/help`; extensions' routers are merged beside them,
//! behind the same guard. Bodies may be form-encoded, multipart or JSON; replies are
//! JSON, errors included (see [`ApiError`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::error::ApiError;
use super::params::{Params, read_request, take_string};
use super::routes::{RouteDoc, Routes};
use super::worker::{Command, SessionView};
use super::{Plugged, ServerHandles};
use crate::interpreter::{Event, EventKind};

/// What the core's handlers and the guards use.
struct ApiState {
    handles: ServerHandles,
    /// Every route of the server, for `/ors/help` (set once built).
    help: Arc<std::sync::OnceLock<Vec<RouteDoc>>>,
}

impl std::ops::Deref for ApiState {
    type Target = ServerHandles;
    fn deref(&self) -> &ServerHandles {
        &self.handles
    }
}

type Ctx = State<Arc<ApiState>>;
type ApiResult = Result<Response, ApiError>;

/// Every route of the server: the core's, behind the operator guard
/// (`/health` excepted), and those `plugged` in by the extensions, which
/// guard their own (customer, admin) routes; every answer is counted.
pub fn router(handles: &ServerHandles, plugged: Vec<Plugged>) -> Router {
    let mut extra = Router::new();
    let mut plugged_docs = Vec::new();
    for p in plugged {
        extra = extra.merge(p.router);
        plugged_docs.extend(p.routes);
    }
    let help = Arc::new(std::sync::OnceLock::new());
    let ctx = Arc::new(ApiState {
        handles: handles.clone(),
        help: help.clone(),
    });
    let (public, mut docs) = Routes::new("public")
        .route(
            "/health",
            &[Method::GET],
            health,
            "200 healthy, 503 while the store fails",
        )
        .with_state(ctx.clone());
    let (operator, operator_docs) = Routes::new("operator")
        .route(
            "/scxml/session/start",
            &[Method::POST],
            start_session,
            "starts a session: src (mandatory: URL, path or script:<name>), idealtime; \
             any other parameter becomes session data",
        )
        .route(
            "/scxml/session/{id}/event/{name}",
            &[],
            send_event,
            "sends the session event {name}; the parameters become _event.data",
        )
        .route(
            "/scxml/session/{id}/request/{name}",
            &[],
            send_request,
            "sends {name} with a requestid; the document answers with <session:response>",
        )
        .route(
            "/scxml/session/{id}/query",
            &[],
            query_session,
            "the session's state and data",
        )
        .route(
            "/scxml/session/{id}/terminate",
            &[],
            terminate_session,
            "ends the session",
        )
        .route(
            "/scxml/sessions",
            &[Method::GET],
            list_sessions,
            "lists sessions: offset, limit (at most 1000), status",
        )
        .route(
            "/basichttp/{id}",
            &[],
            basichttp_event,
            "the Basic HTTP Event I/O Processor: _scxmleventname and data to session {id}",
        )
        .route("/metrics", &[Method::GET], metrics, "Prometheus metrics")
        .route("/ors/help", &[Method::GET], help_route, "this list")
        .with_state::<()>(ctx.clone());
    let operator =
        operator.route_layer(middleware::from_fn_with_state(ctx.clone(), operator_guard));
    docs.extend(operator_docs);
    docs.extend(plugged_docs);
    docs.sort_by(|a, b| a.path.cmp(&b.path));
    let _ = help.set(docs);
    Router::new()
        .merge(public)
        .merge(operator)
        .merge(extra)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(ctx, count))
}

/// The operator role's door: an operator credential (bearer or Basic, see
/// [`super::auth`]) or 401 with a Basic challenge.
async fn operator_guard(State(ctx): Ctx, request: Request, next: Next) -> Response {
    if ctx.config.security.is_operator(request.headers()) {
        return next.run(request).await;
    }
    super::auth::challenge(
        "ors operator",
        "this is an operator API: an operator credential ('Authorization: Bearer <token>' \
         or HTTP Basic) is required",
    )
    .into_response()
}

/// Counts responses, turns axum's own plain rejections (405) into JSON
/// errors, ends every JSON reply with a newline (so a shell prompt after
/// `curl` starts on its own line), and writes the access log line
/// (`log.access`).
async fn count(State(ctx): Ctx, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    let status = response.status();
    ctx.metrics.count_response(status.as_u16());
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response = ApiError::new(
            status,
            "method_not_allowed",
            format!("this method is not allowed on {path}"),
        )
        .into_response();
    }
    let response = end_json_with_newline(response).await;
    if ctx.config.log.access {
        let session = path
            .strip_prefix("/scxml/session/")
            .and_then(|rest| rest.split('/').next())
            .filter(|id| *id != "start")
            .unwrap_or("");
        tracing::info!(
            target: "ors::access",
            method = %method,
            path = %path,
            status = status.as_u16(),
            ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
            session,
            "request"
        );
    }
    response
}

/// A complete JSON body (its size known, under 16 MiB) with `\n` added at
/// its end; any other response as it is.
async fn end_json_with_newline(response: Response) -> Response {
    use http_body::Body as _;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let known = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n > 0 && n < 16 << 20);
    if !is_json || !known {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the reply could not be read back",
        )
        .into_response();
    };
    if bytes.ends_with(b"\n") {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    let mut with_newline = Vec::with_capacity(bytes.len() + 1);
    with_newline.extend_from_slice(&bytes);
    with_newline.push(b'\n');
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(with_newline))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

async fn params_of(ctx: &ApiState, request: Request) -> Result<(Method, Params), ApiError> {
    let (parts, params) = read_request(request, ctx.config.limits.max_body_bytes).await?;
    Ok((parts.method, params))
}

fn json_ok(value: impl serde::Serialize) -> Response {
    axum::Json(value).into_response()
}

/// `POST /scxml/session/start`: `src` (mandatory), `idealtime` (ms since
/// the epoch, optional); every other parameter becomes session data.
async fn start_session(State(ctx): Ctx, request: Request) -> ApiResult {
    let (_, mut params) = params_of(&ctx, request).await?;
    let src = take_string(&mut params, "src")?.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_parameter",
            "'src' is mandatory: the document's URL, path or script:<name>",
        )
    })?;
    let idealtime = match take_string(&mut params, "idealtime")? {
        None => None,
        Some(t) => Some(t.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_parameter(format!(
                "'idealtime' must be milliseconds since the Unix epoch, not '{t}'"
            ))
        })?),
    };
    let view = ctx.sessions.start(&src, params, idealtime).await?;
    Ok(json_ok(view))
}

fn check_event_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('.')
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_parameter(format!(
            "'{name}' is not a valid event name (letters, digits, '.', '_', '-', ':')"
        )))
    }
}

fn external_event(name: &str, params: Params) -> Event {
    let mut event = Event::new(name.to_string(), EventKind::External);
    event.data = Some(Value::Object(params));
    event
}

async fn deliver(ctx: &ApiState, id: &str, event: Event) -> Result<SessionView, ApiError> {
    let send = |reply| Command::Event {
        id: id.to_string(),
        event,
        reply: Some(reply),
        letter: None,
    };
    ask(ctx, id, send).await
}

/// `/scxml/session/{id}/event/{name}`: query and body parameters become
/// `_event.data`; answered once the event was processed.
async fn send_event(
    State(ctx): Ctx,
    Path((id, name)): Path<(String, String)>,
    request: Request,
) -> ApiResult {
    check_event_name(&name)?;
    let (_, params) = params_of(&ctx, request).await?;
    let view = deliver(&ctx, &id, external_event(&name, params)).await?;
    Ok(json_ok(json!({
        "sessionid": view.sessionid,
        "event": name,
        "status": view.status,
        "configuration": view.configuration,
    })))
}

/// `/scxml/session/{id}/request/{name}`: like an event, with a `requestid`
/// in `_event.data`; the reply is what the document's `<session:response>`
/// gives, or 504 when it does not answer in time.
async fn send_request(
    State(ctx): Ctx,
    Path((id, name)): Path<(String, String)>,
    request: Request,
) -> ApiResult {
    check_event_name(&name)?;
    let (_, mut params) = params_of(&ctx, request).await?;
    let requestid = ctx.sessions.new_request_id();
    params.insert("requestid".into(), Value::String(requestid.clone()));
    let mut answer = ctx.responses.register(&requestid);
    let view = match deliver(&ctx, &id, external_event(&name, params)).await {
        Ok(v) => v,
        Err(e) => {
            ctx.responses.cancel(&requestid);
            return Err(e);
        }
    };
    if view.status != "running"
        && let Err(oneshot::error::TryRecvError::Empty) = answer.try_recv()
    {
        ctx.responses.cancel(&requestid);
        return Err(ApiError::session_ended(&id));
    }
    let timeout = Duration::from_millis(ctx.config.limits.request_timeout_ms);
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(body)) => {
            let status = StatusCode::from_u16(body.status).unwrap_or(StatusCode::OK);
            Ok((status, axum::Json(body.body)).into_response())
        }
        Ok(Err(_)) | Err(_) => {
            ctx.responses.cancel(&requestid);
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "request_timeout",
                format!(
                    "session '{id}' did not answer request '{name}' within {} ms",
                    timeout.as_millis()
                ),
            ))
        }
    }
}

/// Sends a command that is answered with a session view, and waits.
async fn ask(
    ctx: &ApiState,
    id: &str,
    command: impl FnOnce(oneshot::Sender<Result<SessionView, ApiError>>) -> Command,
) -> Result<SessionView, ApiError> {
    let (tx, rx) = oneshot::channel();
    ctx.sessions.pool().send(id, command(tx))?;
    rx.await
        .unwrap_or_else(|_| Err(ApiError::internal("a worker dropped a request")))
}

/// `GET /scxml/session/{id}/query`: status, active states and variables.
async fn query_session(State(ctx): Ctx, Path(id): Path<String>) -> ApiResult {
    let query = |reply| Command::Query {
        id: id.clone(),
        reply,
    };
    Ok(json_ok(ask(&ctx, &id, query).await?))
}

/// `POST /scxml/session/{id}/terminate`: stops the session (its states are
/// exited, running their onexit handlers).
async fn terminate_session(State(ctx): Ctx, Path(id): Path<String>) -> ApiResult {
    let terminate = |reply| Command::Terminate {
        id: id.clone(),
        reply: Some(reply),
    };
    Ok(json_ok(ask(&ctx, &id, terminate).await?))
}

/// `/basichttp/{id}`: the Basic HTTP Event I/O Processor's receiving end
/// (`_scxmleventname` names the event, else `HTTP.<METHOD>`).
async fn basichttp_event(State(ctx): Ctx, Path(id): Path<String>, request: Request) -> ApiResult {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, ctx.config.limits.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body exceeds {} bytes",
                    ctx.config.limits.max_body_bytes
                ),
            )
        })?;
    let origin = parts
        .headers
        .get(crate::io::basichttp::ORIGIN_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let event = crate::io::basichttp::event_from_request(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &bytes,
        &origin,
    );
    let name = event.name.to_string();
    check_event_name(&name)?;
    let view = deliver(&ctx, &id, event).await?;
    Ok(json_ok(json!({
        "sessionid": view.sessionid,
        "event": name,
        "status": view.status,
    })))
}

/// `GET /scxml/sessions?offset=&limit=&status=`: sessions by start time.
async fn list_sessions(State(ctx): Ctx, request: Request) -> ApiResult {
    let (_, mut params) = params_of(&ctx, request).await?;
    let number = |v: Option<String>, name: &str, default: usize| -> Result<usize, ApiError> {
        match v {
            None => Ok(default),
            Some(s) => s.trim().parse().map_err(|_| {
                ApiError::bad_parameter(format!("'{name}' must be a whole number, not '{s}'"))
            }),
        }
    };
    let offset = number(take_string(&mut params, "offset")?, "offset", 0)?;
    let limit = number(take_string(&mut params, "limit")?, "limit", 100)?;
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_parameter(
            "'limit' must be between 1 and 1000",
        ));
    }
    let status = take_string(&mut params, "status")?;
    if let Some(s) = &status
        && !matches!(
            s.as_str(),
            "running" | "completed" | "terminated" | "failed"
        )
    {
        return Err(ApiError::bad_parameter(format!(
            "'status' must be running, completed, terminated or failed, not '{s}'"
        )));
    }
    let mut receivers = Vec::new();
    ctx.sessions.pool().broadcast(|| {
        let (tx, rx) = oneshot::channel();
        receivers.push(rx);
        Command::List { reply: tx }
    });
    let mut all: Vec<SessionView> = Vec::new();
    for rx in receivers {
        if let Ok(list) = rx.await {
            all.extend(list);
        }
    }
    if let Some(s) = &status {
        all.retain(|v| v.status == s);
    }
    all.sort_by_key(|v| v.start_seq);
    let total = all.len();
    let page: Vec<SessionView> = all.into_iter().skip(offset).take(limit).collect();
    Ok(json_ok(json!({
        "total": total,
        "offset": offset,
        "limit": limit,
        "sessions": page,
    })))
}

async fn health(State(ctx): Ctx) -> Response {
    let running = ctx
        .metrics
        .sessions_running
        .load(std::sync::atomic::Ordering::Relaxed);
    // A store that refuses writes means nothing new is acknowledged.
    if let Some(failure) = ctx.commits.as_ref().and_then(|c| c.failure()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "status": "unhealthy",
                "store": failure,
                "workers": ctx.sessions.pool().len(),
                "sessions_running": running,
                "version": env!("CARGO_PKG_VERSION"),
            })),
        )
            .into_response();
    }
    json_ok(json!({
        "status": "ok",
        "workers": ctx.sessions.pool().len(),
        "sessions_running": running,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn metrics(State(ctx): Ctx) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.metrics.render(),
    )
        .into_response()
}

/// `GET /ors/help`: every route of the server (the core's and the
/// services'), by path, with its methods, access and purpose.
async fn help_route(State(ctx): Ctx) -> Response {
    let routes = ctx.help.get().cloned().unwrap_or_default();
    json_ok(json!({ "routes": routes }))
}
