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

/// Runs the configured connectors.
pub struct Connectors {
    stop: ShutdownSwitch,
    tasks: Vec<(String, JoinHandle<()>)>,
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connectors").field("running", &self.tasks.len()).finish()
    }
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
        let (stop, shutdown) = Shutdown::new();
        let mut tasks = Vec::new();
        for c in configs.iter().filter(|c| c.enabled) {
            let ctx = ConnectorContext {
                bus: bus.clone(),
                shutdown: shutdown.clone(),
                metrics: metrics.clone(),
                data_dir: data_dir.clone(),
                gateway: gateway.to_owned(),
            };
            let task = match c.params.build(&c.name, ctx) {
                Ok(task) => tokio::spawn(task),
                Err(e) => {
                    tracing::error!(connector = %c.name, error = %e, "Cannot build the connector; it does not start.");
                    continue;
                }
            };
            tracing::info!(connector = %c.name, "Connector started.");
            tasks.push((c.name.clone(), task));
        }
        Connectors { stop, tasks }
    }

    /// Stops them at once without a goodbye (no DISCONNECT, no NDEATH): what a
    /// crash does. For tests of the broker-side last will.
    pub fn abort(self) {
        for (_, t) in self.tasks {
            t.abort();
        }
    }

    /// Stops them (waiting up to 5 s each); unconfirmed data stays in the WAL.
    pub async fn stop(self) {
        self.stop.stop();
        for (name, mut t) in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut t).await.is_err() {
                tracing::warn!(connector = %name, "Connector did not stop in time; aborting it.");
                t.abort();
            }
        }
    }
}
