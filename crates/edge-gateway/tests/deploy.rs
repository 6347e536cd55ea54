//! The operator's kit in `deploy/`, checked against the real thing: every
//! metric the Grafana dashboard and the alert rules query is one a running
//! gateway exports; `promtool` accepts the rules and the live `/metrics`;
//! the systemd unit passes `systemd-analyze verify`; the `.deb` builds and
//! holds the binary, the unit, the default configuration and the kit.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Gateway;
use gateway_bench::free_port;
use gateway_bench::mosquitto::Mosquitto;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Metric names in a PromQL expression: words starting with `gateway_` or `process_`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if word_start && (expr[i..].starts_with("gateway_") || expr[i..].starts_with("process_")) {
            let end = expr[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(expr.len(), |n| i + n);
            out.insert(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Sample names in Prometheus text.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
        .collect()
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("text/plain; version=0.0.4"), "classic format without an Accept header: {head}");
    body.to_owned()
}

#[test]
fn the_dashboard_and_alerts_query_only_metrics_a_running_gateway_exports_and_promtool_agrees() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[devices]]
name = "tank"
driver = "sim"
poll_interval_ms = 50
tags = [{{ name = "level", signal = "constant", offset = 95.0 }}]

[[alarms.rules]]
name = "overfill"
tag = "tank.level"
kind = "high"
limit = 90.0

[[connectors]]
name = "uplink"
kind = "mqtt"
url = "{}"
format = "json_batch"
"#,
            broker.url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let g = Gateway::start_with(&data, port, Some(&config));
    // Every family the dashboard shows has samples once there was traffic of
    // each kind: an HTTP request, a delivery, a WAL flush, an alarm.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let _ = common::http(port, "GET", "/api/v1/system/info", None);
        let text = scrape(port);
        let names = sample_names(&text);
        let ready =
            ["gateway_connector_values_acked_total", "gateway_alarm_transitions_total", "gateway_http_requests_total"]
                .iter()
                .all(|n| names.contains(*n));
        if ready {
            break text;
        }
        assert!(Instant::now() < deadline, "metrics never had every family: {names:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let exported = sample_names(&text);

    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/grafana/edge-gateway.json")).unwrap())
            .unwrap();
    let mut exprs: Vec<String> = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    exprs.extend(rules.lines().filter_map(|l| l.trim().strip_prefix("expr: ").map(str::to_owned)));
    let mut queried = BTreeSet::new();
    for e in &exprs {
        queried.extend(metric_names(e));
    }
    assert!(queried.len() >= 20, "{queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");

    let check = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new("promtool");
        cmd.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child =
            cmd.spawn().expect("promtool (Debian's prometheus package; scripts/setup-test-peers installs it)");
        if let Some(s) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check(&["check", "rules", repo().join("deploy/prometheus/alerts.yml").to_str().unwrap()], None);
    check(&["check", "metrics"], Some(&text));
    g.stop();
}

#[test]
fn the_systemd_unit_verifies_and_the_deb_holds_the_binary_the_unit_and_the_kit() {
    let dir = tempfile::tempdir().unwrap();
    // systemd-analyze wants the executable to exist: point the unit at this build.
    let unit = std::fs::read_to_string(repo().join("deploy/edge-gateway.service")).unwrap();
    assert!(unit.contains("ProtectSystem=strict") && unit.contains("ReadWritePaths=/var/lib/edge-gateway"));
    assert!(unit.contains("User=edge-gateway") && unit.contains("Restart=on-failure"));
    let local = dir.path().join("edge-gateway.service");
    std::fs::write(&local, unit.replace("/usr/bin/edge-gateway", common::BIN)).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&local).output().expect("systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    // Only lines about this unit count (the host's own units may have warnings).
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("edge-gateway.service")).collect();
    assert!(ours.is_empty(), "{ours:?}");

    let out = Command::new(repo().join("deploy/build-deb.sh"))
        .arg(common::BIN)
        .arg(dir.path().join("deb"))
        .env("DEB_COMPRESSION", "gzip")
        .output()
        .unwrap();
    assert!(out.status.success(), "build-deb: {}", String::from_utf8_lossy(&out.stderr));
    let deb = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let contents = Command::new("dpkg-deb").args(["--contents", &deb]).output().unwrap();
    let listing = String::from_utf8_lossy(&contents.stdout);
    for want in [
        "./usr/bin/edge-gateway",
        "./lib/systemd/system/edge-gateway.service",
        "./etc/edge-gateway/gateway.toml",
        "./usr/share/edge-gateway/edge-gateway.json",
        "./usr/share/edge-gateway/alerts.yml",
    ] {
        assert!(listing.contains(want), "{want} not in the package:\n{listing}");
    }
    let info = Command::new("dpkg-deb").args(["--field", &deb, "Package", "Version", "Depends"]).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Package: edge-gateway") && info.contains("Version: 0.1.0"), "{info}");
    // The packaged binary runs, and the packaged configuration is valid.
    let root = dir.path().join("root");
    assert!(Command::new("dpkg-deb").args(["-x", &deb]).arg(&root).status().unwrap().success());
    let packaged = root.join("usr/bin/edge-gateway");
    let out = Command::new(&packaged)
        .args(["config", "check"])
        .arg(root.join("etc/edge-gateway/gateway.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "config check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let conffiles = Command::new("dpkg-deb").args(["--ctrl-tarfile", &deb]).output().unwrap();
    assert!(!conffiles.stdout.is_empty());
}

/// `deploy/hot-code.order` (the lean build's code layout, `build.rs`): what
/// the linker reads is one symbol per line, each once, and the list holds
/// the steady state's core (a list left empty or written from the wrong
/// process would lay out nothing, silently).
#[test]
fn the_hot_code_order_names_the_steady_state_once_per_line() {
    let text = std::fs::read_to_string(repo().join("deploy/hot-code.order")).expect("deploy/hot-code.order");
    let names: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(names.len() >= 200, "only {} functions", names.len());
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "a name appears twice");
    for n in &names {
        assert!(!n.is_empty() && !n.contains(char::is_whitespace) && !n.contains('#'), "not a symbol: {n:?}");
    }
    // Publishing on the bus, the WAL's flusher, the simulator's poll: the
    // memory job's steady state; the load generators' code is not there.
    for needle in ["try_publish", "7Flusher3run", "15gateway_drivers3sim3run"] {
        assert!(names.iter().any(|n| n.contains(needle)), "nothing matching {needle}");
    }
    assert!(!names.iter().any(|n| n.contains("gateway_bench5north10farm_entry")), "the Modbus servers' code is listed");
}
