//! Latency recording for every load generator: a fixed-size histogram
//! ([`Histogram`], log-linear buckets, under 1% error), the percentiles the
//! reports print ([`Latency`]) and the curve the HTML report draws
//! ([`CURVE_QUANTILES`]).
//!
//! Recording must never allocate: a load generator records millions of
//! values, and a growing vector would distort the memory figures it sits next to.

/// Latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Worst.
    pub max_us: f64,
    /// Values recorded (for the bus: batches received, all subscribers together).
    pub samples: u64,
}

/// A fixed-size latency histogram of nanosecond values: 128 exact buckets
/// below 128, then 128 buckets per power of two, so measuring millions of
/// values costs 64 KiB whatever their number.
///
/// ```
/// use gateway_bench::histogram::Histogram;
///
/// let mut h = Histogram::default();
/// for ns in [1_000, 2_000, 3_000, 1_000_000] {
///     h.record(ns);
/// }
/// assert_eq!(h.count(), 4);
/// assert!((h.latency().max_us - 1_000.0).abs() < 10.0);
/// ```
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
}

const SUB: u64 = 128;

/// Quantiles of [`Histogram::curve`]: dense towards the tail, where stalls show.
pub const CURVE_QUANTILES: [f64; 16] =
    [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999, 0.999999, 1.0];

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; (64 * SUB) as usize] }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let major = 63 - v.leading_zeros() as u64; // >= 7
        let shift = major - 7;
        let minor = (v >> shift) - SUB;
        ((major - 6) * SUB + minor) as usize
    }

    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let major = i / SUB + 6;
        let minor = i % SUB;
        let shift = major - 7;
        ((SUB + minor) << shift) + (1 << shift) / 2
    }

    /// Records one value (nanoseconds).
    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
    }

    /// Adds another histogram's counts (one histogram per subscriber or
    /// client while running, merged for the report).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value at quantile `q` (0..=1), within 1%; 0 when nothing was recorded.
    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((n as f64 * q).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i);
            }
        }
        0
    }

    /// The percentile curve for charts: `[quantile, microseconds]` pairs at
    /// [`CURVE_QUANTILES`] (empty when nothing was recorded).
    pub fn curve(&self) -> Vec<[f64; 2]> {
        if self.count() == 0 {
            return Vec::new();
        }
        CURVE_QUANTILES.iter().map(|&q| [q, self.quantile(q) as f64 / 1e3]).collect()
    }

    /// Percentiles in microseconds.
    pub fn latency(&self) -> Latency {
        let us = |q| self.quantile(q) as f64 / 1e3;
        Latency { p50_us: us(0.5), p99_us: us(0.99), p999_us: us(0.999), max_us: us(1.0), samples: self.count() }
    }
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn histogram_quantiles_are_within_one_percent() {
        let mut h = Histogram::default();
        let values: Vec<u64> = (1..=100_000u64).map(|i| i * 37 % 5_000_000 + 1).collect();
        for &v in &values {
            h.record(v);
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            let exact = sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1];
            let got = h.quantile(q);
            let err = (got as f64 - exact as f64).abs() / exact as f64;
            assert!(err < 0.01, "q {q}: {got} vs {exact}");
        }
        assert_eq!(h.count(), 100_000);
        let mut small = Histogram::default();
        small.record(3);
        assert_eq!(small.quantile(0.5), 3);
    }
}
