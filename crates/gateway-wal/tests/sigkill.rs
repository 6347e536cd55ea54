//! A real process appends with `always` durability and reports every
//! acknowledged record; it is killed with SIGKILL at random moments, many
//! times. After each kill the log must hold every acknowledged record of every
//! run, with the sequence numbers it was acknowledged under, in order, intact,
//! and without duplicates.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_wal::{Wal, WalOptions};
use rand::RngExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Id {
    run: u64,
    thread: u64,
    i: u64,
}

fn parse_payload(p: &[u8]) -> Option<Id> {
    let mut parts = p.splitn(4, |&b| b == b':');
    let mut num = || std::str::from_utf8(parts.next()?).ok()?.parse().ok();
    Some(Id { run: num()?, thread: num()?, i: num()? })
}

fn expected_payload(id: Id) -> Vec<u8> {
    // Mirrors `payload` in src/bin/wal-crash-child.rs.
    let head = format!("{}:{}:{}:", id.run, id.thread, id.i);
    let len = 16 + ((id.i * 7919 + id.thread * 104_729) % 3000) as usize;
    let mut p = head.into_bytes();
    p.extend((0..len).map(|j| (j as u64 ^ id.i ^ (id.run << 3)) as u8));
    p
}

#[test]
fn every_acknowledged_record_survives_repeated_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked: BTreeMap<Id, (u64, u64)> = BTreeMap::new();
    let runs = 24;
    let mut total_records_seen = 0;
    for run in 0..runs {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wal-crash-child"))
            .arg(dir.path())
            .arg(run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collector = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stdout);
                let mut buf = Vec::new();
                // Only whole lines count: a line cut by the kill was never acknowledged.
                while r.read_until(b'\n', &mut buf).unwrap_or(0) > 0 && buf.ends_with(b"\n") {
                    lines.lock().unwrap().push(String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned());
                    buf.clear();
                }
            })
        };
        // Wait for the first acknowledgement (the child has recovered and is
        // appending), then kill it at a random moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while lines.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "child never acknowledged a record");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..120)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        collector.join().unwrap();
        let lines = lines.lock().unwrap();
        assert!(!lines.is_empty());
        for line in lines.iter() {
            let v: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            let id = Id { run: v[0], thread: v[1], i: v[2] };
            assert!(acked.insert(id, (v[3], v[4])).is_none(), "acknowledged twice: {line}");
        }

        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let mut reader = wal.reader(0);
        let mut seen = HashSet::new();
        let mut last_end = 0;
        let mut last_i: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        let mut found: BTreeMap<Id, (u64, u64)> = BTreeMap::new();
        while let Some(rec) = reader.next_record().unwrap() {
            assert!(rec.first_seq >= last_end, "sequence went backwards at {}", rec.first_seq);
            last_end = rec.end_seq();
            let id = parse_payload(&rec.payload).expect("payload names its record");
            assert_eq!(&rec.payload[..], &expected_payload(id)[..], "payload of {id:?} damaged");
            assert!(seen.insert(id), "duplicate record {id:?}");
            if let Some(prev) = last_i.insert((id.run, id.thread), id.i) {
                assert!(id.i > prev, "records of one thread out of order: {id:?} after {prev}");
            }
            found.insert(id, (rec.first_seq, rec.end_seq()));
        }
        for (id, range) in &acked {
            assert_eq!(found.get(id), Some(range), "acknowledged record {id:?} lost or moved after run {run}");
        }
        total_records_seen = found.len();
        wal.close().unwrap();
    }
    assert!(acked.len() >= runs as usize, "too few acknowledgements to mean anything: {}", acked.len());
    eprintln!(
        "{} acknowledged records checked over {runs} kills; {total_records_seen} records in the log",
        acked.len()
    );
}
