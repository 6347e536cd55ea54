//! Code pages, handed back once the gateway is up and again from time to
//! time (`memory_optimized` only).
//!
//! A page of the executable that was read once stays in the process's RSS
//! until the kernel needs the memory: on the 100,000 values/s job the lean
//! build held 14 MB of file-backed pages at first, and 3.1-3.6 MB now that
//! this runs (what the steady state runs, ours and the C libraries'). The
//! rest ran once: parsing the configuration, migrating the database,
//! hashing the first administrator's password, building the router,
//! starting 200 drivers. Those pages are clean (read from the file, never
//! written), so `madvise(MADV_PAGEOUT)` on the executable's read-only
//! mappings costs nothing to keep correct: the kernel drops the pages it
//! can, and any page touched again is read back from the file on its next
//! use. Pages another process maps too (a second gateway from the same
//! file) stay where they are.
//!
//! It is done at the end of start-up, for the memory preset alone: a page
//! of code read back from disk is a fault the other presets need not pay
//! when a path they ran at start runs again. Once is not enough: what runs
//! once just after start-up (the API server's first steps, the first tick
//! of every periodic task) comes back and would stay, 2.4 MB of code on the
//! memory job. So [`spawn_releaser`] does it again when the gateway has
//! settled ([`SETTLE`]) and then every [`RELEASE_EVERY`], for code that ran
//! once since (a reconnect, an hourly clean-up). What the steady state runs
//! is read back each time: about 1.5 MB of code, some 2,000 minor page
//! faults in the next seconds, a few milliseconds of CPU.
//!
//! Which pages a process touches is its own business; how many of them the
//! kernel maps is the layout's: it maps code in 64 KiB windows around every
//! page touched, so functions that run together should sit together. The
//! lean build lays them out that way (`build.rs`, `deploy/hot-code.order`).
//!
//! The C libraries (libc, libm, the loader) held 2.3 MB more, most of it
//! mapped by fault-around and never run again. Their pages are shared with
//! every other process, so the kernel will not page them out; they are
//! only unmapped from this process (`MADV_DONTNEED`): they stay in the page
//! cache, and a page used again is mapped again from memory (a minor fault,
//! no disk read). That is safe only for a mapping with no page of its own:
//! a page of a read-only mapping that was ever written (the loader's
//! relocations before it made them read-only, a debugger's breakpoint)
//! would go back to the file's bytes. So only mappings whose smaps show no
//! anonymous page are unmapped; the others stay. Nothing else is released:
//! the writable mappings and the heap hold state.

use std::time::Duration;

/// How long after start-up the code is released a second time: after the
/// trimmer's second tick (`malloc::TRIM_EVERY`) and the first of every
/// per-second task.
pub const SETTLE: Duration = Duration::from_secs(15);

/// How often it is released after that.
pub const RELEASE_EVERY: Duration = Duration::from_secs(600);

/// What one call released.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Read-only mappings of the executable advised.
    pub mappings: usize,
    /// Their size in bytes (what was advised, not what was resident).
    pub bytes: usize,
    /// Read-only mappings of other files (the C libraries) unmapped.
    pub libraries: usize,
}

/// Pages out the executable's read-only mappings and unmaps the C
/// libraries' clean ones. Errors name the step (reading `/proc/self/maps`,
/// the kernel refusing the advice).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn release_code() -> std::io::Result<Released> {
    use std::os::unix::fs::MetadataExt;
    // The device and inode, not the path: after an upgrade replaced the
    // file, the running executable's mappings name it "(deleted)".
    let exe = std::fs::metadata("/proc/self/exe")?;
    let file = (libc::major(exe.dev()), libc::minor(exe.dev()), exe.ino());
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut released = Released::default();
    for (start, len) in executable_read_only(&maps, file) {
        // SAFETY: the range is a whole mapping of this process, read-only
        // and backed by the executable's file (checked above): MADV_PAGEOUT
        // only drops its clean pages from memory, and the kernel reads them
        // back from the same file when they are touched again, so no
        // reference into it (code, constants) changes meaning.
        let r = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        released.mappings += 1;
        released.bytes += len;
    }
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    for (start, len) in clean_library_mappings(&smaps, file) {
        // SAFETY: the range is a whole private, read-only mapping of a file
        // other than the executable, and smaps showed no anonymous page in
        // it (no page was ever written): MADV_DONTNEED only removes its
        // pages from this process's page tables, and the next access maps
        // the same bytes again from the file (from the page cache, where
        // every other user keeps them). Code and constants read through it
        // mean the same before and after.
        let r = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        released.libraries += 1;
    }
    Ok(released)
}

/// Elsewhere there is nothing to release.
#[cfg(not(target_os = "linux"))]
pub fn release_code() -> std::io::Result<Released> {
    Ok(Released::default())
}

/// For `memory_optimized`, a task (inside a runtime) that releases the
/// executable's pages again after [`SETTLE`] and then every
/// [`RELEASE_EVERY`]. A refusal is logged once and ends the task.
pub fn spawn_releaser(preset: gateway_bus::Preset) -> Option<tokio::task::JoinHandle<()>> {
    (preset == gateway_bus::Preset::MemoryOptimized).then(|| spawn_releaser_with(SETTLE, RELEASE_EVERY, |_| {}))
}

fn spawn_releaser_with(
    settle: Duration,
    every: Duration,
    mut released: impl FnMut(Released) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = tokio::time::Instant::now() + settle;
        loop {
            tokio::time::sleep_until(next).await;
            next += every;
            let (_, before) = crate::bench::probe::rss_parts();
            match release_code() {
                Ok(r) => {
                    let (_, after) = crate::bench::probe::rss_parts();
                    tracing::debug!(
                        file_backed_mb_before = before as f64 / 1e6,
                        file_backed_mb_after = after as f64 / 1e6,
                        "memory_optimized: code paged out again"
                    );
                    released(r);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "memory_optimized: the kernel kept the code in memory; not asking again.");
                    return;
                }
            }
        }
    })
}

/// A mapping's first line in `/proc/PID/maps` or `smaps`: its range,
/// permissions and file (device major, minor, inode; inode 0 for none).
struct Mapping<'a> {
    start: usize,
    len: usize,
    perms: &'a [u8],
    file: (u32, u32, u64),
}

fn mapping(line: &str) -> Option<Mapping<'_>> {
    let mut f = line.split_whitespace();
    let (range, perms, _offset, dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    let (major, minor) = dev.split_once(':')?;
    let file = (u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?, inode.parse().ok()?);
    let (a, b) = range.split_once('-')?;
    let (a, b) = (usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?);
    (b > a && perms.len() == 4).then_some(Mapping { start: a, len: b - a, perms: perms.as_bytes(), file })
}

impl Mapping<'_> {
    fn read_only(&self) -> bool {
        self.perms[0] == b'r' && self.perms[1] == b'-'
    }
}

/// The (start, length) of every mapping in `maps` (the format of
/// `/proc/PID/maps`) that is backed by `file` (device major, minor, inode)
/// and not writable.
fn executable_read_only(maps: &str, file: (u32, u32, u64)) -> Vec<(usize, usize)> {
    maps.lines().filter_map(mapping).filter(|m| m.file == file && m.read_only()).map(|m| (m.start, m.len)).collect()
}

/// The (start, length) of every private, read-only mapping in `smaps` (the
/// format of `/proc/PID/smaps`) of a file other than `exe` with no
/// anonymous page: the ones [`release_code`] may unmap. A mapping whose
/// `Anonymous` line is missing is left alone.
fn clean_library_mappings(smaps: &str, exe: (u32, u32, u64)) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // The mapping being read, while it still qualifies.
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(m) = mapping(line) {
            current =
                (m.file.2 != 0 && m.file != exe && m.read_only() && m.perms[3] == b'p').then_some((m.start, m.len));
        } else if let Some(kb) = line.strip_prefix("Anonymous:")
            && let Some(range) = current.take()
            && kb.trim().strip_suffix("kB").is_some_and(|n| n.trim() == "0")
        {
            out.push(range);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0000000-55d0c04b6000 r--p 00000000 fd:01 4242 /usr/bin/edge-gateway
55d0c04b6000-55d0c1030000 r-xp 004b6000 fd:01 4242 /usr/bin/edge-gateway (deleted)
55d0c1030000-55d0c10bb000 r--p 01030000 fd:01 4242 /usr/bin/edge-gateway
55d0c10bb000-55d0c10c4000 rw-p 010bb000 fd:01 4242 /usr/bin/edge-gateway
55d0c2000000-55d0c2400000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000028000 r--p 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000028000-7f00001bd000 r-xp 00028000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000201000 ---p 00000000 00:00 0
not a line of maps
";

    #[test]
    fn only_the_executables_read_only_mappings_are_chosen() {
        let got = executable_read_only(MAPS, (0xfd, 1, 4242));
        assert_eq!(
            got,
            vec![(0x55d0c0000000, 0x4b6000), (0x55d0c04b6000, 0xb7a000), (0x55d0c1030000, 0x8b000)],
            "the writable data segment, the heap, libc and the guard page stay"
        );
        assert!(executable_read_only(MAPS, (0xfd, 1, 7)).is_empty());
        assert!(executable_read_only(MAPS, (0xfe, 1, 4242)).is_empty(), "the same inode on another device");
    }

    const SMAPS: &str = "\
55d0c04b6000-55d0c1030000 r-xp 004b6000 fd:01 4242 /usr/bin/edge-gateway
Rss:                1000 kB
Anonymous:             0 kB
7f0000000000-7f0000028000 r--p 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 160 kB
Anonymous:             0 kB
7f0000028000-7f00001bd000 r-xp 00028000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1080 kB
Anonymous:             0 kB
7f00001bd000-7f00001c1000 r--p 001bd000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                  16 kB
Anonymous:            16 kB
7f00001c1000-7f00001c3000 rw-p 001c1000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             8 kB
7f0000300000-7f0000301000 r--s 00000000 fd:01 77 /tmp/gateway.db-shm
Anonymous:             0 kB
7f0000400000-7f0000402000 r--p 00000000 00:00 0 [vvar]
Anonymous:             0 kB
7f0000500000-7f0000510000 r-xp 00000000 fd:01 98 /usr/lib/x86_64-linux-gnu/libm.so.6
Rss:                   4 kB
";

    #[test]
    fn only_clean_private_read_only_library_mappings_are_unmapped() {
        assert_eq!(
            clean_library_mappings(SMAPS, (0xfd, 1, 4242)),
            vec![(0x7f0000000000, 0x28000), (0x7f0000028000, 0x195000)],
            "the executable, libc's relocated (written) constants, its data, a shared mapping, \
             the kernel's [vvar] and a mapping whose Anonymous line is missing stay"
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_running_executable_is_released_and_keeps_running() {
        let r = release_code().expect("madvise accepted");
        // Code and constants: at least two mappings of the test binary.
        assert!(r.mappings >= 2, "{r:?}");
        assert!(r.bytes > 0, "{r:?}");
        // The code and constants paged out are read back on use: the same
        // work gives the same answer, and a second call finds the same
        // mappings.
        assert_eq!(executable_read_only(MAPS, (0xfd, 1, 4242)).len(), 3);
        // The test binary links libc dynamically: its code is unmapped too.
        assert!(r.libraries >= 1, "{r:?}");
        assert_eq!(release_code().expect("twice is fine").mappings, r.mappings);
    }

    #[tokio::test]
    #[cfg(target_os = "linux")]
    async fn the_releaser_releases_again_and_again_for_the_memory_preset_only() {
        use gateway_bus::Preset;
        for preset in [Preset::Default, Preset::HighThroughput, Preset::LowLatency] {
            assert!(spawn_releaser(preset).is_none(), "{preset}");
        }
        let real = spawn_releaser(Preset::MemoryOptimized).expect("a releaser for the memory preset");
        assert!(!real.is_finished());
        real.abort();
        // Each release is reported as it happens; three in a row, each
        // within a generous bound, means it keeps going.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = spawn_releaser_with(Duration::from_millis(10), Duration::from_millis(20), move |r| {
            let _ = tx.send(r);
        });
        for n in 1..=3 {
            let r = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("released {} times", n - 1))
                .expect("the releaser stopped");
            assert!(r.mappings >= 2, "{r:?}");
        }
        assert!(!task.is_finished(), "the releaser stopped");
        task.abort();
    }
}
