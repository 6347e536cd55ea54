//! Reading history: one snapshot (a read transaction) per query, and the
//! statements every reader uses, per dialect: raw points, the latest point
//! before a time, summaries computed from raw values by the database, stored
//! summaries, stale buckets and the writer's state.
//!
//! Summaries of raw values are computed by the database (a scan in C is ten
//! times cheaper than handing every row to Rust) with the same statement for
//! the rollups and for the parts of a query no rollup covers, so both give
//! the same numbers.

use std::collections::HashMap;

use gateway_model::{Quality, Value};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Connection, Postgres, Row, Sqlite};

use super::db::Pool;
use super::row::{FIRST_NOT_GOOD, Kind, from_int, from_text, quality_of};
use super::summary::Summary;
use crate::StoreError;

/// One stored reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Its time, ns since the Unix epoch.
    pub ts_ns: i64,
    /// Its value, of the type it was recorded with.
    pub value: Value,
    /// Its quality.
    pub quality: Quality,
}

/// Which tags a summary statement covers.
#[derive(Clone, Debug)]
pub(crate) enum Tags<'a> {
    /// Every recorded tag.
    All,
    /// These ids.
    Some(&'a [i32]),
}

/// A connection of the query pool.
pub(crate) enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Conn {
    pub async fn acquire(pool: &Pool) -> Result<Conn, StoreError> {
        Ok(match pool {
            Pool::Sqlite(p) => Conn::Sqlite(p.acquire().await?),
            Pool::Postgres(p) => Conn::Postgres(p.acquire().await?),
        })
    }

    /// A read transaction: everything read through it is one snapshot.
    pub async fn snapshot(&mut self) -> Result<Snapshot<'_>, StoreError> {
        Ok(match self {
            Conn::Sqlite(c) => Snapshot::Sqlite(c.begin().await?),
            Conn::Postgres(c) => {
                Snapshot::Postgres(c.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?)
            }
        })
    }
}

/// A read transaction; rolled back when dropped (it changed nothing).
pub(crate) enum Snapshot<'c> {
    Sqlite(sqlx::Transaction<'c, Sqlite>),
    Postgres(sqlx::Transaction<'c, Postgres>),
}

/// SQLite: the number the value of a row (columns prefixed by `t`) stands
/// for: u64 above `i64::MAX` is read back from its two's complement.
fn sqlite_num(t: &str) -> String {
    format!("CASE WHEN {t}k = 3 AND {t}v < 0 THEN {t}v + 18446744073709551616.0 ELSE {t}v END")
}

fn sqlite_summaries_sql(tags: &Tags<'_>) -> String {
    let tag_filter = match tags {
        Tags::All => "tag_id IN (SELECT id FROM history_tags)",
        Tags::Some(_) => "tag_id IN (SELECT value FROM json_each(?4))",
    };
    let first = |col: &str| {
        format!(
            "(SELECT CAST({} AS REAL) FROM history_raw r WHERE r.tag_id = a.tag_id AND r.ts = a.{col})",
            sqlite_num("r.")
        )
    };
    let num = sqlite_num("");
    format!(
        "SELECT a.tag_id, a.b, a.n, a.mn, a.mx, a.s, a.fts, {}, a.lts, {} FROM (\
           SELECT tag_id, (ts / ?3) * ?3 AS b, COUNT(*) AS n, CAST(MIN(x) AS REAL) AS mn, \
                  CAST(MAX(x) AS REAL) AS mx, TOTAL(x) AS s, MIN(ts) AS fts, MAX(ts) AS lts \
           FROM (SELECT tag_id, ts, {num} AS x FROM history_raw \
                 WHERE {tag_filter} AND ts >= ?1 AND ts < ?2 AND q < {FIRST_NOT_GOOD} AND k <= 3 \
                 AND v IS NOT NULL) \
           GROUP BY tag_id, b) a",
        first("fts"),
        first("lts"),
    )
}

fn pg_summaries_sql(tags: &Tags<'_>) -> String {
    let tag_filter = match tags {
        Tags::All => "",
        Tags::Some(_) => "AND tag_id = ANY($4)",
    };
    let pick = |col: &str| {
        format!(
            "(SELECT r.v FROM history_raw r WHERE r.tag_id = a.tag_id AND r.ts = a.{col} \
              AND r.q < {FIRST_NOT_GOOD} AND r.k <= 3 AND r.v <> 'NaN'::float8 LIMIT 1)"
        )
    };
    format!(
        "SELECT a.tag_id, a.b, a.n, a.mn, a.mx, a.s, a.fts, {}, a.lts, {} FROM (\
           SELECT tag_id, (ts / $3) * $3 AS b, COUNT(*) AS n, MIN(v) AS mn, MAX(v) AS mx, SUM(v) AS s, \
                  MIN(ts) AS fts, MAX(ts) AS lts \
           FROM history_raw WHERE ts >= $1 AND ts < $2 AND q < {FIRST_NOT_GOOD} AND k <= 3 \
                 AND v <> 'NaN'::float8 {tag_filter} \
           GROUP BY tag_id, b) a",
        pick("fts"),
        pick("lts"),
    )
}

/// A summary row: (tag, bucket, summary).
pub(crate) type Summaries = Vec<(i32, i64, Summary)>;

fn summary_sqlite(r: &SqliteRow) -> Result<(i32, i64, Summary), sqlx::Error> {
    Ok((
        r.try_get(0)?,
        r.try_get(1)?,
        Summary {
            n: r.try_get::<i64, _>(2)? as u64,
            min: r.try_get(3)?,
            max: r.try_get(4)?,
            sum: r.try_get(5)?,
            first: (r.try_get(6)?, r.try_get(7)?),
            last: (r.try_get(8)?, r.try_get(9)?),
        },
    ))
}

fn summary_pg(r: &PgRow) -> Result<(i32, i64, Summary), sqlx::Error> {
    Ok((
        r.try_get(0)?,
        r.try_get(1)?,
        Summary {
            n: r.try_get::<i64, _>(2)? as u64,
            min: r.try_get(3)?,
            max: r.try_get(4)?,
            sum: r.try_get(5)?,
            first: (r.try_get(6)?, r.try_get(7)?),
            last: (r.try_get(8)?, r.try_get(9)?),
        },
    ))
}

fn point_sqlite(r: &SqliteRow) -> Result<Point, sqlx::Error> {
    let ts: i64 = r.try_get(0)?;
    let q: i64 = r.try_get(2)?;
    let k: i64 = r.try_get(3)?;
    let value = match Kind::from_code(k) {
        // SQLite stores a bound NaN as NULL.
        Some(Kind::F64) => Value::F64(r.try_get::<Option<f64>, _>(1)?.unwrap_or(f64::NAN)),
        Some(Kind::Str) => Value::Str(r.try_get::<String, _>(1)?.into()),
        Some(Kind::Bytes) => Value::Bytes(r.try_get::<Vec<u8>, _>(1)?.into()),
        Some(kind) => from_int(kind, r.try_get(1)?),
        None => return Err(sqlx::Error::Decode(format!("history row with unknown kind {k}").into())),
    };
    Ok(Point { ts_ns: ts, value, quality: quality_of(q) })
}

fn point_pg(r: &PgRow) -> Result<Point, sqlx::Error> {
    let ts: i64 = r.try_get(0)?;
    let q: i32 = r.try_get(4)?;
    let k: i16 = r.try_get(5)?;
    let bad = || sqlx::Error::Decode(format!("history row of kind {k} without its value").into());
    let value = match Kind::from_code(i64::from(k)) {
        Some(Kind::F64) => Value::F64(r.try_get::<Option<f64>, _>(1)?.ok_or_else(bad)?),
        Some(kind @ (Kind::Str | Kind::Bytes)) => {
            let text: String = r.try_get::<Option<String>, _>(3)?.ok_or_else(bad)?;
            from_text(kind, &text).ok_or_else(bad)?
        }
        Some(kind) => from_int(kind, r.try_get::<Option<i64>, _>(2)?.ok_or_else(bad)?),
        None => return Err(sqlx::Error::Decode(format!("history row with unknown kind {k}").into())),
    };
    Ok(Point { ts_ns: ts, value, quality: quality_of(i64::from(q)) })
}

/// A stored summary row: (bucket, summary).
fn rollup_sqlite(r: &SqliteRow) -> Result<(i64, Summary), sqlx::Error> {
    rollup_cols(
        r.try_get(0)?,
        r.try_get(1)?,
        [r.try_get(2)?, r.try_get(3)?, r.try_get(4)?],
        [(r.try_get(5)?, r.try_get(6)?), (r.try_get(7)?, r.try_get(8)?)],
    )
}

fn rollup_pg(r: &PgRow) -> Result<(i64, Summary), sqlx::Error> {
    rollup_cols(
        r.try_get(0)?,
        r.try_get(1)?,
        [r.try_get(2)?, r.try_get(3)?, r.try_get(4)?],
        [(r.try_get(5)?, r.try_get(6)?), (r.try_get(7)?, r.try_get(8)?)],
    )
}

fn rollup_cols(
    bucket: i64,
    n: i64,
    [min, max, sum]: [f64; 3],
    [first, last]: [(i64, f64); 2],
) -> Result<(i64, Summary), sqlx::Error> {
    Ok((bucket, Summary { n: n as u64, min, max, sum, first, last }))
}

const ROLLUP_COLS: &str = "bucket, n, min, max, sum, first_ts, first, last_ts, last";

impl Snapshot<'_> {
    /// Points of `tag` in `[from, to)`, oldest first, at most `limit`.
    pub async fn points(&mut self, tag: i32, from: i64, to: i64, limit: usize) -> Result<Vec<Point>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(match self {
            Snapshot::Sqlite(c) => {
                let rows = sqlx::query(
                    "SELECT ts, v, q, k FROM history_raw WHERE tag_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts LIMIT ?4",
                )
                .bind(tag)
                .bind(from)
                .bind(to)
                .bind(limit)
                .fetch_all(&mut **c)
                .await?;
                rows.iter().map(point_sqlite).collect::<Result<_, _>>()?
            }
            Snapshot::Postgres(c) => {
                let rows = sqlx::query(
                    "SELECT ts, v, vi, vs, q, k FROM history_raw WHERE tag_id = $1 AND ts >= $2 AND ts < $3 \
                     ORDER BY ts LIMIT $4",
                )
                .bind(tag)
                .bind(from)
                .bind(to)
                .bind(limit)
                .fetch_all(&mut **c)
                .await?;
                rows.iter().map(point_pg).collect::<Result<_, _>>()?
            }
        })
    }

    /// The newest point of `tag` at or before `at`.
    pub async fn latest(&mut self, tag: i32, at: i64) -> Result<Option<Point>, StoreError> {
        Ok(match self {
            Snapshot::Sqlite(c) => sqlx::query(
                "SELECT ts, v, q, k FROM history_raw WHERE tag_id = ?1 AND ts <= ?2 ORDER BY ts DESC LIMIT 1",
            )
            .bind(tag)
            .bind(at)
            .fetch_optional(&mut **c)
            .await?
            .as_ref()
            .map(point_sqlite)
            .transpose()?,
            Snapshot::Postgres(c) => sqlx::query(
                "SELECT ts, v, vi, vs, q, k FROM history_raw WHERE tag_id = $1 AND ts <= $2 ORDER BY ts DESC LIMIT 1",
            )
            .bind(tag)
            .bind(at)
            .fetch_optional(&mut **c)
            .await?
            .as_ref()
            .map(point_pg)
            .transpose()?,
        })
    }

    /// Summaries of the raw values of `tags` in `[from, to)`, per bucket of
    /// `width` ns (aligned to the epoch).
    pub async fn summaries(&mut self, tags: Tags<'_>, from: i64, to: i64, width: i64) -> Result<Summaries, StoreError> {
        Ok(match self {
            Snapshot::Sqlite(c) => {
                let mut q = sqlx::query(AssertSqlSafe(sqlite_summaries_sql(&tags))).bind(from).bind(to).bind(width);
                if let Tags::Some(ids) = tags {
                    q = q.bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()));
                }
                q.fetch_all(&mut **c).await?.iter().map(summary_sqlite).collect::<Result<_, _>>()?
            }
            Snapshot::Postgres(c) => {
                let mut q = sqlx::query(AssertSqlSafe(pg_summaries_sql(&tags))).bind(from).bind(to).bind(width);
                if let Tags::Some(ids) = tags {
                    q = q.bind(ids.to_vec());
                }
                q.fetch_all(&mut **c).await?.iter().map(summary_pg).collect::<Result<_, _>>()?
            }
        })
    }

    /// Stored summaries of width `width_s` of `tag` with buckets in `[from, to)`.
    pub async fn rollups(
        &mut self,
        width_s: i64,
        tag: i32,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Summary)>, StoreError> {
        Ok(match self {
            Snapshot::Sqlite(c) => {
                let sql = format!(
                    "SELECT {ROLLUP_COLS} FROM history_rollups WHERE width_s = ?1 AND tag_id = ?2 \
                     AND bucket >= ?3 AND bucket < ?4 ORDER BY bucket"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(width_s)
                    .bind(tag)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut **c)
                    .await?;
                rows.iter().map(rollup_sqlite).collect::<Result<_, _>>()?
            }
            Snapshot::Postgres(c) => {
                let sql = format!(
                    "SELECT {ROLLUP_COLS} FROM history_rollups WHERE width_s = $1 AND tag_id = $2 \
                     AND bucket >= $3 AND bucket < $4 ORDER BY bucket"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(width_s)
                    .bind(tag)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut **c)
                    .await?;
                rows.iter().map(rollup_pg).collect::<Result<_, _>>()?
            }
        })
    }

    /// Stored summaries of width `width_s` of every tag with buckets in `[from, to)`.
    pub async fn all_rollups(&mut self, width_s: i64, from: i64, to: i64) -> Result<Summaries, StoreError> {
        let sql_sqlite = format!(
            "SELECT tag_id, {ROLLUP_COLS} FROM history_rollups WHERE width_s = ?1 AND bucket >= ?2 AND bucket < ?3 \
             AND tag_id IN (SELECT id FROM history_tags)"
        );
        let sql_pg = format!(
            "SELECT tag_id, {ROLLUP_COLS} FROM history_rollups WHERE width_s = $1 AND bucket >= $2 AND bucket < $3"
        );
        let tagged = |tag: i32, (bucket, s): (i64, Summary)| (tag, bucket, s);
        Ok(match self {
            Snapshot::Sqlite(c) => {
                let rows = sqlx::query(AssertSqlSafe(sql_sqlite))
                    .bind(width_s)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut **c)
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let tag: i32 = r.try_get(0)?;
                    let b = rollup_cols(
                        r.try_get(1)?,
                        r.try_get(2)?,
                        [r.try_get(3)?, r.try_get(4)?, r.try_get(5)?],
                        [(r.try_get(6)?, r.try_get(7)?), (r.try_get(8)?, r.try_get(9)?)],
                    )?;
                    out.push(tagged(tag, b));
                }
                out
            }
            Snapshot::Postgres(c) => {
                let rows =
                    sqlx::query(AssertSqlSafe(sql_pg)).bind(width_s).bind(from).bind(to).fetch_all(&mut **c).await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let tag: i32 = r.try_get(0)?;
                    let b = rollup_cols(
                        r.try_get(1)?,
                        r.try_get(2)?,
                        [r.try_get(3)?, r.try_get(4)?, r.try_get(5)?],
                        [(r.try_get(6)?, r.try_get(7)?), (r.try_get(8)?, r.try_get(9)?)],
                    )?;
                    out.push(tagged(tag, b));
                }
                out
            }
        })
    }

    /// Stale buckets of width `width_s` in `[from, to)`: (tag, bucket, gen);
    /// of `tag` only if given.
    pub async fn dirty(
        &mut self,
        width_s: i64,
        tag: Option<i32>,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<(i32, i64, i64)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // -1 stands for every tag (ids start at 1).
        let tag = tag.unwrap_or(-1);
        let rows: Vec<(i32, i64, i64)> = match self {
            Snapshot::Sqlite(c) => sqlx::query_as(
                "SELECT tag_id, bucket, gen FROM history_rollup_dirty WHERE width_s = ?1 AND (?2 = -1 OR tag_id = ?2) \
                 AND bucket >= ?3 AND bucket < ?4 ORDER BY tag_id, bucket LIMIT ?5",
            )
            .bind(width_s)
            .bind(tag)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(&mut **c)
            .await?,
            Snapshot::Postgres(c) => sqlx::query_as(
                "SELECT tag_id, bucket, gen FROM history_rollup_dirty WHERE width_s = $1 AND ($2 = -1 OR tag_id = $2) \
                 AND bucket >= $3 AND bucket < $4 ORDER BY tag_id, bucket LIMIT $5",
            )
            .bind(width_s)
            .bind(tag)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(&mut **c)
            .await?,
        };
        Ok(rows)
    }

    /// The writer's state, by name.
    pub async fn state(&mut self) -> Result<HashMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = match self {
            Snapshot::Sqlite(c) => sqlx::query_as("SELECT name, value FROM history_state").fetch_all(&mut **c).await?,
            Snapshot::Postgres(c) => {
                sqlx::query_as("SELECT name, value FROM history_state").fetch_all(&mut **c).await?
            }
        };
        Ok(rows.into_iter().collect())
    }

    /// Every recorded tag: name to id.
    pub async fn tags(&mut self) -> Result<HashMap<String, i32>, StoreError> {
        let rows: Vec<(i32, String)> = match self {
            Snapshot::Sqlite(c) => sqlx::query_as("SELECT id, name FROM history_tags").fetch_all(&mut **c).await?,
            Snapshot::Postgres(c) => sqlx::query_as("SELECT id, name FROM history_tags").fetch_all(&mut **c).await?,
        };
        Ok(rows.into_iter().map(|(id, name)| (name, id)).collect())
    }

    /// The oldest raw time of any tag (None without rows).
    pub async fn oldest(&mut self) -> Result<Option<i64>, StoreError> {
        Ok(match self {
            // Per tag: the clustered key finds each tag's oldest row at once,
            // where MIN(ts) over the table would read all of it.
            Snapshot::Sqlite(c) => {
                sqlx::query_scalar(
                    "SELECT MIN((SELECT MIN(ts) FROM history_raw WHERE tag_id = t.id)) FROM history_tags t",
                )
                .fetch_one(&mut **c)
                .await?
            }
            Snapshot::Postgres(c) => sqlx::query_scalar("SELECT MIN(ts) FROM history_raw").fetch_one(&mut **c).await?,
        })
    }

    /// The oldest bucket of the summaries of width `width_s` (None without any).
    pub async fn oldest_rollup(&mut self, width_s: i64) -> Result<Option<i64>, StoreError> {
        Ok(match self {
            Snapshot::Sqlite(c) => {
                sqlx::query_scalar(
                    "SELECT MIN((SELECT MIN(bucket) FROM history_rollups WHERE width_s = ?1 AND tag_id = t.id)) \
                 FROM history_tags t",
                )
                .bind(width_s)
                .fetch_one(&mut **c)
                .await?
            }
            Snapshot::Postgres(c) => {
                sqlx::query_scalar(
                    "SELECT MIN((SELECT MIN(bucket) FROM history_rollups WHERE width_s = $1 AND tag_id = t.id)) \
                 FROM history_tags t",
                )
                .bind(width_s)
                .fetch_one(&mut **c)
                .await?
            }
        })
    }
}
