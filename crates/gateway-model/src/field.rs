//! The one configuration error of the gateway: [`FieldError`], the path of
//! the bad field and what is wrong with it, as every `validate()` and every
//! section parser of every crate returns it. Paths compose: a device's parser
//! says `tags[0].data_type`, the list around it adds `devices[1]`, so the
//! operator reads `devices[1].tags[0].data_type: unknown variant `flaot``.
//!
//! The two helpers read a component's own fields out of a JSON object after
//! its common fields were taken out, which is how `[[devices]]` and
//! `[[connectors]]` entries are parsed (one table, common plus kind-specific
//! fields, unknown fields refused). A message must never quote a secret:
//! callers that validate URLs or passwords redact before they build one.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A configuration value that is wrong, with the full path of its field.
///
/// ```
/// use gateway_model::FieldError;
///
/// let e = FieldError::new("data_type", "unknown variant `flaot`").under("tags[0]").under("devices[1]");
/// assert_eq!(e.to_string(), "devices[1].tags[0].data_type: unknown variant `flaot`");
/// assert_eq!(FieldError::new("", "invalid TOML").to_string(), "invalid TOML");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.display())]
pub struct FieldError {
    /// Dotted path with list indices, such as `devices[1].tags[0].data_type`;
    /// empty when the error is about the document as a whole (a syntax error).
    pub path: String,
    /// What is wrong, written for the operator who has to fix it.
    pub message: String,
}

impl FieldError {
    /// An error at `path` (relative to whoever reports it further up).
    pub fn new(path: impl Into<String>, message: impl std::fmt::Display) -> Self {
        FieldError { path: path.into(), message: message.to_string() }
    }

    /// The same error one level further out: `under("devices[1]")` turns
    /// `name` into `devices[1].name` and `[2]` into `devices[1][2]`.
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = if self.path.is_empty() {
            prefix.to_owned()
        } else if prefix.is_empty() {
            self.path
        } else if self.path.starts_with('[') {
            format!("{prefix}{}", self.path)
        } else {
            format!("{prefix}.{}", self.path)
        };
        self
    }

    fn display(&self) -> String {
        if self.path.is_empty() { self.message.clone() } else { format!("{}: {}", self.path, self.message) }
    }
}

/// Removes `key` from a JSON object and reads it as `T` (`None` if absent).
/// Used to take a section's common fields out before its kind's own fields
/// are read with [`parse_fields`].
pub fn take_field<T: DeserializeOwned>(map: &mut Map<String, Value>, key: &str) -> Result<Option<T>, FieldError> {
    match map.remove(key) {
        None => Ok(None),
        Some(v) => serde_json::from_value(v).map(Some).map_err(|e| FieldError::new(key, e)),
    }
}

/// Reads what is left of a JSON object as exactly `T`'s fields (`T` should
/// refuse unknown fields), with the path of the first bad one.
pub fn parse_fields<T: DeserializeOwned>(map: Map<String, Value>) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        FieldError::new(if path == "." { String::new() } else { path }, e.into_inner())
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Own {
        #[allow(dead_code)]
        qos: u8,
    }

    #[test]
    fn common_fields_are_taken_and_the_rest_must_be_the_kinds_own() {
        let Value::Object(mut m) = json!({"name": "up", "qos": 1}) else { unreachable!() };
        let name: Option<String> = take_field(&mut m, "name").unwrap();
        assert_eq!(name.as_deref(), Some("up"));
        assert!(parse_fields::<Own>(m).is_ok());

        let Value::Object(m) = json!({"qos": 1, "colour": "red"}) else { unreachable!() };
        let e = parse_fields::<Own>(m).unwrap_err();
        assert!(e.message.contains("unknown field `colour`"), "{e}");
        let Value::Object(m) = json!({"qos": "high"}) else { unreachable!() };
        assert_eq!(parse_fields::<Own>(m).unwrap_err().path, "qos");
        let Value::Object(mut m) = json!({"name": 7}) else { unreachable!() };
        assert_eq!(take_field::<String>(&mut m, "name").unwrap_err().path, "name");
    }

    #[test]
    fn prefixes_compose_around_indices_and_empty_paths() {
        assert_eq!(FieldError::new("", "x").under("bus").path, "bus");
        assert_eq!(FieldError::new("[2]", "x").under("include").path, "include[2]");
        assert_eq!(FieldError::new("ring_pow", "x").under("").path, "ring_pow");
    }
}
