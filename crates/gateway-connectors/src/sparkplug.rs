//! Sparkplug B: the protobuf payload (the subset of Eclipse Tahu's
//! `sparkplug_b.proto` the gateway uses, field numbers unchanged), value and
//! quality mapping, and the node state a Sparkplug edge node keeps (bdSeq,
//! the 0-255 message sequence, which devices were born with which metrics).
//! Shared by the MQTT connector (Sparkplug B proper) and the NATS connector
//! (the same payloads on NATS subjects); nothing here knows a transport.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gateway_model::{DataFrame, QualityLevel, Value};

/// `Payload` of sparkplug_b.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// When the message was made, milliseconds since the epoch.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// Readings in DDATA; every metric of the device in DBIRTH; bdSeq in NBIRTH and NDEATH.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// Message sequence 0..=255 of the node's session (none in NDEATH).
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    /// Names the schema of `body`; the gateway sends neither.
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    /// Application-defined bytes; unused here.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// `Payload.Metric`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// The tag's point (the device is in the topic).
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// A number standing for the name after the birth; the gateway always sends names.
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// The reading's source time, milliseconds since the epoch.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// Sparkplug data type ([`datatype`]); says how to read `value`.
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    /// Replayed from the store-and-forward backlog.
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    /// The host should not store it; unused here.
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    /// The metric has no value (`value` is absent).
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// `Quality` (OPC-style code) and `seq` (the bus sequence number).
    #[prost(message, optional, tag = "9")]
    pub properties: Option<PropertySet>,
    /// The reading, in the field its data type uses.
    #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<MetricValue>,
}

/// `Payload.Metric.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MetricValue {
    /// Int8..Int32 (two's complement) and UInt8..UInt32.
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    /// Int64 (two's complement), UInt64 and DateTime.
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    /// Float; read from commands, never sent (readings go out as Double).
    #[prost(float, tag = "12")]
    FloatValue(f32),
    /// Double: every floating-point reading.
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    /// Boolean: coils, discrete inputs, register bits.
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    /// String and Text.
    #[prost(string, tag = "15")]
    StringValue(String),
    /// Bytes: raw readings the gateway does not interpret.
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
}

/// `Payload.PropertySet`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertySet {
    /// Property names (`Quality`, `seq`).
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    /// Values, one per key, in the same order.
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<PropertyValue>,
}

/// `Payload.PropertyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertyValue {
    /// Sparkplug data type ([`datatype`]) of `value`.
    #[prost(uint32, optional, tag = "1")]
    pub r#type: Option<u32>,
    /// The property has no value (`value` is absent).
    #[prost(bool, optional, tag = "2")]
    pub is_null: Option<bool>,
    /// The value, in the field its type uses.
    #[prost(oneof = "PropertyKind", tags = "3, 4, 7, 8")]
    pub value: Option<PropertyKind>,
}

/// `Payload.PropertyValue.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PropertyKind {
    /// Int8..Int32 and UInt8..UInt32 (the `Quality` code).
    #[prost(uint32, tag = "3")]
    IntValue(u32),
    /// Int64 and UInt64 (the bus `seq`).
    #[prost(uint64, tag = "4")]
    LongValue(u64),
    /// Boolean; no property the gateway sends uses it.
    #[prost(bool, tag = "7")]
    BooleanValue(bool),
    /// String and Text; no property the gateway sends uses it.
    #[prost(string, tag = "8")]
    StringValue(String),
}

/// Sparkplug data type codes used here (names as in the specification).
pub mod datatype {
    /// The `Quality` property (an OPC-style code: 192 good, 64 uncertain, 0 bad).
    pub const INT32: u32 = 3;
    /// Signed integer readings, and bdSeq.
    pub const INT64: u32 = 4;
    /// Unsigned integer readings, and the bus `seq` property.
    pub const UINT64: u32 = 8;
    /// Floating-point readings.
    pub const DOUBLE: u32 = 10;
    /// Boolean readings, and `Node Control/Rebirth`.
    pub const BOOLEAN: u32 = 11;
    /// String readings.
    pub const STRING: u32 = 12;
    /// Byte-string readings.
    pub const BYTES: u32 = 17;
}

/// OPC-style quality codes, the Sparkplug convention for the `Quality` property.
pub fn quality_code(level: QualityLevel) -> u32 {
    match level {
        QualityLevel::Good => 192,
        QualityLevel::Uncertain => 64,
        QualityLevel::Bad => 0,
    }
}

/// A gateway value as a Sparkplug (datatype, value).
pub fn to_metric_value(v: &Value) -> (u32, MetricValue) {
    match v {
        Value::Bool(b) => (datatype::BOOLEAN, MetricValue::BooleanValue(*b)),
        Value::I64(i) => (datatype::INT64, MetricValue::LongValue(*i as u64)),
        Value::U64(u) => (datatype::UINT64, MetricValue::LongValue(*u)),
        Value::F64(f) => (datatype::DOUBLE, MetricValue::DoubleValue(*f)),
        Value::Str(s) => (datatype::STRING, MetricValue::StringValue(s.to_string())),
        Value::Bytes(b) => (datatype::BYTES, MetricValue::BytesValue(b.to_vec())),
    }
}

/// A Sparkplug metric value as a gateway value (for DCMD).
pub fn from_metric_value(datatype: Option<u32>, v: &MetricValue) -> Value {
    match v {
        MetricValue::BooleanValue(b) => Value::Bool(*b),
        MetricValue::IntValue(i) => match datatype {
            // Int8/16/32 are carried as two's complement in a u32.
            Some(1..=3) => Value::I64(i64::from(*i as i32)),
            _ => Value::I64(i64::from(*i)),
        },
        MetricValue::LongValue(l) => match datatype {
            Some(datatype::INT64) => Value::I64(*l as i64),
            _ => Value::U64(*l),
        },
        MetricValue::FloatValue(f) => Value::F64(f64::from(*f)),
        MetricValue::DoubleValue(d) => Value::F64(*d),
        MetricValue::StringValue(s) => Value::Str(s.as_str().into()),
        MetricValue::BytesValue(b) => Value::Bytes(b.as_slice().into()),
    }
}

/// A metric for a reading, with its quality and bus sequence number as properties.
pub fn metric(f: &DataFrame, seq: u64, historical: bool) -> Metric {
    let (datatype, value) = to_metric_value(&f.value);
    Metric {
        name: Some(f.tag.point().to_owned()),
        timestamp: Some(f.source_ts_ns / 1_000_000),
        datatype: Some(datatype),
        is_historical: historical.then_some(true),
        properties: Some(PropertySet {
            keys: vec!["Quality".into(), "seq".into()],
            values: vec![
                PropertyValue {
                    r#type: Some(datatype::INT32),
                    is_null: None,
                    value: Some(PropertyKind::IntValue(quality_code(f.quality.level))),
                },
                PropertyValue {
                    r#type: Some(datatype::UINT64),
                    is_null: None,
                    value: Some(PropertyKind::LongValue(seq)),
                },
            ],
        }),
        value: Some(value),
        ..Default::default()
    }
}

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// A field's key: a varint (field 16 and above take two bytes).
fn put_key(out: &mut Vec<u8>, field: u8, wire: u8) {
    put_varint(out, u64::from(field) << 3 | u64::from(wire));
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u8, b: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// The `Quality` and `seq` properties, as prost writes them: both keys,
/// then one `PropertyValue` each (`type` and the value).
fn put_properties(out: &mut Vec<u8>, quality: u32, seq: u64) {
    let q_len = 3 + varint_len(u64::from(quality));
    let s_len = 3 + varint_len(seq);
    // Keys "Quality" (2 + 7 bytes) and "seq" (2 + 3), then the two values.
    let set_len = 9 + 5 + 2 + q_len + 2 + s_len;
    put_key(out, 9, LEN);
    put_varint(out, set_len as u64);
    put_bytes(out, 1, b"Quality");
    put_bytes(out, 1, b"seq");
    put_key(out, 2, LEN);
    put_varint(out, q_len as u64);
    put_key(out, 1, VARINT);
    put_varint(out, u64::from(datatype::INT32));
    put_key(out, 3, VARINT);
    put_varint(out, u64::from(quality));
    put_key(out, 2, LEN);
    put_varint(out, s_len as u64);
    put_key(out, 1, VARINT);
    put_varint(out, u64::from(datatype::UINT64));
    put_key(out, 4, VARINT);
    put_varint(out, seq);
}

/// Writes one metric for a reading (as [`metric`] makes it) into `scratch`,
/// then appends it to `out` as field 2 of a `Payload`.
fn put_metric(out: &mut Vec<u8>, scratch: &mut Vec<u8>, f: &DataFrame, seq: u64, historical: bool) {
    scratch.clear();
    let m = scratch;
    put_bytes(m, 1, f.tag.point().as_bytes());
    put_key(m, 3, VARINT);
    put_varint(m, f.source_ts_ns / 1_000_000);
    let datatype = match &f.value {
        Value::Bool(_) => datatype::BOOLEAN,
        Value::I64(_) => datatype::INT64,
        Value::U64(_) => datatype::UINT64,
        Value::F64(_) => datatype::DOUBLE,
        Value::Str(_) => datatype::STRING,
        Value::Bytes(_) => datatype::BYTES,
    };
    put_key(m, 4, VARINT);
    put_varint(m, u64::from(datatype));
    if historical {
        put_key(m, 5, VARINT);
        m.push(1);
    }
    put_properties(m, quality_code(f.quality.level), seq);
    match &f.value {
        Value::Bool(b) => {
            put_key(m, 14, VARINT);
            m.push(u8::from(*b));
        }
        Value::I64(i) => {
            put_key(m, 11, VARINT);
            put_varint(m, *i as u64);
        }
        Value::U64(u) => {
            put_key(m, 11, VARINT);
            put_varint(m, *u);
        }
        Value::F64(x) => {
            put_key(m, 13, FIXED64);
            m.extend_from_slice(&x.to_le_bytes());
        }
        Value::Str(s) => put_bytes(m, 15, s.as_bytes()),
        Value::Bytes(b) => put_bytes(m, 16, b),
    }
    put_bytes(out, 2, m);
}

/// A DDATA payload for `frames` (with their bus sequence numbers), written
/// straight into `out`: the same bytes as `Payload { timestamp, metrics:
/// frames.map(metric), seq }.encode_to_vec()` (no `seq` when `None`), without building the
/// message tree (five allocations per reading, at 100,000 readings/s most
/// of the Sparkplug connector's CPU). `scratch` is reused between metrics.
pub fn write_ddata(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    frames: &[(u64, &DataFrame)],
    historical: bool,
    now_ms: u64,
    seq: Option<u64>,
) {
    put_key(out, 1, VARINT);
    put_varint(out, now_ms);
    for (s, f) in frames {
        put_metric(out, scratch, f, *s, historical);
    }
    if let Some(seq) = seq {
        put_key(out, 3, VARINT);
        put_varint(out, seq);
    }
}

/// The NDEATH payload for session `bd_seq`.
pub fn ndeath(bd_seq: u64, now_ms: u64) -> Payload {
    Payload {
        timestamp: Some(now_ms),
        metrics: vec![Metric {
            name: Some("bdSeq".into()),
            timestamp: Some(now_ms),
            datatype: Some(datatype::INT64),
            value: Some(MetricValue::LongValue(bd_seq)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The metrics of one device: every point it has shown, with its last
/// reading and that reading's bus sequence number.
///
/// Every reading sent updates it (100,000 a second on the north job), and a
/// device's polls carry the same tags in the same order each time: when a
/// group's tags are the ones of the group before (the same interned names,
/// compared by pointer first), each reading goes straight to its slot, with no
/// hashing and no string comparison. Otherwise points are looked up by name.
#[derive(Debug, Default)]
pub struct Metrics {
    readings: Vec<(DataFrame, u64)>,
    by_point: HashMap<String, usize, foldhash::fast::RandomState>,
    /// The slots of the last group observed, in its order.
    last_group: Vec<usize>,
}

impl Metrics {
    /// Takes a group of readings of this device; returns whether a point
    /// among them was new.
    fn observe(&mut self, frames: &[(u64, &DataFrame)]) -> bool {
        let same_tags = self.last_group.len() == frames.len()
            && self.last_group.iter().zip(frames).all(|(&i, (_, f))| self.readings[i].0.tag == f.tag);
        if same_tags {
            for (&i, &(seq, f)) in self.last_group.iter().zip(frames) {
                let (last, last_seq) = &mut self.readings[i];
                last.update_from(f);
                *last_seq = seq;
            }
            return false;
        }
        self.last_group.clear();
        let mut new_point = false;
        for &(seq, f) in frames {
            let i = match self.by_point.get(f.tag.point()) {
                Some(&i) => {
                    let (last, last_seq) = &mut self.readings[i];
                    // Same name, maybe another interned copy of it: keep the
                    // newest, so the next group takes the fast path.
                    last.clone_from(f);
                    *last_seq = seq;
                    i
                }
                None => {
                    self.readings.push((f.clone(), seq));
                    self.by_point.insert(f.tag.point().to_owned(), self.readings.len() - 1);
                    new_point = true;
                    self.readings.len() - 1
                }
            };
            self.last_group.push(i);
        }
        new_point
    }

    /// The last reading of every point, sorted by point name.
    pub fn sorted(&self) -> Vec<&(DataFrame, u64)> {
        let mut all: Vec<_> = self.readings.iter().collect();
        all.sort_unstable_by(|a, b| a.0.tag.point().cmp(b.0.tag.point()));
        all
    }

    /// Points known.
    pub fn len(&self) -> usize {
        self.readings.len()
    }

    /// Whether no point is known yet.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }
}

/// The state of a Sparkplug edge node across its sessions.
#[derive(Debug, Default)]
pub struct NodeState {
    /// Birth/death sequence of the current session (0..=255).
    pub bd_seq: u64,
    seq: u64,
    /// Metrics each born device announced, with their last reading (keyed
    /// by point; a DBIRTH lists them sorted by name).
    pub devices: BTreeMap<String, Metrics>,
    /// Devices that have had a DBIRTH this session.
    pub born: BTreeSet<String>,
}

impl NodeState {
    /// The next message sequence number (NBIRTH resets it to 0).
    pub fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = (self.seq + 1) % 256;
        s
    }

    /// Starts a session: the message sequence restarts and every device must be born again.
    pub fn new_session(&mut self) {
        self.seq = 0;
        self.born.clear();
    }

    /// The NBIRTH payload: bdSeq and the rebirth control.
    pub fn nbirth(&mut self, now_ms: u64) -> Payload {
        let seq = self.next_seq();
        Payload {
            timestamp: Some(now_ms),
            seq: Some(seq),
            metrics: vec![
                Metric {
                    name: Some("bdSeq".into()),
                    timestamp: Some(now_ms),
                    datatype: Some(datatype::INT64),
                    value: Some(MetricValue::LongValue(self.bd_seq)),
                    ..Default::default()
                },
                Metric {
                    name: Some("Node Control/Rebirth".into()),
                    timestamp: Some(now_ms),
                    datatype: Some(datatype::BOOLEAN),
                    value: Some(MetricValue::BooleanValue(false)),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    /// The NDEATH payload (the MQTT will): the bdSeq of the session it ends.
    pub fn ndeath(&self, now_ms: u64) -> Payload {
        ndeath(self.bd_seq, now_ms)
    }

    /// The DBIRTH payload of `device`: every metric it has shown, with its last value.
    pub fn dbirth(&mut self, device: &str, now_ms: u64) -> Payload {
        let metrics = self
            .devices
            .get(device)
            .map(|m| m.sorted().into_iter().map(|(f, seq)| metric(f, *seq, false)).collect())
            .unwrap_or_default();
        self.born.insert(device.to_owned());
        let seq = self.next_seq();
        Payload { timestamp: Some(now_ms), seq: Some(seq), metrics, ..Default::default() }
    }

    /// The DDEATH payload of `device`: it must be born again before its next DDATA.
    pub fn ddeath(&mut self, device: &str, now_ms: u64) -> Payload {
        self.born.remove(device);
        let seq = self.next_seq();
        Payload { timestamp: Some(now_ms), seq: Some(seq), ..Default::default() }
    }

    /// Records readings of a device; returns whether it needs a (re)birth first
    /// (not born this session, or a metric it did not announce).
    ///
    /// Called for every reading sent: a device seen before is found without
    /// allocating, its readings updated in place ([`Metrics`]).
    pub fn observe(&mut self, device: &str, frames: &[(u64, &DataFrame)]) -> bool {
        // One lookup for a device seen before (every call but its first).
        let new_metric = match self.devices.get_mut(device) {
            Some(known) => known.observe(frames),
            None => {
                let mut metrics = Metrics::default();
                metrics.observe(frames);
                self.devices.insert(device.to_owned(), metrics);
                true
            }
        };
        new_metric || !self.born.contains(device)
    }
}

#[cfg(test)]
mod tests {
    use gateway_model::{Quality, TagId};
    use prost::Message;

    use super::*;

    #[test]
    fn ddata_written_directly_is_byte_for_byte_what_prost_writes() {
        use gateway_model::Reason;
        let values = [
            Value::F64(21.5),
            Value::F64(f64::NAN),
            Value::I64(-7),
            Value::I64(i64::MAX),
            Value::U64(u64::MAX),
            Value::Bool(true),
            Value::Bool(false),
            Value::Str("läuft".into()),
            Value::Bytes(vec![0u8, 1, 255].into()),
            Value::Str("".into()),
        ];
        let qualities = [Quality::GOOD, Quality::bad(Reason::TIMEOUT), Quality::uncertain(Reason::NONE)];
        let mut frames = Vec::new();
        for (i, v) in values.iter().enumerate() {
            for (j, q) in qualities.iter().enumerate() {
                let tag = TagId::new(&format!("dev.point/{i}:{j}.x")).unwrap();
                frames.push(DataFrame::new(tag, v.clone(), *q, (i as u64 + 1) * 1_700_000_000_123_456_789 / 7));
            }
        }
        let seqs = [0u64, 1, 127, 128, 300, 1 << 40, u64::MAX];
        let refs: Vec<(u64, &DataFrame)> = frames.iter().enumerate().map(|(i, f)| (seqs[i % seqs.len()], f)).collect();
        let mut scratch = Vec::new();
        for historical in [false, true] {
            for seq in [None, Some(0), Some(255)] {
                for n in [0, 1, refs.len()] {
                    let chunk = &refs[..n];
                    let want = Payload {
                        timestamp: Some(1_700_000_000_123),
                        metrics: chunk.iter().map(|(s, f)| metric(f, *s, historical)).collect(),
                        seq,
                        ..Default::default()
                    }
                    .encode_to_vec();
                    let mut got = Vec::new();
                    write_ddata(&mut got, &mut scratch, chunk, historical, 1_700_000_000_123, seq);
                    assert_eq!(got, want, "historical {historical}, seq {seq:?}, {n} metrics");
                }
            }
        }
    }

    #[test]
    fn payloads_round_trip_through_protobuf() {
        let f = DataFrame::new(
            TagId::new("line1.temp").unwrap(),
            Value::F64(21.5),
            Quality::GOOD,
            1_700_000_000_123_000_000,
        );
        let p = Payload { timestamp: Some(1), seq: Some(7), metrics: vec![metric(&f, 42, true)], ..Default::default() };
        let bytes = p.encode_to_vec();
        let back = Payload::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, p);
        let m = &back.metrics[0];
        assert_eq!(m.name.as_deref(), Some("temp"));
        assert_eq!(m.timestamp, Some(1_700_000_000_123));
        assert_eq!(m.is_historical, Some(true));
        assert_eq!(m.value, Some(MetricValue::DoubleValue(21.5)));
    }

    #[test]
    fn values_map_both_ways() {
        for v in [Value::Bool(true), Value::I64(-5), Value::U64(u64::MAX), Value::F64(2.5), Value::from("x")] {
            let (dt, mv) = to_metric_value(&v);
            assert_eq!(from_metric_value(Some(dt), &mv), v);
        }
        assert_eq!(from_metric_value(Some(3), &MetricValue::IntValue(u32::MAX)), Value::I64(-1));
    }

    #[test]
    fn the_sequence_wraps_at_256_and_restarts_with_a_session() {
        let mut n = NodeState::default();
        for i in 0..300u64 {
            assert_eq!(n.next_seq(), i % 256);
        }
        n.new_session();
        assert_eq!(n.nbirth(0).seq, Some(0));
    }

    #[test]
    fn a_dbirth_lists_every_metric_seen_sorted_with_its_last_reading() {
        let f = |t: &str, v: i64, q: Quality| {
            DataFrame::new(TagId::new(t).unwrap(), Value::I64(v), q, 1_000_000 * v as u64)
        };
        let mut n = NodeState::default();
        let (b, a) = (f("d1.b", 1, Quality::GOOD), f("d1.a", 2, Quality::GOOD));
        assert!(n.observe("d1", &[(10, &b), (11, &a)]), "not born yet");
        n.dbirth("d1", 0);
        // The same metrics again: updated in place, no rebirth.
        let (b2, a2) = (f("d1.b", 7, Quality::bad(gateway_model::Reason::TIMEOUT)), f("d1.a", 8, Quality::GOOD));
        assert!(!n.observe("d1", &[(12, &b2), (13, &a2)]), "born, nothing new");
        // A metric not announced yet needs a rebirth.
        let c = f("d1.c", 9, Quality::GOOD);
        assert!(n.observe("d1", &[(14, &c)]), "a new metric");
        let birth = n.dbirth("d1", 0);
        let names: Vec<_> = birth.metrics.iter().map(|m| m.name.clone().unwrap()).collect();
        assert_eq!(names, ["a", "b", "c"], "sorted by name");
        let b_metric = &birth.metrics[1];
        assert_eq!(b_metric.value, Some(MetricValue::LongValue(7)), "the last reading");
        assert_eq!(b_metric.timestamp, Some(7), "its time");
        assert_eq!(b_metric, &metric(&b2, 12, false), "its quality and seq too");
        assert!(!n.observe("d1", &[(15, &c)]), "born again with it");
        // Groups of other shapes and the usual one again, alternating: the
        // newest reading of each point wins whichever way it was found.
        let last = |n: &NodeState, point: &str| {
            n.devices["d1"]
                .sorted()
                .into_iter()
                .find(|(f, _)| f.tag.point() == point)
                .map(|(f, s)| (f.value.clone(), *s))
        };
        let (a3, b3) = (f("d1.a", 30, Quality::GOOD), f("d1.b", 31, Quality::GOOD));
        for round in 0..3u64 {
            let s = 100 + round * 10;
            assert!(!n.observe("d1", &[(s, &b3), (s + 1, &a3)]));
            assert!(!n.observe("d1", &[(s + 2, &b3), (s + 3, &a3)]), "the same tags: the fast path");
            assert_eq!(last(&n, "a"), Some((Value::I64(30), s + 3)));
            let a4 = f("d1.a", 40 + round as i64, Quality::GOOD);
            assert!(!n.observe("d1", &[(s + 4, &a4)]), "a subset");
            assert_eq!(last(&n, "a"), Some((Value::I64(40 + round as i64), s + 4)));
            assert_eq!(last(&n, "b"), Some((Value::I64(31), s + 2)));
        }
        assert_eq!(n.devices["d1"].len(), 3);
    }
}
