//! Fuzzes opening and reading the log: arbitrary bytes become the contents of
//! two segment files and a cursor file on the simulated disk. Opening must
//! never panic, reading must yield increasing sequence numbers, and the log
//! must accept and return a new record afterwards.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use gateway_wal::sim::SimStorage;
use gateway_wal::{ReadItem, Wal, WalOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let sim = SimStorage::new();
    let dir = Path::new("/wal");
    let opts = || WalOptions { storage: Arc::new(sim.clone()), segment_bytes: 4096, ..WalOptions::default() };
    // Start from a real log so the fuzzer mutates something close to valid.
    {
        let wal = Wal::open(dir, opts()).unwrap();
        for i in 0..8u32 {
            wal.append_blocking(&i.to_le_bytes().repeat(1 + i as usize * 40), 1 + i % 3).unwrap();
        }
        wal.close().unwrap();
    }
    let split = (usize::from(data[0]) * data.len() / 256).max(1);
    let (a, rest) = data[1..].split_at((split - 1).min(data.len() - 1));
    let (b, cursor) = rest.split_at(rest.len().saturating_sub(usize::from(data[1] % 32)));
    let first = dir.join(format!("{:020}.seg", 0));
    let mut seg = sim.read_file(&first).unwrap_or_default();
    seg.truncate(32 + usize::from(data[2]) * 4);
    seg.extend_from_slice(a);
    sim.write_file(&first, &seg);
    if !b.is_empty() {
        sim.write_file(&dir.join(format!("{:020}.seg", 1 + u64::from(data[3]))), b);
    }
    sim.write_file(&dir.join("cursors/c.cur"), cursor);

    let wal = Wal::open(dir, opts()).unwrap();
    let mut r = wal.reader(0);
    let mut last = 0u64;
    while let Some(item) = r.next_item().unwrap() {
        let (from, to) = match item {
            ReadItem::Record(rec) => (rec.first_seq, rec.end_seq()),
            ReadItem::Gap { from, to } => (from, to),
        };
        assert!(from < to && to > last, "positions must advance: {from}..{to} after {last}");
        last = to;
    }
    let range = wal.append_blocking(b"after", 1).unwrap();
    wal.flush_blocking().unwrap();
    let rec = wal.reader(range.start).next_record().unwrap().unwrap();
    assert_eq!(&rec.payload[..], b"after");
});
