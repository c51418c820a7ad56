//! The `ors` binary as a child process: `ors run` / `ors validate` driven
//! through stdin and stdout.

use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// A command for the `ors` binary this test build made.
pub fn ors() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ors"))
}

/// Spawns `ors <args>` with stdin and stdout piped and stderr as given.
pub fn spawn_ors<I, S>(args: I, stderr: Stdio) -> Child
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    ors()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("ors spawns")
}

/// Runs `ors <args>`, writing `input` to its stdin (from a thread, so a
/// large input cannot block on a full stdout) and closing it; the output
/// with stdout and stderr captured.
pub fn run_with_input<I, S>(args: I, input: &[u8]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = spawn_ors(args, Stdio::piped());
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("ors runs");
    writer.join().expect("writer").expect("input written");
    out
}

/// Writes `text` to `name` in a directory of this test process; its path.
pub fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ors-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp chart");
    path
}

/// `ors run`'s stdout as text and as its JSON lines (failing the test on
/// a line that is not JSON).
pub fn json_lines(stdout: &[u8]) -> (String, Vec<serde_json::Value>) {
    let text = String::from_utf8_lossy(stdout).into_owned();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    (text, lines)
}
