//! Test support: the real binary on a free port, and a minimal HTTP client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gateway_bench::wait_until_blocking;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_edge-gateway");

/// A minimal HTTP/1.1 client: the tests need no more, and the gateway is the
/// thing under test, not a client library.
pub fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    http_as(port, None, method, path, body)
}

/// The status of `GET path`, or `None` while nothing answers on `port`.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    TcpStream::connect(("127.0.0.1", port)).ok()?;
    Some(http(port, "GET", path, None).0)
}

/// [`http`] with `Authorization: Bearer TOKEN`.
pub fn http_as(port: u16, token: Option<&str>, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
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

pub struct Gateway {
    child: Child,
}

impl Gateway {
    pub fn start(data_dir: &Path, port: u16) -> Gateway {
        Self::start_with(data_dir, port, None)
    }

    pub fn start_with(data_dir: &Path, port: u16, config: Option<&Path>) -> Gateway {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--data-dir"]).arg(data_dir);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        Self::spawn(cmd, port)
    }

    /// Starts `cmd` (an `edge-gateway run`, perhaps behind a shell that
    /// limits it) with the API on `port`, and waits until it is healthy.
    pub fn spawn(mut cmd: Command, port: u16) -> Gateway {
        let child = cmd
            .env("GATEWAY__API__BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut g = Gateway { child };
        wait_until_blocking(60, "the gateway to become healthy", || {
            if let Ok(Some(status)) = g.child.try_wait() {
                panic!("the gateway exited early: {status}");
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok() && http(port, "GET", "/api/v1/system/health", None).0 == 200
        });
        g
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status must be 0 within 20 s.
    pub fn stop(mut self) {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok);
        wait_until_blocking(20, "the gateway to stop after SIGTERM", || match self.child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "the gateway exited with {status} after SIGTERM");
                true
            }
            None => false,
        });
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_value(port: u16, tag: &str, want: impl Fn(&Value) -> bool) -> Value {
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

/// A new API token with `role` for the gateway of `data_dir`, made with the CLI.
pub fn token(data_dir: &Path, name: &str, role: &str) -> String {
    let out =
        Command::new(BIN).args(["token", "create", name, "--role", role, "--data-dir"]).arg(data_dir).output().unwrap();
    assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// The sequence numbers the WAL in `data_dir` skipped after a crash (those
/// the crashed run had reserved), as `edge-gateway wal inspect` shows them.
#[allow(dead_code)]
pub fn reserved_skips(data_dir: &Path) -> Vec<(u64, u64)> {
    let out = run(&["wal", "inspect", data_dir.join("wal").to_str().unwrap()]);
    assert!(out.status.success(), "wal inspect: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .filter_map(|l| l.split("after reserved seq ").nth(1))
        .map(|rest| {
            let range = rest.split_whitespace().next().unwrap();
            let (a, b) = range.split_once("..").unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

impl Gateway {
    /// SIGKILL: what a crash does.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counter values per tag as the broker delivered them under a filter, and
/// how many messages arrived.
pub type Seen = std::sync::Arc<std::sync::Mutex<(std::collections::HashMap<String, Vec<i64>>, u64)>>;

/// Subscribes to `filter` on the broker at `port` (QoS 1) and collects the
/// `{"values":[{"tag","value"}...]}` messages (`json_batch`) that arrive.
pub async fn collect(port: u16, filter: &'static str) -> Seen {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let opts = MqttOptions::new(format!("collect-{}", gateway_bench::free_port()), "127.0.0.1", port);
    let (client, mut ev) = AsyncClient::new(opts, 100);
    let seen: Seen = Seen::default();
    let s = seen.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready = Some(ready_tx);
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe(filter, QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    let mut g = s.lock().unwrap();
                    g.1 += 1;
                    for x in v["values"].as_array().into_iter().flatten() {
                        if let (Some(t), Some(n)) = (x["tag"].as_str(), x["value"].as_f64()) {
                            g.0.entry(t.to_owned()).or_default().push(n as i64);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx).await.expect("subscribed").unwrap();
    seen
}

/// The counter `tag`'s values at the broker run on by one, with no gap and
/// no repeat; how many there are.
pub fn check_counter(seen: &Seen, tag: &str) -> usize {
    let g = seen.lock().unwrap();
    let v = g.0.get(tag).expect("counter values");
    for w in v.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the counter skipped or repeated around {w:?}");
    }
    v.len()
}

/// Runs the gateway with its stderr in a file, until healthy.
pub fn start_logged(data: &Path, port: u16, log: &Path, env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--data-dir"])
        .arg(data)
        .env("GATEWAY__API__BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    wait_until_blocking(60, "the gateway to become healthy", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the gateway exited early: {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        TcpStream::connect(("127.0.0.1", port)).is_ok() && http(port, "GET", "/api/v1/system/health", None).0 == 200
    });
    child
}

/// SIGTERM, then the exit status must be 0.
pub fn stop_logged(mut child: std::process::Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
