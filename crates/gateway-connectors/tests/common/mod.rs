//! Test support for the connector tests: a bus with a WAL, a connector task,
//! a subscriber that collects what reaches the broker, and helpers to publish
//! and to read the connector's progress.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_bus::{Bus, BusMetrics, BusSettings};
use gateway_connectors::{Connector, ConnectorConfig, ConnectorMetrics, Connectors};
use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub struct Rig {
    pub bus: Bus,
    pub metrics: Arc<ConnectorMetrics>,
    pub connectors: Option<Connectors>,
    pub dir: tempfile::TempDir,
}

pub fn bus_cfg(dir: &std::path::Path) -> BusSettings {
    BusSettings {
        ring_pow: 14,
        wal_dir: dir.join("wal"),
        wal_flush_ms: 2,
        async_write_queue_size: 4096,
        wal_segment_bytes: Some(256 << 10),
        high_performance_mode: false,
        batch: gateway_bus::BatchSettings { max_batch_size: 1000, ..Default::default() },
        ..BusSettings::default()
    }
}

impl Rig {
    /// A connector named `up` of a gateway named `gw`, on a bus with a WAL in a new directory.
    pub fn start<T: Connector>(cfg: T) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        Self::start_with(cfg, bus_cfg(dir.path()), dir)
    }

    pub fn start_with<T: Connector>(cfg: T, bus_cfg: BusSettings, dir: tempfile::TempDir) -> Rig {
        let bus = Bus::open(bus_cfg, Arc::new(BusMetrics::unregistered())).unwrap();
        let metrics = Arc::new(ConnectorMetrics::unregistered());
        let c = ConnectorConfig::new("up", cfg).unwrap();
        let connectors = Connectors::start(&[c], &bus, metrics.clone(), dir.path().to_owned(), "gw");
        Rig { bus, metrics, connectors: Some(connectors), dir }
    }

    /// Publishes `n` readings of `tag` with values `start..start+n`, in batches of `per_batch`.
    pub async fn publish(&self, tag: &str, start: i64, n: usize, per_batch: usize) {
        let t = TagId::new(tag).unwrap();
        let mut i = 0;
        while i < n {
            let k = per_batch.min(n - i);
            let frames: Vec<Frame> = (0..k)
                .map(|j| {
                    Frame::Data(DataFrame::new(
                        t.clone(),
                        Value::I64(start + (i + j) as i64),
                        Quality::GOOD,
                        gateway_model::now_ns(),
                    ))
                })
                .collect();
            self.bus.publish(Arc::new(Batch::from(frames))).await.unwrap();
            i += k;
        }
    }

    pub fn acked(&self) -> u64 {
        self.metrics
            .values_acked
            .get_or_create(&gateway_connectors::metrics::ConnectorLabel { connector: "up".into() })
            .get()
    }

    pub fn cursor(&self) -> u64 {
        // The connector's durable cursor: `{kind}-up`.
        self.bus.wal().unwrap().cursors().into_iter().find(|(n, _)| n.ends_with("-up")).map_or(0, |(_, p)| p)
    }
}

/// A broker client that collects every message on `filter`, with a persistent
/// session so nothing is missed across a broker restart.
/// (topic, payload) of every message received.
pub type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

pub struct Collector {
    pub messages: Received,
    pub client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn start(port: u16, filter: &str, id: &str) -> Collector {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(false);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut ev) = AsyncClient::new(opts, 1000);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready = Some(ready_tx);
        let m = messages.clone();
        let c = client.clone();
        let f = filter.to_owned();
        let task = tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.subscribe(f.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        m.lock().unwrap().push((p.topic.clone(), p.payload.to_vec()))
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx).await.expect("collector subscribed").unwrap();
        Collector { messages, client, task }
    }

    pub fn len(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        self.messages.lock().unwrap().clone()
    }

    /// JSON values (from `json` or `json_batch` messages) in arrival order.
    pub fn values(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for (_, p) in self.snapshot() {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p) else { continue };
            match v.get("values").and_then(|x| x.as_array()) {
                Some(vs) => out.extend(vs.iter().cloned()),
                None if v.get("seq").is_some() => out.push(v),
                None => {}
            }
        }
        out
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sequence numbers in order of first arrival, and how many were duplicates.
pub fn first_arrivals(values: &[serde_json::Value]) -> (Vec<u64>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut order = Vec::new();
    let mut dups = 0;
    for v in values {
        let s = v["seq"].as_u64().expect("every value carries its seq");
        if seen.insert(s) {
            order.push(s);
        } else {
            dups += 1;
        }
    }
    (order, dups)
}
