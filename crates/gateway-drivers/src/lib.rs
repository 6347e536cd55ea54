//! Device drivers: the [`Driver`] shape every protocol has, the
//! [`registry`] that maps `driver = "..."` to it, the configuration of
//! devices and tags, the context a driver runs in, the [`DriverManager`] that
//! starts, restarts and stops one task per device, and one module folder per
//! protocol: [`sim`] (the simulator) and [`modbus`] (Modbus TCP and RTU).
//!
//! The contract every driver keeps: one task per device (or per shared serial
//! line); timeouts on every I/O; reconnect with exponential backoff and jitter,
//! also when the first connect fails; a failed read publishes its tags as
//! `bad` with a reason instead of leaving stale `good` values; one failing
//! device never delays another. Drivers meet the rest of the gateway only on
//! the bus: they publish readings and answer the commands routed to them.
//! See [`driver`] for a complete example driver.

mod backoff;
pub mod config;
pub mod driver;
mod manager;
pub mod modbus;
pub mod opcua;
mod point;
pub mod registry;
pub mod schedule;
pub mod security;
pub mod sim;
mod status;

use std::sync::Arc;

pub use config::{DeviceConfig, REDACTED, TagConfig, parse_devices, valid_device_name};
pub use driver::{BrowseError, Driver, DriverContext, DriverEnv, DriverFuture, DriverParams, Stop, TagParams};
pub use gateway_model::FieldError;
pub use manager::DriverManager;
pub use registry::{DRIVERS, DriverEntry};
pub use security::{DevicePolicy, Reach};
pub use status::{DeviceStatus, DeviceWork, DriverState, StatusSnapshot};

/// Runs the driver of `dev` until its context says stop.
pub async fn run_device(dev: Arc<DeviceConfig>, ctx: DriverContext) {
    dev.params.clone().run(dev, ctx).await
}
