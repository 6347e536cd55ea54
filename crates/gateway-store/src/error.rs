//! What can go wrong in the store, in words an operator can act on.

use std::path::PathBuf;

use gateway_model::FieldError;

/// An error from the metadata store.
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
        /// Its name.
        name: String,
    },
    /// The record cannot be stored as given (the database was not changed).
    #[error("{what} {name:?} cannot be stored: {reason}")]
    Invalid {
        /// `device` or `tag`.
        what: &'static str,
        /// Its name.
        name: String,
        /// Why, such as `tag "t1" appears twice`.
        reason: String,
    },
    /// A stored row cannot be read back (edited by hand, or damaged).
    #[error("the stored device {name:?} is corrupt: {reason}; fix or delete its rows in the database")]
    Corrupt {
        /// The device.
        name: String,
        /// What is wrong with it.
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
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}
