//! Commands from the broker to the devices, and their answers, as MQTT
//! carries them. JSON: `{topic_prefix}/cmd/{id}` carrying `{"id","tag","value"}`
//! (the id defaults to the topic's last level). Sparkplug: a DCMD's metrics
//! are writes to `{device}.{metric}`; an NCMD with `Node Control/Rebirth` asks
//! for new births. Every command, understood or not, gets an answer on
//! `{topic_prefix}/cmd_ack/{id}`. Parsing the JSON body, running the writes
//! and the answer's body are [`crate::commands`]'s, shared with the other connectors.

use gateway_model::TagId;
use prost::Message as _;

use crate::commands::answer_body;
pub(super) use crate::commands::{Command, Commands, Outcome};
use crate::sparkplug;

/// Reads a JSON command from `{prefix}/cmd/{id}`.
pub(super) fn parse_json(topic: &str, payload: &[u8]) -> Command {
    crate::commands::parse_json(topic.rsplit('/').next().unwrap_or("unknown"), payload)
}

/// Reads a Sparkplug command; `path` is the topic after `spBv1.0/{group}/`
/// (`DCMD/{node}/{device}` or `NCMD/{node}`). Other messages give nothing.
pub(super) fn parse_sparkplug(path: &str, payload: &[u8]) -> Vec<Command> {
    let parts: Vec<&str> = path.split('/').collect();
    let p = match sparkplug::Payload::decode(payload) {
        Ok(p) => p,
        Err(e) => {
            let id = format!("{}-invalid", parts.first().unwrap_or(&"cmd"));
            return vec![Command::Invalid { id, error: format!("invalid Sparkplug payload: {e}") }];
        }
    };
    match parts.as_slice() {
        ["NCMD", _] => {
            let rebirth = p.metrics.iter().any(|m| m.name.as_deref() == Some("Node Control/Rebirth"));
            if rebirth { vec![Command::Rebirth] } else { Vec::new() }
        }
        ["DCMD", _, device] => p
            .metrics
            .iter()
            .filter_map(|m| {
                let (name, v) = (m.name.as_deref()?, m.value.as_ref()?);
                let id = format!("dcmd-{device}-{name}");
                Some(match TagId::from_parts(device, name) {
                    Ok(tag) => Command::Write { id, tag, value: sparkplug::from_metric_value(m.datatype, v) },
                    Err(e) => Command::Invalid { id, error: format!("invalid metric name: {e}") },
                })
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The answer to a command: its status (for the metrics), topic and JSON body.
pub(super) fn answer(topic_prefix: &str, outcome: Outcome) -> (&'static str, String, Vec<u8>) {
    let (id, status, body) = answer_body(outcome);
    let topic = format!("{topic_prefix}/cmd_ack/{}", id.replace(['+', '#', '/'], "_"));
    (status, topic, body)
}

#[cfg(test)]
mod tests {
    use gateway_model::Value;

    use super::*;
    use crate::sparkplug::{Metric, MetricValue, Payload};

    #[test]
    fn a_json_command_names_its_id_tag_and_value() {
        let c = parse_json("p/cmd/c1", br#"{"id": 7, "tag": "plc1.sp", "value": 42.5}"#);
        assert_eq!(c, Command::Write { id: "7".into(), tag: TagId::new("plc1.sp").unwrap(), value: Value::F64(42.5) });
        let c = parse_json("p/cmd/c2", br#"{"tag": "plc1.sp", "value": true}"#);
        assert!(matches!(c, Command::Write { id, .. } if id == "c2"), "the id defaults to the topic's last level");
    }

    #[test]
    fn a_dcmd_writes_each_metric_and_an_ncmd_can_ask_for_a_rebirth() {
        let metric = |name: &str, value| Metric {
            name: Some(name.into()),
            datatype: Some(4),
            value: Some(value),
            ..Default::default()
        };
        let dcmd = Payload { metrics: vec![metric("a", MetricValue::LongValue(7))], ..Default::default() };
        let cmds = parse_sparkplug("DCMD/gw1/d1", &dcmd.encode_to_vec());
        assert_eq!(
            cmds,
            [Command::Write { id: "dcmd-d1-a".into(), tag: TagId::new("d1.a").unwrap(), value: Value::I64(7) }]
        );
        let ncmd = Payload {
            metrics: vec![metric("Node Control/Rebirth", MetricValue::BooleanValue(true))],
            ..Default::default()
        };
        assert_eq!(parse_sparkplug("NCMD/gw1", &ncmd.encode_to_vec()), [Command::Rebirth]);
        assert!(
            matches!(&parse_sparkplug("DCMD/gw1/d1", b"\xff\xff")[..], [Command::Invalid { id, .. }] if id == "DCMD-invalid")
        );
    }

    #[test]
    fn an_answer_goes_to_a_topic_safe_for_its_id() {
        let (status, topic, body) = answer("plant/gw", Outcome::Invalid { id: "a/b+c#".into(), error: "bad".into() });
        assert_eq!((status, topic.as_str()), ("invalid", "plant/gw/cmd_ack/a_b_c_"));
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((body["id"].as_str(), body["status"].as_str()), (Some("a/b+c#"), Some("invalid")));
    }
}
