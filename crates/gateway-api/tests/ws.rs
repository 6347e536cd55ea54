//! The WebSocket endpoint over a real socket: subscriptions and pushed
//! updates, ping/pong, errors, the connection limit, the heartbeat timeout,
//! a slow client that loses updates without slowing anyone else, the
//! pattern caps, and clients that stop reading.

mod common;

use std::time::{Duration, Instant};

use common::{Env, default_devices, env_with};
use futures_util::{SinkExt, StreamExt};
use gateway_api::ApiConfig;
use gateway_bench::wait_until;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn serve(env: &Env) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = env.state.clone();
    tokio::spawn(gateway_api::serve(listener, state, std::future::pending()));
    addr
}

async fn connect(addr: std::net::SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap().0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON text message (skipping pings), within 10 s.
async fn next_json(ws: &mut Ws) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

/// The code of the close frame the gateway sends within 10 s (other
/// messages are skipped); a close without a frame fails the test.
async fn close_code(ws: &mut Ws) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => panic!("closed without a close code"),
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn subscribers_get_a_snapshot_then_only_matching_updates() {
    let env = env_with(ApiConfig::default(), default_devices()).await;
    let addr = serve(&env).await;
    // Let the cache see a value first, so the snapshot is not empty.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ws = connect(addr).await;
    send(&mut ws, json!({"type": "subscribe", "patterns": ["line1.temp*"]})).await;
    let m = next_json(&mut ws).await;
    assert_eq!(m, json!({"type": "subscribed", "patterns": ["line1.temp*"]}));
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["snapshot"], true);
    assert_eq!(snap["values"][0]["tag"], "line1.temperature");
    for _ in 0..5 {
        let u = next_json(&mut ws).await;
        assert_eq!(u["type"], "update");
        for v in u["values"].as_array().unwrap() {
            assert_eq!(v["tag"], "line1.temperature", "only matching tags: {u}");
            assert_eq!(v["quality"], "good");
        }
    }
    send(&mut ws, json!({"type": "ping", "id": 7})).await;
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "pong" {
            assert_eq!(m["id"], 7);
            break;
        }
    }
    // A WebSocket-level ping is answered by the library, through the same queue.
    ws.send(Message::Ping(b"p1".to_vec().into())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a pong in time") {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"p1");
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
    send(&mut ws, json!({"type": "subscribe", "patterns": ["bad pattern"]})).await;
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "error" {
            assert_eq!(m["code"], "invalid_pattern");
            break;
        }
    }
    send(&mut ws, json!({"type": "shout"})).await;
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "error" {
            assert_eq!(m["code"], "invalid_message");
            break;
        }
    }
    send(&mut ws, json!({"type": "unsubscribe"})).await;
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "unsubscribed" {
            assert_eq!(m["patterns"], json!([]));
            break;
        }
    }
    // Nothing more arrives once unsubscribed (updates already queued may drain first).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "update" {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "an update arrived after unsubscribe: {quiet:?}");
}

#[tokio::test]
async fn the_connection_after_the_limit_is_refused_with_503() {
    let env = env_with(ApiConfig { ws_max_connections: 2, ..ApiConfig::default() }, default_devices()).await;
    let addr = serve(&env).await;
    let _a = connect(addr).await;
    let b = connect(addr).await;
    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_connections");
        }
        other => panic!("expected a 503, got {:?}", other.map(|_| ())),
    }
    // A slot frees when a client leaves.
    drop(b);
    wait_until(5, "the slot to be freed", || env.state.ws().connections() <= 1).await;
    let _c = connect(addr).await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_heartbeat_timeout() {
    let cfg = ApiConfig { ws_heartbeat_timeout_s: 1, ws_cleanup_interval_s: 1, ..ApiConfig::default() };
    let env = env_with(cfg, default_devices()).await;
    let addr = serve(&env).await;
    let mut ws = connect(addr).await;
    // Say nothing and read nothing (so no pong goes back) for a while.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(close_code(&mut ws).await, 4008);
    assert_eq!(env.state.ws().connections(), 0);
}

#[tokio::test]
async fn a_slow_client_loses_updates_and_the_others_do_not_wait_for_it() {
    // The slow client reads nothing for a while; the send timeout must not end it first.
    let cfg = ApiConfig { ws_queue: 2, ws_push_interval_ms: 5, ws_send_timeout_s: 600, ..ApiConfig::default() };
    let devices = vec![json!({"name": "load", "driver": "sim", "poll_interval_ms": 5,
                              "generate": {"count": 3000, "signal": "sine"}})];
    let env = env_with(cfg, devices).await;
    let addr = serve(&env).await;
    let mut slow = connect(addr).await;
    let mut fast = connect(addr).await;
    send(&mut slow, json!({"type": "subscribe", "patterns": ["*"]})).await;
    send(&mut fast, json!({"type": "subscribe", "patterns": ["*"]})).await;
    // The fast client keeps reading while the slow one reads nothing. Were the
    // hub to wait for the slow client (whose queue holds 2 updates), the fast
    // one would see at most a few updates before stalling for good; the
    // deadline is generous so a loaded machine cannot fail this, only a stall.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut fast_updates = 0;
    while fast_updates < 50 || env.state.metrics().ws_dropped.get() == 0 {
        assert!(Instant::now() < deadline, "the fast client was held back: {fast_updates} updates in 60 s");
        if next_json(&mut fast).await["type"] == "update" {
            fast_updates += 1;
        }
    }
    // Now the slow client reads: it is told how many updates it lost.
    let mut dropped = None;
    for _ in 0..10_000 {
        let m = next_json(&mut slow).await;
        if m["type"] == "dropped" {
            dropped = m["updates"].as_u64();
            break;
        }
    }
    assert!(dropped.is_some_and(|d| d > 0), "the slow client was not told about its losses");
    assert!(env.state.metrics().ws_dropped.get() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_after_a_quiet_interval_goes_out_at_once_and_what_follows_is_coalesced() {
    use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value as V, now_ns};
    // The longest interval allowed: a hub that waited for its next tick would
    // hold the first value for up to 10 s, far past the 3 s it is given here.
    let cfg = ApiConfig { ws_push_interval_ms: 10_000, ..ApiConfig::default() };
    let env = env_with(cfg, Vec::new()).await;
    let addr = serve(&env).await;
    let publish = |v: f64| {
        let bus = env.bus.clone();
        async move {
            let f = DataFrame::new(TagId::new("probe.x").unwrap(), V::F64(v), Quality::GOOD, now_ns());
            bus.publish(std::sync::Arc::new(Batch::from(vec![Frame::Data(f)]))).await.unwrap();
        }
    };
    let mut ws = connect(addr).await;
    send(&mut ws, json!({"type": "subscribe", "patterns": ["probe.*"]})).await;
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    assert_eq!(next_json(&mut ws).await["snapshot"], true);
    publish(1.0).await;
    let first = tokio::time::timeout(Duration::from_secs(3), next_json(&mut ws))
        .await
        .expect("the first change after a quiet interval was held back");
    assert_eq!(first["values"][0]["tag"], "probe.x", "{first}");
    assert_eq!(first["values"][0]["value"], 1.0);
    // Two more within the interval: one push, at the end of it, with the newest.
    publish(2.0).await;
    publish(3.0).await;
    // (read without next_json's 10 s limit: this one comes a whole interval later)
    let next = loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("the coalesced update") {
            Some(Ok(Message::Text(t))) => break serde_json::from_str::<Value>(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    };
    assert_eq!(next["type"], "update");
    assert_eq!(next["values"].as_array().map(Vec::len), Some(1), "{next}");
    assert_eq!(next["values"][0]["value"], 3.0);
}

#[tokio::test]
async fn a_client_message_over_the_size_limit_ends_the_connection() {
    let env = env_with(ApiConfig::default(), default_devices()).await;
    let addr = serve(&env).await;
    let mut ws = connect(addr).await;
    // Just under the limit: an ordinary reply.
    let id = "x".repeat(gateway_api::routes::WS_MAX_MESSAGE - 100);
    send(&mut ws, json!({"type": "ping", "id": id})).await;
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "pong" {
            assert_eq!(m["id"].as_str().map(str::len), Some(id.len()));
            break;
        }
    }
    // Over it: the gateway hangs up rather than buffer it, and never answers.
    let id = "x".repeat(gateway_api::routes::WS_MAX_MESSAGE + 1);
    let _ = ws.send(Message::Text(json!({"type": "ping", "id": id}).to_string().into())).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await.expect("the gateway ends the connection in time") {
            Some(Ok(Message::Text(t))) => assert!(!t.contains("pong"), "an oversized message was answered"),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }
    // Others are unaffected.
    let mut other = connect(addr).await;
    send(&mut other, json!({"type": "ping", "id": 1})).await;
    loop {
        if next_json(&mut other).await["type"] == "pong" {
            break;
        }
    }
}

/// `count` simulated tags `load.g0..`, updated every 5 ms.
fn load_device(count: u32) -> Vec<Value> {
    vec![json!({"name": "load", "driver": "sim", "poll_interval_ms": 5,
                "generate": {"count": count, "signal": "sine"}})]
}

#[tokio::test]
async fn duplicate_patterns_are_merged_into_one_subscription_and_one_snapshot() {
    let env = env_with(ApiConfig { ws_max_patterns: 8, ..ApiConfig::default() }, load_device(1000)).await;
    let addr = serve(&env).await;
    wait_until(10, "every tag to have a value", || env.cache.len() >= 1000).await;
    let mut ws = connect(addr).await;
    // The probe that took the gateway to 1.3 GiB: 16,000 copies of `*`.
    let stars = vec!["*"; 16_000];
    send(&mut ws, json!({"type": "subscribe", "patterns": stars})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "subscribed", "patterns": ["*"]}));
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["snapshot"], true);
    let tags: Vec<&str> = snap["values"].as_array().unwrap().iter().map(|v| v["tag"].as_str().unwrap()).collect();
    let distinct: std::collections::BTreeSet<&str> = tags.iter().copied().collect();
    assert_eq!((tags.len(), distinct.len()), (1000, 1000), "each tag once");

    // Distinct patterns beyond ws_max_patterns are refused whole.
    let many: Vec<String> = (0..8).map(|i| format!("load.g{i}*")).collect();
    send(&mut ws, json!({"type": "subscribe", "patterns": many})).await;
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "error" {
            assert_eq!(m["code"], "too_many_patterns", "{m}");
            assert!(m["message"].as_str().unwrap().contains("at most 8"), "{m}");
            break;
        }
        assert_ne!(m["type"], "subscribed", "{m}");
    }
    send(&mut ws, json!({"type": "subscribe", "patterns": ["load.g1", "load.g1", "load.g2"]})).await;
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "subscribed" {
            assert_eq!(m["patterns"], json!(["*", "load.g1", "load.g2"]));
            break;
        }
    }
}

/// A WebSocket client whose socket takes almost nothing: its receive buffer
/// is tiny and it never reads, so the gateway's sends to it block.
async fn deaf_client(addr: std::net::SocketAddr, patterns: &[&str]) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    send(&mut ws, json!({"type": "subscribe", "patterns": patterns})).await;
    ws
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_by_the_send_timeout_and_frees_its_slot() {
    let cfg = ApiConfig {
        ws_send_timeout_s: 1,
        ws_heartbeat_timeout_s: 3600,
        ws_cleanup_interval_s: 600,
        ws_max_connections: 1,
        ..ApiConfig::default()
    };
    let env = env_with(cfg, load_device(3000)).await;
    let addr = serve(&env).await;
    let _deaf = deaf_client(addr, &["*"]).await;
    wait_until(5, "the client to hold the slot", || env.state.ws().connections() == 1).await;
    wait_until(60, "the deaf client to be closed", || env.state.ws().connections() == 0).await;
    // Its slot serves the next client.
    let mut ws = connect(addr).await;
    send(&mut ws, json!({"type": "ping", "id": 1})).await;
    while next_json(&mut ws).await["type"] != "pong" {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_asking_without_reading_the_replies_is_closed() {
    // Neither the send timeout nor the heartbeat may end it: only the bound
    // on replies waiting for it.
    let cfg = ApiConfig {
        ws_send_timeout_s: 3600,
        ws_heartbeat_timeout_s: 3600,
        ws_cleanup_interval_s: 600,
        ..ApiConfig::default()
    };
    let env = env_with(cfg, Vec::new()).await;
    let addr = serve(&env).await;
    let mut deaf = deaf_client(addr, &["nothing.*"]).await;
    wait_until(5, "the client to hold a slot", || env.state.ws().connections() == 1).await;
    // Pongs pile up in the socket's buffers, then in the gateway's short
    // queue; past it the gateway hangs up (our writes then fail).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0u64;
    while env.state.ws().connections() == 1 {
        assert!(Instant::now() < deadline, "still connected after {sent} unread pings");
        let ping = Message::Text(json!({"type": "ping", "id": sent}).to_string().into());
        match tokio::time::timeout(Duration::from_secs(5), deaf.send(ping)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break,
            Err(_) => {} // our own send buffer is full: the gateway stopped reading
        }
    }
    wait_until(10, "the flooding client to be closed", || env.state.ws().connections() == 0).await;
    // Others are unaffected.
    let mut ws = connect(addr).await;
    send(&mut ws, json!({"type": "ping", "id": 1})).await;
    while next_json(&mut ws).await["type"] != "pong" {}
}

#[tokio::test]
async fn the_heartbeat_closes_a_silent_client_even_while_a_send_to_it_is_stuck() {
    let cfg = ApiConfig {
        ws_send_timeout_s: 3600,
        ws_heartbeat_timeout_s: 2,
        ws_cleanup_interval_s: 1,
        ..ApiConfig::default()
    };
    let env = env_with(cfg, load_device(3000)).await;
    let addr = serve(&env).await;
    let _deaf = deaf_client(addr, &["*"]).await;
    wait_until(5, "the client to hold a slot", || env.state.ws().connections() == 1).await;
    wait_until(60, "the silent client to be closed", || env.state.ws().connections() == 0).await;
}

#[tokio::test]
async fn at_shutdown_every_client_is_told_the_gateway_is_going_away() {
    let env = env_with(ApiConfig::default(), default_devices()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway_api::serve(listener, env.state.clone(), async move {
        let _ = stopped.await;
    }));
    let mut ws = connect(addr).await;
    wait_until(5, "the client to hold a slot", || env.state.ws().connections() == 1).await;
    stop.send(()).unwrap();
    assert_eq!(close_code(&mut ws).await, 1001);
    tokio::time::timeout(Duration::from_secs(30), server).await.expect("the server returns").unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_subscribers_get_the_active_alarms_then_every_transition_in_order() {
    use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value as V, now_ns};
    let env = env_with(ApiConfig::default(), Vec::new()).await;
    let rule = json!({"name": "hot", "tag": "tank.t", "kind": "high", "limit": 50});
    let (st, _) = common::call_as(&env, Some(&env.admin), "POST", "/api/v1/alarms/rules", Some(rule)).await;
    assert_eq!(st, 201);
    let publish = |v: f64| {
        let bus = env.bus.clone();
        async move {
            let f = DataFrame::new(TagId::new("tank.t").unwrap(), V::F64(v), Quality::GOOD, now_ns());
            bus.publish(std::sync::Arc::new(Batch::from(vec![Frame::Data(f)]))).await.unwrap();
        }
    };
    publish(60.0).await;
    let addr = serve(&env).await;
    // Wait until the alarm is active so that it is in the snapshot.
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::call_as(&env, Some(&env.viewer), "GET", "/api/v1/alarms/active", None).await.1["count"] != 1 {
        assert!(Instant::now() < deadline, "the alarm was never raised");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ws = connect(addr).await;
    send(&mut ws, json!({"type": "subscribe_alarms"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "alarms_subscribed");
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["snapshot"], true);
    assert_eq!(snap["alarms"][0]["id"], "hot:tank.t");
    assert_eq!(snap["alarms"][0]["state"], "active_unacked");
    publish(40.0).await;
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["type"], "alarm", "{ev}");
    assert_eq!(ev["event"]["code"], "cleared");
    assert_eq!(ev["event"]["alarm"]["state"], "cleared_unacked");
    let (st, _) = common::call_as(&env, Some(&env.operator), "POST", "/api/v1/alarms/hot:tank.t/ack", None).await;
    assert_eq!(st, 200);
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["event"]["code"], "acked");
    assert_eq!(ev["event"]["alarm"]["state"], "normal");
    assert_eq!(ev["event"]["alarm"]["user"], "token:test-operator");
    send(&mut ws, json!({"type": "unsubscribe_alarms"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "alarms_unsubscribed");
}

/// A client may send its first frame in the same packet as its handshake:
/// hyper has read it already, and it must not be lost on the way to the
/// WebSocket. The answer's accept key is the one RFC 6455 §1.3 gives for its
/// example key.
#[tokio::test]
async fn a_frame_sent_with_the_handshake_is_read_and_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = env_with(ApiConfig::default(), default_devices()).await;
    let addr = serve(&env).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes();
    let payload = br#"{"type":"ping","id":9}"#;
    let mask = [1u8, 2, 3, 4];
    bytes.extend_from_slice(&[0x81, 0x80 | payload.len() as u8]);
    bytes.extend_from_slice(&mask);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&bytes).await.unwrap();
    let mut got = Vec::new();
    let want = br#"{"id":9,"type":"pong"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got.windows(want.len()).any(|w| w == want) {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no pong in time: {}", String::from_utf8_lossy(&got)))
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 101"), "{text}");
    assert!(text.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{text}");
    // The pong is one unmasked text frame of its own.
    let at = got.windows(want.len()).position(|w| w == want).unwrap();
    assert_eq!(&got[at - 2..at], &[0x81, want.len() as u8]);
}
