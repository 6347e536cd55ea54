//! `edge-gateway run`: opens the bus (and its WAL), the store, history, the
//! cache, the WebSocket hub, the drivers, the connectors and the API, then
//! waits for SIGINT or SIGTERM and shuts down in order: stop accepting
//! requests, stop the drivers, stop history and the connectors (what they
//! have not written or delivered stays in the WAL), close the bus (flushing
//! and syncing the WAL), close the store.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gateway_alarms::{AlarmMetrics, AlarmService};
use gateway_api::{ApiMetrics, AppState, Auth, Devices, LatestCache, Parts, WsHub};
use gateway_bus::{Bus, BusError, BusMetrics, Preset};
use gateway_connectors::{ConnectorMetrics, Connectors};
use gateway_drivers::DriverManager;
use gateway_store::{History, HistoryMetrics, Store};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Logs to stderr at `level` (unless `RUST_LOG` says otherwise), as text
/// lines or as one JSON object per line.
pub fn init_logging(level: &str, format: crate::config::LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Text => fmt.with_ansi(ansi).try_init(),
        // Fields at the top level (`"device":"plc1"`), not nested, so a log
        // shipper's queries read like the text form's `device=plc1`.
        crate::config::LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

/// Shows the first administrator's password, once: only its hash is kept,
/// so this is the one chance to read it (as Jupyter prints its token).
fn announce_first_admin(user: &str, password: &str) {
    tracing::warn!(user, "No administrator existed: one was created; its password is printed once on stderr.");
    eprintln!(
        "\n  ==============================================================\n  \
         edge-gateway created the first administrator (shown only now):\n\n    \
         user:     {user}\n    password: {password}\n\n  \
         Log in with POST /api/v1/auth/login, or make a token for a\n  \
         machine: edge-gateway token create NAME --role admin\n  \
         Change it: edge-gateway user passwd {user}\n  \
         ==============================================================\n"
    );
}

/// Raises the soft open-files limit to the hard limit; returns the new soft
/// limit. The soft limit (often 1,024) only protects programs that use
/// `select()`; the gateway needs one descriptor per connection (1,000
/// WebSocket clients by default) besides the WAL, the database and the
/// drivers, and the API caps its connections below whatever limit holds.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// Runs the gateway (its configuration read from `source`, None: the
/// built-in default) until a signal says stop; SIGHUP reloads.
pub fn run(cfg: Config, source: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let open_files = raise_nofile_limit();
    tracing::debug!(open_files, "Open-files limit.");
    let malloc_settings = crate::malloc::tune(cfg.bus.preset);
    tracing::debug!(malloc_settings, "Allocator settings applied.");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("gateway").build()?;
    rt.block_on(run_async(cfg, source))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGTERM; only Ctrl-C stops the gateway.");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// The memory preset's last step of start-up (`pages.rs`): the code that
/// ran only to start leaves memory. A refusal is logged, never fatal.
fn release_startup_code() {
    let (_, file_before) = crate::bench::probe::rss_parts();
    match crate::pages::release_code() {
        Ok(r) => {
            let (_, file_after) = crate::bench::probe::rss_parts();
            tracing::info!(
                mappings = r.mappings,
                library_mappings = r.libraries,
                file_backed_mb_before = file_before as f64 / 1e6,
                file_backed_mb_after = file_after as f64 / 1e6,
                "memory_optimized: start-up code paged out; what runs again is read back from the executable (the C libraries' from memory)."
            );
        }
        Err(e) => tracing::warn!(error = %e, "memory_optimized: the kernel kept the start-up code in memory."),
    }
}

/// A started gateway: everything `run` opens, wired the one way it is wired
/// (`edge-gateway bench` measures this same assembly).
pub struct Running {
    /// The bus (and its WAL).
    pub bus: Bus,
    store: Store,
    /// History, when `[history] enabled`.
    pub history: Option<History>,
    devices: Arc<Devices>,
    /// Where the API listens (`api.bind`, with the port resolved).
    pub addr: SocketAddr,
    connectors: Arc<tokio::sync::Mutex<Option<Connectors>>>,
    /// Live reconfiguration (SIGHUP, `POST /api/v1/system/reload`).
    pub reloader: Arc<crate::reload::Reloader>,
    /// The alarm rules and service, when `[alarms] enabled`.
    pub alarms: Option<Arc<gateway_api::alarms::Alarms>>,
    notifiers: Vec<gateway_alarms::Notifier>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Held until the gateway has stopped.
    _data_lock: std::fs::File,
}

/// The lock file in the data directory, held while a gateway runs.
const DATA_DIR_LOCK: &str = "edge-gateway.lock";

/// WAL cursors that nothing in this configuration reads any more (a
/// connector removed from the file, history turned off) would hold the log's
/// data forever: up to `wal_max_bytes`, and then, with `wal_overflow =
/// "block"`, the whole gateway. They are forgotten, with a warning naming
/// them. A connector still in the file that is not running (disabled, or it
/// failed to start) keeps its place, so that it sends its backlog once it
/// runs again; that is said too. Called once every reader has subscribed.
pub(crate) fn forget_orphan_cursors(bus: &Bus, cfg: &Config) {
    let Some(wal) = bus.wal() else { return };
    let held = bus.subscriber_names();
    let next = wal.next_seq();
    for (name, pos) in wal.cursors() {
        if held.contains(&name) {
            continue;
        }
        let behind = next.saturating_sub(pos);
        let webhook = name.strip_prefix("alarm-notify-").is_some_and(|n| cfg.alarms.notify.iter().any(|t| t.name == n));
        if webhook
            || cfg.connectors.iter().any(|c| name.strip_suffix(c.name.as_str()).is_some_and(|k| k.ends_with('-')))
        {
            tracing::warn!(cursor = %name, behind, "A connector in the configuration is not running: the write-ahead log keeps what it has not sent (up to wal_max_bytes).");
            continue;
        }
        match wal.remove_cursor(&name) {
            Ok(_) => tracing::warn!(
                cursor = %name,
                behind,
                "The write-ahead log had a reader that this configuration no longer has (a connector removed, or history turned off): its place is forgotten, so it no longer holds the log's data."
            ),
            Err(e) => {
                tracing::warn!(cursor = %name, error = %e, "Cannot forget a write-ahead log cursor nothing reads.")
            }
        }
    }
}

/// Takes the data directory's lock (`flock`, released when the process
/// ends, however it ends), or fails naming the directory if another gateway
/// holds it.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join(DATA_DIR_LOCK);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another edge-gateway is using {} (stop it, or give this one another --data-dir)",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock the data directory ({})", path.display()))
        }
    }
}

/// Makes a write past the file-size limit (`ulimit -f`) fail with `EFBIG`
/// instead of killing the process: the kernel's SIGXFSZ terminates it
/// silently by default. tokio's handler stays installed for the life of the
/// process; the WAL and the store then report the failing writes like a
/// full disk, and this logs each signal.
fn survive_file_size_limit() {
    let kind = tokio::signal::unix::SignalKind::from_raw(nix::sys::signal::Signal::SIGXFSZ as i32);
    match tokio::signal::unix::signal(kind) {
        Ok(mut signals) => {
            tokio::spawn(async move {
                while signals.recv().await.is_some() {
                    tracing::warn!("A write went past the file-size limit (ulimit -f); it fails like on a full disk.");
                }
            });
        }
        Err(e) => tracing::warn!(
            error = %e,
            "Cannot handle SIGXFSZ: a write past the file-size limit (ulimit -f) would stop the gateway."
        ),
    }
}

impl Running {
    /// Opens the bus, store, cache, hub, connectors, drivers and API, in that
    /// order (connectors subscribe before any driver publishes); a reload
    /// reads the built-in default configuration.
    pub async fn start(cfg: &Config) -> anyhow::Result<Running> {
        Self::start_from(cfg, None).await
    }

    /// The same for a configuration read from `source` (None: the built-in
    /// default), which a reload reads again.
    pub async fn start_from(cfg: &Config, source: Option<std::path::PathBuf>) -> anyhow::Result<Running> {
        let data_dir = cfg.gateway.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        // Before the WAL and the store: they may live elsewhere (wal_dir, a
        // database URL), but two gateways must never share a data directory.
        let data_lock = lock_data_dir(&data_dir)?;
        // Before anything reads the directory: a newer gateway's data is refused, not misread.
        crate::format::check(&data_dir)?;
        let mut registry = Registry::default();
        let bus_metrics = Arc::new(BusMetrics::new(&mut registry));
        let bus = Bus::open(cfg.bus.clone(), bus_metrics).map_err(|e| match e {
            BusError::Wal(gateway_wal::WalError::Locked(dir)) => anyhow::anyhow!(
                "another edge-gateway is using {} (stop it, or give this one another --data-dir)",
                dir.display()
            ),
            e => anyhow::Error::new(e).context("cannot open the bus"),
        })?;
        if let Some(w) = bus.wal() {
            let r = w.recovery_report();
            tracing::info!(
                dir = %w.dir().display(),
                records = r.records,
                next_seq = r.next_seq,
                cursors = r.cursors.len(),
                clean = r.is_clean(),
                lost_seqs = r.lost_seqs,
                ms = r.duration.as_millis() as u64,
                "Write-ahead log opened."
            );
        }
        let store = Store::open(&cfg.database, &data_dir).await.context("cannot open the database")?;
        let auth = Arc::new(Auth::new(store.clone(), cfg.api.auth.clone(), cfg.api.bind));
        if let Some((user, password)) = auth.ensure_admin().await.context("cannot create the first administrator")? {
            announce_first_admin(&user, &password);
        }
        // Before anything can be asked to write, so every command is recorded.
        gateway_api::command_audit::spawn(&bus, auth.clone())?;
        // Before the drivers publish, so history misses nothing.
        let history = if cfg.history.enabled {
            let metrics = Arc::new(HistoryMetrics::new(&mut registry));
            let h = History::open(&cfg.history, &cfg.database, &data_dir, metrics)
                .await
                .context("cannot open the history database")?;
            h.start(&bus).await.context("cannot start recording history")?;
            Some(h)
        } else {
            None
        };
        // Webhooks read alarm events from cursors of their own.
        let mut notifiers = Vec::new();
        if cfg.alarms.enabled && !cfg.alarms.notify.is_empty() {
            let metrics = Arc::new(gateway_alarms::NotifyMetrics::new(&mut registry));
            for n in &cfg.alarms.notify {
                let notifier = gateway_alarms::notify::spawn(n, &bus, metrics.clone(), &cfg.gateway.name)
                    .with_context(|| format!("cannot start the webhook {:?} (alarms.notify)", n.name))?;
                notifiers.push(notifier);
            }
        }
        // Before the drivers publish, so no reading goes unevaluated.
        let alarms = if cfg.alarms.enabled {
            let metrics = Arc::new(AlarmMetrics::new(&mut registry));
            let system_rules = cfg.alarms.system.rules(cfg.bus.pause_hi, cfg.bus.resume_lo);
            let service =
                AlarmService::spawn(&bus, Vec::new(), &data_dir, metrics).context("cannot start the alarm service")?;
            let alarms =
                gateway_api::alarms::Alarms::load(service, store.clone(), cfg.alarms.rules.clone(), system_rules)
                    .await
                    .context("cannot load the alarm rules")?;
            Some(alarms)
        } else {
            None
        };
        let api_metrics = Arc::new(ApiMetrics::new(&mut registry));
        let cache = LatestCache::spawn(&bus)?;
        let ws = WsHub::spawn(&bus, cfg.api.clone(), api_metrics.clone(), cache.clone())?;
        if let Some(a) = &alarms {
            ws.attach_alarms(a.service().clone());
        }
        // Connectors subscribe before any driver publishes.
        let connector_metrics = Arc::new(ConnectorMetrics::new(&mut registry));
        let connectors = Arc::new(tokio::sync::Mutex::new(Some(Connectors::start(
            &cfg.connectors,
            &bus,
            connector_metrics.clone(),
            data_dir.clone(),
            &cfg.gateway.name,
        ))));
        forget_orphan_cursors(&bus, cfg);
        // Drivers keep what must outlast a restart (OPC UA certificates) under the data directory.
        let manager = Arc::new(DriverManager::new(bus.clone()).with_data_dir(data_dir.clone()));
        // The gateway's watch on itself; it ends when the bus closes.
        let watched_connectors = alarms.as_ref().map(|_| crate::health::WatchedConnectors::new(&cfg.connectors));
        if let (Some(a), Some(watched)) = (&alarms, &watched_connectors) {
            let probe = crate::health::GatewayProbe::new(manager.clone(), connector_metrics, watched.clone());
            gateway_alarms::spawn_sampler(
                a.service().clone(),
                bus.clone(),
                cfg.alarms.system.clone(),
                Some(Arc::new(probe)),
            );
        }
        let devices = Arc::new(
            Devices::load(store.clone(), manager, cache.clone(), &cfg.devices, cfg.security.clone())
                .await
                .context("cannot load the devices")?,
        );
        let listener = tokio::net::TcpListener::bind(cfg.api.bind)
            .await
            .with_context(|| format!("cannot listen on {} (api.bind)", cfg.api.bind))?;
        let addr = listener.local_addr()?;
        // Self-tuning follows the [tuning] section across reloads.
        let (tuning_tx, tuning_rx) = tokio::sync::watch::channel(cfg.tuning.clone());
        crate::tuning::spawn(bus.clone(), tuning_rx, Arc::new(crate::tuning::TuningMetrics::new(&mut registry)));
        let reloader = Arc::new(
            crate::reload::Reloader::new(
                bus.clone(),
                source,
                cfg.clone(),
                devices.clone(),
                connectors.clone(),
                alarms.clone(),
                tuning_tx,
            )
            .with_health(watched_connectors),
        );
        let hook: gateway_api::ReloadHook = {
            let r = reloader.clone();
            gateway_api::ReloadHook(Arc::new(move || {
                let r = r.clone();
                Box::pin(async move { r.reload().await })
            }))
        };
        let state = AppState::new(Parts {
            bus: bus.clone(),
            cache,
            devices: devices.clone(),
            store: store.clone(),
            registry: Arc::new(registry),
            metrics: api_metrics,
            ws,
            cfg: cfg.api.clone(),
            auth,
            preset: cfg.bus.preset.to_string(),
            history: history.clone(),
            alarms: alarms.clone(),
            reload: Some(hook),
            loaded: reloader.loaded(),
        });
        let server = gateway_api::Server::new(listener, state).map_err(|e| e.under("api"))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Before the API answers: once it is healthy, start-up is over.
        if cfg.bus.preset == Preset::MemoryOptimized {
            release_startup_code();
        }
        // Run until the runtime ends; they hold nothing that needs a stop.
        drop(crate::malloc::spawn_trimmer(cfg.bus.preset));
        drop(crate::pages::spawn_releaser(cfg.bus.preset));
        let server = tokio::spawn(server.run(async move {
            let _ = stop_rx.await;
        }));
        Ok(Running {
            bus,
            store,
            history,
            devices,
            addr,
            connectors,
            reloader,
            alarms,
            notifiers,
            stop: stop_tx,
            server,
            _data_lock: data_lock,
        })
    }

    /// Shuts down in order: stop accepting requests, stop the drivers, stop
    /// history (it writes what it took) and the connectors (what they have
    /// not delivered stays in the WAL), close the bus (flushing and syncing
    /// the WAL), close the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.devices.stop_all().await;
        if let Some(h) = &self.history {
            h.close().await;
        }
        if let Some(c) = self.connectors.lock().await.take() {
            c.stop().await;
        }
        for n in self.notifiers {
            n.stop().await;
        }
        self.bus.close().await.context("closing the bus (flushing the WAL)")?;
        self.store.close().await;
        // The server closes the WebSockets and lets requests in flight finish;
        // past 5 s the rest are cut when the runtime stops.
        if tokio::time::timeout(Duration::from_secs(5), self.server).await.is_err() {
            tracing::warn!("Connections still open after 5 s; closing them.");
        }
        Ok(())
    }
}

async fn run_async(cfg: Config, source: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    survive_file_size_limit();
    let gw = Running::start_from(&cfg, source).await?;
    let addr = gw.addr;
    let scheme = if cfg.api.tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, devices = gw.devices.len(), "edge-gateway is running: {scheme}://{addr}/ (live values), /api/v1, /ws, /metrics.");

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                match gw.reloader.reload().await {
                    Ok(changes) => tracing::info!(%changes, "SIGHUP: configuration reloaded."),
                    Err(e) => tracing::error!(error = %e.message, "SIGHUP: the configuration was not reloaded; nothing changed."),
                }
            }
        }
    }
    tracing::info!("Shutting down.");
    gw.stop().await?;
    tracing::info!("Stopped.");
    Ok(())
}
