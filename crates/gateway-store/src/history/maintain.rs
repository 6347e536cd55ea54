//! Work that keeps history in shape, in bounded steps between the writer's
//! transactions: making summaries (rollups) of buckets once their data is
//! complete, summarising again the buckets late readings changed, deleting
//! what is past its retention, and measuring the bytes on disk.
//!
//! Summaries: a level's buckets are made up to the time before which every
//! reading has been written (the writer's `complete_ns`, less a grace for
//! readings stamped just before they were published), one hour of buckets
//! a step. A wider level is made from a narrower one when that covers the
//! range and nothing in it is stale, else from raw values. Before reading
//! (and, for a new level, before looking for its oldest value), the level's
//! mark is raised and the writer passes a barrier, so a reading written
//! after the read is marked stale rather than missed.
//!
//! Retention: on SQLite, raw rows are deleted by slices of time through the
//! clustered key (each tag's oldest rows are contiguous), a slice sized to
//! delete about 20,000 rows, each slice one short transaction of the writer;
//! on PostgreSQL whole day partitions are detached (concurrently) and dropped
//! once all of the day is past the retention, so up to a day more is kept.
//! Summaries are deleted by slices on both. Alarm journal entries older
//! than `alarm_retention` are deleted oldest first, a bounded number a step
//! ([`journal`](super::journal)).
//!
//! It must never block the writer for long: every step is bounded, and runs
//! on the writer's connection only for its writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gateway_model::now_ns;
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::{mpsc, oneshot};

use super::config::HistoryConfig;
use super::db::{Db, WriteConn};
use super::journal;
use super::metrics::HistoryMetrics;
use super::read::{Conn, Summaries, Tags};
use super::sink::{
    DAY_NS, add_state_pg, add_state_sqlite, partition_name, pg_partitions, set_state_pg, set_state_sqlite, state,
};
use super::summary::{Summary, bucket_of};
use super::writer::{ConnFuture, Job, Shared};
use crate::StoreError;

/// Readings stamped up to this long before they were published are still
/// in their bucket's first summary.
pub const GRACE_NS: i64 = 2_000_000_000;

/// The most raw time one summary step reads: an hour.
const STEP_NS: i64 = 3_600_000_000_000;

/// Rows a retention step aims to delete.
const DELETE_TARGET: u64 = 20_000;

/// Stale buckets summarised again per step.
const DIRTY_STEP: usize = 1_000;

/// The maintenance task's view of history.
pub(crate) struct Maintainer {
    pub db: Db,
    pub cfg: HistoryConfig,
    pub shared: Arc<Shared>,
    pub metrics: Arc<HistoryMetrics>,
    pub jobs: mpsc::Sender<Job>,
    /// Per retention target (raw, then each rollup width): the slice length
    /// that deleted about the target last time.
    slices: BTreeMap<i64, i64>,
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Buckets summarised (new or again).
    pub summarised: u64,
    /// Rows deleted by retention.
    pub deleted: u64,
    /// Whether a step stopped at its bound with more to do.
    pub more: bool,
}

impl Maintainer {
    pub fn new(
        db: Db,
        cfg: HistoryConfig,
        shared: Arc<Shared>,
        metrics: Arc<HistoryMetrics>,
        jobs: mpsc::Sender<Job>,
    ) -> Maintainer {
        Maintainer { db, cfg, shared, metrics, jobs, slices: BTreeMap::new() }
    }

    /// Runs `f` on the writer's connection, between its transactions.
    async fn on_writer<T: Send + 'static>(
        &self,
        f: impl for<'a> FnOnce(&'a mut WriteConn) -> ConnFuture<'a, T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let out: Arc<std::sync::Mutex<Option<T>>> = Arc::new(std::sync::Mutex::new(None));
        let slot = out.clone();
        let job = Job::Run(
            Box::new(move |c: &mut WriteConn| -> ConnFuture<'_, u64> {
                let fut = f(c);
                Box::pin(async move {
                    let v = fut.await?;
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
                    Ok(0)
                })
            }),
            tx,
        );
        self.jobs.send(job).await.map_err(|_| StoreError::Unavailable("the history writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("the history writer has stopped".into()))??;
        let v = out.lock().unwrap_or_else(|e| e.into_inner()).take();
        v.ok_or_else(|| StoreError::Unavailable("the history writer dropped a job".into()))
    }

    async fn barrier(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the history writer has stopped".into());
        self.jobs.send(Job::Barrier(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// One pass of everything, as of `now` (the wall clock but in tests).
    pub async fn pass(&mut self, now: i64) -> Result<Pass, StoreError> {
        let mut p = Pass::default();
        for i in 0..self.shared.widths_s.len() {
            let (n, more) = self.summarise(i).await?;
            p.summarised += n;
            p.more |= more;
        }
        let (n, more) = self.resummarise(now).await?;
        p.summarised += n;
        p.more |= more;
        let (n, more) = self.retain(now).await?;
        p.deleted += n;
        p.more |= more;
        self.metrics.retention_deleted.inc_by(n);
        Ok(p)
    }

    /// One step of level `i`: returns buckets made and whether more are due.
    async fn summarise(&mut self, i: usize) -> Result<(u64, bool), StoreError> {
        let w = self.shared.widths_s[i];
        let wn = w * 1_000_000_000;
        let complete = self.shared.complete_ns.load(Ordering::Acquire);
        if complete == i64::MIN {
            return Ok((0, false));
        }
        let target = bucket_of(complete.saturating_sub(GRACE_NS), wn);
        let mut conn = Conn::acquire(&self.db.pool).await?;
        let done_to = {
            let mut snap = conn.snapshot().await?;
            snap.state().await?.get(&state::rollup(w)).copied()
        };
        let from = match done_to {
            Some(v) => v,
            None => {
                // A new level starts at the oldest raw value, or (no data
                // yet) at the target, and its watermark never passes the
                // target. The mark is raised to the target and the writer
                // passes the barrier before the oldest value is looked for,
                // so a reading written meanwhile is either seen here or makes
                // its bucket stale. (Looked for first, a reading written in
                // between, or every reading when there were none yet, fell
                // under the watermark with no stale mark: queries trusted
                // summaries that never counted it, for good.)
                self.shared.mark_before[i].fetch_max(target, Ordering::AcqRel);
                self.barrier().await?;
                let oldest = conn.snapshot().await?.oldest().await?;
                bucket_of(oldest.unwrap_or(target), wn)
            }
        };
        if from >= target {
            if done_to.is_none() {
                self.set_watermark(w, target).await?;
            }
            return Ok((0, false));
        }
        let to = target.min(from.saturating_add(STEP_NS.max(wn)));
        self.shared.mark_before[i].fetch_max(to, Ordering::AcqRel);
        self.barrier().await?;
        let (rows, stale) = {
            let mut snap = conn.snapshot().await?;
            let stale = snap.dirty(w, None, from, to, usize::MAX).await?;
            let st = snap.state().await?;
            let finer = self.shared.widths_s[..i].iter().rev().copied().find(|f| w % f == 0);
            let mut rows = None;
            if let Some(f) = finer
                && st.get(&state::rollup(f)).is_some_and(|v| *v >= to)
                && snap.dirty(f, None, from, to, 1).await?.is_empty()
            {
                rows = Some(merge_to(snap.all_rollups(f, from, to).await?, wn));
            }
            let rows = match rows {
                Some(r) => r,
                None => snap.summaries(Tags::All, from, to, wn).await?,
            };
            (rows, stale)
        };
        drop(conn);
        let n = rows.len() as u64;
        self.apply(w, rows, stale, Some(to)).await?;
        Ok((n, to < target))
    }

    async fn set_watermark(&self, w: i64, to: i64) -> Result<(), StoreError> {
        self.apply(w, Vec::new(), Vec::new(), Some(to)).await
    }

    /// Stores summaries of width `w`, clears the stale marks read with them
    /// (unless marked again since) and moves the level's watermark.
    async fn apply(
        &self,
        w: i64,
        rows: Summaries,
        stale: Vec<(i32, i64, i64)>,
        to: Option<i64>,
    ) -> Result<(), StoreError> {
        self.on_writer(move |c| {
            Box::pin(async move {
                match c {
                    WriteConn::Sqlite(c) => {
                        let mut tx = c.begin_with("BEGIN IMMEDIATE").await?;
                        for chunk in rows.chunks(500) {
                            let mut sql = String::from(
                                "INSERT INTO history_rollups (width_s, tag_id, bucket, n, min, max, sum, first_ts, first, \
                                 last_ts, last) VALUES ",
                            );
                            for j in 0..chunk.len() {
                                sql.push_str(if j == 0 { "(?,?,?,?,?,?,?,?,?,?,?)" } else { ",(?,?,?,?,?,?,?,?,?,?,?)" });
                            }
                            sql.push_str(UPSERT);
                            let mut q = sqlx::query(AssertSqlSafe(sql));
                            for (tag, bucket, s) in chunk {
                                q = q
                                    .bind(w)
                                    .bind(tag)
                                    .bind(bucket)
                                    .bind(s.n as i64)
                                    .bind(s.min)
                                    .bind(s.max)
                                    .bind(s.sum)
                                    .bind(s.first.0)
                                    .bind(s.first.1)
                                    .bind(s.last.0)
                                    .bind(s.last.1);
                            }
                            q.execute(&mut *tx).await?;
                        }
                        for (tag, bucket, mark) in &stale {
                            sqlx::query(
                                "DELETE FROM history_rollup_dirty WHERE width_s = ? AND tag_id = ? AND bucket = ? AND gen <= ?",
                            )
                            .bind(w)
                            .bind(tag)
                            .bind(bucket)
                            .bind(mark)
                            .execute(&mut *tx)
                            .await?;
                        }
                        if let Some(to) = to {
                            set_state_sqlite(&mut tx, &state::rollup(w), to).await?;
                        }
                        tx.commit().await?;
                    }
                    WriteConn::Postgres(c) => {
                        let mut tx = c.begin().await?;
                        if !rows.is_empty() {
                            let col = |f: fn(&(i32, i64, Summary)) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
                            let tags: Vec<i32> = rows.iter().map(|r| r.0).collect();
                            let buckets: Vec<i64> = rows.iter().map(|r| r.1).collect();
                            let ns: Vec<i64> = rows.iter().map(|r| r.2.n as i64).collect();
                            let fts: Vec<i64> = rows.iter().map(|r| r.2.first.0).collect();
                            let lts: Vec<i64> = rows.iter().map(|r| r.2.last.0).collect();
                            let sql = format!(
                                "INSERT INTO history_rollups (width_s, tag_id, bucket, n, min, max, sum, first_ts, \
                                 first, last_ts, last) SELECT $1, * FROM UNNEST($2::int4[], $3::int8[], $4::int8[], \
                                 $5::float8[], $6::float8[], $7::float8[], $8::int8[], $9::float8[], $10::int8[], \
                                 $11::float8[]){UPSERT}"
                            );
                            sqlx::query(AssertSqlSafe(sql))
                                .bind(w)
                                .bind(tags)
                                .bind(buckets)
                                .bind(ns)
                                .bind(col(|r| r.2.min))
                                .bind(col(|r| r.2.max))
                                .bind(col(|r| r.2.sum))
                                .bind(fts)
                                .bind(col(|r| r.2.first.1))
                                .bind(lts)
                                .bind(col(|r| r.2.last.1))
                                .execute(&mut *tx)
                                .await?;
                        }
                        if !stale.is_empty() {
                            let tags: Vec<i32> = stale.iter().map(|s| s.0).collect();
                            let buckets: Vec<i64> = stale.iter().map(|s| s.1).collect();
                            let gens: Vec<i64> = stale.iter().map(|s| s.2).collect();
                            sqlx::query(
                                "DELETE FROM history_rollup_dirty d USING UNNEST($2::int4[], $3::int8[], $4::int8[]) \
                                 AS u(t, b, g) WHERE d.width_s = $1 AND d.tag_id = u.t AND d.bucket = u.b AND d.gen <= u.g",
                            )
                            .bind(w)
                            .bind(tags)
                            .bind(buckets)
                            .bind(gens)
                            .execute(&mut *tx)
                            .await?;
                        }
                        if let Some(to) = to {
                            set_state_pg(&mut tx, &state::rollup(w), to).await?;
                        }
                        tx.commit().await?;
                    }
                }
                Ok(())
            })
        })
        .await
    }

    /// Summarises again up to [`DIRTY_STEP`] stale buckets.
    async fn resummarise(&mut self, now: i64) -> Result<(u64, bool), StoreError> {
        let cutoff = now.saturating_sub(self.cfg.retention.as_nanos() as i64);
        let mut total = 0;
        let mut more = false;
        for &w in &self.shared.widths_s.clone() {
            let wn = w * 1_000_000_000;
            let mut conn = Conn::acquire(&self.db.pool).await?;
            let (rows, stale) = {
                let mut snap = conn.snapshot().await?;
                let stale = snap.dirty(w, None, i64::MIN, i64::MAX, DIRTY_STEP).await?;
                more |= stale.len() == DIRTY_STEP;
                let mut rows = Vec::new();
                for (tag, bucket, _) in &stale {
                    // A bucket whose raw values retention has begun to delete
                    // keeps the summary it has: raw would give less.
                    if *bucket >= cutoff {
                        rows.extend(snap.summaries(Tags::Some(&[*tag]), *bucket, bucket + wn, wn).await?);
                    }
                }
                (rows, stale)
            };
            drop(conn);
            if stale.is_empty() {
                continue;
            }
            total += rows.len() as u64;
            self.apply(w, rows, stale, None).await?;
        }
        Ok((total, more))
    }

    /// One retention step for raw values, each level and the alarm journal; returns the rows
    /// deleted and whether more are due.
    async fn retain(&mut self, now: i64) -> Result<(u64, bool), StoreError> {
        let raw_cutoff = now.saturating_sub(self.cfg.retention.as_nanos() as i64);
        let mut deleted = 0;
        let mut more = false;
        match self.db.dialect {
            crate::Dialect::Sqlite => {
                let (n, m) = self.delete_slice(None, raw_cutoff).await?;
                deleted += n;
                more |= m;
            }
            crate::Dialect::Postgres => deleted += self.drop_partitions(raw_cutoff).await?,
        }
        for r in self.cfg.rollups.clone() {
            let w = r.interval.duration().as_secs() as i64;
            let cutoff = now.saturating_sub(r.retention.as_nanos() as i64);
            let (n, m) = self.delete_slice(Some(w), cutoff).await?;
            deleted += n;
            more |= m;
        }
        let cutoff = now.saturating_sub(self.cfg.alarm_retention.as_nanos() as i64);
        let n = self.delete_alarm_events(cutoff).await?;
        deleted += n;
        more |= n >= journal::DELETE_STEP;
        Ok((deleted, more))
    }

    /// One step of the journal's retention: up to [`journal::DELETE_STEP`]
    /// entries older than `cutoff`, in one short transaction of the writer.
    async fn delete_alarm_events(&mut self, cutoff: i64) -> Result<u64, StoreError> {
        self.on_writer(move |c| {
            Box::pin(async move {
                Ok(match c {
                    WriteConn::Sqlite(c) => {
                        let mut tx = c.begin_with("BEGIN IMMEDIATE").await?;
                        let n = journal::delete_sqlite(&mut tx, cutoff).await?;
                        tx.commit().await?;
                        n
                    }
                    WriteConn::Postgres(c) => journal::delete_pg(c, cutoff).await?,
                })
            })
        })
        .await
    }

    /// Deletes raw rows (`width` None) or summaries of `width` before
    /// `cutoff`, one slice of time: the slice after what is deleted already,
    /// as long as last time deleted about [`DELETE_TARGET`] rows.
    async fn delete_slice(&mut self, width: Option<i64>, cutoff: i64) -> Result<(u64, bool), StoreError> {
        let key = match width {
            None => state::RAW_DELETED_NS.to_owned(),
            Some(w) => state::rollup_deleted(w),
        };
        let mut conn = Conn::acquire(&self.db.pool).await?;
        let done = {
            let mut snap = conn.snapshot().await?;
            let st = snap.state().await?;
            match st.get(&key) {
                Some(v) => Some(*v),
                None => match width {
                    None => snap.oldest().await?,
                    Some(w) => snap.oldest_rollup(w).await?,
                },
            }
        };
        drop(conn);
        let Some(done) = done else { return Ok((0, false)) };
        if done >= cutoff {
            return Ok((0, false));
        }
        let slice = *self.slices.entry(width.unwrap_or(0)).or_insert(60_000_000_000);
        let to = cutoff.min(done.saturating_add(slice));
        let dialect = self.db.dialect;
        let n = self
            .on_writer(move |c| {
                Box::pin(async move {
                    let n = match (c, width) {
                        (WriteConn::Sqlite(c), None) => {
                            let mut tx = c.begin_with("BEGIN IMMEDIATE").await?;
                            let n = sqlx::query(
                                "DELETE FROM history_raw WHERE tag_id IN (SELECT id FROM history_tags) AND ts < ?",
                            )
                            .bind(to)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                            add_state_sqlite(&mut tx, state::ROWS, -(n as i64)).await?;
                            set_state_sqlite(&mut tx, &key, to).await?;
                            tx.commit().await?;
                            n
                        }
                        (WriteConn::Sqlite(c), Some(w)) => {
                            let mut tx = c.begin_with("BEGIN IMMEDIATE").await?;
                            let n = sqlx::query(
                                "DELETE FROM history_rollups WHERE width_s = ? \
                                 AND tag_id IN (SELECT id FROM history_tags) AND bucket < ?",
                            )
                            .bind(w)
                            .bind(to)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                            set_state_sqlite(&mut tx, &key, to).await?;
                            tx.commit().await?;
                            n
                        }
                        (WriteConn::Postgres(c), w) => {
                            let mut tx = c.begin().await?;
                            let n = sqlx::query(
                                "DELETE FROM history_rollups WHERE width_s = $1 \
                                 AND tag_id = ANY(ARRAY(SELECT id FROM history_tags)) AND bucket < $2",
                            )
                            .bind(w.unwrap_or(0))
                            .bind(to)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                            set_state_pg(&mut tx, &key, to).await?;
                            tx.commit().await?;
                            n
                        }
                    };
                    Ok(n)
                })
            })
            .await?;
        debug_assert!(dialect == crate::Dialect::Sqlite || width.is_some());
        // Aim the next slice at the target: longer when this one was light.
        let next = if n == 0 {
            slice.saturating_mul(4)
        } else {
            ((slice as f64) * (DELETE_TARGET as f64 / n as f64)).clamp(1e9, 30.0 * DAY_NS as f64) as i64
        };
        self.slices.insert(width.unwrap_or(0), next.clamp(1_000_000_000, 30 * DAY_NS));
        Ok((n, to < cutoff))
    }

    /// PostgreSQL: detaches and drops the day partitions wholly before
    /// `cutoff`; returns the rows they held.
    async fn drop_partitions(&mut self, cutoff: i64) -> Result<u64, StoreError> {
        let super::db::Pool::Postgres(pool) = &self.db.pool else { return Ok(0) };
        let mut conn = pool.acquire().await?;
        let parts = pg_partitions(&mut conn).await?;
        let mut dropped = 0u64;
        for (day, name) in parts.into_iter().filter(|(day, _)| day + DAY_NS <= cutoff) {
            // CONCURRENTLY: queries and the writer's COPY go on meanwhile (it
            // cannot run inside a transaction, so it runs alone).
            sqlx::query("SET lock_timeout = '10s'").execute(&mut *conn).await?;
            let detach = format!("ALTER TABLE history_raw DETACH PARTITION {name} CONCURRENTLY");
            if let Err(e) = sqlx::query(AssertSqlSafe(detach)).execute(&mut *conn).await {
                // A detach interrupted before (a crash) must be finished first.
                let finish = format!("ALTER TABLE history_raw DETACH PARTITION {name} FINALIZE");
                if sqlx::query(AssertSqlSafe(finish)).execute(&mut *conn).await.is_err() {
                    return Err(e.into());
                }
            }
            let mut tx = conn.begin().await?;
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}"))).execute(&mut *tx).await?;
            let key = state::partition_rows(day);
            let rows: Option<i64> = sqlx::query_scalar("DELETE FROM history_state WHERE name = $1 RETURNING value")
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?;
            let rows = rows.unwrap_or(0);
            add_state_pg(&mut tx, state::ROWS, -rows).await?;
            // Queries read no raw values before this.
            sqlx::query(
                "INSERT INTO history_state (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = GREATEST(history_state.value, excluded.value)",
            )
            .bind(state::RAW_DELETED_NS)
            .bind(day + DAY_NS)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(partition = %name, rows, "Dropped a day of history past its retention.");
            dropped += rows.max(0) as u64;
        }
        sqlx::query("SET lock_timeout = 0").execute(&mut *conn).await?;
        // Made a day ahead, so the writer seldom has to make one itself.
        let tomorrow = bucket_of(now_ns() as i64, DAY_NS) + DAY_NS;
        if !pg_partitions(&mut conn).await?.contains_key(&tomorrow) {
            super::sink::pg_make_partition(&mut conn, tomorrow).await?;
            tracing::debug!(partition = %partition_name(tomorrow), "Made tomorrow's history partition.");
        }
        Ok(dropped)
    }

    /// Measures rows and bytes on disk into the metrics; returns (rows, bytes).
    pub async fn measure(&self) -> Result<(i64, u64), StoreError> {
        let mut conn = Conn::acquire(&self.db.pool).await?;
        let rows = {
            let mut snap = conn.snapshot().await?;
            snap.state().await?.get(state::ROWS).copied().unwrap_or(0)
        };
        let bytes = match (&self.db.file, &mut conn) {
            (Some(file), _) => {
                let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
                let mut wal = file.clone().into_os_string();
                wal.push("-wal");
                size(file) + size(std::path::Path::new(&wal))
            }
            (None, Conn::Postgres(c)) => {
                let b: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind = 'r' AND c.relname LIKE 'history\\_%' AND n.nspname = current_schema()",
                )
                .fetch_one(&mut **c)
                .await?;
                b.max(0) as u64
            }
            (None, Conn::Sqlite(_)) => 0,
        };
        self.metrics.rows.set(rows);
        self.metrics.disk_bytes.set(bytes as i64);
        if rows > 0 {
            self.metrics.bytes_per_value.set(bytes as f64 / rows as f64);
        }
        Ok((rows, bytes))
    }
}

/// Runs passes of `m` until `stop`: quickly while there is more to do,
/// else every few seconds; measures every 10 s.
pub(crate) async fn run(m: Arc<tokio::sync::Mutex<Maintainer>>, mut stop: gateway_bus::Shutdown) {
    let mut last_measure = std::time::Instant::now() - Duration::from_secs(3600);
    let mut failing = false;
    loop {
        let pause = {
            let mut m = m.lock().await;
            let pause = match m.pass(now_ns() as i64).await {
                Ok(p) => {
                    failing = false;
                    if p.more { Duration::from_millis(50) } else { Duration::from_secs(2) }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "History maintenance failed; trying again.");
                    }
                    failing = true;
                    Duration::from_secs(5)
                }
            };
            if last_measure.elapsed() >= Duration::from_secs(10) {
                last_measure = std::time::Instant::now();
                if let Err(e) = m.measure().await {
                    tracing::debug!(error = %e, "Cannot measure the history's size.");
                }
            }
            pause
        };
        tokio::select! {
            _ = stop.wait() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// `ON CONFLICT` clause replacing a stored summary by a new one.
const UPSERT: &str = " ON CONFLICT (width_s, tag_id, bucket) DO UPDATE SET n = excluded.n, min = excluded.min, \
     max = excluded.max, sum = excluded.sum, first_ts = excluded.first_ts, first = excluded.first, \
     last_ts = excluded.last_ts, last = excluded.last";

/// Merges summaries into buckets of `width` ns.
fn merge_to(rows: Summaries, width: i64) -> Summaries {
    let mut out: BTreeMap<(i32, i64), Summary> = BTreeMap::new();
    for (tag, bucket, s) in rows {
        out.entry((tag, bucket_of(bucket, width))).and_modify(|m| m.merge(&s)).or_insert(s);
    }
    out.into_iter().map(|((tag, bucket), s)| (tag, bucket, s)).collect()
}
