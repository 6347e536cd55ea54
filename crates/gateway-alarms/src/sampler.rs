//! The sampler: every `[alarms.system] interval` it reads the gateway's own
//! figures and feeds them to the alarm service under `_gateway.…` names,
//! where the built-in rules of [`crate::system`] watch them. It reads the bus
//! and the WAL itself; devices and connectors, which this crate must not
//! import, come through a [`HealthProbe`] the binary implements.
//!
//! | figure | what it is |
//! |---|---|
//! | `wal.backlog_frames.{subscriber}` | frames between the bus head and a durable subscriber's WAL cursor (its last acknowledgement) |
//! | `wal.backlog_s.{subscriber}` | how much time those frames cover: the backlog divided by the publish rate, but never more than the time since the sampler last saw the subscriber caught up (see [`backlog_seconds`]) |
//! | `bus.ring_usage` | frames held in the ring over its capacity (0 to 1) |
//! | `wal.flush_p99_ms` | WAL flush p99 over the last ~10 s, as the upper bound of its histogram bucket ([`FlushTally::quantile_ms`]); 0 when nothing was flushed |
//! | `wal.flush_mean_ms` | mean flush time over the last interval; absent when nothing was flushed |
//! | `disk.free_mb` | MiB available to the gateway on the WAL's file system |
//! | whatever the probe gives | `device.{name}.connected`, `connector.{name}.connected`, ... |
//!
//! In memory mode there is no WAL: the `wal.*` and `disk.*` figures are not
//! sampled. The sampler never waits on the alarm service (a sample it cannot
//! take is dropped and counted there) and never blocks the bus beyond one
//! [`Bus::stats`] per interval.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_bus::{Bus, BusStats, FlushTally};
use gateway_model::now_ns;
use tokio::task::JoinHandle;

use crate::service::AlarmService;
use crate::system::{SUBJECT_PREFIX, SystemConfig};

/// Figures the alarm crate cannot read itself (devices, connectors).
pub trait HealthProbe: Send + Sync {
    /// Appends the figures as they are now: names relative to `_gateway.`
    /// (`device.plc1.connected`), values as numbers (booleans as 0 and 1).
    /// Called once per interval from one task; figures over an interval
    /// (rates, means) are the probe's to keep, by differences of totals.
    fn sample(&self, out: &mut Vec<(String, f64)>);
}

/// How far back `wal.flush_p99_ms` looks.
const FLUSH_WINDOW: Duration = Duration::from_secs(10);
/// Time constant of the smoothed publish rate: long enough that a pause of a
/// few seconds does not make every backlog look hours long, short enough to
/// follow a real change of load within a minute.
const RATE_TAU_S: f64 = 10.0;

/// The publish rate, frames per second, from the bus head's movement,
/// exponentially smoothed over about [`RATE_TAU_S`].
#[derive(Debug, Default)]
struct RateMeter {
    last: Option<(f64, u64)>,
    rate: Option<f64>,
}

impl RateMeter {
    /// Takes the head `head` at `t` seconds; returns the smoothed rate (0
    /// until two readings were taken).
    fn update(&mut self, t: f64, head: u64) -> f64 {
        if let Some((t0, h0)) = self.last {
            let dt = t - t0;
            if dt > 0.0 {
                let now = head.saturating_sub(h0) as f64 / dt;
                // Weight by elapsed time, so the smoothing does not depend on the interval.
                let a = 1.0 - (-dt / RATE_TAU_S).exp();
                self.rate = Some(self.rate.map_or(now, |r| r + a * (now - r)));
            }
        }
        self.last = Some((t, head));
        self.rate.unwrap_or(0.0)
    }
}

/// Seconds of data a backlog of `lag` frames holds, at `rate` frames per
/// second, for a subscriber behind for `behind_s` seconds.
///
/// `lag / rate` is the estimate; but the frames waiting cannot be older than
/// the moment the subscriber was last caught up, so it is capped at
/// `behind_s`. That cap is also the answer when nothing is published (rate 0):
/// the data has waited as long as the subscriber has been behind. And it
/// keeps a decaying rate after publishers stop from inflating a short
/// backlog into hours. No backlog is 0 s.
pub fn backlog_seconds(lag: u64, rate: f64, behind_s: f64) -> f64 {
    if lag == 0 {
        return 0.0;
    }
    if rate > 0.0 { (lag as f64 / rate).min(behind_s) } else { behind_s }
}

/// The flush window: the last ~10 s of interval differences.
#[derive(Debug)]
struct FlushWindowState {
    prev: Option<FlushTally>,
    recent: VecDeque<FlushTally>,
    len: usize,
}

/// The arithmetic of one sampler, apart from its clock and I/O: readings in,
/// figures out.
#[derive(Debug)]
struct Sampler {
    rate: RateMeter,
    /// Per durable subscriber: when (seconds) it was last seen caught up.
    caught_up_at: HashMap<String, f64>,
    flush: FlushWindowState,
    /// Seconds at which the sampler started: "caught up" for subscribers first seen behind.
    started: Option<f64>,
}

impl Sampler {
    fn new(interval: Duration) -> Self {
        let len = (FLUSH_WINDOW.as_secs_f64() / interval.as_secs_f64().max(0.001)).ceil().max(1.0) as usize;
        Sampler {
            rate: RateMeter::default(),
            caught_up_at: HashMap::new(),
            flush: FlushWindowState { prev: None, recent: VecDeque::with_capacity(len + 1), len },
            started: None,
        }
    }

    /// The bus's figures at `t` seconds (a monotonic clock). `cursors` are the
    /// WAL's cursor positions and `flush` the flush window's reading, both
    /// `None` in memory mode.
    fn figures(
        &mut self,
        t: f64,
        stats: &BusStats,
        cursors: Option<&[(String, u64)]>,
        flush: Option<FlushTally>,
        out: &mut Vec<(String, f64)>,
    ) {
        let started = *self.started.get_or_insert(t);
        let rate = self.rate.update(t, stats.head_seq);
        if stats.capacity > 0 {
            out.push(("bus.ring_usage".into(), stats.ring_frames as f64 / stats.capacity as f64));
        }
        let Some(cursors) = cursors else { return };
        let mut seen = Vec::new();
        for s in stats.subscribers.iter().filter(|s| s.kind == "durable") {
            // The cursor is what holds the WAL: frames delivered but not
            // acknowledged are still a backlog.
            let pos = cursors.iter().find(|(n, _)| *n == s.name).map_or(s.position, |&(_, p)| p);
            let lag = stats.head_seq.saturating_sub(pos);
            let since = self.caught_up_at.entry(s.name.clone()).or_insert(started);
            if lag == 0 {
                *since = t;
            }
            let behind = (t - *since).max(0.0);
            out.push((format!("wal.backlog_frames.{}", s.name), lag as f64));
            out.push((format!("wal.backlog_s.{}", s.name), backlog_seconds(lag, rate, behind)));
            seen.push(s.name.as_str());
        }
        self.caught_up_at.retain(|k, _| seen.contains(&k.as_str()));
        if let Some(now) = flush {
            let f = &mut self.flush;
            let d = f.prev.map_or(FlushTally::default(), |p| now.since(&p));
            f.prev = Some(now);
            f.recent.push_back(d);
            while f.recent.len() > f.len {
                f.recent.pop_front();
            }
            let mut window = FlushTally::default();
            f.recent.iter().for_each(|d| window.add(d));
            // No flush in the window: nothing was slow (and an alarm raised
            // by a slow burst must be able to clear while the gateway idles).
            out.push(("wal.flush_p99_ms".into(), window.quantile_ms(0.99).unwrap_or(0.0)));
            if let Some(m) = d.mean_ms() {
                out.push(("wal.flush_mean_ms".into(), m));
            }
        }
    }
}

/// MiB available to unprivileged users on the file system holding `dir`.
fn free_mb(dir: &std::path::Path) -> nix::Result<f64> {
    let s = nix::sys::statvfs::statvfs(dir)?;
    Ok(s.blocks_available() as f64 * s.fragment_size() as f64 / (1024.0 * 1024.0))
}

/// Starts the sampler: every `cfg.interval` the bus's figures and the
/// probe's go to `service`. It ends when the bus closes (or when the handle
/// is aborted); with `cfg.enabled` false it ends at once.
///
/// ```no_run
/// # async fn f(service: gateway_alarms::AlarmService, bus: gateway_bus::Bus) {
/// let cfg = gateway_alarms::SystemConfig::default();
/// let sampler = gateway_alarms::spawn_sampler(service, bus, cfg, None);
/// # sampler.abort();
/// # }
/// ```
pub fn spawn_sampler(
    service: AlarmService,
    bus: Bus,
    cfg: SystemConfig,
    probe: Option<Arc<dyn HealthProbe>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if !cfg.enabled {
            return;
        }
        let interval = cfg.interval.duration();
        let mut sampler = Sampler::new(interval);
        let clock = Instant::now();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut disk_failing = false;
        let mut out = Vec::new();
        loop {
            tick.tick().await;
            if bus.is_closed() {
                return;
            }
            let stats = bus.stats();
            let wal = bus.wal();
            // Numbers skipped after a crash (a million reserved ones) hold no
            // frame: a cursor before them is behind by what is left to read,
            // not by the skip. Counting it raised system.wal_backlog after
            // every crash until the subscriber passed the skip.
            let cursors = wal.map(|w| {
                w.cursors().into_iter().map(|(n, p)| (n, p.saturating_add(w.skipped_after(p)))).collect::<Vec<_>>()
            });
            let flush = wal.map(|_| bus.metrics().wal_flush_window.tally());
            sampler.figures(clock.elapsed().as_secs_f64(), &stats, cursors.as_deref(), flush, &mut out);
            if let Some(w) = wal {
                match free_mb(w.dir()) {
                    Ok(mb) => {
                        out.push(("disk.free_mb".into(), mb));
                        disk_failing = false;
                    }
                    Err(e) => {
                        if !disk_failing {
                            tracing::warn!(dir = %w.dir().display(), error = %e, "Cannot read the free space of the WAL's file system; disk.free_mb is not watched meanwhile.");
                        }
                        disk_failing = true;
                    }
                }
            }
            if let Some(p) = &probe {
                p.sample(&mut out);
            }
            let ts = now_ns();
            for (name, v) in out.drain(..) {
                if v.is_finite() {
                    service.sample(Arc::from(format!("{SUBJECT_PREFIX}{name}")), v, ts);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use gateway_bus::SubscriberStats;

    use super::*;

    fn stats(head: u64, subs: &[(&str, &'static str, u64)]) -> BusStats {
        BusStats {
            head_seq: head,
            ring_frames: 256,
            ring_batches: 1,
            capacity: 1024,
            ring_slot_bytes: 0,
            paused: false,
            published_batches: 0,
            subscribers: subs
                .iter()
                .map(|&(name, kind, position)| SubscriberStats {
                    name: name.into(),
                    kind,
                    position,
                    lag: head.saturating_sub(position),
                    drops: 0,
                })
                .collect(),
            wal: None,
        }
    }

    fn get(out: &[(String, f64)], name: &str) -> Option<f64> {
        out.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }

    #[test]
    fn the_rate_is_the_heads_movement_smoothed_by_time() {
        let mut r = RateMeter::default();
        assert_eq!(r.update(0.0, 0), 0.0, "one reading is no rate");
        assert_eq!(r.update(1.0, 1000), 1000.0, "the first rate is taken as it is");
        // A second at 2000/s moves the estimate by 1 - e^(-1/10) of the difference.
        let a = 1.0 - (-0.1f64).exp();
        assert!((r.update(2.0, 3000) - (1000.0 + a * 1000.0)).abs() < 1e-9);
        // The same second in two halves ends close to where one whole second does.
        let mut halves = RateMeter::default();
        halves.update(0.0, 0);
        halves.update(1.0, 1000);
        halves.update(1.5, 2000);
        let h = halves.update(2.0, 3000);
        assert!((h - (1000.0 + a * 1000.0)).abs() < 5.0, "{h}");
        // A clock that did not move changes nothing.
        assert_eq!(r.update(2.0, 9000), r.update(2.0, 9000));
    }

    #[test]
    fn backlog_seconds_divide_by_the_rate_capped_by_the_time_behind() {
        assert_eq!(backlog_seconds(0, 100.0, 50.0), 0.0);
        assert_eq!(backlog_seconds(1000, 100.0, 50.0), 10.0);
        assert_eq!(backlog_seconds(1000, 1.0, 50.0), 50.0, "cannot be older than the time behind");
        assert_eq!(backlog_seconds(1000, 0.0, 42.0), 42.0, "nothing published: the time behind");
    }

    #[test]
    fn a_durable_subscriber_behind_reports_its_cursor_lag_and_how_long() {
        let mut s = Sampler::new(Duration::from_secs(1));
        let mut out = Vec::new();
        // "up" has been given everything (position 100) but acknowledged
        // nothing past 40: the cursor counts. Lossy subscribers are not WAL backlogs.
        let subs = [("up", "durable", 100), ("ws", "lossy", 0)];
        s.figures(0.0, &stats(100, &subs), Some(&[("up".into(), 100)]), None, &mut out);
        assert_eq!(get(&out, "wal.backlog_frames.up"), Some(0.0));
        assert_eq!(get(&out, "wal.backlog_s.up"), Some(0.0));
        assert_eq!(get(&out, "bus.ring_usage"), Some(0.25));
        assert_eq!(get(&out, "wal.backlog_frames.ws"), None);
        out.clear();
        s.figures(1.0, &stats(200, &subs), Some(&[("up".into(), 140)]), None, &mut out);
        assert_eq!(get(&out, "wal.backlog_frames.up"), Some(60.0));
        // 100 frames/s; 60 frames are 0.6 s, within the 1 s it has been behind.
        assert!((get(&out, "wal.backlog_s.up").unwrap() - 0.6).abs() < 1e-9);
        out.clear();
        // Publishing stops; the backlog waits: its age grows with the clock.
        s.figures(31.0, &stats(200, &subs), Some(&[("up".into(), 140)]), None, &mut out);
        let rate_after = 100.0 * (-3.0f64).exp();
        assert!((get(&out, "wal.backlog_s.up").unwrap() - (60.0 / rate_after).min(31.0)).abs() < 1e-6);
        out.clear();
        s.figures(32.0, &stats(200, &subs), Some(&[("up".into(), 200)]), None, &mut out);
        assert_eq!(get(&out, "wal.backlog_s.up"), Some(0.0));
    }

    #[test]
    fn memory_mode_has_no_wal_figures() {
        let mut s = Sampler::new(Duration::from_secs(1));
        let mut out = Vec::new();
        s.figures(0.0, &stats(10, &[("up", "durable", 0)]), None, None, &mut out);
        assert_eq!(out, vec![("bus.ring_usage".to_string(), 0.25)]);
    }

    #[test]
    fn flush_p99_covers_the_last_ten_seconds_and_the_mean_the_last_interval() {
        let mut s = Sampler::new(Duration::from_secs(2));
        let st = stats(0, &[]);
        let mut total = FlushTally::default();
        let mut out = Vec::new();
        let mut step = |s: &mut Sampler, t: f64, add: FlushTally, out: &mut Vec<(String, f64)>| {
            total.add(&add);
            out.clear();
            s.figures(t, &st, Some(&[]), Some(total), out);
        };
        step(&mut s, 0.0, FlushTally::default(), &mut out);
        assert_eq!(get(&out, "wal.flush_p99_ms"), Some(0.0), "no flush, nothing slow");
        assert_eq!(get(&out, "wal.flush_mean_ms"), None);
        // 2 s with two slow flushes (40 ms), then 4 intervals of 100 fast ones (0.3 ms).
        let slow = FlushTally { buckets: [0, 0, 0, 0, 0, 2, 0, 0], sum_ns: 80_000_000 };
        step(&mut s, 2.0, slow, &mut out);
        assert_eq!(get(&out, "wal.flush_p99_ms"), Some(50.0));
        assert_eq!(get(&out, "wal.flush_mean_ms"), Some(40.0));
        let fast = FlushTally { buckets: [0, 100, 0, 0, 0, 0, 0, 0], sum_ns: 30_000_000 };
        for k in 0..4 {
            step(&mut s, 4.0 + 2.0 * k as f64, fast, &mut out);
            // 2 slow in 102 or more: still past the 99th until 200 fast ones.
            let p = get(&out, "wal.flush_p99_ms").unwrap();
            if k == 0 {
                assert_eq!(p, 50.0)
            } else {
                assert_eq!(p, 0.5)
            }
            assert_eq!(get(&out, "wal.flush_mean_ms"), Some(0.3));
        }
        // Five intervals of 2 s later, the slow ones have left the window.
        step(&mut s, 12.0, FlushTally::default(), &mut out);
        assert_eq!(get(&out, "wal.flush_p99_ms"), Some(0.5));
        for t in [14.0, 16.0, 18.0, 20.0] {
            step(&mut s, t, FlushTally::default(), &mut out);
        }
        assert_eq!(get(&out, "wal.flush_p99_ms"), Some(0.0));
    }

    #[test]
    fn subscribers_that_left_are_forgotten() {
        let mut s = Sampler::new(Duration::from_secs(1));
        let mut out = Vec::new();
        s.figures(0.0, &stats(10, &[("a", "durable", 0)]), Some(&[]), None, &mut out);
        assert!(s.caught_up_at.contains_key("a"));
        s.figures(1.0, &stats(10, &[]), Some(&[]), None, &mut out);
        assert!(s.caught_up_at.is_empty());
    }

    #[test]
    fn free_space_of_a_real_directory_is_a_number() {
        let mb = free_mb(std::path::Path::new(".")).unwrap();
        assert!(mb.is_finite() && mb >= 0.0);
    }
}
