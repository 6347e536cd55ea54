//! The real binary under hostile or careless use: a flood of connections
//! that never finish their headers, under a low open-files limit, must not
//! starve the WAL or the drivers; `tls self-signed` makes a pair the gateway
//! serves HTTPS with; a bad TLS file is a configuration error naming the
//! field; a plain-HTTP API beyond loopback is warned about.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Gateway, http, run};
use gateway_bench::{free_port, wait_until_blocking};
use serde_json::Value;

/// Whether the gateway closed `s` within 60 s.
fn closed_by_server(s: &mut TcpStream) -> bool {
    gateway_bench::closed_by_peer(s, 60)
}

/// The WAL's next and first sequence numbers: the first moves on when a new
/// segment was opened and an old one deleted.
fn wal(port: u16) -> (u64, u64) {
    let (s, v) = http(port, "GET", "/api/v1/system/info", None);
    assert_eq!(s, 200, "{v}");
    (v["wal"]["next_seq"].as_u64().unwrap(), v["wal"]["first_seq"].as_u64().unwrap())
}

#[test]
fn a_flood_of_half_open_requests_under_a_low_open_files_limit_does_not_starve_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flood.toml");
    // 4,000 values/s into 64 KiB segments: the WAL opens a new file every
    // fraction of a second, so it needs descriptors all through the flood.
    std::fs::write(
        &config,
        "[api]\nheader_read_timeout_s = 2\n[bus]\nwal_segment_bytes = 65536\n\
         [[devices]]\nname = \"fast\"\ndriver = \"sim\"\npoll_interval_ms = 50\ngenerate = { count = 200, signal = \"sine\" }\n",
    )
    .unwrap();
    let port = free_port();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -n 128 && exec \"$0\" \"$@\"", BIN, "run", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let g = Gateway::spawn(cmd, port);
    let (next0, first0) = wal(port);

    // 150 connections that send half a request and then nothing: more than
    // the 128 descriptors the process may hold.
    let mut flood: Vec<TcpStream> = (0..150)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /api/v1/system/health HTTP/1.1\r\nHost: 127.0").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));

    // The API answers again (behind the flood in the queue), and the WAL
    // kept writing and rotating segments all along.
    wait_until_blocking(120, "the WAL to advance and rotate past the flood", || {
        let (next, first) = wal(port);
        next > next0 + 4_000 && first > first0
    });
    let (s, v) = http(port, "GET", "/api/v1/system/health", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["checks"]["wal"], "ok", "{v}");
    let (_, info) = http(port, "GET", "/api/v1/system/info", None);
    assert_eq!(info["wal"]["io_errors"], 0, "the WAL failed to write or open a file: {info}");
    let before = http(port, "GET", "/api/v1/values/fast.g0", None).1["ts"].clone();
    wait_until_blocking(30, "values to keep advancing", || {
        http(port, "GET", "/api/v1/values/fast.g0", None).1["ts"] != before
    });
    let (_, text) = http(port, "GET", "/metrics", None);
    let text = text.as_str().unwrap().to_owned();
    assert!(text.contains("gateway_http_connection_limit 64"), "the cap under 128 descriptors is 64");
    assert!(flood.iter_mut().all(closed_by_server), "a half-open connection was never closed");
    g.stop();
}

#[test]
fn tls_self_signed_makes_a_pair_the_gateway_serves_https_with() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let o = run(&["tls", "self-signed", "--out", out.to_str().unwrap(), "--host", "gw1.plant.local"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(out.join("key.pem")).unwrap().permissions());
    assert_eq!(key_mode & 0o777, 0o600);
    let o = run(&["tls", "self-signed", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "an existing key must not be overwritten silently");
    let text =
        Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(out.join("cert.pem")).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    for name in ["DNS:localhost", "IP Address:127.0.0.1", "DNS:gw1.plant.local"] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }

    let port = free_port();
    let config = dir.path().join("tls.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nbind = \"127.0.0.1:{port}\"\nallowed_hosts = [\"gw1.plant.local\"]\n[api.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            out.join("cert.pem"),
            out.join("key.pem")
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let curl = |url: &str| {
        Command::new("curl")
            .args(["-sS", "--max-time", "30", "--cacert"])
            .arg(out.join("cert.pem"))
            .args(["--resolve", &format!("gw1.plant.local:{port}:127.0.0.1")])
            .arg(url)
            .output()
            .expect("curl is installed (scripts/setup-test-peers)")
    };
    let mut last = String::new();
    wait_until_blocking(60, "the gateway to answer over HTTPS", || {
        let o = curl(&format!("https://gw1.plant.local:{port}/api/v1/system/health"));
        last = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        o.status.success()
    });
    let v: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["status"], "ok", "{last}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_missing_tls_file_is_a_configuration_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[api.tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n")
        .unwrap();
    let out = run(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.tls.cert_file: cannot read /nonexistent/cert.pem"), "{err}");
}

#[test]
fn an_api_beyond_loopback_without_tls_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .env("GATEWAY__API__BIND", format!("0.0.0.0:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The socket accepts connections from the moment it is bound, a little
    // before the server that warns is built: read the log as it comes.
    let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let s = said.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let mut s = s.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    wait_until_blocking(60, "the gateway to listen", || TcpStream::connect(("127.0.0.1", port)).is_ok());
    let warned = || {
        let s = said.lock().unwrap();
        s.contains("without TLS") && s.contains("allowed_hosts is empty")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !warned() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let err = said.lock().unwrap().clone();
    assert!(err.contains("without TLS"), "{err}");
    assert!(err.contains("allowed_hosts is empty"), "{err}");
}
