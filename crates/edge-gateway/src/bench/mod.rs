//! `edge-gateway bench`: the performance budget, measured on this machine.
//!
//! The parent process plans the scenarios (bus presets in memory and
//! durable, whole-gateway memory and CPU per preset, REST, store queries,
//! WebSocket fan-out, the WAL's size limit, Modbus, MQTT and NATS end to end),
//! runs each in a fresh child process of this executable (`--bench-child
//! <json>` through `gateway_bench::child`, so every memory figure belongs to
//! its scenario alone, and a scenario that hangs is killed), collects
//! their figures, judges every line of the budget (`budget.toml`) and prints
//! the table; then writes the JSON and HTML reports and saves or compares a
//! baseline. All load is generated here: no outside tool is needed (MQTT
//! needs a local mosquitto, NATS a local nats-server; each is skipped, with
//! the reason, without it).

mod alarms;
mod budget;
mod bus;
mod gateway;
mod history;
mod html;
mod http;
mod keep;
mod plan;
pub(crate) mod probe;
mod report;
mod tuning;
mod ws;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use gateway_bench::child;
use gateway_bench::modbus::{self, Level};
use gateway_bench::mqtt::{self, MqttScenario};
use gateway_bench::nats::{self, NatsScenario};
use gateway_bench::north::{self, NorthSpec};
use gateway_bench::opcua::{self, OpcUaScenario};
use serde::{Deserialize, Serialize};

pub use plan::Settings;
use plan::{Step, north_key, plan, selected};
pub use report::Report;

/// Arguments of `edge-gateway bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Short runs (well under a minute in all): proves the suite works; the figures are rough.
    #[arg(long)]
    pub quick: bool,
    /// Seconds measured per scenario level (default 5; with --quick 0.5).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Run only the scenarios whose id begins with one of these comma-separated
    /// words or has it as a dot-separated part (e.g. `bus.low_latency,api,latency`);
    /// the others are reported as skipped.
    #[arg(long, value_name = "PATTERN")]
    pub only: Option<String>,
    /// WebSocket clients of the fan-out scenario.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub ws_connections: usize,
    /// Write every raw figure, the verdicts and the machine's description as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with charts.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Save this run as baseline NAME (`<baseline-dir>/NAME.json`).
    #[arg(long, value_name = "NAME")]
    pub save_baseline: Option<String>,
    /// Compare with baseline NAME and flag every figure that moved beyond the tolerance.
    #[arg(long, value_name = "NAME")]
    pub baseline: Option<String>,
    /// Where baselines are kept.
    #[arg(long, value_name = "DIR", default_value = "bench-baselines")]
    pub baseline_dir: PathBuf,
    /// Change (percent) beyond which a figure is flagged against the baseline.
    #[arg(long, value_name = "PCT", default_value_t = 20.0)]
    pub tolerance: f64,
    /// Budget file to judge against (default: the budget built into the binary).
    #[arg(long, value_name = "FILE")]
    pub budget: Option<PathBuf>,
    /// With --baseline: update it after the run. A figure's baseline moves
    /// only to a better value seen in --confirm-runs runs in a row (the worst
    /// of them), never to a worse one; every run's figures are added to the
    /// baseline's history (the HTML report draws it).
    #[arg(long, requires = "baseline")]
    pub update_baseline: bool,
    /// Runs in a row a change must last: to move a baseline figure
    /// (--update-baseline), and to count as a regression for --strict when
    /// the baseline keeps a history (one noisy run on a shared machine must
    /// not cry wolf).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub confirm_runs: u32,
    /// Exit with status 3 when a budget line fails or a figure regressed against the baseline.
    #[arg(long)]
    pub strict: bool,
}

/// A latency distribution: `[quantile, microseconds]` points.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Curve {
    /// What it is.
    pub name: String,
    /// The points.
    pub points: Vec<[f64; 2]>,
}

fn seconds_unit() -> String {
    "s".into()
}

/// A figure over time (or over another x, named by `x_unit`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Series {
    /// What it is.
    pub name: String,
    /// Unit of the values.
    pub unit: String,
    /// Unit of x (seconds unless said).
    #[serde(default = "seconds_unit")]
    pub x_unit: String,
    /// `[x, value]` points.
    pub points: Vec<[f64; 2]>,
}

/// What one scenario measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Figures by key, e.g. `bus.low_latency.memory.p99_us`.
    pub figures: BTreeMap<String, f64>,
    /// Latency distributions.
    pub curves: Vec<Curve>,
    /// Figures over time.
    pub series: Vec<Series>,
    /// Remarks worth a reader's attention.
    pub notes: Vec<String>,
}

impl Outcome {
    /// Sets a figure.
    pub fn put(&mut self, key: &str, value: f64) {
        self.figures.insert(key.to_owned(), value);
    }
}

/// A scenario, as sent to a child process.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "spec", rename_all = "snake_case")]
pub enum Spec {
    /// A bus run.
    Bus(bus::BusSpec),
    /// Whole-gateway memory and CPU.
    Resources(gateway::ResourcesSpec),
    /// REST.
    Api(http::ApiSpec),
    /// Store queries.
    Db(gateway::DbSpec),
    /// WebSocket fan-out, server side.
    Ws(ws::WsSpec),
    /// WebSocket fan-out, client side (started by the server side).
    WsClients(ws::WsClientsSpec),
    /// WAL size limit.
    Storage(gateway::StorageSpec),
    /// Modbus end to end.
    Modbus(Level),
    /// OPC UA subscriptions end to end.
    OpcUa(OpcUaScenario),
    /// MQTT delivery.
    Mqtt(MqttScenario),
    /// The plant-to-broker job: Modbus servers, this gateway and mosquitto as processes.
    North(NorthSpec),
    /// NATS JetStream delivery.
    Nats(NatsScenario),
    /// History: writes, queries, the pool, an outage.
    History(history::HistorySpec),
    /// Alarms: evaluation cost, the active list.
    Alarms(alarms::AlarmsSpec),
    /// Self-tuning against fixed intervals under CPU contention.
    Tuning(tuning::ContentionSpec),
}

const fn default_confirm_runs() -> u32 {
    3
}

/// Marks a child process of `bench` that runs one scenario (`gateway_bench::child`).
const CHILD_FLAG: &str = "--bench-child";

/// The command that runs `spec` in a child process of this executable.
pub fn child_command(spec: &Spec) -> Result<std::process::Command, String> {
    child::command(CHILD_FLAG, spec).map_err(|e| e.to_string())
}

/// Values per second at which the network lines state the uplink's need.
pub const NETWORK_RATE: f64 = 100_000.0;

fn run_spec(spec: &Spec) -> Result<Outcome, String> {
    // Each scenario runs in a fresh child, before any thread of its own:
    // give it the allocator settings `edge-gateway run` uses for the preset.
    let preset = match spec {
        Spec::Bus(s) => s.preset,
        Spec::Resources(s) => s.preset,
        Spec::Modbus(level) => level.preset,
        _ => gateway_bus::Preset::Default,
    };
    crate::malloc::tune(preset);
    match spec {
        Spec::Bus(s) => bus::run(s),
        Spec::Resources(s) => gateway::resources(s),
        Spec::Api(s) => http::api(s),
        Spec::Db(s) => gateway::database(s),
        Spec::Ws(s) => ws::server(s),
        Spec::WsClients(s) => ws::clients(s),
        Spec::Storage(s) => gateway::storage(s),
        Spec::Modbus(level) => {
            let r = modbus::run(level).map_err(|e| e.to_string())?;
            let mut o = Outcome::default();
            o.put("modbus.offered_points_per_s", level.offered() as f64);
            o.put("modbus.points_per_s", r.points_per_s);
            o.put("modbus.delivered_share", r.points_per_s / level.offered().max(1) as f64);
            o.put("modbus.good_share", r.good_share);
            o.put("modbus.polls_per_s", r.polls_per_s);
            o.put("modbus.cpu_process_cores", r.cpu_total);
            o.put("modbus.cpu_gateway_cores", r.cpu_gateway);
            o.put("modbus.peak_rss_mb", r.peak_rss_mib * 1.048_576);
            o.put("modbus.connected", r.connected as f64);
            let col = |f: fn(&modbus::Sample) -> f64| r.series.iter().map(|s| [s.t_s, f(s)]).collect::<Vec<_>>();
            o.series = vec![
                Series {
                    name: "modbus RSS".into(),
                    unit: "MB".into(),
                    x_unit: "s".into(),
                    points: col(|s| s.rss_bytes as f64 / 1e6),
                },
                Series {
                    name: "modbus CPU".into(),
                    unit: "cores (gateway side)".into(),
                    x_unit: "s".into(),
                    points: col(|s| s.cpu_cores),
                },
                Series {
                    name: "modbus points/s".into(),
                    unit: "points/s".into(),
                    x_unit: "s".into(),
                    points: col(|s| s.points_per_s),
                },
            ];
            if r.connected < level.devices {
                o.notes.push(format!("only {} of {} devices were connected at the end", r.connected, level.devices));
            }
            Ok(o)
        }
        Spec::North(s) => {
            let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
            let r = north::run(s, &exe)?;
            let k = north_key(s);
            let mut o = Outcome::default();
            o.put(&format!("{k}.offered_values_per_s"), r.offered_values_per_s);
            o.put(&format!("{k}.delivered_values_per_s"), r.delivered_values_per_s);
            o.put(&format!("{k}.delivered_fraction"), r.delivered_fraction);
            o.put(&format!("{k}.cpu_cores"), r.gateway_cpu_cores);
            o.put(&format!("{k}.rss_mb"), r.gateway_rss_mb);
            o.put(&format!("{k}.peak_rss_mb"), r.gateway_peak_rss_mb);
            o.put(&format!("{k}.start_peak_rss_mb"), r.gateway_start_peak_rss_mb);
            o.put(&format!("{k}.age_p50_ms"), r.age_p50_ms);
            o.put(&format!("{k}.age_p99_ms"), r.age_p99_ms);
            o.put(&format!("{k}.age_p999_ms"), r.age_p999_ms);
            o.put(&format!("{k}.age_samples"), r.age_samples as f64);
            if !r.pinned {
                o.notes.push("taskset is missing: the gateway ran unpinned".into());
            }
            if let Some([level, wal, linger]) = r.tuning
                && level > 0.0
            {
                o.notes.push(format!(
                    "the machine was CPU-bound: self-tuning had widened to level {level} (WAL {wal} ms, linger {linger} ms)"
                ));
            }
            Ok(o)
        }
        Spec::History(s) => history::run(s),
        Spec::Alarms(s) => alarms::run(s),
        Spec::Tuning(s) => tuning::run(s),
        Spec::OpcUa(s) => opcua_outcome(s),
        Spec::Mqtt(s) => {
            let r = mqtt::run(s)?;
            let k = format!("mqtt.{}", s.format);
            let mut o = Outcome::default();
            o.put(&format!("{k}.values_per_s"), r.values_per_s);
            o.put(&format!("{k}.messages_per_s"), r.messages_per_s);
            o.put(&format!("{k}.bytes_per_value"), r.bytes_per_value);
            o.put(&format!("{k}.uplink_mbps_at_100k"), r.bytes_per_value * 8.0 * NETWORK_RATE / 1e6);
            if r.bytes_per_value > 0.0 {
                o.put(&format!("{k}.values_per_s_in_10mbps"), 10e6 / 8.0 / r.bytes_per_value);
            }
            if s.outage_values > 0 {
                o.put(&format!("{k}.replay_values_per_s"), r.replay_values_per_s);
            }
            o.put(&format!("{k}.cpu_cores"), r.cpu_cores);
            o.put(&format!("{k}.broker_cpu_cores"), r.broker_cpu_cores);
            o.put(&format!("{k}.peak_rss_mb"), r.peak_rss as f64 / 1e6);
            Ok(o)
        }
        Spec::Nats(s) => {
            let r = nats::run(s)?;
            let k = nats_key(s);
            let mut o = Outcome::default();
            o.put(&format!("{k}.values_per_s"), r.values_per_s);
            o.put(&format!("{k}.messages_per_s"), r.messages_per_s);
            o.put(&format!("{k}.stream_bytes_per_value"), r.stream_bytes_per_value);
            if s.outage_values > 0 {
                o.put(&format!("{k}.replay_values_per_s"), r.replay_values_per_s);
                o.put(&format!("{k}.recovery_s"), r.recovery_s);
            }
            o.put(&format!("{k}.cpu_cores"), r.cpu_cores);
            o.put(&format!("{k}.server_cpu_cores"), r.server_cpu_cores);
            o.put(&format!("{k}.peak_rss_mb"), r.peak_rss as f64 / 1e6);
            Ok(o)
        }
    }
}

/// `nats.one.{format}` (one node, stream R1) or `nats.r3.{format}` (3-node cluster, stream R3).
fn nats_key(s: &NatsScenario) -> String {
    format!("nats.{}.{}", if s.cluster { "r3" } else { "one" }, s.format)
}

/// The OPC UA scenario's figures: values/s, the gateway side's CPU and
/// memory, the servers' CPU apart, and values per gateway core.
fn opcua_outcome(s: &OpcUaScenario) -> Result<Outcome, String> {
    let r = opcua::run(s).map_err(|e| e.to_string())?;
    let mut o = Outcome::default();
    let offered = s.offered() as f64;
    o.put("opcua.offered_values_per_s", offered);
    o.put("opcua.values_per_s", r.values_per_s);
    o.put("opcua.delivered_share", r.values_per_s / offered.max(1.0));
    o.put("opcua.good_share", r.good_share);
    o.put("opcua.cpu_gateway_cores", r.cpu_gateway);
    o.put("opcua.cpu_servers_cores", r.cpu_servers);
    o.put("opcua.cpu_busiest_server_cores", r.cpu_busiest_server);
    if r.cpu_gateway > 0.0 {
        o.put("opcua.values_per_core", r.values_per_s / r.cpu_gateway);
    }
    o.put("opcua.peak_rss_mb", r.peak_rss_mib * 1.048_576);
    o.put("opcua.connected", r.connected as f64);
    let col = |f: fn(&opcua::Sample) -> f64| r.series.iter().map(|x| [x.t_s, f(x)]).collect::<Vec<_>>();
    let series =
        |name: &str, unit: &str, points| Series { name: name.into(), unit: unit.into(), x_unit: "s".into(), points };
    o.series = vec![
        series("opcua values/s", "values/s", col(|x| x.values_per_s)),
        series("opcua CPU", "cores (gateway side)", col(|x| x.cpu_cores)),
        series("opcua servers' CPU", "cores (Python servers)", col(|x| x.server_cpu_cores)),
        series("opcua RSS", "MB", col(|x| x.rss_bytes as f64 / 1e6)),
    ];
    if r.cpu_busiest_server > 0.8 {
        o.notes.push(format!(
            "the Python asyncua servers limit the values/s: the busiest spent {:.2} cores (one Python process \
             uses at most one); the gateway side spent {:.2} cores for {:.0} values/s",
            r.cpu_busiest_server, r.cpu_gateway, r.values_per_s
        ));
    }
    if r.connected < s.servers {
        o.notes.push(format!("only {} of {} OPC UA devices were connected at the end", r.connected, s.servers));
    }
    Ok(o)
}

/// If this process is a benchmark child, runs its scenario, prints the
/// outcome as one JSON line and returns `Some(exit code)`.
pub fn child_entry() -> Option<ExitCode> {
    child::entry(CHILD_FLAG, |spec: Spec| run_spec(&spec))
}

/// Open-loop pacer: on its own thread, sends `(index, due time)` for `rate`
/// events per second over `seconds`, each as soon as it is due. It sleeps
/// (at least 100 µs at a time, never spins: the machine has 2 cores to share
/// with what it measures), so an event may leave late; its due time still
/// counts, so that lateness is measured, not hidden. Returns the count sent.
pub fn pace(
    rate: f64,
    seconds: f64,
    tx: tokio::sync::mpsc::UnboundedSender<(u64, Instant)>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let rate = rate.max(1e-3);
        let mut i = 0u64;
        loop {
            let offset = i as f64 / rate;
            if offset >= seconds {
                break;
            }
            let due = start + Duration::from_secs_f64(offset);
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).max(Duration::from_micros(100)));
            }
            if tx.send((i, due)).is_err() {
                break;
            }
            i += 1;
        }
        i
    })
}

/// How a scenario went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioRun {
    /// Its id.
    pub id: String,
    /// `ran`, `failed` or `skipped`.
    pub status: String,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds it took.
    pub seconds: f64,
    /// The scenario as run.
    pub spec: Spec,
    /// What it measured.
    pub outcome: Outcome,
}

fn progress(total: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:32} {pos}/{len} {wide_msg}")
    {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn say(pb: &indicatif::ProgressBar, line: String) {
    if pb.is_hidden() { eprintln!("{line}") } else { pb.println(line) }
}

/// `edge-gateway bench`.
pub fn main(args: BenchArgs) -> ExitCode {
    match bench(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edge-gateway bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn bench(args: &BenchArgs) -> Result<ExitCode, String> {
    let (budget_text, budget_source) = match &args.budget {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
            p.display().to_string(),
        ),
        None => (budget::DEFAULT_BUDGET.to_owned(), "built-in (crates/edge-gateway/budget.toml)".to_owned()),
    };
    let lines = budget::parse(&budget_text).map_err(|e| format!("budget {budget_source}: {e}"))?;
    for name in [&args.save_baseline, &args.baseline].into_iter().flatten() {
        report::check_baseline_name(name)?;
    }
    let baseline = match &args.baseline {
        Some(name) => Some(report::load_baseline(&args.baseline_dir, name)?),
        None => None,
    };
    let duration_s = args.duration.unwrap_or(if args.quick { 0.5 } else { 5.0 });
    if !(duration_s.is_finite() && duration_s > 0.0) {
        return Err("--duration must be a positive number of seconds".into());
    }
    if !(args.tolerance.is_finite() && args.tolerance >= 0.0) {
        return Err("--tolerance must be a percentage >= 0".into());
    }
    let settings = Settings {
        quick: args.quick,
        duration_s,
        warmup_s: if args.quick { 0.2 } else { (duration_s / 4.0).clamp(0.5, 2.0) },
        ws_connections: args.ws_connections,
        only: args.only.clone(),
        tolerance_pct: args.tolerance,
        confirm_runs: args.confirm_runs.max(1),
        budget: budget_source,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let limit = lines.iter().find(|l| l.metric == "api.simple.q1000.p99_us").map_or(5_000.0, |l| l.limit);
    let raised = crate::run::raise_nofile_limit();
    let steps = plan(&settings, limit);
    let machine = probe::machine();
    let started = Instant::now();
    let pb = progress(steps.len() as u64);
    if cfg!(debug_assertions) {
        say(&pb, "note: this is a debug build; its figures do not represent the gateway (build with --release)".into());
    }
    // Clients and gateway are separate processes: each needs one descriptor per connection.
    if raised < settings.ws_connections as u64 + 256 && settings.ws_connections > 0 {
        say(
            &pb,
            format!(
                "note: open-files limit {raised}; {} WebSocket clients may not all connect",
                settings.ws_connections
            ),
        );
    }
    let mut runs = Vec::new();
    for step in steps {
        pb.set_message(step.id.clone());
        let t = Instant::now();
        let (status, reason, outcome) = if !selected(settings.only.as_deref(), &step.id) {
            ("skipped", Some(format!("not selected by --only {}", settings.only.as_deref().unwrap_or(""))), None)
        } else if let Some(r) = &step.skip {
            ("skipped", Some(r.clone()), None)
        } else {
            let timeout = Duration::from_secs_f64(step.estimate_s * 4.0 + 120.0);
            match run_child(&step.spec, timeout) {
                Ok(o) => ("ran", None, Some(o)),
                Err(e) => ("failed", Some(e.to_string()), None),
            }
        };
        let secs = t.elapsed().as_secs_f64();
        // Scenarios left out by --only are listed in the table, not here.
        if status != "skipped" || settings.only.is_none() || step.skip.is_some() {
            let what = match &reason {
                Some(r) => format!("{status}: {r}"),
                None => status.to_owned(),
            };
            say(&pb, format!("{:<40} {what} ({secs:.1} s)", step.id));
        }
        runs.push(ScenarioRun {
            id: step.id,
            status: status.into(),
            reason,
            seconds: secs,
            spec: step.spec,
            outcome: outcome.unwrap_or_default(),
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    let report = Report::build(settings, machine, lines, runs, started.elapsed().as_secs_f64(), baseline);
    print!("{}", report.table_markdown());
    print!("{}", report.baseline_markdown());
    println!("{}", report.summary_line());
    if let Some(p) = &args.json {
        std::fs::write(p, report.to_json()).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    if let Some(p) = &args.html {
        std::fs::write(p, html::render(&report)).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    if let Some(name) = &args.save_baseline {
        let path = report::save_baseline(&args.baseline_dir, name, &report)?;
        eprintln!("Saved baseline {name} to {}.", path.display());
    }
    if let (true, Some(name)) = (args.update_baseline, &args.baseline) {
        let (path, moved) = keep::update_baseline(&args.baseline_dir, name, &report)?;
        eprintln!(
            "Updated baseline {name} ({}): {moved} figures moved to a better value confirmed over {} runs.",
            path.display(),
            report.settings.confirm_runs
        );
    }
    let failed = report.counts().1 > 0 || report.regressions() > 0;
    Ok(if args.strict && failed { ExitCode::from(3) } else { ExitCode::SUCCESS })
}

/// Figure prefixes a scenario reports (to explain a missing figure).
pub fn plan_prefixes(spec: &Spec) -> Vec<String> {
    match spec {
        Spec::Bus(b) => {
            let key = format!("bus.{}.{}", b.preset.name(), bus::persistence_name(b.persistence));
            match b.mode {
                bus::Mode::Throughput => {
                    vec![format!("{key}.frames_per_s"), format!("{key}.delivered"), format!("{key}.throughput_")]
                }
                bus::Mode::Latency => vec![
                    format!("{key}.p5"),
                    format!("{key}.p9"),
                    format!("{key}.max_us"),
                    format!("{key}.latency_"),
                    format!("{key}.publish_"),
                ],
            }
        }
        Spec::Resources(r) => vec![format!("resources.{}.", r.preset.name())],
        Spec::Api(_) => vec!["api.".into()],
        Spec::Db(_) => vec!["db.".into()],
        Spec::Ws(_) | Spec::WsClients(_) => vec!["ws.".into()],
        Spec::Storage(_) => vec!["storage.".into()],
        Spec::Modbus(_) => vec!["modbus.".into()],
        Spec::OpcUa(_) => vec!["opcua.".into()],
        Spec::Mqtt(m) => vec![format!("mqtt.{}.", m.format)],
        Spec::North(n) => vec![format!("{}.", north_key(n))],
        Spec::Nats(n) => vec![format!("{}.", nats_key(n))],
        Spec::History(h) => match h {
            history::HistorySpec::Write { dialect, .. } => {
                vec![h.key() + ".", format!("history.{}.bytes_per_value", dialect.name())]
            }
            _ => vec![h.key() + "."],
        },
        Spec::Alarms(a) => vec![a.key() + "."],
        Spec::Tuning(t) => vec![t.key() + "."],
    }
}

/// Runs one scenario in a child process. A resources scenario's child runs
/// from its own copy of this executable: the kernel does not page out a
/// page two processes map (`pages.rs`), so code this parent runs would stay
/// in the memory preset's RSS, and a gateway in a plant is alone on its file.
fn run_child(spec: &Spec, timeout: Duration) -> Result<Outcome, String> {
    if !matches!(spec, Spec::Resources(_)) {
        return child::run::<_, Outcome>(CHILD_FLAG, spec, timeout).map_err(|e| e.to_string());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let copy = dir.path().join("edge-gateway");
    std::fs::copy(&exe, &copy).map_err(|e| format!("copying {} for the child: {e}", exe.display()))?;
    let cmd = child::command_at(&copy, CHILD_FLAG, spec).map_err(|e| e.to_string())?;
    child::wait_for_report::<Outcome>(cmd, timeout).map_err(|e| e.to_string())
}
