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
}
