//! Fetches the text behind a `src` URI, one loader for `<data>`,
//! `<script>` and `<invoke>`: `file:` URIs and plain paths (relative to the
//! referring document's directory) and `http(s)://` URLs (reqwest).

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

/// How long an HTTP fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves `uri` against `base`, the location (path or URL) of the
/// document that refers to it. Absolute URIs and paths come back as they are.
pub fn resolve(uri: &str, base: Option<&str>) -> String {
    let uri = uri.trim();
    // `file:name` is a relative path in a URI's clothing.
    let uri = match uri.strip_prefix("file:") {
        Some(rest) if !rest.starts_with('/') => rest,
        _ => uri,
    };
    if has_scheme(uri) || Path::new(uri).is_absolute() {
        return uri.to_string();
    }
    let Some(base) = base else {
        return uri.to_string();
    };
    if is_http(base) {
        return reqwest::Url::parse(base)
            .and_then(|b| b.join(uri))
            .map(|u| u.to_string())
            .unwrap_or_else(|_| uri.to_string());
    }
    let base_path = base
        .strip_prefix("file://")
        .or_else(|| base.strip_prefix("file:"))
        .unwrap_or(base);
    match Path::new(base_path).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(uri).display().to_string(),
        _ => uri.to_string(),
    }
}

/// Whether `uri` starts with a scheme such as `http:` or `file:` (a
/// one-letter "scheme" is a Windows drive, not a scheme).
pub fn has_scheme(uri: &str) -> bool {
    match uri.find(':') {
        Some(i) if i > 1 => uri[..i]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')),
        _ => false,
    }
}

/// The filesystem path a `file:` URI or plain path names; `None` for other
/// schemes.
pub fn file_path(uri: &str) -> Option<PathBuf> {
    if let Some(rest) = uri.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    if let Some(rest) = uri.strip_prefix("file:") {
        return Some(PathBuf::from(rest));
    }
    (!has_scheme(uri)).then(|| PathBuf::from(uri))
}

/// Whether the URI is fetched over HTTP.
pub fn is_http(uri: &str) -> bool {
    uri.starts_with("http://") || uri.starts_with("https://")
}

/// An HTTP client with the process's TLS provider installed.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    static TLS: Once = Once::new();
    TLS.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// Reads the text a `src` attribute names, relative to `base` (the
/// referring document's location); the error says why it could not.
pub fn load_text(uri: &str, base: Option<&str>) -> Result<String, String> {
    let resolved = resolve(uri, base);
    if is_http(&resolved) {
        return fetch_http(&resolved);
    }
    let path = file_path(&resolved)
        .ok_or_else(|| format!("cannot fetch '{uri}': unsupported URI scheme"))?;
    std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot fetch '{uri}' ({}): {e}", path.display()))
}

/// GETs a URL from synchronous code. It runs on a thread of its own so that
/// it works whether or not the caller is inside an async runtime.
fn fetch_http(url: &str) -> Result<String, String> {
    let url = url.to_string();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let response = http_client(FETCH_TIMEOUT)
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("cannot fetch '{url}': {e}"))?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("cannot fetch '{url}': HTTP {status}"));
            }
            response
                .text()
                .await
                .map_err(|e| format!("cannot fetch '{url}': {e}"))
        })
    });
    worker
        .join()
        .unwrap_or_else(|_| Err("the fetch thread failed".into()))
}
