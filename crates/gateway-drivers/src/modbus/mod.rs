//! The Modbus driver: Modbus TCP (`driver = "modbus_tcp"`) and Modbus RTU
//! over a serial line (`driver = "modbus_rtu"`), reading coils, discrete
//! inputs, holding and input registers as typed tags and writing coils and
//! holding registers back on command. The protocol itself is `tokio-modbus`;
//! this module adds what a plant needs around it.
//!
//! **Reading.** The planner merges a device's tags into the fewest
//! requests (at most 125 registers or 2000 bits each, joining tags at most
//! `max_gap` registers apart). Each poll runs the plan and publishes one
//! batch. A request the device refuses with "illegal data address" is split
//! (at its gaps, then per tag) and stays split. Values are decoded per
//! `data_type`, `byte_order`, `bit`, `scale` and `offset` ([`config`]).
//!
//! **Failures.** Every request has a timeout. A failed read publishes its
//! tags `bad` with a reason (`timeout`, `connection_lost`, `not_connected`,
//! `device_exception_N`, `malformed_response`, `decode_error`) carrying the
//! last good value read (or, if none was ever read, a neutral value: false,
//! 0, 0.0, ""), so no stale value stays `good`. An exception or a malformed
//! answer ends its own request only. A timeout or a lost connection makes
//! the device unreachable: the rest of that poll is skipped (its tags bad
//! for the same reason) and the device is retried after an exponential
//! backoff with ±20% jitter (`reconnect_min_ms` doubling to
//! `reconnect_max_ms`), the first connect included; meanwhile each poll
//! publishes the tags as `bad`. Every device runs in its own task, so a dead
//! or slow device never delays another; on a shared serial line a dead
//! slave costs one timeout per backoff period.
//!
//! **Deadband.** A tag without `deadband` is published on every poll. With
//! one, a good value is published only when it moved more than the
//! deadband from the last *published* value (`0`: any change), when its
//! quality or reason changes, and at least every [`REFRESH_POLLS`] polls, so
//! a consumer can tell "alive and steady" from "stale". Bad values follow
//! the same rule (published on the change of reason, then every
//! `REFRESH_POLLS` polls).
//!
//! **Commands.** A write to a writable tag is encoded per data type and
//! byte order, `scale`/`offset` applied inversely (rounded to the nearest
//! raw step for integers): a coil with FC 5, one register with FC 6,
//! several with FC 16 (`write_multiple_only` makes these FC 15/16 for
//! devices without FC 5/6), and a `bit` of a holding register by reading
//! the register (FC 3), changing the bit and writing it back (FC 6) — not
//! atomic: a change the device itself makes to another bit of that
//! register between the two requests is overwritten. The acknowledgement
//! is `ok`, `rejected` (not writable, or the value does not fit the type)
//! or `failed` with the Modbus exception or I/O error in its message. The
//! device is polled right after a write, so the new value shows at once.
//!
//! **Stopping.** A stopped driver publishes its tags `bad` (`shutdown`),
//! so consumers stop showing them as good.

mod config;
mod device;
mod line;
mod link;
mod planner;
mod value;

use std::sync::Arc;

pub use config::{Area, ByteOrder, DataType, ModbusRtuConfig, ModbusTagConfig, ModbusTcpConfig, Parity};

use gateway_model::FieldError;

use crate::config::DeviceConfig;
use crate::driver::{Driver, DriverContext};
use crate::security::Reach;

pub use crate::point::REFRESH_POLLS;

impl Driver for ModbusTcpConfig {
    const NAME: &'static str = "modbus_tcp";
    type Tag = ModbusTagConfig;

    fn validate(&self, dev: &DeviceConfig) -> Result<(), FieldError> {
        config::validate_tcp(dev, self)
    }

    fn reaches(&self) -> Vec<Reach> {
        let host = self.address.rsplit_once(':').map_or(self.address.as_str(), |(h, _)| h);
        vec![Reach::Host { field: "address", host: host.trim_start_matches('[').trim_end_matches(']').to_owned() }]
    }

    fn run(&self, dev: Arc<DeviceConfig>, ctx: DriverContext) -> impl Future<Output = ()> + Send + 'static {
        let common = self.common();
        let link = link::Link::Tcp(link::TcpLink::new(self.address.clone(), self.unit_id, common.timeout));
        device::run(dev, common, link, ctx)
    }
}

impl Driver for ModbusRtuConfig {
    const NAME: &'static str = "modbus_rtu";
    type Tag = ModbusTagConfig;

    fn validate(&self, dev: &DeviceConfig) -> Result<(), FieldError> {
        config::validate_rtu(dev, self)
    }

    fn reaches(&self) -> Vec<Reach> {
        vec![Reach::SerialPort { field: "port", path: self.port.clone() }]
    }

    /// Enabled devices on one serial port must agree on its line settings.
    fn check_against(&self, dev: &DeviceConfig, earlier: &[DeviceConfig]) -> Result<(), FieldError> {
        config::line_conflict(self, dev, earlier).map_or(Ok(()), Err)
    }

    fn run(&self, dev: Arc<DeviceConfig>, ctx: DriverContext) -> impl Future<Output = ()> + Send + 'static {
        let common = self.common();
        let link = link::Link::Rtu(line::RtuLink::new(self));
        device::run(dev, common, link, ctx)
    }
}
