//! The fields of Modbus devices (`driver = "modbus_tcp"` and `"modbus_rtu"`)
//! and of their tags, with their defaults and the checks the types alone
//! cannot make (register ranges, which fields go with which area and data
//! type, serial settings shared by the devices of one port). Every error
//! names the field it concerns, e.g. `tags[3].length: required for data_type string`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use gateway_model::FieldError;

use crate::config::DeviceConfig;

/// Where a tag lives in the device: one of the four Modbus tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// Read-write bits (FC 1, written with FC 5/15).
    Coil,
    /// Read-only bits (FC 2).
    DiscreteInput,
    /// Read-write registers (FC 3, written with FC 6/16).
    HoldingRegister,
    /// Read-only registers (FC 4).
    InputRegister,
}

impl Area {
    /// Whether the table holds bits (coils, discrete inputs) rather than registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Area::Coil | Area::DiscreteInput)
    }

    /// Whether Modbus can write the table at all.
    pub fn is_writable(self) -> bool {
        matches!(self, Area::Coil | Area::HoldingRegister)
    }

    /// The configuration name (`holding_register`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Area::Coil => "coil",
            Area::DiscreteInput => "discrete_input",
            Area::HoldingRegister => "holding_register",
            Area::InputRegister => "input_register",
        }
    }
}

/// How the registers of a tag are interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// A coil or discrete input, a `bit` of a register, or a register that is non-zero.
    Bool,
    /// One register, signed.
    I16,
    /// One register, unsigned.
    U16,
    /// Two registers, signed.
    I32,
    /// Two registers, unsigned.
    U32,
    /// Four registers, signed.
    I64,
    /// Four registers, unsigned.
    U64,
    /// Two registers, IEEE 754 single precision.
    F32,
    /// Four registers, IEEE 754 double precision.
    F64,
    /// `length` registers of text, two bytes per register, UTF-8, ended by
    /// the first NUL byte or the last register.
    String,
}

impl DataType {
    /// The configuration name (`f32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::I16 => "i16",
            DataType::U16 => "u16",
            DataType::I32 => "i32",
            DataType::U32 => "u32",
            DataType::I64 => "i64",
            DataType::U64 => "u64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String => "string",
        }
    }

    /// Registers one value takes (strings: their `length`).
    pub fn registers(self, length: Option<u16>) -> u16 {
        match self {
            DataType::Bool | DataType::I16 | DataType::U16 => 1,
            DataType::I32 | DataType::U32 | DataType::F32 => 2,
            DataType::I64 | DataType::U64 | DataType::F64 => 4,
            DataType::String => length.unwrap_or(1),
        }
    }

    /// Whether values are numbers (so `scale`, `offset` and a numeric `deadband` apply).
    pub fn is_numeric(self) -> bool {
        !matches!(self, DataType::Bool | DataType::String)
    }
}

/// The order of the bytes of a value over its registers, named after the
/// bytes of a 32-bit value `A B C D` (A most significant) as they appear in
/// the registers. `ABCD` is the Modbus standard (big-endian registers, most
/// significant register first); `CDAB` swaps the registers (least
/// significant first, for 64-bit values all four in reverse); `BADC` swaps
/// the two bytes inside each register; `DCBA` does both. One-register
/// values and strings only feel the byte swap (`BADC`, `DCBA`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ByteOrder {
    /// Big-endian: the Modbus standard.
    #[default]
    #[serde(rename = "ABCD", alias = "abcd")]
    Abcd,
    /// Bytes swapped inside each register.
    #[serde(rename = "BADC", alias = "badc")]
    Badc,
    /// Registers least significant first, the bytes inside each in order.
    #[serde(rename = "CDAB", alias = "cdab")]
    Cdab,
    /// Little-endian: registers reversed and bytes swapped.
    #[serde(rename = "DCBA", alias = "dcba")]
    Dcba,
}

impl ByteOrder {
    /// Whether the two bytes of each register are swapped.
    pub fn swap_bytes(self) -> bool {
        matches!(self, ByteOrder::Badc | ByteOrder::Dcba)
    }

    /// Whether the registers come least significant first.
    pub fn swap_words(self) -> bool {
        matches!(self, ByteOrder::Cdab | ByteOrder::Dcba)
    }
}

/// Parity of a serial line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit (the usual 8N1).
    #[default]
    None,
    /// Even parity (the Modbus specification's default, 8E1).
    Even,
    /// Odd parity (8O1).
    Odd,
}

impl Parity {
    fn letter(self) -> char {
        match self {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        }
    }
}

const fn default_unit_id() -> u8 {
    1
}
const fn default_stop_bits() -> u8 {
    1
}
const fn default_timeout_ms() -> u64 {
    1000
}
const fn default_max_gap() -> u16 {
    8
}
const fn default_max_registers_per_read() -> u16 {
    125
}
const fn default_max_coils_per_read() -> u16 {
    2000
}
const fn default_reconnect_min_ms() -> u64 {
    500
}
const fn default_reconnect_max_ms() -> u64 {
    30_000
}
const fn default_baud_rate() -> u32 {
    9600
}
const fn default_data_bits() -> u8 {
    8
}
const fn default_scale() -> f64 {
    1.0
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// Device fields of `driver = "modbus_tcp"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusTcpConfig {
    /// `host:port` of the device (or of a TCP-to-RTU gateway), e.g. `10.0.0.5:502`.
    pub address: String,
    /// Unit identifier sent with every request (default 1; TCP devices often ignore it,
    /// gateways route by it).
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Time allowed for a connect and for each request, in milliseconds (default 1000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest run of unused registers read to join two tags into one request (default 8;
    /// for coils and discrete inputs 16 times as many bits, the same bytes on the wire).
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Most registers per read request (default and at most 125).
    #[serde(default = "default_max_registers_per_read")]
    pub max_registers_per_read: u16,
    /// Most coils or discrete inputs per read request (default and at most 2000).
    #[serde(default = "default_max_coils_per_read")]
    pub max_coils_per_read: u16,
    /// First delay before reconnecting after a failure, in milliseconds (default 500);
    /// doubles per failure, with ±20% jitter.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest delay between reconnection attempts, in milliseconds (default 30000).
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Write single coils and registers with FC 15/16 instead of FC 5/6, for
    /// devices that implement only the "multiple" functions (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub write_multiple_only: bool,
}

/// Device fields of `driver = "modbus_rtu"`. Devices with the same `port`
/// share one serial line and must agree on its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusRtuConfig {
    /// The serial port, e.g. `/dev/ttyUSB0` or `/dev/serial/by-id/...`.
    pub port: String,
    /// Bits per second (default 9600).
    #[serde(default = "default_baud_rate")]
    pub baud_rate: u32,
    /// `none` (default), `even` or `odd`.
    #[serde(default)]
    pub parity: Parity,
    /// Data bits (default and only possible value for RTU: 8).
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// Stop bits, 1 (default) or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Slave address, 1 to 247 (default 1).
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Time allowed for each request, in milliseconds (default 1000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest run of unused registers read to join two tags into one request
    /// (default 8; for bits 16 times as many), as for TCP.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Most registers per read request (default and at most 125).
    #[serde(default = "default_max_registers_per_read")]
    pub max_registers_per_read: u16,
    /// Most coils or discrete inputs per read request (default and at most 2000).
    #[serde(default = "default_max_coils_per_read")]
    pub max_coils_per_read: u16,
    /// First delay before polling a slave again after it failed, in milliseconds
    /// (default 500); doubles per failure, with ±20% jitter. The serial port is
    /// reopened on the same schedule when it cannot be opened.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest such delay, in milliseconds (default 30000).
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Write single coils and registers with FC 15/16 instead of FC 5/6
    /// (default false), as for TCP.
    #[serde(default, skip_serializing_if = "is_false")]
    pub write_multiple_only: bool,
}

/// Tag fields of both Modbus drivers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusTagConfig {
    /// `coil`, `discrete_input`, `holding_register` or `input_register`.
    pub area: Area,
    /// 0-based address of the (first) coil or register, as sent on the wire
    /// (register "40001" is `holding_register` address 0).
    pub address: u16,
    /// Default: `bool` for coils, discrete inputs and `bit` tags, else `u16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<DataType>,
    /// Registers of a `string` (required for strings, refused otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u16>,
    /// A bit (0 = least significant) of a holding or input register; the tag is a bool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit: Option<u8>,
    /// `ABCD` (default), `BADC`, `CDAB` or `DCBA`; see [`ByteOrder`].
    #[serde(default)]
    pub byte_order: ByteOrder,
    /// Engineering value = raw × `scale` + `offset` (default 1); numbers only.
    /// With a scale or offset the value is published as a float.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// See `scale` (default 0).
    #[serde(default)]
    pub offset: f64,
    /// Publish a good value only when it moved more than this from the last
    /// published one (or its quality changed, or every
    /// [`REFRESH_POLLS`](crate::modbus::REFRESH_POLLS) polls). `0` publishes
    /// every change. Absent (default): every poll is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<f64>,
}

impl ModbusTagConfig {
    /// A tag of `data_type` at `address` of `area`, every other field at its default.
    pub fn new(area: Area, address: u16, data_type: DataType) -> Self {
        ModbusTagConfig {
            area,
            address,
            data_type: Some(data_type),
            length: None,
            bit: None,
            byte_order: ByteOrder::Abcd,
            scale: 1.0,
            offset: 0.0,
            deadband: None,
        }
    }

    /// The data type, with its default applied.
    pub fn data_type(&self) -> DataType {
        self.data_type.unwrap_or(if self.area.is_bits() || self.bit.is_some() { DataType::Bool } else { DataType::U16 })
    }

    /// Coils or registers the tag occupies.
    pub fn width(&self) -> u16 {
        if self.area.is_bits() { 1 } else { self.data_type().registers(self.length) }
    }

    /// Whether `scale` or `offset` change the raw value.
    pub fn is_scaled(&self) -> bool {
        self.scale != 1.0 || self.offset != 0.0
    }
}

/// What both transports share, resolved from their fields.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Common {
    pub unit_id: u8,
    pub timeout: Duration,
    pub max_gap: u16,
    pub max_registers: u16,
    pub max_coils: u16,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub write_multiple_only: bool,
}

impl ModbusTcpConfig {
    /// A device at `address` with every other field at its default.
    pub fn new(address: impl Into<String>) -> Self {
        ModbusTcpConfig {
            address: address.into(),
            unit_id: 1,
            timeout_ms: default_timeout_ms(),
            max_gap: default_max_gap(),
            max_registers_per_read: default_max_registers_per_read(),
            max_coils_per_read: default_max_coils_per_read(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            write_multiple_only: false,
        }
    }

    pub(crate) fn common(&self) -> Common {
        Common {
            unit_id: self.unit_id,
            timeout: Duration::from_millis(self.timeout_ms),
            max_gap: self.max_gap,
            max_registers: self.max_registers_per_read,
            max_coils: self.max_coils_per_read,
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_millis(self.reconnect_max_ms),
            write_multiple_only: self.write_multiple_only,
        }
    }
}

impl ModbusRtuConfig {
    /// A device on `port` with every other field at its default.
    pub fn new(port: impl Into<String>) -> Self {
        ModbusRtuConfig {
            port: port.into(),
            baud_rate: default_baud_rate(),
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
            unit_id: 1,
            timeout_ms: default_timeout_ms(),
            max_gap: default_max_gap(),
            max_registers_per_read: default_max_registers_per_read(),
            max_coils_per_read: default_max_coils_per_read(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            write_multiple_only: false,
        }
    }

    pub(crate) fn common(&self) -> Common {
        Common {
            unit_id: self.unit_id,
            timeout: Duration::from_millis(self.timeout_ms),
            max_gap: self.max_gap,
            max_registers: self.max_registers_per_read,
            max_coils: self.max_coils_per_read,
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_millis(self.reconnect_max_ms),
            write_multiple_only: self.write_multiple_only,
        }
    }

    /// The line settings as a person writes them: `9600 8N1`.
    pub(crate) fn line_settings(&self) -> String {
        format!("{} {}{}{}", self.baud_rate, self.data_bits, self.parity.letter(), self.stop_bits)
    }
}

/// Whether `address` looks like `host:port` (IPv6 hosts in brackets).
fn valid_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            let host_ok = !host.is_empty() && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
            host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

fn check_timing(c: &Common, timeout_ms: u64, rmin: u64, rmax: u64) -> Result<(), FieldError> {
    if !(1..=600_000).contains(&timeout_ms) {
        return Err(FieldError::new("timeout_ms", format!("must be between 1 and 600000, got {timeout_ms}")));
    }
    if !(1..=125).contains(&c.max_registers) {
        return Err(FieldError::new(
            "max_registers_per_read",
            format!("must be between 1 and 125 (the Modbus limit), got {}", c.max_registers),
        ));
    }
    if !(1..=2000).contains(&c.max_coils) {
        return Err(FieldError::new(
            "max_coils_per_read",
            format!("must be between 1 and 2000 (the Modbus limit), got {}", c.max_coils),
        ));
    }
    if c.max_gap > 125 {
        return Err(FieldError::new("max_gap", format!("must be at most 125 registers, got {}", c.max_gap)));
    }
    if !(1..=3_600_000).contains(&rmin) {
        return Err(FieldError::new("reconnect_min_ms", format!("must be between 1 and 3600000, got {rmin}")));
    }
    if rmax < rmin || rmax > 3_600_000 {
        return Err(FieldError::new(
            "reconnect_max_ms",
            format!("must be between reconnect_min_ms ({rmin}) and 3600000, got {rmax}"),
        ));
    }
    Ok(())
}

/// Checks a `modbus_tcp` device.
pub(crate) fn validate_tcp(dev: &DeviceConfig, p: &ModbusTcpConfig) -> Result<(), FieldError> {
    if !valid_host_port(&p.address) {
        return Err(FieldError::new(
            "address",
            format!("{:?} is not host:port (e.g. 192.168.1.10:502 or [fe80::1]:502)", p.address),
        ));
    }
    let c = p.common();
    check_timing(&c, p.timeout_ms, p.reconnect_min_ms, p.reconnect_max_ms)?;
    validate_tags(dev, &c)
}

/// Checks a `modbus_rtu` device.
pub(crate) fn validate_rtu(dev: &DeviceConfig, p: &ModbusRtuConfig) -> Result<(), FieldError> {
    if p.port.trim().is_empty() {
        return Err(FieldError::new("port", "must name a serial port, e.g. /dev/ttyUSB0"));
    }
    if !(50..=4_000_000).contains(&p.baud_rate) {
        return Err(FieldError::new("baud_rate", format!("must be between 50 and 4000000, got {}", p.baud_rate)));
    }
    if p.data_bits != 8 {
        return Err(FieldError::new(
            "data_bits",
            format!("Modbus RTU frames are 8-bit binary, so data_bits must be 8, got {}", p.data_bits),
        ));
    }
    if !(1..=2).contains(&p.stop_bits) {
        return Err(FieldError::new("stop_bits", format!("must be 1 or 2, got {}", p.stop_bits)));
    }
    if !(1..=247).contains(&p.unit_id) {
        return Err(FieldError::new(
            "unit_id",
            format!("a slave address is 1 to 247 (0 is broadcast, which has no answer to poll), got {}", p.unit_id),
        ));
    }
    let c = p.common();
    check_timing(&c, p.timeout_ms, p.reconnect_min_ms, p.reconnect_max_ms)?;
    validate_tags(dev, &c)
}

fn validate_tags(dev: &DeviceConfig, c: &Common) -> Result<(), FieldError> {
    for (i, (t, p)) in dev.tags_of::<ModbusTagConfig>().enumerate() {
        let at = |f: &str| format!("tags[{i}].{f}");
        let ty = p.data_type();
        if p.area.is_bits() {
            if ty != DataType::Bool {
                return Err(FieldError::new(
                    at("data_type"),
                    format!("{} values are bool, not {}", p.area.name(), ty.name()),
                ));
            }
            if p.bit.is_some() {
                return Err(FieldError::new(at("bit"), "only for holding/input registers"));
            }
        }
        if let Some(b) = p.bit {
            if b > 15 {
                return Err(FieldError::new(at("bit"), format!("must be 0 to 15, got {b}")));
            }
            if ty != DataType::Bool {
                return Err(FieldError::new(at("data_type"), format!("a bit is a bool, not {}", ty.name())));
            }
        }
        match (ty, p.length) {
            (DataType::String, None) => return Err(FieldError::new(at("length"), "required for data_type string")),
            (DataType::String, Some(0)) => return Err(FieldError::new(at("length"), "must be at least 1 register")),
            (DataType::String, Some(n)) if n > c.max_registers => {
                return Err(FieldError::new(
                    at("length"),
                    format!("{n} registers do not fit in one read (max_registers_per_read is {})", c.max_registers),
                ));
            }
            (DataType::String, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(FieldError::new(at("length"), "only for data_type string")),
        }
        let width = p.width();
        if !p.area.is_bits() && width > c.max_registers {
            return Err(FieldError::new(
                at("data_type"),
                format!(
                    "{} takes {width} registers, more than max_registers_per_read ({})",
                    ty.name(),
                    c.max_registers
                ),
            ));
        }
        let last = u32::from(p.address) + u32::from(width) - 1;
        if last > 65_535 {
            return Err(FieldError::new(
                at("address"),
                format!(
                    "{} at {} takes {width} {}, up to {last}, past the last address 65535",
                    ty.name(),
                    p.address,
                    if p.area.is_bits() { "bits" } else { "registers" }
                ),
            ));
        }
        if p.scale != 1.0 || p.offset != 0.0 {
            if !ty.is_numeric() {
                let field = if p.scale != 1.0 { "scale" } else { "offset" };
                return Err(FieldError::new(at(field), format!("only for numbers, not {}", ty.name())));
            }
            if !p.scale.is_finite() || p.scale == 0.0 {
                return Err(FieldError::new(
                    at("scale"),
                    format!("must be a finite number other than 0, got {}", p.scale),
                ));
            }
            if !p.offset.is_finite() {
                return Err(FieldError::new(at("offset"), format!("must be a finite number, got {}", p.offset)));
            }
        }
        if let Some(d) = p.deadband
            && !(d.is_finite() && d >= 0.0)
        {
            return Err(FieldError::new(at("deadband"), format!("must be a finite number, 0 or more, got {d}")));
        }
        if t.writable && !p.area.is_writable() {
            return Err(FieldError::new(
                at("writable"),
                format!("{} is read-only in Modbus; only coils and holding registers can be written", p.area.name()),
            ));
        }
    }
    Ok(())
}

/// If `dev` is a serial device whose port is used by one of `earlier`
/// (enabled devices) with other line settings: the error, at `dev`'s field
/// that differs.
pub(crate) fn line_conflict(p: &ModbusRtuConfig, dev: &DeviceConfig, earlier: &[DeviceConfig]) -> Option<FieldError> {
    if !dev.enabled {
        return None;
    }
    earlier.iter().filter(|d| d.enabled).find_map(|other| {
        let o = other.params.get::<ModbusRtuConfig>()?;
        if o.port != p.port {
            return None;
        }
        let field = if o.baud_rate != p.baud_rate {
            "baud_rate"
        } else if o.parity != p.parity {
            "parity"
        } else if o.data_bits != p.data_bits {
            "data_bits"
        } else if o.stop_bits != p.stop_bits {
            "stop_bits"
        } else {
            return None;
        };
        Some(FieldError::new(
            field,
            format!(
                "port {} is shared with device {:?} at {}; devices on one serial line must use the same settings, got {}",
                p.port,
                other.name,
                o.line_settings(),
                p.line_settings()
            ),
        ))
    })
}

#[cfg(test)]
mod tests;
