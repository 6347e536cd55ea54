//! Errors of the write-ahead log. I/O failures, refused operations and
//! corruption are distinct: corruption found on open is reported and skipped,
//! never returned as an error that stops the gateway.

use std::io;
use std::path::PathBuf;

/// Why a WAL operation failed. `Io` and `Backlogged` point at the disk; `Full`
/// at consumers that do not acknowledge; `Config`, `TooLarge`, `EmptyRecord`
/// and the cursor errors at the caller; `Closed` at a shutdown in progress.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The operating system failed a file operation. From [`Wal::flush`] and
    /// [`Wal::close`] it reports the flusher's last failure, which is retried.
    ///
    /// [`Wal::flush`]: crate::Wal::flush
    /// [`Wal::close`]: crate::Wal::close
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation: `open`, `create`, `read`, `write`, `sync`, `rename`,
        /// `remove`, `truncate`, `list`, `stat`, `lock`, or `flush`/`close`.
        op: &'static str,
        /// The file or directory it was done on (the WAL directory for
        /// `flush` and `close`).
        path: PathBuf,
        /// What the operating system said; for `flush` and `close`, the
        /// flusher's last error as text.
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
        /// Bytes on disk plus bytes pending, with the refused record included.
        used: u64,
        /// [`WalOptions::max_bytes`](crate::WalOptions::max_bytes).
        max: u64,
    },
    /// More than `max_pending_bytes` are waiting to be written: the disk is not
    /// keeping up (or failing). Appends wait; tried appends fail with this.
    #[error("WAL write queue is full ({pending} bytes not yet written)")]
    Backlogged {
        /// Bytes appended but not yet written by the flusher.
        pending: u64,
    },
    /// A record larger than the format allows.
    #[error("record of {0} bytes is larger than the limit of {max} bytes", max = crate::format::MAX_RECORD_PAYLOAD)]
    TooLarge(usize),
    /// A record with no sequence numbers.
    #[error("a record must cover at least one sequence number")]
    EmptyRecord,
    /// A cursor name that is empty, longer than 64 bytes, starts with `.` or
    /// has a character outside `A-Z a-z 0-9 _ - .`; also a commit on a cursor
    /// that was removed (the name then ends in ` (removed)`).
    #[error("invalid cursor name {0:?}: use 1-64 of A-Z a-z 0-9 _ - .")]
    CursorName(String),
    /// An acknowledgement beyond what was appended.
    #[error("cursor {name} cannot move to {to}: the log ends at {end}")]
    CursorBeyondEnd {
        /// The cursor's name.
        name: String,
        /// The position passed to [`Cursor::commit`](crate::Cursor::commit).
        to: u64,
        /// The next sequence number to be assigned when the commit was tried:
        /// nothing at or past it has been appended.
        end: u64,
    },
    /// The log is closing or closed: appends, waits and flushes fail with this
    /// once shutdown has begun.
    #[error("WAL is closed")]
    Closed,
    /// [`WalOptions::validate`](crate::WalOptions::validate) refused the
    /// options, which `Wal::open` checks first.
    #[error("invalid WAL option {field}: {reason}")]
    Config {
        /// The `WalOptions` field at fault, such as `segment_bytes`.
        field: &'static str,
        /// What is wrong with its value, with the limit it broke.
        reason: String,
    },
    /// A damaged record. Nothing in this crate returns it today: readers skip
    /// damaged records and count them in `WalStats::read_corrupt_records`.
    #[error("corrupt record in {path} at offset {offset}: {what}")]
    Corrupt {
        /// The segment file that holds the record.
        path: PathBuf,
        /// Byte offset of the record in that file.
        offset: u64,
        /// Which check failed.
        what: Corruption,
    },
}

impl WalError {
    /// Whether this is an I/O error that means the disk is full: no space
    /// (`ENOSPC`), the quota (`EDQUOT`), or the file-size limit (`EFBIG`,
    /// what a write past `ulimit -f` fails with once SIGXFSZ does not kill
    /// the process). All three are retried alike; only space helps.
    pub fn is_disk_full(&self) -> bool {
        use io::ErrorKind::{FileTooLarge, QuotaExceeded, StorageFull};
        matches!(self, WalError::Io { source, .. } if matches!(source.kind(), StorageFull | QuotaExceeded | FileTooLarge))
    }

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
        /// The base sequence number written in the segment header.
        header: u64,
        /// The base sequence number the file name gives.
        name: u64,
    },
    /// A record failed its checksum or sanity checks.
    #[error("record checksum or header invalid")]
    Record,
    /// A compressed payload did not decompress.
    #[error("payload does not decompress")]
    Decompress,
}

/// `Result` with [`WalError`] as the default error type.
pub type Result<T, E = WalError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_quota_and_the_file_size_limit_all_count_as_a_full_disk() {
        // Linux errno values: EFBIG, ENOSPC, EDQUOT; then EIO, which is not.
        let err = |errno| WalError::io("write", "/wal/0.seg")(io::Error::from_raw_os_error(errno));
        for errno in [27, 28, 122] {
            assert!(err(errno).is_disk_full(), "errno {errno}");
        }
        assert!(!err(5).is_disk_full());
        assert!(!WalError::Closed.is_disk_full());
    }
}
