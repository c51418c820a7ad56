//! `ors run FILE`: one session driven by JSON lines on stdin, reporting a
//! JSON line per processed external event on stdout.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::host::{LocalHost, SessionLogSink, wall_clock_ms};
use crate::interpreter::{Event, Session, SessionOptions};
use crate::io::basichttp;
use crate::model::Document;

/// Options of `ors run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop with exit code 124 after this long.
    pub timeout: Option<Duration>,
    /// Microsteps one macrostep may take (0: unlimited).
    pub max_microsteps: u64,
    /// Where the Basic HTTP listener binds (`None`: no listener).
    pub basichttp: Option<std::net::SocketAddr>,
    /// Print every state entry/exit and transition to stderr.
    pub trace: bool,
}

/// Exit code when `--timeout` stops the run.
pub const EXIT_TIMEOUT: i32 = 124;

/// Exit code when a limit (the microstep limit) stopped the session before
/// it reached a final state.
pub const EXIT_STOPPED: i32 = 3;

/// The exit code for a session that is no longer running: 0 when it
/// reached a final state, [`EXIT_STOPPED`] when a limit stopped it.
pub fn halted_code(session: &Session) -> i32 {
    if session.stop_reason().is_some() {
        EXIT_STOPPED
    } else {
        0
    }
}

/// Writes a `<log>` line to stderr as `label: message`.
pub fn log_to_stderr(label: Option<&str>, message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = match label {
        Some(l) if !l.is_empty() => writeln!(err, "{l}: {message}"),
        _ => writeln!(err, "{message}"),
    };
}

/// Builds the JSON line reported after a step.
pub fn step_line(session: &Session, cause: &str, event: Option<&Event>) -> Value {
    let doc = session.document();
    let mut line = json!({
        "cause": cause,
        "event": event.map(|e| e.name.to_string()),
    });
    match session.final_info() {
        Some(info) if !session.is_running() => {
            let names = |atomic: bool| -> Vec<String> {
                info.configuration
                    .iter()
                    .map(|s| doc.state(s))
                    .filter(|s| !atomic || s.is_atomic())
                    .map(|s| s.name.to_string())
                    .collect()
            };
            line["configuration"] = json!(names(false));
            line["atomic"] = json!(names(true));
            line["done"] = json!(true);
            line["final"] = json!(doc.state(info.state).name.to_string());
        }
        _ if !session.is_running() => {
            line["configuration"] = json!(Vec::<String>::new());
            line["atomic"] = json!(Vec::<String>::new());
            line["done"] = json!(true);
            line["final"] = Value::Null;
            if let Some(reason) = session.stop_reason() {
                line["stopped"] = json!(reason);
            }
        }
        _ => {
            line["configuration"] = json!(session.configuration_names());
            line["atomic"] = json!(session.atomic_names());
        }
    }
    line
}

/// Parses one input line `{"name": ..., "data": ...}` into an external event.
pub fn parse_input_event(line: &str) -> Result<Event, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| "missing \"name\" (a non-empty string)".to_string())?;
    Ok(Event::external(name, v.get("data").cloned()))
}

/// Runs a loaded document until it halts, input ends with nothing left to
/// wake it, or the timeout passes. Returns the process exit code.
pub fn run_document(doc: Arc<Document>, options: &RunOptions) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ors: cannot start the runtime: {e}");
            return 1;
        }
    };
    // A LocalSet, so that invoked children's fetches run as local tasks.
    let local = tokio::task::LocalSet::new();
    let code = local.block_on(&runtime, run_async(doc, options));
    // The stdin reader may be blocked in a read that never returns; do not
    // wait for it.
    runtime.shutdown_background();
    code
}

async fn run_async(doc: Arc<Document>, options: &RunOptions) -> i32 {
    let mut listener = None;
    let code = serve_session(doc, options, &mut listener).await;
    if let Some(l) = listener {
        l.close().await;
    }
    code
}

async fn serve_session(
    doc: Arc<Document>,
    options: &RunOptions,
    listener_slot: &mut Option<basichttp::Listener>,
) -> i32 {
    let deadline = options.timeout.map(|t| Instant::now() + t);
    let mut session_options = SessionOptions {
        max_microsteps: options.max_microsteps,
        ..SessionOptions::default()
    };
    let (failure_tx, mut failures) = mpsc::channel(256);
    let (http_client, mut incoming) = match options.basichttp {
        Some(addr) => match basichttp::listen(addr).await {
            Ok((listener, rx)) => {
                for key in ["basichttp", basichttp::BASICHTTP_TYPE] {
                    Arc::make_mut(&mut session_options.ioprocessors)
                        .insert(key.to_string(), listener.base_url.clone());
                }
                let client = basichttp::Client::new(Some(listener.base_url.clone()), failure_tx);
                *listener_slot = Some(listener);
                (Some(client), Some(rx))
            }
            Err(e) => {
                eprintln!("ors: cannot bind the Basic HTTP listener on {addr}: {e}");
                return 1;
            }
        },
        None => (None, None),
    };
    let log: SessionLogSink =
        Box::new(|_session, _document, label, message| log_to_stderr(label, message));
    let mut host = LocalHost::new(session_options.clone(), log);
    if let Some(client) = http_client {
        host.set_basichttp(client);
    }
    if options.trace {
        host.set_trace(Box::new(|session, _, line| {
            eprintln!("[trace {session}] {line}");
        }));
    }
    let root = host.add(Session::new(doc, session_options));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());

    let (tx, mut rx) = mpsc::channel::<String>(1024);
    tokio::spawn(async move {
        let stdin = tokio::io::stdin();
        let mut lines = tokio::io::BufReader::new(stdin).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    let mut input_open = true;

    let mut fetches = crate::host::Fetches::new();
    host.start(&root);
    if let Some(session) = host.session(&root) {
        write_line(&mut out, &step_line(session, "start", None));
    }
    loop {
        run_root(&mut host, &root, &mut out);
        fetches.start(&mut host);
        let running = host.session(&root).is_some_and(Session::is_running);
        if !running {
            let _ = out.flush();
            return host.session(&root).map_or(0, halted_code);
        }
        // Take input that is already waiting without blocking.
        if input_open {
            match rx.try_recv() {
                Ok(line) => {
                    deliver_input(&mut host, &root, &line);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => input_open = false,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
        }
        let due = host.next_timer_due();
        if due.is_some_and(|d| d <= wall_clock_ms()) {
            host.fire_due_timers(wall_clock_ms());
            continue;
        }
        if !input_open && !host.has_pending_work(&root) {
            let _ = out.flush();
            return 0;
        }
        // Caught up: flush before blocking.
        let _ = out.flush();
        let timer = async {
            match due {
                Some(d) => {
                    tokio::time::sleep(Duration::from_millis(d.saturating_sub(wall_clock_ms())))
                        .await
                }
                None => std::future::pending::<()>().await,
            }
        };
        let stop = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            line = rx.recv(), if input_open => match line {
                Some(line) => deliver_input(&mut host, &root, &line),
                None => input_open = false,
            },
            _ = timer => {
                host.fire_due_timers(wall_clock_ms());
            }
            Some(inc) = recv_incoming(&mut incoming) => {
                let delivered = host.deliver(&inc.session, inc.event);
                let _ = inc.reply.send(delivered);
            }
            Some((session, event)) = failures.recv() => {
                host.deliver(&session, event);
            }
            (fetch, result) = fetches.next() => host.fetched(fetch, result),
            _ = stop => {
                let _ = out.flush();
                eprintln!("ors: timed out");
                return EXIT_TIMEOUT;
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = out.flush();
            eprintln!("ors: timed out");
            return EXIT_TIMEOUT;
        }
    }
}

async fn recv_incoming(
    rx: &mut Option<mpsc::Receiver<basichttp::Incoming>>,
) -> Option<basichttp::Incoming> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn write_line<W: Write>(out: &mut W, line: &Value) {
    let _ = serde_json::to_writer(&mut *out, line);
    let _ = out.write_all(b"\n");
}

/// Serves all queues; reports every event the top-level session processed.
/// Only stdin events have neither an origin nor an invoke id, which is how
/// an `input` line is told from a `delayed` one.
fn run_root<W: Write>(host: &mut LocalHost, root: &str, out: &mut W) {
    host.run_until_idle(&mut |id, session, event| {
        if id == root {
            let cause = if event.origin.is_none() && event.invokeid.is_none() {
                "input"
            } else {
                "delayed"
            };
            write_line(out, &step_line(session, cause, Some(event)));
        }
    });
}

fn deliver_input(host: &mut LocalHost, root: &str, line: &str) {
    if line.trim().is_empty() {
        return;
    }
    match parse_input_event(line) {
        Ok(ev) => {
            host.deliver(root, ev);
        }
        Err(e) => eprintln!("ors: ignoring input line: {e}"),
    }
}

/// Loads a document and its references for the CLI (through the host's
/// loader, on a runtime of its own), printing diagnostics and warnings;
/// `dialect` overrides what `<scxml>` calls for.
pub fn load_for_cli(path: &Path, dialect: Option<crate::model::Dialect>) -> Option<Arc<Document>> {
    let options = crate::parser::LoadOptions {
        dialect,
        ..crate::parser::LoadOptions::default()
    };
    match crate::host::loader::load_file_blocking(path, &options) {
        Ok(doc) => {
            for w in &doc.warnings {
                eprintln!("{w}");
            }
            Some(Arc::new(doc))
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}
