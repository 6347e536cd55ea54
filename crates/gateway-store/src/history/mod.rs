//! History: every reading the gateway sees, with its quality, kept in SQLite
//! (the default: `history.db` in the data directory) or PostgreSQL, with
//! summaries per tag and time bucket, retention, and the queries the API
//! answers: raw points, one row per interval with aggregate functions, and
//! the value at a point in time. Beside the readings it keeps the alarm
//! journal ([`journal`]): every alarm transition the bus carries, written
//! with the readings of its batch, kept for `alarm_retention`.
//!
//! ```text
//!  bus ──durable cursor "history"──> reader ──Batch──> database task ──one transaction──> rows + position
//!   ^                                 (select:           (SQLite multi-row INSERT,            |
//!   └──────── ack after commit ────── include/exclude,    PostgreSQL binary COPY)             v
//!                                      deadband)                                    maintenance: rollups,
//!  API ──> queries (snapshot) <── adaptive pool gate                                retention, size
//! ```
//!
//! * [`HistoryConfig`] is the `[history]` section ([`config`] says where
//!   history lives when the section names no database).
//! * [`History::open`] connects and migrates (the history schema is its own
//!   migration set, `migrations/history/`); [`History::start`] subscribes
//!   to the bus and starts the writer, the maintenance task and the pool's
//!   controller; [`History::stop`] writes what was taken and stops them.
//! * Exactly once: the writer's bus position is committed with its rows
//!   (readings and alarm transitions), a
//!   restart skips what is below it, and the cursor moves only after a
//!   commit. A SIGKILL at any point loses nothing that was durable on the
//!   bus and writes nothing twice (`writer` has the details).
//! * An unavailable or slow database delays history only: the writer stops
//!   taking from the bus (the WAL keeps the data, other subscribers go on),
//!   reconnects with backoff, then catches up at full speed.
//!
//! It must never slow the bus or another subscriber down (it is one more
//! durable cursor), never take the metadata store's SQLite write lock (its
//! own file), and never hold a transaction open across a wait.

pub mod config;
mod db;
mod error;
pub mod journal;
mod maintain;
pub mod metrics;
pub mod pool;
mod query;
mod read;
mod row;
mod select;
mod sink;
pub mod summary;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gateway_bus::{Bus, Filter, Persistence, ShutdownSwitch, SubscribeOptions};
use gateway_model::FrameKind;
use tokio::sync::{Mutex as AsyncMutex, mpsc};

pub use config::{DeadbandRule, HISTORY_SQLITE_FILE, HistoryConfig, PoolMode, RollupConfig, Span, SpanError};
pub use error::HistoryError;
pub use journal::{AlarmCursor, AlarmEvent, AlarmPage, AlarmQuery, parse_priority, priority_name};
pub use maintain::Pass;
pub use metrics::HistoryMetrics;
pub use query::{AggQuery, AggSeries, AggSources, Cursor, MAX_TAGS, RawPage, RawQuery, Series, values};
pub use read::Point;
pub use summary::{Agg, Summary};

use crate::{DatabaseConfig, Dialect, StoreError};
use db::Db;
use maintain::Maintainer;
use pool::Gate;
use query::Queries;
use read::Conn;
use writer::Shared;

/// The name of the bus cursor the writer reads through.
pub const CURSOR: &str = "history";

/// The history store. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct History {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    cfg: HistoryConfig,
    queries: Queries,
    shared: Arc<Shared>,
    metrics: Arc<HistoryMetrics>,
    gate: Arc<Gate>,
    running: AsyncMutex<Option<Running>>,
}

struct Running {
    stop: ShutdownSwitch,
    writer: tokio::task::JoinHandle<()>,
    others: Vec<tokio::task::JoinHandle<()>>,
    /// Shared by the maintenance task and [`History::maintain`]: one pass
    /// at a time, and what it learnt (slice lengths) kept between passes.
    maintainer: Arc<AsyncMutex<Maintainer>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("dialect", &self.inner.db.dialect).field("at", &self.inner.db.shown).finish()
    }
}

impl History {
    /// Opens (creating if needed) the history database `cfg` says, beside
    /// the metadata's (`meta`, in `data_dir`) unless it names its own, and
    /// brings its schema up to date. Nothing is written until [`History::start`].
    pub async fn open(
        cfg: &HistoryConfig,
        meta: &DatabaseConfig,
        data_dir: &Path,
        metrics: Arc<HistoryMetrics>,
    ) -> Result<History, HistoryError> {
        cfg.validate().map_err(|e| StoreError::Config(e.under("history")))?;
        let db = Db::open(cfg, meta, data_dir).await?;
        let widths: Vec<i64> = cfg.rollup_widths_s().into_iter().map(|w| w as i64).collect();
        let shared = Arc::new(Shared::new(widths.clone()));
        let timeout = Duration::from_secs(db.pool_cfg.acquire_timeout_s);
        let gate = Gate::new(
            db.pool_cfg.min_connections.max(1) as usize,
            db.pool_cfg.max_connections as usize,
            cfg.pool == PoolMode::Adaptive,
            timeout,
            metrics.clone(),
        );
        let queries = Queries::new(db.pool.clone(), gate.clone(), metrics.clone(), widths, cfg.max_rows);
        Ok(History {
            inner: Arc::new(Inner {
                db,
                cfg: cfg.clone(),
                queries,
                shared,
                metrics,
                gate,
                running: AsyncMutex::new(None),
            }),
        })
    }

    /// Which database history is in.
    pub fn dialect(&self) -> Dialect {
        self.inner.db.dialect
    }

    /// Where it is (a file, or a URL without its password).
    pub fn location(&self) -> &str {
        &self.inner.db.shown
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Arc<HistoryMetrics> {
        &self.inner.metrics
    }

    /// The `[history]` section it runs with.
    pub fn config(&self) -> &HistoryConfig {
        &self.inner.cfg
    }

    /// Subscribes to `bus` (the subscription exists when this returns:
    /// start it before the drivers) and starts the writer, the maintenance
    /// task and the pool's controller. In WAL mode the writer reads through
    /// the durable cursor [`CURSOR`]; in memory mode it reads like any lossy
    /// subscriber and may miss readings under load.
    pub async fn start(&self, bus: &Bus) -> Result<(), HistoryError> {
        let mut running = self.inner.running.lock().await;
        if running.is_some() {
            return Ok(());
        }
        let inner = &self.inner;
        let cursor_existed = bus.wal().is_some_and(|w| w.cursors().iter().any(|(name, _)| name == CURSOR));
        let opts = match bus.settings().persistence {
            Persistence::Wal => SubscribeOptions::durable(CURSOR),
            Persistence::Memory => SubscribeOptions::lossy(CURSOR, 1 << 20),
        }
        // Events for the alarm journal; the writer ignores those that are
        // not alarm transitions.
        .filter(Filter::all().kinds([FrameKind::Data, FrameKind::Event]));
        let sub =
            bus.subscribe(opts).map_err(|e| StoreError::Unavailable(format!("cannot subscribe to the bus: {e}")))?;
        let (st, tags) = {
            let mut conn = Conn::acquire(&inner.db.pool).await?;
            let mut snap = conn.snapshot().await?;
            (snap.state().await?, snap.tags().await?)
        };
        let stored = st.get(sink::state::BUS_SEQ).and_then(|v| u64::try_from(*v).ok());
        let skip_below = match (cursor_existed, stored) {
            (true, Some(s)) if s <= bus.head_seq() => s,
            (true, Some(s)) => {
                tracing::warn!(
                    stored = s,
                    head = bus.head_seq(),
                    "History says it wrote frames the bus has not numbered yet (the log was replaced?); \
                     starting from the cursor."
                );
                0
            }
            (false, Some(_)) => {
                tracing::info!("A new bus log: history starts from its newest frame.");
                0
            }
            (_, None) => 0,
        };
        for (i, w) in inner.shared.widths_s.iter().enumerate() {
            if let Some(v) = st.get(&sink::state::rollup(*w)) {
                inner.shared.mark_before[i].store(*v, Ordering::Release);
            }
        }
        if let Some(c) = st.get(sink::state::COMPLETE_NS) {
            inner.shared.complete_ns.fetch_max(*c, Ordering::AcqRel);
        }
        inner.shared.committed_seq.store(skip_below.max(sub.position()), Ordering::Release);
        let (switch, shutdown) = gateway_bus::Shutdown::new();
        let (jobs_tx, jobs_rx) = mpsc::channel(4);
        let head_bus = bus.clone();
        let writer = writer::spawn(writer::Parts {
            sub,
            selector: select::Selector::new(&inner.cfg, tags.into_iter().collect::<HashMap<_, _>>()),
            skip_below,
            cfg: inner.cfg.clone(),
            db: inner.db.clone(),
            shared: inner.shared.clone(),
            metrics: inner.metrics.clone(),
            jobs: jobs_rx,
            shutdown: switch.subscribe(),
            head: Box::new(move || head_bus.head_seq()),
        });
        let maintainer = Arc::new(AsyncMutex::new(Maintainer::new(
            inner.db.clone(),
            inner.cfg.clone(),
            inner.shared.clone(),
            inner.metrics.clone(),
            jobs_tx,
        )));
        let mut others = vec![tokio::spawn(maintain::run(maintainer.clone(), switch.subscribe()))];
        let gate = inner.gate.clone();
        let mut stop = shutdown;
        others.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(pool::TICK);
            loop {
                tokio::select! {
                    _ = stop.wait() => return,
                    _ = tick.tick() => gate.tick(),
                }
            }
        }));
        tracing::info!(at = %inner.db.shown, skip_below, "History is recording.");
        *running = Some(Running { stop: switch, writer, others, maintainer });
        Ok(())
    }

    /// Stops the writer (after it wrote what it took from the bus, unless
    /// the database is down: then the WAL keeps it) and the other tasks.
    pub async fn stop(&self) {
        let Some(r) = self.inner.running.lock().await.take() else { return };
        r.stop.stop();
        for t in r.others {
            let _ = t.await;
        }
        // The last sender of jobs: the database task ends after the last batch.
        drop(r.maintainer);
        if let Err(e) = r.writer.await {
            tracing::error!(error = %e, "The history writer failed.");
        }
    }

    /// Stops and closes the query pool.
    pub async fn close(&self) {
        self.stop().await;
        self.inner.db.close().await;
    }

    /// The bus position written so far (everything below it is stored).
    pub fn written_seq(&self) -> u64 {
        self.inner.shared.committed_seq.load(Ordering::Acquire)
    }

    /// Ok while the writer works; the reason when its writes fail or it stopped.
    pub fn health(&self) -> Result<(), String> {
        if let Some(why) = self.inner.shared.failing() {
            return Err(why);
        }
        if self.inner.shared.stopped.load(Ordering::Acquire) {
            return Err("the history writer has stopped".into());
        }
        Ok(())
    }

    /// One maintenance pass now, as if the time were `now_ns` (rollups of
    /// what is complete, stale buckets, one retention step), for tests and
    /// tools; the running task does the same every few seconds.
    pub async fn maintain(&self, now_ns: i64) -> Result<Pass, HistoryError> {
        let m = {
            let running = self.inner.running.lock().await;
            running.as_ref().map(|r| r.maintainer.clone()).ok_or(HistoryError::Stopped)?
        };
        let mut m = m.lock().await;
        Ok(m.pass(now_ns).await?)
    }

    /// Rows stored and bytes on disk, measured now (also into the metrics).
    pub async fn measure(&self) -> Result<(i64, u64), HistoryError> {
        let inner = &self.inner;
        let (tx, _rx) = mpsc::channel(1);
        let m = Maintainer::new(inner.db.clone(), inner.cfg.clone(), inner.shared.clone(), inner.metrics.clone(), tx);
        Ok(m.measure().await?)
    }

    /// A page of raw points.
    pub async fn raw(&self, q: &RawQuery) -> Result<RawPage, HistoryError> {
        self.inner.queries.raw(q).await
    }

    /// One row per bucket; also says how much of the range rollups covered.
    pub async fn aggregate(&self, q: &AggQuery) -> Result<(Vec<AggSeries>, AggSources), HistoryError> {
        self.inner.queries.aggregate(q).await
    }

    /// The value of `tag` at `at_ns`: its newest point at or before then.
    pub async fn latest(&self, tag: &str, at_ns: i64) -> Result<Option<Point>, HistoryError> {
        self.inner.queries.latest(tag, at_ns).await
    }

    /// A page of the alarm journal: transitions in `[from, to)` passing the
    /// query's filters, newest first; `next` continues with older ones.
    pub async fn alarm_events(&self, q: &AlarmQuery) -> Result<AlarmPage, HistoryError> {
        self.inner.queries.alarm_events(q).await
    }

    /// The most rows a query may return (`[history] max_rows`).
    pub fn max_rows(&self) -> usize {
        self.inner.cfg.max_rows
    }

    /// The query pool's gate (its size, for metrics and benches).
    pub fn pool_size(&self) -> usize {
        self.inner.gate.size()
    }
}
