//! The time the Callback service goes by: record times, desired times,
//! the schedule, the recovery window, the rate and daily throttles. It is
//! the system clock, or, for tests and simulations, a manual clock that
//! only moves when told to ([`Clock::advance`]), so that a callback
//! scheduled two hours ahead or a throttle window of a day is exercised
//! in milliseconds. Sessions' own timers (`<send delay>`) keep the
//! server's clock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A clock in ms since the Unix epoch; cheap to clone (clones share it).
#[derive(Clone)]
pub struct Clock(Arc<Kind>);

enum Kind {
    System,
    /// The current time, moved by [`Clock::advance`]; sleepers watch it.
    Manual(watch::Sender<i64>),
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(Kind::System))
    }

    /// A clock that reads `start_ms` until advanced.
    pub fn manual(start_ms: i64) -> Clock {
        Clock(Arc::new(Kind::Manual(watch::Sender::new(start_ms))))
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &*self.0 {
            Kind::System => crate::host::wall_clock_ms() as i64,
            Kind::Manual(now) => *now.borrow(),
        }
    }

    /// Moves a manual clock forward by `by` and wakes whoever sleeps past
    /// it; the system clock cannot be moved (nothing happens).
    pub fn advance(&self, by: Duration) {
        if let Kind::Manual(now) = &*self.0 {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            now.send_modify(|ms| *ms = ms.saturating_add(by));
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        matches!(&*self.0, Kind::Manual(_))
    }

    /// Waits `duration` by this clock: a timer on the system clock, or
    /// until a manual clock has been advanced that far.
    pub async fn sleep(&self, duration: Duration) {
        let by = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        self.sleep_until(self.now_ms().saturating_add(by)).await;
    }

    /// Waits until this clock reads `at_ms` (at once when it is past):
    /// a time computed from an earlier reading is not pushed back by a
    /// manual clock advanced in between.
    pub async fn sleep_until(&self, at_ms: i64) {
        match &*self.0 {
            Kind::System => {
                let left = at_ms.saturating_sub(self.now_ms()).max(0);
                tokio::time::sleep(Duration::from_millis(left as u64)).await;
            }
            Kind::Manual(now) => {
                let mut watching = now.subscribe();
                // The sender lives as long as the clock, which the caller
                // holds: the wait ends only when the time comes.
                let _ = watching.wait_for(|ms| *ms >= at_ms).await;
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Kind::System => f.write_str("Clock::System"),
            Kind::Manual(_) => write!(f, "Clock::Manual({})", self.now_ms()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_moves_only_when_advanced_and_wakes_its_sleepers() {
        let clock = Clock::manual(1_000);
        assert!(clock.is_manual());
        assert_eq!(clock.now_ms(), 1_000);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move {
                clock.sleep(Duration::from_secs(3_600)).await;
                clock.now_ms()
            }
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(1_800));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke half way");
        clock.advance(Duration::from_secs(1_800));
        assert_eq!(sleeper.await.unwrap(), 1_000 + 3_600_000);
    }

    #[test]
    fn the_system_clock_reads_the_wall_clock_and_cannot_be_moved() {
        let clock = Clock::system();
        let before = crate::host::wall_clock_ms() as i64;
        clock.advance(Duration::from_secs(86_400));
        let now = clock.now_ms();
        assert!(now >= before && now < before + 60_000, "{now} vs {before}");
        assert!(!clock.is_manual());
    }
}
