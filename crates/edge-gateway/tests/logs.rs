//! `[gateway] log_format = "json"`: every line the gateway writes to stderr
//! is one JSON object a log shipper can take, with the level, the message and
//! the event's fields at the top level.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway_bench::free_port;

#[test]
fn json_logs_are_one_object_per_line_with_the_fields_at_the_top() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(common::BIN)
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .env("GATEWAY__GATEWAY__LOG_FORMAT", "json")
        .env("GATEWAY__API__BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::http_status(port, "/api/v1/system/health") != Some(200) {
        assert!(Instant::now() < deadline, "the gateway never became healthy");
        assert!(child.try_wait().unwrap().is_none(), "the gateway exited early");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    // The first administrator's password is printed once as a banner for
    // people, not as a log line; everything else must be JSON.
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with('{')).collect();
    assert!(lines.len() >= 3, "too few log lines: {err}");
    let mut running = None;
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string() && v["message"].is_string(), "{l}");
        if v["message"].as_str().unwrap().starts_with("edge-gateway is running") {
            running = Some(v);
        }
    }
    let running = running.unwrap_or_else(|| panic!("no start line in {err}"));
    assert_eq!(running["level"], "INFO");
    assert_eq!(running["addr"], format!("127.0.0.1:{port}"), "fields sit at the top level: {running}");
    assert!(running["devices"].as_u64().is_some(), "{running}");
    let other: Vec<&str> =
        err.lines().filter(|l| !l.starts_with('{') && !l.trim().is_empty() && !l.starts_with("  ")).collect();
    assert!(other.is_empty(), "lines that are neither JSON nor the banner: {other:?}");
}
