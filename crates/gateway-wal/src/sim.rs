//! An in-memory [`Storage`] for tests: it keeps, for every file, what was
//! written and what was made durable, and for every directory which entries
//! were made durable, so a test can "pull the plug" with [`SimStorage::crash`]
//! and see exactly what a real disk could have kept. It can also fail every
//! operation after the N-th, to check that I/O errors are reported and never
//! corrupt what was already durable.
//!
//! This is test support, but it is compiled into the library so that the bus
//! and the binary can run their own crash tests against it.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{OpenMode, Storage, StorageFile};

#[derive(Debug, Default)]
struct Data {
    written: Vec<u8>,
    durable: Vec<u8>,
}

type Inode = Arc<Mutex<Data>>;

#[derive(Debug, Default)]
struct State {
    /// The namespace as the running process sees it.
    live: BTreeMap<PathBuf, Inode>,
    /// The namespace as it would be found after a crash.
    durable: BTreeMap<PathBuf, Inode>,
    dirs: HashSet<PathBuf>,
    locks: HashMap<PathBuf, u64>,
    lock_token: u64,
    ops: u64,
    fail_after: Option<u64>,
    torn_writes: bool,
    rng: u64,
}

/// Simulated storage with crash and failure injection. Clones share one disk.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_data(m: &Mutex<Data>) -> MutexGuard<'_, Data> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn injected() -> io::Error {
    io::Error::other("injected I/O failure")
}

impl SimStorage {
    /// An empty disk that never fails and crashes cleanly (no torn writes)
    /// until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fail every operation after `n` more have succeeded (`None`: never fail).
    pub fn fail_after(&self, n: Option<u64>) {
        let mut s = lock(&self.state);
        s.fail_after = n.map(|n| s.ops + n);
    }

    /// Storage calls that succeeded so far (injected failures not counted);
    /// the unit of [`SimStorage::fail_after`].
    pub fn ops(&self) -> u64 {
        lock(&self.state).ops
    }

    /// When on, a crash keeps a random prefix of each file's unsynced tail, with
    /// its last bytes garbled, as a torn write would; when off, only durable bytes survive.
    pub fn set_torn_writes(&self, on: bool, seed: u64) {
        let mut s = lock(&self.state);
        s.torn_writes = on;
        s.rng = seed | 1;
    }

    /// Simulate power loss: the live view becomes what was durable, locks are
    /// released. Handles opened before the crash keep pointing at the old data
    /// and must not be used.
    pub fn crash(&self) {
        let mut s = lock(&self.state);
        let torn = s.torn_writes;
        let mut rng = s.rng;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut fresh = BTreeMap::new();
        for (path, inode) in &s.durable {
            let d = lock_data(inode);
            let mut kept = d.durable.clone();
            if torn && d.written.len() > d.durable.len() && d.written.starts_with(&d.durable) {
                let extra = d.written.len() - d.durable.len();
                let keep = (next() % (extra as u64 + 1)) as usize;
                kept.extend_from_slice(&d.written[d.durable.len()..d.durable.len() + keep]);
                if keep > 0 && next() % 2 == 0 {
                    let garble = (next() % 8 + 1).min(keep as u64) as usize;
                    let n = kept.len();
                    for b in &mut kept[n - garble..] {
                        *b = next() as u8;
                    }
                }
            }
            fresh.insert(path.clone(), Arc::new(Mutex::new(Data { written: kept.clone(), durable: kept })));
        }
        s.rng = next();
        s.live = fresh.clone();
        s.durable = fresh;
        s.locks.clear();
    }

    /// The current bytes of a file, if it exists.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        lock(&self.state).live.get(path).map(|i| lock_data(i).written.clone())
    }

    /// Replace a file's bytes, durably (for corruption tests).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) {
        let mut s = lock(&self.state);
        let inode = Arc::new(Mutex::new(Data { written: bytes.to_vec(), durable: bytes.to_vec() }));
        s.live.insert(path.to_owned(), inode.clone());
        s.durable.insert(path.to_owned(), inode);
    }

    fn op(&self) -> io::Result<MutexGuard<'_, State>> {
        let mut s = lock(&self.state);
        if s.fail_after.is_some_and(|n| s.ops >= n) {
            return Err(injected());
        }
        s.ops += 1;
        Ok(s)
    }
}

#[derive(Debug)]
struct SimFile {
    storage: SimStorage,
    inode: Inode,
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        let _s = self.storage.op()?;
        Ok(lock_data(&self.inode).written.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let _s = self.storage.op()?;
        let d = lock_data(&self.inode);
        let start = (offset as usize).min(d.written.len());
        let n = buf.len().min(d.written.len() - start);
        buf[..n].copy_from_slice(&d.written[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let _s = self.storage.op()?;
        let mut d = lock_data(&self.inode);
        let end = offset as usize + buf.len();
        if d.written.len() < end {
            d.written.resize(end, 0);
        }
        d.written[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let _s = self.storage.op()?;
        let mut d = lock_data(&self.inode);
        d.durable = d.written.clone();
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let _s = self.storage.op()?;
        lock_data(&self.inode).written.resize(len as usize, 0);
        Ok(())
    }
}

struct SimLock {
    storage: SimStorage,
    path: PathBuf,
    token: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        // A guard from before a crash must not release a lock taken after it.
        let mut s = lock(&self.storage.state);
        if s.locks.get(&self.path) == Some(&self.token) {
            s.locks.remove(&self.path);
        }
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.op()?;
        for a in dir.ancestors() {
            s.dirs.insert(a.to_owned());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.op()?;
        if !s.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(s.live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut s = self.op()?;
        let parent = path.parent().unwrap_or(Path::new(""));
        if !s.dirs.contains(parent) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let inode = match (s.live.get(path), mode) {
            (Some(i), OpenMode::Create) => {
                lock_data(i).written.clear();
                i.clone()
            }
            (Some(i), _) => i.clone(),
            (None, OpenMode::Read) => return Err(io::ErrorKind::NotFound.into()),
            (None, _) => {
                let i = Inode::default();
                s.live.insert(path.to_owned(), i.clone());
                i
            }
        };
        Ok(Box::new(SimFile { storage: self.clone(), inode }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.op()?;
        s.live.remove(path).map(|_| ()).ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.op()?;
        let inode = s.live.remove(from).ok_or(io::Error::from(io::ErrorKind::NotFound))?;
        s.live.insert(to.to_owned(), inode);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.op()?;
        let State { live, durable, .. } = &mut *s;
        durable.retain(|p, _| p.parent() != Some(dir));
        for (p, i) in live.iter().filter(|(p, _)| p.parent() == Some(dir)) {
            durable.insert(p.clone(), i.clone());
        }
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        let mut s = self.op()?;
        if s.locks.contains_key(path) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        s.lock_token += 1;
        let token = s.lock_token;
        s.locks.insert(path.to_owned(), token);
        Ok(Box::new(SimLock { storage: self.clone(), path: path.to_owned(), token }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_synced_data_and_synced_names_survive_a_crash() {
        let s = SimStorage::new();
        let dir = Path::new("/d");
        s.create_dir_all(dir).unwrap();
        let a = s.open(&dir.join("a"), OpenMode::Create).unwrap();
        a.write_at(b"hello", 0).unwrap();
        a.sync_data().unwrap();
        s.sync_dir(dir).unwrap();
        a.write_at(b" world", 5).unwrap();
        let b = s.open(&dir.join("b"), OpenMode::Create).unwrap();
        b.write_at(b"x", 0).unwrap();
        b.sync_data().unwrap(); // data synced, but the name never was
        s.crash();
        assert_eq!(s.read_file(&dir.join("a")).unwrap(), b"hello");
        assert_eq!(s.read_file(&dir.join("b")), None);
    }

    #[test]
    fn torn_writes_keep_a_prefix_of_the_unsynced_tail() {
        let s = SimStorage::new();
        s.set_torn_writes(true, 7);
        let dir = Path::new("/d");
        s.create_dir_all(dir).unwrap();
        let f = s.open(&dir.join("f"), OpenMode::Create).unwrap();
        f.write_at(b"durable", 0).unwrap();
        f.sync_data().unwrap();
        s.sync_dir(dir).unwrap();
        f.write_at(&[9u8; 100], 7).unwrap();
        s.crash();
        let got = s.read_file(&dir.join("f")).unwrap();
        assert!(got.starts_with(b"durable") && got.len() <= 107);
    }

    #[test]
    fn fails_after_the_given_number_of_operations() {
        let s = SimStorage::new();
        s.create_dir_all(Path::new("/d")).unwrap();
        s.fail_after(Some(2));
        let f = s.open(Path::new("/d/f"), OpenMode::Create).unwrap();
        f.write_at(b"a", 0).unwrap();
        assert!(f.sync_data().is_err());
        assert!(s.list(Path::new("/d")).is_err());
        s.fail_after(None);
        assert!(f.sync_data().is_ok());
    }

    #[test]
    fn a_lock_is_exclusive_until_dropped_or_crashed() {
        let s = SimStorage::new();
        let g = s.lock(Path::new("/l")).unwrap();
        assert_eq!(s.lock(Path::new("/l")).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        drop(g);
        let _g = s.lock(Path::new("/l")).unwrap();
        s.crash();
        assert!(s.lock(Path::new("/l")).is_ok());
    }
}
