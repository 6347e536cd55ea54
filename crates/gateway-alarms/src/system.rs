//! The gateway's watch on itself: built-in rules (`system.*`, on by default,
//! each threshold in `[alarms.system]`) over figures the gateway samples
//! from its own parts and feeds to the engine under names in the
//! `_gateway.` namespace. Being ordinary rules, system alarms have the same
//! deadbands, delays, acknowledgement and shelving as any other.
//!
//! | rule | figure | raised when |
//! |---|---|---|
//! | `system.wal_backlog` | `_gateway.wal.backlog_frames.{subscriber}` | a durable subscriber is more than `wal_backlog_frames` behind |
//! | `system.wal_backlog_age` | `_gateway.wal.backlog_s.{subscriber}` | ... or its backlog holds more than `wal_backlog_age` of data |
//! | `system.ring_high` | `_gateway.bus.ring_usage` | the ring is above `pause_hi` (publishers are paused) |
//! | `system.wal_flush_slow` | `_gateway.wal.flush_p99_ms` | WAL flush p99 over the last 10 s is above `wal_flush_p99_ms` |
//! | `system.disk_low` | `_gateway.disk.free_mb` | the WAL's file system has less than `disk_free_mb` free |
//! | `system.device_down` | `_gateway.device.{name}.connected` | a device is disconnected for longer than `device_down_after` |
//! | `system.driver_failed` | `_gateway.device.{name}.failed` | a device's driver task died |
//! | `system.connector_down` | `_gateway.connector.{name}.connected` | a connector is disconnected for longer than `connector_down_after` |
//! | `system.anomaly.wal_flush` | `_gateway.wal.flush_mean_ms` | the mean flush time leaves its usual band for `anomaly_for` |
//! | `system.anomaly.poll` | `_gateway.device.{name}.poll_ms` | a device's poll round trip leaves its usual band |
//! | `system.anomaly.rate` | `_gateway.device.{name}.values_per_s` | a device's values per second leave their usual band |

use gateway_model::{FieldError, Span, Value};
use serde::{Deserialize, Serialize};

use crate::rule::{Kind, Priority, RuleConfig};

/// Every system figure's name starts with this; rules may watch them by name.
pub const SUBJECT_PREFIX: &str = "_gateway.";

/// `[alarms.system]`: thresholds of the built-in rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// Whether the gateway watches itself (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often the figures are sampled (default 1s).
    #[serde(default = "default_interval")]
    pub interval: Span,
    /// A durable subscriber (connector, history) further behind than this
    /// many frames (default 1,000,000).
    #[serde(default = "default_backlog_frames")]
    pub wal_backlog_frames: u64,
    /// ... or whose backlog holds more than this much data, judged by the
    /// rate frames arrive at (default 5m).
    #[serde(default = "default_backlog_age")]
    pub wal_backlog_age: Span,
    /// WAL flush p99 above this many milliseconds (default 100).
    #[serde(default = "default_flush_p99_ms")]
    pub wal_flush_p99_ms: f64,
    /// Free space on the WAL's file system below this many MiB (default 1024).
    #[serde(default = "default_disk_free_mb")]
    pub disk_free_mb: u64,
    /// A device disconnected for longer than this (default 1m).
    #[serde(default = "default_down_after")]
    pub device_down_after: Span,
    /// A connector disconnected for longer than this (default 1m).
    #[serde(default = "default_down_after")]
    pub connector_down_after: Span,
    /// Whether performance figures are watched for anomalies (default true).
    #[serde(default = "yes")]
    pub anomaly: bool,
    /// How many standard deviations from its baseline make a figure
    /// anomalous (default 6).
    #[serde(default = "default_sigma")]
    pub anomaly_sigma: f64,
    /// How long a figure must stay out of its band (default 1m).
    #[serde(default = "default_anomaly_for")]
    pub anomaly_for: Span,
}

const fn yes() -> bool {
    true
}
const fn default_interval() -> Span {
    Span::from_secs(1)
}
const fn default_backlog_frames() -> u64 {
    1_000_000
}
const fn default_backlog_age() -> Span {
    Span::from_secs(300)
}
const fn default_flush_p99_ms() -> f64 {
    100.0
}
const fn default_disk_free_mb() -> u64 {
    1024
}
const fn default_down_after() -> Span {
    Span::from_secs(60)
}
const fn default_sigma() -> f64 {
    6.0
}
const fn default_anomaly_for() -> Span {
    Span::from_secs(60)
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            enabled: true,
            interval: default_interval(),
            wal_backlog_frames: default_backlog_frames(),
            wal_backlog_age: default_backlog_age(),
            wal_flush_p99_ms: default_flush_p99_ms(),
            disk_free_mb: default_disk_free_mb(),
            device_down_after: default_down_after(),
            connector_down_after: default_down_after(),
            anomaly: true,
            anomaly_sigma: default_sigma(),
            anomaly_for: default_anomaly_for(),
        }
    }
}

impl SystemConfig {
    /// Checks the thresholds; paths relative to `[alarms.system]`.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.interval < Span::from_millis(100) || self.interval > Span::from_secs(60) {
            return Err(FieldError::new("interval", "must be between 100ms and 1m"));
        }
        if self.wal_backlog_frames == 0 {
            return Err(FieldError::new("wal_backlog_frames", "must be at least 1"));
        }
        if !(self.wal_flush_p99_ms.is_finite() && self.wal_flush_p99_ms > 0.0) {
            return Err(FieldError::new("wal_flush_p99_ms", "must be a number above 0"));
        }
        if !(self.anomaly_sigma.is_finite() && self.anomaly_sigma >= 1.0) {
            return Err(FieldError::new("anomaly_sigma", "must be a number, 1 or more"));
        }
        for (field, s) in [
            ("wal_backlog_age", self.wal_backlog_age),
            ("device_down_after", self.device_down_after),
            ("connector_down_after", self.connector_down_after),
            ("anomaly_for", self.anomaly_for),
        ] {
            if s > Span::from_secs(86_400) {
                return Err(FieldError::new(field, "must be at most 1d"));
            }
        }
        Ok(())
    }

    /// The built-in rules, for a bus that pauses publishers above
    /// `pause_hi` and resumes below `resume_lo` (fractions of the ring).
    pub fn rules(&self, pause_hi: f64, resume_lo: f64) -> Vec<RuleConfig> {
        if !self.enabled {
            return Vec::new();
        }
        let rule =
            |name: &str, tag: &str, kind: Kind, limit: Option<f64>, priority: Priority, message: &str| RuleConfig {
                name: name.into(),
                tag: format!("{SUBJECT_PREFIX}{tag}"),
                kind,
                limit: limit.map(Value::F64),
                deadband: 0.0,
                on_delay: None,
                off_delay: None,
                timeout: None,
                priority: Some(priority),
                message: Some(message.into()),
                enabled: true,
            };
        let mut v = vec![
            RuleConfig {
                // Clears once below 90% of the limit, so that a backlog
                // hovering at the limit does not flap.
                deadband: self.wal_backlog_frames as f64 * 0.1,
                ..rule(
                    "system.wal_backlog",
                    "wal.backlog_frames.*",
                    Kind::High,
                    Some(self.wal_backlog_frames as f64),
                    Priority::High,
                    "{tag}: {value} frames wait in the WAL (limit {limit})",
                )
            },
            RuleConfig {
                deadband: self.wal_backlog_age.duration().as_secs_f64() * 0.1,
                ..rule(
                    "system.wal_backlog_age",
                    "wal.backlog_s.*",
                    Kind::High,
                    Some(self.wal_backlog_age.duration().as_secs_f64()),
                    Priority::High,
                    "{tag}: about {value} s of data wait in the WAL (limit {limit} s)",
                )
            },
            RuleConfig {
                deadband: (pause_hi - resume_lo).max(0.0),
                ..rule(
                    "system.ring_high",
                    "bus.ring_usage",
                    Kind::High,
                    Some(pause_hi),
                    Priority::Critical,
                    "The bus ring is {value} full, above pause_hi {limit}: publishers (drivers) are paused",
                )
            },
            RuleConfig {
                deadband: self.wal_flush_p99_ms * 0.2,
                ..rule(
                    "system.wal_flush_slow",
                    "wal.flush_p99_ms",
                    Kind::High,
                    Some(self.wal_flush_p99_ms),
                    Priority::Medium,
                    "WAL flush p99 is {value} ms, above {limit} ms",
                )
            },
            RuleConfig {
                deadband: self.disk_free_mb as f64 * 0.1,
                ..rule(
                    "system.disk_low",
                    "disk.free_mb",
                    Kind::Low,
                    Some(self.disk_free_mb as f64),
                    Priority::Critical,
                    "Only {value} MiB free on the WAL's disk (limit {limit} MiB)",
                )
            },
            RuleConfig {
                on_delay: Some(self.device_down_after),
                ..rule(
                    "system.device_down",
                    "device.*.connected",
                    Kind::Equals,
                    Some(0.0),
                    Priority::High,
                    "{tag}: the device is disconnected",
                )
            },
            rule(
                "system.driver_failed",
                "device.*.failed",
                Kind::Equals,
                Some(1.0),
                Priority::Critical,
                "{tag}: the driver task failed (see the device's status)",
            ),
            RuleConfig {
                on_delay: Some(self.connector_down_after),
                ..rule(
                    "system.connector_down",
                    "connector.*.connected",
                    Kind::Equals,
                    Some(0.0),
                    Priority::High,
                    "{tag}: the connector is disconnected; data waits in the WAL",
                )
            },
        ];
        if self.anomaly {
            for (name, tag, what) in [
                ("system.anomaly.wal_flush", "wal.flush_mean_ms", "WAL flush time"),
                ("system.anomaly.poll", "device.*.poll_ms", "poll round trip"),
                ("system.anomaly.rate", "device.*.values_per_s", "values per second"),
            ] {
                let message = format!("{{tag}}: {what} is {{value}}, outside its usual band");
                v.push(RuleConfig {
                    on_delay: Some(self.anomaly_for),
                    off_delay: Some(self.anomaly_for),
                    ..rule(name, tag, Kind::Anomaly, Some(self.anomaly_sigma), Priority::Low, &message)
                });
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_rules_are_valid_and_follow_the_thresholds() {
        let c = SystemConfig { wal_backlog_frames: 500, ..SystemConfig::default() };
        let rules = c.rules(0.85, 0.70);
        let compiled = crate::rule::compile_all(&rules, "system").unwrap();
        assert_eq!(compiled.len(), 11);
        let backlog = compiled.iter().find(|r| &*r.name == "system.wal_backlog").unwrap();
        assert_eq!(backlog.limit_f64, 500.0);
        assert!(backlog.target.matches("_gateway.wal.backlog_frames.mqtt-up"));
        let ring = compiled.iter().find(|r| &*r.name == "system.ring_high").unwrap();
        assert!((ring.deadband - 0.15).abs() < 1e-9, "clears at resume_lo");
        assert!(SystemConfig { enabled: false, ..c.clone() }.rules(0.85, 0.7).is_empty());
        assert_eq!(SystemConfig { anomaly: false, ..c }.rules(0.85, 0.7).len(), 8);
    }

    #[test]
    fn bad_thresholds_name_the_field() {
        let e = SystemConfig { anomaly_sigma: 0.5, ..SystemConfig::default() }.validate().unwrap_err();
        assert_eq!(e.path, "anomaly_sigma");
        let e = SystemConfig { interval: Span::from_millis(10), ..SystemConfig::default() }.validate().unwrap_err();
        assert_eq!(e.path, "interval");
    }
}
