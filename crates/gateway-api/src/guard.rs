//! The checks every request passes before any handler (or the auth layer)
//! sees it, for the gateway is reached by browsers on the control network:
//!
//! - **Host allow-list.** A page on any web site the operator opens can make
//!   its own name resolve to the gateway's address (DNS rebinding) and then
//!   talk to the gateway through the operator's browser, as the same origin.
//!   The request still carries the page's name in `Host`, so a `Host` (or an
//!   absolute request target) whose host is not allowed is refused with 421.
//!   Allowed are `localhost`, `127.0.0.1`, `[::1]`, the bind address and
//!   `[api] allowed_hosts`. Hosts are compared without case and without the
//!   port: the name is what an attacker controls, the port is the gateway's.
//!   A request without `Host` passes: browsers always send one, so such a
//!   request cannot come from a web page, and any other client could send
//!   `Host: localhost` anyway.
//! - **Origin.** A WebSocket upgrade, and any request that may change state
//!   (every method but GET, HEAD and OPTIONS), is refused with 403 when it
//!   carries an `Origin` whose host is not allowed, or the opaque `null`
//!   origin: a page elsewhere may not drive the gateway through the
//!   operator's browser. No `Origin` (a non-browser client) passes. There is
//!   no CORS: no `Access-Control-Allow-*` header is ever sent, so browsers
//!   keep other origins from reading any answer.
//! - **Size.** A declared `Content-Length` above `max_request_size` is
//!   answered 413 at once, before the body is read; a request target over
//!   [`MAX_URI_BYTES`] gets 414.
//! - **JSON errors.** An error answer that is not JSON (a rejection written
//!   by axum, such as a path that is not UTF-8) is rewritten as
//!   `{"error": {"code", "message"}}`; 5xx messages stay generic.
//! - **Headers.** Every answer says `nosniff` and may not be framed
//!   (clickjacking of the live page's set-point controls).
//!
//! It must never reach into the handlers' state: it decides from the request
//! and the `[api]` configuration alone.

use std::collections::HashSet;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::ApiConfig;
use crate::error::ApiError;

/// Longest request target (path and query) accepted, in bytes; longer ones
/// get 414. Browsers and proxies commonly stop at 8 KiB as well.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// A host as compared by the allow-list: an IP address, or a DNS name in
/// lower case without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostName {
    /// An IPv4 or IPv6 address (an IPv4-mapped IPv6 address is its IPv4 one).
    Ip(IpAddr),
    /// A name, lower case, without the trailing dot of a fully qualified one.
    Name(String),
}

impl HostName {
    fn from_host(host: &str) -> Option<HostName> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if let Ok(ip) = IpAddr::from_str(bare) {
            return Some(HostName::Ip(ip.to_canonical()));
        }
        if host.starts_with('[') || host.is_empty() {
            return None;
        }
        let name = host.strip_suffix('.').unwrap_or(host);
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
        (!name.is_empty() && name.chars().all(ok)).then(|| HostName::Name(name.to_ascii_lowercase()))
    }

    /// The host of a `Host` header or request authority (`name`, `name:port`,
    /// `1.2.3.4:80`, `[::1]:8080`); `None` if it is not one.
    pub fn from_authority(value: &str) -> Option<HostName> {
        let a = Authority::from_str(value).ok()?;
        let port = a.as_str().strip_prefix(a.host())?;
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))) {
            return None;
        }
        HostName::from_host(a.host())
    }

    /// An `allowed_hosts` entry: a name or an address, IPv6 with or without
    /// brackets, no port, no scheme, no wildcard.
    pub fn parse_allowed(entry: &str) -> Result<HostName, String> {
        if entry.contains('*') {
            return Err(format!("{entry:?}: wildcards are not accepted; list each name"));
        }
        if entry.contains("://") || entry.contains('/') {
            return Err(format!("{entry:?}: give a host name or address, without scheme or path"));
        }
        if let Ok(ip) = IpAddr::from_str(entry) {
            return Ok(HostName::Ip(ip.to_canonical()));
        }
        if !entry.starts_with('[') && entry.contains(':') {
            return Err(format!("{entry:?}: give the host without a port (ports are not compared)"));
        }
        HostName::from_host(entry).ok_or_else(|| format!("{entry:?} is not a host name or an IP address"))
    }
}

/// The hosts a request may name, and the checks of this module.
#[derive(Debug)]
pub struct Guard {
    hosts: HashSet<HostName>,
    max_request_size: u64,
}

impl Guard {
    /// The allow-list of `cfg`: the built-in loopback names, the bind address
    /// unless it is the unspecified one (`0.0.0.0`, `[::]`), and
    /// `allowed_hosts` (entries that do not parse are skipped: `validate`
    /// refuses them).
    pub fn new(cfg: &ApiConfig) -> Guard {
        let mut hosts: HashSet<HostName> =
            ["localhost", "127.0.0.1", "::1"].iter().filter_map(|h| HostName::parse_allowed(h).ok()).collect();
        if !cfg.bind.ip().is_unspecified() {
            hosts.insert(HostName::Ip(cfg.bind.ip().to_canonical()));
        }
        hosts.extend(cfg.allowed_hosts.iter().filter_map(|h| HostName::parse_allowed(h).ok()));
        Guard { hosts, max_request_size: cfg.max_request_size as u64 }
    }

    /// Whether a `Host` value (or an authority) names an allowed host.
    pub fn host_allowed(&self, value: &str) -> bool {
        HostName::from_authority(value).is_some_and(|h| self.hosts.contains(&h))
    }

    /// Whether an `Origin` value (`scheme://host[:port]`) is an allowed host
    /// over HTTP or HTTPS; `null` and anything else is not.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else { return false };
        let scheme_ok = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
        scheme_ok && !rest.contains('/') && self.host_allowed(rest)
    }

    fn refusal(&self, req: &Request) -> Option<ApiError> {
        let headers = req.headers();
        if let Some(a) = req.uri().authority()
            && !self.host_allowed(a.as_str())
        {
            return Some(misdirected(a.as_str()));
        }
        if let Some(h) = headers.get(header::HOST) {
            let text = h.to_str().unwrap_or("");
            if !self.host_allowed(text) {
                return Some(misdirected(text));
            }
        }
        let may_change = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if (may_change || headers.contains_key(header::UPGRADE))
            && let Some(origin) = headers.get(header::ORIGIN)
        {
            let text = origin.to_str().unwrap_or("");
            if !self.origin_allowed(text) {
                return Some(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    format!("requests from pages at {text:?} are not accepted (the host is not in api.allowed_hosts)"),
                ));
            }
        }
        let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if target > MAX_URI_BYTES {
            return Some(ApiError::new(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                format!("the request target is {target} bytes, more than {MAX_URI_BYTES}"),
            ));
        }
        if let Some(len) = declared_length(headers)
            && len > self.max_request_size
        {
            return Some(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is {len} bytes, more than max_request_size ({})", self.max_request_size),
            ));
        }
        None
    }
}

fn misdirected(host: &str) -> ApiError {
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "misdirected_request",
        format!(
            "this gateway does not answer to the host {host:?}; if clients reach it by that name, add it to api.allowed_hosts"
        ),
    )
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The `code` of an error answer that came without a JSON body.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::LENGTH_REQUIRED => "length_required",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// The JSON error for a status (and, for a 4xx, the client-facing text a
/// lower layer gave); hyper's own answers to unparsable requests are turned
/// into it by the server.
pub fn error_for_status(status: StatusCode, detail: &str) -> ApiError {
    let reason = status.canonical_reason().unwrap_or("error").to_ascii_lowercase();
    let message = if status.is_client_error() && !detail.trim().is_empty() { detail.trim().to_owned() } else { reason };
    ApiError::new(status, code_for(status), message)
}

/// Bodies of lower layers' error answers are short texts; anything longer is
/// not worth quoting.
const MAX_QUOTED_ERROR: usize = 1024;

async fn as_json_error(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let detail = match axum::body::to_bytes(body, MAX_QUOTED_ERROR).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    let mut fixed = error_for_status(parts.status, &detail).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().append(name, value.clone());
        }
    }
    fixed
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"))
}

/// Middleware (see the module docs): refuses foreign hosts and origins and
/// oversized requests, makes every error JSON and adds the browser headers.
pub async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let mut resp = match guard.refusal(&req) {
        Some(e) => e.into_response(),
        None => {
            let resp = next.run(req).await;
            let status = resp.status();
            if (status.is_client_error() || status.is_server_error()) && !is_json(resp.headers()) {
                as_json_error(resp).await
            } else {
                resp
            }
        }
    };
    let h = resp.headers_mut();
    h.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    h.entry(header::X_FRAME_OPTIONS).or_insert(HeaderValue::from_static("DENY"));
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static("frame-ancestors 'none'"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allowed: &[&str], bind: &str) -> Guard {
        Guard::new(&ApiConfig {
            bind: bind.parse().unwrap(),
            allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
            ..ApiConfig::default()
        })
    }

    #[test]
    fn loopback_names_and_the_bind_address_are_always_allowed_whatever_the_port_and_case() {
        let g = guard(&[], "10.1.2.3:8080");
        for ok in ["localhost", "LocalHost:8080", "localhost.", "127.0.0.1:1", "[::1]:8080", "[::1]", "10.1.2.3:8080"] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "127.0.0.2", "[::2]", "10.1.2.4", "localhost.evil.example"] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn listed_names_and_addresses_are_allowed_and_malformed_hosts_are_not() {
        let g = guard(&["GW1.plant.local", "192.168.7.10", "[fe80::1]", "2001:db8::5"], "0.0.0.0:8080");
        for ok in ["gw1.plant.local", "gw1.PLANT.local:443", "192.168.7.10:8080", "[fe80::1]:80", "[2001:db8::5]"] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        assert!(!g.host_allowed("0.0.0.0"), "the unspecified bind address is not a host");
        for bad in ["", "user@localhost", "local host", "[localhost]", "localhost:port", "::1"] {
            assert!(!g.host_allowed(bad), "{bad:?}");
        }
        assert!(g.host_allowed("[::ffff:127.0.0.1]:8080"), "an IPv4-mapped address is its IPv4 one");
    }

    #[test]
    fn allowed_hosts_entries_with_ports_schemes_or_wildcards_are_refused_with_a_reason() {
        for (entry, why) in [
            ("*", "wildcard"),
            ("*.plant.local", "wildcard"),
            ("gw1:8080", "without a port"),
            ("http://gw1", "without scheme"),
            ("gw 1", "not a host name"),
        ] {
            let e = HostName::parse_allowed(entry).unwrap_err();
            assert!(e.contains(why), "{entry}: {e}");
        }
        assert_eq!(HostName::parse_allowed("[::1]"), HostName::parse_allowed("::1"));
    }

    #[test]
    fn origins_must_be_http_or_https_on_an_allowed_host() {
        let g = guard(&["gw1.plant.local"], "127.0.0.1:8080");
        for ok in ["http://localhost:8080", "https://gw1.plant.local", "HTTP://127.0.0.1"] {
            assert!(g.origin_allowed(ok), "{ok}");
        }
        for bad in ["null", "http://evil.example", "file://", "ftp://localhost", "http://localhost/x", "localhost"] {
            assert!(!g.origin_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn an_error_without_json_gets_a_code_from_its_status_and_5xx_stay_generic() {
        let e = error_for_status(StatusCode::BAD_REQUEST, "Invalid URL: bad UTF-8\n");
        assert_eq!((e.code, e.message.as_str()), ("bad_request", "Invalid URL: bad UTF-8"));
        let e = error_for_status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "");
        assert_eq!((e.code, e.message.as_str()), ("headers_too_large", "request header fields too large"));
        let e = error_for_status(StatusCode::INTERNAL_SERVER_ERROR, "panicked at src/x.rs: secret");
        assert_eq!((e.code, e.message.as_str()), ("internal", "internal server error"));
    }
}
