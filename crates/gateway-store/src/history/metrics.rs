//! History's metrics (`gateway_history_*`): what was written (readings and
//! alarm transitions) and skipped, how transactions go, how far behind the
//! bus the writer is, how much disk the history takes per value, the queries
//! and the adaptive pool.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Why readings were not written.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabel {
    /// `excluded` (include/exclude), `deadband`, `expired` (older than the
    /// retention, or a time that fits no row).
    pub reason: &'static str,
}

/// The kind of a query.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabel {
    /// `raw`, `aggregate`, `latest` or `alarm_events`.
    pub kind: &'static str,
}

/// Acquire waits, from 10 µs up by half each (to about 10 s): fine enough
/// to read a p99 from.
fn wait_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.000_01, 1.5, 35))
}

fn seconds_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// Every history metric.
#[derive(Debug)]
pub struct HistoryMetrics {
    /// Readings written.
    pub values_written: Counter,
    /// Alarm transitions written to the alarm journal.
    pub alarm_events_written: Counter,
    /// Readings not written, by reason.
    pub values_skipped: Family<SkipLabel, Counter>,
    /// Transactions committed.
    pub transactions: Counter,
    /// Time to write and commit one transaction.
    pub transaction_seconds: Histogram,
    /// Transactions that failed (each is tried again).
    pub write_errors: Counter,
    /// 1 while writes succeed, 0 after one failed until one succeeds.
    pub up: Gauge,
    /// Frames on the bus the writer has not written yet.
    pub backlog_frames: Gauge,
    /// Rows of raw values stored.
    pub rows: Gauge,
    /// Bytes the history takes on disk (the SQLite file and its log, or the
    /// PostgreSQL tables and indexes).
    pub disk_bytes: Gauge,
    /// `disk_bytes / rows`.
    pub bytes_per_value: Gauge<f64, AtomicU64>,
    /// Rows removed by retention (raw values, summaries, alarm journal entries).
    pub retention_deleted: Counter,
    /// Queries answered, by kind.
    pub queries: Family<QueryLabel, Counter>,
    /// Time to answer a query, by kind.
    pub query_seconds: Family<QueryLabel, Histogram, fn() -> Histogram>,
    /// Connections the query pool may use now.
    pub pool_size: Gauge,
    /// Queries holding a connection now.
    pub pool_in_use: Gauge,
    /// Queries waiting for a connection now.
    pub pool_waiting: Gauge,
    /// Time a query waited for a connection.
    pub pool_acquire_seconds: Histogram,
}

impl HistoryMetrics {
    /// Registered metrics.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        let r = registry.sub_registry_with_prefix("gateway_history");
        r.register("values_written", "Readings written to history", m.values_written.clone());
        r.register(
            "alarm_events_written",
            "Alarm transitions written to the alarm journal",
            m.alarm_events_written.clone(),
        );
        r.register("values_skipped", "Readings not written, by reason", m.values_skipped.clone());
        r.register("transactions", "History transactions committed", m.transactions.clone());
        r.register_with_unit(
            "transaction",
            "Time to write and commit one history transaction",
            Unit::Seconds,
            m.transaction_seconds.clone(),
        );
        r.register("write_errors", "History transactions that failed (tried again)", m.write_errors.clone());
        r.register("up", "1 while history writes succeed", m.up.clone());
        r.register("backlog_frames", "Bus frames not yet written to history", m.backlog_frames.clone());
        r.register("rows", "Raw rows stored", m.rows.clone());
        r.register_with_unit("disk", "Bytes the history takes on disk", Unit::Bytes, m.disk_bytes.clone());
        r.register_with_unit("per_value", "Bytes on disk per stored value", Unit::Bytes, m.bytes_per_value.clone());
        r.register("retention_deleted_rows", "Rows removed by retention", m.retention_deleted.clone());
        r.register("queries", "History queries answered, by kind", m.queries.clone());
        r.register_with_unit("query", "Time to answer a history query", Unit::Seconds, m.query_seconds.clone());
        r.register("pool_size", "Connections the history query pool may use now", m.pool_size.clone());
        r.register("pool_in_use", "History queries holding a connection", m.pool_in_use.clone());
        r.register("pool_waiting", "History queries waiting for a connection", m.pool_waiting.clone());
        r.register_with_unit(
            "pool_acquire",
            "Time a history query waited for a connection",
            Unit::Seconds,
            m.pool_acquire_seconds.clone(),
        );
        m
    }

    /// Metrics registered nowhere (tests, benches).
    pub fn unregistered() -> Self {
        HistoryMetrics {
            values_written: Counter::default(),
            alarm_events_written: Counter::default(),
            values_skipped: Family::default(),
            transactions: Counter::default(),
            transaction_seconds: seconds_histogram(),
            write_errors: Counter::default(),
            up: Gauge::default(),
            backlog_frames: Gauge::default(),
            rows: Gauge::default(),
            disk_bytes: Gauge::default(),
            bytes_per_value: Gauge::default(),
            retention_deleted: Counter::default(),
            queries: Family::default(),
            query_seconds: Family::new_with_constructor(seconds_histogram),
            pool_size: Gauge::default(),
            pool_in_use: Gauge::default(),
            pool_waiting: Gauge::default(),
            pool_acquire_seconds: wait_histogram(),
        }
    }

    pub(crate) fn skipped(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.values_skipped.get_or_create(&SkipLabel { reason }).inc_by(n);
        }
    }
}

impl Default for HistoryMetrics {
    fn default() -> Self {
        Self::unregistered()
    }
}
