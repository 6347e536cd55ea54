//! The in-memory catalogue of segments, shared by the writer (which grows it),
//! retention (which shrinks it) and readers (which look records up in it).

use std::path::PathBuf;

/// One entry of the sparse index: a record starting at `offset` with first
/// sequence number `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub seq: u64,
    pub offset: u64,
}

/// Bytes between sparse index entries: a reader seeking a sequence number reads
/// at most this much before it reaches it.
pub(crate) const INDEX_EVERY: u64 = 256 << 10;

#[derive(Clone, Debug)]
pub(crate) struct SegInfo {
    pub base_seq: u64,
    pub path: PathBuf,
    /// Bytes written to the file and readable (a prefix of whole records).
    pub len: u64,
    /// Sequence number after the last whole record written.
    pub end_seq: u64,
    pub index: Vec<IndexEntry>,
    /// Byte ranges known to be corrupt, skipped by readers.
    pub bad: Vec<(u64, u64)>,
    /// The header has [`crate::format::FLAG_AFTER_GAP`]: a gap before this
    /// segment was made on purpose.
    pub after_gap: bool,
    /// Sequence numbers just before `base_seq` that were reserved and never
    /// used ([`crate::format::FLAG_AFTER_SKIP`]): not a gap for a reader.
    pub skipped: u64,
}

impl SegInfo {
    pub fn new(base_seq: u64, path: PathBuf, len: u64) -> Self {
        SegInfo {
            base_seq,
            path,
            len,
            end_seq: base_seq,
            index: Vec::new(),
            bad: Vec::new(),
            after_gap: false,
            skipped: 0,
        }
    }

    /// Offset of the last indexed record at or before `seq`.
    pub fn seek(&self, seq: u64) -> u64 {
        let i = self.index.partition_point(|e| e.seq <= seq);
        if i == 0 { crate::format::SEGMENT_HEADER_LEN } else { self.index[i - 1].offset }
    }

    /// Adds an index entry if the last one is far enough behind.
    pub fn maybe_index(&mut self, seq: u64, offset: u64) {
        if self.index.last().is_none_or(|e| offset >= e.offset + INDEX_EVERY) {
            self.index.push(IndexEntry { seq, offset });
        }
    }
}

/// Index of the segment holding `seq` in a list sorted by base: the last one
/// whose base is at or below `seq`.
pub(crate) fn find(segs: &[SegInfo], seq: u64) -> Option<usize> {
    let i = segs.partition_point(|s| s.base_seq <= seq);
    i.checked_sub(1)
}
