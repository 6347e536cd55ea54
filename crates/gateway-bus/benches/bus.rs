//! Bus benchmarks, printed as Markdown for BENCHMARKS.md.
//!
//! ```text
//! cargo bench -p gateway-bus --bench bus             # full run (a few minutes)
//! cargo bench -p gateway-bus --bench bus -- --quick  # short
//! ```
//!
//! For each preset, in memory and through the WAL, with 1 and 4 publishers
//! and 1 and 8 subscribers: throughput (publishers as fast as the bus lets
//! them), publish-to-subscriber latency, and peak memory; then the same
//! batches over `tokio::sync::broadcast`; then the latency targets at a fixed
//! open-loop rate.

use std::process::ExitCode;
use std::time::Duration;

use gateway_bench::bus::{self, Report, Scenario, Transport};
use gateway_bench::child;
use gateway_bus::{Persistence, Preset};

/// Marks a child copy of this bench that runs one scenario (`gateway_bench::child`).
const CHILD_FLAG: &str = "--loadtest-child";

fn mb(b: u64) -> String {
    if b == 0 { "n/a".into() } else { format!("{:.1}", b as f64 / (1 << 20) as f64) }
}

fn row(label: &str, s: &Scenario, r: &Report) {
    println!(
        "| {label} | {} | {} | {} | {:.2} M | {:.2} M | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
        s.preset,
        s.publishers,
        s.subscribers,
        r.frames_per_s / 1e6,
        r.delivered_per_s / 1e6,
        r.latency.p50_us,
        r.latency.p99_us,
        r.latency.p999_us,
        r.latency_from_due.p99_us,
        r.drops,
        mb(r.peak_rss),
        mb(r.ring_slot_bytes),
    );
}

fn header() {
    println!(
        "| transport | preset | pubs | subs | published/s | delivered/s (slowest sub) | p50 µs | p99 µs | p99.9 µs | p99 from due µs | drops | peak RSS MiB | ring slots MiB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
}

/// Runs `s` in a fresh child process, so that its peak RSS is its own.
fn measure(s: &Scenario) -> Report {
    let timeout = s.duration * 4 + Duration::from_secs(120);
    child::run(CHILD_FLAG, s, timeout).unwrap_or_else(|e| panic!("scenario {s:?}: {e}"))
}

fn main() -> ExitCode {
    if let Some(code) = child::entry(CHILD_FLAG, |s: Scenario| Ok::<_, String>(bus::run(&s))) {
        return code;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let secs = if quick { 0.4 } else { 2.0 };
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).unwrap();
    let scenario = |preset, persistence, transport, publishers, subscribers, rate| Scenario {
        preset,
        persistence,
        transport,
        publishers,
        subscribers,
        batch_size: 100,
        rate,
        duration: Duration::from_secs_f64(secs),
        dir: dir.path().to_owned(),
    };
    println!("## gateway-bus benchmarks ({}), batches of 100 frames\n", if quick { "quick" } else { "full" });
    for (title, persistence) in [
        ("in memory (lossy subscribers)", Persistence::Memory),
        ("through the WAL (durable subscribers)", Persistence::Wal),
    ] {
        println!("### Throughput, {title}\n");
        header();
        for preset in Preset::ALL {
            for (p, s) in [(1, 1), (1, 8), (4, 1), (4, 8)] {
                let sc = scenario(preset, persistence, Transport::Bus, p, s, None);
                let r = measure(&sc);
                row("bus", &sc, &r);
                if persistence == Persistence::Memory {
                    let sc = scenario(preset, persistence, Transport::TokioBroadcast, p, s, None);
                    let r = measure(&sc);
                    row("tokio broadcast", &sc, &r);
                }
            }
        }
        println!();
    }
    println!("### Latency at 100,000 frames/s (open loop, 1 publisher, batches of 100 every 1 ms)\n");
    header();
    for persistence in [Persistence::Memory, Persistence::Wal] {
        for preset in Preset::ALL {
            for subs in [1, 8] {
                let sc = Scenario {
                    duration: Duration::from_secs_f64(secs * 2.0),
                    ..scenario(preset, persistence, Transport::Bus, 1, subs, Some(100_000))
                };
                let r = measure(&sc);
                let label = if persistence == Persistence::Memory { "bus, memory" } else { "bus, WAL" };
                row(label, &sc, &r);
            }
        }
        let sc = Scenario {
            duration: Duration::from_secs_f64(secs * 2.0),
            ..scenario(Preset::LowLatency, persistence, Transport::TokioBroadcast, 1, 1, Some(100_000))
        };
        if persistence == Persistence::Memory {
            row("tokio broadcast", &sc, &measure(&sc));
        }
    }
    println!();
    ExitCode::SUCCESS
}
