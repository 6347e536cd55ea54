//! History scenarios, each in its own child process:
//!
//! * `write`: the whole gateway running (its own assembly, history on)
//!   and readings of 10,000 tags published onto its bus at a fixed rate
//!   above the target; measured: values written per second, whether the
//!   writer kept up (its backlog), CPU, peak RSS, bytes on disk per value.
//! * `query`: 24 hours of one-second readings of a few tags, written
//!   through the bus and summarised; measured: one tag's 86,400 raw points
//!   and its 1,440 one-minute averages, p50/p99 of repeated queries.
//! * `pool`: a burst of history queries at 2,000/s (9 in 10 the value at a
//!   random time, 1 in 10 an hour of one-minute averages) with the fixed pool
//!   of 50 or the adaptive one: connection acquire p99, query p99 from the
//!   moment each query was due, peak RSS, the pool's size over time.
//! * `outage`: PostgreSQL stopped for a while at 100,000 values/s, then
//!   started again; measured: how long history takes to catch up with live
//!   data still coming, so what a one-hour outage costs, and the delivery
//!   latency of another durable subscriber meanwhile.
//!
//! PostgreSQL runs as a server the scenario starts (`gateway_bench::postgres`)
//! with fsync on and `shared_buffers = 256MB`, `max_wal_size = 4GB`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_api::ApiConfig;
use gateway_bench::histogram::Histogram;
use gateway_bench::postgres::PgServer;
use gateway_bus::{Bus, BusMetrics, BusSettings, Preset, SubscribeOptions};
use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value, now_ns};
use gateway_store::history::{AggQuery, HistoryConfig, PoolMode, RawQuery};
use gateway_store::{DatabaseConfig, History, HistoryMetrics};
use serde::{Deserialize, Serialize};

use super::gateway::Gateway;
use super::probe::{self, Sampler};
use super::{Curve, Outcome, Series, pace};

/// Settings of the benchmark's PostgreSQL server: durable (fsync on), with
/// room for a large write load. The rest are PostgreSQL's defaults.
pub const PG_SETTINGS: &[&str] = &["shared_buffers=256MB", "max_wal_size=4GB", "max_connections=200"];

const S: i64 = 1_000_000_000;

/// Which database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// The default: `history.db` beside the gateway's data.
    Sqlite,
    /// A PostgreSQL server the scenario starts.
    Postgres,
}

impl Dialect {
    /// Its name in the figures.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// One history scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "scenario", rename_all = "snake_case")]
pub enum HistorySpec {
    /// Values written per second.
    Write {
        /// The database.
        dialect: Dialect,
        /// Distinct tags.
        tags: usize,
        /// Values per second offered.
        rate: f64,
        /// Seconds before measuring.
        warmup_s: f64,
        /// Seconds measured.
        seconds: f64,
    },
    /// Query latency over a day of one-second data.
    Query {
        /// The database.
        dialect: Dialect,
        /// Tags written (the first is queried).
        tags: usize,
        /// Hours of one-second data.
        hours: i64,
        /// Raw queries measured.
        raw_queries: usize,
        /// Aggregate queries measured.
        agg_queries: usize,
    },
    /// A burst of queries through the fixed or the adaptive pool.
    Pool {
        /// Adaptive or fixed.
        mode: PoolMode,
        /// Queries per second.
        rate: f64,
        /// Seconds of burst.
        seconds: f64,
    },
    /// Retention on SQLite: `hours` of one-second data of `tags` tags pass
    /// the retention at once while `rate` values/s keep arriving; the steps'
    /// times, rows deleted per second, and what the writer kept writing.
    Retention {
        /// Tags filled.
        tags: usize,
        /// Hours of one-second data that expire.
        hours: i64,
        /// Live values per second meanwhile.
        rate: f64,
    },
    /// A PostgreSQL outage and the catch-up after it.
    Outage {
        /// Values per second, throughout.
        rate: f64,
        /// Seconds the server is down.
        outage_s: f64,
    },
}

impl HistorySpec {
    /// The prefix of its figures.
    pub fn key(&self) -> String {
        match self {
            HistorySpec::Write { dialect, .. } => format!("history.{}.write", dialect.name()),
            HistorySpec::Query { dialect, .. } => format!("history.{}.query", dialect.name()),
            HistorySpec::Pool { mode, .. } => match mode {
                PoolMode::Adaptive => "history.pool.adaptive".into(),
                PoolMode::Fixed => "history.pool.fixed".into(),
            },
            HistorySpec::Retention { .. } => "history.sqlite.retention".into(),
            HistorySpec::Outage { .. } => "history.postgres.outage".into(),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gateway")
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

/// Runs `spec` in this (child) process.
pub fn run(spec: &HistorySpec) -> Result<Outcome, String> {
    let rt = runtime()?;
    rt.block_on(async {
        match spec {
            HistorySpec::Write { dialect, tags, rate, warmup_s, seconds } => {
                write(*dialect, *tags, *rate, *warmup_s, *seconds).await
            }
            HistorySpec::Query { dialect, tags, hours, raw_queries, agg_queries } => {
                query(*dialect, *tags, *hours, *raw_queries, *agg_queries).await
            }
            HistorySpec::Pool { mode, rate, seconds } => pool(*mode, *rate, *seconds).await,
            HistorySpec::Retention { tags, hours, rate } => retention(*tags, *hours, *rate).await,
            HistorySpec::Outage { rate, outage_s } => outage(*rate, *outage_s).await,
        }
    })
}

/// A PostgreSQL server with a fresh database, or none for SQLite.
async fn database(dialect: Dialect) -> Result<(Option<PgServer>, DatabaseConfig), String> {
    match dialect {
        Dialect::Sqlite => Ok((None, DatabaseConfig::default())),
        Dialect::Postgres => {
            gateway_bench::postgres::available()?;
            let server = tokio::task::block_in_place(|| PgServer::start_with(PG_SETTINGS));
            let url = server.create_db().await;
            Ok((Some(server), DatabaseConfig { url: Some(url), ..DatabaseConfig::default() }))
        }
    }
}

/// Tag names `t{i}.v{j}`: devices of 50 tags, as a Modbus poll publishes them.
fn tag_ids(tags: usize) -> Vec<Vec<TagId>> {
    (0..tags.div_ceil(50))
        .map(|d| (0..50.min(tags - d * 50)).filter_map(|t| TagId::new(&format!("t{d}.v{t}")).ok()).collect())
        .collect()
}

/// One poll of a device: its tags' values at `ts`.
fn poll(tags: &[TagId], n: u64, ts: u64) -> Arc<Batch> {
    let frames: Vec<Frame> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = 20.0 + ((n as f64 * 0.1 + i as f64).sin() * 500.0).round() / 100.0;
            Frame::Data(DataFrame::new(t.clone(), Value::F64(v), Quality::GOOD, ts))
        })
        .collect();
    Arc::new(Batch::from(frames))
}

/// Publishes device polls at `rate` values/s (open loop, as the devices
/// would) until `stop`; counts what was published.
fn publisher(
    bus: Bus,
    tags: Arc<Vec<Vec<TagId>>>,
    rate: f64,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // A tick every 2 ms carries the polls due in it.
        let tick = Duration::from_millis(2);
        let per_tick = rate * tick.as_secs_f64() / 50.0;
        let mut due = 0.0;
        let mut next = 0usize;
        let mut n = 0u64;
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while !stop.load(Ordering::Relaxed) {
            interval.tick().await;
            due += per_tick;
            let ts = now_ns();
            while due >= 1.0 {
                due -= 1.0;
                let dev = &tags[next];
                next = (next + 1) % tags.len();
                if next == 0 {
                    n += 1;
                }
                let count = dev.len() as u64;
                if bus.publish(poll(dev, n, ts)).await.is_err() {
                    return;
                }
                published.fetch_add(count, Ordering::Relaxed);
            }
        }
    })
}

async fn write(dialect: Dialect, tags: usize, rate: f64, warmup_s: f64, seconds: f64) -> Result<Outcome, String> {
    let (_pg, db) = database(dialect).await?;
    let key = format!("history.{}.write", dialect.name());
    let history_cfg = HistoryConfig { database: db.url.is_some().then(|| db.clone()), ..HistoryConfig::default() };
    let gw = Gateway::start_with_history(Preset::Default, ApiConfig::default(), &[], history_cfg).await?;
    let history = gw.history.clone().ok_or("history did not start")?;
    let ids = Arc::new(tag_ids(tags));
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let load = publisher(gw.bus.clone(), ids, rate, stop.clone(), published.clone());
    tokio::time::sleep(Duration::from_secs_f64(warmup_s)).await;
    let metrics = history.metrics().clone();
    let written = Arc::new(AtomicU64::new(metrics.values_written.get()));
    let w = written.clone();
    let m = metrics.clone();
    let mirror = tokio::spawn(async move {
        loop {
            w.store(m.values_written.get(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let reset = probe::reset_peak_rss();
    let sampler = Sampler::start(&key, Some((written.clone(), "values written/s", "values/s")));
    let (cpu0, t0) = (probe::cpu_seconds(), Instant::now());
    let (w0, p0) = (metrics.values_written.get(), published.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let secs = t0.elapsed().as_secs_f64();
    let (w1, p1) = (metrics.values_written.get(), published.load(Ordering::Relaxed));
    let cpu = (probe::cpu_seconds() - cpu0) / secs;
    let (_, peak) = probe::rss();
    let series = sampler.finish();
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    mirror.abort();
    let backlog = metrics.backlog_frames.get();
    let (rows, bytes) = history.measure().await.map_err(|e| e.to_string())?;
    gw.stop().await;
    let mut o = Outcome { series, ..Outcome::default() };
    o.put(&format!("{key}.values_per_s"), (w1 - w0) as f64 / secs);
    o.put(&format!("{key}.offered_values_per_s"), (p1 - p0) as f64 / secs);
    o.put(&format!("{key}.backlog_frames_end"), backlog as f64);
    o.put(&format!("{key}.cpu_cores"), cpu);
    if reset {
        o.put(&format!("{key}.peak_rss_mb"), peak as f64 / 1e6);
    }
    o.put(&format!("{key}.tags"), tags as f64);
    if rows > 0 {
        o.put(&format!("history.{}.bytes_per_value", dialect.name()), bytes as f64 / rows as f64);
    }
    if backlog as f64 > rate {
        o.notes.push(format!(
            "{}: the writer fell behind the offered load ({backlog} frames waiting at the end)",
            dialect.name()
        ));
    }
    Ok(o)
}

/// A bus (WAL, default preset) and history on it, without the rest of the gateway.
struct Rig {
    bus: Bus,
    history: History,
    _dir: tempfile::TempDir,
}

async fn rig(history: HistoryConfig, meta: &DatabaseConfig, metrics: Arc<HistoryMetrics>) -> Result<Rig, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let settings = BusSettings { wal_dir: dir.path().join("wal"), ..Preset::Default.settings() };
    let bus = Bus::open(settings, Arc::new(BusMetrics::unregistered())).map_err(|e| format!("bus: {e}"))?;
    let h = History::open(&history, meta, dir.path(), metrics).await.map_err(|e| format!("history: {e}"))?;
    h.start(&bus).await.map_err(|e| format!("history: {e}"))?;
    Ok(Rig { bus, history: h, _dir: dir })
}

/// Writes `hours` of one-second values of `tags` tags ending an hour ago,
/// as fast as history takes them, and makes their rollups.
async fn fill(r: &Rig, tags: usize, hours: i64) -> Result<(i64, i64), String> {
    let ids = tag_ids(tags);
    let end = (now_ns() as i64 - 3600 * S) / (60 * S) * (60 * S);
    let start = end - hours * 3600 * S;
    let mut last = 0;
    for sec in 0..hours * 3600 {
        let ts = (start + sec * S) as u64;
        for dev in &ids {
            last = r.bus.publish(poll(dev, sec as u64, ts)).await.map_err(|e| e.to_string())?.end;
        }
    }
    let h = r.history.clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    while h.written_seq() < last {
        if Instant::now() > deadline {
            return Err("history did not write the data within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Rollups: passes until the whole range is summarised.
    let probe = AggQuery { tags: vec!["t0.v0".into()], from_ns: start, to_ns: end, interval_ns: 3600 * S };
    for _ in 0..10_000 {
        r.history.maintain(now_ns() as i64).await.map_err(|e| e.to_string())?;
        let (_, src) = r.history.aggregate(&probe).await.map_err(|e| e.to_string())?;
        if src.raw_ns == 0 {
            return Ok((start, end));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the rollups were never complete".into())
}

async fn retention(tags: usize, hours: i64, rate: f64) -> Result<Outcome, String> {
    let key = "history.sqlite.retention";
    let day = 86_400 * S;
    let db = DatabaseConfig::default();
    let cfg = HistoryConfig { retention: gateway_store::history::Span::from_secs(86_400), ..HistoryConfig::default() };
    let metrics = Arc::new(HistoryMetrics::unregistered());
    let r = rig(cfg, &db, metrics.clone()).await?;
    let (_, end) = fill(&r, tags, hours).await?;
    let (rows_before, _) = r.history.measure().await.map_err(|e| e.to_string())?;
    // Live readings keep coming (stamped now, an hour after the filled data).
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let load = publisher(r.bus.clone(), Arc::new(tag_ids(tags)), rate, stop.clone(), published.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Maintenance as if a day had passed since the filled data ended, and
    // half an hour: all of it is past the retention, the live data is not.
    let when = end + day + 30 * 60 * S;
    let (w0, p0) = (metrics.values_written.get(), published.load(Ordering::Relaxed));
    let mut steps = Histogram::default();
    let mut deleted = 0u64;
    let t0 = Instant::now();
    loop {
        let t = Instant::now();
        let pass = r.history.maintain(when).await.map_err(|e| e.to_string())?;
        steps.record(t.elapsed().as_nanos() as u64);
        deleted += pass.deleted;
        if pass.deleted == 0 && !pass.more {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            return Err("retention did not finish within 10 minutes".into());
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let (w1, p1) = (metrics.values_written.get(), published.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let (rows_after, _) = r.history.measure().await.map_err(|e| e.to_string())?;
    r.history.close().await;
    let mut o = Outcome::default();
    latency_figures(&mut o, &format!("{key}.step"), &steps);
    o.put(&format!("{key}.rows_expired"), rows_before as f64);
    o.put(&format!("{key}.rows_deleted"), deleted as f64);
    o.put(&format!("{key}.rows_left"), rows_after as f64);
    o.put(&format!("{key}.steps"), steps.count() as f64);
    o.put(&format!("{key}.deleted_rows_per_s"), deleted as f64 / secs);
    o.put(&format!("{key}.seconds"), secs);
    o.put(&format!("{key}.live_written_share"), (w1 - w0) as f64 / (p1 - p0).max(1) as f64);
    o.put(&format!("{key}.live_values_per_s"), (w1 - w0) as f64 / secs);
    Ok(o)
}

fn latency_figures(o: &mut Outcome, key: &str, h: &Histogram) {
    let l = h.latency();
    o.put(&format!("{key}.p50_us"), l.p50_us);
    o.put(&format!("{key}.p99_us"), l.p99_us);
    o.put(&format!("{key}.max_us"), l.max_us);
    o.curves.push(Curve { name: key.to_owned(), points: h.curve() });
}

async fn query(
    dialect: Dialect,
    tags: usize,
    hours: i64,
    raw_queries: usize,
    agg_queries: usize,
) -> Result<Outcome, String> {
    let (_pg, db) = database(dialect).await?;
    let key = format!("history.{}.query", dialect.name());
    let cfg = HistoryConfig { database: db.url.is_some().then(|| db.clone()), ..HistoryConfig::default() };
    let r = rig(cfg, &db, Arc::new(HistoryMetrics::unregistered())).await?;
    let t = Instant::now();
    let (from, to) = fill(&r, tags, hours).await?;
    let fill_s = t.elapsed().as_secs_f64();
    let mut o = Outcome::default();
    let raw = RawQuery { tags: vec!["t0.v0".into()], from_ns: from, to_ns: to, limit: 100_000, after: None };
    let mut h = Histogram::default();
    let mut points = 0;
    for i in 0..raw_queries + 1 {
        let t = Instant::now();
        let page = r.history.raw(&raw).await.map_err(|e| e.to_string())?;
        // The first run warms the caches and is not counted.
        if i > 0 {
            h.record(t.elapsed().as_nanos() as u64);
        }
        points = page.series.iter().map(|s| s.points.len()).sum::<usize>();
    }
    latency_figures(&mut o, &format!("{key}.raw_{hours}h"), &h);
    o.put(&format!("{key}.raw_points"), points as f64);
    let agg = AggQuery { tags: vec!["t0.v0".into()], from_ns: from, to_ns: to, interval_ns: 60 * S };
    let mut h = Histogram::default();
    let mut rows = 0;
    for i in 0..agg_queries + 1 {
        let t = Instant::now();
        let (series, _) = r.history.aggregate(&agg).await.map_err(|e| e.to_string())?;
        if i > 0 {
            h.record(t.elapsed().as_nanos() as u64);
        }
        rows = series[0].buckets.len();
    }
    latency_figures(&mut o, &format!("{key}.avg_1m_{hours}h"), &h);
    o.put(&format!("{key}.avg_rows"), rows as f64);
    o.put(&format!("{key}.fill_values_per_s"), (tags as i64 * hours * 3600) as f64 / fill_s);
    let (rows, bytes) = r.history.measure().await.map_err(|e| e.to_string())?;
    if rows > 0 {
        o.put(&format!("{key}.bytes_per_value"), bytes as f64 / rows as f64);
    }
    r.history.close().await;
    Ok(o)
}

/// The p99 of a histogram metric, from its text exposition (the metric's
/// buckets grow by half each, so this is within half of the truth).
fn metric_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(&format!("{name}_bucket"))) {
        let le = line.split("le=\"").nth(1)?.split('"').next()?;
        let count: f64 = line.rsplit(' ').next()?.parse().ok()?;
        let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
        buckets.push((bound, count));
    }
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let want = total * q;
    let mut lower = (0.0, 0.0);
    for (bound, count) in buckets {
        if count >= want {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            // Linear within the bucket.
            let share = if count > lower.1 { (want - lower.1) / (count - lower.1) } else { 1.0 };
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (bound, count);
    }
    None
}

async fn pool(mode: PoolMode, rate: f64, seconds: f64) -> Result<Outcome, String> {
    let key = match mode {
        PoolMode::Adaptive => "history.pool.adaptive",
        PoolMode::Fixed => "history.pool.fixed",
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(HistoryMetrics::new(&mut registry));
    // The fixed pool keeps its 50 connections open, as the metadata store's does.
    let db = match mode {
        PoolMode::Fixed => DatabaseConfig { max_connections: 50, min_connections: 50, ..DatabaseConfig::default() },
        PoolMode::Adaptive => DatabaseConfig { max_connections: 50, min_connections: 5, ..DatabaseConfig::default() },
    };
    let cfg = HistoryConfig { database: Some(db.clone()), pool: mode, ..HistoryConfig::default() };
    let r = rig(cfg, &DatabaseConfig::default(), metrics.clone()).await?;
    let tags = 100;
    let (from, to) = fill(&r, tags, 2).await?;
    let reset = probe::reset_peak_rss();
    let hist = Arc::new(std::sync::Mutex::new([Histogram::default(), Histogram::default()]));
    let errors = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let pacer = pace(rate, seconds, tx);
    let started = Instant::now();
    let mut sizes: Vec<[f64; 2]> = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_sample = Instant::now();
    while let Some((i, due)) = rx.recv().await {
        let (h, hist, errors) = (r.history.clone(), hist.clone(), errors.clone());
        // A fixed pseudo-random walk over tags and times, the same in both modes.
        let x = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 17;
        let tag = format!("t{}.v{}", (x % tags as u64) / 50, (x % tags as u64) % 50);
        let at = from + ((x >> 8) % ((to - from) / S) as u64) as i64 * S;
        tasks.spawn(async move {
            let (kind, ok) = if i % 10 == 9 {
                let q = AggQuery {
                    tags: vec![tag],
                    from_ns: at.max(from + 3600 * S) - 3600 * S,
                    to_ns: at.max(from + 3600 * S),
                    interval_ns: 60 * S,
                };
                (1, h.aggregate(&q).await.is_ok())
            } else {
                (0, matches!(h.latest(&tag, at).await, Ok(Some(_))))
            };
            if ok {
                hist.lock().unwrap_or_else(|e| e.into_inner())[kind].record(due.elapsed().as_nanos() as u64);
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        while tasks.try_join_next().is_some() {}
        if last_sample.elapsed() >= Duration::from_millis(100) {
            last_sample = Instant::now();
            sizes.push([started.elapsed().as_secs_f64(), r.history.pool_size() as f64]);
        }
    }
    while tasks.join_next().await.is_some() {}
    let _ = pacer.join();
    let (_, peak) = probe::rss();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).map_err(|e| e.to_string())?;
    let mut o = Outcome::default();
    let [latest, agg] = hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut all = latest.clone();
    all.merge(&agg);
    latency_figures(&mut o, &format!("{key}.query"), &all);
    latency_figures(&mut o, &format!("{key}.latest"), &latest);
    latency_figures(&mut o, &format!("{key}.avg_1h"), &agg);
    if let Some(p99) = metric_quantile(&text, "gateway_history_pool_acquire_seconds", 0.99) {
        o.put(&format!("{key}.acquire_p99_us"), p99 * 1e6);
    }
    o.put(&format!("{key}.errors"), errors.load(Ordering::Relaxed) as f64);
    o.put(&format!("{key}.pool_size_max"), sizes.iter().map(|s| s[1]).fold(0.0, f64::max));
    if reset {
        o.put(&format!("{key}.peak_rss_mb"), peak as f64 / 1e6);
    }
    o.series.push(Series {
        name: format!("{key} pool size"),
        unit: "connections".into(),
        x_unit: "s".into(),
        points: sizes,
    });
    r.history.close().await;
    Ok(o)
}

async fn outage(rate: f64, outage_s: f64) -> Result<Outcome, String> {
    gateway_bench::postgres::available()?;
    let mut server = tokio::task::block_in_place(|| PgServer::start_with(PG_SETTINGS));
    let url = server.create_db().await;
    let db = DatabaseConfig { url: Some(url), acquire_timeout_s: 2, ..DatabaseConfig::default() };
    let cfg = HistoryConfig { database: Some(db.clone()), ..HistoryConfig::default() };
    let metrics = Arc::new(HistoryMetrics::unregistered());
    let r = rig(cfg, &db, metrics.clone()).await?;
    // Another durable subscriber: its delivery latency is what "not
    // starving live delivery" means.
    let live = Arc::new(std::sync::Mutex::new((false, Histogram::default())));
    let mut sub = r.bus.subscribe(SubscribeOptions::durable("uplink")).map_err(|e| e.to_string())?;
    let l = live.clone();
    let uplink = tokio::spawn(async move {
        while let Ok(d) = sub.recv().await {
            let now = now_ns();
            if let Some(Frame::Data(f)) = d.batch().frames().last() {
                let mut g = l.lock().unwrap_or_else(|e| e.into_inner());
                if g.0 {
                    g.1.record(now.saturating_sub(f.source_ts_ns));
                }
            }
            let _ = sub.ack(d.end_seq());
        }
    });
    let ids = Arc::new(tag_ids(10_000));
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let load = publisher(r.bus.clone(), ids, rate, stop.clone(), published.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| server.stop());
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(outage_s)).await;
    let backlog_values = (r.bus.head_seq() - r.history.written_seq()) as f64;
    tokio::task::block_in_place(|| server.resume());
    let up = Instant::now();
    let outage = up.duration_since(down).as_secs_f64();
    live.lock().unwrap_or_else(|e| e.into_inner()).0 = true;
    // Caught up: the backlog is back to what one commit interval holds.
    let normal = (rate * 2.0) as u64;
    let deadline = up + Duration::from_secs_f64(outage_s * 20.0 + 120.0);
    while r.bus.head_seq().saturating_sub(r.history.written_seq()) > normal {
        if Instant::now() > deadline {
            return Err(format!("history did not catch up within {:?}", deadline - up));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let catch_up = up.elapsed().as_secs_f64();
    live.lock().unwrap_or_else(|e| e.into_inner()).0 = false;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    uplink.abort();
    let mut o = Outcome::default();
    let key = "history.postgres.outage";
    o.put(&format!("{key}.outage_s"), outage);
    o.put(&format!("{key}.backlog_values"), backlog_values);
    o.put(&format!("{key}.catch_up_s"), catch_up);
    o.put(&format!("{key}.drain_values_per_s"), backlog_values / catch_up + rate);
    o.put(&format!("{key}.catch_up_1h_s"), catch_up * 3600.0 / outage);
    o.put(&format!("{key}.write_errors"), metrics.write_errors.get() as f64);
    let h = live.lock().unwrap_or_else(|e| e.into_inner()).1.clone();
    latency_figures(&mut o, &format!("{key}.live_delivery"), &h);
    r.history.close().await;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_is_read_from_the_buckets_of_the_exposition() {
        let text = "x_bucket{le=\"0.001\"} 50\nx_bucket{le=\"0.002\"} 90\nx_bucket{le=\"0.004\"} 100\n\
                    x_bucket{le=\"+Inf\"} 100\nx_sum 0.1\n";
        assert_eq!(metric_quantile(text, "x", 0.5), Some(0.001));
        let p99 = metric_quantile(text, "x", 0.99).unwrap();
        assert!((p99 - 0.0038).abs() < 1e-9, "{p99}");
        assert_eq!(metric_quantile("", "x", 0.99), None);
    }
}
