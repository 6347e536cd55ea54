//! Device management: the configured devices, kept in the store, mirrored in
//! memory for fast lookups (command checks), and applied to the driver
//! manager, so a device created, changed or deleted over the API persists
//! across restarts and takes effect at once, restarting that device alone.
//!
//! Devices from the config file are upserted at start and belong to the file:
//! the API refuses to change them (409), because the next start would
//! silently undo the change.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use gateway_drivers::{DeviceConfig, DevicePolicy, DriverManager, TagConfig};
use gateway_model::TagId;
use gateway_store::{DeviceRecord, Source, Store, TagRecord};
use serde_json::{Map, Value};

use crate::cache::LatestCache;
use crate::error::ApiError;

/// Converts a device to its stored form.
pub fn to_record(dev: &DeviceConfig, source: Source) -> DeviceRecord {
    let mut params = match dev.to_json() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for k in ["name", "driver", "enabled", "poll_interval_ms", "tags"] {
        params.remove(k);
    }
    let tags = dev
        .tags
        .iter()
        .map(|t| {
            let mut p = match t.to_json() {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            p.remove("name");
            p.remove("writable");
            TagRecord { name: t.name.clone(), writable: t.writable, params: p }
        })
        .collect();
    DeviceRecord {
        name: dev.name.clone(),
        driver: dev.driver().to_owned(),
        enabled: dev.enabled,
        poll_interval_ms: dev.poll_interval_ms,
        params,
        tags,
        source,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

/// Reads a device back from its stored form.
pub fn from_record(rec: &DeviceRecord) -> Result<DeviceConfig, gateway_drivers::FieldError> {
    let mut m = rec.params.clone();
    m.insert("name".into(), rec.name.clone().into());
    m.insert("driver".into(), rec.driver.clone().into());
    m.insert("enabled".into(), rec.enabled.into());
    m.insert("poll_interval_ms".into(), rec.poll_interval_ms.into());
    let tags = rec
        .tags
        .iter()
        .map(|t| {
            let mut p = t.params.clone();
            p.insert("name".into(), t.name.clone().into());
            p.insert("writable".into(), t.writable.into());
            Value::Object(p)
        })
        .collect();
    m.insert("tags".into(), Value::Array(tags));
    DeviceConfig::from_json(Value::Object(m))
}

/// The configured devices: kept in the store, mirrored in memory for
/// lookups, and applied to the driver manager. Changes are serialised, one
/// at a time.
pub struct Devices {
    store: Store,
    manager: Arc<DriverManager>,
    cache: Arc<LatestCache>,
    map: RwLock<BTreeMap<String, (Arc<DeviceConfig>, Source)>>,
    /// What devices may reach (`[security]`), checked before a device is stored.
    policy: DevicePolicy,
    /// One change at a time keeps the store, the map and the drivers in step.
    write: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices").finish_non_exhaustive()
    }
}

impl Devices {
    /// Upserts the config file's devices (the store removes config devices no
    /// longer in the file), loads every stored device and starts its driver. A
    /// stored device that cannot be read or no longer validates is logged and
    /// skipped, never fatal.
    pub async fn load(
        store: Store,
        manager: Arc<DriverManager>,
        cache: Arc<LatestCache>,
        from_file: &[DeviceConfig],
        policy: DevicePolicy,
    ) -> Result<Devices, gateway_store::StoreError> {
        let records: Vec<DeviceRecord> = from_file.iter().map(|d| to_record(d, Source::Config)).collect();
        let sync = store.sync_config_devices(&records).await?;
        tracing::info!(
            created = ?sync.created,
            updated = ?sync.updated,
            unchanged = sync.unchanged.len(),
            removed = ?sync.removed,
            "Devices from the config file stored."
        );
        for name in &sync.skipped {
            tracing::warn!(device = %name, "The config file defines a device that was created over the API; keeping the API's version.");
        }
        let devices = Devices {
            store,
            manager,
            cache,
            map: RwLock::new(BTreeMap::new()),
            policy,
            write: tokio::sync::Mutex::new(()),
        };
        let (readable, damaged) = devices.store.list_readable_devices().await?;
        for (name, reason) in damaged {
            tracing::error!(device = %name, %reason, "Stored device cannot be read; not starting it (delete it over the API or fix the database).");
        }
        for rec in readable {
            match from_record(&rec).and_then(|dev| devices.policy.check(&dev).map(|()| dev)) {
                Ok(dev) => {
                    devices.manager.apply(dev.clone()).await;
                    devices.map_mut().insert(dev.name.clone(), (Arc::new(dev), rec.source));
                }
                Err(e) => {
                    tracing::error!(device = %rec.name, error = %e, "Stored device is not valid or reaches what [security] does not allow; not starting it (change or delete it over the API).")
                }
            }
        }
        Ok(devices)
    }

    /// Applies a new version of the config file's devices (a reload): stores
    /// them as [`Devices::load`] does and restarts the drivers of exactly the
    /// devices that were added or changed, stopping those removed from the
    /// file; every other driver keeps running. Devices made over the API are
    /// not touched.
    pub async fn reload_file(&self, from_file: &[DeviceConfig]) -> Result<gateway_store::SyncReport, ApiError> {
        let _w = self.write.lock().await;
        for d in from_file {
            self.policy.check(d).map_err(|e| ApiError::bad_request("not_allowed", e.to_string()))?;
        }
        let records: Vec<DeviceRecord> = from_file.iter().map(|d| to_record(d, Source::Config)).collect();
        let sync = self.store.sync_config_devices(&records).await?;
        for name in sync.created.iter().chain(&sync.updated) {
            if let Some(dev) = from_file.iter().find(|d| &d.name == name) {
                self.apply(dev.clone(), Source::Config).await;
            }
        }
        for name in &sync.removed {
            self.manager.stop(name).await;
            self.map_mut().remove(name);
            self.cache.forget_device(name);
        }
        tracing::info!(
            created = ?sync.created,
            updated = ?sync.updated,
            removed = ?sync.removed,
            unchanged = sync.unchanged.len(),
            "Devices reloaded from the config file."
        );
        Ok(sync)
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, (Arc<DeviceConfig>, Source)>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn map_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, (Arc<DeviceConfig>, Source)>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// All devices, by name.
    pub fn list(&self) -> Vec<(Arc<DeviceConfig>, Source)> {
        self.map().values().cloned().collect()
    }

    /// The device named `name` and where it was defined; `None` if unknown.
    pub fn get(&self, name: &str) -> Option<(Arc<DeviceConfig>, Source)> {
        self.map().get(name).cloned()
    }

    /// The configured tag behind a tag id, if any.
    pub fn tag(&self, id: &TagId) -> Option<TagConfig> {
        self.map().get(id.device()).and_then(|(d, _)| d.tag(id.point()).cloned())
    }

    /// Number of configured devices, disabled ones included.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no device is configured (none in the file or the store).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The driver manager the devices are applied to, for their running
    /// status.
    pub fn manager(&self) -> &DriverManager {
        &self.manager
    }

    /// 409 if device `name` belongs to the config file.
    pub fn owned_by_file(&self, name: &str) -> Result<(), ApiError> {
        if matches!(self.get(name), Some((_, Source::Config))) {
            return Err(ApiError::conflict(
                "defined_in_config_file",
                format!(
                    "device {name:?} is defined in the config file; change it there (a change made here would be undone at the next start)"
                ),
            ));
        }
        Ok(())
    }

    async fn apply(&self, dev: DeviceConfig, source: Source) {
        self.cache.forget_device(&dev.name);
        self.manager.apply(dev.clone()).await;
        self.map_mut().insert(dev.name.clone(), (Arc::new(dev), source));
    }

    /// 400 if `dev` disagrees with another device about what they share (a serial line).
    fn check_shared(&self, dev: &DeviceConfig) -> Result<(), ApiError> {
        let others: Vec<DeviceConfig> =
            self.map().values().filter(|(d, _)| d.name != dev.name).map(|(d, _)| (**d).clone()).collect();
        dev.check_against(&others).map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
        self.policy.check(dev).map_err(|e| ApiError::bad_request("not_allowed", e.to_string()))
    }

    /// Creates a device; 409 if the name is taken.
    pub async fn create(&self, dev: DeviceConfig) -> Result<(), ApiError> {
        let _w = self.write.lock().await;
        if self.get(&dev.name).is_some() {
            return Err(ApiError::conflict("exists", format!("device {:?} already exists", dev.name)));
        }
        self.check_shared(&dev)?;
        self.store.create_device(&to_record(&dev, Source::Api)).await?;
        self.apply(dev, Source::Api).await;
        Ok(())
    }

    /// Creates or replaces a device; returns whether it was created.
    pub async fn replace(&self, dev: DeviceConfig) -> Result<bool, ApiError> {
        let _w = self.write.lock().await;
        self.owned_by_file(&dev.name)?;
        self.check_shared(&dev)?;
        let created = self.store.upsert_device(&to_record(&dev, Source::Api)).await?;
        self.apply(dev, Source::Api).await;
        Ok(created)
    }

    /// Deletes a device and stops its driver.
    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let _w = self.write.lock().await;
        self.owned_by_file(name)?;
        if !self.store.delete_device(name).await? {
            return Err(ApiError::not_found("device", name));
        }
        self.manager.stop(name).await;
        self.map_mut().remove(name);
        self.cache.forget_device(name);
        Ok(())
    }

    /// Creates or replaces a tag of a device (restarting its driver); returns whether it was created.
    pub async fn upsert_tag(&self, device: &str, tag: TagConfig) -> Result<bool, ApiError> {
        self.put_tag(device, tag, false).await
    }

    /// Creates a tag of a device (restarting its driver); 409 if it exists.
    /// The check and the change happen under the one write lock, so of
    /// concurrent creations of the same tag exactly one succeeds.
    pub async fn create_tag(&self, device: &str, tag: TagConfig) -> Result<(), ApiError> {
        self.put_tag(device, tag, true).await.map(|_| ())
    }

    async fn put_tag(&self, device: &str, tag: TagConfig, only_new: bool) -> Result<bool, ApiError> {
        let _w = self.write.lock().await;
        self.owned_by_file(device)?;
        let (dev, _) = self.get(device).ok_or_else(|| ApiError::not_found("device", device))?;
        let mut next = (*dev).clone();
        let created = match next.tags.iter_mut().find(|t| t.name == tag.name) {
            Some(_) if only_new => {
                return Err(ApiError::conflict("exists", format!("tag {device}.{} already exists", tag.name)));
            }
            Some(t) => {
                *t = tag;
                false
            }
            None => {
                next.tags.push(tag);
                true
            }
        };
        next.validate().map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
        self.store.upsert_device(&to_record(&next, Source::Api)).await?;
        self.apply(next, Source::Api).await;
        Ok(created)
    }

    /// Adds imported tags to a device (restarting its driver once); 409,
    /// naming them, if tags of those names exist.
    pub async fn import_tags(&self, device: &str, tags: Vec<TagConfig>) -> Result<(), ApiError> {
        let _w = self.write.lock().await;
        self.owned_by_file(device)?;
        let (dev, _) = self.get(device).ok_or_else(|| ApiError::not_found("device", device))?;
        let taken: Vec<&str> = tags.iter().filter(|t| dev.tag(&t.name).is_some()).map(|t| t.name.as_str()).collect();
        if !taken.is_empty() {
            return Err(ApiError::conflict(
                "exists",
                format!("device {device:?} already has tags named {}; give the nodes other names", taken.join(", ")),
            ));
        }
        let mut next = (*dev).clone();
        next.tags.extend(tags);
        next.validate().map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
        self.store.upsert_device(&to_record(&next, Source::Api)).await?;
        self.apply(next, Source::Api).await;
        Ok(())
    }

    /// Deletes a tag of a device (restarting its driver).
    pub async fn delete_tag(&self, device: &str, tag: &str) -> Result<(), ApiError> {
        let _w = self.write.lock().await;
        self.owned_by_file(device)?;
        let (dev, _) = self.get(device).ok_or_else(|| ApiError::not_found("device", device))?;
        let mut next = (*dev).clone();
        let before = next.tags.len();
        next.tags.retain(|t| t.name != tag);
        if next.tags.len() == before {
            return Err(ApiError::not_found("tag", &format!("{device}.{tag}")));
        }
        self.store.upsert_device(&to_record(&next, Source::Api)).await?;
        self.apply(next, Source::Api).await;
        Ok(())
    }

    /// Stops every driver (shutdown).
    pub async fn stop_all(&self) {
        self.manager.stop_all().await;
    }
}
