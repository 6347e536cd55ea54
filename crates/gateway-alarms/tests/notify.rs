//! Webhook notifications against a real HTTP server the test starts (axum on
//! a loopback port, recording every request and answering with the statuses
//! a test scripts), on a real bus with a WAL: signatures checked with
//! Python's `hmac` (an implementation we did not write), filtering, retries
//! in order, a dead webhook beside a live one, rejection, restart and
//! expiry; and HTTPS against Python's `http.server` behind OpenSSL, which
//! checks every signature itself. Every wait has a deadline; nothing
//! asserts on timing.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use gateway_alarms::notify::{self, NotifyConfig, NotifyMetrics};
use gateway_bench::wait_until;
use gateway_bus::{Bus, BusMetrics, BusSettings, Preset};
use gateway_model::{
    AlarmInfo, AlarmState, Batch, DataFrame, EventFrame, Frame, Quality, Secret, Severity, Span, TagId, Value, now_ns,
};
use tokio::net::TcpListener;

/// One request the peer received.
#[derive(Clone, Debug)]
struct Request {
    headers: HeaderMap,
    body: Bytes,
    status: u16,
}

impl Request {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn message(&self) -> String {
        self.json()["message"].as_str().unwrap().to_owned()
    }
}

#[derive(Default)]
struct PeerState {
    requests: Mutex<Vec<Request>>,
    /// Statuses to answer with, in order; 200 once it is empty.
    script: Mutex<VecDeque<u16>>,
}

/// A webhook receiver on a loopback port.
#[derive(Clone)]
struct Peer {
    addr: SocketAddr,
    state: Arc<PeerState>,
}

impl Peer {
    async fn start() -> Peer {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    async fn on(listener: TcpListener) -> Peer {
        let state = Arc::new(PeerState::default());
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/hook", post(hook)).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Peer { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn script(&self, statuses: &[u16]) {
        self.state.script.lock().unwrap().extend(statuses);
    }

    fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Messages of the requests answered with a 2xx, in arrival order.
    fn delivered(&self) -> Vec<String> {
        self.requests().iter().filter(|r| (200..300).contains(&r.status)).map(Request::message).collect()
    }
}

async fn hook(State(s): State<Arc<PeerState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = s.script.lock().unwrap().pop_front().unwrap_or(200);
    s.requests.lock().unwrap().push(Request { headers, body, status });
    StatusCode::from_u16(status).unwrap()
}

fn open_bus(dir: &Path) -> Bus {
    let settings = BusSettings { wal_dir: dir.join("wal"), ..Preset::LowLatency.settings() };
    Bus::open(settings, Arc::new(BusMetrics::unregistered())).unwrap()
}

/// A target with quick retries, so the tests do not wait for the defaults.
fn target(name: &str, url: &str) -> NotifyConfig {
    NotifyConfig {
        retry_initial: Span::from_millis(20),
        retry_max: Span::from_millis(200),
        timeout: Span::from_secs(2),
        min_priority: gateway_alarms::Priority::Low,
        ..NotifyConfig::new(name, url)
    }
}

/// An alarm's `raised` transition with message `msg`, of `severity`, at `ts_ns`.
fn alarm_at(msg: &str, severity: Severity, ts_ns: u64) -> Frame {
    Frame::Event(Box::new(EventFrame {
        source: "alarm".into(),
        code: "raised".into(),
        severity,
        message: msg.into(),
        tag: Some(TagId::new("boiler.t").unwrap()),
        ts_ns,
        alarm: Some(Box::new(AlarmInfo {
            id: "hot:boiler.t".into(),
            rule: "hot".into(),
            state: AlarmState::ActiveUnacked,
            value: Some(Value::F64(95.5)),
            limit: Some(Value::F64(90.0)),
            user: None,
            comment: None,
        })),
    }))
}

fn alarm(msg: &str, severity: Severity) -> Frame {
    alarm_at(msg, severity, now_ns())
}

async fn publish(bus: &Bus, frames: Vec<Frame>) {
    bus.publish(Arc::new(Batch::from(frames))).await.unwrap();
}

/// A reading, so alarm events travel among the data they are about.
fn reading(i: i64) -> Frame {
    Frame::Data(DataFrame::new(TagId::new("boiler.t").unwrap(), Value::I64(i), Quality::GOOD, now_ns()))
}

fn msgs(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The hex HMAC-SHA256 of `body` under `key`, computed by Python's `hmac`.
fn python_hmac(key: &str, body: &[u8], dir: &Path) -> String {
    let file = dir.join("body.json");
    std::fs::write(&file, body).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib, hmac, sys; print(hmac.new(sys.argv[1].encode(), open(sys.argv[2], 'rb').read(), hashlib.sha256).hexdigest())",
            key,
        ])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_carries_the_alarm_and_a_signature_python_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path());
    let peer = Peer::start().await;
    let metrics = Arc::new(NotifyMetrics::unregistered());
    let mut cfg = target("signed", &peer.url());
    cfg.secret = Some(Secret::new("s3cret-key"));
    cfg.headers.insert("Authorization".into(), Secret::new("Bearer t0ken"));
    let n = notify::spawn(&cfg, &bus, metrics.clone(), "plant-1").unwrap();

    let ts = now_ns();
    publish(&bus, vec![reading(1), alarm_at("boiler hot", Severity::Error, ts), reading(2)]).await;
    let p = peer.clone();
    wait_until(30, "the notification", move || p.delivered().len() == 1).await;

    let r = &peer.requests()[0];
    let sig = r.headers["x-edge-gateway-signature"].to_str().unwrap();
    assert_eq!(sig, format!("sha256={}", python_hmac("s3cret-key", &r.body, dir.path())));
    assert_eq!(r.headers["authorization"], "Bearer t0ken");
    assert_eq!(r.headers["content-type"], "application/json");
    let sent_at: u64 = r.headers["x-edge-gateway-timestamp"].to_str().unwrap().parse().unwrap();
    assert!(sent_at >= ts / 1_000_000_000);
    let delivery: u64 = r.headers["x-edge-gateway-delivery"].to_str().unwrap().parse().unwrap();
    assert_eq!(delivery, 1, "the event's bus sequence number (the reading before it is 0)");
    assert_eq!(
        r.json(),
        serde_json::json!({
            "gateway": "plant-1", "id": "hot:boiler.t", "rule": "hot", "tag": "boiler.t", "event": "raised",
            "state": "active_unacked", "priority": "high", "value": 95.5, "limit": 90.0, "user": null,
            "comment": null, "message": "boiler hot", "ts": gateway_model::format_rfc3339_ns(ts)
        })
    );
    assert_eq!(metrics.sent_of("signed"), 1);
    assert_eq!(metrics.failed_of("signed"), 0);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_alarms_at_or_above_the_minimum_priority_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path());
    let peer = Peer::start().await;
    let metrics = Arc::new(NotifyMetrics::unregistered());
    let cfg = NotifyConfig { min_priority: gateway_alarms::Priority::High, ..target("high", &peer.url()) };
    let n = notify::spawn(&cfg, &bus, metrics.clone(), "gw").unwrap();

    let not_an_alarm = Frame::Event(Box::new(EventFrame {
        source: "system".into(),
        code: "device_down".into(),
        severity: Severity::Critical,
        message: "not an alarm".into(),
        tag: None,
        ts_ns: now_ns(),
        alarm: None,
    }));
    publish(
        &bus,
        vec![
            alarm("low", Severity::Info),
            alarm("medium", Severity::Warning),
            not_an_alarm,
            alarm("high", Severity::Error),
            reading(1),
            alarm("critical", Severity::Critical),
            alarm("medium again", Severity::Warning),
        ],
    )
    .await;
    // A last one, so that once it arrives everything before it was decided.
    publish(&bus, vec![alarm("last", Severity::Error)]).await;
    let p = peer.clone();
    wait_until(30, "the last notification", move || p.delivered().last().is_some_and(|m| m == "last")).await;
    assert_eq!(peer.delivered(), ["high", "critical", "last"]);
    assert_eq!(peer.requests()[1].json()["priority"], "critical");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_every_notification_arrives_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path());
    let peer = Peer::start().await;
    peer.script(&[503, 503, 500, 429, 408]);
    let metrics = Arc::new(NotifyMetrics::unregistered());
    let n = notify::spawn(&target("flaky", &peer.url()), &bus, metrics.clone(), "gw").unwrap();

    let want = msgs("a", 20);
    for chunk in want.chunks(3) {
        let mut frames: Vec<Frame> = chunk.iter().map(|m| alarm(m, Severity::Error)).collect();
        frames.push(reading(0));
        publish(&bus, frames).await;
    }
    let p = peer.clone();
    wait_until(30, "every notification", move || p.delivered().len() >= 20).await;
    assert_eq!(peer.delivered(), want, "nothing lost, nothing twice, in order");
    let first: Vec<String> = peer.requests().iter().take(6).map(Request::message).collect();
    assert_eq!(first, ["a0"; 6], "the first one is retried until accepted, the rest wait");
    assert_eq!(metrics.failed_of("flaky"), 5);
    assert_eq!(metrics.sent_of("flaky"), 20);
    assert_eq!(metrics.dropped_of("flaky", "rejected"), 0);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_is_retried_without_holding_up_another_target_or_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path());
    let live = Peer::start().await;
    // A port with nothing listening on it, until the end of the test.
    let dead_addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let metrics = Arc::new(NotifyMetrics::unregistered());
    let dead =
        notify::spawn(&target("dead", &format!("http://{dead_addr}/hook")), &bus, metrics.clone(), "gw").unwrap();
    let alive = notify::spawn(&target("alive", &live.url()), &bus, metrics.clone(), "gw").unwrap();

    let want = msgs("d", 10);
    for m in &want {
        // Readings alongside: publishing must go on while a target is stuck.
        let mut frames: Vec<Frame> = (0..500).map(reading).collect();
        frames.push(alarm(m, Severity::Critical));
        publish(&bus, frames).await;
    }
    let p = live.clone();
    wait_until(30, "the live target to receive everything", move || p.delivered().len() == 10).await;
    assert_eq!(live.delivered(), want);
    let m = metrics.clone();
    wait_until(30, "the dead target to retry", move || m.failed_of("dead") >= 3).await;
    assert_eq!(metrics.sent_of("dead"), 0);
    assert!(dead.is_running());
    let backlog = |t: &str| metrics.backlog.get_or_create(&notify::TargetLabel { target: t.into() }).get();
    assert!(backlog("dead") > 0, "the stuck target reports its backlog");

    // The webhook comes back: the dead target delivers its backlog in order.
    let back = Peer::on(TcpListener::bind(dead_addr).await.unwrap()).await;
    let p = back.clone();
    wait_until(30, "the returning webhook to receive everything", move || p.delivered().len() == 10).await;
    assert_eq!(back.delivered(), want);
    assert_eq!(metrics.sent_of("dead"), 10);
    dead.stop().await;
    alive.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_error_is_counted_as_rejected_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path());
    let peer = Peer::start().await;
    peer.script(&[400]);
    let metrics = Arc::new(NotifyMetrics::unregistered());
    let n = notify::spawn(&target("strict", &peer.url()), &bus, metrics.clone(), "gw").unwrap();

    publish(&bus, vec![alarm("refused", Severity::Error), alarm("accepted", Severity::Error)]).await;
    let p = peer.clone();
    wait_until(30, "the second notification", move || p.delivered().len() == 1).await;
    let seen: Vec<String> = peer.requests().iter().map(Request::message).collect();
    assert_eq!(seen, ["refused", "accepted"], "the refused one is not sent again");
    assert_eq!(peer.delivered(), ["accepted"]);
    assert_eq!(metrics.dropped_of("strict", "rejected"), 1);
    assert_eq!(metrics.failed_of("strict"), 1);
    assert_eq!(metrics.sent_of("strict"), 1);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_notifications_published_meanwhile_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start().await;
    let metrics = Arc::new(NotifyMetrics::unregistered());
    let cfg = target("durable", &peer.url());
    {
        let bus = open_bus(dir.path());
        let n = notify::spawn(&cfg, &bus, metrics.clone(), "gw").unwrap();
        publish(&bus, vec![alarm("before", Severity::Error)]).await;
        let p = peer.clone();
        wait_until(30, "the first notification", move || p.delivered().len() == 1).await;
        n.stop().await;
        // While the notifier is down, alarms go on.
        publish(&bus, vec![alarm("while stopped 1", Severity::Error), reading(1)]).await;
        publish(&bus, vec![alarm("while stopped 2", Severity::Critical)]).await;
        bus.close().await.unwrap();
    }
    // The gateway starts again on the same WAL.
    let bus = open_bus(dir.path());
    let n = notify::spawn(&cfg, &bus, metrics.clone(), "gw").unwrap();
    publish(&bus, vec![alarm("after", Severity::Error)]).await;
    let p = peer.clone();
    wait_until(30, "the notifications after the restart", move || p.delivered().len() == 4).await;
    assert_eq!(peer.delivered(), ["before", "while stopped 1", "while stopped 2", "after"]);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_older_than_max_age_is_given_up_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path());
    let peer = Peer::start().await;
    let metrics = Arc::new(NotifyMetrics::unregistered());
    let cfg = NotifyConfig { max_age: Span::from_secs(3600), ..target("aging", &peer.url()) };
    let n = notify::spawn(&cfg, &bus, metrics.clone(), "gw").unwrap();

    let two_hours_ago = now_ns() - 2 * 3600 * 1_000_000_000;
    publish(&bus, vec![alarm_at("stale", Severity::Error, two_hours_ago), alarm("fresh", Severity::Error)]).await;
    let p = peer.clone();
    wait_until(30, "the fresh notification", move || p.delivered().len() == 1).await;
    assert_eq!(peer.delivered(), ["fresh"]);
    assert_eq!(peer.requests().len(), 1, "the stale one was never sent");
    assert_eq!(metrics.dropped_of("aging", "expired"), 1);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_that_keeps_failing_is_given_up_once_older_than_max_age_and_the_next_goes_out() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path());
    let peer = Peer::start().await;
    // The webhook fails for good; a second after the event it is given up.
    peer.script(&[503; 1000]);
    let metrics = Arc::new(NotifyMetrics::unregistered());
    let cfg = NotifyConfig { max_age: Span::from_secs(1), ..target("expiring", &peer.url()) };
    let n = notify::spawn(&cfg, &bus, metrics.clone(), "gw").unwrap();
    publish(&bus, vec![alarm("doomed", Severity::Error)]).await;
    let m = metrics.clone();
    wait_until(30, "the failing notification to expire", move || m.dropped_of("expiring", "expired") == 1).await;
    assert!(metrics.failed_of("expiring") >= 1);
    assert_eq!(metrics.sent_of("expiring"), 0);

    // The webhook recovers: the next alarm is not stuck behind the expired one.
    peer.state.script.lock().unwrap().clear();
    publish(&bus, vec![alarm("next", Severity::Error)]).await;
    let p = peer.clone();
    wait_until(30, "the next notification", move || p.delivered().len() == 1).await;
    assert_eq!(peer.delivered(), ["next"]);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_target_is_refused_with_its_field_and_a_disabled_one_does_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path());
    let metrics = Arc::new(NotifyMetrics::unregistered());
    let e = notify::spawn(&target("x", "ftp://h/"), &bus, metrics.clone(), "gw").unwrap_err();
    assert!(e.to_string().starts_with("url:"), "{e}");
    let cfg = NotifyConfig { enabled: false, ..target("off", "http://127.0.0.1:9/") };
    let n = notify::spawn(&cfg, &bus, metrics.clone(), "gw").unwrap();
    assert!(!n.is_running());
    assert!(!bus.subscriber_names().iter().any(|s| s == "alarm-notify-off"));
    let on = notify::spawn(&target("on", "http://127.0.0.1:9/"), &bus, metrics, "gw").unwrap();
    assert!(bus.subscriber_names().iter().any(|s| s == "alarm-notify-on"));
    on.stop().await;
    n.stop().await;
}

/// A CA and a certificate for 127.0.0.1 it signs, as PEM files in `dir`.
fn make_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(DnType::CommonName, "edge-gateway test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// Python's `http.server` behind its `ssl` (OpenSSL): HTTP/1.1 keep-alive,
/// checks each request's signature with `hmac` and prints one JSON line per
/// request: whether the signature matched, and the body.
const PYTHON_HTTPS_PEER: &str = r#"
import hashlib, hmac, http.server, json, ssl, sys
cert, key, secret = sys.argv[1], sys.argv[2], sys.argv[3].encode()
class Hook(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, self.headers.get("X-Edge-Gateway-Signature", ""))
        print(json.dumps({"sig_ok": ok, "body": body.decode()}), flush=True)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), Hook)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_notifications_reach_a_python_peer_that_verifies_each_signature() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let mut child = KillOnDrop(
        std::process::Command::new("python3")
            .args(["-c", PYTHON_HTTPS_PEER])
            .arg(dir.path().join("server.pem"))
            .arg(dir.path().join("server.key"))
            .arg("tls-s3cret")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs"),
    );
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    let port: u16 = tokio::task::block_in_place(|| lines.next().unwrap().unwrap()).trim().parse().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            s.lock().unwrap().push(serde_json::from_str(&l).unwrap());
        }
    });

    let bus = open_bus(dir.path());
    let metrics = Arc::new(NotifyMetrics::unregistered());
    let cfg = NotifyConfig {
        secret: Some(Secret::new("tls-s3cret")),
        ca_file: Some(dir.path().join("ca.pem")),
        ..target("tls", &format!("https://127.0.0.1:{port}/hook"))
    };
    let n = notify::spawn(&cfg, &bus, metrics.clone(), "gw").unwrap();
    let want = msgs("t", 5);
    for m in &want {
        publish(&bus, vec![alarm(m, Severity::Error)]).await;
    }
    let s = seen.clone();
    wait_until(30, "the python peer to receive everything", move || s.lock().unwrap().len() == 5).await;
    let got = seen.lock().unwrap().clone();
    assert!(got.iter().all(|r| r["sig_ok"] == true), "{got:?}");
    let got: Vec<String> = got
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(r["body"].as_str().unwrap()).unwrap()["message"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(metrics.sent_of("tls"), 5);
    assert_eq!(metrics.failed_of("tls"), 0, "keep-alive reuse works with a server we did not write");
    n.stop().await;
}

/// The peer process, ended even when an assertion fails first.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
