//! Webhook notifications of alarm transitions (`[[alarms.notify]]`): one
//! task per target reads the alarm events from a durable bus cursor of its
//! own (`alarm-notify-{name}`) and POSTs each to the target's URL. The task
//! must never hold up alarm evaluation or another target: a dead webhook only
//! lags its own cursor, whose backlog stays in the WAL until it is delivered
//! or older than `max_age`.
//!
//! **What is sent.** One request per alarm transition, in bus order, one at
//! a time (a batch array would make a receiver's retry of one notification
//! a retry of several, and alarms are few): `POST` with
//! `Content-Type: application/json` and the body
//!
//! ```text
//! {"gateway":"plant-1","id":"hot:boiler.t","rule":"hot","tag":"boiler.t",
//!  "event":"raised","state":"active_unacked","priority":"high",
//!  "value":95.0,"limit":90.0,"user":null,"comment":null,
//!  "message":"boiler.t is 95, above the limit 90","ts":"2025-01-01T12:00:00.123Z"}
//! ```
//!
//! `event` is the transition (`raised`, `cleared`, `acked`, `shelved`,
//! `unshelved`, ...), `state` the ISA-18.2 state it entered, `ts` when it
//! happened; absent fields are `null`. Headers:
//!
//! * `X-Edge-Gateway-Delivery`: the event's bus sequence number, the same on
//!   every retry and after a restart: delivery is at least once (a restart
//!   between the receiver's 2xx and the cursor's move sends it again), so a
//!   receiver drops duplicates by it.
//! * `X-Edge-Gateway-Timestamp`: when this attempt was sent, Unix seconds.
//! * `X-Edge-Gateway-Signature: sha256=<hex>` when `secret` is set: the
//!   HMAC-SHA256 of the exact body bytes under the secret. The body carries
//!   the event's own `ts`, so a receiver can refuse an old body replayed.
//!
//! **What counts as delivered.** A 2xx moves the cursor past the event. 5xx,
//! 408, 429, connection errors and timeouts are retried with exponential
//! backoff (`retry_initial` doubling to `retry_max`, each wait jittered
//! between half and all of it) until delivered or older than `max_age`
//! (given up, counted as `expired`). Any other status (4xx, or a redirect,
//! which is not followed) is permanent: logged, counted as `rejected`, skipped.
//!
//! **Memory.** A target holds one bus delivery, one body and one connection;
//! what it has not sent waits in the WAL, not in memory.

mod config;
mod http;
mod metrics;
mod payload;
mod worker;

use std::sync::Arc;

use gateway_bus::{Bus, BusError, Filter, Shutdown, ShutdownSwitch, SubscribeOptions};
use gateway_model::{FieldError, FrameKind};
use tokio::task::JoinHandle;

pub use config::{CURSOR_PREFIX, MAX_HEADERS, MAX_NAME_LEN, NotifyConfig};
pub use metrics::{DropLabel, NotifyMetrics, TargetLabel};

/// Why a target could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Its configuration is wrong; the field error names the field
    /// (under `alarms.notify[i]` as the caller reports it).
    #[error("{0}")]
    Config(#[from] FieldError),
    /// The bus refused its cursor (a second target of the same name, or the
    /// bus is closed).
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

/// A running webhook target; [`Notifier::stop`] ends it. Dropping it also
/// stops the task (without waiting for it).
#[derive(Debug)]
pub struct Notifier {
    name: String,
    switch: ShutdownSwitch,
    task: Option<JoinHandle<()>>,
}

impl Notifier {
    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the target runs (a disabled one does not).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the task and waits for it. A notification in flight is not
    /// acknowledged: it is sent again after the next start.
    pub async fn stop(mut self) {
        self.switch.stop();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Starts target `cfg`: checks it, opens its durable cursor
/// `alarm-notify-{name}` on `bus` (new cursors start at the newest event)
/// and spawns its task on the current runtime. `gateway` is the `gateway`
/// field of every body. A disabled target gives a [`Notifier`] that runs
/// nothing and leaves its cursor where it was.
pub fn spawn(
    cfg: &NotifyConfig,
    bus: &Bus,
    metrics: Arc<NotifyMetrics>,
    gateway: &str,
) -> Result<Notifier, NotifyError> {
    let endpoint = Arc::new(cfg.endpoint()?);
    let (switch, shutdown) = Shutdown::new();
    if !cfg.enabled {
        return Ok(Notifier { name: cfg.name.clone(), switch, task: None });
    }
    let client = http::Client::new(endpoint, cfg.ca_file.as_deref(), cfg.timeout.duration())?;
    let sub = bus.subscribe(
        SubscribeOptions::durable(format!("{CURSOR_PREFIX}{}", cfg.name))
            .filter(Filter::all().kinds([FrameKind::Event])),
    )?;
    let worker = worker::Worker::new(cfg, client, metrics, gateway);
    let task = tokio::spawn(worker.run(sub, shutdown));
    Ok(Notifier { name: cfg.name.clone(), switch, task: Some(task) })
}
