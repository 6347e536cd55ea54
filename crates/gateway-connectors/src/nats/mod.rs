//! The NATS JetStream connector (`kind = "nats"`): bus readings into a
//! (replicated) JetStream stream, exactly once, and commands from NATS back
//! to the devices. For a fleet: many gateways feed one stream in a plant's
//! data centre, each under its own subjects (`docs/fleet.md`).
//!
//! **Subjects.** `{prefix}` is `subject_prefix` with `{gateway_name}`
//! replaced (default `gw.{gateway_name}`):
//!
//! ```text
//! {prefix}.data.{device}.{point}   json: one value per message
//! {prefix}.batch                   json_batch: {"values":[...]}
//! {prefix}.spb.{device}            sparkplug_b: a Sparkplug B Payload per device
//! {prefix}.alarms.{rule}.{tag}     alarm transitions (JSON), with `alarms = true`
//! {prefix}.cmd.{id}                commands in   (never captured by the stream)
//! {prefix}.cmd_ack.{id}            their answers, unless the command had a reply inbox
//! ```
//!
//! A stream the connector creates captures the data subjects of every
//! gateway under the same prefix (`gw.*.data.>`, `gw.*.batch`,
//! `gw.*.spb.>`, `gw.*.alarms.>`), so the first gateway of a fleet to start creates the
//! stream the others bind to; an existing stream is never changed, only
//! checked to capture this gateway's subjects.
//!
//! **At least once on our side, exactly once in the stream.** The connector
//! reads the bus through a durable cursor (which only hands it durable
//! frames), publishes each message to JetStream and moves the cursor only
//! past readings whose messages the stream acknowledged (`delivery.rs`). At
//! most `max_inflight` messages await their acknowledgement; while the
//! window is full, or the server is away, nothing more is read, so a backlog
//! waits in the WAL. Every message carries `Nats-Msg-Id` =
//! `{gateway}.{connector}.{first seq}-{last seq}` (`{seq}` for one value),
//! the same each time the same readings are sent (`encode.rs`): after a
//! failed or timed-out publish, a leader election or a gateway crash,
//! everything after the last acknowledged reading is sent again, in order,
//! and the stream's duplicate window (`duplicate_window_s`) drops what it
//! had already stored. A failure pauses sending (`reconnect_min_ms`
//! doubling up to `reconnect_max_ms`) and probes with one message until one
//! is acknowledged: "no responders" while a stream's leader is elected is
//! retried this way, never counted as delivered.
//!
//! Gateway names must be unique among the gateways feeding a stream (their
//! subjects and message ids carry it), and a resend is dropped only within
//! the duplicate window: a message stored, its acknowledgement lost, and the
//! link then down for longer than the window comes twice (each value
//! carries its `seq` for a consumer to tell). In the rare case of a message
//! that failed while the one after it was stored (a leader elected in
//! between), the resent message lands after it in the stream: readings of
//! one gateway are in `seq` order except across such a failure.
//!
//! **Replay** after an outage runs as fast as the stream acknowledges, or at
//! most `replay_max_rate` values per second while more than a second of
//! backlog waits. Readings reach the stream in bus order, so live values
//! wait behind the backlog (the gateway's own API shows them at once).
//!
//! **Commands** on `{prefix}.cmd.>` go to the owning driver through the bus
//! and are answered to the reply inbox (or `{prefix}.cmd_ack.{id}`;
//! `commands.rs`). They are trusted like the MQTT connector's: the NATS
//! account's permissions must say who may publish there. Each is audited
//! with the actor `nats:{connector}`.
//!
//! **Security.** Token, user/password, NKey seed or a `.creds` file, and TLS
//! (`tls://` servers, `ca_file`, mutual TLS with `client_cert_file`);
//! secrets never appear in errors, logs or `Debug` output, and the files are
//! read when the configuration is checked (`config.rs`). A server refusing
//! the credentials is logged as such and retried with backoff.
//!
//! Files: `config.rs` (fields, validation, files), `delivery.rs` (the pure
//! state machine), `encode.rs` (subjects, payloads and message ids),
//! `commands.rs` (command subjects), `worker.rs` (the I/O loop).

mod commands;
mod config;
mod delivery;
mod encode;
mod worker;

use gateway_model::FieldError;

pub use config::{Format, NatsConfig};

use crate::{Connector, ConnectorContext, ConnectorError, ConnectorTask};

impl Connector for NatsConfig {
    const KIND: &'static str = "nats";

    fn validate(&self) -> Result<(), FieldError> {
        config::validate(self)
    }

    fn build(&self, name: &str, ctx: ConnectorContext) -> Result<ConnectorTask, ConnectorError> {
        // Checked when the configuration was read; the files may have changed since.
        let setup = worker::Setup { servers: self.server_addrs()?, auth: self.auth()?, tls: self.tls_config()? };
        let sub = worker::subscribe(name, self, &ctx)?;
        Ok(Box::pin(worker::run(name.to_owned(), self.clone(), setup, sub, ctx)))
    }
}
