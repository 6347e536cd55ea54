//! The gateway's health probe: the figures of devices and connectors the
//! alarm sampler ([`gateway_alarms::sampler`]) cannot read itself, since the
//! alarm crate imports neither drivers nor connectors. Per started device:
//! `device.{name}.connected` and `device.{name}.failed` (0 or 1),
//! `device.{name}.poll_ms` (mean poll round trip over the interval, only
//! when polls were timed) and `device.{name}.values_per_s`; per enabled
//! connector: `connector.{name}.connected` (0 or 1), following reloads.
//!
//! It only reads atomics the drivers and connectors keep anyway; it must
//! never take a lock a driver's poll path takes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use gateway_alarms::HealthProbe;
use gateway_connectors::metrics::ConnectorLabel;
use gateway_connectors::{ConnectorConfig, ConnectorMetrics};
use gateway_drivers::{DeviceStatus, DeviceWork, DriverManager};

/// Devices through the driver manager, connectors through their metrics.
pub struct GatewayProbe {
    devices: Arc<DriverManager>,
    connectors: WatchedConnectors,
    connector_metrics: Arc<ConnectorMetrics>,
    last: Mutex<Last>,
}

/// The connectors the probe reports on: the enabled ones of the running
/// configuration, replaced by a reload that adds, removes, enables or
/// disables one. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct WatchedConnectors(Arc<RwLock<Vec<ConnectorLabel>>>);

impl WatchedConnectors {
    /// The enabled connectors of `connectors`.
    pub fn new(connectors: &[ConnectorConfig]) -> Self {
        let w = WatchedConnectors::default();
        w.set(connectors);
        w
    }

    /// From now on, the enabled connectors of `connectors`.
    pub fn set(&self, connectors: &[ConnectorConfig]) {
        let labels =
            connectors.iter().filter(|c| c.enabled).map(|c| ConnectorLabel { connector: c.name.clone() }).collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = labels;
    }
}

/// The previous reading, to turn totals into an interval's rates and means.
#[derive(Default)]
struct Last {
    at: Option<Instant>,
    /// Per device: the status the totals came from (a restarted device has
    /// a fresh one, with totals from zero) and the totals.
    work: HashMap<String, (Arc<DeviceStatus>, DeviceWork)>,
}

impl GatewayProbe {
    /// A probe over the devices `devices` runs and the connectors
    /// `connectors` lists (a reload updates the list).
    pub fn new(
        devices: Arc<DriverManager>,
        connector_metrics: Arc<ConnectorMetrics>,
        connectors: WatchedConnectors,
    ) -> Self {
        GatewayProbe { devices, connectors, connector_metrics, last: Mutex::new(Last::default()) }
    }
}

/// A device's figures from its totals now and, if the same driver run was
/// read before, `elapsed_s` ago.
fn device_figures(
    name: &str,
    status: &DeviceStatus,
    now: DeviceWork,
    before: Option<DeviceWork>,
    elapsed_s: f64,
    out: &mut Vec<(String, f64)>,
) {
    out.push((format!("device.{name}.connected"), f64::from(u8::from(status.is_connected()))));
    out.push((format!("device.{name}.failed"), f64::from(u8::from(status.is_failed()))));
    let Some(before) = before else { return };
    let d = now.since(&before);
    if let Some(ms) = d.mean_round_trip_ms() {
        out.push((format!("device.{name}.poll_ms"), ms));
    }
    if elapsed_s > 0.0 {
        out.push((format!("device.{name}.values_per_s"), d.values as f64 / elapsed_s));
    }
}

impl HealthProbe for GatewayProbe {
    fn sample(&self, out: &mut Vec<(String, f64)>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed_s = last.at.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        last.at = Some(now);
        let mut work = HashMap::with_capacity(last.work.len());
        for name in self.devices.names() {
            // Stopped between names() and here: nothing to say about it.
            let Some(status) = self.devices.status(&name) else { continue };
            let totals = status.work();
            let before = last.work.get(&name).filter(|(s, _)| Arc::ptr_eq(s, &status)).map(|&(_, w)| w);
            device_figures(&name, &status, totals, before, elapsed_s, out);
            work.insert(name, (status, totals));
        }
        last.work = work;
        // Copied out, so a reload never waits on the gauges' lock.
        let connectors = self.connectors.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        for label in &connectors {
            let up = self.connector_metrics.connected.get_or_create(label).get() > 0;
            out.push((format!("connector.{}.connected", label.connector), f64::from(u8::from(up))));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn get(out: &[(String, f64)], name: &str) -> Option<f64> {
        out.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }

    #[test]
    fn device_figures_are_interval_means_and_rates() {
        let s = DeviceStatus::default();
        s.set_connected(true);
        let mut out = Vec::new();
        device_figures("plc1", &s, s.work(), None, 0.0, &mut out);
        assert_eq!(get(&out, "device.plc1.connected"), Some(1.0));
        assert_eq!(get(&out, "device.plc1.failed"), Some(0.0));
        assert_eq!(get(&out, "device.plc1.poll_ms"), None, "no interval yet");
        let before = s.work();
        s.round_trip(Duration::from_millis(4));
        s.round_trip(Duration::from_millis(6));
        s.produced(50);
        out.clear();
        device_figures("plc1", &s, s.work(), Some(before), 2.0, &mut out);
        assert_eq!(get(&out, "device.plc1.poll_ms"), Some(5.0));
        assert_eq!(get(&out, "device.plc1.values_per_s"), Some(25.0));
        // No poll timed in the interval: no round trip figure, a rate of 0.
        out.clear();
        device_figures("plc1", &s, s.work(), Some(s.work()), 1.0, &mut out);
        assert_eq!(get(&out, "device.plc1.poll_ms"), None);
        assert_eq!(get(&out, "device.plc1.values_per_s"), Some(0.0));
        s.set_failed("it panicked");
        out.clear();
        device_figures("plc1", &s, s.work(), None, 1.0, &mut out);
        assert_eq!(get(&out, "device.plc1.connected"), Some(0.0));
        assert_eq!(get(&out, "device.plc1.failed"), Some(1.0));
    }

    #[test]
    fn connectors_report_their_connected_gauge() {
        let m = Arc::new(ConnectorMetrics::unregistered());
        let cfg = gateway_connectors::parse_connectors(
            vec![
                serde_json::json!({"name": "up", "kind": "mqtt", "url": "mqtt://127.0.0.1:1"}),
                serde_json::json!({"name": "off", "kind": "mqtt", "url": "mqtt://127.0.0.1:1", "enabled": false}),
            ],
            "connectors",
        )
        .unwrap();
        let bus = gateway_bus::Bus::open(
            gateway_bus::BusSettings {
                persistence: gateway_bus::Persistence::Memory,
                ..gateway_bus::BusSettings::memory_optimized()
            },
            Default::default(),
        )
        .unwrap();
        let watched = WatchedConnectors::new(&cfg);
        let probe = GatewayProbe::new(Arc::new(DriverManager::new(bus)), m.clone(), watched.clone());
        let mut out = Vec::new();
        probe.sample(&mut out);
        assert_eq!(out, vec![("connector.up.connected".to_string(), 0.0)]);
        m.connected.get_or_create(&ConnectorLabel { connector: "up".into() }).set(1);
        out.clear();
        probe.sample(&mut out);
        assert_eq!(out, vec![("connector.up.connected".to_string(), 1.0)]);
        // A reload enables one and removes the other: the probe follows.
        let reloaded = gateway_connectors::parse_connectors(
            vec![serde_json::json!({"name": "off", "kind": "mqtt", "url": "mqtt://127.0.0.1:1"})],
            "connectors",
        )
        .unwrap();
        watched.set(&reloaded);
        out.clear();
        probe.sample(&mut out);
        assert_eq!(out, vec![("connector.off.connected".to_string(), 0.0)]);
    }
}
