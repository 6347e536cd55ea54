//! Messages made of readings, per [`Format`], each with its subject and its
//! `Nats-Msg-Id`:
//! - `json`: one message per value at `{prefix}.data.{device}.{point}` (a
//!   point's `.` are subject levels; an empty level becomes `_`), id
//!   `{gateway}.{connector}.{seq}`;
//! - `json_batch`: up to `batch_max_values` values per message at
//!   `{prefix}.batch`, `{"values":[...]}`, id `{gateway}.{connector}.{first}-{last}`;
//! - `sparkplug_b`: per device, a Sparkplug B `Payload` of up to
//!   `batch_max_values` metrics at `{prefix}.spb.{device}`, same ids;
//! - alarm transitions (every format): JSON at `{prefix}.alarms.{rule}.{tag}`,
//!   id `{gateway}.{connector}.{seq}` (a sequence number is a reading's or an
//!   event's, never both, so ids never collide).
//!
//! **The ids are what makes the stream exactly-once**, so they must be the
//! same every time the same readings are sent: a message is cut only from
//! one bus delivery, by rules that depend on nothing but that delivery (the
//! bus hands a delivery over again with the same frames after a rewind or a
//! restart), and the id names the sequence numbers of the message's first
//! and last reading. Two messages with the same id therefore always carry
//! the same readings: the stream's duplicate window may drop a resent copy,
//! never a reading it has not stored. A message the server's `max_payload`
//! would refuse is halved until it fits, which is as repeatable.
//!
//! Readings keep their bus order within a message and a device. Nothing
//! here does I/O.

use bytes::Bytes;
use gateway_model::{DataFrame, EventFrame};

use super::config::{Format, NatsConfig, subject_safe};
use super::delivery::Outgoing;
use crate::encode::{alarm_json, batch_json, by_device, value_json};
use crate::sparkplug;

/// Encodes readings (one message's worth) into a payload.
type Encode<'a> = dyn Fn(&[(u64, &DataFrame)]) -> Bytes + 'a;

/// Room left in `max_payload` for the headers (`Nats-Msg-Id`) and framing.
const HEADROOM: usize = 512;

/// Turns readings into messages.
pub(super) struct Encoder {
    format: Format,
    prefix: String,
    /// `{gateway}.{connector}`: the part of every message id before the sequence numbers.
    id_prefix: String,
    batch_max_values: usize,
    /// The server's `max_payload`, less [`HEADROOM`].
    max_bytes: usize,
}

impl Encoder {
    /// For connector `name` of gateway `gateway`.
    pub fn new(cfg: &NatsConfig, gateway: &str, name: &str) -> Self {
        Encoder {
            format: cfg.format,
            prefix: cfg.prefix(gateway),
            id_prefix: format!("{gateway}.{name}"),
            batch_max_values: cfg.batch_max_values.max(1),
            max_bytes: (1 << 20) - HEADROOM,
        }
    }

    /// The server's `max_payload`, as it announced it on connecting.
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.max_bytes = max_payload.saturating_sub(HEADROOM).max(1024);
    }

    /// A subject this connector publishes on, to check that a stream captures it.
    pub fn sample_subject(&self) -> String {
        match self.format {
            Format::Json => format!("{}.data.device.point", self.prefix),
            Format::JsonBatch => format!("{}.batch", self.prefix),
            Format::SparkplugB => format!("{}.spb.device", self.prefix),
        }
    }

    /// A subject alarm transitions go to, to check that a stream captures it.
    pub fn sample_alarm_subject(&self) -> String {
        format!("{}.alarms.rule.device.point", self.prefix)
    }

    /// The message of an alarm transition with bus sequence number `seq`
    /// (`None` for an event that is not an alarm's).
    pub fn alarm(&self, seq: u64, e: &EventFrame) -> Option<Outgoing> {
        let (payload, rule, subject) = alarm_json(seq, e)?;
        Some(Outgoing {
            subject: format!("{}.alarms.{}.{}", self.prefix, subject_safe(rule), subject_safe(subject)),
            payload: payload.into(),
            msg_id: format!("{}.{seq}", self.id_prefix),
            values: 0,
        })
    }

    /// The messages of `frames` (one delivery's readings with their bus
    /// sequence numbers, in bus order).
    pub fn readings(&self, frames: &[(u64, &DataFrame)], now_ms: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        match self.format {
            Format::Json => {
                for &(seq, f) in frames {
                    let subject = format!("{}.data.{}.{}", self.prefix, f.tag.device(), subject_safe(f.tag.point()));
                    let payload = value_json(f, seq);
                    out.push(Outgoing { subject, payload, msg_id: format!("{}.{seq}", self.id_prefix), values: 1 });
                }
            }
            Format::JsonBatch => {
                let subject = format!("{}.batch", self.prefix);
                for chunk in frames.chunks(self.batch_max_values) {
                    self.fit(chunk, &subject, &|c| batch_json(c), &mut out);
                }
            }
            Format::SparkplugB => {
                for (device, group) in by_device(frames) {
                    let subject = format!("{}.spb.{device}", self.prefix);
                    let encode = |c: &[(u64, &DataFrame)]| {
                        // Written straight into the message's bytes: no message tree per value.
                        let mut p = Vec::with_capacity(16 + c.len() * 72);
                        sparkplug::write_ddata(&mut p, &mut Vec::with_capacity(96), c, false, now_ms, None);
                        p.into()
                    };
                    for chunk in group.chunks(self.batch_max_values) {
                        self.fit(chunk, &subject, &encode, &mut out);
                    }
                }
            }
        }
        out
    }

    /// One message of `chunk`, or, if it is too large for the server, the
    /// messages of its two halves.
    fn fit(&self, chunk: &[(u64, &DataFrame)], subject: &str, encode: &Encode<'_>, out: &mut Vec<Outgoing>) {
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else { return };
        let payload = encode(chunk);
        if payload.len() > self.max_bytes && chunk.len() > 1 {
            let (a, b) = chunk.split_at(chunk.len() / 2);
            self.fit(a, subject, encode, out);
            self.fit(b, subject, encode, out);
            return;
        }
        out.push(Outgoing {
            subject: subject.to_owned(),
            payload,
            msg_id: format!("{}.{}-{}", self.id_prefix, first.0, last.0),
            values: chunk.len() as u64,
        });
    }
}

#[cfg(test)]
mod tests {
    use gateway_model::{Quality, TagId, Value};
    use prost::Message as _;

    use super::*;

    fn frame(tag: &str, v: i64) -> DataFrame {
        DataFrame::new(TagId::new(tag).unwrap(), Value::I64(v), Quality::GOOD, 0)
    }

    fn encoder(format: Format, batch: usize) -> Encoder {
        let cfg = NatsConfig { format, batch_max_values: batch, ..NatsConfig::new(&["nats://h:4222"]) };
        Encoder::new(&cfg, "line1", "up")
    }

    fn subjects_and_ids(out: &[Outgoing]) -> Vec<(&str, &str)> {
        out.iter().map(|m| (m.subject.as_str(), m.msg_id.as_str())).collect()
    }

    #[test]
    fn json_sends_one_value_per_message_on_the_tags_subject_with_its_seq_as_id() {
        let (a, b) = (frame("d1.a", 1), frame("d1.b.x#y", 2));
        let out = encoder(Format::Json, 10).readings(&[(5, &a), (6, &b)], 0);
        assert_eq!(
            subjects_and_ids(&out),
            [("gw.line1.data.d1.a", "line1.up.5"), ("gw.line1.data.d1.b.x#y", "line1.up.6")]
        );
        let v: serde_json::Value = serde_json::from_slice(&out[1].payload).unwrap();
        assert_eq!((v["tag"].as_str(), v["seq"].as_u64()), (Some("d1.b.x#y"), Some(6)));
    }

    #[test]
    fn json_batch_ids_name_the_first_and_last_seq_and_repeat_for_the_same_delivery() {
        let frames: Vec<DataFrame> = (0..5).map(|i| frame("d1.a", i)).collect();
        let with_seq: Vec<(u64, &DataFrame)> = frames.iter().enumerate().map(|(i, f)| (100 + i as u64, f)).collect();
        let e = encoder(Format::JsonBatch, 2);
        let out = e.readings(&with_seq, 0);
        assert_eq!(
            subjects_and_ids(&out),
            [
                ("gw.line1.batch", "line1.up.100-101"),
                ("gw.line1.batch", "line1.up.102-103"),
                ("gw.line1.batch", "line1.up.104-104")
            ]
        );
        assert_eq!(out.iter().map(|m| m.values).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(e.readings(&with_seq, 99), out, "the same delivery makes the same messages");
    }

    #[test]
    fn a_batch_larger_than_the_servers_max_payload_is_halved_until_it_fits() {
        let frames: Vec<DataFrame> = (0..64).map(|i| frame("d1.a", i)).collect();
        let with_seq: Vec<(u64, &DataFrame)> = frames.iter().enumerate().map(|(i, f)| (i as u64, f)).collect();
        let mut e = encoder(Format::JsonBatch, 1000);
        e.set_max_payload(0);
        let out = e.readings(&with_seq, 0);
        assert!(out.len() > 1 && out.iter().all(|m| m.payload.len() <= 1024), "{} messages", out.len());
        assert_eq!(out.iter().map(|m| m.values).sum::<u64>(), 64);
        assert_eq!(out[0].msg_id, format!("line1.up.0-{}", out[0].values - 1));
    }

    #[test]
    fn sparkplug_sends_a_payload_per_device_with_each_metrics_seq() {
        let (a, b, c) = (frame("d1.a", 1), frame("d2.b", 2), frame("d1.c", 3));
        let out = encoder(Format::SparkplugB, 10).readings(&[(7, &a), (8, &b), (9, &c)], 1234);
        assert_eq!(subjects_and_ids(&out), [("gw.line1.spb.d1", "line1.up.7-9"), ("gw.line1.spb.d2", "line1.up.8-8")]);
        let p = sparkplug::Payload::decode(out[0].payload.as_ref()).unwrap();
        assert_eq!(p.timestamp, Some(1234));
        let names: Vec<_> = p.metrics.iter().map(|m| m.name.clone().unwrap()).collect();
        assert_eq!(names, ["a", "c"]);
    }
}
