//! Self-tuning in the real binary: with the CPUs kept busy, the gateway
//! widens its WAL group commit and batch linger step by step (seen in
//! `/metrics`), the counter still reaches the broker without a gap or a
//! repeat, a reload that switches tuning off returns to the configured
//! intervals; and a connector's own `batch_linger_ms` puts many polls into
//! one message.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Gateway, check_counter, collect, http, http_as, token};
use gateway_bench::mosquitto::Mosquitto;
use gateway_bench::{free_port, wait_until_blocking};

/// The value of the series `name` (labels included, as `/metrics` writes them).
fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, text) = http(port, "GET", "/metrics", None);
    text.as_str()?.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == name).then(|| v.parse().ok()).flatten()
    })
}

fn write_config(path: &Path, broker: &Mosquitto, tuning: &str) {
    let text = format!(
        r#"
[bus]
wal_flush_ms = 10

[[devices]]
name = "count"
driver = "sim"
poll_interval_ms = 10
tags = [{{ name = "c", signal = "counter" }}]

[[connectors]]
name = "up"
kind = "mqtt"
url = "{url}"
format = "json_batch"
topic_prefix = "gw"

[[connectors]]
name = "held"
kind = "mqtt"
url = "{url}"
format = "json_batch"
topic_prefix = "held"
batch_linger_ms = 200

[tuning]
{tuning}
"#,
        url = broker.url()
    );
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_cpu_load_the_gateway_widens_its_intervals_within_limits_and_loses_nothing() {
    let broker = Mosquitto::start();
    let up = collect(broker.port, "gw/#").await;
    let held = collect(broker.port, "held/#").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    // Thresholds low enough that the spinning threads below make the CPUs
    // count as busy on any machine; one second of it per step.
    write_config(
        &cfg,
        &broker,
        "cpu_high_percent = 40.0\ncpu_low_percent = 1.0\nsustain_s = 1\nmax_wal_flush_ms = 50\nmax_batch_linger_ms = 5",
    );
    let data = dir.path().join("data");
    let port = free_port();
    let g = Gateway::start_with(&data, port, Some(&cfg));
    assert_eq!(metric(port, "gateway_tuning_wal_flush_seconds"), Some(0.01), "it starts at the configured interval");
    assert_eq!(metric(port, "gateway_tuning_batch_linger_seconds"), Some(0.0));

    // Keep every CPU busy.
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..std::thread::available_parallelism().map_or(2, |n| n.get()))
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    wait_until_blocking(60, "the gateway to widen to its limits", || metric(port, "gateway_tuning_level") >= Some(3.0));
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    // Level 3 is 10 ms doubled three times, capped at 50 ms, and a 5 ms linger.
    assert_eq!(metric(port, "gateway_tuning_wal_flush_seconds"), Some(0.05));
    assert_eq!(metric(port, "gateway_tuning_batch_linger_seconds"), Some(0.005));
    assert!(metric(port, "gateway_tuning_decisions_total{direction=\"widen\"}") >= Some(3.0));

    // Switched off by a reload: back to the configured intervals at once.
    write_config(&cfg, &broker, "enabled = false");
    let admin = token(&data, "ops", "admin");
    let (st, changes) = http_as(port, Some(&admin), "POST", "/api/v1/system/reload", None);
    assert_eq!(st, 200, "{changes}");
    assert_eq!(changes["tuning_changed"], true, "{changes}");
    assert_eq!(changes["restart_needed"], serde_json::json!([]), "{changes}");
    wait_until_blocking(10, "the configured intervals again", || metric(port, "gateway_tuning_level") == Some(0.0));
    assert_eq!(metric(port, "gateway_tuning_wal_flush_seconds"), Some(0.01));
    assert_eq!(metric(port, "gateway_tuning_batch_linger_seconds"), Some(0.0));
    assert!(metric(port, "gateway_tuning_decisions_total{direction=\"narrow\"}") >= Some(1.0));

    // Through all of it the counter reached the broker whole, on both connectors.
    let before = check_counter(&up, "count.c");
    wait_until_blocking(30, "more values after the reload", || check_counter(&up, "count.c") > before + 50);
    check_counter(&held, "count.c");
    // The connector with a 200 ms linger sent the 10 ms polls many to a
    // message; the other, one message per poll or close to it.
    let (values, messages) = {
        let g = held.lock().unwrap();
        (g.0.get("count.c").map_or(0, Vec::len), g.1)
    };
    assert!(messages > 0 && values as f64 / messages as f64 > 4.0, "{values} values in {messages} messages");
    g.stop();
}
