//! The MQTT connector: store-and-forward of bus readings to a broker, and
//! commands from the broker back to the devices.
//!
//! Delivery is at least once and in order. The connector reads the bus through
//! a durable cursor (which only ever hands it durable frames), publishes, and
//! moves the cursor only when the broker confirmed everything before it
//! (PUBACK for QoS 1, PUBCOMP for QoS 2; QoS 0 is fire-and-forget and is
//! acknowledged when handed to the socket). At most `max_inflight` messages are
//! unconfirmed; while the broker is away nothing more is read, so the backlog
//! waits in the WAL, not in memory. After a reconnect without a session, or a
//! gateway restart, everything after the last confirmed position is sent again;
//! every value carries its bus sequence number so consumers can drop duplicates.
//!
//! After an outage the backlog is replayed at most `replay_max_rate` values per
//! second while live values are sent alongside through a second, lossy
//! subscription, so an operator sees current values at once instead of after
//! hours of history. (Live values sent this way come again, flagged as
//! historical in Sparkplug, when the replay reaches them.)

mod link;
pub mod sparkplug;

pub use link::Protocol;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_bus::{Bus, Delivery, Filter, SubscribeOptions, Subscriber};
use gateway_model::{CmdAckFrame, CmdStatus, DataFrame, FrameKind, TagId, TagPattern, Value, now_ns};
use prost::Message as _;
use rumqttc::Transport;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use gateway_model::FieldError;

use crate::metrics::{CommandLabel, ConnectorLabel};
use crate::{Connector, ConnectorContext, ConnectorError, ConnectorTask};
use link::{Link, LinkEvent, LinkOptions};

/// Payload formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One message per value at `{topic_prefix}/{device}/{tag}`:
    /// `{"tag","value","quality","ts","seq"}`.
    Json,
    /// Many values per message at `{topic_prefix}/batch`: `{"values":[...]}`.
    JsonBatch,
    /// Sparkplug B 3.0: NBIRTH, DBIRTH, DDATA, DDEATH, NDEATH as the will.
    SparkplugB,
}

/// `[[connectors]]` with `kind = "mqtt"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port` (default port 1883) or `mqtts://host:port` (8883).
    pub url: String,
    /// Client id (default `edge-gateway-{name}`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// Topic prefix for data, commands and acknowledgements.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// `3.1.1` (default) or `5`.
    #[serde(default)]
    pub protocol: Protocol,
    /// MQTT 5: how long the broker keeps a persistent session after a
    /// disconnect, in seconds (default one day).
    #[serde(default = "default_session_expiry")]
    pub session_expiry_s: u32,
    /// 0, 1 or 2 (default 1).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// `json`, `json_batch` or `sparkplug_b`.
    #[serde(default = "default_format")]
    pub format: Format,
    /// Tag patterns to forward (default everything).
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// Keep-alive interval in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// Start a clean session on every connect (default false: a persistent
    /// session; Sparkplug always uses clean sessions, as its specification asks).
    #[serde(default)]
    pub clean_session: bool,
    /// Messages published but not yet confirmed, at most.
    #[serde(default = "default_inflight")]
    pub max_inflight: u16,
    /// Values per second at most when replaying a backlog after an outage.
    #[serde(default = "default_replay_rate")]
    pub replay_max_rate: u64,
    /// Values per message for `json_batch` and `sparkplug_b`.
    #[serde(default = "default_batch_values")]
    pub batch_max_values: usize,
    /// How long a command from the broker may wait for its device.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_ms: u64,
    /// First reconnection delay (doubled per failure, with ±25 % jitter).
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnection delay.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// CA certificates (PEM) for `mqtts`; default the system bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Sparkplug group id.
    #[serde(default = "default_group")]
    pub sparkplug_group_id: String,
    /// Sparkplug edge node id (default the connector's name).
    #[serde(default)]
    pub sparkplug_edge_node_id: Option<String>,
    /// Where a connector that never ran starts: `latest` (what is published
    /// from now on, the default) or `oldest` (everything still in the WAL).
    #[serde(default)]
    pub start_from: StartFrom,
}

/// Where a new connector's cursor starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// At the newest frame.
    #[default]
    Latest,
    /// At the oldest frame still in the WAL.
    Oldest,
}

fn default_prefix() -> String {
    "edge-gateway".into()
}
const fn default_session_expiry() -> u32 {
    86_400
}
const fn default_qos() -> u8 {
    1
}
const fn default_format() -> Format {
    Format::Json
}
fn default_include() -> Vec<String> {
    vec!["*".into()]
}
const fn default_keep_alive() -> u64 {
    30
}
const fn default_inflight() -> u16 {
    256
}
const fn default_replay_rate() -> u64 {
    20_000
}
const fn default_batch_values() -> usize {
    500
}
const fn default_command_timeout() -> u64 {
    5000
}
const fn default_reconnect_min() -> u64 {
    200
}
const fn default_reconnect_max() -> u64 {
    30_000
}
fn default_group() -> String {
    "edge".into()
}

/// Where the broker is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// TLS or not.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

fn topic_safe(s: &str) -> bool {
    !s.is_empty() && !s.contains(['+', '#']) && !s.starts_with('/') && !s.ends_with('/')
}

impl MqttConfig {
    /// The frames this connector forwards.
    pub fn filter(&self) -> Filter {
        let patterns: Vec<TagPattern> = self.include.iter().filter_map(|p| TagPattern::new(p).ok()).collect();
        Filter::all().patterns(patterns).kinds([FrameKind::Data])
    }

    /// A configuration for `url` with every other field at its default.
    pub fn new(url: &str) -> Self {
        serde_json::from_value(json!({ "url": url })).expect("defaults are valid")
    }

    /// Parses the URL.
    pub fn endpoint(&self) -> Result<Endpoint, FieldError> {
        let (tls, rest) = if let Some(r) = self.url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = self.url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(FieldError::new("url", format!("{:?} must start with mqtt:// or mqtts://", self.url)));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| FieldError::new("url", format!("invalid port {p:?}")))?;
                (h.trim_start_matches('[').trim_end_matches(']').to_owned(), port)
            }
            _ => (rest.to_owned(), if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() || host.contains('/') {
            return Err(FieldError::new("url", format!("{:?} has no host", self.url)));
        }
        Ok(Endpoint { tls, host, port })
    }

    /// Checks the fields; the error names the first bad one.
    fn check(&self) -> Result<(), FieldError> {
        let ep = self.endpoint()?;
        if self.qos > 2 {
            return Err(FieldError::new("qos", format!("must be 0, 1 or 2, got {}", self.qos)));
        }
        if !topic_safe(&self.topic_prefix) {
            return Err(FieldError::new(
                "topic_prefix",
                "must be non-empty, without + or #, and not start or end with /",
            ));
        }
        for (i, p) in self.include.iter().enumerate() {
            TagPattern::new(p).map_err(|e| FieldError::new(format!("include[{i}]"), e))?;
        }
        if self.max_inflight == 0 {
            return Err(FieldError::new("max_inflight", "must be at least 1"));
        }
        if self.replay_max_rate == 0 {
            return Err(FieldError::new("replay_max_rate", "must be at least 1 value per second"));
        }
        if !(1..=100_000).contains(&self.batch_max_values) {
            return Err(FieldError::new(
                "batch_max_values",
                format!("must be between 1 and 100000, got {}", self.batch_max_values),
            ));
        }
        if self.keep_alive_s == 0 || self.keep_alive_s > 65_535 {
            return Err(FieldError::new(
                "keep_alive_s",
                format!("must be between 1 and 65535, got {}", self.keep_alive_s),
            ));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return Err(FieldError::new("reconnect_min_ms", "must be at least 1 and at most reconnect_max_ms"));
        }
        if !ep.tls && (self.ca_file.is_some() || self.client_cert_file.is_some()) {
            return Err(FieldError::new("ca_file", "TLS files need an mqtts:// url"));
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(FieldError::new("client_key_file", "client_cert_file and client_key_file go together"));
        }
        if self.username.is_none() && self.password.is_some() {
            return Err(FieldError::new("password", "a password needs a username"));
        }
        if !topic_safe(&self.sparkplug_group_id) || self.sparkplug_group_id.contains('/') {
            return Err(FieldError::new("sparkplug_group_id", "must be non-empty, without / + #"));
        }
        if let Some(n) = &self.sparkplug_edge_node_id
            && (!topic_safe(n) || n.contains('/'))
        {
            return Err(FieldError::new("sparkplug_edge_node_id", "must be non-empty, without / + #"));
        }
        Ok(())
    }
}

/// What a message is, for what happens when it is confirmed or lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Readings from the replay (cursor) path; confirming it may move the cursor.
    Data,
    /// Readings sent live during a replay; not tied to the cursor.
    Live,
    /// Births and deaths.
    Control,
    /// A command acknowledgement; kept across reconnects.
    CmdAck,
}

struct Msg {
    topic: String,
    payload: Bytes,
    qos: u8,
    kind: Kind,
    /// Index of the cursor slot this message belongs to.
    slot: Option<u64>,
    values: u64,
    sent: Option<Instant>,
}

/// A delivery's worth of sequence numbers: the cursor may pass `end` once all
/// `remaining` messages built from it are confirmed.
struct Slot {
    end: u64,
    remaining: u32,
}

fn tls_config(cfg: &MqttConfig) -> Result<Transport, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = cfg.ca_file.clone().unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&ca).map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("bad certificate in {}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("unusable CA certificate in {}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&cfg.client_cert_file, &cfg.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("bad certificate in {}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read key {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(config))))
}

struct Sparkplug {
    group: String,
    node: String,
    state: sparkplug::NodeState,
    /// bdSeq of the current (or next) session, moved on by the connection task
    /// before every connection attempt.
    bd_seq: Arc<AtomicU64>,
}

impl Sparkplug {
    fn topic(&self, kind: &str, device: Option<&str>) -> String {
        topic(&self.group, &self.node, kind, device)
    }
}

fn topic(group: &str, node: &str, kind: &str, device: Option<&str>) -> String {
    match device {
        Some(d) => format!("spBv1.0/{group}/{kind}/{node}/{d}"),
        None => format!("spBv1.0/{group}/{kind}/{node}"),
    }
}

/// The will maker for Sparkplug: before each connection attempt, move bdSeq on
/// (persisted atomically, so a restarted gateway continues the sequence) and
/// make the NDEATH that ends that session.
fn sparkplug_will(group: String, node: String, bd_seq: Arc<AtomicU64>, file: PathBuf) -> link::WillFn {
    Box::new(move || {
        let n = (bd_seq.load(Ordering::Relaxed) + 1) % 256;
        bd_seq.store(n, Ordering::Relaxed);
        let write = || -> std::io::Result<()> {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = file.with_extension("bdseq.tmp");
            std::fs::write(&tmp, n.to_string())?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &file)
        };
        if let Err(e) = write() {
            tracing::warn!(file = %file.display(), error = %e, "Cannot persist the Sparkplug bdSeq.");
        }
        let payload = sparkplug::ndeath(n, now_ns() / 1_000_000).encode_to_vec();
        (topic(&group, &node, "NDEATH", None), payload)
    })
}

fn bd_seq_file(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("connectors").join(format!("{name}.bdseq"))
}

fn value_json(f: &DataFrame, seq: u64) -> serde_json::Value {
    let mut v = serde_json::to_value(f).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("seq".into(), seq.into());
    }
    v
}

fn json_topic(prefix: &str, tag: &TagId) -> String {
    let point: String = tag.point().chars().map(|c| if c == '+' || c == '#' { '_' } else { c }).collect();
    format!("{prefix}/{}/{point}", tag.device())
}

/// One connector's state while it runs.
struct Conn {
    name: String,
    cfg: MqttConfig,
    label: ConnectorLabel,
    ctx: ConnectorContext,
    outbox: VecDeque<Msg>,
    handed: VecDeque<Msg>,
    inflight: HashMap<u16, Msg>,
    slots: VecDeque<Slot>,
    slot_base: u64,
    connected: bool,
    sp: Option<Sparkplug>,
}

impl Conn {
    fn window(&self) -> usize {
        self.handed.len() + self.inflight.len()
    }

    fn new_slot(&mut self, end: u64) -> u64 {
        self.slots.push_back(Slot { end, remaining: 0 });
        self.slot_base + self.slots.len() as u64 - 1
    }

    fn push(&mut self, topic: String, payload: Vec<u8>, kind: Kind, slot: Option<u64>, values: u64) {
        if let Some(s) = slot
            && let Some(sl) = self.slots.get_mut((s - self.slot_base) as usize)
        {
            sl.remaining += 1;
        }
        let qos = if kind == Kind::CmdAck || kind == Kind::Control { 1 } else { self.cfg.qos };
        let msg = Msg { topic, payload: Bytes::from(payload), qos, kind, slot, values, sent: None };
        if kind == Kind::CmdAck {
            self.outbox.push_front(msg);
        } else {
            self.outbox.push_back(msg);
        }
    }

    /// Turns a delivery into messages. `historical`: it comes from a backlog
    /// replay (Sparkplug flags its metrics so).
    fn enqueue(&mut self, d: &Delivery, kind: Kind, historical: bool) {
        let frames: Vec<(u64, &DataFrame)> = d.frames().filter_map(|(s, f)| f.as_data().map(|df| (s, df))).collect();
        let slot = (kind == Kind::Data).then(|| self.new_slot(d.end_seq()));
        match self.cfg.format {
            Format::Json => {
                for (seq, f) in &frames {
                    let payload = value_json(f, *seq).to_string().into_bytes();
                    let topic = json_topic(&self.cfg.topic_prefix, &f.tag);
                    self.push(topic, payload, kind, slot, 1);
                }
            }
            Format::JsonBatch => {
                for chunk in frames.chunks(self.cfg.batch_max_values) {
                    let values: Vec<_> = chunk.iter().map(|(s, f)| value_json(f, *s)).collect();
                    let payload = json!({ "values": values }).to_string().into_bytes();
                    self.push(format!("{}/batch", self.cfg.topic_prefix), payload, kind, slot, chunk.len() as u64);
                }
            }
            Format::SparkplugB => {
                let mut by_device: Vec<(&str, Vec<(u64, &DataFrame)>)> = Vec::new();
                for (s, f) in &frames {
                    match by_device.iter_mut().find(|(d, _)| *d == f.tag.device()) {
                        Some((_, v)) => v.push((*s, f)),
                        None => by_device.push((f.tag.device(), vec![(*s, f)])),
                    }
                }
                let now_ms = now_ns() / 1_000_000;
                for (device, group) in by_device {
                    let Some(sp) = self.sp.as_mut() else { break };
                    let mut out = Vec::new();
                    if sp.state.observe(device, &group) {
                        let p = sp.state.dbirth(device, now_ms);
                        out.push((sp.topic("DBIRTH", Some(device)), p.encode_to_vec(), Kind::Control, 0));
                    }
                    for chunk in group.chunks(self.cfg.batch_max_values) {
                        let metrics = chunk.iter().map(|(s, f)| sparkplug::metric(f, *s, historical)).collect();
                        let seq = sp.state.next_seq();
                        let p = sparkplug::Payload {
                            timestamp: Some(now_ms),
                            seq: Some(seq),
                            metrics,
                            ..Default::default()
                        };
                        out.push((sp.topic("DDATA", Some(device)), p.encode_to_vec(), kind, chunk.len() as u64));
                    }
                    for (topic, payload, k, n) in out {
                        let s = if k == Kind::Control { None } else { slot };
                        self.push(topic, payload, k, s, n);
                    }
                }
            }
        }
    }

    /// Hands messages to the client while the window allows.
    fn flush_outbox(&mut self, link: &Link) {
        let m = &self.ctx.metrics;
        while self.connected && self.window() < usize::from(self.cfg.max_inflight) {
            let Some(mut msg) = self.outbox.pop_front() else { break };
            if link.try_publish(&msg.topic, msg.qos, msg.payload.clone()) {
                msg.sent = Some(Instant::now());
                m.messages_sent.get_or_create(&self.label).inc();
                m.values_sent.get_or_create(&self.label).inc_by(msg.values);
                self.handed.push_back(msg);
            } else {
                // The client's queue is full: try again after the next event.
                self.outbox.push_front(msg);
                break;
            }
        }
    }

    fn confirmed(&mut self, msg: Msg) {
        let m = &self.ctx.metrics;
        m.values_acked.get_or_create(&self.label).inc_by(msg.values);
        if let Some(t) = msg.sent {
            m.ack_latency.get_or_create(&self.label).observe(t.elapsed().as_secs_f64());
        }
        if let Some(s) = msg.slot
            && s >= self.slot_base
            && let Some(sl) = self.slots.get_mut((s - self.slot_base) as usize)
        {
            sl.remaining = sl.remaining.saturating_sub(1);
        }
    }

    /// Moves the bus cursor over every delivery whose messages are all confirmed.
    fn settle(&mut self, sub: &mut Subscriber) {
        let mut end = None;
        while self.slots.front().is_some_and(|s| s.remaining == 0) {
            end = self.slots.pop_front().map(|s| s.end);
            self.slot_base += 1;
        }
        if let Some(end) = end
            && let Err(e) = sub.ack(end)
        {
            tracing::warn!(connector = %self.name, error = %e, "Cannot move the bus cursor.");
        }
    }

    /// Forgets everything not yet confirmed (the broker lost the session): it
    /// will be read from the bus again.
    fn reset(&mut self) {
        self.handed.clear();
        self.inflight.clear();
        self.slots.clear();
        self.outbox.retain(|m| m.kind == Kind::CmdAck);
    }
}

/// What command handling hands back to the connector loop.
enum CmdResult {
    /// The device answered (or the bus did, for no route and timeouts).
    Ack { id: String, ack: CmdAckFrame },
    /// The command could not even be understood.
    Invalid { id: String, error: String },
    /// Sparkplug NCMD `Node Control/Rebirth`.
    Rebirth,
}

fn parse_json_command(topic: &str, payload: &[u8]) -> Result<(String, TagId, Value), (String, String)> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cmd {
        id: Option<serde_json::Value>,
        tag: String,
        value: Value,
    }
    let fallback_id = topic.rsplit('/').next().unwrap_or("unknown").to_owned();
    let cmd: Cmd = serde_json::from_slice(payload).map_err(|e| {
        (fallback_id.clone(), format!("invalid command payload: {e}; expected {{\"id\",\"tag\",\"value\"}}"))
    })?;
    let id = match cmd.id {
        Some(serde_json::Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => fallback_id,
    };
    let tag = TagId::new(&cmd.tag).map_err(|e| (id.clone(), format!("invalid tag: {e}")))?;
    Ok((id, tag, cmd.value))
}

impl Connector for MqttConfig {
    const KIND: &'static str = "mqtt";

    fn validate(&self) -> Result<(), FieldError> {
        self.check()
    }

    fn build(&self, name: &str, ctx: ConnectorContext) -> Result<ConnectorTask, ConnectorError> {
        let sub = subscribe(name, self, &ctx.bus)?;
        Ok(Box::pin(run(name.to_owned(), self.clone(), sub, ctx)))
    }
}

/// The connector's durable subscription. Made before the connector's task
/// starts, so nothing published after [`crate::Connectors::start`] returns is
/// missed by a connector that never ran before.
fn subscribe(name: &str, cfg: &MqttConfig, bus: &Bus) -> Result<Subscriber, gateway_bus::BusError> {
    let mut opts = SubscribeOptions::durable(format!("mqtt-{name}")).filter(cfg.filter());
    if cfg.start_from == StartFrom::Oldest {
        opts = opts.from_oldest();
    }
    bus.subscribe(opts)
}

/// Runs one MQTT connector until told to stop or the bus closes.
async fn run(name: String, cfg: MqttConfig, mut sub: Subscriber, mut ctx: ConnectorContext) {
    let label = ConnectorLabel { connector: name.clone() };
    let ep = match cfg.endpoint() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(connector = %name, error = %e, "Invalid MQTT connector configuration.");
            return;
        }
    };
    let client_id = cfg.client_id.clone().unwrap_or_else(|| format!("edge-gateway-{name}"));
    let sparkplug = cfg.format == Format::SparkplugB;
    let transport = if ep.tls {
        match tls_config(&cfg) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(connector = %name, error = %e, "Cannot set up TLS; the connector does not start.");
                return;
            }
        }
    } else {
        None
    };
    let mut will_fn = None;
    let sp = sparkplug.then(|| {
        let file = bd_seq_file(&ctx.data_dir, &name);
        let last: u64 = std::fs::read_to_string(&file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(255);
        let s = Sparkplug {
            group: cfg.sparkplug_group_id.clone(),
            node: cfg.sparkplug_edge_node_id.clone().unwrap_or_else(|| name.clone()),
            state: sparkplug::NodeState::default(),
            bd_seq: Arc::new(AtomicU64::new(last)),
        };
        will_fn = Some(sparkplug_will(s.group.clone(), s.node.clone(), s.bd_seq.clone(), file));
        s
    });
    let filter = cfg.filter();
    let mut link = Link::start(
        cfg.protocol,
        LinkOptions {
            client_id,
            host: ep.host.clone(),
            port: ep.port,
            keep_alive: Duration::from_secs(cfg.keep_alive_s),
            // Sparkplug asks for a clean session on every connect.
            clean: cfg.clean_session || sparkplug,
            session_expiry_s: cfg.session_expiry_s,
            inflight: cfg.max_inflight,
            credentials: cfg.username.clone().map(|u| (u, cfg.password.clone().unwrap_or_default())),
            transport,
        },
        (Duration::from_millis(cfg.reconnect_min_ms), Duration::from_millis(cfg.reconnect_max_ms)),
        will_fn,
    );
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<CmdResult>(256);
    let commands = Arc::new(Semaphore::new(16));
    let mut conn = Conn {
        name: name.clone(),
        label: label.clone(),
        cfg,
        ctx: ctx.clone(),
        outbox: VecDeque::new(),
        handed: VecDeque::new(),
        inflight: HashMap::new(),
        slots: VecDeque::new(),
        slot_base: 0,
        connected: false,
        sp,
    };
    let mut live: Option<(Subscriber, u64)> = None;
    let mut tokens = conn.cfg.replay_max_rate as f64;
    let mut last_refill = Instant::now();
    // Refused messages (MQTT 5 reason codes) and bus read errors pause their
    // side of the loop for a growing while, instead of spinning.
    let mut refusal_backoff = Duration::from_millis(conn.cfg.reconnect_min_ms);
    let mut send_paused_until: Option<tokio::time::Instant> = None;
    let mut bus_paused_until: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut drops_seen = 0u64;
    let m = ctx.metrics.clone();
    m.connected.get_or_create(&label).set(0);

    loop {
        let now = tokio::time::Instant::now();
        if send_paused_until.is_some_and(|t| t <= now) {
            send_paused_until = None;
        }
        if bus_paused_until.is_some_and(|t| t <= now) {
            bus_paused_until = None;
        }
        if send_paused_until.is_none() {
            conn.flush_outbox(&link);
        }
        let room = conn.connected
            && bus_paused_until.is_none()
            && conn.window() < usize::from(conn.cfg.max_inflight)
            && conn.outbox.len() < 4096;
        let replaying = live.is_some();
        let replay_ok = room && (!replaying || tokens > 0.0);
        tokio::select! {
            biased;
            _ = ctx.shutdown.wait() => break,
            ev = link.next() => match ev {
                None => {
                    tracing::error!(connector = %conn.name, "The MQTT connection task ended; the connector stops.");
                    break;
                }
                Some(LinkEvent::ConnAck { session_present }) => {
                    tracing::info!(connector = %conn.name, session_present, "Connected to the MQTT broker.");
                    conn.connected = true;
                    refusal_backoff = Duration::from_millis(conn.cfg.reconnect_min_ms);
                    m.connected.get_or_create(&label).set(1);
                    if !session_present || sparkplug {
                        // Whatever was unconfirmed is gone with the old session
                        // (rumqttc dropped what it would have resent): read it again.
                        conn.reset();
                        sub.rewind();
                        live = None;
                    }
                    subscribe_commands(&link, &conn);
                    check_replay(&conn, &sub, &mut live, &filter);
                    if let Some(s) = conn.sp.as_mut() {
                        s.state.new_session();
                        s.state.bd_seq = s.bd_seq.load(Ordering::Relaxed);
                        let p = s.state.nbirth(now_ns() / 1_000_000);
                        let topic = s.topic("NBIRTH", None);
                        conn.outbox.push_front(Msg { topic, payload: p.encode_to_vec().into(), qos: 1, kind: Kind::Control, slot: None, values: 0, sent: None });
                    }
                }
                Some(LinkEvent::Confirmed(pkid)) => {
                    if let Some(msg) = conn.inflight.remove(&pkid) {
                        conn.confirmed(msg);
                        conn.settle(&mut sub);
                    }
                }
                Some(LinkEvent::Refused { pkid, reason }) => {
                    // MQTT 5: the broker answered but did not take the message. Keep
                    // it, say so loudly, and try again after a pause.
                    if let Some(mut msg) = conn.inflight.remove(&pkid) {
                        tracing::error!(connector = %conn.name, topic = %msg.topic, %reason, "The broker refused a message; retrying it.");
                        msg.sent = None;
                        conn.outbox.push_front(msg);
                        send_paused_until = Some(tokio::time::Instant::now() + refusal_backoff);
                        refusal_backoff = (refusal_backoff * 2).min(Duration::from_millis(conn.cfg.reconnect_max_ms));
                    }
                }
                Some(LinkEvent::Message { topic, payload }) => {
                    handle_command(&conn, &topic, &payload, &cmd_tx, &commands);
                }
                Some(LinkEvent::Written(pkid)) => {
                    if pkid == 0 {
                        // QoS 0: at most once, done when written.
                        if let Some(msg) = conn.handed.pop_front() {
                            conn.confirmed(msg);
                            conn.settle(&mut sub);
                        }
                    } else if !conn.inflight.contains_key(&pkid)
                        && let Some(msg) = conn.handed.pop_front()
                    {
                        conn.inflight.insert(pkid, msg);
                    }
                }
                Some(LinkEvent::Down(e)) => {
                    if conn.connected {
                        tracing::warn!(connector = %conn.name, error = %e, "Lost the MQTT broker; data waits in the WAL and is sent after reconnecting.");
                    } else {
                        tracing::debug!(connector = %conn.name, error = %e, "MQTT connection attempt failed.");
                    }
                    conn.connected = false;
                    live = None;
                    m.connected.get_or_create(&label).set(0);
                    m.reconnects.get_or_create(&label).inc();
                }
                Some(_) => {}
            },
            r = cmd_rx.recv() => {
                if let Some(r) = r {
                    publish_ack(&mut conn, r);
                }
            }
            d = sub.recv(), if replay_ok => match d {
                Ok(d) => {
                    if replaying {
                        tokens -= (d.end_seq() - d.first_seq()) as f64;
                    }
                    conn.enqueue(&d, Kind::Data, replaying);
                    conn.settle(&mut sub);
                }
                Err(gateway_bus::BusError::Closed) => break,
                Err(e) => {
                    // A WAL read error (EIO, too many open files): keep going, later.
                    tracing::error!(connector = %conn.name, error = %e, "Cannot read the bus; retrying in a second.");
                    bus_paused_until = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            },
            d = recv_live(&mut live), if room && replaying => {
                if let Some(d) = d {
                    conn.enqueue(&d, Kind::Live, false);
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let rate = conn.cfg.replay_max_rate as f64;
                tokens = (tokens + rate * now.duration_since(last_refill).as_secs_f64()).min(rate);
                last_refill = now;
                let head = ctx.bus.head_seq();
                let backlog = head.saturating_sub(sub.position());
                m.backlog_frames.get_or_create(&label).set(backlog as i64);
                if let Some(w) = ctx.bus.wal() {
                    let s = w.stats();
                    let span = s.next_seq.saturating_sub(s.first_seq).max(1);
                    m.backlog_bytes.get_or_create(&label).set((backlog as u128 * u128::from(s.disk_bytes) / u128::from(span)) as i64);
                }
                let drops = sub.drops();
                if drops > drops_seen {
                    tracing::warn!(connector = %conn.name, values = drops - drops_seen, "Values were lost before they could be sent (the WAL dropped them when it was full).");
                    m.dropped.get_or_create(&label).inc_by(drops - drops_seen);
                    drops_seen = drops;
                }
                check_replay(&conn, &sub, &mut live, &filter);
            }
        }
    }
    // Unconfirmed data stays in the WAL and is sent after the next start.
    if conn.connected {
        if let Some(s) = conn.sp.as_mut() {
            let p = s.state.ndeath(now_ns() / 1_000_000);
            link.try_publish(&s.topic("NDEATH", None), 1, p.encode_to_vec().into());
        }
        link.try_disconnect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, link.next()).await {
            if matches!(ev, LinkEvent::Disconnected | LinkEvent::Down(_)) {
                break;
            }
        }
    }
    m.connected.get_or_create(&label).set(0);
}

/// Replay mode: more backlog than a second of replay. Live values then go out
/// alongside through a lossy subscription; the mode ends when the replay
/// reaches where that subscription started.
fn check_replay(conn: &Conn, sub: &Subscriber, live: &mut Option<(Subscriber, u64)>, filter: &Filter) {
    let backlog = conn.ctx.bus.head_seq().saturating_sub(sub.position());
    match live {
        None if conn.connected && backlog > conn.cfg.replay_max_rate.max(1000) => {
            let name = format!("mqtt-{}-live", conn.name);
            // Only durable frames: live values carry their seq too, and a seq a
            // crash could lose would be given to another reading after a restart.
            let opts = SubscribeOptions::lossy(name, 1 << 16).only_durable().filter(filter.clone());
            if let Ok(s) = conn.ctx.bus.subscribe(opts) {
                tracing::info!(connector = %conn.name, backlog, "Replaying a backlog at up to replay_max_rate; sending live values alongside.");
                let start = s.position();
                *live = Some((s, start));
            }
        }
        Some((_, start)) if sub.position() >= *start || !conn.connected => {
            tracing::info!(connector = %conn.name, "Backlog replayed.");
            *live = None;
        }
        _ => {}
    }
    conn.ctx.metrics.replaying.get_or_create(&conn.label).set(i64::from(live.is_some()));
}

async fn recv_live(live: &mut Option<(Subscriber, u64)>) -> Option<Delivery> {
    match live {
        Some((s, _)) => s.recv().await.ok(),
        None => std::future::pending().await,
    }
}

fn subscribe_commands(link: &Link, conn: &Conn) {
    let r = match &conn.sp {
        Some(s) => link
            .try_subscribe(&format!("spBv1.0/{}/DCMD/{}/+", s.group, s.node))
            .and_then(|_| link.try_subscribe(&format!("spBv1.0/{}/NCMD/{}", s.group, s.node))),
        None => link.try_subscribe(&format!("{}/cmd/#", conn.cfg.topic_prefix)),
    };
    if let Err(e) = r {
        tracing::warn!(connector = %conn.name, error = %e, "Cannot subscribe to the command topics.");
    }
}

fn handle_command(conn: &Conn, topic: &str, payload: &[u8], tx: &mpsc::Sender<CmdResult>, sem: &Arc<Semaphore>) {
    let mut work: Vec<(String, TagId, Value)> = Vec::new();
    if let Some(s) = &conn.sp {
        let prefix = format!("spBv1.0/{}/", s.group);
        let rest = topic.strip_prefix(&prefix).unwrap_or("");
        let parts: Vec<&str> = rest.split('/').collect();
        match sparkplug::Payload::decode(payload) {
            Err(e) => {
                let _ = tx.try_send(CmdResult::Invalid {
                    id: format!("{}-invalid", parts.first().unwrap_or(&"cmd")),
                    error: format!("invalid Sparkplug payload: {e}"),
                });
                return;
            }
            Ok(p) => match parts.as_slice() {
                ["NCMD", _] => {
                    if p.metrics.iter().any(|m| m.name.as_deref() == Some("Node Control/Rebirth")) {
                        let _ = tx.try_send(CmdResult::Rebirth);
                    }
                    return;
                }
                ["DCMD", _, device] => {
                    for m in &p.metrics {
                        let (Some(name), Some(v)) = (m.name.as_deref(), m.value.as_ref()) else { continue };
                        match TagId::from_parts(device, name) {
                            Ok(tag) => work.push((
                                format!("dcmd-{device}-{name}"),
                                tag,
                                sparkplug::from_metric_value(m.datatype, v),
                            )),
                            Err(e) => {
                                let _ = tx.try_send(CmdResult::Invalid {
                                    id: format!("dcmd-{device}-{name}"),
                                    error: format!("invalid metric name: {e}"),
                                });
                            }
                        }
                    }
                }
                _ => return,
            },
        }
    } else {
        match parse_json_command(topic, payload) {
            Ok(w) => work.push(w),
            Err((id, error)) => {
                let _ = tx.try_send(CmdResult::Invalid { id, error });
                return;
            }
        }
    }
    for (id, tag, value) in work {
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            let _ = tx.try_send(CmdResult::Invalid { id, error: "too many commands in progress; try again".into() });
            continue;
        };
        let bus: Bus = conn.ctx.bus.clone();
        let tx = tx.clone();
        let origin = format!("mqtt:{}", conn.name);
        let timeout = Duration::from_millis(conn.cfg.command_timeout_ms);
        tokio::spawn(async move {
            let ack = bus.command(tag, value, &origin, timeout).await;
            drop(permit);
            let _ = tx.send(CmdResult::Ack { id, ack }).await;
        });
    }
}

fn publish_ack(conn: &mut Conn, r: CmdResult) {
    let m = conn.ctx.metrics.clone();
    let (id, status, body) = match r {
        CmdResult::Rebirth => {
            // NBIRTH, then a DBIRTH for every device known so far (quiet ones too).
            let mut births = Vec::new();
            if let Some(s) = conn.sp.as_mut() {
                let now_ms = now_ns() / 1_000_000;
                s.state.new_session();
                births.push((s.topic("NBIRTH", None), s.state.nbirth(now_ms).encode_to_vec()));
                let devices: Vec<String> = s.state.devices.keys().cloned().collect();
                for d in devices {
                    let p = s.state.dbirth(&d, now_ms);
                    births.push((s.topic("DBIRTH", Some(&d)), p.encode_to_vec()));
                }
            }
            for (topic, payload) in births {
                conn.push(topic, payload, Kind::Control, None, 0);
            }
            return;
        }
        CmdResult::Ack { id, ack } => {
            let status = match ack.status {
                CmdStatus::Ok => "ok",
                CmdStatus::Rejected => "rejected",
                CmdStatus::Failed => "failed",
                CmdStatus::Timeout => "timeout",
                CmdStatus::NoRoute => "no_route",
            };
            let body = json!({"id": id, "tag": ack.tag, "status": status, "message": ack.message,
                              "ts": gateway_model::format_rfc3339_ns(ack.ts_ns)});
            (id, status, body)
        }
        CmdResult::Invalid { id, error } => {
            let body = json!({"id": id, "status": "invalid", "message": error, "ts": gateway_model::format_rfc3339_ns(now_ns())});
            (id, "invalid", body)
        }
    };
    m.commands.get_or_create(&CommandLabel { connector: conn.name.clone(), status: status.into() }).inc();
    let topic = format!("{}/cmd_ack/{}", conn.cfg.topic_prefix, id.replace(['+', '#', '/'], "_"));
    conn.push(topic, body.to_string().into_bytes(), Kind::CmdAck, None, 0);
}
