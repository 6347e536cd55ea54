//! Every set-point in the audit trail, whoever wrote it: the bus publishes
//! each command and its acknowledgement as frames ([`gateway_bus::Bus::command`]),
//! and this task appends them, so commands from REST, MQTT and any later
//! connector are recorded the same way. Each command gives two rows:
//! `command.issue` (who, from where, which tag, which value) and
//! `command.result` (how the device answered), linked by the command's id.
//!
//! With the WAL the task reads through a durable cursor and moves it only
//! after the rows are written, so a crash loses no record (a row written just
//! before a crash may appear twice). In memory mode it reads like any lossy
//! subscriber and counts what it misses in the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gateway_bus::{Bus, BusError, Filter, Persistence, SubscribeOptions};
use gateway_model::{CmdStatus, Frame, FrameKind};
use gateway_store::NewAuditEntry;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::auth::Auth;

/// The name of the durable cursor.
pub const CURSOR: &str = "audit-commands";

/// Commands remembered to name the issuer on their result row.
const ISSUERS: usize = 4096;

/// `actor@source` as REST writes its origin; other origins (`mqtt:uplink`)
/// name a connector, whose source is its broker.
fn split_origin(origin: &str) -> (String, String) {
    match origin.rsplit_once('@') {
        Some((actor, source)) => (actor.to_owned(), source.to_owned()),
        None => (origin.to_owned(), "connector".to_owned()),
    }
}

fn status_text(s: CmdStatus) -> &'static str {
    match s {
        CmdStatus::Ok => "ok",
        CmdStatus::Rejected => "rejected",
        CmdStatus::Failed => "failed",
        CmdStatus::Timeout => "timeout",
        CmdStatus::NoRoute => "no_route",
    }
}

/// Starts the task; the subscription exists when this returns (start it
/// before the drivers and connectors that may be asked to write).
pub fn spawn(bus: &Bus, auth: Arc<Auth>) -> Result<JoinHandle<()>, BusError> {
    let filter = Filter::all().kinds([FrameKind::Cmd, FrameKind::CmdAck]);
    let opts = match bus.settings().persistence {
        Persistence::Wal => SubscribeOptions::durable(CURSOR),
        Persistence::Memory => SubscribeOptions::lossy(CURSOR, 1 << 16),
    }
    .filter(filter);
    let mut sub = bus.subscribe(opts)?;
    Ok(tokio::spawn(async move {
        let mut issuers: HashMap<u64, (String, String)> = HashMap::new();
        let mut drops_seen = 0;
        loop {
            let d = match sub.recv().await {
                Ok(d) => d,
                Err(BusError::Closed) => break,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot read commands for the audit trail; retrying in a second.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for (_, frame) in d.frames() {
                let entry = match frame {
                    Frame::Cmd(c) => {
                        let (actor, source) = split_origin(&c.origin);
                        if issuers.len() >= ISSUERS {
                            issuers.clear();
                        }
                        issuers.insert(c.id, (actor.clone(), source.clone()));
                        NewAuditEntry {
                            actor,
                            source,
                            action: "command.issue".into(),
                            target: c.tag.to_string(),
                            outcome: "issued".into(),
                            detail: json!({ "id": c.id, "value": c.value }).to_string(),
                        }
                    }
                    Frame::CmdAck(a) => {
                        let (actor, source) =
                            issuers.remove(&a.id).unwrap_or_else(|| ("unknown".into(), "unknown".into()));
                        let outcome = if a.message.is_empty() {
                            status_text(a.status).to_owned()
                        } else {
                            format!("{}: {}", status_text(a.status), a.message)
                        };
                        NewAuditEntry {
                            actor,
                            source,
                            action: "command.result".into(),
                            target: a.tag.to_string(),
                            outcome,
                            detail: json!({ "id": a.id }).to_string(),
                        }
                    }
                    _ => continue,
                };
                auth.audit(entry).await;
            }
            if let Err(e) = sub.ack(d.end_seq()) {
                tracing::warn!(error = %e, "Cannot move the command audit cursor.");
            }
            let drops = sub.drops();
            if drops > drops_seen {
                tracing::warn!(
                    commands = drops - drops_seen,
                    "Command audit frames were missed (memory mode under load)."
                );
                drops_seen = drops;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::split_origin;

    #[test]
    fn origins_split_into_actor_and_source() {
        assert_eq!(split_origin("user:alice@10.0.0.5"), ("user:alice".into(), "10.0.0.5".into()));
        assert_eq!(split_origin("token:scada@::1"), ("token:scada".into(), "::1".into()));
        assert_eq!(split_origin("mqtt:uplink"), ("mqtt:uplink".into(), "connector".into()));
    }
}
