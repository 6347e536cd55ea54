//! The frame bus: every driver publishes into it and every consumer (the
//! latest-value cache, the WebSocket hub, alarms, connectors) reads from it.
//!
//! * [`BusConfig`] is the `[bus]` section of the config file; resolved, it
//!   gives the [`BusSettings`] the bus runs with: the original gateway's knobs
//!   and its four presets ([`Preset`]).
//! * [`Bus::publish`] takes a shared [`Batch`](gateway_model::Batch); in WAL
//!   mode the batch is encoded and appended to the write-ahead log, then
//!   placed in the ring. Nothing is copied after that: subscribers get the same
//!   `Arc<Batch>`.
//! * Backpressure with hysteresis: publishers wait (asynchronously) when the
//!   ring held for lossless subscribers passes `pause_hi` of its capacity, or
//!   the WAL's unwritten frames pass `backpressure_threshold` of
//!   `async_write_queue_size`, and resume below `resume_lo`.
//! * Subscribers ([`Subscriber`]) are lossy (bounded lag, counted drops) or
//!   durable (a named WAL cursor: ring near the head, WAL when behind, resume
//!   after restart from the last [`Subscriber::ack`]).
//! * Commands ([`Bus::command`]) reach the driver that owns the device and
//!   their acknowledgement comes back, within a timeout.
//! * Metrics ([`BusMetrics`]) use the original's names with the
//!   `gateway_bus_` prefix and its histogram buckets.
//!
//! The bus must never block a publisher on a lossy subscriber, never lose a
//! frame for a durable one without counting it, and never panic on what it reads
//! back from the WAL.

mod batcher;
mod bus;
mod command;
pub mod config;
mod error;
pub mod metrics;
mod shutdown;
mod subscriber;

pub use batcher::Batcher;
pub use bus::{Bus, BusStats, SEQ_RESERVATION, SubscriberStats};
pub use command::{CommandInbox, CommandRequest};
pub use config::{BatchConfig, BatchSettings, BusConfig, BusSettings, Persistence, Preset};
pub use error::{BusError, TryPublishError};
pub use gateway_wal::{CursorStart, SeqRange};
pub use metrics::{BusMetrics, FlushTally, FlushWindow};
pub use shutdown::{Shutdown, ShutdownSwitch};
pub use subscriber::{Delivery, Filter, READER_IDLE, SubscribeOptions, Subscriber};
