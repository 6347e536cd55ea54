//! Alarm rules as people write them (`[[alarms.rules]]` in the config file,
//! `POST /api/v1/alarms/rules` over the API), checked once into a [`Rule`]
//! the engine can evaluate on every reading without re-reading its text.
//!
//! ```toml
//! [[alarms.rules]]
//! name = "boiler_hot"
//! tag = "boiler.temperature"      # or a pattern: "boiler*.temperature", one alarm per tag
//! kind = "high"                   # high high_high low low_low equals not_equals bad_quality stale rate_of_change
//! limit = 90.0
//! deadband = 2.0                  # clears below 88
//! on_delay = "5s"                 # must stay above 90 for 5 s before it is raised
//! off_delay = "10s"               # must stay below 88 for 10 s before it clears
//! priority = "high"               # low medium high critical
//! message = "Boiler at {value} °C (limit {limit})"
//! ```

use std::sync::Arc;

use gateway_model::{FieldError, Severity, Span, TagPattern, Value};
use serde::{Deserialize, Serialize};

/// What makes an alarm's condition true.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The value is above `limit`; clears below `limit - deadband`.
    High,
    /// As `high`, for the second, more urgent level (default priority `high`).
    HighHigh,
    /// The value is below `limit`; clears above `limit + deadband`.
    Low,
    /// As `low`, for the second level (default priority `high`).
    LowLow,
    /// The value equals `limit` (a number, a boolean or a string).
    Equals,
    /// The value differs from `limit`.
    NotEquals,
    /// The reading's quality is bad (the device is unreachable, the value out of range, ...).
    BadQuality,
    /// No reading for longer than `timeout`.
    Stale,
    /// The value changes faster than `limit` units per second, either way;
    /// clears below `limit - deadband`.
    RateOfChange,
    /// A figure leaves the band its own exponentially weighted history
    /// predicts (mean ± `limit` standard deviations); used by the gateway's
    /// watch on its own performance figures.
    Anomaly,
}

impl Kind {
    /// Its name in the config (`high_high`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::High => "high",
            Kind::HighHigh => "high_high",
            Kind::Low => "low",
            Kind::LowLow => "low_low",
            Kind::Equals => "equals",
            Kind::NotEquals => "not_equals",
            Kind::BadQuality => "bad_quality",
            Kind::Stale => "stale",
            Kind::RateOfChange => "rate_of_change",
            Kind::Anomaly => "anomaly",
        }
    }

    fn needs_limit(self) -> bool {
        !matches!(self, Kind::BadQuality | Kind::Stale)
    }

    fn numeric_limit(self) -> bool {
        !matches!(self, Kind::Equals | Kind::NotEquals | Kind::BadQuality | Kind::Stale)
    }

    fn default_message(self) -> &'static str {
        match self {
            Kind::High | Kind::HighHigh => "{tag} is {value}, above the limit {limit}",
            Kind::Low | Kind::LowLow => "{tag} is {value}, below the limit {limit}",
            Kind::Equals => "{tag} is {value}",
            Kind::NotEquals => "{tag} is {value}, expected {limit}",
            Kind::BadQuality => "{tag} has bad quality",
            Kind::Stale => "{tag} has not been updated for {timeout}",
            Kind::RateOfChange => "{tag} changes by {value}/s, faster than {limit}/s",
            Kind::Anomaly => "{tag} is {value}, outside its usual band",
        }
    }
}

/// How urgent an alarm is (ISA-18.2 priorities). On the bus it is the
/// event's severity: `low` info, `medium` warning, `high` error, `critical` critical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Worth knowing; no action is urgent.
    Low,
    /// Act within the shift.
    Medium,
    /// Act soon.
    High,
    /// Act now.
    Critical,
}

impl Priority {
    /// The event severity this priority travels as.
    pub fn severity(self) -> Severity {
        match self {
            Priority::Low => Severity::Info,
            Priority::Medium => Severity::Warning,
            Priority::High => Severity::Error,
            Priority::Critical => Severity::Critical,
        }
    }

    /// The priority an event's severity stands for.
    pub fn from_severity(s: Severity) -> Priority {
        match s {
            Severity::Info => Priority::Low,
            Severity::Warning => Priority::Medium,
            Severity::Error => Priority::High,
            Severity::Critical => Priority::Critical,
        }
    }

    /// Its name (`critical`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

/// One rule as written: `[[alarms.rules]]` or the body of `POST /api/v1/alarms/rules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique among rules: 1-64 of `A-Z a-z 0-9 _ - .`. An alarm's id is
    /// `name:tag`.
    pub name: String,
    /// The tag it watches, `device.point`, or a pattern (`*`, `?`): one
    /// alarm per matching tag.
    pub tag: String,
    /// What makes the condition true.
    pub kind: Kind,
    /// The threshold (a number; for `equals`/`not_equals` also a boolean or
    /// a string; for `rate_of_change` units per second). Not used by
    /// `bad_quality` and `stale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Value>,
    /// Hysteresis: how far back past the limit the value must go before the
    /// condition clears (default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deadband: f64,
    /// How long the condition must hold before the alarm is raised (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delay: Option<Span>,
    /// How long the condition must stay clear before the alarm clears (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_delay: Option<Span>,
    /// For `stale`: how long without a reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Span>,
    /// Default `medium` (`high` for `high_high` and `low_low`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// What operators read; `{tag}`, `{value}`, `{limit}`, `{name}` and
    /// `{timeout}` are replaced. Default: one per kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A disabled rule is not evaluated and its alarms show `disabled`.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

const fn yes() -> bool {
    true
}

/// Longest rule name.
pub const NAME_MAX: usize = 64;
/// Longest message template.
pub const MESSAGE_MAX: usize = 512;

/// Whether `name` is a valid rule name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// A checked rule, ready to evaluate.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Its name.
    pub name: Arc<str>,
    /// What it watches: a tag name or a pattern.
    pub target: Target,
    /// Its kind.
    pub kind: Kind,
    /// The limit, as written (shown in events).
    pub limit: Option<Value>,
    /// The limit as a number, for the numeric kinds.
    pub limit_f64: f64,
    /// The deadband.
    pub deadband: f64,
    /// `on_delay` in nanoseconds.
    pub on_delay_ns: u64,
    /// `off_delay` in nanoseconds.
    pub off_delay_ns: u64,
    /// `timeout` in nanoseconds (stale).
    pub timeout_ns: u64,
    /// Its priority.
    pub priority: Priority,
    /// The message template.
    pub message: Arc<str>,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// The text of `timeout` as written, for messages.
    pub timeout_text: Arc<str>,
}

/// What a rule watches.
#[derive(Clone, Debug)]
pub enum Target {
    /// One tag (or one system figure).
    Exact(Arc<str>),
    /// Every tag matching.
    Pattern(TagPattern),
}

impl Target {
    /// Whether it covers `subject`.
    pub fn matches(&self, subject: &str) -> bool {
        match self {
            Target::Exact(t) => &**t == subject,
            Target::Pattern(p) => p.matches(subject),
        }
    }
}

impl RuleConfig {
    /// Checks every field; paths are relative to the rule.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.compile().map(|_| ())
    }

    /// Checks every field and builds the [`Rule`]; paths are relative to the rule.
    pub fn compile(&self) -> Result<Rule, FieldError> {
        if !valid_name(&self.name) {
            return Err(FieldError::new(
                "name",
                format!("{:?} is not a valid rule name: use 1-{NAME_MAX} of A-Z a-z 0-9 _ - .", self.name),
            ));
        }
        let target = if self.tag.contains(['*', '?']) {
            Target::Pattern(TagPattern::new(&self.tag).map_err(|e| FieldError::new("tag", e))?)
        } else if self.tag.starts_with(crate::system::SUBJECT_PREFIX) {
            Target::Exact(self.tag.as_str().into())
        } else {
            let t = gateway_model::TagId::new(&self.tag).map_err(|e| FieldError::new("tag", e))?;
            Target::Exact(Arc::from(t.as_str()))
        };
        let limit_f64 = match (&self.limit, self.kind.needs_limit()) {
            (None, true) => {
                return Err(FieldError::new("limit", format!("a {} rule needs a limit", self.kind.as_str())));
            }
            (Some(v), true) if self.kind.numeric_limit() => match v.as_f64() {
                Some(f) if f.is_finite() => f,
                _ => {
                    return Err(FieldError::new(
                        "limit",
                        format!("a {} rule needs a finite number, got {}", self.kind.as_str(), v.type_name()),
                    ));
                }
            },
            (Some(v), true) => match v {
                Value::Bytes(_) => return Err(FieldError::new("limit", "must be a number, a boolean or a string")),
                v => v.as_f64().unwrap_or(f64::NAN),
            },
            (Some(_), false) => {
                return Err(FieldError::new("limit", format!("a {} rule takes no limit", self.kind.as_str())));
            }
            (None, false) => f64::NAN,
        };
        if self.kind == Kind::RateOfChange && limit_f64 <= 0.0 {
            return Err(FieldError::new("limit", "a rate_of_change limit must be above 0 (units per second)"));
        }
        if self.kind == Kind::Anomaly && limit_f64 <= 0.0 {
            return Err(FieldError::new("limit", "an anomaly limit is a number of standard deviations above 0"));
        }
        if !self.deadband.is_finite() || self.deadband < 0.0 {
            return Err(FieldError::new("deadband", "must be a finite number, 0 or more"));
        }
        if self.deadband > 0.0
            && !matches!(self.kind, Kind::High | Kind::HighHigh | Kind::Low | Kind::LowLow | Kind::RateOfChange)
        {
            return Err(FieldError::new("deadband", format!("a {} rule has no deadband", self.kind.as_str())));
        }
        if self.kind == Kind::RateOfChange && self.deadband >= limit_f64 {
            return Err(FieldError::new("deadband", "must be below the limit"));
        }
        let day = Span::from_secs(86_400);
        for (field, span) in [("on_delay", self.on_delay), ("off_delay", self.off_delay)] {
            if span.is_some_and(|s| s > day) {
                return Err(FieldError::new(field, "must be at most 1d"));
            }
        }
        let timeout_ns = match (self.kind, self.timeout) {
            (Kind::Stale, None) => {
                return Err(FieldError::new("timeout", "a stale rule needs a timeout, such as \"30s\""));
            }
            (Kind::Stale, Some(t)) if t < Span::from_millis(100) || t > Span::from_secs(7 * 86_400) => {
                return Err(FieldError::new("timeout", "must be between 100ms and 7d"));
            }
            (Kind::Stale, Some(t)) => t.as_nanos(),
            (_, Some(_)) => return Err(FieldError::new("timeout", "only a stale rule has a timeout")),
            (_, None) => 0,
        };
        if let Some(m) = &self.message
            && m.len() > MESSAGE_MAX
        {
            return Err(FieldError::new("message", format!("is {} bytes long, the limit is {MESSAGE_MAX}", m.len())));
        }
        let priority = self.priority.unwrap_or(match self.kind {
            Kind::HighHigh | Kind::LowLow => Priority::High,
            _ => Priority::Medium,
        });
        Ok(Rule {
            name: self.name.as_str().into(),
            target,
            kind: self.kind,
            limit: self.limit.clone(),
            limit_f64,
            deadband: self.deadband,
            on_delay_ns: self.on_delay.map_or(0, Span::as_nanos),
            off_delay_ns: self.off_delay.map_or(0, Span::as_nanos),
            timeout_ns,
            priority,
            message: self.message.as_deref().unwrap_or(self.kind.default_message()).into(),
            enabled: self.enabled,
            timeout_text: self.timeout.map(|t| t.to_string()).unwrap_or_default().into(),
        })
    }
}

impl Rule {
    /// The message for `tag` at `value`, with the placeholders replaced.
    pub fn render(&self, tag: &str, value: Option<&Value>) -> String {
        let mut out = String::with_capacity(self.message.len() + 32);
        let mut rest = &*self.message;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                rest = &rest[open..];
                break;
            };
            match &after[..close] {
                "tag" => out.push_str(tag),
                "name" => out.push_str(&self.name),
                "value" => push_value(&mut out, value),
                "limit" => push_value(&mut out, self.limit.as_ref()),
                "timeout" => out.push_str(&self.timeout_text),
                other => {
                    out.push('{');
                    out.push_str(other);
                    out.push('}');
                }
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

fn push_value(out: &mut String, v: Option<&Value>) {
    use std::fmt::Write;
    match v {
        None => out.push('-'),
        Some(Value::F64(f)) => {
            // Enough digits for people; not the 17 of an exact f64.
            let _ = write!(out, "{}", (f * 1e6).round() / 1e6);
        }
        Some(Value::Str(s)) => out.push_str(s),
        Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::I64(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::U64(u)) => {
            let _ = write!(out, "{u}");
        }
        Some(Value::Bytes(b)) => {
            let _ = write!(out, "<{} bytes>", b.len());
        }
    }
}

/// Checks a list of rules: each one, and that names are unique. Paths are
/// `{prefix}[i].field`.
pub fn compile_all(rules: &[RuleConfig], prefix: &str) -> Result<Vec<Rule>, FieldError> {
    let mut out = Vec::with_capacity(rules.len());
    let mut seen = std::collections::HashSet::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let at = format!("{prefix}[{i}]");
        let rule = r.compile().map_err(|e| e.under(&at))?;
        if !seen.insert(r.name.as_str()) {
            return Err(FieldError::new(format!("{at}.name"), format!("another rule is already named {:?}", r.name)));
        }
        out.push(rule);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml: &str) -> Result<Rule, FieldError> {
        let r: RuleConfig = toml::from_str(toml).map_err(|e| FieldError::new("", e.message()))?;
        r.compile()
    }

    #[test]
    fn a_full_rule_compiles() {
        let r = rule(
            "name = \"hot\"\ntag = \"boiler.t\"\nkind = \"high\"\nlimit = 90\ndeadband = 2.0\non_delay = \"5s\"\noff_delay = \"1m\"\npriority = \"critical\"\nmessage = \"{tag} at {value} > {limit}\"\n",
        )
        .unwrap();
        assert_eq!(r.limit_f64, 90.0);
        assert_eq!(r.on_delay_ns, 5_000_000_000);
        assert_eq!(r.off_delay_ns, 60_000_000_000);
        assert_eq!(r.priority, Priority::Critical);
        assert_eq!(r.render("boiler.t", Some(&Value::F64(91.25))), "boiler.t at 91.25 > 90");
        let hh = rule("name = \"hh\"\ntag = \"a.b\"\nkind = \"high_high\"\nlimit = 1\n").unwrap();
        assert_eq!(hh.priority, Priority::High, "second-level alarms default to high");
        assert!(matches!(
            rule("name = \"p\"\ntag = \"line*.t\"\nkind = \"bad_quality\"\n").unwrap().target,
            Target::Pattern(_)
        ));
    }

    #[test]
    fn bad_rules_name_the_field() {
        let cases = [
            ("name = \"a b\"\ntag = \"a.b\"\nkind = \"high\"\nlimit = 1\n", "name"),
            ("name = \"a\"\ntag = \"nodot\"\nkind = \"high\"\nlimit = 1\n", "tag"),
            ("name = \"a\"\ntag = \"a.b\"\nkind = \"high\"\n", "limit"),
            ("name = \"a\"\ntag = \"a.b\"\nkind = \"high\"\nlimit = \"x\"\n", "limit"),
            ("name = \"a\"\ntag = \"a.b\"\nkind = \"stale\"\n", "timeout"),
            ("name = \"a\"\ntag = \"a.b\"\nkind = \"stale\"\ntimeout = \"1s\"\nlimit = 3\n", "limit"),
            ("name = \"a\"\ntag = \"a.b\"\nkind = \"high\"\nlimit = 1\ndeadband = -1.0\n", "deadband"),
            ("name = \"a\"\ntag = \"a.b\"\nkind = \"equals\"\nlimit = 1\ndeadband = 1.0\n", "deadband"),
            ("name = \"a\"\ntag = \"a.b\"\nkind = \"high\"\nlimit = 1\non_delay = \"2d\"\n", "on_delay"),
            ("name = \"a\"\ntag = \"a.b\"\nkind = \"high\"\nlimit = 1\ntimeout = \"2s\"\n", "timeout"),
            ("name = \"a\"\ntag = \"a.b\"\nkind = \"rate_of_change\"\nlimit = 0\n", "limit"),
        ];
        for (text, field) in cases {
            let e = rule(text).unwrap_err();
            assert_eq!(e.path, field, "{text}: {e}");
        }
        let cfgs: Vec<RuleConfig> = ["x", "x"]
            .iter()
            .map(|n| RuleConfig {
                name: (*n).into(),
                tag: "a.b".into(),
                kind: Kind::BadQuality,
                limit: None,
                deadband: 0.0,
                on_delay: None,
                off_delay: None,
                timeout: None,
                priority: None,
                message: None,
                enabled: true,
            })
            .collect();
        assert_eq!(compile_all(&cfgs, "alarms.rules").unwrap_err().path, "alarms.rules[1].name");
    }

    #[test]
    fn messages_leave_unknown_placeholders_alone() {
        let r = rule("name = \"n\"\ntag = \"a.b\"\nkind = \"equals\"\nlimit = \"FAULT\"\nmessage = \"{name}: {tag}={value} {x} {\"\n").unwrap();
        assert_eq!(r.render("a.b", Some(&Value::Str("FAULT".into()))), "n: a.b=FAULT {x} {");
    }
}
