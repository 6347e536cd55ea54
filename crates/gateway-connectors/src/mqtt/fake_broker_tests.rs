//! The connector against a fake MQTT 5 broker at the TCP level, for what a
//! real broker will not do on demand: refuse one message (with a reason
//! code) while the messages after it are accepted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use gateway_bus::{Bus, BusMetrics, BusSettings};
use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value};
use rumqttc::v5::mqttbytes::v5::{ConnAck, ConnectReturnCode, Packet, PubAck, PubAckReason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{Format, MqttConfig, Protocol};
use crate::{ConnectorConfig, ConnectorMetrics, Connectors};

/// Accepts one connection; acknowledges every QoS 1 publish at once and
/// records its `seq`, except the first publish of `refuse`, which it refuses
/// (quota exceeded) a little later, after the ones behind it were accepted.
async fn fake_broker(listener: TcpListener, refuse: u64, accepted: Arc<Mutex<Vec<u64>>>) {
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut buf = BytesMut::new();
    let mut refused = false;
    let mut pending_refusal: Option<(u16, tokio::time::Instant)> = None;
    loop {
        let mut out = BytesMut::new();
        loop {
            let packet = match Packet::read(&mut buf, None) {
                Ok(p) => p,
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => break,
                // A bare DISCONNECT (which this parser does not take): the connector is leaving.
                Err(_) => return,
            };
            let reply = match packet {
                Packet::Connect(..) => Some(Packet::ConnAck(ConnAck {
                    session_present: false,
                    code: ConnectReturnCode::Success,
                    properties: None,
                })),
                Packet::Publish(p) => {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    let seq = v["seq"].as_u64().unwrap();
                    if seq == refuse && !refused {
                        refused = true;
                        pending_refusal = Some((p.pkid, tokio::time::Instant::now() + Duration::from_millis(30)));
                        None
                    } else {
                        accepted.lock().unwrap().push(seq);
                        Some(Packet::PubAck(PubAck::new(p.pkid, None)))
                    }
                }
                _ => None,
            };
            if let Some(r) = reply {
                r.write(&mut out, None).unwrap();
            }
        }
        sock.write_all(&out).await.unwrap();
        let refuse_at = pending_refusal.map(|(_, t)| t);
        tokio::select! {
            n = sock.read_buf(&mut buf) => if n.unwrap_or(0) == 0 { return },
            _ = tokio::time::sleep_until(refuse_at.unwrap_or_else(tokio::time::Instant::now)), if refuse_at.is_some() => {
                let (pkid, _) = pending_refusal.take().unwrap();
                let refusal = PubAck { pkid, reason: PubAckReason::QuotaExceeded, properties: None };
                let mut out = BytesMut::new();
                Packet::PubAck(refusal).write(&mut out, None).unwrap();
                sock.write_all(&out).await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_reaches_the_broker_again_in_order_with_the_messages_after_it() {
    const TOTAL: u64 = 200;
    const REFUSED: u64 = 50;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(fake_broker(listener, REFUSED, accepted.clone()));

    let dir = tempfile::tempdir().unwrap();
    let settings = BusSettings { wal_dir: dir.path().join("wal"), ..BusSettings::memory_optimized() };
    let bus = Bus::open(settings, Arc::new(BusMetrics::unregistered())).unwrap();
    let cfg = MqttConfig {
        protocol: Protocol::V5,
        format: Format::Json,
        reconnect_min_ms: 50,
        reconnect_max_ms: 500,
        ..MqttConfig::new(&format!("mqtt://127.0.0.1:{port}"))
    };
    let metrics = Arc::new(ConnectorMetrics::unregistered());
    let connectors =
        Connectors::start(&[ConnectorConfig::new("up", cfg).unwrap()], &bus, metrics, dir.path().to_owned(), "gw");
    let tag = TagId::new("line1.count").unwrap();
    for start in (0..TOTAL).step_by(10) {
        let frames: Vec<Frame> = (start..start + 10)
            .map(|i| Frame::Data(DataFrame::new(tag.clone(), Value::U64(i), Quality::GOOD, 0)))
            .collect();
        bus.publish(Arc::new(Batch::from(frames))).await.unwrap();
    }
    let cursor = || bus.wal().unwrap().cursors().into_iter().find(|(n, _)| n == "mqtt-up").map_or(0, |(_, p)| p);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cursor() < TOTAL {
        assert!(std::time::Instant::now() < deadline, "the cursor stopped at {}", cursor());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    connectors.stop().await;

    let accepted = accepted.lock().unwrap().clone();
    let first = accepted.iter().position(|&s| s == REFUSED).expect("the refused value was sent again");
    assert!(
        accepted[..first].iter().any(|&s| s > REFUSED),
        "the values after the refused one were on their way before the refusal: {accepted:?}"
    );
    assert_eq!(
        accepted[first..],
        (REFUSED..TOTAL).collect::<Vec<_>>(),
        "from the refused value on, the broker gets the stream again in order"
    );
}
