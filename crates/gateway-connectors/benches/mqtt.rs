//! MQTT connector benchmark against a local mosquitto, one payload format per
//! child process (so each RSS figure is its own):
//!
//! ```text
//! cargo bench -p gateway-connectors --bench mqtt   # MQTT_BENCH_SECONDS=5
//! ```

use std::process::ExitCode;
use std::time::Duration;

use gateway_bench::child;
use gateway_bench::mqtt::{self, MqttReport, MqttScenario};

/// Marks a child copy of this bench that runs one format (`gateway_bench::child`).
const CHILD_FLAG: &str = "--mqtt-bench-child";

fn main() -> ExitCode {
    if let Some(code) = child::entry(CHILD_FLAG, |s: MqttScenario| mqtt::run(&s)) {
        return code;
    }
    let secs: f64 = std::env::var("MQTT_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    println!("## MQTT connector against a local mosquitto (QoS 1, {secs} s sustained, 100,000-value outage)\n");
    println!(
        "| format | values/s confirmed | messages/s | bytes/value | replay values/s | gateway CPU (cores) | broker CPU (cores) | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for format in ["json", "json_batch", "sparkplug_b"] {
        let s = MqttScenario { format: format.into(), seconds: secs, outage_values: 100_000, batch: 100 };
        // Sustained load, then up to 120 s of catching up and 300 s of replay.
        let timeout = Duration::from_secs_f64(secs * 4.0 + 600.0);
        let r: MqttReport = match child::run(CHILD_FLAG, &s, timeout) {
            Ok(r) => r,
            Err(e) => {
                println!("| {format} | failed: {e} |");
                continue;
            }
        };
        println!(
            "| {format} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} | {:.2} | {:.1} |",
            r.values_per_s,
            r.messages_per_s,
            r.bytes_per_value,
            r.replay_values_per_s,
            r.cpu_cores,
            r.broker_cpu_cores,
            r.peak_rss as f64 / (1 << 20) as f64
        );
    }
    ExitCode::SUCCESS
}
