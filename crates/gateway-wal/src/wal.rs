//! The log: appending, group commit by a background flusher thread, waiting for
//! durability, retention, the overflow policy and named cursors.
//!
//! Appenders only copy their record into a shared buffer under a short lock; a
//! single flusher thread writes the buffer with positional writes and
//! `fdatasync`s it, so one sync covers every record appended since the last
//! one (group commit). A caller that needs its record on disk awaits
//! [`Wal::wait_durable`]. The flusher never drops data on an I/O error: it keeps
//! the buffer and retries with backoff, so a full disk stalls durability (and,
//! through the pending-bytes cap, the producers) instead of losing records.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::block_on::block_on;
use crate::error::{Result, WalError};
use crate::format::{
    self, CODEC_LZ4, CODEC_RAW, MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN,
};
use crate::reader::Reader;
use crate::recover::{self, RecoveryReport};
use crate::segs::{INDEX_EVERY, IndexEntry, SegInfo};
use crate::storage::{OpenMode, StdStorage, Storage, StorageFile};

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
    /// [`Durability::None`] unless a [`Wal::flush`] or the close forced one.
    pub synced: bool,
    /// Wall time for the writes and, if `synced`, the sync.
    pub duration: Duration,
}

/// Callback for [`FlushInfo`].
pub type FlushHook = Arc<dyn Fn(&FlushInfo) + Send + Sync>;

/// How a log behaves, fixed at [`Wal::open`], which validates it first.
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
    /// [`Wal::flush`] fails if this grows while it waits.
    pub failures: u64,
    /// The last [`Wal::flush`] request served by a completed cycle.
    pub served: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Running,
    Closing,
    Abandoned,
}

/// A run of records in the pending buffer that go to one segment.
#[derive(Debug)]
struct Chunk {
    base_seq: u64,
    new_segment: bool,
    buf_start: usize,
    file_offset: u64,
    end_seq: u64,
    index: Vec<IndexEntry>,
}

struct Inner {
    buf: Vec<u8>,
    chunks: Vec<Chunk>,
    next_seq: u64,
    pending_since: Option<Instant>,
    active_base: u64,
    active_len: u64,
    last_index_offset: Option<u64>,
    disk_bytes: u64,
    sync_now: bool,
    force_sync: bool,
    maintenance: bool,
    /// Flush requests made; a cycle that starts after request `n` serves it.
    flush_req: u64,
    state: RunState,
    last_error: Option<String>,
    /// `last_error` says the disk is full.
    disk_full: bool,
    /// Sequence numbers below this are reserved (persisted) and may be handed
    /// out; 0 without reservations.
    reserved_end: u64,
    /// The flusher is asked to persist a new reservation.
    reserve_req: bool,
}

#[derive(Debug)]
struct CursorState {
    position: u64,
    persisted: u64,
}

#[derive(Debug, Default)]
struct Cursors {
    map: BTreeMap<String, CursorState>,
    corrupt: BTreeSet<String>,
    removed: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Counters {
    appended_records: AtomicU64,
    appended_bytes: AtomicU64,
    stored_bytes: AtomicU64,
    flushes: AtomicU64,
    syncs: AtomicU64,
    deleted_segments: AtomicU64,
    dropped_segments: AtomicU64,
    dropped_seqs: AtomicU64,
    full_events: AtomicU64,
    pub(crate) read_corrupt: AtomicU64,
    io_errors: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    opts: WalOptions,
    inner: Mutex<Inner>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
    space: Notify,
    segs: RwLock<Vec<SegInfo>>,
    cursors: Mutex<Cursors>,
    pub(crate) counters: Counters,
    /// Next sequence number, readable without the append lock.
    next_hint: AtomicU64,
    /// A cursor passing this position lets retention delete a segment.
    retention_hint: AtomicU64,
    /// The group commit interval in microseconds under `Durability::Interval`:
    /// set from the options at open, changed at run time by
    /// [`Wal::set_flush_interval`] (the self-tuning controller widens it
    /// under CPU load). Read by the flusher at every wait.
    interval_us: AtomicU64,
    report: RecoveryReport,
    _lock: Box<dyn std::any::Any + Send + Sync>,
}

/// Replaces the reservation file atomically: a temporary file, synced, renamed
/// over it, the directory synced.
fn write_reserved(storage: &dyn Storage, dir: &Path, end: u64) -> Result<()> {
    let path = dir.join(recover::RESERVE_FILE);
    let tmp = dir.join(format!("{}.tmp", recover::RESERVE_FILE));
    let f = storage.open(&tmp, OpenMode::Create).map_err(WalError::io("create", &tmp))?;
    f.write_at(&format::reserve_file(end), 0).map_err(WalError::io("write", &tmp))?;
    f.sync_data().map_err(WalError::io("sync", &tmp))?;
    storage.rename(&tmp, &path).map_err(WalError::io("rename", &tmp))?;
    storage.sync_dir(dir).map_err(WalError::io("sync", dir))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock is a bug elsewhere; the data under these
    // locks stays consistent at every await-free step, so carry on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn segs(&self) -> RwLockReadGuard<'_, Vec<SegInfo>> {
        self.segs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn segs_mut(&self) -> RwLockWriteGuard<'_, Vec<SegInfo>> {
        self.segs.write().unwrap_or_else(|e| e.into_inner())
    }

    fn kick(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut lock(&self.inner));
        self.wake.notify_one();
    }
}

/// A segmented write-ahead log in one directory.
///
/// ```
/// use gateway_wal::{Wal, WalOptions, Durability};
/// let dir = tempfile::tempdir().unwrap();
/// let wal = Wal::open(dir.path(), WalOptions { durability: Durability::Always, ..Default::default() }).unwrap();
/// let range = wal.append_blocking(b"three readings", 3).unwrap();
/// wal.wait_durable_blocking(range.end).unwrap();
/// let mut reader = wal.reader(0);
/// let rec = reader.next_record().unwrap().unwrap();
/// assert_eq!((rec.first_seq, rec.count, &rec.payload[..]), (0, 3, &b"three readings"[..]));
/// ```
pub struct Wal {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal").field("dir", &self.shared.dir).finish_non_exhaustive()
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Wal {
    /// Opens (or creates) the log in `dir`, recovering whatever is there.
    /// Fails with [`WalError::Locked`] if another process has it open.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Wal> {
        opts.validate()?;
        let dir = dir.as_ref().to_owned();
        let storage = opts.storage.clone();
        storage.create_dir_all(&dir).map_err(WalError::io("create", &dir))?;
        let lock_path = dir.join(recover::LOCK_FILE);
        let guard = storage.lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                WalError::Locked(dir.clone())
            } else {
                WalError::io("lock", &lock_path)(e)
            }
        })?;
        let mut rec = recover::recover(&*storage, &dir)?;
        let mut next_seq = rec.next_seq;
        let mut reserved_end = 0;
        if opts.reserve_seqs > 0 {
            // Not closed cleanly: numbers up to the reservation may have been
            // handed out before they were durable; none of them is reused.
            if let Some(end) = recover::read_reserved(&*storage, &dir)?
                && end > next_seq
            {
                rec.report.skipped_seqs = end - next_seq;
                tracing::warn!(
                    dir = %dir.display(),
                    from = next_seq,
                    to = end,
                    "The write-ahead log was not closed cleanly: sequence numbers reserved before are skipped, \
                     so none that a reader may have seen is given to new data (no data is lost by the skip)."
                );
                next_seq = end;
            }
            reserved_end = next_seq + opts.reserve_seqs;
            write_reserved(&*storage, &dir, reserved_end)?;
        }
        let mut segs = rec.segs;

        // The newest segment takes the appends, unless the log continues after a
        // cursor that was ahead of the data: then a fresh segment starts there,
        // so that the gap is a segment boundary and not a hole inside one.
        let reuse = segs.last().is_some_and(|s| s.end_seq.max(s.base_seq) == next_seq);
        if !reuse {
            // Flagged, so that later opens do not report the gap (reported
            // now, as cursors ahead) as a new loss.
            let mut flags = if next_seq > 0 { format::FLAG_AFTER_GAP } else { 0 };
            // Numbers reserved by the crashed run are not a loss for readers.
            let skipped = u32::try_from(rec.report.skipped_seqs).unwrap_or(0);
            if skipped > 0 {
                flags |= format::FLAG_AFTER_SKIP;
            }
            let path = dir.join(format::segment_name(next_seq));
            let f = storage.open(&path, OpenMode::Create).map_err(WalError::io("create", &path))?;
            f.write_at(&format::segment_header_skip(next_seq, flags, skipped), 0)
                .map_err(WalError::io("write", &path))?;
            f.sync_data().map_err(WalError::io("sync", &path))?;
            storage.sync_dir(&dir).map_err(WalError::io("sync", &dir))?;
            let mut seg = SegInfo::new(next_seq, path, SEGMENT_HEADER_LEN);
            seg.after_gap = flags != 0;
            seg.skipped = u64::from(skipped);
            segs.push(seg);
        }
        let active = segs.last().expect("a segment was just ensured");
        let active_file =
            storage.open(&active.path, OpenMode::ReadWrite).map_err(WalError::io("open", &active.path))?;
        let inner = Inner {
            buf: Vec::new(),
            chunks: Vec::new(),
            next_seq,
            pending_since: None,
            active_base: active.base_seq,
            active_len: active.len,
            last_index_offset: active.index.last().map(|e| e.offset),
            disk_bytes: segs.iter().map(|s| s.len).sum(),
            sync_now: false,
            force_sync: false,
            maintenance: false,
            flush_req: 0,
            state: RunState::Running,
            last_error: None,
            disk_full: false,
            reserved_end,
            reserve_req: false,
        };
        let cursors = Cursors {
            map: rec.cursors.into_iter().map(|(k, v)| (k, CursorState { position: v, persisted: v })).collect(),
            corrupt: rec.corrupt_cursors,
            removed: Vec::new(),
        };
        let progress = Progress { written: next_seq, durable: next_seq, cycles: 0, failures: 0, served: 0 };
        let report = rec.report;
        if !report.missing.is_empty() {
            tracing::error!(
                dir = %dir.display(),
                lost_seqs = report.lost_seqs,
                missing = %report.missing_text(),
                "Sequence numbers are missing from the write-ahead log: that data is lost (a segment was deleted, \
                 cut short or damaged)."
            );
        }
        if !report.is_clean() {
            tracing::warn!(dir = %dir.display(), ?report, "Write-ahead log recovered with repairs.");
        }
        let shared = Arc::new(Shared {
            dir,
            storage,
            inner: Mutex::new(inner),
            wake: Condvar::new(),
            progress: watch::Sender::new(progress),
            space: Notify::new(),
            retention_hint: AtomicU64::new(segs.get(1).map_or(u64::MAX, |s| s.base_seq)),
            segs: RwLock::new(segs),
            cursors: Mutex::new(cursors),
            counters: Counters::default(),
            next_hint: AtomicU64::new(next_seq),
            interval_us: AtomicU64::new(match opts.durability {
                Durability::Interval(d) => d.as_micros() as u64,
                _ => 0,
            }),
            report,
            opts,
            _lock: guard,
        });
        let active_base = lock(&shared.inner).active_base;
        let flusher_shared = shared.clone();
        let flusher = std::thread::Builder::new()
            .name("wal-flusher".into())
            .spawn(move || Flusher::new(flusher_shared, active_base, active_file).run())
            .map_err(WalError::io("spawn flusher for", PathBuf::new()))?;
        Ok(Wal { shared, flusher: Some(flusher) })
    }

    /// The directory the log was opened in, as given to [`Wal::open`].
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The options it was opened with; they cannot change while it is open
    /// (the group commit interval can: [`Wal::set_flush_interval`]).
    pub fn options(&self) -> &WalOptions {
        &self.shared.opts
    }

    /// What opening found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.shared.report
    }

    /// Appends a record covering `count` sequence numbers, or fails at once with
    /// [`WalError::Full`] / [`WalError::Backlogged`] if it would have to wait.
    /// The record is durable once [`Wal::wait_durable`] for the returned `end` resolves.
    pub fn try_append(&self, payload: &[u8], count: u32) -> Result<SeqRange> {
        if count == 0 {
            return Err(WalError::EmptyRecord);
        }
        if payload.len() > MAX_RECORD_PAYLOAD as usize {
            return Err(WalError::TooLarge(payload.len()));
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let (codec, stored) = self.compress(payload, &mut scratch);
            let payload_crc = crc32c::crc32c(stored);
            self.append_stored(codec, stored, payload.len(), payload_crc, count)
        })
    }

    fn compress<'a>(&self, payload: &'a [u8], scratch: &'a mut Vec<u8>) -> (u8, &'a [u8]) {
        if self.shared.opts.compression == Compression::Lz4 && payload.len() >= 128 {
            scratch.clear();
            scratch.resize(lz4_flex::block::get_maximum_output_size(payload.len()), 0);
            if let Ok(n) = lz4_flex::block::compress_into(payload, scratch)
                && n < payload.len()
            {
                return (CODEC_LZ4, &scratch[..n]);
            }
        }
        (CODEC_RAW, payload)
    }

    fn append_stored(
        &self,
        codec: u8,
        stored: &[u8],
        raw_len: usize,
        payload_crc: u32,
        count: u32,
    ) -> Result<SeqRange> {
        let sh = &*self.shared;
        let opts = &sh.opts;
        let rec_len = (RECORD_HEADER_LEN + stored.len()) as u64;
        let mut g = lock(&sh.inner);
        if g.state != RunState::Running {
            return Err(WalError::Closed);
        }
        if !g.buf.is_empty() && g.buf.len() as u64 + rec_len > opts.max_pending_bytes as u64 {
            sh.counters.full_events.fetch_add(1, Ordering::Relaxed);
            return Err(WalError::Backlogged { pending: g.buf.len() as u64 });
        }
        if opts.overflow == OverflowPolicy::Block {
            let used = g.disk_bytes + g.buf.len() as u64 + rec_len;
            if used > opts.max_bytes {
                sh.counters.full_events.fetch_add(1, Ordering::Relaxed);
                return Err(WalError::Full { used: used - rec_len, max: opts.max_bytes });
            }
        }
        let first = g.next_seq;
        let end = first + u64::from(count);
        if opts.reserve_seqs > 0 {
            if end > g.reserved_end {
                // Past the reservation: wait for the flusher to persist the next one.
                g.reserve_req = true;
                drop(g);
                sh.wake.notify_one();
                sh.counters.full_events.fetch_add(1, Ordering::Relaxed);
                return Err(WalError::Backlogged { pending: 0 });
            }
            if !g.reserve_req && end + opts.reserve_seqs / 2 > g.reserved_end {
                g.reserve_req = true;
                sh.wake.notify_one();
            }
        }
        let was_empty = g.buf.is_empty();
        if g.active_len > SEGMENT_HEADER_LEN && g.active_len + rec_len > opts.segment_bytes {
            g.active_base = first;
            g.active_len = SEGMENT_HEADER_LEN;
            g.last_index_offset = None;
            let buf_start = g.buf.len();
            g.chunks.push(Chunk {
                base_seq: first,
                new_segment: true,
                buf_start,
                file_offset: SEGMENT_HEADER_LEN,
                end_seq: first,
                index: Vec::new(),
            });
        } else if g.chunks.last().is_none_or(|c| c.base_seq != g.active_base) {
            let (base_seq, buf_start, file_offset) = (g.active_base, g.buf.len(), g.active_len);
            g.chunks.push(Chunk {
                base_seq,
                new_segment: false,
                buf_start,
                file_offset,
                end_seq: first,
                index: Vec::new(),
            });
        }
        let offset = g.active_len;
        if g.last_index_offset.is_none_or(|o| offset >= o + INDEX_EVERY) {
            g.last_index_offset = Some(offset);
            g.chunks.last_mut().expect("chunk pushed above").index.push(IndexEntry { seq: first, offset });
        }
        let header = RecordHeader {
            crc: 0,
            stored_len: stored.len() as u32,
            first_seq: first,
            count,
            codec,
            raw_len: raw_len as u32,
        }
        .encode(payload_crc);
        g.buf.extend_from_slice(&header);
        g.buf.extend_from_slice(stored);
        g.next_seq = end;
        g.active_len += rec_len;
        g.chunks.last_mut().expect("chunk pushed above").end_seq = end;
        sh.next_hint.store(end, Ordering::Release);
        let crossed = g.buf.len() >= opts.flush_bytes && g.buf.len() - (rec_len as usize) < opts.flush_bytes;
        if was_empty {
            g.pending_since = Some(Instant::now());
        }
        drop(g);
        sh.counters.appended_records.fetch_add(1, Ordering::Relaxed);
        sh.counters.appended_bytes.fetch_add(raw_len as u64, Ordering::Relaxed);
        sh.counters.stored_bytes.fetch_add(rec_len, Ordering::Relaxed);
        // Wake the flusher only when it may be sleeping without a deadline or a
        // threshold was crossed; in steady state appends make no system call.
        if was_empty || crossed || opts.durability == Durability::Always {
            sh.wake.notify_one();
        }
        Ok(SeqRange { start: first, end })
    }

    /// Appends, waiting while the log is full or the disk is behind.
    pub async fn append(&self, payload: &[u8], count: u32) -> Result<SeqRange> {
        loop {
            let notified = self.shared.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_append(payload, count) {
                // Space comes back when the flusher finishes a cycle or a cursor
                // commit lets retention delete a segment; both notify.
                Err(WalError::Full { .. } | WalError::Backlogged { .. }) => notified.await,
                r => return r,
            }
        }
    }

    /// [`Wal::append`] for threads without an async runtime.
    pub fn append_blocking(&self, payload: &[u8], count: u32) -> Result<SeqRange> {
        block_on(self.append(payload, count))
    }

    /// A future that resolves when space may have been freed (after a flush or
    /// a deletion). To wait without missing a wake-up: create it, `enable()` it,
    /// try to append, and await it only if the append failed with
    /// [`WalError::Full`] or [`WalError::Backlogged`].
    pub fn space_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.space.notified()
    }

    /// Appends and waits until the record is durable.
    pub async fn append_durable(&self, payload: &[u8], count: u32) -> Result<SeqRange> {
        let r = self.append(payload, count).await?;
        self.wait_durable(r.end).await?;
        Ok(r)
    }

    /// Waits until every sequence number below `end` is durable.
    pub async fn wait_durable(&self, end: u64) -> Result<()> {
        let mut rx = self.shared.progress.subscribe();
        if self.shared.opts.durability == Durability::Always {
            self.shared.kick(|g| g.sync_now = true);
        }
        rx.wait_for(|p| p.durable >= end).await.map(|_| ()).map_err(|_| WalError::Closed)
    }

    /// [`Wal::wait_durable`] for threads without an async runtime.
    pub fn wait_durable_blocking(&self, end: u64) -> Result<()> {
        block_on(self.wait_durable(end))
    }

    /// Asks the flusher to write (and, per the durability setting, sync) what
    /// is pending now instead of at the end of the interval. The bus calls this
    /// when its write queue passes its threshold, so group commit shortens
    /// under load instead of capping throughput at queue size / interval.
    pub fn flush_soon(&self) {
        self.shared.kick(|g| g.sync_now = true);
    }

    /// Changes the group commit interval of a log opened with
    /// [`Durability::Interval`] while it runs; it applies from the flusher's
    /// next wait. Returns the interval in force afterwards, `None` (and
    /// nothing changes) for another durability or an interval outside
    /// 1 µs..=60 s, the limits [`Wal::open`] enforces.
    pub fn set_flush_interval(&self, d: Duration) -> Option<Duration> {
        if !matches!(self.shared.opts.durability, Durability::Interval(_)) || d.is_zero() || d > Duration::from_secs(60)
        {
            return None;
        }
        self.shared.interval_us.store(d.as_micros().max(1) as u64, Ordering::Relaxed);
        // A flusher asleep for the old interval wakes and waits for the new one.
        self.shared.wake.notify_one();
        Some(d)
    }

    /// The group commit interval in force (`None` unless `Durability::Interval`).
    pub fn flush_interval(&self) -> Option<Duration> {
        matches!(self.shared.opts.durability, Durability::Interval(_))
            .then(|| Duration::from_micros(self.shared.interval_us.load(Ordering::Relaxed)))
    }

    /// Watches the flusher's progress (written and durable positions).
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.shared.progress.subscribe()
    }

    /// Writes and syncs everything appended so far and persists the cursors,
    /// whatever the durability setting. Fails if the flusher hits an I/O error.
    pub async fn flush(&self) -> Result<()> {
        let mut rx = self.shared.progress.subscribe();
        let start = *rx.borrow_and_update();
        let (target, req) = {
            let mut g = lock(&self.shared.inner);
            if g.state != RunState::Running {
                return Err(WalError::Closed);
            }
            g.sync_now = true;
            g.force_sync = true;
            g.maintenance = true;
            g.flush_req += 1;
            (g.next_seq, g.flush_req)
        };
        self.shared.wake.notify_one();
        let p = rx
            .wait_for(|p| (p.durable >= target && p.served >= req) || p.failures > start.failures)
            .await
            .map_err(|_| WalError::Closed)?;
        if p.failures == start.failures {
            Ok(())
        } else {
            let msg = lock(&self.shared.inner).last_error.clone().unwrap_or_default();
            Err(WalError::Io { op: "flush", path: self.shared.dir.clone(), source: std::io::Error::other(msg) })
        }
    }

    /// [`Wal::flush`] for threads without an async runtime.
    pub fn flush_blocking(&self) -> Result<()> {
        block_on(self.flush())
    }

    /// Next sequence number to be assigned.
    pub fn next_seq(&self) -> u64 {
        self.shared.next_hint.load(Ordering::Acquire)
    }

    /// A reader from sequence number `from`.
    pub fn reader(&self, from: u64) -> Reader {
        Reader::new(self.shared.clone(), from)
    }

    /// Opens the named cursor, creating it at `start` if it does not exist (a
    /// cursor whose file was found damaged restarts at the oldest record).
    pub fn cursor(&self, name: &str, start: CursorStart) -> Result<Cursor> {
        validate_cursor_name(name)?;
        let sh = &self.shared;
        let mut c = lock(&sh.cursors);
        let created = !c.map.contains_key(name);
        if created {
            let start = if c.corrupt.remove(name) { CursorStart::Oldest } else { start };
            let position = match start {
                CursorStart::Latest => self.next_seq(),
                CursorStart::Oldest => sh.segs().first().map_or_else(|| self.next_seq(), |s| s.base_seq),
            };
            // persisted = MAX marks it dirty; the flusher writes its file at
            // its next cycle, so a crash soon after cannot lose it.
            c.map.insert(name.to_owned(), CursorState { position, persisted: u64::MAX });
            c.removed.retain(|n| n != name);
        }
        drop(c);
        if created {
            sh.kick(|g| g.maintenance = true);
        }
        Ok(Cursor { shared: sh.clone(), name: name.into() })
    }

    /// Deletes a cursor and its file; its data no longer holds back retention.
    pub fn remove_cursor(&self, name: &str) -> Result<bool> {
        let mut c = lock(&self.shared.cursors);
        let existed = c.map.remove(name).is_some();
        if existed {
            c.removed.push(name.to_owned());
        }
        drop(c);
        self.shared.kick(|g| g.maintenance = true);
        Ok(existed)
    }

    /// Sequence numbers at or after `from` that no frame will ever have:
    /// those skipped on purpose after a crash (the reservation; see
    /// `FLAG_AFTER_SKIP`). `next_seq() - from - skipped_after(from)` is how
    /// many frames a reader at `from` still has to read.
    pub fn skipped_after(&self, from: u64) -> u64 {
        self.shared
            .segs()
            .iter()
            .filter(|s| s.skipped > 0 && s.base_seq > from)
            .map(|s| s.skipped.min(s.base_seq - from))
            .sum()
    }

    /// `from`, or where the numbers skipped after a crash end if `from` is
    /// among them: no frame will ever have a number in between, so a reader
    /// there may go straight on (it need not wait for the next record to be
    /// durable to learn that).
    pub fn past_skip(&self, from: u64) -> u64 {
        self.shared
            .segs()
            .iter()
            .find(|s| s.skipped > 0 && s.base_seq > from && s.base_seq - s.skipped <= from)
            .map_or(from, |s| s.base_seq)
    }

    /// Names and positions of all cursors.
    pub fn cursors(&self) -> Vec<(String, u64)> {
        lock(&self.shared.cursors).map.iter().map(|(k, v)| (k.clone(), v.position)).collect()
    }

    /// A snapshot of the counters and positions, taken under short locks
    /// (not atomically: fields may be a moment apart).
    pub fn stats(&self) -> WalStats {
        let sh = &*self.shared;
        let (next_seq, pending, disk, last_error, disk_full) = {
            let g = lock(&sh.inner);
            (g.next_seq, g.buf.len() as u64, g.disk_bytes, g.last_error.clone(), g.disk_full)
        };
        let p = *sh.progress.borrow();
        let (first_seq, segments) = {
            let s = sh.segs();
            (s.first().map_or(next_seq, |s| s.base_seq), s.len() as u64)
        };
        let c = &sh.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WalStats {
            first_seq,
            next_seq,
            written_seq: p.written,
            durable_seq: p.durable,
            segments,
            disk_bytes: disk,
            pending_bytes: pending,
            appended_records: get(&c.appended_records),
            appended_bytes: get(&c.appended_bytes),
            stored_bytes: get(&c.stored_bytes),
            flushes: get(&c.flushes),
            syncs: get(&c.syncs),
            deleted_segments: get(&c.deleted_segments),
            dropped_segments: get(&c.dropped_segments),
            dropped_seqs: get(&c.dropped_seqs),
            full_events: get(&c.full_events),
            read_corrupt_records: get(&c.read_corrupt),
            io_errors: get(&c.io_errors),
            last_error,
            disk_full,
        }
    }

    fn stop(&mut self, state: RunState) {
        if let Some(h) = self.flusher.take() {
            self.shared.kick(|g| g.state = state);
            let _ = h.join();
        }
    }

    /// Writes and syncs everything, persists cursors and stops the flusher.
    pub fn close(mut self) -> Result<()> {
        self.stop(RunState::Closing);
        match lock(&self.shared.inner).last_error.take() {
            Some(e) => {
                Err(WalError::Io { op: "close", path: self.shared.dir.clone(), source: std::io::Error::other(e) })
            }
            None => Ok(()),
        }
    }

    /// Stops at once, discarding what was not yet written: what a crash does.
    /// For crash tests; the directory lock is released when the last reader or
    /// cursor handle is dropped.
    pub fn close_without_flush(mut self) {
        self.stop(RunState::Abandoned);
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop(RunState::Closing);
    }
}

fn validate_cursor_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
    if ok { Ok(()) } else { Err(WalError::CursorName(name.to_owned())) }
}

/// A named consumer position, persisted crash-safely. The position is the
/// next sequence number the consumer needs; everything below it is acknowledged.
#[derive(Clone)]
pub struct Cursor {
    shared: Arc<Shared>,
    name: Arc<str>,
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor").field("name", &self.name).field("position", &self.position()).finish()
    }
}

impl Cursor {
    /// The cursor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Next sequence number the consumer needs.
    pub fn position(&self) -> u64 {
        lock(&self.shared.cursors).map.get(&*self.name).map_or(0, |c| c.position)
    }

    /// Acknowledges everything below `position`. Moving backwards is ignored;
    /// moving past the end of the log is an error. Persisted by the flusher
    /// within about a second ([`CURSOR_PERSIST_EVERY`]), or at once by [`Wal::flush`].
    pub fn commit(&self, position: u64) -> Result<()> {
        let end = self.shared.next_hint.load(Ordering::Acquire);
        if position > end {
            return Err(WalError::CursorBeyondEnd { name: self.name.to_string(), to: position, end });
        }
        let mut c = lock(&self.shared.cursors);
        let Some(state) = c.map.get_mut(&*self.name) else {
            return Err(WalError::CursorName(format!("{} (removed)", self.name)));
        };
        if position > state.position {
            state.position = position;
        }
        drop(c);
        if position >= self.shared.retention_hint.load(Ordering::Relaxed) {
            self.shared.kick(|g| g.maintenance = true);
        }
        Ok(())
    }

    /// A reader from the cursor's position.
    pub fn reader(&self) -> Reader {
        Reader::new(self.shared.clone(), self.position())
    }
}

/// State owned by the flusher thread.
struct Flusher {
    sh: Arc<Shared>,
    /// Files written since the last sync, by segment base; the last is the active one.
    files: BTreeMap<u64, Box<dyn StorageFile>>,
    unsynced: BTreeSet<u64>,
    dir_dirty: bool,
    /// A flush or close asked for a sync while nothing new was pending.
    sync_owed: bool,
    spare: Vec<u8>,
    spare_chunks: Vec<Chunk>,
    /// When moved cursors were last persisted; see [`CURSOR_PERSIST_EVERY`].
    cursors_persisted_at: Instant,
}

/// Moved cursors are persisted at most this often during steady flushing,
/// and at once when asked for ([`Wal::flush`], a new cursor, a cursor passing
/// a sealed segment, close). Every flush cycle (up to a hundred a second)
/// used to rewrite each moved cursor file (create, write, sync, rename,
/// directory sync): a third of the gateway's CPU at 100,000 values/s. A crash
/// then replays at most this much more to a consumer, which delivery at
/// least once allows.
const CURSOR_PERSIST_EVERY: Duration = Duration::from_secs(1);

struct Taken {
    buf: Vec<u8>,
    chunks: Vec<Chunk>,
    end_seq: u64,
    sync: bool,
}

impl Flusher {
    fn new(sh: Arc<Shared>, active_base: u64, active: Box<dyn StorageFile>) -> Self {
        let mut files = BTreeMap::new();
        files.insert(active_base, active);
        Flusher {
            sh,
            files,
            unsynced: BTreeSet::new(),
            dir_dirty: false,
            sync_owed: false,
            spare: Vec::new(),
            spare_chunks: Vec::new(),
            cursors_persisted_at: Instant::now(),
        }
    }

    fn run(mut self) {
        let mut carry: Option<Taken> = None;
        let mut backoff = Duration::from_millis(50);
        let mut close_failures = 0u32;
        loop {
            let closing;
            let maintenance;
            let served;
            if let Some(t) = &mut carry {
                // Retrying after an I/O error: wait, unless told to abandon.
                let g = lock(&self.sh.inner);
                let (mut g, _) = self.sh.wake.wait_timeout(g, backoff).unwrap_or_else(|e| e.into_inner());
                if g.state == RunState::Abandoned {
                    return;
                }
                closing = g.state == RunState::Closing;
                maintenance = std::mem::take(&mut g.maintenance);
                served = g.flush_req;
                t.sync |= std::mem::take(&mut g.force_sync) || closing;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            } else {
                match self.take() {
                    None => return,
                    Some((t, c, m, r)) => {
                        carry = t;
                        closing = c;
                        maintenance = m;
                        served = r;
                    }
                }
            }
            let mut ok = true;
            if carry.is_none()
                && std::mem::take(&mut self.sync_owed)
                && let Err(e) = self.sync_unsynced()
            {
                ok = false;
                self.sync_owed = true;
                self.fail(&e);
            }
            if let Some(t) = &carry {
                match self.write(t) {
                    Ok(info) => {
                        self.publish_written(t, info.synced);
                        if let Some(hook) = &self.sh.opts.on_flush {
                            hook(&info);
                        }
                        let t = carry.take().expect("carry checked above");
                        self.recycle(t);
                        backoff = Duration::from_millis(50);
                    }
                    Err(e) => {
                        ok = false;
                        self.fail(&e);
                        close_failures += u32::from(closing);
                        if close_failures >= 3 {
                            tracing::error!(
                                bytes = carry.as_ref().map_or(0, |t| t.buf.len()),
                                "Closing the write-ahead log with data that could not be written."
                            );
                            return;
                        }
                    }
                }
            }
            if (ok || maintenance)
                && let Err(e) = self.maintain(closing, maintenance)
            {
                ok = false;
                self.fail(&e);
            }
            if ok {
                let mut g = lock(&self.sh.inner);
                g.last_error = None;
                g.disk_full = false;
            }
            self.sh.progress.send_modify(|p| {
                p.cycles += 1;
                if ok {
                    p.served = p.served.max(served);
                }
            });
            if ok && let Err(e) = self.renew_reservation() {
                self.fail(&e);
            }
            self.sh.space.notify_waiters();
            if closing && carry.is_none() {
                let g = lock(&self.sh.inner);
                if g.buf.is_empty() {
                    let end = g.next_seq;
                    drop(g);
                    // Closed cleanly: the next open continues right here, with nothing to skip.
                    if self.sh.opts.reserve_seqs > 0
                        && let Err(e) = write_reserved(&*self.sh.storage, &self.sh.dir, end)
                    {
                        tracing::warn!(error = %e, "Cannot record the clean close in the sequence reservation file; the next open skips the reserved numbers.");
                    }
                    return;
                }
            }
        }
    }

    /// Persists a new reservation when an append asked for one.
    fn renew_reservation(&self) -> Result<()> {
        let sh = &*self.sh;
        if sh.opts.reserve_seqs == 0 {
            return Ok(());
        }
        let next = {
            let g = lock(&sh.inner);
            if !g.reserve_req {
                return Ok(());
            }
            g.next_seq
        };
        let end = next + sh.opts.reserve_seqs;
        write_reserved(&*sh.storage, &sh.dir, end)?;
        let mut g = lock(&sh.inner);
        g.reserved_end = g.reserved_end.max(end);
        g.reserve_req = false;
        Ok(())
    }

    fn fail(&self, e: &WalError) {
        let disk_full = e.is_disk_full();
        if disk_full {
            tracing::error!(
                error = %e,
                "The disk is full (no space, quota or file-size limit): the write-ahead log keeps the data in \
                 memory and retries; producers wait once max_pending_bytes are pending."
            );
        } else {
            tracing::error!(error = %e, "Write-ahead log flush failed; keeping the data and retrying.");
        }
        self.sh.counters.io_errors.fetch_add(1, Ordering::Relaxed);
        {
            let mut g = lock(&self.sh.inner);
            g.last_error = Some(e.to_string());
            g.disk_full = disk_full;
        }
        self.sh.progress.send_modify(|p| p.failures += 1);
    }

    /// Waits for work; returns the pending data (if any), whether we are
    /// closing and whether maintenance was asked for. `None`: abandoned.
    fn take(&mut self) -> Option<(Option<Taken>, bool, bool, u64)> {
        let opts = &self.sh.opts;
        let mut g = lock(&self.sh.inner);
        loop {
            match g.state {
                RunState::Abandoned => return None,
                RunState::Closing => break,
                RunState::Running => {}
            }
            if !g.buf.is_empty() {
                let waited = g.pending_since.map_or(Duration::ZERO, |t| t.elapsed());
                let limit = match opts.durability {
                    Durability::Always => Duration::ZERO,
                    Durability::Interval(_) => Duration::from_micros(self.sh.interval_us.load(Ordering::Relaxed)),
                    Durability::None => Duration::from_millis(10),
                };
                if g.sync_now || g.buf.len() >= opts.flush_bytes || waited >= limit {
                    break;
                }
                g = self.sh.wake.wait_timeout(g, limit - waited).unwrap_or_else(|e| e.into_inner()).0;
            } else if g.maintenance || g.sync_now || g.reserve_req {
                break;
            } else {
                g = self.sh.wake.wait_timeout(g, Duration::from_secs(1)).unwrap_or_else(|e| e.into_inner()).0;
                if g.buf.is_empty() && g.state == RunState::Running {
                    // Periodic tick: persist cursors moved since the last cycle.
                    g.maintenance = true;
                }
            }
        }
        let closing = g.state == RunState::Closing;
        let maintenance = std::mem::take(&mut g.maintenance) || closing;
        let force = std::mem::take(&mut g.force_sync);
        let served = g.flush_req;
        g.sync_now = false;
        if g.buf.is_empty() {
            // Nothing new to write, but what was written without a sync
            // (durability `none`) must still be synced by a flush or at close.
            self.sync_owed |= force || closing;
            return Some((None, closing, maintenance || force, served));
        }
        self.spare.clear();
        self.spare_chunks.clear();
        let buf = std::mem::replace(&mut g.buf, std::mem::take(&mut self.spare));
        let chunks = std::mem::replace(&mut g.chunks, std::mem::take(&mut self.spare_chunks));
        g.pending_since = None;
        let end_seq = g.next_seq;
        drop(g);
        let sync = opts.durability != Durability::None || force || closing;
        Some((Some(Taken { buf, chunks, end_seq, sync }), closing, maintenance, served))
    }

    fn recycle(&mut self, t: Taken) {
        // Keep the larger buffer for the next swap; never hold more than 64 MiB idle.
        if t.buf.capacity() <= 64 << 20 && t.buf.capacity() > self.spare.capacity() {
            self.spare = t.buf;
        }
        self.spare_chunks = t.chunks;
    }

    fn write(&mut self, t: &Taken) -> Result<FlushInfo> {
        let started = Instant::now();
        let sh = &*self.sh;
        for (i, c) in t.chunks.iter().enumerate() {
            let end = t.chunks.get(i + 1).map_or(t.buf.len(), |n| n.buf_start);
            let data = &t.buf[c.buf_start..end];
            if c.new_segment && !self.files.contains_key(&c.base_seq) {
                let path = sh.dir.join(format::segment_name(c.base_seq));
                let f = sh.storage.open(&path, OpenMode::Create).map_err(WalError::io("create", &path))?;
                f.write_at(&format::segment_header(c.base_seq), 0).map_err(WalError::io("write", &path))?;
                self.files.insert(c.base_seq, f);
                self.dir_dirty = true;
            }
            let f = self.files.get(&c.base_seq).ok_or_else(|| WalError::Io {
                op: "write",
                path: sh.dir.join(format::segment_name(c.base_seq)),
                source: std::io::Error::other("segment file is not open"),
            })?;
            f.write_at(data, c.file_offset)
                .map_err(WalError::io("write", sh.dir.join(format::segment_name(c.base_seq))))?;
            self.unsynced.insert(c.base_seq);
        }
        sh.counters.flushes.fetch_add(1, Ordering::Relaxed);
        if t.sync {
            self.sync_unsynced()?;
        }
        // Sealed segments that are synced need no handle any more.
        while self.files.len() > 1 {
            let first = *self.files.keys().next().expect("len > 1");
            if self.unsynced.contains(&first) {
                break;
            }
            self.files.remove(&first);
        }
        Ok(FlushInfo { bytes: t.buf.len() as u64, synced: t.sync, duration: started.elapsed() })
    }

    /// Syncs every segment written since its last sync, and the directory if
    /// a segment was created.
    fn sync_unsynced(&mut self) -> Result<()> {
        let sh = &*self.sh;
        for base in &self.unsynced {
            if let Some(f) = self.files.get(base) {
                f.sync_data().map_err(WalError::io("sync", sh.dir.join(format::segment_name(*base))))?;
                sh.counters.syncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.unsynced.clear();
        if self.dir_dirty {
            sh.storage.sync_dir(&sh.dir).map_err(WalError::io("sync", &sh.dir))?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    fn publish_written(&self, t: &Taken, synced: bool) {
        let sh = &*self.sh;
        let mut added = 0u64;
        {
            let mut segs = sh.segs_mut();
            for (i, c) in t.chunks.iter().enumerate() {
                let end = t.chunks.get(i + 1).map_or(t.buf.len(), |n| n.buf_start);
                if c.new_segment && segs.last().is_none_or(|s| s.base_seq != c.base_seq) {
                    segs.push(SegInfo::new(
                        c.base_seq,
                        sh.dir.join(format::segment_name(c.base_seq)),
                        SEGMENT_HEADER_LEN,
                    ));
                    added += SEGMENT_HEADER_LEN;
                }
                if let Some(s) = segs.iter_mut().rev().find(|s| s.base_seq == c.base_seq) {
                    s.len = c.file_offset + (end - c.buf_start) as u64;
                    s.end_seq = c.end_seq;
                    s.index.extend_from_slice(&c.index);
                }
            }
            sh.retention_hint.store(segs.get(1).map_or(u64::MAX, |s| s.base_seq), Ordering::Relaxed);
        }
        lock(&sh.inner).disk_bytes += t.buf.len() as u64 + added;
        let durable_mode = synced || sh.opts.durability == Durability::None;
        sh.progress.send_modify(|p| {
            p.written = p.written.max(t.end_seq);
            if durable_mode {
                p.durable = p.durable.max(t.end_seq);
            }
        });
    }

    /// Cursor persistence, then retention and the overflow policy. Retention
    /// goes by *persisted* cursor positions, so a crash never brings back a
    /// cursor pointing into a segment that was already deleted.
    fn maintain(&mut self, closing: bool, asked: bool) -> Result<()> {
        let persist_now = closing || asked || self.cursors_persisted_at.elapsed() >= CURSOR_PERSIST_EVERY;
        if persist_now {
            self.cursors_persisted_at = Instant::now();
        }
        let sh = &*self.sh;
        let (dirty, removed) = {
            let mut c = lock(&sh.cursors);
            let dirty: Vec<(String, u64)> = if persist_now {
                c.map.iter().filter(|(_, s)| s.position != s.persisted).map(|(n, s)| (n.clone(), s.position)).collect()
            } else {
                Vec::new()
            };
            (dirty, std::mem::take(&mut c.removed))
        };
        // Cursor files are replaced atomically: write a temp file, sync, rename.
        let cursor_dir = sh.dir.join(recover::CURSOR_DIR);
        let persist = || -> Result<()> {
            for (name, position) in &dirty {
                let path = recover::cursor_path(&sh.dir, name);
                let tmp = path.with_extension("cur.tmp");
                let f = sh.storage.open(&tmp, OpenMode::Create).map_err(WalError::io("create", &tmp))?;
                f.write_at(&format::cursor_file(*position), 0).map_err(WalError::io("write", &tmp))?;
                f.sync_data().map_err(WalError::io("sync", &tmp))?;
                sh.storage.rename(&tmp, &path).map_err(WalError::io("rename", &tmp))?;
            }
            for name in &removed {
                let path = recover::cursor_path(&sh.dir, name);
                match sh.storage.remove(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(WalError::io("remove", &path)(e)),
                }
            }
            if !dirty.is_empty() || !removed.is_empty() || closing {
                sh.storage.sync_dir(&cursor_dir).map_err(WalError::io("sync", &cursor_dir))?;
            }
            Ok(())
        };
        let persisted = persist();
        let keep_from = {
            let mut c = lock(&sh.cursors);
            match &persisted {
                // Only a synced directory makes the renames durable.
                Ok(()) => {
                    for (name, position) in &dirty {
                        if let Some(state) = c.map.get_mut(name) {
                            state.persisted = *position;
                        }
                    }
                }
                Err(_) => c.removed.extend(removed),
            }
            let written = sh.progress.borrow().written;
            c.map.values().map(|s| s.position.min(s.persisted)).min().unwrap_or(written)
        };
        persisted?;

        let mut doomed = Vec::new();
        {
            let mut segs = sh.segs_mut();
            while segs.len() > 1 && segs[1].base_seq <= keep_from {
                doomed.push(segs.remove(0));
                sh.counters.deleted_segments.fetch_add(1, Ordering::Relaxed);
            }
            if sh.opts.overflow == OverflowPolicy::DropOldest {
                let pending = lock(&sh.inner).buf.len() as u64;
                let mut total: u64 = segs.iter().map(|s| s.len).sum::<u64>() + pending;
                while segs.len() > 1 && total > sh.opts.max_bytes {
                    let s = segs.remove(0);
                    let lost = segs[0].base_seq.saturating_sub(s.base_seq.max(keep_from));
                    tracing::warn!(
                        segment = %s.path.display(),
                        lost_seqs = lost,
                        "WAL is over max_bytes: dropping the oldest segment before every consumer read it."
                    );
                    sh.counters.dropped_seqs.fetch_add(lost, Ordering::Relaxed);
                    sh.counters.dropped_segments.fetch_add(1, Ordering::Relaxed);
                    total -= s.len;
                    doomed.push(s);
                }
            }
            sh.retention_hint.store(segs.get(1).map_or(u64::MAX, |s| s.base_seq), Ordering::Relaxed);
        }
        if !doomed.is_empty() {
            let mut freed = 0;
            for s in &doomed {
                match sh.storage.remove(&s.path) {
                    Ok(()) => freed += s.len,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => freed += s.len,
                    // Left on disk; the next open finds it and retention deletes it then.
                    Err(e) => {
                        tracing::error!(segment = %s.path.display(), error = %e, "Could not delete a WAL segment.")
                    }
                }
                self.files.remove(&s.base_seq);
                self.unsynced.remove(&s.base_seq);
            }
            {
                let mut g = lock(&sh.inner);
                g.disk_bytes = g.disk_bytes.saturating_sub(freed);
            }
            sh.storage.sync_dir(&sh.dir).map_err(WalError::io("sync", &sh.dir))?;
        }
        Ok(())
    }
}

/// Decompresses a stored payload.
pub(crate) fn decode_payload(codec: u8, raw_len: u32, stored: bytes::Bytes) -> Option<bytes::Bytes> {
    match codec {
        CODEC_RAW => Some(stored),
        CODEC_LZ4 => {
            let mut out = vec![0u8; raw_len as usize];
            match lz4_flex::block::decompress_into(&stored, &mut out) {
                Ok(n) if n == out.len() => Some(out.into()),
                _ => None,
            }
        }
        _ => None,
    }
}
