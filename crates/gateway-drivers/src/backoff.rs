//! Exponential backoff with jitter, for every driver that reconnects.

use std::time::Duration;

/// Exponential backoff with jitter: `min`, doubling per failure up to `max`,
/// each delay drawn from ±20% around its nominal value so that many devices
/// that failed together do not retry in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff seeded from `seed` (e.g. a hash of the device name) and the clock.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        let clock = gateway_model::now_ns();
        Backoff { min, max: max.max(min), failures: 0, rng: (seed ^ clock) | 1 }
    }

    /// The delay before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.min.saturating_mul(1u32 << self.failures.min(20)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        // xorshift64*: plenty for jitter, and no dependency.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let unit = (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        nominal.mul_f64(0.8 + 0.4 * unit)
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure starts again at `min`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A seed for [`Backoff::new`] from a device's name (FNV-1a), so devices
/// that failed together draw different jitter.
pub(crate) fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum_with_jitter_of_a_fifth() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000), 7);
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        for (d, nominal) in delays.iter().zip([100u128, 200, 400, 800, 1000, 1000, 1000, 1000]) {
            assert!(*d >= nominal * 8 / 10 && *d <= nominal * 12 / 10, "{delays:?}");
        }
        assert_eq!(b.failures(), 8);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
