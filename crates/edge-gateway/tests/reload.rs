//! Live reconfiguration under load: the configuration file changes (a poll
//! interval, a Modbus device added, a connector removed, an alarm rule
//! added) and `POST /api/v1/system/reload` applies only that, while a counter
//! tag keeps flowing to the broker without a gap; a wrong file changes
//! nothing and names the field; SIGHUP reloads too.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{BIN, Gateway, check_counter, collect, http_as, token};
use gateway_bench::mosquitto::Mosquitto;
use gateway_bench::north::{FARM_FLAG, FarmSpec};
use gateway_bench::{free_port, wait_until_blocking};
use serde_json::{Value, json};

fn modbus_server(port: u16) -> Child {
    let spec = serde_json::to_string(&FarmSpec { ports: vec![port], tags: 2 }).unwrap();
    let child = Command::new(BIN).arg(FARM_FLAG).arg(spec).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    wait_until_blocking(60, "the Modbus server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

fn write_config(path: &Path, broker: &Mosquitto, slow_poll_ms: u64, modbus_port: Option<u16>, extra: bool) {
    let mut text = format!(
        r#"
[[devices]]
name = "count"
driver = "sim"
poll_interval_ms = 20
tags = [{{ name = "c", signal = "counter" }}]

[[devices]]
name = "slow"
driver = "sim"
poll_interval_ms = {slow_poll_ms}
tags = [{{ name = "x", signal = "sine" }}]

[[connectors]]
name = "up"
kind = "mqtt"
url = "{url}"
format = "json_batch"
topic_prefix = "gw"
reconnect_min_ms = 50
"#,
        url = broker.url()
    );
    if extra {
        text.push_str(&format!(
            "\n[[connectors]]\nname = \"extra\"\nkind = \"mqtt\"\nurl = \"{}\"\nformat = \"json_batch\"\ntopic_prefix = \"other\"\n",
            broker.url()
        ));
    }
    if let Some(p) = modbus_port {
        text.push_str(&format!(
            r#"
[[devices]]
name = "plc1"
driver = "modbus_tcp"
address = "127.0.0.1:{p}"
poll_interval_ms = 50

[[devices.tags]]
name = "v0"
area = "holding_register"
address = 0
data_type = "f32"

[[alarms.rules]]
name = "plc_bad"
tag = "plc1.*"
kind = "bad_quality"
"#
        ));
    }
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_only_the_difference_and_the_data_keeps_flowing() {
    let broker = Mosquitto::start();
    let main = collect(broker.port, "gw/#").await;
    let other = collect(broker.port, "other/#").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    write_config(&cfg, &broker, 500, None, true);
    let data = dir.path().join("data");
    let port = free_port();
    let g = Gateway::start_with(&data, port, Some(&cfg));
    let admin = token(&data, "ops", "admin");
    let viewer = token(&data, "look", "viewer");
    wait_until_blocking(30, "values at the broker", || {
        main.lock().unwrap().0.get("count.c").is_some_and(|v| v.len() > 20)
    });
    wait_until_blocking(30, "the extra connector's messages", || other.lock().unwrap().1 > 0);

    // A wrong file changes nothing and names the field.
    std::fs::write(&cfg, "[[devices]]\nname = \"count\"\ndriver = \"sim\"\npoll_interval_ms = \"fast\"\n").unwrap();
    let (st, body) = http_as(port, Some(&admin), "POST", "/api/v1/system/reload", None);
    assert_eq!(st, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("devices[0].poll_interval_ms"), "{body}");
    let (st, _) = http_as(port, Some(&viewer), "POST", "/api/v1/system/reload", None);
    assert_eq!(st, 403, "reloading is the admin's");

    // The new file: `slow` polls faster, a Modbus device and an alarm rule
    // are added, the `extra` connector is removed.
    let modbus_port = free_port();
    let mut server = modbus_server(modbus_port);
    write_config(&cfg, &broker, 50, Some(modbus_port), false);
    let (st, changes) = http_as(port, Some(&admin), "POST", "/api/v1/system/reload", None);
    assert_eq!(st, 200, "{changes}");
    assert_eq!(changes["devices"]["created"], json!(["plc1"]), "{changes}");
    assert_eq!(changes["devices"]["updated"], json!(["slow"]), "only the changed device restarts: {changes}");
    assert_eq!(changes["devices"]["unchanged"], 1, "{changes}");
    assert_eq!(changes["connectors"]["stopped"], json!(["extra"]), "{changes}");
    assert_eq!(changes["connectors"]["restarted"], json!([]), "the unchanged connector keeps running: {changes}");
    assert_eq!(changes["alarm_rules"]["added"], json!(["plc_bad"]), "{changes}");
    assert_eq!(changes["restart_needed"], json!([]), "{changes}");
    common::wait_value(port, "plc1.v0", |v| v["quality"] == "good");
    let (_, slow) = http_as(port, Some(&viewer), "GET", "/api/v1/devices/slow", None);
    assert_eq!(slow["poll_interval_ms"], 50, "{slow}");
    // The configuration the System page shows is the reloaded one.
    let (st, shown) = http_as(port, Some(&admin), "GET", "/api/v1/system/config", None);
    assert_eq!(st, 200, "{shown}");
    let names = |list: &Value| list.as_array().unwrap().iter().map(|x| x["name"].clone()).collect::<Vec<_>>();
    assert_eq!(names(&shown["config"]["connectors"]), [json!("up")], "{shown}");
    assert_eq!(names(&shown["config"]["devices"]), [json!("count"), json!("slow"), json!("plc1")], "{shown}");
    // The removed connector's place in the WAL is forgotten, so it holds no
    // data (the log deletes the cursor's file at its next maintenance pass).
    let inspect = || {
        let out = Command::new(BIN).args(["wal", "inspect"]).arg(data.join("wal")).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until_blocking(30, "the removed connector's cursor to go", || !inspect().contains("cursor mqtt-extra "));
    assert!(inspect().contains("cursor mqtt-up "), "the remaining connector keeps its place");
    // The removed connector sends no more. The reload answered only after
    // its task stopped; the first pause lets what was already on the wire
    // arrive, the second is the quiet period itself (an absence has no event
    // to wait for).
    std::thread::sleep(Duration::from_millis(300));
    let after_stop = other.lock().unwrap().1;
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(other.lock().unwrap().1, after_stop, "the removed connector still sends");
    // The new rule watches the new device.
    let (_, rules) = http_as(port, Some(&viewer), "GET", "/api/v1/alarms/rules/plc_bad", None);
    assert_eq!(rules["source"], "config", "{rules}");
    server.kill().unwrap();
    let _ = server.wait();
    wait_until_blocking(30, "the alarm on the new device", || {
        let (_, a) = http_as(port, Some(&viewer), "GET", "/api/v1/alarms/active", None);
        a["alarms"].as_array().is_some_and(|l| l.iter().any(|x| x["id"] == "plc_bad:plc1.v0"))
    });

    // SIGHUP: the Modbus device and its rule go again.
    write_config(&cfg, &broker, 50, None, false);
    assert!(Command::new("kill").args(["-HUP", &g.pid().to_string()]).status().unwrap().success());
    wait_until_blocking(30, "the device to go", || {
        http_as(port, Some(&viewer), "GET", "/api/v1/devices/plc1", None).0 == 404
    });
    let before = check_counter(&main, "count.c");
    wait_until_blocking(30, "more counter values", || main.lock().unwrap().0["count.c"].len() > before + 20);
    // Each reload over the API was audited, the refused one too.
    let (_, audit) = http_as(port, Some(&admin), "GET", "/api/v1/audit?limit=100", None);
    let reloads: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "system.reload").collect();
    assert!(reloads.len() >= 2, "{audit}");
    g.stop();
    let n = check_counter(&main, "count.c");
    assert!(n > 40, "{n}");
}
