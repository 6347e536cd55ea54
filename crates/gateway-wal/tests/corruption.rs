//! Named damage scenarios: whatever is wrong with the files, opening reports
//! it, keeps every valid record, never panics, and the log stays usable.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway_wal::sim::SimStorage;
use gateway_wal::{CursorStart, Durability, ReadItem, Wal, WalOptions};
use proptest::prelude::*;

fn opts() -> WalOptions {
    WalOptions { durability: Durability::Interval(Duration::from_millis(2)), segment_bytes: 4096, ..Default::default() }
}

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i:05}-").repeat(6).into_bytes()
}

/// Writes `n` one-frame records, with a cursor at 0 so no segment is deleted.
fn fill(dir: &Path, n: u64) {
    let wal = Wal::open(dir, opts()).unwrap();
    wal.cursor("keep", CursorStart::Oldest).unwrap();
    for i in 0..n {
        wal.append_blocking(&payload(i), 1).unwrap();
    }
    wal.close().unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn items(wal: &Wal, from: u64) -> Vec<ReadItem> {
    let mut r = wal.reader(from);
    std::iter::from_fn(|| r.next_item().unwrap()).collect()
}

fn record_seqs(items: &[ReadItem]) -> Vec<u64> {
    items
        .iter()
        .filter_map(|i| match i {
            ReadItem::Record(r) => Some(r.first_seq),
            ReadItem::Gap { .. } => None,
        })
        .collect()
}

#[test]
fn bit_flip_in_an_old_segment_is_counted_and_skipped_and_the_rest_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    assert!(segs.len() > 3);
    let mut bytes = fs::read(&segs[0]).unwrap();
    // Inside the payload of the second record (32-byte segment header, 28-byte record header).
    let rec_len = 28 + payload(0).len();
    bytes[32 + rec_len + 28 + 5] ^= 0x10;
    fs::write(&segs[0], &bytes).unwrap();

    let wal = Wal::open(dir.path(), opts()).unwrap();
    let rep = wal.recovery_report();
    assert_eq!(rep.corrupt_regions, 1, "{rep:?}");
    assert_eq!(rep.corrupt_bytes, rec_len as u64);
    assert_eq!(rep.lost_seqs, 1);
    assert_eq!(rep.torn_tail_bytes, 0);
    let items = items(&wal, 0);
    assert_eq!(items[1], ReadItem::Gap { from: 1, to: 2 });
    let seqs = record_seqs(&items);
    assert_eq!(seqs.len(), 199);
    assert!(!seqs.contains(&1));
    for it in &items {
        if let ReadItem::Record(r) = it {
            assert_eq!(r.payload, payload(r.first_seq));
        }
    }
    assert_eq!(wal.append_blocking(b"next", 1).unwrap().start, 200);
}

#[test]
fn torn_tail_is_truncated_and_the_valid_prefix_kept() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 50);
    let last = segments(dir.path()).pop().unwrap();
    let clean_len = fs::metadata(&last).unwrap().len();
    // Half of a record, as if the process died in the middle of a write.
    let mut bytes = fs::read(&last).unwrap();
    let half = bytes[32..32 + 40].to_vec();
    bytes.extend_from_slice(&half);
    fs::write(&last, &bytes).unwrap();

    {
        let wal = Wal::open(dir.path(), opts()).unwrap();
        assert_eq!(wal.recovery_report().torn_tail_bytes, 40);
        assert_eq!(wal.recovery_report().corrupt_regions, 0);
        assert_eq!(fs::metadata(&last).unwrap().len(), clean_len);
        assert_eq!(record_seqs(&items(&wal, 0)), (0..50).collect::<Vec<_>>());
        assert_eq!(wal.append_blocking(b"after", 1).unwrap().start, 50);
        wal.close().unwrap();
    }
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert!(wal.recovery_report().is_clean(), "{:?}", wal.recovery_report());
    assert_eq!(record_seqs(&items(&wal, 0)), (0..51).collect::<Vec<_>>());
}

#[test]
fn zeroed_tail_from_a_crashed_file_system_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20);
    let last = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(&last, &bytes).unwrap();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert_eq!(wal.recovery_report().torn_tail_bytes, 4096);
    assert_eq!(record_seqs(&items(&wal, 0)), (0..20).collect::<Vec<_>>());
}

#[test]
fn truncated_header_of_the_newest_segment_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 30);
    let segs = segments(dir.path());
    // A segment created but never written: its header cut short by a crash.
    let base: u64 = 30;
    let path = dir.path().join(format!("{base:020}.seg"));
    assert!(!segs.contains(&path));
    fs::write(&path, [0x45, 0x47, 0x57]).unwrap();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert_eq!(wal.recovery_report().torn_tail_bytes, 3);
    assert!(wal.recovery_report().bad_segments.is_empty());
    assert_eq!(wal.append_blocking(b"x", 1).unwrap().start, 30);
    wal.flush_blocking().unwrap();
    assert_eq!(record_seqs(&items(&wal, 0)), (0..31).collect::<Vec<_>>());
}

#[test]
fn damaged_header_of_an_old_segment_skips_that_segment_and_reports_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    let second_base: u64 = segs[1].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let third_base: u64 = segs[2].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    fs::OpenOptions::new().write(true).open(&segs[1]).unwrap().set_len(10).unwrap();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let rep = wal.recovery_report();
    assert_eq!(rep.bad_segments.len(), 1, "{rep:?}");
    assert_eq!(rep.lost_seqs, third_base - second_base);
    let items = items(&wal, 0);
    assert!(items.contains(&ReadItem::Gap { from: second_base, to: third_base }), "{items:?}");
    let seqs = record_seqs(&items);
    assert_eq!(seqs.len() as u64, 200 - (third_base - second_base));
}

#[test]
fn cursor_file_ahead_of_the_data_moves_the_end_of_the_log_past_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), opts()).unwrap();
        let c = wal.cursor("uplink", CursorStart::Oldest).unwrap();
        for i in 0..10 {
            wal.append_blocking(&payload(i), 1).unwrap();
        }
        c.commit(10).unwrap();
        wal.close().unwrap();
    }
    // Simulate data lost while the acknowledgement survived: cut the log back to nothing.
    for s in segments(dir.path()) {
        fs::remove_file(s).unwrap();
    }
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert_eq!(wal.recovery_report().cursors_ahead, vec![("uplink".to_string(), 10)]);
    assert_eq!(wal.next_seq(), 10);
    let c = wal.cursor("uplink", CursorStart::Oldest).unwrap();
    let r = wal.append_blocking(b"new", 1).unwrap();
    assert_eq!(r.start, 10, "sequence numbers the consumer acknowledged are never reused");
    wal.flush_blocking().unwrap();
    let mut rd = c.reader();
    assert_eq!(rd.next_record().unwrap().unwrap().first_seq, 10);
}

#[test]
fn empty_files_are_handled_without_losing_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 100);
    let segs = segments(dir.path());
    // An empty old segment, an empty newest segment, an empty cursor file, a stray temp file.
    fs::write(&segs[1], b"").unwrap();
    fs::write(dir.path().join(format!("{:020}.seg", 100)), b"").unwrap();
    fs::write(dir.path().join("cursors/empty.cur"), b"").unwrap();
    fs::write(dir.path().join("cursors/keep.cur.tmp"), b"junk").unwrap();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let rep = wal.recovery_report().clone();
    assert_eq!(rep.bad_segments.len(), 1, "{rep:?}");
    assert_eq!(rep.corrupt_cursors, vec!["empty".to_string()]);
    assert_eq!(rep.removed_files, vec!["cursors/keep.cur.tmp".to_string()]);
    assert_eq!(wal.next_seq(), 100);
    // The consumer whose cursor file was damaged restarts at the oldest record, not the newest.
    let c = wal.cursor("empty", CursorStart::Latest).unwrap();
    assert_eq!(c.position(), 0);
    assert_eq!(wal.append_blocking(b"x", 1).unwrap().start, 100);
}

#[test]
fn an_empty_directory_and_a_directory_of_strangers_open_as_a_new_log() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert_eq!(wal.next_seq(), 0);
    assert_eq!(wal.recovery_report().unknown_files, vec!["notes.txt".to_string()]);
}

fn sim_opts(sim: &SimStorage) -> WalOptions {
    WalOptions { storage: std::sync::Arc::new(sim.clone()), ..opts() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any bytes in a segment or cursor file: open reports, never panics, and
    /// the log accepts and returns new records afterwards.
    #[test]
    fn arbitrary_file_contents_never_panic_and_leave_a_usable_log(
        seg in proptest::collection::vec(any::<u8>(), 0..2000),
        cur in proptest::collection::vec(any::<u8>(), 0..40),
        keep_header in any::<bool>(),
    ) {
        let sim = SimStorage::new();
        let dir = Path::new("/wal");
        {
            let wal = Wal::open(dir, sim_opts(&sim)).unwrap();
            for i in 0..20 { wal.append_blocking(&payload(i), 1).unwrap(); }
            wal.close().unwrap();
        }
        let first = dir.join(format!("{:020}.seg", 0));
        let mut bytes = sim.read_file(&first).unwrap();
        if keep_header { bytes.truncate(32); bytes.extend_from_slice(&seg); } else { bytes = seg.clone(); }
        sim.write_file(&first, &bytes);
        sim.write_file(&dir.join("cursors/x.cur"), &cur);
        let wal = Wal::open(dir, sim_opts(&sim)).unwrap();
        let start = wal.next_seq();
        let mut r = wal.reader(0);
        while r.next_item().unwrap().is_some() {}
        let range = wal.append_blocking(b"after", 1).unwrap();
        prop_assert!(range.start >= start);
        wal.flush_blocking().unwrap();
        let mut r = wal.reader(range.start);
        prop_assert_eq!(&r.next_record().unwrap().unwrap().payload[..], b"after");
    }
}

#[test]
fn inspection_reports_damage_without_repairing_and_works_while_the_log_is_open() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 100);
    let segs = segments(dir.path());
    let mut bytes = fs::read(&segs[0]).unwrap();
    bytes[32 + 28 + 3] ^= 1;
    fs::write(&segs[0], &bytes).unwrap();
    let last = segs.last().unwrap();
    let mut tail = fs::read(last).unwrap();
    let len_before = tail.len() + 10;
    tail.extend_from_slice(&[7u8; 10]);
    fs::write(last, &tail).unwrap();

    let i = gateway_wal::inspect::inspect(dir.path()).unwrap();
    assert!(!i.in_use);
    assert!(i.is_damaged());
    assert_eq!(i.report.corrupt_regions, 1);
    assert_eq!(i.report.torn_tail_bytes, 10);
    assert_eq!(i.segments[0].corrupt.len(), 1);
    assert_eq!(i.report.records, 99);
    assert_eq!(fs::metadata(last).unwrap().len() as usize, len_before, "inspection must not truncate");
    let mut seen = Vec::new();
    gateway_wal::inspect::scan_records(dir.path(), 50, &mut |s, _, p| {
        assert_eq!(p, &payload(s)[..]);
        seen.push(s);
        seen.len() < 10
    })
    .unwrap();
    assert_eq!(seen, (50..60).collect::<Vec<_>>());

    let wal = Wal::open(dir.path(), opts()).unwrap();
    let i = gateway_wal::inspect::inspect(dir.path()).unwrap();
    assert!(i.in_use, "the open log holds the lock");
    assert_eq!(i.report.torn_tail_bytes, 0, "opening truncated the torn tail");
    drop(wal);
}

#[test]
fn a_damaged_header_on_the_newest_segment_keeps_its_records_and_their_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let last = segments(dir.path()).pop().unwrap();
    let base: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    bytes[0] ^= 0x01; // the magic
    fs::write(&last, &bytes).unwrap();
    {
        let wal = Wal::open(dir.path(), opts()).unwrap();
        let rep = wal.recovery_report();
        assert_eq!(rep.bad_segments.len(), 1, "{rep:?}");
        assert_eq!(rep.lost_seqs, 0);
        assert_eq!(wal.next_seq(), 200, "sequence numbers of the damaged segment must not be handed out again");
        assert_eq!(record_seqs(&items(&wal, 0)), (0..200).collect::<Vec<_>>());
        assert_eq!(wal.append_blocking(b"next", 1).unwrap().start, 200);
        wal.close().unwrap();
    }
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert!(wal.recovery_report().is_clean(), "the header was repaired: {:?}", wal.recovery_report());
    assert_eq!(record_seqs(&items(&wal, base)).first(), Some(&base));
    assert_eq!(record_seqs(&items(&wal, 0)).len(), 201);
}

#[test]
fn a_damaged_header_on_an_old_segment_keeps_its_records_too() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    let mut bytes = fs::read(&segs[1]).unwrap();
    bytes[20] ^= 0xff; // inside the base sequence number: the header checksum fails
    fs::write(&segs[1], &bytes).unwrap();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert_eq!(wal.recovery_report().bad_segments.len(), 1);
    assert_eq!(wal.recovery_report().lost_seqs, 0);
    assert_eq!(record_seqs(&items(&wal, 0)), (0..200).collect::<Vec<_>>());
}

fn base_of(seg: &Path) -> u64 {
    seg.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

#[test]
fn a_deleted_middle_segment_is_reported_as_lost_with_its_range() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    let (from, to) = (base_of(&segs[2]), base_of(&segs[3]));
    fs::remove_file(&segs[2]).unwrap();

    let i = gateway_wal::inspect::inspect(dir.path()).unwrap();
    assert!(i.is_damaged(), "wal verify must not say OK: {:?}", i.report);
    assert_eq!(i.report.missing, vec![(from, to)]);
    assert_eq!(i.report.lost_seqs, to - from);

    let wal = Wal::open(dir.path(), opts()).unwrap();
    let rep = wal.recovery_report();
    assert!(!rep.is_clean(), "{rep:?}");
    assert_eq!(rep.missing, vec![(from, to)]);
    assert_eq!(rep.lost_seqs, to - from);
    assert_eq!(rep.missing_text(), format!("{from}..{to} ({} lost)", to - from));
    let items = items(&wal, 0);
    assert!(items.contains(&ReadItem::Gap { from, to }), "{items:?}");
    assert_eq!(record_seqs(&items).len() as u64, 200 - (to - from));
}

#[test]
fn a_middle_segment_cut_at_a_record_boundary_is_reported_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    let (base, next) = (base_of(&segs[1]), base_of(&segs[2]));
    // Header and two whole records: nothing in the file is damaged, it just ends early.
    let rec_len = 28 + payload(0).len() as u64;
    fs::OpenOptions::new().write(true).open(&segs[1]).unwrap().set_len(32 + 2 * rec_len).unwrap();

    let i = gateway_wal::inspect::inspect(dir.path()).unwrap();
    assert!(i.is_damaged());
    assert_eq!(i.report.corrupt_regions, 0);
    assert_eq!(i.segments[1].end_seq, base + 2);
    assert_eq!(i.report.missing, vec![(base + 2, next)]);
    assert_eq!(i.report.lost_seqs, next - base - 2);

    let wal = Wal::open(dir.path(), opts()).unwrap();
    let rep = wal.recovery_report();
    assert!(!rep.is_clean(), "{rep:?}");
    assert_eq!((rep.missing.clone(), rep.lost_seqs), (vec![(base + 2, next)], next - base - 2));
}

#[test]
fn consecutive_lost_segments_make_one_range_and_a_whole_log_has_none() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let i = gateway_wal::inspect::inspect(dir.path()).unwrap();
    assert!(!i.is_damaged() && i.report.missing.is_empty() && i.report.lost_seqs == 0, "{:?}", i.report);
    assert!(Wal::open(dir.path(), opts()).unwrap().recovery_report().is_clean());

    let segs = segments(dir.path());
    let (from, to) = (base_of(&segs[1]), base_of(&segs[4]));
    fs::remove_file(&segs[1]).unwrap();
    fs::write(&segs[2], b"not a segment").unwrap();
    fs::remove_file(&segs[3]).unwrap();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let rep = wal.recovery_report();
    assert_eq!((rep.missing.clone(), rep.lost_seqs), (vec![(from, to)], to - from), "{rep:?}");
}

#[test]
fn the_gap_a_cursor_ahead_made_is_reported_once_not_at_every_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), opts()).unwrap();
        wal.cursor("keep", CursorStart::Oldest).unwrap();
        let uplink = wal.cursor("uplink", CursorStart::Oldest).unwrap();
        for i in 0..200 {
            wal.append_blocking(&payload(i), 1).unwrap();
        }
        uplink.commit(200).unwrap();
        wal.close().unwrap();
    }
    // The newest data is lost while the uplink's acknowledgement survived.
    let last = segments(dir.path()).pop().unwrap();
    let lost_from = base_of(&last);
    fs::remove_file(&last).unwrap();
    {
        let wal = Wal::open(dir.path(), opts()).unwrap();
        assert_eq!(wal.recovery_report().cursors_ahead, vec![("uplink".to_string(), 200)]);
        wal.append_blocking(b"after", 1).unwrap();
        wal.close().unwrap();
    }
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let rep = wal.recovery_report();
    assert!(rep.is_clean() && rep.missing.is_empty(), "{rep:?}");
    assert!(items(&wal, 0).contains(&ReadItem::Gap { from: lost_from, to: 200 }), "readers still see the gap");
    drop(wal);
    assert!(!gateway_wal::inspect::inspect(dir.path()).unwrap().is_damaged());
}
