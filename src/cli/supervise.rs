//! The supervisor of `ors serve`: the process an operator starts runs the
//! server as a child process (`ors serve … --supervised`) and starts it
//! again when it dies of a signal (an abort, a stack overflow, the OOM
//! killer) or is ended by its watchdog (`server::watchdog`). Sessions
//! resume from the store. The session running when the server went down
//! gets a strike; after its second, the next server start marks it
//! `failed` with the reason (`server::watchdog::quarantine`) instead of
//! running it again, so no stored input can make a crash loop.
//!
//! The child's stdin is a pipe from the supervisor: the child stops
//! (gracefully, as on SIGTERM) when it closes, so stopping the supervisor
//! stops the server, and a supervisor killed outright leaves no orphan.
//! Restarts back off (0.1 s doubling to 30 s) when the server keeps dying
//! within a minute of its start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::server::watchdog::{self, Culprit};

/// How long a stopping server may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// A server that ran this long before dying resets the back-off.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Strikes after which a session is quarantined.
pub const STRIKES_TO_QUARANTINE: u32 = 2;

/// Runs the server under supervision until it stops on its own or the
/// supervisor is asked to stop; returns the exit code. `data_dir` holds
/// the watchdog's and the journal's files.
pub fn supervise(data_dir: &Path) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ors serve: cannot start the supervisor: {e}");
            return 1;
        }
    };
    runtime.block_on(run(data_dir.to_path_buf()))
}

async fn run(data_dir: PathBuf) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ors serve: cannot find its own executable: {e}");
            return 1;
        }
    };
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut strikes: HashMap<String, u32> = HashMap::new();
    let mut backoff = Duration::ZERO;
    let shutdown = crate::server::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let _ = std::fs::remove_file(data_dir.join(watchdog::CULPRITS_FILE));
        let started = Instant::now();
        let mut child = match tokio::process::Command::new(&exe)
            .args(&args)
            .arg("--supervised")
            .stdin(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "supervisor: cannot start the server");
                return 1;
            }
        };
        let pid = child.id().unwrap_or(0);
        tracing::info!(pid, "supervisor: server started");
        let stdin = child.stdin.take();
        let status = tokio::select! {
            status = child.wait() => status,
            _ = &mut shutdown => {
                drop(stdin);
                return match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                    Ok(Ok(status)) => status.code().unwrap_or(1),
                    _ => {
                        tracing::error!(pid, "supervisor: the server did not stop in time; killed");
                        let _ = child.kill().await;
                        1
                    }
                };
            }
        };
        drop(stdin);
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "supervisor: lost the server process");
                return 1;
            }
        };
        if !crashed(&status) {
            // Stopped on purpose, or could not start (a port in use, a
            // store it cannot open): starting it again would not help.
            return status.code().unwrap_or(1);
        }
        let culprits = blame(&data_dir, &status);
        let mut quarantined = Vec::new();
        for culprit in &culprits {
            let n = strikes.entry(culprit.session.clone()).or_insert(0);
            *n += 1;
            tracing::error!(
                session = %culprit.session,
                strikes = *n,
                reason = %culprit.reason,
                "supervisor: the server went down while this session ran"
            );
            if *n >= STRIKES_TO_QUARANTINE {
                quarantined.push(culprit.clone());
            }
        }
        if culprits.is_empty() {
            tracing::error!(%status, "supervisor: the server went down; no session was running");
        }
        if !quarantined.is_empty() {
            let path = data_dir.join(watchdog::QUARANTINE_FILE);
            let mut all = watchdog::read_culprits(&path);
            all.extend(quarantined);
            if let Err(e) = watchdog::write_culprits(&path, &all) {
                tracing::error!(error = %e, "supervisor: cannot write the quarantine list");
            }
        }
        backoff = if started.elapsed() >= STABLE_AFTER {
            Duration::ZERO
        } else if backoff.is_zero() {
            Duration::from_millis(100)
        } else {
            (backoff * 2).min(Duration::from_secs(30))
        };
        tracing::warn!(
            %status,
            restart_in_ms = backoff.as_millis() as u64,
            "supervisor: restarting the server"
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut shutdown => return 0,
        }
    }
}

/// Whether the server died rather than stopped: a signal, or the
/// watchdog's exit code.
fn crashed(status: &ExitStatus) -> bool {
    if status.code() == Some(watchdog::EXIT_WATCHDOG) {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        status.signal().is_some()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// The sessions to blame for a crash: the watchdog's, else those the
/// journal shows running.
fn blame(data_dir: &Path, status: &ExitStatus) -> Vec<Culprit> {
    let from_watchdog = watchdog::read_culprits(&data_dir.join(watchdog::CULPRITS_FILE));
    if !from_watchdog.is_empty() {
        return from_watchdog;
    }
    watchdog::read_journal(&data_dir.join(watchdog::JOURNAL_FILE))
        .into_iter()
        .map(|session| Culprit {
            session,
            reason: format!("the server process died ({status}) while it ran"),
        })
        .collect()
}
