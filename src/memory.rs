//! The process's resident memory as last sampled, shared between the
//! server's watchdog, which samples it (`/proc/self/status`, every tick),
//! and the engine, which reads it to bound how much one macrostep may grow
//! the process (`limits.max_macrostep_memory_mb`, issue 17). No I/O here:
//! one atomic, written by the sampler and read by anyone.

use std::sync::atomic::{AtomicU64, Ordering};

static RESIDENT: AtomicU64 = AtomicU64::new(0);

/// Records a fresh sample of the process's resident memory, in bytes.
pub fn publish_resident(bytes: u64) {
    RESIDENT.store(bytes, Ordering::Relaxed);
}

/// The last sample of the process's resident memory, in bytes; 0 when
/// nothing samples it (no watchdog: `ors run`, embeddings, most tests).
pub fn resident_sample() -> u64 {
    RESIDENT.load(Ordering::Relaxed)
}
