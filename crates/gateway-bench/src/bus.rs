//! The bus load generator, shared by `cargo bench -p gateway-bus --bench bus`
//! and `edge-gateway bench`: publishers on plain threads, subscribers as tokio
//! tasks, the same batches carried by the bus or by `tokio::sync::broadcast`
//! for comparison. Latency is measured per batch from the moment its publisher
//! began publishing it (open loop when a rate is set: from the moment it was
//! due) to the moment a subscriber received it.
//!
//! It drives the bus only through its public API, as a driver and a connector
//! would, and asserts nothing: it measures, the caller judges. Run it in a
//! fresh process ([`crate::child`]) when its memory figure matters.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_bus::{Bus, BusMetrics, BusSettings, Persistence, Preset, SubscribeOptions};
use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value};

use crate::histogram::{Histogram, Latency};
use crate::procstat;

/// What carries the frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Transport {
    /// The gateway's frame bus ([`gateway_bus::Bus`]).
    Bus,
    /// `tokio::sync::broadcast` with as many slots as the ring holds batches.
    TokioBroadcast,
}

/// One load scenario.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Scenario {
    /// Preset of the bus (for the broadcast channel: its ring size).
    pub preset: Preset,
    /// Memory (lossy subscribers) or WAL (durable subscribers).
    pub persistence: Persistence,
    /// What carries the frames.
    pub transport: Transport,
    /// Publisher threads.
    pub publishers: usize,
    /// Subscriber tasks.
    pub subscribers: usize,
    /// Frames per batch.
    pub batch_size: usize,
    /// Total frames per second to offer (open loop); `None`: as fast as possible.
    pub rate: Option<u64>,
    /// How long to publish.
    pub duration: Duration,
    /// Where the WAL goes (a fresh directory per run is made inside it).
    pub dir: PathBuf,
}

/// What a run measured.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Frames published.
    pub published: u64,
    /// Frames delivered to the slowest subscriber.
    pub delivered_min: u64,
    /// Frames per second delivered to the slowest subscriber (until it caught up).
    pub delivered_per_s: f64,
    /// Frames subscribers lost (lossy lag), all together.
    pub drops: u64,
    /// Seconds of publishing.
    pub seconds: f64,
    /// Published frames per second.
    pub frames_per_s: f64,
    /// Latency from the start of the `publish` call to the subscriber.
    pub latency: Latency,
    /// Latency from the moment the batch was due (open loop: includes the
    /// pacer's own lateness and any stall of the publisher); equals `latency`
    /// when no rate is set.
    pub latency_from_due: Latency,
    /// The percentile curve of `latency_from_due` (see [`Histogram::curve`]).
    #[serde(default)]
    pub latency_curve: Vec<[f64; 2]>,
    /// Peak resident memory of the process during the run, bytes (`VmHWM`,
    /// reset before the run where the kernel allows).
    pub peak_rss: u64,
    /// Bytes of the ring's slot array.
    pub ring_slot_bytes: u64,
}

fn make_batches(publisher: usize, batch_size: usize) -> Vec<Vec<Frame>> {
    let tags: Vec<TagId> = (0..100).map(|i| TagId::new(&format!("load{publisher}.tag{i}")).unwrap()).collect();
    (0..16)
        .map(|b| {
            (0..batch_size)
                .map(|i| {
                    let v = (b * batch_size + i) as f64 * 0.5;
                    Frame::Data(DataFrame::new(tags[i % tags.len()].clone(), Value::F64(v), Quality::GOOD, 0))
                })
                .collect()
        })
        .collect()
}

/// A fresh batch from a template, stamped (nanoseconds since the run's epoch)
/// with when its publication started (first frame) and when it was due (second frame).
fn stamp(template: &[Frame], started_ns: u64, due_ns: u64) -> Arc<Batch> {
    let mut frames = template.to_vec();
    for (f, t) in frames.iter_mut().zip([started_ns, due_ns]) {
        if let Frame::Data(d) = f {
            d.source_ts_ns = t;
        }
    }
    Arc::new(Batch::from(frames))
}

/// (started, due) stamps of a batch.
fn stamps(b: &Batch) -> (u64, u64) {
    let ts = |i: usize| b.get(i).and_then(Frame::as_data).map(|d| d.source_ts_ns);
    let started = ts(0).unwrap_or(0);
    (started, ts(1).unwrap_or(started))
}

/// Frames received, frames dropped, latency from publish and from due, and
/// when the subscriber received its last batch.
type SubTask = tokio::task::JoinHandle<(u64, u64, [Histogram; 2], Instant)>;
type PublishFn = Arc<dyn Fn(Arc<Batch>) + Send + Sync>;

/// Runs a scenario and measures it.
pub fn run(s: &Scenario) -> Report {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let reset = procstat::reset_peak_rss();
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let per_pub_rate = s.rate.map(|r| r as f64 / s.publishers as f64);
    let mut cfg = BusSettings { persistence: s.persistence, ..s.preset.settings() };
    let run_dir = s.dir.join(format!("run-{}", epoch.elapsed().as_nanos() ^ std::process::id() as u128));
    cfg.wal_dir = run_dir.clone();
    let ring_batches = (cfg.capacity() as usize / s.batch_size).max(16);

    let durable = s.persistence == Persistence::Wal;
    let mut bus_handle = None;
    // Subscribers: tokio tasks that time every batch.
    let (subs, publish): (Vec<SubTask>, PublishFn) = match s.transport {
        Transport::Bus => {
            let bus = Bus::open(cfg.clone(), Arc::new(BusMetrics::unregistered())).expect("open bus");
            let subs = (0..s.subscribers)
                .map(|i| {
                    let opts = match s.persistence {
                        Persistence::Memory => SubscribeOptions::lossy(format!("s{i}"), cfg.capacity() / 2),
                        Persistence::Wal => SubscribeOptions::durable(format!("s{i}")),
                    };
                    let mut sub = bus.subscribe(opts).expect("subscribe");
                    let stop = stop.clone();
                    let published = published.clone();
                    rt.spawn(async move {
                        let mut lat = [Histogram::default(), Histogram::default()];
                        let mut got = 0u64;
                        let mut last_at = Instant::now();
                        loop {
                            if stop.load(Ordering::Acquire) && sub.position() >= published.load(Ordering::Acquire) {
                                break;
                            }
                            match tokio::time::timeout(Duration::from_millis(20), sub.recv()).await {
                                Ok(Ok(d)) => {
                                    let now = epoch.elapsed().as_nanos() as u64;
                                    let (started, due) = stamps(d.batch());
                                    lat[0].record(now.saturating_sub(started));
                                    lat[1].record(now.saturating_sub(due));
                                    got += d.end_seq() - d.first_seq();
                                    last_at = Instant::now();
                                    if durable {
                                        let _ = sub.ack(d.end_seq());
                                    }
                                }
                                Ok(Err(_)) => break,
                                Err(_) => {}
                            }
                        }
                        (got, sub.drops(), lat, last_at)
                    })
                })
                .collect();
            bus_handle = Some(bus.clone());
            let publish: PublishFn = Arc::new(move |batch| {
                bus.publish_blocking(batch).expect("publish");
            });
            (subs, publish)
        }
        Transport::TokioBroadcast => {
            let (tx, _) = tokio::sync::broadcast::channel::<Arc<Batch>>(ring_batches);
            let subs = (0..s.subscribers)
                .map(|_| {
                    let mut rx = tx.subscribe();
                    let stop = stop.clone();
                    rt.spawn(async move {
                        let mut lat = [Histogram::default(), Histogram::default()];
                        let (mut got, mut drops) = (0u64, 0u64);
                        let mut last_at = Instant::now();
                        loop {
                            match tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
                                Ok(Ok(b)) => {
                                    let now = epoch.elapsed().as_nanos() as u64;
                                    let (started, due) = stamps(&b);
                                    lat[0].record(now.saturating_sub(started));
                                    lat[1].record(now.saturating_sub(due));
                                    got += b.len() as u64;
                                    last_at = Instant::now();
                                }
                                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => drops += n,
                                Ok(Err(_)) => break,
                                Err(_) if stop.load(Ordering::Acquire) && rx.is_empty() => break,
                                Err(_) => {}
                            }
                        }
                        (got, drops, lat, last_at)
                    })
                })
                .collect();
            let publish: PublishFn = Arc::new(move |batch| {
                let _ = tx.send(batch);
            });
            (subs, publish)
        }
    };

    let start = Instant::now();
    let pubs: Vec<_> = (0..s.publishers)
        .map(|p| {
            let templates = make_batches(p, s.batch_size);
            let publish = publish.clone();
            let published = published.clone();
            let (duration, batch_size) = (s.duration, s.batch_size);
            std::thread::spawn(move || {
                let interval = per_pub_rate.map(|r| Duration::from_secs_f64(batch_size as f64 / r));
                let mut i = 0usize;
                let mut sent = 0u64;
                loop {
                    let due = interval.map(|iv| start + iv * i as u32);
                    let now = Instant::now();
                    if now.duration_since(start) >= duration {
                        break;
                    }
                    if let Some(due) = due {
                        // Sleep most of the way, then spin: the kernel's timer
                        // slack alone would add ~60 µs to every batch.
                        if let Some(wait) = due.checked_duration_since(now)
                            && wait > Duration::from_micros(200)
                        {
                            std::thread::sleep(wait - Duration::from_micros(150));
                        }
                        while Instant::now() < due {
                            std::hint::spin_loop();
                        }
                    }
                    let started = Instant::now();
                    let ns = |t: Instant| t.duration_since(epoch).as_nanos() as u64;
                    publish(stamp(&templates[i % templates.len()], ns(started), ns(due.unwrap_or(started))));
                    sent += batch_size as u64;
                    i += 1;
                }
                published.fetch_add(sent, Ordering::AcqRel);
                sent
            })
        })
        .collect();
    let total: u64 = pubs.into_iter().map(|h| h.join().expect("publisher")).sum();
    let seconds = start.elapsed().as_secs_f64();
    // Sequence numbers start at the WAL's next number; memory mode starts at 0.
    published.store(total, Ordering::Release);
    stop.store(true, Ordering::Release);
    let (mut from_publish, mut from_due) = (Histogram::default(), Histogram::default());
    let (mut delivered_min, mut drops, mut slowest) = (u64::MAX, 0, 0.0f64);
    for h in subs {
        let (got, d, l, last_at) = rt.block_on(h).expect("subscriber");
        delivered_min = delivered_min.min(got);
        slowest = slowest.max(last_at.duration_since(start).as_secs_f64());
        drops += d;
        from_publish.merge(&l[0]);
        from_due.merge(&l[1]);
    }
    let peak = procstat::read(None).peak_rss;
    let ring_slot_bytes = bus_handle.as_ref().map_or(0, |b| b.stats().ring_slot_bytes);
    drop(bus_handle);
    drop(publish);
    rt.shutdown_timeout(Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&run_dir);
    Report {
        published: total,
        delivered_min: if delivered_min == u64::MAX { 0 } else { delivered_min },
        delivered_per_s: if delivered_min == u64::MAX { 0.0 } else { delivered_min as f64 / slowest.max(seconds) },
        drops,
        seconds,
        frames_per_s: total as f64 / seconds,
        latency: from_publish.latency(),
        latency_from_due: from_due.latency(),
        latency_curve: from_due.curve(),
        peak_rss: if reset { peak } else { 0 },
        ring_slot_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_open_loop_run_publishes_delivers_and_times_its_batches() {
        let dir = tempfile::tempdir().unwrap();
        let s = Scenario {
            preset: Preset::LowLatency,
            persistence: Persistence::Memory,
            transport: Transport::Bus,
            publishers: 1,
            subscribers: 1,
            batch_size: 100,
            rate: Some(10_000),
            duration: Duration::from_millis(200),
            dir: dir.path().to_owned(),
        };
        let r = run(&s);
        assert!(r.published > 0, "{r:?}");
        assert_eq!(r.delivered_min + r.drops, r.published, "{r:?}");
        assert_eq!(r.latency.samples, r.published / 100, "one sample per batch: {r:?}");
        assert!(r.latency_from_due.max_us >= r.latency.p50_us && !r.latency_curve.is_empty(), "{r:?}");
    }
}
