//! Against a scripted broker at the TCP level, for what a real broker
//! will not do on demand: drop a connection with messages unconfirmed,
//! resume or forget the session, never answer a ping.

use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A broker's side of one connection.
struct Peer {
    sock: TcpStream,
    buf: BytesMut,
}

impl Peer {
    /// Accepts a connection and answers its CONNECT.
    async fn accept(l: &TcpListener, session_present: bool) -> (Peer, Connect) {
        let (sock, _) = l.accept().await.unwrap();
        let mut p = Peer { sock, buf: BytesMut::new() };
        let Packet::Connect(c) = p.next().await else { panic!("CONNECT expected") };
        p.send(Packet::ConnAck(ConnAck { session_present, code: ConnectReturnCode::Success })).await;
        (p, c)
    }

    async fn next(&mut self) -> Packet {
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(p) => return p,
                Err(WireError::InsufficientBytes(_)) => {
                    let n = tokio::time::timeout(Duration::from_secs(10), self.sock.read_buf(&mut self.buf))
                        .await
                        .expect("the client sent nothing for 10 s")
                        .unwrap();
                    assert!(n > 0, "the client closed the connection");
                }
                Err(e) => panic!("bad packet from the client: {e}"),
            }
        }
    }

    async fn send(&mut self, p: Packet) {
        let mut b = BytesMut::new();
        p.write(&mut b, 1 << 20).unwrap();
        self.sock.write_all(&b).await.unwrap();
    }

    async fn publish(&mut self) -> Publish {
        match self.next().await {
            Packet::Publish(p) => p,
            p => panic!("PUBLISH expected, got {p:?}"),
        }
    }
}

async fn client(keep_alive_s: u64, clean: bool) -> (TcpListener, Client, Arc<Outbox>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = Settings {
        client_id: "v311-test".into(),
        host: "127.0.0.1".into(),
        port: l.local_addr().unwrap().port(),
        keep_alive: Duration::from_secs(keep_alive_s),
        clean,
        credentials: Some(("user".into(), "secret".into())),
        tls: None,
        max_packet: 1 << 20,
        connect_timeout: Duration::from_secs(1),
        stall_timeout: Duration::from_secs(1),
    };
    let outbox = Outbox::new(256);
    let c = Client::new(settings, Some(("will/topic".into(), b"gone".to_vec())), outbox.clone());
    (l, c, outbox)
}

/// Connects the client to a broker on `l` that answers `session_present`:
/// the broker's side, the client's CONNECT, and the client's first event.
async fn connected(
    l: &TcpListener,
    c: &mut Client,
    session_present: bool,
) -> (Peer, Connect, Result<LinkEvent, String>) {
    let ((peer, greeting), event) = tokio::join!(Peer::accept(l, session_present), c.poll());
    (peer, greeting, event)
}

fn queue(o: &Outbox, from: u8, n: u8, qos: u8) {
    for i in from..from + n {
        assert!(o.push(Request::Publish(publish("t", qos, false, Bytes::from(vec![i])))));
    }
}

/// Polls until `n` events matching `want` came, returning every event seen.
async fn events_until(c: &mut Client, n: usize, want: impl Fn(&LinkEvent) -> bool) -> Vec<LinkEvent> {
    let mut seen = Vec::new();
    while seen.iter().filter(|e| want(e)).count() < n {
        let e = tokio::time::timeout(Duration::from_secs(10), c.poll()).await.expect("no event in 10 s");
        seen.push(e.unwrap_or_else(|e| panic!("connection failed: {e}")));
    }
    seen
}

fn written(events: &[LinkEvent]) -> Vec<u16> {
    events.iter().filter_map(|e| if let LinkEvent::Written(p) = e { Some(*p) } else { None }).collect()
}

#[tokio::test]
async fn a_burst_of_publishes_leaves_in_one_write_and_is_reported_in_order() {
    let (l, mut c, outbox) = client(30, true).await;
    let (mut broker, greeting, connect) = connected(&l, &mut c, false).await;
    assert!(matches!(connect, Ok(LinkEvent::ConnAck { session_present: false })));
    assert_eq!(greeting.login.as_ref().map(|l| l.username.as_str()), Some("user"));
    assert_eq!(greeting.last_will.as_ref().map(|w| w.topic.as_str()), Some("will/topic"));
    queue(&outbox, 0, 20, 1);
    let writes = c.writes;
    let events = events_until(&mut c, 20, |e| matches!(e, LinkEvent::Written(_))).await;
    assert_eq!(c.writes - writes, 1, "20 publishes queued together took more than one write");
    assert_eq!(written(&events), (1..=20).collect::<Vec<u16>>());
    for i in 0..20u8 {
        let p = broker.publish().await;
        assert_eq!((p.pkid, p.payload.as_ref(), p.dup), (u16::from(i) + 1, &[i][..], false));
        broker.send(Packet::PubAck(PubAck::new(p.pkid))).await;
    }
    let events = events_until(&mut c, 20, |e| matches!(e, LinkEvent::Confirmed(_))).await;
    assert!(c.unconfirmed.is_empty() && c.in_use.is_empty(), "confirmed messages are still held");
    assert_eq!(events.len(), 20);
}

#[tokio::test]
async fn a_resumed_session_resends_the_unconfirmed_as_duplicates_and_a_new_one_forgets_them() {
    let (l, mut c, outbox) = client(30, false).await;
    let (mut broker, _, _) = connected(&l, &mut c, false).await;
    queue(&outbox, 0, 3, 1);
    events_until(&mut c, 3, |e| matches!(e, LinkEvent::Written(_))).await;
    for _ in 0..3 {
        broker.publish().await;
    }
    broker.send(Packet::PubAck(PubAck::new(1))).await;
    events_until(&mut c, 1, |e| matches!(e, LinkEvent::Confirmed(1))).await;
    drop(broker);
    let failure = tokio::time::timeout(Duration::from_secs(10), c.poll()).await.unwrap();
    assert!(failure.is_err(), "the hang-up was not noticed: {failure:?}");
    // Queued while away: goes out after the resent ones.
    queue(&outbox, 3, 1, 1);

    let (mut broker, greeting, connect) = connected(&l, &mut c, true).await;
    assert!(!greeting.clean_session);
    assert!(matches!(connect, Ok(LinkEvent::ConnAck { session_present: true })));
    let events = events_until(&mut c, 1, |e| matches!(e, LinkEvent::Written(_))).await;
    assert_eq!(written(&events), vec![4], "only the new message is reported as written");
    let resent: Vec<_> = [broker.publish().await, broker.publish().await, broker.publish().await]
        .into_iter()
        .map(|p| (p.pkid, p.dup, p.payload.to_vec()))
        .collect();
    assert_eq!(resent, vec![(2, true, vec![1]), (3, true, vec![2]), (4, false, vec![3])]);
    drop(broker);
    assert!(tokio::time::timeout(Duration::from_secs(10), c.poll()).await.unwrap().is_err());

    // The broker lost the session: nothing of the old one is sent.
    queue(&outbox, 9, 1, 1);
    let (mut broker, _, connect) = connected(&l, &mut c, false).await;
    assert!(matches!(connect, Ok(LinkEvent::ConnAck { session_present: false })));
    assert!(c.unconfirmed.is_empty() && c.marks.is_empty(), "the old session's messages are still held");
    queue(&outbox, 10, 1, 1);
    events_until(&mut c, 1, |e| matches!(e, LinkEvent::Written(_))).await;
    let p = broker.publish().await;
    assert_eq!((p.dup, p.payload.to_vec()), (false, vec![10]));
}

/// Awaits `f` while polling the client (which must not fail), keeping its events.
async fn meanwhile<T>(c: &mut Client, seen: &mut Vec<LinkEvent>, f: impl Future<Output = T>) -> T {
    tokio::pin!(f);
    loop {
        tokio::select! {
            biased;
            t = &mut f => return t,
            e = c.poll() => seen.push(e.unwrap_or_else(|e| panic!("connection failed: {e}"))),
        }
    }
}

#[tokio::test]
async fn qos_2_completes_in_four_steps_and_commands_are_acknowledged() {
    let (l, mut c, outbox) = client(30, true).await;
    let (mut broker, _, _) = connected(&l, &mut c, false).await;
    let mut seen = Vec::new();
    queue(&outbox, 0, 1, 2);
    assert!(outbox.push(Request::Subscribe("cmd/#".into())));
    let p = meanwhile(&mut c, &mut seen, broker.publish()).await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    let Packet::Subscribe(s) = meanwhile(&mut c, &mut seen, broker.next()).await else { panic!("SUBSCRIBE expected") };
    broker.send(Packet::PubRec(PubRec::new(p.pkid))).await;
    let released = meanwhile(&mut c, &mut seen, broker.next()).await;
    assert!(matches!(released, Packet::PubRel(PubRel { pkid }) if pkid == p.pkid), "{released:?}");
    assert!(!seen.iter().any(|e| matches!(e, LinkEvent::Confirmed(_))), "confirmed before PUBCOMP");
    assert_eq!(written(&seen), vec![p.pkid]);
    broker.send(Packet::PubComp(PubComp::new(p.pkid))).await;
    events_until(&mut c, 1, |e| matches!(e, LinkEvent::Confirmed(pk) if *pk == p.pkid)).await;
    let granted = vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)];
    broker.send(Packet::SubAck(rumqttc::mqttbytes::v4::SubAck::new(s.pkid, granted))).await;
    // A command with QoS 1: reported and acknowledged.
    let mut cmd = Publish::new("cmd/1", QoS::AtLeastOnce, b"{}".to_vec());
    cmd.pkid = 7;
    broker.send(Packet::Publish(cmd)).await;
    let mut seen = Vec::new();
    let ack = meanwhile(&mut c, &mut seen, broker.next()).await;
    assert!(matches!(ack, Packet::PubAck(PubAck { pkid: 7 })), "{ack:?}");
    assert!(seen.iter().any(|e| matches!(e, LinkEvent::Message { topic, .. } if topic == "cmd/1")));
    assert!(c.in_use.is_empty(), "the SUBACK did not free its packet id");
}

#[tokio::test]
async fn a_broker_that_stops_answering_pings_is_given_up() {
    let (l, mut c, _outbox) = client(1, true).await;
    let (mut broker, _, _) = connected(&l, &mut c, false).await;
    let started = Instant::now();
    let (ping, failure) = tokio::join!(broker.next(), async {
        loop {
            if let Err(e) = c.poll().await {
                return e;
            }
        }
    });
    assert!(matches!(ping, Packet::PingReq), "{ping:?}");
    assert!(failure.contains("ping"), "{failure}");
    assert!(started.elapsed() >= Duration::from_secs(2), "given up before the second ping was due");
}

#[tokio::test]
async fn a_clean_disconnect_is_written_and_reported() {
    let (l, mut c, outbox) = client(30, true).await;
    let (mut broker, _, _) = connected(&l, &mut c, false).await;
    queue(&outbox, 0, 1, 0);
    assert!(outbox.push(Request::Disconnect));
    let events = events_until(&mut c, 1, |e| matches!(e, LinkEvent::Disconnected)).await;
    assert_eq!(written(&events), vec![0], "a QoS 0 message is reported with packet id 0");
    assert!(matches!(broker.next().await, Packet::Publish(_)));
    assert!(matches!(broker.next().await, Packet::Disconnect));
}

/// Polls until the connection fails, returning why.
async fn failure(c: &mut Client) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(e) = c.poll().await {
                return e;
            }
        }
    })
    .await
    .expect("no failure within 10 s")
}

#[tokio::test]
async fn a_broker_sending_garbage_or_nothing_or_too_much_fails_the_connection_cleanly() {
    // Garbage instead of CONNACK.
    let (l, mut c, _outbox) = client(30, true).await;
    let (e, _) = tokio::join!(failure(&mut c), async {
        let (mut sock, _) = l.accept().await.unwrap();
        sock.write_all(&[0xF0, 0x01, 0x00]).await.unwrap();
        sock
    });
    assert!(e.contains("CONNACK"), "{e}");
    // Silence instead of CONNACK.
    let (e, _) = tokio::join!(failure(&mut c), l.accept());
    assert!(e.contains("no CONNACK"), "{e}");
    // A packet larger than allowed, once connected.
    let (mut broker, _, _) = connected(&l, &mut c, false).await;
    let (e, _) = tokio::join!(failure(&mut c), async {
        let huge = Publish::new("cmd/x", QoS::AtMostOnce, vec![0u8; 2 << 20]);
        let mut b = BytesMut::new();
        Packet::Publish(huge).write(&mut b, 4 << 20).unwrap();
        let _ = broker.sock.write_all(&b).await;
    });
    assert!(e.contains("bad packet"), "{e}");
    // It connects again afterwards.
    let (_broker, _, connect) = connected(&l, &mut c, false).await;
    assert!(matches!(connect, Ok(LinkEvent::ConnAck { .. })), "{connect:?}");
}

#[tokio::test]
async fn a_broker_that_stops_reading_is_given_up_with_its_messages_held() {
    let (l, mut c, outbox) = client(30, true).await;
    let (_broker, _, _) = connected(&l, &mut c, false).await;
    // Far more than the socket buffers hold; the broker reads none of it.
    for _ in 0..128 {
        assert!(outbox.push(Request::Publish(publish("t", 1, false, Bytes::from(vec![7u8; 512 << 10])))));
    }
    let e = failure(&mut c).await;
    assert!(e.contains("read nothing"), "{e}");
    // Held as sent and unconfirmed, or still waiting to be encoded behind
    // a full write buffer: either way kept for the next connection.
    assert_eq!(c.unconfirmed.len() + c.requests.len(), 128, "a message the broker never confirmed was forgotten");
    assert!(c.requests.len() > 100, "{} encoded: the write buffer is bounded", c.unconfirmed.len());
}

#[tokio::test]
async fn a_message_too_large_to_send_is_reported_in_its_turn_and_refused() {
    let (l, mut c, outbox) = client(30, true).await;
    let (mut broker, _, _) = connected(&l, &mut c, false).await;
    queue(&outbox, 0, 1, 1);
    assert!(outbox.push(Request::Publish(publish("t", 1, false, Bytes::from(vec![0u8; 2 << 20])))));
    queue(&outbox, 1, 1, 0);
    let events = events_until(&mut c, 3, |e| matches!(e, LinkEvent::Written(_))).await;
    assert_eq!(written(&events), vec![1, 2, 0], "the ids no longer pair with the messages in order");
    assert!(events.iter().any(|e| matches!(e, LinkEvent::Refused { pkid: 2, .. })), "{events:?}");
    assert_eq!(broker.publish().await.payload.as_ref(), &[0u8]);
    assert_eq!(broker.publish().await.payload.as_ref(), &[1u8]);
}
