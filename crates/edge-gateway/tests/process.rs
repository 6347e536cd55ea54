//! The real binary, as a user runs it: start on a free port with a temporary
//! data directory, read values over REST and WebSocket, write a set-point,
//! create a device over the API, stop with SIGTERM, start again and find the
//! device; configuration errors exit with status 2 and name the field; the
//! WAL tools read the log the gateway left.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, Gateway, http, http_as, run, start_logged, stop_logged, token, wait_value};
use futures_util::{SinkExt, StreamExt};
use gateway_bench::free_port;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_live_data_and_keeps_api_devices_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let g = Gateway::start(&data, port);
    // Writes need credentials; the CLI makes a token while the gateway runs.
    let admin = token(&data, "test-admin", "admin");

    // REST: the default simulated devices produce values at once.
    let v = wait_value(port, "line1.temperature", |v| v["quality"] == "good");
    assert!(v["value"].as_f64().is_some() && v["ts"].as_str().is_some(), "{v}");
    let (s, v) = http(port, "GET", "/api/v1/values?pattern=line1.*", None);
    assert_eq!(s, 200);
    assert!(v["count"].as_u64().unwrap() >= 5, "{v}");

    // WebSocket: subscribe, get a snapshot and live updates.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
    ws.send(Message::Text(json!({"type": "subscribe", "patterns": ["line1.parts_produced"]}).to_string().into()))
        .await
        .unwrap();
    let mut counts = Vec::new();
    while counts.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("websocket message")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "update" {
                counts.extend(v["values"].as_array().unwrap().iter().map(|x| x["value"].as_i64().unwrap()));
            }
        }
    }
    assert!(counts.windows(2).all(|w| w[1] >= w[0]), "the counter went backwards: {counts:?}");

    // A set-point write reaches the simulated device and comes back as its value.
    let cmd = json!({"tag": "line1.speed_setpoint", "value": 1600});
    let (s, v) = http(port, "POST", "/api/v1/commands", Some(&cmd));
    assert_eq!(s, 401, "no anonymous writes: {v}");
    let (s, v) = http_as(port, Some(&admin), "POST", "/api/v1/commands", Some(&cmd));
    assert_eq!(s, 200, "{v}");
    wait_value(port, "line1.speed_setpoint", |v| v["value"] == json!(1600.0));

    // A device created over the API runs at once and survives a restart.
    let dev = json!({"name": "press7", "driver": "sim", "poll_interval_ms": 100,
                     "tags": [{"name": "force", "signal": "sine", "offset": 50.0, "amplitude": 5.0}]});
    let (s, v) = http_as(port, Some(&admin), "POST", "/api/v1/devices", Some(&dev));
    assert_eq!(s, 201, "{v}");
    wait_value(port, "press7.force", |v| v["quality"] == "good");
    let (s, text) = http(port, "GET", "/metrics", None);
    assert_eq!(s, 200);
    assert!(text.as_str().unwrap().contains("gateway_bus_publish_total"));
    drop(ws);
    g.stop();

    // The log the gateway left is intact and readable.
    let wal = data.join("wal");
    let out = run(&["wal", "verify", wal.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = run(&["wal", "inspect", wal.to_str().unwrap(), "--from", "0", "--limit", "3"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let frames: Vec<&str> = stdout.lines().filter(|l| l.contains("\"kind\":\"data\"")).collect();
    assert_eq!(frames.len(), 3, "{stdout}");

    let g = Gateway::start(&data, port);
    let (s, v) = http(port, "GET", "/api/v1/devices/press7", None);
    assert_eq!(s, 200, "the API-created device is gone after a restart: {v}");
    assert_eq!(v["source"], "api");
    wait_value(port, "press7.force", |v| v["quality"] == "good");

    // A second gateway on the same data directory refuses to start, clearly.
    let out = Command::new(BIN)
        .args(["run", "--data-dir"])
        .arg(&data)
        .env("GATEWAY__API__BIND", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another edge-gateway is using"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    g.stop();

    // Damage is reported by `wal verify` with exit status 1.
    let seg = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg") && std::fs::metadata(p).unwrap().len() > 200)
        .expect("a segment with records");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&seg, bytes).unwrap();
    let out = run(&["wal", "verify", wal.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_wrong_config_field_exits_with_status_2_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[devices]]\nname = \"a\"\ndriver = \"sim\"\n[[devices]]\nname = \"b\"\ndriver = \"sim\"\n[[devices.tags]]\nname = \"t\"\nsignal = \"sine\"\ndata_type = \"flaot\"\n",
    )
    .unwrap();
    let out = run(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("devices[1].tags[0].data_type: unknown variant `flaot`"), "{err}");
    let out = run(&["run", "--config", file.to_str().unwrap(), "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::write(&file, "[api]\nbind = \"127.0.0.1:99999\"\n").unwrap();
    let out = run(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("api.bind"));
}

#[test]
fn the_default_config_printed_by_the_binary_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["config", "default"]);
    assert!(out.status.success());
    let file = dir.path().join("default.toml");
    std::fs::write(&file, &out.stdout).unwrap();
    let out = run(&["config", "check", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    let out = run(&["--version"]);
    // With the profile that made it: these tests run the dev build.
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let version = format!("edge-gateway {} ({profile})", env!("CARGO_PKG_VERSION"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), version);
}

/// `memory_optimized` pages out the executable's code at the end of start-up
/// (`pages.rs`): the kernel must accept it, and everything that runs after,
/// polling, REST, a write, a clean stop, must read its code back from the file.
#[test]
fn the_memory_preset_pages_out_its_start_up_code_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let log = dir.path().join("stderr.log");
    let child = start_logged(&data, port, &log, &[("GATEWAY__BUS__PRESET", "memory_optimized")]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("start-up code paged out"), "{text}");
    assert!(text.contains("mappings=") && !text.contains("kept the start-up code"), "{text}");

    let first = wait_value(port, "line1.temperature", |v| v["quality"] == "good");
    wait_value(port, "line1.temperature", |v| v["ts"] != first["ts"]);
    let admin = token(&data, "test-admin", "admin");
    let cmd = json!({"tag": "line1.speed_setpoint", "value": 1234});
    let (s, v) = http_as(port, Some(&admin), "POST", "/api/v1/commands", Some(&cmd));
    assert_eq!(s, 200, "{v}");
    wait_value(port, "line1.speed_setpoint", |v| v["value"] == json!(1234.0));
    stop_logged(child);
}
