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

/// The document sizes (states) `load-size` and `event-size` use unless
/// told otherwise.
pub const DEFAULT_SIZES: &[usize] = &[10, 100, 1_000, 10_000, 100_000];

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
    /// Document sizes in states (load-size, event-size).
    pub sizes: Vec<usize>,
}

/// The names `ors bench` knows.
pub const WORKLOADS: &[&str] = &[
    "ping-pong",
    "ping-pong-data",
    "deep-wide",
    "load-1000",
    "start-sessions",
    "load-size",
    "event-size",
];

/// A generated document of about `states` states (rounded down to a
/// multiple of 10, at least 10): groups of one compound state holding nine
/// atomic ones, as Composer lays out a strategy's blocks. Each atomic state
/// has a `next` transition to its sibling (cycling inside the group) and a
/// `jump` transition to the same position in the next group. With
/// `scripted`, every atomic state also counts its visits in an `<onentry>`
/// `<assign>` and `jump` has a condition, so loading compiles expressions
/// in proportion to the size; without, the document has no executable
/// content, so an event costs only the algorithm's own work.
pub fn sized_document(states: usize, scripted: bool) -> String {
    use std::fmt::Write;
    let groups = (states / 10).max(1);
    let mut out = String::with_capacity(groups * if scripted { 1_400 } else { 700 });
    out.push_str(
        "<scxml xmlns=\"http://www.w3.org/2005/07/scxml\" version=\"1.0\" \
         datamodel=\"ecmascript\" initial=\"g0\">\n",
    );
    if scripted {
        out.push_str("<datamodel><data id=\"visits\" expr=\"0\"/></datamodel>\n");
    }
    for g in 0..groups {
        let _ = writeln!(out, "<state id=\"g{g}\" initial=\"g{g}_s0\">");
        for s in 0..9 {
            let next = (s + 1) % 9;
            let jump = (g + 1) % groups;
            let _ = write!(out, "<state id=\"g{g}_s{s}\">");
            if scripted {
                out.push_str(
                    "<onentry><assign location=\"visits\" expr=\"visits + 1\"/></onentry>",
                );
                let _ = write!(
                    out,
                    "<transition event=\"jump\" cond=\"visits &gt;= 0\" target=\"g{jump}_s{s}\"/>"
                );
            } else {
                let _ = write!(out, "<transition event=\"jump\" target=\"g{jump}_s{s}\"/>");
            }
            let _ = writeln!(
                out,
                "<transition event=\"next\" target=\"g{g}_s{next}\"/></state>"
            );
        }
        out.push_str("</state>\n");
    }
    out.push_str("</scxml>\n");
    out
}

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
        "load-size" => return load_size(opts),
        "event-size" => return event_size(opts),
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

/// `load-size`: for each size, the time to parse, build and validate a
/// [`sized_document`] (scripted), the same with the document on one line,
/// and to start a session of it, per round; reports the median ms and µs
/// per state of each size.
fn load_size(opts: &BenchOptions) -> Result<Value, String> {
    let mut sizes = Vec::new();
    for &n in &opts.sizes {
        let text = sized_document(n, true);
        let mut load_ms = Vec::new();
        let mut start_ms = Vec::new();
        let mut states = 0;
        for _ in 0..opts.rounds.max(1) {
            let t = Instant::now();
            let doc = Arc::new(
                parse_document(&text, None, &LoadOptions::default()).map_err(|e| e.to_string())?,
            );
            load_ms.push(t.elapsed().as_secs_f64() * 1e3);
            states = doc.states.len() - 1;
            let t = Instant::now();
            let mut host = QuietHost { now: 0 };
            let mut session = Session::new(doc, SessionOptions::default());
            session.start(&mut host);
            start_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if session.configuration_names() != ["g0", "g0_s0"] {
                return Err(format!(
                    "the {states}-state document did not start in g0_s0"
                ));
            }
        }
        // The same document on one line (generated or minified
        // strategies): columns must not be counted from the line's start.
        let one_line = text.replace('\n', " ");
        let mut one_line_ms = Vec::new();
        for _ in 0..opts.rounds.max(1) {
            let t = Instant::now();
            let doc = parse_document(&one_line, None, &LoadOptions::default())
                .map_err(|e| e.to_string())?;
            one_line_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if doc.states.len() - 1 != states {
                return Err(format!("the one-line {states}-state document lost states"));
            }
        }
        let load = stats(&load_ms);
        let median = load["median"].as_f64().unwrap_or(0.0);
        sizes.push(json!({
            "states": states,
            "bytes": text.len(),
            "load_ms": load,
            "one_line_load_ms": stats(&one_line_ms),
            "start_ms": stats(&start_ms),
            "load_us_per_state": median * 1e3 / states as f64,
        }));
    }
    Ok(json!({
        "engine": "ors",
        "mode": "in-process",
        "workload": "load-size",
        "unit": "ms",
        "check": "every size parsed, validated and started in g0_s0",
        "sizes": sizes,
    }))
}

/// `event-size`: events/s on a [`sized_document`] without executable
/// content for each size, the active set always one group (`next` cycles
/// its nine leaves), so any difference between sizes is work the engine
/// does in proportion to the document rather than to the active set.
/// Reports each size's rate and its per-event time relative to the
/// smallest size.
fn event_size(opts: &BenchOptions) -> Result<Value, String> {
    let mut sizes = Vec::new();
    let mut base_ns = None;
    for &n in &opts.sizes {
        let doc = Arc::new(
            parse_document(&sized_document(n, false), None, &LoadOptions::default())
                .map_err(|e| e.to_string())?,
        );
        let states = doc.states.len() - 1;
        let events = opts.events - opts.events % 9;
        let mut rounds = Vec::new();
        for _ in 0..opts.rounds.max(1) {
            let (rate, session) = drive(&doc, &["next"], events)?;
            rounds.push(rate);
            if session.configuration_names() != ["g0", "g0_s0"] {
                return Err(format!(
                    "event-size {states}: ended in {:?}",
                    session.configuration_names()
                ));
            }
        }
        let result = stats(&rounds);
        let ns = 1e9 / result["median"].as_f64().unwrap_or(1.0);
        let base = *base_ns.get_or_insert(ns);
        sizes.push(json!({
            "states": states,
            "events_per_s": result,
            "ns_per_event": ns,
            "relative_to_smallest": ns / base,
        }));
    }
    Ok(json!({
        "engine": "ors",
        "mode": "in-process",
        "workload": "event-size",
        "unit": "events/s",
        "check": format!("back in g0_s0 after every multiple of 9 events at every size"),
        "sizes": sizes,
    }))
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
