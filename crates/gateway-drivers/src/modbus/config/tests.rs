//! Tests of the Modbus device configuration: the JSON round trip, the
//! defaults, and errors that name their field.

use serde_json::json;

use crate::config::{DeviceConfig, parse_devices};

fn tcp(tags: serde_json::Value) -> serde_json::Value {
    json!({"name": "plc", "driver": "modbus_tcp", "address": "127.0.0.1:502", "tags": tags})
}

fn error_of(dev: serde_json::Value) -> String {
    DeviceConfig::from_json(dev).unwrap_err().to_string()
}

#[test]
fn a_device_with_every_field_round_trips_through_json() {
    let d = DeviceConfig::from_json(json!({
        "name": "plc", "driver": "modbus_tcp", "address": "plc.local:1502", "unit_id": 3,
        "timeout_ms": 250, "max_gap": 0, "max_registers_per_read": 60, "max_coils_per_read": 800,
        "reconnect_min_ms": 100, "reconnect_max_ms": 1000, "write_multiple_only": true,
        "tags": [
            {"name": "t", "area": "holding_register", "address": 10, "data_type": "f32", "byte_order": "CDAB",
             "scale": 0.1, "offset": -5.0, "deadband": 0.5, "writable": true},
            {"name": "s", "area": "input_register", "address": 20, "data_type": "string", "length": 8},
            {"name": "b", "area": "holding_register", "address": 30, "bit": 15},
            {"name": "c", "area": "coil", "address": 65535, "writable": true},
        ]
    }))
    .unwrap();
    assert_eq!(DeviceConfig::from_json(d.to_json()).unwrap(), d);
    assert_eq!(d.driver(), "modbus_tcp");

    let r = DeviceConfig::from_json(json!({
        "name": "meter", "driver": "modbus_rtu", "port": "/dev/ttyUSB0", "baud_rate": 19200, "parity": "even",
        "stop_bits": 1, "unit_id": 7, "tags": [{"name": "kwh", "area": "input_register", "address": 0, "data_type": "u32"}]
    }))
    .unwrap();
    assert_eq!(DeviceConfig::from_json(r.to_json()).unwrap(), r);
    assert_eq!(r.driver(), "modbus_rtu");
}

#[test]
fn defaults_are_what_the_documentation_says() {
    let d = DeviceConfig::from_json(tcp(json!([{"name": "x", "area": "holding_register", "address": 0}]))).unwrap();
    let p = d.params.get::<super::ModbusTcpConfig>().expect("a modbus_tcp device");
    assert_eq!(*p, super::ModbusTcpConfig::new("127.0.0.1:502"));
    let t = d.tags[0].params.get::<super::ModbusTagConfig>().expect("a Modbus tag");
    assert_eq!(t.data_type(), super::DataType::U16);
    let r = DeviceConfig::from_json(json!({"name": "m", "driver": "modbus_rtu", "port": "/dev/ttyS0"})).unwrap();
    let p = r.params.get::<super::ModbusRtuConfig>().expect("a modbus_rtu device");
    assert_eq!(*p, super::ModbusRtuConfig::new("/dev/ttyS0"));
    assert_eq!(p.line_settings(), "9600 8N1");
}

#[test]
fn tag_errors_name_the_field_and_say_what_is_wrong() {
    let cases = [
        (
            json!({"name": "t", "area": "holding_register", "address": 0, "data_type": "string"}),
            "tags[0].length: required for data_type string",
        ),
        (
            json!({"name": "t", "area": "holding_register", "address": 0, "data_type": "u16", "length": 2}),
            "tags[0].length: only for data_type string",
        ),
        (json!({"name": "t", "area": "coil", "address": 0, "bit": 1}), "tags[0].bit: only for holding/input registers"),
        (json!({"name": "t", "area": "holding_register", "address": 0, "bit": 16}), "tags[0].bit: must be 0 to 15"),
        (
            json!({"name": "t", "area": "holding_register", "address": 0, "bit": 3, "data_type": "u16"}),
            "tags[0].data_type: a bit is a bool",
        ),
        (
            json!({"name": "t", "area": "coil", "address": 0, "data_type": "f32"}),
            "tags[0].data_type: coil values are bool, not f32",
        ),
        (
            json!({"name": "t", "area": "holding_register", "address": 65535, "data_type": "f32"}),
            "tags[0].address: f32 at 65535 takes 2 registers, up to 65536",
        ),
        (
            json!({"name": "t", "area": "holding_register", "address": 65533, "data_type": "f64"}),
            "past the last address 65535",
        ),
        (json!({"name": "t", "area": "holding_register", "address": 65536}), "tags[0].address: invalid value"),
        (
            json!({"name": "t", "area": "discrete_input", "address": 0, "writable": true}),
            "tags[0].writable: discrete_input is read-only",
        ),
        (
            json!({"name": "t", "area": "input_register", "address": 0, "writable": true}),
            "tags[0].writable: input_register is read-only",
        ),
        (
            json!({"name": "t", "area": "holding_register", "address": 0, "data_type": "string", "length": 126}),
            "tags[0].length: 126 registers do not fit",
        ),
        (
            json!({"name": "t", "area": "holding_register", "address": 0, "data_type": "bool", "scale": 2.0}),
            "tags[0].scale: only for numbers",
        ),
        (
            json!({"name": "t", "area": "holding_register", "address": 0, "scale": 0.0}),
            "tags[0].scale: must be a finite number other than 0",
        ),
        (json!({"name": "t", "area": "holding_register", "address": 0, "deadband": -1.0}), "tags[0].deadband"),
        (
            json!({"name": "t", "area": "holding_register", "address": 0, "byte_order": "ACBD"}),
            "tags[0].byte_order: unknown variant `ACBD`",
        ),
        (json!({"name": "t", "area": "holding", "address": 0}), "tags[0].area: unknown variant `holding`"),
        (json!({"name": "t", "area": "coil"}), "missing field `address`"),
        (json!({"name": "t", "area": "coil", "address": 1, "signal": "sine"}), "unknown field `signal`"),
    ];
    for (tag, want) in cases {
        let got = error_of(tcp(json!([tag])));
        assert!(got.contains(want), "{got:?} should contain {want:?}");
    }
    let got = error_of(tcp(json!([{"name": "a", "area": "coil", "address": 0},
                                  {"name": "b", "area": "holding_register", "address": 0, "data_type": "strng"}])));
    assert!(got.starts_with("tags[1].data_type: unknown variant `strng`"), "{got}");
}

#[test]
fn device_errors_name_the_field() {
    let cases = [
        (
            json!({"name": "p", "driver": "modbus_tcp", "address": "localhost"}),
            "address: \"localhost\" is not host:port",
        ),
        (json!({"name": "p", "driver": "modbus_tcp", "address": "h:0"}), "address"),
        (json!({"name": "p", "driver": "modbus_tcp", "address": "h:502", "unit_id": 256}), "unit_id: invalid value"),
        (
            json!({"name": "p", "driver": "modbus_tcp", "address": "h:502", "max_registers_per_read": 126}),
            "max_registers_per_read: must be between 1 and 125",
        ),
        (
            json!({"name": "p", "driver": "modbus_tcp", "address": "h:502", "max_coils_per_read": 2001}),
            "max_coils_per_read",
        ),
        (json!({"name": "p", "driver": "modbus_tcp", "address": "h:502", "timeout_ms": 0}), "timeout_ms"),
        (
            json!({"name": "p", "driver": "modbus_tcp", "address": "h:502", "reconnect_min_ms": 500, "reconnect_max_ms": 100}),
            "reconnect_max_ms",
        ),
        (
            json!({"name": "p", "driver": "modbus_tcp", "address": "h:502", "port": "/dev/ttyS0"}),
            "unknown field `port`",
        ),
        (
            json!({"name": "p", "driver": "modbus_rtu", "port": "/dev/ttyS0", "unit_id": 0}),
            "unit_id: a slave address is 1 to 247",
        ),
        (
            json!({"name": "p", "driver": "modbus_rtu", "port": "/dev/ttyS0", "data_bits": 7}),
            "data_bits: Modbus RTU frames are 8-bit",
        ),
        (json!({"name": "p", "driver": "modbus_rtu", "port": "/dev/ttyS0", "stop_bits": 3}), "stop_bits"),
        (
            json!({"name": "p", "driver": "modbus_rtu", "port": "/dev/ttyS0", "parity": "mark"}),
            "parity: unknown variant `mark`",
        ),
        (json!({"name": "p", "driver": "modbus_rtu", "port": ""}), "port: must name a serial port"),
        (json!({"name": "p", "driver": "modbus_rtu"}), "missing field `port`"),
    ];
    for (dev, want) in cases {
        let got = error_of(dev);
        assert!(got.contains(want), "{got:?} should contain {want:?}");
    }
    assert!(DeviceConfig::from_json(json!({"name": "p", "driver": "modbus_tcp", "address": "[::1]:502"})).is_ok());
}

#[test]
fn devices_sharing_a_serial_port_must_agree_on_its_settings() {
    let dev = |name: &str, baud: u32, parity: &str| json!({"name": name, "driver": "modbus_rtu", "port": "/dev/ttyUSB0", "baud_rate": baud, "parity": parity});
    let ok = parse_devices(vec![dev("a", 9600, "even"), dev("b", 9600, "even")], "devices");
    assert!(ok.is_ok());
    let e = parse_devices(vec![dev("a", 9600, "even"), dev("b", 19200, "even")], "devices").unwrap_err();
    assert_eq!(e.path, "devices[1].baud_rate");
    assert!(e.message.contains("shared with device \"a\" at 9600 8E1"), "{e}");
    let e = parse_devices(vec![dev("a", 9600, "even"), dev("b", 9600, "none")], "devices").unwrap_err();
    assert_eq!(e.path, "devices[1].parity");
    let mut off = dev("b", 19200, "none");
    off["enabled"] = json!(false);
    assert!(
        parse_devices(vec![dev("a", 9600, "even"), off], "devices").is_ok(),
        "a disabled device does not hold the line"
    );
}
