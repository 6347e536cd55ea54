//! WAL benchmarks, printed as Markdown tables for BENCHMARKS.md.
//!
//! ```text
//! cargo bench -p gateway-wal --bench wal            # full run (a few minutes)
//! cargo bench -p gateway-wal --bench wal -- --quick # a few seconds per figure
//! ```
//!
//! Every figure is measured here, on this machine, in this run: the disk's own
//! sequential write bandwidth, the log's append throughput, append-to-durable
//! latency under open-loop load, recovery time, and an LSM store (`fjall`, the
//! stand-in for the RocksDB design the original gateway used) doing the same work.
//! Payloads are real encoded frame batches (gateway-model's codec).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gateway_model::{DataFrame, Frame, Quality, TagId, Value, codec::Encoder};
use gateway_wal::{Compression, Durability, OverflowPolicy, Wal, WalError, WalOptions};

struct Cfg {
    secs: f64,
    recovery_bytes: u64,
}

/// 64 distinct batches of `n` frames: 500 tags over 50 devices, random-walk
/// floats, timestamps 1 ms apart, so the codec sees realistic data.
fn batches(n: usize) -> Vec<(Vec<u8>, u32)> {
    let tags: Vec<TagId> = (0..500).map(|i| TagId::new(&format!("plc{}.tag{}", i % 50, i)).unwrap()).collect();
    let mut enc = Encoder::new();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut v = 20.0f64;
    let mut ts = 1_764_000_000_000_000_000u64;
    (0..64)
        .map(|b| {
            let frames: Vec<Frame> = (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    v += ((x % 1000) as f64 - 500.0) / 1000.0;
                    ts += 1_000_000;
                    Frame::Data(DataFrame::new(
                        tags[(b * n + i) % tags.len()].clone(),
                        Value::F64(v),
                        Quality::GOOD,
                        ts,
                    ))
                })
                .collect();
            let mut buf = Vec::new();
            enc.encode(&frames, &mut buf);
            (buf, n as u32)
        })
        .collect()
}

fn opts(durability: Durability) -> WalOptions {
    WalOptions { durability, max_bytes: 64 << 30, overflow: OverflowPolicy::DropOldest, ..WalOptions::default() }
}

fn append_until(wal: &Wal, data: &[(Vec<u8>, u32)], secs: f64) -> (u64, u64, Duration) {
    let start = Instant::now();
    let (mut frames, mut bytes, mut end, mut i) = (0u64, 0u64, 0u64, 0usize);
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..64 {
            let (p, n) = &data[i % data.len()];
            i += 1;
            let r = loop {
                match wal.try_append(p, *n) {
                    Ok(r) => break r,
                    Err(WalError::Backlogged { .. }) => std::thread::sleep(Duration::from_micros(200)),
                    Err(e) => panic!("{e}"),
                }
            };
            frames += u64::from(*n);
            bytes += p.len() as u64;
            end = r.end;
        }
    }
    wal.wait_durable_blocking(end).unwrap();
    (frames, bytes, start.elapsed())
}

fn throughput(dir: &Path, cfg: &Cfg) {
    println!("### Append throughput (durable: every figure includes the final group commit)\n");
    println!("| frames/batch | group commit | frames/s | MB/s (payload) | appends/s | syncs/s |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in [1usize, 100, 1000] {
        let data = batches(n);
        for ms in [1u64, 5, 10] {
            let d = dir.join(format!("tp-{n}-{ms}"));
            let wal = Wal::open(&d, opts(Durability::Interval(Duration::from_millis(ms)))).unwrap();
            let (frames, bytes, el) = append_until(&wal, &data, cfg.secs);
            let s = wal.stats();
            let secs = el.as_secs_f64();
            println!(
                "| {n} | {ms} ms | {:.0} | {:.1} | {:.0} | {:.0} |",
                frames as f64 / secs,
                bytes as f64 / secs / 1e6,
                frames as f64 / n as f64 / secs,
                s.syncs as f64 / secs
            );
            wal.close().unwrap();
            std::fs::remove_dir_all(&d).unwrap();
        }
    }
    println!();
}

/// The disk's sequential write bandwidth, two ways: `O_DIRECT` 4 MiB writes
/// (the device, no page cache) and buffered 4 MiB writes with `fdatasync`
/// every 64 MiB. Returns `(direct, buffered)` in MB/s.
fn disk_bandwidth(dir: &Path, cfg: &Cfg) -> (f64, f64) {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const O_DIRECT: i32 = 0o40000; // x86_64 Linux
    let secs = cfg.secs.max(2.0);
    let mut raw = vec![0x5au8; (4 << 20) + 4096];
    let skew = (4096 - raw.as_ptr() as usize % 4096) % 4096;
    let chunk = &mut raw[skew..skew + (4 << 20)];
    chunk.fill(0x5a);
    let run = |direct: bool| {
        let path = dir.join("dd");
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        if direct {
            o.custom_flags(O_DIRECT);
        }
        let f = o.open(&path).unwrap();
        let start = Instant::now();
        let mut off = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            for _ in 0..16 {
                f.write_all_at(chunk, off).unwrap();
                off += chunk.len() as u64;
            }
            f.sync_data().unwrap();
        }
        let mbs = off as f64 / start.elapsed().as_secs_f64() / 1e6;
        drop(f);
        std::fs::remove_file(&path).unwrap();
        mbs
    };
    (run(true), run(false))
}

fn large_batches(dir: &Path, cfg: &Cfg, (direct, buffered): (f64, f64)) {
    let data = batches(1000);
    let d = dir.join("large");
    let wal = Wal::open(&d, opts(Durability::Interval(Duration::from_millis(5)))).unwrap();
    let (_, _, el) = append_until(&wal, &data, cfg.secs);
    let s = wal.stats();
    let mbs = s.stored_bytes as f64 / el.as_secs_f64() / 1e6;
    wal.close().unwrap();
    std::fs::remove_dir_all(&d).unwrap();
    println!("### Large batches against the disk\n");
    println!("| what | MB/s |");
    println!("|---|---:|");
    let disk = direct.max(buffered);
    println!("| disk: O_DIRECT 4 MiB writes | {direct:.1} |");
    println!("| disk: buffered 4 MiB writes, fdatasync every 64 MiB | {buffered:.1} |");
    println!("| WAL: batches of 1000 frames, 5 ms group commit (bytes on disk) | {mbs:.1} |");
    println!("| WAL / best disk figure | {:.0}% |\n", mbs / disk * 100.0);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn latency(dir: &Path, cfg: &Cfg) {
    println!("### Append-to-durable latency, 100,000 frames/s (batches of 100 every 1 ms, open loop)\n");
    println!("| durability | p50 | p99 | p99.9 | max | batches |");
    println!("|---|---:|---:|---:|---:|---:|");
    let data = batches(100);
    for durability in [
        Durability::Always,
        Durability::Interval(Duration::from_millis(1)),
        Durability::Interval(Duration::from_millis(5)),
        Durability::Interval(Duration::from_millis(10)),
    ] {
        let d = dir.join("lat");
        let wal = Arc::new(Wal::open(&d, opts(durability)).unwrap());
        let (tx, rx) = std::sync::mpsc::channel::<(u64, Instant)>();
        let waiter = {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                for (end, intended) in rx {
                    wal.wait_durable_blocking(end).unwrap();
                    lat.push(intended.elapsed());
                }
                lat
            })
        };
        let n = (cfg.secs * 1000.0) as u32;
        let start = Instant::now();
        for i in 0..n {
            // Open loop: each batch has an intended send time; latency counts from it.
            let intended = start + Duration::from_millis(u64::from(i));
            if let Some(wait) = intended.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let (p, c) = &data[i as usize % data.len()];
            let r = wal.append_blocking(p, *c).unwrap();
            tx.send((r.end, intended)).unwrap();
        }
        drop(tx);
        let mut lat = waiter.join().unwrap();
        lat.sort();
        let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
        println!(
            "| {durability} | {} | {} | {} | {} | {} |",
            us(percentile(&lat, 0.5)),
            us(percentile(&lat, 0.99)),
            us(percentile(&lat, 0.999)),
            us(*lat.last().unwrap()),
            lat.len()
        );
        Arc::try_unwrap(wal).unwrap().close().unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
    println!();
}

fn recovery(dir: &Path, cfg: &Cfg) {
    let d = dir.join("recovery");
    let data = batches(1000);
    {
        let wal = Wal::open(&d, opts(Durability::None)).unwrap();
        // A cursor at 0 keeps every segment.
        wal.cursor("hold", gateway_wal::CursorStart::Oldest).unwrap();
        let mut i = 0;
        while wal.stats().stored_bytes < cfg.recovery_bytes {
            let (p, n) = &data[i % data.len()];
            wal.append_blocking(p, *n).unwrap();
            i += 1;
        }
        wal.close().unwrap();
    }
    let start = Instant::now();
    let wal = Wal::open(&d, opts(Durability::None)).unwrap();
    let el = start.elapsed();
    let rep = wal.recovery_report().clone();
    let start = Instant::now();
    let mut r = wal.reader(0);
    let mut n = 0u64;
    while let Some(rec) = r.next_record().unwrap() {
        n += u64::from(rec.count);
    }
    let read = start.elapsed();
    println!("### Recovery and replay (page cache warm)\n");
    println!("| what | value |");
    println!("|---|---:|");
    println!(
        "| log size | {:.0} MiB in {} segments, {} records |",
        rep.record_bytes as f64 / (1 << 20) as f64,
        rep.segments,
        rep.records
    );
    println!(
        "| open (scan + CRC of every record) | {:.0} ms ({:.2} GB/s) |",
        el.as_secs_f64() * 1e3,
        rep.record_bytes as f64 / el.as_secs_f64() / 1e9
    );
    println!(
        "| read everything back | {:.0} ms, {:.1} M frames/s |\n",
        read.as_secs_f64() * 1e3,
        n as f64 / read.as_secs_f64() / 1e6
    );
    wal.close().unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}

fn lsm_side_by_side(dir: &Path, cfg: &Cfg) {
    println!("### Same work, side by side: this WAL vs an LSM store (fjall 3, monotonic u64 keys)\n");
    println!("| frames/batch | group commit | WAL frames/s | LSM frames/s | WAL / LSM |");
    println!("|---:|---:|---:|---:|---:|");
    for n in [1usize, 100, 1000] {
        let data = batches(n);
        let ms = 5u64;
        let d = dir.join("wal-vs");
        let wal = Wal::open(&d, opts(Durability::Interval(Duration::from_millis(ms)))).unwrap();
        let (frames, _, el) = append_until(&wal, &data, cfg.secs);
        let wal_fps = frames as f64 / el.as_secs_f64();
        wal.close().unwrap();
        std::fs::remove_dir_all(&d).unwrap();

        let d = dir.join("lsm");
        let db = fjall::Database::builder(&d).open().unwrap();
        let ks = db.keyspace("frames", fjall::KeyspaceCreateOptions::default).unwrap();
        // Group commit for the LSM: a thread persists its journal every 5 ms.
        let stop = Arc::new(AtomicBool::new(false));
        let syncer = {
            let db = db.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(ms));
                    db.persist(fjall::PersistMode::SyncData).unwrap();
                }
            })
        };
        let start = Instant::now();
        let (mut frames, mut key, mut i) = (0u64, 0u64, 0usize);
        while start.elapsed().as_secs_f64() < cfg.secs {
            for _ in 0..64 {
                let (p, c) = &data[i % data.len()];
                i += 1;
                ks.insert(key.to_be_bytes(), p.as_slice()).unwrap();
                key += u64::from(*c);
                frames += u64::from(*c);
            }
        }
        db.persist(fjall::PersistMode::SyncData).unwrap();
        let lsm_fps = frames as f64 / start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        syncer.join().unwrap();
        drop(ks);
        drop(db);
        std::fs::remove_dir_all(&d).unwrap();
        println!("| {n} | {ms} ms | {wal_fps:.0} | {lsm_fps:.0} | {:.1}x |", wal_fps / lsm_fps);
    }
    println!();
}

fn compression(dir: &Path, cfg: &Cfg) {
    println!("### Per-record LZ4 compression (batches of 100 frames, 5 ms group commit)\n");
    println!("| compression | frames/s | bytes on disk per frame |");
    println!("|---|---:|---:|");
    let data = batches(100);
    for c in [Compression::None, Compression::Lz4] {
        let d = dir.join("cmp");
        let wal = Wal::open(&d, WalOptions { compression: c, ..opts(Durability::Interval(Duration::from_millis(5))) })
            .unwrap();
        let (frames, _, el) = append_until(&wal, &data, cfg.secs);
        let s = wal.stats();
        println!("| {c:?} | {:.0} | {:.1} |", frames as f64 / el.as_secs_f64(), s.stored_bytes as f64 / frames as f64);
        wal.close().unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args.iter().skip(1).find(|a| !a.starts_with("--")).cloned();
    let cfg = Cfg { secs: if quick { 0.5 } else { 3.0 }, recovery_bytes: if quick { 64 << 20 } else { 1 << 30 } };
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).unwrap();
    let run = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    println!("## gateway-wal benchmarks ({})\n", if quick { "quick" } else { "full" });
    println!(
        "Batch payload sizes: 1 frame = {} B, 100 = {} B, 1000 = {} B (encoded).\n",
        batches(1)[0].0.len(),
        batches(100)[0].0.len(),
        batches(1000)[0].0.len()
    );
    if run("throughput") {
        throughput(dir.path(), &cfg);
    }
    if run("large") {
        let disk = disk_bandwidth(dir.path(), &cfg);
        large_batches(dir.path(), &cfg, disk);
    }
    if run("latency") {
        latency(dir.path(), &cfg);
    }
    if run("recovery") {
        recovery(dir.path(), &cfg);
    }
    if run("lsm") {
        lsm_side_by_side(dir.path(), &cfg);
    }
    if run("compression") {
        compression(dir.path(), &cfg);
    }
}
