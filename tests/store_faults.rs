//! Store faults against a real `ors serve`: the data directory on a 3 MiB
//! tmpfs the test mounts (as root; under CI a failed mount fails the
//! test), filled under load from 32 clients until writes are refused,
//! then SIGKILL, more room (the tmpfs remounted larger, as an operator
//! would free space), and a restart. Every start and event that got a 2xx
//! must be there, each event applied once and in order; an event refused
//! with 503 may or may not have been applied (its state was written with a
//! later batch), but nothing after it was sent to that session.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::process::{ServeProcess, free_port};
use common::wait::eventually;
use serde_json::Value;
use tokio::sync::Mutex;

const CLIENTS: usize = 32;

/// A tmpfs mounted for the test; unmounted when dropped.
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `mib` MiB, or `None` (after a skip note; a
    /// failure under CI) when this process may not mount.
    fn mount(tag: &str, mib: u64) -> Option<SmallFs> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ors-smallfs-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallFs { dir }),
            other => {
                let _ = std::fs::remove_dir(&dir);
                let why = match &other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                common::skips::skip(
                    "the full-disk test",
                    &format!("cannot mount a tmpfs ({why}); to enable: run the tests as root"),
                );
                None
            }
        }
    }

    fn grow(&self, mib: u64) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.dir)
            .status()
            .expect("mount runs");
        assert!(ok.success(), "remount to {mib} MiB");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

async fn post(client: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> Result<Value, String> {
    common::client::post_form_ok(client, url, form, Duration::from_secs(20)).await
}

/// One ledger's client-side record: the highest seq acknowledged, and a
/// seq refused or cut off (it may or may not have been applied).
#[derive(Default, Clone)]
struct Ledger {
    id: String,
    acked: u64,
    uncertain: Option<u64>,
}

/// Fills the data directory under load until writes are refused, kills
/// the server, makes room, restarts, and checks acknowledged = applied.
async fn fill_kill_restart(data_dir: &Path, fs: &SmallFs, store_args: &[&str]) {
    let port = free_port();
    let mut args = vec!["--workers", "2"];
    args.extend_from_slice(store_args);
    let log = fs.dir.with_extension("log");
    let mut server = ServeProcess::start_logging_to(port, data_dir, &log, &args).await;
    let client = server.operator_client();
    let base = server.base.clone();

    let ledgers: Arc<Mutex<Vec<Ledger>>> = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (ledgers, refused, stop, client, base) = (
            ledgers.clone(),
            refused.clone(),
            stop.clone(),
            client.clone(),
            base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // Each client starts a ledger, sends it events until one is
            // refused, then starts another.
            while !stop.load(Ordering::Relaxed) {
                let started = post(
                    &client,
                    &format!("{base}/scxml/session/start"),
                    &[("src", "fixtures/durable/ledger.scxml")],
                )
                .await;
                let Ok(v) = started else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let mut ledger = Ledger {
                    id: v["sessionid"].as_str().unwrap().to_string(),
                    ..Ledger::default()
                };
                while !stop.load(Ordering::Relaxed) && ledger.acked < 40 {
                    let seq = ledger.acked + 1;
                    let url = format!("{base}/scxml/session/{}/event/apply", ledger.id);
                    match post(&client, &url, &[("seq", &seq.to_string())]).await {
                        Ok(_) => ledger.acked = seq,
                        Err(_) => {
                            ledger.uncertain = Some(seq);
                            refused.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                if ledger.uncertain.is_none() && stop.load(Ordering::Relaxed) {
                    // Cut off mid-flight by the stop: nothing was in flight.
                }
                ledgers.lock().await.push(ledger);
            }
        }));
    }
    // Load until the disk has refused writes for a while.
    let began = Instant::now();
    while refused.load(Ordering::Relaxed) < 200 {
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "the 3 MiB store never filled; {} refusals",
            refused.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Refusing writes, the server says it is unhealthy (the last write
    // failed); a write that still fits in between (a checkpoint freed a
    // page) makes it healthy for a moment, so it is asked until it says so
    // while the clients keep writing.
    let health = eventually(
        "the server never said it was unhealthy while refusing writes",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let r = client
                .get(format!("{base}/health"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .expect("health answers");
            let status = r.status();
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            if status == 503 { Ok(body) } else { Err(body) }
        },
    )
    .await;
    assert_eq!(health["status"], "unhealthy", "{health}");
    assert!(
        health["store"]
            .as_str()
            .is_some_and(|s| s.contains("full") || s.contains("No space")),
        "{health}"
    );
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    let ledgers = ledgers.lock().await.clone();
    let acked_starts = ledgers.len();
    let acked_events: u64 = ledgers.iter().map(|l| l.acked).sum();
    assert!(acked_starts > 20, "only {acked_starts} starts acknowledged");

    fs.grow(64);
    let server = ServeProcess::start_logging_to(port, data_dir, &log, &args).await;
    let client = server.operator_client();
    let mut applied_total = 0u64;
    for ledger in &ledgers {
        let r = client
            .get(format!("{}/scxml/session/{}/query", server.base, ledger.id))
            .send()
            .await
            .expect("query sent");
        assert!(
            r.status().is_success(),
            "acknowledged start of {} lost: {}",
            ledger.id,
            r.status()
        );
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let applied: Vec<u64> = v["data"]["applied"]
            .as_array()
            .unwrap_or_else(|| panic!("ledger {} has no 'applied': {v}", ledger.id))
            .iter()
            .map(|n| n.as_u64().unwrap())
            .collect();
        let prefix: Vec<u64> = (1..=applied.len() as u64).collect();
        assert_eq!(
            applied, prefix,
            "ledger {}: each event once, in order",
            ledger.id
        );
        let n = applied.len() as u64;
        assert!(
            n == ledger.acked
                || (ledger.uncertain == Some(ledger.acked + 1) && n == ledger.acked + 1),
            "ledger {}: {n} applied, {} acknowledged (uncertain {:?})",
            ledger.id,
            ledger.acked,
            ledger.uncertain
        );
        applied_total += n;
    }
    eprintln!(
        "full disk ({}): {acked_starts} starts and {acked_events} events acknowledged, {} refused; \
         after SIGKILL and restart all {acked_starts} starts and {applied_total} events present",
        store_args.first().map_or("sqlite", |_| "postgres"),
        refused.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_no_acknowledged_write_on_sqlite() {
    let Some(fs) = SmallFs::mount("sqlite", 3) else {
        return;
    };
    let data_dir = fs.dir.join("data");
    fill_kill_restart(&data_dir, &fs, &[]).await;
}

/// Removing or replacing the SQLite files under a running server: the next
/// write is refused (503) and `/health` says why, instead of acknowledging
/// writes that go to a file nobody will read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_file_removed_or_replaced_while_running_is_noticed() {
    for (victim, replace) in [("ors.db-wal", false), ("ors.db", false), ("ors.db", true)] {
        let data_dir = std::env::temp_dir().join(format!(
            "ors-store-identity-{}-{}-{replace}",
            std::process::id(),
            victim
        ));
        let _ = std::fs::remove_dir_all(&data_dir);
        let server = ServeProcess::start(free_port(), &data_dir, &[]).await;
        let client = server.operator_client();
        let start = format!("{}/scxml/session/start", server.base);
        let v = post(&client, &start, &[("src", "fixtures/durable/ledger.scxml")])
            .await
            .expect("a start before the fault");
        let id = v["sessionid"].as_str().unwrap().to_string();
        let path = data_dir.join(victim);
        if replace {
            let copy = data_dir.join("copy.db");
            std::fs::copy(&path, &copy).unwrap();
            std::fs::rename(&copy, &path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        let url = format!("{}/scxml/session/{id}/event/apply", server.base);
        let refused = post(&client, &url, &[("seq", "1")])
            .await
            .expect_err("no write is acknowledged into a lost file");
        assert!(refused.starts_with("503"), "{victim}: {refused}");
        let again = post(&client, &start, &[("src", "fixtures/durable/ledger.scxml")]).await;
        assert!(again.is_err(), "{victim}: {again:?}");
        let health = client
            .get(format!("{}/health", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 503, "{victim}");
        let health: Value = serde_json::from_str(&health.text().await.unwrap()).unwrap();
        let why = if replace {
            "was replaced"
        } else {
            "was removed"
        };
        assert!(
            health["store"]
                .as_str()
                .is_some_and(|s| s.contains(why) && s.contains(victim)),
            "{victim}: {health}"
        );
        drop(server);
        let _ = std::fs::remove_dir_all(&data_dir);
    }
}

/// The same on PostgreSQL: the test database's tables live in a
/// tablespace on the small tmpfs (the server's own WAL stays on its disk,
/// so PostgreSQL refuses the writes that do not fit and goes on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_no_acknowledged_write_on_postgres() {
    use sqlx::{Connection, Executor};
    let Some(admin) = common::stores::postgres_admin_url("the PostgreSQL full-disk test") else {
        return;
    };
    let Some(fs) = SmallFs::mount("postgres", 3) else {
        return;
    };
    let space = fs.dir.join("pg");
    std::fs::create_dir_all(&space).unwrap();
    let owned = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(&space)
        .status()
        .expect("chown runs");
    assert!(
        owned.success(),
        "the tablespace directory must belong to postgres"
    );
    let name = format!("ors_full_{}", common::stores::unique_name());
    let mut conn = sqlx::postgres::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL admin connection");
    conn.execute(format!("CREATE TABLESPACE {name} LOCATION '{}'", space.display()).as_str())
        .await
        .expect("tablespace on the small filesystem");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("test database");
    conn.execute(format!("ALTER DATABASE {name} SET default_tablespace = {name}").as_str())
        .await
        .expect("its tables go to the small filesystem");
    drop(conn);
    // Dropped before `fs` is unmounted, also when the test panics.
    let space = PgSpace {
        admin: admin.clone(),
        name: name.clone(),
    };
    let url = common::stores::url_with_database(&admin, &name);
    let data_dir = std::env::temp_dir().join(format!("ors-full-pg-{name}"));
    let _ = std::fs::remove_dir_all(&data_dir);
    fill_kill_restart(&data_dir, &fs, &["--store", &url]).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    drop(space);
}

/// The test database and its tablespace, dropped when this is: a
/// tablespace left on a filesystem that is gone would stop the PostgreSQL
/// server from recovering after its next crash. Drop panics (failing the
/// test) if it cannot drop them, unless the test is already panicking.
struct PgSpace {
    admin: String,
    name: String,
}

impl Drop for PgSpace {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop cannot await: a thread with its own runtime does the work.
        let outcome = std::thread::spawn(move || {
            use sqlx::{Connection, Executor};
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = sqlx::postgres::PgConnection::connect(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                for sql in [
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    format!("DROP TABLESPACE IF EXISTS {name}"),
                ] {
                    conn.execute(sqlx::raw_sql(&sql))
                        .await
                        .map_err(|e| format!("'{sql}': {e}"))?;
                }
                Ok::<(), String>(())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the cleanup thread panicked".into()));
        if let Err(e) = outcome {
            if std::thread::panicking() {
                eprintln!("cleanup of {} failed: {e}", self.name);
            } else {
                panic!("cleanup of {} failed: {e}", self.name);
            }
        }
    }
}
