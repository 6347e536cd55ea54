//! The real binary, as a user runs it: start on a free port with a temporary
//! data directory, read values over REST and WebSocket, write a set-point,
//! create a device over the API, stop with SIGTERM, start again and find the
//! device; configuration errors exit with status 2 and name the field; the
//! WAL tools read the log the gateway left.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_edge-gateway");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A minimal HTTP/1.1 client: the tests need no more, and the gateway is the
/// thing under test, not a client library.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

struct Gateway {
    child: Child,
}

impl Gateway {
    fn start(data_dir: &Path, port: u16) -> Gateway {
        let child = Command::new(BIN)
            .args(["run", "--data-dir"])
            .arg(data_dir)
            .env("GATEWAY__API__BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut g = Gateway { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = g.child.try_wait() {
                panic!("the gateway exited early: {status}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok()
                && http(port, "GET", "/api/v1/system/health", None).0 == 200
            {
                return g;
            }
            assert!(Instant::now() < deadline, "the gateway did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status must be 0 within 20 s.
    fn stop(mut self) {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the gateway exited with {status} after SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "the gateway did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_value(port: u16, tag: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v) = http(port, "GET", &format!("/api/v1/values/{tag}"), None);
        if s == 200 && want(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{tag} never got the expected value; last {s} {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_live_data_and_keeps_api_devices_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let g = Gateway::start(&data, port);

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
    let (s, v) = http(port, "POST", "/api/v1/commands", Some(&json!({"tag": "line1.speed_setpoint", "value": 1600})));
    assert_eq!(s, 200, "{v}");
    wait_value(port, "line1.speed_setpoint", |v| v["value"] == json!(1600.0));

    // A device created over the API runs at once and survives a restart.
    let dev = json!({"name": "press7", "driver": "sim", "poll_interval_ms": 100,
                     "tags": [{"name": "force", "signal": "sine", "offset": 50.0, "amplitude": 5.0}]});
    let (s, v) = http(port, "POST", "/api/v1/devices", Some(&dev));
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
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}
