//! Where `ors serve` writes its log: standard error, from a thread of its
//! own. The access log is a line per request; written on the request's own
//! thread, each line was a `write` system call on the HTTP runtime (about
//! 5% of the server's CPU in `benches/http/load.sh`'s events phase, issue
//! 19). Lines now go through a channel to one writer thread, which writes
//! whatever has queued up in one call and flushes when the queue is empty.
//! No line is dropped: when 128 000 lines are waiting, the thread that logs
//! waits.

use std::sync::Mutex;

use super::config::{Config, LogFormat};

/// The writer thread's guard: dropping it writes what is queued.
static GUARD: Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> = Mutex::new(None);

/// Bytes gathered before one `write` to standard error.
const BUFFER_BYTES: usize = 64 * 1024;

/// Installs the server's log subscriber: level from `ORS_LOG` or
/// `log.level`, `log.format` text or JSON, colour only on a terminal
/// ([`colour_on_stderr`]). Does nothing when a subscriber is already set.
pub fn init(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let stderr = std::io::BufWriter::with_capacity(BUFFER_BYTES, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("ors-log")
        .finish(stderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_on_stderr())
        .with_writer(writer);
    let installed = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_ok() {
        *GUARD.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    }
}

/// Writes the lines logged so far and stops the writer thread (lines
/// logged later are lost): before the process ends (`std::process::exit`
/// runs no destructors). Best effort: the writer is given about a second;
/// a log that cannot be written that fast (standard error blocked, the
/// queue full) loses what is left.
pub fn flush() {
    let guard = GUARD.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(guard);
}

/// Whether log lines may carry colour: only on a terminal, and not when
/// `NO_COLOR` is set (<https://no-color.org>).
pub fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
