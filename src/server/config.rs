//! `ors serve` settings: a TOML file (see `ors.example.toml`) over embedded
//! defaults, so that the server starts with no file at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What the server core can be told. The file also carries the
/// extensions' sections (see `app::Config`), so unknown top-level keys are
/// refused by [`check_top_level`] rather than by serde.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Worker threads running sessions; 0 means one per core.
    pub workers: usize,
    /// The server's name (`_genesys.session.server.name`).
    pub server_name: String,
    /// Resource limits.
    pub limits: Limits,
    /// How documents are fetched and cached.
    pub documents: DocumentSettings,
    /// Who may call the API and what may be fetched.
    pub security: Security,
    /// Log output.
    pub log: LogSettings,
    /// Script objects (`script:<name>`), by name.
    pub scripts: BTreeMap<String, ScriptObject>,
    /// Where the server keeps its files (the SQLite store by default).
    pub data_dir: PathBuf,
    /// Session persistence and hibernation.
    pub store: StoreSettings,
    /// HTTP connections: timeouts, limits, load shedding.
    pub connections: ConnectionSettings,
    /// Whether this process runs the watchdog (`server::watchdog`) that
    /// ends it when a session is stuck or memory runs over; `ors serve`
    /// sets it, servers embedded in other programs (and tests) do not.
    /// Not read from the configuration file.
    #[serde(skip)]
    pub watchdog: bool,
}

/// HTTP connections (`[connections]`): how long the server waits for a
/// client, and how many connections it keeps open (see
/// `server::connections`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSettings {
    /// Time to receive a request's head (request line and headers), in ms;
    /// also how long an idle keep-alive connection waits for its next
    /// request. The connection is closed after it.
    pub header_timeout_ms: u64,
    /// Time to receive a request's whole body, counted from its head, in
    /// ms; a request still waiting for its body then is answered 408
    /// `body_timeout` and its connection closed.
    pub body_timeout_ms: u64,
    /// Longest a response write may make no progress (a client that stops
    /// reading), in ms; the connection is closed after it.
    pub write_timeout_ms: u64,
    /// Most connections open at once, the reserve included; beyond it a
    /// new connection is closed as soon as it is accepted. Capped at start
    /// by the process's open-file limit (less what the store and the
    /// workers need).
    pub max_connections: usize,
    /// The last connections under `max_connections`, kept for `/health`
    /// and operators (requests with the bearer token): on them any other
    /// request is answered 503 `overloaded` with `Retry-After` and the
    /// connection is closed. One client address holds at most an eighth
    /// of them (at least 1).
    pub reserve_connections: usize,
    /// Most connections one client address may hold; 0 means no cap (set
    /// 0 or raise it when all clients come through one proxy).
    pub max_connections_per_ip: usize,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            write_timeout_ms: 30_000,
            max_connections: 10_000,
            reserve_connections: 64,
            max_connections_per_ip: 1_000,
        }
    }
}

impl ConnectionSettings {
    /// Checks what serde cannot: timeouts above 0, a reserve smaller than
    /// the cap.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "connections.{name} must be above 0"
                )));
            }
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "connections.max_connections must be above 0".into(),
            ));
        }
        if self.reserve_connections >= self.max_connections {
            return Err(ConfigError::Invalid(format!(
                "connections.reserve_connections ({}) must be below max_connections ({})",
                self.reserve_connections, self.max_connections
            )));
        }
        Ok(())
    }
}

/// Session persistence: where, how durable, and when idle sessions sleep.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite:PATH`, `postgres://user:password@host/db`, or `none`; empty
    /// means the SQLite file `ors.db` under `data_dir`.
    pub url: String,
    /// SQLite `synchronous=FULL`: commits survive power loss, not only a
    /// crash of the process, at some cost in throughput.
    pub full_sync: bool,
    /// A session idle this long (seconds) leaves memory and lives only in
    /// the store until an event, timer or query wakes it; 0 never.
    pub hibernate_after_secs: u64,
    /// A session idle this long (seconds) leaves the script engine into
    /// the warm tier: its state stays in memory as its snapshot text (no
    /// script objects for the collector to mark), and its next event,
    /// timer or query restores it from that text without reading the
    /// store. At `hibernate_after_secs` it leaves memory too. 0 (or a
    /// value not below `hibernate_after_secs`): no warm tier.
    pub warm_after_secs: u64,
    /// Most snapshot bytes the warm tier keeps; past it, the sessions
    /// longest in it leave memory (they wake from the store).
    pub warm_max_bytes: u64,
    /// Database connections.
    pub max_connections: u32,
    /// How often halted sessions older than `limits.halted_retention_secs`
    /// are deleted from the store, in seconds.
    pub purge_interval_secs: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: String::new(),
            full_sync: false,
            hibernate_after_secs: 60,
            warm_after_secs: 5,
            warm_max_bytes: 256 * 1024 * 1024,
            max_connections: 8,
            purge_interval_secs: 60,
        }
    }
}

impl Config {
    /// Where sessions are persisted.
    pub fn store_location(&self) -> Result<crate::store::StoreLocation, ConfigError> {
        crate::store::StoreLocation::parse(&self.store.url, &self.data_dir, self.store.full_sync)
            .map_err(|e| ConfigError::Invalid(format!("store.url: {e}")))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            server_name: "ors".into(),
            limits: Limits::default(),
            documents: DocumentSettings::default(),
            security: Security::default(),
            log: LogSettings::default(),
            scripts: BTreeMap::new(),
            data_dir: PathBuf::from("ors-data"),
            store: StoreSettings::default(),
            connections: ConnectionSettings::default(),
            watchdog: false,
        }
    }
}

/// Bounds on what one request or session may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most sessions alive at once (503 beyond).
    pub max_sessions: usize,
    /// How long `/request/{name}` waits for the document's response, in ms.
    pub request_timeout_ms: u64,
    /// How long a halted session stays queryable, in seconds.
    pub halted_retention_secs: u64,
    /// Most microsteps in one macrostep before a session is stopped.
    pub max_microsteps: u64,
    /// Longest one macrostep may run, in ms, before the session is
    /// stopped (checked between microsteps); 0: no limit.
    pub max_macrostep_ms: u64,
    /// Most events in a row a session may send itself without delay, with
    /// nothing from outside in between, before it is stopped (failed, with
    /// the reason); 0: no limit.
    pub max_self_events: u64,
    /// Most iterations of one script loop.
    pub script_loop_iterations: u64,
    /// Deepest script recursion.
    pub script_recursion: usize,
    /// Longest a `session:fetch` may take when it names no timeout, in ms.
    pub fetch_timeout_ms: u64,
    /// Longest one session may keep a worker without returning, in ms (a
    /// script stuck in a backtracking regular expression or a huge native
    /// call, which no check between microsteps can stop): the watchdog
    /// then records the session and ends the server process, which the
    /// supervisor of `ors serve` restarts; 0: no watchdog for time.
    pub max_run_ms: u64,
    /// Resident memory the server process may use, in MiB, before the
    /// watchdog records the sessions running and ends the process (as for
    /// `max_run_ms`); 0: half of the machine's memory.
    pub max_memory_mb: u64,
    /// Most the server's resident memory may grow while one macrostep
    /// runs, in MiB, before that session is stopped (failed, with the
    /// reason) and `error.execution` raised at the element that crossed
    /// it. Checked after every element of executable content and every
    /// microstep against the watchdog's sample (taken every 50 ms), so
    /// one script that allocates without end is left to `max_memory_mb`.
    /// 0: no limit.
    pub max_macrostep_memory_mb: u64,
    /// How deeply arrays and objects may nest in a session's data when it
    /// is saved (levels); a session holding deeper data fails with the
    /// reason. At most 120 (stored snapshots are read back with
    /// serde_json's 128-level limit).
    pub max_data_depth: usize,
    /// The most a session's data may take when it is saved, in bytes
    /// (approximate); a session holding more fails with the reason.
    pub max_data_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_sessions: 200_000,
            request_timeout_ms: 10_000,
            halted_retention_secs: 300,
            max_microsteps: 100_000,
            max_macrostep_ms: 10_000,
            max_self_events: 100_000,
            script_loop_iterations: 1_000_000,
            script_recursion: 400,
            fetch_timeout_ms: 10_000,
            max_run_ms: 20_000,
            max_memory_mb: 0,
            max_macrostep_memory_mb: 1024,
            max_data_depth: 100,
            max_data_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Document fetching and caching.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocumentSettings {
    /// How long a fetched document is used before it is revalidated, in
    /// seconds, when its response carries no `Cache-Control: max-age`.
    pub max_age_secs: u64,
    /// Upper bound on any `max-age` a server sends, in seconds.
    pub max_age_cap_secs: u64,
    /// How long fetching a document may take, in ms.
    pub fetch_timeout_ms: u64,
    /// The largest document, `<data src>` or `<script src>` body accepted,
    /// in bytes; a larger one is refused without being read whole.
    pub max_body_bytes: u64,
    /// The SCXML dialect documents are read as: `"ors"` or `"w3c"`; unset,
    /// each document's `<scxml>` decides (`profile` without `datamodel`:
    /// ORS; see `crate::model::Dialect`).
    pub dialect: Option<crate::model::Dialect>,
    /// How deeply elements may nest in a document, includes inlined
    /// (levels, at most 500); a deeper one is refused with file, line and
    /// column.
    pub max_nesting: usize,
}

impl Default for DocumentSettings {
    fn default() -> Self {
        DocumentSettings {
            max_age_secs: 60,
            max_age_cap_secs: 3600,
            fetch_timeout_ms: 10_000,
            max_body_bytes: crate::host::loader::MAX_BODY_BYTES,
            dialect: None,
            max_nesting: crate::parser::xml::MAX_DEPTH,
        }
    }
}

/// Access control and the allow-list for URLs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// The operator's bearer token (the older spelling of
    /// `[security.operator] bearer_token`; both are accepted).
    pub bearer_token: Option<String>,
    /// The operator role: the ORS REST API, `/basichttp/`, `/metrics`,
    /// cross-customer queries (see [`super::auth`]). With no credential
    /// configured, `ors serve` generates a token into
    /// `<data_dir>/operator-token`.
    pub operator: super::auth::Credentials,
    /// The admin role: administration APIs such as the simulator's
    /// `/sim/`. Unset, the operator's credentials guard them.
    pub admin: super::auth::Credentials,
    /// Whether `listen` may be an address other than loopback.
    pub allow_non_loopback: bool,
    /// URL schemes documents and fetches may use (`file`, `http`, `https`).
    pub allowed_schemes: Vec<String>,
    /// Hosts `http(s)` URLs may name; `*` allows any, `*.example.com` a domain.
    pub allowed_hosts: Vec<String>,
    /// Directories `file:` documents must lie in (relative ones are taken
    /// from the directory `ors serve` starts in).
    pub allowed_dirs: Vec<PathBuf>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            bearer_token: None,
            operator: super::auth::Credentials::default(),
            admin: super::auth::Credentials::default(),
            allow_non_loopback: false,
            allowed_schemes: vec!["file".into(), "http".into(), "https".into()],
            allowed_hosts: vec!["*".into()],
            allowed_dirs: vec![PathBuf::from(".")],
        }
    }
}

impl Security {
    /// The operator's credentials: `[security.operator]`, with
    /// `security.bearer_token` as its bearer token when that section names
    /// none.
    pub fn operator_credentials(&self) -> super::auth::Credentials {
        let mut c = self.operator.clone();
        if c.bearer_token.as_deref().is_none_or(str::is_empty) {
            c.bearer_token = self.bearer_token.clone();
        }
        c
    }

    /// Whether `headers` carry an operator credential.
    pub fn is_operator(&self, headers: &axum::http::HeaderMap) -> bool {
        self.operator_credentials().accepts_headers(headers)
    }

    /// Whether `headers` carry an admin credential (or an operator's).
    pub fn is_admin(&self, headers: &axum::http::HeaderMap) -> bool {
        self.admin.accepts_headers(headers) || self.is_operator(headers)
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `ors=debug`.
    pub level: String,
    /// One line per HTTP request at info level (target `ors::access`):
    /// method, path, status, time taken (ms) and the session id.
    pub access: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".into(),
            access: true,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A script object, like an Enhanced Routing Script's `Application` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptObject {
    /// The document URL. Empty (or absent) for a script object a service
    /// of the server defines: the server fills in its own address for it
    /// (`http://<listen>/…`), so its documents follow the listening port,
    /// and the rest of the section (`params`, …) is kept.
    pub url: String,
    /// Tried when `url` cannot be fetched or compiled.
    #[serde(alias = "alternate-url")]
    pub alternate_url: Option<String>,
    /// The `ApplicationParms` section: values given to every session as data
    /// (start parameters override them).
    #[serde(alias = "ApplicationParms")]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The SCXML dialect its documents are read as (`"ors"` or `"w3c"`);
    /// unset, `[documents] dialect`, else each document decides.
    pub dialect: Option<crate::model::Dialect>,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong and where.
        message: String,
    },
    /// The settings contradict each other or are unsafe.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML configuration file with the core's sections only.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read_file(path)?, &path.display().to_string())
    }

    /// Parses TOML text with the core's sections only (`name` labels
    /// errors); `app::Config::parse` reads a file with extensions' sections.
    pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        check_top_level(text, name, &[fields::<Config>()])?;
        let config: Config = parse_sections(text, name)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks settings that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() && !self.security.allow_non_loopback {
            return Err(ConfigError::Invalid(format!(
                "listen address {} is not loopback; set security.allow_non_loopback = true \
                 (and a bearer_token) to expose the API",
                self.listen
            )));
        }
        self.store_location()?;
        self.connections.validate()?;
        let ceiling = crate::parser::xml::MAX_DEPTH_CEILING;
        if !(2..=ceiling).contains(&self.documents.max_nesting) {
            return Err(ConfigError::Invalid(format!(
                "documents.max_nesting ({}) must be between 2 and {ceiling}",
                self.documents.max_nesting
            )));
        }
        if !(1..=120).contains(&self.limits.max_data_depth) {
            return Err(ConfigError::Invalid(format!(
                "limits.max_data_depth ({}) must be between 1 and 120",
                self.limits.max_data_depth
            )));
        }
        Ok(())
    }

    /// The number of worker threads to start.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }
    }

    /// The script object called `name`, matched case-insensitively. The
    /// second value is the configured spelling when it differs only in case.
    pub fn script(&self, name: &str) -> Option<(&ScriptObject, Option<&str>)> {
        if let Some(s) = self.scripts.get(name) {
            return Some((s, None));
        }
        self.scripts
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(k, s)| (s, Some(k.as_str())))
    }
}

/// The text of a configuration file.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Reads the sections of `text` that `T` declares, ignoring the others
/// (errors keep the file's line and column).
pub fn parse_sections<T: serde::de::DeserializeOwned>(
    text: &str,
    name: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: name.to_string(),
        message: e.to_string(),
    })
}

/// Refuses a top-level key that none of `known` (each the field names of
/// one settings struct, from [`fields`]) declares.
pub fn check_top_level(text: &str, name: &str, known: &[&[&str]]) -> Result<(), ConfigError> {
    type Keys = std::collections::BTreeMap<toml::Spanned<String>, serde::de::IgnoredAny>;
    let keys: Keys = toml::from_str(text).map_err(|e: toml::de::Error| ConfigError::Parse {
        path: name.to_string(),
        message: e.to_string(),
    })?;
    for key in keys.keys() {
        if !known
            .iter()
            .any(|fields| fields.contains(&key.get_ref().as_str()))
        {
            let expected: Vec<String> = known
                .iter()
                .flat_map(|f| f.iter())
                .map(|f| format!("`{f}`"))
                .collect();
            let before = &text[..key.span().start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            return Err(ConfigError::Parse {
                path: name.to_string(),
                message: format!(
                    "TOML parse error at line {line}, column {column}: unknown field `{}`, \
                     expected one of {}",
                    key.get_ref(),
                    expected.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// The field names a settings struct declares to serde (read off its
/// derived `Deserialize`, so the list cannot drift from the struct).
pub fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    struct Probe(Option<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for &mut Probe {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(Self::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}
