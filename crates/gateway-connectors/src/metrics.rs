//! Connector metrics, labelled by connector: what was sent and acknowledged,
//! the backlog waiting in the WAL, reconnects, and publish-to-acknowledgement
//! latency.

use gateway_bus::{Bus, Subscriber};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The connector label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabel {
    /// Connector name.
    pub connector: String,
}

/// Label of a command outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    /// Connector name.
    pub connector: String,
    /// `ok`, `rejected`, `failed`, `timeout`, `no_route`, `invalid`.
    pub status: String,
}

fn ack_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// Metrics of all connectors.
#[derive(Debug)]
pub struct ConnectorMetrics {
    /// Messages handed to the transport.
    pub messages_sent: Family<ConnectorLabel, Counter>,
    /// Values in those messages.
    pub values_sent: Family<ConnectorLabel, Counter>,
    /// Values the target confirmed.
    pub values_acked: Family<ConnectorLabel, Counter>,
    /// Frames between the connector's cursor and the bus head.
    pub backlog_frames: Family<ConnectorLabel, Gauge>,
    /// Approximate bytes of that backlog in the WAL.
    pub backlog_bytes: Family<ConnectorLabel, Gauge>,
    /// Connection attempts after a failure.
    pub reconnects: Family<ConnectorLabel, Counter>,
    /// 1 while connected.
    pub connected: Family<ConnectorLabel, Gauge>,
    /// 1 while replaying a backlog (rate limited, live data sent alongside).
    pub replaying: Family<ConnectorLabel, Gauge>,
    /// Values lost before they could be sent (the WAL dropped them when full).
    pub dropped: Family<ConnectorLabel, Counter>,
    /// Time from publishing a message to its acknowledgement.
    pub ack_latency: Family<ConnectorLabel, Histogram, fn() -> Histogram>,
    /// Commands received, by outcome.
    pub commands: Family<CommandLabel, Counter>,
}

impl ConnectorMetrics {
    /// Registered metrics.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        let r = registry.sub_registry_with_prefix("gateway_connector");
        r.register("messages_sent", "Messages handed to the transport", m.messages_sent.clone());
        r.register("values_sent", "Values sent", m.values_sent.clone());
        r.register("values_acked", "Values the target confirmed", m.values_acked.clone());
        r.register("backlog_frames", "Frames waiting in the WAL for this connector", m.backlog_frames.clone());
        r.register_with_unit(
            "backlog",
            "Approximate WAL bytes waiting for this connector",
            Unit::Bytes,
            m.backlog_bytes.clone(),
        );
        r.register("reconnects", "Reconnection attempts", m.reconnects.clone());
        r.register("connected", "1 while connected", m.connected.clone());
        r.register("replaying", "1 while replaying a backlog", m.replaying.clone());
        r.register("dropped_values", "Values lost before they could be sent", m.dropped.clone());
        r.register_with_unit("ack_latency", "Publish to acknowledgement", Unit::Seconds, m.ack_latency.clone());
        r.register("commands", "Commands received, by outcome", m.commands.clone());
        m
    }

    /// Metrics registered nowhere (tests).
    pub fn unregistered() -> Self {
        ConnectorMetrics {
            messages_sent: Family::default(),
            values_sent: Family::default(),
            values_acked: Family::default(),
            backlog_frames: Family::default(),
            backlog_bytes: Family::default(),
            reconnects: Family::default(),
            connected: Family::default(),
            replaying: Family::default(),
            dropped: Family::default(),
            ack_latency: Family::new_with_constructor(ack_histogram),
            commands: Family::default(),
        }
    }
}

impl ConnectorMetrics {
    /// Sets connector `label`'s backlog gauges from where its subscriber
    /// `sub` is, and logs and counts the values the WAL dropped before they
    /// could be sent (each once: `drops_seen` is what was reported before).
    pub(crate) fn report_backlog(&self, bus: &Bus, label: &ConnectorLabel, sub: &Subscriber, drops_seen: &mut u64) {
        let backlog = sub.backlog();
        self.backlog_frames.get_or_create(label).set(backlog as i64);
        if let Some(wal) = bus.wal() {
            let s = wal.stats();
            let span = s.next_seq.saturating_sub(s.first_seq).max(1);
            let bytes = backlog as u128 * u128::from(s.disk_bytes) / u128::from(span);
            self.backlog_bytes.get_or_create(label).set(bytes as i64);
        }
        let drops = sub.drops();
        if drops > *drops_seen {
            tracing::warn!(connector = %label.connector, values = drops - *drops_seen, "Values were lost before they could be sent (the WAL dropped them when it was full).");
            self.dropped.get_or_create(label).inc_by(drops - *drops_seen);
            *drops_seen = drops;
        }
    }
}

impl Default for ConnectorMetrics {
    fn default() -> Self {
        Self::unregistered()
    }
}
