//! History through the real binary, killed with SIGKILL while it writes:
//! after each restart it must go on where its last commit ended, so a
//! counter's history holds every value of every run exactly once (a run may
//! end early, where the bus had not made its last readings durable when the
//! process died, but never has a gap or a repeat).

mod common;

use std::time::Duration;

use common::{Gateway, http};
use gateway_bench::{free_port, wait_until_blocking};
use serde_json::Value;

/// A counter read every 2 ms beside 400 other tags every 10 ms (40,000
/// values/s), so transactions are large and frequent when the kill comes.
const CONFIG: &str = r#"
[history]
commit_interval_ms = 50

[[devices]]
name = "count"
driver = "sim"
poll_interval_ms = 2

[[devices.tags]]
name = "n"
signal = "counter"

[[devices]]
name = "load"
driver = "sim"
poll_interval_ms = 10
generate = { count = 400, signal = "sine" }
"#;

/// Every stored value of `tag`, oldest first, through the API's pages.
fn history_of(port: u16, tag: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let uri = format!("/api/v1/history?tags={tag}&from=-1d&to=now&limit=100000{cursor}");
        let (status, v) = http(port, "GET", &uri, None);
        assert_eq!(status, 200, "{v}");
        for p in v["series"][0]["points"].as_array().cloned().unwrap_or_default() {
            out.push((p[0].as_str().unwrap().to_owned(), p[1].as_i64().unwrap()));
        }
        match &v["next"] {
            Value::String(c) => cursor = format!("&cursor={c}"),
            _ => return out,
        }
    }
}

fn stored(port: u16, tag: &str) -> usize {
    let (status, v) = http(port, "GET", &format!("/api/v1/history/{tag}/latest"), None);
    if status == 200 { v["value"].as_i64().unwrap_or(0) as usize } else { 0 }
}

#[test]
fn a_counter_has_every_value_exactly_once_after_sigkills_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let starts = 4;
    for run in 0..starts {
        let gw = Gateway::start_with(&data, port, Some(&config));
        // Let it write a while (a different while each time), then kill it.
        wait_until_blocking(60, "history to record the counter", || stored(port, "count.n") > 200);
        std::thread::sleep(Duration::from_millis(150 + 170 * run));
        if run + 1 < starts {
            gw.kill();
        } else {
            let values = history_of(port, "count.n");
            gw.stop();
            check_runs(&values, starts as usize);
        }
    }
}

/// Splits the values into runs (the counter starts again at 0 on each
/// start) and checks each is 0, 1, 2, ... with nothing missing or repeated.
fn check_runs(values: &[(String, i64)], starts: usize) {
    let mut runs: Vec<Vec<i64>> = Vec::new();
    for (_, v) in values {
        match runs.last_mut() {
            Some(run) if *v > *run.last().unwrap() => run.push(*v),
            _ => runs.push(vec![*v]),
        }
    }
    assert_eq!(runs.len(), starts, "one run per start: {:?}", runs.iter().map(|r| (r[0], r.len())).collect::<Vec<_>>());
    for (i, run) in runs.iter().enumerate() {
        let want: Vec<i64> = (0..run.len() as i64).collect();
        if *run != want {
            let gap = run.windows(2).find(|w| w[1] != w[0] + 1);
            panic!("run {i} of {} values is not 0..n: first break at {gap:?}", run.len());
        }
    }
    let mut times: Vec<&String> = values.iter().map(|(t, _)| t).collect();
    times.dedup();
    assert_eq!(times.len(), values.len(), "no time twice");
}
