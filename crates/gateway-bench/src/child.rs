//! The one way a benchmark runs a job in a child process: a fresh copy of
//! the current executable, started with a flag and the job as JSON, so that
//! the job's memory figures (peak RSS above all) belong to it alone. The
//! child prints its report as one JSON line on stdout; the parent reads back
//! the last stdout line that starts with `{`, kills the child at a time-out,
//! and on failure says why with the last meaningful line of the child's stderr.
//!
//! Parent side: [`run`] (or [`command`] for a child the caller talks to
//! while it runs, then [`wait_for_report`]). Child side: [`entry`], called
//! first thing in `main`, before anything parses the command line.
//!
//! ```no_run
//! use std::process::ExitCode;
//! use std::time::Duration;
//!
//! const FLAG: &str = "--square-child";
//!
//! fn main() -> ExitCode {
//!     // In the child: do the job, print the report, exit.
//!     if let Some(code) = gateway_bench::child::entry(FLAG, |n: u64| Ok::<_, String>(n * n)) {
//!         return code;
//!     }
//!     let nine: u64 = gateway_bench::child::run(FLAG, &3u64, Duration::from_secs(60)).unwrap();
//!     assert_eq!(nine, 9);
//!     ExitCode::SUCCESS
//! }
//! ```
//!
//! Nothing here may print to stdout in the child except the report line:
//! the parent takes the last `{`-line as the report.

use std::fmt::Display;
use std::io::Read;
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a child's job gave no report. The messages are what `edge-gateway
/// bench` prints next to a failed scenario.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The path of the current executable is unknown.
    #[error("cannot find this executable: {0}")]
    Executable(#[source] std::io::Error),
    /// The job could not be written as JSON.
    #[error("cannot encode the job: {0}")]
    Encode(#[source] serde_json::Error),
    /// The process could not be started.
    #[error("cannot start a child process: {0}")]
    Start(#[source] std::io::Error),
    /// Waiting for the process failed.
    #[error("waiting for the child: {0}")]
    Wait(#[source] std::io::Error),
    /// It ran past its time-out and was killed.
    #[error("timed out after {:.0} s", .0.as_secs_f64())]
    TimedOut(Duration),
    /// It exited unsuccessfully; `stderr` is its last meaningful stderr line.
    #[error("failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: ExitStatus,
        /// The last stderr line that is not blank or a backtrace hint.
        stderr: String,
    },
    /// It exited successfully without a `{`-line on stdout.
    #[error("reported nothing: {stderr}")]
    NoReport {
        /// The last stderr line that is not blank or a backtrace hint.
        stderr: String,
    },
    /// Its report was not the JSON expected.
    #[error("unreadable report: {0}")]
    BadReport(#[source] serde_json::Error),
}

/// The command that runs `job` in a fresh copy of this executable (`EXE flag JSON`).
/// Use it directly for a child the caller talks to while it runs; otherwise [`run`].
pub fn command<S: Serialize>(flag: &str, job: &S) -> Result<Command, ChildError> {
    let exe = std::env::current_exe().map_err(ChildError::Executable)?;
    command_at(&exe, flag, job)
}

/// [`command`] with another executable (a copy of this one, say).
pub fn command_at<S: Serialize>(exe: &std::path::Path, flag: &str, job: &S) -> Result<Command, ChildError> {
    let json = serde_json::to_string(job).map_err(ChildError::Encode)?;
    let mut cmd = Command::new(exe);
    cmd.arg(flag).arg(json);
    Ok(cmd)
}

/// Runs `job` in a fresh copy of this executable and returns its report.
/// The executable must call [`entry`] with the same `flag` first thing in `main`.
pub fn run<S: Serialize, R: DeserializeOwned>(flag: &str, job: &S, timeout: Duration) -> Result<R, ChildError> {
    wait_for_report(command(flag, job)?, timeout)
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) until it exits or
/// `timeout` passes (then it is killed), and reads its report: the last
/// stdout line that starts with `{`.
pub fn wait_for_report<R: DeserializeOwned>(mut cmd: Command, timeout: Duration) -> Result<R, ChildError> {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(ChildError::Start)?;
    // Both pipes are drained while the child runs, or a chatty child would
    // block on a full pipe and look hung.
    let (tx, rx) = mpsc::channel();
    for (is_stdout, pipe) in [
        (true, child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
        (false, child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut s);
            }
            let _ = tx.send((is_stdout, s));
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(ChildError::Wait(e)),
        }
    };
    // A grandchild (a broker the job started) may hold a pipe open after the
    // child is gone: read what there is, but do not wait for it for ever.
    let (mut stdout, mut stderr) = (String::new(), String::new());
    for _ in 0..2 {
        if let Ok((is_stdout, s)) = rx.recv_timeout(Duration::from_secs(5)) {
            if is_stdout { stdout = s } else { stderr = s }
        }
    }
    match status {
        None => Err(ChildError::TimedOut(timeout)),
        Some(status) if !status.success() => Err(ChildError::Failed { status, stderr: last_meaningful_line(&stderr) }),
        Some(_) => match stdout.lines().rev().find(|l| l.starts_with('{')) {
            Some(line) => serde_json::from_str(line).map_err(ChildError::BadReport),
            None => Err(ChildError::NoReport { stderr: last_meaningful_line(&stderr) }),
        },
    }
}

/// The last stderr line worth showing: a panic's message, not the
/// `note: run with RUST_BACKTRACE=1` hint that follows it.
fn last_meaningful_line(stderr: &str) -> String {
    // A panic says where on one line and what on the next; the last line
    // alone may be a frame of a backtrace printed with it. Report the panic.
    let lines: Vec<&str> = stderr.lines().collect();
    if let Some(i) = lines.iter().rposition(|l| l.contains(" panicked at ")) {
        let what = lines.get(i + 1).map_or("", |l| l.trim());
        return format!("{} {what}", lines[i].trim()).trim().to_owned();
    }
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("note:") && !l.contains("RUST_BACKTRACE"))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Child side: if this process was started by [`run`] or [`command`] with
/// `flag`, runs `job` on the JSON after it, prints the report (or the error,
/// on stderr) and returns the exit code for `main` to return; `None` in any
/// other process.
pub fn entry<S, R, E>(flag: &str, job: impl FnOnce(S) -> Result<R, E>) -> Option<ExitCode>
where
    S: DeserializeOwned,
    R: Serialize,
    E: Display,
{
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == flag)?;
    let spec = match serde_json::from_str::<S>(args.get(i + 1).map_or("", String::as_str)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bad job after {flag}: {e}");
            return Some(ExitCode::from(1));
        }
    };
    let report = job(spec).map_err(|e| e.to_string());
    Some(match report.and_then(|r| serde_json::to_string(&r).map_err(|e| e.to_string())) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn the_last_json_line_of_stdout_is_the_report() {
        let r: serde_json::Value =
            wait_for_report(sh(r#"echo '{"a":1}'; echo progress; echo '{"a":2}'; echo done"#), Duration::from_secs(60))
                .unwrap();
        assert_eq!(r["a"], 2);
    }

    #[test]
    fn a_failure_says_the_last_meaningful_stderr_line() {
        let script = "echo 'thread main panicked at x.rs:1:1:' >&2; echo 'the broker is gone' >&2; \
                      echo 'note: run with `RUST_BACKTRACE=1` to display a backtrace' >&2; exit 101";
        let e = wait_for_report::<serde_json::Value>(sh(script), Duration::from_secs(60)).unwrap_err();
        let said = "thread main panicked at x.rs:1:1: the broker is gone";
        assert!(matches!(&e, ChildError::Failed { stderr, .. } if stderr == said), "{e:?}");
        assert!(e.to_string().ends_with(": the broker is gone"), "{e}");
        // A backtrace after the panic does not hide it.
        let script = "echo 'thread main panicked at x.rs:1:1:' >&2; echo 'the broker is gone' >&2; \
                      echo 'stack backtrace:' >&2; echo '  at /rustc/core/src/ops/function.rs:250:5' >&2; exit 101";
        let e = wait_for_report::<serde_json::Value>(sh(script), Duration::from_secs(60)).unwrap_err();
        assert!(matches!(&e, ChildError::Failed { stderr, .. } if stderr == said), "{e:?}");
        // Without a panic, the last line that says something.
        let e =
            wait_for_report::<serde_json::Value>(sh("echo 'no broker' >&2; echo >&2; exit 3"), Duration::from_secs(60))
                .unwrap_err();
        assert!(matches!(&e, ChildError::Failed { stderr, .. } if stderr == "no broker"), "{e:?}");
    }

    #[test]
    fn a_child_that_reports_nothing_or_garbage_is_an_error() {
        let e = wait_for_report::<u64>(sh("echo working >&2"), Duration::from_secs(60)).unwrap_err();
        assert!(matches!(&e, ChildError::NoReport { stderr } if stderr == "working"), "{e:?}");
        let e = wait_for_report::<u64>(sh("echo '{oops'"), Duration::from_secs(60)).unwrap_err();
        assert!(matches!(e, ChildError::BadReport(_)), "{e:?}");
    }

    #[test]
    fn a_child_past_its_time_out_is_killed() {
        // `exec`, so the killed process is the one holding the pipes.
        let e = wait_for_report::<u64>(sh("exec sleep 600"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, ChildError::TimedOut(_)), "{e:?}");
    }

    #[test]
    fn entry_does_nothing_outside_a_child() {
        assert!(entry("--no-such-child-flag", |n: u64| Ok::<_, String>(n)).is_none());
    }
}
