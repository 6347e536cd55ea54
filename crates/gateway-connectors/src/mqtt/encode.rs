//! Messages made of readings, per [`Format`]:
//! - `json`: one message per value at `{topic_prefix}/{device}/{point}`
//!   (`+` and `#` in the point become `_`), `{"tag","value","quality","ts","seq"}`;
//! - `json_batch`: up to `batch_max_values` values per message at
//!   `{topic_prefix}/batch`, `{"values":[...]}`;
//! - `sparkplug_b`: per device, DDATA of up to `batch_max_values` metrics,
//!   each with its quality and bus `seq` as properties, flagged historical
//!   when it comes from a replay; a DBIRTH goes first when the device is new
//!   to the session or shows a metric its last birth did not announce.
//!
//! Readings keep their bus order within a device. Nothing here does I/O.
//!
//! JSON is written straight into one growing buffer ([`BytesMut`]): each
//! message's bytes are split off it and shared with the client without a
//! copy, and no `serde_json::Value` tree, `String` or formatter is made per
//! value (at 100,000 values/s those were most of the connector's CPU).

use bytes::{Bytes, BytesMut};
use gateway_model::{DataFrame, EventFrame, TagId};
use prost::Message as _;

use super::config::{Format, MqttConfig};
use super::delivery::{Kind, Outgoing};
use super::edge_node::EdgeNode;
use crate::encode::{JSON_VALUE_BYTES, by_device, write_batch, write_value};
use crate::sparkplug;

/// Births and command acknowledgements always use QoS 1.
const CONTROL_QOS: u8 = 1;

/// Turns readings into messages.
pub(super) struct Encoder {
    format: Format,
    topic_prefix: String,
    batch_topic: String,
    qos: u8,
    batch_max_values: usize,
    /// Where JSON payloads are written; each is split off, so a new block is
    /// allocated only once the current one is used up.
    buf: BytesMut,
    /// One Sparkplug metric at a time, before its length is known.
    scratch: Vec<u8>,
}

impl Encoder {
    pub fn new(cfg: &MqttConfig) -> Self {
        Encoder {
            format: cfg.format,
            batch_topic: format!("{}/batch", cfg.topic_prefix),
            topic_prefix: cfg.topic_prefix.clone(),
            qos: cfg.qos,
            batch_max_values: cfg.batch_max_values.max(1),
            buf: BytesMut::new(),
            scratch: Vec::new(),
        }
    }

    /// Messages for `frames` (with their bus sequence numbers), of `kind`
    /// (`Data` or `Live`); births they need come as `Birth`. `node` is
    /// needed for Sparkplug; `historical`: they come from a backlog replay.
    pub fn readings(
        &mut self,
        frames: &[(u64, &DataFrame)],
        kind: Kind,
        node: Option<&mut EdgeNode>,
        historical: bool,
        now_ms: u64,
    ) -> Vec<Outgoing> {
        let qos = self.qos;
        let reading = |topic: String, payload: Bytes, values: usize| Outgoing {
            topic,
            payload,
            qos,
            kind,
            values: values as u64,
            retain: false,
        };
        let buf = &mut self.buf;
        match (self.format, node) {
            (Format::Json, _) => frames
                .iter()
                .map(|(seq, f)| {
                    buf.reserve(JSON_VALUE_BYTES);
                    write_value(buf, f, *seq);
                    reading(json_topic(&self.topic_prefix, &f.tag), buf.split().freeze(), 1)
                })
                .collect(),
            (Format::JsonBatch, _) => frames
                .chunks(self.batch_max_values)
                .map(|chunk| {
                    write_batch(buf, chunk);
                    reading(self.batch_topic.clone(), buf.split().freeze(), chunk.len())
                })
                .collect(),
            (Format::SparkplugB, Some(node)) => {
                let mut out = Vec::new();
                for (device, group) in by_device(frames) {
                    if node.state.observe(device, &group) {
                        let p = node.state.dbirth(device, now_ms);
                        out.push(control(node.topic("DBIRTH", Some(device)), p.encode_to_vec(), Kind::Birth));
                    }
                    for chunk in group.chunks(self.batch_max_values) {
                        let seq = node.state.next_seq();
                        // ~70 bytes a metric; one allocation per message, none per value.
                        let mut p = Vec::with_capacity(16 + chunk.len() * 72);
                        sparkplug::write_ddata(&mut p, &mut self.scratch, chunk, historical, now_ms, Some(seq));
                        out.push(reading(node.topic("DDATA", Some(device)), p.into(), chunk.len()));
                    }
                }
                out
            }
            (Format::SparkplugB, None) => Vec::new(),
        }
    }
}

/// A birth or a command acknowledgement.
pub(super) fn control(topic: String, payload: Vec<u8>, kind: Kind) -> Outgoing {
    Outgoing { topic, payload: Bytes::from(payload), qos: CONTROL_QOS, kind, values: 0, retain: false }
}

/// An alarm transition: JSON (the event as the bus has it, with its bus
/// `seq` like readings, so a receiver can drop what a replay sends again) at
/// `{prefix}/alarms/{rule}/{tag}`, retained. QoS at least 1: an alarm is
/// never sent at most once.
pub(super) fn alarm(prefix: &str, qos: u8, seq: u64, e: &EventFrame, kind: Kind) -> Option<Outgoing> {
    let (payload, rule, subject) = crate::encode::alarm_json(seq, e)?;
    let safe = |s: &str| s.chars().map(|c| if c == '+' || c == '#' { '_' } else { c }).collect::<String>();
    let topic = format!("{prefix}/alarms/{}/{}", safe(rule), safe(subject));
    Some(Outgoing { topic, payload: Bytes::from(payload), qos: qos.max(1), kind, values: 0, retain: true })
}

fn json_topic(prefix: &str, tag: &TagId) -> String {
    let point: String = tag.point().chars().map(|c| if c == '+' || c == '#' { '_' } else { c }).collect();
    format!("{prefix}/{}/{point}", tag.device())
}

#[cfg(test)]
mod tests {
    use gateway_model::{Quality, Value};

    use super::*;

    fn frame(tag: &str, v: i64) -> DataFrame {
        DataFrame::new(TagId::new(tag).unwrap(), Value::I64(v), Quality::GOOD, 0)
    }

    fn encoder(format: Format, batch: usize) -> Encoder {
        Encoder::new(&MqttConfig {
            format,
            batch_max_values: batch,
            topic_prefix: "p".into(),
            ..MqttConfig::new("mqtt://h")
        })
    }

    #[test]
    fn json_sends_one_value_per_message_on_the_tags_topic_with_its_seq() {
        let (a, b) = (frame("d1.a", 1), frame("d1.b#x", 2));
        let out = encoder(Format::Json, 10).readings(&[(5, &a), (6, &b)], Kind::Data, None, false, 0);
        let topics: Vec<&str> = out.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["p/d1/a", "p/d1/b_x"]);
        let v: serde_json::Value = serde_json::from_slice(&out[1].payload).unwrap();
        assert_eq!((v["tag"].as_str(), v["seq"].as_u64()), (Some("d1.b#x"), Some(6)));
        assert!(out.iter().all(|m| m.kind == Kind::Data && m.qos == 1 && m.values == 1));
    }

    #[test]
    fn json_payloads_are_each_frames_json_form_with_its_seq() {
        use gateway_model::Reason;
        let frames = [
            DataFrame::new(TagId::new("d1.t").unwrap(), Value::F64(21.5), Quality::GOOD, 1_700_000_000_123_000_000),
            DataFrame::new(TagId::new("d1.n").unwrap(), Value::I64(-7), Quality::bad(Reason::TIMEOUT), 1),
            DataFrame::new(TagId::new("d1.s").unwrap(), Value::from("a \"quoted\" line\n"), Quality::GOOD, 0),
            DataFrame::new(TagId::new("d1.f").unwrap(), Value::F64(f64::NAN), Quality::GOOD, 5_000),
            DataFrame::new(TagId::new("d1.u").unwrap(), Value::U64(u64::MAX), Quality::GOOD, 0),
            DataFrame::new(TagId::new("d1.b").unwrap(), Value::Bool(true), Quality::GOOD, 0),
        ];
        let with_seq: Vec<(u64, &DataFrame)> = frames.iter().enumerate().map(|(i, f)| (100 + i as u64, f)).collect();
        let expected: Vec<serde_json::Value> = with_seq
            .iter()
            .map(|(seq, f)| {
                let mut v = serde_json::to_value(f).unwrap();
                v.as_object_mut().unwrap().insert("seq".into(), (*seq).into());
                v
            })
            .collect();
        let mut json = encoder(Format::Json, 10);
        let singles = json.readings(&with_seq, Kind::Data, None, false, 0);
        let got: Vec<serde_json::Value> = singles.iter().map(|m| serde_json::from_slice(&m.payload).unwrap()).collect();
        assert_eq!(got, expected);
        let mut batch = encoder(Format::JsonBatch, 4);
        let batches = batch.readings(&with_seq, Kind::Data, None, false, 0);
        let got: Vec<serde_json::Value> = batches
            .iter()
            .flat_map(|m| {
                serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["values"].as_array().unwrap().clone()
            })
            .collect();
        assert_eq!(got, expected);
        // Later payloads do not disturb earlier ones (they share the encoder's buffer).
        let again = json.readings(&with_seq[..1], Kind::Data, None, false, 0);
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&singles[0].payload).unwrap(), expected[0]);
        assert_eq!(again[0].payload, singles[0].payload);
    }

    #[test]
    fn json_batch_cuts_the_values_into_messages_of_at_most_batch_max_values() {
        let frames: Vec<DataFrame> = (0..5).map(|i| frame("d1.a", i)).collect();
        let with_seq: Vec<(u64, &DataFrame)> = frames.iter().enumerate().map(|(i, f)| (i as u64, f)).collect();
        let out = encoder(Format::JsonBatch, 2).readings(&with_seq, Kind::Live, None, false, 0);
        assert_eq!(out.iter().map(|m| m.values).collect::<Vec<_>>(), [2, 2, 1]);
        assert!(out.iter().all(|m| m.topic == "p/batch" && m.kind == Kind::Live));
    }

    #[test]
    fn sparkplug_births_a_device_before_its_first_data_and_again_for_a_new_metric() {
        let dir = tempfile::tempdir().unwrap();
        let mut node = EdgeNode::new("g", "n", dir.path(), "up");
        let mut e = encoder(Format::SparkplugB, 10);
        let (a, b, c) = (frame("d1.a", 1), frame("d2.b", 2), frame("d1.c", 3));
        let kinds = |out: &[Outgoing]| out.iter().map(|m| (m.topic.clone(), m.kind)).collect::<Vec<_>>();
        let out = e.readings(&[(0, &a), (1, &b)], Kind::Data, Some(&mut node), false, 0);
        assert_eq!(
            kinds(&out),
            [
                ("spBv1.0/g/DBIRTH/n/d1".to_string(), Kind::Birth),
                ("spBv1.0/g/DDATA/n/d1".to_string(), Kind::Data),
                ("spBv1.0/g/DBIRTH/n/d2".to_string(), Kind::Birth),
                ("spBv1.0/g/DDATA/n/d2".to_string(), Kind::Data),
            ]
        );
        let out = e.readings(&[(2, &a)], Kind::Data, Some(&mut node), true, 0);
        assert_eq!(kinds(&out), [("spBv1.0/g/DDATA/n/d1".to_string(), Kind::Data)], "born already");
        let p = sparkplug::Payload::decode(out[0].payload.as_ref()).unwrap();
        assert_eq!(p.metrics[0].is_historical, Some(true));
        let out = e.readings(&[(3, &c)], Kind::Data, Some(&mut node), false, 0);
        assert_eq!(out[0].kind, Kind::Birth, "d1 shows a metric its birth did not announce");
    }
}
