//! REST scenarios: a small HTTP/1.1 client over tokio's `TcpStream`
//! (keep-alive, `Content-Length` and chunked bodies: all the gateway sends)
//! driven open loop — every request has a due time from the pacer and its
//! latency counts from then, so a stalled server or a queue in front of a
//! busy connection shows in the figures instead of slowing the load down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_api::ApiConfig;
use gateway_bench::histogram::Histogram;
use gateway_bus::Preset;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::gateway::{Gateway, sim_devices};
use super::{Curve, Outcome, Series, pace};

/// One keep-alive HTTP/1.1 connection.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

impl HttpConn {
    /// Connects.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<HttpConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConn { stream, buf: Vec::with_capacity(64 << 10) })
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 64 << 10];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// `GET path`; returns the status and the body's length.
    pub async fn get(&mut self, path: &str) -> std::io::Result<(u16, usize)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n");
        self.stream.write_all(req.as_bytes()).await?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status"))?;
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')).map(|v| v.trim().to_owned()))
        };
        self.buf.drain(..head_end);
        if let Some(len) = header("content-length") {
            let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
            while self.buf.len() < len {
                self.fill().await?;
            }
            self.buf.drain(..len);
            return Ok((status, len));
        }
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut total = 0;
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    self.fill().await?;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| bad("bad chunk size"))?;
                while self.buf.len() < line_end + 2 + size + 2 {
                    self.fill().await?;
                }
                self.buf.drain(..line_end + 2 + size + 2);
                total += size;
                if size == 0 {
                    return Ok((status, total));
                }
            }
        }
        Err(bad("a response with neither Content-Length nor chunked body"))
    }
}

/// What one open-loop level measured.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Latency from each request's due time to its complete response.
    pub from_due: Histogram,
    /// Latency from writing the request to its complete response.
    pub service: Histogram,
    /// Requests answered 2xx in the measured window.
    pub ok: u64,
    /// Requests that failed or were answered otherwise.
    pub errors: u64,
    /// Requests still unanswered when the level ended.
    pub unfinished: u64,
    /// Seconds of the measured window.
    pub seconds: f64,
    /// Body bytes of the last response.
    pub body_bytes: usize,
}

/// Offers `rate` requests per second for `warmup_s + seconds`, cycling
/// through `paths`, over `conns` keep-alive connections sharing one queue;
/// records the requests due after the warm-up.
pub async fn open_loop(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    rate: f64,
    warmup_s: f64,
    seconds: f64,
    conns: usize,
) -> LoadResult {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup_s);
    let pacer = pace(rate, warmup_s + seconds, tx);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns.max(1) {
        let (rx, paths) = (rx.clone(), paths.clone());
        tasks.spawn(async move {
            let mut r = LoadResult::default();
            let mut conn = HttpConn::connect(addr).await.ok();
            loop {
                let job = rx.lock().await.recv().await;
                let Some((i, due)) = job else { break };
                let path = &paths[i as usize % paths.len()];
                let sent = Instant::now();
                if conn.is_none() {
                    conn = HttpConn::connect(addr).await.ok();
                }
                let outcome = match conn.as_mut() {
                    Some(c) => tokio::time::timeout(Duration::from_secs(10), c.get(path)).await,
                    None => Ok(Err(std::io::Error::other("cannot connect"))),
                };
                let done = Instant::now();
                let measured = due >= measure_from;
                match outcome {
                    Ok(Ok((status, len))) if (200..300).contains(&status) => {
                        r.body_bytes = len;
                        if measured {
                            r.ok += 1;
                            r.from_due.record(done.duration_since(due).as_nanos() as u64);
                            r.service.record(done.duration_since(sent).as_nanos() as u64);
                        }
                    }
                    other => {
                        if measured {
                            r.errors += 1;
                        }
                        if !matches!(other, Ok(Ok(_))) {
                            conn = None;
                        }
                    }
                }
            }
            r
        });
    }
    let issued = tokio::task::spawn_blocking(move || pacer.join().unwrap_or(0)).await.unwrap_or(0);
    // Requests of the warm-up, counted with the pacer's own arithmetic.
    let warm = (0u64..).take_while(|&i| (i as f64 / rate.max(1e-3)) < warmup_s).count() as u64;
    let measured_issued = issued.saturating_sub(warm);
    let mut total = LoadResult { seconds, ..LoadResult::default() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(r))) => {
                total.from_due.merge(&r.from_due);
                total.service.merge(&r.service);
                total.ok += r.ok;
                total.errors += r.errors;
                total.body_bytes = total.body_bytes.max(r.body_bytes);
            }
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                break;
            }
        }
    }
    total.unfinished = measured_issued.saturating_sub(total.ok + total.errors);
    total
}

/// The REST scenarios.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiSpec {
    /// Seconds of warm-up per level.
    pub warmup_s: f64,
    /// Seconds measured per level.
    pub seconds: f64,
    /// The p99 a simple query must keep to count a rate as sustained, µs.
    pub p99_limit_us: f64,
    /// Rates tried above 1,000 QPS when looking for the highest sustained one.
    pub step_rates: Vec<f64>,
}

fn put_level(o: &mut Outcome, key: &str, r: &LoadResult) {
    let l = r.from_due.latency();
    o.put(&format!("{key}.p50_us"), l.p50_us);
    o.put(&format!("{key}.p99_us"), l.p99_us);
    o.put(&format!("{key}.p999_us"), l.p999_us);
    o.put(&format!("{key}.max_us"), l.max_us);
    o.put(&format!("{key}.service_p99_us"), r.service.latency().p99_us);
    o.put(&format!("{key}.achieved_qps"), r.ok as f64 / r.seconds.max(1e-9));
    o.put(&format!("{key}.errors"), (r.errors + r.unfinished) as f64);
    o.put(&format!("{key}.body_bytes"), r.body_bytes as f64);
    o.curves.push(Curve { name: key.to_owned(), points: r.from_due.curve() });
}

/// Whether a level kept its rate: p99 within the limit, no errors, and at
/// least 95% of the offered rate answered.
fn sustained(r: &LoadResult, rate: f64, p99_limit_us: f64) -> bool {
    r.errors + r.unfinished == 0
        && r.from_due.latency().p99_us <= p99_limit_us
        && r.ok as f64 >= 0.95 * rate * r.seconds
}

/// Devices of the REST gateway: 100 simulated devices × 100 tags every
/// second (10,000 values/s of background load, 10,000 tags in the cache).
const DEVICES: usize = 100;
const TAGS: u32 = 100;

/// Runs the REST scenarios against an in-process gateway (default preset,
/// WAL, SQLite): simple query (`GET /api/v1/values/{tag}`, a different tag
/// each time) at 100 and 1,000 QPS and then at rising rates until p99 passes
/// the limit; the complex queries (`GET /api/v1/values?pattern=plc1?.*`,
/// 1,000 of the 10,000 tags by wildcard; `GET /api/v1/devices`, 100 devices
/// with their driver status) at 20 and 200 QPS.
pub fn api(spec: &ApiSpec) -> Result<Outcome, String> {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gateway")
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let client = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let devices = sim_devices("plc", DEVICES, TAGS, 1000)?;
    let gw = server.block_on(Gateway::start(Preset::Default, ApiConfig::default(), &devices))?;
    let addr = gw.addr;
    // Let every device poll once (they poll at start, then every second) so every tag has a value.
    std::thread::sleep(Duration::from_millis(1100));
    let simple: Arc<Vec<String>> = Arc::new(
        (0..DEVICES * TAGS as usize)
            .map(|i| format!("/api/v1/values/plc{}.g{}", (i * 7) % DEVICES, (i * 13) % TAGS as usize))
            .collect(),
    );
    let mut o = Outcome::default();
    let run = |paths: &Arc<Vec<String>>, rate: f64, conns: usize| {
        client.block_on(open_loop(addr, paths.clone(), rate, spec.warmup_s, spec.seconds, conns))
    };
    let mut max_qps: f64 = 0.0;
    let mut by_rate = Vec::new();
    for rate in [100.0, 1000.0] {
        let r = run(&simple, rate, 32);
        put_level(&mut o, &format!("api.simple.q{rate:.0}"), &r);
        by_rate.push([rate, r.from_due.latency().p99_us]);
        if sustained(&r, rate, spec.p99_limit_us) {
            max_qps = max_qps.max(rate);
        }
    }
    if max_qps >= 1000.0 {
        for &rate in &spec.step_rates {
            let r = run(&simple, rate, 32);
            by_rate.push([rate, r.from_due.latency().p99_us]);
            let ok = sustained(&r, rate, spec.p99_limit_us);
            o.put(&format!("api.simple.step_q{rate:.0}.p99_us"), r.from_due.latency().p99_us);
            if !ok {
                break;
            }
            max_qps = rate;
        }
    }
    o.put("api.simple.max_qps", max_qps);
    if spec.step_rates.last().is_some_and(|&top| max_qps >= top) {
        o.notes
            .push(format!("the highest rate tried ({max_qps:.0} QPS) kept the p99 target: the real limit is higher"));
    }
    o.series.push(Series {
        name: "api.simple p99 by offered rate".into(),
        unit: "µs".into(),
        x_unit: "requests/s".into(),
        points: by_rate,
    });
    let complex: Arc<Vec<String>> = Arc::new((1..10).map(|i| format!("/api/v1/values?pattern=plc{i}?.*")).collect());
    let list: Arc<Vec<String>> = Arc::new(vec!["/api/v1/devices".into()]);
    for rate in [20.0, 200.0] {
        let r = run(&complex, rate, 8);
        put_level(&mut o, &format!("api.complex_values.q{rate:.0}"), &r);
        let r = run(&list, rate, 8);
        put_level(&mut o, &format!("api.devices_list.q{rate:.0}"), &r);
    }
    server.block_on(gw.stop());
    Ok(o)
}
