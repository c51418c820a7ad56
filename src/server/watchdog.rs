//! The watchdog of `ors serve`: which session each worker thread is
//! running, and a thread that ends the server process when a worker stays
//! in one session longer than `limits.max_run_ms` (a script stuck in a
//! backtracking regular expression: boa cannot be interrupted) or the
//! process's resident memory passes `limits.max_memory_mb` (a script
//! doubling a string: an allocation failure would abort the process
//! anyway, with no word of why). Before it ends the process it writes the
//! sessions that were running, with the reason, to
//! `<data_dir>/watchdog-culprits.json`.
//!
//! With a store, each worker also marks the session it runs in a slot of
//! `<data_dir>/running-sessions` (one fixed 128-byte slot per worker,
//! rewritten in place), so that after a crash nothing in the process could
//! report — a stack overflow, an abort, the kernel's OOM killer — the
//! supervisor still knows which session was running. The supervisor
//! (`ors serve`'s parent process, `cli::supervise`) reads both files,
//! counts strikes, and has the next server quarantine a session that
//! brought the server down twice ([`quarantine`]).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::host::RunObserver;

/// The exit code of a server the watchdog ended.
pub const EXIT_WATCHDOG: i32 = 70;
/// Per-worker slots naming the session each worker runs (with a store).
pub const JOURNAL_FILE: &str = "running-sessions";
/// The sessions the watchdog blamed, as a JSON array of [`Culprit`].
pub const CULPRITS_FILE: &str = "watchdog-culprits.json";
/// Sessions the next server start marks failed, as a JSON array of
/// [`Culprit`] (written by the supervisor, removed once applied).
pub const QUARANTINE_FILE: &str = "quarantine.json";

/// Bytes per worker slot in the journal: `R <session id>` padded with
/// spaces and ended by a newline; `-` in the first byte when idle.
const SLOT: usize = 128;

/// A session blamed for ending the server, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Culprit {
    /// The top-level session id (or the id of the session that ran).
    pub session: String,
    /// What it did, for the operator.
    pub reason: String,
}

struct WorkerBeat {
    /// When the running session began, ms since [`Watch::start`] plus 1;
    /// 0 while the worker runs no session.
    since: AtomicU64,
    session: Mutex<Option<Arc<str>>>,
}

/// What the workers tell the watchdog; shared by the workers and the
/// watchdog thread.
pub struct Watch {
    start: Instant,
    workers: Vec<WorkerBeat>,
    journal: Option<File>,
}

impl Watch {
    /// A watch over `workers` workers; with `journal` (a store is in use)
    /// the running sessions are also marked in that file, made afresh.
    ///
    /// # Errors
    /// The journal file cannot be created or sized.
    pub fn new(workers: usize, journal: Option<&Path>) -> std::io::Result<Watch> {
        let journal = match journal {
            Some(path) => {
                let mut file = File::create(path)?;
                // Written whole once, so later in-place writes never need
                // a block the disk may not have.
                let mut idle = vec![b' '; SLOT * workers];
                for slot in idle.chunks_mut(SLOT) {
                    slot[0] = b'-';
                    slot[SLOT - 1] = b'\n';
                }
                file.write_all(&idle)?;
                file.sync_all()?;
                Some(file)
            }
            None => None,
        };
        Ok(Watch {
            start: Instant::now(),
            workers: (0..workers)
                .map(|_| WorkerBeat {
                    since: AtomicU64::new(0),
                    session: Mutex::new(None),
                })
                .collect(),
            journal,
        })
    }

    /// The observer worker `worker` gives its host.
    pub fn observer(self: &Arc<Self>, worker: usize) -> RunObserver {
        let watch = self.clone();
        let mut slot = vec![b' '; SLOT];
        Box::new(move |session: Option<&Arc<str>>| {
            let Some(beat) = watch.workers.get(worker) else {
                return;
            };
            match session {
                Some(id) => {
                    *beat.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
                    let now = watch.start.elapsed().as_millis() as u64 + 1;
                    beat.since.store(now, Ordering::Release);
                    if let Some(file) = &watch.journal {
                        slot.fill(b' ');
                        let id = id.as_bytes();
                        let n = id.len().min(SLOT - 3);
                        slot[0] = b'R';
                        slot[2..2 + n].copy_from_slice(&id[..n]);
                        slot[SLOT - 1] = b'\n';
                        let _ = write_at(file, &slot, (worker * SLOT) as u64);
                    }
                }
                None => {
                    beat.since.store(0, Ordering::Release);
                    if let Some(file) = &watch.journal {
                        let _ = write_at(file, b"-", (worker * SLOT) as u64);
                    }
                }
            }
        })
    }

    /// The sessions running now, with how long each has run.
    fn running(&self) -> Vec<(Arc<str>, Duration)> {
        let now = self.start.elapsed().as_millis() as u64 + 1;
        self.workers
            .iter()
            .filter_map(|beat| {
                let since = beat.since.load(Ordering::Acquire);
                if since == 0 {
                    return None;
                }
                let session = beat
                    .session
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()?;
                Some((session, Duration::from_millis(now.saturating_sub(since))))
            })
            .collect()
    }
}

#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(not(unix))]
fn write_at(_file: &File, _bytes: &[u8], _offset: u64) -> std::io::Result<()> {
    Ok(())
}

/// The sessions a journal file marks as running (what the workers were
/// doing when the process died).
pub fn read_journal(path: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    bytes
        .chunks(SLOT)
        .filter(|slot| slot.first() == Some(&b'R'))
        .filter_map(|slot| {
            let id = std::str::from_utf8(slot.get(2..)?).ok()?.trim();
            (!id.is_empty()).then(|| id.to_string())
        })
        .collect()
}

/// Reads a JSON array of culprits (an absent or unreadable file: none).
pub fn read_culprits(path: &Path) -> Vec<Culprit> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes a JSON array of culprits and syncs it.
///
/// # Errors
/// The file cannot be written.
pub fn write_culprits(path: &Path, culprits: &[Culprit]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(&serde_json::to_vec(culprits).unwrap_or_default())?;
    file.sync_all()
}

/// The limits the watchdog thread enforces.
#[derive(Debug, Clone)]
pub struct WatchdogLimits {
    /// Longest one session may run without returning (`None`: unchecked).
    pub max_run: Option<Duration>,
    /// Largest resident memory of the process, in bytes (`None`: unchecked).
    pub max_rss: Option<u64>,
    /// Where to write the culprits before ending the process.
    pub culprits_file: PathBuf,
}

impl WatchdogLimits {
    /// The limits from the server's configuration (`max_memory_mb` 0: half
    /// the machine's memory).
    pub fn from_config(config: &super::Config) -> WatchdogLimits {
        let max_rss = match config.limits.max_memory_mb {
            0 => machine_memory().map(|b| b / 2),
            mb => Some(mb.saturating_mul(1024 * 1024)),
        };
        WatchdogLimits {
            max_run: (config.limits.max_run_ms > 0)
                .then(|| Duration::from_millis(config.limits.max_run_ms)),
            max_rss,
            culprits_file: config.data_dir.join(CULPRITS_FILE),
        }
    }
}

/// Starts the watchdog thread. Every 50 ms it samples the process's
/// resident memory (published for the engine's budget per macrostep,
/// [`crate::memory`]) and checks the limits; past one, it writes the
/// culprits and exits the process with [`EXIT_WATCHDOG`].
///
/// # Errors
/// The thread cannot be spawned.
pub fn spawn(watch: Arc<Watch>, limits: WatchdogLimits) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ors-watchdog".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let rss = resident_bytes();
                if let Some(bytes) = rss {
                    crate::memory::publish_resident(bytes);
                }
                if let Some(culprits) = check(&watch, &limits, rss) {
                    end_process(&limits.culprits_file, &culprits);
                }
            }
        })
        .map(|_| ())
}

/// What is over a limit now, as culprits (an empty list: over the memory
/// limit with no session running).
/// `rss`: the resident memory just sampled, in bytes.
fn check(watch: &Watch, limits: &WatchdogLimits, rss: Option<u64>) -> Option<Vec<Culprit>> {
    let running = watch.running();
    if let Some(max) = limits.max_run {
        let stuck: Vec<Culprit> = running
            .iter()
            .filter(|(_, took)| *took > max)
            .map(|(id, took)| Culprit {
                session: id.to_string(),
                reason: format!(
                    "ran {} ms without returning (limits.max_run_ms is {}); the server was restarted",
                    took.as_millis(),
                    max.as_millis()
                ),
            })
            .collect();
        if !stuck.is_empty() {
            return Some(stuck);
        }
    }
    if let Some(max) = limits.max_rss
        && let Some(rss) = rss
        && rss > max
    {
        return Some(
            running
                .iter()
                .map(|(id, _)| Culprit {
                    session: id.to_string(),
                    reason: format!(
                        "the server's memory reached {} MiB while it ran (limits.max_memory_mb is {}); the server was restarted",
                        rss / (1024 * 1024),
                        max / (1024 * 1024)
                    ),
                })
                .collect(),
        );
    }
    None
}

fn end_process(file: &Path, culprits: &[Culprit]) -> ! {
    if let Err(e) = write_culprits(file, culprits) {
        tracing::error!(file = %file.display(), error = %e, "cannot record the watchdog's culprits");
    }
    for c in culprits {
        tracing::error!(session = %c.session, reason = %c.reason, "watchdog: ending the server");
    }
    if culprits.is_empty() {
        tracing::error!("watchdog: the server is over its memory limit; ending it");
    }
    super::logging::flush();
    std::process::exit(EXIT_WATCHDOG)
}

/// The process's resident memory in bytes (Linux: `/proc/self/status`).
pub fn resident_bytes() -> Option<u64> {
    proc_kib("/proc/self/status", "VmRSS:")
}

/// The machine's memory in bytes (Linux: `/proc/meminfo`).
pub fn machine_memory() -> Option<u64> {
    proc_kib("/proc/meminfo", "MemTotal:")
}

fn proc_kib(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Marks the sessions named in `<data_dir>/quarantine.json` failed in the
/// store (each with its reason; their invoked children's rows removed),
/// then removes the file. Run before the store's running sessions are
/// recovered, so a quarantined session is never run again.
///
/// # Errors
/// The store refused the write (the file stays for the next start).
pub async fn quarantine(
    store: &Arc<dyn crate::store::Store>,
    data_dir: &Path,
) -> Result<Vec<Culprit>, crate::store::StoreError> {
    let path = data_dir.join(QUARANTINE_FILE);
    let culprits = read_culprits(&path);
    if culprits.is_empty() {
        let _ = std::fs::remove_file(&path);
        return Ok(culprits);
    }
    let mut batch = crate::store::WriteBatch::default();
    let now = crate::host::wall_clock_ms() as i64;
    for culprit in &culprits {
        let rows = match store.load_tree_of(&culprit.session).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(session = %culprit.session, error = %e, "quarantined session not in the store");
                continue;
            }
        };
        for mut row in rows {
            if row.id != row.root {
                batch.deletes.push(row.id);
                continue;
            }
            if row.status != "running" {
                continue;
            }
            let mut snapshot: serde_json::Value =
                serde_json::from_str(&row.snapshot).unwrap_or_default();
            if let Some(obj) = snapshot.as_object_mut() {
                obj.insert("running".into(), false.into());
                obj.insert("delayed".into(), serde_json::Value::Array(Vec::new()));
                obj.insert(
                    "stop_reason".into(),
                    format!("quarantined: {}", culprit.reason).into(),
                );
            }
            row.snapshot = snapshot.to_string();
            row.status = "failed".into();
            row.ended_at = Some(now);
            row.wake_at = None;
            tracing::error!(session = %row.id, reason = %culprit.reason, "session quarantined: marked failed, not run again");
            batch.upserts.push(row);
        }
    }
    if !batch.is_empty() {
        store.write(batch).await?;
    }
    let _ = std::fs::remove_file(&path);
    Ok(culprits)
}
