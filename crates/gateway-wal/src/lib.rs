//! The gateway's durable segmented write-ahead log.
//!
//! Every reading the gateway accepts is appended here before it is forwarded,
//! so that a crash, a broker outage or a full disk loses nothing that was
//! acknowledged. The log knows bytes and sequence numbers, not frames: the bus
//! encodes a batch of `n` frames into one record covering `n` sequence numbers.
//!
//! # Guarantees
//!
//! * A record whose durability was awaited ([`Wal::wait_durable`]) survives a
//!   crash or power loss (with [`Durability::Interval`] or [`Durability::Always`]).
//! * Opening never fails because of file contents: a torn tail is truncated, a
//!   corrupt record is counted and skipped, a damaged cursor file restarts its
//!   consumer at the oldest record ([`RecoveryReport`]). It fails only on I/O
//!   errors or when another process holds the directory ([`WalError::Locked`]).
//! * Sequence numbers are never reused, even when data was lost: a cursor found
//!   ahead of the data moves the log's end past it.
//! * Records are read back in sequence order; what cannot be delivered is
//!   reported as a [`ReadItem::Gap`], never silently skipped (numbers a
//!   crashed run reserved and never used are not data, and not a gap).
//!
//! # Directory layout
//!
//! ```text
//! <dir>/LOCK                       exclusive lock (flock) held while open
//! <dir>/00000000000000000000.seg   segments, named by the first sequence number
//! <dir>/00000000000001048576.seg   they may hold (20 decimal digits)
//! <dir>/cursors/<name>.cur         one file per named cursor
//! ```
//!
//! # Segment file
//!
//! All integers are little-endian and fixed width.
//!
//! ```text
//! offset size  field
//!  0      8    magic "EGWALSG1"
//!  8      4    format version (1)
//! 12      4    flags: bit 0 = after a gap (see below), the others 0
//! 16      8    base sequence number (equals the file name)
//! 24      4    reserved (0)
//! 28      4    CRC32C of bytes 0..28
//! 32      ...  records, back to back
//! ```
//!
//! A log opened with a cursor ahead of its data continues at that cursor in
//! a new segment flagged "after a gap": the sequence numbers before it were
//! lost (reported then as cursors ahead), and later opens do not report them
//! again. Any other gap between segments (a segment deleted or cut short
//! outside the gateway, a damaged tail or header) is reported at every open
//! and inspection as missing, lost data ([`RecoveryReport::missing`]).
//!
//! # Record
//!
//! ```text
//! offset size  field
//!  0      4    CRC32C of the stored payload followed by bytes 4..28
//!  4      4    stored payload length (after compression), at most 64 MiB
//!  8      8    first sequence number
//! 16      4    count: sequence numbers covered (>= 1); the next record starts at first + count
//! 20      1    codec: 0 raw, 1 LZ4 block
//! 21      3    reserved (0)
//! 24      4    payload length before compression (equals the stored length when raw)
//! 28      n    stored payload
//! ```
//!
//! A record is valid when its header is plausible (count >= 1, reserved bytes
//! zero, known codec, lengths within limits, sequence not going backwards) and
//! the CRC matches. On open, an invalid record is followed by a search for the
//! next valid one: if there is one, the bytes between are a corrupt region
//! (counted, skipped by readers); if there is none and this is the newest
//! segment, it is a torn write and the file is truncated there.
//!
//! # Cursor file
//!
//! ```text
//! offset size  field
//!  0      8    magic "EGWALCR1"
//!  8      8    position: the next sequence number the consumer needs
//! 16      4    reserved (0)
//! 20      4    CRC32C of bytes 0..20
//! ```
//!
//! A cursor is replaced atomically: written to `<name>.cur.tmp`, synced,
//! renamed over `<name>.cur`, and the directory synced.
//!
//! # Writing
//!
//! [`Wal::try_append`] copies the record into a pending buffer under a short
//! lock and returns its [`SeqRange`]. A flusher thread writes the buffer with
//! positional writes and, per [`Durability`], `fdatasync`s it: every
//! `interval`, as soon as possible (`always`), or never (`none`, sync at close
//! only). One sync covers every record appended meanwhile (group commit).
//! Segments are sealed at `segment_bytes`.
//!
//! # Retention
//!
//! A sealed segment is deleted once every cursor's position is past it (with no
//! cursors, once it is sealed: nobody needs the data). When the segments exceed
//! `max_bytes`, [`OverflowPolicy::Block`] makes appends wait (or fail when
//! tried) and [`OverflowPolicy::DropOldest`] deletes the oldest segments and
//! counts the sequence numbers lost in [`WalStats::dropped_seqs`].

mod block_on;
mod cursor;
mod error;
mod flusher;
mod format;
pub mod inspect;
mod options;
mod reader;
mod recover;
mod segs;
mod shared;
pub mod sim;
mod storage;
mod wal;

pub use block_on::block_on;
pub use error::{Corruption, Result, WalError};
pub use reader::{ReadItem, Reader, Record};
pub use recover::RecoveryReport;
pub use storage::{OpenMode, StdStorage, Storage, StorageFile};
pub use wal::{
    Compression, Cursor, CursorStart, Durability, FlushHook, FlushInfo, OverflowPolicy, Progress, SeqRange, Wal,
    WalOptions, WalStats,
};

/// Layout constants, for tools that inspect log files.
pub mod layout {
    pub use crate::format::{MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
}
