//! The store itself: a connection pool over SQLite or PostgreSQL (through
//! sqlx's `Any` driver, so the same queries serve both) and the device and tag
//! operations on it.
//!
//! Every change is one transaction, so a reader sees a device with all of its
//! old tags or all of its new ones, never a mix. On SQLite, writes begin with
//! `BEGIN IMMEDIATE`, taking the write lock up front: a transaction that read
//! first and upgraded later could fail at once with `SQLITE_BUSY` instead of
//! waiting for the busy timeout. On PostgreSQL, the device row is locked by the
//! first statement that changes it, which serialises changes to one device.
//!
//! Reads are a single `SELECT` (devices joined with their tags), so they see
//! one consistent snapshot on both databases without a transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use sqlx::any::{Any, AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, ConnectOptions, Connection, Executor, Row};

use crate::config::{DEFAULT_SQLITE_FILE, DatabaseConfig, dialect_of};
use crate::error::is_bad_sqlite_file;
use crate::record::{DeviceRecord, Source, TagRecord};
use crate::{StoreError, migrate};
use gateway_model::FieldError;

/// The database behind a [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// A SQLite file (the default).
    Sqlite,
    /// A PostgreSQL server, for a `postgres:` or `postgresql:` URL.
    Postgres,
}

/// What [`Store::sync_config_devices`] did, by device name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// In the file, not yet stored: created.
    pub created: Vec<String>,
    /// Stored from an earlier version of the file (or unreadable): replaced.
    pub updated: Vec<String>,
    /// Stored exactly as in the file: not touched (timestamps kept).
    pub unchanged: Vec<String>,
    /// Stored from the file but no longer in it: deleted with their tags.
    pub removed: Vec<String>,
    /// In the file, but a device of that name was created over the API: left
    /// alone (the file's definition is not applied).
    pub skipped: Vec<String>,
}

/// The metadata store for devices and tags. Cheap to clone: clones share one
/// connection pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// Why the last write failed, if the database itself failed it (full,
    /// unavailable) and no write has succeeded since: reads may work while
    /// writes do not, and [`Store::health`] must say so.
    write_failure: Arc<Mutex<Option<StoreError>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dialect", &self.dialect).field("pool_size", &self.pool.size()).finish()
    }
}

/// A device ready to be written: checked and converted to column values.
struct Encoded {
    name: String,
    driver: String,
    enabled: i64,
    poll_interval_ms: i64,
    params: String,
    source: Source,
    tags: Vec<EncodedTag>,
}

struct EncodedTag {
    name: String,
    writable: i64,
    params: String,
}

/// A stored device as read back: its source separately, so that a device whose
/// other columns are damaged can still be told apart as a config or API device.
struct Loaded {
    source: Option<Source>,
    record: Result<DeviceRecord, String>,
}

const SELECT_DEVICES: &str = "SELECT d.name AS name, d.driver AS driver, d.enabled AS enabled, \
     d.poll_interval_ms AS poll_interval_ms, d.params AS params, d.source AS source, \
     d.created_at_ms AS created_at_ms, d.updated_at_ms AS updated_at_ms, \
     t.name AS tag_name, t.position AS tag_position, t.writable AS tag_writable, t.params AS tag_params \
     FROM devices d LEFT JOIN tags t ON t.device = d.name";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn seconds(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl Store {
    /// Opens (creating if needed) the database `cfg` names, or the SQLite file
    /// [`DEFAULT_SQLITE_FILE`] in `data_dir` when it names none, and brings its
    /// schema up to date.
    ///
    /// Fails if the configuration is invalid, the database cannot be reached,
    /// its schema was written by a newer gateway ([`StoreError::Schema`]), or
    /// the SQLite file is not a database ([`StoreError::BadFile`]). An empty
    /// (0-byte) SQLite file is a valid empty database: it is used, with a
    /// warning that names it, since it usually means that the data it should
    /// hold was lost.
    pub async fn open(cfg: &DatabaseConfig, data_dir: &Path) -> Result<Store, StoreError> {
        cfg.validate()?;
        sqlx::any::install_default_drivers();
        let (url, dialect, file) = resolve_url(cfg, data_dir)?;
        let Some(file) = file else { return Self::open_url(cfg, &url, dialect, data_dir).await };
        if std::fs::metadata(&file).is_ok_and(|m| m.len() == 0) {
            tracing::warn!(
                file = %file.display(),
                "The SQLite database file is empty (0 bytes): starting with an empty store. A crash while it was \
                 created or a full disk can leave it so; if it held devices, restore it from a backup."
            );
        }
        Self::open_url(cfg, &url, dialect, data_dir).await.map_err(|e| match e {
            StoreError::Db(e) if is_bad_sqlite_file(&e) => StoreError::BadFile { path: file, reason: e.to_string() },
            e => e,
        })
    }

    async fn open_url(cfg: &DatabaseConfig, url: &str, dialect: Dialect, data_dir: &Path) -> Result<Store, StoreError> {
        let connect = AnyConnectOptions::from_str(url)?;
        // Keep sqlx's level for slow statements (warn) and set only the
        // threshold; naming the level would need the `log` crate.
        let slow_level = connect.log_settings.slow_statements_level;
        let connect = connect.log_slow_statements(slow_level, Duration::from_millis(cfg.slow_query_threshold_ms));

        if dialect == Dialect::Sqlite {
            enable_wal(&connect).await?;
        }
        // SQLite takes the busy timeout as a C int of milliseconds.
        let busy_timeout_ms = cfg.acquire_timeout_s.saturating_mul(1000).min(i32::MAX as u64);
        let pool = AnyPoolOptions::new()
            .max_connections(cfg.max_connections)
            .min_connections(cfg.min_connections)
            .acquire_timeout(seconds(cfg.acquire_timeout_s))
            .idle_timeout(seconds(cfg.idle_timeout_s))
            .max_lifetime(seconds(cfg.max_lifetime_s))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // Per connection: SQLite forgets both when a connection
                        // closes. Foreign keys make deleting a device delete its
                        // tags; the busy timeout makes a writer wait for another
                        // instead of failing.
                        let pragmas = format!("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {busy_timeout_ms};");
                        conn.execute(AssertSqlSafe(pragmas)).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await?;

        let store = Store { pool, dialect, write_failure: Arc::new(Mutex::new(None)) };
        if let Err(e) = migrate::migrator(dialect).run(&store.pool).await {
            // Closing releases the connection that may still hold the
            // migration lock (PostgreSQL advisory lock).
            store.pool.close().await;
            return Err(migrate::error(e, dialect));
        }
        tracing::info!(
            dialect = ?dialect,
            url = %cfg.redacted_url().unwrap_or_else(|| data_dir.join(DEFAULT_SQLITE_FILE).display().to_string()),
            schema_version = migrate::latest_version(dialect),
            "Opened the metadata store."
        );
        Ok(store)
    }

    /// Which database the configured URL's scheme chose (SQLite without a URL).
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The connection pool, for diagnostics (pool size, idle connections) and
    /// tests. Writing through it bypasses the store's checks.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Every device with its tags, sorted by name (byte order, the same on both
    /// databases), tags in their stored order.
    ///
    /// Fails with [`StoreError::Corrupt`] if any stored device cannot be read.
    pub async fn list_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let loaded = load(&mut conn, None).await?;
        loaded.into_iter().map(|(name, l)| l.record.map_err(|reason| StoreError::Corrupt { name, reason })).collect()
    }

    /// Every device that can be read, and the names of those that cannot
    /// (with the reason), so that one damaged row does not stop a start-up.
    pub async fn list_readable_devices(&self) -> Result<(Vec<DeviceRecord>, Vec<(String, String)>), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for (name, l) in load(&mut conn, None).await? {
            match l.record {
                Ok(r) => ok.push(r),
                Err(reason) => bad.push((name, reason)),
            }
        }
        Ok((ok, bad))
    }

    /// The device named `name`, if stored.
    pub async fn get_device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut loaded = load(&mut conn, Some(name)).await?;
        match loaded.remove(name) {
            None => Ok(None),
            Some(l) => l.record.map(Some).map_err(|reason| StoreError::Corrupt { name: name.to_owned(), reason }),
        }
    }

    /// Stores a new device with its tags. Fails with [`StoreError::Conflict`] if
    /// a device of that name exists. Sets both timestamps to now.
    pub async fn create_device(&self, device: &DeviceRecord) -> Result<(), StoreError> {
        let enc = encode(device, device.source)?;
        let now = now_ms();
        self.write(async |tx| {
            if !insert_device(tx, &enc, now).await? {
                return Err(StoreError::Conflict { what: "device", name: enc.name.clone() });
            }
            Ok(insert_tags(tx, &enc).await?)
        })
        .await
    }

    /// Stores a device, replacing the stored one of that name and all of its
    /// tags at once; returns whether it was created. A replaced device keeps its
    /// `created_at_ms`; `updated_at_ms` becomes now.
    pub async fn upsert_device(&self, device: &DeviceRecord) -> Result<bool, StoreError> {
        let enc = encode(device, device.source)?;
        self.write(async |tx| Ok(write_device(tx, &enc, now_ms()).await?)).await
    }

    /// Every alarm rule made over the API: `(name, body as JSON)`, by name.
    pub async fn list_alarm_rules(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT name, body FROM alarm_rules ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?))).collect()
    }

    /// Stores an alarm rule (its JSON `body`), replacing one of that name;
    /// returns whether it was created.
    pub async fn upsert_alarm_rule(&self, name: &str, body: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let (name, body) = (name.to_owned(), body.to_owned());
        self.write(async move |tx| {
            let updated = sqlx::query("UPDATE alarm_rules SET body = $2, updated_at_ms = $3 WHERE name = $1")
                .bind(&name)
                .bind(&body)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if updated.rows_affected() > 0 {
                return Ok(false);
            }
            sqlx::query("INSERT INTO alarm_rules (name, body, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $3)")
                .bind(&name)
                .bind(&body)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            Ok(true)
        })
        .await
    }

    /// Deletes an alarm rule; returns whether it existed.
    pub async fn delete_alarm_rule(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(async move |tx| {
            let done = sqlx::query("DELETE FROM alarm_rules WHERE name = $1").bind(&name).execute(&mut *tx).await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Deletes a device and its tags; returns whether it existed.
    pub async fn delete_device(&self, name: &str) -> Result<bool, StoreError> {
        // The tags go with it: ON DELETE CASCADE (foreign keys are enabled on
        // every SQLite connection).
        self.write(async |tx| {
            let done = sqlx::query("DELETE FROM devices WHERE name = $1").bind(name).execute(&mut *tx).await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Stores one tag of an existing device; returns whether it was created.
    /// A new tag goes after the others; a replaced one keeps its place. Fails
    /// with [`StoreError::NotFound`] if the device does not exist.
    pub async fn upsert_tag(&self, device: &str, tag: &TagRecord) -> Result<bool, StoreError> {
        let enc = encode_tag(device, tag)?;
        self.write(async |tx| {
            // Touching the device first checks that it exists and, on PostgreSQL,
            // locks it, so two new tags cannot take the same position.
            if !touch_device(tx, device, now_ms()).await? {
                return Err(StoreError::NotFound { what: "device", name: device.to_owned() });
            }
            let updated = sqlx::query("UPDATE tags SET writable = $3, params = $4 WHERE device = $1 AND name = $2")
                .bind(device)
                .bind(&enc.name)
                .bind(enc.writable)
                .bind(&enc.params)
                .execute(&mut *tx)
                .await?;
            let created = updated.rows_affected() == 0;
            if created {
                let position: i64 =
                    sqlx::query_scalar("SELECT COALESCE(MAX(position), -1) + 1 FROM tags WHERE device = $1")
                        .bind(device)
                        .fetch_one(&mut *tx)
                        .await?;
                insert_tag(tx, device, position, &enc).await?;
            }
            Ok(created)
        })
        .await
    }

    /// Deletes one tag of a device; returns whether it existed. The other tags
    /// keep their order.
    pub async fn delete_tag(&self, device: &str, tag: &str) -> Result<bool, StoreError> {
        self.write(async |tx| {
            let done = sqlx::query("DELETE FROM tags WHERE device = $1 AND name = $2")
                .bind(device)
                .bind(tag)
                .execute(&mut *tx)
                .await?;
            let deleted = done.rows_affected() > 0;
            if deleted {
                touch_device(tx, device, now_ms()).await?;
            }
            Ok(deleted)
        })
        .await
    }

    /// Makes the stored config-file devices match `devices` (the file's), in one
    /// transaction: creates the new ones, replaces changed ones (repairing
    /// unreadable ones), leaves identical ones untouched, and deletes stored
    /// config devices no longer in the file. Devices created over the API are
    /// left alone, even when the file has a device of the same name (reported
    /// in [`SyncReport::skipped`] and logged). Every device is stored with
    /// [`Source::Config`], whatever its `source` field says.
    pub async fn sync_config_devices(&self, devices: &[DeviceRecord]) -> Result<SyncReport, StoreError> {
        let mut seen = BTreeSet::new();
        let mut encoded = Vec::with_capacity(devices.len());
        for dev in devices {
            if !seen.insert(dev.name.as_str()) {
                return Err(StoreError::Invalid {
                    what: "device",
                    name: dev.name.clone(),
                    reason: "it appears twice in the config file".into(),
                });
            }
            encoded.push((encode(dev, Source::Config)?, dev));
        }

        let now = now_ms();
        self.write(async |tx| sync_devices(tx, &encoded, &seen, now).await).await
    }

    /// Checks that the database answers (`SELECT 1`) and that writes work:
    /// after a write failed because the database is full or unavailable, this
    /// fails with that error until a write succeeds again.
    pub async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        match &*lock(&self.write_failure) {
            Some(StoreError::Full(m)) => Err(StoreError::Full(m.clone())),
            Some(StoreError::Unavailable(m)) => Err(StoreError::Unavailable(m.clone())),
            _ => Ok(()),
        }
    }

    /// Closes every connection, waiting for those in use to be returned. Later
    /// operations (on any clone) fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs `f` in a write transaction and commits it. Whatever fails, the
    /// connection goes back to the pool outside any transaction, or is closed;
    /// the outcome is remembered for [`Store::health`].
    pub(crate) async fn write<T>(
        &self,
        f: impl AsyncFnOnce(&mut AnyConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_reporting(f, true).await
    }

    /// As [`Store::write`], for small appends (audit rows, sessions): their
    /// failure is remembered, but their success does not clear a failure. A
    /// nearly full database still takes a row that fits in a page it has,
    /// while it cannot store a device; health must keep saying so.
    pub(crate) async fn write_small<T>(
        &self,
        f: impl AsyncFnOnce(&mut AnyConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_reporting(f, false).await
    }

    async fn write_reporting<T>(
        &self,
        f: impl AsyncFnOnce(&mut AnyConnection) -> Result<T, StoreError>,
        success_clears_failure: bool,
    ) -> Result<T, StoreError> {
        let result = match self.pool.acquire().await {
            Ok(mut conn) => {
                let result = self.transact(&mut conn, f).await;
                if result.is_err() {
                    // sqlx rolls back a dropped transaction with a command queued on
                    // the connection. But SQLite rolls a transaction back by itself
                    // when a write fails with SQLITE_FULL or SQLITE_IOERR; sqlx's
                    // ROLLBACK then fails, its count of open transactions stays at
                    // one, and every later BEGIN on that pooled connection fails
                    // with "attempted to call begin_with at non-zero transaction
                    // depth". A round trip runs the queued rollback; a connection
                    // still counted inside a transaction is closed, not reused.
                    let _ = conn.ping().await;
                    if conn.is_in_transaction() {
                        tracing::warn!("Closing a database connection left inside a failed transaction.");
                        conn.close_on_drop();
                    }
                }
                result
            }
            Err(e) => Err(e.into()),
        };
        let mut failure = lock(&self.write_failure);
        match &result {
            Ok(_) if !success_clears_failure => {}
            Ok(_) => {
                if failure.take().is_some() {
                    tracing::info!("Database writes work again.");
                }
            }
            Err(e) if e.is_outage() => {
                if failure.is_none() {
                    tracing::error!(error = %e, "Database writes are failing.");
                }
                *failure = Some(match e {
                    StoreError::Full(m) => StoreError::Full(m.clone()),
                    _ => StoreError::Unavailable(e.to_string()),
                });
            }
            Err(_) => {}
        }
        result
    }

    async fn transact<T>(
        &self,
        conn: &mut AnyConnection,
        f: impl AsyncFnOnce(&mut AnyConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = match self.dialect {
            Dialect::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => conn.begin().await?,
        };
        let value = f(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The body of [`Store::sync_config_devices`], inside its transaction.
async fn sync_devices(
    tx: &mut AnyConnection,
    encoded: &[(Encoded, &DeviceRecord)],
    seen: &BTreeSet<&str>,
    now: i64,
) -> Result<SyncReport, StoreError> {
    let mut report = SyncReport::default();
    let stored = load(tx, None).await?;
    for (enc, dev) in encoded {
        match stored.get(&enc.name) {
            None => {
                write_device(tx, enc, now).await?;
                report.created.push(enc.name.clone());
            }
            Some(Loaded { source: Some(Source::Api), .. }) => {
                tracing::warn!(
                    device = %enc.name,
                    "The config file defines a device that was created over the API; keeping the API's \
                     device and ignoring the file's. Rename or delete one of them."
                );
                report.skipped.push(enc.name.clone());
            }
            Some(Loaded { record: Ok(old), .. }) if same_config(old, dev) => {
                report.unchanged.push(enc.name.clone());
            }
            Some(Loaded { record, .. }) => {
                if let Err(reason) = record {
                    tracing::warn!(device = %enc.name, reason = %reason, "Replacing an unreadable stored device with the config file's.");
                }
                write_device(tx, enc, now).await?;
                report.updated.push(enc.name.clone());
            }
        }
    }
    for (name, old) in &stored {
        if old.source == Some(Source::Config) && !seen.contains(name.as_str()) {
            sqlx::query("DELETE FROM devices WHERE name = $1").bind(name).execute(&mut *tx).await?;
            tracing::info!(device = %name, "Deleted a device that is no longer in the config file.");
            report.removed.push(name.clone());
        }
    }
    Ok(report)
}

/// The URL to connect to, its dialect and the SQLite file (None for
/// PostgreSQL and in-memory SQLite); creates the SQLite file's directory.
fn resolve_url(cfg: &DatabaseConfig, data_dir: &Path) -> Result<(String, Dialect, Option<PathBuf>), StoreError> {
    let create_dir =
        |dir: &Path| std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source });
    let Some(url) = &cfg.url else {
        // An absolute path, because in `sqlite://dir/file` the URL parser
        // would take `dir` for a host name.
        let dir =
            std::path::absolute(data_dir).map_err(|source| StoreError::Io { path: data_dir.to_path_buf(), source })?;
        create_dir(&dir)?;
        let file = dir.join(DEFAULT_SQLITE_FILE);
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&file).create_if_missing(true);
        return Ok((opts.to_url_lossy().to_string(), Dialect::Sqlite, Some(file)));
    };
    match dialect_of(url) {
        Some(Dialect::Sqlite) => {
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let mut file = None;
            if !in_memory {
                let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
                if let Some(parent) = opts.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
                    create_dir(parent)?;
                }
                file = Some(opts.get_filename().to_path_buf());
            }
            // Create the file if missing, unless the URL says otherwise.
            let has_mode = url.split_once('?').is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("mode=")));
            let url = match (has_mode, url.contains('?')) {
                (true, _) => url.clone(),
                (false, true) => format!("{url}&mode=rwc"),
                (false, false) => format!("{url}?mode=rwc"),
            };
            Ok((url, Dialect::Sqlite, file))
        }
        Some(Dialect::Postgres) => Ok((url.clone(), Dialect::Postgres, None)),
        // validate() has refused it already.
        None => Err(FieldError::new("url", "must start with `sqlite:`, `postgres:` or `postgresql:`").into()),
    }
}

/// Puts a SQLite database in write-ahead-log mode, so readers do not block the
/// writer and the other way round. The mode is stored in the file; it is set on
/// a lone connection before the pool opens because switching needs an
/// exclusive lock that the busy timeout does not wait for.
async fn enable_wal(connect: &AnyConnectOptions) -> Result<(), StoreError> {
    let mut conn = AnyConnection::connect_with(connect).await?;
    let mode: Result<String, _> = sqlx::query_scalar("PRAGMA journal_mode = WAL").fetch_one(&mut conn).await;
    conn.close().await?;
    let mode = mode?;
    if !mode.eq_ignore_ascii_case("wal") {
        // An in-memory database answers `memory`; nothing to do about it.
        tracing::info!(journal_mode = %mode, "SQLite database is not in WAL mode.");
    }
    Ok(())
}

fn json_text(what: &'static str, name: &str, params: &Map<String, Value>) -> Result<String, StoreError> {
    serde_json::to_string(params).map_err(|e| StoreError::Invalid {
        what,
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// Checks a device and converts it to column values.
fn encode(dev: &DeviceRecord, source: Source) -> Result<Encoded, StoreError> {
    let invalid = |reason: String| StoreError::Invalid { what: "device", name: dev.name.clone(), reason };
    if dev.name.is_empty() {
        return Err(invalid("the name is empty".into()));
    }
    let poll_interval_ms = i64::try_from(dev.poll_interval_ms)
        .map_err(|_| invalid(format!("poll_interval_ms {} is larger than {}", dev.poll_interval_ms, i64::MAX)))?;
    let mut names = BTreeSet::new();
    let mut tags = Vec::with_capacity(dev.tags.len());
    for tag in &dev.tags {
        if !names.insert(tag.name.as_str()) {
            return Err(invalid(format!("tag {:?} appears twice", tag.name)));
        }
        tags.push(encode_tag(&dev.name, tag)?);
    }
    Ok(Encoded {
        name: dev.name.clone(),
        driver: dev.driver.clone(),
        enabled: flag(dev.enabled),
        poll_interval_ms,
        params: json_text("device", &dev.name, &dev.params)?,
        source,
        tags,
    })
}

fn encode_tag(device: &str, tag: &TagRecord) -> Result<EncodedTag, StoreError> {
    let full = format!("{device}.{}", tag.name);
    if tag.name.is_empty() {
        return Err(StoreError::Invalid { what: "tag", name: full, reason: "the name is empty".into() });
    }
    Ok(EncodedTag {
        params: json_text("tag", &full, &tag.params)?,
        name: tag.name.clone(),
        writable: flag(tag.writable),
    })
}

/// Whether the stored `old` already is what the file says `new` should be.
fn same_config(old: &DeviceRecord, new: &DeviceRecord) -> bool {
    old.same_content(&DeviceRecord { source: Source::Config, ..new.clone() })
}

/// Inserts the device row unless one of that name exists; returns whether it did.
async fn insert_device(conn: &mut AnyConnection, enc: &Encoded, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO devices (name, driver, enabled, poll_interval_ms, params, source, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&enc.name)
    .bind(&enc.driver)
    .bind(enc.enabled)
    .bind(enc.poll_interval_ms)
    .bind(&enc.params)
    .bind(enc.source.as_str())
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Creates or replaces a device row and all its tags; returns whether it was
/// created. Must run in a transaction.
async fn write_device(conn: &mut AnyConnection, enc: &Encoded, now: i64) -> Result<bool, sqlx::Error> {
    // Insert-or-update rather than read-then-write: two gateways upserting the
    // same new device cannot both decide to insert.
    let created = insert_device(conn, enc, now).await?;
    if !created {
        sqlx::query(
            "UPDATE devices SET driver = $2, enabled = $3, poll_interval_ms = $4, params = $5, source = $6, \
             updated_at_ms = $7 WHERE name = $1",
        )
        .bind(&enc.name)
        .bind(&enc.driver)
        .bind(enc.enabled)
        .bind(enc.poll_interval_ms)
        .bind(&enc.params)
        .bind(enc.source.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM tags WHERE device = $1").bind(&enc.name).execute(&mut *conn).await?;
    }
    insert_tags(conn, enc).await?;
    Ok(created)
}

async fn insert_tags(conn: &mut AnyConnection, enc: &Encoded) -> Result<(), sqlx::Error> {
    for (position, tag) in (0_i64..).zip(&enc.tags) {
        insert_tag(conn, &enc.name, position, tag).await?;
    }
    Ok(())
}

async fn insert_tag(
    conn: &mut AnyConnection,
    device: &str,
    position: i64,
    tag: &EncodedTag,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO tags (device, name, position, writable, params) VALUES ($1, $2, $3, $4, $5)")
        .bind(device)
        .bind(&tag.name)
        .bind(position)
        .bind(tag.writable)
        .bind(&tag.params)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Sets a device's `updated_at_ms`; returns whether it exists.
async fn touch_device(conn: &mut AnyConnection, name: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE devices SET updated_at_ms = $2 WHERE name = $1")
        .bind(name)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Reads every device (or the one named), each decoded on its own so that one
/// damaged row does not hide which devices exist.
async fn load(conn: &mut AnyConnection, name: Option<&str>) -> Result<BTreeMap<String, Loaded>, StoreError> {
    let rows = match name {
        None => sqlx::query(SELECT_DEVICES).fetch_all(&mut *conn).await?,
        Some(name) => {
            let sql = AssertSqlSafe(format!("{SELECT_DEVICES} WHERE d.name = $1"));
            sqlx::query(sql).bind(name).fetch_all(&mut *conn).await?
        }
    };
    /// One device's rows, before its tags are put in order.
    struct Gathered {
        source: Option<Source>,
        record: Result<DeviceRecord, String>,
        tags: Vec<(i64, Result<TagRecord, String>)>,
    }
    let mut devices: BTreeMap<String, Gathered> = BTreeMap::new();
    for row in &rows {
        let name: String = row
            .try_get("name")
            .map_err(|e| StoreError::Corrupt { name: "(unreadable name)".into(), reason: e.to_string() })?;
        let entry = devices.entry(name).or_insert_with_key(|name| Gathered {
            source: row.try_get::<String, _>("source").ok().as_deref().and_then(Source::parse),
            record: decode_device(row, name),
            tags: Vec::new(),
        });
        if let Some(tag) = decode_tag(row) {
            entry.tags.push(tag);
        }
    }
    Ok(devices
        .into_iter()
        .map(|(name, Gathered { source, record, mut tags })| {
            tags.sort_by_key(|(position, _)| *position);
            let record = record.and_then(|mut dev| {
                dev.tags = tags.into_iter().map(|(_, t)| t).collect::<Result<_, _>>()?;
                Ok(dev)
            });
            (name, Loaded { source, record })
        })
        .collect())
}

fn column<'r, T>(row: &'r AnyRow, col: &str) -> Result<T, String>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(col).map_err(|e| format!("column `{col}` cannot be read: {e}"))
}

fn bool_column(row: &AnyRow, col: &str) -> Result<bool, String> {
    match column::<i64>(row, col)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(format!("column `{col}` holds {other}, expected 0 or 1")),
    }
}

fn json_column(row: &AnyRow, col: &str) -> Result<Map<String, Value>, String> {
    let text: String = column(row, col)?;
    serde_json::from_str(&text).map_err(|e| format!("column `{col}` is not a JSON object: {e}"))
}

fn decode_device(row: &AnyRow, name: &str) -> Result<DeviceRecord, String> {
    let source: String = column(row, "source")?;
    let poll: i64 = column(row, "poll_interval_ms")?;
    Ok(DeviceRecord {
        name: name.to_owned(),
        driver: column(row, "driver")?,
        enabled: bool_column(row, "enabled")?,
        poll_interval_ms: u64::try_from(poll).map_err(|_| format!("column `poll_interval_ms` holds {poll}"))?,
        params: json_column(row, "params")?,
        tags: Vec::new(),
        source: Source::parse(&source)
            .ok_or_else(|| format!("column `source` holds {source:?}, expected \"config\" or \"api\""))?,
        created_at_ms: column(row, "created_at_ms")?,
        updated_at_ms: column(row, "updated_at_ms")?,
    })
}

/// The tag in a joined row; None for a device without tags.
fn decode_tag(row: &AnyRow) -> Option<(i64, Result<TagRecord, String>)> {
    let name = match column::<Option<String>>(row, "tag_name") {
        Ok(None) => return None,
        Ok(Some(name)) => name,
        Err(e) => return Some((i64::MAX, Err(format!("a tag: {e}")))),
    };
    let position = column::<i64>(row, "tag_position").unwrap_or(i64::MAX);
    let tag = (|| {
        Ok(TagRecord {
            writable: bool_column(row, "tag_writable")?,
            params: json_column(row, "tag_params")?,
            name: name.clone(),
        })
    })()
    .map_err(|e: String| format!("tag {name:?}: {e}"));
    Some((position, tag))
}
