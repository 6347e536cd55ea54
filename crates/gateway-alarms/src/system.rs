//! The gateway's watch on itself: figures it samples from its own parts (WAL
//! backlog, ring usage, flush latency, free disk, devices, connectors) fed to
//! the engine under names in the `_gateway.` namespace, with built-in rules.

/// Every system figure's name starts with this; rules may watch them by name.
pub const SUBJECT_PREFIX: &str = "_gateway.";
