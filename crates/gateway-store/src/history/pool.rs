//! The query pool that adapts to load: a gate in front of the sqlx pool that
//! lets at most `size` queries hold a connection, `size` following the
//! measured demand between `min_connections` (the base) and
//! `max_connections` (the cap).
//!
//! The original system's formula was `max = base * (1 + load_factor * 9)`,
//! capped at 100, with base 5 and an unstated load factor. Here the load
//! factor is measured: every 250 ms the controller ([`Controller`], pure, unit
//! tested) takes the peak of queries in flight plus queries waiting, and
//! sizes the gate 25% above it, which is the seed's formula with
//! `load_factor = (1.25 * demand / base - 1) / 9`. It grows at once when
//! queries waited for a connection, and shrinks only after the demand stayed
//! low for 10 s, so a burst does not make it flap. Unlike the seed's formula
//! it also stops growing when more connections stopped helping: if queries
//! got more than twice as slow as the best seen while the rate answered did
//! not rise, the database (or the CPU) is saturated and more concurrency
//! would only queue inside it, at the cost of a connection's memory each.
//!
//! It must never let a query wait forever: waiting for the gate counts
//! towards the pool's `acquire_timeout_s`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metrics::HistoryMetrics;
use crate::StoreError;

/// How often the controller looks.
pub const TICK: Duration = Duration::from_millis(250);

/// Ticks of low demand before the size shrinks (10 s).
const SHRINK_AFTER_TICKS: u32 = 40;

/// What one tick measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Window {
    /// Peak of (queries holding a connection + queries waiting).
    pub demand: usize,
    /// Whether any query waited more than a millisecond for the gate.
    pub waited: bool,
    /// Queries that ended.
    pub done: u64,
    /// Their mean time holding a connection, in µs (0 if none ended).
    pub mean_us: f64,
}

/// The sizing rule, apart from the gate so it can be tested tick by tick.
#[derive(Clone, Debug)]
pub struct Controller {
    base: usize,
    cap: usize,
    size: usize,
    low_ticks: u32,
    /// Best mean query time seen (µs), creeping up slowly so an old best
    /// does not hold forever.
    best_us: f64,
    /// Queries answered in the tick before.
    last_done: u64,
}

impl Controller {
    /// Starts at `base`.
    pub fn new(base: usize, cap: usize) -> Controller {
        let base = base.max(1);
        Controller { base, cap: cap.max(base), size: base, low_ticks: 0, best_us: f64::INFINITY, last_done: 0 }
    }

    /// The size now.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The seed's load factor for the size now: `size = base * (1 + lf * 9)`.
    pub fn load_factor(&self) -> f64 {
        ((self.size as f64 / self.base as f64 - 1.0) / 9.0).clamp(0.0, 1.0)
    }

    /// Takes one tick's measurements; returns the new size.
    pub fn tick(&mut self, w: Window) -> usize {
        if w.done > 0 {
            self.best_us = self.best_us.min(w.mean_us);
        }
        // Forget a best that no longer holds, by 1% a tick.
        self.best_us *= 1.01;
        let slow = w.done > 0 && w.mean_us > 2.0 * self.best_us;
        let saturated = slow && w.done <= self.last_done;
        self.last_done = w.done;
        let wanted = ((w.demand as f64 * 1.25).ceil() as usize).clamp(self.base, self.cap);
        if w.waited && !saturated {
            self.low_ticks = 0;
            self.size = wanted.max(self.size + 1).max(self.size * 5 / 4).min(self.cap);
        } else if wanted < self.size {
            self.low_ticks += 1;
            if self.low_ticks >= SHRINK_AFTER_TICKS {
                self.low_ticks = 0;
                self.size = wanted.max(self.size * 3 / 4).max(self.base);
            }
        } else {
            self.low_ticks = 0;
        }
        self.size
    }
}

#[derive(Default)]
struct Measures {
    demand_peak: usize,
    waited: bool,
    done: u64,
    busy_us: f64,
}

/// The gate: permits for queries, its size set by a [`Controller`] (or fixed).
pub struct Gate {
    sem: Arc<Semaphore>,
    inner: Mutex<GateInner>,
    in_use: AtomicU64,
    waiting: AtomicU64,
    timeout: Duration,
    metrics: Arc<HistoryMetrics>,
}

struct GateInner {
    ctl: Option<Controller>,
    size: usize,
    /// Permits to take back as they are returned (a shrink below what is in use).
    owed: usize,
    m: Measures,
}

/// A query's right to a connection; returned on drop.
pub struct Pass {
    gate: Arc<Gate>,
    permit: Option<OwnedSemaphorePermit>,
    since: Instant,
}

impl Gate {
    /// A gate of `base` growing to `cap` (adaptive), or always `cap` (fixed).
    pub fn new(base: usize, cap: usize, adaptive: bool, timeout: Duration, metrics: Arc<HistoryMetrics>) -> Arc<Gate> {
        let ctl = adaptive.then(|| Controller::new(base, cap));
        let size = ctl.as_ref().map_or(cap.max(1), Controller::size);
        metrics.pool_size.set(size as i64);
        Arc::new(Gate {
            sem: Arc::new(Semaphore::new(size)),
            inner: Mutex::new(GateInner { ctl, size, owed: 0, m: Measures::default() }),
            in_use: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            timeout,
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_demand(&self) {
        let demand = (self.in_use.load(Ordering::Relaxed) + self.waiting.load(Ordering::Relaxed)) as usize;
        let mut g = self.lock();
        g.m.demand_peak = g.m.demand_peak.max(demand);
    }

    /// Waits for a pass, at most the pool's acquire timeout.
    pub async fn pass(self: &Arc<Gate>) -> Result<Pass, StoreError> {
        let t = Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.metrics.pool_waiting.inc();
        self.note_demand();
        let permit = tokio::time::timeout(self.timeout, self.sem.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.metrics.pool_waiting.dec();
        let permit = match permit {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(StoreError::Unavailable("the history query pool is closed".into())),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "no history query connection became free within {} s",
                    self.timeout.as_secs()
                )));
            }
        };
        let waited = t.elapsed();
        self.metrics.pool_acquire_seconds.observe(waited.as_secs_f64());
        self.in_use.fetch_add(1, Ordering::Relaxed);
        self.metrics.pool_in_use.inc();
        if waited > Duration::from_millis(1) {
            self.lock().m.waited = true;
        }
        self.note_demand();
        Ok(Pass { gate: self.clone(), permit: Some(permit), since: Instant::now() })
    }

    /// The size now.
    pub fn size(&self) -> usize {
        self.lock().size
    }

    /// One controller step (every [`TICK`]); nothing for a fixed gate.
    pub fn tick(&self) {
        let mut g = self.lock();
        let m = std::mem::take(&mut g.m);
        let in_flight = (self.in_use.load(Ordering::Relaxed) + self.waiting.load(Ordering::Relaxed)) as usize;
        let Some(ctl) = g.ctl.as_mut() else { return };
        let w = Window {
            demand: m.demand_peak.max(in_flight),
            // Queries still waiting have waited too, and may never pass at
            // this size.
            waited: m.waited || self.waiting.load(Ordering::Relaxed) > 0,
            done: m.done,
            mean_us: if m.done > 0 { m.busy_us / m.done as f64 } else { 0.0 },
        };
        let new = ctl.tick(w);
        let old = g.size;
        if new > old {
            // Paying back what a shrink still owes first.
            let grow = new - old;
            let repaid = grow.min(g.owed);
            g.owed -= repaid;
            self.sem.add_permits(grow - repaid);
        } else if new < old {
            let shrink = old - new;
            let forgotten = self.sem.forget_permits(shrink);
            g.owed += shrink - forgotten;
        }
        g.size = new;
        self.metrics.pool_size.set(new as i64);
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let gate = &self.gate;
        gate.in_use.fetch_sub(1, Ordering::Relaxed);
        gate.metrics.pool_in_use.dec();
        let mut g = gate.lock();
        g.m.done += 1;
        g.m.busy_us += self.since.elapsed().as_secs_f64() * 1e6;
        if g.owed > 0 {
            g.owed -= 1;
            if let Some(p) = self.permit.take() {
                p.forget();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(demand: usize, waited: bool) -> Window {
        Window { demand, waited, done: 100, mean_us: 1000.0 }
    }

    #[test]
    fn the_size_follows_demand_up_at_once_and_down_after_ten_quiet_seconds() {
        let mut c = Controller::new(5, 50);
        assert_eq!(c.size(), 5);
        assert_eq!(c.tick(busy(3, false)), 5, "demand under the base keeps the base");
        assert_eq!(c.tick(busy(20, true)), 25, "waiting queries grow it to 25% over the demand");
        assert!((c.load_factor() - (25.0 / 5.0 - 1.0) / 9.0).abs() < 1e-9);
        assert_eq!(c.tick(busy(200, true)), 50, "never past the cap");
        for _ in 0..SHRINK_AFTER_TICKS - 1 {
            assert_eq!(c.tick(busy(2, false)), 50, "a short lull does not shrink it");
        }
        assert_eq!(c.tick(busy(2, false)), 37, "then it shrinks by a quarter at most");
        let mut last = 37;
        for _ in 0..20 * SHRINK_AFTER_TICKS {
            last = c.tick(busy(2, false));
        }
        assert_eq!(last, 5, "and in time back to the base");
    }

    #[test]
    fn it_stops_growing_when_queries_got_slower_without_more_being_answered() {
        let mut c = Controller::new(5, 50);
        c.tick(Window { demand: 10, waited: true, done: 1000, mean_us: 500.0 });
        let size = c.size();
        // Twice as slow, fewer answered: more connections would only queue.
        assert_eq!(c.tick(Window { demand: 40, waited: true, done: 900, mean_us: 2000.0 }), size);
        // Answering more again: it may grow.
        assert!(c.tick(Window { demand: 40, waited: true, done: 2000, mean_us: 2000.0 }) > size);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_waiting_at_a_full_gate_passes_once_the_gate_grows() {
        let metrics = Arc::new(HistoryMetrics::unregistered());
        let gate = Gate::new(1, 4, true, Duration::from_secs(30), metrics.clone());
        let first = gate.pass().await.unwrap();
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.pass().await.map(drop) })
        };
        while gate.waiting.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        gate.tick();
        assert_eq!(gate.size(), 3, "two in demand, 25% over");
        assert_eq!(metrics.pool_size.get(), 3);
        waiter.await.unwrap().unwrap();
        drop(first);
        assert_eq!(gate.sem.available_permits(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fixed_gate_keeps_its_size() {
        let gate = Gate::new(1, 4, false, Duration::from_secs(30), Arc::new(HistoryMetrics::unregistered()));
        let passes = [gate.pass().await.unwrap(), gate.pass().await.unwrap(), gate.pass().await.unwrap()];
        gate.tick();
        assert_eq!(gate.size(), 4);
        drop(passes);
        assert_eq!(gate.sem.available_permits(), 4);
    }
}
