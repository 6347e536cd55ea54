//! Device and tag configuration: the fields every device and tag has, plus
//! the driver's own fields, parsed from the config file (TOML) or the API
//! (JSON) with errors that name the exact field, such as
//! `devices[1].tags[0].data_type: unknown variant `flaot``.
//!
//! A device is read in two steps: the common fields (`name`, `driver`,
//! `enabled`, `poll_interval_ms`, `tags`) are taken out, and what remains must
//! be exactly the driver's own fields, read by the driver's registry entry
//! (unknown fields are errors). Tags the same. Nothing here names a protocol.

use std::collections::BTreeSet;

use gateway_model::{FieldError, TagId, take_field};
use serde_json::{Map, Value};

use crate::driver::{DriverParams, TagParams};
use crate::registry::{self, DRIVERS, DriverEntry};

/// A tag as configured (file or API): the fields every tag has and the
/// driver's own, parsed by the device's driver.
#[derive(Clone, Debug, PartialEq)]
pub struct TagConfig {
    /// The point name, unique within its device; the tag id is `device.name`.
    pub name: String,
    /// Whether commands may write it (`false` unless the configuration says so).
    pub writable: bool,
    /// The driver's own fields of this tag (register address, signal, node id ...).
    pub params: TagParams,
}

/// A device as configured (file or API): the fields every device has, the
/// driver with its own fields, and the tags.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceConfig {
    /// Unique among devices; the first part of its tags' ids, so 1-64 of
    /// `A-Z a-z 0-9 _ -` ([`valid_device_name`]).
    pub name: String,
    /// A disabled device is kept in the configuration but not polled.
    pub enabled: bool,
    /// Time between polls, 1 ms to one day.
    pub poll_interval_ms: u64,
    /// The driver and its own fields of this device.
    pub params: DriverParams,
    /// The tags, in configuration order.
    pub tags: Vec<TagConfig>,
}

/// What the API shows in place of a secret field's value.
pub const REDACTED: &str = "***";

/// Whether `name` can be the device part of a tag id.
pub fn valid_device_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn object(value: Value, what: &str) -> Result<Map<String, Value>, FieldError> {
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(FieldError::new("", format!("a {what} must be a table/object"))),
    }
}

impl TagConfig {
    /// Parses a tag of a device whose driver and own fields are `driver`.
    pub fn from_json(driver: &DriverParams, value: Value) -> Result<TagConfig, FieldError> {
        let mut map = object(value, "tag")?;
        let name: String =
            take_field(&mut map, "name")?.ok_or_else(|| FieldError::new("name", "missing field `name`"))?;
        let writable = take_field(&mut map, "writable")?.unwrap_or(false);
        let params = driver.parse_tag(map)?;
        Ok(TagConfig { name, writable, params })
    }

    /// The JSON/TOML form.
    pub fn to_json(&self) -> Value {
        let mut map = self.params.to_json();
        map.insert("name".into(), self.name.clone().into());
        map.insert("writable".into(), self.writable.into());
        Value::Object(map)
    }
}

impl DeviceConfig {
    /// Parses and validates a device from its JSON form (the TOML form
    /// converts to it), with the gateway's drivers.
    pub fn from_json(value: Value) -> Result<DeviceConfig, FieldError> {
        Self::from_json_with(DRIVERS, value)
    }

    /// As [`DeviceConfig::from_json`], with the drivers of `registry`.
    pub fn from_json_with(registry: &[DriverEntry], value: Value) -> Result<DeviceConfig, FieldError> {
        let mut map = object(value, "device")?;
        let name: String =
            take_field(&mut map, "name")?.ok_or_else(|| FieldError::new("name", "missing field `name`"))?;
        let driver: String =
            take_field(&mut map, "driver")?.ok_or_else(|| FieldError::new("driver", "missing field `driver`"))?;
        let enabled = take_field(&mut map, "enabled")?.unwrap_or(true);
        let poll_interval_ms = take_field(&mut map, "poll_interval_ms")?.unwrap_or(1000);
        let tags_raw: Vec<Value> = take_field(&mut map, "tags")?.unwrap_or_default();
        let entry = registry::find(registry, &driver)?;
        let params = entry.parse_device(map)?;
        let tags = tags_raw
            .into_iter()
            .enumerate()
            .map(|(i, t)| TagConfig::from_json(&params, t).map_err(|e| e.under(&format!("tags[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        let dev = DeviceConfig { name, enabled, poll_interval_ms, params, tags };
        dev.validate()?;
        Ok(dev)
    }

    /// The driver's name (`sim`, `modbus_tcp`, ...).
    pub fn driver(&self) -> &'static str {
        self.params.driver()
    }

    /// The JSON/TOML form (what [`DeviceConfig::from_json`] reads).
    pub fn to_json(&self) -> Value {
        let mut map = self.params.to_json();
        map.insert("name".into(), self.name.clone().into());
        map.insert("driver".into(), self.driver().into());
        map.insert("enabled".into(), self.enabled.into());
        map.insert("poll_interval_ms".into(), self.poll_interval_ms.into());
        map.insert("tags".into(), Value::Array(self.tags.iter().map(TagConfig::to_json).collect()));
        Value::Object(map)
    }

    /// The JSON form with every secret field (a password) shown as
    /// [`REDACTED`]: what the API answers.
    pub fn to_public_json(&self) -> Value {
        let mut v = self.to_json();
        if let Value::Object(m) = &mut v {
            for f in self.params.secret_fields() {
                if let Some(x) = m.get_mut(*f) {
                    *x = REDACTED.into();
                }
            }
        }
        v
    }

    /// In `body`, a device's JSON form sent to replace this device: every
    /// secret field sent back as [`REDACTED`] gets this device's value, so a
    /// client may send back what it read. Nothing changes if the drivers differ.
    pub fn restore_secrets(&self, body: &mut Value) {
        let Value::Object(m) = body else { return };
        if m.get("driver").and_then(Value::as_str) != Some(self.driver()) {
            return;
        }
        let mine = self.params.to_json();
        for f in self.params.secret_fields() {
            if m.get(*f).and_then(Value::as_str) == Some(REDACTED) {
                match mine.get(*f) {
                    Some(old) => m.insert((*f).to_owned(), old.clone()),
                    None => m.remove(*f),
                };
            }
        }
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
        self.params.validate(self)
    }

    /// Checks this device against `earlier` ones for what they share (a
    /// serial line); the error's path is relative to this device.
    pub fn check_against(&self, earlier: &[DeviceConfig]) -> Result<(), FieldError> {
        self.params.check_against(self, earlier)
    }
}

/// Parses a list of devices (`[[devices]]`), checking that names are unique
/// and that devices sharing a resource (a serial port) agree on it.
pub fn parse_devices(values: Vec<Value>, prefix: &str) -> Result<Vec<DeviceConfig>, FieldError> {
    let mut out: Vec<DeviceConfig> = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        let at = format!("{prefix}[{i}]");
        let d = DeviceConfig::from_json(v).map_err(|e| e.under(&at))?;
        if out.iter().any(|o| o.name == d.name) {
            return Err(FieldError::new(format!("{at}.name"), format!("duplicate device name {:?}", d.name)));
        }
        d.check_against(&out).map_err(|e| e.under(&at))?;
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

    #[test]
    fn secrets_are_shown_redacted_and_kept_when_sent_back_redacted() {
        let d = DeviceConfig::from_json(json!({
            "name": "ua", "driver": "opcua", "endpoint": "opc.tcp://h:4840", "username": "op", "password": "s3cret",
        }))
        .unwrap();
        let public = d.to_public_json();
        assert_eq!(public["password"], REDACTED);
        assert!(!public.to_string().contains("s3cret"));
        assert!(!format!("{d:?}").contains("s3cret"), "Debug never shows it either");
        let mut back = public.clone();
        d.restore_secrets(&mut back);
        assert_eq!(DeviceConfig::from_json(back).unwrap(), d, "*** keeps the stored password");
        let mut changed = public;
        changed["password"] = json!("n3w");
        d.restore_secrets(&mut changed);
        assert_eq!(changed["password"], "n3w", "a new password replaces it");
        let mut other = json!({"name": "ua", "driver": "sim", "password": REDACTED});
        d.restore_secrets(&mut other);
        assert_eq!(other["password"], REDACTED, "another driver's body is left alone");
    }
}
