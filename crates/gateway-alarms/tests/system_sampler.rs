//! The gateway's watch on itself over a real WAL-mode bus: the sampler reads
//! a durable subscriber's backlog, the built-in rules raise
//! `system.wal_backlog` (an event on the bus and an active alarm), and an
//! acknowledgement of the backlog clears it. Conditions are waited for with
//! deadlines; nothing here asserts how long anything took.

use std::sync::Arc;
use std::time::Duration;

use gateway_alarms::rule::compile_all;
use gateway_alarms::{AlarmMetrics, AlarmService, HealthProbe, SystemConfig, spawn_sampler};
use gateway_bus::{Bus, BusMetrics, BusSettings, Filter, SubscribeOptions, Subscriber};
use gateway_model::{AlarmState, Batch, DataFrame, Frame, FrameKind, Quality, Span, TagId, Value};

const DEADLINE: Duration = Duration::from_secs(20);
const BACKLOG_ID: &str = "system.wal_backlog:_gateway.wal.backlog_frames.north";

fn wal_bus(dir: &std::path::Path) -> Bus {
    let cfg = BusSettings {
        ring_pow: 12,
        wal_dir: dir.join("wal"),
        wal_flush_ms: 1,
        async_write_queue_size: 1 << 10,
        wal_segment_bytes: Some(64 << 10),
        high_performance_mode: false,
        batch: gateway_bus::BatchSettings { max_batch_size: 256, ..Default::default() },
        ..BusSettings::default()
    };
    Bus::open(cfg, Arc::new(BusMetrics::unregistered())).unwrap()
}

fn batch(n: usize) -> Batch {
    let t = TagId::new("line1.count").unwrap();
    Batch::from(
        (0..n)
            .map(|i| Frame::Data(DataFrame::new(t.clone(), Value::I64(i as i64), Quality::GOOD, 1)))
            .collect::<Vec<_>>(),
    )
}

/// The next alarm event for `id` with `code`, from `events`.
async fn event(events: &mut Subscriber, id: &str, code: &str) -> AlarmState {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let d = events.recv().await.unwrap();
            for (_, f) in d.frames() {
                if let Frame::Event(e) = f
                    && let Some(a) = &e.alarm
                    && &*a.id == id
                    && &*e.code == code
                {
                    return a.state;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {code} event for {id} within {DEADLINE:?}"))
}

/// A probe standing for the binary's devices: one device that is down.
struct OneDeviceDown;

impl HealthProbe for OneDeviceDown {
    fn sample(&self, out: &mut Vec<(String, f64)>) {
        out.push(("device.plc1.connected".into(), 0.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscriber_that_does_not_acknowledge_raises_wal_backlog_until_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let bus = wal_bus(dir.path());
    let system = SystemConfig {
        interval: Span::from_millis(100),
        wal_backlog_frames: 100,
        device_down_after: Span::from_millis(0),
        ..SystemConfig::default()
    };
    let s = bus.settings();
    let rules = compile_all(&system.rules(s.pause_hi, s.resume_lo), "system").unwrap();
    let service = AlarmService::spawn(&bus, rules, dir.path(), Arc::new(AlarmMetrics::default())).unwrap();
    let mut events = bus
        .subscribe(SubscribeOptions::lossy("events", 1 << 11).filter(Filter::all().kinds([FrameKind::Event])))
        .unwrap();
    let mut north = bus.subscribe(SubscribeOptions::durable("north")).unwrap();
    let sampler = spawn_sampler(service.clone(), bus.clone(), system, Some(Arc::new(OneDeviceDown)));

    // 300 frames the subscriber receives but never acknowledges.
    for _ in 0..3 {
        bus.publish(Arc::new(batch(100))).await.unwrap();
    }
    assert_eq!(event(&mut events, BACKLOG_ID, "raised").await, AlarmState::ActiveUnacked);
    let active = service.active();
    let a = active.alarms.iter().find(|a| &*a.id == BACKLOG_ID).expect("the backlog alarm is active");
    assert!(a.value.as_ref().and_then(Value::as_f64).unwrap() >= 100.0);
    // The probe's figures go through the same path.
    let device_down = async {
        while !service.active().alarms.iter().any(|a| &*a.id == "system.device_down:_gateway.device.plc1.connected") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(DEADLINE, device_down).await.expect("the probe's device is down");

    // It reads and acknowledges everything (the alarm events included):
    // the cursor reaches the head and the backlog clears.
    let cleared = async {
        loop {
            let head = bus.head_seq();
            bus.wait_durable(head).await.unwrap();
            while north.position() < head {
                let d = north.recv().await.unwrap();
                north.ack(d.end_seq()).unwrap();
            }
            if !service.active().alarms.iter().any(|a| &*a.id == BACKLOG_ID && a.state == AlarmState::ActiveUnacked) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(DEADLINE, cleared).await.expect("the backlog alarm clears once acknowledged");
    assert_eq!(event(&mut events, BACKLOG_ID, "cleared").await, AlarmState::ClearedUnacked);

    bus.close().await.unwrap();
    tokio::time::timeout(DEADLINE, sampler).await.expect("the sampler ends with the bus").unwrap();
}
