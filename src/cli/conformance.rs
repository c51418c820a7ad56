//! `ors conformance DIR`: runs a W3C IRP suite laid out like
//! `shared/conformance/w3c` (driven by its `manifest.tsv`), each test in its
//! own `ors run` process with a timeout, several at once.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::say;
use serde_json::{Value, json};

/// Options of `ors conformance`.
#[derive(Debug, Clone)]
pub struct ConformanceOptions {
    /// Suite directory (holds `manifest.tsv`).
    pub dir: PathBuf,
    /// Only tests whose id contains one of these.
    pub filter: Vec<String>,
    /// Tests run at once.
    pub jobs: usize,
    /// Per-test timeout (Basic HTTP tests get at least 35 s).
    pub timeout: Duration,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Floors: category → minimum passes.
    pub min_pass: Vec<(String, usize)>,
    /// The `ors` executable to run tests with.
    pub exe: PathBuf,
}

/// One manifest row.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// Test id (`test144`).
    pub test: String,
    /// Path relative to the suite.
    pub file: String,
    /// `mandatory`, `optional` or `manual`.
    pub category: String,
    /// Features needed (`none`, `delay-send`, ...).
    pub needs: String,
}

/// What happened to one test.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// Test id.
    pub test: String,
    /// Category.
    pub category: String,
    /// Needs.
    pub needs: String,
    /// `pass`, `fail`, `timeout`, `error` or `skip`.
    pub outcome: &'static str,
    /// Wall time.
    pub ms: u64,
    /// Why, when it did not pass.
    pub detail: String,
}

/// Reads `manifest.tsv`.
pub fn read_manifest(dir: &Path) -> Result<Vec<TestCase>, String> {
    let path = dir.join("manifest.tsv");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(t), Some(f), Some(c), Some(n)) =
        (col("test"), col("file"), col("category"), col("needs"))
    else {
        return Err(format!(
            "{}: header must have test, file, category, needs",
            path.display()
        ));
    };
    let mut cases = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let get = |i: usize| cols.get(i).copied().unwrap_or_default().to_string();
        cases.push(TestCase {
            test: get(t),
            file: get(f),
            category: get(c),
            needs: get(n),
        });
    }
    Ok(cases)
}

fn run_one(case: &TestCase, opts: &ConformanceOptions) -> TestResult {
    let start = Instant::now();
    let result = |outcome, detail: String| TestResult {
        test: case.test.clone(),
        category: case.category.clone(),
        needs: case.needs.clone(),
        outcome,
        ms: start.elapsed().as_millis() as u64,
        detail,
    };
    let manual = super::manual::check_for(&case.test);
    if let Some(super::manual::ManualCheck::BasicHttpAnswers2xx) = manual {
        return match super::manual::check_basichttp_answers(&opts.exe, opts.timeout) {
            Ok(()) => result("pass", String::new()),
            Err(e) => result("fail", e),
        };
    }
    if !case.file.ends_with(".scxml") {
        return result("skip", "not an SCXML document".into());
    }
    let timeout = if case.needs.contains("basichttp") {
        opts.timeout.max(Duration::from_secs(35))
    } else {
        opts.timeout
    };
    let path = opts.dir.join(&case.file);
    let child = Command::new(&opts.exe)
        .arg("run")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return result("error", format!("cannot start {}: {e}", opts.exe.display())),
    };
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => break None,
        }
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let last_err = err.lines().last().unwrap_or_default().to_string();
    let Some(status) = status else {
        return result(
            "timeout",
            format!("no verdict within {} s", timeout.as_secs()),
        );
    };
    if let Some(check) = manual {
        let run = super::manual::RunOutput {
            code: status.code(),
            lines: out
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
            log: err.clone(),
        };
        return match super::manual::judge(check, &run) {
            Ok(()) => result("pass", String::new()),
            Err(e) => result("fail", e),
        };
    }
    let last: Option<Value> = out
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    match last {
        Some(v) if v["done"] == json!(true) => match v["final"].as_str() {
            Some("pass") => result("pass", String::new()),
            Some(other) => result("fail", format!("halted in '{other}'")),
            None => result("fail", "halted without a final state".into()),
        },
        Some(v) => result(
            "fail",
            format!("did not halt; last configuration {}", v["configuration"]),
        ),
        None => result(
            "error",
            format!("exit {}: {}", status.code().unwrap_or(-1), last_err),
        ),
    }
}

#[derive(Default, Serialize, Clone)]
struct Tally {
    total: usize,
    pass: usize,
    fail: usize,
    timeout: usize,
    error: usize,
    skip: usize,
}

impl Tally {
    fn add(&mut self, outcome: &str) {
        self.total += 1;
        match outcome {
            "pass" => self.pass += 1,
            "fail" => self.fail += 1,
            "timeout" => self.timeout += 1,
            "skip" => self.skip += 1,
            _ => self.error += 1,
        }
    }
}

/// Runs the suite; returns the exit code (1 when a floor is not met).
pub fn run(opts: &ConformanceOptions) -> i32 {
    let cases = match read_manifest(&opts.dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ors conformance: {e}");
            return 2;
        }
    };
    let cases: Vec<TestCase> = cases
        .into_iter()
        .filter(|c| {
            opts.filter.is_empty() || opts.filter.iter().any(|f| c.test.contains(f.as_str()))
        })
        .collect();
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<TestResult>>> = Mutex::new(vec![None; cases.len()]);
    let print_lock = Mutex::new(());
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let r = run_one(case, opts);
                    {
                        let _g = print_lock.lock().unwrap_or_else(|e| e.into_inner());
                        let detail = if r.detail.is_empty() {
                            String::new()
                        } else {
                            format!("  {}", r.detail)
                        };
                        say(format_args!(
                            "{:<8} {:<9} {:<10} {:>6}ms  [{}]{}",
                            r.outcome, r.test, r.category, r.ms, r.needs, detail
                        ));
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    let results: Vec<TestResult> = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect();
    let elapsed = started.elapsed();

    let mut by_category: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_needs: BTreeMap<String, Tally> = BTreeMap::new();
    for r in &results {
        by_category
            .entry(r.category.clone())
            .or_default()
            .add(r.outcome);
        for need in r.needs.split(',') {
            by_needs
                .entry(need.trim().to_string())
                .or_default()
                .add(r.outcome);
        }
    }
    let table = |title: &str, rows: &BTreeMap<String, Tally>| {
        say(format_args!(""));
        say(format_args!(
            "{title:<22} {:>6} {:>6} {:>6} {:>8} {:>6} {:>6}",
            "total", "pass", "fail", "timeout", "error", "skip"
        ));
        for (k, t) in rows {
            say(format_args!(
                "{k:<22} {:>6} {:>6} {:>6} {:>8} {:>6} {:>6}",
                t.total, t.pass, t.fail, t.timeout, t.error, t.skip
            ));
        }
    };
    table("by category", &by_category);
    table("by needs", &by_needs);
    say(format_args!(""));
    say(format_args!(
        "conformance run took {:.1} s with {} jobs",
        elapsed.as_secs_f64(),
        opts.jobs
    ));

    if let Some(path) = &opts.json {
        let report = json!({
            "results": results,
            "summary": {
                "by_category": by_category,
                "by_needs": by_needs,
                "seconds": elapsed.as_secs_f64(),
            }
        });
        if let Err(e) = std::fs::write(
            path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        ) {
            eprintln!("ors conformance: cannot write {}: {e}", path.display());
        }
    }
    let mut code = 0;
    for (key, min) in &opts.min_pass {
        let got = count_passes(&results, key);
        if got < *min {
            say(format_args!(
                "FLOOR NOT MET: '{key}' passed {got}, needs at least {min}"
            ));
            code = 1;
        } else {
            say(format_args!(
                "floor met: '{key}' passed {got} (at least {min})"
            ));
        }
    }
    code
}

/// Passes counted for a floor key: `CATEGORY`, or
/// `CATEGORY-without-NEED+NEED...` to leave out tests that need any of those.
pub fn count_passes(results: &[TestResult], key: &str) -> usize {
    let (category, excluded): (&str, Vec<&str>) = match key.split_once("-without-") {
        Some((c, needs)) => (c, needs.split('+').collect()),
        None => (key, Vec::new()),
    };
    results
        .iter()
        .filter(|r| r.category == category && r.outcome == "pass")
        .filter(|r| !r.needs.split(',').any(|n| excluded.contains(&n.trim())))
        .count()
}
