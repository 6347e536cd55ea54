//! Connector configuration (`[[connectors]]`): the common fields (`name`,
//! `kind`, `enabled`) and exactly the kind's own fields, with errors that
//! name the field (`connectors[0].qos: must be 0, 1 or 2, got 3`). The kind
//! is looked up in [`CONNECTORS`](crate::CONNECTORS).

use gateway_model::{FieldError, take_field};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::CONNECTORS;
use crate::connector::{Connector, ConnectorParams};

/// Where a connector that never ran starts reading the bus (`start_from`);
/// one that ran resumes after its last confirmed reading whatever this says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// At the head: only what is published from now on.
    #[default]
    Latest,
    /// At the oldest frame still in the WAL.
    Oldest,
}

/// One `[[connectors]]` table: the fields every connector has, and its kind's own.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectorConfig {
    /// Unique among connectors; also names its durable bus cursor, so
    /// renaming a connector makes it start over as a new one.
    pub name: String,
    /// `false` keeps the configuration without running it (default `true`).
    pub enabled: bool,
    /// The kind's own fields, validated.
    pub params: ConnectorParams,
}

impl ConnectorConfig {
    /// An enabled connector named `name` with a typed config, validated like
    /// one read from a file.
    pub fn new<T: Connector>(name: impl Into<String>, config: T) -> Result<ConnectorConfig, FieldError> {
        let name = name.into();
        check_name(&name)?;
        config.validate()?;
        Ok(ConnectorConfig { name, enabled: true, params: ConnectorParams::new(config) })
    }

    /// Parses one `[[connectors]]` table; error paths are relative to it.
    pub fn from_json(v: Value) -> Result<ConnectorConfig, FieldError> {
        let Value::Object(mut m) = v else { return Err(FieldError::new("", "a connector must be a table")) };
        let name: String =
            take_field(&mut m, "name")?.ok_or_else(|| FieldError::new("name", "missing field `name`"))?;
        let kind: String =
            take_field(&mut m, "kind")?.ok_or_else(|| FieldError::new("kind", "missing field `kind`"))?;
        let enabled = take_field(&mut m, "enabled")?.unwrap_or(true);
        check_name(&name)?;
        let Some(entry) = CONNECTORS.iter().find(|e| e.kind == kind) else {
            let known: Vec<&str> = CONNECTORS.iter().map(|e| e.kind).collect();
            return Err(FieldError::new(
                "kind",
                format!("unknown connector kind `{kind}`, expected one of: {}", known.join(", ")),
            ));
        };
        let params = entry.parse(m)?;
        Ok(ConnectorConfig { name, enabled, params })
    }

    /// The table [`ConnectorConfig::from_json`] reads back, secrets included.
    pub fn to_json(&self) -> Value {
        let mut table = Map::new();
        table.insert("name".into(), self.name.clone().into());
        table.insert("kind".into(), self.params.kind().into());
        table.insert("enabled".into(), self.enabled.into());
        if let Value::Object(fields) = self.params.to_json() {
            table.extend(fields);
        }
        Value::Object(table)
    }
}

fn check_name(name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new("name", format!("{name:?} is not a valid connector name: use 1-48 of A-Z a-z 0-9 _ -")))
    }
}

/// Parses `[[connectors]]`, checking that names are unique; error paths
/// start with `prefix` (`connectors[0].qos`).
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::mqtt::MqttConfig;

    #[test]
    fn a_connector_table_parses_into_its_kinds_config() {
        let c = ConnectorConfig::from_json(json!({"name": "up", "kind": "mqtt", "url": "mqtt://h", "qos": 2})).unwrap();
        assert_eq!(c.params.kind(), "mqtt");
        assert!(c.enabled);
        let mqtt = c.params.get::<MqttConfig>().expect("an MQTT config");
        assert_eq!((mqtt.url.as_str(), mqtt.qos), ("mqtt://h", 2));
    }

    #[test]
    fn errors_name_the_field_under_the_connectors_index() {
        let bad = |v: Value| parse_connectors(vec![v], "connectors").unwrap_err().to_string();
        assert!(
            bad(json!({"name": "up", "kind": "mqtt", "url": "mqtt://h", "qos": 3})).starts_with("connectors[0].qos:")
        );
        assert_eq!(
            bad(json!({"name": "up", "kind": "kafka"})),
            "connectors[0].kind: unknown connector kind `kafka`, expected one of: mqtt, nats"
        );
        assert!(bad(json!({"name": "up", "kind": "mqtt", "url": "mqtt://h", "qso": 1})).starts_with("connectors[0]"));
        assert!(bad(json!({"name": "a b", "kind": "mqtt", "url": "mqtt://h"})).starts_with("connectors[0].name:"));
        let twice = json!({"name": "up", "kind": "mqtt", "url": "mqtt://h"});
        let e = parse_connectors(vec![twice.clone(), twice], "connectors").unwrap_err();
        assert_eq!(e.path, "connectors[1].name");
    }

    #[test]
    fn a_missing_ca_file_is_refused_when_the_configuration_is_read() {
        let table = json!({"name": "up", "kind": "mqtt", "url": "mqtts://h", "ca_file": "/nonexistent/ca.pem"});
        let e = parse_connectors(vec![table], "connectors").unwrap_err().to_string();
        assert!(e.starts_with("connectors[0].ca_file: cannot read /nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn a_config_reads_back_from_its_json_form() {
        let c = ConnectorConfig::from_json(json!({"name": "up", "kind": "mqtt", "url": "mqtt://h", "enabled": false}))
            .unwrap();
        assert_eq!(ConnectorConfig::from_json(c.to_json()).unwrap(), c);
        let other = ConnectorConfig::new("up", MqttConfig::new("mqtt://h")).unwrap();
        assert_ne!(other, c);
        assert_eq!(other.params, ConnectorConfig::new("up", MqttConfig::new("mqtt://h")).unwrap().params);
    }
}
