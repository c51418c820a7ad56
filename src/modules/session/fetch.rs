//! `<session:fetch>`: an HTTP request from a session. Attributes: `srcexpr`
//! (or a literal `src`), `method` (get, post, put, delete, patch, head),
//! `enctype` (form or json, for a body built from `<param>`s), `type`
//! (json or text; by default JSON when the response says so), `timeout`
//! (seconds), `headers` (an expression giving an object), `requestid` (a
//! location that receives the request id). The answer arrives as
//! `session.fetch.done` with `requestid`, `status`, `content` and `headers`,
//! or `error.session.fetch` with `requestid`, `error` and `message`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{Failure, eval_attr, eval_params, request, src_attr, value_text, word_attr};
use crate::server::ServerHandles;
use crate::server::metrics::Metrics;

/// The `<session:fetch>` handler.
pub struct Fetch(pub Arc<ServerHandles>);

struct Request {
    url: String,
    method: reqwest::Method,
    json_body: bool,
    want: Option<String>,
    timeout: Duration,
    headers: Vec<(String, String)>,
    params: Map<String, Value>,
}

impl CustomActionHandler for Fetch {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let ctx = self.0.clone();
        let url = src_attr(scope, action)?;
        let method = word_attr(
            scope,
            action,
            "method",
            &["get", "post", "put", "delete", "patch", "head"],
        )?
        .unwrap_or_else(|| "get".into());
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("method '{method}' is not an HTTP method"))?;
        let json_body = word_attr(scope, action, "enctype", &["form", "json"])?
            .is_some_and(|e| e.contains("json"));
        let want = word_attr(scope, action, "type", &["json", "text"])?;
        let timeout = match eval_attr(scope, action, "timeout")? {
            Some(v) => {
                let secs = match &v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                }
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| format!("timeout must be a positive number of seconds, not {v}"))?;
                Duration::from_secs_f64(secs.min(3600.0))
            }
            None => Duration::from_millis(ctx.config.limits.fetch_timeout_ms),
        };
        let headers = match eval_attr(scope, action, "headers")? {
            Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), value_text(v))).collect(),
            Some(Value::Null) | None => Vec::new(),
            Some(other) => return Err(format!("headers must be an object, not {other}").into()),
        };
        let params = eval_params(scope, action)?;
        let request_data = Request {
            url,
            method,
            json_body,
            want,
            timeout,
            headers,
            params,
        };
        let allowed = ctx
            .sessions
            .documents()
            .policy()
            .check(&request_data.url)
            .map_err(|e| e.to_string());
        let sessions = ctx.sessions.clone();
        request(
            scope,
            action,
            &sessions,
            "session.fetch",
            Map::new(),
            |_| async move {
                Metrics::inc(&ctx.metrics.fetches);
                match allowed {
                    Err(message) => Err(Failure::new("notallowed", message)),
                    Ok(()) => perform(
                        &crate::server::checked_http_client(
                            ctx.config.limits.fetch_timeout_ms,
                            ctx.sessions.documents().policy(),
                        ),
                        request_data,
                    )
                    .await
                    .map_err(|(code, message)| Failure::new(code, message)),
                }
            },
        )
    }
}

async fn perform(
    client: &reqwest::Client,
    request: Request,
) -> Result<Map<String, Value>, (&'static str, String)> {
    let Request {
        url,
        method,
        json_body,
        want,
        timeout,
        headers,
        params,
    } = request;
    // GET-like requests carry the parameters in the query string.
    let mut builder = if method == reqwest::Method::GET
        || method == reqwest::Method::HEAD
        || method == reqwest::Method::DELETE
    {
        let mut u = reqwest::Url::parse(&url).map_err(|e| ("badurl", format!("{url}: {e}")))?;
        if !params.is_empty() {
            let mut pairs = u.query_pairs_mut();
            for (k, v) in &params {
                pairs.append_pair(k, &value_text(v));
            }
        }
        client.request(method, u)
    } else if json_body {
        client
            .request(method, &url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(Value::Object(params).to_string())
    } else {
        let pairs: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.clone(), value_text(v)))
            .collect();
        client.request(method, &url).form(&pairs)
    };
    builder = builder.timeout(timeout);
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    let response = builder.send().await.map_err(|e| {
        if e.is_timeout() {
            (
                "timeout",
                format!("{url}: no answer within {} s", timeout.as_secs_f64()),
            )
        } else {
            ("remote", format!("{url}: {e}"))
        }
    })?;
    let status = response.status();
    let mut hints = Map::new();
    for (k, v) in response.headers() {
        if let Ok(v) = v.to_str() {
            hints.insert(k.as_str().to_string(), Value::String(v.to_string()));
        }
    }
    let is_json_reply = hints
        .get("content-type")
        .and_then(Value::as_str)
        .is_some_and(|ct| ct.contains("json"));
    let text = response
        .text()
        .await
        .map_err(|e| ("remote", format!("{url}: {e}")))?;
    if !status.is_success() {
        return Err((
            "http",
            format!("{url}: HTTP {status}: {}", truncate(&text, 200)),
        ));
    }
    let as_json = match want.as_deref() {
        Some(t) if t.contains("json") => true,
        Some(_) => false,
        None => is_json_reply,
    };
    let content = if as_json {
        serde_json::from_str(&text)
            .map_err(|e| ("badcontent", format!("{url}: the reply is not JSON: {e}")))?
    } else {
        Value::String(text)
    };
    let mut out = Map::new();
    out.insert("status".into(), Value::from(status.as_u16()));
    out.insert("content".into(), content);
    out.insert("headers".into(), Value::Object(hints));
    Ok(out)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
