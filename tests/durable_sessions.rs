//! Durable sessions inside one process: idle sessions hibernate and wake
//! on an event, a query or their own timer, with the functions of the
//! prelude and of their scripts intact; a graceful restart brings back
//! persisted sessions (and halted ones for queries) but not `_persist=
//! "false"` ones; halted sessions are purged after the retention time; a
//! write the store refuses is answered 503 and written again later; an
//! acknowledged event's change is in the store (SQLite, and PostgreSQL
//! through the kit's store matrix) before the reply.
//!
//! The waits here stay on the wall clock: hibernation, timers and the purge
//! run on the session workers, which are OS threads with tokio runtimes of
//! their own, so pausing the test's tokio clock does not reach them.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Api, TestServer, eventually, spawn_server};
use ors::app::Config;
use serde_json::Value;

fn scratch_dir() -> PathBuf {
    common::scratch_dir("durable")
}

fn fixture(name: &str) -> String {
    common::fixture("durable", name)
}

fn config(data_dir: &std::path::Path) -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            data_dir: data_dir.to_path_buf(),
            ..Default::default()
        },
        ..Config::default()
    };
    config.security.allowed_dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    config
}

/// The server and a client of it.
struct Server {
    server: TestServer,
    api: Api,
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Server {
    async fn start(config: Config) -> Server {
        let server = spawn_server(config).await;
        let api = server.api();
        Server { server, api }
    }

    async fn stop(self) {
        self.server.stop().await;
    }

    async fn start_src(&self, src: &str, pairs: &[(&str, &str)]) -> String {
        let mut form = vec![("src", src)];
        form.extend_from_slice(pairs);
        self.api.start_session(&form).await
    }

    /// Waits (at most 10 s) until the metric line reads `want`.
    async fn wait_metric(&self, line_start: &str, want: u64) {
        eventually(
            &format!("{line_start} never became {want}"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async move {
                let v = self.api.metric(line_start).await;
                if v == want {
                    Ok(())
                } else {
                    Err(format!("it is {v}"))
                }
            },
        )
        .await
    }
}

/// The alarm fixture's view once it has completed (its timers woke it).
async fn alarm_completed(api: &Server, alarm: &str) -> Value {
    eventually(
        "alarm never rang",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let v = api.query_ok(alarm).await;
            if v["status"] == "completed" {
                Ok(v)
            } else {
                Err(v)
            }
        },
    )
    .await
}

/// Starts `n` sleeper fixtures and bumps each twice.
async fn start_sleepers(api: &Server, n: usize) -> Vec<String> {
    let mut sleepers = Vec::new();
    for _ in 0..n {
        let id = api.start_src(&fixture("sleeper.scxml"), &[]).await;
        api.event_ok(&id, "bump").await;
        api.event_ok(&id, "bump").await;
        sleepers.push(id);
    }
    sleepers
}

const HIBERNATED: &str = "ors_sessions{state=\"hibernated\"}";
const WOKEN: &str = "ors_sessions_woken_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_hibernate_and_wake_on_events_queries_and_timers() {
    let dir = scratch_dir();
    let mut cfg = config(&dir);
    cfg.store.hibernate_after_secs = 1;
    let api = Server::start(cfg).await;
    let sleepers = start_sleepers(&api, 4).await;
    let alarm = api
        .start_src(&fixture("alarm.scxml"), &[("delay", "2500")])
        .await;
    let ephemeral = api.start_src(&fixture("ephemeral.scxml"), &[]).await;

    // Everything persisted goes to sleep; the _persist="false" one cannot.
    api.wait_metric(HIBERNATED, 5).await;
    let list = api.list("").await.body;
    let sessions = list["sessions"].as_array().expect("sessions");
    for s in sessions {
        let asleep = s["hibernated"] == Value::Bool(true);
        assert_eq!(asleep, s["sessionid"] != ephemeral.as_str(), "{s}");
    }
    let sleeper_view = sessions
        .iter()
        .find(|s| s["sessionid"] == sleepers[0].as_str())
        .expect("listed");
    assert_eq!(sleeper_view["configuration"], serde_json::json!(["idle"]));

    // An event wakes a session; its state and functions are intact.
    let woken_before = api.metric(WOKEN).await;
    api.event_ok(&sleepers[0], "bump").await;
    let v = api.query_ok(&sleepers[0]).await;
    assert_eq!(v["data"]["count"], 3);
    assert_eq!(v["data"]["tenant"], "t3");
    assert_eq!(v["data"]["label"], "bumped 3 times");
    assert!(v.get("hibernated").is_none(), "awake now: {v}");
    assert!(api.metric(WOKEN).await > woken_before);

    // A query wakes one too.
    let v = api.query_ok(&sleepers[1]).await;
    assert_eq!(v["data"]["count"], 2);
    assert_eq!(v["data"]["label"], "bumped 2 times");

    // A sleeping session's own timers wake it, and fire in order.
    let v = alarm_completed(&api, &alarm).await;
    assert_eq!(v["data"]["rang"], serde_json::json!(["first", "second"]));
    // The woken ones fall asleep again once idle.
    api.wait_metric(HIBERNATED, 4).await;
    api.event_ok(&sleepers[1], "bump").await;
    assert_eq!(api.query_ok(&sleepers[1]).await["data"]["count"], 3);
    api.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

const WARM: &str = "ors_sessions_warm";
const WOKEN_WARM: &str = "ors_sessions_woken_warm_total";

/// With a warm tier, idle sessions leave the engine but keep their state
/// in memory: events, queries and their own timers bring them back from
/// it (no store read) with their data and functions intact; past the
/// tier's byte cap the longest idle leave memory and wake from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_go_warm_and_come_back_from_memory() {
    let dir = scratch_dir();
    let mut cfg = config(&dir);
    cfg.store.warm_after_secs = 1;
    cfg.store.hibernate_after_secs = 3600;
    let api = Server::start(cfg).await;
    let sleepers = start_sleepers(&api, 3).await;
    let alarm = api
        .start_src(&fixture("alarm.scxml"), &[("delay", "2500")])
        .await;
    api.wait_metric(WARM, 4).await;
    assert_eq!(
        api.metric(HIBERNATED).await,
        4,
        "warm sessions count as hibernated"
    );
    let listed = api.list("").await.body;
    assert!(
        listed["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .all(|s| s["hibernated"] == Value::Bool(true)),
        "{listed}"
    );

    // An event and a query restore from memory; nothing is read back
    // from the store.
    api.event_ok(&sleepers[0], "bump").await;
    let v = api.query_ok(&sleepers[0]).await;
    assert_eq!(v["data"]["count"], 3);
    assert_eq!(v["data"]["tenant"], "t3");
    assert_eq!(v["data"]["label"], "bumped 3 times");
    let v = api.query_ok(&sleepers[1]).await;
    assert_eq!(v["data"]["label"], "bumped 2 times");
    // The warm alarm's timers wake it and fire in order.
    let v = alarm_completed(&api, &alarm).await;
    assert_eq!(v["data"]["rang"], serde_json::json!(["first", "second"]));
    assert!(api.metric(WOKEN_WARM).await >= 3);
    assert_eq!(api.metric(WOKEN).await, 0, "no store read");
    api.stop().await;

    // A tier of at most one byte keeps nothing: the same sessions, after
    // a restart, go to sleep in the store only and wake from it.
    let mut cfg = config(&dir);
    cfg.store.warm_after_secs = 1;
    cfg.store.hibernate_after_secs = 3600;
    cfg.store.warm_max_bytes = 1;
    let api = Server::start(cfg).await;
    api.event_ok(&sleepers[2], "bump").await;
    api.wait_metric(HIBERNATED, 3).await;
    assert_eq!(api.metric(WARM).await, 0);
    let woken = api.metric(WOKEN).await;
    api.event_ok(&sleepers[2], "bump").await;
    assert_eq!(api.query_ok(&sleepers[2]).await["data"]["count"], 4);
    assert!(api.metric(WOKEN).await > woken, "woken from the store");
    api.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_brings_back_persisted_sessions_but_not_unpersisted_ones() {
    let dir = scratch_dir();
    let api = Server::start(config(&dir)).await;
    let kept = api.start_src(&fixture("sleeper.scxml"), &[]).await;
    api.event_ok(&kept, "bump").await;
    let ephemeral = api.start_src(&fixture("ephemeral.scxml"), &[]).await;
    api.event_ok(&ephemeral, "bump").await;
    let finished = api.start_src(&fixture("sleeper.scxml"), &[]).await;
    api.event_ok(&finished, "bump").await;
    api.event_ok(&finished, "stop").await;
    api.stop().await;

    let api = Server::start(config(&dir)).await;
    assert_eq!(api.metric("ors_sessions{state=\"running\"}").await, 1);
    let list = api.list("").await.body;
    let listed: Vec<&str> = list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["sessionid"].as_str())
        .collect();
    assert_eq!(listed, vec![kept.as_str()]);
    api.event_ok(&kept, "bump").await;
    let v = api.query_ok(&kept).await;
    assert_eq!(v["data"]["count"], 2);
    assert_eq!(v["data"]["label"], "bumped 2 times");
    let r = api.query(&ephemeral).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body["error"], "session_not_found");
    // A halted session is still there to query (from the store).
    let v = api.query_ok(&finished).await;
    assert_eq!(v["status"], "completed");
    assert_eq!(v["data"]["count"], 1);
    let r = api.event(&finished, "bump", &[]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    api.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The keys of the documents table, sorted.
async fn document_keys(conn: &mut sqlx::SqliteConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT hash FROM ors_documents ORDER BY hash")
        .fetch_all(conn)
        .await
        .expect("ors_documents is readable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_store_keyed_by_the_old_hash_brings_its_sessions_back() {
    use sqlx::{ConnectOptions, Connection};
    let dir = scratch_dir();
    let api = Server::start(config(&dir)).await;
    let kept = api.start_src(&fixture("sleeper.scxml"), &[]).await;
    api.event_ok(&kept, "bump").await;
    api.stop().await;

    // Turn the store into one an older `ors` wrote: every document and the
    // sessions using it keyed by the FNV-1a hash of its text.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.join("ors.db"));
    let mut conn = options.connect().await.expect("sqlite connects");
    let documents: Vec<(String, String)> = sqlx::query_as("SELECT hash, text FROM ors_documents")
        .fetch_all(&mut conn)
        .await
        .expect("documents read");
    assert!(!documents.is_empty(), "the session's document was stored");
    let mut legacy_keys = Vec::new();
    for (hash, text) in &documents {
        assert_eq!(hash.len(), 64, "new stores key by SHA-256");
        let old = common::legacy_document_hash(text);
        for sql in [
            "UPDATE ors_sessions SET doc_hash = $1 WHERE doc_hash = $2",
            "UPDATE ors_documents SET hash = $1 WHERE hash = $2",
        ] {
            sqlx::query(sql)
                .bind(&old)
                .bind(hash)
                .execute(&mut conn)
                .await
                .expect("re-keyed to the old hash");
        }
        legacy_keys.push(old);
    }
    legacy_keys.sort();
    assert_eq!(document_keys(&mut conn).await, legacy_keys);
    let _ = conn.close().await;

    let api = Server::start(config(&dir)).await;
    api.event_ok(&kept, "bump").await;
    let v = api.query_ok(&kept).await;
    assert_eq!(v["data"]["count"], 2);
    assert_eq!(v["data"]["label"], "bumped 2 times");
    api.stop().await;

    let mut conn = options.connect().await.expect("sqlite connects");
    let mut expected: Vec<String> = documents.iter().map(|(hash, _)| hash.clone()).collect();
    expected.sort();
    assert_eq!(
        document_keys(&mut conn).await,
        expected,
        "the documents are back under their SHA-256 keys"
    );
    let _ = conn.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halted_sessions_are_purged_from_memory_and_store_after_retention() {
    let dir = scratch_dir();
    let mut cfg = config(&dir);
    cfg.limits.halted_retention_secs = 1;
    cfg.store.purge_interval_secs = 1;
    let api = Server::start(cfg).await;
    let id = api.start_src(&fixture("sleeper.scxml"), &[]).await;
    let running = api.start_src(&fixture("sleeper.scxml"), &[]).await;
    api.event_ok(&id, "stop").await;
    assert_eq!(api.query_ok(&id).await["status"], "completed");
    eventually(
        "halted session never purged",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            let r = api.query(&id).await;
            if r.status == 404 {
                Ok(())
            } else {
                Err(r.status)
            }
        },
    )
    .await;
    // Running sessions are never purged.
    assert_eq!(api.query_ok(&running).await["status"], "running");
    api.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_write_is_refused_with_503_and_written_again_later() {
    use sqlx::Connection;
    let dir = scratch_dir();
    let api = Server::start(config(&dir)).await;
    let id = api.start_src(&fixture("sleeper.scxml"), &[]).await;
    let other = api.start_src(&fixture("sleeper.scxml"), &[]).await;
    api.event_ok(&id, "bump").await;

    // Take the sessions table away behind the server's back.
    let db = format!("sqlite://{}", dir.join("ors.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&db).await.expect("open db");
    sqlx::query("ALTER TABLE ors_sessions RENAME TO ors_sessions_away")
        .execute(&mut conn)
        .await
        .expect("rename");
    let r = api.event(&id, "bump", &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["error"], "unavailable");

    // Once the store works again, the next batch (here one for another
    // session) writes the session anew, with the change whose
    // acknowledgement was refused.
    sqlx::query("ALTER TABLE ors_sessions_away RENAME TO ors_sessions")
        .execute(&mut conn)
        .await
        .expect("rename back");
    conn.close().await.expect("close");
    api.event_ok(&other, "bump").await;
    api.stop().await;

    let api = Server::start(config(&dir)).await;
    let v = api.query_ok(&id).await;
    assert_eq!(v["data"]["count"], 2, "{v}");
    assert_eq!(api.query_ok(&other).await["data"]["count"], 1);
    api.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `count` the sleeper's data model holds in a stored snapshot.
fn stored_count(snapshot: &str) -> Option<Value> {
    fn find(v: &Value) -> Option<Value> {
        match v {
            Value::Object(map) => map
                .get("count")
                .filter(|c| c.is_number())
                .cloned()
                .or_else(|| map.values().find_map(find)),
            Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    find(&serde_json::from_str(snapshot).ok()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_event_is_in_the_store_before_its_reply() {
    for db in common::stores::test_databases().await {
        let dir = scratch_dir();
        let mut cfg = config(&dir);
        cfg.store.url = db.url();
        let api = Server::start(cfg).await;
        let id = api.start_src(&fixture("sleeper.scxml"), &[]).await;
        // A second connection to the same database, as a crash-recovering
        // server would open it.
        let store = db.open().await;
        for n in 1..=3i64 {
            api.event_ok(&id, "bump").await;
            // No waiting: the reply came after the commit.
            let row = store
                .load_session(&id)
                .await
                .expect("the session is stored");
            assert_eq!(row.events, n, "{}: events stored after ack {n}", db.label);
            assert_eq!(
                stored_count(&row.snapshot),
                Some(Value::from(n)),
                "{}: the stored snapshot holds the acknowledged change: {}",
                db.label,
                row.snapshot
            );
            assert_eq!(row.status, "running", "{}", db.label);
        }
        api.event_ok(&id, "stop").await;
        let row = store.load_session(&id).await.expect("still stored");
        assert_eq!(row.status, "completed", "{}: the end is stored", db.label);
        drop(store);
        api.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
