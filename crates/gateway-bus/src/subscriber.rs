//! Subscribers: lossy ones (bounded lag; a slow one skips and counts its
//! drops, never holding the ring) and durable ones (a named WAL cursor; read
//! from the ring near the head and from the WAL when behind; resume from the
//! last acknowledgement after a restart). Both filter by tag pattern and
//! frame kind.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gateway_model::codec::Decoder;
use gateway_model::{Batch, Frame, FrameKind, TagPattern};
use gateway_wal::{Cursor, CursorStart, ReadItem, Reader};
use prometheus_client::metrics::counter::Counter;

use crate::bus::{Bus, Ring};
use crate::error::BusError;
use crate::metrics::SubscriberLabel;

/// How a subscriber relates to the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubKind {
    /// Lossy: never lags more than `max_lag` frames; beyond, it skips.
    Lossy { max_lag: u64 },
    /// Durable in memory mode: holds the ring (publishers pause for it).
    Holder,
    /// Durable in WAL mode: holds at most `hold_bound` frames behind what is
    /// durable, reads older ones from the WAL.
    WalBacked,
}

impl SubKind {
    pub fn name(self) -> &'static str {
        match self {
            SubKind::Lossy { .. } => "lossy",
            SubKind::Holder | SubKind::WalBacked => "durable",
        }
    }
}

/// State of a subscriber shared with the bus.
pub(crate) struct SubState {
    pub name: String,
    pub kind: SubKind,
    /// Next sequence number the subscriber has not been given yet by `recv`
    /// (what it holds in its local prefetch still counts as held).
    pub pos: AtomicU64,
    pub drops: AtomicU64,
    drop_counter: Counter,
}

/// Which frames a subscriber wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    patterns: Vec<TagPattern>,
    kinds: u8,
    /// Event frames pass whatever their tag (alarms of the gateway itself
    /// have none, and a connector forwards every alarm).
    all_events: bool,
}

impl Filter {
    /// A filter that passes every frame; the subscriber then skips filtering.
    pub fn all() -> Self {
        Filter::default()
    }

    /// Frames whose tag matches one of `patterns` (an empty list matches every
    /// frame; frames without a tag match only an empty list).
    pub fn patterns(mut self, patterns: impl IntoIterator<Item = TagPattern>) -> Self {
        self.patterns = patterns.into_iter().collect();
        self
    }

    /// Frames of these kinds only (empty: all kinds).
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = FrameKind>) -> Self {
        self.kinds = kinds.into_iter().fold(0, |a, k| a | k.bit());
        self
    }

    /// Event frames pass the patterns whatever their tag (they must still
    /// be of a kind the filter takes).
    pub fn all_events(mut self) -> Self {
        self.all_events = true;
        self
    }

    /// Whether `f` passes.
    pub fn matches(&self, f: &Frame) -> bool {
        if self.kinds != 0 && self.kinds & f.kind().bit() == 0 {
            return false;
        }
        if self.patterns.is_empty() || (self.all_events && matches!(f, Frame::Event(_))) {
            return true;
        }
        match f.tag() {
            Some(t) => self.patterns.iter().any(|p| p.matches(t.as_str())),
            None => false,
        }
    }

    fn is_all(&self) -> bool {
        self.kinds == 0 && self.patterns.is_empty()
    }
}

/// What a subscriber is: its name, lossy or durable, where it starts and which
/// frames it wants. Start from [`SubscribeOptions::lossy`] or
/// [`SubscribeOptions::durable`].
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    name: String,
    durable: bool,
    only_durable: bool,
    max_lag: u64,
    start: CursorStart,
    filter: Filter,
}

impl SubscribeOptions {
    /// A lossy subscriber that never falls more than `max_lag` frames behind
    /// the head: beyond that it skips ahead and counts what it skipped.
    pub fn lossy(name: impl Into<String>, max_lag: u64) -> Self {
        SubscribeOptions {
            name: name.into(),
            durable: false,
            only_durable: false,
            max_lag,
            start: CursorStart::Latest,
            filter: Filter::all(),
        }
    }

    /// A durable subscriber with a named cursor. In WAL mode it survives
    /// restarts (resuming after its last [`Subscriber::ack`]); a new cursor starts
    /// at the newest frame unless [`SubscribeOptions::from_oldest`] says otherwise.
    pub fn durable(name: impl Into<String>) -> Self {
        SubscribeOptions {
            name: name.into(),
            durable: true,
            only_durable: true,
            max_lag: 0,
            start: CursorStart::Latest,
            filter: Filter::all(),
        }
    }

    /// A lossy subscriber that, in WAL mode, is given frames only once they are
    /// durable: for anything that forwards sequence numbers outside the process
    /// (a number a crash could lose would be given to another frame after the
    /// restart). Durable subscribers always behave so.
    pub fn only_durable(mut self) -> Self {
        self.only_durable = true;
        self
    }

    /// A durable subscriber that, in WAL mode, is given frames as soon as they
    /// are published, before they are durable: for a connector that forwards
    /// as fast as it can. Its cursor still moves only past frames that are
    /// both acknowledged ([`Subscriber::ack`]) and durable, so after a crash it
    /// resumes no later than the last durable acknowledgement; a frame it
    /// forwarded and the crash then lost keeps its sequence number, which the
    /// log never gives to other data (it reserves numbers ahead of the appends).
    pub fn ahead_of_durability(mut self) -> Self {
        self.only_durable = false;
        self
    }

    /// A new durable cursor starts at the oldest frame still in the log.
    pub fn from_oldest(mut self) -> Self {
        self.start = CursorStart::Oldest;
        self
    }

    /// Only frames passing `filter`.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }
}

/// A batch as a subscriber receives it: shared, never copied.
#[derive(Clone, Debug)]
pub struct Delivery {
    seq: u64,
    batch: Arc<Batch>,
    skip: usize,
    filter: Option<Arc<Filter>>,
}

impl Delivery {
    /// Sequence number of the first frame this delivery carries.
    pub fn first_seq(&self) -> u64 {
        self.seq + self.skip as u64
    }

    /// One past the sequence number of its last frame: acknowledge this.
    pub fn end_seq(&self) -> u64 {
        self.seq + self.batch.len() as u64
    }

    /// The shared batch (all frames, including any before `first_seq` and any
    /// the filter rejects).
    pub fn batch(&self) -> &Arc<Batch> {
        &self.batch
    }

    /// The frames for this subscriber, with their sequence numbers.
    pub fn frames(&self) -> impl Iterator<Item = (u64, &Frame)> + '_ {
        let filter = self.filter.as_deref();
        self.batch.frames()[self.skip..]
            .iter()
            .enumerate()
            .map(move |(i, f)| (self.seq + (self.skip + i) as u64, f))
            .filter(move |(_, f)| filter.is_none_or(|flt| flt.matches(f)))
    }
}

struct WalSide {
    cursor: Option<Cursor>,
    reader: Option<Reader>,
    decoder: Decoder,
    /// When `reader` last read: it and the decoder are let go once the
    /// subscriber has been back on the ring for [`READER_IDLE`].
    last_read: Option<std::time::Instant>,
}

/// How long a subscriber back on the ring keeps what it used to catch up
/// from the WAL. The reader's buffer and the decoder's interned names (one
/// per tag: about 1.1 MB at 10,000 tags) would otherwise stay for the life
/// of the process after every outage. A subscriber at the ring's edge, in
/// and out of the WAL, keeps them: it reads again well within this.
pub const READER_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Receives batches from the bus. Dropping it unsubscribes.
pub struct Subscriber {
    bus: Bus,
    st: Arc<SubState>,
    only_durable: bool,
    filter: Option<Arc<Filter>>,
    local: VecDeque<Delivery>,
    pos: u64,
    acked: u64,
    /// What the WAL cursor holds: `acked`, held back to what is durable for a
    /// subscriber given frames [ahead of durability](SubscribeOptions::ahead_of_durability).
    committed: u64,
    wal: Option<WalSide>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").field("name", &self.st.name).field("pos", &self.pos).finish_non_exhaustive()
    }
}

/// Batches taken from the ring per lock acquisition.
const FILL: usize = 64;

enum Fill {
    Filled,
    Empty,
    Closed,
    WaitWal,
}

impl Bus {
    /// Names of the subscribers registered now.
    pub fn subscriber_names(&self) -> Vec<String> {
        self.inner.lock().subs.iter().map(|s| s.name.clone()).collect()
    }

    /// Registers a subscriber; fails if its name is taken or, for a durable
    /// one in WAL mode, is not a valid cursor name. A durable subscriber in WAL
    /// mode resumes at its cursor; any other starts at the newest frame (or
    /// the oldest held, with `from_oldest`).
    pub fn subscribe(&self, opts: SubscribeOptions) -> Result<Subscriber, BusError> {
        let inner = &self.inner;
        let kind = match (opts.durable, inner.wal.is_some()) {
            (false, _) => SubKind::Lossy { max_lag: opts.max_lag.max(1) },
            (true, false) => SubKind::Holder,
            (true, true) => SubKind::WalBacked,
        };
        let mut r = inner.lock();
        if r.subs.iter().any(|s| s.name == opts.name) {
            return Err(BusError::DuplicateSubscriber(opts.name));
        }
        let (pos, wal) = match (&inner.wal, kind) {
            (Some(w), SubKind::WalBacked) => {
                let cursor = w.cursor(&opts.name, opts.start).map_err(|e| match e {
                    gateway_wal::WalError::CursorName(n) => BusError::SubscriberName(n),
                    e => e.into(),
                })?;
                let pos = cursor.position();
                (pos, Some(WalSide { cursor: Some(cursor), reader: None, decoder: Decoder::new(), last_read: None }))
            }
            _ => (if opts.start == CursorStart::Oldest { r.front } else { r.head }, None),
        };
        let st = Arc::new(SubState {
            drop_counter: inner
                .metrics
                .drop_total
                .get_or_create(&SubscriberLabel { subscriber: opts.name.clone() })
                .clone(),
            name: opts.name,
            kind,
            pos: AtomicU64::new(pos),
            drops: AtomicU64::new(0),
        });
        r.subs.push(st.clone());
        drop(r);
        let filter = (!opts.filter.is_all()).then(|| Arc::new(opts.filter));
        let only_durable = opts.only_durable && inner.wal.is_some();
        Ok(Subscriber {
            bus: self.clone(),
            st,
            only_durable,
            filter,
            local: VecDeque::new(),
            pos,
            acked: pos,
            committed: pos,
            wal,
        })
    }
}

impl Subscriber {
    /// The subscriber's name.
    pub fn name(&self) -> &str {
        &self.st.name
    }

    /// Next sequence number it will receive (after what is buffered locally).
    pub fn position(&self) -> u64 {
        self.local.front().map_or(self.pos, |d| d.first_seq())
    }

    /// Frames published that it has still to receive: from its position to
    /// the bus head, without the sequence numbers the WAL skipped after a
    /// crash (its reservation: a million numbers no frame will ever have,
    /// which would otherwise read as a backlog until the reader passed them).
    pub fn backlog(&self) -> u64 {
        let pos = self.position();
        let skipped = self.bus.inner.wal.as_ref().map_or(0, |w| w.skipped_after(pos));
        self.bus.head_seq().saturating_sub(pos).saturating_sub(skipped)
    }

    /// Whether it holds a reader of the WAL: from its first catch-up until
    /// it has been back on the ring for [`READER_IDLE`].
    pub fn reads_wal(&self) -> bool {
        self.wal.as_ref().is_some_and(|w| w.reader.is_some())
    }

    /// Frames it lost since it subscribed: skipped while too far behind
    /// (lossy) or missing from the WAL (durable).
    pub fn drops(&self) -> u64 {
        self.st.drops.load(Ordering::Relaxed)
    }

    /// Position of the last acknowledgement.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    fn count_drops(&self, n: u64) {
        if n > 0 {
            self.st.drops.fetch_add(n, Ordering::Relaxed);
            self.st.drop_counter.inc_by(n);
        }
    }

    /// The next batch. Waits for one; `Err(Closed)` once the bus is closed and
    /// everything before the close was delivered.
    pub async fn recv(&mut self) -> Result<Delivery, BusError> {
        // An acknowledgement held back until its frames were durable moves on now.
        if self.acked > self.committed {
            self.commit()?;
        }
        loop {
            if let Some(d) = self.local.pop_front() {
                self.delivered();
                return Ok(d);
            }
            if let Fill::Filled = self.fill()? {
                continue;
            }
            let inner = self.bus.inner.clone();
            let data = inner.data.notified();
            tokio::pin!(data);
            data.as_mut().enable();
            // Watch the WAL from before the check, so a flush in between is not missed.
            let mut progress = if self.only_durable { inner.wal.as_ref().map(|w| w.progress()) } else { None };
            match self.fill()? {
                Fill::Filled => continue,
                Fill::Closed => return Err(BusError::Closed),
                Fill::Empty => data.await,
                Fill::WaitWal => match progress.as_mut() {
                    Some(p) => {
                        tokio::select! {
                            _ = p.changed() => {}
                            _ = data => {}
                        }
                    }
                    None => data.await,
                },
            }
        }
    }

    /// The next batch without waiting: `Ok(None)` if none is ready,
    /// `Err(Closed)` once the bus is closed and everything was delivered.
    pub fn try_recv(&mut self) -> Result<Option<Delivery>, BusError> {
        if self.local.is_empty() {
            match self.fill()? {
                Fill::Closed => return Err(BusError::Closed),
                Fill::Filled | Fill::Empty | Fill::WaitWal => {}
            }
        }
        let d = self.local.pop_front();
        if d.is_some() {
            self.delivered();
        }
        Ok(d)
    }

    /// Publishes the delivered position; lifts a ring pause this subscriber caused.
    fn delivered(&self) {
        self.st.pos.store(self.position(), Ordering::Release);
        let inner = &self.bus.inner;
        if self.st.kind == SubKind::Holder && inner.ring_paused.load(Ordering::Relaxed) {
            inner.maybe_resume(&mut inner.lock());
        }
    }

    /// Acknowledges every frame below `end` (usually a [`Delivery::end_seq`]):
    /// a durable subscriber resumes after it following a restart or [`Subscriber::rewind`].
    pub fn ack(&mut self, end: u64) -> Result<(), BusError> {
        if end <= self.acked {
            return Ok(());
        }
        self.acked = end;
        self.commit()
    }

    /// Moves the WAL cursor to the acknowledged position, or as far towards
    /// it as the log is durable: a crash must never find the cursor past data
    /// it lost. The rest follows on a later `ack` or `recv`.
    fn commit(&mut self) -> Result<(), BusError> {
        let Some(c) = self.wal.as_ref().and_then(|w| w.cursor.as_ref()) else {
            self.committed = self.acked;
            return Ok(());
        };
        let target = match (self.only_durable, &self.bus.inner.wal) {
            (false, Some(w)) => self.acked.min(w.durable()),
            _ => self.acked,
        };
        if target > self.committed {
            c.commit(target)?;
            self.committed = target;
        }
        Ok(())
    }

    /// Goes back to the last acknowledgement: everything after it is delivered
    /// again (in WAL mode from the WAL if the ring no longer has it). For a
    /// connector that lost its link with messages in flight. In memory mode
    /// there is no WAL: what the ring no longer holds is counted as dropped.
    pub fn rewind(&mut self) {
        self.local.clear();
        self.pos = self.acked;
        self.st.pos.store(self.pos, Ordering::Release);
        if let Some(w) = &mut self.wal {
            w.reader = None;
        }
    }

    fn fill(&mut self) -> Result<Fill, BusError> {
        if let Some(side) = &mut self.wal
            && side.last_read.is_some_and(|t| t.elapsed() >= READER_IDLE)
        {
            // Back on the ring for a while: a later catch-up opens a new
            // reader where it needs one, as after a rewind.
            side.reader = None;
            side.decoder = Decoder::new();
            side.last_read = None;
        }
        let inner = self.bus.inner.clone();
        // A durable subscriber in WAL mode is given only durable frames: what it
        // forwards is then always what the gateway itself would find after a
        // crash, and no sequence number it saw can be reused by a restart.
        let durable = match (self.only_durable, &inner.wal) {
            (true, Some(w)) => w.durable(),
            _ => u64::MAX,
        };
        if self.st.kind == SubKind::WalBacked
            && let Some(w) = &inner.wal
            && self.pos < inner.lock().front
        {
            // Inside the numbers the log skipped after a crash (none will
            // ever carry a frame): go past them at once rather than wait for
            // the next record to be durable, which under a long group commit
            // held a connector back while its live feed went on without it.
            let past = w.past_skip(self.pos);
            if past > self.pos {
                self.pos = past;
                self.st.pos.store(self.pos, Ordering::Release);
            }
        }
        {
            let r = inner.lock();
            if self.pos < r.front {
                match self.st.kind {
                    SubKind::WalBacked => {
                        drop(r);
                        return self.fill_from_wal();
                    }
                    // A lossy subscriber was overtaken: count what it missed.
                    SubKind::Lossy { .. } | SubKind::Holder => {
                        self.count_drops(r.front - self.pos);
                        self.pos = r.front;
                    }
                }
            }
            if let SubKind::Lossy { max_lag } = self.st.kind
                && r.head - self.pos > max_lag
            {
                let target = r.head - max_lag;
                let i = r.slot_of(target);
                let to = if r.slots[i].seq < target { r.slots.get(i + 1).map_or(r.head, |s| s.seq) } else { target };
                self.count_drops(to - self.pos);
                self.pos = to;
            }
            if self.pos >= r.head {
                return Ok(if r.closed { Fill::Closed } else { Fill::Empty });
            }
            if self.pos >= durable {
                return Ok(Fill::WaitWal);
            }
            self.take_from_ring(&r, durable);
        }
        Ok(Fill::Filled)
    }

    fn take_from_ring(&mut self, r: &Ring, limit: u64) {
        let first = r.slot_of(self.pos);
        for i in first..(first + FILL).min(r.slots.len()) {
            let slot = &r.slots[i];
            let end = r.slots.get(i + 1).map_or(r.head, |s| s.seq);
            if end > limit {
                break;
            }
            let skip = (self.pos - slot.seq) as usize;
            self.local.push_back(Delivery {
                seq: slot.seq,
                batch: slot.batch.clone(),
                skip,
                filter: self.filter.clone(),
            });
            self.pos = end;
        }
    }

    fn fill_from_wal(&mut self) -> Result<Fill, BusError> {
        let inner = self.bus.inner.clone();
        let wal = inner.wal.as_ref().expect("WAL-backed subscriber in WAL mode");
        let side = self.wal.as_mut().expect("WAL-backed subscriber has a WAL side");
        side.last_read = Some(std::time::Instant::now());
        let (name, pos) = (&self.st.name, self.pos);
        let reader = side.reader.get_or_insert_with(|| {
            // Behind the ring: worth knowing when a subscriber keeps falling
            // back to the disk (each time costs a reader and a decoder).
            tracing::debug!(subscriber = %name, position = pos, "Reading from the WAL: behind the ring.");
            wal.reader(pos)
        });
        if reader.position() != self.pos {
            reader.seek(self.pos);
        }
        let durable = wal.durable();
        let mut filled = 0;
        let mut dropped = 0;
        while filled < FILL {
            match reader.next_item()? {
                Some(ReadItem::Record(rec)) => {
                    let end = rec.end_seq();
                    if end > durable {
                        // Written but not yet durable: read it again once it is.
                        break;
                    }
                    match side.decoder.decode(&rec.payload) {
                        Ok(batch) => {
                            let skip = self.pos.saturating_sub(rec.first_seq) as usize;
                            self.local.push_back(Delivery {
                                seq: rec.first_seq,
                                batch: Arc::new(batch),
                                skip,
                                filter: self.filter.clone(),
                            });
                            filled += 1;
                        }
                        Err(e) => {
                            tracing::error!(subscriber = %self.st.name, first_seq = rec.first_seq, error = %e, "Skipping a WAL record that does not decode.");
                            dropped += end - self.pos.max(rec.first_seq);
                        }
                    }
                    self.pos = end;
                }
                Some(ReadItem::Gap { from, to }) => {
                    tracing::warn!(subscriber = %self.st.name, from, to, "Frames missing from the WAL (dropped by the overflow policy or damaged).");
                    dropped += to.saturating_sub(from.max(self.pos));
                    self.pos = to;
                }
                None => break,
            }
            // Back within the ring: let it take over.
            if self.pos >= inner.lock().front {
                break;
            }
        }
        self.count_drops(dropped);
        if self.local.is_empty() {
            self.st.pos.store(self.pos, Ordering::Release);
        }
        Ok(if filled > 0 || dropped > 0 { Fill::Filled } else { Fill::WaitWal })
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let inner = &self.bus.inner;
        let mut r = inner.lock();
        r.subs.retain(|s| !Arc::ptr_eq(s, &self.st));
        inner.maybe_resume(&mut r);
    }
}
