//! Read-only inspection of a log directory, for `edge-gateway wal inspect`
//! and `wal verify`: what the segments and cursors hold and what is damaged,
//! without taking the lock or repairing anything, so it works on the log of a
//! running gateway.

use std::path::Path;

use crate::error::{Result, WalError};
use crate::format::{self, CODEC_LZ4, CODEC_RAW};
use crate::recover::{self, RecoveryReport, ScanMode};
use crate::storage::{StdStorage, Storage};

/// One segment file as the inspection found it, without repairing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// File name in the directory, `<base_seq, 20 digits>.seg`.
    pub file: String,
    /// Base sequence number (from the name).
    pub base_seq: u64,
    /// File size in bytes, header included; 0 if it could not be read.
    pub bytes: u64,
    /// Records whose checksums hold.
    pub records: u64,
    /// Sequence number after the last valid record.
    pub end_seq: u64,
    /// Damaged byte ranges (start, end).
    pub corrupt: Vec<(u64, u64)>,
    /// Bytes after the last valid record of the newest segment (a torn write, truncated at the next open).
    pub torn_tail: u64,
    /// The header is damaged (its records are recovered by their own checksums where possible).
    pub header_damaged: bool,
    /// Sequence numbers just before `base_seq` that a run which crashed had
    /// reserved and never used (not a loss; see `WalOptions::reserve_seqs`).
    pub skipped_before: u64,
}

/// What a log directory holds, from [`inspect`]; safe to take while a gateway
/// writes the log.
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    /// Totals, as opening would report them (nothing is repaired).
    pub report: RecoveryReport,
    /// One entry per segment file, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// Whether a process holds the directory's lock.
    pub in_use: bool,
}

impl Inspection {
    /// Whether anything is damaged or missing (a torn tail alone is not
    /// damage: it is an unacknowledged write, truncated at the next open).
    pub fn is_damaged(&self) -> bool {
        self.report.corrupt_regions > 0
            || self.report.lost_seqs > 0
            || !self.report.missing.is_empty()
            || !self.report.bad_segments.is_empty()
            || !self.report.corrupt_cursors.is_empty()
    }
}

fn segment_bases(storage: &dyn Storage, dir: &Path) -> Result<Vec<u64>> {
    let mut bases: Vec<u64> = storage
        .list(dir)
        .map_err(WalError::io("list", dir))?
        .iter()
        .filter_map(|n| format::parse_segment_name(n))
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

/// Inspects the log in `dir` on the real file system.
pub fn inspect(dir: &Path) -> Result<Inspection> {
    inspect_with(&StdStorage, dir)
}

/// [`inspect`] on any storage.
pub fn inspect_with(storage: &dyn Storage, dir: &Path) -> Result<Inspection> {
    let started = std::time::Instant::now();
    let mut out = Inspection::default();
    let lock = dir.join(recover::LOCK_FILE);
    if storage.list(dir).map_err(WalError::io("list", dir))?.iter().any(|n| n == recover::LOCK_FILE) {
        match storage.lock(&lock) {
            Ok(guard) => drop(guard),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => out.in_use = true,
            Err(_) => {}
        }
    }
    let bases = segment_bases(storage, dir)?;
    let mut extents = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(format::segment_name(base));
        let mut r = RecoveryReport::default();
        let is_last = i + 1 == bases.len();
        let seg = match recover::scan_segment(
            storage,
            &path,
            base,
            is_last,
            &mut r,
            ScanMode { repair: false, on_record: None },
        ) {
            Ok(s) => s,
            // Deleted by a running gateway's retention since the listing.
            Err(WalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        extents.push((base, seg.as_ref().map(|s| s.end_seq), seg.as_ref().is_some_and(|s| s.after_gap)));
        let bytes = storage.open(&path, crate::OpenMode::Read).and_then(|f| f.len()).unwrap_or(0);
        out.segments.push(SegmentInfo {
            file: format::segment_name(base),
            base_seq: base,
            bytes,
            records: r.records,
            end_seq: seg.as_ref().map_or(base, |s| s.end_seq),
            corrupt: seg.as_ref().map(|s| s.bad.clone()).unwrap_or_default(),
            torn_tail: r.torn_tail_bytes,
            header_damaged: !r.bad_segments.is_empty(),
            skipped_before: seg.as_ref().map_or(0, |s| s.skipped),
        });
        let t = &mut out.report;
        t.records += r.records;
        t.record_bytes += r.record_bytes;
        t.torn_tail_bytes += r.torn_tail_bytes;
        t.corrupt_regions += r.corrupt_regions;
        t.corrupt_bytes += r.corrupt_bytes;
        t.lost_seqs += r.lost_seqs;
        t.bad_segments.extend(r.bad_segments);
    }
    out.report.missing = recover::missing_ranges(extents);
    out.report.lost_seqs += out.report.missing.iter().map(|&(a, b)| b - a).sum::<u64>();
    let (cursors, corrupt) = recover::read_cursors(storage, dir, false, &mut out.report)?;
    out.report.cursors = cursors.into_iter().collect();
    out.report.corrupt_cursors = corrupt.into_iter().collect();
    out.report.segments = out.segments.len();
    out.report.first_seq = out.segments.first().map_or(0, |s| s.base_seq);
    out.report.next_seq = out.segments.last().map_or(0, |s| s.end_seq.max(s.base_seq));
    out.report.duration = started.elapsed();
    Ok(out)
}

/// Calls `f(first_seq, count, payload)` for every valid record whose range
/// ends after `from_seq`, in order, until `f` returns `false`. Read-only.
pub fn scan_records(dir: &Path, from_seq: u64, f: &mut dyn FnMut(u64, u32, &[u8]) -> bool) -> Result<()> {
    let storage = StdStorage;
    let bases = segment_bases(&storage, dir)?;
    let mut go = true;
    for (i, &base) in bases.iter().enumerate() {
        if !go {
            break;
        }
        if bases.get(i + 1).is_some_and(|&next| next <= from_seq) {
            continue;
        }
        let path = dir.join(format::segment_name(base));
        let mut r = RecoveryReport::default();
        let mut cb = |h: &format::RecordHeader, stored: &[u8]| {
            if !go || h.end_seq() <= from_seq {
                return;
            }
            match h.codec {
                CODEC_RAW => go = f(h.first_seq, h.count, stored),
                CODEC_LZ4 => {
                    let mut out = vec![0u8; h.raw_len as usize];
                    if matches!(lz4_flex::block::decompress_into(stored, &mut out), Ok(n) if n == out.len()) {
                        go = f(h.first_seq, h.count, &out);
                    }
                }
                _ => {}
            }
        };
        recover::scan_segment(
            &storage,
            &path,
            base,
            i + 1 == bases.len(),
            &mut r,
            ScanMode { repair: false, on_record: Some(&mut cb) },
        )?;
    }
    Ok(())
}
