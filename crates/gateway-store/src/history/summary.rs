//! Summaries of a tag over a time bucket, the aggregate functions read from
//! them, and the plan that says which part of a query's range is read from
//! which summary level and which from raw values. Pure: the arithmetic of
//! rollups and queries is tested here without a database.
//!
//! A summary covers the good numeric values (bool as 0/1) of a bucket. Two
//! summaries of adjacent ranges merge into the summary of their union, which
//! is what lets a query read the middle of its range from stored rollups and
//! only its edges from raw values, and get the same numbers as from raw
//! values alone (up to the rounding of sums).

use std::fmt;
use std::str::FromStr;

/// Count, min, max, sum, first and last of a set of timed values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// How many values.
    pub n: u64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// Their sum.
    pub sum: f64,
    /// The earliest: (time in ns, value).
    pub first: (i64, f64),
    /// The latest: (time in ns, value).
    pub last: (i64, f64),
}

impl Summary {
    /// The summary of one value.
    pub fn of(ts: i64, v: f64) -> Summary {
        Summary { n: 1, min: v, max: v, sum: v, first: (ts, v), last: (ts, v) }
    }

    /// Adds one value.
    pub fn push(&mut self, ts: i64, v: f64) {
        self.merge(&Summary::of(ts, v));
    }

    /// Adds the values `other` summarises. At equal times the first stays
    /// and the last is the one merged later.
    pub fn merge(&mut self, other: &Summary) {
        self.n += other.n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        if other.first.0 < self.first.0 {
            self.first = other.first;
        }
        if other.last.0 >= self.last.0 {
            self.last = other.last;
        }
    }

    /// The value of `agg` over these values.
    pub fn get(&self, agg: Agg) -> f64 {
        match agg {
            Agg::Avg => self.sum / self.n as f64,
            Agg::Min => self.min,
            Agg::Max => self.max,
            Agg::First => self.first.1,
            Agg::Last => self.last.1,
            Agg::Count => self.n as f64,
            Agg::Sum => self.sum,
        }
    }
}

/// Merges `s` into an optional summary.
pub fn merge_into(into: &mut Option<Summary>, s: &Summary) {
    match into {
        Some(i) => i.merge(s),
        None => *into = Some(*s),
    }
}

/// An aggregate function of a query's buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Agg {
    /// Arithmetic mean of the values (not weighted by time).
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// The value with the earliest time.
    First,
    /// The value with the latest time.
    Last,
    /// How many good values.
    Count,
    /// Sum of the values.
    Sum,
}

impl Agg {
    /// Every function, in the order the API lists them.
    pub const ALL: [Agg; 7] = [Agg::Avg, Agg::Min, Agg::Max, Agg::First, Agg::Last, Agg::Count, Agg::Sum];

    /// Its name in queries.
    pub fn name(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::First => "first",
            Agg::Last => "last",
            Agg::Count => "count",
            Agg::Sum => "sum",
        }
    }
}

impl fmt::Display for Agg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Agg {
    type Err = String;

    fn from_str(s: &str) -> Result<Agg, String> {
        Agg::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Agg::ALL.iter().map(|a| a.name()).collect();
            format!("unknown aggregate {s:?}; use one of {}", names.join(", "))
        })
    }
}

/// The start of the `width`-long bucket (aligned to the epoch) holding `ts`.
pub fn bucket_of(ts: i64, width: i64) -> i64 {
    ts - ts.rem_euclid(width)
}

/// `ts` rounded up to a multiple of `width`.
pub fn ceil_to(ts: i64, width: i64) -> i64 {
    let b = bucket_of(ts, width);
    if b == ts { b } else { b.saturating_add(width) }
}

/// Where one part of a query's range is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Raw values.
    Raw,
    /// The stored summaries of this width, in ns.
    Rollup(i64),
}

/// A rollup level a query may use: its width and the time before which its
/// buckets are complete (its watermark), both in ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// Bucket width.
    pub width: i64,
    /// Buckets that end at or before this are stored.
    pub complete_before: i64,
}

/// Splits `[from, to)` into parts read from rollups or raw values for buckets
/// of `interval` ns: the widest level whose width divides `interval` covers
/// the whole buckets it can (up to its watermark), the parts left at the
/// edges are planned with the narrower levels, and what no level covers is
/// read raw. Parts are in time order and tile the range exactly.
pub fn plan(from: i64, to: i64, interval: i64, levels: &[Level]) -> Vec<(i64, i64, Source)> {
    let mut usable: Vec<Level> = levels.iter().copied().filter(|l| l.width > 0 && interval % l.width == 0).collect();
    usable.sort_by_key(|l| std::cmp::Reverse(l.width));
    let mut out = Vec::new();
    plan_into(from, to, &usable, &mut out);
    out
}

fn plan_into(from: i64, to: i64, levels: &[Level], out: &mut Vec<(i64, i64, Source)>) {
    if from >= to {
        return;
    }
    let Some((level, narrower)) = levels.split_first() else {
        out.push((from, to, Source::Raw));
        return;
    };
    let a = ceil_to(from, level.width);
    let b = bucket_of(to.min(level.complete_before), level.width);
    if a >= b {
        plan_into(from, to, narrower, out);
        return;
    }
    plan_into(from, a, narrower, out);
    out.push((a, b, Source::Rollup(level.width)));
    plan_into(b, to, narrower, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000_000_000;
    const H: i64 = 60 * M;

    #[test]
    fn merging_the_summaries_of_parts_gives_the_summary_of_the_whole() {
        let values: Vec<(i64, f64)> = (0..50).map(|i| (i * 7, ((i * 37) % 11) as f64 - 3.0)).collect();
        let mut whole: Option<Summary> = None;
        for (ts, v) in &values {
            merge_into(&mut whole, &Summary::of(*ts, *v));
        }
        let mut parts: Option<Summary> = None;
        for chunk in values.chunks(9).rev() {
            let mut s = Summary::of(chunk[0].0, chunk[0].1);
            for (ts, v) in &chunk[1..] {
                s.push(*ts, *v);
            }
            merge_into(&mut parts, &s);
        }
        assert_eq!(whole, parts);
        let w = whole.unwrap();
        assert_eq!((w.n, w.first, w.last), (50, values[0], values[49]));
        assert_eq!(w.get(Agg::Count), 50.0);
        assert_eq!(w.get(Agg::Avg), w.sum / 50.0);
    }

    #[test]
    fn aggregates_parse_by_name_and_refuse_others_listing_the_names() {
        for a in Agg::ALL {
            assert_eq!(a.name().parse::<Agg>(), Ok(a));
        }
        let e = "median".parse::<Agg>().unwrap_err();
        assert!(e.contains("avg, min, max, first, last, count, sum"), "{e}");
    }

    #[test]
    fn buckets_align_to_the_epoch() {
        assert_eq!(bucket_of(61 * 1_000_000_000, M), M);
        assert_eq!(bucket_of(M, M), M);
        assert_eq!(ceil_to(M + 1, M), 2 * M);
        assert_eq!(ceil_to(2 * M, M), 2 * M);
    }

    #[test]
    fn a_plan_reads_whole_buckets_from_the_widest_level_and_only_the_edges_raw() {
        let levels = [Level { width: M, complete_before: 100 * H }, Level { width: H, complete_before: 100 * H }];
        let from = 10 * H + 90 * 1_000_000_000; // 10:01:30
        let to = 12 * H + 2 * M + 5; // 12:02:00 and a little
        let p = plan(from, to, H, &levels);
        assert_eq!(
            p,
            vec![
                (from, 10 * H + 2 * M, Source::Raw),
                (10 * H + 2 * M, 11 * H, Source::Rollup(M)),
                (11 * H, 12 * H, Source::Rollup(H)),
                (12 * H, 12 * H + 2 * M, Source::Rollup(M)),
                (12 * H + 2 * M, to, Source::Raw),
            ]
        );
        // An interval no level divides is read raw.
        assert_eq!(plan(from, to, 90 * 1_000_000_000, &levels), vec![(from, to, Source::Raw)]);
    }

    #[test]
    fn a_plan_stops_using_a_level_at_its_watermark() {
        let levels = [Level { width: M, complete_before: 5 * M + 30 }];
        assert_eq!(plan(0, 10 * M, M, &levels), vec![(0, 5 * M, Source::Rollup(M)), (5 * M, 10 * M, Source::Raw)]);
        assert_eq!(plan(0, 10 * M, M, &[Level { width: M, complete_before: 0 }]), vec![(0, 10 * M, Source::Raw)]);
    }
}
