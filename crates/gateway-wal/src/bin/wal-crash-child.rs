//! Test helper for `tests/sigkill.rs`: appends records with `always`
//! durability from several threads and prints one line per acknowledged record
//! (`run thread i start end`) until it is killed. Not a user tool.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use gateway_wal::{CursorStart, Durability, Wal, WalOptions};

/// The payload for record `i` of `thread` in `run`: self-describing and long
/// enough to span several pages now and then.
fn payload(run: u64, thread: u64, i: u64) -> Vec<u8> {
    let head = format!("{run}:{thread}:{i}:");
    let len = 16 + ((i * 7919 + thread * 104_729) % 3000) as usize;
    let mut p = head.into_bytes();
    p.extend((0..len).map(|j| (j as u64 ^ i ^ (run << 3)) as u8));
    p
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(run)) = (args.next(), args.next()) else {
        eprintln!("usage: wal-crash-child DIR RUN");
        std::process::exit(2);
    };
    let run: u64 = run.parse().expect("RUN is a number");
    let opts = WalOptions {
        durability: Durability::Always,
        segment_bytes: 64 << 10,
        flush_bytes: 256 << 10,
        ..WalOptions::default()
    };
    let wal = Arc::new(Wal::open(&dir, opts).expect("open"));
    // Keep everything: the test checks every acknowledged record of every run.
    wal.cursor("hold", CursorStart::Oldest).expect("cursor");
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let wal = wal.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let p = payload(run, t, i);
                    let r = wal.append_blocking(&p, 1 + (i % 7) as u32).expect("append");
                    wal.wait_durable_blocking(r.end).expect("durable");
                    let mut o = out.lock().unwrap();
                    writeln!(o, "{run} {t} {i} {} {}", r.start, r.end).expect("stdout");
                    o.flush().expect("stdout");
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    std::thread::sleep(Duration::from_secs(3600));
}
