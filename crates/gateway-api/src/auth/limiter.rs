//! Failed logins slowed down: after `max` failures within `window` for one
//! key (a client address, or a user name), that key is refused until the
//! window that began with its first failure is over. Keyed both ways, a
//! guesser is stopped whether it tries many passwords for one user or one
//! password for many users from one address. The table is bounded: when it
//! is full, expired entries go first, then the oldest, so a flood of
//! addresses costs memory up to the bound and no more.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys remembered at once.
const CAPACITY: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    first: Instant,
}

/// Counts failures per key; see the module docs.
#[derive(Debug)]
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    keys: Mutex<HashMap<String, Failures>>,
}

impl FailureLimiter {
    /// At most `max` failures per key in `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        FailureLimiter { max: max.max(1), window, keys: Mutex::new(HashMap::new()) }
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long `key` must still wait, if it is refused now.
    pub fn blocked(&self, key: &str, now: Instant) -> Option<Duration> {
        let keys = self.keys();
        let f = keys.get(key)?;
        let end = f.first + self.window;
        (f.count >= self.max && now < end).then(|| end - now)
    }

    /// Records a failure of `key`.
    pub fn failed(&self, key: &str, now: Instant) {
        let mut keys = self.keys();
        if !keys.contains_key(key) && keys.len() >= CAPACITY {
            let window = self.window;
            keys.retain(|_, f| now.duration_since(f.first) < window);
            if keys.len() >= CAPACITY
                && let Some(oldest) = keys.iter().min_by_key(|(_, f)| f.first).map(|(k, _)| k.clone())
            {
                keys.remove(&oldest);
            }
        }
        let f = keys.entry(key.to_owned()).or_insert(Failures { count: 0, first: now });
        if now.duration_since(f.first) >= self.window {
            *f = Failures { count: 0, first: now };
        }
        f.count = f.count.saturating_add(1);
    }

    /// Forgets `key`'s failures (after a successful login).
    pub fn succeeded(&self, key: &str) {
        self.keys().remove(key);
    }

    /// Keys remembered now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.keys().len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_refused_after_max_failures_until_its_window_ends() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.blocked("10.0.0.9", t0), None);
            l.failed("10.0.0.9", t0);
        }
        assert_eq!(l.blocked("10.0.0.9", t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(l.blocked("10.0.0.8", t0), None, "other keys are not affected");
        assert_eq!(l.blocked("10.0.0.9", t0 + Duration::from_secs(60)), None, "the window is over");
        l.failed("10.0.0.9", t0 + Duration::from_secs(61));
        assert_eq!(l.blocked("10.0.0.9", t0 + Duration::from_secs(61)), None, "a new window starts");
        l.succeeded("10.0.0.9");
        assert!(l.is_empty());
    }

    #[test]
    fn a_flood_of_keys_stays_within_the_bound() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(CAPACITY + 500) {
            l.failed(&format!("k{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(l.len(), CAPACITY);
    }
}
