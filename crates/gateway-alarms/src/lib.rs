//! Alarms: rules on tags and on the gateway's own health, evaluated on every
//! reading the bus carries, each alarm following the ISA-18.2 state machine
//! (normal, active-unacknowledged, active-acknowledged,
//! cleared-unacknowledged, shelved, disabled). Every transition is an
//! [`gateway_model::EventFrame`] with an [`gateway_model::AlarmInfo`] on the
//! bus, so it reaches the WAL, the connectors, the history's alarm journal and
//! WebSocket clients like any reading; notifications (webhooks) read the same
//! events from a durable cursor of their own.

pub mod notify;
pub mod rule;
pub mod system;

pub use notify::{Notifier, NotifyConfig, NotifyError, NotifyMetrics};
pub use rule::{Kind, Priority, Rule, RuleConfig, Target};
