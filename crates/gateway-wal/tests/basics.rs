//! Behaviour of the log on a real file system: appends, reads, reopen,
//! segments, cursors, retention, the overflow policies, compression, locking.

use std::time::Duration;

use gateway_wal::{Compression, CursorStart, Durability, OverflowPolicy, ReadItem, Record, Wal, WalError, WalOptions};

fn opts() -> WalOptions {
    WalOptions { durability: Durability::Interval(Duration::from_millis(2)), ..Default::default() }
}

fn small_segments() -> WalOptions {
    WalOptions { segment_bytes: 4096, max_bytes: 1 << 30, ..opts() }
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j * 7) as u8).collect()
}

fn read_all(wal: &Wal, from: u64) -> Vec<Record> {
    let mut r = wal.reader(from);
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        out.push(rec);
    }
    out
}

#[test]
fn appended_records_read_back_in_order_with_their_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let mut ranges = Vec::new();
    for i in 0..100u64 {
        ranges.push(wal.append_blocking(&payload(i, 50), (i % 5 + 1) as u32).unwrap());
    }
    wal.flush_blocking().unwrap();
    let recs = read_all(&wal, 0);
    assert_eq!(recs.len(), 100);
    let mut expect = 0;
    for (i, (rec, range)) in recs.iter().zip(&ranges).enumerate() {
        assert_eq!(rec.first_seq, expect);
        assert_eq!(range.start, expect);
        assert_eq!(rec.payload, payload(i as u64, 50));
        expect += u64::from(rec.count);
        assert_eq!(range.end, expect);
    }
    assert_eq!(wal.next_seq(), expect);
}

#[test]
fn reopening_finds_everything_that_was_flushed_and_continues_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let end = {
        let wal = Wal::open(dir.path(), small_segments()).unwrap();
        for i in 0..500 {
            wal.append_blocking(&payload(i, 100), 10).unwrap();
        }
        wal.close().unwrap();
        5000
    };
    let wal = Wal::open(dir.path(), small_segments()).unwrap();
    assert!(wal.recovery_report().is_clean(), "{:?}", wal.recovery_report());
    assert_eq!(wal.next_seq(), end);
    // No cursor: sealed segments were deletable, but nothing is deleted without a flush cycle
    // having run retention, so read what is there and check it is a suffix of what was written.
    let recs = read_all(&wal, 0);
    assert!(!recs.is_empty());
    assert_eq!(recs.last().unwrap().end_seq(), end);
    let r = wal.append_blocking(b"more", 1).unwrap();
    assert_eq!(r.start, end);
}

#[test]
fn reading_from_the_middle_seeks_to_the_record_holding_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), WalOptions { segment_bytes: 64 << 10, ..opts() }).unwrap();
    let _keep = wal.cursor("keep", CursorStart::Oldest).unwrap();
    for i in 0..5000 {
        wal.append_blocking(&payload(i, 200), 4).unwrap();
    }
    wal.flush_blocking().unwrap();
    assert!(wal.stats().segments > 10);
    for from in [0u64, 1, 3, 4, 7777, 19_996, 19_999] {
        let mut r = wal.reader(from);
        let rec = r.next_record().unwrap().unwrap();
        assert!(rec.first_seq <= from && from < rec.end_seq(), "from {from}: got {}..{}", rec.first_seq, rec.end_seq());
        assert_eq!(rec.payload, payload(from / 4, 200));
    }
    assert!(wal.reader(20_000).next_item().unwrap().is_none());
}

#[test]
fn a_reader_sees_new_records_after_catching_up() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let mut r = wal.reader(0);
    assert!(r.next_item().unwrap().is_none());
    let range = wal.append_blocking(b"one", 1).unwrap();
    wal.wait_durable_blocking(range.end).unwrap();
    assert_eq!(r.next_record().unwrap().unwrap().payload, &b"one"[..]);
    assert!(r.next_item().unwrap().is_none());
    let range = wal.append_blocking(b"two", 1).unwrap();
    wal.wait_durable_blocking(range.end).unwrap();
    assert_eq!(r.next_record().unwrap().unwrap().payload, &b"two"[..]);
}

#[test]
fn segments_every_cursor_has_passed_are_deleted_and_others_kept() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small_segments()).unwrap();
    let a = wal.cursor("a", CursorStart::Oldest).unwrap();
    let b = wal.cursor("b", CursorStart::Oldest).unwrap();
    for i in 0..400 {
        wal.append_blocking(&payload(i, 100), 1).unwrap();
    }
    wal.flush_blocking().unwrap();
    let before = wal.stats();
    assert!(before.segments >= 10, "{before:?}");
    a.commit(400).unwrap();
    wal.flush_blocking().unwrap();
    assert_eq!(wal.stats().segments, before.segments, "b still needs everything");
    b.commit(200).unwrap();
    wal.flush_blocking().unwrap();
    let after = wal.stats();
    assert!(after.segments < before.segments && after.first_seq <= 200, "{after:?}");
    assert_eq!(after.dropped_seqs, 0);
    let recs = read_all(&wal, b.position());
    assert_eq!(recs.first().unwrap().first_seq, 200);
    assert_eq!(recs.len(), 200);
}

#[test]
fn cursors_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), opts()).unwrap();
        let c = wal.cursor("uplink", CursorStart::Oldest).unwrap();
        for i in 0..10 {
            wal.append_blocking(&payload(i, 10), 1).unwrap();
        }
        c.commit(7).unwrap();
        wal.close().unwrap();
    }
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert_eq!(wal.recovery_report().cursors, vec![("uplink".to_string(), 7)]);
    let c = wal.cursor("uplink", CursorStart::Latest).unwrap();
    assert_eq!(c.position(), 7);
    let recs: Vec<_> = {
        let mut r = c.reader();
        std::iter::from_fn(|| r.next_record().unwrap()).collect()
    };
    assert_eq!(recs.iter().map(|r| r.first_seq).collect::<Vec<_>>(), vec![7, 8, 9]);
    assert!(c.commit(11).is_err(), "cannot acknowledge past the end");
    c.commit(3).unwrap();
    assert_eq!(c.position(), 7, "moving backwards is ignored");
    assert!(matches!(wal.cursor("bad name", CursorStart::Latest), Err(WalError::CursorName(_))));
}

#[test]
fn drop_oldest_deletes_unread_segments_past_max_bytes_and_counts_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions { segment_bytes: 4096, max_bytes: 16384, overflow: OverflowPolicy::DropOldest, ..opts() };
    let wal = Wal::open(dir.path(), o).unwrap();
    let slow = wal.cursor("slow", CursorStart::Oldest).unwrap();
    for i in 0..200 {
        wal.append_blocking(&payload(i, 200), 1).unwrap();
    }
    wal.flush_blocking().unwrap();
    let s = wal.stats();
    assert!(s.disk_bytes <= 16384 + 4096, "{s:?}");
    assert!(s.dropped_seqs > 0 && s.dropped_segments > 0, "{s:?}");
    let mut r = slow.reader();
    match r.next_item().unwrap().unwrap() {
        ReadItem::Gap { from, to } => {
            assert_eq!(from, 0);
            assert_eq!(to, s.first_seq);
            assert_eq!(to, s.dropped_seqs, "every dropped number was unread by the cursor");
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(r.next_record().unwrap().unwrap().first_seq, s.first_seq);
}

#[test]
fn block_policy_refuses_appends_at_max_bytes_until_a_consumer_acknowledges() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions { segment_bytes: 4096, max_bytes: 16384, overflow: OverflowPolicy::Block, ..opts() };
    let wal = Wal::open(dir.path(), o).unwrap();
    let c = wal.cursor("c", CursorStart::Oldest).unwrap();
    let mut n = 0u64;
    loop {
        match wal.try_append(&payload(n, 200), 1) {
            Ok(_) => n += 1,
            Err(WalError::Full { used, max }) => {
                assert!(used <= max);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(n < 1000, "never became full");
    }
    assert!(n > 40, "only {n} records fit");
    // A blocked append completes once the consumer acknowledges.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let data = payload(n, 200);
        let blocked = wal.append(&data, 1);
        tokio::pin!(blocked);
        assert!(tokio::time::timeout(Duration::from_millis(100), &mut blocked).await.is_err(), "should wait");
        c.commit(n).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), blocked).await.expect("unblocked").unwrap();
        assert_eq!(r.start, n);
    });
    assert_eq!(wal.stats().dropped_seqs, 0);
}

#[test]
fn compressed_records_read_back_identical_and_take_less_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = Vec::new();
    for (i, compression) in [Compression::None, Compression::Lz4].into_iter().enumerate() {
        let path = dir.path().join(i.to_string());
        let wal = Wal::open(&path, WalOptions { compression, ..opts() }).unwrap();
        let data: Vec<Vec<u8>> = (0..50).map(|i| format!("line1.temperature={i}.5;").repeat(40).into_bytes()).collect();
        for d in &data {
            wal.append_blocking(d, 40).unwrap();
        }
        wal.append_blocking(b"tiny", 1).unwrap();
        wal.flush_blocking().unwrap();
        let recs = read_all(&wal, 0);
        assert_eq!(recs.len(), 51);
        for (r, d) in recs.iter().zip(&data) {
            assert_eq!(&r.payload[..], &d[..]);
        }
        assert_eq!(&recs[50].payload[..], b"tiny");
        sizes.push(wal.stats().stored_bytes);
    }
    assert!(sizes[1] * 3 < sizes[0], "lz4 {} vs raw {}", sizes[1], sizes[0]);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    match Wal::open(dir.path(), opts()) {
        Err(WalError::Locked(p)) => assert_eq!(p, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    wal.close().unwrap();
    Wal::open(dir.path(), opts()).unwrap();
}

#[test]
fn bad_options_and_records_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let e = Wal::open(dir.path(), WalOptions { segment_bytes: 1 << 20, max_bytes: 1 << 20, ..opts() }).unwrap_err();
    assert!(e.to_string().contains("max_bytes"), "{e}");
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert!(matches!(wal.try_append(b"x", 0), Err(WalError::EmptyRecord)));
    assert!(matches!(wal.try_append(&vec![0; 65 << 20], 1), Err(WalError::TooLarge(_))));
}

#[test]
fn durability_none_still_makes_records_readable_and_survives_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), WalOptions { durability: Durability::None, ..opts() }).unwrap();
        let r = wal.append_blocking(b"fast", 1).unwrap();
        wal.wait_durable_blocking(r.end).unwrap();
        assert_eq!(wal.stats().syncs, 0);
        assert_eq!(read_all(&wal, 0).len(), 1);
    }
    let wal = Wal::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&wal, 0).len(), 1);
}

#[test]
fn with_durability_none_a_flush_and_a_close_still_make_everything_durable() {
    use gateway_wal::sim::SimStorage;
    for close in [false, true] {
        let sim = SimStorage::new();
        let o = || WalOptions { durability: Durability::None, storage: std::sync::Arc::new(sim.clone()), ..opts() };
        let wal = Wal::open("/wal", o()).unwrap();
        for i in 0..10 {
            let r = wal.append_blocking(&payload(i, 20), 1).unwrap();
            wal.wait_durable_blocking(r.end).unwrap();
        }
        if close {
            wal.close().unwrap();
        } else {
            wal.flush_blocking().unwrap();
            wal.close_without_flush();
        }
        sim.crash();
        let wal = Wal::open("/wal", o()).unwrap();
        assert_eq!(read_all(&wal, 0).len(), 10, "records lost after a power loss (close: {close})");
    }
}

#[test]
fn the_group_commit_interval_changes_while_the_log_runs() {
    let dir = tempfile::tempdir().unwrap();
    // A minute-long group commit: a record would wait that long to be durable.
    let long = Duration::from_secs(60);
    let wal =
        Wal::open(dir.path(), WalOptions { durability: Durability::Interval(long), ..Default::default() }).unwrap();
    assert_eq!(wal.flush_interval(), Some(long));
    let r = wal.append_blocking(b"x", 1).unwrap();
    // Narrowed while the flusher sleeps on the old interval: it wakes and the
    // record is durable within the new one, not a minute later.
    assert_eq!(wal.set_flush_interval(Duration::from_millis(1)), Some(Duration::from_millis(1)));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| tx.send(wal.wait_durable_blocking(r.end)).unwrap());
        rx.recv_timeout(Duration::from_secs(30)).expect("durable long before the old interval").unwrap();
    });
    assert_eq!(wal.flush_interval(), Some(Duration::from_millis(1)));
    // Out of range: refused, the interval in force stays.
    assert_eq!(wal.set_flush_interval(Duration::ZERO), None);
    assert_eq!(wal.set_flush_interval(Duration::from_secs(61)), None);
    assert_eq!(wal.flush_interval(), Some(Duration::from_millis(1)));

    let dir2 = tempfile::tempdir().unwrap();
    let always = Wal::open(dir2.path(), WalOptions { durability: Durability::Always, ..Default::default() }).unwrap();
    assert_eq!(always.set_flush_interval(Duration::from_millis(5)), None, "no interval to change");
    assert_eq!(always.flush_interval(), None);
}
