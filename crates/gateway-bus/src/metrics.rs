//! Prometheus metrics of the bus, with the original gateway's names under the
//! `gateway_bus_` prefix and its histogram buckets (its millisecond bounds
//! written in seconds). Counters and histograms are updated where things
//! happen; gauges that describe state (ring use, lag, WAL size) are refreshed
//! from that state when metrics are scraped ([`crate::Bus::refresh_gauges`]),
//! so the hot path pays nothing for them.
//!
//! Next to the WAL flush histogram sits a [`FlushWindow`]: the same buckets
//! as plain atomics the gateway can read itself (the alarm sampler takes
//! differences between two readings to get the last seconds' p99 and mean),
//! since a Prometheus histogram can only be read by encoding it.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// The same flushes, for the gateway's own reading ([`FlushWindow`]).
    pub wal_flush_window: FlushWindow,
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
            wal_flush_window: FlushWindow::default(),
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

/// Upper bounds of the WAL flush buckets in nanoseconds; a ninth bucket
/// above takes the rest.
const FLUSH_BOUNDS_NS: [u64; 7] = [100_000, 500_000, 1_000_000, 5_000_000, 10_000_000, 50_000_000, 100_000_000];

/// Buckets of a [`FlushTally`]: [`WAL_FLUSH_BUCKETS`] and +Inf.
pub const FLUSH_TALLY_BUCKETS: usize = FLUSH_BOUNDS_NS.len() + 1;

/// WAL flush times since start, in the buckets of [`WAL_FLUSH_BUCKETS`] (+Inf
/// last) and as a sum. Lock-free and cheap: a flush costs two relaxed atomic
/// additions. Counters only grow; a reader keeps the last
/// [`FlushWindow::tally`] and takes the difference ([`FlushTally::since`]) to
/// see any window it likes, so any number of readers can share it.
#[derive(Debug, Default)]
pub struct FlushWindow {
    buckets: [AtomicU64; FLUSH_TALLY_BUCKETS],
    sum_ns: AtomicU64,
}

impl FlushWindow {
    /// Counts one flush that took `d`.
    pub fn observe(&self, d: std::time::Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus buckets are `le`: a flush of exactly 1 ms is in the 1 ms bucket.
        let i = FLUSH_BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The counts so far. Fields are read one by one while flushes go on, so
    /// the sum may be a flush ahead of or behind the buckets.
    pub fn tally(&self) -> FlushTally {
        FlushTally {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// A reading of a [`FlushWindow`], or the difference of two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushTally {
    /// Flushes per bucket (`le` 0.1, 0.5, 1, 5, 10, 50, 100 ms, then +Inf).
    pub buckets: [u64; FLUSH_TALLY_BUCKETS],
    /// Their total time in nanoseconds.
    pub sum_ns: u64,
}

impl FlushTally {
    /// What happened between `earlier` and this reading.
    pub fn since(&self, earlier: &FlushTally) -> FlushTally {
        FlushTally {
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
        }
    }

    /// Adds `other` (to merge several intervals into one window).
    pub fn add(&mut self, other: &FlushTally) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
    }

    /// How many flushes.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Mean flush time in milliseconds; `None` without flushes.
    pub fn mean_ms(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_ns as f64 / n as f64 / 1e6)
    }

    /// The `q` quantile (0 < q <= 1) in milliseconds, as the upper bound of
    /// the bucket it falls in: never below the true quantile, at most one
    /// bucket above it. Past the last bound (100 ms) there is no bound: the
    /// answer is then the mean time of the flushes up there as far as the sum
    /// tells (what the sum leaves when every faster flush is put at its
    /// bucket's upper bound), and at least 100 ms, so a lower bound for
    /// those flushes' mean. `None` without flushes.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        // The rank of the quantile, 1-based: p99 of 100 flushes is the 99th.
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate().take(FLUSH_BOUNDS_NS.len()) {
            seen += c;
            if seen >= rank {
                return Some(FLUSH_BOUNDS_NS[i] as f64 / 1e6);
            }
        }
        let slow = self.buckets[FLUSH_BOUNDS_NS.len()];
        let fast_at_most: u64 = self.buckets.iter().zip(FLUSH_BOUNDS_NS).map(|(&c, b)| c * b).sum();
        let slow_mean_ns = self.sum_ns.saturating_sub(fast_at_most) as f64 / slow.max(1) as f64;
        Some(slow_mean_ns.max(FLUSH_BOUNDS_NS[FLUSH_BOUNDS_NS.len() - 1] as f64) / 1e6)
    }
}

/// Keeps a counter equal to a monotonic source value (e.g. a WAL statistic).
pub(crate) fn sync_counter(c: &Counter, source: u64, last: &AtomicU64) {
    let prev = last.swap(source, Ordering::Relaxed);
    if source > prev {
        c.inc_by(source - prev);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn flush_bounds_match_the_histogram_buckets() {
        for (ns, s) in FLUSH_BOUNDS_NS.iter().zip(WAL_FLUSH_BUCKETS) {
            assert!((*ns as f64 / 1e9 - s).abs() < 1e-12);
        }
    }

    #[test]
    fn the_window_counts_flushes_in_le_buckets_and_differences_give_an_interval() {
        let w = FlushWindow::default();
        w.observe(Duration::from_micros(50));
        w.observe(Duration::from_millis(1));
        let before = w.tally();
        assert_eq!(before.buckets[0], 1);
        assert_eq!(before.buckets[2], 1, "exactly 1 ms is in the 1 ms bucket");
        w.observe(Duration::from_millis(7));
        w.observe(Duration::from_millis(300));
        let d = w.tally().since(&before);
        assert_eq!(d.count(), 2);
        assert_eq!(d.buckets[4], 1);
        assert_eq!(d.buckets[FLUSH_TALLY_BUCKETS - 1], 1);
        assert_eq!(d.sum_ns, 307_000_000);
        assert_eq!(d.mean_ms(), Some(153.5));
    }

    #[test]
    fn p99_is_the_upper_bound_of_its_bucket() {
        let mut t = FlushTally::default();
        assert_eq!(t.quantile_ms(0.99), None);
        assert_eq!(t.mean_ms(), None);
        // 99 fast flushes and one of 30 ms: the 99th is fast.
        t.buckets[1] = 99;
        t.buckets[5] = 1;
        assert_eq!(t.quantile_ms(0.99), Some(0.5));
        // Two slow ones in a hundred: the 99th is slow.
        t.buckets[1] = 98;
        t.buckets[5] = 2;
        assert_eq!(t.quantile_ms(0.99), Some(50.0));
        let mut one = FlushTally::default();
        one.buckets[3] = 1;
        assert_eq!(one.quantile_ms(0.99), Some(5.0), "a single flush is its own p99");
    }

    #[test]
    fn p99_past_the_last_bound_comes_from_the_sum() {
        let mut t = FlushTally::default();
        // 1 flush under 0.1 ms, 1 of 500 ms: the slow one is the p99.
        t.buckets[0] = 1;
        t.buckets[FLUSH_TALLY_BUCKETS - 1] = 1;
        t.sum_ns = 50_000 + 500_000_000;
        let p = t.quantile_ms(0.99).unwrap();
        assert!((p - 499.95).abs() < 1e-9, "{p}");
        // A sum that cannot tell (clock oddities) still says at least 100 ms.
        t.sum_ns = 0;
        assert_eq!(t.quantile_ms(0.99), Some(100.0));
    }

    #[test]
    fn tallies_add_up_to_a_window() {
        let mut a = FlushTally { buckets: [1, 0, 0, 0, 0, 0, 0, 0], sum_ns: 10 };
        a.add(&FlushTally { buckets: [0, 2, 0, 0, 0, 0, 0, 1], sum_ns: 5 });
        assert_eq!(a, FlushTally { buckets: [1, 2, 0, 0, 0, 0, 0, 1], sum_ns: 15 });
    }
}
