//! Callback records: what GMS keeps about each Callback service instance
//! (`_id`, `_callback_state`, `_customer_number`, times, the ORS session
//! that handles it, the customer's user data). Records live in the
//! session store (table `ors_callbacks`, written through the group
//! committer so a reply is sent only once its record is durable), or in
//! memory when the server runs with `--store none`. A record is removed
//! `_ttl` seconds after its desired time.

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
];

const COLUMNS: &str = "id, service, customer_number, state, session_id, created_at, \
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

    /// A row read back in [`COLUMNS`] order.
    fn from_values(values: Vec<SqlValue>) -> Result<CallbackRow, RecordsError> {
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
        })
    }
}

/// Which callback records a query wants; `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallbackQuery {
    /// Service name.
    pub service: Option<String>,
    /// `_customer_number`.
    pub customer_number: Option<String>,
    /// `_callback_state`.
    pub state: Option<String>,
    /// The owning device's `gms_user`.
    pub gms_user: Option<String>,
    /// At most this many rows, newest first.
    pub limit: usize,
}

impl CallbackQuery {
    /// Whether a row matches (for in-memory records).
    pub fn matches(&self, row: &CallbackRow) -> bool {
        self.service.as_ref().is_none_or(|s| *s == row.service)
            && self
                .customer_number
                .as_ref()
                .is_none_or(|c| *c == row.customer_number)
            && self
                .state
                .as_ref()
                .is_none_or(|st| st.eq_ignore_ascii_case(&row.state))
            && self.gms_user.as_ref().is_none_or(|u| *u == row.gms_user)
    }

    /// The query in SQL.
    fn statement(&self) -> Statement {
        let mut conditions = Vec::new();
        let mut args = Vec::new();
        for (column, value) in [
            ("service", &self.service),
            ("customer_number", &self.customer_number),
            ("gms_user", &self.gms_user),
            (
                "UPPER(state)",
                &self.state.as_ref().map(|s| s.to_ascii_uppercase()),
            ),
        ] {
            if let Some(v) = value {
                args.push(SqlValue::Text(v.clone()));
                conditions.push(format!("{column} = ${}", args.len()));
            }
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        Statement::new(
            format!(
                "SELECT {COLUMNS} FROM ors_callbacks {filter} \
                 ORDER BY created_at DESC, id LIMIT {}",
                self.limit.max(1)
            ),
            args,
        )
    }
}

/// Waiting for the customer's chat.
pub const QUEUED: &str = "QUEUED";
/// The chat arrived; an agent is being reserved and the chat routed.
pub const ROUTING: &str = "ROUTING";
/// The chat was routed to an agent.
pub const COMPLETED: &str = "COMPLETED";
/// Cancelled by a `DELETE` before it completed.
pub const CANCELLED: &str = "CANCELLED";
/// It could not complete (`_callback_reason` says why).
pub const FAILED: &str = "FAILED";

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

/// Whether a state is final (no further change is accepted).
pub fn is_final(state: &str) -> bool {
    matches!(state, COMPLETED | CANCELLED | FAILED)
}

/// Callback records over the store or memory.
pub struct Records {
    store: Option<Arc<dyn Store>>,
    commits: Option<CommitHandle>,
    memory: Mutex<HashMap<String, CallbackRow>>,
    /// Serialises read-modify-write updates of one record.
    updating: tokio::sync::Mutex<()>,
}

impl Records {
    /// Records in `store` written through `commits`, or in memory when
    /// either is missing.
    pub fn new(store: Option<Arc<dyn Store>>, commits: Option<CommitHandle>) -> Records {
        let (store, commits) = match (store, commits) {
            (Some(s), Some(c)) => (Some(s), Some(c)),
            _ => (None, None),
        };
        Records {
            store,
            commits,
            memory: Mutex::new(HashMap::new()),
            updating: tokio::sync::Mutex::new(()),
        }
    }

    /// Writes a record; returns once it is durable.
    pub async fn save(&self, row: CallbackRow) -> Result<(), RecordsError> {
        match &self.commits {
            Some(commits) => {
                let batch = WriteBatch {
                    statements: vec![row.upsert()],
                    ..WriteBatch::default()
                };
                commits
                    .submit(batch)
                    .await
                    .map_err(|_| RecordsError::CommitterStopped)?
                    .map_err(RecordsError::from)
            }
            None => {
                if let Ok(mut m) = self.memory.lock() {
                    m.insert(row.id.clone(), row);
                }
                Ok(())
            }
        }
    }

    /// One record, if it exists (expired ones are not returned).
    pub async fn get(&self, id: &str) -> Result<Option<CallbackRow>, RecordsError> {
        let now = crate::host::wall_clock_ms() as i64;
        let row = match &self.store {
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
        let now = crate::host::wall_clock_ms() as i64;
        let mut rows = match &self.store {
            Some(store) => store
                .query(&query.statement())
                .await?
                .into_iter()
                .map(CallbackRow::from_values)
                .collect::<Result<_, _>>()?,
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
    /// record already in a final state is left alone. Returns the record
    /// as it now is, `None` when there is no such record.
    pub async fn update(
        &self,
        id: &str,
        state: &str,
        reason: Option<&str>,
        extra: Map<String, Value>,
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
        let now = crate::host::wall_clock_ms() as i64;
        record.insert("_callback_state".into(), Value::from(state));
        if let Some(reason) = reason {
            record.insert("_callback_reason".into(), Value::from(reason));
        }
        record.insert("_updated_time".into(), Value::from(iso_utc(now)));
        record.extend(extra);
        row.state = state.to_string();
        row.updated_at = now;
        row.record = Value::Object(record).to_string();
        self.save(row.clone()).await?;
        Ok(Some((row, true)))
    }

    /// Removes expired records; returns how many.
    pub async fn purge(&self) -> Result<u64, RecordsError> {
        self.purge_before(crate::host::wall_clock_ms() as i64).await
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
                Ok(store.execute(&delete).await?)
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

/// A record's JSON object as the API returns it.
pub fn record_json(row: &CallbackRow) -> Value {
    serde_json::from_str(&row.record).unwrap_or_else(|_| {
        let mut m = Map::new();
        m.insert("_id".into(), Value::from(row.id.clone()));
        m.insert("_callback_state".into(), Value::from(row.state.clone()));
        Value::Object(m)
    })
}

/// A time as ISO 8601 UTC with milliseconds (`2026-11-24T10:15:31.000Z`).
pub fn iso_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a
    // year, then split into 400-year eras of 146 097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_iso_8601_utc() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        // The seed's reply date, Tue, 13 Aug 2013 22:15:31 GMT.
        assert_eq!(iso_utc(1_376_432_131_250), "2013-08-13T22:15:31.250Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59.999Z");
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

    #[tokio::test]
    async fn memory_records_are_queried_updated_and_final_states_stick() {
        let records = Records::new(None, None);
        records.save(row("a", "1", QUEUED, 1)).await.unwrap();
        records.save(row("b", "1", QUEUED, 2)).await.unwrap();
        records.save(row("c", "2", QUEUED, 3)).await.unwrap();
        let q = CallbackQuery {
            customer_number: Some("1".into()),
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
            .update("a", CANCELLED, None, Map::new())
            .await
            .unwrap()
            .unwrap();
        assert!(!changed);
        assert_eq!(r.state, COMPLETED);
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
