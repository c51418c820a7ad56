//! URI arithmetic for `src` values, without any I/O: resolving a
//! reference against the location (path or URL) of the document that holds
//! it, and telling `file:` paths from `http(s)://` URLs. The host's loader
//! fetches what these name.

use std::path::{Path, PathBuf};

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
