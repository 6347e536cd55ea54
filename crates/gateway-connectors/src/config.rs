//! Connector configuration (`[[connectors]]`): the common fields (`name`,
//! `kind`, `enabled`) and exactly the kind's own fields, with errors that
//! name the field (`connectors[0].qos: must be 0, 1 or 2, got 3`).

use serde_json::Value;

use crate::mqtt::MqttConfig;

pub use gateway_model::FieldError;
use gateway_model::{parse_fields as typed, take_field as take};

/// Connector kinds this build knows.
pub const KINDS: &[&str] = &["mqtt"];

/// What a connector forwards to.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnectorKind {
    /// An MQTT broker.
    Mqtt(Box<MqttConfig>),
}

/// A configured connector.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectorConfig {
    /// Unique name; also the name of its durable bus cursor.
    pub name: String,
    /// Whether it runs.
    pub enabled: bool,
    /// The kind and its fields.
    pub kind: ConnectorKind,
}

impl ConnectorConfig {
    /// Parses one connector.
    pub fn from_json(v: Value) -> Result<ConnectorConfig, FieldError> {
        let Value::Object(mut m) = v else { return Err(FieldError::new("", "a connector must be a table")) };
        let name: String = take(&mut m, "name")?.ok_or_else(|| FieldError::new("name", "missing field `name`"))?;
        let kind: String = take(&mut m, "kind")?.ok_or_else(|| FieldError::new("kind", "missing field `kind`"))?;
        let enabled = take(&mut m, "enabled")?.unwrap_or(true);
        let ok = !name.is_empty()
            && name.len() <= 48
            && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if !ok {
            return Err(FieldError::new(
                "name",
                format!("{name:?} is not a valid connector name: use 1-48 of A-Z a-z 0-9 _ -"),
            ));
        }
        let kind = match kind.as_str() {
            "mqtt" => {
                let c: MqttConfig = typed(m)?;
                c.validate()?;
                ConnectorKind::Mqtt(Box::new(c))
            }
            other => {
                return Err(FieldError::new(
                    "kind",
                    format!("unknown connector kind `{other}`, expected one of: {}", KINDS.join(", ")),
                ));
            }
        };
        Ok(ConnectorConfig { name, enabled, kind })
    }
}

/// Parses `[[connectors]]`, checking that names are unique.
pub fn parse_connectors(values: Vec<Value>, prefix: &str) -> Result<Vec<ConnectorConfig>, FieldError> {
    let mut out: Vec<ConnectorConfig> = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        let at = format!("{prefix}[{i}]");
        let c = ConnectorConfig::from_json(v).map_err(|e| e.under(&at))?;
        if out.iter().any(|o| o.name == c.name) {
            return Err(FieldError::new(format!("{at}.name"), format!("duplicate connector name {:?}", c.name)));
        }
        out.push(c);
    }
    Ok(out)
}
