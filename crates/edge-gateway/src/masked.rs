//! The configuration as the gateway runs it, as JSON with every secret
//! replaced by `***`, for `GET /api/v1/system/config` and the web UI's
//! System page. Rendered here because only the binary knows every section's
//! type; the API receives the finished document ([`gateway_api::LoadedConfig`]).
//!
//! Two layers, so that a secret field added later is still caught by its
//! name: each section's own public form where it has one (devices mask their
//! drivers' `SECRET_FIELDS`), then one pass over the whole document that
//! masks every field named like a secret (`password`, `token`, `secret`,
//! `nkey_seed`, ...), every value of a webhook's `headers` (they carry
//! `Authorization`), and the password inside every URL. Paths to key files
//! stay visible (they are where the key is, not the key). It must never
//! return a document that holds a secret's value: the tests feed it a file
//! with each kind of secret and look for them.

use std::path::Path;

use gateway_model::redact_url;
use serde_json::{Map, Value, json};

use crate::config::{Config, LogFormat};

/// What a masked secret reads as (the same as the devices API shows).
const MASK: &str = gateway_drivers::REDACTED;

/// Field names whose value is a secret whatever section holds them.
const SECRET_NAMES: &[&str] =
    &["password", "passwd", "token", "secret", "nkey_seed", "api_key", "client_secret", "seed"];

/// `cfg` (read from `source`; `None`: the built-in default) as
/// `{"source", "config": {section: ...}}` with every secret masked.
pub fn masked(cfg: &Config, source: Option<&Path>) -> Value {
    let section = |v: Result<Value, serde_json::Error>| v.unwrap_or_else(|e| json!({ "error": e.to_string() }));
    let mut config = json!({
        "gateway": {
            "name": cfg.gateway.name,
            "data_dir": cfg.gateway.data_dir,
            "log_level": cfg.gateway.log_level,
            "log_format": match cfg.gateway.log_format { LogFormat::Text => "text", LogFormat::Json => "json" },
        },
        "bus": bus(&cfg.bus),
        "api": section(serde_json::to_value(&cfg.api)),
        "database": section(serde_json::to_value(&cfg.database)),
        "history": section(serde_json::to_value(&cfg.history)),
        "security": section(serde_json::to_value(&cfg.security)),
        "alarms": section(serde_json::to_value(&cfg.alarms)),
        "tuning": section(serde_json::to_value(&cfg.tuning)),
        "devices": cfg.devices.iter().map(|d| d.to_public_json()).collect::<Vec<_>>(),
        "connectors": cfg.connectors.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
    });
    mask(&mut config, None);
    json!({ "source": source.map(|p| p.display().to_string()), "config": config })
}

/// `[bus]` as resolved (the preset with the file's fields applied). `BusSettings` has no
/// `Serialize` of its own; listed here field by field, a field added to it is simply not
/// shown until it is added here (it holds no secret).
fn bus(b: &gateway_bus::BusSettings) -> Value {
    let to = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
    json!({
        "preset": to(serde_json::to_value(b.preset)),
        "ring_pow": b.ring_pow,
        "pause_hi": b.pause_hi,
        "resume_lo": b.resume_lo,
        "wal_dir": b.wal_dir,
        "wal_flush_ms": b.wal_flush_ms,
        "wal_max_bytes": b.wal_max_bytes,
        "wal_segment_bytes": b.wal_segment_bytes,
        "async_write_queue_size": b.async_write_queue_size,
        "backpressure_threshold": b.backpressure_threshold,
        "high_performance_mode": b.high_performance_mode,
        "batch": to(serde_json::to_value(&b.batch)),
        "persistence": to(serde_json::to_value(b.persistence)),
        "wal_durability": to(serde_json::to_value(b.wal_durability)),
        "wal_overflow": to(serde_json::to_value(b.wal_overflow)),
        "wal_compression": to(serde_json::to_value(b.wal_compression)),
    })
}

/// Masks, in place, every secret of `v` (the field it is under: `key`).
fn mask(v: &mut Value, key: Option<&str>) {
    match v {
        Value::Object(m) if key == Some("headers") => mask_all(m),
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                mask(x, Some(k));
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| mask(x, key)),
        Value::String(s) if key.is_some_and(is_secret_name) => *s = MASK.to_owned(),
        Value::String(s) if s.contains("://") || s.contains('?') => *s = redact_url(s),
        _ => {}
    }
}

/// Every value of a header map: `Authorization: Bearer ...` and its kind.
fn mask_all(m: &mut Map<String, Value>) {
    for x in m.values_mut() {
        *x = MASK.into();
    }
}

fn is_secret_name(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    SECRET_NAMES.contains(&k.as_str()) || ["_password", "_secret", "_token", "_seed"].iter().any(|s| k.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each kind of secret the configuration can hold, each a word
    /// that appears nowhere else.
    const FILE: &str = r#"
[database]
url = "postgres://gw:PGPASS-meta@db.plant:5432/gw"

[history.database]
url = "postgres://hist@db.plant/hist?password=PGPASS-hist&sslmode=require"

[[alarms.notify]]
name = "pager"
url = "https://pager.plant/notify"
secret = "HMAC-KEY-hook"
headers = { Authorization = "Bearer HEADER-TOKEN" }

[[devices]]
name = "plc"
driver = "opcua"
endpoint = "opc.tcp://plc.plant:4840"
username = "ua-user"
password = "UAPASS-device"
tags = [{ name = "t", node_id = "ns=2;s=T" }]

[[connectors]]
name = "up"
kind = "mqtt"
url = "mqtt://bob:MQTTPASS-url@broker.plant:1883"

[[connectors]]
name = "up2"
kind = "mqtt"
url = "mqtt://broker.plant:1883"
username = "bob"
password = "MQTTPASS-field"

[[connectors]]
name = "js"
kind = "nats"
servers = ["nats://nats.plant:4222"]
token = "NATS-TOKEN"
"#;

    const SECRETS: &[&str] = &[
        "PGPASS-meta",
        "PGPASS-hist",
        "HMAC-KEY-hook",
        "HEADER-TOKEN",
        "UAPASS-device",
        "MQTTPASS-url",
        "MQTTPASS-field",
        "NATS-TOKEN",
    ];

    fn loaded() -> Config {
        crate::config::load_str(FILE, Vec::new(), None).expect("the test file is valid")
    }

    #[test]
    fn no_secret_of_the_file_appears_in_the_masked_document() {
        let cfg = loaded();
        let text = masked(&cfg, Some(Path::new("/etc/edge-gateway/gateway.toml"))).to_string();
        for s in SECRETS {
            assert!(!text.contains(s), "{s} shows in {text}");
        }
    }

    #[test]
    fn everything_but_the_secrets_is_shown() {
        let v = masked(&loaded(), None);
        let c = &v["config"];
        assert_eq!(v["source"], Value::Null);
        assert_eq!(c["database"]["url"], "postgres://gw:***@db.plant:5432/gw");
        assert_eq!(c["alarms"]["notify"][0]["secret"], MASK);
        assert_eq!(c["alarms"]["notify"][0]["headers"]["Authorization"], MASK);
        assert_eq!(c["alarms"]["notify"][0]["url"], "https://pager.plant/notify");
        assert_eq!(c["devices"][0]["password"], MASK);
        assert_eq!(c["devices"][0]["username"], "ua-user");
        assert_eq!(c["devices"][0]["endpoint"], "opc.tcp://plc.plant:4840");
        assert_eq!(c["connectors"][1]["password"], MASK);
        assert_eq!(c["connectors"][2]["token"], MASK);
        assert_eq!(c["connectors"][0]["url"], "mqtt://bob:***@broker.plant:1883");
        // Defaults are filled in: the document is what runs, not only what the file said.
        assert!(c["api"]["bind"].is_string() && c["bus"]["preset"].is_string(), "{c}");
        assert!(c["gateway"]["name"].is_string());
    }

    #[test]
    fn every_string_that_debug_output_hides_is_hidden_here_too() {
        // The config types' `Debug` hides each `Secret` field (it prints `***`): any string
        // of the unmasked sections that `Debug` never prints is one of them, so a secret
        // field added later without a name this module knows still fails here.
        let cfg = loaded();
        // Compared by letters and digits alone: `Debug` spells enums and versions its own way
        // (`JsonBatch` for `json_batch`, `V311` for `3.1.1`).
        let norm = |s: &str| s.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase();
        let debug = norm(&format!("{cfg:?}"));
        let mut raw = Vec::new();
        for v in [
            serde_json::to_value(&cfg.alarms).unwrap(),
            Value::Array(cfg.connectors.iter().map(|c| c.to_json()).collect()),
            Value::Array(cfg.devices.iter().map(|d| d.to_json()).collect()),
        ] {
            strings(&v, &mut raw);
        }
        let shown = masked(&cfg, None).to_string();
        let hidden: Vec<&String> = raw.iter().filter(|s| s.len() > 3 && !debug.contains(&norm(s))).collect();
        assert!(!hidden.is_empty(), "the file's secrets are hidden from Debug output");
        for s in hidden {
            assert!(!shown.contains(s.as_str()), "{s:?} is hidden by Debug but shown in {shown}");
        }
    }

    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(m) => m.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }

    #[test]
    fn fields_named_like_secrets_are_masked_in_any_section() {
        let mut v = json!({"x": {"nkey_seed": "SUAAA", "client_secret": "c", "token_ttl_s": 60, "key_file": "/k.pem",
                                 "list": [{"db_password": "p"}], "note": "a?password=q"}});
        mask(&mut v, None);
        assert_eq!(
            v,
            json!({"x": {"nkey_seed": MASK, "client_secret": MASK, "token_ttl_s": 60, "key_file": "/k.pem",
                          "list": [{"db_password": MASK}], "note": "a?password=***"}})
        );
    }
}
