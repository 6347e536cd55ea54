//! Router tests without a socket (`tower::ServiceExt::oneshot`): every
//! endpoint's success and error shapes, the request limits, commands, and
//! the metrics and OpenAPI documents.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Env, env_with};
use gateway_api::{ApiConfig, router};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn env() -> Env {
    env_with(ApiConfig { max_request_size: 4096, ..ApiConfig::default() }, common::default_devices()).await
}

/// A request with the admin's token (the role tests are in `auth.rs`).
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
    raw(env, req.body(body).unwrap()).await
}

async fn raw(env: &Env, req: Request<Body>) -> (StatusCode, Value) {
    let resp = router(env.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

async fn wait_for_value(env: &Env, tag: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = call(env, "GET", &format!("/api/v1/values/{tag}"), None).await;
        if s == StatusCode::OK {
            return v;
        }
        assert!(Instant::now() < deadline, "no value for {tag}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_and_info_describe_the_running_gateway() {
    let env = env().await;
    let (s, v) = call(&env, "GET", "/api/v1/system/health", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["checks"]["store"], "ok");
    let (s, v) = call(&env, "GET", "/api/v1/system/info", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["preset"], "memory_optimized");
    assert_eq!(v["devices"], 2);
    assert!(v["bus"]["capacity"].as_u64().unwrap() > 0);
    assert!(v["uptime_s"].is_u64());
}

#[tokio::test]
async fn devices_can_be_created_read_changed_and_deleted() {
    let env = env().await;
    let dev = json!({"name": "press7", "driver": "sim", "poll_interval_ms": 50,
                     "tags": [{"name": "force", "signal": "random_walk", "offset": 100.0, "amplitude": 10.0}]});
    let (s, v) = call(&env, "POST", "/api/v1/devices", Some(dev.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["source"], "api");
    let (s, v) = call(&env, "POST", "/api/v1/devices", Some(dev)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&v, "exists");
    // Its driver runs at once.
    let value = wait_for_value(&env, "press7.force").await;
    assert_eq!(value["quality"], "good");
    let (s, v) = call(&env, "GET", "/api/v1/devices/press7", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"]["running"], true);
    assert_eq!(v["tags"][0]["signal"], "random_walk");
    let (s, v) = call(
        &env,
        "PUT",
        "/api/v1/devices/press7",
        Some(json!({"driver": "sim", "poll_interval_ms": 250, "tags": []})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["poll_interval_ms"], 250);
    let (_, v) = call(&env, "GET", "/api/v1/devices", None).await;
    let names: Vec<&str> = v["devices"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["line1", "off", "press7"]);
    let (s, _) = call(&env, "DELETE", "/api/v1/devices/press7", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = call(&env, "GET", "/api/v1/devices/press7", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
    let (s, _) = call(&env, "DELETE", "/api/v1/devices/press7", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tags_of_an_api_device_can_be_managed() {
    let env = env().await;
    let (s, _) = call(&env, "POST", "/api/v1/devices", Some(json!({"name": "d", "driver": "sim"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = call(&env, "POST", "/api/v1/devices/d/tags", Some(json!({"name": "a", "signal": "ramp"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = call(&env, "POST", "/api/v1/devices/d/tags", Some(json!({"name": "a", "signal": "ramp"}))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) =
        call(&env, "PUT", "/api/v1/devices/d/tags/b", Some(json!({"signal": "counter", "writable": true}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(&env, "GET", "/api/v1/devices/d/tags", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["tags"].as_array().unwrap().len(), 2);
    let (s, v) = call(&env, "GET", "/api/v1/devices/d/tags/b", None).await;
    assert_eq!((s, v["writable"].clone()), (StatusCode::OK, json!(true)));
    let (s, v) =
        call(&env, "PUT", "/api/v1/devices/d/tags/b", Some(json!({"signal": "sine", "data_type": "flaot"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("data_type"), "{v}");
    let (s, _) = call(&env, "DELETE", "/api/v1/devices/d/tags/a", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&env, "GET", "/api/v1/devices/d/tags/a", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&env, "GET", "/api/v1/devices/nope/tags", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_devices_are_refused_with_the_field_named() {
    let env = env().await;
    let (s, v) = call(
        &env,
        "POST",
        "/api/v1/devices",
        Some(json!({"name": "x", "driver": "sim", "tags": [{"name": "t", "signal": "sine", "data_type": "flaot"}]})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "invalid_field");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("tags[0].data_type: unknown variant `flaot`"), "{v}");
    let (s, v) = call(&env, "POST", "/api/v1/devices", Some(json!({"name": "x", "driver": "opcua9"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().starts_with("driver:"), "{v}");
    let (s, v) = call(&env, "PUT", "/api/v1/devices/a", Some(json!({"name": "b", "driver": "sim"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "name_mismatch");

    // Devices sharing a serial line must agree on its settings, over the API as in the file.
    let rtu = |name: &str, baud: u32| json!({"name": name, "driver": "modbus_rtu", "port": "/dev/ttyEG-none", "baud_rate": baud});
    let (s, _) = call(&env, "POST", "/api/v1/devices", Some(rtu("m1", 9600))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = call(&env, "POST", "/api/v1/devices", Some(rtu("m2", 19200))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("baud_rate: port /dev/ttyEG-none is shared"), "{v}");
    let (s, v) = call(&env, "PUT", "/api/v1/devices/m2", Some(rtu("m2", 19200))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = call(&env, "PUT", "/api/v1/devices/m1", Some(rtu("m1", 19200))).await;
    assert_eq!(s, StatusCode::OK, "a device may change its own line settings");

    // Not every file is a serial port: [security] modbus_rtu_ports decides (default /dev/tty* and /dev/serial/*).
    for port in ["/proc/self/mem", "/dev/tty../../proc/self/mem", "/etc/shadow"] {
        let dev = json!({"name": "evil", "driver": "modbus_rtu", "port": port});
        let (s, v) = call(&env, "POST", "/api/v1/devices", Some(dev)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{port}: {v}");
        assert_error(&v, "not_allowed");
        assert!(v["error"]["message"].as_str().unwrap().starts_with("port: "), "{v}");
    }
    let (s, _) = call(&env, "GET", "/api/v1/devices/evil", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing was stored or started");
}

#[tokio::test]
async fn devices_from_the_config_file_cannot_be_changed_over_the_api() {
    let env = env().await;
    for (m, uri, body) in [
        ("PUT", "/api/v1/devices/line1", Some(json!({"driver": "sim"}))),
        ("DELETE", "/api/v1/devices/line1", None),
        ("POST", "/api/v1/devices/line1/tags", Some(json!({"name": "z", "signal": "sine"}))),
        ("DELETE", "/api/v1/devices/line1/tags/parts", None),
    ] {
        let (s, v) = call(&env, m, uri, body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{m} {uri}");
        assert_error(&v, "defined_in_config_file");
    }
    let (_, v) = call(&env, "GET", "/api/v1/devices/line1", None).await;
    assert_eq!(v["source"], "config");
}

#[tokio::test]
async fn values_can_be_read_by_pattern_and_by_tag() {
    let env = env().await;
    let v = wait_for_value(&env, "line1.temperature").await;
    for k in ["tag", "value", "quality", "ts"] {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
    assert!(v["value"].as_f64().is_some_and(|x| (18.0..=22.0).contains(&x)), "{v}");
    wait_for_value(&env, "line1.parts").await;
    let (s, v) = call(&env, "GET", "/api/v1/values?pattern=line1.*", None).await;
    assert_eq!(s, StatusCode::OK);
    let tags: Vec<&str> = v["values"].as_array().unwrap().iter().map(|x| x["tag"].as_str().unwrap()).collect();
    assert_eq!(tags, vec!["line1.parts", "line1.setpoint", "line1.temperature"]);
    assert_eq!(v["count"], 3);
    let (s, v) = call(&env, "GET", "/api/v1/values?pattern=*.parts", None).await;
    assert_eq!((s, v["count"].clone()), (StatusCode::OK, json!(1)));
    let (s, v) = call(&env, "GET", "/api/v1/values?pattern=bad%20pattern", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "invalid_pattern");
    let (s, v) = call(&env, "GET", "/api/v1/values/line9.nothing", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
    let (s, v) = call(&env, "GET", "/api/v1/values/off.x", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "no_value");
    let (s, v) = call(&env, "GET", "/api/v1/values/nodot", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "invalid_tag");
}

#[tokio::test]
async fn commands_wait_for_the_device_and_map_every_outcome() {
    let env = env().await;
    wait_for_value(&env, "line1.setpoint").await;
    let (s, v) = call(&env, "POST", "/api/v1/commands", Some(json!({"tag": "line1.setpoint", "value": 42.5}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ok");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = wait_for_value(&env, "line1.setpoint").await;
        if v["value"] == json!(42.5) {
            break;
        }
        assert!(Instant::now() < deadline, "the written value never showed: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, v) = call(&env, "POST", "/api/v1/commands", Some(json!({"tag": "line1.nope", "value": 1}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
    let (s, v) = call(&env, "POST", "/api/v1/commands", Some(json!({"tag": "line1.temperature", "value": 1}))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&v, "not_writable");
    let (s, v) = call(&env, "POST", "/api/v1/commands", Some(json!({"tag": "line1.setpoint", "value": "high"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "rejected");
    let (s, v) = call(&env, "POST", "/api/v1/commands", Some(json!({"tag": "off.x", "value": 1}))).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "a disabled device has no driver: {v}");
    assert_error(&v, "device_unavailable");
    // A driver that never answers: take over line1's route and keep the commands.
    let mut inbox = env.bus.route_commands("line1");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(r) = inbox.recv().await {
            held.push(r);
        }
    });
    let (s, v) =
        call(&env, "POST", "/api/v1/commands", Some(json!({"tag": "line1.setpoint", "value": 1, "timeout_ms": 100})))
            .await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert_error(&v, "timeout");
    holder.abort();
}

#[tokio::test]
async fn bad_requests_get_a_clear_json_error() {
    let env = env().await;
    let req = |body: &str, ct: Option<&str>| {
        let mut r = Request::builder()
            .method("POST")
            .uri("/api/v1/commands")
            .header(header::AUTHORIZATION, format!("Bearer {}", env.operator));
        if let Some(ct) = ct {
            r = r.header(header::CONTENT_TYPE, ct);
        }
        r.body(Body::from(body.to_owned())).unwrap()
    };
    let (s, v) = raw(&env, req("{\"tag\": ", Some("application/json"))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "invalid_json");
    let (s, v) = raw(&env, req("{\"tag\": \"a.b\", \"value\": 1, \"colour\": 2}", Some("application/json"))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("colour"), "{v}");
    let (s, v) = raw(&env, req("{}", Some("text/plain"))).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error(&v, "unsupported_media_type");
    let big = format!("{{\"tag\": \"a.b\", \"value\": \"{}\"}}", "x".repeat(10_000));
    let (s, v) = raw(&env, req(&big, Some("application/json"))).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&v, "payload_too_large");
    let (s, v) = call(&env, "GET", "/api/v1/nothing", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
    let (s, v) = call(&env, "PATCH", "/api/v1/devices", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&v, "method_not_allowed");
    let (s, v) = call(&env, "GET", "/ws", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "not_websocket");
}

#[tokio::test]
async fn metrics_cover_the_bus_the_http_requests_and_the_process() {
    let env = env().await;
    wait_for_value(&env, "line1.temperature").await;
    call(&env, "GET", "/api/v1/devices", None).await;
    let resp = router(env.state.clone()).oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    for needle in [
        "gateway_bus_publish_total ",
        "gateway_bus_ring_used ",
        "gateway_http_requests_total{method=\"GET\",route=\"/api/v1/devices\",status=\"200\"} 1",
        "gateway_http_request_duration_seconds_bucket{le=\"0.005\",method=\"GET\",route=\"/api/v1/values/{tag}\"}",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "gateway_ws_connections ",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let env = env().await;
    let (s, doc) = call(&env, "GET", "/api/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in gateway_api::ROUTES {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is not in the OpenAPI document");
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().keys().filter(|k| *k != "parameters").count())
        .sum();
    assert_eq!(documented, gateway_api::ROUTES.len(), "the document describes routes that do not exist");
    // And the router serves each of them (no fallback 404 or 405).
    for (method, path) in gateway_api::ROUTES {
        let uri = if *path == "/api/v1/values/{tag}" {
            "/api/v1/values/line1.parts".to_string()
        } else {
            path.replace("{name}", "line1").replace("{tag}", "parts")
        };
        let body = matches!(*method, "post" | "put").then(|| json!({}));
        let (s, v) = call(&env, &method.to_uppercase(), &uri, body).await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap_or("").starts_with("no such endpoint"), "{method} {uri}: {v}");
    }
    let (s, body) = call(&env, "GET", "/", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.as_str().unwrap().contains("/ui/app.js"));
}

fn with_host(method: &str, uri: &str, host: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(uri).header(header::HOST, host)
}

#[tokio::test]
async fn a_request_naming_a_foreign_host_is_refused_with_421_and_writes_nothing() {
    let cfg = ApiConfig { allowed_hosts: vec!["gw1.plant.local".into()], ..ApiConfig::default() };
    let env = env_with(cfg, common::default_devices()).await;
    wait_for_value(&env, "line1.setpoint").await;
    // DNS rebinding: a page at evil.example, its name now resolving to the
    // gateway, posts a set-point through the operator's browser.
    let body = json!({"tag": "line1.setpoint", "value": 99.0}).to_string();
    let req = with_host("POST", "/api/v1/commands", "evil.example:8080")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.clone()))
        .unwrap();
    let (s, v) = raw(&env, req).await;
    assert_eq!(s, StatusCode::MISDIRECTED_REQUEST);
    assert_error(&v, "misdirected_request");
    let (s, v) = raw(&env, with_host("GET", "/api/v1/values", "EVIL.example").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::MISDIRECTED_REQUEST, "reads too: {v}");
    let absolute = Request::get("http://evil.example/api/v1/system/health").body(Body::empty()).unwrap();
    assert_eq!(raw(&env, absolute).await.0, StatusCode::MISDIRECTED_REQUEST, "an absolute target names the host too");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(wait_for_value(&env, "line1.setpoint").await["value"], json!(5.0), "the set-point was written");

    for host in ["localhost:8080", "127.0.0.1", "[::1]:8080", "GW1.plant.local:443"] {
        let (s, v) = raw(&env, with_host("GET", "/api/v1/system/health", host).body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::OK, "{host}: {v}");
    }
    // No Host at all: not a browser, so not a rebinding vector.
    assert_eq!(call(&env, "GET", "/api/v1/system/health", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn websocket_upgrades_and_writes_from_foreign_origins_are_refused_with_403() {
    let env = env().await;
    let upgrade = |origin: &str| {
        with_host("GET", "/ws", "localhost:8080")
            .header(header::ORIGIN, origin)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Body::empty())
            .unwrap()
    };
    for origin in ["http://evil.example", "null", "https://localhost.evil.example:8080"] {
        let (s, v) = raw(&env, upgrade(origin)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{origin}");
        assert_error(&v, "forbidden_origin");
    }
    let dev = json!({"name": "x", "driver": "sim"}).to_string();
    let post = |origin: &str| {
        with_host("POST", "/api/v1/devices", "localhost:8080")
            .header(header::AUTHORIZATION, format!("Bearer {}", env.admin))
            .header(header::ORIGIN, origin)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(dev.clone()))
            .unwrap()
    };
    let (s, v) = raw(&env, post("http://evil.example")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, "forbidden_origin");
    assert_eq!(call(&env, "GET", "/api/v1/devices/x", None).await.0, StatusCode::NOT_FOUND);
    // The gateway's own page (same host, any port) may write.
    let (s, v) = raw(&env, post("http://localhost:8080")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // No CORS: a cross-origin read or preflight gets no Access-Control header.
    for method in ["GET", "OPTIONS"] {
        let req = with_host(method, "/api/v1/values", "localhost:8080")
            .header(header::ORIGIN, "http://evil.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty())
            .unwrap();
        let resp = router(env.state.clone()).oneshot(req).await.unwrap();
        assert!(
            resp.headers().keys().all(|k| !k.as_str().starts_with("access-control-")),
            "{method}: {:?}",
            resp.headers()
        );
        assert_eq!(resp.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(resp.headers()[header::X_FRAME_OPTIONS], "DENY");
    }
}

/// A body that never yields a byte: reading it would hang the request.
fn endless_body() -> Body {
    Body::from_stream(futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>())
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_at_once_without_reading_it() {
    let env = env().await;
    let req = Request::post("/api/v1/commands")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, "1000000000000")
        .body(endless_body())
        .unwrap();
    // Were the body read, the request would wait for request_timeout_s and
    // then answer 503; the deadline only keeps a regression from hanging.
    let (s, v) =
        tokio::time::timeout(Duration::from_secs(20), raw(&env, req)).await.expect("an answer without the body");
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&v, "payload_too_large");
}

#[tokio::test]
async fn errors_of_the_layers_below_the_handlers_are_json_too() {
    let env = env().await;
    for (uri, status, code) in [
        ("/api/v1/devices/%FF", StatusCode::BAD_REQUEST, "bad_request"),
        ("/api/v1/devices/line1/tags/%C3%28", StatusCode::BAD_REQUEST, "bad_request"),
        ("/api/v1/values?pattern=a&colour=red", StatusCode::BAD_REQUEST, "invalid_query"),
    ] {
        let (s, v) = call(&env, "GET", uri, None).await;
        assert_eq!(s, status, "{uri}: {v}");
        assert_error(&v, code);
    }
    let long = format!("/api/v1/values/{}", "a".repeat(gateway_api::guard::MAX_URI_BYTES));
    let (s, v) = call(&env, "GET", &long, None).await;
    assert_eq!(s, StatusCode::URI_TOO_LONG);
    assert_error(&v, "uri_too_long");
}

#[tokio::test]
async fn metrics_labels_stay_bounded_whatever_methods_and_paths_clients_send() {
    let env = env().await;
    for i in 0..200 {
        let method = format!("M{i}X");
        let req = Request::builder().method(method.as_str()).uri(format!("/random/{i}")).body(Body::empty()).unwrap();
        let (s, v) = raw(&env, req).await;
        assert!(s.is_client_error(), "{method}: {s} {v}");
    }
    let resp = router(env.state.clone()).oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    let series: Vec<&str> = text.lines().filter(|l| l.starts_with("gateway_http_requests_total{")).collect();
    assert!(series.len() <= 3, "{series:#?}");
    assert!(
        text.contains("gateway_http_requests_total{method=\"other\",route=\"unmatched\",status=\"404\"} 200"),
        "{series:#?}"
    );
    assert!(!text.contains("M1X") && !text.contains("/random/"), "a client-chosen value became a label");
}

#[tokio::test]
async fn of_concurrent_creations_of_the_same_tag_exactly_one_succeeds() {
    let env = env().await;
    let (s, _) = call(&env, "POST", "/api/v1/devices", Some(json!({"name": "d", "driver": "sim"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let tag = json!({"name": "t", "signal": "ramp"});
    let answers = futures_util::future::join_all(
        (0..10).map(|_| call(&env, "POST", "/api/v1/devices/d/tags", Some(tag.clone()))),
    )
    .await;
    let created = answers.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    assert_eq!(created, 1, "{answers:?}");
    for (s, v) in answers.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!(*s, StatusCode::CONFLICT);
        assert_error(v, "exists");
    }
    let (_, v) = call(&env, "GET", "/api/v1/devices/d/tags", None).await;
    assert_eq!(v["tags"].as_array().unwrap().len(), 1, "{v}");
}

#[tokio::test]
async fn the_web_ui_is_served_to_anyone_with_its_type_and_a_revalidating_cache_policy() {
    let env = env().await;
    for (uri, ctype) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/pages/tags.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        // No credentials: the files hold no data, the page signs in before it asks for any.
        let resp = router(env.state.clone()).oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        let h = resp.headers();
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ctype), "{uri}: {:?}", h[header::CONTENT_TYPE]);
        assert_eq!(h[header::CACHE_CONTROL], "no-cache", "{uri}");
        let etag = h[header::ETAG].clone();
        let again = Request::get(uri).header(header::IF_NONE_MATCH, etag).body(Body::empty()).unwrap();
        let resp = router(env.state.clone()).oneshot(again).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{uri}");
    }
    for uri in ["/ui/missing.js", "/ui/../Cargo.toml", "/ui/"] {
        let (s, v) = raw(&env, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}: {v}");
        assert_error(&v, "not_found");
    }
}
