//! The NATS connector against a real 3-node JetStream cluster on loopback
//! (Debian's nats-server), one cluster for this whole binary: a counter
//! published steadily into a stream with 3 replicas while the stream's leader
//! is killed and later restarted, then while the whole cluster is down for a
//! while, must be in the stream complete, each reading once, read back
//! through a JetStream consumer; the backlog of the outage in order.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::Rig;
use gateway_bench::nats_server::{NatsCluster, json_seqs, read_stream, stream_leader};
use gateway_bench::wait_until;
use gateway_connectors::nats::{Format, NatsConfig};
use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value};

const STREAM: &str = "PLANT";

/// Publishes the counter `line1.count` in batches of 20 every 10 ms (2,000
/// values/s) until stopped; returns how many it published.
fn counter(rig: &Rig, stop: Arc<AtomicBool>, published: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let bus = rig.bus.clone();
    tokio::spawn(async move {
        let tag = TagId::new("line1.count").unwrap();
        while !stop.load(Ordering::Relaxed) {
            let n = published.load(Ordering::Relaxed);
            let frames: Vec<Frame> = (0..20)
                .map(|j| Frame::Data(DataFrame::new(tag.clone(), Value::I64((n + j) as i64), Quality::GOOD, 0)))
                .collect();
            bus.publish(Arc::new(Batch::from(frames))).await.unwrap();
            published.fetch_add(20, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Duplicates, and readings out of order, in stream order.
fn check_complete(seqs: &[u64], total: u64) -> (usize, usize) {
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    let missing: Vec<u64> = (0..total).filter(|s| !unique.contains(s)).take(10).collect();
    assert!(missing.is_empty(), "readings missing from the stream: {missing:?}… (of {total})");
    assert_eq!(unique.len() as u64, total, "readings in the stream that were never published");
    let out_of_order = seqs.windows(2).filter(|w| w[1] < w[0]).count();
    (seqs.len() - unique.len(), out_of_order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_gets_every_reading_once_through_a_leader_kill_and_a_whole_cluster_outage() {
    let mut cluster = NatsCluster::start();
    let urls = cluster.urls();
    let url_refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let cfg = NatsConfig {
        stream: STREAM.into(),
        replicas: 3,
        format: Format::JsonBatch,
        batch_max_values: 50,
        ack_timeout_ms: 2000,
        reconnect_min_ms: 100,
        reconnect_max_ms: 1000,
        ..NatsConfig::new(&url_refs)
    };
    let rig = Rig::start(cfg);
    let (stop, published) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let producer = counter(&rig, stop.clone(), published.clone());
    let reader = async_nats::connect(urls.as_slice()).await.unwrap();

    // The leader of the stream is killed mid-stream, and restarted later.
    wait_until(60, "the first values in the stream", || rig.cursor() >= 1000).await;
    let leader = stream_leader(&reader, STREAM).await.unwrap().expect("a stream leader");
    let i = cluster.index_of(&leader).expect("the leader is a node of the cluster");
    cluster.kill(i);
    let at_kill = published.load(Ordering::Relaxed);
    wait_until(60, "delivery to go on under a new leader", || rig.cursor() >= at_kill + 2000).await;
    cluster.restart(i);
    wait_until(60, "the restarted node to catch up", || cluster.healthy()).await;

    // The whole cluster down for a while: the backlog waits in the WAL.
    let before_outage = published.load(Ordering::Relaxed);
    wait_until(60, "delivery to catch up before the outage", || rig.cursor() >= before_outage).await;
    cluster.kill_all();
    let down_from = rig.cursor();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rig.cursor();
    cluster.start_all();
    wait_until(60, "values after the cluster is back", || rig.cursor() > published.load(Ordering::Relaxed) - 1000)
        .await;
    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    let total = published.load(Ordering::Relaxed);
    wait_until(60, "every reading acknowledged", || rig.cursor() == total).await;

    let seqs = json_seqs(&read_stream(&reader, STREAM).await.unwrap());
    let (dups, out_of_order) = check_complete(&seqs, total);
    assert_eq!(dups, 0, "a reading is in the stream twice");
    // The outage's backlog was replayed in order, after everything before it.
    let backlog: Vec<u64> = seqs.iter().copied().filter(|&s| s >= down_from).collect();
    assert!(backlog.windows(2).all(|w| w[1] > w[0]), "the backlog of the outage is out of order");
    assert!(during - down_from < 200, "acknowledged while the whole cluster was down: {}", during - down_from);
    let label = gateway_connectors::metrics::ConnectorLabel { connector: "up".into() };
    let sent = rig.metrics.values_sent.get_or_create(&label).get();
    eprintln!(
        "{total} readings, leader {leader} killed at {at_kill}, cluster down from {down_from}; \
         {sent} sent ({} sent again, dropped by the stream as duplicates or stored after a failure), \
         {out_of_order} out of order in the stream",
        sent - total
    );
}
