//! The SQLite store's writer: a thread of its own holding one connection
//! (rusqlite), which groups the batches waiting into one transaction,
//! every statement prepared once and kept, and answers each batch's
//! sender on this thread ([`super::GroupCommit`]: the workers' batches
//! come here straight, not through the committer task, so a reply to an
//! HTTP event leaves this thread for its connection's task with no hop in
//! between).
//!
//! Through sqlx each statement of a batch was a round trip between the
//! committer's task and sqlx's SQLite thread (a channel send, a thread
//! wake-up, a reply, the task scheduled again). A GMS Chat Immediate flow
//! writes about 40 rows (session snapshots, letters, records, chat
//! bindings), and under load those hand-overs, not SQLite, were most of a
//! commit's time: about 11 ms for ~130 statements (issue 19). Here the
//! whole batch is one hand-over. Reads stay on the sqlx pool: in WAL mode
//! they never wait for this connection.
//!
//! The thread also checkpoints the write-ahead log, between batches and
//! after the last batch's answer has gone. A checkpoint on any other
//! connection copies the log into the database but can never let it start
//! over: SQLite rewinds the log only in a write transaction that begins
//! when every frame has been copied, and under steady writes a batch has
//! always been committed since another connection's checkpoint began. The
//! log then grew without end (440 MB in 8 s of `benches/http/load.sh`'s
//! events, the whole disk in time).

use std::path::Path;
use std::sync::mpsc;

use rusqlite::types::{Null, ToSql};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::{SqlValue, StoreError, WriteBatch};

/// Statements kept prepared: the session upsert, the document upsert, the
/// session delete and each extension statement text (a few dozen kinds).
const PREPARED_STATEMENTS: usize = 512;

/// The columns of `ors_sessions`, in the order a row's values are bound.
const SESSION_UPSERT: &str = "INSERT INTO ors_sessions (id, root, parent, invokeid, src, \
     doc_hash, status, seq, started_at, ended_at, idealtime, events, wake_at, updated_at, \
     snapshot) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
     ON CONFLICT (id) DO UPDATE SET root = excluded.root, parent = excluded.parent, \
     invokeid = excluded.invokeid, src = excluded.src, doc_hash = excluded.doc_hash, \
     status = excluded.status, seq = excluded.seq, started_at = excluded.started_at, \
     ended_at = excluded.ended_at, idealtime = excluded.idealtime, events = excluded.events, \
     wake_at = excluded.wake_at, updated_at = excluded.updated_at, snapshot = excluded.snapshot";

const DOCUMENT_UPSERT: &str = "INSERT INTO ors_documents (hash, location, text, stored_at) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (hash) DO UPDATE SET stored_at = excluded.stored_at";

const SESSION_DELETE: &str = "DELETE FROM ors_sessions WHERE id = ?1";

/// After this many transactions (each carrying one or more batches) the
/// writer checkpoints the log before it takes the next one.
const CHECKPOINT_EVERY_BATCHES: u32 = 64;

/// ... or after this long since its last checkpoint, whichever comes
/// first (ms).
const CHECKPOINT_EVERY_MS: u64 = 100;

/// Most session changes one transaction carries when several batches are
/// waiting (as the committer task groups them).
const MAX_GROUP_ROWS: usize = 20_000;

/// What a batch's sender runs once the transaction that carried it ended,
/// on the writer's thread.
pub(super) type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Checked before each transaction (the store's files are still the ones
/// opened); an error refuses the whole group.
pub(super) type Precheck = Box<dyn Fn() -> Result<(), StoreError> + Send>;

struct Job {
    batch: WriteBatch,
    done: Done,
}

/// Why a group's transaction did not commit, given to each of its batches.
#[derive(Clone)]
enum Failure {
    Lost(String),
    Write(String),
}

impl Failure {
    fn of(e: StoreError) -> Failure {
        match e {
            StoreError::Lost(why) => Failure::Lost(why),
            StoreError::Write(why) => Failure::Write(why),
            other => Failure::Write(other.to_string()),
        }
    }

    fn error(self) -> StoreError {
        match self {
            Failure::Lost(why) => StoreError::Lost(why),
            Failure::Write(why) => StoreError::Write(why),
        }
    }
}

/// When the writer's next checkpoint is due: batches written and time
/// since the last one.
struct CheckpointDue {
    batches: u32,
    last: std::time::Instant,
}

impl CheckpointDue {
    fn new() -> CheckpointDue {
        CheckpointDue {
            batches: 0,
            last: std::time::Instant::now(),
        }
    }

    /// How long the writer may wait for a batch before the checkpoint of
    /// the batches written since the last one is due; `None` when there
    /// are none.
    fn wait(&self) -> Option<std::time::Duration> {
        (self.batches > 0).then(|| {
            std::time::Duration::from_millis(CHECKPOINT_EVERY_MS)
                .saturating_sub(self.last.elapsed())
        })
    }

    /// Counts a written batch; whether a checkpoint is due now.
    fn after_batch(&mut self) -> bool {
        self.batches += 1;
        self.batches >= CHECKPOINT_EVERY_BATCHES
            || self.last.elapsed() >= std::time::Duration::from_millis(CHECKPOINT_EVERY_MS)
    }

    fn done(&mut self) {
        self.batches = 0;
        self.last = std::time::Instant::now();
    }
}

/// Copies the log into the database (`PASSIVE`: it waits for no reader).
/// A reader still using older frames keeps them, and the log is rewound
/// at a later checkpoint. Its failure is only logged: the log is then
/// longer for a while, and nothing committed is at risk.
fn checkpoint(conn: &Connection) {
    if let Err(e) = run_pragma(conn, "PRAGMA wal_checkpoint(PASSIVE)") {
        tracing::warn!(error = %e, "SQLite checkpoint failed");
    }
}

/// Hands batches to the writer thread; the thread ends when this is
/// dropped.
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Opens a connection to the database at `path` (which must exist, in
    /// WAL mode: the sqlx pool made it so) with `synchronous` (`NORMAL` or
    /// `FULL`) and starts the thread that writes through it, running
    /// `precheck` before each transaction.
    pub(super) fn open(
        path: &Path,
        synchronous: &str,
        precheck: Precheck,
    ) -> Result<Writer, StoreError> {
        let conn = connect(path, synchronous).map_err(|e| {
            StoreError::Config(format!("cannot open {} for writing: {e}", path.display()))
        })?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (path, synchronous) = (path.to_path_buf(), synchronous.to_string());
        std::thread::Builder::new()
            .name("ors-sqlite-writer".into())
            .spawn(move || run(conn, &path, &synchronous, &precheck, &queue))
            .map_err(|e| StoreError::Config(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Writer { jobs })
    }

    /// Queues `batch`; `done` runs on the writer's thread once the
    /// transaction carrying it (with the other batches waiting) ended, or
    /// at once when the writer has stopped.
    pub(super) fn submit(&self, batch: WriteBatch, done: Done) {
        if let Err(e) = self.jobs.send(Job { batch, done }) {
            (e.0.done)(Err(StoreError::Write(
                "the SQLite writer has stopped".into(),
            )));
        }
    }

    /// Writes `batch` in one transaction; answers once it is committed.
    /// Errors: [`StoreError::Write`] with SQLite's message (`database or
    /// disk is full`, ...), the transaction rolled back; what `precheck`
    /// answered ([`StoreError::Lost`]).
    pub(super) async fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.submit(
            batch,
            Box::new(move |result| {
                let _ = done.send(result);
            }),
        );
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Write("the SQLite writer has stopped".into())),
        }
    }
}

impl super::GroupCommit for Writer {
    fn submit(&self, batch: WriteBatch, done: Done) {
        Writer::submit(self, batch, done);
    }
}

/// The writer's thread: takes every batch waiting (up to
/// [`MAX_GROUP_ROWS`] session changes) into one transaction, answers each,
/// and checkpoints between transactions. Ends when every [`Writer`] is
/// dropped.
fn run(
    mut conn: Connection,
    path: &Path,
    synchronous: &str,
    precheck: &Precheck,
    queue: &mpsc::Receiver<Job>,
) {
    let mut due = CheckpointDue::new();
    loop {
        // Batches since the last checkpoint: wait for the next one only
        // until the checkpoint is due, so that the last batches of a
        // burst are copied too.
        let first = match due.wait() {
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
            Some(wait) => match queue.recv_timeout(wait) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if conn.is_autocommit() {
                        checkpoint(&conn);
                    }
                    due.done();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut rows = first.batch.upserts.len() + first.batch.deletes.len();
        let mut group = vec![first];
        while rows < MAX_GROUP_ROWS {
            match queue.try_recv() {
                Ok(job) => {
                    rows += job.batch.upserts.len() + job.batch.deletes.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        // Merged as the committer task merges, one batch or many: each
        // session's last change wins, a delete included.
        let batch = super::committer::merge(group.iter_mut().map(|j| std::mem::take(&mut j.batch)));
        let result = precheck()
            .map_err(Failure::of)
            .and_then(|()| write(&mut conn, &batch).map_err(|e| Failure::Write(e.to_string())));
        if result.is_err() && !conn.is_autocommit() {
            // SQLite can keep the transaction open when its COMMIT fails
            // (SQLITE_FULL); later commits would then only end savepoints
            // inside it: acknowledged, never on disk. Rolled back, or the
            // connection is replaced.
            let _ = conn.execute_batch("ROLLBACK");
            if !conn.is_autocommit() {
                match connect(path, synchronous) {
                    Ok(fresh) => conn = fresh,
                    Err(e) => tracing::error!(error = %e,
                        "the SQLite writer could not open its connection again"),
                }
            }
        }
        drop(batch);
        if let Err(Failure::Lost(why) | Failure::Write(why)) = &result {
            tracing::error!(error = %why, "store write failed; its events are refused");
        }
        for job in group {
            (job.done)(result.clone().map_err(Failure::error));
        }
        if due.after_batch() && conn.is_autocommit() {
            checkpoint(&conn);
            due.done();
        }
    }
}

/// A connection to the database at `path` set up as the pool's are
/// (`sqlite::open`): durability as configured, no checkpoint inside a
/// commit (the thread runs them after answering), a WAL grown in a burst
/// cut back to 64 MiB once it starts over.
fn connect(path: &Path, synchronous: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    for pragma in [
        format!("PRAGMA synchronous = {synchronous}"),
        "PRAGMA busy_timeout = 10000".to_string(),
        "PRAGMA wal_autocheckpoint = 0".to_string(),
        "PRAGMA journal_size_limit = 67108864".to_string(),
    ] {
        run_pragma(&conn, &pragma)?;
    }
    conn.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
    Ok(conn)
}

/// Runs a pragma, reading (and ignoring) any row it answers with.
fn run_pragma(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    let mut statement = conn.prepare(sql)?;
    let mut rows = statement.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// The batch in one transaction, in the order the sqlx path writes it:
/// documents, sessions (each id's last row only), deleted sessions, then
/// the extensions' statements in order. Taking the write lock at `BEGIN`
/// (`IMMEDIATE`) makes a busy database wait there, under `busy_timeout`,
/// rather than fail halfway.
fn write(conn: &mut Connection, batch: &WriteBatch) -> rusqlite::Result<()> {
    let now = crate::host::wall_clock_ms() as i64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !batch.documents.is_empty() {
        let mut upsert = tx.prepare_cached(DOCUMENT_UPSERT)?;
        for doc in &batch.documents {
            upsert.execute((&doc.hash, &doc.location, &*doc.text, now))?;
        }
    }
    if !batch.upserts.is_empty() {
        let mut last = std::collections::HashMap::with_capacity(batch.upserts.len());
        for (i, row) in batch.upserts.iter().enumerate() {
            last.insert(row.id.as_str(), i);
        }
        let mut upsert = tx.prepare_cached(SESSION_UPSERT)?;
        for (i, row) in batch.upserts.iter().enumerate() {
            if last.get(row.id.as_str()) != Some(&i) {
                continue;
            }
            let values: [&dyn ToSql; 15] = [
                &row.id,
                &row.root,
                &row.parent,
                &row.invokeid,
                &row.src,
                &row.doc_hash,
                &row.status,
                &row.seq,
                &row.started_at,
                &row.ended_at,
                &row.idealtime,
                &row.events,
                &row.wake_at,
                &now,
                &row.snapshot,
            ];
            upsert.execute(values.as_slice())?;
        }
    }
    if !batch.deletes.is_empty() {
        let mut delete = tx.prepare_cached(SESSION_DELETE)?;
        for id in &batch.deletes {
            delete.execute([id])?;
        }
    }
    for statement in &batch.statements {
        let mut prepared = tx.prepare_cached(&statement.sql)?;
        bind_numbered(&mut prepared, &statement.args)?;
        prepared.raw_execute()?;
    }
    tx.commit()
}

/// Binds `args` to a statement written with `$1`, `$2`, … (the stores'
/// common dialect; SQLite takes `$1` as a parameter named "$1", numbered
/// in order of first appearance) or with `?`s (bound in order). Each
/// parameter's name is read by its index, so this is linear in the number
/// of parameters.
fn bind_numbered(
    statement: &mut rusqlite::Statement<'_>,
    args: &[SqlValue],
) -> rusqlite::Result<()> {
    let count = statement.parameter_count();
    for index in 1..=count {
        let arg = match statement.parameter_name(index) {
            Some(name) => name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| args.get(n.wrapping_sub(1))),
            None => args.get(index - 1),
        };
        let Some(arg) = arg else {
            return Err(rusqlite::Error::InvalidParameterCount(args.len(), count));
        };
        match arg {
            SqlValue::Null => statement.raw_bind_parameter(index, Null)?,
            SqlValue::Int(n) => statement.raw_bind_parameter(index, n)?,
            SqlValue::Text(t) => statement.raw_bind_parameter(index, t.as_str())?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL database in a directory of its own with `schema` made, a
    /// connection to read it (checkpoints off, as the server's) and a
    /// writer on it.
    fn scratch(label: &str, schema: &str) -> (std::path::PathBuf, Connection, Writer) {
        let dir = std::env::temp_dir().join(format!(
            "{label}-{}-{}",
            std::process::id(),
            crate::ids::object_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.db");
        let setup = Connection::open(&path).unwrap();
        run_pragma(&setup, "PRAGMA journal_mode = WAL").unwrap();
        run_pragma(&setup, "PRAGMA wal_autocheckpoint = 0").unwrap();
        setup.execute_batch(schema).unwrap();
        let writer = Writer::open(&path, "NORMAL", Box::new(|| Ok(()))).unwrap();
        (dir, setup, writer)
    }

    /// `$n` names bind the nth argument wherever, and however often, the
    /// statement names them; a missing argument is an error, not a NULL.
    #[test]
    fn numbered_parameters_bind_by_their_number() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT, b INTEGER, c TEXT)")
            .unwrap();
        let mut insert = conn
            .prepare("INSERT INTO t (b, a, c) VALUES ($2, $1, $1 || $3)")
            .unwrap();
        bind_numbered(
            &mut insert,
            &[SqlValue::Text("x".into()), SqlValue::Int(7), SqlValue::Null],
        )
        .unwrap();
        insert.raw_execute().unwrap();
        bind_numbered(
            &mut insert,
            &[
                SqlValue::Text("y".into()),
                SqlValue::Int(8),
                SqlValue::Text("z".into()),
            ],
        )
        .unwrap();
        insert.raw_execute().unwrap();
        let rows: Vec<(String, i64, Option<String>)> = conn
            .prepare("SELECT a, b, c FROM t ORDER BY b")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("x".to_string(), 7, None),
                ("y".to_string(), 8, Some("yz".to_string()))
            ]
        );
        assert!(bind_numbered(&mut insert, &[SqlValue::Int(1)]).is_err());
    }

    /// A batch that fails halfway leaves nothing behind, and the writer
    /// goes on with the next one on a connection with no transaction open.
    #[tokio::test]
    async fn a_failed_batch_leaves_nothing_and_the_next_one_commits() {
        let (dir, setup, writer) = scratch(
            "ors-sqlite-writer-test",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        );
        let insert = |id: i64, v: Option<&str>| {
            super::super::Statement::new(
                "INSERT INTO t (id, v) VALUES ($1, $2)",
                vec![
                    SqlValue::Int(id),
                    v.map_or(SqlValue::Null, |v| SqlValue::Text(v.into())),
                ],
            )
        };
        let batch = |statements| WriteBatch {
            statements,
            ..WriteBatch::default()
        };
        let failed = writer
            .write(batch(vec![insert(1, Some("a")), insert(2, None)]))
            .await;
        assert!(
            matches!(&failed, Err(StoreError::Write(m)) if m.contains("NOT NULL")),
            "{failed:?}"
        );
        writer
            .write(batch(vec![insert(3, Some("c"))]))
            .await
            .unwrap();
        let ids: Vec<i64> = setup
            .prepare("SELECT id FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, [3]);
        drop(writer);
        drop(setup);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Under steady writes the log starts over: two thousand batches, each
    /// rewriting the same rows, leave a log of a few checkpoints' worth of
    /// frames, not one frame run per batch, with no other connection
    /// checkpointing.
    #[tokio::test]
    async fn the_log_starts_over_under_steady_writes() {
        let (dir, setup, writer) = scratch(
            "ors-sqlite-writer-wal",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        );
        let row = "x".repeat(900);
        for round in 0..2000i64 {
            let statements = (0..16)
                .map(|id| {
                    super::super::Statement::new(
                        "INSERT INTO t (id, v) VALUES ($1, $2) \
                         ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                        vec![SqlValue::Int(id), SqlValue::Text(format!("{round}{row}"))],
                    )
                })
                .collect();
            writer
                .write(WriteBatch {
                    statements,
                    ..WriteBatch::default()
                })
                .await
                .unwrap();
        }
        let log = std::fs::metadata(dir.join("w.db-wal")).unwrap().len();
        // One batch is about 6 frames of 4 KiB + 24 bytes; 2 000 of them
        // without a restart would be ~50 MB.
        let bound = 2 * u64::from(CHECKPOINT_EVERY_BATCHES) * 8 * 4120;
        assert!(log < bound, "the log is {log} bytes (bound {bound})");
        let count: i64 = setup
            .query_row("SELECT count(*) FROM t WHERE v LIKE '1999x%'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(count, 16);
        drop(writer);
        drop(setup);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Batches queued while the writer is busy go into one transaction
    /// in the order they came: each is answered, in that order, and the
    /// last row written for a key is the one kept.
    #[test]
    fn queued_batches_are_answered_in_order_and_the_last_row_wins() {
        let (dir, setup, writer) = scratch(
            "ors-sqlite-writer-group",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
        );
        let (answers, answered) = mpsc::channel();
        for k in 0..300i64 {
            let answers = answers.clone();
            let statement = super::super::Statement::new(
                "INSERT INTO t (id, v) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                vec![SqlValue::Int(k)],
            );
            writer.submit(
                WriteBatch {
                    statements: vec![statement],
                    ..WriteBatch::default()
                },
                Box::new(move |result| {
                    answers.send((k, result.is_ok())).unwrap();
                }),
            );
        }
        drop(answers);
        let got: Vec<(i64, bool)> = answered.iter().collect();
        assert_eq!(got, (0..300).map(|k| (k, true)).collect::<Vec<_>>());
        let v: i64 = setup
            .query_row("SELECT v FROM t WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 299);
        drop(writer);
        drop(setup);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
