//! The accept loop over real sockets: connections that never finish their
//! headers or never read their answers are closed, connections over the cap
//! wait without starving anyone, hyper's own error answers are JSON, and
//! HTTPS (with and without client certificates) against `curl`, with
//! certificates the test makes. Deadlines are generous: they catch a
//! connection that is never closed, not a slow machine.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Env, default_devices, env_with};
use gateway_api::{ApiConfig, TlsConfig};
use gateway_bench::wait_until;
use serde_json::Value;

async fn serve(env: &Env) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway_api::serve(listener, env.state.clone(), std::future::pending()));
    addr
}

fn quick(cfg: ApiConfig) -> ApiConfig {
    ApiConfig { header_read_timeout_s: 1, idle_timeout_s: 1, ..cfg }
}

/// Sends `bytes` and reads the answer until the server closes (at most 60 s).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> (u16, String, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(bytes).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())))
}

/// Whether the server closed `s` within 60 s.
fn closed_by_server(s: &mut TcpStream) -> bool {
    gateway_bench::closed_by_peer(s, 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_their_headers_are_closed_after_the_header_timeout() {
    let env = env_with(ApiConfig { header_read_timeout_s: 1, ..ApiConfig::default() }, default_devices()).await;
    let addr = serve(&env).await;
    let closed = tokio::task::spawn_blocking(move || {
        let mut partial: Vec<TcpStream> = (0..5)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /api/v1/system/health HTTP/1.1\r\nHost: loc").unwrap();
                s
            })
            .collect();
        // A keep-alive connection idle after its first answer is closed the same way.
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.write_all(b"GET /api/v1/system/health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut first = [0u8; 16];
        idle.read_exact(&mut first).unwrap();
        assert_eq!(&first[..12], b"HTTP/1.1 200");
        partial.push(idle);
        partial.iter_mut().all(closed_by_server)
    })
    .await
    .unwrap();
    assert!(closed, "a connection was left open");
    wait_until(30, "the connections to be counted closed", || env.state.metrics().http_connections.get() == 0).await;
    assert!(header_timeouts(&env) >= 6, "{}", header_timeouts(&env));
}

fn header_timeouts(env: &Env) -> u64 {
    use gateway_api::metrics::{TimeoutKind, TimeoutLabels};
    env.state.metrics().http_connection_timeouts.get_or_create(&TimeoutLabels { kind: TimeoutKind::Header }).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_answers_is_closed_after_the_idle_timeout() {
    let devices = vec![serde_json::json!({"name": "load", "driver": "sim", "poll_interval_ms": 50,
                                          "generate": {"count": 2000, "signal": "sine"}})];
    let env = env_with(quick(ApiConfig { header_read_timeout_s: 300, ..ApiConfig::default() }), devices).await;
    wait_until(10, "values", || env.cache.len() >= 2000).await;
    let addr = serve(&env).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    // Far more answer (~150 KB each) than the socket buffers hold, never read.
    let req = "GET /api/v1/values HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(200);
    tokio::io::AsyncWriteExt::write_all(&mut stream, req.as_bytes()).await.unwrap();
    wait_until(5, "the connection to be open", || env.state.metrics().http_connections.get() == 1).await;
    wait_until(60, "the connection to be closed", || env.state.metrics().http_connections.get() == 0).await;
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_and_the_gateway_keeps_answering() {
    let env = env_with(
        quick(ApiConfig { max_connections: 4, ws_max_connections: 4, ..ApiConfig::default() }),
        default_devices(),
    )
    .await;
    let addr = serve(&env).await;
    let metrics_env = env.state.clone();
    let most = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let m = most.clone();
    let sampler = tokio::spawn(async move {
        loop {
            m.fetch_max(metrics_env.metrics().http_connections.get(), std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let (answer, all_closed) = tokio::task::spawn_blocking(move || {
        let mut flood: Vec<TcpStream> = (0..20)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: loc").unwrap();
                s
            })
            .collect();
        // Behind the flood in the queue, an ordinary request still gets its answer.
        let answer =
            exchange(addr, b"GET /api/v1/system/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        (answer, flood.iter_mut().all(closed_by_server))
    })
    .await
    .unwrap();
    sampler.abort();
    assert_eq!(answer.0, 200, "{answer:?}");
    assert!(all_closed, "a flood connection was never closed");
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..=4).contains(&most), "{most} connections open at once, over the cap of 4");
    assert_eq!(env.state.metrics().http_connection_limit.get(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_are_answered_with_json_errors() {
    let env = env_with(ApiConfig { request_timeout_s: 3600, ..ApiConfig::default() }, default_devices()).await;
    let addr = serve(&env).await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            format!("GET /api/v1/values/{} HTTP/1.1\r\nHost: localhost\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
            "uri_too_long",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "b".repeat(120_000)).into_bytes(),
            431,
            "headers_too_large",
        ),
        (b"GET /api/v1/devices/\xff\xfe HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(), 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), 400, "bad_request"),
        // A huge declared body, never sent: 413 at once, not after request_timeout_s.
        (
            b"POST /api/v1/commands HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\nConnection: close\r\n\r\n".to_vec(),
            413,
            "payload_too_large",
        ),
    ];
    for (bytes, status, code) in cases {
        let (s, head, body) = tokio::task::spawn_blocking(move || exchange(addr, &bytes)).await.unwrap();
        assert_eq!(s, status, "{head}\n{body}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
}

/// The server's side of `make_certificates`' files; with `client_ca`, only
/// clients with a certificate that CA signed get in.
fn server_tls(dir: &Path, client_ca: bool) -> TlsConfig {
    TlsConfig {
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server.key"),
        client_ca_file: client_ca.then(|| dir.join("ca.pem")),
    }
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client
/// certificate it signs, as PEM files in `dir`.
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
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, file: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.extended_key_usages = vec![usage];
        p.distinguished_name.push(DnType::CommonName, file);
        let cert = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    };
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    leaf(vec!["localhost".into(), "127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth, "server");
    leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, "client");
}

/// `curl` against `url`: exit status and what it printed.
fn curl(dir: &Path, url: &str, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(dir.join("ca.pem"))
        .args(extra)
        .arg(url)
        .current_dir(dir)
        .output()
        .expect("curl is installed (scripts/setup-test-peers)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_curl_with_a_certificate_the_test_made() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let tls = server_tls(dir.path(), false);
    let env = env_with(quick(ApiConfig { tls: Some(tls), ..ApiConfig::default() }), default_devices()).await;
    let addr = serve(&env).await;
    let d = dir.path().to_owned();
    let (code, text) = tokio::task::spawn_blocking(move || {
        curl(&d, &format!("https://127.0.0.1:{}/api/v1/system/health", addr.port()), &[])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "ok");
    // Plain HTTP to the TLS port gets no answer; a client that never starts
    // the handshake is closed after the header timeout.
    let (code, _) = tokio::task::spawn_blocking(move || {
        let mut silent = TcpStream::connect(addr).unwrap();
        assert!(closed_by_server(&mut silent), "a silent TLS client was left open");
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30"])
            .arg(format!("http://127.0.0.1:{}/", addr.port()))
            .output()
            .unwrap();
        (out.status.code(), ())
    })
    .await
    .unwrap();
    assert_ne!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let tls = server_tls(dir.path(), true);
    let env = env_with(ApiConfig { tls: Some(tls), ..ApiConfig::default() }, default_devices()).await;
    let addr = serve(&env).await;
    let d = dir.path().to_owned();
    let url = format!("https://localhost:{}/api/v1/system/health", addr.port());
    let (without, with) = tokio::task::spawn_blocking(move || {
        (curl(&d, &url, &[]), curl(&d, &url, &["--cert", "client.pem", "--key", "client.key"]))
    })
    .await
    .unwrap();
    assert_ne!(without.0, Some(0), "a client without a certificate got in: {}", without.1);
    assert!(!without.1.contains("\"status\""), "{}", without.1);
    assert_eq!(with.0, Some(0), "{}", with.1);
    assert_eq!(serde_json::from_str::<Value>(&with.1).unwrap()["status"], "ok");
    assert!(env.state.metrics().http_tls_failures.get() >= 1);
}

#[test]
fn tls_files_that_are_missing_or_wrong_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let p = |f: &str| dir.path().join(f);
    let check = |tls: TlsConfig| ApiConfig { tls: Some(tls), ..ApiConfig::default() }.validate().unwrap_err();
    let e = check(TlsConfig { cert_file: p("nope.pem"), key_file: p("server.key"), client_ca_file: None });
    assert_eq!(e.path, "tls.cert_file", "{e}");
    assert!(e.message.contains("nope.pem"), "{e}");
    let e = check(TlsConfig { cert_file: p("server.key"), key_file: p("server.key"), client_ca_file: None });
    assert_eq!(e.path, "tls.cert_file", "{e}");
    let e = check(TlsConfig { cert_file: p("server.pem"), key_file: p("client.key"), client_ca_file: None });
    assert_eq!(e.path, "tls.key_file", "a key that does not match: {e}");
    let e = check(TlsConfig { cert_file: p("server.pem"), key_file: p("server.pem"), client_ca_file: None });
    assert_eq!(e.path, "tls.key_file", "{e}");
    let e = check(TlsConfig { cert_file: p("server.pem"), key_file: p("server.key"), client_ca_file: Some(p("x")) });
    assert_eq!(e.path, "tls.client_ca_file", "{e}");
    let ok = TlsConfig { cert_file: p("server.pem"), key_file: p("server.key"), client_ca_file: Some(p("ca.pem")) };
    ApiConfig { tls: Some(ok), ..ApiConfig::default() }.validate().unwrap();
}

/// Over TLS the hub cannot write to the socket itself (the bytes must be
/// encrypted): its frames go through the TLS stream. A client over `wss`
/// subscribes, gets its snapshot and then live updates, and a WebSocket
/// ping of its own is answered with a pong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_over_tls_get_their_snapshot_updates_and_pongs() {
    use futures_util::{SinkExt, StreamExt};
    use rustls::pki_types::pem::PemObject;
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let tls = server_tls(dir.path(), false);
    let env = env_with(ApiConfig { tls: Some(tls), ..ApiConfig::default() }, default_devices()).await;
    let addr = serve(&env).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(dir.path().join("ca.pem")).unwrap()).unwrap();
    let client =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client)).connect(name, tcp).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/ws", addr.port()), stream).await.unwrap();

    let next = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| -> Message {
        tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a message in time").unwrap().unwrap()
    };
    ws.send(Message::Text(r#"{"type":"subscribe","patterns":["*"]}"#.into())).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        if let Message::Text(t) = next(&mut ws).await {
            let v: Value = serde_json::from_str(&t).unwrap();
            seen.push((v["type"].as_str().unwrap_or("").to_owned(), v["snapshot"] == true));
        }
    }
    assert_eq!(seen[0].0, "subscribed", "{seen:?}");
    assert_eq!(seen[1], ("update".to_owned(), true), "{seen:?}");
    assert!(seen[2..].iter().all(|(t, snap)| t == "update" && !snap), "live updates follow: {seen:?}");
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    loop {
        if let Message::Pong(p) = next(&mut ws).await {
            assert_eq!(&p[..], b"are you there");
            break;
        }
    }
    ws.close(None).await.unwrap();
    wait_until(10, "the connection to end", || env.state.ws().connections() == 0).await;
}
