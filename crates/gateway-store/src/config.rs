//! The `[database]` section of the gateway's config file: where the metadata
//! store lives and how its connection pool behaves.
//!
//! ```toml
//! [database]
//! # url = "postgres://gateway@db.plant.local/gateway"   # default: SQLite `gateway.db` in the data directory
//! max_connections = 50
//! min_connections = 5
//! acquire_timeout_s = 10
//! idle_timeout_s = 600
//! max_lifetime_s = 3600
//! slow_query_threshold_ms = 1000
//! ```
//!
//! Every field has a default (the original system's performance budget), so an
//! empty or missing section is valid. Errors name the field, never echo the URL
//! (it may hold a password).

use std::fmt;
use std::str::FromStr;

use gateway_model::{FieldError, redact_url};
use serde::{Deserialize, Serialize};

/// The SQLite file used when no URL is configured, inside the data directory.
pub const DEFAULT_SQLITE_FILE: &str = "gateway.db";

/// Upper bound for every duration field, in seconds (one year). Larger values
/// would overflow deadline arithmetic inside the pool (a panic), and no real
/// deployment waits longer.
pub const MAX_DURATION_S: u64 = 365 * 24 * 3600;

/// The `[database]` section: which database holds devices and tags, and the
/// connection pool's limits.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The database URL: `sqlite:<path>` or `postgres://user:password@host/db`
    /// (`postgresql://` too). None means the SQLite file
    /// [`DEFAULT_SQLITE_FILE`] in the data directory, created if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Most connections the pool opens. With SQLite only one connection
    /// writes at a time whatever this is; the others read concurrently.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Connections the pool keeps open even when idle.
    #[serde(default = "default_min_connections")]
    pub min_connections: u32,
    /// How long an operation waits for a free connection before failing; with
    /// SQLite also how long a writer waits for another writer to finish.
    #[serde(default = "default_acquire_timeout_s")]
    pub acquire_timeout_s: u64,
    /// An idle connection above `min_connections` is closed after this long.
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// Every connection is closed and replaced after this long.
    #[serde(default = "default_max_lifetime_s")]
    pub max_lifetime_s: u64,
    /// Statements taking longer than this are logged as warnings.
    #[serde(default = "default_slow_query_threshold_ms")]
    pub slow_query_threshold_ms: u64,
}

const fn default_max_connections() -> u32 {
    50
}

const fn default_min_connections() -> u32 {
    5
}

const fn default_acquire_timeout_s() -> u64 {
    10
}

const fn default_idle_timeout_s() -> u64 {
    600
}

const fn default_max_lifetime_s() -> u64 {
    3600
}

const fn default_slow_query_threshold_ms() -> u64 {
    1000
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            max_connections: default_max_connections(),
            min_connections: default_min_connections(),
            acquire_timeout_s: default_acquire_timeout_s(),
            idle_timeout_s: default_idle_timeout_s(),
            max_lifetime_s: default_max_lifetime_s(),
            slow_query_threshold_ms: default_slow_query_threshold_ms(),
        }
    }
}

// Written by hand so that logging the config (which the gateway does at start)
// never prints a database password.
impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout_s", &self.acquire_timeout_s)
            .field("idle_timeout_s", &self.idle_timeout_s)
            .field("max_lifetime_s", &self.max_lifetime_s)
            .field("slow_query_threshold_ms", &self.slow_query_threshold_ms)
            .finish()
    }
}

impl DatabaseConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(url) = &self.url {
            check_url(url)?;
        }
        if self.max_connections < 1 {
            return Err(FieldError::new(
                "max_connections",
                format!("must be at least 1, got {}", self.max_connections),
            ));
        }
        if self.min_connections > self.max_connections {
            return Err(FieldError::new(
                "min_connections",
                format!("must not exceed max_connections ({}), got {}", self.max_connections, self.min_connections),
            ));
        }
        let seconds = [
            ("acquire_timeout_s", self.acquire_timeout_s),
            ("idle_timeout_s", self.idle_timeout_s),
            ("max_lifetime_s", self.max_lifetime_s),
        ];
        for (field, value) in seconds {
            check_range(field, value, MAX_DURATION_S)?;
        }
        check_range("slow_query_threshold_ms", self.slow_query_threshold_ms, MAX_DURATION_S * 1000)?;
        Ok(())
    }

    /// The URL with any password replaced by `***`, for logs; None when no URL
    /// is configured.
    pub fn redacted_url(&self) -> Option<String> {
        self.url.as_deref().map(redact_url)
    }
}

fn check_range(field: &'static str, value: u64, max: u64) -> Result<(), FieldError> {
    if value < 1 {
        return Err(FieldError::new(field, format!("must be at least 1, got {value}")));
    }
    if value > max {
        return Err(FieldError::new(field, format!("must be at most {max}, got {value}")));
    }
    Ok(())
}

/// The database a URL's scheme names (`sqlite:`, `postgres:`, `postgresql:`);
/// `None` for any other scheme.
pub(crate) fn dialect_of(url: &str) -> Option<crate::Dialect> {
    if url.starts_with("sqlite:") {
        Some(crate::Dialect::Sqlite)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Some(crate::Dialect::Postgres)
    } else {
        None
    }
}

fn check_url(url: &str) -> Result<(), FieldError> {
    // Parsing with the driver's own parser catches misspelt parameters now,
    // at config time, rather than at the first connection.
    let parsed = match dialect_of(url) {
        Some(crate::Dialect::Sqlite) => sqlx::sqlite::SqliteConnectOptions::from_str(url).map(drop),
        Some(crate::Dialect::Postgres) => sqlx::postgres::PgConnectOptions::from_str(url).map(drop),
        None => {
            return Err(FieldError::new("url", "must start with `sqlite:`, `postgres:` or `postgresql:`"));
        }
    };
    parsed.map_err(|e| FieldError::new("url", format!("is not a valid database URL: {}", scrub(&e.to_string(), url))))
}

/// `message` without the URL's password: the drivers' messages quote
/// parameter values, which may happen to contain it.
fn scrub(message: &str, url: &str) -> String {
    let redacted = redact_url(url);
    // The password is what redaction removed: compare the two URLs piecewise.
    let mut out = message.to_owned();
    for secret in secrets(url, &redacted) {
        out = out.replace(&secret, "***");
    }
    out
}

/// The parts of `url` that `redacted` replaced by `***`.
fn secrets(url: &str, redacted: &str) -> Vec<String> {
    let mut found = Vec::new();
    let (mut u, mut r) = (url, redacted);
    while let Some(at) = r.find("***") {
        // Up to the marker both are equal; the secret runs until the text that
        // follows the marker in the redacted URL (or the end).
        let (u_rest, r_rest) = (&u[at.min(u.len())..], &r[at + 3..]);
        let next = r_rest.chars().next();
        let end = next.and_then(|c| u_rest.find(c)).unwrap_or(u_rest.len());
        if end > 0 {
            found.push(u_rest[..end].to_owned());
        }
        u = &u_rest[end..];
        r = r_rest;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_for_scrubbing() {
        assert_eq!(secrets("postgres://gw:s3cret@db/gw", "postgres://gw:***@db/gw"), ["s3cret"]);
        let url = "postgres://gw:a@db/gw?password=b&sslmode=b";
        assert_eq!(secrets(url, &redact_url(url)), ["a", "b"]);
        assert_eq!(
            scrub("unknown value \"pw1\" for sslmode", "postgres://u:pw1@h/d?sslmode=pw1"),
            "unknown value \"***\" for sslmode"
        );
    }

    #[test]
    fn debug_output_does_not_contain_the_password() {
        let cfg = DatabaseConfig { url: Some("postgres://gw:s3cret@db/gw".into()), ..DatabaseConfig::default() };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("max_connections: 50"), "{shown}");
    }
}
