//! Behaviour of the bus: delivery, backpressure hysteresis, lossy lag
//! accounting, durable catch-up from the WAL, resume after restart, the WAL
//! write-queue backpressure, commands, filters, batching and metrics.

use std::sync::Arc;
use std::time::Duration;

use gateway_bus::{
    Batcher, Bus, BusError, BusMetrics, BusSettings, Filter, Persistence, SubscribeOptions, TryPublishError,
};
use gateway_model::{Batch, CmdStatus, DataFrame, Frame, FrameKind, Quality, TagId, TagPattern, Value};
use gateway_wal::sim::SimStorage;

fn tag(s: &str) -> TagId {
    TagId::new(s).unwrap()
}

fn batch(tag_name: &str, start: i64, n: usize) -> Arc<Batch> {
    let t = tag(tag_name);
    Arc::new(Batch::from(
        (0..n)
            .map(|i| Frame::Data(DataFrame::new(t.clone(), Value::I64(start + i as i64), Quality::GOOD, i as u64)))
            .collect::<Vec<_>>(),
    ))
}

fn small_batches(ring_pow: u8) -> gateway_bus::BatchSettings {
    gateway_bus::BatchSettings { max_batch_size: 2000.min(1 << (ring_pow - 2)), ..Default::default() }
}

fn memory(ring_pow: u8) -> BusSettings {
    BusSettings {
        batch: small_batches(ring_pow),
        ring_pow,
        persistence: Persistence::Memory,
        async_write_queue_size: 1 << (ring_pow - 2),
        high_performance_mode: false,
        ..BusSettings::default()
    }
}

fn wal(dir: &std::path::Path, ring_pow: u8) -> BusSettings {
    BusSettings {
        batch: small_batches(ring_pow),
        ring_pow,
        wal_dir: dir.to_owned(),
        wal_flush_ms: 1,
        async_write_queue_size: 1 << (ring_pow - 2),
        wal_segment_bytes: Some(64 << 10),
        high_performance_mode: false,
        ..BusSettings::default()
    }
}

fn values(d: &gateway_bus::Delivery) -> Vec<(u64, i64)> {
    d.frames().map(|(s, f)| (s, f.as_data().unwrap().value.as_i64().unwrap())).collect()
}

async fn drain(sub: &mut gateway_bus::Subscriber, until_seq: u64) -> Vec<(u64, i64)> {
    let mut out = Vec::new();
    while sub.position() < until_seq {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.expect("delivery in time").unwrap();
        out.extend(values(&d));
    }
    out
}

#[tokio::test]
async fn every_subscriber_gets_every_batch_in_order_with_its_sequence_numbers() {
    let bus = Bus::open(memory(12), Default::default()).unwrap();
    let mut a = bus.subscribe(SubscribeOptions::lossy("a", 1 << 20)).unwrap();
    let mut b = bus.subscribe(SubscribeOptions::durable("b")).unwrap();
    let mut expected = Vec::new();
    for i in 0..20 {
        let r = bus.publish(batch("d.t", i * 10, 10)).await.unwrap();
        assert_eq!(r.len(), 10);
        expected.extend((0..10).map(|j| (r.start + j as u64, i * 10 + j)));
    }
    assert_eq!(drain(&mut a, 200).await, expected);
    assert_eq!(drain(&mut b, 200).await, expected);
    assert_eq!(a.drops() + b.drops(), 0);
}

#[tokio::test]
async fn publishers_pause_above_pause_hi_and_resume_only_below_resume_lo() {
    // 1024 frames; pause above 0.85 (870), resume at or below 0.70 (716).
    let bus = Bus::open(memory(10), Default::default()).unwrap();
    let mut slow = bus.subscribe(SubscribeOptions::durable("slow")).unwrap();
    let mut published = 0u64;
    loop {
        match bus.try_publish(batch("d.t", 0, 10)) {
            Ok(_) => published += 10,
            Err(TryPublishError::Full(_)) => break,
            Err(e) => panic!("{e}"),
        }
    }
    // The batch that crossed 870 was accepted, the next one refused.
    assert_eq!(published, 880);
    assert!(bus.stats().paused);
    // Reading down to 750 held frames (above resume_lo) does not resume publishing.
    let mut got = drain(&mut slow, 130).await.len() as u64;
    assert!(matches!(bus.try_publish(batch("d.t", 0, 10)), Err(TryPublishError::Full(_))), "still paused at 750");
    // A blocked async publisher wakes once the subscriber drains below 716.
    let waiter = tokio::spawn({
        let bus = bus.clone();
        async move { bus.publish(batch("d.t", 0, 10)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "publisher must wait while paused");
    got += drain(&mut slow, 200).await.len() as u64;
    let r = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("resumed").unwrap();
    assert_eq!(r.start, 880);
    assert!(!bus.stats().paused);
    assert_eq!(got, 200);
    assert!(bus.metrics().backpressure_waits_total.get() >= 1);
}

#[tokio::test]
async fn a_slow_lossy_subscriber_skips_counts_its_drops_and_never_blocks_publishers() {
    let bus = Bus::open(memory(10), Default::default()).unwrap();
    let mut slow = bus.subscribe(SubscribeOptions::lossy("slow", 100)).unwrap();
    let mut fast = bus.subscribe(SubscribeOptions::lossy("fast", 1 << 20)).unwrap();
    let mut fast_got = 0;
    for i in 0..500 {
        // Never blocks: lossy subscribers do not hold the ring.
        bus.try_publish(batch("d.t", i * 10, 10)).unwrap();
        while let Some(d) = fast.try_recv().unwrap() {
            fast_got += d.frames().count();
        }
    }
    let received = drain(&mut slow, 5000).await;
    assert_eq!(received.len() as u64 + slow.drops(), 5000, "every frame is received or counted");
    assert!(received.len() <= 100, "lag bounded by max_lag");
    assert_eq!(received.last().unwrap().1, 4999, "it skipped to the newest frames");
    assert!(received.windows(2).all(|w| w[1].0 > w[0].0));
    assert_eq!(fast_got, 5000);
    assert_eq!(fast.drops(), 0);
    assert!(bus.stats().ring_frames <= 1024);
}

#[tokio::test]
async fn a_durable_subscriber_catches_up_from_the_wal_after_the_ring_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(wal(dir.path(), 10), Default::default()).unwrap();
    let mut sub = bus.subscribe(SubscribeOptions::durable("uplink")).unwrap();
    let mut expected = Vec::new();
    for i in 0..2000 {
        let r = bus.publish(batch("line1.speed", i * 7, 7)).await.unwrap();
        expected.extend((0..7).map(|j| (r.start + j as u64, i * 7 + j)));
    }
    let s = bus.stats();
    assert!(s.ring_frames <= 1024, "the ring does not hold the backlog: {s:?}");
    let got = drain(&mut sub, 14_000).await;
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "out of order or wrong values");
    assert_eq!(sub.drops(), 0);
}

#[tokio::test]
async fn a_durable_subscriber_is_held_by_what_is_durable_not_by_the_head() {
    // The bound (1,000 frames) counts behind the durable point: frames
    // still waiting for their group commit do not push a subscriber off the
    // ring, whose only way back would be to read and decode them from disk.
    let dir = tempfile::tempdir().unwrap();
    let cfg = BusSettings { wal_flush_ms: 60_000, async_write_queue_size: 1000, ..wal(dir.path(), 12) };
    let bus = Bus::open(cfg, Default::default()).unwrap();
    let mut sub = bus.subscribe(SubscribeOptions::durable("uplink")).unwrap();
    let mut expected = Vec::new();
    let mut publish = async |from: i64| {
        // 800 frames: below the write queue's threshold, so no early commit.
        for i in from..from + 8 {
            let r = bus.publish(batch("line1.speed", i * 100, 100)).await.unwrap();
            expected.extend((0..100).map(|j| (r.start + j as u64, i * 100 + j)));
        }
    };
    publish(0).await;
    bus.wal().unwrap().flush().await.unwrap();
    publish(8).await;
    // 1,600 frames ahead of the subscriber, 800 of them durable.
    let s = bus.stats();
    assert_eq!(s.ring_frames, 1600, "the ring let go of frames the subscriber has not read: {s:?}");
    let mut got = drain(&mut sub, 800).await;
    bus.wal().unwrap().flush().await.unwrap();
    got.extend(drain(&mut sub, 1600).await);
    assert!(!sub.reads_wal(), "read from the WAL what the ring could have held");
    assert!(got == expected, "out of order or wrong values");
    assert_eq!(sub.drops(), 0);
}

#[tokio::test]
async fn a_subscriber_back_on_the_ring_lets_its_wal_reader_go_and_can_catch_up_again() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(wal(dir.path(), 10), Default::default()).unwrap();
    let mut sub = bus.subscribe(SubscribeOptions::durable("uplink")).unwrap();
    let mut expected = Vec::new();
    let publish = async |from: i64, batches: i64, expected: &mut Vec<(u64, i64)>| {
        for i in from..from + batches {
            let r = bus.publish(batch("line1.speed", i * 7, 7)).await.unwrap();
            expected.extend((0..7).map(|j| (r.start + j as u64, i * 7 + j)));
        }
        bus.stats().head_seq
    };
    // Behind the wrapped ring: it catches up from the WAL.
    let head = publish(0, 2000, &mut expected).await;
    let mut got = drain(&mut sub, head).await;
    assert!(sub.reads_wal());
    // Back on the ring, it keeps the reader for a while ...
    let head = publish(2000, 1, &mut expected).await;
    got.extend(drain(&mut sub, head).await);
    assert!(sub.reads_wal(), "let go at once: a subscriber at the ring's edge would reopen it at every batch");
    // ... and lets it go once it has not needed it for READER_IDLE: live
    // batches keep coming (each a turn of the subscriber) until it has, or
    // well past that.
    let deadline = std::time::Instant::now() + 4 * gateway_bus::READER_IDLE;
    let mut next = 2001;
    while sub.reads_wal() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let head = publish(next, 1, &mut expected).await;
        got.extend(drain(&mut sub, head).await);
        next += 1;
    }
    assert!(!sub.reads_wal(), "the reader and its decoder were kept");
    // Behind again: a new reader, nothing lost, nothing twice.
    let head = publish(next, 2000, &mut expected).await;
    got.extend(drain(&mut sub, head).await);
    assert!(sub.reads_wal());
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "out of order or wrong values");
    assert_eq!(sub.drops(), 0);
}

#[tokio::test]
async fn a_durable_subscriber_resumes_after_restart_from_its_last_ack() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = Bus::open(wal(dir.path(), 12), Default::default()).unwrap();
        let mut sub = bus.subscribe(SubscribeOptions::durable("uplink")).unwrap();
        for i in 0..10 {
            bus.publish(batch("a.b", i * 10, 10)).await.unwrap();
        }
        let first = drain(&mut sub, 40).await;
        assert_eq!(first.len(), 40);
        sub.ack(40).unwrap();
        // Received but not acknowledged: must come again after the restart.
        drain(&mut sub, 60).await;
        bus.close().await.unwrap();
    }
    let bus = Bus::open(wal(dir.path(), 12), Default::default()).unwrap();
    let mut sub = bus.subscribe(SubscribeOptions::durable("uplink")).unwrap();
    assert_eq!(sub.position(), 40);
    let got = drain(&mut sub, 100).await;
    assert_eq!(got.first(), Some(&(40, 40)));
    assert_eq!(got.len(), 60);
    let r = bus.publish(batch("a.b", 100, 1)).await.unwrap();
    assert_eq!(r.start, 100, "sequence numbers continue across restarts");
}

#[tokio::test]
async fn rewind_delivers_everything_after_the_last_ack_again() {
    let bus = Bus::open(memory(12), Default::default()).unwrap();
    let mut sub = bus.subscribe(SubscribeOptions::durable("c")).unwrap();
    for i in 0..5 {
        bus.publish(batch("a.b", i * 10, 10)).await.unwrap();
    }
    drain(&mut sub, 50).await;
    sub.ack(20).unwrap();
    sub.rewind();
    let again = drain(&mut sub, 50).await;
    assert_eq!(again.first(), Some(&(20, 20)));
    assert_eq!(again.len(), 30);
}

#[tokio::test]
async fn publishers_wait_while_the_wal_cannot_write_and_nothing_is_lost() {
    let sim = SimStorage::new();
    let cfg = BusSettings {
        ring_pow: 12,
        wal_dir: "/wal".into(),
        wal_flush_ms: 1,
        async_write_queue_size: 500,
        backpressure_threshold: 0.9,
        resume_lo: 0.5,
        pause_hi: 0.8,
        high_performance_mode: false,
        ..BusSettings::default()
    };
    let bus = Bus::open_with_storage(cfg, Default::default(), Arc::new(sim.clone())).unwrap();
    let mut sub = bus.subscribe(SubscribeOptions::durable("uplink")).unwrap();
    sim.fail_after(Some(0)); // the disk stops accepting writes
    let publisher = tokio::spawn({
        let bus = bus.clone();
        async move {
            for i in 0..100 {
                bus.publish(batch("a.b", i * 10, 10)).await.unwrap();
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!publisher.is_finished(), "publishing must stall while the WAL cannot write");
    let head = bus.stats().head_seq;
    assert!((450..=470).contains(&head), "paused at the threshold of 450 unwritten frames, head {head}");
    sim.fail_after(None);
    tokio::time::timeout(Duration::from_secs(10), publisher).await.expect("resumed").unwrap();
    assert_eq!(drain(&mut sub, 1000).await.len(), 1000);
    assert!(bus.stats().wal.unwrap().io_errors > 0);
}

#[tokio::test]
async fn commands_reach_the_owning_driver_and_the_answer_comes_back() {
    let bus = Bus::open(memory(12), Default::default()).unwrap();
    let mut audit = bus
        .subscribe(
            SubscribeOptions::lossy("audit", 1 << 20).filter(Filter::all().kinds([FrameKind::Cmd, FrameKind::CmdAck])),
        )
        .unwrap();
    let mut inbox = bus.route_commands("plc1");
    let driver = tokio::spawn(async move {
        let req = inbox.recv().await.unwrap();
        assert_eq!(req.cmd.tag.as_str(), "plc1.setpoint");
        assert_eq!(req.cmd.value, Value::F64(42.0));
        req.reply(CmdStatus::Ok, "");
        // The second one is never answered in time.
        let _held = inbox.recv().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let ack = bus.command(tag("plc1.setpoint"), Value::F64(42.0), "test", Duration::from_secs(5)).await;
    assert_eq!(ack.status, CmdStatus::Ok);
    let ack2 = bus.command(tag("plc1.setpoint"), Value::F64(1.0), "test", Duration::from_millis(50)).await;
    assert_eq!(ack2.status, CmdStatus::Timeout);
    assert_ne!(ack.id, ack2.id);
    let none = bus.command(tag("plc9.x"), Value::Bool(true), "test", Duration::from_secs(1)).await;
    assert_eq!(none.status, CmdStatus::NoRoute);
    let mut kinds = Vec::new();
    while let Some(d) = audit.try_recv().unwrap() {
        kinds.extend(d.frames().map(|(_, f)| f.kind()));
    }
    assert_eq!(kinds.len(), 6, "three commands and three acknowledgements audited: {kinds:?}");
    driver.abort();
}

#[tokio::test]
async fn filters_pass_only_matching_tags_and_kinds() {
    let bus = Bus::open(memory(12), Default::default()).unwrap();
    let f = Filter::all().patterns([TagPattern::new("line1.*").unwrap()]).kinds([FrameKind::Data]);
    let mut sub = bus.subscribe(SubscribeOptions::lossy("f", 1 << 20).filter(f)).unwrap();
    let t1 = tag("line1.a");
    let t2 = tag("line2.a");
    let b = Batch::from(vec![
        Frame::Data(DataFrame::new(t1.clone(), Value::I64(1), Quality::GOOD, 0)),
        Frame::Data(DataFrame::new(t2, Value::I64(2), Quality::GOOD, 0)),
        Frame::Data(DataFrame::new(t1, Value::I64(3), Quality::GOOD, 0)),
    ]);
    bus.publish(Arc::new(b)).await.unwrap();
    let d = sub.recv().await.unwrap();
    assert_eq!(values(&d), vec![(0, 1), (2, 3)]);
    assert_eq!(d.end_seq(), 3, "acknowledgements cover filtered frames too");
}

#[tokio::test]
async fn a_batcher_publishes_when_full_or_when_its_interval_passed() {
    let mut cfg = memory(12);
    cfg.batch.max_batch_size = 5;
    cfg.batch.flush_interval = Duration::from_millis(20);
    let bus = Bus::open(cfg, Default::default()).unwrap();
    let mut sub = bus.subscribe(SubscribeOptions::lossy("s", 1 << 20)).unwrap();
    let mut b = Batcher::new(&bus);
    let t = tag("a.b");
    for i in 0..7 {
        b.push(DataFrame::new(t.clone(), Value::I64(i), Quality::GOOD, 0)).await.unwrap();
    }
    assert_eq!(sub.recv().await.unwrap().frames().count(), 5);
    assert_eq!(b.len(), 2);
    assert!(bus.metrics().batch_memory_usage.get() > 0);
    tokio::time::sleep(Duration::from_millis(25)).await;
    assert!(b.due());
    b.push(DataFrame::new(t, Value::I64(7), Quality::GOOD, 0)).await.unwrap();
    assert_eq!(sub.recv().await.unwrap().frames().count(), 3);
    assert_eq!(bus.metrics().batch_memory_usage.get(), 0);
}

#[tokio::test]
async fn close_lets_subscribers_drain_then_reports_closed() {
    let bus = Bus::open(memory(12), Default::default()).unwrap();
    let mut sub = bus.subscribe(SubscribeOptions::durable("s")).unwrap();
    bus.publish(batch("a.b", 0, 3)).await.unwrap();
    bus.close().await.unwrap();
    assert!(matches!(bus.publish(batch("a.b", 0, 1)).await, Err(BusError::Closed)));
    assert_eq!(sub.recv().await.unwrap().frames().count(), 3);
    assert!(matches!(sub.recv().await, Err(BusError::Closed)));
}

#[tokio::test]
async fn durable_subscriber_names_are_unique_and_valid() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::open(wal(dir.path(), 12), Default::default()).unwrap();
    let _a = bus.subscribe(SubscribeOptions::durable("a")).unwrap();
    assert!(matches!(bus.subscribe(SubscribeOptions::durable("a")), Err(BusError::DuplicateSubscriber(_))));
    assert!(matches!(bus.subscribe(SubscribeOptions::durable("no spaces")), Err(BusError::SubscriberName(_))));
}

#[test]
fn metrics_use_the_original_names_and_buckets() {
    let mut reg = prometheus_client::registry::Registry::default();
    let m = Arc::new(BusMetrics::new(&mut reg));
    let bus = Bus::open(memory(12), m).unwrap();
    let _s = bus.subscribe(SubscribeOptions::lossy("ws", 10)).unwrap();
    bus.publish_blocking(batch("a.b", 0, 30)).unwrap();
    bus.refresh_gauges();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    for name in [
        "gateway_bus_ring_used ",
        "gateway_bus_publish_total 30",
        "gateway_bus_backlog_lag{subscriber=\"ws\"} 30",
        "gateway_bus_wal_bytes ",
        "gateway_bus_wal_flush_duration_seconds_bucket{le=\"0.0001\"}",
        "gateway_bus_batch_size_bucket{le=\"500.0\"} 1",
        "gateway_bus_batch_flush_duration_seconds_bucket{le=\"0.025\"}",
        "gateway_bus_batch_send_duration_seconds_bucket{le=\"0.002\"}",
        "gateway_bus_batch_memory_usage_bytes ",
        "gateway_bus_drop_total",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[tokio::test]
async fn a_durable_subscriber_sees_only_durable_frames_while_lossy_ones_see_everything() {
    let sim = SimStorage::new();
    let cfg = BusSettings {
        ring_pow: 12,
        wal_dir: "/wal".into(),
        wal_flush_ms: 1,
        async_write_queue_size: 1000,
        high_performance_mode: false,
        batch: small_batches(12),
        ..BusSettings::default()
    };
    let bus = Bus::open_with_storage(cfg, Default::default(), Arc::new(sim.clone())).unwrap();
    let mut durable = bus.subscribe(SubscribeOptions::durable("uplink")).unwrap();
    let mut live = bus.subscribe(SubscribeOptions::lossy("ui", 1 << 20)).unwrap();
    sim.fail_after(Some(0)); // nothing can become durable
    bus.publish(batch("a.b", 0, 5)).await.unwrap();
    assert_eq!(live.recv().await.unwrap().frames().count(), 5, "live consumers do not wait for the disk");
    let early = tokio::time::timeout(Duration::from_millis(200), durable.recv()).await;
    assert!(early.is_err(), "a durable subscriber got a frame that was not durable");
    sim.fail_after(None);
    let d =
        tokio::time::timeout(Duration::from_secs(10), durable.recv()).await.expect("delivered once durable").unwrap();
    assert_eq!(values(&d).len(), 5);
    assert!(bus.wal().unwrap().stats().durable_seq >= d.end_seq());
}

#[tokio::test]
async fn a_lossy_subscriber_can_ask_for_durable_frames_only() {
    let sim = SimStorage::new();
    let cfg = BusSettings {
        ring_pow: 12,
        wal_dir: "/wal".into(),
        wal_flush_ms: 1,
        async_write_queue_size: 1000,
        high_performance_mode: false,
        batch: small_batches(12),
        ..BusSettings::default()
    };
    let bus = Bus::open_with_storage(cfg, Default::default(), Arc::new(sim.clone())).unwrap();
    let mut careful = bus.subscribe(SubscribeOptions::lossy("live-uplink", 1 << 20).only_durable()).unwrap();
    sim.fail_after(Some(0));
    bus.publish(batch("a.b", 0, 3)).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(200), careful.recv()).await.is_err());
    sim.fail_after(None);
    let d =
        tokio::time::timeout(Duration::from_secs(10), careful.recv()).await.expect("delivered once durable").unwrap();
    assert_eq!(values(&d).len(), 3);
}

#[tokio::test]
async fn the_slot_array_is_sized_for_batches_and_still_holds_a_backlog_of_single_frames() {
    // 2^16 frames of capacity: the pre-faulted array has one 16-byte slot per
    // 16 frames, not one per frame.
    let cfg = BusSettings { high_performance_mode: true, ..memory(16) };
    let bus = Bus::open(cfg, Default::default()).unwrap();
    assert_eq!(bus.stats().ring_slot_bytes, (1 << 16) / 16 * 16);
    // A holder that reads nothing while 10,000 one-frame batches arrive: far
    // more slots than were pre-faulted, all kept, all delivered in order.
    let mut sub = bus.subscribe(SubscribeOptions::durable("slow")).unwrap();
    let mut expected = Vec::new();
    for i in 0..10_000 {
        let r = bus.publish(batch("d.t", i, 1)).await.unwrap();
        expected.push((r.start, i));
    }
    assert!(bus.stats().ring_slot_bytes >= 10_000 * 16);
    assert_eq!(drain(&mut sub, 10_000).await, expected);
    assert_eq!(sub.drops(), 0);
}

#[tokio::test]
async fn a_subscriber_ahead_of_durability_gets_frames_at_once_but_its_cursor_waits_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    // Group commit every 10 s: nothing becomes durable on its own during the test.
    let cfg = BusSettings { wal_flush_ms: 10_000, ..wal(dir.path(), 12) };
    let bus = Bus::open(cfg, Default::default()).unwrap();
    let mut early = bus.subscribe(SubscribeOptions::durable("early").ahead_of_durability()).unwrap();
    let mut durable = bus.subscribe(SubscribeOptions::durable("late")).unwrap();
    let r = bus.publish(batch("a.b", 0, 10)).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), early.recv()).await.expect("given before durable").unwrap();
    assert_eq!(d.end_seq(), r.end);
    let wal = bus.wal().unwrap().clone();
    assert!(wal.progress().borrow().durable < r.end, "not durable yet");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), durable.recv()).await.is_err(),
        "a durable-only subscriber still waits for the disk"
    );

    // Acknowledged but not durable: the cursor must not move past the disk.
    early.ack(d.end_seq()).unwrap();
    assert_eq!(early.acked(), r.end);
    let cursor = |name: &str| wal.cursors().into_iter().find(|(n, _)| n == name).map(|(_, p)| p).unwrap();
    assert!(cursor("early") < r.end, "the cursor waits for durability");

    // Once durable, the held-back acknowledgement moves on with the next call.
    wal.flush().await.unwrap();
    let r2 = bus.publish(batch("a.b", 10, 5)).await.unwrap();
    let d2 = early.recv().await.unwrap();
    assert_eq!(d2.first_seq(), r2.start);
    assert_eq!(cursor("early"), r.end);
    let d = tokio::time::timeout(Duration::from_secs(5), durable.recv()).await.expect("durable now").unwrap();
    assert_eq!(d.first_seq(), r.start);
}
