//! Durable sessions inside one process: idle sessions hibernate and wake
//! on an event, a query or their own timer, with the functions of the
//! prelude and of their scripts intact; a graceful restart brings back
//! persisted sessions (and halted ones for queries) but not `_persist=
//! "false"` ones; halted sessions are purged after the retention time; a
//! write the store refuses is answered 503 and written again later.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ors::app::{Config, spawn};
use ors::server::RunningServer;
use serde_json::Value;

fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ors-durable-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/durable")
        .join(name)
        .display()
        .to_string()
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

struct Api {
    server: Option<RunningServer>,
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn start(config: Config) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = spawn(listener, config).expect("server starts");
        let api = Api {
            base: format!("http://{}", server.addr),
            server: Some(server),
            client: ors::io::http::http_client(Duration::from_secs(30)),
        };
        // The store opens (and recovers) before the API answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        while api
            .client
            .get(format!("{}/health", api.base))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "server never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        api
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.text().await.expect("body")).expect("json"),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn start_session(&self, src: &str, pairs: &[(&str, &str)]) -> String {
        let mut form = vec![("src", src)];
        form.extend_from_slice(pairs);
        let (status, body) = self.post("/scxml/session/start", &form).await;
        assert_eq!(status, 200, "start: {body}");
        body["sessionid"].as_str().expect("sessionid").to_string()
    }

    async fn event(&self, id: &str, name: &str) {
        let (status, body) = self
            .post(&format!("/scxml/session/{id}/event/{name}"), &[])
            .await;
        assert_eq!(status, 200, "event {name} to {id}: {body}");
    }

    async fn query(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/scxml/session/{id}/query")).await;
        assert_eq!(status, 200, "query {id}: {body}");
        body
    }

    async fn metric(&self, line_start: &str) -> u64 {
        let r = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics");
        let text = r.text().await.expect("body");
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
    }

    async fn wait_metric(&self, line_start: &str, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(line_start).await;
            if v == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{line_start} stayed {v}, wanted {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

const HIBERNATED: &str = "ors_sessions{state=\"hibernated\"}";
const WOKEN: &str = "ors_sessions_woken_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_hibernate_and_wake_on_events_queries_and_timers() {
    let dir = scratch_dir();
    let mut cfg = config(&dir);
    cfg.store.hibernate_after_secs = 1;
    let api = Api::start(cfg).await;
    let mut sleepers = Vec::new();
    for _ in 0..4 {
        let id = api.start_session(&fixture("sleeper.scxml"), &[]).await;
        api.event(&id, "bump").await;
        api.event(&id, "bump").await;
        sleepers.push(id);
    }
    let alarm = api
        .start_session(&fixture("alarm.scxml"), &[("delay", "2500")])
        .await;
    let ephemeral = api.start_session(&fixture("ephemeral.scxml"), &[]).await;

    // Everything persisted goes to sleep; the _persist="false" one cannot.
    api.wait_metric(HIBERNATED, 5).await;
    let (_, list) = api.get("/scxml/sessions").await;
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
    api.event(&sleepers[0], "bump").await;
    let v = api.query(&sleepers[0]).await;
    assert_eq!(v["data"]["count"], 3);
    assert_eq!(v["data"]["tenant"], "t3");
    assert_eq!(v["data"]["label"], "bumped 3 times");
    assert!(v.get("hibernated").is_none(), "awake now: {v}");
    assert!(api.metric(WOKEN).await > woken_before);

    // A query wakes one too.
    let v = api.query(&sleepers[1]).await;
    assert_eq!(v["data"]["count"], 2);
    assert_eq!(v["data"]["label"], "bumped 2 times");

    // A sleeping session's own timers wake it, and fire in order.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = api.query(&alarm).await;
        if v["status"] == "completed" {
            assert_eq!(v["data"]["rang"], serde_json::json!(["first", "second"]));
            break;
        }
        assert!(Instant::now() < deadline, "alarm never rang: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The woken ones fall asleep again once idle.
    api.wait_metric(HIBERNATED, 4).await;
    api.event(&sleepers[1], "bump").await;
    assert_eq!(api.query(&sleepers[1]).await["data"]["count"], 3);
    api.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_brings_back_persisted_sessions_but_not_unpersisted_ones() {
    let dir = scratch_dir();
    let api = Api::start(config(&dir)).await;
    let kept = api.start_session(&fixture("sleeper.scxml"), &[]).await;
    api.event(&kept, "bump").await;
    let ephemeral = api.start_session(&fixture("ephemeral.scxml"), &[]).await;
    api.event(&ephemeral, "bump").await;
    let finished = api.start_session(&fixture("sleeper.scxml"), &[]).await;
    api.event(&finished, "bump").await;
    api.event(&finished, "stop").await;
    api.stop().await;

    let api = Api::start(config(&dir)).await;
    assert_eq!(api.metric("ors_sessions{state=\"running\"}").await, 1);
    let (_, list) = api.get("/scxml/sessions").await;
    let listed: Vec<&str> = list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["sessionid"].as_str())
        .collect();
    assert_eq!(listed, vec![kept.as_str()]);
    api.event(&kept, "bump").await;
    let v = api.query(&kept).await;
    assert_eq!(v["data"]["count"], 2);
    assert_eq!(v["data"]["label"], "bumped 2 times");
    let (status, body) = api.get(&format!("/scxml/session/{ephemeral}/query")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "session_not_found");
    // A halted session is still there to query (from the store).
    let v = api.query(&finished).await;
    assert_eq!(v["status"], "completed");
    assert_eq!(v["data"]["count"], 1);
    let (status, body) = api
        .post(&format!("/scxml/session/{finished}/event/bump"), &[])
        .await;
    assert_eq!(status, 409, "{body}");
    api.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The key stores used for a document before SHA-256: 128-bit FNV-1a of the
/// text as 32 hex digits.
fn legacy_document_hash(text: &str) -> String {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in text.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    format!("{h:032x}")
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
    let api = Api::start(config(&dir)).await;
    let kept = api.start_session(&fixture("sleeper.scxml"), &[]).await;
    api.event(&kept, "bump").await;
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
        let old = legacy_document_hash(text);
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

    let api = Api::start(config(&dir)).await;
    api.event(&kept, "bump").await;
    let v = api.query(&kept).await;
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
    let api = Api::start(cfg).await;
    let id = api.start_session(&fixture("sleeper.scxml"), &[]).await;
    let running = api.start_session(&fixture("sleeper.scxml"), &[]).await;
    api.event(&id, "stop").await;
    assert_eq!(api.query(&id).await["status"], "completed");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = api.get(&format!("/scxml/session/{id}/query")).await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "halted session never purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Running sessions are never purged.
    assert_eq!(api.query(&running).await["status"], "running");
    api.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_write_is_refused_with_503_and_written_again_later() {
    use sqlx::Connection;
    let dir = scratch_dir();
    let api = Api::start(config(&dir)).await;
    let id = api.start_session(&fixture("sleeper.scxml"), &[]).await;
    let other = api.start_session(&fixture("sleeper.scxml"), &[]).await;
    api.event(&id, "bump").await;

    // Take the sessions table away behind the server's back.
    let db = format!("sqlite://{}", dir.join("ors.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&db).await.expect("open db");
    sqlx::query("ALTER TABLE ors_sessions RENAME TO ors_sessions_away")
        .execute(&mut conn)
        .await
        .expect("rename");
    let (status, body) = api
        .post(&format!("/scxml/session/{id}/event/bump"), &[])
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable");

    // Once the store works again, the next batch (here one for another
    // session) writes the session anew, with the change whose
    // acknowledgement was refused.
    sqlx::query("ALTER TABLE ors_sessions_away RENAME TO ors_sessions")
        .execute(&mut conn)
        .await
        .expect("rename back");
    conn.close().await.expect("close");
    api.event(&other, "bump").await;
    api.stop().await;

    let api = Api::start(config(&dir)).await;
    let v = api.query(&id).await;
    assert_eq!(v["data"]["count"], 2, "{v}");
    assert_eq!(api.query(&other).await["data"]["count"], 1);
    api.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
