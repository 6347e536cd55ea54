//! The plan of a bench run: which scenarios, in which order, with which
//! settings and time-outs, and which of them `--only` selects.

use gateway_bench::modbus::Level;
use gateway_bench::mqtt::{self, MqttScenario};
use gateway_bench::nats::{self, NatsScenario};
use gateway_bench::north::{self, NorthSpec};
use gateway_bench::opcua::{self, OpcUaScenario};
use gateway_bus::{Persistence, Preset};
use serde::{Deserialize, Serialize};

use super::{Spec, alarms, bus, default_confirm_runs, gateway, history, http, nats_key, tuning, ws};

/// One planned scenario.
pub(super) struct Step {
    pub(super) id: String,
    pub(super) spec: Spec,
    /// Reason not to run it, known before trying.
    pub(super) skip: Option<String>,
    /// Seconds it should take (for the time-out).
    pub(super) estimate_s: f64,
}

/// Settings in effect.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// `--quick`.
    pub quick: bool,
    /// Seconds measured per level.
    pub duration_s: f64,
    /// Seconds of warm-up per level.
    pub warmup_s: f64,
    /// WebSocket clients.
    pub ws_connections: usize,
    /// `--only`.
    pub only: Option<String>,
    /// Baseline tolerance, percent.
    pub tolerance_pct: f64,
    /// Runs in a row a change must last to count (see `--confirm-runs`).
    #[serde(default = "default_confirm_runs")]
    pub confirm_runs: u32,
    /// Where the budget came from.
    pub budget: String,
    /// The command line.
    pub command: String,
}

pub(super) fn plan(s: &Settings, p99_limit_us: f64) -> Vec<Step> {
    let (d, w) = (s.duration_s, s.warmup_s);
    let mut steps = Vec::new();
    let (cap, write) = if s.quick { (16u64 << 20, 48u64 << 20) } else { (128u64 << 20, 512u64 << 20) };
    steps.push(Step {
        id: "storage.wal_limit".into(),
        spec: Spec::Storage(gateway::StorageSpec { cap_bytes: cap, write_bytes: write }),
        skip: None,
        estimate_s: 10.0,
    });
    for preset in [Preset::LowLatency, Preset::Default, Preset::HighThroughput, Preset::MemoryOptimized] {
        for persistence in [Persistence::Memory, Persistence::Wal] {
            for mode in [bus::Mode::Throughput, bus::Mode::Latency] {
                let key = format!("bus.{}.{}", preset.name(), bus::persistence_name(persistence));
                let mode_name = if mode == bus::Mode::Throughput { "throughput" } else { "latency" };
                // Sixteen bus runs: in --quick, shorter still, so the whole suite stays well under a minute.
                let (seconds, warmup_s) = if s.quick { (d * 0.5, 0.05) } else { (d, w.min(0.5)) };
                steps.push(Step {
                    id: format!("{key}.{mode_name}"),
                    spec: Spec::Bus(bus::BusSpec { preset, persistence, mode, seconds, warmup_s }),
                    skip: None,
                    estimate_s: d + w,
                });
            }
        }
    }
    for preset in [Preset::MemoryOptimized, Preset::Default, Preset::HighThroughput, Preset::LowLatency] {
        steps.push(Step {
            id: format!("resources.{}", preset.name()),
            spec: Spec::Resources(gateway::ResourcesSpec {
                preset,
                devices: 200,
                tags: 50,
                poll_ms: 100,
                warmup_s: if s.quick {
                    0.6
                } else if preset == Preset::MemoryOptimized {
                    // Measured once the preset has settled: it releases its
                    // code pages again after start-up (pages.rs).
                    (w * 2.0).max(crate::pages::SETTLE.as_secs_f64() + 3.0)
                } else {
                    (w * 2.0).max(1.0)
                },
                seconds: d,
            }),
            // No budget line reads low_latency's memory; --quick leaves it out.
            skip: (s.quick && preset == Preset::LowLatency).then(|| "left out by --quick (no budget line)".to_string()),
            estimate_s: d
                + 2.0 * w
                + 2.0
                + if preset == Preset::MemoryOptimized { crate::pages::SETTLE.as_secs_f64() } else { 0.0 },
        });
    }
    let step_rates: Vec<f64> = if s.quick {
        vec![2_000.0, 5_000.0, 10_000.0]
    } else {
        vec![
            2_000.0, 3_000.0, 5_000.0, 7_500.0, 10_000.0, 15_000.0, 20_000.0, 30_000.0, 40_000.0, 60_000.0, 80_000.0,
            100_000.0, 120_000.0, 160_000.0,
        ]
    };
    let levels = 6 + step_rates.len();
    steps.push(Step {
        id: "api".into(),
        spec: Spec::Api(http::ApiSpec { warmup_s: w, seconds: d, p99_limit_us, step_rates }),
        skip: None,
        estimate_s: levels as f64 * (d + w + 0.5) + 5.0,
    });
    steps.push(Step {
        id: "db".into(),
        spec: Spec::Db(gateway::DbSpec { devices: 100, rate: 1000.0, warmup_s: w, seconds: d }),
        skip: None,
        estimate_s: d + w + 3.0,
    });
    steps.push(Step {
        id: "websocket".into(),
        // Two updates a second: the fan-out of each is measured unsaturated (at 10,000
        // clients that is 20,000 messages/s, already most of what 2 cores can send and read).
        spec: Spec::Ws(ws::WsSpec { connections: s.ws_connections, rate_hz: 2.0, warmup_s: w.max(0.5), seconds: d }),
        skip: (s.ws_connections == 0).then(|| "--ws-connections 0".to_string()),
        estimate_s: d + w + 10.0 + s.ws_connections as f64 / 500.0,
    });
    steps.push(Step {
        id: "modbus".into(),
        spec: Spec::Modbus(Level {
            preset: Preset::Default,
            devices: 200,
            tags: 50,
            poll_ms: 100,
            warmup_s: if s.quick { 1.0 } else { 2.0 },
            seconds: d,
        }),
        skip: None,
        estimate_s: d + 5.0,
    });
    let north_missing = north::available().err();
    for (level, poll_ms) in [("100k", 10u64), ("10k", 100)] {
        for format in ["json_batch", "sparkplug_b", "json"] {
            let spec = NorthSpec {
                format: format.into(),
                devices: 20,
                tags: 50,
                poll_ms,
                preset: "default".into(),
                warmup_s: if s.quick { 1.0 } else { 3.0 },
                seconds: d,
                pin_cpu: Some(1),
                history: false,
                hogs: 0,
                extra_config: String::new(),
            };
            let quick_skip = s.quick && (level != "100k" || format != "json_batch");
            steps.push(Step {
                id: north_key(&spec),
                skip: north_missing
                    .clone()
                    .or_else(|| quick_skip.then(|| "left out by --quick (json_batch at 100k only)".to_string())),
                estimate_s: d + 20.0,
                spec: Spec::North(spec),
            });
        }
    }
    // The same job with history recorded (the gateway's default): what the
    // historian costs on top.
    let spec = NorthSpec {
        format: "json_batch".into(),
        devices: 20,
        tags: 50,
        poll_ms: 10,
        preset: "default".into(),
        warmup_s: if s.quick { 1.0 } else { 3.0 },
        seconds: d,
        pin_cpu: Some(1),
        history: true,
        hogs: 0,
        extra_config: String::new(),
    };
    steps.push(Step {
        id: north_key(&spec),
        skip: north_missing.clone().or_else(|| s.quick.then(|| "left out by --quick".to_string())),
        estimate_s: d + 20.0,
        spec: Spec::North(spec),
    });
    history_steps(s, &mut steps);
    alarm_steps(s, &mut steps);
    steps.push(tuning::step(s, north_missing.clone()));
    steps.push(Step {
        id: "opcua".into(),
        // Two servers of 1,000 nodes changing every 100 ms: 20,000 values/s
        // offered, about what two Python asyncua processes can send on this
        // 2-core machine next to the gateway (at 2,000 nodes each they were
        // saturated, answered the session's keep-alive late, and the gateway
        // kept reconnecting; the figure was theirs, not ours).
        spec: Spec::OpcUa(OpcUaScenario {
            servers: 2,
            nodes: if s.quick { 500 } else { 1000 },
            tick_ms: 100,
            publishing_ms: 100,
            warmup_s: if s.quick { 1.0 } else { 3.0 },
            seconds: d.max(1.0),
        }),
        skip: opcua::available().err(),
        estimate_s: d + 15.0,
    });
    let mqtt_missing = mqtt::available().err();
    for format in ["json_batch", "sparkplug_b", "json"] {
        let outage_values = if s.quick { 10_000 } else { 100_000 };
        steps.push(Step {
            id: format!("mqtt.{format}"),
            spec: Spec::Mqtt(MqttScenario { format: format.into(), seconds: d, outage_values, batch: 100 }),
            skip: mqtt_missing.clone(),
            estimate_s: d + 15.0,
        });
    }
    let nats_missing = nats::available().err();
    for cluster in [false, true] {
        for format in ["json_batch", "sparkplug_b", "json"] {
            let spec = NatsScenario {
                format: format.into(),
                cluster,
                seconds: d,
                // The replay, measured with the default format; --quick only on one node.
                outage_values: match (format, s.quick, cluster) {
                    ("json_batch", true, false) => 20_000,
                    ("json_batch", false, _) => 300_000,
                    _ => 0,
                },
                batch: 100,
            };
            // --quick: one format on one node and on the cluster, a few seconds each.
            let left_out = s.quick && format != "json_batch";
            steps.push(Step {
                id: nats_key(&spec),
                skip: nats_missing
                    .clone()
                    .or_else(|| left_out.then(|| "left out by --quick (json_batch only)".to_string())),
                spec: Spec::Nats(spec),
                estimate_s: d + 20.0,
            });
        }
    }
    steps
}

/// The alarm scenarios (issue 14's scale targets).
fn alarm_steps(s: &Settings, steps: &mut Vec<Step>) {
    let q = s.quick;
    let spec = alarms::AlarmsSpec::Eval {
        rules: if q { 1_000 } else { 10_000 },
        tags: 20_000,
        rate: if q { 20_000.0 } else { 100_000.0 },
        seconds: s.duration_s,
    };
    steps.push(Step { id: spec.key(), spec: Spec::Alarms(spec), skip: None, estimate_s: s.duration_s + 10.0 });
    let spec = alarms::AlarmsSpec::Active {
        active: if q { 100 } else { 1_000 },
        rates: if q { vec![20.0] } else { vec![20.0, 100.0] },
        seconds: s.duration_s,
    };
    steps.push(Step { id: spec.key(), spec: Spec::Alarms(spec), skip: None, estimate_s: 3.0 * s.duration_s + 15.0 });
}

/// The history scenarios: in --quick, small and short (they prove the
/// scenarios run; the figures of BENCHMARKS.md come from full runs).
fn history_steps(s: &Settings, steps: &mut Vec<Step>) {
    use history::{Dialect, HistorySpec};
    let q = s.quick;
    let pg_missing = gateway_bench::postgres::available().err();
    for (dialect, rate) in [(Dialect::Sqlite, 250_000.0), (Dialect::Postgres, 350_000.0)] {
        let skip = if dialect == Dialect::Postgres { pg_missing.clone() } else { None };
        let spec = HistorySpec::Write {
            dialect,
            tags: 10_000,
            rate: if q { 20_000.0 } else { rate },
            warmup_s: if q { 0.3 } else { s.warmup_s.max(2.0) },
            seconds: s.duration_s,
        };
        steps.push(Step {
            id: spec.key(),
            spec: Spec::History(spec),
            skip: skip.clone(),
            estimate_s: s.duration_s + 30.0,
        });
        let spec = HistorySpec::Query {
            dialect,
            tags: if q { 1 } else { 10 },
            hours: if q { 1 } else { 24 },
            raw_queries: if q { 2 } else { 20 },
            agg_queries: if q { 5 } else { 200 },
        };
        steps.push(Step { id: spec.key(), spec: Spec::History(spec), skip, estimate_s: if q { 10.0 } else { 120.0 } });
    }
    for mode in [gateway_store::history::PoolMode::Fixed, gateway_store::history::PoolMode::Adaptive] {
        let spec =
            HistorySpec::Pool { mode, rate: if q { 200.0 } else { 2000.0 }, seconds: if q { 1.0 } else { 10.0 } };
        steps.push(Step {
            id: spec.key(),
            spec: Spec::History(spec),
            skip: None,
            estimate_s: if q { 10.0 } else { 60.0 },
        });
    }
    let spec = HistorySpec::Retention {
        tags: if q { 1 } else { 100 },
        hours: if q { 1 } else { 6 },
        rate: if q { 5_000.0 } else { 100_000.0 },
    };
    steps.push(Step {
        id: spec.key(),
        spec: Spec::History(spec),
        skip: None,
        estimate_s: if q { 10.0 } else { 180.0 },
    });
    let spec = HistorySpec::Outage { rate: if q { 20_000.0 } else { 100_000.0 }, outage_s: if q { 1.0 } else { 30.0 } };
    steps.push(Step {
        id: spec.key(),
        spec: Spec::History(spec),
        skip: pg_missing,
        estimate_s: if q { 15.0 } else { 300.0 },
    });
}

pub(super) fn selected(only: Option<&str>, id: &str) -> bool {
    // A word selects the ids it begins, and those with a dot-separated part equal to it
    // (`latency` selects every bus latency run, `db` does not select `modbus`).
    only.is_none_or(|o| {
        o.split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .any(|w| id.starts_with(w) || id.split('.').any(|part| part == w))
    })
}

/// The figures' prefix of a north run: `north.{format}.{10k|100k}`.
pub(super) fn north_key(s: &NorthSpec) -> String {
    let history = if s.history { ".history" } else { "" };
    format!("north.{}.{}k{history}", s.format, (s.offered() / 1000.0).round() as u64)
}
