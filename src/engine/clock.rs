//! The one place the embedded backend reads time.
//!
//! Wall-clock milliseconds are what deadlines are stored in (they must keep
//! counting while the server is down), but a wall clock can jump. `Clock`
//! reads the wall clock once at start and advances it with the monotonic
//! clock, so time within a run never goes backwards.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::types::UnixMillis;

/// Monotonic Unix milliseconds, anchored to the wall clock at creation.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: UnixMillis,
    start: Instant,
}

impl Clock {
    /// Anchors a clock to the wall clock now.
    pub fn new() -> Self {
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            base,
            start: Instant::now(),
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now(&self) -> UnixMillis {
        self.base + self.start.elapsed().as_millis() as u64
    }

    /// The `Instant` at which [`now`](Self::now) reaches `at`.
    pub fn instant_at(&self, at: UnixMillis) -> Instant {
        self.start + Duration::from_millis(at.saturating_sub(self.base))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
