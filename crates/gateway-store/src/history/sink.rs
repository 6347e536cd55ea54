//! One batch of readings written in one transaction, per dialect: on SQLite
//! multi-row `INSERT`s (1,000 rows a statement, prepared once), on
//! PostgreSQL one binary `COPY` into the day partitions. The same
//! transaction records the new tag names, the summaries the batch made stale,
//! the batch's alarm transitions ([`journal`](super::journal)) and the
//! writer's state (its bus position first of all), so a batch is either
//! wholly written with its position or not at all.
//!
//! It must never commit rows without the position that says they are
//! written: that is what makes a restart skip them instead of writing them
//! twice.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::OnceLock;

use gateway_model::{EventFrame, TagId, Value};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection, Row as _};

use super::journal;
use super::row::{Kind, int_of, text_of};
use super::summary::bucket_of;

/// One reading as it is written.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub tag: i32,
    pub q: i32,
    pub ts: i64,
    pub value: Value,
}

/// What one transaction writes.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub rows: Vec<Row>,
    /// Alarm transitions for the journal (events whose `alarm` is set).
    pub alarms: Vec<EventFrame>,
    /// Tags first seen in this batch, with the id the rows use.
    pub new_tags: Vec<(i32, TagId)>,
    /// The bus position after the frames this batch covers.
    pub end_seq: u64,
    /// Every reading stamped before this was received before the batch was
    /// cut (the subscription had nothing more to give then).
    pub complete_ns: Option<i64>,
}

impl Batch {
    /// Readings and alarm transitions to write.
    pub fn len(&self) -> usize {
        self.rows.len() + self.alarms.len()
    }

    /// Nothing to write (but maybe a position to move past).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.alarms.is_empty()
    }
}

/// The summaries a batch makes stale: (width in s, tag, bucket start).
pub(crate) type Dirty = BTreeSet<(i64, i32, i64)>;

/// Buckets of summaries already made (`mark_before[i]` for `widths_s[i]`)
/// that the batch's rows fall in.
pub(crate) fn dirty_buckets(rows: &[Row], widths_s: &[i64], mark_before: &[i64]) -> Dirty {
    let mut out = Dirty::new();
    let oldest = mark_before.iter().copied().max().unwrap_or(i64::MIN);
    for r in rows {
        if r.ts >= oldest {
            continue;
        }
        for (w, before) in widths_s.iter().zip(mark_before) {
            if r.ts < *before {
                out.insert((*w, r.tag, bucket_of(r.ts, w * 1_000_000_000)));
            }
        }
    }
    out
}

/// State names the writer keeps with its rows.
pub(crate) mod state {
    /// Frames below this bus position are written.
    pub const BUS_SEQ: &str = "bus_seq";
    /// Rows in `history_raw`.
    pub const ROWS: &str = "rows";
    /// Readings stamped before this are written (as far as the writer knows).
    pub const COMPLETE_NS: &str = "complete_ns";
    /// Raw rows before this time are deleted.
    pub const RAW_DELETED_NS: &str = "raw_deleted_ns";

    /// Buckets of width `w` before this are summarised.
    pub fn rollup(w: i64) -> String {
        format!("rollup_{w}")
    }

    /// Summaries of width `w` before this are deleted.
    pub fn rollup_deleted(w: i64) -> String {
        format!("rollup_deleted_{w}")
    }

    /// Rows in the PostgreSQL partition of the day starting at `day_ns`.
    pub fn partition_rows(day_ns: i64) -> String {
        format!("rows_{}", super::partition_name(day_ns))
    }
}

/// What writing a batch did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Written {
    /// Rows stored (a reading at an instant its tag already has is not, on SQLite).
    pub rows: u64,
    /// Alarm journal entries stored.
    pub alarm_events: u64,
}

const SQLITE_ROWS_PER_STATEMENT: usize = 1000;

fn sqlite_insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(60 + rows * 12);
    sql.push_str("INSERT OR IGNORE INTO history_raw (tag_id, ts, v, q, k) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?)");
    }
    sql
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_sqlite_value<'q>(q: SqliteQuery<'q>, v: &Value) -> SqliteQuery<'q> {
    match v {
        Value::F64(f) => q.bind(*f),
        Value::Str(s) => q.bind(s.to_string()),
        Value::Bytes(b) => q.bind(b.to_vec()),
        other => q.bind(int_of(other).unwrap_or(0)),
    }
}

/// Writes `batch` in one transaction on SQLite.
pub(crate) async fn write_sqlite(
    conn: &mut SqliteConnection,
    batch: &Batch,
    dirty: &Dirty,
) -> Result<Written, sqlx::Error> {
    static FULL: OnceLock<String> = OnceLock::new();
    let full = FULL.get_or_init(|| sqlite_insert_sql(SQLITE_ROWS_PER_STATEMENT));
    // Take the write lock up front, so a busy database makes this wait (busy
    // timeout) instead of failing half-way.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    for (id, name) in &batch.new_tags {
        sqlx::query("INSERT INTO history_tags (id, name) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(id)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
    }
    let mut stored = 0;
    for chunk in batch.rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
        let sql = if chunk.len() == SQLITE_ROWS_PER_STATEMENT {
            AssertSqlSafe(full.clone())
        } else {
            AssertSqlSafe(sqlite_insert_sql(chunk.len()))
        };
        let mut q = sqlx::query(sql).persistent(chunk.len() == SQLITE_ROWS_PER_STATEMENT);
        for r in chunk {
            q = q.bind(r.tag).bind(r.ts);
            q = bind_sqlite_value(q, &r.value).bind(r.q).bind(Kind::of(&r.value) as i16);
        }
        stored += q.execute(&mut *tx).await?.rows_affected();
    }
    let alarm_events = if batch.alarms.is_empty() { 0 } else { journal::write_sqlite(&mut tx, &batch.alarms).await? };
    for (w, tag, bucket) in dirty {
        sqlx::query(
            "INSERT INTO history_rollup_dirty (width_s, tag_id, bucket, gen) VALUES (?, ?, ?, ?) \
             ON CONFLICT (width_s, tag_id, bucket) DO UPDATE SET gen = excluded.gen",
        )
        .bind(w)
        .bind(tag)
        .bind(bucket)
        .bind(batch.end_seq as i64)
        .execute(&mut *tx)
        .await?;
    }
    set_state_sqlite(&mut tx, state::BUS_SEQ, batch.end_seq as i64).await?;
    if let Some(c) = batch.complete_ns {
        set_state_sqlite(&mut tx, state::COMPLETE_NS, c).await?;
    }
    add_state_sqlite(&mut tx, state::ROWS, stored as i64).await?;
    tx.commit().await?;
    Ok(Written { rows: stored, alarm_events })
}

pub(crate) async fn set_state_sqlite(conn: &mut SqliteConnection, name: &str, value: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO history_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(name)
    .bind(value)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn add_state_sqlite(conn: &mut SqliteConnection, name: &str, delta: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO history_state (name, value) VALUES (?, ?) \
         ON CONFLICT (name) DO UPDATE SET value = history_state.value + excluded.value",
    )
    .bind(name)
    .bind(delta)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn set_state_pg(conn: &mut PgConnection, name: &str, value: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO history_state (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(name)
    .bind(value)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn add_state_pg(conn: &mut PgConnection, name: &str, delta: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO history_state (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = history_state.value + excluded.value",
    )
    .bind(name)
    .bind(delta)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One day, in ns: the width of a PostgreSQL partition.
pub(crate) const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// `history_raw_pYYYYMMDD` for the day starting at `day_ns` (UTC).
pub(crate) fn partition_name(day_ns: i64) -> String {
    let date = gateway_model::format_rfc3339_ns(day_ns.max(0) as u64);
    format!("history_raw_p{}", date[..10].replace('-', ""))
}

/// The start of the day (UTC) a partition name stands for.
pub(crate) fn partition_day(name: &str) -> Option<i64> {
    let d = name.strip_prefix("history_raw_p")?;
    if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let text = format!("{}-{}-{}T00:00:00Z", &d[..4], &d[4..6], &d[6..8]);
    gateway_model::parse_rfc3339_ns(&text).and_then(|ns| i64::try_from(ns).ok())
}

/// The day partitions of `history_raw` that exist, by day start.
pub(crate) async fn pg_partitions(conn: &mut PgConnection) -> Result<BTreeMap<i64, String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'history_raw'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = BTreeMap::new();
    for r in rows {
        let name: String = r.try_get(0)?;
        if let Some(day) = partition_day(&name) {
            out.insert(day, name);
        }
    }
    Ok(out)
}

/// Makes the partition of the day starting at `day_ns`, if missing: a plain
/// table attached to `history_raw`, which (unlike `CREATE TABLE ... PARTITION
/// OF`) does not lock out the queries and writes on the other partitions.
pub(crate) async fn pg_make_partition(conn: &mut PgConnection, day_ns: i64) -> Result<(), sqlx::Error> {
    let name = partition_name(day_ns);
    let mut tx = conn.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '10s'").execute(&mut *tx).await?;
    let attached: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'history_raw' AND c.relname = $1)",
    )
    .bind(&name)
    .fetch_one(&mut *tx)
    .await?;
    if !attached {
        // The name is made here from digits only: no quoting needed.
        let create = format!("CREATE TABLE IF NOT EXISTS {name} (LIKE history_raw)");
        sqlx::query(AssertSqlSafe(create)).execute(&mut *tx).await?;
        let attach = format!(
            "ALTER TABLE history_raw ATTACH PARTITION {name} FOR VALUES FROM ({day_ns}) TO ({})",
            day_ns + DAY_NS
        );
        sqlx::query(AssertSqlSafe(attach)).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Appends one field of a binary `COPY` tuple.
fn field(buf: &mut Vec<u8>, data: Option<&[u8]>) {
    match data {
        Some(d) => {
            buf.extend_from_slice(&(d.len() as i32).to_be_bytes());
            buf.extend_from_slice(d);
        }
        None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// The batch's rows in PostgreSQL's binary `COPY` format, columns
/// `(ts, v, vi, tag_id, q, k, vs)`.
pub(crate) fn copy_data(rows: &[Row]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(19 + rows.len() * 64 + 2);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes()); // flags
    buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for r in rows {
        buf.extend_from_slice(&7i16.to_be_bytes());
        field(&mut buf, Some(&r.ts.to_be_bytes()));
        let num = r.value.as_f64();
        field(&mut buf, num.map(f64::to_be_bytes).as_ref().map(|b| &b[..]));
        let int = int_of(&r.value);
        field(&mut buf, int.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
        field(&mut buf, Some(&r.tag.to_be_bytes()));
        field(&mut buf, Some(&r.q.to_be_bytes()));
        field(&mut buf, Some(&(Kind::of(&r.value) as i16).to_be_bytes()));
        let text = text_of(&r.value);
        field(&mut buf, text.as_deref().map(str::as_bytes));
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf
}

/// Writes `batch` in one transaction on PostgreSQL; `partitions` are the
/// days known to have one, and gains those this makes.
pub(crate) async fn write_pg(
    conn: &mut PgConnection,
    batch: &Batch,
    dirty: &Dirty,
    partitions: &mut HashSet<i64>,
) -> Result<Written, sqlx::Error> {
    let mut per_day: BTreeMap<i64, i64> = BTreeMap::new();
    for r in &batch.rows {
        *per_day.entry(bucket_of(r.ts, DAY_NS)).or_default() += 1;
    }
    for day in per_day.keys() {
        if !partitions.contains(day) {
            pg_make_partition(conn, *day).await?;
            partitions.insert(*day);
        }
    }
    let mut tx = conn.begin().await?;
    if !batch.new_tags.is_empty() {
        let ids: Vec<i32> = batch.new_tags.iter().map(|(id, _)| *id).collect();
        let names: Vec<String> = batch.new_tags.iter().map(|(_, n)| n.to_string()).collect();
        sqlx::query(
            "INSERT INTO history_tags (id, name) SELECT * FROM UNNEST($1::int4[], $2::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&ids)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
    }
    let mut stored = 0;
    if !batch.rows.is_empty() {
        let mut copy =
            tx.copy_in_raw("COPY history_raw (ts, v, vi, tag_id, q, k, vs) FROM STDIN (FORMAT binary)").await?;
        let data = copy_data(&batch.rows);
        // In slices, so the server parses while the rest is on its way.
        for chunk in data.chunks(1 << 20) {
            if let Err(e) = copy.send(chunk).await {
                let _ = copy.abort("the gateway could not send the rest").await;
                return Err(e);
            }
        }
        stored = copy.finish().await?;
    }
    let alarm_events = if batch.alarms.is_empty() { 0 } else { journal::write_pg(&mut tx, &batch.alarms).await? };
    if !dirty.is_empty() {
        let (mut w, mut t, mut b) = (Vec::new(), Vec::new(), Vec::new());
        for (width, tag, bucket) in dirty {
            w.push(*width);
            t.push(*tag);
            b.push(*bucket);
        }
        sqlx::query(
            "INSERT INTO history_rollup_dirty (width_s, tag_id, bucket, gen) \
             SELECT w, t, b, $4 FROM UNNEST($1::int8[], $2::int4[], $3::int8[]) AS u(w, t, b) \
             ON CONFLICT (width_s, tag_id, bucket) DO UPDATE SET gen = excluded.gen",
        )
        .bind(&w)
        .bind(&t)
        .bind(&b)
        .bind(batch.end_seq as i64)
        .execute(&mut *tx)
        .await?;
    }
    set_state_pg(&mut tx, state::BUS_SEQ, batch.end_seq as i64).await?;
    if let Some(c) = batch.complete_ns {
        set_state_pg(&mut tx, state::COMPLETE_NS, c).await?;
    }
    add_state_pg(&mut tx, state::ROWS, stored as i64).await?;
    for (day, n) in per_day {
        add_state_pg(&mut tx, &state::partition_rows(day), n).await?;
    }
    tx.commit().await?;
    Ok(Written { rows: stored, alarm_events })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tag: i32, ts: i64) -> Row {
        Row { tag, q: 0, ts, value: Value::F64(1.0) }
    }

    #[test]
    fn partition_names_name_the_utc_day_and_read_back() {
        let day = 19_723 * DAY_NS; // 2024-01-01
        assert_eq!(partition_name(day), "history_raw_p20240101");
        assert_eq!(partition_name(day + DAY_NS - 1), "history_raw_p20240101");
        assert_eq!(partition_day("history_raw_p20240101"), Some(day));
        assert_eq!(partition_day("history_raw_p2024010"), None);
        assert_eq!(partition_day("history_raw"), None);
    }

    #[test]
    fn only_rows_before_a_levels_mark_make_its_buckets_stale() {
        let s = 1_000_000_000;
        let rows = [row(1, 30 * s), row(1, 90 * s), row(2, 3700 * s), row(1, 95 * s)];
        let d = dirty_buckets(&rows, &[60, 3600], &[120 * s, 0]);
        assert_eq!(d.into_iter().collect::<Vec<_>>(), [(60, 1, 0), (60, 1, 60 * s)]);
        let d = dirty_buckets(&rows, &[60, 3600], &[0, 7200 * s]);
        assert_eq!(d.into_iter().collect::<Vec<_>>(), [(3600, 1, 0), (3600, 2, 3600 * s)]);
    }

    #[test]
    fn copy_data_frames_every_tuple_with_seven_fields() {
        let rows = [row(1, 5), Row { tag: 2, q: 1 << 16, ts: 6, value: Value::from("x") }];
        let data = copy_data(&rows);
        assert!(data.starts_with(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0"));
        assert!(data.ends_with(&[0xff, 0xff]));
        // Header 19, then per tuple: a field count, 7 lengths and the data
        // (an f64: ts, v, tag_id, q, k; a string: ts, tag_id, q, k, vs); the trailer 2.
        let first = 2 + 7 * 4 + (8 + 8 + 4 + 4 + 2);
        let second = 2 + 7 * 4 + (8 + 4 + 4 + 2 + 1);
        assert_eq!(data.len(), 19 + first + second + 2);
    }
}
