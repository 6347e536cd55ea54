//! What can go wrong in the store, in words an operator can act on.

use std::path::PathBuf;

use gateway_model::FieldError;

/// Why a store operation failed. The API answers `NotFound` with 404,
/// `Conflict` with 409, `Full` with 507 and `Unavailable` with 503; anything
/// else is a 500 with the detail in the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The device (or tag) does not exist.
    #[error("{what} {name:?} does not exist")]
    NotFound {
        /// `device` or `tag`.
        what: &'static str,
        /// Its name (`device.tag` for a tag).
        name: String,
    },
    /// A device with that name already exists.
    #[error("{what} {name:?} already exists")]
    Conflict {
        /// `device`.
        what: &'static str,
        /// The name already taken.
        name: String,
    },
    /// The record cannot be stored as given (the database was not changed).
    #[error("{what} {name:?} cannot be stored: {reason}")]
    Invalid {
        /// `device` or `tag`.
        what: &'static str,
        /// The device's name, or `device.tag` for a tag.
        name: String,
        /// Why, such as `tag "t1" appears twice`.
        reason: String,
    },
    /// A stored row cannot be read back (edited by hand, or damaged).
    #[error("the stored device {name:?} is corrupt: {reason}; fix or delete its rows in the database")]
    Corrupt {
        /// The device whose rows cannot be read (`(unreadable name)` if even
        /// the name cannot).
        name: String,
        /// Which column holds what, such as ``column `source` holds "x"``, so
        /// the operator knows which row to fix.
        reason: String,
    },
    /// The database schema is not one this build can use (for example it was
    /// upgraded by a newer gateway).
    #[error("database schema: {0}")]
    Schema(String),
    /// The `[database]` section is not valid.
    #[error("invalid [database] configuration: {0}")]
    Config(#[from] FieldError),
    /// The SQLite file's directory could not be created.
    #[error("cannot create the database directory {}: {source}", path.display())]
    Io {
        /// The data directory, or the directory of the configured SQLite file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The database cannot grow: its disk is full (SQLite `SQLITE_FULL`,
    /// PostgreSQL `disk_full`). Writes fail until there is room again; reads
    /// still work. Holds the database's own message.
    #[error("the database's disk is full ({0}); free space on it, then retry")]
    Full(String),
    /// The database cannot be used just now (connection lost, pool
    /// exhausted, locked, an I/O error); a retry later may work. Holds the
    /// database's own message.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The SQLite file is not a database, or is damaged.
    #[error(
        "the SQLite database {} cannot be used: {reason}; move it aside (for example to {}.bad) to start with \
         an empty store, or restore it from a backup",
        path.display(),
        path.display()
    )]
    BadFile {
        /// The SQLite file.
        path: PathBuf,
        /// What SQLite said, such as `file is not a database`.
        reason: String,
    },
    /// Any other database failure.
    #[error("database error: {0}")]
    Db(sqlx::Error),
}

/// SQLite's primary result codes this module tells apart (the low byte of
/// an extended code).
mod sqlite_code {
    pub const BUSY: i32 = 5;
    pub const LOCKED: i32 = 6;
    pub const READONLY: i32 = 8;
    pub const IOERR: i32 = 10;
    pub const CORRUPT: i32 = 11;
    pub const FULL: i32 = 13;
    pub const CANTOPEN: i32 = 14;
    pub const NOTADB: i32 = 26;
}

/// The primary SQLite result code of `e`, if SQLite answered it.
pub(crate) fn sqlite_code(e: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(db) = e else { return None };
    let code = sqlx::error::DatabaseError::code(db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?)?;
    code.parse::<i32>().ok().map(|c| c & 0xff)
}

/// Whether SQLite says the file is not a database or is damaged.
pub(crate) fn is_bad_sqlite_file(e: &sqlx::Error) -> bool {
    matches!(sqlite_code(e), Some(sqlite_code::NOTADB | sqlite_code::CORRUPT))
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlite_code::*;
        let pg_state = match &e {
            sqlx::Error::Database(db) => db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().map(|p| p.code()),
            _ => None,
        };
        match (sqlite_code(&e), pg_state) {
            (Some(FULL), _) | (_, Some("53100")) => StoreError::Full(e.to_string()),
            (Some(BUSY | LOCKED | READONLY | IOERR | CANTOPEN), _) => StoreError::Unavailable(e.to_string()),
            // Connection exceptions, insufficient resources, server shutting down.
            (_, Some(state)) if state.starts_with("08") || state.starts_with("53") || state.starts_with("57P") => {
                StoreError::Unavailable(e.to_string())
            }
            (None, None)
                if matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                ) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Db(e),
        }
    }
}

impl StoreError {
    /// Whether the database itself is failing (full or unavailable), as
    /// opposed to a request it refused; such failures make the store unhealthy.
    pub fn is_outage(&self) -> bool {
        matches!(self, StoreError::Full(_) | StoreError::Unavailable(_))
    }
}
