//! The gateway's metadata store: the configured devices and their tags, kept
//! in a database so that devices created over the API survive restarts; the
//! users, API tokens and login sessions that say who may do what; and the
//! append-only audit trail of every change. Beside it, [`history`]: every
//! reading, its summaries and the queries over them, in a database of its
//! own (or its own tables), written by a bus subscriber.
//!
//! The same code runs on SQLite (the default: `gateway.db` in the data
//! directory) and PostgreSQL, through sqlx's `Any` driver. The schema sticks to
//! what both dialects and the `Any` driver share: TEXT, BIGINT (0/1 for
//! booleans), JSON objects as TEXT, `$1` placeholders.
//!
//! # Schema
//!
//! ```text
//! devices(name TEXT PRIMARY KEY, driver TEXT, enabled BIGINT, poll_interval_ms BIGINT,
//!         params TEXT /* JSON object */, source TEXT /* 'config' | 'api' */,
//!         created_at_ms BIGINT, updated_at_ms BIGINT)
//! tags(device TEXT REFERENCES devices(name) ON DELETE CASCADE, name TEXT, position BIGINT,
//!      writable BIGINT, params TEXT /* JSON object */, PRIMARY KEY (device, name))
//! users(name TEXT PRIMARY KEY, role TEXT, password_hash TEXT /* argon2id PHC */, created_at_ms, updated_at_ms)
//! api_tokens(name TEXT PRIMARY KEY, role TEXT, token_sha256 TEXT UNIQUE, created_at_ms)
//! sessions(id_sha256 TEXT PRIMARY KEY, user_name TEXT REFERENCES users ON DELETE CASCADE,
//!          created_at_ms, expires_at_ms)
//! audit(id /* increasing */, ts_ms, actor, source, action, target, outcome, detail /* JSON */)
//!      -- append-only: triggers refuse UPDATE and DELETE
//! ```
//!
//! The schema is created and upgraded by embedded migrations when the store
//! opens ([`migrate`]); a database upgraded by a newer gateway is refused.
//!
//! # Guarantees
//!
//! * Every change is atomic: a device and all its tags are replaced together.
//! * Reading never panics on stored data: a row that cannot be decoded is
//!   reported as [`StoreError::Corrupt`].
//! * Deleting a device deletes its tags, on both databases.
//! * A write that fails because the database is full ([`StoreError::Full`])
//!   or unavailable ([`StoreError::Unavailable`]) leaves no pooled connection
//!   inside a transaction: writes work again as soon as the database can take
//!   them, and [`Store::health`] reports the failure until one does.

mod audit;
mod config;
mod error;
pub mod history;
pub mod migrate;
mod record;
mod security;
mod store;

pub use audit::{AuditEntry, AuditQuery, NewAuditEntry};
pub use config::{DEFAULT_SQLITE_FILE, DatabaseConfig, MAX_DURATION_S};
pub use error::StoreError;
pub use history::{History, HistoryConfig, HistoryError, HistoryMetrics};
pub use record::{DeviceRecord, Source, TagRecord};
pub use security::{Holder, Role, TokenRecord, UserRecord};
pub use store::{Dialect, Store, SyncReport};
