//! One face for the two MQTT protocol versions: our own 3.1.1 client
//! (`v311.rs`, which writes a burst of publishes at once) and rumqttc's
//! MQTT 5 client differ in types, not in what the connector needs from them
//! (publish, subscribe, the events that confirm or refuse a message, the will).
//! The connector speaks to [`Link`] and never to either client directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;

use super::v311;

/// The MQTT protocol version spoken to the broker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    /// MQTT 3.1.1.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "5")]
    V5,
}

/// What happened on the connection.
#[derive(Debug)]
pub enum LinkEvent {
    /// Connected; whether the broker kept the session.
    ConnAck {
        /// The broker resumed the previous session.
        session_present: bool,
    },
    /// The broker confirmed the message with this packet id.
    Confirmed(u16),
    /// The broker refused the message with this packet id (MQTT 5 reason codes).
    Refused {
        /// The packet id of the refused message.
        pkid: u16,
        /// The reason code's name, for the log (`QuotaExceeded`, `NotAuthorized`, ...).
        reason: String,
    },
    /// A message was written with this packet id (0 for QoS 0).
    Written(u16),
    /// A message arrived on a subscribed topic.
    Message {
        /// A command topic (for JSON, its last level is the command's id).
        topic: String,
        /// The command: JSON, or a Sparkplug payload.
        payload: Bytes,
    },
    /// The DISCONNECT was written: a clean stop may end the task now.
    Disconnected,
    /// The connection failed or broke (it is retried after a backoff).
    Down(String),
    /// Anything the connector does not act on (SUBACK, PINGRESP, ...).
    Other,
}

/// Small messages leave at once: with Nagle's algorithm (rumqttc's
/// default) a publish waits for the previous one's TCP acknowledgement,
/// which the broker may delay by up to 40 ms when it has nothing to send back.
fn no_delay() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n
}

/// QoS 0, 1 or 2 in the MQTT 5 client's type.
fn qos_v5(q: u8) -> v5::mqttbytes::QoS {
    match q {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        1 => v5::mqttbytes::QoS::AtLeastOnce,
        _ => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// Connection settings shared by both protocols.
#[derive(Clone)]
pub struct LinkOptions {
    /// Names the session at the broker; a second connection with the same id drops the first.
    pub client_id: String,
    /// Host name (checked against the broker's certificate with TLS) or address.
    pub host: String,
    /// From the URL, or the scheme's default.
    pub port: u16,
    /// Idle time after which the client pings; the broker drops a connection
    /// silent for 1.5 times as long.
    pub keep_alive: std::time::Duration,
    /// Ask the broker for a new session on every connect.
    pub clean: bool,
    /// MQTT 5: seconds the broker keeps the session after a disconnect (unused when `clean`).
    pub session_expiry_s: u32,
    /// Unconfirmed messages the client holds at most; also sizes its request queue.
    pub inflight: u16,
    /// From `username` and `password` (an absent password is sent empty).
    pub credentials: Option<(String, String)>,
    /// TLS, when the URL is `mqtts://`; plain TCP otherwise.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Makes the will for the next connection attempt (Sparkplug's NDEATH carries
/// the bdSeq of the session it ends, which moves on with every attempt).
pub type WillFn = Box<dyn FnMut() -> (String, Vec<u8>) + Send>;

enum Client {
    V311(Arc<v311::Outbox>),
    V5(v5::AsyncClient),
}

enum Loop {
    V311(Box<v311::Client>),
    V5(Box<v5::EventLoop>),
}

/// The connection: a client to queue requests, and a task that owns the event
/// loop. The event loop must never be polled from a `select!` that drops its
/// future: a connect (DNS, TCP, TLS, CONNECT, CONNACK) happens inside one poll,
/// and abandoning it means never connecting to a broker slower than the
/// shortest other branch. So it runs alone and reports through a channel.
///
/// A publish queued after the connection broke but before its owner has read
/// the `Down` event would be written on the next connection even when that
/// one starts a new session, and the connector, which matches packet ids to
/// messages by the order it queued them, would pair later packet ids with the
/// wrong messages. So the link counts failures as they happen and refuses a
/// publish once one happened after the connection its owner last saw.
pub struct Link {
    client: Client,
    /// Each event with the number of failures when it was reported.
    events: tokio::sync::mpsc::Receiver<(u64, LinkEvent)>,
    task: tokio::task::JoinHandle<()>,
    /// Connection failures so far, counted by the task as they happen.
    failures: Arc<AtomicU64>,
    /// `failures` as of the last `ConnAck` handed out by [`Link::next`].
    failures_at_connack: u64,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const PACKET_MAX: usize = 16 << 20;

impl Link {
    /// Starts the connection (it connects, and reconnects after a failure
    /// with exponential backoff and jitter between `reconnect.0` and `reconnect.1`).
    pub fn start(
        protocol: Protocol,
        o: LinkOptions,
        reconnect: (Duration, Duration),
        mut will_fn: Option<WillFn>,
    ) -> Link {
        let cap = usize::from(o.inflight) + 64;
        let will = will_fn.as_mut().map(|f| f());
        let (client, ev) = match protocol {
            Protocol::V311 => {
                let outbox = v311::Outbox::new(cap);
                let settings = v311::Settings {
                    client_id: o.client_id,
                    host: o.host,
                    port: o.port,
                    keep_alive: o.keep_alive,
                    clean: o.clean,
                    credentials: o.credentials,
                    tls: o.tls,
                    max_packet: PACKET_MAX,
                    connect_timeout: v311::CONNECT_TIMEOUT,
                    stall_timeout: v311::STALL_TIMEOUT,
                };
                let client = v311::Client::new(settings, will, outbox.clone());
                (Client::V311(outbox), Loop::V311(Box::new(client)))
            }
            Protocol::V5 => {
                let mut m = v5::MqttOptions::new(o.client_id, o.host, o.port);
                m.set_keep_alive(o.keep_alive);
                m.set_clean_start(o.clean);
                if !o.clean {
                    m.set_session_expiry_interval(Some(o.session_expiry_s));
                }
                m.set_outgoing_inflight_upper_limit(o.inflight);
                m.set_request_channel_capacity(cap);
                m.set_max_packet_size(Some(PACKET_MAX as u32));
                if let Some((u, p)) = o.credentials {
                    m.set_credentials(u, p);
                }
                if let Some(c) = o.tls {
                    m.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(c)));
                }
                if let Some((topic, payload)) = will {
                    m.set_last_will(v5::mqttbytes::v5::LastWill::new(topic, payload, qos_v5(1), false, None));
                }
                m.set_network_options(no_delay());
                let (c, e) = v5::AsyncClient::new(m, cap);
                (Client::V5(c), Loop::V5(Box::new(e)))
            }
        };
        let (tx, events) = tokio::sync::mpsc::channel(1024);
        let failures = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(drive(ev, tx, failures.clone(), reconnect, will_fn));
        Link { client, events, task, failures, failures_at_connack: 0 }
    }

    /// The next event; `None` once the connection task ended.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        let (failures, event) = self.events.recv().await?;
        Some(self.seen(failures, event))
    }

    /// The next event if one is waiting: the worker takes a burst of
    /// confirmations in one turn instead of one turn of its `select!` each.
    pub fn try_next(&mut self) -> Option<LinkEvent> {
        let (failures, event) = self.events.try_recv().ok()?;
        Some(self.seen(failures, event))
    }

    fn seen(&mut self, failures: u64, event: LinkEvent) -> LinkEvent {
        if matches!(event, LinkEvent::ConnAck { .. }) {
            self.failures_at_connack = failures;
        }
        event
    }

    /// Queues a publish without waiting; `false` if the client's queue is
    /// full, or if the connection broke since the last `ConnAck` (see [`Link`]).
    pub fn try_publish(&self, topic: &str, qos: u8, retain: bool, payload: Bytes) -> bool {
        if self.failures.load(Ordering::Acquire) != self.failures_at_connack {
            return false;
        }
        match &self.client {
            Client::V311(o) => o.push(v311::Request::Publish(v311::publish(topic, qos, retain, payload))),
            Client::V5(c) => c.try_publish(topic, qos_v5(qos), retain, payload).is_ok(),
        }
    }

    /// Queues a subscription (QoS 1).
    pub fn try_subscribe(&self, topic: &str) -> Result<(), String> {
        match &self.client {
            Client::V311(o) => match o.push(v311::Request::Subscribe(topic.to_owned())) {
                true => Ok(()),
                false => Err("the client's queue is full".to_owned()),
            },
            Client::V5(c) => c.try_subscribe(topic, qos_v5(1)).map_err(|e| e.to_string()),
        }
    }

    /// Queues a DISCONNECT: a clean goodbye, after which the broker does not publish the will.
    pub fn try_disconnect(&self) {
        let _ = match &self.client {
            Client::V311(o) => {
                o.push(v311::Request::Disconnect);
                Ok(())
            }
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

async fn poll(ev: &mut Loop) -> Result<LinkEvent, String> {
    match ev {
        Loop::V311(c) => c.poll().await,
        Loop::V5(ev) => {
            use rumqttc::Outgoing;
            use v5::Event;
            use v5::mqttbytes::v5::{Packet, PubAckReason, PubCompReason, PubRecReason};
            let e = ev.poll().await.map_err(|e| e.to_string())?;
            if let Event::Incoming(Packet::ConnAck(a)) = &e {
                ev.state.events.clear();
                if !a.session_present {
                    ev.state.collision = None;
                }
            }
            Ok(match e {
                Event::Incoming(Packet::ConnAck(a)) => LinkEvent::ConnAck { session_present: a.session_present },
                Event::Incoming(Packet::PubAck(a)) => match a.reason {
                    // No matching subscribers is delivery as far as the broker goes.
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => LinkEvent::Confirmed(a.pkid),
                    r => LinkEvent::Refused { pkid: a.pkid, reason: format!("{r:?}") },
                },
                // QoS 2: a failed PUBREC ends the exchange (rumqttc frees the id silently).
                Event::Incoming(Packet::PubRec(r)) => match r.reason {
                    PubRecReason::Success | PubRecReason::NoMatchingSubscribers => LinkEvent::Other,
                    reason => LinkEvent::Refused { pkid: r.pkid, reason: format!("{reason:?}") },
                },
                Event::Incoming(Packet::PubComp(c)) => match c.reason {
                    PubCompReason::Success => LinkEvent::Confirmed(c.pkid),
                    r => LinkEvent::Refused { pkid: c.pkid, reason: format!("{r:?}") },
                },
                Event::Incoming(Packet::Publish(p)) => {
                    LinkEvent::Message { topic: String::from_utf8_lossy(&p.topic).into_owned(), payload: p.payload }
                }
                Event::Outgoing(Outgoing::Publish(pkid)) => LinkEvent::Written(pkid),
                Event::Outgoing(Outgoing::Disconnect) => LinkEvent::Disconnected,
                _ => LinkEvent::Other,
            })
        }
    }
}

/// Owns the event loop: polls it, reports what happens, and after a failure
/// waits (backoff with ±25 % jitter) and sets the next will before the next attempt.
async fn drive(
    mut ev: Loop,
    tx: tokio::sync::mpsc::Sender<(u64, LinkEvent)>,
    failures: Arc<AtomicU64>,
    (min, max): (Duration, Duration),
    mut will_fn: Option<WillFn>,
) {
    let mut backoff = min;
    let mut jitter = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    loop {
        match poll(&mut ev).await {
            Ok(e) => {
                if matches!(e, LinkEvent::ConnAck { .. }) {
                    backoff = min;
                }
                if tx.send((failures.load(Ordering::Acquire), e)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // At once, before the owner reads this: it may be queueing publishes now.
                let n = failures.fetch_add(1, Ordering::AcqRel) + 1;
                if tx.send((n, LinkEvent::Down(e))).await.is_err() {
                    return;
                }
                jitter ^= jitter << 13;
                jitter ^= jitter >> 7;
                jitter ^= jitter << 17;
                let spread = 0.75 + (jitter % 1000) as f64 / 2000.0;
                tokio::time::sleep(backoff.mul_f64(spread)).await;
                backoff = (backoff * 2).min(max);
                if let Some(f) = will_fn.as_mut() {
                    let (topic, payload) = f();
                    match &mut ev {
                        Loop::V311(c) => c.will = Some((topic, payload)),
                        Loop::V5(e) => {
                            e.options.set_last_will(v5::mqttbytes::v5::LastWill::new(
                                topic,
                                payload,
                                qos_v5(1),
                                false,
                                None,
                            ));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use v5::mqttbytes::v5::{ConnAck, ConnectReturnCode, Packet};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_after_the_connection_broke_waits_for_the_next_connack() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // A broker that answers the first CONNECT, then hangs up.
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let _ = sock.read(&mut [0u8; 1024]).await;
            let mut connack = BytesMut::new();
            let ok = ConnAck { session_present: false, code: ConnectReturnCode::Success, properties: None };
            Packet::ConnAck(ok).write(&mut connack, None).unwrap();
            sock.write_all(&connack).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        let options = LinkOptions {
            client_id: "link-test".into(),
            host: "127.0.0.1".into(),
            port,
            keep_alive: Duration::from_secs(30),
            clean: true,
            session_expiry_s: 0,
            inflight: 8,
            credentials: None,
            tls: None,
        };
        let mut link = Link::start(Protocol::V5, options, (Duration::from_secs(5), Duration::from_secs(5)), None);
        assert!(matches!(link.next().await, Some(LinkEvent::ConnAck { .. })));
        assert!(link.try_publish("t", 1, false, Bytes::from_static(b"x")), "connected: taken");
        // The broker hangs up; the owner has not read the Down event yet.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while link.failures.load(Ordering::Acquire) == 0 {
            assert!(std::time::Instant::now() < deadline, "the failure was not noticed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!link.try_publish("t", 1, false, Bytes::from_static(b"y")), "it would go out on the next connection");
    }
}
