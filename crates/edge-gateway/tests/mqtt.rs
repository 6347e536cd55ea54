//! The whole gateway with an MQTT uplink to a real mosquitto, killed with
//! SIGKILL in the middle of a stream and started again. Readings go out
//! before the WAL's group commit makes them durable, so the broker may see a
//! reading the crash then lost: its sequence number must never be given to
//! another reading. After a crash the numbering jumps past the numbers the
//! log had reserved; no other gap is allowed.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Gateway;
use gateway_bench::mosquitto::Mosquitto;
use gateway_bench::{free_port, wait_until};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// A reading as the broker delivered it: its sequence number, tag and value.
type Seen = (u64, String, String);

/// Readings received from `json_batch` messages, in arrival order.
async fn collect(port: u16) -> (Arc<Mutex<Vec<Seen>>>, tokio::task::JoinHandle<()>) {
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
                        // Alarm transitions travel on the bus too (the gateway's
                        // watch on itself may raise one): they carry their seq.
                        if p.topic.starts_with("gw/alarms/") {
                            out.push((v["seq"].as_u64().expect("seq"), p.topic.clone(), v["code"].to_string()));
                            continue;
                        }
                        for x in v["values"].as_array().into_iter().flatten() {
                            let tag = x["tag"].as_str().unwrap_or("").to_owned();
                            out.push((x["seq"].as_u64().expect("seq"), tag, x["value"].to_string()));
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

/// Checks what the broker delivered across one crash: no sequence number
/// carries two different readings, readings before the crash are
/// contiguous, and the only gap is the one the crash made: from readings the
/// crash lost (never durable) through the numbers the log had reserved.
fn check_across_a_crash(got: &[Seen], before: u64, data: &std::path::Path) {
    let mut by_seq: HashMap<u64, (&str, &str)> = HashMap::new();
    for (seq, tag, value) in got {
        if let Some(prev) = by_seq.insert(*seq, (tag, value)) {
            assert_eq!(prev, (tag.as_str(), value.as_str()), "seq {seq} was given to two different readings");
        }
    }
    // The only numbers never seen: those the WAL skipped after the crash
    // (reserved by the crashed run; some of them may have reached the broker
    // before the kill and were not durable).
    let skips = common::reserved_skips(data);
    assert_eq!(skips.len(), 1, "one crash, one skip: {skips:?}");
    let (lo, hi) = skips[0];
    assert!(hi > before, "the skip {lo}..{hi} ends after the crash's last reading ({before})");
    let max = *by_seq.keys().max().unwrap();
    let missing: Vec<u64> = (0..=max).filter(|s| !by_seq.contains_key(s)).collect();
    let outside: Vec<u64> = missing.iter().copied().filter(|s| !(lo..hi).contains(s)).take(10).collect();
    assert!(outside.is_empty(), "readings never delivered: {outside:?} (skip {lo}..{hi})");
    eprintln!(
        "{} values delivered ({} duplicates) across a SIGKILL at seq {before}; gap after the crash: {} numbers",
        got.len(),
        got.len() - by_seq.len(),
        missing.len()
    );
}

fn config(dir: &std::path::Path, broker: &Mosquitto, bus: &str) -> std::path::PathBuf {
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[bus]
{bus}

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
    config
}

/// A gateway streaming to a fresh broker, killed with SIGKILL once the
/// broker has `values` readings: what the three crash tests share.
struct Crashed {
    broker: Mosquitto,
    seen: Arc<Mutex<Vec<Seen>>>,
    _collector: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
    /// The highest sequence number the broker had at the kill.
    before: u64,
}

impl Crashed {
    async fn after(values: usize, bus_extra: &str) -> Crashed {
        let broker = Mosquitto::start();
        let (seen, collector) = collect(broker.port).await;
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &broker, bus_extra);
        let data = dir.path().join("data");
        let port = free_port();
        let g = Gateway::start_with(&data, port, Some(&config));
        wait_until(60, "values before the kill", || seen.lock().unwrap().len() >= values).await;
        g.kill();
        let before = seen.lock().unwrap().iter().map(|s| s.0).max().unwrap();
        Crashed { broker, seen, _collector: collector, _dir: dir, config, data, port, before }
    }

    /// The gateway started again on the same data.
    fn restart(&self) -> Gateway {
        Gateway::start_with(&self.data, self.port, Some(&self.config))
    }

    /// Readings the broker has with a number past the kill's.
    fn after_the_kill(&self) -> usize {
        self.seen.lock().unwrap().iter().filter(|x| x.0 > self.before).count()
    }

    fn check(&self) {
        check_across_a_crash(&self.seen.lock().unwrap(), self.before, &self.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_and_a_restart_leave_no_gap_but_the_crashs_at_the_broker() {
    let c = Crashed::after(3_000, "").await;
    let g = c.restart();
    wait_until(60, "values after the restart", || c.after_the_kill() > 3_000).await;
    g.stop();
    c.check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_sending_and_the_group_commit_reuses_no_sequence_number() {
    // A group commit once a minute: everything the broker gets before the
    // kill went out before it was durable.
    let c = Crashed::after(2_000, "wal_flush_ms = 60000").await;
    let sent_before: HashSet<u64> = c.seen.lock().unwrap().iter().map(|s| s.0).collect();
    let g = c.restart();
    // The cursor never passed the (never synced) log, so what the log kept
    // is sent again, and new readings follow after the reserved numbers.
    wait_until(60, "new values after the restart", || c.after_the_kill() > 2_000).await;
    g.stop();
    c.check();
    let got = c.seen.lock().unwrap().clone();
    let resent = got.iter().skip(sent_before.len()).filter(|x| sent_before.contains(&x.0)).count();
    eprintln!("{resent} readings sent before the kill were sent again after it");
}

/// Frames the gateway on `port` has published since it started.
fn published(port: u16) -> u64 {
    let (_, text) = common::http(port, "GET", "/metrics", None);
    text.as_str()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("gateway_bus_publish_total ")?.trim().parse::<f64>().ok()))
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_readings_made_while_the_broker_was_away_follow_as_soon_as_it_is_back() {
    // The connector's cursor sits before the numbers the log skipped after
    // the crash; with a one-minute group commit nothing after the skip is
    // durable for a minute. The connector must still go straight past the
    // skip and send what waited, not only the live values that follow.
    let mut c = Crashed::after(2_000, "wal_flush_ms = 60000").await;
    c.broker.stop(false);
    let g = c.restart();
    wait_until(60, "readings made while the broker is away", || published(c.port) >= 5_000).await;
    let waiting = published(c.port);
    c.broker.resume();
    wait_until(30, "the readings that waited, and more", || c.after_the_kill() as u64 > waiting + 1_000).await;
    g.stop();
    c.check();
}
