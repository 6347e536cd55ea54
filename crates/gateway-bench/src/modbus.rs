//! The Modbus TCP driver end to end, shared by `cargo bench -p gateway-drivers
//! --bench modbus` and `edge-gateway bench`: a farm of in-process
//! `tokio-modbus` servers on loopback (one per device, each device `tags`
//! `f32` tags = two holding registers each, read in one request per poll)
//! polled through the real [`DriverManager`] into a real [`Bus`] (memory
//! persistence) with one subscriber counting the frames. The poll interval
//! sets the offered load: 200 devices × 50 tags every 100 ms is 100,000 points/s.
//!
//! The servers run on their own runtime thread (`modbus-srv`), whose CPU is
//! subtracted to give the gateway side's share; the peak RSS (`VmHWM`) is the
//! whole process's, servers included, so it overstates the gateway's. Run a
//! level in a fresh process ([`crate::child`]) so the peak is its own.
//!
//! Devices are made only from their JSON form ([`DeviceConfig::from_json`])
//! and run only through [`DriverManager`], as the gateway runs them: this
//! module must never reach into the driver's internals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_bus::{Bus, BusMetrics, BusSettings, Persistence, Preset, SubscribeOptions};
use gateway_drivers::{DeviceConfig, DriverManager};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

use crate::procstat;

/// One load level: how many devices, of how many tags, polled how often.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Level {
    /// Bus preset (memory persistence).
    pub preset: Preset,
    /// Simulated devices, one server each.
    pub devices: usize,
    /// `f32` tags per device.
    pub tags: usize,
    /// Poll interval of every device.
    pub poll_ms: u64,
    /// Seconds of warm-up (connections made, first polls done), not measured.
    pub warmup_s: f64,
    /// Seconds measured.
    pub seconds: f64,
}

impl Level {
    /// Points per second offered: devices × tags × polls per second.
    pub fn offered(&self) -> u64 {
        (self.devices * self.tags) as u64 * 1000 / self.poll_ms.max(1)
    }
}

/// One sample of a run, taken every 100 ms.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the measurement began.
    pub t_s: f64,
    /// Points delivered per second over the last interval.
    pub points_per_s: f64,
    /// Resident set size of the process, bytes.
    pub rss_bytes: u64,
    /// CPU of the gateway side over the last interval, cores.
    pub cpu_cores: f64,
}

/// What a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Points delivered to the subscriber per second.
    pub points_per_s: f64,
    /// Share of them with good quality.
    pub good_share: f64,
    /// Polls per second, all devices together.
    pub polls_per_s: f64,
    /// CPU of the whole process (servers included), cores.
    pub cpu_total: f64,
    /// CPU of the gateway side alone (the servers' thread subtracted), cores.
    pub cpu_gateway: f64,
    /// Peak resident memory of the process (servers included), MiB.
    pub peak_rss_mib: f64,
    /// Devices connected at the end.
    pub connected: usize,
    /// Samples every 100 ms during the measurement.
    pub series: Vec<Sample>,
}

/// Name of the servers' runtime threads, whose CPU is not the gateway's.
const SERVER_THREADS: &str = "modbus-srv";

/// A device: holding registers hold `f32` values that change on every read.
struct Sim {
    reads: Arc<AtomicU32>,
}

impl tokio_modbus::server::Service for Sim {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        let r = match req {
            Request::ReadHoldingRegisters(addr, count) => {
                let n = self.reads.fetch_add(1, Ordering::Relaxed);
                let words = (0..count / 2)
                    .flat_map(|i| {
                        let v = (n as f32) * 0.5 + f32::from(addr / 2 + i);
                        let b = v.to_bits();
                        [(b >> 16) as u16, b as u16]
                    })
                    .collect();
                Ok(Response::ReadHoldingRegisters(words))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        std::future::ready(r)
    }
}

async fn serve() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::new(listener);
    tokio::spawn(async move {
        let reads = Arc::new(AtomicU32::new(0));
        let new_service = move |_| Ok(Some(Sim { reads: reads.clone() }));
        let on_connected = |stream, socket_addr| {
            let new_service = new_service.clone();
            async move { accept_tcp_connection(stream, socket_addr, new_service) }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    Ok(addr)
}

/// Runs one level in this process and measures it.
pub fn run(level: &Level) -> std::io::Result<Report> {
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()?;
    let gateway =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("gateway").enable_all().build()?;
    let addrs: Vec<SocketAddr> = servers.block_on(async {
        let mut out = Vec::with_capacity(level.devices);
        for _ in 0..level.devices {
            out.push(serve().await?);
        }
        Ok::<_, std::io::Error>(out)
    })?;
    let cfg = BusSettings { persistence: Persistence::Memory, ..level.preset.settings() };
    let capacity = cfg.capacity();
    let bus = Bus::open(cfg, Arc::new(BusMetrics::unregistered())).map_err(std::io::Error::other)?;
    let frames = Arc::new(AtomicU64::new(0));
    let good = Arc::new(AtomicU64::new(0));
    let mut sub = bus.subscribe(SubscribeOptions::lossy("counter", capacity / 2)).map_err(std::io::Error::other)?;
    let (f, g) = (frames.clone(), good.clone());
    gateway.spawn(async move {
        while let Ok(d) = sub.recv().await {
            for (_, fr) in d.frames() {
                if let Some(df) = fr.as_data() {
                    f.fetch_add(1, Ordering::Relaxed);
                    if df.quality.is_good() {
                        g.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    let manager = Arc::new(DriverManager::new(bus.clone()));
    gateway.block_on(async {
        for (i, addr) in addrs.iter().enumerate() {
            let tags: Vec<_> = (0..level.tags)
                .map(|t| json!({"name": format!("t{t}"), "area": "holding_register", "address": t * 2, "data_type": "f32"}))
                .collect();
            let dev = DeviceConfig::from_json(json!({
                "name": format!("dev{i}"), "driver": "modbus_tcp", "address": addr.to_string(),
                "poll_interval_ms": level.poll_ms, "tags": tags,
            }))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
            manager.apply(dev).await;
        }
        Ok::<_, std::io::Error>(())
    })?;
    std::thread::sleep(Duration::from_secs_f64(level.warmup_s));
    let window = crate::poll_window(Duration::from_millis(level.poll_ms), level.seconds);
    let polls =
        |m: &DriverManager| -> u64 { m.names().iter().filter_map(|n| m.status(n)).map(|s| s.snapshot().polls).sum() };
    let (f0, g0, p0) = (frames.load(Ordering::Relaxed), good.load(Ordering::Relaxed), polls(&manager));
    let (cpu0, srv0) = procstat::thread_cpu_ticks(SERVER_THREADS);
    let start = Instant::now();
    let mut series = Vec::new();
    let (mut last_t, mut last_f, mut last_cpu) = (0.0, f0, cpu0.saturating_sub(srv0));
    while start.elapsed() < window {
        std::thread::sleep(Duration::from_millis(100).min(window.saturating_sub(start.elapsed())));
        let t = start.elapsed().as_secs_f64();
        let fr = frames.load(Ordering::Relaxed);
        let (c, s) = procstat::thread_cpu_ticks(SERVER_THREADS);
        let gw = c.saturating_sub(s);
        let dt: f64 = t - last_t;
        series.push(Sample {
            t_s: t,
            points_per_s: (fr - last_f) as f64 / dt,
            rss_bytes: procstat::read(None).rss,
            cpu_cores: gw.saturating_sub(last_cpu) as f64 / procstat::TICKS_PER_S / dt,
        });
        (last_t, last_f, last_cpu) = (t, fr, gw);
    }
    let secs = start.elapsed().as_secs_f64();
    let (cpu1, srv1) = procstat::thread_cpu_ticks(SERVER_THREADS);
    let (f1, g1, p1) = (frames.load(Ordering::Relaxed), good.load(Ordering::Relaxed), polls(&manager));
    let connected = manager.names().iter().filter_map(|n| manager.status(n)).filter(|s| s.snapshot().connected).count();
    let peak = procstat::read(None).peak_rss;
    let m = manager.clone();
    gateway.block_on(async move { m.stop_all().await });
    let n = (f1 - f0) as f64;
    Ok(Report {
        points_per_s: n / secs,
        good_share: if n > 0.0 { (g1 - g0) as f64 / n } else { 0.0 },
        polls_per_s: (p1 - p0) as f64 / secs,
        cpu_total: cpu1.saturating_sub(cpu0) as f64 / procstat::TICKS_PER_S / secs,
        cpu_gateway: cpu1.saturating_sub(cpu0).saturating_sub(srv1.saturating_sub(srv0)) as f64
            / procstat::TICKS_PER_S
            / secs,
        peak_rss_mib: peak as f64 / (1024.0 * 1024.0),
        connected,
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_farm_is_polled_through_the_driver_manager() {
        let level = Level { preset: Preset::Default, devices: 2, tags: 4, poll_ms: 50, warmup_s: 0.5, seconds: 0.5 };
        assert_eq!(level.offered(), 160);
        let r = run(&level).unwrap();
        assert_eq!(r.connected, 2, "{r:?}");
        assert!(r.points_per_s > 0.0 && r.good_share > 0.9, "{r:?}");
        assert!(!r.series.is_empty(), "{r:?}");
    }
}
