//! Test support: a gateway (memory bus, SQLite store, drivers, cache, hub)
//! assembled in-process.
#![allow(dead_code)]

use std::sync::Arc;

use gateway_api::{ApiConfig, ApiMetrics, AppState, Auth, Devices, LatestCache, Parts, WsHub};
use gateway_bus::{Bus, BusMetrics, BusSettings, Persistence};
use gateway_drivers::{DeviceConfig, DriverManager};
use gateway_store::{DatabaseConfig, History, HistoryConfig, HistoryMetrics, Role, Store};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

/// The devices most tests use: a config-file sim device and a disabled one.
pub fn default_devices() -> Vec<Value> {
    vec![
        json!({
            "name": "line1", "driver": "sim", "poll_interval_ms": 20,
            "tags": [
                {"name": "temperature", "signal": "sine", "offset": 20.0, "amplitude": 2.0},
                {"name": "setpoint", "signal": "constant", "offset": 5.0, "writable": true},
                {"name": "parts", "signal": "counter"}
            ]
        }),
        json!({"name": "off", "driver": "sim", "enabled": false,
            "tags": [{"name": "x", "signal": "constant", "writable": true}]}),
    ]
}

pub struct Env {
    pub state: AppState,
    pub bus: Bus,
    pub store: Store,
    pub manager: Arc<DriverManager>,
    /// Secrets of one API token per role.
    pub admin: String,
    pub operator: String,
    pub viewer: String,
    pub cache: Arc<LatestCache>,
    /// History, when the env was made with it (recording from `bus`).
    pub history: Option<History>,
    _dir: tempfile::TempDir,
}

pub async fn env_with(cfg: ApiConfig, from_file: Vec<Value>) -> Env {
    env_with_db(cfg, from_file, DatabaseConfig::default()).await
}

pub async fn env_with_db(cfg: ApiConfig, from_file: Vec<Value>, db: DatabaseConfig) -> Env {
    env_full(cfg, from_file, db, None).await
}

/// An env whose history records from its bus (SQLite in its directory).
pub async fn env_with_history(history: HistoryConfig) -> Env {
    env_full(ApiConfig::default(), Vec::new(), DatabaseConfig::default(), Some(history)).await
}

pub async fn env_full(
    cfg: ApiConfig,
    from_file: Vec<Value>,
    db: DatabaseConfig,
    history: Option<HistoryConfig>,
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let bus_cfg = BusSettings { persistence: Persistence::Memory, ..BusSettings::memory_optimized() };
    let bus = Bus::open(bus_cfg, Arc::new(BusMetrics::new(&mut registry))).unwrap();
    let store = Store::open(&db, dir.path()).await.unwrap();
    let api_metrics = Arc::new(ApiMetrics::new(&mut registry));
    let cache = LatestCache::spawn(&bus).unwrap();
    let ws = WsHub::spawn(&bus, cfg.clone(), api_metrics.clone(), cache.clone()).unwrap();
    let manager = Arc::new(DriverManager::new(bus.clone()).with_data_dir(dir.path()));
    let from_file: Vec<DeviceConfig> = from_file.into_iter().map(|v| DeviceConfig::from_json(v).unwrap()).collect();
    let devices = Arc::new(
        Devices::load(store.clone(), manager.clone(), cache.clone(), &from_file, Default::default()).await.unwrap(),
    );
    let auth = Arc::new(Auth::new(store.clone(), cfg.auth.clone(), cfg.bind));
    let admin = auth.create_token("test-admin", Role::Admin).await.unwrap();
    let operator = auth.create_token("test-operator", Role::Operator).await.unwrap();
    let viewer = auth.create_token("test-viewer", Role::Viewer).await.unwrap();
    gateway_api::command_audit::spawn(&bus, auth.clone()).unwrap();
    let history = match history {
        Some(h) => {
            let metrics = Arc::new(HistoryMetrics::new(&mut registry));
            let h = History::open(&h, &db, dir.path(), metrics).await.unwrap();
            h.start(&bus).await.unwrap();
            Some(h)
        }
        None => None,
    };
    // Alarms with no rules of their own; tests add rules over the API.
    let alarm_service = gateway_alarms::AlarmService::spawn(
        &bus,
        Vec::new(),
        dir.path(),
        Arc::new(gateway_alarms::AlarmMetrics::new(&mut registry)),
    )
    .unwrap();
    ws.attach_alarms(alarm_service.clone());
    let alarms = gateway_api::alarms::Alarms::load(alarm_service, store.clone(), Vec::new(), Vec::new()).await.unwrap();
    let state = AppState::new(Parts {
        bus: bus.clone(),
        cache: cache.clone(),
        devices,
        store: store.clone(),
        registry: Arc::new(registry),
        metrics: api_metrics,
        ws,
        cfg,
        auth,
        preset: "memory_optimized".into(),
        history: history.clone(),
        alarms: Some(alarms),
        reload: None,
        loaded: gateway_api::LoadedConfig::new(serde_json::json!({
            "source": "/etc/edge-gateway/gateway.toml",
            "config": { "database": { "url": "postgres://gw:***@db/gw" } },
        })),
    });
    Env { state, bus, cache, store, manager, admin, operator, viewer, history, _dir: dir }
}

/// A request through the router, with `token` if any; the status and the JSON body.
pub async fn call_as(
    env: &Env,
    token: Option<&str>,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (axum::http::StatusCode, Value) {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(axum::http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some(b) => {
            req = req.header(axum::http::header::CONTENT_TYPE, "application/json");
            axum::body::Body::from(b.to_string())
        }
        None => axum::body::Body::empty(),
    };
    let resp = gateway_api::router(env.state.clone()).oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}
