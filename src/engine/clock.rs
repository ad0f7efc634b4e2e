//! The one clock of the server side: the embedded driver, the service layer
//! and everything else that reads time on a request's path read a [`Clock`].
//!
//! Two kinds of time come from it, and from one source so that they never
//! disagree:
//!
//! - **monotonic** time, [`Clock::instant`]: tokio's clock, which the
//!   driver's timers sleep on;
//! - **wall** time, [`Clock::now_ms`], in Unix milliseconds: what deadlines
//!   are stored and shown in (they must keep counting while the server is
//!   down, and other gateways read them after a fail-over).
//!
//! Wall time is the wall clock read once, when the clock is made, advanced
//! by tokio's monotonic clock since. So a wall clock that jumps (NTP, an
//! operator) never moves time backwards within a run, and a timer set for a
//! deadline fires exactly when `now_ms` reaches it. Tests make the clock
//! inside a runtime with tokio's time paused ([`tokio::time::pause`],
//! `#[tokio::test(start_paused = true)]`): then both kinds of time stand
//! still until the test (or tokio's auto-advance) moves them, together, so a
//! ttl of an hour is tested in microseconds.
//!
//! The lock table stays clock-free: the driver reads this clock and hands
//! the table `now`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::types::UnixMillis;

/// Wall and monotonic time from one source; a cheap copyable handle.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall time at `start`.
    wall_at_start: UnixMillis,
    /// tokio's monotonic time when the clock was made.
    start: Instant,
}

impl Clock {
    /// The production clock: tokio's clock, anchored to the system's wall
    /// clock now.
    pub fn system() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self::starting_at(wall)
    }

    /// A clock whose wall time is `wall` now and advances with tokio's
    /// clock: under paused time, a fully reproducible clock for tests.
    pub fn starting_at(wall: UnixMillis) -> Self {
        Self {
            wall_at_start: wall,
            start: Instant::now(),
        }
    }

    /// Wall time now, in Unix milliseconds. Never goes backwards.
    pub fn now_ms(&self) -> UnixMillis {
        self.wall_at_start + self.start.elapsed().as_millis() as u64
    }

    /// Monotonic time now (tokio's clock, which its timers use).
    pub fn instant(&self) -> Instant {
        Instant::now()
    }

    /// The monotonic moment at which [`now_ms`](Self::now_ms) reaches `at`
    /// (now, for a moment already past).
    pub fn instant_at(&self, at: UnixMillis) -> Instant {
        self.start + Duration::from_millis(at.saturating_sub(self.wall_at_start))
    }
}

impl Default for Clock {
    /// [`Clock::system`].
    fn default() -> Self {
        Self::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wall_and_monotonic_time_move_together_under_paused_time() {
        let clock = Clock::starting_at(1_000_000);
        let t0 = clock.instant();
        assert_eq!(clock.now_ms(), 1_000_000);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(clock.now_ms(), 1_002_500);
        assert_eq!(clock.instant() - t0, Duration::from_millis(2_500));
        // A timer for a wall deadline fires when the wall time reaches it.
        let at = clock.now_ms() + 700;
        tokio::time::sleep_until(clock.instant_at(at)).await;
        assert_eq!(clock.now_ms(), at);
        // A deadline already past is now.
        assert_eq!(clock.instant_at(5), clock.instant_at(1_000_000));
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_starts_at_the_wall_clock() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let clock = Clock::system();
        assert!(clock.now_ms() >= before);
        assert!(clock.now_ms() < before + 60_000);
    }
}
