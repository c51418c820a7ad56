//! The `ors serve` binary: starts with no configuration, logs JSON lines
//! that carry the session id, and stops cleanly on SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn http(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(request.as_bytes()).expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    reply
}

#[test]
fn serve_runs_without_a_config_logs_json_and_stops_on_sigterm() {
    let data_dir = std::env::temp_dir().join(format!("ors-cli-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut child = common::cli::ors()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--workers",
            "1",
            "--data-dir",
        ])
        .arg(&data_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("ors serve starts");
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server logs that it listens");
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        lines.push(value.clone());
        if value["message"] == "ors serve listening" {
            break value["addr"].as_str().expect("addr field").to_string();
        }
    };
    // With no operator credential configured, the operator API is not
    // open: the server made a token, readable by its owner only, and
    // logged where it keeps it.
    let body = "src=fixtures/server/counter.scxml";
    let start_request = |authorization: &str| {
        format!(
            "POST /scxml/session/start HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{authorization}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let reply = http(&addr, &start_request(""));
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    let token_file = data_dir.join("operator-token");
    assert!(
        lines
            .iter()
            .any(|l| l["file"].as_str() == Some(token_file.to_str().unwrap())),
        "{lines:?}"
    );
    let token = std::fs::read_to_string(&token_file).expect("the operator token file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the token file is readable by others");
    }
    let reply = http(
        &addr,
        &start_request(&format!("Authorization: Bearer {}\r\n", token.trim())),
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let json = reply.split("\r\n\r\n").nth(1).expect("body");
    let start: serde_json::Value = serde_json::from_str(json).expect("JSON reply");
    let id = start["sessionid"].as_str().expect("session id").to_string();

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().expect("wait") {
            exited = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let exited = exited.expect("ors serve stops within 10 s of SIGTERM");
    assert!(exited.success(), "exit status {exited:?}");
    lines.extend(
        rx.try_iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(&l).expect("JSON log line")),
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "session started" && l["session"] == id.as_str()),
        "no 'session started' line with the session id: {lines:?}"
    );
    assert!(lines.iter().any(|l| l["message"] == "shutdown requested"));
}

/// SIGTERM stops the server within a bounded time even when a worker is
/// stuck inside a script that never returns (a backtracking regular
/// expression): open requests get their grace period, the workers theirs,
/// and then the process exits.
#[test]
fn sigterm_stops_the_server_even_with_a_stuck_worker() {
    let data_dir = std::env::temp_dir().join(format!("ors-cli-serve-stuck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let config = data_dir.join("ors.toml");
    std::fs::write(&config, "[security]\nbearer_token = \"stuck-token\"\n").expect("config");
    let mut child = common::cli::ors()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--workers",
            "1",
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--config")
        .arg(&config)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("ors serve starts");
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server logs that it listens");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if value["message"] == "ors serve listening" {
            break value["addr"].as_str().expect("addr field").to_string();
        }
    };
    // Start the stuck session without waiting for a reply that never comes.
    let body = "src=fixtures/server/regex_hang.scxml";
    let mut stream = TcpStream::connect(&addr).expect("connects");
    write!(
        stream,
        "POST /scxml/session/start HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer stuck-token\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request sent");
    std::thread::sleep(Duration::from_millis(500));
    let term = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let mut exited = None;
    while term.elapsed() < Duration::from_secs(60) {
        if let Some(s) = child.try_wait().expect("wait") {
            exited = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = term.elapsed();
    if exited.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    assert!(
        exited.is_some(),
        "ors serve did not stop within 60 s of SIGTERM"
    );
    eprintln!("stopped {took:?} after SIGTERM with a stuck worker");
    drop(stream);
}

#[test]
fn simulate_refuses_a_public_address_unless_told() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ors"))
        .args(["simulate", "--listen", "0.0.0.0:0"])
        .output()
        .expect("ors simulate runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}
