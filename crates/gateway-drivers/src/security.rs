//! What devices may reach: `[security]` allow-lists for the serial ports a
//! device may open and the hosts it may connect to, checked for every device
//! (from the config file and from the API alike) before it is stored or
//! started. Without them, whoever may create a device may make the gateway
//! open any file as a "serial port" (`/proc/self/mem`) or connect anywhere
//! on the plant network. Each driver says what it reaches
//! ([`crate::Driver::reaches`]); this module knows no protocol.
//!
//! Serial ports are absolute paths matched against globs (`*` and `?` never
//! cross a `/`), and a path with a `..` component is refused outright.
//! Hosts match by name (exact, or a glob such as `*.plant.local`, case-
//! insensitive) or, for an address written as an IP, by address or CIDR
//! range (`10.0.0.0/8`). Names are not resolved: a rule `10.0.0.0/8` does not
//! admit `plc1.local` even if it resolves there, so write name rules for names.

use std::net::IpAddr;

use gateway_model::FieldError;
use serde::{Deserialize, Serialize};

use crate::config::DeviceConfig;

/// Something a device opens or connects to, with the device field that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// A serial port (a device file).
    SerialPort {
        /// The device field holding it (`port`).
        field: &'static str,
        /// The path.
        path: String,
    },
    /// A network host.
    Host {
        /// The device field holding it (`address`, `endpoint`).
        field: &'static str,
        /// Host name or IP address, without brackets or port.
        host: String,
    },
}

/// The `[security]` section's rules for devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePolicy {
    /// Globs of the serial ports a device may open (default: `/dev/tty*`,
    /// `/dev/serial/by-id/*`, `/dev/serial/by-path/*`).
    #[serde(default = "default_serial_ports")]
    pub modbus_rtu_ports: Vec<String>,
    /// Hosts a device may connect to: names, name globs (`*.plant.local`),
    /// IP addresses or CIDR ranges (`10.0.0.0/8`). Empty (the default): any host.
    #[serde(default)]
    pub device_hosts: Vec<String>,
}

fn default_serial_ports() -> Vec<String> {
    vec!["/dev/tty*".into(), "/dev/serial/by-id/*".into(), "/dev/serial/by-path/*".into()]
}

impl Default for DevicePolicy {
    fn default() -> Self {
        DevicePolicy { modbus_rtu_ports: default_serial_ports(), device_hosts: Vec::new() }
    }
}

/// `*` and `?` match within one path segment (never a `/`).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (text.first().is_some_and(|&c| c != b'/') && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(&c)) => c != b'/' && glob(&pattern[1..], &text[1..]),
        (Some(p), Some(c)) => p == c && glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// `address/bits`, with `bits` within the address family's width.
fn parse_cidr(rule: &str) -> Option<(IpAddr, u32)> {
    let (net, bits) = rule.split_once('/')?;
    let net: IpAddr = net.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    let width = if net.is_ipv4() { 32 } else { 128 };
    (bits <= width).then_some((net, bits))
}

fn in_cidr(ip: IpAddr, (net, bits): (IpAddr, u32)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl DevicePolicy {
    /// Checks the rules themselves; paths are below `[security]`.
    pub fn validate(&self) -> Result<(), FieldError> {
        for (i, p) in self.modbus_rtu_ports.iter().enumerate() {
            if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
                return Err(FieldError::new(
                    format!("modbus_rtu_ports[{i}]"),
                    format!("{p:?} must be an absolute path glob without `..`, e.g. /dev/ttyUSB*"),
                ));
            }
        }
        for (i, h) in self.device_hosts.iter().enumerate() {
            if h.trim().is_empty() || (h.contains('/') && parse_cidr(h).is_none()) {
                return Err(FieldError::new(
                    format!("device_hosts[{i}]"),
                    format!("{h:?} is not a host name, name glob, IP address or CIDR range"),
                ));
            }
        }
        Ok(())
    }

    /// Whether `path` is a serial port a device may open.
    pub fn allows_port(&self, path: &str) -> bool {
        path.starts_with('/')
            && !path.split('/').any(|c| c == "..")
            && self.modbus_rtu_ports.iter().any(|g| glob(g.as_bytes(), path.as_bytes()))
    }

    /// Whether a device may connect to `host`.
    pub fn allows_host(&self, host: &str) -> bool {
        if self.device_hosts.is_empty() {
            return true;
        }
        let ip: Option<IpAddr> = host.parse().ok();
        let name = host.to_ascii_lowercase();
        self.device_hosts.iter().any(|rule| match ip {
            Some(ip) if rule.contains('/') => parse_cidr(rule).is_some_and(|c| in_cidr(ip, c)),
            Some(ip) => rule.parse::<IpAddr>().is_ok_and(|r| r == ip),
            None => !rule.contains('/') && glob(rule.to_ascii_lowercase().as_bytes(), name.as_bytes()),
        })
    }

    /// Checks everything `dev` reaches; the error names the device field.
    pub fn check(&self, dev: &DeviceConfig) -> Result<(), FieldError> {
        for reach in dev.params.reaches() {
            match reach {
                Reach::SerialPort { field, path } if !self.allows_port(&path) => {
                    return Err(FieldError::new(
                        field,
                        format!(
                            "{path:?} is not an allowed serial port (security.modbus_rtu_ports: {})",
                            self.modbus_rtu_ports.join(", ")
                        ),
                    ));
                }
                Reach::Host { field, host } if !self.allows_host(&host) => {
                    return Err(FieldError::new(
                        field,
                        format!(
                            "{host:?} is not an allowed device host (security.device_hosts: {})",
                            self.device_hosts.join(", ")
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rtu(port: &str) -> DeviceConfig {
        DeviceConfig::from_json(json!({"name": "m", "driver": "modbus_rtu", "port": port})).unwrap()
    }

    fn tcp(address: &str) -> DeviceConfig {
        DeviceConfig::from_json(json!({"name": "p", "driver": "modbus_tcp", "address": address})).unwrap()
    }

    #[test]
    fn serial_ports_must_match_a_glob_within_its_segments() {
        let p = DevicePolicy::default();
        for ok in ["/dev/ttyUSB0", "/dev/ttyS1", "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0"] {
            assert!(p.check(&rtu(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "/proc/self/mem",
            "/dev/tty../../proc/self/mem",
            "/dev/ttyUSB0/../../etc/shadow",
            "/etc/passwd",
            "dev/ttyS0",
        ] {
            let e = p.check(&rtu(bad)).unwrap_err();
            assert_eq!(e.path, "port", "{bad}");
            assert!(e.message.contains("not an allowed serial port"), "{e}");
        }
        let narrow = DevicePolicy { modbus_rtu_ports: vec!["/dev/ttyUSB?".into()], ..DevicePolicy::default() };
        assert!(narrow.check(&rtu("/dev/ttyUSB3")).is_ok());
        assert!(narrow.check(&rtu("/dev/ttyUSB10")).is_err());
        assert!(narrow.check(&rtu("/dev/ttyS0")).is_err());
    }

    #[test]
    fn hosts_match_by_name_glob_address_or_range() {
        let open = DevicePolicy::default();
        assert!(open.check(&tcp("anywhere.example:502")).is_ok(), "no host rules: any host");
        let p = DevicePolicy {
            device_hosts: vec!["10.1.0.0/16".into(), "*.line1.plant".into(), "fd00::/8".into(), "192.168.5.7".into()],
            ..DevicePolicy::default()
        };
        for ok in ["10.1.2.3:502", "PLC4.Line1.Plant:502", "[fd12::1]:502", "192.168.5.7:502"] {
            assert!(p.check(&tcp(ok)).is_ok(), "{ok}");
        }
        for bad in
            ["10.2.0.1:502", "plc4.line2.plant:502", "[fe80::1]:502", "192.168.5.8:502", "metadata.google.internal:80"]
        {
            let e = p.check(&tcp(bad)).unwrap_err();
            assert_eq!(e.path, "address", "{bad}");
        }
        assert!(
            DevicePolicy { device_hosts: vec!["10.0.0.0/33".into()], ..DevicePolicy::default() }.validate().is_err()
        );
        assert!(
            DevicePolicy { modbus_rtu_ports: vec!["/dev/../*".into()], ..DevicePolicy::default() }.validate().is_err()
        );
        assert!(p.validate().is_ok());
    }
}
