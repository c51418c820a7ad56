//! Runs every `fixtures/traces/NAME.scxml` through `ors run --trace` with
//! the events of `NAME.trace`, one named test per fixture, and checks both
//! the JSON lines it prints and the full trace of state entries, exits and
//! transitions, in order, of every session.
//!
//! A trace file has one item per line:
//! - `# ...` a comment (say why the expected lines are what the spec requires);
//! - `> {json}` an input line sent to stdin;
//! - `< {json}` an expected output line: every key given must be equal in the
//!   actual line (keys not given are not checked);
//! - `= sN: enter S` / `= sN: exit S` / `= sN: transition S -> [T ...] at L:C`
//!   an expected trace line of the N-th session to appear in the trace (the
//!   session's own id varies from run to run). Trace lines are placed after
//!   the step that makes them, but compared as one sequence: the trace is on
//!   stderr, so the test cannot tell which step printed a line.
//!
//! All input is written at once; outputs are compared in order, and the
//! number of output lines must equal the number of `<` lines; the trace must
//! equal the `=` lines exactly.

mod common;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn traces_dir() -> PathBuf {
    common::fixtures_dir("traces")
}

/// What a `.trace` file asks for.
struct Expected {
    input: String,
    lines: Vec<Value>,
    trace: Vec<String>,
}

fn read_trace(trace: &Path) -> Result<Expected, String> {
    let text = std::fs::read_to_string(trace).map_err(|e| e.to_string())?;
    let mut expected = Expected {
        input: String::new(),
        lines: Vec::new(),
        trace: Vec::new(),
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('>') {
            expected.input.push_str(rest.trim());
            expected.input.push('\n');
        } else if let Some(rest) = line.strip_prefix('<') {
            let v = serde_json::from_str(rest.trim())
                .map_err(|e| format!("line {}: bad expected JSON: {e}", n + 1))?;
            expected.lines.push(v);
        } else if let Some(rest) = line.strip_prefix('=') {
            expected.trace.push(rest.trim().to_string());
        } else if !(line.is_empty() || line.starts_with('#')) {
            return Err(format!("line {}: expected '#', '>', '<' or '='", n + 1));
        }
    }
    Ok(expected)
}

/// The `[trace ID] LINE` lines of stderr as `sN: LINE`, numbering the
/// sessions in the order they first appear.
fn trace_lines(stderr: &str) -> Vec<String> {
    let mut sessions: HashMap<&str, usize> = HashMap::new();
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("[trace "))
        .filter_map(|l| l.split_once("] "))
        .map(|(id, line)| {
            let next = sessions.len() + 1;
            let n = *sessions.entry(id).or_insert(next);
            format!("s{n}: {line}")
        })
        .collect()
}

fn check_trace(name: &str) -> Result<(), String> {
    let trace = traces_dir().join(format!("{name}.trace"));
    let chart = trace.with_extension("scxml");
    let expected = read_trace(&trace)?;
    if expected.trace.is_empty() {
        return Err("the fixture has no '=' trace lines".into());
    }
    let mut args = vec![
        OsStr::new("run"),
        OsStr::new("--trace"),
        OsStr::new("--timeout"),
        OsStr::new("20"),
    ];
    args.push(chart.as_os_str());
    let out = common::cli::run_with_input(args, expected.input.as_bytes());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let actual: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad output line {l}: {e}")))
        .collect::<Result<_, _>>()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("exit {:?}; stderr:\n{stderr}", out.status.code()));
    }
    for (i, exp) in expected.lines.iter().enumerate() {
        let Some(act) = actual.get(i) else {
            return Err(format!(
                "missing output line {}: expected {exp}\nstdout:\n{stdout}",
                i + 1
            ));
        };
        let Value::Object(fields) = exp else {
            return Err("expected lines must be objects".into());
        };
        for (k, v) in fields {
            if act.get(k) != Some(v) {
                return Err(format!(
                    "output line {}: '{k}' is {}, expected {v}\nfull line: {act}\nstderr:\n{stderr}",
                    i + 1,
                    act.get(k)
                        .map(|x| x.to_string())
                        .unwrap_or("missing".into())
                ));
            }
        }
    }
    if actual.len() != expected.lines.len() {
        return Err(format!(
            "{} output lines, expected {}\nstdout:\n{stdout}",
            actual.len(),
            expected.lines.len()
        ));
    }
    let trace = trace_lines(&stderr);
    if trace != expected.trace {
        let first = trace
            .iter()
            .zip(&expected.trace)
            .position(|(a, e)| a != e)
            .unwrap_or(trace.len().min(expected.trace.len()));
        return Err(format!(
            "the trace differs from line {} on ({} lines, expected {}):\nactual:\n{}\nexpected:\n{}",
            first + 1,
            trace.len(),
            expected.trace.len(),
            trace.join("\n"),
            expected.trace.join("\n")
        ));
    }
    Ok(())
}

/// One `#[test]` per fixture, and the list of them for the completeness
/// check.
macro_rules! trace_fixtures {
    ($($name:ident,)*) => {
        const LISTED: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                if let Err(e) = check_trace(stringify!($name)) {
                    panic!("fixtures/traces/{}.trace: {e}", stringify!($name));
                }
            }
        )*
    };
}

trace_fixtures! {
    basichttp_round_trip,
    binding_early,
    binding_late,
    conflict_resolution,
    delayed_send_cancel,
    done_state_events,
    error_execution,
    error_execution_sources,
    event_data,
    event_descriptor_matching,
    event_queue_order,
    history_internal_target,
    history_parallel,
    history_restores_final,
    history_shallow_deep,
    internal_external_transitions,
    invoke_autoforward,
    invoke_cancel_mid_flight,
    invoke_finalize_order,
    invoke_nested_three_deep,
    limits_runaway_scripts,
    microstep_order,
    parallel_multi_target,
    parallel_sibling_region_target,
    system_variables,
}

#[test]
fn every_trace_fixture_has_a_test_and_every_test_a_fixture() {
    let mut on_disk: Vec<String> = std::fs::read_dir(traces_dir())
        .expect("fixtures/traces exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "trace" || x == "scxml"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    on_disk.sort();
    on_disk.dedup();
    let mut listed: Vec<String> = LISTED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    let untested: Vec<&String> = on_disk.iter().filter(|n| !listed.contains(n)).collect();
    let missing: Vec<&String> = listed.iter().filter(|n| !on_disk.contains(n)).collect();
    assert!(
        untested.is_empty(),
        "fixtures without a test (add them to trace_fixtures!): {untested:?}"
    );
    assert!(missing.is_empty(), "tests without a fixture: {missing:?}");
    for name in &listed {
        let dir = traces_dir();
        assert!(
            dir.join(format!("{name}.scxml")).is_file()
                && dir.join(format!("{name}.trace")).is_file(),
            "{name} needs both NAME.scxml and NAME.trace"
        );
    }
}
