//! Test support: a gateway (memory bus, SQLite store, drivers, cache, hub)
//! assembled in-process.
#![allow(dead_code)]

use std::sync::Arc;

use gateway_api::{ApiConfig, ApiMetrics, AppState, Devices, LatestCache, Parts, WsHub};
use gateway_bus::{Bus, BusMetrics, BusSettings, Persistence};
use gateway_drivers::{DeviceConfig, DriverManager};
use gateway_store::{DatabaseConfig, Store};
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
    pub cache: Arc<LatestCache>,
    _dir: tempfile::TempDir,
}

pub async fn env_with(cfg: ApiConfig, from_file: Vec<Value>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let bus_cfg = BusSettings { persistence: Persistence::Memory, ..BusSettings::memory_optimized() };
    let bus = Bus::open(bus_cfg, Arc::new(BusMetrics::new(&mut registry))).unwrap();
    let store = Store::open(&DatabaseConfig::default(), dir.path()).await.unwrap();
    let api_metrics = Arc::new(ApiMetrics::new(&mut registry));
    let cache = LatestCache::spawn(&bus).unwrap();
    let ws = WsHub::spawn(&bus, cfg.clone(), api_metrics.clone(), cache.clone()).unwrap();
    let manager = Arc::new(DriverManager::new(bus.clone()));
    let from_file: Vec<DeviceConfig> = from_file.into_iter().map(|v| DeviceConfig::from_json(v).unwrap()).collect();
    let devices = Arc::new(Devices::load(store.clone(), manager, cache.clone(), &from_file).await.unwrap());
    let state = AppState::new(Parts {
        bus: bus.clone(),
        cache: cache.clone(),
        devices,
        store,
        registry: Arc::new(registry),
        metrics: api_metrics,
        ws,
        cfg,
        preset: "memory_optimized".into(),
    });
    Env { state, bus, cache, _dir: dir }
}
