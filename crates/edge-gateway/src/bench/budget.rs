//! The performance budget as data: `budget.toml` (embedded; `--budget FILE`
//! reads another) holds one `[[line]]` per line of the original system's
//! budget and per target of our own, each naming the measured figure it is
//! judged on. A line whose figure was not measured is `skipped` with the
//! reason, never `pass`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The budget shipped with the binary.
pub const DEFAULT_BUDGET: &str = include_str!("../../budget.toml");

/// How a measured figure is compared with its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// At most.
    #[serde(rename = "<=")]
    Le,
    /// Below.
    #[serde(rename = "<")]
    Lt,
    /// At least.
    #[serde(rename = ">=")]
    Ge,
    /// Above.
    #[serde(rename = ">")]
    Gt,
}

impl Op {
    /// Whether `measured` meets `limit`.
    pub fn holds(self, measured: f64, limit: f64) -> bool {
        match self {
            Op::Le => measured <= limit,
            Op::Lt => measured < limit,
            Op::Ge => measured >= limit,
            Op::Gt => measured > limit,
        }
    }

    /// Whether a smaller figure is better.
    pub fn lower_is_better(self) -> bool {
        matches!(self, Op::Le | Op::Lt)
    }
}

/// One line of the budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Unique identifier, e.g. `bus.low_latency.latency`.
    pub id: String,
    /// `bus`, `api`, `websocket`, `database`, `memory`, `cpu`, `storage`, `network`, `modbus`, `mqtt`, `nats`.
    pub section: String,
    /// What is measured, in people's words.
    pub what: String,
    /// The original system's figure, as text ("—" where it had none).
    pub seed: String,
    /// Our target, as text.
    pub target: String,
    /// Key of the measured figure, e.g. `bus.low_latency.memory.p99_us`.
    pub metric: String,
    /// Comparison of the figure with `limit`.
    pub op: Op,
    /// The limit, in `unit`.
    pub limit: f64,
    /// Unit of the figure and the limit.
    pub unit: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    line: Vec<Line>,
}

/// Parses a budget file; the error names the line at fault.
pub fn parse(text: &str) -> Result<Vec<Line>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut seen = std::collections::BTreeSet::new();
    for l in &file.line {
        if !seen.insert(l.id.as_str()) {
            return Err(format!("line {:?} appears twice", l.id));
        }
        if !l.limit.is_finite() {
            return Err(format!("line {:?}: limit must be a finite number", l.id));
        }
        if l.metric.is_empty() {
            return Err(format!("line {:?}: metric is empty", l.id));
        }
    }
    Ok(file.line)
}

/// The verdict on one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Measured and within the limit.
    Pass,
    /// Measured and beyond the limit.
    Fail,
    /// Not measured (the reason says why).
    Skipped,
}

impl Status {
    /// `pass`, `fail`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        }
    }
}

/// A line with its measurement and verdict.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Verdict {
    /// The line.
    #[serde(flatten)]
    pub line: Line,
    /// The measured figure, if any.
    pub measured: Option<f64>,
    /// The verdict.
    pub status: Status,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Judges every line on `figures`; `why_missing` explains a missing figure
/// (by the metric's key).
pub fn judge(lines: &[Line], figures: &BTreeMap<String, f64>, why_missing: impl Fn(&str) -> String) -> Vec<Verdict> {
    lines
        .iter()
        .map(|l| match figures.get(&l.metric) {
            Some(&v) if v.is_finite() => Verdict {
                line: l.clone(),
                measured: Some(v),
                status: if l.op.holds(v, l.limit) { Status::Pass } else { Status::Fail },
                reason: None,
            },
            _ => Verdict {
                line: l.clone(),
                measured: None,
                status: Status::Skipped,
                reason: Some(why_missing(&l.metric)),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_budget_parses_and_every_line_names_a_metric() {
        let lines = parse(DEFAULT_BUDGET).unwrap();
        assert!(lines.len() >= 30, "{}", lines.len());
        for l in &lines {
            assert!(!l.what.is_empty() && !l.seed.is_empty() && !l.target.is_empty(), "{}", l.id);
        }
    }

    #[test]
    fn a_missing_figure_is_skipped_never_passed() {
        let lines = parse(
            "[[line]]\nid='a'\nsection='bus'\nwhat='w'\nseed='s'\ntarget='t'\nmetric='m'\nop='<='\nlimit=1\nunit='u'\n",
        )
        .unwrap();
        let v = judge(&lines, &BTreeMap::new(), |_| "not measured".into());
        assert_eq!(v[0].status, Status::Skipped);
        assert_eq!(v[0].reason.as_deref(), Some("not measured"));
        let figures = BTreeMap::from([("m".to_string(), 2.0)]);
        assert_eq!(judge(&lines, &figures, |_| String::new())[0].status, Status::Fail);
        let figures = BTreeMap::from([("m".to_string(), f64::NAN)]);
        assert_eq!(judge(&lines, &figures, |_| String::new())[0].status, Status::Skipped);
    }

    #[test]
    fn a_budget_with_a_duplicate_id_or_unknown_field_is_refused() {
        let one =
            "[[line]]\nid='a'\nsection='bus'\nwhat='w'\nseed='s'\ntarget='t'\nmetric='m'\nop='<='\nlimit=1\nunit='u'\n";
        assert!(parse(&format!("{one}{one}")).unwrap_err().contains("twice"));
        assert!(parse(&format!("{one}extra=1\n")).is_err());
        assert!(parse(&one.replace("'<='", "'=='")).is_err());
    }
}
