//! Engine hosts for tests that drive a `Session` directly: one that stays
//! silent at time 0, and one whose clock the test moves by hand.

use ors::interpreter::Host;

/// A host at time 0 that drops `<log>` output and supports no I/O.
pub struct QuietHost;

impl Host for QuietHost {
    fn now_ms(&mut self) -> u64 {
        0
    }
    fn log(&mut self, _: &str, _: Option<&str>, _: &str) {}
}

/// A host whose clock (`now`, ms) the test sets, keeping `<log>` lines as
/// `label: message`.
#[derive(Default)]
pub struct ManualClockHost {
    /// The time the session sees, in ms.
    pub now: u64,
    /// Every `<log>` line so far.
    pub logs: Vec<String>,
}

impl Host for ManualClockHost {
    fn now_ms(&mut self) -> u64 {
        self.now
    }
    fn log(&mut self, _session: &str, label: Option<&str>, message: &str) {
        self.logs
            .push(format!("{}: {message}", label.unwrap_or("")));
    }
}
