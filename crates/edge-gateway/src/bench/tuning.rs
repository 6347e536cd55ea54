//! Self-tuning under CPU contention, side by side in one run: the
//! plant-to-broker job of [`gateway_bench::north`] (Modbus servers in their
//! own process, the gateway pinned to one CPU, a real mosquitto, a
//! subscriber measuring delivery and data age) with busy processes spinning
//! on the gateway's CPU, once with `[tuning] enabled = false` (the configured
//! intervals, fixed) and once tuned, alternating which goes first in each
//! round so drift on the shared machine falls on both alike. Figures are the
//! medians over the rounds, and the ratios tuned / fixed.

use gateway_bench::north::{self, NorthReport, NorthSpec};
use serde::{Deserialize, Serialize};

use super::{Outcome, Settings, Spec, Step};

/// The scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContentionSpec {
    /// Rounds of (fixed, tuned).
    pub rounds: usize,
    /// Busy processes on the gateway's CPU.
    pub hogs: usize,
    /// The job (its `hogs` and `extra_config` are set per variant).
    pub job: NorthSpec,
    /// Seconds of sustained load before each tuning step in the tuned run
    /// (the default is 10; shorter so it reaches its level within the warm-up).
    pub sustain_s: u64,
}

impl ContentionSpec {
    /// The figures' prefix.
    pub fn key(&self) -> String {
        "tuning.contention".into()
    }
}

/// The scenario as `bench` runs it: the north job at 100k values/s with
/// eight busy processes on the gateway's CPU (its fair share, about a ninth
/// of the core, is less than the job needs), fixed against tuned. `missing`:
/// why the job cannot run here (no mosquitto).
pub(super) fn step(s: &Settings, missing: Option<String>) -> Step {
    let spec = ContentionSpec {
        rounds: 5,
        hogs: 8,
        sustain_s: 2,
        job: NorthSpec {
            format: "json_batch".into(),
            devices: 20,
            tags: 50,
            poll_ms: 10,
            preset: "default".into(),
            warmup_s: 12.0,
            seconds: s.duration_s,
            pin_cpu: Some(1),
            history: false,
            hogs: 0,
            extra_config: String::new(),
        },
    };
    Step {
        id: spec.key(),
        skip: missing.or_else(|| s.quick.then(|| "left out by --quick".to_string())),
        estimate_s: 10.0 * (spec.job.warmup_s + s.duration_s + 8.0),
        spec: Spec::Tuning(spec),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Runs the rounds.
pub fn run(spec: &ContentionSpec) -> Result<Outcome, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let variant = |tuned: bool| NorthSpec {
        hogs: spec.hogs,
        extra_config: if tuned {
            format!("[tuning]\nenabled = true\nsustain_s = {}\n", spec.sustain_s)
        } else {
            "[tuning]\nenabled = false\n".into()
        },
        ..spec.job.clone()
    };
    let (mut fixed, mut tuned): (Vec<NorthReport>, Vec<NorthReport>) = (Vec::new(), Vec::new());
    // A rig that panics (a broker that never listened) is a failed run too.
    let once = |tuned: bool| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| north::run(&variant(tuned), &exe))).unwrap_or_else(
            |p| {
                let msg =
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                Err(format!("panicked: {}", msg.unwrap_or_default()))
            },
        )
    };
    let mut repeated = Vec::new();
    for round in 0..spec.rounds {
        for is_tuned in [round % 2 == 1, round % 2 == 0] {
            let mut r = once(is_tuned);
            // A run that failed or delivered nothing at all measured the rig
            // (a broker or subscriber that did not come up on the starved
            // machine), not the gateway: it is run once more, and said so.
            if r.as_ref().map_or(true, |r| r.delivered_values_per_s == 0.0) {
                let why = match &r {
                    Err(e) => e.clone(),
                    Ok(_) => "nothing delivered".into(),
                };
                repeated.push(format!("round {round} {}: {why}", if is_tuned { "tuned" } else { "fixed" }));
                r = once(is_tuned);
            }
            let r = r?;
            if is_tuned { tuned.push(r) } else { fixed.push(r) }
        }
    }
    let k = spec.key();
    let mut o = Outcome::default();
    let mut put = |name: &str, f: fn(&NorthReport) -> f64| {
        let a = median(fixed.iter().map(f).collect());
        let b = median(tuned.iter().map(f).collect());
        o.put(&format!("{k}.fixed.{name}"), a);
        o.put(&format!("{k}.tuned.{name}"), b);
        (a, b)
    };
    let (df, dt) = put("delivered_values_per_s", |r| r.delivered_values_per_s);
    put("delivered_fraction", |r| r.delivered_fraction);
    put("cpu_cores", |r| r.gateway_cpu_cores);
    put("age_p50_ms", |r| r.age_p50_ms);
    let (pf, pt) = put("age_p99_ms", |r| r.age_p99_ms);
    put("age_p999_ms", |r| r.age_p999_ms);
    o.put(&format!("{k}.offered_values_per_s"), spec.job.offered());
    if df > 0.0 {
        o.put(&format!("{k}.throughput_ratio"), dt / df);
    }
    if pt > 0.0 {
        o.put(&format!("{k}.p99_ratio"), pf / pt);
    }
    let levels: Vec<String> = tuned
        .iter()
        .map(|r| match r.tuning {
            Some([l, w, g]) => format!("level {l} (WAL {w} ms, linger {g} ms)"),
            None => "unknown".into(),
        })
        .collect();
    if let Some(l) = tuned.iter().filter_map(|r| r.tuning).map(|t| t[0]).reduce(f64::min) {
        o.put(&format!("{k}.tuned.min_level"), l);
    }
    o.notes.push(format!(
        "{} busy processes on the gateway's CPU; the tuned gateway ended at {}; fixed runs: {}",
        spec.hogs,
        levels.join(", "),
        fixed.iter().map(|r| format!("{:.0} values/s", r.delivered_values_per_s)).collect::<Vec<_>>().join(", ")
    ));
    if !repeated.is_empty() {
        o.notes.push(format!("runs repeated once: {}", repeated.join("; ")));
    }
    if fixed.iter().chain(&tuned).any(|r| !r.pinned) {
        o.notes.push("taskset is missing: the gateway and the busy processes ran unpinned".into());
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
