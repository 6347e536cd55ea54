//! Real NATS servers for tests and benchmarks (Debian's `nats-server`, with
//! JetStream): a single node ([`NatsServer`]) or a cluster of three on
//! loopback ([`NatsCluster`]), on free ports, each node with its own store in
//! a temporary directory; a node can be killed (SIGKILL) and started again on
//! the same ports with its store, one node or the whole cluster. Plus what a
//! consumer in the data centre does: read a whole stream back through a
//! JetStream consumer ([`read_stream`]), and find a stream's leader.
//! Tests fail (they do not skip) when `nats-server` is missing:
//! `scripts/setup-test-peers` installs it.
//!
//! It must never touch a server it did not start: every node gets its own
//! temporary directory and ports, and is killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures_util::StreamExt;

use crate::{free_port, wait_until_blocking};

/// Where `nats-server` is installed, or why it cannot be used.
pub fn binary() -> Result<PathBuf, String> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            "nats-server is not installed: run scripts/setup-test-peers (Debian package nats-server)".to_owned()
        })
}

/// One `nats-server` process with JetStream, restartable on its ports.
#[derive(Debug)]
struct Node {
    name: String,
    port: u16,
    http_port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running already", self.name);
        let binary = binary().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(binary)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }

    fn listening(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// `/healthz` says JetStream is ready (in a cluster: a meta leader, its streams current).
    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.http_port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.starts_with("HTTP/1.1 200") && resp.contains("\"ok\"")
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn node(dir: &std::path::Path, name: &str, extra: &str) -> Node {
    let (port, http_port) = (free_port(), free_port());
    let store = dir.join(name);
    std::fs::create_dir_all(&store).expect("store dir");
    let conf = dir.join(format!("{name}.conf"));
    let text = format!(
        "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http_port}\n\
         jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 4GB }}\n{extra}\n",
        store.display()
    );
    std::fs::write(&conf, text).expect("write nats-server config");
    Node { name: name.to_owned(), port, http_port, conf, child: None }
}

/// A single JetStream node for one test.
#[derive(Debug)]
pub struct NatsServer {
    node: Node,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a node without authentication.
    pub fn start() -> NatsServer {
        Self::start_with("")
    }

    /// Starts a node with `extra` appended to its configuration (an
    /// `authorization { ... }` block, for instance).
    pub fn start_with(extra: &str) -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = NatsServer { node: node(dir.path(), "n1", extra), dir };
        s.resume();
        s
    }

    /// `nats://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.node.port)
    }

    /// (Re)starts the node on its ports and waits until JetStream is ready.
    pub fn resume(&mut self) {
        self.node.start();
        let n = &self.node;
        wait_until_blocking(30, &format!("nats-server to be ready on port {}", n.port), || n.healthy());
    }

    /// Kills the node (SIGKILL).
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Replaces the `extra` part of the configuration and makes the running
    /// node reload it (SIGHUP), as an operator changing credentials would.
    pub fn reconfigure(&mut self, extra: &str) {
        let fresh = node(self.dir.path(), "n1", extra);
        let text = std::fs::read_to_string(&fresh.conf).expect("read config");
        // Same ports: only the extra part differs.
        let text = text
            .replace(&format!("127.0.0.1:{}", fresh.port), &format!("127.0.0.1:{}", self.node.port))
            .replace(&format!("127.0.0.1:{}", fresh.http_port), &format!("127.0.0.1:{}", self.node.http_port));
        drop(fresh);
        std::fs::write(&self.node.conf, text).expect("write config");
        if let Some(pid) = self.node.pid() {
            let _ = Command::new("kill").args(["-HUP", &pid.to_string()]).status();
        }
    }

    /// The node's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.node.pid()
    }
}

/// A 3-node JetStream cluster on loopback for one test binary.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts three nodes (`n1`, `n2`, `n3`) routed to each other and waits
    /// until every one is healthy (a meta leader elected).
    pub fn start() -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let names = ["n1", "n2", "n3"];
        let cluster_ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let routes: Vec<String> = cluster_ports
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, p)| format!("\"nats-route://127.0.0.1:{p}\""))
                    .collect();
                let extra = format!(
                    "cluster {{ name: gwtest, listen: 127.0.0.1:{}, routes: [{}] }}",
                    cluster_ports[i],
                    routes.join(", ")
                );
                node(dir.path(), name, &extra)
            })
            .collect();
        let mut c = NatsCluster { nodes, _dir: dir };
        c.start_all();
        c
    }

    /// Every node's `nats://` URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect()
    }

    /// The index of the node named `name` (`n1`.. `n3`).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again with its store and waits until it listens.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].start();
        let n = &self.nodes[i];
        wait_until_blocking(30, &format!("{} to listen again", n.name), || n.listening());
    }

    /// Kills every node: the whole cluster down.
    pub fn kill_all(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }

    /// Starts every node that is down and waits until all are healthy.
    pub fn start_all(&mut self) {
        for n in &mut self.nodes {
            if n.child.is_none() {
                n.start();
            }
        }
        for n in &self.nodes {
            wait_until_blocking(60, &format!("{} to be healthy", n.name), || n.healthy());
        }
    }

    /// The process ids of the nodes that run.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(Node::pid).collect()
    }

    /// Whether every node is healthy (after a restart: caught up with its streams).
    pub fn healthy(&self) -> bool {
        self.nodes.iter().all(Node::healthy)
    }
}

/// One message of a stream as a consumer reads it.
#[derive(Clone, Debug)]
pub struct StreamMessage {
    /// Its subject.
    pub subject: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its `Nats-Msg-Id` header, if it had one.
    pub msg_id: Option<String>,
}

/// The name of the node leading `stream`, once one does.
pub async fn stream_leader(client: &async_nats::Client, stream: &str) -> Result<Option<String>, String> {
    let js = jetstream::new(client.clone());
    let mut s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let info = s.info().await.map_err(|e| e.to_string())?;
    Ok(info.cluster.as_ref().and_then(|c| c.leader.clone()))
}

/// Reads every message of `stream` in order through an ephemeral pull
/// consumer (deliver all, no acknowledgements), as a consumer in the data
/// centre would.
pub async fn read_stream(client: &async_nats::Client, stream: &str) -> Result<Vec<StreamMessage>, String> {
    let js = jetstream::new(client.clone());
    let s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let consumer = s
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut consumer = consumer;
    loop {
        let pending = consumer.info().await.map_err(|e| e.to_string())?.num_pending;
        if pending == 0 {
            break;
        }
        let mut batch = consumer
            .fetch()
            .max_messages(pending.min(1000) as usize)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| e.to_string())?;
            let msg_id = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.to_string());
            out.push(StreamMessage { subject: m.subject.to_string(), payload: m.payload.to_vec(), msg_id });
        }
    }
    Ok(out)
}

/// The `seq` of every value in `json_batch` (or `json`) messages, in stream order.
pub fn json_seqs(messages: &[StreamMessage]) -> Vec<u64> {
    let mut out = Vec::new();
    for m in messages {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else { continue };
        match v.get("values").and_then(|x| x.as_array()) {
            Some(vs) => out.extend(vs.iter().filter_map(|x| x["seq"].as_u64())),
            None => out.extend(v["seq"].as_u64()),
        }
    }
    out
}
