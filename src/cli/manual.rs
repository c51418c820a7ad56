//! Mechanical checks for the W3C tests marked manual: what a person would
//! verify by reading the log, written down here as assertions on the run's
//! output, its log, or its exit status.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What a manual test must show.
#[derive(Debug, Clone, Copy)]
pub enum ManualCheck {
    /// The document must be rejected at load.
    Rejected,
    /// The run halts in `final`, the log holds every `expect` (in order) and
    /// none of `reject`; `single_step` also requires that it halted in its
    /// first macrostep (no event processed).
    Log {
        /// Fragments that must appear in this order.
        expect: &'static [&'static str],
        /// Fragments that must not appear.
        reject: &'static [&'static str],
        /// Whether the start line must already be the halt.
        single_step: bool,
    },
    /// test230: parent and child log the same `_event` fields.
    AutoforwardedFieldsMatch,
    /// test307: reading an unbound variable and a missing property behave
    /// alike (both raise an error, or neither does).
    SameOutcomeBothStates,
    /// test513: an external POST to the Basic HTTP location gets a 2xx.
    BasicHttpAnswers2xx,
}

/// The check for a manual test id, if it has one (tests with a `pass`
/// state run as usual).
pub fn check_for(test: &str) -> Option<ManualCheck> {
    Some(match test {
        "test178" => ManualCheck::Log {
            expect: &["_event : ", "Var1=2", "Var1=3"],
            reject: &["Outcome: fail"],
            single_step: false,
        },
        "test230" => ManualCheck::AutoforwardedFieldsMatch,
        "test250" => ManualCheck::Log {
            expect: &["Exiting sub01", "Exiting sub0"],
            reject: &["invocation was not cancelled"],
            single_step: false,
        },
        "test301" => ManualCheck::Rejected,
        "test307" => ManualCheck::SameOutcomeBothStates,
        "test415" => ManualCheck::Log {
            expect: &[],
            reject: &[],
            single_step: true,
        },
        "test513" => ManualCheck::BasicHttpAnswers2xx,
        _ => return None,
    })
}

/// The output of one `ors run`.
pub struct RunOutput {
    /// Exit code (`None` when killed).
    pub code: Option<i32>,
    /// JSON lines from stdout.
    pub lines: Vec<Value>,
    /// The log (stderr).
    pub log: String,
}

/// Judges a finished run; `Ok(())` is a pass, `Err` says why not.
pub fn judge(check: ManualCheck, run: &RunOutput) -> Result<(), String> {
    let halted_in_final = || {
        let last = run.lines.last().ok_or("no output")?;
        if last["done"] == true && last["final"] == "final" {
            Ok(())
        } else {
            Err(format!("did not halt in 'final': {last}"))
        }
    };
    match check {
        ManualCheck::Rejected => match run.code {
            Some(2) if run.lines.is_empty() => Ok(()),
            other => Err(format!(
                "expected rejection at load (exit 2), got exit {other:?}"
            )),
        },
        ManualCheck::Log {
            expect,
            reject,
            single_step,
        } => {
            halted_in_final()?;
            if single_step && run.lines.len() != 1 {
                return Err(format!(
                    "expected to halt in the first macrostep, {} lines",
                    run.lines.len()
                ));
            }
            let mut at = 0;
            for e in expect {
                match run.log[at..].find(e) {
                    Some(i) => at += i + e.len(),
                    None => return Err(format!("log lacks '{e}' (in order)")),
                }
            }
            if let Some(r) = reject.iter().find(|r| run.log.contains(*r)) {
                return Err(format!("log has '{r}'"));
            }
            Ok(())
        }
        ManualCheck::AutoforwardedFieldsMatch => {
            halted_in_final()?;
            for field in [
                "name",
                "type",
                "sendid",
                "origin",
                "origintype",
                "invokeid",
                "data",
            ] {
                let prefix = format!("{field} is : ");
                let values: Vec<&str> = run
                    .log
                    .lines()
                    .filter_map(|l| l.strip_prefix(prefix.as_str()))
                    .collect();
                if values.len() != 2 || values[0] != values[1] {
                    return Err(format!(
                        "'{field}' logged as {values:?}; expected the same value twice"
                    ));
                }
            }
            Ok(())
        }
        ManualCheck::SameOutcomeBothStates => {
            halted_in_final()?;
            let s0_error = run.log.contains("error in state s0");
            let s0_ok = run.log.contains("no error in s0");
            let s1_error = run.log.contains("error in state s1");
            let s1_ok = run.log.contains("No error in s1");
            if s0_error != s0_ok && s1_error != s1_ok && s0_error == s1_error {
                Ok(())
            } else {
                Err(format!("s0 error: {s0_error}, s1 error: {s1_error}"))
            }
        }
        ManualCheck::BasicHttpAnswers2xx => Err("judged by a live run".into()),
    }
}

/// test513: starts `ors run` on a chart that waits for `ping`, POSTs it to
/// the session's Basic HTTP location from outside, and expects a 2xx answer
/// and the session to finish.
pub fn check_basichttp_answers(exe: &Path, timeout: Duration) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("ors-manual-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let chart = dir.join("test513.scxml");
    std::fs::write(
        &chart,
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0">
  <state id="wait">
    <onentry><log label="location" expr="_ioprocessors['basichttp'].location"/></onentry>
    <transition event="ping" target="done"/>
  </state>
  <final id="done"/>
</scxml>"#,
    )
    .map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["run", "--timeout"])
        .arg(timeout.as_secs_f64().to_string())
        .arg(&chart)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let _stdin = child.stdin.take();
    let mut log = BufReader::new(child.stderr.take().ok_or("no stderr")?);
    let mut line = String::new();
    log.read_line(&mut line).map_err(|e| e.to_string())?;
    let location = line
        .trim()
        .strip_prefix("location: ")
        .ok_or_else(|| format!("no location logged: {line}"))?
        .to_string();
    let rest = location
        .strip_prefix("http://")
        .ok_or("location is not http")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let body = "_scxmleventname=ping";
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(authority).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.lines().next().unwrap_or_default().to_string();
    let started = Instant::now();
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last: Option<Value> = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    let ok_status = status
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c.starts_with('2'));
    if !ok_status {
        return Err(format!("POST answered '{status}'"));
    }
    match last {
        Some(v) if v["done"] == true && v["final"] == "done" => Ok(()),
        other => Err(format!(
            "the session did not finish on the POSTed event after {} ms: {other:?}",
            started.elapsed().as_millis()
        )),
    }
}
