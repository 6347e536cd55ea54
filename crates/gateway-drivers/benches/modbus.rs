//! End-to-end benchmark of the Modbus TCP driver, printed as Markdown: the
//! scenario of `gateway_bench::modbus` (200 in-process
//! `tokio-modbus` servers, 200 devices of 50 `f32` tags polled through the
//! real driver manager into a real bus) at poll intervals of 1000, 200, 100
//! and 10 ms (10k, 50k, 100k and 1M points/s offered; the last shows the
//! headroom), each level in a fresh child process so its peak RSS is its own.
//!
//! `cargo bench -p gateway-drivers --bench modbus` (seconds per level:
//! `MODBUS_BENCH_SECONDS`, default 5). `edge-gateway bench` runs the
//! 100,000 points/s level as part of the performance budget.

use std::process::ExitCode;
use std::time::Duration;

use gateway_bench::child;
use gateway_bench::modbus::{self, Level, Report};
use gateway_bus::Preset;

const DEVICES: usize = 200;
const TAGS: usize = 50;

/// Marks a child copy of this bench that runs one level (`gateway_bench::child`).
const CHILD_FLAG: &str = "--modbus-loadtest-child";

fn main() -> ExitCode {
    if let Some(code) = child::entry(CHILD_FLAG, |level: Level| modbus::run(&level)) {
        return code;
    }
    let seconds = std::env::var("MODBUS_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    println!(
        "## Modbus TCP driver, end to end ({DEVICES} devices × {TAGS} f32 tags, in-process tokio-modbus servers)\n"
    );
    println!(
        "| bus preset | offered points/s | poll ms | delivered points/s | good | polls/s | CPU (process, cores) | CPU (gateway side, cores) | peak RSS MiB (process) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for preset in [Preset::Default, Preset::MemoryOptimized] {
        for poll_ms in [1000, 200, 100, 10] {
            let level = Level { preset, devices: DEVICES, tags: TAGS, poll_ms, warmup_s: 2.0, seconds };
            let timeout = Duration::from_secs_f64((level.warmup_s + level.seconds) * 4.0 + 120.0);
            let r: Report = match child::run(CHILD_FLAG, &level, timeout) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("level {level:?} failed: {e}");
                    continue;
                }
            };
            println!(
                "| {} | {} | {} | {:.0} | {:.1}% | {:.0} | {:.2} | {:.2} | {:.1} |",
                preset.name(),
                level.offered(),
                poll_ms,
                r.points_per_s,
                r.good_share * 100.0,
                r.polls_per_s,
                r.cpu_total,
                r.cpu_gateway,
                r.peak_rss_mib,
            );
            if r.connected != DEVICES {
                eprintln!("note: only {} of {DEVICES} devices connected at the end", r.connected);
            }
        }
    }
    ExitCode::SUCCESS
}
