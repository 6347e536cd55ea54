//! The configuration as loaded, for `GET /api/v1/system/config`: a JSON
//! document the binary renders (it alone knows every section's type) with
//! every secret already replaced by `***`, and renders again after each
//! reload. The API only hands it out, to admins.
//!
//! It must never hold a secret: it takes a finished [`serde_json::Value`] and
//! does not parse, merge or unmask anything, so what the binary masked is
//! exactly what a client sees.

use std::sync::{Arc, RwLock};

use serde_json::Value;

/// The masked configuration document; shared, cheap to clone. Empty until
/// the binary sets it (the route then answers 503 `config_unavailable`).
///
/// Kept as its compact JSON text, not as a [`Value`]: a tree of maps holds
/// about ten times the bytes of its text (290 KB for 200 simulated devices),
/// for the whole life of the process, for a page an admin opens now and
/// then.
#[derive(Clone, Debug, Default)]
pub struct LoadedConfig(Arc<RwLock<Option<Arc<str>>>>);

impl LoadedConfig {
    /// A view that already holds `masked`.
    ///
    /// ```
    /// let view = gateway_api::LoadedConfig::new(serde_json::json!({"config": {"api": {}}}));
    /// assert_eq!(view.get().unwrap()["config"], serde_json::json!({"api": {}}));
    /// ```
    pub fn new(masked: Value) -> Self {
        let v = LoadedConfig::default();
        v.set(masked);
        v
    }

    /// Replaces the document (after a reload). `masked` must hold no secret.
    pub fn set(&self, masked: Value) {
        let text: Arc<str> = masked.to_string().into();
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(text);
    }

    /// The document as JSON text, if the binary gave one.
    pub fn text(&self) -> Option<Arc<str>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The document, if the binary gave one.
    pub fn get(&self) -> Option<Value> {
        // The text was written from a Value: it always parses back.
        self.text().and_then(|t| serde_json::from_str(&t).ok())
    }
}
