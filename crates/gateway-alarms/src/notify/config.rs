//! A webhook target as people write it (`[[alarms.notify]]`), checked once
//! into the [`Endpoint`] the notifier sends to. Checking never prints a
//! password: URLs go into messages through [`redact_url`], and header values
//! are [`Secret`]s because they often carry a token (`Authorization`).
//!
//! ```toml
//! [[alarms.notify]]
//! name = "ops"                          # cursor alarm-notify-ops
//! url = "https://hooks.example.com/gw"
//! min_priority = "high"                 # low medium high critical
//! secret = "s3cret"                     # X-Edge-Gateway-Signature: sha256=<hex>
//! timeout = "5s"
//! retry_initial = "1s"
//! retry_max = "5m"
//! max_age = "24h"                       # older notifications are given up
//! headers = { Authorization = "Bearer abc" }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use gateway_model::{FieldError, Secret, Span, redact_url};
use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::rule::Priority;

/// The most extra headers one target may carry: each is sent with every
/// request, and the config is not a place for a header database.
pub const MAX_HEADERS: usize = 32;

/// The longest a target's name may be: its cursor is `alarm-notify-{name}`
/// and the WAL takes cursor names of at most 64 characters.
pub const MAX_NAME_LEN: usize = 64 - CURSOR_PREFIX.len();

/// The prefix of a target's durable cursor on the bus.
pub const CURSOR_PREFIX: &str = "alarm-notify-";

/// Headers the notifier writes itself; the config may not override them,
/// or a typo could forge a signature or break the framing of the request.
const RESERVED_HEADERS: &[&str] = &["host", "content-type", "content-length", "transfer-encoding", "connection"];

/// One webhook target: `[[alarms.notify]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Unique among targets, 1-51 of `A-Z a-z 0-9 _ - .`: the target's
    /// durable bus cursor is `alarm-notify-{name}` (renaming a target starts
    /// a new cursor at the newest event) and its metrics label.
    pub name: String,
    /// Where each notification is POSTed: `http://` or `https://`, with no
    /// `user:password@` (send credentials with `headers`).
    pub url: String,
    /// Alarms below this priority are not sent (their events still reach
    /// the WAL, the journal and every other subscriber).
    #[serde(default = "default_min_priority")]
    pub min_priority: Priority,
    /// When set, each request carries `X-Edge-Gateway-Signature:
    /// sha256=<hex HMAC-SHA256 of the exact body under this key>`, so the
    /// receiver can check it came from this gateway and was not altered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Longest wait for one attempt: connecting, TLS, sending and the
    /// response's status line and body together.
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// The first wait after a failed attempt; doubled after each further
    /// failure up to `retry_max`, each wait with random jitter (half to all
    /// of it) so many gateways do not retry in step.
    #[serde(default = "default_retry_initial")]
    pub retry_initial: Span,
    /// The longest wait between attempts.
    #[serde(default = "default_retry_max")]
    pub retry_max: Span,
    /// A notification whose alarm event is older than this is given up
    /// (logged and counted as `expired`) instead of sent: a webhook that is
    /// down for days must not hold the WAL's segments forever, and a page
    /// about yesterday's alarm helps no one.
    #[serde(default = "default_max_age")]
    pub max_age: Span,
    /// Extra headers sent with every request (at most 32), such as
    /// `Authorization`; their values never appear in logs or errors. `Host`,
    /// `Content-Type`, `Content-Length`, `Transfer-Encoding`, `Connection`
    /// and `X-Edge-Gateway-*` are the notifier's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// PEM file of the CA that signed an `https://` target's certificate;
    /// default the system bundle (`/etc/ssl/certs/ca-certificates.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A disabled target is not started; its cursor stays where it was, so
    /// enabling it again delivers what it missed (within `max_age`).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

const fn default_min_priority() -> Priority {
    Priority::High
}

const fn default_timeout() -> Span {
    Span::from_secs(5)
}

const fn default_retry_initial() -> Span {
    Span::from_secs(1)
}

const fn default_retry_max() -> Span {
    Span::from_secs(300)
}

const fn default_max_age() -> Span {
    Span::from_secs(24 * 3600)
}

const fn default_enabled() -> bool {
    true
}

impl NotifyConfig {
    /// A target with every default: POST to `url`, `high` and above.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        NotifyConfig {
            name: name.into(),
            url: url.into(),
            min_priority: default_min_priority(),
            secret: None,
            timeout: default_timeout(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            max_age: default_max_age(),
            headers: BTreeMap::new(),
            ca_file: None,
            enabled: default_enabled(),
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.endpoint().map(|_| ())
    }

    /// The checked target: its URL split for sending and its headers parsed.
    pub(crate) fn endpoint(&self) -> Result<Endpoint, FieldError> {
        if self.name.is_empty()
            || self.name.len() > MAX_NAME_LEN
            || !self.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(FieldError::new("name", format!("{:?}: use 1-{MAX_NAME_LEN} of A-Z a-z 0-9 _ - .", self.name)));
        }
        let endpoint = parse_url(&self.url).map_err(|e| FieldError::new("url", e))?;
        if self.secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
            return Err(FieldError::new("secret", "is empty: remove it or set a key"));
        }
        for (field, span) in [("timeout", self.timeout), ("retry_initial", self.retry_initial)] {
            if span.duration().is_zero() {
                return Err(FieldError::new(field, "must be longer than 0"));
            }
        }
        if self.retry_max < self.retry_initial {
            return Err(FieldError::new(
                "retry_max",
                format!("{} is shorter than retry_initial ({})", self.retry_max, self.retry_initial),
            ));
        }
        if self.max_age.duration().is_zero() {
            return Err(FieldError::new("max_age", "must be longer than 0"));
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(FieldError::new("headers", format!("{} headers; at most {MAX_HEADERS}", self.headers.len())));
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            let path = format!("headers.{k}");
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| FieldError::new(&path, "not a valid HTTP header name"))?;
            if RESERVED_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("x-edge-gateway-") {
                return Err(FieldError::new(&path, "is set by the notifier itself"));
            }
            // The value is never quoted: it is often a token.
            let mut value = HeaderValue::from_str(v.expose())
                .map_err(|_| FieldError::new(&path, "the value has characters HTTP headers cannot carry"))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        if let Some(ca) = &self.ca_file
            && endpoint.tls
            && !ca.is_file()
        {
            return Err(FieldError::new("ca_file", format!("{} is not a readable file", ca.display())));
        }
        Ok(Endpoint { headers, ..endpoint })
    }
}

/// A target's URL, split the way a request needs it.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    /// `https://`.
    pub tls: bool,
    /// Host name or address to connect to (an IPv6 address without brackets).
    pub host: String,
    /// Port to connect to (the scheme's default when the URL has none).
    pub port: u16,
    /// The `Host` header: the URL's authority as written.
    pub authority: String,
    /// The request target: path and query.
    pub path: String,
    /// The configured extra headers, checked.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

fn parse_url(url: &str) -> Result<Endpoint, String> {
    let shown = redact_url(url);
    let uri: Uri = url.parse().map_err(|e| format!("{shown:?} is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("{shown:?}: only http:// and https:// webhooks are supported")),
    };
    let authority = uri.authority().ok_or_else(|| format!("{shown:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{shown:?}: credentials in the URL are not sent; put them in headers (such as Authorization)"
        ));
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    if host.is_empty() {
        return Err(format!("{shown:?} has no host"));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    Ok(Endpoint { tls, host, port, authority: authority.as_str().to_owned(), path, headers: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> NotifyConfig {
        toml_text.parse::<toml::Table>().unwrap().try_into().unwrap()
    }

    #[test]
    fn defaults_are_high_priority_five_second_timeout_and_a_day_of_retries() {
        let c = parse("name = \"ops\"\nurl = \"http://h/x\"");
        assert_eq!(c, NotifyConfig::new("ops", "http://h/x"));
        assert_eq!(c.min_priority, Priority::High);
        assert_eq!(
            (c.timeout, c.retry_initial, c.retry_max),
            (Span::from_secs(5), Span::from_secs(1), Span::from_secs(300))
        );
        assert_eq!(c.max_age, Span::from_secs(86_400));
        assert!(c.enabled);
        c.validate().unwrap();
        let e = c.endpoint().unwrap();
        assert_eq!((e.host.as_str(), e.port, e.path.as_str(), e.tls), ("h", 80, "/x", false));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = "name = \"ops\"\nurl = \"http://h\"\nretries = 3"
            .parse::<toml::Table>()
            .unwrap()
            .try_into::<NotifyConfig>();
        assert!(e.unwrap_err().to_string().contains("unknown field `retries`"));
    }

    #[test]
    fn a_bad_url_is_refused_without_showing_its_password() {
        for url in ["ftp://h/x", "mailto:ops@example.com", "hooks.example.com/x", "https://bob:hunter2@h/x"] {
            let e = NotifyConfig::new("ops", url).validate().unwrap_err();
            assert_eq!(e.path, "url", "{url}");
            assert!(!e.message.contains("hunter2"), "{e}");
        }
        let e = NotifyConfig::new("ops", "https://[::1]:8443/a?b=c").endpoint().unwrap();
        assert_eq!((e.host.as_str(), e.port, e.path.as_str(), e.tls), ("::1", 8443, "/a?b=c", true));
    }

    #[test]
    fn each_bad_field_is_named() {
        let bad = |f: &dyn Fn(&mut NotifyConfig)| {
            let mut c = NotifyConfig::new("ops", "http://h/");
            f(&mut c);
            c.validate().unwrap_err().path
        };
        assert_eq!(bad(&|c| c.name = "a b".into()), "name");
        assert_eq!(bad(&|c| c.name = "x".repeat(MAX_NAME_LEN + 1)), "name");
        assert_eq!(bad(&|c| c.secret = Some(Secret::new(""))), "secret");
        assert_eq!(bad(&|c| c.timeout = Span::from_millis(0)), "timeout");
        assert_eq!(bad(&|c| c.retry_max = Span::from_millis(10)), "retry_max");
        assert_eq!(bad(&|c| c.max_age = Span::from_millis(0)), "max_age");
        assert_eq!(
            bad(&|c| drop(c.headers.insert("Content-Type".into(), Secret::new("text/plain")))),
            "headers.Content-Type"
        );
        assert_eq!(
            bad(&|c| drop(c.headers.insert("X-Edge-Gateway-Signature".into(), Secret::new("x")))),
            "headers.X-Edge-Gateway-Signature"
        );
        assert_eq!(bad(&|c| drop(c.headers.insert("bad name".into(), Secret::new("x")))), "headers.bad name");
        assert_eq!(
            bad(&|c| (0..=MAX_HEADERS).for_each(|i| drop(c.headers.insert(format!("x-{i}"), Secret::new("v"))))),
            "headers"
        );
        let mut c = NotifyConfig::new("ops", "http://h/");
        c.headers.insert("Authorization".into(), Secret::new("Bearer t\n0ken"));
        let e = c.validate().unwrap_err();
        assert!(!e.to_string().contains("t\n0ken"), "{e}");
        assert!(!format!("{c:?}").contains("0ken"), "Debug hides header values");
    }
}
