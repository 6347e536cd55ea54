//! Device drivers: the configuration of devices and tags, the context a
//! driver runs in, the [`DriverManager`] that starts, restarts and stops one
//! task per device, and one module per protocol: [`sim`] (the simulator)
//! and [`modbus`] (Modbus TCP and RTU).
//!
//! The contract every driver keeps: one task per device (or per shared serial
//! line); timeouts on every I/O; reconnect with exponential backoff and jitter,
//! also when the first connect fails; a failed read publishes its tags as
//! `bad` with a reason instead of leaving stale `good` values; one failing
//! device never delays another. Drivers meet the rest of the gateway only on
//! the bus: they publish readings and answer the commands routed to them.

pub mod config;
mod manager;
pub mod modbus;
pub mod sim;
mod status;

use std::sync::Arc;

use gateway_bus::{Bus, CommandInbox, Shutdown};
use gateway_model::Batch;

pub use config::{DeviceConfig, DriverParams, FieldError, TagConfig, TagParams, parse_devices};
pub use manager::DriverManager;
pub use status::{DeviceStatus, StatusSnapshot};

/// The driver was told to stop (or the bus closed) while it waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop;

/// Everything a driver task may touch.
#[derive(Debug)]
pub struct DriverContext {
    /// The bus.
    pub bus: Bus,
    /// Stop when this fires.
    pub shutdown: Shutdown,
    /// Commands for this device's tags.
    pub commands: CommandInbox,
    /// What the driver reports about the device.
    pub status: Arc<DeviceStatus>,
}

impl DriverContext {
    /// Publishes, waiting under backpressure but giving up when told to stop.
    pub async fn publish(&mut self, batch: Batch) -> Result<(), Stop> {
        let bus = self.bus.clone();
        tokio::select! {
            r = bus.publish(Arc::new(batch)) => r.map(|_| ()).map_err(|_| Stop),
            _ = self.shutdown.wait() => Err(Stop),
        }
    }
}

/// Runs the driver of `dev` until its context says stop.
pub async fn run_device(dev: Arc<DeviceConfig>, ctx: DriverContext) {
    match dev.params.clone() {
        DriverParams::Sim(p) => sim::run(dev, p, ctx).await,
        DriverParams::ModbusTcp(p) => modbus::run_tcp(dev, p, ctx).await,
        DriverParams::ModbusRtu(p) => modbus::run_rtu(dev, p, ctx).await,
    }
}
