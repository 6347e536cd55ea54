//! The C allocator's footprint (glibc's malloc), set once at start, before
//! the runtime's threads exist. It must never change how memory is used by
//! the code, only how much of what was freed glibc keeps.
//!
//! Two defaults of glibc cost a gateway memory it never uses again:
//!
//! * **A moving mmap threshold.** Freeing a large block that was mmapped
//!   raises the threshold to its size, and the trim threshold to twice that:
//!   after the first login (argon2 hashes in 19 MiB) every block up to 19 MiB
//!   comes from the heap, and up to 38 MiB of free heap is kept. Fixing both
//!   at 128 KiB (glibc's own starting values) keeps them there.
//! * **An arena per thread** (up to 8 per core): each keeps its own free
//!   memory. The gateway's hot paths allocate little (a batch per poll), and
//!   small blocks come from each thread's cache without a lock, so one arena
//!   costs nothing measurable (BENCHMARKS.md) and saves 1-3 MB: used by every
//!   preset but `high_throughput` and `low_latency`, which keep glibc's
//!   default rather than risk a lock on their paths.
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
    let mut settings = vec![(libc::M_MMAP_THRESHOLD, THRESHOLD), (libc::M_TRIM_THRESHOLD, THRESHOLD)];
    if matches!(preset, Preset::Default | Preset::MemoryOptimized) {
        settings.push((libc::M_ARENA_MAX, 1));
    }
    settings
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
    fn glibc_accepts_every_setting_of_each_preset() {
        // Tuning twice (as a test process or a bench child may) is harmless.
        assert_eq!(tune(Preset::HighThroughput), 2);
        assert_eq!(tune(Preset::LowLatency), 2);
        assert_eq!(tune(Preset::MemoryOptimized), 3);
        assert_eq!(tune(Preset::Default), 3);
    }
}
