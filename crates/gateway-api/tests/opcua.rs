//! Browse and import over the API against a real OPC UA server (the
//! `asyncua` server of the drivers' tests, from PyPI), the roles they need,
//! their audit, and secrets shown as `***`.

mod common;

use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Env, call_as, env_with};
use gateway_api::ApiConfig;
use gateway_bench::peer::{PythonPeer, python};
use serde_json::{Value, json};

async fn env() -> Env {
    env_with(ApiConfig::default(), common::default_devices()).await
}

/// The asyncua server of the drivers' tests on `port`; its namespace index.
fn server(port: u16) -> (PythonPeer, u64) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway-drivers/tests/peers/opcua_server.py");
    let mut p = PythonPeer::spawn(&python("asyncua"), &script, &["--port", &port.to_string()]);
    let ready: Value = serde_json::from_str(&p.line("READY ", Duration::from_secs(30))).unwrap();
    (p, ready["ns"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_browses_a_device_and_imports_tags_from_it() {
    let env = env().await;
    let port = gateway_bench::free_port();
    let (_srv, ns) = server(port);
    let admin = Some(env.admin.as_str());
    let dev = json!({"name": "ua", "driver": "opcua", "endpoint": format!("opc.tcp://127.0.0.1:{port}/test"),
                     "timeout_ms": 2000, "tags": []});
    let (s, v) = call_as(&env, admin, "POST", "/api/v1/devices", Some(dev)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let (s, v) = call_as(&env, admin, "GET", "/api/v1/devices/ua/browse", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["children"].as_array().unwrap().iter().any(|c| c["display_name"] == "Plant"), "{v}");
    let uri = format!("/api/v1/devices/ua/browse?node=ns%3D{ns}%3Bs%3DPlant.Line1");
    let (s, v) = call_as(&env, admin, "GET", &uri, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let double = v["children"].as_array().unwrap().iter().find(|c| c["display_name"] == "Double").unwrap().clone();
    assert_eq!((double["node_class"].as_str(), double["data_type"].as_str()), (Some("Variable"), Some("Double")));
    let (s, v) = call_as(&env, admin, "GET", "/api/v1/devices/ua/browse?node=bogus", None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_node")), "{v}");
    let (s, v) =
        call_as(&env, admin, "GET", &format!("/api/v1/devices/ua/browse?node=ns%3D{ns}%3Bs%3DNope"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // Browsing reaches out to a device: admins only; so is import.
    for token in [&env.viewer, &env.operator] {
        let (s, _) = call_as(&env, Some(token), "GET", "/api/v1/devices/ua/browse", None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = call_as(&env, Some(token), "POST", "/api/v1/devices/ua/import", Some(json!({"nodes": []}))).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }

    let body = json!({"nodes": [{"node_id": double["node_id"]}, {"node_id": format!("ns={ns};s=Line1.Int32"), "name": "count"}]});
    let (s, v) = call_as(&env, admin, "POST", "/api/v1/devices/ua/import", Some(body.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["tags"][1],
        json!({"name": "count", "node_id": format!("ns={ns};s=Line1.Int32"), "data_type": "Int32", "writable": true})
    );
    let (s, v) = call_as(&env, admin, "GET", "/api/v1/devices/ua/tags", None).await;
    assert_eq!((s, v["tags"].as_array().map(Vec::len)), (StatusCode::OK, Some(2)), "{v}");
    let (s, v) = call_as(&env, admin, "POST", "/api/v1/devices/ua/import", Some(body)).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("exists")), "{v}");
    // The imported tags are read.
    gateway_bench::wait_until(30, "an imported tag's value", || {
        env.cache.get("ua.count").is_some_and(|f| f.quality.is_good())
    })
    .await;
    // Audited as a device change.
    let (_, audit) = call_as(&env, admin, "GET", "/api/v1/audit?limit=100", None).await;
    let entry = audit["entries"].as_array().into_iter().flatten().find(|e| e["action"] == "device.import").cloned();
    let entry = entry.unwrap_or_else(|| panic!("no device.import in {audit}"));
    assert_eq!((entry["target"].as_str(), entry["outcome"].as_str()), (Some("ua"), Some("ok")), "{entry}");

    // A driver that cannot browse says so.
    let (s, v) = call_as(&env, admin, "GET", "/api/v1/devices/line1/browse", None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("not_supported")), "{v}");
    let (s, v) = call_as(&env, admin, "POST", "/api/v1/devices/line1/import", Some(json!({"nodes": [{}]}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "line1 belongs to the config file: {v}");
}

#[tokio::test]
async fn passwords_read_as_stars_and_a_put_that_sends_them_back_keeps_them() {
    let env = env().await;
    let admin = Some(env.admin.as_str());
    let dev = json!({"name": "ua", "driver": "opcua", "endpoint": "opc.tcp://127.0.0.1:9/x",
                     "username": "op", "password": "s3cret", "tags": []});
    let (s, v) = call_as(&env, admin, "POST", "/api/v1/devices", Some(dev)).await;
    assert_eq!((s, v["password"].as_str()), (StatusCode::CREATED, Some("***")), "{v}");
    let (_, mut got) = call_as(&env, admin, "GET", "/api/v1/devices/ua", None).await;
    assert_eq!(got["password"], "***");
    assert!(!got.to_string().contains("s3cret"));
    let (_, list) = call_as(&env, Some(&env.viewer), "GET", "/api/v1/devices", None).await;
    assert!(!list.to_string().contains("s3cret"), "{list}");
    // Read, change another field, send back: the password stays.
    let m = got.as_object_mut().unwrap();
    m.remove("status");
    m.remove("source");
    m.insert("timeout_ms".into(), json!(1234));
    let (s, v) = call_as(&env, admin, "PUT", "/api/v1/devices/ua", Some(got)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let running = env.manager.config("ua").unwrap();
    let p = running.params.get::<gateway_drivers::opcua::OpcUaConfig>().unwrap();
    assert_eq!((p.password.as_ref().map(|s| s.expose()), p.timeout_ms), (Some("s3cret"), 1234));
}
