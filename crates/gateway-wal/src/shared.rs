//! What the appenders, the flusher, readers and cursors share: the pending
//! buffer, the segment list, cursor positions, counters and the wake-ups
//! between them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use tokio::sync::{Notify, watch};

use crate::error::{Result, WalError};
use crate::format;
use crate::options::{Progress, WalOptions};
use crate::recover::{self, RecoveryReport};
use crate::segs::{IndexEntry, SegInfo};
use crate::storage::{OpenMode, Storage};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunState {
    Running,
    Closing,
    Abandoned,
}

/// A run of records in the pending buffer that go to one segment.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) base_seq: u64,
    pub(crate) new_segment: bool,
    pub(crate) buf_start: usize,
    pub(crate) file_offset: u64,
    pub(crate) end_seq: u64,
    pub(crate) index: Vec<IndexEntry>,
}

pub(crate) struct Inner {
    pub(crate) buf: Vec<u8>,
    pub(crate) chunks: Vec<Chunk>,
    pub(crate) next_seq: u64,
    pub(crate) pending_since: Option<Instant>,
    pub(crate) active_base: u64,
    pub(crate) active_len: u64,
    pub(crate) last_index_offset: Option<u64>,
    pub(crate) disk_bytes: u64,
    pub(crate) sync_now: bool,
    pub(crate) force_sync: bool,
    pub(crate) maintenance: bool,
    /// Flush requests made; a cycle that starts after request `n` serves it.
    pub(crate) flush_req: u64,
    pub(crate) state: RunState,
    pub(crate) last_error: Option<String>,
    /// `last_error` says the disk is full.
    pub(crate) disk_full: bool,
    /// Sequence numbers below this are reserved (persisted) and may be handed
    /// out; 0 without reservations.
    pub(crate) reserved_end: u64,
    /// The flusher is asked to persist a new reservation.
    pub(crate) reserve_req: bool,
}

#[derive(Debug)]
pub(crate) struct CursorState {
    pub(crate) position: u64,
    pub(crate) persisted: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Cursors {
    pub(crate) map: BTreeMap<String, CursorState>,
    pub(crate) corrupt: BTreeSet<String>,
    pub(crate) removed: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) appended_records: AtomicU64,
    pub(crate) appended_bytes: AtomicU64,
    pub(crate) stored_bytes: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) deleted_segments: AtomicU64,
    pub(crate) dropped_segments: AtomicU64,
    pub(crate) dropped_seqs: AtomicU64,
    pub(crate) full_events: AtomicU64,
    pub(crate) read_corrupt: AtomicU64,
    pub(crate) io_errors: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) opts: WalOptions,
    pub(crate) inner: Mutex<Inner>,
    pub(crate) wake: Condvar,
    pub(crate) progress: watch::Sender<Progress>,
    pub(crate) space: Notify,
    pub(crate) segs: RwLock<Vec<SegInfo>>,
    pub(crate) cursors: Mutex<Cursors>,
    pub(crate) counters: Counters,
    /// Next sequence number, readable without the append lock.
    pub(crate) next_hint: AtomicU64,
    /// A cursor passing this position lets retention delete a segment.
    pub(crate) retention_hint: AtomicU64,
    /// The group commit interval in microseconds under `Durability::Interval`:
    /// set from the options at open, changed at run time by
    /// [`Wal::set_flush_interval`] (the self-tuning controller widens it
    /// under CPU load). Read by the flusher at every wait.
    pub(crate) interval_us: AtomicU64,
    pub(crate) report: RecoveryReport,
    pub(crate) _lock: Box<dyn std::any::Any + Send + Sync>,
}

/// Replaces the reservation file atomically: a temporary file, synced, renamed
/// over it, the directory synced.
pub(crate) fn write_reserved(storage: &dyn Storage, dir: &Path, end: u64) -> Result<()> {
    let path = dir.join(recover::RESERVE_FILE);
    let tmp = dir.join(format!("{}.tmp", recover::RESERVE_FILE));
    let f = storage.open(&tmp, OpenMode::Create).map_err(WalError::io("create", &tmp))?;
    f.write_at(&format::reserve_file(end), 0).map_err(WalError::io("write", &tmp))?;
    f.sync_data().map_err(WalError::io("sync", &tmp))?;
    storage.rename(&tmp, &path).map_err(WalError::io("rename", &tmp))?;
    storage.sync_dir(dir).map_err(WalError::io("sync", dir))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock is a bug elsewhere; the data under these
    // locks stays consistent at every await-free step, so carry on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn segs(&self) -> RwLockReadGuard<'_, Vec<SegInfo>> {
        self.segs.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn segs_mut(&self) -> RwLockWriteGuard<'_, Vec<SegInfo>> {
        self.segs.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn kick(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut lock(&self.inner));
        self.wake.notify_one();
    }
}
