//! History through a real bus (WAL mode) into SQLite and a real PostgreSQL:
//! what is stored, raw queries and their pages, every aggregate checked
//! against values computed here (from rollups, from raw values, and both
//! mixed), late readings, retention, the value at a point in time, the
//! include/exclude/deadband rules, and a restart that must neither lose nor
//! repeat a reading. Every case runs on both databases (`common::suite!`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::TestDb;
use gateway_bus::{Bus, BusMetrics, BusSettings, CursorStart, Preset};
use gateway_model::{Batch, DataFrame, Frame, Quality, Reason, TagId, TagPattern, Value, now_ns};
use gateway_store::history::{
    Agg, AggQuery, AggSeries, CURSOR, DeadbandRule, HistoryConfig, Point, RawQuery, RollupConfig, Span, Summary,
};
use gateway_store::{Dialect, History, HistoryMetrics};
use tempfile::TempDir;

const S: i64 = 1_000_000_000;
const M: i64 = 60 * S;
const H: i64 = 60 * M;
const D: i64 = 24 * H;

/// A bus with its WAL and a history writing from it.
struct Rig {
    bus: Bus,
    history: History,
    db: TestDb,
    cfg: HistoryConfig,
    _wal: TempDir,
}

fn quick(cfg: HistoryConfig) -> HistoryConfig {
    HistoryConfig { commit_interval_ms: 20, ..cfg }
}

async fn rig(db: TestDb, cfg: HistoryConfig) -> Rig {
    let wal = tempfile::tempdir().expect("tempdir");
    let bus = open_bus(&wal);
    let history = open_history(&db, &cfg).await;
    history.start(&bus).await.expect("start history");
    Rig { bus, history, db, cfg, _wal: wal }
}

fn open_bus(wal: &TempDir) -> Bus {
    let settings = BusSettings { wal_dir: wal.path().join("wal"), ..Preset::LowLatency.settings() };
    Bus::open(settings, Arc::new(BusMetrics::unregistered())).expect("open the bus")
}

async fn open_history(db: &TestDb, cfg: &HistoryConfig) -> History {
    History::open(cfg, &db.config(), &db.data_dir, Arc::new(HistoryMetrics::unregistered()))
        .await
        .expect("open history")
}

fn frame(tag: &str, v: impl Into<Value>, q: Quality, ts: i64) -> Frame {
    Frame::Data(DataFrame::new(TagId::new(tag).unwrap(), v.into(), q, ts as u64))
}

/// A boxed future, `Send` whatever lifetimes it holds: the cases run in
/// spawned tasks, and rustc cannot always prove that of an `async fn` that
/// borrows across awaits (rust-lang/rust#110338).
type Fut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

impl Rig {
    /// Publishes `frames` in batches of 500 and waits until history wrote them.
    fn write(&self, frames: Vec<Frame>) -> Fut<'_, ()> {
        Box::pin(async move {
            let mut end = 0;
            let batches: Vec<Vec<Frame>> = frames.chunks(500).map(<[Frame]>::to_vec).collect();
            for b in batches {
                end = self.bus.publish(Arc::new(Batch::from(b))).await.expect("publish").end;
            }
            let h = self.history.clone();
            gateway_bench::wait_until(60, "history to write what was published", move || h.written_seq() >= end).await;
        })
    }

    fn points(&self, tag: &str, from: i64, to: i64) -> Fut<'_, Vec<Point>> {
        let q = RawQuery { tags: vec![tag.into()], from_ns: from, to_ns: to, limit: 100_000, after: None };
        Box::pin(async move {
            let page = self.history.raw(&q).await.expect("raw query");
            assert!(page.next.is_none());
            page.series.into_iter().next().map(|s| s.points).unwrap_or_default()
        })
    }

    /// Maintenance passes until nothing more is due, as of `now`.
    fn maintain(&self, now: i64) -> Fut<'_, ()> {
        Box::pin(async move {
            for _ in 0..10_000 {
                let p = self.history.maintain(now).await.expect("maintenance");
                if !p.more && p.summarised == 0 && p.deleted == 0 {
                    return;
                }
            }
            panic!("maintenance never settled");
        })
    }

    /// The aggregate query `q`, boxed like the rest.
    fn aggregate(&self, q: AggQuery) -> Fut<'_, (Vec<AggSeries>, gateway_store::history::AggSources)> {
        Box::pin(async move { self.history.aggregate(&q).await.expect("aggregate") })
    }
}

fn sums(series: &[AggSeries]) -> Vec<f64> {
    series[0].buckets.iter().map(|(_, s)| s.map_or(0.0, |s| s.get(Agg::Sum))).collect()
}

/// The summary of `(ts, v)` good values, as the test computes it.
fn summarise(values: &[(i64, f64)]) -> Option<Summary> {
    let (first, rest) = values.split_first()?;
    let mut s = Summary::of(first.0, first.1);
    for (ts, v) in rest {
        s.push(*ts, *v);
    }
    Some(s)
}

async fn every_reading_is_stored_once_with_its_value_type_and_quality(db: TestDb) {
    let r = rig(db, quick(HistoryConfig::default())).await;
    let t0 = now_ns() as i64 - H;
    let values: Vec<(&'static str, Value, Quality)> = vec![
        ("k.f", Value::F64(-2.25), Quality::GOOD),
        ("k.b", Value::Bool(true), Quality::GOOD),
        ("k.i", Value::I64(i64::MIN + 1), Quality::GOOD),
        ("k.u", Value::U64(u64::MAX), Quality::GOOD),
        ("k.s", Value::from("a,b \"c\""), Quality::GOOD),
        ("k.y", Value::Bytes(Arc::from(vec![0u8, 1, 255])), Quality::GOOD),
        ("k.bad", Value::F64(0.0), Quality::bad(Reason::TIMEOUT)),
        ("k.unc", Value::I64(7), Quality::uncertain(Reason::LAST_KNOWN)),
    ];
    let mut frames = Vec::new();
    for i in 0..3 {
        for (tag, v, q) in &values {
            frames.push(frame(tag, v.clone(), *q, t0 + i * S));
        }
    }
    r.write(frames).await;
    for (tag, v, q) in values.clone() {
        let got = r.points(tag, t0, t0 + H).await;
        let want: Vec<Point> = (0..3).map(|i| Point { ts_ns: t0 + i * S, value: v.clone(), quality: q }).collect();
        assert_eq!(got.len(), want.len(), "{tag}");
        for (g, w) in got.iter().zip(&want) {
            assert!(g.value.same(&w.value) && g.ts_ns == w.ts_ns && g.quality == w.quality, "{tag}: {g:?} != {w:?}");
        }
    }
    let (rows, bytes) = r.history.measure().await.expect("measure");
    assert_eq!(rows, 3 * values.len() as i64);
    assert!(bytes > 0);
}

async fn raw_queries_page_past_the_limit_and_every_point_comes_once(db: TestDb) {
    let r = rig(db, quick(HistoryConfig::default())).await;
    let t0 = now_ns() as i64 - H;
    let mut frames = Vec::new();
    for i in 0..250 {
        for tag in ["p.a", "p.b", "p.c"] {
            frames.push(frame(tag, i as f64, Quality::GOOD, t0 + i * S));
        }
    }
    r.write(frames).await;
    let mut seen: Vec<(String, i64)> = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let q = RawQuery { tags: vec!["p.*".into()], from_ns: t0, to_ns: t0 + H, limit: 100, after };
        let page = r.history.raw(&q).await.expect("a page");
        let n: usize = page.series.iter().map(|s| s.points.len()).sum();
        assert!(n <= 100);
        for s in &page.series {
            seen.extend(s.points.iter().map(|p| (s.tag.clone(), p.ts_ns)));
        }
        pages += 1;
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 8, "750 points, 100 a page");
    let want: Vec<(String, i64)> =
        ["p.a", "p.b", "p.c"].iter().flat_map(|t| (0..250).map(move |i| (t.to_string(), t0 + i * S))).collect();
    assert_eq!(seen, want);
    let q = RawQuery { tags: vec!["p.zz".into()], from_ns: t0, to_ns: t0 + H, limit: 10, after: None };
    assert!(r.history.raw(&q).await.unwrap_err().to_string().contains("has no history"));
}

async fn every_aggregate_matches_what_the_test_computes_from_rollups_and_raw_values(db: TestDb) {
    let r = rig(db, quick(HistoryConfig::default())).await;
    // Three hours of one-second values, hours ago, with bad readings in
    // between (not summarised) and values whose sums are exact.
    let base = (now_ns() as i64 - 5 * H) / H * H;
    let mut frames = Vec::new();
    let mut good: Vec<(i64, f64)> = Vec::new();
    for i in 0..3 * 3600 {
        let ts = base + i * S + 250_000_000;
        let v = ((i * 37) % 101) as f64 * 0.5 - 20.0;
        if i % 13 == 0 {
            frames.push(frame("agg.x", v, Quality::bad(Reason::TIMEOUT), ts));
        } else {
            frames.push(frame("agg.x", v, Quality::GOOD, ts));
            good.push((ts, v));
        }
        frames.push(frame("agg.s", "text is not summarised", Quality::GOOD, ts));
    }
    r.write(frames).await;
    // Rollups are made once the data is complete.
    let probe = AggQuery { tags: vec!["agg.x".into()], from_ns: base, to_ns: base + 3 * H, interval_ns: H };
    for _ in 0..200 {
        r.maintain(now_ns() as i64).await;
        if r.aggregate(probe.clone()).await.1.raw_ns == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, sources) = r.aggregate(probe).await;
    assert_eq!((sources.rollup_ns, sources.raw_ns), (3 * H, 0), "whole hours come from the rollups");

    let from = base + 90 * S + 123;
    let to = base + 2 * H + 50 * M + 17 * S;
    for interval in [M, 5 * M, H, 10 * S, 7 * S, D] {
        let q = AggQuery { tags: vec!["agg.x".into()], from_ns: from, to_ns: to, interval_ns: interval };
        let (series, sources) = r.aggregate(q).await;
        if interval % M == 0 {
            assert!(sources.rollup_ns > 0 && sources.raw_ns < 2 * M, "interval {interval}: {sources:?}");
        } else {
            assert_eq!(sources.rollup_ns, 0, "interval {interval}: no rollup divides it");
        }
        let buckets = &series[0].buckets;
        let first = from - from.rem_euclid(interval);
        assert_eq!(buckets.first().map(|b| b.0), Some(first));
        let mut expected: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
        for (ts, v) in good.iter().filter(|(ts, _)| *ts >= from && *ts < to) {
            expected.entry(ts - ts.rem_euclid(interval)).or_default().push((*ts, *v));
        }
        assert_eq!(buckets.len() as i64, (to - first + interval - 1) / interval, "interval {interval}");
        for (b, got) in buckets {
            let want = expected.get(b).and_then(|v| summarise(v));
            assert_eq!(*got, want, "interval {interval}, bucket {b}");
            if let (Some(g), Some(w)) = (got, want) {
                for agg in Agg::ALL {
                    assert_eq!(g.get(agg), w.get(agg), "{agg} of bucket {b}");
                }
            }
        }
    }
    let text = AggQuery { tags: vec!["agg.s".into()], from_ns: from, to_ns: to, interval_ns: H };
    let (series, _) = r.aggregate(text).await;
    assert!(series[0].buckets.iter().all(|(_, s)| s.is_none()), "text has no numbers to summarise");
    let many = AggQuery { tags: vec!["agg.x".into()], from_ns: 0, to_ns: base, interval_ns: S };
    let e = r.history.aggregate(&many).await.unwrap_err();
    assert!(e.to_string().contains("more than the limit"), "{e}");
}

async fn a_late_reading_counts_before_and_after_its_bucket_is_summarised_again(db: TestDb) {
    let r = rig(db, quick(HistoryConfig::default())).await;
    let base = (now_ns() as i64 - 3 * H) / H * H;
    let frames: Vec<Frame> = (0..120).map(|i| frame("late.x", 1.0, Quality::GOOD, base + i * S)).collect();
    r.write(frames).await;
    let q = AggQuery { tags: vec!["late.x".into()], from_ns: base, to_ns: base + 2 * M, interval_ns: M };
    for _ in 0..200 {
        r.maintain(now_ns() as i64).await;
        if r.aggregate(q.clone()).await.1.raw_ns == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sums(&r.aggregate(q.clone()).await.0), [60.0, 60.0]);
    // A reading stamped in the first, already summarised, minute.
    r.write(vec![frame("late.x", 100.0, Quality::GOOD, base + 30 * S + 1)]).await;
    let (series, sources) = r.aggregate(q.clone()).await;
    assert_eq!(sums(&series), [160.0, 60.0], "counted at once (the stale bucket is read raw)");
    assert_eq!(sources.raw_ns, 0);
    r.maintain(now_ns() as i64).await;
    assert_eq!(sums(&r.aggregate(q).await.0), [160.0, 60.0], "and after its summary was made again");
    let hourly = AggQuery { tags: vec!["late.x".into()], from_ns: base, to_ns: base + H, interval_ns: H };
    let (series, _) = r.aggregate(hourly).await;
    assert_eq!(series[0].buckets[0].1.map(|s| (s.n, s.max)), Some((121, 100.0)), "in the hour's summary too");
}

async fn readings_older_than_a_summary_level_made_before_them_still_count(db: TestDb) {
    let r = rig(db, quick(HistoryConfig::default())).await;
    let now = now_ns() as i64;
    // The first reading stored is stamped ahead (a device whose clock is
    // ahead): the summary levels are made while nothing before their
    // watermark is stored, so they start at once where the data is complete.
    r.write(vec![frame("ahead.x", 1.0, Quality::GOOD, now + 2 * H)]).await;
    r.maintain(now_ns() as i64).await;
    // Then readings hours old arrive (a backlog a device kept while it was
    // unreachable): below the watermarks, so their buckets must be stale.
    let base = (now - 3 * H) / H * H;
    r.write((0..120).map(|i| frame("back.x", 1.0, Quality::GOOD, base + i * S)).collect()).await;
    let q = AggQuery { tags: vec!["back.x".into()], from_ns: base, to_ns: base + 2 * M, interval_ns: M };
    let hourly = AggQuery { tags: vec!["back.x".into()], from_ns: base, to_ns: base + H, interval_ns: H };
    let (series, sources) = r.aggregate(q.clone()).await;
    assert_eq!((sources.rollup_ns, sources.raw_ns), (2 * M, 0), "the range is under the minutes' watermark");
    assert_eq!(sums(&series), [60.0, 60.0], "counted at once (the stale buckets are read raw)");
    assert_eq!(sums(&r.aggregate(hourly.clone()).await.0), [120.0]);
    r.maintain(now_ns() as i64).await;
    assert_eq!(sums(&r.aggregate(q).await.0), [60.0, 60.0], "and after their summaries were made");
    assert_eq!(sums(&r.aggregate(hourly).await.0), [120.0]);
}

async fn a_nan_reading_is_stored_and_read_back_but_not_summarised(db: TestDb) {
    let r = rig(db, quick(HistoryConfig::default())).await;
    let base = (now_ns() as i64 - 3 * H) / H * H;
    // A sensor fault reported as NaN, first and last in its minute and alone
    // in the next one, between good readings.
    let v = |i: i64| if i % 60 == 0 || i % 60 == 59 || (60..120).contains(&i) { f64::NAN } else { 2.0 };
    r.write((0..180).map(|i| frame("nan.x", v(i), Quality::GOOD, base + i * S)).collect()).await;
    let points = r.points("nan.x", base, base + H).await;
    assert_eq!(points.len(), 180, "every reading is stored, NaN too");
    assert!(points[0].value.as_f64().unwrap().is_nan() && points[1].value.as_f64() == Some(2.0));
    let q = AggQuery { tags: vec!["nan.x".into()], from_ns: base, to_ns: base + 3 * M, interval_ns: M };
    let check = |series: &[AggSeries]| {
        let b = &series[0].buckets;
        let n: Vec<Option<f64>> = b.iter().map(|(_, s)| s.as_ref().map(|s| s.get(Agg::Count))).collect();
        assert_eq!(n, [Some(58.0), None, Some(58.0)], "NaN is not a number to summarise");
        assert_eq!(b[0].1.as_ref().unwrap().get(Agg::Sum), 116.0);
    };
    check(&r.aggregate(q.clone()).await.0);
    // Summaries are made over it, and maintenance goes on to later steps.
    r.maintain(now_ns() as i64).await;
    let (series, sources) = r.aggregate(q).await;
    assert_eq!(sources.raw_ns, 0, "served from the summaries: {sources:?}");
    check(&series);
}

async fn retention_deletes_what_is_older_and_only_that(db: TestDb) {
    let cfg = HistoryConfig {
        retention: Span::from_secs(10 * 86_400),
        rollups: vec![RollupConfig { interval: Span::from_secs(60), retention: Span::from_secs(20 * 86_400) }],
        ..quick(HistoryConfig::default())
    };
    let r = rig(db, cfg).await;
    let now = now_ns() as i64;
    // An hour into the day nine days ago, so the 100 s of old readings sit in
    // one day: PostgreSQL drops whole day partitions, and readings crossing
    // a midnight would leave the later day's until it is wholly past (the
    // test failed when run in the 100 s before midnight UTC).
    let old = (now - 9 * D).div_euclid(D) * D + 3_600 * S;
    let new = now - D;
    let frames: Vec<Frame> = (0..100)
        .flat_map(|i| {
            [frame("ret.x", 1.0, Quality::GOOD, old + i * S), frame("ret.x", 2.0, Quality::GOOD, new + i * S)]
        })
        .collect();
    r.write(frames).await;
    // Values older than the retention are not even written.
    r.write(vec![frame("ret.x", 3.0, Quality::GOOD, now - 11 * D)]).await;
    r.maintain(now).await;
    assert_eq!(r.points("ret.x", 0, now).await.len(), 200);

    // Two days later, the old readings are past the 10 days.
    let later = now + 2 * D;
    r.maintain(later).await;
    let left = r.points("ret.x", 0, now).await;
    assert_eq!(left.len(), 100);
    assert!(left.iter().all(|p| p.ts_ns >= new), "only the old ones went");
    assert_eq!(r.history.measure().await.unwrap().0, 100, "the row count follows");
    // Their summaries are kept longer.
    let q =
        AggQuery { tags: vec!["ret.x".into()], from_ns: old - old.rem_euclid(M), to_ns: old + 2 * M, interval_ns: M };
    let (series, _) = r.aggregate(q.clone()).await;
    assert_eq!(series[0].buckets.iter().filter_map(|b| b.1).map(|s| s.n).sum::<u64>(), 100);

    if r.db.dialect == Dialect::Sqlite {
        // SQLite deletes to the nanosecond: one reading each side of the cutoff.
        let cut = new + 50 * S;
        r.maintain(cut + 10 * D).await;
        let left: Vec<i64> = r.points("ret.x", 0, now).await.iter().map(|p| p.ts_ns).collect();
        assert_eq!(left.first(), Some(&cut), "the reading at the cutoff stays, the one before it went");
        assert_eq!(left.len(), 50);
    }

    r.maintain(now + 12 * D).await;
    let (series, _) = r.aggregate(q).await;
    assert!(series[0].buckets.iter().all(|b| b.1.is_none()), "until theirs is past too");
    let recent =
        AggQuery { tags: vec!["ret.x".into()], from_ns: new - new.rem_euclid(M), to_ns: new + 2 * M, interval_ns: M };
    let (series, _) = r.aggregate(recent).await;
    assert_eq!(series[0].buckets.iter().filter_map(|b| b.1).map(|s| s.n).sum::<u64>(), 100, "newer summaries stay");
}

async fn the_value_at_a_point_in_time_is_the_newest_at_or_before_it(db: TestDb) {
    let r = rig(db, quick(HistoryConfig::default())).await;
    let t0 = now_ns() as i64 - H;
    r.write((0..10).map(|i| frame("at.x", i, Quality::GOOD, t0 + i * M)).collect()).await;
    for (t, want) in [
        (t0 + 3 * M + 5, Some((t0 + 3 * M, Value::I64(3)))),
        (t0 + 3 * M, Some((t0 + 3 * M, Value::I64(3)))),
        (t0 - 1, None),
        (i64::MAX, Some((t0 + 9 * M, Value::I64(9)))),
    ] {
        let got = r.history.latest("at.x", t).await.expect("latest").map(|p| (p.ts_ns, p.value));
        assert_eq!(got, want, "at {t}");
    }
    assert!(r.history.latest("at.nope", t0).await.unwrap_err().to_string().contains("no history"));
}

async fn include_exclude_and_deadband_decide_what_is_stored(db: TestDb) {
    let cfg = HistoryConfig {
        include: vec![TagPattern::new("sel.*").unwrap()],
        exclude: vec![TagPattern::new("sel.secret").unwrap()],
        deadband: vec![DeadbandRule { tags: TagPattern::new("sel.db").unwrap(), value: 1.0, max_gap: None }],
        ..quick(HistoryConfig::default())
    };
    let r = rig(db, cfg).await;
    let t0 = now_ns() as i64 - H;
    let seq = [10.0, 10.5, 11.2, 11.0, 12.5];
    let mut frames = Vec::new();
    for (i, v) in seq.iter().enumerate() {
        let ts = t0 + i as i64 * S;
        frames.push(frame("sel.db", *v, Quality::GOOD, ts));
        frames.push(frame("sel.all", *v, Quality::GOOD, ts));
        frames.push(frame("sel.secret", *v, Quality::GOOD, ts));
        frames.push(frame("other.x", *v, Quality::GOOD, ts));
    }
    r.write(frames).await;
    let db_points: Vec<f64> = r.points("sel.db", t0, t0 + H).await.iter().map(|p| p.value.as_f64().unwrap()).collect();
    assert_eq!(db_points, [10.0, 11.2, 12.5]);
    let all: Vec<f64> = r.points("sel.all", t0, t0 + H).await.iter().map(|p| p.value.as_f64().unwrap()).collect();
    assert_eq!(all, seq);
    for tag in ["sel.secret", "other.x"] {
        let q = RawQuery { tags: vec![tag.into()], from_ns: t0, to_ns: t0 + H, limit: 10, after: None };
        assert!(r.history.raw(&q).await.is_err(), "{tag} is not recorded");
    }
}

async fn a_restart_neither_loses_nor_repeats_a_reading_even_if_the_cursor_fell_behind(db: TestDb) {
    let r = rig(db, quick(HistoryConfig::default())).await;
    let t0 = now_ns() as i64 - H;
    r.write((0..1000).map(|i| frame("rs.n", i, Quality::GOOD, t0 + i * 1_000_000)).collect()).await;
    r.history.close().await;
    // Published while history is down: the cursor keeps them.
    let mut end = 0;
    for chunk in (1000..2000).collect::<Vec<i64>>().chunks(100) {
        let frames: Vec<Frame> = chunk.iter().map(|i| frame("rs.n", *i, Quality::GOOD, t0 + i * 1_000_000)).collect();
        end = r.bus.publish(Arc::new(Batch::from(frames))).await.unwrap().end;
    }
    // As if the cursor had not been moved past what was committed (a crash
    // between the commit and the cursor's save): it starts over.
    let w = r.bus.wal().expect("WAL mode").clone();
    assert!(w.remove_cursor(CURSOR).unwrap());
    w.cursor(CURSOR, CursorStart::Oldest).unwrap();
    let metrics = Arc::new(HistoryMetrics::unregistered());
    let again = History::open(&r.cfg, &r.db.config(), &r.db.data_dir, metrics.clone()).await.unwrap();
    again.start(&r.bus).await.unwrap();
    let h = again.clone();
    gateway_bench::wait_until(60, "history to catch up", move || h.written_seq() >= end).await;
    assert_eq!(metrics.values_written.get(), 1000, "only what it had not written");
    let r = Rig { history: again, ..r };
    let got: Vec<i64> = r.points("rs.n", t0, t0 + H).await.iter().map(|p| p.value.as_i64().unwrap()).collect();
    assert_eq!(got, (0..2000).collect::<Vec<i64>>());
    r.history.close().await;
}

common::suite!(
    every_reading_is_stored_once_with_its_value_type_and_quality,
    raw_queries_page_past_the_limit_and_every_point_comes_once,
    every_aggregate_matches_what_the_test_computes_from_rollups_and_raw_values,
    a_late_reading_counts_before_and_after_its_bucket_is_summarised_again,
    readings_older_than_a_summary_level_made_before_them_still_count,
    a_nan_reading_is_stored_and_read_back_but_not_summarised,
    retention_deletes_what_is_older_and_only_that,
    the_value_at_a_point_in_time_is_the_newest_at_or_before_it,
    include_exclude_and_deadband_decide_what_is_stored,
    a_restart_neither_loses_nor_repeats_a_reading_even_if_the_cursor_fell_behind,
);
