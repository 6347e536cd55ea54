//! Live reconfiguration (`SIGHUP`, `POST /api/v1/system/reload`): the
//! configuration file is read and validated whole first (a bad file changes
//! nothing, and the error names the field); then only the difference is
//! applied. Devices from the file that were added or changed get their
//! driver (re)started and removed ones stop; connectors are started, restarted
//! or stopped one by one; the file's alarm rules and the built-in rules'
//! thresholds are replaced (alarms of rules that remain keep their state);
//! `[tuning]` goes to the self-tuning controller.
//! The bus, the WAL and everything unchanged keep running, so no value in
//! flight is lost. Sections that need a restart to change (`[bus]`, `[api]`,
//! `[database]`, `[history]`, `[security]`, `[gateway]`, `[alarms]`'s
//! switch and webhooks) are named in the answer and the log, not applied.
//! What runs afterwards is rendered again, secrets masked, for
//! `GET /api/v1/system/config` ([`crate::masked`]).

use std::path::PathBuf;
use std::sync::Arc;

use gateway_api::{ApiError, Devices};
use gateway_connectors::Connectors;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::config::{self, Config};

/// What a reload needs: where the configuration comes from, the running
/// configuration, and the parts it changes.
pub struct Reloader {
    bus: gateway_bus::Bus,
    source: Option<PathBuf>,
    current: Mutex<Config>,
    devices: Arc<Devices>,
    connectors: Arc<Mutex<Option<Connectors>>>,
    alarms: Option<Arc<gateway_api::alarms::Alarms>>,
    tuning: tokio::sync::watch::Sender<crate::tuning::TuningConfig>,
    loaded: gateway_api::LoadedConfig,
    /// The connectors the health probe reports on, if it runs.
    health: Option<crate::health::WatchedConnectors>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").field("source", &self.source).finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for the gateway started with `cfg` (read from `source`,
    /// or the built-in default when `None`).
    pub fn new(
        bus: gateway_bus::Bus,
        source: Option<PathBuf>,
        cfg: Config,
        devices: Arc<Devices>,
        connectors: Arc<Mutex<Option<Connectors>>>,
        alarms: Option<Arc<gateway_api::alarms::Alarms>>,
        tuning: tokio::sync::watch::Sender<crate::tuning::TuningConfig>,
    ) -> Self {
        let loaded = gateway_api::LoadedConfig::new(crate::masked::masked(&cfg, source.as_deref()));
        Reloader { bus, source, current: Mutex::new(cfg), devices, connectors, alarms, tuning, loaded, health: None }
    }

    /// Keeps the health probe's list of connectors in step with reloads.
    pub fn with_health(mut self, watched: Option<crate::health::WatchedConnectors>) -> Self {
        self.health = watched;
        self
    }

    /// The running configuration, secrets masked; kept current by [`Reloader::reload`].
    pub fn loaded(&self) -> gateway_api::LoadedConfig {
        self.loaded.clone()
    }

    /// Reads, validates and applies the configuration; what changed, as JSON.
    /// One reload at a time; a refused file changes nothing.
    pub async fn reload(&self) -> Result<Value, ApiError> {
        let mut current = self.current.lock().await;
        // The data directory stays the one the gateway runs on.
        let new = config::load(self.source.as_deref(), Some(&current.gateway.data_dir))
            .map_err(|e| ApiError::bad_request("invalid_config", e.to_string()))?;
        let mut restart_needed = Vec::new();
        let mut differs = |name: &str, changed: bool| {
            if changed {
                restart_needed.push(name.to_owned());
            }
        };
        differs("gateway", new.gateway != current.gateway);
        differs("bus", new.bus != current.bus);
        differs("api", new.api != current.api);
        differs("database", new.database != current.database);
        differs("history", new.history != current.history);
        differs("security", new.security != current.security);
        differs("alarms.enabled", new.alarms.enabled != current.alarms.enabled);
        differs("alarms.notify", new.alarms.notify != current.alarms.notify);

        let mut connectors = self.connectors.lock().await;
        let Some(running) = connectors.as_mut() else {
            return Err(ApiError::conflict("stopping", "the gateway is stopping"));
        };
        let devices = self.devices.reload_file(&new.devices).await?;
        let connectors = running.apply(&new.connectors).await;
        if let Some(h) = &self.health {
            h.set(&new.connectors);
        }
        // A connector removed from the file would otherwise hold the WAL's
        // data (up to wal_max_bytes) until the next restart forgot its cursor.
        crate::run::forget_orphan_cursors(&self.bus, &new);
        let (rules_added, rules_removed) = match &self.alarms {
            Some(a) => {
                let system = new.alarms.system.rules(current.bus.pause_hi, current.bus.resume_lo);
                a.reload_fixed(new.alarms.rules.clone(), system).await?
            }
            None => (Vec::new(), Vec::new()),
        };
        let tuning_changed = new.tuning != current.tuning;
        if tuning_changed {
            self.tuning.send_replace(new.tuning.clone());
        }
        if !restart_needed.is_empty() {
            tracing::warn!(sections = ?restart_needed, "Reloaded; these sections changed and take effect only after a restart.");
        }
        tracing::info!(
            devices_changed = devices.created.len() + devices.updated.len() + devices.removed.len(),
            connectors_changed = connectors.started.len() + connectors.restarted.len() + connectors.stopped.len(),
            "Configuration reloaded."
        );
        // What runs now: the new file, except the sections that wait for a restart.
        let keep = current.clone();
        *current = Config {
            gateway: keep.gateway,
            bus: keep.bus,
            api: keep.api,
            database: keep.database,
            history: keep.history,
            security: keep.security,
            alarms: gateway_alarms::AlarmsConfig {
                enabled: keep.alarms.enabled,
                notify: keep.alarms.notify,
                ..new.alarms
            },
            tuning: new.tuning,
            devices: new.devices,
            connectors: new.connectors,
            // What they are about ([bus]) waits for a restart too.
            notes: keep.notes,
        };
        self.loaded.set(crate::masked::masked(&current, self.source.as_deref()));
        Ok(json!({
            "devices": {
                "created": devices.created, "updated": devices.updated, "removed": devices.removed,
                "unchanged": devices.unchanged.len(), "skipped": devices.skipped,
            },
            "connectors": connectors,
            "alarm_rules": { "added": rules_added, "removed": rules_removed },
            "tuning_changed": tuning_changed,
            "restart_needed": restart_needed,
        }))
    }
}
