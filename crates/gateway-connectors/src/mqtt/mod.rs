//! The MQTT connector (`kind = "mqtt"`): store-and-forward of bus readings
//! to a broker, and commands from the broker back to the devices.
//!
//! **Delivery** is at least once and in order. The connector reads the bus
//! through a durable cursor that hands it readings as soon as they are
//! published, before the WAL's group commit makes them durable (forward
//! before durable: a reading's age at the broker does not include the commit
//! interval), publishes, and moves the cursor only past readings that are
//! both durable and confirmed by the broker: a crash resumes there, so
//! nothing confirmed is lost and what went out before the crash is at most
//! sent again; a reading the crash lost keeps its sequence number, which the
//! log never gives to another reading. The cursor moves when the broker
//! confirmed everything before it (PUBACK for QoS 1, PUBCOMP for QoS 2; QoS 0 is fire-and-forget
//! and is acknowledged when handed to the socket). At most `max_inflight`
//! messages are unconfirmed; while the broker is away nothing more is read,
//! so the backlog waits in the WAL, not in memory. After a reconnect without
//! a session, or a gateway restart, everything after the last confirmed
//! position is sent again; every value carries its bus sequence number so
//! consumers can drop duplicates. A message the broker refuses (an MQTT 5
//! reason code) is sent again in order with the messages after it: the
//! connector goes back to the last confirmed position, pauses, and sends
//! from there, the refused message alone first. The rules, and how a lost
//! session treats command acknowledgements and births, are in `delivery.rs`.
//!
//! **Replay.** After an outage the backlog is replayed at most
//! `replay_max_rate` values per second while live values are sent alongside
//! through a second, lossy subscription, so an operator sees current values
//! at once instead of after hours of history. (Live values sent this way
//! come again, flagged as historical in Sparkplug, when the replay reaches them.)
//!
//! **Sparkplug B** (`format = "sparkplug_b"`): clean sessions; each
//! connection starts with an NBIRTH carrying its bdSeq, then a DBIRTH per
//! known device; a device's DBIRTH precedes its DDATA; NDEATH is the will
//! (and is sent on a clean stop); NCMD `Node Control/Rebirth` births again.
//!
//! **Commands** from `{topic_prefix}/cmd/{id}` (or Sparkplug DCMD) go to the
//! owning driver through the bus and are answered on
//! `{topic_prefix}/cmd_ack/{id}` (`commands.rs`).
//!
//! Files: `config.rs` (fields, validation, TLS), `delivery.rs` (the pure state
//! machine), `encode.rs` (payloads from readings), `edge_node.rs` and
//! [`crate::sparkplug`] (Sparkplug), `commands.rs`, `link.rs` (both MQTT versions
//! behind one face), `worker.rs` (the I/O loop).

mod commands;
mod config;
mod delivery;
mod edge_node;
mod encode;
#[cfg(test)]
mod fake_broker_tests;
mod link;
mod v311;
mod worker;

use gateway_model::FieldError;

pub use config::{Endpoint, Format, MqttConfig, StartFrom};
pub use link::Protocol;

use crate::{Connector, ConnectorContext, ConnectorError, ConnectorTask};

impl Connector for MqttConfig {
    const KIND: &'static str = "mqtt";

    fn validate(&self) -> Result<(), FieldError> {
        config::validate(self)
    }

    fn build(&self, name: &str, ctx: ConnectorContext) -> Result<ConnectorTask, ConnectorError> {
        // Checked when the configuration was read; the files may have changed since.
        let endpoint = self.endpoint()?;
        let tls = self.tls()?;
        let sub = worker::subscribe(name, self, &ctx)?;
        Ok(Box::pin(worker::run(name.to_owned(), self.clone(), endpoint, tls, sub, ctx)))
    }
}
