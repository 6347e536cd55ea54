//! NATS JetStream delivery measured against real local `nats-server`s,
//! shared by `edge-gateway bench` and its figures in BENCHMARKS.md: values
//! per second acknowledged by the stream, sustained, for a payload format,
//! into a single node (stream R1) or a 3-node cluster (stream R3); the
//! stream's bytes per value; after the server (or the whole cluster) was
//! down, how long until the first acknowledgement and the rate at which the
//! backlog is then replayed; and the CPU of the gateway
//! process and of the servers. Run it in a fresh process ([`crate::child`])
//! when its memory figure matters.
//!
//! The load is published on a real bus (WAL, default preset) as fast as the
//! connector keeps up, with at most 200,000 frames waiting, so the connector
//! is always busy but the WAL does not grow without bound.
//!
//! The connector is made only from its JSON form
//! ([`ConnectorConfig::from_json`]) and run only through [`Connectors`], as
//! the gateway runs it: this module must never reach into its internals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gateway_bus::{Bus, BusMetrics, BusSettings};
use gateway_connectors::metrics::ConnectorLabel;
use gateway_connectors::{ConnectorConfig, ConnectorMetrics, Connectors};
use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::nats_server::{self, NatsCluster, NatsServer};
use crate::procstat;

/// One measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NatsScenario {
    /// Payload format, as the connector's `format` field spells it:
    /// `json`, `json_batch` or `sparkplug_b`.
    pub format: String,
    /// `true`: a 3-node cluster and a stream with 3 replicas; `false`: one node, one replica.
    pub cluster: bool,
    /// Seconds of sustained load (after one second of warm-up).
    pub seconds: f64,
    /// Values published while the server (every node) is down, then replayed (0: skip).
    pub outage_values: u64,
    /// Frames per published batch.
    pub batch: usize,
}

/// What it measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NatsReport {
    /// Values acknowledged by the stream per second, sustained.
    pub values_per_s: f64,
    /// Messages acknowledged per second.
    pub messages_per_s: f64,
    /// Bytes the stream holds per value (payload, subject, headers, its own framing).
    pub stream_bytes_per_value: f64,
    /// Values replayed after the outage per second, from the first
    /// acknowledgement after the servers were back (0 if not measured).
    pub replay_values_per_s: f64,
    /// Seconds from the servers being back (healthy) to the first
    /// acknowledgement of the backlog: reconnection, stream leader election.
    pub recovery_s: f64,
    /// CPU of the gateway process (connector, bus and load generator), in cores.
    pub cpu_cores: f64,
    /// CPU of the nats-server processes together, in cores.
    pub server_cpu_cores: f64,
    /// Peak RSS of the process (`VmHWM`), bytes.
    pub peak_rss: u64,
}

/// Whether the scenario can run here: `Err` says why not (nats-server missing).
pub fn available() -> Result<(), String> {
    nats_server::binary().map(|_| ())
}

/// The connector's position: the bench's bus has one durable cursor.
fn cursor(bus: &Bus) -> u64 {
    bus.wal().and_then(|w| w.cursors().into_iter().map(|(_, p)| p).min()).unwrap_or(0)
}

/// The servers under test: one node or a cluster.
enum Servers {
    One(NatsServer),
    Three(NatsCluster),
}

impl Servers {
    fn urls(&self) -> Vec<String> {
        match self {
            Servers::One(s) => vec![s.url()],
            Servers::Three(c) => c.urls(),
        }
    }

    fn cpu_ticks(&self) -> u64 {
        let pids = match self {
            Servers::One(s) => s.pid().into_iter().collect(),
            Servers::Three(c) => c.pids(),
        };
        pids.into_iter().map(|p| procstat::read(Some(p)).cpu_ticks).sum()
    }

    fn down(&mut self) {
        match self {
            Servers::One(s) => s.kill(),
            Servers::Three(c) => c.kill_all(),
        }
    }

    fn up(&mut self) {
        match self {
            Servers::One(s) => s.resume(),
            Servers::Three(c) => c.start_all(),
        }
    }
}

/// Runs the scenario (blocking; it builds its own runtime).
pub fn run(s: &NatsScenario) -> Result<NatsReport, String> {
    available()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_async(s))
}

async fn run_async(s: &NatsScenario) -> Result<NatsReport, String> {
    let mut servers = if s.cluster { Servers::Three(NatsCluster::start()) } else { Servers::One(NatsServer::start()) };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bus = Bus::open(
        BusSettings { wal_dir: dir.path().join("wal"), ..BusSettings::default() },
        Arc::new(BusMetrics::unregistered()),
    )
    .map_err(|e| e.to_string())?;
    let metrics = Arc::new(ConnectorMetrics::unregistered());
    let config = ConnectorConfig::from_json(json!({
        "name": "bench",
        "kind": "nats",
        "servers": servers.urls(),
        "stream": "BENCH",
        "replicas": if s.cluster { 3 } else { 1 },
        "format": s.format,
        "reconnect_min_ms": 20,
        "reconnect_max_ms": 200,
    }))
    .map_err(|e| format!("the NATS scenario's connector: {e}"))?;
    let connectors = Connectors::start(&[config], &bus, metrics.clone(), dir.path().to_owned(), "bench");
    let label = ConnectorLabel { connector: "bench".into() };
    let acked = || metrics.values_acked.get_or_create(&label).get();
    let messages = || metrics.messages_sent.get_or_create(&label).get();

    // A publisher that keeps the connector busy with at most 200,000 frames waiting.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (bus, stop, batch) = (bus.clone(), stop.clone(), s.batch.max(1));
        tokio::spawn(async move {
            let tags: Vec<TagId> = (0..100).filter_map(|i| TagId::new(&format!("plc{}.t{i}", i % 10)).ok()).collect();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if bus.head_seq().saturating_sub(cursor(&bus)) > 200_000 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let ts = gateway_model::now_ns();
                let frames: Vec<Frame> = (0..batch)
                    .map(|i| {
                        Frame::Data(DataFrame::new(
                            tags[i % tags.len()].clone(),
                            Value::F64(n as f64 + i as f64 * 0.5),
                            Quality::GOOD,
                            ts,
                        ))
                    })
                    .collect();
                n += batch as u64;
                if bus.publish(Arc::new(Batch::from(frames))).await.is_err() {
                    break;
                }
            }
        })
    };
    // Warm-up: the stream is created and the first acknowledgements come back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked() == 0 {
        if Instant::now() > deadline {
            return Err("nothing was acknowledged within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (a0, m0) = (acked(), messages());
    let (c0, k0) = (procstat::read(None).cpu_ticks, servers.cpu_ticks());
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(s.seconds.max(0.5))).await;
    let secs = started.elapsed().as_secs_f64();
    let (a1, m1) = (acked(), messages());
    let (c1, k1) = (procstat::read(None).cpu_ticks, servers.cpu_ticks());
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.await;
    let mut report = NatsReport {
        values_per_s: (a1 - a0) as f64 / secs,
        messages_per_s: (m1 - m0) as f64 / secs,
        cpu_cores: (c1 - c0) as f64 / procstat::TICKS_PER_S / secs,
        server_cpu_cores: (k1 - k0) as f64 / procstat::TICKS_PER_S / secs,
        ..NatsReport::default()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while cursor(&bus) < bus.head_seq() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Ok(client) = async_nats::connect(servers.urls()).await {
        let js = async_nats::jetstream::new(client);
        if let Ok(mut st) = js.get_stream("BENCH").await
            && let Ok(info) = st.info().await
        {
            report.stream_bytes_per_value = info.state.bytes as f64 / acked().max(1) as f64;
        }
    }

    if s.outage_values > 0 {
        // Everything is acknowledged; take the servers away, build a backlog, bring them back.
        servers.down();
        let tag = TagId::new("plc0.backlog").map_err(|e| e.to_string())?;
        let mut left = s.outage_values;
        while left > 0 {
            let k = left.min(1000) as usize;
            let frames: Vec<Frame> = (0..k)
                .map(|i| Frame::Data(DataFrame::new(tag.clone(), Value::I64(i as i64), Quality::GOOD, 0)))
                .collect();
            bus.publish(Arc::new(Batch::from(frames))).await.map_err(|e| e.to_string())?;
            left -= k as u64;
        }
        let (from, target) = (cursor(&bus), bus.head_seq());
        servers.up();
        let t = Instant::now();
        let mut first: Option<(Instant, u64)> = None;
        loop {
            let at = cursor(&bus);
            if first.is_none() && at > from {
                first = Some((Instant::now(), at));
            }
            if at >= target {
                break;
            }
            if t.elapsed() > Duration::from_secs(300) {
                return Err("the backlog was not replayed within 300 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some((t1, at1)) = first {
            report.recovery_s = t1.duration_since(t).as_secs_f64();
            report.replay_values_per_s = (target - at1) as f64 / t1.elapsed().as_secs_f64().max(1e-3);
        }
    }
    connectors.stop().await;
    report.peak_rss = procstat::read(None).peak_rss;
    Ok(report)
}
