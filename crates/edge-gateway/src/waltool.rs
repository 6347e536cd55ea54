//! `edge-gateway wal inspect|verify`: read-only views of a WAL directory, for
//! an engineer who needs to know what the log holds and whether it is intact,
//! also while the gateway runs.

use std::path::Path;
use std::process::ExitCode;

use gateway_model::codec::Decoder;
use gateway_wal::inspect::{self, Inspection};

fn print_inspection(dir: &Path, i: &Inspection) {
    let r = &i.report;
    println!("WAL {}{}", dir.display(), if i.in_use { " (in use by a running gateway)" } else { "" });
    println!(
        "  {} segments, {} records, {:.1} MiB of records, sequence {}..{}",
        i.segments.len(),
        r.records,
        r.record_bytes as f64 / (1 << 20) as f64,
        r.first_seq,
        r.next_seq
    );
    println!("  {:<26} {:>12} {:>12} {:>10} {:>12}  damage", "segment", "bytes", "base", "records", "end");
    for s in &i.segments {
        let mut damage = Vec::new();
        if s.header_damaged {
            damage.push("header damaged (records recovered by their checksums)".to_string());
        }
        for (a, b) in &s.corrupt {
            damage.push(format!("corrupt {a}..{b}"));
        }
        if s.skipped_before > 0 {
            // Not damage: numbers reserved by a run that crashed, never given to data.
            damage.push(format!(
                "after reserved seq {}..{} (skipped after a crash, no data)",
                s.base_seq - s.skipped_before,
                s.base_seq
            ));
        }
        if s.torn_tail > 0 {
            damage.push(format!("torn tail {} bytes (truncated at next start)", s.torn_tail));
        }
        println!(
            "  {:<26} {:>12} {:>12} {:>10} {:>12}  {}",
            s.file,
            s.bytes,
            s.base_seq,
            s.records,
            s.end_seq,
            if damage.is_empty() { "-".to_string() } else { damage.join("; ") }
        );
    }
    if r.cursors.is_empty() && r.corrupt_cursors.is_empty() {
        println!("  no cursors");
    }
    for (name, pos) in &r.cursors {
        println!("  cursor {name:<20} at {pos} ({} behind the end)", r.next_seq.saturating_sub(*pos));
    }
    for name in &r.corrupt_cursors {
        println!("  cursor {name:<20} DAMAGED (its consumer restarts from the oldest record)");
    }
    for &(a, b) in &r.missing {
        println!("  MISSING seq {a}..{b}: {} sequence numbers lost (a segment deleted, cut short or damaged)", b - a);
    }
    if r.lost_seqs > 0 {
        println!("  {} sequence numbers lost to damage", r.lost_seqs);
    }
}

/// `wal inspect`.
pub fn inspect(dir: &Path, from: Option<u64>, limit: usize) -> ExitCode {
    let i = match inspect::inspect(dir) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("edge-gateway: cannot inspect {}: {e}", dir.display());
            return ExitCode::from(1);
        }
    };
    print_inspection(dir, &i);
    if let Some(from) = from {
        let mut decoder = Decoder::new();
        let mut printed = 0usize;
        let r = inspect::scan_records(dir, from, &mut |first, count, payload| {
            match decoder.decode(payload) {
                Ok(batch) => {
                    for (k, f) in batch.iter().enumerate() {
                        let seq = first + k as u64;
                        if seq < from {
                            continue;
                        }
                        let json = serde_json::to_string(f).unwrap_or_default();
                        println!("{seq} {json}");
                        printed += 1;
                        if printed >= limit {
                            return false;
                        }
                    }
                }
                Err(e) => println!("{first}..{} <record does not decode: {e}>", first + u64::from(count)),
            }
            true
        });
        if let Err(e) = r {
            eprintln!("edge-gateway: reading {}: {e}", dir.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// `wal verify`: exit 0 if intact, 1 if anything is damaged.
pub fn verify(dir: &Path) -> ExitCode {
    match inspect::inspect(dir) {
        Ok(i) => {
            print_inspection(dir, &i);
            if i.is_damaged() {
                let r = &i.report;
                let missing =
                    if r.missing.is_empty() { String::new() } else { format!(" (missing {})", r.missing_text()) };
                println!(
                    "DAMAGED: {} sequence numbers lost{missing}, {} corrupt regions, {} damaged segment headers, \
                     {} damaged cursors",
                    r.lost_seqs,
                    r.corrupt_regions,
                    r.bad_segments.len(),
                    r.corrupt_cursors.len()
                );
                ExitCode::from(1)
            } else {
                println!("OK: every record's checksum matches");
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("edge-gateway: cannot verify {}: {e}", dir.display());
            ExitCode::from(1)
        }
    }
}
