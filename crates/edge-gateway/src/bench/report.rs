//! The report of a run: verdicts on every budget line, every raw figure,
//! each scenario's outcome and the machine's description; printed as a
//! Markdown table, written as JSON, saved as a baseline, and compared with
//! an earlier baseline figure by figure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::budget::{self, Line, Status, Verdict};
use super::keep::Track;
use super::{ScenarioRun, Settings, plan_prefixes};

/// A figure that moved beyond the tolerance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Moved {
    /// Its key.
    pub figure: String,
    /// Its value in the baseline.
    pub baseline: f64,
    /// Its value now.
    pub current: f64,
    /// Change in percent of the baseline (none when the baseline was 0).
    pub change_pct: Option<f64>,
    /// `regressed`, `improved`, or `changed` (figures with no better direction).
    pub verdict: String,
    /// Runs in a row, this one included, that moved this way (1 when the
    /// baseline keeps no history).
    #[serde(default = "one")]
    pub runs: u32,
}

const fn one() -> u32 {
    1
}

/// A budget line whose verdict differs from the baseline's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusChange {
    /// The line's id.
    pub line: String,
    /// Verdict in the baseline.
    pub baseline: String,
    /// Verdict now.
    pub current: String,
}

/// This run against a baseline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    /// The baseline's name.
    pub name: String,
    /// When it was measured.
    pub date: String,
    /// The machine it was measured on.
    pub machine: BTreeMap<String, String>,
    /// Tolerance, percent.
    pub tolerance_pct: f64,
    /// Figures present in both.
    pub compared: usize,
    /// Figures beyond the tolerance, regressions first.
    pub flagged: Vec<Moved>,
    /// Budget lines whose verdict changed.
    pub status_changes: Vec<StatusChange>,
    /// Runs in a row a regression must last to count (when the baseline
    /// keeps a history; otherwise every regression counts).
    #[serde(default = "one")]
    pub confirm_runs: u32,
    /// Whether the baseline keeps a history (was kept with --update-baseline).
    #[serde(default)]
    pub kept: bool,
    /// The history of each budget line's figure, this run last.
    #[serde(default)]
    pub history: BTreeMap<String, Vec<[f64; 2]>>,
}

/// The whole report (also the JSON and baseline format).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// `edge-gateway bench`.
    pub tool: String,
    /// The machine and build.
    pub machine: BTreeMap<String, String>,
    /// Settings of the run.
    pub settings: Settings,
    /// Seconds the run took.
    pub seconds: f64,
    /// Every budget line with its verdict.
    pub lines: Vec<Verdict>,
    /// Every figure measured.
    pub figures: BTreeMap<String, f64>,
    /// Every scenario with its outcome.
    pub scenarios: Vec<ScenarioRun>,
    /// The comparison with `--baseline`, if asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Comparison>,
    /// In a kept baseline: each figure's history and streaks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tracking: BTreeMap<String, Track>,
}

/// What is read back from a baseline file (only what comparing needs, so
/// that a baseline from an older version still loads).
#[derive(Clone, Debug, Deserialize)]
pub struct Baseline {
    /// Its name.
    #[serde(skip)]
    pub name: String,
    /// The machine.
    #[serde(default)]
    pub machine: BTreeMap<String, String>,
    /// The figures.
    pub figures: BTreeMap<String, f64>,
    /// The verdicts.
    #[serde(default)]
    pub lines: Vec<BaselineLine>,
    /// Histories and streaks, in a kept baseline.
    #[serde(default)]
    pub tracking: BTreeMap<String, Track>,
}

/// A verdict in a baseline.
#[derive(Clone, Debug, Deserialize)]
pub struct BaselineLine {
    /// Line id.
    pub id: String,
    /// Verdict.
    pub status: Status,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Better {
    Lower,
    Higher,
    Neither,
}

pub(super) fn better(key: &str, lines: &[Verdict]) -> Better {
    if let Some(v) = lines.iter().find(|v| v.line.metric == key) {
        return if v.line.op.lower_is_better() { Better::Lower } else { Better::Higher };
    }
    let higher = ["per_s", "qps", "_share", "outage_h_at_100k"];
    let lower = [
        "_us",
        "_ms",
        "_mb",
        "_kb",
        "cores",
        "errors",
        "drops",
        "dropped_updates",
        "bytes_per_frame",
        "bytes_per_value",
        "uplink_mbps_at_100k",
        "peak_over_cap",
        "connect_s",
        "cpu_s",
    ];
    if higher.iter().any(|s| key.ends_with(s)) {
        Better::Higher
    } else if lower.iter().any(|s| key.ends_with(s)) {
        Better::Lower
    } else {
        Better::Neither
    }
}

/// Which way `cur` moved from `old`, beyond `tolerance_pct`: `Some(true)`
/// better, `Some(false)` worse, `None` within the tolerance or no direction.
pub(super) fn direction(key: &str, lines: &[Verdict], old: f64, cur: f64, tolerance_pct: f64) -> Option<bool> {
    if !(cur.is_finite() && old.is_finite()) || cur == old {
        return None;
    }
    let change_pct = (old != 0.0).then(|| (cur - old) / old.abs() * 100.0);
    if change_pct.is_some_and(|c| c.abs() <= tolerance_pct) {
        return None;
    }
    match better(key, lines) {
        Better::Lower => Some(cur < old),
        Better::Higher => Some(cur > old),
        Better::Neither => None,
    }
}

/// Compares `figures` with a baseline.
fn compare(
    figures: &BTreeMap<String, f64>,
    lines: &[Verdict],
    base: &Baseline,
    tolerance_pct: f64,
    confirm_runs: u32,
    now_s: f64,
) -> Comparison {
    let mut flagged = Vec::new();
    let mut compared = 0;
    for (key, &cur) in figures {
        let Some(&old) = base.figures.get(key) else { continue };
        if !(cur.is_finite() && old.is_finite()) {
            continue;
        }
        compared += 1;
        if cur == old {
            continue;
        }
        let change_pct = (old != 0.0).then(|| (cur - old) / old.abs() * 100.0);
        if change_pct.is_some_and(|c| c.abs() <= tolerance_pct) {
            continue;
        }
        let verdict = match (better(key, lines), cur > old) {
            (Better::Lower, true) | (Better::Higher, false) => "regressed",
            (Better::Lower, false) | (Better::Higher, true) => "improved",
            (Better::Neither, _) => "changed",
        };
        let track = base.tracking.get(key);
        let runs = match verdict {
            "regressed" => track.map_or(0, |t| t.worse_runs) + 1,
            "improved" => track.map_or(0, |t| t.better_runs) + 1,
            _ => 1,
        };
        flagged.push(Moved {
            figure: key.clone(),
            baseline: old,
            current: cur,
            change_pct,
            verdict: verdict.into(),
            runs,
        });
    }
    let rank = |m: &Moved| match m.verdict.as_str() {
        "regressed" => 0,
        "changed" => 1,
        _ => 2,
    };
    flagged.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.figure.cmp(&b.figure)));
    let status_changes = lines
        .iter()
        .filter_map(|v| {
            let old = base.lines.iter().find(|l| l.id == v.line.id)?;
            (old.status != v.status).then(|| StatusChange {
                line: v.line.id.clone(),
                baseline: old.status.as_str().into(),
                current: v.status.as_str().into(),
            })
        })
        .collect();
    let history = lines
        .iter()
        .filter_map(|v| {
            let key = &v.line.metric;
            let cur = *figures.get(key)?;
            let mut h = base.tracking.get(key).map(|t| t.history.clone()).unwrap_or_default();
            h.push([now_s, cur]);
            Some((key.clone(), h))
        })
        .collect();
    Comparison {
        name: base.name.clone(),
        date: base.machine.get("date").cloned().unwrap_or_default(),
        machine: base.machine.clone(),
        tolerance_pct,
        compared,
        flagged,
        status_changes,
        confirm_runs,
        kept: !base.tracking.is_empty(),
        history,
    }
}

/// A number for people: thousands separated, sensible decimals.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 10_000.0 {
        let n = v.round() as i64;
        let s = n.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

impl Report {
    /// Judges the budget on the scenarios' figures and compares with the baseline.
    pub fn build(
        settings: Settings,
        machine: BTreeMap<String, String>,
        lines: Vec<Line>,
        scenarios: Vec<ScenarioRun>,
        seconds: f64,
        baseline: Option<Baseline>,
    ) -> Report {
        let mut figures = BTreeMap::new();
        for s in &scenarios {
            figures.extend(s.outcome.figures.iter().map(|(k, v)| (k.clone(), *v)));
        }
        let why = |metric: &str| {
            let owner =
                scenarios.iter().find(|s| plan_prefixes(&s.spec).iter().any(|p| metric.starts_with(p.as_str())));
            match owner {
                None => "no scenario measures this figure".to_string(),
                Some(s) => match (s.status.as_str(), &s.reason) {
                    ("skipped", Some(r)) => r.clone(),
                    ("failed", Some(r)) => format!("scenario {} {r}", s.id),
                    _ => format!("scenario {} ran but did not report it", s.id),
                },
            }
        };
        let verdicts = budget::judge(&lines, &figures, why);
        let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let baseline =
            baseline.map(|b| compare(&figures, &verdicts, &b, settings.tolerance_pct, settings.confirm_runs, now_s));
        Report {
            tool: "edge-gateway bench".into(),
            machine,
            settings,
            seconds,
            lines: verdicts,
            figures,
            scenarios,
            baseline,
            tracking: BTreeMap::new(),
        }
    }

    /// (pass, fail, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |s: Status| self.lines.iter().filter(|v| v.status == s).count();
        (n(Status::Pass), n(Status::Fail), n(Status::Skipped))
    }

    /// Figures that regressed against the baseline.
    /// Regressions that count: against a kept baseline, only those that
    /// lasted `confirm_runs` runs in a row (a single noisy run does not).
    pub fn regressions(&self) -> usize {
        self.baseline.as_ref().map_or(0, |c| {
            let need = if c.kept { c.confirm_runs } else { 1 };
            c.flagged.iter().filter(|m| m.verdict == "regressed" && m.runs >= need).count()
        })
    }

    /// One line for the end of the output.
    pub fn summary_line(&self) -> String {
        let (p, f, s) = self.counts();
        let mut out = format!(
            "Budget: {p} pass, {f} fail, {s} skipped of {} lines; {} scenarios in {:.0} s on {} ({} build).",
            self.lines.len(),
            self.scenarios.len(),
            self.seconds,
            self.machine.get("cpu_model").map_or("an unknown CPU", String::as_str),
            self.machine.get("build").map_or("unknown", String::as_str),
        );
        if let Some(c) = &self.baseline {
            out.push_str(&format!(
                " Against baseline {}: {} of {} figures moved beyond {}% ({} regressed).",
                c.name,
                c.flagged.len(),
                c.compared,
                c.tolerance_pct,
                self.regressions()
            ));
        }
        out
    }

    /// The budget as a Markdown table.
    pub fn table_markdown(&self) -> String {
        let mut out =
            String::from("| line | what | seed | our target | measured | status |\n|---|---|---|---|---:|---|\n");
        for v in &self.lines {
            let measured = v.measured.map_or_else(|| "—".to_string(), |m| format!("{} {}", fmt_num(m), v.line.unit));
            let status = match v.status {
                Status::Pass => "pass".to_string(),
                Status::Fail => "**FAIL**".to_string(),
                Status::Skipped => format!("skipped: {}", v.reason.as_deref().unwrap_or("")),
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} |\n",
                v.line.id,
                cell(&v.line.what),
                cell(&v.line.seed),
                cell(&v.line.target),
                measured,
                cell(&status)
            ));
        }
        out.push('\n');
        out
    }

    /// The comparison with the baseline as Markdown (empty without one).
    pub fn baseline_markdown(&self) -> String {
        let Some(c) = &self.baseline else { return String::new() };
        let mut out = format!(
            "Against baseline `{}` ({}), tolerance {}%: {} of {} figures moved.\n\n",
            c.name,
            if c.date.is_empty() { "undated" } else { &c.date },
            c.tolerance_pct,
            c.flagged.len(),
            c.compared
        );
        for s in &c.status_changes {
            out.push_str(&format!("- budget line `{}`: {} -> {}\n", s.line, s.baseline, s.current));
        }
        if !c.status_changes.is_empty() {
            out.push('\n');
        }
        if !c.flagged.is_empty() {
            out.push_str("| figure | baseline | now | change | |\n|---|---:|---:|---:|---|\n");
            for m in &c.flagged {
                let change = m.change_pct.map_or_else(|| "from 0".to_string(), |p| format!("{p:+.0}%"));
                let mark = if m.verdict == "regressed" { "**regressed**" } else { &m.verdict };
                out.push_str(&format!(
                    "| `{}` | {} | {} | {change} | {mark} |\n",
                    m.figure,
                    fmt_num(m.baseline),
                    fmt_num(m.current)
                ));
            }
            out.push('\n');
        }
        out
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// Refuses names that are not plain file names.
pub fn check_baseline_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok { Ok(()) } else { Err(format!("baseline name {name:?}: use letters, digits, '.', '_' and '-' only")) }
}

fn baseline_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// Saves the report as baseline `name`.
pub fn save_baseline(dir: &Path, name: &str, report: &Report) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = baseline_path(dir, name);
    std::fs::write(&path, report.to_json()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Loads baseline `name`.
pub fn load_baseline(dir: &Path, name: &str) -> Result<Baseline, String> {
    let path = baseline_path(dir, name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read baseline {}: {e}", path.display()))?;
    let mut b: Baseline =
        serde_json::from_str(&text).map_err(|e| format!("baseline {} is not a bench report: {e}", path.display()))?;
    b.name = name.to_owned();
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::budget::{Op, judge};
    use crate::bench::keep::keep;

    fn line(metric: &str, op: Op) -> Line {
        Line {
            id: metric.into(),
            section: "bus".into(),
            what: "w".into(),
            seed: "s".into(),
            target: "t".into(),
            metric: metric.into(),
            op,
            limit: 100.0,
            unit: "µs".into(),
        }
    }

    #[test]
    fn a_figure_that_got_worse_beyond_the_tolerance_is_flagged_as_regressed() {
        let lines = vec![line("a.p99_us", Op::Le), line("b.frames_per_s", Op::Ge)];
        let now = BTreeMap::from([
            ("a.p99_us".to_string(), 150.0),
            ("b.frames_per_s".to_string(), 1000.0),
            ("c.errors".to_string(), 3.0),
            ("d.body_bytes".to_string(), 10.0),
            ("e.p50_us".to_string(), 10.5),
        ]);
        let verdicts = judge(&lines, &now, |_| String::new());
        let base = Baseline {
            name: "b".into(),
            machine: BTreeMap::new(),
            figures: BTreeMap::from([
                ("a.p99_us".to_string(), 100.0),
                ("b.frames_per_s".to_string(), 500.0),
                ("c.errors".to_string(), 0.0),
                ("d.body_bytes".to_string(), 20.0),
                ("e.p50_us".to_string(), 10.0),
            ]),
            lines: vec![BaselineLine { id: "a.p99_us".into(), status: Status::Pass }],
            tracking: BTreeMap::new(),
        };
        let c = compare(&now, &verdicts, &base, 20.0, 3, 0.0);
        let verdict = |k: &str| c.flagged.iter().find(|m| m.figure == k).map(|m| m.verdict.clone());
        assert_eq!(verdict("a.p99_us").as_deref(), Some("regressed"));
        assert_eq!(verdict("b.frames_per_s").as_deref(), Some("improved"));
        assert_eq!(verdict("c.errors").as_deref(), Some("regressed"));
        assert_eq!(verdict("d.body_bytes").as_deref(), Some("changed"));
        assert_eq!(verdict("e.p50_us"), None, "5% is within the tolerance");
        assert_eq!(c.compared, 5);
        assert_eq!(c.flagged[0].verdict, "regressed");
        assert_eq!(c.status_changes.len(), 1, "a.p99_us went from pass to fail");
    }

    #[test]
    fn a_kept_baseline_moves_only_to_a_better_value_confirmed_over_runs_and_flags_only_repeated_regressions() {
        let lines = vec![line("a.p99_us", Op::Le)];
        let verdicts = judge(&lines, &BTreeMap::from([("a.p99_us".to_string(), 100.0)]), |_| String::new());
        let mut base = Baseline {
            name: "b".into(),
            machine: BTreeMap::new(),
            figures: BTreeMap::from([("a.p99_us".to_string(), 100.0)]),
            lines: Vec::new(),
            tracking: BTreeMap::new(),
        };
        let run = |base: &mut Baseline, v: f64, t: f64| {
            let now = BTreeMap::from([("a.p99_us".to_string(), v), ("new.p50_us".to_string(), 7.0)]);
            let c = compare(&now, &verdicts, base, 20.0, 3, t);
            let (figures, tracking, moved) = keep(base, &now, &verdicts, 20.0, 3, t);
            base.figures = figures;
            base.tracking = tracking;
            (c, moved)
        };
        // Two better runs, then a normal one: the streak breaks, nothing moves.
        assert_eq!(run(&mut base, 60.0, 1.0).1, 0);
        assert_eq!(base.figures["new.p50_us"], 7.0, "a new figure is taken as it is");
        assert_eq!(run(&mut base, 50.0, 2.0).1, 0);
        assert_eq!(run(&mut base, 95.0, 3.0).1, 0);
        assert_eq!(base.figures["a.p99_us"], 100.0);
        // Three better runs in a row: the baseline moves to the worst of them.
        run(&mut base, 70.0, 4.0);
        run(&mut base, 50.0, 5.0);
        assert_eq!(run(&mut base, 60.0, 6.0).1, 1);
        assert_eq!(base.figures["a.p99_us"], 70.0, "the worst of the three, not the luckiest");
        // A worse run never moves it; a single one is flagged but does not count.
        let (c, moved) = run(&mut base, 200.0, 7.0);
        assert_eq!(moved, 0);
        assert_eq!(base.figures["a.p99_us"], 70.0);
        assert!(c.kept);
        assert_eq!(c.flagged[0].runs, 1);
        let report = |c: Comparison| Report {
            tool: String::new(),
            machine: BTreeMap::new(),
            settings: crate::bench::Settings {
                quick: false,
                duration_s: 1.0,
                warmup_s: 0.0,
                ws_connections: 1,
                only: None,
                tolerance_pct: 20.0,
                confirm_runs: 3,
                budget: String::new(),
                command: String::new(),
            },
            seconds: 0.0,
            lines: Vec::new(),
            figures: BTreeMap::new(),
            scenarios: Vec::new(),
            baseline: Some(c),
            tracking: BTreeMap::new(),
        };
        assert_eq!(report(c).regressions(), 0, "one noisy run does not cry wolf");
        run(&mut base, 210.0, 8.0);
        let (c, _) = run(&mut base, 190.0, 9.0);
        assert_eq!(c.flagged[0].runs, 3);
        assert_eq!(report(c.clone()).regressions(), 1, "three in a row do");
        assert_eq!(c.history["a.p99_us"].len(), 9, "the history of the line's figure, this run last");
        assert_eq!(c.history["a.p99_us"].last(), Some(&[9.0, 190.0]));
    }

    #[test]
    fn numbers_are_printed_for_people() {
        assert_eq!(fmt_num(12_560_000.4), "12,560,000");
        assert_eq!(fmt_num(-12_345.0), "-12,345");
        assert_eq!(fmt_num(512.4), "512");
        assert_eq!(fmt_num(42.04), "42.0");
        assert_eq!(fmt_num(0.5), "0.50");
        assert_eq!(fmt_num(f64::NAN), "n/a");
    }

    #[test]
    fn only_plain_baseline_names_are_accepted() {
        assert!(check_baseline_name("main-2026.11_30").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(check_baseline_name(bad).is_err(), "{bad}");
        }
    }
}
