//! Commands from a connector's target to the devices, and their answers,
//! whatever the transport: a JSON command `{"id","tag","value"}` is parsed
//! here ([`parse_json`]), carried to the owning driver through the bus
//! ([`Commands`], at most [`IN_PROGRESS_MAX`] at a time, each waiting up to
//! the connector's timeout for its device) and answered with a JSON body
//! `{"id","tag","status","message","ts"}` ([`answer_body`]). Where a command
//! arrives and where its answer goes (an MQTT topic, a NATS subject or reply
//! inbox) is the connector's business; nothing here does I/O but the bus.
//!
//! Every command passes the bus as a command frame with the origin the
//! connector gives (`mqtt:NAME`, `nats:NAME`), which the audit trail records
//! as the actor.

use std::sync::Arc;
use std::time::Duration;

use gateway_bus::Bus;
use gateway_model::{CmdAckFrame, CmdStatus, TagId, Value, format_rfc3339_ns, now_ns};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

/// Writes waiting for their device at once, at most; more are answered `invalid`.
pub(crate) const IN_PROGRESS_MAX: usize = 16;

/// A command as understood from one incoming message.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    /// Write `value` to `tag`; answer under `id`.
    Write { id: String, tag: TagId, value: Value },
    /// Not understood; answered `invalid` with `error`.
    Invalid { id: String, error: String },
    /// Sparkplug NCMD `Node Control/Rebirth` (MQTT only).
    Rebirth,
}

/// How a command ended, for its answer.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The device answered (or the bus did, for no route and timeouts).
    Done { id: String, ack: CmdAckFrame },
    /// Not understood, or not accepted for lack of room.
    Invalid { id: String, error: String },
}

/// Reads a JSON command `{"id","tag","value"}`; `fallback_id` (the last
/// level of its topic or subject) names it when the body has no `id`, or
/// cannot be read at all.
pub(crate) fn parse_json(fallback_id: &str, payload: &[u8]) -> Command {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        id: Option<serde_json::Value>,
        tag: String,
        value: Value,
    }
    let body: Body = match serde_json::from_slice(payload) {
        Ok(b) => b,
        Err(e) => {
            let error = format!("invalid command payload: {e}; expected {{\"id\",\"tag\",\"value\"}}");
            return Command::Invalid { id: fallback_id.to_owned(), error };
        }
    };
    let id = match body.id {
        Some(serde_json::Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => fallback_id.to_owned(),
    };
    match TagId::new(&body.tag) {
        Ok(tag) => Command::Write { id, tag, value: body.value },
        Err(e) => Command::Invalid { id, error: format!("invalid tag: {e}") },
    }
}

/// Carries writes to the bus and brings back their outcomes.
pub(crate) struct Commands {
    bus: Bus,
    origin: String,
    timeout: Duration,
    permits: Arc<Semaphore>,
    done_tx: mpsc::Sender<Outcome>,
    done_rx: mpsc::Receiver<Outcome>,
}

impl Commands {
    /// Commands that reach the bus as coming from `origin` (`mqtt:NAME`,
    /// `nats:NAME`), each waiting up to `timeout` for its device.
    pub fn new(bus: Bus, origin: String, timeout: Duration) -> Self {
        let (done_tx, done_rx) = mpsc::channel(256);
        Commands { bus, origin, timeout, permits: Arc::new(Semaphore::new(IN_PROGRESS_MAX)), done_tx, done_rx }
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

/// The answer to a command: its id, its status (`ok`, `rejected`, `failed`,
/// `timeout`, `no_route`, `invalid`; also the metrics' label) and its JSON body.
pub(crate) fn answer_body(outcome: Outcome) -> (String, &'static str, Vec<u8>) {
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
    (id, status, body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_command_names_its_id_tag_and_value() {
        let c = parse_json("c1", br#"{"id": 7, "tag": "plc1.sp", "value": 42.5}"#);
        assert_eq!(c, Command::Write { id: "7".into(), tag: TagId::new("plc1.sp").unwrap(), value: Value::F64(42.5) });
        let c = parse_json("c2", br#"{"tag": "plc1.sp", "value": true}"#);
        assert!(matches!(c, Command::Write { id, .. } if id == "c2"), "the id defaults to the fallback");
    }

    #[test]
    fn a_command_that_is_not_understood_is_answered_under_the_best_id_known() {
        assert!(matches!(parse_json("c4", b"{not json"), Command::Invalid { id, .. } if id == "c4"));
        let c = parse_json("c5", br#"{"id": "x", "tag": "no-point", "value": 1}"#);
        assert!(matches!(c, Command::Invalid { id, error } if id == "x" && error.starts_with("invalid tag")));
    }

    #[test]
    fn an_answer_carries_the_id_and_status() {
        let (id, status, body) = answer_body(Outcome::Invalid { id: "a/b".into(), error: "bad".into() });
        assert_eq!((id.as_str(), status), ("a/b", "invalid"));
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (body["id"].as_str(), body["status"].as_str(), body["message"].as_str()),
            (Some("a/b"), Some("invalid"), Some("bad"))
        );
    }
}
