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
    /// The config file.
    Config,
    /// The REST API.
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

    /// Reads the stored form.
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

/// A stored tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TagRecord {
    /// Unique within its device.
    pub name: String,
    /// Whether commands may write it.
    pub writable: bool,
    /// The driver's tag fields.
    pub params: Map<String, Value>,
}

/// A stored device with its tags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Unique name.
    pub name: String,
    /// The driver's name (`sim`, `modbus_tcp`, ...).
    pub driver: String,
    /// Whether it is polled.
    pub enabled: bool,
    /// Time between polls. At most `i64::MAX` (the column is a signed BIGINT).
    pub poll_interval_ms: u64,
    /// The driver's device fields.
    pub params: Map<String, Value>,
    /// The tags, in the order they were defined.
    pub tags: Vec<TagRecord>,
    /// Where it was defined.
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
