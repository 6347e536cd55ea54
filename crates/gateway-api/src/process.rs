//! What the kernel says about a process: resident memory, its peak, threads
//! and CPU time, from `/proc/PID/status` and `/proc/PID/stat`. The metrics
//! endpoint reads the gateway's own figures with it; the benchmarks
//! (`gateway-bench`) read any process's with it, so both count the same way.
//!
//! It only reads: it never fails (a figure `/proc` could not give is 0) and
//! never writes to `/proc`.

/// Clock ticks per second of `/proc/*/stat` CPU times (`USER_HZ`, 100 on Linux).
pub const TICKS_PER_S: f64 = 100.0;

/// A process's figures (zeros where `/proc` could not be read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessFigures {
    /// Resident set size, bytes (`VmRSS`).
    pub rss: u64,
    /// Peak resident set size since start or the last reset, bytes (`VmHWM`).
    pub peak_rss: u64,
    /// Threads.
    pub threads: u64,
    /// User plus system CPU time, in [`TICKS_PER_S`] ticks.
    pub cpu_ticks: u64,
}

/// Figures of `pid`, or of this process.
///
/// ```
/// let me = gateway_api::process::read(None);
/// assert!(me.threads >= 1);
/// ```
pub fn read(pid: Option<u32>) -> ProcessFigures {
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
    ProcessFigures {
        rss: field("VmRSS:") * 1024,
        peak_rss: field("VmHWM:") * 1024,
        threads: field("Threads:"),
        cpu_ticks: Stat::parse(&stat).cpu_ticks,
    }
}

/// The parts of a `stat` line (of a process or of one of its threads,
/// `/proc/PID/task/TID/stat`) the gateway uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat<'a> {
    /// The command name (a thread's name for a task), without its parentheses.
    pub name: &'a str,
    /// utime + stime, in [`TICKS_PER_S`] ticks.
    pub cpu_ticks: u64,
}

impl<'a> Stat<'a> {
    /// Parses a `stat` line. The command name is parenthesised and may itself
    /// contain spaces and parentheses, so fields are counted after its last `)`.
    pub fn parse(line: &'a str) -> Stat<'a> {
        let Some((head, rest)) = line.rsplit_once(')') else { return Stat::default() };
        let name = head.split_once('(').map_or("", |(_, n)| n);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
        Stat { name, cpu_ticks: n(11) + n(12) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces() {
        let line = "42 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(Stat::parse(line), Stat { name: "my (odd) name", cpu_ticks: 300 });
        assert_eq!(Stat::parse(""), Stat::default());
    }

    #[test]
    fn this_process_has_memory_and_a_thread() {
        let s = read(None);
        assert!(s.rss > 0 && s.peak_rss >= s.rss && s.threads >= 1, "{s:?}");
    }
}
