//! The OPC UA driver against a server we did not write: the `asyncua`
//! server from PyPI (`tests/peers/opcua_server.py`, installed by
//! `scripts/setup-test-peers`) on a free loopback port. One server serves
//! every step of a test (reads, subscriptions, writes, browse and import),
//! so the suite starts three servers in all: plain, secured, and one that
//! is stopped and started again.
//!
//! The tests wait on events with deadlines and assert on timing only where
//! timing is the point (a lost server turns the tags bad in time).

use std::path::Path;
use std::time::{Duration, Instant};

use gateway_bench::free_port;
use gateway_bench::peer::{Latest, PythonPeer, TestGateway};
use gateway_drivers::{DeviceConfig, DriverEnv};
use gateway_model::{CmdStatus, QualityLevel, Reason, Value, parse_rfc3339_ns};
use serde_json::{Value as Json, json};

const LONG: Duration = Duration::from_secs(30);

/// A running asyncua server and what it holds.
struct Server {
    proc: PythonPeer,
    port: u16,
    ns: u64,
    points: Vec<Json>,
    thumbprint: Option<String>,
}

impl Server {
    fn start(port: u16, args: &[&str]) -> Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/opcua_server.py");
        let port_s = port.to_string();
        let mut all = vec!["--port", &port_s];
        all.extend_from_slice(args);
        let mut proc = PythonPeer::spawn(&gateway_bench::peer::python("asyncua"), &script, &all);
        let ready: Json = serde_json::from_str(&proc.line("READY ", LONG)).unwrap();
        Server {
            proc,
            port,
            ns: ready["ns"].as_u64().unwrap(),
            points: ready["points"].as_array().unwrap().clone(),
            thumbprint: ready["thumbprint"].as_str().map(str::to_owned),
        }
    }

    fn endpoint(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/test", self.port)
    }

    fn node(&self, name: &str) -> String {
        format!("ns={};s=Line1.{name}", self.ns)
    }

    /// Waits for the server to report a client's write of `name`.
    fn wrote(&mut self, name: &str) -> Json {
        let deadline = Instant::now() + LONG;
        while Instant::now() < deadline {
            let v: Json = serde_json::from_str(&self.proc.line("WROTE ", LONG)).unwrap();
            if v["name"] == name {
                return v["value"].clone();
            }
        }
        panic!("the server reported no write of {name}");
    }
}

fn device(name: &str, srv: &Server, extra: Json, tags: Vec<Json>) -> Json {
    let mut d = json!({
        "name": name, "driver": "opcua", "endpoint": srv.endpoint(),
        "publishing_interval_ms": 100, "timeout_ms": 1000, "reconnect_min_ms": 100, "reconnect_max_ms": 500,
        "tags": tags,
    });
    if let (Some(m), Json::Object(e)) = (d.as_object_mut(), extra) {
        m.extend(e);
    }
    d
}

fn good(latest: &Latest, tag: &str) -> bool {
    latest.get(tag).is_some_and(|(_, q)| q.is_good())
}

fn bad_for(latest: &Latest, tag: &str, reason: Reason) -> bool {
    latest.get(tag).is_some_and(|(_, q)| q.level == QualityLevel::Bad && q.reason == reason)
}

/// Whether a published value is the server's, as its catalogue wrote it.
fn same(v: &Value, j: &Json) -> bool {
    match (v, j) {
        (Value::Bool(a), Json::Bool(b)) => a == b,
        (Value::I64(a), Json::Number(n)) => n.as_i64() == Some(*a),
        (Value::U64(a), Json::Number(n)) => n.as_u64() == Some(*a),
        (Value::F64(a), Json::Number(n)) => n.as_f64() == Some(*a),
        // Times as the same instant, whatever the digits of the fraction.
        (Value::Str(a), Json::String(b)) => {
            **a == *b || parse_rfc3339_ns(a).is_some_and(|t| parse_rfc3339_ns(b) == Some(t))
        }
        (Value::Bytes(a), Json::Array(b)) => a.iter().map(|x| json!(x)).eq(b.iter().cloned()),
        _ => false,
    }
}

/// The catalogue's scalar points (not the counter, the array or the read-only one).
fn scalars(srv: &Server) -> Vec<Json> {
    srv.points
        .iter()
        .filter(|p| !matches!(p["name"].as_str(), Some("Counter" | "Array" | "ReadOnly")))
        .cloned()
        .collect()
}

fn counter(latest: &Latest, tag: &str) -> Option<i64> {
    latest.get(tag).filter(|(_, q)| q.is_good()).and_then(|(v, _)| v.as_i64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_server_reads_subscribes_writes_browses_and_imports() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(free_port(), &["--tick-ms", "100"]);
    let mut gw = TestGateway::new(Some(dir.path()));

    // Every scalar type, by subscription, typed and untyped; the counter;
    // and tags whose node cannot serve them, each bad alone with its reason.
    let mut tags: Vec<Json> =
        scalars(&srv).iter().map(|p| json!({"name": p["name"], "node_id": p["node_id"], "writable": true})).collect();
    tags.push(json!({"name": "Typed", "node_id": srv.node("Double"), "data_type": "Double"}));
    tags.push(json!({"name": "Counter", "node_id": format!("nsu=urn:edge-gateway:test;s=Line1.Counter")}));
    tags.push(json!({"name": "ReadOnly", "node_id": srv.node("ReadOnly"), "writable": true}));
    tags.push(json!({"name": "Missing", "node_id": srv.node("Nope")}));
    tags.push(json!({"name": "Array", "node_id": srv.node("Array")}));
    tags.push(json!({"name": "Wrong", "node_id": srv.node("Double"), "data_type": "Int32"}));
    tags.push(json!({"name": "NoNs", "node_id": "nsu=urn:nobody;s=x"}));
    gw.start(device("ua", &srv, json!({}), tags)).await;
    let points = scalars(&srv);
    gw.wait("every scalar type good with the server's value", LONG, |l| {
        points.iter().all(|p| {
            let tag = format!("ua.{}", p["name"].as_str().unwrap());
            l.get(&tag).is_some_and(|(v, q)| q.is_good() && same(v, &p["value"]))
        }) && good(l, "ua.Typed")
    })
    .await;
    gw.wait("failing nodes bad alone, each with its reason", LONG, |l| {
        bad_for(l, "ua.Missing", Reason::NOT_FOUND)
            && bad_for(l, "ua.Array", Reason::NOT_SUPPORTED)
            && bad_for(l, "ua.Wrong", Reason::TYPE_MISMATCH)
            && bad_for(l, "ua.NoNs", Reason::NOT_FOUND)
    })
    .await;
    let st = gw.drivers.status("ua").unwrap().snapshot();
    assert!(st.connected, "{st:?}");
    let err = st.last_error.unwrap_or_default();
    assert!(err.contains("4 of 22 tags cannot be read") && err.contains("Missing"), "{err}");

    // Subscriptions deliver changes: the counter moves (found by namespace URI).
    gw.wait("the counter", LONG, |l| counter(l, "ua.Counter").is_some()).await;
    let first = counter(&gw.latest, "ua.Counter").unwrap();
    gw.wait("the counter to move on", LONG, |l| counter(l, "ua.Counter").is_some_and(|c| c >= first + 5)).await;

    // Writes land with the node's type; a read-only node refuses; a value
    // that does not fit is refused before anything is sent.
    assert_eq!(gw.command("ua.Double", Value::F64(42.5)).await, (CmdStatus::Ok, String::new()));
    assert_eq!(srv.wrote("Double"), json!(42.5));
    gw.wait("the written value to come back", LONG, |l| {
        l.get("ua.Double").is_some_and(|(v, _)| *v == Value::F64(42.5))
    })
    .await;
    assert_eq!(gw.command("ua.Int16", Value::I64(-7)).await.0, CmdStatus::Ok);
    assert_eq!(srv.wrote("Int16"), json!(-7));
    assert_eq!(gw.command("ua.String", Value::Str("new text".into())).await.0, CmdStatus::Ok);
    assert_eq!(srv.wrote("String"), json!("new text"));
    assert_eq!(gw.command("ua.DateTime", Value::Str("2025-01-02T03:04:05Z".into())).await.0, CmdStatus::Ok);
    assert_eq!(srv.wrote("DateTime"), json!("2025-01-02T03:04:05.000000Z"));
    let (status, msg) = gw.command("ua.ReadOnly", Value::F64(1.0)).await;
    assert_eq!(status, CmdStatus::Failed, "{msg}");
    assert!(msg.contains("the server refused the write: Bad"), "{msg}");
    let (status, msg) = gw.command("ua.Byte", Value::I64(300)).await;
    assert_eq!((status, msg.contains("does not fit in Byte")), (CmdStatus::Rejected, true), "{msg}");
    let (status, _) = gw.command("ua.Counter", Value::I64(1)).await;
    assert_eq!(status, CmdStatus::Rejected, "not writable in the configuration");

    // Poll mode reads the same values.
    let polled: Vec<Json> = scalars(&srv).iter().map(|p| json!({"name": p["name"], "node_id": p["node_id"]})).collect();
    gw.start(device(
        "ua_poll",
        &srv,
        json!({"mode": "poll", "poll_interval_ms": 100, "max_nodes_per_request": 4}),
        polled,
    ))
    .await;
    gw.wait("every point good by polling", LONG, |l| {
        scalars(&srv).iter().all(|p| good(l, &format!("ua_poll.{}", p["name"].as_str().unwrap())))
    })
    .await;
    assert_eq!(gw.latest["ua_poll.Double"].0, Value::F64(42.5));

    // Browse: the Objects folder, then the line's variables with their types and access.
    let dev = DeviceConfig::from_json(device("ua", &srv, json!({}), vec![])).unwrap();
    let env = DriverEnv { data_dir: Some(dir.path().to_owned()) };
    let dev = std::sync::Arc::new(dev);
    let top = dev.params.browse(dev.clone(), None, env.clone()).unwrap().await.unwrap();
    let names: Vec<&str> =
        top["children"].as_array().unwrap().iter().filter_map(|c| c["browse_name"].as_str()).collect();
    assert!(names.contains(&format!("{}:Plant", srv.ns).as_str()) && names.contains(&"Server"), "{names:?}");
    let plant = top["children"].as_array().unwrap().iter().find(|c| c["display_name"] == "Plant").unwrap();
    assert_eq!((plant["node_class"].as_str(), plant["has_children"].as_bool()), (Some("Object"), Some(true)));
    let line_id = format!("ns={};s=Plant.Line1", srv.ns);
    let line = dev.params.browse(dev.clone(), Some(line_id), env.clone()).unwrap().await.unwrap();
    let kids = line["children"].as_array().unwrap();
    let find = |n: &str| kids.iter().find(|c| c["display_name"] == n).unwrap_or_else(|| panic!("{n} in {kids:?}"));
    assert_eq!(find("Double")["data_type"], "Double");
    assert_eq!(find("Double")["access_level"], json!({"read": true, "write": true}));
    assert_eq!(find("DateTime")["data_type"], "DateTime");
    assert_eq!(find("ReadOnly")["access_level"]["write"], false);
    assert_eq!((find("Array")["array"].as_bool(), find("Array")["importable"].as_bool()), (Some(true), Some(false)));
    assert_eq!(find("Double")["node_id"], srv.node("Double"));
    let e = dev.params.browse(dev.clone(), Some("ns=2;s=Nope".into()), env.clone()).unwrap().await.unwrap_err();
    assert!(matches!(e, gateway_drivers::BrowseError::NotFound(_)), "{e:?}");
    let e = dev.params.browse(dev.clone(), Some("nonsense".into()), env.clone()).unwrap().await.unwrap_err();
    assert!(matches!(e, gateway_drivers::BrowseError::Invalid(_)), "{e:?}");

    // Import: chosen variables become tags a device takes as they are.
    let picks = vec![json!({"node_id": srv.node("UInt32")}), json!({"node_id": srv.node("ReadOnly"), "name": "ro"})];
    let tags = dev.params.import(dev.clone(), picks, env.clone()).unwrap().await.unwrap();
    assert_eq!(
        tags[0],
        json!({"name": "UInt32", "node_id": srv.node("UInt32"), "data_type": "UInt32", "writable": true})
    );
    assert_eq!(
        tags[1],
        json!({"name": "ro", "node_id": srv.node("ReadOnly"), "data_type": "Double", "writable": false})
    );
    gw.start(device("imported", &srv, json!({}), tags)).await;
    gw.wait("the imported tags good", LONG, |l| good(l, "imported.UInt32") && good(l, "imported.ro")).await;
    let e = dev.params.import(dev.clone(), vec![json!({"node_id": srv.node("Array")})], env.clone()).unwrap().await;
    assert!(e.unwrap_err().to_string().contains("holds an array"));
    let e = dev.params.import(dev.clone(), vec![json!({"node_id": line["node"]})], env).unwrap().await;
    assert!(e.unwrap_err().to_string().contains("is not a variable"));
    gw.drivers.stop_all().await;
    gw.wait("every tag bad (shutdown) once stopped", LONG, |l| bad_for(l, "ua.Double", Reason::SHUTDOWN)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic256sha256_with_a_password_works_and_trust_and_a_wrong_password_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let srv = Server::start(free_port(), &["--secure", certs.path().to_str().unwrap(), "--user", "op:s3cret"]);
    let mut gw = TestGateway::new(Some(dir.path()));
    let secure = |password: &str, thumbprint: Option<&str>| {
        let mut extra = json!({"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt",
                               "username": "op", "password": password, "timeout_ms": 3000});
        if let Some(t) = thumbprint {
            extra["server_certificate_thumbprint"] = json!(t);
        }
        device("sec", &srv, extra, vec![json!({"name": "Double", "node_id": srv.node("Double")})])
    };

    // The server's certificate is not trusted yet: refused, filed in rejected/, said so.
    gw.start(secure("s3cret", None)).await;
    gw.wait("the tag bad while the server is not trusted", LONG, |l| bad_for(l, "sec.Double", Reason::ACCESS_DENIED))
        .await;
    let err = gw.drivers.status("sec").unwrap().snapshot().last_error.unwrap_or_default();
    assert!(err.contains("is not trusted") && err.contains("rejected"), "{err}");
    let rejected = dir.path().join("opcua/pki/rejected");
    let filed: Vec<_> = std::fs::read_dir(&rejected).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(filed.len(), 1, "{filed:?}");
    assert!(dir.path().join("opcua/pki/own/cert.der").exists(), "the client's certificate was made on first use");

    // An operator moves it to trusted/: the driver connects at its next attempt.
    let trusted = dir.path().join("opcua/pki/trusted").join(filed[0].file_name().unwrap());
    std::fs::rename(&filed[0], &trusted).unwrap();
    gw.wait("the tag good once the certificate is trusted", LONG, |l| good(l, "sec.Double")).await;
    assert_eq!(gw.latest["sec.Double"].0, Value::F64(-2.25));

    // A wrong password: the tags bad, the status says so in words, never the password.
    std::fs::remove_file(&trusted).unwrap();
    gw.start(secure("wrong", srv.thumbprint.as_deref())).await;
    gw.wait("the tag bad for the refused login", LONG, |l| bad_for(l, "sec.Double", Reason::ACCESS_DENIED)).await;
    let st = gw.drivers.status("sec").unwrap().snapshot();
    let err = st.last_error.unwrap_or_default();
    assert!(!st.connected, "{err}");
    assert!(err.contains("refused the session for user \"op\"") && err.contains("wrong username or password"), "{err}");
    assert!(!err.contains("wrong\"") && !err.contains("s3cret"), "{err}");
    assert!(trusted.exists(), "the configured thumbprint put the certificate in trusted/");

    // The right password, trusted by thumbprint alone.
    gw.start(secure("s3cret", srv.thumbprint.as_deref())).await;
    gw.wait("the tag good with the right password", LONG, |l| good(l, "sec.Double")).await;
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
    assert!(ok.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_stopped_server_turns_tags_bad_in_time_and_they_recover_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut srv = Server::start(port, &["--tick-ms", "100"]);
    let mut gw = TestGateway::new(Some(dir.path()));
    let tags = vec![json!({"name": "Counter", "node_id": srv.node("Counter")})];
    let (publishing, timeout) = (200, 1000);
    let limit = Duration::from_millis(2 * publishing + timeout);
    let extra = json!({"publishing_interval_ms": publishing, "timeout_ms": timeout});
    gw.start(device("ua", &srv, extra, tags)).await;
    gw.wait("the counter", LONG, |l| counter(l, "ua.Counter").is_some()).await;
    let is_bad = |l: &Latest| l.get("ua.Counter").is_some_and(|(_, q)| q.level == QualityLevel::Bad);

    // A server that goes silent (frozen: the connection stays open, nothing
    // answers) is lost within two publishing intervals plus the timeout
    // (and slack for a loaded machine), by the session keep-alive.
    signal(srv.proc.pid(), "STOP");
    let frozen = Instant::now();
    gw.wait("the tag bad once the server is silent", LONG, is_bad).await;
    let took = frozen.elapsed();
    assert!(took < limit + Duration::from_secs(2), "{took:?}");
    assert!(bad_for(&gw.latest, "ua.Counter", Reason::TIMEOUT), "{:?}", gw.latest["ua.Counter"]);
    signal(srv.proc.pid(), "CONT");
    gw.wait("the counter good again once the server answers", LONG, |l| counter(l, "ua.Counter").is_some()).await;

    // A server that stops (its connection closes) turns the tags bad at once.
    srv.proc.kill();
    let killed = Instant::now();
    gw.wait("the tag bad once the server is gone", LONG, is_bad).await;
    let took = killed.elapsed();
    assert!(took < limit + Duration::from_secs(2), "{took:?}");
    let reconnects = gw.drivers.status("ua").unwrap().snapshot().reconnects;

    // The server comes back (a new process: no old session): the driver
    // makes a new session and subscription by itself.
    let srv = Server::start(port, &["--tick-ms", "100"]);
    gw.wait("the counter good again", LONG, |l| counter(l, "ua.Counter").is_some_and(|c| c > 2)).await;
    let st = gw.drivers.status("ua").unwrap().snapshot();
    assert!(st.connected && st.reconnects > reconnects, "{st:?}");
    drop(srv);
}
