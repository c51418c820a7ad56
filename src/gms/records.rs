//! Callback records: what GMS keeps about each Callback service instance
//! (`_id`, `_callback_state`, `_customer_number`, times, the ORS session
//! that handles it, the customer's user data). Records live in the
//! session store (table `ors_callbacks`, written through the group
//! committer so a reply is sent only once its record is durable), or in
//! memory when the server runs with `--store none`. A record is removed
//! `_ttl` seconds after its desired time. The records this server wrote
//! last are kept in memory too, so reading one back (each chat request
//! does) costs no store read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::store::{CommitHandle, Migration, SqlValue, Statement, Store, WriteBatch};

/// The callback table, in the store's SQL (the same for SQLite and
/// PostgreSQL). A database made before GMS became an extension already has
/// it, hence `IF NOT EXISTS`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "gms",
        version: 1,
        statements: &[
            "CREATE TABLE IF NOT EXISTS ors_callbacks (
            id TEXT PRIMARY KEY,
            service TEXT NOT NULL,
            customer_number TEXT NOT NULL,
            state TEXT NOT NULL,
            session_id TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            record TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS ors_callbacks_customer \
            ON ors_callbacks (customer_number, created_at)",
            "CREATE INDEX IF NOT EXISTS ors_callbacks_state \
            ON ors_callbacks (service, state, created_at)",
            "CREATE INDEX IF NOT EXISTS ors_callbacks_expiry ON ors_callbacks (expires_at)",
        ],
    },
    Migration {
        component: "gms",
        version: 2,
        statements: &[
            "ALTER TABLE ors_callbacks ADD COLUMN gms_user TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX IF NOT EXISTS ors_callbacks_owner ON ors_callbacks (gms_user, created_at)",
        ],
    },
    Migration {
        component: "gms",
        version: 3,
        statements: &[
            // GMS's states: a cancelled or failed callback is COMPLETED
            // (with its reason; records are read through
            // `CallbackRow::in_gms_states`, which rewrites the record).
            "UPDATE ors_callbacks SET state = 'COMPLETED' WHERE state IN ('CANCELLED', 'FAILED')",
        ],
    },
    Migration {
        component: "gms",
        version: 4,
        statements: &[
            // The throttles count a service's creates in a time window.
            "CREATE INDEX IF NOT EXISTS ors_callbacks_created ON ors_callbacks (service, created_at)",
        ],
    },
    Migration {
        component: "gms",
        version: 5,
        statements: &[
            // Scheduled callbacks: when each is due to start, and how (the
            // session's document and start parameters, as JSON).
            "CREATE TABLE IF NOT EXISTS ors_callback_schedule (
            id TEXT PRIMARY KEY,
            due_at BIGINT NOT NULL,
            start TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS ors_callback_schedule_due ON ors_callback_schedule (due_at)",
        ],
    },
    Migration {
        component: "gms",
        version: 6,
        statements: &[
            // How each unfinished callback's session starts (JSON
            // `{"src", "params"}`), to start it again if it dies.
            "CREATE TABLE IF NOT EXISTS ors_callback_start (
            id TEXT PRIMARY KEY,
            start TEXT NOT NULL)",
        ],
    },
    Migration {
        component: "gms",
        version: 7,
        statements: &[
            // The paused services (see `super::pause`).
            "CREATE TABLE IF NOT EXISTS ors_callback_paused (service TEXT PRIMARY KEY)",
        ],
    },
    Migration {
        component: "gms",
        version: 8,
        statements: &[
            // The per-number checks at create (in-queue, daily throttle)
            // look up one service's callbacks of one number: without this
            // index SQLite may walk the whole day's callbacks of the
            // service by (service, created_at) instead.
            "CREATE INDEX IF NOT EXISTS ors_callbacks_service_number \
             ON ors_callbacks (service, customer_number, created_at)",
        ],
    },
    // The tables that keep chats in progress over a restart.
    super::continuity::MIGRATION,
];

/// A scheduled callback waiting for its time: its record, when it is due
/// (ms since the Unix epoch), and how its session starts (JSON
/// `{"src": …, "params": {…}}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    /// The record (state `SCHEDULED`).
    pub row: CallbackRow,
    /// When it is submitted: its desired time less the service's
    /// `_request_execution_time_buffer`.
    pub due_at: i64,
    /// How its session starts.
    pub start: String,
}

/// Writes `statements` in one transaction through the group committer;
/// returns once they are durable.
async fn commit(commits: &CommitHandle, statements: Vec<Statement>) -> Result<(), RecordsError> {
    commits
        .submit(WriteBatch {
            statements,
            ..WriteBatch::default()
        })
        .await
        .map_err(|_| RecordsError::CommitterStopped)?
        .map_err(RecordsError::from)
}

/// How many records [`Records::get`] answers from memory: the ones this
/// server wrote most recently (a record is ~1 KiB with little user data;
/// at the default user-data limit of 16 KiB the worst case is ~270 MiB).
pub const WRITTEN_RECORDS: usize = 16_384;

/// The records this server wrote last, by id, least recently used first
/// out. Filled only by the committer, in commit order, once a record is
/// durable, and never by a read: a read could race a commit and put back
/// the older row. So an entry is never older than the store's row (this
/// server is the table's only writer), and `get` can answer from it.
#[derive(Clone)]
struct Written(Arc<Mutex<hashlink::LruCache<String, CallbackRow>>>);

impl Written {
    fn new() -> Written {
        Written(Arc::new(Mutex::new(hashlink::LruCache::new(
            WRITTEN_RECORDS,
        ))))
    }

    fn get(&self, id: &str) -> Option<CallbackRow> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn put(&self, row: CallbackRow) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(row.id.clone(), row);
    }

    fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Forgets the records that expire before `cut` (ms since the Unix
    /// epoch), as a purge deletes them.
    fn forget_expiring_before(&self, cut: i64) {
        let mut lru = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = lru
            .iter()
            .filter(|(_, r)| r.expires_at < cut)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            lru.remove(&id);
        }
    }
}

/// Writes `row` with `statements` (its upsert among them) in one
/// transaction through the group committer; returns once they are
/// durable, `row` by then in `written`.
async fn commit_record(
    commits: &CommitHandle,
    statements: Vec<Statement>,
    row: CallbackRow,
    written: &Written,
) -> Result<(), RecordsError> {
    let (done, answer) = tokio::sync::oneshot::channel();
    let written = written.clone();
    commits.submit_then(
        WriteBatch {
            statements,
            ..WriteBatch::default()
        },
        Box::new(move |result| {
            // On the committer's thread, in commit order: a later write of
            // the same record is put after this one.
            // A failed answer does not prove nothing landed (a commit
            // whose answer was lost): the record is read from the store
            // again.
            match result {
                Ok(()) => written.put(row),
                Err(_) => written.forget(&row.id),
            }
            let _ = done.send(result);
        }),
    );
    answer
        .await
        .map_err(|_| RecordsError::CommitterStopped)?
        .map_err(RecordsError::from)
}

/// The first value of the first row `statement` answers, if any.
async fn first_value(
    store: &Arc<dyn Store>,
    statement: &Statement,
) -> Result<Option<SqlValue>, RecordsError> {
    Ok(store
        .query(statement)
        .await?
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next()))
}

/// The statement that keeps how a callback's session starts.
fn start_statement(id: &str, start: &str) -> Statement {
    Statement::new(
        "INSERT INTO ors_callback_start (id, start) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET start = excluded.start",
        vec![id.into(), start.into()],
    )
}

/// The statement that forgets how a finished callback's session started.
fn forget_start_statement(id: &str) -> Statement {
    Statement::new(
        "DELETE FROM ors_callback_start WHERE id = $1",
        vec![id.into()],
    )
}

/// The statement that removes a callback from the schedule.
fn unschedule_statement(id: &str) -> Statement {
    Statement::new(
        "DELETE FROM ors_callback_schedule WHERE id = $1",
        vec![id.into()],
    )
}

/// The statement that puts (or moves) a callback on the schedule.
fn schedule_statement(id: &str, due_at: i64, start: &str) -> Statement {
    Statement::new(
        "INSERT INTO ors_callback_schedule (id, due_at, start) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET due_at = excluded.due_at, start = excluded.start",
        vec![id.into(), due_at.into(), start.into()],
    )
}

/// The columns of `ors_callbacks`, in the order [`CallbackRow::from_values`]
/// reads them.
pub const COLUMNS: &str = "id, service, customer_number, state, session_id, created_at, \
     updated_at, expires_at, record, gms_user";

/// A callback record: the columns it is queried by, and the whole record
/// as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackRow {
    /// Service id (`_id`).
    pub id: String,
    /// The service it was created on.
    pub service: String,
    /// `_customer_number`.
    pub customer_number: String,
    /// `_callback_state` (`QUEUED`, `ROUTING`, `COMPLETED`, ...).
    pub state: String,
    /// The ORS session handling it.
    pub session_id: String,
    /// Creation time, ms since the Unix epoch.
    pub created_at: i64,
    /// Last change, ms since the Unix epoch.
    pub updated_at: i64,
    /// When the record is removed (`_ttl` after the desired time).
    pub expires_at: i64,
    /// The record as a JSON object.
    pub record: String,
    /// The device that created it (its `gms_user` header; empty when it
    /// sent none): the callback's owner.
    pub gms_user: String,
}

impl CallbackRow {
    /// The statement that inserts or replaces this row.
    fn upsert(&self) -> Statement {
        Statement::new(
            format!(
                "INSERT INTO ors_callbacks ({COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
                 session_id = excluded.session_id, updated_at = excluded.updated_at, \
                 expires_at = excluded.expires_at, record = excluded.record"
            ),
            vec![
                self.id.as_str().into(),
                self.service.as_str().into(),
                self.customer_number.as_str().into(),
                self.state.as_str().into(),
                self.session_id.as_str().into(),
                self.created_at.into(),
                self.updated_at.into(),
                self.expires_at.into(),
                self.record.as_str().into(),
                self.gms_user.as_str().into(),
            ],
        )
    }

    /// A row read back in [`COLUMNS`] order (the values a store query
    /// answers). Errors: [`RecordsError::Corrupt`] when a value is missing
    /// or of the wrong type.
    pub fn from_values(values: Vec<SqlValue>) -> Result<CallbackRow, RecordsError> {
        let mut v = values.into_iter();
        let mut text = || match v.next() {
            Some(SqlValue::Text(t)) => Ok(t),
            other => Err(RecordsError::Corrupt(format!(
                "callback row: expected text, found {other:?}"
            ))),
        };
        let (id, service, customer_number, state, session_id) =
            (text()?, text()?, text()?, text()?, text()?);
        let mut int = || match v.next() {
            Some(SqlValue::Int(n)) => Ok(n),
            other => Err(RecordsError::Corrupt(format!(
                "callback row: expected a number, found {other:?}"
            ))),
        };
        let (created_at, updated_at, expires_at) = (int()?, int()?, int()?);
        let mut text = || match v.next() {
            Some(SqlValue::Text(t)) => Ok(t),
            other => Err(RecordsError::Corrupt(format!(
                "callback row: expected text, found {other:?}"
            ))),
        };
        let (record, gms_user) = (text()?, text()?);
        Ok(CallbackRow {
            id,
            service,
            customer_number,
            state,
            session_id,
            created_at,
            updated_at,
            expires_at,
            record,
            gms_user,
        }
        .in_gms_states())
    }

    /// The row with a state written before the GMS names were used
    /// (`CANCELLED`, `FAILED`, in the column or the record) read as
    /// `COMPLETED`, the old state becoming the reason where the record
    /// gives none (a cancel's becomes `CANCELLED`).
    fn in_gms_states(mut self) -> CallbackRow {
        let legacy = |s: &str| {
            LEGACY_FINAL_STATES
                .iter()
                .any(|l| l.eq_ignore_ascii_case(s))
        };
        let mentions_legacy = LEGACY_FINAL_STATES
            .iter()
            .any(|l| self.record.contains(&format!("\"{l}\"")));
        if legacy(&self.state) {
            self.state = COMPLETED.to_string();
        }
        if !mentions_legacy {
            return self;
        }
        let Ok(Value::Object(mut record)) = serde_json::from_str::<Value>(&self.record) else {
            return self;
        };
        let Some(old) = record
            .get("_callback_state")
            .and_then(Value::as_str)
            .filter(|s| legacy(s))
            .map(str::to_ascii_uppercase)
        else {
            return self;
        };
        record.insert("_callback_state".into(), Value::from(COMPLETED));
        if old == CANCELLED || !record.contains_key("_callback_reason") {
            record.insert("_callback_reason".into(), Value::from(old));
        }
        self.state = COMPLETED.to_string();
        self.record = Value::Object(record).to_string();
        self
    }
}

/// One condition of a query by properties: the record's `key` equals
/// `value` (`key=value`), or does not (`key=!value`). `_callback_state`
/// compares without regard to case and `_customer_number` by its digits;
/// other keys compare as text.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyFilter {
    /// A record key (`_callback_state`, a user-data key, ...).
    pub key: String,
    /// The value it is compared with.
    pub value: String,
    /// `!value`: the record matches when its value differs (or it lacks
    /// the key).
    pub negated: bool,
}

impl KeyFilter {
    /// Whether a row (its `record`, read as a JSON object) meets this
    /// condition. The keys with a column of their own (`_id`,
    /// `_service_name`, `_callback_state`, `_customer_number`) are read
    /// from the column.
    pub fn matches(&self, row: &CallbackRow, record: &Map<String, Value>) -> bool {
        let column = match self.key.as_str() {
            "_id" => Some(&row.id),
            "_service_name" => Some(&row.service),
            "_callback_state" => Some(&row.state),
            "_customer_number" => Some(&row.customer_number),
            _ => None,
        };
        // `a.b`: key `b` of the object at `a` (when the record has no
        // key `a.b` itself).
        let at = || match record.get(&self.key) {
            Some(v) => Some(v),
            None => self
                .key
                .split_once('.')
                .and_then(|(outer, inner)| record.get(outer)?.get(inner)),
        };
        let found = match column {
            Some(c) => Some(c.clone()),
            None => at().filter(|v| !v.is_null()).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        };
        let equal = found.is_some_and(|found| match self.key.as_str() {
            "_callback_state" => found.eq_ignore_ascii_case(&self.value),
            "_customer_number" => normalize_number(&found) == normalize_number(&self.value),
            _ => found == self.value,
        });
        equal != self.negated
    }
}

/// How a query's [`KeyFilter`]s combine (`operand=AND|OR`; AND when
/// absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Operand {
    /// Every condition holds.
    #[default]
    And,
    /// At least one holds.
    Or,
}

/// The most records a query whose conditions name keys without a column
/// of their own looks through (the newest first) to find its matches.
pub const SCAN_ROWS: usize = 10_000;

/// Which callback records a query wants. `service`, `gms_user` and
/// `states` scope it (each, when set, must hold); `filters` are the
/// caller's conditions, combined by `operand`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallbackQuery {
    /// Service name.
    pub service: Option<String>,
    /// The owning device's `gms_user`.
    pub gms_user: Option<String>,
    /// `_callback_state` is one of these (upper case); empty: any.
    pub states: Vec<String>,
    /// Created at or after this (ms since the Unix epoch).
    pub created_from: Option<i64>,
    /// Desired time at or after this (ms since the Unix epoch).
    pub desired_from: Option<i64>,
    /// Desired time at or before this (ms since the Unix epoch).
    pub desired_until: Option<i64>,
    /// The caller's conditions on record keys.
    pub filters: Vec<KeyFilter>,
    /// How `filters` combine.
    pub operand: Operand,
    /// At most this many rows, newest first.
    pub limit: usize,
}

impl CallbackQuery {
    /// Records of `service` (any, when `None`) in the states that are not
    /// final, at most `limit`.
    pub fn unfinished(service: Option<String>, limit: usize) -> CallbackQuery {
        CallbackQuery {
            service,
            states: STATES
                .iter()
                .filter(|s| !is_final(s))
                .map(|s| s.to_string())
                .collect(),
            limit,
            ..CallbackQuery::default()
        }
    }

    /// The customer number every match must have, when the conditions
    /// pin one (an AND query with a positive `_customer_number`).
    fn pinned_number(&self) -> Option<String> {
        if self.operand != Operand::And {
            return None;
        }
        self.filters
            .iter()
            .find(|f| f.key == "_customer_number" && !f.negated)
            .map(|f| normalize_number(&f.value))
    }

    /// Whether the scope fields (not the filters) hold for a row.
    fn in_scope(&self, row: &CallbackRow) -> bool {
        self.service.as_ref().is_none_or(|s| *s == row.service)
            && self.gms_user.as_ref().is_none_or(|u| *u == row.gms_user)
            && (self.states.is_empty()
                || self
                    .states
                    .iter()
                    .any(|st| st.eq_ignore_ascii_case(&row.state)))
            && self
                .pinned_number()
                .is_none_or(|n| n == row.customer_number)
            && self.created_from.is_none_or(|from| row.created_at >= from)
    }

    /// Whether the caller's conditions hold for a row (its record).
    fn filters_match(&self, row: &CallbackRow) -> bool {
        if self.filters.is_empty() && self.desired_from.is_none() && self.desired_until.is_none() {
            return true;
        }
        let record = match record_json(row) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if self.desired_from.is_some() || self.desired_until.is_some() {
            let desired = record
                .get("_desired_time")
                .and_then(Value::as_str)
                .and_then(parse_iso_utc)
                .unwrap_or(row.created_at);
            if self.desired_from.is_some_and(|from| desired < from)
                || self.desired_until.is_some_and(|until| desired > until)
            {
                return false;
            }
        }
        if self.filters.is_empty() {
            return true;
        }
        match self.operand {
            Operand::And => self.filters.iter().all(|f| f.matches(row, &record)),
            Operand::Or => self.filters.iter().any(|f| f.matches(row, &record)),
        }
    }

    /// Whether a row matches the whole query.
    pub fn matches(&self, row: &CallbackRow) -> bool {
        self.in_scope(row) && self.filters_match(row)
    }

    /// Whether every condition is answered by the SQL itself.
    fn answered_in_sql(&self) -> bool {
        self.desired_from.is_none()
            && self.desired_until.is_none()
            && self.operand == Operand::And
            && self
                .filters
                .iter()
                .all(|f| f.key == "_customer_number" && !f.negated)
    }

    /// The query's scope in SQL (the filters are checked on the rows
    /// read, unless [`Self::answered_in_sql`]).
    fn statement(&self) -> Statement {
        let mut conditions = Vec::new();
        let mut args = Vec::new();
        for (column, value) in [
            ("service", &self.service),
            ("customer_number", &self.pinned_number()),
            ("gms_user", &self.gms_user),
        ] {
            if let Some(v) = value {
                args.push(SqlValue::Text(v.clone()));
                conditions.push(format!("{column} = ${}", args.len()));
            }
        }
        if let Some(from) = self.created_from {
            args.push(SqlValue::Int(from));
            conditions.push(format!("created_at >= ${}", args.len()));
        }
        if !self.states.is_empty() {
            let mut slots = Vec::new();
            for state in &self.states {
                args.push(SqlValue::Text(state.to_ascii_uppercase()));
                slots.push(format!("${}", args.len()));
            }
            conditions.push(format!("state IN ({})", slots.join(", ")));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let rows = if self.answered_in_sql() {
            self.limit.max(1)
        } else {
            SCAN_ROWS
        };
        Statement::new(
            format!(
                "SELECT {COLUMNS} FROM ors_callbacks {filter} \
                 ORDER BY created_at DESC, id LIMIT {rows}"
            ),
            args,
        )
    }
}

/// Created with a `_desired_time` in the future: waiting for its time.
pub const SCHEDULED: &str = "SCHEDULED";
/// Waiting in the queue (for the customer's chat, in Chat Immediate).
pub const QUEUED: &str = "QUEUED";
/// The chat arrived; an agent is being reserved and the chat routed.
pub const ROUTING: &str = "ROUTING";
/// An agent is handling it.
pub const PROCESSING: &str = "PROCESSING";
/// Held while its service is suspended.
pub const PAUSED: &str = "PAUSED";
/// Finished, whatever the outcome: `_callback_reason` says how.
pub const COMPLETED: &str = "COMPLETED";

/// Every `_callback_state` GMS names (GMS 8.5 Callback Services API), in
/// lifecycle order.
pub const STATES: &[&str] = &[SCHEDULED, QUEUED, ROUTING, PROCESSING, PAUSED, COMPLETED];

/// `_callback_reason` of a callback its customer cancelled (`DELETE`).
pub const CANCELLED: &str = "CANCELLED";
/// `_callback_reason` of a callback an administrator cancelled.
pub const CANCELLED_BY_ADMIN: &str = "CANCELLED_BY_ADMIN";
/// `_callback_reason` of a callback whose session could not be started
/// (or restarted in time).
pub const SUBMIT_FAILED: &str = "SUBMIT_FAILED";

/// The GMS state named `name` (any case), if there is one.
pub fn state_named(name: &str) -> Option<&'static str> {
    STATES
        .iter()
        .copied()
        .find(|s| s.eq_ignore_ascii_case(name.trim()))
}

/// States records written before the GMS names were used may hold; each
/// reads as `COMPLETED` with itself as the reason.
const LEGACY_FINAL_STATES: &[&str] = &["CANCELLED", "FAILED"];

/// How a record's write changes its place on the schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleChange {
    /// Not at all.
    Keep,
    /// It is due at this time (ms since the Unix epoch) and starts so
    /// (see [`Scheduled::start`]; kept as [`Self::Start`] too).
    Put(i64, String),
    /// It leaves the schedule.
    Remove,
    /// Not on the schedule: this is how its session starts (kept while
    /// it is unfinished, to start it again if it dies).
    Start(String),
}

/// Why callback records could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordsError {
    /// The store refused or could not be reached.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The group committer has stopped (the server is shutting down).
    #[error("the store committer stopped")]
    CommitterStopped,
    /// The write batch carrying the record failed.
    #[error(transparent)]
    Commit(#[from] crate::store::CommitError),
    /// A stored record could not be read back (the text says which).
    #[error("{0}")]
    Corrupt(String),
}

impl From<RecordsError> for crate::server::error::ApiError {
    /// A 503 whose body names no store detail (the detail is logged).
    fn from(e: RecordsError) -> Self {
        tracing::error!(error = %e, "callback records unavailable");
        crate::server::error::ApiError::unavailable(
            "callback records are unavailable (see the server log)",
        )
    }
}

/// Whether a state is final (no further change is accepted): only
/// `COMPLETED` is.
pub fn is_final(state: &str) -> bool {
    state == COMPLETED
}

/// Callback records over the store or memory.
pub struct Records {
    clock: super::clock::Clock,
    store: Option<Arc<dyn Store>>,
    commits: Option<CommitHandle>,
    memory: Mutex<HashMap<String, CallbackRow>>,
    /// In the store: the records this server wrote last.
    written: Written,
    /// The schedule, when the records are in memory: id → (due, start).
    memory_schedule: Mutex<HashMap<String, (i64, String)>>,
    /// How sessions start, when the records are in memory: id → start.
    memory_starts: Mutex<HashMap<String, String>>,
    /// Serialises read-modify-write updates of one record.
    updating: tokio::sync::Mutex<()>,
    /// Told of every record written, once it is durable.
    observer: std::sync::OnceLock<Observer>,
}

/// Told of every record written, once it is durable: the record as it
/// now is, the state it had (`None`: a new record), and whether its
/// desired time moved.
pub type Observer = Arc<dyn Fn(&CallbackRow, Option<&str>, bool) + Send + Sync>;

impl Records {
    /// Records in `store` written through `commits`, or in memory when
    /// either is missing.
    /// Record times are read from `clock`.
    pub fn new(
        store: Option<Arc<dyn Store>>,
        commits: Option<CommitHandle>,
        clock: super::clock::Clock,
    ) -> Records {
        let (store, commits) = match (store, commits) {
            (Some(s), Some(c)) => (Some(s), Some(c)),
            _ => (None, None),
        };
        Records {
            store,
            commits,
            clock,
            memory: Mutex::new(HashMap::new()),
            written: Written::new(),
            memory_schedule: Mutex::new(HashMap::new()),
            memory_starts: Mutex::new(HashMap::new()),
            updating: tokio::sync::Mutex::new(()),
            observer: std::sync::OnceLock::new(),
        }
    }

    /// Sets the one [`Observer`] (later calls are ignored).
    pub fn observe(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    fn tell(&self, row: &CallbackRow, old: Option<&str>, rescheduled: bool) {
        if let Some(observer) = self.observer.get() {
            observer(row, old, rescheduled);
        }
    }

    /// Writes a new record with how its session starts (see
    /// [`Self::start_of`]), in one transaction; returns once both are
    /// durable.
    pub async fn save_new(&self, row: CallbackRow, start: String) -> Result<(), RecordsError> {
        self.save_with(row.clone(), ScheduleChange::Start(start))
            .await?;
        self.tell(&row, None, false);
        Ok(())
    }

    /// How an unfinished callback's session starts (JSON `{"src",
    /// "params"}`), if it was recorded.
    pub async fn start_of(&self, id: &str) -> Result<Option<String>, RecordsError> {
        match &self.store {
            Some(store) => {
                let select = Statement::new(
                    "SELECT start FROM ors_callback_start WHERE id = $1",
                    vec![id.into()],
                );
                Ok(match first_value(store, &select).await? {
                    Some(SqlValue::Text(start)) => Some(start),
                    _ => None,
                })
            }
            None => Ok(self
                .memory_starts
                .lock()
                .ok()
                .and_then(|m| m.get(id).cloned())),
        }
    }

    /// Writes a new record; returns once it is durable.
    pub async fn save(&self, row: CallbackRow) -> Result<(), RecordsError> {
        self.save_with(row.clone(), ScheduleChange::Keep).await?;
        self.tell(&row, None, false);
        Ok(())
    }

    /// Writes a record and puts it on the schedule, in one transaction;
    /// returns once both are durable.
    pub async fn save_scheduled(
        &self,
        row: CallbackRow,
        due_at: i64,
        start: String,
    ) -> Result<(), RecordsError> {
        self.save_with(row.clone(), ScheduleChange::Put(due_at, start))
            .await?;
        self.tell(&row, None, false);
        Ok(())
    }

    /// Writes a record and changes its place on the schedule with it.
    async fn save_with(
        &self,
        row: CallbackRow,
        change: ScheduleChange,
    ) -> Result<(), RecordsError> {
        match &self.commits {
            Some(commits) => {
                let mut statements = vec![row.upsert()];
                match &change {
                    ScheduleChange::Keep => {}
                    ScheduleChange::Put(due, start) => {
                        statements.push(schedule_statement(&row.id, *due, start));
                        statements.push(start_statement(&row.id, start));
                    }
                    ScheduleChange::Remove => statements.push(unschedule_statement(&row.id)),
                    ScheduleChange::Start(start) => {
                        statements.push(start_statement(&row.id, start));
                    }
                }
                if is_final(&row.state) {
                    statements.push(forget_start_statement(&row.id));
                }
                commit_record(commits, statements, row, &self.written).await
            }
            None => {
                if let (Ok(mut schedule), Ok(mut starts)) =
                    (self.memory_schedule.lock(), self.memory_starts.lock())
                {
                    match change {
                        ScheduleChange::Keep => {}
                        ScheduleChange::Put(due, start) => {
                            starts.insert(row.id.clone(), start.clone());
                            schedule.insert(row.id.clone(), (due, start));
                        }
                        ScheduleChange::Remove => {
                            schedule.remove(&row.id);
                        }
                        ScheduleChange::Start(start) => {
                            starts.insert(row.id.clone(), start);
                        }
                    }
                    if is_final(&row.state) {
                        starts.remove(&row.id);
                    }
                }
                if let Ok(mut m) = self.memory.lock() {
                    m.insert(row.id.clone(), row);
                }
                Ok(())
            }
        }
    }

    /// The scheduled callbacks due at `now` (ms since the Unix epoch),
    /// earliest first, at most `limit`.
    pub async fn due(&self, now: i64, limit: usize) -> Result<Vec<Scheduled>, RecordsError> {
        let entries: Vec<(String, i64, String)> = match &self.store {
            Some(store) => {
                let select = Statement::new(
                    format!(
                        "SELECT id, due_at, start FROM ors_callback_schedule WHERE due_at <= $1 \
                         ORDER BY due_at, id LIMIT {}",
                        limit.max(1)
                    ),
                    vec![now.into()],
                );
                let mut out = Vec::new();
                for row in store.query(&select).await? {
                    let mut v = row.into_iter();
                    match (v.next(), v.next(), v.next()) {
                        (
                            Some(SqlValue::Text(id)),
                            Some(SqlValue::Int(due)),
                            Some(SqlValue::Text(start)),
                        ) => {
                            out.push((id, due, start));
                        }
                        other => {
                            return Err(RecordsError::Corrupt(format!(
                                "callback schedule: unexpected row {other:?}"
                            )));
                        }
                    }
                }
                out
            }
            None => {
                let mut out: Vec<(String, i64, String)> = self
                    .memory_schedule
                    .lock()
                    .map(|m| {
                        m.iter()
                            .filter(|(_, (due, _))| *due <= now)
                            .map(|(id, (due, start))| (id.clone(), *due, start.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
                out.truncate(limit.max(1));
                out
            }
        };
        let mut due = Vec::new();
        for (id, due_at, start) in entries {
            // Expired records are not returned by `get`; their schedule
            // entry goes with them.
            match self.get(&id).await? {
                Some(row) => due.push(Scheduled { row, due_at, start }),
                None => self.unschedule(&id).await?,
            }
        }
        Ok(due)
    }

    /// A callback's place on the schedule (due time, start), if it has one.
    pub async fn scheduled(&self, id: &str) -> Result<Option<(i64, String)>, RecordsError> {
        match &self.store {
            Some(store) => {
                let select = Statement::new(
                    "SELECT due_at, start FROM ors_callback_schedule WHERE id = $1",
                    vec![id.into()],
                );
                let row = store.query(&select).await?.into_iter().next();
                Ok(row.and_then(|r| {
                    let mut v = r.into_iter();
                    match (v.next(), v.next()) {
                        (Some(SqlValue::Int(due)), Some(SqlValue::Text(start))) => {
                            Some((due, start))
                        }
                        _ => None,
                    }
                }))
            }
            None => Ok(self
                .memory_schedule
                .lock()
                .ok()
                .and_then(|m| m.get(id).cloned())),
        }
    }

    /// When the earliest scheduled callback is due, if any is scheduled.
    pub async fn next_due(&self) -> Result<Option<i64>, RecordsError> {
        match &self.store {
            Some(store) => {
                let select =
                    Statement::new("SELECT MIN(due_at) FROM ors_callback_schedule", vec![]);
                Ok(match first_value(store, &select).await? {
                    Some(SqlValue::Int(n)) => Some(n),
                    _ => None,
                })
            }
            None => Ok(self
                .memory_schedule
                .lock()
                .ok()
                .and_then(|m| m.values().map(|(due, _)| *due).min())),
        }
    }

    /// Moves a callback's place on the schedule (its record is left as
    /// it is).
    pub async fn postpone(&self, id: &str, due_at: i64, start: &str) -> Result<(), RecordsError> {
        match &self.commits {
            Some(commits) => commit(commits, vec![schedule_statement(id, due_at, start)]).await,
            None => {
                if let Ok(mut m) = self.memory_schedule.lock() {
                    m.insert(id.to_string(), (due_at, start.to_string()));
                }
                Ok(())
            }
        }
    }

    /// Takes a callback off the schedule (its record is left as it is).
    pub async fn unschedule(&self, id: &str) -> Result<(), RecordsError> {
        match &self.commits {
            Some(commits) => commit(commits, vec![unschedule_statement(id)]).await,
            None => {
                if let Ok(mut m) = self.memory_schedule.lock() {
                    m.remove(id);
                }
                Ok(())
            }
        }
    }

    /// One record, if it exists (expired ones are not returned). A record
    /// this server wrote lately is answered from memory (see
    /// [`WRITTEN_RECORDS`]), any other from the store.
    pub async fn get(&self, id: &str) -> Result<Option<CallbackRow>, RecordsError> {
        let now = self.clock.now_ms();
        let row = match &self.store {
            Some(_) if let Some(row) = self.written.get(id) => Some(row),
            Some(store) => {
                let select = Statement::new(
                    format!("SELECT {COLUMNS} FROM ors_callbacks WHERE id = $1"),
                    vec![id.into()],
                );
                let rows = store.query(&select).await?;
                match rows.into_iter().next() {
                    Some(values) => Some(CallbackRow::from_values(values)?),
                    None => None,
                }
            }
            None => self.memory.lock().ok().and_then(|m| m.get(id).cloned()),
        };
        Ok(row.filter(|r| r.expires_at >= now))
    }

    /// Records matching a query, newest first.
    pub async fn query(&self, query: &CallbackQuery) -> Result<Vec<CallbackRow>, RecordsError> {
        let now = self.clock.now_ms();
        let mut rows = match &self.store {
            Some(store) => {
                let mut rows = Vec::new();
                for values in store.query(&query.statement()).await? {
                    let row = CallbackRow::from_values(values)?;
                    if query.filters_match(&row) {
                        rows.push(row);
                    }
                    if rows.len() >= query.limit.max(1) {
                        break;
                    }
                }
                rows
            }
            None => {
                let mut rows: Vec<CallbackRow> = self
                    .memory
                    .lock()
                    .map(|m| m.values().filter(|r| query.matches(r)).cloned().collect())
                    .unwrap_or_default();
                rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
                rows.truncate(query.limit.max(1));
                rows
            }
        };
        rows.retain(|r| r.expires_at >= now);
        Ok(rows)
    }

    /// Changes a record's state (and reason, and any extra fields); a
    /// record already in a final state is left alone. A record leaving
    /// `SCHEDULED` leaves the schedule in the same write. Returns the
    /// record as it now is and whether it changed, `None` when there is
    /// no such record.
    pub async fn update(
        &self,
        id: &str,
        state: &str,
        reason: Option<&str>,
        extra: Map<String, Value>,
    ) -> Result<Option<(CallbackRow, bool)>, RecordsError> {
        let state = state.to_string();
        let reason = reason.map(str::to_string);
        self.modify(id, move |row, record| {
            record.insert("_callback_state".into(), Value::from(state.clone()));
            if let Some(reason) = reason {
                record.insert("_callback_reason".into(), Value::from(reason));
            }
            record.extend(extra);
            row.state = state;
            Some(ScheduleChange::Remove)
        })
        .await
    }

    /// Reads a record that is not final, lets `change` edit the row and its
    /// record object (returning how the schedule changes with it, or
    /// `None` to leave the record as it was), stamps `_updated_time`, and
    /// writes both at once. Serialised with every other change.
    pub async fn modify(
        &self,
        id: &str,
        change: impl FnOnce(&mut CallbackRow, &mut Map<String, Value>) -> Option<ScheduleChange>,
    ) -> Result<Option<(CallbackRow, bool)>, RecordsError> {
        let _one_at_a_time = self.updating.lock().await;
        let Some(mut row) = self.get(id).await? else {
            return Ok(None);
        };
        if is_final(&row.state) {
            return Ok(Some((row, false)));
        }
        let mut record: Map<String, Value> = serde_json::from_str(&row.record)
            .map_err(|e| RecordsError::Corrupt(format!("callback record {id} is corrupt: {e}")))?;
        let old_state = row.state.clone();
        let old_desired = record.get("_desired_time").cloned();
        let Some(schedule) = change(&mut row, &mut record) else {
            return Ok(Some((row, false)));
        };
        let rescheduled = record.get("_desired_time") != old_desired.as_ref();
        let now = self.clock.now_ms();
        record.insert("_updated_time".into(), Value::from(iso_utc(now)));
        row.updated_at = now;
        row.record = Value::Object(record).to_string();
        self.save_with(row.clone(), schedule).await?;
        self.tell(&row, Some(&old_state), rescheduled);
        Ok(Some((row, true)))
    }

    /// How many of `service`'s callbacks hold a place in its queue
    /// (`QUEUED`, or `PAUSED` until the service resumes).
    pub async fn queued_count(&self, service: &str) -> Result<u64, RecordsError> {
        match &self.store {
            Some(store) => {
                let select = Statement::new(
                    "SELECT COUNT(*) FROM ors_callbacks \
                     WHERE service = $1 AND state IN ('QUEUED', 'PAUSED')",
                    vec![service.into()],
                );
                Ok(match first_value(store, &select).await? {
                    Some(SqlValue::Int(n)) => n.max(0) as u64,
                    _ => 0,
                })
            }
            None => Ok(self
                .memory
                .lock()
                .map(|m| {
                    m.values()
                        .filter(|r| {
                            r.service == service && (r.state == QUEUED || r.state == PAUSED)
                        })
                        .count() as u64
                })
                .unwrap_or(0)),
        }
    }

    /// The creation times (ms) of `service`'s callbacks created at or
    /// after `since`, the newest `most`, oldest first.
    pub async fn created_since(
        &self,
        service: &str,
        since: i64,
        most: usize,
    ) -> Result<Vec<i64>, RecordsError> {
        let mut times: Vec<i64> = match &self.store {
            Some(store) => {
                let select = Statement::new(
                    format!(
                        "SELECT created_at FROM ors_callbacks WHERE service = $1 AND created_at >= $2 \
                         ORDER BY created_at DESC LIMIT {}",
                        most.clamp(1, 10_000_000)
                    ),
                    vec![service.into(), since.into()],
                );
                store
                    .query(&select)
                    .await?
                    .into_iter()
                    .filter_map(|row| match row.into_iter().next() {
                        Some(SqlValue::Int(t)) => Some(t),
                        _ => None,
                    })
                    .collect()
            }
            None => self
                .memory
                .lock()
                .map(|m| {
                    m.values()
                        .filter(|r| r.service == service && r.created_at >= since)
                        .map(|r| r.created_at)
                        .collect()
                })
                .unwrap_or_default(),
        };
        times.sort_unstable();
        let extra = times.len().saturating_sub(most);
        times.drain(..extra);
        Ok(times)
    }

    /// A `QUEUED` callback's place among its service's `QUEUED` ones
    /// (1-based, oldest first) and how many there are.
    pub async fn queued_position(&self, row: &CallbackRow) -> Result<(u64, u64), RecordsError> {
        match &self.store {
            Some(store) => {
                let select = Statement::new(
                    "SELECT COALESCE(SUM(CASE WHEN created_at < $2 OR (created_at = $2 AND id < $3) \
                     THEN 1 ELSE 0 END), 0), COUNT(*) FROM ors_callbacks \
                     WHERE service = $1 AND state = 'QUEUED'",
                    vec![
                        row.service.as_str().into(),
                        row.created_at.into(),
                        row.id.as_str().into(),
                    ],
                );
                let found = store
                    .query(&select)
                    .await?
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let mut v = found.into_iter().map(|v| match v {
                    SqlValue::Int(n) => n.max(0) as u64,
                    _ => 0,
                });
                let ahead = v.next().unwrap_or(0);
                let total = v.next().unwrap_or(0);
                Ok((ahead + 1, total))
            }
            None => {
                let m = self.memory.lock().map_err(|_| {
                    RecordsError::Corrupt("callback records: a writer panicked".into())
                })?;
                let queued = || {
                    m.values()
                        .filter(|r| r.service == row.service && r.state == QUEUED)
                };
                let ahead = queued()
                    .filter(|r| (r.created_at, &r.id) < (row.created_at, &row.id))
                    .count() as u64;
                Ok((ahead + 1, queued().count() as u64))
            }
        }
    }

    /// How many unexpired records each service has in one of `states`
    /// (services without any are absent).
    pub async fn count_by_service(
        &self,
        states: &[&str],
    ) -> Result<std::collections::BTreeMap<String, u64>, RecordsError> {
        let now = self.clock.now_ms();
        let mut counts = std::collections::BTreeMap::new();
        match &self.store {
            Some(store) => {
                let mut args: Vec<SqlValue> = vec![now.into()];
                let mut slots = Vec::new();
                for state in states {
                    args.push(SqlValue::Text(state.to_string()));
                    slots.push(format!("${}", args.len()));
                }
                let select = Statement::new(
                    format!(
                        "SELECT service, COUNT(*) FROM ors_callbacks \
                         WHERE expires_at >= $1 AND state IN ({}) GROUP BY service",
                        slots.join(", ")
                    ),
                    args,
                );
                for row in store.query(&select).await? {
                    let mut v = row.into_iter();
                    match (v.next(), v.next()) {
                        (Some(SqlValue::Text(service)), Some(SqlValue::Int(n))) => {
                            counts.insert(service, n.max(0) as u64);
                        }
                        other => {
                            return Err(RecordsError::Corrupt(format!(
                                "callback count: expected a service and a number, found {other:?}"
                            )));
                        }
                    }
                }
            }
            None => {
                if let Ok(m) = self.memory.lock() {
                    for row in m.values() {
                        if row.expires_at >= now && states.contains(&row.state.as_str()) {
                            *counts.entry(row.service.clone()).or_insert(0) += 1;
                        }
                    }
                }
            }
        }
        Ok(counts)
    }

    /// Removes expired records; returns how many.
    pub async fn purge(&self) -> Result<u64, RecordsError> {
        self.purge_before(self.clock.now_ms()).await
    }

    /// Removes records that expire before `now` (ms since the Unix epoch);
    /// returns how many.
    pub async fn purge_before(&self, now: i64) -> Result<u64, RecordsError> {
        match &self.store {
            Some(store) => {
                let delete = Statement::new(
                    "DELETE FROM ors_callbacks WHERE expires_at < $1",
                    vec![now.into()],
                );
                let purged = store.execute(&delete).await?;
                self.written.forget_expiring_before(now);
                if purged > 0 {
                    for table in ["ors_callback_schedule", "ors_callback_start"] {
                        let orphans = Statement::new(
                            format!(
                                "DELETE FROM {table} WHERE id NOT IN (SELECT id FROM ors_callbacks)"
                            ),
                            vec![],
                        );
                        store.execute(&orphans).await?;
                    }
                }
                Ok(purged)
            }
            None => Ok(self
                .memory
                .lock()
                .map(|mut m| {
                    let before = m.len();
                    m.retain(|_, r| r.expires_at >= now);
                    (before - m.len()) as u64
                })
                .unwrap_or(0)),
        }
    }
}

/// A customer number as records are keyed and counted by it: its digits
/// only (`+1 (650) 238-8511` and `16502388511` are one number).
pub fn normalize_number(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// A customer number as the `customer_number` column holds it, so that
/// one number however written is one number: its E.164 digits (country
/// code first, no `+`) when it reads as a number of `country` (ISO 3166;
/// `+…` numbers of any country), else its digits only
/// ([`normalize_number`]).
pub fn canonical_number(number: &str, country: &str) -> String {
    let region = country
        .trim()
        .to_ascii_uppercase()
        .parse::<phonenumber::country::Id>()
        .ok();
    match phonenumber::parse(region, number.trim()) {
        Ok(parsed) => normalize_number(&parsed.format().mode(phonenumber::Mode::E164).to_string()),
        Err(_) => normalize_number(number),
    }
}

/// A record's JSON object as the API returns it.
pub fn record_json(row: &CallbackRow) -> Value {
    serde_json::from_str(&row.record).unwrap_or_else(|_| {
        let mut m = Map::new();
        m.insert("_id".into(), Value::from(row.id.clone()));
        m.insert("_callback_state".into(), Value::from(row.state.clone()));
        Value::Object(m)
    })
}

/// A time as ISO 8601 UTC with milliseconds (`2026-11-24T10:15:31.000Z`);
/// `ms` is since the Unix epoch (out of jiff's range: clamped to it).
pub fn iso_utc(ms: i64) -> String {
    let at = jiff::Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    format!("{at:.3}")
}

/// An ISO 8601 / RFC 3339 time with a zone (`2026-11-24T10:15:31Z`,
/// `…+01:00`, fractions allowed) as ms since the Unix epoch; `None` when
/// it is not one. Held to RFC 3339's ranges, which jiff's parser is
/// lenient about: no second `60` (a leap second cannot be scheduled) and
/// no offset beyond ±23:59.
pub fn parse_iso_utc(text: &str) -> Option<i64> {
    let text = text.trim();
    let time = &text[text.find(['T', 't', ' '])? + 1..];
    if time.get(6..8) == Some("60") {
        return None;
    }
    if let Some(at) = time.find(['+', '-']) {
        let hours: u32 = time.get(at + 1..at + 3)?.parse().ok()?;
        if hours > 23 {
            return None;
        }
    }
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_held_to_rfc_3339() {
        let ok = |t: &str| parse_iso_utc(t).unwrap_or_else(|| panic!("{t} is refused"));
        assert_eq!(ok("1970-01-01T00:00:01Z"), 1000);
        assert_eq!(ok(" 1970-01-01T01:00:01.5+01:00 "), 1500);
        assert_eq!(ok("1970-01-01T00:00:01-00:30"), 1_801_000);
        assert_eq!(ok("1970-01-01t00:00:01z"), 1000);
        for bad in [
            "2026-12-01T10:15:60Z",
            "2026-12-01T10:15:31+24:00",
            "2026-12-01T10:15:31-25:00",
            "2026-12-01T10:15:31",
            "2026-12-01",
            "tomorrow",
            "",
        ] {
            assert_eq!(parse_iso_utc(bad), None, "{bad:?} is accepted");
        }
    }

    #[test]
    fn one_number_however_written_is_one_number() {
        for spelling in [
            "6502384100",
            "+16502384100",
            "16502384100",
            "1-650-238-4100",
            "(650) 238-4100",
            "+1 650-238-4100",
        ] {
            assert_eq!(
                canonical_number(spelling, "US"),
                "16502384100",
                "{spelling}"
            );
        }
        assert_eq!(canonical_number("030 1234567", "DE"), "49301234567");
        assert_eq!(canonical_number("+49 30 1234567", "US"), "49301234567");
        // Not a number of the country: its digits.
        assert_eq!(canonical_number("111", "US"), "111");
        assert_eq!(canonical_number("6502384100", "nowhere"), "6502384100");
    }

    #[test]
    fn times_are_iso_8601_utc() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        // The seed's reply date, Tue, 13 Aug 2013 22:15:31 GMT.
        assert_eq!(iso_utc(1_376_432_131_250), "2013-08-13T22:15:31.250Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            parse_iso_utc("2013-08-13T22:15:31.250Z"),
            Some(1_376_432_131_250)
        );
        assert_eq!(
            parse_iso_utc("2013-08-14T00:15:31.250+02:00"),
            Some(1_376_432_131_250)
        );
        assert_eq!(parse_iso_utc("2013-08-13 22:15"), None);
        assert_eq!(parse_iso_utc("tomorrow"), None);
    }

    fn row(id: &str, number: &str, state: &str, created: i64) -> CallbackRow {
        CallbackRow {
            id: id.into(),
            service: "svc".into(),
            customer_number: number.into(),
            state: state.into(),
            session_id: "s".into(),
            created_at: created,
            updated_at: created,
            expires_at: i64::MAX,
            record: format!(r#"{{"_id":"{id}","_callback_state":"{state}"}}"#),
            gms_user: String::new(),
        }
    }

    #[test]
    fn rows_written_with_the_old_final_states_read_as_completed() {
        let values = |state: &str, record: &str| {
            vec![
                SqlValue::Text("a".into()),
                SqlValue::Text("svc".into()),
                SqlValue::Text("1".into()),
                SqlValue::Text(state.into()),
                SqlValue::Text("s".into()),
                SqlValue::Int(1),
                SqlValue::Int(1),
                SqlValue::Int(i64::MAX),
                SqlValue::Text(record.into()),
                SqlValue::Text(String::new()),
            ]
        };
        let cancelled = CallbackRow::from_values(values(
            "CANCELLED",
            r#"{"_id":"a","_callback_state":"CANCELLED","_callback_reason":"cancelled"}"#,
        ))
        .unwrap();
        assert_eq!(cancelled.state, COMPLETED);
        let json = record_json(&cancelled);
        assert_eq!(json["_callback_state"], COMPLETED);
        assert_eq!(json["_callback_reason"], CANCELLED);
        // Migration 3 already moved the column; the record still says FAILED.
        let failed = CallbackRow::from_values(values(
            "COMPLETED",
            r#"{"_id":"a","_callback_state":"FAILED","_callback_reason":"no_agent_available"}"#,
        ))
        .unwrap();
        let json = record_json(&failed);
        assert_eq!(json["_callback_state"], COMPLETED);
        assert_eq!(json["_callback_reason"], "no_agent_available");
        let failed_quietly = CallbackRow::from_values(values(
            "FAILED",
            r#"{"_id":"a","_callback_state":"FAILED"}"#,
        ))
        .unwrap();
        assert_eq!(record_json(&failed_quietly)["_callback_reason"], "FAILED");
        // A user-data value that happens to read "FAILED" is left alone.
        let fine = CallbackRow::from_values(values(
            "QUEUED",
            r#"{"_id":"a","_callback_state":"QUEUED","note":"FAILED"}"#,
        ))
        .unwrap();
        assert_eq!(fine.state, QUEUED);
        assert_eq!(record_json(&fine)["note"], "FAILED");
    }

    #[tokio::test]
    async fn memory_records_are_queried_updated_and_final_states_stick() {
        let records = Records::new(None, None, super::super::clock::Clock::system());
        records.save(row("a", "1", QUEUED, 1)).await.unwrap();
        records.save(row("b", "1", QUEUED, 2)).await.unwrap();
        records.save(row("c", "2", QUEUED, 3)).await.unwrap();
        let q = CallbackQuery {
            filters: vec![KeyFilter {
                key: "_customer_number".into(),
                value: "+1".into(),
                negated: false,
            }],
            limit: 10,
            ..CallbackQuery::default()
        };
        let ids: Vec<String> = records
            .query(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["b", "a"]);
        let (r, changed) = records
            .update("a", COMPLETED, Some("routed"), Map::new())
            .await
            .unwrap()
            .unwrap();
        assert!(changed);
        assert_eq!(record_json(&r)["_callback_reason"], "routed");
        let (r, changed) = records
            .update("a", QUEUED, Some(CANCELLED), Map::new())
            .await
            .unwrap()
            .unwrap();
        assert!(!changed);
        assert_eq!(r.state, COMPLETED);
        assert_eq!(record_json(&r)["_callback_reason"], "routed");
        assert!(
            records
                .update("zz", COMPLETED, None, Map::new())
                .await
                .unwrap()
                .is_none()
        );
        let mut old = row("d", "3", QUEUED, 0);
        old.expires_at = 5;
        records.save(old).await.unwrap();
        assert!(records.get("d").await.unwrap().is_none());
        assert_eq!(records.purge().await.unwrap(), 1);
    }
}
