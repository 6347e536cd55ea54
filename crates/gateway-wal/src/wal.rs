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
//!
//! Around it: `options.rs` (settings and reported figures), `cursor.rs`
//! (named consumer positions) and `flusher.rs` (the flusher thread).

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::block_on::block_on;
pub use crate::cursor::Cursor;
pub(crate) use crate::cursor::validate_cursor_name;
use crate::error::{Result, WalError};
pub(crate) use crate::flusher::{Flusher, decode_payload};
use crate::format::{
    self, CODEC_LZ4, CODEC_RAW, MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN,
};
pub use crate::options::{
    Compression, CursorStart, Durability, FlushHook, FlushInfo, OverflowPolicy, Progress, SeqRange, WalOptions,
    WalStats,
};
use crate::reader::Reader;
use crate::recover::{self, RecoveryReport};
use crate::segs::{INDEX_EVERY, IndexEntry, SegInfo};
use crate::storage::OpenMode;

pub(crate) use crate::shared::{Chunk, Counters, CursorState, Cursors, Inner, RunState, Shared, lock, write_reserved};

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

    /// Sequence numbers below this are durable: what [`Wal::progress`]
    /// reports, read without subscribing (a read lock, no allocation), for
    /// callers on the publish path.
    pub fn durable(&self) -> u64 {
        self.shared.progress.borrow().durable
    }

    /// Sequence numbers below this are written to the files (the same way).
    pub fn written(&self) -> u64 {
        self.shared.progress.borrow().written
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
