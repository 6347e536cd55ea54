//! Reading the log from any sequence number. Payloads are slices of large
//! reads (one copy from the kernel, none after), decompressed only when they
//! were stored compressed. Readers see only records the flusher has written,
//! never a half-written tail, and report the sequence numbers they cannot
//! deliver (deleted by `drop_oldest`, lost to corruption) as gaps.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use crate::error::{Corruption, Result, WalError};
use crate::format::{self, RECORD_HEADER_LEN, Scan};
use crate::recover::Window;
use crate::segs;
use crate::storage::{OpenMode, StorageFile};
use crate::wal::{Shared, decode_payload};

/// Size of the reads a reader makes.
const READ_CHUNK: u64 = 1 << 20;

/// A record as read back: the sequence numbers it covers and its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The first sequence number the record covers, as its append returned.
    pub first_seq: u64,
    /// How many sequence numbers it covers (the `count` given to the append);
    /// at least 1.
    pub count: u32,
    /// The payload as appended, already decompressed.
    pub payload: Bytes,
}

impl Record {
    /// One past the last sequence number.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }
}

/// One step of a [`Reader`]: a record, or a range that will never be delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadItem {
    /// The next record. It may start before the reader's position when the
    /// position falls inside it; the caller skips what it already has.
    Record(Record),
    /// Sequence numbers `from..to` cannot be delivered: deleted by the overflow
    /// policy or lost to corruption.
    Gap {
        /// The first sequence number missing.
        from: u64,
        /// One past the last missing; the reader goes on from here.
        to: u64,
    },
}

struct Open {
    base_seq: u64,
    path: PathBuf,
    file: Box<dyn StorageFile>,
    pos: u64,
    limit: u64,
    bad: Vec<(u64, u64)>,
    chunk: Bytes,
    chunk_start: u64,
}

/// Reads records in sequence order. Not shared between threads; open one per consumer.
pub struct Reader {
    shared: Arc<Shared>,
    next: u64,
    cur: Option<Open>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("next", &self.next).finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, from: u64) -> Self {
        Reader { shared, next: from, cur: None }
    }

    /// The next sequence number this reader will deliver.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Continue from `seq`.
    pub fn seek(&mut self, seq: u64) {
        self.next = seq;
        self.cur = None;
    }

    /// The next record, skipping gaps. `None` when caught up with what is written.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            match self.next_item()? {
                Some(ReadItem::Record(r)) => return Ok(Some(r)),
                Some(ReadItem::Gap { .. }) => continue,
                None => return Ok(None),
            }
        }
    }

    /// The next record or gap. `None` when caught up with what is written;
    /// call again later for more.
    pub fn next_item(&mut self) -> Result<Option<ReadItem>> {
        loop {
            if self.cur.is_none() {
                let segs = self.shared.segs();
                let Some(first) = segs.first() else { return Ok(None) };
                if self.next < first.base_seq {
                    if self.next >= first.base_seq - first.skipped {
                        self.next = first.base_seq;
                        continue;
                    }
                    let gap = ReadItem::Gap { from: self.next, to: first.base_seq };
                    self.next = first.base_seq;
                    return Ok(Some(gap));
                }
                let i = segs::find(&segs, self.next).expect("next >= first base");
                let s = &segs[i];
                if self.next >= s.end_seq {
                    match segs.get(i + 1) {
                        Some(n) if self.next >= n.base_seq - n.skipped => {
                            self.next = n.base_seq;
                            continue;
                        }
                        Some(n) => {
                            let gap = ReadItem::Gap { from: self.next, to: n.base_seq };
                            self.next = n.base_seq;
                            return Ok(Some(gap));
                        }
                        None => return Ok(None),
                    }
                }
                let (path, pos, limit, bad, base_seq) =
                    (s.path.clone(), s.seek(self.next), s.len, s.bad.clone(), s.base_seq);
                drop(segs);
                let file = match self.shared.storage.open(&path, OpenMode::Read) {
                    Ok(f) => f,
                    // Deleted by retention since we looked: look again.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(WalError::io("open", &path)(e)),
                };
                self.cur = Some(Open { base_seq, path, file, pos, limit, bad, chunk: Bytes::new(), chunk_start: 0 });
            }
            let o = self.cur.as_mut().expect("opened above");
            if o.pos >= o.limit {
                let segs = self.shared.segs();
                match segs.iter().position(|s| s.base_seq == o.base_seq) {
                    Some(i) if segs[i].len > o.limit => {
                        o.limit = segs[i].len;
                        continue;
                    }
                    Some(i) if i + 1 == segs.len() => return Ok(None),
                    _ => {
                        drop(segs);
                        self.cur = None;
                        continue;
                    }
                }
            }
            if let Some(&(_, end)) = o.bad.iter().find(|&&(a, b)| o.pos >= a && o.pos < b) {
                o.pos = end;
                continue;
            }
            match read_record(o, self.next)? {
                Some((h, payload)) => {
                    if h.end_seq() <= self.next {
                        o.pos += h.disk_len();
                        continue;
                    }
                    if h.first_seq > self.next {
                        let gap = ReadItem::Gap { from: self.next, to: h.first_seq };
                        self.next = h.first_seq;
                        return Ok(Some(gap));
                    }
                    o.pos += h.disk_len();
                    let Some(payload) = decode_payload(h.codec, h.raw_len, payload) else {
                        self.shared.counters.read_corrupt.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(segment = %o.path.display(), error = %Corruption::Decompress, "Skipping a record that does not decompress.");
                        let gap = ReadItem::Gap { from: self.next, to: h.end_seq() };
                        self.next = h.end_seq();
                        return Ok(Some(gap));
                    };
                    self.next = h.end_seq();
                    return Ok(Some(ReadItem::Record(Record { first_seq: h.first_seq, count: h.count, payload })));
                }
                None => {
                    // Damaged after open (the disk changed under us): skip to the next valid record.
                    self.shared.counters.read_corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(segment = %o.path.display(), offset = o.pos, "Corrupt record while reading the log; skipping it.");
                    let mut w = Window::new(&*o.file, &o.path, o.limit);
                    match w.find_valid(o.pos + 1, self.next.saturating_sub(u64::from(u32::MAX)))? {
                        Some((q, _)) => o.pos = q,
                        None => o.pos = o.limit,
                    }
                    o.chunk = Bytes::new();
                }
            }
        }
    }
}

/// Reads and checks the record at `o.pos`; `None` if it is not valid.
fn read_record(o: &mut Open, _next: u64) -> Result<Option<(format::RecordHeader, Bytes)>> {
    ensure(o, RECORD_HEADER_LEN as u64)?;
    let at = (o.pos - o.chunk_start) as usize;
    let Some(h) = format::RecordHeader::parse(&o.chunk[at..]) else { return Ok(None) };
    if o.pos + h.disk_len() > o.limit {
        return Ok(None);
    }
    ensure(o, h.disk_len())?;
    let at = (o.pos - o.chunk_start) as usize;
    match format::scan_at(&o.chunk, at, 0) {
        Scan::Record(h) => {
            let start = at + RECORD_HEADER_LEN;
            Ok(Some((h, o.chunk.slice(start..start + h.stored_len as usize))))
        }
        Scan::Invalid | Scan::NeedMore => Ok(None),
    }
}

/// Makes `[o.pos, o.pos + need)` available in `o.chunk`.
fn ensure(o: &mut Open, need: u64) -> Result<()> {
    let have_end = o.chunk_start + o.chunk.len() as u64;
    if o.pos >= o.chunk_start && o.pos + need <= have_end {
        return Ok(());
    }
    let len = need.max(READ_CHUNK).min(o.limit - o.pos).max(need.min(o.limit - o.pos));
    let mut buf = BytesMut::zeroed(len as usize);
    o.file.read_exact_at(&mut buf, o.pos).map_err(WalError::io("read", &o.path))?;
    o.chunk = buf.freeze();
    o.chunk_start = o.pos;
    Ok(())
}
