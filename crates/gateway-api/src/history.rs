//! The history routes: `GET /api/v1/history` (raw points, paged; or one row
//! per interval with aggregate functions; JSON or CSV),
//! `GET /api/v1/history/{tag}/latest` (the value at a point in time) and
//! `GET /api/v1/alarms/events` (the alarm journal, newest first, paged).
//!
//! Times are RFC 3339 (`2026-03-01T08:00:00Z`) or relative to now: `now`,
//! `-1h`, `now-15m` (units ms, s, m, h, d, w). Every answer's times are
//! RFC 3339 in UTC. Points are `[ts, value, quality]` where quality is
//! `good`, or the level and the reason, `bad:timeout`.
//!
//! This module parses and formats only; what is read, and from where
//! (rollups or raw values), is the store's business.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gateway_model::{Quality, Reason, Value, format_rfc3339_ns, now_ns, parse_rfc3339_ns};
use gateway_store::history::{
    Agg, AggQuery, AlarmCursor, AlarmEvent, AlarmQuery, Cursor, Point, RawQuery, Span, journal, parse_priority,
    priority_name,
};
use gateway_store::{History, HistoryError};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// Raw points per page when the query gives no `limit`.
const DEFAULT_LIMIT: usize = 10_000;

/// Query of `GET /api/v1/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// Comma-separated tag names or patterns.
    pub tags: Option<String>,
    /// Start (inclusive); default one hour ago.
    pub from: Option<String>,
    /// End (exclusive); default now.
    pub to: Option<String>,
    /// Bucket length (`10s`, `1m`, `1h`): one row per bucket.
    pub interval: Option<String>,
    /// Comma-separated aggregate functions (with `interval`; default `avg`).
    pub agg: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Raw points per page (default 10,000; at most `[history] max_rows`).
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// Query of `GET /api/v1/history/{tag}/latest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatestParams {
    /// The point in time; default now.
    pub before: Option<String>,
}

/// Query of `GET /api/v1/alarms/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmEventsParams {
    /// Start (inclusive); default 24 hours ago.
    pub from: Option<String>,
    /// End (exclusive); default now.
    pub to: Option<String>,
    /// The lowest priority shown: `low`, `medium`, `high` or `critical`.
    pub priority: Option<String>,
    /// Only this alarm (`rule:subject`).
    pub alarm: Option<String>,
    /// Only alarms on this tag.
    pub tag: Option<String>,
    /// Entries per page (default 1,000, at most 10,000).
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

fn from_history(e: HistoryError) -> ApiError {
    match e {
        HistoryError::Invalid(m) => invalid(m),
        e @ HistoryError::TooManyRows { .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "too_many_rows", e.to_string())
        }
        HistoryError::UnknownTag(t) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("tag {t:?} has no history"))
        }
        HistoryError::Stopped => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "history_unavailable", "history has stopped")
        }
        HistoryError::Store(e) if e.is_outage() => {
            tracing::error!(error = %e, "The history database is unavailable.");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "history_unavailable",
                "the history database is unavailable; retry later",
            )
        }
        HistoryError::Store(e) => ApiError::internal(e),
    }
}

fn history(s: &AppState) -> ApiResult<&History> {
    s.history().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "history_disabled", "history is not recorded ([history] enabled = false)")
    })
}

/// A time as the API takes it: RFC 3339, `now`, `-1h` or `now-1h`.
pub fn parse_time(name: &str, text: &str, now: i64) -> ApiResult<i64> {
    let t = text.trim();
    if t == "now" {
        return Ok(now);
    }
    if let Some(rel) = t.strip_prefix("now-").or_else(|| t.strip_prefix('-')) {
        let span: Span = rel.parse().map_err(|e| invalid(format!("{name}: {e}")))?;
        return Ok(now.saturating_sub(span.as_nanos() as i64));
    }
    parse_rfc3339_ns(t).and_then(|ns| i64::try_from(ns).ok()).ok_or_else(|| {
        invalid(format!("{name}: {t:?} is neither an RFC 3339 time nor relative to now (now, -1h, now-15m)"))
    })
}

fn quality_text(q: Quality) -> String {
    if q.reason == Reason::NONE { q.level.as_str().to_owned() } else { format!("{}:{}", q.level.as_str(), q.reason) }
}

fn ts(ns: i64) -> String {
    format_rfc3339_ns(ns.max(0) as u64)
}

/// `GET /api/v1/history`: raw points (JSON or CSV, paged) or, with
/// `interval`, one row per bucket with the `agg` functions.
pub async fn query(
    State(s): State<AppState>,
    q: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| invalid(e.body_text()))?;
    let h = history(&s)?;
    let now = now_ns() as i64;
    let tags: Vec<String> = q
        .tags
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if tags.is_empty() {
        return Err(invalid("tags: name at least one tag (tags=line1.temperature,line2.*)"));
    }
    let from = match &q.from {
        Some(t) => parse_time("from", t, now)?,
        None => now - 3_600_000_000_000,
    };
    let to = match &q.to {
        Some(t) => parse_time("to", t, now)?,
        None => now,
    };
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(invalid(format!("format: {other:?} is not json or csv"))),
    };
    match &q.interval {
        Some(interval) => {
            if q.limit.is_some() || q.cursor.is_some() {
                return Err(invalid("limit and cursor page raw points; with interval the rows are the buckets"));
            }
            let span: Span = interval.parse().map_err(|e| invalid(format!("interval: {e}")))?;
            // Each function once, in the order asked: a repeated one would
            // only multiply the answer's size.
            let mut aggs: Vec<Agg> = Vec::new();
            for a in q.agg.as_deref().unwrap_or("avg").split(',') {
                let a = a.trim().parse::<Agg>().map_err(|e| invalid(format!("agg: {e}")))?;
                if !aggs.contains(&a) {
                    aggs.push(a);
                }
            }
            let query = AggQuery { tags, from_ns: from, to_ns: to, interval_ns: span.as_nanos() as i64 };
            let (series, sources) = h.aggregate(&query).await.map_err(from_history)?;
            if csv {
                return Ok(aggregate_csv(&series, &aggs));
            }
            let out: Vec<serde_json::Value> = series
                .iter()
                .map(|se| {
                    let mut columns = vec!["ts"];
                    columns.extend(aggs.iter().map(|a| a.name()));
                    let rows: Vec<serde_json::Value> = se
                        .buckets
                        .iter()
                        .map(|(b, sum)| {
                            let mut row = vec![json!(ts(*b))];
                            row.extend(aggs.iter().map(|a| json!(sum.map(|s| s.get(*a)))));
                            serde_json::Value::Array(row)
                        })
                        .collect();
                    json!({ "tag": se.tag, "columns": columns, "rows": rows })
                })
                .collect();
            let body = json!({
                "from": ts(from), "to": ts(to), "interval": span.to_string(),
                "aggs": aggs.iter().map(|a| a.name()).collect::<Vec<_>>(),
                "sources": { "rollup_s": sources.rollup_ns as f64 / 1e9, "raw_s": sources.raw_ns as f64 / 1e9 },
                "series": out,
            });
            Ok(axum::Json(body).into_response())
        }
        None => {
            if q.agg.is_some() {
                return Err(invalid("agg needs an interval (interval=1m&agg=avg)"));
            }
            let limit = q.limit.unwrap_or(DEFAULT_LIMIT.min(h.max_rows()));
            let after = match &q.cursor {
                Some(c) => Some(Cursor::decode(c).ok_or_else(|| invalid("cursor: not a cursor this API gave"))?),
                None => None,
            };
            let page = h.raw(&RawQuery { tags, from_ns: from, to_ns: to, limit, after }).await.map_err(from_history)?;
            let next = page.next.as_ref().map(Cursor::encode);
            if csv {
                let mut resp = raw_csv(&page.series);
                if let Some(n) = next.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
                    resp.headers_mut().insert("x-next-cursor", n);
                }
                return Ok(resp);
            }
            Ok(raw_json(from, to, &page.series, next))
        }
    }
}

fn value_json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Written by hand rather than through `serde_json::Value`: a day of
/// one-second points is 86,400 of them, and building a tree first would
/// double the time and the memory.
fn raw_json(from: i64, to: i64, series: &[gateway_store::history::Series], next: Option<String>) -> Response {
    let points: usize = series.iter().map(|s| s.points.len()).sum();
    let mut out = String::with_capacity(128 + points * 56);
    let _ = write!(out, "{{\"from\":\"{}\",\"to\":\"{}\",\"series\":[", ts(from), ts(to));
    for (i, se) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"tag\":{},\"points\":[", json!(se.tag));
        for (j, p) in se.points.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "[\"{}\",{},\"{}\"]", ts(p.ts_ns), value_json(&p.value), quality_text(p.quality));
        }
        out.push_str("]}");
    }
    let _ = write!(out, "],\"next\":{}}}", json!(next));
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}

fn csv_value(v: &Value) -> String {
    match v {
        Value::Str(s) => csv_field(s),
        other => csv_field(&value_json(other)),
    }
}

fn csv_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

/// Long format: one line per point.
fn raw_csv(series: &[gateway_store::history::Series]) -> Response {
    let mut out = String::from("tag,ts,value,quality\r\n");
    for se in series {
        for Point { ts_ns, value, quality } in &se.points {
            let _ = write!(
                out,
                "{},{},{},{}\r\n",
                csv_field(&se.tag),
                ts(*ts_ns),
                csv_value(value),
                quality_text(*quality)
            );
        }
    }
    csv_response(out)
}

/// Wide format, as a spreadsheet wants it: one line per bucket, one column
/// per tag and function (`line1.temperature:avg`); empty where a bucket had
/// no good value.
fn aggregate_csv(series: &[gateway_store::history::AggSeries], aggs: &[Agg]) -> Response {
    let mut out = String::from("ts");
    for se in series {
        for a in aggs {
            let _ = write!(out, ",{}", csv_field(&format!("{}:{a}", se.tag)));
        }
    }
    out.push_str("\r\n");
    let rows = series.first().map_or(0, |s| s.buckets.len());
    for i in 0..rows {
        let _ = write!(out, "{}", ts(series[0].buckets[i].0));
        for se in series {
            for a in aggs {
                out.push(',');
                if let Some(s) = se.buckets[i].1 {
                    let _ = write!(out, "{}", s.get(*a));
                }
            }
        }
        out.push_str("\r\n");
    }
    csv_response(out)
}

/// `GET /api/v1/history/{tag}/latest?before=T`: the tag's newest point at or
/// before T (default now); 404 if it has none.
pub async fn latest(
    State(s): State<AppState>,
    Path(tag): Path<String>,
    q: Result<Query<LatestParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| invalid(e.body_text()))?;
    let h = history(&s)?;
    let now = now_ns() as i64;
    let at = match &q.before {
        Some(t) => parse_time("before", t, now)?,
        None => now,
    };
    match h.latest(&tag, at).await.map_err(from_history)? {
        Some(p) => {
            let mut body = json!({ "tag": tag, "ts": ts(p.ts_ns), "value": p.value, "quality": p.quality.level });
            if p.quality.reason != Reason::NONE {
                body["reason"] = json!(p.quality.reason);
            }
            Ok(axum::Json(body).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_value",
            format!("tag {tag:?} has no value at or before {}", ts(at)),
        )),
    }
}

fn alarm_event_json(e: &AlarmEvent) -> serde_json::Value {
    json!({
        "ts": ts(e.ts_ns),
        "id": e.id,
        "rule": e.rule,
        "tag": e.tag,
        "event": e.event,
        "state": e.state,
        "priority": priority_name(e.priority),
        "value": e.value,
        "limit": e.limit,
        "user": e.user,
        "comment": e.comment,
        "message": e.message,
    })
}

/// `GET /api/v1/alarms/events`: the alarm journal, newest first, in pages
/// (`next` gives the older entries); 503 when history, which keeps the
/// journal, is off.
pub async fn alarm_events(
    State(s): State<AppState>,
    q: Result<Query<AlarmEventsParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| invalid(e.body_text()))?;
    let h = s.history().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "history_disabled",
            "the alarm journal is kept by history, which is off ([history] enabled = false)",
        )
    })?;
    let now = now_ns() as i64;
    let from = match &q.from {
        Some(t) => parse_time("from", t, now)?,
        None => now - 86_400_000_000_000,
    };
    let to = match &q.to {
        Some(t) => parse_time("to", t, now)?,
        None => now,
    };
    let min_priority = match q.priority.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(
            parse_priority(p)
                .ok_or_else(|| invalid(format!("priority: {p:?} is not low, medium, high or critical")))?,
        ),
    };
    let after = match &q.cursor {
        Some(c) => Some(AlarmCursor::decode(c).ok_or_else(|| invalid("cursor: not a cursor this API gave"))?),
        None => None,
    };
    let non_empty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let query = AlarmQuery {
        from_ns: from,
        to_ns: to,
        min_priority,
        alarm: non_empty(q.alarm),
        tag: non_empty(q.tag),
        limit: q.limit.unwrap_or(journal::DEFAULT_LIMIT),
        after,
    };
    let page = h.alarm_events(&query).await.map_err(from_history)?;
    let events: Vec<serde_json::Value> = page.events.iter().map(alarm_event_json).collect();
    Ok(axum::Json(json!({ "events": events, "next": page.next.map(|c| c.encode()) })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_relative_to_now() {
        let now = 1_700_000_000_000_000_000;
        assert_eq!(parse_time("from", "now", now).unwrap(), now);
        assert_eq!(parse_time("from", "-1h", now).unwrap(), now - 3_600_000_000_000);
        assert_eq!(parse_time("from", "now-15m", now).unwrap(), now - 900_000_000_000);
        assert_eq!(parse_time("from", "2023-11-14T22:13:20Z", now).unwrap(), now);
        let e = parse_time("from", "yesterday", now).unwrap_err();
        assert!(e.message.starts_with("from: "), "{}", e.message);
        assert!(parse_time("to", "-1y", now).is_err());
    }

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quality_text(Quality::bad(Reason::TIMEOUT)), "bad:timeout");
        assert_eq!(quality_text(Quality::GOOD), "good");
    }
}
