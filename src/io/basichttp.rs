//! The Basic HTTP Event I/O Processor (SCXML 1.0 Appendix C.2): one HTTP
//! listener per process (loopback by default) that turns POSTs to
//! `/basichttp/<session id>` into external events, and a client that POSTs
//! `<send type="...#BasicHTTPEventProcessor">` to a URL.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::any;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::interpreter::{DispatchError, Event, EventKind, Outbound};

/// The processor's type URI.
pub const BASICHTTP_TYPE: &str = "http://www.w3.org/TR/scxml/#BasicHTTPEventProcessor";

/// Header our client sets so the receiver can fill `_event.origin`.
pub const ORIGIN_HEADER: &str = "x-scxml-origin";

/// Whether a `type` names this processor.
pub fn is_basichttp_type(t: &str) -> bool {
    t == BASICHTTP_TYPE || t == "basichttp"
}

/// An event that arrived over HTTP, with a channel to say whether it was
/// delivered to a live session.
pub struct Incoming {
    /// Target session id.
    pub session: String,
    /// The event.
    pub event: Event,
    /// `true` when the session took it.
    pub reply: oneshot::Sender<bool>,
}

/// A running listener.
pub struct Listener {
    /// The bound address.
    pub addr: SocketAddr,
    /// Location prefix: a session's location is this plus its id.
    pub base_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Listener {
    /// Stops accepting and waits (up to a second) for answers in flight.
    pub async fn close(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), task).await;
        }
    }

    /// The location of one session (`_ioprocessors['basichttp'].location`).
    pub fn location(&self, session_id: &str) -> String {
        format!("{}{session_id}", self.base_url)
    }
}

/// Binds the listener and serves it on the current runtime; events arrive
/// on the returned channel.
pub async fn listen(addr: SocketAddr) -> std::io::Result<(Listener, mpsc::Receiver<Incoming>)> {
    let socket = tokio::net::TcpListener::bind(addr).await?;
    let addr = socket.local_addr()?;
    let (tx, rx) = mpsc::channel(1024);
    let app = Router::new()
        .route("/basichttp/{session}", any(receive))
        .with_state(tx);
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(socket, service).with_graceful_shutdown(async {
            let _ = stop.await;
        });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "basic HTTP listener stopped");
        }
    });
    let base_url = format!("http://{addr}/basichttp/");
    let listener = Listener {
        addr,
        base_url,
        shutdown: Some(shutdown),
        task: Some(task),
    };
    Ok((listener, rx))
}

async fn receive(
    State(tx): State<mpsc::Sender<Incoming>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(session): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let origin = headers
        .get(ORIGIN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("http://{peer}"));
    let event = event_from_request(&method, &uri, &headers, &body, &origin);
    let (reply, answer) = oneshot::channel();
    if tx
        .send(Incoming {
            session,
            event,
            reply,
        })
        .await
        .is_err()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match answer.await {
        Ok(true) => StatusCode::OK,
        Ok(false) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Builds the external event for an HTTP request: `_scxmleventname` (body
/// form field or query parameter) names it, else `HTTP.<METHOD>`; other form
/// fields become `_event.data`, a non-form body becomes data as text (or
/// JSON); `_event.raw` is the whole request as text.
pub fn event_from_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    origin: &str,
) -> Event {
    let body_text = String::from_utf8_lossy(body).into_owned();
    let is_form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let mut name: Option<String> = None;
    let mut fields = Map::new();
    let query = uri.query().unwrap_or_default();
    let form_body = if is_form { body_text.as_str() } else { "" };
    for (k, v) in
        form_urlencoded::parse(query.as_bytes()).chain(form_urlencoded::parse(form_body.as_bytes()))
    {
        if k == "_scxmleventname" {
            name = Some(v.into_owned());
        } else {
            fields.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    let data = if !fields.is_empty() {
        Some(Value::Object(fields))
    } else if !is_form && !body_text.is_empty() {
        Some(serde_json::from_str(&body_text).unwrap_or(Value::String(body_text.clone())))
    } else {
        None
    };
    let mut raw = format!("{method} {uri} HTTP/1.1\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or_default()));
    }
    raw.push_str("\r\n");
    raw.push_str(&body_text);
    let mut event = Event::new(
        name.filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("HTTP.{method}")),
        EventKind::External,
    );
    event.data = data;
    event.raw = Some(raw.into());
    event.origin = Some(origin.into());
    event.origintype = Some(BASICHTTP_TYPE.into());
    event
}

/// How an event travels as an HTTP POST.
pub struct Encoded {
    /// Query string (without `?`), when the name cannot go in the body.
    pub query: Option<String>,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// Encodes an event for POSTing: params and namelist (an object in
/// `data`) as form fields with `_scxmleventname`; other `<content>` as a
/// percent-encoded text body with the name in the query string.
pub fn encode(event: &Event) -> Encoded {
    match &event.data {
        None | Some(Value::Object(_)) => {
            let mut form = form_urlencoded::Serializer::new(String::new());
            if !event.name.is_empty() {
                form.append_pair("_scxmleventname", &event.name);
            }
            if let Some(Value::Object(fields)) = &event.data {
                for (k, v) in fields {
                    match v {
                        Value::String(s) => form.append_pair(k, s),
                        other => form.append_pair(k, &other.to_string()),
                    };
                }
            }
            Encoded {
                query: None,
                content_type: "application/x-www-form-urlencoded",
                body: form.finish(),
            }
        }
        Some(other) => {
            let text = match other {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let query = (!event.name.is_empty()).then(|| {
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("_scxmleventname", &event.name)
                    .finish()
            });
            Encoded {
                query,
                content_type: "text/plain; charset=utf-8",
                body: percent_encoding::utf8_percent_encode(
                    &text,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string(),
            }
        }
    }
}

/// The event a session receives when it POSTs to its own location: built
/// exactly as the listener would build it, but queued at once (as a send to
/// `#_scxml_<own id>` is), without a network round trip.
pub fn loopback_event(event: &Event, location: &str) -> Event {
    let enc = encode(event);
    let path = location
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/");
    let target = match &enc.query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let uri: Uri = target.parse().unwrap_or_default();
    let mut headers = HeaderMap::new();
    if let Ok(v) = enc.content_type.parse() {
        headers.insert(axum::http::header::CONTENT_TYPE, v);
    }
    if let Some(host) = location
        .split_once("://")
        .map(|(_, r)| r.split('/').next().unwrap_or(r))
        && let Ok(v) = host.parse()
    {
        headers.insert(axum::http::header::HOST, v);
    }
    let mut ev = event_from_request(&Method::POST, &uri, &headers, enc.body.as_bytes(), location);
    ev.sendid = event.sendid.clone();
    ev
}

/// Posts events to Basic HTTP targets; failures come back as
/// `error.communication` events for the sending session.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    listener_base: Option<Arc<str>>,
    failures: mpsc::Sender<(String, Event)>,
    target_filter: Option<TargetFilter>,
    /// The `Authorization` header value sent with posts to the listener's
    /// own URLs (the server's operator credential).
    own_authorization: Option<Arc<str>>,
}

/// Decides whether a Basic HTTP target URL may be posted to.
pub type TargetFilter = crate::io::http::UrlCheck;

impl Client {
    /// A client; `listener_base` fills the origin header of what it sends.
    pub fn new(listener_base: Option<String>, failures: mpsc::Sender<(String, Event)>) -> Client {
        let http = crate::io::http::http_client(std::time::Duration::from_secs(30));
        Client {
            http,
            listener_base: listener_base.map(Arc::from),
            failures,
            target_filter: None,
            own_authorization: None,
        }
    }

    /// Sends `authorization` (an `Authorization` header value) with every
    /// post to a URL under the listener's own base, so sessions reach the
    /// sessions of their own server through its guarded Basic HTTP route.
    pub fn with_own_authorization(mut self, authorization: String) -> Client {
        self.own_authorization = Some(Arc::from(authorization));
        self
    }

    /// Refuses targets `filter` rejects (a server's URL allow-list).
    pub fn with_target_filter(mut self, filter: TargetFilter) -> Client {
        // Redirect hops pass the same filter (a 307 would replay the event
        // to wherever it points).
        self.http = crate::io::http::http_client_checked(
            std::time::Duration::from_secs(30),
            filter.clone(),
        );
        self.target_filter = Some(filter);
        self
    }

    /// Validates the target and starts the POST in the background.
    pub fn send(&self, from_session: &str, outbound: Outbound) -> Result<(), DispatchError> {
        let url = outbound.target.clone();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(DispatchError(format!(
                "basic HTTP target must be an http(s) URL, not '{url}'"
            )));
        }
        if let Some(filter) = &self.target_filter {
            filter(&url).map_err(DispatchError)?;
        }
        let event = outbound.event;
        let enc = encode(&event);
        let full_url = match &enc.query {
            Some(q) => format!("{url}{}{q}", if url.contains('?') { '&' } else { '?' }),
            None => url.clone(),
        };
        let mut request = self
            .http
            .post(&full_url)
            .header("content-type", enc.content_type)
            .body(enc.body);
        if let Some(base) = &self.listener_base {
            request = request.header(ORIGIN_HEADER, format!("{base}{from_session}"));
            if let Some(auth) = &self.own_authorization
                && url.starts_with(&**base)
            {
                request = request.header("authorization", &**auth);
            }
        }
        let failures = self.failures.clone();
        let from = from_session.to_string();
        let sendid = event.sendid.clone();
        tokio::spawn(async move {
            let outcome = request.send().await;
            let problem = match outcome {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("{url} answered {}", r.status())),
                Err(e) => Some(format!("POST {url} failed: {e}")),
            };
            if let Some(message) = problem {
                let mut ev = Event::new("error.communication", EventKind::Platform);
                ev.sendid = sendid;
                ev.data = Some(serde_json::json!({ "message": message }));
                let _ = failures.send((from, ev)).await;
            }
        });
        Ok(())
    }
}
