//! The C allocator's footprint (glibc's malloc), set once at start, before
//! the runtime's threads exist. It must never change how memory is used by
//! the code, only how much of what was freed glibc keeps.
//!
//! Two defaults of glibc cost a small gateway memory it never uses again:
//!
//! * **A moving mmap threshold.** Freeing a large block that was mmapped
//!   raises the threshold to its size, and the trim threshold to twice that:
//!   after the first login (argon2 hashes in 19 MiB) every block up to 19 MiB
//!   comes from the heap, and up to 38 MiB of free heap is kept. Fixing both
//!   at 128 KiB (glibc's own starting values) keeps them there.
//! * **An arena per thread** (up to 8 per core): each keeps its own free
//!   memory.
//!
//! Only `memory_optimized` takes them (one arena, both thresholds fixed):
//! 14.3 -> 11.9 MB of anonymous memory at 100,000 values/s, no CPU change on
//! that job. Every other preset keeps glibc's defaults, because the same
//! settings under the REST load (two workers and the load in one process)
//! raised `api.simple` p99 at 30,000-40,000 requests/s from 1.1-2.2 ms to
//! 1.1-6.5 ms and its highest rate within the limit from 40,000 to 30,000
//! (BENCHMARKS.md): a lock shared by every thread and an mmap per large
//! buffer are a price only the memory preset asks to pay.
//!
//! The same settings can be given from outside (`GLIBC_TUNABLES`); doing it
//! here makes the preset alone enough. Other C libraries (musl) have no
//! such settings, and the module does nothing there.
//!
//! A fixed trim threshold hands back only free memory at the top of the
//! heap. After a 10 s uplink outage replayed at full speed, the freed
//! payloads sat between live blocks and 26 MB of anonymous memory stayed
//! where 8.6 MB had served before the outage; `malloc_trim(0)`, which also
//! returns whole free pages inside the heap, took it to 11.7 MB. So the
//! memory preset also trims every [`TRIM_EVERY`] ([`spawn_trimmer`]).

use gateway_bus::Preset;

/// Threshold in bytes for both mmap and trim: glibc's starting value.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THRESHOLD: i32 = 128 * 1024;

/// Applies the settings for `preset`; returns how many glibc accepted
/// (0 where the C library has none). Call before starting threads: the
/// arena limit binds only threads that have not allocated yet.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune(preset: Preset) -> usize {
    if preset != Preset::MemoryOptimized {
        return 0;
    }
    [(libc::M_MMAP_THRESHOLD, THRESHOLD), (libc::M_TRIM_THRESHOLD, THRESHOLD), (libc::M_ARENA_MAX, 1)]
        .into_iter()
        // SAFETY: mallopt takes two integers and changes only glibc's own
        // allocator parameters (it returns 0 for an unknown parameter or a
        // value out of range); no memory of ours is touched.
        .filter(|&(param, value)| unsafe { libc::mallopt(param, value) } == 1)
        .count()
}

/// No settings outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune(_preset: Preset) -> usize {
    0
}

/// How often the memory preset gives free heap pages back.
pub const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Gives glibc's free heap pages back to the system; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes a size and only releases memory glibc
    // holds as free; no live allocation is touched.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Nothing to give back outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

/// For `memory_optimized`, a task that calls [`trim`] every [`TRIM_EVERY`]
/// (inside a runtime). It holds the allocator's lock for the walk over the
/// free blocks of one arena, a fraction of a millisecond at this size.
pub fn spawn_trimmer(preset: Preset) -> Option<tokio::task::JoinHandle<()>> {
    (preset == Preset::MemoryOptimized).then(|| {
        tokio::spawn(async {
            let mut every = tokio::time::interval(TRIM_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let t = std::time::Instant::now();
                let released = trim();
                tracing::trace!(released, took_us = t.elapsed().as_micros() as u64, "malloc_trim");
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn only_the_memory_preset_changes_glibc_and_glibc_accepts_all_of_it() {
        assert_eq!(tune(Preset::Default), 0);
        assert_eq!(tune(Preset::HighThroughput), 0);
        assert_eq!(tune(Preset::LowLatency), 0);
        assert_eq!(tune(Preset::MemoryOptimized), 3);
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn trimming_gives_back_freed_pages_inside_the_heap() {
        // Blocks below the mmap threshold, freed with a live one above them:
        // the top of the heap is not free, only trimming inside returns them.
        let rss = || crate::bench::probe::rss_parts().0 / 1024;
        let mut blocks: Vec<Vec<u8>> = (0..2_000).map(|_| vec![1u8; 16 * 1024]).collect();
        let keep = vec![1u8; 1024];
        blocks.clear();
        let before = rss();
        assert!(trim(), "glibc found nothing to give back");
        let after = rss();
        assert!(after + 8 * 1024 < before, "anonymous memory {before} kB -> {after} kB");
        drop(keep);
    }

    #[tokio::test]
    async fn only_the_memory_preset_trims() {
        assert!(spawn_trimmer(Preset::Default).is_none());
        let t = spawn_trimmer(Preset::MemoryOptimized).expect("a trimmer");
        t.abort();
    }
}
