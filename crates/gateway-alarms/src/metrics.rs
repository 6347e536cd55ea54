//! Alarm metrics: readings evaluated and the time it took, transitions by
//! kind, alarms needing attention, and what was dropped (events the bus
//! could not take, samples the task could not keep up with).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// The transition label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabel {
    /// `raised`, `cleared`, `acked`, `shelved`, ...
    pub event: String,
}

/// Metrics of the alarm service.
#[derive(Debug, Default)]
pub struct AlarmMetrics {
    /// Readings evaluated.
    pub evaluated: Counter,
    /// Time spent evaluating them.
    pub eval_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Readings the service skipped because it fell a whole ring behind.
    pub readings_skipped: Counter,
    /// Transitions, by kind.
    pub transitions: Family<TransitionLabel, Counter>,
    /// Alarm events put on the bus.
    pub events_published: Counter,
    /// Alarm events dropped while the bus refused them for too long.
    pub events_dropped: Counter,
    /// System figures dropped because the service was behind.
    pub samples_dropped: Counter,
    /// Failed writes of the state file.
    pub state_write_errors: Counter,
    /// Alarms needing attention now.
    pub active: Gauge,
    /// Rules loaded.
    pub rules: Gauge,
}

impl AlarmMetrics {
    /// Registers them under `gateway_alarm_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = AlarmMetrics::default();
        let r = registry.sub_registry_with_prefix("gateway_alarm");
        r.register("evaluated", "Readings evaluated against alarm rules", m.evaluated.clone());
        r.register_with_unit("eval", "Time spent evaluating readings", Unit::Seconds, m.eval_seconds.clone());
        r.register(
            "readings_skipped",
            "Readings not evaluated: the alarm service fell a ring behind",
            m.readings_skipped.clone(),
        );
        r.register("transitions", "Alarm transitions by event", m.transitions.clone());
        r.register("events_published", "Alarm events put on the bus", m.events_published.clone());
        r.register(
            "events_dropped",
            "Alarm events dropped: the bus refused them for too long",
            m.events_dropped.clone(),
        );
        r.register(
            "samples_dropped",
            "Gateway figures dropped: the alarm service was behind",
            m.samples_dropped.clone(),
        );
        r.register("state_write_errors", "Failed writes of the alarms' state file", m.state_write_errors.clone());
        r.register("active", "Alarms neither normal nor disabled", m.active.clone());
        r.register("rules", "Alarm rules loaded", m.rules.clone());
        m
    }

    /// Counts a transition.
    pub fn transition(&self, event: &str) {
        self.transitions.get_or_create(&TransitionLabel { event: event.to_owned() }).inc();
    }
}
