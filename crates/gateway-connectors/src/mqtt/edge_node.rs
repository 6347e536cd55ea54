//! The Sparkplug edge node the connector speaks as: its group and node ids
//! and the topics made of them, the bdSeq that ties an NBIRTH to the will of
//! the same connection (persisted, so a restarted gateway continues the
//! sequence instead of repeating a number a host has already seen), and the
//! births that open a session. Payloads and the per-session state are in
//! [`crate::sparkplug`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;

use super::link::WillFn;
use crate::sparkplug::{self, NodeState};

/// The node a Sparkplug connector speaks as: its identity and its session state.
pub(super) struct EdgeNode {
    group: String,
    node: String,
    /// Devices, their metrics and the message sequence of the current session.
    pub state: NodeState,
    /// bdSeq of the current (or next) connection, moved on by the will maker
    /// before every connection attempt.
    bd_seq: Arc<AtomicU64>,
    bd_seq_file: PathBuf,
}

impl EdgeNode {
    /// The node `node` of `group`, continuing the bdSeq last persisted for
    /// connector `name` under `data_dir`.
    pub fn new(group: &str, node: &str, data_dir: &Path, name: &str) -> Self {
        let bd_seq_file = data_dir.join("connectors").join(format!("{name}.bdseq"));
        // 255, so that the first connection ever uses 0.
        let last: u64 = std::fs::read_to_string(&bd_seq_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(255);
        EdgeNode {
            group: group.to_owned(),
            node: node.to_owned(),
            state: NodeState::default(),
            bd_seq: Arc::new(AtomicU64::new(last)),
            bd_seq_file,
        }
    }

    /// `spBv1.0/{group}/{message}/{node}[/{device}]`.
    pub fn topic(&self, message: &str, device: Option<&str>) -> String {
        topic(&self.group, &self.node, message, device)
    }

    /// The topics commands for this node and its devices arrive on (DCMD, NCMD).
    pub fn command_topics(&self) -> [String; 2] {
        [format!("spBv1.0/{}/DCMD/{}/+", self.group, self.node), format!("spBv1.0/{}/NCMD/{}", self.group, self.node)]
    }

    /// What follows `spBv1.0/{group}/` in a command topic of this node.
    pub fn command_path<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic.strip_prefix("spBv1.0/")?.strip_prefix(self.group.as_str())?.strip_prefix('/')
    }

    /// The will maker: before each connection attempt, move bdSeq on
    /// (persisted atomically) and make the NDEATH that ends that connection's session.
    pub fn will(&self) -> WillFn {
        let (group, node, bd_seq, file) =
            (self.group.clone(), self.node.clone(), self.bd_seq.clone(), self.bd_seq_file.clone());
        Box::new(move || {
            let n = (bd_seq.load(Ordering::Relaxed) + 1) % 256;
            bd_seq.store(n, Ordering::Relaxed);
            if let Err(e) = persist(&file, n) {
                tracing::warn!(file = %file.display(), error = %e, "Cannot persist the Sparkplug bdSeq.");
            }
            let payload = sparkplug::ndeath(n, gateway_model::now_ns() / 1_000_000).encode_to_vec();
            (topic(&group, &node, "NDEATH", None), payload)
        })
    }

    /// Starts a session (a new connection, or a rebirth on the same one): the
    /// NBIRTH with this connection's bdSeq, then a DBIRTH for every device
    /// known so far (quiet ones too), as (topic, payload).
    pub fn births(&mut self, now_ms: u64) -> Vec<(String, Vec<u8>)> {
        self.state.new_session();
        self.state.bd_seq = self.bd_seq.load(Ordering::Relaxed);
        let mut births = vec![(self.topic("NBIRTH", None), self.state.nbirth(now_ms).encode_to_vec())];
        let devices: Vec<String> = self.state.devices.keys().cloned().collect();
        for d in devices {
            let p = self.state.dbirth(&d, now_ms);
            births.push((self.topic("DBIRTH", Some(&d)), p.encode_to_vec()));
        }
        births
    }

    /// The NDEATH of a clean stop, as (topic, payload).
    pub fn death(&self, now_ms: u64) -> (String, Vec<u8>) {
        (self.topic("NDEATH", None), self.state.ndeath(now_ms).encode_to_vec())
    }
}

fn topic(group: &str, node: &str, message: &str, device: Option<&str>) -> String {
    match device {
        Some(d) => format!("spBv1.0/{group}/{message}/{node}/{d}"),
        None => format!("spBv1.0/{group}/{message}/{node}"),
    }
}

fn persist(file: &Path, bd_seq: u64) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("bdseq.tmp");
    std::fs::write(&tmp, bd_seq.to_string())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use gateway_model::{DataFrame, Quality, TagId, Value};
    use prost::Message as _;

    use super::*;
    use crate::sparkplug::{MetricValue, Payload};

    fn bd_seq(p: &Payload) -> u64 {
        match p.metrics.iter().find(|m| m.name.as_deref() == Some("bdSeq")).and_then(|m| m.value.clone()) {
            Some(MetricValue::LongValue(v)) => v,
            other => panic!("no bdSeq: {other:?}"),
        }
    }

    #[test]
    fn each_connection_attempt_moves_bdseq_on_and_a_restart_continues_it() {
        let dir = tempfile::tempdir().unwrap();
        let node = EdgeNode::new("plant", "gw1", dir.path(), "up");
        let mut will = node.will();
        let (topic, first) = will();
        assert_eq!(topic, "spBv1.0/plant/NDEATH/gw1");
        assert_eq!(bd_seq(&Payload::decode(first.as_slice()).unwrap()), 0);
        assert_eq!(bd_seq(&Payload::decode(will().1.as_slice()).unwrap()), 1);
        let mut again = EdgeNode::new("plant", "gw1", dir.path(), "up");
        let births = again.births(0);
        assert_eq!(bd_seq(&Payload::decode(births[0].1.as_slice()).unwrap()), 1, "NBIRTH before the next attempt");
        assert_eq!(bd_seq(&Payload::decode(again.will()().1.as_slice()).unwrap()), 2);
    }

    #[test]
    fn a_session_starts_with_an_nbirth_then_a_dbirth_for_every_known_device() {
        let dir = tempfile::tempdir().unwrap();
        let mut node = EdgeNode::new("plant", "gw1", dir.path(), "up");
        let f = DataFrame::new(TagId::new("d1.a").unwrap(), Value::I64(1), Quality::GOOD, 0);
        node.state.observe("d1", &[(7, &f)]);
        let births = node.births(0);
        let topics: Vec<&str> = births.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, ["spBv1.0/plant/NBIRTH/gw1", "spBv1.0/plant/DBIRTH/gw1/d1"]);
        let seqs: Vec<_> = births.iter().map(|(_, p)| Payload::decode(p.as_slice()).unwrap().seq).collect();
        assert_eq!(seqs, [Some(0), Some(1)]);
        assert_eq!(node.command_path("spBv1.0/plant/DCMD/gw1/d1"), Some("DCMD/gw1/d1"));
        assert_eq!(node.command_path("spBv1.0/plantx/DCMD/gw1/d1"), None);
    }
}
