//! What the benchmark knows about the process and the machine: resident
//! memory and CPU time of this process, a sampler that records them (and a
//! throughput counter) every 100 ms while a scenario runs, the open-files
//! limit, and the machine's description for the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Series;

/// Resident set size now and its peak since the last reset (`VmRSS`,
/// `VmHWM`), bytes.
pub fn rss() -> (u64, u64) {
    let s = gateway_bench::procstat::read(None);
    (s.rss, s.peak_rss)
}

/// Anonymous (heap, stacks) and file-backed (the executable's pages, shared
/// libraries) parts of the resident set now (`RssAnon`, `RssFile`), bytes.
pub fn rss_parts() -> (u64, u64) {
    let kb = |key: &str| {
        first_line_value("/proc/self/status", key)
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |k| k * 1024)
    };
    (kb("RssAnon"), kb("RssFile"))
}

/// Resets the peak RSS counter; false where the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    gateway_bench::procstat::reset_peak_rss()
}

/// CPU time (user + system) of this process so far, seconds, with
/// microsecond resolution (`getrusage`, where `/proc`'s ticks are 10 ms).
pub fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// Samples RSS, CPU and a throughput counter every 100 ms on its own thread
/// until stopped, so that a scenario's report carries its figures over time.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    /// `None` if the thread could not be started (then there are no samples).
    handle: Option<std::thread::JoinHandle<Vec<[f64; 4]>>>,
    prefix: String,
    counter_label: Option<(String, String)>,
}

impl Sampler {
    /// Starts sampling. `counter` (if any) is read each time and shown as a
    /// rate named `label` in `unit` per second.
    pub fn start(prefix: &str, counter: Option<(Arc<AtomicU64>, &str, &str)>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let counter_label = counter.as_ref().map(|(_, l, u)| ((*l).to_owned(), (*u).to_owned()));
        let counter = counter.map(|(c, _, _)| c);
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("bench-sampler".into())
            .spawn(move || {
                let start = Instant::now();
                let mut out = Vec::new();
                let (mut last_t, mut last_cpu) = (0.0, cpu_seconds());
                let mut last_n = counter.as_ref().map_or(0, |c| c.load(Ordering::Relaxed));
                while !s.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(100));
                    let t = start.elapsed().as_secs_f64();
                    let cpu = cpu_seconds();
                    let n = counter.as_ref().map_or(0, |c| c.load(Ordering::Relaxed));
                    let dt = (t - last_t).max(1e-6);
                    out.push([t, rss().0 as f64 / 1e6, (cpu - last_cpu) / dt, n.saturating_sub(last_n) as f64 / dt]);
                    (last_t, last_cpu, last_n) = (t, cpu, n);
                }
                out
            })
            .ok();
        Sampler { stop, handle, prefix: prefix.to_owned(), counter_label }
    }

    /// Stops and returns the series: RSS (MB), CPU (cores) and, with a
    /// counter, its rate.
    pub fn finish(self) -> Vec<Series> {
        self.stop.store(true, Ordering::Release);
        let samples = self.handle.and_then(|h| h.join().ok()).unwrap_or_default();
        let col = |i: usize| samples.iter().map(|s| [s[0], s[i]]).collect::<Vec<_>>();
        let mut out = vec![
            Series { name: format!("{} RSS", self.prefix), unit: "MB".into(), x_unit: "s".into(), points: col(1) },
            Series { name: format!("{} CPU", self.prefix), unit: "cores".into(), x_unit: "s".into(), points: col(2) },
        ];
        if let Some((label, unit)) = self.counter_label {
            out.push(Series { name: format!("{} {label}", self.prefix), unit, x_unit: "s".into(), points: col(3) });
        }
        out
    }
}

/// Mean of a series' values after `skip_s` seconds.
pub fn mean_after(s: &Series, skip_s: f64) -> f64 {
    let v: Vec<f64> = s.points.iter().filter(|p| p[0] >= skip_s).map(|p| p[1]).collect();
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// The value of the first `key: value` or `key=value` line of a file.
fn first_line_value(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l[key.len()..].trim_start().strip_prefix([':', '=']))
        .map(|v| v.trim().to_owned())
}

fn command(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program).args(args).stderr(std::process::Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
}

/// Today's date and time in UTC, RFC 3339 to the second.
pub fn now_utc() -> String {
    let ns = gateway_model::now_ns();
    let full = gateway_model::format_rfc3339_ns(ns);
    // "2026-11-30T06:22:50.123456789Z" -> "2026-11-30T06:22:50Z"
    match full.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => full,
    }
}

/// The machine and build the figures belong to.
pub fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        m.insert(k.to_owned(), v.unwrap_or_else(|| "unknown".into()));
    };
    put("cpu_model", first_line_value("/proc/cpuinfo", "model name"));
    put("cores", std::thread::available_parallelism().ok().map(|n| n.to_string()));
    put(
        "memory",
        first_line_value("/proc/meminfo", "MemTotal").and_then(|v| {
            let kb: f64 = v.split_whitespace().next()?.parse().ok()?;
            Some(format!("{:.1} GiB", kb / (1024.0 * 1024.0)))
        }),
    );
    put("kernel", std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()));
    put("os", first_line_value("/etc/os-release", "PRETTY_NAME").map(|s| s.trim_matches('"').to_owned()));
    put(
        "load_average_at_start",
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
    );
    put("rustc", command("rustc", &["--version"]));
    // The checkout we run in, else the one this binary was built from (if it is still there).
    let built_from = env!("CARGO_MANIFEST_DIR");
    let commit = [".", built_from].into_iter().find_map(|dir| {
        let c = command("git", &["-C", dir, "rev-parse", "--short=12", "HEAD"])?;
        let dirty = command("git", &["-C", dir, "status", "--porcelain", "--untracked-files=no"]).is_some();
        Some(if dirty { format!("{c} (with uncommitted changes)") } else { c })
    });
    put("git_commit", commit);
    // The cargo profile (build.rs reads it off OUT_DIR): `lean`, what the
    // package ships, or `release`, `debug`, a profile of one's own.
    let build = match option_env!("EDGE_GATEWAY_PROFILE") {
        Some(p) if !p.is_empty() => p,
        _ if cfg!(debug_assertions) => "debug",
        _ => "release",
    };
    put("build", Some(build.to_owned()));
    put("gateway_version", Some(env!("CARGO_PKG_VERSION").to_owned()));
    put("date", Some(now_utc()));
    m
}
