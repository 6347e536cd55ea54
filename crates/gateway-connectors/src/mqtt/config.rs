//! `[[connectors]]` with `kind = "mqtt"`: the fields, their defaults, and
//! the checks that name the first bad field. TLS files are read and turned
//! into a client configuration here, during validation, so `config check`
//! refuses a missing or unreadable CA, certificate or key file instead of the
//! running connector finding out.

use std::path::PathBuf;

use gateway_bus::Filter;
use gateway_model::{FieldError, FrameKind, Secret, TagPattern, redact_url};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::link::Protocol;

pub use crate::config::StartFrom;

/// How readings are laid out in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One message per value at `{topic_prefix}/{device}/{tag}`:
    /// `{"tag","value","quality","ts","seq"}`.
    Json,
    /// Many values per message at `{topic_prefix}/batch`: `{"values":[...]}`.
    JsonBatch,
    /// Sparkplug B 3.0: NBIRTH, DBIRTH, DDATA, DDEATH, NDEATH as the will.
    SparkplugB,
}

/// `[[connectors]]` with `kind = "mqtt"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port` (default port 1883) or `mqtts://host:port` (8883),
    /// optionally with `user:password@` before the host (instead of
    /// `username` and `password`). Errors and logs show it with the password
    /// replaced by `***`.
    pub url: String,
    /// MQTT client id (default `edge-gateway-{name}`); a broker drops the
    /// older of two connections with the same id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name sent in CONNECT, if the broker asks for one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password sent with `username` (refused without it); never shown in
    /// errors, logs or `Debug` output.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Topic prefix for data, commands and acknowledgements.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// `3.1.1` (default) or `5`.
    #[serde(default)]
    pub protocol: Protocol,
    /// MQTT 5: how long the broker keeps a persistent session after a
    /// disconnect, in seconds (default one day).
    #[serde(default = "default_session_expiry_s")]
    pub session_expiry_s: u32,
    /// QoS of readings: 0, 1 or 2 (default 1). Births and command
    /// acknowledgements always use 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// `json`, `json_batch` or `sparkplug_b`.
    #[serde(default = "default_format")]
    pub format: Format,
    /// Tag patterns to forward (default everything).
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// Forward alarm transitions (default true): JSON at
    /// `{topic_prefix}/alarms/{rule}/{tag}`, retained, so a client that
    /// subscribes later sees each alarm's last state. Every alarm goes, also
    /// those on tags `include` leaves out, and in every `format`.
    #[serde(default = "default_alarms")]
    pub alarms: bool,
    /// Keep-alive interval in seconds (default 30).
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Start a clean session on every connect (default false: a persistent
    /// session; Sparkplug always uses clean sessions, as its specification asks).
    #[serde(default)]
    pub clean_session: bool,
    /// Messages published but not yet confirmed, at most.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// Values per second at most when replaying a backlog after an outage.
    #[serde(default = "default_replay_max_rate")]
    pub replay_max_rate: u64,
    /// Values per message for `json_batch` and `sparkplug_b`.
    #[serde(default = "default_batch_max_values")]
    pub batch_max_values: usize,
    /// How long readings may be held to send them in fewer, larger messages
    /// (`json_batch`, `sparkplug_b`): a message goes out once it has
    /// `batch_max_values` values or its first reading has waited this long.
    /// 0 (the default): sent as soon as they are read. The self-tuning
    /// controller may widen it under CPU load, up to `[tuning] max_batch_linger_ms`.
    #[serde(default)]
    pub batch_linger_ms: u64,
    /// How long a command from the broker may wait for its device.
    #[serde(default = "default_command_timeout_ms")]
    pub command_timeout_ms: u64,
    /// First reconnection delay (doubled per failure, with ±25 % jitter); also
    /// the first pause after the broker refuses a message.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest reconnection delay, and longest pause after refusals.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// CA certificates (PEM) for `mqtts`; default the system bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Sparkplug group id: the second level of every Sparkplug topic
    /// (`spBv1.0/{group}/...`).
    #[serde(default = "default_sparkplug_group_id")]
    pub sparkplug_group_id: String,
    /// Sparkplug edge node id (default the connector's name).
    #[serde(default)]
    pub sparkplug_edge_node_id: Option<String>,
    /// Where a connector that never ran starts: `latest` (what is published
    /// from now on, the default) or `oldest` (everything still in the WAL).
    #[serde(default)]
    pub start_from: StartFrom,
}

fn default_topic_prefix() -> String {
    "edge-gateway".into()
}
const fn default_session_expiry_s() -> u32 {
    86_400
}
const fn default_qos() -> u8 {
    1
}
const fn default_format() -> Format {
    Format::Json
}
const fn default_alarms() -> bool {
    true
}

fn default_include() -> Vec<String> {
    vec!["*".into()]
}
const fn default_keep_alive_s() -> u64 {
    30
}
const fn default_max_inflight() -> u16 {
    256
}
const fn default_replay_max_rate() -> u64 {
    20_000
}
const fn default_batch_max_values() -> usize {
    500
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
fn default_sparkplug_group_id() -> String {
    "edge".into()
}

/// Where the broker is, from [`MqttConfig::url`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `mqtts://`: connect with TLS.
    pub tls: bool,
    /// Host name or address, without the brackets of an IPv6 address.
    pub host: String,
    /// From the URL, else 1883 (8883 with TLS).
    pub port: u16,
    /// `user[:password]@` of the URL, if it had one.
    pub credentials: Option<(String, Secret)>,
}

fn topic_safe(s: &str) -> bool {
    !s.is_empty() && !s.contains(['+', '#']) && !s.starts_with('/') && !s.ends_with('/')
}

impl MqttConfig {
    /// The frames this connector forwards.
    pub fn filter(&self) -> Filter {
        let patterns: Vec<TagPattern> = self.include.iter().filter_map(|p| TagPattern::new(p).ok()).collect();
        if self.alarms {
            Filter::all().patterns(patterns).kinds([FrameKind::Data, FrameKind::Event]).all_events()
        } else {
            Filter::all().patterns(patterns).kinds([FrameKind::Data])
        }
    }

    /// A configuration for `url` with every other field at its default.
    pub fn new(url: &str) -> Self {
        serde_json::from_value(json!({ "url": url })).expect("defaults are valid")
    }

    /// Host, port, TLS and user-info from `url`; an error names `url` and
    /// shows the URL without its password.
    pub fn endpoint(&self) -> Result<Endpoint, FieldError> {
        let shown = || redact_url(&self.url);
        let (tls, rest) = if let Some(r) = self.url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = self.url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(FieldError::new("url", format!("{:?} must start with mqtt:// or mqtts://", shown())));
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                if user.is_empty() {
                    return Err(FieldError::new("url", format!("{:?} has an empty user name before @", shown())));
                }
                (Some((user.to_owned(), Secret::new(password))), host)
            }
            None => (None, rest),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| FieldError::new("url", format!("invalid port {p:?}")))?;
                (h.trim_start_matches('[').trim_end_matches(']').to_owned(), port)
            }
            _ => (rest.to_owned(), if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() || host.contains('/') {
            return Err(FieldError::new("url", format!("{:?} has no host", shown())));
        }
        Ok(Endpoint { tls, host, port, credentials })
    }

    /// The user name and password to send: from `username`/`password`, or
    /// from the URL's user-info.
    pub fn credentials(&self) -> Option<(String, Secret)> {
        match &self.username {
            Some(u) => Some((u.clone(), self.password.clone().unwrap_or_else(|| Secret::new("")))),
            None => self.endpoint().ok().and_then(|e| e.credentials),
        }
    }

    /// The TLS client configuration for an `mqtts://` url (`None` for
    /// `mqtt://`), read from the CA, certificate and key files now.
    pub fn tls(&self) -> Result<Option<rustls::ClientConfig>, FieldError> {
        if !self.endpoint()?.tls {
            return Ok(None);
        }
        crate::tls::client_config(
            self.ca_file.as_deref(),
            self.client_cert_file.as_deref(),
            self.client_key_file.as_deref(),
        )
        .map(Some)
    }
}

/// Checks the fields, TLS files included; the error names the first bad one.
pub(super) fn validate(cfg: &MqttConfig) -> Result<(), FieldError> {
    let ep = cfg.endpoint()?;
    if cfg.qos > 2 {
        return Err(FieldError::new("qos", format!("must be 0, 1 or 2, got {}", cfg.qos)));
    }
    if !topic_safe(&cfg.topic_prefix) {
        return Err(FieldError::new("topic_prefix", "must be non-empty, without + or #, and not start or end with /"));
    }
    for (i, p) in cfg.include.iter().enumerate() {
        TagPattern::new(p).map_err(|e| FieldError::new(format!("include[{i}]"), e))?;
    }
    if cfg.max_inflight == 0 {
        return Err(FieldError::new("max_inflight", "must be at least 1"));
    }
    if cfg.replay_max_rate == 0 {
        return Err(FieldError::new("replay_max_rate", "must be at least 1 value per second"));
    }
    if cfg.batch_linger_ms > 10_000 {
        return Err(FieldError::new(
            "batch_linger_ms",
            format!("must be at most 10000 (10 s), got {}", cfg.batch_linger_ms),
        ));
    }
    if !(1..=100_000).contains(&cfg.batch_max_values) {
        return Err(FieldError::new(
            "batch_max_values",
            format!("must be between 1 and 100000, got {}", cfg.batch_max_values),
        ));
    }
    if cfg.keep_alive_s == 0 || cfg.keep_alive_s > 65_535 {
        return Err(FieldError::new("keep_alive_s", format!("must be between 1 and 65535, got {}", cfg.keep_alive_s)));
    }
    if cfg.reconnect_min_ms == 0 || cfg.reconnect_min_ms > cfg.reconnect_max_ms {
        return Err(FieldError::new("reconnect_min_ms", "must be at least 1 and at most reconnect_max_ms"));
    }
    if !ep.tls && (cfg.ca_file.is_some() || cfg.client_cert_file.is_some()) {
        return Err(FieldError::new("ca_file", "TLS files need an mqtts:// url"));
    }
    if cfg.client_cert_file.is_some() != cfg.client_key_file.is_some() {
        return Err(FieldError::new("client_key_file", "client_cert_file and client_key_file go together"));
    }
    if cfg.username.is_none() && cfg.password.is_some() {
        return Err(FieldError::new("password", "a password needs a username"));
    }
    if cfg.username.is_some() && ep.credentials.is_some() {
        return Err(FieldError::new("username", "the url has a user already: give it in one place, not both"));
    }
    if !topic_safe(&cfg.sparkplug_group_id) || cfg.sparkplug_group_id.contains('/') {
        return Err(FieldError::new("sparkplug_group_id", "must be non-empty, without / + #"));
    }
    if let Some(n) = &cfg.sparkplug_edge_node_id
        && (!topic_safe(n) || n.contains('/'))
    {
        return Err(FieldError::new("sparkplug_edge_node_id", "must be non-empty, without / + #"));
    }
    cfg.tls()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, f: impl FnOnce(&mut MqttConfig)) -> Result<(), FieldError> {
        let mut c = MqttConfig::new(url);
        f(&mut c);
        validate(&c)
    }

    #[test]
    fn the_url_gives_the_endpoint_with_the_default_port_of_its_scheme() {
        let ep = |u: &str| MqttConfig::new(u).endpoint();
        let plain = |tls, host: &str, port| Endpoint { tls, host: host.into(), port, credentials: None };
        assert_eq!(ep("mqtt://h").unwrap(), plain(false, "h", 1883));
        assert_eq!(ep("mqtts://h:1").unwrap(), plain(true, "h", 1));
        assert_eq!(ep("mqtt://[::1]:9").unwrap(), plain(false, "::1", 9));
        assert_eq!(ep("http://h").unwrap_err().path, "url");
        assert_eq!(ep("mqtt://").unwrap_err().path, "url");
        let with_user = ep("mqtt://bob:s3cret@[::1]:9").unwrap();
        assert_eq!((with_user.host.as_str(), with_user.port), ("::1", 9));
        assert_eq!(with_user.credentials.as_ref().map(|(u, p)| (u.as_str(), p.expose())), Some(("bob", "s3cret")));
    }

    #[test]
    fn no_error_and_no_debug_output_shows_a_password() {
        for url in [
            "http://bob:s3cret@broker",
            "mqtt://bob:s3cret@broker:99999",
            "mqtt://bob:s3cret@",
            "mqtt://:s3cret@broker",
            "mqtt://bob:s3cret@broker/x/y",
        ] {
            let e = check(url, |_| {}).unwrap_err();
            assert_eq!(e.path, "url", "{url}: {e}");
            assert!(!e.to_string().contains("s3cret"), "{url}: {e}");
        }
        let mut c = MqttConfig::new("mqtt://broker");
        c.username = Some("bob".into());
        c.password = Some(Secret::new("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.credentials().map(|(u, p)| (u, p.expose().to_owned())), Some(("bob".into(), "s3cret".into())));
        let e = check("mqtt://amy:pw@broker", |c| c.username = Some("bob".into())).unwrap_err();
        assert_eq!(e.path, "username");
    }

    #[test]
    fn a_missing_ca_file_is_refused_when_the_config_is_checked() {
        let e = check("mqtts://h", |c| c.ca_file = Some("/nonexistent/ca.pem".into())).unwrap_err();
        assert_eq!(e.path, "ca_file");
        assert!(e.message.contains("cannot read /nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = check("mqtts://h", |c| c.ca_file = Some(empty.clone())).unwrap_err();
        assert_eq!(e.path, "ca_file", "{e}");
    }

    #[test]
    fn a_missing_client_certificate_or_key_is_refused_with_its_field() {
        let ca = Some(PathBuf::from(crate::tls::SYSTEM_CA_BUNDLE));
        let e = check("mqtts://h", |c| {
            c.ca_file = ca.clone();
            c.client_cert_file = Some("/nonexistent/cert.pem".into());
            c.client_key_file = Some("/nonexistent/key.pem".into());
        })
        .unwrap_err();
        assert_eq!(e.path, "client_cert_file", "{e}");
        let e = check("mqtts://h", |c| {
            c.ca_file = ca.clone();
            c.client_cert_file = Some(crate::tls::SYSTEM_CA_BUNDLE.into());
            c.client_key_file = Some("/nonexistent/key.pem".into());
        })
        .unwrap_err();
        assert_eq!(e.path, "client_key_file", "{e}");
    }

    #[test]
    fn tls_files_need_an_mqtts_url() {
        assert_eq!(check("mqtt://h", |c| c.ca_file = Some("/x".into())).unwrap_err().path, "ca_file");
        assert!(MqttConfig::new("mqtt://h").tls().unwrap().is_none());
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(check("mqtt://h", |c| c.qos = 3).unwrap_err().path, "qos");
        assert_eq!(check("mqtt://h", |c| c.batch_linger_ms = 10_001).unwrap_err().path, "batch_linger_ms");
        assert_eq!(check("mqtt://h", |c| c.topic_prefix = "a/#".into()).unwrap_err().path, "topic_prefix");
        assert_eq!(check("mqtt://h", |c| c.include = vec!["a b".into()]).unwrap_err().path, "include[0]");
        assert_eq!(check("mqtt://h", |c| c.max_inflight = 0).unwrap_err().path, "max_inflight");
        assert_eq!(check("mqtt://h", |c| c.reconnect_min_ms = 0).unwrap_err().path, "reconnect_min_ms");
        assert_eq!(check("mqtt://h", |c| c.password = Some(Secret::new("x"))).unwrap_err().path, "password");
        assert_eq!(check("mqtt://h", |c| c.sparkplug_group_id = "a/b".into()).unwrap_err().path, "sparkplug_group_id");
        assert!(check("mqtt://h", |_| {}).is_ok());
    }
}
