//! The alarm journal: every alarm transition the bus carried (an
//! [`EventFrame`] whose `alarm` is set), kept in the `alarm_events` table
//! beside the readings, read back by time range, newest first, in pages.
//!
//! The writer takes these events from the same durable cursor as readings
//! and writes them in the same transaction as the readings of their batch
//! and the bus position ([`sink`](super::sink)), so an event is acknowledged
//! on the bus only once it is committed and a restart never writes it twice.
//! Retention deletes entries older than `[history] alarm_retention` in
//! bounded steps of the maintenance task (no watermark: an event that
//! arrives late, already old, is deleted by the next step all the same).
//!
//! It must never cost the readings anything: a batch without alarm events
//! runs not one more statement.

use std::fmt;

use gateway_model::{AlarmState, EventFrame, Severity, Value};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Row};

use super::HistoryError;
use super::read::Conn;

/// Entries per page when a query does not say.
pub const DEFAULT_LIMIT: usize = 1_000;

/// The most entries one page may hold.
pub const MAX_LIMIT: usize = 10_000;

/// Entries one retention step deletes at most, so it holds SQLite's write
/// lock (and the writer) only briefly.
pub(crate) const DELETE_STEP: u64 = 20_000;

/// The name of a priority as rules and the API spell it: `low`, `medium`,
/// `high`, `critical` for the event severities `info` to `critical`.
pub fn priority_name(p: Severity) -> &'static str {
    match p {
        Severity::Info => "low",
        Severity::Warning => "medium",
        Severity::Error => "high",
        Severity::Critical => "critical",
    }
}

/// The inverse of [`priority_name`].
///
/// ```
/// use gateway_store::history::{parse_priority, priority_name};
/// let p = parse_priority("high").unwrap();
/// assert_eq!(priority_name(p), "high");
/// assert!(parse_priority("urgent").is_none());
/// ```
pub fn parse_priority(text: &str) -> Option<Severity> {
    Some(match text {
        "low" => Severity::Info,
        "medium" => Severity::Warning,
        "high" => Severity::Error,
        "critical" => Severity::Critical,
        _ => return None,
    })
}

fn priority_of(code: i64) -> Option<Severity> {
    Some(match code {
        0 => Severity::Info,
        1 => Severity::Warning,
        2 => Severity::Error,
        3 => Severity::Critical,
        _ => return None,
    })
}

/// One entry of the journal: an alarm's transition.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmEvent {
    /// When it happened, ns since the Unix epoch.
    pub ts_ns: i64,
    /// The alarm (`rule:subject`), as `POST /api/v1/alarms/{id}/ack` takes it.
    pub id: String,
    /// The rule that made the alarm.
    pub rule: String,
    /// The tag the alarm watches (None for a system alarm).
    pub tag: Option<String>,
    /// The transition: `raised`, `cleared`, `acked`, `shelved`, ...
    pub event: String,
    /// The state the alarm entered.
    pub state: AlarmState,
    /// The alarm's priority (see [`priority_name`]).
    pub priority: Severity,
    /// The value that caused it, if one did (integers come back as i64, or
    /// u64 above `i64::MAX`: the journal keeps values in their JSON form).
    pub value: Option<Value>,
    /// The rule's limit, if it has one.
    pub limit: Option<Value>,
    /// Who made it, for transitions people make.
    pub user: Option<String>,
    /// Their comment or reason.
    pub comment: Option<String>,
    /// The text operators read.
    pub message: String,
    /// Where it is in the journal: orders entries of the same instant.
    pub seq: i64,
}

/// Where a page of the journal ended: the next page holds the entries
/// older than this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlarmCursor {
    /// The time of the page's last (oldest) entry.
    pub ts_ns: i64,
    /// Its place among entries of that instant.
    pub seq: i64,
}

impl AlarmCursor {
    /// `ts.seq`, as the API hands it out.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.ts_ns, self.seq)
    }

    /// The inverse of [`AlarmCursor::encode`].
    pub fn decode(text: &str) -> Option<AlarmCursor> {
        let (ts, seq) = text.split_once('.')?;
        Some(AlarmCursor { ts_ns: ts.parse().ok()?, seq: seq.parse().ok()? })
    }
}

impl fmt::Display for AlarmCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// A query of the journal. Entries come newest first: an operator opens
/// the journal to see what happened last.
#[derive(Clone, Debug)]
pub struct AlarmQuery {
    /// Start (inclusive), ns.
    pub from_ns: i64,
    /// End (exclusive), ns.
    pub to_ns: i64,
    /// Only alarms of this priority or higher.
    pub min_priority: Option<Severity>,
    /// Only this alarm (its id, `rule:subject`).
    pub alarm: Option<String>,
    /// Only alarms on this tag.
    pub tag: Option<String>,
    /// Entries per page, 1 to [`MAX_LIMIT`].
    pub limit: usize,
    /// Continue after this entry (the `next` of the previous page).
    pub after: Option<AlarmCursor>,
}

impl AlarmQuery {
    /// Everything in `[from_ns, to_ns)`, a page of [`DEFAULT_LIMIT`].
    pub fn range(from_ns: i64, to_ns: i64) -> AlarmQuery {
        AlarmQuery { from_ns, to_ns, min_priority: None, alarm: None, tag: None, limit: DEFAULT_LIMIT, after: None }
    }
}

/// A page of the journal.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmPage {
    /// Newest first.
    pub events: Vec<AlarmEvent>,
    /// Where the next (older) page starts, if there is more.
    pub next: Option<AlarmCursor>,
}

/// The JSON text a value is kept as; none for a value JSON cannot hold
/// (NaN and the infinities, which it writes as `null`).
fn json_of(v: &Option<Value>) -> Option<String> {
    v.as_ref().and_then(|v| serde_json::to_string(v).ok()).filter(|t| t != "null")
}

fn value_of(text: Option<String>) -> Result<Option<Value>, sqlx::Error> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| sqlx::Error::Decode(format!("alarm journal value {t:?}: {e}").into()))
    })
    .transpose()
}

fn state_of(text: &str) -> Result<AlarmState, sqlx::Error> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| sqlx::Error::Decode(format!("alarm journal entry in unknown state {text:?}").into()))
}

/// Whether `f` goes into the journal: an alarm transition whose time fits a row.
pub(crate) fn is_entry(f: &EventFrame) -> bool {
    f.alarm.is_some() && i64::try_from(f.ts_ns).is_ok()
}

/// The columns an entry is written to, in this order.
const COLUMNS: &str =
    "ts, priority, alarm_id, rule, tag, code, state, value_json, limit_json, user_name, comment, message";

/// An entry's columns, in the order of [`COLUMNS`].
struct Cols<'a> {
    ts: i64,
    priority: i16,
    alarm_id: &'a str,
    rule: &'a str,
    tag: Option<&'a str>,
    code: &'a str,
    state: &'static str,
    value: Option<String>,
    limit: Option<String>,
    user: Option<&'a str>,
    comment: Option<&'a str>,
    message: &'a str,
}

fn cols(f: &EventFrame) -> Option<Cols<'_>> {
    let a = f.alarm.as_deref()?;
    Some(Cols {
        ts: i64::try_from(f.ts_ns).ok()?,
        priority: f.severity as i16,
        alarm_id: &a.id,
        rule: &a.rule,
        tag: f.tag.as_ref().map(|t| t.as_str()),
        code: &f.code,
        state: a.state.as_str(),
        value: json_of(&a.value),
        limit: json_of(&a.limit),
        user: a.user.as_deref(),
        comment: a.comment.as_deref(),
        message: &f.message,
    })
}

/// Rows per SQLite statement: 12 parameters each, well under its limit.
const SQLITE_ROWS_PER_STATEMENT: usize = 500;

/// Writes `events` inside the caller's transaction on SQLite.
pub(crate) async fn write_sqlite(conn: &mut SqliteConnection, events: &[EventFrame]) -> Result<u64, sqlx::Error> {
    let mut stored = 0;
    for chunk in events.chunks(SQLITE_ROWS_PER_STATEMENT) {
        let rows: Vec<Cols<'_>> = chunk.iter().filter_map(cols).collect();
        if rows.is_empty() {
            continue;
        }
        let mut sql = format!("INSERT INTO alarm_events ({COLUMNS}) VALUES ");
        for i in 0..rows.len() {
            sql.push_str(if i == 0 { "(?,?,?,?,?,?,?,?,?,?,?,?)" } else { ",(?,?,?,?,?,?,?,?,?,?,?,?)" });
        }
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for c in rows {
            q = q
                .bind(c.ts)
                .bind(c.priority)
                .bind(c.alarm_id)
                .bind(c.rule)
                .bind(c.tag)
                .bind(c.code)
                .bind(c.state)
                .bind(c.value)
                .bind(c.limit)
                .bind(c.user)
                .bind(c.comment)
                .bind(c.message);
        }
        stored += q.execute(&mut *conn).await?.rows_affected();
    }
    Ok(stored)
}

/// Writes `events` inside the caller's transaction on PostgreSQL, in one
/// statement.
pub(crate) async fn write_pg(conn: &mut PgConnection, events: &[EventFrame]) -> Result<u64, sqlx::Error> {
    let rows: Vec<Cols<'_>> = events.iter().filter_map(cols).collect();
    if rows.is_empty() {
        return Ok(0);
    }
    let text = |f: fn(&Cols<'_>) -> Option<String>| rows.iter().map(f).collect::<Vec<Option<String>>>();
    // In the order given, so entries of one instant are numbered (`id`) in
    // the order they were published, as on SQLite.
    let sql = format!(
        "INSERT INTO alarm_events ({COLUMNS}) SELECT {COLUMNS} FROM UNNEST($1::int8[], $2::int2[], $3::text[], \
         $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
         $12::text[]) WITH ORDINALITY AS u({COLUMNS}, n) ORDER BY n"
    );
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(rows.iter().map(|c| c.ts).collect::<Vec<i64>>())
        .bind(rows.iter().map(|c| c.priority).collect::<Vec<i16>>())
        .bind(text(|c| Some(c.alarm_id.to_owned())))
        .bind(text(|c| Some(c.rule.to_owned())))
        .bind(text(|c| c.tag.map(str::to_owned)))
        .bind(text(|c| Some(c.code.to_owned())))
        .bind(text(|c| Some(c.state.to_owned())))
        .bind(text(|c| c.value.clone()))
        .bind(text(|c| c.limit.clone()))
        .bind(text(|c| c.user.map(str::to_owned)))
        .bind(text(|c| c.comment.map(str::to_owned)))
        .bind(text(|c| Some(c.message.to_owned())))
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// Deletes up to [`DELETE_STEP`] entries older than `cutoff` (oldest first).
pub(crate) async fn delete_sqlite(conn: &mut SqliteConnection, cutoff: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM alarm_events WHERE id IN (SELECT id FROM alarm_events WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
    )
    .bind(cutoff)
    .bind(DELETE_STEP as i64)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// [`delete_sqlite`] on PostgreSQL.
pub(crate) async fn delete_pg(conn: &mut PgConnection, cutoff: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM alarm_events WHERE id IN (SELECT id FROM alarm_events WHERE ts < $1 ORDER BY ts LIMIT $2)",
    )
    .bind(cutoff)
    .bind(DELETE_STEP as i64)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// The `SELECT` of a query, with `?` for SQLite or `$n` for PostgreSQL;
/// filters appear only when asked for, so each one can use its index.
fn select_sql(q: &AlarmQuery, pg: bool) -> String {
    let mut n = 0;
    let mut p = || {
        n += 1;
        if pg { format!("${n}") } else { "?".to_owned() }
    };
    let mut sql = format!("SELECT id, {COLUMNS} FROM alarm_events WHERE ts >= {} AND ts < {}", p(), p());
    if q.after.is_some() {
        // Older than the cursor's entry: `ts <= c` bounds the index range,
        // the rest breaks ties at the same instant.
        let (a, b, c) = (p(), p(), p());
        sql.push_str(&format!(" AND ts <= {a} AND (ts < {b} OR id < {c})"));
    }
    if q.min_priority.is_some() {
        sql.push_str(&format!(" AND priority >= {}", p()));
    }
    if q.alarm.is_some() {
        sql.push_str(&format!(" AND alarm_id = {}", p()));
    }
    if q.tag.is_some() {
        sql.push_str(&format!(" AND tag = {}", p()));
    }
    sql.push_str(&format!(" ORDER BY ts DESC, id DESC LIMIT {}", p()));
    sql
}

/// Binds the parameters of [`select_sql`] in its order.
macro_rules! bind_query {
    ($query:expr, $q:expr, $fetch:expr) => {{
        let q = $q;
        let mut query = $query.bind(q.from_ns).bind(q.to_ns);
        if let Some(c) = q.after {
            query = query.bind(c.ts_ns).bind(c.ts_ns).bind(c.seq);
        }
        if let Some(p) = q.min_priority {
            query = query.bind(p as i16);
        }
        if let Some(a) = &q.alarm {
            query = query.bind(a.as_str());
        }
        if let Some(t) = &q.tag {
            query = query.bind(t.as_str());
        }
        query.bind($fetch)
    }};
}

fn event_sqlite(r: &SqliteRow) -> Result<AlarmEvent, sqlx::Error> {
    let p: i64 = r.try_get(2)?;
    let state: String = r.try_get(7)?;
    Ok(AlarmEvent {
        seq: r.try_get(0)?,
        ts_ns: r.try_get(1)?,
        priority: priority_of(p)
            .ok_or_else(|| sqlx::Error::Decode(format!("alarm journal entry of priority {p}").into()))?,
        id: r.try_get(3)?,
        rule: r.try_get(4)?,
        tag: r.try_get(5)?,
        event: r.try_get(6)?,
        state: state_of(&state)?,
        value: value_of(r.try_get(8)?)?,
        limit: value_of(r.try_get(9)?)?,
        user: r.try_get(10)?,
        comment: r.try_get(11)?,
        message: r.try_get(12)?,
    })
}

fn event_pg(r: &PgRow) -> Result<AlarmEvent, sqlx::Error> {
    let p: i16 = r.try_get(2)?;
    let state: String = r.try_get(7)?;
    Ok(AlarmEvent {
        seq: r.try_get(0)?,
        ts_ns: r.try_get(1)?,
        priority: priority_of(i64::from(p))
            .ok_or_else(|| sqlx::Error::Decode(format!("alarm journal entry of priority {p}").into()))?,
        id: r.try_get(3)?,
        rule: r.try_get(4)?,
        tag: r.try_get(5)?,
        event: r.try_get(6)?,
        state: state_of(&state)?,
        value: value_of(r.try_get(8)?)?,
        limit: value_of(r.try_get(9)?)?,
        user: r.try_get(10)?,
        comment: r.try_get(11)?,
        message: r.try_get(12)?,
    })
}

/// Checks `q` as the caller gave it.
pub(crate) fn check(q: &AlarmQuery) -> Result<(), HistoryError> {
    if q.from_ns >= q.to_ns {
        return Err(HistoryError::Invalid("`from` must be before `to`".into()));
    }
    if q.limit == 0 || q.limit > MAX_LIMIT {
        return Err(HistoryError::Invalid(format!("limit must be 1 to {MAX_LIMIT}, got {}", q.limit)));
    }
    Ok(())
}

/// A page of the journal, read on `conn` (one statement: a snapshot of its own).
pub(crate) async fn page(conn: &mut Conn, q: &AlarmQuery) -> Result<AlarmPage, HistoryError> {
    // One more than fits tells whether there is a next page.
    let fetch = (q.limit + 1) as i64;
    let mut events = match conn {
        Conn::Sqlite(c) => {
            let sql = select_sql(q, false);
            let rows = bind_query!(sqlx::query(AssertSqlSafe(sql)), q, fetch).fetch_all(&mut **c).await?;
            rows.iter().map(event_sqlite).collect::<Result<Vec<_>, _>>()?
        }
        Conn::Postgres(c) => {
            let sql = select_sql(q, true);
            let rows = bind_query!(sqlx::query(AssertSqlSafe(sql)), q, fetch).fetch_all(&mut **c).await?;
            rows.iter().map(event_pg).collect::<Result<Vec<_>, _>>()?
        }
    };
    let next = if events.len() > q.limit {
        events.truncate(q.limit);
        events.last().map(|e| AlarmCursor { ts_ns: e.ts_ns, seq: e.seq })
    } else {
        None
    };
    Ok(AlarmPage { events, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_what_the_api_never_gave() {
        let c = AlarmCursor { ts_ns: 1_700_000_000_000_000_000, seq: 42 };
        assert_eq!(AlarmCursor::decode(&c.encode()), Some(c));
        for bad in ["", "1700", "a.b", "1.", ".1", "1.2.3"] {
            assert_eq!(AlarmCursor::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn values_keep_their_json_form_and_one_json_cannot_hold_is_none() {
        for v in [Value::F64(-2.5), Value::Bool(true), Value::I64(-7), Value::from("on"), Value::U64(u64::MAX)] {
            let back = value_of(json_of(&Some(v.clone()))).unwrap();
            assert_eq!(back, Some(v));
        }
        assert_eq!(json_of(&Some(Value::F64(f64::NAN))), None);
        assert_eq!(json_of(&None), None);
    }

    #[test]
    fn priorities_map_onto_severities_in_order() {
        let all = ["low", "medium", "high", "critical"];
        let sev: Vec<Severity> = all.iter().map(|p| parse_priority(p).unwrap()).collect();
        assert!(sev.windows(2).all(|w| w[0] < w[1]));
        for (i, s) in sev.iter().enumerate() {
            assert_eq!(priority_name(*s), all[i]);
            assert_eq!(priority_of(*s as i64), Some(*s));
        }
    }

    #[test]
    fn filters_appear_in_the_sql_only_when_asked_for_and_placeholders_count_up() {
        let mut q = AlarmQuery::range(0, 10);
        assert_eq!(
            select_sql(&q, true),
            format!(
                "SELECT id, {COLUMNS} FROM alarm_events WHERE ts >= $1 AND ts < $2 ORDER BY ts DESC, id DESC LIMIT $3"
            )
        );
        q.after = Some(AlarmCursor { ts_ns: 5, seq: 1 });
        q.min_priority = Some(Severity::Error);
        q.alarm = Some("hi:a.b".into());
        q.tag = Some("a.b".into());
        let sql = select_sql(&q, true);
        assert!(sql.contains("ts <= $3 AND (ts < $4 OR id < $5) AND priority >= $6 AND alarm_id = $7 AND tag = $8"));
        assert!(sql.ends_with("LIMIT $9"), "{sql}");
        assert_eq!(select_sql(&q, false).matches('?').count(), 9);
    }
}
