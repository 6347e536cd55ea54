//! The gateway assembled in-process for the scenarios that need all of it
//! (bus with its WAL, SQLite store, latest-value cache, WebSocket hub,
//! simulated devices, the REST API on 127.0.0.1:0), wired as `edge-gateway
//! run` wires it; and the scenarios that use it or its parts alone: memory
//! and CPU per preset under load, store queries, and the WAL's size limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_api::ApiConfig;
use gateway_bench::histogram::Histogram;
use gateway_bus::config::WalOverflow;
use gateway_bus::{Bus, BusMetrics, BusSettings, Preset, SubscribeOptions};
use gateway_drivers::DeviceConfig;
use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value};
use gateway_store::{DatabaseConfig, HistoryConfig, Source, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::probe::{self, Sampler};
use super::{Curve, Outcome, pace};
use crate::config::{Config, GatewaySection};
use crate::run::Running;

/// A running in-process gateway: `edge-gateway run`'s own assembly
/// ([`Running`]) in a temporary data directory, its API on 127.0.0.1:0.
pub struct Gateway {
    /// The bus.
    pub bus: Bus,
    /// History, when started with it.
    pub history: Option<gateway_store::History>,
    /// Where the API listens.
    pub addr: SocketAddr,
    running: Running,
    _dir: tempfile::TempDir,
}

/// `count` simulated devices `{prefix}{i}`, each generating `tags` sine tags
/// `g0..` polled every `poll_ms`.
pub fn sim_devices(prefix: &str, count: usize, tags: u32, poll_ms: u64) -> Result<Vec<DeviceConfig>, String> {
    (0..count)
        .map(|i| {
            DeviceConfig::from_json(json!({
                "name": format!("{prefix}{i}"), "driver": "sim", "poll_interval_ms": poll_ms,
                "generate": {"count": tags, "signal": "sine"},
            }))
            .map_err(|e| e.to_string())
        })
        .collect()
}

impl Gateway {
    /// Starts a gateway with `preset` (WAL persistence) and `devices`, history
    /// off; call inside a multi-thread runtime.
    pub async fn start(preset: Preset, api: ApiConfig, devices: &[DeviceConfig]) -> Result<Gateway, String> {
        // The memory and CPU lines measure the bus, cache, hub and API;
        // history's own cost is measured by the history scenarios.
        let off = HistoryConfig { enabled: false, ..HistoryConfig::default() };
        Self::start_with_history(preset, api, devices, off).await
    }

    /// The same with `alarms` as the `[alarms]` section (history off).
    pub async fn start_with_alarms(
        preset: Preset,
        api: ApiConfig,
        devices: &[DeviceConfig],
        alarms: gateway_alarms::AlarmsConfig,
    ) -> Result<Gateway, String> {
        let off = HistoryConfig { enabled: false, ..HistoryConfig::default() };
        Self::start_full(preset, api, devices, off, alarms).await
    }

    /// The alarm service, when alarms are on.
    pub fn alarm_service(&self) -> Option<&gateway_alarms::AlarmService> {
        self.running.alarms.as_ref().map(|a| a.service())
    }

    /// The same with `history` as the `[history]` section.
    pub async fn start_with_history(
        preset: Preset,
        api: ApiConfig,
        devices: &[DeviceConfig],
        history: HistoryConfig,
    ) -> Result<Gateway, String> {
        Self::start_full(preset, api, devices, history, Default::default()).await
    }

    async fn start_full(
        preset: Preset,
        api: ApiConfig,
        devices: &[DeviceConfig],
        history: HistoryConfig,
        alarms: gateway_alarms::AlarmsConfig,
    ) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let cfg = Config {
            security: Default::default(),
            alarms,
            gateway: GatewaySection { data_dir: dir.path().to_owned(), ..GatewaySection::default() },
            bus: BusSettings { wal_dir: dir.path().join("wal"), ..preset.settings() },
            api: ApiConfig { bind: SocketAddr::from(([127, 0, 0, 1], 0)), ..api },
            database: DatabaseConfig::default(),
            history,
            devices: devices.to_vec(),
            connectors: Vec::new(),
            // The load generator shares this process: its CPU would read as
            // the gateway's and widen the intervals the scenario measures.
            tuning: crate::tuning::TuningConfig { enabled: false, ..Default::default() },
            notes: Vec::new(),
        };
        let running = Running::start(&cfg).await.map_err(|e| format!("{e:#}"))?;
        Ok(Gateway {
            bus: running.bus.clone(),
            history: running.history.clone(),
            addr: running.addr,
            running,
            _dir: dir,
        })
    }

    /// Stops in the order `run` does.
    pub async fn stop(self) {
        if let Err(e) = self.running.stop().await {
            tracing::warn!("stopping the bench gateway: {e:#}");
        }
    }
}

/// Memory and CPU of the whole gateway under a stated load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResourcesSpec {
    /// Bus preset (WAL persistence).
    pub preset: Preset,
    /// Simulated devices.
    pub devices: usize,
    /// Tags per device.
    pub tags: u32,
    /// Poll interval.
    pub poll_ms: u64,
    /// Seconds before measuring.
    pub warmup_s: f64,
    /// Seconds measured.
    pub seconds: f64,
}

impl ResourcesSpec {
    /// Values per second offered.
    pub fn offered(&self) -> f64 {
        self.devices as f64 * f64::from(self.tags) * 1000.0 / self.poll_ms.max(1) as f64
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

/// The whole gateway with simulated devices at the stated rate and a durable
/// subscriber acknowledging everything (standing in for a northbound
/// connector): peak and mean RSS, CPU cores, values per second over time.
pub fn resources(spec: &ResourcesSpec) -> Result<Outcome, String> {
    let rt = runtime()?;
    rt.block_on(async {
        let devices = sim_devices("plc", spec.devices, spec.tags, spec.poll_ms)?;
        let gw = Gateway::start(spec.preset, ApiConfig::default(), &devices).await?;
        let mut uplink = gw.bus.subscribe(SubscribeOptions::durable("uplink")).map_err(|e| e.to_string())?;
        let acked = Arc::new(AtomicU64::new(0));
        let a = acked.clone();
        let consumer = tokio::spawn(async move {
            while let Ok(d) = uplink.recv().await {
                a.fetch_add(d.end_seq() - d.first_seq(), Ordering::Relaxed);
                if uplink.ack(d.end_seq()).is_err() {
                    break;
                }
            }
        });
        tokio::time::sleep(Duration::from_secs_f64(spec.warmup_s)).await;
        // The peak so far is start-up's (and the warm-up's): reported apart.
        let (_, start_peak) = probe::rss();
        let key = format!("resources.{}", spec.preset.name());
        let sampler = Sampler::start(&key, Some((acked.clone(), "values/s", "values/s")));
        if spec.preset == Preset::MemoryOptimized {
            // The gateway has released its code pages once it settled
            // (pages.rs); starting the sampler and the figures here ran
            // code no gateway runs, which would stay until its next
            // release, ten minutes on. They go now, as they would then.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = crate::pages::release_code();
        }
        let reset = probe::reset_peak_rss();
        let (cpu0, n0, t0) = (probe::cpu_seconds(), acked.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(Duration::from_secs_f64(spec.seconds)).await;
        let secs = t0.elapsed().as_secs_f64();
        let (cpu1, n1) = (probe::cpu_seconds(), acked.load(Ordering::Relaxed));
        let (_, peak) = probe::rss();
        let (anon, file) = probe::rss_parts();
        let series = sampler.finish();
        let wal_bytes = gw.bus.wal().map_or(0, |w| w.stats().disk_bytes);
        consumer.abort();
        gw.stop().await;
        let mut o = Outcome::default();
        let mean_rss = series.first().map_or(0.0, |s| probe::mean_after(s, 0.0));
        if reset {
            o.put(&format!("{key}.peak_rss_mb"), peak as f64 / 1e6);
            o.put(&format!("{key}.start_peak_rss_mb"), start_peak as f64 / 1e6);
        } else {
            o.notes.push("the kernel refused to reset the peak RSS; only the mean is reported".into());
        }
        o.put(&format!("{key}.mean_rss_mb"), mean_rss);
        o.put(&format!("{key}.rss_anon_mb"), anon as f64 / 1e6);
        o.put(&format!("{key}.rss_file_mb"), file as f64 / 1e6);
        o.put(&format!("{key}.cpu_cores"), (cpu1 - cpu0) / secs);
        o.put(&format!("{key}.values_per_s"), (n1 - n0) as f64 / secs);
        o.put(&format!("{key}.offered_values_per_s"), spec.offered());
        o.put(&format!("{key}.wal_disk_mb"), wal_bytes as f64 / 1e6);
        o.series = series;
        Ok(o)
    })
}

/// Store queries under load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DbSpec {
    /// Devices stored (20 tags each).
    pub devices: usize,
    /// `get_device` calls per second (open loop).
    pub rate: f64,
    /// Seconds before measuring.
    pub warmup_s: f64,
    /// Seconds measured.
    pub seconds: f64,
}

/// SQLite store (the default, pool of 50) in a temporary directory: open
/// loop `get_device` at the stated rate, with connection acquisitions (1 in
/// 5 calls) and full device listings (10/s) mixed in; every latency from
/// the moment the call was due.
pub fn database(spec: &DbSpec) -> Result<Outcome, String> {
    let rt = runtime()?;
    rt.block_on(async {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let t = Instant::now();
        let store = Store::open(&DatabaseConfig::default(), dir.path()).await.map_err(|e| format!("store: {e}"))?;
        let open_ms = t.elapsed().as_secs_f64() * 1e3;
        for i in 0..spec.devices {
            let tags: Vec<_> = (0..20).map(|t| json!({"name": format!("t{t}"), "signal": "sine"})).collect();
            let dev = DeviceConfig::from_json(json!({"name": format!("dev{i}"), "driver": "sim", "tags": tags}))
                .map_err(|e| e.to_string())?;
            store
                .create_device(&gateway_api::devices::to_record(&dev, Source::Api))
                .await
                .map_err(|e| format!("create_device: {e}"))?;
        }
        let hists: Arc<[std::sync::Mutex<Histogram>; 3]> = Arc::new(Default::default());
        let measuring = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let total = spec.warmup_s + spec.seconds;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
        let pacer = pace(spec.rate, total, tx);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        while let Some((i, due)) = rx.recv().await {
            if !measuring.load(Ordering::Relaxed) && due.duration_since(start).as_secs_f64() >= spec.warmup_s {
                measuring.store(true, Ordering::Relaxed);
            }
            let (store, hists, errors, record) =
                (store.clone(), hists.clone(), errors.clone(), measuring.load(Ordering::Relaxed));
            let n = spec.devices.max(1) as u64;
            let every = (spec.rate / 10.0).max(1.0) as u64;
            tasks.spawn(async move {
                let (kind, ok) = if i % every == every - 1 {
                    (2, store.list_devices().await.is_ok())
                } else if i % 5 == 0 {
                    (1, store.pool().acquire().await.is_ok())
                } else {
                    (0, matches!(store.get_device(&format!("dev{}", i % n)).await, Ok(Some(_))))
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                } else if record {
                    hists[kind].lock().unwrap_or_else(|e| e.into_inner()).record(due.elapsed().as_nanos() as u64);
                }
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        let _ = pacer.join();
        store.close().await;
        let mut o = Outcome::default();
        o.put("db.open_ms", open_ms);
        o.put("db.errors", errors.load(Ordering::Relaxed) as f64);
        for (kind, name) in [(0, "get_device"), (1, "acquire"), (2, "list_devices")] {
            let h = hists[kind].lock().unwrap_or_else(|e| e.into_inner()).clone();
            let l = h.latency();
            o.put(&format!("db.{name}.p50_us"), l.p50_us);
            o.put(&format!("db.{name}.p99_us"), l.p99_us);
            o.put(&format!("db.{name}.p999_us"), l.p999_us);
            o.put(&format!("db.{name}.max_us"), l.max_us);
            o.curves.push(Curve { name: format!("db.{name}"), points: h.curve() });
        }
        Ok(o)
    })
}

/// The WAL's size limit and its cost per frame.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StorageSpec {
    /// Cap for the enforcement test, bytes.
    pub cap_bytes: u64,
    /// Bytes to write against it (a multiple of the cap).
    pub write_bytes: u64,
}

fn device_batch(tags: &[TagId], device: usize, n: u64) -> Arc<Batch> {
    let ts = gateway_model::now_ns();
    let frames: Vec<Frame> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = 20.0 + ((n as f64 + i as f64) * 0.37 + device as f64).sin() * 5.0;
            Frame::Data(DataFrame::new(t.clone(), Value::F64((v * 100.0).round() / 100.0), Quality::GOOD, ts))
        })
        .collect();
    Arc::new(Batch::from(frames))
}

/// Writes batches like a Modbus poll's (50 `f64` tags of one device) through
/// the bus into a WAL capped at `cap_bytes` with `drop_oldest` and a durable
/// subscriber that never acknowledges (so nothing is released early), and
/// watches the files' size: the peak over the cap, the frames dropped, and
/// the bytes each frame takes on disk. Also reports each preset's configured
/// cap and the outage it bridges at 100,000 values/s.
pub fn storage(spec: &StorageSpec) -> Result<Outcome, String> {
    let rt = runtime()?;
    rt.block_on(async {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cfg = BusSettings {
            wal_dir: dir.path().join("wal"),
            wal_max_bytes: spec.cap_bytes,
            wal_overflow: WalOverflow::DropOldest,
            ..Preset::Default.settings()
        };
        let bus = Bus::open(cfg, Arc::new(BusMetrics::unregistered())).map_err(|e| format!("bus: {e}"))?;
        let _holder = bus.subscribe(SubscribeOptions::durable("never-acks")).map_err(|e| e.to_string())?;
        let wal = bus.wal().cloned().ok_or("the bus has no WAL")?;
        let devices: Vec<Vec<TagId>> =
            (0..200).map(|d| (0..50).filter_map(|t| TagId::new(&format!("plc{d}.t{t}")).ok()).collect()).collect();
        let (mut peak, mut n, mut frames) = (0u64, 0u64, 0u64);
        let mut first_fill: Option<(u64, u64)> = None;
        let mut last_end = 0;
        while wal.stats().stored_bytes < spec.write_bytes {
            let d = (n % devices.len() as u64) as usize;
            let b = device_batch(&devices[d], d, n);
            frames += b.len() as u64;
            let range = bus.publish(b).await.map_err(|e| format!("publish: {e}"))?;
            last_end = range.end;
            n += 1;
            if n % 64 == 0 {
                let s = wal.stats();
                peak = peak.max(s.disk_bytes);
                if first_fill.is_none() && s.stored_bytes >= spec.cap_bytes / 2 {
                    first_fill = Some((s.stored_bytes, frames));
                }
            }
        }
        bus.wait_durable(last_end).await.map_err(|e| e.to_string())?;
        let s = wal.stats();
        let _ = bus.close().await;
        peak = peak.max(s.disk_bytes);
        let (stored, counted) = first_fill.unwrap_or((s.stored_bytes, frames));
        let per_frame = stored as f64 / counted.max(1) as f64;
        let mut o = Outcome::default();
        o.put("storage.cap_test_mb", spec.cap_bytes as f64 / 1e6);
        o.put("storage.written_mb", s.stored_bytes as f64 / 1e6);
        o.put("storage.peak_over_cap", peak as f64 / spec.cap_bytes as f64);
        o.put("storage.dropped_frames", s.dropped_seqs as f64);
        o.put("storage.bytes_per_frame", per_frame);
        for p in Preset::ALL {
            let cap = p.settings().wal_max_bytes;
            o.put(&format!("storage.{}.wal_max_gb", p.name()), cap as f64 / 1e9);
            o.put(&format!("storage.{}.outage_h_at_100k", p.name()), cap as f64 / (per_frame * 100_000.0) / 3600.0);
        }
        if s.dropped_seqs == 0 {
            o.notes.push("the cap was never reached: write more than the cap to test it".into());
        }
        Ok(o)
    })
}
