//! What the API says when part of the gateway fails: a full database (507,
//! and health says so until writes work again), a dead driver (health
//! degraded, naming the device), and a sim write the tag cannot hold (400).

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Env, env_with, env_with_db};
use gateway_api::{ApiConfig, router};
use gateway_drivers::{DeviceConfig, Driver, DriverContext, DriverEntry, FieldError};
use gateway_store::DatabaseConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn call(env: &Env, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req =
        Request::builder().method(method).uri(uri).header(header::AUTHORIZATION, format!("Bearer {}", env.admin));
    let body = match body {
        Some(b) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = router(env.state.clone()).oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())))
}

/// A sim device with enough tags (about 20 KiB) to need new database pages.
fn big_device(name: &str) -> Value {
    let tags: Vec<Value> =
        (0..200).map(|i| json!({"name": format!("temperature_{i:04}"), "signal": "sine", "offset": i})).collect();
    json!({"name": name, "driver": "sim", "poll_interval_ms": 1000, "tags": tags})
}

/// Makes the database unable to grow (what a full disk does to it), or lets
/// it grow again. Per connection: the store has one, and a connection left
/// inside a failed transaction is replaced, so this is set before each write.
async fn set_max_pages(env: &Env, pages: u64) {
    let sql = format!("PRAGMA max_page_count = {pages}");
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(env.store.pool()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_answers_507_and_health_says_so_until_a_write_works() {
    let db = DatabaseConfig { max_connections: 1, min_connections: 1, ..DatabaseConfig::default() };
    let env = env_with_db(ApiConfig::default(), common::default_devices(), db).await;
    let (s, v) = call(&env, "GET", "/api/v1/system/health", None).await;
    assert_eq!((s, &v["checks"]["store"]), (StatusCode::OK, &json!("ok")), "{v}");

    for round in 0..3 {
        set_max_pages(&env, 1).await;
        let (s, v) = call(&env, "POST", "/api/v1/devices", Some(big_device(&format!("press{round}")))).await;
        assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE, "round {round}: {v}");
        assert_eq!(v["error"]["code"], "storage_full", "{v}");
        assert!(!v.to_string().contains("transaction depth"), "{v}");
        let (s, v) = call(&env, "GET", "/api/v1/system/health", None).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "health must tell the truth: {v}");
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["checks"]["store"], "failing (disk full)");
        let (s, _) = call(&env, "GET", "/api/v1/devices/press0", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "a refused device must not run");
    }

    set_max_pages(&env, 1 << 30).await;
    let (s, v) = call(&env, "POST", "/api/v1/devices", Some(big_device("press9"))).await;
    assert_eq!(s, StatusCode::CREATED, "writes work once there is room: {v}");
    let (s, v) = call(&env, "GET", "/api/v1/system/health", None).await;
    assert_eq!((s, &v["checks"]["store"]), (StatusCode::OK, &json!("ok")), "{v}");
}

/// `driver = "doomed"`: panics as soon as it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doomed {}

impl Driver for Doomed {
    const NAME: &'static str = "doomed";
    type Tag = serde_json::Map<String, Value>;

    fn validate(&self, _dev: &DeviceConfig) -> Result<(), FieldError> {
        Ok(())
    }

    fn run(&self, dev: Arc<DeviceConfig>, _ctx: DriverContext) -> impl Future<Output = ()> + Send + 'static {
        let name = dev.name.clone();
        async move { panic!("the doomed driver of {name} fell over") }
    }
}

static DOOMED: &[DriverEntry] = &[DriverEntry::of::<Doomed>()];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_driver_makes_health_degraded_and_names_the_device() {
    let env = env_with(ApiConfig::default(), common::default_devices()).await;
    let (s, v) = call(&env, "GET", "/api/v1/system/health", None).await;
    assert_eq!((s, &v["checks"]["drivers"]), (StatusCode::OK, &json!("ok")), "{v}");

    let dev = DeviceConfig::from_json_with(DOOMED, json!({"name": "kiln", "driver": "doomed"})).unwrap();
    env.manager.apply(dev).await;
    let status = env.manager.status("kiln").unwrap();
    gateway_bench::wait_until(10, "the driver's panic to be noticed", || status.is_failed()).await;

    let (s, v) = call(&env, "GET", "/api/v1/system/health", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["checks"]["drivers"], "failed: kiln");
    let snap = serde_json::to_value(status.snapshot()).unwrap();
    assert_eq!((&snap["running"], &snap["state"]), (&json!(false), &json!("failed")), "{snap}");
    assert!(snap["last_error"].as_str().unwrap().contains("the doomed driver of kiln fell over"), "{snap}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_writes_the_tag_cannot_hold_are_refused_with_400() {
    let dev = json!({"name": "w", "driver": "sim", "poll_interval_ms": 50, "tags": [
        {"name": "i", "signal": "constant", "data_type": "i64", "writable": true},
        {"name": "u", "signal": "constant", "data_type": "u64", "writable": true},
        {"name": "f", "signal": "constant", "writable": true},
    ]});
    let env = env_with(ApiConfig::default(), vec![dev]).await;
    let refused = [("w.i", json!(1e30)), ("w.u", json!(-5)), ("w.i", json!(2.5)), ("w.i", json!(u64::MAX))];
    for (tag, value) in refused {
        let (s, v) = call(&env, "POST", "/api/v1/commands", Some(json!({"tag": tag, "value": value}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{tag} = {value}: {v}");
        assert_eq!(v["error"]["code"], "rejected", "{v}");
    }
    let taken = [("w.i", json!(42), json!(42)), ("w.u", json!(5), json!(5)), ("w.f", json!(2.5), json!(2.5))];
    for (tag, value, echoed) in taken {
        let (s, v) = call(&env, "POST", "/api/v1/commands", Some(json!({"tag": tag, "value": value}))).await;
        assert_eq!(s, StatusCode::OK, "{tag} = {value}: {v}");
        assert_eq!(v["status"], "ok", "{v}");
        wait_for_value(&env, tag, &echoed).await;
    }
}

async fn wait_for_value(env: &Env, tag: &str, want: &Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (s, v) = call(env, "GET", &format!("/api/v1/values/{tag}"), None).await;
        if s == StatusCode::OK && &v["value"] == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{tag} never became {want}: {s} {v}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
