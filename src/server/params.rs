//! Request parameters from the query string and the body, whatever the
//! body's type: `application/x-www-form-urlencoded`, `multipart/form-data`
//! or `application/json` (an object). Every body is read under the
//! configured size limit first, so an oversized one is a JSON 413.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value};

use super::error::ApiError;

/// Parameters in the order they arrived: query first, then body (a body
/// value replaces a query value of the same name).
pub type Params = Map<String, Value>;

/// Splits a request into its head and its parameters (query string and
/// body, see [`read_params`]), the body read up to `limit` bytes.
pub async fn read_request(
    request: axum::extract::Request,
    limit: usize,
) -> Result<(axum::http::request::Parts, Params), ApiError> {
    let (parts, body) = request.into_parts();
    let params = read_params(parts.uri.query(), &parts.headers, body, limit).await?;
    Ok((parts, params))
}

/// Reads the query string and body of a request into [`Params`].
pub async fn read_params(
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Params, ApiError> {
    let mut params = Params::new();
    if let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            params.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body exceeds {limit} bytes"),
            )
        } else {
            ApiError::bad_parameter(format!("cannot read the request body: {e}"))
        }
    })?;
    if bytes.is_empty() {
        return Ok(params);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" | "text/json" => {
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::bad_parameter(format!("the JSON body is malformed: {e}")))?;
            if json_depth(&value) > MAX_JSON_DEPTH {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "json_too_deep",
                    format!("the JSON body nests deeper than {MAX_JSON_DEPTH} levels"),
                ));
            }
            match value {
                Value::Object(map) => params.extend(map),
                _ => return Err(ApiError::bad_parameter("the JSON body must be an object")),
            }
        }
        "multipart/form-data" => {
            let boundary = multer::parse_boundary(content_type).map_err(|e| {
                ApiError::bad_parameter(format!("multipart body without a boundary: {e}"))
            })?;
            let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
            let mut multipart = multer::Multipart::new(stream, boundary);
            loop {
                let field = multipart.next_field().await.map_err(|e| {
                    ApiError::bad_parameter(format!("the multipart body is malformed: {e}"))
                })?;
                let Some(field) = field else { break };
                let Some(name) = field.name().map(str::to_string) else {
                    continue;
                };
                let text = field.text().await.map_err(|e| {
                    ApiError::bad_parameter(format!("multipart field '{name}': {e}"))
                })?;
                params.insert(name, Value::String(text));
            }
        }
        "application/x-www-form-urlencoded" | "text/plain" | "" => {
            for (k, v) in form_urlencoded::parse(&bytes) {
                params.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("content type '{other}' is not accepted (use form, multipart or JSON)"),
            ));
        }
    }
    Ok(params)
}

/// How deep a JSON body may nest (the body object is level 1). Values go
/// into session data, which snapshots wrap in a few more levels; serde_json
/// refuses to read back more than 128, so a value accepted here always
/// survives hibernation and restarts.
pub const MAX_JSON_DEPTH: usize = 32;

/// The nesting depth of a JSON value (a scalar is 0, `{}` and `[]` are 1),
/// computed without recursion.
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Object(m) => Box::new(m.values()),
            Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

/// Takes a parameter out as a string (JSON numbers and booleans are
/// written out; other values are refused).
pub fn take_string(params: &mut Params, name: &str) -> Result<Option<String>, ApiError> {
    match params.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(ApiError::bad_parameter(format!(
            "'{name}' must be a string"
        ))),
    }
}

/// Whether reading a body failed because it was over the size limit.
fn is_length_limit(e: &axum::Error) -> bool {
    let mut current: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = current {
        if err.to_string().contains("length limit") {
            return true;
        }
        current = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_nesting_levels() {
        assert_eq!(json_depth(&serde_json::json!(1)), 0);
        assert_eq!(json_depth(&serde_json::json!({})), 1);
        assert_eq!(json_depth(&serde_json::json!({"a": [1, {"b": []}]})), 4);
        let mut deep = serde_json::json!(0);
        for _ in 0..100 {
            deep = serde_json::json!([deep]);
        }
        assert_eq!(json_depth(&deep), 100);
    }
}
