//! A typed client for the server's APIs: the ORS session API
//! (`/scxml/...`), the GMS callback and chat APIs (`/genesys/1/...`) and
//! CometD (`/genesys/cometd`). Every call returns the status and the parsed
//! JSON body as a [`Reply`]; the client talks either HTTP to a socket or
//! straight to an in-process router (`tower::ServiceExt::oneshot`).

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use serde_json::Value;
use tower::ServiceExt;

/// A response: status, content type and body (parsed JSON; a body that is
/// not JSON is kept as a JSON string, unless the client requires JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The `content-type` header ("" when absent).
    pub content_type: String,
    /// The parsed body.
    pub body: Value,
    /// Every response header, names in lowercase.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// The first value of header `name` (lowercase), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
enum Transport {
    Http {
        client: reqwest::Client,
        base: String,
    },
    Router(axum::Router),
}

/// A client of one server; cheap to clone.
#[derive(Clone)]
pub struct Api {
    transport: Transport,
    token: Option<String>,
    basic: Option<(String, String)>,
    gms_user: Option<String>,
    require_json: bool,
    /// More headers every request carries.
    extra: Vec<(String, String)>,
}

/// The `transcriptToShow` entries of a Chat API v1 reply
/// (`[event, nickname, text, partyId, partyType]` tuples).
pub fn transcript(reply: &Value) -> Vec<Value> {
    reply["transcriptToShow"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether a Chat API v1 reply shows an entry of this event and party type
/// (and text, when given).
pub fn has_entry(reply: &Value, event: &str, party_type: &str, text: Option<&str>) -> bool {
    transcript(reply).iter().any(|t| {
        t[0] == event && t[4] == party_type && text.is_none_or(|x| t[2].as_str() == Some(x))
    })
}

/// A plain `reqwest` client (30 s timeout) that sends
/// `Authorization: Bearer <token>` with every request.
pub fn bearer_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("a token"),
    );
    ors::io::http::install_tls_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

/// `POST url` with a form body, for tests that kill or fill the server
/// under load, where no answer is an outcome too: the status and the
/// parsed body (a body that is not JSON as a string), or why nothing came
/// back within `timeout`.
pub async fn post_form(
    client: &reqwest::Client,
    url: &str,
    pairs: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, Value), String> {
    let r = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(pairs))
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// [`post_form`] where only a 2xx answer is `Ok` (its body); any other
/// status is an `Err` with the status and body.
pub async fn post_form_ok(
    client: &reqwest::Client,
    url: &str,
    pairs: &[(&str, &str)],
    timeout: Duration,
) -> Result<Value, String> {
    match post_form(client, url, pairs, timeout).await? {
        (200..=299, body) => Ok(body),
        (status, body) => Err(format!("{status}: {body}")),
    }
}

/// Form-encodes `pairs` (`application/x-www-form-urlencoded`).
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

impl Api {
    /// A client of the server at `base` (`http://host:port`), over HTTP
    /// with a 30 s request timeout.
    pub fn new(base: &str) -> Api {
        Api {
            transport: Transport::Http {
                client: ors::io::http::http_client(Duration::from_secs(30)),
                base: base.trim_end_matches('/').to_string(),
            },
            token: None,
            basic: None,
            gms_user: None,
            require_json: false,
            extra: Vec::new(),
        }
    }

    /// A client of the server at `base` whose connections leave from
    /// `local` (another loopback address, such as 127.0.0.2, is another
    /// client to the server's per-address limits).
    pub fn from_address(base: &str, local: std::net::IpAddr) -> Api {
        ors::io::http::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .local_address(local)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        Api {
            transport: Transport::Http {
                client,
                base: base.trim_end_matches('/').to_string(),
            },
            token: None,
            basic: None,
            gms_user: None,
            require_json: false,
            extra: Vec::new(),
        }
    }

    /// A client that hands every request to `router` in process.
    pub fn in_process(router: axum::Router) -> Api {
        Api {
            transport: Transport::Router(router),
            token: None,
            basic: None,
            gms_user: None,
            require_json: false,
            extra: Vec::new(),
        }
    }

    /// The same client sending `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: Option<String>) -> Api {
        self.token = token;
        self
    }

    /// The same client sending HTTP Basic credentials (instead of any
    /// bearer token).
    pub fn with_basic(mut self, user: &str, password: &str) -> Api {
        self.basic = Some((user.to_string(), password.to_string()));
        self
    }

    /// The same client sending a `gms_user` header (GMS and CometD).
    pub fn with_gms_user(mut self, user: &str) -> Api {
        self.gms_user = Some(user.to_string());
        self
    }

    /// The same client sending header `name: value` with every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Api {
        self.extra.push((name.to_string(), value.to_string()));
        self
    }

    /// The same client failing the test on any reply that is not JSON.
    pub fn requiring_json(mut self) -> Api {
        self.require_json = true;
        self
    }

    /// `http://host:port` of the server (`""` in process).
    pub fn base(&self) -> &str {
        match &self.transport {
            Transport::Http { base, .. } => base,
            Transport::Router(_) => "",
        }
    }

    /// Sends one request; `content_type` and `body` go together.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: String,
    ) -> Reply {
        let mut headers: Vec<(HeaderName, String)> = Vec::new();
        if let Some(t) = content_type {
            headers.push((axum::http::header::CONTENT_TYPE, t.to_string()));
        }
        if let Some((user, password)) = &self.basic {
            use base64::Engine as _;
            let raw = format!("{user}:{password}");
            headers.push((
                axum::http::header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ),
            ));
        } else if let Some(t) = &self.token {
            headers.push((axum::http::header::AUTHORIZATION, format!("Bearer {t}")));
        }
        if let Some(u) = &self.gms_user {
            headers.push((HeaderName::from_static("gms_user"), u.clone()));
        }
        for (name, value) in &self.extra {
            headers.push((
                HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value.clone(),
            ));
        }
        let (status, content_type, headers, text) = match &self.transport {
            Transport::Http { client, base } => {
                let mut request = client.request(method, format!("{base}{path}"));
                for (k, v) in headers {
                    request = request.header(k, v);
                }
                let response = request.body(body).send().await.expect("request sent");
                let status = response.status().as_u16();
                let content_type = header_text(response.headers().get("content-type"));
                let headers = header_list(response.headers());
                (
                    status,
                    content_type,
                    headers,
                    response.text().await.expect("body"),
                )
            }
            Transport::Router(router) => {
                let mut request = axum::http::Request::builder().method(method).uri(path);
                for (k, v) in headers {
                    request = request.header(k, v);
                }
                let request = request
                    .body(axum::body::Body::from(body))
                    .expect("a well-formed request");
                let response = router
                    .clone()
                    .oneshot(request)
                    .await
                    .expect("the router answers");
                let status = response.status().as_u16();
                let content_type = header_text(response.headers().get("content-type"));
                let headers = header_list(response.headers());
                let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
                    .await
                    .expect("body");
                (
                    status,
                    content_type,
                    headers,
                    String::from_utf8_lossy(&bytes).into_owned(),
                )
            }
        };
        let body = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) if self.require_json => {
                panic!("reply is not JSON (status {status}): {text}")
            }
            Err(_) => Value::String(text),
        };
        Reply {
            status,
            content_type,
            body,
            headers,
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, String::new()).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None, String::new()).await
    }

    /// `POST path` with a form body.
    pub async fn form(&self, path: &str, pairs: &[(&str, &str)]) -> Reply {
        self.call(
            Method::POST,
            path,
            Some("application/x-www-form-urlencoded"),
            form_body(pairs),
        )
        .await
    }

    /// `POST path` with a JSON body.
    pub async fn json(&self, path: &str, body: &Value) -> Reply {
        self.call(
            Method::POST,
            path,
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    // --- ORS session API -------------------------------------------------

    /// `POST /scxml/session/start` with `pairs` (`src`, `_persist`, ...).
    pub async fn start(&self, pairs: &[(&str, &str)]) -> Reply {
        self.form("/scxml/session/start", pairs).await
    }

    /// Starts a session (asserting 200) and returns its id.
    pub async fn start_session(&self, pairs: &[(&str, &str)]) -> String {
        let r = self.start(pairs).await;
        assert_eq!(r.status, 200, "start failed: {}", r.body);
        r.body["sessionid"].as_str().expect("sessionid").to_string()
    }

    /// `POST /scxml/session/{id}/event/{name}` with `pairs` as event data.
    pub async fn event(&self, id: &str, name: &str, pairs: &[(&str, &str)]) -> Reply {
        self.form(&format!("/scxml/session/{id}/event/{name}"), pairs)
            .await
    }

    /// Sends an event and asserts it was acknowledged (200).
    pub async fn event_ok(&self, id: &str, name: &str) {
        let r = self.event(id, name, &[]).await;
        assert_eq!(r.status, 200, "event {name} to {id}: {}", r.body);
    }

    /// `POST /scxml/session/{id}/request/{name}` with `pairs`.
    pub async fn request(&self, id: &str, name: &str, pairs: &[(&str, &str)]) -> Reply {
        self.form(&format!("/scxml/session/{id}/request/{name}"), pairs)
            .await
    }

    /// `GET /scxml/session/{id}/query`.
    pub async fn query(&self, id: &str) -> Reply {
        self.get(&format!("/scxml/session/{id}/query")).await
    }

    /// Queries a session, asserting 200; the body.
    pub async fn query_ok(&self, id: &str) -> Value {
        let r = self.query(id).await;
        assert_eq!(r.status, 200, "query {id} failed: {}", r.body);
        r.body
    }

    /// `POST /scxml/session/{id}/terminate`.
    pub async fn terminate(&self, id: &str) -> Reply {
        self.form(&format!("/scxml/session/{id}/terminate"), &[])
            .await
    }

    /// `GET /scxml/sessions?<query>` (`query` without the `?`, may be "").
    pub async fn list(&self, query: &str) -> Reply {
        if query.is_empty() {
            self.get("/scxml/sessions").await
        } else {
            self.get(&format!("/scxml/sessions?{query}")).await
        }
    }

    /// `POST /basichttp/{id}` with `pairs` (a Basic HTTP event).
    pub async fn basichttp(&self, id: &str, pairs: &[(&str, &str)]) -> Reply {
        self.form(&format!("/basichttp/{id}"), pairs).await
    }

    /// The value of the first `/metrics` line starting with `line_start`
    /// (a metric name with its labels); fails if there is none.
    pub async fn metric(&self, line_start: &str) -> u64 {
        let r = self.get("/metrics").await;
        let text = r.body.as_str().unwrap_or_default().to_string();
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
    }

    // --- GMS callback API ------------------------------------------------

    /// `POST /genesys/1/service/callback/{service}` with a form.
    pub async fn callback_create(&self, service: &str, pairs: &[(&str, &str)]) -> Reply {
        self.form(&format!("/genesys/1/service/callback/{service}"), pairs)
            .await
    }

    /// `GET /genesys/1/service/callback/{service}?<query>`.
    pub async fn callback_query(&self, service: &str, query: &str) -> Reply {
        self.get(&format!("/genesys/1/service/callback/{service}?{query}"))
            .await
    }

    /// `GET /genesys/1/service/callback?<query>` (any service).
    pub async fn callback_query_any(&self, query: &str) -> Reply {
        self.get(&format!("/genesys/1/service/callback?{query}"))
            .await
    }

    /// Callback `id`'s whole record (`GET /genesys/1/service/callback?_id=`),
    /// `Null` when there is none for this client.
    pub async fn callback_record(&self, id: &str) -> Value {
        self.callback_query_any(&format!("_id={id}")).await.body[0].clone()
    }

    /// Waits (at most 20 s) until callback `id`'s record satisfies `done`,
    /// and returns it; panics with `what` and the last record otherwise.
    pub async fn wait_callback(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let done = &done;
        super::eventually(
            &format!("callback {id}: {what}"),
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async move {
                let record = self.callback_record(id).await;
                if done(&record) {
                    Ok(record)
                } else {
                    Err(record)
                }
            },
        )
        .await
    }

    /// Waits (at most 20 s) until callback `id` is in `state`; returns its
    /// record.
    pub async fn wait_callback_state(&self, id: &str, state: &str) -> Value {
        self.wait_callback(id, &format!("never became {state}"), |r| {
            r["_callback_state"] == state
        })
        .await
    }

    /// `GET /genesys/1/service/callback/{service}/{id}`.
    pub async fn callback_get(&self, service: &str, id: &str) -> Reply {
        self.get(&format!("/genesys/1/service/callback/{service}/{id}"))
            .await
    }

    /// `DELETE /genesys/1/service/callback/{service}/{id}`.
    pub async fn callback_cancel(&self, service: &str, id: &str) -> Reply {
        self.delete(&format!("/genesys/1/service/callback/{service}/{id}"))
            .await
    }

    // --- GMS chat API (v1) -----------------------------------------------

    /// `POST /genesys/1/service/{id}/ixn/chat` with a form.
    pub async fn chat_create(&self, id: &str, pairs: &[(&str, &str)]) -> Reply {
        self.form(&format!("/genesys/1/service/{id}/ixn/chat"), pairs)
            .await
    }

    /// `POST /genesys/1/service/{id}/ixn/chat/{operation}` with a form.
    pub async fn chat_operation(&self, id: &str, operation: &str, pairs: &[(&str, &str)]) -> Reply {
        self.form(
            &format!("/genesys/1/service/{id}/ixn/chat/{operation}"),
            pairs,
        )
        .await
    }

    /// `…/refresh` from `position`.
    pub async fn chat_refresh(&self, id: &str, position: &str) -> Reply {
        self.chat_operation(id, "refresh", &[("transcriptPosition", position)])
            .await
    }

    /// `…/send` with `message`.
    pub async fn chat_send(&self, id: &str, message: &str) -> Reply {
        self.chat_operation(id, "send", &[("message", message)])
            .await
    }

    /// `…/startTyping` or `…/stopTyping`.
    pub async fn chat_typing(&self, id: &str, started: bool) -> Reply {
        let op = if started { "startTyping" } else { "stopTyping" };
        self.chat_operation(id, op, &[]).await
    }

    /// `…/disconnect`.
    pub async fn chat_disconnect(&self, id: &str) -> Reply {
        self.chat_operation(id, "disconnect", &[]).await
    }

    // --- CometD (Bayeux over long polling) -------------------------------

    /// POSTs Bayeux `messages` to `/genesys/cometd{suffix}` (suffix "",
    /// "/handshake", "/connect", ...).
    pub async fn cometd(&self, suffix: &str, messages: &Value) -> Reply {
        self.json(&format!("/genesys/cometd{suffix}"), messages)
            .await
    }

    /// A `/meta/handshake`; the reply.
    pub async fn cometd_handshake(&self) -> Reply {
        self.cometd(
            "/handshake",
            &serde_json::json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
                "supportedConnectionTypes": ["long-polling"]}]),
        )
        .await
    }

    /// A `/meta/subscribe` of `client_id` to `subscription`.
    pub async fn cometd_subscribe(&self, client_id: &str, subscription: &str) -> Reply {
        self.cometd(
            "",
            &serde_json::json!({"channel": "/meta/subscribe", "clientId": client_id,
                "subscription": subscription, "id": "2"}),
        )
        .await
    }

    /// A long-polling `/meta/connect` of `client_id` (may be held by the
    /// server until a message or its connect timeout).
    pub async fn cometd_connect(&self, client_id: &str) -> Reply {
        self.cometd(
            "/connect",
            &serde_json::json!([{"channel": "/meta/connect", "clientId": client_id,
                "connectionType": "long-polling", "id": "3"}]),
        )
        .await
    }
}

fn header_list(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), header_text(Some(v))))
        .collect()
}

fn header_text(value: Option<&HeaderValue>) -> String {
    value
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}
