//! The whole gateway with an MQTT uplink to a real mosquitto: killed with
//! SIGKILL in the middle of a stream and started again, the broker must have
//! received every sequence number, with no gap.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Gateway;
use gateway_bench::mosquitto::Mosquitto;
use gateway_bench::{free_port, wait_until};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Sequence numbers received from `json_batch` messages, in arrival order.
async fn collect(port: u16) -> (Arc<Mutex<Vec<u64>>>, tokio::task::JoinHandle<()>) {
    let mut opts = MqttOptions::new("collector", "127.0.0.1", port);
    opts.set_clean_session(false);
    opts.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut ev) = AsyncClient::new(opts, 100);
    let seqs = Arc::new(Mutex::new(Vec::new()));
    let s = seqs.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready = Some(ready_tx);
    let task = tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe("gw/#", QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                        let mut out = s.lock().unwrap();
                        for x in v["values"].as_array().into_iter().flatten() {
                            out.push(x["seq"].as_u64().expect("seq"));
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx).await.expect("subscribed").unwrap();
    (seqs, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_and_a_restart_leave_no_gap_at_the_broker() {
    let broker = Mosquitto::start();
    let (seqs, _task) = collect(broker.port).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[devices]]
name = "fast"
driver = "sim"
poll_interval_ms = 5
generate = {{ count = 40, signal = "counter" }}

[[connectors]]
name = "uplink"
kind = "mqtt"
url = "{}"
format = "json_batch"
topic_prefix = "gw"
reconnect_min_ms = 50
"#,
            broker.url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let g = Gateway::start_with(&data, port, Some(&config));
    wait_until(60, "values before the crash", || seqs.lock().unwrap().len() >= 3_000).await;
    g.kill();
    let before = seqs.lock().unwrap().iter().copied().max().unwrap();
    let g = Gateway::start_with(&data, port, Some(&config));
    wait_until(60, "values after the restart", || seqs.lock().unwrap().iter().any(|&x| x > before + 3_000)).await;
    g.stop();

    let got = seqs.lock().unwrap().clone();
    let unique: HashSet<u64> = got.iter().copied().collect();
    let max = *unique.iter().max().unwrap();
    let missing: Vec<u64> = (0..=max).filter(|s| !unique.contains(s)).take(10).collect();
    assert!(missing.is_empty(), "sequence numbers never delivered: {missing:?} (of 0..={max})");
    eprintln!(
        "{} values delivered ({} duplicates) across a SIGKILL at seq {before}",
        got.len(),
        got.len() - unique.len()
    );
}
