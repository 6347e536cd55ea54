//! Model-based test: random sequences of append / flush / read / commit /
//! crash / clean reopen / injected I/O failures run against the log on the
//! simulated disk and against a `Vec` model. After every crash, the log must
//! hold every record that was durable, in order, followed by at most a prefix
//! of the records that were not; cursors come back between their last
//! persisted and their last committed position.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway_wal::sim::SimStorage;
use gateway_wal::{CursorStart, Durability, ReadItem, Wal, WalOptions};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append { len: usize, count: u32 },
    Flush,
    Read { from_pct: u8 },
    Commit { cursor: u8, pct: u8 },
    Crash { torn: bool, seed: u64 },
    Reopen,
    Fail { after: u8 },
    Heal,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0usize..300, 1u32..5).prop_map(|(len, count)| Op::Append { len, count }),
        3 => Just(Op::Flush),
        3 => any::<u8>().prop_map(|from_pct| Op::Read { from_pct }),
        3 => (0u8..2, any::<u8>()).prop_map(|(cursor, pct)| Op::Commit { cursor, pct }),
        2 => (any::<bool>(), any::<u64>()).prop_map(|(torn, seed)| Op::Crash { torn, seed }),
        1 => Just(Op::Reopen),
        1 => (0u8..30).prop_map(|after| Op::Fail { after }),
        1 => Just(Op::Heal),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct Rec {
    first: u64,
    count: u32,
    payload: Vec<u8>,
}

#[derive(Default, Debug)]
struct CursorModel {
    /// Position known to be on disk (as of the last successful flush or
    /// reopen): after a crash the cursor may not be found below it.
    floor: u64,
    /// The last position committed; after a crash the cursor may not be past it.
    committed: u64,
}

const DIR: &str = "/wal";
const CURSORS: [&str; 2] = ["a", "b"];

fn options(sim: &SimStorage) -> WalOptions {
    WalOptions {
        durability: Durability::Interval(Duration::from_millis(1)),
        segment_bytes: 4096,
        storage: Arc::new(sim.clone()),
        ..Default::default()
    }
}

fn read_all(wal: &Wal, from: u64) -> Vec<Rec> {
    try_read_all(wal, from).unwrap()
}

fn try_read_all(wal: &Wal, from: u64) -> gateway_wal::Result<Vec<Rec>> {
    let mut r = wal.reader(from);
    let mut out = Vec::new();
    while let Some(item) = r.next_item()? {
        match item {
            ReadItem::Record(rec) => {
                out.push(Rec { first: rec.first_seq, count: rec.count, payload: rec.payload.to_vec() })
            }
            // Gaps appear where a crash left a cursor ahead of the data and the log
            // moved its end past it; the record comparison catches any real loss.
            ReadItem::Gap { .. } => {}
        }
    }
    Ok(out)
}

fn payload(n: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n as usize).wrapping_mul(131).wrapping_add(i) as u8).collect()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let sim = SimStorage::new();
    let dir = Path::new(DIR);
    let mut wal = Some(Wal::open(dir, options(&sim)).unwrap());
    // A cursor that never moves keeps every segment, so the whole history stays readable.
    wal.as_ref().unwrap().cursor("hold", CursorStart::Oldest).unwrap();
    let mut durable: Vec<Rec> = Vec::new();
    let mut pending: Vec<Rec> = Vec::new();
    let mut cursors: BTreeMap<&str, CursorModel> = CURSORS.iter().map(|c| (*c, CursorModel::default())).collect();
    for c in CURSORS {
        wal.as_ref().unwrap().cursor(c, CursorStart::Oldest).unwrap();
    }
    wal.as_ref().unwrap().flush_blocking().unwrap();
    let mut counter = 0u64;
    let mut failing = false;

    for op in ops {
        let w = wal.as_ref().unwrap();
        match op {
            Op::Append { len, count } => {
                counter += 1;
                let p = payload(counter, len);
                let r = w.try_append(&p, count).unwrap();
                let expect = pending.last().or(durable.last()).map_or(r.start, |l| l.first + u64::from(l.count));
                prop_assert_eq!(r.start, expect.max(r.start));
                pending.push(Rec { first: r.start, count, payload: p });
            }
            Op::Flush => {
                if w.flush_blocking().is_ok() {
                    durable.append(&mut pending);
                    for c in cursors.values_mut() {
                        c.floor = c.committed;
                    }
                } else {
                    prop_assert!(failing, "flush failed without an injected failure");
                }
            }
            Op::Read { from_pct } => {
                let all: Vec<Rec> = durable.iter().chain(&pending).cloned().collect();
                let end = all.last().map_or(0, |r| r.first + u64::from(r.count));
                let start = all.first().map_or(0, |r| r.first);
                let from = start + (end - start) * u64::from(from_pct) / 255;
                let got = match try_read_all(w, from) {
                    Ok(g) => g,
                    Err(e) => {
                        prop_assert!(failing, "read failed without an injected failure: {}", e);
                        continue;
                    }
                };
                let want: Vec<Rec> = all.into_iter().filter(|r| r.first + u64::from(r.count) > from).collect();
                prop_assert!(got.len() <= want.len());
                prop_assert_eq!(&got[..], &want[..got.len()]);
                let durable_after = durable.iter().filter(|r| r.first + u64::from(r.count) > from).count();
                prop_assert!(got.len() >= durable_after, "a durable record is not readable");
            }
            Op::Commit { cursor, pct } => {
                let name = CURSORS[cursor as usize];
                let end = w.next_seq();
                let m = cursors.get_mut(name).unwrap();
                let pos = m.committed + (end - m.committed) * u64::from(pct) / 255;
                w.cursor(name, CursorStart::Oldest).unwrap().commit(pos).unwrap();
                m.committed = pos;
            }
            Op::Crash { torn, seed } => {
                wal.take().unwrap().close_without_flush();
                sim.fail_after(None);
                failing = false;
                sim.set_torn_writes(torn, seed);
                sim.crash();
                let w = Wal::open(dir, options(&sim)).unwrap();
                let got = read_all(&w, 0);
                prop_assert!(got.len() >= durable.len(), "lost durable records: {} < {}", got.len(), durable.len());
                prop_assert_eq!(&got[..durable.len()], &durable[..]);
                let extra = &got[durable.len()..];
                prop_assert!(extra.len() <= pending.len());
                prop_assert_eq!(extra, &pending[..extra.len()]);
                let positions: BTreeMap<String, u64> = w.cursors().into_iter().collect();
                for (name, m) in cursors.iter_mut() {
                    let p = positions[*name];
                    prop_assert!(
                        p >= m.floor && p <= m.committed,
                        "cursor {} at {} not in {}..={}",
                        name,
                        p,
                        m.floor,
                        m.committed
                    );
                    m.floor = p;
                    m.committed = p;
                }
                let data_end = got.last().map_or(0, |r| r.first + u64::from(r.count));
                let max_cursor = positions.values().copied().max().unwrap_or(0);
                prop_assert!(w.next_seq() >= data_end.max(max_cursor));
                durable = got;
                pending.clear();
                wal = Some(w);
            }
            Op::Reopen => {
                sim.fail_after(None);
                failing = false;
                wal.take().unwrap().close().unwrap();
                let w = Wal::open(dir, options(&sim)).unwrap();
                prop_assert!(w.recovery_report().is_clean(), "{:?}", w.recovery_report());
                durable.append(&mut pending);
                prop_assert_eq!(read_all(&w, 0), durable.clone());
                let positions: BTreeMap<String, u64> = w.cursors().into_iter().collect();
                for (name, m) in cursors.iter_mut() {
                    prop_assert_eq!(positions[*name], m.committed);
                    m.floor = m.committed;
                }
                wal = Some(w);
            }
            Op::Fail { after } => {
                sim.fail_after(Some(u64::from(after)));
                failing = true;
            }
            Op::Heal => {
                sim.fail_after(None);
                failing = false;
            }
        }
    }
    sim.fail_after(None);
    wal.take().unwrap().close().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_the_model_through_crashes_and_failures(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
