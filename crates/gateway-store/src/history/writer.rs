//! The history writer: two tasks joined by a channel that holds one batch.
//!
//! * The **reader** owns the bus subscription (a durable cursor in WAL mode).
//!   It decides about each reading ([`Selector`]), takes every alarm
//!   transition for the journal, builds a [`Batch`] and cuts it after
//!   `commit_interval_ms` or `batch_max_values` (readings and transitions),
//!   and moves the cursor once the database task reports the batch committed.
//! * The **database task** owns the writer's one connection. It writes each
//!   batch in one transaction ([`sink`](super::sink)), with the bus position
//!   it reaches; on failure it drops the connection (never reusing one that
//!   may be inside a transaction), waits (doubling from 200 ms to 30 s) and
//!   writes the same batch again, so an outage only delays the data: the
//!   reader stops taking from the bus and the WAL keeps it. Between batches
//!   it runs maintenance jobs (summaries, retention) on the same connection,
//!   so on SQLite nothing else ever waits for the write lock.
//!
//! Exactly once: the position committed with the rows is read back at
//! start, and frames below it are skipped. The cursor is moved only after a
//! commit, so nothing committed can be lost and nothing skipped was not
//! committed. A new cursor (a new log) ignores a stored position, which
//! belongs to the old log's numbering.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_bus::{Delivery, Shutdown, Subscriber};
use gateway_model::{EventFrame, Frame, now_ns};
use tokio::sync::{mpsc, oneshot, watch};

use super::config::HistoryConfig;
use super::db::{Db, WriteConn};
use super::metrics::HistoryMetrics;
use super::select::{Selector, Verdict};
use super::sink::{self, Batch, Row};
use crate::StoreError;

/// What the writer shares with the queries, the maintenance task and the
/// health check.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Rollup widths in seconds, shortest first.
    pub widths_s: Vec<i64>,
    /// Per width: rows written before this time make their bucket stale
    /// (the summaries up to it are made, or being made).
    pub mark_before: Vec<AtomicI64>,
    /// Every reading stamped before this is written, as far as the writer knows.
    pub complete_ns: AtomicI64,
    /// The bus position written so far.
    pub committed_seq: AtomicU64,
    /// Why writes fail now (None while they work).
    pub failing: Mutex<Option<String>>,
    /// Set when the writer ended.
    pub stopped: AtomicBool,
}

impl Shared {
    pub fn new(widths_s: Vec<i64>) -> Shared {
        Shared {
            mark_before: widths_s.iter().map(|_| AtomicI64::new(i64::MIN)).collect(),
            widths_s,
            complete_ns: AtomicI64::new(i64::MIN),
            committed_seq: AtomicU64::new(0),
            failing: Mutex::new(None),
            stopped: AtomicBool::new(false),
        }
    }

    pub fn failing(&self) -> Option<String> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_failing(&self, why: Option<String>) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }
}

/// A future borrowing the writer's connection.
pub(crate) type ConnFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Work run on the writer's connection.
pub(crate) type ConnJob = Box<dyn for<'a> FnOnce(&'a mut WriteConn) -> ConnFuture<'a, u64> + Send>;

/// Work for the database task, between two batches.
pub(crate) enum Job {
    /// Answered as soon as the task is between transactions: every batch
    /// begun after the answer sees the `mark_before` set before the request.
    Barrier(oneshot::Sender<()>),
    /// Runs on the writer's connection; the answer carries its outcome.
    Run(ConnJob, oneshot::Sender<Result<u64, StoreError>>),
}

/// The channels and settings the two tasks are started with.
pub(crate) struct Parts {
    pub sub: Subscriber,
    pub selector: Selector,
    /// Frames below this are written already (the stored position).
    pub skip_below: u64,
    pub cfg: HistoryConfig,
    pub db: Db,
    pub shared: Arc<Shared>,
    pub metrics: Arc<HistoryMetrics>,
    pub jobs: mpsc::Receiver<Job>,
    pub shutdown: Shutdown,
    /// Bus head, for the backlog gauge.
    pub head: Box<dyn Fn() -> u64 + Send>,
}

/// Starts both tasks; the returned handle ends when both have.
pub(crate) fn spawn(p: Parts) -> tokio::task::JoinHandle<()> {
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
    let (committed_tx, committed_rx) = watch::channel(p.skip_below);
    let db_task = tokio::spawn(database_task(DbTask {
        db: p.db,
        batches: batch_rx,
        jobs: p.jobs,
        committed: committed_tx,
        shared: p.shared.clone(),
        metrics: p.metrics.clone(),
        shutdown: p.shutdown.clone(),
        partitions: Default::default(),
    }));
    let reader = Reader {
        sub: p.sub,
        selector: p.selector,
        skip_below: p.skip_below,
        retention_ns: p.cfg.retention.as_nanos() as i64,
        max_values: p.cfg.batch_max_values,
        interval: Duration::from_millis(p.cfg.commit_interval_ms),
        batches: Some(batch_tx),
        committed: committed_rx,
        metrics: p.metrics,
        head: p.head,
        shared: p.shared.clone(),
    };
    let shared = p.shared;
    tokio::spawn(async move {
        reader.run(p.shutdown).await;
        if let Err(e) = db_task.await {
            tracing::error!(error = %e, "The history database task failed.");
        }
        shared.stopped.store(true, Ordering::Release);
    })
}

struct Reader {
    sub: Subscriber,
    selector: Selector,
    skip_below: u64,
    retention_ns: i64,
    max_values: usize,
    interval: Duration,
    /// None once stopping: the database task then ends after the last batch.
    batches: Option<mpsc::Sender<Batch>>,
    committed: watch::Receiver<u64>,
    metrics: Arc<HistoryMetrics>,
    head: Box<dyn Fn() -> u64 + Send>,
    shared: Arc<Shared>,
}

/// Counts of readings not written, by reason, before they reach the metrics.
#[derive(Default)]
struct Skips {
    excluded: u64,
    deadband: u64,
    expired: u64,
}

impl Reader {
    async fn run(mut self, mut shutdown: Shutdown) {
        let mut batch = Batch { end_seq: self.sub.position(), ..Batch::default() };
        let mut started: Option<Instant> = None;
        let mut idle = tokio::time::interval(self.interval);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = started.map(|t| tokio::time::Instant::from_std(t + self.interval));
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                Ok(()) = self.committed.changed() => self.ack(),
                _ = sleep_until(deadline), if deadline.is_some() => {
                    if !self.cut(&mut batch, &mut started).await { return; }
                }
                _ = idle.tick(), if started.is_none() => {
                    // Nothing waiting: say how far the data is complete,
                    // and move the cursor over frames that made no rows.
                    if self.drained() && !self.cut(&mut batch, &mut started).await { return; }
                }
                d = self.sub.recv() => {
                    let Ok(d) = d else { break };
                    self.take(&d, &mut batch);
                    started.get_or_insert_with(Instant::now);
                    // Take what else is ready now, up to a full batch.
                    while batch.len() < self.max_values {
                        match self.sub.try_recv() {
                            Ok(Some(d)) => self.take(&d, &mut batch),
                            Ok(None) => {
                                batch.complete_ns = Some(now_ns() as i64);
                                break;
                            }
                            Err(_) => break,
                        }
                        // Yield now and then while catching up, so other tasks
                        // (connectors, the API) keep their share of the threads.
                        tokio::task::consume_budget().await;
                    }
                    if batch.len() >= self.max_values && !self.cut(&mut batch, &mut started).await {
                        return;
                    }
                }
            }
        }
        // Stopping: what was taken is written (the database task finishes
        // it unless the database is down, when the WAL keeps it).
        if let Some(tx) = self.batches.take()
            && (!batch.is_empty() || batch.end_seq > *self.committed.borrow())
        {
            let _ = tx.send(batch).await;
        }
        // The last commits arrive until the database task ends.
        while self.committed.changed().await.is_ok() {
            self.ack();
        }
        self.ack();
    }

    /// Whether the subscription has nothing ready now.
    fn drained(&mut self) -> bool {
        self.sub.position() >= (self.head)()
    }

    fn take(&mut self, d: &Delivery, batch: &mut Batch) {
        let oldest = (now_ns() as i64).saturating_sub(self.retention_ns);
        let mut skips = Skips::default();
        for (seq, frame) in d.frames() {
            if seq < self.skip_below {
                continue;
            }
            let f = match frame {
                Frame::Data(f) => f,
                // Alarm transitions go to the journal whatever include,
                // exclude and deadbands say: those choose readings.
                Frame::Event(e) if super::journal::is_entry(e) => {
                    batch.alarms.push(EventFrame::clone(e));
                    continue;
                }
                _ => continue,
            };
            match self.selector.admit(f, oldest) {
                Verdict::Keep { id, new } => {
                    if new {
                        batch.new_tags.push((id, f.tag.clone()));
                    }
                    batch.rows.push(Row {
                        tag: id,
                        q: super::row::quality_code(f.quality),
                        ts: f.source_ts_ns as i64,
                        value: f.value.clone(),
                    });
                }
                Verdict::Excluded => skips.excluded += 1,
                Verdict::Deadband => skips.deadband += 1,
                Verdict::Expired => skips.expired += 1,
            }
        }
        batch.end_seq = batch.end_seq.max(d.end_seq());
        batch.complete_ns = None;
        self.metrics.skipped("excluded", skips.excluded);
        self.metrics.skipped("deadband", skips.deadband);
        self.metrics.skipped("expired", skips.expired);
    }

    /// Hands the batch to the database task (waiting while it is busy with
    /// the previous one); false once that task has ended.
    async fn cut(&mut self, batch: &mut Batch, started: &mut Option<Instant>) -> bool {
        *started = None;
        if batch.complete_ns.is_none() && self.drained() {
            batch.complete_ns = Some(now_ns() as i64);
        }
        let end = batch.end_seq;
        let next = Batch { end_seq: end, ..Batch::default() };
        let full = std::mem::replace(batch, next);
        let backlog = (self.head)().saturating_sub(*self.committed.borrow());
        self.metrics.backlog_frames.set(backlog as i64);
        match &self.batches {
            Some(tx) => tx.send(full).await.is_ok(),
            None => false,
        }
    }

    fn ack(&mut self) {
        let end = *self.committed.borrow_and_update();
        if let Err(e) = self.sub.ack(end) {
            tracing::warn!(error = %e, "Cannot move the history cursor.");
        }
        self.shared.committed_seq.store(end, Ordering::Release);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct DbTask {
    db: Db,
    batches: mpsc::Receiver<Batch>,
    jobs: mpsc::Receiver<Job>,
    committed: watch::Sender<u64>,
    shared: Arc<Shared>,
    metrics: Arc<HistoryMetrics>,
    shutdown: Shutdown,
    /// PostgreSQL: days known to have a partition.
    partitions: std::collections::HashSet<i64>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

async fn database_task(mut t: DbTask) {
    let mut conn: Option<WriteConn> = None;
    let mut jobs_open = true;
    loop {
        tokio::select! {
            biased;
            b = t.batches.recv() => match b {
                Some(b) => {
                    if !t.write(&mut conn, b).await {
                        break;
                    }
                }
                None => break,
            },
            j = t.jobs.recv(), if jobs_open => match j {
                Some(j) => t.run_job(&mut conn, j).await,
                None => jobs_open = false,
            },
        }
    }
    if let Some(c) = conn {
        c.close().await;
    }
}

impl DbTask {
    /// Writes `b` until it is committed; false if stopping made it give up
    /// (the frames stay in the WAL, not acknowledged).
    async fn write(&mut self, conn: &mut Option<WriteConn>, b: Batch) -> bool {
        if b.is_empty() && b.new_tags.is_empty() {
            // Frames that made no rows: nothing to store, only to move past.
            self.committed(&b);
            return true;
        }
        let mut wait = BACKOFF_MIN;
        loop {
            let started = Instant::now();
            match self.try_write(conn, &b).await {
                Ok(w) => {
                    self.metrics.transaction_seconds.observe(started.elapsed().as_secs_f64());
                    self.metrics.transactions.inc();
                    self.metrics.values_written.inc_by(b.rows.len() as u64);
                    self.metrics.alarm_events_written.inc_by(w.alarm_events);
                    self.metrics.rows.inc_by(w.rows as i64);
                    self.metrics.up.set(1);
                    if self.shared.failing().is_some() {
                        tracing::info!("History writes work again.");
                        self.shared.set_failing(None);
                    }
                    self.committed(&b);
                    return true;
                }
                Err(e) => {
                    self.metrics.write_errors.inc();
                    self.metrics.up.set(0);
                    if let Some(c) = conn.take() {
                        // Never reused: it may still be inside the failed transaction.
                        c.close().await;
                    }
                    if self.shared.failing().is_none() {
                        tracing::error!(error = %e, at = %self.db.shown, "History writes are failing; the WAL keeps the data meanwhile.");
                    }
                    self.shared.set_failing(Some(e.to_string()));
                    if self.shutdown.is_set() {
                        return false;
                    }
                    let mut stop = self.shutdown.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(jitter(wait)) => {}
                        _ = stop.wait() => return false,
                    }
                    wait = (wait * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn try_write(&mut self, conn: &mut Option<WriteConn>, b: &Batch) -> Result<sink::Written, StoreError> {
        let widths: Vec<i64> = self.shared.widths_s.clone();
        let marks: Vec<i64> = self.shared.mark_before.iter().map(|m| m.load(Ordering::Acquire)).collect();
        let dirty = sink::dirty_buckets(&b.rows, &widths, &marks);
        let c = self.connection(conn).await?;
        Ok(match c {
            WriteConn::Sqlite(c) => sink::write_sqlite(c, b, &dirty).await?,
            WriteConn::Postgres(c) => sink::write_pg(c, b, &dirty, &mut self.partitions).await?,
        })
    }

    async fn connection<'a>(&mut self, conn: &'a mut Option<WriteConn>) -> Result<&'a mut WriteConn, StoreError> {
        if conn.is_none() {
            let mut c = self.db.connect.open().await?;
            if let WriteConn::Postgres(pg) = &mut c {
                self.partitions = sink::pg_partitions(pg).await?.into_keys().collect();
            }
            *conn = Some(c);
        }
        Ok(conn.as_mut().expect("connected just above"))
    }

    fn committed(&mut self, b: &Batch) {
        if let Some(c) = b.complete_ns {
            self.shared.complete_ns.fetch_max(c, Ordering::AcqRel);
        }
        self.committed.send_replace(b.end_seq);
    }

    async fn run_job(&mut self, conn: &mut Option<WriteConn>, job: Job) {
        match job {
            Job::Barrier(tx) => {
                let _ = tx.send(());
            }
            Job::Run(f, tx) => {
                let result = match self.connection(conn).await {
                    Ok(c) => f(c).await,
                    Err(e) => Err(e),
                };
                if result.is_err()
                    && let Some(c) = conn.take()
                {
                    c.close().await;
                }
                let _ = tx.send(result);
            }
        }
    }
}

/// `d` give or take a quarter, so gateways that lost one database do not
/// all retry in step.
fn jitter(d: Duration) -> Duration {
    let nanos = now_ns();
    let spread = (nanos % 500) as f64 / 1000.0 - 0.25;
    d.mul_f64(1.0 + spread)
}
