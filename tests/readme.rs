//! The README's walk-throughs run as written. Every `$ ` command of the
//! `console` blocks in "A session over HTTP" and "Chat Immediate with
//! curl" (its CometD part included) runs, in order, in one bash, in a
//! fresh directory holding a copy of `fixtures/`, against a fresh
//! `ors serve` started there with no configuration (its supervisor too,
//! as the README's first command runs it). The one change is the port:
//! `localhost:8080` becomes the test server's, so the test can run beside
//! anything else. Each command must succeed, and where the README shows
//! its reply, the reply must have the same shape (the same keys) and the
//! same values for the fields a reader relies on (states, names, totals,
//! errors); ids and times differ from run to run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::{ServeProcess, free_port};
use serde_json::Value;

/// One command of a walk-through and the reply the README shows for it.
struct Step {
    command: String,
    shown: Vec<String>,
}

/// The `console` blocks under the sections named, as steps.
fn steps(readme: &str, sections: &[&str]) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut section = String::new();
    let mut in_block = false;
    let mut continued = false;
    for line in readme.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title.trim().to_string();
            continue;
        }
        if line.starts_with("```") {
            in_block = !in_block && line.trim() == "```console";
            continue;
        }
        if !in_block || !sections.contains(&section.as_str()) {
            continue;
        }
        if continued {
            let step = out.last_mut().expect("a command before its continuation");
            step.command.push('\n');
            step.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ") {
            out.push(Step {
                command: command.to_string(),
                shown: Vec::new(),
            });
            continued = line.ends_with('\\');
        } else if let Some(step) = out.last_mut() {
            step.shown.push(line.to_string());
        }
    }
    out
}

/// Fields whose values the README's replies promise.
const STABLE: &[&str] = &[
    "status",
    "configuration",
    "event",
    "error",
    "total",
    "label",
    "name",
    "src",
    "chatIxnState",
    "chatServiceMessage",
    "_callback_state",
    "_callback_reason",
    "_action",
    "_service_name",
    "channel",
    "successful",
    "subscription",
    "transcriptPosition",
    "position",
];

/// The first object of a reply (the reply, or its first element).
fn first_object(v: &Value) -> Option<&serde_json::Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        Value::Array(a) => a.first().and_then(Value::as_object),
        _ => None,
    }
}

/// Checks a reply against what the README shows for it.
fn check(step: &Step, reply: &str) {
    let Some(shown) = step.shown.first() else {
        return;
    };
    let reply = reply.trim();
    let got: Value = serde_json::from_str(reply)
        .unwrap_or_else(|e| panic!("`{}` answered no JSON ({e}): {reply}", step.command));
    let got_first = first_object(&got);
    match serde_json::from_str::<Value>(shown) {
        // A whole reply: the same keys, and the same values where stable.
        Ok(expected) => {
            let (Some(e), Some(g)) = (first_object(&expected), got_first) else {
                return;
            };
            let mut ek: Vec<&String> = e.keys().collect();
            let mut gk: Vec<&String> = g.keys().collect();
            ek.sort();
            gk.sort();
            assert_eq!(
                ek, gk,
                "`{}`: README shows {shown}, got {reply}",
                step.command
            );
            for key in STABLE {
                if let Some(v) = e.get(*key) {
                    assert_eq!(
                        g.get(*key),
                        Some(v),
                        "`{}`: {key} differs: README shows {shown}, got {reply}",
                        step.command
                    );
                }
            }
        }
        // An abridged reply ("…"): the stable "key":"value" and "key":123
        // pairs it shows occur in the reply, at any depth.
        Err(_) => {
            for key in STABLE {
                let pattern = format!("\"{key}\":");
                let Some(at) = shown.find(&pattern) else {
                    continue;
                };
                let rest = &shown[at + pattern.len()..];
                let value = if let Some(text) = rest.strip_prefix('"') {
                    let text = &text[..text.find('"').unwrap_or(text.len())];
                    if text.contains('…') {
                        continue;
                    }
                    Value::String(text.to_string())
                } else {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    match digits.parse::<u64>() {
                        Ok(n) => Value::from(n),
                        Err(_) => continue,
                    }
                };
                assert!(
                    values_named(&got, key).contains(&&value),
                    "`{}`: no {key} {value}: README shows {shown}, got {reply}",
                    step.command
                );
            }
        }
    }
}

/// Every value of a field `key` anywhere in `v`.
fn values_named<'v>(v: &'v Value, key: &str) -> Vec<&'v Value> {
    let mut found = Vec::new();
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if let Some(s) = m.get(key) {
                    found.push(s);
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    found
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a directory");
    for entry in std::fs::read_dir(from).expect("readable") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copied");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walk_throughs_run_as_written() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let steps = steps(
        &readme,
        &["A session over HTTP", "Chat Immediate with curl"],
    );
    assert!(steps.len() >= 25, "found {} commands", steps.len());

    let dir = common::scratch_dir("readme");
    copy_dir(&root.join("fixtures"), &dir.join("fixtures"));
    let port = free_port();
    // As the README runs it: `ors serve` in the directory, its data in
    // ./ors-data (the README's paths name it).
    let server = ServeProcess::start_supervised_in(port, &dir).await;

    // One bash for all the commands (variables carry over, as in a
    // reader's terminal; no aliases: a script would not expand them);
    // a marker after each splits the output.
    let mut script = String::new();
    for (i, step) in steps.iter().enumerate() {
        let command = step
            .command
            .replace("localhost:8080", &format!("localhost:{port}"));
        script.push_str(&command);
        script.push_str(&format!(
            "\n__rc=$?; echo; echo \"<<<step {i} rc $__rc>>>\"\n"
        ));
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut rest = stdout.as_str();
    for (i, step) in steps.iter().enumerate() {
        let marker = format!("<<<step {i} rc ");
        let at = rest.find(&marker).unwrap_or_else(|| {
            panic!(
                "step {i} `{}` never finished: {stdout}{stderr}",
                step.command
            )
        });
        let reply = &rest[..at];
        let after = &rest[at + marker.len()..];
        let rc = &after[..after.find(">>>").expect("marker end")];
        assert_eq!(
            rc, "0",
            "step {i} `{}` failed: {reply}{stderr}",
            step.command
        );
        check(step, reply);
        rest = &after[after.find(">>>").expect("marker end") + 3..];
    }
    drop(server);
}
