//! What only the SQLite backend does: where its file goes, and the settings
//! every pooled connection gets (WAL, foreign keys, busy timeout).

mod common;

use std::time::Duration;

use common::TestDb;
use gateway_store::{DatabaseConfig, DeviceRecord, Source, Store};
use serde_json::Map;

fn device(name: &str) -> DeviceRecord {
    DeviceRecord {
        name: name.into(),
        driver: "sim".into(),
        enabled: true,
        poll_interval_ms: 1000,
        params: Map::new(),
        tags: Vec::new(),
        source: Source::Api,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_uses_wal_foreign_keys_and_the_busy_timeout() {
    let db = TestDb::sqlite();
    let store = db.open_with(DatabaseConfig { acquire_timeout_s: 7, ..db.config() }).await;
    // Three connections at once, so that they are three different ones.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(store.pool().acquire().await.expect("acquire"));
    }
    for conn in &mut conns {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut **conn).await.expect("pragma");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&mut **conn).await.expect("pragma");
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&mut **conn).await.expect("pragma");
        assert_eq!((mode.as_str(), fk, busy), ("wal", 1, 7000));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_database_is_gateway_db_in_a_data_directory_created_on_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("var lib").join("gateway #1");
    let store = Store::open(&DatabaseConfig::default(), &data_dir).await.expect("open");
    store.create_device(&device("d")).await.expect("create");
    store.close().await;
    assert!(data_dir.join("gateway.db").is_file(), "gateway.db was not created in {}", data_dir.display());

    let reopened = Store::open(&DatabaseConfig::default(), &data_dir).await.expect("reopen");
    assert_eq!(reopened.list_devices().await.expect("list").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_url_creates_missing_parent_directories() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("a").join("b").join("meta.db");
    let cfg = DatabaseConfig { url: Some(format!("sqlite:{}", file.display())), ..DatabaseConfig::default() };
    let data_dir = tmp.path().join("unused");
    let store = Store::open(&cfg, &data_dir).await.expect("open");
    store.health().await.expect("health");
    assert!(file.is_file());
    assert!(!data_dir.exists(), "the data directory is not used when a URL is given");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_waits_for_another_writer_instead_of_failing() {
    let db = TestDb::sqlite();
    let store = db.open().await;
    // Another writer holds the write lock for a while.
    let mut other = store.pool().begin_with("BEGIN IMMEDIATE").await.expect("begin");
    sqlx::query("UPDATE devices SET enabled = 1").execute(&mut *other).await.expect("write");
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.create_device(&device("waited")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "the write did not wait for the lock");
    other.commit().await.expect("commit");
    writer.await.expect("task").expect("the waiting write succeeds once the lock is free");
    assert!(store.get_device("waited").await.expect("get").is_some());
}
