//! The store matrix: a fresh SQLite file per test and, when
//! `ORS_TEST_POSTGRES_URL` names a PostgreSQL server (as a user allowed to
//! create databases), a fresh database per test on it. Without that
//! variable PostgreSQL is skipped with a note ([`postgres_admin_url`] is
//! the one place that decides), except under CI (`CI=true`), where a
//! skipped backend would hide failures, so the tests fail instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ors::store::{Store, StoreLocation};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

/// The variable naming the PostgreSQL server the tests may use.
pub const POSTGRES_URL_VAR: &str = "ORS_TEST_POSTGRES_URL";

/// The PostgreSQL admin URL from `ORS_TEST_POSTGRES_URL`, or `None` after
/// [`super::skips::skip`] (under CI a missing URL fails the test instead).
pub fn postgres_admin_url(what: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ => {
            super::skips::skip(
                what,
                &format!(
                    "{POSTGRES_URL_VAR} is not set; to enable: \
                     export {POSTGRES_URL_VAR}=$(bash .ci/postgres.sh | tail -1)"
                ),
            );
            None
        }
    }
}

/// A fresh database on every backend under test: SQLite, and PostgreSQL
/// when [`postgres_admin_url`] gives one.
pub async fn test_databases() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::sqlite()];
    if let Some(url) = postgres_admin_url("the PostgreSQL store") {
        dbs.push(TestDb::postgres(&url).await);
    }
    dbs
}

/// A name no other test (in this or another process) uses.
pub fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}_{n}_{nanos}", std::process::id())
}

/// `url` with its database name replaced by `database` (query kept).
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

enum Cleanup {
    /// The temporary directory holding the SQLite file (and its WAL).
    Sqlite(PathBuf),
    /// The database to drop, and the URL to connect to for dropping it.
    Postgres { admin_url: String, database: String },
}

/// One empty database for one test; removed when dropped (also when the
/// test panics). Drop every store opened on it first.
pub struct TestDb {
    /// "sqlite" or "postgres".
    pub label: &'static str,
    /// Where the database is.
    pub location: StoreLocation,
    cleanup: Cleanup,
}

impl TestDb {
    /// A SQLite file in a new temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!("ors_store_test_{}", unique_name()));
        TestDb {
            label: "sqlite",
            location: StoreLocation::Sqlite {
                path: dir.join("ors.db"),
                full_sync: false,
            },
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A new database on the PostgreSQL server at `admin_url`.
    pub async fn postgres(admin_url: &str) -> TestDb {
        let database = format!("ors_test_{}", unique_name());
        let mut conn = PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"));
        conn.execute(format!("CREATE DATABASE {database}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create database {database}: {e}"));
        let _ = conn.close().await;
        TestDb {
            label: "postgres",
            location: StoreLocation::Postgres {
                url: url_with_database(admin_url, &database),
            },
            cleanup: Cleanup::Postgres {
                admin_url: admin_url.to_string(),
                database,
            },
        }
    }

    /// A store on this database (running migrations).
    pub async fn open(&self) -> Arc<dyn Store> {
        ors::store::open(&self.location, 4, ors::gms::records::MIGRATIONS)
            .await
            .unwrap_or_else(|e| panic!("{}: store opens: {e}", self.label))
            .expect("a persistent location gives a store")
    }

    /// The URL `ors serve --store` takes for this database.
    pub fn url(&self) -> String {
        match &self.location {
            StoreLocation::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            StoreLocation::Postgres { url } => url.clone(),
            StoreLocation::None => unreachable!("test databases persist"),
        }
    }

    /// The migrations recorded: the core's versions as `core:N`, then the
    /// extensions' as `component:N`.
    pub async fn applied_migrations(&self) -> Vec<String> {
        self.strings(
            "SELECT 'core:' || CAST(version AS TEXT) FROM ors_migrations \
             UNION ALL SELECT component || ':' || CAST(version AS TEXT) \
             FROM ors_component_migrations ORDER BY 1",
        )
        .await
    }

    /// The keys of the stored documents, in order.
    pub async fn document_keys(&self) -> Vec<String> {
        self.strings("SELECT hash FROM ors_documents ORDER BY hash")
            .await
    }

    /// The first column of a query's rows, as text, on a connection of its
    /// own (not through the store under test).
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        match &self.location {
            StoreLocation::Sqlite { path, .. } => {
                let mut conn = SqliteConnectOptions::new()
                    .filename(path)
                    .connect()
                    .await
                    .expect("sqlite connects");
                let rows: Vec<String> = sqlx::query_scalar(sql)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("sqlite: {sql}: {e}"));
                let _ = conn.close().await;
                rows
            }
            StoreLocation::Postgres { url } => {
                let mut conn = PgConnection::connect(url).await.expect("postgres connects");
                let rows: Vec<String> = sqlx::query_scalar(sql)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("postgres: {sql}: {e}"));
                let _ = conn.close().await;
                rows
            }
            StoreLocation::None => unreachable!("test databases persist"),
        }
    }

    /// Runs raw SQL on a connection of its own (writing rows as an older
    /// version of the server left them).
    pub async fn execute_raw(&self, statements: &[String]) {
        match &self.location {
            StoreLocation::Sqlite { path, .. } => {
                let mut conn = SqliteConnectOptions::new()
                    .filename(path)
                    .connect()
                    .await
                    .expect("sqlite connects");
                for sql in statements {
                    conn.execute(sql.as_str())
                        .await
                        .unwrap_or_else(|e| panic!("sqlite: {sql}: {e}"));
                }
                let _ = conn.close().await;
            }
            StoreLocation::Postgres { url } => {
                let mut conn = PgConnection::connect(url).await.expect("postgres connects");
                for sql in statements {
                    conn.execute(sql.as_str())
                        .await
                        .unwrap_or_else(|e| panic!("postgres: {sql}: {e}"));
                }
                let _ = conn.close().await;
            }
            StoreLocation::None => unreachable!("test databases persist"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres {
                admin_url,
                database,
            } => {
                // Best effort, on a runtime of its own so that it also works
                // while a test panics inside the test's runtime.
                let admin_url = admin_url.clone();
                let database = database.clone();
                let dropper = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(async move {
                        let Ok(mut conn) = PgConnection::connect(&admin_url).await else {
                            eprintln!("note: could not drop test database {database}");
                            return;
                        };
                        let sql = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
                        if let Err(e) = conn.execute(sql.as_str()).await {
                            eprintln!("note: could not drop test database {database}: {e}");
                        }
                        let _ = conn.close().await;
                    });
                });
                let _ = dropper.join();
            }
        }
    }
}

/// Runs `test` once per database of the matrix, with that database and a
/// store opened on it (the store is the test's to drop).
pub async fn each_store(mut test: impl AsyncFnMut(&TestDb, Arc<dyn Store>)) {
    for db in test_databases().await {
        let store = db.open().await;
        test(&db, store).await;
    }
}

/// The key stores used for a document before SHA-256: 128-bit FNV-1a of
/// the text as 32 hex digits (offset basis and prime from the FNV
/// reference), for writing databases as an older `ors` left them.
pub fn legacy_document_hash(text: &str) -> String {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in text.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    format!("{h:032x}")
}
