//! Secrets in configuration: a [`Secret`] holds a password or key and never
//! shows it (its `Debug` is `***`), and [`redact_url`] hides the password of
//! a URL before the URL goes into an error message or a log line. Anything
//! that may print a configuration uses these, so a mistyped broker URL in a
//! plant's config never puts its password on an operator's screen.

use serde::{Deserialize, Serialize};

/// A password, token or key from the configuration. It serialises as the
/// plain string (the config file and the store hold it so), but `Debug`
/// prints `***`, and the value is reached only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `url` with the password of its user-info (`scheme://user:PASSWORD@host`)
/// and any `password=` query parameter replaced by `***`.
///
/// ```
/// use gateway_model::redact_url;
///
/// assert_eq!(redact_url("mqtt://bob:s3cret@broker:1883"), "mqtt://bob:***@broker:1883");
/// assert_eq!(redact_url("postgres://gw@db/gw?password=x"), "postgres://gw@db/gw?password=***");
/// ```
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?', '#']).map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{head}{query}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact_url("postgres://gw:s3cret@db:5432/gw"), "postgres://gw:***@db:5432/gw");
        assert_eq!(
            redact_url("postgres://gw@db/gw?password=x&sslmode=require"),
            "postgres://gw@db/gw?password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgres://db/gw?x=a@b:c"), "postgres://db/gw?x=a@b:c");
        assert_eq!(redact_url("sqlite:/var/lib/gw/gateway.db"), "sqlite:/var/lib/gw/gateway.db");
        assert_eq!(redact_url("http://bob:pw@h"), "http://bob:***@h");
    }

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hunter2\"");
    }
}
