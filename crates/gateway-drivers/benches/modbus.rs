//! End-to-end benchmark of the Modbus TCP driver: 200 in-process
//! `tokio-modbus` servers on loopback, 200 devices of 50 `f32` tags (100
//! holding registers, one read per poll) polled through the real
//! [`DriverManager`] into a real [`Bus`] (memory persistence) with one
//! subscriber counting the frames. The poll interval sets the offered load:
//! 1000, 200, 100 and 10 ms for 10k, 50k, 100k and 1M points/s (the last
//! to show the headroom).
//!
//! Each level runs in a fresh child process (so its peak RSS is its own)
//! and reports points/s delivered to the subscriber, the share of them that
//! were good, CPU seconds per second of the whole process and of the gateway
//! side alone (the servers run on their own runtime thread, `modbus-srv`,
//! whose CPU is subtracted), and the process's peak RSS (`VmHWM`, servers
//! included).
//!
//! `cargo bench -p gateway-drivers --bench modbus` (seconds per level:
//! `MODBUS_BENCH_SECONDS`, default 5).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_bus::{Bus, BusCfg, BusMetrics, Persistence, Preset, SubscribeOptions};
use gateway_drivers::{DeviceConfig, DriverManager};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

const CHILD: &str = "--modbus-bench-child";
const DEVICES: usize = 200;
const TAGS: usize = 50;

/// One run.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Level {
    preset: Preset,
    poll_ms: u64,
    seconds: u64,
}

impl Level {
    fn offered(&self) -> u64 {
        (DEVICES * TAGS) as u64 * 1000 / self.poll_ms
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Report {
    points_per_s: f64,
    good_share: f64,
    polls_per_s: f64,
    cpu_total: f64,
    cpu_gateway: f64,
    peak_rss_mib: f64,
    connected: usize,
}

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

async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
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
    addr
}

/// CPU ticks (1/100 s) of the process, and of its threads named `prefix*`.
fn cpu_ticks(prefix: &str) -> (u64, u64) {
    fn ticks(stat: &str) -> (String, u64) {
        let name = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map_or("", |(n, _)| n).to_owned();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        // After the name: state, ppid, ..., utime (field 14), stime (field 15).
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        let (u, s) = (num(11), num(12));
        (name, u + s)
    }
    let total = ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default()).1;
    let mut matched = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            let (name, n) = ticks(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default());
            if name.starts_with(prefix) {
                matched += n;
            }
        }
    }
    (total, matched)
}

fn child(level: &Level) -> Report {
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("modbus-srv")
        .enable_all()
        .build()
        .expect("rt");
    let gateway = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gateway")
        .enable_all()
        .build()
        .expect("rt");
    let addrs: Vec<SocketAddr> = servers.block_on(async { futures_join(DEVICES).await });
    let cfg = BusCfg { persistence: Persistence::Memory, ..level.preset.cfg() };
    let capacity = cfg.capacity();
    let bus = Bus::open(cfg, Arc::new(BusMetrics::unregistered())).expect("bus");
    let frames = Arc::new(AtomicU64::new(0));
    let good = Arc::new(AtomicU64::new(0));
    let mut sub = bus.subscribe(SubscribeOptions::lossy("counter", capacity / 2)).expect("subscribe");
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
            let tags: Vec<_> = (0..TAGS)
                .map(|t| json!({"name": format!("t{t}"), "area": "holding_register", "address": t * 2, "data_type": "f32"}))
                .collect();
            let dev = DeviceConfig::from_json(json!({
                "name": format!("dev{i}"), "driver": "modbus_tcp", "address": addr.to_string(),
                "poll_interval_ms": level.poll_ms, "tags": tags,
            }))
            .expect("device");
            manager.apply(dev).await;
        }
    });
    // Warm up: connections made, first polls done.
    std::thread::sleep(Duration::from_secs(2));
    let polls =
        |m: &DriverManager| -> u64 { m.names().iter().filter_map(|n| m.status(n)).map(|s| s.snapshot().polls).sum() };
    let (f0, g0, p0) = (frames.load(Ordering::Relaxed), good.load(Ordering::Relaxed), polls(&manager));
    let (cpu0, srv0) = cpu_ticks("modbus-srv");
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(level.seconds));
    let secs = start.elapsed().as_secs_f64();
    let (cpu1, srv1) = cpu_ticks("modbus-srv");
    let (f1, g1, p1) = (frames.load(Ordering::Relaxed), good.load(Ordering::Relaxed), polls(&manager));
    let connected = manager.names().iter().filter_map(|n| manager.status(n)).filter(|s| s.snapshot().connected).count();
    let (_, peak) = gateway_bus::loadtest::rss();
    let m = manager.clone();
    gateway.block_on(async move { m.stop_all().await });
    let n = (f1 - f0) as f64;
    Report {
        points_per_s: n / secs,
        good_share: if n > 0.0 { (g1 - g0) as f64 / n } else { 0.0 },
        polls_per_s: (p1 - p0) as f64 / secs,
        cpu_total: (cpu1 - cpu0) as f64 / 100.0 / secs,
        cpu_gateway: ((cpu1 - cpu0) - (srv1 - srv0)) as f64 / 100.0 / secs,
        peak_rss_mib: peak as f64 / (1024.0 * 1024.0),
        connected,
    }
}

async fn futures_join(n: usize) -> Vec<SocketAddr> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(serve().await);
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == CHILD) {
        let level: Level = serde_json::from_str(args.get(i + 1).map_or("", String::as_str)).expect("level JSON");
        println!("{}", serde_json::to_string(&child(&level)).expect("report JSON"));
        return;
    }
    let seconds = std::env::var("MODBUS_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let exe = std::env::current_exe().expect("current exe");
    println!(
        "## Modbus TCP driver, end to end ({DEVICES} devices × {TAGS} f32 tags, in-process tokio-modbus servers)\n"
    );
    println!(
        "| bus preset | offered points/s | poll ms | delivered points/s | good | polls/s | CPU (process, cores) | CPU (gateway side, cores) | peak RSS MiB (process) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for preset in [Preset::Default, Preset::MemoryOptimized] {
        for poll_ms in [1000, 200, 100, 10] {
            let level = Level { preset, poll_ms, seconds };
            let out = std::process::Command::new(&exe)
                .arg(CHILD)
                .arg(serde_json::to_string(&level).expect("json"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("run child");
            let text = String::from_utf8_lossy(&out.stdout);
            let Some(r) = text.lines().rev().find_map(|l| serde_json::from_str::<Report>(l).ok()) else {
                eprintln!("level {level:?} failed: {}", out.status);
                continue;
            };
            println!(
                "| {} | {} | {} | {:.0} | {:.1}% | {:.0} | {:.2} | {:.2} | {:.1} |",
                preset.name(),
                level.offered(),
                poll_ms,
                r.points_per_s,
                r.good_share * 100.0,
                r.polls_per_s,
                r.cpu_total,
                r.cpu_gateway,
                r.peak_rss_mib,
            );
            if r.connected != DEVICES {
                eprintln!("note: only {} of {DEVICES} devices connected at the end", r.connected);
            }
        }
    }
}
