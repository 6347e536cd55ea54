//! The Modbus driver against an implementation we did not write: the
//! pymodbus server (`tests/peers/modbus_server.py`, installed by
//! `scripts/setup-test-peers`) over TCP on loopback, and over RTU through a
//! pseudo-terminal pair made by `socat`. Plus the failures pymodbus cannot
//! produce on demand (malformed frames, a device that accepts connections
//! and never answers), from small servers written here.
//!
//! The tests wait on events with deadlines and assert on timing only where
//! timing is the point (a live device keeps its poll rate), generously.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gateway_bench::peer::{Latest, PythonPeer, TestGateway};
use gateway_bench::{free_port, wait_until_blocking};
use gateway_model::{CmdStatus, QualityLevel, Reason, Value};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------
// Outside peers

fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| gateway_bench::peer::python("pymodbus, serial"))
}

fn require_socat() {
    let ok =
        Command::new("socat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(ok, "socat is missing (the RTU tests need it for a pseudo-terminal pair): run scripts/setup-test-peers");
}

/// A running pymodbus server and the points it holds; killed on drop.
struct Peer {
    proc: PythonPeer,
    points: Vec<Json>,
}

impl Peer {
    fn start(args: &[&str]) -> Peer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/modbus_server.py");
        let mut proc = PythonPeer::spawn(python(), &script, args);
        let ready = proc.line("READY ", Duration::from_secs(30));
        let v: Json = serde_json::from_str(&ready).unwrap();
        Peer { proc, points: v["points"].as_array().unwrap().clone() }
    }

    fn tcp(port: u16) -> Peer {
        Peer::start(&["--tcp", &port.to_string()])
    }

    /// Waits until the server reports point `name` holding `want` after a
    /// write (a write reports every point it touched, so earlier writes to
    /// neighbours may have reported `name` with its old value); returns the
    /// last value it reported.
    fn wrote(&mut self, name: &str, want: &Json) -> Json {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = Json::Null;
        while Instant::now() < deadline {
            let Some(l) = self.proc.next_line(deadline.saturating_duration_since(Instant::now())) else { break };
            let Some(rest) = l.strip_prefix("WROTE ") else { continue };
            let v: Json = serde_json::from_str(rest).unwrap();
            if v["name"] == name {
                last = v["value"].clone();
                if last == *want {
                    break;
                }
            }
        }
        last
    }

    fn point(&self, name: &str) -> &Json {
        self.points.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no point {name}"))
    }
}

/// A pseudo-terminal pair: the server on `a`, the driver on `b`.
struct Pty {
    child: Child,
    dir: tempfile::TempDir,
}

impl Pty {
    fn new() -> Pty {
        require_socat();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let child = Command::new("socat")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat");
        wait_until_blocking(10, "socat's pseudo-terminals", || a.exists() && b.exists());
        Pty { child, dir }
    }

    fn server_end(&self) -> String {
        self.dir.path().join("a").display().to_string()
    }

    fn driver_end(&self) -> String {
        self.dir.path().join("b").display().to_string()
    }

    fn serve(&self, units: &str) -> Peer {
        Peer::start(&["--rtu", &self.server_end(), "--units", units])
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The gateway side

type Gateway = TestGateway;

/// Whether a published value is exactly the server's (and of the right kind).
fn same(v: &Value, j: &Json) -> bool {
    match (v, j) {
        (Value::Bool(a), Json::Bool(b)) => a == b,
        (Value::I64(a), Json::Number(n)) => n.as_i64() == Some(*a),
        (Value::U64(a), Json::Number(n)) => n.as_u64() == Some(*a),
        (Value::F64(a), Json::Number(n)) => n.as_f64() == Some(*a),
        (Value::Str(a), Json::String(b)) => **a == *b,
        _ => false,
    }
}

/// The tag of a catalogue point (its fields less the value).
fn tag_of(p: &Json, writable: bool) -> Json {
    let mut t = p.clone();
    let m = t.as_object_mut().unwrap();
    m.remove("value");
    m.insert("writable".into(), writable.into());
    t
}

fn good(latest: &Latest, tag: &str) -> bool {
    latest.get(tag).is_some_and(|(_, q)| q.is_good())
}

fn bad_for(latest: &Latest, tag: &str, reasons: &[Reason]) -> bool {
    latest.get(tag).is_some_and(|(_, q)| q.level == QualityLevel::Bad && reasons.contains(&q.reason))
}

const LONG: Duration = Duration::from_secs(30);

fn tcp_device(name: &str, port: u16, tags: Vec<Json>) -> Json {
    json!({
        "name": name, "driver": "modbus_tcp", "address": format!("127.0.0.1:{port}"),
        "poll_interval_ms": 100, "timeout_ms": 500, "reconnect_min_ms": 100, "reconnect_max_ms": 400,
        "tags": tags,
    })
}

fn rtu_device(name: &str, port: &str, unit: u8, tags: Vec<Json>) -> Json {
    json!({
        "name": name, "driver": "modbus_rtu", "port": port, "unit_id": unit, "baud_rate": 9600,
        "poll_interval_ms": 100, "timeout_ms": 400, "reconnect_min_ms": 200, "reconnect_max_ms": 800,
        "tags": tags,
    })
}

// ---------------------------------------------------------------------------
// Reading

async fn reads_every_point(gw: &mut Gateway, peer: &Peer, dev: &str) {
    let points = peer.points.clone();
    gw.wait("every point good with the server's value", LONG, |latest| {
        points.iter().all(|p| {
            let tag = format!("{dev}.{}", p["name"].as_str().unwrap());
            latest.get(&tag).is_some_and(|(v, q)| q.is_good() && same(v, &p["value"]))
        })
    })
    .await;
}

fn all_tags(peer: &Peer) -> Vec<Json> {
    peer.points.iter().map(|p| tag_of(p, false)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_reads_every_data_type_in_every_byte_order_as_the_server_holds_it() {
    let port = free_port();
    let peer = Peer::tcp(port);
    let mut gw = Gateway::new(None);
    gw.start(tcp_device("plc", port, all_tags(&peer))).await;
    reads_every_point(&mut gw, &peer, "plc").await;
    let st = gw.drivers.status("plc").unwrap().snapshot();
    assert!(st.connected && st.polls > 0, "{st:?}");
    gw.drivers.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_reads_every_data_type_in_every_byte_order_as_the_server_holds_it() {
    let pty = Pty::new();
    let peer = pty.serve("1");
    let mut gw = Gateway::new(None);
    gw.start(rtu_device("meter", &pty.driver_end(), 1, all_tags(&peer))).await;
    reads_every_point(&mut gw, &peer, "meter").await;
    gw.drivers.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_marks_only_its_own_tags_bad_and_a_refused_merged_read_is_split() {
    let port = free_port();
    let peer = Peer::tcp(port);
    let mut gw = Gateway::new(None);
    let mut tags: Vec<Json> =
        ["u16_ABCD", "island_a", "island_b"].iter().map(|n| tag_of(peer.point(n), false)).collect();
    // Not mapped on the server: "illegal data address".
    tags.push(json!({"name": "nowhere", "area": "holding_register", "address": 2000}));
    tags.push(json!({"name": "nowhere_in", "area": "input_register", "address": 3000, "data_type": "f32"}));
    gw.start(tcp_device("plc", port, tags)).await;
    gw.wait("the mapped tags good, the unmapped bad with exception 2", LONG, |l| {
        let x2 = [Reason::device_exception(2)];
        good(l, "plc.u16_ABCD")
            && l.get("plc.island_a").is_some_and(|(v, q)| q.is_good() && *v == Value::U64(11))
            && l.get("plc.island_b").is_some_and(|(v, q)| q.is_good() && *v == Value::U64(22))
            && bad_for(l, "plc.nowhere", &x2)
            && bad_for(l, "plc.nowhere_in", &x2)
    })
    .await;
    // And it stays so: the exception does not take the device down.
    gw.run_for(Duration::from_millis(500)).await;
    assert!(good(&gw.latest, "plc.u16_ABCD") && good(&gw.latest, "plc.island_a"));
    assert!(gw.drivers.status("plc").unwrap().snapshot().connected);
    gw.drivers.stop_all().await;
}

// ---------------------------------------------------------------------------
// Writing

/// A new value for each kind of writable point, and how the server shows it.
fn new_value(p: &Json) -> Option<(Value, Json)> {
    let ty = p["data_type"].as_str().unwrap();
    if p.get("bit").is_some() || ty == "bool" {
        let b = !p["value"].as_bool().unwrap();
        return Some((Value::Bool(b), Json::Bool(b)));
    }
    if p.get("scale").is_some() {
        // Raw 700, read back as the server computes it: 700 × 0.1 − 40.
        return Some((Value::F64(30.0), json!(700.0 * 0.1 + -40.0)));
    }
    Some(match ty {
        "i16" => (Value::I64(-321), json!(-321)),
        "u16" => (Value::U64(60000), json!(60000)),
        "i32" => (Value::I64(-7_654_321), json!(-7_654_321)),
        "u32" => (Value::U64(4_000_000_000), json!(4_000_000_000u64)),
        "i64" => (Value::I64(-9_000_000_000_000_000_000), json!(-9_000_000_000_000_000_000i64)),
        "u64" => (Value::U64(18_000_000_000_000_000_000), json!(18_000_000_000_000_000_000u64)),
        "f32" => (Value::F64(0.15625), json!(0.15625)),
        "f64" => (Value::F64(-2.5e-300), json!(-2.5e-300)),
        "string" => (Value::from("OK"), json!("OK")),
        _ => return None,
    })
}

fn writable(p: &Json) -> bool {
    matches!(p["area"].as_str(), Some("coil" | "holding_register"))
        && p["name"] != "island_a"
        && p["name"] != "island_b"
}

async fn writes_land_on_the_server(gw: &mut Gateway, peer: &mut Peer, dev: &str, names: &[&str]) {
    for name in names {
        let p = peer.point(name).clone();
        let (value, shown) = new_value(&p).unwrap();
        let tag = format!("{dev}.{name}");
        let (status, message) = gw.command(&tag, value.clone()).await;
        assert_eq!(status, CmdStatus::Ok, "{tag} := {value}: {message}");
        let got = peer.wrote(name, &shown);
        assert_eq!(got, shown, "{tag}: the server holds {got} after writing {value}");
        gw.wait(&format!("{tag} read back as {value}"), LONG, |l| {
            l.get(&tag).is_some_and(|(v, q)| q.is_good() && same(v, &shown))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_writes_land_on_the_server_in_every_data_type_and_byte_order() {
    let port = free_port();
    let mut peer = Peer::tcp(port);
    let mut gw = Gateway::new(None);
    let tags: Vec<Json> = peer.points.iter().map(|p| tag_of(p, writable(p))).collect();
    gw.start(tcp_device("plc", port, tags)).await;
    reads_every_point(&mut gw, &peer, "plc").await;
    let names: Vec<String> = peer
        .points
        .iter()
        .filter(|p| writable(p) && p["area"] == "holding_register")
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .chain(["coil0", "coil1"].map(String::from))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    writes_land_on_the_server(&mut gw, &mut peer, "plc", &names).await;
    gw.drivers.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_writes_land_on_the_server() {
    let pty = Pty::new();
    let mut peer = pty.serve("1");
    let mut gw = Gateway::new(None);
    let tags: Vec<Json> = peer.points.iter().map(|p| tag_of(p, writable(p))).collect();
    gw.start(rtu_device("meter", &pty.driver_end(), 1, tags)).await;
    reads_every_point(&mut gw, &peer, "meter").await;
    let names = ["i16_BADC", "u32_CDAB", "f32_DCBA", "f64_ABCD", "i64_CDAB", "string_BADC", "bit4", "scaled", "coil2"];
    writes_land_on_the_server(&mut gw, &mut peer, "meter", &names).await;
    gw.drivers.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_cannot_be_carried_out_are_rejected_or_fail_with_the_modbus_error() {
    let port = free_port();
    let peer = Peer::tcp(port);
    let mut gw = Gateway::new(None);
    let tags = vec![
        tag_of(peer.point("u16_ABCD"), true),
        tag_of(peer.point("in_u16"), false),
        tag_of(peer.point("string_ABCD"), true),
        json!({"name": "nowhere", "area": "holding_register", "address": 2000, "writable": true}),
    ];
    gw.start(tcp_device("plc", port, tags)).await;
    gw.wait("connected", LONG, |l| good(l, "plc.u16_ABCD")).await;
    let (s, m) = gw.command("plc.in_u16", Value::U64(1)).await;
    assert_eq!((s, m.as_str()), (CmdStatus::Rejected, "tag is not writable"));
    let (s, m) = gw.command("plc.u16_ABCD", Value::I64(70_000)).await;
    assert_eq!(s, CmdStatus::Rejected, "{m}");
    assert!(m.contains("does not fit in u16"), "{m}");
    let (s, m) = gw.command("plc.u16_ABCD", Value::F64(1.5)).await;
    assert_eq!(s, CmdStatus::Rejected, "{m}");
    let (s, m) = gw.command("plc.string_ABCD", Value::from("far too long for ten bytes")).await;
    assert_eq!(s, CmdStatus::Rejected, "{m}");
    let (s, m) = gw.command("plc.nowhere", Value::U64(1)).await;
    assert_eq!((s, m.as_str()), (CmdStatus::Failed, "Modbus exception 2 (illegal data address)"));
    let (s, m) = gw.command("plc.missing", Value::U64(1)).await;
    assert_eq!(s, CmdStatus::Rejected, "{m}");
    gw.drivers.stop_all().await;
    let (s, _) = gw.command("plc.u16_ABCD", Value::U64(1)).await;
    assert_eq!(s, CmdStatus::NoRoute, "a stopped driver takes no commands");
}

// ---------------------------------------------------------------------------
// Failures and recovery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_tags_turn_bad_while_the_server_is_down_and_recover_when_it_returns() {
    let port = free_port();
    let mut gw = Gateway::new(None);
    let tags = vec![
        json!({"name": "a", "area": "holding_register", "address": 0, "data_type": "i16"}),
        json!({"name": "c", "area": "coil", "address": 0}),
    ];
    // The server is not there yet when the driver starts.
    gw.start(tcp_device("plc", port, tags)).await;
    gw.wait("bad before the first connect", LONG, |l| bad_for(l, "plc.a", &[Reason::NOT_CONNECTED])).await;
    let peer = Peer::tcp(port);
    gw.wait("good once the server is up", LONG, |l| {
        l.get("plc.a").is_some_and(|(v, q)| q.is_good() && *v == Value::I64(-12345)) && good(l, "plc.c")
    })
    .await;
    drop(peer);
    let down = [Reason::CONNECTION_LOST, Reason::NOT_CONNECTED, Reason::TIMEOUT];
    gw.wait("bad when the server stops", LONG, |l| bad_for(l, "plc.a", &down) && bad_for(l, "plc.c", &down)).await;
    assert_eq!(gw.latest["plc.a"].0, Value::I64(-12345), "a failed tag carries its last good value");
    let _peer = Peer::tcp(port);
    gw.wait("good again when it returns", LONG, |l| good(l, "plc.a") && good(l, "plc.c")).await;
    let st = gw.drivers.status("plc").unwrap().snapshot();
    assert!(st.connected && st.reconnects >= 2 && st.failures >= 2, "{st:?}");
    gw.drivers.stop_all().await;
    gw.wait("bad (shutdown) once stopped", LONG, |l| bad_for(l, "plc.a", &[Reason::SHUTDOWN])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_tags_turn_bad_while_the_server_is_down_and_recover_when_it_returns() {
    let pty = Pty::new();
    let mut gw = Gateway::new(None);
    let tags = vec![json!({"name": "a", "area": "holding_register", "address": 0, "data_type": "i16"})];
    gw.start(rtu_device("meter", &pty.driver_end(), 1, tags)).await;
    gw.wait("bad before the slave answers", LONG, |l| bad_for(l, "meter.a", &[Reason::TIMEOUT])).await;
    let peer = pty.serve("1");
    gw.wait("good once it answers", LONG, |l| good(l, "meter.a")).await;
    drop(peer);
    gw.wait("bad when it stops", LONG, |l| bad_for(l, "meter.a", &[Reason::TIMEOUT])).await;
    let _peer = pty.serve("1");
    gw.wait("good again when it returns", LONG, |l| good(l, "meter.a")).await;
    gw.drivers.stop_all().await;
}

/// A device that accepts connections and never answers: the worst kind of dead.
async fn silent_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_tcp_device_does_not_slow_the_live_one() {
    let port = free_port();
    let _peer = Peer::tcp(port);
    let mut gw = Gateway::new(None);
    let tag = || vec![json!({"name": "a", "area": "holding_register", "address": 0, "data_type": "i16"})];
    gw.start(tcp_device("live", port, tag())).await;
    let mut hung = tcp_device("hung", silent_server().await, tag());
    hung["timeout_ms"] = json!(1000);
    gw.start(hung).await;
    gw.start(tcp_device("refused", free_port(), tag())).await;
    gw.wait("the live device good, the others bad", LONG, |l| {
        good(l, "live.a")
            && bad_for(l, "hung.a", &[Reason::TIMEOUT, Reason::NOT_CONNECTED])
            && bad_for(l, "refused.a", &[Reason::NOT_CONNECTED])
    })
    .await;
    let before = gw.counts.get("live.a").copied().unwrap_or(0);
    let window = Duration::from_secs(3);
    gw.run_for(window).await;
    let polls = gw.counts["live.a"] - before;
    // 100 ms polls: 30 in 3 s; at least half, on a loaded machine.
    assert!(polls >= 15, "the live device published {polls} times in {window:?}");
    assert!(good(&gw.latest, "live.a"));
    gw.drivers.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slaves_share_one_rtu_line_and_a_dead_one_does_not_stall_it() {
    let pty = Pty::new();
    let _peer = pty.serve("1,2");
    let mut gw = Gateway::new(None);
    let tag = |name: &str| vec![json!({"name": name, "area": "holding_register", "address": 0, "data_type": "i16"})];
    let line = pty.driver_end();
    gw.start(rtu_device("s1", &line, 1, tag("a"))).await;
    gw.start(rtu_device("s2", &line, 2, tag("a"))).await;
    // Nobody answers unit 3. Each probe of it holds the line for its
    // timeout; its backoff (here from 1 s, as by default it grows to 30 s)
    // is what keeps that rare.
    let mut dead = rtu_device("s3", &line, 3, tag("a"));
    dead["reconnect_min_ms"] = json!(1000);
    dead["reconnect_max_ms"] = json!(5000);
    gw.start(dead).await;
    gw.wait("unit 1 good", LONG, |l| good(l, "s1.a")).await;
    // Once the line is open, a device asking for other settings is refused
    // (whoever opens a port first sets it; a config file with such a
    // conflict is refused before anything starts).
    let mut odd = rtu_device("s4", &line, 4, tag("a"));
    odd["baud_rate"] = json!(19200);
    gw.start(odd).await;
    gw.wait("units 1 and 2 good, 3 timing out, 4 refused its settings", LONG, |l| {
        good(l, "s1.a")
            && good(l, "s2.a")
            && bad_for(l, "s3.a", &[Reason::TIMEOUT])
            && bad_for(l, "s4.a", &[Reason::CONFIG_ERROR])
    })
    .await;
    let why = gw.drivers.status("s4").unwrap().snapshot().last_error.unwrap_or_default();
    assert!(why.contains("is in use at 9600 8N1 by other devices; this device asks for 19200 8N1"), "{why}");
    let before = gw.counts.get("s1.a").copied().unwrap_or(0);
    gw.run_for(Duration::from_secs(3)).await;
    let polls = gw.counts["s1.a"] - before;
    assert!(polls >= 15, "unit 1 published {polls} times in 3 s with a dead neighbour");
    assert!(good(&gw.latest, "s1.a") && good(&gw.latest, "s2.a"));
    gw.drivers.stop_all().await;
}

/// A Modbus TCP server that answers reads of address 0 properly, of
/// address 50 with one register too few, and of address 60 with garbage.
async fn faulty_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut hdr = [0u8; 7];
                while s.read_exact(&mut hdr).await.is_ok() {
                    let len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
                    let mut pdu = vec![0u8; len.saturating_sub(1)];
                    if s.read_exact(&mut pdu).await.is_err() || pdu.len() < 5 {
                        return;
                    }
                    let addr = u16::from_be_bytes([pdu[1], pdu[2]]);
                    let count = u16::from_be_bytes([pdu[3], pdu[4]]);
                    let regs = if addr == 50 { count - 1 } else { count };
                    let mut body = vec![pdu[0], (regs * 2) as u8];
                    for i in 0..regs {
                        body.extend_from_slice(&(addr + i).to_be_bytes());
                    }
                    let mut out = Vec::new();
                    out.extend_from_slice(&hdr[..2]);
                    // Address 60: a protocol id that is not Modbus.
                    out.extend_from_slice(if addr == 60 { &[0xBE, 0xEF] } else { &[0, 0] });
                    out.extend_from_slice(&((body.len() + 1) as u16).to_be_bytes());
                    out.push(hdr[6]);
                    out.extend_from_slice(&body);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_responses_end_only_their_own_request() {
    let port = faulty_server().await;
    let mut gw = Gateway::new(None);
    let tags = vec![
        json!({"name": "fine", "area": "holding_register", "address": 0}),
        json!({"name": "short", "area": "holding_register", "address": 50, "data_type": "u32"}),
        json!({"name": "garbage", "area": "holding_register", "address": 60}),
        json!({"name": "fine_too", "area": "holding_register", "address": 70}),
    ];
    let mut dev = tcp_device("plc", port, tags);
    dev["max_gap"] = json!(0);
    gw.start(dev).await;
    let malformed = [Reason::MALFORMED_RESPONSE];
    gw.wait("good tags good, malformed ones bad", LONG, |l| {
        l.get("plc.fine").is_some_and(|(v, q)| q.is_good() && *v == Value::U64(0))
            && l.get("plc.fine_too").is_some_and(|(v, q)| q.is_good() && *v == Value::U64(70))
            && bad_for(l, "plc.short", &malformed)
            && bad_for(l, "plc.garbage", &malformed)
    })
    .await;
    let before = gw.counts["plc.fine_too"];
    gw.run_for(Duration::from_secs(1)).await;
    assert!(gw.counts["plc.fine_too"] > before + 3, "polling goes on");
    assert!(good(&gw.latest, "plc.fine") && good(&gw.latest, "plc.fine_too"));
    gw.drivers.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadband_publishes_steady_values_only_every_few_polls() {
    let port = free_port();
    let _peer = Peer::tcp(port);
    let mut gw = Gateway::new(None);
    let tags = vec![
        json!({"name": "every", "area": "holding_register", "address": 0, "data_type": "i16"}),
        json!({"name": "banded", "area": "holding_register", "address": 0, "data_type": "i16", "deadband": 1.0}),
    ];
    gw.start(tcp_device("plc", port, tags)).await;
    gw.wait("both good", LONG, |l| good(l, "plc.every") && good(l, "plc.banded")).await;
    gw.run_for(Duration::from_secs(3)).await;
    let (every, banded) = (gw.counts["plc.every"], gw.counts["plc.banded"]);
    assert!(every >= 10, "{every}");
    // One publication per REFRESH_POLLS polls (give or take the first).
    let expected = every / u64::from(gateway_drivers::modbus::REFRESH_POLLS);
    assert!(banded >= 1 && banded <= expected + 2, "every poll: {every}, with a deadband: {banded}");
    gw.drivers.stop_all().await;
}
