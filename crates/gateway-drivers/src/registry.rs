//! The drivers this build knows, by the name that `driver = "..."` gives.
//! Adding a protocol is one module folder and one line in [`DRIVERS`].

use gateway_model::{FieldError, parse_fields};
use serde_json::{Map, Value};

use crate::driver::{Driver, DriverParams};
use crate::modbus::{ModbusRtuConfig, ModbusTcpConfig};
use crate::opcua::OpcUaConfig;
use crate::sim::SimConfig;

/// Every driver of the gateway, in the order error messages list them.
pub static DRIVERS: &[DriverEntry] = &[
    DriverEntry::of::<SimConfig>(),
    DriverEntry::of::<ModbusTcpConfig>(),
    DriverEntry::of::<ModbusRtuConfig>(),
    DriverEntry::of::<OpcUaConfig>(),
];

/// How to read one driver's fields: made by [`DriverEntry::of`] for a [`Driver`] type.
#[derive(Clone, Copy)]
pub struct DriverEntry {
    name: &'static str,
    parse_device: fn(Map<String, Value>) -> Result<DriverParams, FieldError>,
}

impl std::fmt::Debug for DriverEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DriverEntry").field(&self.name).finish()
    }
}

impl DriverEntry {
    /// The entry of driver `D`.
    pub const fn of<D: Driver>() -> DriverEntry {
        DriverEntry { name: D::NAME, parse_device: parse_device::<D> }
    }

    /// The name in `driver = "..."`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Reads a device's own fields (what is left once the common ones were
    /// taken out); unknown fields are errors.
    pub fn parse_device(&self, fields: Map<String, Value>) -> Result<DriverParams, FieldError> {
        (self.parse_device)(fields)
    }
}

fn parse_device<D: Driver>(fields: Map<String, Value>) -> Result<DriverParams, FieldError> {
    parse_fields::<D>(fields).map(DriverParams::new)
}

/// The entry named `name` in `registry`, or the error for the `driver` field.
pub(crate) fn find<'r>(registry: &'r [DriverEntry], name: &str) -> Result<&'r DriverEntry, FieldError> {
    registry.iter().find(|e| e.name == name).ok_or_else(|| {
        let known: Vec<&str> = registry.iter().map(|e| e.name).collect();
        FieldError::new("driver", format!("unknown driver `{name}`, expected one of: {}", known.join(", ")))
    })
}
