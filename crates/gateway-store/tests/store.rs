//! The store's behaviour, run against both databases: every case below runs
//! once on SQLite (`sqlite::<case>`, one test each) and once on a real
//! PostgreSQL server that this binary starts (`postgres_passes_every_case`,
//! which runs all cases against one server, each in a database of its own:
//! starting a server per case would cost seconds each, and cargo-nextest runs
//! every test in a process of its own, so a shared static server would not be
//! shared at all, and never stopped).

mod common;

use std::time::{Duration, Instant};

use common::TestDb;
use gateway_store::{DatabaseConfig, DeviceRecord, Dialect, Source, Store, StoreError, TagRecord};
use serde_json::{Map, Value, json};
use sqlx::Row;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn tag(name: &str) -> TagRecord {
    TagRecord { name: name.into(), writable: false, params: obj(json!({"address": format!("40001/{name}")})) }
}

fn device(name: &str, source: Source, tags: &[&str]) -> DeviceRecord {
    DeviceRecord {
        name: name.into(),
        driver: "sim".into(),
        enabled: true,
        poll_interval_ms: 1000,
        params: obj(json!({"seed": 7})),
        tags: tags.iter().map(|t| tag(t)).collect(),
        source,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

fn tag_names(dev: &DeviceRecord) -> Vec<&str> {
    dev.tags.iter().map(|t| t.name.as_str()).collect()
}

async fn get(store: &Store, name: &str) -> DeviceRecord {
    match store.get_device(name).await {
        Ok(Some(dev)) => dev,
        other => panic!("device {name:?} should be stored, got {other:?}"),
    }
}

/// Time passes between changes, so that timestamps can tell them apart.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(store.pool()).await.expect("count query")
}

async fn a_created_device_reads_back_with_its_params_and_tag_order(db: TestDb) {
    let store = db.open().await;
    let mut dev = device("boiler", Source::Api, &["z_last", "a_first", "m_mid"]);
    dev.enabled = false;
    dev.poll_interval_ms = 250;
    dev.params = obj(json!({
        "host": "10.0.0.7", "port": 502, "scale": 1.5, "big": u64::MAX, "neg": -3,
        "nested": {"list": [1, "two", null, true]}, "unicode": "Kessel – 温度 ✓",
    }));
    dev.tags[1].writable = true;
    dev.tags[2].params = obj(json!({}));
    store.create_device(&dev).await.expect("create");

    let got = get(&store, "boiler").await;
    assert_eq!(tag_names(&got), ["z_last", "a_first", "m_mid"]);
    assert!(got.created_at_ms > 0, "the store sets created_at_ms");
    assert_eq!(got.created_at_ms, got.updated_at_ms);
    assert_eq!(got, DeviceRecord { created_at_ms: got.created_at_ms, updated_at_ms: got.updated_at_ms, ..dev });
    assert_eq!(store.get_device("nope").await.expect("get"), None);
    assert_eq!(store.list_devices().await.expect("list"), vec![got]);
}

async fn listing_sorts_devices_by_name_and_includes_devices_without_tags(db: TestDb) {
    let store = db.open().await;
    for name in ["b", "é", "a-2", "B", "a"] {
        store.create_device(&device(name, Source::Api, &["t2", "t1"])).await.expect("create");
    }
    store.create_device(&device("empty", Source::Config, &[])).await.expect("create");
    let list = store.list_devices().await.expect("list");
    let names: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["B", "a", "a-2", "b", "empty", "é"], "byte order on every database");
    for dev in &list {
        let expected: &[&str] = if dev.name == "empty" { &[] } else { &["t2", "t1"] };
        assert_eq!(tag_names(dev), expected, "{}", dev.name);
    }
}

async fn creating_an_existing_device_is_a_conflict_and_changes_nothing(db: TestDb) {
    let store = db.open().await;
    let first = device("pump", Source::Api, &["x", "y"]);
    store.create_device(&first).await.expect("create");
    let before = get(&store, "pump").await;

    let mut second = device("pump", Source::Config, &["other"]);
    second.driver = "modbus_tcp".into();
    match store.create_device(&second).await {
        Err(e @ StoreError::Conflict { what: "device", .. }) => {
            assert_eq!(e.to_string(), r#"device "pump" already exists"#);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(get(&store, "pump").await, before);
}

async fn upserting_replaces_all_tags_and_keeps_created_at(db: TestDb) {
    let store = db.open().await;
    assert!(store.upsert_device(&device("mixer", Source::Api, &["a", "b", "c"])).await.expect("upsert"), "created");
    let first = get(&store, "mixer").await;
    tick().await;

    let mut next = device("mixer", Source::Api, &["c", "a", "new"]);
    next.enabled = false;
    next.params = obj(json!({"seed": 8, "extra": "yes"}));
    next.tags[0].writable = true;
    assert!(!store.upsert_device(&next).await.expect("upsert"), "replaced, not created");

    let got = get(&store, "mixer").await;
    assert_eq!(tag_names(&got), ["c", "a", "new"]);
    assert!(got.tags[0].writable);
    assert_eq!(got.params, next.params);
    assert!(!got.enabled);
    assert_eq!(got.created_at_ms, first.created_at_ms, "created_at is kept");
    assert!(got.updated_at_ms > first.updated_at_ms, "updated_at moves");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM tags WHERE device = 'mixer'").await, 3, "no tag left behind");
}

async fn readers_never_see_a_half_replaced_device(db: TestDb) {
    let store = db.open().await;
    let mut a = device("flip", Source::Api, &["a1", "a2", "a3"]);
    a.params = obj(json!({"set": "A"}));
    let mut b = device("flip", Source::Api, &["b1", "b2", "b3", "b4", "b5"]);
    b.params = obj(json!({"set": "B"}));
    store.upsert_device(&a).await.expect("upsert");

    let writer = {
        let (store, a, b) = (store.clone(), a.clone(), b.clone());
        tokio::spawn(async move {
            for i in 0..60 {
                store.upsert_device(if i % 2 == 0 { &b } else { &a }).await.expect("upsert");
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let got = get(&store, "flip").await;
        let whole_a = got.params == a.params && got.tags == a.tags;
        let whole_b = got.params == b.params && got.tags == b.tags;
        assert!(whole_a || whole_b, "a reader saw a mix: params {:?}, tags {:?}", got.params, tag_names(&got));
        reads += 1;
    }
    writer.await.expect("writer");
    assert!(reads > 0);
}

async fn deleting_a_device_removes_its_tags(db: TestDb) {
    let store = db.open().await;
    store.create_device(&device("gone", Source::Api, &["t1", "t2"])).await.expect("create");
    store.create_device(&device("kept", Source::Api, &["t1"])).await.expect("create");
    assert!(store.delete_device("gone").await.expect("delete"));
    assert!(!store.delete_device("gone").await.expect("delete again"), "nothing left to delete");

    assert_eq!(store.get_device("gone").await.expect("get"), None);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM tags WHERE device = 'gone'").await, 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM tags WHERE device = 'kept'").await, 1);
    store.create_device(&device("gone", Source::Api, &[])).await.expect("re-create");
    assert!(get(&store, "gone").await.tags.is_empty(), "no old tags come back");

    // The database itself refuses a tag without its device (foreign keys are
    // on for every connection, not only the one that deleted).
    let orphan =
        sqlx::query("INSERT INTO tags (device, name, position, writable, params) VALUES ('ghost', 't', 0, 0, '{}')")
            .execute(store.pool())
            .await;
    assert!(orphan.is_err(), "a tag of a missing device was accepted");
}

async fn upserting_a_tag_of_a_missing_device_is_not_found(db: TestDb) {
    let store = db.open().await;
    match store.upsert_tag("ghost", &tag("t1")).await {
        Err(e @ StoreError::NotFound { what: "device", .. }) => {
            assert_eq!(e.to_string(), r#"device "ghost" does not exist"#);
        }
        other => panic!("expected not found, got {other:?}"),
    }
    assert_eq!(count(&store, "SELECT COUNT(*) FROM tags").await, 0);
    assert!(!store.delete_tag("ghost", "t1").await.expect("delete tag"));
}

async fn an_updated_tag_keeps_its_position_and_a_new_tag_goes_last(db: TestDb) {
    let store = db.open().await;
    store.create_device(&device("line", Source::Api, &["t1", "t2", "t3"])).await.expect("create");
    let before = get(&store, "line").await;
    tick().await;

    let changed = TagRecord { name: "t2".into(), writable: true, params: obj(json!({"address": "changed"})) };
    assert!(!store.upsert_tag("line", &changed).await.expect("upsert tag"), "t2 existed");
    let got = get(&store, "line").await;
    assert_eq!(tag_names(&got), ["t1", "t2", "t3"]);
    assert_eq!(got.tags[1], changed);
    assert!(got.updated_at_ms > before.updated_at_ms, "a tag change is a device change");
    assert_eq!(got.created_at_ms, before.created_at_ms);

    assert!(store.upsert_tag("line", &tag("t0")).await.expect("upsert tag"), "t0 is new");
    assert_eq!(tag_names(&get(&store, "line").await), ["t1", "t2", "t3", "t0"]);
}

async fn deleting_a_tag_keeps_the_others_in_order(db: TestDb) {
    let store = db.open().await;
    store.create_device(&device("line", Source::Api, &["t1", "t2", "t3"])).await.expect("create");
    assert!(store.delete_tag("line", "t2").await.expect("delete tag"));
    assert!(!store.delete_tag("line", "t2").await.expect("delete tag again"));
    assert_eq!(tag_names(&get(&store, "line").await), ["t1", "t3"]);
    store.upsert_tag("line", &tag("t4")).await.expect("upsert tag");
    store.upsert_tag("line", &tag("t2")).await.expect("upsert tag");
    assert_eq!(tag_names(&get(&store, "line").await), ["t1", "t3", "t4", "t2"]);
}

async fn syncing_config_devices_leaves_api_devices_alone_and_updates_config_ones(db: TestDb) {
    let store = db.open().await;
    let api = device("api1", Source::Api, &["x"]);
    store.create_device(&api).await.expect("create");
    let shared_api = device("shared", Source::Api, &["from_api"]);
    store.create_device(&shared_api).await.expect("create");
    let api_before = get(&store, "api1").await;
    let shared_before = get(&store, "shared").await;

    // Records are stored as config devices whatever their source says.
    let cfg1 = device("cfg1", Source::Api, &["a", "b"]);
    let cfg2 = device("cfg2", Source::Config, &["c"]);
    let shared_cfg = device("shared", Source::Config, &["from_file"]);
    let report = store.sync_config_devices(&[cfg1.clone(), cfg2.clone(), shared_cfg.clone()]).await.expect("sync");
    assert_eq!(report.created, ["cfg1", "cfg2"]);
    assert_eq!(report.skipped, ["shared"]);
    assert!(report.updated.is_empty() && report.unchanged.is_empty() && report.removed.is_empty(), "{report:?}");
    assert_eq!(get(&store, "cfg1").await.source, Source::Config);
    assert_eq!(get(&store, "shared").await, shared_before, "the API's device wins");
    let cfg2_first = get(&store, "cfg2").await;
    let cfg1_first = get(&store, "cfg1").await;
    tick().await;

    let mut cfg1_changed = cfg1.clone();
    cfg1_changed.tags = vec![tag("b"), tag("c")];
    cfg1_changed.poll_interval_ms = 500;
    let report = store.sync_config_devices(&[cfg1_changed, cfg2.clone()]).await.expect("sync");
    assert_eq!(report.updated, ["cfg1"]);
    assert_eq!(report.unchanged, ["cfg2"]);
    assert!(report.created.is_empty() && report.removed.is_empty() && report.skipped.is_empty(), "{report:?}");
    let cfg1_now = get(&store, "cfg1").await;
    assert_eq!(tag_names(&cfg1_now), ["b", "c"]);
    assert_eq!(cfg1_now.poll_interval_ms, 500);
    assert_eq!(cfg1_now.created_at_ms, cfg1_first.created_at_ms);
    assert!(cfg1_now.updated_at_ms > cfg1_first.updated_at_ms);
    assert_eq!(get(&store, "cfg2").await, cfg2_first, "an unchanged device is not rewritten");

    // A config device no longer in the file goes; API devices stay.
    let report = store.sync_config_devices(std::slice::from_ref(&cfg2)).await.expect("sync");
    assert_eq!(report.removed, ["cfg1"]);
    assert_eq!(store.get_device("cfg1").await.expect("get"), None);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM tags WHERE device = 'cfg1'").await, 0);
    assert_eq!(get(&store, "api1").await, api_before);
    assert_eq!(get(&store, "shared").await, shared_before);

    // A file naming a device twice is refused, and nothing changes.
    match store.sync_config_devices(&[device("new", Source::Config, &[]), cfg2.clone(), cfg2.clone()]).await {
        Err(StoreError::Invalid { name, .. }) => assert_eq!(name, "cfg2"),
        other => panic!("expected invalid, got {other:?}"),
    }
    assert_eq!(store.get_device("new").await.expect("get"), None);
}

async fn data_survives_closing_and_reopening_the_store(db: TestDb) {
    let store = db.open().await;
    store.create_device(&device("persist", Source::Api, &["t1"])).await.expect("create");
    store.upsert_tag("persist", &tag("t2")).await.expect("upsert tag");
    let before = store.list_devices().await.expect("list");
    store.health().await.expect("healthy while open");
    store.close().await;
    assert!(matches!(store.health().await, Err(StoreError::Unavailable(_))), "a closed store is not healthy");

    let reopened = db.open().await;
    assert_eq!(reopened.list_devices().await.expect("list"), before);
}

async fn migrations_run_once_per_database(db: TestDb) {
    for _ in 0..3 {
        let store = db.open().await;
        store.close().await;
    }
    let store = db.open().await;
    let versions: Vec<i64> = sqlx::query("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(store.pool())
        .await
        .expect("read the migrations table")
        .iter()
        .map(|row| row.get::<i64, _>(0))
        .collect();
    let expected: Vec<i64> = (1..=gateway_store::migrate::latest_version(db.dialect)).collect();
    assert_eq!(versions, expected);
}

async fn a_database_with_a_newer_schema_is_refused(db: TestDb) {
    let store = db.open().await;
    store.create_device(&device("d", Source::Api, &[])).await.expect("create");
    let future = gateway_store::migrate::latest_version(db.dialect) + 1;
    let sql = match store.dialect() {
        Dialect::Sqlite => format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ({future}, 'from a newer gateway', 1, X'00', 0)"
        ),
        Dialect::Postgres => format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ({future}, 'from a newer gateway', TRUE, '\\x00'::bytea, 0)"
        ),
    };
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(store.pool()).await.expect("pretend a newer gateway ran");
    store.close().await;

    match Store::open(&db.config(), &db.data_dir).await {
        Err(StoreError::Schema(msg)) => {
            assert!(msg.contains(&format!("schema version {future}")) && msg.contains("newer"), "{msg}");
        }
        other => panic!("expected a schema error, got {other:?}"),
    }
}

async fn a_stored_row_with_invalid_json_is_reported_as_corrupt(db: TestDb) {
    let store = db.open().await;
    store.create_device(&device("ok", Source::Api, &["t"])).await.expect("create");
    store.create_device(&device("bad", Source::Api, &["t1", "t2"])).await.expect("create");
    let damage = |sql: &'static str| {
        let pool = store.pool().clone();
        async move { sqlx::query(sql).execute(&pool).await.expect("damage a row") }
    };

    damage("UPDATE devices SET params = '{not json' WHERE name = 'bad'").await;
    match store.get_device("bad").await {
        Err(e @ StoreError::Corrupt { .. }) => {
            let shown = e.to_string();
            assert!(shown.contains(r#""bad""#) && shown.contains("`params`"), "{shown}");
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
    assert!(matches!(store.list_devices().await, Err(StoreError::Corrupt { name, .. }) if name == "bad"));
    assert_eq!(get(&store, "ok").await.name, "ok", "other devices still read");
    let (readable, damaged) = store.list_readable_devices().await.expect("lenient list");
    assert_eq!(readable.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), vec!["ok"]);
    assert_eq!(damaged.len(), 1);
    assert_eq!(damaged[0].0, "bad");

    damage("UPDATE devices SET params = '{}' WHERE name = 'bad'").await;
    damage("UPDATE tags SET params = '[1, 2]' WHERE device = 'bad' AND name = 't2'").await;
    match store.get_device("bad").await {
        Err(StoreError::Corrupt { name, reason }) => {
            assert_eq!(name, "bad");
            assert!(reason.contains(r#"tag "t2""#), "{reason}");
        }
        other => panic!("expected corrupt, got {other:?}"),
    }

    assert!(store.delete_device("bad").await.expect("a corrupt device can be deleted"));
    assert_eq!(store.list_devices().await.expect("list").len(), 1);
}

async fn syncing_repairs_a_corrupt_config_device(db: TestDb) {
    let store = db.open().await;
    let cfg = device("cfg", Source::Config, &["t"]);
    store.sync_config_devices(std::slice::from_ref(&cfg)).await.expect("sync");
    sqlx::query("UPDATE devices SET params = 'garbage' WHERE name = 'cfg'")
        .execute(store.pool())
        .await
        .expect("damage a row");
    let report = store.sync_config_devices(std::slice::from_ref(&cfg)).await.expect("sync");
    assert_eq!(report.updated, ["cfg"]);
    assert_eq!(get(&store, "cfg").await.params, cfg.params);
}

async fn pool_settings_from_the_config_are_applied(db: TestDb) {
    let cfg = DatabaseConfig {
        max_connections: 3,
        min_connections: 2,
        acquire_timeout_s: 1,
        idle_timeout_s: 30,
        max_lifetime_s: 60,
        slow_query_threshold_ms: 250,
        ..db.config()
    };
    let store = db.open_with(cfg).await;
    let pool = store.pool();
    let options = pool.options();
    assert_eq!(options.get_max_connections(), 3);
    assert_eq!(options.get_min_connections(), 2);
    assert_eq!(options.get_acquire_timeout(), Duration::from_secs(1));
    assert_eq!(options.get_idle_timeout(), Some(Duration::from_secs(30)));
    assert_eq!(options.get_max_lifetime(), Some(Duration::from_secs(60)));
    assert_eq!(pool.connect_options().log_settings.slow_statements_duration, Duration::from_millis(250));

    // The pool keeps min_connections open by itself.
    gateway_bench::wait_until(10, "the pool to open min_connections", || pool.size() >= 2).await;

    // And never more than max_connections: a fourth user waits, then times out.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.acquire().await.expect("acquire"));
    }
    let started = Instant::now();
    let e = store.health().await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)) && e.to_string().contains("timed out"), "{e:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "gave up after {:?}", started.elapsed());
    assert_eq!(pool.size(), 3);
    drop(held);
    store.health().await.expect("healthy once connections are back");
}

async fn concurrent_writers_all_succeed(db: TestDb) {
    let store = db.open().await;
    store.create_device(&device("shared", Source::Api, &[])).await.expect("create");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let own = device(&format!("dev{w}"), Source::Api, &["a", "b"]);
                store.upsert_device(&own).await.expect("upsert device");
                store.upsert_tag("shared", &tag(&format!("w{w}_{i}"))).await.expect("upsert tag");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let shared = get(&store, "shared").await;
    assert_eq!(shared.tags.len(), 80);
    for w in 0..8 {
        // Each writer's tags are in the order it added them.
        let mine: Vec<&str> = tag_names(&shared).into_iter().filter(|n| n.starts_with(&format!("w{w}_"))).collect();
        let expected: Vec<String> = (0..10).map(|i| format!("w{w}_{i}")).collect();
        assert_eq!(mine, expected);
    }
    assert_eq!(store.list_devices().await.expect("list").len(), 9);
}

async fn invalid_records_are_refused_without_touching_the_database(db: TestDb) {
    let store = db.open().await;
    let twice = device("twice", Source::Api, &["t", "u", "t"]);
    match store.create_device(&twice).await {
        Err(e @ StoreError::Invalid { .. }) => {
            assert_eq!(e.to_string(), r#"device "twice" cannot be stored: tag "t" appears twice"#);
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    assert!(matches!(store.upsert_device(&twice).await, Err(StoreError::Invalid { .. })));
    let mut huge = device("huge", Source::Api, &[]);
    huge.poll_interval_ms = u64::MAX;
    assert!(matches!(store.upsert_device(&huge).await, Err(StoreError::Invalid { .. })));
    assert!(matches!(store.create_device(&device("", Source::Api, &[])).await, Err(StoreError::Invalid { .. })));
    store.create_device(&device("ok", Source::Api, &[])).await.expect("create");
    assert!(matches!(store.upsert_tag("ok", &tag("")).await, Err(StoreError::Invalid { .. })));
    assert_eq!(count(&store, "SELECT COUNT(*) FROM devices").await, 1);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM tags").await, 0);
}

common::suite!(
    a_created_device_reads_back_with_its_params_and_tag_order,
    listing_sorts_devices_by_name_and_includes_devices_without_tags,
    creating_an_existing_device_is_a_conflict_and_changes_nothing,
    upserting_replaces_all_tags_and_keeps_created_at,
    readers_never_see_a_half_replaced_device,
    deleting_a_device_removes_its_tags,
    upserting_a_tag_of_a_missing_device_is_not_found,
    an_updated_tag_keeps_its_position_and_a_new_tag_goes_last,
    deleting_a_tag_keeps_the_others_in_order,
    syncing_config_devices_leaves_api_devices_alone_and_updates_config_ones,
    data_survives_closing_and_reopening_the_store,
    migrations_run_once_per_database,
    a_database_with_a_newer_schema_is_refused,
    a_stored_row_with_invalid_json_is_reported_as_corrupt,
    syncing_repairs_a_corrupt_config_device,
    pool_settings_from_the_config_are_applied,
    concurrent_writers_all_succeed,
    invalid_records_are_refused_without_touching_the_database,
);
