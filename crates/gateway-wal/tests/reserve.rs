//! Sequence reservations (`WalOptions::reserve_seqs`): numbers are handed
//! out only below a persisted reservation, a log not closed cleanly continues
//! after it (so a number a reader saw before it was durable is never given to
//! other data), a clean close wastes none, and the skip is not reported as
//! lost data.

use std::time::Duration;

use gateway_wal::sim::SimStorage;
use gateway_wal::{CursorStart, Durability, ReadItem, Wal, WalOptions};

const RESERVE: u64 = 4096;

fn opts(sim: &SimStorage) -> WalOptions {
    WalOptions {
        durability: Durability::Interval(Duration::from_millis(2)),
        storage: std::sync::Arc::new(sim.clone()),
        reserve_seqs: RESERVE,
        ..WalOptions::default()
    }
}

fn reserved(sim: &SimStorage, dir: &std::path::Path) -> u64 {
    let b = sim.read_file(&dir.join("RESERVED")).expect("a reservation file");
    u64::from_le_bytes(b[8..16].try_into().unwrap())
}

#[test]
fn a_log_that_crashed_continues_after_its_reservation_and_loses_nothing_durable() {
    let sim = SimStorage::new();
    let dir = std::path::Path::new("/wal");
    let wal = Wal::open(dir, opts(&sim)).unwrap();
    // A consumer holds the data (without one, sealed segments are not kept).
    wal.cursor("hold", CursorStart::Oldest).unwrap();
    let mut last = 0;
    for i in 0..100u32 {
        last = wal.append_blocking(&[i as u8; 40], 3).unwrap().end;
    }
    wal.flush_blocking().unwrap();
    assert!(reserved(&sim, dir) >= last, "numbers are handed out only below the persisted reservation");
    let before_crash = reserved(&sim, dir);
    // Appended but not durable, then the plug is pulled: these numbers may
    // have been seen by a reader ahead of durability.
    let lost = wal.append_blocking(&[9; 40], 5).unwrap();
    wal.close_without_flush();
    sim.crash();

    let wal = Wal::open(dir, opts(&sim)).unwrap();
    let r = wal.recovery_report();
    assert_eq!(r.skipped_seqs, before_crash - last, "{r:?}");
    assert!(r.is_clean(), "the skip is not damage: {r:?}");
    assert!(r.missing.is_empty() && r.lost_seqs == 0, "{r:?}");
    assert_eq!(wal.next_seq(), before_crash);
    let next = wal.append_blocking(&[1; 40], 1).unwrap();
    assert!(next.start >= lost.end, "a number handed out before the crash is never reused");
    wal.flush_blocking().unwrap();
    let seqs = read_all(&wal, 0);
    assert_eq!(seqs.len(), 101, "every durable record and the new one, and no gap: {:?}", &seqs[99..]);
    assert_eq!(seqs[99].1, last);
    assert_eq!(seqs[100].0, before_crash);
    // A reader that had read everything before the crash (its cursor at the
    // skip) goes straight to the new data.
    assert_eq!(read_all(&wal, last), [(before_crash, before_crash + 1)]);
    // What it has left to read is one frame, not the skip: backlog figures
    // subtract the skipped numbers.
    assert_eq!(wal.skipped_after(last), before_crash - last);
    assert_eq!(wal.next_seq() - last - wal.skipped_after(last), 1);
    assert_eq!(wal.skipped_after(last - 3), before_crash - last, "a reader before the skip: its frames, not the skip");
    assert_eq!(wal.skipped_after(before_crash), 0, "a reader past the skip");
    assert_eq!(wal.past_skip(last), before_crash, "a reader inside the skip goes to its end");
    assert_eq!(wal.past_skip(last - 3), last - 3, "a reader before the skip stays");
    assert_eq!(wal.past_skip(before_crash + 1), before_crash + 1, "a reader past it stays");
    wal.close().unwrap();

    // Reopened after a clean close: no skip, and the gap is not reported again.
    let wal = Wal::open(dir, opts(&sim)).unwrap();
    assert_eq!(wal.recovery_report().skipped_seqs, 0);
    assert!(wal.recovery_report().missing.is_empty());
    assert_eq!(wal.next_seq(), before_crash + 1);
    assert_eq!(read_all(&wal, 0).len(), 101, "the skip is still no gap after a reopen");
    wal.close().unwrap();
}

/// Every item a reader from `from` gets: records as (first, end) ranges; a
/// gap fails the test.
fn read_all(wal: &Wal, from: u64) -> Vec<(u64, u64)> {
    let mut reader = wal.reader(from);
    let mut out = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        match item {
            ReadItem::Record(r) => out.push((r.first_seq, r.end_seq())),
            ReadItem::Gap { from, to } => panic!("a gap {from}..{to} after {out:?}"),
        }
    }
    out
}

#[test]
fn the_reservation_is_renewed_ahead_of_the_appends() {
    let sim = SimStorage::new();
    let dir = std::path::Path::new("/wal");
    let wal = Wal::open(dir, opts(&sim)).unwrap();
    let mut end = 0;
    // Ten reservations' worth, in batches of 7 numbers.
    while end < 10 * RESERVE {
        end = wal.append_blocking(&[3; 16], 7).unwrap().end;
        assert!(reserved(&sim, dir) >= end, "handed out {end} beyond the reservation");
    }
    wal.close().unwrap();
    assert_eq!(reserved(&sim, dir), end, "a clean close records exactly where the log ends");
}

#[test]
fn without_a_reservation_file_or_with_a_damaged_one_nothing_is_skipped() {
    let sim = SimStorage::new();
    let dir = std::path::Path::new("/wal");
    let wal = Wal::open(dir, WalOptions { reserve_seqs: 0, ..opts(&sim) }).unwrap();
    let end = wal.append_blocking(&[0; 8], 10).unwrap().end;
    wal.close().unwrap();
    assert!(sim.read_file(&dir.join("RESERVED")).is_none(), "no file without reservations");
    let wal = Wal::open(dir, opts(&sim)).unwrap();
    assert_eq!((wal.next_seq(), wal.recovery_report().skipped_seqs), (end, 0));
    wal.close_without_flush();
    sim.crash();
    sim.write_file(&dir.join("RESERVED"), b"garbage that is not a reservation");
    let wal = Wal::open(dir, opts(&sim)).unwrap();
    assert_eq!((wal.next_seq(), wal.recovery_report().skipped_seqs), (end, 0));
    assert!(wal.recovery_report().unknown_files.is_empty(), "{:?}", wal.recovery_report());
    wal.close().unwrap();
}
