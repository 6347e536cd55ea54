//! What can go wrong in history: the caller's mistakes (a query it may
//! correct) apart from the database's failures, which keep the store's own
//! classification ([`StoreError`]: full, unavailable, schema, ...).

use crate::StoreError;

/// Why a history operation failed. The API answers `Invalid` with 400,
/// `TooManyRows` with 422, `UnknownTag` with 404, and a `Store` error as the
/// metadata store's (507 full, 503 unavailable, else 500).
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The query cannot be answered as asked; the message says how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// An aggregated query asks for more rows than `max_rows`.
    #[error(
        "the query asks for {asked} rows ({buckets} buckets x {tags} tags), more than the limit of {limit}; \
         use a longer interval, a shorter range or fewer tags"
    )]
    TooManyRows {
        /// Rows the query would return.
        asked: u64,
        /// Buckets per tag.
        buckets: u64,
        /// Tags asked for.
        tags: usize,
        /// `[history] max_rows`.
        limit: usize,
    },
    /// No value of this tag was ever recorded (or all of it expired).
    #[error("tag {0:?} has no history")]
    UnknownTag(String),
    /// The history writer has stopped; nothing more can be written.
    #[error("the history writer has stopped")]
    Stopped,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for HistoryError {
    fn from(e: sqlx::Error) -> Self {
        HistoryError::Store(e.into())
    }
}
