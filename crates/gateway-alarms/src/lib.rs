//! Alarms: rules on tags and on the gateway's own health, evaluated on every
//! reading the bus carries, each alarm following the ISA-18.2 state machine
//! (normal, active-unacknowledged, active-acknowledged,
//! cleared-unacknowledged, shelved, disabled). Every transition is an
//! [`gateway_model::EventFrame`] with an [`gateway_model::AlarmInfo`] on the
//! bus, so it reaches the WAL, the connectors, the history's alarm journal and
//! WebSocket clients like any reading; notifications (webhooks) read the same
//! events from a durable cursor of their own.
//!
//! - [`rule`]: rules as written and checked;
//! - [`machine`]: one alarm's condition and state machine (pure);
//! - [`engine`]: all alarms, found per reading with one lookup (pure);
//! - [`service`]: the task that feeds the engine, keeps its state across
//!   restarts and publishes its events;
//! - [`system`]: the built-in rules on the gateway's own figures;
//! - [`notify`]: webhooks, each on a durable cursor of its own;
//! - [`sampler`]: the task that samples those figures and feeds them in.

pub mod engine;
pub mod machine;
pub mod metrics;
pub mod notify;
pub mod rule;
pub mod sampler;
pub mod service;
pub mod system;

pub use engine::{AlarmView, Engine, EngineError};
pub use machine::{ActionError, Alarm, Change};
pub use metrics::AlarmMetrics;
pub use notify::{Notifier, NotifyConfig, NotifyError, NotifyMetrics};
pub use rule::{Kind, Priority, Rule, RuleConfig, Target};
pub use sampler::{HealthProbe, spawn_sampler};
pub use service::{AlarmService, AlarmsConfig, ServiceError};
pub use system::SystemConfig;
