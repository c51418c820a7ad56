//! Runs every `fixtures/traces/NAME.scxml` through `ors run` with the events
//! of `NAME.trace` and checks the lines it prints.
//!
//! A trace file has one item per line:
//! - `# ...` a comment (say why the expected lines are what the spec requires);
//! - `> {json}` an input line sent to stdin;
//! - `< {json}` an expected output line: every key given must be equal in the
//!   actual line (keys not given are not checked).
//!
//! All input is written at once; outputs are compared in order, and the
//! number of output lines must equal the number of `<` lines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn trace_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/traces");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/traces exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "trace"))
        .collect();
    files.sort();
    files
}

fn check_trace(trace: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(trace).map_err(|e| e.to_string())?;
    let chart = trace.with_extension("scxml");
    let mut input = String::new();
    let mut expected: Vec<Value> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('>') {
            input.push_str(rest.trim());
            input.push('\n');
        } else if let Some(rest) = line.strip_prefix('<') {
            let v = serde_json::from_str(rest.trim())
                .map_err(|e| format!("line {}: bad expected JSON: {e}", n + 1))?;
            expected.push(v);
        } else if !(line.is_empty() || line.starts_with('#')) {
            return Err(format!("line {}: expected '#', '>' or '<'", n + 1));
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_ors"))
        .args(["run", "--timeout", "20"])
        .arg(&chart)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let actual: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad output line {l}: {e}")))
        .collect::<Result<_, _>>()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("exit {:?}; stderr:\n{stderr}", out.status.code()));
    }
    for (i, exp) in expected.iter().enumerate() {
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
    if actual.len() != expected.len() {
        return Err(format!(
            "{} output lines, expected {}\nstdout:\n{stdout}",
            actual.len(),
            expected.len()
        ));
    }
    Ok(())
}

#[test]
fn every_trace_fixture_matches() {
    let files = trace_files();
    assert!(!files.is_empty(), "no trace fixtures found");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            check_trace(f).err().map(|e| {
                format!(
                    "{}: {e}",
                    f.file_name().unwrap_or_default().to_string_lossy()
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} traces failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
