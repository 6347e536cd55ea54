//! The driver manager notices a driver task that dies: a panic, or an end
//! nobody asked for, shows as `failed` with the reason, never as running.

use std::sync::Arc;

use gateway_bus::{Bus, BusMetrics, BusSettings, Persistence};
use gateway_drivers::{DeviceConfig, Driver, DriverContext, DriverEntry, DriverManager, DriverState};
use gateway_model::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// `driver = "doomed"`: panics, or returns at once, as `mode` says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doomed {
    mode: String,
}

impl Driver for Doomed {
    const NAME: &'static str = "doomed";
    type Tag = serde_json::Map<String, serde_json::Value>;

    fn validate(&self, _dev: &DeviceConfig) -> Result<(), FieldError> {
        Ok(())
    }

    fn run(&self, _dev: Arc<DeviceConfig>, mut ctx: DriverContext) -> impl Future<Output = ()> + Send + 'static {
        let mode = self.mode.clone();
        async move {
            ctx.status.set_connected(true);
            match mode.as_str() {
                "panic" => panic!("register 40001 is not what I expected"),
                "return" => {}
                _ => ctx.shutdown.wait().await,
            }
        }
    }
}

static REGISTRY: &[DriverEntry] = &[DriverEntry::of::<Doomed>()];

fn device(name: &str, mode: &str) -> DeviceConfig {
    DeviceConfig::from_json_with(REGISTRY, json!({"name": name, "driver": "doomed", "mode": mode})).unwrap()
}

fn manager() -> DriverManager {
    let settings = BusSettings { persistence: Persistence::Memory, ..BusSettings::memory_optimized() };
    DriverManager::new(Bus::open(settings, Arc::new(BusMetrics::unregistered())).unwrap())
}

#[tokio::test]
async fn a_driver_that_panics_shows_as_failed_with_the_panic_message() {
    let m = manager();
    m.apply(device("healthy", "run")).await;
    m.apply(device("crashy", "panic")).await;
    let status = m.status("crashy").unwrap();
    gateway_bench::wait_until(10, "the panic to be noticed", || status.is_failed()).await;
    let snap = status.snapshot();
    assert!(!snap.running, "{snap:?}");
    assert!(!snap.connected, "{snap:?}");
    assert_eq!(snap.state, DriverState::Failed);
    let err = snap.last_error.unwrap();
    assert!(err.contains("panicked") && err.contains("register 40001 is not what I expected"), "{err}");
    assert!(!err.contains("backtrace") && !err.contains(".rs:"), "the reason is the message alone: {err}");
    assert_eq!(m.failed(), vec![("crashy".to_owned(), err)]);
    let healthy = m.status("healthy").unwrap().snapshot();
    assert!(healthy.running && healthy.state == DriverState::Running, "{healthy:?}");

    // Changing the device starts a fresh task with a fresh status.
    m.apply(device("crashy", "run")).await;
    assert_eq!(m.status("crashy").unwrap().snapshot().state, DriverState::Running);
    assert!(m.failed().is_empty());
    m.stop_all().await;
}

#[tokio::test]
async fn a_driver_that_ends_without_being_told_shows_as_failed() {
    let m = manager();
    m.apply(device("quitter", "return")).await;
    let status = m.status("quitter").unwrap();
    gateway_bench::wait_until(10, "the end to be noticed", || status.is_failed()).await;
    let snap = status.snapshot();
    assert!(!snap.running && snap.state == DriverState::Failed, "{snap:?}");
    assert!(snap.last_error.unwrap().contains("stopped by itself"));
    assert_eq!(m.failed().len(), 1);
}

#[tokio::test]
async fn a_driver_told_to_stop_is_not_failed() {
    let m = manager();
    m.apply(device("a", "run")).await;
    let status = m.status("a").unwrap();
    assert!(m.stop("a").await);
    let snap = status.snapshot();
    assert!(!snap.running && snap.state == DriverState::Running && snap.last_error.is_none(), "{snap:?}");
    assert!(m.failed().is_empty());
}
