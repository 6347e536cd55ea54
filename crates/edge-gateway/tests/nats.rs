//! The whole gateway feeding a stream with 3 replicas on a real 3-node
//! JetStream cluster: killed with SIGKILL in the middle of a stream and
//! started again, the stream must hold every reading of its counter tags
//! exactly once (the resent messages dropped by their `Nats-Msg-Id`), read
//! back through a JetStream consumer.

mod common;

use std::collections::HashSet;

use common::Gateway;
use gateway_bench::nats_server::{NatsCluster, json_seqs, read_stream};
use gateway_bench::{free_port, wait_until};

/// Readings the stream holds now.
async fn stream_seqs(reader: &async_nats::Client) -> Vec<u64> {
    match read_stream(reader, "FLEET").await {
        Ok(m) => json_seqs(&m),
        // Not created yet.
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_and_a_restart_leave_every_reading_in_the_r3_stream_exactly_once() {
    let cluster = NatsCluster::start();
    let servers: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[gateway]
name = "line1"

[[devices]]
name = "fast"
driver = "sim"
poll_interval_ms = 5
generate = {{ count = 40, signal = "counter" }}

[[connectors]]
name = "plant"
kind = "nats"
servers = [{}]
stream = "FLEET"
replicas = 3
format = "json_batch"
batch_max_values = 200
reconnect_min_ms = 50
"#,
            servers.join(", ")
        ),
    )
    .unwrap();
    let reader = async_nats::connect(cluster.urls().as_slice()).await.unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let g = Gateway::start_with(&data, port, Some(&config));
    let mut seen = Vec::new();
    wait_until(60, "readings in the stream before the crash", || {
        // wait_until's condition is synchronous: poll the stream from a blocking section.
        seen = tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(stream_seqs(&reader)));
        seen.len() >= 3_000
    })
    .await;
    g.kill();
    let before = seen.iter().copied().max().unwrap();
    let g = Gateway::start_with(&data, port, Some(&config));
    wait_until(60, "readings after the restart", || {
        seen = tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(stream_seqs(&reader)));
        seen.iter().any(|&s| s > before + 3_000)
    })
    .await;
    g.stop();

    let got = stream_seqs(&reader).await;
    let unique: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "{} readings are in the stream twice", got.len() - unique.len());
    let max = *unique.iter().max().unwrap();
    // After a crash the WAL skips the sequence numbers it had reserved (none
    // is ever given to two readings): the stream misses exactly those, so
    // every reading durable at the crash (sent or not) is in it.
    let skips = common::reserved_skips(&data);
    assert_eq!(skips.len(), 1, "one crash, one skip: {skips:?}");
    let (lo, hi) = skips[0];
    assert!(lo > before, "the skip {lo}..{hi} starts after the readings stored before the crash ({before})");
    let missing: Vec<u64> = (0..=max).filter(|s| !unique.contains(s)).collect();
    let outside: Vec<u64> = missing.iter().copied().filter(|s| !(lo..hi).contains(s)).take(10).collect();
    assert!(outside.is_empty(), "readings never stored: {outside:?} (of 0..={max}, skip {lo}..{hi})");
    let messages = read_stream(&reader, "FLEET").await.unwrap();
    assert!(messages.iter().all(|m| m.subject == "gw.line1.batch"), "{}", messages[0].subject);
    assert!(messages.iter().all(|m| m.msg_id.as_deref().is_some_and(|id| id.starts_with("line1.plant."))));
    eprintln!(
        "{} readings once each across a SIGKILL at seq {before} (skipped after it: {})",
        got.len(),
        missing.len()
    );
}
