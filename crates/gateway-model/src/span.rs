//! Lengths of time as people write them in configuration files and queries:
//! `500ms`, `10s`, `1m`, `1h`, `30d`, `2w`. History retention, alarm delays and
//! every other duration setting read and print this one form.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A length of time written with a unit: `500ms`, `10s`, `1m`, `1h`, `30d`,
/// `2w` (`m` is minutes; there are no months or years, whose length varies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(Duration);

/// The units a [`Span`] may use, with their length in milliseconds, longest
/// unit name first so that `ms` is not read as `m`.
const UNITS: &[(&str, u64)] =
    &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000), ("w", 604_800_000)];

impl Span {
    /// A span of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Span {
        Span(Duration::from_millis(ms))
    }

    /// A span of `s` seconds.
    pub const fn from_secs(s: u64) -> Span {
        Span(Duration::from_secs(s))
    }

    /// Its length.
    pub const fn duration(self) -> Duration {
        self.0
    }

    /// Its length in nanoseconds (saturating: no span here comes near 584 years).
    pub fn as_nanos(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Why a span's text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a length of time: write a whole number and a unit (ms, s, m, h, d, w), such as 30d")]
pub struct SpanError(String);

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(text: &str) -> Result<Span, SpanError> {
        let bad = || SpanError(text.to_owned());
        let t = text.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = t.split_at(digits);
        let n: u64 = number.parse().map_err(|_| bad())?;
        let (_, ms) = UNITS.iter().find(|(u, _)| *u == unit.trim()).ok_or_else(bad)?;
        n.checked_mul(*ms).map(Span::from_millis).ok_or_else(bad)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        // The largest unit that divides it exactly, so `86400s` prints as `1d`.
        let (unit, size) = UNITS.iter().rev().find(|(_, size)| ms > 0 && ms % size == 0).copied().unwrap_or(("ms", 1));
        write!(f, "{}{unit}", ms / size)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
