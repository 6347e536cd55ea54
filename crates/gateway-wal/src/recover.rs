//! Opening a log directory: find the segments, check every record, truncate a
//! torn tail, count and skip corruption, load the cursors. Whatever the files
//! contain, this ends with a usable log and a [`RecoveryReport`], never a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Corruption, Result, WalError};
use crate::format::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, Scan};
use crate::segs::SegInfo;
use crate::storage::{OpenMode, Storage, StorageFile};

/// What opening the log found and did. Shown by `edge-gateway wal verify` and
/// logged at start-up.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Segments kept in the log after the scan.
    pub segments: usize,
    /// Records whose checksums hold, over all segments.
    pub records: u64,
    /// Bytes those records take on disk, record headers included.
    pub record_bytes: u64,
    /// Oldest sequence number still in the log.
    pub first_seq: u64,
    /// Next sequence number to be assigned.
    pub next_seq: u64,
    /// Bytes cut off the end of the newest segment (an interrupted write).
    pub torn_tail_bytes: u64,
    /// Damaged regions skipped inside the log.
    pub corrupt_regions: u64,
    /// Bytes in those regions.
    pub corrupt_bytes: u64,
    /// Sequence numbers lost to damage, the [`RecoveryReport::missing`]
    /// ranges included (an estimate where a whole segment tail is lost).
    pub lost_seqs: u64,
    /// Sequence ranges `(start, end)` (end exclusive) that no segment holds
    /// although later ones exist: a segment deleted or cut short outside the
    /// gateway, a sealed segment whose tail was damaged, or one skipped for
    /// a damaged header. Oldest first; counted in `lost_seqs`.
    pub missing: Vec<(u64, u64)>,
    /// Segments whose header was damaged. Their records are recovered by their
    /// own checksums (and the header rewritten on open); a segment with none
    /// left is skipped.
    pub bad_segments: Vec<String>,
    /// Left-over temporary files removed.
    pub removed_files: Vec<String>,
    /// Cursors loaded, with their positions.
    pub cursors: Vec<(String, u64)>,
    /// Cursor files that were damaged; those consumers restart from the oldest record.
    pub corrupt_cursors: Vec<String>,
    /// Cursors that pointed past the end of the log (data lost while their
    /// acknowledgement survived); the log continues after them so that no
    /// sequence number is ever reused.
    pub cursors_ahead: Vec<(String, u64)>,
    /// Files in the directory that are not part of the log.
    pub unknown_files: Vec<String>,
    /// Sequence numbers skipped because they were reserved for handing out
    /// when the log was last open and it was not closed cleanly: some may
    /// have been given to readers ahead of durability and lost in the crash,
    /// so none is given to new data. No data is lost by the skip itself.
    pub skipped_seqs: u64,
    /// Wall time of the whole scan, cursors included.
    pub duration: Duration,
}

impl RecoveryReport {
    /// Whether anything was found damaged, missing or repaired.
    pub fn is_clean(&self) -> bool {
        self.torn_tail_bytes == 0
            && self.corrupt_regions == 0
            && self.lost_seqs == 0
            && self.missing.is_empty()
            && self.bad_segments.is_empty()
            && self.corrupt_cursors.is_empty()
            && self.cursors_ahead.is_empty()
    }

    /// The [`RecoveryReport::missing`] ranges for people:
    /// `100..150 (50 lost), 300..400 (100 lost)`.
    pub fn missing_text(&self) -> String {
        let ranges: Vec<String> = self.missing.iter().map(|&(a, b)| format!("{a}..{b} ({} lost)", b - a)).collect();
        ranges.join(", ")
    }
}

/// The sequence ranges no segment holds, oldest first, adjacent ones
/// merged; from each segment in order, its extent: `(base, end of its valid
/// records or None if it was skipped, whether it follows a gap on purpose)`.
pub(crate) fn missing_ranges(segs: impl IntoIterator<Item = (u64, Option<u64>, bool)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    // Where the data so far ends: the next segment should begin there.
    let mut data_end: Option<u64> = None;
    for (base, end, after_gap) in segs {
        if let Some(from) = data_end.filter(|&e| e < base && !after_gap) {
            match out.last_mut() {
                Some(last) if last.1 == from => last.1 = base,
                _ => out.push((from, base)),
            }
        }
        // A skipped segment's data is lost from its base on.
        data_end = Some(end.map_or(base, |e| e.max(base)));
    }
    out
}

pub(crate) struct Recovered {
    pub segs: Vec<SegInfo>,
    pub next_seq: u64,
    pub cursors: BTreeMap<String, u64>,
    pub corrupt_cursors: BTreeSet<String>,
    pub report: RecoveryReport,
}

pub(crate) const CURSOR_DIR: &str = "cursors";
pub(crate) const LOCK_FILE: &str = "LOCK";
/// Where the end of the sequence numbers reserved for handing out is kept
/// (see [`crate::WalOptions::reserve_seqs`]).
pub(crate) const RESERVE_FILE: &str = "RESERVED";

/// A sliding read window over a file, so that a 64 MiB segment is scanned
/// with a few MiB of memory.
pub(crate) struct Window<'a> {
    file: &'a dyn StorageFile,
    path: &'a Path,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

const WINDOW: usize = 4 << 20;

impl<'a> Window<'a> {
    /// Makes `[pos, pos + need)` (clipped to the file) available; returns the
    /// slice from `pos` to the end of what is loaded.
    pub(crate) fn at(&mut self, pos: u64, need: usize) -> Result<&[u8]> {
        let end = (pos + need as u64).min(self.file_len);
        if pos < self.start || end > self.start + self.buf.len() as u64 {
            let len = (end - pos).max(WINDOW as u64).min(self.file_len - pos) as usize;
            self.buf.resize(len, 0);
            self.file.read_exact_at(&mut self.buf, pos).map_err(WalError::io("read", self.path))?;
            self.start = pos;
        }
        Ok(&self.buf[(pos - self.start) as usize..])
    }

    /// Full check of a record at `pos`, loading as much as the header asks for.
    pub(crate) fn new(file: &'a dyn StorageFile, path: &'a Path, file_len: u64) -> Self {
        Window { file, path, file_len, start: 0, buf: Vec::new() }
    }

    /// The first offset in `from..file_len` where a valid record starts.
    pub(crate) fn find_valid(&mut self, from: u64, min_seq: u64) -> Result<Option<(u64, format::RecordHeader)>> {
        let mut q = from;
        while q + RECORD_HEADER_LEN as u64 <= self.file_len {
            if let Some(h) = self.check(q, min_seq)? {
                return Ok(Some((q, h)));
            }
            q += 1;
        }
        Ok(None)
    }

    pub(crate) fn check(&mut self, pos: u64, min_seq: u64) -> Result<Option<format::RecordHeader>> {
        let mut need = RECORD_HEADER_LEN;
        loop {
            if pos + need as u64 > self.file_len {
                return Ok(None);
            }
            let w = self.at(pos, need)?;
            match format::scan_at(w, 0, min_seq) {
                Scan::Record(h) => return Ok(Some(h)),
                Scan::Invalid => return Ok(None),
                Scan::NeedMore => {
                    let Some(h) = format::RecordHeader::parse(w) else { return Ok(None) };
                    let want = h.disk_len() as usize;
                    if want <= need {
                        return Ok(None);
                    }
                    need = want;
                }
            }
        }
    }
}

/// Called with every valid record and its stored payload.
pub(crate) type OnRecord<'a> = &'a mut dyn FnMut(&format::RecordHeader, &[u8]);

/// What to do with a segment while scanning it.
pub(crate) struct ScanMode<'a> {
    /// Truncate a torn tail and rewrite an unfinished header (on open); off for inspection.
    pub repair: bool,
    /// Called with every valid record and its stored payload.
    pub on_record: Option<OnRecord<'a>>,
}

pub(crate) fn scan_segment(
    storage: &dyn Storage,
    path: &Path,
    base: u64,
    is_last: bool,
    report: &mut RecoveryReport,
    mut mode: ScanMode<'_>,
) -> Result<Option<SegInfo>> {
    let open_mode = if mode.repair { OpenMode::ReadWrite } else { OpenMode::Read };
    let file = storage.open(path, open_mode).map_err(WalError::io("open", path))?;
    let file_len = file.len().map_err(WalError::io("stat", path))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    let n = read_prefix(&*file, &mut header).map_err(WalError::io("read", path))?;
    let mut header_damaged = false;
    let mut after_gap = false;
    let mut skipped = 0;
    let header_ok = match format::parse_segment_header(&header[..n]) {
        Ok(b) if b == base => {
            after_gap = format::segment_flags(&header) & format::FLAG_AFTER_GAP != 0;
            skipped = format::segment_skipped(&header);
            Ok(())
        }
        Ok(b) => Err(Corruption::BaseMismatch { header: b, name: base }),
        Err(e) => Err(e),
    };
    if let Err(what) = header_ok {
        if is_last && file_len <= SEGMENT_HEADER_LEN {
            report.torn_tail_bytes += file_len;
            if !mode.repair {
                return Ok(Some(SegInfo::new(base, path.to_owned(), file_len)));
            }
            // Interrupted while creating the segment: nothing was in it yet.
            tracing::warn!(segment = %name, error = %what, "Rewriting the header of an unfinished segment.");
            file.set_len(0).map_err(WalError::io("truncate", path))?;
            file.write_at(&format::segment_header(base), 0).map_err(WalError::io("write", path))?;
            file.sync_data().map_err(WalError::io("sync", path))?;
            return Ok(Some(SegInfo::new(base, path.to_owned(), SEGMENT_HEADER_LEN)));
        }
        // Records carry their own checksums: recover them rather than skip the
        // segment (skipping the newest would hand its sequence numbers out again).
        tracing::error!(segment = %name, error = %what, "Segment header is damaged; recovering its records by their own checksums.");
        report.bad_segments.push(name.clone());
        header_damaged = true;
    }

    let mut seg = SegInfo::new(base, path.to_owned(), SEGMENT_HEADER_LEN);
    seg.after_gap = after_gap;
    seg.skipped = skipped;
    let mut w = Window::new(&*file, path, file_len);
    let mut pos = SEGMENT_HEADER_LEN;
    let mut expected = base;
    while pos < file_len {
        if let Some(h) = w.check(pos, expected)? {
            if let Some(f) = mode.on_record.as_mut() {
                let rec = w.at(pos, h.disk_len() as usize)?;
                f(&h, &rec[RECORD_HEADER_LEN..h.disk_len() as usize]);
            }
            seg.maybe_index(h.first_seq, pos);
            report.records += 1;
            report.record_bytes += h.disk_len();
            expected = h.end_seq();
            pos += h.disk_len();
            continue;
        }
        // Damage at `pos`: look for the next valid record after it.
        match w.find_valid(pos + 1, expected)? {
            Some((q, h)) => {
                tracing::error!(segment = %name, offset = pos, bytes = q - pos, "Skipping a corrupt region of the log.");
                report.corrupt_regions += 1;
                report.corrupt_bytes += q - pos;
                report.lost_seqs += h.first_seq - expected;
                seg.bad.push((pos, q));
                pos = q;
            }
            None if is_last => {
                report.torn_tail_bytes += file_len - pos;
                if mode.repair {
                    tracing::warn!(segment = %name, offset = pos, bytes = file_len - pos, "Truncating a torn write at the end of the log.");
                    file.set_len(pos).map_err(WalError::io("truncate", path))?;
                    file.sync_data().map_err(WalError::io("sync", path))?;
                }
                break;
            }
            None => {
                tracing::error!(segment = %name, offset = pos, bytes = file_len - pos, "Skipping a corrupt tail of a sealed segment.");
                report.corrupt_regions += 1;
                report.corrupt_bytes += file_len - pos;
                seg.bad.push((pos, file_len));
                pos = file_len;
                // Sequence numbers lost here are counted as missing up to the next segment's base.
                break;
            }
        }
    }
    seg.len = pos;
    seg.end_seq = expected;
    if header_damaged {
        if seg.end_seq == base && !is_last {
            // Nothing recoverable: the segment is skipped.
            return Ok(None);
        }
        if mode.repair {
            file.write_at(&format::segment_header(base), 0).map_err(WalError::io("write", path))?;
            file.sync_data().map_err(WalError::io("sync", path))?;
            tracing::warn!(segment = %name, records = seg.end_seq - base, "Segment header rewritten.");
        }
    }
    Ok(Some(seg))
}

/// The end of the sequence numbers reserved before the log was last open;
/// `None` without a valid reservation file (never written, or damaged).
pub(crate) fn read_reserved(storage: &dyn Storage, dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(RESERVE_FILE);
    let f = match storage.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(WalError::io("open", &path)(e)),
    };
    let mut buf = [0u8; format::CURSOR_FILE_LEN + 1];
    let n = read_prefix(&*f, &mut buf).map_err(WalError::io("read", &path))?;
    let end = format::parse_reserve_file(&buf[..n]);
    if end.is_none() {
        tracing::warn!(file = %path.display(), "The sequence reservation file is damaged; ignoring it.");
    }
    Ok(end)
}

fn read_prefix(file: &dyn StorageFile, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

pub(crate) fn recover(storage: &dyn Storage, dir: &Path) -> Result<Recovered> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let mut bases = Vec::new();
    for name in storage.list(dir).map_err(WalError::io("list", dir))? {
        if let Some(base) = format::parse_segment_name(&name) {
            bases.push(base);
        } else if name != LOCK_FILE && name != RESERVE_FILE && name != format!("{RESERVE_FILE}.tmp") {
            report.unknown_files.push(name);
        }
    }
    bases.sort_unstable();

    let mut segs: Vec<SegInfo> = Vec::new();
    let mut extents = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(format::segment_name(base));
        let is_last = i + 1 == bases.len();
        let seg = scan_segment(storage, &path, base, is_last, &mut report, ScanMode { repair: true, on_record: None })?;
        extents.push((base, seg.as_ref().map(|s| s.end_seq), seg.as_ref().is_some_and(|s| s.after_gap)));
        segs.extend(seg);
    }
    // Between segments: a skipped one, a damaged or cut-off tail, a deleted file.
    report.missing = missing_ranges(extents);
    report.lost_seqs += report.missing.iter().map(|&(a, b)| b - a).sum::<u64>();

    let (cursors, corrupt_cursors) = read_cursors(storage, dir, true, &mut report)?;

    let mut next_seq = segs.last().map_or(0, |s| s.end_seq.max(s.base_seq));
    if let Some(&max_base) = bases.last() {
        next_seq = next_seq.max(max_base);
    }
    for (name, &pos) in &cursors {
        if pos > next_seq {
            report.cursors_ahead.push((name.clone(), pos));
        }
    }
    next_seq = cursors.values().copied().fold(next_seq, u64::max);

    report.segments = segs.len();
    report.first_seq = segs.first().map_or(next_seq, |s| s.base_seq);
    report.next_seq = next_seq;
    report.cursors = cursors.iter().map(|(k, v)| (k.clone(), *v)).collect();
    report.corrupt_cursors = corrupt_cursors.iter().cloned().collect();
    report.duration = started.elapsed();
    Ok(Recovered { segs, next_seq, cursors, corrupt_cursors, report })
}

/// Loads the cursor files; with `repair`, removes left-over temporary files.
pub(crate) fn read_cursors(
    storage: &dyn Storage,
    dir: &Path,
    repair: bool,
    report: &mut RecoveryReport,
) -> Result<(BTreeMap<String, u64>, BTreeSet<String>)> {
    let cursor_dir = dir.join(CURSOR_DIR);
    if repair {
        storage.create_dir_all(&cursor_dir).map_err(WalError::io("create", &cursor_dir))?;
    }
    let mut cursors = BTreeMap::new();
    let mut corrupt_cursors = BTreeSet::new();
    let names = match storage.list(&cursor_dir) {
        Ok(n) => n,
        Err(e) if !repair && e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(WalError::io("list", &cursor_dir)(e)),
    };
    for name in names {
        let path = cursor_dir.join(&name);
        if name.ends_with(".tmp") {
            if repair {
                storage.remove(&path).map_err(WalError::io("remove", &path))?;
                report.removed_files.push(format!("{CURSOR_DIR}/{name}"));
            }
            continue;
        }
        let Some(cursor) = name.strip_suffix(".cur") else {
            report.unknown_files.push(format!("{CURSOR_DIR}/{name}"));
            continue;
        };
        let mut buf = [0u8; format::CURSOR_FILE_LEN + 1];
        let f = storage.open(&path, OpenMode::Read).map_err(WalError::io("open", &path))?;
        let n = read_prefix(&*f, &mut buf).map_err(WalError::io("read", &path))?;
        match format::parse_cursor_file(&buf[..n]) {
            Some(pos) => {
                cursors.insert(cursor.to_owned(), pos);
            }
            None => {
                tracing::error!(cursor, "Cursor file is damaged; the consumer restarts from the oldest record.");
                corrupt_cursors.insert(cursor.to_owned());
            }
        }
    }
    Ok((cursors, corrupt_cursors))
}

/// Path of the cursor file for `name`.
pub(crate) fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(CURSOR_DIR).join(format!("{name}.cur"))
}
