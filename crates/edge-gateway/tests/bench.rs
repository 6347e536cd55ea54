//! `edge-gateway bench`, as CI runs it: one `--quick` run proves the suite
//! works end to end (every budget line reported as pass, fail or skipped
//! with a reason; well-formed JSON and a self-contained HTML page; a saved
//! baseline), and a second, narrower run compares itself with that
//! baseline. No figure is asserted: the machine is shared and noisy.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::BIN;
use serde_json::Value;

fn budget_ids() -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("budget.toml")).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    doc["line"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect()
}

fn bench(dir: &Path, args: &[&str]) -> (Value, String) {
    let out = Command::new(BIN).arg("bench").args(args).current_dir(dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json = match args.iter().position(|a| *a == "--json") {
        Some(i) => serde_json::from_str(&std::fs::read_to_string(dir.join(args[i + 1])).unwrap()).unwrap(),
        None => Value::Null,
    };
    (json, stdout)
}

#[test]
fn a_quick_run_reports_every_budget_line_and_a_second_run_compares_with_its_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let (report, stdout) = bench(
        dir.path(),
        &["--quick", "--json", "out.json", "--html", "out.html", "--save-baseline", "first", "--baseline-dir", "bl"],
    );

    // Every line of the budget, judged or skipped with a reason; never a bare pass.
    let ids = budget_ids();
    let lines = report["lines"].as_array().unwrap();
    assert_eq!(lines.iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect::<BTreeSet<_>>(), ids);
    for l in lines {
        match l["status"].as_str().unwrap() {
            "pass" | "fail" => assert!(l["measured"].as_f64().is_some(), "{l}"),
            "skipped" => assert!(!l["reason"].as_str().unwrap_or("").is_empty(), "{l}"),
            other => panic!("status {other} in {l}"),
        }
        assert!(stdout.contains(&format!("`{}`", l["id"].as_str().unwrap())), "the table lacks {}", l["id"]);
    }
    assert!(stdout.contains("Budget: "), "{stdout}");

    // Raw figures, scenarios and the machine.
    let figures = report["figures"].as_object().unwrap();
    assert!(figures.len() > 50, "{} figures", figures.len());
    assert!(figures.values().all(|v| v.is_number()));
    let scenarios = report["scenarios"].as_array().unwrap();
    assert!(scenarios.iter().any(|s| s["status"] == "ran"));
    for s in scenarios {
        assert!(["ran", "failed", "skipped"].contains(&s["status"].as_str().unwrap()), "{s}");
    }
    for key in ["cpu_model", "cores", "memory", "kernel", "date", "build"] {
        assert!(report["machine"][key].is_string(), "machine.{key}");
    }
    // The profile the binary under test was built with (the tests' own).
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    assert_eq!(report["machine"]["build"], profile);
    assert_eq!(report["settings"]["quick"], true);

    // One self-contained page: charts, every line, nothing fetched from elsewhere.
    let html = std::fs::read_to_string(dir.path().join("out.html")).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    assert!(html.contains("<svg") && html.contains("<polyline"));
    for id in &ids {
        assert!(html.contains(id.as_str()), "the page lacks {id}");
    }
    for external in ["<script src", "<link", "src=\"http", "url(http", "@import"] {
        assert!(!html.contains(external), "the page loads {external}");
    }

    // The baseline was saved; a second run compares with it.
    assert!(dir.path().join("bl/first.json").is_file());
    let (second, stdout) = bench(
        dir.path(),
        &["--quick", "--only", "storage,db", "--baseline", "first", "--baseline-dir", "bl", "--json", "second.json"],
    );
    let c = &second["baseline"];
    assert_eq!(c["name"], "first");
    assert!(c["compared"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(c["tolerance_pct"], 20.0);
    for m in c["flagged"].as_array().unwrap() {
        assert!(m["figure"].is_string() && m["baseline"].is_number() && m["current"].is_number(), "{m}");
        assert!(["regressed", "improved", "changed"].contains(&m["verdict"].as_str().unwrap()), "{m}");
    }
    assert!(stdout.contains("Against baseline first"), "{stdout}");
    // Left out by --only: skipped, with the reason.
    let skipped = second["lines"].as_array().unwrap().iter().find(|l| l["id"] == "api.simple").unwrap();
    assert_eq!(skipped["status"], "skipped");
    assert!(skipped["reason"].as_str().unwrap().contains("--only"));

    // Kept up to date: each run adds to the baseline's history, and its
    // figures move only to better values confirmed over --confirm-runs runs.
    for i in 0..2 {
        let (_, stdout) = bench(
            dir.path(),
            &[
                "--quick",
                "--only",
                "storage",
                "--baseline",
                "first",
                "--baseline-dir",
                "bl",
                "--update-baseline",
                "--confirm-runs",
                "2",
            ],
        );
        assert!(stdout.contains("Against baseline first"), "run {i}: {stdout}");
    }
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bl/first.json")).unwrap()).unwrap();
    let track = &kept["tracking"]["storage.default.wal_max_gb"];
    assert_eq!(track["history"].as_array().map(Vec::len), Some(2), "{track}");
    let (third, _) = bench(
        dir.path(),
        &[
            "--quick",
            "--only",
            "storage",
            "--baseline",
            "first",
            "--baseline-dir",
            "bl",
            "--json",
            "third.json",
            "--html",
            "third.html",
        ],
    );
    assert_eq!(third["baseline"]["kept"], true);
    let html = std::fs::read_to_string(dir.path().join("third.html")).unwrap();
    assert!(html.contains("History of each budget figure"), "the HTML draws the kept history");
}

#[test]
fn a_bad_budget_file_or_baseline_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.toml"), "[[line]]\nid = 'x'\n").unwrap();
    let out = Command::new(BIN).args(["bench", "--budget", "b.toml"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("budget b.toml"), "{out:?}");

    let out = Command::new(BIN).args(["bench", "--baseline", "nope"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read baseline"), "{out:?}");

    let out = Command::new(BIN).args(["bench", "--save-baseline", "../x"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}
