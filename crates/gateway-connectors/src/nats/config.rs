//! `[[connectors]]` with `kind = "nats"`: the fields, their defaults, and
//! the checks that name the first bad field. Files the connector needs (the
//! `.creds` file, TLS certificates and keys) are read here, during
//! validation, so `edge-gateway config check` refuses a missing or
//! unreadable one with its field instead of the running connector finding
//! out. Secrets (token, password, NKey seed) are [`Secret`]s: never in an
//! error, a log line or `Debug` output; server URLs are shown through
//! [`redact_url`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway_bus::Filter;
use gateway_model::{FieldError, FrameKind, Secret, TagPattern, redact_url};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::StartFrom;

/// The placeholder of `subject_prefix` that stands for the gateway's name.
pub(super) const GATEWAY_NAME: &str = "{gateway_name}";

/// How readings are laid out in messages; see the subject layout in the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One message per value at `{prefix}.data.{device}.{point}`:
    /// `{"tag","value","quality","ts","seq"}`.
    Json,
    /// Up to `batch_max_values` values per message at `{prefix}.batch`: `{"values":[...]}`.
    JsonBatch,
    /// Per device, a Sparkplug B `Payload` (protobuf) of up to
    /// `batch_max_values` metrics at `{prefix}.spb.{device}`, each metric
    /// with its name, time, type, value and the properties `Quality` and `seq`.
    SparkplugB,
}

/// `[[connectors]]` with `kind = "nats"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Servers to connect to (`nats://host:4222`, `tls://host:4222`), any
    /// node of the cluster; the client fails over among them and the nodes
    /// the cluster announces. At least one.
    pub servers: Vec<String>,
    /// The JetStream stream the readings go into.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Create the stream when it does not exist (with `subjects`,
    /// `replicas`, `max_age_s`, `max_bytes`, `duplicate_window_s`); `false`:
    /// only bind to an existing one and report its absence. An existing
    /// stream is never changed, only checked to capture this gateway's subjects.
    #[serde(default = "default_create_stream")]
    pub create_stream: bool,
    /// Subjects of a stream this connector creates (default: the data
    /// subjects of every gateway under the same prefix, `{prefix}` with
    /// `{gateway_name}` as `*`: `gw.*.data.>`, `gw.*.batch`, `gw.*.spb.>`).
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    /// Replicas of a stream this connector creates: 1, or 3 (or 5) on a cluster.
    #[serde(default = "default_replicas")]
    pub replicas: u8,
    /// Age after which the stream discards a message, in seconds (0: never).
    #[serde(default = "default_max_age_s")]
    pub max_age_s: u64,
    /// Bytes the stream keeps at most before discarding the oldest (0: no limit).
    #[serde(default)]
    pub max_bytes: u64,
    /// How long the stream remembers message ids to drop a resent message,
    /// in seconds: longer than the longest outage during which a message
    /// may be stored but its acknowledgement lost (default 120, JetStream's own).
    #[serde(default = "default_duplicate_window_s")]
    pub duplicate_window_s: u64,
    /// Subject prefix of data, commands and their answers;
    /// `{gateway_name}` stands for `[gateway] name`.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// `json`, `json_batch` (the default: the fewest messages and
    /// acknowledgements per value) or `sparkplug_b`.
    #[serde(default = "default_format")]
    pub format: Format,
    /// Tag patterns to forward (default everything).
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// Values per message for `json_batch` and `sparkplug_b` (a message the
    /// server's `max_payload` would refuse is cut smaller).
    #[serde(default = "default_batch_max_values")]
    pub batch_max_values: usize,
    /// Messages published and not yet acknowledged by the stream, at most;
    /// while the window is full nothing more is read from the bus.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// How long a publish waits for the stream's acknowledgement before it
    /// counts as failed and is sent again (with its message id, so the
    /// stream drops it if it had been stored after all).
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// Values per second at most while catching up on a backlog (default: as
    /// fast as the stream acknowledges). A fleet that comes back from a
    /// plant-wide outage at once may want a cap.
    #[serde(default)]
    pub replay_max_rate: Option<u64>,
    /// Take commands on `{prefix}.cmd.>` (default true).
    #[serde(default = "default_commands")]
    pub commands: bool,
    /// Forward alarm transitions (default false): JSON at
    /// `{prefix}.alarms.{rule}.{tag}`, in bus order with the readings, every
    /// alarm whatever `include` says. A stream that does not capture those
    /// subjects gets the readings only (a warning says so). Off by default
    /// because a fleet's stream and its users' publish permissions may have
    /// been set up for the data subjects only: a message the server refuses
    /// to take would hold up every reading behind it.
    #[serde(default)]
    pub alarms: bool,
    /// How long a command may wait for its device.
    #[serde(default = "default_command_timeout_ms")]
    pub command_timeout_ms: u64,
    /// First delay after a failed connection or publish (doubled per
    /// failure, with jitter for connections).
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest such delay.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Token authentication.
    #[serde(default)]
    pub token: Option<Secret>,
    /// User name for user/password authentication; needs `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// Password of `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// NKey seed (`SU...`) for NKey authentication.
    #[serde(default)]
    pub nkey_seed: Option<Secret>,
    /// A `.creds` file (the user's JWT and NKey seed, as `nsc` writes it),
    /// for decentralised (operator/account) authentication.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// Use TLS with every server even for `nats://` URLs (`tls://` URLs
    /// always do).
    #[serde(default)]
    pub tls: bool,
    /// CA certificates (PEM) the servers' certificates are checked against;
    /// default the system bundle. Implies TLS.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Where a connector that never ran starts: `latest` (the default) or `oldest`.
    #[serde(default)]
    pub start_from: StartFrom,
}

fn default_stream() -> String {
    "EDGE_GATEWAY".into()
}
const fn default_create_stream() -> bool {
    true
}
const fn default_replicas() -> u8 {
    1
}
const fn default_max_age_s() -> u64 {
    // A week: room to notice and bridge a consumer's outage, bounded disk.
    7 * 24 * 3600
}
const fn default_duplicate_window_s() -> u64 {
    120
}
fn default_subject_prefix() -> String {
    format!("gw.{GATEWAY_NAME}")
}
const fn default_format() -> Format {
    Format::JsonBatch
}
fn default_include() -> Vec<String> {
    vec!["*".into()]
}
const fn default_batch_max_values() -> usize {
    1000
}
const fn default_max_inflight() -> u16 {
    64
}
const fn default_ack_timeout_ms() -> u64 {
    5000
}
const fn default_commands() -> bool {
    true
}
const fn default_command_timeout_ms() -> u64 {
    5000
}
const fn default_reconnect_min_ms() -> u64 {
    200
}
const fn default_reconnect_max_ms() -> u64 {
    30_000
}

/// How the connector proves who it is.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Auth {
    None,
    Token(Secret),
    UserPassword(String, Secret),
    NKey(Secret),
    /// The contents of a `.creds` file.
    Creds(Secret),
}

/// A subject token (or tokens) safe from `*`, `>`, whitespace and empty tokens.
pub(super) fn subject_safe(s: &str) -> String {
    s.split('.')
        .map(|t| {
            let t: String =
                t.chars().map(|c| if c == '*' || c == '>' || c.is_whitespace() { '_' } else { c }).collect();
            if t.is_empty() { "_".into() } else { t }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether `s` is a valid subject (or, with `wildcards`, a subject filter).
fn valid_subject(s: &str, wildcards: bool) -> bool {
    let tokens: Vec<&str> = s.split('.').collect();
    !s.is_empty()
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && !t.chars().any(char::is_whitespace)
                && (match *t {
                    "*" => wildcards,
                    ">" => wildcards && i + 1 == tokens.len(),
                    _ => !t.contains(['*', '>']),
                })
        })
}

impl NatsConfig {
    /// A configuration for `servers` with every other field at its default.
    pub fn new(servers: &[&str]) -> Self {
        serde_json::from_value(json!({ "servers": servers })).expect("defaults are valid")
    }

    /// The frames this connector forwards.
    pub fn filter(&self) -> Filter {
        let patterns: Vec<TagPattern> = self.include.iter().filter_map(|p| TagPattern::new(p).ok()).collect();
        if self.alarms {
            Filter::all().patterns(patterns).kinds([FrameKind::Data, FrameKind::Event]).all_events()
        } else {
            Filter::all().patterns(patterns).kinds([FrameKind::Data])
        }
    }

    /// `subject_prefix` for the gateway named `gateway`.
    pub fn prefix(&self, gateway: &str) -> String {
        self.subject_prefix.replace(GATEWAY_NAME, gateway)
    }

    /// The subjects of a stream this connector creates: `subjects`, or the
    /// data and alarm subjects of every gateway under the prefix.
    pub fn stream_subjects(&self) -> Vec<String> {
        match &self.subjects {
            Some(s) => s.clone(),
            None => {
                let fleet = self.prefix("*");
                vec![
                    format!("{fleet}.data.>"),
                    format!("{fleet}.batch"),
                    format!("{fleet}.spb.>"),
                    format!("{fleet}.alarms.>"),
                ]
            }
        }
    }

    /// How the connector authenticates, with the `.creds` file read now.
    pub(super) fn auth(&self) -> Result<Auth, FieldError> {
        Ok(match (&self.token, &self.username, &self.nkey_seed, &self.creds_file) {
            (None, None, None, None) => Auth::None,
            (Some(t), None, None, None) => Auth::Token(t.clone()),
            (None, Some(u), None, None) => {
                let p =
                    self.password.clone().ok_or_else(|| FieldError::new("password", "username needs a password"))?;
                Auth::UserPassword(u.clone(), p)
            }
            (None, None, Some(seed), None) => {
                // async-nats only logs a bad seed and connects without it:
                // refuse it here, where the field can be named.
                if nkeys::KeyPair::from_seed(seed.expose()).is_err() {
                    return Err(FieldError::new(
                        "nkey_seed",
                        "is not an NKey seed (a user seed starts with SU; `nsc` or `nk -gen user` makes one)",
                    ));
                }
                Auth::NKey(seed.clone())
            }
            (None, None, None, Some(path)) => Auth::Creds(read_creds(path)?),
            _ => {
                return Err(FieldError::new(
                    "token",
                    "give one way to authenticate: token, username/password, nkey_seed or creds_file",
                ));
            }
        })
    }

    /// Whether the connection uses TLS (`tls`, a `tls://` server or a TLS file).
    pub fn uses_tls(&self) -> bool {
        self.tls
            || self.ca_file.is_some()
            || self.client_cert_file.is_some()
            || self.servers.iter().any(|s| s.starts_with("tls://"))
    }

    /// The TLS client configuration (`None` without TLS), read from the
    /// CA, certificate and key files now.
    pub fn tls_config(&self) -> Result<Option<rustls::ClientConfig>, FieldError> {
        if !self.uses_tls() {
            return Ok(None);
        }
        crate::tls::client_config(
            self.ca_file.as_deref(),
            self.client_cert_file.as_deref(),
            self.client_key_file.as_deref(),
        )
        .map(Some)
    }

    /// The servers as the client takes them; errors name `servers[i]` and
    /// show the URL without a password.
    pub(super) fn server_addrs(&self) -> Result<Vec<async_nats::ServerAddr>, FieldError> {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let shown = redact_url(s);
                let at = || format!("servers[{i}]");
                let scheme_ok = ["nats://", "tls://"].iter().any(|p| s.starts_with(p)) || !s.contains("://");
                if !scheme_ok {
                    return Err(FieldError::new(at(), format!("{shown:?} must be nats://host:port or tls://host:port")));
                }
                if s.contains('@') {
                    return Err(FieldError::new(
                        at(),
                        format!("{shown:?} carries credentials: give them as token, username/password, nkey_seed or creds_file"),
                    ));
                }
                s.parse::<async_nats::ServerAddr>()
                    .map_err(|_| FieldError::new(at(), format!("{shown:?} is not a server address (nats://host:port)")))
            })
            .collect()
    }

    pub(super) fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }

    pub(super) fn backoff(&self) -> (Duration, Duration) {
        (Duration::from_millis(self.reconnect_min_ms), Duration::from_millis(self.reconnect_max_ms))
    }
}

/// Reads a `.creds` file and checks that it holds a JWT and a seed, as the
/// client will read it.
fn read_creds(path: &Path) -> Result<Secret, FieldError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| FieldError::new("creds_file", format!("cannot read {}: {e}", path.display())))?;
    if !text.contains("-----BEGIN NATS USER JWT-----") || !text.contains("-----BEGIN USER NKEY SEED-----") {
        return Err(FieldError::new(
            "creds_file",
            format!("{} is not a NATS .creds file (a user JWT and its NKey seed)", path.display()),
        ));
    }
    async_nats::ConnectOptions::with_credentials(&text)
        .map_err(|e| FieldError::new("creds_file", format!("{} cannot be used: {e}", path.display())))?;
    Ok(Secret::new(text))
}

/// Checks the fields, files included; the error names the first bad one.
pub(super) fn validate(cfg: &NatsConfig) -> Result<(), FieldError> {
    if cfg.servers.is_empty() {
        return Err(FieldError::new("servers", "give at least one server, e.g. [\"nats://127.0.0.1:4222\"]"));
    }
    cfg.server_addrs()?;
    let stream_ok = !cfg.stream.is_empty()
        && cfg.stream.len() <= 64
        && cfg.stream.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if !stream_ok {
        return Err(FieldError::new(
            "stream",
            format!("{:?} is not a stream name: use 1-64 of A-Z a-z 0-9 _ -", cfg.stream),
        ));
    }
    if !matches!(cfg.replicas, 1..=5) {
        return Err(FieldError::new("replicas", format!("must be between 1 and 5, got {}", cfg.replicas)));
    }
    if cfg.duplicate_window_s == 0 {
        return Err(FieldError::new("duplicate_window_s", "must be at least 1: resent messages are dropped by it"));
    }
    if cfg.max_age_s > 0 && cfg.duplicate_window_s > cfg.max_age_s {
        return Err(FieldError::new("duplicate_window_s", "must not be longer than max_age_s"));
    }
    // Any name stands in for the gateway's: what is checked is the rest of the prefix.
    if !valid_subject(&cfg.prefix("gw"), false) {
        return Err(FieldError::new(
            "subject_prefix",
            format!("{:?} is not a subject prefix: tokens separated by '.', without * > or spaces", cfg.subject_prefix),
        ));
    }
    if cfg.subjects.is_none() {
        // The stream's default subjects put a wildcard where the gateway's
        // name goes: it must be a whole token ("site.l-{gateway_name}" is not).
        if let Some(bad) = cfg.stream_subjects().into_iter().find(|s| !valid_subject(s, true)) {
            return Err(FieldError::new(
                "subject_prefix",
                format!(
                    "{:?} makes the stream subject {bad:?}, which is not a subject filter: put {{gateway_name}} in a token of its own, or give `subjects`",
                    cfg.subject_prefix
                ),
            ));
        }
    }
    if let Some(subjects) = &cfg.subjects {
        if subjects.is_empty() {
            return Err(FieldError::new("subjects", "give at least one subject, or leave the field out"));
        }
        for (i, s) in subjects.iter().enumerate() {
            if !valid_subject(s, true) {
                return Err(FieldError::new(format!("subjects[{i}]"), format!("{s:?} is not a subject filter")));
            }
        }
    }
    for (i, p) in cfg.include.iter().enumerate() {
        TagPattern::new(p).map_err(|e| FieldError::new(format!("include[{i}]"), e))?;
    }
    if !(1..=100_000).contains(&cfg.batch_max_values) {
        return Err(FieldError::new(
            "batch_max_values",
            format!("must be between 1 and 100000, got {}", cfg.batch_max_values),
        ));
    }
    if cfg.max_inflight == 0 {
        return Err(FieldError::new("max_inflight", "must be at least 1"));
    }
    if cfg.ack_timeout_ms < 100 {
        return Err(FieldError::new("ack_timeout_ms", "must be at least 100"));
    }
    if cfg.replay_max_rate == Some(0) {
        return Err(FieldError::new("replay_max_rate", "must be at least 1 value per second, or left out"));
    }
    if cfg.command_timeout_ms == 0 {
        return Err(FieldError::new("command_timeout_ms", "must be at least 1"));
    }
    if cfg.reconnect_min_ms == 0 || cfg.reconnect_min_ms > cfg.reconnect_max_ms {
        return Err(FieldError::new("reconnect_min_ms", "must be at least 1 and at most reconnect_max_ms"));
    }
    if cfg.username.is_none() && cfg.password.is_some() {
        return Err(FieldError::new("password", "a password needs a username"));
    }
    cfg.auth()?;
    if cfg.client_cert_file.is_some() != cfg.client_key_file.is_some() {
        return Err(FieldError::new("client_key_file", "client_cert_file and client_key_file go together"));
    }
    cfg.tls_config()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl FnOnce(&mut NatsConfig)) -> Result<(), FieldError> {
        let mut c = NatsConfig::new(&["nats://127.0.0.1:4222"]);
        f(&mut c);
        validate(&c)
    }

    #[test]
    fn the_defaults_are_valid_and_the_prefix_carries_the_gateway_name() {
        let c = NatsConfig::new(&["nats://a:4222", "nats://b:4222"]);
        assert!(validate(&c).is_ok());
        assert_eq!(c.prefix("line1"), "gw.line1");
        assert_eq!(c.stream_subjects(), ["gw.*.data.>", "gw.*.batch", "gw.*.spb.>", "gw.*.alarms.>"]);
        assert!(!c.alarms, "alarms are opt-in: a fleet's permissions may not allow their subjects");
        assert_eq!(c.format, Format::JsonBatch);
        assert_eq!(c.auth().unwrap(), Auth::None);
        assert!(!c.uses_tls());
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(check(|c| c.servers.clear()).unwrap_err().path, "servers");
        assert_eq!(check(|c| c.servers.push("http://h".into())).unwrap_err().path, "servers[1]");
        assert_eq!(check(|c| c.stream = "a.b".into()).unwrap_err().path, "stream");
        assert_eq!(check(|c| c.replicas = 0).unwrap_err().path, "replicas");
        assert_eq!(check(|c| c.subject_prefix = "gw.>".into()).unwrap_err().path, "subject_prefix");
        assert_eq!(check(|c| c.subject_prefix = "gw..x".into()).unwrap_err().path, "subject_prefix");
        assert_eq!(check(|c| c.subjects = Some(vec!["a.>.b".into()])).unwrap_err().path, "subjects[0]");
        assert_eq!(check(|c| c.include = vec!["a b".into()]).unwrap_err().path, "include[0]");
        assert_eq!(check(|c| c.max_inflight = 0).unwrap_err().path, "max_inflight");
        assert_eq!(check(|c| c.duplicate_window_s = 0).unwrap_err().path, "duplicate_window_s");
        assert_eq!(check(|c| c.replay_max_rate = Some(0)).unwrap_err().path, "replay_max_rate");
        assert_eq!(check(|c| c.reconnect_min_ms = 0).unwrap_err().path, "reconnect_min_ms");
        assert_eq!(check(|c| c.username = Some("bob".into())).unwrap_err().path, "password");
        let two = check(|c| {
            c.token = Some(Secret::new("t"));
            c.nkey_seed = Some(Secret::new("SU"));
        });
        assert_eq!(two.unwrap_err().path, "token");
        assert_eq!(check(|c| c.nkey_seed = Some(Secret::new("SUnot-a-seed"))).unwrap_err().path, "nkey_seed");
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        assert!(check(|c| c.nkey_seed = Some(Secret::new(seed.clone()))).is_ok());
        let e = check(|c| c.subject_prefix = "site.l-{gateway_name}".into()).unwrap_err();
        assert_eq!(e.path, "subject_prefix", "{e}");
        assert!(
            check(|c| {
                c.subject_prefix = "site.l-{gateway_name}".into();
                c.subjects = Some(vec!["site.>".into()]);
            })
            .is_ok()
        );
    }

    #[test]
    fn no_error_and_no_debug_output_shows_a_secret() {
        let e = check(|c| c.servers = vec!["nats://bob:s3cret@h:4222".into()]).unwrap_err();
        assert_eq!(e.path, "servers[0]");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let mut c = NatsConfig::new(&["nats://h:4222"]);
        c.username = Some("bob".into());
        c.password = Some(Secret::new("s3cret"));
        c.token = Some(Secret::new("t0ken"));
        let shown = format!("{c:?} {}", validate(&c).unwrap_err());
        assert!(!shown.contains("s3cret") && !shown.contains("t0ken"), "{shown}");
    }

    #[test]
    fn a_missing_or_malformed_creds_file_is_refused_when_the_config_is_checked() {
        let e = check(|c| c.creds_file = Some("/nonexistent/gw.creds".into())).unwrap_err();
        assert_eq!(e.path, "creds_file");
        assert!(e.message.contains("cannot read /nonexistent/gw.creds"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.creds");
        std::fs::write(&bad, "not a creds file\n").unwrap();
        assert_eq!(check(|c| c.creds_file = Some(bad.clone())).unwrap_err().path, "creds_file");
    }

    #[test]
    fn tls_files_are_read_when_the_config_is_checked() {
        let e = check(|c| c.ca_file = Some("/nonexistent/ca.pem".into())).unwrap_err();
        assert_eq!(e.path, "ca_file");
        let e = check(|c| {
            c.ca_file = Some(crate::tls::SYSTEM_CA_BUNDLE.into());
            c.client_cert_file = Some("/nonexistent/cert.pem".into());
        })
        .unwrap_err();
        assert_eq!(e.path, "client_key_file", "{e}");
        let mut c = NatsConfig::new(&["tls://h:4222"]);
        assert!(c.uses_tls());
        c.servers = vec!["nats://h:4222".into()];
        assert!(c.tls_config().unwrap().is_none());
    }

    #[test]
    fn subjects_are_made_safe_token_by_token() {
        assert_eq!(subject_safe("temp"), "temp");
        assert_eq!(subject_safe("a.b"), "a.b");
        assert_eq!(subject_safe("a..b*> c"), "a._.b___c");
        assert!(valid_subject("gw.*.data.>", true));
        assert!(!valid_subject("gw.*.data", false));
        assert!(!valid_subject("gw.>.x", true));
    }
}
