//! The HTML report: one self-contained page (inline CSS and SVG, no script,
//! no outside asset) with the verdicts, the baseline comparison, latency
//! distributions as percentile curves, figures over time, and every raw
//! figure, so that a person can judge the run at a glance.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::budget::Status;
use super::report::{Report, fmt_num};

/// A named line of points.
type Named = (String, Vec<[f64; 2]>);

const PALETTE: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `s` cut to at most `n` characters (legends have a fixed width; the full
/// name is in the line's tooltip).
fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_owned() } else { format!("{}…", s.chars().take(n - 1).collect::<String>()) }
}

/// An axis: maps values to pixels, on a linear or log10 scale.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn fit(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = (if log { 1.0 } else { 0.0 }, 1.0);
        }
        if log {
            lo = 10f64.powf(lo.log10().floor());
            hi = 10f64.powf(hi.log10().ceil().max(lo.log10() + 1.0));
        } else {
            lo = lo.min(0.0);
            if hi <= lo {
                hi = lo + 1.0;
            }
            hi *= 1.05;
        }
        Axis { lo, hi, log }
    }

    fn t(&self, v: f64) -> f64 {
        let f = |x: f64| if self.log { x.max(self.lo).log10() } else { x };
        ((f(v) - f(self.lo)) / (f(self.hi) - f(self.lo))).clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (self.lo.log10().round() as i32, self.hi.log10().round() as i32);
            (a..=b).map(|e| 10f64.powi(e)).collect()
        } else {
            let raw = (self.hi - self.lo) / 5.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(raw);
            let mut v = (self.lo / step).ceil() * step;
            let mut out = Vec::new();
            while v <= self.hi + 1e-9 && out.len() < 12 {
                out.push(v);
                v += step;
            }
            out
        }
    }
}

fn fmt_us(v: f64) -> String {
    if v >= 1e6 {
        format!("{} s", fmt_num(v / 1e6))
    } else if v >= 1e3 {
        format!("{} ms", fmt_num(v / 1e3))
    } else {
        format!("{} µs", fmt_num(v))
    }
}

/// Percentile position on the x axis: 0 at p0, 1 at p90, 2 at p99, ... 6 at p99.9999 and max.
fn q_pos(q: f64) -> f64 {
    if q >= 1.0 { 6.0 } else { (1.0 / (1.0 - q)).log10().min(6.0) }
}

struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    lines: Vec<Named>,
    x_log: bool,
    y_log: bool,
    /// Custom x ticks (position, label).
    x_ticks: Option<Vec<(f64, String)>>,
    y_fmt: fn(f64) -> String,
}

fn svg(c: &Chart) -> String {
    let (w, h, left, right, top, bottom) = (960.0, 320.0, 70.0, 300.0, 30.0, 40.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let xa = Axis::fit(c.lines.iter().flat_map(|l| l.1.iter().map(|p| p[0])), c.x_log);
    let xa = match &c.x_ticks {
        Some(t) => Axis { lo: t.first().map_or(0.0, |x| x.0), hi: t.last().map_or(1.0, |x| x.0), log: false },
        None => xa,
    };
    let ya = Axis::fit(c.lines.iter().flat_map(|l| l.1.iter().map(|p| p[1])), c.y_log);
    let px = |x: f64| left + xa.t(x) * pw;
    let py = |y: f64| top + (1.0 - ya.t(y)) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure><svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}"><text x="{left}" y="18" class="title">{t}</text>"#,
        t = esc(c.title)
    );
    for y in ya.ticks() {
        let _ = write!(
            s,
            r#"<line x1="{left}" x2="{x2}" y1="{y0:.1}" y2="{y0:.1}" class="grid"/><text x="{tx}" y="{ty:.1}" class="tick" text-anchor="end">{label}</text>"#,
            x2 = left + pw,
            y0 = py(y),
            tx = left - 6.0,
            ty = py(y) + 4.0,
            label = esc(&(c.y_fmt)(y))
        );
    }
    let xt: Vec<(f64, String)> =
        c.x_ticks.clone().unwrap_or_else(|| xa.ticks().into_iter().map(|x| (x, fmt_num(x))).collect());
    for (x, label) in xt {
        let _ = write!(
            s,
            r#"<line x1="{x0:.1}" x2="{x0:.1}" y1="{top}" y2="{y2}" class="grid"/><text x="{x0:.1}" y="{ty}" class="tick" text-anchor="middle">{label}</text>"#,
            x0 = px(x),
            y2 = top + ph,
            ty = top + ph + 16.0,
            label = esc(&label)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{x}" y="{y}" class="axis" text-anchor="middle">{xl}</text><text x="14" y="{ym}" class="axis" text-anchor="middle" transform="rotate(-90 14 {ym})">{yl}</text>"#,
        x = left + pw / 2.0,
        y = h - 6.0,
        xl = esc(c.x_label),
        ym = top + ph / 2.0,
        yl = esc(c.y_label)
    );
    for (i, (name, pts)) in c.lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let dash = if i >= PALETTE.len() { r#" stroke-dasharray="5 3""# } else { "" };
        let points: Vec<String> = pts
            .iter()
            .filter(|p| p[0].is_finite() && p[1].is_finite() && (!c.y_log || p[1] > 0.0))
            .map(|p| format!("{:.1},{:.1}", px(p[0]), py(p[1])))
            .collect();
        if points.is_empty() {
            continue;
        }
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8"{dash} points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            esc(name)
        );
        let ly = top + 12.0 + i as f64 * 15.0;
        if ly < h - 10.0 {
            let _ = write!(
                s,
                r#"<line x1="{x1}" x2="{x2}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{tx}" y="{ty}" class="legend">{}</text>"#,
                esc(&short(name, 48)),
                x1 = left + pw + 10.0,
                x2 = left + pw + 30.0,
                tx = left + pw + 35.0,
                ty = ly + 4.0
            );
        }
    }
    s.push_str("</svg></figure>\n");
    s
}

fn percentile_chart(title: &str, curves: Vec<Named>) -> String {
    let ticks =
        [(0.0, "p0"), (1.0, "p90"), (2.0, "p99"), (3.0, "p99.9"), (4.0, "p99.99"), (5.0, "p99.999"), (6.0, "max")]
            .iter()
            .map(|(x, l)| (*x, (*l).to_owned()))
            .collect();
    let lines = curves.into_iter().map(|(n, pts)| (n, pts.iter().map(|p| [q_pos(p[0]), p[1]]).collect())).collect();
    svg(&Chart {
        title,
        x_label: "percentile (log scale of 1/(1-q))",
        y_label: "latency",
        lines,
        x_log: false,
        y_log: true,
        x_ticks: Some(ticks),
        y_fmt: fmt_us,
    })
}

/// A 160×28 inline line of `vals`, oldest left.
fn sparkline(vals: &[f64]) -> String {
    if vals.len() < 2 {
        return String::new();
    }
    let (lo, hi) = vals.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let pts: Vec<String> = vals
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = 2.0 + 156.0 * i as f64 / (vals.len() - 1) as f64;
            let y = 26.0 - 24.0 * (v - lo) / span;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        r#"<svg width="160" height="28" role="img" aria-label="history"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{}"/></svg>"#,
        pts.join(" ")
    )
}

fn status_class(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::Skipped => "skip",
    }
}

/// Renders the page.
pub fn render(r: &Report) -> String {
    let (pass, fail, skipped) = r.counts();
    let date = r.machine.get("date").cloned().unwrap_or_default();
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>edge-gateway bench {date}</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}}
h1{{font-size:22px}} h2{{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse;width:100%;margin:8px 0}} td,th{{border-bottom:1px solid #eee;padding:4px 6px;text-align:left;vertical-align:top}}
td.num{{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}}
tr.pass td.st{{color:#176b1b;font-weight:600}} tr.fail td.st{{color:#b00020;font-weight:700}} tr.fail{{background:#fff1f1}} tr.skip td.st{{color:#7a6a00}}
.badge{{display:inline-block;padding:4px 10px;border-radius:12px;margin-right:8px;font-weight:600}}
.b-pass{{background:#dff3e0;color:#176b1b}} .b-fail{{background:#fde0e0;color:#b00020}} .b-skip{{background:#fff6cc;color:#7a6a00}}
dl{{display:grid;grid-template-columns:max-content auto;gap:2px 16px}} dt{{color:#666}} dd{{margin:0}}
figure{{margin:12px 0}} svg{{max-width:100%;height:auto;background:#fcfcfc;border:1px solid #eee}}
svg .grid{{stroke:#e6e6e6}} svg .tick{{font-size:10px;fill:#555}} svg .axis{{font-size:11px;fill:#333}} svg .title{{font-size:13px;font-weight:600}} svg .legend{{font-size:10px;fill:#333}}
code{{font-size:12px}} .muted{{color:#777}}
</style></head><body>
<h1>edge-gateway bench — the performance budget, measured</h1>
<p><span class="badge b-pass">{pass} pass</span><span class="badge b-fail">{fail} fail</span><span class="badge b-skip">{skipped} skipped</span>
<span class="muted">{n} budget lines, {s} scenarios, {secs:.0} s</span></p>
"#,
        date = esc(&date),
        n = r.lines.len(),
        s = r.scenarios.len(),
        secs = r.seconds
    );
    h.push_str("<h2>Machine and settings</h2><dl>");
    for (k, v) in &r.machine {
        let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    }
    let st = &r.settings;
    let _ = write!(
        h,
        "<dt>command</dt><dd><code>{}</code></dd><dt>duration per level</dt><dd>{} s (warm-up {} s)</dd><dt>WebSocket clients</dt><dd>{}</dd><dt>budget</dt><dd>{}</dd></dl>",
        esc(&st.command),
        st.duration_s,
        st.warmup_s,
        st.ws_connections,
        esc(&st.budget)
    );
    if r.machine.get("build").is_some_and(|b| b == "debug") {
        h.push_str("<p><strong>Debug build:</strong> these figures do not represent the gateway.</p>");
    }

    h.push_str("<h2>The budget</h2><table><tr><th>line</th><th>what</th><th>seed</th><th>our target</th><th>measured</th><th>status</th></tr>");
    for v in &r.lines {
        let measured = v.measured.map_or_else(|| "—".to_string(), |m| format!("{} {}", fmt_num(m), v.line.unit));
        let status = match v.status {
            Status::Skipped => format!("skipped: {}", v.reason.as_deref().unwrap_or("")),
            s => s.as_str().to_owned(),
        };
        let _ = write!(
            h,
            r#"<tr class="{}"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td class="st">{}</td></tr>"#,
            status_class(v.status),
            esc(&v.line.id),
            esc(&v.line.what),
            esc(&v.line.seed),
            esc(&v.line.target),
            esc(&measured),
            esc(&status)
        );
    }
    h.push_str("</table>");

    if let Some(c) = &r.baseline {
        let _ = write!(
            h,
            "<h2>Against baseline <code>{}</code></h2><p>{} · tolerance {}% · {} of {} figures moved</p>",
            esc(&c.name),
            esc(&c.date),
            c.tolerance_pct,
            c.flagged.len(),
            c.compared
        );
        if !c.status_changes.is_empty() {
            h.push_str("<ul>");
            for s in &c.status_changes {
                let _ = write!(h, "<li>budget line <code>{}</code>: {} → {}</li>", esc(&s.line), s.baseline, s.current);
            }
            h.push_str("</ul>");
        }
        if !c.flagged.is_empty() {
            h.push_str("<table><tr><th>figure</th><th>baseline</th><th>now</th><th>change</th><th></th></tr>");
            for m in &c.flagged {
                let cls = match m.verdict.as_str() {
                    "regressed" => "fail",
                    "improved" => "pass",
                    _ => "skip",
                };
                let change = m.change_pct.map_or_else(|| "from 0".into(), |p| format!("{p:+.0}%"));
                let verdict = if c.kept {
                    format!("{} ({} of {} runs)", m.verdict, m.runs.min(c.confirm_runs), c.confirm_runs)
                } else {
                    m.verdict.clone()
                };
                let _ = write!(
                    h,
                    r#"<tr class="{cls}"><td><code>{}</code></td><td class="num">{}</td><td class="num">{}</td><td class="num">{change}</td><td class="st">{}</td></tr>"#,
                    esc(&m.figure),
                    fmt_num(m.baseline),
                    fmt_num(m.current),
                    esc(&verdict)
                );
            }
            h.push_str("</table>");
        }
        if c.history.values().any(|v| v.len() > 1) {
            h.push_str("<h3>History of each budget figure</h3><p class=\"muted\">The runs the baseline has kept (<code>--update-baseline</code>), this run last.</p><table><tr><th>figure</th><th>runs</th><th>history</th><th>min</th><th>max</th><th>now</th></tr>");
            for (k, pts) in c.history.iter().filter(|(_, v)| v.len() > 1) {
                let vals: Vec<f64> = pts.iter().map(|p| p[1]).filter(|v| v.is_finite()).collect();
                let (lo, hi) = vals.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                let _ = write!(
                    h,
                    r#"<tr><td><code>{}</code></td><td class="num">{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                    esc(k),
                    vals.len(),
                    sparkline(&vals),
                    fmt_num(lo),
                    fmt_num(hi),
                    fmt_num(*vals.last().unwrap_or(&f64::NAN))
                );
            }
            h.push_str("</table>");
        }
    }

    h.push_str("<h2>Latency distributions</h2><p class=\"muted\">Latency from the moment each message was due (open loop), by percentile; both axes logarithmic. Hover a line for its name.</p>");
    let mut groups: BTreeMap<&str, Vec<Named>> = BTreeMap::new();
    for s in &r.scenarios {
        for c in &s.outcome.curves {
            if c.points.is_empty() {
                continue;
            }
            let group = if c.name.starts_with("bus.") && c.name.split('.').nth(2) == Some("memory") {
                "Bus, in memory: publish → subscriber at 100,000 frames/s"
            } else if c.name.starts_with("bus.") {
                "Bus, durable: publish → durable subscriber at 100,000 frames/s"
            } else if c.name.starts_with("api.simple") {
                "REST simple query (GET /api/v1/values/{tag})"
            } else if c.name.starts_with("api.") {
                "REST complex queries (wildcard values, device list)"
            } else if c.name.starts_with("db.") {
                "Store (SQLite) at 1,000 calls/s"
            } else {
                "WebSocket fan-out: publish → every client"
            };
            groups.entry(group).or_default().push((c.name.clone(), c.points.clone()));
        }
    }
    for (title, curves) in groups {
        h.push_str(&percentile_chart(title, curves));
    }

    h.push_str("<h2>Over time</h2><p class=\"muted\">Sampled every 100 ms during each measured run.</p>");
    let mut by: BTreeMap<(String, String, String), Vec<Named>> = BTreeMap::new();
    for s in &r.scenarios {
        for series in &s.outcome.series {
            let family = series.name.split(['.', ' ']).next().unwrap_or("").to_owned();
            let what = series.name.rsplit(' ').next().unwrap_or("").to_owned();
            by.entry((family, what, series.x_unit.clone()))
                .or_default()
                .push((format!("{} ({})", series.name, series.unit), series.points.clone()));
        }
    }
    for ((family, what, x_unit), lines) in by {
        let unit = lines
            .first()
            .and_then(|l| l.0.rsplit_once('('))
            .map_or(String::new(), |(_, u)| u.trim_end_matches(')').to_owned());
        let by_rate = x_unit != "s";
        let title = if by_rate {
            lines.first().map_or(String::new(), |l| l.0.clone())
        } else {
            format!("{family}: {what} over time")
        };
        h.push_str(&svg(&Chart {
            title: &title,
            x_label: if by_rate { &x_unit } else { "seconds" },
            y_label: &unit,
            lines,
            x_log: false,
            y_log: by_rate,
            x_ticks: None,
            y_fmt: if by_rate { fmt_us } else { fmt_num },
        }));
    }

    let notes: Vec<String> = r
        .scenarios
        .iter()
        .flat_map(|s| {
            let mut v: Vec<String> = s.outcome.notes.iter().map(|n| format!("{}: {n}", s.id)).collect();
            if s.status != "ran" {
                v.push(format!("{} {}: {}", s.id, s.status, s.reason.as_deref().unwrap_or("")));
            }
            v
        })
        .collect();
    if !notes.is_empty() {
        h.push_str("<h2>Notes</h2><ul>");
        for n in notes {
            let _ = write!(h, "<li>{}</li>", esc(&n));
        }
        h.push_str("</ul>");
    }
    let _ = write!(h, "<h2>Every figure</h2><details><summary>{} figures</summary><table>", r.figures.len());
    for (k, v) in &r.figures {
        let _ = write!(h, r#"<tr><td><code>{}</code></td><td class="num">{}</td></tr>"#, esc(k), fmt_num(*v));
    }
    h.push_str("</table></details></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_placed_on_a_log_scale_of_the_tail() {
        assert_eq!(q_pos(0.0), 0.0);
        assert!((q_pos(0.99) - 2.0).abs() < 1e-9);
        assert!((q_pos(0.999) - 3.0).abs() < 1e-6);
        assert_eq!(q_pos(1.0), 6.0);
    }

    #[test]
    fn a_chart_escapes_names_and_draws_one_line_per_series() {
        let c = Chart {
            title: "a <b>",
            x_label: "x",
            y_label: "y",
            lines: vec![("one".into(), vec![[0.0, 1.0], [1.0, 10.0]]), ("two & more".into(), vec![[0.0, 2.0]])],
            x_log: false,
            y_log: true,
            x_ticks: None,
            y_fmt: fmt_us,
        };
        let s = svg(&c);
        assert!(s.contains("a &lt;b&gt;") && s.contains("two &amp; more"));
        assert_eq!(s.matches("<polyline").count(), 2);
    }
}
