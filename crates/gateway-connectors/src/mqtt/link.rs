//! One face for the two MQTT protocol versions: rumqttc's 3.1.1 client and its
//! MQTT 5 client differ in types, not in what the connector needs from them
//! (publish, subscribe, the events that confirm or refuse a message, the will).
//! The connector speaks to [`Link`] and never to either client directly.

use bytes::Bytes;
use rumqttc::v5 as m5;

/// Which protocol.
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
        /// Packet id.
        pkid: u16,
        /// The reason code.
        reason: String,
    },
    /// A message was written with this packet id (0 for QoS 0).
    Written(u16),
    /// A message arrived on a subscribed topic.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Bytes,
    },
    /// The disconnect was written.
    Disconnected,
    /// Anything else.
    Other,
}

/// Quality of service, protocol-neutral.
pub fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> m5::mqttbytes::QoS {
    match q {
        0 => m5::mqttbytes::QoS::AtMostOnce,
        1 => m5::mqttbytes::QoS::AtLeastOnce,
        _ => m5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// Connection settings shared by both protocols.
#[derive(Clone)]
pub struct LinkOptions {
    /// Client id.
    pub client_id: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Keep-alive.
    pub keep_alive: std::time::Duration,
    /// Start without a session.
    pub clean: bool,
    /// MQTT 5 session expiry after a disconnect, seconds.
    pub session_expiry_s: u32,
    /// Unconfirmed messages at most.
    pub inflight: u16,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// TLS transport, if any.
    pub transport: Option<rumqttc::Transport>,
    /// Will topic and payload (QoS 1, not retained).
    pub will: Option<(String, Vec<u8>)>,
}

/// A client and its event loop, for either protocol.
pub enum Link {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient, Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(m5::AsyncClient, Box<m5::EventLoop>),
}

const PACKET_MAX: usize = 16 << 20;

impl Link {
    /// A link (not yet connected: the first poll connects).
    pub fn new(protocol: Protocol, o: LinkOptions) -> Link {
        let cap = usize::from(o.inflight) + 64;
        match protocol {
            Protocol::V311 => {
                let mut m = rumqttc::MqttOptions::new(o.client_id, o.host, o.port);
                m.set_keep_alive(o.keep_alive);
                m.set_clean_session(o.clean);
                m.set_inflight(o.inflight);
                m.set_request_channel_capacity(cap);
                m.set_max_packet_size(PACKET_MAX, PACKET_MAX);
                if let Some((u, p)) = o.credentials {
                    m.set_credentials(u, p);
                }
                if let Some(t) = o.transport {
                    m.set_transport(t);
                }
                if let Some((topic, payload)) = o.will {
                    m.set_last_will(rumqttc::LastWill::new(topic, payload, rumqttc::QoS::AtLeastOnce, false));
                }
                let (c, e) = rumqttc::AsyncClient::new(m, cap);
                Link::V4(c, Box::new(e))
            }
            Protocol::V5 => {
                let mut m = m5::MqttOptions::new(o.client_id, o.host, o.port);
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
                if let Some(t) = o.transport {
                    m.set_transport(t);
                }
                if let Some((topic, payload)) = o.will {
                    m.set_last_will(m5::mqttbytes::v5::LastWill::new(topic, payload, qos5(1), false, None));
                }
                let (c, e) = m5::AsyncClient::new(m, cap);
                Link::V5(c, Box::new(e))
            }
        }
    }

    /// Drives the connection; an error means it is down (the next poll reconnects).
    pub async fn poll(&mut self) -> Result<LinkEvent, String> {
        match self {
            Link::V4(_, ev) => {
                use rumqttc::{Event, Outgoing, Packet};
                Ok(match ev.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => LinkEvent::ConnAck { session_present: a.session_present },
                    Event::Incoming(Packet::PubAck(a)) => LinkEvent::Confirmed(a.pkid),
                    Event::Incoming(Packet::PubComp(c)) => LinkEvent::Confirmed(c.pkid),
                    Event::Incoming(Packet::Publish(p)) => LinkEvent::Message { topic: p.topic, payload: p.payload },
                    Event::Outgoing(Outgoing::Publish(pkid)) => LinkEvent::Written(pkid),
                    Event::Outgoing(Outgoing::Disconnect) => LinkEvent::Disconnected,
                    _ => LinkEvent::Other,
                })
            }
            Link::V5(_, ev) => {
                use m5::Event;
                use m5::mqttbytes::v5::{Packet, PubAckReason, PubCompReason};
                use rumqttc::Outgoing;
                Ok(match ev.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => LinkEvent::ConnAck { session_present: a.session_present },
                    Event::Incoming(Packet::PubAck(a)) => match a.reason {
                        // No matching subscribers is delivery as far as the broker goes.
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => LinkEvent::Confirmed(a.pkid),
                        r => LinkEvent::Refused { pkid: a.pkid, reason: format!("{r:?}") },
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

    /// Queues a publish without waiting; `false` if the client's queue is full.
    pub fn try_publish(&self, topic: &str, qos: u8, payload: Bytes) -> bool {
        match self {
            Link::V4(c, _) => c.try_publish(topic, qos4(qos), false, payload).is_ok(),
            Link::V5(c, _) => c.try_publish(topic, qos5(qos), false, payload).is_ok(),
        }
    }

    /// Queues a subscription (QoS 1).
    pub fn try_subscribe(&self, topic: &str) -> Result<(), String> {
        match self {
            Link::V4(c, _) => c.try_subscribe(topic, rumqttc::QoS::AtLeastOnce).map_err(|e| e.to_string()),
            Link::V5(c, _) => c.try_subscribe(topic, qos5(1)).map_err(|e| e.to_string()),
        }
    }

    /// Queues a disconnect.
    pub fn try_disconnect(&self) {
        let _ = match self {
            Link::V4(c, _) => c.try_disconnect().map_err(|e| e.to_string()),
            Link::V5(c, _) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }

    /// Forgets what the client would resend from the previous session.
    pub fn clear_pending(&mut self) {
        match self {
            Link::V4(_, ev) => ev.pending.clear(),
            Link::V5(_, ev) => ev.pending.clear(),
        }
    }

    /// Sets the will for the next connection.
    pub fn set_will(&mut self, topic: String, payload: Vec<u8>) {
        match self {
            Link::V4(_, ev) => {
                ev.mqtt_options.set_last_will(rumqttc::LastWill::new(topic, payload, rumqttc::QoS::AtLeastOnce, false));
            }
            Link::V5(_, ev) => {
                ev.options.set_last_will(m5::mqttbytes::v5::LastWill::new(topic, payload, qos5(1), false, None));
            }
        }
    }
}
