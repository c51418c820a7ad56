//! Fetches the text behind a `src` URI (`file:` URIs and plain paths,
//! resolved against the referring document's directory).

use std::path::{Path, PathBuf};

/// Resolves `uri` against `base_dir` to a filesystem path, when it names one.
pub fn resolve_path(uri: &str, base_dir: Option<&Path>) -> Option<PathBuf> {
    let rest = if let Some(r) = uri.strip_prefix("file://") {
        r
    } else if let Some(r) = uri.strip_prefix("file:") {
        r
    } else if uri.contains("://") {
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

/// Reads the text a `src` attribute names; the error says why it could not.
pub fn load_text(uri: &str, base_dir: Option<&Path>) -> Result<String, String> {
    let path = resolve_path(uri, base_dir)
        .ok_or_else(|| format!("cannot fetch '{uri}': unsupported URI scheme"))?;
    std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot fetch '{uri}' ({}): {e}", path.display()))
}
