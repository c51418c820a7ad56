//! Where session documents come from: `src` values (`file:`, paths,
//! `http(s)://`, `script:<name>`, a fallback URL after a space), the URL
//! allow-list, and the cache of compiled documents shared by all sessions.
//!
//! A cached HTTP document is used until its max-age (the response's
//! `Cache-Control: max-age`, else the configured default) runs out, then
//! revalidated with `If-None-Match` / `If-Modified-Since`; a file is
//! revalidated by its modification time and size on every use. A changed
//! document replaces the cache entry, so only new sessions see it: running
//! sessions keep the `Arc<Document>` they started with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::config::{Config, Security};
use super::error::ApiError;
use super::metrics::Metrics;
use crate::model::CustomActionClaims;
use crate::model::Document;
use crate::parser::{LoadOptions, parse_document, parse_document_from};

/// The URL allow-list; see [`Security`].
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    schemes: Vec<String>,
    hosts: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl UrlPolicy {
    /// The policy a configuration describes (directories made absolute).
    pub fn new(security: &Security) -> UrlPolicy {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let dirs = security
            .allowed_dirs
            .iter()
            .map(|d| {
                let d = if d.is_absolute() {
                    d.clone()
                } else {
                    cwd.join(d)
                };
                d.canonicalize().unwrap_or(d)
            })
            .collect();
        UrlPolicy {
            schemes: security
                .allowed_schemes
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            hosts: security
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            dirs,
        }
    }

    /// Whether a resolved URL or path may be read; the error says why not.
    pub fn check(&self, url: &str) -> Result<(), String> {
        if crate::loader::is_http(url) {
            let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL '{url}': {e}"))?;
            if !self.schemes.iter().any(|s| s == parsed.scheme()) {
                return Err(format!("scheme '{}' is not allowed", parsed.scheme()));
            }
            let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
            let allowed = self.hosts.iter().any(|pattern| {
                pattern == "*"
                    || *pattern == host
                    || pattern
                        .strip_prefix("*.")
                        .is_some_and(|domain| host.ends_with(&format!(".{domain}")))
            });
            if !allowed {
                return Err(format!("host '{host}' is not in the allow-list"));
            }
            return Ok(());
        }
        let Some(path) = crate::loader::file_path(url) else {
            let scheme = url.split(':').next().unwrap_or_default();
            return Err(format!("scheme '{scheme}' is not allowed"));
        };
        if !self.schemes.iter().any(|s| s == "file") {
            return Err("scheme 'file' is not allowed".into());
        }
        let path = absolute(&path);
        if self.dirs.iter().any(|d| path.starts_with(d)) {
            Ok(())
        } else {
            Err(format!(
                "'{}' is outside the allowed directories",
                path.display()
            ))
        }
    }
}

/// A path made absolute with symbolic links and `..` resolved as far as the
/// file system allows (the file itself may not exist).
fn absolute(path: &Path) -> PathBuf {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|p| p.join(name))
            .unwrap_or_else(|_| lexical_normalize(&path)),
        _ => lexical_normalize(&path),
    }
}

fn lexical_normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Runs synchronous work that may block, telling a multi-threaded runtime
/// to move its other tasks away first.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// How a cached entry is checked for change.
#[derive(Clone)]
enum Validator {
    File {
        modified: Option<SystemTime>,
        len: u64,
    },
    Http {
        etag: Option<String>,
        last_modified: Option<String>,
        checked: Instant,
        max_age: Duration,
    },
}

#[derive(Clone)]
struct Entry {
    doc: Arc<Document>,
    validator: Validator,
}

/// A document ready to start sessions with.
pub struct ResolvedDocument {
    /// The compiled document.
    pub doc: Arc<Document>,
    /// The URL or path it was loaded from (after any fallback).
    pub url: String,
    /// Parameters of the script object it was named by, if any.
    pub params: Map<String, Value>,
}

/// Why one candidate URL failed.
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// Loads and caches documents; see the module docs.
pub struct Documents {
    config: Arc<Config>,
    policy: UrlPolicy,
    cache: Mutex<HashMap<String, Entry>>,
    client: reqwest::Client,
    custom_actions: Arc<dyn CustomActionClaims + Send + Sync>,
    metrics: Arc<Metrics>,
}

impl Documents {
    /// A cache for `config`; `custom_actions` tells the parser which
    /// foreign elements have handlers.
    pub fn new(
        config: Arc<Config>,
        custom_actions: Arc<dyn CustomActionClaims + Send + Sync>,
        metrics: Arc<Metrics>,
    ) -> Documents {
        let timeout = Duration::from_millis(config.documents.fetch_timeout_ms);
        Documents {
            policy: UrlPolicy::new(&config.security),
            config,
            cache: Mutex::new(HashMap::new()),
            client: crate::loader::http_client(timeout),
            custom_actions,
            metrics,
        }
    }

    /// The allow-list in force.
    pub fn policy(&self) -> &UrlPolicy {
        &self.policy
    }

    /// Resolves a `src` value: a script object, or one or two URLs (the
    /// second tried when the first cannot be fetched or compiled).
    pub async fn resolve(&self, src: &str) -> Result<ResolvedDocument, ApiError> {
        let src = src.trim();
        if src.is_empty() {
            return Err(ApiError::bad_parameter("'src' is empty"));
        }
        let (candidates, params) = if let Some(name) = src.strip_prefix("script:") {
            let name = name.trim();
            let Some((script, spelled)) = self.config.script(name) else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "script_not_found",
                    format!("no script object '{name}' is configured"),
                ));
            };
            if let Some(spelled) = spelled {
                tracing::warn!(
                    requested = name,
                    configured = spelled,
                    "script object name matched only ignoring case"
                );
            }
            let mut c = vec![script.url.clone()];
            c.extend(
                script
                    .alternate_url
                    .clone()
                    .filter(|u| !u.trim().is_empty()),
            );
            (c, script.params.clone())
        } else {
            let parts: Vec<String> = src.split_whitespace().map(str::to_string).collect();
            if parts.len() > 2 {
                return Err(ApiError::bad_parameter(
                    "'src' takes at most two URLs (the second is the fallback)",
                ));
            }
            (parts, Map::new())
        };
        let mut failures: Vec<Failure> = Vec::new();
        for url in &candidates {
            match self.load(url).await {
                Ok(doc) => {
                    if !failures.is_empty() {
                        tracing::warn!(url = %candidates[0], fallback = %url, reason = %failures[0].message, "using the fallback document");
                    }
                    return Ok(ResolvedDocument {
                        doc,
                        url: url.clone(),
                        params,
                    });
                }
                Err(f) => failures.push(f),
            }
        }
        let first = failures.remove(0);
        let mut message = first.message;
        for f in failures {
            message.push_str("; fallback: ");
            message.push_str(&f.message);
        }
        Err(ApiError::new(first.status, first.code, message))
    }

    /// Loads one URL through the cache.
    async fn load(&self, url: &str) -> Result<Arc<Document>, Failure> {
        let url = url.trim();
        self.policy.check(url).map_err(|m| Failure {
            status: StatusCode::FORBIDDEN,
            code: "url_not_allowed",
            message: format!("{url}: {m}"),
        })?;
        if crate::loader::is_http(url) {
            self.load_http(url).await
        } else {
            let path = crate::loader::file_path(url).ok_or_else(|| Failure {
                status: StatusCode::BAD_REQUEST,
                code: "bad_parameter",
                message: format!("{url}: unsupported URL"),
            })?;
            self.load_file(url, &path)
        }
    }

    fn cached(&self, url: &str) -> Option<Entry> {
        self.cache.lock().ok()?.get(url).cloned()
    }

    fn store(&self, url: &str, entry: Entry) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(url.to_string(), entry);
        }
    }

    fn load_file(&self, url: &str, path: &Path) -> Result<Arc<Document>, Failure> {
        let meta = std::fs::metadata(path).map_err(|e| Failure {
            status: StatusCode::NOT_FOUND,
            code: "document_not_found",
            message: format!("{url}: {e}"),
        })?;
        let validator = Validator::File {
            modified: meta.modified().ok(),
            len: meta.len(),
        };
        if let Some(entry) = self.cached(url)
            && let Validator::File { modified, len } = &entry.validator
            && *modified == meta.modified().ok()
            && *len == meta.len()
        {
            Metrics::inc(&self.metrics.document_cache_hits);
            return Ok(entry.doc);
        }
        Metrics::inc(&self.metrics.document_cache_misses);
        let text = std::fs::read_to_string(path).map_err(|e| Failure {
            status: StatusCode::NOT_FOUND,
            code: "document_not_found",
            message: format!("{url}: {e}"),
        })?;
        let doc = self.compile(&text, Some(path), url)?;
        self.store(
            url,
            Entry {
                doc: doc.clone(),
                validator,
            },
        );
        Ok(doc)
    }

    async fn load_http(&self, url: &str) -> Result<Arc<Document>, Failure> {
        let cached = self.cached(url);
        let mut request = self.client.get(url);
        if let Some(Entry {
            doc,
            validator:
                Validator::Http {
                    etag,
                    last_modified,
                    checked,
                    max_age,
                },
        }) = &cached
        {
            if checked.elapsed() < *max_age {
                Metrics::inc(&self.metrics.document_cache_hits);
                return Ok(doc.clone());
            }
            if let Some(etag) = etag {
                request = request.header("If-None-Match", etag);
            }
            if let Some(lm) = last_modified {
                request = request.header("If-Modified-Since", lm);
            }
        }
        let unavailable = |message: String| Failure {
            status: StatusCode::BAD_GATEWAY,
            code: "document_unavailable",
            message,
        };
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(format!("{url}: {e}")))?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let cache_control = header("cache-control");
        let max_age = self.max_age(cache_control.as_deref());
        let etag = header("etag");
        let last_modified = header("last-modified");
        if status == reqwest::StatusCode::NOT_MODIFIED
            && let Some(entry) = cached
        {
            Metrics::inc(&self.metrics.document_cache_revalidated);
            let doc = entry.doc.clone();
            // A 304 without Cache-Control keeps the freshness stored before.
            let max_age = match (&cache_control, &entry.validator) {
                (None, Validator::Http { max_age, .. }) => *max_age,
                _ => max_age,
            };
            self.store(
                url,
                Entry {
                    doc: doc.clone(),
                    validator: Validator::Http {
                        etag: etag.or(match &entry.validator {
                            Validator::Http { etag, .. } => etag.clone(),
                            Validator::File { .. } => None,
                        }),
                        last_modified,
                        checked: Instant::now(),
                        max_age,
                    },
                },
            );
            return Ok(doc);
        }
        if !status.is_success() {
            return Err(Failure {
                status: if status == reqwest::StatusCode::NOT_FOUND {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_GATEWAY
                },
                code: if status == reqwest::StatusCode::NOT_FOUND {
                    "document_not_found"
                } else {
                    "document_unavailable"
                },
                message: format!("{url}: HTTP {status}"),
            });
        }
        Metrics::inc(&self.metrics.document_cache_misses);
        let text = response
            .text()
            .await
            .map_err(|e| unavailable(format!("{url}: {e}")))?;
        // Parsing may fetch `<data src>` / `<script src>` synchronously.
        let this_url = url.to_string();
        let doc = blocking(|| self.compile(&text, None, &this_url))?;
        self.store(
            url,
            Entry {
                doc: doc.clone(),
                validator: Validator::Http {
                    etag,
                    last_modified,
                    checked: Instant::now(),
                    max_age,
                },
            },
        );
        Ok(doc)
    }

    fn max_age(&self, cache_control: Option<&str>) -> Duration {
        let default = self.config.documents.max_age_secs;
        let cap = self.config.documents.max_age_cap_secs;
        let secs = match cache_control {
            Some(cc) => {
                let cc = cc.to_ascii_lowercase();
                if cc.contains("no-cache") || cc.contains("no-store") {
                    0
                } else {
                    cc.split(',')
                        .filter_map(|d| d.trim().strip_prefix("max-age="))
                        .find_map(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(default)
                }
            }
            None => default,
        };
        Duration::from_secs(secs.min(cap))
    }

    /// Parses and validates a document, checking every URI it loads.
    fn compile(
        &self,
        text: &str,
        path: Option<&Path>,
        url: &str,
    ) -> Result<Arc<Document>, Failure> {
        let filter = |u: &str| self.policy.check(u);
        let options = LoadOptions {
            custom_actions: &*self.custom_actions,
            uri_filter: Some(&filter),
        };
        let result = match path {
            Some(p) => parse_document(text, Some(p), &options),
            None => parse_document_from(text, url, &options),
        };
        result.map(Arc::new).map_err(|e| Failure {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "document_invalid",
            message: e.to_string(),
        })
    }

    /// Loads an invoked child's document from a worker thread (blocking;
    /// HTTP documents are cached without revalidation here).
    pub fn load_blocking(&self, url: &str) -> Result<Arc<Document>, String> {
        self.policy.check(url)?;
        if crate::loader::is_http(url) {
            if let Some(entry) = self.cached(url) {
                Metrics::inc(&self.metrics.document_cache_hits);
                return Ok(entry.doc);
            }
            let text = crate::loader::load_text(url, None)?;
            let doc = self.compile(&text, None, url).map_err(|f| f.message)?;
            self.store(
                url,
                Entry {
                    doc: doc.clone(),
                    validator: Validator::Http {
                        etag: None,
                        last_modified: None,
                        checked: Instant::now(),
                        max_age: Duration::from_secs(self.config.documents.max_age_secs),
                    },
                },
            );
            return Ok(doc);
        }
        let path =
            crate::loader::file_path(url).ok_or_else(|| format!("unsupported URL '{url}'"))?;
        self.load_file(url, &path).map_err(|f| f.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], dirs: &[PathBuf]) -> UrlPolicy {
        UrlPolicy::new(&Security {
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allowed_dirs: dirs.to_vec(),
            ..Security::default()
        })
    }

    #[test]
    fn hosts_match_exactly_or_by_domain() {
        let p = policy(&["docs.example.com", "*.corp.test"], &[]);
        assert!(p.check("http://docs.example.com/a.scxml").is_ok());
        assert!(p.check("https://a.b.corp.test/a.scxml").is_ok());
        assert!(p.check("http://corp.test.evil.org/a.scxml").is_err());
        assert!(p.check("http://evilcorp.test/a.scxml").is_err());
        assert!(p.check("gopher://docs.example.com/").is_err());
    }

    #[test]
    fn paths_cannot_leave_the_allowed_directories() {
        let root = std::env::temp_dir().join(format!("ors-policy-{}", std::process::id()));
        let inside = root.join("docs");
        std::fs::create_dir_all(&inside).unwrap();
        let p = policy(&["*"], std::slice::from_ref(&inside));
        assert!(
            p.check(&inside.join("a.scxml").display().to_string())
                .is_ok()
        );
        let escape = format!("{}/../secret.scxml", inside.display());
        assert!(p.check(&escape).is_err(), "{escape}");
        assert!(p.check(&format!("file:{escape}")).is_err());
        assert!(p.check("/etc/passwd").is_err());
        #[cfg(unix)]
        {
            let link = inside.join("link");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("/etc", &link).unwrap();
            assert!(p.check(&link.join("passwd").display().to_string()).is_err());
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
