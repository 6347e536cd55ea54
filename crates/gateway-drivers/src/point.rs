//! What every driver remembers of a tag between readings, and the rule
//! that decides whether a reading is published: the deadband, the refresh
//! of steady values every [`REFRESH_POLLS`] readings, and bad readings that
//! carry the last good value (or a neutral one) so no stale value stays
//! `good`.

use gateway_model::{DataFrame, Frame, Quality, Reason, TagId, Value};

/// A tag with a deadband is published at least once every this many polls
/// even when its value holds steady.
pub const REFRESH_POLLS: u32 = 10;

/// The result of one reading of one tag.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    /// A value the device vouches for, at a time (ns since the epoch).
    Good(Value, u64),
    /// A value the device does not fully vouch for, and why.
    Uncertain(Value, Reason, u64),
    /// No usable value, and why.
    Bad(Reason, u64),
}

/// A tag's publication state.
#[derive(Clone, Debug)]
pub(crate) struct Point {
    /// The tag's id.
    pub id: TagId,
    /// The last good value read (published, with a bad quality, when reads fail).
    pub last_good: Option<Value>,
    /// The last value and quality published.
    published: Option<(Value, Quality)>,
    /// Readings since the last publication.
    unpublished: u32,
}

impl Point {
    /// A tag never read.
    pub fn new(id: TagId) -> Self {
        Point { id, last_good: None, published: None, unpublished: 0 }
    }

    /// The frame to publish for `outcome`, if the deadband rules want one.
    /// `neutral` is the value a bad reading carries when none was ever read.
    pub fn frame(&mut self, outcome: Outcome, deadband: Option<f64>, neutral: impl FnOnce() -> Value) -> Option<Frame> {
        let (value, quality, ts) = match outcome {
            Outcome::Good(v, ts) => {
                self.last_good = Some(v.clone());
                (v, Quality::GOOD, ts)
            }
            Outcome::Uncertain(v, reason, ts) => (v, Quality::uncertain(reason), ts),
            Outcome::Bad(reason, ts) => (self.last_good.clone().unwrap_or_else(neutral), Quality::bad(reason), ts),
        };
        let publish = match (deadband, &self.published) {
            (None, _) | (_, None) => true,
            (Some(band), Some((last, last_q))) => {
                *last_q != quality
                    || self.unpublished + 1 >= REFRESH_POLLS
                    || (!matches!(quality.level, gateway_model::QualityLevel::Bad) && moved(last, &value, band))
            }
        };
        if !publish {
            self.unpublished += 1;
            return None;
        }
        self.unpublished = 0;
        // Only the deadband compares with what was published: without one,
        // keeping a copy of every value would be work for nothing.
        if deadband.is_some() {
            self.published = Some((value.clone(), quality));
        }
        Some(Frame::Data(DataFrame::new(self.id.clone(), value, quality, ts)))
    }

    /// The tag bad for `reason` at `ts`, with its last good value (or
    /// `neutral`), whatever was published before: for a driver's last batch.
    pub fn bad_frame(&self, reason: Reason, ts: u64, neutral: impl FnOnce() -> Value) -> Frame {
        let v = self.last_good.clone().unwrap_or_else(neutral);
        Frame::Data(DataFrame::new(self.id.clone(), v, Quality::bad(reason), ts))
    }
}

/// Whether `new` differs from `last` by more than `band` (any change for
/// non-numbers, and for a band of 0).
pub(crate) fn moved(last: &Value, new: &Value, band: f64) -> bool {
    match (last.as_f64(), new.as_f64(), last, new) {
        (_, _, Value::Bool(a), Value::Bool(b)) => a != b,
        (Some(a), Some(b), _, _) if a.is_finite() && b.is_finite() => {
            if band == 0.0 {
                !last.same(new)
            } else {
                (a - b).abs() > band
            }
        }
        _ => !last.same(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(p: &mut Point, band: Option<f64>, o: Outcome) -> Option<(Value, Quality)> {
        p.frame(o, band, || Value::I64(0)).and_then(|f| f.as_data().map(|d| (d.value.clone(), d.quality)))
    }

    fn point() -> Point {
        Point::new(TagId::new("d.t").unwrap())
    }

    #[test]
    fn without_a_deadband_every_reading_is_published() {
        let mut t = point();
        for _ in 0..3 {
            assert!(published(&mut t, None, Outcome::Good(Value::U64(1), 0)).is_some());
        }
    }

    #[test]
    fn a_deadband_suppresses_small_moves_but_not_quality_changes_or_the_refresh() {
        let mut t = point();
        let b = Some(0.5);
        assert!(published(&mut t, b, Outcome::Good(Value::F64(10.0), 0)).is_some(), "the first value");
        assert!(published(&mut t, b, Outcome::Good(Value::F64(10.4), 0)).is_none(), "within the band");
        assert!(published(&mut t, b, Outcome::Good(Value::F64(10.6), 0)).is_some(), "compared with the published 10.0");
        assert_eq!(
            published(&mut t, b, Outcome::Bad(Reason::TIMEOUT, 0)),
            Some((Value::F64(10.6), Quality::bad(Reason::TIMEOUT))),
            "a failure is published with the last good value"
        );
        assert!(published(&mut t, b, Outcome::Bad(Reason::TIMEOUT, 0)).is_none(), "the same bad state");
        assert!(published(&mut t, b, Outcome::Bad(Reason::CONNECTION_LOST, 0)).is_some(), "another reason");
        assert!(published(&mut t, b, Outcome::Good(Value::F64(10.6), 0)).is_some(), "good again");
        // Steady: published once every REFRESH_POLLS polls.
        let sent = (0..REFRESH_POLLS * 3)
            .filter(|_| published(&mut t, b, Outcome::Good(Value::F64(10.6), 0)).is_some())
            .count();
        assert_eq!(sent, 3);
        let u = Quality::uncertain(Reason::LAST_KNOWN);
        assert_eq!(
            published(&mut t, b, Outcome::Uncertain(Value::F64(3.0), Reason::LAST_KNOWN, 0)),
            Some((Value::F64(3.0), u)),
            "an uncertain value is published with its own value"
        );
        assert!(published(&mut t, b, Outcome::Uncertain(Value::F64(5.0), Reason::LAST_KNOWN, 0)).is_some());
    }

    #[test]
    fn a_zero_deadband_publishes_every_change_and_bools_publish_on_change() {
        let mut t = point();
        let z = Some(0.0);
        assert!(published(&mut t, z, Outcome::Good(Value::U64(1), 0)).is_some());
        assert!(published(&mut t, z, Outcome::Good(Value::U64(1), 0)).is_none());
        assert!(published(&mut t, z, Outcome::Good(Value::U64(2), 0)).is_some());
        let mut b = point();
        let five = Some(5.0);
        assert!(published(&mut b, five, Outcome::Good(Value::Bool(false), 0)).is_some());
        assert!(published(&mut b, five, Outcome::Good(Value::Bool(true), 0)).is_some(), "a bool moves by flipping");
    }

    #[test]
    fn a_tag_never_read_fails_with_a_neutral_value() {
        let mut t = point();
        assert_eq!(
            published(&mut t, None, Outcome::Bad(Reason::NOT_CONNECTED, 0)),
            Some((Value::I64(0), Quality::bad(Reason::NOT_CONNECTED)))
        );
    }
}
