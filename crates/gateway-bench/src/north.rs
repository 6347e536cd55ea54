//! The plant-to-broker job, end to end, as a plant runs it: Modbus TCP
//! servers in a process of their own, the real `edge-gateway` binary as a
//! process of its own (pinned to one core where `taskset` exists), a real
//! mosquitto, and a subscriber that counts what arrives and how old it is.
//!
//! Each server answers a read of its holding registers with `tags - 1` `f32`
//! values (ABCD) that change on every read and, in the four registers after
//! them, the server's clock in microseconds since the Unix epoch at the moment
//! it answered (a `u64` tag, `ts_us`). The subscriber, on the same machine and
//! clock, takes the age of every poll's data as its arrival time minus
//! `ts_us`: from the device answering to the value reaching the broker's
//! subscriber, everything the gateway adds (driver, bus, WAL, encoding, the
//! connector's window) is inside it.
//!
//! It must never measure in the gateway's process: the gateway is started
//! from its own binary with a generated configuration, and observed only from
//! outside (`/proc/PID`, the broker, its API's health check).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway_connectors::sparkplug;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

use crate::child;
use crate::histogram::Histogram;
use crate::mosquitto::{self, Mosquitto};

/// The flag of the Modbus server farm's child process.
pub const FARM_FLAG: &str = "--north-modbus-farm";

/// The name of the tag holding the server's answer time.
pub const TS_TAG: &str = "ts_us";

/// One run of the job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NorthSpec {
    /// The MQTT connector's `format`: `json`, `json_batch` or `sparkplug_b`.
    pub format: String,
    /// Modbus servers, one device each.
    pub devices: usize,
    /// Values per device and poll (`tags - 1` `f32` values and the time).
    pub tags: usize,
    /// Poll interval of every device, milliseconds.
    pub poll_ms: u64,
    /// The bus preset (`default`, `memory_optimized`, ...).
    pub preset: String,
    /// Seconds after start before measuring (connections made, first polls done).
    pub warmup_s: f64,
    /// Seconds measured.
    pub seconds: f64,
    /// Pin the gateway to this CPU with `taskset`, where it exists.
    pub pin_cpu: Option<usize>,
    /// Record history too (on by default in the gateway; off for the job
    /// the peers are compared on, which has no historian).
    #[serde(default)]
    pub history: bool,
    /// Busy processes (`sh` spinning) pinned to `pin_cpu` beside the
    /// gateway, started before it: CPU contention on its core.
    #[serde(default)]
    pub hogs: usize,
    /// TOML appended to the gateway's configuration (`[tuning]` for instance).
    #[serde(default)]
    pub extra_config: String,
}

impl NorthSpec {
    /// Values per second the devices offer.
    pub fn offered(&self) -> f64 {
        (self.devices * self.tags) as f64 * 1000.0 / self.poll_ms.max(1) as f64
    }
}

/// What one run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NorthReport {
    /// Values per second the devices offered.
    pub offered_values_per_s: f64,
    /// Values per second the subscriber received during the measurement.
    pub delivered_values_per_s: f64,
    /// Delivered over offered.
    pub delivered_fraction: f64,
    /// The gateway process's CPU during the measurement, in cores.
    pub gateway_cpu_cores: f64,
    /// The gateway's resident memory at the end, MB (10^6 bytes).
    pub gateway_rss_mb: f64,
    /// The gateway's peak resident memory (`VmHWM`) during the measurement,
    /// MB; its whole life's where the kernel refuses to reset the peak.
    pub gateway_peak_rss_mb: f64,
    /// The peak before the measurement: start-up (a first start hashes the
    /// new administrator's password in 19 MiB) and warm-up.
    pub gateway_start_peak_rss_mb: f64,
    /// Data age, from the server's answer to the subscriber, milliseconds.
    pub age_p50_ms: f64,
    /// 99th percentile of the data age.
    pub age_p99_ms: f64,
    /// 99.9th percentile of the data age.
    pub age_p999_ms: f64,
    /// Polls whose age was measured.
    pub age_samples: u64,
    /// Whether the gateway ran pinned to one CPU.
    pub pinned: bool,
    /// The self-tuning level and the intervals in force at the end
    /// (`gateway_tuning_level`, and `_wal_flush_seconds`, `_batch_linger_seconds` in ms).
    #[serde(default)]
    pub tuning: Option<[f64; 3]>,
}

/// The farm's job: the ports to serve on and the values per read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FarmSpec {
    /// One server per port, on 127.0.0.1; 0: a port the system picks (the
    /// farm's first line on stdout lists the ports it listens on).
    pub ports: Vec<u16>,
    /// Values per device (the last is the answer time).
    pub tags: usize,
}

/// The farm's first line on stdout, once every server listens.
#[derive(Debug, Serialize, Deserialize)]
struct FarmListening {
    ports: Vec<u16>,
}

/// How long readings of the window may still arrive after it.
const LATE_GRACE: Duration = Duration::from_secs(1);

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A device: `f32` values that change on every read, then the answer time.
struct Device {
    reads: Arc<AtomicU64>,
    floats: u16,
}

impl tokio_modbus::server::Service for Device {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        let r = match req {
            Request::ReadHoldingRegisters(addr, count) => {
                let n = self.reads.fetch_add(1, Ordering::Relaxed);
                let ts = now_us();
                let words = (addr..addr.saturating_add(count))
                    .map(|reg| {
                        if reg < self.floats * 2 {
                            let v = (n as f32) * 0.25 + f32::from(reg / 2);
                            let b = v.to_bits();
                            if reg % 2 == 0 { (b >> 16) as u16 } else { b as u16 }
                        } else {
                            // The answer time, big-endian over four registers.
                            let k = u32::from(reg - self.floats * 2).min(3);
                            (ts >> (48 - 16 * k)) as u16
                        }
                    })
                    .collect();
                Ok(Response::ReadHoldingRegisters(words))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        std::future::ready(r)
    }
}

/// In the farm's process: serves until its standard input closes (the
/// parent is done, or died), then reports the reads it answered.
pub fn farm_entry() -> Option<ExitCode> {
    child::entry(FARM_FLAG, |spec: FarmSpec| -> Result<u64, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("modbus-farm")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let reads = Arc::new(AtomicU64::new(0));
        let floats = u16::try_from(spec.tags.saturating_sub(1)).map_err(|e| e.to_string())?;
        rt.block_on(async {
            // Port 0: bound here, on a port the system picks, and then told.
            // A port picked by the parent and bound later could be taken
            // meanwhile (one bench run in a few dozen timed out waiting).
            let mut ports = Vec::with_capacity(spec.ports.len());
            for &port in &spec.ports {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
                ports.push(listener.local_addr().map_err(|e| e.to_string())?.port());
                let server = Server::new(listener);
                let reads = reads.clone();
                tokio::spawn(async move {
                    let new_service = move |_| Ok(Some(Device { reads: reads.clone(), floats }));
                    let on_connected = |stream, socket_addr| {
                        let new_service = new_service.clone();
                        async move { accept_tcp_connection(stream, socket_addr, new_service) }
                    };
                    let _ = server.serve(&on_connected, |_| {}).await;
                });
            }
            println!("{}", serde_json::to_string(&FarmListening { ports }).map_err(|e| e.to_string())?);
            std::io::Write::flush(&mut std::io::stdout()).map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        })?;
        // Block until the parent closes our stdin.
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        Ok(reads.load(Ordering::Relaxed))
    })
}

/// The ports the farm says it listens on, within `within`; if it exits
/// first, why (its last stderr line). Its stderr is drained for as long as
/// it runs, so it never blocks on a full pipe.
fn farm_ports(
    out: Option<std::process::ChildStdout>,
    err: Option<std::process::ChildStderr>,
    within: Duration,
) -> Result<Vec<u16>, String> {
    use std::io::BufRead;
    let out = out.ok_or("the Modbus servers' stdout is not piped")?;
    let last_err = Arc::new(Mutex::new(String::new()));
    if let Some(err) = err {
        let last = last_err.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if !line.trim().is_empty() {
                    *last.lock().unwrap_or_else(|e| e.into_inner()) = line;
                }
            }
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(within).map_err(|_| format!("the Modbus servers did not listen within {within:?}"))?;
    serde_json::from_str::<FarmListening>(&line).map(|l| l.ports).map_err(|_| {
        // Its stderr ends when it does; give the drain a moment to finish.
        std::thread::sleep(Duration::from_millis(200));
        let said = last_err.lock().unwrap_or_else(|e| e.into_inner()).clone();
        format!(
            "the Modbus servers exited before listening: {}",
            if said.is_empty() { "nothing on stderr" } else { &said }
        )
    })
}

/// Whether the job can run here: `Err` says why not.
pub fn available() -> Result<(), String> {
    mosquitto::binary().map(|_| ())
}

fn config(spec: &NorthSpec, data: &Path, api_port: u16, broker: &str, ports: &[u16]) -> String {
    let mut c = format!(
        "[gateway]\ndata_dir = \"{}\"\nlog_level = \"warn\"\n\n[bus]\npreset = \"{}\"\n\n[api]\nbind = \"127.0.0.1:{api_port}\"\n\n\
         [history]\nenabled = {}\n\n",
        data.display(),
        spec.preset,
        spec.history
    );
    for (i, port) in ports.iter().enumerate() {
        c.push_str(&format!(
            "[[devices]]\nname = \"dev{i}\"\ndriver = \"modbus_tcp\"\naddress = \"127.0.0.1:{port}\"\npoll_interval_ms = {}\n",
            spec.poll_ms
        ));
        for t in 0..spec.tags.saturating_sub(1) {
            c.push_str(&format!(
                "[[devices.tags]]\nname = \"v{t}\"\narea = \"holding_register\"\naddress = {}\ndata_type = \"f32\"\n",
                t * 2
            ));
        }
        c.push_str(&format!(
            "[[devices.tags]]\nname = \"{TS_TAG}\"\narea = \"holding_register\"\naddress = {}\ndata_type = \"u64\"\n\n",
            spec.tags.saturating_sub(1) * 2
        ));
    }
    c.push_str(&format!(
        "[[connectors]]\nname = \"north\"\nkind = \"mqtt\"\nurl = \"{broker}\"\nformat = \"{}\"\ntopic_prefix = \"north\"\nqos = 1\n",
        spec.format
    ));
    c.push_str(&spec.extra_config);
    c.push('\n');
    c
}

/// What the subscriber has seen. A value counts when the gateway read it
/// inside the measuring window (by the reading's own timestamp), whenever it
/// arrives: a late value is late, not lost, and its age says how late.
struct Seen {
    values: AtomicU64,
    /// The window, on the readings' timestamps (µs since the epoch).
    from_us: AtomicU64,
    to_us: AtomicU64,
    ages: Mutex<Histogram>,
}

impl Default for Seen {
    fn default() -> Self {
        // Nothing counts until the window is set.
        Seen {
            values: AtomicU64::new(0),
            from_us: AtomicU64::new(u64::MAX),
            to_us: AtomicU64::new(0),
            ages: Mutex::default(),
        }
    }
}

impl Seen {
    fn value(&self, tag: &str, value: Option<u64>, read_us: Option<u64>, arrived_us: u64) {
        let Some(read) = read_us else { return };
        if read < self.from_us.load(Ordering::Relaxed) || read >= self.to_us.load(Ordering::Relaxed) {
            return;
        }
        self.values.fetch_add(1, Ordering::Relaxed);
        if tag.ends_with(TS_TAG)
            && let Some(ts) = value
        {
            let age = arrived_us.saturating_sub(ts);
            if let Ok(mut h) = self.ages.lock() {
                h.record(age.max(1));
            }
        }
    }

    fn json_value(&self, v: &serde_json::Value, arrived_us: u64) {
        let tag = v.get("tag").and_then(serde_json::Value::as_str).unwrap_or("");
        let read_us = v
            .get("ts")
            .and_then(serde_json::Value::as_str)
            .and_then(gateway_model::parse_rfc3339_ns)
            .map(|ns| ns / 1000);
        self.value(tag, v.get("value").and_then(serde_json::Value::as_u64), read_us, arrived_us);
    }

    fn message(&self, format: &str, payload: &[u8]) {
        let arrived = now_us();
        match format {
            "sparkplug_b" => {
                let Ok(p) = sparkplug::Payload::decode(payload) else { return };
                for m in &p.metrics {
                    let ts = match &m.value {
                        Some(sparkplug::MetricValue::LongValue(v)) => Some(*v),
                        _ => None,
                    };
                    let read_us = m.timestamp.map(|ms| ms * 1000);
                    self.value(m.name.as_deref().unwrap_or(""), ts, read_us, arrived);
                }
            }
            _ => {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else { return };
                match v.get("values").and_then(serde_json::Value::as_array) {
                    Some(values) => values.iter().for_each(|x| self.json_value(x, arrived)),
                    None if v.get("tag").is_some() => self.json_value(&v, arrived),
                    None => {}
                }
            }
        }
    }
}

struct Processes {
    farm: Option<Child>,
    gateway: Option<Child>,
    hogs: Vec<Child>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        let hogs = std::mem::take(&mut self.hogs);
        for c in [self.gateway.take(), self.farm.take()].into_iter().flatten().chain(hogs) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn taskset() -> Option<PathBuf> {
    ["/usr/bin/taskset", "/bin/taskset"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// Runs the job once with the gateway binary `gateway`.
pub fn run(spec: &NorthSpec, gateway: &Path) -> Result<NorthReport, String> {
    available()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let broker = Mosquitto::start();
    let mut procs = Processes { farm: None, gateway: None, hogs: Vec::new() };
    let mut farm = child::command(FARM_FLAG, &FarmSpec { ports: vec![0; spec.devices], tags: spec.tags })
        .map_err(|e| e.to_string())?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the Modbus servers: {e}"))?;
    let (out, err) = (farm.stdout.take(), farm.stderr.take());
    procs.farm = Some(farm);
    let ports = farm_ports(out, err, Duration::from_secs(30))?;

    let api_port = crate::free_port();
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(&cfg_path, config(spec, &dir.path().join("data"), api_port, &broker.url(), &ports))
        .map_err(|e| e.to_string())?;
    let pin = spec.pin_cpu.and_then(|cpu| taskset().map(|t| (t, cpu)));
    for _ in 0..spec.hogs {
        let mut c = match &pin {
            Some((t, cpu)) => {
                let mut c = Command::new(t);
                c.arg("-c").arg(cpu.to_string()).arg("sh");
                c
            }
            None => Command::new("sh"),
        };
        let hog = c
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a busy process: {e}"))?;
        procs.hogs.push(hog);
    }
    let mut cmd = match &pin {
        Some((t, cpu)) => {
            let mut c = Command::new(t);
            c.arg("-c").arg(cpu.to_string()).arg(gateway);
            c
        }
        None => Command::new(gateway),
    };
    let log = std::fs::File::create(dir.path().join("gateway.log")).map_err(|e| e.to_string())?;
    let gw = cmd
        .arg("run")
        .arg("--config")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start the gateway: {e}"))?;
    let pid = gw.id();
    procs.gateway = Some(gw);
    let healthy = || {
        std::net::TcpStream::connect(("127.0.0.1", api_port))
            .ok()
            .and_then(|mut s| {
                use std::io::Write;
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                let req = "GET /api/v1/system/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
                s.write_all(req.as_bytes()).ok()?;
                let mut out = String::new();
                s.read_to_string(&mut out).ok()?;
                Some(out.starts_with("HTTP/1.1 200"))
            })
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthy() {
        if let Some(g) = procs.gateway.as_mut()
            && let Ok(Some(status)) = g.try_wait()
        {
            let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
            return Err(format!("the gateway exited ({status}): {}", log.lines().last().unwrap_or("")));
        }
        if Instant::now() > deadline {
            return Err("the gateway did not become healthy in 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let seen = Arc::new(Seen::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("subscriber")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (s2, format) = (seen.clone(), spec.format.clone());
    let broker_port = broker.port;
    rt.spawn(async move {
        let mut opts = rumqttc::MqttOptions::new("north-subscriber", "127.0.0.1", broker_port);
        opts.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 1024);
        // Subscribed at every connection, and a failed connection is retried:
        // on a starved machine the first attempt may time out, and a
        // subscriber that gave up would read as a gateway that sent nothing.
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe("north/#", rumqttc::QoS::AtMostOnce);
                    let _ = client.try_subscribe("spBv1.0/#", rumqttc::QoS::AtMostOnce);
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => s2.message(&format, &p.payload),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });

    std::thread::sleep(Duration::from_secs_f64(spec.warmup_s));
    let window = crate::poll_window(Duration::from_millis(spec.poll_ms), spec.seconds);
    let start_peak = crate::procstat::read(Some(pid)).peak_rss;
    crate::procstat::reset_peak_rss_of(pid);
    let ticks0 = crate::procstat::read(Some(pid)).cpu_ticks;
    let from = now_us();
    seen.to_us.store(from + window.as_micros() as u64, Ordering::Relaxed);
    seen.from_us.store(from, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(window);
    let elapsed = start.elapsed().as_secs_f64();
    let stat = crate::procstat::read(Some(pid));
    let tuning = tuning_state(api_port);
    let cpu = stat.cpu_ticks.saturating_sub(ticks0) as f64 / crate::procstat::TICKS_PER_S / elapsed;
    // Readings of the window still on their way are counted (late, not lost).
    std::thread::sleep(LATE_GRACE);

    if let Some(mut g) = procs.gateway.take() {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while g.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = g.kill();
        let _ = g.wait();
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(procs);

    let values = seen.values.load(Ordering::Relaxed) as f64 / window.as_secs_f64();
    let ages = seen.ages.lock().map(|h| h.clone()).unwrap_or_default();
    let q = |x: f64| ages.quantile(x) as f64 / 1000.0;
    Ok(NorthReport {
        offered_values_per_s: spec.offered(),
        delivered_values_per_s: values,
        delivered_fraction: values / spec.offered(),
        gateway_cpu_cores: cpu,
        gateway_rss_mb: stat.rss as f64 / 1e6,
        gateway_peak_rss_mb: stat.peak_rss as f64 / 1e6,
        gateway_start_peak_rss_mb: start_peak as f64 / 1e6,
        age_p50_ms: q(0.5),
        age_p99_ms: q(0.99),
        age_p999_ms: q(0.999),
        age_samples: ages.count(),
        pinned: pin.is_some(),
        tuning,
    })
}

/// The self-tuning gauges from the gateway's `/metrics`.
fn tuning_state(api_port: u16) -> Option<[f64; 3]> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", api_port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let get =
        |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok());
    let ms = |name: &str| get(name).map(|s| (s * 1e6).round() / 1e3);
    Some([
        get("gateway_tuning_level")?,
        ms("gateway_tuning_wal_flush_seconds")?,
        ms("gateway_tuning_batch_linger_seconds")?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_counts_by_when_it_was_read_not_when_it_arrived() {
        let seen = Seen::default();
        let value = |read_s: u64, arrived_s: u64| {
            let ts = gateway_model::format_rfc3339_ns(read_s * 1_000_000_000);
            let v = serde_json::json!({"tag": "d.ts_us", "value": read_s * 1_000_000, "ts": ts});
            seen.json_value(&v, arrived_s * 1_000_000);
        };
        value(5, 5);
        assert_eq!(seen.values.load(Ordering::Relaxed), 0, "counted before the window was set");
        seen.from_us.store(10_000_000, Ordering::Relaxed);
        seen.to_us.store(20_000_000, Ordering::Relaxed);
        value(9, 11); // read before the window
        value(10, 10);
        value(19, 25); // read inside, arrived late: late, not lost
        value(20, 20); // read after
        assert_eq!(seen.values.load(Ordering::Relaxed), 2);
        let ages = seen.ages.lock().unwrap().clone();
        assert_eq!(ages.quantile(1.0) / 1_000_000, 6, "the late value's age");
    }

    #[test]
    fn the_generated_configuration_is_one_the_gateway_reads() {
        let spec = NorthSpec {
            format: "json_batch".into(),
            devices: 2,
            tags: 3,
            poll_ms: 10,
            preset: "default".into(),
            warmup_s: 0.0,
            seconds: 0.0,
            pin_cpu: None,
            history: false,
            hogs: 0,
            extra_config: "[tuning]\nenabled = false".into(),
        };
        let text = config(&spec, Path::new("/tmp/d"), 8080, "mqtt://127.0.0.1:1883", &[5020, 5021]);
        let doc: toml::Table = toml::from_str(&text).unwrap();
        let devices = doc["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 2);
        let tags = devices[1]["tags"].as_array().unwrap();
        assert_eq!(tags.len(), 3);
        assert_eq!(tags[2]["name"].as_str(), Some(TS_TAG));
        assert_eq!(tags[2]["address"].as_integer(), Some(4));
        assert_eq!(spec.offered(), 600.0);
        assert_eq!(doc["tuning"]["enabled"].as_bool(), Some(false), "the extra configuration is appended");
    }

    #[test]
    fn the_answer_time_spans_the_four_registers_after_the_floats() {
        use tokio_modbus::server::Service;
        let d = Device { reads: Arc::new(AtomicU64::new(0)), floats: 2 };
        let before = now_us();
        let Ok(Response::ReadHoldingRegisters(w)) = d.call(Request::ReadHoldingRegisters(0, 8)).into_inner() else {
            panic!("no registers")
        };
        let ts = w[4..8].iter().fold(0u64, |a, &r| (a << 16) | u64::from(r));
        assert!(ts >= before && ts <= now_us(), "{ts}");
        assert_eq!(f32::from_bits((u32::from(w[2]) << 16) | u32::from(w[3])), 1.0);
    }
}
