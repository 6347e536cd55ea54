//! What a driver reports about its device, for the API and the logs: whether
//! it is connected, how many polls succeeded and failed, the last error.

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
    last_error: Mutex<Option<String>>,
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
