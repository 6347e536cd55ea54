//! Errors of the write-ahead log. I/O failures, refused operations and
//! corruption are distinct: corruption found on open is reported and skipped,
//! never returned as an error that stops the gateway.

use std::io;
use std::path::PathBuf;

/// An error of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another `Wal` in this one) holds the directory.
    #[error("WAL directory {0} is in use by another process (lock file held)")]
    Locked(PathBuf),
    /// The log is at `max_bytes` and the policy is `block`: nothing can be appended
    /// until consumers acknowledge and whole segments can be deleted.
    #[error("WAL is full ({used} of {max} bytes) and the overflow policy is block")]
    Full {
        /// Bytes in use.
        used: u64,
        /// The cap.
        max: u64,
    },
    /// More than `max_pending_bytes` are waiting to be written: the disk is not
    /// keeping up (or failing). Appends wait; tried appends fail with this.
    #[error("WAL write queue is full ({pending} bytes not yet written)")]
    Backlogged {
        /// Bytes waiting.
        pending: u64,
    },
    /// A record larger than the format allows.
    #[error("record of {0} bytes is larger than the limit of {max} bytes", max = crate::format::MAX_RECORD_PAYLOAD)]
    TooLarge(usize),
    /// A record with no sequence numbers.
    #[error("a record must cover at least one sequence number")]
    EmptyRecord,
    /// An invalid cursor name.
    #[error("invalid cursor name {0:?}: use 1-64 of A-Z a-z 0-9 _ - .")]
    CursorName(String),
    /// An acknowledgement beyond what was appended.
    #[error("cursor {name} cannot move to {to}: the log ends at {end}")]
    CursorBeyondEnd {
        /// The cursor.
        name: String,
        /// The position asked for.
        to: u64,
        /// The end of the log.
        end: u64,
    },
    /// The log was closed.
    #[error("WAL is closed")]
    Closed,
    /// Invalid options.
    #[error("invalid WAL option {field}: {reason}")]
    Config {
        /// The option.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A record's checksum failed while reading.
    #[error("corrupt record in {path} at offset {offset}: {what}")]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Offset of the record.
        offset: u64,
        /// What was wrong.
        what: Corruption,
    },
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> WalError {
        let path = path.into();
        move |source| WalError::Io { op, path, source }
    }
}

/// A kind of damage found in the files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The segment is shorter than its header.
    #[error("segment header is truncated ({0} bytes)")]
    ShortSegmentHeader(usize),
    /// The segment does not start with the magic bytes.
    #[error("segment header has the wrong magic")]
    BadSegmentMagic,
    /// The segment header checksum failed.
    #[error("segment header checksum mismatch")]
    SegmentHeaderChecksum,
    /// A layout version this build does not know.
    #[error("unsupported segment format version {0}")]
    UnsupportedVersion(u32),
    /// The segment header names another base sequence than the file name.
    #[error("segment header says base {header}, file name says {name}")]
    BaseMismatch {
        /// From the header.
        header: u64,
        /// From the file name.
        name: u64,
    },
    /// A record failed its checksum or sanity checks.
    #[error("record checksum or header invalid")]
    Record,
    /// A compressed payload did not decompress.
    #[error("payload does not decompress")]
    Decompress,
}

/// Result of WAL operations.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
