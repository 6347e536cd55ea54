//! The connection supervisor of one OPC UA device, without I/O: when to
//! (re)connect, and when a connection that looks alive must be given up.
//! The device task ([`super::device`]) tells it what happened and asks it
//! what to do; every decision is here, so it is tested without a server.
//!
//! * **Down** after a failed connect or a lost connection: the next attempt
//!   waits for an exponential backoff with jitter (`reconnect_min_ms`
//!   doubling to `reconnect_max_ms`); the first attempt of all, and the first
//!   after a connection that worked, do not wait longer than `reconnect_min_ms`.
//! * **Up**: a subscription promises a publish response (data or keep-alive)
//!   at least every publishing interval × keep-alive count. The watchdog
//!   gives it that, one more publishing interval and the request timeout;
//!   past it the subscription is dead while the session may look alive
//!   (the server lost it, or a client library looped on recreating it), so
//!   the connection is torn down and built anew, subscription and all.
//!   A lost server itself is noticed sooner, by the session keep-alive read
//!   every publishing interval, which fails within the request timeout.

use std::time::{Duration, Instant};

use gateway_model::Reason;

use crate::backoff::Backoff;

/// Where the connection stands.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum State {
    /// No connection; the next attempt is due at `retry_at`. `reason` is what
    /// the tags say meanwhile.
    Down {
        /// When to try again.
        retry_at: Instant,
        /// Why the device is down.
        reason: Reason,
    },
    /// Connected, the tags set up.
    Up {
        /// When the subscription was last heard from (or the connection made).
        last_heard: Instant,
        /// The longest the subscription may stay silent; `None`: not watched (poll mode).
        silence: Option<Duration>,
    },
}

/// What the device task must do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing before [`Supervisor::due`].
    Wait,
    /// Connect now.
    Connect,
    /// The subscription went silent past its promise: tear the connection
    /// down (its tags bad, `stale`) and reconnect.
    Stale {
        /// How long it was silent.
        silent_for: Duration,
    },
}

/// The supervisor's state and its backoff.
#[derive(Debug)]
pub(crate) struct Supervisor {
    state: State,
    backoff: Backoff,
    timeout: Duration,
    /// Whether the device was up since the last failure (the first failure
    /// after being up retries after `reconnect_min`).
    was_up: bool,
}

impl Supervisor {
    /// A supervisor whose first attempt is due at `now`.
    pub fn new(backoff: Backoff, timeout: Duration, now: Instant) -> Self {
        Supervisor {
            state: State::Down { retry_at: now, reason: Reason::NOT_CONNECTED },
            backoff,
            timeout,
            was_up: true,
        }
    }

    /// Whether the device is connected and set up.
    #[cfg(test)]
    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up { .. })
    }

    /// When [`Supervisor::decide`] may next say something other than `Wait`
    /// (`None`: only an event can change anything).
    pub fn due(&self) -> Option<Instant> {
        match &self.state {
            State::Down { retry_at, .. } => Some(*retry_at),
            State::Up { last_heard, silence } => silence.map(|s| *last_heard + s),
        }
    }

    /// What to do at `now`.
    pub fn decide(&self, now: Instant) -> Decision {
        match &self.state {
            State::Down { retry_at, .. } if now >= *retry_at => Decision::Connect,
            State::Up { last_heard, silence: Some(s) } if now.saturating_duration_since(*last_heard) > *s => {
                Decision::Stale { silent_for: now.saturating_duration_since(*last_heard) }
            }
            _ => Decision::Wait,
        }
    }

    /// The connection is made and set up. A subscription revised by the
    /// server to `publishing` × `keep_alive_count` is watched; `None` (poll mode) is not.
    pub fn connected(&mut self, now: Instant, subscription: Option<(Duration, u32)>) {
        self.backoff.reset();
        self.was_up = true;
        let silence = subscription.map(|(interval, count)| interval * count.saturating_add(1) + self.timeout);
        self.state = State::Up { last_heard: now, silence };
    }

    /// The subscription answered a publish request (data or keep-alive).
    pub fn heard(&mut self, now: Instant) {
        if let State::Up { last_heard, .. } = &mut self.state {
            *last_heard = now;
        }
    }

    /// A connect failed, or the connection was lost or given up, for
    /// `reason`: down, the next attempt after the backoff. Returns the delay.
    pub fn failed(&mut self, now: Instant, reason: Reason) -> Duration {
        let delay = if self.was_up {
            self.backoff.reset();
            let first = self.backoff.next_delay();
            self.was_up = false;
            first
        } else {
            self.backoff.next_delay()
        };
        self.state = State::Down { retry_at: now + delay, reason };
        delay
    }

    /// Why the device is down (`None` while up).
    pub fn down_reason(&self) -> Option<Reason> {
        match &self.state {
            State::Down { reason, .. } => Some(*reason),
            State::Up { .. } => None,
        }
    }

    /// Failures since the device was last up.
    pub fn failures(&self) -> u32 {
        self.backoff.failures()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn sup(now: Instant) -> Supervisor {
        Supervisor::new(Backoff::new(100 * MS, 1000 * MS, 1), 500 * MS, now)
    }

    #[test]
    fn the_first_connect_is_at_once_and_failures_back_off_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut s = sup(t0);
        assert_eq!(s.decide(t0), Decision::Connect);
        let mut delays = Vec::new();
        for _ in 0..6 {
            let d = s.failed(t0, Reason::TIMEOUT);
            assert_eq!(s.decide(t0), Decision::Wait);
            assert_eq!(s.decide(t0 + d), Decision::Connect);
            assert_eq!(s.down_reason(), Some(Reason::TIMEOUT));
            delays.push(d.as_millis());
        }
        for (d, nominal) in delays.iter().zip([100u128, 200, 400, 800, 1000, 1000]) {
            assert!(*d >= nominal * 8 / 10 && *d <= nominal * 12 / 10, "{delays:?}");
        }
    }

    #[test]
    fn a_connection_that_worked_retries_soon_after_it_is_lost() {
        let t0 = Instant::now();
        let mut s = sup(t0);
        for _ in 0..5 {
            s.failed(t0, Reason::NOT_CONNECTED);
        }
        s.connected(t0, None);
        assert!(s.is_up());
        assert_eq!(s.due(), None, "poll mode is not watched");
        let d = s.failed(t0, Reason::CONNECTION_LOST);
        assert!(d <= 120 * MS, "{d:?}: a server restart is retried after reconnect_min, not the old backoff");
        assert_eq!(s.down_reason(), Some(Reason::CONNECTION_LOST));
    }

    #[test]
    fn the_watchdog_gives_a_silent_subscription_its_keep_alive_period_then_reconnects() {
        let t0 = Instant::now();
        let mut s = sup(t0);
        // Publishing every 200 ms, keep-alive every 3 intervals: the server
        // must answer within 600 ms; the watchdog allows 800 ms + the 500 ms timeout.
        s.connected(t0, Some((200 * MS, 3)));
        assert_eq!(s.due(), Some(t0 + 1300 * MS));
        assert_eq!(s.decide(t0 + 1300 * MS), Decision::Wait);
        s.heard(t0 + 1000 * MS);
        assert_eq!(s.decide(t0 + 2000 * MS), Decision::Wait, "a keep-alive restarted the clock");
        assert_eq!(s.decide(t0 + 2400 * MS), Decision::Stale { silent_for: 1400 * MS });
        s.failed(t0 + 2400 * MS, Reason::STALE);
        assert_eq!(s.down_reason(), Some(Reason::STALE));
        s.heard(t0 + 2500 * MS);
        assert!(!s.is_up(), "hearing while down changes nothing");
    }
}
