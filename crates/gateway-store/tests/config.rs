//! The `[database]` section: TOML form, defaults, and validation messages that
//! name the field.

use gateway_store::{DatabaseConfig, Store, StoreError};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    database: DatabaseConfig,
}

fn parse(text: &str) -> Result<DatabaseConfig, toml::de::Error> {
    toml::from_str::<File>(text).map(|f| f.database)
}

#[test]
fn the_defaults_are_the_performance_budget() {
    let d = DatabaseConfig::default();
    assert_eq!(d.url, None);
    assert_eq!(
        (d.max_connections, d.min_connections, d.acquire_timeout_s, d.idle_timeout_s, d.max_lifetime_s),
        (50, 5, 10, 600, 3600)
    );
    assert_eq!(d.slow_query_threshold_ms, 1000);
    d.validate().expect("the defaults are valid");
}

#[test]
fn a_missing_or_empty_section_gives_the_defaults() {
    assert_eq!(parse("").expect("parse"), DatabaseConfig::default());
    assert_eq!(parse("[database]\n").expect("parse"), DatabaseConfig::default());
}

#[test]
fn given_fields_override_only_themselves() {
    let cfg = parse("[database]\nurl = \"postgres://gw@db/gw\"\nmax_connections = 8\n").expect("parse");
    assert_eq!(
        cfg,
        DatabaseConfig { url: Some("postgres://gw@db/gw".into()), max_connections: 8, ..DatabaseConfig::default() }
    );
    cfg.validate().expect("valid");
}

#[test]
fn unknown_fields_are_refused_by_name() {
    let err = parse("[database]\nmax_conections = 3\n").expect_err("a misspelt field must not be ignored");
    assert!(err.to_string().contains("max_conections"), "{err}");
}

#[test]
fn validation_names_the_field() {
    let base = DatabaseConfig::default();
    let cases = [
        (
            DatabaseConfig { min_connections: 60, ..base.clone() },
            "min_connections: must not exceed max_connections (50), got 60",
        ),
        (
            DatabaseConfig { max_connections: 0, min_connections: 0, ..base.clone() },
            "max_connections: must be at least 1, got 0",
        ),
        (DatabaseConfig { acquire_timeout_s: 0, ..base.clone() }, "acquire_timeout_s: must be at least 1, got 0"),
        (DatabaseConfig { idle_timeout_s: 0, ..base.clone() }, "idle_timeout_s: must be at least 1, got 0"),
        (DatabaseConfig { max_lifetime_s: 0, ..base.clone() }, "max_lifetime_s: must be at least 1, got 0"),
        (
            DatabaseConfig { slow_query_threshold_ms: 0, ..base.clone() },
            "slow_query_threshold_ms: must be at least 1, got 0",
        ),
        (
            DatabaseConfig { acquire_timeout_s: u64::MAX, ..base.clone() },
            "acquire_timeout_s: must be at most 31536000, got 18446744073709551615",
        ),
        (
            DatabaseConfig { url: Some("mysql://gw:pw@db/gw".into()), ..base.clone() },
            "url: must start with `sqlite:`, `postgres:` or `postgresql:`",
        ),
    ];
    for (cfg, expected) in cases {
        let err = cfg.validate().expect_err(expected);
        assert_eq!(err.to_string(), expected);
    }
}

#[test]
fn a_malformed_url_is_refused_without_showing_its_password() {
    // The drivers' messages quote bad parameter values; a password that
    // happens to be one of them is hidden all the same.
    let cfg =
        DatabaseConfig { url: Some("postgres://gw:maybe@db/gw?sslmode=maybe".into()), ..DatabaseConfig::default() };
    let err = cfg.validate().expect_err("sslmode=maybe is not a mode");
    assert_eq!(err.path, "url");
    assert!(err.to_string().contains("ssl_mode") && !err.to_string().contains("maybe"), "{err}");

    let cfg = DatabaseConfig { url: Some("sqlite:/tmp/x.db?mode=sometimes".into()), ..DatabaseConfig::default() };
    let err = cfg.validate().expect_err("mode=sometimes is not a mode");
    assert_eq!(
        err.to_string(),
        "url: is not a valid database URL: error with configuration: unknown value \"sometimes\" for `mode`"
    );
    for url in ["sqlite:/var/lib/gw/gw.db", "sqlite::memory:", "postgresql://gw@db:5433/gw?sslmode=disable"] {
        let cfg = DatabaseConfig { url: Some(url.into()), ..DatabaseConfig::default() };
        cfg.validate().expect(url);
    }
}

#[tokio::test]
async fn open_refuses_an_invalid_config_before_touching_the_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let cfg = DatabaseConfig { min_connections: 60, ..DatabaseConfig::default() };
    match Store::open(&cfg, &data_dir).await {
        Err(StoreError::Config(e)) => assert_eq!(e.path, "min_connections"),
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(!data_dir.exists());
}
