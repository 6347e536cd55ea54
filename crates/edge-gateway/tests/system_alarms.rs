//! The gateway's watch on itself, through the real binary and real peers:
//! a mosquitto the MQTT connector uses is stopped and started again, a
//! Modbus server is killed and started again, a connector's broker is not
//! there while data piles up in the WAL. Each time the built-in system alarm
//! must show in `GET /api/v1/alarms/active`, and clear when the cause goes.
//! Every condition is waited for with a deadline; no test asserts how long
//! anything took.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{BIN, Gateway, http};
use gateway_bench::mosquitto::Mosquitto;
use gateway_bench::north::{FARM_FLAG, FarmSpec};
use gateway_bench::{free_port, wait_until_blocking};
use serde_json::Value;

/// Seconds any one condition may take to show.
const DEADLINE_S: u64 = 60;

/// The state of alarm `id` in the active list, if it is there.
fn active_state(port: u16, id: &str) -> Option<String> {
    let (status, v) = http(port, "GET", "/api/v1/alarms/active", None);
    assert_eq!(status, 200, "{v}");
    v["alarms"].as_array()?.iter().find(|a| a["id"] == id).and_then(|a| a["state"].as_str().map(str::to_owned))
}

/// Whether alarm `id`'s condition holds (raised, acknowledged or not).
fn is_raised(port: u16, id: &str) -> bool {
    active_state(port, id).is_some_and(|s| s.starts_with("active"))
}

fn wait_raised(port: u16, id: &str) {
    wait_until_blocking(DEADLINE_S, &format!("{id} to be raised"), || is_raised(port, id));
}

fn wait_not_raised(port: u16, id: &str) {
    wait_until_blocking(DEADLINE_S, &format!("{id} to clear"), || !is_raised(port, id));
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What every test shares: samples every 100 ms, no history (one durable
/// subscriber fewer to reason about), short delays for the down alarms.
const SYSTEM: &str = r#"
[history]
enabled = false

[alarms.system]
interval = "100ms"
connector_down_after = "1s"
device_down_after = "1s"
"#;

#[test]
fn a_stopped_broker_raises_connector_down_and_its_return_clears_it() {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"{SYSTEM}
[[devices]]
name = "sim1"
driver = "sim"
poll_interval_ms = 50
generate = {{ count = 5, signal = "counter" }}

[[connectors]]
name = "uplink"
kind = "mqtt"
url = "{}"
topic_prefix = "gw"
reconnect_min_ms = 50
reconnect_max_ms = 200
"#,
            broker.url()
        ),
    );
    let port = free_port();
    let g = Gateway::start_with(&dir.path().join("data"), port, Some(&config));
    let id = "system.connector_down:_gateway.connector.uplink.connected";
    // Connected (if the first connection took longer than the delay, the
    // alarm was raised and has cleared by now).
    wait_not_raised(port, id);
    broker.stop(false);
    wait_raised(port, id);
    assert_eq!(active_state(port, id).as_deref(), Some("active_unacked"));
    broker.resume();
    wait_not_raised(port, id);
    assert_eq!(active_state(port, id).as_deref(), Some("cleared_unacked"), "cleared, awaiting acknowledgement");
    g.stop();
}

/// The gateway-bench Modbus farm (the north benchmark's servers) in a
/// process of its own, serving one device on `port`.
fn modbus_server(port: u16) -> Child {
    let spec = serde_json::to_string(&FarmSpec { ports: vec![port], tags: 2 }).unwrap();
    let child = Command::new(BIN)
        .arg(FARM_FLAG)
        .arg(spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_until_blocking(DEADLINE_S, "the Modbus server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

#[test]
fn a_killed_modbus_server_raises_device_down_until_it_answers_again() {
    let modbus_port = free_port();
    let mut server = modbus_server(modbus_port);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"{SYSTEM}
[[devices]]
name = "plc1"
driver = "modbus_tcp"
address = "127.0.0.1:{modbus_port}"
poll_interval_ms = 100
timeout_ms = 500
reconnect_min_ms = 100
reconnect_max_ms = 300

[[devices.tags]]
name = "v0"
area = "holding_register"
address = 0
data_type = "f32"
"#
        ),
    );
    let port = free_port();
    let g = Gateway::start_with(&dir.path().join("data"), port, Some(&config));
    let id = "system.device_down:_gateway.device.plc1.connected";
    common::wait_value(port, "plc1.v0", |v| v["quality"] == "good");
    wait_not_raised(port, id);
    server.kill().unwrap();
    server.wait().unwrap();
    wait_raised(port, id);
    let mut server = modbus_server(modbus_port);
    wait_not_raised(port, id);
    assert_eq!(active_state(port, id).as_deref(), Some("cleared_unacked"));
    // Its poll round trips were timed while it answered.
    let (_, all) = http(port, "GET", "/api/v1/alarms", None);
    assert!(
        all["alarms"].as_array().unwrap().iter().any(|a| a["tag"] == "_gateway.device.plc1.poll_ms"),
        "the poll round trip is watched: {all}"
    );
    g.stop();
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn data_piling_up_for_a_connector_without_broker_raises_wal_backlog_until_delivered() {
    // Nothing listens on the broker's port until the end. The connector's cursor is `mqtt-uplink`.
    let broker_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"{SYSTEM}
[[devices]]
name = "sim1"
driver = "sim"
poll_interval_ms = 50
generate = {{ count = 20, signal = "counter" }}

[[connectors]]
name = "uplink"
kind = "mqtt"
url = "mqtt://127.0.0.1:{broker_port}"
topic_prefix = "gw"
reconnect_min_ms = 50
reconnect_max_ms = 200
"#
        )
        .replace("[alarms.system]\n", "[alarms.system]\nwal_backlog_frames = 2000\n"),
    );
    let port = free_port();
    let g = Gateway::start_with(&dir.path().join("data"), port, Some(&config));
    let id = "system.wal_backlog:_gateway.wal.backlog_frames.mqtt-uplink";
    wait_raised(port, id);
    let (_, active) = http(port, "GET", "/api/v1/alarms/active", None);
    let alarm = active["alarms"].as_array().unwrap().iter().find(|a| a["id"] == id).cloned().unwrap_or(Value::Null);
    assert!(alarm["value"].as_f64().is_some_and(|v| v > 2000.0), "raised with the backlog as its value: {alarm}");
    // The broker comes: the backlog is delivered and the alarm clears.
    let _broker = Mosquitto::start_on(broker_port);
    wait_not_raised(port, id);
    g.stop();
}
