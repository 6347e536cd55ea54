//! Upgrades: a data directory made before the format version existed (as
//! the earlier releases made it: WAL, database, history, no `FORMAT`) opens
//! with its data intact and is stamped; one stamped by a newer gateway is
//! refused with a message naming both versions, and left untouched.

mod common;

use std::process::Command;

use common::Gateway;
use gateway_bench::free_port;

#[test]
fn an_older_data_directory_is_migrated_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    // A data directory with data in it, then the version file taken away:
    // what the releases before it left behind.
    let g = Gateway::start(&data, port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::http(port, "GET", "/api/v1/history/line1.temperature/latest", None).0 != 200 {
        assert!(std::time::Instant::now() < deadline, "history never recorded line1.temperature");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    g.stop();
    let before_upgrade = gateway_model::format_rfc3339_ns(gateway_model::now_ns());
    std::fs::remove_file(data.join("FORMAT")).unwrap();
    let g = Gateway::start(&data, port);
    assert_eq!(std::fs::read_to_string(data.join("FORMAT")).unwrap(), "1\n", "stamped on open");
    // What the older directory held is still there: history from before.
    let (status, old) =
        common::http(port, "GET", &format!("/api/v1/history/line1.temperature/latest?before={before_upgrade}"), None);
    assert_eq!(status, 200, "{old}");
    assert!(old["ts"].as_str().unwrap() < before_upgrade.as_str(), "{old}");
    g.stop();

    std::fs::write(data.join("FORMAT"), "9\n").unwrap();
    let out = Command::new(common::BIN)
        .args(["run", "--data-dir"])
        .arg(&data)
        .env("GATEWAY__API__BIND", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("newer edge-gateway (format 9") && err.contains("reads format 1"), "{err}");
    assert_eq!(std::fs::read_to_string(data.join("FORMAT")).unwrap(), "9\n");
}
