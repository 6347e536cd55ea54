//! The fields of an OPC UA device (`driver = "opcua"`) and of its tags,
//! with their defaults and the checks the types alone cannot make
//! (endpoint URL, node id syntax, security combinations, intervals). Every
//! error names its field, e.g. `tags[2].node_id: "ns=2;x=1" is not a node id`.

use std::str::FromStr;
use std::time::Duration;

use gateway_model::{FieldError, Secret};
use opcua::types::{Identifier, NodeId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::DeviceConfig;

/// The security policy of the secure channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityPolicy {
    /// No signing, no encryption (the default; for a plant network only).
    #[default]
    None,
    /// RSA 2048-4096 with SHA-256, AES-256-CBC.
    Basic256Sha256,
    /// RSA-OAEP with SHA-256, AES-128-CBC.
    #[serde(rename = "Aes128_Sha256_RsaOaep")]
    Aes128Sha256RsaOaep,
    /// RSA-PSS with SHA-256, AES-256-CBC.
    #[serde(rename = "Aes256_Sha256_RsaPss")]
    Aes256Sha256RsaPss,
}

impl SecurityPolicy {
    /// The name in the configuration and in the OPC UA security policy URI.
    pub fn name(self) -> &'static str {
        match self {
            SecurityPolicy::None => "None",
            SecurityPolicy::Basic256Sha256 => "Basic256Sha256",
            SecurityPolicy::Aes128Sha256RsaOaep => "Aes128_Sha256_RsaOaep",
            SecurityPolicy::Aes256Sha256RsaPss => "Aes256_Sha256_RsaPss",
        }
    }
}

/// Whether messages are signed, and encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityMode {
    /// Neither (only with security policy `None`).
    None,
    /// Signed.
    Sign,
    /// Signed and encrypted.
    SignAndEncrypt,
}

impl SecurityMode {
    /// The name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            SecurityMode::None => "None",
            SecurityMode::Sign => "Sign",
            SecurityMode::SignAndEncrypt => "SignAndEncrypt",
        }
    }
}

/// How values come from the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A subscription: the server samples every `sampling_interval_ms` and
    /// sends the changes every `publishing_interval_ms` (the default).
    #[default]
    Subscribe,
    /// Reads every `poll_interval_ms`, up to `max_nodes_per_request` nodes a request.
    Poll,
}

/// The OPC UA built-in scalar types a tag can hold. Names are those of the
/// OPC UA specification (`Double`, `DateTime`, ...), as a browse shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `true`/`false`.
    Boolean,
    /// -128 to 127.
    SByte,
    /// 0 to 255.
    Byte,
    /// 16-bit signed.
    Int16,
    /// 16-bit unsigned.
    UInt16,
    /// 32-bit signed.
    Int32,
    /// 32-bit unsigned.
    UInt32,
    /// 64-bit signed.
    Int64,
    /// 64-bit unsigned.
    UInt64,
    /// IEEE 754 single precision.
    Float,
    /// IEEE 754 double precision.
    Double,
    /// Text.
    String,
    /// A point in time; published as RFC 3339 text (UTC).
    DateTime,
    /// Opaque bytes.
    ByteString,
    /// A GUID; published as text.
    Guid,
    /// Text with a locale; published as the text alone.
    LocalizedText,
}

impl DataType {
    /// Every type, in the order of their OPC UA ids.
    pub const ALL: [DataType; 16] = [
        DataType::Boolean,
        DataType::SByte,
        DataType::Byte,
        DataType::Int16,
        DataType::UInt16,
        DataType::Int32,
        DataType::UInt32,
        DataType::Int64,
        DataType::UInt64,
        DataType::Float,
        DataType::Double,
        DataType::String,
        DataType::DateTime,
        DataType::ByteString,
        DataType::Guid,
        DataType::LocalizedText,
    ];

    /// The OPC UA name (`Double`).
    pub fn name(self) -> &'static str {
        match self {
            DataType::Boolean => "Boolean",
            DataType::SByte => "SByte",
            DataType::Byte => "Byte",
            DataType::Int16 => "Int16",
            DataType::UInt16 => "UInt16",
            DataType::Int32 => "Int32",
            DataType::UInt32 => "UInt32",
            DataType::Int64 => "Int64",
            DataType::UInt64 => "UInt64",
            DataType::Float => "Float",
            DataType::Double => "Double",
            DataType::String => "String",
            DataType::DateTime => "DateTime",
            DataType::ByteString => "ByteString",
            DataType::Guid => "Guid",
            DataType::LocalizedText => "LocalizedText",
        }
    }

    /// The type named `name` (the OPC UA name, any case).
    pub fn from_name(name: &str) -> Result<DataType, String> {
        if let Some(t) = DataType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(name)) {
            return Ok(t);
        }
        let known: Vec<&str> = DataType::ALL.iter().map(|t| t.name()).collect();
        let lower = name.to_ascii_lowercase();
        if name.ends_with(']') || lower.contains("array") {
            return Err(format!(
                "arrays are not supported: a tag holds one scalar value, one of: {}",
                known.join(", ")
            ));
        }
        Err(format!("unknown data type `{name}`, expected one of: {}", known.join(", ")))
    }

    /// Whether values are numbers (so a deadband applies).
    pub fn is_numeric(self) -> bool {
        !matches!(
            self,
            DataType::Boolean
                | DataType::String
                | DataType::DateTime
                | DataType::ByteString
                | DataType::Guid
                | DataType::LocalizedText
        )
    }
}

impl Serialize for DataType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for DataType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DataType::from_name(&s).map_err(serde::de::Error::custom)
    }
}

const fn default_publishing_interval_ms() -> u64 {
    1000
}
const fn default_queue_size() -> u32 {
    1
}
const fn default_keep_alive_count() -> u32 {
    10
}
const fn default_max_nodes_per_request() -> usize {
    1000
}
const fn default_timeout_ms() -> u64 {
    5000
}
const fn default_reconnect_min_ms() -> u64 {
    500
}
const fn default_reconnect_max_ms() -> u64 {
    30_000
}

/// Device fields of `driver = "opcua"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaConfig {
    /// The server's endpoint URL, `opc.tcp://host:port/path`.
    pub endpoint: String,
    /// `None` (default), `Basic256Sha256`, `Aes128_Sha256_RsaOaep` or `Aes256_Sha256_RsaPss`.
    #[serde(default)]
    pub security_policy: SecurityPolicy,
    /// `None`, `Sign` or `SignAndEncrypt`; default `None` with policy `None`,
    /// else `SignAndEncrypt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_mode: Option<SecurityMode>,
    /// Log in as this user (with `password`); absent: anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The user's password; never shown in logs, errors or the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Log in with this X.509 user certificate (DER or PEM file), with `user_private_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_certificate: Option<String>,
    /// The private key (PEM file) of `user_certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_private_key: Option<String>,
    /// The client's application instance certificate (DER file); absent: one
    /// is made on first use and kept under the data directory
    /// (`opcua/pki/own/cert.der`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The private key (PEM file) of `certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Trust the server certificate with this SHA-1 thumbprint (40 hex
    /// digits, as UaExpert and the server's own tools show it). Without it,
    /// the server's certificate must be in `opcua/pki/trusted/`; an untrusted
    /// one is put in `opcua/pki/rejected/` for an operator to move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate_thumbprint: Option<String>,
    /// `subscribe` (default) or `poll`.
    #[serde(default)]
    pub mode: Mode,
    /// Subscription: how often the server sends changes, ms (default 1000).
    #[serde(default = "default_publishing_interval_ms")]
    pub publishing_interval_ms: u64,
    /// Subscription: how often the server samples each node, ms (default:
    /// the publishing interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_interval_ms: Option<u64>,
    /// Subscription: samples the server queues per node between two
    /// publications (default 1: the latest).
    #[serde(default = "default_queue_size")]
    pub queue_size: u32,
    /// Subscription: an absolute deadband the server applies to numeric
    /// nodes (a tag's own `deadband` wins); poll: the same, applied here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<f64>,
    /// Subscription: publishing intervals without a change after which the
    /// server sends a keep-alive (default 10).
    #[serde(default = "default_keep_alive_count")]
    pub keep_alive_count: u32,
    /// Most nodes in one read, write or create-monitored-items request (default 1000).
    #[serde(default = "default_max_nodes_per_request")]
    pub max_nodes_per_request: usize,
    /// Time allowed for a connect and for each request, ms (default 5000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First delay before reconnecting, ms (default 500); doubles per failure, ±20% jitter.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest delay between reconnection attempts, ms (default 30000).
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

/// Tag fields of `driver = "opcua"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaTagConfig {
    /// The node: `ns=2;s=Line1.Temp`, `ns=3;i=1001`, `nsu=URI;s=...`, `i=2258`
    /// (namespace 0); identifiers `i=`, `s=`, `g=` (GUID) or `b=` (base64).
    pub node_id: String,
    /// The type the node must hold; checked at every connect (a node of
    /// another type turns its tag bad, `type_mismatch`). Absent: whatever
    /// scalar the node holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<DataType>,
    /// An absolute deadband for this tag (overrides the device's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<f64>,
}

/// A node id as written in a tag: a namespace by index or by URI, and an identifier.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NodeRef {
    /// The namespace.
    pub ns: Namespace,
    /// The identifier within it.
    pub id: Identifier,
}

/// A namespace by index (`ns=2`) or by URI (`nsu=...`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Namespace {
    /// `ns=N` (or none: 0).
    Index(u16),
    /// `nsu=URI`, looked up in the server's namespace array at every connect.
    Uri(String),
}

impl FromStr for NodeRef {
    type Err = String;

    fn from_str(s: &str) -> Result<NodeRef, String> {
        let bad = || format!("{s:?} is not a node id: write ns=2;s=Line1.Temp, ns=3;i=1001, nsu=URI;s=Name or i=2258");
        let (ns, rest) = if let Some(rest) = s.strip_prefix("nsu=") {
            let (uri, rest) = rest.split_once(';').ok_or_else(bad)?;
            if uri.is_empty() {
                return Err(bad());
            }
            (Namespace::Uri(uri.replace("%3b", ";").replace("%25", "%")), rest)
        } else if let Some(rest) = s.strip_prefix("ns=") {
            let (n, rest) = rest.split_once(';').ok_or_else(bad)?;
            (Namespace::Index(n.parse().map_err(|_| bad())?), rest)
        } else {
            (Namespace::Index(0), s)
        };
        let valid = rest.len() > 2 && matches!(&rest[..2], "i=" | "s=" | "g=" | "b=");
        let id = if valid { Identifier::from_str(rest).map_err(|_| bad())? } else { return Err(bad()) };
        Ok(NodeRef { ns, id })
    }
}

impl NodeRef {
    /// The node id, given a way to find a namespace URI's index.
    pub fn resolve(&self, index_of: impl Fn(&str) -> Option<u16>) -> Option<NodeId> {
        let ns = match &self.ns {
            Namespace::Index(i) => *i,
            Namespace::Uri(u) => index_of(u)?,
        };
        Some(NodeId::new(ns, self.id.clone()))
    }
}

/// The host of `opc.tcp://host:port/path` (without brackets), and whether
/// the rest is well formed.
pub(crate) fn endpoint_host(endpoint: &str) -> Option<&str> {
    let rest = endpoint.strip_prefix("opc.tcp://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once("]:")?;
        (h, p)
    } else {
        authority.rsplit_once(':')?
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    (!host.is_empty() && port_ok && !host.contains(['@', ' '])).then_some(host)
}

impl OpcUaConfig {
    /// A device at `endpoint` with every other field at its default.
    pub fn new(endpoint: impl Into<String>) -> Self {
        OpcUaConfig {
            endpoint: endpoint.into(),
            security_policy: SecurityPolicy::None,
            security_mode: None,
            username: None,
            password: None,
            user_certificate: None,
            user_private_key: None,
            certificate: None,
            private_key: None,
            server_certificate_thumbprint: None,
            mode: Mode::Subscribe,
            publishing_interval_ms: default_publishing_interval_ms(),
            sampling_interval_ms: None,
            queue_size: default_queue_size(),
            deadband: None,
            keep_alive_count: default_keep_alive_count(),
            max_nodes_per_request: default_max_nodes_per_request(),
            timeout_ms: default_timeout_ms(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
        }
    }

    /// The security mode, with its default applied.
    pub fn security_mode(&self) -> SecurityMode {
        self.security_mode.unwrap_or(match self.security_policy {
            SecurityPolicy::None => SecurityMode::None,
            _ => SecurityMode::SignAndEncrypt,
        })
    }

    /// Time allowed for a connect and for each request.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The sampling interval, with its default applied.
    pub fn sampling_interval_ms(&self) -> u64 {
        self.sampling_interval_ms.unwrap_or(self.publishing_interval_ms)
    }
}

/// Checks an `opcua` device.
pub(crate) fn validate(dev: &DeviceConfig, p: &OpcUaConfig) -> Result<(), FieldError> {
    if endpoint_host(&p.endpoint).is_none() {
        return Err(FieldError::new(
            "endpoint",
            format!("{:?} is not an OPC UA endpoint: write opc.tcp://host:port/path", p.endpoint),
        ));
    }
    let mode = p.security_mode();
    match (p.security_policy, mode) {
        (SecurityPolicy::None, SecurityMode::None) => {}
        (SecurityPolicy::None, m) => {
            return Err(FieldError::new(
                "security_mode",
                format!("{} needs a security_policy other than None", m.name()),
            ));
        }
        (pol, SecurityMode::None) => {
            return Err(FieldError::new(
                "security_mode",
                format!("must be Sign or SignAndEncrypt with security_policy {}", pol.name()),
            ));
        }
        _ => {}
    }
    match (&p.username, &p.password) {
        (Some(u), _) if u.is_empty() => return Err(FieldError::new("username", "must not be empty")),
        (Some(_), None) => return Err(FieldError::new("password", "required with username")),
        (None, Some(_)) => return Err(FieldError::new("username", "required with password")),
        _ => {}
    }
    match (&p.user_certificate, &p.user_private_key) {
        (Some(_), None) => return Err(FieldError::new("user_private_key", "required with user_certificate")),
        (None, Some(_)) => return Err(FieldError::new("user_certificate", "required with user_private_key")),
        (Some(_), Some(_)) if p.username.is_some() => {
            return Err(FieldError::new(
                "user_certificate",
                "a session logs in either with username/password or with a user certificate, not both",
            ));
        }
        _ => {}
    }
    match (&p.certificate, &p.private_key) {
        (Some(_), None) => return Err(FieldError::new("private_key", "required with certificate")),
        (None, Some(_)) => return Err(FieldError::new("certificate", "required with private_key")),
        _ => {}
    }
    if let Some(t) = &p.server_certificate_thumbprint {
        let hex: String = t.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
        if hex.len() != 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(FieldError::new(
                "server_certificate_thumbprint",
                "must be the certificate's SHA-1 thumbprint: 40 hex digits (colons and spaces allowed)",
            ));
        }
    }
    let ms = |field: &'static str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(FieldError::new(field, format!("must be between {lo} and {hi}, got {v}")))
        }
    };
    ms("publishing_interval_ms", p.publishing_interval_ms, 10, 3_600_000)?;
    if let Some(s) = p.sampling_interval_ms {
        ms("sampling_interval_ms", s, 0, 3_600_000)?;
    }
    ms("queue_size", u64::from(p.queue_size), 1, 100_000)?;
    ms("keep_alive_count", u64::from(p.keep_alive_count), 1, 10_000)?;
    ms("max_nodes_per_request", p.max_nodes_per_request as u64, 1, 100_000)?;
    ms("timeout_ms", p.timeout_ms, 100, 600_000)?;
    ms("reconnect_min_ms", p.reconnect_min_ms, 1, 3_600_000)?;
    if p.reconnect_max_ms < p.reconnect_min_ms || p.reconnect_max_ms > 3_600_000 {
        return Err(FieldError::new(
            "reconnect_max_ms",
            format!(
                "must be between reconnect_min_ms ({}) and 3600000, got {}",
                p.reconnect_min_ms, p.reconnect_max_ms
            ),
        ));
    }
    check_deadband("deadband", p.deadband)?;
    for (i, (_, t)) in dev.tags_of::<OpcUaTagConfig>().enumerate() {
        let at = |f: &str| format!("tags[{i}].{f}");
        t.node_id.parse::<NodeRef>().map_err(|e| FieldError::new(at("node_id"), e))?;
        check_deadband(&at("deadband"), t.deadband)?;
        if let (Some(_), Some(ty)) = (t.deadband, t.data_type)
            && !ty.is_numeric()
        {
            return Err(FieldError::new(at("deadband"), format!("only for numbers, not {}", ty.name())));
        }
    }
    Ok(())
}

fn check_deadband(field: &str, d: Option<f64>) -> Result<(), FieldError> {
    match d {
        Some(d) if !(d.is_finite() && d >= 0.0) => {
            Err(FieldError::new(field, format!("must be a finite number, 0 or more, got {d}")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::DeviceConfig;

    fn dev(extra: serde_json::Value, tags: serde_json::Value) -> serde_json::Value {
        let mut d = json!({"name": "ua", "driver": "opcua", "endpoint": "opc.tcp://plc.local:4840/ua", "tags": tags});
        if let (Some(m), serde_json::Value::Object(e)) = (d.as_object_mut(), extra) {
            m.extend(e);
        }
        d
    }

    fn error_of(v: serde_json::Value) -> String {
        DeviceConfig::from_json(v).unwrap_err().to_string()
    }

    #[test]
    fn a_device_with_every_field_round_trips_and_defaults_are_documented() {
        let d = DeviceConfig::from_json(dev(
            json!({"security_policy": "Aes256_Sha256_RsaPss", "security_mode": "Sign", "username": "op",
                   "password": "pw", "certificate": "/etc/c.der", "private_key": "/etc/k.pem",
                   "server_certificate_thumbprint": "00112233445566778899AABBCCDDEEFF00112233",
                   "mode": "poll", "publishing_interval_ms": 250, "sampling_interval_ms": 100, "queue_size": 5,
                   "deadband": 0.5, "keep_alive_count": 3, "max_nodes_per_request": 50, "timeout_ms": 2000,
                   "reconnect_min_ms": 100, "reconnect_max_ms": 1000}),
            json!([{"name": "t", "node_id": "ns=2;s=Line1.Temp", "data_type": "Double", "deadband": 0.1, "writable": true},
                   {"name": "u", "node_id": "nsu=urn:plant:line;i=1001"},
                   {"name": "v", "node_id": "i=2258", "data_type": "datetime"}]),
        ))
        .unwrap();
        assert_eq!(DeviceConfig::from_json(d.to_json()).unwrap(), d);
        assert_eq!(d.to_json()["tags"][2]["data_type"], "DateTime");
        let plain = DeviceConfig::from_json(dev(json!({}), json!([]))).unwrap();
        let p = plain.params.get::<OpcUaConfig>().unwrap();
        assert_eq!(*p, OpcUaConfig::new("opc.tcp://plc.local:4840/ua"));
        assert_eq!(p.security_mode(), SecurityMode::None);
        assert_eq!(p.sampling_interval_ms(), 1000);
        let secured = OpcUaConfig { security_policy: SecurityPolicy::Basic256Sha256, ..p.clone() };
        assert_eq!(secured.security_mode(), SecurityMode::SignAndEncrypt);
    }

    #[test]
    fn errors_name_the_field_and_say_what_is_wrong() {
        let cases = [
            (
                dev(json!({"endpoint": "tcp://h:4840"}), json!([])),
                "endpoint: \"tcp://h:4840\" is not an OPC UA endpoint",
            ),
            (dev(json!({"endpoint": "opc.tcp://h"}), json!([])), "endpoint"),
            (dev(json!({"endpoint": "opc.tcp://[::1]:4840/x"}), json!([{"name": "t", "node_id": "i=1"}])), ""),
            (dev(json!({"security_mode": "Sign"}), json!([])), "security_mode: Sign needs a security_policy"),
            (
                dev(json!({"security_policy": "Basic256Sha256", "security_mode": "None"}), json!([])),
                "security_mode: must be Sign or SignAndEncrypt",
            ),
            (dev(json!({"security_policy": "Basic128Rsa15"}), json!([])), "security_policy: unknown variant"),
            (dev(json!({"username": "op"}), json!([])), "password: required with username"),
            (dev(json!({"password": "x"}), json!([])), "username: required with password"),
            (dev(json!({"user_certificate": "/u.der"}), json!([])), "user_private_key: required"),
            (dev(json!({"certificate": "/c.der"}), json!([])), "private_key: required with certificate"),
            (dev(json!({"server_certificate_thumbprint": "abc"}), json!([])), "server_certificate_thumbprint"),
            (dev(json!({"publishing_interval_ms": 0}), json!([])), "publishing_interval_ms: must be between"),
            (dev(json!({"queue_size": 0}), json!([])), "queue_size"),
            (dev(json!({"reconnect_min_ms": 500, "reconnect_max_ms": 10}), json!([])), "reconnect_max_ms"),
            (dev(json!({"deadband": -1.0}), json!([])), "deadband: must be a finite number"),
            (dev(json!({"mode": "push"}), json!([])), "mode: unknown variant `push`"),
            (dev(json!({"address": "x"}), json!([])), "unknown field `address`"),
            (
                dev(json!({}), json!([{"name": "t", "node_id": "ns=2;x=1"}])),
                "tags[0].node_id: \"ns=2;x=1\" is not a node id",
            ),
            (dev(json!({}), json!([{"name": "t", "node_id": "ns=a;i=1"}])), "tags[0].node_id"),
            (dev(json!({}), json!([{"name": "t", "node_id": "nsu=;i=1"}])), "tags[0].node_id"),
            (dev(json!({}), json!([{"name": "t", "node_id": "i=x"}])), "tags[0].node_id"),
            (
                dev(json!({}), json!([{"name": "t", "node_id": "i=1", "data_type": "Double[]"}])),
                "tags[0].data_type: arrays are not supported",
            ),
            (
                dev(json!({}), json!([{"name": "t", "node_id": "i=1", "data_type": "Flaot"}])),
                "tags[0].data_type: unknown data type `Flaot`",
            ),
            (
                dev(json!({}), json!([{"name": "t", "node_id": "i=1", "data_type": "String", "deadband": 1.0}])),
                "tags[0].deadband: only for numbers",
            ),
            (dev(json!({}), json!([{"name": "t"}])), "missing field `node_id`"),
            (dev(json!({}), json!([{"name": "t", "node_id": "i=1", "area": "coil"}])), "unknown field `area`"),
        ];
        for (d, want) in cases {
            if want.is_empty() {
                assert!(DeviceConfig::from_json(d).is_ok());
                continue;
            }
            let got = error_of(d);
            assert!(got.contains(want), "{got:?} should contain {want:?}");
        }
    }

    #[test]
    fn node_ids_parse_in_every_notation() {
        let n: NodeRef = "ns=2;s=Line1.Temp".parse().unwrap();
        assert_eq!(n.resolve(|_| None), Some(NodeId::new(2, "Line1.Temp")));
        let n: NodeRef = "ns=3;i=1001".parse().unwrap();
        assert_eq!(n.resolve(|_| None), Some(NodeId::new(3, 1001u32)));
        let n: NodeRef = "i=2258".parse().unwrap();
        assert_eq!(n.resolve(|_| None), Some(NodeId::new(0, 2258u32)));
        let n: NodeRef = "nsu=urn:a%3bb;s=x;y".parse().unwrap();
        assert_eq!(n.ns, Namespace::Uri("urn:a;b".into()));
        assert_eq!(n.resolve(|u| (u == "urn:a;b").then_some(4)), Some(NodeId::new(4, "x;y")));
        assert_eq!(n.resolve(|_| None), None, "an unknown namespace URI resolves to nothing");
        assert!("g=72962b91-fa75-4ae6-8d28-b404dc7daf63".parse::<NodeRef>().is_ok());
        assert_eq!(endpoint_host("opc.tcp://[fe80::1]:4840"), Some("fe80::1"));
        assert_eq!(endpoint_host("opc.tcp://plc:4840/a/b"), Some("plc"));
        assert_eq!(endpoint_host("opc.tcp://u@plc:4840"), None);
    }
}
