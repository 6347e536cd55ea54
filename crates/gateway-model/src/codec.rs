//! The compact binary form of a [`Batch`], used by the write-ahead log.
//!
//! Tag names are written once per batch in a dictionary and frames refer to
//! them by index; integers are LEB128 varints (signed ones zigzag-encoded);
//! timestamps are deltas from the previous frame, so a batch of readings taken
//! in one poll costs one or two bytes of time per frame. Floats are written as
//! their eight little-endian bytes: varints do not pay for them.
//!
//! ```text
//! batch   = 0xEB  version=1
//!           tag_count:varint  { len:varint  utf8[len] } * tag_count
//!           base_ts:varint    frame_count:varint  frame * frame_count
//! frame   = head:u8  body
//! head    = kind(bits 7-6: 0 data, 1 cmd, 2 cmd_ack, 3 event)
//!           vtype(bits 5-3) quality(bits 2-1) has_reason(bit 0)
//! data    = tag:varint [reason:varint if has_reason] ts:zigzag-delta value
//! cmd     = id:varint tag:varint ts:zigzag-delta value origin:str
//! cmd_ack = id:varint tag:varint ts:zigzag-delta status:u8 message:str
//! event   = ts:zigzag-delta severity:u8 tag:varint(0 none, i+1) source:str code:str message:str
//!           [alarm if head bit 0]
//! alarm   = id:str rule:str state:u8 has:u8(bit 0 value, 1 limit, 2 user, 3 comment)
//!           [vtype:u8 value] [vtype:u8 value] [user:str] [comment:str]
//! value   = vtype 0 false | 1 true | 2 i64 zigzag varint | 3 u64 varint
//!           | 4 f64 8 bytes LE | 5 string: len:varint utf8 | 6 bytes: len:varint bytes
//! str     = len:varint utf8[len]
//! ```
//!
//! The decoder never panics and never allocates more than the input could
//! describe: every count is checked against the bytes that remain.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::{
    AlarmInfo, AlarmState, Batch, CmdAckFrame, CmdFrame, CmdStatus, DataFrame, EventFrame, Frame, Quality,
    QualityLevel, Reason, Severity, TagError, TagId, Value,
};

const MAGIC: u8 = 0xEB;
const VERSION: u8 = 1;

/// Why [`Decoder::decode`] refused its input: the bytes are not one whole batch
/// in the format this build writes (corrupt, cut short, or a newer version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended in the middle of an item.
    #[error("batch is truncated")]
    Truncated,
    /// The first byte is not the batch magic.
    #[error("not a frame batch (magic byte {0:#04x})")]
    BadMagic(u8),
    /// A format version this build does not know.
    #[error("unsupported batch version {0}")]
    BadVersion(u8),
    /// A varint longer than ten bytes or past 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A count larger than the remaining input could hold.
    #[error("count {0} is larger than the input can hold")]
    CountTooLarge(u64),
    /// A tag name, string value or text field whose bytes are not UTF-8.
    #[error("string is not valid UTF-8")]
    BadUtf8,
    /// A tag name that does not validate.
    #[error("bad tag name: {0}")]
    BadTag(#[from] TagError),
    /// A frame refers to a tag the dictionary does not have.
    #[error("tag index {0} is outside the dictionary")]
    TagIndex(u64),
    /// A value type, quality level, status or severity out of range.
    #[error("invalid {what} code {code}")]
    BadCode {
        /// Which field held the code: `value type`, `frame head`, `reason`,
        /// `quality`, `status` or `severity`.
        what: &'static str,
        /// The number found in that field.
        code: u64,
    },
    /// Every frame decoded but this many bytes were left over; the whole batch
    /// is refused, as it cannot be what the encoder wrote.
    #[error("{0} bytes after the last frame")]
    Trailing(usize),
}

/// Hashes an `Arc` address: tags are deduplicated by identity, which is what
/// drivers produce (one `TagId` per configured tag, cloned into every frame).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
}

/// A reusable encoder: keeps its dictionary allocations between batches so the
/// steady state encodes without allocating.
#[derive(Default)]
pub struct Encoder {
    index: HashMap<usize, u32, BuildHasherDefault<AddrHasher>>,
    dict: Vec<TagId>,
    frame_tags: Vec<u32>,
}

impl Encoder {
    /// An encoder with no buffers yet; they grow on the first batch and are kept.
    pub fn new() -> Self {
        Self::default()
    }

    fn intern(&mut self, tag: &TagId) -> u32 {
        if let Some(last) = self.dict.last()
            && TagId::ptr_eq(last, tag)
        {
            return (self.dict.len() - 1) as u32;
        }
        let next = self.dict.len() as u32;
        let idx = *self.index.entry(tag.addr()).or_insert(next);
        if idx == next {
            self.dict.push(tag.clone());
        }
        idx
    }

    /// Append the encoding of `frames` to `out`.
    pub fn encode(&mut self, frames: &[Frame], out: &mut Vec<u8>) {
        self.index.clear();
        self.dict.clear();
        self.frame_tags.clear();
        for f in frames {
            let idx = match f {
                Frame::Data(d) => self.intern(&d.tag),
                Frame::Cmd(c) => self.intern(&c.tag),
                Frame::CmdAck(a) => self.intern(&a.tag),
                Frame::Event(e) => match &e.tag {
                    Some(t) => self.intern(t) + 1,
                    None => 0,
                },
            };
            self.frame_tags.push(idx);
        }
        out.reserve(16 + frames.len() * 12);
        out.push(MAGIC);
        out.push(VERSION);
        put_varint(out, self.dict.len() as u64);
        for t in &self.dict {
            put_str(out, t.as_str());
        }
        let base_ts = frames.first().map_or(0, frame_ts);
        put_varint(out, base_ts);
        put_varint(out, frames.len() as u64);
        let mut prev_ts = base_ts;
        for (f, &tag) in frames.iter().zip(&self.frame_tags) {
            let ts = frame_ts(f);
            let delta = ts.wrapping_sub(prev_ts) as i64;
            prev_ts = ts;
            match f {
                Frame::Data(d) => {
                    let has_reason = d.quality.reason != Reason::NONE;
                    out.push(vtype(&d.value) << 3 | (d.quality.level as u8) << 1 | u8::from(has_reason));
                    put_varint(out, u64::from(tag));
                    if has_reason {
                        put_varint(out, u64::from(d.quality.reason.0));
                    }
                    put_varint(out, zigzag(delta));
                    put_value(out, &d.value);
                }
                Frame::Cmd(c) => {
                    out.push(1 << 6 | vtype(&c.value) << 3);
                    put_varint(out, c.id);
                    put_varint(out, u64::from(tag));
                    put_varint(out, zigzag(delta));
                    put_value(out, &c.value);
                    put_str(out, &c.origin);
                }
                Frame::CmdAck(a) => {
                    out.push(2 << 6);
                    put_varint(out, a.id);
                    put_varint(out, u64::from(tag));
                    put_varint(out, zigzag(delta));
                    out.push(a.status as u8);
                    put_str(out, &a.message);
                }
                Frame::Event(e) => {
                    out.push(3 << 6 | u8::from(e.alarm.is_some()));
                    put_varint(out, zigzag(delta));
                    out.push(e.severity as u8);
                    put_varint(out, u64::from(tag));
                    put_str(out, &e.source);
                    put_str(out, &e.code);
                    put_str(out, &e.message);
                    if let Some(a) = &e.alarm {
                        put_alarm(out, a);
                    }
                }
            }
        }
        // Do not keep the tags alive between batches.
        self.dict.clear();
    }
}

fn frame_ts(f: &Frame) -> u64 {
    match f {
        Frame::Data(d) => d.source_ts_ns,
        Frame::Cmd(c) => c.issued_ts_ns,
        Frame::CmdAck(a) => a.ts_ns,
        Frame::Event(e) => e.ts_ns,
    }
}

fn put_alarm(out: &mut Vec<u8>, a: &AlarmInfo) {
    put_str(out, &a.id);
    put_str(out, &a.rule);
    out.push(a.state as u8);
    let has = u8::from(a.value.is_some())
        | u8::from(a.limit.is_some()) << 1
        | u8::from(a.user.is_some()) << 2
        | u8::from(a.comment.is_some()) << 3;
    out.push(has);
    for v in [&a.value, &a.limit].into_iter().flatten() {
        out.push(vtype(v));
        put_value(out, v);
    }
    for t in [&a.user, &a.comment].into_iter().flatten() {
        put_str(out, t);
    }
}

fn vtype(v: &Value) -> u8 {
    match v {
        Value::Bool(false) => 0,
        Value::Bool(true) => 1,
        Value::I64(_) => 2,
        Value::U64(_) => 3,
        Value::F64(_) => 4,
        Value::Str(_) => 5,
        Value::Bytes(_) => 6,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Bool(_) => {}
        Value::I64(i) => put_varint(out, zigzag(*i)),
        Value::U64(u) => put_varint(out, *u),
        Value::F64(f) => out.extend_from_slice(&f.to_le_bytes()),
        Value::Str(s) => put_str(out, s),
        Value::Bytes(b) => {
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
    }
}

/// Append `v` as a LEB128 varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encode a batch with a one-off encoder. Hot paths keep an [`Encoder`].
pub fn encode_batch(frames: &[Frame], out: &mut Vec<u8>) {
    Encoder::new().encode(frames, out);
}

/// Decode a batch with a one-off decoder. Bulk readers keep a [`Decoder`].
pub fn decode_batch(bytes: &[u8]) -> Result<Batch, CodecError> {
    Decoder::new().decode(bytes)
}

/// A reusable decoder that interns tag names, so reading many batches of the
/// same tags allocates and validates each name once.
#[derive(Default)]
pub struct Decoder {
    intern: HashMap<Box<[u8]>, TagId>,
    dict: Vec<TagId>,
}

/// Interned names kept at most; the cache is cleared past this so that a log
/// with ever-changing names cannot grow it without bound.
const INTERN_LIMIT: usize = 65_536;

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        let v = *self.b.get(self.pos).ok_or(CodecError::Truncated)?;
        self.pos += 1;
        Ok(v)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(CodecError::VarintOverflow);
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::VarintOverflow)
    }

    /// A count of items each at least `min_size` bytes long.
    fn count(&mut self, min_size: usize) -> Result<usize, CodecError> {
        let n = self.varint()?;
        if n > (self.remaining() / min_size.max(1)) as u64 {
            return Err(CodecError::CountTooLarge(n));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(CodecError::Truncated);
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn str(&mut self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| CodecError::BadUtf8)
    }

    fn arc_str(&mut self) -> Result<Arc<str>, CodecError> {
        self.str().map(Arc::from)
    }

    fn f64(&mut self) -> Result<f64, CodecError> {
        let s = self.b.get(self.pos..self.pos + 8).ok_or(CodecError::Truncated)?;
        self.pos += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(f64::from_le_bytes(a))
    }

    fn alarm(&mut self) -> Result<AlarmInfo, CodecError> {
        let id = self.arc_str()?;
        let rule = self.arc_str()?;
        let code = self.u8()?;
        let state =
            AlarmState::from_u8(code).ok_or(CodecError::BadCode { what: "alarm state", code: u64::from(code) })?;
        let has = self.u8()?;
        let value = |r: &mut Self, bit: u8| -> Result<Option<Value>, CodecError> {
            if has & bit == 0 {
                return Ok(None);
            }
            let vt = r.u8()?;
            r.value(vt).map(Some)
        };
        let value_ = value(self, 1)?;
        let limit = value(self, 2)?;
        let user = if has & 4 != 0 { Some(self.arc_str()?) } else { None };
        let comment = if has & 8 != 0 { Some(self.arc_str()?) } else { None };
        Ok(AlarmInfo { id, rule, state, value: value_, limit, user, comment })
    }

    fn value(&mut self, vt: u8) -> Result<Value, CodecError> {
        Ok(match vt {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            2 => Value::I64(unzigzag(self.varint()?)),
            3 => Value::U64(self.varint()?),
            4 => Value::F64(self.f64()?),
            5 => Value::Str(self.arc_str()?),
            6 => Value::Bytes(Arc::from(self.bytes()?)),
            c => return Err(CodecError::BadCode { what: "value type", code: u64::from(c) }),
        })
    }
}

impl Decoder {
    /// A new decoder with an empty intern cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn tag(&self, idx: u64) -> Result<TagId, CodecError> {
        self.dict.get(idx as usize).cloned().ok_or(CodecError::TagIndex(idx))
    }

    /// Decode `bytes`, which must hold exactly one batch and nothing after it.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Batch, CodecError> {
        let mut r = Reader { b: bytes, pos: 0 };
        let magic = r.u8()?;
        if magic != MAGIC {
            return Err(CodecError::BadMagic(magic));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(CodecError::BadVersion(version));
        }
        let n_tags = r.count(2)?;
        self.dict.clear();
        if self.intern.len() > INTERN_LIMIT {
            self.intern.clear();
        }
        for _ in 0..n_tags {
            let name = r.bytes()?;
            let tag = match self.intern.get(name) {
                Some(t) => t.clone(),
                None => {
                    let s = std::str::from_utf8(name).map_err(|_| CodecError::BadUtf8)?;
                    let t = TagId::new(s)?;
                    self.intern.insert(name.into(), t.clone());
                    t
                }
            };
            self.dict.push(tag);
        }
        let mut ts = r.varint()?;
        let n_frames = r.count(3)?;
        let mut frames = Vec::with_capacity(n_frames);
        for _ in 0..n_frames {
            let head = r.u8()?;
            let kind = head >> 6;
            let vt = (head >> 3) & 7;
            let level = (head >> 1) & 3;
            let has_reason = head & 1 == 1;
            // Bit 0 of an event's head says it carries an alarm.
            if kind != 0 && (level != 0 || (has_reason && kind != 3) || (kind != 1 && vt != 0)) {
                return Err(CodecError::BadCode { what: "frame head", code: u64::from(head) });
            }
            let frame = match kind {
                0 => {
                    let tag = self.tag(r.varint()?)?;
                    let reason = if has_reason {
                        let code = r.varint()?;
                        Reason(u16::try_from(code).map_err(|_| CodecError::BadCode { what: "reason", code })?)
                    } else {
                        Reason::NONE
                    };
                    let level = QualityLevel::from_u8(level)
                        .ok_or(CodecError::BadCode { what: "quality", code: u64::from(level) })?;
                    ts = ts.wrapping_add(unzigzag(r.varint()?) as u64);
                    let value = r.value(vt)?;
                    Frame::Data(DataFrame { tag, value, quality: Quality { level, reason }, source_ts_ns: ts })
                }
                1 => {
                    let id = r.varint()?;
                    let tag = self.tag(r.varint()?)?;
                    ts = ts.wrapping_add(unzigzag(r.varint()?) as u64);
                    let value = r.value(vt)?;
                    let origin = r.arc_str()?;
                    Frame::Cmd(Box::new(CmdFrame { id, tag, value, origin, issued_ts_ns: ts }))
                }
                2 => {
                    let id = r.varint()?;
                    let tag = self.tag(r.varint()?)?;
                    ts = ts.wrapping_add(unzigzag(r.varint()?) as u64);
                    let code = r.u8()?;
                    let status = CmdStatus::from_u8(code)
                        .ok_or(CodecError::BadCode { what: "status", code: u64::from(code) })?;
                    let message = r.arc_str()?;
                    Frame::CmdAck(Box::new(CmdAckFrame { id, tag, status, message, ts_ns: ts }))
                }
                _ => {
                    ts = ts.wrapping_add(unzigzag(r.varint()?) as u64);
                    let code = r.u8()?;
                    let severity = Severity::from_u8(code)
                        .ok_or(CodecError::BadCode { what: "severity", code: u64::from(code) })?;
                    let tag = match r.varint()? {
                        0 => None,
                        i => Some(self.tag(i - 1)?),
                    };
                    let source = r.arc_str()?;
                    let code = r.arc_str()?;
                    let message = r.arc_str()?;
                    let alarm = if head & 1 == 1 { Some(Box::new(r.alarm()?)) } else { None };
                    Frame::Event(Box::new(EventFrame { source, code, severity, message, tag, ts_ns: ts, alarm }))
                }
            };
            frames.push(frame);
        }
        self.dict.clear();
        if r.remaining() != 0 {
            return Err(CodecError::Trailing(r.remaining()));
        }
        Ok(Batch::from(frames))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tag_strategy() -> impl Strategy<Value = TagId> {
        ("[a-z][a-z0-9_-]{0,8}", "[a-zA-Z0-9_][a-zA-Z0-9_/:#-]{0,12}")
            .prop_map(|(d, p)| TagId::new(&format!("{d}.{p}")).unwrap())
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            any::<u64>().prop_map(Value::U64),
            any::<f64>().prop_map(Value::F64),
            any::<u64>().prop_map(|b| Value::F64(f64::from_bits(b))),
            ".{0,20}".prop_map(|s| Value::Str(s.into())),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::Bytes(b.into())),
        ]
    }

    fn frame_strategy(tags: Vec<TagId>) -> impl Strategy<Value = Frame> {
        let t = proptest::sample::select(tags);
        let ts = prop_oneof![any::<u64>(), 1_700_000_000_000_000_000u64..1_700_000_010_000_000_000];
        prop_oneof![
            8 => (t.clone(), value_strategy(), 0u8..3, any::<u16>(), ts.clone()).prop_map(|(tag, value, l, r, ts)| {
                let level = QualityLevel::from_u8(l).unwrap();
                let reason = if level == QualityLevel::Good { Reason::NONE } else { Reason(r) };
                Frame::Data(DataFrame { tag, value, quality: Quality { level, reason }, source_ts_ns: ts })
            }),
            1 => (any::<u64>(), t.clone(), value_strategy(), ".{0,10}", ts.clone()).prop_map(|(id, tag, value, o, ts)| {
                Frame::Cmd(Box::new(CmdFrame { id, tag, value, origin: o.into(), issued_ts_ns: ts }))
            }),
            1 => (any::<u64>(), t.clone(), 0u8..5, ".{0,10}", ts.clone()).prop_map(|(id, tag, s, m, ts)| {
                Frame::CmdAck(Box::new(CmdAckFrame { id, tag, status: CmdStatus::from_u8(s).unwrap(), message: m.into(), ts_ns: ts }))
            }),
            1 => (proptest::option::of(t), 0u8..4, ".{0,6}", ".{0,6}", ".{0,10}", ts, proptest::option::of(alarm_strategy())).prop_map(|(tag, s, src, code, m, ts, alarm)| {
                Frame::Event(Box::new(EventFrame {
                    source: src.into(), code: code.into(), severity: Severity::from_u8(s).unwrap(), message: m.into(), tag, ts_ns: ts,
                    alarm: alarm.map(Box::new),
                }))
            }),
        ]
    }

    fn alarm_strategy() -> impl Strategy<Value = AlarmInfo> {
        let text = || proptest::option::of(".{0,8}".prop_map(Arc::<str>::from));
        (
            ".{0,12}",
            ".{0,8}",
            0u8..6,
            proptest::option::of(value_strategy()),
            proptest::option::of(value_strategy()),
            text(),
            text(),
        )
            .prop_map(|(id, rule, st, value, limit, user, comment)| AlarmInfo {
                id: id.into(),
                rule: rule.into(),
                state: AlarmState::from_u8(st).unwrap(),
                value,
                limit,
                user,
                comment,
            })
    }

    fn batch_strategy() -> impl Strategy<Value = Batch> {
        proptest::collection::vec(tag_strategy(), 1..20)
            .prop_flat_map(|tags| proptest::collection::vec(frame_strategy(tags), 0..200))
            .prop_map(Batch::from)
    }

    proptest! {
        #[test]
        fn arbitrary_batches_round_trip(batch in batch_strategy()) {
            let mut enc = Encoder::new();
            let mut buf = Vec::new();
            enc.encode(&batch, &mut buf);
            let back = Decoder::new().decode(&buf).unwrap();
            prop_assert!(back.same(&batch), "{:?}\n!=\n{:?}", back, batch);
            // Reusing the encoder gives the same bytes.
            let mut again = Vec::new();
            enc.encode(&batch, &mut again);
            prop_assert_eq!(&buf, &again);
        }

        #[test]
        fn truncated_or_mangled_input_is_an_error_not_a_panic(batch in batch_strategy(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
            let mut buf = Vec::new();
            encode_batch(&batch, &mut buf);
            let n = cut.index(buf.len());
            prop_assert!(decode_batch(&buf[..n]).is_err());
            let i = flip.0.index(buf.len());
            buf[i] ^= flip.1 | 1;
            let _ = decode_batch(&buf);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_batch(&bytes);
            let mut with_magic = vec![MAGIC, VERSION];
            with_magic.extend_from_slice(&bytes);
            let _ = decode_batch(&with_magic);
        }
    }

    #[test]
    fn an_alarm_whose_value_is_nan_round_trips_as_the_same_frame() {
        // Found by the fuzzer: an event's alarm value with NaN bits.
        let bytes = [
            0xeb, 0x01, 0x00, 0xce, 0xff, 0xff, 0xff, 0x20, 0x01, 0xc1, 0x91, 0xff, 0xff, 0xff, 0xef, 0x00, 0x00, 0x80,
            0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2b, 0x04, 0xff, 0xff, 0xff, 0xff, 0x20, 0x01, 0xff, 0xff,
            0x00, 0x01, 0x00,
        ];
        let batch = decode_batch(&bytes).unwrap();
        let Frame::Event(e) = &batch[0] else { panic!("{batch:?}") };
        let a = e.alarm.as_ref().unwrap();
        assert!([&a.value, &a.limit].iter().any(|v| matches!(v, Some(Value::F64(f)) if f.is_nan())), "{a:?}");
        assert_ne!(batch, batch.clone(), "NaN is not equal to itself under ==");
        let mut again = Vec::new();
        encode_batch(&batch, &mut again);
        assert!(decode_batch(&again).unwrap().same(&batch));
    }

    #[test]
    fn tags_are_written_once_per_batch() {
        let tag = TagId::new("line1.temperature_sensor_with_a_long_name").unwrap();
        let frames: Vec<Frame> = (0..100)
            .map(|i| {
                Frame::Data(DataFrame::new(
                    tag.clone(),
                    Value::F64(f64::from(i)),
                    Quality::GOOD,
                    1_700_000_000_000_000_000 + i as u64 * 1000,
                ))
            })
            .collect();
        let mut buf = Vec::new();
        encode_batch(&frames, &mut buf);
        // head + tag index + 2-byte ts delta + 8-byte float per frame, plus the dictionary.
        assert!(buf.len() < 100 * 12 + 64, "{} bytes", buf.len());
        assert!(buf.windows(tag.as_str().len()).filter(|w| *w == tag.as_str().as_bytes()).count() == 1);
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut buf = vec![MAGIC, VERSION];
        put_varint(&mut buf, u64::MAX >> 1);
        assert!(matches!(decode_batch(&buf), Err(CodecError::CountTooLarge(_))));
        let mut buf = vec![MAGIC, VERSION, 0, 0];
        put_varint(&mut buf, 1 << 40);
        assert!(matches!(decode_batch(&buf), Err(CodecError::CountTooLarge(_))));
    }

    #[test]
    fn varints_reject_overlong_encodings() {
        let mut r = Reader { b: &[0xff; 11], pos: 0 };
        assert_eq!(r.varint(), Err(CodecError::VarintOverflow));
        let mut buf = Vec::new();
        put_varint(&mut buf, u64::MAX);
        assert_eq!(Reader { b: &buf, pos: 0 }.varint(), Ok(u64::MAX));
        for v in [i64::MIN, -1, 0, 1, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
