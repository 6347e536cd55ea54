//! The WebSocket hub: one lossy bus subscriber collects the newest value of
//! every tag; at most every `ws_push_interval_ms` (at once after a quiet
//! interval) the hub sends each group of clients with the same patterns one
//! shared, already serialized update. Each client
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
//!
//! An update is serialized and framed once per push and the same bytes go
//! to every client that watches it; how they reach each socket is
//! [`outbox`]'s part.

mod outbox;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use gateway_bus::{Bus, BusError, Filter, SubscribeOptions};
use gateway_model::{DataFrame, Frame, FrameKind, TagId, TagPattern};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWrite;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use self::outbox::{OP_CLOSE, OP_PING, Offer, Outbox, RawRead, Writer, WsIo, frame, text};
use crate::cache::LatestCache;
use crate::config::ApiConfig;
use crate::metrics::ApiMetrics;

struct Member {
    out: Arc<Outbox>,
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

/// How long the close frame may take once a connection is ending anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Clients one push writes to before the hub lets other tasks run.
const PUSH_CHUNK: usize = 512;

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
    /// The close frame to send, if the client can still be told.
    fn close_frame(&self) -> Option<Bytes> {
        let (code, reason): (u16, &str) = match self {
            End::Gone => return None,
            End::Heartbeat => (4008, "heartbeat timeout"),
            End::SendTimeout => (4009, "send timeout"),
            End::Flooded => (1008, "too many unread replies"),
            End::Shutdown => (1001, "gateway shutting down"),
        };
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        Some(frame(OP_CLOSE, &payload))
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

fn values_json(frames: &[&DataFrame], snapshot: bool) -> Bytes {
    let v = if snapshot {
        json!({"type": "update", "snapshot": true, "values": frames})
    } else {
        json!({"type": "update", "values": frames})
    };
    text(&v.to_string())
}

/// One push's work, kept between pushes so that a push allocates only its
/// messages: the messages (framed, with their value counts) and every
/// client they go to.
#[derive(Default)]
struct PushWork {
    messages: Vec<(Bytes, u64)>,
    to: Vec<(usize, Arc<Outbox>)>,
}

/// Offers each client its group's message; returns the updates sent and the
/// values dropped. Yields every [`PUSH_CHUNK`] clients so that a push to
/// thousands of clients does not hold its worker thread.
async fn offer_all(messages: &[(Bytes, u64)], to: impl IntoIterator<Item = (usize, Arc<Outbox>)>) -> (u64, u64) {
    let (mut sent, mut dropped) = (0, 0);
    for (n, (i, out)) in to.into_iter().enumerate() {
        if n > 0 && n % PUSH_CHUNK == 0 {
            tokio::task::yield_now().await;
        }
        let Some((bytes, values)) = messages.get(i) else { continue };
        match out.offer_update(bytes, *values) {
            Offer::Sent => sent += 1,
            Offer::Dropped => dropped += values,
            Offer::Queued | Offer::Closed => {}
        }
    }
    (sent, dropped)
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
            let mut work = PushWork::default();
            // The push interval bounds how often clients are written to, not
            // how long a value waits: the first change after a quiet interval
            // goes out at once, and what follows it within the interval is
            // coalesced into the next push.
            let interval = Duration::from_millis(h.inner.cfg.ws_push_interval_ms);
            let now = tokio::time::Instant::now();
            let mut last_push = now.checked_sub(interval).unwrap_or(now);
            let due = tokio::time::sleep_until(last_push);
            let mut due = std::pin::pin!(due);
            let mut armed = false;
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
                            if !armed && !pending.is_empty() {
                                armed = true;
                                due.as_mut().reset(last_push + interval);
                            }
                        }
                        Err(_) => break,
                    },
                    () = due.as_mut(), if armed => {
                        armed = false;
                        last_push = tokio::time::Instant::now();
                        h.push(&pending, &mut work).await;
                        pending.clear();
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

    /// Sends what changed to every client watching it. The clients are
    /// listed under the lock and written to after it, so a subscription
    /// never waits for a push's writes.
    async fn push(&self, pending: &HashMap<TagId, DataFrame, foldhash::fast::RandomState>, work: &mut PushWork) {
        {
            let mut frames: Vec<&DataFrame> = pending.values().collect();
            frames.sort_by(|a, b| a.tag.cmp(&b.tag));
            let groups = lock(&self.inner.groups);
            for g in groups.values() {
                let matching: Vec<&DataFrame> =
                    frames.iter().copied().filter(|f| g.patterns.iter().any(|p| p.matches(f.tag.as_str()))).collect();
                if matching.is_empty() {
                    continue;
                }
                // Serialized and framed once, shared by every member of the group.
                let i = work.messages.len();
                work.messages.push((values_json(&matching, false), matching.len() as u64));
                work.to.extend(g.members.values().map(|m| (i, m.out.clone())));
            }
        }
        // Most of a push is the kernel's loopback path, one `write` per
        // client: with many clients the second half goes to another task,
        // which an idle worker thread takes, so both cores write.
        let (sent, dropped) = if work.to.len() >= 2 * PUSH_CHUNK {
            let half = work.to.split_off(work.to.len() / 2);
            let messages = work.messages.clone();
            let other = tokio::spawn(async move { offer_all(&messages, half).await });
            let mine = offer_all(&work.messages, work.to.drain(..)).await;
            let theirs = other.await.unwrap_or_default();
            (mine.0 + theirs.0, mine.1 + theirs.1)
        } else {
            offer_all(&work.messages, work.to.drain(..)).await
        };
        work.messages.clear();
        self.inner.metrics.ws_messages.inc_by(sent);
        self.inner.metrics.ws_dropped.inc_by(dropped);
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
        let msg = text(&json!({"type": "alarm", "event": f}).to_string());
        for member in members.values() {
            match member.out.offer_update(&msg, 1) {
                Offer::Sent => {
                    self.inner.metrics.ws_messages.inc();
                }
                Offer::Dropped => {
                    self.inner.metrics.ws_dropped.inc();
                }
                Offer::Queued | Offer::Closed => {}
            }
        }
    }

    fn set_patterns(&self, id: u64, old: &BTreeSet<String>, new: &BTreeSet<String>, out: &Arc<Outbox>) {
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
                .insert(id, Member { out: out.clone() });
        }
        self.inner.watched.store(groups.len(), Ordering::Relaxed);
    }

    /// Serves one upgraded connection until the client leaves, goes silent,
    /// stops reading or the gateway stops. On plain TCP the hub writes to the
    /// socket itself (see [`Outbox`]); over TLS through the stream.
    pub(crate) async fn serve_upgraded(self, upgraded: Upgraded, slot: ConnectionSlot) {
        let cfg = &self.inner.cfg;
        let config = WebSocketConfig::default()
            // tungstenite allocates its read buffer up front, 128 KiB by
            // default: 1.3 GB of RSS for 10,000 clients that only ever send
            // a few bytes of subscription. Clients' messages are small, so
            // 1 KiB is plenty; a message over WS_MAX_MESSAGE ends the
            // connection instead of growing memory.
            .read_buffer_size(crate::routes::WS_READ_BUFFER)
            .max_message_size(Some(crate::routes::WS_MAX_MESSAGE))
            .max_frame_size(Some(crate::routes::WS_MAX_MESSAGE))
            .write_buffer_size(0);
        match crate::server::into_raw(upgraded) {
            Ok((raw, read)) => {
                let out = Arc::new(Outbox::new(Some(raw.clone()), cfg.ws_queue));
                let io = WsIo { read: RawRead(raw.clone()), out: out.clone() };
                // Bytes the client sent behind its handshake are read first.
                // `read` is a view into hyper's 8 KiB read buffer and keeps all
                // of it alive: 8 KiB per client for the life of the connection
                // (heaptrack) unless it is copied out and dropped here.
                let early = (!read.is_empty()).then(|| read.to_vec());
                drop(read);
                let ws = match early {
                    None => WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await,
                    Some(bytes) => WebSocketStream::from_partially_read(io, bytes, Role::Server, Some(config)).await,
                };
                self.serve(ws, out, Writer::<tokio::io::Sink>::Raw(raw), slot).await;
            }
            Err(upgraded) => {
                let (r, w) = tokio::io::split(TokioIo::new(upgraded));
                let out = Arc::new(Outbox::new(None, cfg.ws_queue));
                let io = WsIo { read: r, out: out.clone() };
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                self.serve(ws, out, Writer::Io(w), slot).await;
            }
        }
    }

    /// Reading (with the heartbeat) and writing run side by side, so a send
    /// that cannot complete never holds up the heartbeat, and each send has
    /// its own deadline.
    async fn serve<S, E, W>(self, mut stream: S, out: Arc<Outbox>, mut writer: Writer<W>, _slot: ConnectionSlot)
    where
        S: Stream<Item = Result<Message, E>> + Unpin,
        W: AsyncWrite + Unpin,
    {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let cfg = self.inner.cfg.clone();
        let mut patterns: BTreeSet<String> = BTreeSet::new();
        let heartbeat = Duration::from_secs(cfg.ws_heartbeat_timeout_s);
        let send_timeout = Duration::from_secs(cfg.ws_send_timeout_s);
        let mut closing = self.inner.closing.subscribe();
        let raw = matches!(writer, Writer::Raw(_));
        let metrics = self.inner.metrics.clone();

        let writing = async {
            loop {
                out.ready.notified().await;
                let drain = writer.drain(&out);
                // On plain TCP the writer is woken only for what the socket
                // did not take at once, so the deadline is armed each time;
                // otherwise most drains complete at once and arm no timer.
                let mut drain = std::pin::pin!(drain);
                let done = if raw {
                    tokio::time::timeout(send_timeout, drain).await
                } else {
                    match futures_util::poll!(drain.as_mut()) {
                        Poll::Ready(r) => Ok(r),
                        Poll::Pending => tokio::time::timeout(send_timeout, drain).await,
                    }
                };
                match done {
                    Ok(Ok(written)) => {
                        metrics.ws_messages.inc_by(written);
                        if lock(&out.state).closed {
                            return End::Gone;
                        }
                    }
                    Ok(Err(_)) => return End::Gone,
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
                        let msg = match incoming {
                            Some(Ok(Message::Text(t))) => t,
                            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return End::Gone,
                            Some(Ok(_)) => {
                                last_seen = Instant::now();
                                continue;
                            }
                        };
                        last_seen = Instant::now();
                        for r in self.handle(id, &msg, &mut patterns, &out) {
                            if out.offer_control(r).is_err() {
                                return End::Flooded;
                            }
                        }
                    }
                    _ = check.tick() => {
                        if last_seen.elapsed() >= heartbeat {
                            return End::Heartbeat;
                        }
                        // A full queue already holds a ping or replies the client has not read.
                        let _ = out.offer_control(frame(OP_PING, &[]));
                    }
                    _ = closing.wait_for(|c| *c) => return End::Shutdown,
                }
            }
        };

        let end = tokio::select! {
            e = writing => e,
            e = reader => e,
        };
        match end {
            End::Gone | End::Shutdown => {}
            End::Heartbeat => tracing::info!(client = id, "Closing a silent WebSocket client."),
            End::SendTimeout | End::Flooded => {
                tracing::info!(client = id, reason = ?end, "Closing a WebSocket client that does not read.")
            }
        }
        self.set_patterns(id, &patterns, &BTreeSet::new(), &out);
        lock(&self.inner.alarm_members).remove(&id);
        // What is queued (a reply to the client's close, say) and the close
        // frame go out if the socket takes them soon; nothing else is queued.
        out.close(end.close_frame());
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.drain(&out)).await;
    }

    fn handle(&self, id: u64, msg: &str, patterns: &mut BTreeSet<String>, out: &Arc<Outbox>) -> Vec<Bytes> {
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
            vec![text(&json!({"type": "error", "code": code, "message": message}).to_string())]
        };
        let msg: In = match serde_json::from_str(msg) {
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
            In::Ping { id } => vec![text(&json!({"type": "pong", "id": id}).to_string())],
            In::SubscribeAlarms => {
                lock(&self.inner.alarm_members).insert(id, Member { out: out.clone() });
                let active = self.inner.alarms.get().map(|a| a.active());
                let alarms = active.as_ref().map_or(&[][..], |a| &a.alarms[..]);
                vec![
                    text(r#"{"type":"alarms_subscribed"}"#),
                    text(&json!({"type": "alarms", "snapshot": true, "alarms": alarms}).to_string()),
                ]
            }
            In::UnsubscribeAlarms => {
                lock(&self.inner.alarm_members).remove(&id);
                vec![text(r#"{"type":"alarms_unsubscribed"}"#)]
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
                self.set_patterns(id, &old, patterns, out);
                let snapshot = self.inner.cache.matching_any(&compiled);
                let refs: Vec<&DataFrame> = snapshot.iter().collect();
                vec![
                    text(&json!({"type": "subscribed", "patterns": patterns.iter().collect::<Vec<_>>()}).to_string()),
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
                self.set_patterns(id, &old, patterns, out);
                vec![text(
                    &json!({"type": "unsubscribed", "patterns": patterns.iter().collect::<Vec<_>>()}).to_string(),
                )]
            }
        }
    }
}
