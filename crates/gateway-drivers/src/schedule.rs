//! When a polling driver polls: once at start, then on a grid of its poll
//! interval on the wall clock (a 100 ms device polls at .000, .100, .200 s
//! past each second; a 1 s device on the second).
//!
//! Devices with the same interval then poll together, as SCADA scans do:
//! one timer wake-up of the runtime serves all of them, their answers reach
//! the bus close together, and a connector sends them in fewer messages.
//! With each device on a timer of its own, started whenever it connected,
//! 20 devices polled every 10 ms meant 2,000 separate wake-ups a second.
//! The grid is the wall clock's, so it survives restarts and is the same on
//! every gateway; a late poll skips to the next point on the grid rather
//! than bunching up.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// A device's poll timer.
#[derive(Debug)]
pub struct PollClock {
    interval: Interval,
    period: Duration,
    /// The next tick is off the grid (the first, or one asked for).
    off_grid: bool,
}

impl PollClock {
    /// A clock for `period` whose first tick is now.
    pub fn new(period: Duration) -> Self {
        let period = period.max(Duration::from_millis(1));
        let mut interval = tokio::time::interval_at(Instant::now(), period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
        PollClock { interval, period, off_grid: true }
    }

    /// Waits for the next poll. Cancel-safe, like [`Interval::tick`].
    pub async fn tick(&mut self) -> Instant {
        let at = self.interval.tick().await;
        if self.off_grid {
            self.off_grid = false;
            self.interval.reset_at(next_on_grid(self.period, SystemTime::now(), Instant::now()));
        }
        at
    }

    /// The next tick at once (values were written: read them back without
    /// waiting), then back on the grid.
    pub fn poll_now(&mut self) {
        self.interval.reset_immediately();
        self.off_grid = true;
    }
}

/// The first point of `period`'s grid after `wall`, as an instant (`now` is
/// the instant `wall` was read).
fn next_on_grid(period: Duration, wall: SystemTime, now: Instant) -> Instant {
    let p = period.as_nanos().max(1);
    let since_epoch = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let wait = p - since_epoch % p;
    now + Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_the_wall_clocks() {
        let now = Instant::now();
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let p = Duration::from_millis(100);
        assert_eq!(next_on_grid(p, at(1_700_000_000_030), now), now + Duration::from_millis(70));
        assert_eq!(next_on_grid(p, at(1_700_000_000_099), now), now + Duration::from_millis(1));
        // On a point of the grid: the next one, never now.
        assert_eq!(next_on_grid(p, at(1_700_000_000_000), now), now + p);
        assert_eq!(next_on_grid(Duration::from_secs(1), at(1_700_000_000_250), now), now + Duration::from_millis(750));
    }

    #[tokio::test(start_paused = true)]
    async fn it_polls_at_once_then_on_the_grid_and_again_at_once_when_asked() {
        let period = Duration::from_millis(100);
        let mut c = PollClock::new(period);
        let start = Instant::now();
        c.tick().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the first poll is at start");
        // The paused clock moves tokio's instants, not the wall clock: the
        // next tick is at the grid point computed when the first one fired.
        let wall0 = SystemTime::now();
        let expect = next_on_grid(period, wall0, Instant::now());
        let second = c.tick().await;
        assert!(second.duration_since(expect) < Duration::from_millis(2), "on the grid: {second:?} vs {expect:?}");
        let third = c.tick().await;
        assert_eq!(third - second, period, "then every period");
        c.poll_now();
        let asked = Instant::now();
        assert_eq!(c.tick().await, asked, "at once when asked");
        let back = c.tick().await;
        assert!(back - asked <= period, "back on the grid within a period");
    }
}
