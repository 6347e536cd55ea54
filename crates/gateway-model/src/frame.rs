//! Frames: the four things that travel on the bus (readings, commands, command
//! acknowledgements, events) and the [`Batch`] they travel in.
//!
//! Readings dominate the traffic, so [`DataFrame`] is stored inline in
//! [`Frame`] and the rare kinds are boxed: a frame stays at 56 bytes.

use std::ops::Deref;
use std::sync::Arc;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Quality, QualityLevel, Reason, TagId, Value};

/// A reading: the value of one tag at one instant, with its quality.
#[derive(Clone, Debug, PartialEq)]
pub struct DataFrame {
    /// `device.point`.
    pub tag: TagId,
    /// The value read, already converted to the tag's type (and scaled, where
    /// the driver scales); when `quality` is bad it is a placeholder, not a reading.
    pub value: Value,
    /// Whether `value` can be trusted, and if not, why.
    pub quality: Quality,
    /// When the device (or the driver, if the device gives no time) produced it,
    /// in nanoseconds since the Unix epoch.
    pub source_ts_ns: u64,
}

impl DataFrame {
    /// A reading of `tag`; `source_ts_ns` is nanoseconds since the Unix epoch.
    pub fn new(tag: TagId, value: Value, quality: Quality, source_ts_ns: u64) -> Self {
        DataFrame { tag, value, quality, source_ts_ns }
    }

    /// Takes `newer`'s reading, keeping this frame's tag: for a map of the
    /// latest reading per tag, where the tag is already the key. Unlike
    /// `clone_from`, it touches no reference count (the tag's) and, for a
    /// number, allocates nothing.
    pub fn update_from(&mut self, newer: &DataFrame) {
        debug_assert_eq!(self.tag, newer.tag, "a reading of another tag");
        self.value.clone_from(&newer.value);
        self.quality = newer.quality;
        self.source_ts_ns = newer.source_ts_ns;
    }
}

/// JSON: `{"tag","value","quality","reason"?,"ts"}`; `ts` is RFC 3339 and
/// `reason` is present only when it is not `none`.
impl Serialize for DataFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let has_reason = self.quality.reason != Reason::NONE;
        let mut st = s.serialize_struct("DataFrame", 4 + usize::from(has_reason))?;
        st.serialize_field("tag", &self.tag)?;
        st.serialize_field("value", &self.value)?;
        st.serialize_field("quality", &self.quality.level)?;
        if has_reason {
            st.serialize_field("reason", &self.quality.reason)?;
        } else {
            st.skip_field("reason")?;
        }
        let mut ts = [0u8; crate::time::RFC3339_MAX_LEN];
        st.serialize_field("ts", crate::time::write_rfc3339_ns(self.source_ts_ns, &mut ts))?;
        st.end()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFrameJson {
    tag: TagId,
    value: Value,
    #[serde(default = "good")]
    quality: QualityLevel,
    #[serde(default)]
    reason: Option<Reason>,
    #[serde(with = "ts_json")]
    ts: u64,
}

const fn good() -> QualityLevel {
    QualityLevel::Good
}

impl<'de> Deserialize<'de> for DataFrame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = DataFrameJson::deserialize(d)?;
        Ok(DataFrame {
            tag: j.tag,
            value: j.value,
            quality: Quality { level: j.quality, reason: j.reason.unwrap_or(Reason::NONE) },
            source_ts_ns: j.ts,
        })
    }
}

/// A request to write `value` to a writable tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmdFrame {
    /// Unique per gateway run; the acknowledgement carries it back.
    pub id: u64,
    /// The tag to write; it must be writable, or the answer is `rejected`.
    pub tag: TagId,
    /// The value to write; the driver converts it to the tag's data type.
    pub value: Value,
    /// Who asked (`api`, `mqtt:uplink`, ...), for the audit trail.
    pub origin: Arc<str>,
    /// When it was issued, nanoseconds since the epoch.
    #[serde(rename = "ts", with = "ts_json")]
    pub issued_ts_ns: u64,
}

/// How a command ended, as the [`CmdAckFrame`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum CmdStatus {
    /// The device confirmed the write; it does not mean the value was read back.
    Ok = 0,
    /// The gateway refused it: the tag is not writable or the value does not fit.
    Rejected = 1,
    /// The device or the connection failed; the message says how.
    Failed = 2,
    /// The device did not answer in time; the write may or may not have happened.
    Timeout = 3,
    /// No running driver owns the tag's device: it is unknown, disabled or stopped.
    NoRoute = 4,
}

impl CmdStatus {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => CmdStatus::Ok,
            1 => CmdStatus::Rejected,
            2 => CmdStatus::Failed,
            3 => CmdStatus::Timeout,
            4 => CmdStatus::NoRoute,
            _ => return None,
        })
    }
}

/// The answer to a [`CmdFrame`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmdAckFrame {
    /// The command's id.
    pub id: u64,
    /// The command's tag.
    pub tag: TagId,
    /// Whether the write happened; see [`CmdStatus`] for what each outcome means.
    pub status: CmdStatus,
    /// Details for people (the device's error, ...); empty when all is well.
    pub message: Arc<str>,
    /// When the outcome was known, nanoseconds since the Unix epoch.
    #[serde(rename = "ts", with = "ts_json")]
    pub ts_ns: u64,
}

/// Severity of an event, ordered: `Info < Warning < Error < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Severity {
    /// Nothing is wrong; kept for the record (a config change, a start).
    Info = 0,
    /// Nothing has failed yet, but an operator should look.
    Warning = 1,
    /// Something failed and data or control is affected.
    Error = 2,
    /// Failed in a way that needs someone to act now.
    Critical = 3,
}

impl Severity {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Severity::Info,
            1 => Severity::Warning,
            2 => Severity::Error,
            3 => Severity::Critical,
            _ => return None,
        })
    }
}

/// Something that happened: an alarm, a device going down, a config change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFrame {
    /// Who raised it (`alarm`, `driver:modbus`, `system`).
    pub source: Arc<str>,
    /// Machine-readable kind (`device_down`, `high_limit`).
    pub code: Arc<str>,
    /// How serious; ordered, so `severity >= Severity::Error` selects failures.
    pub severity: Severity,
    /// Free text for operators; machines should match on `code`.
    pub message: Arc<str>,
    /// The tag it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<TagId>,
    /// When it happened, nanoseconds since the Unix epoch.
    #[serde(rename = "ts", with = "ts_json")]
    pub ts_ns: u64,
    /// For an alarm's transition (`source` = `alarm`): which alarm, the state
    /// it entered, the value and limit, and who did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<Box<AlarmInfo>>,
}

/// The ISA-18.2 state of an alarm, as an [`AlarmInfo`] reports it after a
/// transition. `active_*` means the condition holds; `*_unacked` that no one
/// has acknowledged it yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum AlarmState {
    /// The condition does not hold and nothing awaits acknowledgement.
    Normal = 0,
    /// The condition holds and no one has acknowledged it.
    ActiveUnacked = 1,
    /// The condition holds and an operator has acknowledged it.
    ActiveAcked = 2,
    /// The condition has cleared but no one acknowledged it; acknowledging
    /// returns it to normal.
    ClearedUnacked = 3,
    /// An operator shelved it for a while: it raises nothing until unshelved.
    Shelved = 4,
    /// Its rule is disabled: it is not evaluated.
    Disabled = 5,
}

impl AlarmState {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => AlarmState::Normal,
            1 => AlarmState::ActiveUnacked,
            2 => AlarmState::ActiveAcked,
            3 => AlarmState::ClearedUnacked,
            4 => AlarmState::Shelved,
            5 => AlarmState::Disabled,
            _ => return None,
        })
    }

    /// Its JSON name (`active_unacked`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Normal => "normal",
            AlarmState::ActiveUnacked => "active_unacked",
            AlarmState::ActiveAcked => "active_acked",
            AlarmState::ClearedUnacked => "cleared_unacked",
            AlarmState::Shelved => "shelved",
            AlarmState::Disabled => "disabled",
        }
    }
}

/// What an alarm transition carries beyond an [`EventFrame`]'s text. The
/// event's `code` names the transition (`raised`, `cleared`, `acked`, ...),
/// its `severity` the alarm's priority and its `tag` the tag it watches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmInfo {
    /// The alarm's id, `rule:subject` (the subject is the tag, or what a
    /// system alarm watches): what `POST /api/v1/alarms/{id}/ack` takes.
    pub id: Arc<str>,
    /// The rule that made it.
    pub rule: Arc<str>,
    /// The state it entered.
    pub state: AlarmState,
    /// The value that caused the transition, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The rule's limit, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Value>,
    /// Who did it, for transitions people make (acknowledge, shelve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Arc<str>>,
    /// Their comment or reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Arc<str>>,
}

/// The kind of a frame, for subscription filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// [`DataFrame`].
    Data,
    /// [`CmdFrame`].
    Cmd,
    /// [`CmdAckFrame`].
    CmdAck,
    /// [`EventFrame`].
    Event,
}

impl FrameKind {
    /// This kind's bit in a `u8` set of kinds (`1 << kind`), as subscription
    /// filters keep them.
    pub const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Anything that travels on the bus. JSON: the frame's fields plus `"kind"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Frame {
    /// A reading; inline, because most frames are readings.
    Data(DataFrame),
    /// A request to write a tag; boxed to keep `Frame` at 56 bytes.
    Cmd(Box<CmdFrame>),
    /// The answer to a `Cmd`, matched by id; boxed.
    CmdAck(Box<CmdAckFrame>),
    /// An alarm or a status change; boxed.
    Event(Box<EventFrame>),
}

impl Frame {
    /// The variant as a [`FrameKind`], for filters that select by kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Data(_) => FrameKind::Data,
            Frame::Cmd(_) => FrameKind::Cmd,
            Frame::CmdAck(_) => FrameKind::CmdAck,
            Frame::Event(_) => FrameKind::Event,
        }
    }

    /// The tag it concerns, if any.
    pub fn tag(&self) -> Option<&TagId> {
        match self {
            Frame::Data(f) => Some(&f.tag),
            Frame::Cmd(f) => Some(&f.tag),
            Frame::CmdAck(f) => Some(&f.tag),
            Frame::Event(f) => f.tag.as_ref(),
        }
    }

    /// The reading, if it is one.
    pub fn as_data(&self) -> Option<&DataFrame> {
        match self {
            Frame::Data(d) => Some(d),
            _ => None,
        }
    }

    /// Rough heap + inline size in bytes, for memory accounting in batchers.
    pub fn approx_size(&self) -> usize {
        let value_heap = |v: &Value| match v {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        };
        std::mem::size_of::<Frame>()
            + match self {
                Frame::Data(d) => value_heap(&d.value),
                Frame::Cmd(c) => 64 + value_heap(&c.value) + c.origin.len(),
                Frame::CmdAck(a) => 48 + a.message.len(),
                Frame::Event(e) => {
                    64 + e.message.len()
                        + e.code.len()
                        + e.source.len()
                        + e.alarm.as_ref().map_or(0, |a| {
                            96 + a.id.len()
                                + a.rule.len()
                                + a.comment.as_ref().map_or(0, |c| c.len())
                                + a.user.as_ref().map_or(0, |u| u.len())
                        })
                }
            }
    }

    /// Equality that treats NaN values with equal bits as equal (for tests).
    pub fn same(&self, other: &Frame) -> bool {
        match (self, other) {
            (Frame::Data(a), Frame::Data(b)) => {
                a.tag == b.tag && a.value.same(&b.value) && a.quality == b.quality && a.source_ts_ns == b.source_ts_ns
            }
            (Frame::Cmd(a), Frame::Cmd(b)) => {
                a.id == b.id
                    && a.tag == b.tag
                    && a.value.same(&b.value)
                    && a.origin == b.origin
                    && a.issued_ts_ns == b.issued_ts_ns
            }
            (Frame::Event(a), Frame::Event(b)) => {
                let opt = |x: &Option<Value>, y: &Option<Value>| match (x, y) {
                    (Some(x), Some(y)) => x.same(y),
                    (None, None) => true,
                    _ => false,
                };
                let alarm = match (&a.alarm, &b.alarm) {
                    (Some(x), Some(y)) => {
                        x.id == y.id
                            && x.rule == y.rule
                            && x.state == y.state
                            && opt(&x.value, &y.value)
                            && opt(&x.limit, &y.limit)
                            && x.user == y.user
                            && x.comment == y.comment
                    }
                    (None, None) => true,
                    _ => false,
                };
                alarm
                    && a.source == b.source
                    && a.code == b.code
                    && a.severity == b.severity
                    && a.message == b.message
                    && a.tag == b.tag
                    && a.ts_ns == b.ts_ns
            }
            _ => self == other,
        }
    }
}

impl From<DataFrame> for Frame {
    fn from(f: DataFrame) -> Self {
        Frame::Data(f)
    }
}

/// Frames that travel together. The bus shares a batch as `Arc<Batch>` from
/// publish to every subscriber: no frame is copied after publish.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    frames: Vec<Frame>,
}

impl Batch {
    /// An empty batch with room for `n` frames.
    pub fn with_capacity(n: usize) -> Self {
        Batch { frames: Vec::with_capacity(n) }
    }

    /// Append a frame at the end; takes a [`DataFrame`] or any other `Into<Frame>`.
    pub fn push(&mut self, f: impl Into<Frame>) {
        self.frames.push(f.into());
    }

    /// The frames in the order they were pushed.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// The frames in order, without copying them.
    pub fn into_frames(self) -> Vec<Frame> {
        self.frames
    }

    /// Remove all frames, keeping the allocation.
    pub fn clear(&mut self) {
        self.frames.clear();
    }

    /// Equality that treats NaN values with equal bits as equal (for tests).
    pub fn same(&self, other: &Batch) -> bool {
        self.frames.len() == other.frames.len() && self.frames.iter().zip(&other.frames).all(|(a, b)| a.same(b))
    }
}

impl Deref for Batch {
    type Target = [Frame];
    fn deref(&self) -> &[Frame] {
        &self.frames
    }
}

impl From<Vec<Frame>> for Batch {
    fn from(frames: Vec<Frame>) -> Self {
        Batch { frames }
    }
}

impl FromIterator<Frame> for Batch {
    fn from_iter<I: IntoIterator<Item = Frame>>(iter: I) -> Self {
        Batch { frames: iter.into_iter().collect() }
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a Frame;
    type IntoIter = std::slice::Iter<'a, Frame>;
    fn into_iter(self) -> Self::IntoIter {
        self.frames.iter()
    }
}

/// `ts` in JSON: written as RFC 3339, read from RFC 3339 or integer nanoseconds.
mod ts_json {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::format_rfc3339_ns(*ns))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ts<'a> {
        Ns(u64),
        Text(std::borrow::Cow<'a, str>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Ts::deserialize(d)? {
            Ts::Ns(n) => Ok(n),
            Ts::Text(t) => crate::parse_rfc3339_ns(&t).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid timestamp {t:?}, expected RFC 3339 such as 2026-01-31T12:00:00Z"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> TagId {
        TagId::new(s).unwrap()
    }

    #[test]
    fn frames_stay_small() {
        assert_eq!(std::mem::size_of::<DataFrame>(), 56);
        assert_eq!(std::mem::size_of::<Frame>(), 56);
    }

    #[test]
    fn data_frame_json_has_the_api_shape() {
        let f = DataFrame::new(tag("line1.temp"), Value::F64(21.5), Quality::GOOD, 1_700_000_000_123_000_000);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"{"tag":"line1.temp","value":21.5,"quality":"good","ts":"2023-11-14T22:13:20.123Z"}"#);
        assert_eq!(serde_json::from_str::<DataFrame>(&json).unwrap(), f);

        let bad = DataFrame::new(tag("line1.temp"), Value::F64(0.0), Quality::bad(Reason::TIMEOUT), 0);
        let json = serde_json::to_string(&bad).unwrap();
        assert!(json.contains(r#""quality":"bad","reason":"timeout""#), "{json}");
        assert_eq!(serde_json::from_str::<DataFrame>(&json).unwrap(), bad);
    }

    #[test]
    fn frame_json_is_tagged_by_kind() {
        let f = Frame::CmdAck(Box::new(CmdAckFrame {
            id: 7,
            tag: tag("a.b"),
            status: CmdStatus::Failed,
            message: "exception 2".into(),
            ts_ns: 5,
        }));
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.starts_with(r#"{"kind":"cmd_ack","id":7"#), "{json}");
        assert_eq!(serde_json::from_str::<Frame>(&json).unwrap(), f);
        let d = Frame::Data(DataFrame::new(tag("a.b"), Value::I64(1), Quality::GOOD, 1));
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.starts_with(r#"{"kind":"data","tag":"a.b""#), "{json}");
        assert_eq!(serde_json::from_str::<Frame>(&json).unwrap(), d);
    }

    #[test]
    fn json_errors_name_the_problem() {
        let err = serde_json::from_str::<DataFrame>(r#"{"tag":"a.b","value":1,"ts":"yesterday"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid timestamp"), "{err}");
        let err = serde_json::from_str::<DataFrame>(r#"{"tag":"a.b","value":1,"ts":0,"colour":1}"#).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
