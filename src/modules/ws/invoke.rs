//! `<ws:invoke>`: a web-service request answered by the simulator.
//! Attributes: `srcexpr` (or a literal `src`) giving the URL, `method`
//! (get, post, put, delete, patch; default get), `timeout` (seconds),
//! `requestid` (a location); `<param>` children are sent as the request's
//! parameters and echoed back as `params`. The first
//! `[[platform.ws.rules]]` rule matching the method and URL answers after
//! its `delay_ms`: `ws.invoke.done` with `requestid`, `status`, `content`
//! and `params`, or `error.ws.invoke` with the rule's `error` and
//! `message`. No matching rule is `notfound`; a delay beyond `timeout` is
//! `timeout`; a malformed attribute is `invalidattribute`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::settings::WsSettings;
use crate::modules::{
    Failure, attr, checked_request, eval_checked, eval_params, invalid_attribute, seconds_value,
    value_text,
};
use crate::server::ServerHandles;

/// The `<ws:invoke>` handler.
pub struct Invoke(pub Arc<ServerHandles>, pub Arc<WsSettings>);

const TAG: &str = "ws:invoke";
const METHODS: &[&str] = &["get", "post", "put", "delete", "patch", "head"];

struct Call {
    url: String,
    method: String,
    timeout_ms: Option<u64>,
    params: Map<String, Value>,
}

impl CustomActionHandler for Invoke {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let settings = self.1.clone();
        checked_request(
            scope,
            action,
            &self.0.sessions,
            "ws.invoke",
            |scope| {
                let url = match eval_checked(scope, TAG, "srcexpr", attr(action, "srcexpr"))? {
                    Some(v) if !v.is_null() => value_text(&v),
                    _ => attr(action, "src").map(str::to_string).ok_or_else(|| {
                        Failure::new("invalidattribute", "ws:invoke needs 'srcexpr' or 'src'")
                    })?,
                };
                let method = match attr(action, "method") {
                    None => "get".to_string(),
                    Some(raw) if METHODS.iter().any(|m| m.eq_ignore_ascii_case(raw.trim())) => {
                        raw.trim().to_ascii_lowercase()
                    }
                    Some(raw) => {
                        let v =
                            eval_checked(scope, TAG, "method", Some(raw))?.unwrap_or(Value::Null);
                        let m = value_text(&v).to_ascii_lowercase();
                        if !METHODS.contains(&m.as_str()) {
                            return Err(invalid_attribute(TAG, "method", &v, "an HTTP method"));
                        }
                        m
                    }
                };
                let timeout_ms = match eval_checked(scope, TAG, "timeout", attr(action, "timeout"))?
                {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(seconds_value(&v).ok_or_else(|| {
                        invalid_attribute(TAG, "timeout", &v, "a number of seconds")
                    })?),
                };
                let params = eval_params(scope, action)
                    .map_err(|e| Failure::new("invalidattribute", e.to_string()))?;
                let mut data = Map::new();
                data.insert("url".into(), Value::String(url.clone()));
                data.insert("method".into(), Value::String(method.clone()));
                Ok((
                    data,
                    Call {
                        url,
                        method,
                        timeout_ms,
                        params,
                    },
                ))
            },
            move |_requestid, call| async move {
                let rule = super::find_rule(&settings, &call.method, &call.url)
                    .cloned()
                    .ok_or_else(|| {
                        Failure::new(
                            "notfound",
                            format!(
                                "no [[platform.ws.rules]] rule answers {} {}",
                                call.method.to_ascii_uppercase(),
                                call.url
                            ),
                        )
                    })?;
                if let Some(limit) = call.timeout_ms
                    && rule.delay_ms > limit
                {
                    tokio::time::sleep(Duration::from_millis(limit)).await;
                    return Err(Failure::new(
                        "timeout",
                        format!("{}: no answer within {} s", call.url, limit as f64 / 1000.0),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(rule.delay_ms)).await;
                if let Some(code) = &rule.error {
                    return Err(Failure::new(
                        code.clone(),
                        rule.message
                            .clone()
                            .unwrap_or_else(|| format!("{}: {code}", call.url)),
                    ));
                }
                let mut out = Map::new();
                out.insert("status".into(), Value::from(rule.status));
                out.insert("content".into(), rule.content.clone());
                out.insert("params".into(), Value::Object(call.params));
                Ok(out)
            },
        )
    }
}
