//! The task of one OPC UA device: connect (see [`super::connect`]), set
//! its tags up (namespaces, each node's data type and rank, the
//! subscription and its monitored items), publish what the server sends
//! (subscribe) or reads (poll), answer commands with writes, and when the
//! connection is lost or the subscription falls silent, turn every tag bad
//! with the reason and build everything anew after a backoff
//! ([`super::supervisor`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gateway_bus::CommandRequest;
use gateway_model::{Batch, CmdStatus, Frame, Reason, Value, now_ns};
use opcua::client::{MonitoredItemMap, OnSubscriptionNotificationCore, Session};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeNotification, DataChangeTrigger, DataValue, DeadbandType, ExtensionObject,
    MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeId, NotificationMessage, NumericRange,
    QualifiedName, ReadValueId, StatusChangeNotification, StatusCode, TimestampsToReturn, Variant, WriteValue,
    match_extension_object_owned,
};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::config::{DataType, Mode, Namespace, NodeRef, OpcUaConfig, OpcUaTagConfig};
use super::connect::{Failure, Link, LinkEvent, connect};
use super::supervisor::{Decision, Supervisor};
use super::value::{builtin_of, kind_of, neutral, quality_of, reason_of, timestamp_ns, to_value, to_variant, type_of};
use crate::backoff::{Backoff, seed_of};
use crate::config::DeviceConfig;
use crate::driver::{DriverContext, Stop};
use crate::point::{Outcome, Point};
use crate::status::DeviceStatus;

/// A tag and what the driver knows of it.
struct Tag {
    point: Point,
    cfg: OpcUaTagConfig,
    node: NodeRef,
    writable: bool,
    /// The tag's deadband, or the device's.
    deadband: Option<f64>,
    /// On the current connection: the node, resolved.
    node_id: Option<NodeId>,
    /// The node's type: from its DataType attribute, else from its values.
    kind: Option<DataType>,
    /// On the current connection: why this tag cannot be read (its node is
    /// unknown, of another type, an array, refused by the server).
    problem: Option<(Reason, String)>,
}

impl Tag {
    fn neutral(&self) -> Value {
        neutral(self.cfg.data_type.or(self.kind))
    }

    /// The outcome of a value the server sent or read for this tag.
    fn outcome(&mut self, dv: &DataValue) -> Outcome {
        let ts = timestamp_ns(dv);
        let status = dv.status.unwrap_or(StatusCode::Good);
        let q = quality_of(status);
        if !status.is_good() && !status.is_uncertain() {
            return Outcome::Bad(q.reason, ts);
        }
        let Some(variant) = dv.value.as_ref() else { return Outcome::Bad(Reason::DECODE_ERROR, ts) };
        let value = match to_value(variant) {
            Ok(v) => v,
            Err((reason, _)) => return Outcome::Bad(reason, ts),
        };
        let actual = type_of(variant);
        if let Some(want) = self.cfg.data_type
            && actual != Some(want)
        {
            return Outcome::Bad(Reason::TYPE_MISMATCH, ts);
        }
        if self.kind.is_none() {
            self.kind = actual;
        }
        if status.is_uncertain() { Outcome::Uncertain(value, q.reason, ts) } else { Outcome::Good(value, ts) }
    }

    fn frame(&mut self, outcome: Outcome, deadband: Option<f64>) -> Option<Frame> {
        let n = self.neutral();
        self.point.frame(outcome, deadband, || n)
    }
}

/// What the subscription's callback hands the device task.
enum Note {
    /// Changed values, by client handle (tag index + 1).
    Data(Vec<(u32, DataValue)>),
    /// A publish response without data: the subscription is alive.
    KeepAlive,
    /// The server changed the subscription's state (it expired, or the server stops).
    Status(StatusCode),
}

/// The subscription callback: forwards every publish response to the device task.
/// Notification messages queued between the session and the device task
/// (100 s of publishing at 100 ms). The task takes them as they come; only
/// while the bus holds back readings can they pile up, and past this bound
/// data changes are dropped and counted rather than filling memory.
const NOTE_QUEUE: usize = 1024;

struct Forward {
    tx: mpsc::Sender<Note>,
    /// Values dropped because the queue was full (reported by the task).
    dropped: Arc<AtomicU64>,
}

impl Forward {
    fn send(&self, note: Note) {
        if let Err(mpsc::error::TrySendError::Full(n)) = self.tx.try_send(note) {
            let values = if let Note::Data(v) = &n { v.len() as u64 } else { 0 };
            self.dropped.fetch_add(values, Ordering::Relaxed);
        }
    }
}

impl OnSubscriptionNotificationCore for Forward {
    fn on_subscription_notification(&mut self, msg: NotificationMessage, _items: MonitoredItemMap<'_>) {
        let Some(data) = msg.notification_data.filter(|d| !d.is_empty()) else {
            self.send(Note::KeepAlive);
            return;
        };
        for obj in data {
            match_extension_object_owned!(obj,
                v: DataChangeNotification => {
                    let items = v.monitored_items.unwrap_or_default();
                    self.send(Note::Data(items.into_iter().map(|n| (n.client_handle, n.value)).collect()));
                },
                v: StatusChangeNotification => {
                    self.send(Note::Status(v.status));
                },
                _ => {}
            )
        }
    }
}

/// A connection with its tags set up.
struct Up {
    link: Link,
    /// Subscribe mode: what the subscription sends.
    notes: Option<mpsc::Receiver<Note>>,
}

/// Everything one device task owns.
struct Device {
    name: String,
    cfg: OpcUaConfig,
    tags: Vec<Tag>,
    status: Arc<DeviceStatus>,
    sup: Supervisor,
    data_dir: Option<PathBuf>,
    /// Whether a connection was ever attempted (later ones count as reconnects).
    attempted: bool,
    /// Values the subscription sent that a full queue dropped ([`NOTE_QUEUE`]).
    dropped: Arc<AtomicU64>,
}

/// How long a request may take (the session's own timeout, and a margin).
fn request_deadline(cfg: &OpcUaConfig) -> Duration {
    cfg.timeout() + Duration::from_millis(500)
}

/// Whether a failed request means the connection is gone (rather than one
/// request refused).
fn is_connection_level(status: StatusCode) -> bool {
    matches!(reason_of(status), Reason::TIMEOUT | Reason::CONNECTION_LOST | Reason::NOT_CONNECTED | Reason::SHUTDOWN)
}

impl Device {
    fn new(dev: &DeviceConfig, cfg: OpcUaConfig, status: Arc<DeviceStatus>, data_dir: Option<PathBuf>) -> Self {
        let tags = dev
            .tags_of::<OpcUaTagConfig>()
            .filter_map(|(t, p)| {
                let id = dev.tag_id(&t.name)?;
                let node = p.node_id.parse::<NodeRef>().ok()?;
                Some(Tag {
                    point: Point::new(id),
                    deadband: p.deadband.or(cfg.deadband),
                    cfg: p.clone(),
                    node,
                    writable: t.writable,
                    node_id: None,
                    kind: None,
                    problem: None,
                })
            })
            .collect();
        let backoff = Backoff::new(
            Duration::from_millis(cfg.reconnect_min_ms),
            Duration::from_millis(cfg.reconnect_max_ms),
            seed_of(&dev.name),
        );
        let sup = Supervisor::new(backoff, cfg.timeout(), std::time::Instant::now());
        Device { name: dev.name.clone(), cfg, tags, status, sup, data_dir, attempted: false, dropped: Arc::default() }
    }

    /// Every tag bad for `reason`.
    fn all_bad(&mut self, reason: Reason) -> Vec<Frame> {
        let ts = now_ns();
        self.tags.iter_mut().filter_map(|t| t.frame(Outcome::Bad(reason, ts), None)).collect()
    }

    /// Connects and sets the tags up; the frames of tags that cannot be read.
    async fn connect(&mut self) -> Result<(Up, Vec<Frame>), Failure> {
        if self.attempted {
            self.status.reconnecting();
        }
        self.attempted = true;
        let link = connect(&self.cfg, self.data_dir.as_deref()).await?;
        match self.set_up(&link.session).await {
            Ok((notes, revised)) => {
                self.sup.connected(std::time::Instant::now(), revised);
                self.status.set_connected(true);
                let frames = self.report_problems();
                Ok((Up { link, notes }, frames))
            }
            Err(f) => {
                link.close(Duration::from_millis(500)).await;
                Err(f)
            }
        }
    }

    /// The tags that cannot be read on this connection: logged, in the
    /// device's status, and published bad.
    fn report_problems(&mut self) -> Vec<Frame> {
        let ts = now_ns();
        let mut frames = Vec::new();
        let mut said = Vec::new();
        for t in &mut self.tags {
            if let Some((reason, why)) = t.problem.clone() {
                tracing::warn!(device = %self.name, tag = %t.point.id, node = %t.cfg.node_id, %why, "OPC UA tag cannot be read.");
                said.push(format!("{} ({}): {why}", t.point.id.point(), t.cfg.node_id));
                frames.extend(t.frame(Outcome::Bad(reason, ts), None));
            }
        }
        let monitored = self.tags.len() - said.len();
        tracing::info!(device = %self.name, endpoint = %self.cfg.endpoint, tags = monitored, failed = said.len(), "OPC UA device connected.");
        if !said.is_empty() {
            let shown: Vec<&str> = said.iter().take(5).map(String::as_str).collect();
            let more = if said.len() > 5 { format!(" (and {} more)", said.len() - 5) } else { String::new() };
            self.status.failed(format!(
                "{} of {} tags cannot be read: {}{more}",
                said.len(),
                self.tags.len(),
                shown.join("; ")
            ));
        }
        frames
    }

    /// Namespaces, the nodes' types and ranks, and (subscribe) the
    /// subscription with one monitored item per readable tag. A failure of
    /// one node is that tag's problem; a failed request is the connection's.
    async fn set_up(
        &mut self,
        session: &Arc<Session>,
    ) -> Result<(Option<mpsc::Receiver<Note>>, Option<(Duration, u32)>), Failure> {
        let deadline = request_deadline(&self.cfg);
        let needs_ns = self.tags.iter().any(|t| matches!(t.node.ns, Namespace::Uri(_)));
        let namespaces = if needs_ns {
            let map = tokio::time::timeout(deadline, session.read_namespace_array())
                .await
                .map_err(|_| Failure::new(Reason::TIMEOUT, "no answer to the read of the namespace array"))?
                .map_err(|e| Failure::status("cannot read the server's namespace array", e.status()))?;
            Some(map)
        } else {
            None
        };
        for t in &mut self.tags {
            t.problem = None;
            t.node_id = t.node.resolve(|uri| namespaces.as_ref().and_then(|m| m.get_index(uri)));
            if t.node_id.is_none()
                && let Namespace::Uri(uri) = &t.node.ns
            {
                t.problem = Some((Reason::NOT_FOUND, format!("the server has no namespace {uri:?}")));
            }
        }
        self.check_nodes(session).await?;
        if self.cfg.mode == Mode::Poll {
            return Ok((None, None));
        }
        let (tx, rx) = mpsc::channel(NOTE_QUEUE);
        let p = Duration::from_millis(self.cfg.publishing_interval_ms);
        let keep_alive = self.cfg.keep_alive_count;
        let id = tokio::time::timeout(
            deadline,
            session.create_subscription(
                p,
                keep_alive.saturating_mul(3),
                keep_alive,
                0,
                0,
                true,
                Forward { tx, dropped: self.dropped.clone() },
            ),
        )
        .await
        .map_err(|_| Failure::new(Reason::TIMEOUT, "no answer to the creation of the subscription"))?
        .map_err(|e| Failure::status("the server refused the subscription", e.status()))?;
        let revised = session
            .subscription_state()
            .lock()
            .get(id)
            .map(|s| (s.publishing_interval(), s.max_keep_alive_count()))
            .unwrap_or((p, keep_alive));
        self.monitor(session, id).await?;
        Ok((Some(rx), Some(revised)))
    }

    /// Reads each node's DataType and ValueRank: unknown nodes, arrays and
    /// types other than the tag's `data_type` become that tag's problem.
    async fn check_nodes(&mut self, session: &Session) -> Result<(), Failure> {
        let deadline = request_deadline(&self.cfg);
        let todo: Vec<usize> = (0..self.tags.len()).filter(|&i| self.tags[i].problem.is_none()).collect();
        for chunk in todo.chunks((self.cfg.max_nodes_per_request / 2).max(1)) {
            let ids: Vec<ReadValueId> = chunk
                .iter()
                .flat_map(|&i| {
                    let n = self.tags[i].node_id.clone().unwrap_or_default();
                    [attribute(n.clone(), AttributeId::DataType), attribute(n, AttributeId::ValueRank)]
                })
                .collect();
            let values = tokio::time::timeout(deadline, session.read(&ids, TimestampsToReturn::Neither, 0.0))
                .await
                .map_err(|_| Failure::new(Reason::TIMEOUT, "no answer to the read of the nodes' data types"))?
                .map_err(|e| Failure::status("cannot read the nodes' data types", e.status()))?;
            for (k, &i) in chunk.iter().enumerate() {
                let t = &mut self.tags[i];
                let (dt, rank) = (values.get(2 * k), values.get(2 * k + 1));
                t.problem = node_problem(t.cfg.data_type, dt, rank, &mut t.kind);
            }
        }
        Ok(())
    }

    /// One monitored item per tag without a problem, in chunks.
    async fn monitor(&mut self, session: &Session, subscription: u32) -> Result<(), Failure> {
        let deadline = request_deadline(&self.cfg);
        let todo: Vec<usize> = (0..self.tags.len()).filter(|&i| self.tags[i].problem.is_none()).collect();
        for chunk in todo.chunks(self.cfg.max_nodes_per_request) {
            let items: Vec<MonitoredItemCreateRequest> = chunk.iter().map(|&i| self.item(i)).collect();
            let created = tokio::time::timeout(
                deadline,
                session.create_monitored_items(subscription, TimestampsToReturn::Both, items),
            )
            .await
            .map_err(|_| Failure::new(Reason::TIMEOUT, "no answer to the creation of the monitored items"))?
            .map_err(|e| Failure::status("the server refused the monitored items", e.status()))?;
            for (k, &i) in chunk.iter().enumerate() {
                let status = created.get(k).map_or(StatusCode::BadUnexpectedError, |c| c.result.status_code);
                if !status.is_good() {
                    self.tags[i].problem =
                        Some((reason_of(status), format!("the server refused to monitor it: {status}")));
                }
            }
        }
        Ok(())
    }

    /// The monitored item of tag `i`: the value, sampled at the device's
    /// rate, with the absolute deadband for a numeric node.
    fn item(&self, i: usize) -> MonitoredItemCreateRequest {
        let t = &self.tags[i];
        let numeric = t.cfg.data_type.or(t.kind).is_some_and(DataType::is_numeric);
        let filter = match t.deadband {
            Some(band) if numeric => ExtensionObject::from_message(DataChangeFilter {
                trigger: DataChangeTrigger::StatusValue,
                deadband_type: DeadbandType::Absolute as u32,
                deadband_value: band,
            }),
            _ => ExtensionObject::null(),
        };
        MonitoredItemCreateRequest {
            item_to_monitor: attribute(t.node_id.clone().unwrap_or_default(), AttributeId::Value),
            monitoring_mode: MonitoringMode::Reporting,
            requested_parameters: MonitoringParameters {
                client_handle: i as u32 + 1,
                sampling_interval: self.cfg.sampling_interval_ms() as f64,
                filter,
                queue_size: self.cfg.queue_size,
                discard_oldest: true,
            },
        }
    }

    /// The frames of a publish response's changes (the server applied the deadband).
    fn changes(&mut self, items: Vec<(u32, DataValue)>, frames: &mut Vec<Frame>) {
        for (handle, dv) in items {
            let Some(t) = (handle as usize).checked_sub(1).and_then(|i| self.tags.get_mut(i)) else { continue };
            let outcome = t.outcome(&dv);
            frames.extend(t.frame(outcome, None));
        }
    }

    /// Poll mode: reads every readable tag's value, in chunks.
    async fn poll(&mut self, session: &Session) -> Result<Vec<Frame>, Failure> {
        let deadline = request_deadline(&self.cfg);
        let sent = std::time::Instant::now();
        let todo: Vec<usize> = (0..self.tags.len()).filter(|&i| self.tags[i].problem.is_none()).collect();
        let mut frames = Vec::with_capacity(todo.len());
        for chunk in todo.chunks(self.cfg.max_nodes_per_request) {
            let ids: Vec<ReadValueId> = chunk
                .iter()
                .map(|&i| attribute(self.tags[i].node_id.clone().unwrap_or_default(), AttributeId::Value))
                .collect();
            let read = tokio::time::timeout(deadline, session.read(&ids, TimestampsToReturn::Both, 0.0)).await;
            let values = match read {
                Err(_) => {
                    return Err(Failure::new(
                        Reason::TIMEOUT,
                        format!("no answer to a read within {} ms", self.cfg.timeout_ms),
                    ));
                }
                Ok(Err(e)) if is_connection_level(e.status()) => {
                    return Err(Failure::status("a read failed", e.status()));
                }
                Ok(Err(e)) => {
                    let ts = now_ns();
                    tracing::debug!(device = %self.name, status = %e.status(), "OPC UA read refused.");
                    self.status.failed(format!("a read was refused: {}", e.status()));
                    for &i in chunk {
                        let t = &mut self.tags[i];
                        let band = t.deadband;
                        frames.extend(t.frame(Outcome::Bad(reason_of(e.status()), ts), band));
                    }
                    continue;
                }
                Ok(Ok(v)) => v,
            };
            for (k, &i) in chunk.iter().enumerate() {
                let t = &mut self.tags[i];
                let outcome =
                    values.get(k).map_or(Outcome::Bad(Reason::MALFORMED_RESPONSE, now_ns()), |dv| t.outcome(dv));
                let band = t.deadband;
                frames.extend(t.frame(outcome, band));
            }
        }
        // Subscriptions have no round trip to time: the server pushes.
        self.status.round_trip(sent.elapsed());
        self.status.polled(now_ns());
        Ok(frames)
    }

    /// Carries out a command and answers it; `Err` when the connection
    /// turned out to be gone.
    async fn command(&mut self, req: CommandRequest, up: Option<&Up>) -> Result<(), Failure> {
        let Some(i) = self.tags.iter().position(|t| t.point.id == req.cmd.tag) else {
            req.reply(CmdStatus::Rejected, "unknown tag");
            return Ok(());
        };
        if !self.tags[i].writable {
            req.reply(CmdStatus::Rejected, "tag is not writable");
            return Ok(());
        }
        let Some(up) = up else {
            let why = self.sup.down_reason().unwrap_or(Reason::NOT_CONNECTED);
            req.reply(CmdStatus::Failed, format!("the device is not connected ({why})"));
            return Ok(());
        };
        if let Some((_, why)) = &self.tags[i].problem {
            req.reply(CmdStatus::Failed, format!("the tag's node cannot be used: {why}"));
            return Ok(());
        }
        let node = self.tags[i].node_id.clone().unwrap_or_default();
        let deadline = request_deadline(&self.cfg);
        let session = &up.link.session;
        // The node's type decides how the value is sent; a node whose
        // DataType is abstract is asked for its current value's type.
        let kind = match self.tags[i].cfg.data_type.or(self.tags[i].kind) {
            Some(k) => k,
            None => {
                let read = tokio::time::timeout(
                    deadline,
                    session.read(&[attribute(node.clone(), AttributeId::Value)], TimestampsToReturn::Neither, 0.0),
                )
                .await;
                match read {
                    Ok(Ok(v)) => match v.first().and_then(|dv| dv.value.as_ref()) {
                        Some(var) if type_of(var).is_some() => {
                            let k = type_of(var).unwrap_or(DataType::Double);
                            self.tags[i].kind = Some(k);
                            k
                        }
                        other => {
                            let what = other.map_or_else(|| "no value".to_owned(), kind_of);
                            req.reply(CmdStatus::Failed, format!("the node's type cannot be written: it holds {what}"));
                            return Ok(());
                        }
                    },
                    Ok(Err(e)) if !is_connection_level(e.status()) => {
                        req.reply(CmdStatus::Failed, format!("the node's type cannot be read: {}", e.status()));
                        return Ok(());
                    }
                    Ok(Err(e)) => {
                        req.reply(CmdStatus::Failed, format!("the read before the write failed: {}", e.status()));
                        return Err(Failure::status("a read failed", e.status()));
                    }
                    Err(_) => {
                        req.reply(CmdStatus::Timeout, "no answer from the server");
                        return Err(Failure::new(Reason::TIMEOUT, "no answer to a read"));
                    }
                }
            }
        };
        let variant = match to_variant(kind, &req.cmd.value) {
            Ok(v) => v,
            Err(e) => {
                req.reply(CmdStatus::Rejected, e);
                return Ok(());
            }
        };
        let write = WriteValue {
            node_id: node,
            attribute_id: AttributeId::Value as u32,
            index_range: NumericRange::None,
            value: DataValue { value: Some(variant), ..Default::default() },
        };
        match tokio::time::timeout(deadline, session.write(&[write])).await {
            Ok(Ok(results)) => match results.first().copied().unwrap_or(StatusCode::BadUnexpectedError) {
                s if s.is_good() => req.reply(CmdStatus::Ok, ""),
                s => req.reply(CmdStatus::Failed, format!("the server refused the write: {s}")),
            },
            Ok(Err(e)) => {
                req.reply(CmdStatus::Failed, format!("the write failed: {}", e.status()));
                if is_connection_level(e.status()) {
                    return Err(Failure::status("a write failed", e.status()));
                }
            }
            Err(_) => {
                req.reply(CmdStatus::Timeout, format!("no answer from the server within {} ms", self.cfg.timeout_ms));
                return Err(Failure::new(Reason::TIMEOUT, "no answer to a write"));
            }
        }
        Ok(())
    }

    /// The device went down: its tags bad, the next attempt scheduled.
    fn went_down(&mut self, f: &Failure, was_up: bool) -> Vec<Frame> {
        self.status.set_connected(false);
        self.status.failed(&f.message);
        let delay = self.sup.failed(std::time::Instant::now(), f.reason);
        if was_up || self.sup.failures() == 1 {
            tracing::warn!(device = %self.name, endpoint = %self.cfg.endpoint, error = %f, retry_in_ms = delay.as_millis() as u64, "OPC UA device unreachable; retrying with backoff.");
        } else {
            tracing::debug!(device = %self.name, error = %f, retry_in_ms = delay.as_millis() as u64, "OPC UA device still unreachable.");
        }
        self.all_bad(f.reason)
    }
}

/// A read of attribute `a` of `node`.
fn attribute(node: NodeId, a: AttributeId) -> ReadValueId {
    ReadValueId {
        node_id: node,
        attribute_id: a as u32,
        index_range: NumericRange::None,
        data_encoding: QualifiedName::null(),
    }
}

/// Why a node cannot serve a tag (`want`: the tag's `data_type`), from its
/// DataType and ValueRank attributes; records the node's type in `kind`.
fn node_problem(
    want: Option<DataType>,
    data_type: Option<&DataValue>,
    rank: Option<&DataValue>,
    kind: &mut Option<DataType>,
) -> Option<(Reason, String)> {
    let Some(dt) = data_type else { return Some((Reason::MALFORMED_RESPONSE, "no DataType in the answer".into())) };
    if let Some(s) = dt.status.filter(|s| !s.is_good()) {
        return Some((reason_of(s), s.to_string()));
    }
    let ty = match &dt.value {
        Some(Variant::NodeId(n)) => builtin_of(n),
        _ => return Some((Reason::NOT_SUPPORTED, "the node has no DataType: is it a variable?".into())),
    };
    if let Some(Variant::Int32(r)) = rank.and_then(|r| r.value.as_ref())
        && *r >= 0
    {
        return Some((
            Reason::NOT_SUPPORTED,
            format!("the node holds an array (ValueRank {r}); a tag holds one scalar value"),
        ));
    }
    if let (Some(want), Some(actual)) = (want, ty)
        && want != actual
    {
        return Some((
            Reason::TYPE_MISMATCH,
            format!("the node holds {}, the tag's data_type is {}", actual.name(), want.name()),
        ));
    }
    *kind = ty;
    None
}

/// What woke the device task.
enum Wake {
    Stop,
    Command(Option<CommandRequest>),
    Due,
    Link(Option<LinkEvent>),
    Notes(Vec<Note>),
    Poll,
}

/// Waits for the next note and takes every one already queued.
async fn notes(rx: &mut Option<mpsc::Receiver<Note>>) -> Vec<Note> {
    let Some(rx) = rx else { return std::future::pending().await };
    let Some(first) = rx.recv().await else { return std::future::pending().await };
    let mut all = vec![first];
    while let Ok(n) = rx.try_recv() {
        all.push(n);
    }
    all
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Runs an OPC UA device until its context says stop.
pub(crate) async fn run(cfg: OpcUaConfig, dev: Arc<DeviceConfig>, mut ctx: DriverContext) {
    let mut d = Device::new(&dev, cfg, ctx.status.clone(), ctx.data_dir.clone());
    tracing::info!(device = %d.name, endpoint = %d.cfg.endpoint, mode = ?d.cfg.mode, tags = d.tags.len(), "OPC UA device starting.");
    let mut tick = tokio::time::interval(Duration::from_millis(dev.poll_interval_ms));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let poll_mode = d.cfg.mode == Mode::Poll;
    let mut shutdown = ctx.shutdown.clone();
    let mut up: Option<Up> = None;
    loop {
        let wake = {
            let is_up = up.is_some();
            let mut rx = up.as_mut().and_then(|u| u.notes.take());
            let w = {
                let events = async {
                    match up.as_mut() {
                        Some(u) => u.link.events.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = shutdown.wait() => Wake::Stop,
                    e = events => Wake::Link(e),
                    n = notes(&mut rx) => Wake::Notes(n),
                    c = ctx.commands.recv() => Wake::Command(c),
                    _ = tick.tick(), if poll_mode && is_up => Wake::Poll,
                    _ = sleep_until(d.sup.due()) => Wake::Due,
                }
            };
            if let Some(u) = up.as_mut() {
                u.notes = rx;
            }
            w
        };
        let mut frames = Vec::new();
        let mut lost: Option<Failure> = None;
        match wake {
            Wake::Stop | Wake::Command(None) => break,
            Wake::Command(Some(req)) => {
                let done = async {
                    let r = d.command(req, up.as_ref()).await;
                    // Commands that queued meanwhile, then a poll at once (poll
                    // mode) so the written values are read back.
                    let mut r = r;
                    while r.is_ok()
                        && let Some(req) = ctx.commands.try_recv()
                    {
                        r = d.command(req, up.as_ref()).await;
                    }
                    r
                };
                tokio::select! {
                    _ = shutdown.wait() => break,
                    r = done => {
                        lost = r.err();
                        tick.reset_immediately();
                    }
                }
            }
            Wake::Link(Some(LinkEvent::Connected)) => {}
            Wake::Link(Some(LinkEvent::KeepAliveFailed(s))) => {
                lost = Some(Failure::status("the server stopped answering the session keep-alive", s));
            }
            Wake::Link(Some(LinkEvent::Lost(s))) => {
                lost = Some(Failure::status("the connection was lost", s));
            }
            Wake::Link(None) => {
                lost = Some(Failure::status("the connection was lost", StatusCode::BadConnectionClosed));
            }
            Wake::Notes(all) => {
                let dropped = d.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    tracing::warn!(device = %d.name, values = dropped, "OPC UA data changes were dropped: the bus held back readings longer than the queue lasts.");
                }
                d.sup.heard(std::time::Instant::now());
                d.status.polled(now_ns());
                let mut ended = None;
                for n in all {
                    match n {
                        Note::Data(items) => d.changes(items, &mut frames),
                        Note::KeepAlive => {}
                        Note::Status(s) => ended = Some(s),
                    }
                }
                if let Some(s) = ended {
                    lost = Some(Failure::status("the server ended the subscription", s));
                }
            }
            Wake::Poll => {
                if let Some(u) = up.as_ref() {
                    let session = u.link.session.clone();
                    let r = tokio::select! {
                        _ = shutdown.wait() => break,
                        r = d.poll(&session) => r,
                    };
                    match r {
                        Ok(f) => frames = f,
                        Err(f) => lost = Some(f),
                    }
                }
            }
            Wake::Due => match d.sup.decide(std::time::Instant::now()) {
                Decision::Wait => {}
                Decision::Stale { silent_for } => {
                    lost = Some(Failure::new(
                        Reason::STALE,
                        format!(
                            "the subscription sent nothing for {} ms, past its keep-alive period; reconnecting",
                            silent_for.as_millis()
                        ),
                    ));
                }
                Decision::Connect => {
                    let r = tokio::select! {
                        _ = shutdown.wait() => break,
                        r = d.connect() => r,
                    };
                    match r {
                        Ok((u, f)) => {
                            up = Some(u);
                            frames = f;
                            tick.reset_immediately();
                        }
                        Err(f) => frames = d.went_down(&f, false),
                    }
                }
            },
        }
        if let Some(f) = lost {
            let was = up.take();
            let stale = f.reason == Reason::STALE;
            if let Some(u) = was {
                if stale {
                    // The server may still be there: let it drop the dead session now.
                    u.link.close(Duration::from_millis(1000)).await;
                } else {
                    u.link.drop_now();
                }
            }
            frames.extend(d.went_down(&f, true));
        }
        // Every path (poll, subscription, connect, loss) meets here.
        d.status.produced(frames.len());
        if !frames.is_empty() && ctx.publish(Batch::from(frames)).await == Err(Stop) {
            break;
        }
    }
    if let Some(u) = up.take() {
        u.link.close(Duration::from_millis(1000)).await;
    }
    ctx.status.set_connected(false);
    let last = d.all_bad(Reason::SHUTDOWN);
    if !last.is_empty() {
        let _ = ctx.bus.try_publish(Arc::new(Batch::from(last)));
    }
    tracing::info!(device = %d.name, "OPC UA device stopped.");
}

#[cfg(test)]
mod tests {
    use gateway_model::TagId;
    use opcua::types::{DataTypeId, DateTime};

    use super::*;

    fn tag(want: Option<DataType>) -> Tag {
        Tag {
            point: Point::new(TagId::new("d.t").unwrap()),
            cfg: OpcUaTagConfig { node_id: "ns=2;s=x".into(), data_type: want, deadband: None },
            node: "ns=2;s=x".parse().unwrap(),
            writable: false,
            deadband: None,
            node_id: None,
            kind: None,
            problem: None,
        }
    }

    fn dv(v: Variant, s: StatusCode) -> DataValue {
        DataValue { value: Some(v), status: Some(s), source_timestamp: Some(DateTime::now()), ..Default::default() }
    }

    #[test]
    fn values_become_outcomes_with_the_status_and_the_type_check() {
        let mut t = tag(Some(DataType::Double));
        assert!(
            matches!(t.outcome(&dv(Variant::Double(1.5), StatusCode::Good)), Outcome::Good(Value::F64(v), _) if v == 1.5)
        );
        assert!(matches!(t.outcome(&dv(Variant::Int32(1), StatusCode::Good)), Outcome::Bad(Reason::TYPE_MISMATCH, _)));
        assert!(matches!(
            t.outcome(&dv(Variant::Double(1.0), StatusCode::UncertainLastUsableValue)),
            Outcome::Uncertain(_, Reason::LAST_KNOWN, _)
        ));
        assert!(matches!(
            t.outcome(&dv(Variant::Empty, StatusCode::BadSensorFailure)),
            Outcome::Bad(Reason::SENSOR_FAILURE, _)
        ));
        let mut any = tag(None);
        assert!(matches!(
            any.outcome(&dv(Variant::from(vec![1i32]), StatusCode::Good)),
            Outcome::Bad(Reason::NOT_SUPPORTED, _)
        ));
        assert!(matches!(any.outcome(&dv(Variant::UInt16(3), StatusCode::Good)), Outcome::Good(Value::U64(3), _)));
        assert_eq!(any.kind, Some(DataType::UInt16), "the value's type is learnt for writes");
    }

    #[test]
    fn nodes_that_cannot_serve_a_tag_say_why() {
        let good = |v: Variant| DataValue { value: Some(v), status: Some(StatusCode::Good), ..Default::default() };
        let double = good(Variant::NodeId(Box::new(DataTypeId::Double.into())));
        let scalar = good(Variant::Int32(-1));
        let mut kind = None;
        assert_eq!(node_problem(Some(DataType::Double), Some(&double), Some(&scalar), &mut kind), None);
        assert_eq!(kind, Some(DataType::Double));
        let p = node_problem(Some(DataType::Int32), Some(&double), Some(&scalar), &mut kind).unwrap();
        assert_eq!(p.0, Reason::TYPE_MISMATCH);
        assert!(p.1.contains("holds Double, the tag's data_type is Int32"), "{}", p.1);
        let p = node_problem(None, Some(&double), Some(&good(Variant::Int32(1))), &mut kind).unwrap();
        assert_eq!(p.0, Reason::NOT_SUPPORTED);
        let unknown = DataValue { status: Some(StatusCode::BadNodeIdUnknown), ..Default::default() };
        let p = node_problem(None, Some(&unknown), Some(&unknown), &mut kind).unwrap();
        assert_eq!(p, (Reason::NOT_FOUND, "BadNodeIdUnknown".into()));
    }
}
