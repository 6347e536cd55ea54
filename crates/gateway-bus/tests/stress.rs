//! Concurrency stress of the ring: several publishers (async tasks and plain
//! threads) and subscribers of every kind at once, with invariants checked on
//! everything received: durable subscribers see every frame exactly once in
//! sequence order, lossy ones see increasing sequence numbers and account for
//! every frame as received or dropped, and each publisher's frames arrive in
//! the order it published them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gateway_bus::{Bus, BusSettings, Persistence, SubscribeOptions, Subscriber};
use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value};

const PUBLISHERS: u64 = 6;
const PER_PUBLISHER: u64 = 30_000;

fn batch(tag: &TagId, publisher: u64, start: u64, n: u64) -> Arc<Batch> {
    Arc::new(Batch::from(
        (start..start + n)
            .map(|i| Frame::Data(DataFrame::new(tag.clone(), Value::U64(publisher << 32 | i), Quality::GOOD, 0)))
            .collect::<Vec<_>>(),
    ))
}

/// Receives until `total` frames were accounted for; checks the invariants.
async fn consume(mut sub: Subscriber, total: u64, lossless: bool) -> (u64, u64) {
    let mut last_seq = None;
    let mut last_by_pub: HashMap<u64, u64> = HashMap::new();
    let mut received = 0u64;
    while sub.position() < total {
        let d = tokio::time::timeout(Duration::from_secs(30), sub.recv()).await.expect("progress").unwrap();
        for (seq, f) in d.frames() {
            if let Some(l) = last_seq {
                if lossless {
                    assert_eq!(seq, l + 1, "{}: durable subscriber skipped or repeated", sub.name());
                } else {
                    assert!(seq > l, "{}: sequence went backwards", sub.name());
                }
            }
            last_seq = Some(seq);
            let v = match f.as_data().unwrap().value {
                Value::U64(v) => v,
                ref other => panic!("unexpected value {other:?}"),
            };
            let (p, i) = (v >> 32, v & 0xffff_ffff);
            if let Some(prev) = last_by_pub.insert(p, i) {
                assert!(i > prev, "{}: publisher {p} out of order ({i} after {prev})", sub.name());
                if lossless {
                    assert_eq!(i, prev + 1, "{}: publisher {p} frame missing", sub.name());
                }
            }
            received += 1;
        }
        if lossless {
            sub.ack(d.end_seq()).unwrap();
        }
    }
    let drops = sub.drops();
    assert_eq!(received + drops, total, "{}: received {received} + dropped {drops} != {total}", sub.name());
    if lossless {
        assert_eq!(drops, 0);
    }
    (received, drops)
}

async fn run(bus: Bus) {
    let total = PUBLISHERS * PER_PUBLISHER;
    let mut consumers = Vec::new();
    for i in 0..2 {
        let s = bus.subscribe(SubscribeOptions::durable(format!("durable{i}"))).unwrap();
        consumers.push(tokio::spawn(consume(s, total, true)));
    }
    for (i, lag) in [(0, 64u64), (1, 5_000)] {
        let s = bus.subscribe(SubscribeOptions::lossy(format!("lossy{i}"), lag)).unwrap();
        consumers.push(tokio::spawn(consume(s, total, false)));
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let bus = bus.clone();
        let tag = TagId::new(&format!("dev{p}.x")).unwrap();
        let size = 1 + p * 13 % 97;
        let work = move |publish: &dyn Fn(Arc<Batch>)| {
            let mut i = 0;
            while i < PER_PUBLISHER {
                let n = size.min(PER_PUBLISHER - i);
                publish(batch(&tag, p, i, n));
                i += n;
            }
        };
        if p % 2 == 0 {
            let tag = TagId::new(&format!("dev{p}.x")).unwrap();
            publishers.push(tokio::spawn(async move {
                let mut i = 0;
                while i < PER_PUBLISHER {
                    let n = size.min(PER_PUBLISHER - i);
                    bus.publish(batch(&tag, p, i, n)).await.unwrap();
                    i += n;
                }
            }));
        } else {
            // Plain threads publish too, through the blocking entry point.
            publishers.push(tokio::task::spawn_blocking(move || {
                work(&|b| {
                    bus.publish_blocking(b).unwrap();
                })
            }));
        }
    }
    for p in publishers {
        p.await.unwrap();
    }
    assert_eq!(bus.stats().head_seq, total);
    let mut lossy_drops = 0;
    for c in consumers {
        lossy_drops += c.await.unwrap().1;
    }
    eprintln!(
        "lossy subscribers dropped {lossy_drops} frames; waits for backpressure: {}",
        bus.metrics().backpressure_waits_total.get()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_publishers_and_subscribers_in_memory_keep_every_invariant() {
    let cfg = BusSettings {
        ring_pow: 12,
        persistence: Persistence::Memory,
        async_write_queue_size: 1024,
        high_performance_mode: false,
        batch: gateway_bus::BatchSettings { max_batch_size: 1000, ..Default::default() },
        ..BusSettings::default()
    };
    run(Bus::open(cfg, Default::default()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_publishers_and_subscribers_through_the_wal_keep_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BusSettings {
        // A small ring forces durable subscribers back and forth between ring and WAL.
        ring_pow: 10,
        wal_dir: dir.path().to_owned(),
        wal_flush_ms: 1,
        async_write_queue_size: 256,
        wal_segment_bytes: Some(64 << 10),
        high_performance_mode: false,
        batch: gateway_bus::BatchSettings { max_batch_size: 200, ..Default::default() },
        ..BusSettings::default()
    };
    run(Bus::open(cfg, Default::default()).unwrap()).await;
}
