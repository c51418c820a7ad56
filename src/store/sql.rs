//! The [`Store`] over sqlx's `Any` driver: the same SQL for SQLite and
//! PostgreSQL (`$n` parameters, `ON CONFLICT ... DO UPDATE`, TEXT and
//! BIGINT columns), so the two backends cannot drift apart.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::AnyPool;
use sqlx::any::AnyRow;
use sqlx::{Row, Transaction};

use super::{
    DocumentRow, Migration, RootSummary, SessionRow, SqlValue, Statement, Store, StoreError,
    WriteBatch,
};

/// Schema changes in order; each runs once, recorded in `ors_migrations`.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE ors_documents (
            hash TEXT PRIMARY KEY,
            location TEXT,
            text TEXT NOT NULL,
            stored_at BIGINT NOT NULL)",
            "CREATE TABLE ors_sessions (
            id TEXT PRIMARY KEY,
            root TEXT NOT NULL,
            parent TEXT,
            invokeid TEXT,
            src TEXT NOT NULL,
            doc_hash TEXT,
            status TEXT NOT NULL,
            seq BIGINT NOT NULL,
            started_at BIGINT NOT NULL,
            ended_at BIGINT,
            idealtime BIGINT,
            events BIGINT NOT NULL,
            wake_at BIGINT,
            updated_at BIGINT NOT NULL,
            snapshot TEXT NOT NULL)",
            "CREATE INDEX ors_sessions_root ON ors_sessions (root)",
            "CREATE INDEX ors_sessions_status ON ors_sessions (status, ended_at)",
        ],
    ),
    // Version 2 made the callback table, which the contact-centre
    // extension now brings as its own migration; kept empty so that an
    // older `ors` opening a newer database does not try to make it again.
    (2, &[]),
    // The retention purge looks for halted rows past their cut-off: without
    // this index it scanned every row, and with a million sessions asleep
    // that held SQLite's write lock for over a second each minute
    // (`benches/durable/sessions.sh`, phase `timers`). Partial: only
    // halted rows are in it, so writes of running sessions never touch it.
    (
        3,
        &["CREATE INDEX ors_sessions_halted ON ors_sessions \
           ((COALESCE(ended_at, updated_at))) WHERE status <> 'running'"],
    ),
    // Events on their way to another session, kept until it has them
    // (`crate::server::outbox`).
    (
        4,
        &["CREATE TABLE ors_outbox (
            id TEXT PRIMARY KEY,
            target TEXT NOT NULL,
            event TEXT NOT NULL,
            made_at BIGINT NOT NULL)"],
    ),
];

const SESSION_COLUMNS: &str = "id, root, parent, invokeid, src, doc_hash, status, seq, \
     started_at, ended_at, idealtime, events, wake_at, updated_at, snapshot";
const SESSION_PARAMS: usize = 15;
/// Rows per multi-row statement (15 parameters each stays far below the
/// parameter limits of both databases).
const ROWS_PER_STATEMENT: usize = 200;

/// Session rows per SQLite statement (15 anonymous parameters each; the
/// statement cache keeps one statement per chunk size up to this).
const SQLITE_ROWS_PER_STATEMENT: usize = 32;

/// A store on a SQLite or PostgreSQL pool.
pub struct SqlStore {
    pool: AnyPool,
    backend: &'static str,
    /// SQLite: the database file and its write-ahead log as opened.
    files: Option<Arc<FileIdentity>>,
    /// SQLite: the thread that writes and groups the batches.
    writer: Option<Arc<super::sqlite_writer::Writer>>,
}

/// Which files a SQLite store opened (device and inode), so that one
/// removed or replaced under the running server is noticed before the
/// next write rather than after a restart (SQLite itself writes on into
/// the unlinked file it still holds open).
struct FileIdentity {
    db: std::path::PathBuf,
    db_id: (u64, u64),
    wal: std::path::PathBuf,
    wal_id: std::sync::Mutex<Option<(u64, u64)>>,
    lost: std::sync::Mutex<Option<String>>,
    /// A connection held open for the store's life: SQLite deletes the
    /// write-ahead log when its last connection closes, and makes a new
    /// one on the next open, which would look like a replaced file.
    _keeper: std::sync::Mutex<sqlx::AnyConnection>,
}

#[cfg(unix)]
fn file_id(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    std::fs::metadata(path).map(|_| (0, 0))
}

impl FileIdentity {
    /// `Err` (for good, once seen) when either file is gone or another.
    fn check(&self) -> Result<(), StoreError> {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = &*lost {
            return Err(StoreError::Lost(why.clone()));
        }
        let why = match file_id(&self.db) {
            Err(_) => Some(format!("{} was removed", self.db.display())),
            Ok(id) if id != self.db_id => Some(format!("{} was replaced", self.db.display())),
            Ok(_) => {
                let mut wal_id = self.wal_id.lock().unwrap_or_else(|e| e.into_inner());
                match (file_id(&self.wal).ok(), *wal_id) {
                    (Some(now), None) => {
                        *wal_id = Some(now);
                        None
                    }
                    (Some(now), Some(was)) if now != was => {
                        Some(format!("{} was replaced", self.wal.display()))
                    }
                    (None, Some(_)) => Some(format!("{} was removed", self.wal.display())),
                    _ => None,
                }
            }
        };
        match why {
            Some(why) => {
                let why =
                    format!("{why} while the server ran; writes are refused until it restarts");
                tracing::error!(reason = %why, "the session store is lost");
                *lost = Some(why.clone());
                Err(StoreError::Lost(why))
            }
            None => Ok(()),
        }
    }
}

impl SqlStore {
    /// Wraps a connected pool and brings its schema up to date.
    pub(super) async fn new(pool: AnyPool, backend: &'static str) -> Result<Self, StoreError> {
        let store = SqlStore {
            pool,
            backend,
            files: None,
            writer: None,
        };
        store.migrate().await?;
        store.rekey_documents().await?;
        Ok(store)
    }

    /// Watches the SQLite database file at `db` (and its `-wal`): a write
    /// after either was removed or replaced fails with
    /// [`StoreError::Lost`].
    ///
    /// # Errors
    /// The database file cannot be read.
    pub(super) async fn watch_files(&mut self, db: &std::path::Path) -> Result<(), StoreError> {
        let keeper = self.pool.acquire().await?.detach();
        let db_id = file_id(db)
            .map_err(|e| StoreError::Config(format!("cannot read {}: {e}", db.display())))?;
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal = std::path::PathBuf::from(wal);
        self.files = Some(Arc::new(FileIdentity {
            db: db.to_path_buf(),
            db_id,
            wal_id: std::sync::Mutex::new(file_id(&wal).ok()),
            wal,
            lost: std::sync::Mutex::new(None),
            _keeper: std::sync::Mutex::new(keeper),
        }));
        Ok(())
    }

    /// The identity check of [`SqlStore::watch_files`] (nothing to check
    /// on PostgreSQL).
    fn check_files(&self) -> Result<(), StoreError> {
        match &self.files {
            Some(files) => files.check(),
            None => Ok(()),
        }
    }

    /// Re-keys documents stored under the old 128-bit FNV-1a hash (32 hex
    /// digits; [`super::document_hash`] now gives 64) by the hash of their
    /// text, and points the sessions that used them at the new key, all in
    /// one transaction. Keys say which scheme made them, so this needs no
    /// version of its own and finds nothing to do once a store is re-keyed.
    async fn rekey_documents(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let old = sqlx::query(
            "SELECT hash, location, text, stored_at FROM ors_documents WHERE length(hash) = 32",
        )
        .fetch_all(&mut *tx)
        .await?;
        if old.is_empty() {
            return Ok(());
        }
        let mut sessions = 0;
        for row in &old {
            let hash: String = row.try_get("hash")?;
            let location: Option<String> = row.try_get("location")?;
            let text: String = row.try_get("text")?;
            let stored_at: i64 = row.try_get("stored_at")?;
            let new = super::document_hash(&text);
            sqlx::query(
                "INSERT INTO ors_documents (hash, location, text, stored_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING",
            )
            .bind(&new)
            .bind(location)
            .bind(&text)
            .bind(stored_at)
            .execute(&mut *tx)
            .await?;
            sessions += sqlx::query("UPDATE ors_sessions SET doc_hash = $1 WHERE doc_hash = $2")
                .bind(&new)
                .bind(&hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM ors_documents WHERE hash = $1")
                .bind(&hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        tracing::info!(
            backend = self.backend,
            documents = old.len(),
            sessions,
            "store documents re-keyed by SHA-256"
        );
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS ors_migrations (
                version BIGINT PRIMARY KEY,
                applied_at BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        for (version, statements) in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM ors_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                continue;
            }
            for statement in *statements {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO ors_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(backend = self.backend, version, "store migration applied");
        }
        Ok(())
    }

    /// Runs the extensions' migrations not yet applied, each version in
    /// its own transaction, recorded in `ors_component_migrations`.
    pub(super) async fn migrate_components(
        &self,
        migrations: &[Migration],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS ors_component_migrations (
                component TEXT NOT NULL,
                version BIGINT NOT NULL,
                applied_at BIGINT NOT NULL,
                PRIMARY KEY (component, version))",
        )
        .execute(&self.pool)
        .await?;
        for m in migrations {
            let mut tx = self.pool.begin().await?;
            let done: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM ors_component_migrations \
                 WHERE component = $1 AND version = $2",
            )
            .bind(m.component)
            .bind(m.version)
            .fetch_optional(&mut *tx)
            .await?;
            if done.is_some() {
                continue;
            }
            for statement in m.statements {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            sqlx::query(
                "INSERT INTO ors_component_migrations (component, version, applied_at) \
                 VALUES ($1, $2, $3)",
            )
            .bind(m.component)
            .bind(m.version)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(
                backend = self.backend,
                component = m.component,
                version = m.version,
                "store migration applied"
            );
        }
        Ok(())
    }

    /// The rows whose root is `root_sql` (SQL with `$1` bound to `key`),
    /// parents first.
    async fn tree(&self, root_sql: &str, key: &str) -> Result<Vec<SessionRow>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM ors_sessions WHERE root = {root_sql} ORDER BY seq, id"
        );
        let rows = sqlx::query(&sql).bind(key).fetch_all(&self.pool).await?;
        let rows = rows
            .iter()
            .map(session_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(parents_first(rows))
    }

    /// Writes a batch in one transaction. A write that fails (a full
    /// disk, a database file taken away) may leave its connection inside
    /// the transaction and holding the write lock — SQLite keeps a
    /// transaction open when its COMMIT fails with `SQLITE_FULL`, and a
    /// later `BEGIN` on that connection would only open a savepoint inside
    /// it, so later "commits" would never reach the disk. So the failed
    /// connection is closed, never handed back to the pool, and the next
    /// write starts on a fresh one.
    /// Has a writer thread of its own, on a connection to the SQLite
    /// database at `path` with `synchronous` (`NORMAL` or `FULL`), write
    /// the batches from now on, each after the [`SqlStore::watch_files`]
    /// check.
    ///
    /// # Errors
    /// The connection or the thread cannot be made.
    pub(super) fn write_through(
        &mut self,
        path: &std::path::Path,
        synchronous: &str,
    ) -> Result<(), StoreError> {
        let files = self.files.clone();
        let precheck: super::sqlite_writer::Precheck = Box::new(move || match &files {
            Some(files) => files.check(),
            None => Ok(()),
        });
        self.writer = Some(Arc::new(super::sqlite_writer::Writer::open(
            path,
            synchronous,
            precheck,
        )?));
        Ok(())
    }

    async fn write_batch(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if let Some(writer) = &self.writer {
            return writer.write(batch).await;
        }
        self.check_files()?;
        let mut conn = self.pool.acquire().await?;
        // SQLite looks a numbered parameter (`$7`) up by a linear scan,
        // and sqlx asks for each parameter's name as it binds, so a
        // statement of n numbered parameters costs O(n²): a 200-row upsert
        // (3 000 parameters) kept the store's thread busy with name
        // lookups. Anonymous `?` parameters have no name to look up, and
        // each statement is a round trip to sqlx's SQLite thread, so
        // SQLite gets multi-row statements of `?`s.
        let marks = if self.backend == "sqlite" {
            Marks::Anonymous
        } else {
            Marks::Numbered
        };
        let rows_per_statement = if self.backend == "sqlite" {
            SQLITE_ROWS_PER_STATEMENT
        } else {
            ROWS_PER_STATEMENT
        };
        match write_in(&mut conn, batch, rows_per_statement, marks).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let raw = conn.detach();
                if let Err(close) = sqlx::Connection::close(raw).await {
                    tracing::debug!(error = %close, "closing a connection after a failed write");
                }
                Err(e)
            }
        }
    }
}

/// The statements of one batch, in one transaction on `conn`.
async fn write_in(
    conn: &mut sqlx::AnyConnection,
    batch: WriteBatch,
    rows_per_statement: usize,
    marks: Marks,
) -> Result<(), StoreError> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    // Documents are written with every batch that uses them; touching
    // `stored_at` keeps a concurrent purge from deleting one that a
    // session in this batch is about to reference.
    for doc in &batch.documents {
        sqlx::query(
            "INSERT INTO ors_documents (hash, location, text, stored_at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (hash) DO UPDATE SET stored_at = excluded.stored_at",
        )
        .bind(&doc.hash)
        .bind(&doc.location)
        .bind(&*doc.text)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    }
    // One row per id (the last), as PostgreSQL refuses to update a row
    // twice in one statement.
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, row) in batch.upserts.iter().enumerate() {
        last.insert(row.id.as_str(), i);
    }
    let upserts: Vec<&SessionRow> = batch
        .upserts
        .iter()
        .enumerate()
        .filter(|(i, row)| last.get(row.id.as_str()) == Some(i))
        .map(|(_, row)| row)
        .collect();
    upsert_sessions(&mut tx, &upserts, rows_per_statement, marks).await?;
    for chunk in batch.deletes.chunks(rows_per_statement) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| marks.mark(i)).collect();
        let sql = format!(
            "DELETE FROM ors_sessions WHERE id IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        q.execute(&mut *tx).await?;
    }
    for statement in &batch.statements {
        bind_all(sqlx::query(&statement.sql), &statement.args)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// How a statement's parameters are written.
#[derive(Debug, Clone, Copy)]
enum Marks {
    /// `$1, $2, …` (PostgreSQL).
    Numbered,
    /// `?, ?, …`, bound in order (SQLite: no name to look up).
    Anonymous,
}

impl Marks {
    /// The mark of the `n`th parameter (from 1).
    fn mark(self, n: usize) -> String {
        match self {
            Marks::Numbered => format!("${n}"),
            Marks::Anonymous => "?".to_string(),
        }
    }
}

/// Binds an extension's arguments to a query, in order.
fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: &'q [SqlValue],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for arg in args {
        q = match arg {
            SqlValue::Null => q.bind(None::<String>),
            SqlValue::Int(n) => q.bind(*n),
            SqlValue::Text(t) => q.bind(t.as_str()),
        };
    }
    q
}

/// A row's columns as values (TEXT, BIGINT or NULL).
fn sql_values(row: &AnyRow) -> Result<Vec<SqlValue>, StoreError> {
    (0..row.len())
        .map(|i| {
            if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                return Ok(v.map_or(SqlValue::Null, SqlValue::Int));
            }
            let v: Option<String> = row.try_get(i)?;
            Ok(v.map_or(SqlValue::Null, SqlValue::Text))
        })
        .collect()
}

/// Inserts or replaces sessions, many rows per statement.
async fn upsert_sessions(
    tx: &mut Transaction<'_, sqlx::Any>,
    rows: &[&SessionRow],
    rows_per_statement: usize,
    marks: Marks,
) -> Result<(), StoreError> {
    let updated = now_ms();
    for chunk in rows.chunks(rows_per_statement) {
        let values: Vec<String> = (0..chunk.len())
            .map(|r| {
                let marks: Vec<String> = (1..=SESSION_PARAMS)
                    .map(|c| marks.mark(r * SESSION_PARAMS + c))
                    .collect();
                format!("({})", marks.join(", "))
            })
            .collect();
        let updates: Vec<String> = SESSION_COLUMNS
            .split(", ")
            .skip(1)
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let sql = format!(
            "INSERT INTO ors_sessions ({SESSION_COLUMNS}) VALUES {} \
             ON CONFLICT (id) DO UPDATE SET {}",
            values.join(", "),
            updates.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for row in chunk {
            q = q
                .bind(&row.id)
                .bind(&row.root)
                .bind(&row.parent)
                .bind(&row.invokeid)
                .bind(&row.src)
                .bind(&row.doc_hash)
                .bind(&row.status)
                .bind(row.seq)
                .bind(row.started_at)
                .bind(row.ended_at)
                .bind(row.idealtime)
                .bind(row.events)
                .bind(row.wake_at)
                .bind(updated)
                .bind(&row.snapshot);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

fn session_row(row: &AnyRow) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        id: row.try_get("id")?,
        root: row.try_get("root")?,
        parent: row.try_get("parent")?,
        invokeid: row.try_get("invokeid")?,
        src: row.try_get("src")?,
        doc_hash: row.try_get("doc_hash")?,
        status: row.try_get("status")?,
        seq: row.try_get("seq")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        idealtime: row.try_get("idealtime")?,
        events: row.try_get("events")?,
        wake_at: row.try_get("wake_at")?,
        snapshot: row.try_get("snapshot")?,
    })
}

/// Puts parents before their children (rows of one tree).
fn parents_first(rows: Vec<SessionRow>) -> Vec<SessionRow> {
    let mut placed: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut pending = rows;
    let mut out = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let before = pending.len();
        let (ready, rest): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|r| r.parent.as_ref().is_none_or(|p| placed.contains(p)));
        for r in &ready {
            placed.insert(r.id.clone());
        }
        out.extend(ready);
        pending = rest;
        if pending.len() == before {
            // Orphans (a parent row missing) cannot be placed; they are
            // left out rather than restored without their parent.
            for r in &pending {
                tracing::warn!(session = %r.id, "stored child session without its parent skipped");
            }
            break;
        }
    }
    out
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    crate::host::wall_clock_ms() as i64
}

impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        self.backend
    }

    fn write(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write_batch(batch))
    }

    fn group_commit(&self) -> Option<Arc<dyn super::GroupCommit>> {
        self.writer
            .clone()
            .map(|w| w as Arc<dyn super::GroupCommit>)
    }

    fn load_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SessionRow, StoreError>> {
        Box::pin(async move {
            let sql = format!("SELECT {SESSION_COLUMNS} FROM ors_sessions WHERE id = $1");
            let row = sqlx::query(&sql)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            match row {
                Some(row) => session_row(&row),
                None => Err(StoreError::NotFound(id.to_string())),
            }
        })
    }

    fn load_tree<'a>(
        &'a self,
        root: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionRow>, StoreError>> {
        Box::pin(self.tree("$1", root))
    }

    fn load_tree_of<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionRow>, StoreError>> {
        Box::pin(self.tree("(SELECT root FROM ors_sessions WHERE id = $1)", id))
    }

    fn load_document<'a>(
        &'a self,
        hash: &'a str,
    ) -> BoxFuture<'a, Result<DocumentRow, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT hash, location, text FROM ors_documents WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("document {hash}")))?;
            Ok(DocumentRow {
                hash: row.try_get("hash")?,
                location: row.try_get("location")?,
                text: row.try_get::<String, _>("text")?.into(),
            })
        })
    }

    fn running_roots(&self) -> BoxFuture<'_, Result<Vec<RootSummary>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                // One pass over the running rows grouped by tree (a
                // correlated subquery per root made SQLite quadratic).
                "SELECT s.id, s.src, s.seq, s.started_at, s.idealtime, s.events, \
                 t.tree_wake_at \
                 FROM ors_sessions s LEFT JOIN \
                 (SELECT root, MIN(wake_at) AS tree_wake_at FROM ors_sessions \
                  WHERE status = 'running' GROUP BY root) t ON t.root = s.id \
                 WHERE s.parent IS NULL AND s.status = 'running' ORDER BY s.seq",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(RootSummary {
                        id: row.try_get("id")?,
                        src: row.try_get("src")?,
                        seq: row.try_get("seq")?,
                        started_at: row.try_get("started_at")?,
                        idealtime: row.try_get("idealtime")?,
                        events: row.try_get("events")?,
                        wake_at: row.try_get("tree_wake_at")?,
                    })
                })
                .collect()
        })
    }

    fn purge_halted(&self, ended_before: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let deleted = sqlx::query(
                "DELETE FROM ors_sessions \
                 WHERE status <> 'running' AND COALESCE(ended_at, updated_at) < $1",
            )
            .bind(ended_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // Only documents no batch has used since the cut-off: a batch
            // that references one refreshes its `stored_at` first. The
            // sessions' hashes are listed once (and only when a document
            // is that old), not scanned again for every old document.
            sqlx::query(
                "DELETE FROM ors_documents WHERE stored_at < $1 AND hash NOT IN \
                 (SELECT doc_hash FROM ors_sessions WHERE doc_hash IS NOT NULL)",
            )
            .bind(ended_before)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(deleted)
        })
    }

    fn query<'a>(
        &'a self,
        statement: &'a Statement,
    ) -> BoxFuture<'a, Result<Vec<Vec<SqlValue>>, StoreError>> {
        Box::pin(async move {
            bind_all(sqlx::query(&statement.sql), &statement.args)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(sql_values)
                .collect()
        })
    }

    fn execute<'a>(&'a self, statement: &'a Statement) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            Ok(bind_all(sqlx::query(&statement.sql), &statement.args)
                .execute(&self.pool)
                .await?
                .rows_affected())
        })
    }
}
