//! MQTT connector benchmark against a local mosquitto, one payload format per
//! child process (so each RSS figure is its own):
//!
//! ```text
//! cargo bench -p gateway-connectors --features testing --bench mqtt
//! ```

use gateway_connectors::bench::{MqttReport, MqttScenario, run};
use gateway_connectors::mqtt::Format;

const CHILD: &str = "--mqtt-bench-child";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == CHILD) {
        let s: MqttScenario = serde_json::from_str(&args[i + 1]).expect("scenario");
        let r = run(&s).expect("scenario ran");
        println!("{}", serde_json::to_string(&r).expect("report"));
        return;
    }
    let secs: f64 = std::env::var("MQTT_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    println!("## MQTT connector against a local mosquitto (QoS 1, {secs} s sustained, 100,000-value outage)\n");
    println!(
        "| format | values/s confirmed | messages/s | bytes/value | replay values/s | gateway CPU (cores) | broker CPU (cores) | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for format in [Format::Json, Format::JsonBatch, Format::SparkplugB] {
        let s = MqttScenario { format, seconds: secs, outage_values: 100_000, batch: 100 };
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .arg(CHILD)
            .arg(serde_json::to_string(&s).expect("json"))
            .output()
            .expect("child runs");
        let line = String::from_utf8_lossy(&out.stdout);
        let Some(r) =
            line.lines().rev().find(|l| l.starts_with('{')).and_then(|l| serde_json::from_str::<MqttReport>(l).ok())
        else {
            println!("| {format:?} | failed: {} |", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
            continue;
        };
        println!(
            "| {format:?} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} | {:.2} | {:.1} |",
            r.values_per_s,
            r.messages_per_s,
            r.bytes_per_value,
            r.replay_values_per_s,
            r.cpu_cores,
            r.broker_cpu_cores,
            r.peak_rss as f64 / (1 << 20) as f64
        );
    }
}
