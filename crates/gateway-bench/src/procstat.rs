//! `/proc` sampling for the load generators: resident memory, its peak,
//! threads and CPU ticks of any process (this one, or a peer such as
//! mosquitto), the CPU ticks of this process's threads by name (to subtract
//! what an in-process test server spent), and resetting the peak RSS so a
//! run measures its own.
//!
//! Parsing is `gateway_api::process`'s, the reader behind the gateway's own
//! `process_*` metrics, so a benchmark and the metrics endpoint never count
//! differently. This module adds only what a measurement needs and must never
//! grow a second parser of `/proc/PID/stat`.

pub use gateway_api::process::{ProcessFigures, Stat, TICKS_PER_S, read};

/// CPU ticks of this process, and of its threads whose name begins with
/// `prefix` (a tokio runtime's `thread_name`), in that order. The kernel
/// rounds each separately, so subtract with `saturating_sub`.
///
/// ```
/// let (_, none) = gateway_bench::procstat::thread_cpu_ticks("no-such-thread");
/// assert_eq!(none, 0);
/// ```
pub fn thread_cpu_ticks(prefix: &str) -> (u64, u64) {
    let total = read(None).cpu_ticks;
    let mut matched = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            let line = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let stat = Stat::parse(&line);
            if stat.name.starts_with(prefix) {
                matched += stat.cpu_ticks;
            }
        }
    }
    (total, matched)
}

/// Resets this process's peak RSS to its current RSS (`echo 5 > /proc/self/clear_refs`);
/// `false` where the kernel does not allow it (then a peak covers the whole process life).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The same for another process of ours (`/proc/PID/clear_refs`).
pub fn reset_peak_rss_of(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_s_peak_is_reset_where_our_own_can_be() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("sleep runs");
        let own = reset_peak_rss();
        assert_eq!(reset_peak_rss_of(child.id()), own, "a child of ours is reset as we are");
        let _ = child.kill();
        let _ = child.wait();
        assert!(!reset_peak_rss_of(u32::MAX), "no such process");
    }

    #[test]
    fn a_named_thread_s_cpu_is_counted_apart_from_the_process() {
        let spin = std::thread::Builder::new()
            .name("bench-spin".into())
            .spawn(|| {
                // Work until the kernel has charged this thread a clock tick (10 ms);
                // the deadline only bounds a broken reader.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                let mut x = 0u64;
                loop {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                    let ticks = thread_cpu_ticks("bench-spin");
                    if ticks.1 > 0 || std::time::Instant::now() > deadline {
                        return ticks;
                    }
                }
            })
            .unwrap();
        // Only the thread's own share is checked: the kernel scales process and
        // thread times separately, so a sum of threads may pass the process's by a tick.
        let (_, spin_ticks) = spin.join().unwrap();
        assert!(spin_ticks > 0);
        assert_eq!(thread_cpu_ticks("no-such-thread").1, 0);
    }
}
