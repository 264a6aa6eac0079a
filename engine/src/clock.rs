//! The engine's notion of time, injected so that tests move it instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds in a UTC day.
pub const DAY_MS: u64 = 86_400_000;
/// Milliseconds in an hour.
pub const HOUR_MS: u64 = 3_600_000;

/// A source of wall-clock time in Unix milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, in milliseconds since the Unix epoch (UTC).
    fn now_ms(&self) -> u64;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock stopped at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now_ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        self.now_ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the time.
    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// The UTC day (days since the Unix epoch) containing `ms`.
pub fn day_of(ms: u64) -> u32 {
    (ms / DAY_MS) as u32
}

/// The UTC hour of the day (0–23) containing `ms`.
pub fn hour_of(ms: u64) -> usize {
    ((ms % DAY_MS) / HOUR_MS) as usize
}

/// The first millisecond of the day after the one containing `ms`.
pub fn next_midnight_ms(ms: u64) -> u64 {
    (ms / DAY_MS + 1) * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_boundaries_are_utc_midnights() {
        let midnight = 20_000 * DAY_MS;
        assert_eq!(day_of(midnight - 1), 19_999);
        assert_eq!(day_of(midnight), 20_000);
        assert_eq!(hour_of(midnight + 5 * HOUR_MS + 1), 5);
        assert_eq!(next_midnight_ms(midnight), midnight + DAY_MS);
        assert_eq!(next_midnight_ms(midnight - 1), midnight);
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new(10);
        let other = clock.clone();
        clock.advance(Duration::from_millis(5));
        assert_eq!(other.now_ms(), 15);
    }
}
