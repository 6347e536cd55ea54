//! Device and tag configuration: the fields every device and tag has, plus the
//! driver's own fields, parsed from the config file (TOML) or the API (JSON)
//! with errors that name the exact field, such as
//! `devices[1].tags[0].data_type: unknown variant `flaot``.
//!
//! A device is read in two steps: the common fields (`name`, `driver`,
//! `enabled`, `poll_interval_ms`, `tags`) are taken out, and what remains must
//! be exactly the driver's own fields (unknown fields are errors). Tags the same.

use std::collections::BTreeSet;

use gateway_model::TagId;
use serde_json::{Map, Value};

use crate::modbus::{ModbusRtuParams, ModbusTagParams, ModbusTcpParams};
use crate::sim::{SimDeviceParams, SimTagParams};

pub use gateway_model::FieldError;
use gateway_model::{parse_fields as typed, take_field as take};

/// Drivers this build knows.
pub const DRIVERS: &[&str] = &["sim", "modbus_tcp", "modbus_rtu"];

/// A driver's device-level fields.
#[derive(Clone, Debug, PartialEq)]
pub enum DriverParams {
    /// The simulator.
    Sim(SimDeviceParams),
    /// A Modbus TCP device.
    ModbusTcp(ModbusTcpParams),
    /// A Modbus RTU device on a serial line.
    ModbusRtu(ModbusRtuParams),
}

/// A driver's tag-level fields.
#[derive(Clone, Debug, PartialEq)]
pub enum TagParams {
    /// A simulated signal.
    Sim(SimTagParams),
    /// A Modbus coil, input or register (both Modbus drivers).
    Modbus(ModbusTagParams),
}

/// A configured tag.
#[derive(Clone, Debug, PartialEq)]
pub struct TagConfig {
    /// The point name; the tag id is `device.name`.
    pub name: String,
    /// Whether commands may write it.
    pub writable: bool,
    /// The driver's fields.
    pub params: TagParams,
}

/// A configured device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceConfig {
    /// Unique name; the first part of its tags' ids.
    pub name: String,
    /// Whether it is polled.
    pub enabled: bool,
    /// Time between polls.
    pub poll_interval_ms: u64,
    /// The driver's fields.
    pub params: DriverParams,
    /// The tags.
    pub tags: Vec<TagConfig>,
}

/// Whether `name` can be the device part of a tag id.
pub fn valid_device_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

impl TagConfig {
    /// Parses a tag of a device using `driver`.
    pub fn from_json(driver: &str, value: Value) -> Result<TagConfig, FieldError> {
        let Value::Object(mut map) = value else {
            return Err(FieldError::new("", "a tag must be a table/object"));
        };
        let name: String = take(&mut map, "name")?.ok_or_else(|| FieldError::new("name", "missing field `name`"))?;
        let writable = take(&mut map, "writable")?.unwrap_or(false);
        let params = match driver {
            "sim" => TagParams::Sim(typed(map)?),
            "modbus_tcp" | "modbus_rtu" => TagParams::Modbus(typed(map)?),
            other => return Err(FieldError::new("driver", format!("unknown driver `{other}`"))),
        };
        Ok(TagConfig { name, writable, params })
    }

    /// The JSON/TOML form.
    pub fn to_json(&self) -> Value {
        let mut map = match &self.params {
            TagParams::Sim(p) => to_map(p),
            TagParams::Modbus(p) => to_map(p),
        };
        map.insert("name".into(), self.name.clone().into());
        map.insert("writable".into(), self.writable.into());
        Value::Object(map)
    }
}

fn to_map<T: serde::Serialize>(v: &T) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

impl DeviceConfig {
    /// Parses a device from its JSON form (the TOML form converts to it).
    pub fn from_json(value: Value) -> Result<DeviceConfig, FieldError> {
        let Value::Object(mut map) = value else {
            return Err(FieldError::new("", "a device must be a table/object"));
        };
        let name: String = take(&mut map, "name")?.ok_or_else(|| FieldError::new("name", "missing field `name`"))?;
        let driver: String =
            take(&mut map, "driver")?.ok_or_else(|| FieldError::new("driver", "missing field `driver`"))?;
        let enabled = take(&mut map, "enabled")?.unwrap_or(true);
        let poll_interval_ms = take(&mut map, "poll_interval_ms")?.unwrap_or(1000);
        let tags_raw: Vec<Value> = take(&mut map, "tags")?.unwrap_or_default();
        let params = match driver.as_str() {
            "sim" => DriverParams::Sim(typed(map)?),
            "modbus_tcp" => DriverParams::ModbusTcp(typed(map)?),
            "modbus_rtu" => DriverParams::ModbusRtu(typed(map)?),
            other => {
                return Err(FieldError::new(
                    "driver",
                    format!("unknown driver `{other}`, expected one of: {}", DRIVERS.join(", ")),
                ));
            }
        };
        let tags = tags_raw
            .into_iter()
            .enumerate()
            .map(|(i, t)| TagConfig::from_json(&driver, t).map_err(|e| e.under(&format!("tags[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        let dev = DeviceConfig { name, enabled, poll_interval_ms, params, tags };
        dev.validate()?;
        Ok(dev)
    }

    /// The driver's name (`sim`, `modbus_tcp`, ...).
    pub fn driver(&self) -> &'static str {
        match self.params {
            DriverParams::Sim(_) => "sim",
            DriverParams::ModbusTcp(_) => "modbus_tcp",
            DriverParams::ModbusRtu(_) => "modbus_rtu",
        }
    }

    /// The JSON/TOML form (what [`DeviceConfig::from_json`] reads).
    pub fn to_json(&self) -> Value {
        let mut map = match &self.params {
            DriverParams::Sim(p) => to_map(p),
            DriverParams::ModbusTcp(p) => to_map(p),
            DriverParams::ModbusRtu(p) => to_map(p),
        };
        map.insert("name".into(), self.name.clone().into());
        map.insert("driver".into(), self.driver().into());
        map.insert("enabled".into(), self.enabled.into());
        map.insert("poll_interval_ms".into(), self.poll_interval_ms.into());
        map.insert("tags".into(), Value::Array(self.tags.iter().map(TagConfig::to_json).collect()));
        Value::Object(map)
    }

    /// The id of tag `name` of this device.
    pub fn tag_id(&self, name: &str) -> Option<TagId> {
        TagId::from_parts(&self.name, name).ok()
    }

    /// The tag named `name`.
    pub fn tag(&self, name: &str) -> Option<&TagConfig> {
        self.tags.iter().find(|t| t.name == name)
    }

    /// Checks what the types alone cannot: names, intervals, the driver's rules.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !valid_device_name(&self.name) {
            return Err(FieldError::new(
                "name",
                format!("{:?} is not a valid device name: use 1-64 of A-Z a-z 0-9 _ -", self.name),
            ));
        }
        if !(1..=86_400_000).contains(&self.poll_interval_ms) {
            return Err(FieldError::new(
                "poll_interval_ms",
                format!("must be between 1 and 86400000, got {}", self.poll_interval_ms),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, t) in self.tags.iter().enumerate() {
            let path = format!("tags[{i}].name");
            if let Err(e) = TagId::from_parts(&self.name, &t.name) {
                return Err(FieldError::new(path, e));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(FieldError::new(path, format!("duplicate tag name {:?}", t.name)));
            }
        }
        match &self.params {
            DriverParams::Sim(p) => crate::sim::validate(self, p),
            DriverParams::ModbusTcp(p) => crate::modbus::validate_tcp(self, p),
            DriverParams::ModbusRtu(p) => crate::modbus::validate_rtu(self, p),
        }
    }
}

/// Parses a list of devices (`[[devices]]`), checking that names are unique
/// and that the enabled devices sharing a serial port agree on its settings.
pub fn parse_devices(values: Vec<Value>, prefix: &str) -> Result<Vec<DeviceConfig>, FieldError> {
    let mut out: Vec<DeviceConfig> = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        let at = format!("{prefix}[{i}]");
        let d = DeviceConfig::from_json(v).map_err(|e| e.under(&at))?;
        if out.iter().any(|o| o.name == d.name) {
            return Err(FieldError::new(format!("{at}.name"), format!("duplicate device name {:?}", d.name)));
        }
        if let Some(e) = crate::modbus::line_conflict(&out, &d) {
            return Err(e.under(&at));
        }
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn errors_name_the_exact_field() {
        let devs = vec![
            json!({"name": "a", "driver": "sim", "tags": [{"name": "t", "signal": "sine"}]}),
            json!({"name": "b", "driver": "sim", "tags": [{"name": "t", "signal": "sine", "data_type": "flaot"}]}),
        ];
        let e = parse_devices(devs, "devices").unwrap_err();
        assert_eq!(e.path, "devices[1].tags[0].data_type");
        assert!(e.message.contains("unknown variant `flaot`"), "{e}");

        let e = parse_devices(vec![json!({"name": "a", "driver": "simm"})], "devices").unwrap_err();
        assert_eq!(e.path, "devices[0].driver");
        let e = parse_devices(vec![json!({"name": "a", "driver": "sim", "colour": 1})], "devices").unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let e = parse_devices(vec![json!({"name": "a b", "driver": "sim"})], "devices").unwrap_err();
        assert_eq!(e.path, "devices[0].name");
        let e = parse_devices(
            vec![json!({"name": "a", "driver": "sim"}), json!({"name": "a", "driver": "sim"})],
            "devices",
        )
        .unwrap_err();
        assert_eq!(e.path, "devices[1].name");
        let e = parse_devices(
            vec![json!({"name": "a", "driver": "sim", "tags": [{"name": "x", "signal": "sine"}, {"name": "x", "signal": "ramp"}]})],
            "devices",
        )
        .unwrap_err();
        assert_eq!(e.path, "devices[0].tags[1].name");
        let e =
            parse_devices(vec![json!({"name": "a", "driver": "sim", "poll_interval_ms": 0})], "devices").unwrap_err();
        assert_eq!(e.path, "devices[0].poll_interval_ms");
    }

    #[test]
    fn json_form_round_trips() {
        let d = DeviceConfig::from_json(json!({
            "name": "line1", "driver": "sim", "poll_interval_ms": 100,
            "tags": [{"name": "temp", "signal": "sine", "amplitude": 5.0, "offset": 20.0, "period_ms": 60000},
                     {"name": "sp", "signal": "constant", "offset": 1.0, "writable": true}]
        }))
        .unwrap();
        let back = DeviceConfig::from_json(d.to_json()).unwrap();
        assert_eq!(back, d);
        assert!(d.tag("sp").unwrap().writable);
        assert_eq!(d.tag_id("temp").unwrap().as_str(), "line1.temp");
    }
}
