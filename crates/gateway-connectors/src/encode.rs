//! Readings as JSON, the same for every connector: one value is
//! `{"tag","value","quality","ts","seq"}` (`reason` too when it is not
//! good), a batch is `{"values":[...]}`; and readings grouped by device for
//! the formats that send one message per device (Sparkplug). `seq` is the
//! reading's bus sequence number, by which a consumer drops the duplicates
//! at-least-once delivery may bring. Nothing here knows a transport.
//!
//! JSON is written straight into a byte buffer: no `serde_json::Value` tree,
//! `String` or formatter is made per value (at 100,000 values/s those were
//! most of the MQTT connector's CPU).

use bytes::{BufMut, Bytes, BytesMut};
use gateway_model::{DataFrame, EventFrame};

/// Bytes to set aside per JSON value before writing it (a reading is
/// 90-130 bytes); the buffer grows past it when needed.
pub(crate) const JSON_VALUE_BYTES: usize = 128;

/// Appends one reading, `{"tag","value","quality","reason"?,"ts","seq"}`.
pub(crate) fn write_value(buf: &mut BytesMut, f: &DataFrame, seq: u64) {
    // The frame's own JSON form, then its bus sequence number before the
    // closing brace: serde writes both without an intermediate tree.
    let _ = serde_json::to_writer((&mut *buf).writer(), f);
    if buf.last() == Some(&b'}') {
        buf.truncate(buf.len() - 1);
        buf.put_slice(b",\"seq\":");
        let _ = serde_json::to_writer((&mut *buf).writer(), &seq);
        buf.put_u8(b'}');
    }
}

/// Appends readings as one `{"values":[...]}` document.
pub(crate) fn write_batch(buf: &mut BytesMut, frames: &[(u64, &DataFrame)]) {
    buf.reserve(16 + frames.len() * JSON_VALUE_BYTES);
    buf.put_slice(b"{\"values\":[");
    for (i, (s, f)) in frames.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        write_value(buf, f, *s);
    }
    buf.put_slice(b"]}");
}

/// One reading with its bus sequence number, as its own buffer (no copy).
pub(crate) fn value_json(f: &DataFrame, seq: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(JSON_VALUE_BYTES);
    write_value(&mut buf, f, seq);
    buf.freeze()
}

/// Readings as one `{"values":[...]}` document, as its own buffer (no copy).
pub(crate) fn batch_json(frames: &[(u64, &DataFrame)]) -> Bytes {
    let mut buf = BytesMut::new();
    write_batch(&mut buf, frames);
    buf.freeze()
}

/// Frames grouped by device, devices in order of first appearance, each
/// device's readings in bus order.
/// An alarm transition as JSON (the event as the bus has it) with its bus
/// `seq` like readings, so a receiver can drop what a replay sends again;
/// `None` for an event that is not an alarm's. Also: the alarm's rule and
/// its subject (the tag, or the id without the rule's name) for the topic.
pub(crate) fn alarm_json(seq: u64, e: &EventFrame) -> Option<(Vec<u8>, &str, &str)> {
    let a = e.alarm.as_ref()?;
    let subject = a.id.strip_prefix(&*a.rule).and_then(|s| s.strip_prefix(':')).unwrap_or(&a.id);
    let mut json = serde_json::to_value(e).ok()?;
    if let serde_json::Value::Object(m) = &mut json {
        m.insert("seq".into(), seq.into());
    }
    Some((serde_json::to_vec(&json).ok()?, &a.rule, subject))
}

pub(crate) fn by_device<'f>(frames: &[(u64, &'f DataFrame)]) -> Vec<(&'f str, Vec<(u64, &'f DataFrame)>)> {
    let mut out: Vec<(&str, Vec<(u64, &DataFrame)>)> = Vec::new();
    for &(s, f) in frames {
        let device = f.tag.device();
        // A device's readings come together (one poll), so its group is
        // nearly always the last one: look there first.
        match out.iter_mut().rev().find(|(d, _)| *d == device) {
            Some((_, v)) => v.push((s, f)),
            None => out.push((device, vec![(s, f)])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use gateway_model::{Quality, TagId, Value};

    use super::*;

    #[test]
    fn a_batch_lists_each_value_with_its_seq_and_devices_keep_bus_order() {
        let f = |t: &str, v| DataFrame::new(TagId::new(t).unwrap(), Value::I64(v), Quality::GOOD, 0);
        let (a, b, c) = (f("d1.a", 1), f("d2.b", 2), f("d1.c", 3));
        let frames = [(5, &a), (6, &b), (7, &c)];
        let doc: serde_json::Value = serde_json::from_slice(&batch_json(&frames)).unwrap();
        let seqs: Vec<u64> = doc["values"].as_array().unwrap().iter().map(|v| v["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [5, 6, 7]);
        assert_eq!(doc["values"][1]["tag"], "d2.b");
        let groups: Vec<(&str, Vec<u64>)> =
            by_device(&frames).into_iter().map(|(d, g)| (d, g.iter().map(|(s, _)| *s).collect())).collect();
        assert_eq!(groups, [("d1", vec![5, 7]), ("d2", vec![6])]);
    }
}
