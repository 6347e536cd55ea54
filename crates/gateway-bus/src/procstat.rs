//! What the kernel says about a process: resident memory, its peak, CPU time
//! and threads, from `/proc`. One reader for the benchmarks, the metrics
//! endpoint and the load generators, so they all count the same way.

/// Clock ticks per second of `/proc/*/stat` CPU times (`USER_HZ`, 100 on Linux).
pub const TICKS_PER_S: f64 = 100.0;

/// A process's figures (zeros where `/proc` could not be read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// Resident set size, bytes (`VmRSS`).
    pub rss: u64,
    /// Peak resident set size, bytes (`VmHWM`).
    pub peak_rss: u64,
    /// Threads.
    pub threads: u64,
    /// User plus system CPU time, in [`TICKS_PER_S`] ticks.
    pub cpu_ticks: u64,
}

/// Figures of `pid`, or of this process.
pub fn read(pid: Option<u32>) -> ProcStat {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
    ProcStat {
        rss: field("VmRSS:") * 1024,
        peak_rss: field("VmHWM:") * 1024,
        threads: field("Threads:"),
        cpu_ticks: stat_ticks(&stat),
    }
}

/// utime + stime from a `stat` line: fields 14 and 15, counted after the
/// parenthesised command name (which may itself contain spaces).
pub fn stat_ticks(stat: &str) -> u64 {
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// Resets this process's peak RSS to its current RSS (`echo 5 > /proc/self/clear_refs`);
/// `false` where the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces() {
        let line = "42 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(stat_ticks(line), 300);
        assert_eq!(stat_ticks(""), 0);
    }

    #[test]
    fn this_process_has_memory_and_a_thread() {
        let s = read(None);
        assert!(s.rss > 0 && s.peak_rss >= s.rss && s.threads >= 1, "{s:?}");
    }
}
