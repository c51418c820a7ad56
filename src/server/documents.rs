//! Where session documents come from: `src` values (`file:`, paths,
//! `http(s)://`, `script:<name>`, a fallback URL after a space), and the
//! cache of compiled documents shared by all sessions. The texts come
//! through the host's [`Loader`], which owns the URL allow-list, timeouts,
//! the body cap and revalidation.
//!
//! A cached HTTP document is used until its max-age (the response's
//! `Cache-Control: max-age`, else the configured default) runs out, then
//! revalidated with `If-None-Match` / `If-Modified-Since`; a file is
//! revalidated by its modification time and size on every use. A changed
//! document replaces the cache entry, so only new sessions see it: running
//! sessions keep the `Arc<Document>` they started with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::config::{Config, Security};
use super::error::ApiError;
use super::metrics::Metrics;
pub use crate::host::loader::UrlPolicy;
use crate::host::loader::{FetchError, Fetched, Freshness, Loader, LoaderConfig};
use crate::model::CustomActionClaims;
use crate::model::Document;
use crate::parser::{LoadError, LoadOptions};

/// The allow-list a configuration describes (directories made absolute);
/// see [`Security`].
pub fn url_policy(security: &Security) -> UrlPolicy {
    UrlPolicy::new(
        &security.allowed_schemes,
        &security.allowed_hosts,
        &security.allowed_dirs,
    )
}

/// A compiled document and the text it was compiled from (the loader hands
/// back the same `Arc` while the text is unchanged).
#[derive(Clone)]
struct Entry {
    text: Arc<str>,
    doc: Arc<Document>,
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
    loader: Loader,
    cache: Mutex<HashMap<String, Entry>>,
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
        let policy = url_policy(&config.security);
        let settings = &config.documents;
        let loader = Loader::new(LoaderConfig {
            policy: Some(policy.clone()),
            timeout: Duration::from_millis(settings.fetch_timeout_ms),
            max_body_bytes: settings.max_body_bytes,
            default_max_age: Duration::from_secs(settings.max_age_secs),
            max_age_cap: Duration::from_secs(settings.max_age_cap_secs),
            ..LoaderConfig::default()
        });
        Documents {
            policy,
            loader,
            config,
            cache: Mutex::new(HashMap::new()),
            custom_actions,
            metrics,
        }
    }

    /// The allow-list in force.
    pub fn policy(&self) -> &UrlPolicy {
        &self.policy
    }

    /// The loader documents and their references come through.
    pub fn loader(&self) -> &Loader {
        &self.loader
    }
    /// Resolves a `src` value: a script object, or one or two URLs (the
    /// second tried when the first cannot be fetched or compiled).
    pub async fn resolve(&self, src: &str) -> Result<ResolvedDocument, ApiError> {
        let src = src.trim();
        if src.is_empty() {
            return Err(ApiError::bad_parameter("'src' is empty"));
        }
        let (candidates, params, dialect) = if let Some(name) = src.strip_prefix("script:") {
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
            (c, script.params.clone(), script.dialect)
        } else {
            let parts: Vec<String> = src.split_whitespace().map(str::to_string).collect();
            if parts.len() > 2 {
                return Err(ApiError::bad_parameter(
                    "'src' takes at most two URLs (the second is the fallback)",
                ));
            }
            (parts, Map::new(), None)
        };
        let mut failures: Vec<Failure> = Vec::new();
        for url in &candidates {
            match self.load_as(url, dialect).await {
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

    /// Loads one URL through the loader and the compiled-document cache.
    async fn load(&self, url: &str) -> Result<Arc<Document>, Failure> {
        self.load_as(url, None).await
    }

    /// Loads one URL read as `dialect` (`None`: the server's default, else
    /// the document decides); documents read as different dialects are
    /// cached apart.
    async fn load_as(
        &self,
        url: &str,
        dialect: Option<crate::model::Dialect>,
    ) -> Result<Arc<Document>, Failure> {
        let url = url.trim();
        let fetched = self.loader.fetch(url).await.map_err(|e| failure(url, e))?;
        self.compiled(url, fetched, dialect).await
    }

    fn cached(&self, url: &str) -> Option<Entry> {
        self.cache.lock().ok()?.get(url).cloned()
    }

    /// The compiled document for a fetched text: the cached one while the
    /// text is unchanged, else compiled (its references fetched) and stored.
    async fn compiled(
        &self,
        url: &str,
        fetched: Fetched,
        dialect: Option<crate::model::Dialect>,
    ) -> Result<Arc<Document>, Failure> {
        let key = match dialect {
            Some(d) => format!("{d:?}|{url}"),
            None => url.to_string(),
        };
        if let Some(entry) = self.cached(&key)
            && Arc::ptr_eq(&entry.text, &fetched.text)
        {
            Metrics::inc(match fetched.freshness {
                Freshness::Revalidated => &self.metrics.document_cache_revalidated,
                _ => &self.metrics.document_cache_hits,
            });
            return Ok(entry.doc);
        }
        Metrics::inc(&self.metrics.document_cache_misses);
        let doc = self
            .build_as(&fetched.text, url, dialect)
            .await
            .map(Arc::new)
            .map_err(|e| Failure {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "document_invalid",
                message: e.to_string(),
            })?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                key,
                Entry {
                    text: fetched.text,
                    doc: doc.clone(),
                },
            );
        }
        Ok(doc)
    }

    /// Parses and validates a document from `location` (a URL, path or
    /// `stored:` name), fetching its references through the loader.
    pub async fn build(&self, text: &str, location: &str) -> Result<Document, LoadError> {
        self.build_as(text, location, None).await
    }

    /// [`Documents::build`] read as `dialect` (`None`: the server's
    /// `[documents] dialect`, else the document decides).
    pub async fn build_as(
        &self,
        text: &str,
        location: &str,
        dialect: Option<crate::model::Dialect>,
    ) -> Result<Document, LoadError> {
        let options = LoadOptions {
            custom_actions: &*self.custom_actions,
            dialect: dialect.or(self.config.documents.dialect),
        };
        self.loader
            .build_document(text, Some(location), &options)
            .await
    }

    /// An invoked child's document if it is at hand without waiting: cached
    /// and still fresh, or refused by the allow-list. `None` means
    /// [`Documents::load_child`] must fetch it.
    pub fn child_now(&self, url: &str) -> Option<Result<Arc<Document>, String>> {
        if let Err(e) = self.loader.check(url) {
            return Some(Err(e.to_string()));
        }
        let entry = self.cached(url)?;
        match self.loader.fetch_now(url)? {
            Ok(fetched) if Arc::ptr_eq(&entry.text, &fetched.text) => {
                Metrics::inc(&self.metrics.document_cache_hits);
                Some(Ok(entry.doc))
            }
            _ => None,
        }
    }

    /// Loads an invoked child's document (a task on the invoking worker's
    /// `LocalSet`); the error is a one-line reason.
    pub async fn load_child(&self, url: &str) -> Result<Arc<Document>, String> {
        self.load(url).await.map_err(|f| f.message)
    }
}

/// The API error a failed fetch of `url` answers with.
fn failure(url: &str, e: FetchError) -> Failure {
    let (status, code) = match &e {
        FetchError::NotAllowed { .. } => (StatusCode::FORBIDDEN, "url_not_allowed"),
        FetchError::NotFound { .. } => (StatusCode::NOT_FOUND, "document_not_found"),
        _ => (StatusCode::BAD_GATEWAY, "document_unavailable"),
    };
    Failure {
        status,
        code,
        message: match e {
            FetchError::NotAllowed { reason, .. } => format!("{url}: {reason}"),
            other => other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn policy(hosts: &[&str], dirs: &[PathBuf]) -> UrlPolicy {
        url_policy(&Security {
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
