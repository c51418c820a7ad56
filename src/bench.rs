//! `ors bench`: runs the benchmark workloads in-process through the library
//! API (as the peer engines are driven through theirs) and prints one JSON
//! line per workload. Each run checks that the work really happened (final
//! configuration, counter value) so a broken run cannot look fast.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::interpreter::{Event, Host, Session, SessionOptions};
use crate::model::Document;
use crate::parser::{LoadOptions, load_file, parse_document};

/// Options of `ors bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Workload names (`ping-pong`, `ping-pong-data`, `deep-wide`,
    /// `load-1000`, `start-sessions`).
    pub workloads: Vec<String>,
    /// The directory holding the workload documents.
    pub dir: PathBuf,
    /// External events per round (event workloads).
    pub events: usize,
    /// Rounds per workload.
    pub rounds: usize,
    /// Sessions started per round (start-sessions).
    pub sessions: usize,
    /// Documents loaded per round (load-1000).
    pub loads: usize,
}

/// The names `ors bench` knows.
pub const WORKLOADS: &[&str] = &[
    "ping-pong",
    "ping-pong-data",
    "deep-wide",
    "load-1000",
    "start-sessions",
];

struct QuietHost {
    now: u64,
}

impl Host for QuietHost {
    fn now_ms(&mut self) -> u64 {
        self.now
    }
    fn log(&mut self, _: &str, _: Option<&str>, _: &str) {}
}

fn load(dir: &Path, file: &str) -> Result<Arc<Document>, String> {
    load_file(&dir.join(file), &LoadOptions::default())
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Feeds `events` cycling through `names`; returns events/s and the session.
fn drive(doc: &Arc<Document>, names: &[&str], events: usize) -> Result<(f64, Session), String> {
    let mut host = QuietHost { now: 0 };
    let mut session = Session::new(doc.clone(), SessionOptions::default());
    session.start(&mut host);
    let prepared: Vec<Event> = names.iter().map(|n| Event::external(*n, None)).collect();
    let start = Instant::now();
    for i in 0..events {
        session.enqueue_external(prepared[i % prepared.len()].clone());
        if session.process_next_external(&mut host).is_none() {
            return Err(format!("event {i} was not processed"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((events as f64 / secs, session))
}

fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn stats(rounds: &[f64]) -> Value {
    let mut sorted = rounds.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = if sorted.is_empty() {
        0.0
    } else {
        sorted[sorted.len() / 2]
    };
    json!({
        "min": sorted.first().copied().unwrap_or(0.0),
        "median": median,
        "max": sorted.last().copied().unwrap_or(0.0),
        "rounds": rounds,
    })
}

/// Runs one workload; returns its JSON result.
pub fn run_workload(name: &str, opts: &BenchOptions) -> Result<Value, String> {
    let mut rounds = Vec::new();
    let mut extra = json!({});
    let unit;
    let check;
    match name {
        "ping-pong" => {
            let doc = load(&opts.dir, "ping_pong.scxml")?;
            unit = "events/s";
            let mut last = Vec::new();
            for _ in 0..opts.rounds {
                let (rate, session) = drive(&doc, &["t"], opts.events)?;
                rounds.push(rate);
                last = session.configuration_names();
            }
            let expected = if opts.events.is_multiple_of(2) {
                "a"
            } else {
                "b"
            };
            if last != [expected] {
                return Err(format!(
                    "ping-pong ended in {last:?}, expected [{expected}]"
                ));
            }
            check = format!("configuration [{expected}] after {} events", opts.events);
        }
        "ping-pong-data" => {
            let doc = load(&opts.dir, "ping_pong_data.scxml")?;
            unit = "events/s";
            let mut n = Value::Null;
            for _ in 0..opts.rounds {
                let (rate, mut session) = drive(&doc, &["t"], opts.events)?;
                rounds.push(rate);
                n = session
                    .datamodel_mut()
                    .eval_text("n")
                    .map_err(|e| e.message)?
                    .unwrap_or_default();
            }
            if n != json!(opts.events) {
                return Err(format!("n is {n}, expected {}", opts.events));
            }
            check = format!("n == {}", opts.events);
        }
        "deep-wide" => {
            let doc = load(&opts.dir, "deep_wide.scxml")?;
            unit = "events/s";
            let events = opts.events - opts.events % 4;
            let mut last = Vec::new();
            for _ in 0..opts.rounds {
                let (rate, session) = drive(&doc, &["e0", "e1", "e2", "e3"], events)?;
                rounds.push(rate);
                last = session.atomic_names();
            }
            if last != ["r0_x", "r1_x", "r2_x", "r3_x"] {
                return Err(format!("deep-wide ended in {last:?}"));
            }
            check = format!("atomic [r0_x r1_x r2_x r3_x] after {events} events");
        }
        "load-1000" => {
            let path = opts.dir.join("load_1000.scxml");
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            unit = "loads/s";
            let mut states = 0;
            for _ in 0..opts.rounds {
                let start = Instant::now();
                for _ in 0..opts.loads.max(1) {
                    let doc = Arc::new(
                        parse_document(&text, None, &LoadOptions::default())
                            .map_err(|e| e.to_string())?,
                    );
                    states = doc.states.len() - 1;
                    let mut host = QuietHost { now: 0 };
                    let mut session = Session::new(doc, SessionOptions::default());
                    session.start(&mut host);
                    if session.configuration_names() != ["g0", "g0_s0"] {
                        return Err("the 1000-state document did not start in g0_s0".into());
                    }
                }
                rounds.push(opts.loads.max(1) as f64 / start.elapsed().as_secs_f64());
            }
            check = format!("{states} states parsed, validated and started in g0_s0");
        }
        "start-sessions" => {
            let doc = load(&opts.dir, "callback_like.scxml")?;
            unit = "starts/s";
            let mut per_session_kib = 0.0;
            for round in 0..opts.rounds {
                let before = resident_kib().unwrap_or(0);
                let mut live = Vec::with_capacity(opts.sessions);
                let mut host = QuietHost { now: 0 };
                let start = Instant::now();
                for _ in 0..opts.sessions {
                    let mut s = Session::new(doc.clone(), SessionOptions::default());
                    s.start(&mut host);
                    live.push(s);
                }
                rounds.push(opts.sessions as f64 / start.elapsed().as_secs_f64());
                // Only the first round measures memory: later rounds reuse
                // what the allocator kept from the previous one.
                if round == 0 {
                    let after = resident_kib().unwrap_or(0);
                    per_session_kib = after.saturating_sub(before) as f64 / opts.sessions as f64;
                }
                if live
                    .iter()
                    .any(|s| s.configuration_names() != ["waiting"] || s.pending_timers() != 1)
                {
                    return Err("a session did not start in 'waiting' with its timer".into());
                }
            }
            extra = json!({ "rss_per_live_session_kib": per_session_kib });
            check = format!(
                "{} live sessions in 'waiting' with one pending timer each",
                opts.sessions
            );
        }
        other => {
            return Err(format!(
                "unknown workload '{other}' (known: {})",
                WORKLOADS.join(", ")
            ));
        }
    }
    let mut out = json!({
        "engine": "ors",
        "mode": "in-process",
        "workload": name,
        "unit": unit,
        "check": check,
        "result": stats(&rounds),
    });
    if let (Value::Object(o), Value::Object(e)) = (&mut out, extra) {
        o.extend(e);
    }
    Ok(out)
}

/// Runs the selected workloads, printing a JSON line each; exit code 1 when
/// a workload failed its check.
pub fn run(opts: &BenchOptions) -> i32 {
    let mut code = 0;
    for w in &opts.workloads {
        match run_workload(w, opts) {
            Ok(v) => println!("{v}"),
            Err(e) => {
                eprintln!("ors bench: {w}: {e}");
                code = 1;
            }
        }
    }
    code
}
