//! Errors of the bus.

use std::sync::Arc;

use gateway_model::Batch;

/// Why the bus refused to open, publish or subscribe.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The settings failed validation; the field error names the bad field.
    #[error("invalid bus configuration: {0}")]
    Config(#[from] gateway_model::FieldError),
    /// The write-ahead log could not be opened or refused an append; in WAL
    /// mode nothing is published without it.
    #[error("write-ahead log: {0}")]
    Wal(#[from] gateway_wal::WalError),
    /// The bus was closed ([`crate::Bus::close`]): publishers get this at once,
    /// subscribers once they were given everything published before the close.
    #[error("the bus is closed")]
    Closed,
    /// A batch with more frames than the ring can ever hold.
    #[error("a batch of {len} frames is larger than the bus accepts ({max})")]
    TooLarge {
        /// Frames in the refused batch.
        len: usize,
        /// The most frames one batch may carry: half the ring's capacity.
        max: usize,
    },
    /// A subscriber name that is already in use.
    #[error("a subscriber named {0:?} already exists")]
    DuplicateSubscriber(String),
    /// A durable subscriber name the WAL does not accept.
    #[error("invalid subscriber name {0:?}: use 1-64 of A-Z a-z 0-9 _ - .")]
    SubscriberName(String),
}

/// Why [`crate::Bus::try_publish`] did not publish; the batch is handed back.
#[derive(Debug, thiserror::Error)]
pub enum TryPublishError {
    /// Backpressure: the ring or the WAL queue is above its threshold.
    #[error("the bus is applying backpressure")]
    Full(Arc<Batch>),
    /// Not backpressure: the bus is closed, the batch too large or the WAL
    /// failed. The batch is not handed back.
    #[error(transparent)]
    Other(#[from] BusError),
}
