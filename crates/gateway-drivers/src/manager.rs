//! The driver manager: one task per device, started, replaced and stopped
//! one at a time, so changing a device over the API restarts that device's
//! driver alone. A driver task that panics or ends without being told to
//! stop is caught here: its status says `failed` with the reason, and
//! [`DriverManager::failed`] lists it for the health check. It is never
//! restarted in a loop: a driver that panics once will panic again.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;

use gateway_bus::Bus;
use tokio::task::JoinHandle;

use gateway_bus::{Shutdown, ShutdownSwitch};

use crate::driver::DriverEnv;
use crate::{DeviceConfig, DeviceStatus, DriverContext, run_device};

struct Running {
    config: Arc<DeviceConfig>,
    stop: ShutdownSwitch,
    task: JoinHandle<()>,
    status: Arc<DeviceStatus>,
}

/// Starts and stops device drivers.
pub struct DriverManager {
    bus: Bus,
    data_dir: Option<PathBuf>,
    devices: Mutex<BTreeMap<String, Running>>,
}

impl std::fmt::Debug for DriverManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverManager").field("devices", &self.names()).finish()
    }
}

/// How long a driver gets to stop before its task is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl DriverManager {
    /// A manager publishing on `bus`.
    pub fn new(bus: Bus) -> Self {
        DriverManager { bus, data_dir: None, devices: Mutex::new(BTreeMap::new()) }
    }

    /// The same, with the gateway's data directory, where drivers keep what
    /// must outlast a restart ([`DriverContext::data_dir`]).
    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// What browsing and importing need ([`crate::Driver::browse`]).
    pub fn env(&self) -> DriverEnv {
        DriverEnv { data_dir: self.data_dir.clone() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `dev` (or, if it runs, stops it and starts the new configuration).
    /// A disabled device is stopped and not started.
    pub async fn apply(&self, dev: DeviceConfig) {
        self.stop(&dev.name).await;
        if !dev.enabled {
            return;
        }
        let (stop, shutdown) = Shutdown::new();
        let status = Arc::new(DeviceStatus::default());
        status.set_running(true);
        let ctx = DriverContext {
            bus: self.bus.clone(),
            shutdown,
            commands: self.bus.route_commands(&dev.name),
            status: status.clone(),
            data_dir: self.data_dir.clone(),
        };
        let config = Arc::new(dev);
        let name = config.name.clone();
        let task = tokio::spawn(supervise(config.clone(), ctx, status.clone()));
        tracing::info!(device = %name, "Device driver started.");
        self.lock().insert(name, Running { config, stop, task, status });
    }

    /// Stops `name`'s driver (waiting up to 5 s for it to finish). Returns whether it ran.
    pub async fn stop(&self, name: &str) -> bool {
        let Some(r) = self.lock().remove(name) else { return false };
        // Told to stop before its command channel closes: a driver that sees
        // the channel close first would end "by itself" and be reported failed.
        r.stop.stop();
        self.bus.unroute_commands(name);
        let mut task = r.task;
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            tracing::warn!(device = name, "Device driver did not stop in time; aborting it.");
            task.abort();
        }
        tracing::info!(device = name, "Device driver stopped.");
        true
    }

    /// Stops every driver: all are told at once, then each gets what is left
    /// of one grace period (a slow one does not delay the others' stop).
    pub async fn stop_all(&self) {
        let all: Vec<(String, Running)> = std::mem::take(&mut *self.lock()).into_iter().collect();
        for (name, r) in &all {
            r.stop.stop();
            self.bus.unroute_commands(name);
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for (name, r) in all {
            let mut task = r.task;
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!(device = %name, "Device driver did not stop in time; aborting it.");
                task.abort();
            }
        }
        tracing::info!("Device drivers stopped.");
    }

    /// Names of the devices started and not stopped since, in name order (a
    /// driver that ended by itself stays listed).
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The configuration a device runs with.
    pub fn config(&self, name: &str) -> Option<Arc<DeviceConfig>> {
        self.lock().get(name).map(|r| r.config.clone())
    }

    /// The started devices whose driver task died by itself (panicked, or
    /// ended without being told to stop), with the reason, in name order.
    pub fn failed(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter(|(_, r)| r.status.is_failed())
            .map(|(name, r)| (name.clone(), r.status.snapshot().last_error.unwrap_or_default()))
            .collect()
    }

    /// The live status of a started device, `None` if it is not started
    /// (unknown, disabled or stopped); every (re)start begins a fresh one.
    pub fn status(&self, name: &str) -> Option<Arc<DeviceStatus>> {
        self.lock().get(name).map(|r| r.status.clone())
    }
}

/// Runs a device's driver and records how it ended: a panic or an end
/// nobody asked for marks the status `failed` and is logged as an error.
async fn supervise(dev: Arc<DeviceConfig>, ctx: DriverContext, status: Arc<DeviceStatus>) {
    let told_to_stop = ctx.shutdown.clone();
    let outcome = AssertUnwindSafe(run_device(dev.clone(), ctx)).catch_unwind().await;
    let why = match outcome {
        Ok(()) if told_to_stop.is_set() => {
            status.set_running(false);
            return;
        }
        Ok(()) => "the driver stopped by itself".to_owned(),
        Err(panic) => format!("the driver panicked: {}", panic_message(&*panic)),
    };
    tracing::error!(
        device = %dev.name,
        error = %why,
        "Device driver failed; the device stays down until it is changed or the gateway restarts."
    );
    status.set_failed(why);
}

/// The message a panic was raised with (`panic!("...")`); the payload alone,
/// no backtrace.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
