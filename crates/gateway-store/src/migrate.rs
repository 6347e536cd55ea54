//! The schema migrations, embedded in the binary, one folder per dialect.
//!
//! They run through sqlx's own migrator, built at run time from the embedded
//! files ([`Migrator::with_migrations`]) rather than with the `migrate!` macro,
//! which would need the heavy `macros` feature. The migrator records applied
//! versions in `_sqlx_migrations` with a checksum of each script, applies each
//! pending script and its bookkeeping in one transaction, holds an advisory
//! lock on PostgreSQL so two gateways starting together do not both migrate,
//! refuses a database holding a version this build does not know (written by a
//! newer gateway: downgrade protection), and refuses one whose applied script
//! differs from the embedded one.
//!
//! To change the schema, add `NNNN_<what>.sql` to BOTH folders and a line to
//! both lists below; never edit a released file.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};

use crate::{Dialect, StoreError};

/// The table where applied migrations are recorded.
pub const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// `(version, description, script)`.
type Script = (i64, &'static str, &'static str);

const SQLITE: &[Script] = &[
    (1, "devices", include_str!("../migrations/sqlite/0001_devices.sql")),
    (2, "security", include_str!("../migrations/sqlite/0002_security.sql")),
];

const POSTGRES: &[Script] = &[
    (1, "devices", include_str!("../migrations/postgres/0001_devices.sql")),
    (2, "security", include_str!("../migrations/postgres/0002_security.sql")),
];

fn scripts(dialect: Dialect) -> &'static [Script] {
    match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    }
}

/// The newest schema version this build knows.
pub fn latest_version(dialect: Dialect) -> i64 {
    scripts(dialect).iter().map(|s| s.0).max().unwrap_or(0)
}

/// The migrator for `dialect`.
pub(crate) fn migrator(dialect: Dialect) -> Migrator {
    let migrations = scripts(dialect)
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, sql.into_sql_str(), false)
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// Turns a migration failure into a [`StoreError::Schema`] that tells the
/// operator what to do (run the newer gateway, restore a backup, ...); a plain
/// database failure stays a database error ([`StoreError::Full`], ...).
pub(crate) fn error(e: MigrateError, dialect: Dialect) -> StoreError {
    let latest = latest_version(dialect);
    match e {
        MigrateError::Execute(e) => e.into(),
        MigrateError::VersionMissing(v) => StoreError::Schema(format!(
            "the database has schema version {v}, newer than this gateway knows (up to {latest}); it was upgraded \
             by a newer gateway. Refusing to use it: run that newer gateway, or restore a backup taken before \
             the upgrade"
        )),
        MigrateError::VersionMismatch(v) => StoreError::Schema(format!(
            "schema migration {v} recorded in the database differs from the one built into this gateway; the \
             database was migrated by a different build. Refusing to use it"
        )),
        MigrateError::Dirty(v) => StoreError::Schema(format!(
            "schema migration {v} was left half-applied; restore a backup or finish it by hand and mark it \
             successful in {MIGRATIONS_TABLE}"
        )),
        MigrateError::ExecuteMigration(e, v) => {
            StoreError::Schema(format!("applying schema migration {v} failed (nothing was changed): {e}"))
        }
        other => StoreError::Schema(other.to_string()),
    }
}
