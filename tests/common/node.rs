//! The real CometD JavaScript client (`tests/cometd/client.js` under node)
//! as a child process: it subscribes as a user, prints `READY`, then one
//! `MESSAGE <json>` line per message it receives, and exits after the
//! expected count (or its own timeout).

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout};

/// A running client and every stdout line it printed so far.
pub struct CometClient {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Stdout lines read so far.
    pub seen: Vec<String>,
}

/// Starts `node client.js <url> <user> <messages> <timeout_ms>` in
/// `harness` (killed when dropped); its stderr goes to `stderr`.
pub fn spawn_comet_client(
    harness: &Path,
    url: &str,
    user: &str,
    messages: u32,
    timeout_ms: u64,
    stderr: Stdio,
) -> CometClient {
    let mut child = tokio::process::Command::new("node")
        .arg("client.js")
        .args([url, user, &messages.to_string(), &timeout_ms.to_string()])
        .current_dir(harness)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    CometClient {
        child,
        lines,
        seen: Vec::new(),
    }
}

impl CometClient {
    /// The client's stderr, when it was piped (once).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Reads stdout until `READY` (true), or its end or `limit` (false).
    pub async fn ready(&mut self, limit: Duration) -> bool {
        let (lines, seen) = (&mut self.lines, &mut self.seen);
        let found = tokio::time::timeout(limit, async {
            while let Some(line) = lines.next_line().await.expect("stdout") {
                seen.push(line.clone());
                if line == "READY" {
                    return true;
                }
            }
            false
        })
        .await;
        found == Ok(true)
    }

    /// Reads the rest of stdout and waits for the exit; `None` if that
    /// takes longer than `limit`.
    pub async fn finish(&mut self, limit: Duration) -> Option<ExitStatus> {
        let (lines, seen, child) = (&mut self.lines, &mut self.seen, &mut self.child);
        tokio::time::timeout(limit, async {
            while let Some(line) = lines.next_line().await.expect("stdout") {
                seen.push(line);
            }
            child.wait().await.expect("exit status")
        })
        .await
        .ok()
    }

    /// Kills the client.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The messages received so far (the `MESSAGE` lines' JSON).
    pub fn messages(&self) -> Vec<Value> {
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix("MESSAGE "))
            .map(|j| serde_json::from_str(j).expect("a JSON line"))
            .collect()
    }
}
