//! The MQTT connector against a real broker (Debian's mosquitto): ordered
//! delivery with sequence numbers, a broker outage under load, overflow of the
//! WAL during an outage, rate-limited replay with live data alongside,
//! commands from the broker, TLS, and Sparkplug B.

mod common;

use std::time::Duration;

use common::{Collector, Rig, first_arrivals};
use gateway_bench::mosquitto::{Mosquitto, TestCerts};
use gateway_bench::wait_until;
use gateway_connectors::mqtt::{Format, MqttConfig, Protocol};
use gateway_model::CmdStatus;
use rumqttc::QoS;
use serde_json::json;

fn cfg(url: &str, format: Format) -> MqttConfig {
    MqttConfig {
        topic_prefix: "plant/gw".into(),
        format,
        reconnect_min_ms: 50,
        reconnect_max_ms: 500,
        ..MqttConfig::new(url)
    }
}

fn assert_contiguous(order: &[u64], from: u64, to: u64) {
    let mut sorted = order.to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, (from..to).collect::<Vec<_>>(), "missing or extra sequence numbers");
    assert!(order.windows(2).all(|w| w[1] > w[0]), "first arrivals out of order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_reach_the_broker_in_order_with_their_sequence_numbers_and_the_cursor_follows() {
    ordered_delivery(Protocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_delivers_in_order_too() {
    ordered_delivery(Protocol::V5).await;
}

async fn ordered_delivery(protocol: Protocol) {
    let broker = Mosquitto::start();
    let sink = Collector::start(broker.port, "plant/gw/#", &format!("sink-json-{protocol:?}")).await;
    let rig = Rig::start(MqttConfig { protocol, ..cfg(&broker.url(), Format::Json) });
    rig.publish("line1.count", 0, 1000, 37).await;
    wait_until(30, "1000 values", || sink.values().len() >= 1000).await;
    let values = sink.values();
    let (order, _) = first_arrivals(&values);
    assert_contiguous(&order, 0, 1000);
    for v in &values {
        assert_eq!(v["tag"], "line1.count");
        assert_eq!(v["value"].as_u64(), v["seq"].as_u64(), "value {v}");
        assert_eq!(v["quality"], "good");
    }
    let topics: std::collections::BTreeSet<String> = sink.snapshot().into_iter().map(|(t, _)| t).collect();
    assert_eq!(topics.into_iter().collect::<Vec<_>>(), vec!["plant/gw/line1/count".to_string()]);
    wait_until(10, "every value acknowledged", || rig.acked() >= 1000).await;
    wait_until(10, "the cursor at the end", || rig.cursor() == 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_under_steady_load_delivers_every_value_afterwards_in_order() {
    outage(Protocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_with_mqtt_5_and_a_persistent_session_loses_nothing() {
    outage(Protocol::V5).await;
}

async fn outage(protocol: Protocol) {
    let mut broker = Mosquitto::start();
    let sink = Collector::start(broker.port, "plant/gw/#", &format!("sink-outage-{protocol:?}")).await;
    let rig = Rig::start(MqttConfig { protocol, ..cfg(&broker.url(), Format::JsonBatch) });
    let bus = rig.bus.clone();
    let producer = tokio::spawn(async move {
        // 2,000 values per second for 5 seconds.
        let t = gateway_model::TagId::new("line1.count").unwrap();
        for i in 0..500 {
            let frames: Vec<_> = (0..20)
                .map(|j| {
                    gateway_model::Frame::Data(gateway_model::DataFrame::new(
                        t.clone(),
                        gateway_model::Value::I64(i * 20 + j),
                        gateway_model::Quality::GOOD,
                        0,
                    ))
                })
                .collect();
            bus.publish(std::sync::Arc::new(gateway_model::Batch::from(frames))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.stop(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = sink.values().len();
    broker.resume();
    producer.await.unwrap();
    wait_until(60, "all 10,000 values after the outage", || first_arrivals(&sink.values()).0.len() >= 10_000).await;
    let (order, dups) = first_arrivals(&sink.values());
    assert_contiguous(&order, 0, 10_000);
    assert!(during < 10_000);
    let reconnects = rig
        .metrics
        .reconnects
        .get_or_create(&gateway_connectors::metrics::ConnectorLabel { connector: "up".into() })
        .get();
    assert!(reconnects > 0, "the outage was not noticed");
    eprintln!(
        "outage: {during} values before, {dups} duplicates after reconnecting, {reconnects} reconnection attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_is_retried_and_nothing_is_lost() {
    let port = gateway_bench::free_port();
    let rig = Rig::start(cfg(&format!("mqtt://127.0.0.1:{port}"), Format::JsonBatch));
    rig.publish("a.b", 0, 500, 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rig.acked(), 0);
    // A broker appears on that port later.
    let _broker = Mosquitto::start_on(port);
    let sink = Collector::start(port, "plant/gw/#", "sink-late").await;
    // Values published before the collector subscribed may be gone; publish more and
    // check that everything the connector had is acknowledged and the new ones arrive.
    rig.publish("a.b", 500, 500, 50).await;
    wait_until(30, "everything acknowledged", || rig.cursor() == 1000).await;
    // The broker acknowledges before it has forwarded to the collector.
    let new = || first_arrivals(&sink.values()).0.into_iter().filter(|&s| s >= 500).collect::<Vec<_>>();
    wait_until(10, "the new values at the collector", || new().len() >= 500).await;
    assert_contiguous(&new(), 500, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_wal_holds_drops_the_oldest_and_reports_how_many() {
    let port = gateway_bench::free_port();
    let dir = tempfile::tempdir().unwrap();
    let bus_cfg = gateway_bus::BusSettings {
        wal_max_bytes: 1 << 20,
        wal_segment_bytes: Some(64 << 10),
        wal_overflow: gateway_bus::config::WalOverflow::DropOldest,
        ..common::bus_cfg(dir.path())
    };
    let rig = Rig::start_with(cfg(&format!("mqtt://127.0.0.1:{port}"), Format::JsonBatch), bus_cfg, dir);
    // About 3 MiB of readings while the broker is away: three times what the WAL may keep.
    let total = 200_000usize;
    rig.publish("line1.count", 0, total, 1000).await;
    let w = rig.bus.wal().unwrap().stats();
    assert!(w.dropped_seqs > 0, "the WAL did not overflow: {w:?}");
    let _broker = Mosquitto::start_on(port);
    let sink = Collector::start(port, "plant/gw/#", "sink-overflow").await;
    wait_until(60, "the connector to catch up", || rig.cursor() == total as u64).await;
    let label = gateway_connectors::metrics::ConnectorLabel { connector: "up".into() };
    wait_until(10, "the loss to be counted", || rig.metrics.dropped.get_or_create(&label).get() > 0).await;
    let dropped = rig.metrics.dropped.get_or_create(&label).get();
    // The broker acknowledges before it has forwarded to the collector.
    let last = total as u64 - 1;
    wait_until(10, "the newest value at the collector", || first_arrivals(&sink.values()).0.contains(&last)).await;
    let (order, _) = first_arrivals(&sink.values());
    let first = *order.iter().min().unwrap();
    // What arrived is everything after the loss, without a gap, and the loss is what was reported.
    assert_contiguous(&order, first, total as u64);
    assert_eq!(first, dropped, "the values lost are exactly the ones counted");
    assert_eq!(dropped, w.dropped_seqs.max(dropped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_block_policy_publishers_wait_during_an_outage_and_nothing_is_dropped() {
    let port = gateway_bench::free_port();
    let dir = tempfile::tempdir().unwrap();
    let bus_cfg = gateway_bus::BusSettings {
        wal_max_bytes: 1 << 20,
        wal_segment_bytes: Some(64 << 10),
        wal_overflow: gateway_bus::config::WalOverflow::Block,
        ..common::bus_cfg(dir.path())
    };
    let rig = Rig::start_with(cfg(&format!("mqtt://127.0.0.1:{port}"), Format::JsonBatch), bus_cfg, dir);
    let bus = rig.bus.clone();
    let producer = tokio::spawn(async move {
        let t = gateway_model::TagId::new("line1.count").unwrap();
        for i in 0..200 {
            let frames: Vec<_> = (0..1000)
                .map(|j| {
                    gateway_model::Frame::Data(gateway_model::DataFrame::new(
                        t.clone(),
                        gateway_model::Value::I64(i * 1000 + j),
                        gateway_model::Quality::GOOD,
                        0,
                    ))
                })
                .collect();
            bus.publish(std::sync::Arc::new(gateway_model::Batch::from(frames))).await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!producer.is_finished(), "publishing must wait while the WAL is full and the broker away");
    let head = rig.bus.head_seq();
    assert!(head < 200_000, "head {head}");
    let _broker = Mosquitto::start_on(port);
    tokio::time::timeout(Duration::from_secs(60), producer).await.expect("publishing resumed").unwrap();
    wait_until(60, "the connector to catch up", || rig.cursor() == 200_000).await;
    assert_eq!(rig.bus.wal().unwrap().stats().dropped_seqs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_long_outage_live_values_go_out_while_the_backlog_replays_at_its_limit() {
    let port = gateway_bench::free_port();
    let mut c = cfg(&format!("mqtt://127.0.0.1:{port}"), Format::JsonBatch);
    c.replay_max_rate = 5_000;
    c.batch_max_values = 100;
    let rig = Rig::start(c);
    rig.publish("line1.history", 0, 25_000, 100).await;
    let _broker = Mosquitto::start_on(port);
    let sink = Collector::start(port, "plant/gw/#", "sink-replay").await;
    let started = std::time::Instant::now();
    // While the backlog replays (about five seconds at 5,000 values/s), publish live values.
    tokio::time::sleep(Duration::from_millis(800)).await;
    rig.publish("line1.live", 1_000_000, 10, 10).await;
    wait_until(5, "live values during the replay", || sink.values().iter().any(|v| v["tag"] == "line1.live")).await;
    let live_at = started.elapsed();
    let history_then = sink.values().iter().filter(|v| v["tag"] == "line1.history").count();
    assert!(history_then < 25_000, "the live values waited for the whole backlog");
    wait_until(60, "the whole backlog", || rig.cursor() >= 25_010).await;
    let took = started.elapsed().as_secs_f64();
    let rate = 25_000.0 / took;
    assert!(rate < 5_000.0 * 1.5, "replay ran at {rate:.0} values/s, above the limit");
    eprintln!(
        "live values after {live_at:?} with {history_then} of 25000 history values sent; replay {rate:.0} values/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_from_the_broker_reach_the_device_and_their_acknowledgement_comes_back() {
    let broker = Mosquitto::start();
    let acks = Collector::start(broker.port, "plant/gw/cmd_ack/#", "sink-acks").await;
    let rig = Rig::start(cfg(&broker.url(), Format::Json));
    let mut inbox = rig.bus.route_commands("plc1");
    tokio::spawn(async move {
        while let Some(req) = inbox.recv().await {
            match req.cmd.tag.point() {
                "setpoint" => req.reply(CmdStatus::Ok, ""),
                _ => req.reply(CmdStatus::Failed, "Modbus exception 2 (illegal data address)"),
            }
        }
    });
    let label = gateway_connectors::metrics::ConnectorLabel { connector: "up".into() };
    wait_until(10, "the connector to connect", || rig.metrics.connected.get_or_create(&label).get() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let send = |id: &str, body: String| {
        let c = acks.client.clone();
        let topic = format!("plant/gw/cmd/{id}");
        async move { c.publish(topic, QoS::AtLeastOnce, false, body).await.unwrap() }
    };
    send("c1", json!({"id": "c1", "tag": "plc1.setpoint", "value": 42.5}).to_string()).await;
    send("c2", json!({"id": "c2", "tag": "plc1.broken", "value": 1}).to_string()).await;
    send("c3", json!({"id": "c3", "tag": "plc9.x", "value": 1}).to_string()).await;
    send("c4", "{not json".to_string()).await;
    wait_until(20, "four acknowledgements", || acks.len() >= 4).await;
    let mut by_topic = std::collections::BTreeMap::new();
    for (t, p) in acks.snapshot() {
        by_topic.insert(t, serde_json::from_slice::<serde_json::Value>(&p).unwrap());
    }
    assert_eq!(by_topic["plant/gw/cmd_ack/c1"]["status"], "ok");
    assert_eq!(by_topic["plant/gw/cmd_ack/c2"]["status"], "failed");
    assert!(by_topic["plant/gw/cmd_ack/c2"]["message"].as_str().unwrap().contains("exception 2"));
    assert_eq!(by_topic["plant/gw/cmd_ack/c3"]["status"], "no_route");
    assert_eq!(by_topic["plant/gw/cmd_ack/c4"]["status"], "invalid", "a bad payload gets an answer, not silence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connects_to_a_broker_with_a_test_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    let broker = Mosquitto::start_with(Some(&certs));
    let sink = Collector::start(broker.port, "plant/gw/#", "sink-tls").await;
    let mut c = cfg(&format!("mqtts://localhost:{}", broker.tls_port.unwrap()), Format::JsonBatch);
    c.ca_file = Some(certs.ca.clone());
    let rig = Rig::start(c);
    rig.publish("secure.value", 0, 100, 10).await;
    wait_until(30, "values over TLS", || sink.values().len() >= 100).await;
    // Without the CA the broker's certificate is refused and nothing is sent.
    let mut wrong = cfg(&format!("mqtts://localhost:{}", broker.tls_port.unwrap()), Format::JsonBatch);
    wrong.ca_file = Some(std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let rig2 = Rig::start(wrong);
    rig2.publish("secure.value", 0, 10, 10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rig2.acked(), 0, "an untrusted certificate must not be accepted");
}

fn sp_payload(bytes: &[u8]) -> gateway_connectors::sparkplug::Payload {
    use prost::Message;
    gateway_connectors::sparkplug::Payload::decode(bytes).expect("a Sparkplug payload")
}

fn bd_seq(p: &gateway_connectors::sparkplug::Payload) -> u64 {
    use gateway_connectors::sparkplug::MetricValue;
    match p.metrics.iter().find(|m| m.name.as_deref() == Some("bdSeq")).and_then(|m| m.value.clone()) {
        Some(MetricValue::LongValue(v)) => v,
        other => panic!("no bdSeq metric: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_births_data_commands_and_deaths_follow_the_specification() {
    use gateway_connectors::sparkplug::{Metric, MetricValue, Payload, PropertyKind};
    use prost::Message;
    let broker = Mosquitto::start();
    let sink = Collector::start(broker.port, "spBv1.0/#", "sink-sp").await;
    let acks = Collector::start(broker.port, "plant/gw/cmd_ack/#", "sink-sp-acks").await;
    let mut c = cfg(&broker.url(), Format::SparkplugB);
    c.sparkplug_group_id = "plant".into();
    c.sparkplug_edge_node_id = Some("gw1".into());
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::start_with(c.clone(), common::bus_cfg(dir.path()), tempfile::tempdir().unwrap());
    let mut inbox = rig.bus.route_commands("d1");
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(req) = inbox.recv().await {
            let _ = cmd_tx.send((req.cmd.tag.to_string(), req.cmd.value.clone())).await;
            req.reply(CmdStatus::Ok, "");
        }
    });
    rig.publish("d1.a", 0, 10, 5).await;
    rig.publish("d2.b", 100, 10, 5).await;
    rig.publish("d1.c", 200, 5, 5).await;
    wait_until(20, "25 metrics in DDATA", || {
        sink.snapshot()
            .iter()
            .filter(|(t, _)| t.contains("/DDATA/"))
            .map(|(_, p)| sp_payload(p).metrics.len())
            .sum::<usize>()
            >= 25
    })
    .await;
    let msgs = sink.snapshot();
    assert_eq!(msgs[0].0, "spBv1.0/plant/NBIRTH/gw1", "NBIRTH comes first");
    let nbirth = sp_payload(&msgs[0].1);
    assert_eq!(nbirth.seq, Some(0));
    let bd = bd_seq(&nbirth);
    let mut born: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (i, (topic, bytes)) in msgs.iter().enumerate() {
        let p = sp_payload(bytes);
        let parts: Vec<&str> = topic.split('/').collect();
        assert_eq!(p.seq, Some(i as u64 % 256), "message sequence on {topic}");
        match parts[2] {
            "NBIRTH" => {}
            "DBIRTH" => {
                born.insert(parts[4].to_string(), p.metrics.iter().map(|m| m.name.clone().unwrap()).collect());
            }
            "DDATA" => {
                let names = born.get(parts[4]).unwrap_or_else(|| panic!("DDATA for {} before its DBIRTH", parts[4]));
                for m in &p.metrics {
                    assert!(
                        names.contains(m.name.as_ref().unwrap()),
                        "metric {:?} was not in the device's last DBIRTH",
                        m.name
                    );
                    let props = m.properties.as_ref().unwrap();
                    let q = props.keys.iter().position(|k| k == "Quality").unwrap();
                    assert_eq!(props.values[q].value, Some(PropertyKind::IntValue(192)));
                    assert!(props.keys.iter().any(|k| k == "seq"));
                    assert!(matches!(m.value, Some(MetricValue::LongValue(_))));
                }
            }
            other => panic!("unexpected {other} message"),
        }
    }
    assert_eq!(born["d1"].len(), 2, "d1 was born again when metric c appeared: {born:?}");

    // DCMD reaches the device's driver and is acknowledged.
    let dcmd = Payload {
        timestamp: Some(1),
        metrics: vec![Metric {
            name: Some("a".into()),
            datatype: Some(4),
            value: Some(MetricValue::LongValue(7)),
            ..Default::default()
        }],
        ..Default::default()
    };
    acks.client.publish("spBv1.0/plant/DCMD/gw1/d1", QoS::AtLeastOnce, false, dcmd.encode_to_vec()).await.unwrap();
    let (tag, value) = tokio::time::timeout(Duration::from_secs(10), cmd_rx.recv())
        .await
        .expect("the command reached the driver")
        .unwrap();
    assert_eq!((tag.as_str(), value), ("d1.a", gateway_model::Value::I64(7)));
    wait_until(10, "the DCMD acknowledgement", || acks.len() >= 1).await;
    let ack: serde_json::Value = serde_json::from_slice(&acks.snapshot()[0].1).unwrap();
    assert_eq!(ack["status"], "ok");

    // A crash: the broker publishes the will, NDEATH with the session's bdSeq.
    rig.connectors.take().unwrap().abort();
    wait_until(20, "NDEATH", || sink.snapshot().iter().any(|(t, _)| t.ends_with("/NDEATH/gw1"))).await;
    let death = sink.snapshot().into_iter().find(|(t, _)| t.ends_with("/NDEATH/gw1")).unwrap();
    assert_eq!(bd_seq(&sp_payload(&death.1)), bd, "NDEATH carries the bdSeq of the NBIRTH it ends");

    // The next session (after a restart, same data directory) moves bdSeq on.
    let before = sink.len();
    let Rig { bus, dir: rig_dir, .. } = rig;
    drop(bus);
    // The aborted task lets go of its bus handle (and the WAL's lock) shortly.
    wait_until(10, "the WAL to be unlocked", || {
        !gateway_wal::inspect::inspect(&dir.path().join("wal")).unwrap().in_use
    })
    .await;
    let rig2 = Rig::start_with(c, common::bus_cfg(dir.path()), rig_dir);
    rig2.publish("d1.a", 0, 1, 1).await;
    wait_until(20, "a new NBIRTH", || sink.snapshot()[before..].iter().any(|(t, _)| t.ends_with("/NBIRTH/gw1"))).await;
    let nb = sink.snapshot()[before..].iter().find(|(t, _)| t.ends_with("/NBIRTH/gw1")).cloned().unwrap();
    assert_eq!(bd_seq(&sp_payload(&nb.1)), (bd + 1) % 256);
}

/// A TCP proxy to the broker that holds the broker's first answer (the
/// CONNACK) back for `delay`, like a distant broker behind TLS.
async fn slow_proxy(broker: u16, delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", broker)).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                tokio::time::sleep(delay).await;
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_answers_slowly_is_still_reached() {
    let broker = Mosquitto::start();
    let sink = Collector::start(broker.port, "plant/gw/#", "sink-slow").await;
    let port = slow_proxy(broker.port, Duration::from_millis(600)).await;
    let rig = Rig::start(cfg(&format!("mqtt://127.0.0.1:{port}"), Format::JsonBatch));
    rig.publish("far.away", 0, 200, 20).await;
    wait_until(30, "values through a slow connection", || sink.values().len() >= 200).await;
    let reconnects = rig
        .metrics
        .reconnects
        .get_or_create(&gateway_connectors::metrics::ConnectorLabel { connector: "up".into() })
        .get();
    assert_eq!(reconnects, 0, "a slow CONNACK is not a failure");
}

fn messages_sent(rig: &Rig) -> u64 {
    rig.metrics
        .messages_sent
        .get_or_create(&gateway_connectors::metrics::ConnectorLabel { connector: "up".into() })
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_waiting_on_the_bus_go_out_together_and_the_tuned_linger_holds_them() {
    // Behind: 400 one-value batches wait while the broker is away; once it
    // is there, they leave in a handful of messages, not 400.
    let port = gateway_bench::free_port();
    let rig = Rig::start(cfg(&format!("mqtt://127.0.0.1:{port}"), Format::JsonBatch));
    rig.publish("a.b", 0, 400, 1).await;
    let _broker = Mosquitto::start_on(port);
    wait_until(30, "everything acknowledged", || rig.cursor() == 400).await;
    let behind = messages_sent(&rig);
    assert!((1..=10).contains(&behind), "400 waiting values went out in {behind} messages");

    // Up to date, with the bus's tuned linger at 300 ms: batches published
    // 20 ms apart are held and sent a few at a time.
    let sink = Collector::start(port, "plant/gw/#", "sink-linger").await;
    rig.bus.set_batch_linger(Duration::from_millis(300));
    for i in 0..20 {
        rig.publish("a.b", 400 + i, 1, 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until(30, "everything acknowledged", || rig.cursor() == 420).await;
    let held = messages_sent(&rig) - behind;
    assert!((1..=6).contains(&held), "20 values 20 ms apart under a 300 ms linger went out in {held} messages");
    wait_until(10, "the held values at the collector", || sink.values().len() >= 20).await;
    assert_contiguous(&first_arrivals(&sink.values()).0, 400, 420);
}
