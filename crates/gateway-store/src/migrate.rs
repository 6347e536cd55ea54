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
//! History has a migration set of its own ([`Schema::History`],
//! `migrations/history/`), recorded in its own table, so it can live in the
//! metadata's PostgreSQL database or in a file of its own without either set
//! taking the other's versions for a newer gateway's.
//!
//! To change a schema, add `NNNN_<what>.sql` to BOTH dialects' folders and a
//! line to both lists below; never edit a released file.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};

use crate::{Dialect, StoreError};

/// The table where applied metadata migrations are recorded.
pub const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// The table where applied history migrations are recorded.
pub const HISTORY_MIGRATIONS_TABLE: &str = "_history_migrations";

/// Which set of migrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// Devices, tags, users, tokens, sessions, the audit trail.
    Metadata,
    /// Raw values, summaries, the alarm journal and the history writer's state.
    History,
}

/// `(version, description, script)`.
type Script = (i64, &'static str, &'static str);

const SQLITE: &[Script] = &[
    (1, "devices", include_str!("../migrations/sqlite/0001_devices.sql")),
    (2, "security", include_str!("../migrations/sqlite/0002_security.sql")),
    (3, "alarm_rules", include_str!("../migrations/sqlite/0003_alarm_rules.sql")),
];

const POSTGRES: &[Script] = &[
    (1, "devices", include_str!("../migrations/postgres/0001_devices.sql")),
    (2, "security", include_str!("../migrations/postgres/0002_security.sql")),
    (3, "alarm_rules", include_str!("../migrations/postgres/0003_alarm_rules.sql")),
];

const HISTORY_SQLITE: &[Script] = &[
    (1, "history", include_str!("../migrations/history/sqlite/0001_history.sql")),
    (2, "alarm journal", include_str!("../migrations/history/sqlite/0002_alarm_journal.sql")),
];

const HISTORY_POSTGRES: &[Script] = &[
    (1, "history", include_str!("../migrations/history/postgres/0001_history.sql")),
    (2, "alarm journal", include_str!("../migrations/history/postgres/0002_alarm_journal.sql")),
];

impl Schema {
    fn scripts(self, dialect: Dialect) -> &'static [Script] {
        match (self, dialect) {
            (Schema::Metadata, Dialect::Sqlite) => SQLITE,
            (Schema::Metadata, Dialect::Postgres) => POSTGRES,
            (Schema::History, Dialect::Sqlite) => HISTORY_SQLITE,
            (Schema::History, Dialect::Postgres) => HISTORY_POSTGRES,
        }
    }

    /// Where its applied versions are recorded.
    pub fn table(self) -> &'static str {
        match self {
            Schema::Metadata => MIGRATIONS_TABLE,
            Schema::History => HISTORY_MIGRATIONS_TABLE,
        }
    }

    /// The newest version of this set this build knows.
    pub fn latest_version(self, dialect: Dialect) -> i64 {
        self.scripts(dialect).iter().map(|s| s.0).max().unwrap_or(0)
    }

    /// The migrator of this set for `dialect`.
    pub(crate) fn migrator(self, dialect: Dialect) -> Migrator {
        let migrations = self
            .scripts(dialect)
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect();
        let mut m = Migrator::with_migrations(migrations);
        // Not dangerous here: the name is fixed per set and never changes.
        m.dangerous_set_table_name(self.table());
        m
    }
}

/// The newest metadata schema version this build knows.
pub fn latest_version(dialect: Dialect) -> i64 {
    Schema::Metadata.latest_version(dialect)
}

/// The metadata migrator for `dialect`.
pub(crate) fn migrator(dialect: Dialect) -> Migrator {
    Schema::Metadata.migrator(dialect)
}

/// Turns a migration failure into a [`StoreError::Schema`] that tells the
/// operator what to do (run the newer gateway, restore a backup, ...); a plain
/// database failure stays a database error ([`StoreError::Full`], ...).
pub(crate) fn error(e: MigrateError, dialect: Dialect) -> StoreError {
    schema_error(e, Schema::Metadata, dialect)
}

/// [`error`] for any set.
pub(crate) fn schema_error(e: MigrateError, schema: Schema, dialect: Dialect) -> StoreError {
    let latest = schema.latest_version(dialect);
    let table = schema.table();
    // The metadata's messages stay as they were; history's say whose schema it is.
    let what = match schema {
        Schema::Metadata => "",
        Schema::History => "history ",
    };
    match e {
        MigrateError::Execute(e) => e.into(),
        MigrateError::VersionMissing(v) => StoreError::Schema(format!(
            "the database has {what}schema version {v}, newer than this gateway knows (up to {latest}); it was upgraded \
             by a newer gateway. Refusing to use it: run that newer gateway, or restore a backup taken before \
             the upgrade"
        )),
        MigrateError::VersionMismatch(v) => StoreError::Schema(format!(
            "{what}schema migration {v} recorded in the database differs from the one built into this gateway; the \
             database was migrated by a different build. Refusing to use it"
        )),
        MigrateError::Dirty(v) => StoreError::Schema(format!(
            "{what}schema migration {v} was left half-applied; restore a backup or finish it by hand and mark it \
             successful in {table}"
        )),
        MigrateError::ExecuteMigration(e, v) => {
            StoreError::Schema(format!("applying {what}schema migration {v} failed (nothing was changed): {e}"))
        }
        other => StoreError::Schema(other.to_string()),
    }
}
