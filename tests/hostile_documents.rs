//! Hostile documents against a real `ors serve` on a SQLite store, under
//! its supervisor, with one worker so that every culprit shares its
//! worker with a bystander. The bystander is a counter session: before and
//! after each culprit it takes an `add` event, every acknowledged `add`
//! must show in its total (nothing acknowledged is lost), and `/health`
//! must answer.
//!
//! Two kinds of culprit:
//! - ones the engine's own budgets stop (a value too deep to save, a
//!   script too deeply nested to compile, nested `<foreach>`, a self-fed
//!   event loop, a slow eventless loop, a self-invoking document, delays
//!   past any clock, start parameters named after built-ins): the server
//!   never restarts, the bystander answers within [`PROMPT`], the culprit
//!   ends `failed` with the reason or handles `error.execution`;
//! - ones only the process boundary stops (a backtracking regular
//!   expression, memory doubling, a 200-million-element native fill, a
//!   native recursion that overflows the worker's stack): each is run from
//!   a delayed send stored before it fires, so it fires again after every
//!   restart. The server goes down, the supervisor restarts it, the
//!   session gets a strike; at its second the next server quarantines it
//!   (`failed`, "quarantined: …") and the bystander answers again within
//!   [`RECOVERY`] with its total intact.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::process::{ServeProcess, free_port};
use serde_json::Value;

/// How fast the bystander answers while the engine's budgets handle a
/// culprit (its normal latency is milliseconds; the bound allows for a
/// loaded CI machine and the 1 s macrostep budget the server is given).
const PROMPT: Duration = Duration::from_secs(3);
/// How long the server may take to be back, and the culprit to be
/// quarantined, after a crash (two crashes, each after the 2 s run limit
/// or the memory limit, plus restarts).
const RECOVERY: Duration = Duration::from_secs(90);

const CONFIG: &str = r#"
[limits]
max_run_ms = 3000
max_memory_mb = 768
max_macrostep_ms = 1000
max_self_events = 2000
max_macrostep_memory_mb = 256
"#;

fn unique_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ors-hostile-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn hostile(name: &str) -> String {
    format!("fixtures/hostile/{name}")
}

/// A server, its operator's client, and the bystander's ledger.
struct Bench {
    server: ServeProcess,
    client: reqwest::Client,
    bystander: String,
    acknowledged: u64,
    data_dir: PathBuf,
}

impl Bench {
    async fn start(supervised: bool) -> Bench {
        let data_dir = unique_dir("server");
        let config = data_dir.join("ors.toml");
        // Documents the test makes live in the data directory.
        let security = format!(
            "\n[security]\nallowed_dirs = [\".\", {:?}]\n",
            data_dir.to_string_lossy()
        );
        std::fs::write(&config, format!("{CONFIG}{security}")).expect("config written");
        let config = config.to_string_lossy().to_string();
        let args = [
            "--workers",
            "1",
            "--log-format",
            "json",
            "--config",
            &config,
        ];
        let port = free_port();
        let server = if supervised {
            ServeProcess::start_supervised(port, &data_dir, &args).await
        } else {
            ServeProcess::start(port, &data_dir, &args).await
        };
        let client = server.operator_client();
        let mut bench = Bench {
            server,
            client,
            bystander: String::new(),
            acknowledged: 0,
            data_dir,
        };
        let started = bench
            .start_session("fixtures/server/counter.scxml", &[])
            .await
            .expect("the bystander starts");
        bench.bystander = started["sessionid"].as_str().unwrap().to_string();
        bench.bystander_answers(PROMPT).await;
        bench
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.server.base);
        common::client::post_form(&self.client, &url, form, Duration::from_secs(30)).await
    }

    async fn start_session(&self, src: &str, extra: &[(&str, &str)]) -> Result<Value, String> {
        let mut form = vec![("src", src)];
        form.extend_from_slice(extra);
        match self.post("/scxml/session/start", &form).await? {
            (200, v) => Ok(v),
            (status, v) => Err(format!("{status}: {v}")),
        }
    }

    /// Starts `src`, sends it `event` (which must be acknowledged) and
    /// waits (at most [`PROMPT`]) until the session has failed; its query.
    async fn failed_after(&self, src: &str, event: &str) -> Value {
        let id = self.start_id(src).await;
        let (status, reply) = self
            .post(&format!("/scxml/session/{id}/event/{event}"), &[])
            .await
            .unwrap();
        assert_eq!(status, 200, "{reply}");
        self.wait_for(&id, PROMPT, |q| q["status"] == "failed")
            .await
    }

    /// Starts a session that must start; its id.
    async fn start_id(&self, src: &str) -> String {
        let started = self
            .start_session(src, &[])
            .await
            .expect("the session starts");
        started["sessionid"]
            .as_str()
            .expect("a session id")
            .to_string()
    }

    async fn query(&self, id: &str) -> Result<Value, String> {
        let r = self
            .client
            .get(format!("{}/scxml/session/{id}/query", self.server.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(r.status().to_string());
        }
        let text = r.text().await.map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    async fn health(&self) -> bool {
        self.client
            .get(format!("{}/health", self.server.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Sends the bystander one `add` (retrying until `within` runs out,
    /// as a client does while a server restarts), then checks its total
    /// holds every acknowledged `add`. Returns how long the answer took.
    async fn bystander_answers(&mut self, within: Duration) -> Duration {
        let began = Instant::now();
        let path = format!("/scxml/session/{}/event/add", self.bystander);
        loop {
            let sent = Instant::now();
            match self.post(&path, &[("n", "1")]).await {
                Ok((200, _)) => {
                    self.acknowledged += 1;
                    let took = sent.elapsed();
                    let q = self.query(&self.bystander).await.expect("bystander query");
                    assert_eq!(
                        q["data"]["total"].as_u64(),
                        Some(self.acknowledged),
                        "every acknowledged add is in the bystander's total: {q}"
                    );
                    assert_eq!(q["status"], "running", "{q}");
                    return took;
                }
                other => {
                    assert!(
                        began.elapsed() < within,
                        "the bystander did not answer within {within:?}: {other:?}\n{}",
                        self.server.log_text()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Polls the session until `done` accepts it.
    async fn wait_for(&self, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let began = Instant::now();
        loop {
            let q = self.query(id).await;
            if let Ok(v) = &q
                && done(v)
            {
                return v.clone();
            }
            assert!(
                began.elapsed() < within,
                "session {id} did not get there within {within:?}: last {q:?}\n{}",
                self.server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

fn reason(v: &Value) -> String {
    v["reason"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_budgets_stop_culprits_without_a_restart() {
    let mut bench = Bench::start(true).await;

    // 2 000 nested states: refused at parse with where, no stack overflow.
    let mut deep = String::from(
        "<scxml xmlns=\"http://www.w3.org/2005/07/scxml\" version=\"1.0\" datamodel=\"ecmascript\">\n",
    );
    for i in 0..2000 {
        deep.push_str(&format!("<state id=\"s{i}\">"));
    }
    deep.push_str(&"</state>".repeat(2000));
    deep.push_str("</scxml>\n");
    let deep_file = bench.data_dir().join("deep.scxml");
    std::fs::write(&deep_file, &deep).unwrap();
    let refused = bench
        .start_session(&deep_file.to_string_lossy(), &[])
        .await
        .expect_err("too deep to load");
    assert!(refused.starts_with('4'), "{refused}");
    assert!(
        refused.contains(".scxml:2:"),
        "the refusal names the file and line: {refused}"
    );
    assert!(refused.contains("nest deeper"), "{refused}");
    assert!(bench.bystander_answers(PROMPT).await < PROMPT);

    // Data nested past the save limit: failed, with why.
    let q = bench
        .failed_after(&hostile("nested_array.scxml"), "build")
        .await;
    assert!(reason(&q).contains("100 levels"), "{q}");
    assert!(bench.bystander_answers(PROMPT).await < PROMPT);

    // A graph with 2^40 paths and 41 objects is saved as the graph.
    let id = bench.start_id(&hostile("shared_graph.scxml")).await;
    let (status, _) = bench
        .post(&format!("/scxml/session/{id}/event/count"), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let q = bench.query(&id).await.unwrap();
    assert_eq!(q["status"], "running", "{q}");
    assert_eq!(q["data"]["levels"], 40, "{q}");
    assert!(bench.bystander_answers(PROMPT).await < PROMPT);

    // A million nested brackets in eval: error.execution, with where.
    let id = bench.start_id(&hostile("bracket_bomb.scxml")).await;
    let q = bench.query(&id).await.unwrap();
    assert_eq!(q["configuration"], serde_json::json!(["refused"]), "{q}");
    let failure = &q["data"]["failure"];
    assert!(
        failure["message"]
            .as_str()
            .unwrap_or("")
            .contains("nests brackets deeper"),
        "{q}"
    );
    assert_eq!(failure["tagname"], "script", "{q}");
    assert!(failure["line"].as_u64().is_some(), "{q}");
    assert!(bench.bystander_answers(PROMPT).await < PROMPT);

    // 900 million <foreach> iterations: stopped by the iteration budget.
    let id = bench.start_id(&hostile("nested_foreach.scxml")).await;
    let q = bench.query(&id).await.unwrap();
    // Whichever budget comes first on this machine: the iteration count
    // (error.execution, handled) or the macrostep's time (inside the
    // loop: error.execution, then the session is stopped).
    let by_count = q["configuration"] == serde_json::json!(["stopped"])
        && q["data"]["failure"]["tagname"] == "foreach";
    let by_time = q["status"] == "failed" && reason(&q).contains("longer than 1000 ms");
    assert!(by_count || by_time, "{q}");
    assert!(bench.bystander_answers(PROMPT).await < PROMPT);

    // Twenty thousand events queued in one macrostep: the ten
    // thousand-and-first <send> fails; the ten thousand queued arrive.
    let id = bench.start_id(&hostile("send_storm.scxml")).await;
    let q = bench
        .wait_for(&id, PROMPT, |q| q["data"]["got"] == 10_000)
        .await;
    assert_eq!(q["configuration"], serde_json::json!(["refused"]), "{q}");
    assert_eq!(q["data"]["failure"]["tagname"], "send", "{q}");
    assert!(bench.bystander_answers(PROMPT).await < PROMPT);

    // Sending itself events for ever: stopped after max_self_events.
    let id = bench.start_id("fixtures/server/self_feeding.scxml").await;
    assert!(bench.bystander_answers(PROMPT).await < PROMPT);
    let q = bench
        .wait_for(&id, PROMPT * 4, |q| q["status"] == "failed")
        .await;
    assert!(reason(&q).contains("sent itself 2000 events"), "{q}");
    assert!(q["data"]["turns"].as_u64().unwrap_or(0) >= 2000, "{q}");

    // An eventless loop of slow scripts: stopped by the macrostep budget.
    let id = bench.start_id("fixtures/server/slow_loop.scxml").await;
    let q = bench
        .wait_for(&id, PROMPT, |q| q["status"] == "failed")
        .await;
    assert!(reason(&q).contains("longer than 1000 ms"), "{q}");
    assert!(bench.bystander_answers(PROMPT).await < PROMPT);

    // A macrostep that keeps allocating across scripts: stopped by the
    // memory budget per macrostep, before the process-wide limit.
    let q = bench
        .failed_after(&hostile("memory_growth.scxml"), "grow")
        .await;
    assert!(
        reason(&q).contains("max_macrostep_memory_mb (256 MiB)"),
        "{q}"
    );
    assert!(bench.bystander_answers(PROMPT).await < PROMPT);

    // A document that invokes itself: the chain ends at the invoke depth
    // limit with an error in the deepest child; the root keeps running.
    let id = bench.start_id(&hostile("invokes_itself.scxml")).await;
    let q = bench.query(&id).await.unwrap();
    assert_eq!(q["status"], "running", "{q}");
    assert!(bench.bystander_answers(PROMPT).await < PROMPT);

    // Delays past any clock never fire.
    let id = bench.start_id(&hostile("huge_delay.scxml")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let q = bench.query(&id).await.unwrap();
    assert_eq!(q["configuration"], serde_json::json!(["waiting"]), "{q}");
    assert_eq!(q["pending_timers"], 3, "{q}");

    // Start parameters named after built-ins change nothing for the next
    // session of the same document on the same worker.
    for name in ["__proto__", "JSON", "Object", "constructor"] {
        let r = bench
            .start_session(
                "fixtures/server/counter.scxml",
                &[(name, "{\"polluted\":1}")],
            )
            .await;
        if let Ok(v) = &r {
            let q = bench.query(v["sessionid"].as_str().unwrap()).await.unwrap();
            assert!(
                q["data"].get(name).is_none(),
                "{name} became a variable: {q}"
            );
        }
        let next = bench.start_id("fixtures/server/counter.scxml").await;
        let (status, _) = bench
            .post(&format!("/scxml/session/{next}/event/add"), &[("n", "2")])
            .await
            .unwrap();
        assert_eq!(status, 200);
        let q = bench.query(&next).await.unwrap();
        assert_eq!(q["data"]["total"], 2, "after a start with '{name}': {q}");
    }

    assert!(bench.health().await);
    assert_eq!(
        bench.server_pids().len(),
        1,
        "none of these may restart the server"
    );
}

/// Runs one culprit that only the process boundary stops, and checks the
/// whole cycle: crash, restart, strike, crash again, quarantine, and the
/// bystander intact. With `kill_while_running`, the test itself kills the
/// server with SIGKILL a second after the culprit's timer is due, each
/// time, as the kernel's OOM killer would: then only the journal of
/// running sessions can say whom to blame.
async fn crash_cycle(
    bench: &mut Bench,
    fixture: &str,
    reason_part: &str,
    kill_while_running: bool,
) {
    let id = bench.start_id(&hostile(fixture)).await;
    if kill_while_running {
        for _ in 0..2 {
            let pid = bench.wait_for_server_pid(RECOVERY).await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("kill runs");
            assert!(killed.success());
            bench.wait_for_restart_after(pid, RECOVERY).await;
        }
    }
    let q = bench
        .wait_for(&id, RECOVERY, |q| {
            q["status"] == "failed" && reason(q).starts_with("quarantined")
        })
        .await;
    assert!(reason(&q).contains(reason_part), "{fixture}: {q}");
    let took = bench.bystander_answers(RECOVERY).await;
    assert!(
        took < PROMPT,
        "{fixture}: the bystander took {took:?} once back"
    );
    assert!(bench.health().await, "{fixture}");
    // Quarantined for good: its timer never runs again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let again = bench.query(&id).await.unwrap();
    assert_eq!(again["status"], "failed", "{again}");
}

impl Bench {
    /// The JSON log lines so far.
    fn log_lines(&self) -> Vec<Value> {
        self.server
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Server processes the supervisor started, in order.
    fn server_pids(&self) -> Vec<u64> {
        self.log_lines()
            .iter()
            .filter(|l| l["message"] == "supervisor: server started")
            .filter_map(|l| l["pid"].as_u64())
            .collect()
    }

    async fn wait_for_server_pid(&self, within: Duration) -> u64 {
        let began = Instant::now();
        loop {
            if let Some(pid) = self.server_pids().last()
                && self.health().await
            {
                return *pid;
            }
            assert!(began.elapsed() < within, "no server is up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_restart_after(&self, pid: u64, within: Duration) {
        let began = Instant::now();
        while self.server_pids().last() == Some(&pid) {
            assert!(began.elapsed() < within, "the server was not restarted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn culprits_that_crash_the_process_are_restarted_around_and_quarantined() {
    let mut bench = Bench::start(true).await;
    crash_cycle(&mut bench, "regex_later.scxml", "without returning", false).await;
    crash_cycle(&mut bench, "string_doubling.scxml", "memory", false).await;
    crash_cycle(&mut bench, "array_fill.scxml", "", false).await;
    // The same stuck script, killed from outside before the watchdog's
    // limit: the journal names it.
    crash_cycle(&mut bench, "regex_later.scxml", "signal: 9", true).await;
    let strikes: Vec<u64> = bench
        .log_lines()
        .iter()
        .filter(|l| l["message"] == "supervisor: the server went down while this session ran")
        .filter_map(|l| l["strikes"].as_u64())
        .collect();
    assert_eq!(
        strikes,
        vec![1, 2, 1, 2, 1, 2, 1, 2],
        "one strike per crash, two each"
    );
    // The server writes its log from a thread of its own; the watchdog's
    // last words still reach it before the process ends (six ends).
    let last_words = bench
        .log_lines()
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("watchdog:") && m.contains("ending"))
        })
        .count();
    assert!(
        last_words >= 6,
        "the watchdog's lines before each of its six ends: {last_words}"
    );
    assert!(
        std::fs::read_dir(bench.data_dir())
            .unwrap()
            .all(|e| e.unwrap().file_name() != "quarantine.json"),
        "the quarantine list is applied and removed"
    );
}

/// The crash loop of the issue: a value too deep to save, built by a
/// delayed send stored before a SIGKILL. It once aborted every restart;
/// now the session fails with the reason on the first run after restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_delayed_send_that_builds_deep_data_does_not_loop_restarts() {
    let data_dir = unique_dir("loop");
    let port = free_port();
    let args = ["--workers", "1"];
    let mut server = ServeProcess::start(port, &data_dir, &args).await;
    let client = server.operator_client();
    let body = "src=fixtures%2Fhostile%2Fnested_array_later.scxml";
    let r = client
        .post(format!("{}/scxml/session/start", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let started: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let id = started["sessionid"].as_str().unwrap().to_string();
    server.kill();
    let server = ServeProcess::start(port, &data_dir, &args).await;
    let client = server.operator_client();
    let query = format!("{}/scxml/session/{id}/query", server.base);
    let began = Instant::now();
    let q = loop {
        let text = client
            .get(&query)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let q: Value = serde_json::from_str(&text).unwrap();
        if q["status"] == "failed" {
            break q;
        }
        assert!(began.elapsed() < Duration::from_secs(20), "{q}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(reason(&q).contains("100 levels"), "{q}");
    let health = client
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
}
