//! The host's one loader: it fetches the texts behind `src` values (session
//! documents, `<data src>`, `<script src>`, `<invoke src>`) from `file:`
//! paths and `http(s)://` URLs, and owns everything about fetching: the URL
//! allow-list ([`UrlPolicy`], checked on the first URL and on every redirect
//! hop), timeouts, a cap on every body, and a text cache revalidated with
//! `If-None-Match` / `If-Modified-Since` (HTTP) or modification time and size
//! (files).
//!
//! The parser does no I/O: a host parses a document ([`Parsed`]), fetches its
//! references here ([`Loader::fetch_sources`]) and builds it. Everything that
//! can touch the network is `async`; [`Loader::fetch_now`] and
//! [`Loader::load_document_now`] answer at once from files and fresh cache
//! entries and say when the network would be needed.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use crate::io::http::http_client;
use crate::model::{Document, Position};
pub use crate::parser::uri::{file_path, has_scheme, is_http, resolve};
use crate::parser::{
    Diagnostic, LoadError, LoadOptions, Parsed, Reference, ReferenceKind, Sources, include,
};

/// How long one fetch (all its redirect hops) may take by default.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The default cap on a fetched body, in bytes (8 MiB).
pub const MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;

/// The default number of redirects one fetch follows.
pub const MAX_REDIRECTS: usize = 5;

/// The URL allow-list: which schemes, HTTP hosts and file directories may
/// be read. A server builds it from its `[security]` settings.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    schemes: Vec<String>,
    hosts: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl UrlPolicy {
    /// A policy allowing `schemes` (`file`, `http`, `https`), HTTP `hosts`
    /// (`*` any, `*.example.com` a domain, else an exact name) and files
    /// under `dirs` (relative ones are taken from the current directory).
    pub fn new(schemes: &[String], hosts: &[String], dirs: &[PathBuf]) -> UrlPolicy {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let dirs = dirs
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
            schemes: schemes.iter().map(|s| s.to_ascii_lowercase()).collect(),
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            dirs,
        }
    }

    /// Whether a resolved URL or path may be read; the error says why not.
    pub fn check(&self, url: &str) -> Result<(), PolicyError> {
        if is_http(url) {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| PolicyError::BadUrl(format!("bad URL '{url}': {e}")))?;
            return self.check_url(&parsed);
        }
        let Some(path) = file_path(url) else {
            let scheme = url.split(':').next().unwrap_or_default();
            return Err(PolicyError::Scheme(scheme.to_string()));
        };
        if !self.schemes.iter().any(|s| s == "file") {
            return Err(PolicyError::Scheme("file".into()));
        }
        let resolved = absolute(&path);
        if self.dirs.iter().any(|d| resolved.starts_with(d)) {
            Ok(())
        } else {
            // The answer names the path as given: where links lead is for
            // the log only.
            tracing::debug!(path = %path.display(), resolved = %resolved.display(),
                "file outside the allowed directories");
            Err(PolicyError::OutsideDirs(path))
        }
    }

    /// Whether a parsed HTTP(S) URL may be fetched.
    fn check_url(&self, url: &reqwest::Url) -> Result<(), PolicyError> {
        if !self.schemes.iter().any(|s| s == url.scheme()) {
            return Err(PolicyError::Scheme(url.scheme().to_string()));
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let allowed = self.hosts.iter().any(|pattern| {
            pattern == "*"
                || *pattern == host
                || pattern
                    .strip_prefix("*.")
                    .is_some_and(|domain| host.ends_with(&format!(".{domain}")))
        });
        if allowed {
            Ok(())
        } else {
            Err(PolicyError::Host(host))
        }
    }
}

/// Why the allow-list refuses a URL or path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not a URL that can be read (the text says why).
    #[error("{0}")]
    BadUrl(String),
    /// Its scheme is not in `security.allowed_schemes`.
    #[error("scheme '{0}' is not allowed")]
    Scheme(String),
    /// Its host matches no pattern of `security.allowed_hosts`.
    #[error("host '{0}' is not in the allow-list")]
    Host(String),
    /// The path, made absolute with its links resolved, is outside
    /// `security.allowed_dirs`; the error holds (and shows) the path as
    /// given, never where a link leads.
    #[error("'{}' is outside the allowed directories", .0.display())]
    OutsideDirs(PathBuf),
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

/// How a [`Loader`] fetches.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// The allow-list every URL and redirect hop must pass; `None` allows
    /// everything (the command line).
    pub policy: Option<UrlPolicy>,
    /// How long one fetch, redirects included, may take.
    pub timeout: Duration,
    /// The largest body accepted, in bytes; a larger one is refused
    /// without being read whole.
    pub max_body_bytes: u64,
    /// How many redirects one fetch follows.
    pub max_redirects: usize,
    /// How long a fetched HTTP text is used before it is revalidated, when
    /// its response has no `Cache-Control: max-age`.
    pub default_max_age: Duration,
    /// Upper bound on any `max-age` a server sends.
    pub max_age_cap: Duration,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            policy: None,
            timeout: FETCH_TIMEOUT,
            max_body_bytes: MAX_BODY_BYTES,
            max_redirects: MAX_REDIRECTS,
            default_max_age: Duration::from_secs(60),
            max_age_cap: Duration::from_secs(3600),
        }
    }
}

/// How a fetched text was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// From the cache, still fresh (HTTP max-age, or an unchanged file).
    Cached,
    /// From the cache after the server answered `304 Not Modified`.
    Revalidated,
    /// Read anew.
    Fetched,
}

/// A fetched text.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The text; the same `Arc` as long as the cache entry is unchanged.
    pub text: Arc<str>,
    /// How it was obtained.
    pub freshness: Freshness,
}

/// Why a fetch failed; `Display` gives a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The allow-list refused the URL or a redirect hop.
    #[error("cannot fetch '{url}': {reason}")]
    NotAllowed {
        /// The refused URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The file does not exist, or the server answered 404.
    #[error("cannot fetch '{url}': {reason}")]
    NotFound {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The body is larger than the configured cap.
    #[error("cannot fetch '{url}': the body is larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap in bytes.
        limit: u64,
    },
    /// Anything else: network errors, timeouts, other statuses, too many
    /// redirects, unsupported schemes.
    #[error("cannot fetch '{url}': {reason}")]
    Unavailable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

impl FetchError {
    /// The reason alone, without the URL.
    pub fn reason(&self) -> String {
        match self {
            FetchError::NotAllowed { reason, .. }
            | FetchError::NotFound { reason, .. }
            | FetchError::Unavailable { reason, .. } => reason.clone(),
            FetchError::TooLarge { limit, .. } => {
                format!("the body is larger than {limit} bytes")
            }
        }
    }
}

/// How a cached text is checked for change.
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
    text: Arc<str>,
    validator: Validator,
}

struct Inner {
    config: LoaderConfig,
    client: Result<reqwest::Client, String>,
    cache: Mutex<HashMap<String, Entry>>,
}

/// Fetches and caches texts; cheap to clone (clones share the cache). See
/// the module docs.
#[derive(Clone)]
pub struct Loader {
    inner: Arc<Inner>,
}

impl Default for Loader {
    fn default() -> Self {
        Loader::new(LoaderConfig::default())
    }
}

impl Loader {
    /// A loader with its own cache.
    pub fn new(config: LoaderConfig) -> Loader {
        let client = crate::io::http::http_client_no_redirects(config.timeout)
            .map_err(|e| format!("cannot build the HTTP client: {e}"));
        Loader {
            inner: Arc::new(Inner {
                config,
                client,
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &LoaderConfig {
        &self.inner.config
    }

    /// Whether the allow-list lets `uri` (resolved) be read.
    pub fn check(&self, uri: &str) -> Result<(), PolicyError> {
        match &self.inner.config.policy {
            Some(p) => p.check(uri),
            None => Ok(()),
        }
    }

    fn cached(&self, uri: &str) -> Option<Entry> {
        self.inner.cache.lock().ok()?.get(uri).cloned()
    }

    fn store(&self, uri: &str, entry: Entry) {
        if let Ok(mut cache) = self.inner.cache.lock() {
            cache.insert(uri.to_string(), entry);
        }
    }

    fn allowed(&self, uri: &str) -> Result<(), FetchError> {
        self.check(uri).map_err(|reason| FetchError::NotAllowed {
            url: uri.to_string(),
            reason: reason.to_string(),
        })
    }

    /// Fetches `uri` (resolved) if that needs no network: files, and HTTP
    /// texts whose cache entry is still fresh. `None` means only
    /// [`Loader::fetch`] can answer.
    pub fn fetch_now(&self, uri: &str) -> Option<Result<Fetched, FetchError>> {
        if let Err(e) = self.allowed(uri) {
            return Some(Err(e));
        }
        if is_http(uri) {
            let entry = self.cached(uri)?;
            return match entry.validator {
                Validator::Http {
                    checked, max_age, ..
                } if checked.elapsed() < max_age => Some(Ok(Fetched {
                    text: entry.text,
                    freshness: Freshness::Cached,
                })),
                _ => None,
            };
        }
        Some(self.read_file(uri))
    }

    /// Fetches `uri` (resolved) through the cache, after the allow-list.
    pub async fn fetch(&self, uri: &str) -> Result<Fetched, FetchError> {
        self.allowed(uri)?;
        if is_http(uri) {
            let timeout = self.inner.config.timeout;
            match tokio::time::timeout(timeout, self.fetch_http(uri)).await {
                Ok(r) => r,
                Err(_) => Err(FetchError::Unavailable {
                    url: uri.to_string(),
                    reason: format!("timed out after {} ms", timeout.as_millis()),
                }),
            }
        } else {
            self.read_file(uri)
        }
    }

    fn read_file(&self, uri: &str) -> Result<Fetched, FetchError> {
        let Some(path) = file_path(uri) else {
            return Err(FetchError::Unavailable {
                url: uri.to_string(),
                reason: "unsupported URI scheme".into(),
            });
        };
        let not_found = |e: std::io::Error| FetchError::NotFound {
            url: uri.to_string(),
            reason: format!("{}: {e}", path.display()),
        };
        let file = std::fs::File::open(&path).map_err(not_found)?;
        let meta = file.metadata().map_err(not_found)?;
        let modified = meta.modified().ok();
        if let Some(entry) = self.cached(uri)
            && let Validator::File { modified: m, len } = &entry.validator
            && *m == modified
            && *len == meta.len()
        {
            return Ok(Fetched {
                text: entry.text,
                freshness: Freshness::Cached,
            });
        }
        let limit = self.inner.config.max_body_bytes;
        if meta.len() > limit {
            return Err(FetchError::TooLarge {
                url: uri.to_string(),
                limit,
            });
        }
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(not_found)?;
        if bytes.len() as u64 > limit {
            return Err(FetchError::TooLarge {
                url: uri.to_string(),
                limit,
            });
        }
        let text: Arc<str> = String::from_utf8(bytes)
            .map_err(|_| FetchError::Unavailable {
                url: uri.to_string(),
                reason: format!("{}: not UTF-8 text", path.display()),
            })?
            .into();
        self.store(
            uri,
            Entry {
                text: text.clone(),
                validator: Validator::File {
                    modified,
                    len: meta.len(),
                },
            },
        );
        Ok(Fetched {
            text,
            freshness: Freshness::Fetched,
        })
    }

    async fn fetch_http(&self, uri: &str) -> Result<Fetched, FetchError> {
        let unavailable = |reason: String| FetchError::Unavailable {
            url: uri.to_string(),
            reason,
        };
        let client = self
            .inner
            .client
            .as_ref()
            .map_err(|e| unavailable(e.clone()))?;
        let cached = self.cached(uri);
        let mut conditional = Vec::new();
        if let Some(Entry {
            text,
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
                return Ok(Fetched {
                    text: text.clone(),
                    freshness: Freshness::Cached,
                });
            }
            if let Some(etag) = etag {
                conditional.push(("If-None-Match", etag.clone()));
            }
            if let Some(lm) = last_modified {
                conditional.push(("If-Modified-Since", lm.clone()));
            }
        }
        let mut url = reqwest::Url::parse(uri).map_err(|e| unavailable(format!("bad URL: {e}")))?;
        let mut hops = 0;
        let response = loop {
            let mut request = client.get(url.clone());
            for (name, value) in &conditional {
                request = request.header(*name, value);
            }
            let response = request
                .send()
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let status = response.status();
            if !status.is_redirection() || status == reqwest::StatusCode::NOT_MODIFIED {
                break response;
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| unavailable(format!("HTTP {status} without a Location")))?;
            let next = url
                .join(location)
                .map_err(|e| unavailable(format!("bad redirect '{location}': {e}")))?;
            hops += 1;
            if hops > self.inner.config.max_redirects {
                return Err(unavailable(format!(
                    "more than {} redirects",
                    self.inner.config.max_redirects
                )));
            }
            if let Some(policy) = &self.inner.config.policy {
                policy
                    .check_url(&next)
                    .map_err(|reason| FetchError::NotAllowed {
                        url: uri.to_string(),
                        reason: format!("redirect to '{next}': {reason}"),
                    })?;
            }
            url = next;
        };
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let cache_control = header("cache-control");
        let etag = header("etag");
        let last_modified = header("last-modified");
        if status == reqwest::StatusCode::NOT_MODIFIED
            && let Some(Entry {
                text,
                validator:
                    Validator::Http {
                        etag: old_etag,
                        max_age: old_max_age,
                        ..
                    },
            }) = cached
        {
            // A 304 without Cache-Control keeps the freshness stored before.
            let max_age = match &cache_control {
                None => old_max_age,
                Some(cc) => self.max_age(Some(cc)),
            };
            self.store(
                uri,
                Entry {
                    text: text.clone(),
                    validator: Validator::Http {
                        etag: etag.or(old_etag),
                        last_modified,
                        checked: Instant::now(),
                        max_age,
                    },
                },
            );
            return Ok(Fetched {
                text,
                freshness: Freshness::Revalidated,
            });
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(FetchError::NotFound {
                url: uri.to_string(),
                reason: format!("HTTP {status}"),
            });
        }
        if !status.is_success() {
            return Err(unavailable(format!("HTTP {status}")));
        }
        let max_age = self.max_age(cache_control.as_deref());
        let text: Arc<str> = self.read_body(uri, response).await?.into();
        self.store(
            uri,
            Entry {
                text: text.clone(),
                validator: Validator::Http {
                    etag,
                    last_modified,
                    checked: Instant::now(),
                    max_age,
                },
            },
        );
        Ok(Fetched {
            text,
            freshness: Freshness::Fetched,
        })
    }

    /// Reads a body chunk by chunk, refusing it as soon as it passes the cap.
    async fn read_body(
        &self,
        uri: &str,
        mut response: reqwest::Response,
    ) -> Result<String, FetchError> {
        let limit = self.inner.config.max_body_bytes;
        let too_large = || FetchError::TooLarge {
            url: uri.to_string(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Unavailable {
                url: uri.to_string(),
                reason: e.to_string(),
            })?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// How long a response may be used: its `Cache-Control` (`no-cache` and
    /// `no-store` mean revalidate every time), else the default, capped.
    fn max_age(&self, cache_control: Option<&str>) -> Duration {
        let config = &self.inner.config;
        let age = match cache_control {
            Some(cc) => {
                let cc = cc.to_ascii_lowercase();
                if cc.contains("no-cache") || cc.contains("no-store") {
                    Duration::ZERO
                } else {
                    cc.split(',')
                        .filter_map(|d| d.trim().strip_prefix("max-age="))
                        .find_map(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs)
                        .unwrap_or(config.default_max_age)
                }
            }
            None => config.default_max_age,
        };
        age.min(config.max_age_cap)
    }

    /// Fetches, concurrently, the texts a parsed document needs to be built,
    /// and then, round by round, what the documents its `<xi:include>`s
    /// bring in need (at most [`include::MAX_DEPTH`] rounds and
    /// [`MAX_INCLUDE_FETCHES`] documents).
    pub async fn fetch_sources(&self, parsed: &Parsed) -> Sources {
        let mut sources = Sources::new();
        let mut round = first_round(parsed);
        let mut depth = 0;
        while !round.is_empty() {
            let results =
                futures_util::future::join_all(round.iter().map(|r| self.fetch(&r.uri))).await;
            let fetched = round.into_iter().zip(results).collect();
            round = next_round(fetched, &mut sources, &mut depth);
        }
        sources
    }

    /// The texts a parsed document (and what it includes) needs, if none
    /// needs the network; `None` otherwise.
    pub fn sources_now(&self, parsed: &Parsed) -> Option<Sources> {
        let mut sources = Sources::new();
        let mut round = first_round(parsed);
        let mut depth = 0;
        while !round.is_empty() {
            let mut fetched = Vec::with_capacity(round.len());
            for r in round {
                let result = self.fetch_now(&r.uri)?;
                fetched.push((r, result));
            }
            round = next_round(fetched, &mut sources, &mut depth);
        }
        Some(sources)
    }

    /// Parses `text` (from `location`, a path or URL, when known), fetches
    /// its references and builds it.
    pub async fn build_document(
        &self,
        text: &str,
        location: Option<&str>,
        options: &LoadOptions<'_>,
    ) -> Result<Document, LoadError> {
        let parsed = parse_at(text, location)?;
        let sources = self.fetch_sources(&parsed).await;
        parsed.build(&sources, options)
    }

    /// Fetches the document at `uri` (resolved), its references, and builds
    /// it; a failed fetch is a diagnostic at 1:1 of `uri`.
    pub async fn load_document(
        &self,
        uri: &str,
        options: &LoadOptions<'_>,
    ) -> Result<Document, LoadError> {
        let fetched = self.fetch(uri).await.map_err(|e| fetch_failed(uri, &e))?;
        self.build_document(&fetched.text, Some(uri), options).await
    }

    /// [`Loader::load_document`] when neither the document nor its
    /// references need the network; `None` otherwise.
    pub fn load_document_now(
        &self,
        uri: &str,
        options: &LoadOptions<'_>,
    ) -> Option<Result<Document, LoadError>> {
        let fetched = match self.fetch_now(uri)? {
            Ok(f) => f,
            Err(e) => return Some(Err(fetch_failed(uri, &e))),
        };
        let parsed = match parse_at(&fetched.text, Some(uri)) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let sources = self.sources_now(&parsed)?;
        Some(parsed.build(&sources, options))
    }
}

/// How many distinct documents and texts one document may pull in through
/// its references and includes.
pub const MAX_INCLUDE_FETCHES: usize = 512;

/// The references a parsed document needs to be built, once per URI.
fn first_round(parsed: &Parsed) -> Vec<Reference> {
    let mut refs: Vec<Reference> = Vec::new();
    for r in parsed.references().iter().filter(|r| r.needed_for_build()) {
        if !refs.iter().any(|seen| seen.uri == r.uri) {
            refs.push(r.clone());
        }
    }
    refs
}

/// Files one round's results into `sources` and returns the next round:
/// the needed references of the included documents just fetched that are
/// not fetched yet. Stops after [`include::MAX_DEPTH`] rounds or
/// [`MAX_INCLUDE_FETCHES`] texts; what is left unfetched is reported by the
/// build at the include that needs it.
fn next_round(
    fetched: Vec<(Reference, Result<Fetched, FetchError>)>,
    sources: &mut Sources,
    depth: &mut usize,
) -> Vec<Reference> {
    let mut next: Vec<Reference> = Vec::new();
    for (r, result) in fetched {
        if r.kind == ReferenceKind::Include
            && let Ok(f) = &result
        {
            for nested in include::references_of(&f.text, &r.uri) {
                if nested.needed_for_build()
                    && !sources.contains_key(&nested.uri)
                    && nested.uri != r.uri
                    && !next.iter().any(|n| n.uri == nested.uri)
                {
                    next.push(nested);
                }
            }
        }
        sources.insert(r.uri.clone(), source(&r, result));
    }
    *depth += 1;
    next.retain(|n| !sources.contains_key(&n.uri));
    let room = MAX_INCLUDE_FETCHES.saturating_sub(sources.len());
    if *depth >= include::MAX_DEPTH || room == 0 {
        return Vec::new();
    }
    next.truncate(room);
    next
}

/// A reference's entry in [`Sources`]: its text, or why it could not be
/// fetched, naming it as written.
fn source(r: &Reference, result: Result<Fetched, FetchError>) -> Result<Arc<str>, String> {
    result
        .map(|f| f.text)
        .map_err(|e| format!("cannot fetch '{}': {}", r.src, e.reason()))
}

fn parse_at(text: &str, location: Option<&str>) -> Result<Parsed, LoadError> {
    match location {
        Some(l) => Parsed::from_location(text, l),
        None => Parsed::new(text, "<input>".into(), None),
    }
}

fn fetch_failed(uri: &str, e: &FetchError) -> LoadError {
    LoadError(vec![Diagnostic {
        file: uri.to_string(),
        pos: Position { line: 1, column: 1 },
        message: e.to_string(),
    }])
}

/// Loads a document file and its references for a command-line host.
/// Files are read at once; HTTP references are fetched on a runtime of the
/// calling thread's own, so a caller inside an async runtime gets a
/// diagnostic instead (it should use [`Loader::load_document`]).
pub fn load_file_blocking(path: &Path, options: &LoadOptions<'_>) -> Result<Document, LoadError> {
    let uri = path.display().to_string();
    let loader = Loader::default();
    if let Some(done) = loader.load_document_now(&uri, options) {
        return done;
    }
    if tokio::runtime::Handle::try_current().is_ok() {
        // Blocking here would stall the caller's runtime (and a nested
        // runtime cannot start): async callers use Loader::load_document.
        return Err(LoadError(vec![Diagnostic {
            file: uri,
            pos: Position { line: 1, column: 1 },
            message: "its references need the network; load it with Loader::load_document \
                      from async code"
                .into(),
        }]));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            LoadError(vec![Diagnostic {
                file: uri.clone(),
                pos: Position { line: 1, column: 1 },
                message: format!("cannot start a runtime to fetch references: {e}"),
            }])
        })?;
    runtime.block_on(loader.load_document(&uri, options))
}
