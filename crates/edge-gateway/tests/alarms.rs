//! Alarms in the whole gateway: a rule from the config file raised by a
//! simulated device, forwarded to a real mosquitto (retained), killed with
//! SIGKILL and started again with the alarm still active and
//! unacknowledged, and a value that crossed the limit while the gateway was
//! down raised on the first reading after start.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Gateway, http_as, token};
use gateway_bench::free_port;
use gateway_bench::mosquitto::Mosquitto;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

fn config(dir: &std::path::Path, level: f64, broker: Option<&Mosquitto>) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    let uplink = broker
        .map(|b| {
            format!(
                "[[connectors]]\nname = \"uplink\"\nkind = \"mqtt\"\nurl = \"{}\"\nformat = \"json_batch\"\ntopic_prefix = \"gw\"\nreconnect_min_ms = 50\n",
                b.url()
            )
        })
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            r#"
[[devices]]
name = "tank"
driver = "sim"
poll_interval_ms = 50
tags = [{{ name = "level", signal = "constant", offset = {level} }}]

[[alarms.rules]]
name = "overfill"
tag = "tank.level"
kind = "high_high"
limit = 90.0
deadband = 1.0
message = "Tank level {{value}} % over {{limit}} %"

{uplink}
"#
        ),
    )
    .unwrap();
    path
}

fn active(port: u16, token: &str) -> Value {
    http_as(port, Some(token), "GET", "/api/v1/alarms/active", None).1
}

fn wait_for(what: &str, mut f: impl FnMut() -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn overfill(port: u16, token: &str) -> Option<Value> {
    let a = active(port, token);
    a["alarms"].as_array()?.iter().find(|x| x["id"] == "overfill:tank.level").cloned()
}

/// Retained alarm messages under `gw/alarms/#`, by topic.
async fn alarm_topics(port: u16) -> (Arc<Mutex<Vec<(String, Value, bool)>>>, tokio::task::JoinHandle<()>) {
    let opts = MqttOptions::new(format!("alarm-watch-{}", free_port()), "127.0.0.1", port);
    let (client, mut ev) = AsyncClient::new(opts, 100);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe("gw/alarms/#", QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    s.lock().unwrap().push((p.topic.clone(), v, p.retain));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_alarm_survives_sigkill_and_reaches_the_broker_retained() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path(), 95.0, Some(&broker));
    let port = free_port();
    let g = Gateway::start_with(&data, port, Some(&cfg));
    let viewer = token(&data, "watch", "viewer");
    let raised = wait_for("the overfill alarm", || overfill(port, &viewer));
    assert_eq!(raised["state"], "active_unacked");
    assert_eq!(raised["priority"], "high", "high_high defaults to high");
    assert_eq!(raised["message"], "Tank level 95 % over 90 %");
    // The transition is in the file before it is published: give the
    // event a moment to reach the broker, then kill without warning.
    let (seen, task) = alarm_topics(broker.port).await;
    let msg = wait_for("the alarm at the broker", || {
        seen.lock().unwrap().iter().find(|(t, _, _)| t == "gw/alarms/overfill/tank.level").map(|(_, v, _)| v.clone())
    });
    assert_eq!(msg["code"], "raised");
    assert_eq!(msg["alarm"]["state"], "active_unacked");
    task.abort();
    g.kill();

    let g = Gateway::start_with(&data, port, Some(&cfg));
    let after = overfill(port, &viewer).expect("still active right after the restart, before any new reading");
    assert_eq!(after["state"], "active_unacked", "{after}");
    assert_eq!(after["since"], raised["since"], "the same raise, not a new one");
    // A subscriber arriving now gets the retained state at once.
    let (seen, task) = alarm_topics(broker.port).await;
    let retained = wait_for("the retained alarm", || {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(t, _, r)| t == "gw/alarms/overfill/tank.level" && *r)
            .map(|(_, v, _)| v.clone())
    });
    assert_eq!(retained["alarm"]["id"], "overfill:tank.level");
    task.abort();
    let operator = token(&data, "op", "operator");
    let (st, body) = http_as(
        port,
        Some(&operator),
        "POST",
        "/api/v1/alarms/overfill:tank.level/ack",
        Some(&json!({"comment": "pump stopped"})),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["state"], "active_acked");
    g.kill();
    let g = Gateway::start_with(&data, port, Some(&cfg));
    let after = overfill(port, &viewer).expect("acknowledged, still active");
    assert_eq!(after["state"], "active_acked", "the acknowledgement survived the crash too");
    g.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_crossed_while_the_gateway_was_down_is_raised_on_the_first_reading() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let g = Gateway::start_with(&data, port, Some(&config(dir.path(), 50.0, None)));
    let viewer = token(&data, "watch", "viewer");
    common::wait_value(port, "tank.level", |v| v["value"] == 50.0);
    assert!(overfill(port, &viewer).is_none());
    g.stop();
    // While it was down the tank filled up (here: the simulated level changed).
    let g = Gateway::start_with(&data, port, Some(&config(dir.path(), 97.0, None)));
    let a = wait_for("the overfill alarm", || overfill(port, &viewer));
    assert_eq!(a["state"], "active_unacked");
    assert_eq!(a["value"], 97.0);
    g.stop();
}
