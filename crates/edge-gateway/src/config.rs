//! The configuration file: one TOML document, every section a typed struct
//! that refuses unknown fields, environment overrides
//! (`GATEWAY__SECTION__FIELD`), and errors that carry the path of the bad
//! field, e.g. `devices[1].tags[0].data_type: unknown variant `flaot``.

use std::path::{Path, PathBuf};

use gateway_alarms::AlarmsConfig;
use gateway_api::ApiConfig;
use gateway_bus::{BusConfig, BusSettings};
use gateway_connectors::ConnectorConfig;
use gateway_drivers::{DeviceConfig, DevicePolicy};
use gateway_model::FieldError;

use crate::tuning::TuningConfig;
use gateway_store::{DatabaseConfig, HistoryConfig};
use serde::Deserialize;

/// The built-in default configuration (printed by `edge-gateway config default`).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

fn cerr(path: impl Into<String>, message: impl std::fmt::Display) -> FieldError {
    FieldError::new(path, message)
}

/// `[gateway]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// This gateway's name among a fleet: 1-64 of `A-Z a-z 0-9 _ -`, so that
    /// it is one token of a NATS subject and an MQTT topic level. Connectors
    /// put it in what they send (the NATS connector's subjects and message
    /// ids), so two gateways feeding one place must not share it. Default:
    /// the machine's host name, each character outside that set turned into `-`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where the WAL and the SQLite database live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Log level (RUST_LOG overrides it).
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// `text` (default: one readable line per event) or `json` (one JSON
    /// object per line, for journald forwarding, Loki, Elastic and the like).
    #[serde(default)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the
    /// event's `message` and fields.
    Json,
}

/// Longest gateway name.
const NAME_MAX: usize = 64;

/// The machine's host name as a gateway name: characters outside
/// `A-Z a-z 0-9 _ -` become `-`, cut to [`NAME_MAX`]; `edge-gateway` if the
/// host has no name.
fn default_name() -> String {
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    name_from_host(&host)
}

fn name_from_host(host: &str) -> String {
    let name: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
        .take(NAME_MAX)
        .collect();
    if name.is_empty() { "edge-gateway".into() } else { name }
}

impl GatewaySection {
    /// Checks `name`; paths relative to `[gateway]`.
    pub fn validate(&self) -> Result<(), FieldError> {
        let ok = !self.name.is_empty()
            && self.name.len() <= NAME_MAX
            && self.name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if ok {
            Ok(())
        } else {
            Err(cerr("name", format!("{:?} is not a valid gateway name: use 1-64 of A-Z a-z 0-9 _ -", self.name)))
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            name: default_name(),
            data_dir: default_data_dir(),
            log_level: default_log_level(),
            log_format: LogFormat::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    gateway: GatewaySection,
    #[serde(default)]
    bus: BusConfig,
    #[serde(default)]
    api: ApiConfig,
    #[serde(default)]
    database: DatabaseConfig,
    #[serde(default)]
    history: HistoryConfig,
    #[serde(default)]
    security: DevicePolicy,
    #[serde(default)]
    alarms: AlarmsConfig,
    #[serde(default)]
    tuning: TuningConfig,
    #[serde(default)]
    devices: Vec<toml::Value>,
    #[serde(default)]
    connectors: Vec<toml::Value>,
}

/// A loaded, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `[gateway]`, with `data_dir` as given (or overridden on the command line).
    pub gateway: GatewaySection,
    /// `[bus]`: the preset with the explicit fields applied, `wal_dir` resolved.
    pub bus: BusSettings,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[history]`.
    pub history: HistoryConfig,
    /// `[security]`: what devices may reach.
    pub security: DevicePolicy,
    /// `[alarms]`: rules, the gateway's watch on itself, notifications.
    pub alarms: AlarmsConfig,
    /// `[tuning]`: self-tuning under CPU load.
    pub tuning: TuningConfig,
    /// `[[devices]]`.
    pub devices: Vec<DeviceConfig>,
    /// `[[connectors]]`.
    pub connectors: Vec<ConnectorConfig>,
    /// Settings accepted but without effect in this gateway, each a sentence
    /// naming the field: logged as warnings at start, printed by `config check`.
    pub notes: Vec<String>,
}

/// Sets `GATEWAY__A__B=v` variables into the document as `a.b = v`. Values
/// that parse as TOML (numbers, booleans, quoted strings, arrays) keep their
/// type; anything else is a string.
pub fn apply_env(doc: &mut toml::Table, vars: impl IntoIterator<Item = (String, String)>) -> Result<(), FieldError> {
    for (key, raw) in vars {
        let Some(rest) = key.strip_prefix("GATEWAY__") else { continue };
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if parts.iter().any(String::is_empty) {
            return Err(cerr(key.clone(), "malformed override: use GATEWAY__SECTION__FIELD"));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw.clone()));
        let mut table = &mut *doc;
        for (i, p) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                table.insert(p.clone(), value.clone());
            } else {
                let entry = table.entry(p.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry {
                    toml::Value::Table(t) => table = t,
                    _ => {
                        return Err(cerr(
                            parts[..=i].join("."),
                            format!("{key} overrides a value that is not a section"),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Parses a configuration from TOML text, applies environment overrides,
/// `data_dir_override`, and validates everything.
pub fn load_str(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    data_dir_override: Option<&Path>,
) -> Result<Config, FieldError> {
    let mut doc: toml::Table =
        toml::from_str(text).map_err(|e| cerr("", format!("invalid TOML: {}", e.to_string().trim_end())))?;
    apply_env(&mut doc, env)?;
    let raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
        let path = e.path().to_string();
        cerr(if path == "." { String::new() } else { path }, e.into_inner())
    })?;
    let mut gateway = raw.gateway;
    if let Some(d) = data_dir_override {
        gateway.data_dir = d.to_owned();
    }
    gateway.validate().map_err(|e| e.under("gateway"))?;
    let bus = raw.bus.resolve(&gateway.data_dir).map_err(|e| e.under("bus"))?;
    let mut notes = Vec::new();
    if raw.bus.batch != gateway_bus::BatchConfig::default() {
        // The original batched frames published one at a time; here every
        // driver publishes one batch per poll, so nothing waits to be batched.
        notes.push(
            "bus.batch (max_batch_size, flush_interval_ms, max_memory_bytes) is accepted for the original \
             gateway's files but has no effect here: drivers publish each poll as one batch"
                .to_owned(),
        );
    }
    raw.api.validate().map_err(|e| e.under("api"))?;
    raw.database.validate().map_err(|e| e.under("database"))?;
    raw.history.validate().map_err(|e| e.under("history"))?;
    raw.alarms.validate().map_err(|e| e.under("alarms"))?;
    raw.tuning.validate().map_err(|e| e.under("tuning"))?;
    if let Some(i) = raw.alarms.rules.iter().position(|r| r.name.starts_with(gateway_api::alarms::SYSTEM_PREFIX)) {
        return Err(cerr(
            format!("alarms.rules[{i}].name"),
            "names starting with \"system.\" are the gateway's own rules; change their thresholds in [alarms.system]",
        ));
    }
    let devices_json: Vec<serde_json::Value> = raw
        .devices
        .into_iter()
        .enumerate()
        .map(|(i, v)| serde_json::to_value(v).map_err(|e| cerr(format!("devices[{i}]"), e)))
        .collect::<Result<_, _>>()?;
    raw.security.validate().map_err(|e| e.under("security"))?;
    let devices = gateway_drivers::parse_devices(devices_json, "devices")?;
    for (i, d) in devices.iter().enumerate() {
        raw.security.check(d).map_err(|e| e.under(&format!("devices[{i}]")))?;
    }
    let connectors_json: Vec<serde_json::Value> = raw
        .connectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| serde_json::to_value(v).map_err(|e| cerr(format!("connectors[{i}]"), e)))
        .collect::<Result<_, _>>()?;
    let connectors = gateway_connectors::parse_connectors(connectors_json, "connectors")?;
    Ok(Config {
        gateway,
        bus,
        api: raw.api,
        database: raw.database,
        history: raw.history,
        security: raw.security,
        alarms: raw.alarms,
        tuning: raw.tuning,
        devices,
        connectors,
        notes,
    })
}

/// Reads and validates a configuration file (or the built-in default).
pub fn load(path: Option<&Path>, data_dir_override: Option<&Path>) -> Result<Config, FieldError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| cerr("", format!("cannot read {}: {e}", p.display())))?,
        None => DEFAULT_TOML.to_owned(),
    };
    load_str(&text, std::env::vars(), data_dir_override)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, FieldError> {
        load_str(text, Vec::new(), None)
    }

    #[test]
    fn the_default_config_is_valid_and_runs_simulated_devices() {
        let c = load(DEFAULT_TOML).unwrap();
        assert!(c.devices.len() >= 2);
        assert_eq!(c.api.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.api.request_timeout_s, 30);
        assert_eq!(c.database.max_connections, 50);
        assert_eq!(c.bus.wal_dir, PathBuf::from("./data").join("wal"));
        assert!(c.devices.iter().flat_map(|d| &d.tags).any(|t| t.writable));
        assert!(c.history.enabled, "history is on by default");
        assert_eq!(c.history, HistoryConfig::default(), "default.toml shows the defaults");
        assert_eq!(c.alarms, AlarmsConfig::default(), "default.toml shows the alarm defaults");
        assert_eq!(c.tuning, TuningConfig::default(), "default.toml shows the tuning defaults");
    }

    #[test]
    fn errors_carry_the_path_of_the_bad_field() {
        let e = load("[tuning]\ncpu_low_percent = 90\n").unwrap_err();
        assert_eq!(e.path, "tuning.cpu_low_percent", "{e}");
        let e = load("[tuning]\nmax_wal_flush = 90\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `max_wal_flush`"), "{e}");
        let e = load("[api]\nbind = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.path, "api.bind", "{e}");
        let e = load("[bus]\nrign_pow = 3\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `rign_pow`"), "{e}");
        let e = load("[bus]\nring_pow = 30\n").unwrap_err();
        assert_eq!(e.path, "bus.ring_pow");
        let e = load("[database]\nmin_connections = 90\n").unwrap_err();
        assert_eq!(e.path, "database.min_connections", "{e}");
        let e = load("[history]\nretention = \"30 days\"\n").unwrap_err();
        assert_eq!(e.path, "history.retention", "{e}");
        let e = load("[history]\nrollups = [{ interval = \"90s\", retention = \"1d\" }]\n").unwrap_err();
        assert_eq!(e.path, "history.rollups[0].retention", "{e}");
        let e = load("[history.database]\nurl = \"postgres://gw:s3cret@db:99999999/h\"\n").unwrap_err();
        assert_eq!(e.path, "history.database.url", "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = load("[[devices]]\nname = \"a\"\ndriver = \"sim\"\n[[devices]]\nname = \"b\"\ndriver = \"sim\"\n[[devices.tags]]\nname = \"t\"\nsignal = \"sine\"\ndata_type = \"flaot\"\n").unwrap_err();
        assert_eq!(e.path, "devices[1].tags[0].data_type");
        assert!(e.message.contains("unknown variant `flaot`"), "{e}");
        let e = load("[[connectors]]\nname = \"up\"\nkind = \"mqtt\"\nurl = \"mqtt://h\"\nqos = 3\n").unwrap_err();
        assert_eq!(e.path, "connectors[0].qos", "{e}");
        let e = load("[[connectors]]\nname = \"up\"\nkind = \"mqtt\"\nurl = \"http://h\"\n").unwrap_err();
        assert_eq!(e.path, "connectors[0].url", "{e}");
        let e = load("[[connectors]]\nname = \"up\"\nkind = \"kafka\"\n").unwrap_err();
        assert_eq!(e.path, "connectors[0].kind", "{e}");
        let e = load("[colour]\nx = 1\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let e = load("[security]\ndevice_hosts = [\"10.0.0.0/8\"]\n[[devices]]\nname = \"p\"\ndriver = \"modbus_tcp\"\naddress = \"192.168.1.5:502\"\n").unwrap_err();
        assert_eq!(e.path, "devices[0].address", "{e}");
        let e = load("[security]\nmodbus_rtu_ports = [\"dev/*\"]\n").unwrap_err();
        assert_eq!(e.path, "security.modbus_rtu_ports[0]", "{e}");
        let e = load("[[connectors]]\nname = \"up\"\nkind = \"mqtt\"\nurl = \"mqtt://bob:s3cret@broker:99999\"\n")
            .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "a config error never shows a password: {e}");
        let e = load("[[alarms.rules]]\nname = \"hot\"\ntag = \"a.b\"\nkind = \"high\"\n").unwrap_err();
        assert_eq!(e.path, "alarms.rules[0].limit", "{e}");
        let e = load("[[alarms.rules]]\nname = \"hot\"\ntag = \"a.b\"\nkind = \"hihg\"\nlimit = 1\n").unwrap_err();
        assert_eq!(e.path, "alarms.rules[0].kind", "{e}");
        let e = load("[[alarms.rules]]\nname = \"system.x\"\ntag = \"a.b\"\nkind = \"bad_quality\"\n").unwrap_err();
        assert_eq!(e.path, "alarms.rules[0].name", "{e}");
        let e = load("[alarms.system]\nanomaly_sigma = 0.1\n").unwrap_err();
        assert_eq!(e.path, "alarms.system.anomaly_sigma", "{e}");
        let e = load("[gateway]\nname = \"line 1\"\n").unwrap_err();
        assert_eq!(e.path, "gateway.name", "{e}");
        let e = load("[api\n").unwrap_err();
        assert!(e.message.starts_with("invalid TOML"), "{e}");
    }

    #[test]
    fn the_gateway_name_defaults_to_the_host_name_made_subject_safe() {
        assert_eq!(name_from_host("plc-line1.plant.local"), "plc-line1-plant-local");
        assert_eq!(name_from_host("gw 7*>"), "gw-7--");
        assert_eq!(name_from_host(""), "edge-gateway");
        assert_eq!(name_from_host(&"x".repeat(100)).len(), NAME_MAX);
        let c = load("").unwrap();
        assert!(c.gateway.validate().is_ok(), "{:?}", c.gateway.name);
        assert_eq!(load("[gateway]\nname = \"line1_gw-2\"\n").unwrap().gateway.name, "line1_gw-2");
    }

    #[test]
    fn batch_settings_are_accepted_with_a_note_that_they_do_nothing() {
        assert!(load("").unwrap().notes.is_empty(), "nothing to say about the default");
        assert!(load(include_str!("default.toml")).unwrap().notes.is_empty(), "nor the file `config default` prints");
        let c = load("[bus.batch]\nflush_interval_ms = 5\n").unwrap();
        assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
        assert!(c.notes[0].starts_with("bus.batch"), "names the section: {}", c.notes[0]);
        assert_eq!(c.bus.batch.flush_interval, std::time::Duration::from_millis(5), "still validated and kept");
    }

    #[test]
    fn environment_variables_override_fields_with_their_types() {
        let env = vec![
            ("GATEWAY__API__BIND".to_string(), "127.0.0.1:9000".to_string()),
            ("GATEWAY__BUS__PRESET".to_string(), "low_latency".to_string()),
            ("GATEWAY__BUS__RING_POW".to_string(), "18".to_string()),
            ("GATEWAY__BUS__BATCH__MAX_BATCH_SIZE".to_string(), "100".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = load_str("", env, Some(Path::new("/tmp/x"))).unwrap();
        assert_eq!(c.api.bind.port(), 9000);
        assert_eq!(c.bus.ring_pow, 18);
        assert_eq!(c.bus.wal_flush_ms, 1, "the low_latency preset applies");
        assert_eq!(c.bus.batch.max_batch_size, 100);
        assert_eq!(c.bus.wal_dir, PathBuf::from("/tmp/x/wal"));
        let e = load_str("", vec![("GATEWAY__API__NOPE".to_string(), "1".to_string())], None).unwrap_err();
        assert!(e.to_string().contains("unknown field `nope`"), "{e}");
    }
}
