//! The log's settings and the figures it reports: durability, the overflow
//! policy, compression, where a new cursor starts, what a flush cycle did,
//! statistics and the flusher's progress.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Result, WalError};
use crate::format::MAX_RECORD_PAYLOAD;
use crate::storage::{StdStorage, Storage};

/// When an appended record counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Never `fdatasync` during operation (only at close): records are durable
    /// once handed to the operating system. Survives a gateway crash, not a power loss.
    None,
    /// Group commit: write and `fdatasync` at most this long after the first
    /// pending record (or sooner when `flush_bytes` are pending). The default, at 10 ms.
    Interval(Duration),
    /// Write and sync as soon as possible after every append; concurrent
    /// appenders still share syncs.
    Always,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::None => f.write_str("none"),
            Durability::Always => f.write_str("always"),
            Durability::Interval(d) => write!(f, "interval({}ms)", d.as_millis()),
        }
    }
}

/// What happens when the log reaches `max_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Appends wait (or fail with [`WalError::Full`] when tried) until consumers
    /// acknowledge and whole segments can be deleted.
    Block,
    /// The oldest segments are deleted even if a consumer has not read them; the
    /// sequence numbers lost are counted in [`WalStats::dropped_seqs`].
    DropOldest,
}

/// How payloads are stored. The choice is recorded in each record's header, so
/// a log may mix both and can be reopened with another setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Payloads are written as appended: no CPU spent, most disk used.
    None,
    /// LZ4 block compression for payloads of 128 bytes or more, kept only when smaller.
    Lz4,
}

/// Where a newly created cursor starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorStart {
    /// At the oldest record still in the log.
    Oldest,
    /// After the last record appended so far.
    Latest,
}

/// What a flush did, passed to [`WalOptions::on_flush`] (the bus turns it into metrics).
#[derive(Clone, Copy, Debug)]
pub struct FlushInfo {
    /// Record bytes written in this flush, headers included, after compression
    /// (segment headers not counted).
    pub bytes: u64,
    /// Whether the flush ended with `fdatasync`: false under
    /// [`Durability::None`] unless a [`Wal::flush`](crate::Wal::flush) or the close forced one.
    pub synced: bool,
    /// Wall time for the writes and, if `synced`, the sync.
    pub duration: Duration,
}

/// Callback for [`FlushInfo`].
pub type FlushHook = Arc<dyn Fn(&FlushInfo) + Send + Sync>;

/// How a log behaves, fixed at [`Wal::open`](crate::Wal::open), which validates it first.
#[derive(Clone)]
pub struct WalOptions {
    /// When appended records are synced to disk; default `Interval(10 ms)`.
    pub durability: Durability,
    /// Size at which a segment is sealed and a new one begun.
    pub segment_bytes: u64,
    /// Cap on the bytes of all segments; default 8 GiB, at least twice
    /// `segment_bytes`.
    pub max_bytes: u64,
    /// What happens when the segments reach `max_bytes`; default `DropOldest`.
    pub overflow: OverflowPolicy,
    /// Pending bytes that make the flusher write before the interval ends.
    pub flush_bytes: usize,
    /// Pending bytes beyond which appends wait (the disk is not keeping up).
    pub max_pending_bytes: usize,
    /// How payloads are stored; default [`Compression::None`].
    pub compression: Compression,
    /// Where the files live: [`StdStorage`] by default, a [`crate::sim`] disk
    /// in crash tests.
    pub storage: Arc<dyn Storage>,
    /// Called on the flusher thread after every successful write of the buffer;
    /// it delays the next flush while it runs, so it must not block.
    pub on_flush: Option<FlushHook>,
    /// Sequence numbers reserved ahead of the appends, in a small file synced
    /// before any of them is handed out; 0 (the default) reserves none. With
    /// a reservation, a log that was not closed cleanly continues after the
    /// reserved range, so a number handed to a reader before it was durable
    /// (and lost in a crash) is never given to other data: what lets readers
    /// forward records before they are durable. At least 1024 when set; it is
    /// renewed in the background when half is used, so appends wait for it
    /// only if they use half a reservation faster than a file is synced.
    pub reserve_seqs: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            durability: Durability::Interval(Duration::from_millis(10)),
            segment_bytes: 64 << 20,
            max_bytes: 8 << 30,
            overflow: OverflowPolicy::DropOldest,
            flush_bytes: 1 << 20,
            max_pending_bytes: 64 << 20,
            compression: Compression::None,
            storage: Arc::new(StdStorage),
            on_flush: None,
            reserve_seqs: 0,
        }
    }
}

impl fmt::Debug for WalOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalOptions")
            .field("durability", &self.durability)
            .field("segment_bytes", &self.segment_bytes)
            .field("max_bytes", &self.max_bytes)
            .field("overflow", &self.overflow)
            .field("flush_bytes", &self.flush_bytes)
            .field("max_pending_bytes", &self.max_pending_bytes)
            .field("compression", &self.compression)
            .field("storage", &self.storage)
            .field("reserve_seqs", &self.reserve_seqs)
            .finish_non_exhaustive()
    }
}

impl WalOptions {
    /// Checks the options; the error names the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(WalError::Config { field, reason });
        if self.segment_bytes < 4096 {
            return bad("segment_bytes", format!("{} is below the minimum of 4096", self.segment_bytes));
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return bad(
                "max_bytes",
                format!("{} must be at least twice segment_bytes ({})", self.max_bytes, self.segment_bytes),
            );
        }
        if self.max_pending_bytes < (MAX_RECORD_PAYLOAD as usize) / 64 {
            return bad("max_pending_bytes", format!("{} is below the minimum of 1 MiB", self.max_pending_bytes));
        }
        if let Durability::Interval(d) = self.durability
            && d > Duration::from_secs(60)
        {
            return bad("durability", format!("a flush interval of {d:?} is longer than the limit of 60 s"));
        }
        if self.reserve_seqs != 0 && !(1024..=1 << 31).contains(&self.reserve_seqs) {
            return bad("reserve_seqs", format!("{} must be 0 or between 1024 and 2^31", self.reserve_seqs));
        }
        Ok(())
    }
}

/// A range of sequence numbers, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqRange {
    /// The first sequence number in the range.
    pub start: u64,
    /// One past the last; a caller waits for durability up to here.
    pub end: u64,
}

impl SeqRange {
    /// How many sequence numbers the range covers (`end - start`).
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    /// Whether `start == end`; a range returned by an append never is.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Counters and positions of a log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Oldest sequence number on disk.
    pub first_seq: u64,
    /// Next sequence number to be assigned.
    pub next_seq: u64,
    /// Sequence numbers below this are written to the files.
    pub written_seq: u64,
    /// Sequence numbers below this are durable.
    pub durable_seq: u64,
    /// Segment files in the directory now, the one being written included.
    pub segments: u64,
    /// Bytes in segment files now, headers included; what `max_bytes` caps.
    pub disk_bytes: u64,
    /// Bytes appended but not yet written.
    pub pending_bytes: u64,
    /// Records appended since this `Wal` was opened (not persisted).
    pub appended_records: u64,
    /// Payload bytes appended since open, before compression.
    pub appended_bytes: u64,
    /// Bytes stored for them, with headers, after compression.
    pub stored_bytes: u64,
    /// Flushes (writes of the buffer).
    pub flushes: u64,
    /// `fdatasync` calls on segments.
    pub syncs: u64,
    /// Segments deleted because every cursor had passed them.
    pub deleted_segments: u64,
    /// Segments deleted by the `drop_oldest` policy before every cursor had read them.
    pub dropped_segments: u64,
    /// Sequence numbers lost to `drop_oldest`.
    pub dropped_seqs: u64,
    /// Appends refused or delayed because the log was full or the disk behind.
    pub full_events: u64,
    /// Corrupt records skipped by readers after open.
    pub read_corrupt_records: u64,
    /// I/O errors in the flusher (each retried).
    pub io_errors: u64,
    /// The last I/O error, if the flusher is currently failing.
    pub last_error: Option<String>,
    /// Whether that error says the disk is full: no space (`ENOSPC`), the
    /// quota (`EDQUOT`) or the file-size limit (`EFBIG`, `ulimit -f`).
    pub disk_full: bool,
}

/// Positions published by the flusher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Sequence numbers below this are written to the files.
    pub written: u64,
    /// Sequence numbers below this are durable.
    pub durable: u64,
    /// Flusher cycles completed since open, whether they succeeded or failed.
    pub cycles: u64,
    /// I/O errors the flusher met since open (each one retried); a
    /// [`Wal::flush`](crate::Wal::flush) fails if this grows while it waits.
    pub failures: u64,
    /// The last [`Wal::flush`](crate::Wal::flush) request served by a completed cycle.
    pub served: u64,
}
