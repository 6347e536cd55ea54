//! The OPC UA driver end to end, for `edge-gateway bench`: `servers`
//! `asyncua` servers (the Python server of the driver's tests, from PyPI),
//! each changing `nodes` Doubles every `tick_ms`, one gateway device per
//! server subscribed to all of them through the real [`DriverManager`] into
//! a real [`Bus`] (memory persistence), one subscriber counting the frames.
//!
//! The servers are processes of their own, so this process's CPU is the
//! gateway side alone, and the servers' CPU is measured apart (from
//! `/proc/PID/stat`). A Python server is slow: when one spends about a core,
//! it, not the gateway, sets the values/s, and the report says so. The
//! figure that speaks for the gateway is values per second per core it
//! spent (`values_per_core`).
//!
//! Devices are made only from their JSON form and run only through
//! [`DriverManager`], as the gateway runs them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_bus::{Bus, BusMetrics, BusSettings, Persistence, Preset, SubscribeOptions};
use gateway_drivers::{DeviceConfig, DriverManager};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::peer::PythonPeer;
use crate::{free_port, procstat};

/// The server script, carried in the binary so `edge-gateway bench` runs anywhere.
const SERVER_PY: &str = include_str!("../../gateway-drivers/tests/peers/opcua_server.py");

/// One load level.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpcUaScenario {
    /// `asyncua` server processes, one gateway device each.
    pub servers: usize,
    /// Doubles per server, each changed every `tick_ms`.
    pub nodes: usize,
    /// How often the servers change every node.
    pub tick_ms: u64,
    /// The devices' publishing (and sampling) interval.
    pub publishing_ms: u64,
    /// Seconds of warm-up (connections and subscriptions made), not measured.
    pub warmup_s: f64,
    /// Seconds measured.
    pub seconds: f64,
}

impl OpcUaScenario {
    /// Values per second the servers are asked to change.
    pub fn offered(&self) -> u64 {
        (self.servers * self.nodes) as u64 * 1000 / self.tick_ms.max(1)
    }
}

/// One sample of a run, taken every 250 ms.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the measurement began.
    pub t_s: f64,
    /// Values delivered per second over the last interval.
    pub values_per_s: f64,
    /// Resident set size of the gateway side, bytes.
    pub rss_bytes: u64,
    /// CPU of the gateway side over the last interval, cores.
    pub cpu_cores: f64,
    /// CPU of all servers over the last interval, cores.
    pub server_cpu_cores: f64,
}

/// What a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Values delivered to the subscriber per second.
    pub values_per_s: f64,
    /// Share of them with good quality.
    pub good_share: f64,
    /// CPU of the gateway side (this process), cores.
    pub cpu_gateway: f64,
    /// CPU of every server together, cores.
    pub cpu_servers: f64,
    /// The busiest server's CPU, cores (near 1: that server is the limit).
    pub cpu_busiest_server: f64,
    /// Peak resident memory of the gateway side, MiB.
    pub peak_rss_mib: f64,
    /// Devices connected at the end.
    pub connected: usize,
    /// Samples during the measurement.
    pub series: Vec<Sample>,
}

/// Whether the scenario can run here: the test venv's Python with asyncua.
pub fn available() -> Result<(), String> {
    crate::peer::find_python("asyncua").map(|_| ())
}

fn cpu_of(pids: &[u32]) -> Vec<u64> {
    pids.iter().map(|p| procstat::read(Some(*p)).cpu_ticks).collect()
}

/// Runs one level in this process and measures it.
pub fn run(s: &OpcUaScenario) -> std::io::Result<Report> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("opcua_server.py");
    std::fs::write(&script, SERVER_PY)?;
    let python = crate::peer::python("asyncua");
    let mut servers = Vec::with_capacity(s.servers);
    for _ in 0..s.servers {
        let port = free_port();
        let args = [
            "--port".to_owned(),
            port.to_string(),
            "--load".into(),
            s.nodes.to_string(),
            "--tick-ms".into(),
            s.tick_ms.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = PythonPeer::spawn(&python, &script, &args);
        let ready: serde_json::Value = serde_json::from_str(&p.line("READY ", Duration::from_secs(60)))
            .map_err(|e| std::io::Error::other(format!("the server's READY line: {e}")))?;
        servers.push((p, port, ready["ns"].as_u64().unwrap_or(2)));
    }
    let pids: Vec<u32> = servers.iter().map(|(p, _, _)| p.pid()).collect();
    let gateway =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("gateway").enable_all().build()?;
    let cfg = BusSettings { persistence: Persistence::Memory, ..Preset::Default.settings() };
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
    let manager = Arc::new(DriverManager::new(bus.clone()).with_data_dir(dir.path()));
    gateway.block_on(async {
        for (i, (_, port, ns)) in servers.iter().enumerate() {
            let tags: Vec<_> = (0..s.nodes)
                .map(|n| json!({"name": format!("v{n}"), "node_id": format!("ns={ns};s=Load.v{n}")}))
                .collect();
            let dev = DeviceConfig::from_json(json!({
                "name": format!("ua{i}"), "driver": "opcua", "endpoint": format!("opc.tcp://127.0.0.1:{port}/test"),
                "publishing_interval_ms": s.publishing_ms, "sampling_interval_ms": s.tick_ms, "timeout_ms": 10_000,
                "tags": tags,
            }))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
            manager.apply(dev).await;
        }
        Ok::<_, std::io::Error>(())
    })?;
    let connected =
        |m: &DriverManager| m.names().iter().filter_map(|n| m.status(n)).filter(|st| st.snapshot().connected).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected(&manager) < s.servers && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs_f64(s.warmup_s));
    procstat::reset_peak_rss();
    let (f0, g0, cpu0, srv0) =
        (frames.load(Ordering::Relaxed), good.load(Ordering::Relaxed), procstat::read(None).cpu_ticks, cpu_of(&pids));
    let start = Instant::now();
    let mut series = Vec::new();
    let (mut last_t, mut last_f, mut last_cpu, mut last_srv) = (0.0, f0, cpu0, srv0.iter().sum::<u64>());
    while start.elapsed().as_secs_f64() < s.seconds {
        std::thread::sleep(Duration::from_millis(250));
        let t = start.elapsed().as_secs_f64();
        let (fr, cpu, srv) =
            (frames.load(Ordering::Relaxed), procstat::read(None).cpu_ticks, cpu_of(&pids).iter().sum::<u64>());
        let dt = t - last_t;
        series.push(Sample {
            t_s: t,
            values_per_s: (fr - last_f) as f64 / dt,
            rss_bytes: procstat::read(None).rss,
            cpu_cores: cpu.saturating_sub(last_cpu) as f64 / procstat::TICKS_PER_S / dt,
            server_cpu_cores: srv.saturating_sub(last_srv) as f64 / procstat::TICKS_PER_S / dt,
        });
        (last_t, last_f, last_cpu, last_srv) = (t, fr, cpu, srv);
    }
    let secs = start.elapsed().as_secs_f64();
    let (f1, g1, cpu1, srv1) =
        (frames.load(Ordering::Relaxed), good.load(Ordering::Relaxed), procstat::read(None).cpu_ticks, cpu_of(&pids));
    let at_end = connected(&manager);
    let peak = procstat::read(None).peak_rss;
    let m = manager.clone();
    gateway.block_on(async move { m.stop_all().await });
    drop(servers);
    let per_server: Vec<f64> =
        srv1.iter().zip(&srv0).map(|(b, a)| b.saturating_sub(*a) as f64 / procstat::TICKS_PER_S / secs).collect();
    let n = (f1 - f0) as f64;
    Ok(Report {
        values_per_s: n / secs,
        good_share: if n > 0.0 { (g1 - g0) as f64 / n } else { 0.0 },
        cpu_gateway: cpu1.saturating_sub(cpu0) as f64 / procstat::TICKS_PER_S / secs,
        cpu_servers: per_server.iter().sum(),
        cpu_busiest_server: per_server.iter().copied().fold(0.0, f64::max),
        peak_rss_mib: peak as f64 / (1024.0 * 1024.0),
        connected: at_end,
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_subscription_load_is_delivered_through_the_driver_manager() {
        let s = OpcUaScenario { servers: 1, nodes: 20, tick_ms: 100, publishing_ms: 100, warmup_s: 1.0, seconds: 1.0 };
        assert_eq!(s.offered(), 200);
        let r = run(&s).unwrap();
        assert_eq!(r.connected, 1, "{r:?}");
        assert!(r.values_per_s > 50.0 && r.good_share > 0.9, "{r:?}");
        assert!(r.cpu_servers > 0.0, "{r:?}");
    }
}
