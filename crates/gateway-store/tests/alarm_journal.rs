//! The alarm journal through a real bus (WAL mode) into SQLite and a real
//! PostgreSQL: alarm transitions published as events come back through the
//! query with every field, newest first, filtered by priority, alarm and
//! tag and paged without a gap or a repeat; other events are not kept; the
//! journal survives a restart without losing or repeating an entry; its
//! retention deletes what is older than `alarm_retention` and only that.
//! Every case runs on both databases (`common::suite!`).

mod common;

use std::sync::Arc;

use common::TestDb;
use gateway_bus::{Bus, BusMetrics, BusSettings, CursorStart, Preset};
use gateway_model::{
    AlarmInfo, AlarmState, Batch, DataFrame, EventFrame, Frame, Quality, Severity, TagId, Value, now_ns,
};
use gateway_store::history::{AlarmEvent, AlarmPage, AlarmQuery, CURSOR, HistoryConfig, RawQuery, Span};
use gateway_store::{History, HistoryMetrics};
use tempfile::TempDir;

const S: i64 = 1_000_000_000;
const H: i64 = 3600 * S;
const D: i64 = 24 * H;

type Fut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

struct Rig {
    bus: Bus,
    history: History,
    metrics: Arc<HistoryMetrics>,
    db: TestDb,
    cfg: HistoryConfig,
    _wal: TempDir,
}

fn quick() -> HistoryConfig {
    HistoryConfig { commit_interval_ms: 20, ..HistoryConfig::default() }
}

async fn rig(db: TestDb, cfg: HistoryConfig) -> Rig {
    let wal = tempfile::tempdir().expect("tempdir");
    let settings = BusSettings { wal_dir: wal.path().join("wal"), ..Preset::LowLatency.settings() };
    let bus = Bus::open(settings, Arc::new(BusMetrics::unregistered())).expect("open the bus");
    let metrics = Arc::new(HistoryMetrics::unregistered());
    let history = open_history(&db, &cfg, metrics.clone()).await;
    history.start(&bus).await.expect("start history");
    Rig { bus, history, metrics, db, cfg, _wal: wal }
}

async fn open_history(db: &TestDb, cfg: &HistoryConfig, metrics: Arc<HistoryMetrics>) -> History {
    History::open(cfg, &db.config(), &db.data_dir, metrics).await.expect("open history")
}

/// What one transition is made of, for the test to build and compare.
#[derive(Clone)]
struct T {
    ts: i64,
    id: &'static str,
    tag: Option<&'static str>,
    code: &'static str,
    state: AlarmState,
    priority: Severity,
    value: Option<Value>,
    limit: Option<Value>,
    user: Option<&'static str>,
    comment: Option<&'static str>,
}

impl T {
    fn raised(ts: i64, id: &'static str, tag: Option<&'static str>, priority: Severity) -> T {
        T {
            ts,
            id,
            tag,
            code: "raised",
            state: AlarmState::ActiveUnacked,
            priority,
            value: Some(Value::F64(81.5)),
            limit: Some(Value::F64(80.0)),
            user: None,
            comment: None,
        }
    }

    fn rule(&self) -> &'static str {
        self.id.split_once(':').map_or(self.id, |(r, _)| r)
    }

    fn message(&self) -> String {
        format!("{} {} at {}", self.id, self.code, self.ts)
    }

    fn frame(&self) -> Frame {
        Frame::Event(Box::new(EventFrame {
            source: "alarm".into(),
            code: self.code.into(),
            severity: self.priority,
            message: self.message().into(),
            tag: self.tag.map(|t| TagId::new(t).unwrap()),
            ts_ns: self.ts as u64,
            alarm: Some(Box::new(AlarmInfo {
                id: self.id.into(),
                rule: self.rule().into(),
                state: self.state,
                value: self.value.clone(),
                limit: self.limit.clone(),
                user: self.user.map(Into::into),
                comment: self.comment.map(Into::into),
            })),
        }))
    }

    /// The entry the journal should give back (its `seq` aside).
    fn entry(&self) -> AlarmEvent {
        AlarmEvent {
            ts_ns: self.ts,
            id: self.id.into(),
            rule: self.rule().into(),
            tag: self.tag.map(Into::into),
            event: self.code.into(),
            state: self.state,
            priority: self.priority,
            value: self.value.clone(),
            limit: self.limit.clone(),
            user: self.user.map(Into::into),
            comment: self.comment.map(Into::into),
            message: self.message(),
            seq: 0,
        }
    }
}

/// `events` without their `seq`, which the journal assigns.
fn unseq(events: &[AlarmEvent]) -> Vec<AlarmEvent> {
    events.iter().cloned().map(|e| AlarmEvent { seq: 0, ..e }).collect()
}

/// Newest first, as the journal answers; ties in publication order reversed.
fn newest_first(ts: &[T]) -> Vec<AlarmEvent> {
    let mut v: Vec<(usize, &T)> = ts.iter().enumerate().collect();
    v.sort_by_key(|(i, t)| std::cmp::Reverse((t.ts, *i)));
    v.into_iter().map(|(_, t)| t.entry()).collect()
}

impl Rig {
    /// Publishes `frames` in batches of 100 and waits until history wrote them.
    fn publish(&self, frames: Vec<Frame>) -> Fut<'_, ()> {
        Box::pin(async move {
            let end = publish(&self.bus, frames).await;
            let h = self.history.clone();
            gateway_bench::wait_until(60, "history to write what was published", move || h.written_seq() >= end).await;
        })
    }

    fn page(&self, q: AlarmQuery) -> Fut<'_, AlarmPage> {
        Box::pin(async move { self.history.alarm_events(&q).await.expect("journal query") })
    }

    /// Every entry `q` finds, page after page of `q.limit`.
    fn all(&self, q: AlarmQuery) -> Fut<'_, (Vec<AlarmEvent>, usize)> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut q = q;
            let mut pages = 0;
            loop {
                let p = self.page(q.clone()).await;
                assert!(p.events.len() <= q.limit);
                out.extend(p.events);
                pages += 1;
                match p.next {
                    Some(c) => q.after = Some(c),
                    None => return (out, pages),
                }
            }
        })
    }

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
}

async fn publish(bus: &Bus, frames: Vec<Frame>) -> u64 {
    let mut end = 0;
    for b in frames.chunks(100) {
        end = bus.publish(Arc::new(Batch::from(b.to_vec()))).await.expect("publish").end;
    }
    end
}

fn reading(tag: &str, v: f64, ts: i64) -> Frame {
    Frame::Data(DataFrame::new(TagId::new(tag).unwrap(), Value::F64(v), Quality::GOOD, ts as u64))
}

async fn alarm_transitions_come_back_with_every_field_and_other_events_are_not_kept(db: TestDb) {
    let r = rig(db, quick()).await;
    let t0 = now_ns() as i64 - H;
    let raised = T::raised(t0, "hi:line1.temp", Some("line1.temp"), Severity::Error);
    let acked = T {
        ts: t0 + S,
        code: "acked",
        state: AlarmState::ActiveAcked,
        value: None,
        limit: None,
        user: Some("alice"),
        comment: Some("valve \"7\" stuck, crew sent"),
        ..raised.clone()
    };
    let system = T {
        ts: t0 + 2 * S,
        id: "wal_backlog:history",
        tag: None,
        code: "raised",
        state: AlarmState::ActiveUnacked,
        priority: Severity::Critical,
        value: Some(Value::I64(1_500_000)),
        limit: Some(Value::U64(1_000_000)),
        user: None,
        comment: None,
    };
    let text = T {
        ts: t0 + 3 * S,
        id: "eq:line1.mode",
        tag: Some("line1.mode"),
        code: "shelved",
        state: AlarmState::Shelved,
        priority: Severity::Info,
        value: Some(Value::from("MAINT")),
        limit: Some(Value::from("RUN")),
        user: Some("bob"),
        comment: Some("maintenance until 14:00"),
    };
    // Readings and a plain event in the same batches as the transitions.
    let plain = Frame::Event(Box::new(EventFrame {
        source: "driver:modbus".into(),
        code: "device_down".into(),
        severity: Severity::Error,
        message: "plc1 is down".into(),
        tag: None,
        ts_ns: (t0 + S) as u64,
        alarm: None,
    }));
    let frames = vec![
        reading("line1.temp", 81.5, t0),
        raised.frame(),
        plain,
        acked.frame(),
        system.frame(),
        reading("line1.temp", 79.0, t0 + 2 * S),
        text.frame(),
    ];
    r.publish(frames).await;
    let page = r.page(AlarmQuery::range(t0, t0 + H)).await;
    assert_eq!(page.next, None);
    // The system alarm's limit was a u64 that fits an i64: JSON keeps the
    // number, not its Rust type.
    let system_back = T { limit: Some(Value::I64(1_000_000)), ..system };
    assert_eq!(unseq(&page.events), newest_first(&[raised, acked, system_back, text]));
    let q = RawQuery { tags: vec!["line1.temp".into()], from_ns: t0, to_ns: t0 + H, limit: 10, after: None };
    let points = r.history.raw(&q).await.expect("raw").series[0].points.len();
    assert_eq!(points, 2, "the readings beside them are written as ever");
}

async fn filters_by_priority_alarm_and_tag_and_pages_without_a_gap_or_a_repeat(db: TestDb) {
    let r = rig(db, quick()).await;
    let t0 = now_ns() as i64 - D;
    let ids = ["hi:a.x", "lo:a.x", "hi:b.y", "sys:disk"];
    let prios = [Severity::Info, Severity::Warning, Severity::Error, Severity::Critical];
    let mut all = Vec::new();
    for i in 0..300i64 {
        let id = ids[(i % 4) as usize];
        let tag = match id {
            "sys:disk" => None,
            _ => Some(if id.ends_with("a.x") { "a.x" } else { "b.y" }),
        };
        // Pairs share an instant, so pages must break ties.
        all.push(T::raised(t0 + (i / 2) * S, id, tag, prios[(i % 3) as usize]));
    }
    r.publish(all.iter().map(T::frame).collect()).await;

    let (got, pages) = r.all(AlarmQuery { limit: 40, ..AlarmQuery::range(t0, t0 + D) }).await;
    assert_eq!(pages, 8, "300 entries, 40 a page");
    assert_eq!(unseq(&got), newest_first(&all));

    // Pages break exactly between two entries of the same instant.
    let (got, _) = r.all(AlarmQuery { limit: 3, ..AlarmQuery::range(t0, t0 + 10 * S) }).await;
    let within: Vec<T> = all.iter().filter(|t| t.ts < t0 + 10 * S).cloned().collect();
    assert_eq!(unseq(&got), newest_first(&within));

    let want = |keep: fn(&T) -> bool| newest_first(&all.iter().filter(|t| keep(t)).cloned().collect::<Vec<_>>());
    let base = AlarmQuery { limit: 25, ..AlarmQuery::range(t0, t0 + D) };
    let cases = [
        (AlarmQuery { min_priority: Some(Severity::Error), ..base.clone() }, want(|t| t.priority >= Severity::Error)),
        (AlarmQuery { alarm: Some("hi:b.y".into()), ..base.clone() }, want(|t| t.id == "hi:b.y")),
        (AlarmQuery { tag: Some("a.x".into()), ..base.clone() }, want(|t| t.tag == Some("a.x"))),
        (
            AlarmQuery {
                tag: Some("a.x".into()),
                min_priority: Some(Severity::Warning),
                alarm: Some("lo:a.x".into()),
                ..base.clone()
            },
            want(|t| t.id == "lo:a.x" && t.priority >= Severity::Warning),
        ),
    ];
    for (q, want) in cases {
        assert!(!want.is_empty());
        let (got, _) = r.all(q.clone()).await;
        assert_eq!(unseq(&got), want, "{q:?}");
    }
    // The range is [from, to): the entry at `to` is out, the one at `from` in.
    let (got, _) = r.all(AlarmQuery { limit: 100, ..AlarmQuery::range(t0 + 10 * S, t0 + 12 * S) }).await;
    assert_eq!(got.iter().map(|e| e.ts_ns).collect::<Vec<_>>(), [t0 + 11 * S, t0 + 11 * S, t0 + 10 * S, t0 + 10 * S]);
    // Nothing matches: an empty page, no next.
    let page = r.page(AlarmQuery { alarm: Some("nope:x".into()), ..base.clone() }).await;
    assert_eq!(page, AlarmPage { events: Vec::new(), next: None });

    for (q, says) in [
        (AlarmQuery { limit: 0, ..base.clone() }, "limit"),
        (AlarmQuery { limit: 10_001, ..base.clone() }, "limit"),
        (AlarmQuery::range(t0, t0), "before `to`"),
    ] {
        let e = r.history.alarm_events(&q).await.unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
}

async fn the_journal_survives_a_restart_and_nothing_is_lost_or_written_twice(db: TestDb) {
    let r = rig(db, quick()).await;
    let t0 = now_ns() as i64 - H;
    let before: Vec<T> = (0..50).map(|i| T::raised(t0 + i * S, "hi:r.x", Some("r.x"), Severity::Error)).collect();
    r.publish(before.iter().map(T::frame).collect()).await;
    r.history.close().await;
    // Published while history is down: the bus keeps them.
    let during: Vec<T> = (50..120).map(|i| T::raised(t0 + i * S, "hi:r.x", Some("r.x"), Severity::Error)).collect();
    let end = publish(&r.bus, during.iter().map(T::frame).collect()).await;
    // As if the cursor had not been saved after the last commit: the bus
    // hands everything over again, and the stored position must skip it.
    let w = r.bus.wal().expect("WAL mode").clone();
    assert!(w.remove_cursor(CURSOR).unwrap());
    w.cursor(CURSOR, CursorStart::Oldest).unwrap();
    let metrics = Arc::new(HistoryMetrics::unregistered());
    let again = open_history(&r.db, &r.cfg, metrics.clone()).await;
    again.start(&r.bus).await.unwrap();
    let h = again.clone();
    gateway_bench::wait_until(60, "history to catch up", move || h.written_seq() >= end).await;
    assert_eq!(metrics.alarm_events_written.get(), 70, "only what it had not written");
    let r = Rig { history: again, metrics, ..r };
    let (got, _) = r.all(AlarmQuery { limit: 1000, ..AlarmQuery::range(t0, t0 + H) }).await;
    let mut want = before;
    want.extend(during);
    assert_eq!(unseq(&got), newest_first(&want));
    r.history.close().await;
}

async fn retention_deletes_entries_older_than_alarm_retention_and_only_those(db: TestDb) {
    let cfg = HistoryConfig { alarm_retention: Span::from_secs(40 * 86_400), ..quick() };
    let r = rig(db, cfg).await;
    let now = now_ns() as i64;
    let old: Vec<T> =
        (0..30).map(|i| T::raised(now - 39 * D + i * S, "hi:o.x", Some("o.x"), Severity::Error)).collect();
    let new: Vec<T> = (0..30).map(|i| T::raised(now - D + i * S, "hi:o.x", Some("o.x"), Severity::Error)).collect();
    // Older than the raw values' 30 days, and kept all the same.
    r.publish(old.iter().chain(&new).map(T::frame).collect()).await;
    r.maintain(now).await;
    let everything = AlarmQuery { limit: 1000, ..AlarmQuery::range(0, i64::MAX) };
    assert_eq!(r.all(everything.clone()).await.0.len(), 60, "the raw retention does not touch the journal");

    // Two days later the old ones are past the 40 days.
    r.maintain(now + 2 * D).await;
    let (left, _) = r.all(everything.clone()).await;
    assert_eq!(unseq(&left), newest_first(&new));

    // An entry that arrives already past the retention goes at the next step.
    let late = T::raised(now - 100 * D, "hi:o.x", Some("o.x"), Severity::Error);
    let written = r.metrics.alarm_events_written.get();
    r.publish(vec![late.frame()]).await;
    // (Not read back here: the maintenance task, on the wall clock, may
    // already have deleted it.)
    assert_eq!(r.metrics.alarm_events_written.get(), written + 1, "it is written, not dropped on arrival");
    r.maintain(now).await;
    assert_eq!(unseq(&r.all(everything.clone()).await.0), newest_first(&new));

    // To the nanosecond: the entry at the cutoff stays, the one before goes.
    let cut = new[10].ts;
    r.maintain(cut + 40 * D).await;
    let (left, _) = r.all(everything).await;
    assert_eq!(left.last().map(|e| e.ts_ns), Some(cut));
    assert_eq!(left.len(), 20);
}

common::suite!(
    alarm_transitions_come_back_with_every_field_and_other_events_are_not_kept,
    filters_by_priority_alarm_and_tag_and_pages_without_a_gap_or_a_repeat,
    the_journal_survives_a_restart_and_nothing_is_lost_or_written_twice,
    retention_deletes_entries_older_than_alarm_retention_and_only_those,
);
