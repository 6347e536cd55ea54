//! The `[api]` section: where the API listens and its limits (the original
//! gateway's: 30 s request timeout, 10 MiB bodies, 1,000 WebSocket connections,
//! 60 s heartbeat timeout, 30 s clean-up), and the hardening around them:
//! the connection cap and timeouts, the host allow-list, TLS.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use gateway_model::FieldError;
use serde::{Deserialize, Serialize};

use crate::guard::HostName;
use crate::tls::TlsConfig;

/// The `[api]` section. Every field may be left out; the defaults are the
/// original gateway's, and [`ApiConfig::validate`] gives each its range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the REST, WebSocket and metrics endpoints (default
    /// `127.0.0.1:8080`: local only).
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// A request that takes longer is answered 503 `request_timeout`
    /// (default 30, 1 to 3600).
    #[serde(default = "default_request_timeout_s")]
    pub request_timeout_s: u64,
    /// Largest request body, in bytes (larger: 413; default 10 MiB).
    #[serde(default = "default_max_request_size")]
    pub max_request_size: usize,
    /// WebSocket connections at most; the next one is refused with 503
    /// (default 1000).
    #[serde(default = "default_ws_max_connections")]
    pub ws_max_connections: usize,
    /// A WebSocket client silent this many seconds (no message, no pong) is
    /// closed (default 60).
    #[serde(default = "default_ws_heartbeat_timeout_s")]
    pub ws_heartbeat_timeout_s: u64,
    /// How often, in seconds, silent WebSocket clients are looked for (and
    /// pinged); default 30, at most `ws_heartbeat_timeout_s`.
    #[serde(default = "default_ws_cleanup_interval_s")]
    pub ws_cleanup_interval_s: u64,
    /// Updates are pushed to WebSocket clients at most this often, batched
    /// (milliseconds, default 5).
    #[serde(default = "default_ws_push_interval_ms")]
    pub ws_push_interval_ms: u64,
    /// Messages a WebSocket client may have queued; beyond, its updates are
    /// dropped and counted (default 64).
    #[serde(default = "default_ws_queue")]
    pub ws_queue: usize,
    /// `[api.auth]`: anonymous reads, login sessions, failed-login limits.
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    /// Open connections at most, HTTP and WebSocket together; further clients
    /// wait in the kernel's accept queue until one closes (default 1024). The
    /// server lowers it, with a warning, to stay well below the process's
    /// open-files limit, so a flood of connections cannot starve the WAL,
    /// the database or the drivers of file descriptors.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A request's headers (and, with TLS, the handshake before them) must
    /// arrive in full within this many seconds of the connection's opening
    /// or of the previous response; it is also how long an idle keep-alive
    /// connection is kept (default 10, 1 to 300).
    #[serde(default = "default_header_read_timeout_s")]
    pub header_read_timeout_s: u64,
    /// A connection on which no byte moves either way for this many seconds
    /// while no request is being handled is closed: a client that stops
    /// reading its response frees its slot (default 60, 1 to 3600).
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// Host names and addresses clients use to reach the gateway, besides
    /// `localhost`, `127.0.0.1`, `[::1]` and the bind address, which are
    /// always accepted. A request whose `Host` is not one of them is refused
    /// with 421 (it is how a web page uses DNS rebinding to reach the
    /// gateway through the operator's browser), and so is a WebSocket
    /// upgrade or a write from a page whose `Origin` is not. Names are
    /// compared without case and without port (default none).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Patterns one WebSocket client may hold (after removing duplicates);
    /// a subscription beyond it is refused with an error message (default 256).
    #[serde(default = "default_ws_max_patterns")]
    pub ws_max_patterns: usize,
    /// A WebSocket message the client does not take within this many
    /// seconds ends the connection and frees its slot (default 10, 1 to 3600).
    #[serde(default = "default_ws_send_timeout_s")]
    pub ws_send_timeout_s: u64,
    /// HTTPS: with this section the API speaks TLS only (see [`TlsConfig`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

const fn default_bind() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080))
}
const fn default_request_timeout_s() -> u64 {
    30
}
const fn default_max_request_size() -> usize {
    10 << 20
}
const fn default_ws_max_connections() -> usize {
    1000
}
const fn default_ws_heartbeat_timeout_s() -> u64 {
    60
}
const fn default_ws_cleanup_interval_s() -> u64 {
    30
}
const fn default_ws_push_interval_ms() -> u64 {
    5
}
const fn default_ws_queue() -> usize {
    64
}
const fn default_max_connections() -> usize {
    1024
}
const fn default_header_read_timeout_s() -> u64 {
    10
}
const fn default_idle_timeout_s() -> u64 {
    60
}
const fn default_ws_max_patterns() -> usize {
    256
}
const fn default_ws_send_timeout_s() -> u64 {
    10
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bind: default_bind(),
            request_timeout_s: default_request_timeout_s(),
            max_request_size: default_max_request_size(),
            ws_max_connections: default_ws_max_connections(),
            ws_heartbeat_timeout_s: default_ws_heartbeat_timeout_s(),
            ws_cleanup_interval_s: default_ws_cleanup_interval_s(),
            ws_push_interval_ms: default_ws_push_interval_ms(),
            ws_queue: default_ws_queue(),
            auth: crate::auth::AuthConfig::default(),
            max_connections: default_max_connections(),
            header_read_timeout_s: default_header_read_timeout_s(),
            idle_timeout_s: default_idle_timeout_s(),
            allowed_hosts: Vec::new(),
            ws_max_patterns: default_ws_max_patterns(),
            ws_send_timeout_s: default_ws_send_timeout_s(),
            tls: None,
        }
    }
}

impl ApiConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        let bad = |field: &str, reason: String| Err(FieldError::new(field, reason));
        if !(1..=3600).contains(&self.request_timeout_s) {
            return bad("request_timeout_s", format!("must be between 1 and 3600, got {}", self.request_timeout_s));
        }
        if self.max_request_size < 1024 {
            return bad("max_request_size", format!("must be at least 1024 bytes, got {}", self.max_request_size));
        }
        if self.ws_max_connections == 0 || self.ws_max_connections > 1_000_000 {
            return bad(
                "ws_max_connections",
                format!("must be between 1 and 1000000, got {}", self.ws_max_connections),
            );
        }
        if self.ws_heartbeat_timeout_s == 0 {
            return bad("ws_heartbeat_timeout_s", "must be at least 1".into());
        }
        if self.ws_cleanup_interval_s == 0 || self.ws_cleanup_interval_s > self.ws_heartbeat_timeout_s {
            return bad(
                "ws_cleanup_interval_s",
                format!(
                    "must be between 1 and ws_heartbeat_timeout_s ({}), got {}",
                    self.ws_heartbeat_timeout_s, self.ws_cleanup_interval_s
                ),
            );
        }
        if !(1..=10_000).contains(&self.ws_push_interval_ms) {
            return bad(
                "ws_push_interval_ms",
                format!("must be between 1 and 10000, got {}", self.ws_push_interval_ms),
            );
        }
        self.auth.validate(self.bind).map_err(|e| e.under("auth"))?;
        if !(1..=100_000).contains(&self.ws_queue) {
            return bad("ws_queue", format!("must be between 1 and 100000, got {}", self.ws_queue));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return bad("max_connections", format!("must be between 1 and 1000000, got {}", self.max_connections));
        }
        if self.ws_max_connections > self.max_connections {
            return bad(
                "ws_max_connections",
                format!(
                    "must not exceed max_connections ({}), which WebSocket connections count against, got {}",
                    self.max_connections, self.ws_max_connections
                ),
            );
        }
        if !(1..=300).contains(&self.header_read_timeout_s) {
            return bad(
                "header_read_timeout_s",
                format!("must be between 1 and 300, got {}", self.header_read_timeout_s),
            );
        }
        if !(1..=3600).contains(&self.idle_timeout_s) {
            return bad("idle_timeout_s", format!("must be between 1 and 3600, got {}", self.idle_timeout_s));
        }
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            HostName::parse_allowed(h).map_err(|e| FieldError::new(format!("allowed_hosts[{i}]"), e))?;
        }
        if !(1..=10_000).contains(&self.ws_max_patterns) {
            return bad("ws_max_patterns", format!("must be between 1 and 10000, got {}", self.ws_max_patterns));
        }
        if !(1..=3600).contains(&self.ws_send_timeout_s) {
            return bad("ws_send_timeout_s", format!("must be between 1 and 3600, got {}", self.ws_send_timeout_s));
        }
        if let Some(tls) = &self.tls {
            tls.load().map_err(|e| e.under("tls"))?;
        }
        Ok(())
    }
}
