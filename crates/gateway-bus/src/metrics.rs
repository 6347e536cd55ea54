//! Prometheus metrics of the bus, with the original gateway's names under the
//! `gateway_bus_` prefix and its histogram buckets (its millisecond bounds
//! written in seconds). Counters and histograms are updated where things
//! happen; gauges that describe state (ring use, lag, WAL size) are refreshed
//! from that state when metrics are scraped ([`crate::Bus::refresh_gauges`]),
//! so the hot path pays nothing for them.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Label set naming a subscriber.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriberLabel {
    /// The subscriber's name.
    pub subscriber: String,
}

/// WAL flush buckets: 0.1, 0.5, 1, 5, 10, 50, 100 ms.
pub const WAL_FLUSH_BUCKETS: [f64; 7] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1];
/// Batch flush buckets: 0.01, 0.1, 0.5, 1, 5, 10, 25 ms.
pub const BATCH_FLUSH_BUCKETS: [f64; 7] = [0.000_01, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025];
/// Batch send buckets: 0.01, 0.1, 0.5, 1, 2, 5, 10 ms.
pub const BATCH_SEND_BUCKETS: [f64; 7] = [0.000_01, 0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01];
/// Batch size buckets: the original's 1..500, then 1000 and 2000 (the default `max_batch_size`).
pub const BATCH_SIZE_BUCKETS: [f64; 10] = [1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0];

/// Every metric the bus keeps; [`BusMetrics::new`] registers them under the
/// `gateway_bus_` prefix. Cloning a field shares the metric.
#[derive(Debug)]
pub struct BusMetrics {
    /// Frames held in the ring; set by `Bus::refresh_gauges`, not on publish.
    pub ring_used: Gauge,
    /// Frames published since start, counted when a publish succeeds.
    pub publish_total: Counter,
    /// Frames a subscriber lost (lossy lag, WAL overflow), by subscriber.
    pub drop_total: Family<SubscriberLabel, Counter>,
    /// Frames between the head and a subscriber's position, by subscriber.
    pub backlog_lag: Family<SubscriberLabel, Gauge>,
    /// Bytes of WAL segments on disk.
    pub wal_bytes: Gauge,
    /// Time of each WAL write + sync.
    pub wal_flush_duration: Histogram,
    /// Frames per published batch ([`BATCH_SIZE_BUCKETS`]).
    pub batch_size: Histogram,
    /// Time from a batch's first frame to its publication (batching delay).
    pub batch_flush_duration: Histogram,
    /// Time `publish` takes, backpressure waits included.
    pub batch_send_duration: Histogram,
    /// Bytes of frames waiting in batchers.
    pub batch_memory_usage: Gauge,
    /// 1 while publishers are paused by backpressure.
    pub paused: Gauge,
    /// Times a publisher had to wait for backpressure to clear.
    pub backpressure_waits_total: Counter,
    /// Frames lost to the WAL's drop_oldest policy.
    pub wal_dropped_total: Counter,
}

impl BusMetrics {
    /// Metrics registered in `registry` (which callers usually prefix with nothing:
    /// names already start with `gateway_bus_`).
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        let r = registry.sub_registry_with_prefix("gateway_bus");
        r.register("ring_used", "Frames held in the ring", m.ring_used.clone());
        r.register("publish", "Frames published", m.publish_total.clone());
        r.register("drop", "Frames a subscriber lost, by subscriber", m.drop_total.clone());
        r.register("backlog_lag", "Frames between the head and a subscriber", m.backlog_lag.clone());
        r.register_with_unit("wal", "Bytes of WAL segments on disk", Unit::Bytes, m.wal_bytes.clone());
        r.register_with_unit(
            "wal_flush_duration",
            "Time of each WAL write and sync",
            Unit::Seconds,
            m.wal_flush_duration.clone(),
        );
        r.register("batch_size", "Frames per published batch", m.batch_size.clone());
        r.register_with_unit(
            "batch_flush_duration",
            "Time from a batch's first frame to its publication",
            Unit::Seconds,
            m.batch_flush_duration.clone(),
        );
        r.register_with_unit(
            "batch_send_duration",
            "Time publish takes, backpressure included",
            Unit::Seconds,
            m.batch_send_duration.clone(),
        );
        r.register_with_unit(
            "batch_memory_usage",
            "Bytes of frames waiting in batchers",
            Unit::Bytes,
            m.batch_memory_usage.clone(),
        );
        r.register("paused", "1 while publishers are paused by backpressure", m.paused.clone());
        r.register(
            "backpressure_waits",
            "Times a publisher waited for backpressure",
            m.backpressure_waits_total.clone(),
        );
        r.register("wal_dropped", "Frames lost to the WAL drop_oldest policy", m.wal_dropped_total.clone());
        m
    }

    /// Metrics not registered anywhere (tests, benchmarks).
    pub fn unregistered() -> Self {
        BusMetrics {
            ring_used: Gauge::default(),
            publish_total: Counter::default(),
            drop_total: Family::default(),
            backlog_lag: Family::default(),
            wal_bytes: Gauge::default(),
            wal_flush_duration: Histogram::new(WAL_FLUSH_BUCKETS),
            batch_size: Histogram::new(BATCH_SIZE_BUCKETS),
            batch_flush_duration: Histogram::new(BATCH_FLUSH_BUCKETS),
            batch_send_duration: Histogram::new(BATCH_SEND_BUCKETS),
            batch_memory_usage: Gauge::default(),
            paused: Gauge::default(),
            backpressure_waits_total: Counter::default(),
            wal_dropped_total: Counter::default(),
        }
    }
}

impl Default for BusMetrics {
    fn default() -> Self {
        Self::unregistered()
    }
}

/// Keeps a counter equal to a monotonic source value (e.g. a WAL statistic).
pub(crate) fn sync_counter(c: &Counter, source: u64, last: &AtomicU64) {
    let prev = last.swap(source, std::sync::atomic::Ordering::Relaxed);
    if source > prev {
        c.inc_by(source - prev);
    }
}
