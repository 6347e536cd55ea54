//! WebSocket fan-out: an in-process gateway (default preset, WAL, SQLite,
//! 1,000 simulated tags of background load) and N clients in a second
//! process (so that each side has its own open-files limit: 10,000
//! connections take 10,000 descriptors on each side), all subscribed to
//! `bench.*`. The gateway publishes one frame of `bench.fanout` twice a
//! second on its bus, its value the wall-clock time (ns) the frame was due;
//! every client records, for every update it receives, its wall-clock time
//! minus that value. Both processes read the same clock, so this is the
//! publish-to-client latency including the hub's push interval, the
//! kernel's loopback and the client's own parsing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gateway_api::ApiConfig;
use gateway_bench::histogram::Histogram;
use gateway_bus::Preset;
use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::gateway::{Gateway, sim_devices};
use super::probe::{self, Sampler};
use super::{Curve, Outcome, Spec, child_command};

/// The server side.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WsSpec {
    /// Clients.
    pub connections: usize,
    /// Updates per second of the measured tag.
    pub rate_hz: f64,
    /// Seconds of warm-up (updates of `bench.warmup`, not measured).
    pub warmup_s: f64,
    /// Seconds measured.
    pub seconds: f64,
}

/// The client side (a child of the server side).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WsClientsSpec {
    /// Port of the gateway on 127.0.0.1.
    pub port: u16,
    /// Clients.
    pub connections: usize,
    /// Give up after this many seconds in all.
    pub deadline_s: f64,
}

#[derive(Serialize, Deserialize)]
struct Ready {
    ready: usize,
    failed: usize,
    connect_s: f64,
    first_error: Option<String>,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    snapshot: bool,
    #[serde(default)]
    values: Vec<IncomingValue>,
    #[serde(default)]
    updates: u64,
}

#[derive(Deserialize)]
struct IncomingValue {
    tag: String,
    value: serde_json::Value,
}

const SHARDS: usize = 16;

/// A client's read buffer: an update of the measured tag is ~100 bytes.
const CLIENT_READ_BUFFER: usize = 4096;

struct ClientStats {
    hist: Vec<std::sync::Mutex<Histogram>>,
    received: AtomicU64,
    dropped: AtomicU64,
}

fn handle(text: &str, shard: usize, stats: &ClientStats) {
    if text.contains("\"dropped\"") {
        if let Ok(m) = serde_json::from_str::<Incoming>(text)
            && m.kind == "dropped"
        {
            stats.dropped.fetch_add(m.updates, Ordering::Relaxed);
        }
        return;
    }
    if !text.contains("bench.fanout") {
        return;
    }
    let now = gateway_model::now_ns();
    let Ok(m) = serde_json::from_str::<Incoming>(text) else { return };
    if m.kind != "update" || m.snapshot {
        return;
    }
    for v in m.values.iter().filter(|v| v.tag == "bench.fanout") {
        if let Some(due) = v.value.as_u64() {
            stats.received.fetch_add(1, Ordering::Relaxed);
            if let Some(h) = stats.hist.get(shard) {
                h.lock().unwrap_or_else(|e| e.into_inner()).record(now.saturating_sub(due));
            }
        }
    }
}

async fn connect_one(url: String, i: usize, stats: Arc<ClientStats>) -> Result<(), String> {
    // tungstenite's default 128 KiB read buffer is zeroed before every read:
    // with 10,000 clients that memset was a third of the busy time of the
    // whole run (the client side's, not the gateway's). A browser reads into
    // what the message needs; so does this client.
    let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(config), false).await.map_err(|e| e.to_string())?;
    let sub = r#"{"type":"subscribe","patterns":["bench.*"]}"#;
    ws.send(Message::Text(sub.into())).await.map_err(|e| e.to_string())?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"subscribed\"") => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed before subscribing".into()),
        }
    }
    tokio::spawn(async move {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Text(t)) => handle(&t, i % SHARDS, &stats),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok(())
}

/// The client process: connects, says `ready` on stdout, records until its
/// standard input closes (or the deadline), then prints its outcome.
pub fn clients(spec: &WsClientsSpec) -> Result<Outcome, String> {
    crate::run::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ws-client")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let stats = Arc::new(ClientStats {
            hist: (0..SHARDS).map(|_| std::sync::Mutex::new(Histogram::default())).collect(),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let url = format!("ws://127.0.0.1:{}/ws", spec.port);
        let started = Instant::now();
        let cpu0 = probe::cpu_seconds();
        let results: Vec<Result<(), String>> = futures_util::stream::iter(0..spec.connections)
            .map(|i| {
                let (url, stats) = (url.clone(), stats.clone());
                async move {
                    tokio::time::timeout(Duration::from_secs(30), connect_one(url, i, stats))
                        .await
                        .unwrap_or_else(|_| Err("connect timed out".into()))
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        let first_error = results.iter().find_map(|r| r.as_ref().err().cloned());
        let ready =
            Ready { ready: spec.connections - failed, failed, connect_s: started.elapsed().as_secs_f64(), first_error };
        println!("{}", serde_json::to_string(&ready).map_err(|e| e.to_string())?);
        let cpu_connected = probe::cpu_seconds();
        let t_connected = Instant::now();
        // Standard input closes when the server side is done publishing.
        let eof = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        let left = (spec.deadline_s - started.elapsed().as_secs_f64()).max(1.0);
        let _ = tokio::time::timeout(Duration::from_secs_f64(left), eof).await;
        // A saturated fan-out delivers late, not never: wait until messages stop
        // arriving (1 s of quiet), so the late ones count with their lateness.
        let mut last = stats.received.load(Ordering::Relaxed);
        let mut quiet = 0;
        while quiet < 5 && started.elapsed().as_secs_f64() < spec.deadline_s {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = stats.received.load(Ordering::Relaxed);
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
        }
        let mut h = Histogram::default();
        for s in &stats.hist {
            h.merge(&s.lock().unwrap_or_else(|e| e.into_inner()));
        }
        let mut o = Outcome::default();
        let l = h.latency();
        o.put("ws.fanout.p50_us", l.p50_us);
        o.put("ws.fanout.p99_us", l.p99_us);
        o.put("ws.fanout.p999_us", l.p999_us);
        o.put("ws.fanout.max_us", l.max_us);
        o.put("ws.messages", stats.received.load(Ordering::Relaxed) as f64);
        o.put("ws.dropped_updates", stats.dropped.load(Ordering::Relaxed) as f64);
        o.put("ws.connected", ready.ready as f64);
        o.put("ws.connect_s", ready.connect_s);
        o.put("ws.client_connect_cpu_s", cpu_connected - cpu0);
        o.put(
            "ws.client_cpu_cores",
            (probe::cpu_seconds() - cpu_connected) / t_connected.elapsed().as_secs_f64().max(1e-9),
        );
        o.curves.push(Curve { name: "ws.fanout".into(), points: h.curve() });
        if let Some(e) = ready.first_error {
            o.notes
                .push(format!("{} of {} clients failed to connect; first error: {e}", ready.failed, spec.connections));
        }
        Ok(o)
    })
}

/// The server process: gateway, clients child, publisher, figures.
pub fn server(spec: &WsSpec) -> Result<Outcome, String> {
    crate::run::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gateway")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let api = ApiConfig {
            ws_max_connections: spec.connections + 16,
            // Every WebSocket holds one of the API's connections.
            max_connections: spec.connections + 64,
            // The run must not be disturbed by the heartbeat's clean-up.
            ws_heartbeat_timeout_s: 3600,
            ws_cleanup_interval_s: 600,
            ..ApiConfig::default()
        };
        let devices = sim_devices("plc", 10, 100, 1000)?;
        let gw = Gateway::start(Preset::Default, api, &devices).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss0 = probe::rss().0;
        let deadline_s = 240.0 + spec.warmup_s + spec.seconds;
        let cmd = child_command(&Spec::WsClients(WsClientsSpec {
            port: gw.addr.port(),
            connections: spec.connections,
            deadline_s,
        }))?;
        let mut child = tokio::process::Command::from(cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the WebSocket clients: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready: Ready = loop {
            let line = tokio::time::timeout(Duration::from_secs(240), lines.next_line())
                .await
                .map_err(|_| "the clients did not connect within 240 s".to_string())?
                .map_err(|e| e.to_string())?
                .ok_or("the client process ended before connecting")?;
            if let Ok(r) = serde_json::from_str::<Ready>(&line) {
                break r;
            }
        };
        let rss1 = probe::rss().0;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reset = probe::reset_peak_rss();
        let published = Arc::new(AtomicU64::new(0));
        let sampler = Sampler::start("ws server", Some((published.clone(), "updates/s", "updates/s")));
        let warm = TagId::new("bench.warmup").map_err(|e| e.to_string())?;
        let tag = TagId::new("bench.fanout").map_err(|e| e.to_string())?;
        let period = Duration::from_secs_f64(1.0 / spec.rate_hz.max(0.1));
        let (wall0, inst0) = (gateway_model::now_ns(), tokio::time::Instant::now());
        let mut tick = tokio::time::interval_at(inst0 + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let warm_n = (spec.warmup_s * spec.rate_hz).round() as u64;
        let measured_n = (spec.seconds * spec.rate_hz).round().max(1.0) as u64;
        let mut cpu_window = (0.0, Instant::now());
        for k in 0..warm_n + measured_n {
            let due = tick.tick().await;
            if k == warm_n {
                cpu_window = (probe::cpu_seconds(), Instant::now());
            }
            let due_wall = wall0 + due.duration_since(inst0).as_nanos() as u64;
            let t = if k < warm_n { warm.clone() } else { tag.clone() };
            let frame = Frame::Data(DataFrame::new(t, Value::U64(due_wall), Quality::GOOD, due_wall));
            gw.bus.publish(Arc::new(Batch::from(vec![frame]))).await.map_err(|e| e.to_string())?;
            published.fetch_add(1, Ordering::Relaxed);
        }
        let server_cpu = (probe::cpu_seconds() - cpu_window.0) / cpu_window.1.elapsed().as_secs_f64().max(1e-9);
        // Let the last update arrive (the hub pushes every few ms), then tell the clients to report.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, peak) = probe::rss();
        let series = sampler.finish();
        drop(child.stdin.take());
        let mut o = loop {
            match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    if let Ok(o) = serde_json::from_str::<Outcome>(&line) {
                        break o;
                    }
                }
                _ => return Err("the client process did not report".into()),
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        gw.stop().await;
        let expected = measured_n as f64 * ready.ready as f64;
        o.put("ws.connections_requested", spec.connections as f64);
        o.put("ws.connected_share", ready.ready as f64 / spec.connections.max(1) as f64);
        o.put("ws.updates", measured_n as f64);
        o.put("ws.expected_messages", expected);
        o.put("ws.delivered_share", o.figures.get("ws.messages").copied().unwrap_or(0.0) / expected.max(1.0));
        o.put("ws.server_rss_mb", rss1 as f64 / 1e6);
        if reset {
            o.put("ws.server_peak_rss_mb", peak as f64 / 1e6);
        }
        o.put("ws.rss_per_connection_kb", rss1.saturating_sub(rss0) as f64 / 1e3 / ready.ready.max(1) as f64);
        o.put("ws.server_cpu_cores", server_cpu);
        o.put("ws.messages_per_s", expected / spec.seconds.max(1e-9));
        o.series.extend(series);
        Ok(o)
    })
}
