//! One alarm's state: its condition (with deadband and on/off delays) and the
//! ISA-18.2 state machine on top of it. Pure: time comes in as arguments, so
//! every rule of when an alarm is raised, cleared, acknowledged or shelved is
//! tested without a bus or a clock.
//!
//! ```text
//!             condition true                      acknowledge
//!   normal ─────────────────> active_unacked ─────────────> active_acked
//!     ^  ^                        │      ^                        │
//!     │  └──── acknowledge ───┐   │clear │ condition true         │ clear
//!     │                       │   v      │                        │
//!     │                    cleared_unacked                        │
//!     └───────────────────────────────────────────────────────────┘
//! shelved (until a time, with a reason) and disabled (the rule is off) sit
//! above these: they publish nothing until unshelved or enabled, when the
//! alarm starts again from normal and the condition is evaluated afresh.
//! ```

use std::sync::Arc;

use gateway_model::{AlarmState, Quality, QualityLevel, Value};
use serde::{Deserialize, Serialize};

use crate::rule::{Kind, Rule};

/// Why an alarm changed state: what a transition event's `code` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The condition became true (after `on_delay`).
    Raised,
    /// The condition became false (after `off_delay`).
    Cleared,
    /// Someone acknowledged it.
    Acked,
    /// Someone shelved it.
    Shelved,
    /// Someone unshelved it, or its shelving expired.
    Unshelved,
    /// Its rule was disabled.
    Disabled,
    /// Its rule was enabled again.
    Enabled,
}

impl Change {
    /// The event code (`raised`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Raised => "raised",
            Change::Cleared => "cleared",
            Change::Acked => "acked",
            Change::Shelved => "shelved",
            Change::Unshelved => "unshelved",
            Change::Disabled => "disabled",
            Change::Enabled => "enabled",
        }
    }
}

/// A shelving: until when, why and by whom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shelving {
    /// When it ends by itself, nanoseconds since the epoch.
    pub until_ns: u64,
    /// Why (required: ISA-18.2 wants shelving justified).
    pub reason: Arc<str>,
    /// Who shelved it.
    pub by: Arc<str>,
}

/// An exponentially weighted mean and variance: the band an `anomaly` rule
/// expects its figure in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The weighted mean.
    pub mean: f64,
    /// The weighted variance.
    pub var: f64,
    /// Samples taken in so far (saturating).
    pub n: u32,
}

/// How much each new sample weighs in the baseline: a half-life of about 35 samples.
const EWMA_ALPHA: f64 = 0.02;
/// Samples before an anomaly rule may fire: the band means nothing before.
pub const ANOMALY_WARMUP: u32 = 60;

impl Baseline {
    fn update(&mut self, x: f64) {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean += EWMA_ALPHA * d;
            self.var = (1.0 - EWMA_ALPHA) * (self.var + EWMA_ALPHA * d * d);
        }
        self.n = self.n.saturating_add(1);
    }

    /// Whether `x` lies outside mean ± `sigmas` standard deviations. The
    /// deviation has a floor (1% of the mean, and a tiny absolute one) so
    /// that a figure that never moved does not fire on its first wobble.
    pub fn outside(&self, x: f64, sigmas: f64) -> bool {
        if self.n < ANOMALY_WARMUP {
            return false;
        }
        let sd = self.var.sqrt().max(self.mean.abs() * 0.01).max(1e-9);
        (x - self.mean).abs() > sigmas * sd
    }
}

/// One alarm: a rule applied to one subject (a tag or a system figure).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Alarm {
    /// `rule:subject`.
    pub id: Arc<str>,
    /// The rule's name.
    pub rule: Arc<str>,
    /// The tag or figure it watches.
    pub subject: Arc<str>,
    /// The ISA state below shelving and disabling: normal, active or cleared,
    /// acknowledged or not.
    pub base: AlarmState,
    /// Set while shelved.
    #[serde(default)]
    pub shelved: Option<Shelving>,
    /// The condition as the alarm holds it (after delays).
    pub cond: bool,
    /// The condition as the last reading (with the deadband) says.
    #[serde(default)]
    pub raw: bool,
    /// Since when `raw` has differed from `cond`.
    #[serde(default)]
    pub pending_since: Option<u64>,
    /// The last reading's value, when it had one.
    #[serde(default)]
    pub value: Option<Value>,
    /// The last reading's time (for `stale` and `rate_of_change`).
    #[serde(default)]
    pub last_ts: u64,
    /// When it entered its current state.
    pub since_ns: u64,
    /// The value when it was last raised.
    #[serde(default)]
    pub raised_value: Option<Value>,
    /// Who acknowledged it last, and their comment.
    #[serde(default)]
    pub acked_by: Option<Arc<str>>,
    /// The anomaly baseline, for `anomaly` rules.
    #[serde(default)]
    pub baseline: Option<Baseline>,
    /// The message as last rendered.
    #[serde(default)]
    pub message: Arc<str>,
    /// Whether its rule is disabled.
    #[serde(default)]
    pub disabled: bool,
}

/// A transition, to be published as an event.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// What happened.
    pub change: Change,
    /// The state it entered (as shown: shelved and disabled included).
    pub state: AlarmState,
    /// The value involved, if any.
    pub value: Option<Value>,
    /// Who, for people's actions.
    pub user: Option<Arc<str>>,
    /// Their comment or reason.
    pub comment: Option<Arc<str>>,
    /// When.
    pub ts_ns: u64,
}

/// Why an operator's action was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// Acknowledging an alarm that is not waiting for it.
    #[error("alarm {0} is not waiting for acknowledgement")]
    NothingToAck(String),
    /// Shelving a shelved alarm, or unshelving one that is not.
    #[error("alarm {0} is {1}")]
    WrongState(String, &'static str),
    /// The alarm's rule is disabled.
    #[error("alarm {0} is disabled")]
    Disabled(String),
}

impl Alarm {
    /// A new alarm of `rule` on `subject`, normal, created at `now`.
    pub fn new(rule: &Rule, subject: Arc<str>, now: u64) -> Self {
        Alarm {
            id: format!("{}:{}", rule.name, subject).into(),
            rule: rule.name.clone(),
            subject,
            base: AlarmState::Normal,
            shelved: None,
            cond: false,
            raw: false,
            pending_since: None,
            value: None,
            // A stale rule counts from when the gateway began watching.
            last_ts: now,
            since_ns: now,
            raised_value: None,
            acked_by: None,
            baseline: (rule.kind == Kind::Anomaly).then(Baseline::default),
            message: Arc::from(""),
            disabled: !rule.enabled,
        }
    }

    /// The state as people see it: disabled, then shelved, then the ISA state.
    pub fn state(&self) -> AlarmState {
        if self.disabled {
            AlarmState::Disabled
        } else if self.shelved.is_some() {
            AlarmState::Shelved
        } else {
            self.base
        }
    }

    /// Whether it belongs in the list of alarms needing attention (anything
    /// but normal and disabled).
    pub fn is_active(&self) -> bool {
        !matches!(self.state(), AlarmState::Normal | AlarmState::Disabled)
    }

    /// Evaluates a reading taken at `ts`; a transition if the alarm changed.
    pub fn on_reading(&mut self, rule: &Rule, value: &Value, quality: Quality, ts: u64) -> Option<Transition> {
        if self.disabled {
            return None;
        }
        let prev_ts = self.last_ts;
        let prev_value = self.value.replace(value.clone());
        self.last_ts = ts;
        let raw = match rule.kind {
            Kind::BadQuality => Some(quality.level == QualityLevel::Bad),
            // Any reading, whatever its quality, shows the tag is updated.
            Kind::Stale => Some(false),
            _ if quality.level == QualityLevel::Bad => None,
            Kind::High | Kind::HighHigh => {
                value.as_f64().map(|v| if self.raw { v > rule.limit_f64 - rule.deadband } else { v > rule.limit_f64 })
            }
            Kind::Low | Kind::LowLow => {
                value.as_f64().map(|v| if self.raw { v < rule.limit_f64 + rule.deadband } else { v < rule.limit_f64 })
            }
            Kind::Equals => rule.limit.as_ref().map(|l| values_equal(value, l)),
            Kind::NotEquals => rule.limit.as_ref().map(|l| !values_equal(value, l)),
            Kind::RateOfChange => match (value.as_f64(), prev_value.as_ref().and_then(Value::as_f64)) {
                (Some(v), Some(p)) if ts > prev_ts => {
                    let rate = ((v - p) / ((ts - prev_ts) as f64 / 1e9)).abs();
                    Some(if self.raw { rate > rule.limit_f64 - rule.deadband } else { rate > rule.limit_f64 })
                }
                _ => None,
            },
            Kind::Anomaly => value.as_f64().map(|v| {
                let b = self.baseline.get_or_insert_with(Baseline::default);
                let out = b.outside(v, rule.limit_f64);
                // The band follows normal readings only: an anomaly must not
                // teach the baseline that it is normal.
                if !out {
                    b.update(v);
                }
                out
            }),
        };
        let raw = raw?;
        self.step(rule, raw, ts, Some(value))
    }

    /// Moves time to `now` (wall clock): delays that have run out take
    /// effect, a stale tag becomes stale, a shelving that has ended ends.
    pub fn on_tick(&mut self, rule: &Rule, now: u64) -> Option<Transition> {
        if self.disabled {
            return None;
        }
        if let Some(s) = &self.shelved
            && now >= s.until_ns
        {
            return Some(self.unshelve_inner(rule, None, Some("shelving expired".into()), now));
        }
        let raw = if rule.kind == Kind::Stale { now.saturating_sub(self.last_ts) > rule.timeout_ns } else { self.raw };
        let value = self.value.clone();
        self.step(rule, raw, now, value.as_ref())
    }

    /// Applies a new raw condition at `ts`, through the delays.
    fn step(&mut self, rule: &Rule, raw: bool, ts: u64, value: Option<&Value>) -> Option<Transition> {
        if raw != self.raw {
            self.raw = raw;
            self.pending_since = (raw != self.cond).then_some(ts);
        } else if raw != self.cond && self.pending_since.is_none() {
            self.pending_since = Some(ts);
        }
        if raw == self.cond {
            self.pending_since = None;
            return None;
        }
        let delay = if raw { rule.on_delay_ns } else { rule.off_delay_ns };
        let since = self.pending_since.unwrap_or(ts);
        if ts.saturating_sub(since) < delay {
            return None;
        }
        self.pending_since = None;
        self.cond = raw;
        if self.shelved.is_some() {
            // A shelved alarm follows its condition silently.
            return None;
        }
        let change = if raw {
            self.raised_value = value.cloned();
            self.message = rule.render(&self.subject, value).into();
            match self.base {
                AlarmState::Normal | AlarmState::ClearedUnacked => self.base = AlarmState::ActiveUnacked,
                _ => return None,
            }
            Change::Raised
        } else {
            match self.base {
                AlarmState::ActiveUnacked => self.base = AlarmState::ClearedUnacked,
                AlarmState::ActiveAcked => self.base = AlarmState::Normal,
                _ => return None,
            }
            Change::Cleared
        };
        self.since_ns = ts;
        Some(self.transition(change, value.cloned(), None, None, ts))
    }

    fn transition(
        &self,
        change: Change,
        value: Option<Value>,
        user: Option<Arc<str>>,
        comment: Option<Arc<str>>,
        ts_ns: u64,
    ) -> Transition {
        Transition { change, state: self.state(), value, user, comment, ts_ns }
    }

    /// An operator acknowledges it.
    pub fn ack(&mut self, user: Arc<str>, comment: Option<Arc<str>>, now: u64) -> Result<Transition, ActionError> {
        if self.disabled {
            return Err(ActionError::Disabled(self.id.to_string()));
        }
        match self.base {
            AlarmState::ActiveUnacked if self.shelved.is_none() => self.base = AlarmState::ActiveAcked,
            AlarmState::ClearedUnacked if self.shelved.is_none() => self.base = AlarmState::Normal,
            _ => return Err(ActionError::NothingToAck(self.id.to_string())),
        }
        self.acked_by = Some(user.clone());
        self.since_ns = now;
        Ok(self.transition(Change::Acked, self.value.clone(), Some(user), comment, now))
    }

    /// An operator shelves it until `until_ns`, for `reason`.
    pub fn shelve(
        &mut self,
        user: Arc<str>,
        reason: Arc<str>,
        until_ns: u64,
        now: u64,
    ) -> Result<Transition, ActionError> {
        if self.disabled {
            return Err(ActionError::Disabled(self.id.to_string()));
        }
        if self.shelved.is_some() {
            return Err(ActionError::WrongState(self.id.to_string(), "already shelved"));
        }
        self.shelved = Some(Shelving { until_ns, reason: reason.clone(), by: user.clone() });
        // Whatever awaited acknowledgement is set aside with the shelving; the
        // condition is evaluated afresh when it ends.
        self.base = AlarmState::Normal;
        self.since_ns = now;
        Ok(self.transition(Change::Shelved, self.value.clone(), Some(user), Some(reason), now))
    }

    /// An operator unshelves it.
    pub fn unshelve(
        &mut self,
        rule: &Rule,
        user: Arc<str>,
        comment: Option<Arc<str>>,
        now: u64,
    ) -> Result<Transition, ActionError> {
        if self.shelved.is_none() {
            return Err(ActionError::WrongState(self.id.to_string(), "not shelved"));
        }
        Ok(self.unshelve_inner(rule, Some(user), comment, now))
    }

    /// Ends the shelving. If the condition holds, the alarm comes back
    /// active and unacknowledged (the event says `unshelved` with that state).
    fn unshelve_inner(
        &mut self,
        rule: &Rule,
        user: Option<Arc<str>>,
        comment: Option<Arc<str>>,
        now: u64,
    ) -> Transition {
        self.shelved = None;
        self.since_ns = now;
        if self.cond {
            self.base = AlarmState::ActiveUnacked;
            self.raised_value = self.value.clone();
            self.message = rule.render(&self.subject, self.value.as_ref()).into();
        } else {
            self.base = AlarmState::Normal;
        }
        self.transition(Change::Unshelved, self.value.clone(), user, comment, now)
    }

    /// Applies its rule's `enabled`; a transition if that changed it.
    pub fn set_enabled(&mut self, enabled: bool, now: u64) -> Option<Transition> {
        if enabled != self.disabled {
            return None;
        }
        self.disabled = !enabled;
        // Either way it starts again from normal: a disabled rule watched nothing.
        self.base = AlarmState::Normal;
        self.shelved = None;
        self.cond = false;
        self.raw = false;
        self.pending_since = None;
        self.last_ts = now;
        self.since_ns = now;
        Some(self.transition(if enabled { Change::Enabled } else { Change::Disabled }, None, None, None, now))
    }
}

/// `equals` compares numbers as numbers (`1` equals `1.0` and `true`),
/// strings as strings.
fn values_equal(v: &Value, limit: &Value) -> bool {
    match (v, limit) {
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Str(_), _) | (_, Value::Str(_)) => false,
        (Value::Bytes(a), Value::Bytes(b)) => a == b,
        _ => match (v.as_f64(), limit.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use gateway_model::Reason;

    use super::*;
    use crate::rule::RuleConfig;

    const S: u64 = 1_000_000_000;

    fn rule(extra: &str) -> Rule {
        let r: RuleConfig = toml::from_str(&format!("name = \"r\"\ntag = \"d.t\"\n{extra}")).unwrap();
        r.compile().unwrap()
    }

    fn alarm(r: &Rule) -> Alarm {
        Alarm::new(r, "d.t".into(), 0)
    }

    fn read(a: &mut Alarm, r: &Rule, v: f64, t: u64) -> Option<Change> {
        a.on_reading(r, &Value::F64(v), Quality::GOOD, t).map(|t| t.change)
    }

    #[test]
    fn high_with_deadband_raises_above_the_limit_and_clears_below_limit_minus_deadband() {
        let r = rule("kind = \"high\"\nlimit = 90\ndeadband = 2.0\n");
        let mut a = alarm(&r);
        assert_eq!(read(&mut a, &r, 90.0, S), None, "at the limit is not above it");
        assert_eq!(read(&mut a, &r, 90.5, 2 * S), Some(Change::Raised));
        assert_eq!(a.state(), AlarmState::ActiveUnacked);
        assert_eq!(read(&mut a, &r, 89.0, 3 * S), None, "inside the deadband it stays active");
        assert_eq!(read(&mut a, &r, 91.0, 4 * S), None, "already active");
        assert_eq!(read(&mut a, &r, 87.9, 5 * S), Some(Change::Cleared));
        assert_eq!(a.state(), AlarmState::ClearedUnacked);
        assert_eq!(read(&mut a, &r, 89.0, 6 * S), None, "below the limit: still clear");
        assert_eq!(read(&mut a, &r, 95.0, 7 * S), Some(Change::Raised), "raised again before anyone acknowledged");
        assert_eq!(a.state(), AlarmState::ActiveUnacked);
    }

    #[test]
    fn low_and_low_low_mirror_high() {
        let r = rule("kind = \"low_low\"\nlimit = 10\ndeadband = 1.0\n");
        let mut a = alarm(&r);
        assert_eq!(read(&mut a, &r, 9.0, S), Some(Change::Raised));
        assert_eq!(read(&mut a, &r, 10.5, 2 * S), None, "inside the deadband");
        assert_eq!(read(&mut a, &r, 11.5, 3 * S), Some(Change::Cleared));
    }

    #[test]
    fn on_delay_needs_the_condition_to_hold_for_the_whole_delay() {
        let r = rule("kind = \"high\"\nlimit = 10\non_delay = \"5s\"\n");
        let mut a = alarm(&r);
        assert_eq!(read(&mut a, &r, 11.0, 10 * S), None);
        assert_eq!(read(&mut a, &r, 12.0, 14 * S), None, "4 s is not 5");
        assert_eq!(read(&mut a, &r, 9.0, 14 * S + 1), None, "dropped back: the delay starts over");
        assert_eq!(read(&mut a, &r, 11.0, 20 * S), None);
        assert_eq!(a.on_tick(&r, 24 * S), None);
        let t = a.on_tick(&r, 25 * S).unwrap();
        assert_eq!(t.change, Change::Raised, "the tick raises it once the delay ran out without a new reading");
        assert_eq!(t.ts_ns, 25 * S);
    }

    #[test]
    fn off_delay_needs_the_condition_to_stay_clear() {
        let r = rule("kind = \"high\"\nlimit = 10\noff_delay = \"3s\"\n");
        let mut a = alarm(&r);
        assert_eq!(read(&mut a, &r, 11.0, S), Some(Change::Raised));
        a.ack("op".into(), None, S).unwrap();
        assert_eq!(read(&mut a, &r, 9.0, 2 * S), None);
        assert_eq!(read(&mut a, &r, 11.0, 3 * S), None, "back above: clearing starts over");
        assert_eq!(read(&mut a, &r, 9.0, 4 * S), None);
        assert_eq!(read(&mut a, &r, 9.0, 6 * S), None);
        assert_eq!(read(&mut a, &r, 9.0, 7 * S), Some(Change::Cleared));
        assert_eq!(a.state(), AlarmState::Normal, "acknowledged, then cleared: normal");
    }

    #[test]
    fn acknowledgement_follows_isa_18_2() {
        let r = rule("kind = \"high\"\nlimit = 10\n");
        let mut a = alarm(&r);
        assert!(matches!(a.ack("op".into(), None, 0), Err(ActionError::NothingToAck(_))));
        read(&mut a, &r, 11.0, S);
        let t = a.ack("op".into(), Some("seen".into()), 2 * S).unwrap();
        assert_eq!((t.change, t.state), (Change::Acked, AlarmState::ActiveAcked));
        assert_eq!(t.user.as_deref(), Some("op"));
        assert_eq!(t.comment.as_deref(), Some("seen"));
        assert!(a.ack("op".into(), None, 3 * S).is_err(), "acknowledged once");
        // Cleared before acknowledgement, then acknowledged: normal.
        let mut b = alarm(&r);
        read(&mut b, &r, 11.0, S);
        read(&mut b, &r, 9.0, 2 * S);
        assert_eq!(b.state(), AlarmState::ClearedUnacked);
        assert_eq!(b.ack("op".into(), None, 3 * S).unwrap().state, AlarmState::Normal);
        assert!(!b.is_active());
    }

    #[test]
    fn a_shelved_alarm_raises_nothing_until_its_shelving_ends() {
        let r = rule("kind = \"high\"\nlimit = 10\n");
        let mut a = alarm(&r);
        read(&mut a, &r, 11.0, S);
        let t = a.shelve("op".into(), "sensor being replaced".into(), 100 * S, 2 * S).unwrap();
        assert_eq!(t.state, AlarmState::Shelved);
        assert!(a.shelve("op".into(), "again".into(), 100 * S, 2 * S).is_err());
        assert!(a.ack("op".into(), None, 3 * S).is_err(), "nothing to acknowledge while shelved");
        assert_eq!(read(&mut a, &r, 9.0, 3 * S), None);
        assert_eq!(read(&mut a, &r, 12.0, 4 * S), None, "silent while shelved");
        assert_eq!(a.on_tick(&r, 50 * S), None);
        let t = a.on_tick(&r, 100 * S).unwrap();
        assert_eq!(t.change, Change::Unshelved);
        assert_eq!(t.state, AlarmState::ActiveUnacked, "the condition still holds: it comes back active");
        // Unshelved by hand while clear: normal.
        let mut b = alarm(&r);
        b.shelve("op".into(), "why".into(), 100 * S, S).unwrap();
        let t = b.unshelve(&r, "op".into(), None, 2 * S).unwrap();
        assert_eq!(t.state, AlarmState::Normal);
        assert!(b.unshelve(&r, "op".into(), None, 3 * S).is_err());
    }

    #[test]
    fn bad_quality_and_threshold_rules_read_quality_differently() {
        let bq = rule("kind = \"bad_quality\"\n");
        let mut a = alarm(&bq);
        assert_eq!(
            a.on_reading(&bq, &Value::F64(0.0), Quality::bad(Reason::TIMEOUT), S).map(|t| t.change),
            Some(Change::Raised)
        );
        assert_eq!(read(&mut a, &bq, 1.0, 2 * S), Some(Change::Cleared));
        let hi = rule("kind = \"high\"\nlimit = 10\n");
        let mut b = alarm(&hi);
        assert_eq!(
            b.on_reading(&hi, &Value::F64(99.0), Quality::bad(Reason::TIMEOUT), S),
            None,
            "a bad reading's value is a placeholder, not a measurement"
        );
    }

    #[test]
    fn stale_counts_from_the_last_reading() {
        let r = rule("kind = \"stale\"\ntimeout = \"10s\"\n");
        let mut a = Alarm::new(&r, "d.t".into(), 100 * S);
        assert_eq!(a.on_tick(&r, 109 * S), None, "counts from when watching began");
        assert_eq!(a.on_tick(&r, 111 * S).map(|t| t.change), Some(Change::Raised));
        assert_eq!(read(&mut a, &r, 1.0, 112 * S), Some(Change::Cleared), "a reading freshens it");
        assert_eq!(a.on_tick(&r, 121 * S), None);
        assert_eq!(a.on_tick(&r, 123 * S).map(|t| t.change), Some(Change::Raised));
    }

    #[test]
    fn rate_of_change_uses_the_readings_own_times() {
        let r = rule("kind = \"rate_of_change\"\nlimit = 5.0\ndeadband = 1.0\n");
        let mut a = alarm(&r);
        assert_eq!(read(&mut a, &r, 0.0, 10 * S), None);
        assert_eq!(read(&mut a, &r, 4.0, 11 * S), None, "4/s");
        assert_eq!(read(&mut a, &r, 10.0, 12 * S), Some(Change::Raised), "6/s");
        assert_eq!(read(&mut a, &r, 14.5, 13 * S), None, "4.5/s is inside the deadband");
        assert_eq!(read(&mut a, &r, 10.0, 14 * S), None, "falling 4.5/s counts too");
        assert_eq!(read(&mut a, &r, 13.0, 15 * S), Some(Change::Cleared), "3/s");
    }

    #[test]
    fn equals_compares_numbers_and_strings() {
        let r = rule("kind = \"equals\"\nlimit = \"FAULT\"\n");
        let mut a = alarm(&r);
        assert_eq!(a.on_reading(&r, &Value::Str("OK".into()), Quality::GOOD, S), None);
        assert_eq!(
            a.on_reading(&r, &Value::Str("FAULT".into()), Quality::GOOD, 2 * S).map(|t| t.change),
            Some(Change::Raised)
        );
        let ne = rule("kind = \"not_equals\"\nlimit = true\n");
        let mut b = alarm(&ne);
        assert_eq!(b.on_reading(&ne, &Value::Bool(true), Quality::GOOD, S), None);
        assert_eq!(b.on_reading(&ne, &Value::I64(0), Quality::GOOD, 2 * S).map(|t| t.change), Some(Change::Raised));
        assert_eq!(b.on_reading(&ne, &Value::F64(1.0), Quality::GOOD, 3 * S).map(|t| t.change), Some(Change::Cleared));
    }

    #[test]
    fn anomaly_fires_outside_the_learned_band_and_does_not_learn_the_anomaly() {
        let r = rule("kind = \"anomaly\"\nlimit = 4.0\n");
        let mut a = alarm(&r);
        for i in 0..200u64 {
            // 10 ± 0.5
            let v = 10.0 + if i % 2 == 0 { 0.5 } else { -0.5 };
            assert_eq!(read(&mut a, &r, v, i * S), None, "sample {i}");
        }
        assert_eq!(read(&mut a, &r, 30.0, 200 * S), Some(Change::Raised));
        for i in 201..300u64 {
            assert_eq!(read(&mut a, &r, 30.0, i * S), None, "it stays raised: the baseline does not move to 30");
        }
        assert_eq!(read(&mut a, &r, 10.2, 300 * S), Some(Change::Cleared));
    }

    #[test]
    fn disabling_a_rule_silences_its_alarms_and_enabling_starts_afresh() {
        let r = rule("kind = \"high\"\nlimit = 10\n");
        let mut a = alarm(&r);
        read(&mut a, &r, 11.0, S);
        assert_eq!(a.set_enabled(false, 2 * S).unwrap().state, AlarmState::Disabled);
        assert_eq!(read(&mut a, &r, 20.0, 3 * S), None);
        assert!(a.ack("op".into(), None, 3 * S).is_err());
        assert_eq!(a.set_enabled(true, 4 * S).unwrap().state, AlarmState::Normal);
        assert_eq!(read(&mut a, &r, 20.0, 5 * S), Some(Change::Raised));
    }
}
