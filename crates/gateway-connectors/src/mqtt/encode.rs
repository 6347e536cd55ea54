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

use bytes::Bytes;
use gateway_model::{DataFrame, TagId};
use prost::Message as _;

use super::config::{Format, MqttConfig};
use super::delivery::{Kind, Outgoing};
use super::edge_node::EdgeNode;
use crate::encode::{batch_json, by_device, value_json};
use crate::sparkplug;

/// Births and command acknowledgements always use QoS 1.
const CONTROL_QOS: u8 = 1;

/// Turns readings into messages.
pub(super) struct Encoder {
    format: Format,
    topic_prefix: String,
    qos: u8,
    batch_max_values: usize,
}

impl Encoder {
    pub fn new(cfg: &MqttConfig) -> Self {
        Encoder {
            format: cfg.format,
            topic_prefix: cfg.topic_prefix.clone(),
            qos: cfg.qos,
            batch_max_values: cfg.batch_max_values.max(1),
        }
    }

    /// Messages for `frames` (with their bus sequence numbers), of `kind`
    /// (`Data` or `Live`); births they need come as `Birth`. `node` is
    /// needed for Sparkplug; `historical`: they come from a backlog replay.
    pub fn readings(
        &self,
        frames: &[(u64, &DataFrame)],
        kind: Kind,
        node: Option<&mut EdgeNode>,
        historical: bool,
        now_ms: u64,
    ) -> Vec<Outgoing> {
        let reading = |topic: String, payload: Vec<u8>, values: usize| Outgoing {
            topic,
            payload: Bytes::from(payload),
            qos: self.qos,
            kind,
            values: values as u64,
        };
        match (self.format, node) {
            (Format::Json, _) => frames
                .iter()
                .map(|(seq, f)| {
                    reading(json_topic(&self.topic_prefix, &f.tag), value_json(f, *seq).to_string().into_bytes(), 1)
                })
                .collect(),
            (Format::JsonBatch, _) => frames
                .chunks(self.batch_max_values)
                .map(|chunk| reading(format!("{}/batch", self.topic_prefix), batch_json(chunk), chunk.len()))
                .collect(),
            (Format::SparkplugB, Some(node)) => {
                let mut out = Vec::new();
                for (device, group) in by_device(frames) {
                    if node.state.observe(device, &group) {
                        let p = node.state.dbirth(device, now_ms);
                        out.push(control(node.topic("DBIRTH", Some(device)), p.encode_to_vec(), Kind::Birth));
                    }
                    for chunk in group.chunks(self.batch_max_values) {
                        let metrics = chunk.iter().map(|(s, f)| sparkplug::metric(f, *s, historical)).collect();
                        let seq = node.state.next_seq();
                        let p = sparkplug::Payload {
                            timestamp: Some(now_ms),
                            seq: Some(seq),
                            metrics,
                            ..Default::default()
                        };
                        out.push(reading(node.topic("DDATA", Some(device)), p.encode_to_vec(), chunk.len()));
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
    Outgoing { topic, payload: Bytes::from(payload), qos: CONTROL_QOS, kind, values: 0 }
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
        let e = encoder(Format::SparkplugB, 10);
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
