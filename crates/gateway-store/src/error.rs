//! What can go wrong in the store, in words an operator can act on.

use std::path::PathBuf;

use gateway_model::FieldError;

/// Why a store operation failed. The API answers `NotFound` with 404 and
/// `Conflict` with 409; anything else is a 500 with the detail in the log.
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
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}
