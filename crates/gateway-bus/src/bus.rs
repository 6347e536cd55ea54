//! The bus itself: the ring of shared batches, publishing with backpressure,
//! eviction, and the write-through to the WAL.
//!
//! The ring is a `VecDeque` of 16-byte slots (`first sequence number`,
//! `Arc<Batch>`) behind one mutex. Publishing takes the lock for a push and an
//! eviction check; subscribers take it to clone up to 64 slot pointers at a
//! time. Nothing is copied, serialized or allocated per frame under the lock;
//! the WAL encoding happens before it. Measured against `tokio::sync::broadcast`
//! in `benches/bus.rs`.
//!
//! Slots are contiguous in sequence numbers: slot `i` covers
//! `slots[i].seq .. slots[i + 1].seq` (the last one up to `head`), which lets a
//! subscriber find its position by binary search without touching a batch.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gateway_model::Batch;
use gateway_model::codec::Encoder;
use gateway_wal::{Durability, OverflowPolicy, SeqRange, Wal, WalError, WalOptions, WalStats};
use tokio::sync::Notify;

use crate::command::CommandRouter;
use crate::config::{BusSettings, Persistence, WalCompression, WalDurability, WalOverflow};
use crate::error::{BusError, TryPublishError};
use crate::metrics::{BusMetrics, SubscriberLabel, sync_counter};
use crate::subscriber::{SubKind, SubState};

/// Sequence numbers the WAL reserves ahead of the appends. After a crash the
/// numbering jumps by at most this (no data is lost by the jump); the WAL
/// renews the reservation, one small synced file, every half of it.
pub const SEQ_RESERVATION: u64 = 1 << 20;

/// Frames per slot assumed when pre-allocating the slot array.
///
/// A slot holds a whole batch, and batches are one device poll or up to
/// `max_batch_size` single frames from a batcher, so a ring of `capacity`
/// frames rarely needs `capacity` slots. Pre-faulting one slot per frame cost
/// the default preset 16 MiB of resident memory (half its memory budget) to
/// cover a backlog of one-frame batches that real publishers do not produce.
/// A backlog of smaller batches than this still works: the array grows once,
/// and only while a subscriber is behind.
pub(crate) const PREFAULT_FRAMES_PER_SLOT: u64 = 16;

/// Slots pre-allocated in `high_performance_mode` for a ring of `capacity` frames.
pub(crate) fn prefault_slots(capacity: u64) -> usize {
    (capacity / PREFAULT_FRAMES_PER_SLOT).clamp(capacity.min(1024), capacity) as usize
}

/// One ring slot: the batch's first sequence number and the batch. 16 bytes.
pub(crate) struct Slot {
    // Field order matters only for size: u64 + pointer, no padding.
    pub seq: u64,
    pub batch: Arc<Batch>,
}

pub(crate) struct Ring {
    pub slots: VecDeque<Slot>,
    /// Next sequence number to assign.
    pub head: u64,
    /// First sequence number held (`head` when empty).
    pub front: u64,
    pub paused: bool,
    pub closed: bool,
    pub subs: Vec<Arc<SubState>>,
}

impl Ring {
    /// Index of the slot holding `seq` (which must be in `front..head`).
    pub fn slot_of(&self, seq: u64) -> usize {
        self.slots.partition_point(|s| s.seq <= seq).saturating_sub(1)
    }

    /// Frames held for subscribers that must not lose anything in memory mode.
    fn held_for_holders(&self) -> u64 {
        self.subs
            .iter()
            .filter(|s| s.kind == SubKind::Holder)
            .map(|s| self.head.saturating_sub(s.pos.load(Ordering::Acquire)))
            .max()
            .unwrap_or(0)
    }
}

pub(crate) struct Inner {
    pub cfg: BusSettings,
    pub capacity: u64,
    /// How far a WAL-backed subscriber may lag behind what is durable before
    /// it stops holding the ring.
    pub hold_bound: u64,
    pub ring: Mutex<Ring>,
    /// New data (or closing).
    pub data: Notify,
    /// Woken when the ring pause is lifted, so that paused publishers retry.
    pub space: Notify,
    pub wal: Option<Arc<Wal>>,
    pub wal_paused: AtomicBool,
    /// Mirror of `Ring::paused`, so subscribers check it without the lock.
    pub ring_paused: AtomicBool,
    pub metrics: Arc<BusMetrics>,
    pub commands: CommandRouter,
    pub published_batches: AtomicU64,
    wal_dropped_seen: AtomicU64,
    /// How long northbound connectors may hold readings to send them in
    /// fewer, larger messages, in microseconds: 0 unless the self-tuning
    /// controller widened it ([`Bus::set_batch_linger`]).
    batch_linger_us: AtomicU64,
}

impl Inner {
    pub fn lock(&self) -> MutexGuard<'_, Ring> {
        // Ring updates are complete at every point a panic could occur, so a
        // poisoned lock still guards consistent data.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lifts the ring pause if holders have drained below `resume_lo`.
    pub fn maybe_resume(&self, r: &mut Ring) {
        if r.paused && (r.held_for_holders() as f64) <= self.cfg.resume_lo * self.capacity as f64 {
            self.set_paused(r, false);
            self.space.notify_waiters();
        }
    }

    pub fn set_paused(&self, r: &mut Ring, paused: bool) {
        r.paused = paused;
        self.ring_paused.store(paused, Ordering::Relaxed);
        self.metrics.paused.set(i64::from(paused));
    }
}

/// Why a publish attempt did not go through.
enum Refused {
    Ring,
    Wal,
    Fatal(BusError),
}

thread_local! {
    static ENCODER: RefCell<(Encoder, Vec<u8>)> = RefCell::new((Encoder::new(), Vec::new()));
    static GARBAGE: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// The frame bus. Cheap to clone; all clones share one bus.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use gateway_bus::{Bus, BusSettings, Persistence, SubscribeOptions};
/// use gateway_model::{Batch, DataFrame, Quality, TagId, Value};
///
/// let bus = Bus::open(BusSettings { persistence: Persistence::Memory, ..BusSettings::memory_optimized() }, Default::default()).unwrap();
/// let mut sub = bus.subscribe(SubscribeOptions::lossy("ui", 1 << 16)).unwrap();
/// let tag = TagId::new("line1.temp").unwrap();
/// let batch = Batch::from(vec![DataFrame::new(tag, Value::F64(21.5), Quality::GOOD, 0).into()]);
/// let range = bus.publish(Arc::new(batch)).await.unwrap();
/// let got = sub.recv().await.unwrap();
/// assert_eq!(got.first_seq(), range.start);
/// assert_eq!(got.frames().count(), 1);
/// # });
/// ```
#[derive(Clone)]
pub struct Bus {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("persistence", &self.inner.cfg.persistence).finish_non_exhaustive()
    }
}

/// A snapshot of a subscriber's state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SubscriberStats {
    /// The name it subscribed with; in WAL mode a durable subscriber's cursor
    /// has the same name.
    pub name: String,
    /// `lossy`, `durable`.
    pub kind: &'static str,
    /// Next sequence number it will receive.
    pub position: u64,
    /// Frames between the head and its position.
    pub lag: u64,
    /// Frames it lost since it subscribed: skipped while too far behind
    /// (lossy) or missing from the WAL (durable).
    pub drops: u64,
}

/// A snapshot of the bus's state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BusStats {
    /// Next sequence number to be assigned.
    pub head_seq: u64,
    /// Frames published and still held in the ring for subscribers.
    pub ring_frames: u64,
    /// Batches those frames arrived in; each takes one ring slot.
    pub ring_batches: u64,
    /// Frames the ring can hold, `2^ring_pow`.
    pub capacity: u64,
    /// Bytes of the ring's slot array as allocated (16 per slot).
    pub ring_slot_bytes: u64,
    /// Whether publishers are paused by backpressure.
    pub paused: bool,
    /// Batches published since start.
    pub published_batches: u64,
    /// One entry per subscriber registered now, in the order they subscribed.
    pub subscribers: Vec<SubscriberStats>,
    /// WAL statistics, in WAL mode.
    #[serde(skip)]
    pub wal: Option<WalStats>,
}

impl Bus {
    /// Opens the bus (and, in WAL mode, its write-ahead log in `cfg.wal_dir`).
    pub fn open(cfg: BusSettings, metrics: Arc<BusMetrics>) -> Result<Bus, BusError> {
        Self::open_with_storage(cfg, metrics, Arc::new(gateway_wal::StdStorage))
    }

    /// [`Bus::open`] with the WAL on another storage backend (tests use the
    /// simulated disk to inject failures).
    pub fn open_with_storage(
        cfg: BusSettings,
        metrics: Arc<BusMetrics>,
        storage: Arc<dyn gateway_wal::Storage>,
    ) -> Result<Bus, BusError> {
        cfg.validate()?;
        let capacity = cfg.capacity();
        let wal = match cfg.persistence {
            Persistence::Memory => None,
            Persistence::Wal => {
                let m = metrics.clone();
                let opts = WalOptions {
                    durability: match cfg.wal_durability {
                        WalDurability::Interval => Durability::Interval(Duration::from_millis(cfg.wal_flush_ms)),
                        WalDurability::Always => Durability::Always,
                        WalDurability::None => Durability::None,
                    },
                    segment_bytes: cfg.segment_bytes(),
                    max_bytes: cfg.wal_max_bytes,
                    overflow: match cfg.wal_overflow {
                        WalOverflow::Block => OverflowPolicy::Block,
                        WalOverflow::DropOldest => OverflowPolicy::DropOldest,
                    },
                    compression: match cfg.wal_compression {
                        WalCompression::None => gateway_wal::Compression::None,
                        WalCompression::Lz4 => gateway_wal::Compression::Lz4,
                    },
                    on_flush: Some(Arc::new(move |i: &gateway_wal::FlushInfo| {
                        m.wal_flush_duration.observe(i.duration.as_secs_f64());
                        m.wal_flush_window.observe(i.duration);
                    })),
                    storage,
                    // Subscribers may forward frames before they are durable
                    // (SubscribeOptions::ahead_of_durability): a crash must not
                    // give their sequence numbers to other data.
                    reserve_seqs: SEQ_RESERVATION,
                    ..WalOptions::default()
                };
                Some(Arc::new(Wal::open(&cfg.wal_dir, opts)?))
            }
        };
        let head = wal.as_ref().map_or(0, |w| w.next_seq());
        let mut slots = VecDeque::new();
        if cfg.high_performance_mode {
            // Reserve and touch the slot array now, so publishing does not
            // allocate or page-fault it later.
            let empty = Arc::new(Batch::default());
            let n = prefault_slots(capacity);
            slots.reserve_exact(n);
            slots.extend((0..n).map(|_| Slot { seq: 0, batch: empty.clone() }));
            slots.clear();
        }
        let hold_bound = cfg.async_write_queue_size as u64;
        let inner = Inner {
            capacity,
            hold_bound,
            ring: Mutex::new(Ring { slots, head, front: head, paused: false, closed: false, subs: Vec::new() }),
            data: Notify::new(),
            space: Notify::new(),
            wal,
            wal_paused: AtomicBool::new(false),
            ring_paused: AtomicBool::new(false),
            metrics,
            commands: CommandRouter::default(),
            published_batches: AtomicU64::new(0),
            wal_dropped_seen: AtomicU64::new(0),
            batch_linger_us: AtomicU64::new(0),
            cfg,
        };
        Ok(Bus { inner: Arc::new(inner) })
    }

    /// The settings it was opened with, preset and overrides resolved; they do
    /// not change while it runs.
    pub fn settings(&self) -> &BusSettings {
        &self.inner.cfg
    }

    /// The metrics it updates, as passed to [`Bus::open`]; the gauges are
    /// current only after [`Bus::refresh_gauges`].
    pub fn metrics(&self) -> &Arc<BusMetrics> {
        &self.inner.metrics
    }

    /// How long a northbound connector may hold readings before sending them,
    /// to send fewer, larger messages (at least its own `batch_linger_ms`).
    /// Zero unless the self-tuning controller widened it under CPU load.
    pub fn batch_linger(&self) -> Duration {
        Duration::from_micros(self.inner.batch_linger_us.load(Ordering::Relaxed))
    }

    /// Sets [`Bus::batch_linger`]; connectors read it when they start holding a message.
    pub fn set_batch_linger(&self, d: Duration) {
        self.inner.batch_linger_us.store(d.as_micros().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// The write-ahead log, in WAL mode.
    pub fn wal(&self) -> Option<&Arc<Wal>> {
        self.inner.wal.as_ref()
    }

    /// Publishes a batch, waiting (asynchronously) while backpressure applies.
    /// Returns the sequence numbers of its frames. In WAL mode the batch is in
    /// the log's buffer when this returns; see [`Bus::wait_durable`].
    pub async fn publish(&self, batch: impl Into<Arc<Batch>>) -> Result<SeqRange, BusError> {
        let batch = batch.into();
        let started = Instant::now();
        let mut counted = false;
        loop {
            if self.inner.wal.is_some() {
                counted |= self.wal_room().await?;
            }
            match self.try_publish_inner(&batch) {
                Ok(r) => return Ok(self.published(r, batch.len(), started)),
                Err(Refused::Fatal(e)) => return Err(e),
                Err(_) => {}
            }
            // Slow path: register for the wake-up first, then try again, so a
            // wake-up between the failed attempt and the wait is not lost.
            let ring_space = self.inner.space.notified();
            let wal_space = self.inner.wal.as_ref().map(|w| w.space_notified());
            tokio::pin!(ring_space);
            ring_space.as_mut().enable();
            let mut wal_space = wal_space.map(Box::pin);
            if let Some(w) = wal_space.as_mut() {
                w.as_mut().enable();
            }
            let refused = match self.try_publish_inner(&batch) {
                Ok(r) => return Ok(self.published(r, batch.len(), started)),
                Err(Refused::Fatal(e)) => return Err(e),
                Err(r) => r,
            };
            if !counted {
                self.inner.metrics.backpressure_waits_total.inc();
                counted = true;
            }
            match (refused, wal_space) {
                (Refused::Wal, Some(w)) => w.await,
                _ => ring_space.await,
            }
        }
    }

    fn published(&self, r: SeqRange, n: usize, started: Instant) -> SeqRange {
        let m = &self.inner.metrics;
        m.publish_total.inc_by(n as u64);
        m.batch_size.observe(n as f64);
        m.batch_send_duration.observe(started.elapsed().as_secs_f64());
        self.inner.published_batches.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// Waits while the WAL's write queue is above `backpressure_threshold`,
    /// until it is below `resume_lo` of `async_write_queue_size`. Returns whether it waited.
    async fn wal_room(&self) -> Result<bool, BusError> {
        let Some(wal) = &self.inner.wal else { return Ok(false) };
        let cfg = &self.inner.cfg;
        let q = cfg.async_write_queue_size as f64;
        let pending = |written: u64| wal.next_seq().saturating_sub(written) as f64;
        let written = wal.written();
        if !self.inner.wal_paused.load(Ordering::Relaxed) {
            if pending(written) < cfg.backpressure_threshold * q {
                return Ok(false);
            }
            self.inner.wal_paused.store(true, Ordering::Relaxed);
            self.inner.metrics.paused.set(1);
        }
        wal.flush_soon();
        self.inner.metrics.backpressure_waits_total.inc();
        let mut rx = wal.progress();
        let r = rx.wait_for(|p| pending(p.written) <= cfg.resume_lo * q).await;
        self.inner.wal_paused.store(false, Ordering::Relaxed);
        self.inner.metrics.paused.set(0);
        r.map(|_| true).map_err(|_| BusError::Closed)
    }

    /// Publishes without waiting; under backpressure the batch comes back in
    /// [`TryPublishError::Full`].
    pub fn try_publish(&self, batch: impl Into<Arc<Batch>>) -> Result<SeqRange, TryPublishError> {
        let batch = batch.into();
        let started = Instant::now();
        if self.inner.wal_paused.load(Ordering::Relaxed) {
            return Err(TryPublishError::Full(batch));
        }
        match self.try_publish_inner(&batch) {
            Ok(r) => Ok(self.published(r, batch.len(), started)),
            Err(Refused::Fatal(e)) => Err(TryPublishError::Other(e)),
            Err(_) => Err(TryPublishError::Full(batch)),
        }
    }

    /// [`Bus::publish`] for threads outside an async runtime.
    pub fn publish_blocking(&self, batch: impl Into<Arc<Batch>>) -> Result<SeqRange, BusError> {
        gateway_wal::block_on(self.publish(batch))
    }

    fn try_publish_inner(&self, batch: &Arc<Batch>) -> Result<SeqRange, Refused> {
        let inner = &*self.inner;
        let n = batch.len() as u64;
        let max = inner.capacity as usize / 2;
        if batch.len() > max {
            return Err(Refused::Fatal(BusError::TooLarge { len: batch.len(), max }));
        }
        ENCODER.with(|enc| {
            let mut enc = enc.borrow_mut();
            let (encoder, buf) = &mut *enc;
            if inner.wal.is_some() && n > 0 {
                buf.clear();
                encoder.encode(batch, buf);
            }
            let mut r = inner.lock();
            if r.closed {
                return Err(Refused::Fatal(BusError::Closed));
            }
            if n == 0 {
                return Ok(SeqRange { start: r.head, end: r.head });
            }
            let held = r.held_for_holders();
            if held > 0 || r.paused {
                let cap = inner.capacity as f64;
                if r.paused {
                    if held as f64 > inner.cfg.resume_lo * cap {
                        return Err(Refused::Ring);
                    }
                    inner.set_paused(&mut r, false);
                    // Others may be waiting for exactly this.
                    inner.space.notify_waiters();
                }
                if held + n > inner.capacity {
                    inner.set_paused(&mut r, true);
                    return Err(Refused::Ring);
                }
                if (held + n) as f64 > inner.cfg.pause_hi * cap {
                    // Accept this batch; the next publisher waits.
                    inner.set_paused(&mut r, true);
                }
            }
            let range = match &inner.wal {
                None => SeqRange { start: r.head, end: r.head + n },
                Some(wal) => match wal.try_append(buf, n as u32) {
                    Ok(range) => range,
                    Err(WalError::Full { .. } | WalError::Backlogged { .. }) => return Err(Refused::Wal),
                    Err(e) => return Err(Refused::Fatal(e.into())),
                },
            };
            debug_assert_eq!(range.start, r.head, "WAL and ring sequence numbers agree");
            r.slots.push_back(Slot { seq: range.start, batch: batch.clone() });
            r.head = range.end;
            GARBAGE.with(|g| {
                let mut g = g.borrow_mut();
                self.evict(&mut r, &mut g);
                drop(r);
                // Batches are freed outside the lock.
                g.clear();
            });
            inner.data.notify_waiters();
            Ok(range)
        })
    }

    /// Drops slots every subscriber is done with, and anything beyond capacity.
    ///
    /// A WAL-backed subscriber is held for up to `hold_bound` frames behind
    /// what the log has made durable, not behind the head: behind the ring it
    /// reads only durable records from the log, so counting from the head
    /// left it only the bound minus the commit's lag. On the memory preset
    /// (5,000 frames, 50 ms at 100,000 values/s, against a 20 ms commit
    /// interval plus the fsync: about 4,000 frames) a subscriber 10 ms late
    /// fell off the ring, and the bench's uplink and the command audit read
    /// the stream back from the log over and over, each keeping a reader and
    /// a decoder with every tag's name (2 MB between them at 10,000 tags,
    /// and a decode of every frame twice). Capacity still bounds it all.
    pub(crate) fn evict(&self, r: &mut Ring, garbage: &mut Vec<Slot>) {
        let head = r.head;
        let mut keep_from = head;
        // Read once, and only if a WAL-backed subscriber asks.
        let mut durable = None;
        for s in &r.subs {
            let p = s.pos.load(Ordering::Acquire);
            let k = match s.kind {
                SubKind::Holder => p,
                SubKind::Lossy { max_lag } => p.max(head.saturating_sub(max_lag)),
                SubKind::WalBacked => {
                    let d = *durable.get_or_insert_with(|| self.inner.wal.as_ref().map_or(head, |w| w.durable()));
                    p.max(d.min(head).saturating_sub(self.inner.hold_bound))
                }
            };
            keep_from = keep_from.min(k);
        }
        keep_from = keep_from.max(head.saturating_sub(self.inner.capacity));
        while r.slots.len() > 1 && r.slots[1].seq <= keep_from {
            garbage.extend(r.slots.pop_front());
        }
        if r.slots.len() == 1 && head <= keep_from {
            garbage.extend(r.slots.pop_front());
        }
        r.front = r.slots.front().map_or(head, |s| s.seq);
    }

    /// Waits until every frame below `end` is durable (WAL mode; at once in memory mode).
    pub async fn wait_durable(&self, end: u64) -> Result<(), BusError> {
        match &self.inner.wal {
            Some(w) => Ok(w.wait_durable(end).await?),
            None => Ok(()),
        }
    }

    /// A snapshot of the bus's state.
    pub fn stats(&self) -> BusStats {
        let r = self.inner.lock();
        let subscribers = r
            .subs
            .iter()
            .map(|s| {
                let position = s.pos.load(Ordering::Relaxed);
                SubscriberStats {
                    name: s.name.clone(),
                    kind: s.kind.name(),
                    position,
                    lag: r.head.saturating_sub(position),
                    drops: s.drops.load(Ordering::Relaxed),
                }
            })
            .collect();
        let stats = BusStats {
            head_seq: r.head,
            ring_frames: r.head - r.front,
            ring_batches: r.slots.len() as u64,
            capacity: self.inner.capacity,
            ring_slot_bytes: (r.slots.capacity() * std::mem::size_of::<Slot>()) as u64,
            paused: r.paused || self.inner.wal_paused.load(Ordering::Relaxed),
            published_batches: self.inner.published_batches.load(Ordering::Relaxed),
            subscribers,
            wal: None,
        };
        drop(r);
        BusStats { wal: self.inner.wal.as_ref().map(|w| w.stats()), ..stats }
    }

    /// Brings the state gauges up to date; call before encoding metrics.
    pub fn refresh_gauges(&self) {
        let s = self.stats();
        let m = &self.inner.metrics;
        m.ring_used.set(s.ring_frames as i64);
        m.paused.set(i64::from(s.paused));
        for sub in &s.subscribers {
            m.backlog_lag.get_or_create(&SubscriberLabel { subscriber: sub.name.clone() }).set(sub.lag as i64);
        }
        if let Some(w) = &s.wal {
            m.wal_bytes.set(w.disk_bytes as i64);
            sync_counter(&m.wal_dropped_total, w.dropped_seqs, &self.inner.wal_dropped_seen);
        }
    }

    /// Closes the bus: publishers get [`BusError::Closed`], subscribers drain
    /// what is left and then get it too; the WAL is flushed and synced.
    pub async fn close(&self) -> Result<(), BusError> {
        {
            let mut r = self.inner.lock();
            r.closed = true;
        }
        self.inner.data.notify_waiters();
        self.inner.space.notify_waiters();
        self.inner.commands.close();
        if let Some(w) = &self.inner.wal {
            w.flush().await?;
        }
        Ok(())
    }

    /// The next sequence number to be assigned (one past the newest frame).
    pub fn head_seq(&self) -> u64 {
        self.inner.lock().head
    }

    /// Whether [`Bus::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_ring_slot_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<super::Slot>(), 16);
    }
}
