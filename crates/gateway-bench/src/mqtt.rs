//! MQTT delivery measured against a real local mosquitto, shared by `cargo
//! bench -p gateway-connectors --bench mqtt` and `edge-gateway bench`:
//! sustained values per second confirmed by the broker for a payload format,
//! the rate at which a backlog is replayed after an outage, uplink bytes per
//! value, and the CPU of the gateway process and of the broker. Run it in a
//! fresh process ([`crate::child`]) when its memory figure matters.
//!
//! The load is published on a real bus (WAL, default preset) as fast as the
//! connector keeps up, with at most 200,000 frames waiting, so the connector is
//! always busy but the WAL does not grow without bound.
//!
//! The connector is made only from its JSON form
//! ([`ConnectorConfig::from_json`]) and run only through [`Connectors`], as
//! the gateway runs it: this module must never reach into the connector's
//! internals (its config structs, its cursor's name, its Sparkplug types).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_bus::{Bus, BusMetrics, BusSettings};
use gateway_connectors::metrics::ConnectorLabel;
use gateway_connectors::{ConnectorConfig, ConnectorMetrics, Connectors};
use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value};
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::mosquitto::{self, Mosquitto};
use crate::procstat;

/// One measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MqttScenario {
    /// Payload format, as the connector's `format` field spells it:
    /// `json`, `json_batch` or `sparkplug_b`.
    pub format: String,
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

/// Whether the scenario can run here: `Err` says why not (mosquitto missing).
pub fn available() -> Result<(), String> {
    mosquitto::binary().map(|_| ())
}

/// Just enough of Sparkplug B's `Payload` to count its metrics: field 2, as
/// the Sparkplug specification numbers it, each metric left undecoded.
#[derive(Clone, PartialEq, prost::Message)]
struct SparkplugMetrics {
    #[prost(bytes = "vec", repeated, tag = "2")]
    metrics: Vec<Vec<u8>>,
}

/// Counts values in a received payload without a full parse where it can.
fn count_values(format: &str, payload: &[u8]) -> u64 {
    match format {
        "json" => 1,
        "json_batch" => payload.windows(6).filter(|w| w == b"\"seq\":").count() as u64,
        "sparkplug_b" => SparkplugMetrics::decode(payload).map_or(0, |p| p.metrics.len() as u64),
        _ => 0,
    }
}

/// The connector's position: the bench's bus has one durable cursor, the
/// connector's, whatever the connector names it.
fn cursor(bus: &Bus) -> u64 {
    bus.wal().and_then(|w| w.cursors().into_iter().map(|(_, p)| p).min()).unwrap_or(0)
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
        let format = s.format.clone();
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
                        received.fetch_add(count_values(&format, &p.payload), Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
    let metrics = Arc::new(ConnectorMetrics::unregistered());
    let config = ConnectorConfig::from_json(json!({
        "name": "bench",
        "kind": "mqtt",
        "url": broker.url(),
        "format": s.format,
        "topic_prefix": "bench",
        "max_inflight": 1024,
        // Measure the raw replay speed, not the limiter.
        "replay_max_rate": u64::MAX / 2,
        "reconnect_min_ms": 20,
        "reconnect_max_ms": 200,
    }))
    .map_err(|e| format!("the MQTT scenario's connector: {e}"))?;
    let connectors = Connectors::start(&[config], &bus, metrics.clone(), dir.path().to_owned(), "bench");
    let label = ConnectorLabel { connector: "bench".into() };
    let acked = || metrics.values_acked.get_or_create(&label).get();

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
    let (c0, k0) = (procstat::read(None).cpu_ticks, procstat::read(broker.pid()).cpu_ticks);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(s.seconds.max(0.5))).await;
    let secs = started.elapsed().as_secs_f64();
    let (a1, r1, b1, m1) =
        (acked(), received.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed), messages.load(Ordering::Relaxed));
    let (c1, k1) = (procstat::read(None).cpu_ticks, procstat::read(broker.pid()).cpu_ticks);
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.await;
    let values = r1 - r0;
    let mut report = MqttReport {
        values_per_s: (a1 - a0) as f64 / secs,
        messages_per_s: (m1 - m0) as f64 / secs,
        bytes_per_value: if values > 0 { (b1 - b0) as f64 / values as f64 } else { 0.0 },
        values_received: values,
        cpu_cores: (c1 - c0) as f64 / procstat::TICKS_PER_S / secs,
        broker_cpu_cores: (k1 - k0) as f64 / procstat::TICKS_PER_S / secs,
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
    report.peak_rss = procstat::read(None).peak_rss;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::count_values;

    #[test]
    fn values_are_counted_per_format_without_the_connector_s_types() {
        assert_eq!(count_values("json", br#"{"tag":"a.b","value":1,"seq":7}"#), 1);
        assert_eq!(count_values("json_batch", br#"{"values":[{"seq":1},{"seq":2},{"seq":3}]}"#), 3);
        // A Sparkplug B payload as the specification lays it out: timestamp
        // (field 1), two metrics named "a" and "b" (field 2), seq (field 3).
        let payload = [0x08, 0x01, 0x12, 0x03, 0x0a, 0x01, b'a', 0x12, 0x03, 0x0a, 0x01, b'b', 0x18, 0x05];
        assert_eq!(count_values("sparkplug_b", &payload), 2);
        assert_eq!(count_values("sparkplug_b", &[0xff]), 0, "garbage counts nothing");
    }
}
