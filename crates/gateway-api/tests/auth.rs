//! Who may do what, through the router (`tower::ServiceExt::oneshot`): roles
//! against the route table, login sessions, tokens, the failed-login limit,
//! anonymous reads and the audit trail of every change.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Env, env_with};
use gateway_api::{ApiConfig, AuthConfig, router};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn env() -> Env {
    env_with(ApiConfig::default(), common::default_devices()).await
}

async fn call_as(env: &Env, token: Option<&str>, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
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
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

async fn audit(env: &Env) -> Vec<Value> {
    let (s, v) = call_as(env, Some(&env.admin), "GET", "/api/v1/audit?limit=1000", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["entries"].as_array().unwrap().clone()
}

async fn wait_for_audit(env: &Env, action: &str, target: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = audit(env).await.into_iter().find(|e| e["action"] == action && e["target"] == target) {
            return e;
        }
        assert!(std::time::Instant::now() < deadline, "no audit entry {action} on {target}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn each_role_may_do_what_its_role_allows_and_no_more() {
    let env = env().await;
    let dev = json!({"name": "api1", "driver": "sim", "tags": [{"name": "t", "signal": "constant", "writable": true}]});
    let cmd = json!({"tag": "line1.setpoint", "value": 7.5});

    // Without credentials: reads yes (loopback), writes no, and the refusal is JSON with a challenge.
    let (s, _) = call_as(&env, None, "GET", "/api/v1/values", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call_as(&env, None, "POST", "/api/v1/commands", Some(cmd.clone())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(code(&v), "unauthorized");
    let (s, _) = call_as(&env, None, "POST", "/api/v1/devices", Some(dev.clone())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A viewer reads but writes nothing.
    let (s, _) = call_as(&env, Some(&env.viewer), "GET", "/api/v1/devices", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call_as(&env, Some(&env.viewer), "POST", "/api/v1/commands", Some(cmd.clone())).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(code(&v), "forbidden");

    // An operator writes set-points but does not manage devices, users or the audit trail.
    let (s, v) = call_as(&env, Some(&env.operator), "POST", "/api/v1/commands", Some(cmd.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for (m, uri, body) in [
        ("POST", "/api/v1/devices", Some(dev.clone())),
        ("DELETE", "/api/v1/devices/line1", None),
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/tokens", Some(json!({"name": "x", "role": "admin"}))),
        ("GET", "/api/v1/audit", None),
    ] {
        let (s, v) = call_as(&env, Some(&env.operator), m, uri, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m} {uri}: {v}");
    }

    // An admin does everything.
    let (s, v) = call_as(&env, Some(&env.admin), "POST", "/api/v1/devices", Some(dev)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // A token that does not exist is refused, even for a read.
    let (s, v) = call_as(&env, Some("egw_0000"), "GET", "/api/v1/values", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
}

#[tokio::test]
async fn only_an_admin_reads_the_loaded_configuration() {
    let env = env_with(ApiConfig::default(), common::default_devices()).await;
    let (s, v) = call_as(&env, Some(&env.admin), "GET", "/api/v1/system/config", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // What the binary gave, as it gave it (it masked the secrets).
    assert_eq!(v["config"]["database"]["url"], "postgres://gw:***@db/gw");
    assert_eq!(v["source"], "/etc/edge-gateway/gateway.toml");
    for who in [&env.operator, &env.viewer] {
        let (s, v) = call_as(&env, Some(who), "GET", "/api/v1/system/config", None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    }
    // Anonymous reads, where allowed, do not reach it either.
    let (s, _) = call_as(&env, None, "GET", "/api/v1/system/config", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_anonymous_reads_every_api_read_needs_credentials() {
    let cfg =
        ApiConfig { auth: AuthConfig { anonymous_read: Some(false), ..AuthConfig::default() }, ..ApiConfig::default() };
    let env = env_with(cfg, common::default_devices()).await;
    for uri in ["/api/v1/values", "/api/v1/devices", "/metrics", "/ws", "/api/v1/system/info"] {
        let (s, _) = call_as(&env, None, "GET", uri, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let (s, _) = call_as(&env, Some(&env.viewer), "GET", "/api/v1/values", None).await;
    assert_eq!(s, StatusCode::OK);
    // The health check and the OpenAPI document stay public.
    let (s, _) = call_as(&env, None, "GET", "/api/v1/system/health", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call_as(&env, None, "GET", "/api/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);

    // A browser's WebSocket cannot send headers: the token may come as a subprotocol.
    let req = |proto: Option<String>| {
        let mut r = Request::builder().uri("/ws");
        if let Some(p) = proto {
            r = r.header(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        r.body(Body::empty()).unwrap()
    };
    let resp = router(env.state.clone()).oneshot(req(None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp =
        router(env.state.clone()).oneshot(req(Some(format!("edge-gateway, bearer.{}", env.viewer)))).await.unwrap();
    assert_ne!(resp.status(), StatusCode::UNAUTHORIZED, "the subprotocol carried the token");
}

#[tokio::test]
async fn anonymous_reads_are_refused_when_the_api_is_not_on_loopback() {
    let cfg = ApiConfig { bind: "0.0.0.0:8080".parse().unwrap(), ..ApiConfig::default() };
    let env = env_with(cfg, common::default_devices()).await;
    let (s, _) = call_as(&env, None, "GET", "/api/v1/values", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // And asking for them there is a configuration error naming the field.
    let bad = ApiConfig {
        bind: "0.0.0.0:8080".parse().unwrap(),
        auth: AuthConfig { anonymous_read: Some(true), ..AuthConfig::default() },
        ..ApiConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().path, "auth.anonymous_read");
}

#[tokio::test]
async fn users_log_in_use_their_session_and_log_out() {
    let env = env().await;
    let (s, v) = call_as(
        &env,
        Some(&env.admin),
        "POST",
        "/api/v1/users",
        Some(json!({"name": "olga", "role": "operator", "password": "shift-two-2026!"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call_as(
        &env,
        Some(&env.admin),
        "POST",
        "/api/v1/users",
        Some(json!({"name": "weak", "role": "viewer", "password": "short"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("password:"), "{v}");

    let (s, v) =
        call_as(&env, None, "POST", "/api/v1/auth/login", Some(json!({"user": "olga", "password": "shift-two-2026!"})))
            .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["role"], "operator");
    let session = v["token"].as_str().unwrap().to_owned();
    assert!(session.starts_with("egs_"));

    let (s, v) = call_as(&env, Some(&session), "GET", "/api/v1/auth/me", None).await;
    assert_eq!((s, v["actor"].as_str()), (StatusCode::OK, Some("user:olga")));
    let (s, _) =
        call_as(&env, Some(&session), "POST", "/api/v1/commands", Some(json!({"tag": "line1.setpoint", "value": 1})))
            .await;
    assert_eq!(s, StatusCode::OK);

    // Demoted: the session takes the new role at once.
    let (s, _) = call_as(&env, Some(&env.admin), "PUT", "/api/v1/users/olga", Some(json!({"role": "viewer"}))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) =
        call_as(&env, Some(&session), "POST", "/api/v1/commands", Some(json!({"tag": "line1.setpoint", "value": 2})))
            .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, _) = call_as(&env, Some(&session), "POST", "/api/v1/auth/logout", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call_as(&env, Some(&session), "GET", "/api/v1/auth/me", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a logged-out session is dead");

    // A new password ends every session of the user.
    let (_, v) =
        call_as(&env, None, "POST", "/api/v1/auth/login", Some(json!({"user": "olga", "password": "shift-two-2026!"})))
            .await;
    let session = v["token"].as_str().unwrap().to_owned();
    let (s, _) = call_as(
        &env,
        Some(&session),
        "POST",
        "/api/v1/auth/password",
        Some(json!({"current": "shift-two-2026!", "new": "a-new-password-for-olga"})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call_as(&env, Some(&session), "GET", "/api/v1/auth/me", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call_as(
        &env,
        None,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"user": "olga", "password": "a-new-password-for-olga"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn failed_logins_are_limited_and_say_nothing_about_which_part_was_wrong() {
    let env = env().await;
    call_as(
        &env,
        Some(&env.admin),
        "POST",
        "/api/v1/users",
        Some(json!({"name": "ivan", "role": "viewer", "password": "correct-password-1"})),
    )
    .await;
    let login = |user: &str, password: &str| json!({"user": user, "password": password});
    let (s, unknown) = call_as(&env, None, "POST", "/api/v1/auth/login", Some(login("nobody", "whatever-it-is"))).await;
    let (s2, wrong) = call_as(&env, None, "POST", "/api/v1/auth/login", Some(login("ivan", "wrong-password-1"))).await;
    assert_eq!((s, s2), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    assert_eq!(unknown, wrong, "an unknown user and a wrong password look the same");
    // Five failures in the window (default) from one address: the next attempt is refused, even the right one.
    for _ in 0..3 {
        call_as(&env, None, "POST", "/api/v1/auth/login", Some(login("ivan", "wrong-password-1"))).await;
    }
    let resp = router(env.state.clone())
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/api/v1/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(login("ivan", "correct-password-1").to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    let e = wait_for_audit(&env, "auth.login", "ivan").await;
    assert!(e["outcome"].as_str().unwrap().starts_with("failed"), "{e}");
}

#[tokio::test]
async fn tokens_are_shown_once_listed_without_secrets_and_revoked_at_once() {
    let env = env().await;
    let (s, v) =
        call_as(&env, Some(&env.admin), "POST", "/api/v1/tokens", Some(json!({"name": "scada", "role": "viewer"})))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 4 + 64, "256 bits");
    let (s, v) = call_as(&env, Some(&env.admin), "GET", "/api/v1/tokens", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!v.to_string().contains(&token[4..]), "the list shows no secret: {v}");
    assert!(v["tokens"].as_array().unwrap().iter().any(|t| t["name"] == "scada" && t["role"] == "viewer"));
    let (s, _) = call_as(&env, Some(&token), "GET", "/api/v1/values", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call_as(&env, Some(&env.admin), "DELETE", "/api/v1/tokens/scada", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call_as(&env, Some(&token), "GET", "/api/v1/values", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revoked over the API: refused at once, cache or not");
    let (s, v) =
        call_as(&env, Some(&env.admin), "POST", "/api/v1/tokens", Some(json!({"name": "bad name", "role": "viewer"})))
            .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn the_last_admin_can_be_neither_removed_nor_demoted() {
    let env = env().await;
    let admin = json!({"name": "root1", "role": "admin", "password": "the-only-admin-1"});
    call_as(&env, Some(&env.admin), "POST", "/api/v1/users", Some(admin)).await;
    let (s, v) = call_as(&env, Some(&env.admin), "DELETE", "/api/v1/users/root1", None).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "last_admin"), "{v}");
    let (s, v) = call_as(&env, Some(&env.admin), "PUT", "/api/v1/users/root1", Some(json!({"role": "viewer"}))).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "last_admin"), "{v}");
    let second = json!({"name": "root2", "role": "admin", "password": "the-second-admin"});
    call_as(&env, Some(&env.admin), "POST", "/api/v1/users", Some(second)).await;
    let (s, _) = call_as(&env, Some(&env.admin), "DELETE", "/api/v1/users/root1", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call_as(&env, Some(&env.admin), "GET", "/api/v1/users/root1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_change_is_audited_with_who_where_what_and_how_it_ended() {
    let env = env().await;
    let dev = json!({"name": "aud1", "driver": "sim", "tags": [{"name": "t", "signal": "constant", "writable": true}]});
    call_as(&env, Some(&env.admin), "POST", "/api/v1/devices", Some(dev.clone())).await;
    call_as(&env, Some(&env.admin), "POST", "/api/v1/devices", Some(dev)).await; // 409: audited as refused
    call_as(
        &env,
        Some(&env.operator),
        "POST",
        "/api/v1/commands",
        Some(json!({"tag": "line1.setpoint", "value": 3.25})),
    )
    .await;
    call_as(&env, Some(&env.viewer), "POST", "/api/v1/commands", Some(json!({"tag": "line1.setpoint", "value": 9})))
        .await;
    call_as(&env, Some(&env.admin), "DELETE", "/api/v1/devices/aud1/tags/t", None).await;

    let created = wait_for_audit(&env, "device.create", "aud1").await;
    assert_eq!(created["actor"], "token:test-admin");
    assert_eq!(created["source"], "unknown", "no socket in these tests");
    assert_eq!(created["detail"]["driver"], "sim");
    let all = audit(&env).await;
    let creates: Vec<_> = all.iter().filter(|e| e["action"] == "device.create" && e["target"] == "aud1").collect();
    assert_eq!(creates.len(), 2);
    assert_eq!(creates[0]["outcome"], "ok");
    assert!(creates[1]["outcome"].as_str().unwrap().starts_with("refused (409)"), "{}", creates[1]);
    let denied = wait_for_audit(&env, "access.denied", "/api/v1/commands").await;
    assert_eq!(denied["actor"], "token:test-viewer");
    wait_for_audit(&env, "tag.delete", "aud1.t").await;

    // Commands: who issued what, and how the device answered.
    let issued = wait_for_audit(&env, "command.issue", "line1.setpoint").await;
    assert_eq!(issued["actor"], "token:test-operator");
    assert_eq!(issued["detail"]["value"], 3.25);
    let result = wait_for_audit(&env, "command.result", "line1.setpoint").await;
    assert_eq!(result["outcome"], "ok");
    assert_eq!(result["actor"], "token:test-operator");
    assert_eq!(result["detail"]["id"], issued["detail"]["id"]);

    // Paging: pages follow one another without gaps or repeats.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (s, v) =
            call_as(&env, Some(&env.admin), "GET", &format!("/api/v1/audit?limit=2&after={after}"), None).await;
        assert_eq!(s, StatusCode::OK);
        seen.extend(v["entries"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()));
        match v["next"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    let ids: Vec<i64> = audit(&env).await.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(seen, ids);
    let (s, v) = call_as(&env, Some(&env.admin), "GET", "/api/v1/audit?from=yesterday", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = call_as(&env, Some(&env.admin), "GET", "/api/v1/audit?from=2099-01-01T00:00:00Z", None).await;
    assert_eq!((s, v["entries"].as_array().unwrap().len()), (StatusCode::OK, 0));
}
