//! Baselines that keep themselves (`--update-baseline`): each figure's
//! history across runs, and a baseline figure that moves only to a better
//! value confirmed over `--confirm-runs` runs in a row, never to a worse one.
//! Comparing a run with a baseline is [`super::report`]'s; this is what a
//! kept baseline remembers and how it changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::budget::Verdict;
use super::report::{Baseline, Better, Report, better, direction, load_baseline, save_baseline};

/// What a kept baseline remembers of a figure across runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Track {
    /// `[unix seconds, value]` of the last runs, oldest first (at most [`HISTORY_LEN`]).
    pub history: Vec<[f64; 2]>,
    /// Runs in a row better than the baseline beyond the tolerance.
    pub better_runs: u32,
    /// The worst value among those runs: what the baseline moves to.
    pub better_worst: Option<f64>,
    /// Runs in a row worse than the baseline beyond the tolerance.
    pub worse_runs: u32,
}

/// Runs of history a baseline keeps per figure.
pub const HISTORY_LEN: usize = 30;

/// The baseline after this run: each figure moves to a better value only
/// once `confirm_runs` runs in a row were better (to the worst of them, so
/// that one lucky run never sets the bar), never to a worse one; a figure
/// the baseline lacks is taken as it is; every figure's history grows by
/// this run. Returns the new figures, the new tracking and how many moved.
pub fn keep(
    base: &Baseline,
    figures: &BTreeMap<String, f64>,
    lines: &[Verdict],
    tolerance_pct: f64,
    confirm_runs: u32,
    now_s: f64,
) -> (BTreeMap<String, f64>, BTreeMap<String, Track>, usize) {
    let mut out = base.figures.clone();
    let mut tracking = base.tracking.clone();
    let mut moved = 0;
    for (key, &cur) in figures {
        let t = tracking.entry(key.clone()).or_default();
        t.history.push([now_s, cur]);
        if t.history.len() > HISTORY_LEN {
            let cut = t.history.len() - HISTORY_LEN;
            t.history.drain(..cut);
        }
        let Some(&old) = base.figures.get(key) else {
            out.insert(key.clone(), cur);
            continue;
        };
        match direction(key, lines, old, cur, tolerance_pct) {
            Some(true) => {
                t.worse_runs = 0;
                t.better_runs += 1;
                let lower = matches!(better(key, lines), Better::Lower);
                t.better_worst = Some(match t.better_worst {
                    None => cur,
                    Some(w) if lower => w.max(cur),
                    Some(w) => w.min(cur),
                });
                if t.better_runs >= confirm_runs {
                    out.insert(key.clone(), t.better_worst.take().unwrap_or(cur));
                    t.better_runs = 0;
                    moved += 1;
                }
            }
            Some(false) => {
                t.better_runs = 0;
                t.better_worst = None;
                t.worse_runs += 1;
            }
            None => {
                t.better_runs = 0;
                t.better_worst = None;
                t.worse_runs = 0;
            }
        }
    }
    (out, tracking, moved)
}

/// Updates kept baseline `name` with this run (see [`keep`]); returns its
/// path and how many figures moved.
pub fn update_baseline(dir: &Path, name: &str, report: &Report) -> Result<(PathBuf, usize), String> {
    let base = load_baseline(dir, name)?;
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let (figures, tracking, moved) =
        keep(&base, &report.figures, &report.lines, report.settings.tolerance_pct, report.settings.confirm_runs, now_s);
    let kept = Report { figures, tracking, baseline: None, ..report.clone() };
    Ok((save_baseline(dir, name, &kept)?, moved))
}
