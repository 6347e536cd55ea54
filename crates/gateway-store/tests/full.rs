//! A full disk, made deterministic with SQLite's `max_page_count` (the
//! database may not grow, exactly what a full disk does to it): writes fail
//! with `StoreError::Full` while it lasts, health says so, and everything
//! works again once there is room, with no connection left behind inside a
//! transaction that SQLite already rolled back.

mod common;

use common::TestDb;
use gateway_store::{DatabaseConfig, DeviceRecord, Source, Store, StoreError, TagRecord};
use serde_json::{Map, json};

/// A device big enough to need new database pages (about 40 KiB of tags).
fn big_device(name: &str) -> DeviceRecord {
    device_with_tags(name, 200)
}

fn device_with_tags(name: &str, tags: usize) -> DeviceRecord {
    let mut params = Map::new();
    params.insert("note".into(), json!("x".repeat(200)));
    DeviceRecord {
        name: name.into(),
        driver: "sim".into(),
        enabled: true,
        poll_interval_ms: 1000,
        params: Map::new(),
        tags: (0..tags).map(|i| TagRecord { name: format!("t{i}"), writable: false, params: params.clone() }).collect(),
        source: Source::Api,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

/// One pooled connection, so that the per-connection `max_page_count` set
/// through it holds for the next operation of the store.
async fn one_connection_store(db: &TestDb) -> Store {
    db.open_with(DatabaseConfig { max_connections: 1, min_connections: 1, ..db.config() }).await
}

async fn set_max_pages(store: &Store, pages: u64) {
    let mut conn = store.pool().acquire().await.expect("acquire");
    // Below the current size SQLite keeps the current size: "full now".
    let sql = format!("PRAGMA max_page_count = {pages}");
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await.expect("pragma");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fail_as_full_while_the_database_cannot_grow_and_work_again_after() {
    let db = TestDb::sqlite();
    let store = one_connection_store(&db).await;
    store.create_device(&big_device("before")).await.expect("a write before the disk fills");
    store.health().await.expect("healthy before");

    for round in 0..3 {
        // Set before every write: the connection a failed write leaves inside
        // a transaction is replaced, and the limit is per connection.
        set_max_pages(&store, 1).await;
        let e = store.create_device(&big_device(&format!("full{round}"))).await.unwrap_err();
        assert!(matches!(e, StoreError::Full(_)), "round {round}: {e:?}");
        assert!(e.to_string().contains("full"), "{e}");
        set_max_pages(&store, 1).await;
        // Twice the tags: more than the pages its old tags free.
        let e = store.upsert_device(&device_with_tags("before", 400)).await.unwrap_err();
        assert!(matches!(e, StoreError::Full(_)), "round {round}: an upsert: {e:?}");
        let e = store.health().await.unwrap_err();
        assert!(matches!(e, StoreError::Full(_)), "health must report the failing writes: {e:?}");
    }
    // Reads still work meanwhile.
    assert_eq!(store.list_devices().await.expect("list").len(), 1);

    set_max_pages(&store, 1 << 30).await;
    store.create_device(&big_device("after")).await.expect("a write once there is room again");
    store.health().await.expect("healthy again after a write succeeded");
    let names: Vec<String> = store.list_devices().await.expect("list").into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["after", "before"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_byte_database_file_opens_as_an_empty_store() {
    let db = TestDb::sqlite();
    std::fs::create_dir_all(&db.data_dir).expect("mkdir");
    std::fs::write(db.data_dir.join("gateway.db"), b"").expect("an empty file");
    let store = db.open().await;
    assert!(store.list_devices().await.expect("list").is_empty());
    store.create_device(&big_device("d")).await.expect("it is a usable database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_database_is_refused_naming_the_file_and_the_remedy() {
    let db = TestDb::sqlite();
    std::fs::create_dir_all(&db.data_dir).expect("mkdir");
    let file = db.data_dir.join("gateway.db");
    std::fs::write(&file, "this is not a database, just some text that is long enough ".repeat(100)).expect("write");
    let e = Store::open(&db.config(), &db.data_dir).await.unwrap_err();
    assert!(matches!(e, StoreError::BadFile { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains("not a database") && msg.contains("move it aside"), "{msg}");
}
