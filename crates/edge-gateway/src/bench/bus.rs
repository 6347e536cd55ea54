//! Bus scenarios: the load generator of `gateway_bench::bus` (publisher
//! threads, subscriber tasks, latency from the moment each batch was due)
//! run once briefly as a warm-up and then measured, in this (child) process,
//! with RSS and CPU sampled alongside.

use std::time::Duration;

use gateway_bench::bus::{Scenario, Transport};
use gateway_bus::{Persistence, Preset};
use serde::{Deserialize, Serialize};

use super::probe::Sampler;
use super::{Curve, Outcome};

/// Open-loop rate of the latency runs: batches of 100 frames every 1 ms.
pub const LATENCY_RATE: u64 = 100_000;
/// Frames per batch in every bus run.
pub const BATCH: usize = 100;

/// What a bus run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Publisher as fast as the bus lets it: frames per second.
    Throughput,
    /// Open loop at [`LATENCY_RATE`]: latency percentiles from the due time.
    Latency,
}

/// One bus run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BusSpec {
    /// Preset.
    pub preset: Preset,
    /// Memory (lossy subscriber) or WAL (durable subscriber: it sees a frame once durable).
    pub persistence: Persistence,
    /// Throughput or latency.
    pub mode: Mode,
    /// Seconds measured.
    pub seconds: f64,
    /// Seconds of the unmeasured warm-up run.
    pub warmup_s: f64,
}

/// `memory` or `durable`, as in the figures' names.
pub fn persistence_name(p: Persistence) -> &'static str {
    match p {
        Persistence::Memory => "memory",
        Persistence::Wal => "durable",
    }
}

/// Runs the warm-up and the measured run.
pub fn run(spec: &BusSpec) -> Result<Outcome, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let scenario = |seconds: f64| Scenario {
        preset: spec.preset,
        persistence: spec.persistence,
        transport: Transport::Bus,
        publishers: 1,
        subscribers: 1,
        batch_size: BATCH,
        rate: (spec.mode == Mode::Latency).then_some(LATENCY_RATE),
        duration: Duration::from_secs_f64(seconds),
        dir: dir.path().to_owned(),
    };
    if spec.warmup_s > 0.0 {
        gateway_bench::bus::run(&scenario(spec.warmup_s));
    }
    let key = format!("bus.{}.{}", spec.preset.name(), persistence_name(spec.persistence));
    // RSS over time is worth a chart for the throughput runs (the ring fills); CPU is
    // one publisher and one subscriber flat out, and the latency runs hold still.
    let sampler = (spec.mode == Mode::Throughput).then(|| Sampler::start(&key, None));
    let r = gateway_bench::bus::run(&scenario(spec.seconds));
    let series = sampler.map(|s| s.finish().into_iter().filter(|s| s.unit == "MB").collect()).unwrap_or_default();
    let mut o = Outcome { series, ..Outcome::default() };
    let mb = |b: u64| b as f64 / 1e6;
    match spec.mode {
        Mode::Throughput => {
            o.put(&format!("{key}.frames_per_s"), r.frames_per_s);
            o.put(&format!("{key}.delivered_per_s"), r.delivered_per_s);
            o.put(&format!("{key}.throughput_peak_rss_mb"), mb(r.peak_rss));
            o.put(&format!("{key}.throughput_p99_us"), r.latency.p99_us);
            o.put(&format!("{key}.throughput_drops"), r.drops as f64);
        }
        Mode::Latency => {
            let l = r.latency_from_due;
            o.put(&format!("{key}.p50_us"), l.p50_us);
            o.put(&format!("{key}.p99_us"), l.p99_us);
            o.put(&format!("{key}.p999_us"), l.p999_us);
            o.put(&format!("{key}.max_us"), l.max_us);
            o.put(&format!("{key}.latency_samples"), l.samples as f64);
            o.put(&format!("{key}.publish_p99_us"), r.latency.p99_us);
            o.put(&format!("{key}.latency_peak_rss_mb"), mb(r.peak_rss));
            o.put(&format!("{key}.latency_drops"), r.drops as f64);
            o.curves.push(Curve { name: key, points: r.latency_curve });
        }
    }
    Ok(o)
}
