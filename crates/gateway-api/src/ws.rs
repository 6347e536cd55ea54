//! The WebSocket hub: one lossy bus subscriber collects the newest value of
//! every tag; every `ws_push_interval_ms` the hub sends each group of clients
//! with the same patterns one shared, already serialized update. Each client
//! has a bounded queue: a slow client loses updates (counted, and told) and
//! never slows the bus or the other clients.
//!
//! Protocol (JSON text messages):
//!
//! ```text
//! → {"type":"subscribe","patterns":["line1.*"]}   ← {"type":"subscribed","patterns":[...]}
//!                                                 ← {"type":"update","snapshot":true,"values":[...]}
//! → {"type":"unsubscribe","patterns":[...]}       ← {"type":"unsubscribed","patterns":[remaining]}
//!   (no patterns: all)
//! → {"type":"ping","id":7}                        ← {"type":"pong","id":7}
//! → {"type":"subscribe_alarms"}                   ← {"type":"alarms_subscribed"}
//!                                                 ← {"type":"alarms","snapshot":true,"alarms":[...active]}
//!                                                 ← {"type":"alarm","event":{...transition}}
//! → {"type":"unsubscribe_alarms"}                 ← {"type":"alarms_unsubscribed"}
//!                                                 ← {"type":"update","values":[{"tag","value","quality","ts"}]}
//!                                                 ← {"type":"dropped","updates":12}  (before the next update)
//!                                                 ← {"type":"error","code","message"}
//! ```
//!
//! The server pings every `ws_cleanup_interval_s`; a client from which
//! nothing (not even a pong) arrived for `ws_heartbeat_timeout_s` is closed
//! with code 4008, even while a message to it is stuck. A message the client
//! does not take within `ws_send_timeout_s` ends the connection (code 4009
//! if it can still be told): a client that stops reading frees its slot.
//! A client holds at most `ws_max_patterns` distinct patterns; a subscribe
//! that would exceed it is refused whole with `too_many_patterns`. Replies
//! to a client's own messages wait in a short queue; a client that keeps
//! sending without reading them is closed (1008). At shutdown every client
//! gets 1001.
//!
//! Alarm transitions are not coalesced like values: each one is sent, in
//! order, to every client subscribed to alarms (serialized once). A client
//! too slow for them is told `dropped` like for values; subscribing to
//! alarms again gives it a fresh snapshot of the active ones.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use gateway_bus::{Bus, BusError, Filter, SubscribeOptions};
use gateway_model::{DataFrame, Frame, FrameKind, TagId, TagPattern};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::cache::LatestCache;
use crate::config::ApiConfig;
use crate::metrics::ApiMetrics;

struct Member {
    tx: mpsc::Sender<Utf8Bytes>,
    dropped: Arc<AtomicU64>,
}

struct Group {
    patterns: Vec<TagPattern>,
    members: HashMap<u64, Member>,
}

struct HubInner {
    cfg: ApiConfig,
    metrics: Arc<ApiMetrics>,
    cache: Arc<LatestCache>,
    connections: AtomicUsize,
    next_id: AtomicU64,
    /// Clients grouped by their (sorted) pattern set.
    groups: Mutex<HashMap<String, Group>>,
    /// Groups now: with none, the hub collects nothing (no work for tags
    /// nobody watches).
    watched: AtomicUsize,
    /// Set once, at shutdown: every client is closed.
    closing: tokio::sync::watch::Sender<bool>,
    /// Clients subscribed to alarm transitions.
    alarm_members: Mutex<HashMap<u64, Member>>,
    /// Where the snapshot of active alarms comes from (set once the alarm
    /// service runs; without it, alarm subscriptions get an empty one).
    alarms: std::sync::OnceLock<gateway_alarms::AlarmService>,
}

/// Replies and pings waiting for a client at most.
const CONTROL_QUEUE: usize = 16;

/// How long the close frame may take once a connection is ending anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a client's connection ends.
#[derive(Debug)]
enum End {
    /// The client closed, or the connection broke.
    Gone,
    /// Nothing arrived for `ws_heartbeat_timeout_s`.
    Heartbeat,
    /// A message was not taken within `ws_send_timeout_s`.
    SendTimeout,
    /// Replies piled up: the client sends but does not read.
    Flooded,
    /// The gateway is stopping.
    Shutdown,
}

impl End {
    fn close_frame(&self) -> Option<CloseFrame> {
        let (code, reason): (u16, &str) = match self {
            End::Gone => return None,
            End::Heartbeat => (4008, "heartbeat timeout"),
            End::SendTimeout => (4009, "send timeout"),
            End::Flooded => (1008, "too many unread replies"),
            End::Shutdown => (1001, "gateway shutting down"),
        };
        Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) })
    }
}

/// The WebSocket hub. Cheap to clone.
#[derive(Clone)]
pub struct WsHub {
    inner: Arc<HubInner>,
}

impl std::fmt::Debug for WsHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsHub").field("connections", &self.connections()).finish()
    }
}

/// One of the `ws_max_connections` WebSocket slots, held for the life of a
/// connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    hub: WsHub,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.hub.inner.connections.fetch_sub(1, Ordering::AcqRel);
        self.hub.inner.metrics.ws_connections.dec();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Messages one connection's writer takes in one batch at most, so a
/// client with a long queue still sees its control replies and pings soon.
const WRITE_BATCH: usize = 64;

/// What a connection's writer sends.
enum Out {
    /// A reply or a ping, from the reader.
    Control(Message),
    /// Values from the hub.
    Update(Utf8Bytes),
}

fn values_json(frames: &[&DataFrame], snapshot: bool) -> Utf8Bytes {
    let v = if snapshot {
        json!({"type": "update", "snapshot": true, "values": frames})
    } else {
        json!({"type": "update", "values": frames})
    };
    Utf8Bytes::from(v.to_string())
}

impl WsHub {
    /// Starts the hub's bus subscriber and push loop.
    pub fn spawn(
        bus: &Bus,
        cfg: ApiConfig,
        metrics: Arc<ApiMetrics>,
        cache: Arc<LatestCache>,
    ) -> Result<WsHub, BusError> {
        let hub = WsHub {
            inner: Arc::new(HubInner {
                cfg,
                metrics,
                cache,
                connections: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                groups: Mutex::new(HashMap::new()),
                watched: AtomicUsize::new(0),
                closing: tokio::sync::watch::Sender::new(false),
                alarm_members: Mutex::new(HashMap::new()),
                alarms: std::sync::OnceLock::new(),
            }),
        };
        let filter = Filter::all().kinds([FrameKind::Data, FrameKind::Event]);
        let mut sub = bus.subscribe(SubscribeOptions::lossy("ws-hub", 1 << 20).filter(filter))?;
        let h = hub.clone();
        tokio::spawn(async move {
            let mut pending: HashMap<TagId, DataFrame, foldhash::fast::RandomState> = HashMap::default();
            let mut tick = tokio::time::interval(Duration::from_millis(h.inner.cfg.ws_push_interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    d = sub.recv() => match d {
                        Ok(d) => {
                            let watched = h.inner.watched.load(Ordering::Relaxed) > 0;
                            for (_, f) in d.frames() {
                                if let Frame::Event(e) = f {
                                    if e.alarm.is_some() {
                                        h.push_alarm(f);
                                    }
                                    continue;
                                }
                                if !watched {
                                    continue;
                                }
                                if let Frame::Data(df) = f {
                                    match pending.get_mut(&df.tag) {
                                        Some(slot) => slot.update_from(df),
                                        None => {
                                            pending.insert(df.tag.clone(), df.clone());
                                        }
                                    }
                                }
                            }
                        }
                        Err(_) => break,
                    },
                    _ = tick.tick() => {
                        if !pending.is_empty() {
                            h.push(&pending);
                            pending.clear();
                        }
                    }
                }
            }
        });
        Ok(hub)
    }

    /// WebSocket connections holding a slot now, at most `ws_max_connections`.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Acquire)
    }

    /// Closes every client (code 1001) and every client that connects from
    /// now on: the gateway is stopping.
    pub fn close_all(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Takes a connection slot, or `None` at `ws_max_connections`.
    pub fn try_acquire(&self) -> Option<ConnectionSlot> {
        let max = self.inner.cfg.ws_max_connections;
        let taken = self
            .inner
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_ok();
        if taken {
            self.inner.metrics.ws_connections.inc();
            Some(ConnectionSlot { hub: self.clone() })
        } else {
            self.inner.metrics.ws_refused.inc();
            None
        }
    }

    fn push(&self, pending: &HashMap<TagId, DataFrame, foldhash::fast::RandomState>) {
        let mut frames: Vec<&DataFrame> = pending.values().collect();
        frames.sort_by(|a, b| a.tag.cmp(&b.tag));
        let groups = lock(&self.inner.groups);
        let m = &self.inner.metrics;
        for g in groups.values() {
            let matching: Vec<&DataFrame> =
                frames.iter().copied().filter(|f| g.patterns.iter().any(|p| p.matches(f.tag.as_str()))).collect();
            if matching.is_empty() {
                continue;
            }
            // Serialized once, shared by every member of the group.
            let msg = values_json(&matching, false);
            for member in g.members.values() {
                match member.tx.try_send(msg.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        member.dropped.fetch_add(matching.len() as u64, Ordering::Relaxed);
                        m.ws_dropped.inc_by(matching.len() as u64);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
    }

    /// Lets alarm subscribers have a snapshot of the active alarms.
    pub fn attach_alarms(&self, service: gateway_alarms::AlarmService) {
        let _ = self.inner.alarms.set(service);
    }

    /// Sends one alarm transition to every client subscribed to alarms.
    fn push_alarm(&self, f: &Frame) {
        let members = lock(&self.inner.alarm_members);
        if members.is_empty() {
            return;
        }
        let msg = Utf8Bytes::from(json!({"type": "alarm", "event": f}).to_string());
        for member in members.values() {
            if let Err(mpsc::error::TrySendError::Full(_)) = member.tx.try_send(msg.clone()) {
                member.dropped.fetch_add(1, Ordering::Relaxed);
                self.inner.metrics.ws_dropped.inc();
            }
        }
    }

    fn set_patterns(&self, id: u64, old: &BTreeSet<String>, new: &BTreeSet<String>, member: Member) {
        let key = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join("\n");
        let mut groups = lock(&self.inner.groups);
        if !old.is_empty() {
            let k = key(old);
            if let Some(g) = groups.get_mut(&k) {
                g.members.remove(&id);
                if g.members.is_empty() {
                    groups.remove(&k);
                }
            }
        }
        if !new.is_empty() {
            let patterns = new.iter().filter_map(|p| TagPattern::new(p).ok()).collect();
            groups
                .entry(key(new))
                .or_insert_with(|| Group { patterns, members: HashMap::new() })
                .members
                .insert(id, member);
        }
        self.inner.watched.store(groups.len(), Ordering::Relaxed);
    }

    /// Serves one client over any message sink and stream (the WebSocket in
    /// production, channels in tests) until it leaves, goes silent, stops
    /// reading or the gateway stops. Reading (with the heartbeat) and writing
    /// run side by side, so a send that cannot complete never holds up the
    /// heartbeat, and each send has its own deadline.
    pub async fn serve<S, E>(self, socket: S, _slot: ConnectionSlot)
    where
        S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
    {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let cfg = self.inner.cfg.clone();
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(cfg.ws_queue);
        // Boxed: a channel allocates a block of 32 slots at once, and control
        // messages (replies, pings) are rare; 32 pointers instead of 32
        // messages is 1.3 KB less per connection.
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<Box<Message>>(CONTROL_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut patterns: BTreeSet<String> = BTreeSet::new();
        let heartbeat = Duration::from_secs(cfg.ws_heartbeat_timeout_s);
        let send_timeout = Duration::from_secs(cfg.ws_send_timeout_s);
        let mut closing = self.inner.closing.subscribe();
        let metrics = self.inner.metrics.clone();

        let writer = async {
            let mut reported = 0u64;
            loop {
                let first = tokio::select! {
                    biased;
                    Some(m) = ctl_rx.recv() => Out::Control(*m),
                    Some(update) = rx.recv() => Out::Update(update),
                    else => return End::Gone,
                };
                // What is queued already goes out with it, flushed once: one
                // write per client per push, however many messages wait.
                let batch = async {
                    let mut updates = 0u64;
                    let mut next = Some(first);
                    let mut room = WRITE_BATCH;
                    while let Some(out) = next.take() {
                        match out {
                            Out::Control(m) => sink.feed(m).await.map_err(|_| ())?,
                            Out::Update(update) => {
                                let d = dropped.load(Ordering::Relaxed);
                                if d > reported {
                                    let note = json!({"type": "dropped", "updates": d - reported}).to_string();
                                    reported = d;
                                    sink.feed(Message::Text(note.into())).await.map_err(|_| ())?;
                                }
                                sink.feed(Message::Text(update)).await.map_err(|_| ())?;
                                updates += 1;
                            }
                        }
                        room -= 1;
                        if room > 0 {
                            next = ctl_rx
                                .try_recv()
                                .ok()
                                .map(|m| Out::Control(*m))
                                .or_else(|| rx.try_recv().ok().map(Out::Update));
                        }
                    }
                    sink.flush().await.map_err(|_| ())?;
                    Ok::<u64, ()>(updates)
                };
                // Most writes complete at once (the socket has room): arm the
                // send deadline only for one that has to wait, so the common
                // case costs no timer registration per client per push.
                let mut batch = std::pin::pin!(batch);
                let done = match futures_util::poll!(batch.as_mut()) {
                    std::task::Poll::Ready(r) => Ok(r),
                    std::task::Poll::Pending => tokio::time::timeout(send_timeout, batch).await,
                };
                match done {
                    Ok(Ok(updates)) => {
                        metrics.ws_messages.inc_by(updates);
                    }
                    Ok(Err(())) => return End::Gone,
                    Err(_) => return End::SendTimeout,
                }
            }
        };

        let reader = async {
            let mut last_seen = Instant::now();
            let mut check = tokio::time::interval(Duration::from_secs(cfg.ws_cleanup_interval_s));
            check.reset();
            loop {
                tokio::select! {
                    incoming = stream.next() => {
                        let text = match incoming {
                            Some(Ok(Message::Text(t))) => t,
                            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return End::Gone,
                            Some(Ok(_)) => {
                                last_seen = Instant::now();
                                continue;
                            }
                        };
                        last_seen = Instant::now();
                        for r in self.handle(id, &text, &mut patterns, &tx, &dropped) {
                            if ctl_tx.try_send(Box::new(Message::Text(r))).is_err() {
                                return End::Flooded;
                            }
                        }
                    }
                    _ = check.tick() => {
                        if last_seen.elapsed() >= heartbeat {
                            return End::Heartbeat;
                        }
                        // A full queue already holds a ping or replies the client has not read.
                        let _ = ctl_tx.try_send(Box::new(Message::Ping(Default::default())));
                    }
                    _ = closing.wait_for(|c| *c) => return End::Shutdown,
                }
            }
        };

        let end = tokio::select! {
            e = writer => e,
            e = reader => e,
        };
        match end {
            End::Gone | End::Shutdown => {}
            End::Heartbeat => tracing::info!(client = id, "Closing a silent WebSocket client."),
            End::SendTimeout | End::Flooded => {
                tracing::info!(client = id, reason = ?end, "Closing a WebSocket client that does not read.")
            }
        }
        if let Some(frame) = end.close_frame() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
        }
        self.set_patterns(id, &patterns, &BTreeSet::new(), Member { tx, dropped });
        lock(&self.inner.alarm_members).remove(&id);
    }

    fn handle(
        &self,
        id: u64,
        text: &str,
        patterns: &mut BTreeSet<String>,
        tx: &mpsc::Sender<Utf8Bytes>,
        dropped: &Arc<AtomicU64>,
    ) -> Vec<Utf8Bytes> {
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        enum In {
            Subscribe {
                patterns: Vec<String>,
            },
            Unsubscribe {
                #[serde(default)]
                patterns: Option<Vec<String>>,
            },
            Ping {
                #[serde(default)]
                id: Option<serde_json::Value>,
            },
            SubscribeAlarms,
            UnsubscribeAlarms,
        }
        let err = |code: &str, message: String| {
            vec![Utf8Bytes::from(json!({"type": "error", "code": code, "message": message}).to_string())]
        };
        let msg: In = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                return err(
                    "invalid_message",
                    format!("{e}; expected subscribe, unsubscribe, subscribe_alarms, unsubscribe_alarms or ping"),
                );
            }
        };
        let old = patterns.clone();
        match msg {
            In::Ping { id } => vec![Utf8Bytes::from(json!({"type": "pong", "id": id}).to_string())],
            In::SubscribeAlarms => {
                lock(&self.inner.alarm_members).insert(id, Member { tx: tx.clone(), dropped: dropped.clone() });
                let active = self.inner.alarms.get().map(|a| a.active());
                let alarms = active.as_ref().map_or(&[][..], |a| &a.alarms[..]);
                vec![
                    Utf8Bytes::from_static(r#"{"type":"alarms_subscribed"}"#),
                    Utf8Bytes::from(json!({"type": "alarms", "snapshot": true, "alarms": alarms}).to_string()),
                ]
            }
            In::UnsubscribeAlarms => {
                lock(&self.inner.alarm_members).remove(&id);
                vec![Utf8Bytes::from_static(r#"{"type":"alarms_unsubscribed"}"#)]
            }
            In::Subscribe { patterns: add } => {
                let max = self.inner.cfg.ws_max_patterns;
                let add: BTreeSet<String> = add.into_iter().collect();
                let after = patterns.len() + add.iter().filter(|p| !patterns.contains(*p)).count();
                if after > max {
                    return err(
                        "too_many_patterns",
                        format!(
                            "a client may hold at most {max} distinct patterns (ws_max_patterns); this subscription would make {after}"
                        ),
                    );
                }
                let mut compiled = Vec::with_capacity(add.len());
                for p in &add {
                    match TagPattern::new(p) {
                        Ok(c) => compiled.push(c),
                        Err(e) => return err("invalid_pattern", e.to_string()),
                    }
                }
                patterns.extend(add);
                self.set_patterns(id, &old, patterns, Member { tx: tx.clone(), dropped: dropped.clone() });
                let snapshot = self.inner.cache.matching_any(&compiled);
                let refs: Vec<&DataFrame> = snapshot.iter().collect();
                vec![
                    Utf8Bytes::from(
                        json!({"type": "subscribed", "patterns": patterns.iter().collect::<Vec<_>>()}).to_string(),
                    ),
                    values_json(&refs, true),
                ]
            }
            In::Unsubscribe { patterns: remove } => {
                match remove {
                    Some(r) => {
                        for p in r {
                            patterns.remove(&p);
                        }
                    }
                    None => patterns.clear(),
                }
                self.set_patterns(id, &old, patterns, Member { tx: tx.clone(), dropped: dropped.clone() });
                vec![Utf8Bytes::from(
                    json!({"type": "unsubscribed", "patterns": patterns.iter().collect::<Vec<_>>()}).to_string(),
                )]
            }
        }
    }
}
