//! The alarm service: one task that owns the [`Engine`], feeds it the bus's
//! readings, the gateway's own figures ([`AlarmService::sample`]), a tick
//! every 250 ms and operators' actions, keeps the alarms' state in a file
//! that survives `kill -9`, and publishes every transition on the bus.
//!
//! Order matters for "never lost": the state file is written (and synced)
//! before the events of the same step are published, so a crash between the
//! two re-raises nothing that was acknowledged; and events that cannot be
//! published right away (the bus pauses publishers under backpressure) wait
//! in a bounded queue while evaluation goes on.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gateway_bus::{Bus, BusError, Filter, SubscribeOptions, TryPublishError};
use gateway_model::{Batch, FieldError, Frame, FrameKind, Quality, Value, now_ns};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::{AlarmView, Engine, EngineError};
use crate::machine::Alarm;
use crate::metrics::AlarmMetrics;
use crate::rule::{Rule, RuleConfig, compile_all};

/// `[alarms]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmsConfig {
    /// Whether alarms are evaluated at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `[[alarms.rules]]`: rules from the file. Rules made over the API are
    /// kept in the database and added to these; a name may not be in both.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// `[alarms.system]`: the gateway's watch on itself.
    #[serde(default)]
    pub system: crate::system::SystemConfig,
    /// `[[alarms.notify]]`: webhooks.
    #[serde(default)]
    pub notify: Vec<crate::notify::NotifyConfig>,
}

const fn yes() -> bool {
    true
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig { enabled: true, rules: Vec::new(), system: Default::default(), notify: Vec::new() }
    }
}

impl AlarmsConfig {
    /// Checks every rule and threshold; paths relative to `[alarms]`.
    pub fn validate(&self) -> Result<(), FieldError> {
        compile_all(&self.rules, "rules")?;
        self.system.validate().map_err(|e| e.under("system"))?;
        let mut names = std::collections::HashSet::new();
        for (i, n) in self.notify.iter().enumerate() {
            n.validate().map_err(|e| e.under(&format!("notify[{i}]")))?;
            if !names.insert(n.name.as_str()) {
                return Err(FieldError::new(
                    format!("notify[{i}].name"),
                    format!("another target is named {:?}", n.name),
                ));
            }
        }
        Ok(())
    }
}

/// The alarms needing attention, and the JSON the API answers with
/// (`{"count","alarms"}`), made once per change.
#[derive(Debug)]
pub struct ActiveList {
    /// Highest priority first, newest first.
    pub alarms: Vec<AlarmView>,
    /// `{"count": n, "alarms": [...]}`.
    pub json: bytes::Bytes,
}

impl ActiveList {
    fn new(alarms: Vec<AlarmView>) -> Self {
        #[derive(Serialize)]
        struct Body<'a> {
            count: usize,
            alarms: &'a [AlarmView],
        }
        let json = serde_json::to_vec(&Body { count: alarms.len(), alarms: &alarms }).unwrap_or_default().into();
        ActiveList { alarms, json }
    }
}

/// Events waiting for the bus beyond this are dropped (oldest first) and
/// counted: the alarms' state stays right, only the journal has a gap.
const MAX_PENDING_EVENTS: usize = 100_000;
/// How often delays, staleness and shelving are checked.
const TICK: Duration = Duration::from_millis(250);
/// The state file in the data directory.
pub const STATE_FILE: &str = "alarms/state.json";

enum Cmd {
    Ack {
        ids: Vec<String>,
        user: Arc<str>,
        comment: Option<Arc<str>>,
        reply: oneshot::Sender<Vec<Result<(), EngineError>>>,
    },
    Shelve {
        id: String,
        user: Arc<str>,
        reason: Arc<str>,
        until_ns: u64,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Unshelve {
        id: String,
        user: Arc<str>,
        comment: Option<Arc<str>>,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    SetRules {
        rules: Vec<Rule>,
        reply: oneshot::Sender<()>,
    },
    Query {
        f: Box<dyn FnOnce(&Engine) + Send>,
    },
}

/// A handle on the running service. Cheap to clone.
#[derive(Clone)]
pub struct AlarmService {
    cmds: mpsc::Sender<Cmd>,
    samples: mpsc::Sender<(Arc<str>, f64, u64)>,
    active: watch::Receiver<Arc<ActiveList>>,
    metrics: Arc<AlarmMetrics>,
}

impl std::fmt::Debug for AlarmService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlarmService").finish_non_exhaustive()
    }
}

/// Why the service cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// It has stopped (the gateway is shutting down).
    #[error("the alarm service has stopped")]
    Stopped,
    /// Subscribing to the bus failed.
    #[error("cannot subscribe to the bus: {0}")]
    Bus(#[from] BusError),
    /// The state file cannot be written.
    #[error("cannot keep the alarms' state in {path}: {error}")]
    State {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    alarms: Vec<Alarm>,
}

/// Reads the state file; a missing file is an empty state, a corrupt one is
/// reported and set aside (renamed `.corrupt`), never a reason not to start.
fn load_state(path: &Path) -> Vec<Alarm> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
            Ok(s) => s.alarms,
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                tracing::error!(file = %path.display(), error = %e, aside = %aside.display(), "The alarms' state file is corrupt: it is set aside and alarms start from normal.");
                let _ = std::fs::rename(path, aside);
                Vec::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "Cannot read the alarms' state file; alarms start from normal.");
            Vec::new()
        }
    }
}

/// Writes the state: to a temporary file, synced, renamed over the old one,
/// the directory synced, so a crash leaves the old or the new state whole.
fn save_state(path: &Path, alarms: &[&Alarm]) -> std::io::Result<()> {
    use std::io::Write;
    #[derive(Serialize)]
    struct Out<'a> {
        version: u32,
        alarms: &'a [&'a Alarm],
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(&Out { version: 1, alarms }).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

struct Task {
    engine: Engine,
    bus: Bus,
    state_path: PathBuf,
    pending: VecDeque<Frame>,
    out: Vec<Frame>,
    active: watch::Sender<Arc<ActiveList>>,
    metrics: Arc<AlarmMetrics>,
    save_failing: bool,
}

impl Task {
    /// Persists (if anything changed), then queues and publishes this step's events.
    fn finish_step(&mut self) {
        if self.engine.take_dirty() {
            match save_state(&self.state_path, &self.engine.persistent()) {
                Ok(()) => {
                    if self.save_failing {
                        tracing::info!(file = %self.state_path.display(), "The alarms' state file is written again.");
                        self.save_failing = false;
                    }
                }
                Err(e) => {
                    self.metrics.state_write_errors.inc();
                    if !self.save_failing {
                        tracing::error!(file = %self.state_path.display(), error = %e, "Cannot write the alarms' state file: alarms are evaluated, but a restart would forget their state.");
                        self.save_failing = true;
                    }
                }
            }
            let list = ActiveList::new(self.engine.active());
            self.metrics.active.set(list.alarms.len() as i64);
            self.active.send_replace(Arc::new(list));
        }
        for f in self.out.drain(..) {
            if let Frame::Event(e) = &f {
                self.metrics.transition(&e.code);
            }
            self.pending.push_back(f);
        }
        while self.pending.len() > MAX_PENDING_EVENTS {
            self.pending.pop_front();
            self.metrics.events_dropped.inc();
        }
        self.publish();
    }

    /// Publishes what waits, without waiting for the bus: if it pauses
    /// publishers, the events stay queued and evaluation goes on.
    fn publish(&mut self) {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(1000);
            let batch: Batch = self.pending.iter().take(n).cloned().collect();
            match self.bus.try_publish(batch) {
                Ok(_) => {
                    self.pending.drain(..n);
                    self.metrics.events_published.inc_by(n as u64);
                }
                Err(TryPublishError::Full(_)) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "Alarm events cannot be published (the bus is closing).");
                    return;
                }
            }
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        let now = now_ns();
        match cmd {
            Cmd::Ack { ids, user, comment, reply } => {
                let r = ids
                    .iter()
                    .map(|id| self.engine.ack(id, user.clone(), comment.clone(), now, &mut self.out))
                    .collect();
                let _ = reply.send(r);
            }
            Cmd::Shelve { id, user, reason, until_ns, reply } => {
                let _ = reply.send(self.engine.shelve(&id, user, reason, until_ns, now, &mut self.out));
            }
            Cmd::Unshelve { id, user, comment, reply } => {
                let _ = reply.send(self.engine.unshelve(&id, user, comment, now, &mut self.out));
            }
            Cmd::SetRules { rules, reply } => {
                self.engine.set_rules(rules, now, &mut self.out);
                self.metrics.rules.set(self.engine.rules().len() as i64);
                let _ = reply.send(());
            }
            Cmd::Query { f } => f(&self.engine),
        }
    }
}

impl AlarmService {
    /// Starts the service with `rules`: loads the state kept in
    /// `data_dir/alarms/state.json` and subscribes to `bus` (before the
    /// drivers publish, so that no reading is missed).
    pub fn spawn(
        bus: &Bus,
        rules: Vec<Rule>,
        data_dir: &Path,
        metrics: Arc<AlarmMetrics>,
    ) -> Result<AlarmService, ServiceError> {
        let state_path = data_dir.join(STATE_FILE);
        let now = now_ns();
        let mut engine = Engine::new(rules, now);
        let mut out = Vec::new();
        let kept = load_state(&state_path);
        let kept_n = kept.len();
        engine.restore_all(kept, now, &mut out);
        if kept_n > 0 {
            tracing::info!(alarms = kept_n, "Alarm states restored.");
        }
        metrics.rules.set(engine.rules().len() as i64);
        // Lossy: evaluation keeps up with the head; if it ever falls a whole
        // ring behind it skips and counts (alarm state is kept in its own file,
        // not in a WAL cursor that would hold the log).
        let capacity = bus.stats().capacity;
        let sub = bus.subscribe(
            SubscribeOptions::lossy("alarms", (capacity / 2).max(1024)).filter(Filter::all().kinds([FrameKind::Data])),
        )?;
        let (active_tx, active_rx) = watch::channel(Arc::new(ActiveList::new(engine.active())));
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (sample_tx, sample_rx) = mpsc::channel(4096);
        let task = Task {
            engine,
            bus: bus.clone(),
            state_path,
            pending: VecDeque::new(),
            out,
            active: active_tx,
            metrics: metrics.clone(),
            save_failing: false,
        };
        tokio::spawn(run(task, sub, cmd_rx, sample_rx));
        Ok(AlarmService { cmds: cmd_tx, samples: sample_tx, active: active_rx, metrics })
    }

    /// The alarms needing attention, highest priority first, with their
    /// JSON; no round trip to the task (both are rebuilt when an alarm
    /// changes, so answering is a copy of a reference).
    pub fn active(&self) -> Arc<ActiveList> {
        self.active.borrow().clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<AlarmMetrics> {
        &self.metrics
    }

    async fn ask<T: Send + 'static>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, ServiceError> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(make(tx)).await.map_err(|_| ServiceError::Stopped)?;
        rx.await.map_err(|_| ServiceError::Stopped)
    }

    /// Runs `f` on the engine, in the task (for lists and lookups).
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        self.ask(|reply| Cmd::Query {
            f: Box::new(move |e| {
                let _ = reply.send(f(e));
            }),
        })
        .await
    }

    /// Acknowledges each of `ids`; one outcome per id, in order.
    pub async fn ack(
        &self,
        ids: Vec<String>,
        user: &str,
        comment: Option<&str>,
    ) -> Result<Vec<Result<(), EngineError>>, ServiceError> {
        let (user, comment) = (Arc::from(user), comment.map(Arc::from));
        self.ask(|reply| Cmd::Ack { ids, user, comment, reply }).await
    }

    /// Shelves `id` for `duration`.
    pub async fn shelve(
        &self,
        id: String,
        user: &str,
        reason: &str,
        duration: Duration,
    ) -> Result<Result<(), EngineError>, ServiceError> {
        let until_ns = now_ns().saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
        let (user, reason) = (Arc::from(user), Arc::from(reason));
        self.ask(|reply| Cmd::Shelve { id, user, reason, until_ns, reply }).await
    }

    /// Unshelves `id`.
    pub async fn unshelve(
        &self,
        id: String,
        user: &str,
        comment: Option<&str>,
    ) -> Result<Result<(), EngineError>, ServiceError> {
        let (user, comment) = (Arc::from(user), comment.map(Arc::from));
        self.ask(|reply| Cmd::Unshelve { id, user, comment, reply }).await
    }

    /// Replaces the rules (the file's and the API's together).
    pub async fn set_rules(&self, rules: Vec<Rule>) -> Result<(), ServiceError> {
        self.ask(|reply| Cmd::SetRules { rules, reply }).await
    }

    /// Feeds the gateway's own figure `subject` (`_gateway.…`) at `ts`.
    /// Never waits: if the task is behind by thousands of samples, this
    /// one is dropped and counted.
    pub fn sample(&self, subject: Arc<str>, value: f64, ts: u64) {
        if self.samples.try_send((subject, value, ts)).is_err() {
            self.metrics.samples_dropped.inc();
        }
    }
}

async fn run(
    mut t: Task,
    mut sub: gateway_bus::Subscriber,
    mut cmds: mpsc::Receiver<Cmd>,
    mut samples: mpsc::Receiver<(Arc<str>, f64, u64)>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_drops = 0;
    t.finish_step();
    loop {
        tokio::select! {
            biased;
            cmd = cmds.recv() => match cmd {
                Some(c) => t.on_cmd(c),
                None => break,
            },
            d = sub.recv() => match d {
                Ok(d) if !t.engine.watches_tags() => {
                    // No rule on any tag: take what is ready and move on.
                    drop(d);
                    while let Ok(Some(_)) = sub.try_recv() {}
                }
                Ok(d) => {
                    let started = std::time::Instant::now();
                    let mut n = 0u64;
                    for (_, f) in d.frames() {
                        if let Frame::Data(df) = f {
                            t.engine.on_data(df, &mut t.out);
                            n += 1;
                        }
                    }
                    // Take what else is ready now, so one step (one state
                    // write, one publish) covers a burst.
                    while let Ok(Some(d)) = sub.try_recv() {
                        for (_, f) in d.frames() {
                            if let Frame::Data(df) = f {
                                t.engine.on_data(df, &mut t.out);
                                n += 1;
                            }
                        }
                    }
                    t.metrics.evaluated.inc_by(n);
                    t.metrics.eval_seconds.inc_by(started.elapsed().as_secs_f64());
                    let drops = sub.drops();
                    if drops > last_drops {
                        t.metrics.readings_skipped.inc_by(drops - last_drops);
                        last_drops = drops;
                    }
                }
                Err(_) => break,
            },
            s = samples.recv() => if let Some((subject, v, ts)) = s {
                t.engine.on_value(&subject, &Value::F64(v), Quality::GOOD, ts, &mut t.out);
                while let Ok((subject, v, ts)) = samples.try_recv() {
                    t.engine.on_value(&subject, &Value::F64(v), Quality::GOOD, ts, &mut t.out);
                }
            },
            _ = tick.tick() => t.engine.tick(now_ns(), &mut t.out),
        }
        t.finish_step();
    }
    // Last words: what is queued goes out if the bus still takes it.
    t.finish_step();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::RuleConfig;

    fn alarm(now: u64) -> Alarm {
        let r: RuleConfig = serde_json::from_value(serde_json::json!({
            "name": "hot", "tag": "d.t", "kind": "high", "limit": 1
        }))
        .unwrap();
        Alarm::new(&r.compile().unwrap(), "d.t".into(), now)
    }

    #[test]
    fn the_state_file_round_trips_and_a_corrupt_one_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        assert!(load_state(&path).is_empty(), "no file: no state");
        let a = alarm(5);
        save_state(&path, &[&a]).unwrap();
        let back = load_state(&path);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].id, a.id);
        assert_eq!(back[0].since_ns, 5);
        assert!(!path.with_extension("json.tmp").exists(), "the temporary file was renamed over the state");

        std::fs::write(&path, b"{\"version\":1,\"alarms\":[{\"id\":").unwrap();
        assert!(load_state(&path).is_empty(), "a torn file: alarms start from normal");
        assert!(path.with_extension("json.corrupt").exists(), "and the damaged file is kept for a look");
        assert!(!path.exists());
        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert!(load_state(&path).is_empty(), "garbage too");
    }

    #[test]
    fn a_state_file_that_cannot_be_written_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        // The state's directory is a file: every write fails.
        std::fs::write(dir.path().join("alarms"), b"").unwrap();
        let a = alarm(1);
        assert!(save_state(&dir.path().join(STATE_FILE), &[&a]).is_err());
    }
}
