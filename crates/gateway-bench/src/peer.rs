//! What the driver tests share: a Python peer (a server from PyPI, started
//! from a script of the test, reporting on its standard output line by
//! line) and [`TestGateway`] (a memory bus, the real driver manager and the
//! latest frame of every tag), so each protocol's tests speak to a server
//! we did not write through the code that ships.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_bus::{Bus, BusMetrics, BusSettings, Persistence, SubscribeOptions, Subscriber};
use gateway_drivers::{DeviceConfig, DriverManager};
use gateway_model::{CmdStatus, Frame, Quality, TagId, Value};
use serde_json::Value as Json;

/// The Python of the test peers: the venv of `scripts/setup-test-peers`,
/// else `python3` on PATH (as when `scripts/test` activated the venv); it
/// must import `modules` (`"pymodbus, serial"`). Fails, never skips,
/// without them.
pub fn python(modules: &str) -> PathBuf {
    find_python(modules).unwrap_or_else(|e| panic!("{e}"))
}

/// [`python`], or why there is none.
pub fn find_python(modules: &str) -> Result<PathBuf, String> {
    let venv = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/edge-gateway/venv/bin/python"));
    let py = venv.filter(|p| p.exists()).unwrap_or_else(|| PathBuf::from("python3"));
    let ok = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok { Ok(py) } else { Err(format!("{modules} missing for {}: run scripts/setup-test-peers", py.display())) }
}

/// A running Python peer; killed on drop.
pub struct PythonPeer {
    child: Child,
    lines: std_mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    what: String,
}

impl PythonPeer {
    /// Runs `script` with `args` under `python`.
    pub fn spawn(python: &Path, script: &Path, args: &[&str]) -> PythonPeer {
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", script.display()));
        let (tx, lines) = std_mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        let what = script.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        PythonPeer { child, lines, stderr, what }
    }

    /// The next line of output within `within`, if any.
    pub fn next_line(&mut self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }

    /// The next line starting with `prefix` (without it); fails the test,
    /// with the peer's standard error, if none comes within `within`.
    pub fn line(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.to_owned();
                    }
                }
                Err(_) => panic!(
                    "no {prefix:?} line from {} within {within:?}; exit: {:?}; stderr:\n{}",
                    self.what,
                    self.child.try_wait(),
                    self.stderr.lock().unwrap_or_else(|e| e.into_inner())
                ),
            }
        }
    }

    /// The process id (to measure its CPU).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the peer and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The latest value and quality of each tag, by tag id.
pub type Latest = HashMap<String, (Value, Quality)>;

/// A bus, a driver manager and the latest frame of every tag.
pub struct TestGateway {
    /// The memory bus the drivers publish on.
    pub bus: Bus,
    /// The real driver manager.
    pub drivers: DriverManager,
    sub: Subscriber,
    /// The latest frame of every tag.
    pub latest: Latest,
    /// Data frames received per tag since start, whatever their quality: how
    /// tests tell that polling goes on, and how often a deadband publishes.
    pub counts: HashMap<String, u64>,
}

impl TestGateway {
    /// A gateway whose drivers keep their files in `data_dir` (if any).
    pub fn new(data_dir: Option<&Path>) -> TestGateway {
        let bus = Bus::open(
            BusSettings { persistence: Persistence::Memory, ..BusSettings::memory_optimized() },
            Arc::new(BusMetrics::unregistered()),
        )
        .expect("a memory bus");
        let sub = bus.subscribe(SubscribeOptions::lossy("test", 1 << 20)).expect("a subscriber");
        let mut drivers = DriverManager::new(bus.clone());
        if let Some(d) = data_dir {
            drivers = drivers.with_data_dir(d);
        }
        TestGateway { drivers, bus, sub, latest: HashMap::new(), counts: HashMap::new() }
    }

    /// Starts (or restarts) the device of `dev`, its JSON form.
    pub async fn start(&self, dev: Json) {
        let dev = DeviceConfig::from_json(dev).expect("valid device");
        self.drivers.apply(dev).await;
    }

    fn take(&mut self, f: &Frame) {
        if let Some(d) = f.as_data() {
            self.latest.insert(d.tag.as_str().to_owned(), (d.value.clone(), d.quality));
            *self.counts.entry(d.tag.as_str().to_owned()).or_default() += 1;
        }
    }

    /// Waits until `done` holds for the latest frames, or fails after `within`.
    pub async fn wait(&mut self, what: &str, within: Duration, done: impl Fn(&Latest) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if done(&self.latest) {
                return;
            }
            match tokio::time::timeout_at(deadline, self.sub.recv()).await {
                Ok(Ok(d)) => {
                    for (_, f) in d.frames() {
                        self.take(f);
                    }
                }
                Ok(Err(e)) => panic!("bus closed while waiting for {what}: {e}"),
                Err(_) => {
                    let mut state: Vec<_> = self.latest.iter().map(|(k, (v, q))| format!("{k} = {v} ({q})")).collect();
                    state.sort();
                    panic!("{what}: not within {within:?}; latest frames:\n{}", state.join("\n"));
                }
            }
        }
    }

    /// Reads frames for `d`, counting them.
    pub async fn run_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Ok(del)) = tokio::time::timeout_at(deadline, self.sub.recv()).await {
            for (_, f) in del.frames() {
                self.take(f);
            }
        }
    }

    /// Sends a command and waits up to 20 s for its acknowledgement.
    pub async fn command(&self, tag: &str, value: Value) -> (CmdStatus, String) {
        let ack = self.bus.command(TagId::new(tag).expect("a tag id"), value, "test", Duration::from_secs(20)).await;
        (ack.status, ack.message.to_string())
    }
}
