//! Webhook metrics, labelled by target: notifications delivered, attempts
//! that failed, notifications given up (and why), and how far the target's
//! cursor is behind the bus.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The target label: the `name` of an `[[alarms.notify]]` entry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    /// Target name.
    pub target: String,
}

/// A given-up notification's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabel {
    /// Target name.
    pub target: String,
    /// `expired` (older than `max_age`) or `rejected` (a 4xx other than 408 and 429).
    pub reason: String,
}

/// Metrics of all webhook targets.
#[derive(Debug, Default)]
pub struct NotifyMetrics {
    /// Notifications the receiver accepted (2xx).
    pub sent: Family<TargetLabel, Counter>,
    /// Attempts that failed: connection errors, timeouts and non-2xx
    /// answers, each retry counted again.
    pub failed: Family<TargetLabel, Counter>,
    /// Notifications given up, by reason.
    pub dropped: Family<DropLabel, Counter>,
    /// Bus frames (of every kind) between the target's cursor and the head:
    /// zero when it is caught up, growing while its webhook is down.
    pub backlog: Family<TargetLabel, Gauge>,
}

impl NotifyMetrics {
    /// The metrics, registered as `alarm_notify_*`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        let r = registry.sub_registry_with_prefix("gateway_alarm_notify");
        r.register("sent", "Alarm notifications the webhook accepted", m.sent.clone());
        r.register("failed", "Webhook attempts that failed (each retry counted)", m.failed.clone());
        r.register("dropped", "Alarm notifications given up, by reason (expired, rejected)", m.dropped.clone());
        r.register("backlog", "Bus frames between the target's cursor and the head", m.backlog.clone());
        m
    }

    /// Metrics registered nowhere (tests).
    pub fn unregistered() -> Self {
        Self::default()
    }

    /// Notifications target `target` delivered so far.
    pub fn sent_of(&self, target: &str) -> u64 {
        self.sent.get_or_create(&TargetLabel { target: target.to_owned() }).get()
    }

    /// Failed attempts of target `target` so far.
    pub fn failed_of(&self, target: &str) -> u64 {
        self.failed.get_or_create(&TargetLabel { target: target.to_owned() }).get()
    }

    /// Notifications target `target` gave up for `reason` so far.
    pub fn dropped_of(&self, target: &str, reason: &str) -> u64 {
        self.dropped.get_or_create(&DropLabel { target: target.to_owned(), reason: reason.to_owned() }).get()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn metrics_render_with_the_alarm_notify_prefix_and_target_labels() {
        let mut r = Registry::default();
        let m = NotifyMetrics::new(&mut r);
        m.sent.get_or_create(&TargetLabel { target: "ops".into() }).inc();
        m.dropped.get_or_create(&DropLabel { target: "ops".into(), reason: "expired".into() }).inc();
        let mut out = String::new();
        encode(&mut out, &r).unwrap();
        assert!(out.contains("alarm_notify_sent_total{target=\"ops\"} 1"), "{out}");
        assert!(out.contains("alarm_notify_dropped_total{target=\"ops\",reason=\"expired\"} 1"), "{out}");
        assert_eq!(m.sent_of("ops"), 1);
        assert_eq!(m.dropped_of("ops", "rejected"), 0);
    }
}
