//! The `[history]` section: which tags are kept, how finely, for how long,
//! and where.
//!
//! ```toml
//! [history]
//! enabled = true
//! include = ["*"]                 # tag patterns kept
//! exclude = []                    # tag patterns never kept (wins over include)
//! retention = "30d"               # raw values older than this are deleted
//! alarm_retention = "365d"        # alarm journal entries older than this are deleted
//! rollups = [{ interval = "1m", retention = "365d" }, { interval = "1h", retention = "3650d" }]
//! commit_interval_ms = 1000       # the longest a value waits before it is written
//! batch_max_values = 100000       # or sooner, once this many wait
//! max_rows = 100000               # the most rows one query may ask for
//! pool = "adaptive"               # or "fixed": the query pool's size
//!
//! [[history.deadband]]            # the first rule whose pattern matches applies
//! tags = "line1.temperature"
//! value = 0.1                     # store only changes larger than this
//! max_gap = "15m"                 # but at least one value this often
//!
//! [history.database]              # default: beside the metadata (see below)
//! # url = "postgres://historian@db.plant.local/history"
//! ```
//!
//! Without `[history.database]`, history lives beside the metadata: in the
//! same PostgreSQL database when `[database]` names one, else in its own
//! SQLite file `history.db` in the data directory (never in `gateway.db`:
//! SQLite has one writer per file, and history's large transactions must not
//! delay device, user and audit changes, nor those delay history).
//!
//! Validation names the bad field and never echoes a URL's password.

use std::fmt;
use std::time::Duration;

use gateway_model::{FieldError, TagPattern};
pub use gateway_model::{Span, SpanError};
use serde::{Deserialize, Serialize};

use crate::DatabaseConfig;

/// The SQLite file history uses when it lives beside a SQLite metadata store.
pub const HISTORY_SQLITE_FILE: &str = "history.db";

/// One level of summaries: per tag and per `interval`-long bucket, the min,
/// max, sum (so the average), first, last and count of its good values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupConfig {
    /// Bucket length: whole seconds, at least `1s`, at most `1d` (buckets
    /// start at multiples of it since the Unix epoch, UTC).
    pub interval: Span,
    /// Buckets older than this are deleted; at least the raw `retention`
    /// (summaries are what remains of old data).
    pub retention: Span,
}

/// A deadband for the tags a pattern matches: a new value is stored only when
/// it differs from the last stored one by more than `value`, or its quality
/// changed, or `max_gap` passed since the last stored one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadbandRule {
    /// The tags it applies to (`line1.*`); the first rule that matches a tag
    /// is its rule.
    pub tags: TagPattern,
    /// Smallest change stored, in the tag's unit (absolute, at least 0).
    /// Booleans and text are stored when they change, whatever this is.
    pub value: f64,
    /// Store a value at least this often even if it did not change enough,
    /// so trends show the tag was alive; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gap: Option<Span>,
}

/// How the pool of query connections is sized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// From `min_connections` up to `max_connections`, following the measured
    /// demand (queries in flight and waiting); see `history::pool`.
    #[default]
    Adaptive,
    /// Always up to `max_connections`, as the metadata store's pool.
    Fixed,
}

/// The `[history]` section.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Whether values are recorded and the history API answers.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Where history lives; None: beside the metadata (module docs). Its
    /// `min_connections` and `max_connections` bound the query pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseConfig>,
    /// Tags recorded (patterns); all by default.
    #[serde(default = "default_include")]
    pub include: Vec<TagPattern>,
    /// Tags never recorded, even if `include` matches them.
    #[serde(default)]
    pub exclude: Vec<TagPattern>,
    /// Deadbands, first match wins; a tag no rule matches keeps every value.
    #[serde(default)]
    pub deadband: Vec<DeadbandRule>,
    /// Raw values older than this are deleted (and not written when they
    /// arrive that old).
    #[serde(default = "default_retention")]
    pub retention: Span,
    /// Entries of the alarm journal (every alarm transition) older than this
    /// are deleted; at least `1d`. Kept apart from `retention` because
    /// audits ask about alarms a year back, long after the raw values went.
    #[serde(default = "default_alarm_retention")]
    pub alarm_retention: Span,
    /// Summary levels; `[]` keeps none.
    #[serde(default = "default_rollups")]
    pub rollups: Vec<RollupConfig>,
    /// The longest a value waits before it is written: values are written in
    /// one transaction per interval (or per `batch_max_values`), so larger
    /// means fewer, larger writes.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// A transaction is written as soon as this many values wait.
    #[serde(default = "default_batch_max_values")]
    pub batch_max_values: usize,
    /// The most rows one query returns: raw queries page past it (`next`),
    /// aggregated queries asking for more buckets are refused.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// How the query pool is sized.
    #[serde(default)]
    pub pool: PoolMode,
}

const fn default_enabled() -> bool {
    true
}

fn default_include() -> Vec<TagPattern> {
    vec![TagPattern::all()]
}

const fn default_retention() -> Span {
    Span::from_secs(30 * 86_400)
}

const fn default_alarm_retention() -> Span {
    Span::from_secs(365 * 86_400)
}

fn default_rollups() -> Vec<RollupConfig> {
    vec![
        RollupConfig { interval: Span::from_secs(60), retention: Span::from_secs(365 * 86_400) },
        RollupConfig { interval: Span::from_secs(3600), retention: Span::from_secs(3650 * 86_400) },
    ]
}

const fn default_commit_interval_ms() -> u64 {
    1000
}

const fn default_batch_max_values() -> usize {
    100_000
}

const fn default_max_rows() -> usize {
    100_000
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: default_enabled(),
            database: None,
            include: default_include(),
            exclude: Vec::new(),
            deadband: Vec::new(),
            retention: default_retention(),
            alarm_retention: default_alarm_retention(),
            rollups: default_rollups(),
            commit_interval_ms: default_commit_interval_ms(),
            batch_max_values: default_batch_max_values(),
            max_rows: default_max_rows(),
            pool: PoolMode::default(),
        }
    }
}

// By hand, so that logging the config never prints a database password
// (DatabaseConfig's own Debug redacts it).
impl fmt::Debug for HistoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryConfig")
            .field("enabled", &self.enabled)
            .field("database", &self.database)
            .field("include", &self.include)
            .field("exclude", &self.exclude)
            .field("deadband", &self.deadband)
            .field("retention", &self.retention)
            .field("alarm_retention", &self.alarm_retention)
            .field("rollups", &self.rollups)
            .field("commit_interval_ms", &self.commit_interval_ms)
            .field("batch_max_values", &self.batch_max_values)
            .field("max_rows", &self.max_rows)
            .field("pool", &self.pool)
            .finish()
    }
}

/// The longest rollup interval: buckets of a day (UTC).
const MAX_ROLLUP_S: u64 = 86_400;

impl HistoryConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(db) = &self.database {
            db.validate().map_err(|e| e.under("database"))?;
        }
        if self.retention.duration() < Duration::from_secs(60) {
            return Err(FieldError::new("retention", format!("must be at least 1m, got {}", self.retention)));
        }
        if self.retention.duration() > Duration::from_secs(crate::MAX_DURATION_S * 100) {
            return Err(FieldError::new("retention", format!("must be at most 36500d, got {}", self.retention)));
        }
        if self.alarm_retention.duration() < Duration::from_secs(86_400) {
            return Err(FieldError::new(
                "alarm_retention",
                format!("must be at least 1d, got {}", self.alarm_retention),
            ));
        }
        if self.alarm_retention.duration() > Duration::from_secs(crate::MAX_DURATION_S * 100) {
            return Err(FieldError::new(
                "alarm_retention",
                format!("must be at most 36500d, got {}", self.alarm_retention),
            ));
        }
        let mut seen = Vec::new();
        for (i, r) in self.rollups.iter().enumerate() {
            let at = |field: &str| format!("rollups[{i}].{field}");
            let ms = r.interval.duration().as_millis();
            if ms % 1000 != 0 || ms == 0 || ms / 1000 > u128::from(MAX_ROLLUP_S) {
                return Err(FieldError::new(
                    at("interval"),
                    format!("must be whole seconds from 1s to 1d, got {}", r.interval),
                ));
            }
            if seen.contains(&r.interval) {
                return Err(FieldError::new(at("interval"), format!("{} appears twice", r.interval)));
            }
            seen.push(r.interval);
            if r.retention < self.retention {
                return Err(FieldError::new(
                    at("retention"),
                    format!("must be at least the raw retention ({}), got {}", self.retention, r.retention),
                ));
            }
        }
        for (i, d) in self.deadband.iter().enumerate() {
            if !(d.value.is_finite() && d.value >= 0.0) {
                return Err(FieldError::new(
                    format!("deadband[{i}].value"),
                    format!("must be a number >= 0, got {}", d.value),
                ));
            }
            if d.max_gap.is_some_and(|g| g.duration().is_zero()) {
                return Err(FieldError::new(format!("deadband[{i}].max_gap"), "must be longer than 0"));
            }
        }
        if !(10..=600_000).contains(&self.commit_interval_ms) {
            return Err(FieldError::new(
                "commit_interval_ms",
                format!("must be between 10 and 600000, got {}", self.commit_interval_ms),
            ));
        }
        if !(1..=10_000_000).contains(&self.batch_max_values) {
            return Err(FieldError::new(
                "batch_max_values",
                format!("must be between 1 and 10000000, got {}", self.batch_max_values),
            ));
        }
        if !(100..=10_000_000).contains(&self.max_rows) {
            return Err(FieldError::new(
                "max_rows",
                format!("must be between 100 and 10000000, got {}", self.max_rows),
            ));
        }
        Ok(())
    }

    /// The rollup intervals in seconds, shortest first.
    pub fn rollup_widths_s(&self) -> Vec<u64> {
        let mut w: Vec<u64> = self.rollups.iter().map(|r| r.interval.duration().as_secs()).collect();
        w.sort_unstable();
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_and_print_with_their_largest_exact_unit() {
        for (text, ms) in [("500ms", 500), ("10s", 10_000), ("1m", 60_000), ("2h", 7_200_000), ("30d", 2_592_000_000)] {
            let s: Span = text.parse().unwrap();
            assert_eq!(s.duration(), Duration::from_millis(ms), "{text}");
            assert_eq!(s.to_string(), text);
        }
        assert_eq!("90s".parse::<Span>().unwrap().to_string(), "90s");
        assert_eq!("86400s".parse::<Span>().unwrap().to_string(), "1d");
        assert_eq!("14d".parse::<Span>().unwrap().to_string(), "2w");
        for bad in ["", "10", "d", "1.5h", "-1h", "10 parsecs", "99999999999999999999d"] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_defaults_are_valid_and_keep_one_minute_and_one_hour_summaries() {
        let c = HistoryConfig::default();
        c.validate().unwrap();
        assert_eq!(c.rollup_widths_s(), [60, 3600]);
        assert_eq!(c.retention.to_string(), "30d");
        assert_eq!(c.alarm_retention.to_string(), "365d");
    }

    #[test]
    fn errors_name_the_bad_field() {
        let check = |c: HistoryConfig, path: &str| {
            let e = c.validate().unwrap_err();
            assert_eq!(e.path, path, "{e}");
        };
        let base = HistoryConfig::default;
        check(HistoryConfig { retention: Span::from_secs(5), ..base() }, "retention");
        check(HistoryConfig { alarm_retention: Span::from_secs(86_399), ..base() }, "alarm_retention");
        let bad_interval = RollupConfig { interval: Span::from_millis(1500), retention: Span::from_secs(90 * 86_400) };
        check(HistoryConfig { rollups: vec![bad_interval], ..base() }, "rollups[0].interval");
        let short = RollupConfig { interval: Span::from_secs(60), retention: Span::from_secs(86_400) };
        check(HistoryConfig { rollups: vec![short], ..base() }, "rollups[0].retention");
        let rule = DeadbandRule { tags: TagPattern::all(), value: -1.0, max_gap: None };
        check(HistoryConfig { deadband: vec![rule], ..base() }, "deadband[0].value");
        check(HistoryConfig { commit_interval_ms: 0, ..base() }, "commit_interval_ms");
        let db = DatabaseConfig { url: Some("mysql://x".into()), ..DatabaseConfig::default() };
        check(HistoryConfig { database: Some(db), ..base() }, "database.url");
    }
}
