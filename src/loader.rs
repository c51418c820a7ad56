//! Fetches the text behind a `src` URI, one loader for `<data>`,
//! `<script>` and `<invoke>`: `file:` URIs and plain paths (relative to the
//! referring document's directory) and `http(s)://` URLs (reqwest).

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

/// How long an HTTP fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves `uri` against `base_dir` to a filesystem path, when it names one.
pub fn resolve_path(uri: &str, base_dir: Option<&Path>) -> Option<PathBuf> {
    let rest = if let Some(r) = uri.strip_prefix("file://") {
        r
    } else if let Some(r) = uri.strip_prefix("file:") {
        r
    } else if is_http(uri) || uri.contains("://") {
        return None;
    } else {
        uri
    };
    let path = PathBuf::from(rest);
    if path.is_absolute() {
        Some(path)
    } else {
        Some(base_dir.map(|b| b.join(&path)).unwrap_or(path))
    }
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

/// Reads the text a `src` attribute names; the error says why it could not.
pub fn load_text(uri: &str, base_dir: Option<&Path>) -> Result<String, String> {
    if is_http(uri) {
        return fetch_http(uri);
    }
    let path = resolve_path(uri, base_dir)
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
