//! Where history lives and how it is connected to: the location rules of
//! the `[history]` section, the schema's migrations, the writer's own
//! connection (one, never pooled) and the pool that queries use.
//!
//! History talks to each database through its own sqlx driver rather than
//! the metadata store's `Any` driver: PostgreSQL's `COPY` needs a
//! PostgreSQL connection, and SQLite's typed driver binds values without
//! `Any`'s conversions. On SQLite the writer's connection commits with
//! `synchronous = FULL` (a commit is on disk before the bus cursor moves
//! past it) and the query connections are read-only.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, SqliteConnection, SqlitePool};

use super::config::{HISTORY_SQLITE_FILE, HistoryConfig};
use crate::config::dialect_of;
use crate::error::is_bad_sqlite_file;
use crate::migrate::{Schema, schema_error};
use crate::{DatabaseConfig, Dialect, StoreError};

/// Pages of the writer's SQLite cache (negative: KiB). The tail page of
/// every tag is touched by each transaction; 16 MiB keeps those of about
/// 4,000 tags, beyond which pages come from the operating system's cache.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// Pages the SQLite log may hold before a commit copies them into the
/// database (the default, 1,000, would checkpoint after nearly every large
/// history transaction).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// How the writer and the queries reach the history database.
#[derive(Clone, Debug)]
pub(crate) enum Connect {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

/// The query pool.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The writer's connection.
pub(crate) enum WriteConn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// The history database: how to connect, the query pool, and where it is.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub dialect: Dialect,
    pub connect: Connect,
    pub pool: Pool,
    /// The SQLite file (None on PostgreSQL).
    pub file: Option<PathBuf>,
    /// Where it is, for logs and errors, without a password.
    pub shown: String,
    /// The pool's bounds (min: the adaptive pool's base; max: its cap).
    pub pool_cfg: DatabaseConfig,
}

/// The database settings history uses: its own section, or the metadata's
/// URL when that is PostgreSQL, or `history.db` in `data_dir`.
pub(crate) fn resolve(
    cfg: &HistoryConfig,
    meta: &DatabaseConfig,
    data_dir: &Path,
) -> (DatabaseConfig, Option<PathBuf>) {
    if let Some(own) = &cfg.database
        && own.url.is_some()
    {
        return (own.clone(), None);
    }
    let pool = cfg.database.clone().unwrap_or_default();
    match meta.url.as_deref() {
        Some(url) if dialect_of(url) == Some(Dialect::Postgres) => {
            (DatabaseConfig { url: Some(url.to_owned()), ..pool }, None)
        }
        _ => (pool, Some(data_dir.join(HISTORY_SQLITE_FILE))),
    }
}

impl Db {
    /// Opens the history database `cfg` says (see [`resolve`]), creating it
    /// and bringing its schema up to date.
    pub async fn open(cfg: &HistoryConfig, meta: &DatabaseConfig, data_dir: &Path) -> Result<Db, StoreError> {
        let (db_cfg, file) = resolve(cfg, meta, data_dir);
        db_cfg.validate().map_err(|e| e.under("history.database"))?;
        let slow = Duration::from_millis(db_cfg.slow_query_threshold_ms);
        let (dialect, connect, file) = match (&db_cfg.url, file) {
            (None, Some(file)) => {
                let dir = file.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
                let opts = SqliteConnectOptions::new().filename(&file).create_if_missing(true);
                (Dialect::Sqlite, Connect::Sqlite(sqlite_options(opts, &db_cfg)), Some(file))
            }
            (Some(url), _) => match dialect_of(url) {
                Some(Dialect::Sqlite) => {
                    let opts = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
                    let file = opts.get_filename().to_path_buf();
                    if let Some(dir) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir)
                            .map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
                    }
                    (Dialect::Sqlite, Connect::Sqlite(sqlite_options(opts, &db_cfg)), Some(file))
                }
                _ => {
                    let opts = PgConnectOptions::from_str(url)?
                        .application_name("edge-gateway history")
                        .log_slow_statements(tracing_log_level(), slow);
                    (Dialect::Postgres, Connect::Postgres(opts), None)
                }
            },
            (None, None) => unreachable!("resolve gives a URL or a file"),
        };
        let shown = match &file {
            Some(f) => f.display().to_string(),
            None => db_cfg.redacted_url().unwrap_or_default(),
        };
        let bad_file = |e: StoreError| match (e, &file) {
            (StoreError::Db(e), Some(f)) if is_bad_sqlite_file(&e) => {
                StoreError::BadFile { path: f.clone(), reason: e.to_string() }
            }
            (e, _) => e,
        };
        // Migrate through a pool of one first: on SQLite it also creates the
        // file and switches it to WAL mode, which the read-only pool needs.
        // (A pool, not a connection: the migrator's future over a borrowed
        // connection is not `Send` for every lifetime, so callers could not
        // spawn it.)
        connect.migrate(dialect).await.map_err(|e| match e {
            Migration::Connect(e) => bad_file(e.into()),
            Migration::Run(e) => bad_file(schema_error(e, Schema::History, dialect)),
        })?;
        let pool = connect.pool(&db_cfg).await?;
        tracing::info!(
            dialect = ?dialect,
            at = %shown,
            schema_version = Schema::History.latest_version(dialect),
            "Opened the history store."
        );
        Ok(Db { dialect, connect, pool, file, shown, pool_cfg: db_cfg })
    }

    /// Closes the query pool.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// The level slow statements are logged at (sqlx's own default).
fn tracing_log_level() -> log::LevelFilter {
    log::LevelFilter::Warn
}

/// The settings every history SQLite connection gets.
fn sqlite_options(opts: SqliteConnectOptions, cfg: &DatabaseConfig) -> SqliteConnectOptions {
    let busy = Duration::from_secs(cfg.acquire_timeout_s);
    opts.journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy)
        .foreign_keys(false)
        .log_slow_statements(tracing_log_level(), Duration::from_millis(cfg.slow_query_threshold_ms))
}

/// Why migrating failed: connecting, or the migration itself.
enum Migration {
    Connect(sqlx::Error),
    Run(sqlx::migrate::MigrateError),
}

impl Connect {
    async fn migrate(&self, dialect: Dialect) -> Result<(), Migration> {
        let migrator = Schema::History.migrator(dialect);
        match self {
            Connect::Sqlite(o) => {
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(o.clone())
                    .await
                    .map_err(Migration::Connect)?;
                let r = migrator.run(&pool).await.map_err(Migration::Run);
                pool.close().await;
                r
            }
            Connect::Postgres(o) => {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(o.clone())
                    .await
                    .map_err(Migration::Connect)?;
                let r = migrator.run(&pool).await.map_err(Migration::Run);
                pool.close().await;
                r
            }
        }
    }

    /// A new connection for the writer.
    pub async fn open(&self) -> Result<WriteConn, sqlx::Error> {
        match self {
            Connect::Sqlite(o) => {
                let o = o
                    .clone()
                    .pragma("cache_size", (-WRITER_CACHE_KIB).to_string())
                    .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
                    // After a checkpoint, the log file shrinks back to this.
                    .pragma("journal_size_limit", (64 << 20).to_string());
                Ok(WriteConn::Sqlite(o.connect().await?))
            }
            Connect::Postgres(o) => Ok(WriteConn::Postgres(o.connect().await?)),
        }
    }

    async fn pool(&self, cfg: &DatabaseConfig) -> Result<Pool, sqlx::Error> {
        let secs = Duration::from_secs;
        Ok(match self {
            Connect::Sqlite(o) => Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(cfg.max_connections)
                    .min_connections(cfg.min_connections)
                    .acquire_timeout(secs(cfg.acquire_timeout_s))
                    .idle_timeout(secs(cfg.idle_timeout_s))
                    .max_lifetime(secs(cfg.max_lifetime_s))
                    .connect_with(o.clone().read_only(true))
                    .await?,
            ),
            Connect::Postgres(o) => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(cfg.max_connections)
                    .min_connections(cfg.min_connections)
                    .acquire_timeout(secs(cfg.acquire_timeout_s))
                    .idle_timeout(secs(cfg.idle_timeout_s))
                    .max_lifetime(secs(cfg.max_lifetime_s))
                    .connect_with(o.clone())
                    .await?,
            ),
        })
    }
}

impl WriteConn {
    /// Closes it, ignoring errors: it is only closed when it is done with.
    pub async fn close(self) {
        let _ = match self {
            WriteConn::Sqlite(c) => c.close().await,
            WriteConn::Postgres(c) => c.close().await,
        };
    }
}
