//! The connector's own MQTT 3.1.1 client: one task owns the connection and
//! writes every message queued since its last turn in one `write`, and
//! reports what happened as [`LinkEvent`]s, one at a time, like rumqttc's
//! event loop (which still serves MQTT 5).
//!
//! **Why not rumqttc for 3.1.1.** Profiled on the plant-to-broker job (20
//! devices polled on one 10 ms grid, 2,000 publishes a second), rumqttc's
//! event loop was a fifth of the gateway's CPU: it takes one request per
//! turn and writes and flushes it on its own, so the 20 publishes of one
//! poll cost 20 `writev`s (each running the broker's TCP receive path in our
//! process, over loopback) and 20 turns of its `select!`, each arming a
//! timeout and boxing a timer. Here a turn drains the whole queue into one
//! buffer, so a burst costs one write.
//!
//! **The contract kept** (what `delivery.rs` relies on): a message handed
//! over is reported `Written(pkid)` once all its bytes went to the socket,
//! in the order messages were handed over, before the broker can have
//! confirmed it; a QoS 0 message reports packet id 0. When the broker keeps
//! the session, unconfirmed QoS 1 and 2 messages are sent again (flagged as
//! duplicates, or as PUBREL past PUBREC), and messages not yet reported as
//! written are written and reported then, in their order; without a session
//! everything held is dropped before the `ConnAck` is reported, as the
//! delivery state drops it too.
//!
//! Packets are encoded and decoded with rumqttc's `mqttbytes` (3.1.1).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, PubRel, Publish, Subscribe,
    SubscribeReasonCode,
};
use rumqttc::mqttbytes::{Error as WireError, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::link::LinkEvent;

/// The TCP (and TLS) connection and CONNACK must come within this.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A write that makes no progress for this long means the broker stopped reading.
pub(super) const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read per `read` at least; a larger packet grows the buffer.
const READ_CHUNK: usize = 8 * 1024;
/// Encoded bytes waiting for the socket, at most, before more queued
/// requests are encoded (one packet may pass it). Replaying a backlog
/// queues a whole window of messages at once: encoded in one go they grew
/// the write buffer to 28 MB, kept for the life of the connection. A write
/// of this size is still many packets per system call.
const WRITE_AHEAD: usize = 256 * 1024;
/// An empty write buffer larger than this (the unconfirmed messages sent
/// again after a reconnect, all at once) is given back.
const WRITE_KEEP: usize = 4 * WRITE_AHEAD;

/// A request from the connector.
pub(super) enum Request {
    Publish(Publish),
    Subscribe(String),
    Disconnect,
}

/// Requests queued by the connector for the connection task: bounded, and
/// shared, so queueing is a lock and a wake-up, never a wait.
pub(super) struct Outbox {
    queue: Mutex<VecDeque<Request>>,
    cap: usize,
    wake: tokio::sync::Notify,
}

impl Outbox {
    pub(super) fn new(cap: usize) -> Arc<Outbox> {
        Arc::new(Outbox { queue: Mutex::new(VecDeque::with_capacity(cap)), cap, wake: tokio::sync::Notify::new() })
    }

    /// Queues a request; `false` when `cap` are waiting already (a
    /// DISCONNECT is always taken: it must not wait behind a full queue).
    pub(super) fn push(&self, r: Request) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= self.cap && !matches!(r, Request::Disconnect) {
            return false;
        }
        let was_empty = q.is_empty();
        q.push_back(r);
        drop(q);
        if was_empty {
            self.wake.notify_one();
        }
        true
    }

    fn take_all(&self, into: &mut VecDeque<Request>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        into.append(&mut q);
    }

    fn clear(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// How to reach and greet the broker.
pub(super) struct Settings {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    pub clean: bool,
    pub credentials: Option<(String, String)>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub max_packet: usize,
    /// For the TCP (and TLS) connection and the CONNACK ([`CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// For a write that makes no progress ([`STALL_TIMEOUT`]).
    pub stall_timeout: Duration,
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Where a message sent with QoS 1 or 2 stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent,
    /// QoS 2, PUBREC received: waiting for PUBCOMP.
    Released,
}

struct Unconfirmed {
    publish: Publish,
    stage: Stage,
}

/// A message whose bytes are in the write buffer but not yet all written:
/// reported as written once the connection's byte count passes `end`.
struct Mark {
    end: u64,
    pkid: u16,
    /// A QoS 0 message keeps its content here (it is held nowhere else) so
    /// a resumed session can still write it in its turn.
    qos0: Option<Publish>,
}

/// One live connection.
struct Conn {
    rd: tokio::io::ReadHalf<Box<dyn Stream>>,
    wr: tokio::io::WriteHalf<Box<dyn Stream>>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Bytes handed to the socket on this connection so far (a message's
    /// [`Mark`] is `written + wbuf.len()` just after it was encoded).
    written: u64,
    next_ping: Option<Instant>,
    ping_unanswered: bool,
    /// When the current write started waiting (no progress since).
    stalled_since: Option<Instant>,
    disconnecting: bool,
}

/// The client: settings, session state that outlives a connection, and the
/// connection while there is one.
pub(super) struct Client {
    settings: Settings,
    pub(super) will: Option<(String, Vec<u8>)>,
    outbox: Arc<Outbox>,
    /// Taken from the outbox, not yet encoded.
    requests: VecDeque<Request>,
    /// Sent with QoS 1 or 2 and not yet confirmed, oldest first.
    unconfirmed: VecDeque<Unconfirmed>,
    /// Packet ids of `unconfirmed` and of subscriptions awaiting SUBACK.
    in_use: HashSet<u16>,
    next_pkid: u16,
    /// Not yet reported as written, in the order handed over.
    marks: VecDeque<Mark>,
    /// QoS 2 messages from the broker received and not yet released.
    incoming_qos2: HashSet<u16>,
    events: VecDeque<LinkEvent>,
    conn: Option<Conn>,
    done: bool,
    /// Writes to the socket so far (the tests check that a burst is one write).
    writes: u64,
    /// Messages that cannot be sent, refused once reported as written.
    refused: Vec<(u16, String)>,
}

impl Client {
    pub(super) fn new(settings: Settings, will: Option<(String, Vec<u8>)>, outbox: Arc<Outbox>) -> Client {
        Client {
            settings,
            will,
            outbox,
            requests: VecDeque::new(),
            unconfirmed: VecDeque::new(),
            in_use: HashSet::new(),
            next_pkid: 0,
            marks: VecDeque::new(),
            incoming_qos2: HashSet::new(),
            events: VecDeque::new(),
            conn: None,
            done: false,
            writes: 0,
            refused: Vec::new(),
        }
    }

    /// The next event: connects first when there is no connection (the
    /// caller backs off after an error). Never pends forever while
    /// connected: keep-alive and stalled writes end in an error.
    pub(super) async fn poll(&mut self) -> Result<LinkEvent, String> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            if self.done {
                // After a clean DISCONNECT the connection is over for good.
                std::future::pending::<()>().await;
            }
            let step = match self.conn.is_some() {
                false => self.connect().await,
                true => self.step().await,
            };
            if let Err(e) = step {
                self.conn = None;
                return Err(e);
            }
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        let s = &self.settings;
        let connect_timeout = s.connect_timeout;
        let stream = tokio::time::timeout(connect_timeout, open(s))
            .await
            .map_err(|_| format!("no connection to {}:{} within {connect_timeout:?}", s.host, s.port))??;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let keep_alive = u16::try_from(s.keep_alive.as_secs()).unwrap_or(u16::MAX);
        let mut connect = Connect::new(s.client_id.clone());
        connect.keep_alive = keep_alive;
        connect.clean_session = s.clean;
        if let Some((u, p)) = &s.credentials {
            connect.set_login(u.clone(), p.clone());
        }
        if let Some((topic, payload)) = &self.will {
            connect.last_will = Some(LastWill::new(topic.clone(), payload.clone(), QoS::AtLeastOnce, false));
        }
        let mut wbuf = BytesMut::with_capacity(READ_CHUNK);
        Packet::Connect(connect).write(&mut wbuf, s.max_packet).map_err(|e| format!("CONNECT: {e}"))?;
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        let max_packet = s.max_packet;
        let handshake = async {
            wr.write_all(&wbuf).await.map_err(|e| format!("writing CONNECT: {e}"))?;
            wr.flush().await.map_err(|e| format!("writing CONNECT: {e}"))?;
            loop {
                match Packet::read(&mut rbuf, max_packet) {
                    Ok(Packet::ConnAck(a)) => return Ok(a),
                    Ok(p) => return Err(format!("the broker answered CONNECT with {p:?}")),
                    Err(WireError::InsufficientBytes(n)) => {
                        rbuf.reserve(n.max(64));
                        if rd.read_buf(&mut rbuf).await.map_err(|e| format!("reading CONNACK: {e}"))? == 0 {
                            return Err("the broker closed the connection before CONNACK".to_string());
                        }
                    }
                    Err(e) => return Err(format!("bad CONNACK: {e}")),
                }
            }
        };
        let ConnAck { session_present, code } = tokio::time::timeout(connect_timeout, handshake)
            .await
            .map_err(|_| format!("no CONNACK within {connect_timeout:?}"))??;
        if code != ConnectReturnCode::Success {
            return Err(format!("the broker refused the connection: {code:?}"));
        }
        wbuf.clear();
        let now = Instant::now();
        let mut conn = Conn {
            rd,
            wr,
            rbuf,
            wbuf,
            written: 0,
            next_ping: (keep_alive > 0).then(|| now + s.keep_alive),
            ping_unanswered: false,
            stalled_since: None,
            disconnecting: false,
        };
        // A broker claiming a session after a clean start breaks the protocol;
        // either way, what counts is what this client kept.
        let session_present = session_present && !s.clean;
        if session_present {
            // Subscriptions not yet acknowledged are made again by the
            // connector on every ConnAck: their ids are free.
            self.in_use = self.unconfirmed.iter().map(|u| u.publish.pkid).collect();
            self.resend(&mut conn)?;
        } else {
            // A new session: the broker holds nothing of ours, and the
            // delivery state drops everything too when it reads the ConnAck.
            self.requests.clear();
            self.outbox.clear();
            self.unconfirmed.clear();
            self.in_use.clear();
            self.marks.clear();
            self.refused.clear();
            self.incoming_qos2.clear();
        }
        self.conn = Some(conn);
        self.events.push_back(LinkEvent::ConnAck { session_present });
        Ok(())
    }

    /// A resumed session: everything unconfirmed goes out again, oldest
    /// first, and what was never reported as written is written and
    /// reported now, in its order.
    fn resend(&mut self, conn: &mut Conn) -> Result<(), String> {
        let max = self.settings.max_packet;
        let unreported: HashSet<u16> = self.marks.iter().filter(|m| m.qos0.is_none()).map(|m| m.pkid).collect();
        for u in self.unconfirmed.iter().filter(|u| !unreported.contains(&u.publish.pkid)) {
            encode_unconfirmed(u, &mut conn.wbuf, max)?;
        }
        let old = std::mem::take(&mut self.marks);
        for m in old {
            let publish = match m.qos0 {
                Some(p) => Some(p),
                None => self.unconfirmed.iter().find(|u| u.publish.pkid == m.pkid).map(|u| {
                    let mut p = u.publish.clone();
                    p.dup = u.stage == Stage::Sent;
                    p
                }),
            };
            // One that could not be sent (too large) has nothing to resend
            // but is still reported in its turn.
            let Some(p) = publish else {
                self.marks.push_back(Mark { end: conn.wbuf.len() as u64, pkid: m.pkid, qos0: None });
                continue;
            };
            let qos0 = (p.qos == QoS::AtMostOnce).then(|| p.clone());
            Packet::Publish(p).write(&mut conn.wbuf, max).map_err(|e| format!("PUBLISH: {e}"))?;
            self.marks.push_back(Mark { end: conn.wbuf.len() as u64, pkid: m.pkid, qos0 });
        }
        Ok(())
    }

    /// Moves queued requests into the write buffer.
    fn encode_requests(&mut self) -> Result<(), String> {
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        if conn.disconnecting {
            return Ok(());
        }
        self.outbox.take_all(&mut self.requests);
        let max = self.settings.max_packet;
        // The rest waits in `requests`, in order: the buffer is not empty,
        // so the next turn writes and then encodes more.
        while conn.wbuf.len() < WRITE_AHEAD
            && let Some(r) = self.requests.pop_front()
        {
            match r {
                Request::Publish(mut p) => {
                    let qos0 = if p.qos == QoS::AtMostOnce {
                        p.pkid = 0;
                        Some(p.clone())
                    } else {
                        self.next_pkid = next_free(self.next_pkid, &self.in_use);
                        p.pkid = self.next_pkid;
                        None
                    };
                    let pkid = p.pkid;
                    if let Err(e) = Packet::Publish(p.clone()).write(&mut conn.wbuf, max) {
                        // Larger than a packet may be: it can never go out. It
                        // is reported in its turn, so later packet ids still
                        // pair with their messages, and refused (QoS 0: gone),
                        // so the delivery state decides its fate as for a
                        // broker's refusal instead of waiting for a PUBACK.
                        tracing::error!(topic = %p.topic, error = %e, "An MQTT message is too large to send.");
                        self.marks.push_back(Mark { end: conn.written + conn.wbuf.len() as u64, pkid, qos0: None });
                        if pkid != 0 {
                            self.refused.push((pkid, e.to_string()));
                        }
                        continue;
                    }
                    if pkid != 0 {
                        self.in_use.insert(pkid);
                        self.unconfirmed.push_back(Unconfirmed { publish: p, stage: Stage::Sent });
                    }
                    self.marks.push_back(Mark { end: conn.written + conn.wbuf.len() as u64, pkid, qos0 });
                }
                Request::Subscribe(topic) => {
                    let pkid = next_free(self.next_pkid, &self.in_use);
                    self.next_pkid = pkid;
                    self.in_use.insert(pkid);
                    let mut s = Subscribe::new(topic, QoS::AtLeastOnce);
                    s.pkid = pkid;
                    Packet::Subscribe(s).write(&mut conn.wbuf, max).map_err(|e| format!("SUBSCRIBE: {e}"))?;
                }
                Request::Disconnect => {
                    Packet::Disconnect.write(&mut conn.wbuf, max).map_err(|e| format!("DISCONNECT: {e}"))?;
                    conn.disconnecting = true;
                    // Nothing after a goodbye.
                    self.requests.clear();
                    break;
                }
            }
        }
        Ok(())
    }

    /// One turn: take queued requests, then read, write or ping, whichever is ready first.
    async fn step(&mut self) -> Result<(), String> {
        self.encode_requests()?;
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        // A message that could not be encoded, with nothing before it to write.
        report_written(&mut self.marks, &mut self.refused, &mut self.events, conn.written + conn.wbuf.len() as u64);
        let keep_alive = self.settings.keep_alive;
        let pending_write = !conn.wbuf.is_empty();
        if pending_write && conn.stalled_since.is_none() {
            conn.stalled_since = Some(Instant::now());
        }
        let stall_timeout = self.settings.stall_timeout;
        let stall_at = conn.stalled_since.map(|t| t + stall_timeout);
        let (next_ping, disconnecting) = (conn.next_ping, conn.disconnecting);
        if conn.rbuf.capacity() - conn.rbuf.len() < READ_CHUNK / 2 {
            conn.rbuf.reserve(READ_CHUNK);
        }
        let Conn { rd, wr, rbuf, wbuf, .. } = &mut *conn;
        enum Ready {
            Read(std::io::Result<usize>),
            Wrote(std::io::Result<usize>),
            Woken,
            Ping,
            Stalled,
        }
        let ready = tokio::select! {
            biased;
            r = rd.read_buf(rbuf) => Ready::Read(r),
            w = wr.write(wbuf), if pending_write => Ready::Wrote(w),
            _ = self.outbox.wake.notified(), if !pending_write && !disconnecting => Ready::Woken,
            _ = sleep_until(next_ping) => Ready::Ping,
            _ = sleep_until(stall_at) => Ready::Stalled,
        };
        match ready {
            Ready::Read(Ok(0)) => Err("the broker closed the connection".to_string()),
            Ready::Read(Ok(_)) => self.handle_incoming(),
            Ready::Read(Err(e)) => Err(format!("reading from the broker: {e}")),
            Ready::Wrote(Ok(0)) => Err("the connection to the broker is closed".to_string()),
            Ready::Wrote(Ok(n)) => {
                self.writes += 1;
                conn.wbuf.advance(n);
                conn.written += n as u64;
                conn.stalled_since = None;
                report_written(&mut self.marks, &mut self.refused, &mut self.events, conn.written);
                if conn.wbuf.is_empty() {
                    if conn.wbuf.capacity() > WRITE_KEEP {
                        conn.wbuf = BytesMut::with_capacity(READ_CHUNK);
                    }
                    tokio::time::timeout(stall_timeout, conn.wr.flush())
                        .await
                        .map_err(|_| "the broker stopped reading".to_string())?
                        .map_err(|e| format!("writing to the broker: {e}"))?;
                    if conn.disconnecting {
                        self.events.push_back(LinkEvent::Disconnected);
                        self.done = true;
                        self.conn = None;
                    }
                }
                Ok(())
            }
            Ready::Wrote(Err(e)) => Err(format!("writing to the broker: {e}")),
            Ready::Woken => Ok(()),
            Ready::Ping => {
                if conn.ping_unanswered {
                    return Err("the broker did not answer a ping within the keep-alive".to_string());
                }
                Packet::PingReq.write(&mut conn.wbuf, 2).map_err(|e| format!("PINGREQ: {e}"))?;
                conn.ping_unanswered = true;
                conn.next_ping = Some(Instant::now() + keep_alive);
                Ok(())
            }
            Ready::Stalled => Err(format!("the broker read nothing for {stall_timeout:?}")),
        }
    }

    /// Handles every whole packet in the read buffer.
    fn handle_incoming(&mut self) -> Result<(), String> {
        let max = self.settings.max_packet;
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        loop {
            let packet = match Packet::read(&mut conn.rbuf, max) {
                Ok(p) => p,
                Err(WireError::InsufficientBytes(n)) => {
                    conn.rbuf.reserve(n);
                    return Ok(());
                }
                Err(e) => return Err(format!("bad packet from the broker: {e}")),
            };
            let reply = match packet {
                Packet::PubAck(PubAck { pkid }) => {
                    confirm(&mut self.unconfirmed, &mut self.in_use, pkid, Stage::Sent);
                    self.events.push_back(LinkEvent::Confirmed(pkid));
                    None
                }
                Packet::PubRec(PubRec { pkid }) => {
                    if let Some(u) = self.unconfirmed.iter_mut().find(|u| u.publish.pkid == pkid) {
                        u.stage = Stage::Released;
                    }
                    self.events.push_back(LinkEvent::Other);
                    Some(Packet::PubRel(PubRel::new(pkid)))
                }
                Packet::PubComp(PubComp { pkid }) => {
                    confirm(&mut self.unconfirmed, &mut self.in_use, pkid, Stage::Released);
                    self.events.push_back(LinkEvent::Confirmed(pkid));
                    None
                }
                Packet::Publish(p) => {
                    let reply = match p.qos {
                        QoS::AtMostOnce => None,
                        QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(p.pkid))),
                        QoS::ExactlyOnce => Some(Packet::PubRec(PubRec::new(p.pkid))),
                    };
                    // QoS 2: a second copy before PUBREL is the same message.
                    if p.qos != QoS::ExactlyOnce || self.incoming_qos2.insert(p.pkid) {
                        self.events.push_back(LinkEvent::Message { topic: p.topic, payload: p.payload });
                    }
                    reply
                }
                Packet::PubRel(PubRel { pkid }) => {
                    self.incoming_qos2.remove(&pkid);
                    Some(Packet::PubComp(PubComp::new(pkid)))
                }
                Packet::SubAck(a) => {
                    self.in_use.remove(&a.pkid);
                    if a.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
                        tracing::warn!(
                            pkid = a.pkid,
                            "The MQTT broker refused a subscription (commands on it will not arrive)."
                        );
                    }
                    self.events.push_back(LinkEvent::Other);
                    None
                }
                Packet::PingResp => {
                    conn.ping_unanswered = false;
                    None
                }
                Packet::Disconnect => return Err("the broker disconnected".to_string()),
                _ => {
                    self.events.push_back(LinkEvent::Other);
                    None
                }
            };
            if let Some(r) = reply {
                r.write(&mut conn.wbuf, max).map_err(|e| format!("reply: {e}"))?;
            }
        }
    }
}

/// Forgets a message the broker confirmed. An unknown id (a duplicate
/// acknowledgement) is still reported: it changes nothing in the delivery
/// state either.
fn confirm(unconfirmed: &mut VecDeque<Unconfirmed>, in_use: &mut HashSet<u16>, pkid: u16, stage: Stage) {
    if let Some(i) = unconfirmed.iter().position(|u| u.publish.pkid == pkid && u.stage == stage) {
        unconfirmed.remove(i);
        in_use.remove(&pkid);
    }
}

/// Reports, in order, the messages whose bytes are all written (and refuses
/// those that could not be sent, right after).
fn report_written(
    marks: &mut VecDeque<Mark>,
    refused: &mut Vec<(u16, String)>,
    events: &mut VecDeque<LinkEvent>,
    written: u64,
) {
    while marks.front().is_some_and(|m| m.end <= written) {
        let Some(m) = marks.pop_front() else { break };
        events.push_back(LinkEvent::Written(m.pkid));
        if let Some(i) = refused.iter().position(|(p, _)| *p == m.pkid) {
            let (pkid, reason) = refused.swap_remove(i);
            events.push_back(LinkEvent::Refused { pkid, reason });
        }
    }
}

/// The next packet id after `from` that is not in use (ids start at 1).
fn next_free(from: u16, in_use: &HashSet<u16>) -> u16 {
    let mut id = from;
    loop {
        id = id.wrapping_add(1).max(1);
        if !in_use.contains(&id) {
            return id;
        }
    }
}

fn encode_unconfirmed(u: &Unconfirmed, wbuf: &mut BytesMut, max: usize) -> Result<(), String> {
    match u.stage {
        Stage::Sent => {
            let mut p = u.publish.clone();
            p.dup = true;
            Packet::Publish(p).write(wbuf, max).map_err(|e| format!("PUBLISH: {e}"))?;
        }
        Stage::Released => {
            Packet::PubRel(PubRel::new(u.publish.pkid)).write(wbuf, max).map_err(|e| format!("PUBREL: {e}"))?;
        }
    }
    Ok(())
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// TCP, with TLS on top when configured.
async fn open(s: &Settings) -> Result<Box<dyn Stream>, String> {
    let tcp = tokio::net::TcpStream::connect((s.host.as_str(), s.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", s.host, s.port))?;
    // Small messages leave at once (Nagle would hold one back until the
    // previous one's TCP acknowledgement, which the broker may delay by 40 ms).
    tcp.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    match &s.tls {
        None => Ok(Box::new(tcp)),
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(s.host.clone())
                .map_err(|e| format!("{} is not a valid TLS server name: {e}", s.host))?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {}:{}: {e}", s.host, s.port))?;
            Ok(Box::new(tls))
        }
    }
}

/// A publish of the connector as the wire wants it.
pub(super) fn publish(topic: &str, qos: u8, retain: bool, payload: Bytes) -> Publish {
    let qos = match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let mut p = Publish::from_bytes(topic, qos, payload);
    p.retain = retain;
    p
}

#[cfg(test)]
mod tests;
