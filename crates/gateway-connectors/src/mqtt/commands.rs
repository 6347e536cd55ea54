//! Commands from the broker to the devices, and their answers.
//!
//! JSON: `{topic_prefix}/cmd/{id}` carrying `{"id","tag","value"}` (the id
//! defaults to the topic's last level). Sparkplug: a DCMD's metrics are
//! writes to `{device}.{metric}`; an NCMD with `Node Control/Rebirth` asks
//! for new births. Each write goes to the bus as a command (at most
//! [`IN_PROGRESS_MAX`] at a time, each waiting up to `command_timeout_ms` for
//! its device), and every command, understood or not, gets an answer on
//! `{topic_prefix}/cmd_ack/{id}`: `{"id","tag","status","message","ts"}`.

use std::sync::Arc;
use std::time::Duration;

use gateway_bus::Bus;
use gateway_model::{CmdAckFrame, CmdStatus, TagId, Value, format_rfc3339_ns, now_ns};
use prost::Message as _;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use super::sparkplug;

/// Writes waiting for their device at once, at most; more are answered `invalid`.
pub(super) const IN_PROGRESS_MAX: usize = 16;

/// A command as understood from one incoming message.
#[derive(Debug, PartialEq)]
pub(super) enum Command {
    /// Write `value` to `tag`; answer under `id`.
    Write { id: String, tag: TagId, value: Value },
    /// Not understood; answered `invalid` with `error`.
    Invalid { id: String, error: String },
    /// Sparkplug NCMD `Node Control/Rebirth`.
    Rebirth,
}

/// How a command ended, for its answer.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The device answered (or the bus did, for no route and timeouts).
    Done { id: String, ack: CmdAckFrame },
    /// Not understood, or not accepted for lack of room.
    Invalid { id: String, error: String },
}

/// Reads a JSON command from `{prefix}/cmd/{id}`.
pub(super) fn parse_json(topic: &str, payload: &[u8]) -> Command {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        id: Option<serde_json::Value>,
        tag: String,
        value: Value,
    }
    let topic_id = topic.rsplit('/').next().unwrap_or("unknown").to_owned();
    let body: Body = match serde_json::from_slice(payload) {
        Ok(b) => b,
        Err(e) => {
            let error = format!("invalid command payload: {e}; expected {{\"id\",\"tag\",\"value\"}}");
            return Command::Invalid { id: topic_id, error };
        }
    };
    let id = match body.id {
        Some(serde_json::Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => topic_id,
    };
    match TagId::new(&body.tag) {
        Ok(tag) => Command::Write { id, tag, value: body.value },
        Err(e) => Command::Invalid { id, error: format!("invalid tag: {e}") },
    }
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

/// Carries writes to the bus and brings back their outcomes.
pub(super) struct Commands {
    bus: Bus,
    origin: String,
    timeout: Duration,
    permits: Arc<Semaphore>,
    done_tx: mpsc::Sender<Outcome>,
    done_rx: mpsc::Receiver<Outcome>,
}

impl Commands {
    /// Commands of connector `name`, each waiting up to `timeout` for its device.
    pub fn new(bus: Bus, name: &str, timeout: Duration) -> Self {
        let (done_tx, done_rx) = mpsc::channel(256);
        Commands {
            bus,
            origin: format!("mqtt:{name}"),
            timeout,
            permits: Arc::new(Semaphore::new(IN_PROGRESS_MAX)),
            done_tx,
            done_rx,
        }
    }

    /// Starts a write; its outcome comes from [`Commands::next`]. Without
    /// room for another, the outcome is returned at once.
    pub fn start(&self, id: String, tag: TagId, value: Value) -> Option<Outcome> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Some(Outcome::Invalid { id, error: "too many commands in progress; try again".into() });
        };
        let (bus, tx, origin, timeout) = (self.bus.clone(), self.done_tx.clone(), self.origin.clone(), self.timeout);
        tokio::spawn(async move {
            let ack = bus.command(tag, value, &origin, timeout).await;
            drop(permit);
            let _ = tx.send(Outcome::Done { id, ack }).await;
        });
        None
    }

    /// The next finished write.
    pub async fn next(&mut self) -> Option<Outcome> {
        self.done_rx.recv().await
    }
}

/// The answer to a command: its status (for the metrics), topic and JSON body.
pub(super) fn answer(topic_prefix: &str, outcome: Outcome) -> (&'static str, String, Vec<u8>) {
    let (id, status, body) = match outcome {
        Outcome::Done { id, ack } => {
            let status = match ack.status {
                CmdStatus::Ok => "ok",
                CmdStatus::Rejected => "rejected",
                CmdStatus::Failed => "failed",
                CmdStatus::Timeout => "timeout",
                CmdStatus::NoRoute => "no_route",
            };
            let body = json!({"id": id, "tag": ack.tag, "status": status, "message": ack.message,
                              "ts": format_rfc3339_ns(ack.ts_ns)});
            (id, status, body)
        }
        Outcome::Invalid { id, error } => {
            let body = json!({"id": id, "status": "invalid", "message": error, "ts": format_rfc3339_ns(now_ns())});
            (id, "invalid", body)
        }
    };
    let topic = format!("{topic_prefix}/cmd_ack/{}", id.replace(['+', '#', '/'], "_"));
    (status, topic, body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::sparkplug::{Metric, MetricValue, Payload};

    #[test]
    fn a_json_command_names_its_id_tag_and_value() {
        let c = parse_json("p/cmd/c1", br#"{"id": 7, "tag": "plc1.sp", "value": 42.5}"#);
        assert_eq!(c, Command::Write { id: "7".into(), tag: TagId::new("plc1.sp").unwrap(), value: Value::F64(42.5) });
        let c = parse_json("p/cmd/c2", br#"{"tag": "plc1.sp", "value": true}"#);
        assert!(matches!(c, Command::Write { id, .. } if id == "c2"), "the id defaults to the topic's last level");
    }

    #[test]
    fn a_command_that_is_not_understood_is_answered_under_the_best_id_known() {
        assert!(matches!(parse_json("p/cmd/c4", b"{not json"), Command::Invalid { id, .. } if id == "c4"));
        let c = parse_json("p/cmd/c5", br#"{"id": "x", "tag": "no-point", "value": 1}"#);
        assert!(matches!(c, Command::Invalid { id, error } if id == "x" && error.starts_with("invalid tag")));
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
