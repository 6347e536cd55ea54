//! The alarm scenarios: what evaluating 10,000 rules costs at 100,000
//! values/s, and how fast `GET /api/v1/alarms/active` answers with 1,000
//! alarms active.
//!
//! Evaluation runs the real [`AlarmService`] (lossy bus subscription, the
//! engine, the state file, events back on the bus) on a thread of its own
//! (a current-thread runtime), so its CPU time is read from that thread
//! alone (`/proc/self/task/{tid}/stat`) while a publisher thread offers the
//! values to a WAL-backed bus of the default preset.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_alarms::rule::compile_all;
use gateway_alarms::{AlarmMetrics, AlarmService, AlarmsConfig, Kind, RuleConfig};
use gateway_api::ApiConfig;
use gateway_bus::{Bus, BusMetrics, BusSettings, Preset};
use gateway_model::{Batch, DataFrame, Frame, Quality, Reason, TagId, Value, now_ns};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Outcome;
use super::gateway::Gateway;
use super::http::open_loop;

/// The alarm scenarios.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AlarmsSpec {
    /// `rules` rules over `tags` tags, `rate` values/s for `seconds`.
    Eval {
        /// Rules: nine in ten on one tag, one in ten a pattern over ten tags.
        rules: usize,
        /// Tags the values cycle over (some have no rule).
        tags: usize,
        /// Values per second offered.
        rate: f64,
        /// Seconds measured.
        seconds: f64,
    },
    /// `GET /api/v1/alarms/active` at each of `rates` with `active` alarms.
    Active {
        /// Alarms active.
        active: usize,
        /// Requests per second tried.
        rates: Vec<f64>,
        /// Seconds measured per rate.
        seconds: f64,
    },
}

impl AlarmsSpec {
    /// The scenario's id.
    pub fn key(&self) -> String {
        match self {
            AlarmsSpec::Eval { .. } => "alarms.eval".into(),
            AlarmsSpec::Active { .. } => "alarms.active".into(),
        }
    }
}

/// Runs one alarm scenario.
pub fn run(spec: &AlarmsSpec) -> Result<Outcome, String> {
    match spec {
        AlarmsSpec::Eval { rules, tags, rate, seconds } => eval(*rules, *tags, *rate, *seconds),
        AlarmsSpec::Active { active, rates, seconds } => active_list(*active, rates, *seconds),
    }
}

/// The tag of value number `i` of the stream: `d{device}.t{point}`, ten points per device.
fn tag_name(i: usize) -> String {
    format!("d{}.t{}", i / 10, i % 10)
}

/// A mix of every kind a plant uses: thresholds, equality, quality,
/// staleness and rate of change, on single tags; one rule in ten a pattern.
fn bench_rules(rules: usize) -> Vec<RuleConfig> {
    let base = |name: String, tag: String, kind: Kind, limit: Option<Value>| RuleConfig {
        name,
        tag,
        kind,
        limit,
        deadband: 0.0,
        on_delay: None,
        off_delay: None,
        timeout: None,
        priority: None,
        message: None,
        enabled: true,
    };
    let patterns = rules / 10;
    let exact = rules - patterns;
    let mut v = Vec::with_capacity(rules);
    for i in 0..exact {
        let tag = tag_name(i);
        let name = format!("r{i}");
        v.push(match i % 6 {
            0 => RuleConfig { deadband: 1.0, ..base(name, tag, Kind::High, Some(Value::F64(99.0))) },
            1 => RuleConfig { deadband: 1.0, ..base(name, tag, Kind::Low, Some(Value::F64(1.0))) },
            2 => base(name, tag, Kind::Equals, Some(Value::F64(-1.0))),
            3 => base(name, tag, Kind::BadQuality, None),
            4 => RuleConfig { timeout: Some(gateway_model::Span::from_secs(60)), ..base(name, tag, Kind::Stale, None) },
            _ => RuleConfig { deadband: 10.0, ..base(name, tag, Kind::RateOfChange, Some(Value::F64(1e6))) },
        });
    }
    // Patterns over the devices after the exact rules' tags: `d{n}.t?`.
    let first_device = exact.div_ceil(10);
    for j in 0..patterns {
        let tag = format!("d{}.t?", first_device + j);
        v.push(RuleConfig {
            on_delay: Some(gateway_model::Span::from_secs(5)),
            ..base(format!("p{j}"), tag, Kind::HighHigh, Some(Value::F64(99.5)))
        });
    }
    v
}

/// Utime + stime of thread `tid` of this process, in seconds.
fn thread_cpu_s(tid: i32) -> f64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else { return 0.0 };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let Some(rest) = text.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    let hz = 100.0;
    (ticks(11) + ticks(12)) / hz
}

fn eval(rules: usize, tags: usize, rate: f64, seconds: f64) -> Result<Outcome, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut registry = prometheus_client::registry::Registry::default();
    let settings = BusSettings { wal_dir: dir.path().join("wal"), ..Preset::Default.settings() };
    let bus = Bus::open(settings, Arc::new(BusMetrics::new(&mut registry))).map_err(|e| e.to_string())?;
    let compiled = compile_all(&bench_rules(rules), "rules").map_err(|e| e.to_string())?;
    let metrics = Arc::new(AlarmMetrics::new(&mut registry));
    // The service on a thread of its own, so its CPU is its own.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let service_thread = {
        let (bus, dir, metrics, stop) = (bus.clone(), dir.path().to_owned(), metrics.clone(), stop.clone());
        std::thread::Builder::new()
            .name("alarms".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let r = AlarmService::spawn(&bus, compiled, &dir, metrics).map_err(|e| e.to_string());
                    let tid = nix::unistd::gettid().as_raw();
                    let _ = ready_tx.send(r.map(|s| (s, tid)));
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
            })
            .map_err(|e| e.to_string())?
    };
    let (service, tid) = ready_rx.recv().map_err(|e| e.to_string())??;
    // The publisher: batches of 1,000 every 1,000/rate seconds.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let names: Vec<TagId> = (0..tags).map(|i| TagId::new(&tag_name(i)).expect("tag")).collect();
    let published = Arc::new(AtomicU64::new(0));
    let batch = 1000usize;
    let run_for = |secs: f64| {
        let (bus, names, published) = (bus.clone(), names.clone(), published.clone());
        rt.block_on(async move {
            let start = Instant::now();
            let mut n = 0usize;
            let mut k = 0u64;
            while start.elapsed().as_secs_f64() < secs {
                let due = start + Duration::from_secs_f64(k as f64 * batch as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let ts = now_ns();
                let mut b = Batch::with_capacity(batch);
                for _ in 0..batch {
                    let i = n % names.len();
                    // Mostly normal values; now and then one past a limit or bad.
                    let x = ((n as u64).wrapping_mul(2_654_435_761) % 10_000) as f64 / 100.0;
                    let q = if n % 5_003 == 0 { Quality::bad(Reason::TIMEOUT) } else { Quality::GOOD };
                    b.push(Frame::Data(DataFrame::new(names[i].clone(), Value::F64(x), q, ts)));
                    n += 1;
                }
                if bus.publish(Arc::new(b)).await.is_err() {
                    break;
                }
                published.fetch_add(batch as u64, Ordering::Relaxed);
                k += 1;
            }
        });
    };
    // Warm-up: every tag seen once (pattern alarms created), then measure.
    run_for(((tags as f64 / rate) * 2.0).max(1.0));
    let m = service.metrics().clone();
    let (cpu0, eval0, pub0, t0) =
        (thread_cpu_s(tid), m.evaluated.get(), published.load(Ordering::Relaxed), Instant::now());
    run_for(seconds);
    // Let the service take what is left before reading its counters.
    std::thread::sleep(Duration::from_millis(300));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = thread_cpu_s(tid) - cpu0;
    let evaluated = m.evaluated.get() - eval0;
    let offered = published.load(Ordering::Relaxed) - pub0;
    let alarms = rt.block_on(service.query(|e| e.len())).map_err(|e| e.to_string())?;
    stop.store(true, Ordering::Relaxed);
    let _ = service_thread.join();
    let mut o = Outcome::default();
    o.put("alarms.eval.rules", rules as f64);
    o.put("alarms.eval.alarms", alarms as f64);
    o.put("alarms.eval.offered_values_per_s", offered as f64 / wall);
    o.put("alarms.eval.evaluated_values_per_s", evaluated as f64 / wall);
    o.put("alarms.eval.evaluated_share", evaluated as f64 / offered.max(1) as f64);
    o.put("alarms.eval.cpu_cores", cpu / wall);
    o.put("alarms.eval.ns_per_value", if evaluated > 0 { cpu * 1e9 / evaluated as f64 } else { 0.0 });
    o.put("alarms.eval.transitions", m.events_published.get() as f64);
    o.put("alarms.eval.skipped_values", m.readings_skipped.get() as f64);
    let _ = bus;
    Ok(o)
}

fn active_list(active: usize, rates: &[f64], seconds: f64) -> Result<Outcome, String> {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gateway")
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let client = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    // Devices of 100 sine tags each, polled every second; one rule that
    // holds for every one of them (a sine never equals 1e9).
    let devices = super::gateway::sim_devices("plc", active.div_ceil(100), 100, 1000)?;
    let rule: RuleConfig = serde_json::from_value(json!({
        "name": "always", "tag": "plc*", "kind": "not_equals", "limit": 1e9, "priority": "high",
    }))
    .map_err(|e| e.to_string())?;
    let alarms = AlarmsConfig { rules: vec![rule], ..AlarmsConfig::default() };
    let gw = server.block_on(Gateway::start_with_alarms(Preset::Default, ApiConfig::default(), &devices, alarms))?;
    let addr = gw.addr;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut count = 0;
    while Instant::now() < deadline {
        let list = gw.alarm_service().map(|s| s.active().alarms.len()).unwrap_or(0);
        count = list;
        if list >= active {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut o = Outcome::default();
    o.put("alarms.active.count", count as f64);
    let paths = Arc::new(vec!["/api/v1/alarms/active".to_owned()]);
    for &rate in rates {
        let r = client.block_on(open_loop(addr, paths.clone(), rate, 1.0, seconds, 8));
        let l = r.from_due.latency();
        let key = format!("alarms.active.q{rate:.0}");
        o.put(&format!("{key}.p50_us"), l.p50_us);
        o.put(&format!("{key}.p99_us"), l.p99_us);
        o.put(&format!("{key}.achieved_qps"), r.ok as f64 / r.seconds.max(1e-9));
        o.put(&format!("{key}.errors"), (r.errors + r.unfinished) as f64);
        o.put(&format!("{key}.body_bytes"), r.body_bytes as f64);
        o.curves.push(super::Curve { name: key, points: r.from_due.curve() });
    }
    server.block_on(gw.stop());
    Ok(o)
}
