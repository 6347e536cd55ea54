//! MQTT delivery measured against a real local mosquitto: sustained values
//! per second confirmed by the broker for a payload format, the rate at which
//! a backlog is replayed after an outage, uplink bytes per value, and the CPU
//! of the gateway process and of the broker. Used by `edge-gateway bench`;
//! run it in a child process when its memory figure matters.
//!
//! The load is published on a real bus (WAL, default preset) as fast as the
//! connector keeps up, with at most 200,000 frames waiting, so the connector is
//! always busy but the WAL does not grow without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_bus::{Bus, BusMetrics, BusSettings};
use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::metrics::{ConnectorLabel, ConnectorMetrics};
use crate::mqtt::{Format, MqttConfig};
use crate::testing::Mosquitto;
use crate::{ConnectorConfig, Connectors};

/// One measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MqttScenario {
    /// Payload format.
    pub format: Format,
    /// Seconds of sustained load (after one second of warm-up).
    pub seconds: f64,
    /// Values published while the broker is away, then replayed (0: skip).
    pub outage_values: u64,
    /// Frames per published batch.
    pub batch: usize,
}

/// What it measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MqttReport {
    /// Values confirmed by the broker per second, sustained.
    pub values_per_s: f64,
    /// MQTT messages per second.
    pub messages_per_s: f64,
    /// Payload bytes per value as the subscriber received them.
    pub bytes_per_value: f64,
    /// Values the subscriber received during the sustained phase.
    pub values_received: u64,
    /// Values replayed after the outage per second (0 if not measured).
    pub replay_values_per_s: f64,
    /// CPU of the gateway process (connector, bus, load generator and the
    /// test subscriber), in cores.
    pub cpu_cores: f64,
    /// CPU of the mosquitto process, in cores.
    pub broker_cpu_cores: f64,
    /// Peak RSS of the process (`VmHWM`), bytes.
    pub peak_rss: u64,
}

/// Whether the scenario can run here (mosquitto installed).
pub fn available() -> Result<(), String> {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
        .then_some(())
        .ok_or_else(|| "mosquitto is not installed (scripts/setup-test-peers installs it)".to_owned())
}

fn cpu_ticks(pid: Option<u32>) -> u64 {
    gateway_bus::procstat::read(pid).cpu_ticks
}

/// Counts values in received payloads without a full parse where it can.
fn count_values(format: Format, payload: &[u8]) -> u64 {
    match format {
        Format::Json => 1,
        Format::JsonBatch => payload.windows(6).filter(|w| w == b"\"seq\":").count() as u64,
        Format::SparkplugB => {
            crate::mqtt::sparkplug::Payload::decode(payload).map(|p| p.metrics.len() as u64).unwrap_or(0)
        }
    }
}

/// Runs the scenario (blocking; it builds its own runtime).
pub fn run(s: &MqttScenario) -> Result<MqttReport, String> {
    available()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_async(s))
}

async fn run_async(s: &MqttScenario) -> Result<MqttReport, String> {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bus = Bus::open(
        BusSettings { wal_dir: dir.path().join("wal"), ..BusSettings::default() },
        Arc::new(BusMetrics::unregistered()),
    )
    .map_err(|e| e.to_string())?;
    // The subscriber that stands for the cloud: counts values and bytes.
    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let messages = Arc::new(AtomicU64::new(0));
    let mut opts = rumqttc::MqttOptions::new("bench-sink", "127.0.0.1", broker.port);
    opts.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut ev) = rumqttc::AsyncClient::new(opts, 100);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let sink = {
        let (received, bytes, messages) = (received.clone(), bytes.clone(), messages.clone());
        let format = s.format;
        let mut ready = Some(ready_tx);
        tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = client.subscribe("bench/#", rumqttc::QoS::AtMostOnce).await;
                        let _ = client.subscribe("spBv1.0/#", rumqttc::QoS::AtMostOnce).await;
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        messages.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                        received.fetch_add(count_values(format, &p.payload), Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
    let metrics = Arc::new(ConnectorMetrics::unregistered());
    let cfg = MqttConfig {
        format: s.format,
        topic_prefix: "bench".into(),
        max_inflight: 1024,
        // Measure the raw replay speed, not the limiter.
        replay_max_rate: u64::MAX / 2,
        reconnect_min_ms: 20,
        reconnect_max_ms: 200,
        ..MqttConfig::new(&broker.url())
    };
    let connectors = Connectors::start(
        &[ConnectorConfig::new("bench", cfg).map_err(|e| e.to_string())?],
        &bus,
        metrics.clone(),
        dir.path().to_owned(),
    );
    let label = ConnectorLabel { connector: "bench".into() };
    let acked = || metrics.values_acked.get_or_create(&label).get();
    let cursor = |bus: &Bus| {
        bus.wal().and_then(|w| w.cursors().into_iter().find(|(n, _)| n == "mqtt-bench").map(|c| c.1)).unwrap_or(0)
    };

    // A publisher that keeps the connector busy with at most 200,000 frames waiting.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (bus, stop, batch) = (bus.clone(), stop.clone(), s.batch.max(1));
        tokio::spawn(async move {
            let tags: Vec<TagId> = (0..100).filter_map(|i| TagId::new(&format!("plc{}.t{i}", i % 10)).ok()).collect();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let waiting = bus.head_seq().saturating_sub(cursor(&bus));
                if waiting > 200_000 {
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
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (a0, r0, b0, m0) =
        (acked(), received.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed), messages.load(Ordering::Relaxed));
    let (c0, k0) = (cpu_ticks(None), cpu_ticks(broker.pid()));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(s.seconds.max(0.5))).await;
    let secs = started.elapsed().as_secs_f64();
    let (a1, r1, b1, m1) =
        (acked(), received.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed), messages.load(Ordering::Relaxed));
    let (c1, k1) = (cpu_ticks(None), cpu_ticks(broker.pid()));
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.await;
    let values = r1 - r0;
    let mut report = MqttReport {
        values_per_s: (a1 - a0) as f64 / secs,
        messages_per_s: (m1 - m0) as f64 / secs,
        bytes_per_value: if values > 0 { (b1 - b0) as f64 / values as f64 } else { 0.0 },
        values_received: values,
        cpu_cores: (c1 - c0) as f64 / gateway_bus::procstat::TICKS_PER_S / secs,
        broker_cpu_cores: (k1 - k0) as f64 / gateway_bus::procstat::TICKS_PER_S / secs,
        ..MqttReport::default()
    };

    if s.outage_values > 0 {
        // Let the connector catch up, take the broker away, build a backlog, bring it back.
        let deadline = Instant::now() + Duration::from_secs(120);
        while cursor(&bus) < bus.head_seq() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        broker.stop(false);
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
        let target = bus.head_seq();
        broker.resume();
        let t = Instant::now();
        while cursor(&bus) < target {
            if t.elapsed() > Duration::from_secs(300) {
                return Err("the backlog was not replayed within 300 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        report.replay_values_per_s = s.outage_values as f64 / t.elapsed().as_secs_f64();
    }
    connectors.stop().await;
    sink.abort();
    report.peak_rss = gateway_bus::procstat::read(None).peak_rss;
    Ok(report)
}
