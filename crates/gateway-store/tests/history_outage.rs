//! A real PostgreSQL stopped and started again while readings keep coming:
//! history waits (the bus WAL keeps the data), reports the failure,
//! reconnects, catches up, and ends with every reading exactly once, while
//! another durable subscriber of the same bus goes on receiving live data
//! throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gateway_bench::postgres::PgServer;
use gateway_bench::wait_until;
use gateway_bus::{Bus, BusMetrics, BusSettings, Preset, SubscribeOptions};
use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value, now_ns};
use gateway_store::history::{HistoryConfig, RawQuery};
use gateway_store::{DatabaseConfig, History, HistoryMetrics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_delays_history_only_and_it_catches_up_with_every_reading_once() {
    let mut pg = PgServer::start();
    let url = pg.create_db().await;
    let wal = tempfile::tempdir().unwrap();
    let settings = BusSettings { wal_dir: wal.path().join("wal"), ..Preset::LowLatency.settings() };
    let bus = Bus::open(settings, Arc::new(BusMetrics::unregistered())).unwrap();
    let db = DatabaseConfig { url: Some(url), acquire_timeout_s: 2, ..DatabaseConfig::default() };
    let cfg = HistoryConfig { database: Some(db.clone()), commit_interval_ms: 20, ..HistoryConfig::default() };
    let metrics = Arc::new(HistoryMetrics::unregistered());
    let history = History::open(&cfg, &db, wal.path(), metrics.clone()).await.unwrap();
    history.start(&bus).await.unwrap();

    // Another durable subscriber: a connector that must not notice.
    let live = Arc::new(AtomicU64::new(0));
    let mut sub = bus.subscribe(SubscribeOptions::durable("uplink")).unwrap();
    let counted = live.clone();
    tokio::spawn(async move {
        while let Ok(d) = sub.recv().await {
            counted.fetch_add(d.end_seq() - d.first_seq(), Ordering::Relaxed);
            let _ = sub.ack(d.end_seq());
        }
    });

    // A counter, 20 readings every 10 ms, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let end_seq = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (bus, stop, published, end_seq) = (bus.clone(), stop.clone(), published.clone(), end_seq.clone());
        let tag = TagId::new("outage.n").unwrap();
        let t0 = now_ns() as i64 - 3_600_000_000_000;
        tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let frames: Vec<Frame> = (n..n + 20)
                    .map(|i| {
                        Frame::Data(DataFrame::new(tag.clone(), Value::I64(i), Quality::GOOD, (t0 + i * 1000) as u64))
                    })
                    .collect();
                n += 20;
                let end = bus.publish(Arc::new(Batch::from(frames))).await.unwrap().end;
                published.store(n as u64, Ordering::Relaxed);
                end_seq.store(end, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };
    let h = history.clone();
    wait_until(30, "history to write some readings", move || h.written_seq() > 500).await;

    tokio::task::block_in_place(|| pg.stop());
    let h = history.clone();
    wait_until(60, "history to report its failing writes", move || h.health().is_err()).await;
    let written_while_down = history.written_seq();
    let live_then = live.load(Ordering::Relaxed);
    let l = live.clone();
    wait_until(30, "live delivery to go on during the outage", move || l.load(Ordering::Relaxed) > live_then + 2000)
        .await;
    assert!(history.written_seq() <= written_while_down + 20, "nothing is written while the database is down");
    assert!(metrics.write_errors.get() > 0);

    tokio::task::block_in_place(|| pg.resume());
    let p = published.clone();
    let before = p.load(Ordering::Relaxed);
    wait_until(30, "more readings after the restart", move || p.load(Ordering::Relaxed) > before + 1000).await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    let end = end_seq.load(Ordering::Relaxed);
    let h = history.clone();
    wait_until(90, "history to catch up", move || h.written_seq() >= end).await;
    history.health().expect("healthy again");

    let n = published.load(Ordering::Relaxed) as i64;
    let mut got: Vec<i64> = Vec::with_capacity(n as usize);
    let mut after = None;
    loop {
        let q = RawQuery { tags: vec!["outage.n".into()], from_ns: 0, to_ns: i64::MAX, limit: 100_000, after };
        let page = history.raw(&q).await.unwrap();
        got.extend(page.series.iter().flat_map(|s| s.points.iter().map(|p| p.value.as_i64().unwrap())));
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(got.len() as i64, n, "every reading, none twice");
    assert!(got.iter().zip(0..).all(|(v, i)| *v == i), "in order, with no gap");
    history.close().await;
}
