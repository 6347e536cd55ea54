//! The two helpers every test of the workspace shares: a free loopback port
//! for a server the test starts, and waiting for a condition with a deadline
//! ([`wait_until`] in tokio tests, [`wait_until_blocking`] elsewhere).
//!
//! A wait polls and fails the test with "timed out waiting for {what}" at
//! its deadline; it never asserts how long something took (the machine is
//! shared and its timing is noise), only that it happened in time.

use std::time::{Duration, Instant};

/// How often a wait checks its condition: often enough not to slow a test
/// down, seldom enough not to load the 2-core machine it shares.
const POLL: Duration = Duration::from_millis(20);

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then released).
/// Another process may take it before the caller binds it; tests that
/// cannot keep the listener (an outside server, a restart on the same port)
/// accept that small risk.
///
/// ```
/// let port = gateway_bench::free_port();
/// std::net::TcpListener::bind(("127.0.0.1", port)).expect("still free");
/// ```
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A measuring window for devices polled every `period` on the wall-clock
/// grid (`gateway_drivers::schedule`): sleeps until the middle between two
/// polls and returns how long to measure, `seconds` rounded up to whole
/// periods. A window from one middle to another holds exactly that many
/// polls; one starting anywhere would count one more or one less, since a
/// poll's values arrive together (±2% in 5 s at 100 ms).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(gateway_bench::poll_window(Duration::from_millis(20), 0.05), Duration::from_millis(60));
/// assert_eq!(gateway_bench::poll_window(Duration::from_millis(20), 0.06), Duration::from_millis(60));
/// ```
pub fn poll_window(period: Duration, seconds: f64) -> Duration {
    let p = period.as_nanos().max(1);
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let to_middle = (p / 2 + p - wall % p) % p;
    std::thread::sleep(Duration::from_nanos(u64::try_from(to_middle).unwrap_or(0)));
    let periods = (seconds / period.as_secs_f64()).ceil().max(1.0);
    period.mul_f64(periods)
}

/// Waits until `f` holds, polling, for at most `secs` seconds; then panics
/// with "timed out waiting for {what}". For tokio tests: it sleeps
/// asynchronously, so tasks on the same runtime keep running.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
/// let r = ready.clone();
/// tokio::spawn(async move { r.store(true, std::sync::atomic::Ordering::SeqCst) });
/// gateway_bench::wait_until(10, "the task to run", || ready.load(std::sync::atomic::Ordering::SeqCst)).await;
/// # }
/// ```
pub async fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for code outside a runtime (tests driving a child
/// process, launchers): it sleeps the thread between checks.
///
/// ```
/// let start = std::time::Instant::now();
/// gateway_bench::wait_until_blocking(10, "a moment to pass", || start.elapsed().as_millis() > 0);
/// ```
pub fn wait_until_blocking(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// Whether the peer closed `stream` (end of stream or a reset) within `secs`
/// seconds, whatever it sent before: for tests that a server hangs up on a
/// client that misbehaves. Blocking; call it outside a runtime's threads.
///
/// ```
/// use std::io::Write;
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
/// let (mut server, _) = listener.accept().unwrap();
/// server.write_all(b"bye").unwrap();
/// drop(server);
/// assert!(gateway_bench::closed_by_peer(&mut client, 10));
/// ```
pub fn closed_by_peer(stream: &mut std::net::TcpStream, secs: u64) -> bool {
    use std::io::Read;
    if stream.set_read_timeout(Some(Duration::from_secs(secs.max(1)))).is_err() {
        return true;
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) if Instant::now() < deadline => continue,
            Ok(_) => return false,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "timed out waiting for the impossible")]
    fn a_wait_that_never_holds_fails_with_what_it_waited_for() {
        wait_until_blocking(0, "the impossible", || false);
    }

    #[tokio::test]
    async fn an_async_wait_returns_once_the_condition_holds() {
        let mut calls = 0;
        wait_until(10, "the third call", || {
            calls += 1;
            calls == 3
        })
        .await;
        assert_eq!(calls, 3);
    }
}
