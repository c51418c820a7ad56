//! Durable session state: one [`Store`] trait and its SQL implementation
//! for SQLite (the embedded default, a WAL file under the data directory)
//! and PostgreSQL, written once over sqlx's `Any` driver where the SQL
//! agrees (`sqlite.rs` and `postgres.rs` hold what differs). Migrations run
//! when a store opens. The writes of all workers are grouped into few
//! transactions, so durability costs little throughput: by SQLite's
//! writer thread itself ([`GroupCommit`]), or by the [`Committer`] task.
//!
//! A session row holds the engine's snapshot as JSON plus what the server
//! shows without waking the session. Documents are stored once, by the
//! SHA-256 of their text ([`document_hash`]), so a recovered session runs
//! the exact document it started with even if the file or URL has changed
//! since.

mod committer;
mod postgres;
mod sql;
mod sqlite;
mod sqlite_writer;

use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;

pub use committer::{CommitError, CommitHandle, Committer, OnCommit};
pub use sql::SqlStore;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No row with this key.
    #[error("not found: {0}")]
    NotFound(String),
    /// The store URL or settings are wrong.
    #[error("store configuration: {0}")]
    Config(String),
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A SQLite write failed (the SQLite store's writer: `database or
    /// disk is full`, ...); the batch was rolled back.
    #[error("database: {0}")]
    Write(String),
    /// The database file this server opened was removed or replaced while
    /// it ran: writing on would go to a file nobody will read again.
    #[error("the store is lost: {0}")]
    Lost(String),
}

/// One persisted session (top-level or invoked child).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// Session id.
    pub id: String,
    /// The top-level session of its invoke tree (itself when top-level).
    pub root: String,
    /// Parent session id, for invoked children.
    pub parent: Option<String>,
    /// The invoke id the parent knows this child by.
    pub invokeid: Option<String>,
    /// Where the document came from.
    pub src: String,
    /// Hash of the document text in the documents table; `None` for a
    /// child whose document is inline in its parent's `<invoke>`.
    pub doc_hash: Option<String>,
    /// `running`, `completed`, `terminated` or `failed`.
    pub status: String,
    /// Start order across the server.
    pub seq: i64,
    /// Start time, ms since the Unix epoch.
    pub started_at: i64,
    /// End time, ms since the Unix epoch.
    pub ended_at: Option<i64>,
    /// The `idealtime` start parameter.
    pub idealtime: Option<i64>,
    /// External events processed.
    pub events: i64,
    /// When the session next needs to run (its earliest delayed send, or
    /// the write time when events are queued), ms since the Unix epoch.
    pub wake_at: Option<i64>,
    /// The engine's snapshot (`SessionSnapshot`) as JSON.
    pub snapshot: String,
}

/// A document's text, stored once per distinct text.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRow {
    /// [`document_hash`] of the text.
    pub hash: String,
    /// Path or URL it was loaded from.
    pub location: Option<String>,
    /// The SCXML text (shared with the loaded document, not copied).
    pub text: std::sync::Arc<str>,
}

/// What a top-level running session needs to be listed and woken without
/// reading its snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct RootSummary {
    /// Session id.
    pub id: String,
    /// Where the document came from.
    pub src: String,
    /// Start order.
    pub seq: i64,
    /// Start time, ms since the Unix epoch.
    pub started_at: i64,
    /// The `idealtime` start parameter.
    pub idealtime: Option<i64>,
    /// External events processed.
    pub events: i64,
    /// Earliest `wake_at` over the session and its children.
    pub wake_at: Option<i64>,
}

/// A value bound to, or read back from, an extension's SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL `NULL`.
    Null,
    /// A `BIGINT`.
    Int(i64),
    /// A `TEXT`.
    Text(String),
}

impl SqlValue {
    /// The text, when the value is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            SqlValue::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The integer, when the value is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            SqlValue::Int(n) => Some(*n),
            _ => None,
        }
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_string())
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

/// One statement of an extension's own tables, in the SQL both backends
/// accept (`$1`, `$2`, … parameters; TEXT and BIGINT columns; `ON CONFLICT
/// … DO UPDATE`), with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The SQL text.
    pub sql: String,
    /// The values of `$1`, `$2`, … in order.
    pub args: Vec<SqlValue>,
}

impl Statement {
    /// A statement with its arguments.
    pub fn new(sql: impl Into<String>, args: Vec<SqlValue>) -> Statement {
        Statement {
            sql: sql.into(),
            args,
        }
    }
}

/// A schema change an extension brings for its tables: the statements of
/// `version` run once, in one transaction, when the store opens, and are
/// recorded under `component` (so components number their versions
/// independently). Write them so that they also succeed on a database
/// where the tables already exist (`CREATE TABLE IF NOT EXISTS`).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Who owns the tables (an extension's name).
    pub component: &'static str,
    /// Increasing from 1 within the component.
    pub version: i64,
    /// The SQL, run in order.
    pub statements: &'static [&'static str],
}

/// Changes written in one transaction.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    /// Documents the batch's sessions use (written with every batch that
    /// references them, so a purge never strands a session).
    pub documents: Vec<DocumentRow>,
    /// Sessions to insert or replace.
    pub upserts: Vec<SessionRow>,
    /// Sessions to delete (children that ended, purged sessions).
    pub deletes: Vec<String>,
    /// Extensions' statements, run after the sessions' changes in the
    /// same transaction and in the order given.
    pub statements: Vec<Statement>,
}

impl WriteBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
            && self.upserts.is_empty()
            && self.deletes.is_empty()
            && self.statements.is_empty()
    }
}

/// Persistence for sessions; see the module docs.
pub trait Store: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Applies a batch atomically: documents (refreshing ones already
    /// stored), then upserts (the last row of an id wins), then deletes.
    fn write(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>>;
    /// One session's row; `NotFound` when there is none.
    fn load_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SessionRow, StoreError>>;
    /// A top-level session and its invoked descendants, parents first.
    fn load_tree<'a>(&'a self, root: &'a str)
    -> BoxFuture<'a, Result<Vec<SessionRow>, StoreError>>;
    /// The whole tree `id` belongs to (any member's id), parents first,
    /// in one round trip; empty when `id` is unknown.
    fn load_tree_of<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionRow>, StoreError>>;
    /// A stored document; `NotFound` when there is none.
    fn load_document<'a>(&'a self, hash: &'a str)
    -> BoxFuture<'a, Result<DocumentRow, StoreError>>;
    /// Every top-level session still running (for recovery).
    fn running_roots(&self) -> BoxFuture<'_, Result<Vec<RootSummary>, StoreError>>;
    /// Deletes halted sessions that ended before `ended_before` (ms since
    /// the epoch) and documents no session uses and no write has touched
    /// since then; returns the number of sessions deleted.
    fn purge_halted(&self, ended_before: i64) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Runs an extension's query and returns its rows, each as the
    /// values of its columns in order.
    fn query<'a>(
        &'a self,
        statement: &'a Statement,
    ) -> BoxFuture<'a, Result<Vec<Vec<SqlValue>>, StoreError>>;
    /// Runs an extension's statement outside any batch; returns the rows
    /// it changed.
    fn execute<'a>(&'a self, statement: &'a Statement) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// The store's own group commit, when it has one (SQLite: its writer
    /// thread groups the batches waiting and answers each on that thread,
    /// with no task in between); `None` (the default) leaves grouping to
    /// the [`Committer`] task.
    fn group_commit(&self) -> Option<Arc<dyn GroupCommit>> {
        None
    }
}

/// Writes batches grouped with the others waiting, each as part of one
/// transaction, and answers each by running its own function on the
/// writer's thread ([`Store::group_commit`]).
pub trait GroupCommit: Send + Sync {
    /// Queues `batch`; `done` runs once the transaction carrying it
    /// ended, with the store's error when it did not commit (the whole
    /// group failed then).
    fn submit(&self, batch: WriteBatch, done: Box<dyn FnOnce(Result<(), StoreError>) + Send>);
}

/// How to open a store.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreLocation {
    /// No persistence: sessions live in memory only.
    None,
    /// A SQLite database file.
    Sqlite {
        /// The database file.
        path: std::path::PathBuf,
        /// `PRAGMA synchronous=FULL` (survives power loss) instead of
        /// `NORMAL` (survives a crash of the process).
        full_sync: bool,
    },
    /// A PostgreSQL server.
    Postgres {
        /// `postgres://user:password@host:port/database`.
        url: String,
    },
}

impl StoreLocation {
    /// Reads a store URL (`none`, `sqlite:PATH`, `postgres://...`); an
    /// empty URL means the SQLite file `ors.db` under `data_dir`.
    pub fn parse(url: &str, data_dir: &Path, full_sync: bool) -> Result<Self, StoreError> {
        let url = url.trim();
        if url.is_empty() {
            return Ok(StoreLocation::Sqlite {
                path: data_dir.join("ors.db"),
                full_sync,
            });
        }
        if url == "none" || url == "memory" {
            return Ok(StoreLocation::None);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres {
                url: url.to_string(),
            });
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let path = rest.split('?').next().unwrap_or(rest);
            if path.is_empty() || path == ":memory:" {
                return Err(StoreError::Config(
                    "a SQLite store needs a file path (use `none` for no persistence)".into(),
                ));
            }
            return Ok(StoreLocation::Sqlite {
                path: path.into(),
                full_sync,
            });
        }
        Err(StoreError::Config(format!(
            "unsupported store URL '{url}': use sqlite:PATH, postgres://... or none"
        )))
    }
}

/// Opens the store (creating the SQLite directory and running the core's
/// migrations, then `migrations` of the extensions); `None` when
/// persistence is off.
pub async fn open(
    location: &StoreLocation,
    max_connections: u32,
    migrations: &[Migration],
) -> Result<Option<Arc<dyn Store>>, StoreError> {
    let store = match location {
        StoreLocation::None => return Ok(None),
        StoreLocation::Sqlite { path, full_sync } => {
            sqlite::open(path, *full_sync, max_connections).await?
        }
        StoreLocation::Postgres { url } => postgres::open(url, max_connections).await?,
    };
    store.migrate_components(migrations).await?;
    Ok(Some(Arc::new(store)))
}

/// The key a document's text is stored under: its SHA-256 digest (FIPS
/// 180-4) as 64 lowercase hex digits. Stores written before this key
/// used a 128-bit FNV-1a hash (32 hex digits); opening one re-keys it.
pub fn document_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_are_read() {
        let dir = Path::new("/data");
        assert_eq!(
            StoreLocation::parse("", dir, false).unwrap(),
            StoreLocation::Sqlite {
                path: "/data/ors.db".into(),
                full_sync: false
            }
        );
        assert_eq!(
            StoreLocation::parse("sqlite:///tmp/x.db?mode=rwc", dir, true).unwrap(),
            StoreLocation::Sqlite {
                path: "/tmp/x.db".into(),
                full_sync: true
            }
        );
        assert_eq!(
            StoreLocation::parse("none", dir, false).unwrap(),
            StoreLocation::None
        );
        assert!(matches!(
            StoreLocation::parse("postgres://u@localhost/ors", dir, false).unwrap(),
            StoreLocation::Postgres { .. }
        ));
        assert!(StoreLocation::parse("mysql://x", dir, false).is_err());
        assert!(StoreLocation::parse("sqlite::memory:", dir, false).is_err());
    }

    #[test]
    fn document_hashes_differ_by_text() {
        assert_eq!(document_hash("<scxml/>"), document_hash("<scxml/>"));
        assert_ne!(document_hash("<scxml/>"), document_hash("<scxml />"));
        assert_eq!(document_hash("").len(), 64);
        // FIPS 180-4 test vectors.
        assert_eq!(
            document_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            document_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
