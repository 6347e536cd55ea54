//! Northbound connectors: they read the bus through a durable cursor and
//! forward to a target, acknowledging a position only after the target
//! confirmed delivery, so that every reading arrives at least once and in
//! order across outages and restarts.
//!
//! A connector is its config type ([`Connector`]): it validates itself and
//! builds its task. [`CONNECTORS`] maps each `kind = "..."` to its type;
//! adding a target is one module folder plus one line there.
//!
//! Connectors never import drivers (and drivers never import connectors):
//! they meet only on the bus.

mod commands;
pub mod config;
pub mod connector;
mod encode;
pub mod metrics;
pub mod mqtt;
pub mod nats;
mod slots;
pub mod sparkplug;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gateway_bus::{Bus, Shutdown, ShutdownSwitch};
use tokio::task::JoinHandle;

pub use config::{ConnectorConfig, StartFrom, parse_connectors};
pub use connector::{Connector, ConnectorEntry, ConnectorError, ConnectorParams, ConnectorTask};
pub use metrics::ConnectorMetrics;

/// Every connector kind this build knows, by its `kind = "..."` name.
pub static CONNECTORS: &[ConnectorEntry] =
    &[ConnectorEntry::of::<mqtt::MqttConfig>(), ConnectorEntry::of::<nats::NatsConfig>()];

/// Everything a connector may touch.
#[derive(Clone, Debug)]
pub struct ConnectorContext {
    /// Where the readings come from; subscribe with a durable cursor named
    /// after the connector.
    pub bus: Bus,
    /// Fires when the gateway stops; the task then returns soon (it is
    /// aborted after 5 s), leaving what it has not delivered in the WAL.
    pub shutdown: Shutdown,
    /// Shared by all connectors, labelled by connector name.
    pub metrics: Arc<ConnectorMetrics>,
    /// The gateway's data directory (for small state files such as Sparkplug's bdSeq).
    pub data_dir: PathBuf,
    /// The gateway's name (`[gateway] name`): one subject-safe token of
    /// `A-Z a-z 0-9 _ -`, unique in a fleet, for what a connector sends
    /// (NATS subjects and message ids).
    pub gateway: String,
}

/// Runs the configured connectors, each with a stop switch of its own so
/// that a reload restarts only those that changed.
pub struct Connectors {
    running: Vec<Running>,
    bus: Bus,
    metrics: Arc<ConnectorMetrics>,
    data_dir: PathBuf,
    gateway: String,
}

struct Running {
    config: ConnectorConfig,
    stop: ShutdownSwitch,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connectors").field("running", &self.running.len()).finish()
    }
}

/// What [`Connectors::apply`] did, by connector name.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnectorChanges {
    /// Started (new, or enabled).
    pub started: Vec<String>,
    /// Stopped and started again with their new fields.
    pub restarted: Vec<String>,
    /// Stopped (removed, or disabled); their cursors keep their place.
    pub stopped: Vec<String>,
}

impl Connectors {
    /// Starts every enabled connector of the gateway named `gateway`. Their
    /// bus subscriptions exist when this returns: start connectors before the
    /// drivers that feed them.
    pub fn start(
        configs: &[ConnectorConfig],
        bus: &Bus,
        metrics: Arc<ConnectorMetrics>,
        data_dir: PathBuf,
        gateway: &str,
    ) -> Self {
        let mut c =
            Connectors { running: Vec::new(), bus: bus.clone(), metrics, data_dir, gateway: gateway.to_owned() };
        for cfg in configs.iter().filter(|c| c.enabled) {
            c.start_one(cfg);
        }
        c
    }

    fn start_one(&mut self, c: &ConnectorConfig) -> bool {
        let (stop, shutdown) = Shutdown::new();
        let ctx = ConnectorContext {
            bus: self.bus.clone(),
            shutdown,
            metrics: self.metrics.clone(),
            data_dir: self.data_dir.clone(),
            gateway: self.gateway.clone(),
        };
        match c.params.build(&c.name, ctx) {
            Ok(task) => {
                tracing::info!(connector = %c.name, "Connector started.");
                self.running.push(Running { config: c.clone(), stop, task: tokio::spawn(task) });
                true
            }
            Err(e) => {
                tracing::error!(connector = %c.name, error = %e, "Cannot build the connector; it does not start.");
                false
            }
        }
    }

    async fn stop_one(r: Running) {
        r.stop.stop();
        let mut t = r.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut t).await.is_err() {
            tracing::warn!(connector = %r.config.name, "Connector did not stop in time; aborting it.");
            t.abort();
        }
    }

    /// Makes the running connectors those of `configs`: stops the removed
    /// and disabled ones, restarts those whose fields changed, starts the new
    /// ones, and leaves the rest running untouched. A stopped connector's
    /// cursor keeps its place in the WAL (it resumes there if it comes back).
    pub async fn apply(&mut self, configs: &[ConnectorConfig]) -> ConnectorChanges {
        let mut changes = ConnectorChanges::default();
        let mut keep = Vec::new();
        for r in std::mem::take(&mut self.running) {
            match configs.iter().find(|c| c.name == r.config.name && c.enabled) {
                Some(c) if *c == r.config => keep.push(r),
                Some(_) => {
                    let name = r.config.name.clone();
                    // Its cursor must be free before the new one subscribes.
                    Self::stop_one(r).await;
                    changes.restarted.push(name);
                }
                None => {
                    let name = r.config.name.clone();
                    Self::stop_one(r).await;
                    changes.stopped.push(name);
                }
            }
        }
        self.running = keep;
        for c in configs.iter().filter(|c| c.enabled) {
            if self.running.iter().any(|r| r.config.name == c.name) {
                continue;
            }
            let restarted = changes.restarted.contains(&c.name);
            if self.start_one(c) && !restarted {
                changes.started.push(c.name.clone());
            }
        }
        changes
    }

    /// Stops them at once without a goodbye (no DISCONNECT, no NDEATH): what a
    /// crash does. For tests of the broker-side last will.
    pub fn abort(self) {
        for r in self.running {
            r.task.abort();
        }
    }

    /// Stops them (all told at once, then waiting up to 5 s each);
    /// unconfirmed data stays in the WAL.
    pub async fn stop(self) {
        for r in &self.running {
            r.stop.stop();
        }
        for r in self.running {
            Self::stop_one(r).await;
        }
    }
}
