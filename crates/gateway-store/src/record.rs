//! The stored form of devices and tags: plain data. The store does not know
//! drivers; a driver's own fields travel as a JSON object in `params`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a device was defined; config-file devices belong to the file and are
/// re-synced from it at every start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Defined in the config file: the API refuses to change it, and every
    /// start re-syncs it from the file (and deletes it once the file drops it).
    Config,
    /// Created over the REST API; a config-file device of the same name is
    /// then left out.
    Api,
}

impl Source {
    /// The stored and serialized form: `config` or `api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
        }
    }

    /// The inverse of [`Source::as_str`]; `None` for any other text (a damaged row).
    pub fn parse(s: &str) -> Option<Source> {
        match s {
            "config" => Some(Source::Config),
            "api" => Some(Source::Api),
            _ => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tag as stored: the common fields, and the driver's own as JSON that the
/// store keeps but does not interpret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TagRecord {
    /// The point name, not empty and unique within its device (the store
    /// refuses duplicates); the tag id is `device.name`.
    pub name: String,
    /// Whether commands may write it.
    pub writable: bool,
    /// The driver's tag fields.
    pub params: Map<String, Value>,
}

/// A device as stored, with its tags. The store checks names and ranges only;
/// the driver's fields are the caller's to validate before storing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The primary key: unique among devices, not empty.
    pub name: String,
    /// The driver's name (`sim`, `modbus_tcp`, ...).
    pub driver: String,
    /// Whether the gateway starts its driver; a disabled device stays stored.
    pub enabled: bool,
    /// Time between polls. At most `i64::MAX` (the column is a signed BIGINT).
    pub poll_interval_ms: u64,
    /// The driver's device fields.
    pub params: Map<String, Value>,
    /// The tags, in the order they were defined.
    pub tags: Vec<TagRecord>,
    /// Where it was defined, which decides who may change it; stored as given,
    /// except that [`crate::Store::sync_config_devices`] always stores `config`.
    pub source: Source,
    /// When it was first stored, in milliseconds since the Unix epoch. Set by
    /// the store; ignored when writing.
    pub created_at_ms: i64,
    /// When it was last changed, in milliseconds since the Unix epoch. Set by
    /// the store; ignored when writing.
    pub updated_at_ms: i64,
}

impl DeviceRecord {
    /// The tag named `name`.
    pub fn tag(&self, name: &str) -> Option<&TagRecord> {
        self.tags.iter().find(|t| t.name == name)
    }

    /// Whether the two describe the same device configuration (everything but
    /// the timestamps).
    pub fn same_content(&self, other: &DeviceRecord) -> bool {
        self.name == other.name
            && self.driver == other.driver
            && self.enabled == other.enabled
            && self.poll_interval_ms == other.poll_interval_ms
            && self.params == other.params
            && self.tags == other.tags
            && self.source == other.source
    }
}
