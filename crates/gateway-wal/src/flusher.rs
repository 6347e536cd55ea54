//! The flusher thread: takes what appenders put in the shared buffer, writes
//! it with positional writes, `fdatasync`s once for all of it (group commit),
//! persists moved cursors, runs retention and retries I/O errors with backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Result, WalError};
use crate::format::{self, CODEC_LZ4, CODEC_RAW, SEGMENT_HEADER_LEN};
use crate::options::{Durability, FlushInfo, OverflowPolicy};
use crate::recover;
use crate::segs::SegInfo;
use crate::storage::{OpenMode, StorageFile};
use crate::wal::{Chunk, RunState, Shared, lock, write_reserved};

/// State owned by the flusher thread.
pub(crate) struct Flusher {
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
pub(crate) const CURSOR_PERSIST_EVERY: Duration = Duration::from_secs(1);

struct Taken {
    buf: Vec<u8>,
    chunks: Vec<Chunk>,
    end_seq: u64,
    sync: bool,
}

impl Flusher {
    pub(crate) fn new(sh: Arc<Shared>, active_base: u64, active: Box<dyn StorageFile>) -> Self {
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

    pub(crate) fn run(mut self) {
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
