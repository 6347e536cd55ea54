//! The queries the API answers: raw points of some tags over a range (paged
//! past `max_rows`), one row per bucket of an interval with aggregate
//! functions (from rollups where one fits, from raw values where not), and
//! the value of a tag at a point in time; and pages of the alarm journal.
//!
//! Each query reads one snapshot, so a batch committed meanwhile is either
//! wholly in its answer or not at all, and the rollups it reads agree with
//! the raw values it reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use gateway_model::TagPattern;
use tokio::sync::RwLock;

use super::HistoryError;
use super::db::Pool;
use super::journal::{self, AlarmPage, AlarmQuery};
use super::metrics::{HistoryMetrics, QueryLabel};
use super::pool::Gate;
use super::read::{Conn, Point, Snapshot, Tags};
use super::sink::state;
use super::summary::{Agg, Level, Source, Summary, bucket_of, ceil_to, plan};

/// Tags a query may name at most.
pub const MAX_TAGS: usize = 100;

/// Where a page of raw points ends: the next page starts after this tag's
/// point at this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The tag the page ended in.
    pub tag: String,
    /// The time of its last point on the page.
    pub ts_ns: i64,
}

impl Cursor {
    /// `tag@ts`, as the API hands it out.
    pub fn encode(&self) -> String {
        format!("{}@{}", self.tag, self.ts_ns)
    }

    /// The inverse of [`Cursor::encode`].
    pub fn decode(text: &str) -> Option<Cursor> {
        let (tag, ts) = text.rsplit_once('@')?;
        Some(Cursor { tag: tag.to_owned(), ts_ns: ts.parse().ok()? })
    }
}

/// Raw points of some tags.
#[derive(Clone, Debug)]
pub struct RawQuery {
    /// Tag names or patterns (`line1.*`), in the order the answer lists them.
    pub tags: Vec<String>,
    /// Start (inclusive), ns.
    pub from_ns: i64,
    /// End (exclusive), ns.
    pub to_ns: i64,
    /// Points per page at most.
    pub limit: usize,
    /// Continue after this point (the `next` of the previous page).
    pub after: Option<Cursor>,
}

/// One tag's points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The tag.
    pub tag: String,
    /// Its points, oldest first.
    pub points: Vec<Point>,
}

/// A page of raw points.
#[derive(Clone, Debug, PartialEq)]
pub struct RawPage {
    /// One entry per tag (on a continued page, from the tag it continues).
    pub series: Vec<Series>,
    /// Where the next page starts, if there is more.
    pub next: Option<Cursor>,
}

/// Rows per bucket.
#[derive(Clone, Debug)]
pub struct AggQuery {
    /// Tag names or patterns.
    pub tags: Vec<String>,
    /// Start (inclusive), ns.
    pub from_ns: i64,
    /// End (exclusive), ns.
    pub to_ns: i64,
    /// Bucket length, ns; buckets start at multiples of it since the epoch
    /// (the first and last cover only what of them is inside the range,
    /// unless retention deleted the raw values there: then they are whole).
    pub interval_ns: i64,
}

/// One tag's buckets, every bucket of the range, empty ones as None.
#[derive(Clone, Debug, PartialEq)]
pub struct AggSeries {
    /// The tag.
    pub tag: String,
    /// (bucket start, summary of its good numeric values).
    pub buckets: Vec<(i64, Option<Summary>)>,
}

/// Where an aggregated answer came from, for the curious and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AggSources {
    /// ns of the range read from rollups.
    pub rollup_ns: i64,
    /// ns of the range read from raw values.
    pub raw_ns: i64,
}

/// Answers queries through the gate of the query pool.
pub(crate) struct Queries {
    pub pool: Pool,
    pub gate: Arc<Gate>,
    pub metrics: Arc<HistoryMetrics>,
    pub widths_s: Vec<i64>,
    pub max_rows: usize,
    tags: RwLock<(HashMap<String, i32>, Option<Instant>)>,
}

impl Queries {
    pub fn new(
        pool: Pool,
        gate: Arc<Gate>,
        metrics: Arc<HistoryMetrics>,
        widths_s: Vec<i64>,
        max_rows: usize,
    ) -> Queries {
        Queries { pool, gate, metrics, widths_s, max_rows, tags: RwLock::new((HashMap::new(), None)) }
    }

    fn done(&self, kind: &'static str, t: Instant) {
        let label = QueryLabel { kind };
        self.metrics.queries.get_or_create(&label).inc();
        self.metrics.query_seconds.get_or_create(&label).observe(t.elapsed().as_secs_f64());
    }

    /// Names (patterns expanded) to ids, in the order asked, each once.
    async fn resolve(&self, snap: &mut Snapshot<'_>, names: &[String]) -> Result<Vec<(String, i32)>, HistoryError> {
        if names.is_empty() {
            return Err(HistoryError::Invalid("name at least one tag".into()));
        }
        let needs_all = names.iter().any(|n| n.contains(['*', '?']));
        let fresh = {
            let cache = self.tags.read().await;
            let missing = names.iter().any(|n| !n.contains(['*', '?']) && !cache.0.contains_key(n));
            // Reload at most once a second: unknown names are a client's mistake
            // that must not become a reload per request.
            let recent = cache.1.is_some_and(|t| t.elapsed().as_secs() < 1);
            !(missing || needs_all) || recent
        };
        if !fresh {
            let all = snap.tags().await?;
            *self.tags.write().await = (all, Some(Instant::now()));
        }
        let cache = self.tags.read().await;
        let mut out: Vec<(String, i32)> = Vec::new();
        for n in names {
            if n.contains(['*', '?']) {
                let p = TagPattern::new(n).map_err(|e| HistoryError::Invalid(e.to_string()))?;
                let mut matched: Vec<(&String, &i32)> = cache.0.iter().filter(|(name, _)| p.matches(name)).collect();
                matched.sort();
                for (name, id) in matched {
                    if !out.iter().any(|(o, _)| o == name) {
                        out.push((name.clone(), *id));
                    }
                }
            } else {
                let id = *cache.0.get(n).ok_or_else(|| HistoryError::UnknownTag(n.clone()))?;
                if !out.iter().any(|(o, _)| o == n) {
                    out.push((n.clone(), id));
                }
            }
            if out.len() > MAX_TAGS {
                return Err(HistoryError::Invalid(format!("at most {MAX_TAGS} tags per query")));
            }
        }
        Ok(out)
    }

    fn check_range(from: i64, to: i64) -> Result<(), HistoryError> {
        if from >= to {
            return Err(HistoryError::Invalid("`from` must be before `to`".into()));
        }
        Ok(())
    }

    /// A page of raw points.
    pub async fn raw(&self, q: &RawQuery) -> Result<RawPage, HistoryError> {
        let t = Instant::now();
        Self::check_range(q.from_ns, q.to_ns)?;
        if q.limit == 0 || q.limit > self.max_rows {
            return Err(HistoryError::Invalid(format!("limit must be 1 to {}, got {}", self.max_rows, q.limit)));
        }
        let _pass = self.gate.pass().await?;
        let mut conn = Conn::acquire(&self.pool).await?;
        let mut snap = conn.snapshot().await?;
        let tags = self.resolve(&mut snap, &q.tags).await?;
        let start = match &q.after {
            None => 0,
            Some(c) => tags
                .iter()
                .position(|(name, _)| *name == c.tag)
                .ok_or_else(|| HistoryError::Invalid(format!("the cursor names tag {:?}, not in this query", c.tag)))?,
        };
        let mut series = Vec::new();
        let mut left = q.limit;
        let mut next = None;
        for (i, (name, id)) in tags.iter().enumerate().skip(start) {
            let from = match &q.after {
                Some(c) if i == start => c.ts_ns.saturating_add(1).max(q.from_ns),
                _ => q.from_ns,
            };
            // One more than fits tells whether the page is cut.
            let mut points = snap.points(*id, from, q.to_ns, left + 1).await?;
            let cut = points.len() > left;
            points.truncate(left);
            left -= points.len();
            if cut {
                next = points.last().map(|p| Cursor { tag: name.clone(), ts_ns: p.ts_ns });
            }
            series.push(Series { tag: name.clone(), points });
            if cut {
                break;
            }
            if left == 0 && i + 1 < tags.len() {
                // The page is full exactly at a tag's end: the next starts with the next tag.
                next = Some(Cursor { tag: tags[i + 1].0.clone(), ts_ns: q.from_ns.saturating_sub(1) });
                break;
            }
        }
        self.done("raw", t);
        Ok(RawPage { series, next })
    }

    /// A page of the alarm journal, newest first.
    pub async fn alarm_events(&self, q: &AlarmQuery) -> Result<AlarmPage, HistoryError> {
        let t = Instant::now();
        journal::check(q)?;
        let _pass = self.gate.pass().await?;
        let mut conn = Conn::acquire(&self.pool).await?;
        let page = journal::page(&mut conn, q).await?;
        self.done("alarm_events", t);
        Ok(page)
    }

    /// The value of `tag` at `at`: its newest point at or before it.
    pub async fn latest(&self, tag: &str, at: i64) -> Result<Option<Point>, HistoryError> {
        let t = Instant::now();
        if tag.contains(['*', '?']) {
            return Err(HistoryError::Invalid("name one tag, not a pattern".into()));
        }
        let _pass = self.gate.pass().await?;
        let mut conn = Conn::acquire(&self.pool).await?;
        let mut snap = conn.snapshot().await?;
        let tags = self.resolve(&mut snap, &[tag.to_owned()]).await?;
        let point = snap.latest(tags[0].1, at).await?;
        self.done("latest", t);
        Ok(point)
    }

    /// One row per bucket of `q.interval_ns`.
    pub async fn aggregate(&self, q: &AggQuery) -> Result<(Vec<AggSeries>, AggSources), HistoryError> {
        let t = Instant::now();
        Self::check_range(q.from_ns, q.to_ns)?;
        if q.interval_ns < 1_000_000 {
            return Err(HistoryError::Invalid("the interval must be at least 1ms".into()));
        }
        let first = bucket_of(q.from_ns, q.interval_ns);
        let buckets = ((q.to_ns - first) as u64).div_ceil(q.interval_ns as u64);
        let _pass = self.gate.pass().await?;
        let mut conn = Conn::acquire(&self.pool).await?;
        let mut snap = conn.snapshot().await?;
        let tags = self.resolve(&mut snap, &q.tags).await?;
        let asked = buckets.saturating_mul(tags.len() as u64);
        if asked > self.max_rows as u64 {
            return Err(HistoryError::TooManyRows { asked, buckets, tags: tags.len(), limit: self.max_rows });
        }
        let st = snap.state().await?;
        let levels: Vec<Level> = self
            .widths_s
            .iter()
            .filter_map(|w| Some(Level { width: w * 1_000_000_000, complete_before: *st.get(&state::rollup(*w))? }))
            .collect();
        // Where retention deleted the raw values already, the partial buckets
        // at the edges are read whole from their summaries: better a bucket
        // a little wider than asked than one missing what is no longer there.
        let raw_from = st.get(state::RAW_DELETED_NS).copied().unwrap_or(i64::MIN);
        let from = if q.from_ns < raw_from { bucket_of(q.from_ns, q.interval_ns) } else { q.from_ns };
        let to = if q.to_ns <= raw_from { ceil_to(q.to_ns, q.interval_ns) } else { q.to_ns };
        let parts = plan(from, to, q.interval_ns, &levels);
        let mut sources = AggSources::default();
        for (a, b, src) in &parts {
            match src {
                Source::Raw => sources.raw_ns += b - a,
                Source::Rollup(_) => sources.rollup_ns += b - a,
            }
        }
        let ids: Vec<i32> = tags.iter().map(|(_, id)| *id).collect();
        let mut per_tag: HashMap<i32, BTreeMap<i64, Summary>> = HashMap::new();
        let mut add = |tag: i32, bucket: i64, s: &Summary| {
            per_tag
                .entry(tag)
                .or_default()
                .entry(bucket_of(bucket, q.interval_ns))
                .and_modify(|m| m.merge(s))
                .or_insert(*s);
        };
        for (a, b, src) in parts {
            match src {
                Source::Raw => {
                    for (tag, bucket, s) in snap.summaries(Tags::Some(&ids), a, b, q.interval_ns).await? {
                        add(tag, bucket, &s);
                    }
                }
                Source::Rollup(width) => {
                    let width_s = width / 1_000_000_000;
                    for (_, id) in &tags {
                        let stale: Vec<i64> =
                            snap.dirty(width_s, Some(*id), a, b, usize::MAX).await?.into_iter().map(|d| d.1).collect();
                        for (bucket, s) in snap.rollups(width_s, *id, a, b).await? {
                            if !stale.contains(&bucket) {
                                add(*id, bucket, &s);
                            }
                        }
                        for bucket in stale {
                            // Changed since it was summarised: from the raw values.
                            let raw = snap.summaries(Tags::Some(&[*id]), bucket, bucket + width, q.interval_ns).await?;
                            for (tag, b, s) in raw {
                                add(tag, b, &s);
                            }
                        }
                    }
                }
            }
        }
        drop(snap);
        let out = tags
            .iter()
            .map(|(name, id)| {
                let got = per_tag.remove(id).unwrap_or_default();
                let buckets =
                    (0..buckets as i64).map(|i| first + i * q.interval_ns).map(|b| (b, got.get(&b).copied())).collect();
                AggSeries { tag: name.clone(), buckets }
            })
            .collect();
        self.done("aggregate", t);
        Ok((out, sources))
    }
}

/// Reads `agg` from each bucket of a series: None where the bucket had no
/// good value.
pub fn values(series: &AggSeries, agg: Agg) -> Vec<(i64, Option<f64>)> {
    series.buckets.iter().map(|(ts, s)| (*ts, s.map(|s| s.get(agg)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_even_with_at_signs_in_the_tag() {
        let c = Cursor { tag: "line1.a@b".into(), ts_ns: 1_700_000_000_000_000_000 };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("nope"), None);
        assert_eq!(Cursor::decode("a@x"), None);
    }
}
