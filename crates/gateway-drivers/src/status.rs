//! What a driver reports about its device, for the API and the logs: whether
//! it is connected, how many polls succeeded and failed, the last error; and,
//! for the gateway's watch on itself, running totals of poll round trips and
//! values produced ([`DeviceStatus::work`]), which a reader turns into rates
//! and means by differences. Drivers update it on every poll, so it must stay
//! a handful of relaxed atomics: no lock, no allocation on that path.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

/// Live status of one device, updated by its driver.
#[derive(Debug, Default)]
pub struct DeviceStatus {
    running: AtomicBool,
    failed: AtomicBool,
    connected: AtomicBool,
    polls: AtomicU64,
    failures: AtomicU64,
    reconnects: AtomicU64,
    last_poll_ns: AtomicU64,
    round_trips: AtomicU64,
    round_trip_ns: AtomicU64,
    values: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Running totals of a device's work since its driver (re)started; take the
/// difference of two readings for an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceWork {
    /// Polls answered whose round trip was timed.
    pub round_trips: u64,
    /// Their total time, nanoseconds.
    pub round_trip_ns: u64,
    /// Values the driver produced (frames it published, bad ones included).
    pub values: u64,
}

impl DeviceWork {
    /// What happened between `earlier` and this reading.
    pub fn since(&self, earlier: &DeviceWork) -> DeviceWork {
        DeviceWork {
            round_trips: self.round_trips.saturating_sub(earlier.round_trips),
            round_trip_ns: self.round_trip_ns.saturating_sub(earlier.round_trip_ns),
            values: self.values.saturating_sub(earlier.values),
        }
    }

    /// Mean round trip in milliseconds; `None` if none was timed.
    pub fn mean_round_trip_ms(&self) -> Option<f64> {
        (self.round_trips > 0).then(|| self.round_trip_ns as f64 / self.round_trips as f64 / 1e6)
    }
}

/// Whether a started device's driver task is alive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverState {
    /// The task runs (whether or not it reaches the device).
    #[default]
    Running,
    /// The task panicked or ended without being told to stop; `last_error`
    /// says which. It stays so until the device is changed or the gateway
    /// restarts.
    Failed,
}

/// A copy of [`DeviceStatus`] for the API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusSnapshot {
    /// Whether the driver task is still running; false once it ended (a
    /// stopped device has no status at all).
    pub running: bool,
    /// `running`, or `failed` once the task died by itself.
    pub state: DriverState,
    /// Whether the driver reached the device at its last attempt.
    pub connected: bool,
    /// Polls that succeeded since the device was last (re)started.
    pub polls: u64,
    /// Polls and connection attempts that failed since the last (re)start.
    pub failures: u64,
    /// Connection attempts after the first.
    pub reconnects: u64,
    /// Time of the last successful poll (RFC 3339), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_poll: Option<String>,
    /// The last error, if the device is failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl DeviceStatus {
    /// Marks the driver task as running or not.
    pub fn set_running(&self, on: bool) {
        self.running.store(on, Ordering::Relaxed);
    }

    /// Marks the device as reachable or not.
    pub fn set_connected(&self, on: bool) {
        self.connected.store(on, Ordering::Relaxed);
        if on {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// A successful poll at `ts_ns`.
    pub fn polled(&self, ts_ns: u64) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.last_poll_ns.store(ts_ns, Ordering::Relaxed);
    }

    /// A poll answered `took` after it was sent (every request of it, for a
    /// poll made of several reads).
    pub fn round_trip(&self, took: std::time::Duration) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.round_trip_ns.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The driver produced `n` values (frames for the bus).
    pub fn produced(&self, n: usize) {
        self.values.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The running totals of round trips and values; each field is read on
    /// its own, so they may be a poll apart.
    pub fn work(&self) -> DeviceWork {
        DeviceWork {
            round_trips: self.round_trips.load(Ordering::Relaxed),
            round_trip_ns: self.round_trip_ns.load(Ordering::Relaxed),
            values: self.values.load(Ordering::Relaxed),
        }
    }

    /// Whether the driver reached the device at its last attempt.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// A failed poll or connection attempt.
    pub fn failed(&self, error: impl std::fmt::Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }

    /// The driver task died (panicked, or returned without being told to
    /// stop): not running, `failed`, with `why` as the last error.
    pub fn set_failed(&self, why: impl std::fmt::Display) {
        self.failed.store(true, Ordering::Relaxed);
        self.running.store(false, Ordering::Relaxed);
        self.connected.store(false, Ordering::Relaxed);
        self.failed(why);
    }

    /// Whether the driver task died by itself ([`DeviceStatus::set_failed`]).
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Counts a connection attempt after the first (`reconnects`).
    pub fn reconnecting(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy for the API; each field is read on its own, so two counters may
    /// be a poll apart.
    pub fn snapshot(&self) -> StatusSnapshot {
        let last = self.last_poll_ns.load(Ordering::Relaxed);
        StatusSnapshot {
            running: self.running.load(Ordering::Relaxed),
            state: if self.is_failed() { DriverState::Failed } else { DriverState::Running },
            connected: self.connected.load(Ordering::Relaxed),
            polls: self.polls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_poll: (last > 0).then(|| gateway_model::format_rfc3339_ns(last)),
            last_error: self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn work_totals_give_an_interval_by_difference() {
        let s = DeviceStatus::default();
        s.round_trip(Duration::from_millis(2));
        s.produced(10);
        let before = s.work();
        assert_eq!(before.mean_round_trip_ms(), Some(2.0));
        s.round_trip(Duration::from_millis(3));
        s.round_trip(Duration::from_millis(5));
        s.produced(4);
        let d = s.work().since(&before);
        assert_eq!(d, DeviceWork { round_trips: 2, round_trip_ns: 8_000_000, values: 4 });
        assert_eq!(d.mean_round_trip_ms(), Some(4.0));
        assert_eq!(s.work().since(&s.work()).mean_round_trip_ms(), None);
    }
}
